"""The trace store from Python: query decision traces and the analytics behind
``modelux logs`` / ``modelux spend`` (spend by dimension, latency percentiles, error groups,
failover rate, month-end forecast)::

    store = modelux.TraceStore("modelux-traces.db")          # or router.trace_store()
    store.query(config="@production", ok=False, since="1h", limit=20)
    store.spend(by="model", since="7d")["rows"]

``since`` / ``until`` take a duration back from now (``"90s"``, ``"15m"``, ``"1h"``,
``"7d"``, ``"2w"``), a ``datetime``, or Unix seconds. Every call does SQLite I/O with the GIL
released.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from . import _core

TimeArg = Union[str, float, int, _dt.datetime, None]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _to_unix(t: TimeArg, default: Optional[float]) -> Optional[float]:
    if t is None:
        return default
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return t.timestamp()
    if isinstance(t, (int, float)):
        return float(t)
    text = str(t).strip()
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in _UNITS:
        return time.time() - float(text[:-1]) * _UNITS[text[-1]]
    raise ValueError(f"bad time {t!r}: use a duration back from now (90s, 15m, 1h, 7d, 2w), a datetime or Unix seconds")


class TraceStore:
    """A SQLite trace store (``tracing.path`` of the config, ``modelux-traces.db`` by default).
    ``read_only=True`` (default) never writes; a missing file raises :class:`StorageError`."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, read_only: bool = True) -> None:
        self._native = _core.TraceStore(os.fspath(path), read_only)

    @classmethod
    def _wrap(cls, native: "_core.TraceStore") -> "TraceStore":
        self = cls.__new__(cls)
        self._native = native
        return self

    @property
    def path(self) -> str:
        return self._native.path

    @staticmethod
    def _query_json(
        since: TimeArg, until: TimeArg, config: Optional[str], model: Optional[str], provider: Optional[str],
        project: Optional[str], end_user: Optional[str], tags: Optional[Mapping[str, str]], ok: Optional[bool],
        limit: int, newest_first: bool,
    ) -> str:
        q: Dict[str, Any] = {"limit": limit, "newest_first": newest_first}
        for key, value in (("config", config), ("model", model), ("provider", provider), ("project", project),
                           ("end_user", end_user), ("ok", ok)):
            if value is not None:
                q[key] = value
        if tags is not None:
            q["tags"] = dict(tags)
        s = _to_unix(since, None)
        u = _to_unix(until, None)
        if s is not None:
            q["since"] = s
        if u is not None:
            q["until"] = u
        return json.dumps(q)

    def query(
        self,
        *,
        since: TimeArg = None,
        until: TimeArg = None,
        config: Optional[str] = None,
        model: Optional[str] = None,
        provider: Optional[str] = None,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        ok: Optional[bool] = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> List[Dict[str, Any]]:
        """Decision traces (dicts, as ``r.trace``) matching every filter given. ``config`` is
        ``"@slug"`` or the model asked for; ``model`` / ``provider`` match any attempt;
        ``limit=0`` means no limit."""
        q = self._query_json(since, until, config, model, provider, project, end_user, tags, ok, limit, newest_first)
        return json.loads(self._native.query(q))  # type: ignore[no-any-return]

    def count(
        self,
        *,
        since: TimeArg = None,
        until: TimeArg = None,
        config: Optional[str] = None,
        model: Optional[str] = None,
        provider: Optional[str] = None,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        ok: Optional[bool] = None,
    ) -> int:
        """How many traces match (same filters as :meth:`query`)."""
        return self._native.count(self._query_json(since, until, config, model, provider, project, end_user, tags, ok, 0, True))

    def get(self, request_id: str) -> Optional[Dict[str, Any]]:
        """One trace by request id, or None."""
        t = self._native.get(request_id)
        return None if t is None else json.loads(t)

    def configs(self) -> List[Tuple[str, int]]:
        """``(config, traces)`` for every config in the store, most traced first."""
        return [(c, n) for c, n in self._native.configs()]

    def _window(self, since: TimeArg, until: TimeArg) -> Tuple[float, float]:
        now = time.time()
        s = _to_unix(since, now - 30 * 86400)
        u = _to_unix(until, now + 1)
        assert s is not None and u is not None
        return s, u

    def spend(self, by: str = "model", *, since: TimeArg = "30d", until: TimeArg = None) -> Dict[str, Any]:
        """Spend in the window grouped ``by`` model, provider, project, tag or user:
        ``{"by", "since", "until", "rows": [{"key", "requests", "input_tokens",
        "output_tokens", "input_usd", "output_usd", "total_usd"}], "total": {...}}``."""
        s, u = self._window(since, until)
        return json.loads(self._native.spend(by, s, u))  # type: ignore[no-any-return]

    def latency(self, by: str = "model", *, since: TimeArg = "30d", until: TimeArg = None) -> List[Dict[str, Any]]:
        """Successful attempts' latency by model or provider: ``[{"key", "count", "p50_ms",
        "p95_ms", "p99_ms", "ttft_p50_ms"}]``."""
        s, u = self._window(since, until)
        return json.loads(self._native.latency(by, s, u))  # type: ignore[no-any-return]

    def errors(self, *, since: TimeArg = "30d", until: TimeArg = None) -> List[Dict[str, Any]]:
        """Failed attempts grouped by error class, provider and model."""
        s, u = self._window(since, until)
        return json.loads(self._native.errors(s, u))  # type: ignore[no-any-return]

    def failovers(self, *, since: TimeArg = "30d", until: TimeArg = None) -> Dict[str, Any]:
        """``{"requests", "failed_over", "rescued", "failed", "rate"}``."""
        s, u = self._window(since, until)
        return json.loads(self._native.failovers(s, u))  # type: ignore[no-any-return]

    def forecast(self, lookback_days: int = 7) -> Dict[str, Any]:
        """Month-end spend forecast: ``{"month_to_date_usd", "daily_rate_usd", "forecast_usd",
        "days_elapsed", "days_remaining"}``."""
        return json.loads(self._native.forecast(lookback_days))  # type: ignore[no-any-return]
