# Hand-written stubs for the native module modelux._core (bindings/python/src/*.cpp).
# Values cross the boundary as JSON text; the `modelux` package wraps this module.
from typing import Callable, List, Optional, Tuple

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

class ChatStream:
    def __iter__(self) -> ChatStream: ...
    def __next__(self) -> str:
        """The next chunk as JSON text; StopIteration at the end; the request's error (a
        modelux.ModeluxError subclass) after the last chunk when it failed."""
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

class Router:
    def __init__(
        self,
        config_json: Optional[str] = None,
        config_path: Optional[str] = None,
        io_threads: int = 1,
        seed: int = 0,
        tracing: bool = True,
    ) -> None: ...
    def chat(self, request_json: str, context_json: str) -> Tuple[str, str]:
        """(response JSON, trace JSON); raises a ModeluxError subclass carrying .trace."""
    def stream(self, request_json: str, context_json: str) -> ChatStream: ...
    def embed(self, request_json: str, context_json: str) -> Tuple[str, str]:
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
