//! The HTTP server: axum routes for probes and metrics, s3s as the fallback for everything else.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use http::{HeaderValue, StatusCode};
use s3s::service::{S3Service, S3ServiceBuilder};
use store::Store;
use tower::ServiceExt;

use crate::config::Config;
use crate::credentials::{GENERATED_FILE, KeyOrigin, KeyStore};
use crate::metrics::{Metrics, OperationName};
use crate::s3::blob::{BlobRoute, Names};
use crate::s3::{BucketOwnership, DomainHost, Gateway, cors, post, signature};
use crate::tls::{TlsError, TlsListener};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: String,
        source: store::StoreError,
    },
    #[error("cannot load credentials: {0}")]
    Credentials(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Origin(String),
    #[error("swarm: {0}")]
    Swarm(#[from] swarm::SwarmError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    store: Arc<Store>,
    swarm: Option<swarm::Swarm>,
    metrics: Arc<Metrics>,
    s3: S3Service,
    /// Base domain of virtual-hosted-style requests, to find the bucket of a CORS request.
    domain: Option<Arc<str>>,
    /// Form uploads are buffered whole before their policy can be checked (by s3s): this
    /// caps the bytes all of them may hold at once, in KiB, whoever sends them.
    post_budget: Arc<tokio::sync::Semaphore>,
    post_max_size: u64,
    /// For what the signature screen checks before s3s (SigV2 verification, region names).
    keys: KeyStore,
    region: Arc<str>,
    host: Option<Arc<DomainHost>>,
    /// The Hugging Face Hub façade, when `--hf-bucket` is set.
    hf: Option<Arc<crate::hf::Facade>>,
}

/// Bytes of form fields a POST may carry beyond its file.
const POST_FIELDS_SLACK: u64 = 1024 * 1024;

impl AppState {
    /// A node's HTTP state around its gateway: the s3s service (with the node's identities,
    /// bucket access, the blob route and name validation) and what is checked before it.
    fn new(
        gateway: Gateway,
        keys: KeyStore,
        region: &str,
        domain: Option<&str>,
        post_max_size: u64,
        hf: Option<Arc<crate::hf::Facade>>,
    ) -> Self {
        let (store, swarm, metrics, origins) = (
            gateway.store.clone(),
            gateway.swarm.clone(),
            gateway.metrics.clone(),
            gateway.origins.clone(),
        );
        let mut builder = S3ServiceBuilder::new(gateway);
        builder.set_auth(keys.clone());
        builder.set_access(BucketOwnership {
            store: store.clone(),
            origins: origins.clone(),
        });
        builder.set_route(BlobRoute {
            store: store.clone(),
            swarm: swarm.clone(),
            metrics: metrics.clone(),
            origins,
        });
        builder.set_validation(Names);
        if let Some(domain) = domain {
            builder.set_host(DomainHost::new(domain));
        }
        // s3s holds a POST upload's file in memory until the policy is checked; its default
        // ceiling is 5 GB.
        let mut s3_config = s3s::config::S3Config::default();
        s3_config.post_object_max_file_size = post_max_size;
        // XML bodies are read whole: the largest S3 sends are DeleteObjects (1,000 keys of up
        // to 1 KiB, escaped) and CompleteMultipartUpload (10,000 parts); configuration
        // documents are capped at 64 KiB before this (see `s3::limits`).
        s3_config.xml_max_body_size = 8 << 20;
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            s3_config,
        ))));
        Self {
            store,
            swarm,
            metrics,
            s3: builder.build(),
            domain: domain.map(Arc::from),
            post_budget: Arc::new(tokio::sync::Semaphore::new(post_budget_kib(post_max_size))),
            post_max_size,
            keys,
            region: Arc::from(region),
            hf,
            host: domain.map(|d| Arc::new(DomainHost::new(d))),
        }
    }
}

/// The routes of a node: probes, metrics, and S3 for everything else.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .fallback(s3_handler)
        .layer(middleware::from_fn_with_state(state.clone(), cors_layer))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::requests::observe,
        ))
        .with_state(state)
}

/// A node's routes around `gateway`, for the fuzz targets: what a request meets on a node
/// with these identities and the default limits, without a socket.
#[cfg(fuzzing)]
pub(crate) fn fuzzing_router(gateway: Gateway, keys: KeyStore) -> Router {
    let region = gateway.region.clone();
    router(AppState::new(
        gateway,
        keys,
        &region,
        None,
        crate::config::Config::default().post_max_size,
        None,
    ))
}

/// Runs a node until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // A bad certificate should stop the node before it opens the store or prints anything.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(ServeError::Credentials)?;
    // Read the secret before anything starts: a missing or short one is a startup error.
    let secret = match &config.cluster_secret_file {
        Some(path) if config.swarm_listen.is_some() => Some(swarm::ClusterSecret::from_file(path)?),
        _ => None,
    };
    let dir = config.data_dir.clone();
    let clock = swarm::SharedClock::default();
    let metrics = Metrics::new();
    let options = store::StoreOptions {
        gc_grace: std::time::Duration::from_secs(config.gc_grace_secs),
        clock: Some(clock.for_store()),
        on_pack_sealed: Some(metrics.pack_sealed_observer()),
    };
    let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, options))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
        .map_err(|source| ServeError::Store {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
    let (keys, origin) =
        KeyStore::load(&config.keys, &config.data_dir).map_err(ServeError::Credentials)?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let swarm = match (config.swarm_listen, secret) {
        (Some(listen), Some(secret)) => Some(
            swarm::Swarm::start(
                swarm::SwarmConfig {
                    listen,
                    advertise: config.swarm_advertise,
                    http: Some(http_address(addr, config.swarm_advertise)),
                    peers: config.peers.clone(),
                    secret,
                    replicas: config.replicas,
                    capacity: config.capacity,
                    fault_corrupt: config.fault_corrupt_chunks,
                    registry_dir: config.data_dir.join("registry"),
                    bootstrap_expect: config.bootstrap_expect,
                    max_connections: config.swarm_max_connections,
                    hooks: metrics.swarm_hooks(),
                },
                store.clone(),
                clock,
            )
            .await?,
        ),
        _ => None,
    };
    if let Some(sw) = &swarm {
        metrics.swarm_started(sw);
    }
    tokio::spawn(crate::metrics::census::run(store.clone(), metrics.clone()));
    let reserve = match config.disk_reserve_bytes {
        Some(b) => b,
        None => store
            .disk_space()
            .map(|d| crate::disk::default_reserve(d.size_bytes))
            .unwrap_or(64 << 20),
    };
    crate::disk::set_reserve(reserve);
    tokio::spawn(crate::disk::watch(store.clone()));
    tokio::spawn(crate::scrub::run(
        store.clone(),
        swarm.clone(),
        config.data_dir.clone(),
        crate::scrub::ScrubConfig {
            rate: config.scrub_rate,
            every: std::time::Duration::from_secs(config.scrub_every_secs),
        },
    ));
    tokio::spawn(crate::pruning::run(
        store.clone(),
        std::time::Duration::from_secs(config.journal_prune_secs),
    ));
    tokio::spawn(crate::s3::expire_incomplete_uploads(
        store.clone(),
        std::time::Duration::from_secs(config.multipart_expiry_secs),
    ));

    // An origin bucket's owner, unless its table names one: the first configured identity,
    // or the generated one.
    let default_owner = match (config.keys.first(), &origin) {
        (Some(k), _) => k.access_key.clone(),
        (None, KeyOrigin::Generated(k) | KeyOrigin::LoadedGenerated(k)) => k.access_key.clone(),
        (None, KeyOrigin::Configured) => String::new(),
    };
    let origins = Arc::new(
        crate::origin::Origins::start(
            &config.origins,
            &config.origin,
            store.clone(),
            swarm.clone(),
            metrics.clone(),
            &default_owner,
        )
        .await
        .map_err(ServeError::Origin)?,
    );
    for o in origins.iter() {
        tracing::info!(
            bucket = o.spec.bucket,
            upstream = o.spec.upstream_url(),
            owner = o.owner,
            "fronting an origin"
        );
    }
    let gateway = Gateway::new(
        store.clone(),
        swarm.clone(),
        metrics.clone(),
        config.region.clone(),
        config.max_object_size,
    )
    .with_origins(origins.clone());
    if let Some(sw) = &swarm {
        sw.serve(crate::peer::service(origins.clone(), gateway.clone()));
    }
    crate::s3::start_flushers(&gateway);
    let hf = config.hf_bucket.as_ref().map(|b| {
        tracing::info!(
            bucket = b,
            token = config.hf_token.is_some(),
            "answering the Hugging Face Hub API"
        );
        Arc::new(crate::hf::Facade::new(
            gateway.clone(),
            b.clone(),
            config.hf_token.clone(),
        ))
    });
    let state = AppState::new(
        gateway,
        keys.clone(),
        &config.region,
        config.domain.as_deref(),
        config.post_max_size,
        hf,
    );
    // What must be stopped, in order, once the server has stopped.
    let (closing_swarm, closing_store) = (state.swarm.clone(), state.store.clone());
    let app = router(state);

    announce(&config, addr, tls.is_some(), &origin, keys.len());
    crate::connections::raise_open_file_limit();
    let limits = crate::connections::Limits {
        max_connections: config.max_connections,
        header_timeout: std::time::Duration::from_secs(config.header_timeout_secs),
        send_timeout: std::time::Duration::from_secs(config.send_timeout_secs),
        body_timeout: std::time::Duration::from_secs(config.body_timeout_secs),
    };
    match tls {
        Some(tls) => {
            crate::connections::serve(TlsListener::new(listener, tls)?, app, limits, shutdown).await
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            crate::connections::serve(listener, app, limits, shutdown).await
        }
    }
    if let Some(swarm) = closing_swarm {
        swarm.close().await;
    }
    // Tasks still holding the store (swarm loops, the census) go when the runtime does; the
    // database must not be busy then (see `Store::close`).
    tokio::task::spawn_blocking(move || closing_store.close())
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    tracing::info!("stopped");
    Ok(())
}

fn announce(
    config: &Config,
    addr: std::net::SocketAddr,
    https: bool,
    origin: &KeyOrigin,
    nkeys: usize,
) {
    tracing::info!(%addr, https, data_dir = %config.data_dir.display(), identities = nkeys, "s3swarm listening");
    let scheme = if https { "https" } else { "http" };
    let endpoint = format!("{scheme}://{addr}");
    match origin {
        KeyOrigin::Generated(k) => {
            println!(
                "\nGenerated credentials, stored in {}/{GENERATED_FILE} (mode 0600); shown once:\n\
                 \n  access key: {}\n  secret key: {}\n\
                 \nPoint the AWS CLI at this node:\n\
                 \n  export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={}\
                 \n  aws --endpoint-url {endpoint} s3 mb s3://my-bucket\n",
                config.data_dir.display(),
                k.access_key,
                k.secret_key,
                k.access_key,
                k.secret_key,
                config.region,
            );
        }
        KeyOrigin::LoadedGenerated(k) => {
            println!(
                "Using access key {} from {}/{GENERATED_FILE}; S3 endpoint {endpoint}",
                k.access_key,
                config.data_dir.display()
            );
        }
        KeyOrigin::Configured => println!("S3 endpoint {endpoint} ({nkeys} configured identities)"),
    }
}

/// Paths `/healthz` and `/metrics` are also valid bucket names: a request that carries S3
/// credentials is an S3 request for that bucket, not a probe.
fn is_s3_request(req: &Request) -> bool {
    req.headers().contains_key(http::header::AUTHORIZATION)
        || req.uri().query().is_some_and(|q| q.contains("X-Amz-"))
}

async fn healthz(State(st): State<AppState>, req: Request) -> Response {
    if is_s3_request(&req) {
        return s3_handler(State(st), req).await;
    }
    OperationName::set(req.extensions(), "Healthz");
    probe_store(&st).await
}

/// 200 once a metadata read proves the database answers.
async fn probe_store(st: &AppState) -> Response {
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.bucket("healthz-probe")).await {
        Ok(Ok(_)) | Ok(Err(store::StoreError::NoSuchBucket(_))) => {
            (StatusCode::OK, "ok\n").into_response()
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Ready to take every request: the store answers (as `/healthz`) and, in a swarm, the node
/// has caught up with the members since it started. Until then it refuses CreateBucket and
/// conditional writes (503); a load balancer should send it nothing.
async fn readyz(State(st): State<AppState>, req: Request) -> Response {
    if is_s3_request(&req) {
        return s3_handler(State(st), req).await;
    }
    OperationName::set(req.extensions(), "Readyz");
    if let Some(since) = crate::disk::full_since() {
        let secs = (time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - since) / 1000;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the disk is full; writes have been refused for {secs} s\n"),
        )
            .into_response();
    }
    if !st.store.committer_running() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the metadata committer has stopped; no write can land until the node restarts\n",
        )
            .into_response();
    }
    if let Some(why) = crate::disk::failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: writes are failing: {why}\n"),
        )
            .into_response();
    }
    if let Some(Err(why)) = st.swarm.as_ref().map(swarm::Swarm::readiness) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", why.reason()),
        )
            .into_response();
    }
    probe_store(&st).await
}

async fn metrics_handler(State(st): State<AppState>, req: Request) -> Response {
    if is_s3_request(&req) {
        return s3_handler(State(st), req).await;
    }
    OperationName::set(req.extensions(), "Metrics");
    let store = st.store.clone();
    let metrics = st.metrics.clone();
    let swarm = st.swarm.clone();
    match tokio::task::spawn_blocking(move || metrics.render(&store, swarm.as_ref())).await {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Room for four maximal form uploads at once (at least 256 MiB): more wait for a slot
/// before a byte of their body is read.
fn post_budget_kib(post_max_size: u64) -> usize {
    let bytes = (post_max_size + POST_FIELDS_SLACK)
        .saturating_mul(4)
        .max(256 * 1024 * 1024);
    usize::try_from(bytes / 1024).unwrap_or(usize::MAX >> 4)
}

fn s3_error_response(status: StatusCode, code: &str, message: &str) -> Response {
    crate::s3::error::response(status, code, message, "")
}

/// Reads and drops up to 64 MiB of a refused request's body: an HTTP/1.1 client still sending
/// it when the answer comes and the connection closes sees a broken pipe, not the answer.
async fn drain(req: Request) {
    use http_body_util::BodyExt as _;
    let mut body = req.into_body();
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen >= 64 << 20 {
            break;
        }
    }
}

/// `/bucket?query` as `/bucket/?query`.
fn with_trailing_slash(uri: &http::Uri) -> Option<http::Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// See [`crate::s3::signature`]: what s3s would let through unsigned or unchecked.
fn screen_signature(st: &AppState, req: &Request) -> Result<signature::Passed, signature::Refusal> {
    use s3s::host::S3Host as _;
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok());
    let vhost = match (&st.host, host) {
        (Some(domain), Some(h)) => domain.parse_host_header(h).ok(),
        _ => None,
    };
    signature::screen(
        &signature::Request {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            host_bucket: vhost.as_ref().and_then(|v| v.bucket()),
        },
        time::OffsetDateTime::now_utc(),
        &st.keys,
    )
}

async fn s3_handler(State(st): State<AppState>, mut req: Request) -> Response {
    if crate::hf::wants(st.hf.as_deref(), req.method(), req.headers(), req.uri())
        && let Some(hf) = &st.hf
    {
        OperationName::set(req.extensions(), "HubFacade");
        return hf.serve(req.method(), req.uri(), req.headers()).await;
    }
    match screen_signature(&st, &req) {
        Ok(signature::Passed::AsSent) => {}
        Ok(signature::Passed::WithBucketSlash) => {
            if let Some(uri) = with_trailing_slash(req.uri()) {
                *req.uri_mut() = uri;
            }
        }
        Err(refusal) => {
            let (status, code, message, extra) = refusal.as_s3(&st.region);
            tracing::debug!(?refusal, "request refused before signature verification");
            drain(req).await;
            return crate::s3::error::response(status, code, &message, &extra);
        }
    }
    if let Err(exceeded) = crate::s3::limits::check(req.method(), req.uri(), req.headers()) {
        let (status, code, message, extra) = exceeded.as_s3();
        drain(req).await;
        return crate::s3::error::response(status, code, &message, &extra);
    }
    let is_head = req.method() == http::Method::HEAD;
    let form_post = post::is_form_post(req.method(), req.headers());
    let _post_permit = if form_post {
        // Refusals below come before s3s routes the request; they are still PostObject.
        OperationName::set(req.extensions(), "PostObject");
        let len = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(len) = len else {
            return s3_error_response(
                StatusCode::LENGTH_REQUIRED,
                "MissingContentLength",
                "A form upload must state its Content-Length.",
            );
        };
        if len > st.post_max_size + POST_FIELDS_SLACK {
            return s3_error_response(
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed object size.",
            );
        }
        // The form's own signature first (crate::s3::form): only a form signed by a known
        // key reserves memory for its file.
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (parts, body) = req.into_parts();
        match crate::s3::form::screen(&content_type, body, &st.keys).await {
            Ok(body) => req = Request::from_parts(parts, body),
            Err((refusal, rest)) => {
                tracing::debug!(?refusal, "form upload refused before its file was read");
                drain(Request::from_parts(parts, rest)).await;
                let (status, code, message) = refusal.as_s3();
                return s3_error_response(status, code, &message);
            }
        }
        let kib = u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        match st.post_budget.clone().acquire_many_owned(kib).await {
            Ok(p) => Some(p),
            Err(_) => {
                return s3_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "Please reduce your request rate.",
                );
            }
        }
    } else {
        None
    };
    match st.s3.clone().oneshot(req).await {
        Ok(mut resp) => {
            // s3s serializes HeadObject with status 200 even for a range, and ignores the
            // status a handler sets; S3 answers a ranged HEAD with 206, like a GET.
            if is_head
                && resp.status() == StatusCode::OK
                && resp.headers().contains_key(http::header::CONTENT_RANGE)
            {
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            }
            let resp = resp.map(Body::new);
            if form_post {
                return post::as_s3_policy_error(resp).await;
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = ?e, "s3 service failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// CORS happens around s3s: preflights are answered here without authentication (browsers
/// never sign them), and answers to requests that carry an `Origin` get the headers of the
/// bucket's matching rule. Requests without `Origin` pass straight through.
async fn cors_layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == http::Method::OPTIONS {
        OperationName::set(req.extensions(), "Preflight");
        return preflight(&st, &req);
    }
    let Some(origin) = req
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let bucket = cors::Target::of(st.domain.as_deref(), req.headers(), req.uri().path())
        .map(|t| t.bucket.to_owned());
    let mut resp = next.run(req).await;
    // Looked up after the response so a request that creates or configures the bucket sees
    // its own outcome; the record is a point read the access check has just warmed.
    if let Some(bucket) = bucket
        && let Ok(rec) = st.store.bucket(&bucket)
        && let Some(extra) = cors::actual_response_headers(&rec, &origin, &method)
    {
        resp.headers_mut().extend(extra);
    }
    resp
}

fn preflight(st: &AppState, req: &Request) -> Response {
    let target = cors::Target::of(st.domain.as_deref(), req.headers(), req.uri().path());
    let record = match target.as_ref().map(|t| st.store.bucket(t.bucket)) {
        Some(Ok(rec)) => Some(rec),
        Some(Err(store::StoreError::NoSuchBucket(_))) | None => None,
        Some(Err(e)) => {
            tracing::error!(error = %e, "bucket lookup for a CORS preflight failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
        }
    };
    let is_object = target.is_some_and(|t| t.object);
    let (status, headers, body) = cors::preflight(record.as_ref(), req.headers(), is_object);
    let mut resp = (status, body).into_response();
    resp.headers_mut().extend(headers);
    resp
}

/// The S3 address peers show in `cluster status`: the bound one, or with the advertised IP
/// when bound to all interfaces.
fn http_address(
    bound: std::net::SocketAddr,
    advertise: Option<std::net::SocketAddr>,
) -> std::net::SocketAddr {
    match advertise {
        Some(a) if bound.ip().is_unspecified() => std::net::SocketAddr::new(a.ip(), bound.port()),
        _ => bound,
    }
}
