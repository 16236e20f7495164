"""Issue #11 (3): managed keys — created at run time through the admin API and the CLI,
stored as hashes only, revoked effective on the next request, with per-key allowed models,
rpm (429 + retry-after) and concurrency limits."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import openai
import pytest

from e2e_support import MESSAGES, MODELUX_BIN, Proxy, http_request


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MODELUX_BIN, *args], capture_output=True, text=True, timeout=30)


def sdk(proxy: Proxy, key: str, model: str = "@fast") -> int:
    c = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0, timeout=20.0)
    try:
        c.chat.completions.create(model=model, messages=MESSAGES)
        return 200
    except openai.APIStatusError as e:
        return e.status_code


def create(proxy: Proxy, **spec) -> dict:
    r = proxy.request("POST", "/v1/keys", spec)
    assert r.status == 201, r.text
    return r.json()


def test_admin_api_create_use_list_revoke(proxy: Proxy) -> None:
    k = create(proxy, project="acme", name="ci")
    assert k["key"].startswith("mlx-") and k["role"] == "project" and k["project"] == "acme"
    assert sdk(proxy, k["key"]) == 200
    listing = proxy.request("GET", "/v1/keys")
    assert listing.status == 200
    assert k["key"] not in listing.text, "the secret is shown once only"
    assert [x["id"] for x in listing.json()["data"]].count(k["id"]) == 1
    # Only the hash is stored.
    db = Path(proxy.config["tracing"]["path"]).parent / "keys.db"
    raw = b"".join(p.read_bytes() for p in db.parent.glob("keys.db*"))
    assert raw and k["key"].encode() not in raw
    r = proxy.request("DELETE", f"/v1/keys/{k['id']}")
    assert r.status == 200, r.text
    assert sdk(proxy, k["key"]) == 401  # the very next request
    assert proxy.request("GET", f"/v1/keys/{k['id']}").json()["revoked"] is not None


def test_bad_key_specs_are_refused(proxy: Proxy) -> None:
    for spec, field in [({"project": "acme", "role": "root"}, "role"), ({"project": "acme", "colour": 1}, "colour"),
                        ({"role": "project"}, "project"), ({"project": "acme", "rpm": -1}, "rpm"),
                        ({"project": "acme", "expires": "soon"}, "expires")]:
        r = proxy.request("POST", "/v1/keys", spec)
        assert r.status == 400, f"{spec}: {r.text}"
        assert field in r.json()["error"]["message"] + str(r.json()["error"].get("param")), r.text


def test_cli_created_key_works_and_cli_revocation_is_seen_on_the_next_request(start_proxy, tmp_path: Path) -> None:
    db = tmp_path / "managed-keys.db"

    def edit(cfg: dict) -> None:
        cfg["server"]["keys_db"] = str(db)

    p = start_proxy(edit)
    out = cli("keys", "create", "--db", str(db), "--project", "acme", "--role", "project", "--json")
    assert out.returncode == 0, out.stderr
    k = json.loads(out.stdout)
    assert sdk(p, k["key"]) == 200
    listed = cli("keys", "list", "--db", str(db))
    assert listed.returncode == 0 and k["id"] in listed.stdout and k["key"] not in listed.stdout
    rv = cli("keys", "revoke", "--db", str(db), k["id"])
    assert rv.returncode == 0, rv.stderr
    assert sdk(p, k["key"]) == 401
    assert "revoked" in cli("keys", "list", "--db", str(db)).stdout
    assert cli("keys", "revoke", "--db", str(db), "key_nope").returncode == 1
    # The CLI's changes are versions and audit entries in the control store beside the key
    # file (the proxy's, here), like the API's.
    audit = p.request("GET", f"/v1/audit?object=key:{k['id']}").json()["data"]
    assert [(e["action"], e["actor"].split(":")[0], e["from"]) for e in audit] == [("key.create", "cli", "cli"), ("key.revoke", "cli", "cli")]
    versions = p.request("GET", f"/v1/keys/{k['id']}/versions").json()["data"]
    assert [v["action"] for v in versions] == ["revoke", "create"]
    assert p.request("GET", "/v1/audit/verify").json()["ok"]
    # The config file locates the store too.
    cfg_path = Path(p.proc.args[p.proc.args.index("--config") + 1])
    assert k["id"] in cli("keys", "list", "--config", str(cfg_path)).stdout
    # Usage errors.
    assert cli("keys", "create", "--db", str(db), "--role", "root").returncode == 2
    assert cli("keys", "create", "--db", str(db), "--role", "viewer").returncode == 2


def test_allowed_models_and_configs(proxy: Proxy) -> None:
    k = create(proxy, project="acme", models=["gpt-4o-mini"], configs=["@fast"])
    assert sdk(proxy, k["key"], "gpt-4o-mini") == 200
    assert sdk(proxy, k["key"], "@fast") == 200
    assert sdk(proxy, k["key"], "claude-haiku-4-5") == 403
    assert sdk(proxy, k["key"], "@production") == 403


def test_rpm_limit_answers_429_with_retry_after(proxy: Proxy) -> None:
    k = create(proxy, project="acme", rpm=2)
    assert sdk(proxy, k["key"]) == 200
    assert sdk(proxy, k["key"]) == 200
    r = http_request(proxy.port, "POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES},
                     {"authorization": f"Bearer {k['key']}"})
    assert r.status == 429, r.text
    assert r.json()["error"]["code"] == "key_rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    # Another key is not affected.
    assert sdk(proxy, create(proxy, project="acme")["key"]) == 200


def test_concurrency_limit(proxy: Proxy, mock) -> None:
    mock.configure({"gpt-4o-mini": {"latency_ms": 1500}})
    k = create(proxy, project="acme", max_concurrency=1)
    first: list[int] = []
    t = threading.Thread(target=lambda: first.append(sdk(proxy, k["key"], "gpt-4o-mini")))
    t.start()
    # Wait until the first request is in flight at the upstream.
    for _ in range(200):
        if mock.requests_for("gpt-4o-mini") >= 1:
            break
        threading.Event().wait(0.01)
    r = http_request(proxy.port, "POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES},
                     {"authorization": f"Bearer {k['key']}"})
    assert r.status == 429 and r.json()["error"]["code"] == "key_concurrency_limited", r.text
    t.join()
    assert first == [200]
    mock.configure({"gpt-4o-mini": {"latency_ms": 0}})
    assert sdk(proxy, k["key"], "gpt-4o-mini") == 200  # the slot was given back


def test_expired_key_is_refused(proxy: Proxy) -> None:
    k = create(proxy, project="acme", expires="2020-01-01")
    assert sdk(proxy, k["key"]) == 401


def test_unknown_field_in_a_config_key_names_its_path(tmp_path: Path, mock) -> None:
    from e2e_support import base_config

    cfg = base_config(mock.url, tmp_path / "t.db")
    cfg["server"]["api_keys"][0]["rol"] = "admin"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    out = cli("check-config", str(path))
    assert out.returncode == 1
    assert "$.server.api_keys[0].rol" in out.stderr, out.stderr
    cfg["server"]["api_keys"][0].pop("rol")
    cfg["server"]["api_keys"][0]["role"] = "root"
    path.write_text(json.dumps(cfg))
    out = cli("check-config", str(path))
    assert out.returncode == 1 and "$.server.api_keys[0].role" in out.stderr, out.stderr
