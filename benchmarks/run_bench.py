"""`make bench` / `make bench-quick`: bundles, stage micro-benchmarks, load sweeps, the report.

    /usr/bin/python3 benchmarks/run_bench.py [--quick] [--build-dir build] [--var var/bench]

Writes benchmarks/results/<date>[-quick].json (every figure), .md (tables, targets) and PNG
plots: latency percentiles vs offered load with the Health/Check floor, and recall vs latency
per index. Servers run with OMP_NUM_THREADS=1 on loopback; the load generator shares the two
cores with the server, so every gRPC figure says which client produced it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# Mode -> catalog sizes, offered rates (requests/s; "max" = closed loop), seconds per step.
MODES: dict[str, dict[str, Any]] = {
    "full": {"sizes": [1000, 10000, 100000, 1000000], "duration_s": 4, "warmup_s": 1,
             "rates": {1000: [200, 1000, 2000, 4000], 10000: [200, 1000, 2000, 4000],
                       100000: [200, 500, 1000, 2000], 1000000: [200, 500, 1000]},
             "min_time": 0.3, "hnsw_max_offers": 100000, "repeats": 5},
    "quick": {"sizes": [1000, 10000], "duration_s": 2, "warmup_s": 0.5,
              "rates": {1000: [200, 1000], 10000: [200, 1000]},
              "min_time": 0.05, "hnsw_max_offers": 10000, "repeats": 3},
}
# The offered rate each latency target is judged at. One 4-second step is too noisy on a
# shared 2-core VM (the floor's own p99 moves 0.6-9.7 ms between steps), so these steps run
# `repeats` more times, Health and Recommend interleaved, and the targets use the medians.
TARGET_RATES = {10000: 200, 100000: 1000, 1000000: 500}
LOADGEN_CLIENT = "C++ async gRPC loadgen (1 sender + 1 completion thread, 4 channels) on the same 2 cores"


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1),
            "kernel": platform.release(), "os": "Debian 12", "faiss": "1.7.3 (Debian, generic x86-64)",
            "damon": damon_status()}


def damon_status(admin: Path = Path("/sys/kernel/mm/damon/admin")) -> str:
    """What the kernel's DAMON does, e.g. "on: pageout (quota 50 ms per 1000 ms)"; "absent".

    A DAMON scheme that walks cold memory (a VM host's proactive reclaim) runs kdamond for up
    to its time quota, and with PREEMPT_NONE nothing else runs on that core meanwhile: on the
    2-core VM it lifted the 1M server's p99 from ~1.6 ms (DAMON off) to 6-10 ms. Results are
    only comparable with this recorded.
    """
    kdamonds = admin / "kdamonds"
    if not kdamonds.is_dir():
        return "absent"

    def read(path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return "?"

    parts = []
    for kdamond in sorted((p for p in kdamonds.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name)):
        if read(kdamond / "state") == "?":
            parts.append("unreadable (needs root)")
            continue
        schemes = []
        for scheme in sorted(kdamond.glob("contexts/*/schemes/[0-9]*")):
            schemes.append(f"{read(scheme / 'action')} (quota {read(scheme / 'quotas/ms')} ms per "
                           f"{read(scheme / 'quotas/reset_interval_ms')} ms)")
        parts.append(f"{read(kdamond / 'state')}: {', '.join(schemes) or 'monitoring only'}")
    return "; ".join(parts) or "no kdamond"


def proc_status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """offerd on loopback over one snapshot root, with a fresh RocksDB."""

    def __init__(self, build: Path, root: Path, users: Path, work: Path):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        self.port_file = work / "port"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.log = open(work / "offerd.log", "w")
        t0 = time.time()
        self.proc = subprocess.Popen(
            [str(build / "bin" / "offerd"), "--listen=127.0.0.1:0", "--admin_listen=127.0.0.1:0",
             "--metrics_listen=", f"--snapshot_root={root}", f"--db_path={work / 'db'}",
             f"--ingest={users}", f"--port_file={self.port_file}", "--snapshot_poll_ms=0",
             "--log_level=warning"], stdout=self.log, stderr=self.log, env=env)
        while not self.port_file.exists() or not self.port_file.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"offerd exited {self.proc.returncode}; see {work / 'offerd.log'}")
            if time.time() - t0 > 300:
                raise RuntimeError("offerd did not start within 300 s")
            time.sleep(0.1)
        self.startup_s = time.time() - t0
        self.addr = f"127.0.0.1:{self.port_file.read_text().strip()}"
        self.rss_mb_loaded = proc_status_kb(self.proc.pid, "VmRSS") / 1024

    def stop(self) -> dict[str, float]:
        peak = proc_status_kb(self.proc.pid, "VmHWM") / 1024
        rss = proc_status_kb(self.proc.pid, "VmRSS") / 1024
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        return {"rss_mb_after_load": round(self.rss_mb_loaded, 1), "rss_mb_after_load_test": round(rss, 1),
                "rss_mb_peak": round(peak, 1), "startup_s": round(self.startup_s, 1)}


def loadgen(build: Path, server: Server, users: Path, rates: list, rpcs: str, mode: dict,
            extra: list[str] | None = None) -> dict:
    cmd = [str(build / "bin" / "loadgen"), f"--target={server.addr}", f"--users_file={users}",
           f"--rates={','.join(str(r) for r in rates)}", f"--rpcs={rpcs}",
           f"--duration_s={mode['duration_s']}", f"--warmup_s={mode['warmup_s']}",
           f"--server_pid={server.proc.pid}", *(extra or [])]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    sys.stderr.write(result.stderr)
    return json.loads(result.stdout)


def run_pipeline_bench(build: Path, roots: list[str], users: Path, mode: dict, work: Path) -> dict:
    out = work / "pipeline_bench.json"
    cmd = [str(build / "bin" / "pipeline_bench"), f"--roots={','.join(roots)}",
           f"--users_file={users}", f"--scratch_dir={work / 'pipeline-scratch'}",
           f"--hnsw_max_offers={mode['hnsw_max_offers']}",
           f"--benchmark_min_time={mode['min_time']}", f"--benchmark_out={out}",
           "--benchmark_out_format=json"]
    log("stage micro-benchmarks: " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                   stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    shutil.rmtree(work / "pipeline-scratch", ignore_errors=True)
    return data


def us(bench: dict) -> float:
    """CPU µs per iteration of a Google Benchmark entry."""
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[bench.get("time_unit", "ns")]
    return bench["cpu_time"] * scale


def summarize_repeats(steps: list[dict], rate: float) -> dict:
    """Medians over repeated runs at one rate: `steps` are loadgen steps, Health (the floor) and
    Recommend interleaved. Each run's ratio pairs a Recommend step with the Health step just
    before it."""
    recommend = [s for s in steps if s["rpc"] == "recommend"]
    floor = [s for s in steps if s["rpc"] == "health"]
    p99 = [s["latency_ms"]["p99"] for s in recommend]
    floor_p99 = [s["latency_ms"]["p99"] for s in floor]
    ratios = [r / f for r, f in zip(p99, floor_p99) if f > 0]
    return {"rate": rate, "runs": len(recommend),
            "recommend_p99_ms": p99, "floor_p99_ms": floor_p99,
            "recommend_p99_median": statistics.median(p99) if p99 else None,
            "floor_p99_median": statistics.median(floor_p99) if floor_p99 else None,
            "ratio_median": statistics.median(ratios) if ratios else None,
            "errors": sum(sum(s["errors"].values()) for s in recommend)}


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "-"


def step_of(sweep: dict, rpc: str, rate: Any) -> dict | None:
    for s in sweep["steps"]:
        if s["rpc"] == rpc and s["offered_rps"] == rate:
            return s
    return None


def plots(report: dict, stem: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    loads = report["load"]
    if loads:
        fig, axes = plt.subplots(1, len(loads), figsize=(4.2 * len(loads), 3.8), squeeze=False)
        for ax, (size, entry) in zip(axes[0], loads.items()):
            for rpc, style in (("health", "--"), ("recommend", "-")):
                steps = [s for s in entry["sweep"]["steps"]
                         if s["rpc"] == rpc and s["offered_rps"] != "max"]
                x = [s["offered_rps"] for s in steps]
                for q, color in (("p50", "tab:blue"), ("p99", "tab:red"), ("p999", "tab:purple")):
                    ax.plot(x, [s["latency_ms"][q] for s in steps], style, color=color, marker="o",
                            markersize=3, label=f"{'Recommend' if rpc == 'recommend' else 'floor'} {q}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("offered load (requests/s)")
            ax.set_ylabel("latency (ms, from intended send)")
            ax.set_title(f"{int(size):,} offers")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Recommend vs Health/Check floor (open loop, " + LOADGEN_CLIENT.split(" (")[0] + ")",
                     fontsize=9)
        fig.tight_layout()
        path = stem.with_name(stem.name + "-latency.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)

    retrieval = report["stages"]["retrieval"]
    if retrieval:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        groups: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
        for r in retrieval:
            if r["index"] == "flat" or r.get("served"):
                continue
            family = r["index"].split("_")[0]
            groups.setdefault((r["offers"], family), []).append((r["us"], r["recall"], r["index"]))
        for (size, family), pts in sorted(groups.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if family == "ivf" else "s",
                    linestyle="-" if family == "ivf" else "--", label=f"{int(size):,} {family}")
        for r in retrieval:
            if r["index"] == "flat":
                ax.scatter([r["us"]], [1.0], marker="x", color="black")
                ax.annotate(f"flat {int(r['offers']):,}", (r["us"], 1.0), fontsize=6, rotation=60)
        ax.axhline(0.95, color="gray", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("CPU µs per single-query search (1 OpenMP thread)")
        ax.set_ylabel("recall@200 vs exact")
        ax.set_title("Retrieval: recall vs latency per index (user-tower queries)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = stem.with_name(stem.name + "-recall.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)
    return written


def summarize_stages(data: dict) -> dict:
    stages: dict[str, Any] = {"retrieval": [], "pipeline": [], "other": {}}
    for b in data["benchmarks"]:
        name = b["name"]
        if "error_occurred" in b and b["error_occurred"]:
            stages["other"][name] = {"error": b.get("error_message", "")}
            continue
        if name.startswith("retrieval/"):
            parts = name.split("/")
            stages["retrieval"].append({"offers": parts[1], "index": parts[2],
                                        "served": len(parts) > 3 and parts[3] == "served",
                                        "us": round(us(b), 1), "recall": round(b.get("recall_at_k", 0), 4),
                                        "index_mb": round(b.get("index_mb", 0), 1)})
        elif name.startswith("pipeline/"):
            stages["pipeline"].append({"offers": name.split("/")[1], "us": round(us(b), 1),
                                       "offers_served_per_call": round(b.get("offers_served_per_call", 0), 2),
                                       "errors": b.get("errors", 0), "rss_mb": round(b.get("rss_mb", 0), 1)})
        else:
            stages["other"][name] = {"us": round(us(b), 2)}
    return stages


def fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, (int, float)):
        return f"{x:,.{digits}f}"
    return str(x)


def markdown(report: dict, pngs: list[str]) -> str:
    m = report["machine"]
    lines = [f"# offerd benchmarks, {report['date']} ({report['mode']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, FAISS {m['faiss']}, "
             f"kernel DAMON {m.get('damon', 'not recorded')}. "
             f"Load: {LOADGEN_CLIENT}; latency from each request's intended send time.", ""]
    lines += ["## Recommend under load vs the Health/Check floor", "",
              "| offers | index | offered/s | floor p50 / p99 ms | Recommend p50 / p99 / p99.9 ms | p99 / floor p99 | "
              "achieved/s | errors | server µs CPU/call | client µs CPU/call |", "|" + "---|" * 10]
    for size, entry in report["load"].items():
        for s in entry["sweep"]["steps"]:
            if s["rpc"] != "recommend":
                continue
            f = step_of(entry["sweep"], "health", s["offered_rps"])
            errors = sum(s["errors"].values())
            lines.append(
                f"| {int(size):,} | {entry['index']} | {s['offered_rps']} | "
                f"{fmt(f['latency_ms']['p50']) if f else '-'} / {fmt(f['latency_ms']['p99']) if f else '-'} | "
                f"{fmt(s['latency_ms']['p50'])} / {fmt(s['latency_ms']['p99'])} / {fmt(s['latency_ms']['p999'])} | "
                f"{fmt(s.get('vs_floor', {}).get('p99_ratio', 0), 1)}x | {fmt(s['achieved_rps'], 0)} | {errors} | "
                f"{fmt(s.get('server_cpu_us_per_call', 0), 0)} | {fmt(s['client_cpu_us_per_call'], 0)} |")
    lines += ["", "Rows with offered `max` are closed loop (64 calls in flight): throughput, latency from "
              "the actual send. Floor `max` achieved/s is the ceiling this client sees for a trivial call.", ""]
    repeated = [(size, entry) for size, entry in report["load"].items() if entry.get("repeats")]
    if repeated:
        lines += ["## Target steps, repeated", "",
                  "Each target's rate again, Health and Recommend interleaved; the targets use the medians.", "",
                  "| offers | offered/s | runs | Recommend p99 median (range) ms | floor p99 median (range) ms | "
                  "median of per-run p99 / floor p99 | errors |", "|" + "---|" * 7]
        for size, entry in repeated:
            rep = entry["repeats"]
            lines.append(f"| {int(size):,} | {rep['rate']} | {rep['runs']} | {fmt(rep['recommend_p99_median'])} "
                         f"({_range(rep['recommend_p99_ms'])}) | {fmt(rep['floor_p99_median'])} "
                         f"({_range(rep['floor_p99_ms'])}) | {fmt(rep['ratio_median'], 1)}x | {rep['errors']} |")
        lines.append("")
    lines += ["## Memory and startup", "", "| offers | index | RSS after load MB | peak RSS MB | startup s |",
              "|---|---|---|---|---|"]
    for size, entry in report["load"].items():
        mem = entry["server"]
        lines.append(f"| {int(size):,} | {entry['index']} | {mem['rss_mb_after_load']} | {mem['rss_mb_peak']} | "
                     f"{mem['startup_s']} |")
    st = report["stages"]
    lines += ["", "## Stages (CPU µs per call, one thread, in-process)", "", "| stage | µs |", "|---|---|"]
    for name, v in st["other"].items():
        lines.append(f"| {name} | {fmt(v['us']) if 'us' in v else v.get('error')} |")
    for p in st["pipeline"]:
        lines.append(f"| whole Recommend path, {int(p['offers']):,} offers (served {p['offers_served_per_call']} "
                     f"offers/call) | {fmt(p['us'], 1)} |")
    lines += ["", "## Retrieval per index (K = 200, user-tower queries)", "",
              "| offers | index | µs / query | recall@200 | index MB |", "|---|---|---|---|---|"]
    for r in st["retrieval"]:
        lines.append(f"| {int(r['offers']):,} | {r['index']}{' (served)' if r['served'] else ''} | "
                     f"{fmt(r['us'], 1)} | {r['recall']:.3f} | {r['index_mb']} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    lines += [""] + [f"![{p}]({p})" for p in pngs] + [""]
    return "\n".join(lines)


def evaluate_targets(report: dict) -> list[dict]:
    targets = []
    load = report["load"]
    served_recall = {r["offers"]: r["recall"] for r in report["stages"]["retrieval"] if r["served"]}
    for r in report["stages"]["retrieval"]:
        if r["index"] == "flat":
            served_recall.setdefault(r["offers"], 1.0)

    def served(size: int) -> float | None:
        return served_recall.get(str(size))

    if "10000" in load:
        e = load["10000"]
        half = e.get("half_floor_step")
        floor_max = e.get("floor_max_rps", 0)
        if half:
            ok = half["latency_ms"]["p99"] < 5 and half["achieved_rps"] >= 0.95 * half["offered_rps"] \
                and sum(half["errors"].values()) == 0
            targets.append({"target": "10k: Recommend sustains >= 50% of the floor's max throughput with p99 < 5 ms",
                            "measured": f"floor max {floor_max:,.0f}/s; Recommend at {half['offered_rps']:,.0f}/s: "
                                        f"achieved {half['achieved_rps']:,.0f}/s, p99 {half['latency_ms']['p99']:.2f} ms, "
                                        f"errors {sum(half['errors'].values())}",
                            "met": ok})
        light = step_of(e["sweep"], "recommend", min(r for r in e["rates"]))
        rep = e.get("repeats")
        if rep and rep["ratio_median"] is not None:
            targets.append({"target": "10k: light-load p99 within 3x floor p99",
                            "measured": f"{rep['rate']}/s, {rep['runs']} runs: p99 median "
                                        f"{rep['recommend_p99_median']:.2f} ms ({_range(rep['recommend_p99_ms'])}), "
                                        f"floor median {rep['floor_p99_median']:.2f} ms; median ratio "
                                        f"{rep['ratio_median']:.1f}x",
                            "met": rep["ratio_median"] <= 3 and rep["errors"] == 0})
        elif light and "vs_floor" in light:
            ratio = light["vs_floor"]["p99_ratio"]
            targets.append({"target": "10k: light-load p99 within 3x floor p99",
                            "measured": f"{light['offered_rps']}/s: {light['latency_ms']['p99']:.2f} ms = {ratio:.1f}x floor",
                            "met": ratio <= 3})
        if served(10000) is not None:
            targets.append({"target": "10k: recall@K >= 0.95 vs exact", "measured": f"{served(10000):.3f}",
                            "met": served(10000) >= 0.95})
    for size, rate, bound in ((100000, 1000, 2.0), (1000000, 500, 5.0)):
        if str(size) not in load:
            continue
        s = step_of(load[str(size)]["sweep"], "recommend", rate)
        rep = load[str(size)].get("repeats")
        if rep and rep["recommend_p99_median"] is not None:
            sweep_p99 = f"; sweep step {s['latency_ms']['p99']:.2f} ms" if s else ""
            targets.append({"target": f"{size // 1000}k: p99 <= {bound:g} ms at {rate} rps",
                            "measured": f"{rep['runs']} runs: p99 median {rep['recommend_p99_median']:.2f} ms "
                                        f"({_range(rep['recommend_p99_ms'])}), floor median "
                                        f"{rep['floor_p99_median']:.2f} ms, errors {rep['errors']}{sweep_p99}",
                            "met": rep["recommend_p99_median"] <= bound and rep["errors"] == 0})
        elif s:
            targets.append({"target": f"{size // 1000}k: p99 <= {bound:g} ms at {rate} rps",
                            "measured": f"p99 {s['latency_ms']['p99']:.2f} ms, achieved {s['achieved_rps']:,.0f}/s, "
                                        f"errors {sum(s['errors'].values())}",
                            "met": s["latency_ms"]["p99"] <= bound and sum(s["errors"].values()) == 0})
        if served(size) is not None:
            targets.append({"target": f"{size // 1000}k: recall@200 >= 0.95", "measured": f"{served(size):.3f}",
                            "met": served(size) >= 0.95})
        if size == 1000000:
            mem = load[str(size)]["server"]
            targets.append({"target": "1M: memory reported",
                            "measured": f"RSS {mem['rss_mb_after_load']} MB after load, peak {mem['rss_mb_peak']} MB",
                            "met": True})
    return targets


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build")
    parser.add_argument("--var", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--skip-load", action="store_true", help="stage micro-benchmarks only")
    args = parser.parse_args(argv)
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    build: Path = args.build_dir.resolve()
    started = time.time()

    sizes = mode["sizes"]
    log(f"{mode_name}: bundles {sizes}")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_bundles.py"), "--out", str(args.var),
                    "--sizes", ",".join(str(s) for s in sizes)], check=True)
    bundles = json.loads((args.var / "bundles.json").read_text())
    users = Path(bundles["users_jsonl"])
    roots = [bundles["bundles"][str(s)]["snapshot_root"] for s in sizes]
    work = build / "bench"
    work.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {"date": dt.date.today().isoformat(), "mode": mode_name, "machine": machine(),
                              "load_client": LOADGEN_CLIENT, "bundles": bundles["bundles"], "load": {}}
    report["stages"] = summarize_stages(run_pipeline_bench(build, roots, users, mode, work))
    log(f"stages done at {time.time() - started:.0f} s")

    if not args.skip_load:
        for size in sizes:
            info = bundles["bundles"][str(size)]
            index = "flat" if info["type"] == "flat" else f"ivf{info['nlist']}/nprobe{info['nprobe']}"
            log(f"load sweep {size:,} offers ({index})")
            server = Server(build, Path(info["snapshot_root"]), users, work / f"server-{size}")
            try:
                rates = mode["rates"][size]
                sweep = loadgen(build, server, users, rates + ["max"], "health,recommend", mode)
                entry: dict[str, Any] = {"index": index, "rates": rates, "sweep": sweep}
                floor_max = step_of(sweep, "health", "max")
                if floor_max:
                    entry["floor_max_rps"] = floor_max["achieved_rps"]
                if size == 10000 and floor_max:
                    # The throughput target: half the floor's ceiling, open loop, p99 < 5 ms.
                    half = round(floor_max["achieved_rps"] / 2)
                    entry["half_floor_step"] = loadgen(build, server, users, [half], "recommend", mode)["steps"][0]
                if size == 10000 and not args.quick:
                    entry["with_events"] = loadgen(build, server, users, [500], "recommend", mode,
                                                   ["--events_ratio=0.3"])["steps"][0]
                if size in TARGET_RATES and mode["repeats"] > 0:
                    rate = TARGET_RATES[size]
                    steps = loadgen(build, server, users, [rate] * mode["repeats"], "health,recommend",
                                    mode)["steps"]
                    entry["repeats"] = summarize_repeats(steps, rate)
            finally:
                entry["server"] = server.stop()
            report["load"][str(size)] = entry
            log(f"  done at {time.time() - started:.0f} s")

    report["targets"] = evaluate_targets(report)
    report["elapsed_s"] = round(time.time() - started, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / (report["date"] + ("-quick" if args.quick else ""))
    pngs = plots(report, stem)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report, pngs))
    log(f"wrote {stem}.json, {stem}.md, {', '.join(pngs)} in {report['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
