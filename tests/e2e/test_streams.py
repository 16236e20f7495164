"""Streams that are delivering are never cut or overlapped (issue #19).

The two reproductions of the issue, over real sockets with the official OpenAI SDK and with a
raw asyncio client (HTTP/1.1 over asyncio streams, reading events as they arrive), against
the mock provider:

1. `single` with timeout_ms 2000 and a stream that delivers steadily for 5 s: the caller gets
   the whole answer and [DONE] (before the fix: cut at 2 s with a timeout error event).
2. The fallback chain claude-haiku-4-5 (2 s) -> gpt-4o-mini (3 s) -> gemini-2.5-flash (5 s) with
   healthy 5 s streams: one model's answer, and a trace with the real TTFT and tokens (before:
   three models' answers interleaved, an error at 8 s, "timeout" for every attempt).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from e2e_support import API_KEY, MESSAGES, collect_stream

# Every model answers with its own text, so interleaved streams show in the content.
TEXTS = {
    "claude-haiku-4-5": "haiku " + " ".join(f"h{i}" for i in range(50)),
    "gpt-4o-mini": "mini " + " ".join(f"m{i}" for i in range(50)),
    "gemini-2.5-flash": "flash " + " ".join(f"f{i}" for i in range(50)),
}
# 50 chunks, 100 ms apart: a healthy stream of about 5 s.
STEADY_5S = {"chunks": 50, "chunk_interval_ms": 100}

SINGLE_2S = {"strategy": "single", "model": "claude-haiku-4-5", "timeout_ms": 2000}
CHAIN_2_3_5 = {
    "strategy": "fallback",
    "attempts": [
        {"model": "claude-haiku-4-5", "timeout_ms": 2000},
        {"model": "gpt-4o-mini", "timeout_ms": 3000},
        {"model": "gemini-2.5-flash", "timeout_ms": 5000},
    ],
    "retry_on": ["429", "5xx", "timeout"],
    "total_budget_ms": 10000,
}


@pytest.fixture(autouse=True)
def steady_streams(mock):
    mock.configure({m: {**STEADY_5S, "text": t} for m, t in TEXTS.items()})


def sdk_stream(proxy, model: str) -> tuple[str, str | None, str]:
    """(content, finish_reason, request id) through the official SDK; raises on an error event."""
    client = proxy.client(timeout=30.0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    got = collect_stream(raw.parse())
    return got.content, got.finish_reason, raw.headers["x-request-id"]


async def raw_stream(port: int, model: str) -> tuple[list[str], str]:
    """Every SSE data payload, in order, read as it arrives by a raw asyncio HTTP/1.1 client."""
    body = json.dumps(
        {"model": model, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            + f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n".encode()
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status = (await asyncio.wait_for(reader.readline(), 30)).split()
        assert status[1] == b"200", status
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        buf = b""
        events: list[str] = []
        while True:
            if chunked:
                size = int((await asyncio.wait_for(reader.readline(), 30)).split(b";")[0], 16)
                if size == 0:
                    break
                piece = await asyncio.wait_for(reader.readexactly(size + 2), 30)
                buf += piece[:-2]
            else:
                piece = await asyncio.wait_for(reader.read(65536), 30)
                if not piece:
                    break
                buf += piece
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                for ln in block.decode().split("\n"):
                    if ln.startswith("data:"):
                        events.append(ln[5:].strip())
        return events, headers["x-request-id"]
    finally:
        writer.close()


def content_of(events: list[str]) -> str:
    out = ""
    for e in events:
        if e == "[DONE]":
            continue
        c = json.loads(e)
        for ch in c.get("choices", []):
            out += ch["delta"].get("content") or ""
    return out


def check_trace(proxy, rid: str, model: str) -> None:
    t = proxy.trace(rid)
    assert t["ok"], t
    assert t["served_model"] == model
    attempts = t["attempts"]
    assert len(attempts) == 1, attempts
    a = attempts[0]
    assert a["outcome"] == "ok", a
    assert a["ttft_ms"] is not None and a["ttft_ms"] > 0, a
    assert a["usage"]["completion_tokens"] > 0, a


@pytest.mark.parametrize("cfg", [SINGLE_2S, CHAIN_2_3_5], ids=["single-2s", "chain-2s-3s-5s"])
def test_sdk_a_delivering_stream_is_never_cut_or_mixed(proxy, route, cfg):
    content, finish, rid = sdk_stream(proxy, route(cfg))
    assert content == TEXTS["claude-haiku-4-5"]
    assert finish == "stop"
    check_trace(proxy, rid, "claude-haiku-4-5")


@pytest.mark.parametrize("cfg", [SINGLE_2S, CHAIN_2_3_5], ids=["single-2s", "chain-2s-3s-5s"])
def test_raw_asyncio_a_delivering_stream_is_never_cut_or_mixed(proxy, route, cfg):
    events, rid = asyncio.run(raw_stream(proxy.port, route(cfg)))
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), [c for c in chunks if "error" in c]
    assert {c["model"] for c in chunks} == {"claude-haiku-4-5"}
    assert content_of(events) == TEXTS["claude-haiku-4-5"]
    check_trace(proxy, rid, "claude-haiku-4-5")


def test_raw_asyncio_concurrent_delivering_streams_are_each_one_answer(proxy, route):
    """Several callers at once on the chain: every stream is one model's whole answer."""
    slug = route(CHAIN_2_3_5)

    async def many() -> list[tuple[list[str], str]]:
        return await asyncio.gather(*(raw_stream(proxy.port, slug) for _ in range(8)))

    for events, _ in asyncio.run(many()):
        assert events[-1] == "[DONE]"
        assert content_of(events) == TEXTS["claude-haiku-4-5"]


def upstream_gauge(proxy, name: str) -> float:
    r = proxy.request("GET", "/metrics", auth=False)
    assert r.status == 200
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_burst_of_streams_leaves_few_idle_upstream_connections_once_quiet(proxy, mock):
    """A burst of concurrent streams needs one upstream connection each, and they all go back
    to the pool (up to max_idle_per_origin, 1024). Once the proxy is quiet it keeps only
    quiet_idle_per_origin (16) of them: the rest, with their sockets and buffers, would
    otherwise stay for the 60 s idle timeout and hold the memory the burst used (issue #19,
    RSS after streams). Before: 40 idle connections stayed."""
    burst = 40
    # 2 s streams: all of them are open at once even on a loaded machine.
    mock.configure({"gpt-4o-mini": {"chunks": 20, "chunk_interval_ms": 100, "text": TEXTS["gpt-4o-mini"]}})
    opened0 = upstream_gauge(proxy, "modelux_upstream_connections_opened_total")

    async def many() -> list[tuple[list[str], str]]:
        return await asyncio.gather(*(raw_stream(proxy.port, "gpt-4o-mini") for _ in range(burst)))

    for events, _ in asyncio.run(many()):
        assert events[-1] == "[DONE]"
    # Every stream had its own upstream connection (none could be reused mid-burst).
    assert upstream_gauge(proxy, "modelux_upstream_connections_opened_total") - opened0 >= burst
    deadline = time.monotonic() + 20  # the idle trimmer looks every 2 s
    idle = upstream_gauge(proxy, "modelux_upstream_connections_idle")
    while idle > 16 and time.monotonic() < deadline:
        time.sleep(0.2)
        idle = upstream_gauge(proxy, "modelux_upstream_connections_idle")
    assert idle <= 16, f"{idle:g} idle upstream connections stayed after the burst"
    # The pool still serves: the next stream goes out on a kept connection.
    reused0 = upstream_gauge(proxy, "modelux_upstream_connections_reused_total")
    events, _ = asyncio.run(raw_stream(proxy.port, "gpt-4o-mini"))
    assert events[-1] == "[DONE]"
    assert upstream_gauge(proxy, "modelux_upstream_connections_reused_total") >= reused0 + 1


def anon_kb(proxy) -> int:
    """The proxy's anonymous resident memory (heap, arenas, stacks), without the mapped code."""
    with open(f"/proc/{proxy.proc.proc.pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    raise AssertionError("no Anonymous line in smaps_rollup")


def test_a_burst_of_streams_gives_its_memory_back_once_quiet(proxy, mock):
    """Issue #19 item 5: after a burst of concurrent streams the proxy's memory returns near
    idle once it is quiet. The burst's buffers are freed when its streams end, but glibc can
    only hand back a page with nothing live in it, and a burst leaves long-lived objects
    scattered over the pages it used: Asio's per-socket state (one per socket, kept by Asio for
    reuse), pooled connections and sessions. The idle trimmer frees or trims those, then
    malloc_trim. Before (Asio's states kept): about 10 MB of a 500-stream burst's memory stayed
    resident; the bound below is 4 MB."""
    burst = 500
    mock.configure({"gpt-4o-mini": {"chunks": 10, "chunk_interval_ms": 100, "text": TEXTS["gpt-4o-mini"]}})
    # One stream first: what any served request brings in (thread caches, lazily built state)
    # belongs to the idle figure, not to the burst.
    events, _ = asyncio.run(raw_stream(proxy.port, "gpt-4o-mini"))
    assert events[-1] == "[DONE]"
    time.sleep(0.5)
    idle = anon_kb(proxy)
    peak = idle

    async def many() -> list[tuple[list[str], str]]:
        nonlocal peak
        tasks = [asyncio.create_task(raw_stream(proxy.port, "gpt-4o-mini")) for _ in range(burst)]
        while not all(t.done() for t in tasks):
            peak = max(peak, anon_kb(proxy))
            await asyncio.sleep(0.1)
        return [t.result() for t in tasks]

    for events, _ in asyncio.run(many()):
        assert events[-1] == "[DONE]"
    deadline = time.monotonic() + 20  # the idle trimmer looks every 2 s and needs two looks
    after = anon_kb(proxy)
    while after - idle > 4096 and time.monotonic() < deadline:
        time.sleep(0.25)
        after = anon_kb(proxy)
    print(f"\nanonymous RSS: idle {idle} kB, peak {peak} kB, after {after} kB")
    assert peak - idle > 8 * 1024, "the burst did not grow the heap: it tests nothing"
    assert after - idle <= 4096, f"{after - idle} kB of the burst's memory stayed (idle {idle} kB, peak {peak} kB)"
