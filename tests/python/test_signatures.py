"""What a signature covers: unsigned x-amz-* headers, presigned URL lifetimes, SigV2 freshness
and signatures, credential-scope regions (s3cmd's stock `US`), and `/_blob` by hash only for
who may read the object. Real clients: boto3 (SigV4 and SigV2), s3cmd with its stock
configuration, and urllib3 for the requests a client would not send on its own."""

import base64
import email.utils
import hashlib
import hmac
import os
import shutil
import subprocess
import time

import blake3
import boto3
import pytest
import urllib3
from botocore.config import Config
from conftest import ACCESS_KEY, SECRET_KEY, start_node

HTTP = urllib3.PoolManager(retries=False)


def error_code(resp) -> str:
    body = resp.data.decode(errors="replace")
    start = body.find("<Code>")
    return body[start + 6 : body.find("</Code>")] if start >= 0 else body


def exists(s3, bucket, key) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, e.response
        return False


@pytest.fixture(scope="module")
def v4(node):
    return node.client(signature_version="s3v4")


@pytest.fixture(scope="module")
def v2(node):
    """boto3 signing with SigV2 (`Authorization: AWS key:signature`, query `Signature=`)."""
    return node.client(signature_version="s3")


def test_a_presigned_put_url_sent_with_unsigned_amz_headers_is_refused_and_writes_nothing(v4):
    bucket = f"presign-hdr-{os.getpid()}"
    v4.create_bucket(Bucket=bucket)
    v4.put_object(Bucket=bucket, Key="private/secrets.csv", Body=b"salary,1000000\n")
    url = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "upload.bin"}, ExpiresIn=300)

    # The attack of the issue: the upload URL turned into a copy of the signer's secret file.
    r = HTTP.request("PUT", url, body=b"", headers={"x-amz-copy-source": f"{bucket}/private/secrets.csv"})
    assert r.status == 403, r.data
    assert error_code(r) == "AccessDenied"
    assert b"<HeadersNotSigned>x-amz-copy-source</HeadersNotSigned>" in r.data, r.data
    assert not exists(v4, bucket, "upload.bin")

    # Metadata and tags the signer never saw.
    for extra in ({"x-amz-meta-owner": "mallory"}, {"x-amz-tagging": "public=yes"}, {"X-Amz-Storage-Class": "STANDARD"}):
        r = HTTP.request("PUT", url, body=b"data", headers=extra)
        assert r.status == 403 and error_code(r) == "AccessDenied", (extra, r.status, r.data)
    assert not exists(v4, bucket, "upload.bin")

    # The URL itself is good: sent as signed, it uploads.
    r = HTTP.request("PUT", url, body=b"data")
    assert r.status == 200, r.data
    assert v4.get_object(Bucket=bucket, Key="upload.bin")["Body"].read() == b"data"


def test_a_header_signed_request_with_an_amz_header_added_after_signing_is_refused(node, v4):
    bucket = f"late-hdr-{os.getpid()}"
    v4.create_bucket(Bucket=bucket)
    v4.put_object(Bucket=bucket, Key="secret", Body=b"s")
    client = node.client(signature_version="s3v4", retries={"max_attempts": 1})

    def add_unsigned(request, **_):
        request.headers["x-amz-copy-source"] = f"{bucket}/secret"

    client.meta.events.register("before-send.s3.PutObject", add_unsigned)
    with pytest.raises(client.exceptions.ClientError) as e:
        client.put_object(Bucket=bucket, Key="copy", Body=b"")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert not exists(v4, bucket, "copy")


def test_presigned_urls_are_valid_for_at_most_seven_days(v4, v2):
    bucket = f"presign-week-{os.getpid()}"
    v4.create_bucket(Bucket=bucket)
    v4.put_object(Bucket=bucket, Key="k", Body=b"weekly")
    for client in (v4, v2):
        ok = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=604800)
        r = HTTP.request("GET", ok)
        assert r.status == 200 and r.data == b"weekly", (ok, r.data)
        long = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=604801 + 60)
        r = HTTP.request("GET", long)
        assert r.status == 400, (long, r.status, r.data)
        assert error_code(r) == "AuthorizationQueryParametersError", r.data


def sigv2_get(node, path: str, date: str | None, secret: str = SECRET_KEY):
    """A SigV2 header-signed GET with a chosen Date, signed as AWS documents it."""
    string_to_sign = f"GET\n\n\n{date or ''}\n{path}"
    sig = base64.b64encode(hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()
    headers = {"Authorization": f"AWS {ACCESS_KEY}:{sig}"}
    if date is not None:
        headers["Date"] = date
    return HTTP.request("GET", node.endpoint + path, headers=headers)


def test_sigv2_requests_work_and_must_be_fresh_and_correct(node, v2):
    bucket = f"sigv2-{os.getpid()}"
    v2.create_bucket(Bucket=bucket)
    v2.put_object(Bucket=bucket, Key="k", Body=b"v2 bytes")
    assert v2.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2 bytes"
    assert [o["Key"] for o in v2.list_objects(Bucket=bucket)["Contents"]] == ["k"]

    now = time.time()
    fresh = email.utils.formatdate(now, usegmt=True)
    r = sigv2_get(node, f"/{bucket}/k", fresh)
    assert r.status == 200 and r.data == b"v2 bytes", r.data
    # s3cmd's form of the date (numeric zone) is accepted too.
    r = sigv2_get(node, f"/{bucket}/k", time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(now)))
    assert r.status == 200, r.data

    # A captured request replayed 16 minutes later.
    stale = email.utils.formatdate(now - 16 * 60, usegmt=True)
    r = sigv2_get(node, f"/{bucket}/k", stale)
    assert r.status == 403 and error_code(r) == "RequestTimeTooSkewed", r.data
    r = sigv2_get(node, f"/{bucket}/k", None)
    assert r.status == 403 and error_code(r) == "AccessDenied", r.data
    r = sigv2_get(node, f"/{bucket}/k", fresh, secret="not-the-secret")
    assert r.status == 403 and error_code(r) == "SignatureDoesNotMatch", r.data


def test_sigv2_presigned_urls_expire(v2):
    bucket = f"sigv2-url-{os.getpid()}"
    v2.create_bucket(Bucket=bucket)
    v2.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=1)
    assert "Signature=" in url and "AWSAccessKeyId=" in url, url
    time.sleep(2.1)
    r = HTTP.request("GET", url)
    assert r.status == 403 and error_code(r) == "AccessDenied", r.data
    assert b"expired" in r.data


def test_a_credential_region_that_is_no_region_name_is_answered_with_this_nodes_region(node):
    def client(region):
        return boto3.client(
            "s3",
            endpoint_url=node.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=region,
            config=Config(retries={"max_attempts": 1}),
        )

    odd = client("US")  # s3cmd's default bucket_location
    with pytest.raises(odd.exceptions.ClientError) as e:
        odd.list_buckets()
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"]["Code"] == "AuthorizationHeaderMalformed"
    assert err["Error"]["Region"] == "us-east-1", err
    # Any region name signs.
    client("eu-central-2").list_buckets()


@pytest.mark.parametrize("signature_v2", [False, True], ids=["sigv4", "sigv2"])
def test_s3cmd_with_its_stock_configuration(node, tmp_path, signature_v2):
    s3cmd = shutil.which("s3cmd")
    assert s3cmd, "s3cmd is installed by tests/run"
    host = node.endpoint.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    # Only what `s3cmd --configure` asks for; everything else (bucket_location = US, ...) is
    # s3cmd's default.
    cfg.write_text(
        "[default]\n"
        f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
        + ("signature_v2 = True\n" if signature_v2 else "")
    )
    bucket = f"s3cmd-{'v2' if signature_v2 else 'v4'}-{os.getpid()}"
    src = tmp_path / "shard.bin"
    src.write_bytes(os.urandom(300_000))

    def run(*args):
        p = subprocess.run([s3cmd, "-c", str(cfg), *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"s3cmd {' '.join(args)}: {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    run("mb", f"s3://{bucket}")
    assert bucket in run("ls")
    run("put", str(src), f"s3://{bucket}/data/shard.bin")
    assert "data/shard.bin" in run("ls", "-r", f"s3://{bucket}")
    run("get", f"s3://{bucket}/data/shard.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    run("del", f"s3://{bucket}/data/shard.bin")
    run("rb", f"s3://{bucket}")


@pytest.fixture(scope="module")
def two_identity_node(tmp_path_factory):
    """A node with alice (the conftest key) and bob."""
    cfg = tmp_path_factory.mktemp("cfg") / "s3swarm.toml"
    cfg.write_text('[[keys]]\naccess_key = "BOBACCESSKEY"\nsecret_key = "bob-secret-key-0123456789"\n')
    yield from start_node(extra_args=("--config", str(cfg)))


def blob(node, client, hex_hash):
    url = client.generate_presigned_url("get_object", Params={"Bucket": "_blob", "Key": hex_hash}, ExpiresIn=60)
    return HTTP.request("GET", url)


def test_blob_by_hash_serves_only_who_may_read_an_object_with_that_content(two_identity_node):
    alice = two_identity_node.client(signature_version="s3v4")
    bob = boto3.client(
        "s3",
        endpoint_url=two_identity_node.endpoint,
        aws_access_key_id="BOBACCESSKEY",
        aws_secret_access_key="bob-secret-key-0123456789",
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    alice.create_bucket(Bucket="alice-private")
    body = os.urandom(200_000)
    alice.put_object(Bucket="alice-private", Key="weights.bin", Body=body)
    digest = blake3.blake3(body).hexdigest()

    r = blob(two_identity_node, alice, digest)
    assert r.status == 200 and r.data == body

    # Bob learns nothing: the answer is the one for content nobody stores.
    mine = blob(two_identity_node, bob, digest)
    nobody = blob(two_identity_node, bob, blake3.blake3(b"stored nowhere").hexdigest())
    assert mine.status == nobody.status == 404, (mine.data, nobody.data)
    assert error_code(mine) == error_code(nobody) == "NoSuchKey"

    # Once bob stores the same bytes himself, he may fetch them by hash.
    bob.create_bucket(Bucket="bob-own")
    bob.put_object(Bucket="bob-own", Key="same.bin", Body=body)
    r = blob(two_identity_node, bob, digest)
    assert r.status == 200 and r.data == body
    # And when alice deletes hers, her reads by hash stop; bob's go on.
    alice.delete_object(Bucket="alice-private", Key="weights.bin")
    assert blob(two_identity_node, alice, digest).status == 404
    assert blob(two_identity_node, bob, digest).status == 200
