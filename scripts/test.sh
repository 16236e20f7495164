#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything once (ccache makes
# re-runs incremental), runs the C++ unit tests (ctest), the Python package tests (against the
# manylinux wheel of scripts/build-wheel.sh, installed into a fresh venv) and the end-to-end
# tests (pytest, official OpenAI SDK against the proxy and the mock provider), a short fuzzing
# pass, and prints one summary line: "N passed, N failed".
#
# N passed counts real test cases only: ctest entries that passed (each one a doctest TEST_CASE
# that ran) plus pytest cases that passed. The fuzz and sanitizer steps are reported on lines of
# their own ("fuzz: ok (4 targets, 52 s)"); a failing step is counted as failed. Skipped and
# xfailed pytest cases are listed by name.
#
#   scripts/test.sh               everything above
#   scripts/test.sh --sanitize    only the unit tests, built with ASan+UBSan in build-asan/
#                                 (stop on the first error); run it before every submission
#   MODELUX_SANITIZE=1            the full run plus the sanitizer unit run
#   MODELUX_SKIP_FUZZ=1           skip the fuzzers (the summary says "fuzz: SKIPPED")
#   FUZZ_SECONDS=N                time per fuzz target (default 10)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

ONLY_SANITIZE=0
for a in "$@"; do
  case "$a" in
    --sanitize) ONLY_SANITIZE=1 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done

bash "$ROOT/scripts/setup.sh" || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=5G
# Sanitizers stop at the first report, with a stack trace; the user's own options come last
# and win.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
JOBS="${JOBS:-$(nproc)}"
BUILD="$ROOT/build"
LOGS="$ROOT/build/test-logs"
mkdir -p "$LOGS"
cpp_pass=0; cpp_fail=0; py_pass=0; py_fail=0; other_fail=0
notes=()   # lines for the summary: steps, skipped and xfailed tests, guard failures

step() { printf '\n== %s\n' "$*"; }
now() { date +%s; }

# Runs ctest in build dir $1 (log $2, timeout $3) and sets ct_pass / ct_fail. Besides ctest's own
# count, two guards: the ctest entries must be exactly the executables' test cases (a ';' in a
# TEST_CASE name splits one case into two entries that match nothing), and no entry may have run
# zero test cases (tests/support/doctest_main.cpp makes such an entry fail with
# "modelux test guard"; it is named here so that it cannot scroll by).
run_ctest() {
  local dir="$1" log="$2" timeout="$3"
  ct_pass=0; ct_fail=0
  (cd "$dir" && ctest -j"$JOBS" --timeout "$timeout" --output-on-failure) >"$log" 2>&1
  tail -25 "$log"
  local line total
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1)
  if [ -n "$line" ]; then
    total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line"); ct_fail=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
    ct_pass=$((total - ct_fail))
    [ "$total" -gt 0 ] || { notes+=("GUARD: ctest in $dir found no tests"); ct_fail=$((ct_fail + 1)); }
  else
    notes+=("GUARD: ctest in $dir printed no summary (see $log)"); ct_fail=$((ct_fail + 1))
  fi
  local empty
  empty=$(grep -c "modelux test guard: FAILED" "$log")
  if [ "$empty" -gt 0 ]; then
    notes+=("GUARD: $empty ctest entries in $dir ran no test case (a ';' in a TEST_CASE name?): see $log")
  fi
  # Entries vs cases: `ctest -N` counts entries; each executable counts its own cases.
  local entries cases=0 n exe
  entries=$( (cd "$dir" && ctest -N) | grep -oE "^Total Tests: [0-9]+" | grep -oE "[0-9]+")
  for exe in "$dir"/tests/unit-*; do
    [ -x "$exe" ] && [ -f "$exe" ] || continue
    n=$("$exe" --count 2>/dev/null | grep -oE "passing the current filters: [0-9]+" | grep -oE "[0-9]+$")
    cases=$((cases + ${n:-0}))
  done
  if [ "${entries:-0}" != "$cases" ]; then
    notes+=("GUARD: $dir has ${entries:-0} ctest entries but its executables hold $cases test cases (a ';' in a TEST_CASE name splits one into two)")
    ct_fail=$((ct_fail + 1))
  fi
}

# The sanitizer unit run: ASan + UBSan, -fno-sanitize-recover=all and halt_on_error=1, so the
# first report fails the test that caused it. Sets san_pass / san_fail and adds a summary note.
run_sanitized_units() {
  local t0 asan="$ROOT/build-asan"
  t0=$(now)
  step "unit tests under ASan + UBSan (build-asan)"
  san_pass=0; san_fail=0
  if ! cmake -S "$ROOT" -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMODELUX_SANITIZE=ON -DMODELUX_WERROR=OFF \
         -DMODELUX_BUILD_TESTS=ON -DMODELUX_BUILD_BENCHMARKS=OFF -DMODELUX_BUILD_EXAMPLES=ON -DMODELUX_BUILD_PYTHON=OFF \
         >"$LOGS/asan-configure.log" 2>&1; then
    tail -30 "$LOGS/asan-configure.log"; san_fail=1; notes+=("sanitize: FAILED (configure, see $LOGS/asan-configure.log)"); return
  fi
  if ! cmake --build "$asan" -j"$JOBS" >"$LOGS/asan-build.log" 2>&1; then
    grep -E "error|Error" "$LOGS/asan-build.log" | head -40; san_fail=1
    notes+=("sanitize: FAILED (build, see $LOGS/asan-build.log)"); return
  fi
  run_ctest "$asan" "$LOGS/asan.log" 600
  san_pass=$ct_pass; san_fail=$ct_fail
  if [ "$san_fail" -eq 0 ]; then
    notes+=("sanitize: ok ($san_pass unit cases under ASan+UBSan, $(( $(now) - t0 )) s)")
  else
    notes+=("sanitize: FAILED ($san_fail of $((san_pass + san_fail)) unit cases under ASan+UBSan, see $LOGS/asan.log)")
  fi
}

summary() {
  local passed="$1" failed="$2"
  echo
  for n in "${notes[@]}"; do echo "$n"; done
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

if [ "$ONLY_SANITIZE" = 1 ]; then
  t_start=$(now)
  run_sanitized_units
  notes+=("wall time: $(( $(now) - t_start )) s")
  summary "$san_pass" "$san_fail"
  exit $?
fi

t_start=$(now)
step "configure + build (C++ library, tests, benchmarks, modelux binary)"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODELUX_BUILD_TESTS=ON \
  -DMODELUX_BUILD_BENCHMARKS=ON -DMODELUX_BUILD_EXAMPLES=ON -DMODELUX_WERROR=OFF >"$LOGS/configure.log" 2>&1 \
  || { cat "$LOGS/configure.log"; echo "0 passed, 1 failed"; exit 1; }
if ! cmake --build "$BUILD" -j"$JOBS" >"$LOGS/build.log" 2>&1; then
  grep -E "error|Error" "$LOGS/build.log" | head -40; echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi

step "C++ unit tests (ctest)"
run_ctest "$BUILD" "$LOGS/ctest.log" 120
cpp_pass=$ct_pass; cpp_fail=$ct_fail

step "Python wheel (scripts/build-wheel.sh: pip wheel + auditwheel repair), installed into a fresh venv"
PY="$ROOT/.venv/bin/python"
# The Python tests run against the repaired manylinux wheel installed into a venv made afresh on
# every run (not the dev .venv, not the source tree); its test dependencies are the wheel's
# `test` extra, from pip's cache. The wheel build reuses build/'s objects through ccache.
WHEELHOUSE="$BUILD/wheelhouse"; WHEEL_VENV="$BUILD/wheel-venv"; WHEEL=""
t0=$(now)
if bash "$ROOT/scripts/build-wheel.sh" "$WHEELHOUSE" >"$LOGS/wheel.log" 2>&1; then
  t1=$(now)
  WHEEL=$(tail -1 "$LOGS/wheel.log")
  # The last run's venv is moved aside and deleted in the background: removing its 250 MB
  # (pandas, numpy, mypy) took 40 s here, three times the install.
  if [ -e "$WHEEL_VENV" ]; then mv "$WHEEL_VENV" "$WHEEL_VENV.old.$(date +%s%N)"; fi
  (rm -rf "$WHEEL_VENV".old.* >/dev/null 2>&1 &)
  # Installed by the dev venv's pip (--python): no pip bootstrapped into the test venv, and no
  # .pyc compiled up front for every file of pandas, mypy and the SDKs (a third of the time).
  if "$PY" -m venv --without-pip "$WHEEL_VENV" >"$LOGS/wheel-venv.log" 2>&1 &&
     "$PY" -m pip --python "$WHEEL_VENV/bin/python" install -q --no-compile --disable-pip-version-check \
       "$WHEEL[test]" >>"$LOGS/wheel-venv.log" 2>&1; then
    grep -E "^bundled in|following platform tag" "$LOGS/wheel.log"
    "$WHEEL_VENV/bin/python" -c 'import modelux; print("installed modelux", modelux.__version__, "at", modelux.__file__)'
    # The end-to-end tests run in the dev venv; the one that starts `python -m modelux.mcp`
    # needs the package there too: the same wheel, without touching its dependencies.
    "$PY" -m pip install -q --no-deps --force-reinstall --disable-pip-version-check "$WHEEL" >>"$LOGS/wheel-venv.log" 2>&1 ||
      notes+=("wheel: could not install it into .venv for the e2e tests (see $LOGS/wheel-venv.log)")
    notes+=("wheel: $(basename "$WHEEL") (build + repair $((t1 - t0)) s, fresh venv $(( $(now) - t1 )) s)")
  else
    tail -30 "$LOGS/wheel-venv.log"; WHEEL=""
  fi
else
  tail -30 "$LOGS/wheel.log"
fi
if [ -z "$WHEEL" ]; then
  other_fail=$((other_fail + 1)); notes+=("python wheel: FAILED (see $LOGS/wheel.log, $LOGS/wheel-venv.log)")
fi

step "Python tests + end-to-end tests (pytest, official OpenAI SDK)"
export MODELUX_BIN="$BUILD/examples/modelux"
# Each suite runs in its own pytest process: both have a conftest.py of their own. The counts
# come from pytest's JUnit XML, which names every skipped and xfailed case.
for d in bindings/python/tests tests/e2e; do
  [ -d "$ROOT/$d" ] || continue
  tag="$(echo "$d" | tr '/' '-')"
  log="$LOGS/pytest-$tag.log"; xml="$LOGS/pytest-$tag.xml"
  rm -f "$xml"
  py="$PY"; wheel_env=()
  if [ "$d" = bindings/python/tests ]; then
    [ -n "$WHEEL" ] || continue   # counted above as the wheel's failure
    py="$WHEEL_VENV/bin/python"; wheel_env=(MODELUX_WHEEL="$WHEEL")
  fi
  (cd "$ROOT" && env ${wheel_env[@]+"${wheel_env[@]}"} "$py" -m pytest -q -rsx -p no:cacheprovider --junitxml="$xml" "$d") 2>&1 | tee "$log" | tail -15
  counts=$("$PY" - "$xml" "$d" <<'EOF'
import sys
import xml.etree.ElementTree as ET
path, suite = sys.argv[1], sys.argv[2]
try:
    root = ET.parse(path).getroot()
except Exception as e:  # no XML: pytest did not get as far as running tests
    print(f"0 1\nnote {suite}: no JUnit report ({e})")
    sys.exit(0)
passed = failed = 0
notes = []
for tc in root.iter("testcase"):
    name = f"{tc.get('classname', '')}::{tc.get('name', '')}"
    kinds = {c.tag for c in tc}
    if kinds & {"failure", "error"}:
        failed += 1
    elif "skipped" in kinds:
        s = next(c for c in tc if c.tag == "skipped")
        kind = "XFAIL" if s.get("type") == "pytest.xfail" else "SKIPPED"
        notes.append(f"{kind}: {name}: {s.get('message', '')}")
    else:
        passed += 1
if passed + failed == 0:
    failed = 1
    notes.append(f"{suite}: no test ran")
print(passed, failed)
for n in notes:
    print("note", n)
EOF
)
  read -r p f <<<"$(head -1 <<<"$counts")"
  py_pass=$((py_pass + p)); py_fail=$((py_fail + f))
  while IFS= read -r n; do notes+=("pytest ${n#note }"); done < <(grep '^note ' <<<"$counts")
done

step "fuzzers (libFuzzer, clang-19, ${FUZZ_SECONDS:-10}s each)"
if [ "${MODELUX_SKIP_FUZZ:-0}" = 1 ]; then
  echo "skipped (MODELUX_SKIP_FUZZ=1)"; notes+=("fuzz: SKIPPED (MODELUX_SKIP_FUZZ=1)")
else
  t0=$(now)
  # Called through bash: a lost exec bit must not make the step vanish.
  if FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash "$ROOT/scripts/run-fuzzers.sh" >"$LOGS/fuzz.log" 2>&1; then
    grep -E "^== |DONE" "$LOGS/fuzz.log" | tail -8
    notes+=("fuzz: ok ($(grep -c '^== fuzz_' "$LOGS/fuzz.log") targets, $(( $(now) - t0 )) s)")
  else
    tail -30 "$LOGS/fuzz.log"
    nf=$(grep -c "^fuzz_.* FAILED" "$LOGS/fuzz.log"); [ "$nf" -gt 0 ] || nf=1
    other_fail=$((other_fail + nf)); notes+=("fuzz: FAILED ($nf, see $LOGS/fuzz.log)")
  fi
fi

if [ "${MODELUX_SANITIZE:-0}" = 1 ]; then
  run_sanitized_units
  other_fail=$((other_fail + san_fail))
fi

passed=$((cpp_pass + py_pass)); failed=$((cpp_fail + py_fail + other_fail))
printf '\nC++: %d passed, %d failed; Python: %d passed, %d failed\n' "$cpp_pass" "$cpp_fail" "$py_pass" "$py_fail"
notes+=("wall time: $(( $(now) - t_start )) s")
summary "$passed" "$failed"
