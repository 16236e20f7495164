"""Issue #20 item 4: wire formats checked by code we did not write.

The mock speaks every family with the library's own server-side codecs, and the client codecs
are tested against that same code, so a shared misreading of a provider's format would pass
everything else. Here the other side is each provider's official SDK:

* the mock's JSON answers, streams and error bodies are read by the official SDK of the family
  (openai for OpenAI, Azure OpenAI and the OpenAI-compatible providers; anthropic; google-genai;
  cohere; boto3/botocore for Bedrock Converse and ConverseStream). Besides the SDK's own (often
  lenient) parsing, every raw body and stream event is validated strictly against the SDK's
  response model, so a wrong type or a misspelt enum cannot hide behind a lenient parser;
* the requests our client codecs send upstream (captured by a recording relay between the proxy
  and the mock) are validated against the SDKs' request types: openai's and anthropic's create
  params TypedDicts (and the openai SDK must build the same body from the same conversation),
  mistralai's request models (Mistral refuses unknown fields), google-genai's pydantic models
  (which forbid unknown fields), cohere's v2 message and tool types, and botocore's
  ParamValidator on the Converse input shape, with the SigV4 signature recomputed by botocore.

Mistral shares OpenAI's path; the mock speaks Mistral's dialect for Mistral's model names
(422 for unknown fields, usage on the finish chunk), which the mistralai SDK reads here too.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import inspect
import json
import threading
import typing
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import anthropic
import boto3
import botocore.config
import botocore.eventstream
import botocore.exceptions
import botocore.session
import botocore.validate
import cohere
import cohere.errors
import httpx
import openai
import pydantic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from e2e_support import MOCK_TEXT, Mock, http_request, sse_events, start_proxy_process, base_config

# cohere's own model code touches a pydantic-deprecated attribute; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20")

PROMPT = "Say hello in one short sentence."
FAKE_KEY = "fake-key-for-the-mock"
TOOL_ID = "call_mock0001"  # the id the mock gives its tool call
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def expected_usage(*texts: str) -> tuple[int, int]:
    """The mock's deterministic usage: prompt = chars(+4 per message)/4, completion = len(text)/4."""
    chars = sum(len(t) + 4 for t in texts)
    return max(1, chars // 4), max(1, len(MOCK_TEXT) // 4)


PROMPT_TOKENS, COMPLETION_TOKENS = expected_usage(PROMPT)


def strict(model: Any, data: Any) -> Any:
    """Validates `data` against an SDK type (pydantic model, TypedDict or union) and returns it.
    Warnings are errors: google-genai only warns about an enum value it does not know."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
            return model.model_validate(data)
        return _adapter(model).validate_python(data)


@functools.cache
def _adapter(model: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(model)


COHERE_FINISH_REASONS = typing.get_args(typing.get_args(cohere.ChatFinishReason)[0])  # the SDK's Literal


# =============================================================================== OpenAI family


@dataclass(frozen=True)
class OpenAIFlavour:
    name: str
    model: str

    def make_client(self, mock: Mock) -> openai.OpenAI:
        kw: dict[str, Any] = {"api_key": FAKE_KEY, "max_retries": 0, "timeout": 10.0}
        if self.name == "azure":
            # The SDK builds /openai/deployments/{model}/chat/completions?api-version=... itself.
            return openai.AzureOpenAI(azure_endpoint=mock.url, api_version="2024-10-21", **kw)
        base = {"openai": "/v1", "groq": "/openai/v1", "mistral": "/v1", "deepseek": "", "openrouter": "/api/v1"}
        return openai.OpenAI(base_url=mock.url + base[self.name], **kw)


OPENAI_FLAVOURS = [
    OpenAIFlavour("openai", "gpt-4o-mini"),
    OpenAIFlavour("azure", "gpt-4o"),
    OpenAIFlavour("groq", "llama-3.1-8b-instant"),
    OpenAIFlavour("mistral", "mistral-small-latest"),
    OpenAIFlavour("deepseek", "deepseek-chat"),
    OpenAIFlavour("openrouter", "meta-llama/llama-3.1-8b-instruct"),
]
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER_SCHEMA}}
]


@pytest.fixture(scope="module")
def sdk(mock: Mock) -> Iterator[dict[str, Any]]:
    """One client per SDK (and per OpenAI flavour) for the module, closed at the end."""
    clients: dict[str, Any] = {f.name: f.make_client(mock) for f in OPENAI_FLAVOURS}
    clients["anthropic"] = anthropic.Anthropic(api_key=FAKE_KEY, base_url=mock.url, max_retries=0, timeout=10.0)
    # Held for the module: google-genai closes its HTTP client when the Client is collected.
    clients["gemini"] = genai.Client(api_key=FAKE_KEY, http_options=gtypes.HttpOptions(
        base_url=mock.url, timeout=10_000, retry_options=gtypes.HttpRetryOptions(attempts=1)))
    cohere_http = httpx.Client(timeout=10.0)
    clients["cohere"] = cohere.ClientV2(api_key=FAKE_KEY, base_url=mock.url, httpx_client=cohere_http)
    clients["bedrock"] = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=mock.url,
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                      read_timeout=10, connect_timeout=5))
    yield clients
    cohere_http.close()
    for name, c in clients.items():
        if name != "cohere":
            c.close()


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("fl", OPENAI_FLAVOURS, ids=[f.name for f in OPENAI_FLAVOURS])
def test_openai_sdk_reads_mock_json(mock, sdk, fl: OpenAIFlavour, tools: bool):
    from openai.types.chat import ChatCompletion

    kw = {"tools": OPENAI_TOOLS} if tools else {}
    raw = sdk[fl.name].chat.completions.with_raw_response.create(
        model=fl.model, messages=[{"role": "user", "content": PROMPT}], **kw
    )
    strict(ChatCompletion, json.loads(raw.http_response.text))
    r = raw.parse()
    assert isinstance(r, ChatCompletion)
    assert r.object == "chat.completion" and r.model == fl.model
    ch = r.choices[0]
    if tools:
        assert ch.finish_reason == "tool_calls"
        assert ch.message.content is None
        (call,) = ch.message.tool_calls
        assert (call.id, call.type, call.function.name, json.loads(call.function.arguments)) == (
            TOOL_ID, "function", "get_weather", {})
    else:
        assert ch.finish_reason == "stop"
        assert ch.message.role == "assistant" and ch.message.content == MOCK_TEXT
        assert not ch.message.tool_calls
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)


def finish_of(tools: bool) -> str:
    return "tool_calls" if tools else "stop"


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("fl", OPENAI_FLAVOURS, ids=[f.name for f in OPENAI_FLAVOURS])
def test_openai_sdk_reads_mock_stream(mock, sdk, fl: OpenAIFlavour, tools: bool):
    from openai.types.chat import ChatCompletionChunk

    kw: dict[str, Any] = {"tools": OPENAI_TOOLS} if tools else {}
    if fl.name != "mistral":  # Mistral refuses stream_options and always sends usage
        kw["stream_options"] = {"include_usage": True}
    raw = sdk[fl.name].chat.completions.with_raw_response.create(
        model=fl.model, messages=[{"role": "user", "content": PROMPT}], stream=True, **kw)
    text, calls, finish, usage, n = "", {}, None, None, 0
    for chunk in raw.parse():
        assert isinstance(chunk, ChatCompletionChunk)
        n += 1
        assert chunk.object == "chat.completion.chunk" and chunk.model == fl.model
        if chunk.usage is not None:
            # OpenAI: a usage chunk with no choice. Mistral: usage on the finish chunk.
            assert [c.finish_reason for c in chunk.choices] == ([finish_of(tools)] if fl.name == "mistral" else [])
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "args": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["args"] += (tc.function.arguments or "") if tc.function else ""
            finish = ch.finish_reason or finish
    assert n >= 3
    # The SDK builds chunks without validation: validate the raw events (the same request).
    path = raw.http_request.url.raw_path.decode()
    body = {"model": fl.model, "stream": True, "messages": [{"role": "user", "content": PROMPT}], **kw}
    events = sse_events(http_request(mock.port, "POST", path, body, {"authorization": f"Bearer {FAKE_KEY}",
                                                                      "api-key": FAKE_KEY}).body)
    assert events[-1] == "[DONE]"
    for data in events[:-1]:
        strict(ChatCompletionChunk, json.loads(data))
    if tools:
        assert text == "" and finish == "tool_calls"
        assert calls == {0: {"id": TOOL_ID, "name": "get_weather", "args": "{}"}}
    else:
        assert text == MOCK_TEXT and finish == "stop" and calls == {}
    assert usage is not None, "include_usage was asked for (Mistral: always sent)"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)


OPENAI_ERRORS = [(429, openai.RateLimitError), (401, openai.AuthenticationError), (500, openai.InternalServerError)]


@pytest.mark.parametrize("status,exc", OPENAI_ERRORS, ids=[str(s) for s, _ in OPENAI_ERRORS])
@pytest.mark.parametrize("fl", [OPENAI_FLAVOURS[0], OPENAI_FLAVOURS[1]], ids=["openai", "azure"])
def test_openai_sdk_raises_its_errors(mock, sdk, fl: OpenAIFlavour, status: int, exc: type):
    mock.configure({fl.model: {"error_status": status, "retry_after_ms": 2000}})
    with pytest.raises(exc) as info:
        sdk[fl.name].chat.completions.create(model=fl.model, messages=[{"role": "user", "content": PROMPT}])
    e = info.value
    assert e.status_code == status
    assert isinstance(e.body, dict) and "mock injected error" in e.body["message"]  # the SDK unwraps "error"
    assert e.type == {429: "rate_limit_error", 401: "authentication_error", 500: "server_error"}[status]
    assert e.response.headers["retry-after"] == "2"


# =============================================================================== Mistral
# Mistral shares OpenAI's path; the mock serves Mistral's dialect for Mistral's model names.

MISTRAL_MODEL = "mistral-small-latest"


def mistral_sdk(mock: Mock) -> Any:
    try:
        from mistralai import Mistral
    except ImportError:  # mistralai >= 2 keeps it in mistralai.client
        from mistralai.client import Mistral
    return Mistral(api_key=FAKE_KEY, server_url=mock.url, timeout_ms=10_000)


def test_mistral_sdk_reads_mock_json_and_stream(mock):
    mock.configure({MISTRAL_MODEL: {"chunks": 4}})
    with mistral_sdk(mock) as client:
        r = client.chat.complete(model=MISTRAL_MODEL, messages=[{"role": "user", "content": PROMPT}])
        assert r.choices[0].message.content == MOCK_TEXT and r.choices[0].finish_reason == "stop"
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
        text, finish, usage_on = "", None, []
        for ev in client.chat.stream(model=MISTRAL_MODEL, messages=[{"role": "user", "content": PROMPT}]):
            ch = ev.data.choices[0] if ev.data.choices else None
            if ch is not None:
                text += ch.delta.content or ""
                finish = ch.finish_reason or finish
            if ev.data.usage is not None:
                usage_on.append(ch.finish_reason if ch is not None else None)
                usage = ev.data.usage
    assert text == MOCK_TEXT and finish == "stop"
    # Usage unasked (Mistral has no stream_options), on the chunk that finishes.
    assert usage_on == ["stop"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_mock_refuses_what_mistral_refuses(mock, sdk):
    """The openai SDK's stream_options, sent to Mistral, get Mistral's 422 extra_forbidden."""
    with pytest.raises(openai.UnprocessableEntityError) as info:
        sdk["mistral"].chat.completions.create(model=MISTRAL_MODEL, messages=[{"role": "user", "content": PROMPT}],
                                               stream=True, stream_options={"include_usage": True})
    assert info.value.body["object"] == "error"  # Mistral's errors have no "error" envelope
    (detail,) = info.value.body["message"]["detail"]
    assert detail["type"] == "extra_forbidden" and detail["loc"] == ["body", "stream_options"]


# =============================================================================== Anthropic


ANTHROPIC_MODEL = "claude-haiku-4-5"
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA}]


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_anthropic_sdk_reads_mock_json(mock, sdk, tools: bool):
    from anthropic.types import Message, TextBlock, ToolUseBlock

    kw = {"tools": ANTHROPIC_TOOLS} if tools else {}
    raw = sdk["anthropic"].messages.with_raw_response.create(
        model=ANTHROPIC_MODEL, max_tokens=128, messages=[{"role": "user", "content": PROMPT}], **kw)
    strict(Message, json.loads(raw.http_response.text))
    m = raw.parse()
    assert isinstance(m, Message)
    assert (m.type, m.role, m.model) == ("message", "assistant", ANTHROPIC_MODEL)
    if tools:
        assert m.stop_reason == "tool_use"
        (block,) = m.content
        assert isinstance(block, ToolUseBlock)
        assert (block.id, block.name, block.input) == (TOOL_ID, "get_weather", {})
    else:
        assert m.stop_reason == "end_turn"
        (block,) = m.content
        assert isinstance(block, TextBlock) and block.text == MOCK_TEXT
    assert (m.usage.input_tokens, m.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_anthropic_sdk_reads_mock_stream(mock, sdk, tools: bool):
    from anthropic.types import Message, RawMessageStreamEvent, ToolUseBlock

    kw = {"tools": ANTHROPIC_TOOLS} if tools else {}
    mock.configure({ANTHROPIC_MODEL: {"chunks": 5}})
    # Raw events first: each one must validate as the SDK's event union.
    r = http_request(mock.port, "POST", "/v1/messages",
                     {"model": ANTHROPIC_MODEL, "max_tokens": 128, "stream": True,
                      "messages": [{"role": "user", "content": PROMPT}], **kw},
                     {"x-api-key": FAKE_KEY, "anthropic-version": "2023-06-01"})
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(d) for d in sse_events(r.body)]
    # `ping` is a keep-alive the API sends and the SDK drops before its event union.
    types_seen = [strict(RawMessageStreamEvent, e).type for e in events if e["type"] != "ping"]
    assert types_seen[0] == "message_start" and types_seen[-2:] == ["message_delta", "message_stop"]
    # Then the SDK's own stream accumulator.
    with sdk["anthropic"].messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=128, messages=[{"role": "user", "content": PROMPT}], **kw
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert isinstance(final, Message)
    if tools:
        assert text == "" and final.stop_reason == "tool_use"
        (block,) = final.content
        assert isinstance(block, ToolUseBlock) and (block.id, block.name, block.input) == (TOOL_ID, "get_weather", {})
    else:
        assert text == MOCK_TEXT and final.stop_reason == "end_turn"
        assert final.content[0].text == MOCK_TEXT
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


ANTHROPIC_ERRORS = [
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.InternalServerError, "overloaded_error"),
]


@pytest.mark.parametrize("status,exc,etype", ANTHROPIC_ERRORS, ids=[str(s) for s, _, _ in ANTHROPIC_ERRORS])
def test_anthropic_sdk_raises_its_errors(mock, sdk, status: int, exc: type, etype: str):
    from anthropic.types import ErrorResponse

    mock.configure({ANTHROPIC_MODEL: {"error_status": status}})
    with pytest.raises(exc) as info:
        sdk["anthropic"].messages.create(model=ANTHROPIC_MODEL, max_tokens=64,
                                               messages=[{"role": "user", "content": PROMPT}])
    e = info.value
    assert e.status_code == status
    body = strict(ErrorResponse, e.body)
    assert body.error.type == etype and "mock injected error" in body.error.message


def test_anthropic_sdk_gets_a_refused_request_as_bad_request(mock, sdk):
    """temperature with top_p, refused as current Claude models do, in Anthropic's error shape."""
    from anthropic.types import ErrorResponse

    with pytest.raises(anthropic.BadRequestError) as info:
        sdk["anthropic"].messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
                                         extra_body={"temperature": 0.5, "top_p": 0.9})
    body = strict(ErrorResponse, info.value.body)
    assert body.error.type == "invalid_request_error" and "top_p" in body.error.message


# =============================================================================== Gemini

GEMINI_MODEL = "gemini-2.5-flash"


def gemini_config(tools: bool) -> gtypes.GenerateContentConfig | None:
    if not tools:
        return None
    return gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(
            name="get_weather", description="Weather.", parameters_json_schema=WEATHER_SCHEMA)])],
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True))


def check_gemini_usage(u: gtypes.GenerateContentResponseUsageMetadata) -> None:
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (
        PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_gemini_sdk_reads_mock_json(mock, sdk, tools: bool):
    client = sdk["gemini"]
    r = client.models.generate_content(model=GEMINI_MODEL, contents=PROMPT, config=gemini_config(tools))
    assert isinstance(r, gtypes.GenerateContentResponse)
    # The raw body, validated by the SDK's models (they forbid unknown fields).
    raw = http_request(mock.port, "POST", f"/v1beta/models/{GEMINI_MODEL}:generateContent",
                       {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}, {"x-goog-api-key": FAKE_KEY})
    strict(gtypes.GenerateContentResponse, raw.json())
    (cand,) = r.candidates
    assert cand.finish_reason == gtypes.FinishReason.STOP  # Gemini ends tool turns with STOP too
    assert cand.content.role == "model"
    if tools:
        (call,) = r.function_calls
        assert (call.name, call.args) == ("get_weather", {})
        assert r.text is None
    else:
        assert r.text == MOCK_TEXT and not r.function_calls
    check_gemini_usage(r.usage_metadata)
    assert r.model_version == GEMINI_MODEL


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_gemini_sdk_reads_mock_stream(mock, sdk, tools: bool):
    mock.configure({GEMINI_MODEL: {"chunks": 5}})
    text, calls, finish, usage, n = "", [], None, None, 0
    client = sdk["gemini"]
    for ev in client.models.generate_content_stream(model=GEMINI_MODEL, contents=PROMPT, config=gemini_config(tools)):
        assert isinstance(ev, gtypes.GenerateContentResponse)
        n += 1
        for part in ev.candidates[0].content.parts:
            text += part.text or ""
            if part.function_call:
                calls.append((part.function_call.name, part.function_call.args))
        finish = ev.candidates[0].finish_reason or finish
        usage = ev.usage_metadata or usage
    raw = http_request(mock.port, "POST", f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse",
                       {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}, {"x-goog-api-key": FAKE_KEY})
    for data in sse_events(raw.body):
        strict(gtypes.GenerateContentResponse, json.loads(data))
    assert finish == gtypes.FinishReason.STOP
    if tools:
        assert n == 1 and text == "" and calls == [("get_weather", {})]
    else:
        assert n == 5 and text == MOCK_TEXT and calls == []
    check_gemini_usage(usage)


GEMINI_ERRORS = [
    (429, genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
    (401, genai_errors.ClientError, "UNAUTHENTICATED"),
    (500, genai_errors.ServerError, "INTERNAL"),
]


@pytest.mark.parametrize("status,exc,st", GEMINI_ERRORS, ids=[str(s) for s, _, _ in GEMINI_ERRORS])
def test_gemini_sdk_raises_its_errors(mock, sdk, status: int, exc: type, st: str):
    mock.configure({GEMINI_MODEL: {"error_status": status}})
    client = sdk["gemini"]
    with pytest.raises(exc) as info:
        client.models.generate_content(model=GEMINI_MODEL, contents=PROMPT)
    e = info.value
    assert (e.code, e.status) == (status, st)
    assert "mock injected error" in e.message


# =============================================================================== Cohere

COHERE_MODEL = "command-r-08-2024"
NO_RETRY = {"max_retries": 0, "timeout_in_seconds": 10}


def check_cohere_usage(u: Any) -> None:
    assert (u.tokens.input_tokens, u.tokens.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert (u.billed_units.input_tokens, u.billed_units.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_cohere_sdk_reads_mock_json(mock, sdk, tools: bool):
    from cohere import V2ChatResponse

    kw = {"tools": OPENAI_TOOLS} if tools else {}
    r = sdk["cohere"].chat(model=COHERE_MODEL, messages=[{"role": "user", "content": PROMPT}],
                                 request_options=NO_RETRY, **kw)
    assert isinstance(r, V2ChatResponse)
    # The SDK builds its objects without validation (construct_type): validate the raw body.
    raw = http_request(mock.port, "POST", "/v2/chat",
                       {"model": COHERE_MODEL, "messages": [{"role": "user", "content": PROMPT}], **kw},
                       {"authorization": f"Bearer {FAKE_KEY}"})
    strict(V2ChatResponse, raw.json())
    # Cohere's enums are Union[Literal[...], Any]: check the value against the Literal itself.
    assert raw.json()["finish_reason"] in COHERE_FINISH_REASONS
    assert r.message.role == "assistant"
    if tools:
        assert r.finish_reason == "TOOL_CALL"
        (call,) = r.message.tool_calls
        assert (call.id, call.type, call.function.name, json.loads(call.function.arguments)) == (
            TOOL_ID, "function", "get_weather", {})
    else:
        assert r.finish_reason == "COMPLETE"
        (block,) = r.message.content
        assert (block.type, block.text) == ("text", MOCK_TEXT)
    check_cohere_usage(r.usage)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_cohere_sdk_reads_mock_stream(mock, sdk, tools: bool):
    from cohere import StreamedChatResponseV2

    kw = {"tools": OPENAI_TOOLS} if tools else {}
    mock.configure({COHERE_MODEL: {"chunks": 5}})
    text, calls, finish, usage, kinds = "", {}, None, None, []
    for ev in sdk["cohere"].chat_stream(model=COHERE_MODEL, messages=[{"role": "user", "content": PROMPT}],
                                              request_options=NO_RETRY, **kw):
        kinds.append(ev.type)
        if ev.type == "content-delta":
            text += ev.delta.message.content.text
        elif ev.type == "tool-call-start":
            tc = ev.delta.message.tool_calls
            calls[ev.index] = {"id": tc.id, "name": tc.function.name, "args": tc.function.arguments or ""}
        elif ev.type == "tool-call-delta":
            calls[ev.index]["args"] += ev.delta.message.tool_calls.function.arguments
        elif ev.type == "message-end":
            finish, usage = ev.delta.finish_reason, ev.delta.usage
    raw = http_request(mock.port, "POST", "/v2/chat",
                       {"model": COHERE_MODEL, "stream": True, "messages": [{"role": "user", "content": PROMPT}], **kw},
                       {"authorization": f"Bearer {FAKE_KEY}"})
    for data in sse_events(raw.body):
        ev = strict(StreamedChatResponseV2, json.loads(data))
        if ev.type == "message-end":
            assert ev.delta.finish_reason in COHERE_FINISH_REASONS
    assert kinds[0] == "message-start" and kinds[-1] == "message-end"
    if tools:
        assert finish == "TOOL_CALL" and text == ""
        assert calls == {0: {"id": TOOL_ID, "name": "get_weather", "args": "{}"}}
    else:
        assert finish == "COMPLETE" and text == MOCK_TEXT and calls == {}
        assert kinds.count("content-delta") == 5
    check_cohere_usage(usage)


COHERE_ERRORS = [
    (429, cohere.errors.TooManyRequestsError),
    (401, cohere.errors.UnauthorizedError),
    (500, cohere.errors.InternalServerError),
]


@pytest.mark.parametrize("status,exc", COHERE_ERRORS, ids=[str(s) for s, _ in COHERE_ERRORS])
def test_cohere_sdk_raises_its_errors(mock, sdk, status: int, exc: type):
    mock.configure({COHERE_MODEL: {"error_status": status}})
    with pytest.raises(exc) as info:
        sdk["cohere"].chat(model=COHERE_MODEL, messages=[{"role": "user", "content": PROMPT}],
                                 request_options=NO_RETRY)
    assert info.value.status_code == status
    assert "mock injected error" in info.value.body["message"]


def test_cohere_sdk_gets_a_refused_request_as_bad_request(mock, sdk):
    with pytest.raises(cohere.errors.BadRequestError) as info:
        sdk["cohere"].chat(model=COHERE_MODEL, messages=[], request_options=NO_RETRY)
    assert info.value.status_code == 400 and info.value.body["message"]


def test_gemini_refused_request_has_gemini_error_shape(mock):
    r = http_request(mock.port, "POST", f"/v1beta/models/{GEMINI_MODEL}:generateContent", {"contents": []},
                     {"x-goog-api-key": FAKE_KEY})
    assert r.status == 400
    err = r.json()["error"]
    assert (err["code"], err["status"]) == (400, "INVALID_ARGUMENT") and err["message"]


# =============================================================================== Bedrock

BEDROCK_MODEL = "amazon.nova-lite-v1:0"
BEDROCK_TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather.",
                                         "inputSchema": {"json": WEATHER_SCHEMA}}}]}


def bedrock_operation(name: str) -> Any:
    return botocore.session.get_session().get_service_model("bedrock-runtime").operation_model(name)


def check_bedrock_shape(value: dict, shape: Any) -> None:
    """botocore's ParamValidator on an output shape: required members, no unknown member, types."""
    report = botocore.validate.ParamValidator().validate(value, shape)
    assert not report.has_errors(), report.generate_report()


def check_bedrock_usage(u: dict) -> None:
    assert (u["inputTokens"], u["outputTokens"], u["totalTokens"]) == (
        PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)


BEDROCK_MESSAGES = [{"role": "user", "content": [{"text": PROMPT}]}]


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_bedrock_sdk_reads_mock_converse(mock, sdk, tools: bool):
    kw = {"toolConfig": BEDROCK_TOOLS} if tools else {}
    r = sdk["bedrock"].converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES, **kw)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    msg = r["output"]["message"]
    assert msg["role"] == "assistant"
    if tools:
        assert r["stopReason"] == "tool_use"
        assert msg["content"] == [{"toolUse": {"toolUseId": TOOL_ID, "name": "get_weather", "input": {}}}]
    else:
        assert r["stopReason"] == "end_turn"
        assert msg["content"] == [{"text": MOCK_TEXT}]
    check_bedrock_usage(r["usage"])
    assert r["metrics"]["latencyMs"] >= 0
    # botocore's parser ignores unknown members: check the raw body against the output shape.
    raw = http_request(mock.port, "POST", f"/model/{BEDROCK_MODEL}/converse",
                       {"messages": BEDROCK_MESSAGES, **kw}, {"authorization": "Bearer x"})
    check_bedrock_shape(raw.json(), bedrock_operation("Converse").output_shape)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_bedrock_sdk_reads_mock_converse_stream(mock, sdk, tools: bool):
    kw = {"toolConfig": BEDROCK_TOOLS} if tools else {}
    mock.configure({BEDROCK_MODEL: {"chunks": 5}})
    r = sdk["bedrock"].converse_stream(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES, **kw)
    kinds, text, tool, args, stop, usage = [], "", None, "", None, None
    # botocore's EventStream: binary framing, CRCs and each event's shape are botocore's.
    event_shapes = bedrock_operation("ConverseStream").output_shape.members["stream"].members
    for ev in r["stream"]:
        (kind,) = ev.keys()
        kinds.append(kind)
        body = ev[kind]
        if kind == "contentBlockStart":
            tool = body["start"]["toolUse"]
        elif kind == "contentBlockDelta":
            text += body["delta"].get("text", "")
            args += body["delta"].get("toolUse", {}).get("input", "")
        elif kind == "messageStop":
            stop = body["stopReason"]
        elif kind == "metadata":
            usage = body["usage"]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    # botocore's parser drops unknown members: read the raw frames with botocore's event-stream
    # decoder and check each payload against its event shape.
    raw = http_request(mock.port, "POST", f"/model/{BEDROCK_MODEL}/converse-stream",
                       {"messages": BEDROCK_MESSAGES, **kw}, {"authorization": "Bearer x"})
    assert raw.headers["content-type"] == "application/vnd.amazon.eventstream"
    frames = botocore.eventstream.EventStreamBuffer()
    frames.add_data(raw.body)
    raw_kinds = []
    for m in frames:
        assert (m.headers[":message-type"], m.headers[":content-type"]) == ("event", "application/json")
        raw_kinds.append(m.headers[":event-type"])
        check_bedrock_shape(json.loads(m.payload), event_shapes[raw_kinds[-1]])
    assert raw_kinds == kinds
    if tools:
        assert stop == "tool_use" and text == ""
        assert tool == {"toolUseId": TOOL_ID, "name": "get_weather"} and json.loads(args) == {}
    else:
        assert stop == "end_turn" and text == MOCK_TEXT and tool is None
        assert kinds.count("contentBlockDelta") == 5
    check_bedrock_usage(usage)


BEDROCK_ERRORS = [(429, 429, "ThrottlingException"), (401, 403, "UnrecognizedClientException"),
                  (500, 500, "InternalServerException")]


@pytest.mark.parametrize("status,wire_status,code", BEDROCK_ERRORS, ids=[str(s) for s, _, _ in BEDROCK_ERRORS])
def test_bedrock_sdk_raises_its_errors(mock, sdk, status: int, wire_status: int, code: str):
    mock.configure({BEDROCK_MODEL: {"error_status": status}})
    client = sdk["bedrock"]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
    e = info.value
    assert e.response["Error"]["Code"] == code
    assert "mock injected error" in e.response["Error"]["Message"]
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == wire_status
    modeled = getattr(client.exceptions, code, None)
    if code != "UnrecognizedClientException":  # a generic AWS auth error, not in the Bedrock model
        assert modeled is not None and isinstance(e, modeled)


def test_bedrock_sdk_gets_a_refused_request_as_validation_exception(mock, sdk):
    client = sdk["bedrock"]
    with pytest.raises(client.exceptions.ValidationException) as info:
        client.converse(modelId=BEDROCK_MODEL, messages=[])
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# =============================================================================== requests we send


class Recorder:
    """An HTTP relay between the proxy and the mock that keeps every request it forwards."""

    def __init__(self, upstream_port: int):
        self.requests: list[dict] = []
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                rec.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                     "body": body})
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                try:
                    hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request("POST", self.path, body=body, headers=hdrs)
                    up = conn.getresponse()
                    data = up.read()
                    self.send_response(up.status)
                    for k, v in up.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="recorder", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def recorded(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Recorder]]:
    rec = Recorder(mock.port)
    tmp = tmp_path_factory.mktemp("recorded")
    proxy = start_proxy_process(base_config(f"http://127.0.0.1:{rec.port}", tmp / "traces.db"), tmp, "proxy")
    try:
        yield proxy, rec
    finally:
        proxy.proc.stop()
        rec.stop()


# A conversation that exercises every mapping: system prompt, a tool call and its result, tools,
# tool choice, sampling parameters and stop sequences.
RICH = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_a1", "content": "{\"temp_c\": 18}"},
        {"role": "user", "content": "And in Rome?"},
    ],
    # A schema as OpenAI strict mode wants it: JSON Schema with a nullable type array, closed
    # objects and $defs. Gemini's `parameters` (an OpenAPI subset) cannot hold it.
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]},
                       "when": {"$ref": "#/$defs/day"}},
        "required": ["city", "unit", "when"],
        "additionalProperties": False,
        "$defs": {"day": {"type": "string", "enum": ["today", "tomorrow"]}},
    }}}],
    "tool_choice": "auto",
    "temperature": 0.5,
    "top_p": 0.9,
    "max_tokens": 64,
    "stop": ["END"],
}


@dataclass(frozen=True)
class Sent:
    family: str
    model: str        # what the client asks the proxy for
    path: str         # where the upstream request must go (no query)


SENT = [
    Sent("openai", "gpt-4o-mini", "/v1/chat/completions"),
    Sent("azure", "azure/gpt-4o", "/openai/deployments/gpt-4o/chat/completions"),
    Sent("groq", "groq/llama-3.1-8b", "/openai/v1/chat/completions"),
    Sent("mistral", "mistral-small-latest", "/v1/chat/completions"),
    Sent("anthropic", "claude-haiku-4-5", "/v1/messages"),
    Sent("gemini", "gemini-2.5-flash", "/v1beta/models/gemini-2.5-flash:generateContent"),
    Sent("cohere", "command-r-08-2024", "/v2/chat"),
    Sent("bedrock", "bedrock/nova-lite", "/model/amazon.nova-lite-v1%3A0/converse"),
]


def send_through_proxy(recorded: tuple[Any, Recorder], s: Sent, stream: bool) -> dict:
    proxy, rec = recorded
    before = len(rec.requests)
    rich = dict(RICH)
    if s.family == "anthropic":
        del rich["top_p"]  # refused next to temperature (see check_anthropic_request)
    r = proxy.chat_raw({"model": s.model, "stream": stream, **rich})
    assert r.status == 200, r.text
    assert len(rec.requests) == before + 1, "one upstream request"
    return rec.requests[-1]


def unknown_keys(typed_dict: Any, value: dict, path: str = "$") -> list[str]:
    """Keys of `value` the TypedDict does not declare (pydantic ignores extra TypedDict keys)."""
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    return [f"{path}.{k}" for k in value if k not in hints]


def dropped_keys(data: Any, dumped: Any, path: str = "$") -> list[str]:
    """Keys of `data` that a model's validate-then-dump round trip dropped: fields the SDK's
    model does not know (for models that ignore extra input instead of refusing it)."""
    out: list[str] = []
    if isinstance(data, dict) and isinstance(dumped, dict):
        for k, v in data.items():
            if k not in dumped:
                out.append(f"{path}.{k}")
            else:
                out += dropped_keys(v, dumped[k], f"{path}.{k}")
    elif isinstance(data, list) and isinstance(dumped, list):
        for i, (a, b) in enumerate(zip(data, dumped)):
            out += dropped_keys(a, b, f"{path}[{i}]")
    return out


def check_mistral_request(body: dict, stream: bool) -> None:
    """Mistral's API refuses unknown fields (422 extra_forbidden): every field we send must be
    one its SDK's request model knows."""
    try:
        from mistralai.client.models import ChatCompletionRequest, ChatCompletionStreamRequest
    except ImportError:  # mistralai 1.x
        from mistralai.models import ChatCompletionRequest, ChatCompletionStreamRequest
    model = ChatCompletionStreamRequest if stream else ChatCompletionRequest
    dumped = strict(model, body).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dropped_keys(body, dumped) == []


def check_openai_request(s: Sent, req: dict, body: dict, stream: bool) -> None:
    from openai.types.chat import completion_create_params as ccp

    if s.family == "mistral":
        check_mistral_request(body, stream)

    td = ccp.CompletionCreateParamsStreaming if stream else ccp.CompletionCreateParamsNonStreaming
    strict(td, body)
    assert unknown_keys(td, body) == []
    if stream and s.family == "mistral":
        assert "stream_options" not in body  # refused by Mistral, whose streams report usage anyway
    elif stream:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    headers = req["headers"]
    if s.family == "azure":
        assert req["path"].split("?")[1] == "api-version=2024-10-21"
        assert headers["api-key"] == "mock-azure-key" and "authorization" not in headers
    else:
        assert headers["authorization"].startswith("Bearer mock-")
    mine = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")}
    if s.family == "mistral":
        # Mistral takes only 9-character alphanumeric call ids: the codec rewrites them, keeping
        # the call and its result matched.
        call_id = mine["messages"][2]["tool_calls"][0]["id"]
        assert len(call_id) == 9 and call_id.isalnum() and mine["messages"][3]["tool_call_id"] == call_id
        mine["messages"][2]["tool_calls"][0]["id"] = mine["messages"][3]["tool_call_id"] = "call_a1"
    # The SDK, given the same conversation, builds the same body (up to the model name).
    assert mine == {k: v for k, v in sdk_openai_body().items() if k != "model"}


def sdk_openai_body() -> dict:
    """What the openai SDK itself sends for RICH, captured on a throwaway local listener."""
    captured: dict = {}

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            captured.update(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.handle_request, daemon=True)
    t.start()
    try:
        c = openai.OpenAI(api_key="x", base_url=f"http://127.0.0.1:{srv.server_address[1]}", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", **RICH)
    finally:
        t.join(5)
        srv.server_close()
    return captured


def check_anthropic_request(req: dict, body: dict, stream: bool) -> None:
    from anthropic.types import message_create_params as mcp

    td = mcp.MessageCreateParamsStreaming if stream else mcp.MessageCreateParamsNonStreaming
    # anthropic>=1 dropped temperature/top_p/top_k from its params (they go as extra body to the
    # models that still take them), and current models refuse temperature and top_p together.
    sampling = {k: body.pop(k) for k in ("temperature", "top_p", "top_k") if k in body}
    assert sampling == {"temperature": 0.5}
    strict(td, body)
    assert unknown_keys(td, body) == []
    for i, m in enumerate(body["messages"]):
        strict(anthropic.types.MessageParam, m)
        for b in m["content"] if isinstance(m["content"], list) else []:
            strict(anthropic.types.ContentBlockParam, b)
            if b["type"] == "tool_result":
                assert unknown_keys(anthropic.types.ToolResultBlockParam, b) == []
    for t in body.get("tools", []):
        assert unknown_keys(anthropic.types.ToolParam, t) == []
    assert req["headers"]["x-api-key"] == "mock-anthropic-key"
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["system"] == [{"type": "text", "text": "You are terse."}]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["stop_sequences"] == ["END"] and body["max_tokens"] == 64


GEMINI_REST_KEYS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
                    "cachedContent", "labels"}


def check_gemini_request(req: dict, body: dict, stream: bool) -> None:
    assert set(body) <= GEMINI_REST_KEYS, set(body) - GEMINI_REST_KEYS
    # google-genai's models take the REST (camelCase) names and forbid unknown fields.
    for c in body["contents"]:
        strict(gtypes.Content, c)
    strict(gtypes.Content, body["systemInstruction"])
    for t in body["tools"]:
        strict(gtypes.Tool, t)
    (decl,) = body["tools"][0]["functionDeclarations"]
    assert decl["parametersJsonSchema"] == RICH["tools"][0]["function"]["parameters"]
    strict(gtypes.ToolConfig, body["toolConfig"])
    gen = strict(gtypes.GenerationConfig, body["generationConfig"])
    assert (gen.temperature, gen.top_p, gen.max_output_tokens, gen.stop_sequences) == (0.5, 0.9, 64, ["END"])
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert req["headers"]["x-goog-api-key"] == "mock-gemini-key"
    if stream:
        assert req["path"].endswith(":streamGenerateContent?alt=sse")


def check_cohere_request(req: dict, body: dict, stream: bool) -> None:
    params = set(inspect.signature(cohere.ClientV2.chat).parameters) - {"self", "request_options"}
    assert set(body) <= params | {"stream"}, set(body) - params
    assert body.get("stream", False) is stream
    strict(cohere.ChatMessages, body["messages"])
    strict(typing.List[cohere.ToolV2], body["tools"])
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert body["p"] == 0.9 and body["stop_sequences"] == ["END"] and body["max_tokens"] == 64
    assert req["headers"]["authorization"] == "Bearer mock-cohere-key"


def check_bedrock_request(req: dict, body: dict, stream: bool) -> None:
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    op = model.operation_model("ConverseStream" if stream else "Converse")
    report = botocore.validate.ParamValidator().validate({"modelId": "amazon.nova-lite-v1:0", **body}, op.input_shape)
    assert not report.has_errors(), report.generate_report()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    check_bedrock_signature(req)


def check_bedrock_signature(req: dict) -> None:
    """Our SigV4 signature equals the one botocore computes for the same request (the model id's
    ':' is where path encoding goes wrong: it is signed encoded twice)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    h = req["headers"]
    amz_date = h["x-amz-date"]
    aws = AWSRequest(method="POST", url=f"http://{h['host']}{req['path']}", data=req["body"],
                     headers={"content-type": h["content-type"], "x-amz-date": amz_date})
    aws.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "bedrock", "us-east-1")
    canonical = auth.canonical_request(aws)
    expected = auth.signature(auth.string_to_sign(aws, canonical), aws)
    scope = f"AKIDEXAMPLE/{amz_date[:8]}/us-east-1/bedrock/aws4_request"
    assert h["authorization"] == (f"AWS4-HMAC-SHA256 Credential={scope}, "
                                  f"SignedHeaders=content-type;host;x-amz-date, Signature={expected}"), canonical


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("s", SENT, ids=[s.family for s in SENT])
def test_request_we_send_is_valid_for_the_sdk(recorded, s: Sent, stream: bool):
    req = send_through_proxy(recorded, s, stream)
    path = req["path"].split("?")[0]
    expect = s.path
    if stream:
        expect = expect.replace(":generateContent", ":streamGenerateContent").replace("/converse", "/converse-stream")
    assert path == expect
    body = json.loads(req["body"])
    if s.family in ("openai", "azure", "groq", "mistral"):
        check_openai_request(s, req, body, stream)
    elif s.family == "anthropic":
        check_anthropic_request(req, body, stream)
    elif s.family == "gemini":
        check_gemini_request(req, body, stream)
    elif s.family == "cohere":
        check_cohere_request(req, body, stream)
    else:
        check_bedrock_request(req, body, stream)


JSON_MODE = {
    "messages": [{"role": "user", "content": "A city and its country, as JSON."}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"], "additionalProperties": False}}},
}


@pytest.mark.parametrize("s", [x for x in SENT if x.family != "bedrock"], ids=lambda x: x.family)
def test_json_mode_request_is_valid_for_the_sdk(recorded, s: Sent):
    """response_format json_schema as each family expresses it (Bedrock refuses JSON mode)."""
    proxy, rec = recorded
    r = proxy.chat_raw({"model": s.model, **JSON_MODE})
    assert r.status == 200, r.text
    body = json.loads(rec.requests[-1]["body"])
    schema = JSON_MODE["response_format"]["json_schema"]["schema"]
    if s.family in ("openai", "azure", "groq", "mistral"):
        strict(openai.types.chat.completion_create_params.CompletionCreateParamsNonStreaming, body)
        assert body["response_format"] == JSON_MODE["response_format"]
        if s.family == "mistral":
            check_mistral_request(body, False)
    elif s.family == "anthropic":
        from anthropic.types import message_create_params as mcp

        strict(mcp.MessageCreateParamsNonStreaming, body)
        assert unknown_keys(mcp.MessageCreateParamsNonStreaming, body) == []
        # JSON mode is a forced tool whose input schema is the schema.
        (tool,) = body["tools"]
        assert unknown_keys(anthropic.types.ToolParam, tool) == []
        assert tool["input_schema"] == schema
        assert body["tool_choice"] == {"type": "tool", "name": tool["name"]}
    elif s.family == "gemini":
        assert set(body) <= GEMINI_REST_KEYS
        gen = strict(gtypes.GenerationConfig, body["generationConfig"])
        assert gen.response_mime_type == "application/json" and gen.response_json_schema == schema
    else:  # cohere
        strict(cohere.ResponseFormatV2, body["response_format"])
        assert body["response_format"] == {"type": "json_object", "json_schema": schema}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_mistral_gets_only_fields_it_knows(recorded, stream: bool):
    """OpenAI fields Mistral refuses (422) are renamed (seed, max_completion_tokens) or left out
    (user, store, stream_options); the mock refuses anything else, so a 200 is the proof."""
    proxy, rec = recorded
    r = proxy.chat_raw({"model": "mistral-small-latest", "stream": stream, "messages": [{"role": "user", "content": PROMPT}],
                        "seed": 7, "max_completion_tokens": 50, "user": "u-1", "store": False})
    assert r.status == 200, r.text
    body = json.loads(rec.requests[-1]["body"])
    check_mistral_request(body, stream)
    assert (body["random_seed"], body["max_tokens"]) == (7, 50)
