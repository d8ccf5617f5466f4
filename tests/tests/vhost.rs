//! Virtual-hosted-style addressing with `--domain`: `bucket.s3.test` names the bucket, and
//! path style keeps working. Names under `s3.test` resolve to 127.0.0.1 through the SDK
//! client's own resolver, so no DNS set-up is needed.

use std::net::{IpAddr, Ipv4Addr};

use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns};
use s3swarm_tests::{ACCESS_KEY, Node, SECRET_KEY, code};

/// Resolves every name to loopback, and records what it was asked.
#[derive(Clone, Debug, Default)]
struct Loopback(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl ResolveDns for Loopback {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        if let Ok(mut asked) = self.0.lock() {
            asked.push(name.to_owned());
        }
        DnsFuture::ready(Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
    }
}

fn client(endpoint: &str, path_style: bool, resolver: Loopback) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_with_resolver(resolver);
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "tests",
        ))
        .force_path_style(path_style)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

#[tokio::test]
async fn virtual_hosted_and_path_style_requests_reach_the_same_buckets() {
    let node = Node::start_with(
        &["--domain", "s3.test"],
        &[
            ("S3SWARM_ACCESS_KEY", ACCESS_KEY),
            ("S3SWARM_SECRET_KEY", SECRET_KEY),
        ],
    );
    let port = node.port();
    let resolver = Loopback::default();
    let vhost = client(&format!("http://s3.test:{port}"), false, resolver.clone());

    vhost.create_bucket().bucket("photos").send().await.unwrap();
    vhost
        .put_object()
        .bucket("photos")
        .key("2024/cat.jpg")
        .body(ByteStream::from_static(b"meow"))
        .send()
        .await
        .unwrap();
    let listed = vhost
        .list_objects_v2()
        .bucket("photos")
        .prefix("2024/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["2024/cat.jpg"]);
    let asked = resolver.0.lock().unwrap().clone();
    assert!(
        asked.iter().all(|n| n == "photos.s3.test"),
        "the SDK addressed the bucket by host name: {asked:?}"
    );
    assert!(!asked.is_empty());

    // Path style through an IP literal, the base domain itself, and an unrelated host name.
    for endpoint in [
        node.endpoint.clone(),
        format!("http://s3.test:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let path = client(&endpoint, true, Loopback::default());
        let got = path
            .get_object()
            .bucket("photos")
            .key("2024/cat.jpg")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{endpoint}: {e:?}"));
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"meow"
        );
    }

    // A virtual-hosted request for a bucket that does not exist answers NoSuchBucket for
    // that name, not for some other reading of the host.
    let err = vhost
        .get_object()
        .bucket("nothere")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NoSuchBucket");
}
