#!/usr/bin/env bash
# Installs whatever modelux needs and is missing: Debian packages (apt-get, via sudo when not
# root) and a Python venv at .venv with the Python packages. Safe and fast to run again.
#   scripts/setup.sh            everything (build, tests, Python, fuzzers)
#   scripts/setup.sh --minimal  only what the demo needs
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MINIMAL=0
[ "${1:-}" = "--minimal" ] && MINIMAL=1

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

pkgs=(build-essential cmake ninja-build ccache pkg-config git ca-certificates openssl
      libboost1.81-dev libssl-dev nlohmann-json3-dev libfmt-dev libsqlite3-dev libhiredis-dev libpq-dev libcli11-dev libjemalloc-dev
      prometheus-cpp-dev)
if [ $MINIMAL = 0 ]; then
  # tzdata: the budget windows' time-zone tests read /usr/share/zoneinfo.
  # postgresql: the fleet tests start a real server in a temp dir (as the postgres user under root).
  pkgs+=(doctest-dev libbenchmark-dev redis-server postgresql sqlite3 tzdata python3 python3-venv python3-dev clang-19 libclang-rt-19-dev)
  # Node and npm for the Node SDK e2e tests: Debian's, unless a Node with npm is already there
  # (a NodeSource nodejs ships its own npm and conflicts with Debian's npm package).
  command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
  # Headless Chromium for the console's browser tests (driven by playwright-core from web/).
  command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $MINIMAL = 0 ]; then
  PY="${PYTHON:-python3}"
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "setup: creating $ROOT/.venv"
    "$PY" -m venv "$ROOT/.venv"
  fi
  # Requirements are pinned loosely; re-install only when the list changes.
  req="$ROOT/scripts/requirements-dev.txt"
  stamp="$ROOT/.venv/.modelux-req-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
    echo "setup: installing Python packages from scripts/requirements-dev.txt"
    "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
    "$ROOT/.venv/bin/python" -m pip install -q -r "$req"
    cp "$req" "$stamp"
  fi
  # Node packages, each folder its own (never global), re-installed when its lock file changes.
  npm_ci() {  # <folder under the repo> <what it is for>
    local dir="$ROOT/$1" stamp="$ROOT/$1/node_modules/.modelux-lock-stamp"
    if [ ! -f "$stamp" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
      echo "setup: installing $2 (npm ci in $1)"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
      cp "$dir/package-lock.json" "$stamp"
    fi
  }
  # The Node SDK clients of the e2e tests (@anthropic-ai/sdk).
  npm_ci tests/e2e/node "the e2e Node packages"
  # The console's toolchain (vite, uplot) and playwright-core for its browser tests; never
  # `playwright install` (the tests use Debian's chromium).
  npm_ci web "the console's Node packages"
  # The MCP inspector CLI for the MCP smoke test.
  npm_ci tests/e2e/mcp_inspector "the MCP inspector CLI"
fi
