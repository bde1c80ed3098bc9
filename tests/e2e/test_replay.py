"""Issue 5 acceptance: evaluate's page views replayed through the real offerd (``offline replay``).

A small world built by ``offline build`` (10,000 users, 200 offers: the bundle's retrieval_k of
200 covers the catalog, so the server can serve every offer evaluate considers), its 2,000
evaluate page views replayed with ``--trust_client_time`` and events fed back. The greedy mode
(holdout, exploration, category limit and fatigue off in the policy config) must earn, by the
simulator's ground truth, within 10% of evaluate's "ours" and far more than random and
response-only; the default policy (5% holdout, exploration, fatigue) is reported with its
holdout and exploration shares. About 30 s in all.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.offerd_process import OFFERD, start_offerd

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("PYTHON", sys.executable)
SMALL_BUILD = ["--users", "10000", "--offers", "200", "--seed", "7", "--version", "v1", "--skip", "cohorts",
               "--step-arg", "evaluate=--page-views=2000"]


def _offline(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "offline", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    assert OFFERD.exists(), f"{OFFERD} is missing: run `make build` first"
    base = tmp_path_factory.mktemp("replay-build")
    result = _offline("build", "--out", base / "build", "--snapshot-root", base / "snapshots", *SMALL_BUILD)
    assert result.returncode == 0, result.stderr[-4000:]
    return base / "build"


@pytest.fixture(scope="module")
def replay(build, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("replay")
    result = _offline("replay", "--build", build, "--offerd", OFFERD, "--out", out)
    assert result.returncode == 0, result.stderr[-4000:]
    doc = json.loads((out / "replay.json").read_text())
    assert json.loads(result.stdout)["checks"] == doc["checks"]
    assert (out / "replay.md").read_text().startswith("# offline replay through offerd")
    return doc


def test_greedy_replay_matches_evaluate_ours_within_10_percent(replay):
    ev = replay["evaluate"]["policies"]
    greedy = replay["modes"]["greedy"]
    ours = ev["ours"]["profit_per_1000"]
    assert replay["page_views"] == 2000 and greedy["page_views"] == 2000
    # the replayed page views are evaluate's: its "ours" recomputed on them is its figure
    assert replay["ours_offline"]["profit_per_1000"] == pytest.approx(ours, rel=1e-9)
    assert ours > 0
    assert greedy["profit_per_1000"] == pytest.approx(ours, rel=0.10)
    assert replay["checks"]["within_tolerance"]
    # nothing switched on that the config switched off; every page view answered, none cold
    assert greedy["holdout_share"] == 0 and greedy["exploration_share"] == 0
    assert greedy["cold_start_page_views"] == 0
    assert greedy["events"]["rejected"] == 0 and greedy["events"]["recommend_calls"] == 2000
    # served impressions were counted at serve time: the replay's IMPRESSIONs are duplicates
    assert greedy["events"]["duplicates"] == greedy["events"]["impression"] > 0
    assert greedy["events"]["redeem"] > 0 and greedy["events"]["purchase_world"] > 0
    # the server ranks as evaluate does (slates differ only where fed-back purchases moved RFM)
    assert greedy["vs_offline_ours"]["share_same_slate"] >= 0.95


def test_greedy_replay_is_far_above_random_and_response_only(replay):
    ev = replay["evaluate"]["policies"]
    greedy = replay["modes"]["greedy"]["profit_per_1000"]
    for baseline in ("random", "response_only"):
        base = ev[baseline]["profit_per_1000"]
        assert greedy - base >= max(abs(base), 500), (baseline, greedy, base)
    assert replay["checks"]["far_above_random"] and replay["checks"]["far_above_response_only"]


def test_default_policy_reports_holdout_and_exploration(replay):
    default = replay["modes"]["default"]
    assert default["policy_config"] is None  # the server's defaults: 5% holdout, the bundle's policy
    assert 0 < default["holdout_share"] < 0.15
    assert 0 < default["exploration_share"] < 0.15
    assert default["profit_per_1000_non_holdout"] is not None
    assert default["events"]["rejected"] == 0
    # a holdout page view shows nothing and is worth 0
    assert default["profit_per_1000"] > replay["evaluate"]["policies"]["random"]["profit_per_1000"]


def test_without_feedback_the_server_serves_exactly_evaluates_ours(build, tmp_path):
    """No fed-back conversions: the service's purchase state at every page view is evaluate's
    point-in-time one, so its slates, p0, p1 and CLV equal the offline model's."""
    result = _offline("replay", "--build", build, "--offerd", OFFERD, "--out", tmp_path, "--mode", "greedy",
                      "--no-feedback", "--page-views", "600")
    assert result.returncode == 0, result.stderr[-4000:]
    doc = json.loads((tmp_path / "replay.json").read_text())
    vs = doc["modes"]["greedy"]["vs_offline_ours"]
    assert vs["share_same_slate"] == 1.0 and vs["served_offers_not_in_ours"] == 0
    assert vs["max_abs_diff_p0"] < 1e-5 and vs["max_abs_diff_p1"] < 1e-5
    assert vs["max_rel_diff_clv"] < 1e-6
    assert doc["modes"]["greedy"]["profit_per_1000"] == pytest.approx(doc["ours_offline"]["profit_per_1000"],
                                                                       rel=1e-9)
    # --page-views differs from the build's evaluate config: evaluate ran for this sample
    assert (tmp_path / "evaluate" / "evaluate.json").is_file()
    assert doc["evaluate"]["policies"]["ours"]["profit_per_1000"] == pytest.approx(
        doc["ours_offline"]["profit_per_1000"], rel=1e-9)


def test_replay_against_a_running_offerd(build, tmp_path):
    """--write-inputs, then --addr: a server the caller started (with --trust_client_time)."""
    inputs = tmp_path / "inputs"
    result = _offline("replay", "--build", build, "--out", inputs, "--write-inputs", "--page-views", "300")
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout)["page_views"] == 300
    policy = inputs / "policy-greedy.json"
    assert json.loads(policy.read_text())["holdout_fraction"] == 0
    bundle = json.loads((build / "build.json").read_text())["bundle"]
    proc = start_offerd(tmp_path, Path(bundle).parent, tmp_path / "db",
                        [f"--ingest={inputs / 'replay_users.jsonl'}", f"--policy_config={policy}",
                         "--trust_client_time"])
    try:
        result = _offline("replay", "--build", build, "--addr", proc.addr, "--out", tmp_path / "out",
                          "--page-views", "300", "--no-feedback")
        assert result.returncode == 0, result.stderr[-4000:]
    finally:
        assert proc.stop() == 0, proc.log()
    doc = json.loads((tmp_path / "out" / "replay.json").read_text())
    assert list(doc["modes"]) == ["external"]
    assert doc["modes"]["external"]["vs_offline_ours"]["share_same_slate"] == 1.0


def test_bad_input_exits_2(tmp_path):
    result = _offline("replay", "--build", tmp_path / "nope", "--offerd", OFFERD, "--out", tmp_path / "o")
    assert result.returncode == 2
    assert "build.json: not found" in result.stderr
    result = _offline("replay", "--build", tmp_path, "--out", tmp_path / "o")
    assert result.returncode == 2 and "--offerd" in result.stderr


def test_docs_greedy_policy_config_is_the_replays():
    from offline.replay import GREEDY_POLICY

    assert json.loads((ROOT / "docs" / "policy-config-greedy.json").read_text()) == GREEDY_POLICY
