"""Where offerd runs OfferService calls: inline on the polling thread that received them while
the server is otherwise idle, on the worker pool when calls overlap (--max_inline_calls), as
counted by offerd_dispatched_total{path}."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

from offerd.v1 import admin_service_pb2 as admin_pb
from offerd.v1 import admin_service_pb2_grpc
from offerd.v1 import offer_service_pb2 as pb
from offerd.v1 import offer_service_pb2_grpc
from tests.e2e.offerd_process import run_offerd_expect_exit, start_offerd
from tests.e2e.test_prometheus_scrape import _get

_DISPATCHED = re.compile(r'^offerd_dispatched_total\{path="(inline|worker|inline_stalled)"\} (\S+)$',
                         re.M)


def _dispatched(proc) -> dict[str, float]:
    serving = next(json.loads(line) for line in proc.log().splitlines()
                   if '"event":"serving"' in line)
    status, text = _get(f"http://127.0.0.1:{serving['metrics_port']}/metrics")
    assert status == 200
    counts = {path: float(value) for path, value in _DISPATCHED.findall(text)}
    assert set(counts) == {"inline", "worker", "inline_stalled"}, text
    return counts


def _recommend(stub, user: str) -> pb.RecommendResponse:
    return stub.Recommend(pb.RecommendRequest(user_id=user, num_offers=3,
                                              context=pb.Context(channel="web")), timeout=10)


def test_calls_run_inline_when_alone_and_every_overlapping_call_is_answered(world, tmp_path):
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db",
                        [f"--ingest={world['users_file']}"])
    try:
        stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
        users = [u["user_id"] for u in world["users"][:20]]
        before = _dispatched(proc)
        # One caller, one call at a time: each call is the only one admitted, so each runs on
        # the polling thread that received it.
        for user in users:
            _recommend(stub, user)
        after = _dispatched(proc)
        assert after["inline"] - before["inline"] == len(users)
        assert after["worker"] == before["worker"]
        assert after["inline_stalled"] == before["inline_stalled"] == 0  # RocksDB kept up

        # Overlapping calls: all answered, each counted once on one of the paths.
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(lambda u: _recommend(stub, u), users * 4))
        assert len(responses) == 4 * len(users)
        assert all(r.decision_id for r in responses)
        final = _dispatched(proc)
        assert sum(final[path] - after[path] for path in final) == 4 * len(users)
    finally:
        assert proc.stop() == 0


def test_max_inline_calls_zero_hands_every_call_to_a_worker(world, tmp_path):
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db",
                        [f"--ingest={world['users_file']}", "--max_inline_calls=0"])
    try:
        stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
        before = _dispatched(proc)
        for user in [u["user_id"] for u in world["users"][:10]]:
            _recommend(stub, user)
        after = _dispatched(proc)
        assert after["worker"] - before["worker"] == 10
        assert after["inline"] == before["inline"] == 0
    finally:
        assert proc.stop() == 0


def test_max_inline_calls_above_one_is_refused(world, tmp_path):
    # One thread receives every call: while it computes one it admits none, so at most a call
    # alone in flight may run on it.
    result = run_offerd_expect_exit([f"--snapshot_root={world['snapshot_root']}",
                                     f"--db_path={tmp_path / 'db'}", "--listen=127.0.0.1:0",
                                     "--admin_listen=127.0.0.1:0", "--max_inline_calls=2"])
    assert result.returncode != 0
    assert "--max_inline_calls must be 0 or 1" in result.stderr


def test_a_polling_engine_other_than_epoll1_is_refused(world, tmp_path, monkeypatch):
    # The admin port is read by the front end's thread through epoll1's one epoll set.
    monkeypatch.setenv("GRPC_POLL_STRATEGY", "poll")
    result = run_offerd_expect_exit([f"--snapshot_root={world['snapshot_root']}",
                                     f"--db_path={tmp_path / 'db'}", "--listen=127.0.0.1:0",
                                     "--admin_listen=127.0.0.1:0"])
    assert result.returncode != 0
    assert ('gRPC runs its "poll" polling engine (GRPC_POLL_STRATEGY=poll): offerd needs epoll1'
            in result.stderr)


def test_the_all_engine_list_is_accepted_as_it_starts_with_epoll1(world, tmp_path, monkeypatch):
    # offerd checks the engine gRPC actually runs, not the variable's spelling.
    monkeypatch.setenv("GRPC_POLL_STRATEGY", "all")
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db")
    try:
        stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
        assert len(_recommend(stub, world["users"][0]["user_id"]).offers) == 3
        admin = admin_service_pb2_grpc.AdminServiceStub(proc.channel(admin=True))
        assert admin.GetStatus(admin_pb.GetStatusRequest(), timeout=10).current.version
    finally:
        assert proc.stop() == 0
