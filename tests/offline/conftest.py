"""Shared fixtures for the offline tests: one small synthetic world and one bundle per session."""
from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from offline import __main__ as offline_cli  # noqa: E402

# Small but statistically useful: every signed-up user is in every campaign.
SMALL_WORLD_ARGS = ["--users", "2000", "--offers", "100", "--seed", "11", "--campaign-fraction", "1.0"]


@dataclass
class JobResult:
    """Exit code and captured output of an in-process ``python3 -m offline <job>`` run."""

    code: int
    out: str
    err: str


def run_job(*argv: str) -> JobResult:
    """Run ``offline <argv...>`` in-process and capture its output (SystemExit -> code)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = offline_cli.main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return JobResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world written by ``offline synth``."""
    out = tmp_path_factory.mktemp("world") / "w"
    result = run_job("synth", "--out", out, *SMALL_WORLD_ARGS)
    assert result.code == 0, result.err
    return out


@dataclass
class Bundle:
    """A bundle exported from :func:`world_dir`."""

    root: Path
    version: str
    users_jsonl: Path

    @property
    def path(self) -> Path:
        return self.root / self.version


@pytest.fixture(scope="session")
def bundle(world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """``offline export`` of the small world (flat index, baseline embeddings)."""
    base = tmp_path_factory.mktemp("export")
    result = run_job("export", "--world", world_dir, "--snapshot-root", base / "snapshots",
                     "--version", "20261123T070000Z", "--users-out", base / "users.jsonl")
    assert result.code == 0, result.err
    return Bundle(base / "snapshots", "20261123T070000Z", base / "users.jsonl")
