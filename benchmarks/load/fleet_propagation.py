#!/usr/bin/env python3
"""Fleet propagation: how long a config change made on one instance takes to be served by another.

A real PostgreSQL (Debian `postgresql`, started here in a temp dir; tests/e2e/pg_support.py)
and two `modelux serve` instances A and B sharing it (server.control.postgres_url), in front of
`modelux mock`. For each of --changes (100) config changes: PUT /v1/configs/@bench on A, then
poll B's GET /v1/configs/bench (the live, compiled config; every --poll-ms, default 1 ms) until
it serves the new version. The figure per change is the time from A's answer to the first poll
of B that sees the new version (so it over-states by up to one poll interval). Prints p50, p90,
p99 and max, and writes them as JSON (--out).

Everything listens on 127.0.0.1 or a unix socket; the run is bounded (--changes, and a 10 s
limit per change).

  python3 benchmarks/load/fleet_propagation.py [--bin build/examples/modelux] [--changes 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from load_procs import API_KEY, start, stop  # noqa: E402
from pg_support import PostgresServer  # noqa: E402


def request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h = {"authorization": f"Bearer {API_KEY}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["content-type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(REPO / "build" / "examples" / "modelux"))
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--poll-ms", type=float, default=1.0)
    ap.add_argument("--reconcile-ms", type=int, default=1000, help="server.control.reconcile_ms of both instances")
    ap.add_argument("--out", default="", help="write the figures as JSON here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="modelux-fleet-bench-"))
    pg = PostgresServer()
    procs = []
    try:
        url = pg.create_database("fleet_bench")
        mock, mock_port = start(args.bin, ["mock", "--port", "0", "--seed", "1"], tmp / "mock.log")
        procs.append(mock)
        ports = []
        for name in ("a", "b"):
            cfg = {
                "server": {"host": "127.0.0.1", "port": 0, "threads": 1,
                           "api_keys": [{"key": API_KEY, "name": "bench", "project": "bench", "role": "admin"}],
                           "control": {"postgres_url": url, "reconcile_ms": args.reconcile_ms}},
                "providers": {"openai": {"base_url": f"http://127.0.0.1:{mock_port}/v1", "api_key": "mock-openai-key"}},
                "routing": {"bench": {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 10000}},
                "budgets": [],
                "tracing": {"path": str(tmp / f"traces-{name}.db")},
            }
            (tmp / f"{name}.json").write_text(json.dumps(cfg))
            p, port = start(args.bin, ["serve", "--config", str(tmp / f"{name}.json"), "--port", "0"], tmp / f"{name}.log")
            procs.append(p)
            ports.append(port)
        a, b = ports
        samples = []
        for i in range(args.changes):
            doc = {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 10000 + i + 1}
            st, body = request(a, "PUT", "/v1/configs/bench", doc)
            answered = time.perf_counter()
            if st != 200:
                raise SystemExit(f"PUT on A failed: {st} {body}")
            version = body["version"]
            while True:
                st, got = request(b, "GET", "/v1/configs/bench")
                now = time.perf_counter()
                if st == 200 and got.get("version") == version:
                    samples.append((now - answered) * 1000)
                    break
                if now - answered > 10:
                    raise SystemExit(f"B did not serve v{version} within 10 s")
                time.sleep(args.poll_ms / 1000)
        samples.sort()
        q = statistics.quantiles(samples, n=100, method="inclusive")
        figures = {"changes": len(samples), "p50_ms": round(statistics.median(samples), 2), "p90_ms": round(q[89], 2),
                   "p99_ms": round(q[98], 2), "max_ms": round(samples[-1], 2), "min_ms": round(samples[0], 2),
                   "poll_ms": args.poll_ms, "reconcile_ms": args.reconcile_ms}
        print(f"fleet propagation over {len(samples)} config changes (A's PUT answered -> B serves the version):")
        print(f"  p50 {figures['p50_ms']} ms   p90 {figures['p90_ms']} ms   p99 {figures['p99_ms']} ms   "
              f"max {figures['max_ms']} ms   (min {figures['min_ms']} ms; B polled every {args.poll_ms} ms)")
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    finally:
        for p in reversed(procs):
            stop(p)
        pg.close()


if __name__ == "__main__":
    sys.exit(main())
