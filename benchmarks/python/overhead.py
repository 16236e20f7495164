#!/usr/bin/env python3
"""Python binding speed (issue #17), printed, not asserted:

1. In-process Python overhead over the C++ executor, per request: the same Router, the same
   provider (the socket-less simulated mock, answering at once, so only modelux's own work is
   measured) in the same run. Baseline: Router::complete called from C++
   (``Router.executor_benchmark``); then ``Router.chat`` (dict request walked into the C++
   request, response dict built from the C++ response, trace handle; the caller sleeps on a
   futex with the GIL released), ``await Router.achat`` (completion through the loop's eventfd
   bridge) and ``modelux.OpenAI().chat.completions.create`` (plus openai's pydantic types). Rounds alternate between the paths; the medians are reported.
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


def overhead(requests: int, rounds: int) -> Dict[str, Dict[str, float]]:
    """Per path: wall µs/request and process CPU µs/request (both threads: the caller and the
    router's io thread), median and best over the rounds. CPU time is what the Python layer
    adds in work; wall time also carries the two thread hand-offs every blocking call makes
    (caller → io thread → caller), which on a loaded machine are scheduler noise."""
    router = modelux.Router(CONFIG, tracing=False, simulated_provider={})
    client = modelux.OpenAI(router=router)
    req = json.dumps({"model": "@fast", "messages": MESSAGES, "max_tokens": 32})
    ctx = json.dumps({"project": "bench"})
    # Warm up every path (caches, allocators, pydantic schemas).
    router._native.executor_benchmark(req, ctx, 200)
    for _ in range(200):
        router.chat("@fast", MESSAGES, project="bench", max_tokens=32)
        client.chat.completions.create(model="@fast", messages=MESSAGES, max_tokens=32)

    async def achat_loop(n: int) -> None:
        for _ in range(n):
            await router.achat("@fast", MESSAGES, project="bench", max_tokens=32)

    def executor() -> None:
        router._native.executor_benchmark(req, ctx, requests)

    def chat() -> None:
        for _ in range(requests):
            router.chat("@fast", MESSAGES, project="bench", max_tokens=32)

    def achat() -> None:
        asyncio.run(achat_loop(requests))

    def openai_client() -> None:
        for _ in range(requests):
            client.chat.completions.create(model="@fast", messages=MESSAGES, max_tokens=32)

    paths = {"executor (C++)": executor, "Router.chat": chat, "Router.achat": achat, "OpenAI client": openai_client}
    wall: Dict[str, List[float]] = {k: [] for k in paths}
    cpu: Dict[str, List[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, fn in paths.items():  # interleaved: every round runs each path once
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(per_request_us(time.perf_counter() - w0, requests))
            cpu[name].append(per_request_us(time.process_time() - c0, requests))
    router.close()
    return {k: {"wall_median": statistics.median(wall[k]), "wall_best": min(wall[k]),
                "cpu_median": statistics.median(cpu[k]), "cpu_best": min(cpu[k])} for k in paths}


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
    print(f"\n1. per-request cost, simulated provider, sequential, {args.rounds} interleaved rounds x {args.requests}")
    res = overhead(args.requests, args.rounds)
    base = res["executor (C++)"]
    print(f"   {'path':<16} {'wall median':>12} {'wall best':>10} {'CPU median':>11} {'CPU best':>9}   overhead (CPU median / wall best)")
    for name, r in res.items():
        extra = ""
        if name != "executor (C++)":
            extra = (f"   {r['cpu_median'] - base['cpu_median']:+6.1f} µs / "
                     f"{r['wall_best'] - base['wall_best']:+6.1f} µs")
        print(f"   {name:<16} {r['wall_median']:9.1f} µs {r['wall_best']:7.1f} µs {r['cpu_median']:8.1f} µs "
              f"{r['cpu_best']:6.1f} µs{extra}")
    over_cpu = res["Router.chat"]["cpu_median"] - base["cpu_median"]
    over_wall = res["Router.chat"]["wall_best"] - base["wall_best"]
    print(f"   Router.chat over the C++ executor: {over_cpu:.1f} µs CPU, {over_wall:.1f} µs wall (best round) "
          f"— target 20 µs: {'met' if max(over_cpu, over_wall) <= 20.0 else 'NOT met'}")
    load = os.getloadavg()
    print(f"   load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs (other work skews wall time)")

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
