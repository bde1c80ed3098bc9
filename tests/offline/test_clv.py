"""Tests of the CLV math (float64 vs mpmath vectors), the BG/NBD + Gamma-Gamma fits (simulated
data, CDNOW literature values) and the ``clv`` job's CLI and input validation."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from offline import clv, clv_math, clv_vectors  # noqa: E402

VECTORS = REPO_ROOT / "tests" / "vectors" / "clv_vectors.json"


def _cdnow_dir() -> Path | None:
    """The shipped CDNOW files: $OFFERD_CDNOW_DIR, else shared/ beside the repository."""
    candidates = [os.environ.get("OFFERD_CDNOW_DIR"),
                  REPO_ROOT.parent / "shared" / "datasets" / "cdnow",
                  Path("/work/shared/datasets/cdnow")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "CDNOW_sample.txt").is_file():
            return Path(candidate)
    return None


CDNOW = _cdnow_dir()
needs_cdnow = pytest.mark.skipif(CDNOW is None, reason="CDNOW dataset not found")


def run_clv(*argv: object) -> tuple[int, str, str]:
    """Run ``offline clv`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = clv.main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------ vectors
@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def _float_outputs(inputs: dict) -> dict[str, float]:
    i = inputs
    bg = (i["r"], i["alpha"], i["a"], i["b"], i["x"], i["t_x"], i["T"])
    return {
        "p_alive": float(clv_math.bgnbd_p_alive(*bg)),
        "expected_purchases": float(clv_math.bgnbd_expected_purchases(i["t"], *bg)),
        "expected_spend": float(clv_math.gamma_gamma_expected_spend(
            i["p"], i["q"], i["v"], i["x"], i["m_x"])),
        "clv": float(clv_math.clv(i["t"], i["r"], i["alpha"], i["a"], i["b"], i["p"], i["q"],
                                  i["v"], i["x"], i["t_x"], i["T"], i["m_x"], i["margin"],
                                  i["annual_discount_rate"])),
    }


def test_vectors_file_is_self_describing_and_small(vectors: dict) -> None:
    assert VECTORS.stat().st_size < 400_000
    assert {"description", "formulas", "cases", "inputs"} <= vectors.keys()
    assert {"p_alive", "expected_purchases", "expected_spend", "clv"} <= vectors["formulas"].keys()
    assert len(vectors["cases"]) >= 200
    labels = {c["label"] for c in vectors["cases"]}
    assert {"large_x", "large_T_x0", "tiny_params", "huge_params", "a_near_one",
            "t_x_equals_T", "new_customer_unconditional"} <= labels
    for case in vectors["cases"]:
        assert set(case["inputs"]) == set(clv_vectors.INPUT_NAMES)
        for value in case["outputs"].values():
            assert isinstance(value, str) and len(value.replace("-", "").split("e")[0]) >= 16


def test_float64_math_reproduces_vectors(vectors: dict) -> None:
    threshold = vectors["well_conditioned_kappa"]
    failures = []
    checked = 0
    for case in vectors["cases"]:
        got = _float_outputs(case["inputs"])
        for name, text in case["outputs"].items():
            expected = float(text)
            rel = abs(got[name] - expected) / abs(expected) if expected else abs(got[name])
            kappa = case["kappa"][name]
            tolerance = 1e-9 if kappa <= threshold else max(1e-9, kappa * 1e-13)
            checked += 1
            if not rel <= tolerance:
                failures.append((case["label"], name, rel, case["inputs"]))
    assert checked >= 800
    assert not failures, failures[:5]


def test_vectorised_evaluation_matches_vectors(vectors: dict) -> None:
    """All cases in one array call (the per-customer path of the job) give the same values."""
    cols = {name: np.array([c["inputs"][name] for c in vectors["cases"]])
            for name in clv_vectors.INPUT_NAMES}
    bg = [cols[k] for k in ("r", "alpha", "a", "b", "x", "t_x", "T")]
    got = {
        "p_alive": clv_math.bgnbd_p_alive(*bg),
        "expected_purchases": clv_math.bgnbd_expected_purchases(cols["t"], *bg),
        "expected_spend": clv_math.gamma_gamma_expected_spend(
            cols["p"], cols["q"], cols["v"], cols["x"], cols["m_x"]),
    }
    for name, values in got.items():
        expected = np.array([float(c["outputs"][name]) for c in vectors["cases"]])
        np.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-300, err_msg=name)
    horizon_52 = cols["t"] == 52.0
    value = clv_math.clv(52.0, *(cols[k][horizon_52] for k in (
        "r", "alpha", "a", "b", "p", "q", "v", "x", "t_x", "T", "m_x", "margin",
        "annual_discount_rate")))
    expected = np.array([float(c["outputs"]["clv"]) for c in vectors["cases"]])[horizon_52]
    np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-300)


def test_vectors_file_matches_generator() -> None:
    """A few cases recomputed now equal the committed strings (the file is up to date)."""
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    cases = clv_vectors._cases()
    assert len(cases) == len(document["cases"])
    for index in (0, 41, len(cases) - 3):
        fresh = clv_vectors.compute_case(cases[index])
        assert fresh == document["cases"][index]


# -------------------------------------------------------------------- formula checks
def test_p_alive_and_expectation_basics() -> None:
    params = (0.243, 4.414, 0.793, 2.426)
    assert clv_math.bgnbd_p_alive(*params, 0, 0, 30.0) == 1.0
    # A customer whose last purchase is long ago is less likely alive than a recent one.
    recent, lapsed = clv_math.bgnbd_p_alive(*params, np.array([5.0, 5.0]),
                                            np.array([29.0, 5.0]), 30.0)
    assert 0 < lapsed < recent < 1
    assert clv_math.bgnbd_expected_purchases(0.0, *params, 3, 10, 20) == 0.0
    # Monotone in the horizon.
    e = clv_math.bgnbd_expected_purchases(np.arange(1, 60.0), *params, 3, 10, 20)
    assert np.all(np.diff(e) > 0)
    # Huge x and T: no overflow, no NaN.
    big = clv_math.bgnbd_expected_purchases(52.0, *params, 1e6, 9999.0, 1e4)
    assert np.isfinite(big) and big > 0


def test_clv_without_discount_is_margin_spend_expected_purchases() -> None:
    args = dict(r=0.3, alpha=5.0, a=0.9, b=3.0, x=np.array([0.0, 2.0, 9.0]),
                t_x=np.array([0.0, 10.0, 30.0]), T=np.array([20.0, 30.0, 31.0]))
    spend = clv_math.gamma_gamma_expected_spend(6.0, 3.5, 15.0, args["x"], np.array([0, 20, 40.0]))
    value = clv_math.clv(52.0, args["r"], args["alpha"], args["a"], args["b"], 6.0, 3.5, 15.0,
                         args["x"], args["t_x"], args["T"], np.array([0, 20, 40.0]), 0.3, 0.0)
    expected = clv_math.bgnbd_expected_purchases(52.0, **args)
    np.testing.assert_allclose(value, 0.3 * spend * expected, rtol=1e-12)
    discounted = clv_math.clv(52.0, args["r"], args["alpha"], args["a"], args["b"], 6.0, 3.5,
                              15.0, args["x"], args["t_x"], args["T"], np.array([0, 20, 40.0]),
                              0.3, 0.1)
    assert np.all(discounted < value) and np.all(discounted > value * 1.1 ** -1)


# ------------------------------------------------------------------------- fitting
def test_fit_recovers_simulated_parameters() -> None:
    true = dict(r=0.5, alpha=6.0, a=0.8, b=2.5, p=6.0, q=4.0, v=15.0)
    rng = np.random.default_rng(3)
    T = rng.integers(0, 13, 4000) * 1.0 + 26.0  # weekly first-purchase cohorts
    data = clv.simulate_bgnbd_gamma_gamma(4000, T=T, rng=rng, **true)
    bg = clv.fit_bgnbd(data["x"], data["t_x"], data["T"])
    repeat = data["x"] > 0
    gg = clv.fit_gamma_gamma(data["x"][repeat], data["m_x"][repeat])
    for fit in (bg, gg):
        assert fit.converged and not fit.warnings
        for name, estimate in fit.params.items():
            se = fit.standard_errors[name]
            assert 0 < se < 0.5 * true[name], (name, se)
            assert abs(estimate - true[name]) < 4 * se, (name, estimate, se)


# ---------------------------------------------------------------------------- CDNOW
@needs_cdnow
def test_cdnow_summary_matches_shipped_summary_file() -> None:
    """Our summary of CDNOW_sample.txt equals the published x, t_x, T, zbar (2-decimal rounding)."""
    tx = clv.load_transactions_cdnow(CDNOW / "CDNOW_sample.txt")
    assert tx.rows_read == 6919 and tx.rows_merged == 223
    summary = clv.summarise(tx, calibration_end_day=int(np.datetime64("1997-09-30", "D")
                                                        .astype(np.int64)))
    published = pd.read_csv(CDNOW / "cdnow_customers_summary_with_transactions.csv")
    assert summary.x.size == len(published) == 2357
    # The summary's ID is the sample id (column 2 of CDNOW_sample.txt); we key by master id.
    ids = pd.read_csv(CDNOW / "CDNOW_sample.txt", sep=r"\s+", header=None, usecols=[0, 1],
                      names=["master", "ID"], dtype={"master": str}).drop_duplicates()
    ours = pd.DataFrame({"master": summary.user_id.astype(str), "x": summary.x,
                         "t_x": summary.t_x, "T": summary.T, "m_x": summary.m_x})
    both = ours.merge(ids, on="master").merge(published, on="ID", suffixes=("", "_pub"))
    assert len(both) == 2357
    np.testing.assert_array_equal(both["x"], both["x_pub"])
    np.testing.assert_allclose(both["t_x"], both["t_x_pub"], atol=0.0051)
    np.testing.assert_allclose(both["T"], both["T_pub"], atol=0.0051)
    np.testing.assert_allclose(both["m_x"], both["zbar"], atol=0.0051)
    # Fader, Hardie & Lee: the 1,411 customers with x = 0 made 334 holdout repeat purchases.
    zero = summary.x == 0
    assert zero.sum() == 1411 and summary.x_holdout[zero].sum() == 334


@needs_cdnow
def test_cdnow_fit_reproduces_literature(tmp_path: Path) -> None:
    code, out, err = run_clv("--format", "cdnow", "--transactions", CDNOW / "CDNOW_sample.txt",
                             "--calibration-end", "1997-09-30", "--out", tmp_path)
    assert code == 0, err
    doc = json.loads((tmp_path / "clv.json").read_text())
    literature = {"bgnbd": dict(r=0.243, alpha=4.414, a=0.793, b=2.426),
                  "gamma_gamma": dict(p=6.25, q=3.74, v=15.44)}
    for model, params in literature.items():
        for name, value in params.items():
            assert doc[model][name] == pytest.approx(value, rel=0.02), (model, name)
    assert doc["bgnbd"]["loglik"] == pytest.approx(-9582.4, abs=0.5)
    assert doc["n_customers"] == 2357 and doc["gamma_gamma_fit"]["n_customers"] == 946
    assert doc["time_unit"] == "week"
    assert (tmp_path / "calibration_holdout.png").stat().st_size > 10_000


@needs_cdnow
def test_cdnow_master_loader_and_sample_amounts_equal_master() -> None:
    """The master file holds all 23,570 customers; the 1/10 sample's rows (dates and dollar
    amounts) are exactly the master's rows of the sampled customers."""
    master = clv.load_transactions_cdnow(CDNOW / "CDNOW_master.txt")
    assert master.rows_read == 69659
    assert len(set(master.user_id.tolist())) == 23570
    sample = clv.load_transactions_cdnow(CDNOW / "CDNOW_sample.txt")
    in_sample = np.isin(master.user_id, np.unique(sample.user_id))
    np.testing.assert_array_equal(master.user_id[in_sample], sample.user_id)
    np.testing.assert_array_equal(master.day[in_sample], sample.day)
    np.testing.assert_allclose(master.amount[in_sample], sample.amount, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------ CLI
def _write_simulated_csv(path: Path, n: int = 600, seed: int = 5) -> None:
    """Transactions CSV (user_id,date,amount) drawn from the model, with same-day duplicates."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.8, 1.0 / 20.0, n)  # purchases per day
    drop = rng.beta(2.0, 8.0, n)
    spend_rate = rng.gamma(4.0, 1.0 / 20.0, n)
    start = np.datetime64("2024-01-01")
    rows = []
    for user in range(n):
        day = int(rng.integers(0, 60))
        alive = True
        while alive and day < 365:
            amount = round(float(rng.gamma(5.0, 1.0 / spend_rate[user])), 2)
            rows.append((f"u{user:04d}", str(start + day), amount))
            if rng.random() < 0.05:
                rows.append((f"u{user:04d}", str(start + day), 1.0))  # same-day duplicate
            day += 1 + int(rng.exponential(1.0 / lam[user]))
            alive = rng.random() > drop[user]
    pd.DataFrame(rows, columns=["user_id", "date", "amount"]).to_csv(path, index=False)


def test_cli_required_invocation_writes_outputs(tmp_path: Path) -> None:
    csv = tmp_path / "transactions.csv"
    _write_simulated_csv(csv)
    out = tmp_path / "out"
    code, stdout, err = run_clv("--transactions", csv, "--calibration-end", "2024-07-31",
                                "--out", out)
    assert code == 0, err
    doc = json.loads((out / "clv.json").read_text())
    assert set(doc["bgnbd"]) >= {"r", "alpha", "a", "b", "loglik"}
    assert set(doc["gamma_gamma"]) >= {"p", "q", "v"}
    assert doc["time_unit"] == "week" and isinstance(doc["n_customers"], int)
    assert set(doc["bgnbd_se"]) == {"r", "alpha", "a", "b"}
    assert doc["input"]["rows_merged_same_day"] > 0
    customers = pd.read_csv(out / "customers.csv", dtype={"user_id": str})
    assert list(customers.columns[:9]) == ["user_id", "x", "t_x", "T", "m_x", "p_alive",
                                           "expected_purchases", "expected_spend", "clv"]
    assert len(customers) == doc["n_customers"]
    assert customers["p_alive"].between(0, 1).all() and (customers["clv"] >= 0).all()
    assert (out / "calibration_holdout.png").is_file()
    assert (out / "holdout_by_frequency.csv").is_file()


def test_cli_help_runs_as_module() -> None:
    result = subprocess.run([sys.executable, "-m", "offline", "clv", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--calibration-end" in result.stdout


@pytest.mark.parametrize(
    "content, extra, expected",
    [
        (None, [], "file not found"),
        ("", [], "empty file"),
        ("user_id,date,amount\n", [], "only a header"),
        ("user,date,amount\nu1,2024-01-01,3\n", [], "missing column(s) 'user_id'"),
        ("user_id,date,amount\nu1,2024-01-01,3\nu1,2024-13-01,4\n", [],
         "line 3: column 'date': cannot parse date '2024-13-01'"),
        ("user_id,date,amount\nu1,2024-01-01,3\nu1,2024-02-01,-4\n", [],
         "line 3: column 'amount': negative amount -4"),
        ("user_id,date,amount\nu1,2024-01-01,abc\n", [], "line 2: column 'amount': not a finite"),
        ("user_id,date,amount\n,2024-01-01,3\n", [], "line 2: column 'user_id': empty user id"),
        ("id,day,value\nu1,01/02/2024,3\n", ["--user-col", "id", "--date-col", "day",
                                             "--amount-col", "value"],
         "line 2: column 'day': cannot parse date '01/02/2024' as YYYY-MM-DD"),
        ("user_id,date,amount\n" + "".join(f"u{i},2024-03-01,3\n" for i in range(12)), [],
         "need at least 10"),
    ],
)
def test_bad_input_exits_2_naming_file_row_and_problem(tmp_path: Path, content: str | None,
                                                       extra: list[str], expected: str) -> None:
    path = tmp_path / "tx.csv"
    if content is not None:
        path.write_text(content)
    code, _, err = run_clv("--transactions", path, "--calibration-end", "2024-02-15",
                           "--out", tmp_path / "out", *extra)
    assert code == 2
    assert str(path) in err and expected in err, err


def test_custom_columns_and_date_format(tmp_path: Path) -> None:
    csv = tmp_path / "iso.csv"
    _write_simulated_csv(csv, n=300, seed=9)
    frame = pd.read_csv(csv, dtype=str)
    frame["date"] = pd.to_datetime(frame["date"]).dt.strftime("%d/%m/%Y")
    frame.columns = ["customer", "when", "value"]
    other = tmp_path / "custom.csv"
    frame.to_csv(other, index=False)
    code, _, err = run_clv("--transactions", other, "--user-col", "customer", "--date-col", "when",
                           "--amount-col", "value", "--date-format", "%d/%m/%Y",
                           "--calibration-end", "2024-07-31", "--out", tmp_path / "a")
    assert code == 0, err
    code, _, err = run_clv("--transactions", csv, "--calibration-end", "2024-07-31",
                           "--out", tmp_path / "b")
    assert code == 0, err
    a = json.loads((tmp_path / "a" / "clv.json").read_text())
    b = json.loads((tmp_path / "b" / "clv.json").read_text())
    assert a["bgnbd"] == b["bgnbd"] and a["gamma_gamma"] == b["gamma_gamma"]


def test_same_day_transactions_are_one_occasion(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("user_id,date,amount\nu1,2024-01-01,5\nu1,2024-01-01T10:00:00,7\n"
                   "u1,2024-01-15,10\nu1,2024-01-15,2\nu1,2024-02-01,1\n")
    tx = clv.load_transactions_csv(csv)
    assert tx.rows_read == 5 and tx.rows_merged == 2
    summary = clv.summarise(tx, int(np.datetime64("2024-01-31", "D").astype(np.int64)))
    assert summary.x.tolist() == [1.0] and summary.m_x.tolist() == [12.0]
    assert summary.t_x.tolist() == [2.0] and summary.T.tolist() == [30 / 7]
    assert summary.x_holdout.tolist() == [1.0]
