"""Off-policy value estimates from logged decisions with known propensities (IPS, SNIPS).

Shared by ``offline evaluate`` (our policy on the randomized campaign log) and the service's
decision-log report. Everything is plain numpy over per-row arrays:

- ``rewards[i]``: the observed reward of row ``i`` (any real number; for an incremental-value
  estimate see :func:`ips_difference`),
- ``logged_propensities[i]``: the probability ``mu(a_i | x_i) > 0`` with which the logging
  policy chose the action that was logged (the offer, or "no offer"),
- ``target_propensities[i]``: the probability ``pi(a_i | x_i)`` that the evaluated policy
  gives *the logged action* (1/0 for a deterministic policy: "would it have chosen the same").

Estimators (``w_i = pi_i / mu_i``, ``n`` rows):

- IPS (Horvitz-Thompson): ``V = (1/n) sum w_i r_i``; unbiased when ``mu > 0`` wherever
  ``pi > 0``. Normal confidence interval from the sample standard deviation of ``w_i r_i``.
- SNIPS (self-normalised): ``V = sum w_i r_i / sum w_i``; slightly biased, much lower variance
  when the weights are large. Confidence interval by the delta method: influence
  ``psi_i = w_i (r_i - V) / mean(w)``, standard error ``std(psi) / sqrt(n)``.
- ``effective_sample_size = (sum w)^2 / sum w^2`` (Kish): how many equally weighted rows the
  estimate is worth; small values mean few logged rows agree with the target policy.

With ``pi = mu`` (the logging policy evaluated on its own log) every weight is 1 and both
estimates equal the logged mean reward. Optional ``max_weight`` clips the weights (biased
towards the logged mean, lower variance; off by default).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class IPSEstimate:
    """IPS and SNIPS estimates of a policy value (or of a difference of two values).

    Iterating yields ``(estimate, ci_low, ci_high)`` of IPS, so
    ``v, lo, hi = ips_value(...)`` works.
    """

    estimate: float
    ci_low: float
    ci_high: float
    std_error: float
    snips: float
    snips_ci_low: float
    snips_ci_high: float
    snips_std_error: float
    n: int
    matched: int  # rows with a non-zero weight
    effective_sample_size: float
    max_weight: float
    confidence: float

    def __iter__(self) -> Iterator[float]:
        return iter((self.estimate, self.ci_low, self.ci_high))

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _check(rewards: Any, logged: Any, *targets: Any) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    mu = np.asarray(logged, dtype=np.float64).reshape(-1)
    ts = [np.asarray(t, dtype=np.float64).reshape(-1) for t in targets]
    if any(a.shape != r.shape for a in (mu, *ts)):
        raise ValueError(f"rewards, logged and target propensities must have the same length "
                         f"({r.size}, {mu.size}, {', '.join(str(t.size) for t in ts)})")
    if r.size == 0:
        raise ValueError("no rows")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    if not np.all((mu > 0) & (mu <= 1)):
        bad = int(np.flatnonzero(~((mu > 0) & (mu <= 1)))[0])
        raise ValueError(f"logged propensities must be in (0, 1]; row {bad} has {mu[bad]!r}")
    for t in ts:
        if not np.all((t >= 0) & (t <= 1)):
            raise ValueError("target propensities must be in [0, 1]")
    return r, mu, ts


def _weights(mu: np.ndarray, pi: np.ndarray, max_weight: float | None) -> np.ndarray:
    w = pi / mu
    return np.minimum(w, max_weight) if max_weight is not None else w


def _normal_ci(estimate: float, se: float, confidence: float) -> tuple[float, float]:
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    return estimate - z * se, estimate + z * se


def _estimate(terms: np.ndarray, snips: float, psi: np.ndarray, w_all: np.ndarray, matched: int,
              confidence: float) -> IPSEstimate:
    n = terms.size
    est = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    snips_se = float(psi.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    lo, hi = _normal_ci(est, se, confidence)
    slo, shi = _normal_ci(snips, snips_se, confidence)
    sw, sw2 = float(np.abs(w_all).sum()), float((w_all ** 2).sum())
    return IPSEstimate(est, lo, hi, se, float(snips), slo, shi, snips_se, n, matched,
                       sw * sw / sw2 if sw2 > 0 else 0.0, float(np.abs(w_all).max()), confidence)


def ips_value(logged_rewards: Any, logged_propensities: Any, target_propensities: Any,
              confidence: float = 0.95, max_weight: float | None = None) -> IPSEstimate:
    """Value of the target policy from logged rows (see the module docstring).

    Raises ValueError on mismatched lengths, an empty log, non-finite rewards, logged
    propensities outside (0, 1] or target propensities outside [0, 1].
    """
    r, mu, (pi,) = _check(logged_rewards, logged_propensities, target_propensities)
    w = _weights(mu, pi, max_weight)
    mean_w = float(w.mean())
    snips = float((w * r).sum() / w.sum()) if w.sum() > 0 else float("nan")
    psi = w * (r - (snips if math.isfinite(snips) else 0.0)) / (mean_w if mean_w > 0 else 1.0)
    return _estimate(w * r, snips, psi, w, int((w > 0).sum()), confidence)


def ips_difference(logged_rewards: Any, logged_propensities: Any, target_propensities_a: Any,
                   target_propensities_b: Any, confidence: float = 0.95,
                   max_weight: float | None = None) -> IPSEstimate:
    """``V(a) - V(b)`` of two target policies on the same log, with paired (per-row) errors.

    Use it for incremental value against a baseline policy (``b`` = "never show an offer":
    ``pi_b = 1`` on rows whose logged action is "no offer", else 0). ``rewards`` may depend on
    the row only, as in :func:`ips_value`. SNIPS of the difference is ``SNIPS(a) - SNIPS(b)``
    with the delta-method error of the two ratio estimators together.
    """
    r, mu, (pa, pb) = _check(logged_rewards, logged_propensities, target_propensities_a, target_propensities_b)
    wa, wb = _weights(mu, pa, max_weight), _weights(mu, pb, max_weight)
    snips_a = float((wa * r).sum() / wa.sum()) if wa.sum() > 0 else 0.0
    snips_b = float((wb * r).sum() / wb.sum()) if wb.sum() > 0 else 0.0
    psi_a = wa * (r - snips_a) / (wa.mean() if wa.mean() > 0 else 1.0)
    psi_b = wb * (r - snips_b) / (wb.mean() if wb.mean() > 0 else 1.0)
    w_diff = wa - wb
    return _estimate(w_diff * r, snips_a - snips_b, psi_a - psi_b, w_diff, int((w_diff != 0).sum()), confidence)
