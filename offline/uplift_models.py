"""Uplift learners and the input encoding / MLP format they share with the online service.

Pieces, from the bottom up:

* ``FeatureSpec`` + ``encode_section``: the exact raw -> float32 encoding the C++ service
  re-implements (numeric ``(x - mean) / std``, missing -> 0; categorical one-hot over the
  vocabulary plus one trailing unknown/missing slot). docs/models-format.md is the contract.
* ``DenseLayer`` / ``mlp_forward``: the reference numpy evaluation of an exported MLP
  (PyTorch ``Linear`` convention ``y = x @ W.T + b``, ``W`` of shape [out, in]).
* ``Head``: one small MLP (logistic regression when it has no hidden layer) over the
  concatenation of named input sections, trained with PyTorch.
* Learners: ``TLearner`` (p0 head on control rows, p1 head on treated rows), ``XLearner``
  (Kuenzel et al. 2019) and ``ClassTransformationLearner`` (Jaskowski & Jaroszewicz 2012,
  with weights that balance the arms, so any treated share works).
* ``ResponseLearner`` (the default exported learner): ``p1 = p0 (1 - s) + (1 - p0) q`` with
  jointly trained p0, persuasion ``q`` and cancellation ``s`` nets, exported as one plain MLP
  per head (the softplus algebra of the combination as ReLU knots, see the class).
* ``UpliftModel``: encoder + learner (its p0/p1 heads) + metadata; what
  ``export_uplift_heads`` (in ``offline.uplift``) writes into a bundle.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


# ---------------------------------------------------------------------------------------------
# Input encoding


@dataclass(frozen=True)
class FeatureSpec:
    """One raw feature and its encoder. ``kind`` is ``numeric`` (1 column) or ``categorical``
    (``len(vocabulary) + 1`` columns, the last one = unknown or missing)."""

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    vocabulary: tuple[str, ...] = ()
    transform: str = "none"  # numeric only: "none" or "log1p" (x -> ln(1 + x), before scaling)

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {self.name!r}: unknown kind {self.kind!r}")
        if self.transform not in ("none", "log1p") or (self.transform != "none" and self.kind != "numeric"):
            raise ValueError(f"feature {self.name!r}: bad transform {self.transform!r}")
        if self.kind == "numeric" and not (self.std > 0 and math.isfinite(self.std)):
            raise ValueError(f"feature {self.name!r}: std must be > 0")

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.vocabulary) + 1

    def to_json(self) -> dict[str, Any]:
        if self.kind == "numeric":
            out: dict[str, Any] = {"name": self.name, "kind": "numeric", "mean": self.mean, "std": self.std}
            if self.transform != "none":
                out["transform"] = self.transform
            return out
        return {"name": self.name, "kind": "categorical", "vocabulary": list(self.vocabulary)}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "FeatureSpec":
        if d["kind"] == "numeric":
            return FeatureSpec(str(d["name"]), "numeric", float(d["mean"]), float(d["std"]),
                               transform=str(d.get("transform", "none")))
        return FeatureSpec(str(d["name"]), "categorical", vocabulary=tuple(map(str, d["vocabulary"])))


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _numeric_values(vals: Any, transform: str) -> np.ndarray:
    """Raw values -> float64 after the transform; missing/unparsable/out of domain -> NaN."""
    x = pd.to_numeric(pd.Series(vals), errors="coerce").to_numpy(dtype=np.float64)
    if transform == "log1p":
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(x > -1.0, np.log1p(np.where(x > -1.0, x, 0.0)), np.nan)
    return x


def fit_feature_spec(
    name: str,
    values: pd.Series,
    kind: str | None = None,
    max_vocabulary: int = 64,
    min_count: int = 1,
    transform: str = "none",
) -> FeatureSpec:
    """Fit an encoder on training values. ``kind=None`` infers it: numeric/bool dtype ->
    numeric, otherwise categorical. Numeric: mean and population std (ddof 0) of the non-missing
    values after ``transform``, std 1 when it is 0 or undefined. Categorical: non-empty values
    seen at least ``min_count`` times, most frequent first (ties by value), at most
    ``max_vocabulary`` (the empty string means missing, as in the service)."""
    if kind is None:
        kind = "numeric" if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) else "categorical"
    if kind == "numeric":
        x = _numeric_values(values.to_numpy(), transform)
        x = x[np.isfinite(x)]
        mean = float(x.mean()) if x.size else 0.0
        std = float(x.std()) if x.size else 0.0
        if not (std > 0 and math.isfinite(std)):
            std = 1.0
        return FeatureSpec(name, "numeric", mean, std, transform=transform)
    s = values[~values.isna()].astype(str)
    s = s[s != ""]
    counts = s.value_counts()
    items = sorted(((v, int(c)) for v, c in counts.items() if c >= min_count), key=lambda vc: (-vc[1], vc[0]))
    return FeatureSpec(name, "categorical", vocabulary=tuple(v for v, _ in items[:max_vocabulary]))


def encode_section(
    specs: Sequence[FeatureSpec], frame: pd.DataFrame | Mapping[str, Sequence[Any]], n: int | None = None
) -> np.ndarray:
    """Encode raw columns into float32 ``[n, sum(width)]`` in ``specs`` order.

    A column absent from ``frame`` counts as missing for every row. Numeric values are parsed
    as float64, the optional transform applied (``log1p``: ``ln(1 + x)``, missing if
    ``x <= -1``), ``(x - mean) / std`` computed in float64 and rounded to float32; missing,
    unparsable or non-finite values encode as 0. Categorical values are compared as strings
    (exact bytes); anything not in the vocabulary, missing and "" set the last (unknown) slot.
    """
    if n is None:
        n = len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values()))) if frame else 0
    width = sum(s.width for s in specs)
    out = np.zeros((n, width), dtype=np.float32)
    col = 0
    for spec in specs:
        raw = frame[spec.name] if spec.name in frame else None
        if spec.kind == "numeric":
            if raw is not None:
                vals = raw.to_numpy() if isinstance(raw, pd.Series) else np.asarray(list(raw), dtype=object)
                z = (_numeric_values(vals, spec.transform) - spec.mean) / spec.std
                z[~np.isfinite(z)] = 0.0
                out[:, col] = z.astype(np.float32)
            col += 1
        else:
            unknown = len(spec.vocabulary)
            slots = np.full(n, unknown, dtype=np.int64)
            if raw is not None:
                s = pd.Series(raw.to_numpy(dtype=object) if isinstance(raw, pd.Series) else list(raw), dtype=object)
                present = ~s.isna().to_numpy()
                if present.any():
                    codes = pd.Categorical(s[present].astype(str), categories=list(spec.vocabulary)).codes
                    slots[present] = np.where(codes < 0, unknown, codes)
            out[np.arange(n), col + slots] = 1.0
            col += spec.width
    return out


def feature_schema_id(features: Sequence[Mapping[str, Any]]) -> str:
    """Schema id as in docs/snapshot-format.md: first 16 hex of sha256 of the compact,
    key-sorted JSON of the feature list."""
    text = json.dumps(list(features), separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class InputEncoder:
    """Named input sections, each a list of features. Section ``user`` is the bundle's
    ``feature_schema``; others (``context``, ``offer``) are model-local."""

    sections: dict[str, list[FeatureSpec]]

    def width(self, section: str) -> int:
        return sum(s.width for s in self.sections[section])

    def encode(self, raw: Mapping[str, pd.DataFrame | Mapping[str, Sequence[Any]]], n: int) -> dict[str, np.ndarray]:
        return {name: encode_section(specs, raw.get(name, {}), n) for name, specs in self.sections.items()}

    def section_json(self, section: str) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.sections[section]]


# ---------------------------------------------------------------------------------------------
# MLP: numpy reference + torch training module


@dataclass
class DenseLayer:
    weight: np.ndarray  # float32 [out, in]
    bias: np.ndarray  # float32 [out]
    activation: str

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")
        self.weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"bad layer shapes W{self.weight.shape} b{self.bias.shape}")


def apply_activation(z: np.ndarray, activation: str) -> np.ndarray:
    """float32 activations; sigmoid in the overflow-free two-branch form."""
    if activation == "identity":
        return z
    if activation == "relu":
        return np.maximum(z, np.float32(0))
    if activation == "tanh":
        return np.tanh(z)
    if activation == "sigmoid":
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, np.float32(1) / (np.float32(1) + e), e / (np.float32(1) + e)).astype(np.float32)
    raise ValueError(f"unknown activation {activation!r}")


def mlp_forward(layers: Sequence[DenseLayer], x: np.ndarray) -> np.ndarray:
    """Reference evaluation in float32: ``h = act(h @ W.T + b)`` per layer."""
    h = np.asarray(x, dtype=np.float32)
    for layer in layers:
        h = apply_activation((h @ layer.weight.T + layer.bias).astype(np.float32), layer.activation)
    return h


def _torch():
    import torch  # imported lazily: the metrics and encoders do not need it

    return torch


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch Adam on BCE (probability heads) or MSE (regression heads). ``val_fraction``
    of the rows is held out for early stopping (best epoch kept, ``patience`` epochs)."""

    hidden: tuple[int, ...] = (32,)
    hidden_activation: str = "relu"
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    patience: int = 5
    seed: int = 0


class Head:
    """An MLP over the concatenation of ``inputs`` (encoded sections, in that order).
    ``output`` is ``sigmoid`` (probability, BCE) or ``identity`` (regression, MSE)."""

    def __init__(self, name: str, inputs: Sequence[str], output: str, config: TrainConfig) -> None:
        if output not in ("sigmoid", "identity"):
            raise ValueError("output must be sigmoid or identity")
        self.name = name
        self.inputs = tuple(inputs)
        self.output = output
        self.config = config
        self.module: Any = None
        self.history: list[float] = []

    def features(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([x[s] for s in self.inputs], axis=1).astype(np.float32, copy=False)

    def _build(self, d_in: int) -> Any:
        torch = _torch()
        nn = torch.nn
        act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
        mods: list[Any] = []
        d = d_in
        for h in self.config.hidden:
            mods += [nn.Linear(d, h), act[self.config.hidden_activation]()]
            d = h
        mods.append(nn.Linear(d, 1))  # the output activation is applied outside (logits for BCE)
        return nn.Sequential(*mods)

    def fit(
        self,
        x: Mapping[str, np.ndarray],
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> "Head":
        """Train; ``offset`` (optional, per row) is added to the pre-activation output, so the
        head learns a correction to another model's logits and starts at zero."""
        torch = _torch()
        cfg = self.config
        feats = self.features(x)
        n = feats.shape[0]
        if n < 2:
            raise ValueError(f"head {self.name}: needs at least 2 training rows, got {n}")
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.module = self._build(feats.shape[1])
        xt = torch.from_numpy(np.ascontiguousarray(feats))
        yt = torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(-1, 1))
        wt = torch.from_numpy(
            np.ones((n, 1), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32).reshape(-1, 1)
        )
        ot = torch.from_numpy(
            np.zeros((n, 1), np.float32) if offset is None else np.asarray(offset, np.float32).reshape(-1, 1)
        )
        perm = torch.randperm(n, generator=gen)
        n_val = int(n * cfg.val_fraction) if n >= 50 else 0
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        if offset is not None:
            with torch.no_grad():
                self.module[-1].weight.zero_()
                self.module[-1].bias.zero_()
        elif self.output == "sigmoid":
            # start the output bias at the (weighted) base rate: faster, stabler for rare outcomes
            base = float((wt[tr_idx] * yt[tr_idx]).sum() / wt[tr_idx].sum())
            base = min(max(base, 1e-4), 1 - 1e-4)
            with torch.no_grad():
                self.module[-1].bias.fill_(math.log(base / (1 - base)))

        def loss_fn(logits: Any, target: Any, w: Any) -> Any:
            if self.output == "sigmoid":
                per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
            else:
                per = (logits - target) ** 2
            return (per * w).sum() / w.sum()

        opt = torch.optim.Adam(self.module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, bad = float("inf"), None, 0
        for _epoch in range(cfg.epochs):
            self.module.train()
            order = tr_idx[torch.randperm(tr_idx.numel(), generator=gen)]
            for start in range(0, order.numel(), cfg.batch_size):
                b = order[start : start + cfg.batch_size]
                opt.zero_grad()
                loss = loss_fn(self.module(xt[b]) + ot[b], yt[b], wt[b])
                loss.backward()
                opt.step()
            if n_val == 0:
                continue
            self.module.eval()
            with torch.no_grad():
                v = float(loss_fn(self.module(xt[val_idx]) + ot[val_idx], yt[val_idx], wt[val_idx]))
            self.history.append(v)
            if v < best - 1e-7:
                best, bad = v, 0
                best_state = {k: p.detach().clone() for k, p in self.module.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if best_state is not None:
            self.module.load_state_dict(best_state)
        self.module.eval()
        return self

    def logits_torch(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 pre-activation output of the torch module."""
        torch = _torch()
        with torch.no_grad():
            z = self.module(torch.from_numpy(np.ascontiguousarray(self.features(x))))
        return z.numpy().reshape(-1)

    def predict_torch(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 output of the torch module (with the output activation)."""
        torch = _torch()
        z = torch.from_numpy(self.logits_torch(x))
        return (torch.sigmoid(z) if self.output == "sigmoid" else z).numpy().reshape(-1)

    def predict(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.predict_torch(x).astype(np.float64)

    def layers(self) -> list[DenseLayer]:
        """The trained weights as exportable layers (last layer carries the output activation)."""
        torch = _torch()
        linears = [m for m in self.module if isinstance(m, torch.nn.Linear)]
        out: list[DenseLayer] = []
        for i, lin in enumerate(linears):
            act = self.output if i == len(linears) - 1 else self.config.hidden_activation
            out.append(DenseLayer(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy(), act))
        return out


class OffsetHead:
    """``p1 = sigmoid(logit_p0(x) + delta(x))``: the treated response as a learned correction of
    the control head's logits (``delta`` starts at 0, so with little evidence p1 stays near
    p0 instead of carrying the independent noise of a second model). It exports as ONE plain
    MLP: hidden layers side by side (block-diagonal, p0's first layer reading only its input
    columns), output weights concatenated and biases added."""

    def __init__(self, base: Head, inputs: Sequence[str], config: TrainConfig) -> None:
        if tuple(config.hidden) != tuple(base.config.hidden) or config.hidden_activation != base.config.hidden_activation:
            raise ValueError("offset head needs the same hidden layout as its base head")
        if not set(base.inputs) <= set(inputs):
            raise ValueError("offset head inputs must include the base head's inputs")
        self.name = "p1"
        self.base = base
        self.delta = Head("p1_delta", inputs, "sigmoid", config)
        self.inputs = tuple(inputs)
        self.output = "sigmoid"
        self.widths: dict[str, int] = {}

    def fit(self, x: Mapping[str, np.ndarray], y: np.ndarray) -> "OffsetHead":
        self.widths = {s: int(x[s].shape[1]) for s in self.inputs}
        self.delta.fit(x, y, offset=self.base.logits_torch(x))
        return self

    def predict_torch(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        torch = _torch()
        z = torch.from_numpy(self.base.logits_torch(x)) + torch.from_numpy(self.delta.logits_torch(x))
        return torch.sigmoid(z).numpy()

    def predict(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.predict_torch(x).astype(np.float64)

    def layers(self) -> list[DenseLayer]:
        base, delta = self.base.layers(), self.delta.layers()
        # columns of the base inputs inside this head's input vector
        offsets, pos = {}, 0
        for sec in self.inputs:
            offsets[sec] = pos
            pos += self.widths[sec]
        cols = np.concatenate([np.arange(offsets[s], offsets[s] + self.widths[s]) for s in self.base.inputs])
        out: list[DenseLayer] = []
        for i, (lb, ld) in enumerate(zip(base, delta)):
            last = i == len(base) - 1
            if i == 0:
                wb = np.zeros((lb.weight.shape[0], pos), np.float32)
                wb[:, cols] = lb.weight
            else:
                wb = lb.weight
            if last:
                # logistic (no hidden layer): both read the full input, weights add up
                w = np.concatenate([wb, ld.weight], axis=1) if i > 0 else wb + ld.weight
                b = (lb.bias + ld.bias).astype(np.float32)
                out.append(DenseLayer(w, b, "sigmoid"))
            else:
                if i == 0:
                    w = np.concatenate([wb, ld.weight], axis=0)
                else:
                    w = np.block([
                        [wb, np.zeros((wb.shape[0], ld.weight.shape[1]), np.float32)],
                        [np.zeros((ld.weight.shape[0], wb.shape[1]), np.float32), ld.weight],
                    ])
                out.append(DenseLayer(w, np.concatenate([lb.bias, ld.bias]), lb.activation))
        return out


# ---------------------------------------------------------------------------------------------
# Learners


def _treated_share(t: np.ndarray) -> float:
    t = np.asarray(t)
    share = float(t.mean())
    if not 0.0 < share < 1.0:
        raise ValueError("need both treated and control rows")
    return share


def _subset(x: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in x.items()}


class TLearner:
    """Two response models: p0 = P(y | x, control) fit on control rows, p1 = P(y | x, treated)
    fit on treated rows; uplift = p1 - p0. ``p0_inputs`` may omit sections that only exist
    for treated rows (the offer). ``p1_mode="offset"`` (default) fits p1 as a correction of
    p0's logits (:class:`OffsetHead`); ``"separate"`` fits an independent head."""

    kind = "t_learner"

    def __init__(
        self, p0_inputs: Sequence[str], p1_inputs: Sequence[str], config: TrainConfig, p1_mode: str = "offset"
    ) -> None:
        if p1_mode not in ("offset", "separate"):
            raise ValueError("p1_mode must be offset or separate")
        self.p1_mode = p1_mode
        self.p0 = Head("p0", p0_inputs, "sigmoid", config)
        p1_config = TrainConfig(**{**config.__dict__, "seed": config.seed + 1})
        self.p1: Head | OffsetHead = (
            OffsetHead(self.p0, p1_inputs, p1_config)
            if p1_mode == "offset"
            else Head("p1", p1_inputs, "sigmoid", p1_config)
        )

    def fit(self, x: Mapping[str, np.ndarray], y: np.ndarray, t: np.ndarray) -> "TLearner":
        t = np.asarray(t).astype(bool)
        _treated_share(t)
        self.p0.fit(_subset(x, ~t), np.asarray(y)[~t])
        self.p1.fit(_subset(x, t), np.asarray(y)[t])
        return self

    def predict_p0(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.p0.predict(x)

    def predict_p1(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.p1.predict(x)

    def predict_uplift(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.predict_p1(x) - self.predict_p0(x)


class XLearner:
    """X-learner: stage 1 is a T-learner (mu0, mu1); the imputed effects
    ``D1 = y - mu0(x)`` on treated and ``D0 = mu1(x) - y`` on control rows are regressed by
    ``tau1`` and ``tau0`` (MSE heads over all sections); uplift =
    ``g * tau0(x) + (1 - g) * tau1(x)`` with ``g`` = the treated share (the propensity of a
    randomised experiment)."""

    kind = "x_learner"

    def __init__(self, base: TLearner, inputs: Sequence[str], config: TrainConfig) -> None:
        self.base = base
        self.tau0 = Head("tau0", inputs, "identity", TrainConfig(**{**config.__dict__, "seed": config.seed + 2}))
        self.tau1 = Head("tau1", inputs, "identity", TrainConfig(**{**config.__dict__, "seed": config.seed + 3}))
        self.g = 0.5

    def fit(self, x: Mapping[str, np.ndarray], y: np.ndarray, t: np.ndarray, base_fitted: bool = False) -> "XLearner":
        t = np.asarray(t).astype(bool)
        y = np.asarray(y, dtype=np.float64)
        self.g = _treated_share(t)
        if not base_fitted:
            self.base.fit(x, y, t)
        x1, x0 = _subset(x, t), _subset(x, ~t)
        self.tau1.fit(x1, y[t] - self.base.predict_p0(x1))
        self.tau0.fit(x0, self.base.predict_p1(x0) - y[~t])
        return self

    def predict_uplift(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.g * self.tau0.predict(x) + (1.0 - self.g) * self.tau1.predict(x)


class ClassTransformationLearner:
    """Class-variable transformation: ``z = y*t + (1-y)*(1-t)`` for a binary outcome, fit with
    weights ``0.5/e`` (treated) and ``0.5/(1-e)`` (control), ``e`` = P(treated) of the row, so
    the arms weigh equally everywhere; then ``uplift = 2 P(z=1 | x) - 1``."""

    kind = "class_transformation"

    def __init__(self, inputs: Sequence[str], config: TrainConfig) -> None:
        self.head = Head("z", inputs, "sigmoid", TrainConfig(**{**config.__dict__, "seed": config.seed + 4}))

    def fit(
        self, x: Mapping[str, np.ndarray], y: np.ndarray, t: np.ndarray, propensity: np.ndarray | None = None
    ) -> "ClassTransformationLearner":
        """``propensity``: P(treated) per row when it varies (e.g. per campaign); default the
        overall treated share."""
        y = np.asarray(y, dtype=np.float64)
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("class transformation needs a binary outcome")
        t = np.asarray(t).astype(np.float64)
        e = np.full(t.shape, _treated_share(t)) if propensity is None else np.asarray(propensity, dtype=np.float64)
        if not np.all((e > 0) & (e < 1)):
            raise ValueError("propensity must be in (0, 1)")
        z = y * t + (1 - y) * (1 - t)
        w = np.where(t == 1, 0.5 / e, 0.5 / (1 - e))
        self.head.fit(x, z, sample_weight=w)
        return self

    def predict_uplift(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return 2.0 * self.head.predict(x) - 1.0


# ---------------------------------------------------------------------------------------------
# The exportable model


@dataclass
class UpliftModel:
    """What goes into a bundle: the encoder, the p0/p1 heads (of a :class:`TLearner` or a
    :class:`ResponseLearner`) and the metadata the service needs. ``raw_examples`` are raw rows
    (section -> {feature: value}) used for golden cases."""

    name: str
    encoder: InputEncoder
    learner: "TLearner | ResponseLearner"
    outcome: str
    segment_thresholds: dict[str, float]
    raw_examples: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    # the bundle's feature_schema object ({"id", "features"}) exactly as given, when the user
    # section was built from one; None = derived from encoder.sections["user"]
    feature_schema: dict[str, Any] | None = None
    # with a ``retrieval`` section: the embeddings' fingerprint (offline.retrieval) the bundle
    # must match; policy defaults validated with the model (e.g. {"beta": 0.1, "min_ev": 0.05})
    retrieval: dict[str, Any] | None = None
    policy: dict[str, Any] = field(default_factory=dict)

    def encode_raw_rows(self, rows: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, np.ndarray]:
        n = len(rows)
        raw = {
            sec: {spec.name: [r.get(sec, {}).get(spec.name) for r in rows] for spec in specs}
            for sec, specs in self.encoder.sections.items()
        }
        return self.encoder.encode(raw, n)


# ---------------------------------------------------------------------------------------------
# The response learner: p1 = p0 (1 - s) + (1 - p0) q, exported as one plain MLP


class ExportedHead:
    """A fixed list of dense layers over named input sections (what a bundle holds): the
    ``name`` / ``inputs`` / ``layers()`` / ``predict_torch`` interface of :class:`Head`."""

    def __init__(self, name: str, inputs: Sequence[str], layers: Sequence[DenseLayer]) -> None:
        self.name = name
        self.inputs = tuple(inputs)
        self.output = "sigmoid"
        self._layers = list(layers)

    def features(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([x[s] for s in self.inputs], axis=1).astype(np.float32, copy=False)

    def layers(self) -> list[DenseLayer]:
        return list(self._layers)

    def predict_torch(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 output of the layers evaluated with torch (``Linear`` convention)."""
        torch = _torch()
        h = torch.from_numpy(np.ascontiguousarray(self.features(x)))
        with torch.no_grad():
            for layer in self._layers:
                z = h @ torch.from_numpy(layer.weight).T + torch.from_numpy(layer.bias)
                h = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                     "identity": lambda v: v}[layer.activation](z)
        return h.numpy().reshape(-1)

    def predict(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return mlp_forward(self._layers, self.features(x)).reshape(-1).astype(np.float64)


def _logit(p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def combined_response(z0: np.ndarray, zq: np.ndarray, zs: np.ndarray | None) -> np.ndarray:
    """p1 of the response model from its logits (float64): ``p0 (1 - s) + (1 - p0) q`` with
    ``p0 = sigmoid(z0)``, ``q = sigmoid(zq)``, ``s = sigmoid(zs)`` (0 without s)."""
    sig = lambda v: 0.5 * (1.0 + np.tanh(0.5 * np.asarray(v, dtype=np.float64)))  # noqa: E731
    p0, q = sig(z0), sig(zq)
    s = sig(zs) if zs is not None else 0.0
    return p0 * (1.0 - s) + (1.0 - p0) * q


SOFTPLUS_KNOTS = 48


def softplus_knots(n: int = SOFTPLUS_KNOTS, lo: float = -16.0, hi: float = 16.0) -> tuple[np.ndarray, np.ndarray, float]:
    """ReLU form of ``softplus(x) = ln(1 + e^x)``: ``const + sum_j w_j relu(x - c_j)``, the
    piecewise-linear interpolation at ``n`` knots spaced for equal error (density proportional to
    ``sqrt(softplus'')``) in [lo, hi], slope exactly 1 after the last knot. Returns
    ``(c, w, const)``; the largest error over the real line is 7.4e-4 with 48 knots."""
    theta = np.linspace(np.arctan(np.sinh(lo / 2)), np.arctan(np.sinh(hi / 2)), n)
    c = 2.0 * np.arcsinh(np.tan(theta))
    y = np.logaddexp(0.0, c)
    slopes = np.concatenate([np.diff(y) / np.diff(c), [1.0]])
    w = np.diff(np.concatenate([[0.0], slopes]))
    return c, w, float(y[0])


def response_logit(z0: np.ndarray, zq: np.ndarray, zs: np.ndarray | None) -> np.ndarray:
    """``logit(p1)`` of :func:`combined_response` (shrink 1) in the form the export builds:
    ``zq + sp(z0 + sp(-zq) - sp(zs)) - sp(z0 + zs + sp(zq) - sp(zs))``, ``sp`` = softplus (the
    second term vanishes without s). Exact (float64 reference)."""
    sp = lambda v: np.logaddexp(0.0, v)  # noqa: E731
    if zs is None:
        return zq + sp(z0 + sp(-zq))
    return zq + sp(z0 + sp(-zq) - sp(zs)) - sp(z0 + zs + sp(zq) - sp(zs))


S_INIT = 0.05  # initial s: neutral on the validated value (offline/uplift_calibration.py), recovers planted sleeping dogs


class ResponseLearner:
    """Uplift through a response model of how a shown offer acts: it *persuades* a
    would-not-buyer with probability ``q`` and *cancels* a would-buy with probability ``s``::

        p0 = sigmoid(z0),  z0 = f0(user, purchases, context)
        p1 = p0 (1 - s) + (1 - p0) q,  q = sigmoid(zq + ln k),  s = sigmoid(zs + ln k)
        zq = fq(all inputs),  zs = fs(all inputs)

    ``f0``, ``fq``, ``fs`` are one-hidden-layer ReLU MLPs trained *jointly* by maximum
    likelihood on all rows (control rows: y ~ p0; treated rows: y ~ p1), so p0 learns from the
    treated rows too, and the uplift ``(1 - p0) q - p0 s`` does not grow with p0 the way an
    additive-logit (offset) model's does. ``k`` = :attr:`shrink` (1 when trained; a validated
    factor from offline/uplift_calibration.py) scales q and s -- for small q and s, the uplift
    -- by a shift of their logits.

    Export: ``p0`` is f0 as it is. ``p1`` is ONE plain MLP (docs/models-format.md) that
    computes ``logit(p1) = zq + sp(z0 + sp(-zq) - sp(zs)) - sp(z0 + zs + sp(zq) - sp(zs))``
    (:func:`response_logit`, ``sp`` = softplus): layer 1 = the hidden layers of f0, fq, fs side
    by side (f0 reading only its columns); layer 2 = ReLU knots of ``sp(zq)``, ``sp(zs)`` and
    +-ReLU pairs passing z0, zq, zs through (the output layers of f0, fq, fs folded in); layer
    3 = knots of the two outer softplus terms and zq passed through; layer 4 = sigmoid. The
    only approximation is softplus by its 48-knot interpolation (:func:`softplus_knots`, at
    most 7.4e-4 per softplus in the logit); :meth:`approximation_error` reports it."""

    kind = "response"

    def __init__(self, p0_inputs: Sequence[str], p1_inputs: Sequence[str], config: TrainConfig,
                 hidden_q: int = 16, hidden_s: int = 8, use_s: bool = True) -> None:
        if not set(p0_inputs) <= set(p1_inputs):
            raise ValueError("p1 inputs must include p0's")
        if len(config.hidden) > 1:
            raise ValueError("the response learner takes at most one hidden layer (config.hidden = (H,) or ())")
        self.config = config
        self.p0_inputs = tuple(p0_inputs)
        self.p1_inputs = tuple(p1_inputs)
        # () = logistic heads (then q and s are logistic too)
        self.hidden = ((int(config.hidden[0]), int(hidden_q), int(hidden_s) if use_s else 0) if config.hidden
                       else (0, 0, 0))
        self.use_s = use_s
        self.shrink = 1.0
        self.history: list[float] = []
        self.modules: dict[str, Any] = {}
        self.widths: dict[str, int] = {}
        self.p0: ExportedHead | None = None
        self.p1: ExportedHead | None = None

    # -- training
    def _inputs(self, x: Mapping[str, np.ndarray], secs: Sequence[str]) -> Any:
        torch = _torch()
        return torch.from_numpy(np.ascontiguousarray(np.concatenate([x[s] for s in secs], axis=1), dtype=np.float32))

    def _logits(self, x0: Any, x1: Any) -> tuple[Any, Any, Any]:
        z0 = self.modules["f0"](x0)
        zq = self.modules["fq"](x1)
        zs = self.modules["fs"](x1) if self.use_s else None
        return z0, zq, zs

    def fit(self, x: Mapping[str, np.ndarray], y: np.ndarray, t: np.ndarray) -> "ResponseLearner":
        torch = _torch()
        nn = torch.nn
        cfg = self.config
        t = np.asarray(t).astype(bool)
        _treated_share(t)
        y = np.asarray(y, dtype=np.float64)
        self.widths = {s: int(x[s].shape[1]) for s in self.p1_inputs}
        x0, x1 = self._inputs(x, self.p0_inputs), self._inputs(x, self.p1_inputs)
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        def mlp(d_in: int, h: int) -> Any:
            if h == 0:
                return nn.Sequential(nn.Linear(d_in, 1))
            return nn.Sequential(nn.Linear(d_in, h), nn.ReLU(), nn.Linear(h, 1))

        self.modules = {"f0": mlp(x0.shape[1], self.hidden[0]), "fq": mlp(x1.shape[1], self.hidden[1])}
        if self.use_s:
            self.modules["fs"] = mlp(x1.shape[1], self.hidden[2])
        base = min(max(float(y[~t].mean()), 1e-4), 1 - 1e-4)
        with torch.no_grad():
            self.modules["f0"][-1].bias.fill_(math.log(base / (1 - base)))
            for name, start in (("fq", 0.01), ("fs", S_INIT)):
                if name in self.modules:  # start near "the offer does little"
                    self.modules[name][-1].weight.mul_(0.1)
                    self.modules[name][-1].bias.fill_(math.log(start / (1 - start)))
        yt = torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
        tt = torch.from_numpy(t.reshape(-1, 1))
        n = len(y)
        perm = torch.randperm(n, generator=gen)
        n_val = int(n * cfg.val_fraction) if n >= 50 else 0
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        params = [p for m in self.modules.values() for p in m.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def loss_fn(idx: Any) -> Any:
            z0, zq, zs = self._logits(x0[idx], x1[idx])
            p0 = torch.sigmoid(z0)
            p1 = p0 * (1 - torch.sigmoid(zs)) if zs is not None else p0
            p1 = p1 + (1 - p0) * torch.sigmoid(zq)
            p = torch.where(tt[idx], p1, p0).clamp(1e-7, 1 - 1e-7)
            yy = yt[idx]
            return -(yy * torch.log(p) + (1 - yy) * torch.log1p(-p)).mean()

        best, best_state, bad = float("inf"), None, 0
        for _epoch in range(cfg.epochs):
            for m in self.modules.values():
                m.train()
            order = tr_idx[torch.randperm(tr_idx.numel(), generator=gen)]
            for start in range(0, order.numel(), cfg.batch_size):
                b = order[start:start + cfg.batch_size]
                opt.zero_grad()
                loss = loss_fn(b)
                loss.backward()
                opt.step()
            if n_val == 0:
                continue
            with torch.no_grad():
                v = float(loss_fn(val_idx))
            self.history.append(v)
            if v < best - 1e-7:
                best, bad = v, 0
                best_state = {k: {n_: p.detach().clone() for n_, p in m.state_dict().items()}
                              for k, m in self.modules.items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if best_state is not None:
            for k, m in self.modules.items():
                m.load_state_dict(best_state[k])
        for m in self.modules.values():
            m.eval()
        self.set_shrink(1.0)
        return self

    def logits(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """[n, 2|3] float64 logits (z0, zq + ln k[, zs + ln k]) of the torch heads."""
        torch = _torch()
        with torch.no_grad():
            z0, zq, zs = self._logits(self._inputs(x, self.p0_inputs), self._inputs(x, self.p1_inputs))
        parts = [z0, zq] + ([zs] if zs is not None else [])
        z = torch.cat(parts, dim=1).numpy().astype(np.float64)
        z[:, 1:] += self._log_shrink()
        return z

    def _log_shrink(self) -> float:
        return math.log(self.shrink) if self.shrink > 0 else -50.0

    def set_shrink(self, shrink: float) -> None:
        """Scale q and s by ``shrink`` (a shift of their logits by ln(shrink); 0 = no effect);
        rebuilds the exported heads."""
        if not (0.0 <= shrink <= 4.0):
            raise ValueError("shrink must be in [0, 4]")
        self.shrink = float(shrink)
        self.p0 = ExportedHead("p0", self.p0_inputs, self._p0_layers())
        self.p1 = ExportedHead("p1", self.p1_inputs, self._p1_layers())

    # -- prediction
    def predict_p0(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        assert self.p0 is not None
        return self.p0.predict(x)

    def predict_p1(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """p1 of the exported MLP (what the service computes)."""
        assert self.p1 is not None
        return self.p1.predict(x)

    def predict_p1_exact(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """p1 of the response formula itself (float64, no softplus interpolation)."""
        z = self.logits(x)
        return combined_response(z[:, 0], z[:, 1], z[:, 2] if z.shape[1] == 3 else None)

    def predict_uplift(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.predict_p1(x) - self.predict_p0(x)

    def approximation_error(self, x: Mapping[str, np.ndarray]) -> dict[str, float]:
        """How far the exported p1 is from the response formula on rows ``x``."""
        exact = self.predict_p1_exact(x)
        err = np.abs(self.predict_p1(x) - exact)
        return {"max_abs_p1": float(err.max()), "mean_abs_p1": float(err.mean()),
                "mean_abs_uplift": float(np.abs(exact - self.predict_p0(x)).mean())}

    # -- export
    def _linear(self, name: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        lin = self.modules[name][i]
        return lin.weight.detach().numpy().astype(np.float64), lin.bias.detach().numpy().astype(np.float64)

    def _p0_layers(self) -> list[DenseLayer]:
        w0, b0 = self._linear("f0", 0)
        if self.hidden[0] == 0:
            return [DenseLayer(w0, b0, "sigmoid")]
        w1, b1 = self._linear("f0", 2)
        return [DenseLayer(w0, b0, "relu"), DenseLayer(w1, b1, "sigmoid")]

    def _p1_layers(self) -> list[DenseLayer]:
        offsets, pos = {}, 0
        for sec in self.p1_inputs:
            offsets[sec] = pos
            pos += self.widths[sec]
        cols0 = np.concatenate([np.arange(offsets[s], offsets[s] + self.widths[s]) for s in self.p0_inputs])
        heads = ["f0", "fq"] + (["fs"] if self.use_s else [])
        first_w, first_b, out_w, out_b = [], [], [], []
        for name in heads:
            w, b = self._linear(name, 0)
            if name == "f0":
                full = np.zeros((w.shape[0], pos))
                full[:, cols0] = w
                w = full
            shift = self._log_shrink() if name != "f0" else 0.0
            if self.hidden[0] == 0:  # logistic heads: layer 1 passes each logit as relu(z), relu(-z)
                first_w.append(np.concatenate([w, -w]))
                first_b.append(np.array([b[0] + shift, -(b[0] + shift)]))
                out_w.append(np.array([1.0, -1.0]))
                out_b.append(0.0)
                continue
            first_w.append(w)
            first_b.append(b)
            ow, ob = self._linear(name, 2)
            out_w.append(ow.reshape(-1))
            out_b.append(float(ob[0]) + shift)
        h1 = sum(w.shape[0] for w in first_w)
        # A linear function of a layer's outputs is a pair (vector over its units, constant).
        # z0, zq, zs over layer 1:
        z: dict[str, tuple[np.ndarray, float]] = {}
        start = 0
        for name, ow, ob in zip(heads, out_w, out_b):
            vec = np.zeros(h1)
            vec[start:start + ow.size] = ow
            z[name[1]] = (vec, ob)
            start += ow.size
        c, w, const = softplus_knots()

        def knots_of(f: tuple[np.ndarray, float]) -> tuple[np.ndarray, np.ndarray]:
            """units relu(f - c_j): weight rows and biases."""
            return np.tile(f[0], (len(c), 1)), f[1] - c

        def pair_of(f: tuple[np.ndarray, float]) -> tuple[np.ndarray, np.ndarray]:
            """units relu(f), relu(-f)."""
            return np.stack([f[0], -f[0]]), np.array([f[1], -f[1]])

        def stack(blocks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
            starts = np.cumsum([0] + [b[0].shape[0] for b in blocks]).tolist()
            return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]), starts

        # layer 2: [sp(zq) knots][sp(zs) knots][+-z0][+-zq][+-zs]
        names2 = ["sq"] + (["ss"] if self.use_s else []) + ["p0", "pq"] + (["ps"] if self.use_s else [])
        blocks2 = [knots_of(z["q"])] + ([knots_of(z["s"])] if self.use_s else [])
        blocks2 += [pair_of(z["0"]), pair_of(z["q"])] + ([pair_of(z["s"])] if self.use_s else [])
        w2, b2, st2 = stack(blocks2)
        n2 = w2.shape[0]

        def read2(terms: dict[str, float], constant: float = 0.0) -> tuple[np.ndarray, float]:
            """a linear function over layer 2: sums of sp(zq) ("sq"), sp(zs) ("ss"), z0/zq/zs
            ("z0"/"zq"/"zs") with coefficients."""
            vec = np.zeros(n2)
            cst = constant
            for key, coef in terms.items():
                if key in ("sq", "ss"):
                    i = st2[names2.index(key)]
                    vec[i:i + len(c)] += coef * w
                    cst += coef * const
                else:
                    i = st2[names2.index("p" + key[1])]
                    vec[i] += coef
                    vec[i + 1] -= coef
            return vec, cst

        # sp(-zq) = sp(zq) - zq
        if self.use_s:
            u1 = read2({"z0": 1.0, "sq": 1.0, "zq": -1.0, "ss": -1.0})
            u2 = read2({"z0": 1.0, "zs": 1.0, "sq": 1.0, "ss": -1.0})
            blocks3 = [knots_of(u1), knots_of(u2), pair_of(read2({"zq": 1.0}))]
        else:
            u1 = read2({"z0": 1.0, "sq": 1.0, "zq": -1.0})
            blocks3 = [knots_of(u1), pair_of(read2({"zq": 1.0}))]
        w3, b3, st3 = stack(blocks3)
        # layer 4: logit = zq + sp(u1) - sp(u2)
        w4 = np.zeros(w3.shape[0])
        b4 = const
        w4[st3[0]:st3[0] + len(c)] = w
        if self.use_s:
            w4[st3[1]:st3[1] + len(c)] = -w
            b4 -= const
        w4[st3[-2]] = 1.0
        w4[st3[-2] + 1] = -1.0
        return [DenseLayer(np.concatenate(first_w, axis=0), np.concatenate(first_b), "relu"),
                DenseLayer(w2, b2, "relu"), DenseLayer(w3, b3, "relu"),
                DenseLayer(w4.reshape(1, -1), np.array([b4]), "sigmoid")]
