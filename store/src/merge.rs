//! The namespace merge rule: what one replicated entry does to a node's namespace, decided
//! by pure functions over (what the node holds of the entry's names, the entry). The store
//! reads those few facts inside its commit, asks here, and carries the verdict out; nothing
//! else decides how replicated state combines, so every node that has recorded the same
//! entries, in any order, with any repeats, holds the same namespace.
//!
//! The rule, in short:
//! - Every name is a register ordered by hybrid logical clock: a bucket incarnation
//!   ([`BucketId`]), or one version of a key in one incarnation. The newest stamp wins; a
//!   removal is a write of "nothing" and wins over older writes that arrive late.
//! - A key's current version is not replicated: it is the newest of the key's live
//!   versions by (seq, version id) ([`Placement`]), derived alike everywhere.
//! - Causal order: a version waits ([`Verdict::Park`]) until its bucket incarnation is the
//!   name's live one here; a bucket created after another incarnation of its name was
//!   deleted waits until that deletion is recorded here.
//! - An incarnation's deletion is final: its versions, arriving before or after, are
//!   superseded, and never pass to a later incarnation of the name.
//! - Two live incarnations of one name (creates that did not see each other) resolve to the
//!   one created first (creation time, then id); the other is buried with what it holds.
//! - What a client could not have written (bad names, inconsistent records) is refused.

use crate::journal::{Change, Entry, Hlc, ObjectState};
use crate::manifest::Manifest;
use crate::names::{BucketId, BucketName, ObjectKey};
use crate::records::BucketRecord;
use crate::version::{Version, VersionId};

/// Why a replicated entry was refused (a metric label: short and stable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The bytes are not an entry this version of s3swarm can read.
    Undecodable,
    /// A bucket name S3 would refuse.
    BucketName,
    /// An object key S3 would refuse.
    Key,
    /// A record that contradicts itself or the entry that carries it.
    Record,
}

impl Refusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Undecodable => "undecodable",
            Refusal::BucketName => "bucket_name",
            Refusal::Key => "key",
            Refusal::Record => "record",
        }
    }
}

/// How the bucket incarnation an entry names stands on this node.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Standing<'a> {
    /// It is the name's live incarnation.
    Live,
    /// It was deleted here, or lost to a concurrent create.
    Dead,
    /// Another incarnation of the name is live.
    Other(&'a BucketRecord),
    /// Neither live nor known dead (its create has not arrived).
    Unknown,
}

/// What to do with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An older write of its name than the one held: record it, change nothing.
    Older,
    /// Keep it until incarnation `0` is live or dead here, then decide again.
    Park(BucketId),
    /// Its incarnation is dead: record it, change nothing.
    Superseded,
    /// Apply it (a bucket delete buries the incarnation, and what it holds if it is live).
    Apply,
    /// Apply a bucket record, burying the name's live incarnation (it was created later).
    Replace,
    /// Bury the entry's incarnation: the live one was created first.
    Lose,
}

/// Checks an entry as if a client had sent it; `Ok` carries its decoded manifest, if any.
/// `named`: the manifest the entry names by hash, as held here (checked against the hash
/// when it was recorded).
pub(crate) fn validate(entry: &Entry, named: Option<&[u8]>) -> Result<Option<Manifest>, Refusal> {
    match &entry.change {
        Change::Bucket { name, id, record } => {
            BucketName::new(name).map_err(|_| Refusal::BucketName)?;
            if let Some(r) = record
                && (r.id != *id || r.follows == Some(*id) || r.owner.is_empty())
            {
                return Err(Refusal::Record);
            }
            Ok(None)
        }
        Change::Version {
            bucket,
            key,
            version_id,
            state,
            ..
        } => {
            BucketName::new(bucket).map_err(|_| Refusal::BucketName)?;
            ObjectKey::new(key).map_err(|_| Refusal::Key)?;
            let Some(ObjectState {
                version,
                chunks,
                manifest,
                ..
            }) = state
            else {
                return Ok(None);
            };
            if version.version_id() != *version_id {
                return Err(Refusal::Record);
            }
            match version {
                Version::DeleteMarker(_) => Ok(None),
                Version::Object(o) => {
                    let bytes = match (chunks, manifest) {
                        (None, Some(_)) => named.ok_or(Refusal::Record)?.to_vec(),
                        // Two chunk lists.
                        (Some(_), Some(_)) => return Err(Refusal::Record),
                        // None at all is an empty object's.
                        (carried, None) => hex::decode(carried.as_deref().unwrap_or_default())
                            .map_err(|_| Refusal::Record)?,
                    };
                    let manifest = Manifest::decode(&bytes).map_err(|_| Refusal::Record)?;
                    if manifest.size() != o.size || o.content_hash().is_err() {
                        return Err(Refusal::Record);
                    }
                    Ok(Some(manifest))
                }
            }
        }
    }
}

/// The verdict on a bucket incarnation's record (`None`: its deletion).
/// `follows_dead`: whether the incarnation the record says it follows is dead here.
pub(crate) fn bucket_verdict(
    id: BucketId,
    record: Option<&BucketRecord>,
    standing: Standing<'_>,
    follows_dead: bool,
    held: Option<Hlc>,
    at: Hlc,
) -> Verdict {
    let Some(rec) = record else {
        // A deletion is final whatever its stamp: a concurrent change of the record (say,
        // versioning) must not bring the bucket back.
        return match standing {
            Standing::Dead => Verdict::Older,
            _ => Verdict::Apply,
        };
    };
    if let Standing::Dead = standing {
        return Verdict::Superseded;
    }
    if let Some(prev) = rec.follows
        && !follows_dead
    {
        return Verdict::Park(prev);
    }
    match standing {
        Standing::Live => newer(held, at),
        Standing::Other(live) => {
            if (rec.created_ms, id) < (live.created_ms, live.id) {
                Verdict::Replace
            } else {
                Verdict::Lose
            }
        }
        Standing::Unknown => Verdict::Apply,
        Standing::Dead => Verdict::Superseded,
    }
}

/// The verdict on a write of one version in incarnation `bucket`.
pub(crate) fn version_verdict(
    bucket: BucketId,
    standing: Standing<'_>,
    held: Option<Hlc>,
    at: Hlc,
) -> Verdict {
    match standing {
        Standing::Live => newer(held, at),
        Standing::Dead => Verdict::Superseded,
        Standing::Other(_) | Standing::Unknown => Verdict::Park(bucket),
    }
}

fn newer(held: Option<Hlc>, at: Hlc) -> Verdict {
    match held {
        Some(h) if h >= at => Verdict::Older,
        _ => Verdict::Apply,
    }
}

/// Where a version goes among a key's versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// It becomes current; the current one (if any) becomes noncurrent.
    Current,
    /// It is older than the current one: it joins the noncurrent versions.
    Noncurrent,
}

/// The key's current version is its newest by (seq, version id): the writer's order, with a
/// fixed tie-break so two nodes that minted the same seq still agree.
pub(crate) fn placement(current: Option<&Version>, incoming: &Version) -> Placement {
    match current {
        Some(c) if order(c) > order(incoming) => Placement::Noncurrent,
        _ => Placement::Current,
    }
}

fn order(v: &Version) -> (u64, VersionId) {
    (v.seq(), v.version_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::NodeId;

    fn at(ms: u64) -> Hlc {
        Hlc {
            wall_ms: ms,
            logical: 0,
            node: NodeId([1; 16]),
        }
    }

    fn rec(id: u8, created_ms: i64, follows: Option<u8>) -> BucketRecord {
        BucketRecord {
            id: BucketId([id; 16]),
            follows: follows.map(|f| BucketId([f; 16])),
            owner: "alice".into(),
            created_ms,
            region: None,
            versioning: None,
            cors: None,
        }
    }

    #[test]
    fn a_version_waits_for_its_bucket_and_never_lands_in_another_incarnation() {
        let mine = BucketId([1; 16]);
        let other = rec(2, 5, None);
        assert_eq!(
            version_verdict(mine, Standing::Unknown, None, at(1)),
            Verdict::Park(mine)
        );
        assert_eq!(
            version_verdict(mine, Standing::Other(&other), None, at(1)),
            Verdict::Park(mine)
        );
        assert_eq!(
            version_verdict(mine, Standing::Dead, None, at(1)),
            Verdict::Superseded
        );
        assert_eq!(
            version_verdict(mine, Standing::Live, Some(at(2)), at(1)),
            Verdict::Older
        );
        assert_eq!(
            version_verdict(mine, Standing::Live, Some(at(1)), at(2)),
            Verdict::Apply
        );
    }

    #[test]
    fn a_recreated_bucket_waits_for_the_deletion_it_followed() {
        let r = rec(2, 10, Some(1));
        assert_eq!(
            bucket_verdict(r.id, Some(&r), Standing::Unknown, false, None, at(1)),
            Verdict::Park(BucketId([1; 16]))
        );
        let old = rec(1, 1, None);
        assert_eq!(
            bucket_verdict(r.id, Some(&r), Standing::Other(&old), false, None, at(1)),
            Verdict::Park(old.id),
            "not a conflict: it was created after the live one was deleted"
        );
        assert_eq!(
            bucket_verdict(r.id, Some(&r), Standing::Unknown, true, None, at(1)),
            Verdict::Apply
        );
    }

    #[test]
    fn concurrent_creates_resolve_to_the_first_on_either_side() {
        let first = rec(7, 1, None);
        let second = rec(3, 2, None);
        assert_eq!(
            bucket_verdict(
                first.id,
                Some(&first),
                Standing::Other(&second),
                false,
                None,
                at(9)
            ),
            Verdict::Replace
        );
        assert_eq!(
            bucket_verdict(
                second.id,
                Some(&second),
                Standing::Other(&first),
                false,
                None,
                at(9)
            ),
            Verdict::Lose
        );
    }

    #[test]
    fn a_deletion_is_final_whatever_its_stamp() {
        let r = rec(1, 1, None);
        assert_eq!(
            bucket_verdict(r.id, None, Standing::Live, false, Some(at(9)), at(1)),
            Verdict::Apply
        );
        assert_eq!(
            bucket_verdict(r.id, Some(&r), Standing::Dead, false, None, at(99)),
            Verdict::Superseded
        );
        assert_eq!(
            bucket_verdict(r.id, None, Standing::Dead, false, None, at(99)),
            Verdict::Older
        );
    }
}
