"""``clv`` job: fit BG/NBD + Gamma-Gamma on a transactions file and score every customer.

Usage::

    /usr/bin/python3 -m offline clv --transactions FILE --calibration-end YYYY-MM-DD --out DIR
    /usr/bin/python3 -m offline clv --format cdnow \\
        --transactions /work/shared/datasets/cdnow/CDNOW_sample.txt \\
        --calibration-end 1997-09-30 --out var/clv-cdnow

Data preparation (the conventions of Fader, Hardie & Lee and of the CDNOW summary files):

- time unit: week (days / 7, not rounded);
- transactions of one customer on one calendar day are one *purchase occasion*, amounts summed;
- calibration period: from each customer's first purchase up to ``--calibration-end``
  (inclusive); a customer whose first purchase is later is not part of the fit;
- ``x`` = purchase days in the calibration period minus 1, ``t_x`` = (last - first purchase
  day) / 7, ``T`` = (calibration end - first purchase day) / 7;
- ``m_x`` = mean amount of the ``x`` repeat purchase days (first purchase excluded), 0 if x = 0;
- holdout: purchase days after the calibration end up to ``--holdout-end`` (default: the last
  transaction date), used for the calibration/holdout plot and table only.

Fitting: maximum likelihood in log-parameter space (L-BFGS-B from several starts, then one
restart from the best); standard errors from the inverse of the numerically differentiated
(central differences) Hessian of the negative log-likelihood in log space, mapped to the
natural parameters by the delta method.  Gamma-Gamma is fitted on the customers with
``x > 0`` and ``m_x > 0``.

Per-customer scores are as of the calibration end (the data the model saw): P(alive),
expected purchases over ``--horizon-weeks``, expected spend per purchase occasion (Gamma-Gamma
conditional mean) and CLV = margin x expected spend x weekly-discounted expected purchases; see
``offline/clv_math.py`` for the exact formula (the one the online service uses).

Outputs in ``--out``: ``clv.json``, ``customers.csv``, ``holdout_by_frequency.csv`` and
``calibration_holdout.png`` (the last two only when there is a holdout period).

CDNOW (``--format cdnow``, files in ``shared/datasets/cdnow``): ``CDNOW_master.txt`` has the
whole cohort (23,570 customers, 69,659 rows, header line); ``CDNOW_sample.txt`` is the 1/10
sample of the literature (2,357 customers, no header, an extra sample-id column).  The sample's
rows -- dates and dollar amounts -- are exactly the master's rows of those customers (checked
by a test), so fitting the sample file *is* "the sample with amounts from the master file".
With ``--calibration-end 1997-09-30`` it reproduces Fader, Hardie & Lee: r = 0.243,
alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4; Gamma-Gamma on the 946 repeat customers
p = 6.25, q = 3.74, v = 15.44.  Zero amounts are accepted (8 rows in the sample).

Bad input (missing file, missing columns, unparsable dates or amounts, negative amounts, an
empty file) exits with status 2 and a message naming the file, the line or column and the
problem.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.optimize import minimize

from offline import clv_math

DEFAULT_HORIZON_WEEKS = 52.0
DEFAULT_MARGIN = 0.3
"""Gross margin rate applied to spend: a typical retail gross margin.  Set ``--margin`` from
the business's own figure."""
DEFAULT_DISCOUNT_RATE = 0.10
"""Annual discount rate (10 %/year), applied per week as ``(1 + d) ** (-week / 52)``."""
DEFAULT_FREQUENCY_BUCKETS = 7
_LOG_BOUND = 18.0  # parameters are searched in [e^-18, e^18]
_ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}(?:[T ].*)?\s*$")

FloatArray = NDArray[np.float64]


class InputError(Exception):
    """Bad input data or arguments; the message names the file, row/column and problem."""


# --------------------------------------------------------------------------- loading
@dataclass
class Transactions:
    """Purchase occasions: one row per (user, day), amounts summed over the day."""

    user_id: NDArray[np.object_]
    day: NDArray[np.int64]  # days since 1970-01-01
    amount: FloatArray
    source: str
    rows_read: int
    rows_merged: int  # transaction rows folded into another row of the same user and day


def read_table_as_strings(path: Path, **kwargs: object) -> pd.DataFrame:
    """Read a delimited file with every cell as a string; file problems -> ``InputError``."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (no header, no transactions)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                           **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: empty file ({exc})") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot parse: {exc}") from exc


def parse_dates(values: pd.Series, date_format: str, path: Path, column: str,
                first_line: int) -> NDArray[np.int64]:
    """Parse a column of date strings into days since the epoch.

    ``date_format`` is ``"iso"`` (``YYYY-MM-DD``, optionally followed by a time which is
    ignored) or a ``strptime`` format.  ``first_line`` is the file line of ``values[0]``.
    Raises ``InputError`` naming the first bad line.
    """
    text = values.astype(str)
    if date_format.lower() == "iso":
        ok = text.str.match(_ISO_DATE)
        parsed = pd.to_datetime(text.str.strip().str.slice(0, 10).where(ok), format="%Y-%m-%d",
                                errors="coerce")
        shown = "YYYY-MM-DD"
    else:
        parsed = pd.to_datetime(text.str.strip(), format=date_format, errors="coerce")
        shown = date_format
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{path}: line {first_line + i}: column {column!r}: cannot parse date "
                         f"{text.iloc[i]!r} as {shown} ({bad.size} bad row(s) in total)")
    return parsed.dt.normalize().to_numpy().astype("datetime64[D]").astype(np.int64)


def parse_amounts(values: pd.Series, path: Path, column: str, first_line: int) -> FloatArray:
    """Parse a column of amounts; non-numbers, non-finite and negative values are errors."""
    text = values.astype(str)
    amount = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(amount))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{path}: line {first_line + i}: column {column!r}: not a finite "
                         f"number: {text.iloc[i]!r} ({bad.size} bad row(s) in total)")
    negative = np.flatnonzero(amount < 0)
    if negative.size:
        i = int(negative[0])
        raise InputError(f"{path}: line {first_line + i}: column {column!r}: negative amount "
                         f"{text.iloc[i].strip()} ({negative.size} negative row(s) in total)")
    return amount


def _check_user_ids(values: pd.Series, path: Path, column: str, first_line: int) -> None:
    blank = np.flatnonzero(values.astype(str).str.strip().eq("").to_numpy())
    if blank.size:
        raise InputError(f"{path}: line {first_line + int(blank[0])}: column {column!r}: "
                         f"empty user id ({blank.size} row(s) in total)")


def _merge_days(user_id: NDArray[np.object_], day: NDArray[np.int64], amount: FloatArray,
                source: str) -> Transactions:
    frame = pd.DataFrame({"user_id": user_id, "day": day, "amount": amount})
    merged = frame.groupby(["user_id", "day"], sort=True, as_index=False)["amount"].sum()
    return Transactions(
        user_id=merged["user_id"].to_numpy(dtype=object),
        day=merged["day"].to_numpy(dtype=np.int64),
        amount=merged["amount"].to_numpy(dtype=np.float64),
        source=source, rows_read=len(frame), rows_merged=len(frame) - len(merged))


def load_transactions_csv(path: Path, user_col: str = "user_id", date_col: str = "date",
                          amount_col: str = "amount", date_format: str = "iso") -> Transactions:
    """Read a transactions CSV with a header (one row per transaction)."""
    table = read_table_as_strings(path)
    missing = [c for c in (user_col, date_col, amount_col) if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(map(repr, missing))} "
                         f"(columns found: {', '.join(map(repr, table.columns))}); "
                         f"see --user-col/--date-col/--amount-col")
    if table.empty:
        raise InputError(f"{path}: no transactions (only a header)")
    first_line = 2  # line 1 is the header
    _check_user_ids(table[user_col], path, user_col, first_line)
    day = parse_dates(table[date_col], date_format, path, date_col, first_line)
    amount = parse_amounts(table[amount_col], path, amount_col, first_line)
    user_id = table[user_col].astype(str).str.strip().to_numpy(dtype=object)
    return _merge_days(user_id, day, amount, str(path))


def load_transactions_cdnow(path: Path) -> Transactions:
    """Read ``CDNOW_master.txt`` (header; id, date, CDs, dollars) or ``CDNOW_sample.txt``
    (no header; master id, sample id, date, CDs, dollars).  The user id is the master id."""
    table = read_table_as_strings(path, sep=r"\s+", header=None)
    if table.empty:
        raise InputError(f"{path}: no transactions")
    has_header = not table.iloc[0, 0].strip().isdigit()
    first_line = 2 if has_header else 1
    if has_header:
        table = table.iloc[1:].reset_index(drop=True)
        if table.empty:
            raise InputError(f"{path}: no transactions (only a header)")
    if table.shape[1] == 4:
        columns = {"user": 0, "date": 1, "amount": 3}
    elif table.shape[1] == 5:
        columns = {"user": 0, "date": 2, "amount": 4}
    else:
        raise InputError(f"{path}: expected 4 (CDNOW_master) or 5 (CDNOW_sample) whitespace-"
                         f"separated columns, found {table.shape[1]}")
    user = table.iloc[:, columns["user"]]
    _check_user_ids(user, path, f"column {columns['user'] + 1}", first_line)
    day = parse_dates(table.iloc[:, columns["date"]], "%Y%m%d", path,
                      f"column {columns['date'] + 1} (date)", first_line)
    amount = parse_amounts(table.iloc[:, columns["amount"]], path,
                           f"column {columns['amount'] + 1} (dollars)", first_line)
    return _merge_days(user.astype(str).str.strip().to_numpy(dtype=object), day, amount,
                       str(path))


# ------------------------------------------------------------------------ summarising
@dataclass
class CustomerSummary:
    """RFM summary of each customer whose first purchase is on or before the calibration end."""

    user_id: NDArray[np.object_]
    first_day: NDArray[np.int64]
    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    m_x: FloatArray
    x_holdout: FloatArray  # purchase days in (calibration end, holdout end]
    calibration_end_day: int
    holdout_end_day: int
    excluded_later_customers: int

    @property
    def holdout_weeks(self) -> float:
        """Length of the holdout period in weeks."""
        return (self.holdout_end_day - self.calibration_end_day) / 7.0


def summarise(tx: Transactions, calibration_end_day: int,
              holdout_end_day: int | None = None) -> CustomerSummary:
    """Build (x, t_x, T, m_x, holdout repeat purchases) per customer; vectorised over rows."""
    if holdout_end_day is None:
        holdout_end_day = max(int(tx.day.max()), calibration_end_day)
    codes, uniques = pd.factorize(tx.user_id, sort=False)
    n_users = len(uniques)
    first = np.full(n_users, np.iinfo(np.int64).max)
    np.minimum.at(first, codes, tx.day)
    in_cal = tx.day <= calibration_end_day
    in_holdout = (tx.day > calibration_end_day) & (tx.day <= holdout_end_day)
    days_cal = np.bincount(codes[in_cal], minlength=n_users).astype(np.float64)
    last = np.full(n_users, np.iinfo(np.int64).min)
    np.maximum.at(last, codes[in_cal], tx.day[in_cal])
    repeat = in_cal & (tx.day > first[codes])
    spend_repeat = np.bincount(codes[repeat], weights=tx.amount[repeat], minlength=n_users)
    x_holdout = np.bincount(codes[in_holdout], minlength=n_users).astype(np.float64)
    keep = first <= calibration_end_day
    x = days_cal - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        m_x = np.where(x > 0, spend_repeat / np.maximum(x, 1.0), 0.0)
    order = np.argsort(uniques[keep].astype(str), kind="stable")
    sel = np.flatnonzero(keep)[order]
    return CustomerSummary(
        user_id=np.asarray(uniques, dtype=object)[sel],
        first_day=first[sel],
        x=x[sel],
        t_x=(last[sel] - first[sel]) / 7.0,
        T=(calibration_end_day - first[sel]) / 7.0,
        m_x=m_x[sel],
        x_holdout=x_holdout[sel],
        calibration_end_day=calibration_end_day,
        holdout_end_day=holdout_end_day,
        excluded_later_customers=int((~keep).sum()),
    )


# ---------------------------------------------------------------------------- fitting
@dataclass
class FitResult:
    """Maximum-likelihood estimates with standard errors."""

    params: dict[str, float]
    standard_errors: dict[str, float]
    covariance: FloatArray  # of the natural parameters, order of ``params``
    loglik: float
    n_customers: int
    converged: bool
    message: str
    warnings: list[str] = field(default_factory=list)


def numerical_hessian(func: Callable[[FloatArray], float], point: FloatArray,
                      step: float = 1e-3) -> FloatArray:
    """Central-difference Hessian of ``func`` at ``point`` (same absolute step per axis)."""
    n = point.size
    hess = np.empty((n, n))
    f0 = func(point)
    eye = np.eye(n) * step
    for i in range(n):
        hess[i, i] = (func(point + eye[i]) - 2.0 * f0 + func(point - eye[i])) / step**2
        for j in range(i + 1, n):
            value = (func(point + eye[i] + eye[j]) - func(point + eye[i] - eye[j])
                     - func(point - eye[i] + eye[j]) + func(point - eye[i] - eye[j])
                     ) / (4 * step**2)
            hess[i, j] = hess[j, i] = value
    return hess


def _fit_log_space(neg_loglik: Callable[[FloatArray], float], names: Sequence[str],
                   starts: Sequence[Sequence[float]], n_customers: int) -> FitResult:
    """Minimise ``neg_loglik(natural params)`` over log-parameters; SEs by the delta method."""
    def objective(theta: FloatArray) -> float:
        value = neg_loglik(np.exp(theta)) / n_customers
        return float(value) if np.isfinite(value) else 1e300

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(names)
    best = None
    for start in starts:
        res = minimize(objective, np.log(np.asarray(start, dtype=np.float64)),
                       method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    # One restart from the best point refreshes L-BFGS-B's curvature memory.
    restart = minimize(objective, best.x, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    final = restart if restart.fun <= best.fun else best
    theta = np.clip(final.x, -_LOG_BOUND, _LOG_BOUND)
    params = np.exp(theta)
    warnings: list[str] = []
    at_bound = [n for n, t in zip(names, theta) if abs(t) > _LOG_BOUND - 0.5]
    if at_bound:
        warnings.append(f"parameter(s) {', '.join(at_bound)} at the search bound "
                        f"e^+-{_LOG_BOUND:g}: the model is degenerate for this data")
    hess_log = numerical_hessian(lambda th: float(neg_loglik(np.exp(th))), theta)
    try:
        cov_log = np.linalg.inv(hess_log)
        if np.any(np.diag(cov_log) <= 0) or not np.all(np.isfinite(cov_log)):
            raise np.linalg.LinAlgError("Hessian not positive definite")
    except np.linalg.LinAlgError as exc:
        warnings.append(f"standard errors unavailable: {exc}")
        cov_log = np.full((len(names), len(names)), np.nan)
    jac = np.diag(params)
    cov = jac @ cov_log @ jac
    se = np.sqrt(np.diag(cov))
    vague = [n for n, v, e in zip(names, params, se) if np.isfinite(e) and e > 2.0 * v]
    if vague:
        warnings.append(f"parameter(s) {', '.join(vague)} poorly determined (standard error > "
                        f"2 x estimate): the data do not pin down this part of the model")
    return FitResult(
        params={n: float(v) for n, v in zip(names, params)},
        standard_errors={n: float(v) for n, v in zip(names, se)},
        covariance=cov,
        loglik=-float(neg_loglik(params)),
        n_customers=n_customers,
        converged=bool(final.success),
        message=str(final.message),
        warnings=warnings,
    )


def _unique_rows(*columns: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """Distinct rows of the stacked columns and how often each occurs (likelihood weights)."""
    stacked = np.column_stack(columns)
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(np.float64)


def fit_bgnbd(x: FloatArray, t_x: FloatArray, T: FloatArray) -> FitResult:
    """Maximum-likelihood BG/NBD fit on per-customer (x, t_x, T) in weeks."""
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    (ux, utx, uT), weights = _unique_rows(x, t_x, T)

    def neg_loglik(params: FloatArray) -> float:
        r, alpha, a, b = params
        return -float(np.dot(weights, clv_math.bgnbd_log_likelihood(r, alpha, a, b, ux, utx, uT)))

    scale = float(np.mean(T)) if T.size and np.mean(T) > 0 else 1.0
    starts = [(1.0, 1.0, 1.0, 1.0), (0.5, scale / 4.0, 0.8, 2.5), (2.0, scale, 0.3, 5.0)]
    return _fit_log_space(neg_loglik, ("r", "alpha", "a", "b"), starts, int(x.size))


def fit_gamma_gamma(x: FloatArray, m_x: FloatArray) -> FitResult:
    """Maximum-likelihood Gamma-Gamma fit on repeat customers (x > 0, m_x > 0 required)."""
    x, m_x = (np.asarray(v, dtype=np.float64) for v in (x, m_x))
    (ux, um), weights = _unique_rows(x, m_x)

    def neg_loglik(params: FloatArray) -> float:
        p, q, v = params
        return -float(np.dot(weights, clv_math.gamma_gamma_log_likelihood(p, q, v, ux, um)))

    mean_spend = float(np.mean(m_x)) if m_x.size else 1.0
    starts = [(1.0, 1.0, 1.0), (5.0, 3.0, 2.0 * mean_spend), (2.0, 10.0, 9.0 * mean_spend / 2)]
    result = _fit_log_space(neg_loglik, ("p", "q", "v"), starts, int(x.size))
    if result.params["q"] <= 1.0:
        result.warnings.append("q <= 1: the population mean spend is infinite; expected spend "
                               "for customers without repeat purchases is undefined")
    return result


# ------------------------------------------------------------------------- simulation
def simulate_bgnbd_gamma_gamma(
    n_customers: int, r: float, alpha: float, a: float, b: float, p: float, q: float,
    v: float, T: FloatArray | float, rng: np.random.Generator,
) -> dict[str, FloatArray]:
    """Draw (x, t_x, T, m_x) from the BG/NBD + Gamma-Gamma generative model (vectorised).

    Each customer: ``lambda ~ Gamma(r, rate alpha)``, ``p_drop ~ Beta(a, b)``; purchases form a
    Poisson(lambda) process; after each purchase the customer drops out with prob. ``p_drop``.
    Spend: ``nu ~ Gamma(q, rate v)``, each purchase ``~ Gamma(p, rate nu)``.
    """
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n_customers,)).copy()
    lam = rng.gamma(r, 1.0 / alpha, n_customers)
    drop = rng.beta(a, b, n_customers)
    # Purchases made before dropping out (the dropout purchase included): >= 1, geometric.
    lifetime_purchases = rng.geometric(drop)
    possible = rng.poisson(lam * T)  # purchases in (0, T] if the customer never dropped out
    x = np.minimum(possible, lifetime_purchases).astype(np.float64)
    has = x > 0
    # Time of the x-th of `possible` uniform arrivals on (0, T): T * Beta(x, possible - x + 1).
    t_x = np.zeros(n_customers)
    t_x[has] = T[has] * rng.beta(x[has], possible[has] - x[has] + 1.0)
    nu = rng.gamma(q, 1.0 / v, n_customers)
    total = np.zeros(n_customers)
    total[has] = rng.gamma(p * x[has], 1.0 / nu[has])
    m_x = np.where(has, total / np.maximum(x, 1.0), 0.0)
    return {"x": x, "t_x": t_x, "T": T, "m_x": m_x}


# ----------------------------------------------------------------------------- output
def holdout_by_frequency(summary: CustomerSummary, predicted: FloatArray,
                         buckets: int = DEFAULT_FREQUENCY_BUCKETS) -> pd.DataFrame:
    """Mean actual vs predicted holdout repeat purchases by calibration frequency x."""
    bucket = np.minimum(summary.x, buckets).astype(int)
    frame = pd.DataFrame({"bucket": bucket, "actual": summary.x_holdout, "predicted": predicted})
    table = frame.groupby("bucket").agg(customers=("actual", "size"),
                                        actual_mean=("actual", "mean"),
                                        predicted_mean=("predicted", "mean")).reset_index()
    table["x"] = [f"{b}+" if b == buckets else str(b) for b in table["bucket"]]
    return table[["x", "customers", "actual_mean", "predicted_mean"]]


def _weekly_tracking(tx: Transactions, summary: CustomerSummary,
                     bg: dict[str, float]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulative repeat purchase days by week since the first cohort day: actual and model."""
    start = int(summary.first_day.min())
    weeks = np.arange(1, int(math.ceil((summary.holdout_end_day - start) / 7.0)) + 1)
    ends = np.minimum(start + 7 * weeks, summary.holdout_end_day + 1)  # exclusive day bounds
    position = pd.Index(summary.user_id).get_indexer(tx.user_id)
    mask = position >= 0
    first = summary.first_day[position[mask]]
    repeat_days = np.sort(tx.day[mask][tx.day[mask] > first])
    actual = np.searchsorted(repeat_days, ends, side="left").astype(np.float64)
    cohort_days, cohort_sizes = np.unique(summary.first_day, return_counts=True)
    age = (ends[:, None] - 1 - cohort_days[None, :]) / 7.0  # weeks since first purchase
    expected_each = clv_math.bgnbd_expected_purchases(np.maximum(age, 0.0), bg["r"], bg["alpha"],
                                                      bg["a"], bg["b"], 0.0, 0.0, 0.0)
    expected = (expected_each * cohort_sizes[None, :]).sum(axis=1)
    return weeks.astype(np.float64), actual, expected


def plot_calibration_holdout(path: Path, table: pd.DataFrame, tracking: tuple | None,
                             calibration_weeks: float | None, holdout_weeks: float) -> None:
    """Two panels: holdout repeat purchases by calibration frequency; weekly tracking."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if tracking is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), squeeze=False)
    ax = axes[0, 0]
    xs = np.arange(len(table))
    ax.plot(xs, table["actual_mean"], "o-", color="black", label="actual")
    ax.plot(xs, table["predicted_mean"], "s--", color="tab:blue", label="BG/NBD")
    ax.set_xticks(xs, table["x"])
    ax.set_xlabel("repeat purchases in calibration period (x)")
    ax.set_ylabel(f"mean repeat purchases in holdout ({holdout_weeks:.1f} weeks)")
    ax.set_title("Conditional expectation: holdout vs calibration")
    for i, n in enumerate(table["customers"]):
        ax.annotate(f"n={n}", (i, table["actual_mean"].iloc[i]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7, color="gray")
    ax.legend()
    ax.grid(alpha=0.3)
    if tracking is not None:
        weeks, actual, expected = tracking
        ax = axes[0, 1]
        ax.plot(weeks, actual, color="black", label="actual")
        ax.plot(weeks, expected, "--", color="tab:blue", label="BG/NBD")
        if calibration_weeks is not None:
            ax.axvline(calibration_weeks, color="gray", linestyle=":",
                       label="end of calibration")
        ax.set_xlabel("week since the first customer's first purchase")
        ax.set_ylabel("cumulative repeat purchases")
        ax.set_title("Tracking cumulative repeat purchases")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clean(value: object) -> object:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _day_to_iso(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def _parse_iso_day(text: str) -> int:
    try:
        parsed = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc
    return (parsed - date(1970, 1, 1)).days


# --------------------------------------------------------------------------------- job
def build_parser() -> argparse.ArgumentParser:
    """The job's command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python3 -m offline clv",
        description="Fit BG/NBD + Gamma-Gamma on a transactions file (weeks; purchases merged "
                    "per day) and write parameters, per-customer CLV and a calibration/holdout "
                    "plot.",
    )
    parser.add_argument("--transactions", required=True, type=Path,
                        help="transactions file (CSV with a header, or CDNOW text with "
                             "--format cdnow)")
    parser.add_argument("--format", choices=("csv", "cdnow"), default="csv",
                        help="csv (default) or cdnow: CDNOW_master.txt / CDNOW_sample.txt "
                             "as shipped")
    parser.add_argument("--user-col", default="user_id", help="user id column (default user_id)")
    parser.add_argument("--date-col", default="date", help="date column (default date)")
    parser.add_argument("--amount-col", default="amount", help="amount column (default amount)")
    parser.add_argument("--date-format", default="iso",
                        help="'iso' (YYYY-MM-DD, time part ignored; default) or a strptime "
                             "format such as %%Y%%m%%d or %%d/%%m/%%Y")
    parser.add_argument("--calibration-end", required=True, type=_parse_iso_day,
                        metavar="YYYY-MM-DD", help="last day (inclusive) of the calibration period")
    parser.add_argument("--holdout-end", type=_parse_iso_day, metavar="YYYY-MM-DD",
                        help="last day of the holdout period (default: last transaction date)")
    parser.add_argument("--horizon-weeks", type=float, default=DEFAULT_HORIZON_WEEKS,
                        help="CLV / expected-purchases horizon in weeks (default 52)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="margin rate applied to spend (default 0.3)")
    parser.add_argument("--discount-rate", type=float, default=DEFAULT_DISCOUNT_RATE,
                        help="annual discount rate, applied per week as (1+d)^(-k/52) "
                             "(default 0.10)")
    parser.add_argument("--frequency-buckets", type=int, default=DEFAULT_FREQUENCY_BUCKETS,
                        help="x values shown separately in the holdout plot; larger x are "
                             "pooled as 'N+' (default 7)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Load, fit, score, write; returns the clv.json document."""
    if not args.horizon_weeks > 0:
        raise InputError(f"--horizon-weeks must be > 0, got {args.horizon_weeks}")
    if not 0 <= args.margin:
        raise InputError(f"--margin must be >= 0, got {args.margin}")
    if not args.discount_rate > -1:
        raise InputError(f"--discount-rate must be > -1, got {args.discount_rate}")
    if args.format == "cdnow":
        tx = load_transactions_cdnow(args.transactions)
    else:
        tx = load_transactions_csv(args.transactions, args.user_col, args.date_col,
                                   args.amount_col, args.date_format)
    if args.holdout_end is not None and args.holdout_end < args.calibration_end:
        raise InputError("--holdout-end is before --calibration-end")
    summary = summarise(tx, args.calibration_end, args.holdout_end)
    n = summary.x.size
    if n < 10:
        raise InputError(f"{args.transactions}: only {n} customer(s) with a purchase on or "
                         f"before the calibration end {_day_to_iso(args.calibration_end)}; "
                         f"need at least 10 to fit")
    bg_fit = fit_bgnbd(summary.x, summary.t_x, summary.T)
    repeaters = (summary.x > 0) & (summary.m_x > 0)
    if repeaters.sum() < 5:
        raise InputError(f"{args.transactions}: only {int(repeaters.sum())} customer(s) with "
                         f"repeat purchases of positive value in the calibration period; need "
                         f"at least 5 to fit Gamma-Gamma")
    gg_fit = fit_gamma_gamma(summary.x[repeaters], summary.m_x[repeaters])
    bg, gg = bg_fit.params, gg_fit.params

    args.out.mkdir(parents=True, exist_ok=True)
    p_alive = clv_math.bgnbd_p_alive(bg["r"], bg["alpha"], bg["a"], bg["b"],
                                     summary.x, summary.t_x, summary.T)
    expected = clv_math.bgnbd_expected_purchases(args.horizon_weeks, bg["r"], bg["alpha"],
                                                 bg["a"], bg["b"], summary.x, summary.t_x,
                                                 summary.T)
    spend = clv_math.gamma_gamma_expected_spend(gg["p"], gg["q"], gg["v"], summary.x,
                                                summary.m_x)
    value = clv_math.clv(args.horizon_weeks, bg["r"], bg["alpha"], bg["a"], bg["b"], gg["p"],
                         gg["q"], gg["v"], summary.x, summary.t_x, summary.T, summary.m_x,
                         args.margin, args.discount_rate)
    customers = pd.DataFrame({
        "user_id": summary.user_id, "x": summary.x, "t_x": summary.t_x, "T": summary.T,
        "m_x": summary.m_x, "p_alive": p_alive, "expected_purchases": expected,
        "expected_spend": spend, "clv": value, "holdout_purchases": summary.x_holdout,
    })
    customers.to_csv(args.out / "customers.csv", index=False, float_format="%.10g")

    holdout_doc: dict | None = None
    if summary.holdout_weeks > 0:
        predicted = clv_math.bgnbd_expected_purchases(summary.holdout_weeks, bg["r"],
                                                      bg["alpha"], bg["a"], bg["b"], summary.x,
                                                      summary.t_x, summary.T)
        table = holdout_by_frequency(summary, predicted, args.frequency_buckets)
        table.to_csv(args.out / "holdout_by_frequency.csv", index=False, float_format="%.6g")
        tracking = _weekly_tracking(tx, summary, bg)
        calibration_weeks = (summary.calibration_end_day + 1 - summary.first_day.min()) / 7.0
        plot_calibration_holdout(args.out / "calibration_holdout.png", table, tracking,
                                 calibration_weeks, summary.holdout_weeks)
        holdout_doc = {
            "weeks": summary.holdout_weeks,
            "actual_repeat_purchases": float(summary.x_holdout.sum()),
            "predicted_repeat_purchases": float(predicted.sum()),
            "by_frequency": table.to_dict(orient="records"),
            "plot": "calibration_holdout.png",
        }

    spend_corr = (float(np.corrcoef(summary.x[repeaters], summary.m_x[repeaters])[0, 1])
                  if repeaters.sum() > 2 else float("nan"))
    document = {
        "bgnbd": {**bg, "loglik": bg_fit.loglik},
        "bgnbd_se": bg_fit.standard_errors,
        "bgnbd_covariance": bg_fit.covariance.tolist(),
        "bgnbd_fit": {"n_customers": bg_fit.n_customers, "converged": bg_fit.converged,
                      "message": bg_fit.message, "warnings": bg_fit.warnings},
        "gamma_gamma": {**gg, "loglik": gg_fit.loglik},
        "gamma_gamma_se": gg_fit.standard_errors,
        "gamma_gamma_covariance": gg_fit.covariance.tolist(),
        "gamma_gamma_fit": {"n_customers": gg_fit.n_customers, "converged": gg_fit.converged,
                            "message": gg_fit.message, "warnings": gg_fit.warnings,
                            "repeat_frequency_spend_correlation": spend_corr,
                            "excluded_zero_spend_repeaters":
                                int(((summary.x > 0) & (summary.m_x <= 0)).sum())},
        "time_unit": "week",
        "n_customers": int(n),
        "input": {"transactions": tx.source, "format": args.format, "rows": tx.rows_read,
                  "purchase_occasions": int(tx.day.size),
                  "rows_merged_same_day": tx.rows_merged,
                  "customers_first_purchase_after_calibration": summary.excluded_later_customers},
        "calibration_end": _day_to_iso(summary.calibration_end_day),
        "holdout_end": _day_to_iso(summary.holdout_end_day),
        "holdout": holdout_doc,
        "clv": {
            "horizon_weeks": args.horizon_weeks, "margin": args.margin,
            "annual_discount_rate": args.discount_rate,
            "weekly_discount_factor": float(clv_math.weekly_discount_factor(args.discount_rate)),
            "as_of": _day_to_iso(summary.calibration_end_day),
            "formula": ("CLV = margin * E[M] * sum_{k=1..ceil(H)} (E[Y(t_k)] - E[Y(t_(k-1))]) "
                        "* delta^t_k, t_k = min(k, H), delta = (1 + annual_discount_rate)^(-1/52)"),
            "mean": float(np.mean(value)), "median": float(np.median(value)),
            "total": float(np.sum(value)),
            "mean_p_alive": float(np.mean(p_alive)),
            "mean_expected_purchases": float(np.mean(expected)),
        },
        "files": {"customers": "customers.csv",
                  "holdout_by_frequency": "holdout_by_frequency.csv" if holdout_doc else None},
    }
    document = _clean(document)
    (args.out / "clv.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document


def main(argv: list[str]) -> int:
    """Entry point of ``python3 -m offline clv``; exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        document = run(args)
    except InputError as exc:
        print(f"offline clv: error: {exc}", file=sys.stderr)
        return 2
    bg, gg = document["bgnbd"], document["gamma_gamma"]
    bse, gse = document["bgnbd_se"], document["gamma_gamma_se"]
    print(f"BG/NBD ({document['n_customers']} customers): "
          + ", ".join(f"{k}={bg[k]:.4g}±{_fmt_se(bse[k])}" for k in ("r", "alpha", "a", "b"))
          + f", loglik={bg['loglik']:.2f}")
    print(f"Gamma-Gamma ({document['gamma_gamma_fit']['n_customers']} repeat customers): "
          + ", ".join(f"{k}={gg[k]:.4g}±{_fmt_se(gse[k])}" for k in ("p", "q", "v"))
          + f", loglik={gg['loglik']:.2f}")
    for warning in document["bgnbd_fit"]["warnings"] + document["gamma_gamma_fit"]["warnings"]:
        print(f"offline clv: warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}/clv.json, customers.csv"
          + (", holdout_by_frequency.csv, calibration_holdout.png" if document["holdout"] else ""))
    return 0


def _fmt_se(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
