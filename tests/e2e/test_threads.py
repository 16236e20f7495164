"""server.threads: 2 (issue #13, scaling): two io threads, each with its own io_context,
listener (SO_REUSEPORT), upstream connection pool and session pool. Connections spread over
both threads, upstream connections are reused per thread, and a SIGTERM drain finishes the
streams in flight on both threads and exits 0.

Which io thread did work is read from /proc: the io threads are named modelux-io0 and
modelux-io1, and a thread with no connection has nothing to wake it (no timer of its own), so
its voluntary context switches (each wake-up from epoll_wait) stay put."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path

from e2e_support import API_KEY, MESSAGES

DRAIN_MS = 8000


def io_threads(pid: int) -> dict[str, dict[str, int]]:
    """{thread name: {"cpu": utime+stime ticks, "wakes": voluntary context switches}} of the
    process's modelux-io threads."""
    out: dict[str, dict[str, int]] = {}
    # A thread an io thread starts inherits its name (Asio's resolver thread does): the io
    # thread itself is the first of that name, the lowest id.
    for task in sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda t: int(t.name), reverse=True):
        try:
            name = (task / "comm").read_text().strip()
            if not name.startswith("modelux-io"):
                continue
            stat = (task / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        wakes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt_switches"))
        out[name] = {"cpu": int(fields[11]) + int(fields[12]), "wakes": wakes}
    return out


def two_threads(cfg: dict) -> None:
    cfg["server"]["threads"] = 2
    cfg["server"]["drain_timeout_ms"] = DRAIN_MS
    cfg["routing"]["slow"] = {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 20000}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_threads_2_spreads_connections_over_both_io_threads_and_reuses_upstream_per_thread(mock, start_proxy):
    proxy = start_proxy(two_threads)
    pid = proxy.proc.proc.pid
    before = io_threads(pid)
    assert sorted(before) == ["modelux-io0", "modelux-io1"], before
    conns, per_conn = 16, 20
    body = json.dumps({"model": "@fast", "messages": MESSAGES})
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    failures: list[str] = []

    def client() -> None:
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
        try:
            for _ in range(per_conn):  # one keep-alive connection: stays on one io thread
                c.request("POST", "/v1/chat/completions", body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                if r.status != 200:
                    failures.append(f"{r.status} {data[:200]!r}")
        finally:
            c.close()

    ts = [threading.Thread(target=client) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not failures, failures[:3]
    after = io_threads(pid)
    for name in ("modelux-io0", "modelux-io1"):
        woke = after[name]["wakes"] - before[name]["wakes"]
        # 16 connections: the kernel's hash leaves one listener without any with chance 2^-15.
        assert woke >= 10, f"{name} barely ran ({woke} wake-ups): the connections did not spread: {before} {after}"
    m = proxy.request("GET", "/metrics").text
    total = conns * per_conn
    opened = metric(m, "modelux_upstream_connections_opened_total")
    reused = metric(m, "modelux_upstream_connections_reused_total")
    # Each thread pools its own upstream connections: at most one per client connection in
    # flight on it, so at most `conns` over both, the rest reused.
    assert 2 <= opened <= conns, opened
    assert reused >= total - opened, (opened, reused)
    assert metric(m, "modelux_connections_open") >= 1  # this /metrics connection, summed over both listeners


def test_threads_2_sigterm_drains_streams_in_flight_on_both_threads(mock, start_proxy):
    # 20 chunks 100 ms apart: 2 s streams.
    mock.configure(models={"gpt-4o-mini": {"chunks": 20, "chunk_interval_ms": 100}})
    proxy = start_proxy(two_threads)
    pid = proxy.proc.proc.pid
    n = 12
    started = threading.Semaphore(0)
    results: list[dict] = [{} for _ in range(n)]

    def stream(i: int) -> None:
        text = ""
        for chunk in proxy.client(timeout=30).chat.completions.create(model="@slow", messages=MESSAGES, stream=True):
            if not text:
                started.release()
            for ch in chunk.choices:
                text += ch.delta.content or ""
        results[i] = {"text": text, "done": True}  # the SDK ends the iteration only at [DONE]

    ts = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for _ in range(n):
        assert started.acquire(timeout=15), "a stream never started"
    # Both io threads relay chunks now: each wakes for every chunk of its streams.
    a = io_threads(pid)
    time.sleep(0.5)
    b = io_threads(pid)
    for name in ("modelux-io0", "modelux-io1"):
        assert b[name]["wakes"] - a[name]["wakes"] >= 3, f"{name} relays no stream: {a} {b}"

    sent = time.monotonic()
    proxy.proc.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        # Several connects: every listener must be closed, not only the one the hash picks.
        for _ in range(8):
            try:
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                return False
            except (ConnectionRefusedError, ConnectionResetError):
                continue
        return True

    deadline = time.monotonic() + 2
    while not refused():
        assert time.monotonic() < deadline, "a listener still accepts after SIGTERM"
        time.sleep(0.02)
    assert any(t.is_alive() for t in ts), "the streams ended before the listeners closed: the test proved nothing"
    for t in ts:
        t.join(20)
    for i, r in enumerate(results):
        assert r.get("done") and r["text"], f"stream {i} did not complete: {r}"
    rc = proxy.proc.proc.wait(timeout=DRAIN_MS / 1000 + 5)
    assert rc == 0, f"exit status {rc}"
    assert time.monotonic() - sent < DRAIN_MS / 1000


def test_threads_2_config_swaps_and_admin_endpoints_reach_both_threads(mock, start_proxy):
    # A routing config installed through the admin API is one table for every io thread: new
    # connections (spread over both listeners) all route with it at once.
    proxy = start_proxy(two_threads)
    version = proxy.put_config("live", {"strategy": "single", "model": "gemini-2.5-flash", "timeout_ms": 2000})
    assert version >= 1
    served = set()
    for _ in range(16):  # a fresh connection each: both listeners get some (2^-15 to miss)
        r = proxy.chat_raw({"model": "@live", "messages": MESSAGES})
        assert r.status == 200, r.text
        served.add(r.json()["model"])
    assert served == {"gemini-2.5-flash"}, served
    assert proxy.request("GET", "/readyz").status == 200
    r = proxy.request("GET", "/v1/configs/live")
    assert r.status == 200 and r.json()["version"] == version, r.text
    assert mock.requests_for("gemini-2.5-flash") == 16
