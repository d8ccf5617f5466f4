//! The HTTP server: axum routes for probes and metrics, s3s as the fallback for everything else.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

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
use crate::metrics::Metrics;
use crate::s3::blob::{BlobRoute, Names};
use crate::s3::{BucketOwnership, Gateway};

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
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    s3: S3Service,
}

/// Runs a node until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(ServeError::Credentials)?;
    let dir = config.data_dir.clone();
    let options = store::StoreOptions {
        gc_grace: std::time::Duration::from_secs(config.gc_grace_secs),
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
    let metrics = Metrics::new();

    let gateway = Gateway::new(
        store.clone(),
        metrics.clone(),
        config.region.clone(),
        config.max_object_size,
    );
    let mut builder = S3ServiceBuilder::new(gateway);
    builder.set_auth(keys.clone());
    builder.set_access(BucketOwnership {
        store: store.clone(),
        metrics: metrics.clone(),
    });
    builder.set_route(BlobRoute {
        store: store.clone(),
        metrics: metrics.clone(),
    });
    builder.set_validation(Names);
    let s3 = builder.build();

    let state = AppState { store, metrics, s3 };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .fallback(s3_handler)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    announce(&config, addr, &origin, keys.len());
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

fn announce(config: &Config, addr: std::net::SocketAddr, origin: &KeyOrigin, nkeys: usize) {
    tracing::info!(%addr, data_dir = %config.data_dir.display(), identities = nkeys, "s3swarm listening");
    let endpoint = format!("http://{addr}");
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
    let store = st.store.clone();
    // A metadata read proves the database answers.
    match tokio::task::spawn_blocking(move || store.bucket("healthz-probe")).await {
        Ok(Ok(_)) | Ok(Err(store::StoreError::NoSuchBucket(_))) => {
            (StatusCode::OK, "ok\n").into_response()
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn metrics_handler(State(st): State<AppState>, req: Request) -> Response {
    if is_s3_request(&req) {
        return s3_handler(State(st), req).await;
    }
    let store = st.store.clone();
    let metrics = st.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render(&store)).await {
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

async fn s3_handler(State(st): State<AppState>, req: Request) -> Response {
    let is_head = req.method() == http::Method::HEAD;
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
            resp.map(Body::new)
        }
        Err(e) => {
            tracing::error!(error = ?e, "s3 service failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .http_request(&method, resp.status().as_u16(), start.elapsed());
    resp
}
