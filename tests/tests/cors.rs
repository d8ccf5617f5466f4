//! Bucket CORS: configuration through the SDK, preflights and actual responses through a
//! plain HTTP client acting as the browser.

use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use s3swarm_tests::{ACCESS_KEY, Node, SECRET_KEY, code};

fn rule(origins: &[&str], methods: &[&str]) -> aws_sdk_s3::types::builders::CorsRuleBuilder {
    let mut b = CorsRule::builder();
    for o in origins {
        b = b.allowed_origins(*o);
    }
    for m in methods {
        b = b.allowed_methods(*m);
    }
    b
}

fn config(rules: Vec<CorsRule>) -> CorsConfiguration {
    CorsConfiguration::builder()
        .set_cors_rules(Some(rules))
        .build()
        .unwrap()
}

fn app_rules() -> Vec<CorsRule> {
    vec![
        rule(&["https://app.example.com"], &["GET", "PUT"])
            .allowed_headers("Content-Type")
            .allowed_headers("x-amz-*")
            .expose_headers("ETag")
            .expose_headers("x-s3swarm-blake3")
            .max_age_seconds(600)
            .id("app")
            .build()
            .unwrap(),
        rule(&["https://*.example.org"], &["GET"]).build().unwrap(),
    ]
}

#[tokio::test]
async fn cors_configuration_round_trips_and_bad_documents_are_refused() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("web").send().await.unwrap();

    let none = s3.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&none), "NoSuchCORSConfiguration");
    assert_eq!(none.raw_response().map(|r| r.status().as_u16()), Some(404));

    s3.put_bucket_cors()
        .bucket("web")
        .cors_configuration(config(app_rules()))
        .send()
        .await
        .unwrap();
    let got = s3.get_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(got.cors_rules(), app_rules().as_slice());

    let bad: Vec<(&str, Vec<CorsRule>, &str)> = vec![
        (
            "PATCH is not a CORS method in S3",
            vec![rule(&["*"], &["PATCH"]).build().unwrap()],
            "InvalidRequest",
        ),
        (
            "lowercase method",
            vec![rule(&["*"], &["get"]).build().unwrap()],
            "InvalidRequest",
        ),
        (
            "two wildcards in one origin",
            vec![rule(&["https://*.*.com"], &["GET"]).build().unwrap()],
            "InvalidRequest",
        ),
        (
            "two wildcards in one header",
            vec![
                rule(&["*"], &["GET"])
                    .allowed_headers("x-*-*")
                    .build()
                    .unwrap(),
            ],
            "InvalidRequest",
        ),
        ("no rules", vec![], "MalformedXML"),
        (
            "101 rules",
            (0..101)
                .map(|i| {
                    rule(&[format!("https://{i}.test").as_str()], &["GET"])
                        .build()
                        .unwrap()
                })
                .collect(),
            "MalformedXML",
        ),
    ];
    for (what, rules, want) in bad {
        let err = s3
            .put_bucket_cors()
            .bucket("web")
            .cors_configuration(config(rules))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), want, "{what}");
    }
    // Documents the SDK would not even build: a rule without an origin, and one without a
    // method, sent as raw XML.
    for xml in [
        "<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>",
        "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>",
        "<CORSConfiguration><CORSRule>",
    ] {
        let r = node
            .signed("PUT", "/web?cors", xml.as_bytes().to_vec())
            .await;
        assert_eq!(r.status(), 400, "{xml}");
        let body = r.text().await.unwrap();
        assert!(body.contains("<Code>MalformedXML</Code>"), "{xml}: {body}");
    }
    // Refused documents left the stored one alone.
    let got = s3.get_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(got.cors_rules(), app_rules().as_slice());

    // Exactly 100 rules is allowed.
    let hundred: Vec<_> = (0..100)
        .map(|i| {
            rule(&[format!("https://{i}.test").as_str()], &["GET"])
                .build()
                .unwrap()
        })
        .collect();
    s3.put_bucket_cors()
        .bucket("web")
        .cors_configuration(config(hundred))
        .send()
        .await
        .unwrap();

    s3.delete_bucket_cors().bucket("web").send().await.unwrap();
    let gone = s3.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&gone), "NoSuchCORSConfiguration");
    let missing = s3
        .put_bucket_cors()
        .bucket("nope")
        .cors_configuration(config(app_rules()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "NoSuchBucket");
}

async fn preflight(
    node: &Node,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = node.http().request(
        reqwest::Method::OPTIONS,
        format!("{}{}", node.endpoint, path),
    );
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.unwrap())
}

fn hv<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn preflights_are_answered_unsigned_by_the_first_matching_rule() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("web").send().await.unwrap();
    s3.create_bucket().bucket("plain").send().await.unwrap();

    // Before any configuration: refused.
    let (st, _, body) = preflight(
        &node,
        "/web/k",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(st, 403);
    assert!(body.contains("CORSResponse"), "{body}");

    s3.put_bucket_cors()
        .bucket("web")
        .cors_configuration(config(app_rules()))
        .send()
        .await
        .unwrap();

    let (st, h, body) = preflight(
        &node,
        "/web/photos/cat.jpg",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type, X-Amz-Date"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        hv(&h, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(hv(&h, "access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        hv(&h, "access-control-allow-headers"),
        Some("content-type, X-Amz-Date")
    );
    assert_eq!(hv(&h, "access-control-max-age"), Some("600"));
    assert!(hv(&h, "vary").is_some_and(|v| v.contains("Origin")));

    // The wildcard origin rule, on the bucket itself.
    let (st, h, _) = preflight(
        &node,
        "/web",
        &[
            ("origin", "https://docs.example.org"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        hv(&h, "access-control-allow-origin"),
        Some("https://docs.example.org")
    );

    for (what, headers) in [
        (
            "method no rule allows",
            vec![
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "DELETE"),
            ],
        ),
        (
            "header no rule allows",
            vec![
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "content-type, authorization",
                ),
            ],
        ),
        (
            "unknown origin",
            vec![
                ("origin", "https://evil.example.net"),
                ("access-control-request-method", "GET"),
            ],
        ),
        (
            "wildcard does not match the bare domain",
            vec![
                ("origin", "https://example.org"),
                ("access-control-request-method", "GET"),
            ],
        ),
    ] {
        let (st, h, body) = preflight(&node, "/web/k", &headers).await;
        assert_eq!(st, 403, "{what}");
        assert!(
            body.contains("<Code>AccessForbidden</Code>")
                && body.contains("CORSResponse: This CORS request is not allowed"),
            "{what}: {body}"
        );
        assert!(hv(&h, "access-control-allow-origin").is_none(), "{what}");
    }

    // No Origin at all is a bad request, not a CORS decision.
    let (st, _, _) = preflight(&node, "/web/k", &[("access-control-request-method", "GET")]).await;
    assert_eq!(st, 400);
    // A bucket without rules and a bucket that does not exist both refuse.
    for path in ["/plain/k", "/nosuchbucket/k"] {
        let (st, _, _) = preflight(
            &node,
            path,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
        assert_eq!(st, 403, "{path}");
    }
}

#[tokio::test]
async fn responses_to_a_matching_origin_carry_cors_headers() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("web").send().await.unwrap();
    s3.put_bucket_cors()
        .bucket("web")
        .cors_configuration(config(app_rules()))
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("web")
        .key("k")
        .body(b"data".to_vec().into())
        .send()
        .await
        .unwrap();

    let get = |origin: Option<&'static str>| {
        let node = &node;
        async move {
            let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
            node.signed_with("GET", "/web/k", &headers, vec![], ACCESS_KEY, SECRET_KEY)
                .await
        }
    };
    let r = get(Some("https://app.example.com")).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(r.text().await.unwrap(), "data");
    assert_eq!(
        hv(&h, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        hv(&h, "access-control-expose-headers"),
        Some("ETag, x-s3swarm-blake3")
    );
    assert!(hv(&h, "vary").is_some_and(|v| v.contains("Origin")));

    // Wildcard-origin rule: a matching origin gets the headers too.
    let r = get(Some("https://x.example.org")).await;
    assert_eq!(
        hv(r.headers(), "access-control-allow-origin"),
        Some("https://x.example.org")
    );
    // No Origin, or one no rule allows: the answer is the same object without CORS headers.
    for origin in [None, Some("https://evil.example.net")] {
        let r = get(origin).await;
        assert_eq!(r.status(), 200);
        assert!(
            hv(r.headers(), "access-control-allow-origin").is_none(),
            "{origin:?}"
        );
    }
    // Errors carry them as well, so a browser script can read the S3 error.
    let r = node
        .signed_with(
            "GET",
            "/web/missing",
            &[("origin", "https://app.example.com")],
            vec![],
            ACCESS_KEY,
            SECRET_KEY,
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        hv(r.headers(), "access-control-allow-origin"),
        Some("https://app.example.com")
    );
}
