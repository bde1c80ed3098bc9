"""Tests of ``offline export`` (bundle + users.jsonl, docs/snapshot-format.md) and ``offline build``."""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline import export as E
from offline import world as W

from .conftest import Bundle, run_job

OFFER_KEYS = {"offer_id", "category", "type", "title", "margin", "cost", "active_from_ms", "active_to_ms",
              "channels", "countries", "audiences", "budget"}


def _manifest(bundle: Bundle) -> dict:
    return json.loads((bundle.path / "MANIFEST.json").read_text())


def _users_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manifest_fields_and_checksums_verify(bundle: Bundle) -> None:
    m = _manifest(bundle)
    assert m["format"] == "offerd-bundle" and m["format_version"] == 1
    assert m["version"] == bundle.path.name == bundle.version
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["created_at"])
    assert m["embedding_dim"] == 64 and m["num_offers"] == 100
    assert m["index"] == {"type": "flat"} and m["policy"] == {"retrieval_k": 200} and m["models"] == {}
    assert set(m["files"]) == {"offers.jsonl", "offer_embeddings.npy"}
    for name, entry in m["files"].items():
        data = (bundle.path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_schema_id_recomputes_and_matches_users_header(bundle: Bundle) -> None:
    schema = _manifest(bundle)["feature_schema"]
    text = json.dumps(schema["features"], separators=(",", ":"), sort_keys=True)
    assert schema["id"] == hashlib.sha256(text.encode()).hexdigest()[:16]
    names = [f["name"] for f in schema["features"]]
    assert names == ["acquisition_source", "acquisition_cost", "country", "age", "tier", "device", "income_band",
                     "email_opt_in"]
    for f in schema["features"]:
        if f["kind"] == "numeric":
            assert f["std"] > 0
        else:
            assert f["vocabulary"] == sorted(set(f["vocabulary"])) and f["vocabulary"]
    header = _users_lines(bundle.users_jsonl)[0]["header"]
    assert header == {"format": "offerd-users", "format_version": 1, "embedding_dim": 64, "feature_schema": schema}


def test_offer_embeddings_are_float32_unit_rows_matching_the_catalog(bundle: Bundle, world_dir: Path) -> None:
    emb = np.load(bundle.path / "offer_embeddings.npy", allow_pickle=False)
    assert emb.dtype == np.dtype("<f4") and emb.flags["C_CONTIGUOUS"] and emb.shape == (100, 64)
    assert np.isfinite(emb).all()
    assert np.abs(np.linalg.norm(emb, axis=1) - 1).max() < 1e-3
    offers = [json.loads(line) for line in (bundle.path / "offers.jsonl").read_text().splitlines()]
    assert len(offers) == emb.shape[0]
    assert len({o["offer_id"] for o in offers}) == len(offers)
    raw = [json.loads(line) for line in (world_dir / "offers.jsonl").read_text().splitlines()]
    assert [o["offer_id"] for o in offers] == [o["offer_id"] for o in raw]
    for o, r in zip(offers, raw):
        assert OFFER_KEYS <= set(o) <= OFFER_KEYS | {"caps"}
        assert isinstance(o["active_from_ms"], int) and isinstance(o["active_to_ms"], int)
        assert o["active_from_ms"] == (0 if r["active_from"] is None
                                       else int(np.datetime64(r["active_from"], "ms").astype(np.int64)))
        assert o["budget"] is None or isinstance(o["budget"], int)
        assert o["margin"] >= 0 and o["cost"] >= 0
    # not the ground-truth latents: a learned 64-d embedding
    assert emb.shape[1] != W.load_ground_truth(world_dir).offer_latent.shape[1]


def test_users_jsonl_rows_are_valid_and_purchases_match_transactions(bundle: Bundle, world_dir: Path) -> None:
    lines = _users_lines(bundle.users_jsonl)
    schema = lines[0]["header"]["feature_schema"]
    kinds = {f["name"]: f for f in schema["features"]}
    rows = lines[1:]
    users = pd.read_csv(world_dir / "users.csv")
    assert [r["user_id"] for r in rows] == users["user_id"].tolist()
    for r in rows:
        assert set(r["features"]) <= set(kinds)
        for name, value in r["features"].items():
            if kinds[name]["kind"] == "numeric":
                assert isinstance(value, (int, float))
            else:
                assert value in kinds[name]["vocabulary"]
        assert len(r["embedding"]) == 64
        assert abs(math.sqrt(sum(v * v for v in r["embedding"])) - 1) < 1e-3
    # purchases: an independent recomputation from transactions.csv (occasions = distinct days)
    tx = pd.read_csv(world_dir / "transactions.csv")
    tx["day"] = tx["date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
    daily = tx.groupby(["user_id", "day"], sort=True)["amount"].sum().reset_index()
    g = daily.groupby("user_id")
    expect = pd.DataFrame({"first": g["day"].min(), "last": g["day"].max(), "x": g["day"].count() - 1,
                           "total": g["amount"].sum(), "first_spend": g["amount"].first()})
    for r in rows:
        e = expect.loc[r["user_id"]]
        p = r["purchases"]
        assert (p["first_purchase_day"], p["last_purchase_day"], p["repeat_days"]) == (e["first"], e["last"], e["x"])
        assert p["repeat_spend_sum"] == pytest.approx(e["total"] - e["first_spend"], abs=0.006)
    assert sum(r["purchases"]["repeat_days"] for r in rows) > 0


def test_baseline_embeddings_carry_taste_signal(bundle: Bundle, world_dir: Path) -> None:
    """Learned from the logs only, the scores still correlate with the users' true taste."""
    truth = W.load_ground_truth(world_dir)
    rows = _users_lines(bundle.users_jsonl)[1:]
    users = np.array([r["embedding"] for r in rows])
    offers = np.load(bundle.path / "offer_embeddings.npy")
    s = users @ offers.T
    t = truth.user_taste @ truth.offer_latent.T
    s -= s.mean(axis=1, keepdims=True)
    t -= t.mean(axis=1, keepdims=True)
    corr = (s * t).sum(axis=1) / np.sqrt((s * s).sum(axis=1) * (t * t).sum(axis=1))
    assert corr.mean() > 0.1


def test_export_is_deterministic(bundle: Bundle, world_dir: Path, tmp_path: Path) -> None:
    result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path, "--version", "again",
                     "--users-out", tmp_path / "users.jsonl")
    assert result.code == 0, result.err
    for name in ("offers.jsonl", "offer_embeddings.npy"):
        assert (tmp_path / "again" / name).read_bytes() == (bundle.path / name).read_bytes()
    assert (tmp_path / "users.jsonl").read_bytes() == bundle.users_jsonl.read_bytes()
    a, b = _manifest(bundle), json.loads((tmp_path / "again" / "MANIFEST.json").read_text())
    for m in (a, b):
        m.pop("created_at"), m.pop("version")
    assert a == b


def test_publish_is_atomic_and_refuses_an_existing_version(bundle: Bundle, world_dir: Path, tmp_path: Path) -> None:
    assert not [p for p in bundle.root.iterdir() if p.name.startswith(".")]
    before = {p.name: p.read_bytes() for p in bundle.path.iterdir()}
    result = run_job("export", "--world", world_dir, "--snapshot-root", bundle.root, "--version", bundle.version,
                     "--users-out", tmp_path / "users.jsonl")
    assert result.code == 2 and "already exists" in result.err and bundle.version in result.err
    assert {p.name: p.read_bytes() for p in bundle.path.iterdir()} == before
    assert not (tmp_path / "users.jsonl").exists()
    assert not [p for p in bundle.root.iterdir() if p.name.startswith(".")]
    # a leftover .tmp- directory of a crashed run is replaced, not published as is
    stale = tmp_path / "root" / ".tmp-v9"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    assert run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "root", "--version", "v9",
                   "--users-out", tmp_path / "u9.jsonl").code == 0
    assert not stale.exists() and not (tmp_path / "root" / "v9" / "junk").exists()


def test_default_version_is_a_utc_timestamp(world_dir: Path, tmp_path: Path) -> None:
    result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path, "--users-out", tmp_path / "u.jsonl")
    assert result.code == 0, result.err
    version = json.loads(result.out)["version"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", version) and (tmp_path / version / "MANIFEST.json").is_file()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_index_sections(kind: str, world_dir: Path, tmp_path: Path) -> None:
    result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path, "--version", kind,
                     "--index", kind, "--users-out", tmp_path / "u.jsonl", "--prebuilt-index")
    assert result.code == 0, result.err
    m = json.loads((tmp_path / kind / "MANIFEST.json").read_text())
    index = m["index"]
    assert index["type"] == kind and index["file"] == "index.faiss" and "index.faiss" in m["files"]
    if kind == "ivf":
        assert index["nlist"] == 40 and 1 <= index["nprobe"] <= index["nlist"]
    else:
        assert index["M"] > 0 and index["ef_construction"] > 0 and index["ef_search"] >= m["policy"]["retrieval_k"]
    import faiss

    idx = faiss.read_index(str(tmp_path / kind / "index.faiss"))
    assert idx.ntotal == 100 and idx.d == 64


def test_embeddings_from_a_training_directory(world_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "train"
    src.mkdir()
    rng = np.random.default_rng(0)
    np.save(src / "user_embeddings.npy", rng.normal(size=(2000, 8)) * 3)
    np.save(src / "offer_embeddings.npy", rng.normal(size=(100, 8)) * 3)
    result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "t",
                     "--users-out", tmp_path / "u.jsonl", "--embeddings-from", src)
    assert result.code == 0, result.err
    emb = np.load(tmp_path / "s" / "t" / "offer_embeddings.npy")
    expected = np.load(src / "offer_embeddings.npy")
    assert emb.shape == (100, 8)
    assert np.allclose(emb, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    assert json.loads((tmp_path / "u.jsonl").read_text().splitlines()[0])["header"]["embedding_dim"] == 8

    np.save(src / "offer_embeddings.npy", rng.normal(size=(99, 8)))
    bad = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "t2",
                  "--users-out", tmp_path / "u2.jsonl", "--embeddings-from", src)
    assert bad.code == 2 and "offer_embeddings.npy" in bad.err and "(99, 8)" in bad.err
    assert not (tmp_path / "s" / "t2").exists()


def _fragment(directory: Path, schema_id: str) -> None:
    (directory / "models").mkdir(parents=True)
    np.save(directory / "models" / "head.0.weight.npy", np.ones((3, 2), dtype=np.float32))
    (directory / "golden.json").write_text('{"format": "offerd-golden", "models": {"m": {"cases": []}}}\n')
    (directory / "m_manifest_fragment.json").write_text(json.dumps({
        "models": {"m": {"kind": "test", "heads": {}}}, "feature_schema": {"id": schema_id},
        "files": {"models/head.0.weight.npy": {}, "golden.json": {}}}))


def test_models_from_merges_fragments_and_checks_the_schema(bundle: Bundle, world_dir: Path, tmp_path: Path) -> None:
    sid = _manifest(bundle)["feature_schema"]["id"]
    _fragment(tmp_path / "good", sid)
    result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "m",
                     "--users-out", tmp_path / "u.jsonl", "--models-from", tmp_path / "good")
    assert result.code == 0, result.err
    m = json.loads((tmp_path / "s" / "m" / "MANIFEST.json").read_text())
    assert m["models"] == {"m": {"kind": "test", "heads": {}}}
    for name in ("models/head.0.weight.npy", "golden.json"):
        data = (tmp_path / "s" / "m" / name).read_bytes()
        assert m["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()

    _fragment(tmp_path / "stale", "0000000000000000")
    bad = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "m2",
                  "--users-out", tmp_path / "u2.jsonl", "--models-from", tmp_path / "stale")
    assert bad.code == 2 and "0000000000000000" in bad.err and sid in bad.err


def test_encode_features_follows_the_contract() -> None:
    features = [{"name": "age", "kind": "numeric", "mean": 40.0, "std": 10.0},
                {"name": "tier", "kind": "categorical", "vocabulary": ["basic", "gold"]}]
    table = pd.DataFrame({"age": [50.0, np.nan, 20.0], "tier": ["gold", "platinum", ""]})
    x = E.encode_features(table, features)
    assert x.dtype == np.float32 and x.shape == (3, 4)
    assert np.allclose(x, [[1.0, 0, 1, 0], [0.0, 0, 0, 1], [-2.0, 0, 0, 1]])


def test_missing_world_or_column_fails_with_a_clear_message(world_dir: Path, tmp_path: Path) -> None:
    result = run_job("export", "--world", tmp_path / "nope", "--snapshot-root", tmp_path / "s")
    assert result.code == 2 and "nope" in result.err and "not found" in result.err

    broken = tmp_path / "broken"
    shutil.copytree(world_dir, broken, ignore=shutil.ignore_patterns("ground_truth", "users.jsonl"))
    tx = pd.read_csv(broken / "transactions.csv")
    tx.drop(columns=["amount"]).to_csv(broken / "transactions.csv", index=False)
    result = run_job("export", "--world", broken, "--snapshot-root", tmp_path / "s", "--version", "x")
    assert result.code == 2 and "transactions.csv" in result.err and "amount" in result.err
    assert not (tmp_path / "s" / "x").exists()

    (broken / "offers.jsonl").unlink()
    tx.to_csv(broken / "transactions.csv", index=False)
    result = run_job("export", "--world", broken, "--snapshot-root", tmp_path / "s", "--version", "x")
    assert result.code == 2 and "offers.jsonl" in result.err

    result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", ".hidden")
    assert result.code == 2 and "bad version" in result.err


def test_build_runs_synth_and_export_and_writes_a_report(tmp_path: Path) -> None:
    from offline.build import STEPS

    skips = [arg for step in STEPS if not step.required for arg in ("--skip", step.name)]  # keep it fast
    result = run_job("build", "--out", tmp_path / "b", "--snapshot-root", tmp_path / "s", "--users", "600",
                     "--offers", "40", "--seed", "5", "--version", "v1", *skips)
    assert result.code == 0, result.err
    build = json.loads((tmp_path / "b" / "build.json").read_text())
    status = {s["name"]: s["status"] for s in build["steps"]}
    assert status["synth"] == status["schema"] == status["export"] == "ok" and status["uplift"] == "skipped"
    assert list(status) == [step.name for step in STEPS]
    assert build["bundle"] == str(tmp_path / "s" / "v1") and (tmp_path / "s" / "v1" / "MANIFEST.json").is_file()
    schema = json.loads((tmp_path / "b" / "feature_schema.json").read_text())
    assert schema["id"] == json.loads((tmp_path / "s" / "v1" / "MANIFEST.json").read_text())["feature_schema"]["id"]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## True segment mix" in report and "sleeping_dog" in report and "v1" in report
    assert (tmp_path / "b" / "users.jsonl").is_file()
    again = run_job("build", "--out", tmp_path / "b", "--snapshot-root", tmp_path / "s", "--version", "v1")
    assert again.code == 2 and "already exists" in again.err
    bad = run_job("build", "--out", tmp_path / "b", "--snapshot-root", tmp_path / "s", "--step-arg", "nope=1")
    assert bad.code == 2 and "nope=1" in bad.err


def test_build_reports_a_failed_optional_step_and_still_publishes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from offline import build

    broken = build.Step("broken", "offline.synth", argv=lambda ctx: ["--out", str(ctx.out / "x"), "--users", "0"])
    missing = build.Step("later", "offline.no_such_job", argv=lambda ctx: [])
    steps = [s for s in build.STEPS if s.required]
    monkeypatch.setattr(build, "STEPS", steps[:2] + [broken, missing] + steps[2:])
    result = run_job("build", "--out", tmp_path / "b", "--snapshot-root", tmp_path / "s", "--users", "300",
                     "--offers", "20", "--version", "v1")
    assert result.code == 1
    record = json.loads((tmp_path / "b" / "build.json").read_text())
    status = {s["name"]: s["status"] for s in record["steps"]}
    assert status == {"synth": "ok", "schema": "ok", "broken": "failed", "later": "skipped", "export": "ok"}
    assert record["failed"] == ["broken"] and (tmp_path / "s" / "v1" / "MANIFEST.json").is_file()
    assert "--users must be >= 10" in result.err


def test_build_trains_two_tower_then_uplift_with_retrieval_and_evaluates_the_bundle(tmp_path: Path) -> None:
    result = run_job("build", "--out", tmp_path / "b", "--snapshot-root", tmp_path / "s", "--users", "1500",
                     "--offers", "60", "--seed", "3", "--version", "v1", "--skip", "clv", "--skip", "cohorts",
                     "--step-arg", "train=--epochs=2", "--step-arg", "uplift=--epochs=3",
                     "--step-arg", "uplift=--hidden=8", "--step-arg", "evaluate=--page-views=300")
    assert result.code == 0, result.err
    build = json.loads((tmp_path / "b" / "build.json").read_text())
    status = {s["name"]: s["status"] for s in build["steps"]}
    assert [n for n in status if status[n] == "ok"] == ["synth", "schema", "train", "uplift", "export", "evaluate"]
    uplift_argv = next(s["argv"] for s in build["steps"] if s["name"] == "uplift")
    assert uplift_argv[uplift_argv.index("--embeddings-from") + 1] == str(tmp_path / "b" / "train")
    manifest = json.loads((tmp_path / "s" / "v1" / "MANIFEST.json").read_text())
    assert manifest["models"]["uplift"]["heads"]["p1"]["inputs"][-2:] == ["offer", "retrieval"]
    assert "min_ev" in manifest["policy"] and "user_tower" in manifest["models"]
    evaluation = json.loads((tmp_path / "b" / "evaluate" / "evaluate.json").read_text())
    world = evaluation["worlds"][0]["result"]
    assert world["uplift_model"] == str(tmp_path / "s" / "v1" / "MANIFEST.json") and world["page_views"] == 300
    assert world["min_ev"] == manifest["policy"]["min_ev"] and world["retrieval_feature"]["query"] == "user_tower"
    assert "## Policy evaluation" in (tmp_path / "b" / "report.md").read_text()


def test_clv_section_carries_the_fit_and_users_purchases_are_in_its_units(bundle: Bundle, world_dir: Path,
                                                                          tmp_path: Path) -> None:
    """``--clv clv.json`` writes the manifest's clv section (store/manifest.h ClvSpec); the
    service's RFM of users.jsonl (days / 7, core/clv.cc RfmFromPurchaseSummary) reproduces the
    fit's per-customer summary and CLV."""
    from offline import clv_math
    from offline import common

    as_of_day = common.date_to_day(common.parse_date(json.loads((world_dir / "synth.json").read_text())["as_of"]))
    end = common.day_to_date(as_of_day - 1).isoformat()
    fit = run_job("clv", "--transactions", world_dir / "transactions.csv", "--calibration-end", end,
                  "--out", tmp_path / "clv", "--margin", "0.2", "--horizon-weeks", "52", "--discount-rate", "0.1")
    assert fit.code == 0, fit.err
    doc = json.loads((tmp_path / "clv" / "clv.json").read_text())
    result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "v1",
                     "--users-out", tmp_path / "users.jsonl", "--clv", tmp_path / "clv" / "clv.json")
    assert result.code == 0, result.err
    manifest = json.loads((tmp_path / "s" / "v1" / "MANIFEST.json").read_text())
    want = {**{k: doc["bgnbd"][k] for k in ("r", "alpha", "a", "b")},
            **{k: doc["gamma_gamma"][k] for k in ("p", "q", "v")},
            "horizon_weeks": 52.0, "margin": 0.2, "annual_discount_rate": 0.1}
    assert manifest["clv"] == want
    assert json.loads(result.out)["clv"] == want
    assert "clv" not in _manifest(bundle)  # without --clv: no section (served CLV 0)
    # the rest of the bundle is what export writes without --clv
    assert (tmp_path / "users.jsonl").read_bytes() == bundle.users_jsonl.read_bytes()

    # units: what the service derives from users.jsonl at now_day = the calibration end
    customers = pd.read_csv(tmp_path / "clv" / "customers.csv", dtype={"user_id": str}).set_index("user_id")
    rows = [r for r in _users_lines(tmp_path / "users.jsonl")[1:] if "purchases" in r]
    assert len(rows) == len(customers)
    p = pd.DataFrame([{"user_id": r["user_id"], **r["purchases"]} for r in rows]).set_index("user_id")
    c = customers.loc[p.index]
    x = p["repeat_days"].to_numpy(dtype=float)
    t_x = (p["last_purchase_day"] - p["first_purchase_day"]).to_numpy() / 7.0
    T = (as_of_day - 1 - p["first_purchase_day"]).to_numpy() / 7.0
    m_x = np.where(x > 0, p["repeat_spend_sum"].to_numpy() / np.maximum(x, 1), 0.0)
    np.testing.assert_array_equal(x, c["x"].to_numpy())
    np.testing.assert_allclose(t_x, c["t_x"].to_numpy(), rtol=0, atol=1e-6)  # customers.csv has 10 digits
    np.testing.assert_allclose(T, c["T"].to_numpy(), rtol=0, atol=1e-6)  # customers.csv has 10 digits
    np.testing.assert_allclose(m_x, c["m_x"].to_numpy(), rtol=0, atol=0.006)  # spend sums rounded to cents
    m = manifest["clv"]
    served = clv_math.clv(m["horizon_weeks"], m["r"], m["alpha"], m["a"], m["b"], m["p"], m["q"], m["v"],
                          x, t_x, T, m_x, m["margin"], m["annual_discount_rate"])
    np.testing.assert_allclose(served, c["clv"].to_numpy(), rtol=1e-3, atol=1e-6)
    assert served.mean() > 0


def test_bad_clv_file_is_refused_with_the_field_named(world_dir: Path, tmp_path: Path) -> None:
    good = {"time_unit": "week", "bgnbd": {"r": 0.2, "alpha": 4.0, "a": 0.8, "b": 2.4},
            "gamma_gamma": {"p": 6.0, "q": 3.7, "v": 15.0},
            "clv": {"horizon_weeks": 52.0, "margin": 0.2, "annual_discount_rate": 0.1}}
    cases = [({"gamma_gamma": {"p": 6.0, "q": 0.9, "v": 15.0}}, "gamma_gamma.q"),
             ({"time_unit": "day"}, "time_unit"),
             ({"clv": {"horizon_weeks": 52.0, "margin": 1.5, "annual_discount_rate": 0.1}}, "clv.margin"),
             ({"bgnbd": {"r": 0.2, "alpha": 4.0, "a": 0.8}}, "bgnbd.b")]
    for i, (change, field) in enumerate(cases):
        path = tmp_path / f"clv{i}.json"
        path.write_text(json.dumps({**good, **change}))
        result = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", f"v{i}",
                         "--users-out", tmp_path / "users.jsonl", "--clv", path)
        assert result.code == 2 and field in result.err and str(path) in result.err, result.err
        assert not (tmp_path / "s" / f"v{i}").exists()
