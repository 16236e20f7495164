"""modelux exceptions: one class per group of ``ErrorKind``, all under :class:`ModeluxError`.

Every exception carries the C++ ``Error``'s fields: ``kind`` (the ErrorKind name, e.g.
``"rate_limited"``), ``status`` (provider/HTTP status, 0 if none), ``path`` (JSON path of a bad
config or request field, "" if none), ``retry_after`` (seconds, or None), ``provider``, ``code``
and, for a failed request, ``trace`` (the DecisionTrace as a dict).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Type

__all__ = [
    "ModeluxError",
    "InvalidConfigError",
    "BadRequestError",
    "NotFoundError",
    "UnpricedModelError",
    "AuthenticationError",
    "RateLimitError",
    "ProviderError",
    "ModeluxTimeout",
    "ConnectionFailed",
    "BudgetExceededError",
    "NoRouteError",
    "RequestCancelled",
    "StorageError",
    "LocalResourceExhausted",
    "InternalError",
    "KIND_TO_EXCEPTION",
]


class ModeluxError(Exception):
    """Base class of every error modelux raises."""

    kind: str
    message: str
    status: int
    path: str
    retry_after: Optional[float]
    provider: str
    code: str
    trace: Optional[Dict[str, Any]]

    def __init__(
        self,
        message: str,
        *,
        kind: str = "internal",
        status: int = 0,
        path: str = "",
        retry_after: Optional[float] = None,
        provider: str = "",
        code: str = "",
        trace: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.path = path
        self.retry_after = retry_after
        self.provider = provider
        self.code = code
        self.trace = trace

    def __str__(self) -> str:
        s = f"{self.kind}: {self.message}"
        if self.path:
            s += f" (at {self.path})"
        return s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, message={self.message!r}, status={self.status}, path={self.path!r})"


class InvalidConfigError(ModeluxError, ValueError):
    """A config file or routing config is wrong; ``path`` names the fault ("$.routing.x.attempts[1]")."""


class BadRequestError(ModeluxError, ValueError):
    """The request is invalid (bad_request, context_length, content_filter, unsupported)."""


class NotFoundError(ModeluxError, LookupError):
    """Unknown model, routing config or resource (not_found)."""


class UnpricedModelError(NotFoundError):
    """The model is in the catalog but its list price is unknown (no silent zero)."""


class AuthenticationError(ModeluxError):
    """Bad or missing provider credentials (auth)."""


class RateLimitError(ModeluxError):
    """429 from every target that was tried (rate_limited, quota_exceeded); see ``retry_after``."""


class ProviderError(ModeluxError):
    """The provider failed (server_error, overloaded, malformed_response, stream_interrupted)."""


class ModeluxTimeout(ModeluxError, TimeoutError):
    """An attempt or the total budget timed out (timeout). Also a builtin ``TimeoutError``."""


class ConnectionFailed(ProviderError, ConnectionError):
    """Could not connect, reset, TLS failure (connection). Also a builtin ``ConnectionError``."""


class BudgetExceededError(ModeluxError):
    """A spend cap blocks the request (budget_exceeded)."""


class NoRouteError(ModeluxError):
    """Nothing left to try (no_route)."""


class RequestCancelled(ModeluxError):
    """The caller went away (cancelled)."""


class StorageError(ModeluxError, OSError):
    """Disk or database failure (io)."""


class LocalResourceExhausted(ModeluxError):
    """modelux itself ran out of file descriptors, memory or queue slots (local_resource_exhausted).

    Never the provider's fault: it does not count against the provider's health. Retry later."""


class InternalError(ModeluxError):
    """A bug in modelux (internal)."""


KIND_TO_EXCEPTION: Dict[str, Type[ModeluxError]] = {
    "bad_request": BadRequestError,
    "auth": AuthenticationError,
    "not_found": NotFoundError,
    "rate_limited": RateLimitError,
    "quota_exceeded": RateLimitError,
    "server_error": ProviderError,
    "overloaded": ProviderError,
    "timeout": ModeluxTimeout,
    "connection": ConnectionFailed,
    "context_length": BadRequestError,
    "content_filter": BadRequestError,
    "budget_exceeded": BudgetExceededError,
    "no_route": NoRouteError,
    "cancelled": RequestCancelled,
    "invalid_config": InvalidConfigError,
    "malformed_response": ProviderError,
    "stream_interrupted": ProviderError,
    "unsupported": BadRequestError,
    "io": StorageError,
    "local_resource_exhausted": LocalResourceExhausted,
    "internal": InternalError,
}


def _from_core(
    kind: str,
    message: str,
    status: int,
    path: str,
    retry_after: Optional[float],
    provider: str,
    code: str,
    trace_json: Optional[str],
) -> ModeluxError:
    """Builds the exception for a C++ Error (called by modelux._core's exception translator)."""
    cls = KIND_TO_EXCEPTION.get(kind, ModeluxError)
    if kind == "not_found" and code == "unpriced":
        cls = UnpricedModelError
    trace = json.loads(trace_json) if trace_json else None
    return cls(
        message,
        kind=kind,
        status=status,
        path=path,
        retry_after=retry_after,
        provider=provider,
        code=code,
        trace=trace,
    )
