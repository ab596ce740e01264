#!/usr/bin/env bash
# Builds the DocC documentation of every library module (Sources/*/Documentation.docc and
# the doc comments) with swift-docc-plugin; any warning (a broken symbol link, say) fails.
# The archives land in .build/plugins/Swift-DocC/outputs/.
#   usage: Tools/docs.sh [MODULE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
    modules=(LoRAFuse LoRAFuseModels LoRAFuseFusion LoRAFuseRetrieval LoRAFusePipeline LoRAFuseVerification LoRAFuseToyWorld)
fi
for module in "${modules[@]}"; do
    echo "docs: $module"
    swift package generate-documentation --target "$module" --warnings-as-errors > /tmp/lorafuse-docs-$$.log 2>&1 || {
        grep -E "warning|error" /tmp/lorafuse-docs-$$.log >&2
        rm -f /tmp/lorafuse-docs-$$.log
        exit 1
    }
done
rm -f /tmp/lorafuse-docs-$$.log
echo "docs: all modules built without warnings (.build/plugins/Swift-DocC/outputs/)"
