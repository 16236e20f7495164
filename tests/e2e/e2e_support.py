"""End-to-end support: a real `modelux mock` and a real `modelux serve` on 127.0.0.1.

Processes are started with `--port 0`; the port is read from the "listening on" line each
prints. Every process started here is killed at teardown (and, as a last resort, at interpreter
exit). The mock is shared by the session and reset before every test; each test module gets
its own proxy (its own trace database); tests that need a special server config start one
with the `start_proxy` factory.

Binary: $MODELUX_BIN, default <repo>/build/examples/modelux (derived from this file's location).
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
# The binary of this checkout, never one of another clone: relative to this file.
MODELUX_BIN = os.environ.get("MODELUX_BIN", str(REPO / "build" / "examples" / "modelux"))
API_KEY = "mlx-e2e-test-key-0001"
START_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 15.0

_LISTEN_RE = re.compile(r"listening on http://([0-9.]+|\[[0-9a-f:]+\]|localhost):(\d+)")
_live: list["ServerProcess"] = []


# ---------------------------------------------------------------------------- processes


class ServerProcess:
    """A modelux subprocess that printed `... listening on http://HOST:PORT`."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        if not os.access(MODELUX_BIN, os.X_OK):
            pytest.fail(f"modelux binary not found at {MODELUX_BIN} (set MODELUX_BIN)", pytrace=False)
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [MODELUX_BIN, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        _live.append(self)
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        buf = b""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            m = _LISTEN_RE.search(buf.decode(errors="replace"))
            if m:
                self._drain_stdout(fd)
                return int(m.group(2))
        self.stop()
        raise RuntimeError(
            f"`modelux {' '.join(self.args)}` did not report a port within {START_TIMEOUT_S}s; "
            f"stdout={buf!r} stderr={self.log_path.read_text(errors='replace')[-2000:]!r}"
        )

    def _drain_stdout(self, fd: int) -> None:
        """Keeps reading stdout after the port line (into the log), so a chatty server can
        never block on a full pipe."""

        def drain() -> None:
            try:
                while chunk := os.read(fd, 65536):
                    if not self._log.closed:
                        self._log.write(chunk)
            except (OSError, ValueError):
                pass

        threading.Thread(target=drain, name=f"drain-{self.proc.pid}", daemon=True).start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        # The drain thread sees EOF once the process is gone; the pipe is closed with the Popen.
        self._log.close()
        if self in _live:
            _live.remove(self)


@atexit.register
def _kill_leftovers() -> None:
    for p in list(_live):
        try:
            p.stop()
        except Exception:  # noqa: BLE001 - last-resort cleanup must not raise
            pass


# ---------------------------------------------------------------------------- raw HTTP


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> HttpResponse:
    """One request on a fresh connection; the whole body is read (streams included)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    h = {"content-type": "application/json"} if body is not None else {}
    h.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        try:
            data = r.read()
        except http.client.IncompleteRead as e:  # a stream cut by the server
            data = e.partial
        return HttpResponse(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def sse_events(body: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    out = []
    for block in body.decode(errors="replace").split("\n\n"):
        data = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


# ---------------------------------------------------------------------------- the mock


class Mock:
    def __init__(self, proc: ServerProcess):
        self.proc = proc
        self.port = proc.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.pristine_default = self.get_config()["default"]

    def get_config(self) -> dict:
        r = http_request(self.port, "GET", "/_mock/config")
        assert r.status == 200, r.text
        return r.json()

    def configure(self, models: dict[str, dict] | None = None, default: dict | None = None) -> dict:
        """Merges behaviours into the live mock config: {"upstream-model": {"error_status": 429}}."""
        doc: dict[str, Any] = {"models": models or {}}
        if default is not None:
            doc["default"] = default
        r = http_request(self.port, "POST", "/_mock/config", doc)
        assert r.status == 200, f"mock rejected {doc}: {r.text}"
        return r.json()

    def reset(self) -> None:
        """Back to the start-up behaviour (no faults) with zeroed counters."""
        current = self.get_config()
        doc = {"default": self.pristine_default, "models": {m: None for m in current["models"]}, "seed": 42,
               "rate_limited_keys": {}}
        r = http_request(self.port, "POST", "/_mock/config", doc)
        assert r.status == 200, r.text
        r = http_request(self.port, "POST", "/_mock/reset", b"")
        assert r.status == 200, r.text

    def stats(self) -> dict:
        r = http_request(self.port, "GET", "/_mock/stats")
        assert r.status == 200, r.text
        return r.json()

    def requests_for(self, upstream_model: str) -> int:
        return self.stats()["models"].get(upstream_model, {}).get("requests", 0)


# ---------------------------------------------------------------------------- the proxy


def base_config(mock_url: str, trace_db: Path) -> dict:
    """A proxy config whose every provider points at the mock, with short timeouts so a
    fault costs at most a few hundred milliseconds."""
    return {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "threads": 1,
            # admin: the suite installs routing configs (PUT /v1/configs needs an admin key).
            "api_keys": [{"key": API_KEY, "name": "e2e", "project": "e2e", "role": "admin"}],
        },
        "providers": {
            "anthropic": {"base_url": mock_url, "api_key": "mock-anthropic-key"},
            "openai": {"base_url": f"{mock_url}/v1", "api_key": "mock-openai-key"},
            "google": {"base_url": mock_url, "api_key": "mock-gemini-key"},
            "cohere": {"base_url": mock_url, "api_key": "mock-cohere-key"},
            "bedrock": {
                "base_url": mock_url,
                "api_key": "AKIDEXAMPLE",
                "options": {
                    "region": "us-east-1",
                    "access_key_id": "AKIDEXAMPLE",
                    "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                },
            },
            "azure": {
                "base_url": f"{mock_url}/openai",
                "api_key": "mock-azure-key",
                "options": {"api_version": "2024-10-21"},
            },
            "groq": {"base_url": f"{mock_url}/openai/v1", "api_key": "mock-groq-key"},
            "mistral": {"base_url": f"{mock_url}/v1", "api_key": "mock-mistral-key"},
        },
        "routing": {
            "production": {
                "strategy": "fallback",
                "attempts": [
                    {"model": "claude-haiku-4-5", "timeout_ms": 1500},
                    {"model": "gpt-4o-mini", "timeout_ms": 1500},
                    {"model": "gemini-2.5-flash", "timeout_ms": 1500},
                ],
                "retry_on": ["429", "5xx", "timeout"],
                "total_budget_ms": 4000,
            },
            "fast": {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 2000},
        },
        "budgets": [],
        "tracing": {"path": str(trace_db)},
    }


class Proxy:
    def __init__(self, proc: ServerProcess, config: dict):
        self.proc = proc
        self.port = proc.port
        self.config = config
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = {"authorization": f"Bearer {API_KEY}"}

    def client(self, **kw: Any) -> openai.OpenAI:
        kw.setdefault("api_key", API_KEY)
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20.0)
        return openai.OpenAI(base_url=f"{self.url}/v1", **kw)

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None, auth: bool = True,
                timeout: float = HTTP_TIMEOUT_S) -> HttpResponse:
        h = dict(self.auth) if auth else {}
        h.update(headers or {})
        return http_request(self.port, method, path, body, h, timeout)

    def chat_raw(self, body: dict, timeout: float = HTTP_TIMEOUT_S) -> HttpResponse:
        return self.request("POST", "/v1/chat/completions", body, timeout=timeout)

    def trace(self, request_id: str) -> dict:
        r = self.request("GET", f"/v1/traces/{request_id}")
        assert r.status == 200, f"no trace for {request_id}: {r.status} {r.text}"
        return r.json()

    def put_config(self, slug: str, cfg: dict) -> int:
        """Installs a routing config live (PUT /v1/configs/{slug}); returns its version."""
        r = self.request("PUT", f"/v1/configs/{slug}", cfg)
        assert r.status == 200, f"config @{slug} rejected: {r.text}"
        return r.json()["version"]


def start_proxy_process(config: dict, tmp: Path, name: str) -> Proxy:
    cfg_path = tmp / f"{name}.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    proc = ServerProcess(["serve", "--config", str(cfg_path), "--port", "0"], tmp / f"{name}.log")
    return Proxy(proc, config)


# ---------------------------------------------------------------------------- stream helpers


@dataclass
class Collected:
    content: str = ""
    tool_calls: dict[int, dict] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None
    model: str | None = None
    chunks: int = 0


def collect_stream(stream: Any) -> Collected:
    """Reassembles an SDK chat stream into content, tool calls, finish reason and usage."""
    out = Collected()
    for chunk in stream:
        out.chunks += 1
        out.model = chunk.model or out.model
        if chunk.usage is not None:
            out.usage = chunk.usage
        for ch in chunk.choices:
            d = ch.delta
            if d.content:
                out.content += d.content
            for tc in d.tool_calls or []:
                slot = out.tool_calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            if ch.finish_reason:
                out.finish_reason = ch.finish_reason
    return out


MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
MOCK_TEXT = "Hello from the modelux mock provider."
