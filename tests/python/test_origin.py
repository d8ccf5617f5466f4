"""Origin pull-through: a node fronting a real S3 server (moto's server mode), read with boto3
and the aws CLI. What the origin served is counted by a TCP proxy between the node and the
origin (every byte the origin sent, headers included), never by s3swarm's own metrics."""

import concurrent.futures
import hashlib
import os
import pathlib
import shutil
import socket
import tempfile
import threading
import time

import boto3
import boto3.s3.transfer
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, NodeProc, aws_runner

MiB = 1 << 20
PIECE = 1 * MiB
UPSTREAM = "upstream-data"
PREFIX = "datasets/"


class CountingProxy:
    """Forwards TCP connections to `target`, counting the bytes the target sends back.
    `stop()` closes the listener and every connection: the origin is then unreachable."""

    def __init__(self, target: tuple[str, int], port: int = 0):
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.served = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.running:
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while True:
                data = src.recv(256 * 1024)
                if not data:
                    break
                if count:
                    with self.lock:
                        self.served += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.running = False
        # A listener closed while a thread is blocked in accept() keeps accepting on Linux;
        # shutdown wakes that accept.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                # Shut down first: a close alone leaves a connection that another thread is
                # reading from open, and a client's pooled connection would still reach the origin.
                for f in (lambda: s.shutdown(socket.SHUT_RDWR), s.close):
                    try:
                        f()
                    except OSError:
                        pass


@pytest.fixture(scope="module")
def moto():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="origin-key",
        aws_secret_access_key="origin-secret",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=UPSTREAM)
    yield (host, port), client
    server.stop()


def start_fronting_node(proxy: CountingProxy, tmp: pathlib.Path, revalidate: int = 1) -> NodeProc:
    return NodeProc(
        tmp,
        extra_args=(
            "--origin", f"data=s3://{UPSTREAM}/{PREFIX}",
            "--origin-endpoint", f"http://127.0.0.1:{proxy.port}",
            "--origin-revalidate-secs", str(revalidate),
            "--origin-piece-size", str(PIECE),
        ),
        extra_env={"S3SWARM_ORIGIN_ACCESS_KEY": "origin-key", "S3SWARM_ORIGIN_SECRET_KEY": "origin-secret"},
    )


@pytest.fixture(scope="module")
def fronted(moto):
    addr, upstream = moto
    proxy = CountingProxy(addr)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="s3swarm-origin-"))
    node = start_fronting_node(proxy, tmp)
    yield node, proxy, upstream
    node.stop()
    proxy.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def put_upstream(upstream, key: str, size: int, **extra) -> bytes:
    data = os.urandom(size)
    upstream.put_object(Bucket=UPSTREAM, Key=PREFIX + key, Body=data, **extra)
    return data


def served_by(proxy, f):
    before = proxy.served
    out = f()
    return out, proxy.served - before


def test_a_cold_object_reads_as_the_origin_has_it_and_each_piece_once(fronted):
    node, proxy, upstream = fronted
    s3 = node.client()
    size = 6 * MiB + 12345
    data = put_upstream(
        upstream, "train/shard-0.tar", size,
        ContentType="application/x-tar", Metadata={"split": "train", "rows": "1000"},
    )
    origin_head = upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "train/shard-0.tar")

    head = s3.head_object(Bucket="data", Key="train/shard-0.tar")
    assert head["ContentLength"] == size
    assert head["ETag"] == origin_head["ETag"]
    assert head["ContentType"] == "application/x-tar"
    assert head["Metadata"] == {"split": "train", "rows": "1000"}
    assert head["LastModified"] == origin_head["LastModified"]

    # Three readers at once: one fetch of each piece between them.
    def read():
        return s3.get_object(Bucket="data", Key="train/shard-0.tar")["Body"].read()

    def three():
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            return [f.result() for f in [ex.submit(read) for _ in range(3)]]

    bodies, cold = served_by(proxy, three)
    assert all(hashlib.sha256(b).digest() == hashlib.sha256(data).digest() for b in bodies)
    assert size <= cold <= 1.05 * size, f"the origin served {cold} bytes for a {size}-byte object"

    # Warm: the bytes come from the node; the origin is asked for metadata at most.
    body, warm = served_by(proxy, read)
    assert body == data
    assert warm < 4096, f"a warm read still took {warm} bytes from the origin"
    # Each piece fetch was timed (7 pieces of 1 MiB).
    assert metric(node, 's3swarm_origin_request_seconds_count{bucket="data",operation="GetObject"}') >= 7


def test_a_ranged_read_of_a_cold_object_reads_only_the_pieces_it_covers(fronted):
    node, proxy, upstream = fronted
    s3 = node.client()
    data = put_upstream(upstream, "big.bin", 12 * MiB)
    start = 5 * MiB + 1000
    got, served = served_by(
        proxy,
        lambda: s3.get_object(Bucket="data", Key="big.bin", Range=f"bytes={start}-{start + 99}")["Body"].read(),
    )
    assert got == data[start:start + 100]
    # One piece (plus a HEAD and response headers); read-ahead stays within the range's pieces.
    assert served <= PIECE + 8192, f"a 100-byte range cost {served} origin bytes"
    # A range spanning a piece boundary.
    start = 3 * MiB - 10
    got = s3.get_object(Bucket="data", Key="big.bin", Range=f"bytes={start}-{start + 19}")["Body"].read()
    assert got == data[start:start + 20]
    # Suffix range, then the whole object: every byte right.
    assert s3.get_object(Bucket="data", Key="big.bin", Range="bytes=-7")["Body"].read() == data[-7:]
    assert s3.get_object(Bucket="data", Key="big.bin")["Body"].read() == data


def test_listing_matches_the_origin(fronted):
    node, _, upstream = fronted
    s3 = node.client()
    for i in range(7):
        upstream.put_object(Bucket=UPSTREAM, Key=f"{PREFIX}list/a/{i}.txt", Body=b"x" * i)
    upstream.put_object(Bucket=UPSTREAM, Key=f"{PREFIX}list/b/one.txt", Body=b"one")
    upstream.put_object(Bucket=UPSTREAM, Key=f"{PREFIX}list/top.txt", Body=b"top")
    upstream.put_object(Bucket=UPSTREAM, Key="outside-the-prefix.txt", Body=b"no")

    def theirs(**kw):
        out = upstream.list_objects_v2(Bucket=UPSTREAM, Prefix=PREFIX + kw.pop("Prefix", ""), **kw)
        return (
            [(o["Key"][len(PREFIX):], o["Size"], o["ETag"]) for o in out.get("Contents", [])],
            [p["Prefix"][len(PREFIX):] for p in out.get("CommonPrefixes", [])],
        )

    def ours(**kw):
        out = s3.list_objects_v2(Bucket="data", **kw)
        return (
            [(o["Key"], o["Size"], o["ETag"]) for o in out.get("Contents", [])],
            [p["Prefix"] for p in out.get("CommonPrefixes", [])],
        )

    assert ours(Prefix="list/") == theirs(Prefix="list/")
    assert ours(Prefix="list/", Delimiter="/") == theirs(Prefix="list/", Delimiter="/")
    assert ours(Prefix="list/", Delimiter="/")[1] == ["list/a/", "list/b/"]
    # Paging with continuation tokens, as the paginator does it.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="data", Prefix="list/", PaginationConfig={"PageSize": 3})
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys == [k for k, _, _ in theirs(Prefix="list/")[0]]
    assert len(keys) == 9
    # V1 with a marker, and a whole-bucket listing never shows keys outside the prefix.
    v1 = s3.list_objects(Bucket="data", Prefix="list/", Marker="list/a/3.txt")
    assert [o["Key"] for o in v1["Contents"]] == keys[4:]
    everything = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="data") for o in p.get("Contents", [])]
    assert "outside-the-prefix.txt" not in everything and "list/top.txt" in everything


def test_an_upstream_overwrite_is_seen_after_revalidation(fronted):
    node, _, upstream = fronted
    s3 = node.client()
    first = put_upstream(upstream, "ckpt/latest.pt", 2 * MiB + 7)
    assert s3.get_object(Bucket="data", Key="ckpt/latest.pt")["Body"].read() == first
    second = put_upstream(upstream, "ckpt/latest.pt", 3 * MiB + 1)
    new_etag = upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "ckpt/latest.pt")["ETag"]
    time.sleep(1.5)  # --origin-revalidate-secs 1
    got = s3.get_object(Bucket="data", Key="ckpt/latest.pt")
    assert got["ETag"] == new_etag
    assert got["Body"].read() == second
    # Deleted upstream: gone here too once revalidated.
    upstream.delete_object(Bucket=UPSTREAM, Key=PREFIX + "ckpt/latest.pt")
    time.sleep(1.5)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="data", Key="ckpt/latest.pt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_conditional_reads_use_the_origin_etag(fronted):
    node, _, upstream = fronted
    s3 = node.client()
    put_upstream(upstream, "cond.bin", 1000)
    etag = s3.head_object(Bucket="data", Key="cond.bin")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="cond.bin", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="cond.bin", IfMatch='"0123"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    assert len(s3.get_object(Bucket="data", Key="cond.bin", IfMatch=etag)["Body"].read()) == 1000


def test_the_origin_bucket_is_listed_and_owned(fronted):
    node, _, _ = fronted
    s3 = node.client()
    assert "data" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="data")
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="data")
    assert e.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="no/such/key")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    # Operations an origin bucket does not take say so, and touch nothing.
    with pytest.raises(ClientError) as e:
        s3.put_object_tagging(Bucket="data", Key="cond.bin", Tagging={"TagSet": []})
    assert e.value.response["Error"]["Code"] == "NotImplemented"


def test_writes_go_through_to_the_origin_and_are_read_back(fronted, tmp_path):
    node, _, upstream = fronted
    s3 = node.client()
    data = os.urandom(3 * MiB + 5)
    put = s3.put_object(Bucket="data", Key="ckpt/step-1.pt", Body=data, ContentType="application/octet-stream",
                        Metadata={"step": "1"})
    theirs = upstream.get_object(Bucket=UPSTREAM, Key=PREFIX + "ckpt/step-1.pt")
    assert theirs["Body"].read() == data
    assert theirs["ETag"] == put["ETag"]
    assert theirs["Metadata"] == {"step": "1"}
    assert s3.get_object(Bucket="data", Key="ckpt/step-1.pt")["Body"].read() == data
    # An overwrite through the node is read back at once (no stale metadata or pieces).
    data2 = os.urandom(2 * MiB)
    s3.put_object(Bucket="data", Key="ckpt/step-1.pt", Body=data2)
    assert s3.get_object(Bucket="data", Key="ckpt/step-1.pt")["Body"].read() == data2
    # A conditional create of an existing key fails as the origin says.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="data", Key="ckpt/step-1.pt", Body=b"x", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert upstream.get_object(Bucket=UPSTREAM, Key=PREFIX + "ckpt/step-1.pt")["Body"].read() == data2
    # Multipart (boto3's managed upload, 5 MiB parts): the origin has the object.
    big = tmp_path / "big"
    big.write_bytes(os.urandom(12 * MiB + 1))
    s3.upload_file(str(big), "data", "ckpt/step-2.pt",
                   Config=boto3.s3.transfer.TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    head = upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "ckpt/step-2.pt")
    assert head["ContentLength"] == 12 * MiB + 1 and head["ETag"].endswith('-3"'), head["ETag"]
    assert s3.get_object(Bucket="data", Key="ckpt/step-2.pt")["Body"].read() == big.read_bytes()
    # The aws CLI copies a file in and out.
    aws = aws_runner(node, tmp_path)
    aws("s3", "cp", str(big), "s3://data/ckpt/step-3.pt")
    aws("s3", "cp", "s3://data/ckpt/step-3.pt", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == big.read_bytes()
    # Delete: gone upstream and here.
    s3.delete_object(Bucket="data", Key="ckpt/step-1.pt")
    with pytest.raises(ClientError):
        upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "ckpt/step-1.pt")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="data", Key="ckpt/step-1.pt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_aws_s3_rm_recursive_deletes_through_to_the_origin(fronted, tmp_path):
    """`aws s3 rm --recursive` sends DeleteObjects: each key is deleted at the origin."""
    node, _, upstream = fronted
    for i in range(5):
        upstream.put_object(Bucket=UPSTREAM, Key=f"{PREFIX}rm/{i}.bin", Body=b"x")
    upstream.put_object(Bucket=UPSTREAM, Key=f"{PREFIX}keep/0.bin", Body=b"x")
    aws = aws_runner(node, tmp_path)
    aws("s3", "rm", "--recursive", "s3://data/rm/")
    left = upstream.list_objects_v2(Bucket=UPSTREAM, Prefix=PREFIX + "rm/").get("KeyCount")
    assert left == 0, left
    upstream.head_object(Bucket=UPSTREAM, Key=f"{PREFIX}keep/0.bin")
    out = node.client().delete_objects(Bucket="data", Delete={"Objects": [{"Key": "keep/0.bin", "VersionId": "3"}]})
    assert [e["Code"] for e in out["Errors"]] == ["InvalidArgument"]
    upstream.head_object(Bucket=UPSTREAM, Key=f"{PREFIX}keep/0.bin")


def test_a_read_only_origin_refuses_writes_and_writes_nothing(moto, tmp_path):
    addr, upstream = moto
    proxy = CountingProxy(addr)
    node = NodeProc(
        tmp_path,
        extra_args=("--origin", f"readonly=s3://{UPSTREAM}/{PREFIX}", "--origin-endpoint", f"http://127.0.0.1:{proxy.port}",
                    "--origin-write", "none"),
        extra_env={"S3SWARM_ORIGIN_ACCESS_KEY": "origin-key", "S3SWARM_ORIGIN_SECRET_KEY": "origin-secret"},
    )
    try:
        s3 = node.client()
        put_upstream(upstream, "ro/kept.bin", 10)
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="readonly", Key="ro/new.txt", Body=b"x")
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        assert "read-only" in e.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket="readonly", Key="ro/kept.bin")
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(ClientError) as e:
            s3.delete_objects(Bucket="readonly", Delete={"Objects": [{"Key": "ro/kept.bin"}]})
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "ro/kept.bin")
        with pytest.raises(ClientError):
            upstream.head_object(Bucket=UPSTREAM, Key=PREFIX + "ro/new.txt")
        assert s3.get_object(Bucket="readonly", Key="ro/kept.bin")["Body"].read() is not None
    finally:
        node.stop()
        proxy.stop()


def test_aws_cli_syncs_from_the_origin_bucket(fronted, tmp_path):
    node, _, upstream = fronted
    files = {f"sync/{i}.bin": os.urandom(i * 300_000 + 1) for i in range(4)}
    for k, v in files.items():
        upstream.put_object(Bucket=UPSTREAM, Key=PREFIX + k, Body=v)
    aws = aws_runner(node, tmp_path)
    aws("s3", "sync", "s3://data/sync/", str(tmp_path / "out"))
    for k, v in files.items():
        assert (tmp_path / "out" / k.split("/", 1)[1]).read_bytes() == v
    # boto3's managed download (parallel ranged GETs) of a multi-piece object.
    data = put_upstream(upstream, "sync-big.bin", 9 * MiB)
    node.client().download_file("data", "sync-big.bin", str(tmp_path / "big"))
    assert (tmp_path / "big").read_bytes() == data


@pytest.mark.server_errors
def test_with_the_origin_down_cached_objects_are_served_and_others_answer_503(moto, tmp_path):
    addr, upstream = moto
    proxy = CountingProxy(addr)
    node = start_fronting_node(proxy, tmp_path)
    try:
        s3 = node.client(retries={"max_attempts": 1, "mode": "standard"})
        cached = put_upstream(upstream, "down/cached.bin", 3 * MiB)
        put_upstream(upstream, "down/cold.bin", 1 * MiB)
        assert s3.get_object(Bucket="data", Key="down/cached.bin")["Body"].read() == cached
        proxy.stop()
        time.sleep(1.5)  # past revalidation: the origin is asked again, and cannot answer
        assert s3.get_object(Bucket="data", Key="down/cached.bin")["Body"].read() == cached
        t0 = time.monotonic()
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="data", Key="down/cold.bin")
        took = time.monotonic() - t0
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert took < 10, f"an unreachable origin took {took:.1f} s to answer"
        with pytest.raises(ClientError) as e:
            s3.list_objects_v2(Bucket="data", Prefix="down/")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        node.stop()


def test_bad_origin_credentials_stop_the_node_with_the_reason(moto, tmp_path):
    addr, _ = moto
    import subprocess
    from conftest import binary

    p = subprocess.run(
        [binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
         "--origin", "data=s3://no-such-upstream-bucket/", "--origin-endpoint", f"http://{addr[0]}:{addr[1]}"],
        env=dict(os.environ, S3SWARM_ACCESS_KEY=ACCESS_KEY, S3SWARM_SECRET_KEY="pytest-secret-key-0123456789",
                 S3SWARM_ORIGIN_ACCESS_KEY="origin-key", S3SWARM_ORIGIN_SECRET_KEY="origin-secret"),
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode != 0
    assert "no-such-upstream-bucket" in p.stderr, p.stderr


def metric(node: NodeProc, name: str) -> float:
    import urllib.request

    try:
        with urllib.request.urlopen(node.endpoint + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
    except OSError:
        pass
    return 0.0


def ready(node: NodeProc) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(node.endpoint + "/readyz", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def start_swarm(proxy: CountingProxy, tmp: pathlib.Path, net: int, count: int, extra: tuple = ()) -> list[NodeProc]:
    import base64

    secret = tmp / "secret"
    secret.write_text(base64.b64encode(os.urandom(32)).decode())
    nodes = []
    for i in range(1, count + 1):
        swarm = ["--swarm-listen", f"127.0.{net}.{i}:7400", "--cluster-secret-file", str(secret)]
        if i > 1:
            swarm += ["--peer", f"127.0.{net}.1:7400"]
        d = tmp / f"n{i}"
        d.mkdir()
        nodes.append(NodeProc(
            d,
            extra_args=(
                *swarm,
                "--origin", f"data=s3://{UPSTREAM}/{PREFIX}",
                "--origin-endpoint", f"http://127.0.0.1:{proxy.port}",
                "--origin-piece-size", str(PIECE),
                *extra,
            ),
            extra_env={"S3SWARM_ORIGIN_ACCESS_KEY": "origin-key", "S3SWARM_ORIGIN_SECRET_KEY": "origin-secret"},
        ))
    deadline = time.time() + 30
    while not all(metric(n, 's3swarm_swarm_members{state="alive"}') == count and ready(n) for n in nodes):
        assert time.time() < deadline, "the swarm did not form"
        time.sleep(0.2)
    return nodes


@pytest.mark.server_errors
def test_three_nodes_reading_one_cold_object_at_once_read_each_piece_from_the_origin_once(moto, tmp_path):
    """Each piece has one owner in the swarm (rendezvous over the live members): it alone
    reads the piece from the origin, and the other nodes take its chunks from the swarm."""
    addr, upstream = moto
    proxy = CountingProxy(addr)
    nodes = start_swarm(proxy, tmp_path, 43, 3)
    try:
        size = 16 * MiB + 3
        data = put_upstream(upstream, "swarm/shard.tar", size)
        clients = [n.client() for n in nodes]

        def read(c, key="swarm/shard.tar"):
            return c.get_object(Bucket="data", Key=key)["Body"].read()

        def all_three():
            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                return [f.result() for f in [ex.submit(read, c) for c in clients]]

        bodies, served = served_by(proxy, all_three)
        assert all(b == data for b in bodies)
        assert size <= served <= 1.05 * size, f"3 nodes cost {served} origin bytes for {size}"
        # Every node took part: each read some pieces from the origin as their owner.
        fetched = [metric(n, 's3swarm_origin_read_bytes_total{bucket="data"}') for n in nodes]
        assert all(f > 0 for f in fetched), fetched
        # The nodes' own account agrees: each sent the whole object, the origin served a third.
        sent = [metric(n, 's3swarm_origin_served_bytes_total{bucket="data"}') for n in nodes]
        assert all(s == size for s in sent), sent
        assert 0.3 <= sum(fetched) / sum(sent) <= 0.35, (fetched, sent)

        # Warm a new object onto every node: afterwards each reads it from its own store.
        data3 = put_upstream(upstream, "swarm/warm.tar", 5 * MiB)
        p, served = served_by(proxy, lambda: prefetch(nodes[0], "s3://data/swarm/warm", "--all-nodes"))
        assert p.returncode == 0, p.stderr
        assert len([l for l in p.stdout.splitlines() if '"object"' in l]) == 3, p.stdout
        assert served <= 1.05 * len(data3) + 65536, served
        for n, c in zip(nodes, clients):
            before = metric(n, 's3swarm_read_bytes_total{source="peer"}')
            assert read(c, "swarm/warm.tar") == data3
            assert metric(n, 's3swarm_read_bytes_total{source="peer"}') == before

        # A node is killed: its pieces move to the next node in each piece's ranking (the
        # same on both survivors, whether or not they have noticed the death yet), so two
        # readers at once still read each piece from the origin once.
        nodes[2].stop()
        data2 = put_upstream(upstream, "swarm/after.tar", 6 * MiB)

        def both():
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                return [f.result() for f in [ex.submit(read, c, "swarm/after.tar") for c in clients[:2]]]

        bodies, served = served_by(proxy, both)
        assert all(b == data2 for b in bodies)
        assert served <= 1.05 * len(data2), f"2 nodes cost {served} origin bytes for {len(data2)}"
    finally:
        for n in nodes:
            n.stop()
        proxy.stop()


def prefetch(node: NodeProc, *args) -> "subprocess.CompletedProcess":
    import subprocess
    from conftest import SECRET_KEY, binary

    return subprocess.run(
        [binary(), "cluster", "prefetch", *args, "--endpoint", node.endpoint],
        env=dict(os.environ, S3SWARM_ACCESS_KEY=ACCESS_KEY, S3SWARM_SECRET_KEY=SECRET_KEY),
        capture_output=True, text=True, timeout=120,
    )


def test_prefetch_warms_a_prefix_so_reads_take_nothing_from_the_origin(fronted):
    import json

    node, proxy, upstream = fronted
    files = {f"warm/{i}.bin": put_upstream(upstream, f"warm/{i}.bin", i * MiB + 17) for i in range(1, 4)}
    put_upstream(upstream, "warmnot/x.bin", 5)
    p, served = served_by(proxy, lambda: prefetch(node, "s3://data/warm/"))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["objects"] == 3
    assert lines[0]["bytes"] == sum(len(v) for v in files.values())
    assert sorted(l["key"] for l in lines if l["event"] == "object") == sorted(files)
    assert lines[-1]["event"] == "done" and lines[-1]["failed"] == 0
    total = sum(len(v) for v in files.values())
    assert total <= served <= 1.05 * total + 16384, served
    s3 = node.client()
    for k, v in files.items():
        body, served = served_by(proxy, lambda: s3.get_object(Bucket="data", Key=k)["Body"].read())
        assert body == v
        assert served < 4096, f"{k} still took {served} bytes from the origin after the warm-up"
    # A prefix with nothing under it warms nothing, and says so.
    p = prefetch(node, "s3://data/nothing-here/")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0]) == {"event": "start", "objects": 0, "bytes": 0, "node": node.endpoint}


def test_the_origin_rate_cap_holds_a_cold_read_to_it(moto, tmp_path):
    """--origin-max-rate 2 MiB/s with one second of burst: a cold 6 MiB object cannot come
    in under 2 s (a lower bound only; nothing here can make it faster than the cap)."""
    addr, upstream = moto
    proxy = CountingProxy(addr)
    node = NodeProc(
        tmp_path,
        extra_args=("--origin", f"capped=s3://{UPSTREAM}/{PREFIX}", "--origin-endpoint", f"http://127.0.0.1:{proxy.port}",
                    "--origin-piece-size", str(PIECE), "--origin-max-rate", str(2 * MiB)),
        extra_env={"S3SWARM_ORIGIN_ACCESS_KEY": "origin-key", "S3SWARM_ORIGIN_SECRET_KEY": "origin-secret"},
    )
    try:
        data = put_upstream(upstream, "capped/six.bin", 6 * MiB)
        t0 = time.monotonic()
        assert node.client().get_object(Bucket="capped", Key="capped/six.bin")["Body"].read() == data
        took = time.monotonic() - t0
        assert took >= 1.9, f"6 MiB came through a 2 MiB/s cap in {took:.2f} s"
    finally:
        node.stop()
        proxy.stop()


def test_pyarrow_reads_parquet_datasets_from_the_origin_bucket(fronted):
    """pyarrow's own S3 client (the AWS C++ SDK): listing a prefix, then reading a parquet
    dataset through ranged reads (footer first), as a data loader would."""
    import io

    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from conftest import SECRET_KEY

    node, _, upstream = fronted
    tables = []
    for i in range(3):
        t = pa.table({"id": list(range(i * 1000, (i + 1) * 1000)), "text": [f"row {n}" for n in range(1000)]})
        buf = io.BytesIO()
        pq.write_table(t, buf, row_group_size=250)
        upstream.put_object(Bucket=UPSTREAM, Key=f"{PREFIX}pq/part-{i}.parquet", Body=buf.getvalue())
        tables.append(t)
    fs = pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=node.endpoint,
                           region="us-east-1")
    infos = fs.get_file_info(pafs.FileSelector("data/pq/", recursive=True))
    assert sorted(i.path for i in infos) == [f"data/pq/part-{i}.parquet" for i in range(3)]
    one = pq.read_table("data/pq/part-1.parquet", filesystem=fs)
    assert one.equals(tables[1])
    whole = ds.dataset("data/pq/", filesystem=fs, format="parquet").to_table()
    assert sorted(whole.column("id").to_pylist()) == list(range(3000))


@pytest.mark.server_errors
def test_prefetch_with_two_copies_survives_a_node_and_the_origin_going_down(moto, tmp_path):
    """`--copies 2`: every member keeps the pieces it ranks first or second for, so with the
    origin unreachable and one node gone the other two still serve every byte (with the
    default single copy, the lost node's pieces would have to come from the origin)."""
    addr, upstream = moto
    proxy = CountingProxy(addr)
    nodes = start_swarm(proxy, tmp_path, 45, 3)
    try:
        data = put_upstream(upstream, "copies/weights.bin", 6 * MiB + 5)
        p, served = served_by(proxy, lambda: prefetch(nodes[0], "s3://data/copies/", "--copies", "2"))
        assert p.returncode == 0, p.stderr
        assert served <= 1.05 * len(data) + 65536, f"warming 2 copies read {served} bytes from the origin"
        for n in nodes:
            n.client().head_object(Bucket="data", Key="copies/weights.bin")  # metadata known
        proxy.stop()
        nodes[0].stop()
        for n in nodes[1:]:
            got = n.client().get_object(Bucket="data", Key="copies/weights.bin")["Body"].read()
            assert got == data
    finally:
        for n in nodes:
            n.stop()
        proxy.stop()
