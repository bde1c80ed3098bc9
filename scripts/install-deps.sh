#!/usr/bin/env bash
# Installs, with apt-get, exactly the Debian 12 packages offerd uses: the C++ toolchain and
# libraries, the Python packages of offline/ and of the tests, and the servers tests start
# (prometheus, redis). Idempotent: when everything is present it does nothing.
set -euo pipefail

PACKAGES=(
  # build toolchain
  build-essential cmake pkg-config git
  # C++ libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libfaiss-dev libopenblas-dev librocksdb-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcivetweb-dev
  nlohmann-json3-dev libeigen3-dev libboost-math-dev libssl-dev
  # Python: offline pipeline and tests
  python3 python3-numpy python3-scipy python3-pandas python3-torch python3-sklearn
  python3-matplotlib python3-faiss python3-grpcio python3-protobuf python3-pytest
  python3-prometheus-client python3-mpmath python3-yaml
  # servers and tools used by tests
  prometheus redis-server openssl curl procps
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install-deps: not root. Run as root:  sudo $0" >&2
    echo "  or install them yourself: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=()
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
# The prometheus package starts a system service on install; tests run their own servers.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  "${SUDO[@]}" systemctl stop prometheus || true
fi
echo "install-deps: done"
