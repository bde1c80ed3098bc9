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

Doubly robust difference (:func:`dr_difference`, deterministic target policies ``a`` and ``b``):
with a reward model ``q`` (any prediction that does not look at the row's own outcome),

    term_i = q(x_i, a(x_i)) - q(x_i, b(x_i)) + (w_a,i - w_b,i) (r_i - q(x_i, a_i))

is unbiased for ``V(a) - V(b)`` whatever ``q`` is (the propensities are known), and has a lower
variance than IPS when ``q`` explains part of the reward. **Confidence interval.** When the
target's action is logged rarely (large weights) and rewards are heavy-tailed, the sample
standard deviation of the terms is itself very noisy and usually too small (it only sees the few
rows whose logged action matched); the normal interval then covers the truth far less often
than it claims. With ``model_variance`` (per row, the design variance of ``term_i`` predicted
from the reward model: ``Var(r | a(x_i)) / mu(a(x_i)) + Var(r | b(x_i)) / mu(b(x_i))`` over the
rows where the two actions differ), the standard error is the larger of the sample one and
``sqrt(sum model_variance) / n`` -- it uses every row, not only the matched ones.
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


@dataclass(frozen=True)
class DREstimate:
    """Doubly robust estimate of ``V(a) - V(b)`` (see the module docstring).

    ``std_error`` = max(``sample_std_error``, ``model_std_error``) (the sample one when no
    model variance is given); ``direct`` is the reward model's own estimate (the mean of
    ``q(x, a(x)) - q(x, b(x))``), ``correction`` the weighted residual part.
    """

    estimate: float
    ci_low: float
    ci_high: float
    std_error: float
    sample_std_error: float
    model_std_error: float | None
    direct: float
    correction: float
    n: int
    matched: int
    effective_sample_size: float
    max_weight: float
    confidence: float

    def __iter__(self) -> Iterator[float]:
        return iter((self.estimate, self.ci_low, self.ci_high))

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def dr_difference(logged_rewards: Any, logged_propensities: Any, target_propensities_a: Any,
                  target_propensities_b: Any, predicted_logged: Any, predicted_a: Any, predicted_b: Any,
                  model_variance: Any = None, confidence: float = 0.95) -> DREstimate:
    """Doubly robust ``V(a) - V(b)`` of two deterministic target policies on the same log.

    ``predicted_logged[i]`` = q(x_i, logged action), ``predicted_a[i]`` / ``predicted_b[i]`` =
    q(x_i, a(x_i)) / q(x_i, b(x_i)); ``target_propensities_*`` are 1/0 as in :func:`ips_value`;
    ``model_variance`` optional (see the module docstring). Raises ValueError as
    :func:`ips_value`, and on non-finite predictions or a negative model variance.
    """
    r, mu, (pa, pb) = _check(logged_rewards, logged_propensities, target_propensities_a, target_propensities_b)
    q_log, q_a, q_b = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (predicted_logged, predicted_a, predicted_b))
    if any(q.shape != r.shape for q in (q_log, q_a, q_b)):
        raise ValueError("predictions must have one value per row")
    if not all(np.all(np.isfinite(q)) for q in (q_log, q_a, q_b)):
        raise ValueError("predictions must be finite")
    w = pa / mu - pb / mu
    direct_terms = q_a - q_b
    correction_terms = w * (r - q_log)
    terms = direct_terms + correction_terms
    n = terms.size
    est = float(terms.mean())
    sample_se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    model_se: float | None = None
    se = sample_se
    if model_variance is not None:
        v = np.asarray(model_variance, dtype=np.float64).reshape(-1)
        if v.shape != r.shape or not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError("model_variance must be one finite value >= 0 per row")
        model_se = float(math.sqrt(v.sum()) / n)
        se = max(sample_se, model_se) if math.isfinite(sample_se) else model_se
    lo, hi = _normal_ci(est, se, confidence)
    sw, sw2 = float(np.abs(w).sum()), float((w ** 2).sum())
    return DREstimate(est, lo, hi, se, sample_se, model_se, float(direct_terms.mean()),
                      float(correction_terms.mean()), n, int((w != 0).sum()),
                      sw * sw / sw2 if sw2 > 0 else 0.0, float(np.abs(w).max()), confidence)
