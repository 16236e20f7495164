"""Issue #11 (3, 4): roles on modelux API keys, tenant isolation, budget spoofing.

An access matrix: every endpoint × (no key, wrong key, viewer of alpha, project alpha,
project beta, admin) → the status the proxy must answer, table-driven and printed. Data-plane
calls go through the official OpenAI SDK. Before roles, every data-plane key could rewrite
routing (PUT /v1/configs) and read every project's traces and budgets, and a key without a
project could charge any project through x-modelux-project.
"""

from __future__ import annotations

from typing import Any, Callable

import anthropic
import openai
import pytest

from e2e_support import MESSAGES, Proxy, http_request

ADMIN = "mlx-access-admin-000000000001"
VIEWER_A = "mlx-access-viewer-alpha-00001"
PROJ_A = "mlx-access-project-alpha-0001"
PROJ_B = "mlx-access-project-beta-00001"
NOPROJ = "mlx-access-project-none-00001"
CALLERS = {
    "no key": None,
    "wrong key": "mlx-this-key-does-not-exist-0",
    "viewer A": VIEWER_A,
    "project A": PROJ_A,
    "project B": PROJ_B,
    "admin": ADMIN,
}


def roles_config(cfg: dict) -> None:
    cfg["server"]["api_keys"] = [
        {"key": ADMIN, "name": "admin", "role": "admin"},
        {"key": VIEWER_A, "name": "viewer-a", "project": "alpha", "role": "viewer"},
        {"key": PROJ_A, "name": "proj-a", "project": "alpha"},
        {"key": PROJ_B, "name": "proj-b", "project": "beta", "role": "project"},
        {"key": NOPROJ, "name": "no-project", "role": "project"},
    ]
    cfg["budgets"] = [{"name": "per-project", "scope": {"project": "*"}, "window": "daily", "limit_usd": 100}]


def auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def sdk_chat(proxy: Proxy, key: str | None, headers: dict | None = None) -> int:
    """Status of one chat completion through the official SDK (200 or the APIStatusError's)."""
    h: dict = dict(headers or {})
    if key is None:
        h["Authorization"] = openai.Omit()  # the SDK insists on a key; send none at all
    c = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key or "unused", max_retries=0, timeout=20.0)
    try:
        c.chat.completions.create(model="@fast", messages=MESSAGES, extra_headers=h)
        return 200
    except openai.APIStatusError as e:
        return e.status_code


def sdk_messages(proxy: Proxy, key: str | None) -> int:
    """Status of one /v1/messages call through the official Anthropic SDK (x-api-key)."""
    if key is None:  # the SDK insists on a key; send none at all
        return http_request(proxy.port, "POST", "/v1/messages", {"model": "@fast", "max_tokens": 16, "messages": MESSAGES}).status
    c = anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0, timeout=20.0)
    try:
        c.messages.create(model="@fast", max_tokens=16, messages=MESSAGES)
        return 200
    except anthropic.APIStatusError as e:
        assert e.body["type"] == "error", e.body  # Anthropic's error shape for every refusal
        return e.status_code


def kept_alpha_id(proxy: Proxy) -> str:
    """A kept answer made by project A's key (stored on the worker pool after the reply)."""
    import time
    r = http_request(proxy.port, "POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES},
                     {**auth(PROJ_A), "x-modelux-keep": "1"})
    assert r.status == 200, r.text
    rid = r.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while http_request(proxy.port, "GET", f"/v1/kept/{rid}", None, auth(PROJ_A)).status != 200:
        assert time.monotonic() < deadline, "the kept answer was never stored"
        time.sleep(0.05)
    return rid


@pytest.fixture(scope="module")
def access_proxy(mock: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from e2e_support import base_config, start_proxy_process

    tmp = tmp_path_factory.mktemp("access")
    cfg = base_config(mock.url, tmp / "traces.db")
    roles_config(cfg)
    p = start_proxy_process(cfg, tmp, "access")
    yield p
    alive = p.proc.alive()
    p.proc.stop()
    assert alive, "the proxy died"


def alpha_trace_id(proxy: Proxy) -> str:
    r = http_request(proxy.port, "POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES}, auth(PROJ_A))
    assert r.status == 200, r.text
    return r.headers["x-request-id"]


def sdk_embed(proxy: Proxy, key: str | None) -> int:
    """Status of one embeddings call through the official SDK (200 or the APIStatusError's)."""
    h: dict = {}
    if key is None:
        h["Authorization"] = openai.Omit()
    c = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key or "unused", max_retries=0, timeout=20.0)
    try:
        c.embeddings.create(model="text-embedding-3-small", input="hello", extra_headers=h)
        return 200
    except openai.APIStatusError as e:
        return e.status_code


# endpoint → (call(proxy, key, ctx) → status, expected per caller in CALLERS order)
Call = Callable[[Proxy, str | None, dict], int]


def raw(method: str, path: str, body: Any = None, headers: dict | None = None) -> Call:
    def call(p: Proxy, key: str | None, ctx: dict) -> int:
        return http_request(p.port, method, path.format(**ctx), body, {**auth(key), **(headers or {})}).status

    return call


MATRIX: list[tuple[str, Call, list[int]]] = [
    #                                                              none wrong viewer projA projB admin
    ("GET /healthz", raw("GET", "/healthz"), [200, 200, 200, 200, 200, 200]),
    ("GET /readyz", raw("GET", "/readyz"), [200, 200, 200, 200, 200, 200]),
    ("GET /metrics", raw("GET", "/metrics"), [200, 200, 200, 200, 200, 200]),
    ("POST /v1/chat/completions (SDK)", lambda p, k, c: sdk_chat(p, k), [401, 401, 403, 200, 200, 200]),
    ("POST chat, x-modelux-project: beta (SDK)", lambda p, k, c: sdk_chat(p, k, {"x-modelux-project": "beta"}),
     [401, 401, 403, 403, 200, 200]),
    ("POST /v1/messages (Anthropic SDK)", lambda p, k, c: sdk_messages(p, k), [401, 401, 403, 200, 200, 200]),
    ("POST /v1/messages (Bearer)", raw("POST", "/v1/messages", {"model": "@fast", "max_tokens": 8, "messages": MESSAGES}),
     [401, 401, 403, 200, 200, 200]),
    ("POST /v1/messages/count_tokens", raw("POST", "/v1/messages/count_tokens", {"model": "@fast", "messages": MESSAGES}),
     [401, 401, 403, 200, 200, 200]),
    ("GET /v1/kept/{alpha_kept}", raw("GET", "/v1/kept/{alpha_kept}"), [401, 401, 200, 200, 404, 200]),
    ("GET /v1/kept/unknown-request", raw("GET", "/v1/kept/unknown-request"), [401, 401, 404, 404, 404, 404]),
    ("POST /v1/embeddings (SDK)", lambda p, k, c: sdk_embed(p, k), [401, 401, 403, 200, 200, 200]),
    ("GET /v1/models", raw("GET", "/v1/models"), [401, 401, 200, 200, 200, 200]),
    ("GET /v1/configs", raw("GET", "/v1/configs"), [401, 401, 200, 200, 200, 200]),
    ("GET /v1/configs/fast", raw("GET", "/v1/configs/fast"), [401, 401, 200, 200, 200, 200]),
    ("PUT /v1/configs/fast2", raw("PUT", "/v1/configs/fast2", {"strategy": "single", "model": "gpt-4o-mini"}),
     [401, 401, 403, 403, 403, 200]),
    ("GET /v1/traces", raw("GET", "/v1/traces"), [401, 401, 200, 200, 200, 200]),
    ("GET /v1/traces/{alpha_trace}", raw("GET", "/v1/traces/{alpha_trace}"), [401, 401, 200, 200, 403, 200]),
    ("GET /v1/budgets", raw("GET", "/v1/budgets"), [401, 401, 200, 200, 200, 200]),
    ("GET /v1/health", raw("GET", "/v1/health"), [401, 401, 200, 200, 200, 200]),
    ("POST /v1/keys", raw("POST", "/v1/keys", {"project": "gamma"}), [401, 401, 403, 403, 403, 201]),
    ("GET /v1/keys", raw("GET", "/v1/keys"), [401, 401, 403, 403, 403, 200]),
    ("DELETE /v1/keys/key_nope", raw("DELETE", "/v1/keys/key_nope"), [401, 401, 403, 403, 403, 404]),
    # Control plane (issue #15): config versions are read like configs; every write, budget
    # definitions, webhooks and the audit log are admin-only.
    ("GET /v1/configs/fast/versions", raw("GET", "/v1/configs/fast/versions"), [401, 401, 200, 200, 200, 200]),
    ("GET /v1/configs/fast/versions/1", raw("GET", "/v1/configs/fast/versions/1"), [401, 401, 200, 200, 200, 200]),
    ("GET /v1/configs/fast/diff", raw("GET", "/v1/configs/fast/diff?from=1"), [401, 401, 200, 200, 200, 200]),
    ("POST /v1/configs/fast/rollback", raw("POST", "/v1/configs/fast/rollback", {"version": 1}), [401, 401, 403, 403, 403, 200]),
    ("POST /v1/configs/fast/promote", raw("POST", "/v1/configs/fast/promote", {"to": "fast3"}), [401, 401, 403, 403, 403, 200]),
    ("GET /v1/budgets/per-project", raw("GET", "/v1/budgets/per-project"), [401, 401, 403, 403, 403, 200]),
    ("PUT /v1/budgets/b2", raw("PUT", "/v1/budgets/b2", {"window": "daily", "limit_usd": 1}), [401, 401, 403, 403, 403, 200]),
    ("GET /v1/budgets/per-project/versions", raw("GET", "/v1/budgets/per-project/versions"), [401, 401, 403, 403, 403, 200]),
    ("DELETE /v1/budgets/nope", raw("DELETE", "/v1/budgets/nope"), [401, 401, 403, 403, 403, 404]),
    ("GET /v1/webhooks", raw("GET", "/v1/webhooks"), [401, 401, 403, 403, 403, 200]),
    ("POST /v1/webhooks", raw("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/h"}), [401, 401, 403, 403, 403, 201]),
    ("GET /v1/webhooks/wh_nope", raw("GET", "/v1/webhooks/wh_nope"), [401, 401, 403, 403, 403, 404]),
    ("PUT /v1/webhooks/wh_nope", raw("PUT", "/v1/webhooks/wh_nope", {"url": "http://127.0.0.1:9/h"}), [401, 401, 403, 403, 403, 404]),
    ("DELETE /v1/webhooks/wh_nope", raw("DELETE", "/v1/webhooks/wh_nope"), [401, 401, 403, 403, 403, 404]),
    ("GET /v1/webhooks/wh_nope/deliveries", raw("GET", "/v1/webhooks/wh_nope/deliveries"), [401, 401, 403, 403, 403, 404]),
    ("POST .../deliveries/msg_nope/redeliver", raw("POST", "/v1/webhooks/wh_nope/deliveries/msg_nope/redeliver"),
     [401, 401, 403, 403, 403, 404]),
    ("GET /v1/webhooks/wh_nope/versions", raw("GET", "/v1/webhooks/wh_nope/versions"), [401, 401, 403, 403, 403, 404]),
    ("GET /v1/keys/key_nope/versions", raw("GET", "/v1/keys/key_nope/versions"), [401, 401, 403, 403, 403, 404]),
    ("GET /v1/audit", raw("GET", "/v1/audit"), [401, 401, 403, 403, 403, 200]),
    ("GET /v1/audit/verify", raw("GET", "/v1/audit/verify"), [401, 401, 403, 403, 403, 200]),
    ("GET /openapi.json", raw("GET", "/openapi.json"), [200, 200, 200, 200, 200, 200]),
    # The console (issue #18): its page is open (it holds no data); whoami takes any key;
    # replay is admin-only (the admin's empty body is then a 400).
    ("GET / (console)", raw("GET", "/"), [200, 200, 200, 200, 200, 200]),
    ("GET /v1/whoami", raw("GET", "/v1/whoami"), [401, 401, 200, 200, 200, 200]),
    ("POST /v1/configs/fast/replay", raw("POST", "/v1/configs/fast/replay", {}), [401, 401, 403, 403, 403, 400]),
    ("GET /v1/nope (unknown path)", raw("GET", "/v1/nope"), [404, 404, 404, 404, 404, 404]),
    ("DELETE /v1/models (wrong method)", raw("DELETE", "/v1/models"), [405, 405, 405, 405, 405, 405]),
]


def test_access_matrix(access_proxy: Proxy) -> None:
    ctx = {"alpha_trace": alpha_trace_id(access_proxy), "alpha_kept": kept_alpha_id(access_proxy)}
    names = list(CALLERS)
    got: list[tuple[str, list[int], list[int]]] = []
    for label, call, expected in MATRIX:
        got.append((label, [call(access_proxy, CALLERS[n], ctx) for n in names], expected))
    width = max(len(r[0]) for r in got)
    lines = [f"{'endpoint':<{width}} | " + " | ".join(f"{n:>9}" for n in names)]
    for label, statuses, expected in got:
        cells = [f"{s:>9}" if s == e else f"{str(s) + '!=' + str(e):>9}" for s, e in zip(statuses, expected)]
        lines.append(f"{label:<{width}} | " + " | ".join(cells))
    print("\naccess matrix (status per caller):\n" + "\n".join(lines))
    bad = [(label, s, e) for label, s, e in got if s != e]
    assert not bad, "unexpected statuses:\n" + "\n".join(lines)


def test_errors_are_in_openai_shape(access_proxy: Proxy) -> None:
    for key, path, method, status in [(None, "/v1/models", "GET", 401), (PROJ_A, "/v1/configs/x", "PUT", 403),
                                      (ADMIN, "/v1/nope", "GET", 404), (ADMIN, "/v1/models", "POST", 405)]:
        r = http_request(access_proxy.port, method, path, {} if method != "GET" else None, auth(key))
        assert r.status == status, r.text
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"] and "type" in err and "code" in err, r.text
    r = http_request(access_proxy.port, "POST", "/v1/models", b"{}", auth(ADMIN))
    assert r.headers["allow"] == "GET"


def test_listings_are_filtered_to_the_callers_project(access_proxy: Proxy) -> None:
    alpha_trace_id(access_proxy)
    r = http_request(access_proxy.port, "POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES}, auth(PROJ_B))
    assert r.status == 200, r.text
    projects = lambda key: {t["project"] for t in http_request(access_proxy.port, "GET", "/v1/traces?limit=200", None, auth(key)).json()["data"]}
    assert projects(PROJ_A) == {"alpha"}
    assert projects(VIEWER_A) == {"alpha"}
    assert projects(PROJ_B) == {"beta"}
    assert {"alpha", "beta"} <= projects(ADMIN)

    scopes = lambda key: {b["scope"] for b in http_request(access_proxy.port, "GET", "/v1/budgets", None, auth(key)).json()["budgets"]}
    assert scopes(PROJ_A) == {"project:alpha"}
    assert scopes(PROJ_B) == {"project:beta"}
    assert {"project:alpha", "project:beta"} <= scopes(ADMIN)
    # A non-admin snapshot carries no fleet-wide sections either.
    assert set(http_request(access_proxy.port, "GET", "/v1/budgets", None, auth(PROJ_A)).json()) == {"budgets"}


def test_a_key_without_project_cannot_charge_another_project(access_proxy: Proxy) -> None:
    """Budget spoofing: x-modelux-project from a non-admin key is refused, so a key without a
    project cannot charge (or trace under) someone else's project."""
    assert sdk_chat(access_proxy, NOPROJ, {"x-modelux-project": "alpha"}) == 403
    assert sdk_chat(access_proxy, NOPROJ) == 200
    # Its own project (none) is what it is charged to; an admin may pick one.
    r = http_request(access_proxy.port, "POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES},
                     {**auth(ADMIN), "x-modelux-project": "gamma"})
    assert r.status == 200
    tr = http_request(access_proxy.port, "GET", f"/v1/traces/{r.headers['x-request-id']}", None, auth(ADMIN)).json()
    assert tr["project"] == "gamma"
