#!/usr/bin/env bash
# Regenerates the server stubs of `lorafuse serve` from its OpenAPI document:
#   Sources/LoRAFuseServe/openapi.yaml  ->  Sources/LoRAFuseServe/Generated/*.swift
# with swift-openapi-generator (Tools/serve/openapi-generator, built into .build-openapi).
# The generated code is committed, so building LoRAFuse never builds the generator; CI runs
# this script with --check, which fails when openapi.yaml changed and the code was not regenerated.
#   usage: Tools/serve/generate-openapi.sh [--check]   (--check: fail if the committed code differs)
set -euo pipefail
cd "$(dirname "$0")/../.."
serve=Sources/LoRAFuseServe
swift build --package-path Tools/serve/openapi-generator --scratch-path .build-openapi --product swift-openapi-generator >/dev/null
generator="$(swift build --package-path Tools/serve/openapi-generator --scratch-path .build-openapi --show-bin-path)/swift-openapi-generator"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$generator" generate "$serve/openapi.yaml" --config "$serve/openapi-generator-config.yaml" --output-directory "$out" \
    >"$out.log" 2>&1 || { cat "$out.log" >&2; rm -f "$out.log"; exit 1; }
rm -f "$out.log"
# The generator writes every file it may produce (Client.swift empty, with no client mode).
find "$out" -name '*.swift' -empty -delete
if [ "${1:-}" = "--check" ]; then
    diff -r "$serve/Generated" "$out" && echo "generate-openapi: $serve/Generated is up to date"
    exit
fi
rm -rf "$serve/Generated"
mkdir -p "$serve/Generated"
cp "$out"/* "$serve/Generated/"
echo "generate-openapi: wrote $(ls "$serve/Generated" | wc -l) files to $serve/Generated"
