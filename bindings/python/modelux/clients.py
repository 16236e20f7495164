"""Drop-in clients shaped like the official SDKs, routing in-process (no proxy)::

    client = modelux.OpenAI(config="modelux.json")       # instead of openai.OpenAI()
    r = client.chat.completions.create(model="@production", messages=[...], max_tokens=200)
    r.choices[0].message.content
    r._modelux.trace                                      # the decision trace

They take the SDK's arguments and return the SDK's own types (``openai.types.chat.
ChatCompletion``, ``ChatCompletionChunk``, ``openai.types.CreateEmbeddingResponse``,
``anthropic.types.Message``) when that SDK is installed, and attribute objects of the same
shape otherwise. ``model`` is a catalog model or ``"@slug"``. Errors are modelux's own
(:class:`modelux.ModeluxError` subclasses, with ``.trace``).
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, TypeVar, cast

import uuid

from . import ConfigSource, Router, TraceSource, _aio, _context, _core, _LazyTrace
from ._errors import ModeluxError

__all__ = ["OpenAI", "AsyncOpenAI", "Anthropic", "AsyncAnthropic", "ModeluxInfo"]

# SDK arguments that shape the HTTP call, not the request body.
_TRANSPORT_ARGS = ("extra_headers", "extra_query", "timeout")


class ModeluxInfo:
    """What modelux adds to a response (``response._modelux``): the decision trace and the
    served target."""

    __slots__ = ("_trace",)

    def __init__(self, trace: TraceSource) -> None:
        self._trace = _LazyTrace(trace)

    @property
    def trace(self) -> Dict[str, Any]:
        """The DecisionTrace (a dict; decoded on first access)."""
        return self._trace.get()

    @property
    def served_model(self) -> str:
        return str(self.trace.get("served_model", ""))

    @property
    def served_provider(self) -> str:
        return str(self.trace.get("served_provider", ""))

    def __repr__(self) -> str:
        return f"ModeluxInfo(served={self.served_provider}/{self.served_model})"


class AttrObject:
    """The SDK type's stand-in when the SDK is not installed: attribute access over the JSON
    (nested dicts become AttrObjects, lists stay lists); ``model_dump()`` gives the dict."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.__dict__["_data"] = dict(data)

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__["_data"]
        if name not in data:
            if name.startswith("_"):
                raise AttributeError(name)
            return None  # optional fields the SDK types default to None
        return _wrap_value(data[name])

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def model_dump(self, **_: Any) -> Dict[str, Any]:
        return json.loads(json.dumps(self.__dict__["_data"]))  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"AttrObject({self.__dict__['_data']!r})"


def _wrap_value(v: Any) -> Any:
    if isinstance(v, dict):
        return AttrObject(v)
    if isinstance(v, list):
        return [_wrap_value(x) for x in v]
    return v


@functools.lru_cache(maxsize=None)
def _sdk_type(module: str, name: str) -> Any:
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError):
        return None


def _build(sdk_type: Any, body: Dict[str, Any], trace: Optional[TraceSource]) -> Any:
    if sdk_type is not None:
        try:
            obj = sdk_type.model_validate(body)
        except Exception:  # a field the SDK version does not know how to validate
            obj = sdk_type.model_construct(**body)
    else:
        obj = AttrObject(body)
    if trace is not None:
        object.__setattr__(obj, "_modelux", ModeluxInfo(trace))
    return obj


def _is_given(v: Any) -> bool:
    # openai.NOT_GIVEN / anthropic.NOT_GIVEN / omit sentinels mean "not passed".
    return type(v).__name__ not in ("NotGiven", "Omit")


def _split(kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(request body fields, modelux call context overrides)."""
    body: Dict[str, Any] = {}
    extra_body: Dict[str, Any] = {}
    for k, v in kwargs.items():
        if not _is_given(v) or k in _TRANSPORT_ARGS:
            continue
        if k == "extra_body":
            extra_body = dict(v or {})
            continue
        body[k] = v
    ctx = dict(extra_body.pop("modelux", {}) or {})
    body.update(extra_body)
    return body, ctx


class _Base:
    def __init__(
        self,
        config: ConfigSource = None,
        *,
        router: Optional[Router] = None,
        project: Optional[str] = None,
        org: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        **router_options: Any,
    ) -> None:
        self.router: Router = router if router is not None else Router(config, **router_options)
        self._defaults: Dict[str, Any] = {"project": project, "org": org, "tags": dict(tags) if tags else None}

    def _context(self, body: Mapping[str, Any], ctx: Mapping[str, Any]) -> Optional[Tuple[Any, ...]]:
        c = dict(self._defaults)
        user = body.get("user")
        if isinstance(user, str):
            c["end_user"] = user
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
            c["end_user"] = metadata["user_id"]  # anthropic's end-user field
        c.update({k: v for k, v in ctx.items() if v is not None})
        return _context(c.get("project"), c.get("end_user"), c.get("org"), c.get("tags"),
                        c.get("request_id"), c.get("api_key_id"))

    def close(self) -> None:
        self.router.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- errors in the SDK's own classes --------------------------------------------------------

# The HTTP status the proxy answers each kind with (C++ http_status_for), for kinds that carry
# no status of the provider's own.
_KIND_STATUS: Dict[str, int] = {
    "bad_request": 400, "invalid_config": 400, "context_length": 400, "content_filter": 400, "unsupported": 400,
    "auth": 401, "not_found": 404, "rate_limited": 429, "quota_exceeded": 429, "budget_exceeded": 429,
    "cancelled": 499, "server_error": 502, "malformed_response": 502, "stream_interrupted": 502, "connection": 502,
    "overloaded": 503, "no_route": 503, "local_resource_exhausted": 503, "timeout": 504, "io": 500, "internal": 500,
}
_SDK_CLASS_BY_STATUS = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
                        404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError",
                        429: "RateLimitError"}
_combined: Dict[Tuple[type, type], type] = {}


def _sdk_error(e: ModeluxError, sdk: str) -> BaseException:
    """`e` as the SDK's own status error (openai.RateLimitError, anthropic.NotFoundError...) that
    is *also* the modelux exception it was: `except openai.APIStatusError` and `except
    modelux.ModeluxError` both catch it. `e` itself when the SDK (or httpx) is not installed."""
    try:
        mod = __import__(sdk)
        # The HTTP library the SDK builds its errors on: httpx in older releases, httpx2 now.
        exc_mod = __import__(sdk + "._exceptions", fromlist=["_"])
        http = getattr(exc_mod, "httpx2", None) or getattr(exc_mod, "httpx", None) or __import__("httpx")
    except ImportError:
        return e
    status = e.status if 400 <= e.status < 600 else _KIND_STATUS.get(e.kind, 500)
    name = _SDK_CLASS_BY_STATUS.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
    sdk_cls = getattr(mod, name, None) or getattr(mod, "APIStatusError")
    key = (sdk_cls, type(e))
    cls = _combined.get(key)
    if cls is None:
        cls = type(sdk_cls.__name__, (sdk_cls, type(e)), {"__module__": "modelux.clients", "__str__": ModeluxError.__str__})
        _combined[key] = cls
    if sdk == "anthropic":
        etype = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_error"}.get(status, "api_error")
        body: Dict[str, Any] = {"type": "error", "error": {"type": etype, "message": e.message}}
        url = "modelux://in-process/v1/messages"
    else:
        body = {"message": e.message, "type": e.kind, "code": e.code or e.kind, "param": e.path or None}
        url = "modelux://in-process/v1/chat/completions"
    headers = {"retry-after": str(e.retry_after)} if e.retry_after is not None else {}
    response = http.Response(status, request=http.Request("POST", url), headers=headers, json=body)
    out: BaseException = cls(e.message, response=response, body=body)
    for f in ("kind", "message", "status", "path", "retry_after", "provider", "code", "trace"):
        setattr(out, f, getattr(e, f))
    if e.trace is not None:
        setattr(out, "_modelux", ModeluxInfo(e.trace))
    return out


_F = TypeVar("_F", bound=Callable[..., Any])


def _raising_as(sdk: str) -> Callable[[_F], _F]:
    """Decorator: a ModeluxError out of the wrapped call is raised as the SDK's own class."""
    def wrap(fn: _F) -> _F:
        if asyncio.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def acall(*a: Any, **k: Any) -> Any:
                try:
                    return await fn(*a, **k)
                except ModeluxError as e:
                    raise _sdk_error(e, sdk) from e
            return cast(_F, acall)

        @functools.wraps(fn)
        def call(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except ModeluxError as e:
                raise _sdk_error(e, sdk) from e
        return cast(_F, call)
    return wrap


# ---- OpenAI ------------------------------------------------------------------------------------


def _openai_chunk(d: Dict[str, Any]) -> Any:
    return _build(_sdk_type("openai.types.chat", "ChatCompletionChunk"), d, None)


# Anthropic's stream events by their "type" (anthropic.types.RawMessageStreamEvent's members).
_ANTHROPIC_EVENTS = {
    "message_start": "RawMessageStartEvent",
    "message_delta": "RawMessageDeltaEvent",
    "message_stop": "RawMessageStopEvent",
    "content_block_start": "RawContentBlockStartEvent",
    "content_block_delta": "RawContentBlockDeltaEvent",
    "content_block_stop": "RawContentBlockStopEvent",
}


def _anthropic_event(d: Dict[str, Any]) -> Any:
    name = _ANTHROPIC_EVENTS.get(str(d.get("type")))
    return _build(_sdk_type("anthropic.types", name) if name else None, d, None)


class Stream:
    """The stream ``create(stream=True)`` returns: iterate it for the SDK's chunk types
    (``ChatCompletionChunk``; for :class:`Anthropic`, anthropic's stream events);
    ``close()`` (or leaving ``with``) cancels the upstream call. ``_modelux.trace`` once it
    ended."""

    def __init__(self, native: "_core.ChatStream", make: Callable[[Dict[str, Any]], Any] = _openai_chunk,
                 sdk: str = "openai") -> None:
        self._native = native
        self._make = make
        self._sdk = sdk

    def __iter__(self) -> Iterator[Any]:
        try:
            for d in self._native:
                yield self._make(d)
        except ModeluxError as e:
            raise _sdk_error(e, self._sdk) from e
        except GeneratorExit:
            self._native.close()
            raise
        except KeyboardInterrupt:
            self._native.close()
            raise

    def __next__(self) -> Any:
        try:
            return self._make(self._native.__next__())
        except ModeluxError as e:
            raise _sdk_error(e, self._sdk) from e

    @property
    def _modelux(self) -> Optional[ModeluxInfo]:
        t = self._native.trace_json()
        return None if t is None else ModeluxInfo(json.loads(t))

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream:
    """The async stream ``await create(stream=True)`` returns (``async for chunk in s``)."""

    def __init__(self, stream: "_aio.AsyncChatStream", make: Callable[[Dict[str, Any]], Any] = _openai_chunk,
                 sdk: str = "openai") -> None:
        self._stream = stream
        self._make = make
        self._sdk = sdk

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except ModeluxError as e:
            raise _sdk_error(e, self._sdk) from e
        return self._make(chunk)

    @property
    def _modelux(self) -> Optional[ModeluxInfo]:
        t = self._stream.trace
        return None if t is None else ModeluxInfo(t)

    async def close(self) -> None:
        self._stream.close()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stream.close()


def _chat_params(kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], bool]:
    """(request fields other than model and messages, context overrides, stream?)."""
    body, ctx = _split(kwargs)
    body.pop("model", None)
    body.pop("messages", None)
    stream = bool(body.pop("stream", False))
    return body, ctx, stream


class _Completions:
    def __init__(self, client: "OpenAI") -> None:
        self._client = client

    @_raising_as("openai")
    def create(self, *, model: str, messages: Any, **kwargs: Any) -> Any:
        """``openai.OpenAI().chat.completions.create`` arguments; a ``ChatCompletion`` (or a
        :class:`Stream` of ``ChatCompletionChunk`` with ``stream=True``)."""
        params, ctx, stream = _chat_params(kwargs)
        native = self._client.router._native
        c = self._client._context(params, ctx)
        if stream:
            return Stream(native.stream(model, messages, params, c))
        out, trace = native.chat(model, messages, params, c, None)
        return _build(_sdk_type("openai.types.chat", "ChatCompletion"), out, trace)


class _AsyncCompletions:
    def __init__(self, client: "AsyncOpenAI") -> None:
        self._client = client

    @_raising_as("openai")
    async def create(self, *, model: str, messages: Any, **kwargs: Any) -> Any:
        """``openai.AsyncOpenAI().chat.completions.create``: awaits the answer on the event
        loop (no thread per request); with ``stream=True`` an :class:`AsyncStream`."""
        params, ctx, stream = _chat_params(kwargs)
        native = self._client.router._native
        c = self._client._context(params, ctx)
        if stream:
            return AsyncStream(_aio.AsyncChatStream(native.stream(model, messages, params, c)))
        out, trace = await _aio.await_native(lambda b, f: native.chat_async(model, messages, params, c, None, b, f))
        return _build(_sdk_type("openai.types.chat", "ChatCompletion"), out, trace)


def _embedding_body(model: str, input: Any, kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    body, ctx = _split(kwargs)
    body["model"] = model
    body["input"] = input
    body.pop("encoding_format", None)  # always float vectors in the returned objects
    return body, ctx


class _Embeddings:
    def __init__(self, client: "_Base") -> None:
        self._client = client

    @_raising_as("openai")
    def create(self, *, input: Any, model: str, **kwargs: Any) -> Any:
        """``openai.OpenAI().embeddings.create`` arguments; a ``CreateEmbeddingResponse``."""
        body, ctx = _embedding_body(model, input, kwargs)
        out, trace = self._client.router._native.embed(json.dumps(body), self._client._context(body, ctx))
        return _build(_sdk_type("openai.types", "CreateEmbeddingResponse"), json.loads(out), trace)


class _AsyncEmbeddings:
    def __init__(self, client: "_Base") -> None:
        self._client = client

    @_raising_as("openai")
    async def create(self, *, input: Any, model: str, **kwargs: Any) -> Any:
        """``openai.AsyncOpenAI().embeddings.create``: completes into the event loop like
        chat (the router's co_embed on its io threads; no thread per request)."""
        body, ctx = _embedding_body(model, input, kwargs)
        native = self._client.router._native
        req, c = json.dumps(body), self._client._context(body, ctx)
        out, trace = await _aio.await_native(lambda b, f: native.embed_async(req, c, b, f))
        return _build(_sdk_type("openai.types", "CreateEmbeddingResponse"), json.loads(out), trace)


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class OpenAI(_Base):
    """``openai.OpenAI`` look-alike that routes in-process: ``chat.completions.create`` and
    ``embeddings.create``. ``config``: a config path, dict or None (as :class:`Router`), or
    pass ``router=`` to share one. ``project``/``org``/``tags``: the call context of every
    request (per call: ``extra_body={"modelux": {"project": ..., "tags": {...}}}``); the
    ``user`` field becomes the end user."""

    def __init__(self, config: ConfigSource = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.chat = _Chat(_Completions(self))
        self.embeddings = _Embeddings(self)


class AsyncOpenAI(_Base):
    """``openai.AsyncOpenAI`` look-alike: ``await client.chat.completions.create(...)``
    completes into the event loop; cancelling the task cancels the upstream call."""

    def __init__(self, config: ConfigSource = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.chat = _Chat(_AsyncCompletions(self))
        self.embeddings = _AsyncEmbeddings(self)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# ---- Anthropic ---------------------------------------------------------------------------------


def _anthropic_request(kwargs: Dict[str, Any]) -> Tuple[str, Any, Dict[str, Any], Dict[str, Any], Dict[str, Any], bool]:
    """(model, messages, other unified request fields, the Messages body, context overrides,
    stream?): the Messages request converted with the proxy's /v1/messages code."""
    body, ctx = _split(kwargs)
    stream = bool(body.pop("stream", False))
    unified = json.loads(_core.anthropic_request_to_openai(json.dumps(body)))
    unified.pop("stream", None)
    model = unified.pop("model")
    messages = unified.pop("messages")
    return model, messages, unified, body, ctx, stream


def _anthropic_message(out: Dict[str, Any], trace: "_core.Trace") -> Any:
    native = json.loads(_core.openai_response_to_anthropic(json.dumps(out)))
    return _build(_sdk_type("anthropic.types", "Message"), native, trace)


def _message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


class _Messages:
    def __init__(self, client: "Anthropic") -> None:
        self._client = client

    @_raising_as("anthropic")
    def create(self, **kwargs: Any) -> Any:
        """``anthropic.Anthropic().messages.create`` arguments (``model``, ``max_tokens``,
        ``messages``, ``system``, ``tools``...); an ``anthropic.types.Message``, or with
        ``stream=True`` a :class:`Stream` of anthropic's stream events (``message_start``,
        ``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``),
        encoded by the proxy's Anthropic stream encoder."""
        model, messages, params, body, ctx, stream = _anthropic_request(kwargs)
        native = self._client.router._native
        c = self._client._context(body, ctx)
        if stream:
            return Stream(native.stream(model, messages, params, c, _message_id()), _anthropic_event, "anthropic")
        out, trace = native.chat(model, messages, params, c, None)
        return _anthropic_message(out, trace)


class _AsyncMessages:
    def __init__(self, client: "AsyncAnthropic") -> None:
        self._client = client

    @_raising_as("anthropic")
    async def create(self, **kwargs: Any) -> Any:
        model, messages, params, body, ctx, stream = _anthropic_request(kwargs)
        native = self._client.router._native
        c = self._client._context(body, ctx)
        if stream:
            s = native.stream(model, messages, params, c, _message_id())
            return AsyncStream(_aio.AsyncChatStream(s), _anthropic_event, "anthropic")
        out, trace = await _aio.await_native(lambda b, f: native.chat_async(model, messages, params, c, None, b, f))
        return _anthropic_message(out, trace)


class Anthropic(_Base):
    """``anthropic.Anthropic`` look-alike: ``messages.create`` routed in-process (any target,
    not only Anthropic's: the request and answer are converted with the proxy's
    /v1/messages code). ``metadata={"user_id": ...}`` becomes the end user."""

    def __init__(self, config: ConfigSource = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.messages = _Messages(self)


class AsyncAnthropic(_Base):
    """``anthropic.AsyncAnthropic`` look-alike: ``await client.messages.create(...)``."""

    def __init__(self, config: ConfigSource = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.messages = _AsyncMessages(self)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
