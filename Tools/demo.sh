#!/usr/bin/env bash
# Runs `lorafuse demo` (the toy world's fusion grid, written to lorafuse-demo.png) on a
# machine that has Swift 6: installs the few system packages the build needs when they are
# missing, then builds and runs. Extra arguments go to `lorafuse demo` (e.g. --backend vulkan).
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/setup/system-packages.sh
lorafuse_require_packages "zlib and SQLite headers, to build LoRAFuse" "${LORAFUSE_BUILD_PACKAGES[@]}"
lorafuse_sync_vulkan_headers
swift run lorafuse demo "$@"
