"""BG/NBD and Gamma-Gamma formulas (float64, vectorised) and the CLV definition.

This module is the Python reference of the CLV math that the online service recomputes at
request time (``core/`` in C++).  ``tests/vectors/clv_vectors.json`` holds high-precision
(mpmath, 50 digits) values of every function here; ``tests/offline/test_clv.py`` checks that
this float64 code reproduces them.

Notation (time unit: weeks everywhere)
--------------------------------------
- ``x``    number of *repeat* purchase occasions in the calibration period (distinct purchase
           days after the first one),
- ``t_x``  time of the last purchase, measured from the first purchase (0 when ``x == 0``),
- ``T``    age of the customer: time from the first purchase to the end of observation,
- ``m_x``  mean spend of the ``x`` repeat purchase occasions (0 when ``x == 0``),
- ``r, alpha, a, b``  BG/NBD parameters (Fader, Hardie & Lee 2005, "Counting your customers
           the easy way"), ``alpha`` in weeks,
- ``p, q, v``  Gamma-Gamma spend parameters (Fader, Hardie & Lee 2005, "RFM and CLV").

Formulas (exactly what the functions compute)
---------------------------------------------
P(alive)::

    P_alive = 1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))

evaluated as ``expit(-log_odds)`` so the power never overflows.

Conditional expected number of repeat purchases in the next ``t`` weeks (FHL 2005, eq. 10)::

    E[Y(t) | x, t_x, T]
      = (a + b + x - 1) / (a - 1)
        * [1 - ((alpha + T) / (alpha + T + t)) ** (r + x)
               * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))]
        * P_alive

The power underflows and the 2F1 overflows for large ``x``.  A Pfaff transformation removes
both: ``((alpha+T)/(alpha+T+t))**(r+x) * 2F1(r+x, b+x; c; z) = 2F1(r+x, a-1; c; -t/(alpha+T))``
with ``c = a + b + x - 1``, so with ``tau = t / (alpha + T)``::

    E[Y(t) | x, t_x, T] = c * D * P_alive,
    D = (1 - 2F1(r + x, a - 1; c; -tau)) / (a - 1).

``D`` is evaluated three ways, all cancellation-aware (see ``_pfaff_d``):

1. ``tau <= 1/2``: the alternating series ``D = sum_{k>=1} (-1)^(k+1) (r+x)_k (a)_(k-1)
   tau^k / ((c)_k k!)`` (the factor ``a - 1`` cancels analytically, so ``a`` near 1 is exact);
   if its terms grow before they shrink (sum of |terms| > 1e3 x |sum|, e.g. large ``r + x``
   with large ``a``) the element goes to path 2 or 3 instead;
2. otherwise, with ``z = tau / (1 + tau)`` in (1/3, 1), through ``scipy.special.hyp2f1``:
   if ``a - 1 <= r + x`` the Euler form ``G = (1 - z)^(a-1) 2F1(a+b-1-r, a-1; c; z)`` (the
   parameters do not grow with x, and the 2F1 stays bounded as z -> 1), else the textbook form
   ``G = (1 - z)^(r+x) 2F1(r+x, b+x; c; z)`` (bounded at z = 1 since then ``a-1-r-x > 0``);
3. when ``|a - 1| < 1e-3`` (and ``tau > 1/2``), path 2 would cancel in ``1 - G``: ``D`` is
   analytic in ``a`` across ``a = 1``, so path 2 is evaluated at 12 Chebyshev nodes
   ``a_j = 1 + 0.02 cos(pi (j + 1/2) / 12)`` (with ``c`` shifted alike) and interpolated
   back to ``a`` (barycentric formula).

Gamma-Gamma conditional expected spend per purchase occasion::

    E[M | p, q, v, x, m_x] = (p * (v + x * m_x)) / (p * x + q - 1)

(for ``x == 0`` this is the population mean ``p v / (q - 1)``; requires ``q > 1``).

CLV (the exact definition the online service reproduces)::

    delta   = (1 + annual_discount_rate) ** (-1 / 52)          # weekly discount factor
    K       = ceil(t);  t_k = min(k, t) for k = 0..K            # t = horizon in weeks
    CLV     = margin * E[M] * sum_{k=1..K} (E[Y(t_k)] - E[Y(t_(k-1))]) * delta ** t_k

i.e. the expected purchases of week k (from the conditional expectation's increments) are
discounted to the end of that week, valued at the expected spend, times the margin rate.
``E[Y(t_0)] = E[Y(0)] = 0``.  It is evaluated by summation by parts (all terms >= 0)::

    CLV = margin * E[M] * (sum_{k=1..K-1} E[Y(t_k)] * (delta**t_k - delta**t_(k+1))
                           + E[Y(t_K)] * delta**t_K)

Domain: all parameters > 0 (``a = 1`` is allowed: the removable singularity is handled),
``q > 1`` for ``E[M]``, ``0 <= t_x <= T``, ``t >= 0``; ``c = a + b + x - 1`` must not be 0 or
a negative integer (only possible for ``x = 0`` and ``a + b <= 1``).  Results below the
float64 range (e.g. P(alive) < 1e-308 for a heavy buyer silent for years) underflow to 0.

Accuracy (checked against mpmath on the vectors and on random sweeps over r, alpha in
[1e-3, 1e4], a in [1e-3, 1e3] incl. |a - 1| down to 1e-9, b up to 1e5, x up to 3e4, T up to 1e4,
t up to 1e3 weeks): relative error below 1e-9, typically 1e-13.  Known weak spot: ``x = 0``
with a tiny ``r`` (``1 - G`` is O(r), so path 2 cancels): about 1e-8 at r = 1e-4 with
|a - 1| < 1e-3, and 1e-6 at r = 1e-6 -- far outside fitted values (CDNOW: r = 0.24).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import betaln, expit, gammaln, hyp2f1

WEEKS_PER_YEAR = 52.0
"""Weeks per year used to turn the annual discount rate into a weekly factor."""

_SERIES_TAU_MAX = 0.5
_SERIES_MAX_TERMS = 400
_NEAR_ONE_A = 1e-3
_NEAR_ONE_HALF_WIDTH = 0.02
_NEAR_ONE_NODES = 12

FloatArray = NDArray[np.float64]


def _f(value: ArrayLike) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


# --------------------------------------------------------------------------- BG/NBD
def bgnbd_log_likelihood(
    r: ArrayLike, alpha: ArrayLike, a: ArrayLike, b: ArrayLike,
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood ``log L(r, alpha, a, b | x, t_x, T)`` (FHL 2005 eq. 6).

    ``L = B(a, b+x)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))``,
    evaluated in log space with ``gammaln``/``betaln`` and ``logaddexp``.
    """
    r, alpha, a, b, x, t_x, T = map(_f, (r, alpha, a, b, x, t_x, T))
    has_repeat = x > 0
    x_safe = np.where(has_repeat, x, 1.0)
    beta_ab = betaln(a, b)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    term_alive = betaln(a, b + x) - beta_ab - (r + x) * np.log(alpha + T)
    term_dead = np.where(
        has_repeat,
        betaln(a + 1.0, b + x_safe - 1.0) - beta_ab - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return common + np.logaddexp(term_alive, term_dead)


def bgnbd_log_odds_dead(
    r: ArrayLike, alpha: ArrayLike, a: ArrayLike, b: ArrayLike,
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
) -> FloatArray:
    """``log(P(dead)/P(alive))``; ``-inf`` when ``x == 0`` (a customer without repeat purchase
    cannot have dropped out under BG/NBD)."""
    r, alpha, a, b, x, t_x, T = map(_f, (r, alpha, a, b, x, t_x, T))
    has_repeat = x > 0
    x_safe = np.where(has_repeat, x, 1.0)
    log_odds = (np.log(a) - np.log(b + x_safe - 1.0)
                + (r + x_safe) * (np.log(alpha + T) - np.log(alpha + t_x)))
    return np.where(has_repeat, log_odds, -np.inf)


def bgnbd_p_alive(
    r: ArrayLike, alpha: ArrayLike, a: ArrayLike, b: ArrayLike,
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
) -> FloatArray:
    """P(alive | x, t_x, T) (FHL 2008 note).

    ``1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``, computed from the log-odds.
    """
    return expit(-bgnbd_log_odds_dead(r, alpha, a, b, x, t_x, T))


def _series_in_tau(s: FloatArray, a: FloatArray, c: FloatArray,
                   tau: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Path 1 of ``D``: alternating series in ``tau``; returns (sum, sum of |terms|)."""
    term = s * tau / c
    total = term.copy()
    magnitude = np.abs(term)
    active = np.ones(term.shape, dtype=bool)
    for k in range(1, _SERIES_MAX_TERMS):
        term = term * ((s + k) * (a + k - 1.0) / ((c + k) * (k + 1.0))) * (-tau)
        total = total + np.where(active, term, 0.0)
        magnitude = magnitude + np.where(active, np.abs(term), 0.0)
        active &= np.abs(term) > 1e-17 * np.abs(total)
        if not active.any():
            break
    # Elements still active did not converge: mark them for another path.
    magnitude = np.where(active, np.inf, magnitude)
    return total, magnitude


def _d_hyp2f1(s: FloatArray, a: FloatArray, c: FloatArray, tau: FloatArray) -> FloatArray:
    """Path 2 of ``D`` through ``scipy.special.hyp2f1`` (``a`` away from 1).

    ``G = 2F1(s, a-1; c; -tau)`` is written with ``z = tau / (1 + tau)`` in whichever of the two
    Pfaff-equivalent forms has a 2F1 that stays bounded as ``z -> 1``:
    ``(1-z)^(a-1) 2F1(c-s, a-1; c; z)`` when ``a - 1 <= s`` (its ``c-a-b = s-a+1 >= 0``), else
    ``(1-z)^s 2F1(s, c-a+1; c; z)`` (the textbook form, ``c-a-b = a-1-s > 0``).
    """
    s, a, c, tau = np.broadcast_arrays(s, a, c, tau)
    am1 = a - 1.0
    z = tau / (1.0 + tau)
    log_one_minus_z = -np.log1p(tau)
    g = np.empty_like(z)
    euler = am1 <= s
    if euler.any():
        g[euler] = np.exp(am1[euler] * log_one_minus_z[euler]) * hyp2f1(
            c[euler] - s[euler], am1[euler], c[euler], z[euler])
    textbook = ~euler
    if textbook.any():
        g[textbook] = np.exp(s[textbook] * log_one_minus_z[textbook]) * hyp2f1(
            s[textbook], c[textbook] - am1[textbook], c[textbook], z[textbook])
    return (1.0 - g) / am1


def _d_near_one(s: FloatArray, a: FloatArray, c: FloatArray, tau: FloatArray) -> FloatArray:
    """Path 3 of ``D`` for ``|a - 1| < 1e-3``: Chebyshev interpolation in ``a``.

    ``D`` is analytic in ``a`` across the removable singularity at ``a = 1``; path 2 evaluated
    at ``a = 1 +- 0.02 cos(.)`` (12 Chebyshev nodes, nearest node 2.6e-3 from 1) cancels little,
    and barycentric interpolation brings the value back to ``a`` (``c`` moves with ``a``).
    """
    n = _NEAR_ONE_NODES
    theta = np.pi * (np.arange(n) + 0.5) / n
    offsets = _NEAR_ONE_HALF_WIDTH * np.cos(theta)
    weights = (-1.0) ** np.arange(n) * np.sin(theta)
    nodes_a = 1.0 + offsets                                   # (n,)
    shift = nodes_a[None, :] - a[:, None]                     # (m, n), never 0 (|a-1| < 1e-3)
    values = _d_hyp2f1(s[:, None], nodes_a[None, :], c[:, None] + shift, tau[:, None])
    ratio = weights[None, :] / shift
    return np.sum(ratio * values, axis=1) / np.sum(ratio, axis=1)


def _pfaff_d(s: FloatArray, a: FloatArray, c: FloatArray, tau: FloatArray) -> FloatArray:
    """``D = (1 - 2F1(s, a-1; c; -tau)) / (a-1)`` for ``tau >= 0`` (see module docstring)."""
    shape = np.broadcast_shapes(np.shape(s), np.shape(a), np.shape(c), np.shape(tau))
    s, a, c, tau = (np.broadcast_to(v, shape).ravel() for v in (s, a, c, tau))
    out = np.zeros(s.shape, dtype=np.float64)
    positive = tau > 0
    use_series = positive & (tau <= _SERIES_TAU_MAX)
    if use_series.any():
        total, magnitude = _series_in_tau(s[use_series], a[use_series], c[use_series],
                                          tau[use_series])
        good = magnitude <= 1e3 * np.abs(total)
        idx = np.flatnonzero(use_series)
        out[idx[good]] = total[good]
        use_series[idx[~good]] = False
    rest = positive & ~use_series
    if rest.any():
        s_r, a_r, c_r, tau_r = s[rest], a[rest], c[rest], tau[rest]
        near_one = np.abs(a_r - 1.0) < _NEAR_ONE_A
        d = np.empty_like(tau_r)
        far = ~near_one
        if far.any():
            d[far] = _d_hyp2f1(s_r[far], a_r[far], c_r[far], tau_r[far])
        if near_one.any():
            d[near_one] = _d_near_one(s_r[near_one], a_r[near_one], c_r[near_one],
                                      tau_r[near_one])
        out[rest] = d
    return out.reshape(shape)


def bgnbd_expected_purchases(
    t: ArrayLike, r: ArrayLike, alpha: ArrayLike, a: ArrayLike, b: ArrayLike,
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
) -> FloatArray:
    """Conditional expected number of purchases in ``(T, T + t]``: ``E[Y(t) | x, t_x, T]``.

    With ``x = t_x = T = 0`` this is the unconditional ``E[X(t)]`` of a new customer.
    Broadcasts over all arguments; ``t`` in weeks.
    """
    t, r, alpha, a, b, x, t_x, T = map(_f, (t, r, alpha, a, b, x, t_x, T))
    s = r + x
    c = a + b + x - 1.0
    d = _pfaff_d(s, a, c, t / (alpha + T))
    return c * d * bgnbd_p_alive(r, alpha, a, b, x, t_x, T)


# ----------------------------------------------------------------------- Gamma-Gamma
def gamma_gamma_log_likelihood(p: ArrayLike, q: ArrayLike, v: ArrayLike,
                               x: ArrayLike, m_x: ArrayLike) -> FloatArray:
    """Per-customer Gamma-Gamma log-density of the mean spend ``m_x`` over ``x > 0`` occasions.

    ``f(m_x) = G(px+q)/(G(px) G(q)) v^q m_x^(px-1) x^(px) / (v + x m_x)^(px+q)`` (FHL 2005b).
    Requires ``x > 0`` and ``m_x > 0``.
    """
    p, q, v, x, m_x = map(_f, (p, q, v, x, m_x))
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
            + (px - 1.0) * np.log(m_x) + px * np.log(x) - (px + q) * np.log(v + x * m_x))


def gamma_gamma_expected_spend(p: ArrayLike, q: ArrayLike, v: ArrayLike,
                               x: ArrayLike, m_x: ArrayLike) -> FloatArray:
    """``E[M | p, q, v, x, m_x] = p (v + x m_x) / (p x + q - 1)``; population mean for ``x = 0``."""
    p, q, v, x, m_x = map(_f, (p, q, v, x, m_x))
    return p * (v + x * m_x) / (p * x + q - 1.0)


# ------------------------------------------------------------------------------ CLV
def weekly_discount_factor(annual_discount_rate: ArrayLike) -> FloatArray:
    """``delta = (1 + annual_discount_rate) ** (-1/52)``: value today of 1 paid in one week."""
    return np.exp(-np.log1p(_f(annual_discount_rate)) / WEEKS_PER_YEAR)


def discounted_expected_purchases(
    horizon_weeks: float, r: ArrayLike, alpha: ArrayLike, a: ArrayLike, b: ArrayLike,
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, annual_discount_rate: ArrayLike,
) -> FloatArray:
    """``sum_{k=1..K} (E[Y(t_k)] - E[Y(t_(k-1))]) delta^t_k`` with ``t_k = min(k, horizon)``.

    ``horizon_weeks`` is a scalar (> 0); the other arguments broadcast together.
    """
    horizon = float(horizon_weeks)
    if not horizon > 0:
        raise ValueError(f"horizon_weeks must be > 0, got {horizon_weeks!r}")
    n_steps = int(np.ceil(horizon))
    t_k = np.minimum(np.arange(1, n_steps + 1, dtype=np.float64), horizon)
    r, alpha, a, b, x, t_x, T, rate = np.broadcast_arrays(
        *map(_f, (r, alpha, a, b, x, t_x, T, annual_discount_rate)))
    log_delta = np.log(weekly_discount_factor(rate))[..., None]
    expected = bgnbd_expected_purchases(t_k, r[..., None], alpha[..., None], a[..., None],
                                        b[..., None], x[..., None], t_x[..., None], T[..., None])
    disc = np.exp(log_delta * t_k)
    weights = disc.copy()
    weights[..., :-1] -= disc[..., 1:]
    return np.sum(expected * weights, axis=-1)


def clv(
    horizon_weeks: float, r: ArrayLike, alpha: ArrayLike, a: ArrayLike, b: ArrayLike,
    p: ArrayLike, q: ArrayLike, v: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
    m_x: ArrayLike, margin: ArrayLike, annual_discount_rate: ArrayLike,
) -> FloatArray:
    """Customer lifetime value over ``horizon_weeks`` (see the module docstring for the formula).

    ``margin * E[M] * discounted_expected_purchases``; currency units of ``m_x``.
    """
    spend = gamma_gamma_expected_spend(p, q, v, x, m_x)
    purchases = discounted_expected_purchases(horizon_weeks, r, alpha, a, b, x, t_x, T,
                                              annual_discount_rate)
    return _f(margin) * spend * purchases
