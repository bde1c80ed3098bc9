"""Fixtures for end-to-end tests: a small synthetic world exported by the offline pipeline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.offerd_process import OFFERCTL, OFFERD

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("PYTHON", sys.executable)


def _run(args: list[str]) -> None:
    result = subprocess.run([PYTHON, "-m", "offline", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"offline {args[0]} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    """synth -> export with the real offline CLI: a bundle and users.jsonl."""
    for binary in (OFFERD, OFFERCTL):
        assert binary.exists(), f"{binary} is missing: run `make build` first"
    base = tmp_path_factory.mktemp("world")
    world_dir, snapshot_root = base / "world", base / "snapshots"
    users = base / "users.jsonl"
    _run(["synth", "--out", str(world_dir), "--users", "1500", "--offers", "300",
          "--seed", "11"])
    _run(["export", "--world", str(world_dir), "--snapshot-root", str(snapshot_root),
          "--version", "20261101T000000Z", "--users-out", str(users)])
    with open(users) as f:
        header = json.loads(f.readline())["header"]
        rows = [json.loads(line) for line in f if line.strip()]
    return {"base": base, "snapshot_root": snapshot_root, "users_file": users,
            "bundle": snapshot_root / "20261101T000000Z", "header": header, "users": rows}
