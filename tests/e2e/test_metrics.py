"""GET /metrics is Prometheus text that a real parser reads (prometheus_client's), and its
per-provider/model/config series agree with the decision traces and the budget ledger."""

from __future__ import annotations

from collections import defaultdict

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e_support import MESSAGES

LIMIT_USD = 5.0


def scrape(proxy) -> dict[str, list[tuple[dict, float]]]:
    r = proxy.request("GET", "/metrics", auth=False)
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for fam in text_string_to_metric_families(r.text):  # raises on anything a scraper would refuse
        for s in fam.samples:
            samples[s.name].append((dict(s.labels), s.value))
    return samples


def value(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for l, v in samples.get(name, []) if all(l.get(k) == x for k, x in labels.items()))


def with_budget(cfg):
    cfg["budgets"] = [{"name": "metrics-cap", "scope": {"project": "e2e"}, "window": "daily", "limit_usd": LIMIT_USD}]


def test_series_match_traces_and_budgets(start_proxy, mock):
    proxy = start_proxy(with_budget)
    client = proxy.client()
    ids = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="@fast", messages=MESSAGES)
        ids.append(raw.headers["x-request-id"])
    # @production: the first target fails with 503, the second serves.
    mock.configure({"claude-haiku-4-5": {"error_status": 503, "error_rate": 1.0}})
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="@production", messages=MESSAGES)
        ids.append(raw.headers["x-request-id"])
    stream = client.chat.completions.with_raw_response.create(
        model="@fast", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    ids.append(stream.headers["x-request-id"])
    for _ in stream.parse():
        pass
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a b", "c"])
    ids.append(raw.headers["x-request-id"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model-xyz", messages=MESSAGES)

    traces = [proxy.trace(i) for i in ids]
    s = scrape(proxy)

    # Attempts by (config, provider, model, outcome), tokens and cost, as the traces say.
    want_attempts: dict[tuple, int] = defaultdict(int)
    want_in: dict[tuple, int] = defaultdict(int)
    want_out: dict[tuple, int] = defaultdict(int)
    want_cost: dict[tuple, float] = defaultdict(float)
    for t in traces:
        for a in t["attempts"]:
            key = (t["config"], a["provider"], a["model"])
            want_attempts[key + ("ok" if a["ok"] else a["outcome"],)] += 1
            want_in[key] += a["usage"]["prompt_tokens"]
            want_out[key] += a["usage"]["completion_tokens"]
            want_cost[key] += a["cost"]["total_usd"]
    assert any(k[:3] == ("@production", "anthropic", "claude-haiku-4-5") and k[3] != "ok" for k in want_attempts)
    for (config, provider, model, outcome), n in want_attempts.items():
        got = value(s, "modelux_upstream_attempts_total", config=config, provider=provider, model=model, outcome=outcome)
        assert got == n, (config, provider, model, outcome, s["modelux_upstream_attempts_total"])
        assert value(s, "modelux_upstream_attempt_duration_seconds_count", config=config, provider=provider, model=model) == sum(
            m for k, m in want_attempts.items() if k[:3] == (config, provider, model))
    for key, n in want_in.items():
        config, provider, model = key
        assert value(s, "modelux_tokens_total", config=config, provider=provider, model=model, type="input") == n
        assert value(s, "modelux_tokens_total", config=config, provider=provider, model=model, type="output") == want_out[key]
        assert value(s, "modelux_cost_usd_total", config=config, provider=provider, model=model) == pytest.approx(want_cost[key], rel=1e-9)
    # Time to first token is recorded for the streamed attempt.
    assert value(s, "modelux_upstream_ttft_seconds_count", config="@fast", provider="openai", model="gpt-4o-mini") >= 1

    # Requests per config by outcome; a request for an unknown model is one bounded label.
    assert value(s, "modelux_routed_requests_total", config="@fast", outcome="ok") == 4
    assert value(s, "modelux_routed_requests_total", config="@production", outcome="ok") == 2
    assert value(s, "modelux_routed_requests_total", config="text-embedding-3-small", outcome="ok") == 1
    assert value(s, "modelux_routed_requests_total", config="unknown", outcome="not_found") == 1
    assert not any(l.get("config") == "no-such-model-xyz" for l, _ in s["modelux_routed_requests_total"])
    assert value(s, "modelux_request_duration_seconds_count", config="@fast") == 4

    # Budget gauges equal the ledger.
    ledger = [l for l in proxy.request("GET", "/v1/budgets").json()["budgets"] if l["name"] == "metrics-cap"][0]
    assert value(s, "modelux_budget_limit_usd", budget="metrics-cap") == LIMIT_USD
    assert value(s, "modelux_budget_spent_usd", budget="metrics-cap") == pytest.approx(ledger["spent_usd"], rel=1e-9)
    assert ledger["spent_usd"] == pytest.approx(sum(t["cost"]["total_usd"] for t in traces), rel=1e-6)

    # Breaker state: one series per target and state, exactly one of them 1.
    targets = defaultdict(float)
    for l, v in s["modelux_breaker_state"]:
        targets[l["target"]] += v
    assert "openai/gpt-4o-mini" in targets
    assert all(v == 1 for v in targets.values())

    # The trace queue and the server's own counters are still there.
    for name in ["modelux_traces_queued", "modelux_traces_dropped_total", "modelux_traces_submitted_total",
                 "modelux_accept_backoffs_total", "modelux_accept_refused_total", "modelux_body_budget_refused_total",
                 "modelux_connections_open", "modelux_requests_in_flight", "modelux_draining", "modelux_requests_total"]:
        assert name in s, name
    assert value(s, "modelux_traces_submitted_total") >= len(ids)
    assert value(s, "modelux_requests_total") >= len(ids) + 1


def test_counters_only_grow_between_scrapes(shared_proxy):
    client = shared_proxy.client()
    client.chat.completions.create(model="@fast", messages=MESSAGES)
    a = scrape(shared_proxy)
    client.chat.completions.create(model="@fast", messages=MESSAGES)
    b = scrape(shared_proxy)
    before = value(a, "modelux_upstream_attempts_total", config="@fast", outcome="ok")
    assert value(b, "modelux_upstream_attempts_total", config="@fast", outcome="ok") == before + 1
    # Histogram buckets are cumulative and end in +Inf = _count.
    buckets = [(l["le"], v) for l, v in b["modelux_upstream_attempt_duration_seconds_bucket"]
               if l.get("config") == "@fast" and l.get("model") == "gpt-4o-mini"]
    assert buckets[-1][0] == "+Inf"
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1][1] == value(b, "modelux_upstream_attempt_duration_seconds_count", config="@fast", model="gpt-4o-mini")
