"""Spend caps through the proxy (docs/budgets.md): a project over its cap gets a 429 whose
OpenAI error has code `budget_exceeded` (the official SDK raises RateLimitError), streaming
or not; `GET /v1/budgets` shows the ledger's spend, which matches the costs in the traces."""

from __future__ import annotations

import openai
import pytest

from e2e_support import MESSAGES, MOCK_TEXT

LIMIT_USD = 0.0005  # gpt-4o answers cost ~1.7e-4 here: a few fit, then the cap bites


def with_cap(cfg: dict) -> None:
    cfg["budgets"] = [{"name": "e2e-cap", "scope": {"project": "e2e"}, "window": "daily", "limit_usd": LIMIT_USD}]


def ledger(proxy, name: str) -> dict:
    r = proxy.request("GET", "/v1/budgets")
    assert r.status == 200, r.text
    body = r.json()
    found = [l for l in body["budgets"] if l["name"] == name] if "budgets" in body else []
    assert len(found) == 1, body
    return found[0]


def test_over_the_cap_is_429_budget_exceeded_and_the_spend_is_visible(start_proxy, mock):
    proxy = start_proxy(with_cap)
    client = proxy.client()
    served_ids, blocked = [], None
    for _ in range(20):
        try:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
        except openai.RateLimitError as e:
            blocked = e
            break
        assert raw.parse().choices[0].message.content == MOCK_TEXT
        served_ids.append(raw.headers["x-request-id"])
    assert blocked is not None, "the cap never blocked"
    assert served_ids, "the cap blocked before anything was served"
    assert blocked.status_code == 429
    assert blocked.code == "budget_exceeded", blocked.body
    assert "e2e-cap" in blocked.message
    # Blocked before any upstream call: the mock saw only the served requests.
    assert mock.requests_for("gpt-4o") == len(served_ids)

    # A stream is refused the same way, before anything is streamed.
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16, stream=True)
    assert exc.value.code == "budget_exceeded"

    spent = sum(proxy.trace(rid)["cost"]["total_usd"] for rid in served_ids)
    l = ledger(proxy, "e2e-cap")
    assert l["spent_usd"] == pytest.approx(spent, rel=1e-6)
    assert 0 < l["spent_usd"] <= LIMIT_USD
    assert l["requests"] == len(served_ids)
    assert l["limit_usd"] == pytest.approx(LIMIT_USD)


def test_budgets_endpoint_lists_the_configured_cap_before_any_spend(start_proxy):
    proxy = start_proxy(with_cap)
    l = ledger(proxy, "e2e-cap")
    assert l["spent_usd"] == 0
    assert l["requests"] == 0


def test_the_budget_429_is_modeluxs_own_and_the_sdk_does_not_retry_it(start_proxy, mock):
    """Issue #14 (5): the budget 429 was labelled provider "openai" and carried neither
    retry-after nor x-should-retry, so the OpenAI SDK retried it twice."""
    import httpx

    def tiny_cap(cfg: dict) -> None:
        cfg["budgets"] = [{"name": "tiny", "scope": {"project": "e2e"}, "window": "daily", "limit_usd": 0.000001}]

    proxy = start_proxy(tiny_cap)
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda req: sent.append(str(req.url))]})
    client = proxy.client(max_retries=2, http_client=http)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert len(sent) == 1, f"the SDK retried a budget refusal: {sent}"
    e = exc.value
    assert e.code == "budget_exceeded"
    assert "provider" not in e.body, e.body
    assert e.response.headers["x-should-retry"] == "false"
    assert int(e.response.headers["retry-after"]) >= 1
    assert mock.requests_for("gpt-4o") == 0


def test_spend_survives_a_restart_by_default_next_to_the_traces(start_proxy, mock):
    """Issue #14 (5): without budget_backend.sqlite_path, spend reset on restart."""
    proxy = start_proxy(with_cap)
    client = proxy.client()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    before = ledger(proxy, "e2e-cap")["spent_usd"]
    assert before > 0
    proxy.proc.stop()  # SIGTERM: drains and flushes the budgets
    trace_db = proxy.config["tracing"]["path"]
    again = start_proxy(lambda cfg: (with_cap(cfg), cfg["tracing"].update(path=trace_db)))
    assert ledger(again, "e2e-cap")["spent_usd"] == pytest.approx(before, rel=1e-9)


def test_budget_alerts_are_logged_and_posted_to_the_webhook(start_proxy, mock):
    """Issue #14 (6): alerts fired but reached no one (the Router had no on_alert)."""
    import http.server
    import json
    import threading
    import time

    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            n = int(self.headers.get("content-length", "0"))
            received.append(json.loads(self.rfile.read(n)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        def cap_with_alert(cfg: dict) -> None:
            with_cap(cfg)
            cfg["budgets"][0]["alerts"] = [20]
            cfg["server"]["alert_webhook_url"] = f"http://127.0.0.1:{hook.server_address[1]}/hook"

        proxy = start_proxy(cap_with_alert)
        client = proxy.client()
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)  # ~22 % of the cap
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert received, "the webhook got no alert"
        assert received[0]["type"] == "budget.alert"
        assert received[0]["data"]["budget"] == "e2e-cap"
        assert received[0]["data"]["threshold"] == 20
        lines = [json.loads(l) for l in proxy.proc.log_path.read_text().splitlines() if l.startswith("{")]
        alerts = [l for l in lines if l.get("event") == "budget.alert"]
        assert len(alerts) == 1, lines
        assert alerts[0]["budget"] == "e2e-cap" and alerts[0]["level"] == "warn"
    finally:
        hook.shutdown()


def test_a_budget_put_through_rest_is_live_without_a_restart(start_proxy, mock):
    """Issue #15: PUT/DELETE /v1/budgets/{name} used to apply only at the next start."""

    def loose(cfg: dict) -> None:
        cfg["budgets"] = [{"name": "e2e-cap", "scope": {"project": "e2e"}, "window": "daily", "limit_usd": 1.0}]

    proxy = start_proxy(loose)
    client = proxy.client()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    spent = ledger(proxy, "e2e-cap")["spent_usd"]
    assert spent > 0

    def put(limit: float) -> None:
        body = {"scope": {"project": "e2e"}, "window": "daily", "limit_usd": limit}
        r = proxy.request("PUT", "/v1/budgets/e2e-cap", body)
        assert r.status == 200, r.text

    # Tighter than what is already spent: the very next request is refused, no restart.
    put(spent / 2)
    assert proxy.request("GET", "/v1/budgets/e2e-cap").json()["live"] is True
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert exc.value.code == "budget_exceeded"
    assert "e2e-cap" in exc.value.message
    l = ledger(proxy, "e2e-cap")
    assert l["limit_usd"] == pytest.approx(spent / 2)
    assert l["spent_usd"] == pytest.approx(spent, rel=1e-9)  # same ledger: the spend is kept

    # Looser again: served, and the spend keeps adding up in the same ledger.
    put(1.0)
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16).choices[0].message.content == MOCK_TEXT
    assert ledger(proxy, "e2e-cap")["spent_usd"] > spent

    # Tight, then deleted: no budget blocks any more.
    put(spent / 2)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert proxy.request("DELETE", "/v1/budgets/e2e-cap").status == 200
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16).choices[0].message.content == MOCK_TEXT
    assert [l for l in proxy.request("GET", "/v1/budgets").json()["budgets"] if l["name"] == "e2e-cap"] == []
    assert mock.requests_for("gpt-4o") == 3  # the refused ones never reached the provider


def test_a_budget_put_on_a_proxy_started_without_budgets_is_live_and_persisted(start_proxy, mock):
    """Issue #15: an instance started without any budget ran no BudgetManager, so a budget
    added through the API applied only at its next start (`"live": false`)."""

    def none(cfg: dict) -> None:
        cfg["budgets"] = []
        cfg.pop("budget_backend", None)

    proxy = start_proxy(none)
    client = proxy.client()
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16).choices[0].message.content == MOCK_TEXT
    body = {"scope": {"project": "e2e"}, "window": "daily", "limit_usd": 1e-9}
    r = proxy.request("PUT", "/v1/budgets/late-cap", body)
    assert r.status == 200, r.text
    assert proxy.request("GET", "/v1/budgets/late-cap").json()["live"] is True
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert exc.value.code == "budget_exceeded" and "late-cap" in exc.value.message
    # Loosened: served, and its spend is kept in budgets.db next to the traces (a restart reads it).
    body["limit_usd"] = 5.0
    assert proxy.request("PUT", "/v1/budgets/late-cap", body).status == 200
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16).choices[0].message.content == MOCK_TEXT
    assert ledger(proxy, "late-cap")["spent_usd"] > 0
    assert mock.requests_for("gpt-4o") == 2
