# offerd: the two commands are `make demo` and `make test`. See README.md.
PYTHON    ?= /usr/bin/python3
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS      ?= 2
VAR       ?= var

export PYTHON

.PHONY: all deps build py-stubs test test-cpp test-py test-sanitize bench-swap bench bench-quick demo clean help

all: build

help:
	@echo "make demo   - install deps, build, build demo data under $(VAR)/, run offerd"
	@echo "make test   - install deps, build, run every C++ (ctest) and Python (pytest) test"
	@echo "make build  - configure and build into $(BUILD_DIR)/ (binaries in $(BUILD_DIR)/bin)"
	@echo "make test-sanitize - unit tests under ASan+UBSan, concurrency tests under TSan"
	@echo "make bench-swap    - hot-swap memory/latency benchmark on a 100k-offer bundle"
	@echo "make bench         - bundles of 1k..1M offers, stage benchmarks, load sweeps (< 30 min)"
	@echo "make bench-quick   - the same on 1k and 10k offers, short steps (< 5 min)"

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD_DIR) -j$(JOBS)
	$(MAKE) --no-print-directory py-stubs

# Python gRPC stubs, generated with the system protoc and Debian's grpc_python_plugin (the
# protoc bundled with Debian's grpc_tools is too old for proto3 `optional`). The health and
# reflection stubs are top-level modules so they do not collide with the `grpc` package.
py-stubs:
	mkdir -p $(BUILD_DIR)/py
	protoc -Iproto --python_out=$(BUILD_DIR)/py --grpc_python_out=$(BUILD_DIR)/py \
	  --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \
	  proto/offerd/v1/offer_service.proto proto/offerd/v1/admin_service.proto
	protoc -Iproto/grpc/health/v1 -Iproto/grpc/reflection/v1alpha \
	  --python_out=$(BUILD_DIR)/py --grpc_python_out=$(BUILD_DIR)/py \
	  --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \
	  proto/grpc/health/v1/health.proto proto/grpc/reflection/v1alpha/reflection.proto

test: build
	BUILD_DIR=$(BUILD_DIR) bash scripts/run-tests.sh

test-cpp:
	BUILD_DIR=$(BUILD_DIR) bash scripts/run-tests.sh cpp

test-py:
	BUILD_DIR=$(BUILD_DIR) bash scripts/run-tests.sh py

# Unit tests under ASan + UBSan and the concurrency tests under TSan (separate build dirs).
test-sanitize: deps
	JOBS=$(JOBS) bash scripts/test-sanitize.sh

# Hot-swap cost on a 100k-offer bundle (memory, swap time, p99 while swapping).
bench-swap: build
	OMP_NUM_THREADS=1 $(BUILD_DIR)/bin/swap_bench --offers=100000 --seconds=8

# Stage micro-benchmarks, open-loop load sweeps vs the Health/Check floor, results and plots in
# benchmarks/results/<date>.{json,md,png}; bundles are built once under $(VAR)/bench/.
bench: build
	BUILD_DIR=$(BUILD_DIR) VAR=$(VAR) bash scripts/bench.sh

bench-quick: build
	BUILD_DIR=$(BUILD_DIR) VAR=$(VAR) bash scripts/bench.sh --quick

# Bulk load of 1M synthetic users by SST ingestion: users/second of offerctl's and offerd's
# halves (median of 3 runs).
.PHONY: bench-ingest
bench-ingest: build
	$(BUILD_DIR)/bin/ingest_bench --users=1000000 --runs=3

demo: build
	BUILD_DIR=$(BUILD_DIR) VAR=$(VAR) bash scripts/demo.sh

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan
