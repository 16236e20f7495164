"""asyncio for the router: ``Router.achat`` and ``Router.astream``.

No thread per request: the C++ executor runs the request on the router's I/O threads and,
when it finishes (or a chunk arrives while the consumer waits), calls a small Python callable
that schedules the wake-up on the event loop with ``loop.call_soon_threadsafe``. The GIL is
taken only for that call. Cancelling the awaiting task cancels the request's
CancellationToken: the router stops its upstream calls at once and the trace records
``cancelled``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Dict, Optional

from . import _core


def _waker(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> Callable[[], None]:
    def wake() -> None:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop was closed meanwhile: nobody waits any more
            pass

    return wake


async def await_pending(start: Callable[[Callable[[], None]], "_core.PendingChat"]) -> "_core.PendingChat":
    """Starts a request with a notifier bound to the running loop and waits for it; cancelling
    the task cancels the request (and re-raises CancelledError)."""
    loop = asyncio.get_running_loop()
    fut: "asyncio.Future[None]" = loop.create_future()

    def resolve() -> None:
        if not fut.done():
            fut.set_result(None)

    pending = start(_waker(loop, resolve))
    try:
        await fut
    except asyncio.CancelledError:
        pending.cancel()
        raise
    return pending


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
        native.set_notifier(_waker(loop, self._event.set))

    def __aiter__(self) -> "AsyncChatStream":
        return self

    async def __anext__(self) -> Dict[str, Any]:
        while True:
            self._event.clear()
            try:
                text = self._native.poll()
            except StopIteration:
                raise StopAsyncIteration from None
            if text is not None:
                return json.loads(text)  # type: ignore[no-any-return]
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
