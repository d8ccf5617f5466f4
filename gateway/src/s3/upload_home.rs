//! Multipart uploads through any node (behind a load balancer, parts of one upload reach
//! different nodes). An upload lives on the node that created it, its *home*, whose id starts
//! the upload id (`store::upload_home`). What reaches another node is carried out at the home
//! over the swarm:
//!
//! - a part is received and stored where it arrives, in a private *relay* upload, then handed
//!   to the home, which references its chunks and fetches them from this node (verified
//!   like any chunk, kept for durability) before it answers; the relay copy is then dropped.
//!   So an acknowledged part is held by the home, exactly as if it had been sent there;
//! - list parts, abort and complete run at the home; a completion is answered once this node's
//!   namespace holds the new object (or after [`VISIBLE_WAIT`]), so a read here that follows
//!   the answer finds it;
//! - ListMultipartUploads asks every live member for its uploads.
//!
//! The home is the one place an upload lives: if it is down, its uploads answer 503 until it
//! is back, and are gone with it if it never comes back (clients start them again).

use std::time::Duration;

use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use store::{
    Manifest, NodeId, ObjectKey, ObjectRecord, PartRecord, Store, StoredChecksum, UploadRecord,
    UploadRef, WritePrecondition,
};

use super::Gateway;
use super::error::{join_err, s3_err};
use crate::peer::PeerAsk;

/// How long a request to an upload's home may take, unless it moves bytes.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long ListMultipartUploads waits for each member.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a completion may take at the home (it reads the whole upload once).
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a handed-over part may take per byte beyond [`ASK_TIMEOUT`]: the home fetches
/// it at no less than this rate, or the part fails and the client retries it.
const HANDOVER_MIN_RATE: u64 = 8 << 20;
/// How long this node waits for a completion at the home to reach its own namespace.
const VISIBLE_WAIT: Duration = Duration::from_secs(5);

/// Where an upload lives, seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Home {
    Here,
    Peer(NodeId),
}

/// The upload's home. Ids with no node in them, or any id on a node outside a swarm, are
/// this node's (an unknown one is then `NoSuchUpload` here).
pub(crate) fn home(g: &Gateway, upload_id: &str) -> Home {
    match (g.swarm.as_ref(), store::upload_home(upload_id)) {
        (Some(_), Some(node)) if node != g.store.node_id() => Home::Peer(node),
        _ => Home::Here,
    }
}

/// The home written into the ids of uploads created here: this node, in a swarm.
pub(crate) fn home_for_new(g: &Gateway) -> Option<NodeId> {
    g.swarm.as_ref().map(|_| g.store.node_id())
}

/// One upload named by a client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UploadName {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

impl UploadName {
    fn as_ref(&self) -> UploadRef<'_> {
        UploadRef {
            bucket: &self.bucket,
            key: &self.key,
            upload_id: &self.upload_id,
        }
    }
}

/// The checksums a CompleteMultipartUpload claims for the whole object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claimed {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

/// A CompleteMultipartUpload, as parsed where it arrived.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Completion {
    pub upload: UploadName,
    pub listed: Vec<(u32, String)>,
    pub claimed: Claimed,
    pub precondition: Option<WritePrecondition>,
}

/// What a node asks an upload's home.
#[derive(Serialize, Deserialize)]
pub(crate) enum UploadAsk {
    Record(UploadName),
    /// Take over part `number`, held by the asker with this chunk list (hex of
    /// `Manifest::encode`).
    Adopt {
        upload: UploadName,
        number: u32,
        etag: String,
        checksum: Option<StoredChecksum>,
        manifest: String,
    },
    Parts(UploadName),
    Complete(Completion),
    Abort(UploadName),
    /// The uploads in progress whose home is the asked node.
    List {
        bucket: String,
        prefix: String,
    },
}

#[derive(Serialize, Deserialize)]
enum UploadReply {
    Record(UploadRecord),
    Part(PartRecord),
    Parts(UploadRecord, Vec<(u32, PartRecord)>),
    /// The completed object, and the home's journal head once it was written (the asker
    /// waits to have pulled that far).
    Completed(ObjectRecord, u64),
    Aborted,
    Uploads(Vec<(String, String, UploadRecord)>),
}

/// An S3 error answered by the home, carried back to the client as it was.
#[derive(Serialize, Deserialize)]
struct Refusal {
    code: String,
    message: String,
    status: u16,
}

impl From<S3Error> for Refusal {
    fn from(e: S3Error) -> Self {
        Self {
            code: e.code().as_str().to_owned(),
            message: e.message().unwrap_or_default().to_owned(),
            status: e.status_code().map_or(500, |s| s.as_u16()),
        }
    }
}

impl From<Refusal> for S3Error {
    fn from(r: Refusal) -> Self {
        let code = S3ErrorCode::from_bytes(r.code.as_bytes()).unwrap_or(S3ErrorCode::InternalError);
        let mut e = S3Error::with_message(code, r.message);
        if let Ok(status) = http::StatusCode::from_u16(r.status) {
            e.set_status_code(status);
        }
        e
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> S3Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(join_err)?
}

async fn ask(
    g: &Gateway,
    home: NodeId,
    ask: UploadAsk,
    timeout: Duration,
) -> S3Result<UploadReply> {
    let Some(sw) = g.swarm.as_ref() else {
        return Err(s3_error!(InternalError, "no swarm to reach node {home}"));
    };
    let body = PeerAsk::Upload(ask)
        .encode()
        .map_err(|e| s3_error!(InternalError, "{e}"))?;
    let answer = sw.ask(&home, body, timeout).await.map_err(|e| {
        s3_error!(
            ServiceUnavailable,
            "node {home}, which holds this multipart upload, cannot be reached ({e}); retry \
             shortly, or start the upload again if that node is gone"
        )
    })?;
    let reply: Result<UploadReply, Refusal> = serde_json::from_slice(&answer).map_err(|e| {
        s3_error!(
            InternalError,
            "node {home} answered an upload request badly: {e}"
        )
    })?;
    reply.map_err(S3Error::from)
}

fn unexpected(home: NodeId) -> S3Error {
    s3_error!(
        InternalError,
        "node {home} answered an upload request with the wrong reply"
    )
}

/// The upload's record, wherever it lives.
pub(crate) async fn record(g: &Gateway, upload: &UploadName) -> S3Result<(UploadRecord, Home)> {
    let at = home(g, &upload.upload_id);
    let rec = match at {
        Home::Here => {
            let (store, u) = (g.store.clone(), upload.clone());
            blocking(move || {
                store
                    .upload(&u.bucket, &u.key, &u.upload_id)
                    .map_err(s3_err)
            })
            .await?
        }
        Home::Peer(node) => {
            match ask(g, node, UploadAsk::Record(upload.clone()), ASK_TIMEOUT).await? {
                UploadReply::Record(r) => r,
                _ => return Err(unexpected(node)),
            }
        }
    };
    Ok((rec, at))
}

/// Stores a part with `put` (given the store and the upload to put it in) and returns its
/// record at the upload's home. `home` and `rec` come from [`record`]; `size` is the part's
/// length, which bounds how long the home may take to fetch it.
pub(crate) async fn keep_part(
    g: &Gateway,
    upload: &UploadName,
    (rec, at): (UploadRecord, Home),
    number: u32,
    size: u64,
    put: impl FnOnce(&Store, &UploadRef<'_>) -> S3Result<PartRecord> + Send + 'static,
) -> S3Result<PartRecord> {
    let store = g.store.clone();
    let u = upload.clone();
    let Home::Peer(node) = at else {
        return blocking(move || put(&store, &u.as_ref())).await;
    };
    // The part's bytes are kept here, in a private upload of our own, until the home holds them.
    let relay = UploadRecord {
        relay: true,
        initiated_ms: time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        ..rec
    };
    let (relay_id, part, manifest) = blocking(move || {
        let key = ObjectKey::new(&u.key).map_err(s3_err)?;
        let relay_id = match store.create_upload(&u.bucket, &key, relay, None) {
            Ok(id) => id,
            // The home has the bucket (it answered for the upload); this node has not heard
            // of it yet.
            Err(store::StoreError::NoSuchBucket(b)) => {
                return Err(s3_error!(
                    ServiceUnavailable,
                    "this node has not yet received bucket {b}; retry shortly"
                ));
            }
            Err(e) => return Err(s3_err(e)),
        };
        let here = UploadRef {
            bucket: &u.bucket,
            key: &u.key,
            upload_id: &relay_id,
        };
        let kept = put(&store, &here).and_then(|part| {
            let m = store.part_manifest(&part).map_err(s3_err)?;
            Ok((part, m))
        });
        match kept {
            Ok((part, m)) => Ok((relay_id, part, m)),
            Err(e) => {
                let _ = store.abort_upload(&u.bucket, &u.key, &relay_id);
                Err(e)
            }
        }
    })
    .await?;
    let handover = UploadAsk::Adopt {
        upload: upload.clone(),
        number,
        etag: part.etag.clone(),
        checksum: part.checksum.clone(),
        manifest: hex::encode(manifest.encode()),
    };
    let timeout = ASK_TIMEOUT + Duration::from_secs(size / HANDOVER_MIN_RATE);
    // In a task of its own: a client that hangs up mid-way must not leave the relay upload
    // (and the part's bytes) behind until the uploads expire.
    let (g2, u) = (g.clone(), upload.clone());
    let handed = tokio::spawn(async move {
        let adopted = ask(&g2, node, handover, timeout).await;
        let store = g2.store.clone();
        let dropped =
            tokio::task::spawn_blocking(move || store.abort_upload(&u.bucket, &u.key, &relay_id))
                .await;
        if !matches!(dropped, Ok(Ok(()))) {
            tracing::warn!(
                ?dropped,
                "a relay upload could not be dropped; it expires with the incomplete uploads"
            );
        }
        adopted
    });
    match handed.await.map_err(join_err)?? {
        UploadReply::Part(p) => Ok(p),
        _ => Err(unexpected(node)),
    }
}

/// The upload's record and its parts, wherever it lives.
pub(crate) async fn parts(
    g: &Gateway,
    upload: &UploadName,
) -> S3Result<(UploadRecord, Vec<(u32, PartRecord)>)> {
    match home(g, &upload.upload_id) {
        Home::Here => parts_here(g, upload.clone()).await,
        Home::Peer(node) => {
            match ask(g, node, UploadAsk::Parts(upload.clone()), ASK_TIMEOUT).await? {
                UploadReply::Parts(r, p) => Ok((r, p)),
                _ => Err(unexpected(node)),
            }
        }
    }
}

async fn parts_here(
    g: &Gateway,
    u: UploadName,
) -> S3Result<(UploadRecord, Vec<(u32, PartRecord)>)> {
    let store = g.store.clone();
    blocking(move || {
        let rec = store
            .upload(&u.bucket, &u.key, &u.upload_id)
            .map_err(s3_err)?;
        let parts = store.parts(&u.upload_id).map_err(s3_err)?;
        Ok((rec, parts))
    })
    .await
}

/// Aborts the upload, wherever it lives.
pub(crate) async fn abort(g: &Gateway, upload: &UploadName) -> S3Result<()> {
    match home(g, &upload.upload_id) {
        Home::Here => abort_here(g, upload.clone()).await,
        Home::Peer(node) => {
            match ask(g, node, UploadAsk::Abort(upload.clone()), ASK_TIMEOUT).await? {
                UploadReply::Aborted => Ok(()),
                _ => Err(unexpected(node)),
            }
        }
    }
}

async fn abort_here(g: &Gateway, u: UploadName) -> S3Result<()> {
    let store = g.store.clone();
    blocking(move || {
        store
            .abort_upload(&u.bucket, &u.key, &u.upload_id)
            .map_err(s3_err)
    })
    .await
}

/// Completes the upload, wherever it lives; `here` completes one whose home is this node.
pub(crate) async fn complete<F>(
    g: &Gateway,
    c: Completion,
    here: impl FnOnce(Gateway, Completion) -> F,
) -> S3Result<ObjectRecord>
where
    F: std::future::Future<Output = S3Result<ObjectRecord>>,
{
    let Home::Peer(node) = home(g, &c.upload.upload_id) else {
        return here(g.clone(), c).await;
    };
    let (bucket, key) = (c.upload.bucket.clone(), c.upload.key.clone());
    let (rec, head) = match ask(g, node, UploadAsk::Complete(c), COMPLETE_TIMEOUT).await? {
        UploadReply::Completed(rec, head) => (rec, head),
        _ => return Err(unexpected(node)),
    };
    visible(g, node, head, &bucket, &key).await;
    Ok(rec)
}

/// Waits until this node has applied the home's journal up to `head`.
async fn visible(g: &Gateway, node: NodeId, head: u64, bucket: &str, key: &str) {
    let deadline = tokio::time::Instant::now() + VISIBLE_WAIT;
    loop {
        let store = g.store.clone();
        let seen = tokio::task::spawn_blocking(move || store.journal_seen())
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|s| s.get(&node).copied())
            .unwrap_or(0);
        if seen >= head {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                home = %node,
                bucket,
                key,
                "a completed upload had not reached this node's namespace in time; answering anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The uploads in progress in `bucket` under `prefix` on every live member (a member that
/// does not answer in time is left out, and logged), ordered by key then upload id.
pub(crate) async fn list(
    g: &Gateway,
    bucket: &str,
    prefix: &str,
) -> S3Result<Vec<(String, String, UploadRecord)>> {
    let store = g.store.clone();
    let (b, p) = (bucket.to_owned(), prefix.to_owned());
    let mut all = blocking(move || store.uploads(&b, &p).map_err(s3_err)).await?;
    if let Some(sw) = g.swarm.as_ref() {
        let me = g.store.node_id();
        let asks = sw
            .live_ids()
            .into_iter()
            .filter(|id| *id != me)
            .map(|node| {
                let ask_one = UploadAsk::List {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                };
                async move { (node, ask(g, node, ask_one, LIST_TIMEOUT).await) }
            });
        for (node, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(UploadReply::Uploads(u)) => all.extend(u),
                Ok(_) => tracing::warn!(peer = %node, "a peer answered an upload listing wrongly"),
                Err(e) => tracing::warn!(
                    peer = %node,
                    error = %e,
                    "a peer's multipart uploads are left out of a listing"
                ),
            }
        }
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    }
    Ok(all)
}

/// Answers a peer's request about an upload whose home is this node.
pub(crate) async fn answer_upload(
    g: &Gateway,
    from: NodeId,
    ask: UploadAsk,
) -> Result<Vec<u8>, String> {
    let reply = serve(g, from, ask).await.map_err(Refusal::from);
    serde_json::to_vec(&reply).map_err(|e| e.to_string())
}

async fn serve(g: &Gateway, from: NodeId, ask: UploadAsk) -> S3Result<UploadReply> {
    Ok(match ask {
        UploadAsk::Record(u) => {
            let store = g.store.clone();
            UploadReply::Record(
                blocking(move || {
                    store
                        .upload(&u.bucket, &u.key, &u.upload_id)
                        .map_err(s3_err)
                })
                .await?,
            )
        }
        UploadAsk::Adopt {
            upload,
            number,
            etag,
            checksum,
            manifest,
        } => UploadReply::Part(adopt(g, from, upload, number, etag, checksum, &manifest).await?),
        UploadAsk::Parts(u) => {
            let (rec, parts) = parts_here(g, u).await?;
            UploadReply::Parts(rec, parts)
        }
        UploadAsk::Complete(c) => {
            let rec = super::multipart::complete_here(g.clone(), c).await?;
            let store = g.store.clone();
            let head = blocking(move || store.journal_head().map_err(s3_err)).await?;
            UploadReply::Completed(rec, head)
        }
        UploadAsk::Abort(u) => {
            abort_here(g, u).await?;
            UploadReply::Aborted
        }
        UploadAsk::List { bucket, prefix } => {
            let store = g.store.clone();
            UploadReply::Uploads(
                blocking(move || store.uploads(&bucket, &prefix).map_err(s3_err)).await?,
            )
        }
    })
}

/// Takes over a part received by `from`: references its chunks, fetches those this node
/// lacks (from `from`, or whoever else holds them), and only then records it as done.
async fn adopt(
    g: &Gateway,
    from: NodeId,
    upload: UploadName,
    number: u32,
    etag: String,
    checksum: Option<StoredChecksum>,
    manifest: &str,
) -> S3Result<PartRecord> {
    let manifest = hex::decode(manifest)
        .ok()
        .and_then(|b| Manifest::decode(&b).ok())
        .ok_or_else(|| {
            s3_error!(
                InternalError,
                "node {from} handed over a part with a bad chunk list"
            )
        })?;
    if manifest.size() > g.max_object_size {
        return Err(s3_error!(
            EntityTooLarge,
            "a part may be at most {} bytes; node {from} handed over {}",
            g.max_object_size,
            manifest.size()
        ));
    }
    let store = g.store.clone();
    let u = upload.clone();
    let (part, absent) = blocking(move || {
        store
            .adopt_part(&u.as_ref(), number, manifest, etag, checksum)
            .map_err(s3_err)
    })
    .await?;
    let fetched = match (absent.is_empty(), g.swarm.as_ref()) {
        (true, _) => Ok(()),
        (false, Some(sw)) => sw
            .fetch_kept(absent.clone())
            .wait_all(&absent)
            .await
            .map_err(|(h, e)| format!("chunk {h}: {e}")),
        (false, None) => Err("this node is in no swarm".to_owned()),
    };
    let store = g.store.clone();
    let (u, p) = (upload.clone(), part.clone());
    if let Err(why) = fetched {
        blocking(move || store.abandon_part(&u.upload_id, number, &p).map_err(s3_err)).await?;
        return Err(s3_error!(
            ServiceUnavailable,
            "part {number} could not be moved to the node holding the upload ({why}); retry the part"
        ));
    }
    blocking(move || store.settle_part(&u.as_ref(), number, &p).map_err(s3_err)).await?;
    Ok(part)
}
