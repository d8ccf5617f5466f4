//! kill -9 at arbitrary moments of a PUT: after restart the key holds the old or the new
//! object, never a mix, and no temp or unreferenced data survives.

use std::time::Duration;

use s3swarm_tests::{Node, files_under, pseudo_random};

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
        let got = s3
            .get_object()
            .bucket("crash")
            .key("k")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        if got.as_ref() == old.as_slice() {
            saw_old += 1;
        } else if got.as_ref() == new.as_slice() {
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
