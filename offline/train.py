"""``offline train``: two-tower retrieval model (user tower + offer tower) on the campaign log.

Usage::

    /usr/bin/python3 -m offline train --world DIR --out DIR [--dim 64] [--epochs 10] [--seed 0]
        [--loss pointwise|softmax|both] [--feature-schema FILE] [--k 10 --k 50] [--threads 1]
        (all flags: --help)

**Data.** ``campaign_log.csv`` rows with an impression. Positives are the clicks (a redemption
always comes with a click, so redeems are included); the shown-but-not-clicked impressions are
the pointwise negatives. The log's exposures are randomized, so clicks reflect the users' tastes,
not an earlier recommender. Chronological split: the latest days holding ``--holdout-fraction``
of the clicks are held out for the reported metrics; inside the training part the latest days
holding ``--validation-fraction`` of its clicks pick the number of epochs (lowest validation
loss, at most ``--epochs``), then the model is retrained from scratch on the whole training part
for that many epochs.

**Model.** User tower: an MLP (ReLU hidden layers, identity output of ``--dim``) over the encoded
sections ``user`` (the bundle's ``feature_schema``, exactly what ``offline export`` writes, see
:func:`offline.export.feature_schema_for_world`) and ``context`` (``channel``, ``device``,
``page`` of the request; categorical, vocabularies from the training rows). The whole context
section is set to "missing" for ``--context-dropout`` of the training rows so the tower also
serves requests without a context. Offer tower: an MLP over ``category``, ``type`` (one-hot),
``margin``, ``cost`` (log1p, standardised) plus a learned per-offer id embedding (L2-penalised
with ``--id-l2``; offers without training impressions keep only their feature part). Both
outputs are L2-normalised; the ranking score is their cosine, i.e. the service's inner product
over unit vectors. The weights used for validation and export are an exponential moving
average (``--ema-decay``) of the trained ones.

**Losses** (``--loss``):

- ``pointwise`` (default): logistic loss of ``scale * cos(u, v) + bias`` on every impression
  (clicked vs shown and not clicked; ``scale`` and ``bias`` are training-only scalars). This
  uses the randomized negatives the log has, and on the demo world it is the one that beats
  popularity (see ``train.json`` of a ``--loss softmax`` run for the comparison).
- ``softmax``: sampled softmax over the clicks with in-batch negatives and the logQ correction
  (Yi et al. 2019): ``logit[i, j] = cos(u_i, v_j) / T - log Q(o_j) + log E(o_j)``, ``Q`` the
  offer's share of the training clicks (its chance of being an in-batch sample), ``E`` its share
  of the impressions (exposure correction: the campaigns showed offers at random but unevenly;
  the score should learn P(click | shown), not how often an offer happened to be shown;
  ``--no-exposure-correction`` / ``--no-logq`` switch the terms off). In-batch duplicates of the
  positive offer are masked.
- ``both``: the sum, with the two kinds of batches interleaved.

**Evaluation** (held-out split; one query per clicked row: the user's features and the row's
context; relevance = the clicked offer). Candidate sets, all reported:

- ``campaign`` (the comparison to read): the offers of the row's campaign eligible for the row,
  i.e. the set the randomized logging policy drew the shown offer from. Under randomized
  exposure this is the unbiased offline comparison;
- ``eligible``: every catalog offer the service's filter lets through (active on the day,
  channel, country, tier audience); most of them were not in the held-out campaigns, so at small
  k the result depends on which offers those campaigns happened to carry;
- ``catalog``: every offer.

Metrics at each ``--k``: recall@k (= hit rate: one relevant item per query), precision@k =
recall@k / k, NDCG@k; ties are broken at random *in expectation* (exact), so an all-ties ranker
scores exactly the random baseline. Baselines: ``popularity`` (training clicks per offer),
``popularity_ctr`` (training click-through rate shrunk to the mean with 10 pseudo-impressions;
a stronger non-personalised baseline) and ``random``.

**Outputs** in ``--out`` (written in place):

- ``offer_embeddings.npy`` float32 [num_offers, dim], unit rows, offers.jsonl order
- ``user_embeddings.npy`` float32 [num_users, dim], unit rows, users.csv order, = the user tower
  with an all-missing context (the stored embedding of users.jsonl); ``user_ids.txt`` one id a
  line in the same order. ``offline export --embeddings-from DIR`` reads both ``.npy`` files.
- the user tower in the bundle ``models`` format (docs/models-format.md):
  ``models/user_tower.embedding.<i>.{weight,bias}.npy``, ``golden.json`` (entry ``user_tower``,
  merged with any other entries already there) and ``user_tower_manifest_fragment.json``
  (``{"models", "feature_schema", "files"}``, the convention ``offline export --models-from DIR``
  merges); :func:`export_user_tower` writes the same into any bundle directory.
- ``train.json``: config, data sizes, metrics of the model and the baselines, the loss curves;
  ``train_metrics.png``: the metrics as bars and the loss curves. Wall-clock timings go to
  stderr only (the files are the same on every run with the same inputs and seed).

Golden outputs are the **pre-normalisation** float32 outputs of the ``embedding`` head (what the
MLP computes); the service L2-normalises after the head. ``atol`` is 1e-5 (components near 0).

Runs are deterministic for a fixed seed and thread count (``--threads``, default 1; more threads
only slow this small model down): the ``.npy`` files, ``golden.json`` and the fragment are
byte-identical on a rerun. Bad input (missing file or column, a non-0/1 flag, an unknown user or
offer id) exits with status 2 and a message naming the file, column and problem.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from offline import common
from offline.uplift import export_mlp, jsonable_raw, load_mlp, merge_golden, raw_for_encoded
from offline.uplift_models import DenseLayer, FeatureSpec, encode_section, fit_feature_spec, mlp_forward

MODEL_NAME = "user_tower"
HEAD_NAME = "embedding"
FRAGMENT_NAME = "user_tower_manifest_fragment.json"
CONTEXT_FEATURES: tuple[str, ...] = ("channel", "device", "page")
OFFER_CATEGORICAL: tuple[str, ...] = ("category", "type")
OFFER_NUMERIC: tuple[str, ...] = ("margin", "cost")
OPTIONAL_LOG_COLUMN = "campaign_id"  # enables the "campaign" candidate set of the evaluation
LOG_COLUMNS: tuple[str, ...] = ("user_id", "day", "offer_id", "impression", "clicked", *CONTEXT_FEATURES,
                                OPTIONAL_LOG_COLUMN)
DEFAULT_KS: tuple[int, ...] = (10, 50)
GOLDEN_RTOL = 1e-5
# Embedding components are O(0.1..1) and can be near 0; an absolute tolerance keeps float32
# summation-order differences (numpy vs the C++ double sums) from rejecting a good bundle.
GOLDEN_ATOL = 1e-5


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the two-tower training (the CLI flags)."""

    dim: int = 64
    loss: str = "pointwise"  # pointwise | softmax | both
    epochs: int = 10  # maximum; the number used is chosen on the validation split
    batch_size: int = 2048  # impressions per step (pointwise loss)
    softmax_batch: int = 512  # positives per step = in-batch negatives (softmax loss)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    id_l2: float = 1.0  # extra L2 penalty on the per-offer id embeddings (mean squared row norm)
    ema_decay: float = 0.98  # exponential moving average of the weights per step (0 = off)
    temperature: float = 0.1
    user_hidden: tuple[int, ...] = (128,)
    offer_hidden: tuple[int, ...] = (64,)
    id_embedding: bool = True
    logq_correction: bool = True
    exposure_correction: bool = True
    context_dropout: float = 0.15
    holdout_fraction: float = 0.15
    validation_fraction: float = 0.15
    ks: tuple[int, ...] = DEFAULT_KS
    seed: int = 0
    threads: int = 1


# ---------------------------------------------------------------------------------------------
# input data


@dataclass
class TrainingData:
    """Everything the model and the evaluation read from a world directory (no ground truth)."""

    world_dir: Path
    user_ids: np.ndarray  # str, users.csv order
    user_table: pd.DataFrame  # raw user features (feature-schema names), users.csv order
    feature_schema: dict[str, Any]  # {"id", "features"} as in the bundle manifest
    offers: list[dict[str, Any]]  # raw catalog, offers.jsonl order
    log: pd.DataFrame  # impression rows: user (idx), offer (idx), day (int), clicked, context columns
    user_country: np.ndarray
    user_tier: np.ndarray


def _read_log(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise common.JobError(f"{path}: file not found")
    try:
        log = pd.read_csv(path, dtype={"user_id": str, "offer_id": str, "day": str}, keep_default_na=False,
                          na_values=[], usecols=lambda c: c in LOG_COLUMNS)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise common.JobError(f"{path}: cannot parse CSV: {exc}") from exc
    missing = [c for c in LOG_COLUMNS if c not in log.columns and c != OPTIONAL_LOG_COLUMN]
    if missing:
        raise common.JobError(f"{path}: missing column(s) {', '.join(missing)}")
    for col in ("impression", "clicked"):
        values = pd.to_numeric(log[col], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise common.JobError(f"{path}: column {col}: expected 0/1, got {log[col].iloc[row]!r} "
                                  f"on data row {row + 1}")
        log[col] = values.astype(np.int64)
    return log


def load_training_data(world_dir: Path, feature_schema_path: Path | None = None) -> TrainingData:
    """Read users.csv, offers.jsonl and campaign_log.csv; errors name the file and column."""
    from offline import export

    world = export.read_world(world_dir, as_of="1970-01-01", need_campaigns=False)
    table, kinds = export.user_feature_table(world)
    if feature_schema_path is not None:
        try:
            doc = json.loads(Path(feature_schema_path).read_text(encoding="utf-8"))
            features = doc["features"] if isinstance(doc, dict) else doc
            [FeatureSpec.from_json(f) for f in features]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise common.JobError(f"{feature_schema_path}: not a feature schema: {exc}") from exc
        sid = doc.get("id") if isinstance(doc, dict) and doc.get("id") else export.schema_id(features)
        missing = [f["name"] for f in features if f["name"] not in table.columns]
        if missing:
            raise common.JobError(f"{world_dir / 'users.csv'}: missing column(s) {', '.join(missing)} "
                                  f"of the feature schema {feature_schema_path}")
        schema = {"id": sid, "features": features}
    else:
        features = export.build_feature_schema(table, kinds)
        schema = {"id": export.schema_id(features), "features": features}

    log_path = world_dir / "campaign_log.csv"
    log = _read_log(log_path)
    log = log[log["impression"] == 1].reset_index(drop=True)
    user_ids = world.users["user_id"].astype(str).to_numpy()
    offer_ids = [str(o["offer_id"]) for o in world.offers]
    user = pd.Index(user_ids).get_indexer(log["user_id"])
    offer = pd.Index(offer_ids).get_indexer(log["offer_id"])
    if (user < 0).any():
        bad = log["user_id"].iloc[int(np.flatnonzero(user < 0)[0])]
        raise common.JobError(f"{log_path}: column user_id: {bad!r} not in users.csv")
    if (offer < 0).any():
        bad = log["offer_id"].iloc[int(np.flatnonzero(offer < 0)[0])]
        raise common.JobError(f"{log_path}: column offer_id: {bad!r} (a row with an impression) "
                              f"not in offers.jsonl")
    day = common.days_from_iso(log["day"].to_numpy(dtype=str), f"{log_path}: column day")
    frame = pd.DataFrame({"user": user.astype(np.int64), "offer": offer.astype(np.int64), "day": day,
                          "clicked": log["clicked"].to_numpy()})
    for c in CONTEXT_FEATURES:
        frame[c] = log[c].astype(str).to_numpy()
    if OPTIONAL_LOG_COLUMN in log.columns:
        frame[OPTIONAL_LOG_COLUMN] = log[OPTIONAL_LOG_COLUMN].astype(str).to_numpy()
    if int(frame["clicked"].sum()) < 2:
        raise common.JobError(f"{log_path}: fewer than 2 clicked impressions; nothing to train on")
    users = world.users
    return TrainingData(world_dir, user_ids, table, schema, world.offers, frame,
                        users["country"].astype(str).to_numpy() if "country" in users else np.full(len(users), ""),
                        users["tier"].astype(str).to_numpy() if "tier" in users else np.full(len(users), ""))


def chronological_split(day: np.ndarray, clicked: np.ndarray, holdout_fraction: float,
                        path: Path) -> tuple[int, np.ndarray]:
    """(cut day, held-out mask): rows on or after the cut day are held out; the cut is the
    latest day such that at least ``holdout_fraction`` of the positives are held out."""
    pos_days = np.sort(day[clicked == 1])
    cut = int(pos_days[min(int(math.floor(len(pos_days) * (1.0 - holdout_fraction))), len(pos_days) - 1)])
    test = day >= cut
    if not (clicked[test] == 1).any() or not (clicked[~test] == 1).any():
        raise common.JobError(f"{path}: cannot split the clicks chronologically (all on one day?)")
    return cut, test


# ---------------------------------------------------------------------------------------------
# encoders


def offer_specs(offers: Sequence[Mapping[str, Any]]) -> list[FeatureSpec]:
    """Offer-tower inputs: category and type one-hot, margin and cost (log1p, standardised)."""
    frame = pd.DataFrame({c: [o.get(c) for o in offers] for c in (*OFFER_CATEGORICAL, *OFFER_NUMERIC)})
    specs = [fit_feature_spec(c, frame[c].astype(str), "categorical") for c in OFFER_CATEGORICAL]
    specs += [fit_feature_spec(c, frame[c], "numeric", transform="log1p") for c in OFFER_NUMERIC]
    return specs


def encode_offers(offers: Sequence[Mapping[str, Any]], specs: Sequence[FeatureSpec]) -> np.ndarray:
    frame = pd.DataFrame({s.name: [o.get(s.name) for o in offers] for s in specs})
    return encode_section(specs, frame)


# ---------------------------------------------------------------------------------------------
# the model


def _torch():
    import torch

    return torch


def _mlp(d_in: int, hidden: Sequence[int], d_out: int) -> Any:
    nn = _torch().nn
    mods: list[Any] = []
    d = d_in
    for h in hidden:
        mods += [nn.Linear(d, h), nn.ReLU()]
        d = h
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


def build_module(user_in: int, offer_in: int, num_offers: int, cfg: TrainConfig) -> Any:
    """The torch two-tower module: ``user_mlp`` (exported), ``offer_mlp`` and ``offer_id``."""
    torch = _torch()
    nn = torch.nn

    class TwoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user_mlp = _mlp(user_in, cfg.user_hidden, cfg.dim)
            self.offer_mlp = _mlp(offer_in, cfg.offer_hidden, cfg.dim)
            self.offer_id = nn.Embedding(num_offers, cfg.dim) if cfg.id_embedding else None
            if self.offer_id is not None:
                nn.init.normal_(self.offer_id.weight, std=0.01)

        def user(self, x: Any) -> Any:
            return self.user_mlp(x)

        def offer(self, x: Any, idx: Any) -> Any:
            v = self.offer_mlp(x)
            return v + self.offer_id(idx) if self.offer_id is not None else v

    return TwoTower()


@dataclass
class TwoTowerModel:
    """A trained two-tower model with everything needed to export and evaluate it."""

    module: Any
    config: TrainConfig
    feature_schema: dict[str, Any]
    user_specs: list[FeatureSpec]
    context_specs: list[FeatureSpec]
    offer_feature_specs: list[FeatureSpec]
    offer_x: np.ndarray  # encoded offer features [num_offers, width]
    raw_examples: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)

    @property
    def sections(self) -> dict[str, list[FeatureSpec]]:
        return {"user": self.user_specs, "context": self.context_specs}

    def encode_inputs(self, user_frame: pd.DataFrame | Mapping[str, Sequence[Any]],
                      context_frame: pd.DataFrame | Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
        """[n, input_dim] float32: user then context section, per docs/models-format.md."""
        return np.concatenate([encode_section(self.user_specs, user_frame, n),
                               encode_section(self.context_specs, context_frame, n)], axis=1)

    def layers(self) -> list[DenseLayer]:
        """The user tower as exportable dense layers (last activation identity)."""
        torch = _torch()
        linears = [m for m in self.module.user_mlp if isinstance(m, torch.nn.Linear)]
        return [DenseLayer(l.weight.detach().numpy().copy(), l.bias.detach().numpy().copy(),
                           "identity" if i == len(linears) - 1 else "relu") for i, l in enumerate(linears)]

    def user_raw_torch(self, x: np.ndarray) -> np.ndarray:
        """Pre-normalisation user-tower output of the torch module, float32."""
        torch = _torch()
        with torch.no_grad():
            return self.module.user(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def offer_embeddings(self) -> np.ndarray:
        """Unit-row float32 [num_offers, dim]."""
        torch = _torch()
        with torch.no_grad():
            v = self.module.offer(torch.from_numpy(self.offer_x), torch.arange(self.offer_x.shape[0]))
            v = torch.nn.functional.normalize(v, dim=1)
        return unit_rows32(v.numpy())


def unit_rows32(x: np.ndarray) -> np.ndarray:
    """float32 rows of unit L2 norm (norm computed in float64)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def seed_everything(seed: int, threads: int) -> None:
    torch = _torch()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    np.random.seed(seed % (2**32))


@dataclass
class Rows:
    """Impression rows the model trains on: encoded [user, context] inputs, offer, clicked."""

    x: np.ndarray  # float32 [n, user width + context width]
    offer: np.ndarray  # int64 [n]
    clicked: np.ndarray  # int64 [n], 0/1

    def subset(self, mask: np.ndarray) -> "Rows":
        return Rows(self.x[mask], self.offer[mask], self.clicked[mask])


def smoothed_ctr(clicks: np.ndarray, shown: np.ndarray, prior_weight: float = 10.0) -> np.ndarray:
    """Click-through rate per offer shrunk towards the overall rate with ``prior_weight``
    pseudo-impressions (the "popularity_ctr" baseline)."""
    prior = clicks.sum() / max(shown.sum(), 1.0)
    return (clicks + prior_weight * prior) / (shown + prior_weight)


def offer_logit_correction(rows: Rows, num_offers: int, cfg: TrainConfig) -> np.ndarray:
    """Per-offer additive correction of the in-batch softmax logits: ``-log Q + log E``.

    ``Q`` = the offer's share of the positives (its chance of being an in-batch sample; the
    logQ correction), ``E`` = its share of the impressions (exposure). Add-one smoothed."""
    clicks = np.bincount(rows.offer[rows.clicked == 1], minlength=num_offers).astype(np.float64)
    shown = np.bincount(rows.offer, minlength=num_offers).astype(np.float64)
    out = np.zeros(num_offers)
    if cfg.logq_correction:
        out -= np.log((clicks + 1.0) / (clicks.sum() + num_offers))
    if cfg.exposure_correction:
        out += np.log((shown + 1.0) / (shown.sum() + num_offers))
    return out


class _Trainer:
    """One training run: the module, the pointwise calibration (scale, bias) and the losses."""

    def __init__(self, cfg: TrainConfig, user_in: int, offer_x: np.ndarray, context_slice: slice,
                 context_missing: np.ndarray, correction: np.ndarray) -> None:
        torch = _torch()
        seed_everything(cfg.seed, cfg.threads)
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.module = build_module(user_in, offer_x.shape[1], offer_x.shape[0], cfg)
        # pointwise head: logit = scale * cos(u, v) + bias (training only: ranking uses cos)
        self.scale = torch.nn.Parameter(torch.tensor(5.0))
        self.bias = torch.nn.Parameter(torch.tensor(-2.0))
        params = list(self.module.parameters()) + [self.scale, self.bias]
        self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.offer_x = torch.from_numpy(np.ascontiguousarray(offer_x, dtype=np.float32))
        self.context_slice = context_slice
        self.context_missing = torch.from_numpy(context_missing.astype(np.float32))
        self.correction = torch.from_numpy(correction.astype(np.float32))
        self.params = params
        self.ema = [p.detach().clone() for p in params] if cfg.ema_decay > 0 else None
        self.live: list[Any] | None = None

    def use_average(self) -> None:
        """Swap the weight averages in (for validation and the final model)."""
        if self.ema is not None and self.live is None:
            self.live = [p.detach().clone() for p in self.params]
            with _torch().no_grad():
                for p, a in zip(self.params, self.ema):
                    p.copy_(a)

    def use_live(self) -> None:
        """Swap the trained (live) weights back in to continue training."""
        if self.live is not None:
            with _torch().no_grad():
                for p, w in zip(self.params, self.live):
                    p.copy_(w)
            self.live = None

    def _vectors(self, x: Any, o: Any, train: bool) -> tuple[Any, Any]:
        torch = _torch()
        F = torch.nn.functional
        if train and self.cfg.context_dropout > 0:
            x = x.clone()
            drop = torch.rand(x.shape[0], generator=self.gen) < self.cfg.context_dropout
            x[drop, self.context_slice] = self.context_missing
        return F.normalize(self.module.user(x), dim=1), F.normalize(self.module.offer(self.offer_x[o], o), dim=1)

    def pointwise_loss(self, x: Any, o: Any, y: Any, train: bool) -> Any:
        torch = _torch()
        u, v = self._vectors(x, o, train)
        z = (u * v).sum(dim=1) * self.scale + self.bias
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y)

    def softmax_loss(self, x: Any, o: Any, train: bool) -> Any:
        """In-batch sampled softmax with the logit correction; duplicates of the positive masked."""
        torch = _torch()
        u, v = self._vectors(x, o, train)
        logits = u @ v.T / self.cfg.temperature + self.correction[o][None, :]
        same = (o[:, None] == o[None, :]) & ~torch.eye(o.numel(), dtype=torch.bool)
        logits = logits.masked_fill(same, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.arange(o.numel()))

    def epoch(self, rows: Rows) -> float:
        """One pass; pointwise batches over all impressions and softmax batches over the
        positives are interleaved so both cover the data once per epoch."""
        torch = _torch()
        cfg = self.cfg
        self.use_live()
        self.module.train()
        x = torch.from_numpy(rows.x)
        o_all = torch.from_numpy(rows.offer)
        y_all = torch.from_numpy(rows.clicked.astype(np.float32))
        pos = torch.from_numpy(np.flatnonzero(rows.clicked == 1))
        use_pw, use_sm = cfg.loss in ("pointwise", "both"), cfg.loss in ("softmax", "both")
        imp_perm = torch.randperm(len(rows.offer), generator=self.gen) if use_pw else None
        pos_perm = pos[torch.randperm(pos.numel(), generator=self.gen)] if use_sm else None
        steps = max(math.ceil(len(rows.offer) / cfg.batch_size) if use_pw else 0,
                    math.ceil(pos.numel() / cfg.softmax_batch) if use_sm else 0)
        total = 0.0
        for step in range(steps):
            loss = torch.zeros(())
            if use_pw:
                size = math.ceil(len(rows.offer) / steps)
                b = imp_perm[step * size:(step + 1) * size]
                if b.numel() > 0:
                    loss = loss + self.pointwise_loss(x[b], o_all[b], y_all[b], train=True)
            if use_sm:
                size = math.ceil(pos.numel() / steps)
                b = pos_perm[step * size:(step + 1) * size]
                if b.numel() >= 2:
                    loss = loss + self.softmax_loss(x[b], o_all[b], train=True)
            if self.module.offer_id is not None and cfg.id_l2 > 0:
                loss = loss + cfg.id_l2 * (self.module.offer_id.weight ** 2).sum(dim=1).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            if self.ema is not None:
                with torch.no_grad():
                    for a, p in zip(self.ema, self.params):
                        a.mul_(cfg.ema_decay).add_(p.detach(), alpha=1.0 - cfg.ema_decay)
            total += float(loss)
        self.module.eval()
        self.use_average()
        return total / max(steps, 1)

    def validation_loss(self, rows: Rows) -> float:
        """The training objective (without penalties) on held-back rows, deterministic."""
        torch = _torch()
        cfg = self.cfg
        self.module.eval()
        out = 0.0
        with torch.no_grad():
            x = torch.from_numpy(rows.x)
            o = torch.from_numpy(rows.offer)
            if cfg.loss in ("pointwise", "both"):
                out += float(self.pointwise_loss(x, o, torch.from_numpy(rows.clicked.astype(np.float32)), False))
            if cfg.loss in ("softmax", "both"):
                pos = np.flatnonzero(rows.clicked == 1)
                chunks = [pos[i:i + cfg.softmax_batch] for i in range(0, len(pos), cfg.softmax_batch)]
                chunks = [c for c in chunks if len(c) >= 2]
                out += float(np.mean([float(self.softmax_loss(x[c], o[c], False)) for c in chunks])) if chunks else 0.0
        return out


def train_model(train: Rows, offer_x: np.ndarray, cfg: TrainConfig, context_slice: slice,
                context_missing: np.ndarray, validation_fraction: float,
                day: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """Train the towers. With ``validation_fraction > 0`` the last days of ``train`` holding
    that share of its positives are held back, the model is trained on the rest for up to
    ``cfg.epochs`` epochs, and the epoch count with the lowest validation loss is then used to
    retrain from scratch on all of ``train`` (same seed). Returns (module, history)."""
    num_offers = offer_x.shape[0]
    history: dict[str, Any] = {}
    epochs = cfg.epochs
    if validation_fraction > 0:
        cut = None
        try:
            cut, val_mask = chronological_split(day, train.clicked, validation_fraction, Path("training rows"))
        except common.JobError:
            val_mask = None
        if val_mask is not None:
            fit, val = train.subset(~val_mask), train.subset(val_mask)
            trainer = _Trainer(cfg, train.x.shape[1], offer_x, context_slice, context_missing,
                               offer_logit_correction(fit, num_offers, cfg))
            fit_loss, val_loss = [], []
            for _ in range(cfg.epochs):
                fit_loss.append(trainer.epoch(fit))
                val_loss.append(trainer.validation_loss(val))
            epochs = int(np.argmin(val_loss)) + 1
            history.update({"validation_from_day": int(cut), "fit_rows": int(len(fit.offer)),
                            "validation_rows": int(len(val.offer)),
                            "fit_loss": [round(v, 6) for v in fit_loss],
                            "validation_loss": [round(v, 6) for v in val_loss]})
    trainer = _Trainer(cfg, train.x.shape[1], offer_x, context_slice, context_missing,
                       offer_logit_correction(train, num_offers, cfg))
    history["epochs_used"] = epochs
    history["train_loss"] = [round(trainer.epoch(train), 6) for _ in range(epochs)]
    return trainer.module, history


# ---------------------------------------------------------------------------------------------
# ranking metrics


def ranking_metrics(scores: np.ndarray, eligible: np.ndarray, positive: np.ndarray,
                    ks: Sequence[int]) -> dict[str, float]:
    """Mean precision@k, recall@k and NDCG@k over queries with one relevant item each.

    ``scores`` [Q, M], ``eligible`` bool [Q, M] (the candidate set; the positive is always a
    candidate), ``positive`` [Q] item index. Ties are broken uniformly at random, in exact
    expectation: with ``g`` candidates scoring above the positive and ``e`` tied with it (itself
    included), the positive is at rank ``g + 1 .. g + e`` with probability ``1/e`` each.
    """
    q = np.arange(scores.shape[0])
    elig = eligible.copy()
    elig[q, positive] = True
    s_pos = scores[q, positive]
    s = np.where(elig, scores, -np.inf)
    greater = (s > s_pos[:, None]).sum(axis=1)
    equal = (s == s_pos[:, None]).sum(axis=1)
    out: dict[str, float] = {"queries": float(scores.shape[0]),
                             "mean_candidates": float(elig.sum(axis=1).mean()) if len(q) else 0.0}
    for k in ks:
        ranks = np.arange(1, k + 1)
        prefix_hit = np.concatenate([[0.0], np.ones(k)]).cumsum()  # positions <= k
        prefix_dcg = np.concatenate([[0.0], 1.0 / np.log2(ranks + 1.0)]).cumsum()
        lo = np.minimum(greater, k)
        hi = np.minimum(greater + equal, k)
        hit = (prefix_hit[hi] - prefix_hit[lo]) / equal
        dcg = (prefix_dcg[hi] - prefix_dcg[lo]) / equal
        out[f"recall@{k}"] = float(hit.mean()) if len(q) else 0.0
        out[f"precision@{k}"] = out[f"recall@{k}"] / k
        out[f"ndcg@{k}"] = float(dcg.mean()) if len(q) else 0.0
    return out


def campaign_offer_sets(log: pd.DataFrame, num_offers: int, rows: np.ndarray) -> np.ndarray:
    """bool [len(rows), offers]: the offers shown anywhere in each row's campaign (what the
    randomized logging policy drew from)."""
    codes, names = pd.factorize(log[OPTIONAL_LOG_COLUMN])
    sets = np.zeros((len(names), num_offers), dtype=bool)
    sets[codes, log["offer"].to_numpy()] = True
    return sets[codes[rows]]


def eligibility(offers: Sequence[Mapping[str, Any]], user_country: np.ndarray, user_tier: np.ndarray,
                day: np.ndarray | None, channel: np.ndarray) -> np.ndarray:
    """bool [rows, offers]: what the service's filter stage lets through for each row: active
    on ``day`` (skipped when None), allowed ``channel``, the user's country and tier audience
    (``<tier>_tier``). Values the world does not know are not restricted."""
    from offline.world import CHANNELS, COUNTRIES, TIERS, offer_active_days, offer_targeting_masks

    masks = offer_targeting_masks(list(offers))
    ok = np.ones((len(channel), len(offers)), dtype=bool)
    if day is not None:
        lo, hi = offer_active_days(list(offers))
        ok &= (lo[None, :] <= day[:, None]) & (day[:, None] < hi[None, :])

    def by(names: Sequence[str], values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        idx = pd.Index(list(names)).get_indexer(np.asarray(values, dtype=object))
        known = idx >= 0
        out = np.ones((len(values), mask.shape[0]), dtype=bool)
        out[known] = mask[:, idx[known]].T
        return out

    ok &= by(CHANNELS, channel, masks["channel"])
    ok &= by(COUNTRIES, user_country, masks["country"])
    ok &= by(TIERS, user_tier, masks["tier"])
    return ok


# ---------------------------------------------------------------------------------------------
# export (docs/models-format.md)


def _golden_rows(model: TwoTowerModel) -> list[dict[str, dict[str, Any]]]:
    """Raw golden inputs: held-out examples, all missing, unseen categories, numeric +-4 std."""
    sections = model.sections
    rows = [{sec: {s.name: jsonable_raw(ex.get(sec, {}).get(s.name), s.kind) for s in specs}
             for sec, specs in sections.items()} for ex in model.raw_examples]
    base = rows[0] if rows else {sec: {} for sec in sections}
    rows.append({sec: {} for sec in sections})
    rows.append({sec: {s.name: ("__unseen__" if s.kind == "categorical" else None) for s in specs}
                 for sec, specs in sections.items()})
    for z in (-4.0, 4.0):
        rows.append({sec: {s.name: (raw_for_encoded(s, z) if s.kind == "numeric" else base.get(sec, {}).get(s.name))
                           for s in specs} for sec, specs in sections.items()})
    return [{sec: {k: v for k, v in vals.items() if v is not None} for sec, vals in r.items()} for r in rows]


def golden_cases(model: TwoTowerModel, layers: Sequence[DenseLayer]) -> list[dict[str, Any]]:
    """Raw inputs with the float32 pre-normalisation tower outputs of the numpy reference."""
    rows = _golden_rows(model)
    n = len(rows)
    raw = {sec: {s.name: [r[sec].get(s.name) for r in rows] for s in specs} for sec, specs in model.sections.items()}
    x = model.encode_inputs(raw["user"], raw["context"], n)
    out = mlp_forward(layers, x)
    return [{"inputs": r, "outputs": {HEAD_NAME: [float(v) for v in y]}} for r, y in zip(rows, out)]


def export_user_tower(model_or_dir: TwoTowerModel | str | os.PathLike[str],
                      bundle_dir: str | os.PathLike[str],
                      feature_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the user tower into ``bundle_dir`` per docs/models-format.md and return the
    manifest fragment ``{"models": {"user_tower": spec}, "feature_schema": {...}, "files":
    {relpath: {sha256, bytes}}, "golden": {...}}``.

    ``model_or_dir`` is a trained :class:`TwoTowerModel` or the output directory of a finished
    ``train`` run (its ``user_tower_manifest_fragment.json``, ``models/`` and ``golden.json``
    are copied). Golden cases are merged into ``bundle_dir/golden.json`` (``merge_golden``:
    other models' entries are kept). ``feature_schema`` (the bundle's, when already decided)
    must have the id the tower was trained on, else ValueError.
    """
    bundle = Path(bundle_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    if not isinstance(model_or_dir, TwoTowerModel):
        return _export_from_dir(Path(model_or_dir), bundle, feature_schema)
    model = model_or_dir
    schema = dict(model.feature_schema)
    if feature_schema is not None and feature_schema.get("id") != schema["id"]:
        raise ValueError(f"user tower was trained on feature schema {schema['id']}, "
                         f"bundle has {feature_schema.get('id')}")
    layers = model.layers()
    spec, files = export_mlp(layers, bundle, f"{MODEL_NAME}.{HEAD_NAME}")
    # golden outputs from the float32 files just written (what the service loads)
    exported = load_mlp(spec, bundle)
    golden = {"rtol": GOLDEN_RTOL, "atol": GOLDEN_ATOL, "cases": golden_cases(model, exported)}
    merge_golden(bundle, MODEL_NAME, golden)
    files["golden.json"] = common.file_entry(bundle / "golden.json")
    model_spec = {
        "kind": "two_tower_user",
        "inputs": {
            "user": {"source": "feature_schema", "feature_schema_id": schema["id"]},
            "context": {"features": [s.to_json() for s in model.context_specs]},
        },
        "heads": {HEAD_NAME: {"inputs": ["user", "context"], **spec}},
        "golden": "golden.json",
    }
    return {"models": {MODEL_NAME: model_spec}, "feature_schema": schema, "files": files, "golden": golden}


def _export_from_dir(src: Path, bundle: Path, feature_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    frag_path = src / FRAGMENT_NAME
    if not frag_path.is_file():
        raise FileNotFoundError(f"{frag_path}: not found (not a train output directory?)")
    frag = json.loads(frag_path.read_text(encoding="utf-8"))
    schema = frag["feature_schema"]
    if feature_schema is not None and feature_schema.get("id") != schema["id"]:
        raise ValueError(f"user tower was trained on feature schema {schema['id']}, "
                         f"bundle has {feature_schema.get('id')}")
    golden_doc = json.loads((src / "golden.json").read_text(encoding="utf-8"))
    golden = golden_doc["models"][MODEL_NAME]
    files: dict[str, Any] = {}
    if src.resolve() != bundle.resolve():
        for rel in frag["files"]:
            if rel == "golden.json":
                continue
            dst = bundle / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((src / rel).read_bytes())
    for rel in frag["files"]:
        if rel != "golden.json":
            files[rel] = common.file_entry(bundle / rel)
    merge_golden(bundle, MODEL_NAME, golden)
    files["golden.json"] = common.file_entry(bundle / "golden.json")
    return {"models": frag["models"], "feature_schema": schema, "files": files, "golden": golden}


# ---------------------------------------------------------------------------------------------
# the job


def _plot(path: Path, metrics: Mapping[str, Mapping[str, Mapping[str, float]]], ks: Sequence[int],
          history: Mapping[str, Any], title: str) -> None:
    """Bars of recall@k / NDCG@k per scorer, one panel per candidate set, and the loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in ("campaign", "eligible") if s in metrics]
    fig, axes = plt.subplots(1, len(sets) + 1, figsize=(5.2 * len(sets) + 4, 4.2), dpi=100,
                             gridspec_kw={"width_ratios": [3] * len(sets) + [2]})
    keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    for ax, cand in zip(axes, sets):
        names = list(metrics[cand])
        width = 0.8 / len(names)
        x = np.arange(len(keys))
        for i, name in enumerate(names):
            vals = [metrics[cand][name][k] for k in keys]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name)
        ax.set_xticks(x)
        ax.set_xticklabels(keys, fontsize=8)
        ax.set_ylabel("held-out value")
        ax.set_title(f"{title}\ncandidates: {cand}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    ax2 = axes[-1]
    for key, label in (("fit_loss", "fit (train minus validation)"), ("validation_loss", "validation"),
                       ("train_loss", "final (all training rows)")):
        if history.get(key):
            ax2.plot(np.arange(1, len(history[key]) + 1), history[key], marker=".", label=label)
    ax2.axvline(history["epochs_used"], color="0.5", linestyle=":", lw=0.8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("loss")
    ax2.set_title(f"training ({history['epochs_used']} epochs used)", fontsize=9)
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def run(world_dir: Path, out: Path, cfg: TrainConfig,
        feature_schema_path: Path | None = None) -> tuple[dict[str, Any], TwoTowerModel]:
    """Train, evaluate, write the outputs (train.json too); returns (train.json document, model)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = load_training_data(world_dir, feature_schema_path)
    log = data.log
    log_path = world_dir / "campaign_log.csv"
    clicked = log["clicked"].to_numpy()
    day = log["day"].to_numpy()
    cut, test = chronological_split(day, clicked, cfg.holdout_fraction, log_path)
    train_rows = ~test
    pos_train = np.flatnonzero(train_rows & (clicked == 1))
    pos_test = np.flatnonzero(test & (clicked == 1))
    num_offers = len(data.offers)
    offer_of_row = log["offer"].to_numpy()
    click_counts = np.bincount(offer_of_row[pos_train], minlength=num_offers).astype(np.float64)
    shown_counts = np.bincount(offer_of_row[train_rows], minlength=num_offers).astype(np.float64)

    user_specs = [FeatureSpec.from_json(f) for f in data.feature_schema["features"]]
    ctx_frame = log[list(CONTEXT_FEATURES)]
    context_specs = [fit_feature_spec(c, ctx_frame.loc[train_rows, c], "categorical") for c in CONTEXT_FEATURES]
    o_specs = offer_specs(data.offers)
    offer_x = encode_offers(data.offers, o_specs)
    user_x_all = encode_section(user_specs, data.user_table)
    user_width = user_x_all.shape[1]
    model = TwoTowerModel(None, cfg, data.feature_schema, user_specs, context_specs, o_specs, offer_x)

    def inputs(rows: np.ndarray) -> np.ndarray:
        ctx = encode_section(context_specs, ctx_frame.iloc[rows].reset_index(drop=True), len(rows))
        return np.ascontiguousarray(np.concatenate([user_x_all[log["user"].to_numpy()[rows]], ctx], axis=1))

    train_idx = np.flatnonzero(train_rows)
    train = Rows(inputs(train_idx), offer_of_row[train_idx], clicked[train_idx])
    context_missing = encode_section(context_specs, {}, 1)[0]
    timings["load_and_encode"] = time.perf_counter() - started

    t0 = time.perf_counter()
    module, history = train_model(train, offer_x, cfg, slice(user_width, train.x.shape[1]), context_missing,
                                  cfg.validation_fraction, day[train_idx])
    model.module = module
    model.history = history
    timings["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    offer_emb = model.offer_embeddings()
    x_test = inputs(pos_test)
    query = unit_rows32(model.user_raw_torch(x_test))
    users_test = log["user"].to_numpy()[pos_test]
    eligible = eligibility(data.offers, data.user_country[users_test], data.user_tier[users_test],
                           day[pos_test].astype(np.float64), log["channel"].to_numpy()[pos_test])
    positive = offer_of_row[pos_test]
    rng = np.random.default_rng(cfg.seed)
    scorers = {
        "two_tower": query.astype(np.float64) @ offer_emb.T.astype(np.float64),
        "popularity": np.broadcast_to(click_counts, (len(pos_test), num_offers)),
        "popularity_ctr": np.broadcast_to(smoothed_ctr(click_counts, shown_counts), (len(pos_test), num_offers)),
        "random": np.zeros((len(pos_test), num_offers)),
    }
    candidate_sets: dict[str, np.ndarray] = {}
    if OPTIONAL_LOG_COLUMN in log.columns:
        candidate_sets["campaign"] = eligible & campaign_offer_sets(log, num_offers, pos_test)
    candidate_sets["eligible"] = eligible
    candidate_sets["catalog"] = np.ones_like(eligible)
    metrics = {cand: {name: ranking_metrics(s, mask, positive, cfg.ks) for name, s in scorers.items()}
               for cand, mask in candidate_sets.items()}
    lift = {cand: {f"{m}@{k}": (mm["two_tower"][f"{m}@{k}"] / mm["popularity"][f"{m}@{k}"]
                                if mm["popularity"][f"{m}@{k}"] > 0 else None)
                   for m in ("recall", "ndcg") for k in cfg.ks} for cand, mm in metrics.items()}
    beats = {cand: all(mm["two_tower"][f"{m}@{k}"] > mm["popularity"][f"{m}@{k}"]
                       for m in ("recall", "ndcg") for k in cfg.ks) for cand, mm in metrics.items()}
    timings["evaluate"] = time.perf_counter() - t0

    # outputs
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ex_rows = np.sort(rng.choice(pos_test, size=min(32, len(pos_test)), replace=False))
    users_raw = data.user_table
    model.raw_examples = [
        {"user": {s.name: users_raw[s.name].iloc[int(log["user"].iloc[r])] for s in user_specs},
         "context": {c: ctx_frame[c].iloc[r] for c in CONTEXT_FEATURES}} for r in ex_rows]
    n_users = len(data.user_ids)
    user_in = np.concatenate([user_x_all, np.broadcast_to(context_missing, (n_users, len(context_missing)))], axis=1)
    user_emb = unit_rows32(model.user_raw_torch(user_in))
    common.write_npy(out / "offer_embeddings.npy", offer_emb, dtype="<f4")
    common.write_npy(out / "user_embeddings.npy", user_emb, dtype="<f4")
    (out / "user_ids.txt").write_text("".join(f"{u}\n" for u in data.user_ids), encoding="utf-8")
    fragment = export_user_tower(model, out)
    common.write_json(out / FRAGMENT_NAME, {k: v for k, v in fragment.items() if k != "golden"})
    _plot(out / "train_metrics.png", metrics, cfg.ks, history,
          f"held-out clicks from {common.day_to_date(cut)}")
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    doc = {
        "format": "offerd-train", "format_version": 1,
        "world": str(world_dir), "out": str(out),
        "config": {**asdict(cfg), "user_hidden": list(cfg.user_hidden), "offer_hidden": list(cfg.offer_hidden),
                   "ks": list(cfg.ks)},
        "feature_schema_id": data.feature_schema["id"],
        "data": {
            "impressions": int(len(log)), "clicks": int(clicked.sum()),
            "train_positives": int(len(pos_train)), "heldout_positives": int(len(pos_test)),
            "heldout_from": common.day_to_date(cut).isoformat(),
            "offers": num_offers, "users": n_users,
            "offers_with_train_clicks": int((click_counts > 0).sum()),
        },
        "candidate_sets": {
            "campaign": "eligible offers of the row's campaign: the set the randomized logging policy drew the "
                        "shown offer from (the unbiased comparison under randomized exposure; read this one)",
            "eligible": "offers the service's filter lets through for the row: active on the row's day, "
                        "channel, country, tier audience (depends on which offers the held-out campaigns carried)",
            "catalog": "every offer",
        },
        "metrics": metrics,
        "two_tower_over_popularity": lift,
        "beats_popularity": beats,
        "training": history,
        "outputs": {"offer_embeddings": "offer_embeddings.npy", "user_embeddings": "user_embeddings.npy",
                    "user_ids": "user_ids.txt", "fragment": FRAGMENT_NAME, "golden": "golden.json",
                    "plot": "train_metrics.png", "files": sorted(fragment["files"])},
        "golden": {"cases": len(fragment["golden"]["cases"]), "outputs": "pre-normalisation embedding head output",
                   "rtol": GOLDEN_RTOL, "atol": GOLDEN_ATOL},
        "metric_definitions": ranking_metrics.__doc__.strip(),
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    common.write_json(out / "train.json", {k: v for k, v in doc.items() if k != "timings_seconds"})
    return doc, model


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python3 -m offline train",
                                description="Train the two-tower retrieval model on a world's campaign log.")
    p.add_argument("--world", required=True, type=Path, help="world directory (output of synth)")
    p.add_argument("--out", required=True, type=Path, help="output directory (embeddings, user tower, train.json)")
    p.add_argument("--feature-schema", type=Path,
                   help="bundle feature_schema JSON to use for the user section (default: computed from users.csv "
                        "exactly as offline export does)")
    p.add_argument("--dim", type=int, default=d.dim, help="embedding dimension (default %(default)s)")
    p.add_argument("--loss", choices=("pointwise", "softmax", "both"), default=d.loss,
                   help="pointwise: logistic loss on every impression (clicked vs shown-not-clicked); softmax: "
                        "in-batch sampled softmax over the clicks with logQ/exposure correction; both: their sum "
                        "(default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="maximum training epochs; the count used is picked on the validation split "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="impressions per step of the pointwise loss (default %(default)s)")
    p.add_argument("--softmax-batch", type=int, default=d.softmax_batch,
                   help="clicks per step of the softmax loss = in-batch negatives (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default %(default)s")
    p.add_argument("--id-l2", type=float, default=d.id_l2,
                   help="L2 penalty on the offer id embeddings (default %(default)s)")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="softmax temperature (default %(default)s)")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help="per-step exponential moving average of the weights used for validation and the "
                        "final model; 0 = off (default %(default)s)")
    p.add_argument("--user-hidden", default=",".join(map(str, d.user_hidden)),
                   help="user tower hidden sizes, comma-separated ('' = linear; default %(default)s)")
    p.add_argument("--offer-hidden", default=",".join(map(str, d.offer_hidden)),
                   help="offer tower hidden sizes (default %(default)s)")
    p.add_argument("--no-id-embedding", dest="id_embedding", action="store_false",
                   help="offer tower from features only")
    p.add_argument("--no-logq", dest="logq_correction", action="store_false", help="disable the logQ correction")
    p.add_argument("--no-exposure-correction", dest="exposure_correction", action="store_false",
                   help="disable the exposure correction of the softmax logits")
    p.add_argument("--context-dropout", type=float, default=d.context_dropout, help="default %(default)s")
    p.add_argument("--holdout-fraction", type=float, default=d.holdout_fraction,
                   help="share of the clicks (latest days) held out for the reported metrics (default %(default)s)")
    p.add_argument("--validation-fraction", type=float, default=d.validation_fraction,
                   help="share of the training clicks (latest days) held back to pick the epoch count; 0 = use "
                        "--epochs as is (default %(default)s)")
    p.add_argument("--k", type=int, action="append", help="cut-offs of the metrics (repeatable; default 10, 50)")
    p.add_argument("--seed", type=int, default=d.seed, help="default %(default)s")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch threads (default %(default)s; more threads are slower on this small model)")
    return p


def _sizes(text: str, flag: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(h) for h in text.split(",") if h.strip())
    except ValueError:
        raise common.JobError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if any(h <= 0 for h in sizes):
        raise common.JobError(f"{flag}: sizes must be > 0")
    return sizes


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    checks = [(1 <= args.dim <= 4096, "--dim must be in 1..4096"), (args.epochs >= 1, "--epochs must be >= 1"),
              (args.batch_size >= 2, "--batch-size must be >= 2"),
              (args.softmax_batch >= 2, "--softmax-batch must be >= 2"), (args.lr > 0, "--lr must be > 0"),
              (args.temperature > 0, "--temperature must be > 0"), (args.id_l2 >= 0, "--id-l2 must be >= 0"),
              (0.0 <= args.context_dropout < 1.0, "--context-dropout must be in [0, 1)"),
              (0.0 < args.holdout_fraction < 1.0, "--holdout-fraction must be in (0, 1)"),
              (0.0 <= args.validation_fraction < 1.0, "--validation-fraction must be in [0, 1)"),
              (0.0 <= args.ema_decay < 1.0, "--ema-decay must be in [0, 1)"),
              (args.threads >= 1, "--threads must be >= 1")]
    for ok, message in checks:
        if not ok:
            raise common.JobError(message)
    ks = tuple(sorted(set(args.k))) if args.k else DEFAULT_KS
    if any(k < 1 for k in ks):
        raise common.JobError("--k must be >= 1")
    return TrainConfig(dim=args.dim, loss=args.loss, epochs=args.epochs, batch_size=args.batch_size,
                       softmax_batch=args.softmax_batch, lr=args.lr, weight_decay=args.weight_decay,
                       id_l2=args.id_l2, ema_decay=args.ema_decay, temperature=args.temperature,
                       user_hidden=_sizes(args.user_hidden, "--user-hidden"),
                       offer_hidden=_sizes(args.offer_hidden, "--offer-hidden"), id_embedding=args.id_embedding,
                       logq_correction=args.logq_correction, exposure_correction=args.exposure_correction,
                       context_dropout=args.context_dropout, holdout_fraction=args.holdout_fraction,
                       validation_fraction=args.validation_fraction, ks=ks, seed=args.seed, threads=args.threads)


def main(argv: list[str]) -> int:
    """CLI entry point (see module docstring)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        doc, _model = run(args.world, args.out, cfg, args.feature_schema)
        lines = [f"train: {doc['data']['train_positives']} training clicks, {doc['data']['heldout_positives']} "
                 f"held out (from {doc['data']['heldout_from']}); {doc['timings_seconds']['total']:.1f}s"]
        for cand, mm in doc["metrics"].items():
            for name, m in mm.items():
                lines.append(f"train: {cand:<9} {name:<10} " + "  ".join(
                    f"{key} {m[key]:.4f}" for key in sorted(m) if "@" in key and not key.startswith("precision")))
        print("\n".join(lines), file=sys.stderr)
        print("train: timings " + json.dumps(doc["timings_seconds"]), file=sys.stderr)
        common.emit_json({k: doc[k] for k in ("out", "feature_schema_id", "data", "two_tower_over_popularity",
                                              "beats_popularity")}
                         | {"metrics": doc["metrics"]})
        return 0

    return common.run_job("train", body)
