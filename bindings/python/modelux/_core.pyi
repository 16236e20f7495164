# Hand-written stubs for the native module modelux._core (bindings/python/src/*.cpp).
# Hot paths (chat, streams, asyncio) take and return Python objects; colder ones JSON text.
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

def version() -> str:
    """The C++ library version (CMake project VERSION)."""

def catalog_json() -> str:
    """The built-in catalog: {"as_of", "providers": [...], "models": [...]} as JSON text."""

def cost(model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int, cache_write_tokens: int) -> float:
    """USD cost at the built-in catalog's list prices; raises NotFoundError / UnpricedModelError."""

def error_kinds() -> List[str]:
    """Every ErrorKind name, in declaration order."""

def replay(options_json: str, scorer: Optional[Callable[[str], Optional[float]]] = None) -> str:
    """Replays stored traces against a candidate config (modelux/replay.hpp). Options:
    {"db", "slug", "candidate", "config" | "config_path", "since_s", "limit", "mode", "seed",
    "concurrency", "cost_cap_usd", "keep_rows"}. The scorer gets one pair as JSON text
    ({"request_id", "request_body", "recorded", "candidate"}). Returns the report as JSON text
    (ReplayReport::to_json plus "table")."""

def evaluate_guard(guard: str, report_json: str) -> str:
    """{"passed", "summary", "checks": [{"clause", "candidate", "bound", "passed"}]} as JSON text;
    raises BadRequestError for a guard that does not parse."""

class Trace:
    """A finished request's DecisionTrace, not yet serialized."""
    def json(self) -> str:
        """The DecisionTrace as JSON text."""

class ChatStream:
    def __iter__(self) -> ChatStream: ...
    def __next__(self) -> Dict[str, Any]:
        """The next chunk (a chat.completion.chunk dict, or an Anthropic Messages stream event
        dict for a stream started with anthropic_id); StopIteration at the end; the request's
        error (a modelux.ModeluxError subclass) after the last chunk when it failed."""
    def close(self) -> None:
        """Cancels: the router stops reading the upstream at its next chunk."""
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the request finished; False on timeout."""
    @property
    def finished(self) -> bool: ...
    @property
    def cancelled(self) -> bool: ...
    @property
    def error_kind(self) -> str:
        """ErrorKind name of the finished request's failure, "" when it succeeded or is running."""
    def trace_json(self) -> Optional[str]:
        """The DecisionTrace JSON once finished, else None."""
    def poll(self) -> Optional[Dict[str, Any]]:
        """asyncio: the next chunk without blocking, or None when none is queued (the notifier
        is then armed). StopIteration at the end; the error after the last chunk."""
    def set_notifier(self, notify: Callable[[], None], bridge: Optional[AsyncBridge] = None) -> None:
        """Run when a chunk or the end arrives while armed: on the event loop through `bridge`
        (its drain), or without one from a router io thread with the GIL (it must then only
        schedule work, e.g. loop.call_soon_threadsafe)."""

class PendingChat:
    def cancel(self) -> None:
        """Cancels the request: upstream calls stop at once, the trace records cancelled."""
    def wait(self, timeout: Optional[float] = None) -> bool: ...
    @property
    def finished(self) -> bool: ...

class AsyncBridge:
    """Completions of asyncio requests for one event loop: io threads queue them and write an
    eventfd (without the GIL); register `fileno()` with loop.add_reader(fd, drain)."""
    def __init__(self) -> None: ...
    def fileno(self) -> int: ...
    def drain(self) -> int:
        """Runs the queued completions (resolving their futures); returns how many."""

class ClientSession:
    def next(self) -> str:
        """{"kind": "attempt"|"wait"|"done"|"failed", "attempts": [{"id", "model", "provider",
        "upstream_model", "timeout_s", "deadline_s", "why", "member"}], "cancel": [ids],
        "wait_s": seconds or null} as JSON text."""
    def report_response(self, attempt_id: int, response_json: str) -> None: ...
    def report_http(self, attempt_id: int, status: int, headers: Sequence[Tuple[str, str]], body: str) -> None: ...
    def report_error(
        self, attempt_id: int, kind: str, message: str, status: int = 0, retry_after: Optional[float] = None
    ) -> None: ...
    def native_request(self, attempt_id: int) -> str:
        """{"method", "url", "headers", "body"} as JSON text."""
    def finish(self) -> Tuple[str, Trace]:
        """(response JSON, trace); raises the final ModeluxError (with .trace)."""
    def outcome(self) -> Tuple[str, Trace]: ...

class TraceStore:
    def __init__(self, path: str, read_only: bool = True) -> None: ...
    @property
    def path(self) -> str: ...
    def query(self, query_json: str) -> str: ...
    def count(self, query_json: str) -> int: ...
    def get(self, request_id: str) -> Optional[str]: ...
    def configs(self) -> List[Tuple[str, int]]: ...
    def spend(self, by: str, since: float, until: float) -> str: ...
    def latency(self, by: str, since: float, until: float) -> str: ...
    def errors(self, since: float, until: float) -> str: ...
    def failovers(self, since: float, until: float) -> str: ...
    def forecast(self, lookback_days: int = 7) -> str: ...

class ControlStore:
    def __init__(self, path: str) -> None: ...
    @property
    def path(self) -> str: ...
    def heads(self, kind: str) -> str: ...
    def get(self, kind: str, name: str, version: int = 0) -> Optional[str]: ...
    def history(self, kind: str, name: str, limit: int = 100) -> str: ...
    def commit(
        self,
        kind: str,
        name: str,
        document_json: str,
        expected: Optional[int],
        author: str,
        message: str,
        action: str,
    ) -> str: ...
    def audit(self, object: str = "", limit: int = 1000) -> str: ...
    def verify_audit(self) -> str: ...

class MockProvider:
    def __init__(self, config_json: str = "{}", seed: int = 42, threads: int = 1, port: int = 0) -> None: ...
    @property
    def port(self) -> int: ...
    @property
    def base_url(self) -> str: ...
    def configure(self, config_json: str) -> None: ...
    def stats(self) -> str: ...
    def stop(self) -> None: ...

def json_diff(a_json: str, b_json: str) -> str:
    """RFC 6902 JSON Patch from a to b, as JSON text."""

def text_diff(a_json: str, b_json: str, a_name: str, b_name: str) -> str:
    """A unified line diff of the two documents."""

def anthropic_request_to_openai(body_json: str) -> str:
    """An Anthropic Messages request → the unified (Chat Completions) request, JSON text."""

def openai_response_to_anthropic(body_json: str) -> str:
    """A chat.completion → an Anthropic Messages `message` object, JSON text."""

class Router:
    def __init__(
        self,
        config_json: Optional[str] = None,
        config_path: Optional[str] = None,
        io_threads: int = 1,
        seed: int = 0,
        tracing: bool = True,
        simulated_json: Optional[str] = None,
    ) -> None: ...
    def executor_benchmark(self, request_json: str, context_json: str, n: int) -> float:
        """Seconds n blocking Router::complete calls made from C++ took (GIL released)."""
    def chat(
        self,
        model: str,
        messages: Any,
        params: Optional[Dict[str, Any]],
        context: Optional[Tuple[Any, ...]],
        cls: Optional[type] = None,
    ) -> Any:
        """{"model": model, "messages": messages, **params} routed; `context` is None or
        (project, end_user, org, tags, request_id, api_key_id). Returns (response dict, Trace),
        or with `cls` (a dict subclass) an instance holding the response, its Trace in `_t`.
        Raises a ModeluxError subclass carrying .trace."""
    def stream(
        self,
        model: str,
        messages: Any,
        params: Optional[Dict[str, Any]],
        context: Optional[Tuple[Any, ...]],
        anthropic_id: str = "",
    ) -> ChatStream:
        """A stream of chunk dicts; with `anthropic_id` (the message id) of Anthropic Messages
        stream events, encoded by the proxy's AnthropicStreamEncoder."""
    def chat_async(
        self,
        model: str,
        messages: Any,
        params: Optional[Dict[str, Any]],
        context: Optional[Tuple[Any, ...]],
        cls: Optional[type],
        bridge: AsyncBridge,
        future: Any,
    ) -> PendingChat:
        """Starts the request and returns at once; when it finished, the loop's drain of
        `bridge` resolves `future` with what chat() returns, or sets the error on it."""
    def embed_async(self, request_json: str, context: Optional[Tuple[Any, ...]], bridge: AsyncBridge, future: Any) -> PendingChat:
        """Embeddings completing into the event loop (as chat_async): `future` gets
        (response JSON, Trace)."""
    def begin(self, request_json: str, context_json: str) -> ClientSession:
        """Bring your own client; raises NotFoundError for an unknown model or slug."""
    def budgets_json(self) -> str: ...
    def trace_store(self) -> Optional[TraceStore]:
        """The router's trace store after a flush; None when tracing is off."""
    def embed(self, request_json: str, context: Optional[Tuple[Any, ...]]) -> Tuple[str, Trace]:
        """(embeddings response JSON in OpenAI's shape, trace JSON); raises a ModeluxError subclass carrying .trace."""
    def routing_slugs(self) -> List[str]: ...
    def routable_models(self) -> List[str]: ...
    def routing_config(self, slug: str) -> Optional[str]:
        """{"slug", "version", "strategy", "config"} as JSON text, or None for an unknown slug."""
    def set_routing_config(self, slug: str, config_json: str) -> int: ...
    def catalog_json(self) -> str: ...
    def cost(
        self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int, cache_write_tokens: int
    ) -> float: ...
    def close(self) -> None: ...

class Simulator:
    def __init__(self, config_json: Optional[str] = None) -> None: ...
    def add_target(self, target_json: str) -> None: ...
    def run(self, route_json: str, requests: int, options_json: str) -> str:
        """The SimReport as JSON text."""
