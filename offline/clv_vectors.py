"""Generate ``tests/vectors/clv_vectors.json``: high-precision reference values of the CLV math.

Usage::

    /usr/bin/python3 -m offline.clv_vectors --out tests/vectors/clv_vectors.json

The file is deterministic (fixed seed, no timestamps).  Every output is computed with mpmath
at 50 significant digits from the *textbook* formulas (the 2F1 form of FHL 2005 eq. 10), not
from the transformed forms used in float64 by ``offline/clv_math.py``; where mpmath's
textbook 2F1 does not converge, the Pfaff/Euler-transformed form is used and the case says so.
Where both forms are computable the generator checks they agree to 1e-30.

Inputs are float64 values written as JSON numbers (shortest round-trip repr, so they parse to
exactly the same doubles everywhere); outputs are decimal strings with 25 significant digits
(parse with ``strtod``/``float``).  Each output also carries a relative condition number
``kappa = sum_i |d log f / d log input_i|`` (estimated with mpmath finite differences): a
float64 implementation cannot be expected to match better than about ``kappa * 1e-16``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mpmath as mp
import numpy as np

from offline import clv_math

PRECISION_DIGITS = 50
OUTPUT_DIGITS = 25
SEED = 20261123
WELL_CONDITIONED_KAPPA = 1e4

INPUT_NAMES = ("r", "alpha", "a", "b", "p", "q", "v", "x", "t_x", "T", "t", "m_x", "margin",
               "annual_discount_rate")

FORMULAS = {
    "time_unit": "week",
    "p_alive": ("P_alive = 1 / (1 + [x > 0] * a / (b + x - 1)"
                " * ((alpha + T) / (alpha + t_x))^(r + x))"),
    "expected_purchases": (
        "E[Y(t) | x, t_x, T] = (a + b + x - 1) / (a - 1)"
        " * [1 - ((alpha + T) / (alpha + T + t))^(r + x)"
        " * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] * P_alive"
        "  (FHL 2005 eq. 10). Equivalent overflow-free form (Pfaff): "
        "(a + b + x - 1) * (1 - 2F1(r + x, a - 1; a + b + x - 1; -t / (alpha + T)))"
        " / (a - 1) * P_alive"),
    "expected_spend": "E[M | p, q, v, x, m_x] = p * (v + x * m_x) / (p * x + q - 1)",
    "clv": (
        "delta = (1 + annual_discount_rate)^(-1/52); K = ceil(t); t_k = min(k, t) for k = 0..K; "
        "CLV = margin * E[M] * sum_{k=1..K} (E[Y(t_k)] - E[Y(t_(k-1))]) * delta^(t_k),"
        " E[Y(0)] = 0. "
        "Numerically stable equivalent (summation by parts, all terms >= 0): "
        "margin * E[M] * (sum_{k=1..K-1} E[Y(t_k)] * (delta^(t_k) - delta^(t_(k+1)))"
        " + E[Y(t_K)] * delta^(t_K))"),
    "kappa": ("relative condition number sum_i |d log f / d log input_i| over the real-valued "
              "inputs (x included as a real); a float64 evaluation can be expected to match to "
              "~kappa*1e-16"),
}


@dataclass(frozen=True)
class Case:
    """One set of inputs (all float64)."""

    label: str
    r: float
    alpha: float
    a: float
    b: float
    p: float
    q: float
    v: float
    x: float
    t_x: float
    T: float
    t: float
    m_x: float
    margin: float
    annual_discount_rate: float


# ------------------------------------------------------------------ mpmath formulas
def _mpf(value: float) -> mp.mpf:
    return mp.mpf(value)


def mp_p_alive(r, alpha, a, b, x, t_x, T) -> mp.mpf:
    """P(alive) at working precision."""
    if x == 0:
        return mp.mpf(1)
    return 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def _bracket_textbook(t, r, alpha, a, b, x, T) -> mp.mpf:
    """``1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))``."""
    z = t / (alpha + T + t)
    hyp = mp.hyp2f1(r + x, b + x, a + b + x - 1, z, maxterms=10**6)
    return 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp


def _bracket_euler(t, r, alpha, a, b, x, T) -> mp.mpf:
    """Same bracket via ``(1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)`` (Pfaff + Euler)."""
    z = t / (alpha + T + t)
    one_minus_z = (alpha + T) / (alpha + T + t)
    return 1 - one_minus_z ** (a - 1) * mp.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z,
                                                   maxterms=10**6)


def mp_expected_purchases(t, r, alpha, a, b, x, t_x, T, method: list[str] | None = None) -> mp.mpf:
    """E[Y(t)|x, t_x, T] at working precision (textbook form, Euler form as fallback)."""
    if t == 0:
        return mp.mpf(0)
    try:
        bracket = _bracket_textbook(t, r, alpha, a, b, x, T)
        used = "textbook"
    except (mp.libmp.NoConvergence, ZeroDivisionError, ValueError):
        bracket = _bracket_euler(t, r, alpha, a, b, x, T)
        used = "euler"
    if method is not None:
        method.append(used)
    return (a + b + x - 1) / (a - 1) * bracket * mp_p_alive(r, alpha, a, b, x, t_x, T)


def mp_expected_spend(p, q, v, x, m_x) -> mp.mpf:
    """Gamma-Gamma E[M] at working precision."""
    return p * (v + x * m_x) / (p * x + q - 1)


def mp_clv(t, r, alpha, a, b, p, q, v, x, t_x, T, m_x, margin, rate) -> mp.mpf:
    """CLV by the definition (increments of E[Y(t_k)] discounted to t_k)."""
    delta = (1 + rate) ** (mp.mpf(-1) / clv_math.WEEKS_PER_YEAR)
    n_steps = int(math.ceil(float(t)))
    previous = mp.mpf(0)
    total = mp.mpf(0)
    for k in range(1, n_steps + 1):
        t_k = min(mp.mpf(k), t)
        current = mp_expected_purchases(t_k, r, alpha, a, b, x, t_x, T)
        total += (current - previous) * delta ** t_k
        previous = current
    return margin * mp_expected_spend(p, q, v, x, m_x) * total


def _kappa(func: Callable[..., mp.mpf], args: dict[str, mp.mpf], value: mp.mpf) -> mp.mpf:
    """``sum_i |d log f / d log arg_i|`` by forward differences with relative step 1e-20."""
    if value == 0:
        return mp.mpf(0)
    eps = mp.mpf("1e-20")
    kappa = mp.mpf(0)
    for name, arg in args.items():
        if arg == 0:
            continue
        bumped = dict(args)
        bumped[name] = arg * (1 + eps)
        kappa += abs((func(**bumped) - value) / (value * eps))
    return kappa


# ------------------------------------------------------------------------ the cases
def _cases() -> list[Case]:
    """Deterministic list of inputs: realistic, random and extreme."""
    cases: list[Case] = []
    cdnow = dict(r=0.243, alpha=4.414, a=0.793, b=2.426, p=6.25, q=3.74, v=15.44)

    def add(label: str, **kw: float) -> None:
        values = {**cdnow, "x": 0.0, "t_x": 0.0, "T": 38.86, "t": 52.0, "m_x": 0.0,
                  "margin": 0.3, "annual_discount_rate": 0.1, **kw}
        cases.append(Case(label=label, **{k: float(values[k]) for k in INPUT_NAMES}))

    # 1. CDNOW-like customers.
    for x, t_x, T, m_x in [(0, 0, 38.86, 0), (1, 1.71, 38.86, 11.77), (2, 30.43, 38.86, 22.35),
                           (5, 20.0, 32.0, 35.0), (10, 30.0, 31.0, 50.0), (29, 38.43, 38.86, 40.0),
                           (3, 5.0, 27.0, 18.5), (1, 26.0, 27.0, 9.99)]:
        for t in (1.0, 13.0, 39.0, 52.0, 104.0):
            add("cdnow_like", x=x, t_x=t_x, T=T, m_x=m_x, t=t)
    add("new_customer_unconditional", x=0, t_x=0, T=0, t=52)
    add("new_customer_unconditional", x=0, t_x=0, T=0, t=1)
    add("half_week_horizon", x=2, t_x=10, T=20, m_x=30, t=0.5)
    add("fractional_horizon", x=4, t_x=15, T=20, m_x=25, t=26.5)
    add("t_x_equals_T", x=7, t_x=40, T=40, m_x=20, t=52)
    add("zero_discount", x=3, t_x=12, T=30, m_x=20, annual_discount_rate=0.0)
    add("high_discount", x=3, t_x=12, T=30, m_x=20, annual_discount_rate=1.0)
    add("margin_one", x=3, t_x=12, T=30, m_x=20, margin=1.0)
    add("zero_repeat_spend", x=2, t_x=12, T=30, m_x=0.0)

    # 2. Random, log-uniform over wide ranges.
    rng = np.random.default_rng(SEED)
    for _ in range(150):
        x = float(rng.choice([0, 1, 2, 3, 5, 8, 13, 30, 100, 400]))
        T = float(np.round(np.exp(rng.uniform(np.log(0.5), np.log(600))), 4))
        t_x = 0.0 if x == 0 else float(np.round(T * rng.uniform(0.05, 1.0), 4))
        add("random",
            r=float(np.exp(rng.uniform(np.log(0.02), np.log(20)))),
            alpha=float(np.exp(rng.uniform(np.log(0.05), np.log(200)))),
            a=float(np.exp(rng.uniform(np.log(0.05), np.log(20)))),
            b=float(np.exp(rng.uniform(np.log(0.05), np.log(200)))),
            p=float(np.exp(rng.uniform(np.log(0.3), np.log(50)))),
            q=float(1.0 + np.exp(rng.uniform(np.log(0.05), np.log(50)))),
            v=float(np.exp(rng.uniform(np.log(0.5), np.log(500)))),
            x=x, t_x=t_x, T=T,
            t=float(rng.choice([1.0, 4.0, 13.0, 26.0, 52.0, 104.0, 156.0])),
            m_x=0.0 if x == 0 else float(np.round(np.exp(rng.uniform(np.log(1), np.log(1000))), 2)),
            margin=float(rng.choice([0.1, 0.3, 0.5, 1.0])),
            annual_discount_rate=float(rng.choice([0.0, 0.05, 0.1, 0.25])))

    # 3. Extremes where naive float formulas overflow or cancel.
    for x in (1000.0, 10000.0, 100000.0):
        add("large_x", x=x, t_x=199.5, T=200.0, m_x=12.5, t=52)
        add("large_x_short_horizon", x=x, t_x=199.99, T=200.0, m_x=12.5, t=1)
    add("large_x_large_T", x=50000.0, t_x=4999.0, T=5000.0, m_x=80.0, t=104)
    add("large_x_huge_rate", r=50.0, alpha=0.5, x=20000.0, t_x=99.9, T=100.0, m_x=20.0, t=52)
    add("large_x_some_dropout", x=3000.0, t_x=580.0, T=600.0, m_x=20.0, t=52)
    add("large_x_p_alive_tiny", x=2000.0, t_x=300.0, T=400.0, m_x=20.0, t=52)
    for T in (1000.0, 5000.0, 20000.0):
        add("large_T_x0", x=0, t_x=0, T=T, t=52)
        add("large_T_recent", x=40, t_x=T - 1.0, T=T, m_x=30, t=104)
        add("large_T_lapsed", x=40, t_x=T / 2, T=T, m_x=30, t=104)
    add("tiny_T_big_tau", alpha=0.01, x=0, t_x=0, T=0.01, t=520)
    add("tiny_alpha_big_tau", alpha=1e-3, x=1, t_x=0.5, T=0.5, m_x=10, t=260)
    add("tiny_t", x=3, t_x=10, T=20, m_x=10, t=0.01)
    add("tiny_params", r=1e-3, alpha=1e-3, a=1e-3, b=1e-3, p=1e-2, q=1.001, v=1e-2,
        x=2, t_x=5, T=10, m_x=5, t=52)
    add("tiny_r_x0", r=1e-4, alpha=2.0, x=0, t_x=0, T=30, t=52)
    add("tiny_a", a=1e-4, x=3, t_x=20, T=30, m_x=10, t=52)
    add("tiny_b", b=1e-3, x=3, t_x=20, T=30, m_x=10, t=52)
    add("tiny_b_x1", b=1e-3, x=1, t_x=20, T=30, m_x=10, t=52)
    add("huge_params", r=1e3, alpha=1e4, a=1e3, b=1e4, p=100, q=1e3, v=1e5,
        x=5, t_x=20, T=30, m_x=50, t=52)
    add("huge_r_alpha", r=500.0, alpha=5000.0, x=10, t_x=25, T=30, m_x=30, t=52)
    add("huge_a_b", a=500.0, b=2000.0, x=10, t_x=25, T=30, m_x=30, t=52)
    add("huge_b_x0", b=1e5, x=0, t_x=0, T=30, t=104)
    add("huge_a_x0", a=300.0, x=0, t_x=0, T=30, t=104)
    add("q_near_one", q=1.0001, x=2, t_x=20, T=30, m_x=10)
    add("q_near_one_x0", q=1.0001, x=0, t_x=0, T=30)
    add("huge_spend", v=1e6, p=2.0, x=4, t_x=20, T=30, m_x=1e5)
    for a in (1.0 - 1e-6, 1.0 + 1e-6, 1.0 - 1e-3, 1.0 + 1e-3, 1.0 + 0.02):
        for t, T in ((13.0, 30.0), (52.0, 30.0), (52.0, 2.0), (520.0, 0.5)):
            add("a_near_one", a=a, x=2, t_x=min(T, 10.0) * 0.9, T=T, m_x=20, t=t)
        add("a_near_one_x0", a=a, x=0, t_x=0, T=10, t=52)
    # c - a - b of the Euler-form 2F1 is an integer (r + x - a + 1 integer): a special case for
    # many hypergeometric codes.
    for r, a, x in ((1.0, 2.0, 0.0), (2.0, 1.5, 1.5 * 0 + 2.0), (0.5, 0.5, 3.0), (3.0, 2.0, 0.0)):
        add("integer_c_minus_a_minus_b", r=r, a=a, b=2.0, x=x, t_x=15.0 if x else 0.0,
            T=30.0, m_x=15.0 if x else 0.0, t=104)
    # a - 1 > r + x with a large tau: the Euler-form 2F1 overflows while (1-z)^(a-1) underflows.
    add("huge_a_big_tau", a=1000.0, b=50.0, alpha=0.1, x=0, t_x=0, T=0.5, t=520)
    add("huge_a_big_tau_x1", a=400.0, b=5.0, alpha=0.2, x=1, t_x=0.3, T=0.4, m_x=30, t=260)
    add("huge_r_small_tau", r=600.0, alpha=0.01, a=0.999998, b=0.002, x=1, t_x=5.1, T=5.6,
        m_x=10, t=1)
    add("long_horizon", x=3, t_x=20, T=30, m_x=20, t=520)
    add("long_horizon_x0_new", x=0, t_x=0, T=0.5, t=520)
    return cases


# ------------------------------------------------------------------------- compute
def _fmt(value: mp.mpf) -> str:
    return mp.nstr(value, OUTPUT_DIGITS, min_fixed=1, max_fixed=0, strip_zeros=False)


def compute_case(case: Case) -> dict:
    """All outputs, condition numbers and methods of one case, at 50 digits."""
    with mp.workdps(PRECISION_DIGITS):
        v = {name: _mpf(getattr(case, name)) for name in INPUT_NAMES}
        bg = {k: v[k] for k in ("r", "alpha", "a", "b", "x", "t_x", "T")}
        methods: list[str] = []
        p_alive = mp_p_alive(**bg)
        expected = mp_expected_purchases(v["t"], **bg, method=methods)
        if methods[-1] == "textbook":
            # Cross-check the textbook and the Euler-transformed brackets.
            other = ((v["a"] + v["b"] + v["x"] - 1) / (v["a"] - 1)
                     * _bracket_euler(v["t"], v["r"], v["alpha"], v["a"], v["b"], v["x"], v["T"])
                     * p_alive)
            if expected != 0 and abs(other / expected - 1) > mp.mpf("1e-30"):
                raise AssertionError(f"textbook and Euler forms disagree for {case}")
        spend = mp_expected_spend(v["p"], v["q"], v["v"], v["x"], v["m_x"])
        value = mp_clv(v["t"], v["r"], v["alpha"], v["a"], v["b"], v["p"], v["q"], v["v"],
                       v["x"], v["t_x"], v["T"], v["m_x"], v["margin"],
                       v["annual_discount_rate"])
        kappa_p_alive = _kappa(mp_p_alive, bg, p_alive)
        kappa_expected = _kappa(lambda **kw: mp_expected_purchases(**kw),
                                {"t": v["t"], **bg}, expected)
        kappa_spend = _kappa(mp_expected_spend,
                             {k: v[k] for k in ("p", "q", "v", "x", "m_x")}, spend)
    # The CLV is a positively weighted sum of E[Y(t_k)] times E[M]: its condition is bounded by
    # roughly kappa(E[Y]) + kappa(E[M]) + |d log CLV / d log discount| (<= 1 for rates <= 1).
    kappa_clv = kappa_expected + kappa_spend + 1
    outputs = {
        "p_alive": _fmt(p_alive),
        "expected_purchases": _fmt(expected),
        "expected_spend": _fmt(spend),
        "clv": _fmt(value),
    }
    kappas = {
        "p_alive": float(kappa_p_alive),
        "expected_purchases": float(kappa_expected),
        "expected_spend": float(kappa_spend),
        "clv": float(kappa_clv),
    }
    return {
        "label": case.label,
        "inputs": {name: getattr(case, name) for name in INPUT_NAMES},
        "outputs": outputs,
        "kappa": {k: float(f"{val:.3g}") for k, val in kappas.items()},
        "method_2f1": methods[-1],
    }


def build_document() -> dict:
    """The whole JSON document."""
    cases = [compute_case(case) for case in _cases()]
    return {
        "description": (
            "Reference values of the BG/NBD + Gamma-Gamma CLV formulas for offerd. Inputs are "
            "float64 JSON numbers; outputs are decimal strings with 25 significant digits "
            "computed with mpmath at 50 digits (textbook 2F1 form of Fader, Hardie & Lee 2005; "
            "method_2f1 = 'euler' where the textbook series does not converge and the "
            "Pfaff/Euler-transformed form was used). Time unit: week. 'kappa' is the relative "
            "condition number of each output; implementations should match to 1e-9 relative "
            f"where kappa <= {WELL_CONDITIONED_KAPPA:g}. Generated by "
            "`/usr/bin/python3 -m offline.clv_vectors --out tests/vectors/clv_vectors.json`."),
        "precision_digits": PRECISION_DIGITS,
        "well_conditioned_kappa": WELL_CONDITIONED_KAPPA,
        "weeks_per_year": clv_math.WEEKS_PER_YEAR,
        "inputs": {
            "r": "BG/NBD shape of the purchase-rate gamma", "alpha": "BG/NBD scale, weeks",
            "a": "BG/NBD dropout beta a", "b": "BG/NBD dropout beta b",
            "p": "Gamma-Gamma shape of a transaction's spend",
            "q": "Gamma-Gamma shape of the spend-rate gamma", "v": "Gamma-Gamma scale",
            "x": "repeat purchase occasions", "t_x": "weeks from first to last purchase",
            "T": "weeks from first purchase to now", "t": "horizon in weeks",
            "m_x": "mean spend of the x repeat occasions (0 when x = 0)",
            "margin": "margin rate applied to spend", "annual_discount_rate": "e.g. 0.1 = 10%/year",
        },
        "formulas": FORMULAS,
        "cases": cases,
    }


def main(argv: list[str]) -> int:
    """CLI: write the vectors file."""
    parser = argparse.ArgumentParser(prog="python3 -m offline.clv_vectors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output JSON path")
    args = parser.parse_args(argv)
    document = build_document()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {len(document['cases'])} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
