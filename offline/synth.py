"""``offline synth``: generate a synthetic world with known ground truth.

Usage::

    /usr/bin/python3 -m offline synth --out var/world [--users 50000] [--offers 1000] [--months 24]
        [--seed 7] [--as-of 2026-11-01] [--campaigns 12] [--campaign-fraction 0.35]
        [--campaign-offers 150] [--window-days 7] [--future-days 365]

Writes into ``--out`` (replaced atomically; an existing non-world directory is refused):

- ``users.csv``: user_id,signup_date,acquisition_source,acquisition_cost,country,age,tier,device,
  income_band,email_opt_in
- ``transactions.csv``: user_id,date,amount (purchases before the as-of date, campaign effects
  applied)
- ``offers.jsonl``: raw catalog (offer_id, category, type, value, title, margin, cost,
  active_from/active_to as ISO dates or null, channels, countries, audiences, budget, caps)
- ``campaign_log.csv``: user_id,campaign_id,day,offer_id,treated,propensity,channel,device,page,
  impression,clicked,redeemed,dismissed,converted,revenue
- ``ground_truth/``: generating parameters (``truth.json``, ``*.npy``) and future purchases
- ``synth.json``: sizes, segment mix, parameters, seed

The model is documented in :mod:`offline.world`. A JSON summary is printed on stdout.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from offline import common
from offline.world import DEFAULT_AS_OF, SEGMENTS, WorldConfig, generate_world, write_world

WORLD_MARKER = "synth.json"


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``synth`` job."""
    defaults = WorldConfig()
    parser = argparse.ArgumentParser(prog="python3 -m offline synth",
                                     description="Generate a synthetic world with known ground truth.")
    parser.add_argument("--out", required=True, type=Path, help="output world directory (replaced)")
    parser.add_argument("--users", type=int, default=defaults.users, help="number of users (default %(default)s)")
    parser.add_argument("--offers", type=int, default=defaults.offers, help="number of offers (default %(default)s)")
    parser.add_argument("--months", type=int, default=defaults.months,
                        help="monthly signup cohorts before the as-of date (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--as-of", default=DEFAULT_AS_OF.isoformat(),
                        help="end of the observed period, YYYY-MM-DD, exclusive (default %(default)s)")
    parser.add_argument("--campaigns", type=int, default=defaults.campaigns,
                        help="randomized monthly campaigns in the last months (default %(default)s)")
    parser.add_argument("--campaign-fraction", type=float, default=defaults.campaign_fraction,
                        help="share of signed-up users in each campaign (default %(default)s)")
    parser.add_argument("--campaign-offers", type=int, default=defaults.campaign_offers,
                        help="offers randomized in each campaign (default %(default)s)")
    parser.add_argument("--window-days", type=int, default=defaults.window_days,
                        help="conversion window of a campaign row (default %(default)s)")
    parser.add_argument("--future-days", type=int, default=defaults.future_days,
                        help="days simulated after as-of for ground_truth/future_transactions.csv "
                             "(default %(default)s)")
    return parser


def config_from_args(args: argparse.Namespace) -> WorldConfig:
    """WorldConfig from parsed flags (validated)."""
    cfg = WorldConfig(users=args.users, offers=args.offers, months=args.months, seed=args.seed,
                      as_of=common.parse_date(args.as_of), campaigns=args.campaigns,
                      campaign_fraction=args.campaign_fraction, campaign_offers=args.campaign_offers,
                      window_days=args.window_days, future_days=args.future_days)
    cfg.validate()
    return cfg


def check_out_dir(out: Path) -> None:
    """Refuse to replace an existing directory that is neither empty nor a synth world."""
    if out.exists():
        if not out.is_dir():
            raise common.JobError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / WORLD_MARKER).is_file():
            raise common.JobError(f"{out}: exists, is not empty and holds no {WORLD_MARKER}; "
                                  "refusing to replace it")


def run(cfg: WorldConfig, out: Path, quiet: bool = False) -> dict:
    """Generate and write a world; returns the synth.json summary (timings go to stderr only, so
    the output is the same on every run)."""
    check_out_dir(out)
    started = time.monotonic()
    world = generate_world(cfg)
    generated = time.monotonic()
    files = write_world(world, out)
    finished = time.monotonic()
    mix = world.segment_mix["as_of"]
    if not quiet:
        lines = [f"synth: {cfg.users} users, {len(world.offers)} offers, {len(world.transactions)} transactions, "
                 f"{len(world.campaign_log)} campaign rows -> {out}",
                 f"synth: segment mix over {mix['nontrivial_pairs']} non-trivial of {mix['pairs']} random pairs "
                 f"at {cfg.as_of}: " + ", ".join(f"{s} {mix['mix_nontrivial'][s]:.1%}" for s in SEGMENTS),
                 f"synth: generated in {generated - started:.1f}s, written in {finished - generated:.1f}s"]
        print("\n".join(lines), file=sys.stderr)
    return {"out": str(out), "files": files, "sizes": world.summary, "segment_mix": world.segment_mix}


def main(argv: list[str]) -> int:
    """CLI entry point (see module docstring)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        common.emit_json(run(config_from_args(args), args.out))
        return 0

    return common.run_job("synth", body)
