#!/usr/bin/env bash
# `lorafuse serve` on the toy world, CPU backend, release build (Tools/bench/serve_bench.py):
#  - latency of a served generation against `lorafuse generate` of the same request (the anchor);
#  - jobs/second with 1, 2 and 4 `lorafuse worker` processes on one PostgreSQL queue (the
#    machine's PostgreSQL, started as Tools/test.sh starts it).
# OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are unset, as for every benchmark here.
#   usage: Tools/bench/serve-benchmark.sh [--repeat 5] [--jobs 40] [--steps 20] [--workers 1,2,4]
set -euo pipefail
cd "$(dirname "$0")/../.."
source Tools/setup/system-packages.sh
lorafuse_require_packages "the shared queue's database" postgresql
lorafuse_start_postgres
swift build -c release --product lorafuse > /dev/null
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 Tools/bench/serve_bench.py .build/release/lorafuse "$POSTGRES_TEST_URL" "$@"
