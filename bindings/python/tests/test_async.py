"""asyncio (docs/python.md "asyncio"): Router.achat / Router.astream complete into the event
loop from the router's I/O threads (no thread per request), and cancelling the task cancels
the upstream call — the trace records `cancelled` and the mock sees the stream abandoned."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import modelux

from conftest import MOCK_TEXT, MockProvider

MSGS = [{"role": "user", "content": "hello"}]


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_achat_answers_with_trace_and_fails_over(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"claude-haiku-4-5": {"error_status": 500}})

    async def main() -> modelux.ChatCompletion:
        with modelux.Router(config, tracing=False) as router:
            return await router.achat("@production", MSGS, project="p", max_tokens=20)

    r = asyncio.run(main())
    assert r.text == MOCK_TEXT
    assert r.served_model == "gpt-4o-mini"
    assert [a["outcome"] for a in r.trace["attempts"]] == ["server_error", "ok"]
    assert r.trace["project"] == "p"


def test_achat_raises_the_mapped_error_with_trace(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"error_status": 401}})

    async def main() -> None:
        with modelux.Router(config, tracing=False) as router:
            await router.achat("@fast", MSGS)

    with pytest.raises(modelux.AuthenticationError) as ei:
        asyncio.run(main())
    assert ei.value.trace is not None and ei.value.trace["attempts"][0]["status"] == 401


def test_achat_runs_many_requests_without_a_thread_each(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"latency_ms": 200}})
    seen_threads: List[int] = []

    async def main() -> List[modelux.ChatCompletion]:
        with modelux.Router(config, tracing=False) as router:
            async def one() -> modelux.ChatCompletion:
                seen_threads.append(threading.active_count())
                return await router.achat("@fast", MSGS)

            tasks = [asyncio.ensure_future(one()) for _ in range(50)]
            await asyncio.sleep(0.05)
            seen_threads.append(threading.active_count())
            return list(await asyncio.gather(*tasks))

    before = threading.active_count()
    results = asyncio.run(main())
    assert all(r.text == MOCK_TEXT for r in results)
    # 50 requests in flight at once did not start 50 Python threads (the router has its own
    # io thread and the C++ side calls back into the loop).
    assert max(seen_threads) - before < 5


def test_cancelling_achat_cancels_the_upstream_call(mock: MockProvider, config: Dict[str, Any], tmp_path: Path) -> None:
    mock.configure({"gpt-4o-mini": {"latency_ms": 30000}})
    config["tracing"] = {"enabled": True, "path": str(tmp_path / "t.db")}
    router = modelux.Router(config)

    async def main() -> None:
        task = asyncio.ensure_future(router.achat("@fast", MSGS, request_id="req-cancel"))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: wait_until(lambda: mock.get("/_mock/stats")["total"] >= 1))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 20  # never waited for the 30 s upstream
    store = router.trace_store()
    assert store is not None
    wait_until(lambda: store.get("req-cancel") is not None)
    trace = store.get("req-cancel")
    assert trace is not None
    assert trace["error_kind"] == "cancelled"
    assert trace["attempts"][0]["outcome"] == "cancelled"
    router.close()


def test_astream_yields_chunks_then_the_trace(mock: MockProvider, config: Dict[str, Any]) -> None:
    async def main() -> str:
        with modelux.Router(config, tracing=False) as router:
            text = ""
            async with router.astream("@fast", MSGS) as stream:
                async for chunk in stream:
                    if chunk["choices"]:
                        text += chunk["choices"][0]["delta"].get("content") or ""
            assert await stream.wait(5)
            assert stream.trace is not None and stream.trace["ok"] is True
            return text

    assert asyncio.run(main()) == MOCK_TEXT


def test_astream_error_after_output_is_raised(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 6, "disconnect_after_chunks": 2}})

    async def main() -> int:
        got = 0
        with modelux.Router(config, tracing=False) as router:
            async for _ in router.astream("@fast", MSGS):
                got += 1
        return got

    with pytest.raises(modelux.ProviderError) as ei:
        asyncio.run(main())
    assert ei.value.kind == "stream_interrupted"


def test_cancelling_an_astream_task_closes_the_upstream(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"chunks": 50, "chunk_interval_ms": 500}})
    router = modelux.Router(config, tracing=False)
    streams: List[modelux.AsyncChatStream] = []

    async def consume(first: "asyncio.Future[None]") -> None:
        s = router.astream("@fast", MSGS)
        streams.append(s)
        async for _ in s:
            if not first.done():
                first.set_result(None)

    async def main() -> None:
        first: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(consume(first))
        await first
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await streams[0].wait(10)

    asyncio.run(main())
    assert streams[0].cancelled
    trace = streams[0].trace
    assert trace is not None and trace["error_kind"] == "cancelled"
    # The mock saw the connection closed mid-stream.
    wait_until(lambda: mock.get("/_mock/stats")["models"]["gpt-4o-mini"]["streams_abandoned"] == 1)
    router.close()


def test_the_event_loop_keeps_running_while_achat_waits(mock: MockProvider, config: Dict[str, Any]) -> None:
    mock.configure({"gpt-4o-mini": {"latency_ms": 300}})
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    async def main() -> modelux.ChatCompletion:
        with modelux.Router(config, tracing=False) as router:
            stop = asyncio.Event()
            t = asyncio.ensure_future(ticker(stop))
            r = await router.achat("@fast", MSGS)
            stop.set()
            await t
            return r

    assert asyncio.run(main()).text == MOCK_TEXT
    # The loop was not blocked during the 300 ms upstream wait (the GIL was free, nothing
    # blocked the loop's thread): the ticker ran many times meanwhile.
    assert ticks >= 10


EXIT_SCRIPT = """
import asyncio, modelux
from modelux.testing import MockProvider
mock = MockProvider({"default": {"chunks": 50, "chunk_interval_ms": 100}})
router = modelux.Router(mock.router_config(), tracing=False)
M = [{"role": "user", "content": "hi"}]
async def main():
    async for _ in router.astream("@fast", M):
        break                                       # a stream left running, never closed
    asyncio.ensure_future(router.achat("@fast", M))  # a request still pending at loop close
    await asyncio.sleep(0.05)
asyncio.run(main())
print("exiting")
"""


def test_interpreter_exit_with_requests_in_flight_is_clean(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "exit_with_streams.py"
    script.write_text(EXIT_SCRIPT, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "exiting"
