#!/usr/bin/env bash
# Runs every C++ test (ctest) and every Python test (pytest). Fails if any test fails or is
# skipped: a skipped test is a failed test here (install-deps.sh installs what tests need).
# Usage: scripts/run-tests.sh [cpp|py|all]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
what=${1:-all}
export OMP_NUM_THREADS=1
status=0

if [[ $what == all || $what == cpp ]]; then
  log=$(mktemp)
  (cd "$BUILD_DIR" && ctest --output-on-failure -j2 --timeout 600) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if [[ $rc -ne 0 ]]; then
    echo "run-tests: ctest failed (exit $rc)"; status=1
  fi
  if grep -Eq '\*\*\*(Skipped|Not Run)|[0-9]+ tests? skipped| Skipped ' "$log"; then
    echo "run-tests: ctest skipped tests; a skipped test counts as a failure"; status=1
  fi
  rm -f "$log"
fi

if [[ $what == all || $what == py ]]; then
  OFFERD_BUILD_DIR=$(cd "$BUILD_DIR" && pwd) PYTHONPATH="$PWD:$PWD/$BUILD_DIR/py${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -m pytest -q -p no:cacheprovider tests || { echo "run-tests: pytest failed"; status=1; }
fi

exit $status
