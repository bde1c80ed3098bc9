"""The bench report records what the kernel's DAMON does (it moves the tail latencies)."""
import importlib.util
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "run_bench", Path(__file__).resolve().parents[2] / "benchmarks" / "run_bench.py")
run_bench = importlib.util.module_from_spec(_SPEC)
sys.modules["run_bench"] = run_bench
_SPEC.loader.exec_module(run_bench)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_damon_absent_when_the_kernel_has_no_sysfs_interface(tmp_path):
    assert run_bench.damon_status(tmp_path / "missing") == "absent"


def test_damon_state_and_schemes_are_described(tmp_path):
    kdamond = tmp_path / "kdamonds" / "0"
    _write(kdamond / "state", "on")
    scheme = kdamond / "contexts" / "0" / "schemes" / "0"
    _write(scheme / "action", "pageout")
    _write(scheme / "quotas" / "ms", "50")
    _write(scheme / "quotas" / "reset_interval_ms", "1000")
    _write(tmp_path / "kdamonds" / "nr_kdamonds", "2")
    _write(tmp_path / "kdamonds" / "1" / "state", "off")
    assert run_bench.damon_status(tmp_path) == (
        "on: pageout (quota 50 ms per 1000 ms); off: monitoring only")


def test_no_kdamond_configured(tmp_path):
    (tmp_path / "kdamonds").mkdir()
    assert run_bench.damon_status(tmp_path) == "no kdamond"
