"""``uplift`` job: treatment effects and uplift models on randomised offer logs.

    python3 -m offline uplift --dataset hillstrom --data hillstrom.csv --out DIR [--export-dir B]
    python3 -m offline uplift --dataset synth --world WORLD_DIR --out DIR [--export-dir B]
        [--embeddings-from TRAIN_DIR_OR_BUNDLE [--users-jsonl F]] [--learner response|t_learner]

Writes ``DIR/uplift.json`` (ATE with 95% CIs, per-learner Qini/AUUC, uplift@k, segment counts,
true-uplift correlation on the synthetic world), one Qini PNG per modelled outcome, and with
``--export-dir`` the heads of the exported learner in the bundle layout of docs/models-format.md
(``models/*.npy``, ``golden.json``, ``uplift_manifest_fragment.json``).

Synthetic world (the pipeline's model): the exported learner is by default the
:class:`~offline.uplift_models.ResponseLearner` (``--learner t_learner``: the offset
T-learner). With ``--embeddings-from`` (the ``train`` output the bundle will carry, or a
bundle), p1 also reads the ``retrieval`` section: ``retrieval_score``, the inner product of the
normalised query embedding and the offer's embedding, computed per log row exactly as the
service will (offline/retrieval.py); the fragment records the embeddings' fingerprint so that
``offline export`` can refuse other embeddings. Then ``--calibration-folds`` (default 3) refits
the learner on folds of the training users and, on the out-of-fold logged rows only, chooses
the uplift ``shrink`` and the ROI gate ``min_ev`` (offline/uplift_calibration.py); ``min_ev``
and ``beta`` go into the fragment's ``policy``. Users are split by ``hash_fraction(user_id) <
--test-fraction`` (the held-out test users, never used for fitting or calibration).

``export_uplift_heads(model, bundle_dir)`` is the function the export job calls.
Bad input (missing file or column, empty file, a single treatment arm) exits with code 2 and
a message naming the file and the problem.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import math
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from offline import metrics_uplift as mu
from offline import retrieval
from offline.uplift_models import (
    ClassTransformationLearner,
    DenseLayer,
    FeatureSpec,
    InputEncoder,
    ResponseLearner,
    TLearner,
    TrainConfig,
    UpliftModel,
    XLearner,
    feature_schema_id,
    fit_feature_spec,
    mlp_forward,
)

UPLIFT_AT_K = (0.1, 0.2, 0.3)
GOLDEN_FORMAT = "offerd-golden"


class InputError(Exception):
    """Bad input data; the job prints the message and exits with code 2."""


# ---------------------------------------------------------------------------------------------
# Reading and validating input


def read_table(path: Path, required: Sequence[str], what: str) -> pd.DataFrame:
    """CSV (or JSON lines for ``*.jsonl``) with the ``required`` columns, else InputError."""
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        if path.suffix == ".jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            df = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: {what} file is empty") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot parse {what} file: {exc}") from None
    if df.empty:
        raise InputError(f"{path}: {what} file has no data rows")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(map(repr, missing))} in {what} file")
    return df


def numeric_column(df: pd.DataFrame, col: str, path: Path, binary: bool = False) -> np.ndarray:
    x = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        raise InputError(f"{path}: column {col!r} has {int(bad.sum())} missing or non-numeric value(s)")
    if binary and not np.all((x == 0) | (x == 1)):
        raise InputError(f"{path}: column {col!r} must be 0/1")
    return x


def check_two_arms(t: np.ndarray, path: Path, col: str) -> None:
    n1 = int(np.sum(t == 1))
    if n1 == 0 or n1 == t.size:
        only = "treated" if n1 else "control"
        raise InputError(f"{path}: treatment column {col!r} has only one arm ({only}); need treated and control rows")
    if min(n1, t.size - n1) < 2:
        raise InputError(f"{path}: treatment column {col!r} needs at least 2 rows in each arm")


def hash_fraction(keys: pd.Series) -> np.ndarray:
    """Deterministic value in [0, 1) per key (crc32 of the UTF-8 string), for splits."""
    return np.fromiter((zlib.crc32(str(k).encode()) / 2**32 for k in keys), dtype=np.float64, count=len(keys))


# ---------------------------------------------------------------------------------------------
# Export (docs/models-format.md)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def export_mlp(
    layers: Sequence[DenseLayer], bundle_dir: str | os.PathLike[str], prefix: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Write one float32 ``.npy`` per weight and bias as ``models/<prefix>.<i>.weight.npy`` /
    ``.bias.npy`` and return the ``mlp`` spec (layers, dims) and the files written
    (bundle-relative path -> sha256, bytes). Generic: the user tower uses it too."""
    root = Path(bundle_dir)
    (root / "models").mkdir(parents=True, exist_ok=True)
    spec_layers: list[dict[str, Any]] = []
    files: dict[str, dict[str, Any]] = {}
    prev_out: int | None = None
    for i, layer in enumerate(layers):
        out_dim, in_dim = layer.weight.shape
        if prev_out is not None and in_dim != prev_out:
            raise ValueError(f"{prefix}: layer {i} input {in_dim} != previous output {prev_out}")
        prev_out = out_dim
        entry: dict[str, Any] = {"in": int(in_dim), "out": int(out_dim), "activation": layer.activation}
        for part, arr in (("weight", layer.weight), ("bias", layer.bias)):
            rel = f"models/{prefix}.{i}.{part}.npy"
            arr32 = np.ascontiguousarray(arr, dtype="<f4")
            if not np.all(np.isfinite(arr32)):
                raise ValueError(f"{prefix}: layer {i} {part} has NaN/Inf")
            np.save(root / rel, arr32, allow_pickle=False)
            files[rel] = _file_entry(root / rel)
            entry[part] = rel
        spec_layers.append(entry)
    spec = {
        "type": "mlp",
        "input_dim": int(layers[0].weight.shape[1]),
        "output_dim": int(layers[-1].weight.shape[0]),
        "layers": spec_layers,
    }
    return spec, files


def load_mlp(spec: Mapping[str, Any], bundle_dir: str | os.PathLike[str]) -> list[DenseLayer]:
    """Read an exported ``mlp`` spec back with plain numpy (the reference the C++ mirrors)."""
    root = Path(bundle_dir)
    return [
        DenseLayer(
            np.load(root / layer["weight"], allow_pickle=False),
            np.load(root / layer["bias"], allow_pickle=False),
            layer["activation"],
        )
        for layer in spec["layers"]
    ]


def jsonable_raw(v: Any, kind: str) -> Any:
    """A raw input value as golden.json holds it: None for missing (NaN), a float for a
    numeric feature (the string itself when it does not parse), a string for a categorical."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if kind == "numeric":
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)
    return str(v)


def raw_for_encoded(spec: FeatureSpec, z: float) -> float | None:
    """A raw value that encodes to ``z`` (None when the transform cannot reach it)."""
    v = spec.mean + z * spec.std
    if spec.transform == "log1p":
        return float(math.expm1(v)) if v < 700 else None
    return float(v)


def golden_cases(model: UpliftModel, n_max: int = 40) -> list[dict[str, Any]]:
    """Raw inputs (model.raw_examples, plus all-missing, unknown-category and extreme-numeric
    cases) with p0/p1 computed by the numpy reference over the exported float32 weights."""
    specs = model.encoder.sections
    rows: list[dict[str, dict[str, Any]]] = []
    for ex in model.raw_examples[: max(0, n_max - 4)]:
        rows.append(
            {sec: {s.name: jsonable_raw(ex.get(sec, {}).get(s.name), s.kind) for s in fs} for sec, fs in specs.items()}
        )
    base = rows[0] if rows else {sec: {} for sec in specs}
    rows.append({sec: {} for sec in specs})  # everything missing
    unknown = {
        sec: {s.name: ("__unseen__" if s.kind == "categorical" else None) for s in fs} for sec, fs in specs.items()
    }
    rows.append(unknown)
    for z in (-4.0, 4.0):  # every numeric feature 4 std from its mean (raw value, before transform)
        rows.append(
            {
                sec: {
                    s.name: (raw_for_encoded(s, z) if s.kind == "numeric" else base.get(sec, {}).get(s.name))
                    for s in fs
                }
                for sec, fs in specs.items()
            }
        )
    # drop None values: absent == missing
    rows = [{sec: {k: v for k, v in vals.items() if v is not None} for sec, vals in r.items()} for r in rows]
    x = model.encode_raw_rows(rows)
    p0, p1 = (
        mlp_forward(head.layers(), np.concatenate([x[s] for s in head.inputs], axis=1)).reshape(-1)
        for head in (model.learner.p0, model.learner.p1)
    )
    return [
        {"inputs": r, "outputs": {"p0": float(a), "p1": float(b)}} for r, a, b in zip(rows, p0, p1)
    ]


def merge_golden(bundle_dir: str | os.PathLike[str], model_name: str, entry: Mapping[str, Any]) -> Path:
    """Read-modify-write ``golden.json``: set ``models[model_name]``, keep everything else."""
    path = Path(bundle_dir) / "golden.json"
    doc: dict[str, Any] = {"format": GOLDEN_FORMAT, "format_version": 1, "models": {}}
    if path.is_file():
        doc = json.loads(path.read_text())
        doc.setdefault("models", {})
    doc["models"][model_name] = dict(entry)
    tmp = path.with_name(".golden.json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def export_uplift_heads(
    model: UpliftModel,
    bundle_dir: str | os.PathLike[str],
    feature_schema: Mapping[str, Any] | None = None,
    write_golden: bool = True,
) -> dict[str, Any]:
    """Write the uplift heads of ``model`` into ``bundle_dir`` (docs/models-format.md).

    Returns ``{"models": {name: spec}, "feature_schema": {...}, "files": {rel: {sha256,
    bytes}}, "golden": {...}}``: merge ``models`` into the manifest's ``models`` section and
    ``files`` into its ``files`` (recompute golden.json's checksum after the last writer).
    ``feature_schema`` (the manifest's, if already decided) must have the id the model's user
    section was trained with, else ValueError.
    """
    if model.feature_schema is not None:  # keep the given object byte-for-byte (its id)
        schema = dict(model.feature_schema)
    else:
        user_features = model.encoder.section_json("user")
        schema = {"id": feature_schema_id(user_features), "features": user_features}
    if feature_schema is not None and feature_schema.get("id") != schema["id"]:
        raise ValueError(
            f"uplift model {model.name!r} was trained on feature schema {schema['id']}, "
            f"bundle has {feature_schema.get('id')}"
        )
    files: dict[str, dict[str, Any]] = {}
    heads: dict[str, Any] = {}
    for head in (model.learner.p0, model.learner.p1):
        spec, written = export_mlp(head.layers(), bundle_dir, f"{model.name}.{head.name}")
        heads[head.name] = {"inputs": list(head.inputs), **spec}
        files.update(written)
    inputs: dict[str, Any] = {"user": {"source": "feature_schema", "feature_schema_id": schema["id"]}}
    for sec in model.encoder.sections:
        if sec != "user":
            inputs[sec] = {"features": model.encoder.section_json(sec)}
    spec_all = {
        "kind": "uplift_response" if isinstance(model.learner, ResponseLearner) else "uplift_t_learner",
        "outcome": model.outcome,
        "inputs": inputs,
        "heads": heads,
        "segment_thresholds": dict(model.segment_thresholds),
        "golden": "golden.json",
    }
    golden = {"rtol": 1e-5, "atol": 1e-7, "cases": golden_cases(model)}
    if write_golden:
        merge_golden(bundle_dir, model.name, golden)
        files["golden.json"] = _file_entry(Path(bundle_dir) / "golden.json")
    out: dict[str, Any] = {"models": {model.name: spec_all}, "feature_schema": schema, "files": files,
                           "golden": golden}
    if model.retrieval is not None:  # what the bundle's embeddings must be (offline export checks)
        out["retrieval"] = dict(model.retrieval)
    if model.policy:  # validated policy defaults (offline export merges them into MANIFEST policy)
        out["policy"] = dict(model.policy)
    return out


# ---------------------------------------------------------------------------------------------
# Shared evaluation


def evaluate_scores(
    y: np.ndarray, t: np.ndarray, scores: Mapping[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, s in scores.items():
        m: dict[str, Any] = mu.uplift_metrics(y, t, s)
        m["uplift_at_k"] = {f"{int(k * 100)}%": mu.uplift_at_k(y, t, s, k) for k in UPLIFT_AT_K}
        m["predicted_mean_uplift"] = float(np.mean(s))
        out[name] = m
    return out


def train_learners(
    x_tr: Mapping[str, np.ndarray],
    y_tr: np.ndarray,
    t_tr: np.ndarray,
    p0_inputs: Sequence[str],
    all_inputs: Sequence[str],
    config: TrainConfig,
    timings: dict[str, float],
    prefix: str,
    propensity: np.ndarray | None = None,
    response: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """T-, X-learner and class transformation (reports); with ``response`` (keyword arguments
    of :class:`ResponseLearner`) also the response learner."""
    learners: dict[str, Any] = {}
    if response is not None:
        start = time.perf_counter()
        learners["response"] = ResponseLearner(p0_inputs, all_inputs, config, **response).fit(x_tr, y_tr, t_tr)
        timings[f"{prefix}response"] = time.perf_counter() - start
    start = time.perf_counter()
    tl = TLearner(p0_inputs, all_inputs, config).fit(x_tr, y_tr, t_tr)
    timings[f"{prefix}t_learner"] = time.perf_counter() - start
    start = time.perf_counter()
    xl = XLearner(tl, all_inputs, config).fit(x_tr, y_tr, t_tr, base_fitted=True)
    timings[f"{prefix}x_learner"] = time.perf_counter() - start
    learners.update({"t_learner": tl, "x_learner": xl})
    if np.all((y_tr == 0) | (y_tr == 1)):
        start = time.perf_counter()
        ct = ClassTransformationLearner(all_inputs, config)
        learners["class_transformation"] = ct.fit(x_tr, y_tr, t_tr, propensity)
        timings[f"{prefix}class_transformation"] = time.perf_counter() - start
    return learners


def _correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from scipy import stats

    if np.std(a) == 0 or np.std(b) == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": float(stats.pearsonr(a, b)[0]), "spearman": float(stats.spearmanr(a, b)[0])}


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    from offline import common

    path.write_text(json.dumps(common.finite_json(doc), indent=2) + "\n")


def _raw_examples(frames: Mapping[str, pd.DataFrame], rows: np.ndarray) -> list[dict[str, dict[str, Any]]]:
    return [{sec: {c: f.iloc[i][c] for c in f.columns} for sec, f in frames.items()} for i in rows]


# ---------------------------------------------------------------------------------------------
# Hillstrom

HILLSTROM_CONTROL = "No E-Mail"
HILLSTROM_OUTCOMES = ("visit", "conversion", "spend")
HILLSTROM_NUMERIC = ("recency", "history", "mens", "womens", "newbie")
HILLSTROM_CATEGORICAL = ("zip_code", "channel")  # history_segment is a bucketing of history


def run_hillstrom(args: argparse.Namespace, config: TrainConfig) -> dict[str, Any]:
    path = Path(args.data)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    df = read_table(path, ["segment", *HILLSTROM_OUTCOMES, *HILLSTROM_NUMERIC, *HILLSTROM_CATEGORICAL], "Hillstrom data")
    arm = df["segment"].astype(str)
    if df["segment"].isna().any():
        raise InputError(f"{path}: column 'segment' has missing values")
    outcomes = {o: numeric_column(df, o, path, binary=o != "spend") for o in HILLSTROM_OUTCOMES}
    arms = sorted(set(arm) - {HILLSTROM_CONTROL})
    if HILLSTROM_CONTROL not in set(arm) or not arms:
        raise InputError(
            f"{path}: treatment column 'segment' has only one arm ({', '.join(sorted(set(arm)))}); "
            f"need {HILLSTROM_CONTROL!r} and at least one e-mail arm"
        )
    control = (arm == HILLSTROM_CONTROL).to_numpy()
    ate: dict[str, dict[str, dict[str, float]]] = {}
    details: dict[str, dict[str, Any]] = {}
    for a in arms + ["any e-mail"]:
        treated = (arm == a).to_numpy() if a != "any e-mail" else ~control
        if treated.sum() < 2 or control.sum() < 2:
            raise InputError(f"{path}: arm {a!r} or control has fewer than 2 rows")
        details[a] = {}
        if a != "any e-mail":
            ate[a] = {}
        for o, y in outcomes.items():
            e = mu.difference_in_means(y[treated], y[control])
            details[a][o] = e.to_json()
            if a != "any e-mail":
                ate[a][o] = {"estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high}
    details_any = details.pop("any e-mail")
    timings["load_and_ate"] = time.perf_counter() - start

    # Models: any e-mail vs none, held-out split
    user_frame = df[list(HILLSTROM_NUMERIC) + list(HILLSTROM_CATEGORICAL)]
    rng = np.random.default_rng(args.seed)
    test = rng.random(len(df)) < args.test_fraction
    t_all = (~control).astype(np.float64)
    check_two_arms(t_all[~test], path, "segment")
    check_two_arms(t_all[test], path, "segment")
    specs = [fit_feature_spec(c, user_frame.loc[~test, c], "numeric") for c in HILLSTROM_NUMERIC]
    specs += [fit_feature_spec(c, user_frame.loc[~test, c], "categorical") for c in HILLSTROM_CATEGORICAL]
    encoder = InputEncoder({"user": specs})
    x_all = encoder.encode({"user": user_frame}, len(df))
    x_tr = {k: v[~test] for k, v in x_all.items()}
    x_te = {k: v[test] for k, v in x_all.items()}
    out_dir = Path(args.out)
    model_reports: dict[str, Any] = {}
    exported: dict[str, Any] | None = None
    for outcome in args.model_outcomes:
        y = outcomes[outcome]
        learners = train_learners(x_tr, y[~test], t_all[~test], ["user"], ["user"], config, timings, f"{outcome}.")
        start = time.perf_counter()
        scores = {name: l.predict_uplift(x_te) for name, l in learners.items()}
        tl: TLearner = learners["t_learner"]
        p0, p1 = tl.predict_p0(x_te), tl.predict_p1(x_te)
        base_rate = float(y[~test][t_all[~test] == 0].mean())
        th = mu.SegmentThresholds.from_base_rate(base_rate)
        png = f"qini_{outcome}.png"
        title = f"Hillstrom: any e-mail vs none, {outcome} (held-out)"
        mu.plot_qini(str(out_dir / png), y[test], t_all[test], scores, title)
        model_reports[outcome] = {
            "treatment": f"any e-mail vs {HILLSTROM_CONTROL}",
            "train_rows": int((~test).sum()),
            "test_rows": int(test.sum()),
            "learners": evaluate_scores(y[test], t_all[test], scores),
            "segment_thresholds": th.to_json(),
            "segments": mu.segment_counts(p0, p1, th),
            "mean_p0": float(p0.mean()),
            "mean_p1": float(p1.mean()),
            "observed_test_ate": details_any[outcome]["estimate"],
            "qini_png": png,
        }
        timings[f"{outcome}.evaluate"] = time.perf_counter() - start
        if args.export_dir and outcome == args.model_outcomes[0]:
            ex_rows = np.flatnonzero(test)[:24]
            model = UpliftModel(
                name="uplift",
                encoder=encoder,
                learner=tl,
                outcome=outcome,
                segment_thresholds=th.to_json(),
                raw_examples=_raw_examples({"user": user_frame}, ex_rows),
            )
            exported = _export(model, Path(args.export_dir))
    return {
        "dataset": "hillstrom",
        "data": str(path),
        "rows": int(len(df)),
        "control_arm": HILLSTROM_CONTROL,
        "ate": ate,
        "ate_details": details,
        "ate_any_email": details_any,
        "ci": "95% normal interval, difference in means with Welch (unpooled) standard error",
        "features": {"user": encoder.section_json("user")},
        "train_config": config.__dict__,
        "models": model_reports,
        "export": exported,
        "metric_definitions": mu.__doc__,
        "timings_seconds": timings,
    }


def _export(model: UpliftModel, export_dir: Path) -> dict[str, Any]:
    export_dir.mkdir(parents=True, exist_ok=True)
    frag = export_uplift_heads(model, export_dir)
    write_json(export_dir / "uplift_manifest_fragment.json", {k: v for k, v in frag.items() if k != "golden"})
    return {"dir": str(export_dir), "files": sorted(frag["files"]), "golden_cases": len(frag["golden"]["cases"])}


# ---------------------------------------------------------------------------------------------
# Synthetic world

LOG_COLUMNS = (
    "user_id", "campaign_id", "day", "offer_id", "treated", "propensity", "channel", "device",
    "page", "impression", "clicked", "redeemed", "dismissed", "converted", "revenue",
)
CONTEXT_FEATURES = ("channel", "device", "page")
OFFER_CATEGORICAL = ("category", "type")
OFFER_NUMERIC = ("margin", "cost")
# users.csv columns that are never model inputs (ids, dates, ground truth)
USER_EXCLUDED = {"user_id", "signup_date"}
USER_EXCLUDED_PREFIXES = ("true_", "latent_", "gt_", "_")


def user_feature_specs(
    users: pd.DataFrame, path: Path, schema_file: str | None, schema_doc: Mapping[str, Any] | None = None
) -> tuple[list[FeatureSpec], dict[str, Any] | None]:
    """The user section and, with ``--feature-schema`` (a manifest ``feature_schema`` object or
    its ``features`` list; or ``schema_doc``, the same already read), that schema object as
    given. Without it the features are inferred from users.csv: every column except ids,
    dates, ground-truth-looking names and id-like categoricals (> 1000 distinct values)."""
    if schema_file or schema_doc is not None:
        try:
            doc = dict(schema_doc) if schema_doc is not None else json.loads(Path(str(schema_file)).read_text())
            feats = doc["features"] if isinstance(doc, dict) else doc
            specs = [FeatureSpec.from_json(f) for f in feats]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{schema_file}: not a feature schema: {exc}") from None
        schema = {"id": doc.get("id") if isinstance(doc, dict) else None, "features": feats}
        if not schema["id"]:
            schema["id"] = feature_schema_id(feats)
        missing = [f.name for f in specs if f.name not in users.columns]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(map(repr, missing))} of the feature schema {schema_file}"
            )
        return specs, schema
    specs: list[FeatureSpec] = []
    for c in users.columns:
        if c in USER_EXCLUDED or c.startswith(USER_EXCLUDED_PREFIXES) or c.endswith(("_date", "_at", "_ms")):
            continue
        col = users[c]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)) and col.nunique() > 1000:
            continue
        specs.append(fit_feature_spec(c, col))
    if not specs:
        raise InputError(f"{path}: no usable user feature columns")
    return specs, None


def read_offers(world: Path) -> tuple[pd.DataFrame, Path]:
    for name in ("offers.csv", "offers.jsonl"):
        p = world / name
        if p.is_file():
            df = read_table(p, ["offer_id", *OFFER_CATEGORICAL, *OFFER_NUMERIC], "offer catalog")
            df["offer_id"] = df["offer_id"].astype(str)
            if df["offer_id"].duplicated().any():
                raise InputError(f"{p}: duplicate offer_id values")
            return df, p
    raise InputError(f"{world}: offer catalog not found (offers.csv or offers.jsonl)")


def assign_counterfactual_offers(
    strata: Sequence[np.ndarray], offer: np.ndarray, treated: np.ndarray, seed: int
) -> np.ndarray:
    """Offer id per row: the logged offer for treated rows; for a control row, a draw from the
    offers given to treated rows of the same stratum. ``strata`` are key columns from fine to
    coarse use: the full tuple first, then dropping the last key until a stratum has treated
    rows, finally the whole log. Under randomisation that is the offer the control row would
    have got, so p1/uplift can be evaluated on control rows and they can enter the X-learner
    and the class transformation."""
    rng = np.random.default_rng(seed)
    treated = treated.astype(bool)
    out = np.where(treated, offer.astype(object), None)
    todo = ~treated
    for depth in range(len(strata), -1, -1):
        if not todo.any():
            break
        if depth == 0:
            keys = np.zeros(offer.size, dtype=np.int64)
        else:
            keys = pd.MultiIndex.from_arrays([np.asarray(k).astype(str) for k in strata[:depth]]).factorize()[0]
        pools = pd.Series(offer[treated].astype(str)).groupby(keys[treated]).agg(lambda v: v.to_numpy())
        for key in np.unique(keys[todo]):
            if key not in pools.index:
                continue
            rows = np.flatnonzero(todo & (keys == key))
            out[rows] = rng.choice(pools[key], size=rows.size)
            todo[rows] = False
    return out.astype(str)


PURCHASE_FEATURES: tuple[tuple[str, str], ...] = (
    ("has_purchases", "none"),
    ("repeat_days", "log1p"),
    ("days_since_first", "log1p"),
    ("days_since_last", "log1p"),
    ("repeat_spend_mean", "log1p"),
)


def purchase_features(tx_path: Path, user_ids: pd.Series, u_idx: np.ndarray, day_num: np.ndarray) -> pd.DataFrame:
    """Point-in-time RFM inputs per log row from transactions.csv (user_id, date, amount), using
    purchases on days strictly before the row's day (the outcome window starts on it). The same
    quantities the service derives from its ``PurchaseSummary`` and "now" (docs/models-format.md):
    has_purchases (0/1), repeat_days (x), days_since_first (T), days_since_last,
    repeat_spend_mean (repeat_spend_sum / x; missing when x = 0). Users without purchases
    before the day: has_purchases 0, the rest missing."""
    tx = read_table(tx_path, ["user_id", "date", "amount"], "transactions")
    tx_day = log_day_numbers(tx["date"], tx_path)
    amount = numeric_column(tx, "amount", tx_path)
    pos = pd.Series(np.arange(len(user_ids)), index=user_ids.to_numpy())
    tu = pos.reindex(tx["user_id"].astype(str)).to_numpy()
    ok = ~np.isnan(tu)
    daily = (
        pd.DataFrame({"u": tu[ok].astype(np.int64), "d": tx_day[ok].astype(np.int64), "a": amount[ok]})
        .groupby(["u", "d"], sort=True)["a"].sum().reset_index()
    )
    stride = np.int64(1 << 32)
    key = daily["u"].to_numpy() * stride + daily["d"].to_numpy()
    cum = np.r_[0.0, np.cumsum(daily["a"].to_numpy())]
    days = daily["d"].to_numpy()
    u = np.where(u_idx >= 0, u_idx, 0).astype(np.int64)
    start = np.searchsorted(key, u * stride, side="left")
    end = np.searchsorted(key, u * stride + day_num.astype(np.int64), side="left")
    n_days = np.where(u_idx >= 0, end - start, 0)
    has = n_days > 0
    first = np.where(has, days[np.minimum(start, len(days) - 1)], 0)
    last = np.where(has, days[np.maximum(end - 1, 0)], 0)
    x = np.maximum(n_days - 1, 0)
    spend = np.where(has, cum[end] - cum[np.minimum(start + 1, len(cum) - 1)], 0.0)
    nan = np.nan
    return pd.DataFrame(
        {
            "has_purchases": has.astype(np.float64),
            "repeat_days": np.where(has, x, nan),
            "days_since_first": np.where(has, day_num - first, nan),
            "days_since_last": np.where(has, day_num - last, nan),
            "repeat_spend_mean": np.where(has & (x > 0), spend / np.maximum(x, 1), nan),
        }
    )


def log_day_numbers(day: pd.Series, path: Path) -> np.ndarray:
    """The log's ``day`` as days since 1970-01-01: integers as they are, else ISO dates."""
    if pd.api.types.is_numeric_dtype(day):
        return day.to_numpy(dtype=np.float64)
    parsed = pd.to_datetime(day, errors="coerce", format="%Y-%m-%d")
    if parsed.isna().any():
        raise InputError(
            f"{path}: column 'day' has {int(parsed.isna().sum())} value(s) that are neither day numbers nor YYYY-MM-DD"
        )
    return ((parsed - pd.Timestamp("1970-01-01")) // pd.Timedelta(days=1)).to_numpy(dtype=np.float64)


TrueResponseFn = Callable[[np.ndarray, np.ndarray, Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def load_true_response(world: Path) -> tuple[TrueResponseFn | None, str]:
    """Ground truth of a synthetic world through ``offline.world.true_response(truth, user_idx,
    offer_idx, context)`` (context: ``day`` as days since epoch, ``channel``); returns
    (callable, note) or (None, why not)."""
    try:
        world_mod = importlib.import_module("offline.world")  # the synthetic-world generator
    except Exception as exc:  # noqa: BLE001 - optional: any failure means "no ground truth"
        return None, f"offline.world not importable: {exc}"
    fn = getattr(world_mod, "true_response", None)
    if fn is None:
        return None, "offline.world has no true_response"
    params = list(inspect.signature(fn).parameters)
    truth: Any = None
    if params and params[0] in ("world_or_truth", "world", "truth"):
        loader = getattr(world_mod, "load_ground_truth", None)
        if loader is None:
            return None, "offline.world has no load_ground_truth"
        try:
            truth = loader(world)
        except Exception as exc:  # noqa: BLE001
            return None, f"ground truth not loadable: {exc}"

    def call(
        user_idx: np.ndarray, offer_idx: np.ndarray, context: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        if truth is not None:
            p0, p1 = fn(truth, user_idx, offer_idx, dict(context))
        elif "context" in params:
            p0, p1 = fn(user_idx, offer_idx, context=dict(context))
        else:
            p0, p1 = fn(user_idx, offer_idx)
        return np.asarray(p0, dtype=np.float64).reshape(-1), np.asarray(p1, dtype=np.float64).reshape(-1)

    return call, "offline.world.true_response (p1 = P(convert | offer shown))"


def load_retrieval_embeddings(args: argparse.Namespace, users: pd.DataFrame) -> retrieval.RetrievalEmbeddings:
    """``--embeddings-from`` (train output dir or bundle; ``--users-jsonl`` for a bundle without
    a user tower)."""
    from offline import common

    try:
        emb = retrieval.load_embeddings(Path(args.embeddings_from), users["user_id"].astype(str).tolist(),
                                        args.users_jsonl)
    except (common.JobError, KeyError, ValueError, OSError) as exc:
        raise InputError(f"--embeddings-from {args.embeddings_from}: {exc}") from None
    if emb.tower_user_specs is not None:
        missing = [s.name for s in emb.tower_user_specs if s.name not in users.columns]
        if missing:
            raise InputError(f"users.csv: missing column(s) {', '.join(missing)} of the user tower")
    return emb


def row_clv(world: Path, users: pd.DataFrame, offers: pd.DataFrame, day_num: np.ndarray,
            purchases: pd.DataFrame | None) -> tuple[dict[str, Any], np.ndarray]:
    """CLV estimate per log row for the EV calibration: BG/NBD + Gamma-Gamma fitted on the
    purchases before the as-of date (synth.json; else the day after the last transaction),
    evaluated on the row's point-in-time purchase features (what the service does). Zeros with
    a note when it cannot be fitted."""
    if purchases is None:
        return {"fitted": False, "note": "no purchase features"}, np.zeros(len(day_num))
    try:
        from offline import common, evaluate, export

        tx = pd.read_csv(world / "transactions.csv", dtype={"user_id": str, "date": str})
        meta = world / "synth.json"
        if meta.is_file():
            as_of_day = common.date_to_day(common.parse_date(json.loads(meta.read_text())["as_of"]))
        else:
            as_of_day = int(common.days_from_iso(tx["date"].to_numpy(dtype=str), "transactions.csv").max()) + 1
        data = export.WorldData(world, users[["user_id"]].astype(str), tx, [], None, as_of_day)
        model = evaluate.fit_clv_data(data)
        return ({"fitted": True, "params": model.params, "margin_rate": model.margin,
                 "horizon_weeks": model.horizon_weeks},
                np.nan_to_num(np.asarray(model.value(purchases), dtype=np.float64)))
    except Exception as exc:  # noqa: BLE001 - the calibration then values conversions by margin only
        return {"fitted": False, "note": f"{type(exc).__name__}: {exc}"}, np.zeros(len(day_num))


def test_gate_value(y: np.ndarray, t: np.ndarray, redeemed: np.ndarray, value: np.ndarray, cost: np.ndarray,
                    campaign: np.ndarray, channel: np.ndarray, p0: np.ndarray, ev: np.ndarray,
                    min_ev: float) -> dict[str, Any]:
    """Logged (doubly robust) value on the test users' rows of showing a row's offer iff the
    model's EV passes the gate, per 1,000 rows (offline/uplift_calibration.py)."""
    from offline import uplift_calibration as ucal

    e = ucal.treated_share(t, campaign, channel)
    gamma = ucal.dr_pseudo_outcome(y, t, redeemed, value, cost, e, p0)
    out = {}
    for name, sel in (("gate", ev > min_ev), ("gate_at_0", ev > 0), ("everything", np.ones_like(ev, bool))):
        v = gamma * sel
        out[name] = {"per_1000_rows": float(1000 * v.mean()), "se": float(1000 * v.std(ddof=1) / math.sqrt(v.size)),
                     "share_shown": float(sel.mean())}
    return out


def run_synth(args: argparse.Namespace, config: TrainConfig) -> dict[str, Any]:
    world = Path(args.world)
    if not world.is_dir():
        raise InputError(f"{world}: world directory not found")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    users_path = world / "users.csv"
    log_path = world / "campaign_log.csv"
    users = read_table(users_path, ["user_id"], "users")
    users["user_id"] = users["user_id"].astype(str)
    if users["user_id"].duplicated().any():
        raise InputError(f"{users_path}: duplicate user_id values")
    offers, offers_path = read_offers(world)
    log = read_table(log_path, LOG_COLUMNS, "campaign log")
    log["user_id"] = log["user_id"].astype(str)
    treated = numeric_column(log, "treated", log_path, binary=True)
    impression = numeric_column(log, "impression", log_path, binary=True)
    y_all = numeric_column(log, "converted", log_path, binary=True)
    revenue_all = numeric_column(log, "revenue", log_path)
    prop_all = numeric_column(log, "propensity", log_path)
    check_two_arms(treated, log_path, "treated")
    treated_offers = log.loc[treated == 1, "offer_id"]
    if treated_offers.isna().any():
        raise InputError(f"{log_path}: {int(treated_offers.isna().sum())} treated row(s) without offer_id")
    unknown_offers = set(treated_offers.astype(str)) - set(offers["offer_id"])
    if unknown_offers:
        raise InputError(
            f"{log_path}: {len(unknown_offers)} offer_id(s) not in {offers_path.name}, "
            f"e.g. {sorted(unknown_offers)[0]!r}"
        )
    day_all = log_day_numbers(log["day"], log_path)
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    # ITT effects on every row (treated = offer assigned)
    ate: dict[str, Any] = {"treated": {}}
    ate_details: dict[str, Any] = {"treated": {}}
    for name, v in (("converted", y_all), ("revenue", revenue_all)):
        e = mu.difference_in_means(v[treated == 1], v[treated == 0])
        ate["treated"][name] = {"estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high}
        ate_details["treated"][name] = e.to_json()

    # Rows the models learn from: control rows that could have been treated (propensity < 1),
    # and with --treatment shown only treated rows that had an impression.
    never_treatable = (treated == 0) & (prop_all >= 1.0)
    unshown = (treated == 1) & (impression == 0)
    keep = ~never_treatable & ~(unshown if args.treatment == "shown" else np.zeros_like(unshown))
    log = log.loc[keep].reset_index(drop=True)
    t = treated[keep]
    y = y_all[keep]
    day_num = day_all[keep]
    check_two_arms(t, log_path, "treated")
    # P(treated) per row: the campaign's treated share among the kept rows
    e_row = pd.Series(t).groupby(log["campaign_id"].astype(str).to_numpy()).transform("mean").to_numpy()
    e_row = np.clip(e_row, 1e-3, 1 - 1e-3)

    user_pos = pd.Series(np.arange(len(users)), index=users["user_id"])
    u_idx = user_pos.reindex(log["user_id"]).to_numpy()
    unmatched_users = int(np.isnan(u_idx).sum())
    u_safe = np.nan_to_num(u_idx, nan=-1).astype(np.int64)
    strata: list[np.ndarray] = [log["campaign_id"].to_numpy(), log["channel"].to_numpy()]
    for c in ("country", "tier"):  # offer eligibility keys in the synthetic world, when present
        if c in users.columns:
            strata.append(np.where(u_safe >= 0, users[c].astype(str).to_numpy()[u_safe], ""))
    offer_for_row = assign_counterfactual_offers(strata, log["offer_id"].astype(str).to_numpy(), t, args.seed)
    offer_pos = pd.Series(np.arange(len(offers)), index=offers["offer_id"])
    o_idx = offer_pos.reindex(offer_for_row).to_numpy().astype(np.int64)
    test = hash_fraction(log["user_id"]) < args.test_fraction  # split by user: no user on both sides
    check_two_arms(t[~test], log_path, "treated")
    check_two_arms(t[test], log_path, "treated")

    train_users = np.unique(u_safe[~test & (u_safe >= 0)])
    emb = load_retrieval_embeddings(args, users) if args.embeddings_from else None
    tower_schema = None
    if emb is not None and emb.tower_schema is not None:
        # the user tower's feature schema is the bundle's: the user section must be the same
        tower_schema = emb.tower_schema
    user_specs, given_schema = user_feature_specs(users.iloc[train_users], users_path, args.feature_schema,
                                                  None if args.feature_schema else tower_schema)
    if tower_schema is not None and given_schema is not None and given_schema["id"] != tower_schema["id"]:
        raise InputError(f"--embeddings-from {args.embeddings_from}: the user tower was trained on feature schema "
                         f"{tower_schema['id']}, --feature-schema is {given_schema['id']}")
    user_rows = pd.DataFrame({s.name: users[s.name] if s.name in users else None for s in user_specs})
    user_frame = user_rows.reindex(u_safe).reset_index(drop=True)
    sections: dict[str, list[FeatureSpec]] = {"user": user_specs}
    frames: dict[str, pd.DataFrame] = {"user": user_frame}
    tx_path = world / "transactions.csv"
    if args.purchase_features and tx_path.is_file():
        purchase_frame = purchase_features(tx_path, users["user_id"], u_safe, day_num)
        sections["purchases"] = [
            fit_feature_spec(name, purchase_frame.loc[~test, name], "numeric", transform=tr)
            for name, tr in PURCHASE_FEATURES
        ]
        frames["purchases"] = purchase_frame
    ctx_cols = list(CONTEXT_FEATURES)
    context_frame = log[ctx_cols].astype(object).where(log[ctx_cols].notna(), None).reset_index(drop=True)
    offer_frame = offers[["offer_id", *OFFER_CATEGORICAL, *OFFER_NUMERIC]].iloc[o_idx].reset_index(drop=True)

    tr_treated = ~test & (t == 1)
    context_specs = [fit_feature_spec(c, context_frame.loc[~test, c], "categorical") for c in CONTEXT_FEATURES]
    offer_specs = [fit_feature_spec(c, offer_frame.loc[tr_treated, c], "categorical") for c in OFFER_CATEGORICAL]
    offer_specs += [fit_feature_spec(c, offer_frame.loc[tr_treated, c], "numeric") for c in OFFER_NUMERIC]
    if args.offer_id_vocabulary > 0:
        offer_specs.append(
            fit_feature_spec("offer_id", offer_frame.loc[tr_treated, "offer_id"], "categorical",
                             args.offer_id_vocabulary, min_count=args.offer_id_min_rows)
        )
    sections.update({"context": context_specs, "offer": offer_specs})
    frames.update({"context": context_frame, "offer": offer_frame})
    retrieval_info: dict[str, Any] | None = None
    if emb is not None:
        tower_users = pd.DataFrame({s.name: users[s.name] if s.name in users else None
                                    for s in (emb.tower_user_specs or [])})
        queries = emb.queries(tower_users.reindex(u_safe).reset_index(drop=True), context_frame, u_safe)
        score = emb.scores(queries, o_idx)
        frames[retrieval.SECTION] = pd.DataFrame({retrieval.FEATURE: score})
        sections[retrieval.SECTION] = [fit_feature_spec(retrieval.FEATURE, frames[retrieval.SECTION].loc[~test,
                                                        retrieval.FEATURE], "numeric")]
        source = Path(args.embeddings_from).resolve()
        # relative to the fragment's directory: the fragment does not depend on where the build ran
        retrieval_info = {**emb.fingerprint(), "source": (os.path.relpath(source, Path(args.export_dir).resolve())
                                                          if args.export_dir else str(source))}
    encoder = InputEncoder(sections)
    x_all = encoder.encode(frames, len(log))
    x_tr = {k: v[~test] for k, v in x_all.items()}
    x_te = {k: v[test] for k, v in x_all.items()}
    timings["encode"] = time.perf_counter() - start

    p0_inputs = [sec for sec in sections if sec not in ("offer", retrieval.SECTION)]
    response_kw = {"hidden_q": args.hidden_q, "hidden_s": args.hidden_s, "use_s": args.cancel}
    learners = train_learners(
        x_tr, y[~test], t[~test], p0_inputs, list(sections), config, timings, "", propensity=e_row[~test],
        response=response_kw if args.learner == "response" else None,
    )
    chosen = learners[args.learner]

    # EV calibration on out-of-fold predictions of the training users (offline/uplift_calibration.py)
    start = time.perf_counter()
    calibration: dict[str, Any] = {"done": False}
    policy: dict[str, Any] = {}
    clv_note, clv_hat = row_clv(world, users, offers, day_num, frames.get("purchases"))
    value = offers["margin"].to_numpy(dtype=np.float64)[o_idx] + args.beta * clv_hat
    cost = offers["cost"].to_numpy(dtype=np.float64)[o_idx]
    redeemed = numeric_column(log, "redeemed", log_path, binary=True)
    if args.learner == "response" and args.calibration_folds >= 2:
        from offline import uplift_calibration as ucal

        h_tr = hash_fraction(log["user_id"][~test])
        fold = np.minimum(((h_tr - args.test_fraction) / (1 - args.test_fraction) * args.calibration_folds)
                          .astype(np.int64), args.calibration_folds - 1)
        fold = np.clip(fold, 0, args.calibration_folds - 1)

        def fit_predict(fit_mask: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            m = ResponseLearner(p0_inputs, list(sections), config, **response_kw)
            m.fit({k: v[fit_mask] for k, v in x_tr.items()}, y[~test][fit_mask], t[~test][fit_mask])
            xh = {k: v[held] for k, v in x_tr.items()}
            return m.predict_p0(xh), m.predict_p1(xh)

        oof0, oof1 = ucal.out_of_fold(fit_predict, fold, args.calibration_folds)
        e_cc = ucal.treated_share(t[~test], log["campaign_id"][~test].to_numpy(), log["channel"][~test].to_numpy())
        gamma = ucal.dr_pseudo_outcome(y[~test], t[~test], redeemed[~test], value[~test], cost[~test], e_cc, oof0)
        cal = ucal.fit_calibration(gamma, oof0, oof1, value[~test], cost[~test])
        calibration = {"done": True, "folds": args.calibration_folds, "beta": args.beta, "clv": clv_note,
                       **ucal.summary(cal)}
        shrink, min_ev = cal.shrink, cal.min_ev
    else:
        shrink, min_ev = 1.0, 0.0
    if args.shrink is not None:
        shrink = args.shrink
    if args.min_ev is not None:
        min_ev = args.min_ev
    if args.learner == "response":
        chosen.set_shrink(shrink)
        calibration["shrink_used"] = shrink
        calibration["approximation"] = chosen.approximation_error(x_te)
    policy = {"beta": args.beta, "min_ev": round(float(min_ev), 6)}
    calibration["min_ev_used"] = policy["min_ev"]
    timings["calibration"] = time.perf_counter() - start

    start = time.perf_counter()
    scores = {name: l.predict_uplift(x_te) for name, l in learners.items()}
    p0, p1 = chosen.predict_p0(x_te), chosen.predict_p1(x_te)
    ev_test = (p1 - p0) * value[test] - p1 * cost[test]
    th = mu.SegmentThresholds(uplift=args.segment_uplift, response=args.segment_response)
    report: dict[str, Any] = {
        "train_rows": int((~test).sum()),
        "test_rows": int(test.sum()),
        "exported_learner": args.learner,
        "learners": evaluate_scores(y[test], t[test], scores),
        "segment_thresholds": th.to_json(),
        "segments": mu.segment_counts(p0, p1, th),
        "mean_p0": float(p0.mean()),
        "mean_p1": float(p1.mean()),
        "calibration": calibration,
        "test_ev_gate": test_gate_value(y[test], t[test], redeemed[test], value[test], cost[test],
                                        log["campaign_id"][test].to_numpy(), log["channel"][test].to_numpy(),
                                        p0, ev_test, policy["min_ev"]),
        "qini_png": "qini_converted.png",
    }
    truth_fn, note = load_true_response(world)
    truth: dict[str, Any] = {"available": False, "source": note}
    if truth_fn is not None and unmatched_users == 0:
        try:
            ctx = {"day": day_num[test], "channel": log["channel"].astype(str).to_numpy()[test]}
            tp0, tp1 = truth_fn(u_safe[test], o_idx[test], ctx)
            true_uplift = tp1 - tp0
            truth = {
                "available": True,
                "source": note,
                "correlation_with_true_uplift": {n: _correlations(sc, true_uplift) for n, sc in scores.items()},
                "rmse_of_exported_learner": {
                    "p0": float(np.sqrt(np.mean((p0 - tp0) ** 2))),
                    "p1": float(np.sqrt(np.mean((p1 - tp1) ** 2))),
                    "uplift": float(np.sqrt(np.mean((p1 - p0 - true_uplift) ** 2))),
                },
                "mean_true_p0": float(tp0.mean()),
                "mean_true_p1": float(tp1.mean()),
                "mean_true_uplift": float(true_uplift.mean()),
                "true_segments": mu.segment_counts(tp0, tp1, th),
                "oracle": evaluate_scores(y[test], t[test], {"true_uplift": true_uplift})["true_uplift"],
            }
            scores = {**scores, "true uplift (oracle)": true_uplift}
        except Exception as exc:  # noqa: BLE001 - report, do not fail the job over ground truth
            truth = {"available": False, "source": note, "error": f"{type(exc).__name__}: {exc}"}
    elif truth_fn is not None:
        truth["error"] = f"{unmatched_users} log rows with user_id not in users.csv"
    report["ground_truth"] = truth
    title = f"Synthetic world: offer {args.treatment} vs control, converted (held-out users)"
    mu.plot_qini(str(Path(args.out) / "qini_converted.png"), y[test], t[test], scores, title)
    timings["evaluate"] = time.perf_counter() - start

    exported = None
    if args.export_dir:
        rng = np.random.default_rng(args.seed)
        ex_rows = rng.choice(np.flatnonzero(test), size=min(32, int(test.sum())), replace=False)
        model = UpliftModel(
            name="uplift",
            encoder=encoder,
            learner=chosen,
            outcome="converted",
            segment_thresholds=th.to_json(),
            raw_examples=_raw_examples(frames, ex_rows),
            feature_schema=given_schema,
            retrieval=retrieval_info,
            policy=policy,
        )
        exported = _export(model, Path(args.export_dir))
    return {
        "dataset": "synth",
        "world": str(world),
        "rows": int(len(y_all)),
        "model_rows": int(len(log)),
        "dropped_rows": {"control_never_treatable": int(never_treatable.sum()),
                         "treated_not_shown": int(unshown.sum()) if args.treatment == "shown" else 0},
        "users": int(len(users)),
        "offers": int(len(offers)),
        "log_rows_with_unknown_user": unmatched_users,
        "treated_share": float(treated.mean()),
        "propensity": {"min": float(prop_all.min()), "max": float(prop_all.max()), "mean": float(prop_all.mean())},
        "ate": ate,
        "ate_details": ate_details,
        "ci": "95% normal interval, difference in means with Welch (unpooled) standard error",
        "ate_definition": "intention to treat over all log rows: treated = offer assigned",
        "treatment_definition": (
            "models and Qini: treated = offer shown (treated and impression = 1; assigned but not shown rows "
            "dropped), so p1 = P(convert | shown)" if args.treatment == "shown"
            else "models and Qini: treated = offer assigned (intention to treat)"
        ),
        "counterfactual_offer": "control rows get an offer drawn from the treated rows of their stratum "
                                "(campaign, channel, country, tier; coarser when empty)",
        "features": {sec: encoder.section_json(sec) for sec in encoder.sections},
        "train_config": config.__dict__,
        "models": {"converted": report},
        "export": exported,
        "metric_definitions": mu.__doc__,
        "timings_seconds": timings,
    }


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m offline uplift",
        description="uplift job: treatment effects and uplift models on randomised offer logs",
    )
    p.add_argument("--dataset", choices=("hillstrom", "synth"), required=True)
    p.add_argument("--data", help="hillstrom: the CSV file")
    p.add_argument("--world", help="synth: the world directory (users.csv, offers.*, campaign_log.csv)")
    p.add_argument("--out", required=True, help="output directory (uplift.json, qini_*.png)")
    p.add_argument("--export-dir", help="also write the T-learner heads here in the bundle layout")
    p.add_argument("--feature-schema", help="synth: JSON with the bundle feature_schema to use for user features")
    p.add_argument("--test-fraction", type=float, default=0.3, help="held-out share (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", default="32", help="hidden layer sizes, comma-separated; '' = logistic (default 32)")
    p.add_argument("--epochs", type=int, default=30, help="max epochs (early stopping, default 30)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--learner", choices=("response", "t_learner"), default="response",
                   help="synth: the exported learner (default response: p1 = p0 (1 - s) + (1 - p0) q, see "
                        "offline/uplift_models.py ResponseLearner; t_learner: p1 as an offset of p0's logits)")
    p.add_argument("--hidden-q", type=int, default=16, help="response learner: hidden units of q (default 16)")
    p.add_argument("--hidden-s", type=int, default=8, help="response learner: hidden units of s (default 8)")
    p.add_argument("--no-cancel", dest="cancel", action="store_false",
                   help="response learner: no cancellation channel s (p1 = p0 + (1 - p0) q)")
    p.add_argument("--embeddings-from", help="synth: train output dir or bundle whose embeddings give the "
                                             "retrieval_score input of p1 (docs/models-format.md)")
    p.add_argument("--users-jsonl", help="synth: users.jsonl of the --embeddings-from bundle when it has no user tower")
    p.add_argument("--calibration-folds", type=int, default=3,
                   help="synth, response learner: folds of the training users for the validated shrink and "
                        "min_ev (offline/uplift_calibration.py); 0 = off (default 3)")
    p.add_argument("--beta", type=float, default=0.1, help="synth: CLV weight of the EV the calibration uses "
                                                          "(the policy's beta, default 0.1)")
    p.add_argument("--shrink", type=float, help="synth: force the uplift shrink factor instead of calibrating")
    p.add_argument("--min-ev", type=float, help="synth: force the exported policy min_ev instead of calibrating")
    p.add_argument("--offer-id-vocabulary", type=int, default=256,
                   help="synth: one-hot offer ids, the N most frequent (0 = off; default 256)")
    p.add_argument("--offer-id-min-rows", type=int, default=50,
                   help="synth: treated training rows an offer id needs to get its own slot (default 50)")
    p.add_argument("--no-purchase-features", dest="purchase_features", action="store_false",
                   help="synth: do not derive the point-in-time RFM section from transactions.csv")
    p.add_argument("--treatment", choices=("shown", "assigned"), default="shown",
                   help="synth: what counts as treated for the models (default shown: p1 = P(convert | shown))")
    p.add_argument("--segment-uplift", type=float, default=0.02,
                   help="synth: |p1 - p0| above which a pair is persuadable / sleeping dog (default 0.02)")
    p.add_argument("--segment-response", type=float, default=0.20,
                   help="synth: p0 at or above which a neutral pair is a sure thing (default 0.20)")
    p.add_argument(
        "--model-outcomes",
        default="visit,conversion",
        help="hillstrom: outcomes to model, comma-separated (first one is exported; default visit,conversion)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset == "hillstrom" and not args.data:
        parser.error("--dataset hillstrom needs --data FILE")
    if args.dataset == "synth" and not args.world:
        parser.error("--dataset synth needs --world DIR")
    if not 0.0 < args.test_fraction < 1.0:
        parser.error("--test-fraction must be in (0, 1)")
    if args.users_jsonl and not args.embeddings_from:
        parser.error("--users-jsonl needs --embeddings-from")
    if args.calibration_folds == 1 or args.calibration_folds < 0:
        parser.error("--calibration-folds must be 0 or >= 2")
    if args.shrink is not None and not 0.0 <= args.shrink <= 4.0:
        parser.error("--shrink must be in [0, 4]")
    args.model_outcomes = [o for o in args.model_outcomes.split(",") if o]
    if args.dataset == "hillstrom":
        bad = [o for o in args.model_outcomes if o not in HILLSTROM_OUTCOMES]
        if bad or not args.model_outcomes:
            parser.error(f"--model-outcomes must be among {', '.join(HILLSTROM_OUTCOMES)}")
    try:
        hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    except ValueError:
        parser.error("--hidden must be comma-separated integers")
    if args.dataset == "synth" and args.learner == "response" and len(hidden) > 1:
        parser.error("--learner response takes one hidden layer (--hidden H) or none (--hidden '')")
    config = TrainConfig(
        hidden=hidden, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, seed=args.seed,
    )
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
        torch.use_deterministic_algorithms(True)  # with a fixed thread count: the same weights every run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        doc = run_hillstrom(args, config) if args.dataset == "hillstrom" else run_synth(args, config)
    except InputError as exc:
        print(f"offline uplift: error: {exc}", file=sys.stderr)
        return 2
    timings = doc.pop("timings_seconds")  # wall-clock: stderr only, uplift.json is the same on every run
    timings["total"] = time.perf_counter() - start
    write_json(out / "uplift.json", doc)
    print(f"uplift: wrote {out / 'uplift.json'}")
    print("uplift: timings " + json.dumps({k: round(v, 3) for k, v in timings.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
