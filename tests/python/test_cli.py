"""The aws CLI against a real node: cp (multipart for large files), ls, sync, rm."""

import hashlib
import json
import os

import pytest
from conftest import bucket_name


@pytest.fixture
def bucket(http_s3, request):
    """The CLI tests talk to the plain-HTTP node, so their buckets live there (the shared
    `bucket` fixture follows `s3` over both schemes)."""
    name = bucket_name(request)
    http_s3.create_bucket(Bucket=name)
    return name


def test_cp_large_file_uses_multipart_and_round_trips(aws, bucket, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40 * 1024 * 1024))
    aws("s3", "cp", "--no-progress", str(src), f"s3://{bucket}/big.bin")
    head = aws("s3api", "head-object", "--bucket", bucket, "--key", "big.bin").stdout
    assert '-5\\"' in head or "-5\"" in head, head  # 8 MiB parts by default
    dst = tmp_path / "back.bin"
    aws("s3", "cp", "--no-progress", f"s3://{bucket}/big.bin", str(dst))
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_cp_of_1_gib_round_trips_in_bounded_memory(aws, node, bucket, tmp_path):
    """The issue's bar: `aws s3 cp` of 1 GiB (multipart, 8 MiB parts) and back, byte-exact,
    while the node's peak RSS stays far below the object size (bodies are streamed)."""
    src = tmp_path / "1g.bin"
    want = hashlib.sha256()
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(1024):
            piece = block[i % 997 :] + block[: i % 997]  # distinct MiBs without 1 GiB of urandom
            f.write(piece)
            want.update(piece)
    aws("s3", "cp", "--no-progress", str(src), f"s3://{bucket}/1g.bin")
    dst = tmp_path / "1g.back"
    aws("s3", "cp", "--no-progress", f"s3://{bucket}/1g.bin", str(dst))
    got = hashlib.sha256()
    with open(dst, "rb") as f:
        while chunk := f.read(1 << 22):
            got.update(chunk)
    assert got.hexdigest() == want.hexdigest()
    assert dst.stat().st_size == 1 << 30
    rss = node.peak_rss_mib()
    assert rss < 200, f"peak RSS {rss:.0f} MiB while moving 1 GiB"
    aws("s3", "rm", f"s3://{bucket}/1g.bin")


def test_sync_ls_and_rm(aws, bucket, tmp_path):
    tree = tmp_path / "tree"
    for rel, size in [("a.txt", 10), ("sub/b.bin", 100_000), ("sub/deeper/c", 0), ("with space.txt", 5)]:
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    aws("s3", "sync", str(tree), f"s3://{bucket}/t")
    listing = aws("s3", "ls", "--recursive", f"s3://{bucket}/t/").stdout
    for rel in ["t/a.txt", "t/sub/b.bin", "t/sub/deeper/c", "t/with space.txt"]:
        assert rel in listing, listing
    # A second sync finds nothing to do.
    again = aws("s3", "sync", str(tree), f"s3://{bucket}/t").stdout
    assert "upload:" not in again, again
    back = tmp_path / "back"
    aws("s3", "sync", f"s3://{bucket}/t", str(back))
    for p in tree.rglob("*"):
        if p.is_file():
            assert (back / p.relative_to(tree)).read_bytes() == p.read_bytes()
    # Server-side copy (CopyObject), then mv (copy + delete).
    aws("s3", "cp", f"s3://{bucket}/t/sub/b.bin", f"s3://{bucket}/copied.bin")
    aws("s3", "mv", f"s3://{bucket}/copied.bin", f"s3://{bucket}/moved.bin")
    aws("s3", "cp", f"s3://{bucket}/moved.bin", str(tmp_path / "moved.bin"))
    assert (tmp_path / "moved.bin").read_bytes() == (tree / "sub/b.bin").read_bytes()
    aws("s3", "rm", f"s3://{bucket}/moved.bin")
    aws("s3", "rm", "--recursive", f"s3://{bucket}/t")
    assert aws("s3", "ls", "--recursive", f"s3://{bucket}/").stdout.strip() == ""


def test_s3api_errors_are_reported(aws, bucket):
    p = aws("s3api", "get-object", "--bucket", bucket, "--key", "nope", "/dev/null", check=False)
    assert p.returncode != 0
    assert "NoSuchKey" in p.stderr


def test_cp_and_ls_over_https_with_ca_bundle(tls_aws, tmp_path):
    src = tmp_path / "tls.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024))  # multipart: two parts
    tls_aws("s3", "mb", "s3://cli-over-tls")
    tls_aws("s3", "cp", "--no-progress", str(src), "s3://cli-over-tls/tls.bin")
    assert "tls.bin" in tls_aws("s3", "ls", "s3://cli-over-tls/").stdout
    dst = tmp_path / "tls.back"
    tls_aws("s3", "cp", "--no-progress", "s3://cli-over-tls/tls.bin", str(dst))
    assert dst.read_bytes() == src.read_bytes()
    # Without the CA bundle the CLI refuses the self-signed certificate.
    p = tls_aws("--ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "s3", "ls", "s3://cli-over-tls/", check=False)
    assert p.returncode != 0 and "SSL" in (p.stderr + p.stdout), p.stderr


def test_cli_versioning_and_tagging(aws, bucket, tmp_path):
    aws("s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled")
    f = tmp_path / "f.txt"
    for text in ["first", "second"]:
        f.write_text(text)
        aws("s3", "cp", str(f), f"s3://{bucket}/doc.txt", "--no-progress")
    out = json.loads(aws("s3api", "list-object-versions", "--bucket", bucket).stdout)
    assert len(out["Versions"]) == 2
    old = [v for v in out["Versions"] if not v["IsLatest"]][0]["VersionId"]
    aws("s3api", "get-object", "--bucket", bucket, "--key", "doc.txt", "--version-id", old, str(tmp_path / "old.txt"))
    assert (tmp_path / "old.txt").read_text() == "first"
    aws("s3api", "put-object-tagging", "--bucket", bucket, "--key", "doc.txt", "--tagging", "TagSet=[{Key=k,Value=v}]")
    out = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "doc.txt").stdout)
    assert out["TagSet"] == [{"Key": "k", "Value": "v"}]
    # The CLI's own checksum on upload, returned on request.
    out = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "doc.txt", "--checksum-mode", "ENABLED").stdout)
    assert any(k.startswith("Checksum") and k != "ChecksumType" for k in out), out
