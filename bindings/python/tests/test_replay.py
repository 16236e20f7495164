"""modelux.replay from Python: traffic through a Router (tracing on) to the mock, then the
report object, its rows view (pandas-ready records), the guard, and the errors."""

from __future__ import annotations

import json

import pytest

import modelux

MESSAGES = [{"role": "user", "content": "hello"}]
N = 40


@pytest.fixture()
def recorded(mock, config, tmp_path):
    db = tmp_path / "traces.db"
    config["tracing"] = {"path": str(db), "capture_bodies": True}
    mock.configure({"claude-haiku-4-5": {"error_status": 500, "error_rate": 0.5}})
    router = modelux.Router(config, tracing=True)
    try:
        for i in range(N):
            router.chat("@production", MESSAGES, project="py-replay", end_user=f"u{i % 3}")
    finally:
        router.close()  # flushes the tracer
    return db, config


def test_replay_returns_a_report_with_rows_pandas_can_take(recorded):
    db, config = recorded
    candidate = {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 2000}
    report = modelux.replay("production", candidate, db=db, config=config, seed=3)
    assert isinstance(report, modelux.ReplayReport)
    assert report.slug == "@production" and report.traces == N
    assert report.current["requests"] == N
    assert report.current["failovers"] > 0  # half the primaries answered 500
    assert report.candidate["failovers"] == 0
    assert report.candidate["routes"] == {"openai/gpt-4o-mini": N}
    assert report.delta["failover"] < 0
    records = report.to_records()
    assert len(records) == N
    assert {"request_id", "current_ok", "candidate_ok", "candidate_target", "candidate_latency_ms"} <= set(records[0])
    assert all(r["candidate_target"] == "openai/gpt-4o-mini" for r in records)
    assert "success rate %" in str(report)
    json.dumps(report.to_dict())  # plain JSON types only
    verdict = report.check("failover<current,success>=current")
    assert verdict["passed"], verdict["summary"]
    assert not report.check("p50<=0*current")["passed"]
    same = modelux.replay("production", candidate, db=db, config=config, seed=3)
    assert same.rows == report.rows


def test_pandas_takes_the_rows_when_installed(recorded):
    pandas = pytest.importorskip("pandas")
    db, config = recorded
    report = modelux.replay("production", config["routing"]["production"], db=db, config=config)
    df = pandas.DataFrame(report.to_records())
    assert len(df) == N
    assert df["current_ok"].all()


def test_responses_mode_with_a_python_scorer(recorded):
    db, config = recorded
    seen = []

    def scorer(pair):
        seen.append(pair["request_id"])
        return 1.0 if pair["recorded"] == pair["candidate"] else 0.0

    report = modelux.replay("production", {"strategy": "single", "model": "gpt-4o-mini"}, db=db, config=config,
                            mode="responses", limit=5, concurrency=2, scorer=scorer)
    assert report.responses["sent"] == 5
    assert len(seen) == 5
    assert report.responses["mean_score"] == 1.0  # the mock answers every model alike
    assert all(r["score"] == 1.0 for r in report.to_records())


def test_replay_errors_are_modelux_errors(recorded, tmp_path):
    db, config = recorded
    with pytest.raises(modelux.NotFoundError, match="no traces for '@nope'"):
        modelux.replay("nope", config["routing"]["production"], db=db, config=config)
    with pytest.raises(modelux.InvalidConfigError, match="does not compile"):
        modelux.replay("production", {"strategy": "single", "model": "no-such-model"}, db=db, config=config)
    with pytest.raises(modelux.StorageError, match="no trace store"):
        modelux.replay("production", config["routing"]["production"], db=tmp_path / "missing.db")
    report = modelux.replay("production", config["routing"]["production"], db=db, config=config)
    with pytest.raises(modelux.BadRequestError, match="unknown metric"):
        report.check("succes>=current")
    with pytest.raises(ValueError, match="bad duration"):
        modelux.replay("production", config["routing"]["production"], db=db, since="7 days")
