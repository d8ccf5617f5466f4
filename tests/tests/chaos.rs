//! A chaos test in the spirit of Jepsen: four real nodes on 127.0.30.x, two identities with
//! one bucket each (alice's versioned, bob's not), six clients writing, deleting, copying and
//! reading through every node, while nodes are killed -9 and restarted, frozen (SIGSTOP) and
//! thawed, and cut off from each other (blackhole routing rules between their addresses, set
//! up and torn down here). After healing, a checker verifies the history:
//!
//! - listings agree on every node;
//! - every acknowledged version in the versioned bucket is there, unless a delete of it was
//!   sent, and nothing is there that no write made;
//! - in the unversioned bucket each key ends as some write left it that no acknowledged write
//!   followed in real time (last writer wins, by clocks that on one machine agree);
//! - no identity ever read the other's object, during the run or after;
//! - of racing `If-None-Match: *` writers of one key, at most one was acknowledged, and no
//!   bucket name was created by both identities (the registry's decisions).
//!
//! `CHAOS_SECS` sets how long clients and faults run (default 20, as CI runs it);
//! `CHAOS_SEED` the seed (default fixed).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::BucketVersioningStatus;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use s3swarm_tests::*;

const SECRET: &str = "chaos-test-secret-0123456789abcdef";
const NET: u8 = 30;
const NODES: u8 = 4;
const WORKERS: usize = 6;
const KEYS: usize = 6;
const IDS: [(&str, &str, &str); 2] = [
    ("ALICEKEY", "alice-secret-key", "alice-ver"),
    ("BOBKEY", "bob-secret-key-1", "bob-lww"),
];

#[derive(Clone, Debug)]
enum Kind {
    Put(String),
    CondPut(String),
    Delete,
    DeleteVersion(String),
    Copy(String),
    Get,
    CreateBucket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged, with the version id the node answered.
    Ok(Option<String>),
    /// A definite refusal (an S3 error code): nothing was written.
    Failed(String),
    /// No answer (timeout, connection reset): it may or may not have happened.
    Unknown,
}

#[derive(Clone, Debug)]
struct Op {
    who: usize,
    /// The node (index) the request went to.
    node: usize,
    kind: Kind,
    bucket: String,
    key: String,
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

/// What the checker found that must not happen.
#[derive(Default)]
struct Anomalies(Vec<String>);

impl Anomalies {
    fn add(&mut self, s: String) {
        if self.0.len() < 50 {
            eprintln!("ANOMALY: {s}");
        }
        self.0.push(s);
    }
}

/// Routing rules that drop traffic between node addresses (loopback has no firewall here):
/// the `local` table lookup moves behind them while they exist, and comes back on drop.
struct Partitions {
    rules: Vec<(String, String)>,
}

impl Partitions {
    fn ip(args: &[&str]) -> bool {
        Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `None` when this process may not change routing rules (not root).
    fn new() -> Option<Partitions> {
        let shown = Command::new("ip").args(["rule", "show"]).output().ok()?;
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        if !shown.contains("100:\tfrom all lookup local") {
            if !Self::ip(&["rule", "add", "pref", "100", "lookup", "local"]) {
                return None;
            }
            Self::ip(&["rule", "del", "pref", "0", "lookup", "local"]);
        }
        Some(Partitions { rules: Vec::new() })
    }

    /// Adds or deletes (`op`) the rule dropping what `from` sends to `to`.
    fn rule(op: &str, from: &str, to: &str) -> bool {
        Self::ip(&[
            "rule",
            op,
            "pref",
            "10",
            "from",
            from,
            "to",
            to,
            "blackhole",
        ])
    }

    fn cut(&mut self, a: u8, b: u8) {
        for (x, y) in [(a, b), (b, a)] {
            let (from, to) = (format!("127.0.{NET}.{x}"), format!("127.0.{NET}.{y}"));
            if Self::rule("add", &from, &to) {
                self.rules.push((from, to));
            }
        }
    }

    fn heal(&mut self) {
        for (from, to) in self.rules.drain(..) {
            Self::rule("del", &from, &to);
        }
    }
}

impl Drop for Partitions {
    fn drop(&mut self) {
        self.heal();
        Self::ip(&["rule", "add", "pref", "0", "lookup", "local"]);
        Self::ip(&["rule", "del", "pref", "100", "lookup", "local"]);
    }
}

fn classify<E: aws_sdk_s3::error::ProvideErrorMetadata, R: std::fmt::Debug>(
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> Outcome {
    match e.as_service_error().and_then(|s| s.code()) {
        // A 5xx may come from a node that wrote and then failed to answer; only 4xx are
        // definite (and 503 from a gate that refuses before anything is written).
        Some(c @ ("ServiceUnavailable" | "SlowDown")) => Outcome::Failed(c.to_owned()),
        Some(c) if !c.starts_with("Internal") => Outcome::Failed(c.to_owned()),
        _ => Outcome::Unknown,
    }
}

/// One client's run: random operations on its identity's bucket through random nodes.
async fn worker(
    w: usize,
    clients: Arc<Vec<Vec<Client>>>,
    deadline: Instant,
    seed: u64,
    history: Arc<Mutex<Vec<Op>>>,
    epoch0: Instant,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 * 0x9e37_79b9));
    let who = w % 2;
    let bucket = IDS[who].2;
    let mut mine: Vec<String> = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let n = rng.random_range(0..clients.len());
        let c = &clients[n][who];
        let key = format!("k{}", rng.random_range(0..KEYS));
        seq += 1;
        let value = format!("{}:{w}:{seq}", IDS[who].0);
        let epoch = epoch0.elapsed().as_millis() / 1500;
        let roll = rng.random_range(0..100);
        let (kind, bucket, key) = match roll {
            0..40 => (Kind::Put(value.clone()), bucket.to_owned(), key),
            40..50 => (
                Kind::CondPut(value.clone()),
                bucket.to_owned(),
                format!("cond-{epoch}"),
            ),
            50..62 => (Kind::Delete, bucket.to_owned(), key),
            62..72 if who == 0 && !mine.is_empty() => {
                let v = mine.swap_remove(rng.random_range(0..mine.len()));
                let (k, v) = v.split_once(' ').unwrap_or_default();
                (
                    Kind::DeleteVersion(v.to_owned()),
                    bucket.to_owned(),
                    k.to_owned(),
                )
            }
            62..72 if who == 0 => (
                Kind::Copy(format!("k{}", rng.random_range(0..KEYS))),
                bucket.to_owned(),
                key,
            ),
            72..75 => (
                Kind::CreateBucket,
                format!("race-{}", epoch / 2),
                String::new(),
            ),
            _ => (Kind::Get, bucket.to_owned(), key),
        };
        let start = Instant::now();
        let outcome = match &kind {
            Kind::Put(v) | Kind::CondPut(v) => {
                let mut r = c
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(ByteStream::from(v.clone().into_bytes()));
                if matches!(kind, Kind::CondPut(_)) {
                    r = r.if_none_match("*");
                }
                match r.send().await {
                    Ok(o) => Outcome::Ok(o.version_id().map(str::to_owned)),
                    Err(e) => classify(&e),
                }
            }
            Kind::Delete => match c.delete_object().bucket(&bucket).key(&key).send().await {
                Ok(o) => Outcome::Ok(o.version_id().map(str::to_owned)),
                Err(e) => classify(&e),
            },
            Kind::DeleteVersion(v) => match c
                .delete_object()
                .bucket(&bucket)
                .key(&key)
                .version_id(v)
                .send()
                .await
            {
                Ok(_) => Outcome::Ok(None),
                Err(e) => classify(&e),
            },
            Kind::Copy(src) => match c
                .copy_object()
                .bucket(&bucket)
                .key(&key)
                .copy_source(format!("{bucket}/{src}"))
                .send()
                .await
            {
                Ok(o) => Outcome::Ok(o.version_id().map(str::to_owned)),
                Err(e) => classify(&e),
            },
            Kind::CreateBucket => match c.create_bucket().bucket(&bucket).send().await {
                Ok(_) => Outcome::Ok(None),
                Err(e) => classify(&e),
            },
            Kind::Get => match c.get_object().bucket(&bucket).key(&key).send().await {
                Ok(o) => match o.body.collect().await {
                    Ok(b) => Outcome::Ok(Some(String::from_utf8_lossy(&b.into_bytes()).into())),
                    Err(_) => Outcome::Unknown,
                },
                Err(e) => classify(&e),
            },
        };
        // Conditional puts' versions are never deleted: a key created by `If-None-Match: *`
        // stays, so a second winner for it is an anomaly, not a re-creation.
        if who == 0
            && let (Kind::Put(_) | Kind::Copy(_), Outcome::Ok(Some(v))) = (&kind, &outcome)
        {
            mine.push(format!("{key} {v}"));
        }
        let op = Op {
            who,
            node: n,
            kind,
            bucket,
            key,
            start,
            end: Instant::now(),
            outcome,
        };
        history.lock().unwrap().push(op);
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
}

/// Every version of a bucket as one node lists it, owner's view: (key, version, marker, latest).
async fn listing(c: &Client, bucket: &str) -> Option<Listing> {
    let mut out = Vec::new();
    let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
    loop {
        let r = c
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(km.clone())
            .set_version_id_marker(vm.clone())
            .send()
            .await
            .ok()?;
        for v in r.versions() {
            out.push((
                v.key()?.to_owned(),
                v.version_id()?.to_owned(),
                false,
                v.is_latest()?,
            ));
        }
        for m in r.delete_markers() {
            out.push((
                m.key()?.to_owned(),
                m.version_id()?.to_owned(),
                true,
                m.is_latest()?,
            ));
        }
        if r.is_truncated() != Some(true) {
            break;
        }
        km = r.next_key_marker().map(str::to_owned);
        vm = r.next_version_id_marker().map(str::to_owned);
    }
    out.sort();
    Some(out)
}

type Listing = Vec<(String, String, bool, bool)>;

/// What one bucket's listings on every node have that node 0's lacks, and the reverse.
fn listing_diff(per_node: &[Option<Listing>]) -> String {
    let mut out = format!(
        "counts {:?}",
        per_node
            .iter()
            .map(|l| l.as_ref().map(Vec::len))
            .collect::<Vec<_>>()
    );
    let Some(Some(first)) = per_node.first() else {
        return out;
    };
    for (i, l) in per_node.iter().enumerate().skip(1) {
        let Some(l) = l else { continue };
        let only_first: Vec<_> = first.iter().filter(|e| !l.contains(e)).take(5).collect();
        let only_here: Vec<_> = l.iter().filter(|e| !first.contains(e)).take(5).collect();
        if !only_first.is_empty() || !only_here.is_empty() {
            out += &format!(
                "\n  node 0 only vs node {i}: {only_first:?}\n  node {i} only: {only_here:?}"
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kills_freezes_and_partitions_and_no_identity_reads_another() {
    // A short fixed-seed run by default (CI); `CHAOS_SECS=300` for a long one.
    let secs: u64 = std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s3swarm.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[keys]]\naccess_key = \"{}\"\nsecret_key = \"{}\"\n\n[[keys]]\naccess_key = \"{}\"\nsecret_key = \"{}\"\n",
            IDS[0].0, IDS[0].1, IDS[1].0, IDS[1].1
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let secret = SecretFile::new(SECRET);
    let mut nodes: Vec<Node> = (1..=NODES)
        .map(|i| {
            let peers: Vec<u8> = (1..i).collect();
            // Pruning every second: superseded entries go while nodes are killed and cut off.
            Node::start_swarm(
                NET,
                i,
                &secret,
                &peers,
                &["--config", &cfg, "--journal-prune-secs", "1"],
            )
        })
        .collect();
    // Partitions and kills make the gates answer 503 on purpose; the history checker judges
    // every answer instead.
    for n in &nodes {
        n.expect_server_errors();
    }
    let timeout = Duration::from_secs(4);
    let clients: Arc<Vec<Vec<Client>>> = Arc::new(
        nodes
            .iter()
            .map(|n| {
                IDS.iter()
                    .map(|(a, s, _)| n.client_once(a, s, timeout))
                    .collect()
            })
            .collect(),
    );
    // Setup through node 1, once every node is ready.
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while n
            .http()
            .get(format!("{}/readyz", n.endpoint))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
            != 200
        {
            assert!(Instant::now() < deadline, "node {} never ready", n.host);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (who, (a, s, bucket)) in IDS.iter().enumerate() {
        let c = nodes[0].client_as(a, s);
        c.create_bucket().bucket(*bucket).send().await.unwrap();
        if who == 0 {
            set_versioning(&c, bucket, BucketVersioningStatus::Enabled).await;
        }
    }
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (a, s, bucket) in IDS {
            let c = n.client_as(a, s);
            while c.head_bucket().bucket(bucket).send().await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{bucket} never reached {}",
                    n.host
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let history = Arc::new(Mutex::new(Vec::new()));
    let epoch0 = Instant::now();
    let deadline = epoch0 + Duration::from_secs(secs);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(worker(
                w,
                clients.clone(),
                deadline,
                seed,
                history.clone(),
                epoch0,
            ))
        })
        .collect();

    // Faults, one at a time, until the clients stop.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = Partitions::new();
    if net.is_none() {
        eprintln!("chaos: cannot change routing rules (not root): no partitions this run");
    }
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    // What happened when (ms since the clients started), to read an anomaly against.
    let mut timeline: Vec<String> = Vec::new();
    while Instant::now() + Duration::from_secs(4) < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        let victim = rng.random_range(0..nodes.len());
        let hold = Duration::from_millis(rng.random_range(1000..4000));
        let fault = rng.random_range(0..3);
        timeline.push(format!(
            "{} ms: fault {fault} on node {victim} for {} ms",
            epoch0.elapsed().as_millis(),
            hold.as_millis()
        ));
        match fault {
            0 => {
                *faults.entry("kill -9 and restart").or_default() += 1;
                nodes[victim].kill9();
                tokio::time::sleep(hold).await;
                nodes[victim].restart();
            }
            1 => {
                *faults.entry("SIGSTOP, SIGCONT").or_default() += 1;
                nodes[victim].pause();
                tokio::time::sleep(hold).await;
                nodes[victim].resume();
            }
            _ => match net.as_mut() {
                Some(p) => {
                    *faults.entry("partition").or_default() += 1;
                    let id = victim as u8 + 1;
                    if rng.random_bool(0.5) {
                        for other in 1..=NODES {
                            if other != id {
                                p.cut(id, other);
                            }
                        }
                    } else {
                        // Two against two.
                        let (a, b) = ([1u8, 2], [3u8, 4]);
                        for x in a {
                            for y in b {
                                p.cut(x, y);
                            }
                        }
                    }
                    tokio::time::sleep(hold * 2).await;
                    p.heal();
                }
                None => tokio::time::sleep(hold).await,
            },
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    drop(net);
    for n in &nodes {
        n.resume();
    }

    // Converge: every node lists the same versions of both buckets.
    let owners: Vec<Vec<Client>> = nodes
        .iter()
        .map(|n| IDS.iter().map(|(a, s, _)| n.client_as(a, s)).collect())
        .collect();
    let converge_by = Instant::now() + Duration::from_secs(60);
    let finals: Vec<Listing> = loop {
        let mut views = Vec::new();
        for who in 0..IDS.len() {
            let mut per_node = Vec::new();
            for c in &owners {
                per_node.push(listing(&c[who], IDS[who].2).await);
            }
            views.push(per_node);
        }
        let agree = views
            .iter()
            .all(|v| v.iter().all(|l| l.is_some() && *l == v[0]));
        if agree {
            break views.into_iter().map(|v| v[0].clone().unwrap()).collect();
        }
        assert!(
            Instant::now() < converge_by,
            "listings still differ 60 s after healing:\n{}",
            views
                .iter()
                .map(|v| listing_diff(v))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let history = history.lock().unwrap().clone();
    let mut bad = Anomalies::default();

    // Reads: an identity only ever sees its own writes.
    for op in &history {
        if let (Kind::Get, Outcome::Ok(Some(v))) = (&op.kind, &op.outcome)
            && !v.starts_with(&format!("{}:", IDS[op.who].0))
        {
            bad.add(format!(
                "{} read {v:?} in {}/{}",
                IDS[op.who].0, op.bucket, op.key
            ));
        }
    }

    // The versioned bucket: acknowledged versions stay unless a delete of them was sent;
    // nothing is listed that no write made.
    let listed: BTreeSet<(String, String)> = finals[0]
        .iter()
        .map(|(k, v, _, _)| (k.clone(), v.clone()))
        .collect();
    let deletes_sent: BTreeSet<(String, String)> = history
        .iter()
        .filter(|o| o.who == 0 && !matches!(o.outcome, Outcome::Failed(_)))
        .filter_map(|o| match &o.kind {
            Kind::DeleteVersion(v) => Some((o.key.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let mut made = 0;
    for op in history.iter().filter(|o| o.who == 0) {
        let writes = matches!(
            op.kind,
            Kind::Put(_) | Kind::CondPut(_) | Kind::Copy(_) | Kind::Delete
        );
        if let (true, Outcome::Ok(Some(v))) = (writes, &op.outcome) {
            made += 1;
            let id = (op.key.clone(), v.clone());
            if !listed.contains(&id) && !deletes_sent.contains(&id) {
                bad.add(format!(
                    "acknowledged version {v} of alice-ver/{} is gone ({:?} through node {}, {}-{} ms)",
                    op.key,
                    op.kind,
                    op.node,
                    op.start.duration_since(epoch0).as_millis(),
                    op.end.duration_since(epoch0).as_millis(),
                ));
            }
        }
    }
    let unknown_writes = history
        .iter()
        .filter(|o| o.who == 0 && o.outcome == Outcome::Unknown)
        .count();
    let phantoms = listed.len().saturating_sub(made + unknown_writes);
    if phantoms > 0 {
        bad.add(format!(
            "{} versions listed in alice-ver but only {made} acknowledged and {unknown_writes} unanswered writes",
            listed.len()
        ));
    }

    // The unversioned bucket, key by key: what it holds (through node 1) must be the effect
    // of a write that no acknowledged write followed in real time.
    let bob = &owners[0][1];
    let keys: BTreeSet<String> = history
        .iter()
        .filter(|o| o.who == 1 && o.bucket == IDS[1].2)
        .map(|o| o.key.clone())
        .collect();
    for key in keys {
        let now = match bob.get_object().bucket(IDS[1].2).key(&key).send().await {
            Ok(o) => Some(
                String::from_utf8_lossy(&o.body.collect().await.unwrap().into_bytes()).into_owned(),
            ),
            Err(e) if code(&e) == "NoSuchKey" => None,
            Err(e) => panic!("GET bob-lww/{key}: {e:?}"),
        };
        let writes: Vec<&Op> = history
            .iter()
            .filter(|o| o.who == 1 && o.key == key && o.bucket == IDS[1].2)
            .filter(|o| matches!(o.kind, Kind::Put(_) | Kind::CondPut(_) | Kind::Delete))
            .filter(|o| !matches!(o.outcome, Outcome::Failed(_)))
            .collect();
        let acked: Vec<&&Op> = writes
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .collect();
        let candidates: Vec<Option<String>> = writes
            .iter()
            // Stamps are milliseconds: writes less than 2 ms apart count as concurrent.
            .filter(|w| {
                !acked
                    .iter()
                    .any(|a| w.end + Duration::from_millis(2) < a.start)
            })
            .map(|w| match &w.kind {
                Kind::Put(v) | Kind::CondPut(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        // With no write acknowledged, none may have happened.
        let fine = if acked.is_empty() && now.is_none() {
            true
        } else {
            candidates.contains(&now)
        };
        if !fine {
            bad.add(format!(
                "bob-lww/{key} holds {now:?}; the writes it could hold: {candidates:?}"
            ));
        }
    }

    // After healing, neither identity can read or list the other's bucket on any node.
    for (n, c) in owners.iter().enumerate() {
        for who in 0..IDS.len() {
            let other = 1 - who;
            let e = c[who]
                .list_objects_v2()
                .bucket(IDS[other].2)
                .send()
                .await
                .err()
                .map(|e| code(&e));
            if e.as_deref() != Some("AccessDenied") {
                bad.add(format!(
                    "{} lists {} on node {n}: {e:?}",
                    IDS[who].0, IDS[other].2
                ));
            }
        }
    }

    // Linearizable decisions: of racing `If-None-Match: *` writers of one key one wins, and
    // a bucket name is created by one identity.
    let mut cond: BTreeMap<(usize, String), usize> = BTreeMap::new();
    let mut races: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for op in &history {
        match (&op.kind, &op.outcome) {
            (Kind::CondPut(_), Outcome::Ok(_)) => {
                *cond.entry((op.who, op.key.clone())).or_default() += 1
            }
            (Kind::CondPut(_), _) => {
                cond.entry((op.who, op.key.clone())).or_default();
            }
            (Kind::CreateBucket, Outcome::Ok(_)) => {
                races.entry(op.bucket.clone()).or_default().insert(op.who);
            }
            _ => {}
        }
    }
    let double_cond = cond.values().filter(|n| **n > 1).count();
    let double_create = races.values().filter(|w| w.len() > 1).count();
    for ((who, key), n) in &cond {
        if *n > 1 {
            bad.add(format!(
                "{n} conditional creates of {}/{key} acknowledged",
                IDS[*who].2
            ));
        }
    }
    for (name, who) in &races {
        if who.len() > 1 {
            bad.add(format!("bucket {name} created by both identities"));
        }
    }
    let count = |f: &dyn Fn(&Op) -> bool| history.iter().filter(|o| f(o)).count();
    eprintln!(
        "chaos: seed {seed}, {secs} s, {} operations ({} acknowledged, {} refused, {} unanswered), \
         faults {faults:?}, anomalies {}; {double_cond} of {} conditional-put keys with more than one winner, \
         {double_create} of {} raced bucket names created by both identities",
        history.len(),
        count(&|o| matches!(o.outcome, Outcome::Ok(_))),
        count(&|o| matches!(o.outcome, Outcome::Failed(_))),
        count(&|o| o.outcome == Outcome::Unknown),
        bad.0.len(),
        cond.len(),
        races.len(),
    );
    if !bad.0.is_empty() {
        eprintln!("chaos: timeline\n{}", timeline.join("\n"));
    }
    assert!(
        bad.0.is_empty(),
        "{} anomalies, first: {:?}",
        bad.0.len(),
        bad.0.first()
    );
    assert!(history.len() > 100, "too few operations to mean anything");
    assert!(
        faults.values().sum::<u32>() >= 3,
        "too few faults: {faults:?}"
    );
}
