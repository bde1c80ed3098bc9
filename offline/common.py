"""Small helpers shared by the offline jobs: hashing, atomic directory publish, npy/JSON output,
dates, and CLI error handling.

Everything here is deterministic: the same inputs give byte-identical files.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

EPOCH = dt.date(1970, 1, 1)
MS_PER_DAY = 86_400_000


class JobError(Exception):
    """A user-facing failure of a job (bad input, refused operation).

    ``main`` functions catch it through :func:`run_job`, print ``offline <job>: error: <message>``
    to stderr and return ``exit_code``.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_job(job: str, body: Callable[[], int]) -> int:
    """Run ``body`` and turn :class:`JobError` into an error message and an exit code."""
    try:
        return int(body() or 0)
    except JobError as exc:
        print(f"offline {job}: error: {exc}", file=sys.stderr)
        return exc.exit_code


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS/LAPACK single-threaded inside the block.

    Multi-threaded BLAS may sum in a thread-count-dependent order, so results would differ in
    the last bits between machines; numeric outputs that must be byte-identical are computed
    inside this block. Without threadpoolctl (a scikit-learn dependency) it does nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with python3-sklearn
        yield
        return
    with threadpool_limits(limits=1):
        yield


# ---------------------------------------------------------------------------------------------
# hashing and files


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Lower-case hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` as listed in a bundle MANIFEST."""
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's contents to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry table (after creating or renaming entries in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and directory under ``root`` (bottom-up)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def write_npy(path: str | os.PathLike[str], array: np.ndarray, dtype: Any | None = None) -> None:
    """Write a C-ordered ``.npy`` (format 1.0 when it fits) without pickling."""
    arr = np.ascontiguousarray(array if dtype is None else np.asarray(array, dtype=dtype))
    with open(path, "wb") as handle:
        np.save(handle, arr, allow_pickle=False)


def json_text(obj: Any, indent: int | None = 2) -> str:
    """Deterministic JSON text (sorted keys are *not* forced, insertion order is kept)."""
    return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"


def finite_json(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None and numpy scalars as Python ones (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return finite_json(obj.item())
    return obj


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document in `path`; a JobError naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise JobError(f"{path}: invalid JSON: {exc}") from exc


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON with a trailing newline."""
    Path(path).write_text(json_text(obj, indent), encoding="utf-8")


def emit_json(obj: Any) -> None:
    """Print a job's JSON summary on stdout (one document)."""
    sys.stdout.write(json_text(obj))
    sys.stdout.flush()


def compact_json_sha16(obj: Any) -> str:
    """First 16 hex digits of sha256 of compact, key-sorted JSON (the feature-schema id rule)."""
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def publish_dir(tmp_dir: Path, final_dir: Path, replace: bool) -> None:
    """Atomically move a fully written ``tmp_dir`` to ``final_dir`` with ``rename(2)``.

    With ``replace=False`` an existing ``final_dir`` is refused (:class:`JobError`, exit 2) and
    ``tmp_dir`` is removed. With ``replace=True`` an existing ``final_dir`` is first renamed aside
    and deleted after the new one is in place (readers see old or new, never a mix).
    """
    fsync_tree(tmp_dir)
    if final_dir.exists():
        if not replace:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise JobError(f"{final_dir} already exists; refusing to overwrite it")
        old = final_dir.parent / f".old-{final_dir.name}-{os.getpid()}"
        os.rename(final_dir, old)
        os.rename(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.rename(tmp_dir, final_dir)
        except OSError as exc:  # lost a race with another writer
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise JobError(f"cannot publish {final_dir}: {exc}") from exc
    fsync_dir(final_dir.parent)


def fresh_tmp_dir(parent: Path, name: str) -> Path:
    """Create an empty ``parent/.tmp-<name>/`` (removing leftovers of an interrupted run)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


# ---------------------------------------------------------------------------------------------
# dates: integer days since 1970-01-01 (UTC)


def parse_date(text: str) -> dt.date:
    """Parse ``YYYY-MM-DD`` (raises JobError with the bad value)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise JobError(f"bad date {text!r}: expected YYYY-MM-DD") from exc


def date_to_day(date: dt.date) -> int:
    """Days since 1970-01-01."""
    return (date - EPOCH).days


def day_to_date(day: int) -> dt.date:
    """Inverse of :func:`date_to_day`."""
    return EPOCH + dt.timedelta(days=int(day))


def add_months(date: dt.date, months: int) -> dt.date:
    """``date`` shifted by whole months (day of month clamped to the target month)."""
    index = date.year * 12 + (date.month - 1) + months
    year, month0 = divmod(index, 12)
    month = month0 + 1
    next_first = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_first - dt.timedelta(days=1)).day
    return dt.date(year, month, min(date.day, last_day))


def iso_days(days: np.ndarray) -> np.ndarray:
    """Vectorised ``days since epoch -> 'YYYY-MM-DD'`` (object array of str)."""
    days = np.asarray(days, dtype=np.int64)
    if days.size == 0:
        return np.empty(0, dtype=object)
    lo, hi = int(days.min()), int(days.max())
    table = np.array([day_to_date(d).isoformat() for d in range(lo, hi + 1)], dtype=object)
    return table[days - lo]


def days_from_iso(values: Iterable[str], what: str) -> np.ndarray:
    """Vectorised ``'YYYY-MM-DD' -> days since epoch`` (int64); JobError names ``what`` on failure."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype="U10")
    try:
        parsed = arr.astype("datetime64[D]")
    except ValueError as exc:
        raise JobError(f"{what}: bad date ({exc}); expected YYYY-MM-DD") from exc
    if np.isnat(parsed).any():
        raise JobError(f"{what}: empty or invalid date")
    return parsed.astype(np.int64)


def utc_now_version() -> str:
    """Recommended bundle version for 'now': ``YYYYMMDDTHHMMSSZ`` (UTC)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def utc_now_rfc3339() -> str:
    """RFC 3339 UTC timestamp with second precision, e.g. ``2026-11-23T07:00:00Z``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
