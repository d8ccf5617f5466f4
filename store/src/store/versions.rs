//! Transaction steps (run on the committer thread) on a key's versions: installing a new
//! current version, deleting one, and finding noncurrent ones.

use super::*;

pub(super) fn bucket_in(tx: &Tx<'_>, bucket: &str) -> Result<BucketRecord> {
    match tx.get(Cf::Buckets, bucket.as_bytes())? {
        Some(v) => from_json(&v),
        None => Err(StoreError::NoSuchBucket(bucket.to_owned())),
    }
}

pub(super) fn current(tx: &Tx<'_>, okey: &[u8]) -> Result<Option<Version>> {
    tx.get(Cf::Objects, okey)?
        .map(|v| from_json(&v))
        .transpose()
}

/// Checks a conditional write against the key's current version (a delete marker counts as
/// no object). Run inside the commit, so concurrent conditional writers cannot both win.
fn check_precondition(
    okey: &[u8],
    cur: Option<&Version>,
    precondition: Option<&WritePrecondition>,
) -> Result<()> {
    match precondition {
        Some(p) => p.check(
            &String::from_utf8_lossy(okey),
            cur.and_then(Version::object),
        ),
        None => Ok(()),
    }
}

/// Makes `rec` the current version at `okey` if `precondition` holds, under the bucket's
/// versioning state: never versioned, the old object is released; enabled, it becomes a
/// noncurrent version; suspended, the new object is the `null` version, replacing any older
/// `null` version. Returns the record as stored (with its version id).
pub(super) fn install(
    tx: &mut Tx<'_>,
    okey: Vec<u8>,
    rec: ObjectRecord,
    versioning: Option<Versioning>,
    precondition: Option<&WritePrecondition>,
) -> Result<ObjectRecord> {
    let cur = current(tx, &okey)?;
    check_precondition(&okey, cur.as_ref(), precondition)?;
    match install_version(tx, okey, Version::Object(rec), versioning, cur)? {
        Version::Object(o) => Ok(o),
        Version::DeleteMarker(_) => Err(StoreError::Corrupt("installed a marker".into())),
    }
}

fn install_version(
    tx: &mut Tx<'_>,
    okey: Vec<u8>,
    mut new: Version,
    versioning: Option<Versioning>,
    cur: Option<Version>,
) -> Result<Version> {
    // Newer than what it replaces even if the clock stepped back (a restart after an NTP
    // correction): version order, and the slots in `versions`, follow the seq.
    let seq = next_seq().max(cur.as_ref().map_or(0, |c| c.seq() + 1));
    let id = match versioning {
        Some(Versioning::Enabled) => VersionId::mint(seq),
        _ => VersionId::Null,
    };
    new.set_identity(id, seq);
    let mut old_was_null = false;
    if let Some(old) = cur {
        old_was_null = old.version_id().is_null();
        match versioning {
            None => release_version(tx, &old)?,
            Some(Versioning::Suspended) if old_was_null => release_version(tx, &old)?,
            Some(_) => {
                if old_was_null {
                    tx.put(
                        Cf::NullVersions,
                        okey.clone(),
                        old.seq().to_be_bytes().to_vec(),
                    );
                }
                tx.put(
                    Cf::Versions,
                    version_key(&okey, old.seq(), old.version_id()),
                    to_json(&old),
                );
            }
        }
    }
    // The new version is `null`: an older `null` among the noncurrent ones goes (there is
    // none when the one just replaced was `null`).
    if versioning == Some(Versioning::Suspended) && !old_was_null {
        drop_noncurrent_null(tx, &okey)?;
    }
    tx.put(Cf::Objects, okey, to_json(&new));
    Ok(new)
}

/// Frees a version's data (a delete marker has none).
pub(super) fn release_version(tx: &mut Tx<'_>, v: &Version) -> Result<()> {
    match v {
        Version::Object(o) => release_manifest(tx, o.manifest_id()?, Some(&o.content_hash()?)),
        Version::DeleteMarker(_) => Ok(()),
    }
}

fn drop_noncurrent_null(tx: &mut Tx<'_>, okey: &[u8]) -> Result<()> {
    if let Some((k, v)) = find_noncurrent_tx(tx, okey, VersionId::Null)? {
        release_version(tx, &v)?;
        tx.delete(Cf::Versions, k);
        tx.delete(Cf::NullVersions, okey.to_vec());
    }
    Ok(())
}

/// DELETE without a version id.
pub(super) fn delete_current(
    tx: &mut Tx<'_>,
    okey: Vec<u8>,
    versioning: Option<Versioning>,
) -> Result<Deleted> {
    let cur = current(tx, &okey)?;
    if versioning.is_none() {
        if let Some(old) = cur {
            release_version(tx, &old)?;
            tx.delete(Cf::Objects, okey);
        }
        return Ok(Deleted::default());
    }
    let marker = Version::DeleteMarker(DeleteMarker {
        version_id: VersionId::Null,
        seq: 0,
        marker_ms: now_ms(),
    });
    let marker = install_version(tx, okey, marker, versioning, cur)?;
    Ok(Deleted {
        version_id: Some(marker.version_id()),
        delete_marker: true,
    })
}

/// DELETE of one version: removed for good; if it was the current one, the next newest
/// version (if any) becomes current.
pub(super) fn delete_version(tx: &mut Tx<'_>, okey: Vec<u8>, id: VersionId) -> Result<Deleted> {
    let gone = |v: &Version| Deleted {
        version_id: Some(id),
        delete_marker: v.object().is_none(),
    };
    let cur = current(tx, &okey)?;
    if let Some(c) = cur
        && c.version_id() == id
    {
        release_version(tx, &c)?;
        match tx.first_with_prefix(Cf::Versions, &versions_prefix(&okey))? {
            Some((k, v)) => {
                let promoted: Version = from_json(&v)?;
                if promoted.version_id().is_null() {
                    tx.delete(Cf::NullVersions, okey.clone());
                }
                tx.put(Cf::Objects, okey, v);
                tx.delete(Cf::Versions, k);
            }
            None => tx.delete(Cf::Objects, okey),
        }
        return Ok(gone(&c));
    }
    match find_noncurrent_tx(tx, &okey, id)? {
        Some((k, v)) => {
            release_version(tx, &v)?;
            tx.delete(Cf::Versions, k);
            if id.is_null() {
                tx.delete(Cf::NullVersions, okey);
            }
            Ok(gone(&v))
        }
        // S3 answers success for a version that does not exist.
        None => Ok(Deleted {
            version_id: Some(id),
            delete_marker: false,
        }),
    }
}

/// A noncurrent version by id, as the transaction sees it. A stamped id names its slot; the
/// `null` one is found through `null_versions`, so neither needs a scan of the key's history.
pub(super) fn find_noncurrent_tx(
    tx: &Tx<'_>,
    okey: &[u8],
    id: VersionId,
) -> Result<Option<(Vec<u8>, Version)>> {
    find_noncurrent_via(|cf, k| tx.get(cf, k), okey, id)
}

/// [`find_noncurrent_tx`] for readers outside a transaction.
pub(super) fn find_noncurrent(
    view: &View<'_>,
    okey: &[u8],
    id: VersionId,
) -> Result<Option<(Vec<u8>, Version)>> {
    find_noncurrent_via(|cf, k| view.get(cf, k), okey, id)
}

fn find_noncurrent_via(
    get: impl Fn(Cf, &[u8]) -> Result<Option<Vec<u8>>>,
    okey: &[u8],
    id: VersionId,
) -> Result<Option<(Vec<u8>, Version)>> {
    let seq = match id {
        VersionId::Stamped { seq, .. } => seq,
        VersionId::Null => match get(Cf::NullVersions, okey)? {
            Some(v) => decode_seq(&v)?,
            None => return Ok(None),
        },
    };
    let k = version_key(okey, seq, id);
    Ok(match get(Cf::Versions, &k)? {
        Some(v) => {
            let v: Version = from_json(&v)?;
            (v.version_id() == id).then_some((k, v))
        }
        None => None,
    })
}

pub(super) fn decode_seq(v: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        StoreError::Corrupt("null version pointer".into())
    })?))
}
