//! A Hugging Face Hub façade: `HF_ENDPOINT=http://localhost:9000 huggingface-cli download
//! ORG/MODEL` and `huggingface_hub.snapshot_download` read repositories from one bucket
//! (`--hf-bucket`), laid out by repository and revision:
//!
//! ```text
//! models/ORG/NAME/REVISION/PATH        datasets/ORG/NAME/REVISION/PATH
//! ```
//!
//! The bucket may be any bucket of the node: one filled with `aws s3 sync`, or one that fronts
//! an S3 origin (another s3swarm node, a cloud bucket), so a cluster reads each file from the
//! origin once. The Hub's endpoints the client uses are answered from listings and reads of
//! that bucket:
//!
//! - `GET /api/{models,datasets}/REPO[/revision/REV]`: the repository's info, its files
//!   (`siblings`) and a commit id (`sha`): 40 hex digits of a digest of the revision's keys,
//!   sizes and ETags, so it changes when a file does;
//! - `GET /api/{models,datasets}/REPO/tree/REV[/PATH]`: its files (and folders unless
//!   `recursive=true`);
//! - `HEAD`/`GET /[datasets/]REPO/resolve/REV/PATH`: a file, with `X-Repo-Commit`, `ETag`,
//!   ranges.
//!
//! A commit id names the revision it was computed for on this node (the client asks for files
//! by it); a revision directory may also itself be named by a 40-hex commit. The façade reads
//! the bucket as its owner and answers unsigned requests: anyone who can reach the port may
//! read the bucket through it, unless `--hf-token` is set (then `Authorization: Bearer TOKEN`
//! is required). Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound,
//! EntryNotFound), so the client raises its usual exceptions.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use s3s::dto::*;
use s3s::{S3, S3Request};

use crate::s3::Gateway;

/// Files of one revision listed at most.
const MAX_FILES: usize = 100_000;
/// How long a revision's commit id is reused for the file reads that follow its info.
const COMMIT_FRESH: Duration = Duration::from_secs(10);

/// A repository type and its directory in the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Model,
    Dataset,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Model => "models",
            Kind::Dataset => "datasets",
        }
    }
}

/// What a request asks of the Hub.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Info {
        kind: Kind,
        repo: String,
        rev: String,
    },
    Tree {
        kind: Kind,
        repo: String,
        rev: String,
        path: String,
    },
    Resolve {
        kind: Kind,
        repo: String,
        rev: String,
        file: String,
    },
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// A repository id of one or two segments (`gpt2`, `org/name`), none of them empty or a dot.
fn repo_of(segs: &[&str]) -> Option<String> {
    if segs.is_empty() || segs.len() > 2 {
        return None;
    }
    let parts: Vec<String> = segs.iter().map(|s| decode(s)).collect::<Option<_>>()?;
    parts
        .iter()
        .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('/'))
        .then(|| parts.join("/"))
}

/// A revision: one segment once decoded (`refs/pr/1` arrives as `refs%2Fpr%2F1` and is kept
/// as one directory name).
fn rev_of(s: &str) -> Option<String> {
    decode(s).filter(|r| !r.is_empty() && r != "." && r != "..")
}

/// A path inside a repository: segments joined, none empty or a dot.
fn path_of(segs: &[&str]) -> Option<String> {
    let parts: Vec<String> = segs.iter().map(|s| decode(s)).collect::<Option<_>>()?;
    parts
        .iter()
        .all(|p| !p.is_empty() && p != "." && p != "..")
        .then(|| parts.join("/"))
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["api", kinds, rest @ ..] = segs.as_slice() {
        let kind = match *kinds {
            "models" => Kind::Model,
            "datasets" => Kind::Dataset,
            _ => return None,
        };
        let at = rest.iter().position(|s| *s == "revision" || *s == "tree");
        return match at {
            None => Some(Route::Info {
                kind,
                repo: repo_of(rest)?,
                rev: "main".into(),
            }),
            Some(i) if rest[i] == "revision" && rest.len() == i + 2 => Some(Route::Info {
                kind,
                repo: repo_of(&rest[..i])?,
                rev: rev_of(rest[i + 1])?,
            }),
            Some(i) if rest[i] == "tree" && rest.len() >= i + 2 => Some(Route::Tree {
                kind,
                repo: repo_of(&rest[..i])?,
                rev: rev_of(rest[i + 1])?,
                path: if rest.len() > i + 2 {
                    path_of(&rest[i + 2..])?
                } else {
                    String::new()
                },
            }),
            _ => None,
        };
    }
    let (kind, segs) = match segs.as_slice() {
        ["datasets", rest @ ..] => (Kind::Dataset, rest),
        rest => (Kind::Model, rest),
    };
    let i = segs.iter().position(|s| *s == "resolve")?;
    if segs.len() < i + 3 {
        return None;
    }
    Some(Route::Resolve {
        kind,
        repo: repo_of(&segs[..i])?,
        rev: rev_of(segs[i + 1])?,
        file: path_of(&segs[i + 2..])?,
    })
}

/// Whether a request is for the façade: it is on, the request is not signed for S3, and its
/// path is one of the Hub's.
pub fn wants(
    facade: Option<&Facade>,
    method: &Method,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> bool {
    let Some(_) = facade else { return false };
    let signed = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| !v.as_bytes().starts_with(b"Bearer "))
        || uri
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("Signature="));
    (method == Method::GET || method == Method::HEAD) && !signed && route(uri.path()).is_some()
}

/// The commit id of a revision: what it holds, digested.
fn commit_id(rev: &str, files: &[(String, u64, String)]) -> String {
    let mut h = blake3::Hasher::new_derive_key("s3swarm hf commit 1");
    h.update(rev.as_bytes());
    for (k, size, etag) in files {
        for part in [k.as_bytes(), &size.to_le_bytes(), etag.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    hex::encode(&h.finalize().as_bytes()[..20])
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40
        && rev
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

struct Commit {
    kind: Kind,
    repo: String,
    rev: String,
    sha: String,
    at: Instant,
}

/// The façade of one node.
pub struct Facade {
    gateway: Gateway,
    bucket: String,
    token: Option<String>,
    /// Commit ids computed here, by id (what files are asked by) and by revision.
    commits: Mutex<Vec<Commit>>,
}

fn hub_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(code) {
        r.headers_mut().insert("x-error-code", v);
    }
    r
}

fn request<T>(input: T, method: Method) -> S3Request<T> {
    S3Request {
        input,
        method,
        uri: http::Uri::from_static("/"),
        headers: HeaderMap::new(),
        extensions: Default::default(),
        credentials: None,
        region: None,
        service: None,
        trailing_headers: None,
    }
}

impl Facade {
    pub fn new(gateway: Gateway, bucket: String, token: Option<String>) -> Self {
        Self {
            gateway,
            bucket,
            token,
            commits: Mutex::new(Vec::new()),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Answers a request [`wants`] accepted.
    pub async fn serve(&self, method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Response {
        if let Some(t) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            // blake3's `Hash` compares in constant time.
            let ok =
                given.is_some_and(|g| blake3::hash(g.as_bytes()) == blake3::hash(t.as_bytes()));
            if !ok {
                return hub_error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "This s3swarm node's Hub endpoint needs its token (Authorization: Bearer)",
                );
            }
        }
        let Some(r) = route(uri.path()) else {
            return hub_error(StatusCode::NOT_FOUND, "NotFound", "No such Hub endpoint");
        };
        let recursive = uri.query().is_some_and(|q| {
            q.split('&')
                .any(|p| p == "recursive=true" || p == "recursive=True")
        });
        match r {
            Route::Info { kind, repo, rev } => self.info(kind, &repo, &rev).await,
            Route::Tree {
                kind,
                repo,
                rev,
                path,
            } => self.tree(kind, &repo, &rev, &path, recursive).await,
            Route::Resolve {
                kind,
                repo,
                rev,
                file,
            } => {
                self.resolve(method, headers, kind, &repo, &rev, &file)
                    .await
            }
        }
    }

    /// The revision a commit id computed here names, else `rev` itself.
    fn revision(&self, kind: Kind, repo: &str, rev: &str) -> String {
        if is_commit(rev)
            && let Ok(c) = self.commits.lock()
            && let Some(c) = c
                .iter()
                .rev()
                .find(|c| c.sha == rev && c.kind == kind && c.repo == repo)
        {
            return c.rev.clone();
        }
        rev.to_owned()
    }

    fn prefix(kind: Kind, repo: &str, rev: &str) -> String {
        format!("{}/{repo}/{rev}/", kind.dir())
    }

    /// Every file under `prefix` (key, size, ETag), or the S3 error.
    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<(String, u64, String)>, Vec<String>), s3s::S3Error> {
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        let mut token = None;
        loop {
            let input = ListObjectsV2Input {
                bucket: self.bucket.clone(),
                prefix: Some(prefix.to_owned()),
                delimiter: delimiter.map(str::to_owned),
                continuation_token: token.take(),
                ..Default::default()
            };
            let out = self
                .gateway
                .list_objects_v2(request(input, Method::GET))
                .await?
                .output;
            for o in out.contents.unwrap_or_default() {
                if let Some(k) = o.key {
                    let etag = o.e_tag.map(|e| e.value().to_owned()).unwrap_or_default();
                    files.push((k, o.size.unwrap_or(0).max(0) as u64, etag));
                }
            }
            dirs.extend(
                out.common_prefixes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.prefix),
            );
            match out.next_continuation_token {
                Some(t) if out.is_truncated == Some(true) && files.len() < MAX_FILES => {
                    token = Some(t)
                }
                _ => return Ok((files, dirs)),
            }
        }
    }

    /// The revision's files (paths inside the repo) and commit id; `Err` is the answer.
    async fn snapshot(
        &self,
        kind: Kind,
        repo: &str,
        rev: &str,
    ) -> Result<(Vec<(String, u64, String)>, String), Response> {
        let rev = self.revision(kind, repo, rev);
        let prefix = Self::prefix(kind, repo, &rev);
        let (files, _) = self.list(&prefix, None).await.map_err(|e| s3_failure(&e))?;
        if files.is_empty() {
            let repo_prefix = format!("{}/{repo}/", kind.dir());
            let (_, revs) = self
                .list(&repo_prefix, Some("/"))
                .await
                .map_err(|e| s3_failure(&e))?;
            return Err(if revs.is_empty() {
                hub_error(
                    StatusCode::NOT_FOUND,
                    "RepoNotFound",
                    &format!("Repository {repo} not found"),
                )
            } else {
                hub_error(
                    StatusCode::NOT_FOUND,
                    "RevisionNotFound",
                    &format!("Revision {rev} not found in {repo}"),
                )
            });
        }
        let files: Vec<(String, u64, String)> = files
            .into_iter()
            .filter_map(|(k, s, e)| Some((k.strip_prefix(&prefix)?.to_owned(), s, e)))
            .collect();
        let sha = if is_commit(&rev) {
            rev.clone()
        } else {
            commit_id(&rev, &files)
        };
        if let Ok(mut c) = self.commits.lock() {
            c.retain(|c| c.at.elapsed() < Duration::from_secs(3600));
            if c.len() > 10_000 {
                c.remove(0);
            }
            c.push(Commit {
                kind,
                repo: repo.to_owned(),
                rev,
                sha: sha.clone(),
                at: Instant::now(),
            });
        }
        Ok((files, sha))
    }

    async fn info(&self, kind: Kind, repo: &str, rev: &str) -> Response {
        let (files, sha) = match self.snapshot(kind, repo, rev).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|(p, _, _)| serde_json::json!({ "rfilename": p }))
            .collect();
        let body = serde_json::json!({
            "_id": sha,
            "id": repo,
            "modelId": repo,
            "author": repo.split_once('/').map(|(a, _)| a),
            "sha": sha,
            "private": false,
            "disabled": false,
            "gated": false,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        });
        json(body)
    }

    async fn tree(
        &self,
        kind: Kind,
        repo: &str,
        rev: &str,
        path: &str,
        recursive: bool,
    ) -> Response {
        let (files, _) = match self.snapshot(kind, repo, rev).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let under = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut entries = Vec::new();
        let mut dirs = std::collections::BTreeSet::new();
        for (p, size, etag) in &files {
            let Some(rest) = p.strip_prefix(&under) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) if !recursive => {
                    dirs.insert(format!("{under}{dir}"));
                }
                _ => entries.push(serde_json::json!({
                    "type": "file", "path": p, "size": size, "oid": etag,
                })),
            }
        }
        if entries.is_empty() && dirs.is_empty() && !path.is_empty() {
            return hub_error(
                StatusCode::NOT_FOUND,
                "EntryNotFound",
                &format!("{path} not found in {repo}"),
            );
        }
        let mut out: Vec<serde_json::Value> = dirs
            .into_iter()
            .map(|d| serde_json::json!({ "type": "directory", "path": d, "oid": "" }))
            .collect();
        out.extend(entries);
        json(serde_json::Value::Array(out))
    }

    /// The commit id of `rev` for a file read: the one just computed for its info when the
    /// client asks by branch, else computed now.
    async fn commit_for(&self, kind: Kind, repo: &str, rev: &str) -> Result<String, Response> {
        if is_commit(rev) {
            return Ok(rev.to_owned());
        }
        if let Ok(c) = self.commits.lock()
            && let Some(c) = c.iter().rev().find(|c| {
                c.kind == kind && c.repo == repo && c.rev == rev && c.at.elapsed() < COMMIT_FRESH
            })
        {
            return Ok(c.sha.clone());
        }
        self.snapshot(kind, repo, rev).await.map(|(_, sha)| sha)
    }

    async fn resolve(
        &self,
        method: &Method,
        headers: &HeaderMap,
        kind: Kind,
        repo: &str,
        rev: &str,
        file: &str,
    ) -> Response {
        let sha = match self.commit_for(kind, repo, rev).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let key = format!(
            "{}{file}",
            Self::prefix(kind, repo, &self.revision(kind, repo, rev))
        );
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(Range::parse)
            .transpose();
        let range = match range {
            Ok(r) => r,
            Err(_) => {
                return hub_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "Bad Range header",
                );
            }
        };
        // HEAD asks for metadata only: on an origin bucket a GET would start fetching pieces.
        let (length, etag, content_range, content_type, body) = if method == Method::HEAD {
            let input = HeadObjectInput {
                bucket: self.bucket.clone(),
                key,
                ..Default::default()
            };
            match self.gateway.head_object(request(input, Method::HEAD)).await {
                Ok(r) => {
                    let o = r.output;
                    (
                        o.content_length,
                        o.e_tag,
                        None,
                        o.content_type,
                        Body::empty(),
                    )
                }
                Err(e) => return s3_failure(&e),
            }
        } else {
            let input = GetObjectInput {
                bucket: self.bucket.clone(),
                key,
                range,
                ..Default::default()
            };
            match self.gateway.get_object(request(input, Method::GET)).await {
                Ok(r) => {
                    let o = r.output;
                    let body = o.body.map_or_else(Body::empty, Body::from_stream);
                    (
                        o.content_length,
                        o.e_tag,
                        o.content_range,
                        o.content_type,
                        body,
                    )
                }
                Err(e) => return s3_failure(&e),
            }
        };
        let mut resp = Response::builder()
            .status(if content_range.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            })
            .header(header::ACCEPT_RANGES, "bytes")
            .header("x-repo-commit", sha);
        if let Some(n) = length {
            resp = resp.header(header::CONTENT_LENGTH, n);
        }
        if let Some(e) = &etag {
            resp = resp.header(header::ETAG, format!("\"{}\"", e.value()));
        }
        if let Some(c) = &content_range {
            resp = resp.header(header::CONTENT_RANGE, c);
        }
        if let Some(t) = &content_type {
            resp = resp.header(header::CONTENT_TYPE, t.to_string());
        }
        resp.body(body).unwrap_or_else(|e| {
            tracing::error!(error = %e, "building a Hub file answer failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        })
    }
}

fn json(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// An S3 error as the Hub would say it.
fn s3_failure(e: &s3s::S3Error) -> Response {
    let code = e.code().as_str();
    let msg = e.message().unwrap_or(code);
    match code {
        "NoSuchKey" => hub_error(StatusCode::NOT_FOUND, "EntryNotFound", msg),
        "NoSuchBucket" => hub_error(StatusCode::NOT_FOUND, "RepoNotFound", msg),
        "InvalidRange" => hub_error(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange", msg),
        _ => hub_error(
            e.status_code().unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            code,
            msg,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hubs_paths_are_routed() {
        assert_eq!(
            route("/api/models/org/llm"),
            Some(Route::Info {
                kind: Kind::Model,
                repo: "org/llm".into(),
                rev: "main".into()
            })
        );
        assert_eq!(
            route("/api/datasets/org/set/revision/refs%2Fpr%2F1"),
            Some(Route::Info {
                kind: Kind::Dataset,
                repo: "org/set".into(),
                rev: "refs/pr/1".into()
            })
        );
        assert_eq!(
            route("/api/models/gpt2/tree/main/sub/dir"),
            Some(Route::Tree {
                kind: Kind::Model,
                repo: "gpt2".into(),
                rev: "main".into(),
                path: "sub/dir".into()
            })
        );
        assert_eq!(
            route("/org/llm/resolve/main/weights/model%20a.safetensors"),
            Some(Route::Resolve {
                kind: Kind::Model,
                repo: "org/llm".into(),
                rev: "main".into(),
                file: "weights/model a.safetensors".into()
            })
        );
        assert_eq!(
            route("/datasets/org/set/resolve/main/train.parquet").map(|r| matches!(
                r,
                Route::Resolve {
                    kind: Kind::Dataset,
                    ..
                }
            )),
            Some(true)
        );
        for bad in [
            "/bucket/key",
            "/api/spaces/org/x",
            "/a/b/c/resolve/main/f",
            "/org/llm/resolve/main/../../etc",
            "/org/llm/resolve/main",
            "/api/models/org/llm/revision",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_commit_id_changes_with_any_file() {
        let a = vec![("config.json".to_owned(), 10, "e1".to_owned())];
        let b = vec![("config.json".to_owned(), 10, "e2".to_owned())];
        let id = commit_id("main", &a);
        assert!(is_commit(&id));
        assert_ne!(id, commit_id("main", &b));
        assert_ne!(id, commit_id("v1", &a));
        assert_eq!(id, commit_id("main", &a));
    }
}
