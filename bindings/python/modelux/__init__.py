"""modelux: embeddable LLM routing — routing configs, spend caps, decision traces, failover.

A thin layer over the C++ library (``modelux._core``)::

    import modelux

    router = modelux.Router("modelux.json")          # or a dict, or None for the defaults
    r = router.chat("@production", [{"role": "user", "content": "hi"}], project="acme")
    print(r.text, r.trace["decision"])

    for chunk in router.stream("@production", [{"role": "user", "content": "hi"}]):
        ...

Requests, responses, chunks and traces are plain dicts in the OpenAI Chat Completions shape
(walked into and out of the C++ structs' JSON form directly, without JSON text).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _core
from ._errors import (
    KIND_TO_EXCEPTION,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConnectionFailed,
    InternalError,
    LocalResourceExhausted,
    InvalidConfigError,
    ModeluxError,
    ModeluxTimeout,
    NoRouteError,
    NotFoundError,
    ProviderError,
    RateLimitError,
    RequestCancelled,
    StorageError,
    UnpricedModelError,
)
from .webhooks import WebhookVerificationError, sign_webhook, verify_webhook
from . import _aio
from ._aio import AsyncChatStream
from ._byoc import Attempt, Attempts
from .traces import TraceStore
from .control import ControlStore


def _package_version() -> str:
    # The wheel's metadata and the C++ library read the same source (CMake project VERSION);
    # fall back to the library when running from a build tree without metadata.
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("modelux")
        except PackageNotFoundError:
            return _core.version()
    except ImportError:  # pragma: no cover - Python < 3.8
        return _core.version()


__version__: str = _package_version()

__all__ = [
    "__version__",
    "catalog",
    "providers",
    "cost",
    "Router",
    "ChatCompletion",
    "Embeddings",
    "ChatStream",
    "AsyncChatStream",
    "Attempt",
    "Attempts",
    "TraceStore",
    "ControlStore",
    "OpenAI",
    "AsyncOpenAI",
    "Anthropic",
    "AsyncAnthropic",
    "Simulator",
    "replay",
    "ReplayReport",
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
    "InternalError",
    "LocalResourceExhausted",
    "KIND_TO_EXCEPTION",
    "WebhookVerificationError",
    "sign_webhook",
    "verify_webhook",
]

ConfigSource = Union[str, "os.PathLike[str]", Mapping[str, Any], None]

_catalog_cache: Optional[Dict[str, Any]] = None


def _builtin_catalog() -> Dict[str, Any]:
    global _catalog_cache
    if _catalog_cache is None:
        _catalog_cache = json.loads(_core.catalog_json())
    return _catalog_cache


def catalog() -> List[Dict[str, Any]]:
    """The built-in model catalog: one dict per model with ``id``, ``provider``, ``upstream``,
    ``priced``, prices in USD per 1M tokens (``input_per_m``, ``output_per_m``,
    ``cached_input_per_m``, ``cache_write_per_m``; None when unpriced), ``context_window``,
    ``max_output``, ``quality_tier`` (1..5) and ``source``. A fresh copy on every call."""
    models: List[Dict[str, Any]] = json.loads(json.dumps(_builtin_catalog()["models"]))
    return models


def providers() -> List[Dict[str, Any]]:
    """The built-in catalog's providers (``name``, ``family``, ``base_url``, ``auth_style``, ``key_env``)."""
    out: List[Dict[str, Any]] = json.loads(json.dumps(_builtin_catalog()["providers"]))
    return out


def cost(
    model: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """USD cost of one call at the built-in catalog's list prices. ``prompt_tokens`` counts all
    input tokens; ``cached_tokens`` of them are billed at the cached rate and
    ``cache_write_tokens`` at the cache-write rate. Raises :class:`NotFoundError` for an unknown
    model and :class:`UnpricedModelError` when the catalog has no price for it."""
    return _core.cost(model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens)


def _context_json(
    project: Optional[str],
    end_user: Optional[str],
    org: Optional[str],
    tags: Optional[Mapping[str, str]],
    request_id: Optional[str],
    api_key_id: Optional[str],
) -> str:
    if project is None and end_user is None and org is None and tags is None and request_id is None and api_key_id is None:
        return "{}"
    ctx: Dict[str, Any] = {}
    for key, value in (
        ("project", project),
        ("end_user", end_user),
        ("org", org),
        ("request_id", request_id),
        ("api_key_id", api_key_id),
    ):
        if value is not None:
            ctx[key] = value
    if tags is not None:
        ctx["tags"] = dict(tags)
    return json.dumps(ctx)


def _context(
    project: Optional[str],
    end_user: Optional[str],
    org: Optional[str],
    tags: Optional[Mapping[str, str]],
    request_id: Optional[str],
    api_key_id: Optional[str],
) -> Optional[Tuple[Any, ...]]:
    """The call context as the native layer takes it (None when nothing is set)."""
    if project is None and end_user is None and org is None and tags is None and request_id is None and api_key_id is None:
        return None
    return (project, end_user, org, tags, request_id, api_key_id)


def _request_json(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    if "model" in params or "messages" in params:
        raise TypeError("pass model and messages positionally, not in **params")
    body: Dict[str, Any] = {"model": model, "messages": list(messages)}
    body.update(params)
    return json.dumps(body)


TraceSource = Union[Dict[str, Any], "_core.Trace"]


class _LazyTrace:
    """A trace as the native layer hands it over (unserialized), decoded once when read."""

    __slots__ = ("_src", "_dict")

    def __init__(self, src: TraceSource) -> None:
        self._src = src
        self._dict: Optional[Dict[str, Any]] = src if isinstance(src, dict) else None

    def get(self) -> Dict[str, Any]:
        if self._dict is None:
            src = self._src
            assert not isinstance(src, dict)
            self._dict = json.loads(src.json())
        return self._dict


class Embeddings(Dict[str, Any]):
    """An embeddings answer in the OpenAI shape (a dict: ``data[i]["embedding"]``, ``usage``)
    plus its decision trace in ``.trace``."""

    def __init__(self, body: Mapping[str, Any], trace: TraceSource) -> None:
        super().__init__(body)
        self._trace = _LazyTrace(trace)

    @property
    def trace(self) -> Dict[str, Any]:
        """The DecisionTrace (a dict; decoded on first access)."""
        return self._trace.get()

    @property
    def vectors(self) -> List[List[float]]:
        """The embeddings, in input order."""
        return [d["embedding"] for d in self.get("data", [])]


class ChatCompletion(Dict[str, Any]):
    """A chat completion in the OpenAI shape (a dict) plus its decision trace in ``.trace``."""

    # The native layer builds instances directly (without __init__) and sets ``_t``.
    _t: TraceSource

    def __init__(self, body: Mapping[str, Any], trace: TraceSource) -> None:
        super().__init__(body)
        self._t = trace

    @property
    def trace(self) -> Dict[str, Any]:
        """The DecisionTrace (a dict; decoded on first access)."""
        t = self._t
        if not isinstance(t, dict):
            t = self._t = json.loads(t.json())
        return t

    @property
    def text(self) -> str:
        """Text of the first choice ("" when there is none)."""
        choices = self.get("choices") or []
        if not choices:
            return ""
        content = choices[0].get("message", {}).get("content")
        return content if isinstance(content, str) else ""

    @property
    def served_model(self) -> str:
        """The catalog model that answered (from the trace)."""
        return str(self.trace.get("served_model", ""))

    @property
    def served_provider(self) -> str:
        return str(self.trace.get("served_provider", ""))


class ChatStream(Iterator[Dict[str, Any]]):
    """Iterator of ``chat.completion.chunk`` dicts. The request runs on the router's I/O
    threads; chunks wait in a small bounded queue (a slow consumer slows its own upstream).

    ``close()`` (also on ``with``-exit, ``del`` and Ctrl-C during iteration) cancels: the router
    stops reading the upstream at its next chunk and traces the cancellation. An error after
    the last chunk is raised from ``next()``. ``trace`` is available once the request finished
    (see ``wait()``)."""

    def __init__(self, native: "_core.ChatStream") -> None:
        self._native = native

    def __iter__(self) -> "ChatStream":
        return self

    def __next__(self) -> Dict[str, Any]:
        try:
            return self._native.__next__()
        except KeyboardInterrupt:
            self._native.close()
            raise

    def close(self) -> None:
        """Cancels the request (if still running). Returns at once; see :meth:`wait`."""
        self._native.close()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the request finished (served, failed, or abandoned after close()).
        Returns False if ``timeout`` seconds passed first."""
        return self._native.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._native.finished

    @property
    def cancelled(self) -> bool:
        """True once close() was called or the iteration was interrupted."""
        return self._native.cancelled

    @property
    def trace(self) -> Optional[Dict[str, Any]]:
        """The DecisionTrace as a dict once the request finished, else None."""
        t = self._native.trace_json()
        return None if t is None else json.loads(t)

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _config_args(config: ConfigSource) -> Dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        return {"config_path": os.fspath(config)}
    if isinstance(config, Mapping):
        return {"config_json": json.dumps(config)}
    raise TypeError(f"config must be a path, a dict or None, not {type(config).__name__}")


class Router:
    """The modelux router: resolves ``@slug`` routing configs and catalog models, runs the
    routing (fallbacks, timeouts, budgets, health) and records a decision trace per request.

    ``config``: a path to a config file, a dict with the same content (JSON-encoded and parsed
    by ``Config::from_json``), or None for the embedded defaults (every provider pointed at the
    local mock provider). ``tracing=False`` skips opening the trace store.
    ``simulated_provider``: a mock config (``{"default": {...}, "models": {...}}``, ``{}`` for
    the defaults) to answer every request in-process, without sockets, as the mock provider
    would (tests and benchmarks; the providers' URLs and keys are then not used).

    Thread-safe: ``chat`` and ``stream`` may be called from many Python threads at once; the
    GIL is released while a request runs."""

    def __init__(
        self,
        config: ConfigSource = None,
        *,
        io_threads: int = 1,
        seed: int = 0,
        tracing: bool = True,
        simulated_provider: Optional[Mapping[str, Any]] = None,
    ) -> None:
        simulated = None if simulated_provider is None else json.dumps(dict(simulated_provider))
        self._native = _core.Router(io_threads=io_threads, seed=seed, tracing=tracing, simulated_json=simulated,
                                    **_config_args(config))

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        org: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        api_key_id: Optional[str] = None,
        **params: Any,
    ) -> ChatCompletion:
        """Blocking chat call. ``model`` is a catalog model or ``"@slug"``; ``params`` are Chat
        Completions fields (``temperature``, ``max_tokens``, ``tools``...). Returns the response
        dict with ``.trace``; raises a :class:`ModeluxError` subclass (with ``.trace``)."""
        return self._native.chat(  # type: ignore[no-any-return]
            model, messages, params, _context(project, end_user, org, tags, request_id, api_key_id), ChatCompletion
        )

    def embed(
        self,
        model: str,
        input: Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]]],
        *,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        org: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        api_key_id: Optional[str] = None,
        **params: Any,
    ) -> "Embeddings":
        """Blocking embeddings call, routed like chat. ``model`` is an embedding model of the
        catalog or ``"@slug"``; ``params`` are OpenAI embeddings fields (``dimensions``...).
        Returns float vectors with ``.trace``; raises a :class:`ModeluxError` subclass."""
        body = {"model": model, "input": input, **params}
        body.pop("encoding_format", None)  # the binding always returns floats
        out, trace = self._native.embed(json.dumps(body), _context(project, end_user, org, tags, request_id, api_key_id))
        return Embeddings(json.loads(out), trace)

    def stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        org: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        api_key_id: Optional[str] = None,
        **params: Any,
    ) -> ChatStream:
        """Streaming chat call: an iterator of chunk dicts (``stream`` is forced on)."""
        params.pop("stream", None)
        return ChatStream(
            self._native.stream(model, messages, params, _context(project, end_user, org, tags, request_id, api_key_id))
        )

    async def achat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        org: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        api_key_id: Optional[str] = None,
        **params: Any,
    ) -> ChatCompletion:
        """asyncio form of :meth:`chat`: the request runs on the router's I/O threads and
        completes into the running event loop (no thread per request). Cancelling the task
        cancels the upstream call; the trace records ``cancelled``."""
        loop = _aio.get_running_loop()
        fut = loop.create_future()
        pending = self._native.chat_async(model, messages, params, _context(project, end_user, org, tags, request_id, api_key_id),
                                          ChatCompletion, _aio.bridge(loop), fut)
        try:
            return await fut  # type: ignore[no-any-return]
        except _aio.CancelledError:
            pending.cancel()
            raise

    def astream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        org: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        api_key_id: Optional[str] = None,
        **params: Any,
    ) -> AsyncChatStream:
        """asyncio streaming: ``async for chunk in router.astream(...)``. Call it inside a
        running event loop. Cancelling the consuming task cancels the upstream call."""
        params.pop("stream", None)
        return AsyncChatStream(
            self._native.stream(model, messages, params, _context(project, end_user, org, tags, request_id, api_key_id))
        )

    def attempts(
        self,
        model: str,
        messages: Union[Sequence[Mapping[str, Any]], Mapping[str, Any]],
        *,
        project: Optional[str] = None,
        end_user: Optional[str] = None,
        org: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        api_key_id: Optional[str] = None,
        **params: Any,
    ) -> Attempts:
        """Bring your own client: a session that yields the attempts the app makes with its own
        SDK and reports (see :class:`Attempts`). Failover, budgets, health and tracing work as
        in :meth:`chat`. ``messages`` may also be a whole Chat Completions request body (a dict
        with ``messages`` and any other fields; its ``model`` is replaced by ``model``).
        Raises :class:`NotFoundError` for an unknown model or slug."""
        if isinstance(messages, Mapping):
            body = dict(messages)
            body.pop("model", None)
            body.pop("stream", None)
            msgs = body.pop("messages", None)
            if not isinstance(msgs, Sequence):
                raise TypeError("a request body passed to attempts() needs a 'messages' list")
            params = {**body, **params}
            messages = msgs
        return Attempts(
            self._native.begin(
                _request_json(model, messages, params),
                _context_json(project, end_user, org, tags, request_id, api_key_id),
            )
        )

    def budgets(self) -> Dict[str, Any]:
        """A snapshot of every budget ledger: ``{"budgets": [{"name", "scope", "window",
        "spent_usd", "reserved_usd", "limit_usd", "percent", ...}], ...}``."""
        return json.loads(self._native.budgets_json())  # type: ignore[no-any-return]

    def trace_store(self) -> Optional[TraceStore]:
        """The router's trace store (after every trace submitted so far was written), or None
        when tracing is off. Query it with :meth:`TraceStore.query` and the aggregates."""
        native = self._native.trace_store()
        return None if native is None else TraceStore._wrap(native)

    def traces(self, **filters: Any) -> List[Dict[str, Any]]:
        """Recent traces of this router (see :meth:`TraceStore.query` for the filters); [] when
        tracing is off."""
        store = self.trace_store()
        return [] if store is None else store.query(**filters)

    def routing_configs(self) -> Dict[str, Dict[str, Any]]:
        """Live routing configs: slug (without '@') → the config as given."""
        out: Dict[str, Dict[str, Any]] = {}
        for slug in self._native.routing_slugs():
            info = self.routing_config(slug)
            if info is not None:
                out[slug.lstrip("@")] = info["config"]
        return out

    def routing_config(self, slug: str) -> Optional[Dict[str, Any]]:
        """``{"slug", "version", "strategy", "config"}`` of a live routing config, or None."""
        text = self._native.routing_config(slug)
        return None if text is None else json.loads(text)

    def set_routing_config(self, slug: str, config: Mapping[str, Any]) -> int:
        """Validates, compiles and atomically swaps in a routing config; returns its new
        version. A bad config raises :class:`InvalidConfigError` (with ``.path``) and never
        takes traffic."""
        return self._native.set_routing_config(slug, json.dumps(config))

    def routable_models(self) -> List[str]:
        """Catalog models whose provider is configured."""
        return self._native.routable_models()

    def catalog(self) -> List[Dict[str, Any]]:
        """This router's catalog (built-in merged with the config's overrides)."""
        return json.loads(self._native.catalog_json())["models"]  # type: ignore[no-any-return]

    def cost(
        self,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """Like :func:`modelux.cost` but at this router's catalog prices."""
        return self._native.cost(model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens)

    def close(self) -> None:
        """Stops the router's I/O threads (streams still running keep it alive until they end)."""
        self._native.close()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Simulator:
    """The offline test kit: simulated providers on a virtual clock, driven through the same
    routing session production uses. Thousands of requests run in milliseconds, deterministic
    for a seed::

        sim = modelux.Simulator()
        sim.add_target("anthropic/claude-haiku-4-5", errors={"rate_limited": 0.3})
        report = sim.run("@production", 1000)
        assert report["success_rate"] > 0.99

    ``config`` (path, dict or None for the embedded defaults) supplies the catalog, providers
    and the ``@slug`` routing configs a run may refer to."""

    def __init__(self, config: ConfigSource = None) -> None:
        if isinstance(config, (str, os.PathLike)):
            with open(os.fspath(config), encoding="utf-8") as f:
                config = json.load(f)
        self._native = _core.Simulator(None if config is None else json.dumps(config))

    def add_target(
        self,
        key: str,
        *,
        latency: Union[float, Mapping[str, float], None] = None,
        errors: Optional[Mapping[str, float]] = None,
        hang_probability: float = 0.0,
        degraded: Optional[Sequence[Mapping[str, Any]]] = None,
        answers: Optional[Mapping[str, float]] = None,
        finish_reason: Optional[str] = None,
        completion_tokens: Optional[int] = None,
        retry_after_ms: Optional[float] = None,
    ) -> None:
        """Adds or replaces the simulated target ``"provider/model"``.

        ``latency``: median ms, or ``{"median_ms", "sigma", "min_ms", "max_ms"}`` (log-normal).
        ``errors``: ErrorKind name → independent failure probability.
        ``degraded``: windows ``{"from_ms", "to_ms", "error_rate", "error", "hang_probability",
        "latency_factor"}`` (offsets from the run's start). ``answers``: text → weight."""
        t: Dict[str, Any] = {"key": key, "hang_probability": hang_probability}
        for name, value in (
            ("latency", latency),
            ("errors", errors),
            ("degraded", degraded),
            ("answers", answers),
            ("finish_reason", finish_reason),
            ("completion_tokens", completion_tokens),
            ("retry_after_ms", retry_after_ms),
        ):
            if value is not None:
                t[name] = value
        if degraded is not None:
            t["degraded"] = [dict(w) for w in degraded]
        self._native.add_target(json.dumps(t))

    def run(
        self,
        route: Union[str, Mapping[str, Any]],
        requests: int,
        *,
        seed: int = 1,
        interarrival_ms: float = 50.0,
        use_health: bool = True,
        keep_traces: bool = False,
        end_users: int = 1000,
        project: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Runs ``requests`` requests through ``route`` (``"@slug"``, a catalog model, or a
        routing config dict). Returns the report: ``requests``, ``succeeded``,
        ``success_rate``, ``p50_ms``/``p95_ms``/``p99_ms``/``max_ms``, ``cost_usd``,
        ``failovers``, ``attempts``, ``routes`` (served target → count), ``errors`` (final
        error kind → count), ``summary``, and with ``keep_traces`` a ``results`` list (one dict
        per request with its ``trace``)."""
        if requests < 0:
            raise ValueError("requests must not be negative")
        options: Dict[str, Any] = {
            "seed": seed,
            "interarrival_ms": interarrival_ms,
            "use_health": use_health,
            "keep_traces": keep_traces,
            "end_users": end_users,
        }
        if project is not None:
            options["project"] = project
        text = self._native.run(json.dumps(route), requests, json.dumps(options))
        return json.loads(text)  # type: ignore[no-any-return]


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _since_seconds(since: Union[str, float, int, None]) -> Optional[float]:
    if since is None:
        return None
    if isinstance(since, (int, float)):
        return float(since)
    text = str(since).strip()
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in _SINCE_UNITS:
        return float(text[:-1]) * _SINCE_UNITS[text[-1]]
    raise ValueError(f"since: bad duration {since!r} (use e.g. 90s, 15m, 1h, 7d, 2w, or seconds)")


class ReplayReport:
    """The outcome of :func:`replay`: the recorded side (``current``) against the replayed one
    (``candidate``), each a dict with ``requests``, ``success_rate``, ``errors``,
    ``failover_rate``, ``p50_ms``/``p95_ms``/``p99_ms``, ``ttft_p50_ms``..., ``cost_usd``,
    ``cost_per_request_usd``, ``routes``, ``total_budget_violations``, ``budget_downgrades``,
    ``budget_blocks``; ``delta`` (candidate - current by guard metric), ``targets`` (how each
    target was fitted), ``unfitted_targets``, ``notes``, ``responses`` (responses mode) and
    ``rows``: one dict per request, which pandas takes as is::

        df = pandas.DataFrame(report.to_records())
    """

    def __init__(self, data: Dict[str, Any]) -> None:
        self._data = data
        self.table: str = data.pop("table", "")
        self.mode: str = data["mode"]
        self.slug: str = data["slug"]
        self.traces: int = data["traces"]
        self.seed: int = data["seed"]
        self.current: Dict[str, Any] = data["current"]
        self.candidate: Dict[str, Any] = data["candidate"]
        self.delta: Dict[str, float] = data["delta"]
        self.targets: List[Dict[str, Any]] = data["targets"]
        self.unfitted_targets: List[str] = data["unfitted_targets"]
        self.notes: List[str] = data["notes"]
        self.responses: Optional[Dict[str, Any]] = data.get("responses")
        self.rows: List[Dict[str, Any]] = data["rows"]
        self.wall_seconds: float = data["wall_seconds"]

    def to_records(self) -> List[Dict[str, Any]]:
        """The rows view: one flat dict per request (``pandas.DataFrame(report.to_records())``)."""
        return [dict(r) for r in self.rows]

    def to_dict(self) -> Dict[str, Any]:
        """Every field, as written by ``modelux replay --json``."""
        return dict(self._data)

    def check(self, guard: str) -> Dict[str, Any]:
        """Evaluates a promotion guard (``"success>=current,p95<=1.1*current"``): returns
        ``{"passed", "summary", "checks"}``; raises BadRequestError when it does not parse."""
        return json.loads(_core.evaluate_guard(guard, json.dumps(self._data)))  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return self.table

    def __repr__(self) -> str:
        return (f"ReplayReport(slug={self.slug!r}, traces={self.traces}, "
                f"success {self.current['success_rate']:.4f} -> {self.candidate['success_rate']:.4f})")


def replay(
    slug: str,
    candidate: Union[str, "os.PathLike[str]", Mapping[str, Any]],
    *,
    db: Union[str, "os.PathLike[str]"] = "modelux-traces.db",
    config: ConfigSource = None,
    since: Union[str, float, int, None] = None,
    limit: int = 50_000,
    mode: str = "routing",
    seed: int = 1,
    concurrency: int = 4,
    cost_cap_usd: float = 1.0,
    scorer: Optional[Any] = None,
) -> ReplayReport:
    """Replays the stored traffic of ``@slug`` against ``candidate`` (a routing config dict or
    path, or a whole config document) and returns a :class:`ReplayReport`.

    ``mode="routing"`` (offline) drives the recorded requests through the candidate on targets
    fitted from the traces; ``mode="responses"`` re-sends captured request bodies to the
    candidate's providers (``concurrency`` at a time, stopping at ``cost_cap_usd``) and compares
    the answers; ``scorer(pair) -> float`` scores each pair (a dict with ``request_id``,
    ``request_body``, ``recorded``, ``candidate``). ``config`` is the deployed config file
    (providers, catalog, budgets); ``since`` a window like ``"7d"`` or seconds."""
    candidate_doc: Dict[str, Any]
    if isinstance(candidate, (str, os.PathLike)):
        with open(os.fspath(candidate), encoding="utf-8") as f:
            candidate_doc = json.load(f)
    else:
        candidate_doc = dict(candidate)
    options: Dict[str, Any] = {
        "db": os.fspath(db),
        "slug": slug,
        "candidate": candidate_doc,
        "limit": limit,
        "mode": mode,
        "seed": seed,
        "concurrency": concurrency,
        "cost_cap_usd": cost_cap_usd,
    }
    if isinstance(config, (str, os.PathLike)):
        options["config_path"] = os.fspath(config)
    elif config is not None:
        options["config"] = dict(config)
    secs = _since_seconds(since)
    if secs is not None:
        options["since_s"] = secs
    native_scorer: Optional[Callable[[str], Optional[float]]] = None
    if scorer is not None:
        def score(pair_json: str) -> Optional[float]:
            value = scorer(json.loads(pair_json))
            return None if value is None else float(value)

        native_scorer = score
    return ReplayReport(json.loads(_core.replay(json.dumps(options), native_scorer)))


from .clients import Anthropic, AsyncAnthropic, AsyncOpenAI, OpenAI  # noqa: E402  (they use Router)
