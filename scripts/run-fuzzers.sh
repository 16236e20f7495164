#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-19 in build-fuzz and runs each one briefly over a seed
# corpus made from tests/fixtures/wire. Exits non-zero on a crash (the crashing input is left in
# build-fuzz/crashes/). FUZZ_SECONDS (default 10) sets the time per target.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
SECONDS_PER="${FUZZ_SECONDS:-10}"
CXX_BIN="${FUZZ_CXX:-clang++-19}"
# Stop at the first sanitizer report (the build also has -fno-sanitize-recover=all): libFuzzer
# then saves the input as a crash and this script fails. The caller's options come last and win.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
command -v "$CXX_BIN" >/dev/null || { echo "run-fuzzers: $CXX_BIN not installed (apt-get install clang-19 libclang-rt-19-dev)" >&2; exit 2; }

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_BIN" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMODELUX_BUILD_FUZZERS=ON -DMODELUX_BUILD_TESTS=OFF -DMODELUX_BUILD_BENCHMARKS=OFF \
  -DMODELUX_BUILD_EXAMPLES=OFF -DMODELUX_BUILD_PYTHON=OFF >/dev/null
cmake --build "$BUILD" -j"${FUZZ_JOBS:-2}" --target fuzz_response fuzz_stream fuzz_error fuzz_request

# Seeds: each fixture prefixed with the byte that selects its family (see fuzz/common.hpp:
# openai=0 azure=1 anthropic=2 gemini=3 cohere=4 bedrock=5), plus a split-size byte for streams.
FIX="$ROOT/tests/fixtures/wire"
fam_byte() { case "$1" in openai*) echo 0;; azure*) echo 1;; anthropic*) echo 2;; gemini*) echo 3;; cohere*) echo 4;; bedrock*) echo 5;; *) echo 0;; esac; }
for t in response stream error request; do rm -rf "$BUILD/corpus/$t"; mkdir -p "$BUILD/corpus/$t"; done
for f in "$FIX"/*; do
  [ -f "$f" ] || continue  # sub-folders (embeddings/) hold fixtures of other shapes
  b="$(basename "$f")"; n="$(fam_byte "$b")"
  { printf "\\x0$n"; cat "$f"; } > "$BUILD/corpus/response/$b"
  { printf "\\x0$n\\x07"; cat "$f"; } > "$BUILD/corpus/stream/$b"
  { printf "\\x0$n\\x1d"; printf 'retry-after: 3\n\n'; cat "$f"; } > "$BUILD/corpus/error/$b"
  { printf "\\x0$n"; cat "$f"; } > "$BUILD/corpus/request/$b"
done
# Inputs that once crashed a target (fuzz/regressions/<target>/) stay in its seed corpus.
for t in response stream error request; do
  [ -d "$ROOT/fuzz/regressions/$t" ] && cp "$ROOT/fuzz/regressions/$t"/* "$BUILD/corpus/$t/" 2>/dev/null
done
mkdir -p "$BUILD/crashes"
status=0
for t in response stream error request; do
  echo "== fuzz_$t (${SECONDS_PER}s)"
  if ! "$BUILD/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
       -artifact_prefix="$BUILD/crashes/fuzz_$t-" "$BUILD/corpus/$t" 2>"$BUILD/fuzz_$t.log"; then
    echo "fuzz_$t FAILED: see $BUILD/fuzz_$t.log and $BUILD/crashes/" >&2
    tail -30 "$BUILD/fuzz_$t.log" >&2
    status=1
  else
    grep -E "^#[0-9]+.*DONE" "$BUILD/fuzz_$t.log" | tail -1 || true
  fi
done
exit $status
