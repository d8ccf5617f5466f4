//! Write-back (`write = "back"`): a write to an origin bucket is kept in the swarm first and
//! uploaded to the upstream in the background, so a checkpoint is written at the speed of the
//! swarm's disks and still lands in the bucket.
//!
//! Pending writes live in the replicated namespace, in a versioned namespace bucket of the
//! origin bucket's own name, owned by the origin's owner: every node reads a pending object
//! from there (an object, or a delete marker for a pending delete) before asking the upstream,
//! copies of its chunks are placed like any object's, and a restart finds the backlog where it
//! was. Each pending key is uploaded by one node, its rendezvous choice among the live members
//! (a member leaving hands its keys to the next). After the upload that node removes exactly
//! the versions it uploaded, older ones first and the uploaded one last, so an older version
//! never becomes current and a write made meanwhile stays, to be uploaded next.
//!
//! This module holds the decisions (what to do with a key's versions, who flushes a key, how
//! pending keys enter a listing of the upstream); `crate::s3::write_back` drives them.

use std::collections::BTreeMap;

use store::VersionId;

use super::client::{Listed, ListedPage};

/// One version of a pending key, as the namespace lists it (newest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingVersion {
    pub id: VersionId,
    pub delete_marker: bool,
}

/// What the upstream must be told about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// PUT this version's bytes.
    Put(VersionId),
    /// DELETE the key.
    Delete,
}

/// A key's flush: tell the upstream, then remove `then_remove` from the namespace in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flush {
    pub upstream: Upstream,
    pub then_remove: Vec<VersionId>,
}

/// The flush of a key whose versions are `newest_first` (`None`: nothing pending).
pub fn plan(newest_first: &[PendingVersion]) -> Option<Flush> {
    let (latest, older) = newest_first.split_first()?;
    let upstream = if latest.delete_marker {
        Upstream::Delete
    } else {
        Upstream::Put(latest.id)
    };
    // Oldest first, the uploaded version last: at no moment is an older version current.
    let mut then_remove: Vec<VersionId> = older.iter().rev().map(|v| v.id).collect();
    then_remove.push(latest.id);
    Some(Flush {
        upstream,
        then_remove,
    })
}

/// The member that uploads `bucket/key` (rendezvous over the live members, `live` sorted).
pub fn flusher(bucket: &str, key: &str, live: &[swarm::NodeId]) -> Option<swarm::NodeId> {
    let mut id = Vec::with_capacity(bucket.len() + key.len() + 12);
    id.extend_from_slice(b"write-back\0");
    id.extend_from_slice(bucket.as_bytes());
    id.push(0);
    id.extend_from_slice(key.as_bytes());
    swarm::holders(&store::ChunkHash::of(&id), live, 1)
        .into_iter()
        .next()
}

/// A pending key as a listing shows it: its object, or `None` for a pending delete.
#[derive(Clone, Debug)]
pub struct PendingKey {
    pub key: String,
    pub object: Option<Listed>,
}

/// Where a listing page starts: after a key, or after everything under a common prefix.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct After {
    pub key: String,
    /// `key` is a common prefix: nothing under it is listed again.
    pub prefix: bool,
}

impl After {
    fn passed(&self, key: &str) -> bool {
        key <= self.key.as_str() || (self.prefix && key.starts_with(&self.key))
    }
}

/// The pending keys a page of the upstream's listing must show: those after where the page
/// started, up to its last entry (all the rest when it is the last page). A page ending at a
/// common prefix covers every key under it.
pub fn window<'a>(
    pending: &'a [PendingKey],
    after: Option<&After>,
    page: &ListedPage,
) -> impl Iterator<Item = &'a PendingKey> {
    let end = page.truncated.then(|| last_entry(page)).flatten();
    let after = after.cloned();
    pending.iter().filter(move |p| {
        after.as_ref().is_none_or(|a| !a.passed(&p.key))
            && end.as_ref().is_none_or(|e| {
                p.key.as_str() <= e.key.as_str() || (e.prefix && p.key.starts_with(&e.key))
            })
    })
}

/// The last entry of a page, where the next one starts.
pub fn last_entry(page: &ListedPage) -> Option<After> {
    let key = page.objects.last().map(|o| o.key.as_str());
    let prefix = page.prefixes.last().map(String::as_str);
    match (key, prefix) {
        (Some(k), Some(p)) if p > k => Some(After {
            key: p.to_owned(),
            prefix: true,
        }),
        (Some(k), _) => Some(After {
            key: k.to_owned(),
            prefix: false,
        }),
        (None, Some(p)) => Some(After {
            key: p.to_owned(),
            prefix: true,
        }),
        (None, None) => None,
    }
}

/// A page of the upstream's listing with the pending keys of its window laid over it: a
/// pending object replaces or joins the upstream's, a pending delete hides it (a common
/// prefix stays: whether anything else is under it is the upstream's to say). At most `max`
/// entries; when more are left, the page is truncated and `Some` says where the next starts.
pub fn overlay(
    mut page: ListedPage,
    pending: impl IntoIterator<Item = PendingKey>,
    after: Option<&After>,
    prefix: &str,
    delimiter: Option<&str>,
    max: usize,
) -> (ListedPage, Option<After>) {
    #[derive(Clone)]
    enum Entry {
        Key(Listed),
        Prefix,
    }
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for o in page.objects.drain(..) {
        entries.insert(o.key.clone(), Entry::Key(o));
    }
    for p in page.prefixes.drain(..) {
        entries.insert(p, Entry::Prefix);
    }
    for p in pending {
        let rolled = delimiter.and_then(|d| {
            let rest = p.key.strip_prefix(prefix)?;
            rest.find(d)
                .map(|i| format!("{prefix}{}", &rest[..i + d.len()]))
        });
        match (rolled, p.object) {
            (Some(cp), Some(_)) => {
                entries.insert(cp, Entry::Prefix);
            }
            (Some(_), None) => {}
            (None, Some(o)) => {
                entries.insert(p.key, Entry::Key(o));
            }
            (None, None) => {
                entries.remove(&p.key);
            }
        }
    }
    // An upstream asked to start after a common prefix lists what is under it again.
    if let Some(a) = after {
        entries.retain(|k, _| !a.passed(k));
    }
    let more = entries.len() > max;
    let mut next = None;
    for (i, (k, e)) in entries.into_iter().enumerate() {
        if i == max {
            break;
        }
        next = Some(After {
            key: k.clone(),
            prefix: matches!(e, Entry::Prefix),
        });
        match e {
            Entry::Key(o) => page.objects.push(o),
            Entry::Prefix => page.prefixes.push(k),
        }
    }
    if more {
        page.truncated = true;
        (page, next)
    } else {
        (page, None)
    }
}

/// A continuation token of a write-back bucket's listing: where the page started and the
/// upstream's own token when the page ended where the upstream's did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub after: After,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

const TOKEN_TAG: &str = "wb1-";

impl Token {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{TOKEN_TAG}{}", hex::encode(json))
    }

    pub fn decode(s: &str) -> Option<Self> {
        let hex = s.strip_prefix(TOKEN_TAG)?;
        serde_json::from_slice(&hex::decode(hex).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(seq: u64, marker: bool) -> PendingVersion {
        PendingVersion {
            id: VersionId::Stamped { seq, salt: 0 },
            delete_marker: marker,
        }
    }

    #[test]
    fn a_flush_uploads_the_latest_and_removes_older_versions_before_it() {
        assert_eq!(plan(&[]), None);
        let f = plan(&[v(3, false), v(2, true), v(1, false)]).unwrap();
        assert_eq!(f.upstream, Upstream::Put(v(3, false).id));
        assert_eq!(
            f.then_remove,
            vec![v(1, false).id, v(2, true).id, v(3, false).id]
        );
        let f = plan(&[v(5, true), v(4, false)]).unwrap();
        assert_eq!(f.upstream, Upstream::Delete);
        assert_eq!(f.then_remove.last(), Some(&v(5, true).id));
    }

    #[test]
    fn every_view_of_the_same_members_picks_the_same_flusher() {
        let live: Vec<swarm::NodeId> = (0..5u8).map(|i| swarm::NodeId([i; 16])).collect();
        let one = flusher("ckpt", "step-100/model.pt", &live).unwrap();
        assert_eq!(flusher("ckpt", "step-100/model.pt", &live), Some(one));
        let without: Vec<_> = live.iter().copied().filter(|n| *n != one).collect();
        assert_ne!(flusher("ckpt", "step-100/model.pt", &without), Some(one));
        assert_eq!(flusher("ckpt", "k", &[]), None);
    }

    fn listed(key: &str) -> Listed {
        Listed {
            key: key.into(),
            size: 1,
            etag: "e".into(),
            last_modified_ms: 0,
            storage_class: None,
        }
    }

    fn pending(key: &str, deleted: bool) -> PendingKey {
        PendingKey {
            key: key.into(),
            object: (!deleted).then(|| listed(key)),
        }
    }

    fn keys(p: &ListedPage) -> Vec<String> {
        let mut all: Vec<String> = p.objects.iter().map(|o| o.key.clone()).collect();
        all.extend(p.prefixes.iter().cloned());
        all.sort();
        all
    }

    #[test]
    fn pending_keys_join_replace_and_hide_upstream_keys_within_the_page() {
        let page = ListedPage {
            objects: vec![listed("a"), listed("c"), listed("e")],
            truncated: true,
            ..Default::default()
        };
        let pend = vec![
            pending("b", false),
            pending("c", true),
            pending("d/x", false),
            pending("f", false),
        ];
        // "f" sorts after the page's last key: it belongs to the next page.
        let inside: Vec<PendingKey> = window(&pend, None, &page).cloned().collect();
        assert_eq!(inside.len(), 3);
        let (out, next) = overlay(page, inside, None, "", Some("/"), 10);
        assert_eq!(keys(&out), ["a", "b", "d/", "e"]);
        assert!(out.truncated && next.is_none());
    }

    #[test]
    fn an_overfull_page_is_cut_and_says_where_the_next_starts() {
        let page = ListedPage {
            objects: vec![listed("a"), listed("b")],
            ..Default::default()
        };
        let after = After {
            key: "0".into(),
            prefix: false,
        };
        let pend = vec![pending("aa", false), pending("ab/1", false)];
        let inside: Vec<PendingKey> = window(&pend, Some(&after), &page).cloned().collect();
        let (out, next) = overlay(page, inside, Some(&after), "", Some("/"), 2);
        assert_eq!(keys(&out), ["a", "aa"]);
        assert!(out.truncated);
        assert_eq!(
            next,
            Some(After {
                key: "aa".into(),
                prefix: false
            })
        );
        // Resuming after a common prefix skips what the upstream lists under it again.
        let again = ListedPage {
            objects: vec![listed("ab/1"), listed("b")],
            ..Default::default()
        };
        let after = After {
            key: "ab/".into(),
            prefix: true,
        };
        let (out, _) = overlay(again, Vec::new(), Some(&after), "", Some("/"), 5);
        assert_eq!(keys(&out), ["b"]);
    }

    #[test]
    fn tokens_round_trip_and_others_are_refused() {
        let t = Token {
            after: After {
                key: "a/b c".into(),
                prefix: true,
            },
            upstream: Some("xyz".into()),
        };
        assert_eq!(Token::decode(&t.encode()), Some(t));
        assert_eq!(Token::decode("xyz"), None);
        assert_eq!(Token::decode("wb1-zz"), None);
    }
}
