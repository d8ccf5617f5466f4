"""Starts real s3swarm nodes for the boto3 and aws CLI tests: one over plain HTTP, one over
HTTPS with a self-signed certificate made at test time. The boto3 suite (the `s3` fixture)
runs against both; the CLI tests use the HTTP node unless they ask for `tls_node`."""

import hashlib
import os
import pathlib
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parents[2]
ACCESS_KEY = "PYTESTACCESSKEY"
SECRET_KEY = "pytest-secret-key-0123456789"


def binary() -> str:
    if os.environ.get("S3SWARM_BIN"):
        return os.environ["S3SWARM_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "release" / "s3swarm")


def make_cert(directory: pathlib.Path) -> tuple[str, str]:
    """A self-signed certificate for localhost / 127.0.0.1, made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


class NodeProc:
    def __init__(self, tmp: pathlib.Path, tls: bool = False, extra_args: tuple = (), extra_env: dict | None = None):
        self.data_dir = tmp / "data"
        self.ca_bundle = None
        args = list(extra_args)
        if tls:
            cert, key = make_cert(tmp)
            self.ca_bundle = cert
            args += ["--tls-cert", cert, "--tls-key", key]
        env = {**os.environ, "S3SWARM_ACCESS_KEY": ACCESS_KEY, "S3SWARM_SECRET_KEY": SECRET_KEY,
               "S3SWARM_LOG": os.environ.get("S3SWARM_TEST_LOG", "warn"), **(extra_env or {})}
        self.proc = subprocess.Popen(
            [binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir), *args],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        deadline = time.time() + 60
        self.endpoint = None
        while self.endpoint is None:
            if time.time() > deadline:
                raise RuntimeError("s3swarm did not start")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"s3swarm exited with {self.proc.wait()}")
            m = re.search(r"https?://[0-9.:]+", line)
            if m:
                self.endpoint = m.group(0)
        assert self.endpoint.startswith("https://" if tls else "http://"), self.endpoint
        with urllib.request.urlopen(self.endpoint + "/healthz", context=self.ssl_context()) as r:
            assert r.status == 200
        LIVE_NODES.append(self)

    def server_errors(self) -> dict[str, float]:
        """The retried server errors this node answered, by operation and status (its metrics)."""
        if self.proc.poll() is not None:
            return {}
        with urllib.request.urlopen(self.endpoint + "/metrics", context=self.ssl_context(), timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if 'operation="Readyz"' in line:
                continue  # readiness answers 503 while not ready: that is its job
            if line.startswith("s3swarm_s3_requests_total{") and any(f'status="{s}"' in line for s in RETRIED):
                labels, value = line.rsplit(" ", 1)
                out[labels] = float(value)
        return out

    def ssl_context(self):
        """For urllib: trusts this node's certificate (None over plain HTTP)."""
        return ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else None

    def client(self, signature_version=None, **s3_config):
        """boto3 with its default settings, path-style, trusting this node's certificate."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            verify=self.ca_bundle,
            config=Config(s3={"addressing_style": "path", **s3_config}, signature_version=signature_version),
        )

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        if self in LIVE_NODES:
            LIVE_NODES.remove(self)


# Statuses botocore retries by itself (501 NotImplemented and 507 InsufficientStorage are
# final answers).
RETRIED = (500, 502, 503, 504)

# Every node started and not yet stopped, for the server-error check below.
LIVE_NODES: list[NodeProc] = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "server_errors: the test makes a node answer 5xx on purpose (not a failure)"
    )


@pytest.fixture(autouse=True)
def no_unexpected_server_errors(request):
    """Fails a test during which a node answered a 5xx it did not provoke on purpose: boto3
    retries 500 and 503 by itself, so without this a test could pass through a server error."""
    before = {n: n.server_errors() for n in LIVE_NODES}
    yield
    if request.node.get_closest_marker("server_errors"):
        return
    for n in list(LIVE_NODES):
        now = n.server_errors()
        grown = {k: v - before.get(n, {}).get(k, 0) for k, v in now.items() if v > before.get(n, {}).get(k, 0)}
        assert not grown, f"{n.endpoint} answered server errors during the test: {grown}"


def start_node(**kwargs):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="s3swarm-pytest-"))
    n = NodeProc(tmp, **kwargs)
    yield n
    n.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def node():
    """A node serving plain HTTP."""
    yield from start_node()


@pytest.fixture(scope="session")
def tls_node():
    """A node serving HTTPS with a self-signed certificate (`tls_node.ca_bundle`)."""
    yield from start_node(tls=True)


@pytest.fixture(scope="session", params=["http", "https"])
def s3_node(request):
    """The node the `s3` client talks to: every test using `s3` runs over HTTP and HTTPS."""
    return request.getfixturevalue("node" if request.param == "http" else "tls_node")


@pytest.fixture(scope="session")
def s3(s3_node):
    """boto3 with its default settings: today's boto3 sends CRC checksums on every upload
    (over HTTPS in aws-chunked trailers, over HTTP in headers)."""
    return s3_node.client()


@pytest.fixture(scope="session")
def http_s3(node):
    """boto3 against the plain-HTTP node only."""
    return node.client()


def bucket_name(request) -> str:
    """Readable and unique per test id: parametrized ids ([https-CRC32C]) can differ only
    past the length a bucket name allows, so a digest of the whole id keeps them apart."""
    name = request.node.name
    readable = re.sub(r"[^a-z0-9-]", "-", name.lower())[:48].strip("-")
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


@pytest.fixture
def bucket(s3, request):
    name = bucket_name(request)
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws(node, tmp_path):
    """Runs the aws CLI against the plain-HTTP node; returns the completed process."""
    return aws_runner(node, tmp_path)


@pytest.fixture
def tls_aws(tls_node, tmp_path):
    """Runs the aws CLI against the HTTPS node, trusting its certificate with --ca-bundle."""
    return aws_runner(tls_node, tmp_path)


def aws_runner(node, tmp_path):
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"),
    )
    cli = shutil.which("aws", path=os.path.dirname(os.path.realpath(__import__("sys").executable)) + os.pathsep + env["PATH"])

    def run(*args, check=True):
        tls = ["--ca-bundle", node.ca_bundle] if node.ca_bundle else []
        p = subprocess.run([cli, "--endpoint-url", node.endpoint, *tls, *args], env=env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    return run
