"""The `modelux` binary's documented commands: `check-config FILE` (ok / the JSON path of a
fault / exit codes), `mock --fail MODEL=STATUS`, and the proxy's `/readyz`."""

from __future__ import annotations

import json
import subprocess

import pytest

from e2e_support import MESSAGES, MODELUX_BIN, ServerProcess, base_config, http_request


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([MODELUX_BIN, "check-config", str(path)], capture_output=True, text=True, timeout=30)


def test_check_config_accepts_a_good_file(tmp_path):
    cfg = base_config("http://127.0.0.1:9", tmp_path / "t.db")
    f = tmp_path / "good.json"
    f.write_text(json.dumps(cfg))
    r = check_config(f)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: 2 routing configs"), r.stdout


@pytest.mark.parametrize("edit,path", [
    (lambda c: c["routing"]["production"]["attempts"][1].update(timeout_ms=-5), "$.routing.production.attempts[1].timeout_ms"),
    (lambda c: c["providers"]["openai"].update(base_url="ftp://nope"), "$.providers.openai.base_url"),
    (lambda c: c.update(budgets=[{"name": "b", "window": "daily", "limit_usd": 1, "windw_s": 3}]), "$.budgets[0]"),
])
def test_check_config_names_the_json_path_of_a_fault(tmp_path, edit, path):
    cfg = base_config("http://127.0.0.1:9", tmp_path / "t.db")
    edit(cfg)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(cfg))
    r = check_config(f)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("invalid:"), r.stderr
    assert path in r.stderr, r.stderr


def test_check_config_on_broken_json_and_usage_errors(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{"providers": {')
    r = check_config(f)
    assert r.returncode == 1 and r.stderr.startswith("invalid:"), r.stderr
    missing = check_config(tmp_path / "missing.json")
    assert missing.returncode == 2 and "missing.json" in missing.stderr, missing.stderr  # a usage error
    usage = subprocess.run([MODELUX_BIN, "check-config", str(f), "--config", str(f)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2, usage.stderr


def test_mock_fail_makes_that_model_answer_the_status(tmp_path):
    proc = ServerProcess(["mock", "--port", "0", "--fail", "gpt-4o-mini=503", "--fail", "claude-haiku-4-5=429"],
                         tmp_path / "mock.log")
    try:
        def ask(path, model):
            body = {"model": model, "messages": MESSAGES, "max_tokens": 8}
            return http_request(proc.port, "POST", path, body, {"authorization": "Bearer k", "x-api-key": "k",
                                                               "anthropic-version": "2023-06-01"})
        r = ask("/v1/chat/completions", "gpt-4o-mini")
        assert r.status == 503, r.text
        assert ask("/v1/messages", "claude-haiku-4-5").status == 429
        ok = ask("/v1/chat/completions", "gpt-4o")
        assert ok.status == 200 and ok.json()["choices"][0]["message"]["content"]
    finally:
        proc.stop()
    bad = subprocess.run([MODELUX_BIN, "mock", "--port", "0", "--fail", "gpt-4o-mini=abc"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "MODEL=STATUS" in bad.stderr


def test_readyz_is_200_and_needs_no_key(shared_proxy):
    r = shared_proxy.request("GET", "/readyz", auth=False)
    assert r.status == 200, r.text
    assert r.json()["status"] == "ready", r.text
    assert r.json()["checks"]["configs"] >= 1
