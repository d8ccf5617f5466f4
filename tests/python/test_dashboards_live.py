"""The dashboards and alert rules against a real swarm: three nodes of the real binary (two
storage nodes and a cache-only one), a real Prometheus scraping them every second and evaluating
deploy/prometheus/alerts.yml, and some S3 load through boto3. Then every query of every panel of
every dashboard runs through Prometheus's HTTP API: it must be valid, and return data unless the
panel is listed in MAY_BE_EMPTY; every metric a panel or rule names must exist (so `or` fallbacks
cannot hide a misspelled name); every rule must load and evaluate; nothing may fire.

Needs Prometheus (Debian package `prometheus`, or PROMETHEUS_BIN). Uses swarm (UDP) addresses
127.0.9.1-3:7400, apart from the Rust tests' 127.0.1-5.x."""

import base64
import datetime
import json
import math
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import botocore.exceptions
import boto3
import pytest
import yaml
from botocore.config import Config

import test_prometheus_rules as static
from conftest import ACCESS_KEY, SECRET_KEY, NodeProc

PROMETHEUS = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus") or "/usr/bin/prometheus"
SWARM_ADDRS = ["127.0.9.1:7400", "127.0.9.2:7400", "127.0.9.3:7400"]
CACHE_CAPACITY = 8_000_000  # node 3 is cache-only and smaller than what is read through it

# Template variables as Grafana would expand them. The rate window covers the whole test (it is
# under 5 minutes), so rates and quantiles over the load are defined at query time.
TEMPLATE_VARS = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "5m", "$instance": ".*"}

# Panels (dashboard file, panel title, refId) that may return nothing (or only NaN) under this
# load, with the reason. Keep it short and honest.
MAY_BE_EMPTY: dict[tuple[str, str, str], str] = {
    ("swarm.json", "How much is read from the origins?", "A"): "the live swarm fronts no origin (test_origin.py covers origins)",
    ("swarm.json", "What is asked of the origins?", "A"): "the live swarm fronts no origin",
    ("swarm.json", "Are the origins failing?", "A"): "the live swarm fronts no origin",
    ("swarm.json", "Is write-back keeping up?", "A"): "the live swarm fronts no origin (test_origin_write_back.py covers write-back)",
    ("swarm.json", "Are pending writes reaching the origin?", "A"): "the live swarm fronts no origin",
    ("swarm.json", "How long do origin requests take?", "A"): "the live swarm fronts no origin",
    ("swarm.json", "How long do origin requests take?", "B"): "the live swarm fronts no origin",
    ("swarm.json", "What share of origin-bucket reads does the origin serve?", "A"): "the live swarm fronts no origin",
}

# Metric names a panel or rule uses that may have no series at all under this load, with the
# reason (a labelled counter only exists once one of its label sets has been counted).
MAY_BE_ABSENT: dict[str, str] = {
    "s3swarm_swarm_journal_entries_unapplied_total": "labelled by origin and reason: no series until an "
                                                     "entry is refused or held back, which a healthy swarm never does",
    "s3swarm_origin_read_bytes_total": "only nodes started with --origin export it; the live swarm fronts none",
    "s3swarm_origin_requests_total": "only nodes started with --origin export it",
    "s3swarm_origin_errors_total": "only nodes started with --origin export it",
    "s3swarm_origin_write_back_backlog_bytes": "only nodes with a write-back origin export it",
    "s3swarm_origin_write_back_backlog_objects": "only nodes with a write-back origin export it",
    "s3swarm_origin_served_bytes_total": "only nodes started with --origin export it",
    "s3swarm_origin_request_seconds_bucket": "only nodes started with --origin export it, once a request was made",
    "s3swarm_origin_write_back_total": "only nodes with a write-back origin export it, once a write was passed on",
}

# Alerts that may be pending (never firing) right after the load, with the reason.
MAY_BE_PENDING = {
    "S3swarmUnderReplicated": "storage nodes fetch the chunks placed on them in the background after the PUTs",
    "S3swarmDiskWillFillIn24h": "seconds of writes extrapolated over 24 h predict a full disk if the test machine's "
                                "disk is less than 40% free; the alert waits 1 h for the trend to hold",
    "S3swarmFsyncSlow": "the p99 of the few fsyncs a short test makes is their slowest one, and a shared CI disk "
                        "can take over 0.5 s for one (seen once, in CI); the alert waits 10 min before firing",
    "S3swarmRegistryNoLeader": "a node that has just joined follows no registry leader until the leader adds it "
                               "to the group, a second or two later; the alert waits 2 min before firing",
}



# --- Prometheus ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, tmp: pathlib.Path, targets: list[str]):
        # The compose config, pointed at the test's nodes and sped up.
        cfg = yaml.safe_load((static.PROM_DIR / "prometheus.yml").read_text())
        cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        cfg["rule_files"] = [str(static.PROM_DIR / f) for f in cfg["rule_files"]]
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "s3swarm"]
        job["static_configs"] = [{"targets": targets}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(tmp / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address={self.url[len('http://'):]}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.log_path = tmp / "prometheus.log"
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"prometheus not ready:\n{self.log_path.read_text()}")
            time.sleep(0.2)

    def api(self, path: str, post: bool = False, **params) -> dict:
        """GET (or POST, form-encoded) to the HTTP API; returns the decoded body, errors included
        ({status: error})."""
        query = urllib.parse.urlencode(params)
        url, data = (self.url + path, query.encode()) if post else (self.url + path + ("?" + query if query else ""), None)
        try:
            with urllib.request.urlopen(url, data=data, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}: {body[:200]!r}"}

    def query(self, expr: str) -> dict:
        return self.api("/api/v1/query", post=True, query=expr)

    def values(self, expr: str) -> list[float]:
        r = self.query(expr)
        assert r["status"] == "success", (expr, r)
        return [float(s["value"][1]) for s in r["data"]["result"]]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def parse_time(s: str) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, Z) as Unix seconds."""
    if s.startswith("0001-"):
        return 0.0
    head, _, frac = s.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.timezone.utc).timestamp() + float("0." + (frac or "0"))


def wait_for(what: str, check, timeout: float = 90.0, interval: float = 0.5):
    deadline = time.time() + timeout
    while True:
        last = check()
        if last is True:
            return
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {last}")
        time.sleep(interval)


# --- The swarm and its load ---------------------------------------------------------------------

def start_swarm(tmp: pathlib.Path) -> list[NodeProc]:
    secret = tmp / "cluster-secret"
    secret.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    nodes = []
    try:
        for i, addr in enumerate(SWARM_ADDRS):
            args = ["--swarm-listen", addr, "--cluster-secret-file", str(secret)]
            if i:
                args += ["--peer", SWARM_ADDRS[0]]
            if i == 2:
                args += ["--capacity", str(CACHE_CAPACITY)]
            d = tmp / f"node{i + 1}"
            d.mkdir()
            nodes.append(NodeProc(d, extra_args=tuple(args)))
    except BaseException:
        for n in nodes:
            n.stop()
        raise

    def all_see_three():
        seen = []
        for n in nodes:
            with urllib.request.urlopen(n.endpoint + "/metrics", timeout=5) as r:
                text = r.read().decode()
            alive = [line for line in text.splitlines() if line.startswith('s3swarm_swarm_members{state="alive"}')]
            seen.append(alive[0].split()[-1] if alive else None)
        return seen == ["3", "3", "3"] or seen

    wait_for("every node to see 3 alive members", all_see_three, timeout=60)
    return nodes


def put_load(nodes: list[NodeProc], bucket: str):
    """PUTs (one a duplicate, for dedup) and a multipart upload on node 1; GETs of everything
    through every node, so nodes 2 and 3 fetch chunks from peers and the cache node evicts;
    listings; 404s; a bad signature and an unknown access key."""
    c1, c2, c3 = (n.client() for n in nodes)
    c1.create_bucket(Bucket=bucket)
    blobs = {f"obj-{i}": os.urandom(3 << 20) for i in range(3)}
    blobs["obj-0-again"] = blobs["obj-0"]
    for key, body in blobs.items():
        c1.put_object(Bucket=bucket, Key=key, Body=body)
    parts = [os.urandom(5 << 20), os.urandom(1 << 20)]
    upload = c1.create_multipart_upload(Bucket=bucket, Key="multipart")["UploadId"]
    etags = [c1.upload_part(Bucket=bucket, Key="multipart", UploadId=upload, PartNumber=i + 1, Body=b)["ETag"]
             for i, b in enumerate(parts)]
    c1.complete_multipart_upload(
        Bucket=bucket, Key="multipart", UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]})
    blobs["multipart"] = b"".join(parts)

    def visible(client):
        def check():
            keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
            return keys == set(blobs) or sorted(keys)
        return check

    for c in (c2, c3):
        wait_for("the namespace to replicate", visible(c), timeout=30)
    for c in (c3, c2, c1):
        for key, body in blobs.items():
            assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
        c.list_objects_v2(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError, match="NoSuchKey"):
        c2.get_object(Bucket=bucket, Key="missing")
    with pytest.raises(botocore.exceptions.ClientError, match="404"):
        c3.head_object(Bucket=bucket, Key="missing")
    for key_id, secret in ((ACCESS_KEY, SECRET_KEY + "-wrong"), ("NOSUCHACCESSKEY", SECRET_KEY)):
        bad = boto3.client("s3", endpoint_url=nodes[0].endpoint, aws_access_key_id=key_id,
                           aws_secret_access_key=secret, region_name="us-east-1",
                           config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied"):
            bad.list_objects_v2(Bucket=bucket)


@pytest.fixture(scope="module")
def live():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="s3swarm-dashboards-"))
    nodes, prom = [], None
    try:
        nodes = start_swarm(tmp)
        targets = [n.endpoint.split("://", 1)[1] for n in nodes]
        prom = Prometheus(tmp, targets)
        wait_for("Prometheus to scrape all 3 nodes", lambda: prom.values('sum(up{job="s3swarm"})') == [3.0] or
                 prom.api("/api/v1/targets")["data"]["activeTargets"], timeout=30)

        def scraped_since(t):
            def check():
                ts = prom.values('timestamp(up{job="s3swarm"})')
                return (len(ts) == 3 and min(ts) > t) or ts
            return check

        # Labelled series (operation, status, code, source, ...) appear at their first count, and
        # rate() cannot see what happened before a series' first sample: a warm-up round creates
        # them all and gets scraped, then the measured round makes every one of them move.
        put_load(nodes, "dashboards-warmup")
        wait_for("a scrape of every node after the warm-up", scraped_since(time.time() + 1.5))
        put_load(nodes, "dashboards-live")
        load_end = time.time()

        def census_since_load():
            # Only if the metric exists at all: a missing name is reported by the tests below.
            ts = prom.values("s3swarm_store_census_timestamp_seconds")
            return not ts or (len(ts) == 3 and min(ts) > load_end) or ts

        def rules_evaluated_since_load():
            groups = prom.api("/api/v1/rules")["data"]["groups"]
            last = [parse_time(r["lastEvaluation"]) for g in groups for r in g["rules"]]
            return (bool(last) and min(last) > load_end + 1) or len(last)

        wait_for("3 scrapes of every node after the load", scraped_since(load_end + 3))
        wait_for("a census after the load on every node", census_since_load, timeout=60)
        wait_for("the rules to be evaluated after the load", rules_evaluated_since_load)
        yield type("Live", (), {"prom": prom, "nodes": nodes, "targets": targets, "load_end": load_end, "tmp": tmp})
    finally:
        if prom:
            prom.stop()
        for n in nodes:
            n.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# --- The checks -----------------------------------------------------------------------------------

def expand(expr: str) -> str:
    for var in sorted(TEMPLATE_VARS, key=len, reverse=True):
        expr = expr.replace("${" + var[1:] + "}", TEMPLATE_VARS[var]).replace(var, TEMPLATE_VARS[var])
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr


def panel_results(prom):
    """(dashboard, title, refId, expanded expr, API response) for every target."""
    for name, panel, target in static.targets():
        expr = expand(target["expr"])
        yield name, panel["title"], target["refId"], expr, prom.query(expr)


def has_data(result: list) -> bool:
    return any(not math.isnan(float(s["value"][1])) for s in result)


def test_instance_variable_lists_the_nodes(live):
    r = live.prom.api("/api/v1/label/instance/values", **{"match[]": "s3swarm_build_info"})
    assert r["status"] == "success", r
    assert sorted(r["data"]) == sorted(live.targets)


def test_alert_rules_load_and_evaluate(live):
    groups = live.prom.api("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    expected = [r.get("alert") or r.get("record") for r in static.rule_exprs()]
    assert sorted(r["name"] for r in rules) == sorted(expected)
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad


def test_no_alert_fires_on_a_healthy_swarm(live):
    may_be_pending = dict(MAY_BE_PENDING)
    # The nodes report the real file system their data directories are on. When the test machine's
    # own disk has less than 10% free (a CI host once had), S3swarmDiskNearlyFull pending is the
    # right answer, not a false alarm: allowed then, and only if the nodes' figure is the disk's.
    usage = shutil.disk_usage(live.tmp)
    free = usage.free / usage.total
    if free < 0.12:
        reported = live.prom.values("instance:s3swarm_store_disk_free:ratio")
        assert reported and all(abs(r - free) < 0.02 for r in reported), (reported, free)
        may_be_pending["S3swarmDiskNearlyFull"] = f"the test machine's disk has {free:.1%} free"
    alerts = live.prom.api("/api/v1/alerts")["data"]["alerts"]
    unexpected = [(a["labels"]["alertname"], a["state"], a["labels"].get("instance")) for a in alerts
                  if a["state"] == "firing" or a["labels"]["alertname"] not in may_be_pending]
    assert not unexpected, unexpected


def test_every_metric_a_panel_or_rule_uses_exists(live):
    """Catches a misspelled or renamed metric even where a query's `or ... * 0` would hide it."""
    recorded = {r["record"] for r in static.rule_exprs() if "record" in r}
    used = {}
    for name, panel, target in static.targets():
        for m in static.metric_names(target["expr"]):
            used.setdefault(m, f"{name} / {panel['title']}")
    for r in static.rule_exprs():
        for m in static.metric_names(r["expr"]):
            if m not in recorded:
                used.setdefault(m, f"alerts.yml / {r.get('alert') or r.get('record')}")
    missing = [f"{m} (used by {where})" for m, where in sorted(used.items())
               if m not in MAY_BE_ABSENT and not live.prom.values(f'count({{__name__="{m}", job="s3swarm"}})')]
    assert not missing, "no series in Prometheus for:\n" + "\n".join(missing)


def test_every_panel_query_is_valid_and_has_data(live, capsys):
    rows, invalid, empty = [], [], []
    for name, title, ref, expr, r in panel_results(live.prom):
        if r.get("status") != "success":
            invalid.append(f"{name} / {title!r} / {ref}: {r.get('error')}\n    {expr}")
            rows.append((name, title, ref, "ERROR", ""))
            continue
        result = r["data"]["result"]
        if r["data"]["resultType"] not in ("vector", "scalar"):
            invalid.append(f"{name} / {title!r} / {ref}: result type {r['data']['resultType']}")
        if r["data"]["resultType"] == "scalar":
            result = [{"value": result}]
        n = len(result)
        real = sum(not math.isnan(float(s["value"][1])) for s in result)
        rows.append((name, title, ref, str(n), str(real)))
        if not has_data(result) and (name, title, ref) not in MAY_BE_EMPTY:
            empty.append(f"{name} / {title!r} / {ref}: {n} series, none with a value\n    {expr}")
    # One line per panel: series (with a value) per query.
    lines: dict[str, list[str]] = {}
    for n, t, ref, count, real in rows:
        lines.setdefault(f"{n} / {t}", []).append(f"{ref}:{count}" + (f"({real})" if real not in ("", count) else ""))
    width = max(map(len, lines))
    table = [f"{'dashboard / panel':<{width}}  series per query (with a value, if fewer)"]
    table += [f"{k:<{width}}  {' '.join(v)}" for k, v in lines.items()]
    with capsys.disabled():
        print("\n" + "\n".join(table))
    stale = set(MAY_BE_EMPTY) - {(n, t, ref) for n, t, ref, *_ in rows}
    assert not stale, f"MAY_BE_EMPTY names panels that do not exist: {stale}"
    assert not invalid, "invalid queries:\n" + "\n".join(invalid)
    assert not empty, "panels without data under load:\n" + "\n".join(empty) + "\n\n" + "\n".join(table)


def by_title(prom, dashboard: str, title: str, ref: str = "A") -> list:
    for name, panel, target in static.targets():
        if name == dashboard and panel["title"] == title and target["refId"] == ref:
            r = prom.query(expand(target["expr"]))
            assert r["status"] == "success", r
            return r["data"]["result"]
    raise AssertionError(f"no panel {title!r} ({ref}) in {dashboard}")


def test_panels_show_what_the_load_did(live):
    """A few panels whose answer this load determines."""
    prom = live.prom
    value = lambda result: {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in result}

    up = value(by_title(prom, "overview.json", "Are all nodes up?", "A"))
    down = value(by_title(prom, "overview.json", "Are all nodes up?", "B"))
    assert list(up.values()) == [3.0] and list(down.values()) == [0.0], (up, down)

    alive = value(by_title(prom, "overview.json", "Does every node see the whole swarm?", "A"))
    assert list(alive.values()) == [3.0], alive

    versions = by_title(prom, "overview.json", "Which version runs where?", "A")
    assert sorted(s["metric"]["instance"] for s in versions) == sorted(live.targets)
    assert all(s["metric"].get("version") for s in versions), versions

    shares = {s["metric"].get("source"): float(s["value"][1])
              for s in by_title(prom, "overview.json", "Is the swarm offloading the origin?")}
    assert {"local", "peer"} <= set(shares) and abs(sum(shares.values()) - 1) < 1e-9, shares

    codes = {s["metric"].get("code") for s in by_title(prom, "overview.json", "Error rate by S3 code")}
    assert "NoSuchKey" in codes, codes
    refused = {s["metric"].get("code") for s in by_title(prom, "s3-api.json", "Is anyone being refused?")}
    assert refused & {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}, refused

    roles = {s["metric"].get("role") for s in by_title(prom, "swarm.json", "Which node is which?")}
    assert roles == {"storage", "cache"}, roles

    # obj-0 was stored twice: the node that received the PUTs holds its chunks with 2 references.
    dedup = [float(s["value"][1]) for s in by_title(prom, "store.json", "Dedup ratio")]
    assert dedup and max(dedup) > 1.05, dedup

    lost = value(by_title(prom, "overview.json", "Is data under-replicated or lost?", "A"))
    assert list(lost.values()) == [0.0], lost
