#!/usr/bin/env bash
# Builds the libFuzzer targets (Tools/fuzz/Package.swift, with the fuzzer and address
# sanitizers) and runs each for a fixed time from a seed corpus made from the test
# fixtures. Crashes are written to .build-fuzz/crashes/TARGET/ and make this script fail.
#   usage: Tools/fuzz/run.sh [SECONDS_PER_TARGET (default 60)] [TARGET...]
# FUZZ_RUNS=N instead runs N inputs per target from a fixed seed (CI: the same inputs every
# time, so a red CI means a regression, not a lucky draw).
# The corpora grow in .build-fuzz/corpus/TARGET/ between runs. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
shift || true
all=(FuzzSafeTensorsHeader FuzzGGUFHeader FuzzFluxConfig FuzzTokenizerJSON FuzzCLIPVocabMerges FuzzSentencePiece FuzzLoRAKeys)
targets=("${@:-${all[@]}}")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# (gold warns once per ASan helper symbol that it cannot export: harmless, filtered out)
swift build --package-path Tools/fuzz --scratch-path .build-fuzz --sanitize fuzzer --sanitize address 2>&1 \
    | { grep -v "Cannot export local symbol" || true; }
bin="$(swift build --package-path Tools/fuzz --scratch-path .build-fuzz --sanitize fuzzer --sanitize address --show-bin-path)"
python3 Tools/fuzz/make_corpus.py .build-fuzz/corpus

status=0
for target in "${targets[@]}"; do
    mkdir -p ".build-fuzz/corpus/$target" ".build-fuzz/crashes/$target"
    if [ -n "${FUZZ_RUNS:-}" ]; then echo "== $target: $FUZZ_RUNS inputs from seed 1"; else echo "== $target: ${seconds}s"; fi
    # -rss_limit_mb: an input that makes a parser allocate past 2 GB is a finding too.
    if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS" -seed=1); else limit=(-max_total_time="$seconds"); fi
    if ! "$bin/$target" ".build-fuzz/corpus/$target" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 \
            -artifact_prefix=".build-fuzz/crashes/$target/" -print_final_stats=1 2>".build-fuzz/$target.log"; then
        echo "$target: FAILED (see .build-fuzz/$target.log and .build-fuzz/crashes/$target/)"
        tail -30 ".build-fuzz/$target.log"
        status=1
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^Done" ".build-fuzz/$target.log" || true
done
exit $status
