//! The decisions made once for the whole swarm (issue 20), with real processes on
//! 127.0.24.x-26.x: conditional writes raced through every node, bucket names raced by two
//! identities through different nodes, a deleted name taken up by another identity, and what
//! a node answers when no majority of the registry's voters can be reached (503, with plain
//! writes going on).

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use s3swarm_tests::*;

const SECRET: &str = "registry-test-secret-0123456789abc";
const IDS: [(&str, &str); 2] = [
    ("ALICEKEY", "alice-secret-key"),
    ("BOBKEY", "bob-secret-key-1"),
];

/// A config file naming both identities.
fn identities(dir: &std::path::Path) -> String {
    let cfg = dir.join("s3swarm.toml");
    let mut text = String::new();
    for (a, s) in IDS {
        text += &format!("[[keys]]\naccess_key = \"{a}\"\nsecret_key = \"{s}\"\n\n");
    }
    std::fs::write(&cfg, text).unwrap();
    cfg.to_str().unwrap().to_owned()
}

/// Waits until every node sees the others alive and three registry voters.
async fn all_voting(nodes: &[Node]) {
    all_alive(&nodes.iter().collect::<Vec<_>>(), 3.0).await;
    for n in nodes {
        until("three registry voters", 30, || async {
            n.metric_or_zero("s3swarm_registry{figure=\"voters\"}")
                .await
                == 3.0
        })
        .await;
    }
}

/// Three storage nodes on `net`, node 1 founding the registry, once all three vote.
async fn three(net: u8, extra: &[&str]) -> (SecretFile, Vec<Node>) {
    let secret = SecretFile::new(SECRET);
    let nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let peers: Vec<u8> = (1..i).collect();
            Node::start_swarm(net, i, &secret, &peers, extra)
        })
        .collect();
    all_voting(&nodes).await;
    (secret, nodes)
}

async fn wait_for_bucket(nodes: &[Node], access: &str, secret: &str, bucket: &str) {
    for n in nodes {
        let c = n.client_as(access, secret);
        until("the bucket on every node", 20, || {
            let c = c.clone();
            async move { c.head_bucket().bucket(bucket).send().await.is_ok() }
        })
        .await;
    }
}

/// Of racing conditional writers' outcomes (writer, Ok or error code) in `round`: every loser
/// failed its precondition, and exactly one won; returns it.
fn the_one_winner(round: usize, outcomes: &[(usize, Result<(), String>)]) -> usize {
    let winners: Vec<usize> = outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(w, _)| *w)
        .collect();
    for (w, r) in outcomes {
        if let Err(code) = r {
            assert!(
                code == "PreconditionFailed" || code == "ConditionalRequestConflict",
                "round {round}: writer {w} got {code}, not a precondition failure"
            );
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "round {round}: writers {winners:?} were all acknowledged"
    );
    winners[0]
}

/// Waits until every client's node serves `want` at `bucket/key`.
async fn serves_everywhere(clients: &[Client], bucket: &str, key: &str, want: &[u8]) {
    for c in clients {
        until("the winner's write on every node", 20, || {
            let c = c.clone();
            async move {
                match c.get_object().bucket(bucket).key(key).send().await {
                    Ok(o) => o.body.collect().await.is_ok_and(|b| b.to_vec() == want),
                    Err(_) => false,
                }
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_conditional_creates_of_one_key_through_every_node_have_exactly_one_winner() {
    let (_secret, nodes) = three(24, &[]).await;
    let clients: Vec<Client> = nodes.iter().map(Node::client).collect();
    clients[0]
        .create_bucket()
        .bucket("race")
        .send()
        .await
        .unwrap();
    wait_for_bucket(&nodes, ACCESS_KEY, SECRET_KEY, "race").await;
    for round in 0..10 {
        let key = format!("k{round}");
        // 12 writers, four through each node, all at once.
        let writers = (0..12).map(|w| {
            let c = clients[w % 3].clone();
            let key = key.clone();
            async move {
                let r = c
                    .put_object()
                    .bucket("race")
                    .key(&key)
                    .if_none_match("*")
                    .body(ByteStream::from(format!("writer {w}").into_bytes()))
                    .send()
                    .await;
                (w, r.map(|_| ()).map_err(|e| code(&e)))
            }
        });
        let outcomes = futures::future::join_all(writers).await;
        let winner = the_one_winner(round, &outcomes);
        // What every node serves is the winner's write.
        let want = format!("writer {winner}").into_bytes();
        serves_everywhere(&clients, "race", &key, &want).await;
    }
    // If-Match chains: of writers racing to replace the same ETag, one wins.
    let first = clients[0]
        .head_object()
        .bucket("race")
        .key("k0")
        .send()
        .await
        .unwrap();
    let etag = first.e_tag().unwrap().to_owned();
    let writers = (0..6).map(|w| {
        let c = clients[w % 3].clone();
        let etag = etag.clone();
        async move {
            c.put_object()
                .bucket("race")
                .key("k0")
                .if_match(etag)
                .body(ByteStream::from(format!("replacer {w}").into_bytes()))
                .send()
                .await
                .is_ok()
        }
    });
    let won = futures::future::join_all(writers)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    assert_eq!(won, 1, "{won} If-Match writers replaced the same ETag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_bucket_name_by_two_identities_acknowledge_one_and_a_deleted_name_passes_on()
 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = identities(dir.path());
    let (_secret, nodes) = three(25, &["--config", &cfg]).await;
    let as_id = |node: usize, who: usize| nodes[node].client_as(IDS[who].0, IDS[who].1);
    let mut owners = Vec::new();
    for round in 0..8 {
        let name = format!("contested-{round}");
        let (ca, cb) = (as_id(round % 3, 0), as_id((round + 1) % 3, 1));
        let (ra, rb) = tokio::join!(
            ca.create_bucket().bucket(&name).send(),
            cb.create_bucket().bucket(&name).send()
        );
        let (ra, rb) = (ra.map_err(|e| code(&e)), rb.map_err(|e| code(&e)));
        let winner = match (&ra, &rb) {
            (Ok(_), Err(c)) | (Err(c), Ok(_)) if c == "BucketAlreadyExists" => {
                usize::from(ra.is_err())
            }
            _ => panic!("round {round}: alice got {ra:?}, bob got {rb:?}"),
        };
        owners.push((name, winner));
    }
    // Every node agrees on the owners: the owner reads the bucket, the other is refused.
    for (name, winner) in &owners {
        wait_for_bucket(&nodes, IDS[*winner].0, IDS[*winner].1, name).await;
        for node in 0..3 {
            let e = as_id(node, 1 - winner)
                .list_objects_v2()
                .bucket(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| code(&e));
            assert_eq!(
                e,
                Err("AccessDenied".into()),
                "{name}: the loser on node {node}"
            );
        }
    }
    // A name deleted by its owner is free to anyone, once the deletion reached the node
    // asked (before that it answers BucketAlreadyExists, never a second owner).
    let (name, winner) = owners[0].clone();
    as_id(0, winner)
        .delete_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    let other = as_id(2, 1 - winner);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match other.create_bucket().bucket(&name).send().await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(code(&e), "BucketAlreadyExists");
                assert!(Instant::now() < deadline, "{name} never passed on");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    wait_for_bucket(&nodes, IDS[1 - winner].0, IDS[1 - winner].1, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_majority_of_voters_creates_and_conditional_writes_answer_503_and_plain_writes_go_on()
 {
    let (_secret, mut nodes) = three(26, &[]).await;
    nodes[0].expect_server_errors(); // 503s without a majority, on purpose
    let a = nodes[0].client();
    a.create_bucket().bucket("kept").send().await.unwrap();
    wait_for_bucket(&nodes, ACCESS_KEY, SECRET_KEY, "kept").await;
    nodes[1].kill9();
    nodes[2].kill9();
    // No SDK retries: each answer is the node's own.
    let once = nodes[0].client_once(ACCESS_KEY, SECRET_KEY, Duration::from_secs(20));
    let started = Instant::now();
    let e = once.create_bucket().bucket("new").send().await.unwrap_err();
    assert_eq!(code(&e), "ServiceUnavailable", "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the refusal took {:?}",
        started.elapsed()
    );
    let create_once = || {
        once.put_object()
            .bucket("kept")
            .key("only-once")
            .if_none_match("*")
            .body(ByteStream::from_static(b"x"))
            .send()
    };
    let e = create_once().await.unwrap_err();
    assert_eq!(code(&e), "ServiceUnavailable", "{e:?}");
    put(&a, "kept", "plain", b"plain writes need no decision").await;
    // A voter back: a majority again, and the same requests succeed.
    nodes[1].restart();
    until("a create once a majority is back", 40, || {
        let c = once.clone();
        async move { c.create_bucket().bucket("new").send().await.is_ok() }
    })
    .await;
    create_once().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_all_given_the_same_peers_found_the_registry_together_with_bootstrap_expect() {
    // As the compose file and the DaemonSet start them: every node names the others, none
    // founds alone; the three found it together once all are up.
    let secret = SecretFile::new(SECRET);
    let nodes: Vec<Node> = (1..=3u8)
        .map(|i| {
            let peers: Vec<u8> = (1..=3).filter(|p| *p != i).collect();
            Node::start_swarm(27, i, &secret, &peers, &["--bootstrap-expect", "3"])
        })
        .collect();
    all_voting(&nodes).await;
    let leaders: f64 = futures::future::join_all(
        nodes
            .iter()
            .map(|n| n.metric_or_zero("s3swarm_registry{figure=\"leader\"}")),
    )
    .await
    .into_iter()
    .sum();
    assert_eq!(leaders, 1.0, "one leader among the three");
    nodes[2]
        .client()
        .create_bucket()
        .bucket("together")
        .send()
        .await
        .unwrap();
    let e = nodes[0]
        .client()
        .create_bucket()
        .bucket("together")
        .send()
        .await;
    // The owner asking again: already owned, once the bucket reached node 1; before that the
    // registry says the name is held (by the same owner) all the same.
    assert!(e.is_err(), "a second create of one name was acknowledged");
}

/// CopyObject takes `If-None-Match: *` and `If-Match` on its destination as PutObject does,
/// decided by the registry: of copies racing onto one new key through every node, one wins
/// and the rest get a precondition failure; every node then serves the winner's source; an
/// `If-Match` copy needs the key's current ETag (a stale one gets 412, no object 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_conditional_copies_onto_one_key_through_every_node_have_exactly_one_winner() {
    let (_secret, nodes) = three(46, &[]).await;
    let clients: Vec<Client> = nodes.iter().map(Node::client).collect();
    clients[0]
        .create_bucket()
        .bucket("copies")
        .send()
        .await
        .unwrap();
    wait_for_bucket(&nodes, ACCESS_KEY, SECRET_KEY, "copies").await;
    // A source per copier, each on every node before the race.
    for w in 0..9 {
        clients[w % 3]
            .put_object()
            .bucket("copies")
            .key(format!("src-{w}"))
            .body(ByteStream::from(format!("source {w}").into_bytes()))
            .send()
            .await
            .unwrap();
    }
    for c in &clients {
        until("every source on every node", 20, || {
            let c = c.clone();
            async move {
                for w in 0..9 {
                    let key = format!("src-{w}");
                    if c.head_object()
                        .bucket("copies")
                        .key(&key)
                        .send()
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                true
            }
        })
        .await;
    }
    for round in 0..3 {
        let key = format!("dst-{round}");
        let copiers = (0..9).map(|w| {
            let c = clients[w % 3].clone();
            let key = key.clone();
            async move {
                let r = c
                    .copy_object()
                    .bucket("copies")
                    .key(&key)
                    .copy_source(format!("copies/src-{w}"))
                    .if_none_match("*")
                    .send()
                    .await;
                (w, r.map(|_| ()).map_err(|e| code(&e)))
            }
        });
        let outcomes = futures::future::join_all(copiers).await;
        let winner = the_one_winner(round, &outcomes);
        let want = format!("source {winner}").into_bytes();
        serves_everywhere(&clients, "copies", &key, &want).await;
    }
    // If-Match on the destination: the current ETag passes, a stale one and a missing key do not.
    let current = clients[1]
        .head_object()
        .bucket("copies")
        .key("dst-0")
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    let stale = clients[2]
        .copy_object()
        .bucket("copies")
        .key("dst-0")
        .copy_source("copies/src-0")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&stale), "PreconditionFailed");
    let missing = clients[2]
        .copy_object()
        .bucket("copies")
        .key("nothing-here")
        .copy_source("copies/src-0")
        .if_match(current.as_str())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "NoSuchKey");
    clients[2]
        .copy_object()
        .bucket("copies")
        .key("dst-0")
        .copy_source("copies/src-8")
        .if_match(current.as_str())
        .send()
        .await
        .unwrap();
    serves_everywhere(&clients[..1], "copies", "dst-0", b"source 8").await;
}
