//! Keeps the namespace journal the size of the namespace: every `every`, one pass drops the
//! entries a newer write of their name, or their bucket's deletion, supersedes
//! (`store::Store::prune_journal`). Peers are told which numbers went when they pull, and a
//! node that joins pulls one entry per live name instead of the whole history.

use std::sync::Arc;
use std::time::Duration;

pub async fn run(store: Arc<store::Store>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune_journal()).await {
            Ok(Ok(p)) if p.dropped > 0 => tracing::info!(
                examined = p.examined,
                dropped = p.dropped,
                "pruned superseded namespace journal entries"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning the namespace journal failed"),
            Err(e) => tracing::warn!(error = %e, "pruning the namespace journal failed"),
        }
    }
}
