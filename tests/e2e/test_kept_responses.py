"""Issue #14: kept responses for clients that disconnect.

A request that opts in (header `x-modelux-keep: 1`, or its routing config's
`keep_responses: {ttl_s}`) runs to the end after its client hangs up, and the completed answer
is fetched with GET /v1/kept/{request_id}: by the key that made it, a key of its project, or
an admin; anyone else gets 404. Without opting in a hang-up still cancels the upstream call.

Clients hang up for real (a raw socket closed mid-stream or mid-request); the mock says
whether it wrote its stream to the end (`streams_completed`) or saw its reader leave
(`streams_abandoned`).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import pytest

from e2e_support import API_KEY, MESSAGES, MOCK_TEXT, Mock, Proxy, http_request

PATHS = {
    "chat": ("/v1/chat/completions", {"model": "@fast", "messages": MESSAGES}),
    "messages": ("/v1/messages", {"model": "@fast", "max_tokens": 64, "messages": MESSAGES}),
}
SLOW_STREAM = {"chunks": 20, "chunk_interval_ms": 100}  # ~2 s after the first piece


def open_request(proxy: Proxy, path: str, body: dict, headers: dict[str, str], key: str = API_KEY) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    head = "".join(f"{k}: {v}\r\n" for k, v in {"authorization": f"Bearer {key}", **headers}.items())
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
              .encode() + head.encode() + b"\r\n" + data)
    return s


def read_until(s: socket.socket, marker: bytes) -> tuple[dict[str, str], bytes]:
    """Reads the response head and body bytes until `marker` appears; returns (headers, bytes)."""
    got = b""
    while b"\r\n\r\n" not in got or marker not in got.split(b"\r\n\r\n", 1)[1]:
        piece = s.recv(4096)
        assert piece, f"the response ended before {marker!r}: {got!r}"
        got += piece
    head, rest = got.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    return {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}, rest


def kept(proxy: Proxy, rid: str, key: str | None = API_KEY) -> Any:
    return http_request(proxy.port, "GET", f"/v1/kept/{rid}", None, {"authorization": f"Bearer {key}"} if key else {})


def wait_kept(proxy: Proxy, rid: str, timeout_s: float = 10.0) -> tuple[Any, bool]:
    """Polls until the kept answer is stored; returns it and whether 'in progress' was seen."""
    deadline = time.monotonic() + timeout_s
    seen_in_progress = False
    while True:
        r = kept(proxy, rid)
        if r.status == 202:
            assert r.json()["status"] == "in_progress"
            seen_in_progress = True
        elif r.status != 404 or time.monotonic() > deadline:
            return r, seen_in_progress
        assert time.monotonic() < deadline, f"no kept answer for {rid} after {timeout_s} s"
        time.sleep(0.05)


def answer_text(kind: str, body: dict) -> str:
    if kind == "chat":
        return body["choices"][0]["message"]["content"]
    return "".join(b["text"] for b in body["content"] if b["type"] == "text")


def stream_counts(mock: Mock, model: str = "gpt-4o-mini") -> tuple[int, int]:
    m = mock.stats()["models"].get(model, {})
    return m.get("streams_completed", 0), m.get("streams_abandoned", 0)


@pytest.mark.parametrize("kind", list(PATHS))
def test_client_leaving_mid_stream_then_fetching_the_whole_answer(proxy: Proxy, mock: Mock, kind: str) -> None:
    mock.configure({"gpt-4o-mini": SLOW_STREAM})
    path, body = PATHS[kind]
    s = open_request(proxy, path, {**body, "stream": True}, {"x-modelux-keep": "1"})
    headers, _ = read_until(s, b"data:")
    rid = headers["x-request-id"]  # known from the response head, before the client leaves
    s.close()
    r, seen_in_progress = wait_kept(proxy, rid)
    assert r.status == 200, r.text
    assert seen_in_progress, "the answer was stored before the stream could have ended"
    assert r.headers["x-modelux-kept-status"] == "completed"
    got = r.json()
    assert answer_text(kind, got) == MOCK_TEXT
    if kind == "chat":
        assert got["object"] == "chat.completion" and got["choices"][0]["finish_reason"] == "stop"
        assert got["usage"]["completion_tokens"] > 0
    else:
        assert got["type"] == "message" and got["stop_reason"] == "end_turn" and got["usage"]["output_tokens"] > 0
    # The upstream wrote its stream to the end: the hang-up did not cancel it. (Only the
    # completed count is ours to check: the mock is shared by the session, and a stream an
    # earlier test left can still end as abandoned while this one runs.)
    assert stream_counts(mock)[0] == 1
    trace = proxy.trace(rid)
    assert trace["ok"] is True, trace


@pytest.mark.parametrize("kind", list(PATHS))
def test_client_leaving_mid_request_with_its_own_request_id(proxy: Proxy, mock: Mock, kind: str) -> None:
    """A JSON request gives no byte back before the end, so the client names the id itself."""
    mock.configure({"gpt-4o-mini": {"latency_ms": 1500}})
    path, body = PATHS[kind]
    rid = f"mine-{uuid.uuid4().hex}"
    s = open_request(proxy, path, body, {"x-modelux-keep": "1", "x-modelux-request-id": rid})
    deadline = time.monotonic() + 8
    while mock.requests_for("gpt-4o-mini") < 1:
        assert time.monotonic() < deadline, "the upstream never got the request"
        time.sleep(0.01)
    s.close()
    r, seen_in_progress = wait_kept(proxy, rid)
    assert r.status == 200, r.text
    assert seen_in_progress
    assert answer_text(kind, r.json()) == MOCK_TEXT
    assert r.headers["x-request-id"] == rid
    assert proxy.trace(rid)["ok"] is True


def test_a_routing_config_keeps_without_the_header_and_the_header_can_refuse(proxy: Proxy, mock: Mock) -> None:
    proxy.put_config("keepme", {"strategy": "single", "model": "gpt-4o-mini", "keep_responses": {"ttl_s": 60}})
    mock.configure({"gpt-4o-mini": SLOW_STREAM})
    body = {"model": "@keepme", "messages": MESSAGES, "stream": True}
    s = open_request(proxy, "/v1/chat/completions", body, {})
    rid = read_until(s, b"data:")[0]["x-request-id"]
    s.close()
    r, _ = wait_kept(proxy, rid)
    assert r.status == 200 and answer_text("chat", r.json()) == MOCK_TEXT
    # x-modelux-keep: 0 turns the config's keeping off for one request: the hang-up cancels.
    s = open_request(proxy, "/v1/chat/completions", body, {"x-modelux-keep": "0"})
    rid2 = read_until(s, b"data:")[0]["x-request-id"]
    s.close()
    deadline = time.monotonic() + 8
    while stream_counts(mock)[1] < 1:
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        time.sleep(0.02)
    assert kept(proxy, rid2).status == 404


def test_a_bad_keep_config_is_refused_with_its_path(proxy: Proxy) -> None:
    r = proxy.request("PUT", "/v1/configs/badkeep", {"strategy": "single", "model": "gpt-4o-mini", "keep_responses": {"ttl_s": -1}})
    assert r.status == 400 and "keep_responses.ttl_s" in r.text, r.text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_default_hang_up_still_cancels_the_upstream(proxy: Proxy, mock: Mock, stream: bool) -> None:
    mock.configure({"gpt-4o-mini": SLOW_STREAM if stream else {"latency_ms": 3000}})
    user = f"cancel-{uuid.uuid4().hex[:10]}"
    s = open_request(proxy, "/v1/chat/completions", {**PATHS["chat"][1], "stream": stream}, {"x-modelux-end-user": user})
    rid = None
    if stream:
        rid = read_until(s, b"data:")[0]["x-request-id"]
    else:
        deadline = time.monotonic() + 8
        while mock.requests_for("gpt-4o-mini") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    s.close()
    deadline = time.monotonic() + 8
    trace = None
    while trace is None:
        assert time.monotonic() < deadline, "no trace: the request was not ended by the hang-up"
        trace = next((t for t in proxy.request("GET", "/v1/traces").json()["data"] if t["end_user"] == user), None)
        time.sleep(0.02)
    assert trace["error_kind"] == "cancelled", trace
    if stream:
        while stream_counts(mock)[1] < 1:
            assert time.monotonic() < deadline, "the mock never saw its reader leave"
            time.sleep(0.02)
        assert stream_counts(mock) == (0, 1)
    assert kept(proxy, trace["request_id"]).status == 404


def test_kept_answers_expire(start_proxy: Any, mock: Mock) -> None:
    proxy = start_proxy(lambda c: c["server"].update(keep_responses={"default_ttl_s": 1}))
    r = proxy.request("POST", "/v1/chat/completions", PATHS["chat"][1], headers={"x-modelux-keep": "1"})
    assert r.status == 200
    rid = r.headers["x-request-id"]
    t0 = time.monotonic()
    got, _ = wait_kept(proxy, rid)
    assert got.status == 200, got.text
    expires_ms = int(got.headers["x-modelux-kept-expires"])
    assert abs(expires_ms / 1000 - time.time() - 1) < 1.5
    while kept(proxy, rid).status == 200:
        assert time.monotonic() - t0 < 6, "the kept answer outlived its 1 s TTL by far"
        time.sleep(0.1)
    assert kept(proxy, rid).status == 404
    assert time.monotonic() - t0 > 0.5


ADMIN = "mlx-kept-admin-00000000001"
PROJ_A = "mlx-kept-project-alpha-0001"
PROJ_A2 = "mlx-kept-project-alpha-0002"
VIEWER_A = "mlx-kept-viewer-alpha-0001"
PROJ_B = "mlx-kept-project-beta-00001"
VIEWER_B = "mlx-kept-viewer-beta-00001"


def roles(cfg: dict) -> None:
    cfg["server"]["api_keys"] = [
        {"key": ADMIN, "name": "admin", "role": "admin"},
        {"key": PROJ_A, "name": "proj-a", "project": "alpha"},
        {"key": PROJ_A2, "name": "proj-a2", "project": "alpha"},
        {"key": VIEWER_A, "name": "viewer-a", "project": "alpha", "role": "viewer"},
        {"key": PROJ_B, "name": "proj-b", "project": "beta"},
        {"key": VIEWER_B, "name": "viewer-b", "project": "beta", "role": "viewer"},
    ]


def test_only_the_owner_its_project_or_an_admin_may_fetch(start_proxy: Any, mock: Mock) -> None:
    proxy = start_proxy(roles)
    mock.configure({"gpt-4o-mini": {"latency_ms": 800}})
    rid = f"alpha-{uuid.uuid4().hex}"
    s = open_request(proxy, "/v1/chat/completions", PATHS["chat"][1], {"x-modelux-keep": "1", "x-modelux-request-id": rid}, key=PROJ_A)
    deadline = time.monotonic() + 8
    while mock.requests_for("gpt-4o-mini") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    s.close()
    # While in flight: the owner sees "in progress", another tenant sees nothing.
    assert kept(proxy, rid, PROJ_A).status == 202
    assert kept(proxy, rid, PROJ_B).status == 404
    while kept(proxy, rid, PROJ_A).status != 200:
        assert time.monotonic() < deadline + 8
        time.sleep(0.05)
    expected = {"the key that made it": (PROJ_A, 200), "another key of its project": (PROJ_A2, 200),
                "viewer of its project": (VIEWER_A, 200), "admin": (ADMIN, 200),
                "project B": (PROJ_B, 404), "viewer of B": (VIEWER_B, 404),
                "no key": (None, 401), "wrong key": ("mlx-kept-not-a-key-00000", 401)}
    got = {who: kept(proxy, rid, key).status for who, (key, _) in expected.items()}
    print("\nkept fetch by role:", got)
    assert got == {who: status for who, (_, status) in expected.items()}
    # The 404 of another tenant is the 404 of an unknown id: nothing tells them it exists.
    other = kept(proxy, rid, PROJ_B).json()["error"]["message"].replace(rid, "ID")
    unknown = kept(proxy, "unknown-id-0000", PROJ_B).json()["error"]["message"].replace("unknown-id-0000", "ID")
    assert other == unknown


def test_a_failed_kept_request_stores_its_error(proxy: Proxy, mock: Mock) -> None:
    mock.configure({"gpt-4o-mini": {"error_status": 500}})
    r = proxy.request("POST", "/v1/messages", PATHS["messages"][1], headers={"x-modelux-keep": "1"})
    assert r.status == 502
    got, _ = wait_kept(proxy, r.headers["x-request-id"])
    assert got.status == 502 and got.headers["x-modelux-kept-status"] == "failed"
    assert got.json()["type"] == "error" and got.json()["error"]["type"] == "api_error"


def test_keep_headers_are_checked(proxy: Proxy) -> None:
    body = PATHS["chat"][1]
    r = proxy.request("POST", "/v1/chat/completions", body, headers={"x-modelux-keep": "maybe"})
    assert r.status == 400 and r.json()["error"]["param"] == "x-modelux-keep"
    r = proxy.request("POST", "/v1/chat/completions", body, headers={"x-modelux-request-id": "abcdefgh123"})
    assert r.status == 400 and "x-modelux-keep" in r.json()["error"]["message"]
    r = proxy.request("POST", "/v1/chat/completions", body, headers={"x-modelux-keep": "1", "x-modelux-request-id": "no/slashes!"})
    assert r.status == 400
    r = proxy.request("POST", "/v1/messages", PATHS["messages"][1], headers={"x-modelux-keep": "1", "x-modelux-request-id": "short"})
    assert r.status == 400 and r.json()["type"] == "error"
    rid = f"dup-{uuid.uuid4().hex}"
    assert proxy.request("POST", "/v1/chat/completions", body, headers={"x-modelux-keep": "1", "x-modelux-request-id": rid}).status == 200
    wait_kept(proxy, rid)
    r = proxy.request("POST", "/v1/chat/completions", body, headers={"x-modelux-keep": "1", "x-modelux-request-id": rid})
    assert r.status == 409, r.text
    assert proxy.request("GET", "/v1/kept/..%2f..%2fetc").status == 404


def test_kept_answers_survive_a_restart_in_the_configured_file(start_proxy: Any, tmp_path: Any) -> None:
    path = tmp_path / "my-kept.db"
    first = start_proxy(lambda c: c["server"].update(keep_responses={"path": str(path)}))
    r = first.request("POST", "/v1/messages", PATHS["messages"][1], headers={"x-modelux-keep": "1"})
    assert r.status == 200
    rid = r.headers["x-request-id"]
    assert wait_kept(first, rid)[0].status == 200
    first.proc.stop()
    assert path.exists()
    second = start_proxy(lambda c: c["server"].update(keep_responses={"path": str(path)}))
    got = kept(second, rid)
    assert got.status == 200 and answer_text("messages", got.json()) == MOCK_TEXT
