"""Issue #15 (budgets over REST): POST /v1/budgets/{name}/reset.

A spend reset is live (the next GET shows the ledger at zero and requests are admitted against
the fresh window), versioned (action "reset") and audited (budget.reset); it survives a restart
(the persisted spend rows are gone, the spend after the reset stays), reaches a second
instance sharing the control store, and is refused for every non-admin role and bad input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from e2e_support import MESSAGES, Proxy, http_request

ADMIN = "mlx-reset-admin-000000000000001"
VIEWER = "mlx-reset-viewer-00000000000001"
PROJ = "mlx-reset-project-0000000000001"


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def setup(tmp: Path, name: str) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        cfg["server"]["api_keys"] = [
            {"key": ADMIN, "name": "ops", "role": "admin"},
            {"key": VIEWER, "name": "viewer", "project": "acme", "role": "viewer"},
            {"key": PROJ, "name": "proj", "project": "acme"},
        ]
        cfg["server"]["control"] = {"db": str(tmp / "control.db"), "reconcile_ms": 100}
        cfg["budget_backend"] = {"sqlite_path": str(tmp / f"{name}-budgets.db")}
        cfg["budgets"] = [{"name": "daily", "scope": {}, "window": "daily", "limit_usd": 1000}]
        cfg["tracing"]["path"] = str(tmp / f"{name}-traces.db")
    return edit


def req(p: Proxy, method: str, path: str, key: str | None = ADMIN, body: Any = None, headers: dict | None = None) -> Any:
    h = {"authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    return http_request(p.port, method, path, body, h)


def spent(p: Proxy) -> float:
    r = req(p, "GET", "/v1/budgets/daily")
    assert r.status == 200, r.text
    return sum(l["spent_usd"] for l in r.json()["ledgers"])


def chat(p: Proxy) -> None:
    r = req(p, "POST", "/v1/chat/completions", PROJ, {"model": "@fast", "messages": MESSAGES, "max_tokens": 16})
    assert r.status == 200, r.text


def test_a_spend_reset_is_live_versioned_audited_and_survives_a_restart(start_proxy: Any, tmp_path: Path) -> None:
    p = start_proxy(setup(tmp_path, "a"))
    for _ in range(3):
        chat(p)
    before = spent(p)
    assert before > 0
    r = req(p, "POST", "/v1/budgets/daily/reset", headers={"x-modelux-message": "refund issued", "if-match": '"1"'})
    assert r.status == 200, r.text
    v = r.json()
    assert v["version"] == 2 and v["action"] == "reset" and r.headers["etag"] == '"2"'
    assert spent(p) == 0
    versions = req(p, "GET", "/v1/budgets/daily/versions").json()["data"]
    assert [(x["version"], x["action"]) for x in versions] == [(2, "reset"), (1, "seed")]
    assert versions[0]["message"] == "refund issued" and versions[0]["author"]
    audit = req(p, "GET", "/v1/audit?object=budget:daily").json()["data"]
    assert any(a["action"] == "budget.reset" and a["detail"] == "refund issued" for a in audit), audit
    assert req(p, "GET", "/v1/audit/verify").json()["ok"] is True
    chat(p)
    after = spent(p)
    assert 0 < after < before
    # A restart reads the store's rows: the reset spend stays gone, the new spend stays.
    p.proc.stop()
    again = start_proxy(setup(tmp_path, "a"))
    assert spent(again) == pytest.approx(after, rel=1e-9)


def test_a_reset_reaches_another_instance_sharing_the_control_store(start_proxy: Any, tmp_path: Path) -> None:
    a = start_proxy(setup(tmp_path, "a"))
    b = start_proxy(setup(tmp_path, "b"))
    chat(a)
    chat(b)
    assert spent(a) > 0 and spent(b) > 0
    assert req(a, "POST", "/v1/budgets/daily/reset").status == 200
    assert spent(a) == 0
    wait_for(lambda: spent(b) == 0, "the second instance to apply the reset")
    chat(b)
    time.sleep(0.3)  # several reconcile rounds: the reset is applied once, not again
    assert spent(b) > 0


def test_a_definition_change_reaches_another_instance_sharing_the_control_store(start_proxy: Any, tmp_path: Path) -> None:
    a = start_proxy(setup(tmp_path, "a"))
    b = start_proxy(setup(tmp_path, "b"))
    chat(b)
    before = spent(b)
    assert before > 0
    # A cap below what b has spent: b refuses its next request once it reconciled, with its
    # spend kept (same name, scope and window: the same ledger).
    r = req(a, "PUT", "/v1/budgets/daily", body={"scope": {}, "window": "daily", "limit_usd": before / 2})
    assert r.status == 200, r.text
    wait_for(lambda: [l["limit_usd"] for l in req(b, "GET", "/v1/budgets/daily").json()["ledgers"]] == [before / 2],
             "the second instance to apply the new cap")
    assert spent(b) == pytest.approx(before, rel=1e-9)
    r = req(b, "POST", "/v1/chat/completions", PROJ, {"model": "@fast", "messages": MESSAGES, "max_tokens": 16})
    assert r.status == 429 and r.json()["error"]["code"] == "budget_exceeded", r.text
    # Deleted on a: b stops enforcing it.
    assert req(a, "DELETE", "/v1/budgets/daily").status == 200
    wait_for(lambda: req(b, "GET", "/v1/budgets").json()["budgets"] == [], "the second instance to drop the budget")
    chat(b)


def test_reset_refusals(start_proxy: Any, tmp_path: Path) -> None:
    p = start_proxy(setup(tmp_path, "a"))
    assert req(p, "POST", "/v1/budgets/daily/reset", None).status == 401
    for key in (VIEWER, PROJ):
        r = req(p, "POST", "/v1/budgets/daily/reset", key)
        assert r.status == 403 and r.json()["error"]["code"] == "permission_denied", r.text
    r = req(p, "POST", "/v1/budgets/nope/reset")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found", r.text
    r = req(p, "POST", "/v1/budgets/daily/reset", headers={"if-match": '"9"'})
    assert r.status == 409 and r.json()["error"]["code"] == "version_conflict", r.text
    r = req(p, "POST", "/v1/budgets/daily/reset", body={"limit_usd": 1})
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    # A definition added through the API runs at once, so its spend can be reset at once too.
    assert req(p, "PUT", "/v1/budgets/later", body={"scope": {}, "window": "daily", "limit_usd": 5}).status == 200
    assert req(p, "GET", "/v1/budgets/later").json()["live"] is True
    r = req(p, "POST", "/v1/budgets/later/reset")
    assert r.status == 200 and r.json()["action"] == "reset", r.text
    assert [x["action"] for x in req(p, "GET", "/v1/budgets/daily/versions").json()["data"]] == ["seed"]  # nothing recorded
    assert p.proc.alive()


def test_budget_forecast_to_the_end_of_the_window(start_proxy: Any, tmp_path: Path) -> None:
    p = start_proxy(setup(tmp_path, "a"))
    for _ in range(2):
        chat(p)
    r = req(p, "GET", "/v1/analytics/budget-forecast?budget=daily")
    assert r.status == 200, r.text
    f = r.json()
    assert f["object"] == "budget_forecast" and f["method"].startswith("linear")
    (l,) = f["ledgers"]
    assert l["spent_usd"] == pytest.approx(spent(p)) and l["spent_usd"] > 0 and l["limit_usd"] == 1000
    assert l["window_end"].endswith("T00:00:00.000000Z")  # a UTC daily window ends at midnight
    assert l["forecast_usd"] >= l["spent_usd"]
    assert l["forecast_percent"] == pytest.approx(100 * l["forecast_usd"] / 1000)
    assert (l["exhausted_at"] is None) == (l["forecast_usd"] < 1000)
    # Roles: a project key sees only its own project's ledgers (this budget is fleet-wide).
    assert req(p, "GET", "/v1/analytics/budget-forecast?budget=daily", None).status == 401
    assert req(p, "GET", "/v1/analytics/budget-forecast?budget=daily", PROJ).json()["ledgers"] == []
    assert req(p, "GET", "/v1/analytics/budget-forecast?budget=daily", VIEWER).json()["ledgers"] == []
    for q, status, code in [("budget=nope", 404, "not_found"), ("budget=Bad!", 400, "invalid_budget"), ("", 400, "invalid_budget"),
                            ("budget=daily&x=1", 400, "invalid_x")]:
        r = req(p, "GET", f"/v1/analytics/budget-forecast?{q}")
        assert r.status == status and r.json()["error"]["code"] == code, (q, r.text)
