//! The decisions a swarm member does not make alone: who gets a bucket name, and which of
//! racing conditional writes wins. In a swarm they go to the registry (`swarm::registry`),
//! which decides each once for every node; a node on its own decides them in its store's
//! commit. When the registry cannot decide (no majority of its voters reachable) the client
//! gets 503, which SDKs retry: never two answers for one decision.

use std::time::Duration;

use md5::{Digest, Md5};
use s3s::{S3Error, S3Result, s3_error};
use store::{BucketId, BucketName, Fate, WritePrecondition};
use swarm::registry::{Expect, KeyView, Outcome, RegistryError, Ticket};

use super::Gateway;
use super::error::{join_err, s3_err};

/// A claim whose bucket never appeared anywhere for this long (its creating node died
/// between the claim and the create) may be taken up again by its owner.
const ORPHAN_AFTER: Duration = Duration::from_secs(60);

fn unavailable(e: RegistryError) -> S3Error {
    s3_error!(ServiceUnavailable, "{e}; retry shortly")
}

fn taken(mine: bool) -> S3Error {
    if mine {
        s3_error!(
            BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
        )
    } else {
        s3_error!(
            BucketAlreadyExists,
            "The requested bucket name is not available."
        )
    }
}

/// The incarnation a new bucket `name` of `owner` is to be created as, once the swarm has
/// granted it the name (a node on its own grants it itself, at the create's commit), with the
/// ticket to mark carried out once it is created.
pub(crate) async fn bucket_name(
    g: &Gateway,
    name: &BucketName,
    owner: &str,
) -> S3Result<(BucketId, Option<Ticket>)> {
    let Some(registry) = g.swarm.as_ref().and_then(|s| s.registry()).cloned() else {
        return Ok((BucketId::random(), None));
    };
    if let Ok(rec) = g.store.bucket(name.as_str()) {
        return Err(taken(rec.owner == owner));
    }
    let id = BucketId::random();
    let mut replaces = None;
    // At most: taken by a dead incarnation, replaced; then granted or taken.
    for _ in 0..3 {
        let outcome = registry
            .claim_bucket(name.as_str(), id.0, owner, replaces)
            .await
            .map_err(unavailable)?;
        let held = match outcome {
            (Outcome::Claimed, ticket) => return Ok((id, ticket)),
            (Outcome::NameTaken(held), _) => held,
            (other, _) => {
                return Err(s3_error!(
                    InternalError,
                    "the registry answered a bucket claim with {other:?}"
                ));
            }
        };
        let store = g.store.clone();
        let (n, h) = (name.to_string(), BucketId(held.id));
        let fate = tokio::task::spawn_blocking(move || store.incarnation_fate(&n, h))
            .await
            .map_err(join_err)?
            .map_err(s3_err)?;
        match fate {
            // Deleted for good, or claimed here by a create that gave up (a client retrying
            // after a 503): the name is free to whoever replaces that incarnation first.
            Fate::Dead => replaces = Some(held.id),
            Fate::Unknown if registry.given_up_here(name.as_str(), &held) => {
                replaces = Some(held.id)
            }
            Fate::Live => return Err(taken(held.owner == owner)),
            Fate::Unknown => {
                let age = swarm::SharedClock::wall_ms().saturating_sub(held.claimed_ms);
                if held.owner == owner && age > ORPHAN_AFTER.as_millis() as u64 {
                    return Ok((BucketId(held.id), None));
                }
                return Err(taken(held.owner == owner));
            }
        }
    }
    Err(s3_error!(
        ServiceUnavailable,
        "the bucket name changed hands while this create was decided; retry"
    ))
}

/// Whether a conditional write's precondition can be checked before its body is read: only
/// where the answer cannot change by the time it commits. In a swarm only an existing object
/// under `If-None-Match: *` is that (an `If-Match` may name a write that has won elsewhere
/// and not arrived here yet).
pub(crate) fn early_check_is_final(g: &Gateway, p: &WritePrecondition) -> bool {
    g.swarm.as_ref().and_then(|s| s.registry()).is_none() || *p == WritePrecondition::NotExists
}

/// Decides a conditional write of `bucket/key` that leaves `etag`. `Ok(None)`: no registry,
/// the store's commit checks `precondition` itself; `Ok(Some(ticket))`: the swarm decided this
/// write wins, the commit must not judge it again by this node's possibly older view, and the
/// ticket is to be marked carried out once it is committed.
pub(crate) async fn conditional_write(
    g: &Gateway,
    bucket: &str,
    key: &str,
    precondition: Option<&WritePrecondition>,
    etag: &str,
) -> S3Result<Option<Ticket>> {
    let (Some(p), Some(registry)) = (
        precondition,
        g.swarm.as_ref().and_then(|s| s.registry()).cloned(),
    ) else {
        return Ok(None);
    };
    let store = g.store.clone();
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let seen = tokio::task::spawn_blocking(move || store.key_state(&b, &k))
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
    let expect = match p {
        WritePrecondition::NotExists => Expect::Absent,
        WritePrecondition::ETagIs(e) => Expect::ETag(e.trim_matches('"').to_owned()),
    };
    let view = KeyView {
        stamp: seen.stamp,
        etag: seen.etag,
    };
    match registry
        .conditional_write(seen.bucket.0, key, expect, view, etag)
        .await
        .map_err(unavailable)?
    {
        (Outcome::Written, Some(ticket)) => Ok(Some(ticket)),
        (Outcome::Failed { current: None }, _) if matches!(p, WritePrecondition::ETagIs(_)) => {
            Err(s3_err(store::StoreError::NoSuchKey(key.to_owned())))
        }
        (Outcome::Failed { current }, _) => Err(s3_err(store::StoreError::PreconditionFailed(
            match current {
                Some(e) => format!("the current ETag is {e}"),
                None => "no object exists at this key".into(),
            },
        ))),
        (other, _) => Err(s3_error!(
            InternalError,
            "the registry answered a conditional write with {other:?}"
        )),
    }
}

/// The ETag a multipart completion of `listed` parts leaves (MD5 of the parts' MD5s, and
/// their count), or `None` if a listed ETag is not an MD5 (the completion then fails).
pub(crate) fn multipart_etag(listed: &[(u32, String)]) -> Option<String> {
    let mut md5s = Md5::new();
    for (_, etag) in listed {
        md5s.update(hex::decode(etag.trim_matches('"')).ok()?);
    }
    Some(format!("{}-{}", hex::encode(md5s.finalize()), listed.len()))
}
