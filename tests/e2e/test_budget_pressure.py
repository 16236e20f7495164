"""Issue #11 item 1: `modelux serve` crashed (SIGSEGV in cancellation_slot::clear()) once a
budget cap started refusing under concurrent load. The reproduction: gpt-4o-mini on the mock
with 20 ms latency, one key for project alpha, @fast = single gpt-4o-mini, a global daily cap
of $0.005, and 8 concurrent clients. Before the fix the proxy died within a few dozen requests
once the cap bit; now every request gets 200 or 429 and the proxy stays up.

A second case runs two proxies sharing a real redis-server, the cap biting on both."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e_support import MESSAGES, Proxy, http_request

CONCURRENCY = 8
# Enough refusals to have hit the race many times over (the unfixed proxy died after ~10).
TARGET_REFUSALS = 400
DEADLINE_S = 30.0


def alpha_config(cfg: dict, redis_url: str | None = None, instance: str = "") -> None:
    cfg["server"]["api_keys"] = [{"key": cfg["server"]["api_keys"][0]["key"], "name": "alpha", "project": "alpha"}]
    cfg["routing"] = {"fast": {"strategy": "single", "model": "gpt-4o-mini"}}
    cfg["budgets"] = [{"name": "small", "scope": {}, "window": "daily", "limit_usd": 0.005}]
    if redis_url:
        cfg["budget_backend"] = {"redis_url": redis_url, "instance_id": instance, "sync_interval_ms": 50}


def hammer(proxies: list[Proxy], target_refusals: int = TARGET_REFUSALS, per_proxy: dict | None = None) -> Counter:
    """CONCURRENCY threads (official SDK, keep-alive) spread over `proxies` until enough
    refusals were seen or the deadline passed. Returns outcome counts (and per proxy port in
    `per_proxy`)."""
    counts: Counter = Counter()
    if per_proxy is not None:
        per_proxy.update({p.port: Counter() for p in proxies})
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + DEADLINE_S

    def worker(i: int) -> None:
        proxy = proxies[i % len(proxies)]
        client = proxy.client(timeout=10.0)
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                client.chat.completions.create(model="@fast", messages=MESSAGES)
                outcome = "ok"
            except openai.RateLimitError as e:
                outcome = "refused" if e.status_code == 429 else f"status {e.status_code}"
            except openai.APIStatusError as e:
                outcome = f"status {e.status_code}"
            except openai.APIConnectionError:
                outcome = "connection error"
            with lock:
                counts[outcome] += 1
                if per_proxy is not None:
                    per_proxy[proxy.port][outcome] += 1
                if counts["refused"] >= target_refusals or counts["connection error"] > 0:
                    stop.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


def assert_survived(counts: Counter, proxies: list[Proxy]) -> None:
    for p in proxies:
        assert p.proc.alive(), f"the proxy died under budget pressure ({dict(counts)}); log: " + p.proc.log_path.read_text(
            errors="replace"
        )[-2000:]
        assert http_request(p.port, "GET", "/healthz").status == 200
    assert set(counts) <= {"ok", "refused"}, f"unexpected outcomes: {dict(counts)}"
    assert counts["ok"] > 0, "the cap refused from the first request: the test exercised nothing"
    assert counts["refused"] >= TARGET_REFUSALS // 2, f"the cap never bit hard: {dict(counts)}"


def test_budget_cap_refusing_under_concurrency_does_not_crash(mock, start_proxy):
    mock.configure(models={"gpt-4o-mini": {"latency_ms": 20}})
    proxy = start_proxy(alpha_config)
    counts = hammer([proxy])
    assert_survived(counts, [proxy])


# ---------------------------------------------------------------------------- fleet soak


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        return 32768


class RedisServer:
    """redis-server from PATH on a port below the ephemeral range (it cannot report a port it
    picked itself), retried on a clash; killed by pid at the end."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            pytest.skip("redis-server not in PATH")
        self.dir = tempfile.mkdtemp(prefix="modelux-redis-")
        hi = _ephemeral_low() - 1
        lo = max(1024, hi - 10000)
        for _ in range(50):
            self.port = random.randint(lo, hi)
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                 "--appendonly", "no", "--protected-mode", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._answers():
                return
            self.stop()
        raise RuntimeError("redis-server found no free port")

    def _answers(self) -> bool:
        import socket

        until = time.monotonic() + 5
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"INFO server\r\n")
                    data = s.recv(65536).decode(errors="replace")
                    return f"process_id:{self.proc.pid}" in data
            except OSError:
                time.sleep(0.02)
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Any:
    r = RedisServer()
    yield r
    r.close()


def test_two_proxies_sharing_redis_survive_the_cap_biting_on_both(mock, start_proxy, redis_server):
    mock.configure(models={"gpt-4o-mini": {"latency_ms": 20}})
    proxies = [start_proxy(lambda cfg, i=i: alpha_config(cfg, redis_server.url, f"proxy-{i}")) for i in range(2)]
    per_proxy: dict = {}
    counts = hammer(proxies, per_proxy=per_proxy)
    print(f"outcomes per proxy: {per_proxy}")
    assert_survived(counts, proxies)
    # The cap is shared and bit on both instances.
    for port, c in per_proxy.items():
        assert c["refused"] > 0, f"the cap never bit on the proxy at :{port}: {per_proxy}"
