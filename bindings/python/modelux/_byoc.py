"""Bring your own client: the app keeps its own openai / anthropic client and makes every
provider call itself; modelux decides the route, reserves and settles budgets, feeds health
and breakers, and records the decision trace — the same ClientSession driver the C++ API has
(``Router::begin``)::

    with router.attempts("@production", messages, max_tokens=200) as a:
        for attempt in a:                       # attempt.provider, .model, .upstream_model
            try:
                a.report(attempt, my_openai.chat.completions.create(
                    model=attempt.upstream_model, messages=messages, max_tokens=200))
            except Exception as e:              # the SDK's errors: status, retry-after
                a.report(attempt, error=e)
    a.result.text, a.result.trace
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterator, Mapping, Optional

from . import _core
from ._errors import ModeluxError


class Attempt:
    """One attempt the app must make: call ``provider`` with ``upstream_model`` (the name the
    provider knows; ``model`` is the catalog id) within ``timeout_s``, then report it."""

    __slots__ = ("id", "model", "provider", "upstream_model", "timeout_s", "deadline_s", "why", "member", "reported")

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.id: int = int(d["id"])
        self.model: str = str(d["model"])
        self.provider: str = str(d["provider"])
        self.upstream_model: str = str(d["upstream_model"])
        self.timeout_s: float = float(d["timeout_s"])
        self.deadline_s: float = float(d["deadline_s"])
        self.why: str = str(d["why"])
        self.member: int = int(d["member"])
        self.reported: bool = False

    def __repr__(self) -> str:
        return f"Attempt(id={self.id}, target={self.provider}/{self.model}, why={self.why!r})"


def _status_and_headers(error: BaseException) -> Optional[tuple[int, Dict[str, str], str]]:
    """(status, headers, body) of an SDK's HTTP status error (openai.APIStatusError,
    anthropic.APIStatusError and alike), None for anything else."""
    status = getattr(error, "status_code", None)
    if not isinstance(status, int):
        return None
    headers: Dict[str, str] = {}
    body = ""
    response = getattr(error, "response", None)
    if response is not None:
        try:
            headers = {str(k): str(v) for k, v in response.headers.items()}
        except Exception:  # pragma: no cover - an unusual response object
            headers = {}
        try:
            body = str(response.text)
        except Exception:  # pragma: no cover
            body = ""
    if not body:
        b = getattr(error, "body", None)
        body = json.dumps(b) if b is not None else json.dumps({"error": {"message": str(error)}})
    return status, headers, body


def _error_kind(error: BaseException) -> str:
    name = type(error).__name__
    if isinstance(error, TimeoutError) or "Timeout" in name:
        return "timeout"
    if isinstance(error, ConnectionError) or "Connection" in name:
        return "connection"
    return "server_error"


class Attempts:
    """A bring-your-own-client session (``Router.attempts``). Iterate it for the attempts to
    make, ``report()`` each one, and read ``result`` at the end. Not thread-safe: one thread
    drives one session. Leaving the ``with`` block ends the session (attempts not reported
    count as failed and hold no budget)."""

    def __init__(self, native: "_core.ClientSession") -> None:
        self._native = native
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._done = False

    def __iter__(self) -> Iterator[Attempt]:
        while not self._done:
            step = json.loads(self._native.next())
            kind = step["kind"]
            if kind == "attempt":
                for d in step["attempts"]:
                    attempt = Attempt(d)
                    yield attempt
                    if not attempt.reported:
                        self._native.report_error(attempt.id, "internal", "the app did not report this attempt")
            elif kind == "wait":
                wait_s = step["wait_s"]
                if wait_s is None:  # nothing open and nothing scheduled: cannot happen sequentially
                    break
                time.sleep(min(float(wait_s), 60.0))
            else:
                break
        self._finish()

    def report(
        self,
        attempt: Attempt,
        response: Any = None,
        *,
        error: Optional[BaseException] = None,
        status: Optional[int] = None,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[str] = None,
    ) -> None:
        """Reports one attempt's outcome. One of:

        - ``response``: an ``openai`` ``ChatCompletion`` or a dict in that shape, or the
          provider SDK's own response object (e.g. ``anthropic.types.Message``), decoded with
          the attempt provider's codec;
        - ``error``: the exception the call raised; an SDK's HTTP status error gives the
          status, headers (retry-after) and body, a timeout / connection error its kind;
        - ``status``, ``headers``, ``body``: a raw HTTP answer in the provider's wire format.
        """
        if attempt.reported:
            raise ValueError(f"{attempt!r} was already reported")
        if response is None and error is None and status is None:
            raise TypeError("report() needs a response, an error, or a status")
        try:
            self._report(attempt, response, error, status, headers, body)
        except BaseException:
            # Not recorded (e.g. a response that does not decode): the attempt stays open, and
            # counts as failed if the app moves on without reporting it again.
            attempt.reported = False
            raise
        attempt.reported = True

    def _report(
        self,
        attempt: Attempt,
        response: Any,
        error: Optional[BaseException],
        status: Optional[int],
        headers: Optional[Mapping[str, str]],
        body: Optional[str],
    ) -> None:
        if status is not None:
            self._native.report_http(attempt.id, status, list((headers or {}).items()), body or "")
        elif error is not None:
            if isinstance(error, ModeluxError):
                self._native.report_error(attempt.id, error.kind, error.message, error.status, error.retry_after)
                return
            http = _status_and_headers(error)
            if http is not None:
                self._native.report_http(attempt.id, http[0], list(http[1].items()), http[2])
            else:
                self._native.report_error(attempt.id, _error_kind(error), f"{type(error).__name__}: {error}")
        elif response is not None:
            if isinstance(response, Mapping):
                self._native.report_response(attempt.id, json.dumps(dict(response)))
            elif getattr(response, "object", None) == "chat.completion" and hasattr(response, "model_dump"):
                self._native.report_response(attempt.id, json.dumps(response.model_dump(mode="json", exclude_none=True)))
            elif hasattr(response, "model_dump_json"):
                self._native.report_http(attempt.id, 200, [], response.model_dump_json())
            else:
                raise TypeError(f"cannot report a {type(response).__name__}: pass a dict or an SDK response object")

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        from . import ChatCompletion

        try:
            body, trace = self._native.finish()
            self._result = ChatCompletion(json.loads(body), trace)
        except ModeluxError as e:
            self._error = e

    @property
    def result(self) -> Any:
        """The served answer (a :class:`modelux.ChatCompletion` with ``.trace``); raises the
        final :class:`ModeluxError` (with ``.trace``) when every attempt failed."""
        self._finish()
        if self._error is not None:
            raise self._error
        return self._result

    @property
    def trace(self) -> Optional[Dict[str, Any]]:
        """The decision trace once the session ended."""
        self._finish()
        if self._error is not None:
            return getattr(self._error, "trace", None)
        return self._result.trace if self._result is not None else None

    def native_request(self, attempt: Attempt) -> Dict[str, Any]:
        """``{"method", "url", "headers", "body"}``: the HTTP request modelux would send for
        ``attempt`` (provider key included), for apps that bring their own HTTP stack."""
        return json.loads(self._native.native_request(attempt.id))  # type: ignore[no-any-return]

    def __enter__(self) -> "Attempts":
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
