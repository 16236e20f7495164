#!/usr/bin/env python3
"""Whole-system load: the mock provider alone vs the modelux proxy in front of it.

Starts `modelux mock` and `modelux serve` (single-target config, API-key auth and tracing on,
as in production) on 127.0.0.1 with --port 0, then drives both with the same keep-alive
HTTP/1.1 client (asyncio, raw sockets, one connection per concurrent worker) and prints p50/p99
latency and req/s for each, at each concurrency, with the proxy/direct ratios from the same run.

  direct: POST {mock}/v1/chat/completions  (model gpt-4o-mini, non-streaming)
  proxy : POST {proxy}/v1/chat/completions (model @bench -> gpt-4o-mini on the same mock)

Bounded: at most --requests per scenario and --duration seconds per scenario; 127.0.0.1 only.
The client is Python: on a small machine it competes with the servers for the CPU, so read the
ratios (measured side by side) rather than the absolute numbers; the in-process C++ benchmarks
measure the proxy's own cost precisely.

  MODELUX_BIN=build/examples/modelux .venv/bin/python benchmarks/load/proxy_vs_direct.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from load_procs import API_KEY, start, start_proxy, stop


# --------------------------------------------------------------------------- client


def build_request(port: int, path: str, body: bytes, auth: bool) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
    )
    if auth:
        head += f"authorization: Bearer {API_KEY}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, chunked = None, False
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def worker(port: int, req: bytes, budget: dict, lat: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while budget["left"] > 0 and time.perf_counter() < budget["until"]:
            budget["left"] -= 1
            t0 = time.perf_counter()
            writer.write(req)
            status = await read_response(reader)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def run(port: int, req: bytes, concurrency: int, requests: int, duration: float) -> dict:
    # Warm-up: open the pools, fill caches.
    warm: list[float] = []
    await asyncio.gather(*(worker(port, req, {"left": 20, "until": time.perf_counter() + 5}, warm, [])
                           for _ in range(min(concurrency, 8))))
    lat: list[float] = []
    errors: list[int] = []
    budget = {"left": requests, "until": time.perf_counter() + duration}
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(port, req, budget, lat, errors) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else [lat[0]] * 99
    return {"n": len(lat), "rps": len(lat) / wall, "p50": q[49] * 1e3, "p99": q[98] * 1e3, "errors": len(errors),
            "wall": wall}


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("MODELUX_BIN", str(Path(__file__).resolve().parents[2] / "build" / "examples" / "modelux")))
    ap.add_argument("--concurrency", default="1,64", help="comma-separated (default 1,64)")
    ap.add_argument("--requests", type=int, default=3000, help="max requests per scenario")
    ap.add_argument("--duration", type=float, default=8.0, help="max seconds per scenario")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument("--no-tracing", action="store_true", help="run the proxy with tracing disabled (to attribute cost)")
    a = ap.parse_args()
    conc = [int(c) for c in a.concurrency.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="modelux-load-"))
    mock, mock_port = start(a.bin, ["mock", "--port", "0"], tmp / "mock.log")
    procs = [mock]
    try:
        proxy, proxy_port = start_proxy(a.bin, tmp, mock_port, threads=1, tracing=not a.no_tracing)
        procs.append(proxy)

        msgs = [{"role": "user", "content": "Say hello in one short sentence."}]
        direct_req = build_request(mock_port, "/v1/chat/completions",
                                   json.dumps({"model": "gpt-4o-mini", "messages": msgs}).encode(), auth=False)
        proxy_req = build_request(proxy_port, "/v1/chat/completions",
                                  json.dumps({"model": "@bench", "messages": msgs}).encode(), auth=True)

        results = {}
        for c in conc:
            results[("direct", c)] = asyncio.run(run(mock_port, direct_req, c, a.requests, a.duration))
            results[("proxy", c)] = asyncio.run(run(proxy_port, proxy_req, c, a.requests, a.duration))

        print(f"modelux proxy vs direct (mock provider, non-streaming, 127.0.0.1, {os.cpu_count()} CPUs, "
              f"Python asyncio client, tracing {'off' if a.no_tracing else 'on'})")
        print(f"{'target':<8} {'conc':>5} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for (name, c), r in results.items():
            print(f"{name:<8} {c:>5} {r['n']:>9} {r['errors']:>7} {r['rps']:>9.0f} {r['p50']:>8.3f} {r['p99']:>8.3f}")
        print()
        print(f"{'ratio proxy/direct':<20} {'conc':>5} {'req/s':>8} {'p50':>7} {'p99':>7} {'added p50 us':>13}")
        for c in conc:
            d, p = results[("direct", c)], results[("proxy", c)]
            print(f"{'':<20} {c:>5} {p['rps'] / d['rps']:>8.2f} {p['p50'] / d['p50']:>7.2f} "
                  f"{p['p99'] / d['p99']:>7.2f} {(p['p50'] - d['p50']) * 1e3:>13.0f}")
        print(f"\nmock's own throughput (direct): "
              + ", ".join(f"{results[('direct', c)]['rps']:.0f} req/s at concurrency {c}" for c in conc))
        # Upstream pooling: the proxy should reuse its connections to the mock.
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
        pool = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines()
                if ln.startswith("modelux_upstream_connections_")}
        print("proxy upstream connections: opened {:.0f}, reused {:.0f}".format(
            pool.get("modelux_upstream_connections_opened_total", float("nan")),
            pool.get("modelux_upstream_connections_reused_total", float("nan"))))
        if a.json:
            print(json.dumps({f"{n}@{c}": r for (n, c), r in results.items()}, indent=2))
        bad = sum(r["errors"] for r in results.values())
        return 1 if bad else 0
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
