"""Python with tracing on: every request's trace lands in the SQLite trace store, under the id
the Router returned with the answer; and a real upstream hang raises `modelux.ModeluxTimeout`
within the config's total budget."""

from __future__ import annotations

import sqlite3
import time

import pytest

import modelux

MESSAGES = [{"role": "user", "content": "hello"}]


def test_traces_land_in_sqlite_under_the_returned_request_id(mock, config, tmp_path):
    db = tmp_path / "traces.db"
    config["tracing"] = {"path": str(db)}
    mock.configure({"claude-haiku-4-5": {"error_status": 429, "retry_after_ms": 5000}})
    router = modelux.Router(config, tracing=True)
    try:
        r = router.chat("@production", MESSAGES, project="py-trace")
        assert r.served_model == "gpt-4o-mini"
        rid = r.trace["request_id"]
        assert rid
    finally:
        router.close()  # flushes the tracer
    con = sqlite3.connect(str(db))
    try:
        row = con.execute("SELECT project, ok, served_model, attempts, failed_over FROM traces WHERE request_id = ?",
                          (rid,)).fetchone()
        assert row == ("py-trace", 1, "gpt-4o-mini", 2, 1)
        outcomes = [o for (o,) in con.execute(
            "SELECT outcome FROM trace_attempts WHERE request_id = ? ORDER BY idx", (rid,))]
        assert outcomes == ["rate_limited", "ok"]
    finally:
        con.close()


def test_a_hung_upstream_raises_modelux_timeout(mock, config):
    mock.configure({"gpt-4o-mini": {"hang_rate": 1.0}})
    config["routing"]["short"] = {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 300,
                                  "total_budget_ms": 400}
    router = modelux.Router(config, tracing=False)
    try:
        t0 = time.monotonic()
        with pytest.raises(modelux.ModeluxTimeout) as exc:
            router.chat("@short", MESSAGES)
        elapsed = time.monotonic() - t0
        assert isinstance(exc.value, TimeoutError)
        assert exc.value.kind == "timeout"
        assert exc.value.trace["attempts"][0]["outcome"] == "timeout"
        assert elapsed < 5, "the request outlived its total budget by far"
    finally:
        router.close()
