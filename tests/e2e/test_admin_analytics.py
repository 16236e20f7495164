"""Issue #15 (REST admin API): cursor-paginated traces and the analytics endpoints.

GET /v1/traces pages newest first with an opaque cursor that stays valid while traces are
written; GET /v1/analytics/{spend,latency,errors,failovers,forecast} answer from the trace
store, each checked against the traces themselves (sums recomputed here from /v1/traces), for
every role (admin, project, viewer, a key without a project, no key) and for bad input.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest

from e2e_support import MESSAGES, Mock, Proxy, http_request

ADMIN = "mlx-analytics-admin-00000000001"
VIEWER_A = "mlx-analytics-viewer-alpha-0001"
PROJ_A = "mlx-analytics-project-alpha-001"
PROJ_B = "mlx-analytics-project-beta-0001"
NOPROJ = "mlx-analytics-project-none-0001"


def roles(cfg: dict) -> None:
    cfg["server"]["api_keys"] = [
        {"key": ADMIN, "name": "admin", "role": "admin"},
        {"key": VIEWER_A, "name": "viewer-a", "project": "alpha", "role": "viewer"},
        {"key": PROJ_A, "name": "proj-a", "project": "alpha"},
        {"key": PROJ_B, "name": "proj-b", "project": "beta", "role": "project"},
        {"key": NOPROJ, "name": "no-project", "role": "project"},
    ]


def get(p: Proxy, path: str, key: str | None = ADMIN) -> Any:
    h = {"authorization": f"Bearer {key}"} if key else {}
    return http_request(p.port, "GET", path, None, h)


def chat(p: Proxy, key: str, model: str = "@fast", headers: dict | None = None) -> str:
    h = {"authorization": f"Bearer {key}", **(headers or {})}
    r = http_request(p.port, "POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES, "max_tokens": 16}, h)
    assert r.status == 200, r.text
    return r.headers["x-request-id"]


def all_traces(p: Proxy, query: str = "", key: str = ADMIN) -> list[dict]:
    out, cursor = [], None
    while True:
        q = query + (f"&cursor={cursor}" if cursor else "")
        r = get(p, f"/v1/traces?limit=1000{q}", key)
        assert r.status == 200, r.text
        out += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status == status, (r.status, r.text)
    e = r.json()["error"]
    assert e["code"] == code and e["message"], e


@pytest.fixture
def traced(start_proxy: Any, mock: Mock) -> Proxy:
    """A proxy with traffic: alpha 4 requests (2 tagged team=x), beta 2, plus one failover."""
    p = start_proxy(roles)
    for i in range(4):
        chat(p, PROJ_A, headers={"x-modelux-tags": "team=x" if i % 2 else "team=y", "x-modelux-end-user": f"u{i % 2}"})
    for _ in range(2):
        chat(p, PROJ_B)
    mock.configure({"claude-haiku-4-5": {"error_status": 429, "error_rate": 1.0}})
    chat(p, ADMIN, "@production", {"x-modelux-project": "beta"})  # claude 429 → gpt-4o-mini serves it
    mock.reset()
    return p


def test_traces_pages_with_a_cursor_that_survives_concurrent_inserts(traced: Proxy) -> None:
    p = traced
    everything = [t["request_id"] for t in all_traces(p)]
    assert len(everything) == 7 and len(set(everything)) == 7
    r = get(p, "/v1/traces?limit=3")
    page1 = r.json()
    assert page1["has_more"] is True and isinstance(page1["next_cursor"], str)
    assert [t["request_id"] for t in page1["data"]] == everything[:3]
    # Traffic between pages: newer traces never shift the next page.
    new_ids = [chat(p, PROJ_A), chat(p, PROJ_B)]
    seen = [t["request_id"] for t in page1["data"]]
    cursor = page1["next_cursor"]
    while cursor:
        r = get(p, f"/v1/traces?limit=3&cursor={cursor}")
        assert r.status == 200, r.text
        seen += [t["request_id"] for t in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        assert (cursor is None) == (r.json()["has_more"] is False)
    assert seen == everything  # every original trace exactly once, in order; none of the new ones
    # A fresh listing starts with the new traces.
    fresh = [t["request_id"] for t in get(p, "/v1/traces?limit=2").json()["data"]]
    assert sorted(fresh) == sorted(new_ids)


def test_trace_filters_and_pages_agree(traced: Proxy) -> None:
    p = traced
    alpha_x = all_traces(p, "&project=alpha&tag=team%3Dx")
    assert len(alpha_x) == 2 and all(t["project"] == "alpha" and t["tags"] == {"team": "x"} for t in alpha_x)
    errors = all_traces(p, "&status=error")
    assert errors == []
    by_provider = all_traces(p, "&provider=anthropic")  # the failed attempt of the failover
    assert len(by_provider) == 1 and by_provider[0]["project"] == "beta"
    # Page through alpha two at a time.
    r = get(p, "/v1/traces?limit=2&project=alpha")
    ids = [t["request_id"] for t in r.json()["data"]]
    r2 = get(p, f"/v1/traces?limit=2&project=alpha&cursor={r.json()['next_cursor']}")
    ids += [t["request_id"] for t in r2.json()["data"]]
    assert r2.json()["next_cursor"] is None and len(set(ids)) == 4


def test_trace_cursor_bad_input(traced: Proxy) -> None:
    p = traced
    for bad in ["zz", "abc", "00", "76317c317c", "%ff", ""]:
        assert_error(get(p, f"/v1/traces?cursor={bad}"), 400, "invalid_cursor")
    cur = get(p, "/v1/traces?limit=1").json()["next_cursor"]
    # A cursor made for other filters is refused, not silently applied to them.
    assert_error(get(p, f"/v1/traces?limit=1&project=alpha&cursor={cur}"), 400, "invalid_cursor")
    tampered = cur[:-2] + ("00" if cur[-2:] != "00" else "11")
    assert_error(get(p, f"/v1/traces?limit=1&cursor={tampered}"), 400, "invalid_cursor")


def test_trace_listing_by_role(traced: Proxy) -> None:
    p = traced
    assert get(p, "/v1/traces", None).status == 401
    for key, project in [(VIEWER_A, "alpha"), (PROJ_A, "alpha"), (PROJ_B, "beta")]:
        rows = all_traces(p, "", key)
        assert rows and {t["project"] for t in rows} == {project}
        # Asking for another project still lists only one's own.
        assert {t["project"] for t in all_traces(p, "&project=gamma", key)} <= {project}
    assert {t["project"] for t in all_traces(p)} == {"alpha", "beta"}


def spend_of(traces: list[dict]) -> float:
    return sum(t["cost"]["total_usd"] for t in traces)


def test_spend_by_dimension_matches_the_traces(traced: Proxy) -> None:
    p = traced
    traces = all_traces(p)
    total = spend_of(traces)
    assert total > 0
    for by in ["model", "provider", "project", "config", "user", "tag"]:
        r = get(p, f"/v1/analytics/spend?by={by}&since=1h")
        assert r.status == 200, r.text
        rep = r.json()
        assert rep["object"] == "spend_report" and rep["by"] == by and rep["bucket_s"] is None and "buckets" not in rep
        assert rep["total"]["requests"] == 7
        assert rep["total"]["total_usd"] == pytest.approx(total, rel=1e-9, abs=1e-12)
        if by in ("project", "config", "user"):
            assert sum(row["total_usd"] for row in rep["rows"]) == pytest.approx(total, rel=1e-9, abs=1e-12)
    proj = {row["key"]: row for row in get(p, "/v1/analytics/spend?by=project&since=1h").json()["rows"]}
    assert proj["alpha"]["requests"] == 4 and proj["beta"]["requests"] == 3
    assert proj["alpha"]["total_usd"] == pytest.approx(spend_of([t for t in traces if t["project"] == "alpha"]))
    tags = {row["key"]: row["requests"] for row in get(p, "/v1/analytics/spend?by=tag&since=1h").json()["rows"]}
    assert tags == {"team=x": 2, "team=y": 2}
    configs = {row["key"]: row["requests"] for row in get(p, "/v1/analytics/spend?by=config&since=1h").json()["rows"]}
    assert configs == {"@fast": 6, "@production": 1}


def test_spend_in_time_buckets(traced: Proxy) -> None:
    p = traced
    now = int(time.time())
    r = get(p, f"/v1/analytics/spend?by=model&bucket=1h&since={now - 3 * 3600}&until={now + 60}")
    assert r.status == 200, r.text
    rep = r.json()
    assert rep["bucket_s"] == 3600 and rep["buckets"]
    assert sum(b["total"]["requests"] for b in rep["buckets"]) == 7
    assert sum(b["total"]["total_usd"] for b in rep["buckets"]) == pytest.approx(rep["total"]["total_usd"])
    starts = [b["start"] for b in rep["buckets"]]
    assert starts == sorted(starts)
    # Seconds as a bucket, and a 1-minute bucket over the last hour.
    assert get(p, "/v1/analytics/spend?bucket=60&since=1h").json()["bucket_s"] == 60


def test_latency_errors_failovers_and_forecast(traced: Proxy) -> None:
    p = traced
    lat = get(p, "/v1/analytics/latency?by=model&since=1h").json()
    rows = {r["key"]: r for r in lat["rows"]}
    assert rows["gpt-4o-mini"]["count"] == 7  # every request was served by gpt-4o-mini
    r = rows["gpt-4o-mini"]
    assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    assert r["ttft_p50_ms"] <= r["ttft_p95_ms"] <= r["ttft_p99_ms"]
    assert {x["key"] for x in get(p, "/v1/analytics/latency?by=provider&since=1h").json()["rows"]} == {"openai"}

    errs = get(p, "/v1/analytics/errors?since=1h").json()["groups"]
    assert len(errs) == 1 and errs[0]["error_class"] == "rate_limited" and errs[0]["provider"] == "anthropic"
    assert errs[0]["model"] == "claude-haiku-4-5" and errs[0]["count"] == 1 and "429" in errs[0]["sample_message"]
    assert get(p, "/v1/analytics/errors?since=1h&project=alpha").json()["groups"] == []

    fo = get(p, "/v1/analytics/failovers?since=1h").json()
    assert (fo["requests"], fo["failed_over"], fo["rescued"], fo["failed"]) == (7, 1, 1, 0)
    assert fo["failover_rate"] == pytest.approx(1 / 7)

    fc = get(p, "/v1/analytics/forecast?lookback_days=7").json()
    assert fc["object"] == "spend_forecast" and fc["method"].startswith("linear")
    total = get(p, "/v1/analytics/spend?since=40d").json()["total"]["total_usd"]
    assert fc["month_to_date_usd"] == pytest.approx(total)
    assert fc["forecast_usd"] == pytest.approx(fc["month_to_date_usd"] + fc["daily_rate_usd"] * fc["days_remaining"])


def test_analytics_by_role(traced: Proxy) -> None:
    p = traced
    endpoints = ["spend?by=project", "latency", "errors", "failovers", "forecast"]
    for ep in endpoints:
        assert_error(get(p, f"/v1/analytics/{ep}", None), 401, "invalid_api_key")
        assert_error(get(p, f"/v1/analytics/{ep}", "mlx-no-such-key-000000000000"), 401, "invalid_api_key")
        assert_error(get(p, f"/v1/analytics/{ep}", NOPROJ), 403, "permission_denied")
        for key in (VIEWER_A, PROJ_A):
            r = get(p, f"/v1/analytics/{ep}", key)
            assert r.status == 200, (ep, r.text)
            assert r.json()["project"] == "alpha"
            sep = "&" if "?" in ep else "?"
            assert_error(get(p, f"/v1/analytics/{ep}{sep}project=beta", key), 403, "project_not_allowed")
            assert get(p, f"/v1/analytics/{ep}{sep}project=alpha", key).status == 200
        assert get(p, f"/v1/analytics/{ep}", ADMIN).json()["project"] is None
    # What a project key sees is its own project's numbers, equal to the admin's filtered view.
    mine = get(p, "/v1/analytics/spend?by=project&since=1h", PROJ_B).json()
    assert [r["key"] for r in mine["rows"]] == ["beta"] and mine["total"]["requests"] == 3
    assert mine["total"] == get(p, "/v1/analytics/spend?by=project&since=1h&project=beta").json()["total"]
    assert get(p, "/v1/analytics/failovers?since=1h", PROJ_A).json()["failed_over"] == 0


BAD = [
    ("spend?by=nope", "by"),
    ("spend?by=", "by"),
    ("latency?by=project", "by"),
    ("spend?bucket=0", "bucket"),
    ("spend?bucket=abc", "bucket"),
    ("spend?bucket=1x", "bucket"),
    ("spend?bucket=-5", "bucket"),
    ("spend?bucket=1s&since=30d", "bucket"),
    ("spend?since=yesterday", "since"),
    ("spend?until=2026-13-01T00:00:00Z", "until"),
    ("spend?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
    ("errors?bucket=1h", "bucket"),
    ("failovers?by=model", "by"),
    ("forecast?lookback_days=0", "lookback_days"),
    ("forecast?lookback_days=32", "lookback_days"),
    ("forecast?since=1d", "since"),
    ("spend?project=", "project"),
    ("spend?%zz=1", "%zz"),
]


def test_analytics_bad_input(start_proxy: Any) -> None:
    p = start_proxy(roles)
    for query, param in BAD:
        r = get(p, f"/v1/analytics/{query}")
        assert r.status == 400, (query, r.text)
        e = r.json()["error"]
        assert e["type"] and e["message"] and e["param"] == param and e["code"] == f"invalid_{param}", (query, e)
    assert p.proc.alive()
