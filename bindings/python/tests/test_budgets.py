"""Spend caps from Python (docs/budgets.md, docs/python.md): a project over its cap raises
`modelux.BudgetExceededError` (kind budget_exceeded, HTTP-style status 429 semantics), before
any upstream call, with the trace attached; another project is not affected."""

from __future__ import annotations

import json
import urllib.request

import pytest

import modelux


def test_a_project_over_its_cap_raises_budget_exceeded_error(mock, config):
    config["budgets"] = [{"name": "py-cap", "scope": {"project": "py"}, "window": "daily", "limit_usd": 0.0005}]
    router = modelux.Router(config, tracing=False)
    try:
        served = 0
        err = None
        for _ in range(20):
            try:
                r = router.chat("gpt-4o", [{"role": "user", "content": "hello"}], project="py", max_tokens=16)
                assert r.text
                served += 1
            except modelux.BudgetExceededError as e:
                err = e
                break
        assert err is not None, "the cap never blocked"
        assert served >= 1
        assert isinstance(err, modelux.ModeluxError)
        assert not isinstance(err, modelux.RateLimitError)  # a cap is ours, not the provider's
        assert err.kind == "budget_exceeded"
        assert "py-cap" in err.message
        assert err.trace is not None and err.trace["ok"] is False
        # Refused before the provider was asked.
        stats = mock.get("/_mock/stats")
        assert stats["models"]["gpt-4o"]["requests"] == served
        # Another project has its own (unconfigured) spend.
        assert router.chat("gpt-4o", [{"role": "user", "content": "hello"}], project="other", max_tokens=16).text
    finally:
        router.close()
