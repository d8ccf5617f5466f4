//! Upstream object metadata, cached: an entry younger than the revalidation interval is
//! answered from here; an older one is asked again (a new ETag is new content). When the
//! origin cannot be reached, what was known is still answered, so cached objects keep being
//! served through an outage.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::OriginError;
use super::client::UpstreamObject;

/// Entries kept at most; past it the oldest half goes (a listing of millions of keys is not
/// cached, only objects that were read).
const MAX_ENTRIES: usize = 100_000;

struct Entry {
    object: UpstreamObject,
    checked: Instant,
    /// `checked` as wall-clock unix ms, to compare with namespace write stamps.
    checked_ms: u64,
    /// Asked again at the next lookup whatever its age.
    expired: bool,
}

/// What a lookup found, and whether it came from the origin just now.
pub struct Found {
    pub object: UpstreamObject,
    /// The ETag cached before, when the origin just answered with another one.
    pub replaced: Option<String>,
}

pub struct Catalog {
    entries: Mutex<HashMap<String, Entry>>,
    revalidate: Duration,
}

impl Catalog {
    pub fn new(revalidate: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            revalidate,
        }
    }

    fn fresh(&self, key: &str) -> (Option<UpstreamObject>, Option<UpstreamObject>) {
        let Ok(map) = self.entries.lock() else {
            return (None, None);
        };
        match map.get(key) {
            Some(e) if !e.expired && e.checked.elapsed() < self.revalidate => {
                (Some(e.object.clone()), None)
            }
            Some(e) => (None, Some(e.object.clone())),
            None => (None, None),
        }
    }

    /// The object's metadata, from here while fresh, else from `ask` (the origin's HEAD).
    pub async fn lookup<F, Fut>(&self, key: &str, ask: F) -> Result<Found, OriginError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<UpstreamObject, OriginError>>,
    {
        let (fresh, stale) = self.fresh(key);
        if let Some(object) = fresh {
            return Ok(Found {
                object,
                replaced: None,
            });
        }
        match ask().await {
            Ok(object) => {
                let replaced = stale.filter(|s| s.etag != object.etag).map(|s| s.etag);
                self.remember(key, object.clone());
                Ok(Found { object, replaced })
            }
            Err(OriginError::NotFound) => {
                self.forget(key);
                Err(OriginError::NotFound)
            }
            // Unreachable or failing: serve what was known (its pieces may be here).
            Err(OriginError::Unavailable(why)) => match stale {
                Some(object) => {
                    tracing::warn!(key, error = %why, "origin unavailable; answering from cached metadata");
                    Ok(Found {
                        object,
                        replaced: None,
                    })
                }
                None => Err(OriginError::Unavailable(why)),
            },
            Err(e) => Err(e),
        }
    }

    /// Records metadata the origin just gave.
    pub fn remember(&self, key: &str, object: UpstreamObject) {
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            let mut ages: Vec<Instant> = map.values().map(|e| e.checked).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, e| e.checked > cut);
        }
        map.insert(
            key.to_owned(),
            Entry {
                object,
                checked: Instant::now(),
                checked_ms: swarm::SharedClock::wall_ms(),
                expired: false,
            },
        );
    }

    /// Has the next lookup of `key` ask the origin again if what is known was learned before
    /// `wall_ms` (a write-back of the key landed upstream since); kept for an outage meanwhile.
    pub fn expire_before(&self, key: &str, wall_ms: u64) {
        if let Ok(mut map) = self.entries.lock()
            && let Some(e) = map.get_mut(key)
            && e.checked_ms <= wall_ms
        {
            e.expired = true;
        }
    }

    /// Drops what is known of a key (deleted upstream, or its version changed mid-read).
    pub fn forget(&self, key: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(etag: &str) -> UpstreamObject {
        UpstreamObject {
            size: 3,
            etag: etag.into(),
            last_modified_ms: 0,
            meta: Default::default(),
        }
    }

    #[tokio::test]
    async fn fresh_entries_are_answered_here_stale_ones_asked_again_and_kept_through_an_outage() {
        let c = Catalog::new(Duration::from_millis(50));
        let f = c.lookup("k", || async { Ok(obj("a")) }).await.unwrap();
        assert_eq!(f.object.etag, "a");
        // Fresh: the origin is not asked.
        let f = c
            .lookup("k", || async {
                Err(OriginError::Unavailable("must not be asked".into()))
            })
            .await
            .unwrap();
        assert_eq!(f.object.etag, "a");
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Stale and the origin is down: the known entry.
        let f = c
            .lookup("k", || async {
                Err(OriginError::Unavailable("down".into()))
            })
            .await
            .unwrap();
        assert_eq!(f.object.etag, "a");
        // Stale and changed upstream: the new one, and what it replaced.
        let f = c.lookup("k", || async { Ok(obj("b")) }).await.unwrap();
        assert_eq!(
            (f.object.etag.as_str(), f.replaced.as_deref()),
            ("b", Some("a"))
        );
        // Deleted upstream: forgotten.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(matches!(
            c.lookup("k", || async { Err(OriginError::NotFound) }).await,
            Err(OriginError::NotFound)
        ));
        assert!(matches!(
            c.lookup("k", || async {
                Err(OriginError::Unavailable("down".into()))
            })
            .await,
            Err(OriginError::Unavailable(_))
        ));
    }
}
