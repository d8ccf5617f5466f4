"""Every checksum algorithm S3 has, against reference implementations written here: the
references pass their published check values, a node stores and returns exactly the value of
the bytes it was sent, and a wrong value is refused with BadDigest and nothing stored."""

import base64
import hashlib
import os
import zlib

import botocore
import pytest


def _table(poly: int) -> list[int]:
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _table(0x82F63B78)
_CRC64NVME = _table(0x9A6C9329AC4BC9B5)


def _reflected(data: bytes, table: list[int], mask: int) -> int:
    c = mask
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ mask


def crc32c(data: bytes) -> bytes:
    return _reflected(data, _CRC32C, 0xFFFFFFFF).to_bytes(4, "big")


def crc64nvme(data: bytes) -> bytes:
    return _reflected(data, _CRC64NVME, 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


REFERENCE = {
    "CRC32": lambda d: zlib.crc32(d).to_bytes(4, "big"),
    "CRC32C": crc32c,
    "CRC64NVME": crc64nvme,
    "SHA1": lambda d: hashlib.sha1(d).digest(),
    "SHA256": lambda d: hashlib.sha256(d).digest(),
}

# The catalogue check values (reveng's CRC-32/ISO-HDLC, CRC-32/ISCSI, CRC-64/NVME) and the
# FIPS 180 digests of "123456789".
CHECK = {
    "CRC32": "cbf43926",
    "CRC32C": "e3069283",
    "CRC64NVME": "ae8b14860a799888",
    "SHA1": "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
    "SHA256": "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
}

ALGORITHMS = list(REFERENCE)


def b64(v: bytes) -> str:
    return base64.b64encode(v).decode()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_reference_implementations_pass_their_check_values(alg):
    assert REFERENCE[alg](b"123456789").hex() == CHECK[alg]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_the_stored_value_is_the_checksum_of_the_bytes_sent(s3, bucket, alg):
    body = os.urandom(70_001)
    want = b64(REFERENCE[alg](body))
    # boto3 computes the value itself here; the node stores what it computed over the body.
    s3.put_object(Bucket=bucket, Key="computed", Body=body, ChecksumAlgorithm=alg)
    h = s3.head_object(Bucket=bucket, Key="computed", ChecksumMode="ENABLED")
    assert h[f"Checksum{alg}"] == want
    g = s3.get_object(Bucket=bucket, Key="computed", ChecksumMode="ENABLED")
    assert g[f"Checksum{alg}"] == want
    assert g["Body"].read() == body
    # The value given by the client, in a header.
    s3.put_object(Bucket=bucket, Key="given", Body=body, **{f"Checksum{alg}": want})
    h = s3.head_object(Bucket=bucket, Key="given", ChecksumMode="ENABLED")
    assert h[f"Checksum{alg}"] == want


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_wrong_value_is_bad_digest_and_nothing_is_stored(s3, bucket, alg):
    body = os.urandom(70_001)
    right = REFERENCE[alg](body)
    wrong = bytes([right[0] ^ 1]) + right[1:]
    for key, value in [("flipped", b64(wrong)), ("of-other-bytes", b64(REFERENCE[alg](body + b"x")))]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_object(Bucket=bucket, Key=key, Body=body, **{f"Checksum{alg}": value})
        assert e.value.response["Error"]["Code"] == "BadDigest", (alg, key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
