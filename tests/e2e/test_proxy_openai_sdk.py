"""Issue #2: the official openai SDK against `modelux serve`, over real sockets.

Failover through the `@production` chain (primary answers 429), streaming and not, with the
decision trace fetched back by the request id the SDK exposes; and the proxy's error answers in
OpenAI's format, each mapped by the SDK to its exception class.
"""

from __future__ import annotations

import json
import time

import openai
import pytest

from e2e_support import MESSAGES, MOCK_TEXT, API_KEY, collect_stream, http_request, sse_events


def expected_usage(messages: list[dict], text: str = MOCK_TEXT) -> tuple[int, int]:
    """The mock's deterministic usage: ~4 characters a token (see canned_response)."""
    chars = sum(len(m["content"]) + 4 for m in messages)
    return max(1, chars // 4), max(1, len(text) // 4)


def assert_failover_trace(trace: dict, stream: bool) -> None:
    attempts = trace["attempts"]
    assert [a["model"] for a in attempts] == ["claude-haiku-4-5", "gpt-4o-mini"], attempts
    first, second = attempts
    assert first["ok"] is False
    assert first["outcome"] == "rate_limited"
    assert first["status"] == 429
    assert second["ok"] is True
    assert second["outcome"] == "ok"
    assert trace["ok"] is True
    assert trace["served_model"] == "gpt-4o-mini"
    assert trace["config"] == "@production"
    assert trace["stream"] is stream
    prompt, completion = expected_usage(MESSAGES)
    assert trace["usage"]["prompt_tokens"] == prompt
    assert trace["usage"]["completion_tokens"] == completion


def test_nonstream_fails_over_from_429_and_traces_it(proxy, mock, client):
    mock.configure({"claude-haiku-4-5": {"error_status": 429, "retry_after_ms": 2000}})
    raw = client.chat.completions.with_raw_response.create(model="@production", messages=MESSAGES)
    resp = raw.parse()
    rid = raw.headers["x-request-id"]
    assert rid and resp._request_id == rid
    assert raw.headers["x-modelux-served-by"].endswith("gpt-4o-mini")

    assert resp.choices[0].message.content == MOCK_TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "gpt-4o-mini"
    prompt, completion = expected_usage(MESSAGES)
    assert resp.usage.prompt_tokens == prompt
    assert resp.usage.completion_tokens == completion
    assert resp.usage.total_tokens == prompt + completion

    assert_failover_trace(proxy.trace(rid), stream=False)
    # The primary really was asked (once: no retry configured) and really failed.
    stats = mock.stats()["models"]
    assert stats["claude-haiku-4-5"]["requests"] == 1
    assert stats["claude-haiku-4-5"]["errors"] == 1
    assert stats["gpt-4o-mini"]["requests"] == 1


def test_stream_fails_over_from_429_with_usage_and_done(proxy, mock, client):
    mock.configure({"claude-haiku-4-5": {"error_status": 429, "retry_after_ms": 2000}})
    stream = client.chat.completions.create(
        model="@production", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    rid = stream.response.headers["x-request-id"]
    got = collect_stream(stream)
    assert got.content == MOCK_TEXT
    assert got.finish_reason == "stop"
    assert got.model == "gpt-4o-mini"
    prompt, completion = expected_usage(MESSAGES)
    assert got.usage is not None
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (prompt, completion)
    assert got.usage.total_tokens == prompt + completion
    assert_failover_trace(proxy.trace(rid), stream=True)
    assert mock.stats()["models"]["gpt-4o-mini"]["streams"] == 1


def test_stream_raw_sse_ends_with_done_and_no_usage_unless_asked(proxy, mock):
    mock.configure({"claude-haiku-4-5": {"error_status": 429}})
    r = proxy.chat_raw({"model": "@production", "messages": MESSAGES, "stream": True})
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("error" not in c for c in chunks)
    assert "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]) == MOCK_TEXT
    # Without stream_options.include_usage no chunk carries usage (OpenAI's behaviour).
    assert all(not c.get("usage") for c in chunks)


def test_request_id_is_unique_per_request(proxy, client):
    ids = {client.chat.completions.with_raw_response.create(model="@fast", messages=MESSAGES).headers["x-request-id"]
           for _ in range(3)}
    assert len(ids) == 3


def test_malformed_json_body_is_400_in_openai_error_format(proxy):
    r = proxy.request("POST", "/v1/chat/completions", b'{"model": "@production", "messages": [')
    assert r.status == 400
    body = r.json()
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error"
    assert "code" in err and "param" in err


def test_schema_invalid_request_raises_bad_request(proxy, client):
    with pytest.raises(openai.BadRequestError) as ei:
        # messages must be an array of message objects
        client.chat.completions.create(model="@production", messages="hello")  # type: ignore[arg-type]
    assert ei.value.status_code == 400
    assert ei.value.body and ei.value.body.get("type") == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="@production", messages=[{"role": "user"}])  # no content


def test_wrong_api_key_is_401_and_authentication_error(proxy, mock):
    bad = proxy.client(api_key="mlx-not-a-valid-key")
    with pytest.raises(openai.AuthenticationError) as ei:
        bad.chat.completions.create(model="@production", messages=MESSAGES)
    assert ei.value.status_code == 401
    r = proxy.request("POST", "/v1/chat/completions", {"model": "@production", "messages": MESSAGES}, auth=False)
    assert r.status == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert API_KEY not in r.text
    # Nothing reached a provider.
    assert mock.stats()["total"] == 0


def test_unknown_model_and_unknown_slug_are_404_not_found(proxy, client, mock):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-99-imaginary", messages=MESSAGES)
    assert ei.value.status_code == 404
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="@no-such-config", messages=MESSAGES)
    assert ei.value.status_code == 404
    assert "no-such-config" in str(ei.value)
    r = proxy.chat_raw({"model": "@no-such-config", "messages": MESSAGES})
    assert r.status == 404
    assert r.json()["error"]["code"] == "model_not_found"
    # Streaming asks get the same clean 404 (nothing was streamed yet).
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="@no-such-config", messages=MESSAGES, stream=True)
    assert mock.stats()["total"] == 0


def test_oversized_body_is_413_in_openai_error_format(start_proxy):
    px = start_proxy(lambda c: c["server"].update(max_body_bytes=4096))
    big = {"model": "@production", "messages": [{"role": "user", "content": "x" * 10_000}]}
    r = px.chat_raw(big)
    assert r.status == 413
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    # The SDK sees an APIStatusError with that status (there is no dedicated 413 class).
    with pytest.raises(openai.APIStatusError) as ei:
        px.client().chat.completions.create(model="@production", messages=big["messages"])
    assert ei.value.status_code == 413
    # The server is still healthy after refusing it.
    assert px.client().chat.completions.create(model="@fast", messages=MESSAGES).choices[0].message.content == MOCK_TEXT


def test_models_lists_routing_configs_and_catalog_models(proxy, client):
    ids = [m.id for m in client.models.list()]
    assert "@production" in ids and "@fast" in ids
    assert "gpt-4o-mini" in ids and "claude-haiku-4-5" in ids and "gemini-2.5-flash" in ids
    # Only models whose provider is configured are listed.
    assert not any(i.startswith("openrouter/") for i in ids)


def test_trace_of_unknown_id_is_404(proxy):
    r = proxy.request("GET", "/v1/traces/req_doesnotexist")
    assert r.status == 404
    assert r.json()["error"]["message"]


def test_health_and_metrics_count_requests(proxy, client):
    assert http_request(proxy.port, "GET", "/healthz").status == 200
    before = proxy.request("GET", "/metrics").text
    client.chat.completions.create(model="@fast", messages=MESSAGES)

    def value(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in metrics")

    after = proxy.request("GET", "/metrics").text
    assert value(after, "modelux_requests_total") == value(before, "modelux_requests_total") + 1
    assert value(after, "modelux_requests_ok_total") == value(before, "modelux_requests_ok_total") + 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_every_target_rate_limited_is_429_rate_limit_error_with_trace(proxy, mock, client, stream):
    mock.configure({m: {"error_status": 429, "retry_after_ms": 30_000}
                    for m in ("claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash")})
    with pytest.raises(openai.RateLimitError) as ei:
        r = client.chat.completions.create(model="@production", messages=MESSAGES, stream=stream)
        if stream:
            list(r)
    assert ei.value.status_code == 429
    rid = ei.value.response.headers.get("x-request-id")
    assert rid, "error answers carry the request id too"
    trace = proxy.trace(rid)
    assert trace["ok"] is False
    assert [a["outcome"] for a in trace["attempts"]] == ["rate_limited"] * 3
    assert trace["error_kind"] == "rate_limited"


def test_rejected_request_is_traced(proxy, client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="@missing-slug", messages=MESSAGES)
    rid = ei.value.response.headers.get("x-request-id")
    assert rid
    trace = proxy.trace(rid)
    assert trace["ok"] is False and trace["error_kind"] == "not_found"
    assert trace["attempts"] == []


def test_config_put_swaps_live_and_bad_config_is_refused_with_path(proxy, mock, client):
    v1 = proxy.put_config("swap", {"strategy": "single", "model": "gpt-4o-mini"})
    assert client.chat.completions.create(model="@swap", messages=MESSAGES).model == "gpt-4o-mini"
    v2 = proxy.put_config("swap", {"strategy": "single", "model": "gemini-2.5-flash"})
    assert v2 > v1
    assert client.chat.completions.create(model="@swap", messages=MESSAGES).model == "gemini-2.5-flash"
    bad = proxy.request("PUT", "/v1/configs/swap",
                        {"strategy": "fallback", "attempts": [{"model": "gpt-4o-mini", "timeout_ms": "soon"}]})
    assert bad.status == 400
    err = bad.json()["error"]
    assert err["param"].endswith(".attempts[0].timeout_ms"), err
    unknown = proxy.request("PUT", "/v1/configs/swap", {"strategy": "single", "model": "gpt-99-imaginary"})
    assert unknown.status == 400
    # The refused versions never went live.
    assert client.chat.completions.create(model="@swap", messages=MESSAGES).model == "gemini-2.5-flash"
    got = proxy.request("GET", "/v1/configs/swap").json()
    assert got["version"] == v2 and got["config"]["model"] == "gemini-2.5-flash"


def test_concurrent_requests_each_get_their_own_answer_and_trace(proxy, mock):
    """16 SDK calls at once, half streaming, through a chain whose primary 429s: every caller
    gets a full answer from the fallback, every request id is distinct and has its own trace.
    (After the first 429 the primary sits out, so later requests may skip it altogether.)"""
    from concurrent.futures import ThreadPoolExecutor

    mock.configure({"claude-haiku-4-5": {"error_status": 429}, "gpt-4o-mini": {"latency_ms": 30}})

    def one(i: int) -> tuple[str, str]:
        c = proxy.client()
        if i % 2:
            s = c.chat.completions.create(model="@production", messages=MESSAGES, stream=True)
            rid = s.response.headers["x-request-id"]
            return rid, collect_stream(s).content
        raw = c.chat.completions.with_raw_response.create(model="@production", messages=MESSAGES)
        return raw.headers["x-request-id"], raw.parse().choices[0].message.content

    with ThreadPoolExecutor(max_workers=16) as ex:
        results = list(ex.map(one, range(16)))
    assert all(content == MOCK_TEXT for _, content in results)
    rids = [rid for rid, _ in results]
    assert len(set(rids)) == 16
    tried_primary = 0
    for rid in rids:
        t = proxy.trace(rid)
        assert t["request_id"] == rid and t["served_model"] == "gpt-4o-mini"
        outcomes = [a["outcome"] for a in t["attempts"]]
        assert outcomes in (["rate_limited", "ok"], ["ok"]), outcomes
        tried_primary += outcomes[0] == "rate_limited"
    assert mock.requests_for("claude-haiku-4-5") == tried_primary >= 1
    assert mock.requests_for("gpt-4o-mini") == 16


def test_a_429_makes_the_target_sit_out_for_its_retry_after(proxy, mock, client):
    """429 absorption: once a target said "come back in 30 s", the next requests go straight
    to the fallback instead of hitting it again. (30 s, not 2: the four requests must fit in the
    sit-out even at load average 4; the sit-out's own timing is unit-tested on virtual time.)"""
    mock.configure({"claude-haiku-4-5": {"error_status": 429, "retry_after_ms": 30_000}})
    first = client.chat.completions.with_raw_response.create(model="@production", messages=MESSAGES)
    t1 = proxy.trace(first.headers["x-request-id"])
    assert [a["outcome"] for a in t1["attempts"]] == ["rate_limited", "ok"]
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="@production", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == MOCK_TEXT
        t = proxy.trace(raw.headers["x-request-id"])
        assert [(a["model"], a["outcome"]) for a in t["attempts"]] == [("gpt-4o-mini", "ok")]
        assert "claude-haiku-4-5" in t["reason"]  # the skip is explained
    assert mock.requests_for("claude-haiku-4-5") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_breaker_opens_after_consecutive_failures_and_is_visible(proxy, mock, client, stream):
    mock.configure({"claude-haiku-4-5": {"error_status": 500}})
    outcomes = []
    for _ in range(7):
        raw = client.chat.completions.with_raw_response.create(model="@production", messages=MESSAGES, stream=stream)
        content = collect_stream(raw.parse()).content if stream else raw.parse().choices[0].message.content
        assert content == MOCK_TEXT
        t = proxy.trace(raw.headers["x-request-id"])
        outcomes.append([a["outcome"] for a in t["attempts"]])
    # Some failures in a row trip the breaker; from then on the primary is skipped.
    tripped_at = next(i for i, o in enumerate(outcomes) if o == ["ok"])
    assert tripped_at >= 1
    assert all(o == ["server_error", "ok"] for o in outcomes[:tripped_at])
    assert all(o == ["ok"] for o in outcomes[tripped_at:])
    assert mock.requests_for("claude-haiku-4-5") == tripped_at
    health = proxy.request("GET", "/v1/health").json()
    primary = next(x for x in health["targets"] if x["target"] == "anthropic/claude-haiku-4-5")
    assert primary["breaker"] == "open" and primary["admits"] is False


def test_429_to_the_caller_carries_retry_after(proxy, mock):
    """When every target is rate limited and each said when to come back, the proxy's 429 tells
    the caller too (retry-after / retry-after-ms, which the openai SDK's own retries honour)
    instead of letting SDK clients hammer it on their default backoff."""
    mock.configure({m: {"error_status": 429, "retry_after_ms": 7000}
                    for m in ("claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash")})
    r = proxy.chat_raw({"model": "@production", "messages": MESSAGES})
    assert r.status == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    ra_ms = r.headers.get("retry-after-ms")
    ra_s = r.headers.get("retry-after")
    assert ra_ms is not None or ra_s is not None, f"no retry-after in {r.headers}"
    if ra_ms is not None:
        assert 1000 <= float(ra_ms) <= 7000
    if ra_s is not None:
        assert 1 <= float(ra_s) <= 7


def test_caller_identity_tags_and_metadata_land_in_the_trace(proxy, client):
    raw = client.chat.completions.with_raw_response.create(
        model="@fast", messages=MESSAGES, user="end-user-42", metadata={"feature": "chat"},
        extra_headers={"x-modelux-tags": "team=search,env=test"},
    )
    t = proxy.trace(raw.headers["x-request-id"])
    assert t["end_user"] == "end-user-42"
    assert t["project"] == "e2e" and t["api_key_id"] == "e2e"  # from the API key, never the key itself
    assert t["tags"] == {"team": "search", "env": "test", "feature": "chat"}
    assert "mlx-e2e" not in json.dumps(t)


def test_capture_bodies_keeps_request_and_response_in_the_trace(start_proxy):
    """Issue #14 (7): tracing.capture_bodies had no effect in the proxy."""
    proxy = start_proxy(lambda cfg: cfg["tracing"].update(capture_bodies=True, redact_fields=["user"]))
    client = proxy.client()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "capture me please"}], user="someone-secret")
    assert raw.parse().choices[0].message.content
    deadline = time.monotonic() + 5
    while True:
        r = proxy.request("GET", f"/v1/traces/{raw.headers['x-request-id']}")
        if r.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    t = r.json()
    assert "capture me please" in t["request_body"]
    assert "someone-secret" not in t["request_body"]  # redact_fields still apply
    assert raw.parse().choices[0].message.content in t["response_body"]


def test_trace_listing_honours_its_filters_and_limit(start_proxy, mock):
    """Issue #14 (8): GET /v1/traces ignored its filters and its limit."""
    proxy = start_proxy()
    client = proxy.client()
    for model in ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "claude-haiku-4-5"]:
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=8,
                                       extra_headers={"x-modelux-tags": f"m={model}"})
    mock.configure(models={"gpt-4o": {"error_status": 500}})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=8)

    def listing(query: str) -> list[dict]:
        r = proxy.request("GET", f"/v1/traces?{query}")
        assert r.status == 200, r.text
        return r.json()["data"]

    assert len(listing("limit=2")) == 2
    assert len(listing("limit=100")) == 5
    assert {t["config"] for t in listing("model=gpt-4o-mini")} == {"gpt-4o-mini"}
    assert len(listing("model=gpt-4o-mini")) == 2
    assert len(listing("provider=anthropic")) == 1
    assert len(listing("config=gpt-4o")) == 2
    assert [t["ok"] for t in listing("status=error")] == [False]
    assert all(t["ok"] for t in listing("status=ok"))
    assert len(listing("tag=m%3Dgpt-4o")) == 1
    assert len(listing("model=gpt-4o-mini&limit=1")) == 1
    since = listing("limit=100")[-1]["time"]
    assert len(listing(f"since={since}")) == 5
    assert listing("since=2200-01-01T00:00:00Z") == []
    r = proxy.request("GET", "/v1/traces?status=maybe")
    assert r.status == 400 and r.json()["error"]["param"] == "status"
    r = proxy.request("GET", "/v1/traces?colour=red")
    assert r.status == 400 and r.json()["error"]["param"] == "colour"


def test_deleting_a_config_is_refused_honestly(proxy):
    """Issue #14 (8): DELETE /v1/configs/x answered 200 with the config."""
    r = proxy.request("DELETE", "/v1/configs/production")
    assert r.status == 405, r.text
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in r.headers.get("allow", "") and "DELETE" not in r.headers.get("allow", "")
    assert proxy.request("GET", "/v1/configs/production").status == 200
