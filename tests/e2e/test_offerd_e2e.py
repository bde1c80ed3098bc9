"""End to end: the built offerd binary, a bundle from the offline pipeline, grpcio clients."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess

import faiss
import grpc
import numpy as np
import pytest

import health_pb2
import health_pb2_grpc
import reflection_pb2
import reflection_pb2_grpc
from offerd.v1 import admin_service_pb2, admin_service_pb2_grpc
from offerd.v1 import offer_service_pb2 as pb
from offerd.v1 import offer_service_pb2_grpc
from tests.e2e.offerd_process import OFFERCTL, run_offerd_expect_exit, start_offerd


# Deterministic ranking for exact comparisons: no holdout, no exploration, no diversity limit.
GREEDY_POLICY = {"holdout_fraction": 0, "overrides": {"epsilon": 0, "max_per_category": 0}}
NOW_MS = 1_793_000_000_000  # a fixed request time (--trust_client_time)


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offerd")
    (tmp / "policy.json").write_text(json.dumps(GREEDY_POLICY))
    proc = start_offerd(tmp, world["snapshot_root"], tmp / "db",
                        [f"--ingest={world['users_file']}", f"--policy_config={tmp / 'policy.json'}",
                         "--trust_client_time"])
    yield proc
    assert proc.stop() == 0, proc.log()


def _eligible(offer: dict, channel: str, country: str, audiences: set[str]) -> bool:
    """The eligibility rules of core/eligibility.h, for a fresh user with no fatigue state."""
    if offer["active_from_ms"] and NOW_MS < offer["active_from_ms"]:
        return False
    if offer["active_to_ms"] and NOW_MS >= offer["active_to_ms"]:
        return False
    if offer["channels"] and channel not in offer["channels"]:
        return False
    if offer["countries"] and country not in offer["countries"]:
        return False
    if offer["audiences"] and not audiences & set(offer["audiences"]):
        return False
    return True


def test_top_k_matches_python_faiss_for_20_users(world, server):
    """The C++ top-N equals Python faiss exact inner-product search on the same bundle,
    restricted to the offers eligible for the request."""
    embeddings = np.load(world["bundle"] / "offer_embeddings.npy")
    offers = [json.loads(line) for line in open(world["bundle"] / "offers.jsonl") if line.strip()]
    manifest = json.loads((world["bundle"] / "MANIFEST.json").read_text())
    retrieval_k = manifest["policy"]["retrieval_k"]
    categorical = [f["name"] for f in world["header"]["feature_schema"]["features"]
                   if f["kind"] == "categorical"]
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    stub = offer_service_pb2_grpc.OfferServiceStub(server.channel())
    users = [u for u in world["users"] if u.get("embedding")][:20]
    assert len(users) == 20
    n = 10
    compared = 0
    for user in users:
        country = str(user["features"].get("country", ""))
        audiences = {f"{user['features'][name]}_{name}" for name in categorical
                     if user["features"].get(name) not in (None, "")}
        response = stub.Recommend(pb.RecommendRequest(
            user_id=user["user_id"], num_offers=n, explain=True,
            context=pb.Context(channel="web", country=country, timestamp_ms=NOW_MS)), timeout=10)
        assert not response.cold_start and not response.holdout
        query = np.asarray([user["embedding"]], dtype=np.float32)
        scores, labels = index.search(query, retrieval_k)
        ranked = [(float(sc), offers[i]["offer_id"]) for sc, i in zip(scores[0], labels[0])
                  if _eligible(offers[i], "web", country, audiences)]
        want = ranked[:n]
        got = [(o.explanation.retrieval_score, o.offer_id) for o in response.offers]
        assert len(got) == len(want), (user["user_id"], got, want)
        np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=0, atol=1e-5)
        if [g[1] for g in got] != [w[1] for w in want]:
            # Only scores tied to float precision may be ordered differently.
            kth = want[-1][0]
            tied = {oid for sc, oid in ranked if abs(sc - kth) < 1e-5}
            assert {g[1] for g in got} ^ {w[1] for w in want} <= tied, (user["user_id"], got, want)
        assert [o.rank for o in response.offers] == list(range(1, len(got) + 1))
        assert len(response.decision_id) == 32
        assert response.snapshot_version == "20261101T000000Z"
        compared += len(got)
    assert compared >= 100  # the eligible sets were not trivially small


def test_unknown_user_gets_cold_start_offers(server):
    stub = offer_service_pb2_grpc.OfferServiceStub(server.channel())
    response = stub.Recommend(pb.RecommendRequest(user_id="never-seen", num_offers=4), timeout=10)
    assert response.cold_start
    assert len(response.offers) == 4


@pytest.mark.parametrize("request_kwargs, field", [
    ({"user_id": "", "num_offers": 3}, "user_id"),
    ({"user_id": "x" * 257, "num_offers": 3}, "user_id"),
    ({"user_id": "u", "num_offers": 0}, "num_offers"),
    ({"user_id": "u", "num_offers": 101}, "num_offers"),
    ({"user_id": "u", "num_offers": 3,
      "context": pb.Context(attributes={f"k{i}": "v" for i in range(65)})}, "context.attributes"),
])
def test_bad_input_is_invalid_argument_naming_the_field(server, request_kwargs, field):
    stub = offer_service_pb2_grpc.OfferServiceStub(server.channel())
    with pytest.raises(grpc.RpcError) as err:
        stub.Recommend(pb.RecommendRequest(**request_kwargs), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


def test_health_and_reflection(server):
    health = health_pb2_grpc.HealthStub(server.channel())
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel())
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "offerd.v1.OfferService" in names
    assert "grpc.health.v1.Health" in names


def test_health_check_names_the_services_it_knows(server):
    health = health_pb2_grpc.HealthStub(server.channel())
    assert health.Check(health_pb2.HealthCheckRequest(service="offerd.v1.OfferService"),
                        timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no.such.Service" in err.value.details()


def test_health_watch_streams_serving_then_not_serving_at_shutdown(world, tmp_path):
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db")
    try:
        health = health_pb2_grpc.HealthStub(proc.channel())
        stream = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        unknown = health.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"),
                               timeout=60)
        assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        unknown.cancel()
        proc.proc.send_signal(signal.SIGTERM)
        # The drain tells watchers first, then ends their streams.
        assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert proc.proc.wait(timeout=30) == 0
    finally:
        assert proc.stop() == 0


def test_admin_status_and_report_events(world, server):
    admin = admin_service_pb2_grpc.AdminServiceStub(server.channel(admin=True))
    status = admin.GetStatus(admin_service_pb2.GetStatusRequest(), timeout=10)
    assert status.current.version == "20261101T000000Z"
    assert status.store_feature_schema_id == world["header"]["feature_schema"]["id"]
    stub = offer_service_pb2_grpc.OfferServiceStub(server.channel())
    user = world["users"][0]["user_id"]
    rec = stub.Recommend(pb.RecommendRequest(user_id=user, num_offers=1), timeout=10)
    events = [pb.Event(user_id=user, offer_id=rec.offers[0].offer_id, type=pb.IMPRESSION,
                       decision_id=rec.decision_id),
              pb.Event(user_id=user, offer_id="no-such-offer", type=pb.CLICK)]
    response = stub.ReportEvents(pb.ReportEventsRequest(events=events), timeout=10)
    assert response.accepted == 1
    assert [r.index for r in response.rejected] == [1]
    assert "unknown offer" in response.rejected[0].reason


def test_offerctl_recommend_prints_json_and_fails_readably(world, server):
    user = world["users"][1]["user_id"]
    ok = subprocess.run([str(OFFERCTL), f"--addr={server.addr}", "recommend", f"--user={user}",
                         "--n=3", "--explain"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert len(body["offers"]) == 3 and len(body["decision_id"]) == 32
    assert "retrieval_score" in body["offers"][0]["explanation"]
    bad = subprocess.run([str(OFFERCTL), f"--addr={server.addr}", "recommend", f"--user={user}",
                          "--n=0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert "INVALID_ARGUMENT" in bad.stderr and "num_offers" in bad.stderr
    status = subprocess.run([str(OFFERCTL), f"--admin_addr={server.admin_addr}", "status"],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["current"]["version"] == "20261101T000000Z"
    down = subprocess.run([str(OFFERCTL), "--addr=127.0.0.1:1", "--timeout_ms=2000", "recommend",
                           "--user=u"], capture_output=True, text=True, timeout=30)
    assert down.returncode != 0 and "UNAVAILABLE" in down.stderr


def test_help_exits_zero_and_lists_flags():
    result = run_offerd_expect_exit(["--help"])
    assert result.returncode == 0
    for flag in ("--listen", "--admin_listen", "--snapshot_root", "--db_path", "--ingest"):
        assert flag in result.stdout


def test_startup_skips_bad_newest_bundle_and_fails_without_any(world, tmp_path):
    root = tmp_path / "snapshots"
    shutil.copytree(world["bundle"], root / "20261101T000000Z")
    bad = root / "20261201T000000Z"
    shutil.copytree(world["bundle"], bad)
    manifest = json.loads((bad / "MANIFEST.json").read_text())
    manifest["version"] = "20261201T000000Z"
    (bad / "MANIFEST.json").write_text(json.dumps(manifest))
    (bad / "offer_embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    proc = start_offerd(tmp_path, root, tmp_path / "db", [f"--ingest={world['users_file']}"])
    try:
        stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
        response = stub.Recommend(pb.RecommendRequest(user_id="u", num_offers=1), timeout=10)
        assert response.decision_id
        assert response.snapshot_version == "20261101T000000Z"
    finally:
        assert proc.stop() == 0
    log = proc.log()
    assert "bundle_rejected" in log and "20261201T000000Z" in log and "offer_embeddings.npy" in log

    shutil.rmtree(root / "20261101T000000Z")
    result = run_offerd_expect_exit([f"--snapshot_root={root}", f"--db_path={tmp_path / 'db2'}",
                                     "--listen=127.0.0.1:0", "--admin_listen=127.0.0.1:0"])
    assert result.returncode != 0
    assert "no valid bundle" in result.stderr and "offer_embeddings.npy" in result.stderr


def test_unusable_db_path_exits_nonzero(world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_offerd_expect_exit([f"--snapshot_root={world['snapshot_root']}",
                                     f"--db_path={blocker}/db", "--listen=127.0.0.1:0",
                                     "--admin_listen=127.0.0.1:0"])
    assert result.returncode != 0
    assert "cannot open database" in result.stderr


def test_sigterm_drains_and_exits_zero(world, tmp_path):
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db")
    assert proc.stop() == 0
    assert '"event":"stopped"' in proc.log()
