"""Origin write-back (`--origin-write back`): writes are acknowledged once kept in the swarm,
read back at once from any node, listed before they reach the origin, and uploaded in the
background, through an origin outage, a node restart and the death of the node that took
them. The origin is moto's server mode behind a TCP proxy (stopped to make it unreachable);
what landed upstream is read from moto itself."""

import hashlib
import os
import pathlib
import time

import pytest
from botocore.exceptions import ClientError

from conftest import NodeProc
from test_origin import PREFIX, UPSTREAM, CountingProxy, metric, moto, start_swarm  # noqa: F401

MiB = 1 << 20
ENV = {"S3SWARM_ORIGIN_ACCESS_KEY": "origin-key", "S3SWARM_ORIGIN_SECRET_KEY": "origin-secret"}


def start_node(proxy: CountingProxy, tmp: pathlib.Path) -> NodeProc:
    return NodeProc(
        tmp,
        extra_args=(
            "--origin", f"ckpt=s3://{UPSTREAM}/{PREFIX}",
            "--origin-endpoint", f"http://127.0.0.1:{proxy.port}",
            "--origin-write", "back",
            "--origin-revalidate-secs", "1",
        ),
        extra_env=ENV,
    )


def upstream_body(upstream, key: str) -> bytes | None:
    try:
        return upstream.get_object(Bucket=UPSTREAM, Key=PREFIX + key)["Body"].read()
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise


def wait_upstream(upstream, key: str, want: bytes | None, within: float = 30) -> None:
    deadline = time.time() + within
    while True:
        got = upstream_body(upstream, key)
        if got == want:
            return
        assert time.time() < deadline, (
            f"{key} upstream is {None if got is None else len(got)} bytes, "
            f"not {None if want is None else len(want)}, after {within} s"
        )
        time.sleep(0.3)


def listed(s3, bucket: str, prefix: str) -> dict[str, int]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 2}):
        for o in page.get("Contents", []):
            assert o["Key"] not in out, f"{o['Key']} listed twice"
            out[o["Key"]] = o["Size"]
    return out


def test_writes_are_acknowledged_here_read_back_at_once_and_land_in_the_origin(moto, tmp_path):
    addr, upstream = moto
    proxy = CountingProxy(addr)
    node = start_node(proxy, tmp_path)
    try:
        s3 = node.client()
        data = os.urandom(3 * MiB + 17)
        put = s3.put_object(Bucket="ckpt", Key="run1/step-1.pt", Body=data, Metadata={"step": "1"},
                            ContentType="application/octet-stream")
        assert "VersionId" not in put, "an origin bucket shows no versions"
        # Read back at once from the node, whether or not the upload happened yet.
        got = s3.get_object(Bucket="ckpt", Key="run1/step-1.pt")
        assert got["Body"].read() == data
        assert got["ETag"] == put["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
        assert got["Metadata"] == {"step": "1"}
        assert "run1/step-1.pt" in listed(s3, "ckpt", "run1/")

        # In the origin within seconds, with its metadata; the backlog drains.
        wait_upstream(upstream, "run1/step-1.pt", data)
        head = upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "run1/step-1.pt")
        assert head["Metadata"] == {"step": "1"}
        deadline = time.time() + 20
        while metric(node, 's3swarm_origin_write_back_backlog_objects{bucket="ckpt"}') != 0:
            assert time.time() < deadline, "the write-back backlog did not drain"
            time.sleep(0.3)
        assert metric(node, 's3swarm_origin_write_back_total{bucket="ckpt",outcome="uploaded"}') >= 1
        # Uploaded and dropped from the namespace: now read through from the origin.
        assert s3.get_object(Bucket="ckpt", Key="run1/step-1.pt")["Body"].read() == data

        # An overwrite and a delete of a key the origin has: seen at once, then upstream.
        upstream.put_object(Bucket=UPSTREAM, Key=PREFIX + "run1/old.pt", Body=b"old")
        assert s3.get_object(Bucket="ckpt", Key="run1/old.pt")["Body"].read() == b"old"
        s3.put_object(Bucket="ckpt", Key="run1/old.pt", Body=b"new")
        assert s3.get_object(Bucket="ckpt", Key="run1/old.pt")["Body"].read() == b"new"
        wait_upstream(upstream, "run1/old.pt", b"new")
        s3.delete_object(Bucket="ckpt", Key="run1/old.pt")
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="ckpt", Key="run1/old.pt")
        assert e.value.response["Error"]["Code"] == "NoSuchKey"
        assert "run1/old.pt" not in listed(s3, "ckpt", "run1/")
        wait_upstream(upstream, "run1/old.pt", None)

        # A batch delete (what `aws s3 rm --recursive` sends): hidden at once, then upstream.
        for i in range(3):
            upstream.put_object(Bucket=UPSTREAM, Key=f"{PREFIX}run0/{i}.pt", Body=b"old run")
        out = s3.delete_objects(Bucket="ckpt", Delete={"Objects": [{"Key": f"run0/{i}.pt"} for i in range(3)]})
        assert sorted(d["Key"] for d in out["Deleted"]) == [f"run0/{i}.pt" for i in range(3)]
        assert all("DeleteMarker" not in d for d in out["Deleted"]), out["Deleted"]
        assert listed(s3, "ckpt", "run0/") == {}
        for i in range(3):
            wait_upstream(upstream, f"run0/{i}.pt", None)

        # A conditional create is judged against the origin's object too.
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="ckpt", Key="run1/step-1.pt", Body=b"x", IfNoneMatch="*")
        assert e.value.response["Error"]["Code"] == "PreconditionFailed"

        # A multipart checkpoint (boto3 managed upload, 5 MiB parts): one object upstream.
        big = os.urandom(21 * MiB)
        path = tmp_path / "big.pt"
        path.write_bytes(big)
        import boto3.s3.transfer

        s3.upload_file(str(path), "ckpt", "run1/big.pt", Config=boto3.s3.transfer.TransferConfig(
            multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
        assert s3.get_object(Bucket="ckpt", Key="run1/big.pt")["Body"].read() == big
        wait_upstream(upstream, "run1/big.pt", big)
        # Past 64 MiB the node uploads in parts of its own (16 MiB here).
        huge = os.urandom(65 * MiB)
        path.write_bytes(huge)
        s3.upload_file(str(path), "ckpt", "run1/huge.pt", Config=boto3.s3.transfer.TransferConfig(
            multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB))
        wait_upstream(upstream, "run1/huge.pt", huge, within=60)
        parts = upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "run1/huge.pt", PartNumber=1)
        assert parts.get("PartsCount") == 5, parts
        # The origin bucket is listed once, not beside the namespace bucket of its pending writes.
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert names.count("ckpt") == 1, names
    finally:
        node.stop()
        proxy.stop()


@pytest.mark.server_errors
def test_writes_taken_while_the_origin_is_down_are_uploaded_after_a_restart(moto, tmp_path):
    addr, upstream = moto
    proxy = CountingProxy(addr)
    port = proxy.port
    node = start_node(proxy, tmp_path)
    files = {f"outage/shard-{i}.pt": os.urandom(i * MiB + 100) for i in range(1, 4)}
    try:
        s3 = node.client()
        proxy.stop()
        for k, v in files.items():
            s3.put_object(Bucket="ckpt", Key=k, Body=v)
        for k, v in files.items():
            assert s3.get_object(Bucket="ckpt", Key=k)["Body"].read() == v
        deadline = time.time() + 20
        while metric(node, 's3swarm_origin_write_back_total{bucket="ckpt",outcome="failed"}') < 1:
            assert time.time() < deadline, "no failed upload counted with the origin down"
            time.sleep(0.3)
        assert metric(node, 's3swarm_origin_write_back_backlog_objects{bucket="ckpt"}') == len(files)
        for k in files:
            assert upstream_body(upstream, k) is None
    finally:
        node.stop()
    # Back with the origin reachable again at the same address: the backlog is uploaded.
    proxy = CountingProxy(addr, port=port)
    node = start_node(proxy, tmp_path)
    try:
        for k, v in files.items():
            wait_upstream(upstream, k, v)
        assert listed(node.client(), "ckpt", "outage/") == {k: len(v) for k, v in files.items()}
    finally:
        node.stop()
        proxy.stop()


@pytest.mark.server_errors
def test_a_swarm_keeps_acknowledged_writes_through_the_writers_death_and_uploads_each_once(moto, tmp_path):
    addr, upstream = moto
    proxy = CountingProxy(addr)
    port = proxy.port
    nodes = start_swarm(proxy, tmp_path, 44, 3, extra=("--origin-write", "back"))
    try:
        # The namespace bucket that keeps pending writes is set up once for the swarm.
        deadline = time.time() + 30
        while True:
            try:
                nodes[0].client().put_object(Bucket="data", Key="swarm/hello", Body=b"hi")
                break
            except ClientError as e:
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e
                assert time.time() < deadline, "write-back never became ready"
                time.sleep(0.5)
        wait_upstream(upstream, "swarm/hello", b"hi")
        uploaded = 's3swarm_origin_write_back_total{bucket="data",outcome="uploaded"}'
        deadline = time.time() + 20
        while sum(metric(n, uploaded) for n in nodes) != 1:
            assert time.time() < deadline, "the first write was not counted as uploaded once"
            time.sleep(0.3)
        # A node that cached the upstream's object never goes back to it after another node
        # wrote the key back (its metadata is otherwise trusted for 60 s here).
        upstream.put_object(Bucket=UPSTREAM, Key=PREFIX + "swarm/shared", Body=b"v1")
        assert nodes[2].client().get_object(Bucket="data", Key="swarm/shared")["Body"].read() == b"v1"
        nodes[0].client().put_object(Bucket="data", Key="swarm/shared", Body=b"v2")
        wait_upstream(upstream, "swarm/shared", b"v2")
        deadline = time.time() + 20
        while sum(metric(n, uploaded) for n in nodes) != 2:
            assert time.time() < deadline, "the overwrite was not counted as uploaded once"
            time.sleep(0.3)
        for _ in range(10):
            assert nodes[2].client().get_object(Bucket="data", Key="swarm/shared")["Body"].read() == b"v2"
            time.sleep(0.2)
        before = sum(metric(n, uploaded) for n in nodes[1:])

        # Origin down: writes through node 1, which dies the moment the last is acknowledged
        # (an acknowledgement waits for each object's chunks to have their 2 copies).
        proxy.stop()
        files = {f"swarm/ckpt-{i}.pt": os.urandom(2 * MiB + i) for i in range(4)}
        c0 = nodes[0].client()
        t0 = time.monotonic()
        for k, v in files.items():
            c0.put_object(Bucket="data", Key=k, Body=v)
        acked = time.monotonic() - t0
        nodes[0].stop()
        print(f"4 write-back PUTs of 2 MiB acknowledged at 2 copies in {acked:.2f} s")
        # The survivors serve every write (the origin is still down) and then upload it.
        # (A survivor that is not a holder may still be pulling the record from the other.)
        for n in nodes[1:]:
            c = n.client()
            for k, v in files.items():
                deadline = time.time() + 20
                while True:
                    try:
                        assert c.get_object(Bucket="data", Key=k)["Body"].read() == v
                        break
                    except ClientError as e:
                        assert e.response["Error"]["Code"] in ("NoSuchKey", "ServiceUnavailable"), e
                        assert time.time() < deadline, f"{k} was lost with the node that took it"
                        time.sleep(0.3)
        proxy = CountingProxy(addr, port=port)
        for k, v in files.items():
            wait_upstream(upstream, k, v, within=60)
        # Each pending write was uploaded by one node (the rendezvous choice), not by both.
        deadline = time.time() + 20
        while sum(metric(n, 's3swarm_origin_write_back_backlog_objects{bucket="data"}') for n in nodes[1:]) != 0:
            assert time.time() < deadline, "the survivors' backlog did not drain"
            time.sleep(0.3)
        uploads = sum(metric(n, uploaded) for n in nodes[1:]) - before
        assert uploads == len(files), f"{uploads} uploads for {len(files)} pending writes"
    finally:
        for n in nodes:
            n.stop()
        proxy.stop()
