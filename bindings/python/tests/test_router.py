"""Router: config errors, chat and stream through `@production` against the real mock provider."""

from __future__ import annotations

import _thread
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import modelux

from conftest import MOCK_TEXT, MockProvider, router_config

HI = [{"role": "user", "content": "Say hello"}]


# ---- configs ------------------------------------------------------------------------------------


def test_embedded_defaults_load_without_a_file() -> None:
    router = modelux.Router(tracing=False)
    configs = router.routing_configs()
    assert configs["production"]["strategy"] == "fallback"
    assert [a["model"] for a in configs["production"]["attempts"]] == [
        "claude-haiku-4-5",
        "gpt-4o-mini",
        "gemini-2.5-flash",
    ]
    assert "gpt-4o-mini" in router.routable_models()
    router.close()


def test_unknown_model_in_routing_config_names_the_json_path() -> None:
    cfg = router_config(None)
    cfg["routing"]["production"]["attempts"][1]["model"] = "no-such-model"
    with pytest.raises(modelux.InvalidConfigError) as e:
        modelux.Router(cfg, tracing=False)
    assert e.value.kind == "invalid_config"
    assert e.value.path.startswith("$.routing.production.attempts[1]")
    assert isinstance(e.value, ValueError)


def test_config_file_type_error_names_the_json_path(tmp_path: Path) -> None:
    cfg = router_config(None)
    cfg["providers"]["openai"]["base_url"] = "ftp://nope"
    with pytest.raises(modelux.InvalidConfigError) as e:
        modelux.Router(cfg, tracing=False)
    assert e.value.path == "$.providers.openai.base_url"
    # The same document from a file fails the same way.
    p = tmp_path / "modelux.json"
    p.write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(modelux.InvalidConfigError) as e2:
        modelux.Router(str(p), tracing=False)
    assert e2.value.path == "$.providers.openai.base_url"


def test_config_argument_type_is_checked() -> None:
    with pytest.raises(TypeError):
        modelux.Router(42, tracing=False)  # type: ignore[arg-type]


def test_set_routing_config_swaps_and_rejects_bad_configs() -> None:
    router = modelux.Router(router_config(None), tracing=False)
    v1 = router.set_routing_config("cheap", {"strategy": "single", "model": "gpt-4o-mini"})
    assert router.routing_configs()["cheap"] == {"strategy": "single", "model": "gpt-4o-mini"}
    v2 = router.set_routing_config("@cheap", {"strategy": "single", "model": "gemini-2.5-flash"})
    assert v2 > v1
    info = router.routing_config("cheap")
    assert info is not None and info["version"] == v2 and info["strategy"] == "single"
    with pytest.raises(modelux.InvalidConfigError) as e:
        router.set_routing_config("cheap", {"strategy": "fallback", "attempts": [{"model": "gpt-4o-mini", "timeout_ms": -5}]})
    assert e.value.path == "$.routing.cheap.attempts[0].timeout_ms"
    # The bad config never took traffic: the last good version is still live.
    info = router.routing_config("cheap")
    assert info is not None and info["version"] == v2 and info["config"]["model"] == "gemini-2.5-flash"
    assert router.routing_config("nope") is None
    router.close()


# ---- chat ---------------------------------------------------------------------------------------


def test_chat_fails_over_on_429_and_the_trace_says_so(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"claude-haiku-4-5": {"error_status": 429}})
    router = modelux.Router(config, tracing=False)
    r = router.chat("@production", HI, project="acme", end_user="u-1", tags={"feature": "greet"}, max_tokens=20)
    assert r["object"] == "chat.completion"
    assert r.text == MOCK_TEXT
    assert r["choices"][0]["message"]["content"] == MOCK_TEXT
    t = r.trace
    assert t["ok"] is True
    assert t["config"] == "@production"
    assert t["served_model"] == r.served_model == "gpt-4o-mini"
    assert [a["model"] for a in t["attempts"]] == ["claude-haiku-4-5", "gpt-4o-mini"]
    first, second = t["attempts"]
    assert first["ok"] is False and first["outcome"] == "rate_limited" and first["status"] == 429
    assert second["ok"] is True
    assert t["project"] == "acme" and t["end_user"] == "u-1" and t["tags"] == {"feature": "greet"}
    router.close()


def test_chat_when_every_target_fails_raises_with_the_trace(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({m: {"error_status": 429, "retry_after_ms": 1500} for m in ("claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash")})
    config["routing"]["production"]["retry_on"] = ["429", "5xx", "timeout"]
    router = modelux.Router(config, tracing=False)
    with pytest.raises(modelux.ModeluxError) as e:
        router.chat("@production", HI)
    err = e.value
    assert isinstance(err, (modelux.RateLimitError, modelux.NoRouteError)), repr(err)
    assert err.trace is not None
    assert err.trace["ok"] is False
    assert [a["status"] for a in err.trace["attempts"]] == [429, 429, 429]
    router.close()


def test_chat_direct_model_rate_limit_carries_status_and_retry_after(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"error_status": 429, "retry_after_ms": 2000}})
    router = modelux.Router(config, tracing=False)
    with pytest.raises(modelux.RateLimitError) as e:
        router.chat("@fast", HI)
    assert e.value.kind == "rate_limited"
    assert e.value.status == 429
    assert e.value.retry_after == pytest.approx(2.0)
    router.close()


def test_chat_bad_request_names_the_field(config: Dict[str, Any]) -> None:
    router = modelux.Router(config, tracing=False)
    with pytest.raises(modelux.BadRequestError) as e:
        router.chat("@production", [{"role": "user", "content": "x"}], temperature="hot")
    assert "temperature" in e.value.path
    router.close()


@pytest.mark.parametrize(
    "messages,params",
    [
        (HI, {}),
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "h\u00e9llo \u2603", "name": "ann"}],
            {"temperature": 0.5, "top_p": 1, "max_tokens": 7, "seed": 3, "n": 1, "user": "u-9"},
        ),
        (HI, {"max_completion_tokens": 9, "temperature": None, "user": None}),
        (HI, {"max_tokens": 5, "max_completion_tokens": 6}),
        ([{"role": "developer", "content": ""}, {"role": "user", "content": "x"}], {"temperature": 2}),
    ],
)
def test_chat_simple_requests_reach_the_provider_as_the_generic_path_sends_them(
    mock: MockProvider, config: Dict[str, Any], messages: List[Dict[str, Any]], params: Dict[str, Any]
) -> None:
    # Plain lists of plain dicts take the binding's direct conversion; an iterator of them
    # takes the generic (JSON document) path. Upstream must see the same request.
    router = modelux.Router(config, tracing=False)
    router.chat("@fast", messages, **params)
    direct = mock.get("/_mock/last_request?model=gpt-4o-mini")
    mock.post("/_mock/reset", {})
    router.chat("@fast", iter([dict(m) for m in messages]), **params)
    generic = mock.get("/_mock/last_request?model=gpt-4o-mini")
    router.close()
    assert direct == generic
    assert [m["content"] for m in direct["messages"]] == [m["content"] for m in messages]


def test_chat_response_has_the_openai_shape_in_sorted_key_order(mock: MockProvider, config: Dict[str, Any]) -> None:
    router = modelux.Router(config, tracing=False)
    r = router.chat("@fast", HI)
    router.close()
    assert list(r) == ["choices", "created", "id", "model", "object", "usage"]
    assert r["object"] == "chat.completion"
    (choice,) = r["choices"]
    assert list(choice) == ["finish_reason", "index", "logprobs", "message"]
    assert choice["message"] == {"content": MOCK_TEXT, "refusal": None, "role": "assistant"}
    u = r["usage"]
    assert list(u) == ["completion_tokens", "completion_tokens_details", "prompt_tokens", "prompt_tokens_details", "total_tokens"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
    assert u["prompt_tokens_details"] == {"cached_tokens": 0}
    assert u["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_chat_releases_the_gil(mock: MockProvider, config: Dict[str, Any]) -> None:
    # Two requests that each wait 4 s upstream, from two threads. If chat() held the GIL, this
    # thread could not run for 4 s; it must keep running in small slices. The 2 s bound is far
    # from both (a scheduler gap at load average 4 is tens of ms).
    mock.configure({"gpt-4o-mini": {"latency_ms": 4000}})
    router = modelux.Router(config, tracing=False, io_threads=2)
    texts: List[str] = []

    def call() -> None:
        texts.append(router.chat("gpt-4o-mini", HI).text)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for th in threads:
        th.start()
    last = time.monotonic()
    max_gap = 0.0
    while any(th.is_alive() for th in threads):
        now = time.monotonic()
        max_gap = max(max_gap, now - last)
        last = now
    for th in threads:
        th.join()
    assert texts == [MOCK_TEXT, MOCK_TEXT]
    assert max_gap < 2.0, f"this thread was starved for {max_gap:.3f} s while chat() ran"
    router.close()


# ---- stream -------------------------------------------------------------------------------------


def test_stream_fails_over_before_output_and_yields_chunks(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"claude-haiku-4-5": {"error_status": 500}, "gpt-4o-mini": {"chunks": 5}})
    router = modelux.Router(config, tracing=False)
    stream = router.stream("@production", HI, project="acme")
    chunks = list(stream)
    assert len(chunks) >= 5
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == MOCK_TEXT
    assert stream.wait(timeout=5)
    t = stream.trace
    assert t is not None and t["ok"] is True and t["stream"] is True
    assert t["served_model"] == "gpt-4o-mini"
    assert t["attempts"][0]["model"] == "claude-haiku-4-5" and t["attempts"][0]["status"] == 500
    assert t["project"] == "acme"
    router.close()


def test_two_io_threads_serve_concurrent_streams_and_chats(mock: MockProvider, config: Dict[str, Any]) -> None:
    # io_threads=2: one io_context per thread; streams and chats started from Python spread over
    # both (round-robin) and each completes whole.
    mock.configure({"gpt-4o-mini": {"chunks": 5}})
    router = modelux.Router(config, tracing=False, io_threads=2)
    texts: List[str] = []
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            if i % 2:
                texts.append(router.chat("gpt-4o-mini", HI).text)
            else:
                chunks = list(router.stream("gpt-4o-mini", HI))
                texts.append("".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    assert texts == [MOCK_TEXT] * 8
    router.close()


def test_closing_a_stream_early_cancels_the_upstream(mock: MockProvider, config: Dict[str, Any]) -> None:
    # 400 chunks 50 ms apart: 20 s if read to the end. The 10 s bounds below pass as soon as the
    # upstream is abandoned and leave margin at load average 4.
    mock.configure({"gpt-4o-mini": {"chunks": 400, "chunk_interval_ms": 50}})
    router = modelux.Router(config, tracing=False)
    started = time.monotonic()
    with router.stream("gpt-4o-mini", HI) as stream:
        first = next(stream)
        assert first["object"] == "chat.completion.chunk"
    assert stream.cancelled
    assert stream.wait(timeout=10), "the upstream was not abandoned after close()"
    assert time.monotonic() - started < 10
    with pytest.raises(StopIteration):
        next(stream)
    t = stream.trace
    assert t is not None and t["ok"] is False and t["error_kind"] == "cancelled"
    router.close()


def test_closing_a_stream_whose_upstream_hangs_stops_the_request_at_once(mock: MockProvider, config: Dict[str, Any]) -> None:
    # The upstream never answers; only close() can end the request before the attempt timeout.
    mock.configure({"gpt-4o-mini": {"hang_rate": 1.0}})
    router = modelux.Router(config, tracing=False)
    stream = router.stream("gpt-4o-mini", HI)
    time.sleep(0.2)  # the request is now blocked upstream
    started = time.monotonic()
    stream.close()
    # 10 s: margin at load average 4, and still well before the 30 s attempt timeout.
    assert stream.wait(timeout=10), "the hung upstream was not abandoned after close()"
    assert time.monotonic() - started < 10
    t = stream.trace
    assert t is not None and t["error_kind"] == "cancelled"
    router.close()


@pytest.fixture
def sigint_raises() -> Any:
    # _thread.interrupt_main() only acts when SIGINT has a Python handler. A shell starts a
    # background job (`scripts/test.sh &`, nohup, CI runners) with SIGINT ignored, and Python
    # keeps that: the Ctrl-C tests then saw no KeyboardInterrupt at all. They install Python's
    # default handler for their duration, as an interactive run has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_during_a_blocking_chat_interrupts_and_cancels(mock: MockProvider, config: Dict[str, Any],
                                                             tmp_path: Path) -> None:
    # The answer would take 30 s; Ctrl-C after 200 ms must interrupt chat() (the caller sleeps
    # on a futex in 50 ms slices and checks for signals) and cancel the upstream call.
    mock.configure({"gpt-4o-mini": {"latency_ms": 30000}})
    config["tracing"] = {"enabled": True, "path": str(tmp_path / "t.db")}
    router = modelux.Router(config)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            router.chat("gpt-4o-mini", HI, request_id="req-ctrl-c")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    store = router.trace_store()
    assert store is not None
    trace = store.get("req-ctrl-c")
    assert trace is not None and trace["error_kind"] == "cancelled", trace
    router.close()


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_while_waiting_for_a_chunk_interrupts_and_cancels(mock: MockProvider, config: Dict[str, Any]) -> None:
    # The first chunk would take 30 s; Ctrl-C after 200 ms must interrupt next() promptly (the
    # 10 s bound holds at load average 4 and is far from the 30 s).
    mock.configure({"gpt-4o-mini": {"ttft_ms": 30000}})
    router = modelux.Router(config, tracing=False)
    stream = router.stream("gpt-4o-mini", HI)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(stream)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    assert stream.cancelled
    # The interrupted request ends as cancelled, long before the 30 s first chunk. (It used to
    # assert `not stream.finished` right here, which raced the io thread winding the cancelled
    # request up: `finished` also means "abandoned after close()".)
    assert stream.wait(10)
    trace = stream.trace
    assert trace is not None and not trace["ok"] and trace["error_kind"] == "cancelled", trace
    assert time.monotonic() - started < 20
    router.close()


def test_a_stream_broken_after_output_raises_instead_of_ending_cleanly(
    mock: MockProvider, config: Dict[str, Any]
) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 6, "disconnect_after_chunks": 2}})
    router = modelux.Router(config, tracing=False)
    stream = router.stream("gpt-4o-mini", HI)
    got: List[Dict[str, Any]] = []
    with pytest.raises(modelux.ProviderError) as e:
        for c in stream:
            got.append(c)
    assert e.value.kind == "stream_interrupted"
    assert len(got) >= 1
    assert e.value.trace is not None and e.value.trace["ok"] is False
    router.close()


def test_a_closed_router_refuses_calls_but_running_streams_finish(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 5, "chunk_interval_ms": 20}})
    router = modelux.Router(config, tracing=False)
    stream = router.stream("gpt-4o-mini", HI)
    router.close()
    with pytest.raises(ValueError):
        router.chat("gpt-4o-mini", HI)
    text = "".join(ch["delta"].get("content") or "" for c in stream for ch in c["choices"])
    assert text == MOCK_TEXT


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_during_chat_cancels_the_request(mock: MockProvider, config: Dict[str, Any]) -> None:
    # chat() on a hung upstream: Ctrl-C after 200 ms must interrupt promptly, not at the timeout.
    mock.configure({"gpt-4o-mini": {"hang_rate": 1.0}})
    router = modelux.Router(config, tracing=False)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            router.chat("gpt-4o-mini", HI)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10  # margin at load average 4; the attempt timeout is 30 s
    router.close()


def test_embed_fails_over_and_returns_float_vectors(mock: MockProvider, config: Dict[str, Any]) -> None:
    config["routing"]["emb"] = {
        "strategy": "fallback",
        "attempts": [{"model": "text-embedding-3-small"}, {"model": "gemini-embedding-001"}],
        "retry_on": ["429", "5xx"],
    }
    mock.configure({"text-embedding-3-small": {"error_status": 503, "error_rate": 1.0}})
    router = modelux.Router(config, tracing=False)
    e = router.embed("@emb", ["a b c d", "jumps"], project="acme", dimensions=4, encoding_format="base64")
    assert len(e.vectors) == 2 and all(len(v) == 4 for v in e.vectors)
    assert e["usage"]["prompt_tokens"] == 4  # Gemini reports none: 4 characters a token
    assert [a["model"] for a in e.trace["attempts"]] == ["text-embedding-3-small", "gemini-embedding-001"]
    assert e.trace["served_model"] == "gemini-embedding-001"
    with pytest.raises(modelux.BadRequestError):
        router.embed("text-embedding-3-small", [])
    router.close()
