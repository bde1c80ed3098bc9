"""Bulk load into a running offerd: `offerctl ingest FILE` writes SST files, offerd validates
and ingests them (AdminService.IngestFeatures); serving sees the users at once, reported
purchases survive a re-ingest, bad input is refused with a readable message."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest

from offerd.v1 import admin_service_pb2 as apb
from offerd.v1 import admin_service_pb2_grpc
from offerd.v1 import offer_service_pb2 as pb
from offerd.v1 import offer_service_pb2_grpc
from tests.e2e.offerd_process import OFFERCTL, start_offerd

NUM_USERS = 200


def _write_users(path: Path, header: dict, rows: list[dict]) -> None:
    with open(path, "w") as f:
        f.write(json.dumps({"header": header}) + "\n")
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _offerctl(proc, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(OFFERCTL), f"--admin_addr={proc.admin_addr}", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    """offerd on an empty database (no --ingest) and a small users file."""
    tmp = tmp_path_factory.mktemp("ingest")
    users_file = tmp / "users.jsonl"
    rows = world["users"][:NUM_USERS]
    _write_users(users_file, world["header"], rows)
    proc = start_offerd(tmp, world["snapshot_root"], tmp / "db")
    yield {"proc": proc, "tmp": tmp, "users_file": users_file, "rows": rows}
    assert proc.stop() == 0, proc.log()


def _recommend(proc, user_id: str) -> pb.RecommendResponse:
    stub = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
    return stub.Recommend(pb.RecommendRequest(user_id=user_id, num_offers=5,
                                              context=pb.Context(channel="web")), timeout=10)


def _state(proc, user_id: str) -> apb.GetUserStateResponse:
    admin = admin_service_pb2_grpc.AdminServiceStub(proc.channel(admin=True))
    return admin.GetUserState(apb.GetUserStateRequest(user_id=user_id), timeout=10)


def test_offerctl_ingest_makes_users_known_and_keeps_reported_purchases(world, served):
    proc, tmp, rows = served["proc"], served["tmp"], served["rows"]
    buyer = next(r for r in rows if r.get("purchases"))
    assert _recommend(proc, buyer["user_id"]).cold_start
    assert not _state(proc, buyer["user_id"]).has_features

    result = _offerctl(proc, "ingest", str(served["users_file"]))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["users"] == str(NUM_USERS)  # int64 fields print as JSON strings
    assert summary["purchase_records"] == str(NUM_USERS)
    assert summary["feature_schema_id"] == world["header"]["feature_schema"]["id"]
    assert summary["previous_feature_schema_id"] == ""
    assert "users/s" in result.stderr
    # offerctl cleans up its SST directory; offerd its staging directory.
    assert not list(tmp.glob(".offerctl-ingest-*"))
    assert not (tmp / "db" / "ingest-staging").exists()
    assert '"features_ingested"' in proc.log()

    response = _recommend(proc, buyer["user_id"])
    assert not response.cold_start and len(response.offers) > 0
    state = _state(proc, buyer["user_id"])
    assert state.has_features and state.has_purchases
    assert state.first_purchase_day == buyer["purchases"]["first_purchase_day"]
    assert state.repeat_days >= buyer["purchases"]["repeat_days"]

    # Purchases reported online survive the next ingest (it replaces only the offline base).
    events = offer_service_pb2_grpc.OfferServiceStub(proc.channel())
    reported = events.ReportEvents(pb.ReportEventsRequest(events=[
        pb.Event(user_id=buyer["user_id"], type=pb.PURCHASE, amount=42.0),
        pb.Event(user_id="online-only-user", type=pb.PURCHASE, amount=7.0)]), timeout=10)
    assert reported.accepted == 2
    before = _state(proc, buyer["user_id"])
    again = _offerctl(proc, "ingest", str(served["users_file"]))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["previous_feature_schema_id"] == summary["feature_schema_id"]
    after = _state(proc, buyer["user_id"])
    assert (after.has_purchases, after.first_purchase_day, after.last_purchase_day,
            after.repeat_days, after.repeat_spend_sum) == \
        (before.has_purchases, before.first_purchase_day, before.last_purchase_day,
         before.repeat_days, before.repeat_spend_sum)
    assert _state(proc, "online-only-user").has_purchases

    admin = admin_service_pb2_grpc.AdminServiceStub(proc.channel(admin=True))
    status = admin.GetStatus(apb.GetStatusRequest(), timeout=10)
    assert status.store_feature_schema_id == summary["feature_schema_id"]


def test_bad_ingest_input_is_refused_readably_and_serving_is_unaffected(world, served):
    proc, tmp, rows = served["proc"], served["tmp"], served["rows"]
    user = rows[0]["user_id"]
    assert _offerctl(proc, "ingest", str(served["users_file"])).returncode == 0

    # A broken users file: offerctl stops before calling offerd, naming file and line.
    broken = tmp / "broken.jsonl"
    broken.write_text(served["users_file"].read_text().replace(
        f'"user_id": "{rows[2]["user_id"]}"', '"user_id": ""', 1))
    result = _offerctl(proc, "ingest", str(broken))
    assert result.returncode != 0
    assert "broken.jsonl:4: user_id: must be 1..256 bytes" in result.stderr, result.stderr

    # Features under another schema than the serving bundle's: refused by offerd.
    other = tmp / "other-schema.jsonl"
    header = json.loads(json.dumps(world["header"]))
    header["feature_schema"]["id"] = "some-other-schema"
    _write_users(other, header, rows[:10])
    result = _offerctl(proc, "ingest", str(other))
    assert result.returncode != 0
    assert "ingest failed" in result.stderr and "FAILED_PRECONDITION" in result.stderr, result.stderr
    assert "some-other-schema" in result.stderr

    # The RPC itself: paths must be absolute regular files written by offerctl.
    admin = admin_service_pb2_grpc.AdminServiceStub(proc.channel(admin=True))
    schema = world["header"]["feature_schema"]["id"]
    not_sst = tmp / "not-an.sst"
    not_sst.write_text("hello")
    for paths, message in [([], "paths: 1..1000 files"),
                           (["relative.sst"], "must be an absolute path"),
                           ([str(tmp / "missing.sst")], "cannot stat"),
                           ([str(not_sst)], "not a readable SST file")]:
        with pytest.raises(grpc.RpcError) as error:
            admin.IngestFeatures(apb.IngestFeaturesRequest(paths=paths, feature_schema_id=schema),
                                 timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details(), error.value.details()

    # Nothing stored was lost; serving goes on.
    assert _state(proc, user).has_features
    assert not _recommend(proc, user).cold_start


def test_ingest_needs_the_admin_token_when_one_is_set(world, served, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db",
                        [f"--admin_token_file={token_file}"])
    try:
        denied = _offerctl(proc, "ingest", str(served["users_file"]))
        assert denied.returncode != 0 and "UNAUTHENTICATED" in denied.stderr, denied.stderr
        ok = _offerctl(proc, f"--admin_token_file={token_file}", "ingest",
                       str(served["users_file"]))
        assert ok.returncode == 0, ok.stderr
    finally:
        assert proc.stop() == 0, proc.log()
