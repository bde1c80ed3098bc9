#!/usr/bin/env bash
# `make test-sanitize`: the unit tests under AddressSanitizer + UndefinedBehaviorSanitizer and
# the concurrency tests under ThreadSanitizer. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1

echo "== ASan + UBSan: unit and integration tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOFFERD_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j"$JOBS" --target core_test store_test server_test jsonl_log_test metrics_test
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in core_test store_test server_test jsonl_log_test metrics_test; do
  build-asan/bin/$t --gtest_brief=1 2>&1 | grep -v '^{"ts"' || { echo "sanitize: $t failed under ASan/UBSan"; exit 1; }
done

echo "== TSan: concurrency tests"
# The concurrency tests of our code: hot swap (pinning, publishing, retiring on the loader
# thread, the watcher, canaries) and per-user caps under concurrent decisions.
# Not run under TSan, because the libraries they go through are not TSan-instrumented and hand
# data between their own threads through atomics TSan cannot see:
#  - tests through the gRPC transport (Debian's gRPC/Abseil: metadata buffers passed through
#    gRPC's queues show up as races between gRPC frames);
#  - concurrent RocksDB writes from several threads (RocksDB, linked statically, merges the
#    WriteBatches of concurrent writers in its group commit; the leader reading a follower's
#    batch shows up as a race). SwapUnderLoadInProcessTest does that, so it runs in ctest only.
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOFFERD_SANITIZE=thread >/dev/null
cmake --build build-tsan -j"$JOBS" --target server_test store_test
export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp halt_on_error=1 second_deadlock_stack=1"
build-tsan/bin/server_test --gtest_brief=1 \
  --gtest_filter='SnapshotManagerTest.*:WorkerPoolTest.*' 2>&1 | grep -v '^{"ts"' \
  || { echo "sanitize: server_test failed under TSan"; exit 1; }
build-tsan/bin/store_test --gtest_brief=1 --gtest_filter='RocksDbStoreTest.*' 2>&1 \
  | grep -v '^{"ts"' || { echo "sanitize: store_test failed under TSan"; exit 1; }
echo "sanitize: no reports"
