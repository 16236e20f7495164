"""The testing kit from Python: ``modelux.testing.MockProvider`` runs the C++ mock provider
(the one behind ``modelux mock``) in this process on a free port. It speaks every provider
family's wire format at its real paths and injects faults per model (latency, errors with
retry-after, hangs, mid-stream disconnects, malformed bodies, rate limits)::

    with modelux.testing.MockProvider() as mock:
        mock.configure({"models": {"claude-haiku-4-5": {"error_status": 429}}})
        router = modelux.Router(mock.router_config())
        router.chat("@production", messages).served_model      # "gpt-4o-mini": failed over
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

from . import _core

__all__ = ["MockProvider"]


class MockProvider:
    """A running mock provider. ``config``: ``{"default": {...}, "models": {name: {...}}}``
    with the behaviour knobs of docs/testing.md (``latency_ms``, ``ttft_ms``,
    ``chunk_interval_ms``, ``chunks``, ``error_status``, ``error_rate``, ``retry_after_ms``,
    ``hang_rate``, ``disconnect_after_chunks``, ``malformed_rate``, ``text``, ...)."""

    def __init__(self, config: Optional[Mapping[str, Any]] = None, *, seed: int = 42, threads: int = 1, port: int = 0) -> None:
        self._native = _core.MockProvider(json.dumps(dict(config or {})), seed, threads, port)

    @property
    def port(self) -> int:
        return self._native.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._native.base_url

    def configure(self, config: Mapping[str, Any]) -> None:
        """Merges ``{"default": {...}, "models": {...}}`` (or ``revoked_keys`` /
        ``rate_limited_keys``) into the live config."""
        self._native.configure(json.dumps(dict(config)))

    def stats(self) -> Dict[str, Any]:
        """Requests per model (and ``"keys"``: requests per presented key)."""
        return json.loads(self._native.stats())  # type: ignore[no-any-return]

    def router_config(self, **overrides: Any) -> Dict[str, Any]:
        """A router config with every built-in provider family pointed at this mock (mock
        keys, no trace file) and the ``@production`` / ``@fast`` routes of the defaults."""
        base = self.url
        cfg: Dict[str, Any] = {
            "providers": {
                "anthropic": {"base_url": base, "api_key": "mock-anthropic-key"},
                "openai": {"base_url": base + "/v1", "api_key": "mock-openai-key"},
                "google": {"base_url": base, "api_key": "mock-gemini-key"},
            },
            "routing": {
                "production": {
                    "strategy": "fallback",
                    "attempts": [
                        {"model": "claude-haiku-4-5", "timeout_ms": 5000},
                        {"model": "gpt-4o-mini", "timeout_ms": 5000},
                        {"model": "gemini-2.5-flash", "timeout_ms": 5000},
                    ],
                    "retry_on": ["429", "5xx", "timeout"],
                },
                "fast": {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 5000},
            },
            "tracing": {"enabled": False},
        }
        cfg.update(overrides)
        return cfg

    def stop(self) -> None:
        """Stops the server (idempotent)."""
        self._native.stop()

    def __enter__(self) -> "MockProvider":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
