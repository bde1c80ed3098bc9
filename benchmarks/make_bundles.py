"""Benchmark bundles of 1k..1M offers, derived from a bundle the offline pipeline trained.

    /usr/bin/python3 benchmarks/make_bundles.py --out var/bench --sizes 1000,10000,100000,1000000

1. `python3 -m offline build` (synthetic world, CLV, two-tower, uplift, export) writes a real
   1,000-offer bundle with user tower and uplift heads, and users.jsonl: <out>/base/, <out>/world/.
2. Each catalog size N gets <out>/snapshots/<N>/b<N>/: the trained catalog replicated N / 1000
   times. Replica j of offer o keeps o's catalog row (new offer_id) and gets o's trained
   embedding plus Gaussian noise whose norm is the median distance of a trained offer to its
   nearest trained neighbour, re-normalised: a new offer sits as close to a trained one as
   trained offers sit to each other, so a large catalog keeps the geometry of the trained
   embeddings (concentrated: a few dominant directions) instead of uniform noise, and every
   model in the bundle still applies.
3. N <= 1000 serves a flat index; larger catalogs a prebuilt IVF index (nlist ~ 4 sqrt(N),
   at most 4096, k-means on 40 points per list) whose nprobe is the smallest reaching recall@K >= 0.96
   (a margin over the 0.95 target) on the users' stored embeddings; the tuning table goes to
   <out>/bundles.json.

Outputs are reused when the offline code and this script did not change.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NPROBES = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
TARGET_RECALL = 0.96


def code_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_base(out: Path, users: int) -> None:
    """Runs the offline pipeline once: <out>/world (users.jsonl) and <out>/base/base."""
    shutil.rmtree(out / "world", ignore_errors=True)
    shutil.rmtree(out / "base", ignore_errors=True)
    cmd = [sys.executable, "-m", "offline", "build", "--out", str(out / "world"), "--snapshot-root",
           str(out / "base"), "--users", str(users), "--version", "base",
           "--skip", "cohorts", "--skip", "evaluate"]
    print("make_bundles:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def user_queries(users_jsonl: Path, count: int, dim: int, fallback: np.ndarray) -> np.ndarray:
    """Stored user embeddings (the query distribution without the tower), else offer rows."""
    rows = []
    with open(users_jsonl, encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            emb = json.loads(line).get("embedding")
            if emb is not None and len(emb) == dim:
                rows.append(emb)
            if len(rows) >= count:
                break
    if not rows:
        rng = np.random.default_rng(5)
        return fallback[rng.integers(0, len(fallback), count)]
    q = np.asarray(rows, dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def nearest_neighbour_distance(emb: np.ndarray) -> float:
    """Median Euclidean distance of a (unit) row to its nearest other row."""
    x = emb.astype(np.float64)
    gram = x @ x.T
    np.fill_diagonal(gram, -np.inf)
    return float(np.median(np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram.max(axis=1)))))


def replicate(base_emb: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows 0..B-1 are the trained rows; row i >= B is a noisy copy of row i % B."""
    b, d = base_emb.shape
    noise_norm = nearest_neighbour_distance(base_emb)
    idx = np.arange(n) % b
    out = base_emb[idx].astype(np.float64)
    rng = np.random.default_rng(seed)
    if n > b:
        out[b:] += rng.standard_normal((n - b, d)) * (noise_norm / np.sqrt(d))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def write_offers(base_lines: list[str], base_ids: list[str], n: int, path: Path) -> None:
    b = len(base_lines)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            line = base_lines[i % b]
            if i >= b:
                oid = base_ids[i % b]
                line = line.replace(f'"offer_id":"{oid}"', f'"offer_id":"{oid}-r{i // b}"', 1)
            f.write(line)


def build_ivf(emb: np.ndarray, queries: np.ndarray, k: int) -> tuple[object, dict]:
    import faiss

    n, d = emb.shape
    nlist = int(min(4096, max(1, round(4 * np.sqrt(n)))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1234
    index.cp.niter = 15
    sample = min(n, nlist * 40)
    rng = np.random.default_rng(3)
    train = emb[np.sort(rng.choice(n, sample, replace=False))]
    t0 = time.time()
    index.train(train)
    index.add(emb)
    build_s = time.time() - t0
    exact = faiss.IndexFlatIP(d)
    exact.add(emb)
    kk = min(k, n)
    _, truth = exact.search(queries, kk)
    tuning = []
    chosen = None
    for nprobe in NPROBES:
        if nprobe > nlist:
            break
        index.nprobe = nprobe
        _, got = index.search(queries, kk)
        recall = float(np.mean([len(set(a) & set(t)) / kk for a, t in zip(got, truth)]))
        tuning.append({"nprobe": nprobe, "recall_at_k": round(recall, 4)})
        if chosen is None and recall >= TARGET_RECALL:
            chosen = nprobe
            if len(tuning) >= 3:  # a couple of points below are enough for the table
                break
    chosen = chosen or tuning[-1]["nprobe"]
    index.nprobe = chosen
    return index, {"type": "ivf", "nlist": nlist, "nprobe": chosen, "train_rows": sample,
                   "build_s": round(build_s, 1), "tuning_queries": len(queries), "tuning": tuning}


def make_bundle(out: Path, n: int, base_dir: Path, users_jsonl: Path) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    manifest = json.loads((base_dir / "MANIFEST.json").read_text())
    k = int(manifest.get("policy", {}).get("retrieval_k", 200))
    base_emb = np.load(base_dir / "offer_embeddings.npy")
    base_lines = (base_dir / "offers.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    base_ids = [json.loads(line)["offer_id"] for line in base_lines]
    root = out / "snapshots" / str(n)
    shutil.rmtree(root, ignore_errors=True)
    version = f"b{n}"
    tmp = root / f".tmp-{version}"
    tmp.mkdir(parents=True)
    t0 = time.time()
    emb = replicate(base_emb, n, seed=n)
    np.save(tmp / "offer_embeddings.npy", emb)
    write_offers(base_lines, base_ids, n, tmp / "offers.jsonl")
    shutil.copytree(base_dir / "models", tmp / "models")
    files = ["offers.jsonl", "offer_embeddings.npy"]
    files += [f"models/{p.name}" for p in sorted((tmp / "models").iterdir())]
    if (base_dir / "golden.json").exists():
        shutil.copy(base_dir / "golden.json", tmp / "golden.json")
        files.append("golden.json")
    if n <= 1000:
        index_section: dict = {"type": "flat"}
        info: dict = {"type": "flat"}
    else:
        queries = user_queries(users_jsonl, 512, emb.shape[1], emb)
        index, info = build_ivf(emb, queries, k)
        faiss.write_index(index, str(tmp / "index.faiss"))
        index_section = {"type": "ivf", "nlist": info["nlist"], "nprobe": info["nprobe"],
                         "file": "index.faiss"}
        files.append("index.faiss")
    manifest["version"] = version
    manifest["num_offers"] = n
    manifest["index"] = index_section
    manifest["files"] = {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size}
                         for f in files}
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    tmp.rename(root / version)
    info.update({"offers": n, "version": version, "snapshot_root": str(root),
                 "seconds": round(time.time() - t0, 1)})
    print(f"make_bundles: {n} offers -> {root / version} ({info['seconds']} s, index {index_section})",
          flush=True)
    return info


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--users", type=int, default=20000, help="users of the synthetic world")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp_path = out / "bundles.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    # The base world depends on the offline code; each derived bundle also on this script.
    digest = code_hash(sorted((ROOT / "offline").glob("*.py")))
    script = code_hash([Path(__file__).resolve()])
    if stamp.get("code") != digest or stamp.get("users") != args.users \
            or not (out / "base" / "base" / "MANIFEST.json").exists():
        build_base(out, args.users)
        stamp = {"code": digest, "users": args.users, "bundles": {}}
    users_jsonl = out / "world" / "users.jsonl"
    for n in [int(s) for s in args.sizes.split(",") if s]:
        have = stamp["bundles"].get(str(n))
        if have and have.get("script") == script \
                and (Path(have["snapshot_root"]) / have["version"] / "MANIFEST.json").exists():
            continue
        stamp["bundles"][str(n)] = make_bundle(out, n, out / "base" / "base", users_jsonl)
        stamp["bundles"][str(n)]["script"] = script
        stamp_path.write_text(json.dumps(stamp, indent=1))
    stamp["users_jsonl"] = str(users_jsonl)
    stamp_path.write_text(json.dumps(stamp, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
