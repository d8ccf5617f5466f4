//! The `s3swarm` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "s3swarm",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("S3SWARM_GIT_COMMIT"), ")"),
    about = "S3-compatible gateway on a content-addressed store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: S3 API, /metrics and /healthz on one port.
    Serve(Box<ServeArgs>),
    /// Inspect a swarm (signed with S3SWARM_ACCESS_KEY / S3SWARM_SECRET_KEY).
    Cluster(ClusterArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (fields: listen, data_dir, region, max_object_size, gc_grace_secs,
    /// log_level, log_format, tls_cert, tls_key, domain, post_max_size, swarm_listen,
    /// swarm_advertise, peers, cluster_secret_file, replicas, capacity, bootstrap_expect,
    /// swarm_max_connections, max_connections, header_timeout_secs, send_timeout_secs, body_timeout_secs,
    /// disk_reserve_bytes, multipart_expiry_secs, journal_prune_secs, scrub_rate, scrub_every_secs,
    /// origin_endpoint, origin_region, origin_path_style, origin_write, origin_revalidate_secs,
    /// origin_piece_size, origin_max_connections, origin_max_rate, [[keys]] tables with access_key and
    /// secret_key, and [[origins]] tables with bucket, upstream, endpoint, region, path_style,
    /// access_key, secret_key, owner and write). Flags and environment variables override it.
    #[arg(long, env = "S3SWARM_CONFIG")]
    config: Option<PathBuf>,
    /// Address for S3, /metrics and /healthz [default: 127.0.0.1:9000].
    #[arg(long, env = "S3SWARM_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for objects and metadata [default: ./s3swarm-data].
    #[arg(long, env = "S3SWARM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Region reported to clients [default: us-east-1]; requests signed for any region are accepted.
    #[arg(long, env = "S3SWARM_REGION")]
    region: Option<String>,
    /// Access key of an identity (with S3SWARM_SECRET_KEY). Without any configured key, one is
    /// generated at first start and kept in the data directory.
    #[arg(long, env = "S3SWARM_ACCESS_KEY", hide_env_values = true)]
    access_key: Option<String>,
    /// Secret key for --access-key.
    #[arg(long, env = "S3SWARM_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Largest single PUT or part, in bytes [default: 5 GiB].
    #[arg(long, env = "S3SWARM_MAX_OBJECT_SIZE")]
    max_object_size: Option<u64>,
    /// Seconds an unreferenced chunk is kept before it is collected, so reads that began
    /// before an overwrite or delete finish [default: 300].
    #[arg(long, env = "S3SWARM_GC_GRACE_SECS")]
    gc_grace_secs: Option<u64>,
    /// Log filter, e.g. `info` or `gateway=debug,info` [default: info,s3s=off].
    #[arg(long, env = "S3SWARM_LOG")]
    log_level: Option<String>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "S3SWARM_LOG_FORMAT")]
    log_format: Option<String>,
    /// PEM certificate (chain) file: with --tls-key, serve HTTPS instead of HTTP.
    #[arg(long, env = "S3SWARM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key file for --tls-cert.
    #[arg(long, env = "S3SWARM_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Base domain for virtual-hosted-style requests: `bucket.<domain>` addresses `bucket`
    /// (path style keeps working) [default: none, path style only].
    #[arg(long, env = "S3SWARM_DOMAIN")]
    domain: Option<String>,
    /// Largest file a browser-form POST upload may carry, in bytes; the file is held in
    /// memory while its policy is checked [default: 64 MiB].
    #[arg(long, env = "S3SWARM_POST_MAX_SIZE")]
    post_max_size: Option<u64>,
    /// Open S3 connections at most; past it new ones wait in the kernel's backlog
    /// [default: 10000].
    #[arg(long, env = "S3SWARM_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a connection has to send a whole request head once ready for one; idle
    /// keep-alive connections are closed after the same time [default: 30].
    #[arg(long, env = "S3SWARM_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds a response may wait for a client that reads nothing before the connection is
    /// closed [default: 60].
    #[arg(long, env = "S3SWARM_SEND_TIMEOUT_SECS")]
    send_timeout_secs: Option<u64>,
    /// Seconds a request body may deliver nothing before the request fails with 400
    /// RequestTimeout [default: 30].
    #[arg(long, env = "S3SWARM_BODY_TIMEOUT_SECS")]
    body_timeout_secs: Option<u64>,
    /// Free bytes uploads leave on the data directory's file system, so deletes (which need
    /// metadata writes) work on a full node [default: 1% of it, at least 64 MiB, at most 4 GiB].
    #[arg(long, env = "S3SWARM_DISK_RESERVE_BYTES")]
    disk_reserve_bytes: Option<u64>,
    /// Seconds after which an incomplete multipart upload is aborted and its parts freed
    /// [default: 604800, 7 days].
    #[arg(long, env = "S3SWARM_MULTIPART_EXPIRY_SECS")]
    multipart_expiry_secs: Option<u64>,
    /// Seconds between passes that drop namespace journal entries superseded by newer ones
    /// (peers are told which went), keeping the journal the size of the namespace
    /// [default: 300].
    #[arg(long, env = "S3SWARM_JOURNAL_PRUNE_SECS")]
    journal_prune_secs: Option<u64>,
    /// Bytes per second the scrub re-reads and re-hashes stored chunks at, replacing damaged
    /// copies from peers; 0 turns it off (reads still verify what they serve)
    /// [default: 33554432, 32 MiB/s].
    #[arg(long, env = "S3SWARM_SCRUB_RATE")]
    scrub_rate: Option<u64>,
    /// Seconds from the start of one scrub pass to the start of the next [default: 604800,
    /// 7 days].
    #[arg(long, env = "S3SWARM_SCRUB_EVERY_SECS")]
    scrub_every_secs: Option<u64>,
    /// Join a swarm: the UDP address this node's QUIC endpoint binds, e.g. 10.0.0.5:7400
    /// [default: none, a stand-alone node].
    #[arg(long, env = "S3SWARM_SWARM_LISTEN")]
    swarm_listen: Option<SocketAddr>,
    /// The swarm address peers dial, when --swarm-listen binds all interfaces (0.0.0.0:7400),
    /// e.g. the pod IP [default: the --swarm-listen address].
    #[arg(long, env = "S3SWARM_SWARM_ADVERTISE")]
    swarm_advertise: Option<SocketAddr>,
    /// A swarm member to join through, IP:PORT or DNS-NAME:PORT (repeat, or comma-separate);
    /// any one is enough. Names are resolved again on every join attempt, so a headless
    /// Service name that resolves to all members works.
    #[arg(long = "peer", env = "S3SWARM_PEERS", value_delimiter = ',')]
    peers: Vec<swarm::PeerAddr>,
    /// File holding the cluster secret (at least 16 bytes) every member shares; required
    /// with --swarm-listen.
    #[arg(long, env = "S3SWARM_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Copies of each chunk kept on distinct storage nodes [default: 2].
    #[arg(long, env = "S3SWARM_REPLICAS")]
    replicas: Option<usize>,
    /// Make this a cache-only node keeping at most this many bytes of chunks (evicting the
    /// oldest cached ones); it holds no placed copies [default: none, a storage node].
    #[arg(long, env = "S3SWARM_CAPACITY")]
    capacity: Option<u64>,
    /// Found the swarm's registry (which decides bucket names and conditional writes) once
    /// this many storage members are live, all of them voting: for swarms whose every node is
    /// given the same --peer, as in a Kubernetes DaemonSet. Unset, a node started without
    /// --peer founds it alone and the others join it.
    #[arg(long, env = "S3SWARM_BOOTSTRAP_EXPECT")]
    bootstrap_expect: Option<usize>,
    /// Peers' swarm connections accepted at most, once they proved the cluster secret (at
    /// most 64 more may be proving it at once); past it a peer is refused as busy and the
    /// refusal counted in s3swarm_swarm_connections_refused_total [default: 1024].
    #[arg(long, env = "S3SWARM_SWARM_MAX_CONNECTIONS")]
    swarm_max_connections: Option<usize>,
    /// Front an upstream S3 bucket: LOCAL_BUCKET=s3://UPSTREAM_BUCKET[/PREFIX] (repeat, or
    /// comma-separate). The local bucket answers GET, HEAD and LIST as the upstream would,
    /// reading each piece of an object from it once. Credentials: S3SWARM_ORIGIN_ACCESS_KEY and
    /// S3SWARM_ORIGIN_SECRET_KEY, else the AWS chain (environment, profile, web identity,
    /// instance metadata); per-origin settings in [[origins]] tables of the config file.
    /// Or a plain HTTP(S) server: LOCAL_BUCKET=https://HOST/PATH/ (read by key, read-only).
    #[arg(long = "origin", env = "S3SWARM_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
    /// The origins' S3 endpoint URL, e.g. http://minio:9000 [default: AWS's, by region].
    #[arg(long, env = "S3SWARM_ORIGIN_ENDPOINT")]
    origin_endpoint: Option<String>,
    /// The origins' region [default: us-east-1].
    #[arg(long, env = "S3SWARM_ORIGIN_REGION")]
    origin_region: Option<String>,
    /// Path-style origin requests (true) or virtual-hosted (false) [default: true with
    /// --origin-endpoint, false for AWS].
    #[arg(long, env = "S3SWARM_ORIGIN_PATH_STYLE")]
    origin_path_style: Option<bool>,
    /// What writes to an origin bucket do: `through` (passed to the origin, acknowledged
    /// when it acknowledged), `back` (acknowledged once kept in the swarm, uploaded to the
    /// origin in the background, resumed after a restart) or `none` (read-only, 403)
    /// [default: through].
    #[arg(long, env = "S3SWARM_ORIGIN_WRITE")]
    origin_write: Option<String>,
    /// Seconds an origin object's metadata is trusted before it is asked again; a new ETag
    /// means new content [default: 60].
    #[arg(long, env = "S3SWARM_ORIGIN_REVALIDATE_SECS")]
    origin_revalidate_secs: Option<u64>,
    /// Bytes per piece read from an origin with one ranged GET [default: 8388608, 8 MiB].
    #[arg(long, env = "S3SWARM_ORIGIN_PIECE_SIZE")]
    origin_piece_size: Option<u64>,
    /// Requests to origins this node has open at once [default: 32].
    #[arg(long, env = "S3SWARM_ORIGIN_MAX_CONNECTIONS")]
    origin_max_connections: Option<usize>,
    /// Bytes per second this node reads from its origins at most, all together; 0: no cap
    /// [default: 0].
    #[arg(long, env = "S3SWARM_ORIGIN_MAX_RATE")]
    origin_max_rate: Option<u64>,
    /// Answer the Hugging Face Hub's download API (HF_ENDPOINT=http://this-node:9000) from
    /// this bucket, laid out models/ORG/NAME/REVISION/PATH and datasets/ORG/NAME/REVISION/PATH.
    /// Unsigned requests may read the bucket through it: set --hf-token to require a token.
    #[arg(long, env = "S3SWARM_HF_BUCKET")]
    hf_bucket: Option<String>,
    /// The bearer token the Hub façade requires (the client's HF_TOKEN).
    #[arg(long, env = "S3SWARM_HF_TOKEN", hide_env_values = true)]
    hf_token: Option<String>,
    /// Test-only fault: corrupt every chunk this node serves to peers.
    #[arg(long, hide = true)]
    fault_corrupt_chunks: bool,
}

#[derive(clap::Args)]
struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

/// Which node an admin command talks to, and how it prints the answer.
#[derive(clap::Args)]
struct AdminTarget {
    /// The node's S3 endpoint.
    #[arg(
        long,
        env = "S3SWARM_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    endpoint: String,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, their state and what they hold, as the node at --endpoint sees them.
    Status(AdminTarget),
    /// Has the node at --endpoint fetch every chunk of an object it lacks from its peers
    /// (verified and stored, not served), and prints how long that took. For a bucket that
    /// fronts an origin, `s3://BUCKET/PREFIX` warms every object under the prefix into the
    /// swarm (each piece read from the origin once), with progress.
    Prefetch {
        /// The object's bucket, or s3://BUCKET/PREFIX of an origin bucket.
        bucket: String,
        /// The object's key (not with s3://).
        key: Option<String>,
        /// With s3://: onto every live member, not only into the swarm once.
        #[arg(long, conflicts_with = "copies")]
        all_nodes: bool,
        /// With s3://: keep each piece on N members (its first N by rendezvous rank, so the
        /// copies spread over the swarm) [default: 1, its owner].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
        copies: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

fn init_logging(config: &Config) {
    // openraft logs each failed heartbeat to an absent registry member at WARN and ERROR,
    // several a second while a node is down; the registry's own logs and its metrics say what
    // an operator needs. A filter that names openraft keeps what it asks for.
    let level = if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!("{},openraft=off", config.log_level)
    };
    // Validated with the rest of the configuration; the fallback is never reached.
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        // One flat object per line (fields beside `message`), as log shippers expect.
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// glibc gives every thread that allocates its own arena and grows the mmap threshold after
/// large frees, so multi-MiB chunk buffers freed on blocking threads were kept as heap: ten
/// concurrent 8 MiB part uploads peaked at 210 MiB RSS. Two arenas and a fixed 1 MiB mmap
/// threshold (large buffers go straight back to the kernel) keep the peak under 100 MiB.
///
/// A fixed mmap threshold also pins the trim threshold at glibc's 128 KiB, so every few
/// frees handed the top of a heap back to the kernel and the next allocations faulted
/// fresh, zeroed pages in again; on a VM that reports free pages to its host (this test
/// machine does) each of those faults also goes to the host. Keeping up to
/// `TRIM_THRESHOLD` free per arena stops the churn without raising the peak, which is set
/// by what is live at once: 16 readers of 256 MiB on 50 Mbit/s links took 71.8-74.4 s
/// (5 runs, with 64 MiB or 1 GiB kept) against 74.7-88.1 s (3 runs) with the default.
fn tune_allocator() {
    const TRIM_THRESHOLD: i32 = 64 << 20;
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            let over = Overrides {
                listen: a.listen,
                data_dir: a.data_dir,
                region: a.region,
                access_key: a.access_key,
                secret_key: a.secret_key,
                max_object_size: a.max_object_size,
                gc_grace_secs: a.gc_grace_secs,
                log_level: a.log_level,
                log_format: a.log_format,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                domain: a.domain,
                post_max_size: a.post_max_size,
                max_connections: a.max_connections,
                header_timeout_secs: a.header_timeout_secs,
                send_timeout_secs: a.send_timeout_secs,
                body_timeout_secs: a.body_timeout_secs,
                disk_reserve_bytes: a.disk_reserve_bytes,
                multipart_expiry_secs: a.multipart_expiry_secs,
                journal_prune_secs: a.journal_prune_secs,
                scrub_rate: a.scrub_rate,
                scrub_every_secs: a.scrub_every_secs,
                swarm_listen: a.swarm_listen,
                swarm_advertise: a.swarm_advertise,
                peers: a.peers,
                cluster_secret_file: a.cluster_secret_file,
                replicas: a.replicas,
                capacity: a.capacity,
                bootstrap_expect: a.bootstrap_expect,
                swarm_max_connections: a.swarm_max_connections,
                fault_corrupt_chunks: a.fault_corrupt_chunks,
                origins: a.origins,
                origin_endpoint: a.origin_endpoint,
                origin_region: a.origin_region,
                origin_path_style: a.origin_path_style,
                origin_write: a.origin_write,
                origin_revalidate_secs: a.origin_revalidate_secs,
                origin_piece_size: a.origin_piece_size,
                origin_max_connections: a.origin_max_connections,
                origin_max_rate: a.origin_max_rate,
                hf_bucket: a.hf_bucket,
                hf_token: a.hf_token,
            };
            let config = match Config::load(a.config.as_deref(), over) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("s3swarm: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config);
            run(true, gateway::serve(config, shutdown_signal()))
        }
        Command::Cluster(ClusterArgs {
            command: ClusterCommand::Status(t),
        }) => run(false, gateway::admin::print_status(&t.endpoint, t.json)),
        Command::Cluster(ClusterArgs {
            command:
                ClusterCommand::Prefetch {
                    bucket,
                    key,
                    all_nodes,
                    copies,
                    target: t,
                },
        }) => match (bucket.strip_prefix("s3://"), key) {
            (Some(path), None) => {
                let (b, prefix) = path.split_once('/').unwrap_or((path, ""));
                run(
                    false,
                    gateway::admin::warm_origin(
                        &t.endpoint,
                        b,
                        prefix,
                        all_nodes,
                        copies.map(|n| n as usize),
                        t.json,
                    ),
                )
            }
            (None, Some(key)) => run(
                false,
                gateway::admin::prefetch_object(&t.endpoint, &bucket, &key, t.json),
            ),
            _ => {
                eprintln!(
                    "s3swarm: prefetch takes BUCKET KEY, or s3://BUCKET/PREFIX of a bucket that fronts an origin"
                );
                ExitCode::from(2)
            }
        },
    }
}

/// Runs `work` on a tokio runtime (multi-threaded for the server) and turns its error into
/// a message and a failing exit code.
fn run<E: std::fmt::Display>(
    multi_thread: bool,
    work: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3swarm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3swarm: {e}");
            ExitCode::FAILURE
        }
    }
}
