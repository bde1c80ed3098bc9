"""``cohorts`` job: monthly signup-cohort retention and revenue, and CLV by acquisition source.

Usage::

    /usr/bin/python3 -m offline cohorts --transactions var/world/transactions.csv \\
        --users var/world/users.csv --out var/cohorts [--months 24] [--margin 0.3]

Definitions (calendar months, the usual cohort-table convention):

- a user's *cohort* is the calendar month of ``signup_date``; *month k since signup* is the
  calendar month ``k`` months after it (month 0 is the signup month itself, so it is partial);
- the data are observed up to ``--as-of`` (inclusive; default: the last transaction or signup
  date).  A cell (cohort c, month k) is *observed* only when the calendar month ``c + k`` has
  ended by then; later cells are empty (NaN in CSV/JSON, blank in the heatmaps);
- *retention* (c, k) = share of the cohort's users with at least one purchase in month k;
- *revenue per user* (c, k) = the cohort's revenue in month k / cohort size (every signed-up
  user counts, buyers or not);
- *realised revenue per user by month since signup* for an acquisition source: for each k, the
  mean month-k revenue over the source's users whose month k is observed, cumulated over k
  (a censoring-aware life table: younger cohorts contribute to the early months only);
- *24-month net CLV* (``--months``) = ``margin x`` cumulative revenue per user at month
  ``months - 1`` ``-`` mean acquisition cost; *payback month* = first month (the signup month
  counts as month 1) by whose end the cumulative margin per user reaches the mean acquisition
  cost.  Undiscounted, realised (not modelled) values.

Transactions of users missing from the users file, before the signup date or after the as-of
date are left out and counted in ``cohorts.json``.

Outputs in ``--out``: ``retention.csv``, ``revenue_per_user.csv`` (cohort x month),
``retention_heatmap.png``, ``revenue_heatmap.png``, ``clv_by_source.csv``,
``clv_by_source.md``, ``clv_by_source_curves.csv``, ``clv_by_source.png`` and ``cohorts.json``.
Bad input exits with status 2 and a message naming the file, line or column and the problem.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from offline.clv import (InputError, Transactions, load_transactions_csv, parse_amounts,
                         parse_dates, read_table_as_strings)

DEFAULT_MONTHS = 24
DEFAULT_MARGIN = 0.3
"""Margin rate applied to revenue (same default as the ``clv`` job)."""

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------- loading
@dataclass
class Users:
    """One row per signed-up user."""

    user_id: NDArray[np.object_]
    signup_day: NDArray[np.int64]
    source: NDArray[np.object_]
    acquisition_cost: FloatArray  # NaN when no cost column is given


def load_users(path: Path, id_col: str = "user_id", signup_col: str = "signup_date",
               source_col: str = "acquisition_source", cost_col: str | None = "acquisition_cost",
               date_format: str = "iso") -> Users:
    """Read the users CSV; duplicate ids, bad dates and negative costs are errors."""
    table = read_table_as_strings(path)
    wanted = [id_col, signup_col, source_col] + ([cost_col] if cost_col else [])
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(map(repr, missing))} "
                         f"(columns found: {', '.join(map(repr, table.columns))}); see "
                         f"--users-id-col/--signup-col/--source-col/--cost-col")
    if table.empty:
        raise InputError(f"{path}: no users (only a header)")
    first_line = 2
    ids = table[id_col].astype(str).str.strip()
    blank = np.flatnonzero(ids.eq("").to_numpy())
    if blank.size:
        raise InputError(f"{path}: line {first_line + int(blank[0])}: column {id_col!r}: "
                         f"empty user id")
    duplicated = np.flatnonzero(ids.duplicated().to_numpy())
    if duplicated.size:
        i = int(duplicated[0])
        raise InputError(f"{path}: line {first_line + i}: column {id_col!r}: duplicate user id "
                         f"{ids.iloc[i]!r} ({duplicated.size} duplicate row(s) in total)")
    signup = parse_dates(table[signup_col], date_format, path, signup_col, first_line)
    source = table[source_col].astype(str).str.strip().replace("", "unknown")
    if cost_col:
        cost = parse_amounts(table[cost_col], path, cost_col, first_line)
    else:
        cost = np.full(len(table), np.nan)
    return Users(user_id=ids.to_numpy(dtype=object), signup_day=signup,
                 source=source.to_numpy(dtype=object), acquisition_cost=cost)


def _month_index(day: NDArray[np.int64]) -> NDArray[np.int64]:
    """Months since 1970-01 of days since 1970-01-01."""
    return day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _month_label(month: int) -> str:
    return str(np.datetime64(int(month), "M"))


def _last_complete_month(as_of_day: int) -> int:
    """The last calendar month whose last day is on or before ``as_of_day``."""
    month = int(_month_index(np.array([as_of_day]))[0])
    next_month_first = int(np.datetime64(month + 1, "M").astype("datetime64[D]").astype(np.int64))
    return month if as_of_day == next_month_first - 1 else month - 1


# ---------------------------------------------------------------------------- analysis
@dataclass
class CohortAnalysis:
    """All tables of the job."""

    cohorts: list[str]               # cohort labels YYYY-MM, ascending
    cohort_sizes: NDArray[np.int64]
    retention: FloatArray            # (cohorts, months_since_signup), NaN = not observed
    revenue_per_user: FloatArray     # same shape
    by_source: pd.DataFrame          # one row per acquisition source
    curves: pd.DataFrame             # source x month since signup
    counts: dict[str, int]
    as_of: str
    last_complete_month: str


def analyse(users: Users, tx: Transactions, as_of_day: int, months: int = DEFAULT_MONTHS,
            margin: float = DEFAULT_MARGIN) -> CohortAnalysis:
    """Compute cohort retention/revenue and realised CLV by acquisition source (vectorised)."""
    user_index = pd.Index(users.user_id)
    position = user_index.get_indexer(tx.user_id)
    known = position >= 0
    pos = position[known]
    day = tx.day[known]
    amount = tx.amount[known]
    before_signup = day < users.signup_day[pos]
    after_as_of = day > as_of_day
    keep = ~before_signup & ~after_as_of
    counts = {
        "users": int(users.user_id.size),
        "purchase_days": int(tx.day.size),
        "purchase_days_unknown_user": int((~known).sum()),
        "purchase_days_before_signup": int(before_signup.sum()),
        "purchase_days_after_as_of": int((after_as_of & ~before_signup).sum()),
        "users_signed_up_after_as_of": int((users.signup_day > as_of_day).sum()),
    }
    pos, day, amount = pos[keep], day[keep], amount[keep]
    counts["purchase_days_used"] = int(pos.size)

    in_scope = users.signup_day <= as_of_day
    signup_month = _month_index(users.signup_day)
    last_month = _last_complete_month(as_of_day)
    offset = _month_index(day) - signup_month[pos]  # months since signup, >= 0

    # --- cohort x month tables
    cohort_months = np.unique(signup_month[in_scope & (signup_month <= last_month)])
    n_cohorts = cohort_months.size
    width = int(last_month - cohort_months.min() + 1) if n_cohorts else 0
    cohort_of_user = np.searchsorted(cohort_months, signup_month)
    valid_user = in_scope & (signup_month <= last_month)
    sizes = np.bincount(cohort_of_user[valid_user], minlength=n_cohorts).astype(np.int64)
    retention = np.full((n_cohorts, width), np.nan)
    revenue = np.full((n_cohorts, width), np.nan)
    if n_cohorts:
        tx_valid = valid_user[pos] & (signup_month[pos] + offset <= last_month)
        c_idx = cohort_of_user[pos[tx_valid]]
        k_idx = offset[tx_valid]
        flat = c_idx * width + k_idx
        revenue_sum = np.bincount(flat, weights=amount[tx_valid], minlength=n_cohorts * width)
        # Distinct (user, month) pairs for retention.
        pairs = np.unique(np.column_stack([pos[tx_valid], k_idx]), axis=0)
        active = np.bincount(cohort_of_user[pairs[:, 0]] * width + pairs[:, 1],
                             minlength=n_cohorts * width)
        observed = (cohort_months[:, None] + np.arange(width)[None, :]) <= last_month
        denom = sizes[:, None].astype(np.float64)
        retention = np.where(observed, active.reshape(n_cohorts, width) / denom, np.nan)
        revenue = np.where(observed, revenue_sum.reshape(n_cohorts, width) / denom, np.nan)

    # --- acquisition source life table over `months`
    sources = sorted(set(users.source[valid_user].tolist()))
    source_index = {s: i for i, s in enumerate(sources)}
    src_of_user = np.array([source_index.get(s, -1) for s in users.source], dtype=np.int64)
    n_src = len(sources)
    months_observed_by_user = np.where(valid_user, last_month - signup_month + 1, 0)
    ks = np.arange(months)
    # users observed at month k: months_observed > k
    observed_users = np.zeros((n_src, months))
    for s in range(n_src):
        mo = months_observed_by_user[valid_user & (src_of_user == s)]
        observed_users[s] = (mo[:, None] > ks[None, :]).sum(axis=0)
    tx_src = valid_user[pos] & (offset < months) & (signup_month[pos] + offset <= last_month)
    src_flat = src_of_user[pos[tx_src]] * months + offset[tx_src]
    src_revenue = np.bincount(src_flat, weights=amount[tx_src],
                              minlength=n_src * months).reshape(n_src, months)
    with np.errstate(invalid="ignore", divide="ignore"):
        monthly = np.where(observed_users > 0, src_revenue / observed_users, np.nan)
    cumulative = np.cumsum(monthly, axis=1)  # NaN propagates once a month is unobserved
    curve_rows = []
    summary_rows = []
    for s, name in enumerate(sources):
        members = valid_user & (src_of_user == s)
        cac = float(np.mean(users.acquisition_cost[members])) if members.any() else math.nan
        cum_margin = margin * cumulative[s]
        for k in range(months):
            curve_rows.append({
                "acquisition_source": name, "month_since_signup": k,
                "users_observed": int(observed_users[s, k]),
                "revenue_per_user": monthly[s, k],
                "cumulative_revenue_per_user": cumulative[s, k],
                "cumulative_margin_per_user": cum_margin[k],
                "net_value_per_user": cum_margin[k] - cac,
            })
        reached = np.flatnonzero(cum_margin >= cac) if math.isfinite(cac) else np.array([])
        # payback_month counts the signup month as month 1 (index k -> month k + 1).
        total = cumulative[s, months - 1]
        summary_rows.append({
            "acquisition_source": name,
            "users": int(members.sum()),
            "mean_acquisition_cost": cac,
            **{f"revenue_per_user_{m}m": cumulative[s, m - 1]
               for m in (1, 3, 6, 12) if m < months},
            f"revenue_per_user_{months}m": total,
            f"margin_per_user_{months}m": margin * total,
            f"net_clv_{months}m": margin * total - cac,
            "roi": (margin * total / cac) if cac and math.isfinite(cac) and cac > 0 else math.nan,
            "payback_month": int(reached[0]) + 1 if reached.size else None,
            f"users_observed_{months}m": int(observed_users[s, months - 1]),
            "retention_month_1": _retention_at(pos, offset, members, months_observed_by_user, 1),
        })
    return CohortAnalysis(
        cohorts=[_month_label(m) for m in cohort_months],
        cohort_sizes=sizes,
        retention=retention,
        revenue_per_user=revenue,
        by_source=pd.DataFrame(summary_rows),
        curves=pd.DataFrame(curve_rows),
        counts=counts,
        as_of=str(np.datetime64(int(as_of_day), "D")),
        last_complete_month=_month_label(last_month),
    )


def _retention_at(pos: NDArray[np.int64], offset: NDArray[np.int64], members: NDArray[np.bool_],
                  months_observed: NDArray[np.int64], k: int) -> float:
    """Share of the members observed at month k with a purchase in month k."""
    eligible = members & (months_observed > k)
    if not eligible.any():
        return math.nan
    buyers = np.unique(pos[(offset == k) & eligible[pos]])
    return buyers.size / int(eligible.sum())


# ----------------------------------------------------------------------------- output
def _matrix_frame(analysis: CohortAnalysis, matrix: FloatArray) -> pd.DataFrame:
    frame = pd.DataFrame(matrix, columns=[f"m{k}" for k in range(matrix.shape[1])])
    frame.insert(0, "cohort_size", analysis.cohort_sizes)
    frame.insert(0, "cohort", analysis.cohorts)
    return frame


def _heatmap(path: Path, analysis: CohortAnalysis, matrix: FloatArray, title: str,
             fmt: str, colorbar_label: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n_cols + 2.5), max(3.0, 0.32 * n_rows + 1.6)))
    masked = np.ma.masked_invalid(matrix)
    # Month 0 (the signup month, with the first purchase) would dominate the colour scale: scale
    # on months >= 1 and let month 0 saturate (its value is printed in the cell).
    later = matrix[:, 1:][np.isfinite(matrix[:, 1:])] if n_cols > 1 else np.array([])
    finite_all = matrix[np.isfinite(matrix)]
    scale = later if later.size else finite_all
    vmin = float(scale.min()) if scale.size else 0.0
    vmax = float(np.quantile(scale, 0.99)) if scale.size else 1.0
    image = ax.imshow(masked, aspect="auto", cmap="viridis", interpolation="nearest",
                      vmin=vmin, vmax=max(vmax, vmin + 1e-12))
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(range(n_cols), fontsize=7)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([f"{c} (n={s})" for c, s in zip(analysis.cohorts, analysis.cohort_sizes)],
                       fontsize=7)
    ax.set_xlabel("months since signup (calendar months; 0 = signup month)")
    ax.set_ylabel("signup cohort")
    ax.set_title(title)
    if n_rows * n_cols <= 900:
        mid = (vmin + vmax) / 2
        for i in range(n_rows):
            for j in range(n_cols):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center",
                            fontsize=5.5, color="black" if matrix[i, j] > mid else "white")
    fig.colorbar(image, ax=ax, label=colorbar_label + " (months >= 1)", extend="max")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _source_plot(path: Path, analysis: CohortAnalysis, months: int, margin: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8),
                                      gridspec_kw={"width_ratios": [1.6, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in analysis.by_source.iterrows():
        source = row["acquisition_source"]
        color = colors[i % len(colors)]
        curve = analysis.curves[analysis.curves["acquisition_source"] == source]
        left.plot(curve["month_since_signup"] + 1, curve["cumulative_margin_per_user"],
                  color=color, marker="o", markersize=3, label=f"{source}: margin earned")
        if math.isfinite(row["mean_acquisition_cost"]):
            left.axhline(row["mean_acquisition_cost"], color=color, linestyle="--", linewidth=1,
                         label=f"{source}: acquisition cost {row['mean_acquisition_cost']:.0f}")
    left.set_xlabel("months since signup")
    left.set_ylabel(f"cumulative margin per user ({margin:.0%} of revenue)")
    left.set_title("When does a customer pay back its acquisition cost?")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    net = analysis.by_source[f"net_clv_{months}m"].to_numpy(dtype=float)
    names = analysis.by_source["acquisition_source"].tolist()
    bar_colors = ["tab:green" if v >= 0 else "tab:red" for v in np.nan_to_num(net)]
    bars = right.bar(names, np.nan_to_num(net), color=bar_colors)
    for bar, value, payback in zip(bars, net, analysis.by_source["payback_month"]):
        text = "n/a" if not math.isfinite(value) else f"{value:+.1f}"
        if payback is not None and not (isinstance(payback, float) and math.isnan(payback)):
            text += f"\npayback month {int(payback)}"
        right.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                       textcoords="offset points", xytext=(0, 3 if bar.get_height() >= 0 else -22),
                       ha="center", fontsize=8)
    right.axhline(0, color="black", linewidth=0.8)
    low, high = right.get_ylim()
    right.set_ylim(min(low, 0) * 1.2, max(high, 0) * 1.2 + 1e-9)
    right.set_ylabel(f"{months}-month net CLV per user (margin − acquisition cost)")
    right.set_title(f"{months}-month net value by acquisition source")
    right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(analysis: CohortAnalysis, months: int, margin: float) -> str:
    table = analysis.by_source
    lines = [
        f"# Customer value by acquisition source ({months} months after signup)",
        "",
        f"Realised revenue per user, cumulated over months since signup (calendar months; "
        f"younger cohorts count for the months they have lived), margin {margin:.0%}, "
        f"data up to {analysis.as_of} (last complete month {analysis.last_complete_month}). "
        f"Net CLV = margin x revenue − mean acquisition cost; undiscounted.",
        "",
        "| source | users | acq. cost | revenue/user 12m | revenue/user "
        f"{months}m | margin/user {months}m | net CLV {months}m | ROI | payback month | "
        f"users observed {months}m |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def num(value: object, fmt: str = ".2f") -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "–"
        return format(value, fmt)

    for _, row in table.iterrows():
        payback = row["payback_month"]
        payback_text = ("not within horizon" if payback is None or
                        (isinstance(payback, float) and math.isnan(payback)) else f"{int(payback)}")
        lines.append(
            f"| {row['acquisition_source']} | {row['users']} | {num(row['mean_acquisition_cost'])} "
            f"| {num(row.get('revenue_per_user_12m', math.nan))} "
            f"| {num(row[f'revenue_per_user_{months}m'])} "
            f"| {num(row[f'margin_per_user_{months}m'])} "
            f"| {num(row[f'net_clv_{months}m'])} | {num(row['roi'], '.2f')}x | {payback_text} "
            f"| {row[f'users_observed_{months}m']} |")
    lines += ["", "Payback month counts the signup month as month 1.", ""]
    return "\n".join(lines)


def _clean(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_outputs(out: Path, analysis: CohortAnalysis, months: int, margin: float,
                  inputs: dict) -> dict:
    """Write CSV/markdown/PNG/JSON files; returns the cohorts.json document."""
    out.mkdir(parents=True, exist_ok=True)
    _matrix_frame(analysis, analysis.retention).to_csv(out / "retention.csv", index=False,
                                                       float_format="%.6g")
    _matrix_frame(analysis, analysis.revenue_per_user).to_csv(out / "revenue_per_user.csv",
                                                              index=False, float_format="%.6g")
    analysis.by_source.to_csv(out / "clv_by_source.csv", index=False, float_format="%.6g")
    analysis.curves.to_csv(out / "clv_by_source_curves.csv", index=False, float_format="%.6g")
    (out / "clv_by_source.md").write_text(_markdown(analysis, months, margin), encoding="utf-8")
    if analysis.retention.size:
        _heatmap(out / "retention_heatmap.png", analysis, analysis.retention,
                 "Retention: share of the cohort purchasing in month k", ".0%",
                 "share of cohort purchasing")
        _heatmap(out / "revenue_heatmap.png", analysis, analysis.revenue_per_user,
                 "Revenue per user in month k (all signed-up users)", ".1f", "revenue per user")
    _source_plot(out / "clv_by_source.png", analysis, months, margin)
    document = {
        "as_of": analysis.as_of,
        "last_complete_month": analysis.last_complete_month,
        "months": months,
        "margin": margin,
        "inputs": inputs,
        "counts": analysis.counts,
        "cohorts": analysis.cohorts,
        "cohort_sizes": analysis.cohort_sizes,
        "retention": analysis.retention,
        "revenue_per_user": analysis.revenue_per_user,
        "by_source": analysis.by_source.to_dict(orient="records"),
        "curves": {
            source: {col: group[col].tolist() for col in
                     ("users_observed", "revenue_per_user", "cumulative_revenue_per_user",
                      "net_value_per_user")}
            for source, group in analysis.curves.groupby("acquisition_source", sort=True)
        },
        "definitions": {
            "month_since_signup": "calendar months after the signup month (0 = signup month)",
            "retention": "share of the cohort with >= 1 purchase in month k; NaN = not observed",
            "revenue_per_user": "cohort revenue in month k / cohort size",
            "cumulative_revenue_per_user": "sum over months j <= k of the mean month-j revenue "
                                           "of the source's users observed at month j",
            "net_clv": "margin * cumulative revenue per user at month months-1 "
                       "- mean acquisition cost (undiscounted)",
            "payback_month": "first month, counting the signup month as 1, at whose end "
                             "margin * cumulative revenue per user >= mean acquisition cost; "
                             "null if not reached within the horizon",
        },
        "files": ["retention.csv", "revenue_per_user.csv", "retention_heatmap.png",
                  "revenue_heatmap.png", "clv_by_source.csv", "clv_by_source.md",
                  "clv_by_source_curves.csv", "clv_by_source.png"],
    }
    document = _clean(document)
    (out / "cohorts.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return document


# -------------------------------------------------------------------------------- CLI
def _parse_iso_day(text: str) -> int:
    try:
        parsed = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc
    return (parsed - date(1970, 1, 1)).days


def build_parser() -> argparse.ArgumentParser:
    """The job's command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python3 -m offline cohorts",
        description="Monthly signup-cohort retention and revenue per user, and realised CLV by "
                    "acquisition source (net of acquisition cost).")
    parser.add_argument("--transactions", required=True, type=Path,
                        help="transactions CSV (user_id,date,amount)")
    parser.add_argument("--users", required=True, type=Path,
                        help="users CSV (user_id,signup_date,acquisition_source,"
                             "acquisition_cost,...)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--user-col", default="user_id", help="transactions: user id column")
    parser.add_argument("--date-col", default="date", help="transactions: date column")
    parser.add_argument("--amount-col", default="amount", help="transactions: amount column")
    parser.add_argument("--date-format", default="iso",
                        help="transactions: 'iso' (default) or a strptime format")
    parser.add_argument("--users-id-col", default="user_id", help="users: id column")
    parser.add_argument("--signup-col", default="signup_date", help="users: signup date column")
    parser.add_argument("--source-col", default="acquisition_source",
                        help="users: acquisition source column")
    parser.add_argument("--cost-col", default="acquisition_cost",
                        help="users: acquisition cost column ('' = no costs; net CLV empty)")
    parser.add_argument("--signup-date-format", default="iso",
                        help="users: 'iso' (default) or a strptime format")
    parser.add_argument("--as-of", type=_parse_iso_day, metavar="YYYY-MM-DD",
                        help="last observed day, inclusive (default: last transaction or signup)")
    parser.add_argument("--months", type=int, default=DEFAULT_MONTHS,
                        help="CLV horizon in months since signup (default 24)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="margin rate applied to revenue (default 0.3)")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Load, analyse, write; returns the cohorts.json document."""
    if args.months < 1:
        raise InputError(f"--months must be >= 1, got {args.months}")
    if args.margin < 0:
        raise InputError(f"--margin must be >= 0, got {args.margin}")
    users = load_users(args.users, args.users_id_col, args.signup_col, args.source_col,
                       args.cost_col or None, args.signup_date_format)
    tx = load_transactions_csv(args.transactions, args.user_col, args.date_col, args.amount_col,
                               args.date_format)
    as_of = args.as_of if args.as_of is not None else int(max(tx.day.max(),
                                                              users.signup_day.max()))
    if _last_complete_month(as_of) < int(_month_index(users.signup_day).min()):
        raise InputError(f"{args.users}: no signup cohort has a complete month by the as-of date "
                         f"{np.datetime64(as_of, 'D')}")
    analysis = analyse(users, tx, as_of, args.months, args.margin)
    inputs = {"transactions": str(args.transactions), "users": str(args.users),
              "transaction_rows": tx.rows_read}
    return write_outputs(args.out, analysis, args.months, args.margin, inputs)


def main(argv: list[str]) -> int:
    """Entry point of ``python3 -m offline cohorts``; exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        document = run(args)
    except InputError as exc:
        print(f"offline cohorts: error: {exc}", file=sys.stderr)
        return 2
    months = document["months"]
    print(f"{len(document['cohorts'])} cohorts, {document['counts']['users']} users, data up to "
          f"{document['as_of']}")
    for row in document["by_source"]:
        net = row[f"net_clv_{months}m"]
        print(f"  {row['acquisition_source']:<14} users={row['users']:<7} "
              f"net CLV {months}m = {'n/a' if net is None else f'{net:.2f}'}")
    print(f"wrote {args.out}/cohorts.json and tables/plots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
