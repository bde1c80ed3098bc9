"""A real Prometheus server scrapes offerd's metrics endpoint (served by build/bin/metrics_demo)
and computes a latency quantile from the histogram, as the SRE dashboards will."""
from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.offerd_process import BUILD_DIR

METRICS_DEMO = BUILD_DIR / "bin" / "metrics_demo"
PROMETHEUS = Path(shutil.which("prometheus") or "/usr/bin/prometheus")
HISTOGRAM = "demo_request_duration_seconds"
T = TypeVar("T")


def _free_port() -> int:
    """A loopback port free right now (Prometheus cannot listen on port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _poll(what: str, probe: Callable[[], T | None], deadline_s: float,
          proc: subprocess.Popen, log: Path) -> T:
    """Calls `probe` until it returns a value, `proc` dies, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode} while waiting for "
                                 f"{what}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            value = probe()
            if value is not None:
                return value
        except (OSError, ValueError) as e:  # connection refused, bad JSON, ...
            last_error = repr(e)
        time.sleep(0.2)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what} ({last_error}):\n"
                         f"{log.read_text(errors='replace')[-4000:]}")


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[int]:
    """metrics_demo on a loopback port it picked; yields the port."""
    assert METRICS_DEMO.exists(), f"{METRICS_DEMO} is missing: build the metrics_demo target"
    port_file, log = tmp_path / "demo.port", tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(METRICS_DEMO), "--listen=127.0.0.1:0",
                                 f"--port_file={port_file}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        port = _poll("the demo's port file",
                     lambda: int(port_file.read_text()) if port_file.exists() else None,
                     30, proc, log)
        yield port
    finally:
        assert _stop(proc) == 0, log.read_text(errors="replace")


@dataclass
class PrometheusServer:
    base: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
    log: Path


@pytest.fixture
def prometheus(tmp_path: Path, demo: int) -> Iterator[PrometheusServer]:
    """A Prometheus server scraping the demo every second."""
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: run scripts/install-deps.sh"
    config = tmp_path / "prometheus.yml"
    # JSON is YAML.
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "metrics_demo",
                            "static_configs": [{"targets": [f"127.0.0.1:{demo}"]}]}],
    }))
    port, log = _free_port(), tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        _poll("Prometheus to be ready", lambda: True if _get(f"{base}/-/ready")[0] == 200 else None,
              60, proc, log)
        yield PrometheusServer(base, proc, log)
    finally:
        _stop(proc)


def _query(base: str, promql: str) -> list[dict]:
    status, body = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    reply = json.loads(body)
    assert status == 200 and reply["status"] == "success", body
    return reply["data"]["result"]


def test_exposition_parses_with_the_official_python_parser(demo: int) -> None:
    status, text = _get(f"http://127.0.0.1:{demo}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    histogram = families[HISTOGRAM]
    assert histogram.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in histogram.samples if s.name.endswith("_bucket")]
    assert buckets[-1][0] == "+Inf"
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), "bucket counts must be cumulative"
    count = next(s.value for s in histogram.samples if s.name == f"{HISTOGRAM}_count")
    assert count == counts[-1] > 0
    # The python client names counters without the _total suffix.
    assert families["demo_requests"].type == "counter"
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
                 "process_max_fds", "process_start_time_seconds", "process_threads",
                 "process_virtual_memory_bytes"):
        assert name in families, name
    assert _get(f"http://127.0.0.1:{demo}/healthz") == (200, "ok\n")
    assert _get(f"http://127.0.0.1:{demo}/readyz") == (200, "ok\n")


def test_prometheus_scrapes_and_computes_p99_from_the_histogram(
        prometheus: PrometheusServer) -> None:
    def target_up() -> bool | None:
        result = _query(prometheus.base, 'up{job="metrics_demo"}')
        return True if result and result[0]["value"][1] == "1" else None

    def p99() -> float | None:
        result = _query(prometheus.base,
                        f"histogram_quantile(0.99, sum(rate({HISTOGRAM}_bucket"
                        f'{{job="metrics_demo"}}[10s])) by (le))')
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    _poll("the demo target to be up", target_up, 60, prometheus.proc, prometheus.log)
    value = _poll("a p99 from the histogram", p99, 60, prometheus.proc, prometheus.log)
    # The demo observes latencies spread evenly over [1 ms, 10 ms]: the true p99 is 9.91 ms,
    # and linear interpolation inside the (5 ms, 10 ms] bucket gives about the same.
    assert 0.0085 <= value <= 0.010, value

    # Process metrics made it into the TSDB too.
    rss = _query(prometheus.base, 'process_resident_memory_bytes{job="metrics_demo"}')
    assert rss and float(rss[0]["value"][1]) > 1 << 20
