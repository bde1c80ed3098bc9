"""run_bench.py's report: what the kernel's DAMON does (it moves the tail latencies), and targets judged
on the medians of repeated steps."""
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


def _step(rpc: str, rate: float, p99: float, errors: int = 0) -> dict:
    return {"rpc": rpc, "offered_rps": rate, "achieved_rps": rate, "latency_ms": {"p99": p99},
            "errors": {"UNAVAILABLE": errors} if errors else {}}


def test_repeated_target_steps_are_summarized_by_their_medians():
    steps = [_step("health", 1000, 1.0), _step("recommend", 1000, 1.5),
             _step("health", 1000, 2.0), _step("recommend", 1000, 9.0),
             _step("health", 1000, 0.5), _step("recommend", 1000, 1.8, errors=2)]
    rep = run_bench.summarize_repeats(steps, 1000)
    assert rep["runs"] == 3
    assert rep["recommend_p99_ms"] == [1.5, 9.0, 1.8]
    assert rep["recommend_p99_median"] == 1.8   # one noisy run does not decide
    assert rep["floor_p99_median"] == 1.0
    assert rep["ratio_median"] == 3.6          # ratios 1.5, 4.5, 3.6
    assert rep["errors"] == 2


def test_targets_use_the_repeated_medians_and_errors_fail_them():
    def report(rep: dict) -> dict:
        return {"stages": {"retrieval": []},
                "load": {"100000": {"sweep": {"steps": [_step("recommend", 1000, 7.0)]}, "repeats": rep}}}

    ok = run_bench.summarize_repeats([_step("health", 1000, 1.0), _step("recommend", 1000, 1.9),
                                      _step("health", 1000, 1.0), _step("recommend", 1000, 2.4),
                                      _step("health", 1000, 1.0), _step("recommend", 1000, 1.7)], 1000)
    [target] = run_bench.evaluate_targets(report(ok))
    assert target["target"] == "100k: p99 <= 2 ms at 1000 rps"
    assert target["met"], target  # median 1.9 ms, although the sweep's single step saw 7 ms
    assert "p99 median 1.90 ms (1.70–2.40)" in target["measured"]
    assert "sweep step 7.00 ms" in target["measured"]

    failing = dict(ok, errors=1)
    [target] = run_bench.evaluate_targets(report(failing))
    assert not target["met"]
