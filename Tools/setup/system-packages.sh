# Sourced by Tools/demo.sh and Tools/test.sh: installs the Debian/Ubuntu packages a step
# needs when they are missing, and keeps the Vulkan target's build in step with the headers.

# lorafuse_require_packages WHY PACKAGE...
# Installs the listed packages that dpkg does not have (apt-get, through sudo when not root),
# with one line saying what and why; prints nothing when every one is installed.
lorafuse_require_packages() {
    local why=$1
    shift
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "lorafuse: not a Debian/Ubuntu system; make sure these are installed ($why): $*" >&2
        return 0
    fi
    local missing=() package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "lorafuse: missing ${missing[*]} ($why); as root, run: apt-get install ${missing[*]}" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    echo "lorafuse: installing ${missing[*]} ($why)" >&2
    local log
    log=$(mktemp "${TMPDIR:-/tmp}/lorafuse-apt.XXXXXX")
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update &&
           "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "lorafuse: apt-get could not install ${missing[*]} (log above)" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# The Vulkan backend compiles to a stub when /usr/include/vulkan/vulkan.h is missing
# (Backends/Vulkan/CVulkan/include/module.modulemap). Swift's incremental build does not
# notice the header appearing or going, so the Vulkan sources are touched when its
# presence differs from the last build's (or no earlier run of these scripts recorded it).
lorafuse_sync_vulkan_headers() {
    local stamp=.build/lorafuse-vulkan-headers state=absent
    [ -f /usr/include/vulkan/vulkan.h ] && state=present
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$state" ]; then
        touch Backends/Vulkan/CVulkan/loader.c Backends/Vulkan/Sources/*.swift
    fi
    mkdir -p .build
    echo "$state" >"$stamp"
}

# What compiling LoRAFuse needs: zlib for PNG output, SQLite for the LoRA pool (GRDB).
LORAFUSE_BUILD_PACKAGES=(zlib1g-dev libsqlite3-dev)
# What the whole test suite needs besides: the Vulkan loader and headers, Mesa's lavapipe
# (a CPU Vulkan device, so the Vulkan tests run without a GPU), glslang and SPIRV-Tools for
# the shader tests, OpenBLAS for the CPU backend's BLAS path, PostgreSQL for the shared job
# queue's tests (lorafuse_start_postgres).
LORAFUSE_TEST_PACKAGES=(libvulkan-dev mesa-vulkan-drivers glslang-tools glslang-dev spirv-tools libopenblas0 vulkan-validationlayers postgresql)

# lorafuse_start_postgres
# Starts the machine's PostgreSQL cluster (Debian's postgresql package) when it is down, makes
# a `lorafuse` role and a `lorafuse_test` database when missing, and exports
# POSTGRES_TEST_URL, the URL the shared-queue tests (`lorafuse serve --queue postgres://…`,
# `lorafuse worker`) run against. Each test makes a schema of its own in that database.
lorafuse_start_postgres() {
    local sudo=() as_postgres cluster
    [ "$(id -u)" != 0 ] && sudo=(sudo)
    if command -v runuser >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then as_postgres=(runuser -u postgres --); else as_postgres=(sudo -u postgres); fi
    cluster=$(pg_lsclusters -h 2>/dev/null | head -1)
    if [ -z "$cluster" ]; then
        echo "lorafuse: no PostgreSQL cluster (pg_lsclusters lists none); install the postgresql package" >&2
        return 1
    fi
    set -- $cluster
    if [ "$4" != online ]; then
        "${sudo[@]}" pg_ctlcluster "$1" "$2" start >&2
    fi
    local port=$3
    "${as_postgres[@]}" psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'lorafuse'" | grep -q 1 ||
        "${as_postgres[@]}" psql -p "$port" -qc "CREATE ROLE lorafuse LOGIN PASSWORD 'lorafuse'" >&2
    "${as_postgres[@]}" psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'lorafuse_test'" | grep -q 1 ||
        "${as_postgres[@]}" psql -p "$port" -qc "CREATE DATABASE lorafuse_test OWNER lorafuse" >&2
    export POSTGRES_TEST_URL="postgres://lorafuse:lorafuse@127.0.0.1:$port/lorafuse_test"
}
