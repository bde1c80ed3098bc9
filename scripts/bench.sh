#!/usr/bin/env bash
# `make bench` / `make bench-quick`: benchmark bundles (var/bench/), stage micro-benchmarks,
# open-loop load sweeps against the Health/Check floor, and the report in benchmarks/results/.
# Usage: scripts/bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
VAR=${VAR:-var}
PYTHON=${PYTHON:-/usr/bin/python3}
export OMP_NUM_THREADS=1
exec "$PYTHON" benchmarks/run_bench.py --build-dir "$BUILD_DIR" --var "$VAR/bench" "$@"
