"""The offline test kit from Python: simulated targets on a virtual clock."""

from __future__ import annotations

import pytest

import modelux

from conftest import router_config

KEYS = ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini", "google/gemini-2.5-flash"]


def healthy(sim: modelux.Simulator) -> None:
    for k in KEYS:
        sim.add_target(k, latency={"median_ms": 400, "sigma": 0.2})


def test_primary_rate_limited_fails_over_to_the_secondary() -> None:
    sim = modelux.Simulator(router_config(None))
    healthy(sim)
    sim.add_target(KEYS[0], latency=400, errors={"rate_limited": 1.0})
    report = sim.run("@production", 300, use_health=False)
    assert report["requests"] == 300
    assert report["success_rate"] == 1.0
    assert report["routes"] == {KEYS[1]: 300}
    assert report["failovers"] == 300
    assert report["attempts"] == 600
    assert report["cost_usd"] > 0
    assert "300 requests" in report["summary"]


def test_runs_are_deterministic_for_a_seed_and_differ_across_seeds() -> None:
    def run(seed: int) -> dict:  # type: ignore[type-arg]
        sim = modelux.Simulator()
        healthy(sim)
        sim.add_target(KEYS[0], latency=400, errors={"server_error": 0.3})
        return sim.run("@production", 500, seed=seed)

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a["routes"] != c["routes"] or a["p50_ms"] != c["p50_ms"]
    assert 0 < a["failovers"] < 500


def test_inline_config_and_traces() -> None:
    sim = modelux.Simulator()
    sim.add_target("openai/gpt-4o-mini", latency=100, hang_probability=1.0)
    sim.add_target("google/gemini-2.5-flash", latency=200)
    cfg = {
        "strategy": "fallback",
        "attempts": [{"model": "gpt-4o-mini", "timeout_ms": 1000}, {"model": "gemini-2.5-flash", "timeout_ms": 2000}],
        "retry_on": ["timeout"],
        "total_budget_ms": 5000,
    }
    report = sim.run(cfg, 20, keep_traces=True, project="sim-test", use_health=False)
    assert report["success_rate"] == 1.0
    assert len(report["results"]) == 20
    for r in report["results"]:
        assert r["served"] == "google/gemini-2.5-flash"
        # The hung primary costs its whole 1 s attempt timeout, then the secondary answers.
        assert r["latency_ms"] >= 1000
        assert [a["outcome"] for a in r["trace"]["attempts"]] == ["timeout", "ok"]
        assert r["trace"]["project"] == "sim-test"


def test_bad_targets_and_routes_raise_with_a_path() -> None:
    sim = modelux.Simulator()
    with pytest.raises(modelux.BadRequestError) as e:
        sim.add_target("openai/gpt-4o-mini", errors={"teapot": 0.5})
    assert e.value.path == "$.errors.teapot"
    with pytest.raises(modelux.BadRequestError) as e2:
        sim.add_target("no-slash")
    assert e2.value.path == "$.key"
    with pytest.raises(modelux.NotFoundError):
        sim.run("@nope", 10)
    with pytest.raises(modelux.InvalidConfigError) as e3:
        sim.run({"strategy": "single", "model": "no-such-model"}, 10)
    assert e3.value.path.startswith("$")
