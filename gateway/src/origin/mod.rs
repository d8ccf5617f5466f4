//! Origins: local buckets that front an upstream S3 bucket (pull-through).
//!
//! An origin bucket answers HEAD, GET and LIST as its upstream would (its sizes, ETags, dates
//! and metadata). Object bytes are fetched from the upstream in fixed-size pieces, one ranged
//! GET each (carrying `If-Match`, so a piece never mixes two versions), cut into chunks on
//! arrival and kept in the store like any chunk; a piece is fetched once however many reads
//! want it at the same time.
//!
//! - [`spec`]: what the operator configures.
//! - [`client`]: the upstream S3 API through the AWS SDK.
//! - [`http`]: a plain HTTP(S) server as the upstream (read by key only).
//! - [`catalog`]: upstream metadata, cached and revalidated.
//! - [`pieces`]: which pieces a range covers, and their ids in the store.
//! - [`rate`]: the node-wide cap on bytes read from origins.
//! - [`write`]: writes passed through to the upstream.
//! - [`write_back`]: writes kept in the swarm and uploaded in the background.
//! - [`warm`]: bringing a prefix into the swarm before it is read.
//!
//! In a swarm each piece has one owner, chosen by rendezvous hashing over the live members:
//! a node that lacks a piece asks its owner (a swarm service request), which fetches it from
//! the upstream once for everybody and answers with the piece's chunk list; the asker then
//! fetches those chunks from the swarm like any other. If the owner cannot answer, the asker
//! fetches the piece from the upstream itself.

pub mod catalog;
pub mod client;
pub mod http;
pub mod pieces;
pub mod rate;
pub mod spec;
pub mod warm;
pub mod write;
pub mod write_back;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use store::{Manifest, PieceId, Store};

pub use client::{ListQuery, Listed, ListedPage, OriginClient, UpstreamObject, WriteMeta};
pub use spec::{OriginSettings, OriginSpec};
pub use write::WriteMode;

use crate::metrics::Metrics;

/// Why an origin could not answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OriginError {
    #[error("the key does not exist upstream")]
    NotFound,
    #[error("the origin refused access: {0}")]
    AccessDenied(String),
    #[error("the object changed upstream while it was being read; retry")]
    Changed,
    /// A 4xx the origin gave for our request, passed on to the client as the origin said it.
    #[error("the origin rejected the request: {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the origin is unavailable: {0}")]
    Unavailable(String),
    #[error("keeping what the origin sent failed: {0}")]
    Store(String),
}

type Flight = Shared<BoxFuture<'static, Result<Manifest, OriginError>>>;

/// Where a piece this node does not keep comes from.
#[derive(Clone, Copy)]
enum Source {
    /// Its owner in the swarm (this node itself if it is the owner, or alone).
    Owner,
    /// The upstream, read by this node.
    Upstream,
}

/// How long a node waits for a piece's owner (which may be fetching it from the upstream).
const OWNER_TIMEOUT: Duration = Duration::from_secs(60);

/// What a node asks a piece's owner for.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PieceAsk {
    bucket: String,
    key: String,
    etag: String,
    size: u64,
    piece_size: u64,
    index: u32,
}

/// Starts `f` in a task and shares its outcome with every caller that finds it in `map`
/// under `id` until it ends (a caller that leaves does not stop it).
fn join_flight<F>(
    map: &Mutex<HashMap<PieceId, Flight>>,
    id: PieceId,
    f: impl FnOnce() -> F,
) -> Result<Flight, OriginError>
where
    F: std::future::Future<Output = Result<Manifest, OriginError>> + Send + 'static,
{
    let mut flights = map
        .lock()
        .map_err(|_| OriginError::Store("piece table poisoned".into()))?;
    if let Some(f) = flights.get(&id) {
        return Ok(f.clone());
    }
    let task = tokio::spawn(f());
    let flight = async move {
        task.await
            .unwrap_or_else(|e| Err(OriginError::Store(e.to_string())))
    }
    .boxed()
    .shared();
    flights.insert(id, flight.clone());
    Ok(flight)
}

/// One origin bucket on this node.
pub struct Origin {
    pub spec: OriginSpec,
    pub client: OriginClient,
    pub catalog: catalog::Catalog,
    /// The local identity that owns the bucket.
    pub owner: String,
    /// When this node started fronting it (unix ms): the bucket's creation date in listings.
    pub since_ms: i64,
    piece_size: u64,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    swarm: Option<swarm::Swarm>,
    /// The node-wide cap on bytes read from origins (shared by every origin).
    rate: Option<Arc<rate::RateCap>>,
    /// Pieces being obtained now (from their owner or the upstream), so a second reader
    /// waits for the first instead of starting its own.
    inflight: Mutex<HashMap<PieceId, Flight>>,
    /// Pieces being fetched from the upstream by this node now (for its own readers or for
    /// peers that asked it as the owner). Kept apart from `inflight` so an owner never waits
    /// on a request of its own to another owner (views of the membership may differ).
    fetching: Mutex<HashMap<PieceId, Flight>>,
    /// Wakes this origin's write-back flusher (a write is pending).
    pub flush_wake: tokio::sync::Notify,
}

impl Origin {
    /// Runs one request to the upstream, counted and timed in the origin metrics.
    async fn asked<T>(
        &self,
        op: &'static str,
        request: impl std::future::Future<Output = Result<T, OriginError>>,
    ) -> Result<T, OriginError> {
        self.metrics.origin_request(&self.spec.bucket, op);
        let started = std::time::Instant::now();
        let r = request.await;
        self.metrics
            .origin_seconds(&self.spec.bucket, op, started.elapsed().as_secs_f64());
        r
    }

    /// The upstream's metadata of `key` (cached, revalidated). When the upstream now has
    /// another version, the pieces kept of the old one are dropped.
    pub async fn object(&self, key: &str) -> Result<UpstreamObject, OriginError> {
        let found = self
            .catalog
            .lookup(key, || self.asked("HeadObject", self.client.head(key)))
            .await;
        if let Err(e) = &found {
            self.metrics.origin_error(&self.spec.bucket, e);
        }
        let found = found?;
        if found.replaced.is_some() {
            let object = pieces::object_id(&self.spec, key);
            let keep = pieces::version_id(&found.object, self.piece_size);
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.drop_pieces(object, Some(keep))).await {
                Ok(Ok(n)) => tracing::info!(key, dropped = n, "object changed upstream"),
                Ok(Err(e)) => {
                    tracing::warn!(key, error = %e, "dropping a replaced object's pieces failed")
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "dropping a replaced object's pieces failed")
                }
            }
        }
        Ok(found.object)
    }

    /// One page of the upstream's listing (V1's when `v1`), counted in the origin metrics.
    pub async fn list(&self, q: &ListQuery, v1: bool) -> Result<ListedPage, OriginError> {
        let page = async {
            if v1 {
                self.client.list_v1(q).await
            } else {
                self.client.list_v2(q).await
            }
        };
        let r = self.asked("ListObjects", page).await;
        if let Err(e) = &r {
            self.metrics.origin_error(&self.spec.bucket, e);
        }
        r
    }

    /// Which pieces hold bytes `start..end` of an object of `size`.
    pub fn layout(&self, size: u64) -> pieces::Layout {
        pieces::Layout {
            size,
            piece_size: self.piece_size,
        }
    }

    /// The chunks of piece `index` of `object`: kept here, or obtained once however many
    /// callers ask at the same time (the work goes on if they leave): from the piece's owner
    /// in a swarm, else (or if the owner cannot answer) from the upstream.
    pub async fn piece(
        self: &Arc<Self>,
        key: &str,
        object: &UpstreamObject,
        index: u32,
    ) -> Result<Manifest, OriginError> {
        self.once(key, object, index, Source::Owner).await
    }

    /// The piece, fetched from the upstream by this node unless kept here already.
    fn piece_here<'a>(
        self: &'a Arc<Self>,
        key: &'a str,
        object: &'a UpstreamObject,
        index: u32,
    ) -> BoxFuture<'a, Result<Manifest, OriginError>> {
        // Boxed: `once` for the owner comes back here, and a future cannot contain itself.
        self.once(key, object, index, Source::Upstream).boxed()
    }

    fn flights(&self, source: Source) -> &Mutex<HashMap<PieceId, Flight>> {
        match source {
            Source::Owner => &self.inflight,
            Source::Upstream => &self.fetching,
        }
    }

    /// The piece, kept here, or obtained from `source` by one flight shared with every
    /// caller that asks meanwhile.
    async fn once(
        self: &Arc<Self>,
        key: &str,
        object: &UpstreamObject,
        index: u32,
        source: Source,
    ) -> Result<Manifest, OriginError> {
        let id = pieces::piece_id(&self.spec, key, object, self.piece_size, index);
        if let Some(m) = self.kept(id).await? {
            return Ok(m);
        }
        let me = self.clone();
        let (key, object) = (key.to_owned(), object.clone());
        let flight = join_flight(self.flights(source), id, move || async move {
            // A flight that ended between our look and this one's start left the piece here.
            let r = match me.kept(id).await {
                Ok(Some(m)) => Ok(m),
                _ => match source {
                    Source::Owner => me.obtain(&key, &object, index, id).await,
                    Source::Upstream => me.fetch(&key, &object, index, id).await,
                },
            };
            if let Ok(mut map) = me.flights(source).lock() {
                map.remove(&id);
            }
            r
        })?;
        flight.await
    }

    /// Fetches the chunks of a piece this node does not hold from the swarm (a warm-up that
    /// wants them on this node, not only on the piece's owner).
    pub async fn hold_here(&self, m: &Manifest) -> Result<(), OriginError> {
        let Some(sw) = &self.swarm else {
            return Ok(()); // alone, a piece is obtained into this node's store
        };
        let store = self.store.clone();
        let mut chunks: Vec<store::ChunkHash> = m.chunks().iter().map(|c| c.hash).collect();
        chunks.sort_unstable();
        chunks.dedup();
        let missing = tokio::task::spawn_blocking(move || {
            chunks
                .into_iter()
                .filter(|h| !store.has_chunk(h).unwrap_or(false))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| OriginError::Store(e.to_string()))?;
        if missing.is_empty() {
            return Ok(());
        }
        let download = sw.fetch(missing.clone());
        for h in &missing {
            download.wait(h).await.map_err(|e| {
                OriginError::Unavailable(format!(
                    "chunk {h} could not be fetched from the swarm: {e}"
                ))
            })?;
        }
        Ok(())
    }

    async fn kept(&self, id: PieceId) -> Result<Option<Manifest>, OriginError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.piece(&id))
            .await
            .map_err(|e| OriginError::Store(e.to_string()))?
            .map_err(|e| OriginError::Store(e.to_string()))
    }

    async fn obtain(
        self: &Arc<Self>,
        key: &str,
        object: &UpstreamObject,
        index: u32,
        id: PieceId,
    ) -> Result<Manifest, OriginError> {
        // The owner, then the next in rendezvous order if it cannot answer (it died, or is
        // leaving): readers that agree on the ranking agree on the fallback too.
        if let Some(sw) = &self.swarm {
            let live = sw.live_ids();
            let owners = pieces::owners(&id, &live, 2);
            tracing::debug!(
                key,
                piece = index,
                ?owners,
                members = live.len(),
                "piece owners"
            );
            for owner in owners {
                if owner == sw.me().id {
                    break;
                }
                match self.ask_owner(sw, owner, key, object, index).await {
                    Ok(m) => {
                        let (store, kept) = (self.store.clone(), m.clone());
                        tokio::task::spawn_blocking(move || store.put_piece_manifest(&id, kept))
                            .await
                            .map_err(|e| OriginError::Store(e.to_string()))?
                            .map_err(|e| OriginError::Store(e.to_string()))?;
                        return Ok(m);
                    }
                    Err(e) => tracing::warn!(
                        key,
                        piece = index,
                        %owner,
                        error = %e,
                        "a piece's owner could not answer"
                    ),
                }
            }
        }
        self.piece_here(key, object, index).await
    }

    async fn ask_owner(
        &self,
        sw: &swarm::Swarm,
        owner: swarm::NodeId,
        key: &str,
        object: &UpstreamObject,
        index: u32,
    ) -> Result<Manifest, String> {
        let ask = PieceAsk {
            bucket: self.spec.bucket.clone(),
            key: key.to_owned(),
            etag: object.etag.clone(),
            size: object.size,
            piece_size: self.piece_size,
            index,
        };
        let body = crate::peer::PeerAsk::Piece(ask).encode()?;
        let answer = sw
            .ask(&owner, body, OWNER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let m = Manifest::decode(&answer).map_err(|e| format!("bad piece manifest: {e}"))?;
        let (start, end) = self.layout(object.size).piece(index);
        if m.size() != end - start {
            return Err(format!(
                "the owner's piece has {} bytes, not {}",
                m.size(),
                end - start
            ));
        }
        Ok(m)
    }

    /// One ranged GET into the store.
    async fn fetch(
        &self,
        key: &str,
        object: &UpstreamObject,
        index: u32,
        id: PieceId,
    ) -> Result<Manifest, OriginError> {
        let (start, end) = self.layout(object.size).piece(index);
        let want = end - start;
        let piece = self.fetch_bytes(key, object, start, end, want, id);
        let r = self.asked("GetObject", piece).await;
        match &r {
            Ok(_) => tracing::debug!(key, index, bytes = want, "piece fetched from the origin"),
            Err(e) => {
                self.metrics.origin_error(&self.spec.bucket, e);
                if matches!(e, OriginError::Changed) {
                    self.catalog.forget(key);
                }
            }
        }
        r
    }

    async fn fetch_bytes(
        &self,
        key: &str,
        object: &UpstreamObject,
        start: u64,
        end: u64,
        want: u64,
        id: PieceId,
    ) -> Result<Manifest, OriginError> {
        let mut body = self.client.get_range(key, start, end, &object.etag).await?;
        // The bytes go to a blocking thread that cuts and stores chunks as they arrive: at
        // most a few network buffers are held, never the piece.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let store = self.store.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = store.writer();
            while let Some(b) = rx.blocking_recv() {
                w.write(&b)?;
            }
            w.finish()
        });
        let mut got = 0u64;
        while let Some(next) = body.stream.next().await {
            let b = next.map_err(|e| OriginError::Unavailable(format!("reading a piece: {e}")))?;
            got += b.len() as u64;
            self.metrics.origin_bytes(&self.spec.bucket, b.len() as u64);
            if let Some(cap) = &self.rate {
                cap.take(b.len() as u64).await;
            }
            if got > want {
                break;
            }
            if tx.send(b).await.is_err() {
                break; // the writer failed; its error is below
            }
        }
        drop(tx);
        let staged = writer
            .await
            .map_err(|e| OriginError::Store(e.to_string()))?
            .map_err(|e| OriginError::Store(e.to_string()))?;
        if got != want {
            return Err(OriginError::Unavailable(format!(
                "the origin sent {got} bytes for a piece of {want}"
            )));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put_piece(&id, staged))
            .await
            .map_err(|e| OriginError::Store(e.to_string()))?
            .map_err(|e| OriginError::Store(e.to_string()))
    }
}

/// Every origin bucket of this node, by local bucket name.
#[derive(Default)]
pub struct Origins {
    by_bucket: HashMap<String, Arc<Origin>>,
}

impl Origins {
    /// Builds each origin's client and checks that its upstream bucket answers with the
    /// configured credentials: refused credentials or a missing bucket stop the node with the
    /// origin's reason; an unreachable origin only warns (it may come up later).
    pub async fn start(
        specs: &[OriginSpec],
        settings: &OriginSettings,
        store: Arc<Store>,
        swarm: Option<swarm::Swarm>,
        metrics: Arc<Metrics>,
        default_owner: &str,
    ) -> Result<Self, String> {
        let permits = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
        let rate = rate::RateCap::new(settings.max_rate).map(Arc::new);
        let mut by_bucket = HashMap::new();
        for spec in specs {
            if by_bucket.contains_key(&spec.bucket) {
                return Err(format!(
                    "origin bucket {:?} is configured twice",
                    spec.bucket
                ));
            }
            let client = OriginClient::new(spec, permits.clone())
                .await
                .map_err(|e| format!("origin {:?} ({}): {e}", spec.bucket, spec.upstream_url()))?;
            match client.check_bucket().await {
                Ok(()) => {}
                Err(OriginError::Unavailable(why)) => tracing::warn!(
                    bucket = spec.bucket,
                    upstream = spec.upstream_url(),
                    error = %why,
                    "origin unreachable at start; its objects answer 503 until it is"
                ),
                Err(e) => {
                    return Err(format!(
                        "origin {:?} ({}): {e}",
                        spec.bucket,
                        spec.upstream_url()
                    ));
                }
            }
            metrics.origin_configured(&spec.bucket);
            by_bucket.insert(
                spec.bucket.clone(),
                Arc::new(Origin {
                    spec: spec.clone(),
                    client,
                    catalog: catalog::Catalog::new(Duration::from_secs(settings.revalidate_secs)),
                    owner: spec
                        .owner
                        .clone()
                        .unwrap_or_else(|| default_owner.to_owned()),
                    since_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64),
                    piece_size: settings.piece_size,
                    store: store.clone(),
                    metrics: metrics.clone(),
                    swarm: swarm.clone(),
                    rate: rate.clone(),
                    inflight: Mutex::new(HashMap::new()),
                    fetching: Mutex::new(HashMap::new()),
                    flush_wake: tokio::sync::Notify::new(),
                }),
            );
        }
        Ok(Self { by_bucket })
    }

    /// The origin a local bucket fronts, if it does.
    pub fn get(&self, bucket: &str) -> Option<&Arc<Origin>> {
        self.by_bucket.get(bucket)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.by_bucket.values()
    }

    /// Answers a peer that asks this node, as a piece's owner, for the piece.
    /// A peer's request for a piece this node was chosen to fetch: its chunk list.
    pub(crate) async fn answer(&self, ask: PieceAsk) -> Result<Vec<u8>, String> {
        let o = self
            .get(&ask.bucket)
            .ok_or_else(|| format!("bucket {:?} fronts no origin on this node", ask.bucket))?;
        if ask.piece_size != o.piece_size {
            return Err(format!(
                "piece size {} differs from this node's {} (give every node the same origins)",
                ask.piece_size, o.piece_size
            ));
        }
        if ask.index >= o.layout(ask.size).count() {
            return Err(format!("no piece {} in {} bytes", ask.index, ask.size));
        }
        let object = UpstreamObject {
            size: ask.size,
            etag: ask.etag,
            last_modified_ms: 0,
            meta: Default::default(),
        };
        o.piece_here(&ask.key, &object, ask.index)
            .await
            .map(|m| m.encode())
            .map_err(|e| e.to_string())
    }
}
