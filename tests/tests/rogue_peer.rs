//! A peer that holds the cluster secret and turns hostile: it proves the secret like any
//! node, then floods the node with what a broken or malicious implementation could send.
//! Tried, all at once for a fixed time (`S3SWARM_ROGUE_SECS`, 12 s by default):
//! - every request and notice stream it may open (256 of each) announcing 8 MiB frames, sent
//!   almost whole and then held open;
//! - frames of random bytes and random lengths, on request and notice streams;
//! - well-formed but heavy requests: `Have` for 200,000 random chunks, `Pull` with 20,000
//!   made-up origins, chunks that do not exist with `insist`, registry messages with random
//!   bodies; notices with random gossip and 100,000 announced chunks;
//! - and, before any of that, 100 connections that never prove anything but send 8 MiB
//!   hellos.
//!
//! Meanwhile the node must keep its memory bounded and keep serving: a 4 KiB PUT and GET
//! answer within 2 s every second, and its honest peer still reads an object through it.
//! Afterwards it is still running and answers as before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng as _;
use s3swarm_tests::*;
use swarm::auth::{self, Role};
use swarm::wire::{self, Hello, Notice, RegistryRpc, Request};

const SECRET: &str = "rogue-peer-test-secret-0123456789abcdef";
const NET: u8 = 42;
/// Resident memory the node may reach under the attack (it idles near 40 MiB).
const RSS_LIMIT_MIB: u64 = 512;

fn attack_secs() -> u64 {
    std::env::var("S3SWARM_ROGUE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

fn client_endpoint() -> (quinn::Endpoint, quinn::ClientConfig) {
    install_crypto_provider();
    let (_, mut client) = auth::quic_configs(Duration::from_secs(30)).expect("quic configs");
    // The rogue's own memory: what quinn buffers for sending is bounded per connection by
    // its send window, and the test opens hundreds of connections.
    let mut transport = quinn::TransportConfig::default();
    transport
        .send_window(2 << 20)
        .max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(256u32.into());
    client.transport_config(Arc::new(transport));
    let ep = swarm::socket::endpoint(format!("127.0.{NET}.9:0").parse().expect("addr"), None)
        .expect("endpoint");
    (ep, client)
}

/// A connection that has proven the cluster secret, as a peer with a new random id.
async fn join(
    ep: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    to: SocketAddr,
) -> quinn::Connection {
    try_join(ep, cfg, to)
        .await
        .unwrap_or_else(|e| panic!("the node admits the rogue: {e}"))
}

/// As [`join`], or why the node did not admit it (its close reason, when it gave one).
async fn try_join(
    ep: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    to: SocketAddr,
) -> Result<quinn::Connection, String> {
    let secret = swarm::ClusterSecret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let conn = ep
        .connect_with(cfg.clone(), to, "s3swarm")
        .expect("connect")
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let keying = auth::session_keying(&conn).expect("keying");
    let id = swarm::NodeId(rand::random());
    let hello = Hello {
        protocol: wire::PROTOCOL,
        member: swarm::member::Member {
            id,
            addr: ep.local_addr().expect("local addr"),
            http: None,
            storage: true,
            incarnation: 1,
        },
        proof: secret.proof(Role::Dialer, &id, &keying),
    };
    wire::write_frame(&mut send, &hello)
        .await
        .map_err(|e| e.to_string())?;
    send.finish().ok();
    match wire::read_frame::<_, Hello>(&mut recv).await {
        Ok(_) => Ok(conn),
        Err(e) => Err(conn
            .close_reason()
            .map_or_else(|| e.to_string(), |r| r.to_string())),
    }
}

fn junk(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill(&mut v[..]);
    v
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// 8 MiB frames announced and sent but for their last byte, on a stream then held open; a
/// stream the node stops is replaced by a new one.
async fn hog_bi(conn: quinn::Connection, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut send, _recv)) = conn.open_bi().await else {
            return;
        };
        hog(&mut send, &stop, &sent).await;
    }
}

async fn hog_uni(conn: quinn::Connection, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut send) = conn.open_uni().await else {
            return;
        };
        hog(&mut send, &stop, &sent).await;
    }
}

async fn hog(send: &mut quinn::SendStream, stop: &AtomicBool, sent: &AtomicU64) {
    let len = wire::MAX_FRAME;
    if send.write_all(&(len as u32).to_be_bytes()).await.is_err() {
        return;
    }
    let block = junk(64 * 1024);
    let mut left = len - 1;
    while left > 0 && !stop.load(Ordering::Relaxed) {
        let n = left.min(block.len());
        // A node that stops reading (or resets the stream) ends this hog.
        match tokio::time::timeout(Duration::from_secs(1), send.write_all(&block[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => continue,
        }
        left -= n;
        sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Random frames and heavy well-formed requests, one stream after another.
async fn noise(conn: quinn::Connection, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = match n % 8 {
            0 => junk(rand::random_range(0..200_000)),
            1 => postcard::to_allocvec(&Request::Have {
                chunks: (0..200_000).map(|_| rand::random()).collect(),
            })
            .expect("encode"),
            2 => postcard::to_allocvec(&Request::Pull {
                seen: (0..20_000)
                    .map(|_| (swarm::NodeId(rand::random()), rand::random()))
                    .collect(),
            })
            .expect("encode"),
            3 => postcard::to_allocvec(&Request::Chunk {
                hash: rand::random(),
                insist: true,
            })
            .expect("encode"),
            4 => postcard::to_allocvec(&Request::Registry {
                rpc: [
                    RegistryRpc::AppendEntries,
                    RegistryRpc::Vote,
                    RegistryRpc::InstallSnapshot,
                    RegistryRpc::Propose,
                    RegistryRpc::Status,
                ][rand::random_range(0..5)],
                body: junk(rand::random_range(0..100_000)),
            })
            .expect("encode"),
            5 => postcard::to_allocvec(&Notice::Gossip(junk(rand::random_range(0..9000))))
                .expect("encode"),
            6 => postcard::to_allocvec(&Notice::Have(
                (0..100_000).map(|_| rand::random()).collect(),
            ))
            .expect("encode"),
            _ => postcard::to_allocvec(&Notice::Poke).expect("encode"),
        };
        let on_uni = matches!(n % 8, 5..=7) || n.is_multiple_of(16);
        let wrote = async {
            if on_uni {
                let mut s = conn.open_uni().await?;
                s.write_all(&frame(&body)).await?;
                s.finish()?;
            } else {
                let (mut s, mut r) = conn.open_bi().await?;
                s.write_all(&frame(&body)).await?;
                s.finish()?;
                let _ = r.read_to_end(16 << 20).await;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        if tokio::time::timeout(Duration::from_secs(5), wrote)
            .await
            .is_err_and(|_| conn.close_reason().is_some())
        {
            return;
        }
    }
}

/// Connections that never prove the secret, each sending an 8 MiB hello.
async fn unproven(ep: quinn::Endpoint, cfg: quinn::ClientConfig, to: SocketAddr) {
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (ep, cfg) = (ep.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(connecting) = ep.connect_with(cfg, to, "s3swarm") else {
                return;
            };
            let Ok(conn) = connecting.await else {
                return;
            };
            let Ok((mut send, _recv)) = conn.open_bi().await else {
                return;
            };
            let _ = send
                .write_all(&(wire::MAX_FRAME as u32).to_be_bytes())
                .await;
            let block = junk(64 * 1024);
            let _ = tokio::time::timeout(Duration::from_secs(6), async {
                for _ in 0..wire::MAX_FRAME / block.len() - 1 {
                    send.write_all(&block).await?;
                }
                Ok::<_, quinn::WriteError>(())
            })
            .await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_authenticated_peer_cannot_exhaust_a_nodes_memory_or_stop_it_serving() {
    let secret = SecretFile::new(SECRET);
    let mut a = Node::start_swarm(NET, 1, &secret, &[], &["--scrub-rate", "0"]);
    let b = Node::start_swarm(NET, 2, &secret, &[1], &["--scrub-rate", "0"]);
    all_alive(&[&a, &b], 2.0).await;
    let s3a = a.client_once(ACCESS_KEY, SECRET_KEY, Duration::from_secs(2));
    s3a.create_bucket()
        .bucket("calm")
        .send()
        .await
        .expect("bucket");
    let data = pseudo_random(8 << 20, 42);
    put(&s3a, "calm", "model.bin", &data).await;
    let (rss_before, _) = a.rss_mib();

    let to: SocketAddr = swarm_addr(NET, 1).parse().expect("addr");
    let (ep, cfg) = client_endpoint();
    unproven(ep.clone(), cfg.clone(), to).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let conn = join(&ep, &cfg, to).await;
        for _ in 0..256 {
            tasks.push(tokio::spawn(hog_bi(
                conn.clone(),
                stop.clone(),
                sent.clone(),
            )));
            tasks.push(tokio::spawn(hog_uni(
                conn.clone(),
                stop.clone(),
                sent.clone(),
            )));
        }
        for _ in 0..4 {
            tasks.push(tokio::spawn(noise(conn.clone(), stop.clone())));
        }
    }

    let started = Instant::now();
    let mut peak = 0;
    let mut round = 0u32;
    while started.elapsed() < Duration::from_secs(attack_secs()) {
        round += 1;
        let key = format!("probe-{round}");
        let small = pseudo_random(4096, u64::from(round));
        let answered = tokio::time::timeout(Duration::from_secs(2), async {
            put(&s3a, "calm", &key, &small).await;
            get_bytes(&s3a, "calm", &key).await
        })
        .await;
        assert!(
            answered.as_ref().is_ok_and(|got| *got == small),
            "a 4 KiB PUT and GET took over 2 s under the attack (round {round})"
        );
        assert_eq!(a.exited(), None, "the node died under the attack");
        let (rss, _) = a.rss_mib();
        peak = peak.max(rss);
        assert!(
            rss < RSS_LIMIT_MIB,
            "the node's memory grew to {rss} MiB (from {rss_before}) with {} MiB of hostile frames sent",
            sent.load(Ordering::Relaxed) >> 20
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The honest peer still gets an object through the node under attack.
    let s3b = b.client();
    assert_eq!(get_bytes(&s3b, "calm", "model.bin").await, data);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let refused = a.metric("s3swarm_swarm_peer_frames_refused_total").await;
    eprintln!(
        "rogue peer: {} MiB of held frames sent, {refused} frames refused; node RSS {rss_before} MiB before, peak {peak} MiB during",
        sent.load(Ordering::Relaxed) >> 20
    );
    // The attack reached the node's limits (it is not a test of a rogue that never got in).
    assert!(refused > 100.0, "{refused} frames refused");
    assert_eq!(a.exited(), None);
    assert_eq!(get_bytes(&s3a, "calm", "model.bin").await, data);
}

/// Connections are capped: a crowd of strangers that never prove the secret gets 64 at a
/// time to try (the rest are refused at once, and those let in go after the hello timeout),
/// and a holder of the secret opening connection after connection, under new ids, gets
/// `--swarm-max-connections` of them in all, members' included; the rest are closed as
/// busy. Meanwhile the node keeps serving S3 and its member keeps reading through it; once
/// the rogue's connections close, there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_are_capped_before_and_after_the_proof() {
    const CAP: usize = 6;
    let secret = SecretFile::new(SECRET);
    let cap = CAP.to_string();
    let mut a = Node::start_swarm(
        NET,
        5,
        &secret,
        &[],
        &["--scrub-rate", "0", "--swarm-max-connections", &cap],
    );
    let b = Node::start_swarm(NET, 6, &secret, &[5], &["--scrub-rate", "0"]);
    all_alive(&[&a, &b], 2.0).await;
    let s3a = a.client_once(ACCESS_KEY, SECRET_KEY, Duration::from_secs(2));
    s3a.create_bucket()
        .bucket("capped")
        .send()
        .await
        .expect("bucket");
    let data = pseudo_random(1 << 20, 7);
    put(&s3a, "capped", "held.bin", &data).await;
    let to: SocketAddr = swarm_addr(NET, 5).parse().expect("addr");
    let (ep, cfg) = client_endpoint();

    // 300 strangers at once: each completes QUIC's handshake and then says nothing.
    let mut strangers = Vec::new();
    for _ in 0..300 {
        let (ep, cfg) = (ep.clone(), cfg.clone());
        strangers.push(tokio::spawn(async move {
            let conn = ep.connect_with(cfg, to, "s3swarm").ok()?.await.ok()?;
            // Held until the node gives up on it.
            let reason = conn.closed().await;
            Some(reason)
        }));
    }
    let small = pseudo_random(4096, 1);
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        put(&s3a, "capped", "during", &small).await;
        get_bytes(&s3a, "capped", "during").await
    })
    .await;
    assert!(
        answered.is_ok_and(|got| got == small),
        "S3 stalled under the strangers"
    );
    let mut let_in = 0;
    for t in strangers {
        if t.await.expect("task").is_some() {
            let_in += 1;
        }
    }
    let turned_away = a
        .metric(r#"s3swarm_swarm_connections_refused_total{reason="handshakes"}"#)
        .await;
    eprintln!("strangers: {let_in} of 300 got a connection, {turned_away} refused at once");
    assert!(
        let_in <= swarm::admission::MAX_HANDSHAKES + 8,
        "{let_in} strangers were let in at once"
    );
    assert!(turned_away >= 200.0, "{turned_away} refused");

    // A holder of the secret, under new ids each time.
    let mut admitted = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..20 {
        match try_join(&ep, &cfg, to).await {
            Ok(c) => admitted.push(c),
            Err(why) => refusals.push(why),
        }
    }
    let busy = a
        .metric(r#"s3swarm_swarm_connections_refused_total{reason="busy"}"#)
        .await;
    eprintln!(
        "rogue: {} of 20 connections admitted, {busy} refused as busy; first refusal: {:?}",
        admitted.len(),
        refusals.first()
    );
    // b holds one of the CAP (it dialed a), perhaps two while a's dial of b is also served.
    assert!(
        (CAP - 2..=CAP - 1).contains(&admitted.len()),
        "{} admitted",
        admitted.len()
    );
    assert_eq!(busy as usize, refusals.len());
    assert!(refusals.iter().all(|r| r.contains("busy")), "{refusals:?}");
    // The member already in still reads through the node, and the node still serves.
    assert_eq!(get_bytes(&b.client(), "capped", "held.bin").await, data);
    assert_eq!(get_bytes(&s3a, "capped", "held.bin").await, data);
    // Closing the rogue's connections frees their room.
    for c in &admitted {
        c.close(0u32.into(), b"done");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_join(&ep, &cfg, to).await {
            Ok(_) => break,
            Err(why) => assert!(
                Instant::now() < deadline,
                "no room after the rogue left: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.exited(), None);
}
