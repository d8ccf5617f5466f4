"""POST Object: browser-form uploads with a policy signed by boto3's generate_presigned_post,
sent as multipart/form-data with urllib3, as a browser would."""

import hashlib
import hmac
import os
import socket
import time
import urllib.request

import pytest
import urllib3
from conftest import SECRET_KEY, start_node

FORM_HEAD = (
    b'--XB\r\nContent-Disposition: form-data; name="key"\r\n\r\nuploads/stalled.bin\r\n'
)

POST_MAX = 256 * 1024


@pytest.fixture(scope="module")
def v4(node):
    """generate_presigned_post signs with SigV2 unless told otherwise; browsers' forms today
    are SigV4 (x-amz-algorithm, x-amz-credential, x-amz-date, x-amz-signature)."""
    return node.client(signature_version="s3v4")


@pytest.fixture(scope="module")
def small_post_node():
    """A node whose POST uploads are capped at 256 KiB (`--post-max-size`)."""
    yield from start_node(extra_args=("--post-max-size", str(POST_MAX)))


def post_form(post: dict, data: bytes, key: str | None = None, extra: dict | None = None, filename="f.bin"):
    fields = dict(post["fields"])
    if key is not None:
        fields["key"] = key
    fields.update(extra or {})
    # The file must be the form's last field.
    form = list(fields.items()) + [("file", (filename, data, "application/octet-stream"))]
    return urllib3.PoolManager().request("POST", post["url"], fields=form)


def resigned(fields: dict, policy: str) -> dict:
    """`fields` with another policy, signed with the test key as the SigV4 form rules say
    (so a test can send a policy boto3 would never produce)."""
    _, date, region, service, term = fields["x-amz-credential"].split("/")
    key = ("AWS4" + SECRET_KEY).encode()
    for part in (date, region, service, term):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
    return dict(fields, policy=policy, **{"x-amz-signature": sig})


def error_code(resp) -> str:
    body = resp.data.decode(errors="replace")
    start = body.find("<Code>")
    return body[start + 6 : body.find("</Code>")] if start >= 0 else body


def keys(s3, bucket):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def presigned(s3, bucket, key="uploads/${filename}", max_len=1_000_000, expires=300, conditions=()):
    post = s3.generate_presigned_post(
        Bucket=bucket,
        Key=key,
        Conditions=[["content-length-range", 1, max_len], *conditions],
        ExpiresIn=expires,
    )
    assert post["fields"]["x-amz-algorithm"] == "AWS4-HMAC-SHA256", post
    return post


def test_form_upload_stores_the_object(v4):
    v4.create_bucket(Bucket="post-ok")
    data = os.urandom(100_000)
    r = post_form(presigned(v4, "post-ok"), data, key="uploads/photo.bin")
    assert r.status == 204, r.data
    got = v4.get_object(Bucket="post-ok", Key="uploads/photo.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()


def test_policy_violations_are_refused_and_store_nothing(v4):
    v4.create_bucket(Bucket="post-bad")
    post = presigned(v4, "post-bad", max_len=1000)
    cases = [
        ("key outside the policy's prefix", dict(key="elsewhere/x.bin"), b"x" * 10, 403, "AccessDenied"),
        ("file above content-length-range", dict(key="uploads/big.bin"), b"x" * 1001, 400, "EntityTooLarge"),
        ("file below content-length-range", dict(key="uploads/empty.bin"), b"", 400, "EntityTooSmall"),
        (
            "a field the policy does not cover",
            dict(key="uploads/meta.bin", extra={"x-amz-meta-owner": "mallory"}),
            b"x" * 10,
            403,
            "AccessDenied",
        ),
    ]
    for what, kw, data, status, code in cases:
        r = post_form(post, data, **kw)
        assert (r.status, error_code(r)) == (status, code), f"{what}: {r.data!r}"
        if what.startswith("key outside"):
            # S3's wording, which browser code matches on.
            assert b"Invalid according to Policy: Policy Condition failed" in r.data, r.data
    # A policy that is not a policy at all stays InvalidPolicyDocument, as in S3.
    garbled = dict(post, fields=resigned(post["fields"], "bm90IGpzb24="))
    r = post_form(garbled, b"x" * 10, key="uploads/g.bin")
    assert (r.status, error_code(r)) == (400, "InvalidPolicyDocument"), r.data
    tampered = dict(post, fields=dict(post["fields"]))
    sig = tampered["fields"]["x-amz-signature"]
    tampered["fields"]["x-amz-signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    r = post_form(tampered, b"x" * 10, key="uploads/t.bin")
    assert (r.status, error_code(r)) == (403, "SignatureDoesNotMatch"), r.data
    assert keys(v4, "post-bad") == []
    # The same policy, obeyed, works: the refusals above were about the violations.
    assert post_form(post, b"x" * 10, key="uploads/fine.bin").status == 204
    assert keys(v4, "post-bad") == ["uploads/fine.bin"]


def test_expired_policy_is_refused(v4):
    v4.create_bucket(Bucket="post-expired")
    post = presigned(v4, "post-expired", expires=1)
    time.sleep(2.1)
    r = post_form(post, b"late", key="uploads/late.bin")
    assert (r.status, error_code(r)) == (403, "AccessDenied"), r.data
    assert b"expired" in r.data
    assert keys(v4, "post-expired") == []


def test_post_max_size_bounds_a_form_upload_whatever_the_policy_allows(small_post_node):
    s3 = small_post_node.client(signature_version="s3v4")
    s3.create_bucket(Bucket="post-capped")
    post = presigned(s3, "post-capped", max_len=100 * 1024 * 1024)
    r = post_form(post, os.urandom(POST_MAX + 1), key="uploads/over.bin")
    assert (r.status, error_code(r)) == (400, "EntityTooLarge"), r.data
    assert keys(s3, "post-capped") == []
    r = post_form(post, os.urandom(POST_MAX), key="uploads/at-limit.bin")
    assert r.status == 204, r.data
    assert keys(s3, "post-capped") == ["uploads/at-limit.bin"]


def in_flight(node) -> float:
    with urllib.request.urlopen(node.endpoint + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("s3swarm_s3_requests_in_flight "):
                return float(line.split()[1])
    raise AssertionError("no in-flight gauge")


def stalled_form(node, bucket: str, head: bytes) -> socket.socket:
    """A form POST that declares the largest allowed body (64 MiB file plus fields), sends
    `head` and then nothing more."""
    host, port = node.endpoint.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(
        b"POST /%s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: multipart/form-data; boundary=XB\r\n"
        b"Content-Length: %d\r\n\r\n" % (bucket.encode(), host.encode(), port.encode(), 65 * 1024 * 1024)
        + head
    )
    return s


def test_stalled_unsigned_forms_hold_no_memory_and_signed_forms_go_ahead(node, v4):
    """The memory a form's file may take (four maximal forms at once) is reserved only after
    the form's signature is checked. Tried: six connections declaring 65 MiB forms, five
    stalled before their signature fields arrive and one sending a wrong signature; a signed
    form sent meanwhile is stored at once. Before, the stalled ones held the whole budget and
    the signed form waited behind them."""
    v4.create_bucket(Bucket="post-stall")
    before = in_flight(node)
    stalled = [stalled_form(node, "post-stall", FORM_HEAD) for _ in range(5)]
    forged = stalled_form(
        node,
        "post-stall",
        FORM_HEAD
        + b'--XB\r\nContent-Disposition: form-data; name="policy"\r\n\r\neyJ9\r\n'
        + b'--XB\r\nContent-Disposition: form-data; name="x-amz-credential"\r\n\r\n'
        + b"%s/20261207/us-east-1/s3/aws4_request\r\n" % v4._request_signer._credentials.access_key.encode()
        + b'--XB\r\nContent-Disposition: form-data; name="x-amz-signature"\r\n\r\n' + b"ab" * 32 + b"\r\n"
        + b'--XB\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n',
    )
    try:
        # The forged form is refused as soon as its file begins (the rest of its body is
        # read and dropped, so it stays in flight until the drain's bound): its answer is
        # not awaited here. The six are in flight before the signed form is sent.
        deadline = time.time() + 10
        while in_flight(node) < before + 6:
            assert time.time() < deadline, "the stalled forms never reached the server"
            time.sleep(0.05)
        data = os.urandom(50_000)
        started = time.time()
        r = urllib3.PoolManager().request(
            "POST",
            presigned(v4, "post-stall")["url"],
            fields=list(presigned(v4, "post-stall", key="uploads/real.bin")["fields"].items())
            + [("file", ("f.bin", data, "application/octet-stream"))],
            timeout=urllib3.Timeout(total=10),
            retries=False,
        )
        assert r.status == 204, r.data
        assert time.time() - started < 5
        assert v4.get_object(Bucket="post-stall", Key="uploads/real.bin")["Body"].read() == data
    finally:
        for s in stalled + [forged]:
            s.close()
    assert keys(v4, "post-stall") == ["uploads/real.bin"]
