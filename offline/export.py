"""``offline export``: write a snapshot bundle and users.jsonl from a world directory.

Usage::

    /usr/bin/python3 -m offline export --world DIR --snapshot-root ROOT [--version V]
        [--users-out FILE] [--index flat|ivf|hnsw] [--prebuilt-index] [--embeddings-from DIR]
        [--models-from DIR ...] [--clv FILE] [--embedding-dim 64] [--retrieval-k 200]
        [--as-of YYYY-MM-DD]

Writes ``ROOT/.tmp-<version>/`` and renames it to ``ROOT/<version>/`` (docs/snapshot-format.md):
``MANIFEST.json``, ``offers.jsonl``, ``offer_embeddings.npy`` (float32, unit rows) and, with
``--prebuilt-index``, ``index.faiss``. An existing version is refused (exit 2). ``--users-out``
(default ``<world>/users.jsonl``) gets the header line and one user per line: raw features by
schema name, the stored embedding and the purchase (RFM) base computed from transactions.csv
before the as-of date (one purchase occasion per day).

**User features** (:func:`user_feature_table`, :func:`build_feature_schema`): every profile
column of users.csv except ``user_id`` and ``signup_date``, in file order; numeric columns get
a numeric encoder (population mean/std rounded to 6 decimals), the others a categorical one
(vocabulary = sorted observed values). Time-dependent purchase behaviour is *not* a feature: the
service derives it at request time from the purchase base (``purchases``). Other jobs that
build models on user features (uplift, train) must use this schema (``build`` writes it to
``feature_schema.json``; :func:`feature_schema_for_world` computes it) so that their inputs
match the bundle; :func:`encode_features` is the reference encoder of the contract.

**Baseline embeddings** (when ``--embeddings-from`` is not given), learned from the randomized
campaign log, never from the ground truth:

1. ``X`` = users x offers positive-interaction matrix from rows with an impression:
   ``clicked + 0.5 * redeemed`` summed over campaigns (a redemption always comes with a click).
2. Offer-offer kernel ``K = cos(Xn) + side_weight * S S^T`` (side_weight = 2): ``cos(Xn)`` is
   the cosine similarity of offers' co-interaction columns after dividing each user row by the
   square root of its total (so heavy clickers do not dominate); ``S`` are unit-normalised,
   weighted one-hot side features of each offer (category 1.0, type 0.5, type x value tercile
   0.3, channels 0.2). Offers without interactions are placed by their side information next
   to similar offers.
3. Offer embeddings = top ``embedding_dim`` eigenvectors of ``K`` scaled by the square roots of
   their eigenvalues (a truncated SVD of the implicit feature map), signs fixed, rows
   L2-normalised.
4. Profile vector of every user = ridge regression from the one-hot profile (source, country,
   tier, device, income band, age bucket) to the engaged users' normalised ``X_u @ E``.
   A user with interactions gets ``normalise(normalise(X_u @ E) + profile)``; a user without
   gets the normalised profile vector (with no engaged users at all: the normalised mean offer
   embedding). On the default world this scores offers with a correlation of about 0.2 with
   the users' true taste (0 for random vectors); the two-tower job is expected to beat it.

With ``--embeddings-from DIR`` (output of the ``train`` job) the embeddings are
``DIR/user_embeddings.npy`` [users, D] and ``DIR/offer_embeddings.npy`` [offers, D] (rows in
users.csv / offers.jsonl order; re-normalised).

``--models-from DIR`` (repeatable) merges a model export: ``DIR/*manifest_fragment.json`` =
``{"models": {...}, "feature_schema": {"id": ..., ...}, "files": {relpath: {...}}}`` (the
convention of ``offline.uplift``). Its feature-schema id must equal the bundle's, model names
must not collide, every listed file is copied into the bundle and re-hashed; ``golden.json``
documents of several sources are merged by their ``models`` maps. A fragment may also carry
``"policy"`` (validated defaults ``beta`` / ``min_ev``, merged into the manifest's ``policy``) and
``"retrieval"`` (the fingerprint of the embeddings its ``retrieval_score`` input was computed
with, offline/retrieval.py): the bundle's ``offer_embeddings.npy`` and user tower must then be
exactly those, else export fails naming the mismatch.

``--clv FILE`` (``clv.json`` of the ``clv`` job, or its output directory) writes the manifest's
``clv`` section (docs/snapshot-format.md) from the fit: BG/NBD ``r, alpha, a, b`` (time unit
weeks, checked against the file's ``time_unit``), Gamma-Gamma ``p, q, v`` and the valuation the
fit was scored with (``clv.horizon_weeks``, ``clv.margin``, ``clv.annual_discount_rate``). The
service computes each user's CLV and P(alive) from these and the ``purchases`` base of
users.jsonl (days since the epoch; it divides by 7, so ``t_x`` and ``T`` are in the fit's weeks;
``x`` and the repeat spend are defined exactly as in ``offline/clv.py``). Without ``--clv`` the
manifest has no ``clv`` section and the served CLV is 0.

The output is deterministic for a fixed world (only MANIFEST ``created_at`` and a default
version differ between runs).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from offline import common
from offline.retrieval import bundle_offer_embeddings

FORMAT = "offerd-bundle"
FORMAT_VERSION = 1
USERS_FORMAT = "offerd-users"
VERSION_RE = re.compile(r"^[0-9A-Za-z._-]{1,128}$")
DEFAULT_EMBEDDING_DIM = 64
DEFAULT_RETRIEVAL_K = 200
SIDE_WEIGHT = 2.0
RIDGE_ALPHA = 10.0
PROFILE_BLEND = 1.0  # weight of the profile vector added to a warm user's engagement vector

USERS_COLUMNS = ("user_id", "signup_date", "acquisition_source", "acquisition_cost", "country", "age",
                 "tier", "device")
TRANSACTIONS_COLUMNS = ("user_id", "date", "amount")
CAMPAIGN_COLUMNS = ("user_id", "offer_id", "impression", "clicked", "redeemed")
OFFER_FIELDS = ("offer_id", "category", "type", "title", "margin", "cost")
NON_FEATURE_COLUMNS = ("user_id", "signup_date")


# ---------------------------------------------------------------------------------------------
# reading a world


@dataclass
class WorldData:
    """The data files of a world that export reads (no ground truth)."""

    directory: Path
    users: pd.DataFrame
    transactions: pd.DataFrame
    offers: list[dict[str, Any]]
    campaign_log: pd.DataFrame | None
    as_of_day: int


def _read_csv(path: Path, required: tuple[str, ...], dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise common.JobError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise common.JobError(f"{path}: cannot parse CSV: {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise common.JobError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & (frame[column].astype(str).to_numpy() != "")
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise common.JobError(f"{path}: column {column}: non-numeric value {frame[column].iloc[row]!r} "
                              f"on data row {row + 1}")
    return values


def read_offers(path: Path) -> list[dict[str, Any]]:
    """Read a raw catalog (offers.jsonl of a world) and check required fields and unique ids."""
    if not path.is_file():
        raise common.JobError(f"{path}: file not found")
    offers: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                offer = json.loads(line)
            except json.JSONDecodeError as exc:
                raise common.JobError(f"{path}:{line_no}: invalid JSON: {exc}") from exc
            missing = [f for f in OFFER_FIELDS if f not in offer]
            if missing:
                raise common.JobError(f"{path}:{line_no}: missing field(s) {', '.join(missing)}")
            offers.append(offer)
    if not offers:
        raise common.JobError(f"{path}: no offers")
    ids = [str(o["offer_id"]) for o in offers]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise common.JobError(f"{path}: duplicate offer_id {dup!r}")
    return offers


def read_world(world_dir: Path, as_of: str | None = None, need_campaigns: bool = True) -> WorldData:
    """Read and validate a world directory (errors name the file and the problem)."""
    if not world_dir.is_dir():
        raise common.JobError(f"{world_dir}: world directory not found")
    users = _read_csv(world_dir / "users.csv", USERS_COLUMNS, dtype={"user_id": str})
    if users["user_id"].duplicated().any():
        dup = users["user_id"][users["user_id"].duplicated()].iloc[0]
        raise common.JobError(f"{world_dir / 'users.csv'}: duplicate user_id {dup!r}")
    tx = _read_csv(world_dir / "transactions.csv", TRANSACTIONS_COLUMNS, dtype={"user_id": str, "date": str})
    offers = read_offers(world_dir / "offers.jsonl")
    log = None
    if need_campaigns:
        log = _read_csv(world_dir / "campaign_log.csv", CAMPAIGN_COLUMNS,
                        dtype={"user_id": str, "offer_id": str})
    if as_of is not None:
        as_of_day = common.date_to_day(common.parse_date(as_of))
    else:
        meta_path = world_dir / "synth.json"
        if not meta_path.is_file():
            raise common.JobError(f"{meta_path}: file not found (give --as-of for worlds without it)")
        try:
            as_of_day = common.date_to_day(common.parse_date(json.loads(meta_path.read_text())["as_of"]))
        except (KeyError, json.JSONDecodeError) as exc:
            raise common.JobError(f"{meta_path}: no valid 'as_of' ({exc})") from exc
    return WorldData(world_dir, users, tx, offers, log, as_of_day)


# ---------------------------------------------------------------------------------------------
# user features and schema


@dataclass
class PurchaseBase:
    """Per-user RFM base (days since epoch); ``has`` = at least one purchase before as-of."""

    has: np.ndarray
    first_day: np.ndarray
    last_day: np.ndarray
    repeat_days: np.ndarray
    repeat_spend_sum: np.ndarray


def purchase_base(world: WorldData) -> PurchaseBase:
    """RFM base from transactions.csv before the as-of date, one purchase occasion per day."""
    path = world.directory / "transactions.csv"
    tx = world.transactions
    n = len(world.users)
    index = pd.Index(world.users["user_id"])
    user = index.get_indexer(tx["user_id"])
    if (user < 0).any():
        bad = tx["user_id"].iloc[int(np.flatnonzero(user < 0)[0])]
        raise common.JobError(f"{path}: user_id {bad!r} not in users.csv")
    day = common.days_from_iso(tx["date"].to_numpy(dtype=str), f"{path}: column date")
    amount = _numeric(tx, "amount", path)
    if np.isnan(amount).any():
        raise common.JobError(f"{path}: column amount: empty value")
    keep = day < world.as_of_day
    user, day, amount = user[keep], day[keep], amount[keep]
    # aggregate to (user, day) occasions
    key = user.astype(np.int64) * 1_000_000 + (day - day.min() if day.size else day)
    uniq, inverse = np.unique(key, return_inverse=True)
    occ_spend = np.bincount(inverse, weights=amount, minlength=uniq.size)
    occ_user = np.zeros(uniq.size, dtype=np.int64)
    occ_day = np.zeros(uniq.size, dtype=np.int64)
    occ_user[inverse] = user
    occ_day[inverse] = day
    n_days = np.bincount(occ_user, minlength=n)
    has = n_days > 0
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    # occasions are sorted by (user, day) because keys are
    starts = np.concatenate([[0], np.cumsum(n_days)])[:-1]
    first[has] = occ_day[starts[has]]
    last[has] = occ_day[starts[has] + n_days[has] - 1]
    total = np.bincount(occ_user, weights=occ_spend, minlength=n)
    first_spend = np.zeros(n)
    first_spend[has] = occ_spend[starts[has]]
    return PurchaseBase(has, first, last, np.maximum(n_days - 1, 0), np.round(total - first_spend, 2))


def user_feature_table(world: WorldData) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Raw user features (NaN / "" = missing), one row per users.csv row, plus (name, kind)
    per feature in schema order. Numeric = a column pandas reads as numbers."""
    users = world.users
    path = world.directory / "users.csv"
    table = pd.DataFrame({"user_id": users["user_id"].astype(str).to_numpy()})
    kinds: list[tuple[str, str]] = []
    for name in users.columns:
        if name in NON_FEATURE_COLUMNS:
            continue
        column = users[name]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            table[name] = column.to_numpy(dtype=np.float64)
            kinds.append((name, "numeric"))
        else:
            numeric = pd.to_numeric(column.replace("", np.nan), errors="coerce")
            if column.ne("").any() and numeric.notna().sum() == column.ne("").sum():
                table[name] = numeric.to_numpy(dtype=np.float64)  # numbers with some blanks
                kinds.append((name, "numeric"))
            else:
                table[name] = column.astype(str).to_numpy()
                kinds.append((name, "categorical"))
    if not kinds:
        raise common.JobError(f"{path}: no feature columns besides {', '.join(NON_FEATURE_COLUMNS)}")
    return table, kinds


def build_feature_schema(table: pd.DataFrame, kinds: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``feature_schema.features`` of the manifest for a feature table, in model input order."""
    features: list[dict[str, Any]] = []
    for name, kind in kinds:
        if kind == "numeric":
            values = table[name].to_numpy(dtype=np.float64)
            values = values[~np.isnan(values)]
            mean = round(float(values.mean()), 6) if values.size else 0.0
            std = round(float(values.std()), 6) if values.size else 0.0
            features.append({"name": name, "kind": "numeric", "mean": mean, "std": std if std > 0 else 1.0})
        else:
            vocab = sorted(v for v in set(table[name].tolist()) if v != "")
            features.append({"name": name, "kind": "categorical", "vocabulary": vocab})
    return features


def feature_schema_for_world(world_dir: Path) -> dict[str, Any]:
    """``{"id": ..., "features": [...]}`` exactly as export writes it for this world."""
    world = read_world(world_dir, as_of="1970-01-01", need_campaigns=False)
    table, kinds = user_feature_table(world)
    features = build_feature_schema(table, kinds)
    return {"id": schema_id(features), "features": features}


def schema_id(features: list[dict[str, Any]]) -> str:
    """The documented id: first 16 hex of sha256 of compact, key-sorted JSON of the features."""
    return common.compact_json_sha16(features)


def encoded_width(features: list[dict[str, Any]]) -> int:
    """Number of columns of the encoded feature vector."""
    return sum(1 if f["kind"] == "numeric" else len(f["vocabulary"]) + 1 for f in features)


def encode_features(table: pd.DataFrame, features: list[dict[str, Any]]) -> np.ndarray:
    """Reference encoder of the contract: numeric ``(x-mean)/std`` (missing -> 0); categorical
    one-hot over the vocabulary plus a trailing unknown/missing slot. Returns float32 [n, width]."""
    n = len(table)
    out = np.zeros((n, encoded_width(features)), dtype=np.float32)
    col = 0
    for f in features:
        if f["kind"] == "numeric":
            x = table[f["name"]].to_numpy(dtype=np.float64) if f["name"] in table else np.full(n, np.nan)
            z = (x - f["mean"]) / f["std"]
            out[:, col] = np.where(np.isnan(z), 0.0, z)
            col += 1
        else:
            vocab = f["vocabulary"]
            values = table[f["name"]].astype(str).to_numpy() if f["name"] in table else np.full(n, "")
            idx = pd.Index(vocab).get_indexer(values)
            idx = np.where(idx < 0, len(vocab), idx)
            out[np.arange(n), col + idx] = 1.0
            col += len(vocab) + 1
    return out


# ---------------------------------------------------------------------------------------------
# embeddings


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def interaction_matrix(world: WorldData) -> sp.csr_matrix:
    """Users x offers positive-interaction weights (clicked + 0.5*redeemed, impression rows only)."""
    log = world.campaign_log
    path = world.directory / "campaign_log.csv"
    assert log is not None
    user = pd.Index(world.users["user_id"]).get_indexer(log["user_id"])
    offer = pd.Index([str(o["offer_id"]) for o in world.offers]).get_indexer(log["offer_id"])
    weight = _numeric(log, "clicked", path) + 0.5 * _numeric(log, "redeemed", path)
    weight = np.nan_to_num(weight) * (np.nan_to_num(_numeric(log, "impression", path)) > 0)
    keep = (user >= 0) & (offer >= 0) & (weight > 0)
    return sp.csr_matrix((weight[keep], (user[keep], offer[keep])),
                         shape=(len(world.users), len(world.offers)), dtype=np.float64)


SIDE_TOKEN_WEIGHTS: dict[str, float] = {"cat": 1.0, "type": 0.5, "value": 0.3, "channel": 0.2}


def offer_side_features(offers: list[dict[str, Any]]) -> np.ndarray:
    """Unit-normalised weighted one-hot side information per offer.

    Tokens: category (weight 1.0), type (0.5), type x value tercile (0.3) and channels (0.2 in
    total), so that side information groups offers mainly by category, then by mechanics.
    """
    tokens: list[dict[str, float]] = []
    values_by_type: dict[str, list[float]] = {}
    for o in offers:
        if isinstance(o.get("value"), (int, float)):
            values_by_type.setdefault(str(o["type"]), []).append(float(o["value"]))
    w = SIDE_TOKEN_WEIGHTS
    for o in offers:
        t = {f"cat={o['category']}": w["cat"], f"type={o['type']}": w["type"]}
        vals = sorted(set(values_by_type.get(str(o["type"]), [])))
        if vals and isinstance(o.get("value"), (int, float)):
            rank = vals.index(float(o["value"])) / max(len(vals) - 1, 1)
            tercile = "low" if rank < 0.34 else "mid" if rank < 0.67 else "high"
            t[f"type={o['type']}|value={tercile}"] = w["value"]
        channels = o.get("channels") or ["any"]
        for c in channels:
            t[f"channel={c}"] = w["channel"] / len(channels)
        tokens.append(t)
    vocab = {tok: i for i, tok in enumerate(sorted({tok for t in tokens for tok in t}))}
    side = np.zeros((len(offers), len(vocab)))
    for i, t in enumerate(tokens):
        for tok, weight in t.items():
            side[i, vocab[tok]] = weight
    return _unit_rows(side)


def learn_offer_embeddings(x: sp.csr_matrix, side: np.ndarray, dim: int,
                           side_weight: float = SIDE_WEIGHT) -> np.ndarray:
    """Offer embeddings from the eigen-decomposition of the interaction + side-information kernel."""
    row_total = np.asarray(x.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(np.where(row_total > 0, row_total, 1.0))
    xn = sp.diags(scale) @ x
    co = (xn.T @ xn).toarray()
    diag = np.sqrt(np.diag(co))
    denom = np.outer(diag, diag)
    cos = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
    kernel = cos + side_weight * (side @ side.T)
    kernel = 0.5 * (kernel + kernel.T)
    eigval, eigvec = np.linalg.eigh(kernel)
    order = np.argsort(-eigval, kind="stable")[:dim]
    vec = eigvec[:, order] * np.sqrt(np.maximum(eigval[order], 0.0))
    # fix the sign of each component: largest-magnitude entry positive
    pivot = np.argmax(np.abs(vec), axis=0)
    vec *= np.where(vec[pivot, np.arange(vec.shape[1])] < 0, -1.0, 1.0)
    emb = np.zeros((kernel.shape[0], dim))
    emb[:, :vec.shape[1]] = vec
    norms = np.linalg.norm(emb, axis=1)
    if (norms <= 1e-9).any():  # cannot happen with side info, but never emit a zero row
        emb[norms <= 1e-9, 0] = 1.0
    return _unit_rows(emb)


def _profile_onehot(table: pd.DataFrame, kinds: list[tuple[str, str]]) -> np.ndarray:
    """One-hot of the categorical features, age bucket (if an ``age`` column exists) and a bias."""
    cols = []
    for name, kind in kinds:
        if kind != "categorical":
            continue
        values = table[name].astype(str).to_numpy()
        vocab = sorted(set(values.tolist()))
        cols.append((values[:, None] == np.array(vocab)[None, :]).astype(np.float64))
    if "age" in table:
        age = table["age"].to_numpy(dtype=np.float64)
        bucket = np.searchsorted(np.array([25.0, 40.0, 55.0]), np.nan_to_num(age, nan=40.0), side="right")
        cols.append(np.eye(4)[bucket])
    cols.append(np.ones((len(table), 1)))
    return np.concatenate(cols, axis=1)


def learn_user_embeddings(x: sp.csr_matrix, offer_emb: np.ndarray, table: pd.DataFrame,
                          kinds: list[tuple[str, str]]) -> tuple[np.ndarray, int]:
    """User embeddings: interaction fold-in for warm users, profile ridge for cold ones."""
    raw = np.asarray(x @ offer_emb)
    warm = np.linalg.norm(raw, axis=1) > 1e-9
    engaged = np.zeros_like(raw)
    engaged[warm] = _unit_rows(raw[warm])
    profile = np.zeros_like(raw)
    if warm.sum() >= 10:
        f = _profile_onehot(table, kinds)
        gram = f[warm].T @ f[warm] + RIDGE_ALPHA * np.eye(f.shape[1])
        coef = np.linalg.solve(gram, f[warm].T @ engaged[warm])
        profile = _unit_rows(f @ coef)
    users = _unit_rows(engaged + PROFILE_BLEND * profile * warm[:, None] + profile * ~warm[:, None])
    zero = np.linalg.norm(users, axis=1) <= 1e-9
    users[zero] = _unit_rows(offer_emb.mean(axis=0, keepdims=True))[0]
    return users, int(warm.sum())


def load_external_embeddings(directory: Path, num_users: int, num_offers: int) -> tuple[np.ndarray, np.ndarray]:
    """user/offer embeddings written by the training job (checked and re-normalised)."""
    out = []
    for name, rows in (("user_embeddings.npy", num_users), ("offer_embeddings.npy", num_offers)):
        path = directory / name
        if not path.is_file():
            raise common.JobError(f"{path}: file not found")
        try:
            arr = np.load(path, allow_pickle=False).astype(np.float64)
        except ValueError as exc:
            raise common.JobError(f"{path}: not a numeric .npy: {exc}") from exc
        if arr.ndim != 2 or arr.shape[0] != rows:
            raise common.JobError(f"{path}: shape {arr.shape}, expected [{rows}, D]")
        if not np.isfinite(arr).all():
            raise common.JobError(f"{path}: contains NaN or Inf")
        if (np.linalg.norm(arr, axis=1) <= 1e-12).any():
            raise common.JobError(f"{path}: contains an all-zero row")
        out.append(_unit_rows(arr))
    if out[0].shape[1] != out[1].shape[1]:
        raise common.JobError(f"{directory}: user and offer embedding dimensions differ "
                              f"({out[0].shape[1]} vs {out[1].shape[1]})")
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# bundle


def index_section(kind: str, num_offers: int, retrieval_k: int) -> dict[str, Any]:
    """Manifest ``index`` section: flat; ivf with nlist ~ 4*sqrt(n); hnsw parameters."""
    if kind == "flat":
        return {"type": "flat"}
    if kind == "ivf":
        nlist = max(1, min(num_offers, int(round(4 * math.sqrt(num_offers)))))
        nprobe = max(1, min(nlist, max(8, int(math.ceil(nlist / 4)))))
        return {"type": "ivf", "nlist": nlist, "nprobe": nprobe}
    if kind == "hnsw":
        return {"type": "hnsw", "M": 32, "ef_construction": 200, "ef_search": max(400, 2 * retrieval_k)}
    raise common.JobError(f"unknown index type {kind!r} (flat, ivf, hnsw)")


def write_prebuilt_index(path: Path, emb: np.ndarray, index: dict[str, Any]) -> None:
    """Build the manifest's index with FAISS (inner product) and write it to ``path``."""
    import faiss  # imported lazily: only this option needs it

    x = np.ascontiguousarray(emb, dtype=np.float32)
    d = x.shape[1]
    if index["type"] == "flat":
        idx = faiss.IndexFlatIP(d)
    elif index["type"] == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        idx = faiss.IndexIVFFlat(quantizer, d, index["nlist"], faiss.METRIC_INNER_PRODUCT)
        idx.cp.seed = 1234
        idx.train(x)
        idx.nprobe = index["nprobe"]
    else:
        idx = faiss.IndexHNSWFlat(d, index["M"], faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = index["ef_construction"]
        idx.hnsw.efSearch = index["ef_search"]
    idx.add(x)
    faiss.write_index(idx, str(path))


def _date_ms(value: Any) -> int:
    """ISO date (start of day UTC) or Unix ms -> Unix ms; None/empty -> 0 (unbounded)."""
    if value in (None, "", 0):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return common.date_to_day(common.parse_date(str(value))) * common.MS_PER_DAY


def bundle_offer(offer: dict[str, Any]) -> dict[str, Any]:
    """A raw world offer converted to a bundle offers.jsonl row (documented fields only)."""
    out: dict[str, Any] = {
        "offer_id": str(offer["offer_id"]), "category": str(offer["category"]), "type": str(offer["type"]),
        "title": str(offer["title"]), "margin": max(float(offer["margin"]), 0.0),
        "cost": max(float(offer["cost"]), 0.0),
        "active_from_ms": int(offer["active_from_ms"]) if "active_from_ms" in offer
        else _date_ms(offer.get("active_from")),
        "active_to_ms": int(offer["active_to_ms"]) if "active_to_ms" in offer
        else _date_ms(offer.get("active_to")),
        "channels": list(offer.get("channels") or []), "countries": list(offer.get("countries") or []),
        "audiences": list(offer.get("audiences") or []),
        "budget": None if offer.get("budget") is None else int(offer["budget"]),
    }
    if offer.get("caps"):
        out["caps"] = {k: int(v) for k, v in offer["caps"].items()}
    return out


def _format_embedding(row: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.6f}" for v in row) + "]"


def write_users_jsonl(path: Path, table: pd.DataFrame, schema: dict[str, Any], user_emb: np.ndarray,
                      base: PurchaseBase) -> None:
    """users.jsonl: header line, then one user per line (features, embedding, purchases)."""
    dim = user_emb.shape[1]
    fmt = "[" + ",".join(["%.6f"] * dim) + "]"
    header = {"header": {"format": USERS_FORMAT, "format_version": 1, "embedding_dim": dim,
                         "feature_schema": schema}}
    columns: list[tuple[str, np.ndarray, bool]] = []
    for f in schema["features"]:
        if f["kind"] == "numeric":
            columns.append((f["name"], table[f["name"]].to_numpy(dtype=np.float64), True))
        else:
            columns.append((f["name"], table[f["name"]].astype(str).to_numpy(), False))
    user_ids = table["user_id"].astype(str).to_numpy()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(header, separators=(",", ":"), ensure_ascii=False) + "\n")
        for i in range(len(table)):
            feats: dict[str, Any] = {}
            for name, values, numeric in columns:
                v = values[i]
                if numeric:
                    if not np.isnan(v):
                        feats[name] = int(v) if float(v).is_integer() else float(v)
                elif v != "":
                    feats[name] = v
            record: dict[str, Any] = {"user_id": user_ids[i], "features": feats}
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)[:-1]
            line += ',"embedding":' + (fmt % tuple(user_emb[i]))
            if base.has[i]:
                line += (',"purchases":{"first_purchase_day":%d,"last_purchase_day":%d,"repeat_days":%d,'
                         '"repeat_spend_sum":%s}' % (base.first_day[i], base.last_day[i], base.repeat_days[i],
                                                     json.dumps(float(base.repeat_spend_sum[i]))))
            handle.write(line + "}\n")


@dataclass
class ModelFragment:
    """A model export to merge into the bundle (see module docstring)."""

    directory: Path
    models: dict[str, Any]
    files: list[str]
    retrieval: dict[str, Any] | None = None  # embeddings a retrieval_score input was computed with
    policy: dict[str, Any] | None = None  # policy defaults validated with the model


def read_model_fragments(directories: list[Path], sid: str) -> list[ModelFragment]:
    """Read and check ``*manifest_fragment.json`` of each directory against the bundle schema."""
    fragments: list[ModelFragment] = []
    seen: set[str] = set()
    for directory in directories:
        if not directory.is_dir():
            raise common.JobError(f"{directory}: model directory not found")
        paths = sorted(directory.glob("*manifest_fragment.json"))
        if not paths:
            raise common.JobError(f"{directory}: no *manifest_fragment.json")
        for path in paths:
            doc = common.read_json(path)
            if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
                raise common.JobError(f"{path}: expected an object with a 'models' object")
            frag_sid = (doc.get("feature_schema") or {}).get("id")
            if frag_sid is not None and frag_sid != sid:
                raise common.JobError(f"{path}: models were trained on feature schema {frag_sid}, "
                                      f"the bundle has {sid}; retrain with the bundle's feature_schema.json")
            clash = seen & set(doc["models"])
            if clash:
                raise common.JobError(f"{path}: model name(s) {', '.join(sorted(clash))} already merged")
            seen |= set(doc["models"])
            files = sorted(str(f) for f in (doc.get("files") or {}))
            for rel in files:
                if rel.startswith("/") or ".." in Path(rel).parts or rel == "MANIFEST.json":
                    raise common.JobError(f"{path}: bad file path {rel!r}")
                if not (directory / rel).is_file():
                    raise common.JobError(f"{path}: listed file {rel} not found in {directory}")
            policy = doc.get("policy")
            if policy is not None:
                if not isinstance(policy, dict) or not all(
                        k in POLICY_KEYS and isinstance(v, (int, float)) and math.isfinite(v) for k, v in policy.items()):
                    raise common.JobError(f"{path}: 'policy' must map {', '.join(POLICY_KEYS)} to numbers")
            retrieval = doc.get("retrieval")
            if retrieval is not None and not isinstance(retrieval, dict):
                raise common.JobError(f"{path}: 'retrieval' must be an object")
            fragments.append(ModelFragment(directory, dict(doc["models"]), files, retrieval, policy))
    return fragments


POLICY_KEYS = ("beta", "min_ev")

CLV_PARAMS = (("bgnbd", ("r", "alpha", "a", "b")), ("gamma_gamma", ("p", "q", "v")))
CLV_VALUATION = ("horizon_weeks", "margin", "annual_discount_rate")


def clv_section(path: Path) -> dict[str, Any]:
    """The manifest's ``clv`` section from a ``clv`` job output (``clv.json`` or its directory).

    Checks what the service's manifest parser checks (store/manifest.cc): the time unit is
    weeks, r, alpha, a, b, p, v > 0, q > 1, 0 <= horizon_weeks <= 520, 0 <= margin <= 1,
    0 <= annual_discount_rate < 10; errors name the file and field."""
    if path.is_dir():
        path = path / "clv.json"
    if not path.is_file():
        raise common.JobError(f"{path}: file not found (--clv takes the clv job's clv.json or its directory)")
    doc = common.read_json(path)
    if not isinstance(doc, dict):
        raise common.JobError(f"{path}: expected a JSON object")
    if doc.get("time_unit") != "week":
        raise common.JobError(f"{path}: time_unit is {doc.get('time_unit')!r}; the service reads BG/NBD "
                              f"parameters in weeks")
    out: dict[str, Any] = {}

    def number(section: str, key: str) -> float:
        block = doc.get(section)
        value = block.get(key) if isinstance(block, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise common.JobError(f"{path}: {section}.{key} must be a finite number, got {value!r}")
        return float(value)

    for section, keys in CLV_PARAMS:
        for key in keys:
            out[key] = number(section, key)
    for key in CLV_VALUATION:
        out[key] = number("clv", key)
    bad = [k for k in ("r", "alpha", "a", "b", "p", "v") if not out[k] > 0]
    if bad:
        raise common.JobError(f"{path}: {', '.join(bad)} must be > 0")
    if not out["q"] > 1:
        raise common.JobError(f"{path}: gamma_gamma.q must be > 1 (finite mean spend), got {out['q']}")
    limits = {"horizon_weeks": (0.0, 520.0), "margin": (0.0, 1.0), "annual_discount_rate": (0.0, 10.0)}
    for key, (lo, hi) in limits.items():
        if not lo <= out[key] <= hi or (key == "annual_discount_rate" and out[key] >= hi):
            raise common.JobError(f"{path}: clv.{key} = {out[key]} is outside the service's range {lo:g}..{hi:g}")
    return out


def merged_policy(fragments: list[ModelFragment]) -> dict[str, Any]:
    """Policy defaults of the fragments (model-validated ``beta`` / ``min_ev``); two fragments
    may not disagree."""
    out: dict[str, Any] = {}
    for frag in fragments:
        for key, value in (frag.policy or {}).items():
            if key in out and out[key] != value:
                raise common.JobError(f"{frag.directory}: policy.{key} = {value} conflicts with {out[key]} of "
                                      f"another model")
            out[key] = value
    return out


def check_retrieval_embeddings(fragments: list[ModelFragment], bundle: Path, models: dict[str, Any],
                               offer_emb32: np.ndarray, schema: dict[str, Any]) -> None:
    """A model whose p1 reads ``retrieval_score`` was trained on scores of particular
    embeddings (offline/retrieval.py); the bundle must carry exactly those: the same offer
    embeddings and the same query side (the same user tower, or none)."""
    from offline import retrieval

    for frag in fragments:
        want = frag.retrieval
        if not want:
            continue
        got: dict[str, Any] = {"query": "user_tower" if "user_tower" in models else "user_embeddings",
                               "offer_embeddings_sha256": retrieval.array_sha256(offer_emb32),
                               "embedding_dim": int(offer_emb32.shape[1])}
        if "user_tower" in models:
            emb = retrieval.RetrievalEmbeddings(bundle, offer_emb32,
                                                **retrieval.tower_from_spec(models["user_tower"], schema, bundle))
            got = emb.fingerprint()
        for key in ("query", "embedding_dim", "offer_embeddings_sha256", "user_tower_sha256"):
            if want.get(key) != got.get(key):
                raise common.JobError(
                    f"{frag.directory}: its retrieval_score input was computed with other embeddings than this "
                    f"bundle's ({key}: model {want.get(key)}, bundle {got.get(key)}); export with "
                    f"--embeddings-from / --models-from the train directory the uplift job used "
                    f"({want.get('source', '?')})")



def merge_model_fragments(fragments: list[ModelFragment], bundle: Path) -> tuple[dict[str, Any], list[str]]:
    """Copy fragment files into ``bundle`` (golden.json merged); returns (models section, files)."""
    models: dict[str, Any] = {}
    files: set[str] = set()
    goldens: list[Path] = []
    for frag in fragments:
        models.update(frag.models)
        for rel in frag.files:
            src = frag.directory / rel
            if rel == "golden.json":
                goldens.append(src)
            else:
                dst = bundle / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            files.add(rel)
    if len(goldens) == 1:
        shutil.copyfile(goldens[0], bundle / "golden.json")
    elif goldens:
        merged: dict[str, Any] = {}
        for src in goldens:
            doc = common.read_json(src)
            if not merged:
                merged = doc
            else:
                merged.setdefault("models", {}).update(doc.get("models", {}))
        common.write_json(bundle / "golden.json", merged, indent=1)
    return models, sorted(files)


def export(world_dir: Path, snapshot_root: Path, version: str | None, users_out: Path | None,
           index_kind: str = "flat", embeddings_from: Path | None = None,
           embedding_dim: int = DEFAULT_EMBEDDING_DIM, retrieval_k: int = DEFAULT_RETRIEVAL_K,
           as_of: str | None = None, prebuilt_index: bool = False,
           models_from: list[Path] | None = None, clv: Path | None = None) -> dict[str, Any]:
    """Write a bundle and users.jsonl; returns a summary (see module docstring)."""
    version = version or common.utc_now_version()
    if not VERSION_RE.match(version) or version.startswith("."):
        raise common.JobError(f"bad version {version!r}: must match [0-9A-Za-z._-]{{1,128}} and not start with '.'")
    if not 1 <= embedding_dim <= 4096:
        raise common.JobError("--embedding-dim must be in 1..4096")
    if not 1 <= retrieval_k <= 10000:
        raise common.JobError("--retrieval-k must be in 1..10000")
    final = snapshot_root / version
    if final.exists():
        raise common.JobError(f"{final}: version already exists; refusing to overwrite it")
    world = read_world(world_dir, as_of, need_campaigns=embeddings_from is None)
    base = purchase_base(world)
    table, kinds = user_feature_table(world)
    features = build_feature_schema(table, kinds)
    sid = schema_id(features)
    schema = {"id": sid, "features": features}
    fragments = read_model_fragments(list(models_from or []), sid)
    clv_spec = clv_section(clv) if clv is not None else None

    diagnostics: dict[str, Any]
    if embeddings_from is not None:
        user_emb, offer_emb = load_external_embeddings(embeddings_from, len(world.users), len(world.offers))
        method = f"external ({embeddings_from})"
        diagnostics = {}
    else:
        x = interaction_matrix(world)
        with common.single_threaded_blas():  # byte-identical results on any core count
            offer_emb = learn_offer_embeddings(x, offer_side_features(world.offers), embedding_dim)
            user_emb, warm = learn_user_embeddings(x, offer_emb, table, kinds)
        method = "interaction+side-information kernel eigenvectors (see offline/export.py)"
        diagnostics = {"interactions": int(x.nnz), "warm_users": warm,
                       "offers_with_interactions": int((np.asarray(x.sum(axis=0)).ravel() > 0).sum())}
    dim = offer_emb.shape[1]
    offer_emb32 = bundle_offer_embeddings(offer_emb)
    index = index_section(index_kind, len(world.offers), retrieval_k)

    users_path = users_out or (world_dir / "users.jsonl")
    users_path.parent.mkdir(parents=True, exist_ok=True)
    users_tmp = users_path.parent / f".tmp-{users_path.name}"
    write_users_jsonl(users_tmp, table, schema, user_emb, base)

    tmp = common.fresh_tmp_dir(snapshot_root, version)
    try:
        with open(tmp / "offers.jsonl", "w", encoding="utf-8") as handle:
            for offer in world.offers:
                handle.write(json.dumps(bundle_offer(offer), separators=(",", ":"), ensure_ascii=False) + "\n")
        common.write_npy(tmp / "offer_embeddings.npy", offer_emb32, dtype="<f4")
        file_names = ["offers.jsonl", "offer_embeddings.npy"]
        if prebuilt_index:
            write_prebuilt_index(tmp / "index.faiss", offer_emb32, index)
            index = {**index, "file": "index.faiss"}
            file_names.append("index.faiss")
        models, model_files = merge_model_fragments(fragments, tmp)
        check_retrieval_embeddings(fragments, tmp, models, offer_emb32, schema)
        file_names.extend(model_files)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "version": version,
            "created_at": common.utc_now_rfc3339(), "embedding_dim": dim, "num_offers": len(world.offers),
            "feature_schema": schema, "index": index,
            "policy": {"retrieval_k": retrieval_k, **merged_policy(fragments)},
            **({"clv": clv_spec} if clv_spec is not None else {}), "models": models,
            "files": {name: common.file_entry(tmp / name) for name in file_names},
        }
        common.write_json(tmp / "MANIFEST.json", manifest)
        common.publish_dir(tmp, final, replace=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        users_tmp.unlink(missing_ok=True)
        raise
    os.replace(users_tmp, users_path)
    return {"version": version, "bundle": str(final), "users_jsonl": str(users_path),
            "num_offers": len(world.offers), "num_users": len(world.users), "embedding_dim": dim,
            "feature_schema_id": sid, "index": index, "models": sorted(models), "clv": clv_spec,
            "embedding_method": method, "embedding_diagnostics": diagnostics,
            "as_of": common.day_to_date(world.as_of_day).isoformat()}


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``export`` job."""
    parser = argparse.ArgumentParser(prog="python3 -m offline export",
                                     description="Write a snapshot bundle and users.jsonl from a world.")
    parser.add_argument("--world", required=True, type=Path, help="world directory (output of synth)")
    parser.add_argument("--snapshot-root", required=True, type=Path, help="snapshot root directory")
    parser.add_argument("--version", help="bundle version (default: UTC timestamp like 20261123T070000Z)")
    parser.add_argument("--users-out", type=Path, help="users.jsonl path (default: <world>/users.jsonl)")
    parser.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat",
                        help="retrieval index type in the manifest (default %(default)s)")
    parser.add_argument("--prebuilt-index", action="store_true",
                        help="also write index.faiss built with FAISS (manifest index.file)")
    parser.add_argument("--embeddings-from", type=Path,
                        help="directory with user_embeddings.npy and offer_embeddings.npy (train output)")
    parser.add_argument("--models-from", type=Path, action="append", default=[],
                        help="directory with a *manifest_fragment.json model export to merge (repeatable)")
    parser.add_argument("--clv", type=Path,
                        help="clv.json of the clv job (or its directory): the manifest's clv section")
    parser.add_argument("--embedding-dim", type=int, default=DEFAULT_EMBEDDING_DIM,
                        help="dimension of the baseline embeddings (default %(default)s)")
    parser.add_argument("--retrieval-k", type=int, default=DEFAULT_RETRIEVAL_K,
                        help="policy.retrieval_k (default %(default)s)")
    parser.add_argument("--as-of", help="as-of date YYYY-MM-DD (default: synth.json as_of)")
    return parser


def main(argv: list[str]) -> int:
    """CLI entry point (see module docstring)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        summary = export(args.world, args.snapshot_root, args.version, args.users_out, args.index,
                         args.embeddings_from, args.embedding_dim, args.retrieval_k, args.as_of,
                         args.prebuilt_index, args.models_from, args.clv)
        common.emit_json(summary)
        return 0

    return common.run_job("export", body)
