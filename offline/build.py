"""``offline build``: the whole offline pipeline on a synthetic world, with a report.

Usage::

    /usr/bin/python3 -m offline build --out DIR --snapshot-root ROOT [--users N] [--offers M]
        [--seed S] [--months 24] [--as-of YYYY-MM-DD] [--version V] [--index flat|ivf|hnsw]
        [--skip STEP ...] [--step-arg STEP=ARG ...]

Runs :data:`STEPS` in order, each a job of this package run in-process with its ``main(argv)``
(stdout captured to ``DIR/logs/<step>.out``):

=========  ========================================================================
synth      world -> ``DIR/world/``
schema     the bundle's user feature schema -> ``DIR/feature_schema.json`` (the one every
           model job must train on)
clv        BG/NBD + Gamma-Gamma fit on all transactions before the as-of date -> ``DIR/clv/``,
           valued with evaluate's CLV settings (margin rate 0.2, 52 weeks, 10 %/year)
cohorts    monthly cohort retention/revenue and CLV by acquisition source -> ``DIR/cohorts/``
train      two-tower embeddings and user tower -> ``DIR/train/`` (a bundle fragment too)
uplift     uplift heads -> ``DIR/uplift/`` and a bundle fragment in ``DIR/uplift/bundle``; when
           train succeeded, p1 reads the ``retrieval_score`` of its embeddings
           (``--embeddings-from DIR/train``)
export     bundle ``ROOT/<version>/`` + ``DIR/users.jsonl``; picks up ``DIR/train/*_embeddings.npy``,
           ``DIR/uplift/bundle`` and ``DIR/clv/clv.json`` (the manifest's ``clv`` section) when
           those steps succeeded in this build
evaluate   the exported bundle's uplift model and policy against the world's ground truth ->
           ``DIR/evaluate/`` (``offline evaluate --uplift-model <bundle>``) on
           :data:`EVALUATE_PAGE_VIEWS` page views (lighter than the job's default 20,000; the
           ``--step-arg evaluate=--page-views=N`` flag changes it); skipped when the bundle has no
           uplift model
=========  ========================================================================

A step whose module does not exist yet, or that is not wired (``argv`` is None), is skipped
and reported as such. Required steps (synth, schema, export) stop the build when they fail;
an optional step that fails is reported and the build goes on, but exits 1 at the end.
Writes ``DIR/report.md`` (figures of the world, campaigns, bundle and steps; ``segment_mix.png``
next to it), ``DIR/build.json`` and ``DIR/timings.json`` (wall-clock seconds per step).

**Reproducible.** Two builds with the same ``--seed``, sizes, ``--version`` and step arguments give
byte-identical files -- world, fits, models, users.jsonl, bundle, evaluation, report, logs --
except ``timings.json`` and the manifest's ``created_at``: every random draw comes from a seeded
generator, PyTorch runs single-threaded and deterministic, BLAS single-threaded where results
are written, and no file records a wall-clock time. Paths are recorded as given on the command
line (the uplift fragment's embeddings ``source`` is relative to the fragment), so a rerun in
another directory with the same relative ``--out`` / ``--snapshot-root`` matches too
(tests/offline/test_reproducible.py).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import math
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from offline import common
from offline.world import DEFAULT_AS_OF, SEGMENT_TARGETS, SEGMENTS, WorldConfig


@dataclass
class BuildContext:
    """Paths and options shared by the steps; ``results`` collects each step's JSON summary."""

    out: Path
    snapshot_root: Path
    version: str
    users: int
    offers: int
    seed: int
    months: int
    as_of: str
    index: str
    results: dict[str, Any] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    extra_args: dict[str, list[str]] = field(default_factory=dict)  # --step-arg STEP=ARG

    @property
    def world(self) -> Path:
        return self.out / "world"

    @property
    def schema_path(self) -> Path:
        return self.out / "feature_schema.json"

    @property
    def users_jsonl(self) -> Path:
        return self.out / "users.jsonl"

    @property
    def uplift_dir(self) -> Path:
        return self.out / "uplift"

    @property
    def train_dir(self) -> Path:
        return self.out / "train"


@dataclass(frozen=True)
class Step:
    """One pipeline step: a job module run with ``argv(ctx)``, or an in-process ``func(ctx)``."""

    name: str
    module: str
    argv: Callable[[BuildContext], list[str]] | None = None
    func: Callable[[BuildContext], dict[str, Any]] | None = None
    required: bool = False
    outputs: Callable[[BuildContext], list[Path]] | None = None  # removed before the step runs
    skip_if: Callable[[BuildContext], str | None] | None = None  # a reason to skip, decided at run time


def _synth_argv(ctx: BuildContext) -> list[str]:
    return ["--out", str(ctx.world), "--users", str(ctx.users), "--offers", str(ctx.offers),
            "--seed", str(ctx.seed), "--months", str(ctx.months), "--as-of", ctx.as_of]


def _schema(ctx: BuildContext) -> dict[str, Any]:
    from offline.export import feature_schema_for_world

    schema = feature_schema_for_world(ctx.world)
    common.write_json(ctx.schema_path, schema)
    return {"path": str(ctx.schema_path), "id": schema["id"], "features": len(schema["features"])}


def _clv_argv(ctx: BuildContext) -> list[str]:
    import datetime as dt

    from offline.evaluate import EvalConfig

    calibration_end = dt.date.fromisoformat(ctx.as_of) - dt.timedelta(days=1)  # as-of is exclusive
    # the CLV valuation of the served bundle = the one evaluate's "ours" (and the uplift job's ROI
    # gate calibration) value conversions with, so the service ranks as the evaluated policy does
    valuation = EvalConfig()
    return ["--transactions", str(ctx.world / "transactions.csv"), "--calibration-end",
            calibration_end.isoformat(), "--out", str(ctx.out / "clv"),
            "--margin", repr(valuation.clv_margin), "--horizon-weeks", repr(valuation.clv_horizon_weeks),
            "--discount-rate", repr(valuation.annual_discount_rate)]


def _cohorts_argv(ctx: BuildContext) -> list[str]:
    import datetime as dt

    last_day = dt.date.fromisoformat(ctx.as_of) - dt.timedelta(days=1)  # --as-of of cohorts is inclusive
    return ["--transactions", str(ctx.world / "transactions.csv"), "--users", str(ctx.world / "users.csv"),
            "--out", str(ctx.out / "cohorts"), "--as-of", last_day.isoformat(), "--months", str(ctx.months)]


def _uplift_argv(ctx: BuildContext) -> list[str]:
    argv = ["--dataset", "synth", "--world", str(ctx.world), "--out", str(ctx.uplift_dir),
            "--export-dir", str(ctx.uplift_dir / "bundle"), "--feature-schema", str(ctx.schema_path),
            "--threads", "1"]
    if ctx.status.get("train") == "ok" and (ctx.train_dir / "user_tower_manifest_fragment.json").is_file():
        argv += ["--embeddings-from", str(ctx.train_dir)]  # the embeddings export puts into the bundle
    return argv


def _train_argv(ctx: BuildContext) -> list[str]:
    return ["--world", str(ctx.world), "--out", str(ctx.train_dir), "--feature-schema", str(ctx.schema_path)]


def _export_argv(ctx: BuildContext) -> list[str]:
    argv = ["--world", str(ctx.world), "--snapshot-root", str(ctx.snapshot_root), "--version", ctx.version,
            "--users-out", str(ctx.users_jsonl), "--index", ctx.index]
    # only outputs of steps that succeeded in this build (never stale ones of an earlier build)
    trained = ctx.status.get("train") == "ok"
    embeddings = [ctx.train_dir / "user_embeddings.npy", ctx.train_dir / "offer_embeddings.npy"]
    if trained and all(p.is_file() for p in embeddings):
        argv += ["--embeddings-from", str(ctx.train_dir)]
    for step, candidate in (("uplift", ctx.uplift_dir / "bundle"), ("train", ctx.train_dir)):
        if ctx.status.get(step) == "ok" and candidate.is_dir() and any(candidate.glob("*manifest_fragment.json")):
            argv += ["--models-from", str(candidate)]
    if ctx.status.get("clv") == "ok" and (ctx.out / "clv" / "clv.json").is_file():
        argv += ["--clv", str(ctx.out / "clv" / "clv.json")]  # the served CLV parameters
    return argv


EVALUATE_PAGE_VIEWS = 5000


def _evaluate_argv(ctx: BuildContext) -> list[str]:
    bundle = ctx.results.get("export", {}).get("bundle") or str(ctx.snapshot_root / ctx.version)
    return ["--world", str(ctx.world), "--uplift-model", bundle, "--users-jsonl", str(ctx.users_jsonl),
            "--out", str(ctx.out / "evaluate"), "--page-views", str(EVALUATE_PAGE_VIEWS)]


def _evaluate_skip(ctx: BuildContext) -> str | None:
    if ctx.status.get("export") != "ok":
        return "no bundle exported"
    if ctx.status.get("uplift") != "ok":
        return "the bundle has no uplift model (uplift step did not succeed)"
    return None


# The pipeline. Append steps here; argv=None means "present but not wired into build yet".
STEPS: list[Step] = [
    Step("synth", "offline.synth", argv=_synth_argv, required=True),
    Step("schema", "offline.export", func=_schema, required=True),
    Step("clv", "offline.clv", argv=_clv_argv, outputs=lambda c: [c.out / "clv"]),
    Step("cohorts", "offline.cohorts", argv=_cohorts_argv, outputs=lambda c: [c.out / "cohorts"]),
    Step("train", "offline.train", argv=_train_argv, outputs=lambda c: [c.train_dir]),
    Step("uplift", "offline.uplift", argv=_uplift_argv, outputs=lambda c: [c.uplift_dir]),
    Step("export", "offline.export", argv=_export_argv, required=True),
    Step("evaluate", "offline.evaluate", argv=_evaluate_argv, outputs=lambda c: [c.out / "evaluate"],
         skip_if=_evaluate_skip),
]


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def run_step(step: Step, ctx: BuildContext, logs: Path) -> dict[str, Any]:
    """Run one step; returns its record for build.json (status ok/failed/skipped)."""
    record: dict[str, Any] = {"name": step.name, "module": step.module, "required": step.required}
    if not _module_exists(step.module):
        return {**record, "status": "skipped", "note": f"module {step.module} not present"}
    if step.func is None and step.argv is None:
        return {**record, "status": "skipped", "note": "not wired into offline/build.py yet"}
    reason = step.skip_if(ctx) if step.skip_if is not None else None
    if reason:
        return {**record, "status": "skipped", "note": reason}
    for path in (step.outputs(ctx) if step.outputs else []):
        if path.is_dir():
            shutil.rmtree(path)
    started = time.monotonic()
    captured = io.StringIO()
    print(f"build: {step.name} ...", file=sys.stderr, flush=True)
    try:
        with contextlib.redirect_stdout(captured):
            if step.func is not None:
                summary: Any = step.func(ctx)
                code = 0
            else:
                argv = step.argv(ctx) + ctx.extra_args.get(step.name, [])
                record["argv"] = argv
                code = int(importlib.import_module(step.module).main(argv) or 0)
                summary = None
        error = None if code == 0 else f"exit code {code}"
    except common.JobError as exc:
        code, summary, error = exc.exit_code, None, str(exc)
    except SystemExit as exc:  # argparse errors
        code, summary, error = (exc.code if isinstance(exc.code, int) else 2), None, f"exited ({exc.code})"
    except Exception as exc:  # a bug in a step: report it, keep the traceback in the log
        code, summary, error = 1, None, f"{type(exc).__name__}: {exc}"
        captured.write("\n" + traceback.format_exc())
    seconds = round(time.monotonic() - started, 2)
    text = captured.getvalue()
    (logs / f"{step.name}.out").write_text(text, encoding="utf-8")
    if summary is None:
        try:
            summary = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            summary = None
    if summary is not None:
        ctx.results[step.name] = summary
    status = "ok" if code == 0 else "failed"
    ctx.status[step.name] = status
    print(f"build: {step.name} {status} in {seconds:.1f}s" + (f" ({error})" if error else ""),
          file=sys.stderr, flush=True)
    return {**record, "status": status, "seconds": seconds, **({"error": error} if error else {})}


# ---------------------------------------------------------------------------------------------
# report


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def campaign_figures(world: Path) -> dict[str, Any]:
    """Observed campaign effects from campaign_log.csv (ITT and shown-vs-control, 95% CIs)."""
    log = pd.read_csv(world / "campaign_log.csv", usecols=["treated", "impression", "converted", "revenue",
                                                           "clicked", "redeemed", "dismissed"])
    treated = log["treated"].to_numpy() == 1
    shown = log["impression"].to_numpy() == 1
    y = log["converted"].to_numpy(dtype=np.float64)

    def diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        if a.size < 2 or b.size < 2:
            return {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
        est = a.mean() - b.mean()
        se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        return {"estimate": float(est), "ci_low": float(est - 1.96 * se), "ci_high": float(est + 1.96 * se)}

    return {
        "rows": int(len(log)), "treated": int(treated.sum()), "shown": int(shown.sum()),
        "control_conversion": float(y[~treated].mean()) if (~treated).any() else float("nan"),
        "treated_conversion": float(y[treated].mean()) if treated.any() else float("nan"),
        "itt_uplift": diff(y[treated], y[~treated]),
        "shown_uplift": diff(y[shown], y[~treated]),
        "click_rate_shown": float(log["clicked"].to_numpy()[shown].mean()) if shown.any() else float("nan"),
        "redeem_rate_shown": float(log["redeemed"].to_numpy()[shown].mean()) if shown.any() else float("nan"),
        "dismiss_rate_shown": float(log["dismissed"].to_numpy()[shown].mean()) if shown.any() else float("nan"),
    }


def naive_targeting_figures(world: Path, pairs: int = 200_000, seed: int = 0) -> dict[str, Any]:
    """Ground truth: what targeting the top 10% of pairs by response (p1) vs by uplift buys."""
    from offline.world import classify_segments, load_ground_truth, true_response

    truth = load_ground_truth(world)
    rng = np.random.default_rng(seed)
    u = rng.integers(0, truth.num_users, pairs)
    o = rng.integers(0, truth.num_offers, pairs)
    p0, p1 = true_response(truth, u, o)
    lift = p1 - p0
    k = max(pairs // 10, 1)
    seg = classify_segments(p0, p1)
    out: dict[str, Any] = {"pairs": pairs}
    for name, score in (("by_p1", p1), ("by_uplift", lift), ("random", rng.random(pairs))):
        top = np.argsort(-score, kind="stable")[:k]
        out[name] = {"mean_uplift": float(lift[top].mean()), "mean_p1": float(p1[top].mean()),
                     "share": {s: float((seg[top] == i).mean()) for i, s in enumerate(SEGMENTS)}}
    return out


def embedding_quality(world: Path, users_jsonl: Path, bundle: Path, sample: int = 2000) -> dict[str, Any]:
    """Correlation between embedding scores and the users' true taste match (ground truth)."""
    from offline.world import load_ground_truth

    truth = load_ground_truth(world)
    offer_emb = np.load(bundle / "offer_embeddings.npy")
    rows = []
    with open(users_jsonl, encoding="utf-8") as handle:
        next(handle)
        for i, line in enumerate(handle):
            if i % max(truth.num_users // sample, 1) == 0:
                rows.append((i, json.loads(line).get("embedding")))
    rows = [(i, e) for i, e in rows if e is not None]
    if not rows or offer_emb.shape[0] != truth.num_offers:
        return {}
    idx = np.array([i for i, _ in rows])
    scores = np.array([e for _, e in rows]) @ offer_emb.T
    true = truth.user_taste[idx] @ truth.offer_latent.T
    s = scores - scores.mean(axis=1, keepdims=True)
    t = true - true.mean(axis=1, keepdims=True)
    corr = (s * t).sum(axis=1) / np.sqrt((s * s).sum(axis=1) * (t * t).sum(axis=1) + 1e-18)
    return {"users": int(idx.size), "mean_corr_with_true_taste": float(np.mean(corr))}


def plot_segment_mix(mix: dict[str, Any], path: Path) -> bool:
    """Bar chart of the segment mix with the target ranges; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.2))
    shares = [mix["mix_nontrivial"][s] for s in SEGMENTS]
    ax.bar(SEGMENTS, shares, color=["#2a9d8f", "#e9c46a", "#adb5bd", "#e76f51"])
    for i, s in enumerate(SEGMENTS):
        if s in SEGMENT_TARGETS:
            lo, hi = SEGMENT_TARGETS[s]
            ax.plot([i - 0.4, i + 0.4], [lo, lo], "k--", lw=0.8)
            ax.plot([i - 0.4, i + 0.4], [hi, hi], "k--", lw=0.8)
        ax.text(i, shares[i] + 0.01, f"{shares[i]:.1%}", ha="center", fontsize=8)
    ax.set_ylabel("share of non-trivial pairs")
    ax.set_title("True uplift segments (dashed: target ranges)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _clv_summary(path: Path) -> dict[str, dict[str, float]]:
    """Fitted parameters of clv.json (empty if absent or of another layout)."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {"bgnbd": {k: float(doc["bgnbd"][k]) for k in ("r", "alpha", "a", "b")},
                "gamma_gamma": {k: float(doc["gamma_gamma"][k]) for k in ("p", "q", "v")}}
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return {}


def _uplift_summary(path: Path) -> dict[str, dict[str, float | None]]:
    """A few numbers of uplift.json (tolerant of its layout: missing keys give n/a)."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        model = doc["models"]["converted"]
        learners = model["learners"]
    except (KeyError, TypeError, json.JSONDecodeError):
        return {}
    corr = ((model.get("ground_truth") or {}).get("correlation_with_true_uplift") or {})
    out: dict[str, dict[str, float | None]] = {}
    for name, row in learners.items():
        if not isinstance(row, dict):
            continue
        out[name] = {"qini": row.get("qini_coefficient"), "uplift_at_10": (row.get("uplift_at_k") or {}).get("10%"),
                     "true_corr": (corr.get(name) or {}).get("pearson")}
    return out


def _uplift_calibration(path: Path) -> dict[str, Any]:
    try:
        model = json.loads(path.read_text(encoding="utf-8"))["models"]["converted"]
        cal = model.get("calibration") or {}
        return {"learner": model.get("exported_learner", "t_learner"), "shrink": cal.get("shrink_used"),
                "min_ev": cal.get("min_ev_used")}
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return {}


def _evaluate_summary(path: Path) -> dict[str, Any]:
    """The per-world policy table of evaluate.json (empty if absent)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        world = doc["worlds"][0]["result"]
        return {"n": doc["config"]["n"], "page_views": world["page_views"], "policies": world["policies"],
                "ips": world.get("ips") or {}}
    except (OSError, KeyError, IndexError, TypeError, json.JSONDecodeError):
        return {}


def write_report(ctx: BuildContext, steps: list[dict[str, Any]], figures: dict[str, Any]) -> str:
    """Markdown report of the build."""
    synth = json.loads((ctx.world / "synth.json").read_text()) if (ctx.world / "synth.json").is_file() else {}
    sizes = synth.get("sizes", {})
    lines = ["# offline build report", "",
             f"World `{ctx.world}` (seed {ctx.seed}, as-of {ctx.as_of}, {ctx.months} monthly cohorts); "
             f"bundle `{ctx.snapshot_root / ctx.version}`.", "",
             "## Steps", "", "| step | status | note |", "|---|---|---|"]
    for s in steps:
        lines.append(f"| {s['name']} | {s['status']} | {s.get('note', s.get('error', ''))} |")
    if sizes:
        lines += ["", "## World", "",
                  f"{sizes.get('users')} users, {sizes.get('offers')} offers, {sizes.get('transactions')} "
                  f"transactions, {sizes.get('campaign_rows')} campaign rows in {sizes.get('campaigns')} campaigns.",
                  "", "| acquisition source | users | mean acquisition cost | mean organic purchases | active at as-of "
                  "| true r | alpha (weeks) | a | b | p | q | v |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        params = synth.get("source_params", {})
        for name, row in sizes.get("by_source", {}).items():
            p = params.get(name, {})
            lines.append(f"| {name} | {row['users']} | {row['mean_acquisition_cost']:.2f} | "
                         f"{row['mean_organic_purchases']:.2f} | {row['active_at_as_of']:.1%} | {p.get('r')} | "
                         f"{_fmt(p.get('alpha_weeks'), 3)} | {p.get('a')} | {p.get('b')} | {p.get('p')} | "
                         f"{p.get('q')} | {p.get('v')} |")
    mix = synth.get("segment_mix", {}).get("as_of")
    if mix:
        lines += ["", "## True segment mix", "",
                  f"Over {mix['nontrivial_pairs']} user x offer pairs with a non-trivial response "
                  f"(max(p0, p1) >= 0.02) among {mix['pairs']} random pairs at the as-of date:", "",
                  "| segment | share | target |", "|---|---|---|"]
        for s in SEGMENTS:
            target = SEGMENT_TARGETS.get(s)
            lines.append(f"| {s} | {mix['mix_nontrivial'][s]:.1%} | "
                         f"{f'{target[0]:.0%}-{target[1]:.0%}' if target else 'rest'} |")
        if figures.get("segment_mix_png"):
            lines += ["", "![segment mix](segment_mix.png)"]
    naive = figures.get("naive_targeting")
    if naive:
        lines += ["", "## Why naive targeting is wrong (ground truth)", "",
                  "Top 10% of random user x offer pairs chosen by each score:", "",
                  "| chosen by | mean true uplift | mean p1 | sure things | persuadables | sleeping dogs |",
                  "|---|---|---|---|---|---|"]
        for name in ("by_p1", "by_uplift", "random"):
            r = naive[name]
            lines.append(f"| {name} | {r['mean_uplift']:.4f} | {r['mean_p1']:.4f} | {r['share']['sure_thing']:.1%} "
                         f"| {r['share']['persuadable']:.1%} | {r['share']['sleeping_dog']:.1%} |")
    camp = figures.get("campaigns")
    if camp:
        itt, shown = camp["itt_uplift"], camp["shown_uplift"]
        lines += ["", "## Randomized campaigns (observed)", "",
                  f"{camp['rows']} rows, {camp['treated']} treated, {camp['shown']} shown. Conversion: control "
                  f"{_fmt(camp['control_conversion'])}, treated {_fmt(camp['treated_conversion'])}.", "",
                  f"- uplift, assigned vs control: {_fmt(itt['estimate'])} (95% CI {_fmt(itt['ci_low'])} .. "
                  f"{_fmt(itt['ci_high'])})",
                  f"- uplift, shown vs control: {_fmt(shown['estimate'])} (95% CI {_fmt(shown['ci_low'])} .. "
                  f"{_fmt(shown['ci_high'])})",
                  f"- when shown: click {_fmt(camp['click_rate_shown'], 3)}, "
                  f"redeem {_fmt(camp['redeem_rate_shown'], 3)}, "
                  f"dismiss {_fmt(camp['dismiss_rate_shown'], 3)}"]
    exp = ctx.results.get("export")
    if exp:
        lines += ["", "## Bundle", "",
                  f"- version `{exp['version']}` at `{exp['bundle']}`; users `{exp['users_jsonl']}`",
                  f"- {exp['num_offers']} offers, {exp['num_users']} users, embedding dim {exp['embedding_dim']}, "
                  f"feature schema `{exp['feature_schema_id']}`, index `{json.dumps(exp['index'])}`",
                  f"- models: {', '.join(exp.get('models') or []) or 'none'}",
                  f"- embeddings: {exp['embedding_method']} {json.dumps(exp.get('embedding_diagnostics') or {})}"]
        quality = figures.get("embedding_quality")
        if quality:
            lines.append(f"- embedding scores vs true taste: mean per-user correlation "
                         f"{quality['mean_corr_with_true_taste']:.3f} over {quality['users']} users (random: 0)")
    clv = _clv_summary(ctx.out / "clv" / "clv.json")
    if clv:
        lines += ["", "## CLV fit (offline.clv, all sources pooled, weeks)", "",
                  "BG/NBD " + ", ".join(f"{k}={_fmt(v, 3)}" for k, v in clv["bgnbd"].items())
                  + "; Gamma-Gamma " + ", ".join(f"{k}={_fmt(v, 3)}" for k, v in clv["gamma_gamma"].items())
                  + ". The true per-source values are in the World table above."]
    uplift = _uplift_summary(ctx.uplift_dir / "uplift.json")
    if uplift:
        lines += ["", "## Uplift model (offline.uplift, held-out rows)", "",
                  "| learner | Qini coefficient | uplift@10% | corr. with true uplift |", "|---|---|---|---|"]
        for name, row in uplift.items():
            lines.append(f"| {name} | {_fmt(row.get('qini'))} | {_fmt(row.get('uplift_at_10'))} | "
                         f"{_fmt(row.get('true_corr'), 3)} |")
        cal = _uplift_calibration(ctx.uplift_dir / "uplift.json")
        if cal:
            lines += ["", f"Exported learner: {cal['learner']}; validated on out-of-fold logged rows of the training "
                          f"users: uplift shrink {_fmt(cal.get('shrink'), 3)}, ROI gate min_ev "
                          f"{_fmt(cal.get('min_ev'), 3)} (written to the bundle's policy)."]
    evaluation = _evaluate_summary(ctx.out / "evaluate" / "evaluate.json")
    if evaluation:
        lines += ["", "## Policy evaluation (offline.evaluate on the bundle, ground truth)", "",
                  f"True incremental profit per 1,000 page views, top-{evaluation['n']} offers, "
                  f"{evaluation['page_views']} page views of held-out users:", "",
                  "| policy | profit / 1,000 | +-95% | share of oracle |", "|---|---|---|---|"]
        for name, row in evaluation["policies"].items():
            lines.append(f"| {name} | {_fmt(row['profit_per_1000'], 1)} | {_fmt(1.96 * row['se_per_1000'], 1)} | "
                         f"{_fmt(None if row.get('share_of_oracle') is None else 100 * row['share_of_oracle'], 1)}% |")
        ips = evaluation.get("ips") or {}
        dr = ips.get("doubly_robust_ours")
        if dr:
            lines += ["", f"Off-policy estimate of ours' incremental value from the randomized log alone (doubly "
                          f"robust, {ips['rows']} logged rows of held-out users, ours' top-1 among each campaign's "
                          f"offers; {ips.get('rows_ours_matches_logged_offer')} rows where the random offer is "
                          f"ours' pick): {_fmt(dr['dr'], 1)} per 1,000 rows, 95% CI {_fmt(dr['dr_ci'][0], 1)} .. "
                          f"{_fmt(dr['dr_ci'][1], 1)}; simulator truth {_fmt(ips['truth_ours_per_1000'], 1)} "
                          f"({'inside' if ips.get('dr_ci_covers_truth') else 'OUTSIDE'} the interval)."]
    other = [s["name"] for s in steps if s["status"] == "ok" and s["name"] not in ("synth", "schema", "export")]
    if other:
        lines += ["", "## Other steps", ""]
        for name in other:
            lines.append(f"- {name}: output in `{ctx.out / name}` (stdout in `logs/{name}.out`)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``build`` job."""
    defaults = WorldConfig()
    parser = argparse.ArgumentParser(prog="python3 -m offline build",
                                     description="Synthetic world -> models -> bundle, with report.md.")
    parser.add_argument("--out", required=True, type=Path, help="build directory (world/, report.md, build.json)")
    parser.add_argument("--snapshot-root", required=True, type=Path, help="snapshot root for the bundle")
    parser.add_argument("--users", type=int, default=defaults.users, help="default %(default)s")
    parser.add_argument("--offers", type=int, default=defaults.offers, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    parser.add_argument("--months", type=int, default=defaults.months, help="default %(default)s")
    parser.add_argument("--as-of", default=DEFAULT_AS_OF.isoformat(), help="default %(default)s")
    parser.add_argument("--version", help="bundle version (default: UTC timestamp)")
    parser.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat", help="default %(default)s")
    parser.add_argument("--step-arg", action="append", default=[], metavar="STEP=ARG",
                        help="append ARG to a step's command line (repeatable), e.g. train=--epochs=10")
    parser.add_argument("--skip", action="append", default=[], metavar="STEP",
                        help="skip an optional step (repeatable): "
                        + ", ".join(s.name for s in STEPS if not s.required))
    return parser


def main(argv: list[str]) -> int:
    """CLI entry point (see module docstring)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        unknown = [s for s in args.skip if s not in {st.name for st in STEPS}]
        if unknown:
            raise common.JobError(f"--skip: unknown step(s) {', '.join(unknown)}")
        required_skipped = [s.name for s in STEPS if s.required and s.name in args.skip]
        if required_skipped:
            raise common.JobError(f"--skip: step(s) {', '.join(required_skipped)} are required")
        version = args.version or common.utc_now_version()
        if (args.snapshot_root / version).exists():
            raise common.JobError(f"{args.snapshot_root / version}: version already exists; refusing to overwrite it")
        ctx = BuildContext(args.out, args.snapshot_root, version, args.users, args.offers, args.seed, args.months,
                           args.as_of, args.index)
        for item in args.step_arg:
            name, sep, value = item.partition("=")
            if not sep or name not in {st.name for st in STEPS if st.argv is not None}:
                raise common.JobError(f"--step-arg {item!r}: expected STEP=ARG with a step that takes arguments")
            ctx.extra_args.setdefault(name, []).append(value)
        args.out.mkdir(parents=True, exist_ok=True)
        logs = args.out / "logs"
        logs.mkdir(exist_ok=True)
        started = time.monotonic()
        records: list[dict[str, Any]] = []
        failed_required = False
        for step in STEPS:
            if step.name in args.skip:
                records.append({"name": step.name, "module": step.module, "required": False,
                                "status": "skipped", "note": "--skip"})
                continue
            record = run_step(step, ctx, logs)
            records.append(record)
            if record["status"] == "failed" and step.required:
                failed_required = True
                break
        figures: dict[str, Any] = {}
        if (ctx.world / "campaign_log.csv").is_file():
            figures["campaigns"] = campaign_figures(ctx.world)
            figures["naive_targeting"] = naive_targeting_figures(ctx.world)
            synth = json.loads((ctx.world / "synth.json").read_text())
            figures["segment_mix_png"] = plot_segment_mix(synth["segment_mix"]["as_of"],
                                                          args.out / "segment_mix.png")
        if "export" in ctx.results:
            figures["embedding_quality"] = embedding_quality(ctx.world, ctx.users_jsonl,
                                                             Path(ctx.results["export"]["bundle"]))
        total = round(time.monotonic() - started, 2)
        # wall-clock times live in timings.json only: every other file of the build is the same
        # on a rerun with the same seed, sizes and paths
        timings = {"steps": {r["name"]: r.pop("seconds") for r in records if "seconds" in r}, "total_seconds": total}
        common.write_json(args.out / "timings.json", timings)
        (args.out / "report.md").write_text(write_report(ctx, records, figures)
                                            + "\nStep and total wall-clock times: `timings.json`.\n", encoding="utf-8")
        failed = [r["name"] for r in records if r["status"] == "failed"]
        build = {"out": str(args.out), "world": str(ctx.world), "snapshot_root": str(args.snapshot_root),
                 "version": version, "bundle": ctx.results.get("export", {}).get("bundle"),
                 "users_jsonl": str(ctx.users_jsonl) if "export" in ctx.results else None,
                 "feature_schema": ctx.results.get("schema"), "steps": records, "failed": failed,
                 "figures": figures}
        common.write_json(args.out / "build.json", json.loads(json.dumps(build, default=str).replace("NaN", "null")))
        common.emit_json({**{k: build[k] for k in ("version", "bundle", "users_jsonl", "failed")},
                          "total_seconds": total})
        print(f"build: {'FAILED' if failed else 'done'} in {total:.1f}s; report {args.out / 'report.md'}",
              file=sys.stderr)
        return 1 if failed or failed_required else 0

    return common.run_job("build", body)
