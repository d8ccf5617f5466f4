//! Load generator for `tests/bench/run`: presigned URLs for curl, bucket creation, and the
//! small-object benchmark (many concurrent clients, latency percentiles).
//!
//! s3bench presign  <endpoint> <access> <secret> <GET|PUT> <bucket> <key>
//! s3bench mkbucket <endpoint> <access> <secret> <bucket>
//! s3bench small    <endpoint> <access> <secret> <bucket> <objects> <concurrency> <size>

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::presigning::PresigningConfig;

fn client(endpoint: &str, access: &str, secret: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(access, secret, None, None, "bench"))
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn phase<F, Fut>(objects: usize, concurrency: usize, op: F) -> (f64, f64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= objects {
                    break;
                }
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    (
        objects as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: s3bench presign|mkbucket|copy|small <endpoint> <access> <secret> ...";
    if args.len() < 5 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let s3 = client(&args[2], &args[3], &args[4]);
    match args[1].as_str() {
        "presign" => {
            let cfg =
                PresigningConfig::expires_in(Duration::from_secs(3600)).expect("presign config");
            let (method, bucket, key) = (&args[5], &args[6], &args[7]);
            let uri = match method.as_str() {
                "GET" => s3
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(cfg)
                    .await
                    .expect("presign")
                    .uri()
                    .to_owned(),
                _ => s3
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(cfg)
                    .await
                    .expect("presign")
                    .uri()
                    .to_owned(),
            };
            println!("{uri}");
        }
        "mkbucket" => {
            s3.create_bucket()
                .bucket(&args[5])
                .send()
                .await
                .expect("create bucket");
        }
        "copy" => {
            let (bucket, src, dst) = (&args[5], &args[6], &args[7]);
            let start = Instant::now();
            s3.copy_object()
                .bucket(bucket)
                .key(dst)
                .copy_source(format!("{bucket}/{src}"))
                .send()
                .await
                .expect("copy");
            println!("{:.4}", start.elapsed().as_secs_f64());
        }
        "small" => {
            let bucket = args[5].clone();
            let objects: usize = args[6].parse().expect("objects");
            let concurrency: usize = args[7].parse().expect("concurrency");
            let size: usize = args[8].parse().expect("size");
            let body = bytes::Bytes::from(s3swarm_tests::pseudo_random(size, 1));
            let (c, b, d) = (s3.clone(), bucket.clone(), body.clone());
            let put = phase(objects, concurrency, move |i| {
                let (c, b, d) = (c.clone(), b.clone(), d.clone());
                async move {
                    c.put_object()
                        .bucket(b)
                        .key(format!("small/{i:08}"))
                        .body(d.into())
                        .send()
                        .await
                        .expect("put");
                }
            })
            .await;
            let (c, b) = (s3.clone(), bucket.clone());
            let get = phase(objects, concurrency, move |i| {
                let (c, b) = (c.clone(), b.clone());
                async move {
                    let r = c
                        .get_object()
                        .bucket(b)
                        .key(format!("small/{i:08}"))
                        .send()
                        .await
                        .expect("get");
                    let data = r.body.collect().await.expect("body").into_bytes();
                    assert_eq!(data.len(), size);
                }
            })
            .await;
            println!(
                "put_ops={:.0} put_p50_ms={:.2} put_p99_ms={:.2} get_ops={:.0} get_p50_ms={:.2} get_p99_ms={:.2}",
                put.0, put.1, put.2, get.0, get.1, get.2
            );
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
