"""Ensembles and cascades over real sockets, through the proxy and the mock (docs/routing.md):
a `first_valid` ensemble answers with the fast member and cancels the hung one (its trace
attempt says `cancelled` and its upstream connection is closed at once, not at its timeout);
`majority_vote` picks the answer most members gave; a cascade moves past a rejected answer."""

from __future__ import annotations

import time

from e2e_support import MESSAGES, MOCK_TEXT, collect_stream
from net_support import upstream_sockets


def test_first_valid_ensemble_cancels_the_hung_member_and_closes_its_connection(proxy, mock, route, client):
    mock.configure({"claude-haiku-4-5": {"hang_rate": 1.0}})
    slug = route({"strategy": "ensemble", "aggregation": "first_valid", "timeout_ms": 20000,
                  "members": ["claude-haiku-4-5", "gpt-4o-mini"]})
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model=slug, messages=MESSAGES)
    elapsed = time.monotonic() - t0
    assert raw.parse().choices[0].message.content == MOCK_TEXT
    assert elapsed < 10, "the ensemble waited for the hung member"
    trace = proxy.trace(raw.headers["x-request-id"])
    assert trace["served_model"] == "gpt-4o-mini"
    outcomes = {a["model"]: a["outcome"] for a in trace["attempts"]}
    assert outcomes == {"claude-haiku-4-5": "cancelled", "gpt-4o-mini": "ok"}, trace["attempts"]
    assert mock.stats()["models"]["claude-haiku-4-5"]["hangs"] == 1  # the loser really was waiting upstream
    # Only the winner's connection stays (pooled); the loser's is closed, not left to hang.
    deadline = time.monotonic() + 5
    while upstream_sockets(proxy.proc.proc.pid, mock.port) > 1:
        assert time.monotonic() < deadline, "the cancelled member's upstream connection is still open"
        time.sleep(0.02)


def test_majority_vote_over_three_members_and_replayed_as_a_stream(proxy, mock, route, client):
    mock.configure({"claude-haiku-4-5": {"text": "Paris."}, "gpt-4o-mini": {"text": "paris"},
                    "gemini-2.5-flash": {"text": "London"}})
    slug = route({"strategy": "ensemble", "aggregation": "majority_vote", "timeout_ms": 5000,
                  "members": ["claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash"]})
    raw = client.chat.completions.with_raw_response.create(model=slug, messages=MESSAGES)
    assert raw.parse().choices[0].message.content.lower().startswith("paris")
    trace = proxy.trace(raw.headers["x-request-id"])
    assert sorted(a["model"] for a in trace["attempts"]) == ["claude-haiku-4-5", "gemini-2.5-flash", "gpt-4o-mini"]
    assert "2/3" in trace["aggregation"], trace["aggregation"]
    for m in ("claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash"):
        assert mock.requests_for(m) == 1
    # Streaming callers get the chosen answer replayed as chunks.
    got = collect_stream(client.chat.completions.create(model=slug, messages=MESSAGES, stream=True))
    assert got.content.lower().startswith("paris")
    assert got.finish_reason == "stop"


def test_cascade_moves_past_a_rejected_answer(proxy, mock, route, client):
    mock.configure({"gpt-4o-mini": {"text": "not json at all"}, "gpt-4o": {"text": '{"city": "Paris"}'}})
    slug = route({"strategy": "cascade", "accept": {"valid_json": True},
                  "steps": [{"model": "gpt-4o-mini"}, {"model": "gpt-4o"}]})
    raw = client.chat.completions.with_raw_response.create(model=slug, messages=MESSAGES)
    assert raw.parse().choices[0].message.content == '{"city": "Paris"}'
    trace = proxy.trace(raw.headers["x-request-id"])
    assert [a["model"] for a in trace["attempts"]] == ["gpt-4o-mini", "gpt-4o"]
    assert trace["attempts"][0]["why_ended"].startswith("rejected"), trace["attempts"][0]
    assert trace["served_model"] == "gpt-4o"
    assert mock.requests_for("gpt-4o-mini") == 1 and mock.requests_for("gpt-4o") == 1
