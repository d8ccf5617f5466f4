"""boto3 over HTTPS: botocore sends its default CRC checksum in an aws-chunked trailer only
over TLS, so this is where trailers get exercised by a stock client."""

import base64
import os
import zlib

import botocore
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from conftest import ACCESS_KEY, SECRET_KEY


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.fixture
def tls_s3(tls_node):
    return tls_node.client()


def test_default_checksum_travels_in_a_trailer_over_https(tls_s3):
    tls_s3.create_bucket(Bucket="trailers")
    sent = {}

    def capture(request, **_):
        sent.update({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    tls_s3.meta.events.register("before-send.s3.PutObject", capture)
    body = os.urandom(200_000)
    r = tls_s3.put_object(Bucket="trailers", Key="k", Body=body)
    tls_s3.meta.events.unregister("before-send.s3.PutObject", capture)
    # The test is only worth something if botocore really used a trailer.
    assert sent.get("x-amz-content-sha256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", sent
    assert sent.get("x-amz-trailer") == "x-amz-checksum-crc32", sent
    assert r["ChecksumCRC32"] == crc32_b64(body)
    got = tls_s3.get_object(Bucket="trailers", Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got["ChecksumCRC32"] == crc32_b64(body)


def signed_trailer_put(node, path: str, data: bytes, trailer_value: str):
    """A PUT as botocore sends it over TLS (unsigned payload, CRC32 trailer), signed with
    SigV4, with a trailer we choose; sent with urllib3 trusting the node's certificate."""
    chunked = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, trailer_value.encode())
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": str(len(data)),
        "content-encoding": "aws-chunked",
        "content-length": str(len(chunked)),
    }
    req = AWSRequest(method="PUT", url=node.endpoint + path, data=chunked, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    http = urllib3.PoolManager(ca_certs=node.ca_bundle, cert_reqs="CERT_REQUIRED")
    return http.request("PUT", req.url, body=chunked, headers=dict(req.headers.items()))


def test_wrong_checksum_trailer_is_refused_and_stores_nothing(tls_node, tls_s3):
    tls_s3.create_bucket(Bucket="bad-trailers")
    data = b"hello over tls"
    good = signed_trailer_put(tls_node, "/bad-trailers/good", data, crc32_b64(data))
    assert good.status == 200, good.data
    bad = signed_trailer_put(tls_node, "/bad-trailers/bad", data, crc32_b64(b"something else"))
    assert bad.status == 400, bad.data
    assert b"<Code>BadDigest</Code>" in bad.data, bad.data
    keys = [o["Key"] for o in tls_s3.list_objects_v2(Bucket="bad-trailers").get("Contents", [])]
    assert keys == ["good"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        tls_s3.head_object(Bucket="bad-trailers", Key="bad")
    assert e.value.response["Error"]["Code"] == "404"
