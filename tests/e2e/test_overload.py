"""Overload end to end, through the C++ load generator: far above capacity offerd refuses the
excess at once (RESOURCE_EXHAUSTED) and answers what it admits within its queue bound. The
failure this guards against: calls piling up inside gRPC, unseen by admission control, until
their deadlines pass (what happens when the thread that reads calls is busy computing them:
before the inline fast path took the calls already waiting, a lone call at a time, 3% of the
calls were answered here)."""
from __future__ import annotations

import json
import os
import subprocess

from tests.e2e.offerd_process import BUILD_DIR, start_offerd

LOADGEN = BUILD_DIR / "bin" / "loadgen"


def test_far_above_capacity_the_excess_is_refused_at_once(world, tmp_path):
    assert LOADGEN.exists(), f"{LOADGEN} is missing: run `make build` first"
    proc = start_offerd(tmp_path, world["snapshot_root"], tmp_path / "db",
                        [f"--ingest={world['users_file']}", "--max_in_flight=8",
                         "--max_queue_wait_ms=20", "--worker_threads=1"])
    try:
        out = tmp_path / "loadgen.json"
        # Open loop at 12,000/s for 2 s: about twice what one worker serves here.
        subprocess.run([str(LOADGEN), f"--target=127.0.0.1:{proc.port}",
                        f"--users_file={world['users_file']}", "--rates=12000",
                        "--rpcs=recommend", "--duration_s=2", "--warmup_s=0.5",
                        "--deadline_ms=1000", f"--out={out}"],
                       check=True, capture_output=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
        step = json.loads(out.read_text())["steps"][0]
    finally:
        assert proc.stop() == 0
    errors = step["errors"]
    sent = step["sent"]
    assert step["ok"] > 0, step
    # The excess is refused at once...
    assert errors.get("RESOURCE_EXHAUSTED", 0) > 0.2 * sent, step
    # ...not left to wait for its deadline...
    assert errors.get("DEADLINE_EXCEEDED", 0) <= 0.01 * sent, step
    # ...and admitted calls are answered within the queue bound plus a service time, far inside
    # the 1 s deadline (generous: the client shares the machine's cores).
    assert step["latency_ms"]["p99"] < 250, step
