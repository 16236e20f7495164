"""Issue #11 (2): provider keys never leave the process.

Every provider gets a canary key; the mock answers 401 quoting the credential it was sent
(as OpenAI's 401 does: "Incorrect API key provided: sk-…"). For EVERY provider family the
canary must not appear in the client's error body, the trace JSON from /v1/traces, the SQLite
file's bytes, nor `modelux logs --trace`. Canaries without a known prefix check the scrubber
works by value; shaped ones (sk-…, AIza…) check the shape rules too. Before the fix the key
reached the client verbatim and a key without a known prefix was never scrubbed anywhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import openai
import pytest

from e2e_support import MESSAGES, MODELUX_BIN, Proxy, http_request

# provider → (client model, upstream model the mock sees, canary)
CANARIES = {
    "openai": ("gpt-4o-mini", "gpt-4o-mini", "sk-proj-CANARYopenai0123456789abcdef"),
    "anthropic": ("claude-haiku-4-5", "claude-haiku-4-5", "zz-canary-anthropic-71c3a90d5e"),
    "google": ("gemini-2.5-flash", "gemini-2.5-flash", "AIzaCANARYgoogle0123456789abcdefXYZ"),
    "cohere": ("command-r-08-2024", "command-r-08-2024", "canary.cohere.4f1e2d3c4b5a"),
    "bedrock": ("bedrock/nova-lite", "amazon.nova-lite-v1:0", "QQCANARYBEDROCKKEY42"),
    "azure": ("azure/gpt-4o", "gpt-4o", "canary-azure-8b7a6f5e4d3c2b1a"),
    "groq": ("groq/llama-3.1-8b", "llama-3.1-8b-instant", "canary_groq_5d4c3b2a1f0e"),
    "mistral": ("mistral-small-latest", "mistral-small-latest", "CanaryMistral9f8e7d6c5b4a"),
}


def canary_config(cfg: dict) -> None:
    for prov, (_, _, key) in CANARIES.items():
        cfg["providers"][prov]["api_key"] = key
    # Bedrock with a bearer API key (no SigV4): the key itself travels and can be echoed.
    cfg["providers"]["bedrock"]["options"] = {"region": "us-east-1"}


@pytest.fixture
def canary_proxy(start_proxy) -> Proxy:
    return start_proxy(canary_config)


def test_canary_keys_never_leave_the_process(canary_proxy: Proxy, mock, tmp_path: Path) -> None:
    mock.configure({up: {"error_status": 401, "echo_key": True} for (_, up, _) in CANARIES.values()})
    client = canary_proxy.client()
    request_ids = {}
    for prov, (model, upstream, key) in CANARIES.items():
        with pytest.raises(openai.APIStatusError) as ei:
            client.chat.completions.create(model=model, messages=MESSAGES)
        body = ei.value.response.text
        assert mock.requests_for(upstream) >= 1, f"{prov}: the mock was not reached"
        assert key not in body, f"{prov}: the canary reached the client: {body}"
        assert "[redacted]" in body, f"{prov}: the echoed key was not replaced: {body}"
        request_ids[prov] = ei.value.response.headers["x-request-id"]
        # The streaming path answers the same error before any byte.
        r = canary_proxy.chat_raw({"model": model, "messages": MESSAGES, "stream": True})
        assert r.status >= 400 and key not in r.text, f"{prov} (stream): {r.text}"

    listing = canary_proxy.request("GET", "/v1/traces?limit=100").text
    db = Path(canary_proxy.config["tracing"]["path"])
    for prov, (_, _, key) in CANARIES.items():
        tr = canary_proxy.request("GET", f"/v1/traces/{request_ids[prov]}")
        assert tr.status == 200
        assert key not in tr.text, f"{prov}: canary in the trace JSON: {tr.text}"
        assert "[redacted]" in tr.text, f"{prov}: the trace lost the error text: {tr.text}"
        assert key not in listing, f"{prov}: canary in /v1/traces"
        logs = subprocess.run([MODELUX_BIN, "logs", "--db", str(db), "--trace", request_ids[prov]],
                              capture_output=True, text=True, timeout=30)
        assert logs.returncode == 0, logs.stderr
        assert key not in logs.stdout + logs.stderr, f"{prov}: canary in `modelux logs --trace`"
    # The SQLite file (and its WAL) as bytes.
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for prov, (_, _, key) in CANARIES.items():
        assert key.encode() not in raw, f"{prov}: canary in the trace database bytes"
    # Admin answers and the proxy's own log.
    for path in ["/v1/health", "/v1/configs", "/v1/budgets", "/metrics"]:
        text = canary_proxy.request("GET", path).text
        for prov, (_, _, key) in CANARIES.items():
            assert key not in text, f"{prov}: canary in {path}"
    log = canary_proxy.proc.log_path.read_text(errors="replace")
    for prov, (_, _, key) in CANARIES.items():
        assert key not in log, f"{prov}: canary in the proxy log"


def test_modelux_keys_are_scrubbed_by_value(start_proxy) -> None:
    """A modelux key without any known prefix is registered at start: wherever a client pastes
    it (here into a tag and the end-user id), the trace never stores it."""
    secret = "plain-modelux-secret-value-7"

    def edit(cfg: dict) -> None:
        cfg["server"]["api_keys"].append({"key": secret, "name": "plain", "project": "e2e", "role": "admin"})

    p = start_proxy(edit)
    r = p.request("POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES},
                  headers={"x-modelux-tags": f"note={secret}", "x-modelux-end-user": f"user {secret}"})
    assert r.status == 200, r.text
    tr = p.trace(r.headers["x-request-id"])
    text = str(tr)
    assert secret not in text, text
    assert tr["tags"]["note"] == "[redacted]", tr["tags"]
    assert "[redacted]" in tr["end_user"]


def test_canary_keys_never_leave_through_the_anthropic_ingress_nor_the_kept_store(canary_proxy: Proxy, mock) -> None:
    """Issue #14: the same canaries through POST /v1/messages (JSON, stream, and kept: the
    stored error and the kept-response database's bytes)."""
    mock.configure({up: {"error_status": 401, "echo_key": True} for (_, up, _) in CANARIES.values()})
    for prov, (model, upstream, key) in CANARIES.items():
        body = {"model": model, "max_tokens": 16, "messages": MESSAGES}
        r = canary_proxy.request("POST", "/v1/messages", body, headers={"x-modelux-keep": "1"})
        assert r.status >= 400 and r.json()["type"] == "error", r.text
        assert key not in r.text and "[redacted]" in r.text, f"{prov}: {r.text}"
        rid = r.headers["x-request-id"]
        r = canary_proxy.request("POST", "/v1/messages", {**body, "stream": True})
        assert r.status >= 400 and key not in r.text, f"{prov} (stream): {r.text}"
        import time
        deadline = time.monotonic() + 10
        while (k := canary_proxy.request("GET", f"/v1/kept/{rid}")).status in (202, 404):
            assert time.monotonic() < deadline, f"{prov}: the failed kept request was never stored"
            time.sleep(0.05)
        assert key not in k.text and k.headers["x-modelux-kept-status"] == "failed", f"{prov}: {k.text}"
    db = Path(canary_proxy.config["tracing"]["path"]).parent / "kept.db"
    raw = b"".join(p.read_bytes() for p in db.parent.glob("kept.db*"))
    assert raw, "no kept-response database next to the traces"
    for prov, (_, _, key) in CANARIES.items():
        assert key.encode() not in raw, f"{prov}: canary in the kept-response database bytes"


def test_webhook_secrets_are_scrubbed_by_value(mock, tmp_path: Path) -> None:
    """A webhook's signing secret is shown once, by POST /v1/webhooks. Pasted anywhere else (a
    tag, the end-user id, a change message) it never comes back: not in traces, versions, the
    audit log or its export, the metrics, the log; and after a restart (the secret is read back
    from the control store and registered with the scrubber again)."""
    import json

    from e2e_support import ServerProcess, base_config

    cfg = base_config(mock.url, tmp_path / "traces.db")
    cfg_path = tmp_path / "wh.json"
    cfg_path.write_text(json.dumps(cfg))

    def start() -> Proxy:
        return Proxy(ServerProcess(["serve", "--config", str(cfg_path), "--port", "0"], tmp_path / "wh.log"), cfg)

    p = start()
    try:
        r = p.request("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["key.created"]})
        assert r.status == 201, r.text
        secret = r.json()["secret"]
        assert secret.startswith("whsec_")
        r = p.request("PUT", "/v1/configs/fast", {"strategy": "single", "model": "gpt-4o"}, {"x-modelux-message": f"oops {secret}"})
        assert r.status == 200, r.text
        seen = [
            p.request("GET", "/v1/webhooks").text,
            p.request("GET", f"/v1/webhooks/{json.loads(p.request('GET', '/v1/webhooks').text)['data'][0]['id']}").text,
            p.request("GET", "/v1/configs/fast/versions").text,
            p.request("GET", "/v1/audit").text,
            p.request("GET", "/v1/audit?format=jsonl").text,
            p.request("GET", "/metrics").text,
        ]
        for text in seen:
            assert secret not in text
        assert "oops [redacted]" in seen[2]
        out = subprocess.run([MODELUX_BIN, "audit", "--db", str(tmp_path / "control.db"), "--jsonl"], capture_output=True, text=True)
        assert out.returncode == 0 and "config.update" in out.stdout and secret not in out.stdout
    finally:
        p.proc.stop()
    p = start()
    try:
        r = p.request("POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES},
                      headers={"x-modelux-tags": f"note={secret}", "x-modelux-end-user": f"user {secret}"})
        assert r.status == 200, r.text
        tr = p.trace(r.headers["x-request-id"])
        assert secret not in str(tr) and tr["tags"]["note"] == "[redacted]"
    finally:
        p.proc.stop()
    assert secret not in (tmp_path / "wh.log").read_text(errors="replace")
