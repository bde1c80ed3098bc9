"""Durability and security end to end: acknowledged events survive kill -9, checkpoints
restore, TLS and mTLS on the public port, LoadSnapshot confined to the snapshot root."""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from offerd.v1 import admin_service_pb2 as apb
from offerd.v1 import admin_service_pb2_grpc
from offerd.v1 import offer_service_pb2 as pb
from offerd.v1 import offer_service_pb2_grpc
from tests.e2e.offerd_process import start_offerd


def _admin(proc) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(proc.channel(admin=True))


def test_acknowledged_events_survive_kill_9(world, tmp_path):
    offers = [json.loads(l)["offer_id"] for l in open(world["bundle"] / "offers.jsonl") if l.strip()]
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db")
    stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
    acknowledged: dict[str, int] = {}
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            batch = [pb.Event(user_id=f"crash-user-{(i + k) % 7}", offer_id=offers[(i + k) % 5],
                              type=pb.IMPRESSION) for k in range(10)]
            try:
                reply = stub.ReportEvents(pb.ReportEventsRequest(events=batch), timeout=5)
            except grpc.RpcError:
                return  # the server died mid-call: this batch was not acknowledged
            assert reply.accepted == 10
            for e in batch:
                key = f"{e.user_id}/{e.offer_id}"
                acknowledged[key] = acknowledged.get(key, 0) + 1
            i += 10

    writer = threading.Thread(target=stream)
    writer.start()
    deadline = time.monotonic() + 30
    while sum(acknowledged.values()) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.proc.send_signal(signal.SIGKILL)  # mid-stream, no flush, no goodbye
    proc.proc.wait()
    stop.set()
    writer.join()
    assert sum(acknowledged.values()) >= 500

    restarted = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db")
    try:
        admin = _admin(restarted)
        for user in {k.split("/")[0] for k in acknowledged}:
            state = admin.GetUserState(apb.GetUserStateRequest(user_id=user), timeout=10)
            stored = {o.offer_id: o.impressions for o in state.offers}
            for key, count in acknowledged.items():
                u, o = key.split("/")
                if u == user:
                    # Every acknowledged event is there (an unacknowledged in-flight batch may be too).
                    assert stored.get(o, 0) >= count, (key, stored.get(o, 0), count)
    finally:
        assert restarted.stop() == 0


def test_checkpoint_restores_the_state(world, tmp_path):
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db",
                        [f"--ingest={world['users_file']}"])
    user = world["users"][0]["user_id"]
    stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
    stub.ReportEvents(pb.ReportEventsRequest(events=[
        pb.Event(user_id=user, type=pb.PURCHASE, amount=42.5)]), timeout=10)
    admin = _admin(proc)
    before = admin.GetUserState(apb.GetUserStateRequest(user_id=user), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        admin.Checkpoint(apb.CheckpointRequest(directory="relative/path"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    admin.Checkpoint(apb.CheckpointRequest(directory=str(tmp_path / "backup")), timeout=60)
    assert proc.stop() == 0
    # Restore = start on the checkpoint (no --ingest: the features come from the backup).
    restored = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "backup")
    try:
        after = _admin(restored).GetUserState(apb.GetUserStateRequest(user_id=user), timeout=10)
        assert after.has_features
        assert after.repeat_spend_sum == before.repeat_spend_sum
        assert after.last_purchase_day == before.last_purchase_day
        r = offer_service_pb2_grpc.OfferServiceStub(restored.channel()).Recommend(
            pb.RecommendRequest(user_id=user, num_offers=3), timeout=10)
        assert not r.cold_start
    finally:
        assert restored.stop() == 0


def test_load_snapshot_stays_inside_the_snapshot_root(world, tmp_path):
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db")
    try:
        admin = _admin(proc)
        for bad in ("../world", "/etc", "..", "a/../../b", ".hidden"):
            with pytest.raises(grpc.RpcError) as err:
                admin.LoadSnapshot(apb.LoadSnapshotRequest(version=bad), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    finally:
        assert proc.stop() == 0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.pem", cwd=d)
    return d


def _call(port: int, credentials) -> pb.RecommendResponse:
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        return offer_service_pb2_grpc.OfferServiceStub(channel).Recommend(
            pb.RecommendRequest(user_id="tls-user", num_offers=2), timeout=10)


def test_tls_and_mtls_on_the_public_port(world, tmp_path, pki):
    ca = (pki / "ca.pem").read_bytes()
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db",
                        [f"--tls_cert={pki / 'server.pem'}", f"--tls_key={pki / 'server.key'}"])
    try:
        assert _call(proc.port, grpc.ssl_channel_credentials(root_certificates=ca)).decision_id
        with pytest.raises(grpc.RpcError):  # plaintext is refused
            offer_service_pb2_grpc.OfferServiceStub(proc.channel()).Recommend(
                pb.RecommendRequest(user_id="u", num_offers=1), timeout=5)
    finally:
        assert proc.stop() == 0

    mtls = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db2",
                        [f"--tls_cert={pki / 'server.pem'}", f"--tls_key={pki / 'server.key'}",
                         f"--tls_client_ca={pki / 'ca.pem'}"])
    try:
        with pytest.raises(grpc.RpcError):  # no client certificate
            _call(mtls.port, grpc.ssl_channel_credentials(root_certificates=ca))
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.pem").read_bytes())
        assert _call(mtls.port, with_cert).decision_id
    finally:
        assert mtls.stop() == 0
