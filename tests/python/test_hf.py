"""The Hugging Face Hub façade (`--hf-bucket`), used by the real `huggingface_hub` client and its
`hf download` CLI with HF_ENDPOINT pointing at a node: repositories laid out in a bucket by
repo and revision, read by snapshot_download and hf_hub_download, including through a second
node whose hub bucket fronts the first as its S3 origin."""

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import ACCESS_KEY, SECRET_KEY, NodeProc

MiB = 1 << 20
REPO = "acme/tiny-llm"


def hub_env(endpoint: str, home: pathlib.Path) -> dict:
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_ENABLE_HF_TRANSFER": "0"}


def run_hub(code: str, env: dict) -> subprocess.CompletedProcess:
    """Runs huggingface_hub in a fresh interpreter: it reads HF_ENDPOINT once, at import."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    node = NodeProc(tmp_path_factory.mktemp("hub-node"), extra_args=("--hf-bucket", "hub"))
    s3 = node.client()
    s3.create_bucket(Bucket="hub")
    files = {
        "config.json": b'{"layers": 2}',
        "model.safetensors": os.urandom(3 * MiB + 11),
        "tokenizer/vocab.txt": b"a\nb\nc\n",
    }
    for path, data in files.items():
        s3.put_object(Bucket="hub", Key=f"models/{REPO}/main/{path}", Body=data)
    s3.put_object(Bucket="hub", Key=f"models/{REPO}/v1.0/config.json", Body=b'{"layers": 1}')
    s3.put_object(Bucket="hub", Key="datasets/acme/reviews/main/data/train.jsonl", Body=b'{"x": 1}\n' * 1000)
    yield node, files
    node.stop()


def test_snapshot_download_and_the_cli_fetch_a_model_repository(hub, tmp_path):
    node, files = hub
    env = hub_env(node.endpoint, tmp_path / "home")
    p = run_hub(f"""
from huggingface_hub import snapshot_download, hf_hub_download, model_info
d = snapshot_download({REPO!r})
print(d)
print(hf_hub_download({REPO!r}, "config.json", revision="v1.0"))
info = model_info({REPO!r})
print(info.sha, sorted(s.rfilename for s in info.siblings))
""", env)
    assert p.returncode == 0, p.stderr
    snapshot, v1, info = p.stdout.strip().splitlines()
    for path, data in files.items():
        assert (pathlib.Path(snapshot) / path).read_bytes() == data, path
    assert pathlib.Path(v1).read_bytes() == b'{"layers": 1}'
    sha, siblings = info.split(" ", 1)
    assert len(sha) == 40 and pathlib.Path(snapshot).name == sha
    assert siblings == str(sorted(files))

    # The CLI, into a plain directory.
    out = tmp_path / "cli"
    hf = pathlib.Path(sys.executable).parent / "hf"
    p = subprocess.run([str(hf), "download", REPO, "--local-dir", str(out)],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for path, data in files.items():
        assert (out / path).read_bytes() == data, path


def test_datasets_changes_and_errors_are_what_the_hub_client_expects(hub, tmp_path):
    node, _ = hub
    env = hub_env(node.endpoint, tmp_path / "home")
    p = run_hub("""
from huggingface_hub import snapshot_download
d = snapshot_download("acme/reviews", repo_type="dataset")
print(open(d + "/data/train.jsonl").read().count("\\n"))
""", env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1000"

    # A file replaced in the bucket: a new commit id, and the new bytes.
    before = run_hub(f"from huggingface_hub import model_info; print(model_info({REPO!r}).sha)", env)
    node.client().put_object(Bucket="hub", Key=f"models/{REPO}/main/config.json", Body=b'{"layers": 3}')
    p = run_hub(f"""
from huggingface_hub import hf_hub_download, model_info
print(model_info({REPO!r}).sha)
print(open(hf_hub_download({REPO!r}, "config.json")).read())
""", env)
    assert p.returncode == 0, p.stderr
    sha, content = p.stdout.strip().splitlines()
    assert sha != before.stdout.strip()
    assert content == '{"layers": 3}'

    p = run_hub("""
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError
for call, err in [(lambda: snapshot_download("acme/nothing"), RepositoryNotFoundError),
                  (lambda: snapshot_download("acme/tiny-llm", revision="v9"), RevisionNotFoundError),
                  (lambda: hf_hub_download("acme/tiny-llm", "missing.bin"), EntryNotFoundError)]:
    try:
        call()
        print("no error")
    except err as e:
        print(type(e).__name__)
""", env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"]


def test_a_second_node_serves_the_hub_from_the_first_as_its_origin_with_a_token(hub, tmp_path):
    """Node B's hub bucket fronts node A's (an S3 origin): the client talks to B, B reads each
    file from A once, and B requires a token."""
    a, files = hub
    b = NodeProc(tmp_path / "b", extra_args=(
        "--origin", "hub=s3://hub/", "--origin-endpoint", a.endpoint,
        "--hf-bucket", "hub", "--hf-token", "hf_s3swarm_test_token",
    ), extra_env={"S3SWARM_ORIGIN_ACCESS_KEY": ACCESS_KEY, "S3SWARM_ORIGIN_SECRET_KEY": SECRET_KEY})
    try:
        env = hub_env(b.endpoint, tmp_path / "home")
        code = f"""
from huggingface_hub import snapshot_download
print(snapshot_download({REPO!r}, token=TOKEN))
"""
        refused = run_hub(code.replace("TOKEN", "False"), env)
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
        p = run_hub(code.replace("TOKEN", repr("hf_s3swarm_test_token")), env)
        assert p.returncode == 0, p.stderr
        snapshot = pathlib.Path(p.stdout.strip().splitlines()[-1])
        assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
    finally:
        b.stop()
