"""From Python: traces (query and aggregates), configs and versions (the control store,
in-process), budgets, and the in-process mock provider (modelux.testing.MockProvider)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest

import modelux
from modelux.testing import MockProvider as InProcessMock

from conftest import MOCK_TEXT, MockProvider

MSGS: List[Dict[str, Any]] = [{"role": "user", "content": "hello"}]


def test_trace_queries_and_aggregates(mock: MockProvider, config: Dict[str, Any], tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    config["tracing"] = {"enabled": True, "path": str(db)}
    mock.configure({"claude-haiku-4-5": {"error_status": 500}})
    with modelux.Router(config) as router:
        for i in range(3):
            router.chat("@production", MSGS, project="acme", tags={"team": "a"}, request_id=f"ok-{i}")
        router.chat("@fast", MSGS, project="other", end_user="u-1", request_id="fast-0")
        mock.configure({"gpt-4o-mini": {"error_status": 401}})
        with pytest.raises(modelux.AuthenticationError):
            router.chat("@fast", MSGS, request_id="bad-0")
        assert [t["request_id"] for t in router.traces(limit=2)] == ["bad-0", "fast-0"]
    store = modelux.TraceStore(db)
    assert store.count() == 5
    assert {t["request_id"] for t in store.query(project="acme")} == {"ok-0", "ok-1", "ok-2"}
    assert [t["request_id"] for t in store.query(ok=False)] == ["bad-0"]
    assert [t["request_id"] for t in store.query(end_user="u-1")] == ["fast-0"]
    assert len(store.query(tags={"team": "a"}, config="@production", since="1h")) == 3
    assert store.query(until=dt.datetime(2000, 1, 1)) == []
    assert store.get("ok-1") is not None and store.get("nope") is None
    assert dict(store.configs()) == {"@production": 3, "@fast": 2}
    spend = store.spend("project", since="1d")
    assert {r["key"] for r in spend["rows"]} >= {"acme", "other"}
    assert spend["total"]["total_usd"] > 0
    assert spend["total"]["requests"] >= 4
    f = store.failovers()
    assert f["requests"] == 5 and f["failed_over"] == 3 and f["rescued"] == 3 and f["failed"] == 1
    lat = {r["key"]: r for r in store.latency("model")}
    assert lat["gpt-4o-mini"]["count"] == 4
    errs = {(e["error_class"], e["model"]): e["count"] for e in store.errors()}
    assert errs[("server_error", "claude-haiku-4-5")] == 3
    assert errs[("auth", "gpt-4o-mini")] == 1
    assert store.forecast()["month_to_date_usd"] > 0
    with pytest.raises(ValueError):
        store.query(since="yesterday")
    with pytest.raises(modelux.BadRequestError):
        store.spend("colour")
    with pytest.raises(modelux.StorageError):
        modelux.TraceStore(tmp_path / "missing.db")


def test_router_without_tracing_has_no_store(config: Dict[str, Any]) -> None:
    with modelux.Router(config, tracing=False) as router:
        assert router.trace_store() is None and router.traces() == []


def test_config_versions_diff_rollback_and_apply(mock: MockProvider, config: Dict[str, Any], tmp_path: Path) -> None:
    store = modelux.ControlStore(tmp_path / "control.db")
    v1 = store.put_config("cheap", {"strategy": "single", "model": "gpt-4o-mini"}, author="alice", message="first")
    v2 = store.put_config("@cheap", {"strategy": "single", "model": "claude-haiku-4-5"}, author="bob",
                          expected_version=1)
    assert (v1["version"], v1["action"], v2["version"], v2["action"]) == (1, "create", 2, "update")
    with pytest.raises(modelux.ModeluxError) as ei:
        store.put_config("cheap", {"strategy": "single", "model": "gpt-4o"}, expected_version=1)
    assert ei.value.code == "version_conflict"
    assert store.diff("cheap", 1) == [{"op": "replace", "path": "/model", "value": "claude-haiku-4-5"}]
    assert '-  "model": "gpt-4o-mini",' in store.diff("cheap", 1, 2, text=True)
    rb = store.rollback("cheap", 1, author="alice")
    assert rb["version"] == 3 and rb["action"] == "rollback"
    assert store.get_config("cheap")["document"]["model"] == "gpt-4o-mini"
    assert [v["version"] for v in store.versions("cheap")] == [3, 2, 1]
    assert list(store.configs()) == ["cheap"]
    with modelux.Router(config, tracing=False) as router:
        store.apply(router, "cheap")
        assert router.chat("@cheap", MSGS).served_model == "gpt-4o-mini"
        store.put_config("broken", {"strategy": "single", "model": "no-such-model"})
        with pytest.raises(modelux.InvalidConfigError):
            store.apply(router, "broken")
        assert router.routing_config("broken") is None
    actions = [e["action"] for e in store.audit("cheap")]
    assert actions == ["config.create", "config.update", "config.rollback"]
    assert store.verify_audit()["ok"] is True
    # The file is the same store another process (the proxy, the CLI) reads.
    again = modelux.ControlStore(tmp_path / "control.db")
    assert again.get_config("cheap", 2)["author"] == "bob"
    with pytest.raises(modelux.NotFoundError):
        again.get_config("cheap", 9)


def test_budget_snapshot(mock: MockProvider, config: Dict[str, Any]) -> None:
    config["budgets"] = [{"name": "acme-daily", "scope": {"project": "acme"}, "window": "daily", "limit_usd": 5}]
    with modelux.Router(config, tracing=False) as router:
        before = router.budgets()
        router.chat("gpt-4o", MSGS, project="acme")
        after = router.budgets()
    b0 = next(b for b in before["budgets"] if b["name"] == "acme-daily")
    b1 = next(b for b in after["budgets"] if b["name"] == "acme-daily")
    assert b0.get("spent_usd", 0) == 0
    assert b1["spent_usd"] > 0 and b1["limit_usd"] == 5


def test_in_process_mock_provider() -> None:
    with InProcessMock({"models": {"claude-haiku-4-5": {"error_status": 429}}}) as mock:
        assert mock.url == f"http://127.0.0.1:{mock.port}"
        with modelux.Router(mock.router_config()) as router:
            r = router.chat("@production", MSGS)
            assert r.text == MOCK_TEXT and r.served_model == "gpt-4o-mini"
            mock.configure({"models": {"claude-haiku-4-5": {"error_status": 0}}})
            assert router.chat("claude-haiku-4-5", MSGS).served_model == "claude-haiku-4-5"
        stats = mock.stats()
        assert stats["models"]["claude-haiku-4-5"]["rate_limited"] + stats["models"]["claude-haiku-4-5"]["errors"] >= 1
        # A real HTTP server: any client can use it.
        with urllib.request.urlopen(mock.url + "/_mock/stats", timeout=5) as resp:
            assert json.loads(resp.read())["total"] == stats["total"]
        with pytest.raises(modelux.InvalidConfigError):
            mock.configure({"models": {"x": {"latency_ms": "slow"}}})
    with pytest.raises(ValueError):
        mock.stats()
