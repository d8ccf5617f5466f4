"""S3 depth through boto3 and the aws CLI: versioning, tagging, copies (incl. UploadPartCopy via
boto3's managed copy), checksum mode, conditional writes, and awkward keys."""

import base64
import os
import zlib

import botocore
import pytest
from boto3.s3.transfer import TransferConfig

MIB = 1024 * 1024


def test_versioning_history_markers_and_deletes(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="f", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="f", Body=b"two")["VersionId"]
    assert v1 != v2
    assert s3.get_object(Bucket=bucket, Key="f", VersionId=v1)["Body"].read() == b"one"
    got = s3.get_object(Bucket=bucket, Key="f")
    assert got["Body"].read() == b"two" and got["VersionId"] == v2

    marker = s3.delete_object(Bucket=bucket, Key="f")
    assert marker["DeleteMarker"] is True
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="f")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"

    listed = s3.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in listed["Versions"]] == [v2, v1]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker["VersionId"], True)]

    # Undelete by removing the marker, then remove a version for good.
    s3.delete_object(Bucket=bucket, Key="f", VersionId=marker["VersionId"])
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="f", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"one"

    # boto3's paginator walks versions with key and version-id markers.
    for i in range(5):
        s3.put_object(Bucket=bucket, Key="p", Body=b"%d" % i)
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="p", PaginationConfig={"PageSize": 2})
    ids = [v["VersionId"] for page in pages for v in page.get("Versions", [])]
    assert len(ids) == 5 and len(set(ids)) == 5

    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="f", VersionId="bogus")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"


def test_never_versioned_bucket_lists_null_versions(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    v = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [(x["Key"], x["VersionId"], x["IsLatest"]) for x in v] == [("k", "null", True)]


def test_tagging(s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="team=ml&stage=eval")
    tags = s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("stage", "eval"), ("team", "ml")]
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "a", "Value": "b"}]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "aws:x", "Value": "b"}]})
    assert e.value.response["Error"]["Code"] == "InvalidTag"
    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []


def test_managed_copy_uses_upload_part_copy(s3, bucket):
    body = os.urandom(20 * MIB + 12345)
    s3.put_object(Bucket=bucket, Key="src", Body=body)
    # Below the object size, so boto3 copies with CreateMultipartUpload + UploadPartCopy.
    cfg = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    s3.copy({"Bucket": bucket, "Key": "src"}, bucket, "dst", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["ETag"].endswith('-3"'), head["ETag"]
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == body
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_checksum_mode_returns_what_was_uploaded(s3, bucket):
    body = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="c", Body=body, ChecksumAlgorithm="CRC32")
    want = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    h = s3.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert h["ChecksumCRC32"] == want
    assert h["ChecksumType"] == "FULL_OBJECT"
    g = s3.get_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert g["ChecksumCRC32"] == want
    g["Body"].read()
    attrs = s3.get_object_attributes(Bucket=bucket, Key="c", ObjectAttributes=["Checksum", "ObjectSize", "ETag"])
    assert attrs["Checksum"]["ChecksumCRC32"] == want and attrs["ObjectSize"] == len(body)

    # A multipart upload through upload_fileobj (boto3 sends CRC32 per part).
    big = os.urandom(18 * MIB)
    cfg = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    import io

    s3.upload_fileobj(io.BytesIO(big), bucket, "mp", Config=cfg, ExtraArgs={"ChecksumAlgorithm": "CRC32"})
    h = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert "ChecksumCRC32" in h, h
    if h["ChecksumType"] == "FULL_OBJECT":
        assert h["ChecksumCRC32"] == base64.b64encode(zlib.crc32(big).to_bytes(4, "big")).decode()
    else:
        assert h["ChecksumCRC32"].endswith("-3")


def test_conditional_writes(s3, bucket):
    r = s3.put_object(Bucket=bucket, Key="c", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="c", Body=b"2", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3.put_object(Bucket=bucket, Key="c", Body=b"3", IfMatch=r["ETag"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="c", Body=b"4", IfMatch=r["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=s3.head_object(Bucket=bucket, Key="c")["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


def test_a_write_refused_before_its_body_does_not_swallow_the_next_request(node, http_s3):
    """`Expect: 100-continue`, refused (412) before the body is read: a client may then skip
    the body (botocore does), so the node must close the connection, not read the first
    bytes of the next request on it as that body (which turned `GET` into `ET`)."""
    import socket
    import urllib.parse

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    name = "expect-continue-refused"
    http_s3.create_bucket(Bucket=name)
    http_s3.put_object(Bucket=name, Key="k", Body=b"1")
    url = f"{node.endpoint}/{name}/k"
    req = AWSRequest("PUT", url, data=b"x", headers={"If-None-Match": "*", "Expect": "100-continue"})
    req.headers["X-Amz-Content-SHA256"] = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    creds = http_s3._request_signer._credentials
    SigV4Auth(creds, "s3", http_s3.meta.region_name).add_auth(req)
    u = urllib.parse.urlsplit(node.endpoint)
    head = f"PUT /{name}/k HTTP/1.1\r\nHost: {u.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items()) + "Content-Length: 1\r\n\r\n"
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        # The head, and straight after it (no body) the next request, as a client that
        # pipelines or skips the body after a final answer would.
        sock.sendall(head.encode() + f"GET /healthz HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
        got = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 412"), got[:200]
    assert b"connection: close" in first.lower(), first
    # The connection closed after the refusal: the rest of what arrived is that answer's body.
    assert b"HTTP/1.1" not in rest, got
    assert http_s3.get_object(Bucket=name, Key="k")["Body"].read() == b"1"


AWKWARD = ["with space", "ünïcödé/ключ", "plus+sign", "per%25cent", "a//double//slash", "q?x=1&y", "tab\tkey"]


def test_awkward_keys_round_trip(s3, bucket):
    for k in AWKWARD:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(listed) == sorted(AWKWARD)
    listed_v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    assert sorted(listed_v1) == sorted(AWKWARD)
    for k in AWKWARD:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode()
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in AWKWARD]})
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
