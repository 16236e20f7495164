"""Issue #14: the Anthropic Messages API at POST /v1/messages, routed through the same configs
to any provider family, checked with the official SDKs: `anthropic` (PyPI) and
`@anthropic-ai/sdk` (npm, installed by scripts/setup.sh into tests/e2e/node/node_modules).

What reached the upstream is read back from the mock (GET /_mock/last_request, the unified
shape), so a test sees that a system prompt, a tool result or an image survived the
translation, not just that an answer came back.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest

from e2e_support import API_KEY, MOCK_TEXT, Mock, Proxy, http_request, sse_events

NODE_DIR = Path(__file__).resolve().parent / "node"
FAMILIES = {
    "anthropic": ("claude-haiku-4-5", "claude-haiku-4-5"),
    "openai": ("gpt-4o-mini", "gpt-4o-mini"),
    "gemini": ("gemini-2.5-flash", "gemini-2.5-flash"),
    "cohere": ("command-r-08-2024", "command-r-08-2024"),
    "bedrock": ("bedrock/nova-lite", "amazon.nova-lite-v1:0"),
}
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                     "required": ["city"]},
}
TOOL_ARGS = {"city": "Oslo", "days": 3}
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)).decode()


def sdk(proxy: Proxy, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("api_key", API_KEY)
    return anthropic.Anthropic(base_url=proxy.url, max_retries=0, timeout=20.0, **kw)


def last_request(mock: Mock, upstream: str) -> dict:
    r = http_request(mock.port, "GET", f"/_mock/last_request?model={upstream}")
    assert r.status == 200, f"the mock saw no request for {upstream}"
    return r.json()


def node(proxy: Proxy, mode: str, params: dict, headers: dict | None = None, api_key: str = API_KEY) -> dict:
    """One call through @anthropic-ai/sdk (tests/e2e/node/anthropic_client.mjs)."""
    if not (NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk").is_dir():
        pytest.fail("@anthropic-ai/sdk is not installed: run scripts/setup.sh (npm ci in tests/e2e/node)", pytrace=False)
    exe = shutil.which("node")
    assert exe, "node is not installed: run scripts/setup.sh"
    job = {"baseURL": proxy.url, "apiKey": api_key, "mode": mode, "params": params, "headers": headers or {}}
    out = subprocess.run([exe, str(NODE_DIR / "anthropic_client.mjs")], input=json.dumps(job).encode(), capture_output=True,
                         timeout=60, cwd=NODE_DIR, env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return json.loads(out.stdout)


def text_of(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


# ---------------------------------------------------------------------------- JSON and streams


@pytest.mark.parametrize("family", list(FAMILIES))
def test_python_sdk_answers_from_every_family(shared_proxy: Proxy, mock: Mock, family: str) -> None:
    model, upstream = FAMILIES[family]
    raw = sdk(shared_proxy).messages.with_raw_response.create(model=model, max_tokens=64, messages=HELLO)
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant"
    assert m.id.startswith("msg_")
    assert text_of(m) == MOCK_TEXT
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0
    assert raw.headers["x-modelux-served-by"].endswith("/" + model)
    assert m._request_id == raw.headers["x-request-id"]
    assert mock.requests_for(upstream) == 1


@pytest.mark.parametrize("family", list(FAMILIES))
def test_python_sdk_stream_has_anthropics_event_sequence(shared_proxy: Proxy, mock: Mock, family: str) -> None:
    model, _ = FAMILIES[family]
    client = sdk(shared_proxy)
    events = [e.type for e in client.messages.create(model=model, max_tokens=64, messages=HELLO, stream=True)]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"], events
    body = [e for e in events[1:-2] if e != "ping"]
    assert body[0] == "content_block_start" and body[-1] == "content_block_stop", events
    assert set(body[1:-1]) == {"content_block_delta"}, events
    with client.messages.stream(model=model, max_tokens=64, messages=HELLO) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == MOCK_TEXT
    assert text_of(final) == MOCK_TEXT and final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_system_prompt_as_string_and_as_blocks_reaches_an_openai_target(shared_proxy: Proxy, mock: Mock) -> None:
    client = sdk(shared_proxy)
    client.messages.create(model="gpt-4o-mini", max_tokens=32, system="You are terse.", messages=HELLO)
    sent = last_request(mock, "gpt-4o-mini")["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"] == "You are terse."
    client.messages.create(model="gpt-4o-mini", max_tokens=32, messages=HELLO,
                           system=[{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two.",
                                                                            "cache_control": {"type": "ephemeral"}}])
    sent = last_request(mock, "gpt-4o-mini")["messages"]
    assert sent[0]["role"] == "system"
    assert [p["text"] for p in sent[0]["content"]] == ["Rule one.", "Rule two."]
    assert sent[1] == {"role": "user", "content": HELLO[0]["content"]}


@pytest.mark.parametrize("family", ["openai", "gemini", "anthropic"])
def test_tools_tool_use_and_tool_result_across_families(shared_proxy: Proxy, mock: Mock, family: str) -> None:
    model, upstream = FAMILIES[family]
    mock.configure({upstream: {"tool_arguments": json.dumps(TOOL_ARGS)}})
    client = sdk(shared_proxy)
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    m = client.messages.create(model=model, max_tokens=64, tools=[WEATHER_TOOL], messages=ask)
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == TOOL_ARGS and uses[0].id

    # Streamed: the arguments arrive as input_json_delta pieces and reassemble.
    raw = list(client.messages.create(model=model, max_tokens=64, tools=[WEATHER_TOOL], messages=ask, stream=True))
    deltas = [e.delta for e in raw if e.type == "content_block_delta"]
    assert deltas and all(d.type == "input_json_delta" for d in deltas)
    assert json.loads("".join(d.partial_json for d in deltas)) == TOOL_ARGS
    starts = [e.content_block for e in raw if e.type == "content_block_start"]
    assert starts[0].type == "tool_use" and starts[0].name == "get_weather"
    assert [e for e in raw if e.type == "message_delta"][0].delta.stop_reason == "tool_use"

    # The tool result goes back; the upstream sees the assistant's call and the result.
    follow = ask + [{"role": "assistant", "content": [{"type": "tool_use", "id": uses[0].id, "name": "get_weather", "input": TOOL_ARGS}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "12 C, light rain"}]}]
    m2 = client.messages.create(model=model, max_tokens=64, messages=follow)  # no tools offered: a text answer
    assert text_of(m2) == MOCK_TEXT and m2.stop_reason == "end_turn"
    sent = last_request(mock, upstream)["messages"]
    call = next(x for x in sent if x["role"] == "assistant")
    assert call["tool_calls"][0]["id"] == uses[0].id and json.loads(call["tool_calls"][0]["function"]["arguments"]) == TOOL_ARGS
    result = next(x for x in sent if x["role"] == "tool")
    # Gemini's functionResponse names the function, not the call: its side knows the name only.
    assert result["tool_call_id"] == ("get_weather" if family == "gemini" else uses[0].id)
    assert "12 C, light rain" in json.dumps(result["content"])


@pytest.mark.parametrize("family", ["openai", "gemini"])
def test_images_base64_and_url_sources(shared_proxy: Proxy, mock: Mock, family: str) -> None:
    model, upstream = FAMILIES[family]
    client = sdk(shared_proxy)
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
               {"type": "text", "text": "What is in this picture?"}]
    m = client.messages.create(model=model, max_tokens=32, messages=[{"role": "user", "content": content}])
    assert text_of(m) == MOCK_TEXT
    parts = last_request(mock, upstream)["messages"][0]["content"]
    image = next(p for p in parts if p["type"] == "image_url")
    assert image["image_url"]["url"] == f"data:image/png;base64,{PNG_1PX}"
    content[0] = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    client.messages.create(model=model, max_tokens=32, messages=[{"role": "user", "content": content}])
    parts = last_request(mock, upstream)["messages"][0]["content"]
    assert next(p for p in parts if p["type"] == "image_url")["image_url"]["url"] == "https://example.com/cat.png"


def test_a_url_image_to_a_target_that_takes_only_inline_data_is_an_anthropic_400(shared_proxy: Proxy) -> None:
    content = [{"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}, {"type": "text", "text": "?"}]
    with pytest.raises(anthropic.BadRequestError) as e:
        sdk(shared_proxy).messages.create(model="bedrock/nova-lite", max_tokens=8, messages=[{"role": "user", "content": content}])
    assert e.value.body["error"]["type"] == "invalid_request_error" and "base64" in e.value.body["error"]["message"]


def test_cache_tokens_are_reported_in_anthropics_usage(shared_proxy: Proxy, mock: Mock) -> None:
    mock.configure({"claude-haiku-4-5": {"cache_read_tokens": 100, "cache_write_tokens": 20},
                    "gpt-4o-mini": {"cache_read_tokens": 64}})
    client = sdk(shared_proxy)
    m = client.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=HELLO)
    assert m.usage.cache_read_input_tokens == 100 and m.usage.cache_creation_input_tokens == 20
    base = m.usage.input_tokens
    assert base > 0
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=32, messages=HELLO) as s:
        u = s.get_final_message().usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (base, 100, 20)
    # From an OpenAI target: its cached_tokens become cache_read_input_tokens, out of input_tokens.
    m = client.messages.create(model="gpt-4o-mini", max_tokens=32, messages=HELLO)
    assert m.usage.cache_read_input_tokens == 64 and m.usage.input_tokens == base


def test_count_tokens(shared_proxy: Proxy) -> None:
    client = sdk(shared_proxy)
    short = client.messages.count_tokens(model="gpt-4o-mini", messages=HELLO)
    longer = client.messages.count_tokens(model="@production", system="Be terse. " * 50,
                                          messages=HELLO + [{"role": "assistant", "content": "Hello."},
                                                            {"role": "user", "content": "Again, longer " * 40}])
    assert 0 < short.input_tokens < longer.input_tokens


# ---------------------------------------------------------------------------- failover


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_failover_answers_from_a_second_provider_family(proxy: Proxy, mock: Mock, stream: bool) -> None:
    """@production starts on Anthropic; the mock faults it (529), the answer comes from OpenAI."""
    mock.configure({"claude-haiku-4-5": {"error_status": 529}})
    client = sdk(proxy)
    if stream:
        with client.messages.stream(model="@production", max_tokens=64, messages=HELLO) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == MOCK_TEXT and final.stop_reason == "end_turn"
        rid = s.response.headers["x-request-id"]
    else:
        raw = client.messages.with_raw_response.create(model="@production", max_tokens=64, messages=HELLO)
        assert text_of(raw.parse()) == MOCK_TEXT
        assert raw.headers["x-modelux-served-by"] == "openai/gpt-4o-mini"
        rid = raw.headers["x-request-id"]
    assert mock.requests_for("claude-haiku-4-5") == 1 and mock.requests_for("gpt-4o-mini") == 1
    attempts = proxy.trace(rid)["attempts"]
    assert [a["model"] for a in attempts][:2] == ["claude-haiku-4-5", "gpt-4o-mini"], attempts


def test_node_sdk_failover_stream_and_json(proxy: Proxy, mock: Mock) -> None:
    mock.configure({"claude-haiku-4-5": {"error_status": 500}})
    got = node(proxy, "create", {"model": "@production", "max_tokens": 64, "messages": HELLO})
    assert "error" not in got, got
    assert got["message"]["content"] == [{"type": "text", "text": MOCK_TEXT}] and got["message"]["stop_reason"] == "end_turn"
    assert got["requestId"] and got["requestId"].startswith("req_")
    got = node(proxy, "stream", {"model": "@production", "max_tokens": 64, "messages": HELLO})
    assert "error" not in got, got
    assert got["message"]["content"][0]["text"] == MOCK_TEXT
    assert got["events"][0] == "message_start" and got["events"][-1] == "message_stop"
    assert "content_block_delta:text_delta" in got["events"]
    assert mock.requests_for("gpt-4o-mini") == 2


# ---------------------------------------------------------------------------- the Node SDK


def test_node_sdk_system_tools_images_and_count(shared_proxy: Proxy, mock: Mock) -> None:
    mock.configure({"gemini-2.5-flash": {"tool_arguments": json.dumps(TOOL_ARGS)}})
    got = node(shared_proxy, "create", {"model": "gemini-2.5-flash", "max_tokens": 64, "tools": [WEATHER_TOOL],
                                        "system": [{"type": "text", "text": "Use tools."}],
                                        "messages": [{"role": "user", "content": "Weather in Oslo?"}]})
    assert "error" not in got, got
    use = got["message"]["content"][0]
    assert use["type"] == "tool_use" and use["name"] == "get_weather" and use["input"] == TOOL_ARGS
    assert got["message"]["stop_reason"] == "tool_use"
    sent = last_request(mock, "gemini-2.5-flash")
    assert sent["messages"][0]["role"] == "system" and sent["tools"][0]["function"]["name"] == "get_weather"

    got = node(shared_proxy, "stream", {"model": "gemini-2.5-flash", "max_tokens": 64, "tools": [WEATHER_TOOL],
                                        "messages": [{"role": "user", "content": "Weather in Oslo?"}]})
    assert "error" not in got, got
    assert got["message"]["content"][0]["input"] == TOOL_ARGS
    assert "content_block_delta:input_json_delta" in got["events"]

    image = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
             {"type": "text", "text": "Describe."}]
    got = node(shared_proxy, "create", {"model": "gpt-4o-mini", "max_tokens": 32, "messages": [{"role": "user", "content": image}]})
    assert got["message"]["content"][0]["text"] == MOCK_TEXT
    parts = last_request(mock, "gpt-4o-mini")["messages"][0]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")

    got = node(shared_proxy, "count", {"model": "gpt-4o-mini", "messages": HELLO})
    assert got["count"]["input_tokens"] > 0


# ---------------------------------------------------------------------------- auth and errors


def test_x_api_key_and_bearer_both_authenticate(shared_proxy: Proxy) -> None:
    assert text_of(sdk(shared_proxy).messages.create(model="@fast", max_tokens=16, messages=HELLO)) == MOCK_TEXT
    bearer = anthropic.Anthropic(base_url=shared_proxy.url, auth_token=API_KEY, max_retries=0, timeout=20.0)
    assert text_of(bearer.messages.create(model="@fast", max_tokens=16, messages=HELLO)) == MOCK_TEXT
    with pytest.raises(anthropic.AuthenticationError) as e:
        sdk(shared_proxy, api_key="mlx-not-a-real-key-000").messages.create(model="@fast", max_tokens=16, messages=HELLO)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    got = node(shared_proxy, "create", {"model": "@fast", "max_tokens": 16, "messages": HELLO}, api_key="mlx-not-a-real-key-000")
    assert got["error"]["status"] == 401 and got["error"]["type"] == "authentication_error", got


@pytest.mark.parametrize(
    "body,headers,status,etype,needle",
    [
        ({"model": "gpt-4o-mini", "messages": HELLO}, {}, 400, "invalid_request_error", "max_tokens"),
        ({"model": "gpt-4o-mini", "max_tokens": 8, "messages": []}, {}, 400, "invalid_request_error", "messages"),
        ({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]}, {}, 400,
         "invalid_request_error", "messages[0].role"),
        ({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, {}, 400,
         "invalid_request_error", "video"),
        ({"model": "gpt-4o-mini", "max_tokens": 8, "system": 5, "messages": HELLO}, {}, 400, "invalid_request_error", "system"),
        ({"model": "gpt-4o-mini", "max_tokens": 8, "messages": HELLO}, {"anthropic-version": "yesterday"}, 400,
         "invalid_request_error", "anthropic-version"),
        ({"model": "no-such-model", "max_tokens": 8, "messages": HELLO}, {}, 404, "not_found_error", "no-such-model"),
        ({"model": "@NOPE", "max_tokens": 8, "messages": HELLO}, {}, 400, "invalid_request_error", "config name"),
    ],
    ids=["no-max-tokens", "no-messages", "system-role", "unknown-block", "bad-system", "bad-version", "unknown-model", "bad-slug"],
)
def test_errors_are_in_anthropics_shape(shared_proxy: Proxy, body: dict, headers: dict, status: int, etype: str,
                                        needle: str) -> None:
    r = shared_proxy.request("POST", "/v1/messages", body, headers={"x-api-key": API_KEY, **headers}, auth=False)
    assert r.status == status, r.text
    j = r.json()
    assert j["type"] == "error" and j["error"]["type"] == etype, j
    assert needle in j["error"]["message"], j


def test_sdk_raises_its_own_error_types(shared_proxy: Proxy, mock: Mock) -> None:
    client = sdk(shared_proxy)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="gpt-4o-mini", max_tokens=8, messages=[])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=8, messages=HELLO)


def test_every_target_failing_is_an_anthropic_error_with_the_request_id(proxy: Proxy, mock: Mock) -> None:
    mock.configure({m: {"error_status": 500} for m in ("claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash")})
    with pytest.raises(anthropic.APIStatusError) as e:
        sdk(proxy).messages.create(model="@production", max_tokens=8, messages=HELLO)
    assert e.value.status_code == 502
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "api_error"
    assert e.value.body["request_id"] == e.value.response.headers["x-request-id"]


def test_a_stream_that_breaks_after_output_ends_with_an_error_event(proxy: Proxy, mock: Mock) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 6, "disconnect_after_chunks": 3}})
    r = proxy.request("POST", "/v1/messages", {"model": "@fast", "max_tokens": 32, "stream": True, "messages": HELLO})
    assert r.status == 200
    names = [ln[7:] for ln in r.text.split("\n") if ln.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names, names
    err = json.loads(sse_events(r.body)[-1])
    assert err["type"] == "error" and err["error"]["type"] == "api_error"


# ---------------------------------------------------------------------------- Claude Code


CLAUDE_CODE_BODY = {
    "model": "@production",
    "max_tokens": 8192,
    "stream": True,
    "temperature": 1,
    "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
               {"type": "text", "text": "Working directory: /repo", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>context</system-reminder>"},
                                              {"type": "text", "text": "list the files", "cache_control": {"type": "ephemeral"}}]}],
    "tools": [{"name": "Bash", "description": "Runs a shell command",
               "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"],
                                "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}}],
    "metadata": {"user_id": "user_3f2a_account_9c_session_11"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}


@pytest.mark.parametrize("first_target_down", [False, True], ids=["anthropic", "failover-to-openai"])
def test_a_claude_code_shaped_request(proxy: Proxy, mock: Mock, first_target_down: bool) -> None:
    """What Claude Code sends (ANTHROPIC_BASE_URL pointed at modelux): ?beta=true, anthropic-beta
    headers, cache_control on system and message blocks, a tool with a JSON-schema $schema,
    thinking, metadata.user_id; streamed. It is served (by another family when Anthropic is
    down), and the end user is the metadata's user_id."""
    ls = {"tool_arguments": json.dumps({"command": "ls"})}
    mock.configure({"claude-haiku-4-5": {**ls, **({"error_status": 529} if first_target_down else {})}, "gpt-4o-mini": ls})
    r = proxy.request("POST", "/v1/messages?beta=true", CLAUDE_CODE_BODY, auth=False,
                      headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01",
                               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"})
    assert r.status == 200, r.text
    events = [json.loads(e) for e in sse_events(r.body)]
    use = next(e["content_block"] for e in events if e["type"] == "content_block_start")
    assert use["type"] == "tool_use" and use["name"] == "Bash"
    args = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
    assert json.loads(args) == {"command": "ls"}
    assert events[-1]["type"] == "message_stop"
    served = "gpt-4o-mini" if first_target_down else "claude-haiku-4-5"
    sent = last_request(mock, served)
    assert sent["messages"][0]["role"] == "system" and sent["tools"][0]["function"]["name"] == "Bash"
    trace = proxy.trace(r.headers["x-request-id"])
    assert trace["end_user"] == "user_3f2a_account_9c_session_11"
    assert trace["ok"] is True


def test_budgets_apply_to_messages_and_block_in_anthropics_shape(start_proxy: Any, mock: Mock) -> None:
    """Spend through /v1/messages is charged to the key's project like chat completions, and a
    block is a 429 rate_limit_error the Anthropic SDK raises as RateLimitError."""
    proxy = start_proxy(lambda c: c.update(budgets=[{"name": "msg-cap", "scope": {"project": "e2e"}, "window": "daily",
                                                     "limit_usd": 0.0005}]))
    client = sdk(proxy)
    served = 0
    with pytest.raises(anthropic.RateLimitError) as e:
        for _ in range(20):
            client.messages.create(model="gpt-4o", max_tokens=16, messages=HELLO)
            served += 1
    assert served > 0, "the cap blocked before anything was served"
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error"
    assert "msg-cap" in e.value.body["error"]["message"]
    assert mock.requests_for("gpt-4o") == served  # blocked before any upstream call
    spent = next(b for b in proxy.request("GET", "/v1/budgets").json()["budgets"] if b["name"] == "msg-cap")
    assert spent["spent_usd"] > 0, spent
