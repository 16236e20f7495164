"""Bring your own client (docs/python.md): the app calls the providers with the official
SDKs and reports each outcome; modelux fails over, applies budgets and traces, as in the
executor (the C++ ClientSession)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest

# The SDKs are test extras (pyproject.toml [test]); without them these tests are reported skipped.
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

import modelux

from conftest import MOCK_TEXT, MockProvider

MSGS: List[Dict[str, Any]] = [{"role": "user", "content": "hello"}]


def sdk_call(mock: MockProvider, a: modelux.Attempts, attempt: modelux.Attempt) -> None:
    oai = openai.OpenAI(base_url=mock.url + "/v1", api_key="mock-openai-key", max_retries=0)
    ant = anthropic.Anthropic(base_url=mock.url, api_key="mock-anthropic-key", max_retries=0)
    try:
        if attempt.provider == "anthropic":
            a.report(attempt, ant.messages.create(model=attempt.upstream_model, max_tokens=50, messages=MSGS))
        elif attempt.provider == "openai":
            a.report(attempt, oai.chat.completions.create(model=attempt.upstream_model, messages=MSGS, max_tokens=50))
        else:
            a.report(attempt, error=ConnectionError("this app has no client for " + attempt.provider))
    except Exception as e:  # the SDKs' errors carry status, headers and body
        a.report(attempt, error=e)


def test_fails_over_on_the_apps_own_sdk_errors(mock: MockProvider, config: Dict[str, Any], tmp_path: Path) -> None:
    mock.configure({"claude-haiku-4-5": {"error_status": 429, "retry_after_ms": 30000}})
    config["tracing"] = {"enabled": True, "path": str(tmp_path / "t.db")}
    router = modelux.Router(config)
    tried: List[str] = []
    with router.attempts("@production", MSGS, project="byoc", max_tokens=50, request_id="byoc-1") as a:
        for attempt in a:
            tried.append(f"{attempt.provider}/{attempt.model}")
            sdk_call(mock, a, attempt)
    assert tried == ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]
    r = a.result
    assert r.text == MOCK_TEXT and r.served_model == "gpt-4o-mini"
    first = r.trace["attempts"][0]
    assert first["outcome"] == "rate_limited" and first["status"] == 429
    assert r.trace["project"] == "byoc"
    # Traced like an executor request, and the rate-limited target now sits out its
    # retry-after: the next session starts on the fallback.
    store = router.trace_store()
    assert store is not None and store.get("byoc-1") is not None
    with router.attempts("@production", MSGS) as b:
        first_target = next(iter(b))
        assert first_target.model == "gpt-4o-mini"
        sdk_call(mock, b, first_target)
        for attempt in b:
            sdk_call(mock, b, attempt)
    assert b.result.served_model == "gpt-4o-mini"
    router.close()


def test_an_anthropic_sdk_message_is_decoded_with_usage_and_cost(mock: MockProvider, config: Dict[str, Any]) -> None:
    router = modelux.Router(config, tracing=False)
    request = {"model": "ignored", "messages": MSGS, "max_tokens": 50}  # a whole request body works too
    with router.attempts("claude-haiku-4-5", request) as a:
        for attempt in a:
            sdk_call(mock, a, attempt)
    r = a.result
    assert r.text == MOCK_TEXT
    assert r["usage"]["completion_tokens"] > 0
    assert r.trace["cost"]["total_usd"] > 0
    assert r.trace["max_tokens"] == 50


def test_every_attempt_failing_raises_with_the_trace(mock: MockProvider, config: Dict[str, Any]) -> None:
    router = modelux.Router(config, tracing=False)
    with router.attempts("@production", MSGS) as a:
        for attempt in a:
            a.report(attempt, error=TimeoutError("slow"))
    with pytest.raises(modelux.ModeluxTimeout) as ei:
        a.result
    assert ei.value.trace is not None
    assert [x["outcome"] for x in ei.value.trace["attempts"]] == ["timeout", "timeout", "timeout"]


def test_budgets_apply_to_byoc_sessions(mock: MockProvider, config: Dict[str, Any]) -> None:
    config["budgets"] = [{"name": "byoc-cap", "scope": {"project": "capped"}, "window": "daily", "limit_usd": 0.0005}]
    router = modelux.Router(config, tracing=False)
    blocked = None
    for _ in range(30):
        with router.attempts("gpt-4o", MSGS, project="capped", max_tokens=16) as a:
            for attempt in a:
                a.report(attempt, {"id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4o",
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 100, "completion_tokens": 16, "total_tokens": 116}})
        try:
            a.result
        except modelux.BudgetExceededError as e:
            blocked = e
            break
    assert blocked is not None, "the cap never blocked a bring-your-own-client session"
    snap = router.budgets()
    ledger = next(b for b in snap["budgets"] if b["name"] == "byoc-cap")
    assert ledger["spent_usd"] > 0


def test_unreported_attempts_count_as_failed_and_bad_reports_are_refused(mock: MockProvider, config: Dict[str, Any]) -> None:
    router = modelux.Router(config, tracing=False)
    with router.attempts("@fast", MSGS) as a:
        for attempt in a:
            with pytest.raises(TypeError):
                a.report(attempt)
            with pytest.raises(modelux.BadRequestError):  # not a chat.completion: not recorded
                a.report(attempt, {"choices": "nope"})
            a.report(attempt, error=ConnectionError("down"))
            with pytest.raises(ValueError):
                a.report(attempt, error=ConnectionError("twice"))
    with pytest.raises(modelux.ConnectionFailed):
        a.result
    with pytest.raises(modelux.NotFoundError):
        router.attempts("@nope", MSGS)
