//! PutObject, and the ingest pipeline that UploadPart shares.
//!
//! A body streams through three places at once: the async task reading the socket, a
//! blocking thread that chunks, hashes (BLAKE3) and writes packs, and a blocking thread
//! computing MD5 (the S3 ETag) and any requested CRC/SHA checksums. On two cores MD5 alone
//! is as slow as everything else together, so it gets its own thread. Channels are short:
//! memory per upload stays at a few network frames plus one maximum chunk.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::{Checksum, ETag, PutObjectInput, PutObjectOutput, StreamingBlob};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use store::{ContentHash, NewObject, ObjectKey, ObjectMeta, StagedObject, Store, StoredChecksum};
use tokio::sync::mpsc;

use super::checksum::{ChecksumPlan, to_dto};
use super::error::{join_err, s3_err};
use super::{
    Gateway, commit_err, object_meta_of, precheck_write, tagging, with_blake3, write_precondition,
};

/// Bodies up to this size are read whole and ingested in one blocking call: for small
/// objects two thread hand-offs cost more than the work.
const SMALL_BODY: u64 = 1024 * 1024;

/// Frame batches queued per worker thread: enough to keep both busy, few enough that ten
/// concurrent part uploads stay within a small memory budget.
const FRAMES_IN_FLIGHT: usize = 4;

/// Frames are handed to the worker threads in batches of about this many bytes.
const BATCH_BYTES: usize = 512 * 1024;

/// An uploaded body, durably staged, with its digests.
pub(crate) struct Ingested {
    pub staged: StagedObject,
    pub md5: [u8; 16],
    pub checksums: Checksum,
}

enum Msg {
    /// Network frames, batched: a message per 16 KiB frame costs more in thread wake-ups than
    /// the hashing it feeds.
    Data(Arc<Vec<Bytes>>),
    /// The body is complete; carries its whole-content BLAKE3 from the hashing thread.
    End(ContentHash),
}

/// Streams `body` into the store. Fails with EntityTooLarge past `limit` bytes and
/// IncompleteBody when the client stops early; nothing is left behind in either case.
pub(crate) async fn ingest(
    store: &Arc<Store>,
    body: Option<StreamingBlob>,
    plan: &ChecksumPlan,
    limit: u64,
    declared: Option<i64>,
) -> S3Result<Ingested> {
    let declared = declared.and_then(|n| u64::try_from(n).ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size of {limit} bytes."
        ));
    }
    let mut body = body;
    if let Err(e) = crate::disk::check_room(store, declared.unwrap_or(0)).await {
        // An HTTP/1.1 client still sending its body when the answer comes and the connection
        // closes sees a broken pipe, not the 507: read (and drop) what it sends first.
        if let Some(b) = body.as_mut() {
            drain(b, DRAIN_MAX).await;
        }
        return Err(e);
    }
    if declared.is_some_and(|n| n <= SMALL_BODY) || body.is_none() {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        if let Some(b) = body.as_mut() {
            while let Some(frame) = b.next().await {
                let frame = frame.map_err(|e| body_error(&e))?;
                buf.extend_from_slice(&frame);
                // A lying length (e.g. a small decoded length on an aws-chunked body) must not
                // make us buffer more than was declared.
                if declared.is_some_and(|n| buf.len() as u64 > n) {
                    return Err(s3_error!(
                        IncompleteBody,
                        "the body is longer than its declared length"
                    ));
                }
                if buf.len() as u64 > limit {
                    return Err(s3_error!(
                        EntityTooLarge,
                        "Your upload exceeds the maximum allowed size of {limit} bytes."
                    ));
                }
            }
        }
        if declared.is_some_and(|n| n != buf.len() as u64) {
            return Err(s3_error!(
                IncompleteBody,
                "received {} bytes but Content-Length said {}",
                buf.len(),
                declared.unwrap_or(0)
            ));
        }
        let data = buf.freeze();
        let store = store.clone();
        let mut hasher = plan.hasher();
        return tokio::task::spawn_blocking(move || {
            let md5: [u8; 16] = Md5::digest(&data).into();
            hasher.update(&data);
            let mut w = store.writer();
            w.write(&data).map_err(s3_err)?;
            let staged = w.finish().map_err(s3_err)?;
            Ok(Ingested {
                staged,
                md5,
                checksums: hasher.finalize(),
            })
        })
        .await
        .map_err(join_err)?;
    }
    let Some(mut body) = body else {
        return Err(s3_error!(IncompleteBody));
    };

    let (to_writer, writer_rx) = mpsc::channel::<Msg>(FRAMES_IN_FLIGHT);
    let (to_hasher, hasher_rx) = mpsc::channel::<Arc<Vec<Bytes>>>(FRAMES_IN_FLIGHT);
    // The writer and the hasher each run as a blocking job while batches keep coming and
    // give their thread back when none has come for `IDLE_HANDOFF` (see `consume`): an upload
    // at full speed keeps two threads busy as before, one that trickles or stalls holds none.
    let writer = tokio::spawn(consume(
        writer_rx,
        WriterState {
            writer: Some(store.writer_for_hashed()),
            staged: None,
        },
        |st, msg| match msg {
            Msg::Data(frames) => {
                let w = st.writer.as_mut().ok_or_else(|| s3_error!(InternalError))?;
                for b in frames.iter() {
                    w.write(b).map_err(s3_err)?;
                }
                Ok(true)
            }
            Msg::End(content_hash) => {
                let w = st.writer.take().ok_or_else(|| s3_error!(InternalError))?;
                st.staged = Some(w.finish_with(content_hash).map_err(s3_err)?);
                Ok(false)
            }
        },
    ));
    let hasher = tokio::spawn(consume(
        hasher_rx,
        Box::new((Md5::new(), blake3::Hasher::new(), plan.hasher())),
        |st, frames: Arc<Vec<Bytes>>| {
            for b in frames.iter() {
                st.0.update(b);
                st.1.update(b);
                st.2.update(b);
            }
            Ok(true)
        },
    ));

    let mut total = 0u64;
    let mut batch = Vec::new();
    let mut batch_len = 0usize;
    let fed: S3Result<()> = async {
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| body_error(&e))?;
            total += frame.len() as u64;
            if total > limit {
                return Err(s3_error!(
                    EntityTooLarge,
                    "Your upload exceeds the maximum allowed size of {limit} bytes."
                ));
            }
            batch_len += frame.len();
            batch.push(frame);
            if batch_len >= BATCH_BYTES {
                let frames = Arc::new(std::mem::take(&mut batch));
                batch_len = 0;
                if to_hasher.send(frames.clone()).await.is_err()
                    || to_writer.send(Msg::Data(frames)).await.is_err()
                {
                    break; // the writer failed; its error is reported below
                }
            }
        }
        if !batch.is_empty() {
            let frames = Arc::new(std::mem::take(&mut batch));
            let _ = to_hasher.send(frames.clone()).await;
            let _ = to_writer.send(Msg::Data(frames)).await;
        }
        if declared.is_some_and(|n| n != total) {
            return Err(s3_error!(
                IncompleteBody,
                "received {total} bytes but Content-Length said {}",
                declared.unwrap_or(0)
            ));
        }
        Ok(())
    }
    .await;
    // Closing the hasher's channel ends its loop; the writer finishes only when told the hash.
    drop(to_hasher);
    let (md5, whole, checks) = *hasher.await.map_err(join_err)??;
    let (md5, checksums, content_hash) = (
        <[u8; 16]>::from(md5.finalize()),
        checks.finalize(),
        ContentHash::from(whole.finalize()),
    );
    if fed.is_ok() {
        let _ = to_writer.send(Msg::End(content_hash)).await;
    }
    drop(to_writer);
    // The writer's failure (a full disk) explains a short feed, not the other way round.
    // Without End (the feed failed), its writer is dropped here, which removes its pack.
    let staged = writer.await.map_err(join_err)??.staged;
    fed?;
    match staged {
        Some(staged) => Ok(Ingested {
            staged,
            md5,
            checksums,
        }),
        None => Err(s3_error!(IncompleteBody, "the upload was interrupted")),
    }
}

/// The most of a refused upload's body read (and dropped) so the client sees the answer.
const DRAIN_MAX: u64 = 1 << 30;

/// Reads and drops up to `max` bytes of `body`, stopping at its end or first error.
async fn drain(body: &mut StreamingBlob, max: u64) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.next().await {
        seen += frame.len() as u64;
        if seen >= max {
            break;
        }
    }
}

/// How long a blocking job of [`consume`] waits for the next message before it gives its
/// thread back: far longer than a client at full speed leaves between batches, far shorter
/// than a thread should be held for one that trickles.
const IDLE_HANDOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// What the writer job carries between its blocking runs.
struct WriterState {
    writer: Option<store::ObjectWriter>,
    staged: Option<StagedObject>,
}

/// Applies `step` to every message of `rx`, in order, on a blocking thread, until `step`
/// says stop or the channel closes; returns the state. The thread is held only while
/// messages keep arriving within [`IDLE_HANDOFF`]; between bursts the receiver waits as a task.
async fn consume<M, S>(
    mut rx: mpsc::Receiver<M>,
    mut state: S,
    step: fn(&mut S, M) -> S3Result<bool>,
) -> S3Result<S>
where
    M: Send + 'static,
    S: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    while let Some(first) = rx.recv().await {
        let h = handle.clone();
        let (back, back_rx, more) =
            tokio::task::spawn_blocking(move || -> S3Result<(S, mpsc::Receiver<M>, bool)> {
                if !step(&mut state, first)? {
                    return Ok((state, rx, false));
                }
                loop {
                    match h.block_on(tokio::time::timeout(IDLE_HANDOFF, rx.recv())) {
                        Ok(Some(m)) => {
                            if !step(&mut state, m)? {
                                return Ok((state, rx, false));
                            }
                        }
                        Ok(None) => return Ok((state, rx, false)),
                        Err(_idle) => return Ok((state, rx, true)),
                    }
                }
            })
            .await
            .map_err(join_err)??;
        (state, rx) = (back, back_rx);
        if !more {
            break;
        }
    }
    Ok(state)
}

/// Names the failure of a request body stream. s3s verifies signed payloads while the body
/// streams and reports a mismatch as a stream error whose type it keeps private, so the kind
/// is recognised by its message here, in this one place.
pub(crate) fn body_error(e: &s3s::StdError) -> S3Error {
    let text = e.to_string();
    if text.contains(crate::connections::BODY_TIMEOUT_MESSAGE) {
        s3_error!(
            RequestTimeout,
            "Your socket connection to the server was not read from or written to within the timeout period."
        )
    } else if text.contains("SignatureMismatch") {
        s3_error!(
            SignatureDoesNotMatch,
            "A chunk signature of the aws-chunked body does not match its content."
        )
    } else if text.contains("Sha256Mismatch") {
        let mut err = S3Error::with_message(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        );
        err.set_status_code(http::StatusCode::BAD_REQUEST);
        err
    } else if text.contains("FormatError") || text.contains("TooLarge") || text.contains("TooMany")
    {
        s3_error!(
            InvalidRequest,
            "The aws-chunked request body is malformed: {text}"
        )
    } else {
        s3_error!(
            IncompleteBody,
            "The request body ended before its declared length: {text}"
        )
    }
}

/// The `x-amz-meta-*` limit S3 enforces: 2 KiB of keys and values together.
pub(crate) fn check_metadata_size(meta: &ObjectMeta) -> S3Result<()> {
    let size: usize = meta.user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > 2048 {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size (2048 bytes; these are {size})."
        ));
    }
    Ok(())
}

/// The body of a PutObject or UploadPart and what the client claims about it.
pub(crate) struct UploadBody {
    pub body: Option<StreamingBlob>,
    pub content_length: Option<i64>,
    pub content_md5: Option<String>,
    pub algorithm: Option<s3s::dto::ChecksumAlgorithm>,
    pub expected: Checksum,
}

/// Moves the body and integrity fields out of a PutObject or UploadPart input (same names).
macro_rules! upload_body {
    ($input:ident) => {
        $crate::s3::put::UploadBody {
            body: $input.body,
            content_length: $input.content_length,
            content_md5: $input.content_md5,
            algorithm: $input.checksum_algorithm,
            expected: s3s::dto::Checksum {
                checksum_crc32: $input.checksum_crc32,
                checksum_crc32c: $input.checksum_crc32c,
                checksum_crc64nvme: $input.checksum_crc64nvme,
                checksum_sha1: $input.checksum_sha1,
                checksum_sha256: $input.checksum_sha256,
                ..Default::default()
            },
        }
    };
}
pub(crate) use upload_body;

/// A body received, verified against every digest the client sent, and durably staged.
pub(crate) struct Received {
    pub ingested: Ingested,
    pub checksum: Option<StoredChecksum>,
}

pub(crate) async fn receive(
    g: &Gateway,
    headers: &http::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
    upload: UploadBody,
) -> S3Result<Received> {
    let plan = ChecksumPlan::new(
        headers,
        upload.algorithm.as_ref(),
        upload.expected,
        upload.content_md5.as_deref(),
    )?;
    let ingested = ingest(
        &g.store,
        upload.body,
        &plan,
        g.max_object_size,
        upload.content_length,
    )
    .await?;
    // Trailers are complete only now that the body has been read to its end.
    let checksum = plan.verify(
        &ingested.md5,
        &ingested.checksums,
        trailers.and_then(|t| t.take()),
    )?;
    Ok(Received { ingested, checksum })
}

pub(crate) async fn put_object(
    g: &Gateway,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    let key = ObjectKey::new(&input.key).map_err(s3_err)?;
    g.store.bucket(&input.bucket).map_err(s3_err)?;
    let meta = object_meta_of!(input)?;
    let precondition = write_precondition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    precheck_write(g, &input.bucket, &input.key, precondition.as_ref()).await?;
    let conditional = precondition.is_some();
    let tags = tagging::from_header(input.tagging.as_deref())?;
    let received = receive(g, &headers, trailing_headers, upload_body!(input)).await?;
    let ingested = received.ingested;
    let stored_checksum = received.checksum;
    let etag = hex::encode(ingested.md5);
    let ticket = super::decide::conditional_write(
        g,
        &input.bucket,
        &input.key,
        precondition.as_ref(),
        &etag,
    )
    .await?;
    let precondition = if ticket.is_some() { None } else { precondition };
    let new = NewObject {
        etag: etag.clone(),
        meta,
        checksum: stored_checksum.clone(),
        precondition,
        tags,
    };
    let store = g.store.clone();
    let bucket = input.bucket;
    let rec =
        tokio::task::spawn_blocking(move || store.put_object(&bucket, &key, ingested.staged, new))
            .await
            .map_err(join_err)?
            .map_err(|e| commit_err(e, conditional))?;
    if let Some(t) = ticket {
        t.carried_out();
    }

    let c = to_dto(stored_checksum.as_ref());
    let output = PutObjectOutput {
        e_tag: Some(ETag::Strong(etag)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        size: Some(rec.size as i64),
        version_id: (!rec.version_id.is_null()).then(|| rec.version_id.to_string()),
        ..Default::default()
    };
    Ok(with_blake3(S3Response::new(output), &rec.content_hash))
}
