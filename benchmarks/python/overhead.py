#!/usr/bin/env python3
"""Python binding speed (issue #17), printed, not asserted:

1. In-process Python overhead over the C++ executor, per request: the same Router, the same
   provider (the socket-less simulated mock, answering at once, so only modelux's own work is
   measured) in the same run. Baseline: Router::complete called from C++
   (``Router.executor_benchmark``); then ``Router.chat`` (dict request → JSON → C++ → dict
   response with trace), ``await Router.achat`` and ``modelux.OpenAI().chat.completions.create``
   (openai's pydantic types). Rounds alternate between the paths; the medians are reported.
   Target: Router.chat ≤ 20 µs over the executor.
2. 1,000 concurrent asyncio streams in one process (``Router.astream``), on the simulated mock
   with chunk pacing: completes?, wall time, chunks, threads, RSS.

    .venv/bin/python benchmarks/python/overhead.py [--requests 2000] [--rounds 7] [--streams 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import threading
import time
from typing import Any, Dict, List

import modelux

MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
CONFIG: Dict[str, Any] = {
    "providers": {"openai": {"base_url": "http://sim.invalid/v1", "api_key": "sim-key"}},
    "routing": {"fast": {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 5000}},
    "tracing": {"enabled": False},
}


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def per_request_us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def overhead(requests: int, rounds: int) -> Dict[str, float]:
    router = modelux.Router(CONFIG, tracing=False, simulated_provider={})
    client = modelux.OpenAI(router=router)
    req = json.dumps({"model": "@fast", "messages": MESSAGES, "max_tokens": 32})
    ctx = json.dumps({"project": "bench"})
    # Warm up every path (connection-free, but caches, allocators, pydantic schemas).
    router._native.executor_benchmark(req, ctx, 200)
    for _ in range(200):
        router.chat("@fast", MESSAGES, project="bench", max_tokens=32)
        client.chat.completions.create(model="@fast", messages=MESSAGES, max_tokens=32)

    async def achat_loop(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await router.achat("@fast", MESSAGES, project="bench", max_tokens=32)
        return time.perf_counter() - t0

    samples: Dict[str, List[float]] = {"executor (C++)": [], "Router.chat": [], "Router.achat": [], "OpenAI client": []}
    for _ in range(rounds):
        samples["executor (C++)"].append(per_request_us(router._native.executor_benchmark(req, ctx, requests), requests))
        t0 = time.perf_counter()
        for _ in range(requests):
            router.chat("@fast", MESSAGES, project="bench", max_tokens=32)
        samples["Router.chat"].append(per_request_us(time.perf_counter() - t0, requests))
        samples["Router.achat"].append(per_request_us(asyncio.run(achat_loop(requests)), requests))
        t0 = time.perf_counter()
        for _ in range(requests):
            client.chat.completions.create(model="@fast", messages=MESSAGES, max_tokens=32)
        samples["OpenAI client"].append(per_request_us(time.perf_counter() - t0, requests))
    router.close()
    return {k: statistics.median(v) for k, v in samples.items()}


async def streams(n: int, chunks: int, interval_ms: float) -> Dict[str, Any]:
    router = modelux.Router(CONFIG, tracing=False, io_threads=1,
                            simulated_provider={"default": {"chunks": chunks, "chunk_interval_ms": interval_ms}})
    rss0 = rss_mb()
    threads0 = threading.active_count()
    peak_threads = threads0
    got: List[int] = []
    errors: List[str] = []

    async def one() -> None:
        nonlocal peak_threads
        count = 0
        try:
            async for _ in router.astream("@fast", MESSAGES, max_tokens=32):
                count += 1
                peak_threads = max(peak_threads, threading.active_count())
        except modelux.ModeluxError as e:
            errors.append(e.kind)
        got.append(count)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    wall = time.perf_counter() - t0
    rss1 = rss_mb()
    router.close()
    return {
        "streams": n,
        "completed": sum(1 for c in got if c > 0) - len(errors),
        "errors": len(errors),
        "chunks": sum(got),
        "wall_s": wall,
        "paced_floor_s": chunks * interval_ms / 1000.0,
        "rss_before_mb": rss0,
        "rss_after_mb": rss1,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "python_threads": (threads0, peak_threads),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per path per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--chunk-interval-ms", type=float, default=50.0)
    args = ap.parse_args()

    print(f"modelux {modelux.__version__}, {os.cpu_count()} CPUs, pid {os.getpid()}")
    print(f"\n1. per-request cost, simulated provider, sequential, median of {args.rounds} rounds x {args.requests}")
    res = overhead(args.requests, args.rounds)
    base = res["executor (C++)"]
    for name, us in res.items():
        extra = "" if name == "executor (C++)" else f"   overhead {us - base:+7.1f} µs"
        print(f"   {name:<16} {us:8.1f} µs/request{extra}")
    verdict = "within" if res["Router.chat"] - base <= 20.0 else "OVER"
    print(f"   Router.chat overhead over the C++ executor: {res['Router.chat'] - base:.1f} µs ({verdict} the 20 µs target)")

    print(f"\n2. {args.streams} concurrent asyncio streams (Router.astream), {args.chunks} chunks "
          f"every {args.chunk_interval_ms:g} ms, one io thread")
    s = asyncio.run(streams(args.streams, args.chunks, args.chunk_interval_ms))
    ok = s["completed"] == s["streams"]
    print(f"   completed {s['completed']}/{s['streams']} ({'ok' if ok else 'NOT ALL'}), errors {s['errors']}, "
          f"chunks {s['chunks']}")
    print(f"   wall {s['wall_s']:.2f} s (pacing floor {s['paced_floor_s']:.2f} s)")
    print(f"   RSS {s['rss_before_mb']:.0f} MB -> {s['rss_after_mb']:.0f} MB (peak {s['peak_rss_mb']:.0f} MB); "
          f"Python threads {s['python_threads'][0]} -> peak {s['python_threads'][1]}")


if __name__ == "__main__":
    main()
