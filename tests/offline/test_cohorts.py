"""Tests of the ``cohorts`` job on small fixtures the tests write themselves."""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from offline import cohorts  # noqa: E402

USERS = """user_id,signup_date,acquisition_source,acquisition_cost,country
u1,2024-01-15,search,10,US
u2,2024-01-20,search,20,US
u3,2024-02-03,social,5,DE
u4,2024-02-10,social,5,DE
"""
TRANSACTIONS = """user_id,date,amount
u1,2024-01-15,100
u1,2024-02-01,50
u1,2024-02-20,10
u1,2024-04-01,30
u2,2024-01-20,40
u2,2024-03-05,20
u3,2024-02-03,30
u3,2024-03-01,30
u9,2024-02-01,5
u3,2024-01-01,7
u2,2024-05-02,99
"""


def run_cohorts(*argv: object) -> tuple[int, str, str]:
    """Run ``offline cohorts`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cohorts.main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    users = tmp_path / "users.csv"
    tx = tmp_path / "transactions.csv"
    users.write_text(USERS)
    tx.write_text(TRANSACTIONS)
    return users, tx


def test_cohort_tables_and_source_clv_exact(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    users, tx = tiny
    out = tmp_path / "out"
    code, _, err = run_cohorts("--transactions", tx, "--users", users, "--out", out,
                               "--as-of", "2024-04-30", "--months", "3", "--margin", "0.3")
    assert code == 0, err
    doc = json.loads((out / "cohorts.json").read_text())
    assert doc["cohorts"] == ["2024-01", "2024-02"] and doc["cohort_sizes"] == [2, 2]
    assert doc["retention"] == [[1.0, 0.5, 0.5, 0.5], [0.5, 0.5, 0.0, None]]
    assert doc["revenue_per_user"] == [[70.0, 30.0, 10.0, 15.0], [15.0, 15.0, 0.0, None]]
    assert doc["counts"]["purchase_days_unknown_user"] == 1
    assert doc["counts"]["purchase_days_before_signup"] == 1
    assert doc["counts"]["purchase_days_after_as_of"] == 1
    by_source = {row["acquisition_source"]: row for row in doc["by_source"]}
    search, social = by_source["search"], by_source["social"]
    assert search["revenue_per_user_3m"] == pytest.approx(110.0)
    assert search["mean_acquisition_cost"] == pytest.approx(15.0)
    assert search["net_clv_3m"] == pytest.approx(0.3 * 110 - 15)
    assert search["payback_month"] == 1  # 0.3 * 70 = 21 >= 15 in the signup month
    assert social["revenue_per_user_3m"] == pytest.approx(30.0)
    assert social["net_clv_3m"] == pytest.approx(0.3 * 30 - 5)
    assert social["payback_month"] == 2
    assert doc["curves"]["search"]["cumulative_revenue_per_user"] == pytest.approx([70, 100, 110])
    retention = pd.read_csv(out / "retention.csv")
    assert list(retention.columns) == ["cohort", "cohort_size", "m0", "m1", "m2", "m3"]
    assert math.isnan(retention.loc[1, "m3"])
    table = (out / "clv_by_source.md").read_text()
    assert "| search | 2 | 15.00 |" in table and "net CLV 3m" in table
    for name in ("retention_heatmap.png", "revenue_heatmap.png", "clv_by_source.png",
                 "clv_by_source.csv", "clv_by_source_curves.csv", "revenue_per_user.csv"):
        assert (out / name).stat().st_size > 0, name


def test_months_not_observed_give_no_clv(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    users, tx = tiny
    code, _, err = run_cohorts("--transactions", tx, "--users", users, "--out", tmp_path / "o",
                               "--as-of", "2024-04-30", "--months", "4")
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "cohorts.json").read_text())
    by_source = {row["acquisition_source"]: row for row in doc["by_source"]}
    assert by_source["search"]["revenue_per_user_4m"] == pytest.approx(125.0)
    assert by_source["social"]["net_clv_4m"] is None  # nobody from social is 4 months old
    assert by_source["social"]["users_observed_4m"] == 0


def test_default_as_of_is_last_date_and_partial_month_is_not_observed(
        tiny: tuple[Path, Path], tmp_path: Path) -> None:
    users, tx = tiny
    code, _, err = run_cohorts("--transactions", tx, "--users", users, "--out", tmp_path / "o")
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "cohorts.json").read_text())
    assert doc["as_of"] == "2024-05-02" and doc["last_complete_month"] == "2024-04"
    assert doc["counts"]["purchase_days_after_as_of"] == 0


def _generated_world(tmp_path: Path, n_users: int = 600, seed: int = 4) -> tuple[Path, Path]:
    """Random users over 12 monthly cohorts with source-dependent purchase rates."""
    rng = np.random.default_rng(seed)
    sources = np.array(["paid_search", "social", "email"])
    rate = {"paid_search": 0.05, "social": 0.02, "email": 0.08}  # purchases per day
    cost = {"paid_search": 40.0, "social": 15.0, "email": 5.0}
    start = np.datetime64("2025-01-01")
    signup = start + rng.integers(0, 365, n_users).astype("timedelta64[D]")
    source = rng.choice(sources, n_users, p=[0.5, 0.3, 0.2])
    users = pd.DataFrame({
        "user_id": [f"u{i:05d}" for i in range(n_users)],
        "signup_date": signup.astype(str),
        "acquisition_source": source,
        "acquisition_cost": [round(cost[s] * rng.uniform(0.5, 1.5), 2) for s in source],
        "age": rng.integers(18, 70, n_users),
    })
    end = np.datetime64("2026-01-01")
    rows = []
    for uid, day, src in zip(users["user_id"], signup, source):
        t = day
        while t < end:
            rows.append((uid, str(t), round(float(rng.gamma(3.0, 10.0)), 2)))
            t = t + np.timedelta64(1 + int(rng.exponential(1.0 / rate[src])), "D")
    users_path, tx_path = tmp_path / "users.csv", tmp_path / "transactions.csv"
    users.to_csv(users_path, index=False)
    pd.DataFrame(rows, columns=["user_id", "date", "amount"]).to_csv(tx_path, index=False)
    return users_path, tx_path


def test_generated_world_ranks_sources_and_writes_plots(tmp_path: Path) -> None:
    users, tx = _generated_world(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run_cohorts("--transactions", tx, "--users", users, "--out", out,
                                    "--months", "12", "--as-of", "2025-12-31")
    assert code == 0, err
    doc = json.loads((out / "cohorts.json").read_text())
    assert len(doc["cohorts"]) == 12
    retention = np.array(doc["retention"], dtype=float)
    assert np.nanmin(retention) >= 0 and np.nanmax(retention) <= 1
    assert np.allclose(retention[:, 0], 1.0)  # first purchase at signup in this fixture
    assert np.isnan(retention[-1, 1:]).all() and not np.isnan(retention[0]).any()
    net = {row["acquisition_source"]: row["net_clv_12m"] for row in doc["by_source"]}
    revenue = {row["acquisition_source"]: row["revenue_per_user_12m"] for row in doc["by_source"]}
    assert revenue["email"] > revenue["paid_search"] > revenue["social"]
    assert net["email"] > net["social"]
    for name in ("retention_heatmap.png", "revenue_heatmap.png", "clv_by_source.png"):
        assert (out / name).stat().st_size > 10_000, name
    curves = pd.read_csv(out / "clv_by_source_curves.csv")
    assert len(curves) == 3 * 12
    assert (curves.groupby("acquisition_source")["cumulative_revenue_per_user"]
            .apply(lambda s: s.is_monotonic_increasing).all())


def test_column_name_options(tmp_path: Path) -> None:
    users = tmp_path / "people.csv"
    tx = tmp_path / "orders.csv"
    users.write_text("id,joined,channel_of_acq,cac\na,15/01/2024,x,3\nb,02/02/2024,y,4\n")
    tx.write_text("customer,when,value\na,2024-01-15,10\nb,2024-02-02,5\na,2024-02-11,7\n")
    code, _, err = run_cohorts(
        "--transactions", tx, "--users", users, "--out", tmp_path / "o", "--as-of", "2024-03-31",
        "--user-col", "customer", "--date-col", "when", "--amount-col", "value",
        "--users-id-col", "id", "--signup-col", "joined", "--source-col", "channel_of_acq",
        "--cost-col", "cac", "--signup-date-format", "%d/%m/%Y", "--months", "2")
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "cohorts.json").read_text())
    assert doc["retention"] == [[1.0, 1.0, 0.0], [1.0, 0.0, None]]
    code, _, err = run_cohorts("--transactions", tx, "--users", users, "--out", tmp_path / "p",
                               "--user-col", "customer", "--date-col", "when", "--amount-col",
                               "value", "--users-id-col", "id", "--signup-col", "joined",
                               "--source-col", "channel_of_acq", "--cost-col", "",
                               "--signup-date-format", "%d/%m/%Y", "--as-of", "2024-03-31")
    assert code == 0, err
    doc = json.loads((tmp_path / "p" / "cohorts.json").read_text())
    assert all(row["mean_acquisition_cost"] is None for row in doc["by_source"])


@pytest.mark.parametrize(
    "users_text, tx_text, expected, which",
    [
        ("user_id,signup_date,acquisition_source\nu1,2024-01-01,x\n", TRANSACTIONS,
         "missing column(s) 'acquisition_cost'", "users"),
        ("user_id,signup_date,acquisition_source,acquisition_cost\nu1,2024-01-01,x,1\n"
         "u1,2024-01-02,x,1\n", TRANSACTIONS, "line 3: column 'user_id': duplicate user id 'u1'",
         "users"),
        ("user_id,signup_date,acquisition_source,acquisition_cost\nu1,Jan 1,x,1\n", TRANSACTIONS,
         "line 2: column 'signup_date': cannot parse date 'Jan 1'", "users"),
        ("user_id,signup_date,acquisition_source,acquisition_cost\nu1,2024-01-01,x,-1\n",
         TRANSACTIONS, "line 2: column 'acquisition_cost': negative amount -1", "users"),
        (USERS, "user_id,date\nu1,2024-01-01\n", "missing column(s) 'amount'", "transactions"),
        (USERS, None, "file not found", "transactions"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, users_text: str, tx_text: str | None, expected: str,
                           which: str) -> None:
    users = tmp_path / "users.csv"
    tx = tmp_path / "transactions.csv"
    users.write_text(users_text)
    if tx_text is not None:
        tx.write_text(tx_text)
    code, _, err = run_cohorts("--transactions", tx, "--users", users, "--out", tmp_path / "o")
    assert code == 2
    named = users if which == "users" else tx
    assert str(named) in err and expected in err, err
