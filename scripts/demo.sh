#!/usr/bin/env bash
# The README's demo command: installs what is missing, builds the modelux binary, and runs
# `modelux demo` (mock provider + proxy on 127.0.0.1 with the embedded defaults, real requests
# through @production whose primary is made to fail, each answer printed with its trace).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/scripts/setup.sh" --minimal
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1
BUILD="$ROOT/build"
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODELUX_BUILD_TESTS=OFF \
    -DMODELUX_BUILD_BENCHMARKS=OFF -DMODELUX_BUILD_EXAMPLES=ON >/dev/null
fi
cmake --build "$BUILD" --target modelux_cli -j"$(nproc)"
cd "$(mktemp -d)"
exec "$BUILD/examples/modelux" demo "$@"
