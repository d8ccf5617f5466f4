"""Static checks of the monitoring bundle: the Prometheus config and alert rules (promtool), their
unit tests (alerts.test.yml), and the Grafana dashboards against the metric contract in
docs/metrics.md. test_dashboards_live.py runs the same queries against a real swarm."""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
DASH_DIR = ROOT / "deploy" / "grafana" / "dashboards"
DASHBOARDS = ["overview.json", "s3-api.json", "swarm.json", "store.json"]
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Series a panel or rule may use besides the documented ones: Prometheus's own per-target series.
BUILTIN_SERIES = {"up"}

# Documented metrics no dashboard panel or alert needs to show, with the reason. Keep it empty
# unless a metric really is not worth watching.
UNWATCHED = {}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "inf", "nan", "atan2", "start", "end",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        # tests/run installs it; a missing tool is a failure, never a skipped check.
        pytest.fail("promtool not installed (Debian: apt-get install prometheus)")
    return path


# --- docs/metrics.md ----------------------------------------------------------------------------

def documented_metrics() -> dict[str, str]:
    """name -> type, from the tables of docs/metrics.md (a cell may list several names)."""
    out = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", cells[0]):
            out[name] = cells[1].split()[0]
    assert len(out) > 40, f"could not read the metric tables of {METRICS_DOC}"
    return out


def series_names(documented: dict[str, str]) -> dict[str, str]:
    """Every series name a documented metric exports -> the documented metric: a histogram
    exports <name>_bucket, _sum and _count."""
    out = {}
    for name, kind in documented.items():
        if kind == "histogram":
            for suffix in HISTOGRAM_SUFFIXES:
                out[name + suffix] = name
        else:
            out[name] = name
    return out


# --- PromQL -------------------------------------------------------------------------------------

def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, not a parser: strings, label
    matchers, range/subquery brackets and grouping label lists are removed, then every remaining
    identifier not called as a function and not a keyword is a metric name)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_lexer():
    assert metric_names(
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{instance=~"$instance", x!~"y|z"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert metric_names('(sum by (i) (rate(b{s=~"5.."}[5m])) or sum(rate(c[5m])) * 0) / ignoring (s) group_left d') == {"b", "c", "d"}
    assert metric_names("time() - e > 20 * f + 900 and on (job, instance) g offset 1h") == {"e", "f", "g"}
    assert metric_names("predict_linear(h[6h], 24 * 3600) < 1e9 and vector(0)") == {"h"}


# --- Dashboards ---------------------------------------------------------------------------------

def load_dashboard(name: str) -> dict:
    return json.loads((DASH_DIR / name).read_text())


def panels(dashboard: dict):
    """Every panel, rows' nested (collapsed) panels included."""
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def targets():
    """(dashboard file, panel, target) for every query of every dashboard."""
    for name in DASHBOARDS:
        for p in panels(load_dashboard(name)):
            for tg in p.get("targets", []):
                yield name, p, tg


def rule_exprs():
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            yield rule


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_structure(name):
    d = load_dashboard(name)
    assert d["uid"].startswith("s3swarm-") and d["title"].startswith("s3swarm / ")
    assert 36 <= d["schemaVersion"] <= 41
    assert "s3swarm" in d["tags"]
    (var,) = [v for v in d["templating"]["list"] if v["name"] == "instance"]
    assert var["type"] == "query" and var["multi"] and var["includeAll"] and var["allValue"] == ".*"
    assert var["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    assert var["definition"] == "label_values(s3swarm_build_info, instance)"
    assert var["query"]["query"] == var["definition"]

    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}: {sorted(ids)}"
    occupied = set()
    for p in panels(d):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, (name, p["title"], g)
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not occupied & cells, f"{name}: panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] == "row":
            continue
        assert p["title"].strip() and p.get("description", "").strip(), (name, p["id"])
        assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}, (name, p["title"])
        assert p["targets"], (name, p["title"])
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), (name, p["title"])


def test_dashboard_uids_and_titles_unique():
    ds = [load_dashboard(n) for n in DASHBOARDS]
    assert len({d["uid"] for d in ds}) == len(ds)
    assert len({d["title"] for d in ds}) == len(ds)


def test_every_target_has_a_well_formed_query():
    """Every query: non-empty; every selector filtered by the instance variable (bare only for the
    s3swarm_build_info join that restricts process_* to s3swarm targets); counters rated over
    $__rate_interval (Grafana sizes it from the scrape interval), fixed windows only for trends."""
    problems = []
    for name, p, tg in targets():
        where = f"{name} / {p['title']!r} / {tg.get('refId')}"
        expr = tg.get("expr", "").strip()
        if not expr:
            problems.append(f"{where}: empty expr")
            continue
        if tg.get("datasource", {}).get("uid", "prometheus") != "prometheus":
            problems.append(f"{where}: datasource {tg['datasource']}")
        for word in metric_names(expr):
            for m in re.finditer(rf"(?<![\w:]){re.escape(word)}(?![\w:])(\s*\{{([^}}]*)\}})?", expr):
                matchers = m.group(2)
                if matchers is None:
                    if word != "s3swarm_build_info" or not re.search(r"and on \(job, instance\) s3swarm_build_info", expr):
                        problems.append(f"{where}: {word} without instance=~\"$instance\"")
                elif 'instance=~"$instance"' not in matchers:
                    problems.append(f"{where}: {word}{{{matchers}}} lacks instance=~\"$instance\"")
        for fn, window in re.findall(r"\b(rate|irate|increase|delta|deriv|predict_linear|\w+_over_time)\s*\([^\[]*\[([^\]]*)\]", expr):
            if fn in ("rate", "irate", "increase") and window != "$__rate_interval":
                problems.append(f"{where}: {fn}(...[{window}]) should use $__rate_interval")
    assert not problems, "\n".join(problems)


def test_dashboards_use_only_documented_metrics():
    known = series_names(documented_metrics())
    problems = []
    for name, p, tg in targets():
        for word in metric_names(tg["expr"]):
            if word not in known and word not in BUILTIN_SERIES:
                problems.append(f"{name} / {p['title']!r} / {tg['refId']}: {word} is not in docs/metrics.md")
    assert not problems, "\n".join(problems)


def test_rules_use_only_documented_metrics():
    known = series_names(documented_metrics())
    recorded = {r["record"] for r in rule_exprs() if "record" in r}
    problems = []
    for r in rule_exprs():
        for word in metric_names(r["expr"]):
            if word not in known and word not in BUILTIN_SERIES and word not in recorded:
                problems.append(f"{r.get('alert') or r.get('record')}: {word} is not in docs/metrics.md")
    assert not problems, "\n".join(problems)


def watched_metrics() -> set[str]:
    """Documented metrics some dashboard panel or alert/recording rule reads."""
    to_doc = series_names(documented_metrics())
    used = set()
    for _, _, tg in targets():
        used |= metric_names(tg["expr"])
    for r in rule_exprs():
        used |= metric_names(r["expr"])
    return {to_doc[w] for w in used if w in to_doc}


def test_every_documented_metric_is_watched():
    """Nothing is exported unwatched: each documented metric is on a dashboard or in a rule, or
    listed in UNWATCHED with the reason."""
    documented = set(documented_metrics())
    missing = documented - watched_metrics() - set(UNWATCHED)
    assert not missing, f"documented but on no dashboard and in no rule: {sorted(missing)}"
    stale = set(UNWATCHED) - documented
    assert not stale, f"UNWATCHED lists metrics docs/metrics.md does not: {sorted(stale)}"


# --- Prometheus config and rules ----------------------------------------------------------------

def run(cmd, cwd=PROM_DIR):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_promtool_check_config():
    """prometheus.yml is valid and the rule file it references (alerts.yml) loads."""
    out = run([promtool(), "check", "config", "prometheus.yml"])
    assert "alerts.yml" in out and "SUCCESS" in out, out


def test_prometheus_config_scrapes_the_compose_nodes():
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert cfg["global"]["scrape_interval"] == "15s"
    assert cfg["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "s3swarm"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets_ = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets_ == ["node1:9000", "node2:9000", "node3:9000"]


def test_promtool_check_rules():
    out = run([promtool(), "check", "rules", "alerts.yml"])
    assert "SUCCESS" in out, out


def test_promtool_test_rules():
    """alerts.test.yml: each alert fires on synthetic series where it should and stays quiet on the
    look-alikes next to it."""
    out = run([promtool(), "test", "rules", "alerts.test.yml"])
    assert "SUCCESS" in out, out


def test_every_alert_is_labelled_and_unit_tested():
    alerts = [r for r in rule_exprs() if "alert" in r]
    assert len(alerts) >= 12
    tests = yaml.safe_load((PROM_DIR / "alerts.test.yml").read_text())
    fires, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    problems = []
    for r in alerts:
        name = r["alert"]
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity label missing or unknown")
        for a in ("summary", "description"):
            if not r.get("annotations", {}).get(a, "").strip():
                problems.append(f"{name}: no {a} annotation")
        if name not in fires:
            problems.append(f"{name}: no unit test shows it firing")
        if name not in quiet:
            problems.append(f"{name}: no unit test shows it quiet")
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert not problems, "\n".join(problems)
