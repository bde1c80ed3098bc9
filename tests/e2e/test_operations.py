"""Operations end to end against the built offerd: Prometheus metrics (promtool and a real
Prometheus server scraping offerd), health endpoints, the admin token, decision/event logs."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from offerd.v1 import admin_service_pb2, admin_service_pb2_grpc
from offerd.v1 import offer_service_pb2 as pb
from offerd.v1 import offer_service_pb2_grpc
from tests.e2e.offerd_process import start_offerd
from tests.e2e.test_prometheus_scrape import PROMETHEUS, _free_port, _get, _poll, _query, _stop

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-admin-token-0123456789"


def _metric_names() -> list[str]:
    names = []
    for line in (ROOT / "deploy" / "metrics.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line)
    return names


@pytest.fixture(scope="module")
def ops_server(world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    (tmp / "token").write_text(TOKEN + "\n")
    proc = start_offerd(tmp, world["snapshot_root"], tmp / "db", [
        f"--ingest={world['users_file']}", "--metrics_listen=127.0.0.1:0",
        f"--admin_token_file={tmp / 'token'}", f"--log_dir={tmp / 'logs'}"])
    serving = next(json.loads(line) for line in proc.log().splitlines()
                   if '"event":"serving"' in line)
    proc.metrics_port = serving["metrics_port"]
    proc.serving = serving
    proc.log_dir = tmp / "logs"
    # Some traffic so every family has samples.
    stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
    users = [u["user_id"] for u in world["users"][:40]]
    for user in users:
        r = stub.Recommend(pb.RecommendRequest(user_id=user, num_offers=3,
                                               context=pb.Context(channel="web")), timeout=10)
        if r.offers:
            stub.ReportEvents(pb.ReportEventsRequest(events=[
                pb.Event(user_id=user, offer_id=r.offers[0].offer_id, type=pb.IMPRESSION,
                         decision_id=r.decision_id)]), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.Recommend(pb.RecommendRequest(user_id="", num_offers=3), timeout=10)
    proc.recommend_calls = len(users) + 1
    yield proc
    if proc.proc.poll() is None:
        proc.stop()


def test_metrics_scrape_passes_promtool_and_has_every_family(ops_server):
    status, text = _get(f"http://127.0.0.1:{ops_server.metrics_port}/metrics")
    assert status == 200
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    missing = [n for n in _metric_names() if n not in typed]
    assert not missing, f"metric families named in deploy/ but not exposed: {missing}"
    assert 'offerd_request_duration_seconds_count{rpc="Recommend",code="OK"}' in text
    assert 'offerd_request_duration_seconds_count{rpc="Recommend",code="INVALID_ARGUMENT"} 1' in text
    assert 'offerd_events_total{type="IMPRESSION",outcome="duplicate"}' in text
    assert _get(f"http://127.0.0.1:{ops_server.metrics_port}/healthz")[0] == 200
    assert _get(f"http://127.0.0.1:{ops_server.metrics_port}/readyz")[0] == 200


def test_admin_calls_need_the_token(ops_server):
    admin = admin_service_pb2_grpc.AdminServiceStub(ops_server.channel(admin=True))
    with pytest.raises(grpc.RpcError) as err:
        admin.GetStatus(admin_service_pb2.GetStatusRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        admin.GetStatus(admin_service_pb2.GetStatusRequest(), timeout=10,
                        metadata=[("authorization", "Bearer wrong-token-wrong-token")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    status = admin.GetStatus(admin_service_pb2.GetStatusRequest(), timeout=10,
                             metadata=[("authorization", f"Bearer {TOKEN}")])
    assert status.current.version


def test_prometheus_scrapes_offerd_and_computes_a_latency_quantile(ops_server, tmp_path):
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: run scripts/install-deps.sh"
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "offerd", "static_configs": [
            {"targets": [f"127.0.0.1:{ops_server.metrics_port}"]}]}],
    }))
    port, log = _free_port(), tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        _poll("Prometheus", lambda: True if _get(f"{base}/-/ready")[0] == 200 else None, 60, proc, log)
        stub = offer_service_pb2_grpc.OfferServiceStub(ops_server.channel())

        def p99() -> float | None:
            # Keep traffic flowing so rate() has two samples with increments.
            for i in range(5):
                stub.Recommend(pb.RecommendRequest(user_id=f"prom-{i}", num_offers=2), timeout=10)
            result = _query(base, 'histogram_quantile(0.99, sum(rate('
                                  'offerd_request_duration_seconds_bucket{rpc="Recommend"}[10s])) by (le))')
            if not result:
                return None
            value = float(result[0]["value"][1])
            return None if math.isnan(value) else value

        value = _poll("a Recommend p99 from offerd's histogram", p99, 90, proc, log)
        assert 0 < value < 1.0, value
    finally:
        _stop(proc)


def test_sigterm_flushes_decision_and_event_logs(ops_server):
    # Runs last in this module: stops the server.
    assert ops_server.stop() == 0, ops_server.log()
    decisions = [json.loads(line) for f in sorted(ops_server.log_dir.glob("decisions-*.jsonl"))
                 for line in f.read_text().splitlines() if line.strip()]
    events = [json.loads(line) for f in sorted(ops_server.log_dir.glob("events-*.jsonl"))
              for line in f.read_text().splitlines() if line.strip()]
    assert len(decisions) >= ops_server.recommend_calls - 1  # the invalid call has no decision
    assert all(d["type"] == "decision" and len(d["decision_id"]) == 32 for d in decisions)
    served = [d for d in decisions if d["offers"]]
    assert served and all(0 < o["propensity"] <= 1 for d in served for o in d["offers"])
    assert events and all(e["type"] == "event" for e in events)
    assert not list(ops_server.log_dir.glob("*.open")), "logs must be complete after SIGTERM"


def test_serving_line_names_the_simd_kernels(ops_server):
    """The startup line says which scoring/scan kernels run: the widest the CPU has."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    want = "generic"
    if {"avx2", "fma"} <= flags:
        want = "avx512" if "avx512f" in flags else "avx2"
    assert ops_server.serving["simd"] == want



def test_an_unknown_simd_cap_is_reported_and_ignored(world, tmp_path, monkeypatch):
    monkeypatch.setenv("OFFERD_SIMD", "AVX2")  # the accepted values are lower case
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db")
    try:
        lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
        ignored = [e for e in lines if e.get("event") == "simd_override_ignored"]
        assert ignored and ignored[0]["OFFERD_SIMD"] == "AVX2", proc.log()
        serving = next(e for e in lines if e.get("event") == "serving")
        assert serving["simd"] == ignored[0]["simd"] != "generic"
    finally:
        assert proc.stop() == 0
