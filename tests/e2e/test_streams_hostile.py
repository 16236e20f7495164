"""Hostile variants of issue #19 (streams that deliver are never cut or overlapped; our own
failures are never charged to the provider), over real sockets, with `threads: 2`.

A scripted OpenAI-format provider (a few lines of socket code below: the mock provider has no
"half an event, then silence" nor "an error event after the answer started") sends exactly
the bytes a misbehaving provider would:
- half an SSE event, then nothing: the stall timeout ends the stream with one error event and
  no [DONE], the half event never reaches the caller, nothing fails over;
- an error event after output started: the caller gets one error event (never two, never
  [DONE]), and the partial answer of that one model only.
The mock provider covers the rest: a caller hanging up mid-stream during a fallback (the proxy
stops the upstream stream, the breaker stays closed), and the issue's fallback chain streamed
in Anthropic's and Gemini's formats through the OpenAI and the Anthropic ingress at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from e2e_support import API_KEY, MESSAGES, Proxy, sse_events
from net_support import _Server

# ---------------------------------------------------------------------------- scripted provider


def _chunk(text: str, i: int, finish: str | None = None) -> bytes:
    c = {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}
    return f"data: {json.dumps(c)}\n\n".encode()


class ScriptedProvider(_Server):
    """An OpenAI-compatible provider that answers every streamed chat request with `script`: a
    list of byte strings written as chunked-encoding pieces, or None for "stall until the
    caller leaves". Counts the requests and the connections the proxy closed on it."""

    def __init__(self) -> None:
        self.script: list[bytes | None] = []
        self.requests = 0
        self.closed_by_peer = 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                piece = conn.recv(65536)
                if not piece:
                    return
                buf += piece
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(rest) < length:
                rest += conn.recv(65536)
            self.requests += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for piece in self.script:
                if piece is None:  # stall: wait until the proxy closes the connection
                    conn.settimeout(30)
                    try:
                        if conn.recv(1) == b"":
                            self.closed_by_peer += 1
                    except OSError:
                        self.closed_by_peer += 1
                    return
                conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                time.sleep(0.02)
            conn.sendall(b"0\r\n\r\n")


@pytest.fixture
def scripted() -> Any:
    p = ScriptedProvider()
    yield p
    p.close()


def proxy_on(start_proxy: Any, scripted: ScriptedProvider, mock_chain_to: str | None = None) -> Proxy:
    """A proxy with threads: 2 whose "openai" provider is the scripted one; @chain falls back
    from gpt-4o-mini to claude-haiku-4-5 (on the mock) on every retryable failure."""

    def edit(cfg: dict) -> None:
        cfg["server"]["threads"] = 2
        cfg["providers"]["openai"]["base_url"] = f"http://127.0.0.1:{scripted.port}/v1"
        cfg["routing"]["chain"] = {
            "strategy": "fallback",
            "attempts": [{"model": "gpt-4o-mini", "timeout_ms": 3000, "stall_timeout_ms": 500},
                         {"model": "claude-haiku-4-5", "timeout_ms": 3000}],
            "retry_on": ["429", "5xx", "timeout", "connection", "malformed", "stream"],
            "total_budget_ms": 6000,
        }

    return start_proxy(edit)


def stream_events(proxy: Proxy, model: str) -> tuple[list[str], str]:
    r = proxy.chat_raw({"model": model, "messages": MESSAGES, "stream": True})
    assert r.status == 200, r.text
    return sse_events(r.body), r.headers["x-request-id"]


def content_and_error(events: list[str]) -> tuple[str, list[dict], set[str]]:
    """(content, error objects, models) of an OpenAI SSE event list without [DONE]."""
    content, errors, models = "", [], set()
    for e in events:
        assert e != "[DONE]"
        c = json.loads(e)
        if "error" in c:
            errors.append(c["error"])
            continue
        models.add(c["model"])
        for ch in c["choices"]:
            content += ch["delta"].get("content") or ""
    return content, errors, models


def test_half_an_event_then_silence_ends_with_one_error_event_and_no_failover(start_proxy, mock, scripted):
    scripted.script = [_chunk("", 0), _chunk("alpha ", 1), _chunk("beta ", 2),
                       b'data: {"id":"up-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"HALF', None]
    proxy = proxy_on(start_proxy, scripted)
    t0 = time.monotonic()
    events, rid = stream_events(proxy, "@chain")
    elapsed = time.monotonic() - t0
    assert "[DONE]" not in events, events[-3:]
    content, errors, models = content_and_error(events)
    assert content == "alpha beta "  # the half event never reaches the caller
    assert len(errors) == 1 and json.loads(events[-1]) == {"error": errors[0]}, events[-3:]
    assert "stall" in errors[0]["message"], errors
    assert models == {"gpt-4o-mini"}
    assert elapsed < 2.5  # the 500 ms stall timeout, not the 3 s attempt timeout or the 6 s budget
    t = proxy.trace(rid)
    assert [a["model"] for a in t["attempts"]] == ["gpt-4o-mini"], t["attempts"]  # no failover after output
    assert t["attempts"][0]["outcome"] == "stream_interrupted"
    # The provider sent no usage (it comes in the last event): what the caller got is estimated,
    # never recorded as a free answer.
    assert t["attempts"][0]["usage"]["completion_tokens"] == (len("alpha beta ") + 3) // 4, t["attempts"][0]
    assert mock.requests_for("claude-haiku-4-5") == 0
    deadline = time.monotonic() + 5
    while scripted.closed_by_peer < 1:  # the proxy closed the stalled upstream connection
        assert time.monotonic() < deadline, "the stalled upstream connection was never closed"
        time.sleep(0.02)


def _anthropic(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


ANTHROPIC_ERROR_MID_ANSWER = [
    _anthropic("message_start", {"type": "message_start", "message": {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 0}}}),
    _anthropic("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
    _anthropic("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "alpha "}}),
    _anthropic("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "beta "}}),
    _anthropic("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
]


@pytest.mark.parametrize("ingress", ["openai", "anthropic"])
def test_an_anthropic_error_event_after_output_started_reaches_either_ingress_once(start_proxy, mock, scripted, ingress):
    """Anthropic's own mid-stream `event: error` (overloaded_error) after two text deltas: the
    caller gets that one model's partial text and exactly one error event, in its ingress's
    shape, and nothing fails over to gpt-4o-mini."""
    scripted.script = list(ANTHROPIC_ERROR_MID_ANSWER)

    def edit(cfg: dict) -> None:
        cfg["server"]["threads"] = 2
        cfg["providers"]["anthropic"]["base_url"] = f"http://127.0.0.1:{scripted.port}"

    proxy = start_proxy(edit)
    proxy.put_config("a", {"strategy": "fallback",
                           "attempts": [{"model": "claude-haiku-4-5", "timeout_ms": 3000},
                                        {"model": "gpt-4o-mini", "timeout_ms": 3000}],
                           "retry_on": ["429", "5xx", "timeout", "connection", "malformed", "stream"]})
    if ingress == "openai":
        events, rid = stream_events(proxy, "@a")
        assert "[DONE]" not in events, events[-3:]
        content, errors, models = content_and_error(events)
        assert content == "alpha beta ", events
        assert len(errors) == 1 and "error" in json.loads(events[-1]), events
        assert models == {"claude-haiku-4-5"}, models
    else:
        r = proxy.request("POST", "/v1/messages", {"model": "@a", "max_tokens": 64, "stream": True, "messages": MESSAGES})
        assert r.status == 200, r.text
        rid = r.headers["x-request-id"]
        names = [ln[7:] for ln in r.text.split("\n") if ln.startswith("event: ")]
        assert names[0] == "message_start" and names[-1] == "error", names
        assert names.count("error") == 1 and "message_stop" not in names, names
        datas = [json.loads(ln[6:]) for ln in r.text.split("\n") if ln.startswith("data: ")]
        text = "".join(d["delta"].get("text", "") for d in datas if d["type"] == "content_block_delta")
        assert text == "alpha beta ", names
    t = proxy.trace(rid)
    assert [a["model"] for a in t["attempts"]] == ["claude-haiku-4-5"], t["attempts"]
    assert mock.requests_for("gpt-4o-mini") == 0


def test_an_error_event_after_output_started_reaches_the_caller_once(start_proxy, mock, scripted):
    scripted.script = [_chunk("", 0), _chunk("alpha ", 1), _chunk("beta ", 2),
                       b'data: {"error":{"message":"upstream overloaded mid-answer","type":"server_error","code":"overloaded"}}\n\n']
    proxy = proxy_on(start_proxy, scripted)
    for model in ("@chain", "gpt-4o-mini"):
        events, rid = stream_events(proxy, model)
        assert "[DONE]" not in events, (model, events[-3:])
        content, errors, models = content_and_error(events)
        assert content == "alpha beta ", (model, events)
        assert len(errors) == 1, (model, events)  # one error event: never the provider's and ours
        assert json.loads(events[-1]).get("error") == errors[0], (model, events[-3:])
        assert models == {"gpt-4o-mini"}, (model, models)
        t = proxy.trace(rid)
        assert not t["ok"]
        assert [a["model"] for a in t["attempts"]] == ["gpt-4o-mini"], (model, t["attempts"])
    assert mock.requests_for("claude-haiku-4-5") == 0


# ---------------------------------------------------------------------------- with the mock


def test_a_caller_hanging_up_mid_stream_during_a_fallback_stops_it_and_charges_no_one(start_proxy, mock):
    """haiku hangs (its attempt times out), gpt-4o-mini streams for ~6 s; the caller hangs up
    after the first text of gpt-4o-mini. The proxy stops the upstream stream at once, the trace
    says cancelled, and no breaker counts the hang-up: the next request is served by mini."""
    mock.configure({"claude-haiku-4-5": {"hang_rate": 1.0},
                    "gpt-4o-mini": {"chunks": 30, "chunk_interval_ms": 200, "text": " ".join(f"m{i}" for i in range(30))}})

    def edit(cfg: dict) -> None:
        cfg["server"]["threads"] = 2

    proxy = start_proxy(edit)
    proxy.put_config("hang", {"strategy": "fallback",
                              "attempts": [{"model": "claude-haiku-4-5", "timeout_ms": 300},
                                           {"model": "gpt-4o-mini", "timeout_ms": 1000}],
                              "retry_on": ["timeout"], "total_budget_ms": 3000})
    rids = []
    for _ in range(6):  # the breaker trips after 5 consecutive failures: 6 hang-ups would open it
        body = json.dumps({"model": "@hang", "messages": MESSAGES, "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                  + f"authorization: Bearer {API_KEY}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        got = b""
        while b"m0" not in got:
            piece = s.recv(4096)
            assert piece, "stream ended before the first text"
            got += piece
        rid = got.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
        rids.append(rid)
        s.close()
    # The proxy closed every upstream stream: the mock saw each abandoned well before its ~6 s end.
    deadline = time.monotonic() + 4
    while mock.stats()["models"]["gpt-4o-mini"].get("streams_abandoned", 0) < 6:
        assert time.monotonic() < deadline, mock.stats()["models"]["gpt-4o-mini"]
        time.sleep(0.05)
    assert mock.stats()["models"]["gpt-4o-mini"].get("streams_completed", 0) == 0
    for rid in rids:
        t = None
        deadline = time.monotonic() + 5
        while t is None or not t.get("attempts"):
            r = proxy.request("GET", f"/v1/traces/{rid}")
            t = r.json() if r.status == 200 else None
            if t is None:
                assert time.monotonic() < deadline, f"no trace for {rid}"
                time.sleep(0.05)
        assert t["error_kind"] == "cancelled", t
        # haiku's hangs are its own fault: after five its breaker opens and it is skipped.
        assert [(a["model"], a["outcome"]) for a in t["attempts"][:-1]] in ([], [("claude-haiku-4-5", "timeout")]), t["attempts"]
        assert (t["attempts"][-1]["model"], t["attempts"][-1]["outcome"]) == ("gpt-4o-mini", "cancelled"), t["attempts"]
        # Hanging up before the last event (which carries usage) must not make the answer free.
        assert t["attempts"][-1]["usage"]["completion_tokens"] > 0, t["attempts"][-1]
    # Six callers hung up on mini mid-answer: mini's breaker is closed and the next request is
    # served by it.
    r = proxy.chat_raw({"model": "gpt-4o-mini", "messages": MESSAGES})
    assert r.status == 200, r.text
    state = proxy.request("GET", "/v1/health").json()
    mini = [t for t in state["targets"] if t["target"] == "openai/gpt-4o-mini"]
    assert mini and mini[0]["breaker"] == "closed", mini
    # haiku hung through its whole 300 ms timeout each time: that is charged (on a real clock,
    # where the timeout fires at its deadline, not a microsecond later).
    haiku = [t for t in state["targets"] if t["target"] == "anthropic/claude-haiku-4-5"]
    assert haiku and haiku[0]["breaker"] == "open", haiku


TEXTS = {
    "claude-haiku-4-5": "haiku " + " ".join(f"h{i}" for i in range(30)),
    "gpt-4o-mini": "mini " + " ".join(f"m{i}" for i in range(30)),
    "gemini-2.5-flash": "flash " + " ".join(f"f{i}" for i in range(30)),
}


@pytest.mark.parametrize("first", ["claude-haiku-4-5", "gemini-2.5-flash"], ids=["anthropic-format", "gemini-format"])
def test_the_issue_chain_in_other_formats_through_both_ingresses_at_threads_2(start_proxy, mock, first):
    """The issue's chain (2 s -> 3 s -> 5 s) led by an Anthropic- or Gemini-format stream of
    ~3 s, 8 callers at once through /v1/chat/completions and 8 through /v1/messages, on a proxy
    with threads: 2: every stream is the first model's whole answer and ends cleanly."""
    mock.configure({m: {"chunks": 30, "chunk_interval_ms": 100, "text": t} for m, t in TEXTS.items()})

    def edit(cfg: dict) -> None:
        cfg["server"]["threads"] = 2

    proxy = start_proxy(edit)
    others = [m for m in TEXTS if m != first]
    proxy.put_config("issue", {"strategy": "fallback",
                               "attempts": [{"model": first, "timeout_ms": 2000},
                                            {"model": others[0], "timeout_ms": 3000},
                                            {"model": others[1], "timeout_ms": 5000}],
                               "retry_on": ["429", "5xx", "timeout"], "total_budget_ms": 10000})

    async def one(path: str) -> tuple[str, bytes]:
        if path == "/v1/chat/completions":
            body = {"model": "@issue", "messages": MESSAGES, "stream": True}
        else:
            body = {"model": "@issue", "max_tokens": 256, "stream": True, "messages": MESSAGES}
        data = json.dumps(body).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {API_KEY}\r\n".encode()
                     + f"content-type: application/json\r\ncontent-length: {len(data)}\r\nconnection: close\r\n\r\n".encode()
                     + data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), 30)
        writer.close()
        return path, raw

    async def many() -> list[tuple[str, bytes]]:
        return await asyncio.gather(*(one(p) for p in ["/v1/chat/completions", "/v1/messages"] * 8))

    t0 = time.monotonic()
    results = asyncio.run(many())
    assert time.monotonic() - t0 > 2.5  # the streams really outlived the 2 s attempt timeout
    for path, raw in results:
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        if b"transfer-encoding: chunked" in head.lower():
            out, rest = b"", body
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                out, rest = out + rest[:size], rest[size + 2:]
            body = out
        text = body.decode()
        if path == "/v1/chat/completions":
            events = [ln[5:].strip() for ln in text.split("\n") if ln.startswith("data:")]
            assert events[-1] == "[DONE]", events[-3:]
            chunks = [json.loads(e) for e in events[:-1]]
            assert not [c for c in chunks if "error" in c]
            assert {c["model"] for c in chunks} == {first}
            content = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
        else:
            names = [ln[7:] for ln in text.split("\n") if ln.startswith("event: ")]
            assert names[0] == "message_start" and names[-1] == "message_stop" and "error" not in names, names
            datas = [json.loads(ln[6:]) for ln in text.split("\n") if ln.startswith("data: ")]
            assert {d["message"]["model"] for d in datas if d["type"] == "message_start"} == {first}
            content = "".join(d["delta"].get("text", "") for d in datas if d["type"] == "content_block_delta")
        assert content == TEXTS[first], (path, content[:80])


# ---------------------------------------------------------------------------- health off


@pytest.mark.parametrize("enabled", [True, False], ids=["health-on", "health-off"])
def test_health_can_be_switched_off_in_the_proxy(start_proxy, mock, enabled):
    """`health: {enabled: false}` in the proxy's config (for A/B comparisons): a primary that
    fails every time is tried on every request, where with health on its breaker opens after a
    few failures and it is skipped. The same test with health on is the control."""
    mock.configure({"claude-haiku-4-5": {"error_status": 500}})

    def edit(cfg: dict) -> None:
        cfg["server"]["threads"] = 2
        cfg["health"] = {"enabled": enabled}

    proxy = start_proxy(edit)
    proxy.put_config("ab", {"strategy": "fallback",
                            "attempts": [{"model": "claude-haiku-4-5", "timeout_ms": 2000},
                                         {"model": "gpt-4o-mini", "timeout_ms": 2000}],
                            "retry_on": ["5xx"]})
    for _ in range(10):
        r = proxy.chat_raw({"model": "@ab", "messages": MESSAGES})
        assert r.status == 200, r.text
    state = proxy.request("GET", "/v1/health").json()
    if enabled:
        assert mock.requests_for("claude-haiku-4-5") < 10
        haiku = [t for t in state["targets"] if t["target"] == "anthropic/claude-haiku-4-5"]
        assert haiku and haiku[0]["breaker"] == "open", state
    else:
        assert mock.requests_for("claude-haiku-4-5") == 10
        assert state.get("enabled") is False, state
        assert all(t.get("breaker", "closed") == "closed" for t in state.get("targets", [])), state
