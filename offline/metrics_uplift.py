"""Uplift evaluation metrics: ATE with confidence intervals, Qini and uplift curves, AUUC,
uplift@k and the four uplift segments.

Conventions (used by every function here and quoted in the ``uplift`` job's JSON output):

* ``y`` is the outcome (binary or continuous), ``t`` the treatment indicator (1 treated,
  0 control), ``score`` the predicted uplift; higher score = target first.
* Curves are evaluated after sorting by ``score`` descending. Users with *tied* scores are
  taken as one block (the curve is only evaluated at block ends and is linear in between),
  so a constant score gives exactly the random line and the result does not depend on the
  row order.
* ``k`` is the number of targeted users, ``x = k / N`` the targeted fraction. With
  ``R_t(k), R_c(k)`` the summed outcomes and ``N_t(k), N_c(k)`` the counts of treated and
  control users among the top ``k``:

  - Qini curve    ``Q(k) = R_t(k) - R_c(k) * N_t(k) / N_c(k)``   (``R_t(k)`` while ``N_c(k) = 0``)
  - uplift curve  ``U(k) = (R_t(k) / N_t(k) - R_c(k) / N_c(k)) * k``  (0 while a group is empty)

  Both are divided by ``N`` so they are "incremental outcome per user in the population":
  ``U(N)/N`` is the ATE, ``Q(N)/N`` is ``ATE * N_t / N``.
* Areas are trapezoids over ``x`` in [0, 1]:

  - ``auuc``             area under the uplift curve ``U/N``
  - ``auuc_random``      area under the straight line from 0 to ``U(N)/N`` (= ATE / 2)
  - ``qini_auc``         area under the Qini curve ``Q/N``
  - ``qini_coefficient`` ``qini_auc`` minus the area under the random Qini line
  - ``qini_normalized``  ``qini_coefficient`` divided by that of the perfect ranking of the
    observed outcomes (treated responders first, control responders last); 1 = perfect,
    0 = random. Only defined for binary outcomes with a positive perfect coefficient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


# ---------------------------------------------------------------------------------------------
# Average treatment effect


@dataclass(frozen=True)
class Effect:
    """Difference in means between a treated arm and control, with a 95% normal CI."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    mean_treated: float
    mean_control: float
    n_treated: int
    n_control: int
    p_value: float

    def to_json(self) -> dict[str, float | int]:
        relative = (
            self.estimate / self.mean_control if self.mean_control != 0 else float("nan")
        )
        return {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "std_error": self.std_error,
            "p_value": self.p_value,
            "mean_treated": self.mean_treated,
            "mean_control": self.mean_control,
            "relative_lift": relative,
            "n_treated": self.n_treated,
            "n_control": self.n_control,
        }


def difference_in_means(y_treated: np.ndarray, y_control: np.ndarray) -> Effect:
    """ATE as the difference of sample means with the Welch (unpooled) standard error
    ``sqrt(s_t^2/n_t + s_c^2/n_c)`` (sample variances, ddof=1) and a normal 95% interval."""
    y1 = np.asarray(y_treated, dtype=np.float64)
    y0 = np.asarray(y_control, dtype=np.float64)
    if y1.size < 2 or y0.size < 2:
        raise ValueError("difference_in_means needs at least 2 rows in each arm")
    m1, m0 = float(y1.mean()), float(y0.mean())
    se = math.sqrt(float(y1.var(ddof=1)) / y1.size + float(y0.var(ddof=1)) / y0.size)
    est = m1 - m0
    if se > 0:
        p_value = math.erfc(abs(est / se) / math.sqrt(2.0))
    else:
        p_value = 0.0 if est != 0 else 1.0
    return Effect(
        estimate=est,
        std_error=se,
        ci_low=est - Z_95 * se,
        ci_high=est + Z_95 * se,
        mean_treated=m1,
        mean_control=m0,
        n_treated=int(y1.size),
        n_control=int(y0.size),
        p_value=p_value,
    )


# ---------------------------------------------------------------------------------------------
# Curves


@dataclass(frozen=True)
class UpliftCurves:
    """Curves evaluated at tie-block ends; ``x`` starts at 0 and ends at 1."""

    x: np.ndarray  # targeted fraction k / N
    qini: np.ndarray  # Q(k) / N
    uplift: np.ndarray  # U(k) / N
    n: int
    n_treated: int
    n_control: int


def _check_inputs(
    y: np.ndarray, t: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    t = np.asarray(t).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if not (y.size == t.size == score.size):
        raise ValueError(f"length mismatch: y {y.size}, t {t.size}, score {score.size}")
    if y.size == 0:
        raise ValueError("empty input")
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("treatment must be 0/1")
    t = t.astype(np.int64)
    if t.sum() == 0 or t.sum() == t.size:
        raise ValueError("need both treated and control rows")
    if not np.all(np.isfinite(score)):
        raise ValueError("score has NaN/Inf")
    return y, t, score


def uplift_curves(y: np.ndarray, t: np.ndarray, score: np.ndarray) -> UpliftCurves:
    """Qini and uplift curves of ``score`` (see the module docstring for the definitions)."""
    y, t, score = _check_inputs(y, t, score)
    n = y.size
    order = np.argsort(-score, kind="stable")
    s, ys, ts = score[order], y[order], t[order]
    n_t = np.cumsum(ts)
    n_c = np.cumsum(1 - ts)
    r_t = np.cumsum(ys * ts)
    r_c = np.cumsum(ys * (1 - ts))
    # block ends: last index of each run of equal scores
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    n_t, n_c, r_t, r_c = n_t[ends], n_c[ends], r_t[ends], r_c[ends]
    k = (ends + 1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        qini = r_t - r_c * n_t / np.maximum(n_c, 1)  # r_c = 0 while n_c = 0
        both = (n_t > 0) & (n_c > 0)
        upl = np.where(both, (r_t / np.maximum(n_t, 1) - r_c / np.maximum(n_c, 1)) * k, 0.0)
    x = np.r_[0.0, k / n]
    return UpliftCurves(
        x=x,
        qini=np.r_[0.0, qini / n],
        uplift=np.r_[0.0, upl / n],
        n=n,
        n_treated=int(t.sum()),
        n_control=int(n - t.sum()),
    )


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) * 0.5))


def perfect_score(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The oracle ranking of observed outcomes: treated responders first, control responders
    last (``y * (2t - 1)``)."""
    return np.asarray(y, dtype=np.float64) * (2.0 * np.asarray(t, dtype=np.float64) - 1.0)


def uplift_metrics(y: np.ndarray, t: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUUC / Qini numbers of ``score`` (module docstring)."""
    y, t, score = _check_inputs(y, t, score)
    c = uplift_curves(y, t, score)
    qini_auc = _area(c.x, c.qini)
    qini_random = 0.5 * c.qini[-1]
    auuc = _area(c.x, c.uplift)
    out = {
        "auuc": auuc,
        "auuc_random": 0.5 * c.uplift[-1],
        "qini_auc": qini_auc,
        "qini_coefficient": qini_auc - qini_random,
        "qini_normalized": float("nan"),
        "ate": float(c.uplift[-1]),
    }
    if np.all((y == 0) | (y == 1)):
        p = uplift_curves(y, t, perfect_score(y, t))
        perfect_coef = _area(p.x, p.qini) - 0.5 * p.qini[-1]
        if perfect_coef > 0:
            out["qini_normalized"] = out["qini_coefficient"] / perfect_coef
    return out


def uplift_at_k(y: np.ndarray, t: np.ndarray, score: np.ndarray, fraction: float) -> float:
    """Observed uplift among the top ``ceil(fraction * N)`` users by score (ties broken by row
    order): mean outcome of treated minus mean of control in that group; NaN when one group
    is empty."""
    y, t, score = _check_inputs(y, t, score)
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    k = int(math.ceil(fraction * y.size))
    top = np.argsort(-score, kind="stable")[:k]
    yt, tt = y[top], t[top]
    if tt.sum() == 0 or tt.sum() == tt.size:
        return float("nan")
    return float(yt[tt == 1].mean() - yt[tt == 0].mean())


# ---------------------------------------------------------------------------------------------
# Segments

SEGMENTS = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")


@dataclass(frozen=True)
class SegmentThresholds:
    """How a user x offer with predicted ``p0, p1`` (uplift ``u = p1 - p0``) is segmented:

    * ``persuadable``:  ``u >= uplift``
    * ``sleeping_dog``: ``u <= -uplift``
    * ``sure_thing``:   ``|u| < uplift`` and ``p0 >= response``
    * ``lost_cause``:   ``|u| < uplift`` and ``p0 <  response``

    (the synthetic world's ``classify_segments`` uses the same rule with 0.02 and 0.20).
    """

    uplift: float
    response: float

    @staticmethod
    def from_base_rate(base_rate: float, uplift_fraction: float = 0.1) -> "SegmentThresholds":
        """Default thresholds: ``response`` = the control group's base rate, ``uplift`` =
        ``uplift_fraction`` x base rate (so the rule scales with rare outcomes)."""
        return SegmentThresholds(uplift=uplift_fraction * base_rate, response=base_rate)

    def to_json(self) -> dict[str, float]:
        return {"uplift": self.uplift, "response": self.response}


def segment_labels(p0: np.ndarray, p1: np.ndarray, th: SegmentThresholds) -> np.ndarray:
    """Segment name per row (object array of the ``SEGMENTS`` strings)."""
    p0 = np.asarray(p0, dtype=np.float64)
    u = np.asarray(p1, dtype=np.float64) - p0
    return np.where(
        u <= -th.uplift,
        "sleeping_dog",
        np.where(u >= th.uplift, "persuadable", np.where(p0 >= th.response, "sure_thing", "lost_cause")),
    ).astype(object)


def segment_counts(p0: np.ndarray, p1: np.ndarray, th: SegmentThresholds) -> dict[str, int]:
    labels = segment_labels(p0, p1, th)
    return {s: int(np.sum(labels == s)) for s in SEGMENTS}


# ---------------------------------------------------------------------------------------------
# Plot


def plot_qini(
    path: str,
    y: np.ndarray,
    t: np.ndarray,
    scores: dict[str, np.ndarray],
    title: str,
) -> None:
    """Write a PNG with the Qini curve of every named score, the random line and the perfect
    ranking of the observed outcomes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    y_arr = np.asarray(y, dtype=np.float64)
    t_arr = np.asarray(t)
    if np.all((y_arr == 0) | (y_arr == 1)):
        p = uplift_curves(y_arr, t_arr, perfect_score(y_arr, t_arr))
        ax.plot(p.x, p.qini, color="0.6", linestyle=":", label="perfect (observed)")
    last = 0.0
    for name, score in scores.items():
        c = uplift_curves(y_arr, t_arr, score)
        m = uplift_metrics(y_arr, t_arr, score)
        ax.plot(c.x, c.qini, label=f"{name} (Qini coef {m['qini_coefficient']:.2e})")
        last = c.qini[-1]
    ax.plot([0, 1], [0, last], color="k", linestyle="--", label="random")
    ax.set_xlabel("fraction targeted (by predicted uplift)")
    ax.set_ylabel("incremental outcome per user (Qini / N)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
