"""Tests of the ``logs`` job (offline/logs_report.py) on decision/event logs the tests write."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from offline import logs_report  # noqa: E402
from tests.offline.conftest import run_job  # noqa: E402

T0 = 1_795_417_200_000  # 2026-11-23T07:00:00Z
HOUR = 3_600_000
DAY = 24 * HOUR

# The exact lines store/log_records.cc writes for the records of tests/store/log_records_test.cc
# (DecisionLineHasTheDocumentedText / EventLineHasTheDocumentedText): the reader must take them.
CPP_DECISION_LINE = (
    '{"type":"decision","decision_id":"0123456789abcdef0123456789abcdef","ts_ms":1795417200123,'
    '"user_id":"u-42","arm":"high_explore","holdout":false,"snapshot_version":"20261123T070000Z",'
    '"canary":true,"degraded":false,"context":{"channel":"app","device":"ios","page":"home",'
    '"country":"DE"},"offers":[{"offer_id":"o-1","rank":1,"score":1.25,"propensity":0.95,'
    '"explored":false,"p_treated":0.12,"p_control":0.03,"uplift":0.09,"clv":183.5,'
    '"expected_value":1.3,"fatigue_multiplier":0.9615,"segment":"persuadable"},'
    '{"offer_id":"o-7","rank":2,"score":1.25,"propensity":0.0125,"explored":true,"p_treated":0.12,'
    '"p_control":0.03,"uplift":-0.02,"clv":183.5,"expected_value":1.3,"fatigue_multiplier":0.9615,'
    '"segment":"sleeping_dog"}]}')
CPP_EVENT_LINE = (
    '{"type":"event","ts_ms":1795417201000,"received_ms":1795417201050,"user_id":"u-42",'
    '"offer_id":"o-1","event_type":"REDEEM","decision_id":"0123456789abcdef0123456789abcdef",'
    '"amount":0}')


def decision(decision_id: str, ts: int, user: str, holdout: bool = False, arm: str = "",
             offers: list[tuple[str, float | None, bool]] = ()) -> dict[str, Any]:
    """A decision line; ``offers`` = [(offer_id, propensity, explored)]."""
    return {
        "type": "decision", "decision_id": decision_id, "ts_ms": ts, "user_id": user, "arm": arm,
        "holdout": holdout, "snapshot_version": "20261123T070000Z", "canary": False, "degraded": False,
        "context": {"channel": "app", "device": "ios", "page": "home", "country": "DE"},
        "offers": [{"offer_id": o, "rank": i + 1, "score": 1.0, "propensity": p, "explored": x, "p_treated": 0.1,
                    "p_control": 0.05, "uplift": 0.05, "clv": 100.0, "expected_value": 0.5,
                    "fatigue_multiplier": 1.0, "segment": "persuadable"} for i, (o, p, x) in enumerate(offers)],
    }


def event(ts: int, user: str, event_type: str, offer: str = "", decision_id: str = "",
          amount: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"type": "event", "ts_ms": ts, "received_ms": ts + 5, "user_id": user, "offer_id": offer,
            "event_type": event_type, "decision_id": decision_id, "amount": amount, **extra}


def write_lines(path: Path, docs: list[Any], torn: str | None = None) -> None:
    text = "".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs)
    path.write_text(text + (torn or ""), encoding="utf-8")


@pytest.fixture()
def small_logs(tmp_path: Path) -> Path:
    """Hand-made logs whose report is worked out by hand in the tests below."""
    logs = tmp_path / "logs"
    logs.mkdir()
    d_t1 = decision("d_t1", T0, "t1", arm="a", offers=[("o1", 0.9, False), ("o2", 0.05, True)])
    d_t2 = decision("d_t2", T0 + 2 * HOUR, "t2", offers=[("o1", 0.95, False)])
    write_lines(logs / "decisions-20261123T070000Z-7-000000.jsonl", [
        decision("d_h1", T0, "h1", holdout=True),
        d_t1,
        d_t2,
        "{not json",  # a malformed line in the middle of a complete file
        d_t2,  # duplicate decision
        decision("d_m1a", T0, "m1", holdout=True),
    ])
    write_lines(logs / "decisions-20261123T080000Z-7-000001.jsonl.open", [
        decision("d_h2", T0 + HOUR, "h2", holdout=True),
        decision("d_t3", T0 + 3 * HOUR, "t3"),  # non-holdout with nothing above the ROI gate
        decision("d_m1b", T0 + HOUR, "m1", offers=[("o1", None, False)]),  # mixed user, bad propensity
    ], torn='{"type":"decision","decision_id":"d_torn","ts_')
    redeem = event(T0 + 10 * 60_000, "t1", "REDEEM", "o1", "d_t1")
    write_lines(logs / "events-20261123T070000Z-7-000000.jsonl", [
        event(T0 + 60_000, "t1", "CLICK", "o1", "d_t1"),
        redeem,
        redeem,  # duplicate event line
        event(T0 + HOUR, "t1", "PURCHASE", "", "d_t1", 30.0, margin=9.0),
        event(T0 + 10 * DAY, "t1", "PURCHASE", "", "", 20.0, margin=6.0),  # after the 168 h window
        event(T0 + 2 * HOUR + 1, "t2", "CLICK", "o1", "d_t2"),
        event(T0 + 2 * HOUR + 2, "t2", "CLICK", "o1", "d_t2"),  # second click: one click reward
        event(T0 + 5 * HOUR, "h1", "PURCHASE", "", "", 10.0, margin=3.0),
    ])
    write_lines(logs / "events-20261123T080000Z-7-000001.jsonl.open", [
        event(T0 + 4 * HOUR, "t3", "CLICK", "o1", "nope"),  # unknown decision id
        event(T0 + 4 * HOUR, "t1", "CLICK", "o9", "d_t1"),  # offer the decision did not serve
        event(T0 + 4 * HOUR, "t2", "CLICK", "o1", "d_t1"),  # another user's decision
        event(T0 + 4 * HOUR, "t2", "LIKE", "o1", "d_t2"),  # unknown type: malformed
    ], torn='{"type":"event","ts_ms":17954')
    (logs / "README.txt").write_text("not a log file\n")
    (logs / "decisions-old.jsonl").write_text("not a log file name\n")
    return logs


def run_report(log_dir: Path, out: Path, *extra: str) -> dict[str, Any]:
    result = run_job("logs", "--log-dir", log_dir, "--out", out, *extra)
    assert result.code == 0, result.err
    return json.loads((out / "logs_report.json").read_text())


def test_reading_tolerates_torn_malformed_and_duplicate_lines(small_logs: Path, tmp_path: Path) -> None:
    doc = run_report(small_logs, tmp_path / "out")
    inp = doc["input"]
    assert inp["files_complete"] == 2 and inp["files_open"] == 2
    assert inp["torn_last_lines"] == 2
    assert inp["malformed_lines"] == 2
    assert any("decisions-20261123T070000Z-7-000000.jsonl:4" in e for e in inp["malformed_examples"])
    assert any("LIKE" in e for e in inp["malformed_examples"])
    assert inp["duplicate_decisions"] == 1
    assert inp["duplicate_events"] == 1
    assert inp["decisions"] == 8 - 1  # 8 decision lines read, one duplicate
    assert doc["decisions"]["holdout"] == 3
    assert doc["decisions"]["empty_non_holdout"] == 1
    assert doc["events"] == {"CLICK": 6, "PURCHASE": 3, "REDEEM": 1}


def test_lift_versus_holdout_matches_a_hand_computation(small_logs: Path, tmp_path: Path) -> None:
    lift = run_report(small_logs, tmp_path / "out")["lift"]
    assert lift["treated_users"] == 3 and lift["holdout_users"] == 2
    assert lift["mixed_assignment_users_excluded"] == 1
    assert lift["windows_cut_by_log_end"] == 0
    assert lift["purchases_in_windows"] == 2 and lift["purchases_outside_windows"] == 1
    conv = lift["metrics"]["conversion_rate"]
    treated, holdout = np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.0])
    assert conv["treated_mean"] == pytest.approx(1 / 3)
    assert conv["holdout_mean"] == pytest.approx(0.5)
    assert conv["difference"] == pytest.approx(-1 / 6)
    assert conv["relative_lift"] == pytest.approx(-1 / 3)
    welch = stats.ttest_ind(treated, holdout, equal_var=False)
    assert conv["p_value"] == pytest.approx(welch.pvalue)
    se = math.sqrt(treated.var(ddof=1) / 3 + holdout.var(ddof=1) / 2)
    q = stats.t.ppf(0.975, conv["df"])
    assert conv["ci_low"] == pytest.approx(-1 / 6 - q * se)
    assert conv["ci_high"] == pytest.approx(-1 / 6 + q * se)
    revenue = lift["metrics"]["revenue_per_user"]
    assert revenue["treated_mean"] == pytest.approx(10.0)  # 30 in the window, the 20 is after it
    assert revenue["holdout_mean"] == pytest.approx(5.0)
    assert "margin_per_user" not in lift["metrics"]


def test_window_hours_and_margin_field(small_logs: Path, tmp_path: Path) -> None:
    lift = run_report(small_logs, tmp_path / "out", "--window-hours", "300", "--margin-field", "margin")["lift"]
    # 300 h from t1's first decision reaches its purchase at +240 h, the last timestamp of the
    # log: every one of the 5 users' windows is cut by the end of the log.
    assert lift["purchases_in_windows"] == 3
    assert lift["windows_cut_by_log_end"] == 5
    assert lift["metrics"]["revenue_per_user"]["treated_mean"] == pytest.approx(50 / 3)
    assert lift["metrics"]["margin_per_user"]["treated_mean"] == pytest.approx(15 / 3)
    assert lift["metrics"]["margin_per_user"]["holdout_mean"] == pytest.approx(1.5)


def test_policy_value_matches_a_hand_computation(small_logs: Path, tmp_path: Path) -> None:
    pv = run_report(small_logs, tmp_path / "out", "--margin-field", "margin")["policy_value"]
    assert pv["decisions"] == 4  # d_t1, d_t2, d_t3, d_m1b
    assert pv["decisions_bad_propensity"] == 1 and pv["decisions_used"] == 3
    assert pv["decisions_with_exploration"] == 1
    assert pv["join"]["events_unknown_decision"] == 1
    assert pv["join"]["events_user_mismatch"] == 1
    assert pv["join"]["events_offer_not_served"] == 1
    # Rows d_t1 (mu 0.9*0.05, explored), d_t2 (mu 0.95), d_t3 (mu 1, no offers).
    clicks = pv["rewards"]["clicks"]
    assert clicks["served"]["estimate"] == pytest.approx(2 / 3)
    assert clicks["served"]["snips"] == pytest.approx(2 / 3)
    assert clicks["logged_mean"] == pytest.approx(2 / 3)
    assert clicks["greedy"]["estimate"] == pytest.approx((1 / 0.95) / 3)
    assert clicks["greedy"]["snips"] == pytest.approx((1 / 0.95) / (1 / 0.95 + 1))
    assert clicks["greedy_minus_served"]["estimate"] == pytest.approx((1 / 0.95) / 3 - 2 / 3)
    assert pv["rewards"]["redeems"]["served"]["estimate"] == pytest.approx(1 / 3)
    assert pv["rewards"]["redeems"]["greedy"]["estimate"] == pytest.approx(0.0)
    assert pv["rewards"]["attributed_revenue"]["served"]["estimate"] == pytest.approx(10.0)
    assert pv["rewards"]["attributed_margin"]["served"]["estimate"] == pytest.approx(3.0)
    assert pv["by_arm"]["a"]["decisions"] == 1
    assert pv["by_arm"]["(base)"]["clicks"]["estimate"] == pytest.approx(0.5)


def test_outputs_are_written(small_logs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_job("logs", "--log-dir", small_logs, "--out", out)
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["treated_users"] == 3 and summary["holdout_users"] == 2
    assert (out / "logs_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "logs_report.md").read_text()
    assert "## Lift versus holdout" in md and "conversion_rate" in md and "greedy" in md


def test_reads_the_lines_the_cpp_formatter_writes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "decisions-20261123T070000Z-1-000000.jsonl", [CPP_DECISION_LINE])
    write_lines(logs / "events-20261123T070000Z-1-000000.jsonl", [CPP_EVENT_LINE])
    parsed = logs_report.read_logs(logs)
    assert parsed.read.malformed_lines == 0
    row = parsed.decisions.iloc[0]
    assert row["decision_id"] == "0123456789abcdef0123456789abcdef" and row["arm"] == "high_explore"
    assert bool(row["explored"]) and row["n_offers"] == 2
    assert math.exp(row["log_propensity"]) == pytest.approx(0.95 * 0.0125)
    assert list(parsed.served["offer_id"]) == ["o-1", "o-7"]
    assert parsed.events.iloc[0]["event_type"] == "REDEEM"


def test_bad_input_exits_2(tmp_path: Path) -> None:
    missing = run_job("logs", "--log-dir", tmp_path / "missing", "--out", tmp_path / "out")
    assert missing.code == 2 and "not a directory" in missing.err
    empty = tmp_path / "empty"
    empty.mkdir()
    write_lines(empty / "events-20261123T070000Z-1-000000.jsonl", [event(T0, "u", "CLICK", "o")])
    no_decisions = run_job("logs", "--log-dir", empty, "--out", tmp_path / "out")
    assert no_decisions.code == 2 and "no decision lines" in no_decisions.err
    bad_window = run_job("logs", "--log-dir", empty, "--out", tmp_path / "out", "--window-hours", "0")
    assert bad_window.code == 2 and "--window-hours" in bad_window.err


def test_randomized_log_recovers_the_true_lift_and_greedy_value(tmp_path: Path) -> None:
    """A simulated service: 20% holdout, treated users convert at 0.30 vs 0.20; one slot per
    decision, greedy with probability 0.9, else one of 4 other offers (0.025 each); a greedy
    offer is redeemed with probability 0.2, an explored one with 0.05."""
    rng = np.random.default_rng(7)
    users = 6000
    holdout = rng.random(users) < 0.2
    logs = tmp_path / "logs"
    logs.mkdir()
    decisions, events = [], []
    for u in range(users):
        user, ts = f"u{u}", T0 + int(rng.integers(0, DAY))
        if holdout[u]:
            decisions.append(decision(f"d{u}", ts, user, holdout=True))
        else:
            explored = bool(rng.random() < 0.1)
            offer, prop = (f"o{int(rng.integers(1, 5))}", 0.025) if explored else ("o0", 0.9)
            decisions.append(decision(f"d{u}", ts, user, offers=[(offer, prop, explored)]))
            if rng.random() < (0.05 if explored else 0.2):
                events.append(event(ts + HOUR, user, "REDEEM", offer, f"d{u}"))
        if rng.random() < (0.2 if holdout[u] else 0.3):
            events.append(event(ts + 2 * HOUR, user, "PURCHASE", "", "", float(rng.gamma(4.0, 10.0))))
    events.append(event(T0 + 9 * DAY, "u0", "IMPRESSION", "o0"))  # the log runs past every window
    write_lines(logs / "decisions-20261123T070000Z-1-000000.jsonl", decisions[: users // 2])
    write_lines(logs / "decisions-20261124T070000Z-1-000001.jsonl.open", decisions[users // 2:])
    write_lines(logs / "events-20261123T070000Z-1-000000.jsonl", events)

    doc = run_report(logs, tmp_path / "out")
    conv = doc["lift"]["metrics"]["conversion_rate"]
    assert conv["ci_low"] <= 0.10 <= conv["ci_high"]
    assert conv["ci_low"] > 0.0
    assert conv["relative_lift"] == pytest.approx(0.5, abs=0.25)
    redeems = doc["policy_value"]["rewards"]["redeems"]
    greedy = redeems["greedy"]
    assert greedy["snips_ci_low"] <= 0.2 <= greedy["snips_ci_high"]
    served = redeems["served"]
    assert served["ci_low"] <= 0.9 * 0.2 + 0.1 * 0.05 <= served["ci_high"]
    assert served["estimate"] == pytest.approx(redeems["logged_mean"])


def test_logs_without_events_or_without_treated_users_still_report(tmp_path: Path) -> None:
    only_decisions = tmp_path / "a"
    only_decisions.mkdir()
    write_lines(only_decisions / "decisions-20261123T070000Z-1-000000.jsonl",
                [decision("d1", T0, "u1", offers=[("o", 0.9, False)]), decision("d2", T0, "u2", holdout=True)])
    doc = run_report(only_decisions, tmp_path / "out_a")
    assert doc["lift"]["metrics"]["conversion_rate"]["difference"] == 0.0
    assert doc["policy_value"]["rewards"]["clicks"]["served"]["estimate"] == 0.0

    only_holdout = tmp_path / "b"
    only_holdout.mkdir()
    write_lines(only_holdout / "decisions-20261123T070000Z-1-000000.jsonl.open",
                [decision("d2", T0, "u2", holdout=True)])
    doc = run_report(only_holdout, tmp_path / "out_b")
    assert doc["lift"]["treated_users"] == 0
    assert doc["lift"]["metrics"]["conversion_rate"]["difference"] is None
    assert doc["policy_value"]["decisions_used"] == 0 and doc["policy_value"]["rewards"] == {}
