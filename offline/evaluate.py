"""``offline evaluate``: ranking policies scored against the simulator's ground truth, and an
off-policy (IPS) estimate of our policy from the randomized campaign log.

Usage::

    /usr/bin/python3 -m offline evaluate --world DIR [--world DIR ...] [--uplift-model DIR ...]
        --out DIR [--n 3] [--beta 0.1] [--page-views 20000]
    /usr/bin/python3 -m offline evaluate --seeds 7 8 9 --out DIR [--users 50000] [--offers 1000]

``--seeds`` generates one world per seed (``offline synth`` into ``OUT/worlds/seed-S``, reused when
already there with the same size). ``--uplift-model`` (one per world, in order) is an uplift export
directory (``offline uplift --export-dir``: ``uplift_manifest_fragment.json`` + ``models/``), the
``offline uplift --out`` directory holding it in ``bundle/``, or a snapshot bundle (``MANIFEST.json``
with ``models.uplift``; ``--users-jsonl`` when it reads ``retrieval_score`` without a user tower);
without it the models are trained in-process as ``offline build`` does, on the world's bundle
feature schema: the two-tower model (``offline train`` into ``OUT/uplift/<world>/train``, skipped
with ``--no-retrieval``), then ``offline uplift --embeddings-from`` it (``OUT/uplift/<world>/``).
A model whose p1 reads ``retrieval_score`` (docs/models-format.md) is scored with the embeddings
it was trained with: the bundle's own, or the train directory its fragment records (checked
against the recorded fingerprint).

**Page views.** Rows of ``campaign_log.csv`` of the users the uplift job held out
(``hash_fraction(user_id) < --test-fraction``, its split rule), sampled (``--page-views`` per
world): the user, the day, and the request context (channel, device, page). Candidates: every
catalog offer eligible for the page view (active on the day, channel, country, tier audience),
i.e. the service's eligibility filter *without* its top-K retrieval cut (the service filters the
``retrieval_k`` offers nearest the query; ``offline replay --retrieval-k`` measures the gap).

**Policies** (top ``--n`` per page view among the candidates):

===============  ================================================================================
oracle           true EV = true uplift x (margin + beta x true CLV) - true p1 x cost, only EV > 0
ours             model EV = model uplift x (margin + beta x CLV estimate) - model p1 x cost, only
                 EV > min_ev (the service's ROI gate; min_ev = the model's validated policy.min_ev
                 from its bundle or fragment, else 0, or ``--min-ev``; fatigue ignored)
ours_no_gate     (diagnostic) top N by model EV without the gate
uplift_only      (diagnostic) top N by model uplift, only uplift > 0, no economics
response_only    top N by model p1 (the "most likely to redeem" targeting), always N
popularity       top N by redemptions in the log rows of the uplift training users, always N
random           N uniformly random candidates
no_offer         nothing (the reference: 0 incremental profit)
===============  ================================================================================

The value of a policy is the **true incremental profit per 1,000 page views**:
``1000 x mean over page views of sum over the shown offers of the true EV`` with the simulator's
p0/p1 (``offline.world.true_response`` at the page view's day and channel) and the true CLV.
True CLV (per user, at the page-view day): ``margin_rate x true mean spend x expected discounted
purchases over the horizon`` for a user alive at that day (signed up, not yet dropped out): with
purchase rate ``lambda`` per day and dropout probability ``p`` after each purchase, the survival
after ``t`` days is ``exp(-lambda p t)``, so the expected discounted purchases are
``lambda (1 - exp(-(lambda p + rho) H)) / (lambda p + rho)`` (``rho`` the daily discount rate,
``H`` the horizon in days); 0 for a user who has dropped out. The CLV estimate of "ours" is the
BG/NBD + Gamma-Gamma fit of ``offline.clv`` (``fit_bgnbd``, ``fit_gamma_gamma``) on the purchases
before the as-of date, evaluated per page view with ``offline.clv_math.clv`` on the user's
purchases strictly before that day (same margin rate, horizon and discount rate). When the model
is a bundle with a ``clv`` section (``offline export --clv``), ours uses that section's parameters
and valuation instead -- the CLV the service computes; ``offline build`` fits it with this job's
margin rate, horizon and discount rate (``estimate_valuation_matches_truth`` in the output).

**IPS.** On the log rows of the held-out users: the target policy is "ours" restricted to what
the randomized logging policy could do on that row (no offer, or one offer of the row's campaign
eligible for the row), so every action has a logged propensity; it shows its best offer when the
model EV is > min_ev, else nothing. Reward of a row (observed): ``converted x (margin + beta x CLV) -
redeemed x cost`` for the logged offer; a control row values its conversion with the margin of
the offer the target policy would have shown (the EV formula's convention), so the incremental
value is ``V(ours) - V(no offer)`` (:func:`offline.ips.ips_difference`, IPS and self-normalised
IPS with 95% CIs). Conversions are valued with the same true CLV as the truth table, so the
estimate and its truth (``impression rate x true EV`` of the chosen offer, the log's notion of
"assigned") measure the same quantity. The log's own value re-estimated with its own
propensities must equal its mean reward (checked and reported).

The headline estimate is **doubly robust** (:func:`offline.ips.dr_difference`): the reward model
is the uplift model itself (p0, p1 of the offer, the channel's impression rate observed in the
log, conversions valued as in the reward), and the standard error is the larger of the sample
one and the design variance the reward model predicts for every row. Why: ours shows one offer
out of the campaign's 60-120, so only ~1% of the treated rows carry its weight (weights ~60-130),
and the reward is heavy-tailed (a conversion is worth ``beta x CLV``, up to ~140); the sample
standard deviation of so few large terms is mostly too small, and the plain IPS interval missed
the truth on 2 of 12 worlds (seed 9 at 50,000 users: 1,077 [474, 1,679] vs a truth of 81; a
Monte Carlo over re-drawn assignments and outcomes of the same rows gives the IPS interval
~90% coverage). The DR interval covered the truth on all 12 worlds checked (README). The
intervals are wide (+-300 to +-700 per 1,000 rows against truths of -80 to +120): the log
cannot tell ours' value from 0; that is the honest answer at this log size. IPS and SNIPS are
still reported.

Outputs in ``--out``: ``evaluate.json`` (every number, per world and averaged),
``evaluate.md`` (tables), ``evaluate.png`` (bar chart with 95% error bars). Bad input exits 2 with a
message naming the file, column and problem.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from offline import common
from offline.ips import DREstimate, IPSEstimate, dr_difference, ips_difference, ips_value

POLICIES: tuple[str, ...] = ("oracle", "ours", "ours_no_gate", "uplift_only", "response_only", "popularity",
                             "random", "no_offer")
HEADLINE: tuple[str, ...] = ("oracle", "ours", "response_only", "popularity", "random", "no_offer")
LOG_COLUMNS: tuple[str, ...] = ("user_id", "campaign_id", "day", "offer_id", "treated", "propensity", "channel",
                                "device", "page", "impression", "redeemed", "converted")
OFFER_FIELDS: tuple[str, ...] = ("offer_id", "category", "type", "margin", "cost")
TARGET_VS_RESPONSE = 1.2
TARGET_VS_POPULARITY = 1.5


@dataclass(frozen=True)
class EvalConfig:
    """Policy and valuation parameters (CLI flags)."""

    n: int = 3
    beta: float = 0.1
    page_views: int = 20_000
    test_fraction: float = 0.3
    clv_margin: float = 0.2
    clv_horizon_weeks: float = 52.0
    annual_discount_rate: float = 0.10
    chunk: int = 500
    seed: int = 0
    min_ev: float | None = None  # ROI gate of "ours"; None = the model's policy.min_ev (else 0)
    users_jsonl: str | None = None  # stored user embeddings of a bundle without a user tower


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class UpliftHeads:
    """An exported uplift model read back with plain numpy (docs/models-format.md)."""

    source: Path
    sections: dict[str, list[Any]]  # section -> [FeatureSpec]
    p0_inputs: list[str]
    p1_inputs: list[str]
    p0_layers: list[Any]
    p1_layers: list[Any]
    feature_schema_id: str
    policy: dict[str, Any] = field(default_factory=dict)  # the bundle's / fragment's policy defaults
    retrieval: dict[str, Any] | None = None  # the fragment's embeddings record (source, fingerprint)
    clv: dict[str, Any] | None = None  # a bundle's MANIFEST "clv" section (the CLV the service computes)

    @property
    def bundle_root(self) -> Path | None:
        """The bundle directory when the model was read from a MANIFEST.json."""
        return self.source.parent if self.source.name == "MANIFEST.json" else None

    def min_ev(self, override: float | None) -> float:
        return float(override) if override is not None else float(self.policy.get("min_ev", 0.0))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise common.JobError(f"{path}: cannot read JSON: {exc}") from exc


def load_uplift_model(path: Path) -> UpliftHeads:
    """Read the ``uplift`` model of an export directory, an uplift --out directory or a bundle."""
    from offline.uplift import load_mlp
    from offline.uplift_models import FeatureSpec

    if not path.exists():
        raise common.JobError(f"{path}: uplift model not found")
    candidates: list[Path] = []
    if (path / "MANIFEST.json").is_file():
        candidates.append(path / "MANIFEST.json")
    for d in (path, path / "bundle"):
        if d.is_dir():
            candidates += sorted(d.glob("*manifest_fragment.json"))
    doc, where = None, None
    for c in candidates:
        d = _read_json(c)
        if isinstance(d, dict) and isinstance(d.get("models"), dict) and "uplift" in d["models"]:
            doc, where = d, c
            break
    if doc is None or where is None:
        raise common.JobError(f"{path}: no MANIFEST.json or *manifest_fragment.json with a models.uplift entry")
    root = where.parent
    try:
        spec = doc["models"]["uplift"]
        schema = doc["feature_schema"]
        sections: dict[str, list[Any]] = {}
        for name, sec in spec["inputs"].items():
            feats = schema["features"] if name == "user" else sec["features"]
            sections[name] = [FeatureSpec.from_json(f) for f in feats]
        heads = spec["heads"]
        p0_layers = load_mlp(heads["p0"], root)
        p1_layers = load_mlp(heads["p1"], root)
        return UpliftHeads(where, sections, list(heads["p0"]["inputs"]), list(heads["p1"]["inputs"]), p0_layers,
                           p1_layers, str(schema.get("id", "")), dict(doc.get("policy") or {}),
                           doc.get("retrieval"), doc.get("clv") if isinstance(doc.get("clv"), dict) else None)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise common.JobError(f"{where}: bad uplift model spec: {type(exc).__name__}: {exc}") from exc


@dataclass
class World:
    """What evaluation reads from a world directory (data files + ground truth)."""

    directory: Path
    data: Any  # offline.export.WorldData (users, transactions, offers, as_of_day)
    user_table: pd.DataFrame  # raw user features by feature name
    offer_frame: pd.DataFrame  # offer_id, category, type, margin, cost (catalog order)
    log: pd.DataFrame  # campaign_log.csv with user/offer indices and day numbers
    truth: Any  # offline.world.GroundTruth


def _read_log(path: Path, user_ids: np.ndarray, offer_ids: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise common.JobError(f"{path}: file not found")
    try:
        log = pd.read_csv(path, dtype={"user_id": str, "offer_id": str, "day": str, "campaign_id": str},
                          keep_default_na=False, na_values=[])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise common.JobError(f"{path}: cannot parse CSV: {exc}") from exc
    missing = [c for c in LOG_COLUMNS if c not in log.columns]
    if missing:
        raise common.JobError(f"{path}: missing column(s) {', '.join(missing)}")
    if log.empty:
        raise common.JobError(f"{path}: no data rows")
    for col in ("treated", "impression", "redeemed", "converted"):
        v = pd.to_numeric(log[col], errors="coerce")
        bad = ~v.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise common.JobError(f"{path}: column {col}: expected 0/1, got {log[col].iloc[row]!r} "
                                  f"on data row {row + 1}")
        log[col] = v.astype(np.int64)
    prop = pd.to_numeric(log["propensity"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~((prop > 0) & (prop <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise common.JobError(f"{path}: column propensity: must be in (0, 1], got {log['propensity'].iloc[row]!r} "
                              f"on data row {row + 1}")
    log["propensity"] = prop
    user = pd.Index(user_ids).get_indexer(log["user_id"])
    if (user < 0).any():
        raise common.JobError(f"{path}: column user_id: {log['user_id'].iloc[int(np.flatnonzero(user < 0)[0])]!r} "
                              f"not in users.csv")
    treated = log["treated"].to_numpy() == 1
    offer = pd.Index(offer_ids).get_indexer(log["offer_id"])
    if (treated & (offer < 0)).any():
        row = int(np.flatnonzero(treated & (offer < 0))[0])
        raise common.JobError(f"{path}: column offer_id: {log['offer_id'].iloc[row]!r} on treated data row {row + 1} "
                              f"not in offers.jsonl")
    log["user"] = user.astype(np.int64)
    log["offer"] = np.where(treated, offer, -1).astype(np.int64)
    log["day_num"] = common.days_from_iso(log["day"].to_numpy(dtype=str), f"{path}: column day")
    return log


def read_world(world_dir: Path) -> World:
    """Read and check a synthetic world directory (errors name the file and column)."""
    from offline import export
    from offline.world import load_ground_truth

    data = export.read_world(world_dir, None, need_campaigns=False)
    table, _kinds = export.user_feature_table(data)
    offer_ids = [str(o["offer_id"]) for o in data.offers]
    offer_frame = pd.DataFrame({f: [o.get(f) for o in data.offers] for f in OFFER_FIELDS})
    for f in ("margin", "cost"):
        v = pd.to_numeric(offer_frame[f], errors="coerce")
        if v.isna().any():
            raise common.JobError(f"{world_dir / 'offers.jsonl'}: field {f}: non-numeric value on line "
                                  f"{int(np.flatnonzero(v.isna().to_numpy())[0]) + 1}")
        offer_frame[f] = v.astype(np.float64)
    log = _read_log(world_dir / "campaign_log.csv", data.users["user_id"].astype(str).to_numpy(), offer_ids)
    truth = load_ground_truth(world_dir)
    if truth.num_users != len(data.users) or truth.num_offers != len(data.offers):
        raise common.JobError(f"{world_dir / 'ground_truth'}: {truth.num_users} users / {truth.num_offers} offers, "
                              f"the data files have {len(data.users)} / {len(data.offers)}")
    return World(world_dir, data, table, offer_frame, log, truth)


# ---------------------------------------------------------------------------------------------
# models: uplift heads over candidate sets, CLV


def _section_frames(world: World, rows: pd.DataFrame, purchases: pd.DataFrame) -> dict[str, Any]:
    users = world.user_table.iloc[rows["user"].to_numpy()].reset_index(drop=True)
    context = rows[["channel", "device", "page"]].reset_index(drop=True).astype(object)
    return {"user": users, "purchases": purchases.reset_index(drop=True), "context": context}


def model_embeddings(model: UpliftHeads, world: World, users_jsonl: str | None) -> Any:
    """The embeddings behind the model's ``retrieval`` section: the bundle's own (a model read
    from a MANIFEST.json), else the ``--embeddings-from`` directory its uplift export recorded,
    checked against the recorded fingerprint. None when the model has no retrieval section."""
    from offline import retrieval

    if "retrieval" not in model.sections:
        return None
    user_ids = world.data.users["user_id"].astype(str).tolist()
    if model.bundle_root is not None:
        return retrieval.load_embeddings(model.bundle_root, user_ids, users_jsonl)
    record = model.retrieval or {}
    if not record.get("source"):
        raise common.JobError(f"{model.source}: the model reads a retrieval_score but its fragment records no "
                              f"embeddings source; evaluate the bundle it was exported into instead")
    source = model.source.parent / record["source"]  # relative to the fragment (or an absolute path)
    emb = retrieval.load_embeddings(source, user_ids, users_jsonl)
    want = {k: v for k, v in record.items() if k != "source"}
    if emb.fingerprint() != want:
        raise common.JobError(f"{model.source}: the embeddings in {record['source']} changed since the model "
                              f"was trained")
    return emb


def retrieval_matrix(emb: Any, world: World, rows: pd.DataFrame, offers: np.ndarray | None = None) -> np.ndarray:
    """Retrieval scores [rows, offers] of the page views' queries (user features + context)."""
    users = world.user_table.iloc[rows["user"].to_numpy()].reset_index(drop=True)
    context = rows[["channel", "device", "page"]].reset_index(drop=True).astype(object)
    queries = emb.queries(users, context, rows["user"].to_numpy())
    return emb.score_matrix(queries, offers)


def uplift_scores(model: UpliftHeads, frames: Mapping[str, Any], n_rows: int,
                  offer_frame: pd.DataFrame, retrieval_scores: np.ndarray | None = None,
                  allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(p0 [rows], p1 [rows, offers]) of every row against every catalog offer.

    The p1 head's first layer is split into the offer columns, the retrieval column (with
    ``retrieval_scores`` [rows, offers], the raw scores) and the others, so the offer part is
    computed once per offer and added (the sum equals the dense layer). With ``allowed``
    (bool [rows, offers]) the later layers run only on those pairs; the others get NaN."""
    from offline.uplift_models import apply_activation, encode_section, mlp_forward

    enc = {sec: encode_section(specs, frames.get(sec, {}), n_rows) for sec, specs in model.sections.items()
           if sec not in ("offer", "retrieval")}
    if "offer" in model.sections:
        enc_offer = encode_section(model.sections["offer"], offer_frame, len(offer_frame))
    else:
        enc_offer = np.zeros((len(offer_frame), 0), np.float32)
    p0 = mlp_forward(model.p0_layers, np.concatenate([enc[s] for s in model.p0_inputs], axis=1)).reshape(-1)
    first, rest = model.p1_layers[0], model.p1_layers[1:]
    cols, pos = {}, 0
    for sec in model.p1_inputs:
        width = (enc_offer.shape[1] if sec == "offer" else 1 if sec == "retrieval" else enc[sec].shape[1])
        cols[sec] = slice(pos, pos + width)
        pos += width
    row_part = sum((enc[s] @ first.weight[:, cols[s]].T for s in model.p1_inputs if s not in ("offer", "retrieval")),
                   start=np.zeros((n_rows, first.weight.shape[0]), np.float32))
    offer_part = (enc_offer @ first.weight[:, cols["offer"]].T if "offer" in cols
                  else np.zeros((len(offer_frame), first.weight.shape[0]), np.float32))
    z = (row_part[:, None, :] + offer_part[None, :, :] + first.bias).astype(np.float32)
    if "retrieval" in cols:
        if retrieval_scores is None:
            raise ValueError("the model reads retrieval_score: give retrieval_scores")
        (spec,) = model.sections["retrieval"]
        r = np.asarray(retrieval_scores, dtype=np.float64)
        if spec.transform == "log1p":
            r = np.where(r > -1.0, np.log1p(np.where(r > -1.0, r, 0.0)), np.nan)
        r = (r - spec.mean) / spec.std
        r = np.where(np.isfinite(r), r, 0.0).astype(np.float32)
        z = (z + r[:, :, None] * first.weight[:, cols["retrieval"]].reshape(-1)).astype(np.float32)
    h = apply_activation(z, first.activation)
    if allowed is not None:
        h = h[allowed]
    for layer in rest:
        h = apply_activation((h @ layer.weight.T + layer.bias).astype(np.float32), layer.activation)
    if allowed is not None:
        p1 = np.full(allowed.shape, np.nan)
        p1[allowed] = h[..., 0]
        return p0.astype(np.float64), p1
    return p0.astype(np.float64), h[..., 0].astype(np.float64)


@dataclass
class ClvModel:
    """Fitted BG/NBD + Gamma-Gamma parameters and the valuation settings."""

    params: dict[str, float]
    margin: float
    horizon_weeks: float
    annual_discount_rate: float
    fit: dict[str, Any] = field(default_factory=dict)

    def value(self, purchases: pd.DataFrame) -> np.ndarray:
        """CLV per row from the point-in-time purchase features (days before the row's day)."""
        from offline import clv_math

        has = purchases["has_purchases"].to_numpy(dtype=np.float64) > 0
        x = np.where(has, np.nan_to_num(purchases["repeat_days"].to_numpy(dtype=np.float64)), 0.0)
        first = np.nan_to_num(purchases["days_since_first"].to_numpy(dtype=np.float64))
        last = np.nan_to_num(purchases["days_since_last"].to_numpy(dtype=np.float64))
        T = np.where(has, first / 7.0, 0.0)
        t_x = np.where(has, (first - last) / 7.0, 0.0)
        m_x = np.where(x > 0, np.nan_to_num(purchases["repeat_spend_mean"].to_numpy(dtype=np.float64)), 0.0)
        p = self.params
        return clv_math.clv(self.horizon_weeks, p["r"], p["alpha"], p["a"], p["b"], p["p"], p["q"], p["v"],
                            x, t_x, T, m_x, self.margin, self.annual_discount_rate)


def fit_clv(world: World, cfg: EvalConfig) -> ClvModel:
    """BG/NBD + Gamma-Gamma on the purchases before the as-of date (offline.clv's fitters)."""
    return fit_clv_data(world.data, cfg.clv_margin, cfg.clv_horizon_weeks, cfg.annual_discount_rate)


def bundle_clv(spec: Mapping[str, Any]) -> ClvModel:
    """The CLV model of a bundle's MANIFEST ``clv`` section: what the service computes per user."""
    try:
        params = {k: float(spec[k]) for k in ("r", "alpha", "a", "b", "p", "q", "v")}
        return ClvModel(params, float(spec.get("margin", 0.3)), float(spec.get("horizon_weeks", 52.0)),
                        float(spec.get("annual_discount_rate", 0.1)), {"source": "bundle manifest", "time_unit": "weeks"})
    except (KeyError, TypeError, ValueError) as exc:
        raise common.JobError(f"bad clv section in the bundle manifest: {type(exc).__name__}: {exc}") from exc


def fit_clv_data(data: Any, margin: float = 0.2, horizon_weeks: float = 52.0,
                 annual_discount_rate: float = 0.10) -> ClvModel:
    """:func:`fit_clv` on an ``offline.export.WorldData`` (users, transactions, as_of_day)."""
    from offline import clv as clv_job
    from offline import export

    base = export.purchase_base(data)
    has = base.has
    end = data.as_of_day - 1  # last observed day (purchases strictly before as-of)
    x = base.repeat_days[has].astype(np.float64)
    t_x = (base.last_day[has] - base.first_day[has]) / 7.0
    T = (end - base.first_day[has]) / 7.0
    bg = clv_job.fit_bgnbd(x, t_x, T)
    rep = x > 0
    m_x = base.repeat_spend_sum[has][rep] / x[rep]
    ok = m_x > 0
    gg = clv_job.fit_gamma_gamma(x[rep][ok], m_x[ok])
    params = {**bg.params, **gg.params}
    return ClvModel(params, margin, horizon_weeks, annual_discount_rate,
                    {"bgnbd_customers": bg.n_customers, "gamma_gamma_customers": gg.n_customers,
                     "warnings": bg.warnings + gg.warnings, "time_unit": "weeks"})


def true_clv(truth: Any, user: np.ndarray, day: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    """Expected discounted margin over the horizon from the latent parameters (see the docstring)."""
    lam = truth.user_lambda[user]
    p = truth.user_dropout_p[user]
    alive = (truth.user_signup_time[user] < day) & (truth.user_death_time[user] > day)
    rho = math.log1p(cfg.annual_discount_rate) / 365.25
    horizon = cfg.clv_horizon_weeks * 7.0
    k = lam * p + rho
    purchases = lam * -np.expm1(-k * horizon) / k
    return cfg.clv_margin * truth.user_mean_spend[user] * purchases * alive


def _purchase_frame(world: World, user: np.ndarray, day: np.ndarray) -> pd.DataFrame:
    from offline import uplift

    try:
        return uplift.purchase_features(world.directory / "transactions.csv", world.data.users["user_id"].astype(str),
                                        user, day.astype(np.float64))
    except uplift.InputError as exc:
        raise common.JobError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# policies


def top_n(scores: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Indices [rows, n] of the n best allowed candidates per row; -1 where fewer are allowed.
    Ties go to the lower offer index (stable)."""
    s = np.where(allowed, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :n]
    picked = np.take_along_axis(s, order, axis=1)
    return np.where(np.isfinite(picked), order, -1)


def slate_sums(choice: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """Per row, the sum of each [rows, offers] array over the chosen offers (-1 = empty slot)."""
    safe = np.maximum(choice, 0)
    used = choice >= 0
    return [np.where(used, np.take_along_axis(v, safe, axis=1), 0.0).sum(axis=1) for v in values]


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


class _Diagnostics:
    """How well the uplift model's numbers match the truth over the eligible (page view, offer)
    pairs: correlations, calibration of the top decile, and what the ROI gate lets through."""

    def __init__(self) -> None:
        self.moments: dict[str, np.ndarray] = {}
        self.model_uplift: list[np.ndarray] = []
        self.true_uplift: list[np.ndarray] = []
        self.picks: dict[str, list[np.ndarray]] = {"ours": [], "oracle": []}

    def _moments(self, key: str, x: np.ndarray, y: np.ndarray) -> None:
        m = np.array([x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])
        self.moments[key] = self.moments.get(key, 0) + m

    def add(self, allowed: np.ndarray, model_uplift: np.ndarray, true_uplift: np.ndarray, ev_model: np.ndarray,
            ev_true: np.ndarray, ours: np.ndarray, oracle: np.ndarray) -> None:
        self._moments("uplift", model_uplift[allowed], true_uplift[allowed])
        self._moments("ev", ev_model[allowed], ev_true[allowed])
        self.model_uplift.append(model_uplift[allowed][::7])  # a deterministic subsample for deciles
        self.true_uplift.append(true_uplift[allowed][::7])
        for name, choice in (("ours", ours), ("oracle", oracle)):
            used = choice >= 0
            rows = np.nonzero(used)[0]
            cols = choice[used]
            self.picks[name].append(np.stack([ev_true[rows, cols], true_uplift[rows, cols],
                                              model_uplift[rows, cols]], axis=1))

    @staticmethod
    def _corr(m: np.ndarray) -> float | None:
        n, sx, sy, sxx, syy, sxy = m
        vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
        return float((sxy / n - sx * sy / n ** 2) / math.sqrt(vx * vy)) if vx > 0 and vy > 0 else None

    def result(self) -> dict[str, Any]:
        mu, tu = np.concatenate(self.model_uplift), np.concatenate(self.true_uplift)
        top = mu >= np.quantile(mu, 0.9) if mu.size else np.zeros(0, bool)
        out: dict[str, Any] = {
            "pairs": int(self.moments["uplift"][0]),
            "corr_model_vs_true_uplift": self._corr(self.moments["uplift"]),
            "corr_model_vs_true_ev": self._corr(self.moments["ev"]),
            "mean_true_uplift": float(tu.mean()) if tu.size else None,
            "top_decile_by_model_uplift": {"mean_model_uplift": float(mu[top].mean()) if top.any() else None,
                                           "mean_true_uplift": float(tu[top].mean()) if top.any() else None},
        }
        for name, parts in self.picks.items():
            picks = np.concatenate(parts) if parts else np.zeros((0, 3))
            out[f"{name}_picks"] = {
                "offers": int(picks.shape[0]),
                "share_with_true_ev_above_0": float((picks[:, 0] > 0).mean()) if picks.size else None,
                "mean_true_ev": float(picks[:, 0].mean()) if picks.size else None,
                "mean_true_uplift": float(picks[:, 1].mean()) if picks.size else None,
                "mean_model_uplift": float(picks[:, 2].mean()) if picks.size else None}
        return out


def evaluate_world(world: World, model: UpliftHeads, cfg: EvalConfig) -> dict[str, Any]:
    """Policy values on the page views of one world, and the IPS comparison."""
    from offline import train
    from offline.uplift import hash_fraction
    from offline.world import true_response

    started = time.perf_counter()
    log = world.log
    users = world.data.users
    heldout_user = hash_fraction(users["user_id"].astype(str)) < cfg.test_fraction
    in_heldout = heldout_user[log["user"].to_numpy()]
    if not in_heldout.any():
        raise common.JobError(f"{world.directory / 'campaign_log.csv'}: no rows of held-out users "
                              f"(hash_fraction(user_id) < {cfg.test_fraction})")
    rng = np.random.default_rng(cfg.seed)
    heldout_rows = np.flatnonzero(in_heldout)
    pv_rows = np.sort(rng.choice(heldout_rows, size=min(cfg.page_views, heldout_rows.size), replace=False))
    pv = log.iloc[pv_rows].reset_index(drop=True)
    # ours values conversions with the CLV the service computes: the bundle's clv section when the
    # model comes from a bundle that has one, else a fit on the world (the same fitters)
    clv_model = bundle_clv(model.clv) if model.clv else fit_clv(world, cfg)
    margin = world.offer_frame["margin"].to_numpy()
    cost = world.offer_frame["cost"].to_numpy()
    num_offers = len(world.offer_frame)

    # popularity: redemptions among the rows of the uplift training users
    train_rows = (~in_heldout) & (log["treated"].to_numpy() == 1)
    redemptions = np.bincount(log["offer"].to_numpy()[train_rows], weights=log["redeemed"].to_numpy()[train_rows],
                              minlength=num_offers)
    popularity = redemptions - np.arange(num_offers) * 1e-9  # ties: catalog order
    country = users["country"].astype(str).to_numpy() if "country" in users else np.full(len(users), "")
    tier = users["tier"].astype(str).to_numpy() if "tier" in users else np.full(len(users), "")

    emb = model_embeddings(model, world, cfg.users_jsonl)
    min_ev = model.min_ev(cfg.min_ev)
    sums = {p: {"value": [], "slate": [], "uplift": [], "cost": []} for p in POLICIES}
    diag = _Diagnostics()
    clv_hat_all, clv_true_all, n_cand = [], [], []
    purchases_all = _purchase_frame(world, pv["user"].to_numpy(), pv["day_num"].to_numpy())
    for start in range(0, len(pv), cfg.chunk):
        rows = pv.iloc[start:start + cfg.chunk].reset_index(drop=True)
        u = rows["user"].to_numpy()
        d = rows["day_num"].to_numpy()
        ch = rows["channel"].astype(str).to_numpy()
        purchases = purchases_all.iloc[start:start + cfg.chunk].reset_index(drop=True)
        clv_hat = clv_model.value(purchases)
        clv_t = true_clv(world.truth, u, d.astype(np.float64), cfg)
        clv_hat_all.append(clv_hat)
        clv_true_all.append(clv_t)
        allowed = train.eligibility(world.data.offers, country[u], tier[u], d.astype(np.float64), ch)
        n_cand.append(allowed.sum(axis=1))
        tp0, tp1 = true_response(world.truth, u[:, None], np.arange(num_offers)[None, :],
                                 {"day": d[:, None].astype(np.float64), "channel": ch[:, None]})
        rscore = retrieval_matrix(emb, world, rows) if emb is not None else None
        p0, p1 = uplift_scores(model, _section_frames(world, rows, purchases), len(rows), world.offer_frame,
                               rscore, allowed)
        true_uplift = tp1 - tp0
        ev_true = true_uplift * (margin[None, :] + cfg.beta * clv_t[:, None]) - tp1 * cost[None, :]
        ev_model = (p1 - p0[:, None]) * (margin[None, :] + cfg.beta * clv_hat[:, None]) - p1 * cost[None, :]
        redeem_cost = tp1 * cost[None, :]
        choices = {
            "oracle": top_n(ev_true, allowed & (ev_true > 0), cfg.n),
            "ours": top_n(ev_model, allowed & (ev_model > min_ev), cfg.n),
            "ours_no_gate": top_n(ev_model, allowed, cfg.n),
            "uplift_only": top_n(p1 - p0[:, None], allowed & (p1 > p0[:, None]), cfg.n),
            "response_only": top_n(p1, allowed, cfg.n),
            "popularity": top_n(np.broadcast_to(popularity, allowed.shape), allowed, cfg.n),
            "random": top_n(rng.random(allowed.shape), allowed, cfg.n),
            "no_offer": np.full((len(rows), cfg.n), -1),
        }
        for name, choice in choices.items():
            value, lift, spent = slate_sums(choice, ev_true, true_uplift, redeem_cost)
            sums[name]["value"].append(value)
            sums[name]["uplift"].append(lift)
            sums[name]["cost"].append(spent)
            sums[name]["slate"].append((choice >= 0).sum(axis=1).astype(np.float64))
        diag.add(allowed, p1 - p0[:, None], true_uplift, ev_model, ev_true, choices["ours"], choices["oracle"])

    policies: dict[str, Any] = {}
    for name in POLICIES:
        value = np.concatenate(sums[name]["value"])
        mean, se = _mean_se(value)
        policies[name] = {
            "profit_per_1000": 1000.0 * mean, "se_per_1000": 1000.0 * se,
            "incremental_conversions_per_1000": 1000.0 * float(np.concatenate(sums[name]["uplift"]).mean()),
            "redemption_cost_per_1000": 1000.0 * float(np.concatenate(sums[name]["cost"]).mean()),
            "mean_slate_size": float(np.concatenate(sums[name]["slate"]).mean()),
        }
    oracle = policies["oracle"]["profit_per_1000"]
    for name in POLICIES:
        policies[name]["share_of_oracle"] = policies[name]["profit_per_1000"] / oracle if oracle > 0 else None
    clv_hat_cat, clv_true_cat = np.concatenate(clv_hat_all), np.concatenate(clv_true_all)
    result = {
        "world": str(world.directory), "uplift_model": str(model.source), "min_ev": min_ev,
        "retrieval_feature": None if emb is None else {"query": emb.query, "source": str(emb.source)},
        "page_views": int(len(pv)), "heldout_log_rows": int(heldout_rows.size),
        "mean_candidates": float(np.concatenate(n_cand).mean()),
        "policies": policies,
        "uplift_model_diagnostics": diag.result(),
        "clv": {"params": clv_model.params, "fit": clv_model.fit, "margin_rate": cfg.clv_margin,
                "horizon_weeks": cfg.clv_horizon_weeks, "annual_discount_rate": cfg.annual_discount_rate,
                "estimate_valuation": {"margin_rate": clv_model.margin, "horizon_weeks": clv_model.horizon_weeks,
                                       "annual_discount_rate": clv_model.annual_discount_rate},
                "estimate_valuation_matches_truth": bool(
                    math.isclose(clv_model.margin, cfg.clv_margin)
                    and math.isclose(clv_model.horizon_weeks, cfg.clv_horizon_weeks)
                    and math.isclose(clv_model.annual_discount_rate, cfg.annual_discount_rate)),
                "mean_estimate": float(clv_hat_cat.mean()), "mean_true": float(clv_true_cat.mean()),
                "corr_estimate_true": float(np.corrcoef(clv_hat_cat, clv_true_cat)[0, 1])
                if clv_hat_cat.std() > 0 and clv_true_cat.std() > 0 else None},
    }
    result["ips"] = ips_comparison(world, model, clv_model, cfg, heldout_rows, country, tier, emb, min_ev)
    result["seconds"] = round(time.perf_counter() - started, 2)  # popped by run(): stderr only
    return result


def campaign_action_sets(log: pd.DataFrame, num_offers: int) -> np.ndarray:
    """bool [campaigns, offers] in ``pd.factorize(log.campaign_id)`` order: the offers each
    campaign randomized over (those seen on its treated rows)."""
    codes, names = pd.factorize(log["campaign_id"].astype(str))
    treated = log["treated"].to_numpy() == 1
    sets = np.zeros((len(names), num_offers), dtype=bool)
    sets[codes[treated], log["offer"].to_numpy()[treated]] = True
    return sets


def ips_comparison(world: World, model: UpliftHeads, clv_model: ClvModel, cfg: EvalConfig,
                   rows_idx: np.ndarray, country: np.ndarray, tier: np.ndarray, emb: Any = None,
                   min_ev: float = 0.0) -> dict[str, Any]:
    """IPS / SNIPS estimate of ours' incremental value on the logged rows vs the truth."""
    from offline import train
    from offline.world import true_response

    log = world.log
    margin = world.offer_frame["margin"].to_numpy()
    cost = world.offer_frame["cost"].to_numpy()
    num_offers = len(world.offer_frame)
    imp_rate = dict(world.truth.response.impression_rate)
    rewards, mu, target, baseline, logged_reward, truth_value = [], [], [], [], [], []
    q_logged, q_target, q_baseline, model_var = [], [], [], []
    consistent, treated_total = 0, 0
    action_sets = campaign_action_sets(log, num_offers)
    codes = pd.factorize(log["campaign_id"].astype(str))[0]
    # observable design quantities of the log: each campaign's control probability (the logged
    # propensity of its control rows) and each channel's impression rate among treated rows
    is_treated = log["treated"].to_numpy() == 1
    control_prob = pd.Series(log["propensity"].to_numpy()[~is_treated]).groupby(codes[~is_treated]).median()
    control_prob = control_prob.reindex(range(codes.max() + 1)).to_numpy()
    shown_rate = log[is_treated].groupby("channel")["impression"].mean().to_dict()
    rows_idx = rows_idx[np.argsort(codes[rows_idx], kind="stable")]  # one campaign's offers per chunk
    purchases_all = _purchase_frame(world, log["user"].to_numpy()[rows_idx], log["day_num"].to_numpy()[rows_idx])
    bounds = np.flatnonzero(np.diff(codes[rows_idx])) + 1
    chunks = [c[i:i + cfg.chunk] for c in np.split(np.arange(rows_idx.size), bounds)
              for i in range(0, len(c), cfg.chunk)]
    for positions in chunks:
        idx = rows_idx[positions]
        rows = log.iloc[idx].reset_index(drop=True)
        u = rows["user"].to_numpy()
        d = rows["day_num"].to_numpy()
        ch = rows["channel"].astype(str).to_numpy()
        purchases = purchases_all.iloc[positions].reset_index(drop=True)
        clv_hat = clv_model.value(purchases)
        clv_t = true_clv(world.truth, u, d.astype(np.float64), cfg)
        offers = np.flatnonzero(action_sets[codes[idx[0]]])  # the campaign's offers
        actions = train.eligibility([world.data.offers[o] for o in offers], country[u], tier[u], None, ch)
        if offers.size:
            rscore = retrieval_matrix(emb, world, rows, offers) if emb is not None else None
            p0, p1 = uplift_scores(model, _section_frames(world, rows, purchases), len(rows),
                                   world.offer_frame.iloc[offers].reset_index(drop=True), rscore)
            ev_model = ((p1 - p0[:, None]) * (margin[offers][None, :] + cfg.beta * clv_hat[:, None])
                        - p1 * cost[offers][None, :])
            pick = top_n(ev_model, actions & (ev_model > min_ev), 1)[:, 0]
            best = np.where(pick >= 0, offers[np.maximum(pick, 0)], -1)  # -1 = no offer
            column = {int(o): j for j, o in enumerate(offers)}
            logged_col = np.array([column.get(int(x), 0) for x in rows["offer"].to_numpy()])
            p1_best = p1[np.arange(len(rows)), np.maximum(pick, 0)]
            p1_logged = p1[np.arange(len(rows)), logged_col]
        else:
            best = np.full(len(rows), -1)
            p0 = p1_best = p1_logged = np.zeros(len(rows))
        treated = rows["treated"].to_numpy() == 1
        a = rows["offer"].to_numpy()
        conv = rows["converted"].to_numpy().astype(np.float64)
        red = rows["redeemed"].to_numpy().astype(np.float64)
        value_of_conversion = cfg.beta * clv_t
        a_safe = np.maximum(a, 0)
        best_safe = np.maximum(best, 0)
        r_treated = conv * (margin[a_safe] + value_of_conversion) - red * cost[a_safe]
        r_control = conv * (np.where(best >= 0, margin[best_safe], 0.0) + value_of_conversion)
        rewards.append(np.where(treated, r_treated, r_control))
        logged_reward.append(np.where(treated, r_treated, conv * value_of_conversion))
        mu.append(rows["propensity"].to_numpy())
        target.append(np.where(treated, (a == best).astype(np.float64), (best < 0).astype(np.float64)))
        baseline.append((~treated).astype(np.float64))
        # reward model for the doubly robust estimate: the uplift model's p0 / p1 with the observed
        # impression rate of the channel, conversions valued as in the reward
        shown = np.array([shown_rate.get(c, 1.0) for c in ch])
        value_best = np.where(best >= 0, margin[best_safe], 0.0) + value_of_conversion
        value_logged = margin[a_safe] + value_of_conversion

        def q_offer(p1_o: np.ndarray, value: np.ndarray, o_cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p_conv, p_red = shown * p1_o + (1 - shown) * p0, shown * p1_o
            mean = p_conv * value - p_red * o_cost
            second = p_conv * value ** 2 - 2 * p_red * value * o_cost + p_red * o_cost ** 2
            return mean, np.maximum(second - mean ** 2, 0.0)

        q_none = p0 * value_best
        q_best, var_best = q_offer(p1_best, value_best, cost[best_safe])
        q_log, _ = q_offer(p1_logged, value_logged, cost[a_safe])
        q_logged.append(np.where(treated, q_log, q_none))
        q_target.append(np.where(best >= 0, q_best, q_none))
        q_baseline.append(q_none)
        pc = control_prob[codes[idx]]
        n_actions = np.maximum(actions.sum(axis=1), 1)
        mu_best = np.where(treated, rows["propensity"].to_numpy(), (1 - pc) / n_actions)
        model_var.append(np.where(best >= 0, var_best / mu_best + p0 * (1 - p0) * value_best ** 2 / pc, 0.0))
        # truth: the chosen offer's true EV, times the chance it is actually shown on that channel
        tp0, tp1 = true_response(world.truth, u, best_safe, {"day": d.astype(np.float64), "channel": ch})
        ev = (tp1 - tp0) * (margin[best_safe] + value_of_conversion) - tp1 * cost[best_safe]
        rate = np.array([imp_rate.get(c, 1.0) for c in ch])
        truth_value.append(np.where(best >= 0, rate * ev, 0.0))
        # does the reconstructed action set match the logged propensities? (treated: (1 - pc) / n)
        implied = rows["propensity"].to_numpy()[treated] * actions[treated].sum(axis=1)
        treated_total += int(treated.sum())
        camp = rows["campaign_id"].to_numpy()[treated]
        for c in np.unique(camp):
            v = implied[camp == c]
            consistent += int((np.abs(v - np.median(v)) < 1e-3).sum())
    r, m, t, b = (np.concatenate(x) for x in (rewards, mu, target, baseline))
    incremental = ips_difference(r, m, t, b)
    dr = dr_difference(r, m, t, b, np.concatenate(q_logged), np.concatenate(q_target), np.concatenate(q_baseline),
                       np.concatenate(model_var))
    logged = np.concatenate(logged_reward)
    own = ips_value(logged, m, m)
    truth_arr = np.concatenate(truth_value)
    truth_mean, truth_se = _mean_se(truth_arr)

    def per_1000(e: IPSEstimate) -> dict[str, Any]:
        return {"ips": 1000 * e.estimate, "ips_ci": [1000 * e.ci_low, 1000 * e.ci_high],
                "snips": 1000 * e.snips, "snips_ci": [1000 * e.snips_ci_low, 1000 * e.snips_ci_high],
                "rows": e.n, "rows_with_weight": e.matched, "effective_sample_size": e.effective_sample_size,
                "max_weight": e.max_weight}

    def dr_per_1000(e: DREstimate) -> dict[str, Any]:
        return {"dr": 1000 * e.estimate, "dr_ci": [1000 * e.ci_low, 1000 * e.ci_high],
                "std_error": 1000 * e.std_error, "sample_std_error": 1000 * e.sample_std_error,
                "model_std_error": None if e.model_std_error is None else 1000 * e.model_std_error,
                "direct": 1000 * e.direct, "correction": 1000 * e.correction,
                "rows_with_weight": e.matched, "effective_sample_size": e.effective_sample_size}

    return {
        "rows": int(r.size),
        "unit": "per 1,000 logged campaign rows of held-out users (an offer 'assigned', shown with the "
                "channel's impression rate)",
        "incremental_value_ours": per_1000(incremental),
        "doubly_robust_ours": dr_per_1000(dr),
        "truth_ours_per_1000": 1000 * truth_mean, "truth_se_per_1000": 1000 * truth_se,
        "dr_ci_covers_truth": bool(dr.ci_low <= truth_mean <= dr.ci_high),
        "ips_ci_covers_truth": bool(incremental.ci_low <= truth_mean <= incremental.ci_high),
        "snips_ci_covers_truth": bool(incremental.snips_ci_low <= truth_mean <= incremental.snips_ci_high),
        "rows_ours_matches_logged_offer": int(((t > 0) & (b == 0)).sum()),
        "share_rows_ours_shows_offer": float(np.mean(np.concatenate(target)[np.concatenate(baseline) == 0] > 0))
        if (np.concatenate(baseline) == 0).any() else None,
        "logging_policy_self_check": {
            "ips": own.estimate, "snips": own.snips, "logged_mean": float(logged.mean()),
            "equal": bool(abs(own.estimate - logged.mean()) <= 1e-9 * max(1.0, abs(logged.mean())))},
        "action_set_reconstruction": {
            "treated_rows": treated_total,
            "propensity_consistent_share": consistent / treated_total if treated_total else None},
    }


# ---------------------------------------------------------------------------------------------
# the job


def _average(per_world: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"worlds": len(per_world), "policies": {}}
    for name in POLICIES:
        vals = np.array([w["policies"][name]["profit_per_1000"] for w in per_world])
        ses = np.array([w["policies"][name]["se_per_1000"] for w in per_world])
        out["policies"][name] = {"profit_per_1000": float(vals.mean()),
                                 "se_per_1000": float(math.sqrt((ses ** 2).sum()) / len(ses)),
                                 "per_world": [float(v) for v in vals],
                                 "mean_slate_size": float(np.mean([w["policies"][name]["mean_slate_size"]
                                                                   for w in per_world]))}
    p = out["policies"]
    ours, resp, pop, orc = (p[k]["profit_per_1000"] for k in ("ours", "response_only", "popularity", "oracle"))

    def ratio(a: float, b: float) -> float | None:
        return a / b if b != 0 else None

    out["ratios"] = {
        "ours_over_response_only": ratio(ours, resp), "ours_over_popularity": ratio(ours, pop),
        "ours_share_of_oracle": ratio(ours, orc),
        "note": "ratios of the averaged profits; with a negative denominator the ratio is negative and the "
                "target reads as ours >= factor x baseline",
    }
    out["targets"] = {
        f"ours >= {TARGET_VS_RESPONSE} x response_only": bool(ours >= TARGET_VS_RESPONSE * resp and ours > 0),
        f"ours >= {TARGET_VS_POPULARITY} x popularity": bool(ours >= TARGET_VS_POPULARITY * pop and ours > 0),
    }
    ips_rows = [w["ips"] for w in per_world]
    out["ips"] = {
        "dr_per_1000": float(np.mean([i["doubly_robust_ours"]["dr"] for i in ips_rows])),
        "dr_ci_covers_truth_in_worlds": int(sum(i["dr_ci_covers_truth"] for i in ips_rows)),
        "ips_per_1000": float(np.mean([i["incremental_value_ours"]["ips"] for i in ips_rows])),
        "snips_per_1000": float(np.mean([i["incremental_value_ours"]["snips"] for i in ips_rows])),
        "truth_per_1000": float(np.mean([i["truth_ours_per_1000"] for i in ips_rows])),
        "ci_covers_truth_in_worlds": int(sum(i["ips_ci_covers_truth"] for i in ips_rows)),
        "snips_ci_covers_truth_in_worlds": int(sum(i["snips_ci_covers_truth"] for i in ips_rows)),
    }
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def markdown(doc: Mapping[str, Any]) -> str:
    avg = doc["average"]
    names = [w["name"] for w in doc["worlds"]]
    lines = ["# Policy evaluation against the simulator's ground truth", "",
             f"True incremental profit per 1,000 page views (currency units), top-{doc['config']['n']} policies, "
             f"beta = {doc['config']['beta']}, averaged over {len(names)} world(s); 95% CI = +-1.96 SE.", "",
             "| policy | " + " | ".join(names) + " | average | +-95% | share of oracle | mean slate |",
             "|---|" + "---|" * len(names) + "---|---|---|---|"]
    orc = avg["policies"]["oracle"]["profit_per_1000"]
    for name in POLICIES:
        p = avg["policies"][name]
        share = p["profit_per_1000"] / orc if orc > 0 else None
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in p["per_world"])
                     + f" | {_fmt(p['profit_per_1000'])} | {_fmt(1.96 * p['se_per_1000'])} | "
                     f"{_fmt(None if share is None else 100 * share)}% | {p['mean_slate_size']:.2f} |")
    r = avg["ratios"]
    signs = [f"{name} is negative ({_fmt(avg['policies'][name]['profit_per_1000'])}): a ratio against it is not a "
             f"multiple of a profit; the target holds only if ours is positive"
             for name in ("response_only", "popularity") if avg["policies"][name]["profit_per_1000"] < 0]
    lines += [""] + [f"- note: {s}" for s in signs]
    lines += [f"- ours / response_only = {_fmt(r['ours_over_response_only'], 2)} (target >= {TARGET_VS_RESPONSE}: "
                  f"{'met' if avg['targets'][f'ours >= {TARGET_VS_RESPONSE} x response_only'] else 'NOT met'})",
              f"- ours / popularity = {_fmt(r['ours_over_popularity'], 2)} (target >= {TARGET_VS_POPULARITY}: "
              f"{'met' if avg['targets'][f'ours >= {TARGET_VS_POPULARITY} x popularity'] else 'NOT met'})",
              f"- ours captures "
              f"{_fmt(None if r['ours_share_of_oracle'] is None else 100 * r['ours_share_of_oracle'])}% "
              "of the oracle",
              "- ours' ROI gate (min_ev) per world: " + ", ".join(
                  f"{w['name']} {w['result'].get('min_ev', 0.0):.3f}" for w in doc["worlds"])
              + "; p1 reads retrieval_score: " + ", ".join(
                  f"{w['name']} {'yes' if w['result'].get('retrieval_feature') else 'no'}" for w in doc["worlds"]), "",
              "## Off-policy estimate of ours from the randomized log (per 1,000 logged rows)", "",
              "Headline: doubly robust (DR) with the larger of the sample and the model-predicted design "
              "standard error (offline/ips.py); IPS / SNIPS with the sample standard error for comparison. "
              "`matched` = logged rows whose random offer is the one ours picks (the rows the estimate rests on).",
              "",
              "| world | DR | DR 95% CI | IPS | IPS 95% CI | SNIPS | truth | covered (DR/IPS/SNIPS) | matched | ESS |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for w in doc["worlds"]:
        i = w["result"]["ips"]
        e, d = i["incremental_value_ours"], i["doubly_robust_ours"]
        lines.append(f"| {w['name']} | {_fmt(d['dr'])} | {_fmt(d['dr_ci'][0])} .. {_fmt(d['dr_ci'][1])} | "
                     f"{_fmt(e['ips'])} | {_fmt(e['ips_ci'][0])} .. {_fmt(e['ips_ci'][1])} | {_fmt(e['snips'])} | "
                     f"{_fmt(i['truth_ours_per_1000'])} | {'yes' if i['dr_ci_covers_truth'] else 'no'}/"
                     f"{'yes' if i['ips_ci_covers_truth'] else 'no'}/{'yes' if i['snips_ci_covers_truth'] else 'no'} | "
                     f"{i['rows_ours_matches_logged_offer']} | {e['effective_sample_size']:.0f} |")
    lines += ["", f"DR: {_fmt(avg['ips']['dr_per_1000'])}, IPS: {_fmt(avg['ips']['ips_per_1000'])}, "
                  f"SNIPS: {_fmt(avg['ips']['snips_per_1000'])}, truth: {_fmt(avg['ips']['truth_per_1000'])} "
                  f"(average over worlds); the DR interval covers the truth in "
                  f"{avg['ips']['dr_ci_covers_truth_in_worlds']} of {avg['worlds']} world(s).", ""]
    return "\n".join(lines) + "\n"


def plot(doc: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    avg = doc["average"]["policies"]
    names = list(POLICIES)
    vals = [avg[n]["profit_per_1000"] for n in names]
    errs = [1.96 * avg[n]["se_per_1000"] for n in names]
    palette = {"oracle": "#264653", "ours": "#2a9d8f", "ours_no_gate": "#8ab17d", "uplift_only": "#8ab17d",
               "response_only": "#e9c46a", "popularity": "#f4a261"}
    colors = [palette.get(n, "#adb5bd") for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    ax.bar(names, vals, yerr=errs, color=colors, capsize=3)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("true incremental profit per 1,000 page views")
    ax.set_title(f"top-{doc['config']['n']} policies, beta = {doc['config']['beta']}, "
                 f"{doc['average']['worlds']} world(s) (95% CI)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _run_job_quietly(module: str, argv: list[str]) -> tuple[int, str]:
    import importlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = int(importlib.import_module(module).main(argv) or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue() + out.getvalue()


def ensure_world(out: Path, seed: int, users: int, offers: int) -> Path:
    """``OUT/worlds/seed-S`` generated by ``offline synth`` (reused when its config matches)."""
    path = out / "worlds" / f"seed-{seed}"
    meta = path / "synth.json"
    if meta.is_file():
        cfg = _read_json(meta).get("config", {})
        if cfg.get("seed") == seed and cfg.get("users") == users and cfg.get("offers") == offers:
            return path
    code, text = _run_job_quietly("offline.synth", ["--out", str(path), "--users", str(users), "--offers", str(offers),
                                                    "--seed", str(seed)])
    if code != 0:
        raise common.JobError(f"synth of seed {seed} failed: {text.strip()}")
    return path


def train_uplift(world_dir: Path, out: Path, cfg: EvalConfig, extra: Sequence[str],
                 train_extra: Sequence[str] | None = (), retrieval: bool = True) -> Path:
    """Train and export the uplift model of a world with ``offline uplift`` (in-process), as
    ``offline build`` does: first the two-tower model (``offline train`` into ``OUT/train``) whose
    embeddings give p1's ``retrieval_score`` input (skipped with ``retrieval=False``)."""
    from offline.export import feature_schema_for_world

    out.mkdir(parents=True, exist_ok=True)
    schema_path = out / "feature_schema.json"
    common.write_json(schema_path, feature_schema_for_world(world_dir))
    emb_args: list[str] = []
    if retrieval:
        train_dir = out / "train"
        code, text = _run_job_quietly("offline.train", ["--world", str(world_dir), "--out", str(train_dir),
                                                        "--feature-schema", str(schema_path), "--seed",
                                                        str(cfg.seed), *(train_extra or ())])
        if code != 0:
            raise common.JobError(f"two-tower training on {world_dir} failed (exit {code}): {text.strip()[-2000:]}")
        emb_args = ["--embeddings-from", str(train_dir)]
    argv = ["--dataset", "synth", "--world", str(world_dir), "--out", str(out), "--export-dir", str(out / "bundle"),
            "--feature-schema", str(schema_path), "--test-fraction", str(cfg.test_fraction),
            "--seed", str(cfg.seed), "--threads", "1", "--beta", str(cfg.beta), *emb_args, *extra]
    code, text = _run_job_quietly("offline.uplift", argv)
    if code != 0:
        raise common.JobError(f"uplift training on {world_dir} failed (exit {code}): {text.strip()[-2000:]}")
    return out / "bundle"


def run(worlds: list[Path], models: list[Path | None], out: Path, cfg: EvalConfig,
        uplift_args: Sequence[str] = (), train_args: Sequence[str] = (), retrieval: bool = True) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    per_world = []
    for i, (wdir, mdir) in enumerate(zip(worlds, models)):
        name = wdir.name if wdir.name not in {w.name for w in worlds[:i]} else f"{wdir.name}-{i}"
        print(f"evaluate: world {wdir} ...", file=sys.stderr, flush=True)
        world = read_world(wdir)
        t0 = time.perf_counter()
        trained = mdir is None
        if mdir is None:
            mdir = train_uplift(wdir, out / "uplift" / name, cfg, uplift_args, train_args, retrieval)
        model = load_uplift_model(mdir)
        uplift_seconds = round(time.perf_counter() - t0, 2)
        result = evaluate_world(world, model, cfg)
        seconds = result.pop("seconds")  # wall-clock times go to stderr, not into evaluate.json
        result["uplift_trained_here"] = trained
        per_world.append({"name": name, "result": result})
        pol = result["policies"]
        print(f"evaluate: {name}: ours {pol['ours']['profit_per_1000']:.1f}, response_only "
              f"{pol['response_only']['profit_per_1000']:.1f}, popularity {pol['popularity']['profit_per_1000']:.1f}, "
              f"oracle {pol['oracle']['profit_per_1000']:.1f} per 1,000 page views (uplift {uplift_seconds:.0f}s, "
              f"evaluation {seconds:.0f}s)",
              file=sys.stderr, flush=True)
    doc: dict[str, Any] = {
        "format": "offerd-evaluate", "format_version": 1,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "policies": {
            "oracle": "top N by true EV, only EV > 0", "ours": "top N by model EV, only EV > min_ev (the ROI gate; min_ev per world in its result)",
            "ours_no_gate": "top N by model EV", "uplift_only": "top N by model uplift, only uplift > 0",
            "response_only": "top N by model p1", "popularity": "top N by logged redemptions (training users)",
            "random": "N random eligible offers", "no_offer": "nothing"},
        "value_definition": "1000 x mean over page views of the sum over shown offers of true EV = "
                            "(true p1 - true p0) x (margin + beta x true CLV) - true p1 x cost",
        "worlds": per_world,
    }
    doc["average"] = _average([w["result"] for w in per_world])
    print(f"evaluate: done in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    common.write_json(out / "evaluate.json", common.finite_json(doc))
    (out / "evaluate.md").write_text(markdown(doc), encoding="utf-8")
    plot(doc, out / "evaluate.png")
    return doc


def build_parser() -> argparse.ArgumentParser:
    d = EvalConfig()
    p = argparse.ArgumentParser(prog="python3 -m offline evaluate",
                                description="Evaluate ranking policies against the simulator's ground truth.")
    p.add_argument("--world", type=Path, action="append", default=[], help="world directory (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[],
                   help="generate one world per seed into OUT/worlds/seed-S (with --users/--offers)")
    p.add_argument("--users", type=int, default=50_000, help="--seeds worlds: users (default %(default)s)")
    p.add_argument("--offers", type=int, default=1_000, help="--seeds worlds: offers (default %(default)s)")
    p.add_argument("--uplift-model", type=Path, action="append", default=[],
                   help="uplift export dir or bundle, one per world in order (default: train one per world)")
    p.add_argument("--uplift-arg", action="append", default=[],
                   help="extra argument for the in-process uplift training (repeatable, e.g. --uplift-arg=--epochs=5)")
    p.add_argument("--train-arg", action="append", default=[],
                   help="extra argument for the in-process two-tower training (repeatable)")
    p.add_argument("--no-retrieval", dest="retrieval", action="store_false",
                   help="in-process training: no two-tower model, so no retrieval_score input of p1")
    p.add_argument("--min-ev", type=float,
                   help="ROI gate of ours (default: the model's policy.min_ev, from its bundle or fragment; else 0)")
    p.add_argument("--users-jsonl",
                   help="users.jsonl of a --uplift-model bundle without a user tower (its stored embeddings)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--n", type=int, default=d.n, help="offers per page view (default %(default)s)")
    p.add_argument("--beta", type=float, default=d.beta, help="weight of CLV in EV (default %(default)s)")
    p.add_argument("--page-views", type=int, default=d.page_views, help="page views per world (default %(default)s)")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="held-out user share of the uplift split (default %(default)s)")
    p.add_argument("--clv-margin", type=float, default=d.clv_margin, help="margin rate of CLV (default %(default)s)")
    p.add_argument("--clv-horizon-weeks", type=float, default=d.clv_horizon_weeks, help="default %(default)s")
    p.add_argument("--discount-rate", type=float, default=d.annual_discount_rate,
                   help="annual discount rate of CLV (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="sampling / uplift training seed (default %(default)s)")
    return p


def main(argv: list[str]) -> int:
    """CLI entry point (see module docstring)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        checks = [(args.n >= 1, "--n must be >= 1"), (args.beta >= 0, "--beta must be >= 0"),
                  (args.page_views >= 1, "--page-views must be >= 1"),
                  (0 < args.test_fraction < 1, "--test-fraction must be in (0, 1)"),
                  (args.clv_margin >= 0, "--clv-margin must be >= 0"),
                  (args.clv_horizon_weeks > 0, "--clv-horizon-weeks must be > 0"),
                  (args.discount_rate > -1, "--discount-rate must be > -1"),
                  (bool(args.world) or bool(args.seeds), "give --world DIR (repeatable) or --seeds S ...")]
        for ok, message in checks:
            if not ok:
                raise common.JobError(message)
        worlds = list(args.world) + [ensure_world(args.out, s, args.users, args.offers) for s in args.seeds]
        if args.uplift_model and len(args.uplift_model) != len(worlds):
            raise common.JobError(f"--uplift-model given {len(args.uplift_model)} time(s) for {len(worlds)} world(s)")
        models: list[Path | None] = list(args.uplift_model) if args.uplift_model else [None] * len(worlds)
        cfg = EvalConfig(n=args.n, beta=args.beta, page_views=args.page_views, test_fraction=args.test_fraction,
                         clv_margin=args.clv_margin, clv_horizon_weeks=args.clv_horizon_weeks,
                         annual_discount_rate=args.discount_rate, seed=args.seed, min_ev=args.min_ev,
                         users_jsonl=args.users_jsonl)
        doc = run(worlds, models, args.out, cfg, args.uplift_arg, args.train_arg, args.retrieval)
        avg = doc["average"]
        common.emit_json({"out": str(args.out), "worlds": [w["name"] for w in doc["worlds"]],
                          "profit_per_1000": {k: v["profit_per_1000"] for k, v in avg["policies"].items()},
                          "ratios": avg["ratios"], "targets": avg["targets"], "ips": avg["ips"]})
        sys.stderr.write(markdown(doc))
        return 0

    return common.run_job("evaluate", body)
