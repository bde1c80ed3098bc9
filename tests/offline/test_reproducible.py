"""``offline build`` twice with the same seed: byte-identical files (offline/build.py, "Reproducible")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_job

# Small world, every step on (clv and cohorts included), short training: ~15 s per build.
SMALL_BUILD = ["--out", "out", "--snapshot-root", "snap", "--users", "1500", "--offers", "60", "--seed", "3",
               "--version", "v1", "--step-arg", "train=--epochs=2", "--step-arg", "uplift=--epochs=3",
               "--step-arg", "uplift=--hidden=8", "--step-arg", "evaluate=--page-views=300"]
WALL_CLOCK_FILES = {"out/timings.json"}  # the only file with wall-clock times (besides created_at)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_twice_with_the_same_seed_gives_identical_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trees = []
    for name in ("a", "b"):  # two directories, the same relative paths (paths are recorded as given)
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        result = run_job("build", *SMALL_BUILD)
        assert result.code == 0, result.err
        status = {s["name"]: s["status"] for s in json.loads(Path("out/build.json").read_text())["steps"]}
        assert set(status.values()) == {"ok"}, status
        trees.append(_files(tmp_path / name))
    a, b = trees
    assert sorted(a) == sorted(b)
    assert "snap/v1/MANIFEST.json" in a and "out/users.jsonl" in a and "out/evaluate/evaluate.json" in a
    manifests = [json.loads(t.pop("snap/v1/MANIFEST.json")) for t in (a, b)]
    assert manifests[0].pop("created_at") and manifests[1].pop("created_at")
    assert manifests[0] == manifests[1]
    assert manifests[0]["clv"]["margin"] == 0.2 and manifests[0]["clv"]["r"] > 0  # the served CLV model
    assert {"uplift", "user_tower"} <= set(manifests[0]["models"])
    differ = sorted(name for name in a if name not in WALL_CLOCK_FILES and a[name] != b[name])
    assert differ == [], f"files that differ between two builds with the same seed: {differ}"
    timings = json.loads(a["out/timings.json"])
    assert set(timings["steps"]) == set(status) and timings["total_seconds"] > 0
