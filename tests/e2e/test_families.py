"""Issue #3: every provider family through the proxy, seen by the openai SDK.

The mock speaks each family's native wire format at its real path (Anthropic /v1/messages,
Gemini :generateContent / :streamGenerateContent?alt=sse, Cohere /v2/chat, Bedrock
/model/{id}/converse(-stream) with SigV4 and AWS event-stream framing, Azure
/openai/deployments/{d}/chat/completions?api-version=, OpenAI-compatible /v1 and
/openai/v1). Whatever the family, the client must get OpenAI-format content, tool calls and
usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from e2e_support import MESSAGES, MOCK_TEXT, collect_stream


@dataclass(frozen=True)
class Family:
    name: str
    model: str      # catalog model the client asks for
    upstream: str   # model id the mock sees (its fault knobs are keyed by it)


FAMILIES = [
    Family("anthropic", "claude-haiku-4-5", "claude-haiku-4-5"),
    Family("openai", "gpt-4o-mini", "gpt-4o-mini"),
    Family("gemini", "gemini-2.5-flash", "gemini-2.5-flash"),
    Family("cohere", "command-r-08-2024", "command-r-08-2024"),
    Family("bedrock", "bedrock/nova-lite", "amazon.nova-lite-v1:0"),
    Family("azure", "azure/gpt-4o", "gpt-4o"),
    Family("groq", "groq/llama-3.1-8b", "llama-3.1-8b-instant"),
    Family("mistral", "mistral-small-latest", "mistral-small-latest"),
]
BY_NAME = {f.name: f for f in FAMILIES}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
]
MOCK_TOOL_CALL_ID = "call_mock0001"


def expected_usage() -> tuple[int, int]:
    chars = sum(len(m["content"]) + 4 for m in MESSAGES)
    return max(1, chars // 4), max(1, len(MOCK_TEXT) // 4)


def ask(client, model: str, stream: bool, tools: bool):
    """One call. Returns (request id, (content, tool_calls[{id,name,arguments}], finish_reason, usage, model))."""
    kw = {"tools": TOOLS} if tools else {}
    if stream:
        kw["stream_options"] = {"include_usage": True}
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, stream=stream, **kw)
    rid = raw.headers["x-request-id"]
    if stream:
        got = collect_stream(raw.parse())
        calls = [got.tool_calls[i] for i in sorted(got.tool_calls)]
        return rid, (got.content, calls, got.finish_reason, got.usage, got.model)
    r = raw.parse()
    msg = r.choices[0].message
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in msg.tool_calls or []]
    return rid, (msg.content or "", calls, r.choices[0].finish_reason, r.usage, r.model)


def check_answer(result, fam: Family, tools: bool) -> None:
    content, calls, finish, usage, model = result
    assert model == fam.model
    if tools:
        assert content == ""
        assert finish == "tool_calls"
        assert len(calls) == 1, calls
        call = calls[0]
        assert call["name"] == "get_weather"  # the mock calls the first tool
        assert json.loads(call["arguments"]) == {}
        assert isinstance(call["id"], str) and call["id"]
        if fam.name != "gemini":  # Gemini has no call ids on the wire; the codec makes one up
            assert call["id"] == MOCK_TOOL_CALL_ID
    else:
        assert calls == []
        assert content == MOCK_TEXT
        assert finish == "stop"
    prompt, completion = expected_usage()
    assert usage is not None, "no usage reported"
    assert usage.prompt_tokens == prompt
    assert usage.completion_tokens == completion
    assert usage.total_tokens == prompt + completion


# ------------------------------------------------------------------ each family on its own


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fam", FAMILIES, ids=[f.name for f in FAMILIES])
def test_family_through_proxy(shared_proxy, mock, shared_client, fam: Family, stream: bool, tools: bool):
    proxy, client = shared_proxy, shared_client  # no faults injected: one proxy serves them all
    rid, result = ask(client, fam.model, stream, tools)
    check_answer(result, fam, tools)
    # The trace (and so cost and budgets) records the same usage the client saw.
    trace = proxy.trace(rid)
    prompt, completion = expected_usage()
    assert (trace["usage"]["prompt_tokens"], trace["usage"]["completion_tokens"]) == (prompt, completion)
    assert trace["cost"]["total_usd"] > 0
    st = mock.stats()["models"]
    # Served by the family's native endpoint, once. Models with no request are left out: a
    # stream of the previous test (test_drain's) that ends after the mock's reset leaves an
    # entry with only its stream-end count.
    assert [m for m, c in st.items() if c.get("requests", 0)] == [fam.upstream], st
    assert st[fam.upstream]["requests"] == 1
    assert st[fam.upstream]["streams"] == (1 if stream else 0)


# ------------------------------------------------------------------ a chain across families

CHAIN = [BY_NAME["anthropic"], BY_NAME["openai"], BY_NAME["gemini"]]


@pytest.fixture
def cross_family_chain(route):
    return route(
        {
            "strategy": "fallback",
            "attempts": [{"model": f.model, "timeout_ms": 1500} for f in CHAIN],
            "retry_on": ["429", "5xx", "timeout"],
            "total_budget_ms": 4000,
        }
    )


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("serving", [0, 1, 2], ids=["anthropic-serves", "openai-serves", "gemini-serves"])
def test_chain_anthropic_openai_gemini(proxy, mock, client, cross_family_chain, serving: int, stream: bool,
                                       tools: bool):
    statuses = [503, 500]  # Anthropic answers 503 (overloaded), OpenAI 500 when they must fail
    mock.configure({CHAIN[i].upstream: {"error_status": statuses[i]} for i in range(serving)})
    rid, result = ask(client, cross_family_chain, stream, tools)
    check_answer(result, CHAIN[serving], tools)

    trace = proxy.trace(rid)
    attempts = trace["attempts"]
    assert [a["model"] for a in attempts] == [f.model for f in CHAIN[: serving + 1]]
    for i, a in enumerate(attempts[:-1]):
        assert a["ok"] is False and a["status"] == statuses[i], a
    assert attempts[-1]["ok"] is True
    assert trace["served_model"] == CHAIN[serving].model
    st = mock.stats()["models"]
    for i, f in enumerate(CHAIN):
        assert st.get(f.upstream, {}).get("requests", 0) == (1 if i <= serving else 0), st


LONG_TEXT = "Grüße aus Köln — 日本語のテキスト 🚀✨ " * 40


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fam", FAMILIES, ids=[f.name for f in FAMILIES])
def test_long_multibyte_answer_in_many_chunks_arrives_intact(shared_proxy, mock, shared_client, fam: Family,
                                                             stream: bool):
    client = shared_client  # no faults injected: one proxy serves them all
    """~1,200 characters of 1-4 byte UTF-8 split into 97 native chunks: every family's decoder
    and the proxy's re-encoding must deliver it byte for byte, in order."""
    mock.configure({fam.upstream: {"text": LONG_TEXT, "chunks": 97}})
    if stream:
        got = collect_stream(client.chat.completions.create(model=fam.model, messages=MESSAGES, stream=True))
        assert got.content == LONG_TEXT
        assert got.chunks >= 50  # passed through piece by piece, not buffered into one
        assert got.finish_reason == "stop"
    else:
        r = client.chat.completions.create(model=fam.model, messages=MESSAGES)
        assert r.choices[0].message.content == LONG_TEXT
