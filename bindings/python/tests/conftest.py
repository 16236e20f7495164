"""Fixtures: a real `modelux mock` provider process per test, and configs pointing at it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
# The binary of this checkout, never one of another clone: relative to this file.
DEFAULT_BIN = str(REPO / "build" / "examples" / "modelux")
MOCK_TEXT = "Hello from the modelux mock provider."

_LISTEN = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")


def modelux_bin() -> str:
    path = os.environ.get("MODELUX_BIN", DEFAULT_BIN)
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"modelux binary not found at {path!r}: build it with "
            "`cmake --build <build-dir> --target modelux_cli` and set MODELUX_BIN",
            pytrace=False,
        )
    return path


class MockProvider:
    """A running `modelux mock --port 0` subprocess."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [modelux_bin(), "mock", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line_holder: List[str] = []

        def read_first_line() -> None:
            assert self.proc.stdout is not None
            line_holder.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read_first_line, daemon=True)
        reader.start()
        reader.join(timeout=10)
        line = line_holder[0] if line_holder else ""
        m = _LISTEN.search(line)
        if not m:
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            pytest.fail(f"mock provider did not start: stdout={line!r} stderr={err!r}", pytrace=False)
        self.url = m.group(1)
        self.port = int(m.group(2))

    def post(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read().decode())  # type: ignore[no-any-return]

    def get(self, path: str) -> Dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read().decode())  # type: ignore[no-any-return]

    def configure(self, models: Dict[str, Dict[str, Any]]) -> None:
        """Faults per model at run time: {"claude-haiku-4-5": {"error_status": 429}}."""
        self.post("/_mock/config", {"models": models})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


@pytest.fixture()
def mock() -> Iterator[MockProvider]:
    m = MockProvider()
    try:
        yield m
    finally:
        m.stop()


def router_config(mock_url: Optional[str]) -> Dict[str, Any]:
    """Like data/defaults.json, with every provider at the mock, short timeouts and no trace file."""
    base = mock_url or "http://127.0.0.1:9"
    return {
        "providers": {
            "anthropic": {"base_url": base, "api_key": "mock-anthropic-key"},
            "openai": {"base_url": base + "/v1", "api_key": "mock-openai-key"},
            "google": {"base_url": base, "api_key": "mock-gemini-key"},
        },
        "routing": {
            "production": {
                "strategy": "fallback",
                "attempts": [
                    {"model": "claude-haiku-4-5", "timeout_ms": 2000},
                    {"model": "gpt-4o-mini", "timeout_ms": 3000},
                    {"model": "gemini-2.5-flash", "timeout_ms": 3000},
                ],
                "retry_on": ["429", "5xx", "timeout"],
                "total_budget_ms": 8000,
            },
            "fast": {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 5000},
        },
        "budgets": [],
        "tracing": {"enabled": False},
    }


@pytest.fixture()
def config(mock: MockProvider) -> Dict[str, Any]:
    return router_config(mock.url)
