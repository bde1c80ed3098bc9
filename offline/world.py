"""The synthetic world: users, purchases, offers, randomized campaigns, and their ground truth.

The model (all times in days; ``day`` = integer days since 1970-01-01 UTC):

**Users.** Signup dates spread over ``months`` monthly cohorts ending at the *as-of* date (cohort
sizes grow ~4 %/month; the acquisition-source mix drifts from paid search towards social).
Each acquisition source (``paid_search``, ``social``, ``email``) has its own acquisition cost
distribution and its own BG/NBD and Gamma-Gamma parameters (:data:`SOURCE_PARAMS`). Profile
features (country, age, income band, device, tier, email opt-in) are drawn with dependencies on
source and age; ``tier`` is a noisy view of the user's latent value (purchase rate x spend).
Each user has a latent taste vector (``taste_dim`` = 16) of which the profile features explain
about half the variance, a latent *deal sensitivity* (partly revealed by income band and rate),
and per-offer-type *annoyance* flags (more frequent for points multipliers and older users).

**Purchases (BG/NBD + Gamma-Gamma).** Per user: rate ``lambda ~ Gamma(r, rate=alpha)`` per day,
dropout ``p ~ Beta(a, b)``, spend rate ``nu ~ Gamma(q, rate=v)``. The first purchase happens at
signup; repeat purchases follow a Poisson process with rate lambda; after every repeat purchase
the user drops out for good with probability p (Fader, Hardie & Lee 2005). Each amount is
``Gamma(p_spend, rate=nu)`` (mean ``p_spend / nu``), rounded to cents. The process is simulated
``future_days`` past the as-of date; purchases after the as-of date go to
``ground_truth/future_transactions.csv`` only. Rates are per day (``alpha_weeks = alpha / 7`` in
``synth.json``).

**Offers.** Categories, types (``pct_discount``, ``cashback``, ``points_multiplier``,
``free_item``) with a value (percent, multiplier or item worth), margin and cost in currency
units, active windows (``active_from`` inclusive, ``active_to`` exclusive, ISO dates, null =
unbounded; 45 % of offers are unbounded), channel/country targeting, audiences
``<tier>_tier`` (e.g. ``gold_tier`` = users whose ``tier`` is gold), budgets, optional caps, and
a latent vector near its category's centroid.

**Response to an offer.** For user u, offer o, at day d with an outcome window of W days
(default 7) and a channel c:

- ``p0 = active(u, d) * (1 - exp(-W * lambda_u))``: the probability of at least one purchase in
  the window without the offer. ``active`` = signed up before d and not yet dropped out. This is
  exactly the organic BG/NBD purchase process, so control outcomes in the campaign log are the
  organic purchases. p0 does not depend on the offer (the outcome is "any purchase").
- persuasion ``q = sigmoid(q0 + b_taste * <taste_u, latent_o> + b_gen * (generosity_o - 0.5)
  + b_deal * deal_u)``, reduced by ``annoyed_q_factor`` when u is annoyed by o's type;
- annoyance ``s = annoy_strength * annoyed(u, type_o) * channel_factor(c)`` (push and email
  annoy more);
- ``p1 = p0 * (1 - s) + (1 - p0) * q * active(u, d)``: a shown offer converts a would-not-buyer
  with probability q and cancels a would-buy with probability s. Dropped-out users are
  unreachable (p0 = p1 = 0).

Segments of a user x offer pair (:func:`classify_segments`): *persuadable* ``p1 - p0 >= 0.02``;
*sleeping dog* ``p1 - p0 <= -0.02``; otherwise *sure thing* if ``p0 >= 0.20`` else *lost cause*.
A pair has a *non-trivial response* when ``max(p0, p1) >= 0.02``; the documented mix is over
those pairs at the as-of date. Default world (seed 7): persuadable 24.2 %, sure thing 16.7 %,
lost cause 49.9 %, sleeping dog 9.1 % (:data:`SEGMENT_TARGETS` are the guide ranges). Targeting
the top 10 % of pairs by response p1 picks ~80 % sure things (mean uplift ~0.01); by true
uplift, ~0.056.

**Randomized campaigns.** Monthly campaigns over the last year; in each, a random fraction of
signed-up users gets, at random, either no offer (control, probability ``pi_c``) or one offer
drawn uniformly from the campaign's offers eligible for the user's country, tier audience and the
row's channel; the logged propensity is the probability of the assignment that happened.
Treated rows get an impression with a channel-dependent probability; with an impression, the
treatment effect above applies (a persuaded conversion adds a purchase in the window, a
cancelled one removes the organic purchases in the window from ``transactions.csv``).
Conversions with an impression redeem the offer; clicks follow the taste match (every
redemption is clicked), dismissals the annoyance. Budgets and caps are not enforced in the
historical campaigns.

Ground truth (``ground_truth/``) is kept apart from the data files; :func:`true_response`
computes (p0, p1) for any vector of pairs from a :class:`World`, a :class:`GroundTruth` or a
world directory.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from offline import common

SOURCES: tuple[str, ...] = ("paid_search", "social", "email")
COUNTRIES: tuple[str, ...] = ("US", "CA", "GB", "DE", "FR")
COUNTRY_SHARES: tuple[float, ...] = (0.42, 0.12, 0.16, 0.16, 0.14)
TIERS: tuple[str, ...] = ("basic", "silver", "gold")
TIER_QUANTILES: tuple[float, float] = (0.60, 0.88)
DEVICES: tuple[str, ...] = ("ios", "android", "web")
INCOME_BANDS: tuple[str, ...] = ("low", "mid", "high")
CHANNELS: tuple[str, ...] = ("web", "app", "email", "push")
OFFER_TYPES: tuple[str, ...] = ("pct_discount", "cashback", "points_multiplier", "free_item")
OFFER_TYPE_SHARES: tuple[float, ...] = (0.35, 0.30, 0.20, 0.15)
OFFER_TYPE_VALUES: dict[str, tuple[float, ...]] = {
    "pct_discount": (5, 10, 15, 20, 25, 30),  # percent off
    "cashback": (2, 3, 5, 8, 10),  # percent back
    "points_multiplier": (2, 3, 4, 5),  # x points
    "free_item": (3, 5, 8, 10, 15),  # item worth, currency units
}
# category -> (average basket, margin rate)
CATEGORIES: dict[str, tuple[float, float]] = {
    "groceries": (45.0, 0.10),
    "dining": (35.0, 0.22),
    "fashion": (70.0, 0.35),
    "electronics": (150.0, 0.12),
    "travel": (300.0, 0.08),
    "beauty": (40.0, 0.40),
    "home": (80.0, 0.25),
    "sports": (60.0, 0.28),
    "entertainment": (30.0, 0.30),
    "books": (25.0, 0.20),
    "pets": (40.0, 0.25),
    "fuel": (50.0, 0.05),
}
SEGMENTS: tuple[str, ...] = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
PERSUADABLE, SURE_THING, LOST_CAUSE, SLEEPING_DOG = range(4)
LIFT_THRESHOLD = 0.02
SURE_THING_P0 = 0.20
NONTRIVIAL_RESPONSE = 0.02
# The guide the world is tuned to (fractions of non-trivial pairs); tests check these ranges.
SEGMENT_TARGETS: dict[str, tuple[float, float]] = {
    "persuadable": (0.15, 0.30),
    "sure_thing": (0.10, 0.25),
    "sleeping_dog": (0.05, 0.15),
}
DEFAULT_AS_OF = dt.date(2026, 11, 1)


@dataclass(frozen=True)
class SourceParams:
    """Per-acquisition-source generating parameters (BG/NBD rates are per day)."""

    share_first: float  # share of signups in the first cohort month
    share_last: float  # share of signups in the last cohort month
    cost_mean: float  # mean acquisition cost, currency units
    cost_sigma: float  # log-normal sigma of the acquisition cost
    cost_growth_per_month: float  # relative cost inflation per cohort month
    age_mean: float
    r: float  # BG/NBD: lambda ~ Gamma(shape r, rate alpha), per day
    alpha: float
    a: float  # BG/NBD: p ~ Beta(a, b)
    b: float
    p: float  # Gamma-Gamma: amount ~ Gamma(shape p, rate nu)
    q: float  # Gamma-Gamma: nu ~ Gamma(shape q, rate v)
    v: float


SOURCE_PARAMS: dict[str, SourceParams] = {
    "paid_search": SourceParams(0.50, 0.38, 42.0, 0.35, 0.010, 38.0,
                                r=0.60, alpha=20.0, a=0.70, b=3.2, p=6.0, q=3.5, v=18.0),
    "social": SourceParams(0.25, 0.45, 24.0, 0.45, 0.004, 29.0,
                           r=0.45, alpha=24.0, a=1.20, b=2.8, p=5.0, q=4.0, v=14.0),
    "email": SourceParams(0.25, 0.17, 9.0, 0.30, 0.000, 45.0,
                          r=0.90, alpha=20.0, a=0.50, b=4.0, p=6.5, q=3.8, v=16.0),
}


@dataclass(frozen=True)
class ResponseParams:
    """Coefficients of the true treatment response (see module docstring)."""

    q_intercept: float = -5.2
    taste_coef: float = 4.0
    generosity_coef: float = 1.0
    deal_coef: float = 0.9
    annoyed_q_factor: float = 0.15
    annoy_strength: float = 0.65
    # base probability that a user is annoyed by each offer type (OFFER_TYPES order)
    annoy_base: tuple[float, ...] = (0.09, 0.08, 0.22, 0.06)
    annoy_age50_points: float = 0.12  # extra for points_multiplier when age >= 50
    annoy_no_opt_in: float = 0.05  # extra for every type without email opt-in
    channel_annoyance: tuple[tuple[str, float], ...] = (
        ("web", 1.0), ("app", 1.0), ("email", 1.15), ("push", 1.4))
    impression_rate: tuple[tuple[str, float], ...] = (
        ("web", 0.97), ("app", 0.97), ("email", 0.55), ("push", 0.80))


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and knobs of a synthetic world (all flags of ``offline synth``)."""

    users: int = 50_000
    offers: int = 1_000
    months: int = 24
    seed: int = 7
    as_of: dt.date = DEFAULT_AS_OF
    campaigns: int = 12
    campaign_fraction: float = 0.35
    campaign_offers: int = 150
    window_days: int = 7
    future_days: int = 365
    taste_dim: int = 16
    mix_pairs: int = 200_000

    @property
    def start(self) -> dt.date:
        """First day of the first cohort month."""
        return common.add_months(self.as_of, -self.months)

    def validate(self) -> None:
        """Raise :class:`common.JobError` on impossible sizes."""
        checks = [
            (self.users >= 10, "--users must be >= 10"),
            (self.offers >= 4, "--offers must be >= 4"),
            (1 <= self.months <= 240, "--months must be in 1..240"),
            (self.campaigns >= 0, "--campaigns must be >= 0"),
            (0.0 < self.campaign_fraction <= 1.0, "--campaign-fraction must be in (0, 1]"),
            (self.campaign_offers >= 1, "--campaign-offers must be >= 1"),
            (1 <= self.window_days <= 28, "--window-days must be in 1..28"),
            (self.future_days >= 0, "--future-days must be >= 0"),
            (self.taste_dim >= 2, "taste_dim must be >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise common.JobError(message)


@dataclass
class GroundTruth:
    """The latent generating state of a world. Never read by models; used by evaluation."""

    as_of_day: int
    window_days: int
    user_signup_time: np.ndarray  # float64 days since epoch (fractional: time of day)
    user_lambda: np.ndarray  # purchases per day while active
    user_dropout_p: np.ndarray
    user_death_time: np.ndarray  # time of the last purchase before dropping out; inf = beyond sim
    user_spend_nu: np.ndarray  # Gamma-Gamma rate; mean spend = p_spend / nu
    user_mean_spend: np.ndarray
    user_taste: np.ndarray  # [users, taste_dim] unit rows
    user_deal_sensitivity: np.ndarray
    user_annoyed: np.ndarray  # uint8 [users, len(OFFER_TYPES)]
    offer_latent: np.ndarray  # [offers, taste_dim] unit rows
    offer_generosity: np.ndarray  # in [0, 1] within its type
    offer_type_index: np.ndarray  # int64 index into OFFER_TYPES
    response: ResponseParams = field(default_factory=ResponseParams)

    @property
    def num_users(self) -> int:
        return int(self.user_lambda.shape[0])

    @property
    def num_offers(self) -> int:
        return int(self.offer_latent.shape[0])

    def baseline(self, user_idx: np.ndarray, day: np.ndarray, window_days: np.ndarray) -> np.ndarray:
        """p0: P(at least one organic purchase in [day, day + window)) for active users."""
        active = (self.user_signup_time[user_idx] < day) & (self.user_death_time[user_idx] > day)
        return active * -np.expm1(-window_days * self.user_lambda[user_idx])

    def persuasion_and_annoyance(self, user_idx: np.ndarray, offer_idx: np.ndarray,
                                 channel_factor: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(q, s): probability a shown offer converts a would-not-buyer / cancels a would-buy."""
        rp = self.response
        match = np.einsum("ij,ij->i", self.user_taste[user_idx], self.offer_latent[offer_idx])
        logit = (rp.q_intercept + rp.taste_coef * match
                 + rp.generosity_coef * (self.offer_generosity[offer_idx] - 0.5)
                 + rp.deal_coef * self.user_deal_sensitivity[user_idx])
        q = 1.0 / (1.0 + np.exp(-logit))
        annoyed = self.user_annoyed[user_idx, self.offer_type_index[offer_idx]].astype(bool)
        q = np.where(annoyed, q * rp.annoyed_q_factor, q)
        s = np.minimum(annoyed * rp.annoy_strength * channel_factor, 0.95)
        return q, s


@dataclass
class World:
    """A generated world: the data files' tables plus the ground truth."""

    config: WorldConfig
    users: pd.DataFrame
    transactions: pd.DataFrame  # user_id, date, amount (observed, campaign effects applied)
    offers: list[dict[str, Any]]
    campaign_log: pd.DataFrame
    truth: GroundTruth
    future_transactions: pd.DataFrame
    campaign_p0: np.ndarray
    campaign_p1: np.ndarray
    organic_purchases: np.ndarray  # per user, observed organic purchases (incl. the first)
    segment_mix: dict[str, Any]
    summary: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a [n, k] probability matrix (rows sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _channel_table(pairs: tuple[tuple[str, float], ...], channels: np.ndarray | None,
                   default: float) -> np.ndarray | float:
    """Map channel names (array or None) through a (name, value) table."""
    if channels is None:
        return default
    table = dict(pairs)
    arr = np.asarray(channels, dtype=object)
    values = np.array([table.get(str(c), default) for c in arr.ravel()], dtype=np.float64)
    return values.reshape(arr.shape)


# ---------------------------------------------------------------------------------------------
# users


@dataclass
class _Users:
    frame: pd.DataFrame
    signup_time: np.ndarray
    source_idx: np.ndarray
    country_idx: np.ndarray
    tier_idx: np.ndarray
    device_idx: np.ndarray
    opt_in: np.ndarray
    lam: np.ndarray
    dropout_p: np.ndarray
    nu: np.ndarray
    mean_spend: np.ndarray
    taste: np.ndarray
    deal: np.ndarray
    annoyed: np.ndarray


def _generate_users(rng: np.random.Generator, cfg: WorldConfig, rp: ResponseParams) -> _Users:
    n = cfg.users
    month_start = np.array([common.date_to_day(common.add_months(cfg.start, m))
                            for m in range(cfg.months + 1)], dtype=np.int64)
    month_weight = 1.04 ** np.arange(cfg.months)
    month = rng.choice(cfg.months, size=n, p=month_weight / month_weight.sum())
    month.sort()  # user ids in signup-month order
    month_len = month_start[month + 1] - month_start[month]
    signup_day = month_start[month] + np.floor(rng.random(n) * month_len).astype(np.int64)
    order = np.argsort(signup_day, kind="stable")
    signup_day, month = signup_day[order], month[order]
    signup_time = signup_day + rng.random(n)

    frac = month / max(cfg.months - 1, 1)
    shares = np.stack([(1 - frac) * SOURCE_PARAMS[s].share_first + frac * SOURCE_PARAMS[s].share_last
                       for s in SOURCES], axis=1)
    source_idx = _categorical(rng, shares / shares.sum(axis=1, keepdims=True))
    sp = [SOURCE_PARAMS[s] for s in SOURCES]

    def per_source(attr: str) -> np.ndarray:
        return np.array([getattr(p, attr) for p in sp])[source_idx]

    cost_sigma = per_source("cost_sigma")
    cost = (per_source("cost_mean") * (1 + per_source("cost_growth_per_month") * month)
            * np.exp(rng.normal(-0.5 * cost_sigma**2, cost_sigma)))
    country_idx = rng.choice(len(COUNTRIES), size=n, p=np.array(COUNTRY_SHARES))
    age = np.clip(np.rint(rng.normal(per_source("age_mean"), 11.0)), 18, 80).astype(np.int64)
    age_c = (age - 40.0) / 10.0
    income_logits = np.stack([0.8 - 0.30 * age_c, np.full(n, 0.6), -0.6 + 0.35 * age_c], axis=1)
    income_logits[:, 2] += np.where(np.isin(country_idx, [0, 2]), 0.2, 0.0)  # US, GB
    income_idx = _categorical(rng, _softmax_rows(income_logits))
    device_logits = np.stack([0.3 + 0.2 * (income_idx == 2) - 0.1 * age_c,
                              0.2 + 0.2 * (income_idx == 0) - 0.1 * age_c,
                              -0.6 + 0.30 * age_c], axis=1)
    device_idx = _categorical(rng, _softmax_rows(device_logits))
    opt_in = (rng.random(n) < np.where(source_idx == SOURCES.index("email"), 0.9, 0.55)).astype(np.int64)

    lam = rng.gamma(per_source("r"), 1.0 / per_source("alpha"))
    dropout_p = rng.beta(per_source("a"), per_source("b"))
    nu = rng.gamma(per_source("q"), 1.0 / per_source("v"))
    mean_spend = per_source("p") / nu

    value = np.log(lam + 1e-9) + np.log(mean_spend) + rng.normal(0.0, 0.7, n)
    cuts = np.quantile(value, TIER_QUANTILES)
    tier_idx = np.searchsorted(cuts, value, side="right")

    log_lam = np.log(lam + 1e-9)
    deal = (0.6 * (income_idx == 0) - 0.5 * (income_idx == 2)
            - 0.35 * (log_lam - log_lam.mean()) / log_lam.std()
            + 0.25 * (source_idx == SOURCES.index("social")) + rng.normal(0.0, 0.6, n))

    # taste: profile one-hots explain part of it, the rest is idiosyncratic
    age_bucket = np.searchsorted(np.array([25, 40, 55]), age, side="right")
    blocks = [(country_idx, len(COUNTRIES)), (income_idx, 3), (device_idx, 3), (age_bucket, 4),
              (source_idx, len(SOURCES))]
    loading = rng.normal(0.0, 0.45, size=(sum(k for _, k in blocks), cfg.taste_dim))
    explained = np.zeros((n, cfg.taste_dim))
    offset = 0
    for idx, k in blocks:
        explained += loading[offset + idx]
        offset += k
    taste = _unit_rows(explained + rng.normal(0.0, 1.0, size=(n, cfg.taste_dim)))

    annoy_p = np.tile(np.array(rp.annoy_base), (n, 1))
    annoy_p[:, OFFER_TYPES.index("points_multiplier")] += rp.annoy_age50_points * (age >= 50)
    annoy_p += rp.annoy_no_opt_in * (opt_in == 0)[:, None]
    annoyed = (rng.random(annoy_p.shape) < annoy_p).astype(np.uint8)

    frame = pd.DataFrame({
        "user_id": [f"u{i:07d}" for i in range(n)],
        "signup_date": common.iso_days(signup_day),
        "acquisition_source": np.array(SOURCES, dtype=object)[source_idx],
        "acquisition_cost": np.round(cost, 2),
        "country": np.array(COUNTRIES, dtype=object)[country_idx],
        "age": age,
        "tier": np.array(TIERS, dtype=object)[tier_idx],
        "device": np.array(DEVICES, dtype=object)[device_idx],
        "income_band": np.array(INCOME_BANDS, dtype=object)[income_idx],
        "email_opt_in": opt_in,
    })
    return _Users(frame, signup_time, source_idx, country_idx, tier_idx, device_idx, opt_in,
                  lam, dropout_p, nu, mean_spend, taste, deal, annoyed)


# ---------------------------------------------------------------------------------------------
# purchases


@dataclass
class _Purchases:
    user: np.ndarray  # int64, sorted by (user, time)
    time: np.ndarray  # float64 days since epoch
    amount: np.ndarray
    death_time: np.ndarray


def _generate_purchases(rng: np.random.Generator, cfg: WorldConfig, users: _Users) -> _Purchases:
    """BG/NBD purchase times (first at signup) and Gamma-Gamma amounts up to as_of + future."""
    n = cfg.users
    end_time = common.date_to_day(cfg.as_of) + cfg.future_days
    span = np.maximum(end_time - users.signup_time, 0.0)
    # Poisson arrivals on [0, span): count, then sorted uniform times.
    arrivals = rng.poisson(users.lam * span)
    owner = np.repeat(np.arange(n), arrivals)
    offsets = np.concatenate([[0], np.cumsum(arrivals)])
    t = rng.random(owner.size) * span[owner]
    t = t[np.lexsort((t, owner))]
    rank = np.arange(owner.size) - offsets[owner]
    # BG/NBD: after each *repeat* purchase the user drops out with probability p, so the number
    # of repeat purchases made before dropping out is D ~ Geometric(p) >= 1 (FHL 2005).
    repeats_before_drop = rng.geometric(users.dropout_p)
    keep = rank < repeats_before_drop[owner]
    death_time = np.full(n, np.inf)
    last = (rank == repeats_before_drop[owner] - 1) & keep
    death_time[owner[last]] = users.signup_time[owner[last]] + t[last]

    user = np.concatenate([np.arange(n), owner[keep]])
    time = np.concatenate([users.signup_time, users.signup_time[owner[keep]] + t[keep]])
    order = np.lexsort((time, user))
    user, time = user[order], time[order]
    p_spend = np.array([SOURCE_PARAMS[s].p for s in SOURCES])[users.source_idx]
    amount = np.maximum(np.round(rng.gamma(p_spend[user], 1.0 / users.nu[user]), 2), 0.5)
    return _Purchases(user, time, amount, death_time)


# ---------------------------------------------------------------------------------------------
# offers


def _generate_offers(rng: np.random.Generator, cfg: WorldConfig) -> tuple[list[dict[str, Any]], np.ndarray,
                                                                             np.ndarray, np.ndarray]:
    m = cfg.offers
    cat_names = list(CATEGORIES)
    cat_weight = rng.dirichlet(np.full(len(cat_names), 5.0))
    cat_idx = rng.choice(len(cat_names), size=m, p=cat_weight)
    type_idx = rng.choice(len(OFFER_TYPES), size=m, p=np.array(OFFER_TYPE_SHARES))
    centroids = _unit_rows(rng.normal(size=(len(cat_names), cfg.taste_dim)))
    latent = _unit_rows(centroids[cat_idx] + rng.normal(0.0, 0.25, size=(m, cfg.taste_dim)))

    value_draw = rng.random(m)
    margin_noise = rng.uniform(0.8, 1.2, m)
    window_kind = rng.random(m)
    from_draw, len_draw = rng.random(m), rng.random(m)
    chan_bits = rng.random((m, len(CHANNELS))) < 0.55
    chan_all = rng.random(m) < 0.40
    chan_pick = rng.integers(0, len(CHANNELS), m)
    country_bits = rng.random((m, len(COUNTRIES))) < 0.5
    country_all = rng.random(m) < 0.55
    country_pick = rng.integers(0, len(COUNTRIES), m)
    audience_draw = rng.random(m)
    budget_draw = rng.random(m)
    budget_pick = rng.integers(0, 6, m)
    caps_draw = rng.random(m)
    caps_max = rng.integers(2, 6, m)
    caps_window = rng.integers(0, 2, m)

    start_day = common.date_to_day(cfg.start)
    as_of_day = common.date_to_day(cfg.as_of)
    offers: list[dict[str, Any]] = []
    generosity = np.zeros(m)
    for i in range(m):
        category, otype = cat_names[cat_idx[i]], OFFER_TYPES[type_idx[i]]
        values = OFFER_TYPE_VALUES[otype]
        k = min(int(value_draw[i] * len(values)), len(values) - 1)
        value = float(values[k])
        generosity[i] = k / (len(values) - 1)
        basket, margin_rate = CATEGORIES[category]
        margin = round(basket * margin_rate * margin_noise[i], 2)
        if otype == "pct_discount":
            cost, title = basket * value / 100 * 0.6, f"{value:.0f}% off {category}"
        elif otype == "cashback":
            cost, title = basket * value / 100, f"{value:.0f}% cashback on {category}"
        elif otype == "points_multiplier":
            cost, title = basket * 0.01 * (value - 1), f"{value:.0f}x points on {category}"
        else:
            cost, title = value, f"Free {category} item worth {value:.0f}"
        if window_kind[i] < 0.45:
            active_from = active_to = None
        elif window_kind[i] < 0.70:
            active_from, active_to = start_day + int(from_draw[i] * (as_of_day - start_day)), None
        else:
            begin = start_day + int(from_draw[i] * (as_of_day + 120 - start_day))
            active_from, active_to = begin, begin + 30 + int(len_draw[i] * 150)
        channels = [] if chan_all[i] else [c for c, b in zip(CHANNELS, chan_bits[i]) if b]
        if not chan_all[i] and not channels:
            channels = [CHANNELS[chan_pick[i]]]
        countries = [] if country_all[i] else [c for c, b in zip(COUNTRIES, country_bits[i]) if b]
        if not country_all[i] and not countries:
            countries = [COUNTRIES[country_pick[i]]]
        if audience_draw[i] < 0.07:
            audiences = ["gold_tier"]
        elif audience_draw[i] < 0.12:
            audiences = ["silver_tier", "gold_tier"]
        elif audience_draw[i] < 0.15:
            audiences = ["basic_tier"]
        else:
            audiences = []
        budget = None if budget_draw[i] < 0.5 else (500, 1000, 2000, 5000, 10000, 20000)[budget_pick[i]]
        offer: dict[str, Any] = {
            "offer_id": f"o{i:06d}", "category": category, "type": otype, "value": value,
            "title": title, "margin": margin, "cost": round(cost, 2),
            "active_from": None if active_from is None else common.day_to_date(active_from).isoformat(),
            "active_to": None if active_to is None else common.day_to_date(active_to).isoformat(),
            "channels": channels, "countries": countries, "audiences": audiences, "budget": budget,
        }
        if caps_draw[i] < 0.25:
            caps: dict[str, int] = {"max_impressions": int(caps_max[i]),
                                    "window_seconds": (86_400, 604_800)[caps_window[i]]}
            if caps_draw[i] < 0.12:
                caps["dismiss_cooldown_seconds"] = 1_209_600
            offer["caps"] = caps
        offers.append(offer)
    return offers, latent, generosity, type_idx.astype(np.int64)


def offer_targeting_masks(offers: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Boolean masks [offers, k] of allowed channels, countries and tiers (empty list = all)."""
    def mask(key: str, names: tuple[str, ...], fmt: str = "{}") -> np.ndarray:
        out = np.ones((len(offers), len(names)), dtype=bool)
        for i, offer in enumerate(offers):
            allowed = offer.get(key) or []
            if allowed:
                out[i] = [fmt.format(n) in allowed for n in names]
        return out
    return {"channel": mask("channels", CHANNELS), "country": mask("countries", COUNTRIES),
            "tier": mask("audiences", TIERS, "{}_tier")}


def offer_active_days(offers: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(from_day, to_day) per offer; unbounded sides are -inf / +inf; active iff from <= d < to."""
    lo = np.array([-np.inf if o.get("active_from") is None
                   else common.date_to_day(dt.date.fromisoformat(o["active_from"])) for o in offers])
    hi = np.array([np.inf if o.get("active_to") is None
                   else common.date_to_day(dt.date.fromisoformat(o["active_to"])) for o in offers])
    return lo, hi


# ---------------------------------------------------------------------------------------------
# response model


def classify_segments(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Segment code per pair (index into :data:`SEGMENTS`)."""
    lift = np.asarray(p1) - np.asarray(p0)
    seg = np.where(np.asarray(p0) >= SURE_THING_P0, SURE_THING, LOST_CAUSE)
    seg = np.where(lift >= LIFT_THRESHOLD, PERSUADABLE, seg)
    seg = np.where(lift <= -LIFT_THRESHOLD, SLEEPING_DOG, seg)
    return seg.astype(np.int8)


def _as_truth(world_or_truth: "World | GroundTruth | str | os.PathLike[str]") -> GroundTruth:
    if isinstance(world_or_truth, World):
        return world_or_truth.truth
    if isinstance(world_or_truth, GroundTruth):
        return world_or_truth
    return load_ground_truth(world_or_truth)


def true_response(world_or_truth: "World | GroundTruth | str | os.PathLike[str]",
                  user_idx: np.ndarray, offer_idx: np.ndarray,
                  context: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """True (p0, p1) for user x offer pairs (row indices into users.csv / offers.jsonl).

    ``user_idx`` and ``offer_idx`` broadcast against each other. ``context`` (optional) may hold
    ``day`` (days since epoch, ``datetime.date`` or ISO string; scalar or array; default: the
    world's as-of date), ``channel`` (str or array of str; default: neutral, factor 1) and
    ``window_days`` (default: the world's window). Returns float64 arrays of the broadcast shape.
    A world directory path is accepted too (its ground truth is loaded; cache it for loops).
    """
    truth = _as_truth(world_or_truth)
    u, o = np.broadcast_arrays(np.asarray(user_idx, dtype=np.int64), np.asarray(offer_idx, dtype=np.int64))
    shape = u.shape
    u, o = u.ravel(), o.ravel()
    if u.size and (u.min() < 0 or u.max() >= truth.num_users):
        raise IndexError("user_idx out of range")
    if o.size and (o.min() < 0 or o.max() >= truth.num_offers):
        raise IndexError("offer_idx out of range")
    ctx = dict(context or {})
    day = ctx.get("day", truth.as_of_day)
    if isinstance(day, str):
        day = common.date_to_day(dt.date.fromisoformat(day))
    elif isinstance(day, dt.date):
        day = common.date_to_day(day)
    day_arr = np.broadcast_to(np.asarray(day, dtype=np.float64), shape).ravel()
    window = np.broadcast_to(np.asarray(ctx.get("window_days", truth.window_days), dtype=np.float64),
                             shape).ravel()
    channel = ctx.get("channel")
    factor = _channel_table(truth.response.channel_annoyance,
                            None if channel is None else np.broadcast_to(np.asarray(channel, dtype=object),
                                                                         shape).ravel(), 1.0)
    p0 = truth.baseline(u, day_arr, window)
    q, s = truth.persuasion_and_annoyance(u, o, factor)
    active = p0 > 0
    p1 = p0 * (1.0 - s) + (1.0 - p0) * q * active
    return p0.reshape(shape), p1.reshape(shape)


def segment_mix(truth: GroundTruth, rng: np.random.Generator, pairs: int,
                context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Segment shares over random user x offer pairs (all pairs and non-trivial ones)."""
    u = rng.integers(0, truth.num_users, pairs)
    o = rng.integers(0, truth.num_offers, pairs)
    p0, p1 = true_response(truth, u, o, context)
    return _mix_of(p0, p1)


def _mix_of(p0: np.ndarray, p1: np.ndarray) -> dict[str, Any]:
    seg = classify_segments(p0, p1)
    nontrivial = np.maximum(p0, p1) >= NONTRIVIAL_RESPONSE
    n_nt = int(nontrivial.sum())
    return {
        "pairs": int(p0.size),
        "nontrivial_pairs": n_nt,
        "nontrivial_share": round(n_nt / max(p0.size, 1), 4),
        "mix_nontrivial": {name: round(float((seg[nontrivial] == k).sum()) / max(n_nt, 1), 4)
                           for k, name in enumerate(SEGMENTS)},
        "mix_all": {name: round(float((seg == k).mean()) if seg.size else 0.0, 4)
                    for k, name in enumerate(SEGMENTS)},
        "mean_p0": round(float(p0.mean()), 5) if p0.size else 0.0,
        "mean_p1": round(float(p1.mean()), 5) if p1.size else 0.0,
        "mean_uplift": round(float((p1 - p0).mean()), 5) if p0.size else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# campaigns


@dataclass
class _Campaigns:
    log: pd.DataFrame
    p0: np.ndarray
    p1: np.ndarray
    removed: np.ndarray  # bool per organic purchase: cancelled by a sleeping-dog reaction
    added_user: np.ndarray
    added_time: np.ndarray
    added_amount: np.ndarray


def _campaign_days(cfg: WorldConfig) -> list[int]:
    as_of_day = common.date_to_day(cfg.as_of)
    start_day = common.date_to_day(cfg.start)
    days = [as_of_day - 21 - 30 * k for k in range(cfg.campaigns)]
    return sorted(d for d in days if d >= start_day + 30)


def _simulate_campaigns(rng: np.random.Generator, cfg: WorldConfig, users: _Users, purchases: _Purchases,
                        offers: list[dict[str, Any]], truth: GroundTruth) -> _Campaigns:
    rp = truth.response
    n = cfg.users
    W = cfg.window_days
    masks = offer_targeting_masks(offers)
    from_day, to_day = offer_active_days(offers)
    # purchase lookup keys: user * STRIDE + time, sorted because purchases are sorted by (user, time)
    stride = 1e6
    key = purchases.user * stride + purchases.time
    cum_amount = np.concatenate([[0.0], np.cumsum(purchases.amount)])
    # channel probabilities by (device is web, opt-in): web, app, email, push
    chan_probs = {(True, 1): (0.60, 0.00, 0.25, 0.15), (True, 0): (0.85, 0.00, 0.00, 0.15),
                  (False, 1): (0.15, 0.50, 0.20, 0.15), (False, 0): (0.20, 0.65, 0.00, 0.15)}
    chan_table = np.array([[chan_probs[(d == DEVICES.index("web"), o)] for o in (0, 1)]
                           for d in range(len(DEVICES))])  # [device, opt_in, channel]
    pages_web = np.array(["home", "offers", "product", "checkout"], dtype=object)
    imp_rate = np.array([dict(rp.impression_rate)[c] for c in CHANNELS])
    annoy_factor = np.array([dict(rp.channel_annoyance)[c] for c in CHANNELS])

    frames: list[pd.DataFrame] = []
    p0_all, p1_all = [], []
    remove_diff = np.zeros(purchases.user.size + 1, dtype=np.int64)
    added_user, added_time, added_amount = [], [], []
    for c_num, c_day in enumerate(_campaign_days(cfg)):
        control_prob = round(float(rng.uniform(0.15, 0.30)), 2)
        active = np.flatnonzero((from_day <= c_day) & (c_day < to_day))
        if active.size == 0:
            continue
        c_offers = np.sort(rng.choice(active, size=min(cfg.campaign_offers, active.size), replace=False))
        members = np.flatnonzero((users.signup_time < c_day) & (rng.random(n) < cfg.campaign_fraction))
        if members.size == 0:
            continue
        k = members.size
        row_day = c_day + rng.integers(0, 3, k)
        channel = _categorical(rng, chan_table[users.device_idx[members], users.opt_in[members]])
        page = np.where(channel == 2, "email", np.where(channel == 3, "push",
                        pages_web[_categorical(rng, np.tile([0.4, 0.25, 0.25, 0.10], (k, 1)))]))
        elig = (masks["channel"][c_offers][:, channel].T
                & masks["country"][c_offers][:, users.country_idx[members]].T
                & masks["tier"][c_offers][:, users.tier_idx[members]].T)
        n_elig = elig.sum(axis=1)
        treated = (rng.random(k) >= control_prob) & (n_elig > 0)
        pick = np.minimum((rng.random(k) * n_elig).astype(np.int64), np.maximum(n_elig - 1, 0))
        position = np.argmax(np.cumsum(elig, axis=1) > pick[:, None], axis=1)
        offer_idx = np.where(treated, c_offers[position], -1)
        propensity = np.where(treated, (1.0 - control_prob) / np.maximum(n_elig, 1),
                              np.where(n_elig > 0, control_prob, 1.0))

        # true response and organic outcome
        safe_offer = np.where(treated, offer_idx, 0)
        p0, p1 = true_response(truth, members, safe_offer,
                               {"day": row_day, "channel": np.array(CHANNELS, dtype=object)[channel]})
        p1 = np.where(treated, p1, p0)
        lo = np.searchsorted(key, members * stride + row_day, side="left")
        hi = np.searchsorted(key, members * stride + row_day + W, side="left")
        y0 = hi > lo
        q, s = truth.persuasion_and_annoyance(members, safe_offer, annoy_factor[channel])
        active_user = p0 > 0
        impression = treated & (rng.random(k) < imp_rate[channel])
        u_effect = rng.random(k)
        cancelled = impression & y0 & (u_effect < s)
        persuaded = impression & ~y0 & active_user & (u_effect < q)
        converted = (y0 & ~cancelled) | persuaded
        revenue = np.where(y0 & ~cancelled, cum_amount[hi] - cum_amount[lo], 0.0)
        np.add.at(remove_diff, lo[cancelled], 1)
        np.add.at(remove_diff, hi[cancelled], -1)
        if persuaded.any():
            pu = members[persuaded]
            pt = row_day[persuaded] + rng.random(int(persuaded.sum())) * W
            p_spend = np.array([SOURCE_PARAMS[s_].p for s_ in SOURCES])[users.source_idx[pu]]
            pa = np.maximum(np.round(rng.gamma(p_spend, 1.0 / users.nu[pu]), 2), 0.5)
            revenue[persuaded] = pa
            added_user.append(pu)
            added_time.append(pt)
            added_amount.append(pa)
        redeemed = impression & converted
        match = np.einsum("ij,ij->i", users.taste[members], truth.offer_latent[safe_offer])
        annoyed = s > 0
        click_p = _sigmoid(-3.0 + 5.0 * match + 0.4 * users.deal[members]) * np.where(annoyed, 0.3, 1.0)
        clicked = impression & (redeemed | (rng.random(k) < click_p))
        dismissed = impression & ~clicked & (rng.random(k) < 0.08 + 0.6 * annoyed)
        frames.append(pd.DataFrame({
            "user_idx": members, "campaign_id": f"c{c_num + 1:03d}", "day_num": row_day,
            "offer_idx": offer_idx, "treated": treated.astype(np.int64), "propensity": propensity,
            "channel": np.array(CHANNELS, dtype=object)[channel],
            "device": np.array(DEVICES, dtype=object)[users.device_idx[members]], "page": page,
            "impression": impression.astype(np.int64), "clicked": clicked.astype(np.int64),
            "redeemed": redeemed.astype(np.int64), "dismissed": dismissed.astype(np.int64),
            "converted": converted.astype(np.int64), "revenue": np.round(revenue, 2),
        }))
        p0_all.append(p0)
        p1_all.append(p1)

    if frames:
        log = pd.concat(frames, ignore_index=True)
        p0_cat, p1_cat = np.concatenate(p0_all), np.concatenate(p1_all)
    else:
        log = pd.DataFrame({c: [] for c in ("user_idx", "campaign_id", "day_num", "offer_idx", "treated",
                                            "propensity", "channel", "device", "page", "impression",
                                            "clicked", "redeemed", "dismissed", "converted", "revenue")})
        p0_cat = p1_cat = np.zeros(0)
    removed = np.cumsum(remove_diff)[:-1] > 0
    cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype=dtype))
    return _Campaigns(log, p0_cat, p1_cat, removed, cat(added_user, np.int64),
                      cat(added_time, np.float64), cat(added_amount, np.float64))


# ---------------------------------------------------------------------------------------------
# the whole world


def generate_world(cfg: WorldConfig) -> World:
    """Generate a world; the same config (incl. seed) always gives the same world."""
    cfg.validate()
    rp = ResponseParams()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)]
    users_rng, purchases_rng, offers_rng, campaign_rng, mix_rng = streams
    users = _generate_users(users_rng, cfg, rp)
    purchases = _generate_purchases(purchases_rng, cfg, users)
    offers, latent, generosity, type_idx = _generate_offers(offers_rng, cfg)
    as_of_day = common.date_to_day(cfg.as_of)
    truth = GroundTruth(
        as_of_day=as_of_day, window_days=cfg.window_days, user_signup_time=users.signup_time,
        user_lambda=users.lam, user_dropout_p=users.dropout_p, user_death_time=purchases.death_time,
        user_spend_nu=users.nu, user_mean_spend=users.mean_spend, user_taste=users.taste,
        user_deal_sensitivity=users.deal, user_annoyed=users.annoyed, offer_latent=latent,
        offer_generosity=generosity, offer_type_index=type_idx, response=rp)
    camp = _simulate_campaigns(campaign_rng, cfg, users, purchases, offers, truth)

    observed = purchases.time < as_of_day
    organic_counts = np.bincount(purchases.user[observed], minlength=cfg.users)
    keep = observed & ~camp.removed
    tx_user = np.concatenate([purchases.user[keep], camp.added_user])
    tx_time = np.concatenate([purchases.time[keep], camp.added_time])
    tx_amount = np.concatenate([purchases.amount[keep], camp.added_amount])
    order = np.lexsort((tx_time, tx_user))
    user_ids = users.frame["user_id"].to_numpy()
    transactions = pd.DataFrame({
        "user_id": user_ids[tx_user[order]],
        "date": common.iso_days(np.floor(tx_time[order]).astype(np.int64)),
        "amount": tx_amount[order],
    })
    future = ~observed
    future_tx = pd.DataFrame({
        "user_id": user_ids[purchases.user[future]],
        "date": common.iso_days(np.floor(purchases.time[future]).astype(np.int64)),
        "amount": purchases.amount[future],
    })
    log = camp.log
    offer_ids = np.array([o["offer_id"] for o in offers] + [""], dtype=object)
    campaign_log = pd.DataFrame({
        "user_id": user_ids[log["user_idx"].to_numpy(dtype=np.int64)],
        "campaign_id": log["campaign_id"].to_numpy(),
        "day": common.iso_days(log["day_num"].to_numpy(dtype=np.int64)),
        "offer_id": offer_ids[log["offer_idx"].to_numpy(dtype=np.int64)],
        **{c: log[c].to_numpy() for c in ("treated", "propensity", "channel", "device", "page", "impression",
                                          "clicked", "redeemed", "dismissed", "converted", "revenue")},
    })
    mix = segment_mix(truth, mix_rng, cfg.mix_pairs)
    treated = log["treated"].to_numpy(dtype=bool) if len(log) else np.zeros(0, dtype=bool)
    mix_campaign = _mix_of(camp.p0[treated], camp.p1[treated])
    summary = _summarise(cfg, users, purchases, observed, transactions, campaign_log, offers)
    return World(cfg, users.frame, transactions, offers, campaign_log, truth, future_tx, camp.p0, camp.p1,
                 organic_counts, {"as_of": mix, "campaign_treated_rows": mix_campaign}, summary)


def _summarise(cfg: WorldConfig, users: _Users, purchases: _Purchases, observed: np.ndarray,
               transactions: pd.DataFrame, campaign_log: pd.DataFrame,
               offers: list[dict[str, Any]]) -> dict[str, Any]:
    by_source: dict[str, Any] = {}
    counts = np.bincount(purchases.user[observed], minlength=cfg.users)
    as_of_day = common.date_to_day(cfg.as_of)
    for k, name in enumerate(SOURCES):
        sel = users.source_idx == k
        by_source[name] = {
            "users": int(sel.sum()),
            "mean_acquisition_cost": round(float(users.frame["acquisition_cost"].to_numpy()[sel].mean()), 2)
            if sel.any() else 0.0,
            "mean_organic_purchases": round(float(counts[sel].mean()), 3) if sel.any() else 0.0,
            "active_at_as_of": round(float((purchases.death_time[sel] > as_of_day).mean()), 4)
            if sel.any() else 0.0,
        }
    treated = campaign_log["treated"].to_numpy(dtype=bool)
    conv = campaign_log["converted"].to_numpy(dtype=np.float64)
    return {
        "users": cfg.users, "offers": len(offers), "months": cfg.months,
        "transactions": int(len(transactions)), "campaign_rows": int(len(campaign_log)),
        "campaigns": int(campaign_log["campaign_id"].nunique()) if len(campaign_log) else 0,
        "treated_rows": int(treated.sum()),
        "control_conversion": round(float(conv[~treated].mean()), 5) if (~treated).any() else None,
        "treated_conversion": round(float(conv[treated].mean()), 5) if treated.any() else None,
        "by_source": by_source,
    }


# ---------------------------------------------------------------------------------------------
# files

TRUTH_ARRAYS: dict[str, str] = {
    "user_signup_time": "float64 [users] signup time, days since epoch (fraction = time of day)",
    "user_lambda": "float64 [users] BG/NBD purchase rate per day while active",
    "user_dropout_p": "float64 [users] BG/NBD dropout probability after each purchase",
    "user_death_time": "float64 [users] time of the purchase after which the user dropped out; inf = "
                       "still active at the end of the simulation (as_of + future_days)",
    "user_spend_nu": "float64 [users] Gamma-Gamma rate nu; amounts ~ Gamma(p, rate=nu)",
    "user_mean_spend": "float64 [users] p / nu, the user's true mean spend per purchase",
    "user_taste": "float64 [users, taste_dim] unit latent taste vectors",
    "user_deal_sensitivity": "float64 [users] latent deal sensitivity",
    "user_annoyed": "uint8 [users, offer types] 1 = annoyed by that offer type (OFFER_TYPES order)",
    "offer_latent": "float64 [offers, taste_dim] unit latent offer vectors",
    "offer_generosity": "float64 [offers] value rank within its type, 0..1",
    "offer_type_index": "int64 [offers] index into offer_types",
}


def _format_fixed(values: np.ndarray, fmt: str) -> np.ndarray:
    return np.char.mod(fmt, np.asarray(values, dtype=np.float64)).astype(object)


def write_world(world: World, out_dir: Path) -> list[str]:
    """Write the world's files into ``out_dir`` (atomically replaced). Returns the file list."""
    out_dir = Path(out_dir)
    tmp = common.fresh_tmp_dir(out_dir.parent if str(out_dir.parent) else Path("."), out_dir.name)
    world.users.to_csv(tmp / "users.csv", index=False, float_format="%.2f", lineterminator="\n")
    world.transactions.to_csv(tmp / "transactions.csv", index=False, float_format="%.2f",
                              lineterminator="\n")
    log = world.campaign_log.copy()
    log["propensity"] = _format_fixed(log["propensity"].to_numpy(), "%.6g")
    log["revenue"] = _format_fixed(log["revenue"].to_numpy(), "%.2f")
    log.to_csv(tmp / "campaign_log.csv", index=False, lineterminator="\n")
    with open(tmp / "offers.jsonl", "w", encoding="utf-8") as handle:
        for offer in world.offers:
            handle.write(json.dumps(offer, separators=(",", ":")) + "\n")

    gt = tmp / "ground_truth"
    gt.mkdir()
    truth = world.truth
    for name in TRUTH_ARRAYS:
        common.write_npy(gt / f"{name}.npy", getattr(truth, name))
    common.write_npy(gt / "user_organic_purchases.npy", world.organic_purchases.astype(np.int64))
    common.write_npy(gt / "campaign_p0.npy", world.campaign_p0.astype(np.float64))
    common.write_npy(gt / "campaign_p1.npy", world.campaign_p1.astype(np.float64))
    world.future_transactions.to_csv(gt / "future_transactions.csv", index=False, float_format="%.2f",
                                     lineterminator="\n")
    common.write_json(gt / "truth.json", truth_json(world))
    common.write_json(tmp / "synth.json", synth_json(world))
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    common.publish_dir(tmp, out_dir, replace=True)
    return files


def _cfg_json(cfg: WorldConfig) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    out["as_of"] = cfg.as_of.isoformat()
    out["start"] = cfg.start.isoformat()
    return out


def source_params_json() -> dict[str, Any]:
    """Generating parameters per source, with BG/NBD alpha also per week (lifetimes convention)."""
    out: dict[str, Any] = {}
    for name, sp in SOURCE_PARAMS.items():
        d = dataclasses.asdict(sp)
        d["alpha_weeks"] = sp.alpha / 7.0
        d["mean_lambda_per_day"] = sp.r / sp.alpha
        d["mean_dropout_p"] = sp.a / (sp.a + sp.b)
        d["mean_spend"] = sp.p * sp.v / (sp.q - 1.0)
        out[name] = d
    return out


def truth_json(world: World) -> dict[str, Any]:
    """Contents of ground_truth/truth.json (parameters, thresholds, file descriptions)."""
    return {
        "format": "offerd-synth-truth",
        "format_version": 1,
        "config": _cfg_json(world.config),
        "as_of_day": world.truth.as_of_day,
        "window_days": world.truth.window_days,
        "time_unit": "day",
        "source_params": source_params_json(),
        "response": dataclasses.asdict(world.truth.response),
        "offer_types": list(OFFER_TYPES),
        "segments": {"names": list(SEGMENTS), "lift_threshold": LIFT_THRESHOLD,
                     "sure_thing_p0": SURE_THING_P0, "nontrivial_response": NONTRIVIAL_RESPONSE},
        "arrays": {**TRUTH_ARRAYS,
                   "user_organic_purchases": "int64 [users] organic purchases (incl. the first) before as_of, "
                                             "before campaign effects",
                   "campaign_p0": "float64 [campaign_log rows] true p0 of each row",
                   "campaign_p1": "float64 [campaign_log rows] true p1 (= p0 for control rows)"},
        "future_transactions": "future_transactions.csv: purchases in [as_of, as_of + future_days)",
        "row_order": "user arrays follow users.csv rows, offer arrays follow offers.jsonl rows",
    }


def synth_json(world: World) -> dict[str, Any]:
    """Contents of synth.json: sizes, segment mix, parameters, seed (no timings: deterministic)."""
    return {
        "format": "offerd-synth",
        "format_version": 1,
        "seed": world.config.seed,
        "config": _cfg_json(world.config),
        "as_of": world.config.as_of.isoformat(),
        "start": world.config.start.isoformat(),
        "window_days": world.config.window_days,
        "sizes": world.summary,
        "segment_mix": world.segment_mix,
        "segment_definitions": {
            "persuadable": f"p1 - p0 >= {LIFT_THRESHOLD}",
            "sleeping_dog": f"p1 - p0 <= -{LIFT_THRESHOLD}",
            "sure_thing": f"|p1 - p0| < {LIFT_THRESHOLD} and p0 >= {SURE_THING_P0}",
            "lost_cause": f"|p1 - p0| < {LIFT_THRESHOLD} and p0 < {SURE_THING_P0}",
            "nontrivial": f"max(p0, p1) >= {NONTRIVIAL_RESPONSE}",
            "mix_context": "as_of: random pairs at the as-of date, neutral channel; "
                           "campaign_treated_rows: the treated rows of campaign_log.csv",
        },
        "segment_targets": {k: list(v) for k, v in SEGMENT_TARGETS.items()},
        "source_params": source_params_json(),
        "files": {
            "users.csv": "user_id,signup_date,acquisition_source,acquisition_cost,country,age,tier,device,"
                         "income_band,email_opt_in",
            "transactions.csv": "user_id,date,amount",
            "offers.jsonl": "offer_id,category,type,value,title,margin,cost,active_from,active_to,channels,"
                            "countries,audiences,budget[,caps]",
            "campaign_log.csv": ",".join(CAMPAIGN_LOG_COLUMNS),
            "ground_truth/": "see ground_truth/truth.json",
        },
    }


CAMPAIGN_LOG_COLUMNS: tuple[str, ...] = (
    "user_id", "campaign_id", "day", "offer_id", "treated", "propensity", "channel", "device", "page",
    "impression", "clicked", "redeemed", "dismissed", "converted", "revenue")


def load_ground_truth(world_dir: str | os.PathLike[str]) -> GroundTruth:
    """Load ``<world_dir>/ground_truth`` (or a ground_truth dir itself) into a :class:`GroundTruth`."""
    path = Path(world_dir)
    if (path / "ground_truth").is_dir():
        path = path / "ground_truth"
    meta_path = path / "truth.json"
    if not meta_path.is_file():
        raise common.JobError(f"{meta_path}: missing (not a synth world?)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False) for name in TRUTH_ARRAYS}
    resp = dict(meta["response"])
    for key in ("annoy_base",):
        resp[key] = tuple(resp[key])
    for key in ("channel_annoyance", "impression_rate"):
        resp[key] = tuple((str(a), float(b)) for a, b in resp[key])
    return GroundTruth(as_of_day=int(meta["as_of_day"]), window_days=int(meta["window_days"]),
                       response=ResponseParams(**resp), **arrays)
