//! kill -9 at arbitrary moments of a PUT: after restart the key holds the old or the new
//! object, never a mix, and no temp or unreferenced data survives. Two kills are placed by
//! what the node has done, not by time: one while the body is still being written (the old
//! object must remain), one once the new data is sealed and the commit is due (either object,
//! never a mix, and no pack left that nothing references).

use std::time::{Duration, Instant};

use s3swarm_tests::{Node, files_under, pseudo_random};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes of uploads staged under `tmp/` (the pack an upload is writing).
fn staged(node: &Node) -> u64 {
    files_under(&node.data_dir.join("tmp"))
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn get(node: &Node) -> Vec<u8> {
    node.client()
        .get_object()
        .bucket("crash")
        .key("k")
        .send()
        .await
        .expect("GET after restart")
        .body
        .collect()
        .await
        .expect("body")
        .to_vec()
}

#[tokio::test]
async fn kill9_placed_mid_body_and_at_the_commit() {
    let mut node = Node::start();
    let old = pseudo_random(6 * 1024 * 1024, 101);
    let new = pseudo_random(48 * 1024 * 1024, 201);
    let s3 = node.client();
    s3.create_bucket().bucket("crash").send().await.unwrap();
    s3.put_object()
        .bucket("crash")
        .key("k")
        .body(old.clone().into())
        .send()
        .await
        .unwrap();
    let packs_with_old = node.packs();
    let addr = node.endpoint.trim_start_matches("http://").to_owned();
    let len = new.len().to_string();
    let head = node.signed_head("PUT", "/crash/k", &[("content-length", &len)]);

    // Mid-body: a third of the body sent, and the node has written part of it.
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&new[..16 << 20]).await.unwrap();
    wait_for("the node staged part of the body", || {
        staged(&node) >= 4 << 20
    })
    .await;
    let at_kill = staged(&node);
    node.kill9();
    assert!(
        at_kill < new.len() as u64,
        "the kill did not land mid-body ({at_kill} bytes staged)"
    );
    drop(sock);
    node.restart();
    assert!(
        get(&node).await == old,
        "a kill mid-body changed the object"
    );
    assert!(files_under(&node.data_dir.join("tmp")).is_empty());
    assert_eq!(
        node.packs(),
        packs_with_old,
        "a pack of the cut upload survived"
    );

    // At the commit: the whole body sent, the new pack sealed (renamed into packs/, which comes
    // right before the metadata commit), no answer yet.
    let head = node.signed_head("PUT", "/crash/k", &[("content-length", &len)]);
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&new).await.unwrap();
    wait_for("the new pack was sealed", || node.packs() > packs_with_old).await;
    node.kill9();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), sock.read_to_end(&mut answer)).await;
    node.restart();
    let got = get(&node).await;
    assert!(
        got == old || got == new,
        "neither old nor new ({} bytes)",
        got.len()
    );
    if got == old {
        assert!(
            answer.is_empty(),
            "the client was answered but the object is the old one"
        );
        assert_eq!(
            node.packs(),
            packs_with_old,
            "an unreferenced pack survived"
        );
    }
    assert!(files_under(&node.data_dir.join("tmp")).is_empty());
    eprintln!(
        "kill at the commit: {} object, client {}",
        if got == old { "old" } else { "new" },
        if answer.is_empty() {
            "unanswered"
        } else {
            "answered"
        }
    );
}

#[tokio::test]
async fn kill9_during_put_leaves_old_or_new_object_and_no_leaks() {
    let mut node = Node::start();
    let old = pseudo_random(6 * 1024 * 1024, 100);
    let new = pseudo_random(48 * 1024 * 1024, 200);
    {
        let s3 = node.client();
        s3.create_bucket().bucket("crash").send().await.unwrap();
        s3.put_object()
            .bucket("crash")
            .key("k")
            .body(old.clone().into())
            .send()
            .await
            .unwrap();
    }
    let mut saw_old = 0;
    let mut saw_new = 0;
    // Kill at increasing delays, so some kills land mid-body, some around the commit.
    for (round, delay_ms) in [5u64, 40, 120, 250, 400, 700, 1200].into_iter().enumerate() {
        let s3 = node.client();
        let body = new.clone();
        let put = tokio::spawn(async move {
            s3.put_object()
                .bucket("crash")
                .key("k")
                .body(body.into())
                .send()
                .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        node.kill9();
        let _ = put.await;
        node.restart();

        let s3 = node.client();
        let got = get(&node).await;
        if got == old {
            saw_old += 1;
        } else if got == new {
            saw_new += 1;
        } else {
            panic!(
                "round {round}: object is neither old nor new ({} bytes)",
                got.len()
            );
        }
        assert!(
            files_under(&node.data_dir.join("tmp")).is_empty(),
            "round {round}: temp data survived a restart"
        );
        // Put the old version back for the next round.
        s3.put_object()
            .bucket("crash")
            .key("k")
            .body(old.clone().into())
            .send()
            .await
            .unwrap();
    }
    eprintln!("after kill -9: old object {saw_old} times, new object {saw_new} times");

    // Every pack left is referenced: deleting the one object must leave no pack behind.
    let s3 = node.client();
    s3.delete_object()
        .bucket("crash")
        .key("k")
        .send()
        .await
        .unwrap();
    s3swarm_tests::eventually("every pack is collected once its object is gone", || {
        node.packs() == 0
    })
    .await;
}
