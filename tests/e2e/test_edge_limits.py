"""The HTTP shell's own limits (issue #11 items 5, 6 and 9): the accept loop at the fd limit,
the memory held by slow uploads (unauthenticated, and authenticated past the global cap on
buffered body bytes), and header values that are not valid UTF-8."""

from __future__ import annotations

import os
import re
import resource
import select
import socket
import time
from pathlib import Path

from e2e_support import API_KEY, MESSAGES, http_request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    # utime and stime are fields 14 and 15 of /proc/PID/stat (after the parenthesised name).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident set size in MB (VmHWM: its peak since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def runnable_fraction(pid: int, seconds: float = 1.0) -> float:
    """The fraction of samples (every 10 ms) in which some thread of `pid` is running or
    runnable. A spinning loop is runnable all the time even on a loaded machine, where its CPU
    time depends on the scheduler's share; a loop that backs off sleeps."""
    hits = total = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                states.append(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass
        total += 1
        hits += "R" in states
        time.sleep(0.01)
    return hits / max(total, 1)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(proxy, name: str) -> float:
    r = proxy.request("GET", "/metrics")
    assert r.status == 200, r.text
    m = re.search(rf"^{name} ([0-9.e+]+)$", r.text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------- fd exhaustion


def test_accept_loop_backs_off_at_the_fd_limit_and_recovers(start_proxy):
    proxy = start_proxy()
    pid = proxy.proc.proc.pid
    assert proxy.request("GET", "/healthz").status == 200
    limit = open_fds(pid) + 12
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    held: list[socket.socket] = []
    try:
        # Fill every fd the proxy has left with idle connections, then queue more in the backlog.
        for _ in range(limit + 20):
            held.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
        wait_until(lambda: open_fds(pid) >= limit - 1, 10, "the proxy to reach its fd limit")
        # More connections arrive while it is at the limit: each gets a fast refusal (503
        # through the reserve fd, or a close), not a hang in the backlog.
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            held.append(s)
            s.settimeout(5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                reply = s.recv(4096)
            except ConnectionResetError:
                reply = b""
            assert reply == b"" or reply.startswith(b"HTTP/1.1 503"), reply[:200]
        # At the limit with connections pending, the accept loop must not spin.
        held.extend(socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(5))
        c0, t0 = cpu_seconds(pid), time.monotonic()
        runnable = runnable_fraction(pid, 1.0)
        used = cpu_seconds(pid) - c0
        elapsed = time.monotonic() - t0
        print(f"proxy at the fd limit: {used:.3f} s CPU over {elapsed:.2f} s, runnable in {runnable:.0%} of samples")
        assert used < 0.2, f"the accept loop burns CPU at the fd limit: {used:.2f} s of CPU in {elapsed:.2f} s"
        assert runnable < 0.2, f"the proxy is runnable in {runnable:.0%} of samples at the fd limit (spinning)"
    finally:
        for s in held:
            s.close()
    # Once the connections are gone the proxy serves again (the back-off is at most 1 s).
    def healthy() -> bool:
        try:
            return http_request(proxy.port, "GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    wait_until(healthy, 10, "/healthz after the fds were freed")
    assert metric(proxy, "modelux_accept_backoffs_total") > 0
    assert metric(proxy, "modelux_accept_refused_total") > 0
    r = proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert r.choices[0].message.content


def test_out_of_fds_for_the_upstream_is_a_local_503_with_retry_after_that_opens_no_breaker(start_proxy, mock):
    """Issue #19, reproduction 3: the proxy accepted the caller but has no descriptor left to
    connect upstream. Before: 502 "connect to 127.0.0.1:PORT: Operation canceled", charged to
    the provider until its breaker opened. Now: 503 local_resource_exhausted with retry-after
    and the real cause, health untouched, and the provider is served again once fds are back."""
    import http.client
    import json as _json

    proxy = start_proxy()
    pid = proxy.proc.proc.pid
    assert proxy.request("GET", "/healthz").status == 200
    proxy.put_config("one", {"strategy": "single", "model": "gpt-4o-mini"})
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.connect()  # accepted before the limit: the caller's connection holds its fd
    wait_until(lambda: open_fds(pid) >= 1, 5, "the proxy to accept")
    time.sleep(0.2)
    saved = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = open_fds(pid)  # not one descriptor more: every upstream connect fails with EMFILE
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, saved[1]))
    body = _json.dumps({"model": "@one", "messages": MESSAGES})
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    try:
        for i in range(8):  # five consecutive failures would trip a breaker
            conn.request("POST", "/v1/chat/completions", body, headers)
            r = conn.getresponse()
            data = r.read()
            assert r.status == 503, (i, r.status, data[:300])
            err = _json.loads(data)["error"]
            assert err["code"] == "local_resource_exhausted", err
            assert "too many open files" in err["message"], err
            assert "Operation canceled" not in err["message"], err
            assert int(r.getheader("retry-after")) >= 1
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, saved)
        conn.close()
    state = proxy.request("GET", "/v1/health").json()
    mini = [t for t in state["targets"] if t["target"] == "openai/gpt-4o-mini"]
    assert not mini or mini[0]["breaker"] == "closed", mini
    r = proxy.chat_raw({"model": "@one", "messages": MESSAGES})
    assert r.status == 200, r.text
    assert proxy.trace(r.headers["x-request-id"])["attempts"][0]["outcome"] == "ok"


# ---------------------------------------------------------------------------- slow uploads

UPLOADS = 200
ANNOUNCED = 4 * 1024 * 1024
# What each upload sends of its 4 MiB before it stalls: 200 of them are 50 MiB, which a server
# that buffers bodies before checking the key holds in RAM.
SENT = 256 * 1024


def slow_uploads(port: int, auth: bool, n: int = UPLOADS) -> list[socket.socket]:
    """n connections, each sending a header that announces 4 MiB, then SENT bytes of it."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {ANNOUNCED}\r\n"
        )
        if auth:
            head += f"Authorization: Bearer {API_KEY}\r\n"
        socks.append(s)
        try:
            s.sendall((head + "\r\n").encode() + b"{" + b" " * (SENT - 1))
        except OSError:
            pass  # refused and closed while we were still sending: fine, the answer is read later
    return socks


def statuses_of(socks: list[socket.socket], timeout: float) -> list[int | None]:
    """The status each socket is answered with within `timeout` overall (None: no answer)."""
    out: dict[int, int | None] = {i: None for i in range(len(socks))}
    pending = dict(enumerate(socks))
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending.values()), [], [], max(0.0, deadline - time.monotonic()))
        for s in ready:
            i = next(k for k, v in pending.items() if v is s)
            del pending[i]
            try:
                m = re.match(rb"HTTP/1\.1 (\d+)", s.recv(4096))
                out[i] = int(m.group(1)) if m else None
            except OSError:
                pass
    return [out[i] for i in range(len(socks))]


def test_slow_unauthenticated_uploads_are_refused_from_the_header_and_cost_no_memory(start_proxy):
    proxy = start_proxy()
    pid = proxy.proc.proc.pid
    before = rss_mb(pid)
    socks = slow_uploads(proxy.port, auth=False)
    try:
        statuses = statuses_of(socks, timeout=10)
        during = rss_mb(pid, "VmHWM")
        print(f"RSS with {UPLOADS} slow unauthenticated 4 MiB uploads ({SENT // 1024} KiB sent each): "
              f"{before:.1f} MB before, peak {during:.1f} MB during")
        # Answered from the header (401) without waiting for the 4 MiB that never come.
        assert statuses.count(401) == UPLOADS, statuses
        assert during - before < 40, f"RSS grew from {before:.1f} to {during:.1f} MB"
    finally:
        for s in socks:
            s.close()
    assert proxy.request("GET", "/healthz").status == 200


def test_global_cap_on_buffered_body_bytes_refuses_authenticated_slow_uploads(start_proxy):
    cap = 8 * 1024 * 1024  # two 4 MiB bodies
    proxy = start_proxy(lambda cfg: cfg["server"].update({"max_inflight_body_bytes": cap}))
    pid = proxy.proc.proc.pid
    before = rss_mb(pid)
    socks = slow_uploads(proxy.port, auth=True)
    try:
        wait_until(lambda: metric(proxy, "modelux_body_budget_refused_total") >= UPLOADS - 2, 20,
                   "the uploads past the cap to be refused")
        during = rss_mb(pid, "VmHWM")
        print(f"RSS with {UPLOADS} slow authenticated 4 MiB uploads ({SENT // 1024} KiB sent each), cap 8 MiB: "
              f"{before:.1f} MB before, peak {during:.1f} MB during")
        assert metric(proxy, "modelux_body_bytes_in_flight") == cap
        statuses = statuses_of(socks, timeout=3)
        assert statuses.count(503) == UPLOADS - 2 and statuses.count(None) == 2, statuses
        assert during - before < 40, f"RSS grew from {before:.1f} to {during:.1f} MB"
    finally:
        for s in socks:
            s.close()
    # The two bodies in flight are released when their connections go.
    wait_until(lambda: metric(proxy, "modelux_body_bytes_in_flight") == 0, 10, "the body budget to be released")
    r = proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert r.choices[0].message.content


def test_a_refused_upload_gets_retry_after_in_openai_shape(start_proxy):
    proxy = start_proxy(lambda cfg: cfg["server"].update({"max_inflight_body_bytes": 1024}))
    r = proxy.chat_raw({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2000}]})
    assert r.status == 503
    assert r.headers.get("retry-after") == "1"
    assert r.json()["error"]["code"] == "server_busy"


# ---------------------------------------------------------------------------- UTF-8 headers


def test_header_values_that_are_not_utf8_get_400_and_poison_nothing(start_proxy):
    proxy = start_proxy(lambda cfg: cfg.update(budgets=[{"name": "per-user", "scope": {"end_user": "*"}, "window": "daily",
                                                          "limit_usd": 5}]))
    # http.client sends str header values as latin-1: "\xe9" goes out as the byte 0xE9,
    # which is not UTF-8.
    r = proxy.request("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES},
                      headers={"x-modelux-end-user": "caf\xe9"})
    assert r.status == 400, r.text
    err = r.json()["error"]
    assert "not valid UTF-8" in err["message"] and err["type"] == "invalid_request_error"
    # Nothing stored it: the admin endpoints answer.
    for path in ("/v1/budgets", "/v1/models", "/v1/configs"):
        a = proxy.request("GET", path)
        assert a.status == 200 and a.json() is not None, (path, a.status, a.text[:200])
    ok = proxy.request("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES},
                       headers={"x-modelux-end-user": "café".encode().decode("latin-1")})
    assert ok.status == 200, ok.text
