"""Issue #16: `modelux replay` on a trace store made by real traffic through the proxy.

The module records N requests through `modelux serve` (official OpenAI SDK) to the mock with a
known fault: the primary of @production (claude-haiku-4-5) answers 500 to 30% of calls, so
those requests fail over to gpt-4o-mini. Then `modelux replay` runs offline on that store:

- replaying the deployed config reproduces the recorded success rate and route mix within
  TOLERANCE (absolute, on rates; the replay draws from the fitted distributions, so it
  differs from the recording by sampling noise: with N = 240 one standard deviation of a 30%
  share is about 3 points);
- a candidate that drops the failing target shows the expected gain (no failovers);
- the same seed gives the same report;
- bad input gets a clear error.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_support import MESSAGES, MODELUX_BIN, Mock, Proxy, base_config, start_proxy_process

N = 240
FAIL_RATE = 0.3
TOLERANCE = 0.10
PRIMARY = "claude-haiku-4-5"


def wait_for_traces(db: Path, n: int, timeout_s: float = 20.0) -> None:
    """The tracer writes in the background: poll the store until it holds n traces."""
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                count = c.execute("SELECT count(*) FROM traces").fetchone()[0]
        except sqlite3.Error:
            count = -1
        if count >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the trace store holds {count} traces, expected {n}")


def run_replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MODELUX_BIN, "replay", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def recorded(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("replay")
    mock.reset()
    mock.configure({
        PRIMARY: {"error_status": 500, "error_rate": FAIL_RATE, "latency_ms": 20},
        "gpt-4o-mini": {"latency_ms": 60},
    })
    cfg = base_config(mock.url, tmp / "traces.db")
    cfg["tracing"]["capture_bodies"] = True
    proxy = start_proxy_process(cfg, tmp, "proxy")
    try:
        client = proxy.client()
        for i in range(N):
            kw: dict[str, Any] = {"extra_headers": {"x-modelux-tags": f"team=t{i % 3}", "x-modelux-end-user": f"u{i % 5}"}}
            if i % 4 == 0:
                stream = client.chat.completions.create(model="@production", messages=MESSAGES, stream=True, **kw)
                for _ in stream:
                    pass
            else:
                client.chat.completions.create(model="@production", messages=MESSAGES, **kw)
        wait_for_traces(tmp / "traces.db", N)
    finally:
        proxy.proc.stop()
        mock.reset()
    cfg_path = tmp / "proxy.json"
    current = tmp / "current.json"
    current.write_text(json.dumps(cfg["routing"]["production"]))
    yield {"db": tmp / "traces.db", "config": cfg_path, "current": current, "tmp": tmp, "routing": cfg["routing"]}


def replay_json(rec: dict[str, Any], candidate: Path, *extra: str) -> dict[str, Any]:
    out = rec["tmp"] / f"report-{candidate.stem}-{abs(hash(extra))}.json"
    r = run_replay("--db", str(rec["db"]), "--config", str(rec["config"]), "--slug", "production",
                   "--candidate", str(candidate), "--json", str(out), *extra)
    assert r.returncode == 0, r.stderr
    assert "success rate %" in r.stdout  # the terminal table
    return json.loads(out.read_text())


def share(side: dict[str, Any], target: str) -> float:
    return side["routes"].get(target, 0) / side["requests"]


def test_replaying_the_deployed_config_reproduces_the_recording(recorded: dict[str, Any]) -> None:
    rep = replay_json(recorded, recorded["current"], "--seed", "1")
    cur, cand = rep["current"], rep["candidate"]
    assert rep["traces"] == N and cur["requests"] == N and cand["requests"] == N
    # The recording itself shows the injected fault.
    assert share(cur, "anthropic/claude-haiku-4-5") == pytest.approx(1 - FAIL_RATE, abs=0.12)
    assert cur["success_rate"] == 1.0
    assert cand["success_rate"] == pytest.approx(cur["success_rate"], abs=TOLERANCE)
    for target in ("anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"):
        assert share(cand, target) == pytest.approx(share(cur, target), abs=TOLERANCE), target
    assert cand["failover_rate"] == pytest.approx(cur["failover_rate"], abs=TOLERANCE)
    fits = {t["target"]: t for t in rep["targets"]}
    assert fits["anthropic/claude-haiku-4-5"]["error_rate"] == pytest.approx(FAIL_RATE, abs=0.12)
    assert fits["openai/gpt-4o-mini"]["ok_rate"] == 1.0
    assert rep["unfitted_targets"] == []
    assert len(rep["rows"]) == N
    assert cand["ttft_samples"] > 0  # a quarter of the requests streamed


def test_dropping_the_failing_target_shows_the_gain(recorded: dict[str, Any]) -> None:
    cand_path = recorded["tmp"] / "candidate.json"
    cand_path.write_text(json.dumps({
        "strategy": "fallback",
        "attempts": [{"model": "gpt-4o-mini", "timeout_ms": 1500}, {"model": "gemini-2.5-flash", "timeout_ms": 1500}],
        "retry_on": ["429", "5xx", "timeout"], "total_budget_ms": 4000}))
    rep = replay_json(recorded, cand_path, "--seed", "3")
    assert rep["current"]["failover_rate"] > 0.15
    assert rep["candidate"]["failovers"] == 0
    assert rep["candidate"]["success_rate"] == 1.0
    assert rep["candidate"]["routes"] == {"openai/gpt-4o-mini": N}
    assert rep["delta"]["failover"] < -0.15
    # gemini was never called while recording: flagged only if the candidate had to use it.
    assert "google/gemini-2.5-flash" not in rep["unfitted_targets"]
    # The guard passes and exits 0; a guard it fails exits 3.
    ok = run_replay("--db", str(recorded["db"]), "--config", str(recorded["config"]), "--slug", "production",
                    "--candidate", str(cand_path), "--require", "failover<current,success>=current")
    assert ok.returncode == 0, ok.stderr
    assert "guard passed" in ok.stdout
    bad = run_replay("--db", str(recorded["db"]), "--config", str(recorded["config"]), "--slug", "production",
                     "--candidate", str(cand_path), "--require", "p50<=0.5*current")
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "guard FAILED" in bad.stdout


def test_the_same_seed_gives_the_same_report(recorded: dict[str, Any]) -> None:
    a = replay_json(recorded, recorded["current"], "--seed", "11")
    b = replay_json(recorded, recorded["current"], "--seed", "11", "--quiet")
    for rep in (a, b):
        rep.pop("wall_seconds")
    assert a == b


def test_promote_writes_a_config_version_with_its_audit_entry(recorded: dict[str, Any], tmp_path: Path) -> None:
    store = tmp_path / "control.db"
    common = ["--db", str(recorded["db"]), "--slug", "production", "--candidate", str(recorded["current"]), "--promote"]
    # Without a store to write to, promotion is refused plainly (after the guard is judged).
    r = run_replay(*common, "--require", "success>=0.5")
    assert r.returncode == 1 and "needs the config store" in r.stderr, r.stderr
    assert "guard passed" in r.stdout
    # A failing guard never writes.
    r = run_replay(*common, "--control-db", str(store), "--require", "success>=1.01")
    assert r.returncode == 3, r.stdout + r.stderr
    r = subprocess.run([MODELUX_BIN, "configs", "list", "production", "--db", str(store)], capture_output=True, text=True)
    assert "promote" not in r.stdout
    # A passing guard makes the candidate a new version, with the verdict in the audit log.
    r = run_replay(*common, "--control-db", str(store), "--require", "success>=0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"promoted @?production as version (\d+)", r.stdout)
    assert m, r.stdout
    r = subprocess.run([MODELUX_BIN, "configs", "list", "production", "--db", str(store)], capture_output=True, text=True)
    assert r.returncode == 0 and "promote" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([MODELUX_BIN, "audit", "--db", str(store), "--jsonl"], capture_output=True, text=True)
    entries = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    promoted = [e for e in entries if e.get("action") == "config.promote" and e.get("object") == "config:production"]
    assert promoted and "success" in promoted[-1]["detail"], r.stdout
    r = subprocess.run([MODELUX_BIN, "audit", "--db", str(store), "--verify"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_replay("--db", str(recorded["db"]), "--slug", "production", "--candidate", str(recorded["current"]),
                   "--promote")
    assert r.returncode == 2 and "--promote needs --require" in r.stderr


def test_responses_mode_resends_the_captured_bodies(recorded: dict[str, Any], mock: Mock) -> None:
    cand_path = recorded["tmp"] / "mini.json"
    cand_path.write_text(json.dumps({"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 2000}))
    cfg = base_config(mock.url, recorded["tmp"] / "unused.db")
    cfg_path = recorded["tmp"] / "responses.json"
    cfg_path.write_text(json.dumps(cfg))
    out = recorded["tmp"] / "responses-report.json"
    r = run_replay("--db", str(recorded["db"]), "--config", str(cfg_path), "--slug", "production", "--candidate",
                   str(cand_path), "--mode", "responses", "--limit", "12", "--concurrency", "3", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["responses"]["with_bodies"] == 12
    assert rep["responses"]["sent"] == 12
    assert rep["candidate"]["routes"] == {"openai/gpt-4o-mini": 12}
    assert mock.requests_for("gpt-4o-mini") == 12
    assert rep["responses"]["exact_matches"] >= 1  # the mock answers every model with the same text
    # A cost cap of zero sends nothing more after the first spend check.
    r = run_replay("--db", str(recorded["db"]), "--config", str(cfg_path), "--slug", "production", "--candidate",
                   str(cand_path), "--mode", "responses", "--limit", "5", "--cost-cap", "0")
    assert r.returncode == 0, r.stderr
    assert "5 requests not sent: the cost cap" in r.stdout


def test_clear_errors(recorded: dict[str, Any], mock: Mock, tmp_path: Path) -> None:
    def fails(*args: str) -> str:
        r = run_replay(*args)
        assert r.returncode in (1, 2), r.stdout
        return r.stderr

    common = ["--db", str(recorded["db"]), "--config", str(recorded["config"])]
    err = fails(*common, "--slug", "nope", "--candidate", str(recorded["current"]))
    assert "no traces for '@nope'" in err and "@production (" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"strategy": "fallback", "attempts": [{"model": "no-such-model"}]}))
    err = fails(*common, "--slug", "production", "--candidate", str(bad))
    assert "does not compile" in err and "no-such-model" in err
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert "not valid JSON" in fails(*common, "--slug", "production", "--candidate", str(garbage))
    assert "unknown metric 'succes'" in fails(*common, "--slug", "production", "--candidate", str(recorded["current"]),
                                             "--require", "succes>=current")
    assert "no trace store" in fails("--db", str(tmp_path / "missing.db"), "--slug", "production", "--candidate",
                                     str(recorded["current"]))
    # An empty store: a proxy that never served a request.
    empty_cfg = base_config(mock.url, tmp_path / "empty.db")
    p = start_proxy_process(empty_cfg, tmp_path, "empty")
    p.proc.stop()
    assert "has no traces" in fails("--db", str(tmp_path / "empty.db"), "--slug", "production", "--candidate",
                                    str(recorded["current"]))


def test_responses_mode_says_when_bodies_were_not_captured(mock: Mock, tmp_path: Path) -> None:
    cfg = base_config(mock.url, tmp_path / "nobodies.db")
    p = start_proxy_process(cfg, tmp_path, "nobodies")
    try:
        p.client().chat.completions.create(model="@production", messages=MESSAGES)
        wait_for_traces(tmp_path / "nobodies.db", 1)
    finally:
        p.proc.stop()
    cur = tmp_path / "cur.json"
    cur.write_text(json.dumps(cfg["routing"]["production"]))
    r = run_replay("--db", str(tmp_path / "nobodies.db"), "--slug", "production", "--candidate", str(cur),
                   "--mode", "responses")
    assert r.returncode == 1
    assert "capture_bodies was off" in r.stderr
