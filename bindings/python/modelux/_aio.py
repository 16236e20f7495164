"""asyncio for the router: ``Router.achat`` and ``Router.astream``.

No thread per request: the C++ executor runs the request on the router's I/O threads and,
when it finishes (or a chunk arrives while the consumer waits), queues the completion on the
event loop's :class:`_core.AsyncBridge` and writes its eventfd, which the loop watches with
``loop.add_reader``. The io thread never takes the GIL; the loop drains the queue in one
callback per wake-up (a batch of completions), building the results and resolving the
futures. Cancelling the awaiting task cancels the request's CancellationToken: the router
stops its upstream calls at once and the trace records ``cancelled``.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from asyncio import CancelledError, get_running_loop
from typing import Any, Callable, Dict, Optional, Tuple

from . import _core

__all__ = ["CancelledError", "get_running_loop", "bridge", "await_native", "AsyncChatStream"]

_bridges: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _core.AsyncBridge]" = weakref.WeakKeyDictionary()
# The last (loop, bridge) pair, one object so that loops in other threads never see a mix.
_last: "Optional[Tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], _core.AsyncBridge]]" = None


def bridge(loop: asyncio.AbstractEventLoop) -> "_core.AsyncBridge":
    """The loop's completion bridge, made and registered (``add_reader``) on first use. Its
    reader goes away with the loop (closing a loop closes its selector)."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    b = _bridges.get(loop)
    if b is None:
        b = _core.AsyncBridge()
        loop.add_reader(b.fileno(), b.drain)
        _bridges[loop] = b
    _last = (weakref.ref(loop), b)
    return b


async def await_native(start: "Callable[[_core.AsyncBridge, asyncio.Future[Any]], _core.PendingChat]") -> Any:
    """Starts a request with the running loop's bridge and a future the loop's drain resolves,
    and waits for it; cancelling the task cancels the request (and re-raises CancelledError)."""
    loop = get_running_loop()
    fut: "asyncio.Future[Any]" = loop.create_future()
    pending = start(bridge(loop), fut)
    try:
        return await fut
    except CancelledError:
        pending.cancel()
        raise


class AsyncChatStream:
    """Async iterator of ``chat.completion.chunk`` dicts (``async for chunk in
    router.astream(...)``). Chunks wait in the same small bounded queue as :class:`ChatStream`
    (a slow consumer slows its own upstream). Cancelling the consuming task, ``aclose()`` or
    leaving ``async with`` cancels the request. An error after the last chunk is raised from
    the iteration."""

    def __init__(self, native: "_core.ChatStream") -> None:
        self._native = native
        loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        native.set_notifier(self._event.set, bridge(loop))

    def __aiter__(self) -> "AsyncChatStream":
        return self

    async def __anext__(self) -> Dict[str, Any]:
        while True:
            self._event.clear()
            try:
                chunk = self._native.poll()
            except StopIteration:
                raise StopAsyncIteration from None
            if chunk is not None:
                return chunk
            try:
                await self._event.wait()
            except asyncio.CancelledError:
                self._native.close()
                raise

    def close(self) -> None:
        """Cancels the request (if still running). Returns at once."""
        self._native.close()

    async def aclose(self) -> None:
        self._native.close()

    async def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits (without blocking the loop) until the request finished; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._native.finished:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    @property
    def finished(self) -> bool:
        return self._native.finished

    @property
    def cancelled(self) -> bool:
        return self._native.cancelled

    @property
    def trace(self) -> Optional[Dict[str, Any]]:
        """The DecisionTrace as a dict once the request finished, else None."""
        t = self._native.trace_json()
        return None if t is None else json.loads(t)

    async def __aenter__(self) -> "AsyncChatStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._native.close()
