"""Starts a real s3swarm node for the boto3 and aws CLI tests."""

import os
import pathlib
import re
import shutil
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


class NodeProc:
    def __init__(self, tmp: pathlib.Path):
        self.data_dir = tmp / "data"
        env = dict(os.environ, S3SWARM_ACCESS_KEY=ACCESS_KEY, S3SWARM_SECRET_KEY=SECRET_KEY, S3SWARM_LOG="warn")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)],
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
            m = re.search(r"http://[0-9.:]+", line)
            if m:
                self.endpoint = m.group(0)
        with urllib.request.urlopen(self.endpoint + "/healthz") as r:
            assert r.status == 200

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def node():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="s3swarm-pytest-"))
    n = NodeProc(tmp)
    yield n
    n.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(node):
    """boto3 with its default settings: today's boto3 sends CRC checksums on every upload."""
    return boto3.client(
        "s3",
        endpoint_url=node.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(s3, request):
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-b"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws(node, tmp_path):
    """Runs the aws CLI against the node; returns the completed process."""
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
        p = subprocess.run([cli, "--endpoint-url", node.endpoint, *args], env=env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    return run
