"""Drop-in clients (docs/python.md "Drop-in clients"): modelux.OpenAI / AsyncOpenAI /
Anthropic take the SDKs' arguments and return the SDKs' own types, routed in-process, with
the decision trace on `response._modelux`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from typing import Any, Dict, List

import pytest

# The SDKs are test extras (pyproject.toml [test]); without them these tests are reported skipped.
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
import modelux

CreateEmbeddingResponse = openai.types.CreateEmbeddingResponse
ChatCompletion = openai.types.chat.ChatCompletion
ChatCompletionChunk = openai.types.chat.ChatCompletionChunk

from conftest import MOCK_TEXT, MockProvider

MSGS: List[Dict[str, Any]] = [{"role": "user", "content": "hello"}]


def test_openai_client_returns_the_sdk_type_with_the_trace(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"claude-haiku-4-5": {"error_status": 429}})
    with modelux.OpenAI(config, tracing=False, project="acme") as client:
        r = client.chat.completions.create(model="@production", messages=MSGS, max_tokens=50, temperature=0.1,
                                           user="u-1", extra_headers={"x-ignored": "1"}, timeout=5,
                                           extra_body={"modelux": {"tags": {"feature": "chat"}}})
    assert isinstance(r, ChatCompletion)
    assert r.choices[0].message.content == MOCK_TEXT
    assert r.usage is not None and r.usage.completion_tokens > 0
    trace = r._modelux.trace  # type: ignore[attr-defined]
    assert trace["served_model"] == "gpt-4o-mini"
    assert [a["outcome"] for a in trace["attempts"]] == ["rate_limited", "ok"]
    assert trace["project"] == "acme" and trace["end_user"] == "u-1"
    assert trace["tags"] == {"feature": "chat"}
    # The request reached the provider with the SDK's arguments.
    last = mock.get("/_mock/last_request?model=gpt-4o-mini")
    assert last["max_tokens"] == 50 and last["temperature"] == 0.1


def test_openai_client_not_given_arguments_are_left_out(mock: MockProvider, config: Dict[str, Any]) -> None:
    with modelux.OpenAI(config, tracing=False) as client:
        r = client.chat.completions.create(model="@fast", messages=MSGS, temperature=openai.NOT_GIVEN)
    assert r.choices[0].message.content == MOCK_TEXT
    assert "temperature" not in mock.get("/_mock/last_request?model=gpt-4o-mini")


def test_openai_client_streams_chunks(mock: MockProvider, config: Dict[str, Any]) -> None:
    with modelux.OpenAI(config, tracing=False) as client:
        stream = client.chat.completions.create(model="@fast", messages=MSGS, stream=True)
        chunks = list(stream)
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join((c.choices[0].delta.content or "") for c in chunks if c.choices) == MOCK_TEXT
    assert stream._modelux is not None and stream._modelux.trace["ok"] is True


def test_openai_client_embeddings(mock: MockProvider, config: Dict[str, Any]) -> None:
    with modelux.OpenAI(config, tracing=False) as client:
        e = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="base64")
    assert isinstance(e, CreateEmbeddingResponse)
    assert len(e.data) == 2 and isinstance(e.data[0].embedding[0], float)
    assert e._modelux.trace["served_model"] == "text-embedding-3-small"  # type: ignore[attr-defined]


def test_openai_client_errors_are_the_sdks_classes_and_modelux_errors(mock: MockProvider, config: Dict[str, Any]) -> None:
    # Code written against the openai SDK catches openai's classes: the drop-in raises them,
    # and they are modelux's exceptions too (kind, trace).
    with modelux.OpenAI(config, tracing=False) as client:
        with pytest.raises(openai.NotFoundError) as nf:
            client.chat.completions.create(model="@nope", messages=MSGS)
        assert isinstance(nf.value, modelux.NotFoundError) and nf.value.status_code == 404
        assert nf.value.kind == "not_found" and "@nope" in nf.value.message
        mock.configure({m: {"error_status": 429, "retry_after_ms": 2000}
                        for m in ("claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash")})
        with pytest.raises(openai.RateLimitError) as rl:
            client.chat.completions.create(model="@production", messages=MSGS)
        assert isinstance(rl.value, modelux.ModeluxError) and rl.value.status_code == 429
        assert rl.value.response.headers.get("retry-after") is not None
        assert rl.value._modelux.trace["ok"] is False  # type: ignore[attr-defined]
        # Every target now sits out its retry-after: modelux's 503 no_route, openai's 5xx class,
        # raised from the stream as well.
        with pytest.raises(openai.InternalServerError) as nr:
            list(client.chat.completions.create(model="@production", messages=MSGS, stream=True))
        assert isinstance(nr.value, modelux.NoRouteError) and nr.value.status_code == 503


def test_anthropic_client_errors_are_the_sdks_classes(mock: MockProvider, config: Dict[str, Any]) -> None:
    with modelux.Anthropic(config, tracing=False) as client:
        with pytest.raises(anthropic.NotFoundError) as nf:
            client.messages.create(model="no-such-model", max_tokens=8, messages=MSGS)
    assert isinstance(nf.value, modelux.NotFoundError)
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    async def main() -> None:
        ac = modelux.AsyncAnthropic(config, tracing=False)
        try:
            await ac.messages.create(model="no-such-model", max_tokens=8, messages=MSGS)
        finally:
            ac.close()

    with pytest.raises(anthropic.NotFoundError):
        asyncio.run(main())


def test_async_openai_client(mock: MockProvider, config: Dict[str, Any]) -> None:
    async def main() -> List[Any]:
        client = modelux.AsyncOpenAI(config, tracing=False)
        r = await client.chat.completions.create(model="@production", messages=MSGS)
        s = await client.chat.completions.create(model="@fast", messages=MSGS, stream=True)
        chunks = [c async for c in s]
        e = await client.embeddings.create(model="text-embedding-3-small", input="x")
        await client.aclose()
        return [r, chunks, e]

    r, chunks, e = asyncio.run(main())
    assert isinstance(r, ChatCompletion) and r.choices[0].message.content == MOCK_TEXT
    assert r._modelux.served_model == "claude-haiku-4-5"
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert isinstance(e, CreateEmbeddingResponse)


def test_anthropic_client_returns_a_message(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"claude-haiku-4-5": {"error_status": 500}})
    with modelux.Anthropic(config, tracing=False) as client:
        m = client.messages.create(model="@production", max_tokens=64, system="be brief",
                                   messages=[{"role": "user", "content": "hello"}], metadata={"user_id": "u-9"})
    assert isinstance(m, anthropic.types.Message)
    assert m.content[0].type == "text" and m.content[0].text == MOCK_TEXT
    assert m.stop_reason == "end_turn"
    assert m._modelux.trace["served_model"] == "gpt-4o-mini"  # type: ignore[attr-defined]
    assert m._modelux.trace["end_user"] == "u-9"  # type: ignore[attr-defined]
    # The system prompt reached the (OpenAI-family) fallback as a system message.
    last = mock.get("/_mock/last_request?model=gpt-4o-mini")
    assert last["messages"][0]["role"] == "system"


def test_async_anthropic_client(mock: MockProvider, config: Dict[str, Any]) -> None:
    async def main() -> Any:
        client = modelux.AsyncAnthropic(config, tracing=False)
        return await client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSGS)

    m = asyncio.run(main())
    assert isinstance(m, anthropic.types.Message) and m.content[0].text == MOCK_TEXT


def test_plain_objects_without_the_sdk(mock: MockProvider, config: Dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # openai "not installed": the client returns attribute objects of the same shape.
    for name in list(sys.modules):
        if name == "openai" or name.startswith("openai."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
    modelux.clients._sdk_type.cache_clear()  # the SDK types are looked up once per process
    try:
        with modelux.OpenAI(config, tracing=False) as client:
            r = client.chat.completions.create(model="@fast", messages=MSGS)
    finally:
        modelux.clients._sdk_type.cache_clear()
    assert not isinstance(r, ChatCompletion)
    assert r.choices[0].message.content == MOCK_TEXT
    assert r.model_dump()["object"] == "chat.completion"
    assert r._modelux.served_model == "gpt-4o-mini"


def test_async_openai_embeddings_complete_into_the_loop_without_an_executor_thread(
        mock: MockProvider, config: Dict[str, Any]) -> None:
    class NoThreads(concurrent.futures.ThreadPoolExecutor):
        """A default executor that refuses work: run_in_executor(None, ...) would raise."""

        submitted = 0

        def submit(self, *a: Any, **k: Any) -> "concurrent.futures.Future[Any]":
            NoThreads.submitted += 1
            raise AssertionError("the default executor was used")

    async def main() -> List[Any]:
        asyncio.get_running_loop().set_default_executor(NoThreads())
        threads = threading.active_count()
        async with modelux.AsyncOpenAI(config, tracing=False) as client:
            out = await asyncio.gather(*(client.embeddings.create(model="text-embedding-3-small", input=[f"x{i}"])
                                         for i in range(20)))
        assert threading.active_count() == threads
        return out

    out = asyncio.run(main())
    assert NoThreads.submitted == 0
    assert len(out) == 20 and all(isinstance(e, CreateEmbeddingResponse) for e in out)
    assert out[0]._modelux.trace["served_model"] == "text-embedding-3-small"


def test_async_openai_embeddings_errors_are_the_sdks_classes(mock: MockProvider, config: Dict[str, Any]) -> None:
    async def main() -> None:
        async with modelux.AsyncOpenAI(config, tracing=False) as client:
            await client.embeddings.create(model="no-such-embedding-model", input="x")

    with pytest.raises(openai.NotFoundError) as ei:
        asyncio.run(main())
    assert isinstance(ei.value, modelux.NotFoundError)


ANTHROPIC_EVENT_TYPES = (anthropic.types.RawMessageStartEvent, anthropic.types.RawContentBlockStartEvent,
                         anthropic.types.RawContentBlockDeltaEvent, anthropic.types.RawContentBlockStopEvent,
                         anthropic.types.RawMessageDeltaEvent, anthropic.types.RawMessageStopEvent)


def _check_anthropic_events(events: List[Any]) -> None:
    assert all(isinstance(e, ANTHROPIC_EVENT_TYPES) for e in events), [type(e) for e in events]
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert events[0].message.id.startswith("msg_") and events[0].message.role == "assistant"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == MOCK_TEXT
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens > 0


def test_anthropic_client_streams_the_sdks_events(mock: MockProvider, config: Dict[str, Any]) -> None:
    with modelux.Anthropic(config, tracing=False) as client:
        stream = client.messages.create(model="@fast", max_tokens=64, messages=MSGS, stream=True)
        events = list(stream)
    _check_anthropic_events(events)
    assert stream._modelux is not None and stream._modelux.trace["served_model"] == "gpt-4o-mini"


def test_async_anthropic_client_streams_the_sdks_events(mock: MockProvider, config: Dict[str, Any]) -> None:
    async def main() -> List[Any]:
        async with modelux.AsyncAnthropic(config, tracing=False) as client:
            s = await client.messages.create(model="@fast", max_tokens=64, messages=MSGS, stream=True)
            return [e async for e in s]

    _check_anthropic_events(asyncio.run(main()))


def test_anthropic_stream_error_mid_stream_is_the_sdks_error_after_the_events(
        mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 6, "disconnect_after_chunks": 2}})
    got: List[Any] = []
    with modelux.Anthropic(config, tracing=False) as client:
        stream = client.messages.create(model="@fast", max_tokens=64, messages=MSGS, stream=True)
        with pytest.raises(anthropic.APIStatusError) as ei:
            for e in stream:
                got.append(e)
    assert isinstance(ei.value, modelux.ProviderError) and ei.value.kind == "stream_interrupted"
    assert ei.value.trace is not None and ei.value.trace["ok"] is False
    # What was streamed before the break came through; no clean end was made up.
    assert got and got[0].type == "message_start"
    assert "message_stop" not in [e.type for e in got]


def test_async_anthropic_stream_error_mid_stream(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 6, "disconnect_after_chunks": 2}})

    async def main() -> List[Any]:
        got: List[Any] = []
        async with modelux.AsyncAnthropic(config, tracing=False) as client:
            s = await client.messages.create(model="@fast", max_tokens=64, messages=MSGS, stream=True)
            async for e in s:
                got.append(e)
        return got

    with pytest.raises(anthropic.APIStatusError) as ei:
        asyncio.run(main())
    assert isinstance(ei.value, modelux.ModeluxError) and ei.value.kind == "stream_interrupted"


def test_closing_an_anthropic_stream_cancels_the_upstream(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 50, "chunk_interval_ms": 200}})
    with modelux.Anthropic(config, tracing=False) as client:
        with client.messages.create(model="@fast", max_tokens=64, messages=MSGS, stream=True) as stream:
            first = next(stream)
            assert first.type == "message_start"
        assert stream._native.wait(10)
        assert stream._modelux is not None
        trace = stream._modelux.trace
    assert trace["ok"] is False and trace["error_kind"] == "cancelled"


def test_cancelling_an_async_anthropic_stream_task_cancels_the_upstream(
        mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 50, "chunk_interval_ms": 200}})

    async def main() -> Dict[str, Any]:
        async with modelux.AsyncAnthropic(config, tracing=False) as client:
            s = await client.messages.create(model="@fast", max_tokens=64, messages=MSGS, stream=True)
            first: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()

            async def consume() -> None:
                async for _ in s:
                    if not first.done():
                        first.set_result(None)

            task = asyncio.ensure_future(consume())
            await first
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await s._stream.wait(10)
            info = s._modelux
            assert info is not None
            return info.trace

    trace = asyncio.run(main())
    assert trace["ok"] is False and trace["error_kind"] == "cancelled"
