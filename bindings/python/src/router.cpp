// modelux._core.Router and ChatStream.
//
// chat(): blocking Router::complete with the GIL released.
// stream(): the request runs as a coroutine on the Router's own io threads (co_complete), so no
// extra thread is created per stream. Chunks are handed to the Python consumer through a small
// bounded queue: when it is full the sink waits on a short timer (never blocking the io thread,
// which other requests share), which slows this request's upstream reads — backpressure. The
// consumer waits on a condition variable in 50 ms slices so Ctrl-C (PyErr_CheckSignals) is seen
// promptly. Cancelling (close(), Ctrl-C, the iterator being collected) makes the sink return
// false at the next chunk: the router stops reading upstream and traces the cancellation.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <unordered_map>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pybind11/stl.h>

#include "common.hpp"
#include "modelux/budget.hpp"
#include "modelux/router.hpp"
#include "modelux/testing.hpp"
#include "modelux/trace.hpp"

namespace modelux::python {

namespace {

using namespace std::chrono_literals;

CallContext context_from_json(const Json& j) {
  CallContext ctx;
  if (j.is_null()) return ctx;
  if (!j.is_object()) throw PyError(fail(ErrorKind::bad_request, "call context must be an object", "$").error());
  auto str = [&](const char* key, std::string& out) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (!it->is_string())
      throw PyError(fail(ErrorKind::bad_request, std::string("'") + key + "' must be a string", std::string("$.") + key).error());
    out = it->get<std::string>();
  };
  str("request_id", ctx.request_id);
  str("project", ctx.project);
  str("org", ctx.org);
  str("end_user", ctx.end_user);
  str("api_key_id", ctx.api_key_id);
  if (auto t = j.find("tags"); t != j.end() && !t->is_null()) {
    if (!t->is_object()) throw PyError(fail(ErrorKind::bad_request, "'tags' must be a dict of strings", "$.tags").error());
    for (const auto& [k, v] : t->items()) {
      if (!v.is_string())
        throw PyError(fail(ErrorKind::bad_request, "tag '" + k + "' must be a string", "$.tags." + k).error());
      ctx.tags.emplace_back(k, v.get<std::string>());
    }
  }
  return ctx;
}

ChatRequest request_from_text(const std::string& text) {
  Json j = parse_text(text, "request");
  return unwrap(chat_request_from_json(j));
}

/// False once the interpreter is shutting down: an io thread must not take the GIL then.
bool python_alive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

/// Releases a Python object from any thread: with the GIL, or leaked at interpreter exit.
struct GilDeleter {
  void operator()(py::object* o) const {
    if (!python_alive()) return;  // leak at shutdown rather than touch a dying interpreter
    py::gil_scoped_acquire gil;
    delete o;
  }
};
std::shared_ptr<py::object> hold_callable(py::object f) {
  return std::shared_ptr<py::object>(new py::object(std::move(f)), GilDeleter{});
}

/// A finished request's DecisionTrace, handed to Python unserialized: most callers never read
/// the trace, and its JSON (encode here, decode in Python) costs more than the rest of the
/// binding's per-request work. `json()` serializes on demand (the Python layer caches it).
struct PyTrace {
  DecisionTrace trace;
  std::string json() const { return trace.to_json().dump(); }
};
py::object trace_handle(DecisionTrace t) { return py::cast(std::make_shared<PyTrace>(PyTrace{std::move(t)})); }

/// Shared between the stream coroutine (io thread) and the Python iterator.
struct StreamState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> chunks;  // chunk JSON text
  bool done = false;
  std::optional<Error> error;
  std::string trace_json;
  std::atomic<bool> cancel{false};
  /// Wakes the request at once, even while it waits on an upstream that sends nothing.
  std::shared_ptr<CancellationToken> token = std::make_shared<CancellationToken>();
  /// asyncio consumers (astream): a callable the io thread calls (with the GIL) when a chunk
  /// or the end arrives while the consumer is armed, i.e. found the queue empty. It schedules
  /// the wake-up on the event loop (loop.call_soon_threadsafe); one GIL acquisition per wait,
  /// not per chunk. Guarded by `mu`; the object itself is only touched with the GIL held.
  std::shared_ptr<py::object> notifier;
  bool armed = false;
  void cancel_now() {
    cancel.store(true);
    token->cancel();
    cv.notify_all();
  }
  /// Called on the io thread after a push or the end (without `mu` held).
  void wake_async() {
    std::shared_ptr<py::object> n;
    {
      std::lock_guard lk(mu);
      if (!armed || !notifier) return;
      armed = false;
      n = notifier;
    }
    call_notifier(n);
  }
  static void call_notifier(const std::shared_ptr<py::object>& n) {
    if (!python_alive()) return;
    py::gil_scoped_acquire gil;
    try {
      (*n)();
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("modelux: waking an asyncio consumer");
    }
  }
  static constexpr std::size_t kMaxQueued = 64;
};

class PyChatStream {
 public:
  PyChatStream(std::shared_ptr<Router> router, std::shared_ptr<StreamState> st)
      : router_(std::move(router)), st_(std::move(st)) {}
  ~PyChatStream() { st_->cancel_now(); }
  PyChatStream(const PyChatStream&) = delete;
  PyChatStream& operator=(const PyChatStream&) = delete;

  /// Next chunk's JSON text; StopIteration at the end; the request's error after the last chunk.
  std::string next() {
    for (;;) {
      std::optional<std::string> item;
      bool finished = false;
      {
        py::gil_scoped_release nogil;
        std::unique_lock lk(st_->mu);
        st_->cv.wait_for(lk, 50ms, [&] { return !st_->chunks.empty() || st_->done; });
        if (!st_->chunks.empty() && !st_->cancel.load()) {
          item = std::move(st_->chunks.front());
          st_->chunks.pop_front();
        } else if (st_->done || st_->cancel.load()) {
          finished = true;
        }
      }
      if (item) return std::move(*item);
      if (finished) {
        // A stream the caller closed ends quietly; any other failure is raised (a stream that
        // broke after it started is stream_interrupted, never a silent clean end).
        if (!closed_by_caller() && st_->error) {
          if (!raised_) {
            raised_ = true;
            throw PyError(*st_->error, st_->trace_json);
          }
        }
        throw py::stop_iteration();
      }
      if (PyErr_CheckSignals() != 0) {
        st_->cancel_now();
        throw py::error_already_set();
      }
    }
  }

  /// Non-blocking next for asyncio: the next chunk's JSON text, or None when none is queued
  /// yet (the notifier is then armed: it runs once something arrives). StopIteration at the
  /// end, the request's error after the last chunk.
  py::object poll() {
    std::optional<std::string> item;
    bool finished = false;
    {
      std::lock_guard lk(st_->mu);
      if (!st_->chunks.empty() && !st_->cancel.load()) {
        item = std::move(st_->chunks.front());
        st_->chunks.pop_front();
      } else if (st_->done || st_->cancel.load()) {
        finished = true;
      } else {
        st_->armed = true;
      }
    }
    if (item) return py::str(*item);
    if (finished) {
      if (!closed_by_caller() && st_->error && !raised_) {
        raised_ = true;
        throw PyError(*st_->error, st_->trace_json);
      }
      throw py::stop_iteration();
    }
    return py::none();
  }

  void set_notifier(py::object f) {
    auto n = hold_callable(std::move(f));
    std::lock_guard lk(st_->mu);
    st_->notifier = std::move(n);
  }

  void close() { st_->cancel_now(); }

  /// Waits until the request has finished (served, failed or abandoned after cancel).
  bool wait(std::optional<double> timeout_s) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(timeout_s.value_or(0)));
    for (;;) {
      {
        py::gil_scoped_release nogil;
        std::unique_lock lk(st_->mu);
        st_->cv.wait_for(lk, 50ms, [&] { return st_->done; });
        if (st_->done) return true;
      }
      if (timeout_s && std::chrono::steady_clock::now() >= deadline) return false;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }

  bool finished() const {
    std::lock_guard lk(st_->mu);
    return st_->done;
  }
  bool cancelled() const { return st_->cancel.load(); }

  std::optional<std::string> trace_json() const {
    std::lock_guard lk(st_->mu);
    if (!st_->done) return std::nullopt;
    return st_->trace_json;
  }

  /// The request's error kind once finished ("" when it succeeded).
  std::string error_kind() const {
    std::lock_guard lk(st_->mu);
    return st_->error ? std::string(to_string(st_->error->kind)) : std::string{};
  }

 private:
  bool closed_by_caller() const { return st_->cancel.load(); }
  std::shared_ptr<Router> router_;  // the Router outlives every stream it started
  std::shared_ptr<StreamState> st_;
  bool raised_ = false;
};

/// One chat request started from asyncio (achat): completes on a router io thread, which
/// stores the Completion and calls the Python notifier (loop.call_soon_threadsafe on a future),
/// so no Python thread waits for it.
struct PendingState {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Completion> done;
  std::shared_ptr<py::object> notifier;
  std::shared_ptr<CancellationToken> token = std::make_shared<CancellationToken>();
};

class PyPendingChat {
 public:
  PyPendingChat(std::shared_ptr<Router> router, std::shared_ptr<PendingState> st)
      : router_(std::move(router)), st_(std::move(st)) {}
  /// Cancels the request: the router stops its upstream calls at once (the trace records
  /// `cancelled`); the notifier still runs when it has ended.
  void cancel() { st_->token->cancel(); }
  bool finished() const {
    std::lock_guard lk(st_->mu);
    return st_->done.has_value();
  }
  bool wait(std::optional<double> timeout_s) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(timeout_s.value_or(0)));
    for (;;) {
      {
        py::gil_scoped_release nogil;
        std::unique_lock lk(st_->mu);
        st_->cv.wait_for(lk, 50ms, [&] { return st_->done.has_value(); });
        if (st_->done) return true;
      }
      if (timeout_s && std::chrono::steady_clock::now() >= deadline) return false;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }
  /// (response JSON, trace JSON) once finished; raises the request's error (with .trace).
  py::tuple result() const {
    std::lock_guard lk(st_->mu);
    if (!st_->done) throw py::value_error("the request has not finished");
    const Completion& c = *st_->done;
    if (!c.result) throw PyError(c.result.error(), c.trace.to_json().dump());
    return py::make_tuple(to_json(*c.result).dump(), trace_handle(c.trace));
  }
  std::optional<std::string> trace_json() const {
    std::lock_guard lk(st_->mu);
    if (!st_->done) return std::nullopt;
    return st_->done->trace.to_json().dump();
  }

 private:
  std::shared_ptr<Router> router_;
  std::shared_ptr<PendingState> st_;
};

/// Bring your own client: the app makes the calls, modelux routes, budgets and traces.
/// One Python thread drives one session (ClientSession is not thread-safe); the GIL is held
/// throughout (every call is short and does no I/O).
class PyClientSession {
 public:
  PyClientSession(std::shared_ptr<Router> router, std::unique_ptr<ClientSession> s)
      : router_(std::move(router)), s_(std::move(s)) {}

  /// {"kind": "attempt"|"wait"|"done"|"failed", "attempts": [...], "cancel": [ids],
  ///  "wait_s": seconds or null} as JSON text.
  std::string next() {
    Step st = live().next();
    const Clock& clock = router_->clock();
    Instant now = clock.now();
    Json out = Json::object();
    static constexpr const char* kinds[] = {"attempt", "wait", "done", "failed"};
    out["kind"] = kinds[static_cast<int>(st.kind)];
    Json attempts = Json::array();
    for (const AttemptPlan& p : st.attempts) {
      const ModelInfo* m = router_->catalog().find_model(p.target.model);
      std::string upstream = m && !m->upstream.empty() ? m->upstream : p.target.model;
      attempts.push_back({{"id", p.id},
                          {"model", p.target.model},
                          {"provider", p.target.provider},
                          {"upstream_model", upstream},
                          {"timeout_s", std::chrono::duration<double>(p.timeout).count()},
                          {"deadline_s", std::max(0.0, std::chrono::duration<double>(p.deadline - now).count())},
                          {"why", p.why},
                          {"member", p.member}});
      started_[p.id] = std::chrono::steady_clock::now();
    }
    out["attempts"] = std::move(attempts);
    out["cancel"] = Json(std::vector<std::uint32_t>(st.cancel.begin(), st.cancel.end()));
    out["wait_s"] = nullptr;
    if (st.kind == Step::Kind::wait && st.wake_at != Instant{})
      out["wait_s"] = std::max(0.0, std::chrono::duration<double>(st.wake_at - now).count());
    return out.dump();
  }

  /// A response in the OpenAI chat.completion shape (JSON text). One that does not decode is
  /// the app's mistake, not the provider's: BadRequestError, and the attempt stays open.
  void report_response(std::uint32_t id, const std::string& response_json) {
    Result<ChatResponse> r = chat_response_from_json(parse_text(response_json, "response"));
    if (!r) {
      Error e = r.error();
      e.kind = ErrorKind::bad_request;
      e.message = "the reported response is not a chat.completion: " + e.message;
      throw PyError(std::move(e));
    }
    live().report(id, std::move(r), latency(id));
  }
  /// A raw HTTP answer in the attempt's provider's native format (the SDK's own object
  /// dumped to JSON, or an error status and headers); decoded by the provider's codec.
  void report_http(std::uint32_t id, int status, const std::vector<std::pair<std::string, std::string>>& headers,
                   const std::string& body) {
    live().report_http(id, status, headers, body, latency(id));
  }
  /// A failure that has no HTTP answer (timeout, connection) or an already classified one.
  void report_error(std::uint32_t id, const std::string& kind, const std::string& message, int status,
                    std::optional<double> retry_after_s) {
    auto k = error_kind_from_string(kind);
    if (!k) throw PyError(fail(ErrorKind::bad_request, "unknown error kind '" + kind + "'", "$.kind").error());
    Error e = fail(*k, message).error();
    e.status = status;
    if (retry_after_s)
      e.retry_after = std::chrono::milliseconds(static_cast<std::int64_t>(*retry_after_s * 1000.0));
    live().report(id, std::unexpected(std::move(e)), latency(id));
  }
  /// {"method", "url", "headers", "body"}: what modelux itself would send for the attempt.
  std::string native_request(std::uint32_t id) {
    AttemptPlan plan;
    plan.id = id;
    HttpRequestSpec spec = unwrap(live().native_request(plan));
    Json h = Json::object();
    for (const auto& [k, v] : spec.headers) h[k] = v;
    return Json{{"method", spec.method}, {"url", spec.url}, {"headers", std::move(h)}, {"body", spec.body}}.dump();
  }
  /// Ends the session: (response JSON, trace JSON), or raises the final error with .trace.
  py::tuple finish() {
    Completion c = live().finish();
    finished_ = std::move(c);
    return outcome();
  }
  py::tuple outcome() const {
    if (!finished_) throw py::value_error("the session has not finished");
    if (!finished_->result) throw PyError(finished_->result.error(), finished_->trace.to_json().dump());
    return py::make_tuple(to_json(*finished_->result).dump(), trace_handle(finished_->trace));
  }

 private:
  ClientSession& live() {
    if (finished_) throw py::value_error("this attempts session has finished");
    return *s_;
  }
  Nanos latency(std::uint32_t id) {
    auto it = started_.find(id);
    if (it == started_.end()) return Nanos{0};
    auto d = std::chrono::steady_clock::now() - it->second;
    started_.erase(it);
    return std::chrono::duration_cast<Nanos>(d);
  }
  std::shared_ptr<Router> router_;  // the Router outlives the session
  std::unique_ptr<ClientSession> s_;
  std::unordered_map<std::uint32_t, std::chrono::steady_clock::time_point> started_;
  std::optional<Completion> finished_;
};

class PyRouter {
 public:
  PyRouter(std::optional<std::string> config_json, std::optional<std::string> config_path, int io_threads,
           std::uint64_t seed, bool tracing, std::optional<std::string> simulated_json) {
    Config cfg = [&] {
      if (config_path) return unwrap(Config::load_file(*config_path));
      if (config_json) return unwrap(Config::from_json(parse_text(*config_json, "config")));
      return unwrap(Config::embedded_defaults());
    }();
    RouterOptions opts;
    opts.io_threads = io_threads;
    opts.seed = seed;
    opts.open_tracer = tracing;
    if (simulated_json) {
      // The mock provider without sockets (modelux::mock::make_simulated_transport) on the
      // real clock: every provider answers in-process, as `modelux mock` would.
      mock::MockOptions mo;
      mo.config = parse_text(*simulated_json, "simulated provider");
      opts.transport = unwrap(mock::make_simulated_transport(SteadyClock::instance(), std::move(mo)));
    }
    router_ = std::shared_ptr<Router>(unwrap(Router::create(std::move(cfg), std::move(opts))).release());
  }

  py::tuple chat(const std::string& request_json, const std::string& context_json) {
    ChatRequest req = request_from_text(request_json);
    req.stream = false;
    CallContext ctx = context_from_json(parse_text(context_json, "context"));
    std::shared_ptr<Router> router = hold();  // owned for the call: close() may run meanwhile
    // Runs asynchronously so that Ctrl-C can cancel it: the GIL is released while waiting, and
    // signals are checked every 50 ms; a KeyboardInterrupt cancels the request (upstream calls
    // stop at once) before it propagates.
    auto token = std::make_shared<CancellationToken>();
    ctx.cancel = token;
    auto done = std::make_shared<std::promise<Completion>>();
    std::future<Completion> fut = done->get_future();
    router->complete_async(std::move(req), std::move(ctx), [done](Completion c) { done->set_value(std::move(c)); });
    for (;;) {
      std::future_status ready;
      {
        py::gil_scoped_release nogil;
        ready = fut.wait_for(std::chrono::milliseconds(50));
      }
      if (ready == std::future_status::ready) break;
      if (PyErr_CheckSignals() != 0) {
        token->cancel();
        {
          py::gil_scoped_release nogil;
          fut.wait();
        }
        throw py::error_already_set();
      }
    }
    Completion c = fut.get();
    if (!c.result) throw PyError(c.result.error(), c.trace.to_json().dump());
    std::string body = to_json(*c.result).dump();
    return py::make_tuple(std::move(body), trace_handle(std::move(c.trace)));
  }

  /// Embeddings (OpenAI's request shape): (response JSON in OpenAI's shape, trace JSON).
  py::tuple embed(const std::string& request_json, const std::string& context_json) {
    EmbeddingRequest req = unwrap(parse_embedding_request(request_json));
    CallContext ctx = context_from_json(parse_text(context_json, "context"));
    std::shared_ptr<Router> router = hold();
    EmbeddingCompletion c;
    {
      py::gil_scoped_release nogil;
      c = router->embed(std::move(req), std::move(ctx));
    }
    if (!c.result) throw PyError(c.result.error(), c.trace.to_json().dump());
    return py::make_tuple(encode_embedding_response(*c.result, false), trace_handle(std::move(c.trace)));
  }

  std::unique_ptr<PyChatStream> stream(const std::string& request_json, const std::string& context_json) {
    ChatRequest req = request_from_text(request_json);
    req.stream = true;
    CallContext ctx = context_from_json(parse_text(context_json, "context"));
    std::shared_ptr<Router> router = hold();
    auto st = std::make_shared<StreamState>();
    ctx.cancel = st->token;
    AsyncChunkSink sink = [st](const ChatChunk& c) -> net::awaitable<bool> {
      std::string text = to_json(c).dump();
      for (;;) {
        if (st->cancel.load()) co_return false;
        {
          std::lock_guard lk(st->mu);
          if (st->chunks.size() < StreamState::kMaxQueued) {
            st->chunks.push_back(std::move(text));
            break;
          }
        }
        // Backpressure: the consumer is behind; wait without blocking the shared io thread.
        net::steady_timer t(co_await net::this_coro::executor);
        t.expires_after(1ms);
        co_await t.async_wait(net::use_awaitable);
      }
      st->cv.notify_all();
      st->wake_async();
      co_return !st->cancel.load();
    };
    net::co_spawn(net::make_strand(router->executor()),
                  router->co_complete(std::move(req), std::move(ctx), std::move(sink)),
                  [st](std::exception_ptr e, Completion c) {
                    {
                      std::lock_guard lk(st->mu);
                      if (e) {
                        st->error = fail(ErrorKind::internal, "stream failed with an exception").error();
                      } else {
                        st->trace_json = c.trace.to_json().dump();
                        if (!c.result) st->error = c.result.error();
                      }
                      st->done = true;
                    }
                    st->cv.notify_all();
                    st->wake_async();
                  });
    return std::make_unique<PyChatStream>(std::move(router), std::move(st));
  }

  /// asyncio: starts the request and returns at once; `notify` (no arguments) is called on a
  /// router io thread, with the GIL, when it has finished.
  std::unique_ptr<PyPendingChat> chat_async(const std::string& request_json, const std::string& context_json,
                                            py::object notify) {
    ChatRequest req = request_from_text(request_json);
    req.stream = false;
    CallContext ctx = context_from_json(parse_text(context_json, "context"));
    std::shared_ptr<Router> router = hold();
    auto st = std::make_shared<PendingState>();
    st->notifier = hold_callable(std::move(notify));
    ctx.cancel = st->token;
    {
      py::gil_scoped_release nogil;
      router->complete_async(std::move(req), std::move(ctx), [st](Completion c) {
        std::shared_ptr<py::object> n;
        {
          std::lock_guard lk(st->mu);
          st->done = std::move(c);
          n = std::move(st->notifier);
        }
        st->cv.notify_all();
        if (n) StreamState::call_notifier(n);
      });
    }
    return std::make_unique<PyPendingChat>(std::move(router), std::move(st));
  }

  /// Benchmark support (benchmarks/python/overhead.py): `n` blocking Router::complete calls
  /// made from C++ on this router, one after another, with the GIL released; returns the
  /// seconds they took. The baseline the Python layer's per-request overhead is measured
  /// against, on the same router and provider in the same process.
  double executor_benchmark(const std::string& request_json, const std::string& context_json, int n) {
    ChatRequest req = request_from_text(request_json);
    req.stream = false;
    CallContext ctx = context_from_json(parse_text(context_json, "context"));
    std::shared_ptr<Router> router = hold();
    py::gil_scoped_release nogil;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      ChatRequest r = req;
      CallContext c = ctx;
      Completion done = router->complete(std::move(r), std::move(c));
      if (!done.result) {
        py::gil_scoped_acquire gil;
        throw PyError(done.result.error(), done.trace.to_json().dump());
      }
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  /// Bring your own client: a session the app drives (not_found for an unknown model/slug).
  std::unique_ptr<PyClientSession> begin(const std::string& request_json, const std::string& context_json) {
    ChatRequest req = request_from_text(request_json);
    CallContext ctx = context_from_json(parse_text(context_json, "context"));
    std::shared_ptr<Router> router = hold();
    auto s = unwrap(router->begin(std::move(req), std::move(ctx)));
    return std::make_unique<PyClientSession>(std::move(router), std::move(s));
  }

  /// BudgetManager::snapshot() as JSON text ({"budgets": [], ...} when none are configured).
  std::string budgets_json() const {
    auto& router = r();
    BudgetManager* b = router.budgets();
    if (!b) return Json{{"budgets", Json::array()}}.dump();
    return b->snapshot(router.clock().now()).dump();
  }

  /// The router's trace store after everything submitted so far was written; nullptr when
  /// tracing is off.
  std::shared_ptr<TraceStore> trace_store() const {
    auto& router = r();
    Tracer* t = router.tracer();
    if (!t) return nullptr;
    {
      py::gil_scoped_release nogil;
      t->flush();
    }
    return t->store();
  }

  std::vector<std::string> routing_slugs() const { return r().routing_slugs(); }
  std::vector<std::string> routable_models() const { return r().routable_models(); }

  std::optional<std::string> routing_config(const std::string& slug) const {
    auto p = r().routing_config(slug);
    if (!p) return std::nullopt;
    std::string s = slug;
    if (!s.empty() && s.front() == '@') s.erase(0, 1);
    Json j = {{"slug", s}, {"version", p->version()}, {"strategy", std::string(p->strategy())}, {"config", p->source()}};
    return j.dump();
  }

  std::int64_t set_routing_config(const std::string& slug, const std::string& config_json) {
    Json cfg = parse_text(config_json, "routing config");
    return unwrap(r().set_routing_config(slug, cfg));
  }

  std::string catalog_json() const { return catalog_to_json(r().catalog()).dump(); }

  double cost(const std::string& model, std::int64_t prompt_tokens, std::int64_t completion_tokens,
              std::int64_t cached_tokens, std::int64_t cache_write_tokens) const {
    return cost_usd(r().catalog(), model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens);
  }

  /// Drops this handle's ownership (with the GIL held, so it cannot race a call taking its own
  /// reference); the Router stops once running calls and streams let go of it.
  void close() {
    std::shared_ptr<Router> last = std::move(router_);
    py::gil_scoped_release nogil;
    last.reset();  // may join the io threads: without the GIL
  }

 private:
  Router& r() const { return *hold(); }
  std::shared_ptr<Router> hold() const {
    if (!router_) throw py::value_error("this Router is closed");
    return router_;
  }
  std::shared_ptr<Router> router_;
};

}  // namespace

void bind_router(py::module_& m) {
  using py::arg;
  py::class_<PyTrace, std::shared_ptr<PyTrace>>(m, "Trace")
      .def("json", &PyTrace::json, "The DecisionTrace as JSON text (serialized on each call).");

  py::class_<PyChatStream>(m, "ChatStream")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &PyChatStream::next)
      .def("close", &PyChatStream::close)
      .def("wait", &PyChatStream::wait, arg("timeout") = py::none())
      .def_property_readonly("finished", &PyChatStream::finished)
      .def_property_readonly("cancelled", &PyChatStream::cancelled)
      .def_property_readonly("error_kind", &PyChatStream::error_kind)
      .def("trace_json", &PyChatStream::trace_json)
      .def("poll", &PyChatStream::poll)
      .def("set_notifier", &PyChatStream::set_notifier, arg("notify"));

  py::class_<PyPendingChat>(m, "PendingChat")
      .def("cancel", &PyPendingChat::cancel)
      .def("wait", &PyPendingChat::wait, arg("timeout") = py::none())
      .def_property_readonly("finished", &PyPendingChat::finished)
      .def("result", &PyPendingChat::result)
      .def("trace_json", &PyPendingChat::trace_json);

  py::class_<PyClientSession>(m, "ClientSession")
      .def("next", &PyClientSession::next)
      .def("report_response", &PyClientSession::report_response, arg("attempt_id"), arg("response_json"))
      .def("report_http", &PyClientSession::report_http, arg("attempt_id"), arg("status"), arg("headers"), arg("body"))
      .def("report_error", &PyClientSession::report_error, arg("attempt_id"), arg("kind"), arg("message"),
           arg("status") = 0, arg("retry_after") = py::none())
      .def("native_request", &PyClientSession::native_request, arg("attempt_id"))
      .def("finish", &PyClientSession::finish)
      .def("outcome", &PyClientSession::outcome);

  py::class_<PyRouter>(m, "Router")
      .def(py::init<std::optional<std::string>, std::optional<std::string>, int, std::uint64_t, bool,
                    std::optional<std::string>>(),
           arg("config_json") = py::none(), arg("config_path") = py::none(), arg("io_threads") = 1, arg("seed") = 0,
           arg("tracing") = true, arg("simulated_json") = py::none())
      .def("executor_benchmark", &PyRouter::executor_benchmark, arg("request_json"), arg("context_json"), arg("n"))
      .def("chat", &PyRouter::chat, arg("request_json"), arg("context_json"))
      .def("stream", &PyRouter::stream, arg("request_json"), arg("context_json"))
      .def("chat_async", &PyRouter::chat_async, arg("request_json"), arg("context_json"), arg("notify"))
      .def("begin", &PyRouter::begin, arg("request_json"), arg("context_json"))
      .def("budgets_json", &PyRouter::budgets_json)
      .def("trace_store", &PyRouter::trace_store)
      .def("embed", &PyRouter::embed, arg("request_json"), arg("context_json"))
      .def("routing_slugs", &PyRouter::routing_slugs)
      .def("routable_models", &PyRouter::routable_models)
      .def("routing_config", &PyRouter::routing_config, arg("slug"))
      .def("set_routing_config", &PyRouter::set_routing_config, arg("slug"), arg("config_json"))
      .def("catalog_json", &PyRouter::catalog_json)
      .def("cost", &PyRouter::cost, arg("model"), arg("prompt_tokens"), arg("completion_tokens"),
           arg("cached_tokens"), arg("cache_write_tokens"))
      .def("close", &PyRouter::close);
}

}  // namespace modelux::python
