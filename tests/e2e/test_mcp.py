"""Issue #18 (MCP): the proxy's admin API as MCP tools, checked with the official MCP Python SDK
(`mcp`: ClientSession over the streamable-HTTP client and over the stdio client) and with the
MCP inspector CLI (npm @modelcontextprotocol/inspector-cli).

The tools must be exactly the admin operations of the live GET /openapi.json (one per
operationId); a sequence an agent would run (create a config, diff two versions, roll back,
read spend) must work through them; a viewer key lists and runs read tools only, no key gets
401; malformed JSON-RPC gets the JSON-RPC error codes and never hurts the proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from e2e_support import MESSAGES, MODELUX_BIN, REPO, Proxy, ServerProcess, base_config, http_request

ADMIN = "mlx-mcp-admin-key-000001"
VIEWER = "mlx-mcp-viewer-key-00001"
INSPECTOR = REPO / "tests" / "e2e" / "mcp_inspector" / "node_modules" / ".bin" / "mcp-inspector"
CALL_TIMEOUT_S = 30


def mcp_config(mock: Any, tmp: Path) -> dict:
    cfg = base_config(mock.url, tmp / "traces.db")
    cfg["server"]["api_keys"] = [
        {"key": ADMIN, "name": "admin", "role": "admin"},
        {"key": VIEWER, "name": "viewer", "project": "alpha", "role": "viewer"},
    ]
    cfg["server"]["control"] = {"reconcile_ms": 100}
    cfg["budgets"] = [{"name": "per-project", "scope": {"project": "*"}, "window": "daily", "limit_usd": 100}]
    return cfg


@pytest.fixture
def proxy(mock: Any, tmp_path: Path) -> Iterator[Proxy]:
    cfg = mcp_config(mock, tmp_path)
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(cfg))
    p = Proxy(ServerProcess(["serve", "--config", str(path), "--port", "0"], tmp_path / "mcp.log"), cfg)
    yield p
    alive = p.proc.alive()
    p.proc.stop()
    assert alive, p.proc.log_path.read_text(errors="replace")[-2000:]


@asynccontextmanager
async def http_session(proxy: Proxy, key: str | None, statuses: list[int] | None = None) -> AsyncIterator[ClientSession]:
    headers = {"authorization": f"Bearer {key}"} if key else {}

    async def seen(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with httpx2.AsyncClient(headers=headers, timeout=CALL_TIMEOUT_S, event_hooks={"response": [seen]}) as client:
        async with streamable_http_client(f"{proxy.url}/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def run(fn: Any, *args: Any) -> Any:
    async def guarded() -> Any:
        with anyio.fail_after(60):
            return await fn(*args)

    return anyio.run(guarded)


def admin_operations(proxy: Proxy) -> dict[str, tuple[str, str]]:
    """operationId → (METHOD, path) of every admin operation of the live OpenAPI document."""
    doc = http_request(proxy.port, "GET", "/openapi.json").json()
    ops = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            if {"data plane", "probes", "mcp"} & set(op.get("tags", [])) or not path.startswith("/v1/"):
                continue
            ok_content = [r.get("content", {}) for s, r in op.get("responses", {}).items() if s.startswith("2")]
            if any(ok_content) and not any("application/json" in c for c in ok_content):
                continue  # a page or a text export, not a tool
            ops[op["operationId"]] = (method.upper(), path)
    return ops


def text_of(result: Any) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def rest(proxy: Proxy, method: str, path: str, body: Any = None) -> Any:
    r = http_request(proxy.port, method, path, body, {"authorization": f"Bearer {ADMIN}"})
    assert r.status < 300, r.text
    return r.json()


# ---------------------------------------------------------------------------- tools = OpenAPI


def test_a_key_created_through_mcp_shows_its_secret_once_and_works(proxy: Proxy) -> None:
    async def create() -> Any:
        async with http_session(proxy, ADMIN) as s:
            return await s.call_tool("createKey", {"body": {"project": "alpha", "name": "agent-viewer", "role": "viewer"}})

    made = run(create)
    assert not made.is_error, text_of(made)
    secret = made.structured_content["key"]
    assert secret.startswith("mlx-") and len(secret) > 20, made.structured_content  # as POST /v1/keys shows it

    async def as_new_key() -> list[str]:
        async with http_session(proxy, secret) as s:
            return [t.name for t in (await s.list_tools()).tools]

    names = run(as_new_key)
    assert "listConfigs" in names and "putConfig" not in names
    # Everywhere else the secret stays scrubbed: listing keys through MCP never shows it.

    async def list_keys() -> str:
        async with http_session(proxy, ADMIN) as s:
            return text_of(await s.call_tool("listKeys", {}))

    assert secret not in run(list_keys)


def test_one_tool_per_admin_operation_of_the_openapi_document(proxy: Proxy) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with http_session(proxy, ADMIN) as s:
            admin_tools = (await s.list_tools()).tools
        async with http_session(proxy, VIEWER) as s:
            viewer_tools = (await s.list_tools()).tools
        return admin_tools, viewer_tools

    admin_tools, viewer_tools = run(scenario)
    ops = admin_operations(proxy)
    names = [t.name for t in admin_tools]
    assert len(names) == len(set(names)), names
    assert set(names) == set(ops), set(names) ^ set(ops)
    for t in admin_tools:
        method, path = ops[t.name]
        assert t.description and f"{method} {path}" in t.description, t
        schema = t.input_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        for seg in path.split("/"):
            if seg.startswith("{"):
                name = seg[1:-1]
                assert name in schema["properties"] and name in schema["required"], (t.name, schema)
        assert (t.annotations.read_only_hint is True) == (method == "GET"), t
    # Bodies carry the document's schema (refs inlined): putConfig's body is a RoutingConfig.
    put = next(t for t in admin_tools if t.name == "putConfig")
    assert put.input_schema["required"] == ["slug", "body"]
    assert "$ref" not in json.dumps(put.input_schema)
    # A viewer lists read tools only, and every read tool its role may call.
    viewer_names = {t.name for t in viewer_tools}
    assert viewer_names and all(ops[n][0] == "GET" for n in viewer_names), viewer_names
    assert {"listConfigs", "getConfig", "diffConfig", "listTraces", "listBudgets"} <= viewer_names
    assert not viewer_names & {"putConfig", "rollbackConfig", "createKey", "listKeys", "listAudit"}


# ---------------------------------------------------------------------------- an agent's sequence


def test_create_diff_rollback_and_spend_through_mcp_tools(proxy: Proxy) -> None:
    # Some spend to report: one routed request charged to project alpha.
    r = http_request(proxy.port, "POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES},
                     {"authorization": f"Bearer {ADMIN}", "x-modelux-project": "alpha"})
    assert r.status == 200, r.text
    v1 = {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 2000}
    v2 = {"strategy": "single", "model": "gpt-4o", "timeout_ms": 2000}

    async def scenario() -> dict:
        out: dict = {}
        async with http_session(proxy, ADMIN) as s:
            created = await s.call_tool("putConfig", {"slug": "agent-made", "body": v1, "x-modelux-message": "via mcp"})
            assert not created.is_error, text_of(created)
            out["created"] = created.structured_content
            changed = await s.call_tool("putConfig", {"slug": "agent-made", "body": v2, "if-match": '"1"'})
            assert not changed.is_error, text_of(changed)
            diff = await s.call_tool("diffConfig", {"slug": "agent-made", "from": 1, "to": 2})
            assert not diff.is_error, text_of(diff)
            out["diff"] = diff.structured_content
            rolled = await s.call_tool("rollbackConfig", {"slug": "agent-made", "body": {"version": 1, "message": "back"}})
            assert not rolled.is_error, text_of(rolled)
            out["rolled"] = rolled.structured_content
            spend = await s.call_tool("listBudgets", {})
            assert not spend.is_error, text_of(spend)
            out["spend"] = json.loads(text_of(spend))
            versions = await s.call_tool("listConfigVersions", {"slug": "agent-made"})
            out["versions"] = versions.structured_content
        return out

    out = run(scenario)
    assert out["created"]["version"] == 1
    assert out["diff"]["ops"] == [{"op": "replace", "path": "/model", "value": "gpt-4o"}], out["diff"]
    assert out["rolled"]["version"] == 3 and out["rolled"]["document"] == v1, out["rolled"]
    assert [v["version"] for v in out["versions"]["data"]] == [3, 2, 1]
    assert out["versions"]["data"][2]["message"] == "via mcp"
    # The rollback is live: the REST API (and routing) see version 3 = v1.
    live = rest(proxy, "GET", "/v1/configs/agent-made")
    assert live["version"] == 3 and live["config"] == v1
    # The spend report holds the request's cost in project alpha's ledger.
    ledgers = [b for b in out["spend"]["budgets"] if b.get("scope") == "project:alpha"]
    assert ledgers and ledgers[0]["spent_usd"] > 0, out["spend"]


# ---------------------------------------------------------------------------- auth and roles


def test_viewer_cannot_write_and_no_key_is_refused(proxy: Proxy) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with http_session(proxy, VIEWER) as s:
            write = await s.call_tool("rollbackConfig", {"slug": "fast", "body": {"version": 1}})
            read = await s.call_tool("getConfig", {"slug": "fast"})
        return write, read

    write, read = run(scenario)
    assert write.is_error and "403" in text_of(write) and "admin key" in text_of(write), text_of(write)
    assert not read.is_error and read.structured_content["slug"] == "fast"
    assert rest(proxy, "GET", "/v1/configs/fast/versions")["data"][0]["version"] == 1  # nothing written

    # No key: HTTP 401 before any JSON-RPC, for raw requests and for the SDK client.
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    assert http_request(proxy.port, "POST", "/mcp", init).status == 401
    assert http_request(proxy.port, "POST", "/mcp", init, {"authorization": "Bearer mlx-wrong"}).status == 401

    statuses: list[int] = []

    async def no_key() -> None:
        async with http_session(proxy, None, statuses) as s:
            await s.list_tools()

    with pytest.raises(BaseException, match="TaskGroup|rror"):
        run(no_key)
    assert statuses == [401], statuses  # the SDK's initialize got 401 and went no further


# ---------------------------------------------------------------------------- bad input


def rpc(proxy: Proxy, body: Any, headers: dict | None = None) -> Any:
    h = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    h.update(headers or {})
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return http_request(proxy.port, "POST", "/mcp", raw.encode() if isinstance(raw, str) else raw, h)


def test_malformed_json_rpc_gets_json_rpc_errors(proxy: Proxy) -> None:
    cases = [
        (b'{"jsonrpc":"2.0","id":1,', -32700),
        (b"[]", -32600),
        ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], -32600),
        ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, -32600),
        ({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}, -32600),
        ({"jsonrpc": "2.0", "id": 1}, -32600),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, -32600),
        ({"jsonrpc": "2.0", "id": 1, "method": "no/such/method"}, -32601),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1]}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "noSuchTool"}}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "getConfig", "arguments": 3}}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "modelux://nothing/here"}}, -32002),
    ]
    for body, code in cases:
        r = rpc(proxy, body)
        assert r.status in (200, 400), (body, r.status, r.text)
        assert r.json()["error"]["code"] == code, (body, r.text)
    # Unsupported protocol version header: 400.
    r = rpc(proxy, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"mcp-protocol-version": "1999-01-01"})
    assert r.status == 400
    # Notifications get 202 and no body; GET (no SSE stream offered) gets 405.
    r = rpc(proxy, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status == 202 and r.body == b""
    g = http_request(proxy.port, "GET", "/mcp", None, {"authorization": f"Bearer {ADMIN}", "accept": "text/event-stream"})
    assert g.status == 405 and "POST" in g.headers.get("allow", "")
    # A version we do not speak is answered with ours; one we speak is echoed.
    init = {"jsonrpc": "2.0", "id": 9, "method": "initialize",
            "params": {"protocolVersion": "2099-01-01", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    assert rpc(proxy, init).json()["result"]["protocolVersion"] == "2025-11-25"
    init["params"]["protocolVersion"] = "2025-03-26"
    assert rpc(proxy, init).json()["result"]["protocolVersion"] == "2025-03-26"
    assert http_request(proxy.port, "GET", "/healthz").status == 200


def test_wrong_tool_arguments_are_a_clear_tool_error(proxy: Proxy) -> None:
    async def scenario() -> list[Any]:
        async with http_session(proxy, ADMIN) as s:
            return [
                await s.call_tool("getConfig", {}),
                await s.call_tool("getConfig", {"slug": "Not A Slug"}),
                await s.call_tool("getConfig", {"slug": "fast", "surprise": 1}),
                await s.call_tool("listConfigVersions", {"slug": "fast", "limit": "ten"}),
                await s.call_tool("putConfig", {"slug": "fast", "body": "not an object"}),
                await s.call_tool("getConfig", {"slug": "does-not-exist"}),
            ]

    missing, pattern, unknown, wrong_type, bad_body, not_found = run(scenario)
    for r in (missing, pattern, unknown, wrong_type, bad_body, not_found):
        assert r.is_error, text_of(r)
    assert "missing required property 'slug'" in text_of(missing)
    assert "arguments.slug: does not match the pattern" in text_of(pattern)
    assert "unknown property 'surprise'" in text_of(unknown)
    assert "arguments.limit: expected integer, got string" in text_of(wrong_type)
    assert "arguments.body: expected object, got string" in text_of(bad_body)
    assert text_of(not_found).startswith("HTTP 404"), text_of(not_found)

    async def unknown_tool() -> MCPError | None:
        async with http_session(proxy, ADMIN) as s:
            try:
                await s.call_tool("noSuchTool", {})
            except MCPError as e:  # a protocol error (-32602), not a tool result
                return e
            return None

    err = run(unknown_tool)
    assert err is not None and err.code == -32602 and "unknown tool 'noSuchTool'" in str(err), err


# ---------------------------------------------------------------------------- resources


def test_resources_for_configs_and_recent_traces(proxy: Proxy) -> None:
    r = http_request(proxy.port, "POST", "/v1/chat/completions", {"model": "@fast", "messages": MESSAGES},
                     {"authorization": f"Bearer {ADMIN}"})
    assert r.status == 200, r.text
    rid = r.headers["x-request-id"]

    async def scenario() -> dict:
        async with http_session(proxy, ADMIN) as s:
            listed = await s.list_resources()
            templates = await s.list_resource_templates()
            configs = await s.read_resource("modelux://configs/fast")
            traces = await s.read_resource("modelux://traces/recent")
            one = await s.read_resource(f"modelux://traces/{rid}")
        return {"listed": listed, "templates": templates, "configs": configs, "traces": traces, "one": one}

    out = run(scenario)
    uris = {str(x.uri) for x in out["listed"].resources}
    assert {"modelux://configs", "modelux://traces/recent", "modelux://configs/fast", "modelux://configs/production"} <= uris
    assert "modelux://traces/{id}" in {t.uri_template for t in out["templates"].resource_templates}
    assert json.loads(out["configs"].contents[0].text)["slug"] == "fast"
    assert rid in [t["request_id"] for t in json.loads(out["traces"].contents[0].text)["data"]]
    assert json.loads(out["one"].contents[0].text)["request_id"] == rid


# ---------------------------------------------------------------------------- stdio


def test_stdio_transport_lists_the_same_tools_and_calls_them(proxy: Proxy) -> None:
    async def scenario(key: str) -> tuple[list[str], Any]:
        params = StdioServerParameters(command=MODELUX_BIN, args=["mcp", "--url", proxy.url, "--key", key])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = [t.name for t in (await s.list_tools()).tools]
                written = await s.call_tool("putConfig", {"slug": "from-stdio", "body": {"strategy": "single", "model": "gpt-4o"}})
                return tools, written

    async def over_http(key: str) -> list[str]:
        async with http_session(proxy, key) as s:
            return [t.name for t in (await s.list_tools()).tools]

    tools, written = run(scenario, ADMIN)
    assert tools == run(over_http, ADMIN) and len(tools) == len(admin_operations(proxy))
    assert not written.is_error and rest(proxy, "GET", "/v1/configs/from-stdio")["config"]["model"] == "gpt-4o"
    viewer_tools, refused = run(scenario, VIEWER)
    assert viewer_tools == run(over_http, VIEWER)
    assert refused.is_error and "403" in text_of(refused)


def test_python_stdio_server_on_the_sdk_relays_the_same_tools(proxy: Proxy) -> None:
    # python -m modelux.mcp: an MCP SDK server (mcp.server.lowlevel.Server over stdio) relaying
    # to the proxy's /mcp. It needs the modelux package installed (scripts/test.sh does
    # `pip install .` before the e2e tests).
    try:
        import modelux.mcp  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the modelux Python package is not installed ({e}); pip install . to run this")

    async def scenario(key: str) -> tuple[list[str], Any, Any, Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "modelux.mcp", "--url", proxy.url, "--key", key])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = [t.name for t in (await s.list_tools()).tools]
                written = await s.call_tool("putConfig", {"slug": "from-python", "body": {"strategy": "single", "model": "gpt-4o"}})
                bad = await s.call_tool("getConfig", {"slug": "Not A Slug"})
                res = await s.read_resource("modelux://configs/fast")
                return tools, written, bad, res

    async def over_http(key: str) -> list[str]:
        async with http_session(proxy, key) as s:
            return [t.name for t in (await s.list_tools()).tools]

    tools, written, bad, res = run(scenario, ADMIN)
    assert tools == run(over_http, ADMIN)
    assert not written.is_error and rest(proxy, "GET", "/v1/configs/from-python")["config"]["model"] == "gpt-4o"
    assert bad.is_error and "does not match the pattern" in text_of(bad)
    assert json.loads(res.contents[0].text)["slug"] == "fast"
    viewer_tools, refused, _, _ = run(scenario, VIEWER)
    assert viewer_tools == run(over_http, VIEWER)
    assert refused.is_error and "403" in text_of(refused)


def test_stdio_with_no_proxy_answers_json_rpc_errors_and_exits_cleanly(tmp_path: Path) -> None:
    # A port nothing listens on: every request gets a JSON-RPC error naming the problem; a line
    # that is not JSON is relayed and answered -32700 only when a proxy is there, so here it is
    # dropped (no id to answer); the relay exits 0 at the end of its input.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lines = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        "not json at all",
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json.dumps({"jsonrpc": "2.0", "id": "two", "method": "tools/list"}),
    ]
    r = subprocess.run([MODELUX_BIN, "mcp", "--url", f"http://127.0.0.1:{port}", "--key", ADMIN],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1, "two"], r.stdout
    for a in answers:
        assert a["error"]["code"] == -32603 and "could not be reached" in a["error"]["message"], a
    assert ADMIN not in r.stdout + r.stderr
    bad = subprocess.run([MODELUX_BIN, "mcp", "--url", "not a url"], input="", capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "bad --url" in bad.stderr


# ---------------------------------------------------------------------------- inspector CLI


def test_inspector_cli_lists_the_tools(proxy: Proxy, tmp_path: Path) -> None:
    if not INSPECTOR.exists():
        pytest.fail(f"{INSPECTOR} missing: run scripts/setup.sh (npm ci in tests/e2e/mcp_inspector)", pytrace=False)
    assert shutil.which("node"), "node is needed for the inspector CLI"
    # --strict: the inspector also checks every tool schema's portability (exit 6 on an error).
    # HOME: the inspector keeps a catalog under ~/.mcp-inspector; keep it out of the real home.
    r = subprocess.run(
        [str(INSPECTOR), "--cli", f"{proxy.url}/mcp", "--transport", "http", "--method", "tools/list",
         "--header", f"Authorization: Bearer {ADMIN}", "--strict"],
        capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 errors" in r.stderr, r.stderr
    listed = json.loads(r.stdout)
    assert {t["name"] for t in listed["tools"]} == set(admin_operations(proxy))
    # Without a key the inspector is refused too.
    r = subprocess.run([str(INSPECTOR), "--cli", f"{proxy.url}/mcp", "--transport", "http", "--method", "tools/list"],
                       capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode != 0 and "tools" not in r.stdout, r.stdout + r.stderr
