"""Issue #15 (OpenTelemetry): decision traces exported as OTLP/HTTP JSON spans.

A small OTLP receiver (an HTTP server started here) decodes every ExportTraceServiceRequest
and the tests check what a collector would see: POST /v1/traces with application/json; one
SERVER span per request with the GenAI attributes; one CLIENT child span per attempt with the
request span as parent and the same trace id; no secret anywhere in the export; and the
exporter's counters in /metrics, drops included when the collector is unreachable.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from e2e_support import MESSAGES, Mock, http_request

COLLECTOR_KEY = "otlp-collector-secret-7f3a9c"


class OtlpReceiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.posts.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "raw": body, "json": json.loads(body)})
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[dict]:
        with self.lock:
            return [s for p in self.posts for rs in p["json"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]

    def wait_for(self, request_id: str, n: int, timeout: float = 15.0) -> list[dict]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            mine = [s for s in self.spans() if attrs(s).get("modelux.request_id") == request_id or
                    s["traceId"] in {x["traceId"] for x in self.spans() if attrs(x).get("modelux.request_id") == request_id}]
            if len(mine) >= n:
                return mine
            time.sleep(0.05)
        raise AssertionError(f"no {n} spans for {request_id}: {self.spans()}")

    def close(self) -> None:
        self.server.shutdown()


def attrs(span: dict) -> dict:
    out = {}
    for a in span.get("attributes", []):
        (kind, v), = a["value"].items()
        out[a["key"]] = int(v) if kind == "intValue" else v
    return out


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def test_every_request_becomes_a_span_with_a_child_per_attempt(start_proxy: Any, mock: Mock, receiver: OtlpReceiver) -> None:
    def edit(cfg: dict) -> None:
        cfg["tracing"]["otlp"] = {"endpoint": receiver.endpoint, "interval_ms": 50, "batch_size": 8,
                                  "headers": {"x-collector-key": COLLECTOR_KEY}, "service_name": "modelux-e2e"}

    p = start_proxy(edit)
    mock.configure({"claude-haiku-4-5": {"error_status": 429, "error_rate": 1.0}})
    r = p.request("POST", "/v1/chat/completions", {"model": "@production", "messages": MESSAGES, "max_tokens": 16},
                  {"x-modelux-project": "acme", "x-modelux-tags": "team=search"})
    assert r.status == 200, r.text
    rid = r.headers["x-request-id"]
    spans = receiver.wait_for(rid, 3)
    root = [s for s in spans if "parentSpanId" not in s or not s["parentSpanId"]]
    assert len(root) == 1, spans
    root = root[0]
    children = sorted((s for s in spans if s is not root), key=lambda s: attrs(s)["modelux.attempt.index"])
    assert len(children) == 2
    ra = attrs(root)
    assert root["kind"] == 2 and root["name"] == "chat @production" and root["status"]["code"] == 1
    assert ra["gen_ai.operation.name"] == "chat" and ra["gen_ai.request.model"] == "@production"
    assert ra["gen_ai.response.model"] == "gpt-4o-mini" and ra["gen_ai.provider.name"] == "openai"
    trace = p.trace(rid)
    assert ra["gen_ai.usage.input_tokens"] == trace["usage"]["prompt_tokens"] > 0
    assert ra["gen_ai.usage.output_tokens"] == trace["usage"]["completion_tokens"] > 0
    assert ra["gen_ai.request.max_tokens"] == 16
    assert ra["modelux.project"] == "acme" and ra["modelux.tag.team"] == "search" and ra["modelux.attempts"] == 2
    assert len(root["traceId"]) == 32 and len(root["spanId"]) == 16
    assert int(root["endTimeUnixNano"]) > int(root["startTimeUnixNano"]) > 0
    for c in children:
        assert c["traceId"] == root["traceId"] and c["parentSpanId"] == root["spanId"] and c["kind"] == 3
        assert c["spanId"] != root["spanId"]
        assert int(root["startTimeUnixNano"]) <= int(c["startTimeUnixNano"]) <= int(c["endTimeUnixNano"])
    failed, served = (attrs(c) for c in children)
    assert children[0]["status"]["code"] == 2 and failed["error.type"] == "rate_limited"
    assert failed["gen_ai.provider.name"] == "anthropic" and failed["gen_ai.request.model"] == "claude-haiku-4-5"
    assert failed["http.response.status_code"] == 429
    assert children[1]["status"]["code"] == 1 and served["gen_ai.response.model"] == "gpt-4o-mini"
    assert served["gen_ai.usage.output_tokens"] == ra["gen_ai.usage.output_tokens"]
    with receiver.lock:
        post = receiver.posts[0]
    assert post["path"] == "/v1/traces" and post["headers"]["content-type"] == "application/json"
    assert post["headers"]["x-collector-key"] == COLLECTOR_KEY
    res = {a["key"]: a["value"]["stringValue"] for a in post["json"]["resourceSpans"][0]["resource"]["attributes"]}
    assert res["service.name"] == "modelux-e2e"
    # No secret in any export: provider keys, the proxy's keys, the collector's own key.
    with receiver.lock:
        raw = b"".join(x["raw"] for x in receiver.posts)
    for secret in ["mock-anthropic-key", "mock-openai-key", p.auth["authorization"][7:], COLLECTOR_KEY]:
        assert secret.encode() not in raw
    # The exporter counts a batch once the collector's answer is back, which can be a moment
    # after the receiver recorded the post: poll, bounded (a loaded run failed reading 0 here).
    end = time.monotonic() + 5
    while True:
        m = http_request(p.port, "GET", "/metrics").text
        assert COLLECTOR_KEY not in m
        exported = [ln for ln in m.splitlines() if ln.startswith("modelux_otlp_spans_exported_total")]
        if (exported and float(exported[0].split()[-1]) >= 3) or time.monotonic() > end:
            break
        time.sleep(0.02)
    assert exported and float(exported[0].split()[-1]) >= 3, exported


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metric(text: str, name: str) -> float:
    for ln in text.splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            return float(ln.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_an_unreachable_collector_never_slows_requests_and_drops_are_counted(start_proxy: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1/traces"

    def edit(cfg: dict) -> None:
        cfg["tracing"]["otlp"] = {"endpoint": dead, "interval_ms": 20, "batch_size": 2, "queue_capacity": 2, "timeout_ms": 200}

    p = start_proxy(edit)
    for _ in range(12):
        r = p.request("POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES})
        assert r.status == 200, r.text
    end = time.monotonic() + 15
    while True:
        m = http_request(p.port, "GET", "/metrics").text
        dropped, queued = metric(m, "modelux_otlp_traces_dropped_total"), metric(m, "modelux_otlp_queued")
        written = metric(m, "modelux_traces_written_total")
        if (written == 12 and dropped + queued >= 12 - 2) or time.monotonic() > end:  # at most one batch in flight
            break
        time.sleep(0.05)
    assert dropped > 0 and metric(m, "modelux_otlp_traces_exported_total") == 0
    assert metric(m, "modelux_otlp_export_failures_total") > 0
    assert written == 12  # the store got every trace regardless


@pytest.mark.parametrize("otlp, path", [
    ({"endpoint": "not a url"}, "$.tracing.otlp.endpoint"),
    ({}, "$.tracing.otlp.endpoint"),
    ({"endpoint": "http://127.0.0.1:1/v1/traces", "batch_size": 0}, "$.tracing.otlp.batch_size"),
    ({"endpoint": "http://127.0.0.1:1/v1/traces", "headers": {"a": 1}}, "$.tracing.otlp.headers.a"),
    ({"endpoint": "http://127.0.0.1:1/v1/traces", "colour": "blue"}, "$.tracing.otlp.colour"),
])
def test_a_bad_otlp_config_is_refused_with_its_path(tmp_path: Any, mock: Mock, otlp: dict, path: str) -> None:
    import subprocess
    from e2e_support import MODELUX_BIN, base_config
    cfg = base_config(mock.url, tmp_path / "t.db")
    cfg["tracing"]["otlp"] = otlp
    f = tmp_path / "c.json"
    f.write_text(json.dumps(cfg))
    r = subprocess.run([MODELUX_BIN, "serve", "--config", str(f), "--port", "0"], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and path in r.stderr, r.stderr


def test_a_hanging_collector_does_not_hold_up_shutdown(start_proxy: Any) -> None:
    """A collector that accepts and never answers: every POST runs into timeout_ms. At shutdown
    the exporter tries once and drops the rest (it used to try every queued batch in turn)."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)  # connections complete in the backlog; nothing is ever read or answered
    try:
        def edit(cfg: dict) -> None:
            cfg["tracing"]["otlp"] = {"endpoint": f"http://127.0.0.1:{hang.getsockname()[1]}/v1/traces",
                                      "interval_ms": 20, "batch_size": 1, "queue_capacity": 64, "timeout_ms": 1500}

        p = start_proxy(edit)
        for _ in range(10):
            assert p.request("POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES}).status == 200
        end = time.monotonic() + 10
        while metric(http_request(p.port, "GET", "/metrics").text, "modelux_otlp_queued") < 5:  # stuck on the first POSTs
            assert time.monotonic() < end, "the exporter's queue never filled"
            time.sleep(0.05)
        t0 = time.monotonic()
        p.proc.proc.send_signal(__import__("signal").SIGTERM)
        rc = p.proc.proc.wait(timeout=30)
        took = time.monotonic() - t0
        # One POST in flight (up to 2 x 1.5 s with its retry) plus one at shutdown; the queue of
        # ~8 more would take another 8 x 1.5 s if each were tried.
        assert rc == 0 and took < 8, (rc, took)
    finally:
        hang.close()
