"""Command-line entry point: ``python3 -m offline <job> [args...]``.

Each job is a module of this package exposing ``main(argv: list[str]) -> int``.
"""
from __future__ import annotations

import importlib
import sys

# job name -> (module, one-line description)
JOBS: dict[str, tuple[str, str]] = {
    "synth": ("offline.synth", "generate a synthetic world with known ground truth"),
    "export": ("offline.export", "write a snapshot bundle and users.jsonl from a world"),
    "build": ("offline.build", "synth -> fit -> train -> evaluate -> export, with report.md"),
    "clv": ("offline.clv", "fit BG/NBD + Gamma-Gamma CLV models on a transactions CSV"),
    "cohorts": ("offline.cohorts", "monthly cohort retention/revenue and CLV by acquisition source"),
    "uplift": ("offline.uplift", "train and evaluate uplift models (synthetic or Hillstrom)"),
    "train": ("offline.train", "train the two-tower retrieval model"),
    "evaluate": ("offline.evaluate", "evaluate ranking policies against simulator ground truth"),
    "logs": ("offline.logs_report", "lift vs holdout and IPS policy value from decision/event logs"),
    "replay": ("offline.replay", "replay evaluate's page views through a real offerd, valued with ground truth"),
}


def usage() -> str:
    lines = ["usage: python3 -m offline <job> [--help] [args...]", "", "jobs:"]
    for name, (_, desc) in JOBS.items():
        lines.append(f"  {name:<10} {desc}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    job = argv[0]
    if job not in JOBS:
        print(f"offline: unknown job {job!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = JOBS[job][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"offline: job {job!r} is not implemented yet", file=sys.stderr)
            return 2
        raise
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
