#!/usr/bin/env python3
"""Streaming relay load: many concurrent SSE streams through one proxy from the mock provider.

Starts `modelux mock` (streams of --chunks content chunks, --interval-ms apart) and
`modelux serve` (single target, API-key auth and tracing on, as in production) on 127.0.0.1,
then:

  1. direct: --streams concurrent streams straight to the mock (the baseline TTFT and the mock's
     own CPU per chunk);
  2. proxy : --rounds rounds of --streams concurrent streams through the proxy.

Every proxied stream is checked: HTTP 200, every event carries one model, and it ends with
`data: [DONE]` (a stream that does not is "cut"; one with two models is "interleaved").

Prints TTFT p50/p99 (direct and proxy, and the difference), the CPU each process used per
relayed chunk (utime+stime from /proc/<pid>/stat divided by the chunks the clients received),
and the proxy's RSS before the load, at its peak during the load and after it (once the
streams closed and the proxy went idle).

RLIMIT_NOFILE is raised to its hard limit for this process and the servers it starts (the
proxy needs two descriptors per stream). The client is Python asyncio with raw sockets: it
does not parse events while they arrive (that would make the client the bottleneck); each
stream's body is checked once it ended.

  MODELUX_BIN=build/examples/modelux .venv/bin/python benchmarks/load/stream_relay.py \
      --streams 200 --chunks 100 --interval-ms 10
  # the issue-19 scale run: 5,000 concurrent 5 s streams (--chain: through the issue's
  # 2 s -> 3 s -> 5 s fallback chain, so that a cut or interleaved stream can show at all)
  ... stream_relay.py --streams 5000 --chunks 20 --interval-ms 250 --mock-threads 2 --chain
  # the per-chunk CPU with nginx relaying the same streams as the baseline, in the same run
  ... stream_relay.py --streams 200 --chunks 300 --interval-ms 10 --rounds 3 --nginx
  # memory after 10,000 streams
  ... stream_relay.py --streams 2000 --rounds 5 --chunks 20 --interval-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

from load_procs import API_KEY, cpu_seconds, nginx_relay_conf, real_pid, rss_mb, start, start_proxy, stop, thread_cpu


# --------------------------------------------------------------------------- client


class StreamProto(asyncio.Protocol):
    """Collects one response's bytes; notes when the first body byte after the head arrived."""

    def __init__(self, req: bytes, t0: float):
        self.req, self.t0 = req, t0
        self.buf = bytearray()
        self.ttft: float | None = None
        self.head_end = -1
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.req)

    def data_received(self, data: bytes):
        self.buf += data
        if self.ttft is None:
            if self.head_end < 0:
                self.head_end = self.buf.find(b"\r\n\r\n")
            if self.head_end >= 0 and self.buf.find(b"data: ", self.head_end) >= 0:
                self.ttft = time.perf_counter() - self.t0
        # The chunked body's last chunk ("0\r\n\r\n") ends the response.
        if self.buf.endswith(b"\r\n0\r\n\r\n") and not self.done.done():
            self.done.set_result(None)
            self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        j = body.find(b"\r\n", i)
        if j < 0:
            break
        size = int(body[i:j].split(b";")[0], 16)
        if size == 0:
            break
        out += body[j + 2:j + 2 + size]
        i = j + 2 + size + 2
    return bytes(out)


def check(buf: bytes) -> dict:
    """One stream's verdict: status, events, models, ended with [DONE]."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return {"status": 0, "events": 0, "models": set(), "done": False, "error": True}
    head = buf[:head_end].decode("latin-1")
    status = int(head.split("\r\n")[0].split()[1])
    body = buf[head_end + 4:]
    if "chunked" in head.lower():
        body = dechunk(body)
    events = [e for e in body.split(b"\n\n") if e.startswith(b"data: ")]
    models: set[str] = set()
    n = 0
    error = False
    for e in events:
        data = e[6:]
        if data == b"[DONE]":
            continue
        n += 1
        try:
            j = json.loads(data)
        except ValueError:
            error = True
            continue
        if "error" in j:
            error = True
        elif "model" in j:
            models.add(j["model"])
    return {"status": status, "events": n, "models": models,
            "done": bool(events) and events[-1] == b"data: [DONE]", "error": error}


async def one_stream(port: int, req: bytes, sem: asyncio.Semaphore, results: list, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    async with sem:
        t0 = time.perf_counter()
        try:
            tr, proto = await loop.create_connection(lambda: StreamProto(req, t0), "127.0.0.1", port)
        except OSError as e:
            results.append({"status": 0, "events": 0, "models": set(), "done": False, "error": True,
                            "ttft": None, "wall": 0.0, "connect_error": str(e)})
            return
        try:
            await asyncio.wait_for(proto.done, timeout)
        except asyncio.TimeoutError:
            tr.close()
        r = check(bytes(proto.buf))
        r["ttft"] = proto.ttft
        r["wall"] = time.perf_counter() - t0
        results.append(r)


async def run_streams(port: int, req: bytes, n: int, timeout: float, sample) -> tuple[list, float]:
    sem = asyncio.Semaphore(n)
    results: list = []
    stop_sampling = asyncio.Event()

    async def sampler():
        while not stop_sampling.is_set():
            sample()
            try:
                await asyncio.wait_for(stop_sampling.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    s = asyncio.create_task(sampler())
    t0 = time.perf_counter()
    await asyncio.gather(*(one_stream(port, req, sem, results, timeout) for _ in range(n)))
    wall = time.perf_counter() - t0
    stop_sampling.set()
    await s
    return results, wall


# Issue #19's reproduction 2, at scale: every model streams the same healthy answer, each
# attempt timeout is shorter than the stream. Before the fix the three answers interleaved.
ISSUE_CHAIN = {"strategy": "fallback",
               "attempts": [{"model": "claude-haiku-4-5", "timeout_ms": 2000},
                            {"model": "gpt-4o-mini", "timeout_ms": 3000},
                            {"model": "gemini-2.5-flash", "timeout_ms": 5000}],
               "retry_on": ["429", "5xx", "timeout"],
               "total_budget_ms": 10000}


def build_request(port: int, model: str, auth: bool, max_tokens: int | None = None) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a story."}], "stream": True}
    raw = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(raw)}\r\nconnection: close\r\n")
    if auth:
        head += f"authorization: Bearer {API_KEY}\r\n"
    return head.encode() + b"\r\n" + raw


def pct(xs: list[float], p: int) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1]


def summarize(name: str, results: list, wall: float) -> dict:
    ttft = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    chunks = sum(r["events"] for r in results)
    ok = [r for r in results if r["status"] == 200]
    cut = sum(1 for r in ok if not r["done"] or r["error"])
    inter = sum(1 for r in ok if len(r["models"]) > 1)
    failed = len(results) - len(ok)
    if failed:  # which statuses (0: no response head), so a refusal is told from a lost stream
        by: dict = {}
        for r in results:
            if r["status"] != 200:
                by[r["status"]] = by.get(r["status"], 0) + 1
        print(f"{name}: {failed} not 200, by status: {dict(sorted(by.items()))}", file=sys.stderr)
    walls = sorted(r["wall"] for r in results)
    return {"name": name, "streams": len(results), "ok": len(ok), "failed": failed, "cut": cut,
            "interleaved": inter, "chunks": chunks, "ttft_p50_ms": pct(ttft, 50) * 1e3,
            "ttft_p99_ms": pct(ttft, 99) * 1e3, "wall_p50_s": pct(walls, 50), "wall_max_s": walls[-1] if walls else 0,
            "run_s": wall}


def start_nginx(tmp: Path, mock_port: int, streams: int) -> tuple[subprocess.Popen, int]:
    """nginx (Debian) as a streaming reverse proxy in front of the mock: one worker, upstream
    keep-alive, no response buffering (each upstream read goes to the client at once), as a
    relay of SSE is configured in front of an LLM API. The independent baseline for the proxy's
    CPU per relayed chunk, measured in the same run."""
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx_bin).exists():
        raise SystemExit("nginx not found: apt-get install nginx-light")
    d = tmp / "nginx"
    (d / "body").mkdir(parents=True, exist_ok=True)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    (d / "nginx.conf").write_text(nginx_relay_conf(d, port, f"127.0.0.1:{mock_port}", 2 * streams + 100, buffering=False))
    p = subprocess.Popen([nginx_bin, "-p", str(d), "-e", str(d / "nginx-error.log"), "-c", str(d / "nginx.conf")],
                         stdout=subprocess.DEVNULL, stderr=open(d / "nginx.log", "wb"), stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            if p.poll() is not None:
                break
            time.sleep(0.05)
    stop(p)
    raise SystemExit(f"nginx did not start: {(d / 'nginx-error.log').read_text(errors='replace')[-1000:]}")


def smaps_rollup(pid: int) -> dict:
    """The proxy's resident memory by kind, in kB (Linux /proc/<pid>/smaps_rollup)."""
    keep = ("Rss", "Anonymous", "Private_Dirty", "Shared_Clean", "Private_Clean")
    out: dict = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for ln in f:
                k, _, rest = ln.partition(":")
                if k in keep:
                    out[k] = int(rest.split()[0])
    except OSError:
        pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("MODELUX_BIN", "build/examples/modelux"))
    ap.add_argument("--streams", type=int, default=200, help="concurrent streams per round")
    ap.add_argument("--rounds", type=int, default=1, help="rounds through the proxy (RSS after each)")
    ap.add_argument("--chunks", type=int, default=100, help="content chunks per stream (mock 'chunks')")
    ap.add_argument("--interval-ms", type=float, default=10, help="gap between the mock's chunks")
    ap.add_argument("--mock-threads", type=int, default=1)
    ap.add_argument("--proxy-threads", type=int, default=1)
    ap.add_argument("--no-direct", action="store_true", help="skip the direct-to-mock baseline")
    ap.add_argument("--no-tracing", action="store_true")
    ap.add_argument("--warmup", type=int, default=0,
                    help="streams through the proxy before the 'before' RSS (default 0: 'before' is the fresh process)")
    ap.add_argument("--routing-timeout-ms", type=int, default=10000,
                    help="the route's timeout_ms: a stream without its first token by then is refused")
    ap.add_argument("--chain", action="store_true",
                    help="route through issue #19's fallback chain: claude-haiku-4-5 (2 s) -> gpt-4o-mini (3 s) -> "
                         "gemini-2.5-flash (5 s), attempt timeouts shorter than the streams. Only then can "
                         "'interleaved' (two models in one stream) and a routing timeout cutting a stream show; "
                         "with the default single target they cannot.")
    ap.add_argument("--settle-s", type=float, default=3.0, help="idle time before the 'after' RSS")
    ap.add_argument("--timeout-s", type=float, default=120.0, help="a stream not ended by then counts as cut")
    ap.add_argument("--hold-s", type=float, default=0.0,
                    help="keep the proxy running this long after the report (to inspect it: gdb, heaptrack, /proc)")
    ap.add_argument("--proxy-wrapper", default="",
                    help="command the proxy runs under, e.g. 'heaptrack -o /tmp/h' (split on spaces)")
    ap.add_argument("--nginx", action="store_true",
                    help="also relay the same streams through nginx (one worker, proxy_buffering off), round for "
                         "round after the proxy's: its CPU per chunk is the baseline, in the same run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers
    need = 2 * a.streams + 100
    if hard < need:
        print(f"warning: RLIMIT_NOFILE hard limit {hard} < {need} needed by the proxy", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="modelux-stream-"))
    # One word per chunk, so a stream has --chunks content chunks (+ role, finish and usage).
    text = " ".join(f"w{i}" for i in range(a.chunks))
    mock_cfg = {"default": {"chunks": a.chunks, "chunk_interval_ms": a.interval_ms, "text": text}, "models": {}}
    (tmp / "mock.json").write_text(json.dumps(mock_cfg))
    mock, mock_port = start(a.bin, ["mock", "--port", "0", "--threads", str(a.mock_threads),
                                    "--config", str(tmp / "mock.json")], tmp / "mock.log")
    procs = [mock]
    ppid = 0
    try:
        proxy, proxy_port = start_proxy(a.bin, tmp, mock_port, threads=a.proxy_threads, tracing=not a.no_tracing,
                                        wrapper=a.proxy_wrapper.split(), timeout_ms=a.routing_timeout_ms,
                                        route=ISSUE_CHAIN if a.chain else None)
        procs.append(proxy)
        ppid = real_pid(proxy, a.bin)  # the proxy itself, also under --proxy-wrapper
        print(f"pids: mock {mock.pid} proxy {ppid}", file=sys.stderr, flush=True)

        out: dict = {"params": vars(a)}
        direct = None
        if not a.no_direct:
            m0 = cpu_seconds(mock.pid)
            res, wall = asyncio.run(run_streams(mock_port, build_request(mock_port, "gpt-4o-mini", False),
                                                a.streams, a.timeout_s, lambda: None))
            direct = summarize("direct", res, wall)
            direct["mock_cpu_s"] = cpu_seconds(mock.pid) - m0
            direct["mock_us_per_chunk"] = direct["mock_cpu_s"] / max(direct["chunks"], 1) * 1e6
            out["direct"] = direct

        rss_cold = rss_mb(ppid)
        if a.warmup:  # one small batch first: what any served stream brings in (code, caches) is idle too
            asyncio.run(run_streams(proxy_port, build_request(proxy_port, "@bench", True), a.warmup, a.timeout_s,
                                    lambda: None))
            time.sleep(a.settle_s)
        time.sleep(0.5)
        rss_before = rss_mb(ppid)
        sm_before = smaps_rollup(ppid)
        peak = {"rss": rss_before}

        def sample():
            peak["rss"] = max(peak["rss"], rss_mb(ppid))

        threads_before = thread_cpu(ppid)
        rounds, nginx_rounds = [], []
        nginx = nginx_port = None
        if a.nginx:
            nginx, nginx_port = start_nginx(tmp, mock_port, a.streams)
            procs.append(nginx)
        for i in range(a.rounds):
            p0, m0 = cpu_seconds(ppid), cpu_seconds(mock.pid)
            res, wall = asyncio.run(run_streams(proxy_port, build_request(proxy_port, "@bench", True),
                                                a.streams, a.timeout_s, sample))
            s = summarize(f"proxy#{i + 1}", res, wall)
            s["proxy_cpu_s"] = cpu_seconds(ppid) - p0
            s["mock_cpu_s"] = cpu_seconds(mock.pid) - m0
            s["proxy_us_per_chunk"] = s["proxy_cpu_s"] / max(s["chunks"], 1) * 1e6
            s["mock_us_per_chunk"] = s["mock_cpu_s"] / max(s["chunks"], 1) * 1e6
            s["rss_peak_mb"] = peak["rss"]
            time.sleep(a.settle_s)
            s["rss_after_mb"] = rss_mb(ppid)
            rounds.append(s)
            if nginx:
                g0, m0 = cpu_seconds(nginx.pid), cpu_seconds(mock.pid)
                res, wall = asyncio.run(run_streams(nginx_port, build_request(nginx_port, "gpt-4o-mini", False),
                                                    a.streams, a.timeout_s, lambda: None))
                g = summarize(f"nginx#{i + 1}", res, wall)
                g["proxy_cpu_s"] = cpu_seconds(nginx.pid) - g0
                g["mock_cpu_s"] = cpu_seconds(mock.pid) - m0
                g["proxy_us_per_chunk"] = g["proxy_cpu_s"] / max(g["chunks"], 1) * 1e6
                g["mock_us_per_chunk"] = g["mock_cpu_s"] / max(g["chunks"], 1) * 1e6
                nginx_rounds.append(g)
        out["rounds"] = rounds
        if nginx_rounds:
            out["nginx_rounds"] = nginx_rounds
        out["rss_mb"] = {"before": rss_before, "peak": peak["rss"], "after": rss_mb(ppid)}

        print(f"modelux streaming relay: {a.streams} concurrent streams x {a.rounds} round(s), "
              f"{a.chunks} chunks {a.interval_ms:g} ms apart, 127.0.0.1, {os.cpu_count()} CPUs, "
              f"proxy threads {a.proxy_threads}, mock threads {a.mock_threads}, tracing {'off' if a.no_tracing else 'on'}")
        hdr = (f"{'run':<9} {'streams':>7} {'ok':>6} {'failed':>6} {'cut':>5} {'interl':>6} {'chunks':>8} "
               f"{'ttft p50':>9} {'ttft p99':>9} {'wall p50':>8} {'wall max':>8} {'proxy us/chunk':>14} {'mock us/chunk':>13}"
               f" {'RSS peak':>8} {'RSS after':>9}")
        print(hdr)
        for s in ([direct] if direct else []) + rounds + nginx_rounds:
            print(f"{s['name']:<9} {s['streams']:>7} {s['ok']:>6} {s['failed']:>6} {s['cut']:>5} {s['interleaved']:>6} "
                  f"{s['chunks']:>8} {s['ttft_p50_ms']:>8.1f}m {s['ttft_p99_ms']:>8.1f}m {s['wall_p50_s']:>7.2f}s "
                  f"{s['wall_max_s']:>7.2f}s {s.get('proxy_us_per_chunk', float('nan')):>14.1f} "
                  f"{s['mock_us_per_chunk']:>13.1f} {s.get('rss_peak_mb', float('nan')):>7.1f}M "
                  f"{s.get('rss_after_mb', float('nan')):>8.1f}M")
        r = out["rss_mb"]
        if a.warmup:
            print(f"proxy RSS at start {rss_cold:.1f} MB; 'before' is after {a.warmup} warm-up stream(s) and the settle time")
        print(f"proxy RSS: before {r['before']:.1f} MB, peak during {r['peak']:.1f} MB, after {r['after']:.1f} MB "
              f"({(r['after'] / r['before'] - 1) * 100:+.0f}% vs before)")
        if direct:
            print(f"TTFT p50 added by the proxy (round 1 vs direct): {rounds[0]['ttft_p50_ms'] - direct['ttft_p50_ms']:+.1f} ms")
        tot = sum(s["proxy_cpu_s"] for s in rounds)
        ch = sum(s["chunks"] for s in rounds)
        mk = sum(s["mock_cpu_s"] for s in rounds)
        print(f"proxy CPU {tot:.2f} s for {ch} chunks = {tot / max(ch, 1) * 1e6:.1f} us/chunk; "
              f"mock {mk / max(ch, 1) * 1e6:.1f} us/chunk; ratio proxy/mock {tot / mk if mk else float('nan'):.2f}")
        # Where the proxy's CPU went over the rounds, per thread: user and system time per chunk
        # and context switches per chunk (the io threads relay; the others trace, poll, trim).
        tb, ta = threads_before, thread_cpu(ppid)
        parts = []
        for name in sorted(ta):
            u0, s0, c0 = tb.get(name, (0.0, 0.0, 0))
            u1, s1, c1 = ta[name]
            if u1 - u0 + s1 - s0 > 0:
                parts.append(f"{name} user {(u1 - u0) / max(ch, 1) * 1e6:.1f} sys {(s1 - s0) / max(ch, 1) * 1e6:.1f} us, "
                             f"{(c1 - c0) / max(ch, 1):.2f} switches")
        print("proxy per chunk by thread: " + "; ".join(parts))
        if nginx_rounds:
            gt = sum(g["proxy_cpu_s"] for g in nginx_rounds)
            gc = sum(g["chunks"] for g in nginx_rounds)
            print(f"nginx CPU {gt:.2f} s for {gc} chunks = {gt / max(gc, 1) * 1e6:.1f} us/chunk; "
                  f"modelux/nginx per chunk {(tot / max(ch, 1)) / (gt / max(gc, 1)) if gt else float('nan'):.2f}")
        sm = smaps_rollup(ppid)
        if sm_before:
            print("proxy smaps_rollup before: " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in sm_before.items()))
        if sm:
            print("proxy smaps_rollup after: " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in sm.items()))
        if a.json:
            print(json.dumps(out, indent=2, default=str))
        if a.hold_s > 0:
            print(f"holding: proxy pid {ppid} for {a.hold_s:g} s", flush=True)
            time.sleep(a.hold_s)
        bad = sum(s["failed"] + s["cut"] + s["interleaved"] for s in rounds)
        return 1 if bad else 0
    finally:
        if len(procs) > 1 and ppid != procs[1].pid:  # a wrapper: the proxy ends, then the wrapper
            try:
                os.kill(ppid, 15)
            except OSError:
                pass
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
