"""pytest fixtures for the end-to-end suite (helpers live in e2e_support.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

from e2e_support import Mock, Proxy, ServerProcess, start_proxy_process, base_config

# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    tmp = tmp_path_factory.mktemp("mock")
    proc = ServerProcess(["mock", "--port", "0", "--seed", "42"], tmp / "mock.log")
    try:
        yield Mock(proc)
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def _reset_mock(request: pytest.FixtureRequest) -> None:
    """Every test starts from a fault-free mock with zeroed counters."""
    if "mock" in request.fixturenames:
        m: Mock = request.getfixturevalue("mock")
        assert m.proc.alive(), "the mock provider died"
        m.reset()


def _run_proxy(mock: Mock, tmp: Path) -> Iterator[Proxy]:
    p = start_proxy_process(base_config(mock.url, tmp / "traces.db"), tmp, "proxy")
    try:
        yield p
    finally:
        alive = p.proc.alive()
        p.proc.stop()
        assert alive, f"the proxy died; log: {p.proc.log_path.read_text(errors='replace')[-2000:]}"


@pytest.fixture
def proxy(mock: Mock, tmp_path: Path) -> Iterator[Proxy]:
    """A fresh proxy per test. The proxy keeps live health per target (breakers trip after
    consecutive failures, a 429's retry-after makes a target sit out), so a test that injects
    faults must not share it with the next test."""
    yield from _run_proxy(mock, tmp_path)


@pytest.fixture(scope="module")
def shared_proxy(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """One proxy for a whole module: only for tests that inject no faults."""
    yield from _run_proxy(mock, tmp_path_factory.mktemp("proxy"))


@pytest.fixture
def start_proxy(mock: Mock, tmp_path: Path) -> Iterator[Any]:
    """Factory: start_proxy(edit) starts a proxy on base_config edited by `edit(cfg)`."""
    started: list[Proxy] = []

    def start(edit: Any = None) -> Proxy:
        cfg = base_config(mock.url, tmp_path / f"traces{len(started)}.db")
        if edit:
            edit(cfg)
        p = start_proxy_process(cfg, tmp_path, f"proxy{len(started)}")
        started.append(p)
        return p

    yield start
    for p in started:
        p.proc.stop()


@pytest.fixture
def client(proxy: Proxy) -> openai.OpenAI:
    return proxy.client()


@pytest.fixture
def shared_client(shared_proxy: Proxy) -> openai.OpenAI:
    return shared_proxy.client()


_slug_counter = 0


@pytest.fixture
def route(proxy: Proxy) -> Any:
    """route(cfg) installs `cfg` under a fresh slug on the test's proxy and returns "@slug"."""

    def install(cfg: dict) -> str:
        global _slug_counter
        _slug_counter += 1
        slug = f"t{_slug_counter}"
        proxy.put_config(slug, cfg)
        return f"@{slug}"

    return install


