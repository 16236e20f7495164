"""Issue #18 (console): the web console served by the proxy at /, driven in headless Chromium.

The proxy runs with the mock provider and an admin and a viewer key; traffic goes in through
the official OpenAI SDK; then web/e2e/console.mjs (playwright-core driving Debian's
/usr/bin/chromium, no browser download) loads every page with no console error, logs in (a
bad key first: a clear error), finds the SDK's request by filters and by the completion id the
SDK returned, opens its decision view, shows a diff and a replay, rolls a config back through
the UI, and logs in as a viewer who sees no write control. This test then checks through the
API that the live config changed. Screenshots go to build/test-logs/console-screenshots (or
$MODELUX_CONSOLE_SHOTS); their paths are printed.

Also here: the static assets' headers (content types, caching, CSP), GET /v1/whoami, the
replay endpoint (admin only, clear 400s), and that the committed web/dist is what the sources
build to (when node and npm can build it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_support import API_KEY, MESSAGES, REPO, Proxy, base_config, http_request, start_proxy_process

VIEWER_KEY = "mlx-console-viewer-key-0001"
WEB = REPO / "web"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def console_config(mock: Any, tmp: Path) -> dict:
    cfg = base_config(mock.url, tmp / "traces.db")
    cfg["server"]["api_keys"].append({"key": VIEWER_KEY, "name": "console-viewer", "project": "e2e", "role": "viewer"})
    cfg["budgets"] = [
        {"name": "e2e-daily", "scope": {"project": "e2e"}, "window": "daily", "limit_usd": 5},
        {"name": "fleet-monthly", "window": "monthly", "limit_usd": 0.01, "alerts": [1, 100]},
    ]
    return cfg


@pytest.fixture
def console_proxy(mock: Any, tmp_path: Path) -> Iterator[Proxy]:
    p = start_proxy_process(console_config(mock, tmp_path), tmp_path, "console")
    yield p
    alive = p.proc.alive()
    p.proc.stop()
    assert alive, p.proc.log_path.read_text(errors="replace")[-2000:]


def live_model(p: Proxy, slug: str) -> tuple[int, str]:
    r = p.request("GET", f"/v1/configs/{slug}")
    assert r.status == 200, r.text
    return r.json()["version"], r.json()["config"]["model"]


# ---------------------------------------------------------------------------- the browser


def test_console_in_headless_chromium(console_proxy: Proxy, mock: Any, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium", pytrace=False)
    if not shutil.which("node"):
        pytest.fail("node is missing: scripts/setup.sh installs it", pytrace=False)
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.fail("web/node_modules/playwright-core is missing: run scripts/setup.sh (npm ci in web/)", pytrace=False)
    p = console_proxy
    # Two versions of @fast (v1 from the file: gpt-4o-mini; v2: claude-haiku-4-5) so there is
    # something to diff, replay and roll back to.
    v2 = p.put_config("fast", {"strategy": "single", "model": "claude-haiku-4-5", "timeout_ms": 2000})
    assert live_model(p, "fast") == (v2, "claude-haiku-4-5")

    client = p.client()
    raw = client.chat.completions.with_raw_response.create(model="@fast", messages=MESSAGES)
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert completion.id.startswith("chatcmpl-") and request_id.startswith("req_")
    for _ in range(3):
        client.chat.completions.create(model="@production", messages=MESSAGES)
    # One request that fails over: claude answers 429, the fallback serves it.
    mock.configure({"claude-haiku-4-5": {"error_status": 429}})
    fo = client.chat.completions.with_raw_response.create(model="@production", messages=MESSAGES)
    failover_id = fo.headers["x-request-id"]
    assert len(p.trace(failover_id)["attempts"]) >= 2

    # Kept after the run (pytest's tmp dirs are pruned): build/test-logs/console-screenshots by default.
    shots = Path(os.environ.get("MODELUX_CONSOLE_SHOTS", REPO / "build" / "test-logs" / "console-screenshots"))
    shutil.rmtree(shots, ignore_errors=True)
    args = {"base": p.url, "admin_key": API_KEY, "viewer_key": VIEWER_KEY, "completion_id": completion.id,
            "request_id": request_id, "failover_request_id": failover_id, "slug": "fast", "rollback_to": 1,
            "out_dir": str(shots), "expected_requests": len(p.request("GET", "/v1/traces?limit=1000").json()["data"])}
    r = subprocess.run(["node", str(WEB / "e2e" / "console.mjs"), json.dumps(args)], capture_output=True, text=True,
                       timeout=180, cwd=WEB, env={**os.environ, "CHROMIUM": CHROMIUM})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from console.mjs (rc {r.returncode}): {r.stdout[-2000:]} {r.stderr[-3000:]}"
    result = json.loads(lines[-1])
    # Listed in a file too: scripts/test.sh runs pytest without -s, which hides prints of a pass.
    (shots / "screenshots.txt").write_text("".join(f"{s}\n" for s in result["screenshots"]))
    print(f"\nconsole screenshots ({len(result['screenshots'])}) in {shots}:")
    for s in result["screenshots"]:
        print(f"  {s}")
    for s in result["steps"]:
        print(f"  step: {s}")
    assert r.returncode == 0 and "error" not in result, f"{result.get('error')}\nstderr: {r.stderr[-2000:]}"
    assert result["console_errors"] == []
    assert all(Path(s).stat().st_size > 5000 for s in result["screenshots"])

    # The rollback made through the UI is live: @fast is v1's document again, as a new version.
    version, model = live_model(p, "fast")
    assert (version, model) == (v2 + 1, "gpt-4o-mini")
    hist = p.request("GET", "/v1/configs/fast/versions").json()
    newest = hist["data"][0]
    assert newest["action"] == "rollback" and newest["message"] == "rolled back by the console e2e test"
    mock.reset()
    served = client.chat.completions.create(model="@fast", messages=MESSAGES)
    assert served.model == "gpt-4o-mini"


# ---------------------------------------------------------------------------- the assets


def asset_paths(index_html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/assets/[^"]+)"', index_html)


def test_assets_are_served_with_types_caching_and_csp(console_proxy: Proxy) -> None:
    p = console_proxy
    page = http_request(p.port, "GET", "/")  # no key: the assets hold no data
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.body == (WEB / "dist" / "index.html").read_bytes()
    assets = asset_paths(page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for a in assets:
        r = http_request(p.port, "GET", a)
        assert r.status == 200, a
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["content-type"] == ("text/javascript; charset=utf-8" if a.endswith(".js") else "text/css; charset=utf-8")
        assert r.body == (WEB / "dist" / a.lstrip("/")).read_bytes(), f"{a} differs from web/dist (never scrubbed or altered)"
    missing = http_request(p.port, "GET", "/assets/nope.js")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline for the CSP to refuse


def test_whoami_tells_the_role(console_proxy: Proxy) -> None:
    p = console_proxy
    assert p.request("GET", "/v1/whoami").json() == {"role": "admin", "name": "e2e", "project": "e2e", "open_access": False}
    v = p.request("GET", "/v1/whoami", headers={"authorization": f"Bearer {VIEWER_KEY}"})
    assert v.json()["role"] == "viewer" and v.json()["name"] == "console-viewer"
    bad = p.request("GET", "/v1/whoami", headers={"authorization": "Bearer mlx-wrong-0000000000"})
    assert bad.status == 401 and "Incorrect API key" in bad.json()["error"]["message"]


def test_replay_endpoint(console_proxy: Proxy) -> None:
    p = console_proxy
    v2 = p.put_config("fast", {"strategy": "single", "model": "claude-haiku-4-5", "timeout_ms": 2000})
    client = p.client()
    for _ in range(4):
        client.chat.completions.create(model="@fast", messages=MESSAGES)
    r = p.request("POST", "/v1/configs/fast/replay", {"version": 1, "guard": "success>=current"})
    assert r.status == 200, r.text
    rep = r.json()
    assert rep["slug"] == "@fast" and rep["traces"] == 4 and rep["candidate_version"] == 1
    assert rep["current"]["routes"] == {"anthropic/claude-haiku-4-5": 4}
    assert rep["candidate"]["routes"] == {"openai/gpt-4o-mini": 4}
    assert rep["guard"]["passed"] is True
    cand = p.request("POST", "/v1/configs/fast/replay", {"candidate": {"strategy": "single", "model": "gemini-2.5-flash"}})
    assert cand.status == 200 and cand.json()["candidate"]["routes"] == {"google/gemini-2.5-flash": 4}
    # A replay changes nothing live.
    assert live_model(p, "fast") == (v2, "claude-haiku-4-5")
    viewer = p.request("POST", "/v1/configs/fast/replay", {"version": 1}, headers={"authorization": f"Bearer {VIEWER_KEY}"})
    assert viewer.status == 403
    for body, code in [({}, "invalid_version"), ({"version": 1, "candidate": {}}, "invalid_version"),
                       ({"version": 0}, "invalid_version"), ({"version": 1, "limit": 0}, "invalid_limit"),
                       ({"version": 1, "nope": 1}, "invalid_nope"), ({"version": 1, "guard": "speed>=1"}, "invalid_guard")]:
        bad = p.request("POST", "/v1/configs/fast/replay", body)
        assert bad.status == 400 and bad.json()["error"]["code"] == code, (body, bad.text)
    assert p.request("POST", "/v1/configs/fast/replay", {"version": 99}).status == 404
    assert p.request("POST", "/v1/configs/nope/replay", {"version": 1}).status == 404
    bad_cand = p.request("POST", "/v1/configs/fast/replay", {"candidate": {"strategy": "single", "model": 7}})
    assert bad_cand.status == 400, bad_cand.text


# ---------------------------------------------------------------------------- the build


def test_committed_dist_is_what_the_sources_build(tmp_path: Path) -> None:
    """web/dist is committed (the C++ build embeds it without needing node); this type-checks
    web/src, rebuilds it into a scratch folder and fails when the two differ (run `npm run build`
    in web/)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm or not (WEB / "node_modules" / "vite").is_dir():
        pytest.skip("node/npm or web/node_modules missing (scripts/setup.sh installs them)")
    major, minor = (int(x) for x in subprocess.run([node, "-v"], capture_output=True, text=True).stdout.strip().lstrip("v").split(".")[:2])
    if (major, minor) < (20, 19):
        pytest.skip(f"node {major}.{minor} is older than vite 7 needs (20.19)")
    check = subprocess.run([npm, "run", "check"], cwd=WEB, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, "TypeScript errors in web/src:\n" + check.stdout[-3000:]
    out = tmp_path / "dist"
    r = subprocess.run([npm, "exec", "--", "vite", "build", "--outDir", str(out), "--emptyOutDir"], cwd=WEB,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    built = {str(f.relative_to(out)): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    committed = {str(f.relative_to(WEB / "dist")): f.read_bytes() for f in (WEB / "dist").rglob("*") if f.is_file()}
    assert sorted(built) == sorted(committed), "web/dist is stale: run `npm run build` in web/ and commit web/dist"
    for name in built:
        assert built[name] == committed[name], f"web/dist/{name} is stale: run `npm run build` in web/"
