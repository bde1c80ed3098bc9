"""Tests of ``offline synth`` and the world model (offline/world.py)."""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline import world as W
from offline.common import date_to_day

from .conftest import REPO_ROOT, SMALL_WORLD_ARGS, run_job

USERS_HEAD = ["user_id", "signup_date", "acquisition_source", "acquisition_cost", "country", "age", "tier", "device"]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _log(world_dir: Path) -> pd.DataFrame:
    return pd.read_csv(world_dir / "campaign_log.csv", keep_default_na=False, dtype={"offer_id": str})


def _day(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype="datetime64[D]").astype(np.int64)


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(world_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert run_job("synth", "--out", again, *SMALL_WORLD_ARGS).code == 0
    first, second = _digests(world_dir), _digests(again)
    first.pop("users.jsonl", None)  # written into the world by the export fixture, not by synth
    assert first == second
    assert "ground_truth/truth.json" in first and len(first) >= 15

    other = tmp_path / "other"
    argv = list(SMALL_WORLD_ARGS)
    argv[argv.index("--seed") + 1] = "12"
    assert run_job("synth", "--out", other, *argv).code == 0
    assert _digests(other)["users.csv"] != second["users.csv"]


def test_files_have_the_documented_columns(world_dir: Path) -> None:
    users = pd.read_csv(world_dir / "users.csv")
    assert list(users.columns[: len(USERS_HEAD)]) == USERS_HEAD
    assert len(users) == 2000 and users["user_id"].is_unique
    assert set(users["acquisition_source"]) == set(W.SOURCES)
    assert set(users["country"]) <= set(W.COUNTRIES)
    assert (users["acquisition_cost"] > 0).all()
    tx = pd.read_csv(world_dir / "transactions.csv")
    assert list(tx.columns) == ["user_id", "date", "amount"]
    assert list(_log(world_dir).columns) == list(W.CAMPAIGN_LOG_COLUMNS)
    offers = [json.loads(line) for line in (world_dir / "offers.jsonl").read_text().splitlines()]
    assert len(offers) == 100 and len({o["offer_id"] for o in offers}) == 100
    assert {o["type"] for o in offers} <= set(W.OFFER_TYPES)
    assert all(o["margin"] >= 0 and o["cost"] >= 0 for o in offers)
    synth = json.loads((world_dir / "synth.json").read_text())
    assert synth["seed"] == 11 and synth["as_of"] == "2026-11-01"
    assert synth["sizes"]["users"] == 2000 and synth["sizes"]["transactions"] == len(tx)
    # ground truth is kept apart from the data files
    assert not any("lambda" in c or "taste" in c for c in users.columns)


def test_signups_span_the_months_and_transactions_stay_in_range(world_dir: Path) -> None:
    users = pd.read_csv(world_dir / "users.csv")
    signup = _day(users["signup_date"])
    as_of = date_to_day(W.DEFAULT_AS_OF)
    assert signup.min() >= as_of - 731 and signup.max() < as_of
    months = pd.to_datetime(users["signup_date"]).dt.to_period("M").nunique()
    assert months == 24
    tx = pd.read_csv(world_dir / "transactions.csv")
    tx_day = _day(tx["date"])
    assert tx_day.max() < as_of
    first = pd.Series(tx_day).groupby(tx["user_id"].to_numpy()).min()
    # BG/NBD: the first purchase happens at signup
    assert (first.reindex(users["user_id"]).to_numpy() == signup).all()
    future = pd.read_csv(world_dir / "ground_truth" / "future_transactions.csv")
    assert (_day(future["date"]) >= as_of).all() and len(future) > 0


def test_segment_mix_is_within_the_documented_ranges(world_dir: Path) -> None:
    synth = json.loads((world_dir / "synth.json").read_text())
    mix = synth["segment_mix"]["as_of"]["mix_nontrivial"]
    for name, (lo, hi) in W.SEGMENT_TARGETS.items():
        assert lo <= mix[name] <= hi, (name, mix[name])
    assert mix["lost_cause"] > 0.2
    # the recorded mix is the ground truth's: recompute it on fresh pairs
    truth = W.load_ground_truth(world_dir)
    fresh = W.segment_mix(truth, np.random.default_rng(123), 100_000)["mix_nontrivial"]
    for name in W.SEGMENTS:
        assert fresh[name] == pytest.approx(mix[name], abs=0.02)


def test_bgnbd_parameters_and_purchase_counts_agree(world_dir: Path) -> None:
    truth = W.load_ground_truth(world_dir)
    users = pd.read_csv(world_dir / "users.csv")
    organic = np.load(world_dir / "ground_truth" / "user_organic_purchases.npy")
    t_obs = truth.as_of_day - truth.user_signup_time
    lam, p = truth.user_lambda, truth.user_dropout_p
    # FHL 2005: E[X(t) | lambda, p] = (1 - exp(-lambda p t)) / p repeat purchases
    expected = -np.expm1(-lam * p * t_obs) / p
    observed = organic - 1
    for name in W.SOURCES:
        sel = users["acquisition_source"].to_numpy() == name
        sp = W.SOURCE_PARAMS[name]
        n = sel.sum()
        # per-user draws follow the per-source Gamma / Beta laws
        lam_sd = math.sqrt(sp.r) / sp.alpha
        assert abs(lam[sel].mean() - sp.r / sp.alpha) < 5 * lam_sd / math.sqrt(n)
        p_mean = sp.a / (sp.a + sp.b)
        p_sd = math.sqrt(sp.a * sp.b / ((sp.a + sp.b) ** 2 * (sp.a + sp.b + 1)))
        assert abs(p[sel].mean() - p_mean) < 5 * p_sd / math.sqrt(n)
        # simulated counts match the model's conditional expectation
        resid = observed[sel] - expected[sel]
        assert abs(resid.mean()) < 5 * resid.std() / math.sqrt(n) + 0.05, name
    # pooled, and P(no repeat purchase) = exp(-lambda t): no dropout before the first repeat purchase
    resid = observed - expected
    assert abs(resid.mean()) < 4 * resid.std() / math.sqrt(resid.size)
    p_none = np.exp(-lam * t_obs)
    assert abs((observed == 0).mean() - p_none.mean()) < 4 * math.sqrt((p_none * (1 - p_none)).sum()) / p_none.size
    # sources differ the way their parameters say (email buys most, social least)
    mean_by_source = pd.Series(observed).groupby(users["acquisition_source"].to_numpy()).mean()
    assert mean_by_source["email"] > mean_by_source["paid_search"] > mean_by_source["social"]
    # nobody buys after dropping out
    dead = np.isfinite(truth.user_death_time) & (truth.user_death_time < truth.as_of_day)
    assert dead.any() and (~dead).any()


def test_gamma_gamma_spend_matches_user_means(world_dir: Path) -> None:
    truth = W.load_ground_truth(world_dir)
    users = pd.read_csv(world_dir / "users.csv")
    tx = pd.read_csv(world_dir / "transactions.csv")
    idx = pd.Index(users["user_id"]).get_indexer(tx["user_id"])
    ratio = tx["amount"].to_numpy() / truth.user_mean_spend[idx]
    assert ratio.mean() == pytest.approx(1.0, abs=0.05)
    for name in W.SOURCES:
        sp = W.SOURCE_PARAMS[name]
        sel = users["acquisition_source"].to_numpy() == name
        assert np.median(truth.user_mean_spend[sel]) == pytest.approx(sp.p * sp.v / (sp.q - 1), rel=0.35)


def test_true_response_is_vectorised_and_consistent(world_dir: Path) -> None:
    truth = W.load_ground_truth(world_dir)
    users = np.arange(50)[:, None]
    offers = np.arange(20)[None, :]
    p0, p1 = W.true_response(truth, users, offers)
    assert p0.shape == p1.shape == (50, 20)
    assert ((p0 >= 0) & (p0 <= 1) & (p1 >= 0) & (p1 <= 1)).all()
    # p0 is the organic purchase probability: it does not depend on the offer
    assert np.allclose(p0, p0[:, :1])
    # the same from a world directory and with a scalar context
    q0, q1 = W.true_response(world_dir, users.ravel(), 3, {"day": "2026-11-01"})
    assert np.allclose(q0, p0[:, 3]) and np.allclose(q1, p1[:, 3])
    # before signup nobody converts
    day_before = np.floor(truth.user_signup_time[:50]) - 1
    b0, b1 = W.true_response(truth, np.arange(50), 0, {"day": day_before})
    assert (b0 == 0).all() and (b1 == 0).all()
    # push annoys more than web: annoyed pairs lose more conversions on push
    annoyed = truth.user_annoyed[np.arange(truth.num_users)[:, None], truth.offer_type_index[None, :]] == 1
    uu, oo = np.nonzero(annoyed)
    _, web = W.true_response(truth, uu, oo, {"channel": "web"})
    _, push = W.true_response(truth, uu, oo, {"channel": "push"})
    assert (push <= web + 1e-12).all() and (push < web).any()
    with pytest.raises(IndexError):
        W.true_response(truth, np.array([truth.num_users]), np.array([0]))


def test_campaign_log_is_consistent(world_dir: Path) -> None:
    log = _log(world_dir)
    treated = log["treated"].to_numpy() == 1
    assert (log["offer_id"].to_numpy()[~treated] == "").all()
    assert (log["offer_id"].to_numpy()[treated] != "").all()
    prop = log["propensity"].to_numpy()
    assert ((prop > 0) & (prop <= 1)).all()
    # control propensity is one value per campaign; treated propensities are smaller
    control_prop = log[~treated].groupby("campaign_id")["propensity"].nunique()
    assert (control_prop == 1).all()
    imp, clk, red, dis, conv = (log[c].to_numpy() == 1 for c in ("impression", "clicked", "redeemed", "dismissed",
                                                                 "converted"))
    assert not imp[~treated].any()
    assert (~red | (imp & conv & clk)).all()
    assert (~dis | (imp & ~clk)).all()
    assert ((log["revenue"].to_numpy() > 0) == conv).all()
    # channels and pages are plausible; email only for opted-in users
    users = pd.read_csv(world_dir / "users.csv").set_index("user_id")
    email_rows = log["channel"].to_numpy() == "email"
    assert (users.loc[log["user_id"][email_rows], "email_opt_in"].to_numpy() == 1).all()


def test_campaign_outcomes_are_real_purchases(world_dir: Path) -> None:
    """A converted row has a transaction in its window; a non-converted row has none."""
    log = _log(world_dir)
    tx = pd.read_csv(world_dir / "transactions.csv")
    window = json.loads((world_dir / "synth.json").read_text())["window_days"]
    users = pd.Index(sorted(set(tx["user_id"]) | set(log["user_id"])))
    stride = 100_000
    key_tx = np.sort(users.get_indexer(tx["user_id"]).astype(np.int64) * stride + _day(tx["date"]) % stride)
    row_key = users.get_indexer(log["user_id"]).astype(np.int64) * stride + _day(log["day"]) % stride
    n_in_window = np.searchsorted(key_tx, row_key + window) - np.searchsorted(key_tx, row_key)
    assert ((n_in_window > 0) == (log["converted"].to_numpy() == 1)).all()


def test_randomized_campaign_estimates_agree_with_true_uplift(world_dir: Path) -> None:
    log = _log(world_dir)
    p0 = np.load(world_dir / "ground_truth" / "campaign_p0.npy")
    p1 = np.load(world_dir / "ground_truth" / "campaign_p1.npy")
    assert len(p0) == len(log)
    y = log["converted"].to_numpy(dtype=float)
    control = log["treated"].to_numpy() == 0
    shown = log["impression"].to_numpy() == 1
    # outcomes are calibrated to the true probabilities in each arm
    for sel, p in ((control, p0), (shown, p1)):
        se = math.sqrt((p[sel] * (1 - p[sel])).sum()) / sel.sum()
        assert abs(y[sel].mean() - p[sel].mean()) < 4 * se
    # difference in means (randomized) estimates the mean true uplift of the shown rows
    est = y[shown].mean() - y[control].mean()
    se = math.sqrt(y[shown].var() / shown.sum() + y[control].var() / control.sum())
    true_uplift = (p1 - p0)[shown].mean()
    assert abs(est - true_uplift) < 4 * se
    # and per true segment the sign is right: sleeping dogs buy less when shown, persuadables more
    seg = W.classify_segments(p0, p1)
    dogs = shown & (seg == W.SLEEPING_DOG)
    pers = shown & (seg == W.PERSUADABLE)
    assert dogs.sum() > 50 and pers.sum() > 200
    assert y[dogs].mean() < p0[dogs].mean() - 3 * math.sqrt(p0[dogs].mean() / dogs.sum())
    assert y[pers].mean() > p0[pers].mean() + 3 * math.sqrt(p1[pers].mean() / pers.sum())


def test_bad_arguments_exit_nonzero_with_a_message(tmp_path: Path) -> None:
    result = run_job("synth", "--out", tmp_path / "w", "--users", "0")
    assert result.code == 2 and "--users" in result.err
    result = run_job("synth", "--out", tmp_path / "w", "--as-of", "2026-13-01")
    assert result.code == 2 and "2026-13-01" in result.err
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = run_job("synth", "--out", precious, "--users", "50", "--offers", "10")
    assert result.code == 2 and "refusing" in result.err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_cli_help_runs_as_a_module() -> None:
    proc = subprocess.run([sys.executable, "-m", "offline", "synth", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--users" in proc.stdout and "--seed" in proc.stdout
