#!/usr/bin/env bash
# Runs the whole test suite on a machine that has Swift 6: installs the system packages the
# tests need when they are missing (Vulkan headers, loader and Mesa's CPU device, glslang,
# SPIRV-Tools, OpenBLAS, zlib, SQLite, PostgreSQL), starts PostgreSQL for the shared job
# queue's tests, then `swift test`. Extra arguments go to `swift test`
# (e.g. --filter Tokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/setup/system-packages.sh
lorafuse_require_packages "to build LoRAFuse and run every test, the Vulkan ones on Mesa's CPU device" \
    "${LORAFUSE_BUILD_PACKAGES[@]}" "${LORAFUSE_TEST_PACKAGES[@]}"
lorafuse_sync_vulkan_headers
lorafuse_start_postgres
swift test "$@"
