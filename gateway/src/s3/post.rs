//! POST Object (browser form uploads). s3s parses the form, checks the SigV4 POST signature,
//! the expiry and the policy's conditions, then calls `put_object`; the form's file is held
//! in memory up to `post_max_size` first (`S3Config::post_object_max_file_size`).
//!
//! One answer is corrected here: s3s reports a failed policy condition as 400
//! InvalidPolicyDocument, S3 as 403 AccessDenied "Invalid according to Policy: Policy
//! Condition failed", and browser code and S3 test suites check for the latter. A policy
//! that cannot be parsed stays InvalidPolicyDocument, as in S3.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode};

/// s3s error bodies are a few hundred bytes; anything larger is not one of them.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The prefix s3s gives every failed-condition message (`post_policy.rs`, s3s 0.14.1).
const CONDITION_FAILED: &str = "<Message>Policy condition ";

/// Whether `req` is a form upload (POST with a multipart body).
pub(crate) fn is_form_post(method: &Method, headers: &http::HeaderMap) -> bool {
    method == Method::POST
        && headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.get(..19)
                    .is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"))
            })
}

/// Rewrites s3s's failed-condition error to S3's; every other response passes unchanged.
pub(crate) async fn as_s3_policy_error(resp: Response) -> Response {
    if resp.status() != StatusCode::BAD_REQUEST {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a POST error body");
            return (StatusCode::BAD_REQUEST, "bad request\n").into_response();
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let detail = text
        .contains("<Code>InvalidPolicyDocument</Code>")
        .then(|| text.split_once(CONDITION_FAILED))
        .flatten()
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map(|(detail, _)| detail);
    let Some(detail) = detail else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    // `detail` is already XML-escaped text from s3s's body.
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Invalid according to Policy: Policy Condition failed: {detail}</Message></Error>"
    );
    let mut out = (StatusCode::FORBIDDEN, body).into_response();
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    out
}
