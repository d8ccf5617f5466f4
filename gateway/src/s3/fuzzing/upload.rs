//! PUTs with aws-chunked bodies (the encoding SDKs use to stream and to send checksum
//! trailers) through a node's whole HTTP stack: the signature screen, the limits, s3s's chunk
//! decoder and signature chain, the gateway's PUT and its trailer checks, on a store in a
//! directory the target gives. No socket: requests go to the router as the connection code
//! hands them over.
//!
//! Each input is one PUT of a new key. Its first byte chooses the encoding:
//! - bit 0: chunks signed (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`) or not
//!   (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, always with a trailer);
//! - bit 1: a checksum trailer on signed chunks; bits 2-3: the trailer's algorithm;
//! - bit 4: a damaged body. Signed: one byte of the well-formed body changed, at a place and
//!   by a value the next three bytes give. Unsigned: the rest of the input is the body as
//!   sent, with a decoded length from its first two bytes.
//!
//! Otherwise the rest of the input is the content, cut into chunks (a length byte, then up
//! to that many bytes, repeated) and encoded as an SDK would.
//!
//! What must hold: a well-formed upload is stored and reads back byte for byte; a damaged
//! signed upload that is answered 200 stored exactly what its signed chunks carried (a change
//! that keeps their meaning, an uppercase hex digit, may pass), and one refused stored
//! nothing; an unsigned body answered 200 stored as many bytes as it declared; no answer is
//! a 5xx (clients retry those).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::body::Body;
use http_body_util::BodyExt as _;
use sha2::{Digest, Sha256};
use store::{Store, StoreOptions};
use tower::ServiceExt as _;

use crate::config::KeyPair;
use crate::credentials::KeyStore;
use crate::s3::Gateway;

const ACCESS_KEY: &str = "AKIDFUZZEXAMPLE00000";
const SECRET_KEY: &str = "fuzz/secret/key/for/aws/chunked/uploads00";
const REGION: &str = "us-east-1";
const HOST: &str = "127.0.0.1:9000";
const BUCKET: &str = "chunked";
const ALGORITHMS: [&str; 4] = ["CRC32", "CRC32C", "SHA1", "SHA256"];

/// A node without a socket, kept across inputs as a node's store is.
pub struct Uploads {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    next: AtomicU64,
    _store: Arc<Store>,
}

/// What an input asks for.
struct Plan {
    signed: bool,
    /// A checksum trailer's algorithm, if there is one.
    trailer: Option<&'static str>,
    damage: Option<Damage>,
}

enum Damage {
    /// One byte of the encoded body: at `at` (modulo its length), xored with `xor`.
    Byte { at: usize, xor: u8 },
    /// The body as the input gives it, declaring this decoded length.
    Raw { declared: usize },
}

impl Uploads {
    /// A node with one identity and one bucket, its store in `dir`.
    pub fn open(dir: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = Store::open_with(dir, StoreOptions::default()).expect("store");
        let gateway = Gateway::new(
            store.clone(),
            None,
            crate::metrics::Metrics::new(),
            REGION.into(),
            5 << 30,
        );
        let keys = KeyStore::from_pairs(&[KeyPair {
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        }]);
        let app = rt.block_on(async { crate::server::fuzzing_router(gateway, keys) });
        let this = Self {
            rt,
            app,
            next: AtomicU64::new(0),
            _store: store,
        };
        let (status, body) = this.request("PUT", &format!("/{BUCKET}"));
        assert_eq!(status, 200, "CreateBucket: {}", text(&body));
        this
    }

    /// One PUT from fuzz input (see the module's comment).
    pub fn put(&self, data: &[u8]) {
        let Some((&flags, rest)) = data.split_first() else {
            return;
        };
        let signed = flags & 1 != 0;
        let plan = Plan {
            signed,
            trailer: (!signed || flags & 2 != 0).then(|| ALGORITHMS[usize::from((flags >> 2) & 3)]),
            damage: None,
        };
        let (plan, rest) = match (flags & 16 != 0, signed) {
            (false, _) => (plan, rest),
            (true, true) => {
                let Some((d, rest)) = rest.split_first_chunk::<3>() else {
                    return;
                };
                let damage = Damage::Byte {
                    at: usize::from(u16::from_le_bytes([d[0], d[1]])),
                    xor: d[2] | 1,
                };
                (
                    Plan {
                        damage: Some(damage),
                        ..plan
                    },
                    rest,
                )
            }
            (true, false) => {
                let Some((d, rest)) = rest.split_first_chunk::<2>() else {
                    return;
                };
                let declared = usize::from(u16::from_le_bytes(*d));
                (
                    Plan {
                        damage: Some(Damage::Raw { declared }),
                        ..plan
                    },
                    rest,
                )
            }
        };
        let key = format!("/{BUCKET}/k{}", self.next.fetch_add(1, Ordering::Relaxed));
        match plan.damage {
            Some(Damage::Raw { declared }) => {
                let (status, body) = self.put_raw(&key, &plan, rest.to_vec(), declared);
                assert!(status < 500, "{status} for a raw body: {body}");
                match self.get(&key) {
                    Some(stored) => {
                        assert_eq!(status, 200, "stored, but answered {status}: {body}");
                        assert_eq!(
                            stored.len(),
                            declared,
                            "stored other than the declared length"
                        );
                    }
                    None => assert_ne!(status, 200, "answered 200, stored nothing"),
                }
            }
            _ => {
                let pieces = cut(rest);
                let content: Vec<u8> = pieces.concat();
                let (status, answer) = self.put_encoded(&key, &plan, &pieces);
                assert!(status < 500, "{status}: {answer}");
                if plan.damage.is_none() {
                    assert_eq!(status, 200, "a well-formed upload refused: {answer}");
                }
                match self.get(&key) {
                    Some(stored) => {
                        assert_eq!(status, 200, "stored, but answered {status}: {answer}");
                        assert!(stored == content, "stored other bytes than were signed");
                    }
                    None => assert_ne!(status, 200, "answered 200, stored nothing"),
                }
            }
        }
    }
}

/// The content's chunks: a length byte, then up to that many bytes, repeated; empty chunks
/// are left out (an empty chunk ends a body).
fn cut(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        if n > 0 {
            pieces.push(tail[..n].to_vec());
        }
        rest = &tail[n..];
    }
    pieces
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn payload_mode(plan: &Plan) -> &'static str {
    match (plan.signed, plan.trailer) {
        (false, _) => "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        (true, None) => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        (true, Some(_)) => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    }
}

fn trailer_name(alg: &str) -> String {
    format!("x-amz-checksum-{}", alg.to_ascii_lowercase())
}

fn checksum(alg: &str, data: &[u8]) -> String {
    let mut h = crate::s3::checksum::hasher_for(alg).expect("a known algorithm");
    h.update(data);
    crate::s3::checksum::finish(h, alg).expect("computed").value
}

/// What signing the request's headers gave: the seed of the chunks' signature chain, the
/// request time, and the headers to send.
struct Signed {
    seed: String,
    time: SystemTime,
    amz_date: String,
    headers: Vec<(String, String)>,
}

/// What a link of the signature chain signs.
#[derive(Clone, Copy)]
enum Signing {
    Chunk,
    Trailer,
}

/// The body as an SDK sends it: each chunk as `hex-size[;chunk-signature=S]\r\n` + data +
/// `\r\n`, then the empty chunk, then the trailer lines (signed ones end with
/// `x-amz-trailer-signature`) and a blank line. Without `signed`, signatures are zeros of
/// the same length.
fn encode(plan: &Plan, pieces: &[Vec<u8>], signed: Option<&Signed>) -> Vec<u8> {
    let zeros = "0".repeat(64);
    let chain = signed.map(|s| {
        let scope = format!("{}/{REGION}/s3/aws4_request", &s.amz_date[..8]);
        let key = v4::generate_signing_key(SECRET_KEY, s.time, REGION, "s3");
        (s, scope, key)
    });
    let mut prev = signed.map_or_else(|| zeros.clone(), |s| s.seed.clone());
    let mut sign_next = |kind: Signing, hashed: &[u8]| -> String {
        let Some((s, scope, key)) = &chain else {
            return zeros.clone();
        };
        let sts = match kind {
            Signing::Chunk => format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{scope}\n{prev}\n{}\n{}",
                s.amz_date,
                hex::encode(Sha256::digest(b"")),
                hex::encode(Sha256::digest(hashed))
            ),
            Signing::Trailer => format!(
                "AWS4-HMAC-SHA256-TRAILER\n{}\n{scope}\n{prev}\n{}",
                s.amz_date,
                hex::encode(Sha256::digest(hashed))
            ),
        };
        prev = v4::calculate_signature(key.as_ref(), sts.as_bytes());
        prev.clone()
    };
    let mut body = Vec::new();
    for p in pieces.iter().map(Vec::as_slice).chain([&[][..]]) {
        body.extend_from_slice(format!("{:x}", p.len()).as_bytes());
        if plan.signed {
            body.extend_from_slice(
                format!(";chunk-signature={}", sign_next(Signing::Chunk, p)).as_bytes(),
            );
        }
        body.extend_from_slice(b"\r\n");
        if !p.is_empty() {
            body.extend_from_slice(p);
            body.extend_from_slice(b"\r\n");
        }
    }
    if let Some(alg) = plan.trailer {
        let content: Vec<u8> = pieces.concat();
        let line = format!("{}:{}", trailer_name(alg), checksum(alg, &content));
        body.extend_from_slice(line.as_bytes());
        body.extend_from_slice(b"\r\n");
        if plan.signed {
            let sig = sign_next(Signing::Trailer, format!("{line}\n").as_bytes());
            body.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    body.extend_from_slice(b"\r\n");
    body
}

impl Uploads {
    fn headers_for(plan: &Plan, decoded: usize, encoded: usize) -> Vec<(String, String)> {
        let mut h = vec![
            ("host".to_owned(), HOST.to_owned()),
            ("x-amz-content-sha256".into(), payload_mode(plan).into()),
            ("content-encoding".into(), "aws-chunked".into()),
            ("x-amz-decoded-content-length".into(), decoded.to_string()),
            ("content-length".into(), encoded.to_string()),
        ];
        if let Some(alg) = plan.trailer {
            h.push(("x-amz-trailer".into(), trailer_name(alg)));
        }
        h
    }

    fn sign(method: &str, path: &str, headers: Vec<(String, String)>, payload: &str) -> Signed {
        let time = SystemTime::now();
        let identity =
            aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "fuzz")
                .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .expect("signing params")
            .into();
        let url = format!("http://{HOST}{path}");
        let signable = SignableRequest::new(
            method,
            &url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Precomputed(payload.into()),
        )
        .expect("signable");
        let (instructions, seed) = sign(signable, &params).expect("sign").into_parts();
        let mut headers = headers;
        headers.extend(
            instructions
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let amz_date = headers
            .iter()
            .find(|(k, _)| k == "x-amz-date")
            .map(|(_, v)| v.clone())
            .expect("x-amz-date");
        Signed {
            seed,
            time,
            amz_date,
            headers,
        }
    }

    /// The chunks encoded (see [`encode`]) and sent, damaged as the plan says.
    fn put_encoded(&self, key: &str, plan: &Plan, pieces: &[Vec<u8>]) -> (u16, String) {
        let decoded = pieces.iter().map(Vec::len).sum();
        // Signatures have a fixed length: the body's length is known before they are.
        let encoded = encode(plan, pieces, None).len();
        let signed = Self::sign(
            "PUT",
            key,
            Self::headers_for(plan, decoded, encoded),
            payload_mode(plan),
        );
        let mut body = encode(plan, pieces, Some(&signed));
        debug_assert_eq!(body.len(), encoded);
        if let Some(Damage::Byte { at, xor }) = plan.damage
            && !body.is_empty()
        {
            let i = at % body.len();
            body[i] ^= xor;
        }
        let (status, answer) = self.call("PUT", key, signed.headers, body);
        (status, text(&answer))
    }

    /// The body as the input gave it, signed for its length and a declared decoded length.
    fn put_raw(&self, key: &str, plan: &Plan, body: Vec<u8>, declared: usize) -> (u16, String) {
        let headers = Self::headers_for(plan, declared, body.len());
        let signed = Self::sign("PUT", key, headers, payload_mode(plan));
        let (status, answer) = self.call("PUT", key, signed.headers, body);
        (status, text(&answer))
    }

    /// GetObject: the bytes, or None for a missing key.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.request("GET", key);
        match status {
            200 => Some(body),
            404 => None,
            s => panic!("GET {key}: {s} {}", String::from_utf8_lossy(&body)),
        }
    }

    /// A bodiless request, signed.
    fn request(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        let headers = vec![
            ("host".to_owned(), HOST.to_owned()),
            ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()),
        ];
        let signed = Self::sign(method, path, headers, "UNSIGNED-PAYLOAD");
        self.call(method, path, signed.headers, Vec::new())
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let req = req.body(Body::from(body)).expect("request");
        self.rt.block_on(async {
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            (status, bytes)
        })
    }
}
