"""Validated calibration of the uplift model's expected value, on logged randomized data only.

The service ranks candidates by ``EV = uplift x (margin + beta x CLV) - p1 x cost`` and drops
those with ``EV <= min_ev`` (the ROI gate). Two numbers are chosen here from held-out logged
rows of the *training* users (never the job's test users, never ground truth):

* ``shrink`` ``k``: a factor on the predicted uplift (how much of the model's spread is real),
* ``min_ev``: the gate, so that what passes it has a validated expected value above 0.

**Out-of-fold predictions.** The training users are split into ``folds`` groups by user
(``hash_fraction``); a model is fitted on the other groups and predicts the held-out group's
rows, for the offer each row had (treated rows: the logged offer; control rows: the
counterfactual offer of their stratum, as the uplift job assigns).

**Doubly robust pseudo-outcome.** With the value of a conversion ``V = margin_o + beta x CLV``
(the CLV estimate, not the truth), the logged reward is ``r = converted x V - redeemed x cost``
(control rows pay no cost), ``e`` the row's probability of being treated (treated share of its
campaign and channel among the modelled rows) and ``g = p0(x) x (V - e x cost)`` a baseline from
the out-of-fold p0 (any function of the row and its offer keeps the estimate unbiased under
randomisation, a good one cuts the variance)::

    Gamma = t (r - g) / e - (1 - t) (r - g) / (1 - e)

``E[Gamma | x, o] = E[r | x, o, shown] - E[r | x, no offer]`` = the true expected incremental
value of showing ``o`` (valued with the CLV estimate).

**Fit.** Since ``EV = uplift x (V - cost) - p0 x cost``, the calibrated value is modelled as
``E[Gamma | x, o] = k x uplift x (V - cost) - p0 x cost + a``, fitted by least squares on the
pairs whose predicted EV is in the top ``top_fraction`` (where the policy decides; the bulk of
pairs is far below the gate). ``k`` is clipped to ``[k_min, 1]`` (a model is not trusted to be
*under*-confident on this little evidence), ``a`` refitted with the clipped ``k``, and
``min_ev = max(0, -a)``: the model's EV after shrinking, plus ``a``, is the validated value, so
``EV > -a`` is where it is positive; the gate is never set below 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

TOP_FRACTION = 0.2
K_MIN = 0.25


@dataclass
class Calibration:
    shrink: float
    min_ev: float
    details: dict[str, Any]


def dr_pseudo_outcome(y: np.ndarray, t: np.ndarray, redeemed: np.ndarray, value: np.ndarray, cost: np.ndarray,
                      e: np.ndarray, p0: np.ndarray) -> np.ndarray:
    """Gamma per row (module docstring)."""
    t = np.asarray(t, dtype=np.float64)
    r = y * value - t * redeemed * cost
    g = p0 * (value - e * cost)
    return t * (r - g) / e - (1.0 - t) * (r - g) / (1.0 - e)


def fit_calibration(gamma: np.ndarray, p0: np.ndarray, p1: np.ndarray, value: np.ndarray, cost: np.ndarray,
                    top_fraction: float = TOP_FRACTION, k_min: float = K_MIN) -> Calibration:
    """``shrink`` and ``min_ev`` from out-of-fold predictions and pseudo-outcomes."""
    uplift = p1 - p0
    ev = uplift * value - p1 * cost
    n = ev.size
    top = ev >= np.quantile(ev, 1.0 - top_fraction) if n else np.zeros(0, bool)
    x = uplift * (value - cost)
    yv = gamma + p0 * cost
    X = np.stack([x[top], np.ones(int(top.sum()))], axis=1)
    coef, *_ = np.linalg.lstsq(X, yv[top], rcond=None)
    resid = yv[top] - X @ coef
    try:
        cov = np.linalg.inv(X.T @ X) * float(resid.var())
        se = np.sqrt(np.diag(cov))
    except np.linalg.LinAlgError:
        se = np.array([np.nan, np.nan])
    k = float(np.clip(coef[0], k_min, 1.0))
    a = float(np.mean(yv[top] - k * x[top]))
    min_ev = max(0.0, -a)
    # validated value of the gate, by EV bins (per pair, in currency units)
    ev_k = k * x - p0 * cost
    bins = []
    edges = np.quantile(ev_k, [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0])
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (ev_k >= lo) & (ev_k <= hi)
        if sel.sum() > 1:
            bins.append({"ev_from": float(lo), "ev_to": float(hi), "pairs": int(sel.sum()),
                         "mean_model_ev": float(ev_k[sel].mean()), "validated_value": float(gamma[sel].mean()),
                         "validated_se": float(gamma[sel].std(ddof=1) / np.sqrt(sel.sum()))})
    passes = ev_k > min_ev
    details = {
        "method": "doubly robust pseudo-outcomes on out-of-fold predictions; least squares of "
                  "Gamma + p0 x cost on uplift x (V - cost) and 1 over the top "
                  f"{top_fraction:.0%} of pairs by model EV",
        "pairs": int(n), "fit_pairs": int(top.sum()),
        "k_fitted": float(coef[0]), "k_se": float(se[0]), "a_fitted": float(coef[1]), "a_se": float(se[1]),
        "shrink": k, "a_with_shrink": a, "min_ev": min_ev,
        "validated_value_of_gate_per_1000_pairs": float(1000 * (gamma * passes).mean()) if n else 0.0,
        "validated_value_of_gate_se": float(1000 * (gamma * passes).std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        "share_passing_gate": float(passes.mean()) if n else 0.0,
        "bins": bins,
    }
    return Calibration(k, min_ev, details)


def out_of_fold(fit_predict: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                fold: np.ndarray, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """(p0, p1) per row from ``fit_predict(train_mask, predict_mask)``, one fit per fold."""
    p0 = np.full(fold.size, np.nan)
    p1 = np.full(fold.size, np.nan)
    for f in range(folds):
        held = fold == f
        if held.any() and (~held).any():
            p0[held], p1[held] = fit_predict(~held, held)
    return p0, p1


def treated_share(t: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """P(treated) per row: the treated share of its group (the keys' combination)."""
    import pandas as pd

    group = pd.MultiIndex.from_arrays([np.asarray(k).astype(str) for k in keys]).factorize()[0] if keys else \
        np.zeros(t.size, dtype=np.int64)
    share = pd.Series(np.asarray(t, dtype=np.float64)).groupby(group).transform("mean").to_numpy()
    return np.clip(share, 1e-3, 1 - 1e-3)


def summary(cal: Calibration) -> Mapping[str, Any]:
    return {"shrink": cal.shrink, "min_ev": cal.min_ev, **cal.details}
