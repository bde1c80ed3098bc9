"""``offline replay``: the page views ``evaluate`` scores, replayed through a real offerd, valued
with the simulator's ground truth.

Usage::

    /usr/bin/python3 -m offline replay --build DIR --offerd build/bin/offerd --out DIR
        [--mode greedy|default|both] [--policy-config FILE] [--page-views N] [--seed S]
    /usr/bin/python3 -m offline replay --build DIR --addr HOST:PORT --out DIR   # a running offerd
    /usr/bin/python3 -m offline replay --build DIR --out DIR --write-inputs     # its inputs only

``--build`` is an ``offline build`` directory (``build.json``: the world, the bundle and
``users.jsonl``); ``--world``, ``--bundle`` and ``--users-jsonl`` override its entries.

**Page views.** Exactly those ``offline evaluate`` scores: the rows of ``campaign_log.csv`` of the
users the uplift job held out, sampled with evaluate's seed and count (the build's
``evaluate/evaluate.json`` config unless ``--page-views`` / ``--seed`` / ``--n`` say otherwise):
user, day, channel, device, page, and the user's country. They are replayed in day order; a
page view of day ``d`` is sent at ``d`` 12:00 UTC (+1 s per page view of that day) as the
request's ``context.timestamp_ms``, so the server must run with ``--trust_client_time``.

**User state.** The server gets the users of the sample (``replay_users.jsonl``: the build's
``users.jsonl`` rows, whose features are static) with a purchase base *as of the first replayed
day* ``D0`` (purchases of ``transactions.csv`` before ``D0``, :func:`offline.export.purchase_base`).
The world's later purchases of those users are then reported as PURCHASE events at 23:00 of
their day, after that day's page views. So at every page view the service's purchase summary
(and the RFM, CLV and ``purchases`` model inputs it derives) is the one ``evaluate`` uses for that
day (purchases strictly before it) -- plus the purchases the replay's own conversions added.

**Feedback.** Per served offer the outcome is drawn from the ground truth of that page view
(``offline.world.true_response``): converted with probability p1 (shown offers are seen, as in
evaluate's value). The replay reports IMPRESSION for every served offer (with the decision id:
the server counted it at serve time and does not count it again), REDEEM for a converted offer,
DISMISS for a non-converted one with probability ``0.08 + 0.6 x annoyed`` (the simulator's
dismissal rule with "not converted" for "not clicked"), and one PURCHASE of the user's true mean
spend when any served offer converted -- so fatigue, cooldowns, budgets and RFM move as in
production. ``--no-feedback`` reports nothing of the sort (the world's purchases are still
reported).

**Value.** The true incremental profit per 1,000 page views of what the server served, computed
like evaluate's: ``1000 x mean over page views of the sum over served offers of
(true p1 - true p0) x (margin + beta x true CLV) - true p1 x cost`` with the simulator's p0/p1
(``offline.world.true_response`` at the page view's day and channel) and ``offline.evaluate
.true_clv``. A holdout page view (empty list) is worth 0 and counts in the mean.

**Modes.** ``greedy``: the policy evaluate's "ours" is -- the policy config
:data:`GREEDY_POLICY` switches off the holdout, exploration (epsilon 0), the category limit
(``max_per_category`` 0) and fatigue (decay 1, caps and cooldowns out of reach), so the server
ranks by its model EV with the bundle's ROI gate ``min_ev``. Its figure must agree with
evaluate's "ours" (``--tolerance``, 10 %). ``default``: the server's defaults (5 % holdout, the
bundle's policy: exploration, category limit, fatigue) or ``--policy-config FILE``; reported with
its holdout and exploration shares. Per-offer catalog caps and budgets apply in both modes (no
policy key switches them off), as does retrieval: the server scores only the eligible offers
among the ``retrieval_k`` (manifest, default 200) nearest to the user tower's query, whereas
evaluate scores every eligible offer. ``--retrieval-k all`` (or a number) serves a copy of the
bundle with the manifest's ``retrieval_k`` changed, to measure what retrieval costs.

**Diagnostics.** The replay also recomputes evaluate's "ours" slate of every page view with
evaluate's own functions (:func:`offline.evaluate.uplift_scores`, ``retrieval_matrix``,
``bundle_clv``, ``top_n``) and reports how often the server's slate equals it, how many served
offers are outside it, how many of ours' offers were not among the server's retrieved
candidates, and the largest differences between the p0, p1 and CLV the server explains and the
offline ones.

With ``--offerd`` the replay starts one offerd per mode (temporary directory: a copy of the
bundle as the only snapshot, a fresh RocksDB, ``--ingest`` of ``replay_users.jsonl``,
``--policy_config``, loopback port 0 with port files, metrics off, decision and event logs in
``OUT/<mode>/logs``) and stops it afterwards. With ``--addr`` it uses a running offerd, which
must have been started fresh with ``--trust_client_time``, ``--ingest=OUT/replay_users.jsonl``
(``--write-inputs`` writes it and the policy configs) and the policy to measure; that one run
is reported as mode ``external``.

Outputs in ``--out``: ``replay.json`` (every figure), ``replay.md`` (summary), the inputs
(``replay_users.jsonl``, ``policy-<mode>.json``) and, when evaluate.json of the build does not
match the replay's configuration, ``evaluate/`` (``offline evaluate`` run in-process). Exit 0 when
every requested check passed, 1 when the greedy replay is not within the tolerance of
evaluate's "ours" or not above random and response-only, 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from offline import common

REPO_ROOT = Path(__file__).resolve().parents[1]
# Evaluate's policy on the server: no holdout, greedy, no category limit, no fatigue.
GREEDY_POLICY: dict[str, Any] = {
    "holdout_fraction": 0,
    "overrides": {"epsilon": 0, "max_per_category": 0, "fatigue_decay": 1,
                  "max_impressions_per_window": 1_000_000_000, "max_offers_per_day": 1_000_000_000,
                  "dismiss_cooldown_seconds": 0, "redeem_cooldown_seconds": 0},
}
MODES: tuple[str, ...] = ("greedy", "default")
PAGE_VIEW_HOUR_MS = 12 * 3_600_000  # page views of a day start at 12:00 UTC, 1 s apart
HISTORY_HOUR_MS = 23 * 3_600_000  # the world's purchases of a day are reported at 23:00 UTC
FEEDBACK_DELAY_MS = 500  # feedback events follow their page view by half a second
MAX_EVENTS_PER_CALL = 1000
DISMISS_BASE, DISMISS_ANNOYED = 0.08, 0.6  # offline.world: dismissal probability when not clicked


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class Inputs:
    world_dir: Path
    bundle: Path
    users_jsonl: Path
    build_dir: Path | None
    evaluate_json: Path | None


def resolve_inputs(args: argparse.Namespace) -> Inputs:
    build = None
    if args.build is not None:
        path = args.build / "build.json"
        if not path.is_file():
            raise common.JobError(f"{path}: not found (is {args.build} an `offline build` directory?)")
        build = common.read_json(path)

    def pick(flag: Path | None, key: str) -> Path:
        if flag is not None:
            return flag
        if build is None or not build.get(key):
            raise common.JobError(f"give --build DIR or --{key.replace('_', '-')}")
        return Path(build[key])

    world = pick(args.world, "world")
    bundle = pick(args.bundle, "bundle")
    users = args.users_jsonl if args.users_jsonl is not None else pick(None, "users_jsonl")
    for p, what in ((world / "synth.json", "world"), (bundle / "MANIFEST.json", "bundle"), (users, "users file")):
        if not p.is_file():
            raise common.JobError(f"{p}: {what} not found")
    ev = args.build / "evaluate" / "evaluate.json" if args.build is not None else None
    return Inputs(world, bundle, users, args.build, ev if ev is not None and ev.is_file() else None)


def eval_config(args: argparse.Namespace, inputs: Inputs) -> Any:
    """evaluate's configuration of the build (its evaluate.json), with the CLI's overrides."""
    from offline.evaluate import EvalConfig

    cfg = EvalConfig()
    if inputs.evaluate_json is not None:
        doc = json.loads(inputs.evaluate_json.read_text(encoding="utf-8"))
        known = {k: v for k, v in doc.get("config", {}).items() if k in EvalConfig.__dataclass_fields__}
        cfg = replace(cfg, **known)
    over = {k: v for k, v in (("page_views", args.page_views), ("seed", args.seed), ("n", args.n)) if v is not None}
    return replace(cfg, users_jsonl=str(inputs.users_jsonl), **over)


@dataclass
class PageViews:
    """The sampled page views (evaluate's sample) in evaluate's order, plus replay order."""

    rows: pd.DataFrame  # log rows: user, day_num, channel, device, page, ...
    heldout_rows: int
    order: np.ndarray  # replay order (by day, stable)


def sample_page_views(world: Any, cfg: Any) -> PageViews:
    """The page views ``offline.evaluate.evaluate_world`` scores: held-out users' log rows,
    ``rng(cfg.seed).choice`` of ``cfg.page_views`` of them, sorted (its sampling rule)."""
    from offline.uplift import hash_fraction

    log = world.log
    heldout_user = hash_fraction(world.data.users["user_id"].astype(str)) < cfg.test_fraction
    in_heldout = heldout_user[log["user"].to_numpy()]
    heldout_rows = np.flatnonzero(in_heldout)
    if heldout_rows.size == 0:
        raise common.JobError(f"{world.directory / 'campaign_log.csv'}: no rows of held-out users")
    rng = np.random.default_rng(cfg.seed)
    pv_rows = np.sort(rng.choice(heldout_rows, size=min(cfg.page_views, heldout_rows.size), replace=False))
    pv = log.iloc[pv_rows].reset_index(drop=True)
    order = np.argsort(pv["day_num"].to_numpy(), kind="stable")
    return PageViews(pv, int(heldout_rows.size), order)


def write_replay_users(path: Path, users_jsonl: Path, world: Any, user_idx: np.ndarray, as_of_day: int) -> int:
    """``users_jsonl`` rows of the sampled users with the purchase base before ``as_of_day``."""
    from offline import export

    base = export.purchase_base(replace(world.data, as_of_day=int(as_of_day)))
    ids = world.data.users["user_id"].astype(str).to_numpy()
    wanted = {ids[i]: int(i) for i in np.unique(user_idx)}
    written = 0
    with open(users_jsonl, encoding="utf-8") as src, open(path, "w", encoding="utf-8") as out:
        header = src.readline()
        if "header" not in json.loads(header):
            raise common.JobError(f"{users_jsonl}: first line is not a users.jsonl header")
        out.write(header)
        for line_no, line in enumerate(src, 2):
            if not line.strip():
                continue
            rec = json.loads(line)
            i = wanted.get(str(rec.get("user_id")))
            if i is None:
                continue
            rec.pop("purchases", None)
            if base.has[i]:
                rec["purchases"] = {"first_purchase_day": int(base.first_day[i]),
                                    "last_purchase_day": int(base.last_day[i]),
                                    "repeat_days": int(base.repeat_days[i]),
                                    "repeat_spend_sum": float(base.repeat_spend_sum[i])}
            out.write(json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n")
            written += 1
    if written != len(wanted):
        raise common.JobError(f"{users_jsonl}: {len(wanted) - written} sampled user(s) missing")
    return written


def world_purchases(world: Any, user_idx: np.ndarray, first_day: int, last_day: int) -> pd.DataFrame:
    """Per (user, day) spend of transactions.csv for the given users on days [first_day, last_day)."""
    tx = world.data.transactions
    ids = world.data.users["user_id"].astype(str)
    pos = pd.Series(np.arange(len(ids)), index=ids.to_numpy())
    u = pos.reindex(tx["user_id"].astype(str)).to_numpy()
    day = common.days_from_iso(tx["date"].to_numpy(dtype=str), "transactions.csv: column date")
    keep = ~np.isnan(u)
    keep[keep] &= np.isin(u[keep].astype(np.int64), np.unique(user_idx))
    keep &= (day >= first_day) & (day < last_day)
    frame = pd.DataFrame({"user": u[keep].astype(np.int64), "day": day[keep].astype(np.int64),
                          "amount": pd.to_numeric(tx["amount"], errors="coerce").to_numpy()[keep]})
    return frame.groupby(["day", "user"], sort=True)["amount"].sum().reset_index()


# ---------------------------------------------------------------------------------------------
# the offline reference: evaluate's "ours" slate per page view, with evaluate's functions


@dataclass
class OfflineReference:
    ours: np.ndarray  # [pv, n] offer indices, -1 = empty (evaluate's "ours")
    p0: np.ndarray  # [pv] model p0
    p1: np.ndarray  # [pv, offers] model p1 (NaN where not eligible)
    clv: np.ndarray  # [pv] CLV estimate (the bundle's clv section)
    eligible: np.ndarray  # [pv] eligible offers
    ours_rank: np.ndarray | None  # [pv, n] rank of each of ours' offers by retrieval score in the catalog


def offline_reference(world: Any, model: Any, cfg: Any, pv: pd.DataFrame) -> OfflineReference:
    from offline import evaluate, train

    clv_model = evaluate.bundle_clv(model.clv) if model.clv else evaluate.fit_clv(world, cfg)
    margin = world.offer_frame["margin"].to_numpy()
    cost = world.offer_frame["cost"].to_numpy()
    users = world.data.users
    country = users["country"].astype(str).to_numpy()
    tier = users["tier"].astype(str).to_numpy()
    emb = evaluate.model_embeddings(model, world, cfg.users_jsonl)
    min_ev = model.min_ev(cfg.min_ev)
    purchases_all = evaluate._purchase_frame(world, pv["user"].to_numpy(), pv["day_num"].to_numpy())
    ours, p0s, p1s, clvs, n_elig, ranks = [], [], [], [], [], []
    for start in range(0, len(pv), cfg.chunk):
        rows = pv.iloc[start:start + cfg.chunk].reset_index(drop=True)
        u, d = rows["user"].to_numpy(), rows["day_num"].to_numpy()
        ch = rows["channel"].astype(str).to_numpy()
        purchases = purchases_all.iloc[start:start + cfg.chunk].reset_index(drop=True)
        clv_hat = clv_model.value(purchases)
        allowed = train.eligibility(world.data.offers, country[u], tier[u], d.astype(np.float64), ch)
        rscore = evaluate.retrieval_matrix(emb, world, rows) if emb is not None else None
        p0, p1 = evaluate.uplift_scores(model, evaluate._section_frames(world, rows, purchases), len(rows),
                                        world.offer_frame, rscore, allowed)
        ev_model = (p1 - p0[:, None]) * (margin[None, :] + cfg.beta * clv_hat[:, None]) - p1 * cost[None, :]
        choice = evaluate.top_n(ev_model, allowed & (ev_model > min_ev), cfg.n)
        ours.append(choice)
        p0s.append(p0)
        p1s.append(p1)
        clvs.append(clv_hat)
        n_elig.append(allowed.sum(axis=1))
        if rscore is not None:  # the server retrieves the top retrieval_k of the whole catalog, then filters
            mine = np.take_along_axis(rscore, np.maximum(choice, 0), axis=1)
            rank = (rscore[:, :, None] > mine[:, None, :]).sum(axis=1)
            ranks.append(np.where(choice >= 0, rank, -1))
    return OfflineReference(np.concatenate(ours), np.concatenate(p0s), np.concatenate(p1s), np.concatenate(clvs),
                            np.concatenate(n_elig), np.concatenate(ranks) if ranks else None)


def true_values(world: Any, cfg: Any, pv: pd.DataFrame, choice: np.ndarray) -> dict[str, np.ndarray]:
    """Per page view: true incremental profit, uplift and redemption cost of the chosen offers
    (evaluate's value: ``offline.world.true_response`` and ``offline.evaluate.true_clv``)."""
    from offline.evaluate import slate_sums, true_clv
    from offline.world import true_response

    margin = world.offer_frame["margin"].to_numpy()
    cost = world.offer_frame["cost"].to_numpy()
    u = pv["user"].to_numpy()
    d = pv["day_num"].to_numpy().astype(np.float64)
    ch = pv["channel"].astype(str).to_numpy()
    safe = np.maximum(choice, 0)
    tp0, tp1 = true_response(world.truth, u[:, None], safe, {"day": d[:, None], "channel": ch[:, None]})
    clv_t = true_clv(world.truth, u, d, cfg)
    uplift = tp1 - tp0
    ev = uplift * (margin[safe] + cfg.beta * clv_t[:, None]) - tp1 * cost[safe]
    # slate_sums indexes [rows, offers] arrays by offer; ours are already [rows, slot]
    slot = np.where(choice >= 0, np.arange(choice.shape[1])[None, :], -1)
    value, lift, spent = slate_sums(slot, ev, uplift, tp1 * cost[safe])
    return {"value": value, "uplift": lift, "cost": spent}


# ---------------------------------------------------------------------------------------------
# the server


def _stub_path(offerd: Path | None) -> Path:
    candidates = []
    if offerd is not None:
        candidates.append(offerd.resolve().parent.parent / "py")
    if os.environ.get("OFFERD_BUILD_DIR"):
        candidates.append(Path(os.environ["OFFERD_BUILD_DIR"]) / "py")
    candidates.append(REPO_ROOT / "build" / "py")
    for c in candidates:
        if (c / "offerd" / "v1" / "offer_service_pb2.py").is_file():
            return c
    raise common.JobError("python gRPC stubs not found (looked in " + ", ".join(str(c) for c in candidates)
                          + "): run `make py-stubs`")


def import_stubs(offerd: Path | None) -> tuple[Any, Any]:
    path = str(_stub_path(offerd))
    if path not in sys.path:
        sys.path.insert(0, path)
    from offerd.v1 import offer_service_pb2, offer_service_pb2_grpc  # type: ignore[import-not-found]

    return offer_service_pb2, offer_service_pb2_grpc


class Server:
    """An offerd the replay started (``start``) or a running one (``attach``)."""

    def __init__(self, addr: str, proc: subprocess.Popen | None = None, log_path: Path | None = None,
                 tmp: Path | None = None) -> None:
        self.addr, self.proc, self.log_path, self.tmp = addr, proc, log_path, tmp

    @classmethod
    def start(cls, offerd: Path, bundle: Path, users: Path, policy: dict[str, Any] | None, workdir: Path,
              log_dir: Path | None, retrieval_k: str | None, timeout: float = 120.0) -> "Server":
        tmp = Path(tempfile.mkdtemp(prefix="replay-offerd-", dir=workdir))
        snapshots = tmp / "snapshots"
        snapshots.mkdir()
        copy = snapshots / bundle.name
        shutil.copytree(bundle, copy)
        if retrieval_k is not None:
            manifest = json.loads((copy / "MANIFEST.json").read_text(encoding="utf-8"))
            k = int(manifest["num_offers"]) if retrieval_k == "all" else int(retrieval_k)
            manifest.setdefault("policy", {})["retrieval_k"] = k
            (copy / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        port_file = tmp / "port"
        args = [str(offerd), "--listen=127.0.0.1:0", "--admin_listen=127.0.0.1:0", "--metrics_listen=",
                f"--snapshot_root={snapshots}", f"--db_path={tmp / 'db'}", f"--ingest={users}",
                f"--port_file={port_file}", f"--admin_port_file={tmp / 'admin_port'}", "--snapshot_poll_ms=0",
                "--trust_client_time", "--log_level=warning"]
        if policy is not None:
            (tmp / "policy.json").write_text(json.dumps(policy), encoding="utf-8")
            args.append(f"--policy_config={tmp / 'policy.json'}")
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            args.append(f"--log_dir={log_dir}")
        log_path = tmp / "offerd.log"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.is_file() and port_file.read_text().strip():
                return cls(f"127.0.0.1:{int(port_file.read_text())}", proc, log_path, tmp)
            if proc.poll() is not None:
                raise common.JobError(f"offerd exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise common.JobError(f"offerd did not start within {timeout:.0f}s:\n{log_path.read_text(errors='replace')}")

    def stop(self, keep: bool = False) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        if self.tmp is not None and not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return code


# ---------------------------------------------------------------------------------------------
# the replay


@dataclass
class ModeResult:
    name: str
    policy: dict[str, Any] | None
    served: np.ndarray  # [pv, n] offer indices, -1 = empty
    holdout: np.ndarray  # [pv] bool
    cold_start: np.ndarray  # [pv] bool
    explored: np.ndarray  # [pv, n] bool
    propensity: np.ndarray  # [pv, n]
    p0: np.ndarray  # [pv] server p_control (NaN when nothing served)
    p1: np.ndarray  # [pv, n] server p_treated
    clv: np.ndarray  # [pv] server CLV (NaN when nothing served)
    arms: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _event_batches(events: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(events), MAX_EVENTS_PER_CALL):
        yield events[i:i + MAX_EVENTS_PER_CALL]


def run_mode(name: str, policy: dict[str, Any] | None, addr: str, stubs: tuple[Any, Any], world: Any, cfg: Any,
             pvs: PageViews, history: pd.DataFrame, feedback: bool, seed: int) -> ModeResult:
    """Replays the page views against ``addr`` in day order, feeding events back."""
    import grpc

    from offline.world import true_response

    pb, pb_grpc = stubs
    pv = pvs.rows
    npv, n = len(pv), cfg.n
    offer_ids = world.offer_frame["offer_id"].astype(str).tolist()
    offer_pos = {o: i for i, o in enumerate(offer_ids)}
    user_ids = world.data.users["user_id"].astype(str).to_numpy()
    country = world.data.users["country"].astype(str).to_numpy()
    truth = world.truth
    out = ModeResult(name, policy, np.full((npv, n), -1), np.zeros(npv, bool), np.zeros(npv, bool),
                     np.zeros((npv, n), bool), np.full((npv, n), np.nan), np.full(npv, np.nan),
                     np.full((npv, n), np.nan), np.full(npv, np.nan))
    counts = {"recommend_calls": 0, "report_calls": 0, "accepted": 0, "rejected": 0, "duplicates": 0,
              "impression": 0, "redeem": 0, "dismiss": 0, "purchase_feedback": 0, "purchase_world": 0}
    rng = np.random.default_rng([seed, 1])
    started = time.monotonic()
    days = pv["day_num"].to_numpy().astype(np.int64)
    hist_by_day = {int(d): g for d, g in history.groupby("day")} if len(history) else {}
    channel = grpc.insecure_channel(addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.OfferServiceStub(channel)

        def report(events: list[Any]) -> None:
            for batch in _event_batches(events):
                resp = stub.ReportEvents(pb.ReportEventsRequest(events=batch), timeout=30)
                counts["report_calls"] += 1
                counts["accepted"] += resp.accepted
                counts["duplicates"] += resp.duplicates
                counts["rejected"] += len(resp.rejected)
                for r in resp.rejected:
                    key = r.reason.split(":")[0]
                    out.rejected_reasons[key] = out.rejected_reasons.get(key, 0) + 1

        all_days = sorted(set(days.tolist()) | {d for d in hist_by_day if d < days.max()})
        by_day = {int(d): pvs.order[days[pvs.order] == d] for d in np.unique(days)}
        for day in all_days:
            for k, i in enumerate(by_day.get(day, [])):
                row = pv.iloc[i]
                u = int(row["user"])
                ts = day * common.MS_PER_DAY + PAGE_VIEW_HOUR_MS + 1000 * k
                req = pb.RecommendRequest(
                    user_id=user_ids[u], num_offers=n, explain=True, request_id=f"replay-{name}-{i}",
                    context=pb.Context(channel=str(row["channel"]), device=str(row["device"]),
                                       page=str(row["page"]), country=country[u], timestamp_ms=int(ts)))
                resp = stub.Recommend(req, timeout=30)
                counts["recommend_calls"] += 1
                out.holdout[i] = resp.holdout
                out.cold_start[i] = resp.cold_start
                if resp.arm:
                    out.arms[resp.arm] = out.arms.get(resp.arm, 0) + 1
                for j, offer in enumerate(resp.offers[:n]):
                    if offer.offer_id not in offer_pos:
                        raise common.JobError(f"server served offer {offer.offer_id!r}, not in the world's catalog")
                    out.served[i, j] = offer_pos[offer.offer_id]
                    out.explored[i, j] = offer.explanation.explored
                    out.propensity[i, j] = offer.propensity
                    out.p1[i, j] = offer.explanation.p_treated
                    out.p0[i] = offer.explanation.p_control
                    out.clv[i] = offer.explanation.clv
                if not feedback or not len(resp.offers):
                    continue
                served = out.served[i][out.served[i] >= 0]
                tp0, tp1 = true_response(truth, np.full(served.size, u), served,
                                         {"day": float(day), "channel": str(row["channel"])})
                converted = rng.random(served.size) < tp1
                annoyed = truth.user_annoyed[u, truth.offer_type_index[served]].astype(bool)
                dismissed = ~converted & (rng.random(served.size) < DISMISS_BASE + DISMISS_ANNOYED * annoyed)
                t_ev = int(ts + FEEDBACK_DELAY_MS)
                events = []
                for o, conv, dis in zip(served, converted, dismissed):
                    common_fields = dict(user_id=user_ids[u], offer_id=offer_ids[o], timestamp_ms=t_ev,
                                         decision_id=resp.decision_id)
                    events.append(pb.Event(type=pb.IMPRESSION, **common_fields))
                    counts["impression"] += 1
                    if conv:
                        events.append(pb.Event(type=pb.REDEEM, **common_fields))
                        counts["redeem"] += 1
                    elif dis:
                        events.append(pb.Event(type=pb.DISMISS, **common_fields))
                        counts["dismiss"] += 1
                if converted.any():
                    events.append(pb.Event(type=pb.PURCHASE, user_id=user_ids[u], timestamp_ms=t_ev,
                                           amount=round(float(truth.user_mean_spend[u]), 2)))
                    counts["purchase_feedback"] += 1
                report(events)
            hist = hist_by_day.get(day)
            if hist is not None:
                t_h = day * common.MS_PER_DAY + HISTORY_HOUR_MS
                report([pb.Event(type=pb.PURCHASE, user_id=user_ids[int(uu)], timestamp_ms=int(t_h),
                                 amount=round(float(a), 2))
                        for uu, a in zip(hist["user"].to_numpy(), hist["amount"].to_numpy())])
                counts["purchase_world"] += len(hist)
    except grpc.RpcError as exc:
        raise common.JobError(f"offerd at {addr}: {exc.code().name}: {exc.details()}") from exc
    finally:
        channel.close()
    out.events = counts
    out.seconds = round(time.monotonic() - started, 2)
    return out


# ---------------------------------------------------------------------------------------------
# figures


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


def mode_figures(res: ModeResult, world: Any, cfg: Any, pv: pd.DataFrame, ref: OfflineReference) -> dict[str, Any]:
    vals = true_values(world, cfg, pv, res.served)
    mean, se = _mean_se(vals["value"])
    # paired by page view: the replay minus evaluate's ours on the same page views
    diff_mean, diff_se = _mean_se(vals["value"] - true_values(world, cfg, pv, ref.ours)["value"])
    served = res.served >= 0
    shown = ~res.holdout
    slate = served.sum(axis=1)
    same = np.array([set(a[a >= 0]) == set(b[b >= 0]) for a, b in zip(res.served, ref.ours)])
    ours_sets = [set(b[b >= 0].tolist()) for b in ref.ours]
    outside = sum(len(set(a[a >= 0].tolist()) - s) for a, s in zip(res.served, ours_sets))
    # differences between the server's explanation and the offline model on served offers
    rows, slots = np.nonzero(served)
    p1_off = ref.p1[rows, res.served[rows, slots]]
    d_p1 = np.abs(res.p1[rows, slots] - p1_off)
    has = served.any(axis=1)
    d_p0 = np.abs(res.p0[has] - ref.p0[has])
    d_clv = np.abs(res.clv[has] - ref.clv[has])
    rel_clv = d_clv / np.maximum(np.abs(ref.clv[has]), 1e-9)
    out: dict[str, Any] = {
        "mode": res.name, "policy_config": res.policy,
        "profit_per_1000": 1000.0 * mean, "se_per_1000": 1000.0 * se,
        "incremental_conversions_per_1000": 1000.0 * float(vals["uplift"].mean()),
        "redemption_cost_per_1000": 1000.0 * float(vals["cost"].mean()),
        "page_views": int(len(pv)),
        "mean_slate_size": float(slate.mean()),
        "holdout_page_views": int(res.holdout.sum()),
        "holdout_share": float(res.holdout.mean()),
        "profit_per_1000_non_holdout": 1000.0 * float(vals["value"][shown].mean()) if shown.any() else None,
        "served_offers": int(served.sum()),
        "explored_offers": int(res.explored.sum()),
        "exploration_share": float(res.explored.sum() / served.sum()) if served.any() else 0.0,
        "cold_start_page_views": int(res.cold_start.sum()),
        "arms": res.arms,
        "events": res.events, "rejected_reasons": res.rejected_reasons,
        "seconds": res.seconds,
        "vs_offline_ours": {
            "paired_difference_per_1000": 1000.0 * diff_mean, "paired_difference_se_per_1000": 1000.0 * diff_se,
            "page_views_same_slate": int(same.sum()), "share_same_slate": float(same.mean()),
            "share_same_slate_non_holdout": float(same[shown].mean()) if shown.any() else None,
            "served_offers_not_in_ours": int(outside),
            "max_abs_diff_p0": float(d_p0.max()) if d_p0.size else None,
            "max_abs_diff_p1": float(np.nanmax(d_p1)) if d_p1.size else None,
            "max_abs_diff_clv": float(d_clv.max()) if d_clv.size else None,
            "max_rel_diff_clv": float(rel_clv.max()) if rel_clv.size else None,
        },
    }
    return out


def ours_offline_figures(world: Any, cfg: Any, pv: pd.DataFrame, ref: OfflineReference,
                         retrieval_k: int) -> dict[str, Any]:
    vals = true_values(world, cfg, pv, ref.ours)
    mean, se = _mean_se(vals["value"])
    out = {"profit_per_1000": 1000.0 * mean, "se_per_1000": 1000.0 * se,
           "mean_slate_size": float((ref.ours >= 0).sum(axis=1).mean()),
           "mean_eligible_offers": float(ref.eligible.mean()), "offers": int((ref.ours >= 0).sum())}
    if ref.ours_rank is not None and retrieval_k < ref.p1.shape[1]:
        # ours' offers the server cannot serve: not among the retrieval_k nearest offers of the catalog
        beyond = (ref.ours_rank >= retrieval_k) & (ref.ours >= 0)
        out["retrieval_k"] = retrieval_k
        out["offers_beyond_retrieval_k"] = int(beyond.sum())
        out["page_views_with_an_offer_beyond_retrieval_k"] = int(beyond.any(axis=1).sum())
        kept = np.where(beyond, -1, ref.ours)
        out["profit_per_1000_without_offers_beyond_retrieval_k"] = 1000.0 * float(
            true_values(world, cfg, pv, kept)["value"].mean())
    return out


def evaluate_figures(inputs: Inputs, cfg: Any, out: Path, pvs: PageViews) -> tuple[dict[str, Any], str]:
    """evaluate's policy values for these page views: the build's evaluate.json when its config
    matches, else ``offline evaluate`` run in-process into ``OUT/evaluate``."""
    from offline import evaluate

    keys = ("n", "beta", "page_views", "test_fraction", "clv_margin", "clv_horizon_weeks", "annual_discount_rate",
            "seed", "min_ev", "chunk")
    if inputs.evaluate_json is not None:
        doc = json.loads(inputs.evaluate_json.read_text(encoding="utf-8"))
        c = doc.get("config", {})
        result = doc["worlds"][0]["result"] if doc.get("worlds") else {}
        if (all(c.get(k) == getattr(cfg, k) for k in keys) and len(doc.get("worlds", [])) == 1
                and result.get("page_views") == len(pvs.rows) and result.get("heldout_log_rows") == pvs.heldout_rows):
            return result, str(inputs.evaluate_json)
    print("replay: running offline evaluate for this configuration ...", file=sys.stderr, flush=True)
    doc = evaluate.run([inputs.world_dir], [inputs.bundle], out / "evaluate", cfg)
    return doc["worlds"][0]["result"], str(out / "evaluate" / "evaluate.json")


def _far_above(ours: float, base: float) -> bool:
    """ours exceeds the baseline by at least the baseline's own magnitude (and ours > 0)."""
    return ours > 0 and ours - base >= max(abs(base), 1e-9)


def markdown(doc: dict[str, Any]) -> str:
    ev = doc["evaluate"]["policies"]
    lines = ["# offline replay through offerd", "",
             f"World `{doc['world']}`, bundle `{doc['bundle']}`; {doc['page_views']} page views of held-out users "
             f"(evaluate's sample, seed {doc['config']['seed']}), days {doc['first_day']} .. {doc['last_day']}, "
             f"top {doc['config']['n']}, beta {doc['config']['beta']}. True incremental profit per 1,000 page views "
             f"(simulator ground truth):", "",
             "| policy | profit / 1,000 | +-95% | offers / page view | holdout | explored |", "|---|---|---|---|---|---|"]
    for name, m in doc["modes"].items():
        lines.append(f"| offerd, {name} | {m['profit_per_1000']:.1f} | {1.96 * m['se_per_1000']:.1f} | "
                     f"{m['mean_slate_size']:.2f} | {m['holdout_share']:.1%} | {m['exploration_share']:.1%} |")
    o = doc["ours_offline"]
    lines.append(f"| ours recomputed offline (evaluate's functions) | {o['profit_per_1000']:.1f} | "
                 f"{1.96 * o['se_per_1000']:.1f} | {o['mean_slate_size']:.2f} | | |")
    for name in ("oracle", "ours", "response_only", "popularity", "random"):
        if name in ev:
            lines.append(f"| evaluate: {name} | {ev[name]['profit_per_1000']:.1f} | {1.96 * ev[name]['se_per_1000']:.1f} "
                         f"| {ev[name]['mean_slate_size']:.2f} | | |")
    chk = doc.get("checks") or {}
    if chk:
        lines += ["", f"Greedy replay vs evaluate's ours: {chk['greedy_vs_evaluate_ours_rel_diff']:+.1%} "
                      f"(tolerance {chk['tolerance']:.0%}: {'within' if chk['within_tolerance'] else 'OUTSIDE'}); "
                      f"above random: {'yes' if chk['far_above_random'] else 'NO'}; above response-only: "
                      f"{'yes' if chk['far_above_response_only'] else 'NO'}."]
    lines += ["", "| mode | minus ours, paired (+-95%) | same slate as offline ours | served offers not in ours | "
                  "max abs diff p0 / p1 / CLV (server vs offline) | events accepted / rejected / duplicate | seconds |",
              "|---|---|---|---|---|---|---|"]
    for name, m in doc["modes"].items():
        v, e = m["vs_offline_ours"], m["events"]

        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2g}"

        lines.append(f"| {name} | {v['paired_difference_per_1000']:+.1f} ({1.96 * v['paired_difference_se_per_1000']:.1f}) "
                     f"| {v['share_same_slate']:.1%} | {v['served_offers_not_in_ours']} | "
                     f"{f(v['max_abs_diff_p0'])} / {f(v['max_abs_diff_p1'])} / {f(v['max_abs_diff_clv'])} | "
                     f"{e['accepted']} / {e['rejected']} / {e['duplicates']} | {m['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m offline replay",
                                description="Replay evaluate's page views through a real offerd and value what it "
                                            "served with the simulator's ground truth.")
    p.add_argument("--build", type=Path, help="`offline build` directory (build.json: world, bundle, users.jsonl)")
    p.add_argument("--world", type=Path, help="world directory (default: the build's)")
    p.add_argument("--bundle", type=Path, help="snapshot bundle directory (default: the build's)")
    p.add_argument("--users-jsonl", type=Path, help="users.jsonl of the bundle (default: the build's)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    server = p.add_mutually_exclusive_group()
    server.add_argument("--offerd", type=Path, help="offerd binary: start one per mode (temp db, port 0)")
    server.add_argument("--addr", help="a running offerd (host:port), started with --trust_client_time and "
                                       "--ingest=OUT/replay_users.jsonl; reported as mode 'external'")
    server.add_argument("--write-inputs", action="store_true",
                        help="only write replay_users.jsonl and the policy configs into --out")
    p.add_argument("--mode", choices=("greedy", "default", "both"), default="both",
                   help="greedy: holdout, exploration, category limit and fatigue off (evaluate's ours); default: "
                        "the server's defaults or --policy-config (default %(default)s)")
    p.add_argument("--policy-config", type=Path, help="policy config of the default mode (default: none, i.e. the "
                                                      "server's defaults: 5%% holdout, the bundle's policy)")
    p.add_argument("--retrieval-k", help="serve a copy of the bundle with this manifest retrieval_k ('all' = the "
                                         "catalog size); default: the bundle's")
    p.add_argument("--page-views", type=int, help="page views (default: the build's evaluate config)")
    p.add_argument("--seed", type=int, help="evaluate's sampling seed (default: the build's evaluate config)")
    p.add_argument("--n", type=int, help="offers per page view (default: the build's evaluate config)")
    p.add_argument("--outcome-seed", type=int, default=0, help="seed of the sampled outcomes (default %(default)s)")
    p.add_argument("--no-feedback", dest="feedback", action="store_false",
                   help="report no impressions, redemptions, dismissals or conversions (world purchases still)")
    p.add_argument("--tolerance", type=float, default=0.10,
                   help="greedy vs evaluate's ours: allowed relative difference (default %(default)s)")
    p.add_argument("--keep-server-dir", action="store_true", help="keep the started offerd's temp dir (db, log)")
    return p


def main(argv: list[str]) -> int:
    """CLI entry point (see module docstring)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        from offline import evaluate

        if args.offerd is None and args.addr is None and not args.write_inputs:
            raise common.JobError("give --offerd BINARY, --addr HOST:PORT or --write-inputs")
        if args.offerd is not None and not args.offerd.is_file():
            raise common.JobError(f"{args.offerd}: offerd binary not found (run `make build`)")
        if args.policy_config is not None and not args.policy_config.is_file():
            raise common.JobError(f"{args.policy_config}: not found")
        if not 0 < args.tolerance < 1:
            raise common.JobError("--tolerance must be in (0, 1)")
        inputs = resolve_inputs(args)
        cfg = eval_config(args, inputs)
        args.out.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        print(f"replay: reading world {inputs.world_dir} ...", file=sys.stderr, flush=True)
        world = evaluate.read_world(inputs.world_dir)
        model = evaluate.load_uplift_model(inputs.bundle)
        pvs = sample_page_views(world, cfg)
        pv = pvs.rows
        days = pv["day_num"].to_numpy().astype(np.int64)
        first_day, last_day = int(days.min()), int(days.max())
        users_path = args.out / "replay_users.jsonl"
        n_users = write_replay_users(users_path, inputs.users_jsonl, world, pv["user"].to_numpy(), first_day)
        history = world_purchases(world, pv["user"].to_numpy(), first_day, last_day)
        policies: dict[str, dict[str, Any] | None] = {"greedy": GREEDY_POLICY, "default": None}
        if args.policy_config is not None:
            policies["default"] = common.read_json(args.policy_config)
        for name, pol in policies.items():
            if pol is not None:
                common.write_json(args.out / f"policy-{name}.json", pol)
        print(f"replay: {len(pv)} page views of {n_users} users, days {common.day_to_date(first_day)} .. "
              f"{common.day_to_date(last_day)}; {len(history)} world purchase days to report",
              file=sys.stderr, flush=True)
        if args.write_inputs:
            common.emit_json({"out": str(args.out), "users": str(users_path), "page_views": len(pv),
                              "users_count": n_users, "first_day": common.day_to_date(first_day).isoformat()})
            return 0

        ev_result, ev_source = evaluate_figures(inputs, cfg, args.out, pvs)
        print("replay: offline reference (evaluate's ours per page view) ...", file=sys.stderr, flush=True)
        ref = offline_reference(world, model, cfg, pv)
        manifest = json.loads((inputs.bundle / "MANIFEST.json").read_text(encoding="utf-8"))
        bundle_k = int(manifest.get("policy", {}).get("retrieval_k", 200))
        served_k = bundle_k if args.retrieval_k is None else (
            int(manifest["num_offers"]) if args.retrieval_k == "all" else int(args.retrieval_k))
        ours_off = ours_offline_figures(world, cfg, pv, ref, served_k)
        stubs = import_stubs(args.offerd)
        modes = ["external"] if args.addr else (list(MODES) if args.mode == "both" else [args.mode])
        results: dict[str, Any] = {}
        for name in modes:
            policy = None if name == "external" else policies[name]
            server = None
            try:
                if args.addr:
                    addr = args.addr
                else:
                    print(f"replay: mode {name}: starting offerd ...", file=sys.stderr, flush=True)
                    server = Server.start(args.offerd, inputs.bundle, users_path, policy, args.out,
                                          args.out / name / "logs", args.retrieval_k)
                    addr = server.addr
                res = run_mode(name, policy, addr, stubs, world, cfg, pvs, history, args.feedback,
                               args.outcome_seed)
            finally:
                if server is not None:
                    code = server.stop(keep=args.keep_server_dir)
                    if code not in (0, None):
                        print(f"replay: offerd exited with {code}", file=sys.stderr)
            fig = mode_figures(res, world, cfg, pv, ref)
            results[name] = fig
            print(f"replay: mode {name}: {fig['profit_per_1000']:.1f} per 1,000 page views (+-"
                  f"{1.96 * fig['se_per_1000']:.1f}), {fig['mean_slate_size']:.2f} offers/page view, holdout "
                  f"{fig['holdout_share']:.1%}, explored {fig['exploration_share']:.1%}, same slate as offline ours "
                  f"{fig['vs_offline_ours']['share_same_slate']:.1%} ({res.seconds:.0f}s)", file=sys.stderr, flush=True)
        pol = ev_result["policies"]
        doc: dict[str, Any] = {
            "format": "offerd-replay", "format_version": 1,
            "world": str(inputs.world_dir), "bundle": str(inputs.bundle), "users_jsonl": str(inputs.users_jsonl),
            "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "outcome_seed": args.outcome_seed, "feedback": args.feedback, "retrieval_k_served": served_k,
            "bundle_retrieval_k": bundle_k,
            "page_views": len(pv), "users": n_users, "heldout_log_rows": pvs.heldout_rows,
            "first_day": common.day_to_date(first_day).isoformat(), "last_day": common.day_to_date(last_day).isoformat(),
            "world_purchase_days_reported": int(len(history)),
            "value_definition": "1000 x mean over page views of the sum over served offers of true EV = "
                                "(true p1 - true p0) x (margin + beta x true CLV) - true p1 x cost",
            "evaluate": {"source": ev_source, "min_ev": ev_result.get("min_ev"),
                         "mean_candidates": ev_result.get("mean_candidates"), "policies": pol},
            "ours_offline": ours_off,
            "modes": results,
        }
        ok = True
        if "greedy" in results:
            g, ours = results["greedy"]["profit_per_1000"], pol["ours"]["profit_per_1000"]
            rel = (g - ours) / abs(ours) if ours != 0 else float("inf")
            chk = {"greedy_per_1000": g, "evaluate_ours_per_1000": ours, "greedy_vs_evaluate_ours_rel_diff": rel,
                   "tolerance": args.tolerance, "within_tolerance": bool(abs(rel) <= args.tolerance),
                   "evaluate_random_per_1000": pol["random"]["profit_per_1000"],
                   "evaluate_response_only_per_1000": pol["response_only"]["profit_per_1000"],
                   "far_above_random": _far_above(g, pol["random"]["profit_per_1000"]),
                   "far_above_response_only": _far_above(g, pol["response_only"]["profit_per_1000"])}
            doc["checks"] = chk
            ok = chk["within_tolerance"] and chk["far_above_random"] and chk["far_above_response_only"]
        common.write_json(args.out / "replay.json", common.finite_json(doc))
        (args.out / "replay.md").write_text(markdown(doc), encoding="utf-8")
        print(f"replay: done in {time.monotonic() - started:.0f}s; {args.out / 'replay.md'}", file=sys.stderr)
        common.emit_json(common.finite_json({"out": str(args.out), "page_views": len(pv),
                                 "profit_per_1000": {k: v["profit_per_1000"] for k, v in results.items()},
                                 "evaluate_ours_per_1000": pol["ours"]["profit_per_1000"],
                                 "ours_offline_per_1000": ours_off["profit_per_1000"],
                                 "checks": doc.get("checks"),
                                 "holdout_share": {k: v["holdout_share"] for k, v in results.items()},
                                 "exploration_share": {k: v["exploration_share"] for k, v in results.items()}}))
        sys.stderr.write(markdown(doc))
        return 0 if ok else 1

    return common.run_job("replay", body)


