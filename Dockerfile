# Multi-stage build of offerd on Debian 12. The build stage installs dependencies with the
# same script developers and CI use; the runtime stage carries only the shared libraries the
# binaries link (FAISS and RocksDB are linked statically; BLAS/LAPACK come from OpenBLAS).
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j"$(nproc)" \
      --target offerd offerctl

FROM debian:12 AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends \
      libabsl20220623 libgrpc++1.51 libgrpc29 libprotobuf32 libc-ares2 libre2-9 libssl3 \
      libopenblas0-pthread libgomp1 libsnappy1v5 liblz4-1 libzstd1 libbz2-1.0 zlib1g \
      libcivetweb1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/offerd --create-home offerd
COPY --from=build /src/build/bin/offerd /src/build/bin/offerctl /usr/local/bin/
USER offerd
ENV OMP_NUM_THREADS=1
VOLUME ["/var/lib/offerd"]
EXPOSE 50051 50052
ENTRYPOINT ["/usr/local/bin/offerd", "--snapshot_root=/var/lib/offerd/snapshots", \
            "--db_path=/var/lib/offerd/db"]
