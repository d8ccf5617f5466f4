//! Bucket operations and identities, through aws-sdk-s3.

use s3swarm_tests::{Node, code};

#[tokio::test]
async fn bucket_lifecycle_follows_s3() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("alpha").send().await.unwrap();
    s3.head_bucket().bucket("alpha").send().await.unwrap();
    let again = s3.create_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&again), "BucketAlreadyOwnedByYou");

    let names: Vec<_> = s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, ["alpha"]);
    let loc = s3
        .get_bucket_location()
        .bucket("alpha")
        .send()
        .await
        .unwrap();
    assert!(
        loc.location_constraint()
            .is_none_or(|l| l.as_str().is_empty()),
        "us-east-1 is reported as empty"
    );

    s3.put_object()
        .bucket("alpha")
        .key("k")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    let busy = s3.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&busy), "BucketNotEmpty");
    s3.delete_object()
        .bucket("alpha")
        .key("k")
        .send()
        .await
        .unwrap();
    s3.delete_bucket().bucket("alpha").send().await.unwrap();
    let gone = s3.head_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(gone.raw_response().map(|r| r.status().as_u16()), Some(404));
}

#[tokio::test]
async fn invalid_bucket_names_are_rejected() {
    let node = Node::start();
    let s3 = node.client();
    for bad in [
        "ab",
        "Upper-Case",
        "under_score",
        "-leading",
        "trailing-",
        "a..b",
        "192.168.0.1",
    ] {
        let err = s3.create_bucket().bucket(bad).send().await.unwrap_err();
        assert_eq!(code(&err), "InvalidBucketName", "{bad}");
    }
    // Nothing was created along the way.
    assert!(s3.list_buckets().send().await.unwrap().buckets().is_empty());
}

#[tokio::test]
async fn another_identity_is_denied_a_bucket_it_does_not_own() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s3swarm.toml");
    std::fs::write(
        &cfg,
        "[[keys]]\naccess_key = \"ALICEKEY\"\nsecret_key = \"alice-secret-key\"\n\n[[keys]]\naccess_key = \"BOBKEY\"\nsecret_key = \"bob-secret-key-1\"\n",
    )
    .unwrap();
    let node = Node::start_with(&["--config", cfg.to_str().unwrap()], &[]);
    let alice = node.client_as("ALICEKEY", "alice-secret-key");
    let bob = node.client_as("BOBKEY", "bob-secret-key-1");
    alice.create_bucket().bucket("alices").send().await.unwrap();
    alice
        .put_object()
        .bucket("alices")
        .key("secret.txt")
        .body(b"mine".to_vec().into())
        .send()
        .await
        .unwrap();

    let e = bob
        .get_object()
        .bucket("alices")
        .key("secret.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = bob
        .put_object()
        .bucket("alices")
        .key("x")
        .body(b"y".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = bob
        .list_objects_v2()
        .bucket("alices")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = bob
        .delete_bucket()
        .bucket("alices")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = bob
        .create_bucket()
        .bucket("alices")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BucketAlreadyExists");
    assert!(
        bob.list_buckets()
            .send()
            .await
            .unwrap()
            .buckets()
            .is_empty(),
        "bob sees only his buckets"
    );

    let body = alice
        .get_object()
        .bucket("alices")
        .key("secret.txt")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(body.into_bytes().as_ref(), b"mine");
}

#[tokio::test]
async fn generated_credentials_are_stored_private_and_printed_once() {
    use std::os::unix::fs::PermissionsExt;
    let mut node = Node::start_with(&[], &[]);
    let path = node.data_dir.join("credentials.toml");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap()
    };
    let (ak, sk) = (field("access_key"), field("secret_key"));
    assert!(
        node.banner.contains(&sk),
        "first start prints the secret once"
    );
    assert!(
        node.banner.contains("aws --endpoint-url"),
        "with an aws CLI hint"
    );
    node.client_as(&ak, &sk)
        .create_bucket()
        .bucket("gen")
        .send()
        .await
        .unwrap();
    node.restart();
    assert!(
        !node.banner.contains(&sk),
        "later starts do not print the secret"
    );
    node.client_as(&ak, &sk)
        .head_bucket()
        .bucket("gen")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn unimplemented_operations_say_so_instead_of_pretending() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("nyi").send().await.unwrap();
    let e = s3
        .put_bucket_policy()
        .bucket("nyi")
        .policy(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(501));
    let e = s3
        .get_bucket_lifecycle_configuration()
        .bucket("nyi")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    // MFA Delete is part of the versioning document but not supported: refused, not ignored.
    let mfa = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .mfa_delete(aws_sdk_s3::types::MfaDelete::Enabled)
        .build();
    let e = s3
        .put_bucket_versioning()
        .bucket("nyi")
        .versioning_configuration(mfa)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    let v = s3
        .get_bucket_versioning()
        .bucket("nyi")
        .send()
        .await
        .unwrap();
    assert!(v.status().is_none(), "the refused request changed nothing");
}
