"""A fleet: three modelux proxies against one real PostgreSQL (tests/e2e/pg_support.py).

What the fleet promises (docs/control-plane.md "Fleet"): a config PUT, rollback or promote on
any instance is served by every other within a second; a managed key created on one
authenticates on all, and a revocation reaches all; the audit log is one hash chain however
many instances write to it; a missed notification (a killed listener, a write that never
notified) is healed by the periodic reconcile; and with PostgreSQL down every instance keeps
serving what it last knew.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_support import MODELUX_BIN, Mock, Proxy, base_config, start_proxy_process
from pg_support import PostgresServer

PROPAGATION_S = 1.0  # the promise: live on every instance within a second
RECONCILE_MS = 500   # the heal for missed notifications, short for the test


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except RuntimeError as e:  # never a silent skip: the fleet tests need a real PostgreSQL
        pytest.fail(f"cannot start PostgreSQL for the fleet tests: {e}", pytrace=False)
    yield server
    server.close()


def start_fleet(mock: Mock, pg: PostgresServer, tmp: Path, n: int = 3) -> tuple[str, list[Proxy]]:
    db = "fleet_" + uuid.uuid4().hex[:10]
    url = pg.create_database(db)
    proxies = []
    for i in range(n):
        cfg = base_config(mock.url, tmp / f"traces{i}.db")
        cfg["server"]["control"] = {"postgres_url": url, "reconcile_ms": RECONCILE_MS}
        proxies.append(start_proxy_process(cfg, tmp, f"fleet{i}"))
    return db, proxies


@pytest.fixture
def fleet(mock: Mock, pg: PostgresServer, tmp_path: Path) -> Iterator[tuple[str, list[Proxy]]]:
    db, proxies = start_fleet(mock, pg, tmp_path)
    yield db, proxies
    dead = [p.proc.log_path for p in proxies if not p.proc.alive()]
    for p in proxies:
        p.proc.stop()
    assert not dead, f"an instance died; see {dead}"


def serving(p: Proxy, slug: str) -> tuple[int, Any]:
    r = p.request("GET", f"/v1/configs/{slug}")
    return (r.json()["version"], r.json()["config"]) if r.status == 200 else (0, None)


def wait_serving(p: Proxy, slug: str, version: int, bound_s: float = 10.0) -> float:
    """Seconds until `p` serves `slug` at `version` (polled every few ms; the bound only turns a
    hang into a failure)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound_s:
        if serving(p, slug)[0] == version:
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"{p.url} does not serve @{slug} v{version} after {bound_s}s (serves v{serving(p, slug)[0]})")


def status_with(p: Proxy, key: str) -> int:
    return p.request("GET", "/v1/models", auth=False, headers={"authorization": f"Bearer {key}"}).status


def wait_status(p: Proxy, key: str, status: int, bound_s: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound_s:
        if status_with(p, key) == status:
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"{p.url} answers {status_with(p, key)} for the key, not {status}, after {bound_s}s")


CFG_A = {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 2000}
CFG_B = {"strategy": "single", "model": "claude-haiku-4-5", "timeout_ms": 2000}


def test_put_rollback_and_promote_on_one_instance_are_served_by_the_others_within_a_second(fleet) -> None:
    _, (a, b, c) = fleet
    r = a.request("PUT", "/v1/configs/fleet-x", CFG_A)
    assert r.status == 200, r.text
    v1 = r.json()["version"]
    for other in (b, c):
        assert wait_serving(other, "fleet-x", v1) < PROPAGATION_S
    r = a.request("PUT", "/v1/configs/fleet-x", CFG_B, headers={"if-match": f'"{v1}"'})
    assert r.status == 200, r.text
    v2 = r.json()["version"]
    for other in (b, c):
        assert wait_serving(other, "fleet-x", v2) < PROPAGATION_S
        assert serving(other, "fleet-x")[1]["model"] == "claude-haiku-4-5"
    # A stale If-Match on another instance is a conflict there too: the store decides.
    stale = c.request("PUT", "/v1/configs/fleet-x", CFG_A, headers={"if-match": f'"{v1}"'})
    assert stale.status == 409, stale.text
    # Rollback on B.
    r = b.request("POST", "/v1/configs/fleet-x/rollback", {"version": v1})
    assert r.status == 200, r.text
    v3 = r.json()["version"]
    for other in (a, c):
        assert wait_serving(other, "fleet-x", v3) < PROPAGATION_S
        assert serving(other, "fleet-x")[1]["model"] == "gpt-4o-mini"
    # Promote on C: @fleet-x's newest becomes @fleet-y's next version.
    r = c.request("POST", "/v1/configs/fleet-x/promote", {"to": "fleet-y"})
    assert r.status == 200, r.text
    vy = r.json()["version"]
    for other in (a, b):
        assert wait_serving(other, "fleet-y", vy) < PROPAGATION_S
    # Every instance reads the same history.
    hist = [p.request("GET", "/v1/configs/fleet-x/versions").json() for p in (a, b, c)]
    assert hist[0] == hist[1] == hist[2]


def test_a_key_created_on_one_instance_authenticates_on_all_and_a_revocation_reaches_all(fleet, pg: PostgresServer) -> None:
    db, (a, b, c) = fleet
    r = a.request("POST", "/v1/keys", {"project": "acme", "role": "viewer", "name": "fleet-viewer"})
    assert r.status == 201, r.text
    k = r.json()
    for p in (a, b, c):
        assert wait_status(p, k["key"], 200) < PROPAGATION_S
    r = c.request("DELETE", f"/v1/keys/{k['id']}")
    assert r.status == 200, r.text
    for p in (a, b, c):
        assert wait_status(p, k["key"], 401) < PROPAGATION_S
    # The CLI on the same database: its key works everywhere, and it is audited like the API's.
    out = subprocess.run([MODELUX_BIN, "keys", "create", "--db", pg.url(db), "--project", "acme", "--role", "viewer", "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ck = json.loads(out.stdout)
    for p in (a, b, c):
        assert wait_status(p, ck["key"], 200) < PROPAGATION_S
    rv = subprocess.run([MODELUX_BIN, "keys", "revoke", "--db", pg.url(db), ck["id"]], capture_output=True, text=True, timeout=30)
    assert rv.returncode == 0, rv.stderr
    for p in (a, b, c):
        assert wait_status(p, ck["key"], 401) < PROPAGATION_S
    audit = b.request("GET", "/v1/audit?object=key:").json()["data"]
    actions = [(e["action"], e["object"], e["actor"].split(":")[0]) for e in audit]
    assert ("key.create", f"key:{k['id']}", "e2e") in actions
    assert ("key.revoke", f"key:{k['id']}", "e2e") in actions
    assert ("key.create", f"key:{ck['id']}", "cli") in actions
    assert ("key.revoke", f"key:{ck['id']}", "cli") in actions
    versions = [e["action"] for e in audit if e["object"] == f"key:{ck['id']}"]
    assert versions == ["key.create", "key.revoke"]


def test_concurrent_writes_on_every_instance_keep_one_audit_chain(fleet) -> None:
    _, proxies = fleet

    def writes(i: int) -> list[int]:
        p = proxies[i % 3]
        out = []
        for j in range(8):
            cfg = dict(CFG_A, timeout_ms=1000 + j)
            r = p.request("PUT", f"/v1/configs/chain-{i}", cfg)
            assert r.status == 200, r.text
            out.append(r.json()["version"])
        return out

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(writes, range(6)))
    assert all(vs == list(range(1, 9)) for vs in results)
    for p in proxies:
        v = p.request("GET", "/v1/audit/verify").json()
        assert v["ok"], v
    entries = proxies[0].request("GET", "/v1/audit?object=config:&limit=1000").json()["data"]
    chain = [e for e in entries if e["object"].startswith("config:chain-")]
    assert len(chain) == 48
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_killed_listener_and_a_write_that_never_notified_are_healed_by_the_reconcile(fleet, pg: PostgresServer) -> None:
    db, (a, b, c) = fleet
    v1 = a.put_config("heal", CFG_A)
    for p in (b, c):
        wait_serving(p, "heal", v1)
    # Every instance's LISTEN connection killed: writes made meanwhile are not heard.
    killed = pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     f"WHERE application_name = 'modelux-listen' AND datname = '{db}'", db)
    assert int(killed) == 3
    v2 = a.put_config("heal", CFG_B)
    for p in (b, c):
        wait_serving(p, "heal", v2, bound_s=RECONCILE_MS / 1000 * 6 + 3)
    # A version that arrived with no NOTIFY at all (what a lost notification looks like): only
    # the periodic counter check can find it.
    doc = json.dumps(CFG_A).replace("'", "''")
    pg.psql("INSERT INTO modelux_versions (kind, name, version, author, at_ms, message, action, document, hash) "
            f"VALUES ('config', 'heal', {v2 + 1}, 'dba', 0, 'by hand', 'update', '{doc}', 'x'); "
            "UPDATE modelux_changes SET n = n + 1 WHERE id = 1", db)
    for p in (a, b, c):
        wait_serving(p, "heal", v2 + 1, bound_s=RECONCILE_MS / 1000 * 6 + 3)
        assert serving(p, "heal")[1]["model"] == "gpt-4o-mini"


def test_with_postgres_down_every_instance_keeps_serving_what_it_knew(mock: Mock, pg: PostgresServer, tmp_path: Path) -> None:
    _, proxies = start_fleet(mock, pg, tmp_path, n=2)
    a, b = proxies
    try:
        v = a.put_config("steady", CFG_A)
        wait_serving(b, "steady", v)
        k = a.request("POST", "/v1/keys", {"project": "acme", "role": "project"}).json()
        wait_status(b, k["key"], 200)
        pg.stop()
        try:
            for p in (a, b):
                assert serving(p, "steady") == (v, CFG_A)
                assert status_with(p, k["key"]) == 200
                out = p.client(api_key=k["key"]).chat.completions.create(
                    model="@steady", messages=[{"role": "user", "content": "hi"}])
                assert out.choices[0].message.content
            # A write cannot be stored: it is refused at once, nothing half-applied.
            t0 = time.monotonic()
            r = a.request("PUT", "/v1/configs/steady", CFG_B)
            assert r.status >= 500, r.text
            assert time.monotonic() - t0 < 10
            assert serving(a, "steady") == (v, CFG_A)
        finally:
            pg.start()
        # Back: writes work again and reach the other instance.
        r = a.request("PUT", "/v1/configs/steady", CFG_B)
        assert r.status == 200, r.text
        wait_serving(b, "steady", r.json()["version"])
        assert all(p.proc.alive() for p in proxies)
    finally:
        for p in proxies:
            p.proc.stop()
