"""``logs`` job: lift versus the holdout and IPS policy value from the service's decision and
event logs (``--log_dir`` of offerd; the line formats are in docs/logs-format.md).

Usage::

    /usr/bin/python3 -m offline logs --log-dir var/logs --out var/logs_report \\
        [--window-hours 168] [--margin-field margin]

Input: every log file in ``--log-dir`` named ``<prefix>-<yyyymmddThhmmssZ>-<pid>-<seq>.jsonl``
(complete) or ``... .jsonl.open`` (being written), whatever the prefix; each line says by its
``"type"`` whether it is a decision or an event. A last line without its ``'\\n'`` (torn: the
writer is mid-line or crashed) is skipped and counted; so are other lines that are not a valid
record (counted as malformed, with the first few locations reported). Duplicates are dropped and
counted: a second decision with the same ``decision_id``, an event line identical to an earlier
one.

(a) Lift versus the holdout (per user). A user's *exposure* is their first logged decision; its
``holdout`` flag puts them in the holdout or the treated group (users whose decisions disagree,
e.g. after a holdout-salt change, are left out and counted). Over the window
``[exposure, exposure + --window-hours)``, cut at the end of the log (the latest timestamp seen),
each user has a *conversion* (at least one PURCHASE event) and *revenue* (sum of PURCHASE
``amount``; with ``--margin-field F`` also *margin*, the sum of field ``F`` of the purchase
lines). Purchases are joined to users by ``user_id`` and time, not by ``decision_id``, so they
count whether or not an offer was involved. The report gives each group's mean, the difference
treated - holdout with a 95% Welch confidence interval (unequal variances, Welch-Satterthwaite
degrees of freedom) and the relative lift ``difference / holdout mean`` with a delta-method 95%
interval. Windows cut by the end of the log are counted; since assignment is a hash of the user
id, the cut affects both groups alike.

(b) Off-policy value per decision (IPS and self-normalised IPS, :mod:`offline.ips`). One row per
non-holdout decision. Its reward is what the decision's own events show: ``clicks`` and
``redeems`` (served offers with at least one CLICK / REDEEM event carrying the decision id) and
``attributed_revenue`` (sum of PURCHASE ``amount`` carrying the decision id; ``attributed_margin``
with ``--margin-field``). The logged propensity of the whole list is the product of the offers'
``propensity`` (slots treated as independent choices; 1 for an empty list). Two target policies:

- ``served``: the logging policy itself (``pi = mu``, every weight 1): its value is the mean
  reward per decision; the self-check that the estimator and the log agree;
- ``greedy``: the same ranking without exploration. It picks the greedy offer in every slot,
  so ``pi = 1`` for decisions with no ``explored`` offer and 0 otherwise;
- ``greedy_minus_served``: the paired difference, the estimated value of switching
  exploration off (negative: exploration pays for itself already in the short run).

Decisions with a propensity that is missing or outside (0, 1] are left out and counted.
Values are also given per experiment arm (served policy).

Outputs in ``--out``: ``logs_report.json`` (everything), ``logs_report.md`` (summary tables),
``logs_report.png`` (group means with 95% intervals, and the IPS estimates). A missing log
directory or logs without a single decision exit 2 with a message.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from offline import common
from offline.common import JobError
from offline.ips import IPSEstimate, ips_difference, ips_value

DEFAULT_WINDOW_HOURS = 168.0
CONFIDENCE = 0.95
MS_PER_HOUR = 3_600_000
EVENT_TYPES = ("IMPRESSION", "CLICK", "REDEEM", "DISMISS", "PURCHASE")
MAX_EXAMPLES = 10  # locations of malformed lines reported

LOG_FILE_RE = re.compile(r"^(?P<prefix>[A-Za-z0-9_]+)-(?P<stamp>\d{8}T\d{6}Z)-(?P<pid>\d+)-(?P<seq>\d+)"
                         r"\.jsonl(?P<open>\.open)?$")


# --------------------------------------------------------------------------- reading
@dataclass
class ReadStats:
    """What reading the logs found, reported in ``logs_report.json["input"]``."""

    files_complete: int = 0
    files_open: int = 0
    lines: int = 0
    torn_last_lines: int = 0
    malformed_lines: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    decisions: int = 0
    duplicate_decisions: int = 0
    events: int = 0
    duplicate_events: int = 0
    null_amounts: int = 0
    missing_margin_field: int = 0

    def malformed(self, where: str, why: str) -> None:
        self.malformed_lines += 1
        if len(self.malformed_examples) < MAX_EXAMPLES:
            self.malformed_examples.append(f"{where}: {why}")


@dataclass
class Logs:
    """Parsed, de-duplicated logs as tables.

    ``decisions``: decision_id, ts_ms, user_id, arm, holdout, snapshot_version, canary, degraded,
    n_offers, log_propensity (log of the product of the offers' propensities; NaN when one is
    missing or outside (0, 1]), explored (any offer explored).
    ``served``: decision_id, offer_id (one row per served offer).
    ``events``: ts_ms, received_ms, user_id, offer_id, event_type, decision_id, amount, margin.
    """

    decisions: pd.DataFrame
    served: pd.DataFrame
    events: pd.DataFrame
    read: ReadStats


def list_log_files(log_dir: Path) -> list[Path]:
    """Log files (complete and open) in ``log_dir``, in name order (= creation order)."""
    if not log_dir.is_dir():
        raise JobError(f"--log-dir {log_dir}: not a directory")
    return sorted(p for p in log_dir.iterdir() if p.is_file() and LOG_FILE_RE.match(p.name))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    """A JSON number as float; None for null; raises ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _parse_decision(doc: dict[str, Any]) -> tuple[tuple, list[str]]:
    decision_id, ts, user = doc.get("decision_id"), doc.get("ts_ms"), doc.get("user_id")
    if not isinstance(decision_id, str) or not decision_id:
        raise ValueError("decision_id missing or empty")
    if not _is_int(ts):
        raise ValueError("ts_ms missing or not an integer")
    if not isinstance(user, str) or not user:
        raise ValueError("user_id missing or empty")
    holdout = doc.get("holdout")
    if not isinstance(holdout, bool):
        raise ValueError("holdout missing or not a boolean")
    offers = doc.get("offers")
    if not isinstance(offers, list):
        raise ValueError("offers missing or not a list")
    offer_ids: list[str] = []
    log_prop, explored = 0.0, False
    for offer in offers:
        if not isinstance(offer, dict) or not isinstance(offer.get("offer_id"), str):
            raise ValueError("offer without an offer_id")
        offer_ids.append(offer["offer_id"])
        p = offer.get("propensity")
        p = None if p is None or isinstance(p, bool) or not isinstance(p, (int, float)) else float(p)
        if p is None or not (0.0 < p <= 1.0) or math.isnan(log_prop):
            log_prop = math.nan
        else:
            log_prop += math.log(p)
        explored = explored or offer.get("explored") is True
    row = (decision_id, ts, user, str(doc.get("arm") or ""), holdout,
           str(doc.get("snapshot_version") or ""), doc.get("canary") is True,
           doc.get("degraded") is True, len(offer_ids), log_prop, explored)
    return row, offer_ids


def _parse_event(doc: dict[str, Any], margin_field: str | None, read: ReadStats) -> tuple:
    ts, user, event_type = doc.get("ts_ms"), doc.get("user_id"), doc.get("event_type")
    if not _is_int(ts):
        raise ValueError("ts_ms missing or not an integer")
    if not isinstance(user, str) or not user:
        raise ValueError("user_id missing or empty")
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event_type {event_type!r}")
    received = doc.get("received_ms", ts)
    offer_id, decision_id = doc.get("offer_id") or "", doc.get("decision_id") or ""
    if not isinstance(offer_id, str) or not isinstance(decision_id, str):
        raise ValueError("offer_id and decision_id must be strings")
    amount = _number(doc.get("amount"))
    if amount is None or not math.isfinite(amount):
        if event_type == "PURCHASE":
            read.null_amounts += 1
        amount = 0.0
    margin = 0.0
    if margin_field is not None and event_type == "PURCHASE":
        value = _number(doc.get(margin_field))
        if value is None or not math.isfinite(value):
            read.missing_margin_field += 1
        else:
            margin = value
    return (ts, received if _is_int(received) else ts, user, offer_id, event_type, decision_id,
            amount, margin)


def read_logs(log_dir: Path, margin_field: str | None = None) -> Logs:
    """Read every log file of ``log_dir`` (see the module docstring for what is tolerated)."""
    read = ReadStats()
    decision_rows: list[tuple] = []
    served_rows: list[tuple[str, str]] = []
    event_rows: list[tuple] = []
    seen_decisions: set[str] = set()
    seen_events: set[tuple] = set()
    for path in list_log_files(log_dir):
        if path.name.endswith(".open"):
            read.files_open += 1
        else:
            read.files_complete += 1
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the text after the last '\n'
        elif lines:
            lines.pop()  # a line without its '\n': torn
            read.torn_last_lines += 1
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            read.lines += 1
            where = f"{path.name}:{number}"
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                kind = doc.get("type")
                if kind == "decision":
                    row, offer_ids = _parse_decision(doc)
                    if row[0] in seen_decisions:
                        read.duplicate_decisions += 1
                        continue
                    seen_decisions.add(row[0])
                    decision_rows.append(row)
                    served_rows.extend((row[0], o) for o in offer_ids)
                elif kind == "event":
                    row = _parse_event(doc, margin_field, read)
                    if row in seen_events:
                        read.duplicate_events += 1
                        continue
                    seen_events.add(row)
                    event_rows.append(row)
                else:
                    raise ValueError(f"unknown type {kind!r}")
            except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
                read.malformed(where, str(exc))
    read.decisions, read.events = len(decision_rows), len(event_rows)
    decisions = pd.DataFrame(decision_rows, columns=[
        "decision_id", "ts_ms", "user_id", "arm", "holdout", "snapshot_version", "canary",
        "degraded", "n_offers", "log_propensity", "explored"])
    decisions = decisions.astype({"ts_ms": np.int64, "holdout": bool, "canary": bool, "degraded": bool,
                                  "n_offers": np.int64, "log_propensity": np.float64, "explored": bool})
    served = pd.DataFrame(served_rows, columns=["decision_id", "offer_id"])
    events = pd.DataFrame(event_rows, columns=["ts_ms", "received_ms", "user_id", "offer_id", "event_type",
                                               "decision_id", "amount", "margin"])
    events = events.astype({"ts_ms": np.int64, "received_ms": np.int64, "amount": np.float64,
                            "margin": np.float64})
    return Logs(decisions, served, events, read)


# --------------------------------------------------------------------------- statistics
def welch_difference(treated: np.ndarray, control: np.ndarray,
                     confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Means, ``treated - control`` with a Welch CI and p-value, and the relative lift.

    Values that cannot be computed (a group with fewer than two users, zero variance in both,
    a zero control mean for the relative lift) are None.
    """
    t = np.asarray(treated, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    out: dict[str, Any] = {
        "treated_mean": float(t.mean()) if t.size else None,
        "holdout_mean": float(c.mean()) if c.size else None,
        "treated_users": int(t.size), "holdout_users": int(c.size),
        "difference": None, "ci_low": None, "ci_high": None, "std_error": None, "df": None,
        "p_value": None, "relative_lift": None, "relative_ci_low": None, "relative_ci_high": None,
    }
    if t.size == 0 or c.size == 0:
        return out
    mt, mc = float(t.mean()), float(c.mean())
    out["difference"] = mt - mc
    if mc != 0:
        out["relative_lift"] = (mt - mc) / mc
    if t.size < 2 or c.size < 2:
        return out
    vt, vc = float(t.var(ddof=1)) / t.size, float(c.var(ddof=1)) / c.size
    se = math.sqrt(vt + vc)
    if se == 0:
        return out
    df = (vt + vc) ** 2 / ((vt ** 2 / (t.size - 1) if vt else 0.0) + (vc ** 2 / (c.size - 1) if vc else 0.0))
    q = float(stats.t.ppf(0.5 + confidence / 2.0, df))
    out.update(std_error=se, df=df, ci_low=mt - mc - q * se, ci_high=mt - mc + q * se,
               p_value=float(2.0 * stats.t.sf(abs(mt - mc) / se, df)))
    if mc != 0:
        # Delta method for (mt - mc) / mc = mt / mc - 1.
        rel_se = math.sqrt(vt / mc ** 2 + mt ** 2 * vc / mc ** 4)
        z = float(stats.norm.ppf(0.5 + confidence / 2.0))
        out.update(relative_ci_low=out["relative_lift"] - z * rel_se,
                   relative_ci_high=out["relative_lift"] + z * rel_se)
    return out


def _estimate_json(estimate: IPSEstimate | None) -> dict[str, Any] | None:
    return None if estimate is None else estimate.to_json()


# --------------------------------------------------------------------------- analysis
def lift_versus_holdout(logs: Logs, window_hours: float, with_margin: bool) -> dict[str, Any]:
    """Per-user conversion, revenue (and margin) over the window, treated vs holdout."""
    d = logs.decisions
    window_ms = int(round(window_hours * MS_PER_HOUR))
    log_end = int(max(d["ts_ms"].max(), logs.events["ts_ms"].max() if len(logs.events) else d["ts_ms"].max()))
    by_user = d.groupby("user_id", sort=True).agg(exposure_ms=("ts_ms", "min"), holdout_any=("holdout", "max"),
                                                  holdout_all=("holdout", "min"), decisions=("decision_id", "size"))
    mixed = by_user["holdout_any"] != by_user["holdout_all"]
    users = by_user.loc[~mixed, ["exposure_ms", "decisions"]].copy()
    users["holdout"] = by_user.loc[~mixed, "holdout_all"].astype(bool)
    users["window_end_ms"] = np.minimum(users["exposure_ms"].to_numpy() + window_ms, log_end + 1)
    truncated = int((users["exposure_ms"] + window_ms > log_end + 1).sum())

    purchases = logs.events.loc[logs.events["event_type"] == "PURCHASE", ["user_id", "ts_ms", "amount", "margin"]]
    users = users.rename_axis("user_id").reset_index()
    joined = purchases.merge(users[["user_id", "exposure_ms", "window_end_ms"]], on="user_id", how="inner")
    in_window = joined[(joined["ts_ms"] >= joined["exposure_ms"]) & (joined["ts_ms"] < joined["window_end_ms"])]
    totals = in_window.groupby("user_id", as_index=False).agg(
        purchases=("amount", "size"), revenue=("amount", "sum"), margin=("margin", "sum"))
    users = users.merge(totals, on="user_id", how="left").fillna({"purchases": 0, "revenue": 0.0, "margin": 0.0})
    users["converted"] = (users["purchases"] > 0).astype(np.float64)

    treated, holdout = users[~users["holdout"]], users[users["holdout"]]
    metrics = {"conversion_rate": "converted", "revenue_per_user": "revenue"}
    if with_margin:
        metrics["margin_per_user"] = "margin"
    result: dict[str, Any] = {
        "window_hours": window_hours,
        "log_end_ms": log_end,
        "users": int(len(users)),
        "treated_users": int(len(treated)),
        "holdout_users": int(len(holdout)),
        "holdout_share": float(len(holdout) / len(users)) if len(users) else None,
        "mixed_assignment_users_excluded": int(mixed.sum()),
        "windows_cut_by_log_end": truncated,
        "purchases_in_windows": int(len(in_window)),
        "purchases_outside_windows": int(len(purchases) - len(in_window)),
        "metrics": {},
    }
    for name, column in metrics.items():
        result["metrics"][name] = welch_difference(treated[column].to_numpy(), holdout[column].to_numpy())
    return result


def _decision_rewards(logs: Logs, with_margin: bool) -> tuple[pd.DataFrame, dict[str, int]]:
    """Non-holdout decisions with their rewards, and counts of events that could not be joined."""
    d = logs.decisions
    e = logs.events
    tied = e[e["decision_id"] != ""]
    known = tied.merge(d[["decision_id", "user_id"]], on="decision_id", how="left", suffixes=("", "_decision"))
    unknown = known["user_id_decision"].isna()
    mismatch = ~unknown & (known["user_id"] != known["user_id_decision"])
    good = known[~unknown & ~mismatch]
    counts = {"events_with_decision_id": int(len(tied)), "events_unknown_decision": int(unknown.sum()),
              "events_user_mismatch": int(mismatch.sum())}

    # Clicks/redeems of offers the decision served, at most one per (decision, offer, type).
    offer_events = good[good["event_type"].isin(["CLICK", "REDEEM"])]
    served_keys = logs.served.drop_duplicates()
    on_served = offer_events.merge(served_keys, on=["decision_id", "offer_id"], how="inner")
    counts["events_offer_not_served"] = int(len(offer_events) - len(on_served))
    distinct = on_served.drop_duplicates(["decision_id", "offer_id", "event_type"])
    per_type = distinct.groupby(["decision_id", "event_type"]).size().unstack(fill_value=0)
    purchases = good[good["event_type"] == "PURCHASE"].groupby("decision_id").agg(
        attributed_revenue=("amount", "sum"), attributed_margin=("margin", "sum"))

    rows = d[~d["holdout"]].set_index("decision_id")
    rewards = pd.DataFrame(index=rows.index)
    rewards["arm"] = rows["arm"]
    rewards["log_propensity"] = rows["log_propensity"]
    rewards["explored"] = rows["explored"]
    rewards["clicks"] = per_type["CLICK"].reindex(rows.index, fill_value=0) if "CLICK" in per_type else 0
    rewards["redeems"] = per_type["REDEEM"].reindex(rows.index, fill_value=0) if "REDEEM" in per_type else 0
    rewards["attributed_revenue"] = purchases["attributed_revenue"].reindex(rows.index, fill_value=0.0)
    if with_margin:
        rewards["attributed_margin"] = purchases["attributed_margin"].reindex(rows.index, fill_value=0.0)
    holdout_ids = d.loc[d["holdout"], "decision_id"]
    counts["purchases_attributed_to_holdout_decisions"] = int(
        ((good["event_type"] == "PURCHASE") & good["decision_id"].isin(holdout_ids)).sum())
    return rewards, counts


def policy_value(logs: Logs, with_margin: bool) -> dict[str, Any]:
    """IPS / SNIPS value per decision of the served and the greedy policy (module docstring)."""
    rewards, join_counts = _decision_rewards(logs, with_margin)
    valid = np.isfinite(rewards["log_propensity"].to_numpy())
    rows = rewards[valid]
    reward_names = ["clicks", "redeems", "attributed_revenue"] + (["attributed_margin"] if with_margin else [])
    result: dict[str, Any] = {
        "decisions": int(len(rewards)),
        "decisions_used": int(len(rows)),
        "decisions_bad_propensity": int((~valid).sum()),
        "decisions_with_exploration": int(rows["explored"].sum()),
        "join": join_counts,
        "estimator": "offline.ips.ips_value / ips_difference",
        "rewards": {},
        "by_arm": {},
    }
    if rows.empty:
        return result
    mu = np.exp(rows["log_propensity"].to_numpy())
    greedy = (~rows["explored"].to_numpy()).astype(np.float64)
    for name in reward_names:
        r = rows[name].to_numpy(dtype=np.float64)
        served = ips_value(r, mu, mu, confidence=CONFIDENCE)
        greedy_value = ips_value(r, mu, greedy, confidence=CONFIDENCE) if greedy.any() else None
        diff = ips_difference(r, mu, greedy, mu, confidence=CONFIDENCE) if greedy.any() else None
        result["rewards"][name] = {
            "logged_mean": float(r.mean()),
            "served": _estimate_json(served),
            "greedy": _estimate_json(greedy_value),
            "greedy_minus_served": _estimate_json(diff),
        }
    for arm, group in rows.groupby("arm", sort=True):
        g_mu = np.exp(group["log_propensity"].to_numpy())
        result["by_arm"][arm or "(base)"] = {
            "decisions": int(len(group)),
            **{name: _estimate_json(ips_value(group[name].to_numpy(dtype=np.float64), g_mu, g_mu,
                                              confidence=CONFIDENCE)) for name in reward_names},
        }
    return result


def analyse(logs: Logs, window_hours: float, margin_field: str | None) -> dict[str, Any]:
    """The whole logs_report.json document (without the ``inputs`` block)."""
    d = logs.decisions
    return {
        "decisions": {
            "total": int(len(d)),
            "holdout": int(d["holdout"].sum()),
            "canary": int(d["canary"].sum()),
            "degraded": int(d["degraded"].sum()),
            "empty_non_holdout": int(((~d["holdout"]) & (d["n_offers"] == 0)).sum()),
            "first_ms": int(d["ts_ms"].min()),
            "last_ms": int(d["ts_ms"].max()),
            "by_snapshot_version": {str(k): int(v)
                                    for k, v in d["snapshot_version"].value_counts().sort_index().items()},
            "by_arm": {(str(k) or "(base)"): int(v) for k, v in d["arm"].value_counts().sort_index().items()},
        },
        "events": {str(k): int(v) for k, v in logs.events["event_type"].value_counts().sort_index().items()},
        "lift": lift_versus_holdout(logs, window_hours, margin_field is not None),
        "policy_value": policy_value(logs, margin_field is not None),
    }


# --------------------------------------------------------------------------- outputs
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(doc: dict[str, Any]) -> str:
    """Human-readable summary of ``logs_report.json``."""
    lift, pv, inp = doc["lift"], doc["policy_value"], doc["input"]
    lines = [
        "# Decision/event log report", "",
        f"Logs: `{inp['log_dir']}` ({inp['files_complete']} complete + {inp['files_open']} open files, "
        f"{inp['decisions']} decisions, {inp['events']} events; skipped: {inp['torn_last_lines']} torn last lines, "
        f"{inp['malformed_lines']} malformed, {inp['duplicate_decisions']} duplicate decisions, "
        f"{inp['duplicate_events']} duplicate events).", "",
        f"## Lift versus holdout ({_fmt(lift['window_hours'])} h window from each user's first decision)", "",
        f"{lift['treated_users']} treated and {lift['holdout_users']} holdout users "
        f"({lift['mixed_assignment_users_excluded']} with mixed assignment excluded; "
        f"{lift['windows_cut_by_log_end']} windows cut by the end of the log).", "",
        "| metric | treated | holdout | difference | 95% CI (Welch) | relative lift | 95% CI | p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in lift["metrics"].items():
        lines.append(f"| {name} | {_fmt(m['treated_mean'])} | {_fmt(m['holdout_mean'])} | {_fmt(m['difference'])} | "
                     f"{_fmt(m['ci_low'])} .. {_fmt(m['ci_high'])} | {_fmt(m['relative_lift'])} | "
                     f"{_fmt(m['relative_ci_low'])} .. {_fmt(m['relative_ci_high'])} | {_fmt(m['p_value'], 3)} |")
    lines += [
        "", "## Policy value per decision (IPS / SNIPS, logged propensities)", "",
        f"{pv['decisions_used']} non-holdout decisions ({pv['decisions_bad_propensity']} left out for a bad "
        f"propensity; {pv['decisions_with_exploration']} with an explored offer). Events not joined: "
        f"{pv['join'].get('events_unknown_decision', 0)} with an unknown decision id, "
        f"{pv['join'].get('events_user_mismatch', 0)} with another user, "
        f"{pv['join'].get('events_offer_not_served', 0)} for an offer the decision did not serve.", "",
        "| reward | policy | IPS | 95% CI | SNIPS | 95% CI | ESS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in pv["rewards"].items():
        for policy in ("served", "greedy", "greedy_minus_served"):
            e = r[policy]
            if e is None:
                lines.append(f"| {name} | {policy} | n/a | | | | |")
                continue
            lines.append(f"| {name} | {policy} | {_fmt(e['estimate'])} | {_fmt(e['ci_low'])} .. {_fmt(e['ci_high'])} | "
                         f"{_fmt(e['snips'])} | {_fmt(e['snips_ci_low'])} .. {_fmt(e['snips_ci_high'])} | "
                         f"{_fmt(e['effective_sample_size'], 6)} |")
    lines += ["", "`served` is the logging policy (its IPS equals the logged mean); `greedy` switches exploration "
              "off; slots are treated as independent choices for the list propensity.", ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    """Group means with 95% intervals (lift) and IPS estimates with 95% intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = doc["lift"]["metrics"]
    rewards = doc["policy_value"]["rewards"]
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(4.2 * (len(metrics) + 1), 4.0))
    for ax, (name, m) in zip(axes, metrics.items()):
        means = [m["holdout_mean"] or 0.0, m["treated_mean"] or 0.0]
        ax.bar(["holdout", "treated"], means, color=["#999999", "#1f77b4"])
        if m["ci_low"] is not None:
            # The Welch interval of the difference, drawn around the treated mean.
            half = (m["ci_high"] - m["ci_low"]) / 2.0
            ax.errorbar([1], [means[1]], yerr=[[half], [half]], fmt="none", ecolor="black", capsize=6)
        lift = m["relative_lift"]
        ax.set_title(f"{name}\nlift {'n/a' if lift is None else f'{100 * lift:+.1f}%'}")
    ax = axes[-1]
    labels, values, errors = [], [], []
    for name, r in rewards.items():
        if name not in ("clicks", "redeems"):
            continue  # counts per decision share one axis; money has its own scale
        for policy in ("served", "greedy"):
            e = r[policy]
            if e is None:
                continue
            labels.append(f"{name}\n{policy}")
            values.append(e["snips"] if e["snips"] is not None else 0.0)
            lo, hi = e["snips_ci_low"], e["snips_ci_high"]
            errors.append(0.0 if lo is None or hi is None else (hi - lo) / 2.0)
    if labels:
        ax.bar(range(len(labels)), values, yerr=errors, capsize=5,
               color=["#1f77b4" if "served" in label else "#ff7f0e" for label in labels])
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_title("SNIPS value per decision (95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read, analyse and write; returns the logs_report.json document."""
    if not (args.window_hours > 0 and math.isfinite(args.window_hours)):
        raise JobError(f"--window-hours must be > 0, got {args.window_hours}")
    logs = read_logs(args.log_dir, args.margin_field)
    if logs.decisions.empty:
        raise JobError(f"--log-dir {args.log_dir}: no decision lines found "
                       f"({logs.read.files_complete + logs.read.files_open} log files)")
    doc: dict[str, Any] = {"input": {"log_dir": str(args.log_dir), "margin_field": args.margin_field,
                                     **{k: v for k, v in vars(logs.read).items()}}}
    doc.update(analyse(logs, args.window_hours, args.margin_field))
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / "logs_report.json", doc)
    (args.out / "logs_report.md").write_text(markdown(doc), encoding="utf-8")
    plot(doc, args.out / "logs_report.png")
    return doc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m offline logs",
                                     description="Lift versus holdout and IPS policy value from offerd's "
                                                 "decision/event logs.")
    parser.add_argument("--log-dir", required=True, type=Path, help="offerd --log_dir (decision and event files)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--window-hours", type=float, default=DEFAULT_WINDOW_HOURS,
                        help="per-user outcome window after the first decision (default 168)")
    parser.add_argument("--margin-field", default=None,
                        help="numeric field of PURCHASE event lines holding the purchase's margin; adds margin "
                             "per user and attributed margin to the report")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``python3 -m offline logs``; exit 2 on bad input."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        doc = run(args)
        conv = doc["lift"]["metrics"]["conversion_rate"]
        common.emit_json({
            "out": str(args.out),
            "decisions": doc["decisions"]["total"],
            "events": doc["input"]["events"],
            "treated_users": doc["lift"]["treated_users"],
            "holdout_users": doc["lift"]["holdout_users"],
            "conversion_lift": conv["difference"],
            "conversion_lift_ci": [conv["ci_low"], conv["ci_high"]],
            "relative_conversion_lift": conv["relative_lift"],
        })
        return 0

    return common.run_job("logs", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
