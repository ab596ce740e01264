#!/usr/bin/env bash
# First half of the GPU check: gathers here, into the git-ignored folder .gpu-check/, all
# that Tools/bench/gpu-check.sh needs on a machine without Swift: a release `lorafuse` with
# the Swift runtime linked in (--static-swift-stdlib), its SPIR-V resource bundle, the shared
# libraries it links that a bare machine may lack, the small fixtures, and the Vulkan loader
# package (libvulkan1) to unpack there. Then, on the device tool:
#   run(command: "bash Tools/bench/gpu-check.sh", carry: [".gpu-check"], timeout_s: 560)
set -euo pipefail
cd "$(dirname "$0")/../.."
source Tools/setup/system-packages.sh
lorafuse_require_packages "to build the release binary" "${LORAFUSE_BUILD_PACKAGES[@]}" libvulkan-dev
lorafuse_sync_vulkan_headers
out=.gpu-check
rm -rf "$out" && mkdir -p "$out/bin" "$out/lib" "$out/debs" "$out/fixtures"

echo "gpu-check-prepare: release build (static Swift runtime)"
swift build -c release --static-swift-stdlib --product lorafuse
bin=$(swift build -c release --show-bin-path)
cp "$bin/lorafuse" "$out/bin/"
# Symbols and the static runtime's ICU data are most of its size; the device call carries
# 64 MiB with the tree, so it travels stripped and xz-compressed (gpu-check.sh unpacks it).
strip "$out/bin/lorafuse"
xz -T2 -6 "$out/bin/lorafuse"
cp -R "$bin"/LoRAFuse_LoRAFuseVulkan.resources "$out/bin/"
# Shared libraries beyond the C library (SQLite, zlib, …): carried, found through LD_LIBRARY_PATH.
ldd "$bin/lorafuse" | awk '/=> \// {print $3}' | grep -vE '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' | while read -r lib; do
    cp -L "$lib" "$out/lib/"
done

echo "gpu-check-prepare: the Vulkan loader package"
mkdir -p /tmp/gpu-check-apt/partial
apt_options=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/gpu-check-apt)
apt-get "${apt_options[@]}" update -qq
(cd "$out/debs" && apt-get "${apt_options[@]}" download libvulkan1 >/dev/null)

echo "gpu-check-prepare: fixtures"
cp -R Tests/Fixtures/flux/dev-tiny "$out/fixtures/"
cp Tests/Fixtures/lora/all.peft.safetensors Tests/Fixtures/lora/partial.peft.safetensors "$out/fixtures/"
cp -R Tests/Fixtures/pipeline/flux-tiny "$out/fixtures/"
cp Tests/Fixtures/pipeline/generate-dev.safetensors "$out/fixtures/"
du -sh "$out"
size=$(du -sm "$out" | cut -f1)
[ "$size" -lt 60 ] || { echo "gpu-check-prepare: $out is $size MiB, over what a device call carries (64 MiB with the tree)"; exit 1; }
echo "gpu-check-prepare: ready; carry .gpu-check and run Tools/bench/gpu-check.sh there"
