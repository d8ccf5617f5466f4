//! The scrub: a background pass that re-hashes every held chunk at `--scrub-rate` bytes per
//! second, once every `--scrub-every-secs`, and has the swarm replace the copies that fail.
//!
//! Reads verify what they serve on their own (see the store's `scrub` module); the pass finds
//! rot in data nobody reads, before the other copies rot too. Its position is kept in
//! `<data_dir>/scrub-state`, so a node restarted often still reaches the end of its pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use store::{ChunkHash, Store};

/// Bytes re-hashed per step: one blocking job, then a pause that keeps to the rate.
const STEP_BYTES: u64 = 8 << 20;
/// How often the position is written down while a pass runs.
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// Damaged chunks asked of the swarm per repair round.
const REPAIR_BATCH: usize = 256;
/// How long one repair round waits for its chunks.
const REPAIR_WAIT: Duration = Duration::from_secs(120);

/// How the scrub runs.
#[derive(Clone, Debug)]
pub struct ScrubConfig {
    /// Bytes per second re-hashed; 0 turns the scrub off.
    pub rate: u64,
    /// A new pass starts this long after the previous one started.
    pub every: Duration,
}

/// Where the pass is, as kept on disk between runs.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Position {
    /// The last chunk checked in the pass under way (hex); `None`: no pass under way.
    cursor: Option<String>,
    /// When the pass under way (or the last one) started, unix ms.
    started_ms: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn load(path: &Path) -> Position {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "scrub position unreadable; starting over");
            Position::default()
        }),
        Err(_) => Position::default(),
    }
}

fn save(path: &Path, p: &Position) {
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(p)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot record the scrub position");
    }
}

/// Runs the scrub for as long as the process runs.
pub async fn run(
    store: Arc<Store>,
    swarm: Option<swarm::Swarm>,
    data_dir: PathBuf,
    cfg: ScrubConfig,
) {
    if cfg.rate == 0 {
        tracing::info!("scrub is off (--scrub-rate 0); reads still verify what they serve");
        return;
    }
    let path = data_dir.join("scrub-state");
    let mut pos = load(&path);
    let mut cursor: Option<ChunkHash> = pos.cursor.as_deref().and_then(|h| h.parse().ok());
    loop {
        if cursor.is_none() {
            // Between passes: wait for the next one, repairing what is still damaged.
            let due = pos
                .started_ms
                .map_or(0, |s| s + cfg.every.as_millis() as u64);
            let now = now_ms();
            if due > now {
                repair_damaged(&store, swarm.as_ref()).await;
                tokio::time::sleep(Duration::from_millis(due - now).min(Duration::from_secs(60)))
                    .await;
                continue;
            }
            pos.started_ms = Some(now);
            tracing::info!(rate = cfg.rate, "scrub pass starts");
        }
        let mut last_save = tokio::time::Instant::now();
        loop {
            let s = store.clone();
            let after = cursor;
            let budget = STEP_BYTES.min(cfg.rate.max(1));
            let step = match tokio::task::spawn_blocking(move || s.scrub_step(after, budget)).await
            {
                Ok(Ok(step)) => step,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "scrub step failed; retrying in a minute");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "scrub task failed");
                    return;
                }
            };
            if !step.damaged.is_empty() {
                repair(swarm.as_ref(), step.damaged).await;
            }
            cursor = step.next;
            if cursor.is_none() {
                break;
            }
            if last_save.elapsed() >= SAVE_EVERY {
                pos.cursor = cursor.map(|h| h.to_hex());
                save(&path, &pos);
                last_save = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_secs_f64(step.bytes as f64 / cfg.rate as f64)).await;
        }
        pos.cursor = None;
        save(&path, &pos);
        tracing::info!("scrub pass complete");
    }
}

/// Asks the swarm for verified copies of chunks whose copy here is damaged and still
/// referenced (a node alone has nowhere to ask: they stay counted as damaged, that is, lost).
async fn repair_damaged(store: &Arc<Store>, swarm: Option<&swarm::Swarm>) {
    if swarm.is_none() {
        return;
    }
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.damaged_chunks(REPAIR_BATCH)).await {
        Ok(Ok(damaged)) if !damaged.is_empty() => repair(swarm, damaged).await,
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot list damaged chunks"),
        Err(e) => tracing::error!(error = %e, "damaged chunk listing failed"),
    }
}

async fn repair(swarm: Option<&swarm::Swarm>, damaged: Vec<ChunkHash>) {
    let Some(sw) = swarm else {
        tracing::error!(
            chunks = damaged.len(),
            "damaged chunks have no other copy on a node without a swarm: they are lost"
        );
        return;
    };
    let download = sw.fetch(damaged.clone());
    let waited = tokio::time::timeout(REPAIR_WAIT, async {
        let mut missing = 0usize;
        for h in &damaged {
            if let Err(e) = download.wait(h).await {
                tracing::warn!(chunk = %h, error = %e, "no peer could supply a damaged chunk");
                missing += 1;
            }
        }
        missing
    })
    .await;
    match waited {
        Ok(0) => tracing::info!(chunks = damaged.len(), "damaged chunks replaced from peers"),
        Ok(n) => tracing::warn!(chunks = n, "damaged chunks still without a good copy"),
        Err(_) => tracing::warn!(
            chunks = damaged.len(),
            "repair of damaged chunks timed out; the next round retries"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_and_bad_files_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scrub-state");
        assert_eq!(
            load(&path),
            Position::default(),
            "no file: no pass under way"
        );
        let p = Position {
            cursor: Some("ab".repeat(32)),
            started_ms: Some(1_800_000_000_000),
        };
        save(&path, &p);
        assert_eq!(load(&path), p);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path), Position::default());
    }
}
