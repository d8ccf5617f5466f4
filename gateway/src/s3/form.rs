//! The signature of a form upload (POST Object), checked before the form's file is read.
//!
//! A form carries its own credentials: `policy` and its signature are form fields, which S3
//! requires before the `file` field. s3s checks them only after it has read the whole form
//! into memory, so the server reserves memory for the declared length first; unchecked, four
//! anonymous POSTs declaring the maximum and then stalling would hold every byte of that
//! budget, and every real form upload would wait behind them. And s3s compares a SigV2
//! form signature with `!=`, not in constant time.
//!
//! So the fields ahead of the file are read here (at most [`MAX_PRE_DATA`] bytes, as S3
//! bounds them), the policy's signature is verified in constant time against the key it
//! names, and only a form that passes gets its budget and goes on to s3s, with the bytes
//! read so far put back in front of the rest of the body. s3s then checks it all again
//! (dates, the policy's conditions), at no risk.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use futures::{Stream, StreamExt as _};
use hmac::{Hmac, Mac as _};

use crate::credentials::KeyStore;

/// Bytes of form fields a form may send before its file (S3 allows 20 KiB and answers
/// MaxPostPreDataLengthExceeded above; this leaves room for long policies).
pub(crate) const MAX_PRE_DATA: usize = 64 * 1024;

/// Why a form was refused before its file was read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a multipart body that can be read.
    Malformed(String),
    /// More than [`MAX_PRE_DATA`] bytes arrived before the file field.
    PreDataTooLarge,
    /// No `policy` with a signature: S3 accepts those only into a public-write bucket.
    NotSigned,
    /// A credential field that is not `ACCESSKEY/DATE/REGION/SERVICE/aws4_request`.
    BadCredential,
    UnknownAccessKey,
    SignatureDoesNotMatch,
}

impl Refusal {
    /// Status, S3 error code and message.
    pub(crate) fn as_s3(&self) -> (http::StatusCode, &'static str, String) {
        use http::StatusCode as S;
        match self {
            Self::Malformed(why) => (
                S::BAD_REQUEST,
                "MalformedPOSTRequest",
                format!("The body of your POST request is not well-formed multipart/form-data: {why}"),
            ),
            Self::PreDataTooLarge => (
                S::BAD_REQUEST,
                "MaxPostPreDataLengthExceeded",
                format!("Your POST request fields preceding the upload file were too large (more than {MAX_PRE_DATA} bytes)."),
            ),
            Self::NotSigned => (
                S::FORBIDDEN,
                "AccessDenied",
                "A form upload must carry a policy and its signature (x-amz-signature or signature)."
                    .into(),
            ),
            Self::BadCredential => (
                S::BAD_REQUEST,
                "InvalidRequest",
                "The form's x-amz-credential is not ACCESSKEY/DATE/REGION/s3/aws4_request.".into(),
            ),
            Self::UnknownAccessKey => (
                S::FORBIDDEN,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.".into(),
            ),
            Self::SignatureDoesNotMatch => (
                S::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided."
                    .into(),
            ),
        }
    }
}

/// Reads the form's fields up to its file, verifies the policy signature, and returns the
/// body whole again (what was read, then the rest) for s3s. A refused form comes back with
/// the part of its body not yet read, for the server to drain before it answers.
pub(crate) async fn screen(
    content_type: &str,
    body: Body,
    keys: &KeyStore,
) -> Result<Body, (Refusal, Body)> {
    let boundary = match multer::parse_boundary(content_type) {
        Ok(b) => b,
        Err(e) => return Err((Refusal::Malformed(e.to_string()), body)),
    };
    let tap = Arc::new(Mutex::new(Tap {
        body: body.into_data_stream(),
        seen: Vec::new(),
        seen_bytes: 0,
    }));
    let checked = match read_fields(Reader(tap.clone()), boundary).await {
        Ok(fields) => verify(&fields, keys),
        Err(refusal) => Err(refusal),
    };
    // The form reader is gone: the tap is ours alone again.
    let Some(Tap { body, seen, .. }) = Arc::into_inner(tap).and_then(|t| t.into_inner().ok())
    else {
        return Err((
            Refusal::Malformed("the form reader failed".into()),
            Body::empty(),
        ));
    };
    match checked {
        Ok(()) => {
            let replay = futures::stream::iter(seen.into_iter().map(Ok::<_, axum::Error>));
            Ok(Body::from_stream(replay.chain(body)))
        }
        Err(refusal) => Err((refusal, Body::from_stream(body))),
    }
}

/// The fields before `file` (names lower-cased, as S3 matches them).
async fn read_fields(reader: Reader, boundary: String) -> Result<Vec<(String, String)>, Refusal> {
    let mut form = multer::Multipart::new(reader, boundary);
    let mut fields = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            // The whole body was fields (no file): s3s refuses it with its own words.
            Ok(None) => break,
            Err(e) => return Err(refusal_of(e)),
        };
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            break;
        }
        let value = field.text().await.map_err(refusal_of)?;
        fields.push((name, value));
    }
    Ok(fields)
}

fn refusal_of(e: multer::Error) -> Refusal {
    match e {
        multer::Error::StreamReadFailed(inner)
            if inner.downcast_ref::<PreDataTooLarge>().is_some() =>
        {
            Refusal::PreDataTooLarge
        }
        other => Refusal::Malformed(other.to_string()),
    }
}

/// The policy's signature, against the secret of the key the form names.
fn verify(fields: &[(String, String)], keys: &KeyStore) -> Result<(), Refusal> {
    let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let policy = field("policy").ok_or(Refusal::NotSigned)?;
    if let Some(signature) = field("x-amz-signature") {
        let credential = field("x-amz-credential").ok_or(Refusal::BadCredential)?;
        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key, date, region, service, "aws4_request"] = parts[..] else {
            return Err(Refusal::BadCredential);
        };
        let secret = keys.secret(access_key).ok_or(Refusal::UnknownAccessKey)?;
        let given = hex::decode(signature.trim()).map_err(|_| Refusal::SignatureDoesNotMatch)?;
        let mut key = format!("AWS4{secret}").into_bytes();
        for part in [date, region, service, "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key)
            .map_err(|_| Refusal::SignatureDoesNotMatch)?;
        mac.update(policy.as_bytes());
        mac.verify_slice(&given)
            .map_err(|_| Refusal::SignatureDoesNotMatch)
    } else if let Some(signature) = field("signature") {
        use base64::Engine as _;
        let access_key = field("awsaccesskeyid").ok_or(Refusal::BadCredential)?;
        let secret = keys.secret(access_key).ok_or(Refusal::UnknownAccessKey)?;
        let given = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| Refusal::SignatureDoesNotMatch)?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
            .map_err(|_| Refusal::SignatureDoesNotMatch)?;
        mac.update(policy.as_bytes());
        mac.verify_slice(&given)
            .map_err(|_| Refusal::SignatureDoesNotMatch)
    } else {
        Err(Refusal::NotSigned)
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The request body, with every frame the form reader takes kept for the replay.
struct Tap {
    body: BodyDataStream,
    seen: Vec<Bytes>,
    seen_bytes: usize,
}

#[derive(Debug)]
struct PreDataTooLarge;

impl std::fmt::Display for PreDataTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {MAX_PRE_DATA} bytes before the file field")
    }
}

impl std::error::Error for PreDataTooLarge {}

/// What the form reader reads: the tapped body, cut off once [`MAX_PRE_DATA`] bytes were
/// taken without the file field showing up.
struct Reader(Arc<Mutex<Tap>>);

impl Stream for Reader {
    type Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Ok(mut tap) = self.0.lock() else {
            return Poll::Ready(None);
        };
        if tap.seen_bytes > MAX_PRE_DATA {
            return Poll::Ready(Some(Err(Box::new(PreDataTooLarge))));
        }
        match tap.body.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => {
                tap.seen_bytes += b.len();
                tap.seen.push(b.clone());
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyStore {
        KeyStore::from_pairs(&[crate::config::KeyPair {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        }])
    }

    fn form(fields: &[(&str, &str)], file: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in fields {
            b.extend_from_slice(
                format!("--XB\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                    .as_bytes(),
            );
        }
        b.extend_from_slice(
            b"--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        );
        b.extend_from_slice(file);
        b.extend_from_slice(b"\r\n--XB--\r\n");
        b
    }

    fn v4_signature(policy: &str) -> String {
        let mut key = b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_vec();
        for part in ["20261207", "us-east-1", "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        hex::encode(hmac_sha256(&key, policy.as_bytes()))
    }

    async fn run(body: Vec<u8>) -> Result<Vec<u8>, Refusal> {
        // Frames of 7 bytes: boundaries and fields split across reads.
        let frames: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures::stream::iter(frames));
        let out = screen("multipart/form-data; boundary=XB", body, &keys())
            .await
            .map_err(|(refusal, _)| refusal)?;
        Ok(axum::body::to_bytes(out, usize::MAX)
            .await
            .expect("replayed body")
            .to_vec())
    }

    #[tokio::test]
    async fn a_signed_form_passes_whole_and_a_wrong_or_missing_signature_does_not() {
        let policy = "eyJjb25kaXRpb25zIjpbXX0=";
        let cred = "AKIDEXAMPLE/20261207/us-east-1/s3/aws4_request";
        let good = v4_signature(policy);
        let body = form(
            &[
                ("key", "a/b"),
                ("Policy", policy),
                ("X-Amz-Credential", cred),
                ("x-amz-signature", &good),
            ],
            &[7u8; 1000],
        );
        assert_eq!(run(body.clone()).await.as_deref(), Ok(&body[..]));

        let mut bad = good.clone().into_bytes();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).expect("hex");
        let cases: Vec<(Vec<(&str, &str)>, Refusal)> = vec![
            (
                vec![
                    ("policy", policy),
                    ("x-amz-credential", cred),
                    ("x-amz-signature", &bad),
                ],
                Refusal::SignatureDoesNotMatch,
            ),
            (vec![("key", "a/b")], Refusal::NotSigned),
            (vec![("policy", policy)], Refusal::NotSigned),
            (
                vec![
                    ("policy", policy),
                    (
                        "x-amz-credential",
                        "NOBODY/20261207/us-east-1/s3/aws4_request",
                    ),
                    ("x-amz-signature", &good),
                ],
                Refusal::UnknownAccessKey,
            ),
            (
                vec![
                    ("policy", policy),
                    ("x-amz-credential", "AKIDEXAMPLE"),
                    ("x-amz-signature", &good),
                ],
                Refusal::BadCredential,
            ),
            (
                vec![
                    ("policy", policy),
                    ("awsaccesskeyid", "AKIDEXAMPLE"),
                    ("signature", "AAAA"),
                ],
                Refusal::SignatureDoesNotMatch,
            ),
        ];
        for (fields, want) in cases {
            assert_eq!(run(form(&fields, b"x")).await, Err(want), "{fields:?}");
        }
    }

    #[tokio::test]
    async fn sigv2_forms_are_verified_too() {
        use base64::Engine as _;
        let policy = "eyJjb25kaXRpb25zIjpbXX0=";
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
                .expect("key");
        mac.update(policy.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let body = form(
            &[
                ("AWSAccessKeyId", "AKIDEXAMPLE"),
                ("policy", policy),
                ("signature", &sig),
            ],
            b"data",
        );
        assert_eq!(run(body.clone()).await.as_deref(), Ok(&body[..]));
    }

    #[tokio::test]
    async fn fields_past_the_pre_data_limit_are_refused_before_the_file() {
        let long = "p".repeat(MAX_PRE_DATA + 10);
        assert_eq!(
            run(form(&[("policy", &long)], b"x")).await,
            Err(Refusal::PreDataTooLarge)
        );
        assert!(matches!(
            run(b"not a form at all".to_vec()).await,
            Err(Refusal::Malformed(_))
        ));
    }
}
