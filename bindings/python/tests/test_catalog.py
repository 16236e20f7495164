"""Version, catalog and cost: checked against the shipped data files, not hard-coded numbers."""

from __future__ import annotations

import json
import math
import re
from importlib.metadata import version as dist_version
from typing import Any, Dict

import pytest

import modelux
from modelux import _core

from conftest import REPO


def raw_catalog() -> Dict[str, Any]:
    with open(REPO / "data" / "catalog.json", encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def test_version_flows_from_cmake_project() -> None:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    m = re.search(r"project\(modelux\s+VERSION\s+([0-9.]+)", text)
    assert m is not None
    assert _core.version() == m.group(1)
    assert modelux.__version__ == _core.version()
    assert dist_version("modelux") == modelux.__version__


def test_catalog_matches_shipped_data() -> None:
    models = {m["id"]: m for m in modelux.catalog()}
    raw = raw_catalog()["models"]
    assert len(models) == len(raw) > 0
    for r in raw:
        m = models[r["id"]]
        assert m["provider"] == r["provider"]
        assert m["priced"] == r["priced"]
        assert m["context_window"] == r["context_window"]
        assert m["quality_tier"] == r["tier"]
        assert 1 <= m["quality_tier"] <= 5
        if r["priced"]:
            assert m["input_per_m"] == pytest.approx(r["input"])
            assert m["output_per_m"] == pytest.approx(r["output"])
        else:
            assert m["input_per_m"] is None and m["output_per_m"] is None


def test_catalog_returns_a_copy() -> None:
    first = modelux.catalog()
    first[0]["id"] = "mutated"
    assert modelux.catalog()[0]["id"] != "mutated"


def test_cost_follows_catalog_prices() -> None:
    priced = [r for r in raw_catalog()["models"] if r["priced"]]
    assert priced
    for r in priced:
        mid = r["id"]
        assert modelux.cost(mid, prompt_tokens=1_000_000) == pytest.approx(r["input"])
        assert modelux.cost(mid, completion_tokens=1_000_000) == pytest.approx(r["output"])
        # A mixed call: cached reads at the cached rate, cache writes at the write rate (each the
        # input rate when the provider bills no separate one), the rest of the input at the
        # input rate, output at the output rate.
        cached_rate = r["input"] if r["cached_input"] is None else r["cached_input"]
        write_rate = r["input"] if r["cache_write"] is None else r["cache_write"]
        expected = (700 * r["input"] + 200 * cached_rate + 100 * write_rate + 50 * r["output"]) / 1e6
        got = modelux.cost(mid, prompt_tokens=1000, completion_tokens=50, cached_tokens=200, cache_write_tokens=100)
        assert got == pytest.approx(expected, rel=1e-9), mid
        assert not math.isnan(got)


def test_cost_unknown_model_raises_not_found() -> None:
    with pytest.raises(modelux.NotFoundError) as e:
        modelux.cost("no-such-model", prompt_tokens=10)
    assert e.value.kind == "not_found"
    assert isinstance(e.value, modelux.ModeluxError)
    assert isinstance(e.value, LookupError)
    assert "no-such-model" in str(e.value)


def test_cost_unpriced_model_raises_instead_of_zero() -> None:
    unpriced = [m["id"] for m in modelux.catalog() if not m["priced"]]
    assert unpriced, "the shipped catalog has unpriced models (see docs/catalog.md)"
    with pytest.raises(modelux.UnpricedModelError) as e:
        modelux.cost(unpriced[0], prompt_tokens=10)
    assert e.value.code == "unpriced"


def test_cost_rejects_negative_and_inconsistent_tokens() -> None:
    with pytest.raises(modelux.BadRequestError):
        modelux.cost("gpt-4o-mini", prompt_tokens=-1)
    with pytest.raises(ValueError):
        modelux.cost("gpt-4o-mini", prompt_tokens=10, cached_tokens=20)


def test_every_error_kind_maps_to_an_exception() -> None:
    kinds = _core.error_kinds()
    assert "rate_limited" in kinds and "invalid_config" in kinds
    assert set(kinds) == set(modelux.KIND_TO_EXCEPTION)
    for k in kinds:
        assert issubclass(modelux.KIND_TO_EXCEPTION[k], modelux.ModeluxError)
    assert issubclass(modelux.ModeluxTimeout, TimeoutError)
