"""The deployment artifacts in deploy/ are well-formed and agree with each other and with the
binary: schemas (Kubernetes, compose spec, systemd), the Dockerfile's structure, and the
cross-references a typo would break (probe ports, Secret keys, env var names that
`s3swarm serve --help` knows, mount paths, scrape targets).

Nothing here builds the image or starts the compose stack or a cluster: deploy/README.md says
what is and is not checked."""

import fnmatch
import ipaddress
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

import pytest
import yaml
from conftest import ROOT, binary

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "systemd" / "s3swarm.service"
ENV_FILE = DEPLOY / "systemd" / "s3swarm.env"
DATA_DIR = "/var/lib/s3swarm"

# Kubernetes versions whose bundled schemas every manifest must satisfy, strictly (unknown
# fields fail): the oldest we document (native sidecars need >= 1.29) and the newest shipped.
K8S_MIN_VERSION = "1.31.0"
# Highest acceptable `systemd-analyze security` exposure (0 = fully locked down, 10 = none).
# The unit scores 1.1 with systemd 252 (Debian 12); dropping DynamicUser= or the system call
# filter pushes it to 1.4-1.5. Another systemd version may weigh things differently: re-measure.
MAX_SYSTEMD_EXPOSURE = 1.3


# ---- helpers ---------------------------------------------------------------------------------


def load_yaml_docs(path: pathlib.Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_objects() -> list[tuple[str, dict]]:
    objs = [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in load_yaml_docs(p)]
    assert objs, f"no manifests in {K8S}"
    return objs


def k8s_one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in k8s_objects() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/kubernetes, found {len(found)}"
    return found[0]


def is_s3swarm_image(image: str) -> bool:
    return re.search(r"(^|/)s3swarm(:|@|$)", image) is not None


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec.get("containers", [])


def s3swarm_servers(spec: dict) -> list[dict]:
    """Containers of the pod that run `s3swarm serve` (not the chown init step)."""
    return [c for c in all_containers(spec) if is_s3swarm_image(c["image"]) and (c.get("args") or [None])[0] == "serve"]


def workloads() -> list[dict]:
    return [d for _, d in k8s_objects() if d["kind"] in ("DaemonSet", "Deployment", "StatefulSet", "Job")]


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def config_file_of(container: dict, spec: dict) -> tuple[str, dict]:
    """The TOML text the container's `--config` points at, through its ConfigMap mount."""
    args = container["args"]
    assert "--config" in args, f"{container['name']}: no --config in {args}"
    path = args[args.index("--config") + 1]
    mount_dir, key = path.rsplit("/", 1)
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    assert mount_dir in mounts, f"{container['name']}: --config {path} is not under a volume mount ({sorted(mounts)})"
    volume = {v["name"]: v for v in spec["volumes"]}[mounts[mount_dir]]
    assert "configMap" in volume, f"--config {path} is not on a ConfigMap volume"
    cm = k8s_one("ConfigMap", volume["configMap"]["name"])
    assert key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key!r} (has {sorted(cm['data'])})"
    return cm["data"][key], tomllib.loads(cm["data"][key])


def container_port(container: dict, port) -> dict:
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p
    raise AssertionError(f"{container['name']}: no container port {port!r}")


def mount_of(container: dict, spec: dict, path: str) -> tuple[dict, dict]:
    """The volume mount holding `path` (longest mountPath prefix) and its volume."""
    best = None
    for m in container.get("volumeMounts", []):
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"):
            if best is None or len(m["mountPath"]) > len(best["mountPath"]):
                best = m
    assert best is not None, f"{container['name']}: nothing is mounted at {path}"
    return best, {v["name"]: v for v in spec["volumes"]}[best["name"]]


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def compose() -> dict:
    return load_yaml_docs(COMPOSE)[0]


def compose_nodes() -> dict[str, dict]:
    nodes = {n: s for n, s in compose()["services"].items() if "build" in s or is_s3swarm_image(s.get("image", ""))}
    assert nodes, "no s3swarm service in deploy/compose.yaml"
    return nodes


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: str(v) for k, v in env.items()}


def compose_binds(service: dict) -> dict[str, str]:
    """target -> source of the service's volumes given in short syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            out[parts[1]] = parts[0]
        else:
            out[v["target"]] = v.get("source", "")
    return out


def dockerfile_stages() -> list[list[tuple[str, str, list]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments, [(heredoc name, body)])."""
    lines = DOCKERFILE.read_text().splitlines()
    stages: list[list] = [[]]
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue
            line = line.rstrip()[:-1] + " " + nxt.strip()
        heredocs = []
        for m in re.finditer(r"<<-?([\"']?)([A-Za-z_]\w*)\1", line):
            body = []
            while i < len(lines) and lines[i].strip() != m.group(2):
                body.append(lines[i])
                i += 1
            i += 1
            heredocs.append((m.group(2), "\n".join(body) + "\n"))
        instr, _, args = line.strip().partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        stages[-1].append((instr.upper(), args.strip(), heredocs))
    return stages[1:]


def dockerfile_user_uid() -> int:
    users = [args for instr, args, _ in dockerfile_stages()[-1] if instr == "USER"]
    assert users, "the final stage has no USER: the container would run as root"
    user = users[-1].split(":")[0]
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert user.isdigit(), f"USER {users[-1]}: use a numeric uid so runAsNonRoot can check it"
    assert int(user) != 0, "USER 0 is root"
    return int(user)


def stage_image(stage) -> str:
    (args,) = [a for instr, a, _ in stage if instr == "FROM"]
    return [t for t in args.split() if not t.startswith("--")][0]


def dockerignore_patterns() -> list[str]:
    path = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
    return [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough: the last matching pattern wins; a pattern matching a
    directory excludes what is inside it."""
    def matches(pattern, p):
        rx = re.escape(pattern.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = p.split("/")
        return any(re.fullmatch(rx, "/".join(parts[:n])) for n in range(1, len(parts) + 1))

    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        if matches(pat.lstrip("!"), path):
            ignored = not neg
    return ignored


def unit_values(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", UNIT.read_text(), re.M)


# ---- the binary's own list of environment variables ------------------------------------------


@pytest.fixture(scope="module")
def known_env() -> set[str]:
    """Every `[env: NAME=]` that `s3swarm serve --help` prints."""
    exe = binary()
    if not os.access(exe, os.X_OK):
        pytest.fail(f"{exe} does not exist: build it first (cargo build --release) or set S3SWARM_BIN")
    out = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)=?", out))
    assert "S3SWARM_LISTEN" in names, f"unexpected help output:\n{out}"
    return names


def used_env_names() -> dict[str, set[str]]:
    """S3SWARM_* names each artifact sets for s3swarm, by artifact."""
    used: dict[str, set[str]] = {}
    for node, svc in compose_nodes().items():
        used.setdefault(f"compose.yaml ({node})", set()).update(compose_env(svc))
    for obj in workloads():
        for c in s3swarm_servers(pod_spec(obj)):
            used.setdefault(f"kubernetes {obj['kind']}/{obj['metadata']['name']}/{c['name']}", set()).update(env_map(c))
    # Commented-out assignments in the env file are documentation of names too.
    used["systemd/s3swarm.env"] = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_FILE.read_text(), re.M))
    unit_env = set()
    for value in unit_values("Environment"):
        unit_env.update(tok.split("=", 1)[0] for tok in shlex.split(value))
    used["systemd/s3swarm.service"] = unit_env
    used["Dockerfile (runtime stage)"] = {
        tok.split("=", 1)[0] for instr, args, _ in dockerfile_stages()[-1] if instr == "ENV" for tok in shlex.split(args)
    }
    return {k: {n for n in v if n.startswith("S3SWARM_")} for k, v in used.items()}


def test_every_s3swarm_env_var_in_deploy_is_one_the_binary_knows(known_env):
    used = used_env_names()
    unknown = {where: sorted(names - known_env) for where, names in used.items() if names - known_env}
    assert not unknown, f"variables `s3swarm serve --help` does not list: {unknown}"
    # The Kubernetes manifests and the env file rely on these; the check above must cover them.
    everything = set().union(*used.values())
    for name in ("S3SWARM_SWARM_ADVERTISE", "S3SWARM_PEERS", "S3SWARM_CLUSTER_SECRET_FILE", "S3SWARM_ACCESS_KEY"):
        assert name in everything, f"{name} is used nowhere in deploy/ any more; update this test"


# ---- every file parses -----------------------------------------------------------------------


def deploy_data_files() -> list[pathlib.Path]:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json") and p.is_file())
    return files


def test_deploy_has_yaml_and_json_files():
    names = {p.relative_to(DEPLOY).as_posix() for p in deploy_data_files()}
    assert {"compose.yaml", "kubernetes/daemonset.yaml"} <= names, names


@pytest.mark.parametrize("path", deploy_data_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_file_parses(path):
    if path.suffix == ".json":
        json.loads(path.read_text())
    else:
        assert load_yaml_docs(path), f"{path} is empty"


# ---- Kubernetes ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [K8S_MIN_VERSION, "latest"])
def test_kubernetes_manifests_validate_strictly(version):
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    errors = []
    for name, obj in k8s_objects():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.absolute_path)
            errors.append(f"{name} {obj.get('kind')}/{obj.get('metadata', {}).get('name')} at {where}: {e.message}")
        except Exception as e:  # a missing schema for the kind/version is a failure too
            errors.append(f"{name} {obj.get('kind')}: {type(e).__name__}: {e}")
    assert not errors, f"Kubernetes {version}:\n" + "\n".join(errors)


def test_services_and_selectors_match_the_daemonset():
    ds = k8s_one("DaemonSet")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (server,) = s3swarm_servers(pod_spec(ds))
    services = [d for _, d in k8s_objects() if d["kind"] == "Service"]
    for svc in services:
        assert svc["spec"]["selector"].items() <= labels.items(), f"Service {svc['metadata']['name']} selects no s3swarm pod"
        for p in svc["spec"]["ports"]:
            target = container_port(server, p.get("targetPort", p["port"]))
            assert target.get("protocol", "TCP") == p.get("protocol", "TCP"), f"{svc['metadata']['name']} port {p}"
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1, "one headless Service for peer discovery"
    peers = headless[0]["spec"]
    assert peers.get("publishNotReadyAddresses") is True, "joining nodes must be resolvable before they are ready"
    assert [(p["port"], p["protocol"]) for p in peers["ports"]] == [(7400, "UDP")]
    s3 = [s for s in services if s["spec"].get("clusterIP") != "None"]
    assert [(p["port"], p.get("protocol", "TCP")) for p in s3[0]["spec"]["ports"]] == [(9000, "TCP")]


@pytest.mark.parametrize("kind", ["DaemonSet", "Job"])
def test_probes_hit_healthz_and_readyz_on_the_s3_port(kind):
    obj = k8s_one(kind)
    spec = pod_spec(obj)
    servers = s3swarm_servers(spec)
    assert servers, f"{kind}: no s3swarm container"
    for c in servers:
        _, conf = config_file_of(c, spec)
        listen = env_map(c).get("S3SWARM_LISTEN", {}).get("value") or conf.get("listen", "127.0.0.1:9000")
        host, port = split_host_port(listen)
        assert host in ("0.0.0.0", "::"), f"{c['name']} listens on {listen}: kubelet probes come from outside the pod"
        assert not conf.get("tls_cert"), "probes use HTTP; with TLS they need scheme: HTTPS"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{kind}/{c['name']} has no {probe}"
            get = c[probe]["httpGet"]
            # Ready only once caught up with the swarm (it refuses creates until then);
            # alive as long as its store answers.
            want = "/readyz" if probe == "readinessProbe" else "/healthz"
            assert get["path"] == want, f"{probe}: {get}"
            assert get.get("scheme", "HTTP") == "HTTP"
            p = container_port(c, get["port"])
            assert p["containerPort"] == port and p.get("protocol", "TCP") == "TCP", f"{probe} port {get['port']} is not {listen}"
        if kind == "DaemonSet":
            annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
            assert annotations.get("prometheus.io/port") == str(port)
            assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"


def test_secret_and_configmap_references_exist():
    secrets = {d["metadata"]["name"]: d for _, d in k8s_objects() if d["kind"] == "Secret"}
    configmaps = {d["metadata"]["name"]: d for _, d in k8s_objects() if d["kind"] == "ConfigMap"}

    def secret_keys(name):
        assert name in secrets, f"Secret {name!r} is referenced but not defined in deploy/kubernetes"
        s = secrets[name]
        return set(s.get("stringData", {})) | set(s.get("data", {}))

    checked = 0
    for obj in workloads():
        spec = pod_spec(obj)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in all_containers(spec):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{c['name']} mounts undefined volume {m['name']}"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_keys(ref["name"]), f"{c['name']} env {e['name']}: no key {ref['key']}"
                    checked += 1
        for v in volumes.values():
            if "secret" in v:
                keys = secret_keys(v["secret"]["secretName"])
                for item in v["secret"].get("items", []):
                    assert item["key"] in keys, f"volume {v['name']}: Secret has no key {item['key']}"
                    checked += 1
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"ConfigMap {v['configMap']['name']} is not defined"
                checked += 1
    assert checked >= 6, "the workloads should read the Secret and ConfigMap"


@pytest.mark.parametrize("kind", ["DaemonSet", "Job"])
def test_config_file_paths_are_mounted_and_swarm_addresses_agree(kind):
    obj = k8s_one(kind)
    spec = pod_spec(obj)
    peers_svc = next(d for _, d in k8s_objects() if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    for c in s3swarm_servers(spec):
        _, conf = config_file_of(c, spec)
        env = env_map(c)
        # Data directory: the hostPath (DaemonSet) or an emptyDir cache (sidecar).
        m, vol = mount_of(c, spec, conf["data_dir"])
        assert m["mountPath"] == conf["data_dir"] and not m.get("readOnly")
        if kind == "DaemonSet":
            assert vol.get("hostPath") == {"path": DATA_DIR, "type": "DirectoryOrCreate"}, vol
        # The cluster secret file is an item of a Secret volume.
        secret_path = env.get("S3SWARM_CLUSTER_SECRET_FILE", {}).get("value") or conf["cluster_secret_file"]
        m, vol = mount_of(c, spec, secret_path)
        rel = secret_path[len(m["mountPath"]) :].lstrip("/")
        assert "secret" in vol and rel in [i["path"] for i in vol["secret"].get("items", [])], f"{secret_path} is not a Secret item"
        # Swarm: bind the wildcard, advertise the pod IP, join through the headless Service.
        swarm_host, swarm_port = split_host_port(env.get("S3SWARM_SWARM_LISTEN", {}).get("value") or conf["swarm_listen"])
        swarm = container_port(c, "swarm")
        assert (swarm["containerPort"], swarm["protocol"]) == (swarm_port, "UDP")
        advertise = env["S3SWARM_SWARM_ADVERTISE"]["value"]
        m = re.fullmatch(r"\$\((\w+)\):(\d+)", advertise)
        assert m and int(m.group(2)) == swarm_port, f"S3SWARM_SWARM_ADVERTISE={advertise}"
        assert env[m.group(1)]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        (svc_port,) = peers_svc["spec"]["ports"]
        for peer in env["S3SWARM_PEERS"]["value"].split(","):
            host, port = split_host_port(peer)
            assert host.split(".")[0] == peers_svc["metadata"]["name"] and port == svc_port["port"] == swarm_port, peer


def test_env_references_are_defined_earlier_in_the_same_container():
    checked = 0
    for obj in workloads():
        for c in all_containers(pod_spec(obj)):
            seen = set()
            for e in c.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert ref in seen, f"{c['name']}: {e['name']} uses $({ref}) before it is defined"
                    checked += 1
                seen.add(e["name"])
    assert checked, "no $(VAR) references found"


def test_s3swarm_containers_are_locked_down():
    uid = dockerfile_user_uid()
    images = set()
    for obj in workloads():
        spec = pod_spec(obj)
        pod_sc = spec.get("securityContext", {})
        assert spec.get("enableServiceLinks") is False, f"{obj['metadata']['name']}: Service links inject S3SWARM_* variables"
        for c in all_containers(spec):
            sc = c.get("securityContext", {})
            eff = {**pod_sc, **sc}
            where = f"{obj['kind']}/{c['name']}"
            assert "requests" in c.get("resources", {}) and "memory" in c["resources"].get("limits", {}), f"{where}: resources"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert eff.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            if c in s3swarm_servers(spec):
                images.add(c["image"])
                assert eff.get("runAsNonRoot") is True and eff.get("runAsUser") == uid, f"{where} must run as {uid}"
                assert not sc.get("capabilities", {}).get("add"), where
            elif eff.get("runAsUser") == 0:
                # Only the step that hands the hostPath to the service user may be root.
                assert c["command"][0] == "chown" and sc["capabilities"]["add"] == ["CHOWN"], where
    assert len(images) == 1, f"every s3swarm container should run the same image: {images}"


def test_sidecar_example_is_a_native_sidecar_the_trainer_reaches_on_localhost():
    job = k8s_one("Job")
    spec = pod_spec(job)
    sidecars = [c for c in spec.get("initContainers", []) if is_s3swarm_image(c["image"])]
    assert len(sidecars) == 1, "s3swarm runs as an init container (native sidecar)"
    sidecar = sidecars[0]
    assert sidecar.get("restartPolicy") == "Always", "a native sidecar needs restartPolicy: Always"
    assert "startupProbe" in sidecar, "without a startup probe the trainer may start before S3 answers"
    _, conf = config_file_of(sidecar, spec)
    _, port = split_host_port(conf["listen"])
    assert "S3SWARM_CAPACITY" in env_map(sidecar), "a short-lived pod should be a cache-only member"
    trainers = spec["containers"]
    assert trainers and all(env_map(t)["AWS_ENDPOINT_URL"]["value"] == f"http://127.0.0.1:{port}" for t in trainers)


# ---- the configuration files are accepted by the real binary ---------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_files() -> dict[str, str]:
    out = {}
    cm = k8s_one("ConfigMap")
    for key, text in cm["data"].items():
        out[f"ConfigMap {cm['metadata']['name']}/{key}"] = text
    for instr, args, heredocs in dockerfile_stages()[-1]:
        if instr == "COPY":
            for _, body in heredocs:
                out[f"Dockerfile {args.split()[-1]}"] = body
    return out


def config_file_names() -> list[str]:
    try:
        return sorted(config_files())
    except Exception as e:  # reported by the test, not as a collection error of the whole suite
        return [f"unreadable: {type(e).__name__}: {e}"]


@pytest.mark.parametrize("name", config_file_names())
def test_config_file_starts_a_node(name, tmp_path):
    """Starts `s3swarm serve --config` on the file (unknown fields are an error), overriding
    only the host-specific parts (addresses, data directory, secret path) through S3SWARM_*."""
    exe = binary()
    if not os.access(exe, os.X_OK):
        pytest.fail(f"{exe} does not exist: build it first (cargo build --release) or set S3SWARM_BIN")
    text = config_files()[name]
    conf = tomllib.loads(text)
    path = tmp_path / "s3swarm.toml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3SWARM_")}
    env.update(
        S3SWARM_LISTEN="127.0.0.1:0",
        S3SWARM_DATA_DIR=str(tmp_path / "data"),
        S3SWARM_ACCESS_KEY="deploytestkey",
        S3SWARM_SECRET_KEY="deploy-test-secret",
    )
    if "swarm_listen" in conf:
        (tmp_path / "secret").write_bytes(os.urandom(32))
        env.update(S3SWARM_SWARM_LISTEN=f"127.0.0.1:{free_udp_port()}", S3SWARM_CLUSTER_SECRET_FILE=str(tmp_path / "secret"))
    stderr = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([exe, "serve", "--config", str(path)], stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    try:
        deadline = time.time() + 60
        endpoint = None
        while endpoint is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"http://[0-9.:]+", line)
            endpoint = m and m.group(0)
        if endpoint is None:
            proc.kill()
            proc.wait()
            stderr.seek(0)
            pytest.fail(f"s3swarm did not start with {name} (exit {proc.returncode}):\n{stderr.read()}")
        with urllib.request.urlopen(endpoint + "/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.kill()
        proc.wait()
    if conf.get("log_format") == "json":
        stderr.seek(0)
        first = stderr.readline()
        assert json.loads(first)["level"], f"log_format = json but stderr starts with {first!r}"


# ---- compose ---------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec():
    p = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, f"check-jsonschema failed:\n{p.stdout}\n{p.stderr}"


def test_compose_nodes_each_have_their_volume_port_secret_and_swarm_address():
    doc = compose()
    nodes = compose_nodes()
    assert sorted(nodes) == ["node1", "node2", "node3"]
    volumes, ports, listens = set(), set(), {}
    for name, svc in nodes.items():
        env = compose_env(svc)
        binds = compose_binds(svc)
        vol = binds.get(DATA_DIR)
        assert vol in (doc.get("volumes") or {}), f"{name}: {DATA_DIR} is not a named volume"
        volumes.add(vol)
        assert len(svc["ports"]) == 1
        host_ip, host_port, target = str(svc["ports"][0]).split(":")
        assert host_ip == "127.0.0.1" and target == "9000", svc["ports"]
        ports.add(int(host_port))
        # The cluster secret: a compose secret backed by a file, at the path the node reads.
        (secret,) = svc["secrets"]
        secret_name = secret if isinstance(secret, str) else secret["source"]
        target_name = secret if isinstance(secret, str) else secret.get("target", secret_name)
        assert "file" in doc["secrets"][secret_name]
        assert env["S3SWARM_CLUSTER_SECRET_FILE"] == f"/run/secrets/{target_name}"
        # Credentials must come from the caller's environment, never a default in the file.
        for key in ("S3SWARM_ACCESS_KEY", "S3SWARM_SECRET_KEY"):
            assert re.fullmatch(rf"\$\{{{key}:\?[^}}]*\}}", env[key]), f"{name}: {key}={env[key]}"
        assert env.get("S3SWARM_LOG_FORMAT") == "json"
        # Swarm: bind this node's fixed address, join through the other nodes.
        ip, port = split_host_port(env["S3SWARM_SWARM_LISTEN"])
        (net,) = svc["networks"].items()
        assert net[1]["ipv4_address"] == ip, f"{name} binds {ip} but has address {net[1]['ipv4_address']}"
        subnet = doc["networks"][net[0]]["ipam"]["config"][0]["subnet"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet)
        listens[name] = port
        for peer in env["S3SWARM_PEERS"].split(","):
            host, pport = split_host_port(peer)
            assert host in nodes and host != name, f"{name}: peer {peer}"
    for name, svc in nodes.items():
        for peer in compose_env(svc)["S3SWARM_PEERS"].split(","):
            host, pport = split_host_port(peer)
            assert pport == listens[host], f"{name}: {peer} but {host} listens on {listens[host]}"
    assert len(volumes) == 3 and ports == {9001, 9002, 9003}


def test_compose_mounts_exist_and_prometheus_scrapes_the_nodes():
    doc = compose()
    for name, svc in doc["services"].items():
        for target, source in compose_binds(svc).items():
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    prom = doc["services"]["prometheus"]
    binds = compose_binds(prom)
    config = DEPLOY / binds["/etc/prometheus/prometheus.yml"]
    conf = load_yaml_docs(config)[0]
    # Rule files are resolved relative to the config file inside the container.
    for rule in conf.get("rule_files", []):
        inside = rule if rule.startswith("/") else f"/etc/prometheus/{rule}"
        assert inside in binds, f"prometheus.yml loads {rule} but compose does not mount {inside}"
    targets = [t for sc in conf["scrape_configs"] for st in sc.get("static_configs", []) for t in st["targets"]]
    nodes = compose_nodes()
    assert {split_host_port(t)[0] for t in targets} >= set(nodes), f"not every node is scraped: {targets}"
    for t in targets:
        host, port = split_host_port(t)
        assert host in doc["services"], f"scrape target {t} is not a compose service"
        if host in nodes:
            assert port == 9000, t


def test_grafana_provisioning_matches_the_compose_stack():
    doc = compose()
    binds = compose_binds(doc["services"]["grafana"])
    mounted = {t: DEPLOY / s for t, s in binds.items() if s.startswith(".")}
    ds_dir = mounted["/etc/grafana/provisioning/datasources"]
    (ds_file,) = sorted(ds_dir.glob("*.y*ml"))
    (ds,) = load_yaml_docs(ds_file)[0]["datasources"]
    assert ds["uid"] == "prometheus" and ds["type"] == "prometheus"
    m = re.fullmatch(r"http://([\w-]+):(\d+)", ds["url"])
    assert m and m.group(1) in doc["services"], ds["url"]
    prom_ports = [str(p).rsplit(":", 1)[-1] for p in doc["services"][m.group(1)].get("ports", [])]
    assert m.group(2) in prom_ports or m.group(2) == "9090", ds["url"]
    prov_dir = mounted["/etc/grafana/provisioning/dashboards"]
    (prov_file,) = sorted(prov_dir.glob("*.y*ml"))
    (provider,) = load_yaml_docs(prov_file)[0]["providers"]
    path = provider["options"]["path"]
    assert path in mounted, f"the dashboard provider reads {path}, which compose does not mount"
    dashboards = sorted(mounted[path].glob("*.json"))
    assert dashboards, f"no dashboards in {mounted[path]}"
    # Every Prometheus data source a dashboard names is the provisioned one (or a variable).
    for d in dashboards:
        text = d.read_text()
        for uid in re.findall(r'"datasource"\s*:\s*\{[^}]*"uid"\s*:\s*"([^"]+)"', text):
            assert uid in (ds["uid"], "-- Grafana --", "grafana") or uid.startswith("$"), f"{d.name}: datasource uid {uid}"


# ---- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_a_non_root_final_stage():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "build and runtime should be separate stages"
    assert dockerfile_user_uid() == 10001
    final = stages[-1]
    instrs = {instr: args for instr, args, _ in final}
    assert json.loads(instrs["ENTRYPOINT"]) == ["s3swarm"]
    assert json.loads(instrs["CMD"])[0] == "serve"
    exposed = set(" ".join(a for i, a, _ in final if i == "EXPOSE").split())
    assert {"9000/tcp", "7400/udp"} <= exposed, exposed
    assert DATA_DIR in instrs["VOLUME"]


def test_dockerfile_builder_matches_the_toolchain_and_the_runtime_release():
    stages = dockerfile_stages()
    builder = next(s for s in stages if any(i == "RUN" and "cargo build" in a for i, a, _ in s))
    image = stage_image(builder)
    m = re.fullmatch(r"(?:docker\.io/(?:library/)?)?rust:(\d+\.\d+)(?:\.\d+)?-(\w+)", image)
    assert m, f"builder image {image}: expected the official rust:<version>-<debian release>"
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert m.group(1) == cargo["workspace"]["package"]["rust-version"], "builder Rust != workspace rust-version"
    runtime = stage_image(stages[-1])
    release = {"debian12": "bookworm", "debian13": "trixie"}
    r = re.search(r"(bookworm|trixie|debian1[23])", runtime)
    assert r and release.get(r.group(1), r.group(1)) == m.group(2), f"{image} builds for {runtime}: glibc must match"
    (build,) = [a for i, a, _ in builder if i == "RUN" and "cargo build" in a]
    assert "--locked" in build and "-p gateway" in build and "--release" in build, build
    # A build argument is visible only in the stage that declares it.
    args = [a.split("=")[0] for i, a, _ in builder if i == "ARG"]
    assert "S3SWARM_GIT_COMMIT" in args and "S3SWARM_GIT_COMMIT" in build, "the commit must reach cargo"
    assert "type=cache" in build, "cache mounts for the registry and target dir"


def test_dockerfile_copies_exist_and_are_not_ignored():
    patterns = dockerignore_patterns()
    for must in ("target", ".git", "tests/.venv", "s3swarm-data"):
        assert dockerignored(must, patterns), f"{must} would be sent to the build context"
    sources = []
    for stage in dockerfile_stages():
        for instr, args, _ in stage:
            if instr not in ("COPY", "ADD"):
                continue
            tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
            if any(t.startswith("--from") for t in tokens):
                continue
            tokens = [t for t in tokens if not t.startswith("--")]
            sources += [t for t in tokens[:-1] if not t.startswith("<<")]
    assert sources, "no COPY from the build context"
    for src in sources:
        assert fnmatch.filter(os.listdir(ROOT), src) or (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not dockerignored(src.rstrip("/"), patterns), f"COPY {src}: excluded by the .dockerignore"


# ---- systemd ---------------------------------------------------------------------------------


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze not found: install the Debian package `systemd`")
    return exe


def test_systemd_unit_verifies(tmp_path):
    """`systemd-analyze verify` on a copy whose ExecStart points at the built binary (verify
    requires the executable to exist); everything else unchanged."""
    exe = binary()
    if not os.access(exe, os.X_OK):
        pytest.fail(f"{exe} does not exist: build it first (cargo build --release) or set S3SWARM_BIN")
    (exec_start,) = unit_values("ExecStart")
    assert exec_start.split()[:2] == ["/usr/local/bin/s3swarm", "serve"], exec_start
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(f"ExecStart={exec_start}", f"ExecStart={exe} serve", 1))
    p = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values (it only warns): any line about our unit fails.
    complaints = [l for l in (p.stdout + p.stderr).splitlines() if UNIT.name in l]
    assert p.returncode == 0 and not complaints, f"systemd-analyze verify ({p.returncode}):\n{p.stdout}{p.stderr}"


def test_systemd_unit_exposure_is_low(tmp_path):
    unit = tmp_path / UNIT.name
    shutil.copy(UNIT, unit)
    p = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
    assert m, f"no exposure score ({p.returncode}):\n{p.stdout}{p.stderr}"
    score = float(m.group(1))
    print(f"systemd-analyze security: exposure {score} (threshold {MAX_SYSTEMD_EXPOSURE})")
    assert score <= MAX_SYSTEMD_EXPOSURE, p.stdout


def test_systemd_unit_keeps_its_hardening():
    """Directives deploy/README.md promises, each checked on its own (the exposure score alone
    would absorb the loss of one of them)."""
    text = UNIT.read_text()
    required = [
        "DynamicUser=yes", "StateDirectory=s3swarm", "ProtectSystem=strict", "ProtectHome=yes",
        "PrivateTmp=yes", "PrivateDevices=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes", "LockPersonality=yes", "Restart=on-failure", "UMask=0077",
    ]
    missing = [d for d in required if not re.search(rf"^{re.escape(d)}$", text, re.M)]
    assert not missing, f"{UNIT.name} lost {missing}"


def test_systemd_unit_paths_agree():
    env = {}
    for value in unit_values("Environment"):
        env.update(tok.split("=", 1) for tok in shlex.split(value))
    (state,) = unit_values("StateDirectory")
    assert env["S3SWARM_DATA_DIR"] == f"%S/{state}", "the data dir must be the StateDirectory"
    creds = dict(v.split(":", 1) for v in unit_values("LoadCredential"))
    secret = env["S3SWARM_CLUSTER_SECRET_FILE"]
    assert secret.startswith("%d/") and secret[3:] in creds, f"{secret} is not a LoadCredential"
    limit = unit_values("LimitNOFILE")
    assert limit and int(limit[0].split(":")[0]) >= 65536
    assert unit_values("EnvironmentFile") == ["-/etc/s3swarm/s3swarm.env"]


# ---- README ----------------------------------------------------------------------------------


def test_readme_mentions_every_artifact():
    readme = (DEPLOY / "README.md").read_text()
    theirs = ("grafana/dashboards/", "prometheus/")  # described as a group in their own section
    missing = [
        rel
        for p in sorted(DEPLOY.rglob("*"))
        if p.is_file() and p.name != "README.md"
        for rel in [p.relative_to(DEPLOY).as_posix()]
        if not rel.startswith(theirs) and rel not in readme and p.name not in readme
    ]
    assert not missing, f"deploy/README.md does not mention {missing}"
