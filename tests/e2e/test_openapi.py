"""Issue #15: the OpenAPI 3.1 document served at /openapi.json matches the server.

Three checks: the route table (src/server/routes.cpp) and the document's operations are the
same set; the proxy serves docs/openapi.json byte for byte; and schemathesis (the PyPI fuzzer)
runs the coverage and fuzzing phases against a running proxy with an admin key, checking
every response against the document (status codes, content types, schemas, headers) and that
nothing answers 5xx, with a fixed seed and a bounded number of examples per operation so the
run stays well under a minute.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from e2e_support import API_KEY, REPO, http_request

SPEC = REPO / "docs" / "openapi.json"
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance", "unsupported_method", "allow_header_conformance",
])


def route_table() -> set[tuple[str, str]]:
    src = (REPO / "src" / "server" / "routes.cpp").read_text()
    return {(m.lower(), p) for m, p in re.findall(r'\{"(GET|POST|PUT|DELETE|PATCH)", "(/[^"]*)"', src)}


def spec_operations() -> set[tuple[str, str]]:
    doc = json.loads(SPEC.read_text())
    return {(m, p) for p, item in doc["paths"].items() for m in item if m in ("get", "post", "put", "delete", "patch")}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    routes, documented = route_table(), spec_operations()
    assert routes, "no routes found in routes.cpp"
    assert routes - documented == set(), "routes missing from docs/openapi.json"
    assert documented - routes == set(), "docs/openapi.json documents routes the server does not have"


def test_the_proxy_serves_the_document(start_proxy: Any) -> None:
    p = start_proxy()
    r = http_request(p.port, "GET", "/openapi.json")  # no key: the document is public
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.body == SPEC.read_bytes()
    assert r.json()["openapi"] == "3.1.0"


def test_schemathesis_against_a_running_proxy(start_proxy: Any, tmp_path: Path) -> None:
    def edit(cfg: dict) -> None:
        cfg["budgets"] = [{"name": "daily", "scope": {}, "window": "daily", "limit_usd": 1000}]

    p = start_proxy(edit)
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [str(st), "run", f"{p.url}/openapi.json", "-H", f"Authorization: Bearer {API_KEY}",
           "--phases", "coverage,fuzzing", "--max-examples", "10", "--seed", "15", "-c", CHECKS,
           "--request-timeout", "10", "--no-color"]
    # In the test's temp dir: schemathesis keeps a cache (.schemathesis/) in its working directory.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = r.stdout + r.stderr
    summary = re.search(r"(\d+) generated, (\d+) passed", out)
    print("\n" + "\n".join(l for l in out.splitlines() if "generated" in l or "Operations" in l or "Tested" in l))
    assert r.returncode == 0, out[-6000:]
    assert summary and summary.group(1) == summary.group(2) and int(summary.group(1)) > 500, out[-3000:]
    assert p.proc.alive()
