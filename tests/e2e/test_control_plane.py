"""Issue #15 (control plane): versioned configs with diff, rollback and promote (If-Match / 409),
the store surviving restarts (and --reseed), the hash-chained audit log (query, JSONL, verify,
and tampering with the SQLite file detected), signed webhooks (Standard Webhooks, checked with
the `standardwebhooks` reference package), retries with backoff, the delivery log and manual
redelivery, events from keys, budgets, breakers and spend, and the CLI over REST and the file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from standardwebhooks.webhooks import Webhook

from e2e_support import API_KEY, MESSAGES, MODELUX_BIN, REPO, Proxy, ServerProcess, base_config, http_request


def python_verifier() -> Any:
    """bindings/python/modelux/webhooks.py, loaded by path (pure Python: no native module needed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("modelux_webhooks", REPO / "bindings" / "python" / "modelux" / "webhooks.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

FAST_CONTROL = {"reconcile_ms": 100, "webhook_retry_base_ms": 100, "webhook_timeout_ms": 2000}


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Receiver:
    """A webhook endpoint on 127.0.0.1: records every request; answers `fail_first` 500s first."""

    def __init__(self, fail_first: int = 0):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode()})
                    status = 500 if len(outer.requests) <= outer.fail_first else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, kind: str | None = None) -> list[dict]:
        with self.lock:
            out = [json.loads(r["body"]) | {"_headers": r["headers"], "_raw": r["body"]} for r in self.requests]
        return [e for e in out if kind is None or e["type"] == kind]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def control_config(mock: Any, tmp: Path, **control: Any) -> dict:
    cfg = base_config(mock.url, tmp / "traces.db")
    cfg["server"]["control"] = {**FAST_CONTROL, **control}
    cfg["routing"]["staging"] = {"strategy": "single", "model": "gemini-2.5-flash", "timeout_ms": 2000}
    return cfg


def start(cfg: dict, tmp: Path, name: str, *extra: str) -> Proxy:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return Proxy(ServerProcess(["serve", "--config", str(path), "--port", "0", *extra], tmp / f"{name}.log"), cfg)


@pytest.fixture
def cp(mock: Any, tmp_path: Path) -> Iterator[Proxy]:
    p = start(control_config(mock, tmp_path), tmp_path, "cp")
    yield p
    alive = p.proc.alive()
    p.proc.stop()
    assert alive, p.proc.log_path.read_text(errors="replace")[-2000:]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([MODELUX_BIN, *args], capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, f"modelux {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def chat_model(p: Proxy, slug: str) -> str:
    r = p.chat_raw({"model": f"@{slug}", "messages": MESSAGES})
    assert r.status == 200, r.text
    t = p.trace(r.headers["x-request-id"])
    return t["attempts"][-1]["model"]


# ---------------------------------------------------------------------------- configs


def test_versions_diff_rollback_promote_with_if_match(cp: Proxy) -> None:
    r = cp.request("GET", "/v1/configs/fast")
    assert r.status == 200 and r.headers["etag"] == '"1"' and r.json()["version"] == 1
    v1 = r.json()["config"]
    v2doc = {**v1, "model": "gpt-4o"}
    r = cp.request("PUT", "/v1/configs/fast", v2doc, {"if-match": '"1"', "x-modelux-message": "bigger"})
    assert r.status == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"', r.text
    assert chat_model(cp, "fast") == "gpt-4o"  # live at once
    # A writer that read version 1 loses: 409, and nothing changes.
    r = cp.request("PUT", "/v1/configs/fast", {**v1, "model": "claude-haiku-4-5"}, {"if-match": '"1"'})
    assert r.status == 409 and r.json()["error"]["code"] == "version_conflict", r.text
    # A config that does not compile is refused with its JSON path and never becomes a version.
    r = cp.request("PUT", "/v1/configs/fast", {"strategy": "fallback", "attempts": [{"model": "gpt-4o"}, {"model": "no-such-model"}]})
    assert r.status == 400 and r.json()["error"]["param"].endswith("attempts[1].model"), r.text
    versions = cp.request("GET", "/v1/configs/fast/versions").json()["data"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["author"] == "e2e" and versions[0]["message"] == "bigger" and versions[1]["action"] == "seed"
    d = cp.request("GET", "/v1/configs/fast/diff?from=1&to=2").json()
    assert d["ops"] == [{"op": "replace", "path": "/model", "value": "gpt-4o"}]
    assert '-  "model": "gpt-4o-mini",' in d["text"] and '+  "model": "gpt-4o",' in d["text"]
    # Rollback: a new version equal to the old one, live.
    r = cp.request("POST", "/v1/configs/fast/rollback", {"version": 1, "message": "too expensive"}, {"if-match": '"2"'})
    assert r.status == 200 and r.json()["version"] == 3 and r.json()["document"] == v1, r.text
    assert r.json()["hash"] == versions[1]["hash"]
    assert chat_model(cp, "fast") == "gpt-4o-mini"
    assert cp.request("POST", "/v1/configs/fast/rollback", {"version": 1}, {"if-match": '"2"'}).status == 409
    assert cp.request("POST", "/v1/configs/fast/rollback", {"version": 99}).status == 404
    # Promote @staging → @production.
    r = cp.request("POST", "/v1/configs/staging/promote", {"to": "production"}, {"if-match": '"1"'})
    assert r.status == 200 and r.json()["version"] == 2 and r.json()["action"] == "promote", r.text
    assert chat_model(cp, "production") == "gemini-2.5-flash"
    assert cp.request("GET", "/v1/configs/production").headers["etag"] == '"2"'
    # The trace names the stored version the request ran with.
    r = cp.chat_raw({"model": "@production", "messages": MESSAGES})
    assert cp.trace(r.headers["x-request-id"])["config_version"] == 2


def test_the_store_wins_after_a_restart_and_reseed_resets(mock: Any, tmp_path: Path) -> None:
    cfg = control_config(mock, tmp_path)
    p = start(cfg, tmp_path, "first")
    assert p.request("PUT", "/v1/configs/fast", {"strategy": "single", "model": "gpt-4o"}).json()["version"] == 2
    assert p.request("PUT", "/v1/configs/extra", {"strategy": "single", "model": "gpt-4o"}).json()["version"] == 1
    assert p.request("PUT", "/v1/budgets/later", {"scope": {"project": "z"}, "window": "daily", "limit_usd": 3}).status == 200
    # Live at once, also here where the file has no budgets (issue #15).
    assert p.request("GET", "/v1/budgets/later").json()["live"] is True
    p.proc.stop()
    p = start(cfg, tmp_path, "second")
    try:
        r = p.request("GET", "/v1/configs/fast").json()
        assert r["version"] == 2 and r["config"]["model"] == "gpt-4o"  # not the file's gpt-4o-mini
        assert p.request("GET", "/v1/configs/extra").status == 200
        assert chat_model(p, "fast") == "gpt-4o"
        assert p.request("GET", "/v1/budgets/later").json()["live"] is True  # a stored budget is live after a restart
    finally:
        p.proc.stop()
    p = start(cfg, tmp_path, "third", "--reseed")
    try:
        r = p.request("GET", "/v1/configs/fast").json()
        assert r["version"] == 3 and r["config"] == cfg["routing"]["fast"]
        assert p.request("GET", "/v1/configs/fast/versions").json()["data"][0]["action"] == "reseed"
        assert p.request("GET", "/v1/configs/production").json()["version"] == 1  # unchanged: no new version
    finally:
        p.proc.stop()


def test_a_cli_rollback_on_the_file_reaches_the_running_proxy(cp: Proxy, tmp_path: Path) -> None:
    cfg_path = tmp_path / "cp.json"
    db = str(tmp_path / "control.db")
    cp.request("PUT", "/v1/configs/fast", {"strategy": "single", "model": "gpt-4o"})
    out = cli("configs", "list", "fast", "--db", db).stdout
    assert "seed" in out and "update" in out
    assert '+  "model": "gpt-4o"' in cli("configs", "diff", "fast", "1", "2", "--db", db).stdout
    # Direct writes compile against the config file first.
    assert cli("configs", "rollback", "fast", "1", "--db", db, check=False).returncode == 1
    cli("configs", "rollback", "fast", "1", "--config", str(cfg_path), "-m", "from the cli")
    wait_for(lambda: cp.request("GET", "/v1/configs/fast").json()["version"] == 3, what="the proxy to reconcile")
    assert chat_model(cp, "fast") == "gpt-4o-mini"
    # A long message is clipped to 1 KiB on a character boundary: every reader still works.
    r = cp.request("POST", "/v1/configs/fast/rollback", {"version": 2, "message": "x" + "é" * 700})  # byte 1024 is mid-character
    assert r.status == 200 and len(r.json()["message"].encode()) == 1023 and set(r.json()["message"][1:]) == {"é"}, r.text
    assert "é" in cli("configs", "list", "fast", "--db", db).stdout
    assert json.loads(cli("configs", "list", "fast", "--db", db, "--json").stdout)[0]["message"] == r.json()["message"]
    cp.request("POST", "/v1/configs/fast/rollback", {"version": 1})
    # Over REST too.
    url = ["--url", cp.url, "--key", API_KEY]
    cli("configs", "promote", "staging", "production", *url)
    assert json.loads(cli("configs", "show", "production", *url, "--json").stdout)["version"] == 2
    r = cli("configs", "rollback", "fast", "2", "--if-match", "1", *url, check=False)
    assert r.returncode == 1 and "409" in r.stderr


# ---------------------------------------------------------------------------- audit


def test_audit_query_export_and_tamper_detection(cp: Proxy, tmp_path: Path) -> None:
    cp.request("PUT", "/v1/configs/fast", {"strategy": "single", "model": "gpt-4o"}, {"x-modelux-message": "m1"})
    cp.request("POST", "/v1/keys", {"project": "gamma", "name": "gamma-key"})
    rows = cp.request("GET", "/v1/audit?actor=e2e").json()["data"]
    assert [r["action"] for r in rows] == ["config.update", "key.create"]
    assert rows[0]["from"] == "127.0.0.1" and rows[0]["object"] == "config:fast" and rows[0]["before_hash"] and rows[0]["after_hash"]
    assert [r["object"] for r in cp.request("GET", "/v1/audit?object=key:").json()["data"]] == [rows[1]["object"]]
    assert cp.request("GET", "/v1/audit?since=2199-01-01").json()["data"] == []
    assert cp.request("GET", "/v1/audit?since=2999-01-01").status == 400  # beyond what a timestamp holds
    assert cp.request("GET", "/v1/audit?until=2000-01-01T00:00:00Z").json()["data"] == []
    everything = cp.request("GET", "/v1/audit").json()["data"]
    assert everything[0]["actor"] == "file"  # the seed
    r = cp.request("GET", "/v1/audit?format=jsonl")
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(l) for l in r.text.splitlines()] == everything
    assert cp.request("GET", "/v1/audit/verify").json() == {"ok": True, "checked": len(everything)}
    db = tmp_path / "control.db"
    assert "chain verified" in cli("audit", "--db", str(db), "--verify").stdout
    assert len(cli("audit", "--db", str(db), "--jsonl", "--actor", "e2e").stdout.splitlines()) == 2
    assert "config.update" in cli("audit", "--url", cp.url, "--key", API_KEY, "--object", "config:fast").stdout

    # Someone edits the file: the append-only triggers refuse, so they drop them first (every
    # open of the store puts them back, so each edit drops them again).
    con = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError):
        con.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    con.close()

    def tamper(sql: str, path: Path = db) -> None:
        c = sqlite3.connect(path)
        c.execute("DROP TRIGGER IF EXISTS audit_no_update")
        c.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        c.execute(sql)
        c.commit()
        c.close()

    tamper("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    r = cli("audit", "--db", str(db), "--verify", check=False)
    assert r.returncode == 1 and "entry 2" in r.stdout and "edited" in r.stdout, r.stdout
    v = cp.request("GET", "/v1/audit/verify").json()
    assert v["ok"] is False and v["first_bad_seq"] == 2
    tamper("UPDATE audit SET actor = 'file' WHERE seq = 2")  # put it back
    assert cli("audit", "--db", str(db), "--verify", check=False).returncode == 0
    n = len(everything)
    # Deleting the newest entry is caught too (the head is recorded with every append).
    copy = tmp_path / "copy.db"
    con, con2 = sqlite3.connect(db), sqlite3.connect(copy)
    con.backup(con2)
    con2.close()
    con.close()
    tamper(f"DELETE FROM audit WHERE seq = {n}", copy)
    r = cli("audit", "--db", str(copy), "--verify", check=False)
    assert r.returncode == 1 and f"entry {n}" in r.stdout, r.stdout
    tamper("DELETE FROM audit WHERE seq = 3")
    r = cli("audit", "--db", str(db), "--verify", check=False)
    assert r.returncode == 1 and "entry 3 is missing" in r.stdout, r.stdout


# ---------------------------------------------------------------------------- webhooks


def test_signed_delivery_with_retries_log_and_redelivery(mock: Any, tmp_path: Path) -> None:
    rec = Receiver(fail_first=2)
    p = start(control_config(mock, tmp_path), tmp_path, "wh")
    try:
        r = p.request("POST", "/v1/webhooks", {"url": rec.url, "events": ["config.changed"], "description": "ops"})
        assert r.status == 201, r.text
        hook = r.json()
        secret, hid = hook["secret"], hook["id"]
        assert secret.startswith("whsec_")
        # The secret is shown once: never in a listing, a version or the audit log.
        assert secret not in p.request("GET", "/v1/webhooks").text
        assert secret not in p.request(f"GET", f"/v1/webhooks/{hid}").text
        assert secret not in p.request("GET", "/v1/audit").text
        p.request("PUT", "/v1/configs/fast", {"strategy": "single", "model": "gpt-4o"}, {"x-modelux-message": "hook me"})
        p.request("POST", "/v1/keys", {"project": "gamma"})  # key.created: not subscribed
        wait_for(lambda: len(rec.requests) >= 3, what="three attempts (two 500s, then 200)")
        evs = rec.events()
        assert len({e["_headers"]["webhook-id"] for e in evs}) == 1  # one message, retried
        last = evs[-1]
        # The reference verifier accepts it (raises otherwise).
        payload = Webhook(secret).verify(last["_raw"], last["_headers"])
        assert payload["type"] == "config.changed" and payload["data"]["slug"] == "fast" and payload["data"]["version"] == 2
        assert payload["data"]["message"] == "hook me"
        with pytest.raises(Exception):
            Webhook(secret).verify(last["_raw"].replace("fast", "slow"), last["_headers"])
        # Our own Python helper agrees, both ways.
        helper = python_verifier()
        assert helper.verify_webhook(secret, last["_headers"], last["_raw"]) == payload
        with pytest.raises(helper.WebhookVerificationError):
            helper.verify_webhook(secret, last["_headers"], last["_raw"].replace("fast", "slow"))
        dels = wait_for(lambda: [d for d in p.request("GET", f"/v1/webhooks/{hid}/deliveries").json()["data"] if d["status"] == "delivered"],
                        what="the delivery log to say delivered")
        assert len(dels) == 1 and dels[0]["attempts"] == 3 and dels[0]["last_status"] == 200 and dels[0]["event"] == "config.changed"
        # Backoff: the gaps between attempts grow (base 100 ms, doubling).
        times = [int(e["_headers"]["webhook-timestamp"]) for e in evs]
        assert times == sorted(times)
        r = p.request("POST", f"/v1/webhooks/{hid}/deliveries/{dels[0]['id']}/redeliver")
        assert r.status == 202, r.text
        wait_for(lambda: len(rec.requests) >= 4, what="the redelivery")
        assert rec.events()[-1]["_headers"]["webhook-id"] == dels[0]["id"]
        out = cli("webhooks", "deliveries", hid, "--url", p.url, "--key", API_KEY).stdout
        assert dels[0]["id"] in out and "delivered" in out
        metrics = p.request("GET", "/metrics").text
        assert "modelux_webhook_deliveries_total 2" in metrics and "modelux_webhook_delivery_failures_total 2" in metrics
        assert "modelux_webhook_events_dropped_total 0" in metrics
        assert p.request("DELETE", f"/v1/webhooks/{hid}").status == 200
        assert [v["action"] for v in p.request("GET", f"/v1/webhooks/{hid}/versions").json()["data"]] == ["delete", "create"]
        assert p.request("GET", f"/v1/webhooks/{hid}").status == 404
        log = p.proc.log_path.read_text(errors="replace")
        assert secret not in log
    finally:
        p.proc.stop()
        rec.close()
    assert secret not in p.proc.log_path.read_text(errors="replace")


def test_a_dead_endpoint_never_slows_requests_and_is_given_up(mock: Any, tmp_path: Path) -> None:
    cfg = control_config(mock, tmp_path, webhook_give_up_ms=400)
    p = start(cfg, tmp_path, "dead")
    try:
        # Nothing listens on port 9: every attempt fails fast; the give-up comes after 400 ms.
        r = p.request("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook"})
        hid = r.json()["id"]
        for i in range(3):
            p.request("PUT", "/v1/configs/fast", {"strategy": "single", "model": "gpt-4o" if i % 2 == 0 else "gpt-4o-mini"})
        assert chat_model(p, "fast") == "gpt-4o"
        dels = wait_for(lambda: [d for d in p.request("GET", f"/v1/webhooks/{hid}/deliveries").json()["data"] if d["status"] == "failed"],
                        what="deliveries given up")
        assert dels[0]["attempts"] >= 2 and dels[0]["last_status"] == 0 and dels[0]["last_error"]
    finally:
        p.proc.stop()


def test_events_from_keys_budgets_breakers_and_spend(mock: Any, tmp_path: Path, receiver: Receiver) -> None:
    cfg = control_config(mock, tmp_path, anomaly_bucket_s=0.3, anomaly_min_buckets=3, anomaly_min_usd=0.0000001)
    # "capped": below one request's estimate, so it refuses the first one (budget.blocked and the
    # 100% alert). "soft": a soft threshold that a few requests pass (budget.downgraded), and
    # the spend that spend.anomaly watches.
    cfg["budgets"] = [{"name": "capped", "scope": {"project": "capped"}, "window": "daily", "limit_usd": 0.0002},
                      {"name": "soft", "scope": {"project": "e2e"}, "window": "daily", "limit_usd": 0.01,
                       "soft": {"percent": 0.01, "downgrade_to": "gpt-4o-mini"}}]
    p = start(cfg, tmp_path, "events")
    try:
        assert p.request("POST", "/v1/webhooks", {"url": receiver.url}).status == 201
        k = p.request("POST", "/v1/keys", {"project": "gamma", "name": "g"}).json()
        p.request("DELETE", f"/v1/keys/{k['id']}")
        wait_for(lambda: receiver.events("key.revoked"), what="key.revoked")
        assert receiver.events("key.created")[0]["data"]["id"] == k["id"]
        assert k["key"] not in json.dumps(receiver.events())  # the key's secret never travels
        kv = p.request("GET", f"/v1/keys/{k['id']}/versions").json()["data"]
        assert [v["action"] for v in kv] == ["revoke", "create"] and kv[0]["document"]["revoked"] and k["key"] not in json.dumps(kv)
        # Breakers: failures charged to another project (the tiny budget would downgrade them).
        mock.configure({"claude-haiku-4-5": {"error_status": 500}})
        for _ in range(8):
            p.request("POST", "/v1/chat/completions", {"model": "@production", "messages": MESSAGES}, {"x-modelux-project": "other"})
        wait_for(lambda: receiver.events("breaker.opened"), what="breaker.opened")
        assert receiver.events("breaker.opened")[0]["data"]["target"] == "anthropic/claude-haiku-4-5"
        # max_tokens bounds the output estimate, which then blocks on its own (an unbounded one does not: docs/budgets.md).
        r = p.request("POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES, "max_tokens": 1000}, {"x-modelux-project": "capped"})
        assert r.status == 402 or r.status == 429 or r.status == 400, r.text
        assert r.json()["error"]["code"] == "budget_exceeded"
        wait_for(lambda: receiver.events("budget.blocked"), what="budget.blocked")
        assert receiver.events("budget.blocked")[0]["data"]["budget"] == "capped"
        assert {e["data"]["threshold"] for e in receiver.events("budget.alert") if e["data"]["budget"] == "capped"} == {80, 100}
        time.sleep(1.2)  # a zero-spend baseline of a few buckets for "soft"
        for _ in range(8):
            assert p.chat_raw({"model": "@fast", "messages": MESSAGES}).status == 200
        wait_for(lambda: receiver.events("budget.downgraded"), what="budget.downgraded")
        assert receiver.events("budget.downgraded")[0]["data"]["downgrade_to"] == "gpt-4o-mini"
        wait_for(lambda: receiver.events("spend.anomaly"), what="spend.anomaly")
        a = receiver.events("spend.anomaly")[0]["data"]
        assert a["budget"] == "soft" and a["spend_usd"] > a["factor"] * a["baseline_usd"] and a["baseline_buckets"] >= 3
    finally:
        p.proc.stop()


# ---------------------------------------------------------------------------- budgets and CLI webhooks


def test_budget_definitions_are_versioned(cp: Proxy) -> None:
    b = {"scope": {"project": "acme"}, "window": "daily", "limit_usd": 5}
    r = cp.request("PUT", "/v1/budgets/acme-daily", b)
    assert r.status == 200 and r.json()["version"] == 1, r.text
    r = cp.request("PUT", "/v1/budgets/acme-daily", {**b, "window": "fortnightly"}, {"if-match": '"1"'})
    assert r.status == 400 and r.json()["error"]["param"] == "$.window", r.text
    assert cp.request("PUT", "/v1/budgets/acme-daily", {**b, "limit_usd": 9}, {"if-match": '"7"'}).status == 409
    assert cp.request("PUT", "/v1/budgets/acme-daily", {**b, "limit_usd": 9}, {"if-match": '"1"'}).json()["version"] == 2
    got = cp.request("GET", "/v1/budgets/acme-daily").json()
    assert got["document"]["limit_usd"] == 9 and got["live"] is True  # running here at once, no restart
    assert [v["version"] for v in cp.request("GET", "/v1/budgets/acme-daily/versions").json()["data"]] == [2, 1]
    assert cp.request("DELETE", "/v1/budgets/acme-daily").status == 200
    assert cp.request("GET", "/v1/budgets/acme-daily").status == 404


def test_webhooks_cli_on_the_store_file(cp: Proxy, tmp_path: Path, receiver: Receiver) -> None:
    db = str(tmp_path / "control.db")
    added = json.loads(cli("webhooks", "add", receiver.url, "--event", "config.promoted", "--db", db, "--json").stdout)
    assert added["id"].startswith("wh_") and added["secret"].startswith("whsec_")
    assert added["id"] in cli("webhooks", "list", "--db", db).stdout
    assert added["id"] in cp.request("GET", "/v1/webhooks").text  # the proxy reads the same store
    cp.request("POST", "/v1/configs/staging/promote", {"to": "production"})
    ev = wait_for(lambda: receiver.events("config.promoted"), what="config.promoted")[0]
    Webhook(added["secret"]).verify(ev["_raw"], ev["_headers"])
    assert ev["data"]["from"] == "staging" and ev["data"]["slug"] == "production"
    assert "delivered" in cli("webhooks", "deliveries", added["id"], "--db", db).stdout
    cli("webhooks", "remove", added["id"], "--db", db)
    assert added["id"] not in cli("webhooks", "list", "--db", db).stdout
    assert cli("webhooks", "add", "ftp://x", "--db", db, check=False).returncode == 1
