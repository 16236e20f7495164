"""Hostile and malformed input at the proxy: every one gets a clear answer in OpenAI's error
format (or a clean HTTP error), never a crash or a hang, and the proxy keeps serving."""

from __future__ import annotations

import json
import socket

import pytest

from e2e_support import API_KEY, MESSAGES, MOCK_TEXT


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Sends raw bytes, reads one response (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            piece = s.recv(65536)
            assert piece, f"connection closed without a response: {buf!r}"
            buf += piece
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            piece = s.recv(65536)
            if not piece:
                break
            body += piece
        return int(lines[0].split()[1]), headers, body
    finally:
        s.close()


def post(port: int, body: bytes, extra_headers: bytes = b"") -> tuple[int, dict, bytes]:
    return raw_exchange(
        port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"authorization: Bearer {API_KEY}\r\n".encode()
        + extra_headers
        + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body,
    )


def assert_openai_error(status: int, body: bytes, want_status: int) -> dict:
    assert status == want_status, body[:300]
    err = json.loads(body)["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error"
    return err


CASES = {
    "deep nesting": (b'{"model":"@fast","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    "invalid utf-8": (b'{"model":"@fast","messages":[{"role":"user","content":"\xff\xfe bad"}]}', 400),
    "number overflow": (b'{"model":"@fast","max_tokens":1e999,"messages":[{"role":"user","content":"x"}]}', 400),
    "negative max_tokens": (b'{"model":"@fast","max_tokens":-5,"messages":[{"role":"user","content":"x"}]}', 400),
    "not an object": (b'[{"model":"@fast"}]', 400),
    "empty body": (b"", 400),
    "messages empty": (b'{"model":"@fast","messages":[]}', 400),
    "unknown role": (b'{"model":"@fast","messages":[{"role":"wizard","content":"x"}]}', 400),
    "truncated": (b'{"model":"@fast","messages":[{"role":"user","content":"x', 400),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_bodies_get_openai_errors_and_the_proxy_keeps_serving(shared_proxy, mock, case):
    body, want = CASES[case]
    status, _, resp = post(shared_proxy.port, body)
    assert_openai_error(status, resp, want)
    assert mock.stats()["total"] == 0  # nothing reached a provider
    assert shared_proxy.chat_raw({"model": "@fast", "messages": MESSAGES}).status == 200


def test_bad_field_names_its_json_path(shared_proxy):
    status, _, resp = post(shared_proxy.port, b'{"model":"@fast","max_tokens":-5,"messages":[{"role":"user","content":"x"}]}')
    err = assert_openai_error(status, resp, 400)
    assert err["param"] == "$.max_tokens"


def test_too_many_headers_is_431(shared_proxy):
    many = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))
    status, _, resp = post(shared_proxy.port, b"{}", many)
    assert status == 431
    assert json.loads(resp)["error"]["message"]


def test_not_http_at_all_is_400(shared_proxy):
    status, headers, _ = raw_exchange(shared_proxy.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 50)
    assert status == 400
    assert headers.get("connection") == "close"


def test_nul_in_content_is_just_text(shared_proxy, shared_client):
    r = shared_client.chat.completions.create(model="@fast", messages=[{"role": "user", "content": "a\u0000b"}])
    assert r.choices[0].message.content == MOCK_TEXT


def test_wrong_method_is_405(shared_proxy):
    r = shared_proxy.request("GET", "/v1/chat/completions")
    assert r.status == 405
    assert json.loads(r.body)["error"]["message"]


def test_unknown_path_is_404_in_openai_format(shared_proxy):
    r = shared_proxy.request("GET", "/v1/nothing-here")
    assert r.status == 404
    assert json.loads(r.body)["error"]["message"]
