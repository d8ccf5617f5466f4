"""S3's limits, with S3's errors, through boto3: user metadata at most 2 KiB, a PUT's header
section at most 8 KiB, configuration documents at most 64 KiB, and incomplete multipart
uploads expire (`--multipart-expiry-secs`)."""

import os
import time

import pytest
from botocore.exceptions import ClientError
from conftest import start_node


@pytest.fixture(scope="module")
def s3(node):
    return node.client(retries={"max_attempts": 1})


def error(e: ClientError) -> tuple[int, str]:
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]


def test_user_metadata_is_at_most_2_kib_and_nothing_is_stored_past_it(s3):
    s3.create_bucket(Bucket="meta-limit")
    body = os.urandom(3 << 20)  # sent whole before the answer: the client must still see it
    s3.put_object(Bucket="meta-limit", Key="fits", Body=b"x", Metadata={"k": "v" * 2047})
    assert s3.head_object(Bucket="meta-limit", Key="fits")["Metadata"] == {"k": "v" * 2047}
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="meta-limit", Key="over", Body=body, Metadata={"k": "v" * 2048})
    assert error(e.value) == (400, "MetadataTooLarge")
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket="meta-limit", Key="over-mpu", Metadata={"a": "b" * 1500, "c": "d" * 1500})
    assert error(e.value) == (400, "MetadataTooLarge")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="meta-limit").get("Contents", [])]
    assert keys == ["fits"]
    assert s3.list_multipart_uploads(Bucket="meta-limit").get("Uploads", []) == []


def test_a_put_header_section_is_at_most_8_kib(s3):
    s3.create_bucket(Bucket="header-limit")

    def big_headers(request, **_):
        for i in range(9):
            request.headers[f"x-filler-{i}"] = "z" * 1000

    s3.meta.events.register("before-sign.s3.PutObject", big_headers)
    try:
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="header-limit", Key="k", Body=b"x")
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", big_headers)
    assert error(e.value) == (400, "RequestHeaderSectionTooLarge")


def test_configuration_documents_are_at_most_64_kib(s3):
    s3.create_bucket(Bucket="cors-limit")
    rule = lambda i: {"AllowedMethods": ["GET"], "AllowedOrigins": [f"https://{'a' * 900}{i}.example"]}  # noqa: E731
    s3.put_bucket_cors(Bucket="cors-limit", CORSConfiguration={"CORSRules": [rule(i) for i in range(50)]})
    with pytest.raises(ClientError) as e:
        s3.put_bucket_cors(Bucket="cors-limit", CORSConfiguration={"CORSRules": [rule(i) for i in range(80)]})
    assert error(e.value) == (400, "MaxMessageLengthExceeded")
    # The configuration in place is the one that fitted.
    assert len(s3.get_bucket_cors(Bucket="cors-limit")["CORSRules"]) == 50


@pytest.fixture(scope="module")
def expiring_node():
    yield from start_node(extra_args=("--multipart-expiry-secs", "2"))


def test_incomplete_multipart_uploads_expire_and_free_their_parts(expiring_node):
    s3 = expiring_node.client(retries={"max_attempts": 1})
    s3.create_bucket(Bucket="mpu-expiry")
    up = s3.create_multipart_upload(Bucket="mpu-expiry", Key="abandoned")["UploadId"]
    s3.upload_part(Bucket="mpu-expiry", Key="abandoned", UploadId=up, PartNumber=1, Body=os.urandom(5 << 20))
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="mpu-expiry")["Uploads"]] == [up]
    deadline = time.time() + 15
    while s3.list_multipart_uploads(Bucket="mpu-expiry").get("Uploads"):
        assert time.time() < deadline, "the upload never expired"
        time.sleep(0.5)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="mpu-expiry", Key="abandoned", UploadId=up, PartNumber=2, Body=b"late")
    assert error(e.value) == (404, "NoSuchUpload")
    # A fresh upload started now completes normally.
    up2 = s3.create_multipart_upload(Bucket="mpu-expiry", Key="done")["UploadId"]
    etag = s3.upload_part(Bucket="mpu-expiry", Key="done", UploadId=up2, PartNumber=1, Body=b"tail")["ETag"]
    s3.complete_multipart_upload(
        Bucket="mpu-expiry", Key="done", UploadId=up2, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert s3.get_object(Bucket="mpu-expiry", Key="done")["Body"].read() == b"tail"
