//! Warming: bringing a prefix (or one key) of an origin bucket into the swarm before a job
//! reads it. Every piece is obtained the usual way (its owner reads it from the upstream
//! once); [`Hold`] says where its chunks are kept besides: nowhere else, on this node too
//! (`--all-nodes` asks every member so), or on the piece's first N members by rendezvous
//! rank (`--copies N` asks every member, and each keeps the pieces it ranks for). The answer is one line of JSON per event, sent as it happens, so a caller can
//! show progress: a `start` with the totals, an `object` per object done (or failed), a `done`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::client::ListQuery;
use super::{Origin, OriginError, UpstreamObject};

/// Objects listed at most for one warm-up (the listing is held to give totals up front).
pub const MAX_OBJECTS: usize = 1_000_000;
/// Pieces obtained at once.
const PARALLEL_PIECES: usize = 4;

/// One line of a warm-up's answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WarmLine {
    Start {
        objects: u64,
        bytes: u64,
    },
    Object {
        key: String,
        size: u64,
        pieces: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Done {
        objects: u64,
        bytes: u64,
        failed: u64,
        seconds: f64,
    },
}

/// The answer's body: lines as they are produced, length unknown.
pub struct Lines {
    rx: mpsc::Receiver<Bytes>,
}

impl futures::Stream for Lines {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|b| b.map(Ok))
    }
}

impl s3s::stream::ByteStream for Lines {}

fn line(l: &WarmLine) -> Bytes {
    let mut v = serde_json::to_vec(l).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Where a warm-up keeps each piece's chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// With the piece's owner only (where obtaining it leaves them).
    Owner,
    /// On this node as well.
    Here,
    /// On this node if it is among the piece's first `n` live members by rendezvous rank
    /// (the owner first): with every member warming, each piece ends up on `n` nodes.
    Copies(usize),
}

/// What to warm: every object under `prefix`, or the one `key`.
pub enum Scope {
    Prefix(String),
    Key(String),
}

/// Starts warming in a task; the lines arrive on the returned body. A caller that goes away
/// stops it at the next object.
pub fn start(origin: Arc<Origin>, scope: Scope, hold: Hold) -> Lines {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let started = Instant::now();
        let objects = match list(&origin, scope).await {
            Ok(o) => o,
            Err(e) => {
                let _ = tx
                    .send(line(&WarmLine::Object {
                        key: String::new(),
                        size: 0,
                        pieces: 0,
                        error: Some(e.to_string()),
                    }))
                    .await;
                let _ = tx
                    .send(line(&WarmLine::Done {
                        objects: 0,
                        bytes: 0,
                        failed: 1,
                        seconds: started.elapsed().as_secs_f64(),
                    }))
                    .await;
                return;
            }
        };
        let total: u64 = objects.iter().map(|(_, o)| o.size).sum();
        if tx
            .send(line(&WarmLine::Start {
                objects: objects.len() as u64,
                bytes: total,
            }))
            .await
            .is_err()
        {
            return;
        }
        let (mut failed, mut bytes) = (0u64, 0u64);
        for (key, object) in &objects {
            let pieces = origin.layout(object.size).count();
            let error = warm_object(&origin, key, object, hold).await.err();
            if error.is_some() {
                failed += 1;
            } else {
                bytes += object.size;
            }
            let l = WarmLine::Object {
                key: key.clone(),
                size: object.size,
                pieces,
                error: error.map(|e| e.to_string()),
            };
            if tx.send(line(&l)).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(line(&WarmLine::Done {
                objects: objects.len() as u64,
                bytes,
                failed,
                seconds: started.elapsed().as_secs_f64(),
            }))
            .await;
    });
    Lines { rx }
}

/// The objects in scope, from the upstream's listing (its sizes and ETags are what the
/// pieces are named by) or one HEAD.
async fn list(
    origin: &Arc<Origin>,
    scope: Scope,
) -> Result<Vec<(String, UpstreamObject)>, OriginError> {
    let prefix = match scope {
        Scope::Key(k) => {
            let o = origin.object(&k).await?;
            return Ok(vec![(k, o)]);
        }
        Scope::Prefix(p) => p,
    };
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let q = ListQuery {
            prefix: prefix.clone(),
            delimiter: None,
            max_keys: Some(1000),
            token: token.take(),
            after: None,
        };
        let page = origin.list(&q, false).await?;
        for o in page.objects {
            out.push((
                o.key,
                UpstreamObject {
                    size: o.size,
                    etag: o.etag,
                    last_modified_ms: o.last_modified_ms,
                    meta: Default::default(),
                },
            ));
        }
        if out.len() > MAX_OBJECTS {
            return Err(OriginError::Rejected {
                status: 400,
                code: "InvalidArgument".into(),
                message: format!(
                    "more than {MAX_OBJECTS} objects under {prefix:?}: warm a narrower prefix"
                ),
            });
        }
        match (page.truncated, page.next_token) {
            (true, Some(t)) => token = Some(t),
            _ => return Ok(out),
        }
    }
}

async fn warm_object(
    origin: &Arc<Origin>,
    key: &str,
    object: &UpstreamObject,
    hold: Hold,
) -> Result<(), OriginError> {
    let count = origin.layout(object.size).count();
    let live = origin.swarm.as_ref().map(swarm::Swarm::live_ids);
    let me = origin.swarm.as_ref().map(|s| s.me().id);
    let mine = |i: u32| match (hold, &live, me) {
        (Hold::Owner, _, _) => None,
        (Hold::Here, _, _) => Some(true),
        (Hold::Copies(n), Some(live), Some(me)) => {
            let id = super::pieces::piece_id(&origin.spec, key, object, origin.piece_size, i);
            Some(super::pieces::owners(&id, live, n).contains(&me))
        }
        // Alone: this node is every copy there is.
        (Hold::Copies(_), _, _) => Some(true),
    };
    let mut results = futures::stream::iter(0..count)
        .map(|i| async move {
            match mine(i) {
                // Not among this piece's holders: another member keeps it.
                Some(false) => {}
                Some(true) => {
                    let m = origin.piece(key, object, i).await?;
                    origin.hold_here(&m).await?;
                }
                None => {
                    origin.piece(key, object, i).await?;
                }
            }
            Ok::<_, OriginError>(())
        })
        .buffer_unordered(PARALLEL_PIECES);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}
