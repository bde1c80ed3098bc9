"""Overload behaviour of offerd: latency of admitted Recommend calls stays bounded above
capacity because calls beyond --max_in_flight are shed fast with RESOURCE_EXHAUSTED.

    PYTHONPATH=.:build/py /usr/bin/python3 benchmarks/overload_bench.py --snapshot-root var/snapshots \\
        --users var/world/users.jsonl [--seconds 10]

Runs the built offerd twice on loopback with --max_in_flight=4: light load (2 closed-loop
clients) and overload (32 clients), and prints one JSON object: admitted p50/p99, shed share,
and the overload/light p99 ratio (medians are robust to the shared machine's noise).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from offerd.v1 import offer_service_pb2 as pb  # noqa: E402
from offerd.v1 import offer_service_pb2_grpc  # noqa: E402
from tests.e2e.offerd_process import start_offerd  # noqa: E402


def drive(addr: str, clients: int, seconds: float, users: list[str]) -> dict:
    latencies: list[float] = []
    shed = errors = 0
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(c: int) -> None:
        nonlocal shed, errors
        stub = offer_service_pb2_grpc.OfferServiceStub(grpc.insecure_channel(addr))
        i = c
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                stub.Recommend(pb.RecommendRequest(user_id=users[i % len(users)], num_offers=5),
                               timeout=5)
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)
            except grpc.RpcError as e:
                with lock:
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        shed += 1
                    else:
                        errors += 1
            i += clients

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0
    total = len(latencies) + shed + errors
    return {"clients": clients, "admitted": len(latencies), "shed": shed, "errors": errors,
            "shed_share": shed / total if total else 0, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshot-root", required=True)
    parser.add_argument("--users", required=True, help="users.jsonl to ingest")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-in-flight", type=int, default=4)
    args = parser.parse_args()
    users = [json.loads(line)["user_id"] for line in list(open(args.users))[1:2001]]
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_offerd(Path(tmp), Path(args.snapshot_root), Path(tmp) / "db",
                            [f"--ingest={args.users}", f"--max_in_flight={args.max_in_flight}"])
        try:
            light = drive(proc.addr, 2, args.seconds, users)
            overload = drive(proc.addr, 32, args.seconds, users)
        finally:
            proc.stop()
    print(json.dumps({"max_in_flight": args.max_in_flight, "light": light, "overload": overload,
                      "admitted_p99_ratio": overload["p99_ms"] / light["p99_ms"]
                      if light["p99_ms"] else None}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
