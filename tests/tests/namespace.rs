//! The replicated namespace under ordinary events, with real processes on 127.0.2x.x: a node
//! that joins late, versions deleted by id, a bucket deleted and created again by another
//! identity while a node that still held its objects was away. Each test has its own net.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::BucketVersioningStatus;
use s3swarm_tests::*;

const SECRET: &str = "namespace-test-secret-0123456789ab";

/// The object's bytes, or the S3 error code.
async fn read(c: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    match c.get_object().bucket(bucket).key(key).send().await {
        Ok(r) => Ok(r.body.collect().await.map_err(|e| e.to_string())?.to_vec()),
        Err(e) => Err(code(&e)),
    }
}

/// Every version of every key: (key, version id, is a delete marker, is latest).
async fn versions(c: &Client, bucket: &str) -> Vec<(String, String, bool, bool)> {
    let Ok(r) = c.list_object_versions().bucket(bucket).send().await else {
        return Vec::new();
    };
    let mut out: Vec<_> = r
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap_or_default().to_owned(),
                v.version_id().unwrap_or_default().to_owned(),
                false,
                v.is_latest().unwrap_or(false),
            )
        })
        .chain(r.delete_markers().iter().map(|m| {
            (
                m.key().unwrap_or_default().to_owned(),
                m.version_id().unwrap_or_default().to_owned(),
                true,
                m.is_latest().unwrap_or(false),
            )
        }))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_written_into_another_nodes_bucket_reaches_a_node_that_joins_later() {
    let secret = SecretFile::new(SECRET);
    let mut a = Node::start_swarm(20, 1, &secret, &[], &[]);
    let b = Node::start_swarm(20, 2, &secret, &[1], &[]);
    all_alive(&[&a, &b], 2.0).await;
    let (sa, sb) = (a.client(), b.client());
    // Each node creates one bucket and writes into the other's: whichever origin a joining
    // node pulls first, one of the two objects reaches it before its bucket does.
    sa.create_bucket().bucket("from-a").send().await.unwrap();
    sb.create_bucket().bucket("from-b").send().await.unwrap();
    for (c, bucket) in [(&sb, "from-a"), (&sa, "from-b")] {
        until("the other node's bucket arrives", 10, || async {
            c.head_bucket().bucket(bucket).send().await.is_ok()
        })
        .await;
    }
    put(
        &sb,
        "from-a",
        "written-by-b",
        b"b wrote this into a's bucket",
    )
    .await;
    put(
        &sa,
        "from-b",
        "written-by-a",
        b"a wrote this into b's bucket",
    )
    .await;
    until("both objects on both nodes", 10, || async {
        read(&sa, "from-a", "written-by-b").await.is_ok()
            && read(&sb, "from-b", "written-by-a").await.is_ok()
    })
    .await;

    // The bucket's creator leaves; a new node joins through the one that remains.
    assert!(a.stop(10).is_some_and(|s| s.success()));
    let d = Node::start_swarm(20, 4, &secret, &[2], &[]);
    let sd = d.client();
    until("the late joiner serves both objects", 20, || async {
        read(&sd, "from-a", "written-by-b").await.ok().as_deref()
            == Some(b"b wrote this into a's bucket".as_slice())
            && read(&sd, "from-b", "written-by-a").await.ok().as_deref()
                == Some(b"a wrote this into b's bucket".as_slice())
    })
    .await;
    // Nothing is left waiting, nothing was refused.
    until("no entry left waiting", 10, || async {
        d.metric_or_zero("s3swarm_swarm_journal_parked_entries")
            .await
            == 0.0
    })
    .await;
    let metrics = d
        .http()
        .get(format!("{}/metrics", d.endpoint))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("s3swarm_swarm_journal_entries_unapplied_total{"),
        "entries were refused or held back:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("unapplied"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_versions_by_id_and_retagging_replicate_to_every_node() {
    let secret = SecretFile::new(SECRET);
    let a = Node::start_swarm(21, 1, &secret, &[], &[]);
    let b = Node::start_swarm(21, 2, &secret, &[1], &[]);
    all_alive(&[&a, &b], 2.0).await;
    let (sa, sb) = (a.client(), b.client());
    sa.create_bucket().bucket("history").send().await.unwrap();
    set_versioning(&sa, "history", BucketVersioningStatus::Enabled).await;
    let v1 = put(&sa, "history", "model.bin", b"version one").await;
    let v2 = put(&sa, "history", "model.bin", b"version two").await;
    let v3 = put(&sa, "history", "model.bin", b"version three").await;
    until("B lists the three versions", 10, || async {
        versions(&sb, "history").await.len() == 3
    })
    .await;

    // The current version and a noncurrent one, deleted by id on A.
    for v in [&v3, &v1] {
        sa.delete_object()
            .bucket("history")
            .key("model.bin")
            .version_id(v)
            .send()
            .await
            .unwrap();
    }
    let want = vec![("model.bin".to_owned(), v2.clone(), false, true)];
    until("B lists only the version left", 10, || async {
        versions(&sb, "history").await == want
    })
    .await;
    assert_eq!(
        read(&sb, "history", "model.bin").await.as_deref(),
        Ok(b"version two".as_slice())
    );
    let gone = sb
        .get_object()
        .bucket("history")
        .key("model.bin")
        .version_id(&v1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "NoSuchVersion");

    // A delete marker made on B, then removed by id on A: the object is back on B.
    let marker = sb
        .delete_object()
        .bucket("history")
        .key("model.bin")
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned();
    until("A sees the delete marker", 10, || async {
        read(&sa, "history", "model.bin").await == Err("NoSuchKey".into())
    })
    .await;
    sa.delete_object()
        .bucket("history")
        .key("model.bin")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    until("B serves the version again", 10, || async {
        read(&sb, "history", "model.bin").await.as_deref() == Ok(b"version two".as_slice())
    })
    .await;

    // Tags set on B on the version by id reach A.
    sb.put_object_tagging()
        .bucket("history")
        .key("model.bin")
        .version_id(&v2)
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key("stage")
                        .value("released")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    until("A sees the tag", 10, || async {
        sa.get_object_tagging()
            .bucket("history")
            .key("model.bin")
            .version_id(&v2)
            .send()
            .await
            .map(|t| t.tag_set().iter().any(|t| t.value() == "released"))
            .unwrap_or(false)
    })
    .await;
    assert_eq!(versions(&sa, "history").await, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_deleted_and_created_again_by_another_identity_gets_none_of_the_old_objects() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s3swarm.toml");
    std::fs::write(
        &cfg,
        "[[keys]]\naccess_key = \"ALICEKEY\"\nsecret_key = \"alice-secret-key\"\n\n\
         [[keys]]\naccess_key = \"BOBKEY\"\nsecret_key = \"bob-secret-key-1\"\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let secret = SecretFile::new(SECRET);
    let a = Node::start_swarm(22, 1, &secret, &[], &["--config", cfg]);
    let mut b = Node::start_swarm(22, 2, &secret, &[1], &["--config", cfg]);
    all_alive(&[&a, &b], 2.0).await;
    let alice_a = a.client_as("ALICEKEY", "alice-secret-key");
    let alice_b = b.client_as("ALICEKEY", "alice-secret-key");
    let bob_a = a.client_as("BOBKEY", "bob-secret-key-1");
    alice_a
        .create_bucket()
        .bucket("payroll")
        .send()
        .await
        .unwrap();
    put(&alice_a, "payroll", "salaries.csv", b"alice,100").await;
    until("B has alice's object", 10, || async {
        read(&alice_b, "payroll", "salaries.csv").await.is_ok()
    })
    .await;

    // B takes a write that A never hears of: A is frozen while it lands, and B dies before
    // A thaws.
    a.pause();
    put(&alice_b, "payroll", "bonuses.csv", b"alice,50").await;
    b.kill9();
    a.resume();

    // On A the bucket looks empty once alice deletes her object: she deletes the bucket,
    // and bob creates one of the same name.
    alice_a
        .delete_object()
        .bucket("payroll")
        .key("salaries.csv")
        .send()
        .await
        .unwrap();
    alice_a
        .delete_bucket()
        .bucket("payroll")
        .send()
        .await
        .unwrap();
    bob_a
        .create_bucket()
        .bucket("payroll")
        .send()
        .await
        .unwrap();
    put(&bob_a, "payroll", "bob.txt", b"bob's").await;

    // B comes back holding alice's write into the bucket that no longer exists.
    b.restart();
    let bob_b = b.client_as("BOBKEY", "bob-secret-key-1");
    until("B has bob's bucket and object", 20, || async {
        read(&bob_b, "payroll", "bob.txt").await.is_ok()
    })
    .await;
    // Give B's journal time to reach A, then look from both sides, as bob.
    until("A has taken in B's journal", 20, || async {
        a.metric_or_zero("s3swarm_swarm_journal_entries_superseded_total")
            .await
            >= 1.0
    })
    .await;
    for (who, c) in [("A", &bob_a), ("B", &bob_b)] {
        assert_eq!(
            read(c, "payroll", "bonuses.csv").await,
            Err("NoSuchKey".into()),
            "bob reads alice's object through {who}"
        );
        let listed: Vec<String> = c
            .list_objects_v2()
            .bucket("payroll")
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        assert_eq!(listed, vec!["bob.txt".to_owned()], "listing through {who}");
    }
    let denied = alice_b
        .get_object()
        .bucket("payroll")
        .key("bonuses.csv")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&denied), "AccessDenied");
}

async fn readyz(n: &Node) -> (u16, String) {
    let r = n
        .http()
        .get(format!("{}/readyz", n.endpoint))
        .send()
        .await
        .expect("GET /readyz");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_has_not_caught_up_refuses_creates_and_conditional_writes_until_it_has() {
    let secret = SecretFile::new(SECRET);
    // Told to join through a member that is not there yet.
    let b = Node::start_swarm(23, 2, &secret, &[1], &[]);
    b.expect_server_errors(); // 503s until it has caught up, on purpose
    let (status, body) = readyz(&b).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("has not reached any swarm member"), "{body}");
    let sb = b.client();
    let e = sb.create_bucket().bucket("early").send().await.unwrap_err();
    assert_eq!(code(&e), "ServiceUnavailable");
    assert_eq!(
        b.metric("s3swarm_swarm_ready").await,
        0.0,
        "the gauge says so too"
    );

    // The member it joins through holds a bucket of that name already.
    let a = Node::start_swarm(23, 1, &secret, &[], &[]);
    let sa = a.client();
    until(
        "a node started alone is ready after its first sync round",
        5,
        || async { readyz(&a).await.0 == 200 },
    )
    .await;
    sa.create_bucket().bucket("early").send().await.unwrap();
    put(&sa, "early", "k", b"first").await;
    until("B is ready", 20, || async { readyz(&b).await.0 == 200 }).await;
    // Caught up: B knows the name is taken, and that the key exists.
    let e = sb.create_bucket().bucket("early").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketAlreadyOwnedByYou");
    let e = sb
        .put_object()
        .bucket("early")
        .key("k")
        .if_none_match("*")
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    assert_eq!(b.metric("s3swarm_swarm_ready").await, 1.0);
}

/// A node that joins after a long history pulls the namespace, not the history: nodes prune
/// entries superseded by newer writes of their names (here every second), and a joiner is
/// told which numbers went. An object of many chunks replicates with its chunk list beside
/// its entry, fetched from the peer that sent it.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_joins_after_a_long_history_pulls_the_namespace_not_the_history() {
    let secret = SecretFile::new(SECRET);
    let prune = ["--journal-prune-secs", "1"];
    let a = Node::start_swarm(48, 1, &secret, &[], &prune);
    let b = Node::start_swarm(48, 2, &secret, &[1], &prune);
    all_alive(&[&a, &b], 2.0).await;
    let (ca, cb) = (a.client(), b.client());
    ca.create_bucket().bucket("history").send().await.unwrap();
    until("the bucket on b", 20, || async {
        cb.head_bucket().bucket("history").send().await.is_ok()
    })
    .await;
    let mut last = std::collections::BTreeMap::new();
    for round in 0..40 {
        for key in ["k0", "k1", "k2"] {
            let body = format!("{key} round {round}");
            let c = if round % 2 == 0 { &ca } else { &cb };
            put(c, "history", key, body.as_bytes()).await;
            last.insert(key, body.into_bytes());
        }
    }
    // Many chunks: the entry names its chunk list, which travels beside it.
    let big = pseudo_random(48 << 20, 4801);
    put(&ca, "history", "big", &big[1..]).await;
    put(&cb, "history", "big", &big).await;
    let history = a
        .metric("s3swarm_swarm_journal_entries_applied_total")
        .await
        + b.metric("s3swarm_swarm_journal_entries_applied_total")
            .await;
    assert!(history >= 120.0, "{history} entries were exchanged");
    for n in [&a, &b] {
        until("superseded entries pruned", 30, || async {
            n.metric_or_zero("s3swarm_store_journal_pruned_total").await >= 100.0
        })
        .await;
    }

    let d = Node::start_swarm(48, 4, &secret, &[2], &prune);
    all_alive(&[&a, &b, &d], 3.0).await;
    let cd = d.client();
    for (key, body) in &last {
        until("the last write of every key on the joiner", 30, || async {
            read(&cd, "history", key).await.ok().as_ref() == Some(body)
        })
        .await;
    }
    assert!(read(&cd, "history", "big").await.ok() == Some(big.clone()));
    let pulled = d
        .metric("s3swarm_swarm_journal_entries_applied_total")
        .await;
    eprintln!("the joiner applied {pulled} entries; a and b had applied {history}");
    assert!(
        pulled <= 10.0,
        "the joiner applied {pulled} entries for a namespace of 5 names ({history} in its history)"
    );
    // The tail goes on as before, both ways.
    put(&cd, "history", "after", b"written on the joiner").await;
    until("the joiner's write on a", 20, || async {
        read(&ca, "history", "after").await.ok().as_deref() == Some(&b"written on the joiner"[..])
    })
    .await;
}
