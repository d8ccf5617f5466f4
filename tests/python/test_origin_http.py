"""A plain HTTP origin (`--origin models=http://HOST/models/`): a real nginx serving files, read
by key through a node with boto3. What nginx sent is counted from its own access log (body
bytes per request), never from s3swarm's metrics."""

import concurrent.futures
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from botocore.exceptions import ClientError

from conftest import NodeProc

MiB = 1 << 20
PIECE = 1 * MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, root: pathlib.Path):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="s3swarm-nginx-"))
        self.port = free_port()
        self.log = self.dir / "access.log"
        user = "user root;" if os.geteuid() == 0 else ""
        temp = " ".join(f"{k}_temp_path {self.dir}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (self.dir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  {temp}
  types {{ application/json json; }}
  default_type application/octet-stream;
  log_format sent '$status $body_bytes_sent "$request"';
  access_log {self.log} sent;
  server {{
    listen 127.0.0.1:{self.port};
    root {root};
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                assert time.time() < deadline, "nginx did not start"
                time.sleep(0.1)

    def sent(self) -> int:
        """Body bytes nginx has sent so far (its access log is written per request)."""
        if not self.log.exists():
            return 0
        return sum(int(line.split()[1]) for line in self.log.read_text().splitlines() if line.strip())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (tests/run installs it)")
    www = tmp_path_factory.mktemp("www")
    os.chmod(www, 0o755)
    nginx = Nginx(www)
    node = NodeProc(
        tmp_path_factory.mktemp("node"),
        extra_args=(
            "--origin", f"models=http://127.0.0.1:{nginx.port}/models/",
            "--origin-revalidate-secs", "1",
            "--origin-piece-size", str(PIECE),
            # A node-wide write mode does not apply to a plain HTTP origin (read-only).
            "--origin-write", "through",
        ),
    )
    yield www / "models", nginx, node
    node.stop()
    nginx.stop()


def put_file(root: pathlib.Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_files_are_read_through_by_key_each_piece_once(served):
    root, nginx, node = served
    s3 = node.client()
    size = 5 * MiB + 4321
    data = os.urandom(size)
    put_file(root, "org/llm-7b/model.safetensors", data)
    put_file(root, "org/llm-7b/config.json", b'{"layers": 32}')

    head = s3.head_object(Bucket="models", Key="org/llm-7b/model.safetensors")
    assert head["ContentLength"] == size
    assert head["ETag"].startswith('"') and len(head["ETag"]) > 4, head["ETag"]
    cfg = s3.get_object(Bucket="models", Key="org/llm-7b/config.json")
    assert cfg["Body"].read() == b'{"layers": 32}'
    assert cfg["ContentType"] == "application/json"

    before = nginx.sent()

    def read():
        return s3.get_object(Bucket="models", Key="org/llm-7b/model.safetensors")["Body"].read()

    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        bodies = [f.result() for f in [ex.submit(read) for _ in range(3)]]
    assert all(b == data for b in bodies)
    cold = nginx.sent() - before
    assert size <= cold <= 1.05 * size, f"nginx sent {cold} bytes for a {size}-byte file read 3 times"
    assert read() == data
    assert nginx.sent() - before == cold, "a warm read went back to the origin for bytes"

    start = 3 * MiB - 7
    part = s3.get_object(Bucket="models", Key="org/llm-7b/model.safetensors", Range=f"bytes={start}-{start + 99}")
    assert part["Body"].read() == data[start:start + 100]


def test_keys_needing_escapes_missing_files_and_replaced_files(served):
    root, nginx, node = served
    s3 = node.client()
    put_file(root, "odd dir/a b+ü.bin", b"escaped")
    assert s3.get_object(Bucket="models", Key="odd dir/a b+ü.bin")["Body"].read() == b"escaped"

    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="models", Key="no/such/file")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"

    put_file(root, "swap.bin", b"first version")
    assert s3.get_object(Bucket="models", Key="swap.bin")["Body"].read() == b"first version"
    time.sleep(1.1)  # a new mtime, so nginx gives a new ETag
    put_file(root, "swap.bin", b"the second version")
    time.sleep(1.1)  # past --origin-revalidate-secs
    assert s3.get_object(Bucket="models", Key="swap.bin")["Body"].read() == b"the second version"


def test_a_plain_http_origin_is_read_only_and_not_listed(served):
    root, _, node = served
    s3 = node.client()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="models", Key="new.bin", Body=b"x")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert not (root / "new.bin").exists()
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="models")
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    assert "read by key" in e.value.response["Error"]["Message"]
