"""boto3 with default settings (CRC checksums on by default) against a real node."""

import hashlib
import io
import os

import blake3_ref
import botocore
import pytest
from boto3.s3.transfer import TransferConfig


def test_put_get_with_default_checksums(s3, bucket):
    body = os.urandom(300_000)
    r = s3.put_object(Bucket=bucket, Key="a/b.bin", Body=body, Metadata={"Run": "42"}, ContentType="text/x-t")
    assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="a/b.bin")
    assert got["Body"].read() == body
    assert got["Metadata"] == {"run": "42"}
    assert got["ContentType"] == "text/x-t"
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-s3swarm-blake3"] == blake3_ref.hex(body)


@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_every_checksum_algorithm_is_accepted(s3, bucket, alg):
    body = os.urandom(70_000)
    s3.put_object(Bucket=bucket, Key=alg, Body=body, ChecksumAlgorithm=alg)
    assert s3.get_object(Bucket=bucket, Key=alg)["Body"].read() == body


def test_wrong_checksum_header_is_bad_digest(s3, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"hello", ChecksumCRC32="AAAAAA==")
    assert e.value.response["Error"]["Code"] == "BadDigest"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_ranges(s3, bucket):
    body = os.urandom(2_000_000)
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=100-199")["Body"].read() == body[100:200]
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-10")["Body"].read() == body[-10:]
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=1999990-")["Body"].read() == body[1999990:]


def test_multipart_upload_file_and_download(s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(23 * 1024 * 1024))
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=4)
    s3.upload_file(str(src), bucket, "big.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"].endswith('-5"')
    assert head["ContentLength"] == src.stat().st_size
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "big.bin", str(dst), Config=cfg)
    assert dst.read_bytes() == src.read_bytes()


def test_listing_with_delimiter_and_pages(s3, bucket):
    for k in ["x/1", "x/2", "y", "z/deep/3", "sp ace+plus"]:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["sp ace+plus", "y"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["x/", "z/"]
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2})
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys == sorted(["x/1", "x/2", "y", "z/deep/3", "sp ace+plus"])
    # V1 with boto3's default encoding-type=url decoding.
    r = s3.list_objects(Bucket=bucket, Prefix="sp")
    assert [o["Key"] for o in r["Contents"]] == ["sp ace+plus"]


def test_errors_have_s3_codes(s3, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="missing")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="Bad_Name")
    assert e.value.response["Error"]["Code"] == "InvalidBucketName"
    s3.put_object(Bucket=bucket, Key="k", Body=b"1")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "BucketNotEmpty"


def test_presigned_get_with_plain_http(s3, s3_node, bucket):
    import urllib.request

    s3.put_object(Bucket=bucket, Key="p", Body=b"via presigned url")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=60)
    with urllib.request.urlopen(url, context=s3_node.ssl_context()) as r:
        assert r.read() == b"via presigned url"


def test_upload_fileobj_streams_unknown_length(s3, bucket):
    data = os.urandom(7 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(data), bucket, "stream.bin")
    assert s3.get_object(Bucket=bucket, Key="stream.bin")["Body"].read() == data


def test_delete_objects_in_bulk(s3, bucket):
    keys = [f"bulk/{i:04}" for i in range(250)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert len(r["Deleted"]) == 250 and not r.get("Errors")
    assert s3.list_objects_v2(Bucket=bucket, Prefix="bulk/")["KeyCount"] == 0
