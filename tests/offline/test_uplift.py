"""Tests of the uplift job, learners, metrics and the model export format.

Hermetic: the synthetic world is a small fixture made here (same columns as the world
generator's output), the ground truth is a fake ``offline.world`` module, and the Hillstrom
tests use a deterministic sample of the real file (skipped when it is not present).
"""
from __future__ import annotations

import json
import os
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline import metrics_uplift as mu
from offline import uplift
from offline.uplift_models import (
    ClassTransformationLearner,
    DenseLayer,
    FeatureSpec,
    InputEncoder,
    ResponseLearner,
    TLearner,
    TrainConfig,
    UpliftModel,
    XLearner,
    encode_section,
    fit_feature_spec,
    mlp_forward,
)

HILLSTROM = Path("/work/shared/datasets/hillstrom/hillstrom.csv")
if not HILLSTROM.is_file():  # CI: shared/ sits beside the clone
    HILLSTROM = Path(__file__).resolve().parents[3] / "shared/datasets/hillstrom/hillstrom.csv"

FAST = TrainConfig(hidden=(16,), epochs=15, batch_size=512, lr=1e-2, patience=3, seed=0)


# ---------------------------------------------------------------------------------------------
# Fixtures


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


CATEGORIES = ("food", "travel", "fashion")
TYPES = ("cashback", "pct_discount")


def true_p0_p1(users: pd.DataFrame, offers: pd.DataFrame, u: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Known response: p0 from age and tier; uplift +0.25 for gold users on food offers, +0.08
    for other food/travel offers, -0.06 (sleeping dogs) for social-acquired users on fashion."""
    age = users["age"].to_numpy(float)[u]
    gold = (users["tier"].to_numpy(object)[u] == "gold").astype(float)
    social = (users["acquisition_source"].to_numpy(object)[u] == "social").astype(float)
    cat = offers["category"].to_numpy(object)[o]
    p0 = _sigmoid(-2.0 + 0.03 * (age - 40) + 0.8 * gold)
    lift = np.where(cat == "food", 0.08 + 0.17 * gold, np.where(cat == "travel", 0.08, -0.06 * social))
    p1 = np.clip(p0 + lift, 0.001, 0.999)
    return p0, p1


def _iso_days(start: str, offsets: np.ndarray) -> list[str]:
    return list((pd.Timestamp(start) + pd.to_timedelta(offsets, unit="D")).strftime("%Y-%m-%d"))


def make_world(root: Path, n_users: int = 3000, n_rows: int = 16000, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    users = pd.DataFrame(
        {
            "user_id": [f"u{i:06d}" for i in range(n_users)],
            "signup_date": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n_users), unit="D"),
            "acquisition_source": rng.choice(["paid_search", "social", "email"], n_users),
            "acquisition_cost": rng.gamma(2.0, 5.0, n_users).round(2),
            "country": rng.choice(["US", "CA", "GB"], n_users),
            "age": rng.integers(18, 70, n_users),
            "tier": rng.choice(["bronze", "silver", "gold"], n_users, p=[0.5, 0.3, 0.2]),
            "device": rng.choice(["ios", "android", "desktop"], n_users),
        }
    )
    users.to_csv(root / "users.csv", index=False)
    n_offers = 12
    offers = pd.DataFrame(
        {
            "offer_id": [f"o{i:04d}" for i in range(n_offers)],
            "category": [CATEGORIES[i % 3] for i in range(n_offers)],
            "type": [TYPES[i % 2] for i in range(n_offers)],
            "margin": rng.uniform(2, 10, n_offers).round(2),
            "cost": rng.uniform(0.5, 3, n_offers).round(2),
            "title": [f"offer {i}" for i in range(n_offers)],
        }
    )
    offers.to_csv(root / "offers.csv", index=False)
    # purchases: a few per user before the campaign days (ISO dates, as the world writes them)
    n_tx = n_users * 3
    tx_user = rng.integers(0, n_users, n_tx)
    tx = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[tx_user],
            "date": _iso_days("2025-01-01", rng.integers(0, 200, n_tx)),
            "amount": rng.gamma(2.0, 15.0, n_tx).round(2),
        }
    )
    tx.to_csv(root / "transactions.csv", index=False)
    u = rng.integers(0, n_users, n_rows)
    treated = (rng.random(n_rows) < 0.6).astype(int)
    o = rng.integers(0, n_offers, n_rows)
    p0, p1 = true_p0_p1(users, offers, u, o)
    converted = (rng.random(n_rows) < np.where(treated == 1, p1, p0)).astype(int)
    log = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[u],
            "campaign_id": rng.choice(["c1", "c2"], n_rows),
            "day": _iso_days("2025-06-01", rng.integers(0, 30, n_rows)),
            "offer_id": np.where(treated == 1, offers["offer_id"].to_numpy()[o], ""),
            "treated": treated,
            "propensity": np.where(treated == 1, 0.6 / n_offers, 0.4),
            "channel": rng.choice(["web", "app", "email", "push"], n_rows),
            "device": rng.choice(["ios", "android", "desktop"], n_rows),
            "page": rng.choice(["home", "checkout"], n_rows),
            "impression": treated,
            "clicked": treated * (rng.random(n_rows) < 0.2),
            "redeemed": treated * converted,
            "dismissed": 0,
            "converted": converted,
            "revenue": converted * rng.gamma(2.0, 20.0, n_rows).round(2),
        }
    )
    log.to_csv(root / "campaign_log.csv", index=False)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def hillstrom_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HILLSTROM.is_file():
        pytest.skip("Hillstrom data not available")
    df = pd.read_csv(HILLSTROM)
    path = tmp_path_factory.mktemp("hill") / "hillstrom_sample.csv"
    df.sample(n=12000, random_state=3).to_csv(path, index=False)
    return path


def fake_world_module(world_dir: Path) -> types.ModuleType:
    """Stands in for offline.world with its real interface: load_ground_truth(dir) and
    true_response(world_or_truth, user_idx, offer_idx, context=None)."""
    mod = types.ModuleType("offline.world")

    def load_ground_truth(path: Path) -> dict[str, pd.DataFrame]:
        return {"users": pd.read_csv(Path(path) / "users.csv"), "offers": pd.read_csv(Path(path) / "offers.csv")}

    def true_response(world_or_truth: dict[str, pd.DataFrame], user_idx: np.ndarray, offer_idx: np.ndarray,
                      context: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        assert context is not None and np.asarray(context["day"]).dtype.kind == "f"
        return true_p0_p1(world_or_truth["users"], world_or_truth["offers"], np.asarray(user_idx), np.asarray(offer_idx))

    mod.load_ground_truth = load_ground_truth  # type: ignore[attr-defined]
    mod.true_response = true_response  # type: ignore[attr-defined]
    return mod


# ---------------------------------------------------------------------------------------------
# ATE on Hillstrom


def test_hillstrom_ate_matches_direct_computation_and_ci_contains_it(hillstrom_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = uplift.main(
        ["--dataset", "hillstrom", "--data", str(hillstrom_sample), "--out", str(out), "--model-outcomes", "visit",
         "--hidden", "8", "--epochs", "5", "--export-dir", str(tmp_path / "bundle")]
    )
    assert rc == 0
    doc = json.loads((out / "uplift.json").read_text())
    df = pd.read_csv(hillstrom_sample)
    assert set(doc["ate"]) == {"Mens E-Mail", "Womens E-Mail"}
    for arm in ("Mens E-Mail", "Womens E-Mail"):
        assert set(doc["ate"][arm]) == {"visit", "conversion", "spend"}
        for outcome in ("visit", "conversion", "spend"):
            cell = doc["ate"][arm][outcome]
            assert set(cell) == {"estimate", "ci_low", "ci_high"}
            y1 = df.loc[df.segment == arm, outcome].to_numpy(float)
            y0 = df.loc[df.segment == "No E-Mail", outcome].to_numpy(float)
            direct = y1.mean() - y0.mean()
            se = math.sqrt(y1.var(ddof=1) / y1.size + y0.var(ddof=1) / y0.size)
            assert cell["estimate"] == pytest.approx(direct, rel=1e-12, abs=1e-15)
            assert cell["ci_low"] < direct < cell["ci_high"]
            assert cell["ci_high"] - cell["ci_low"] == pytest.approx(2 * 1.959964 * se, rel=1e-6)
    report = doc["models"]["visit"]
    assert (out / report["qini_png"]).stat().st_size > 1000
    assert set(report["learners"]) == {"t_learner", "x_learner", "class_transformation"}
    assert sum(report["segments"].values()) == report["test_rows"]
    assert (tmp_path / "bundle" / "golden.json").is_file()


def test_difference_in_means_welch() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, 500), rng.normal(0.5, 1.0, 800)
    e = mu.difference_in_means(a, b)
    from scipy import stats

    t_stat = stats.ttest_ind(a, b, equal_var=False).statistic
    assert e.estimate / e.std_error == pytest.approx(t_stat, rel=1e-10)
    assert e.ci_low < e.estimate < e.ci_high


# ---------------------------------------------------------------------------------------------
# Metrics


def test_perfect_ranking_beats_random_and_constant_is_random() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    t = rng.integers(0, 2, n)
    tau = rng.uniform(-0.2, 0.4, n)
    y = (rng.random(n) < 0.3 + t * tau).astype(float)
    perfect = mu.uplift_metrics(y, t, mu.perfect_score(y, t))
    oracle = mu.uplift_metrics(y, t, tau)
    random = mu.uplift_metrics(y, t, rng.random(n))
    const = mu.uplift_metrics(y, t, np.zeros(n))
    assert perfect["qini_normalized"] == pytest.approx(1.0)
    assert perfect["qini_coefficient"] > oracle["qini_coefficient"] > abs(random["qini_coefficient"])
    assert oracle["auuc"] > oracle["auuc_random"]
    assert const["qini_coefficient"] == pytest.approx(0.0, abs=1e-12)
    assert const["auuc"] == pytest.approx(const["auuc_random"], abs=1e-12)
    assert mu.uplift_at_k(y, t, tau, 0.1) > mu.uplift_at_k(y, t, -tau, 0.1)


def test_curves_end_at_ate() -> None:
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0], float)
    t = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    c = mu.uplift_curves(y, t, np.arange(8, 0, -1))
    assert c.uplift[-1] == pytest.approx(0.5 - 0.25)
    assert c.qini[-1] == pytest.approx((2 - 1 * 4 / 4) / 8)
    assert c.x[0] == 0 and c.x[-1] == 1


def test_segments_thresholds() -> None:
    th = mu.SegmentThresholds(uplift=0.01, response=0.2)
    p0 = np.array([0.1, 0.5, 0.05, 0.3])
    p1 = np.array([0.3, 0.505, 0.055, 0.1])
    assert list(mu.segment_labels(p0, p1, th)) == ["persuadable", "sure_thing", "lost_cause", "sleeping_dog"]


# ---------------------------------------------------------------------------------------------
# Learners recover the sign of a known uplift


def test_learners_recover_uplift_sign() -> None:
    rng = np.random.default_rng(5)
    n = 12000
    x = rng.normal(size=(n, 3)).astype(np.float32)
    t = rng.integers(0, 2, n)
    tau = np.where(x[:, 0] > 0, 0.3, -0.2)  # two groups with opposite uplift
    p0 = _sigmoid(-0.5 + 0.5 * x[:, 1])
    y = (rng.random(n) < np.clip(p0 + t * tau, 0.01, 0.99)).astype(float)
    data = {"user": x}
    tl = TLearner(["user"], ["user"], FAST).fit(data, y, t)
    xl = XLearner(tl, ["user"], FAST).fit(data, y, t, base_fitted=True)
    ct = ClassTransformationLearner(["user"], FAST).fit(data, y, t)
    rl = ResponseLearner(["user"], ["user"], FAST, hidden_q=8, hidden_s=8).fit(data, y, t)
    pos, neg = x[:, 0] > 0.3, x[:, 0] < -0.3
    for learner in (tl, xl, ct, rl):
        u = learner.predict_uplift(data)
        assert u[pos].mean() > 0.1, type(learner).__name__
        assert u[neg].mean() < -0.05, type(learner).__name__
        assert np.mean(np.sign(u[pos | neg]) == np.sign(tau[pos | neg])) > 0.8


def test_synth_job_end_to_end_with_ground_truth(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_world_module(world)
    monkeypatch.setitem(sys.modules, "offline.world", fake)
    monkeypatch.setattr(sys.modules["offline"], "world", fake, raising=False)
    out, bundle = tmp_path / "out", tmp_path / "bundle"
    rc = uplift.main(
        ["--dataset", "synth", "--world", str(world), "--out", str(out), "--export-dir", str(bundle),
         "--hidden", "16", "--epochs", "12", "--lr", "0.01", "--batch-size", "512"]
    )
    assert rc == 0
    doc = json.loads((out / "uplift.json").read_text())
    assert doc["ate"]["treated"]["converted"]["ci_low"] < doc["ate"]["treated"]["converted"]["estimate"]
    rep = doc["models"]["converted"]
    assert (out / "qini_converted.png").stat().st_size > 1000
    for name in ("t_learner", "x_learner", "class_transformation"):
        m = rep["learners"][name]
        assert m["qini_coefficient"] > 0, name
        assert m["auuc"] > m["auuc_random"], name
        assert set(m["uplift_at_k"]) == {"10%", "20%", "30%"}
    gt = rep["ground_truth"]
    assert gt["available"], gt
    for name, corr in gt["correlation_with_true_uplift"].items():
        assert corr["pearson"] > 0.5, (name, corr)
    seg = rep["segments"]
    assert set(seg) == set(mu.SEGMENTS) and sum(seg.values()) == rep["test_rows"]
    # the exported response learner on this small fixture finds the persuadables; its cancellation
    # channel is too weak here to push pairs below -0.02 (test_learners_recover_uplift_sign checks
    # that it does recover a clear negative effect)
    assert seg["persuadable"] > 0 and rep["exported_learner"] == "response"
    assert rep["learners"]["response"]["qini_coefficient"] > 0
    frag = json.loads((bundle / "uplift_manifest_fragment.json").read_text())
    spec = frag["models"]["uplift"]
    assert spec["heads"]["p0"]["inputs"] == ["user", "purchases", "context"]
    assert spec["heads"]["p1"]["inputs"] == ["user", "purchases", "context", "offer"]
    assert [f["name"] for f in spec["inputs"]["purchases"]["features"]] == [n for n, _ in uplift.PURCHASE_FEATURES]
    assert [f["name"] for f in spec["inputs"]["context"]["features"]] == ["channel", "device", "page"]
    assert spec["inputs"]["user"]["feature_schema_id"] == frag["feature_schema"]["id"]
    names = [f["name"] for f in frag["feature_schema"]["features"]]
    assert "user_id" not in names and "signup_date" not in names and "tier" in names


# ---------------------------------------------------------------------------------------------
# Export: numpy from the .npy files == torch, golden cases re-evaluated from raw inputs


def test_purchase_features_point_in_time(tmp_path: Path) -> None:
    p = tmp_path / "transactions.csv"
    pd.DataFrame(
        {"user_id": ["a", "a", "a", "a", "b"],
         "date": ["1970-01-11", "1970-01-11", "1970-01-15", "1970-01-20", "1970-01-30"],
         "amount": [5.0, 5.0, 8.0, 12.0, 1.0]}
    ).to_csv(p, index=False)
    users = pd.Series(["a", "b", "c"])
    f = uplift.purchase_features(p, users, np.array([0, 0, 0, 1, 2, -1]), np.array([10.0, 11, 21, 30, 30, 30]))
    # 1970-01-11 is day 10: only purchases strictly before the row's day count
    assert f["has_purchases"].tolist() == [0, 1, 1, 1, 0, 0]
    assert f["repeat_days"].iloc[1] == 0 and np.isnan(f["repeat_spend_mean"].iloc[1])
    row = f.iloc[2]
    assert row["repeat_days"] == 2 and row["days_since_first"] == 11 and row["days_since_last"] == 2
    assert row["repeat_spend_mean"] == pytest.approx((8 + 12) / 2)
    assert np.isnan(f["repeat_days"].iloc[0])


def _small_model(tmp_path: Path, hidden: tuple[int, ...] = (8, 4), p1_mode: str = "offset") -> UpliftModel:
    rng = np.random.default_rng(2)
    n = 3000
    users = pd.DataFrame({"age": rng.integers(18, 70, n).astype(float), "tier": rng.choice(["gold", "silver"], n)})
    users.loc[::50, "age"] = np.nan
    ctx = pd.DataFrame({"channel": rng.choice(["web", "app"], n)})
    off = pd.DataFrame({"category": rng.choice(["food", "travel"], n), "margin": rng.uniform(1, 9, n)})
    enc = InputEncoder(
        {
            "user": [fit_feature_spec("age", users["age"]), fit_feature_spec("tier", users["tier"])],
            "context": [fit_feature_spec("channel", ctx["channel"], "categorical")],
            "offer": [fit_feature_spec("category", off["category"]), fit_feature_spec("margin", off["margin"])],
        }
    )
    frames = {"user": users, "context": ctx, "offer": off}
    x = enc.encode(frames, n)
    t = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.2 + 0.1 * t * (off["category"] == "food")).astype(float)
    cfg = TrainConfig(hidden=hidden, hidden_activation="tanh", epochs=3, seed=1)
    tl = TLearner(["user", "context"], ["user", "context", "offer"], cfg, p1_mode=p1_mode).fit(x, y, t)
    examples = [{sec: {c: f.iloc[i][c] for c in f.columns} for sec, f in frames.items()} for i in range(20)]
    return UpliftModel("uplift", enc, tl, "converted", {"uplift": 0.02, "response": 0.2}, examples)


def _numpy_forward_from_files(head_spec: dict, bundle: Path, x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float32)
    for layer in head_spec["layers"]:
        w = np.load(bundle / layer["weight"], allow_pickle=False)
        b = np.load(bundle / layer["bias"], allow_pickle=False)
        assert w.dtype == np.dtype("<f4") and b.dtype == np.dtype("<f4")
        assert w.shape == (layer["out"], layer["in"]) and b.shape == (layer["out"],)
        z = h @ w.T + b
        act = layer["activation"]
        h = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh, "identity": lambda v: v,
             "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[act](z)
    return h.reshape(-1)


@pytest.mark.parametrize("hidden,p1_mode", [((8, 4), "offset"), ((8, 4), "separate"), ((), "offset")])
def test_exported_heads_match_torch(tmp_path: Path, hidden: tuple[int, ...], p1_mode: str) -> None:
    model = _small_model(tmp_path, hidden, p1_mode)
    bundle = tmp_path / "bundle"
    frag = uplift.export_uplift_heads(model, bundle)
    spec = frag["models"]["uplift"]
    for rel, entry in frag["files"].items():
        assert (bundle / rel).stat().st_size == entry["bytes"] and len(entry["sha256"]) == 64
    rows = model.raw_examples
    x = model.encode_raw_rows(rows)
    for head in (model.learner.p0, model.learner.p1):
        hs = spec["heads"][head.name]
        assert [l["activation"] for l in hs["layers"]] == ["tanh"] * len(hidden) + ["sigmoid"]
        feats = np.concatenate([x[s] for s in hs["inputs"]], axis=1)
        assert feats.shape[1] == hs["input_dim"]
        via_numpy = _numpy_forward_from_files(hs, bundle, feats)
        via_torch = head.predict_torch(x)
        np.testing.assert_allclose(via_numpy, via_torch, rtol=1e-6, atol=1e-7)
        via_loader = mlp_forward(uplift.load_mlp(hs, bundle), feats).reshape(-1)
        np.testing.assert_allclose(via_loader, via_torch, rtol=1e-6, atol=1e-7)


def test_golden_cases_recomputed_from_raw_inputs(tmp_path: Path) -> None:
    """What the C++ loader does: encode raw golden inputs per the manifest, run the MLPs."""
    model = _small_model(tmp_path)
    bundle = tmp_path / "bundle"
    (bundle).mkdir()
    (bundle / "golden.json").write_text(json.dumps({"format": "offerd-golden", "format_version": 1,
                                                    "models": {"user_tower": {"cases": []}}}))
    frag = uplift.export_uplift_heads(model, bundle)
    spec = frag["models"]["uplift"]
    golden = json.loads((bundle / "golden.json").read_text())
    assert "user_tower" in golden["models"]  # other models' golden cases are kept
    cases = golden["models"]["uplift"]["cases"]
    assert 20 <= len(cases) <= 60
    sections = {"user": [FeatureSpec.from_json(f) for f in frag["feature_schema"]["features"]]}
    for sec in ("context", "offer"):
        sections[sec] = [FeatureSpec.from_json(f) for f in spec["inputs"][sec]["features"]]
    for case in cases:
        enc = {
            sec: encode_section(fs, {f.name: [case["inputs"][sec].get(f.name)] for f in fs}, 1)
            for sec, fs in sections.items()
        }
        for head in ("p0", "p1"):
            hs = spec["heads"][head]
            feats = np.concatenate([enc[s] for s in hs["inputs"]], axis=1)
            got = _numpy_forward_from_files(hs, bundle, feats)[0]
            assert got == pytest.approx(case["outputs"][head], rel=1e-5)
    # all-missing case: numeric 0, categorical unknown slot
    empty = [c for c in cases if not any(c["inputs"][s] for s in c["inputs"])]
    assert len(empty) == 1


def test_encoding_rules() -> None:
    specs = [FeatureSpec("age", "numeric", 40.0, 10.0), FeatureSpec("tier", "categorical", vocabulary=("gold", "silver"))]
    x = encode_section(specs, {"age": [50, None, "abc", float("nan")], "tier": ["silver", "bronze", None, "gold"]}, 4)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(
        x, np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 0]], np.float32)
    )
    assert encode_section(specs, {}, 2).tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]


def test_export_rejects_other_feature_schema(tmp_path: Path) -> None:
    model = _small_model(tmp_path)
    with pytest.raises(ValueError, match="feature schema"):
        uplift.export_uplift_heads(model, tmp_path / "b", feature_schema={"id": "0000000000000000", "features": []})


# ---------------------------------------------------------------------------------------------
# Bad input -> exit code 2 with a message naming the file and the problem


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = uplift.main(argv)
    return rc, capsys.readouterr().err


def test_hillstrom_missing_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "h.csv"
    pd.DataFrame({"segment": ["No E-Mail", "Mens E-Mail"], "visit": [0, 1]}).to_csv(p, index=False)
    rc, err = _run(["--dataset", "hillstrom", "--data", str(p), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and str(p) in err and "'conversion'" in err and "missing column" in err


def test_hillstrom_single_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not HILLSTROM.is_file():
        pytest.skip("Hillstrom data not available")
    df = pd.read_csv(HILLSTROM, nrows=400)
    p = tmp_path / "h.csv"
    df.assign(segment="Mens E-Mail").to_csv(p, index=False)
    rc, err = _run(["--dataset", "hillstrom", "--data", str(p), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and str(p) in err and "'segment'" in err and "only one arm" in err


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "empty.csv"
    p.write_text("")
    rc, err = _run(["--dataset", "hillstrom", "--data", str(p), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and str(p) in err and "empty" in err
    p.write_text("segment,visit,conversion,spend\n")
    rc, err = _run(["--dataset", "hillstrom", "--data", str(p), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and str(p) in err and "no data rows" in err


def test_synth_bad_inputs(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    bad = tmp_path / "w"
    shutil.copytree(world, bad)
    log = pd.read_csv(world / "campaign_log.csv")
    log.assign(treated=0, offer_id="").to_csv(bad / "campaign_log.csv", index=False)
    rc, err = _run(["--dataset", "synth", "--world", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "campaign_log.csv" in err and "'treated'" in err and "only one arm" in err
    log.drop(columns=["page"]).to_csv(bad / "campaign_log.csv", index=False)
    rc, err = _run(["--dataset", "synth", "--world", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "campaign_log.csv" in err and "'page'" in err
    (bad / "offers.csv").unlink()
    rc, err = _run(["--dataset", "synth", "--world", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "offer catalog not found" in err
    with pytest.raises(SystemExit) as exc:
        uplift.main(["--dataset", "synth", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2


def test_cli_dispatch_help() -> None:
    from offline.__main__ import main as offline_main

    with pytest.raises(SystemExit) as exc:
        offline_main(["uplift", "--help"])
    assert exc.value.code == 0


def test_synth_uses_given_feature_schema_verbatim(world: Path, tmp_path: Path) -> None:
    """--feature-schema (what build/export decide) is used as given: its id is kept even when
    a re-serialisation would differ (integer mean), and a column it names must exist."""
    features = [
        {"name": "age", "kind": "numeric", "mean": 40, "std": 15},
        {"name": "tier", "kind": "categorical", "vocabulary": ["bronze", "gold", "silver"]},
    ]
    schema = {"id": uplift.feature_schema_id(features), "features": features}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    bundle = tmp_path / "bundle"
    argv = ["--dataset", "synth", "--world", str(world), "--out", str(tmp_path / "o"), "--hidden", "",
            "--epochs", "2", "--no-purchase-features", "--feature-schema", str(path)]
    assert uplift.main([*argv, "--export-dir", str(bundle)]) == 0
    frag = json.loads((bundle / "uplift_manifest_fragment.json").read_text())
    assert frag["feature_schema"] == schema
    assert frag["models"]["uplift"]["inputs"]["user"]["feature_schema_id"] == schema["id"]
    assert frag["models"]["uplift"]["heads"]["p0"]["inputs"] == ["user", "context"]
    path.write_text(json.dumps({"features": [*features, {"name": "nope", "kind": "numeric", "mean": 0, "std": 1}]}))
    assert uplift.main(argv) == 2


# ---------------------------------------------------------------------------------------------
# The response learner and the retrieval section


def _response_model(hidden: tuple[int, ...] = (8,), use_s: bool = True) -> UpliftModel:
    """A response-learner model with a retrieval section (as the synth job builds it)."""
    rng = np.random.default_rng(3)
    n = 20000
    users = pd.DataFrame({"age": rng.integers(18, 70, n).astype(float), "tier": rng.choice(["gold", "silver"], n)})
    ctx = pd.DataFrame({"channel": rng.choice(["web", "app"], n)})
    off = pd.DataFrame({"category": rng.choice(["food", "travel"], n), "margin": rng.uniform(1, 9, n)})
    ret = pd.DataFrame({"retrieval_score": rng.normal(0.05, 0.1, n)})
    enc = InputEncoder({
        "user": [fit_feature_spec("age", users["age"]), fit_feature_spec("tier", users["tier"])],
        "context": [fit_feature_spec("channel", ctx["channel"], "categorical")],
        "offer": [fit_feature_spec("category", off["category"]), fit_feature_spec("margin", off["margin"])],
        "retrieval": [fit_feature_spec("retrieval_score", ret["retrieval_score"], "numeric")],
    })
    frames = {"user": users, "context": ctx, "offer": off, "retrieval": ret}
    x = enc.encode(frames, n)
    t = rng.integers(0, 2, n)
    q = _sigmoid(-3 + 12 * ret["retrieval_score"].to_numpy())
    p0 = _sigmoid(-1.5 + 0.02 * (users["age"].to_numpy() - 40))
    y = (rng.random(n) < np.where(t == 1, p0 + (1 - p0) * q, p0)).astype(float)
    rl = ResponseLearner(["user", "context"], ["user", "context", "offer", "retrieval"],
                         TrainConfig(hidden=hidden, epochs=10, seed=1), hidden_q=4, hidden_s=3,
                         use_s=use_s).fit(x, y, t)
    examples = [{sec: {c: f.iloc[i][c] for c in f.columns} for sec, f in frames.items()} for i in range(300)]
    return UpliftModel("uplift", enc, rl, "converted", {"uplift": 0.02, "response": 0.2}, examples,
                       retrieval={"query": "user_tower"}, policy={"beta": 0.1, "min_ev": 0.05})


@pytest.mark.parametrize("hidden,use_s,shrink", [((8,), True, 1.0), ((8,), False, 0.6), ((), True, 0.8)])
def test_response_learner_exports_one_plain_mlp_per_head(tmp_path: Path, hidden: tuple[int, ...], use_s: bool,
                                                         shrink: float) -> None:
    model = _response_model(hidden, use_s)
    rl = model.learner
    rl.set_shrink(shrink)
    frag = uplift.export_uplift_heads(model, tmp_path / "b")
    spec = frag["models"]["uplift"]
    assert spec["kind"] == "uplift_response" and frag["policy"] == {"beta": 0.1, "min_ev": 0.05}
    assert frag["retrieval"] == {"query": "user_tower"}
    assert spec["heads"]["p1"]["inputs"] == ["user", "context", "offer", "retrieval"]
    assert [l["activation"] for l in spec["heads"]["p1"]["layers"]] == ["relu", "relu", "relu", "sigmoid"]
    x = model.encode_raw_rows(model.raw_examples)
    for head in (rl.p0, rl.p1):
        hs = spec["heads"][head.name]
        feats = np.concatenate([x[s] for s in hs["inputs"]], axis=1)
        via_numpy = _numpy_forward_from_files(hs, tmp_path / "b", feats)
        np.testing.assert_allclose(via_numpy, head.predict_torch(x), rtol=1e-6, atol=1e-7)
    # the exported p1 is the response formula up to the softplus interpolation
    exact = rl.predict_p1_exact(x)
    assert np.abs(rl.predict_p1(x) - exact).max() < 2e-3
    z = rl.logits(x)
    p0 = 1 / (1 + np.exp(-z[:, 0]))
    assert np.allclose(rl.predict_p0(x), p0, rtol=1e-5)
    assert np.all(exact >= p0 * (1 - 1 / (1 + np.exp(-z[:, 2]))) - 1e-12) if use_s else np.all(exact >= p0 - 1e-12)


def test_response_learner_finds_the_uplift_where_q_is(tmp_path: Path) -> None:
    model = _response_model()
    x = model.encode_raw_rows(model.raw_examples)
    up = model.learner.predict_uplift(x)
    score = np.array([ex["retrieval"]["retrieval_score"] for ex in model.raw_examples])
    assert np.corrcoef(up, score)[0, 1] > 0.5


def _embeddings_dir(world: Path, dest: Path, tower: bool) -> tuple[Path, dict]:
    """A stand-in for a ``train`` output: offer embeddings and either a user tower (fragment +
    weights, feature schema age/tier, context channel/device/page) or stored user embeddings."""
    rng = np.random.default_rng(4)
    dest.mkdir(parents=True)
    users = pd.read_csv(world / "users.csv")
    offers = pd.read_csv(world / "offers.csv")
    dim = 6
    np.save(dest / "offer_embeddings.npy", rng.normal(size=(len(offers), dim)).astype(np.float32))
    info: dict = {}
    if not tower:
        np.save(dest / "user_embeddings.npy", rng.normal(size=(len(users), dim)).astype(np.float32))
        return dest, info
    features = [{"name": "age", "kind": "numeric", "mean": 44.0, "std": 15.0},
                {"name": "tier", "kind": "categorical", "vocabulary": ["bronze", "gold", "silver"]}]
    context = [{"name": "channel", "kind": "categorical", "vocabulary": ["app", "email", "push", "web"]},
               {"name": "device", "kind": "categorical", "vocabulary": ["android", "desktop", "ios"]},
               {"name": "page", "kind": "categorical", "vocabulary": ["checkout", "home"]}]
    d_in = 1 + 4 + 5 + 4 + 3
    layers = [DenseLayer(rng.normal(size=(5, d_in)), rng.normal(size=5), "relu"),
              DenseLayer(rng.normal(size=(dim, 5)), rng.normal(size=dim), "identity")]
    spec, files = uplift.export_mlp(layers, dest, "user_tower.embedding")
    schema = {"id": uplift.feature_schema_id(features), "features": features}
    frag = {"models": {"user_tower": {"kind": "two_tower_user",
                                      "inputs": {"user": {"source": "feature_schema", "feature_schema_id": schema["id"]},
                                                 "context": {"features": context}},
                                      "heads": {"embedding": {"inputs": ["user", "context"], **spec}}}},
            "feature_schema": schema, "files": files}
    (dest / "user_tower_manifest_fragment.json").write_text(json.dumps(frag))
    return dest, {"schema": schema, "layers": layers, "context": context}


def test_synth_job_adds_the_retrieval_section_and_golden_cases_recompute(world: Path, tmp_path: Path) -> None:
    from offline import retrieval

    emb_dir, info = _embeddings_dir(world, tmp_path / "emb", tower=True)
    bundle = tmp_path / "bundle"
    argv = ["--dataset", "synth", "--world", str(world), "--out", str(tmp_path / "o"), "--export-dir", str(bundle),
            "--hidden", "8", "--epochs", "3", "--embeddings-from", str(emb_dir), "--calibration-folds", "2"]
    assert uplift.main(argv) == 0
    frag = json.loads((bundle / "uplift_manifest_fragment.json").read_text())
    spec = frag["models"]["uplift"]
    # the user section is the tower's feature schema (the bundle's), the retrieval section is last
    assert frag["feature_schema"] == info["schema"]
    assert spec["heads"]["p1"]["inputs"] == ["user", "purchases", "context", "offer", "retrieval"]
    assert spec["heads"]["p0"]["inputs"] == ["user", "purchases", "context"]
    assert spec["inputs"]["retrieval"] == {"features": [
        {"name": "retrieval_score", "kind": "numeric", "mean": spec["inputs"]["retrieval"]["features"][0]["mean"],
         "std": spec["inputs"]["retrieval"]["features"][0]["std"]}]}
    emb = retrieval.load_embeddings(emb_dir)
    # the embeddings' directory is recorded relative to the fragment's directory
    assert frag["retrieval"] == {**emb.fingerprint(), "source": os.path.relpath(emb_dir.resolve(), bundle.resolve())}
    assert (bundle / frag["retrieval"]["source"]).resolve() == emb_dir.resolve()
    assert set(frag["policy"]) == {"beta", "min_ev"} and frag["policy"]["min_ev"] >= 0
    doc = json.loads((tmp_path / "o" / "uplift.json").read_text())
    cal = doc["models"]["converted"]["calibration"]
    assert cal["done"] and 0.25 <= cal["shrink_used"] <= 1.0 and cal["approximation"]["max_abs_p1"] < 2e-3
    # golden cases: raw inputs incl. retrieval_score, re-evaluated with numpy (what the C++ loader does)
    cases = json.loads((bundle / "golden.json").read_text())["models"]["uplift"]["cases"]
    sections = {"user": [FeatureSpec.from_json(f) for f in frag["feature_schema"]["features"]]}
    for sec in ("purchases", "context", "offer", "retrieval"):
        sections[sec] = [FeatureSpec.from_json(f) for f in spec["inputs"][sec]["features"]]
    with_score = 0
    offers = pd.read_csv(world / "offers.csv")["offer_id"].tolist()
    for case in cases:
        enc = {sec: encode_section(fs, {f.name: [case["inputs"].get(sec, {}).get(f.name)] for f in fs}, 1)
               for sec, fs in sections.items()}
        for head in ("p0", "p1"):
            hs = spec["heads"][head]
            feats = np.concatenate([enc[s] for s in hs["inputs"]], axis=1)
            assert _numpy_forward_from_files(hs, bundle, feats)[0] == pytest.approx(case["outputs"][head], rel=1e-5,
                                                                                    abs=1e-7)
        raw = case["inputs"].get("retrieval", {})
        if case in cases[:-4] and "retrieval_score" in raw and case["inputs"]["offer"].get("offer_id") in offers and \
                case["inputs"]["context"].get("channel") is not None:
            # the score the service computes: unit tower output . the offer's unit embedding
            x = np.concatenate([encode_section([FeatureSpec.from_json(f) for f in info["schema"]["features"]],
                                               {k: [v] for k, v in case["inputs"]["user"].items()}, 1),
                                encode_section([FeatureSpec.from_json(f) for f in info["context"]],
                                               {k: [v] for k, v in case["inputs"]["context"].items()}, 1)], axis=1)
            q = mlp_forward(info["layers"], x)[0].astype(np.float64)
            o = np.load(emb_dir / "offer_embeddings.npy")[offers.index(case["inputs"]["offer"]["offer_id"])]
            want = float(q @ o / np.linalg.norm(q) / np.linalg.norm(o.astype(np.float64)))
            assert raw["retrieval_score"] == pytest.approx(want, abs=1e-5)
            with_score += 1
    assert with_score >= 20
    with pytest.raises(SystemExit):  # the response learner: one hidden layer at most
        uplift.main([*argv[:-4], "--hidden", "8,4"])


def test_synth_job_with_stored_user_embeddings(world: Path, tmp_path: Path) -> None:
    emb_dir, _ = _embeddings_dir(world, tmp_path / "emb", tower=False)
    bundle = tmp_path / "bundle"
    argv = ["--dataset", "synth", "--world", str(world), "--out", str(tmp_path / "o"), "--export-dir", str(bundle),
            "--hidden", "8", "--epochs", "2", "--embeddings-from", str(emb_dir), "--calibration-folds", "0",
            "--learner", "t_learner"]
    assert uplift.main(argv) == 0
    frag = json.loads((bundle / "uplift_manifest_fragment.json").read_text())
    assert frag["retrieval"]["query"] == "user_embeddings" and "user_tower_sha256" not in frag["retrieval"]
    assert frag["models"]["uplift"]["kind"] == "uplift_t_learner"
    assert frag["models"]["uplift"]["heads"]["p1"]["inputs"][-1] == "retrieval"
    assert frag["policy"] == {"beta": 0.1, "min_ev": 0.0}
