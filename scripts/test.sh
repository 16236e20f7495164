#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything once (ccache makes
# re-runs incremental), runs the C++ unit tests (ctest), the Python package tests and the
# end-to-end tests (pytest, official OpenAI SDK against the proxy and the mock provider), a
# short fuzzing pass, and prints one summary line: "N passed, N failed".
#   MODELUX_SKIP_FUZZ=1   skip the fuzzers          FUZZ_SECONDS=N   time per fuzz target
#   MODELUX_SANITIZE=1    also build and run the unit tests under ASan+UBSan (build-asan/)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/setup.sh" || { echo "setup failed"; exit 1; }
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=5G
JOBS="${JOBS:-$(nproc)}"
BUILD="$ROOT/build"
LOGS="$ROOT/build/test-logs"
mkdir -p "$LOGS"
cpp_pass=0; cpp_fail=0; py_pass=0; py_fail=0; other_fail=0

step() { printf '\n== %s\n' "$*"; }

step "configure + build (C++ library, tests, benchmarks, modelux binary)"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODELUX_BUILD_TESTS=ON \
  -DMODELUX_BUILD_BENCHMARKS=ON -DMODELUX_BUILD_EXAMPLES=ON -DMODELUX_WERROR=OFF >"$LOGS/configure.log" 2>&1 \
  || { cat "$LOGS/configure.log"; echo "0 passed, 1 failed"; exit 1; }
if ! cmake --build "$BUILD" -j"$JOBS" >"$LOGS/build.log" 2>&1; then
  grep -E "error|Error" "$LOGS/build.log" | head -40; echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi

step "C++ unit tests (ctest)"
(cd "$BUILD" && ctest -j"$JOBS" --timeout 120 --output-on-failure) 2>&1 | tee "$LOGS/ctest.log" | tail -25
line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$LOGS/ctest.log" | tail -1)
if [ -n "$line" ]; then
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line"); cpp_fail=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
  cpp_pass=$((total - cpp_fail))
else
  cpp_fail=$((cpp_fail + 1))
fi

step "Python package (pip install . with scikit-build-core)"
PY="$ROOT/.venv/bin/python"
if "$PY" -m pip install --no-build-isolation -q "$ROOT" >"$LOGS/pip.log" 2>&1; then
  echo "installed modelux $("$PY" -c 'import modelux; print(modelux.__version__)')"
else
  tail -30 "$LOGS/pip.log"; other_fail=$((other_fail + 1))
fi

step "Python tests + end-to-end tests (pytest, official OpenAI SDK)"
export MODELUX_BIN="$BUILD/examples/modelux"
# Each suite runs in its own pytest process: both have a conftest.py of their own.
for d in bindings/python/tests tests/e2e; do
  [ -d "$ROOT/$d" ] || continue
  log="$LOGS/pytest-$(echo "$d" | tr '/' '-').log"
  (cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider "$d") 2>&1 | tee "$log" | tail -15
  sum=$(grep -E "^(=+ )?[0-9]+ (passed|failed|errors?)" "$log" | tail -1)
  if [ -z "$sum" ]; then py_fail=$((py_fail + 1)); continue; fi
  n=$(grep -oE "[0-9]+ passed" <<<"$sum" | grep -oE "[0-9]+" || true); py_pass=$((py_pass + ${n:-0}))
  for n in $(grep -oE "[0-9]+ (failed|errors?)" <<<"$sum" | grep -oE "[0-9]+"); do py_fail=$((py_fail + n)); done
done

if [ "${MODELUX_SKIP_FUZZ:-0}" != 1 ] && [ -x "$ROOT/scripts/run-fuzzers.sh" ]; then
  step "fuzzers (libFuzzer, clang-19, ${FUZZ_SECONDS:-10}s each)"
  if FUZZ_SECONDS="${FUZZ_SECONDS:-10}" "$ROOT/scripts/run-fuzzers.sh" >"$LOGS/fuzz.log" 2>&1; then
    grep -E "^== |DONE" "$LOGS/fuzz.log" | tail -8; cpp_pass=$((cpp_pass + 1))
  else
    tail -30 "$LOGS/fuzz.log"; cpp_fail=$((cpp_fail + 1))
  fi
fi

if [ "${MODELUX_SANITIZE:-0}" = 1 ]; then
  step "unit tests under ASan + UBSan (build-asan)"
  cmake -S "$ROOT" -B "$ROOT/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMODELUX_SANITIZE=ON \
    -DMODELUX_BUILD_TESTS=ON -DMODELUX_BUILD_BENCHMARKS=OFF -DMODELUX_BUILD_EXAMPLES=ON >/dev/null
  if cmake --build "$ROOT/build-asan" -j"$JOBS" >"$LOGS/asan-build.log" 2>&1 &&
     (cd "$ROOT/build-asan" && ctest -j"$JOBS" --timeout 300 --output-on-failure) >"$LOGS/asan.log" 2>&1; then
    tail -3 "$LOGS/asan.log"; cpp_pass=$((cpp_pass + 1))
  else
    tail -40 "$LOGS/asan.log" 2>/dev/null || tail -40 "$LOGS/asan-build.log"; cpp_fail=$((cpp_fail + 1))
  fi
fi

passed=$((cpp_pass + py_pass)); failed=$((cpp_fail + py_fail + other_fail))
printf '\nC++: %d passed, %d failed; Python: %d passed, %d failed\n' "$cpp_pass" "$cpp_fail" "$py_pass" "$py_fail"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
