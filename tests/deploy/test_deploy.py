"""Checks of the deployment material in deploy/: Kubernetes manifests, the Envoy front proxy,
Prometheus configuration, alert rules and their unit tests, the Grafana dashboard and the
docker-compose file.

Static checks only (no cluster, no Docker): every YAML parses, the fields that make the
deployment correct are there and agree with each other, promtool validates the Prometheus
configuration and rules and runs the rule unit tests, and every metric name used by the rules
and the dashboard is one offerd exposes (deploy/metrics.txt).

promtool comes from Debian's `prometheus` package (scripts/install-deps.sh installs it); without
it these tests fail, they are never skipped.
"""
from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import subprocess
import warnings

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
PROM = os.path.join(DEPLOY, "prometheus")
GRAFANA = os.path.join(DEPLOY, "grafana")
DASHBOARD = os.path.join(GRAFANA, "offerd-dashboard.json")
RULES = os.path.join(PROM, "offerd-rules.yml")
README = os.path.join(DEPLOY, "README.md")

PROMTOOL_TIMEOUT_S = 60

# The metric families the lead's brief fixes (name -> type). deploy/metrics.txt must list
# exactly these; a change to offerd's metrics changes both.
EXPECTED_METRICS = {
    "offerd_request_duration_seconds": "histogram",
    "offerd_stage_duration_seconds": "histogram",
    "offerd_requests_in_flight": "gauge",
    "offerd_requests_shed_total": "counter",
    "offerd_candidates_retrieved_total": "counter",
    "offerd_candidates_filtered_total": "counter",
    "offerd_offers_served_total": "counter",
    "offerd_holdout_decisions_total": "counter",
    "offerd_explored_offers_total": "counter",
    "offerd_events_total": "counter",
    "offerd_bundle_info": "gauge",
    "offerd_bundle_age_seconds": "gauge",
    "offerd_bundle_loads_total": "counter",
    "offerd_rocksdb_block_cache_hit_ratio": "gauge",
    "offerd_rocksdb_get_duration_seconds": "histogram",
    "offerd_queue_wait_seconds": "histogram",
    "offerd_dispatched_total": "counter",
    "offerd_log_queue_depth": "gauge",
    "offerd_log_dropped_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_threads": "gauge",
}

# offerd's flags in the StatefulSet (the brief's list).
EXPECTED_OFFERD_ARGS = [
    "--listen=0.0.0.0:50051",
    "--admin_listen=0.0.0.0:50052",
    "--admin_token_file=/etc/offerd/admin-token",
    "--metrics_listen=0.0.0.0:9464",
    "--snapshot_root=/bundles",
    "--db_path=/var/lib/offerd/db",
    "--log_dir=/var/lib/offerd/logs",
    "--policy_config=/etc/offerd/policy.json",
]
DEFAULT_DRAIN_SECONDS = 10.0  # offerd's --drain_seconds default (README.md)


# ---------------------------------------------------------------------------------------------
# Helpers


def load_yaml_docs(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def load_yaml(path: str):
    docs = load_yaml_docs(path)
    assert len(docs) == 1, f"{path}: expected one YAML document, got {len(docs)}"
    return docs[0]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, ("promtool not found on PATH: it comes with Debian's `prometheus` package, "
                  "which scripts/install-deps.sh installs (run it as root)")
    return path


def run_promtool(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=PROMTOOL_TIMEOUT_S, check=False)
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def read_metrics_txt() -> dict[str, str]:
    """deploy/metrics.txt as {family name: type}; '# type: X' lines set the type."""
    families: dict[str, str] = {}
    current_type = None
    with open(os.path.join(DEPLOY, "metrics.txt"), encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                m = re.match(r"#\s*type:\s*(counter|gauge|histogram)\s*$", line)
                if m:
                    current_type = m.group(1)
                continue
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", line), f"bad metric name {line!r}"
            assert line not in families, f"{line} listed twice in metrics.txt"
            assert current_type, f"{line} has no '# type:' line above it"
            families[line] = current_type
    return families


def sample_names(families: dict[str, str]) -> set[str]:
    """The sample names a scrape of these families shows."""
    names = set()
    for name, kind in families.items():
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        else:
            names.add(name)
    return names


PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}


def substitute_grafana_variables(expr: str) -> str:
    """Grafana's $__range etc. become durations, $var / ${var} become a plain value."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{[a-zA-Z_][a-zA-Z0-9_:]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*", "x", expr)
    return expr


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer, enough for our expressions):
    drops strings, label matchers, ranges and grouping label lists, then keeps identifiers that
    are not function calls, keywords or parts of numbers/durations."""
    e = substitute_grafana_variables(expr)
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', e)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])(\s*\()?", e):
        token, call = m.group(1), m.group(2)
        if call or token.lower() in PROMQL_KEYWORDS:
            continue
        names.add(token)
    return names


def label_values_metric(query: str) -> set[str]:
    """The metric of a Grafana `label_values(metric{...}, label)` variable query."""
    m = re.match(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", query)
    if m:
        return promql_metric_names(m.group(1))
    m = re.match(r"\s*label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", query)
    if m:
        return set()
    return promql_metric_names(re.sub(r"^\s*query_result\((.*)\)\s*$", r"\1", query))


def rule_groups() -> list[dict]:
    return load_yaml(RULES)["groups"]


def all_rules() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def github_anchor(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def readme_anchors() -> set[str]:
    with open(README, encoding="utf-8") as f:
        return {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", f.read(), re.M)}


def dashboard() -> dict:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def dashboard_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(dashboard_panels(panel.get("panels", [])))
    return out


# ---------------------------------------------------------------------------------------------
# Kubernetes objects


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return load_yaml(os.path.join(K8S, "kustomization.yaml"))


@pytest.fixture(scope="module")
def k8s(kustomization) -> dict[tuple[str, str], dict]:
    """Every object of the kustomization's resources, by (kind, name)."""
    objects: dict[tuple[str, str], dict] = {}
    for resource in kustomization["resources"]:
        for doc in load_yaml_docs(os.path.join(K8S, resource)):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


@pytest.fixture(scope="module")
def statefulset(k8s) -> dict:
    return k8s[("StatefulSet", "offerd")]


@pytest.fixture(scope="module")
def offerd_container(statefulset) -> dict:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "offerd")


@pytest.fixture(scope="module")
def envoy_config(kustomization) -> dict:
    files = [f for gen in kustomization["configMapGenerator"] if gen["name"] == "offerd-envoy"
             for f in gen["files"]]
    assert files == ["envoy.yaml"], files
    return load_yaml(os.path.join(K8S, "envoy.yaml"))


def container_port(container: dict, port) -> int:
    """A probe's or Service's port (a number or a container port name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_yaml_file_parses():
    paths = [p for ext in ("yml", "yaml") for p in glob.glob(os.path.join(DEPLOY, "**", f"*.{ext}"),
                                                              recursive=True)]
    assert len(paths) >= 15, paths
    for path in paths:
        docs = load_yaml_docs(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"


def test_kustomization_lists_every_file(kustomization):
    listed = set(kustomization["resources"])
    for gen in kustomization.get("configMapGenerator", []):
        listed.update(gen["files"])
    present = {f for f in os.listdir(K8S) if f != "kustomization.yaml"}
    assert listed == present, (f"not listed in kustomization.yaml: {sorted(present - listed)}; "
                               f"listed but missing: {sorted(listed - present)}")
    assert kustomization["namespace"] == "offerd"


def test_every_object_is_well_formed(k8s):
    for (kind, name), obj in k8s.items():
        assert obj.get("apiVersion"), f"{kind}/{name} has no apiVersion"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), f"bad name {name}"
        assert "namespace" not in obj["metadata"], (
            f"{kind}/{name}: the namespace comes from kustomization.yaml")


def test_kustomize_renders():
    """`kubectl kustomize` (when kubectl is installed) renders the tree, and the generated,
    hash-suffixed ConfigMaps are the ones the pods mount."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        warnings.warn("kubectl not installed: kustomize rendering not checked")
        return
    result = subprocess.run([kubectl, "kustomize", K8S], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    assert any(n.startswith("offerd-policy-") for n in configmaps), configmaps
    assert any(n.startswith("offerd-envoy-") for n in configmaps), configmaps
    text = result.stdout
    for name in configmaps:
        assert text.count(f"name: {name}") >= 2, f"generated ConfigMap {name} is not referenced"
    for doc in docs:
        if doc["kind"] not in ("Namespace", "PersistentVolume"):
            assert doc["metadata"].get("namespace") == "offerd", doc["metadata"]


def test_statefulset_keeps_per_user_state_on_volume_claims(statefulset, offerd_container):
    spec = statefulset["spec"]
    claims = spec["volumeClaimTemplates"]
    assert claims, "per-user state needs a volume claim per replica"
    claim = claims[0]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    mounts = {m["name"]: m for m in offerd_container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]]["mountPath"] == "/var/lib/offerd"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}
    assert spec["replicas"] >= 2


def test_statefulset_runs_offerd_with_the_expected_flags(offerd_container):
    args = offerd_container["args"]
    for flag in EXPECTED_OFFERD_ARGS:
        assert flag in args, f"missing {flag}"
    flag_names = [a.split("=", 1)[0] for a in args]
    assert len(flag_names) == len(set(flag_names)), f"a flag is given twice: {args}"
    env = {e["name"]: e.get("value") for e in offerd_container["env"]}
    assert env["OMP_NUM_THREADS"] == "1"
    ports = {p["containerPort"] for p in offerd_container["ports"]}
    assert {50051, 50052, 9464} <= ports


def test_statefulset_probes(offerd_container):
    readiness = offerd_container["readinessProbe"]["httpGet"]
    liveness = offerd_container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert container_port(offerd_container, readiness["port"]) == 9464
    assert container_port(offerd_container, liveness["port"]) == 9464
    startup = offerd_container.get("startupProbe")
    if startup:
        assert startup["httpGet"]["path"] == "/healthz"
        assert container_port(offerd_container, startup["httpGet"]["port"]) == 9464


def test_termination_grace_exceeds_drain(statefulset, offerd_container):
    drain = DEFAULT_DRAIN_SECONDS
    for arg in offerd_container["args"]:
        if arg.startswith("--drain_seconds="):
            drain = float(arg.split("=", 1)[1])
    pre_stop = 0.0
    command = offerd_container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if command:
        assert os.path.basename(command[0]) == "sleep", command
        pre_stop = float(command[1])
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + drain + 5, (
        f"grace {grace}s must cover preStop {pre_stop}s + drain {drain}s + margin")


def test_statefulset_is_non_root_and_read_only(statefulset, offerd_container):
    pod = statefulset["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    container = offerd_container["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    resources = offerd_container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), section


def test_statefulset_config_token_and_bundles(statefulset, offerd_container, k8s, kustomization):
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in offerd_container["volumeMounts"]}

    # /etc/offerd: policy.json from the generated ConfigMap, admin-token from a Secret.
    config = volumes[mounts["/etc/offerd"]["name"]]
    sources = config["projected"]["sources"]
    secret = [s["secret"] for s in sources if "secret" in s]
    configmap = [s["configMap"] for s in sources if "configMap" in s]
    assert [i["path"] for s in secret for i in s["items"]] == ["admin-token"]
    assert [i["path"] for c in configmap for i in c["items"]] == ["policy.json"]
    generated = {g["name"]: g["files"] for g in kustomization["configMapGenerator"]}
    assert generated[configmap[0]["name"]] == ["policy.json"]

    # /bundles: read-only, from a ReadOnlyMany claim bound to a ReadOnlyMany volume.
    bundles_mount = mounts["/bundles"]
    assert bundles_mount["readOnly"] is True
    claim_name = volumes[bundles_mount["name"]]["persistentVolumeClaim"]["claimName"]
    claim = k8s[("PersistentVolumeClaim", claim_name)]
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    volume = k8s[("PersistentVolume", claim["spec"]["volumeName"])]
    assert "ReadOnlyMany" in volume["spec"]["accessModes"]

    # Writable paths exist besides the read-only root: the data volume and /tmp.
    assert "/tmp" in mounts and "/var/lib/offerd" in mounts


def test_policy_config():
    with open(os.path.join(K8S, "policy.json"), encoding="utf-8") as f:
        policy = json.load(f)
    # The keys offerd's --policy_config parser accepts (server/policy_config.h); it refuses
    # unknown keys, so a stray one would stop every replica at startup.
    assert set(policy) <= {"holdout_fraction", "holdout_salt", "arm_salt", "canary_salt",
                           "overrides", "arms"}, sorted(policy)
    assert policy["holdout_fraction"] == 0.05
    salts = [policy["holdout_salt"], policy["arm_salt"], policy["canary_salt"]]
    assert all(salts) and len(set(salts)) == 3, "salts must be non-empty and independent"
    arms = policy["arms"]
    assert arms, "at least one example arm"
    assert sum(a["traffic_share"] for a in arms) <= 1.0
    override_keys = {"beta", "min_ev", "epsilon", "max_per_category", "fatigue_decay",
                     "impression_window_seconds", "max_impressions_per_window",
                     "max_offers_per_day", "dismiss_cooldown_seconds", "redeem_cooldown_seconds",
                     "segment_uplift_threshold", "segment_response_threshold"}
    for arm in arms:
        assert set(arm) <= {"name", "traffic_share", "overrides"}, arm
        assert arm["name"] and 0.0 <= arm["traffic_share"] <= 1.0 and arm["overrides"]
        assert set(arm["overrides"]) <= override_keys, arm["overrides"]


def test_services(k8s, statefulset):
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    headless = k8s[("Service", statefulset["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    assert selects(headless["spec"]["selector"], pod_labels)
    assert {p["port"] for p in headless["spec"]["ports"]} >= {50051}

    front = k8s[("Service", "offerd")]
    assert front["spec"].get("type", "ClusterIP") == "ClusterIP"
    envoy = k8s[("Deployment", "offerd-envoy")]
    envoy_labels = envoy["spec"]["template"]["metadata"]["labels"]
    assert selects(front["spec"]["selector"], envoy_labels), "clients reach offerd through Envoy"
    envoy_container = envoy["spec"]["template"]["spec"]["containers"][0]
    for port in front["spec"]["ports"]:
        assert container_port(envoy_container, port["targetPort"]) == 50051


def test_envoy_deployment_mounts_its_config(k8s):
    envoy = k8s[("Deployment", "offerd-envoy")]
    pod = envoy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/envoy")
    assert volumes[config_mount["name"]]["configMap"]["name"] == "offerd-envoy"
    assert "/etc/envoy/envoy.yaml" in container["args"]
    assert "replicas" not in envoy["spec"], "the HPA owns the proxy count"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]["cpu"], "the CPU-based HPA needs a CPU request"


def test_envoy_ring_hash_on_user_header(envoy_config, statefulset, kustomization):
    clusters = {c["name"]: c for c in envoy_config["static_resources"]["clusters"]}
    offerd = clusters["offerd"]
    assert offerd["lb_policy"] == "RING_HASH"
    assert offerd["common_lb_config"]["consistent_hashing_lb_config"]["use_hostname_for_hashing"]
    http2 = offerd["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    assert "http2_protocol_options" in http2, "gRPC upstreams need HTTP/2"
    checks = offerd["health_checks"]
    assert checks and all("grpc_health_check" in c for c in checks)

    # One endpoint per StatefulSet pod, by its stable name under the headless Service.
    headless = statefulset["spec"]["serviceName"]
    namespace = kustomization["namespace"]
    expected = [f"offerd-{i}.{headless}.{namespace}.svc.cluster.local"
                for i in range(statefulset["spec"]["replicas"])]
    endpoints = [e["endpoint"]["address"]["socket_address"]
                 for group in offerd["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    assert [e["address"] for e in endpoints] == expected
    assert {e["port_value"] for e in endpoints} == {50051}

    listeners = {l["name"]: l for l in envoy_config["static_resources"]["listeners"]}
    hcm = listeners["grpc"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["codec_type"] in ("HTTP2", "AUTO")
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    routes = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
    service_routes = [r for r in routes if "route" in r
                      and (r["match"].get("prefix", "") + r["match"].get("path", "")).startswith(
                          "/offerd.v1.OfferService/")]
    assert {r["match"].get("path") for r in service_routes} >= {"/offerd.v1.OfferService/Recommend"}
    for route in service_routes:
        assert route["route"]["cluster"] == "offerd"
        assert route["route"]["hash_policy"] == [{"header": {"header_name": "x-user-id"}}]
    # A call without the header is refused before any routing by hash.
    first = routes[0]
    assert first["match"]["headers"] == [
        {"name": "x-user-id", "present_match": True, "invert_match": True}]
    assert "direct_response" in first
    statuses = {h["header"]["key"]: h["header"]["value"] for h in first["response_headers_to_add"]}
    assert statuses["grpc-status"] == "3"
    # AdminService is not reachable through the front proxy.
    for route in routes:
        match = route["match"].get("prefix", route["match"].get("path", ""))
        assert match not in ("", "/") and not match.startswith("/offerd.v1.AdminService")
    # Every route points at a defined cluster.
    for listener in listeners.values():
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for vh in manager["route_config"]["virtual_hosts"]:
            for route in vh["routes"]:
                if "route" in route:
                    assert route["route"]["cluster"] in clusters
    # Admin interface on loopback only.
    assert envoy_config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_hpa_targets_envoy_not_the_statefulset(k8s):
    hpas = [o for (kind, _), o in k8s.items() if kind == "HorizontalPodAutoscaler"]
    assert len(hpas) == 1
    hpa = hpas[0]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "offerd-envoy")
    assert ("Deployment", target["name"]) in k8s
    metrics = hpa["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics if m["type"] == "Resource"] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    with open(os.path.join(K8S, "envoy-hpa.yaml"), encoding="utf-8") as f:
        comments = " ".join(line.lstrip("# ") for line in f.read().lower().splitlines())
    assert "statefulset" in comments and "by hand" in comments, "explain the manual scaling"


def test_pdbs_select_the_workloads(k8s, statefulset):
    pdbs = {name: o for (kind, name), o in k8s.items() if kind == "PodDisruptionBudget"}
    sts_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    envoy_labels = k8s[("Deployment", "offerd-envoy")]["spec"]["template"]["metadata"]["labels"]
    offerd_pdb = pdbs["offerd"]["spec"]
    assert selects(offerd_pdb["selector"]["matchLabels"], sts_labels)
    assert not selects(offerd_pdb["selector"]["matchLabels"], envoy_labels)
    assert offerd_pdb["maxUnavailable"] == 1
    assert selects(pdbs["offerd-envoy"]["spec"]["selector"]["matchLabels"], envoy_labels)
    # Workload selectors match their own pod templates.
    for kind, name in (("StatefulSet", "offerd"), ("Deployment", "offerd-envoy")):
        spec = k8s[(kind, name)]["spec"]
        assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])


# ---------------------------------------------------------------------------------------------
# Prometheus


def test_metrics_txt_lists_the_contract():
    families = read_metrics_txt()
    assert families == EXPECTED_METRICS
    for name, kind in families.items():
        assert name.endswith("_total") == (kind == "counter"), name


def test_promtool_check_compose_config():
    run_promtool("check", "config", "prometheus-compose.yml", cwd=PROM)


def test_promtool_check_kubernetes_config(tmp_path):
    """prometheus.yml uses kubernetes_sd_configs. Debian's promtool is built without the
    Kubernetes discovery, so when it refuses that field the config is checked with each
    kubernetes_sd_configs block replaced by a static target (everything else, relabelling and
    rules included, still goes through promtool) and the discovery blocks are checked here."""
    config = load_yaml(os.path.join(PROM, "prometheus.yml"))
    for job in config["scrape_configs"]:
        sd = job["kubernetes_sd_configs"]
        assert [s["role"] for s in sd] == ["pod"]
        assert sd[0]["namespaces"]["names"] == ["offerd"]
    offerd_job = next(j for j in config["scrape_configs"] if j["job_name"] == "offerd")
    keeps = {tuple(r["source_labels"]): r["regex"] for r in offerd_job["relabel_configs"]
             if r.get("action") == "keep"}
    assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == "offerd"
    assert keeps[("__meta_kubernetes_pod_container_port_name",)] == "metrics"

    result = subprocess.run([promtool(), "check", "config", "prometheus.yml"], cwd=PROM,
                            capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S,
                            check=False)
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    assert "kubernetes_sd_configs not found" in output, output
    stripped = copy.deepcopy(config)
    for job in stripped["scrape_configs"]:
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["discovered-pod:9464"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(stripped), encoding="utf-8")
    for rule_file in config["rule_files"]:
        shutil.copy(os.path.join(PROM, rule_file), tmp_path / rule_file)
    run_promtool("check", "config", "prometheus.yml", cwd=str(tmp_path))


def test_promtool_check_rules():
    run_promtool("check", "rules", "offerd-rules.yml", cwd=PROM)


def test_promtool_rule_unit_tests():
    tests = sorted(glob.glob(os.path.join(PROM, "tests", "*.yml")))
    assert tests
    run_promtool("test", "rules", *[os.path.relpath(t, PROM) for t in tests], cwd=PROM)


def test_rule_unit_tests_cover_every_alert_firing_and_not_firing():
    alerts = {r["alert"] for r in all_rules() if "alert" in r}
    fired, quiet = set(), set()
    for path in glob.glob(os.path.join(PROM, "tests", "*.yml")):
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - fired == set(), f"never shown firing: {sorted(alerts - fired)}"
    assert alerts - quiet == set(), f"never shown not firing: {sorted(alerts - quiet)}"
    assert {"OfferdRecommendSLOFastBurn", "OfferdRecommendSLOSlowBurn", "OfferdHighErrorRatio",
            "OfferdShedding", "OfferdBundleStale", "OfferdBundleLoadFailed",
            "OfferdLogDrops"} <= alerts


def test_rules_use_only_known_metric_names():
    known = sample_names(read_metrics_txt())
    recorded = {r["record"] for r in all_rules() if "record" in r}
    for rule in all_rules():
        unknown = promql_metric_names(rule["expr"]) - known - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')} uses unknown {unknown}"


def test_slo_rules_use_the_le_0_01_bucket_and_burn_rates():
    rules = {r.get("record") or r.get("alert"): r for r in all_rules()}
    for window in ("5m", "30m", "1h", "6h"):
        good = rules[f"offerd:recommend_good:rate{window}"]["expr"]
        assert 'le="0.01"' in good and 'code="OK"' in good and 'rpc="Recommend"' in good
        assert f"[{window}]" in good
    fast = rules["OfferdRecommendSLOFastBurn"]["expr"]
    assert "ratio_rate1h > (14.4 * 0.001)" in fast and "ratio_rate5m > (14.4 * 0.001)" in fast
    slow = rules["OfferdRecommendSLOSlowBurn"]["expr"]
    assert "ratio_rate6h > (6 * 0.001)" in slow and "ratio_rate30m > (6 * 0.001)" in slow


def test_alerts_have_severity_and_a_runbook_in_the_readme():
    anchors = readme_anchors()
    for rule in all_rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "deploy/README.md" and anchor in anchors, (rule["alert"], anchor)


# ---------------------------------------------------------------------------------------------
# Grafana


def dashboard_expressions() -> list[tuple[str, str]]:
    out = []
    for panel in dashboard_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_dashboard_structure():
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels(dash["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dash["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"


def test_dashboard_uses_only_known_metric_names_and_covers_every_family():
    families = read_metrics_txt()
    known = sample_names(families)
    used = set()
    for title, expr in dashboard_expressions():
        names = promql_metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        assert names <= known, f"panel {title!r} uses unknown {names - known}"
        used |= names
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            names = label_values_metric(query)
            assert names <= known, f"variable {variable['name']} uses unknown {names - known}"
    for name, kind in families.items():
        samples = sample_names({name: kind})
        assert samples & used, f"no panel shows {name}"


def test_dashboard_expressions_are_valid_promql(tmp_path):
    """promtool parses every panel expression (Grafana variables substituted)."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": substitute_grafana_variables(expr)}
             for i, (_, expr) in enumerate(dashboard_expressions())]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}),
                    encoding="utf-8")
    run_promtool("check", "rules", str(path))


def test_metric_name_extraction():
    """The helper the two tests above rely on."""
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (rpc, le) (rate(offerd_request_duration_seconds_bucket'
        '{job=~"$job", le="0.01"}[$__rate_interval])))') == {"offerd_request_duration_seconds_bucket"}
    assert promql_metric_names(
        "sum by (rpc, code) (rate(a_total[5m])) / ignoring(code) group_left sum by (rpc) "
        "(rate(b_total[5m])) > bool 1e-3") == {"a_total", "b_total"}
    assert promql_metric_names("x:y:rate5m offset 15m unless z") == {"x:y:rate5m", "z"}
    assert label_values_metric('label_values(m{job=~"$job"}, instance)') == {"m"}


# ---------------------------------------------------------------------------------------------
# docker-compose


def test_docker_compose():
    compose = load_yaml(os.path.join(DEPLOY, "docker-compose.yml"))
    services = compose["services"]
    assert {"offerd", "prometheus", "grafana"} <= set(services)

    offerd = services["offerd"]
    context = os.path.normpath(os.path.join(DEPLOY, offerd["build"]["context"]))
    assert os.path.isfile(os.path.join(context, offerd["build"]["dockerfile"]))
    assert "--metrics_listen=0.0.0.0:9464" in offerd["command"]
    assert "--snapshot_root=/bundles" in offerd["command"]
    assert offerd["environment"]["OMP_NUM_THREADS"] == "1"
    def mounts(service):
        """(source, target) of each volume, short ("src:dst[:ro]") or long syntax."""
        for mount in service["volumes"]:
            if isinstance(mount, dict):
                yield mount["source"], mount["target"]
            else:
                yield tuple(mount.split(":")[:2])

    def bind_sources(service):
        for source, target in mounts(service):
            if source.startswith("."):
                yield os.path.normpath(os.path.join(DEPLOY, source)), target

    targets = {target for _, target in mounts(offerd)}
    assert {"/bundles", "/var/lib/offerd", "/etc/offerd/policy.json"} <= targets
    bundles = next(m for m in offerd["volumes"] if isinstance(m, dict) and m["target"] == "/bundles")
    assert bundles["read_only"] is True

    # Every file mounted from deploy/ exists (../var/ is made by `make demo`).
    for name, service in services.items():
        for source, _ in bind_sources(service):
            if source.startswith(DEPLOY):
                assert os.path.exists(source), f"{name} mounts missing {source}"

    prom_mounts = dict((t, s) for s, t in bind_sources(services["prometheus"]))
    config_path = prom_mounts["/etc/prometheus/prometheus.yml"]
    assert os.path.basename(config_path) == "prometheus-compose.yml"
    config = load_yaml(config_path)
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in prom_mounts
    offerd_job = next(j for j in config["scrape_configs"] if j["job_name"] == "offerd")
    assert offerd_job["static_configs"][0]["targets"] == ["offerd:9464"]

    grafana_mounts = dict((t, s) for s, t in bind_sources(services["grafana"]))
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    providers = load_yaml(os.path.join(provisioning, "dashboards", "offerd.yml"))["providers"]
    dashboard_dir = providers[0]["options"]["path"]
    assert grafana_mounts[f"{dashboard_dir}/offerd-dashboard.json"] == DASHBOARD
    datasources = load_yaml(os.path.join(provisioning, "datasources", "prometheus.yml"))
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------------------------------------
# README


def test_readme_documents_routing_and_runbooks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert "x-user-id" in text
    anchors = readme_anchors()
    for anchor in ("runbook-failed-bundle-load", "runbook-overload-and-slo-burn",
                   "runbook-decision-log-drops", "scale-out-plan"):
        assert anchor in anchors, anchor
    for name in os.listdir(K8S):
        assert name in text, f"deploy/README.md does not describe k8s/{name}"
