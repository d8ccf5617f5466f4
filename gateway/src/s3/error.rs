//! The one place where store and origin errors become S3 error codes.

use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};
use store::StoreError;

/// A decision that needs the whole namespace (a bucket name being free, a conditional write),
/// asked of a node that has not caught up with the swarm: 503, which SDKs retry.
pub(crate) fn not_ready(why: swarm::NotReady) -> S3Error {
    s3_error!(ServiceUnavailable, "{}; retry shortly", why.reason())
}

/// Converts a store error into the S3 error a client expects.
pub(crate) fn s3_err(e: StoreError) -> S3Error {
    use StoreError as E;
    match e {
        E::InvalidBucketName(m) => s3_error!(InvalidBucketName, "{m}"),
        E::InvalidKey(m) => s3_error!(InvalidArgument, "{m}"),
        E::KeyTooLong(n) => s3_error!(
            KeyTooLongError,
            "Your key is {n} bytes; the maximum is 1024."
        ),
        E::NoSuchBucket(b) => s3_error!(NoSuchBucket, "The specified bucket does not exist: {b}"),
        E::BucketExists(b) => s3_error!(
            BucketAlreadyExists,
            "The requested bucket name is not available: {b}"
        ),
        E::BucketNotEmpty(b) => s3_error!(
            BucketNotEmpty,
            "The bucket you tried to delete is not empty: {b}"
        ),
        E::NoSuchKey(_) | E::NoSuchBlob(_) => {
            s3_error!(NoSuchKey, "The specified key does not exist.")
        }
        E::NoSuchVersion(_) => s3_error!(NoSuchVersion, "The specified version does not exist."),
        E::InvalidVersion(_) => s3_error!(InvalidArgument, "Invalid version id specified"),
        E::DeleteMarker {
            version_id, named, ..
        } => {
            // S3 tells the client what it hit: 404 for the latest version, 405 for a marker
            // asked for by id; both say it is a marker and which one.
            let mut e = if named {
                s3_error!(
                    MethodNotAllowed,
                    "The specified method is not allowed against this resource."
                )
            } else {
                s3_error!(NoSuchKey, "The specified key does not exist.")
            };
            let mut h = http::HeaderMap::new();
            h.insert(
                "x-amz-delete-marker",
                http::HeaderValue::from_static("true"),
            );
            if let Ok(v) = http::HeaderValue::from_str(&version_id.to_string()) {
                h.insert("x-amz-version-id", v);
            }
            e.set_headers(h);
            e
        }
        E::Conflict(m) => s3_error!(
            ConditionalRequestConflict,
            "A conflicting operation occurred during this request: {m}"
        ),
        E::NoSuchUpload(_) => s3_error!(
            NoSuchUpload,
            "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        ),
        E::InvalidPart(m) => s3_error!(InvalidPart, "{m}"),
        E::InvalidPartOrder => s3_error!(
            InvalidPartOrder,
            "The list of parts was not in ascending order."
        ),
        E::PartTooSmall(m) => s3_error!(EntityTooSmall, "{m}"),
        E::InvalidRange(m) => s3_error!(InvalidRange, "{m}"),
        E::PreconditionFailed(m) => s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold: {m}"
        ),
        E::InvalidHash(m) => s3_error!(InvalidArgument, "not a BLAKE3 hex digest: {m}"),
        E::Raced(m) => {
            tracing::info!(chunk = %m, "upload raced with garbage collection; client should retry");
            s3_error!(SlowDown, "Please reduce your request rate and retry.")
        }
        E::ChunkAbsent(h) => {
            tracing::warn!(chunk = %h, "chunk not held here and no swarm to fetch it from");
            S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "Part of this object is held by other nodes only; retry, or read it through another node.",
            )
        }
        E::ChunkDamaged(h) => {
            tracing::error!(chunk = %h, "request needs a chunk whose copy here is damaged");
            S3Error::with_message(
                S3ErrorCode::InternalError,
                "Part of this object failed verification on this node's disk, so it was not \
                 used; no good copy is held here. Read it through a node that holds one.",
            )
        }
        E::ClockAhead(why) => {
            tracing::warn!(reason = %why, "write refused");
            s3_error!(ServiceUnavailable, "{why}")
        }
        e if e.is_disk_full() => {
            crate::disk::record_full();
            tracing::warn!(error = %e, "write refused: disk full");
            let mut err = S3Error::with_message(
                S3ErrorCode::Custom("InsufficientStorage".into()),
                "The node's disk is full, so nothing was stored. Free space on the node (or \
                 write through another); writes resume by themselves once there is room.",
            );
            err.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            err
        }
        e @ (E::Commit(_) | E::Closed) => cannot_write(e.to_string()),
        E::Io(e) if e.raw_os_error() == Some(libc::EROFS) => {
            cannot_write(format!("the data directory is read-only ({e})"))
        }
        e @ (E::Corrupt(_) | E::Db(_) | E::Io(_)) => {
            tracing::error!(error = %e, "store failure");
            S3Error::with_message(
                S3ErrorCode::InternalError,
                "We encountered an internal error. Please try again.",
            )
        }
    }
}

/// What a client is told when an origin could not answer: the upstream's own 404 and 403
/// as theirs; an unreachable or failing upstream as 503 (SDKs retry it), never a hang.
pub(crate) fn origin_err(e: crate::origin::OriginError) -> S3Error {
    use crate::origin::OriginError as O;
    let unavailable = |m: String| {
        let mut err = S3Error::with_message(S3ErrorCode::ServiceUnavailable, m);
        err.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
        err
    };
    match e {
        O::NotFound => s3_error!(NoSuchKey, "The specified key does not exist."),
        O::AccessDenied(why) => {
            tracing::warn!(%why, "the origin refused access");
            s3_error!(AccessDenied, "The origin refused access to this object")
        }
        O::Changed => {
            unavailable("The object changed at the origin while it was read; retry".into())
        }
        O::Rejected {
            status,
            code,
            message,
        } => {
            let code = S3ErrorCode::from_bytes(code.as_bytes())
                .unwrap_or_else(|| S3ErrorCode::Custom(code.into()));
            let mut err = S3Error::with_message(code, message);
            if let Ok(s) = http::StatusCode::from_u16(status) {
                err.set_status_code(s);
            }
            err
        }
        O::Unavailable(why) => {
            tracing::warn!(%why, "origin unavailable");
            unavailable(format!("The origin is unavailable ({why}); retry shortly"))
        }
        O::Store(why) => cannot_write(why),
    }
}

/// 503 for a write this node cannot make until something changes on it (retrying through
/// another node works); `/readyz` says so meanwhile.
fn cannot_write(reason: String) -> S3Error {
    tracing::error!(%reason, "write failed");
    crate::disk::record_failure(reason.clone());
    let mut err = S3Error::with_message(
        S3ErrorCode::ServiceUnavailable,
        format!(
            "This node cannot store writes right now ({reason}); nothing was stored. Write through another node."
        ),
    );
    err.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
    err
}

/// An S3 error answered outside s3s (before it runs, or around it), in S3's XML; `extra` is
/// any further element AWS puts in that error (`<Region>`, `<HeadersNotSigned>`), escaped.
pub(crate) fn response(
    status: http::StatusCode,
    code: &str,
    message: &str,
    extra: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{extra}</Error>"
    );
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r
}

/// Turns a failed blocking task (panic or cancellation) into a 500.
pub(crate) fn join_err(e: tokio::task::JoinError) -> S3Error {
    tracing::error!(error = %e, "blocking task failed");
    S3Error::with_message(
        S3ErrorCode::InternalError,
        "We encountered an internal error. Please try again.",
    )
}

/// A `versionId` argument: `null` or one of ours; anything else is refused before it reaches
/// the store.
pub(crate) fn version_arg(v: Option<&str>) -> S3Result<Option<store::VersionId>> {
    v.map(|v| v.parse().map_err(s3_err)).transpose()
}
