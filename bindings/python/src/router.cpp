// modelux._core.Router and ChatStream.
//
// Requests arrive as Python objects (model, messages, a params dict, a context tuple) and are
// walked into nlohmann::Json directly (py_to_json); chat responses are built as Python dicts
// straight from ChatResponse (convert.hpp), chunks from the C++ structs' JSON (json_to_py): no
// JSON text on the hot paths.
//
// chat(): Router::complete_async; the caller waits on a condition variable with the GIL
// released only around the wait.
// asyncio (chat_async, embed_async, astream wake-ups): completions are queued on an
// AsyncBridge, whose eventfd the event loop watches (loop.add_reader); the io thread only
// queues and writes the eventfd (once per batch), never takes the GIL; the loop drains the
// queue and resolves the futures in one callback.
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
#include <variant>

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pybind11/stl.h>

#include "common.hpp"
#include "convert.hpp"
#include "modelux/budget.hpp"
#include "modelux/router.hpp"
#include "modelux/testing.hpp"
#include "modelux/trace.hpp"
#include "wire/anthropic_messages.hpp"

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

/// The call context from the tuple the Python layer passes: (project, end_user, org, tags,
/// request_id, api_key_id), each None or a str (tags: a dict of str), or None for no context.
CallContext context_from_py(py::handle t) {
  CallContext ctx;
  if (t.is_none()) return ctx;
  if (!PyTuple_Check(t.ptr()) || PyTuple_GET_SIZE(t.ptr()) != 6)
    throw py::type_error("the call context must be a 6-tuple or None");
  static constexpr const char* names[] = {"project", "end_user", "org", "tags", "request_id", "api_key_id"};
  std::string* outs[] = {&ctx.project, &ctx.end_user, &ctx.org, nullptr, &ctx.request_id, &ctx.api_key_id};
  for (int i = 0; i < 6; ++i) {
    PyObject* v = PyTuple_GET_ITEM(t.ptr(), i);
    if (v == Py_None) continue;
    if (i == 3) {
      py::dict tags = py::reinterpret_borrow<py::object>(v);  // any Mapping, as dict(tags)
      for (auto [k, val] : tags) {
        std::string key = py::str(k);
        if (!PyUnicode_Check(val.ptr()))
          throw PyError(fail(ErrorKind::bad_request, "tag '" + key + "' must be a string", "$.tags." + key).error());
        ctx.tags.emplace_back(key, val.cast<std::string>());
      }
      continue;
    }
    if (!PyUnicode_Check(v))
      throw PyError(fail(ErrorKind::bad_request, std::string("'") + names[i] + "' must be a string",
                         std::string("$.") + names[i]).error());
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(v, &n);
    if (!s) throw py::error_already_set();
    outs[i]->assign(s, static_cast<std::size_t>(n));
  }
  return ctx;
}

/// {"model": model, "messages": messages, **params} → ChatRequest, without JSON text.
ChatRequest request_from_py(py::handle model, py::handle messages, py::handle params) {
  if (auto simple = simple_request_from_py(model.ptr(), messages.ptr(), params.ptr())) return std::move(*simple);
  Json body = Json::object();
  if (!params.is_none()) {
    if (!PyDict_Check(params.ptr())) throw py::type_error("params must be a dict");
    if (PyDict_GetItemString(params.ptr(), "model") || PyDict_GetItemString(params.ptr(), "messages"))
      throw py::type_error("pass model and messages positionally, not in **params");
    body = py_to_json(params);
  }
  body["model"] = py_to_json(model);
  if (PyList_Check(messages.ptr()) || PyTuple_Check(messages.ptr())) {
    body["messages"] = py_to_json(messages);
  } else {
    py::list l(py::reinterpret_borrow<py::object>(messages));  // any iterable, as list(messages)
    body["messages"] = py_to_json(l);
  }
  return unwrap(chat_request_from_json(body));
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

/// A finished chat as Python: `cls` None → (response dict, Trace); otherwise an instance of
/// `cls`, a dict subclass, holding the response with the Trace in its `_t` attribute
/// (modelux.ChatCompletion: built here without running its __init__, one copy less).
py::object completion_object(py::handle cls, const ChatResponse& r, DecisionTrace trace) {
  py::object t = trace_handle(std::move(trace));
  if (cls.is_none()) {
    py::dict body;
    fill_chat_completion(body.ptr(), r);
    return py::make_tuple(std::move(body), std::move(t));
  }
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  if (!PyType_Check(cls.ptr()) || !PyType_IsSubtype(type, &PyDict_Type)) throw py::type_error("cls must be a dict subclass");
  static const py::tuple no_args(0);
  PyObject* raw = type->tp_new(type, no_args.ptr(), nullptr);
  if (!raw) throw py::error_already_set();
  py::object obj = py::reinterpret_steal<py::object>(raw);
  fill_chat_completion(obj.ptr(), r);  // straight into the instance: no intermediate dict
  static const py::str kTraceAttr("_t");
  if (PyObject_SetAttr(obj.ptr(), kTraceAttr.ptr(), t.ptr()) != 0) throw py::error_already_set();
  return obj;
}

/// Where asyncio completions go (one per event loop; modelux._aio keeps them). Io threads
/// post callbacks and write the eventfd (only when the queue was empty: one wake-up per
/// batch); the loop's reader callback (drain) runs them with the GIL. No GIL on the io thread.
class AsyncBridge {
 public:
  AsyncBridge() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw PyError(fail(ErrorKind::io, "eventfd() failed").error());
  }
  ~AsyncBridge() {
    // Queued callbacks hold Python objects (GilDeleter): release them before the fd goes.
    std::vector<std::function<void()>> left;
    {
      std::lock_guard lk(mu_);
      left.swap(queue_);
    }
    left.clear();
    ::close(fd_);
  }
  AsyncBridge(const AsyncBridge&) = delete;
  AsyncBridge& operator=(const AsyncBridge&) = delete;
  int fd() const noexcept { return fd_; }
  /// Any thread, without the GIL.
  void post(std::function<void()> f) {
    bool first = false;
    {
      std::lock_guard lk(mu_);
      first = queue_.empty();
      queue_.push_back(std::move(f));
    }
    if (first) {
      std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);  // EAGAIN only at 2^64-2: ignore
    }
  }
  /// On the loop thread, with the GIL: runs every queued callback. The eventfd is read before
  /// the queue is taken, so a post after the take writes it again (no lost wake-up).
  int drain() {
    std::uint64_t v = 0;
    [[maybe_unused]] auto n = ::read(fd_, &v, sizeof v);
    std::vector<std::function<void()>> items;
    {
      std::lock_guard lk(mu_);
      items.swap(queue_);
    }
    for (auto& f : items) {
      try {
        f();
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable("modelux: completing an asyncio request");
      }
    }
    return static_cast<int>(items.size());
  }

 private:
  int fd_;
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;
};

/// fut.set_result(value) unless the future is done (cancelled meanwhile). With the GIL.
void resolve_future(const py::object& fut, const py::object& value) {
  static const py::str kDone("done"), kSetResult("set_result");
  if (fut.attr(kDone)().cast<bool>()) return;
  fut.attr(kSetResult)(value);
}
void reject_future(const py::object& fut, const PyError& e) {
  static const py::str kDone("done"), kSetException("set_exception");
  if (fut.attr(kDone)().cast<bool>()) return;
  fut.attr(kSetException)(exception_object(e));
}

/// SSE text ("event: x\ndata: {...}\n\n"...) from AnthropicStreamEncoder → the events' data
/// objects (each has "type": the event name), pings left out as the anthropic SDK does.
void anthropic_events(std::string_view text, std::deque<py::object>& out) {
  while (!text.empty()) {
    auto end = text.find("\n\n");
    std::string_view block = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 2);
    std::string_view event, data;
    while (!block.empty()) {
      auto nl = block.find('\n');
      std::string_view line = block.substr(0, nl);
      block = nl == std::string_view::npos ? std::string_view{} : block.substr(nl + 1);
      if (line.starts_with("event: ")) event = line.substr(7);
      else if (line.starts_with("data: ")) data = line.substr(6);
    }
    if (data.empty() || event == "ping") continue;
    Json j = unwrap(parse_json(data));
    out.push_back(json_to_py(j));
  }
}

/// Shared between the stream coroutine (io thread) and the Python iterator.
struct StreamState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ChatChunk> chunks;  // converted to Python objects by the consumer, with the GIL
  bool done = false;
  std::optional<Error> error;
  std::string trace_json;
  std::string served_model;
  std::atomic<bool> cancel{false};
  /// Wakes the request at once, even while it waits on an upstream that sends nothing.
  std::shared_ptr<CancellationToken> token = std::make_shared<CancellationToken>();
  /// asyncio consumers (astream): a callable run on the event loop when a chunk or the end
  /// arrives while the consumer is armed, i.e. found the queue empty: posted to `bridge`
  /// (no GIL on the io thread), or, without a bridge, called on the io thread with the GIL.
  /// One wake-up per wait, not per chunk. Guarded by `mu`; the object itself is only touched
  /// with the GIL held.
  std::shared_ptr<py::object> notifier;
  std::shared_ptr<AsyncBridge> bridge;
  bool armed = false;
  void cancel_now() {
    cancel.store(true);
    token->cancel();
    cv.notify_all();
  }
  /// Called on the io thread after a push or the end (without `mu` held).
  void wake_async() {
    std::shared_ptr<py::object> n;
    std::shared_ptr<AsyncBridge> b;
    {
      std::lock_guard lk(mu);
      if (!armed || !notifier) return;
      armed = false;
      n = notifier;
      b = bridge;
    }
    if (b) {
      b->post([n] { (*n)(); });
      return;
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
  /// `anthropic_id` non-empty: the stream yields Anthropic Messages events (the proxy's own
  /// AnthropicStreamEncoder, message id `anthropic_id`) instead of chat.completion.chunks.
  PyChatStream(std::shared_ptr<Router> router, std::shared_ptr<StreamState> st, std::string anthropic_id = {},
               std::string asked_model = {})
      : router_(std::move(router)), st_(std::move(st)), anthropic_id_(std::move(anthropic_id)),
        asked_model_(std::move(asked_model)) {}
  ~PyChatStream() { st_->cancel_now(); }
  PyChatStream(const PyChatStream&) = delete;
  PyChatStream& operator=(const PyChatStream&) = delete;

  /// The next chunk (a chat.completion.chunk dict, or an Anthropic event dict); StopIteration
  /// at the end; the request's error after the last chunk.
  py::object next() { return step(true); }

  /// Non-blocking next for asyncio: the next chunk, or None when none is queued yet (the
  /// notifier is then armed: it runs once something arrives). StopIteration at the end, the
  /// request's error after the last chunk.
  py::object poll() { return step(false); }

  void set_notifier(py::object f, std::shared_ptr<AsyncBridge> bridge) {
    auto n = hold_callable(std::move(f));
    std::lock_guard lk(st_->mu);
    st_->notifier = std::move(n);
    st_->bridge = std::move(bridge);
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
  enum class Got : std::uint8_t { item, end, empty };
  /// next() (`block`: waits without the GIL, checking for Ctrl-C between waits) and poll()
  /// (returns None when nothing is queued).
  py::object step(bool block) {
    for (;;) {
      if (!events_.empty()) return pop_event();
      if (ended_) end_of_stream();
      std::optional<ChatChunk> item;
      Got got;
      if (block) {
        py::gil_scoped_release nogil;
        got = take(item, true);
      } else {
        got = take(item, false);
      }
      if (got == Got::item) {
        if (py::object o = emit(*item)) return o;
        continue;
      }
      if (got == Got::end) {
        on_end();
        continue;
      }
      if (!block) return py::none();
      if (PyErr_CheckSignals() != 0) {
        st_->cancel_now();
        throw py::error_already_set();
      }
    }
  }
  /// Takes the next chunk or notices the end; `block`: waits up to 50 ms (call without the
  /// GIL). Non-blocking and empty: arms the notifier.
  Got take(std::optional<ChatChunk>& out, bool block) {
    std::unique_lock lk(st_->mu);
    if (block) st_->cv.wait_for(lk, 50ms, [&] { return !st_->chunks.empty() || st_->done; });
    if (!st_->chunks.empty() && !st_->cancel.load()) {
      out.emplace(std::move(st_->chunks.front()));
      st_->chunks.pop_front();
      return Got::item;
    }
    if (st_->done || st_->cancel.load()) return Got::end;
    if (!block) st_->armed = true;
    return Got::empty;
  }
  /// A chunk as the Python object to hand out (OpenAI), or none when it went into events_.
  py::object emit(const ChatChunk& c) {
    if (anthropic_id_.empty()) return json_to_py(to_json(c));
    if (!enc_) enc_.emplace(anthropic_id_, c.model.empty() ? asked_model_ : c.model);
    std::string text;
    enc_->add(c, text);
    anthropic_events(text, events_);
    return py::object();
  }
  /// The request ended: Anthropic's closing events when it succeeded.
  void on_end() {
    ended_ = true;
    if (anthropic_id_.empty() || closed_by_caller()) return;
    std::string served;
    {
      std::lock_guard lk(st_->mu);
      if (st_->error) return;
      served = st_->served_model;
    }
    if (!enc_) enc_.emplace(anthropic_id_, served.empty() ? asked_model_ : served);
    std::string text;
    enc_->finish(text);
    anthropic_events(text, events_);
  }
  py::object pop_event() {
    py::object o = std::move(events_.front());
    events_.pop_front();
    return o;
  }
  [[noreturn]] void end_of_stream() {
    // A stream the caller closed ends quietly; any other failure is raised (a stream that
    // broke after it started is stream_interrupted, never a silent clean end).
    if (!closed_by_caller() && !raised_) {
      std::optional<Error> err;
      std::string trace;
      {
        std::lock_guard lk(st_->mu);
        err = st_->error;
        trace = st_->trace_json;
      }
      if (err) {
        raised_ = true;
        throw PyError(std::move(*err), std::move(trace));
      }
    }
    throw py::stop_iteration();
  }
  bool closed_by_caller() const { return st_->cancel.load(); }
  std::shared_ptr<Router> router_;  // the Router outlives every stream it started
  std::shared_ptr<StreamState> st_;
  bool raised_ = false;
  bool ended_ = false;
  std::string anthropic_id_, asked_model_;
  std::optional<wire::AnthropicStreamEncoder> enc_;
  std::deque<py::object> events_;
};

/// One request started from asyncio (chat_async, embed_async): completes on a router io
/// thread, which posts the completion to the loop's AsyncBridge; the loop's drain builds the
/// result and resolves the asyncio future. No Python thread waits for it.
struct PendingState {
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  std::shared_ptr<CancellationToken> token = std::make_shared<CancellationToken>();
};

class PyPendingChat {
 public:
  PyPendingChat(std::shared_ptr<Router> router, std::shared_ptr<PendingState> st)
      : router_(std::move(router)), st_(std::move(st)) {}
  /// Cancels the request: the router stops its upstream calls at once (the trace records
  /// `cancelled`); the future is left alone (the caller cancelled it).
  void cancel() { st_->token->cancel(); }
  bool finished() const {
    std::lock_guard lk(st_->mu);
    return st_->finished;
  }
  bool wait(std::optional<double> timeout_s) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(timeout_s.value_or(0)));
    for (;;) {
      {
        py::gil_scoped_release nogil;
        std::unique_lock lk(st_->mu);
        st_->cv.wait_for(lk, 50ms, [&] { return st_->finished; });
        if (st_->finished) return true;
      }
      if (timeout_s && std::chrono::steady_clock::now() >= deadline) return false;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
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
    // The last reference may go from Python code holding the GIL (a stream or pending call
    // collected inside an asyncio task step): ~Router joins the io threads, and an io thread
    // finishing a handler that drops a Python object needs the GIL. So the Router is destroyed
    // without the GIL whenever this thread holds it (a run of test_async hung here: the
    // main thread joined with the GIL held, the io thread waited for it).
    router_ = std::shared_ptr<Router>(unwrap(Router::create(std::move(cfg), std::move(opts))).release(), [](Router* r) {
      if (Py_IsInitialized() && PyGILState_Check()) {
        py::gil_scoped_release nogil;
        delete r;
      } else {
        delete r;
      }
    });
  }

  /// Blocking chat: `cls` None → (response dict, Trace), else a `cls` instance (see
  /// completion_object). Raises the request's error (with .trace).
  py::object chat(py::handle model, py::handle messages, py::handle params, py::handle context, py::handle cls) {
    ChatRequest req = request_from_py(model, messages, params);
    req.stream = false;
    CallContext ctx = context_from_py(context);
    std::shared_ptr<Router> router = hold();  // owned for the call: close() may run meanwhile
    // Runs asynchronously so that Ctrl-C can cancel it: the GIL is released only around the
    // wait, and signals are checked every 50 ms; a KeyboardInterrupt cancels the request
    // (upstream calls stop at once) before it propagates.
    // A futex word, not a mutex and condition variable: the io thread publishes the
    // Completion and wakes the caller with one syscall; the caller sleeps in 50 ms slices.
    struct Waiter {
      std::atomic<std::uint32_t> ready{0};
      std::optional<Completion> done;
    };
    auto w = std::make_shared<Waiter>();
    auto token = std::make_shared<CancellationToken>();
    ctx.cancel = token;
    router->complete_async(std::move(req), std::move(ctx), [w](Completion c) {
      w->done = std::move(c);
      w->ready.store(1, std::memory_order_release);
      ::syscall(SYS_futex, &w->ready, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    });
    auto wait_slice = [&w](bool forever) {
      py::gil_scoped_release nogil;
      timespec slice{0, 50'000'000};
      do {
        if (w->ready.load(std::memory_order_acquire) != 0) return true;
        ::syscall(SYS_futex, &w->ready, FUTEX_WAIT_PRIVATE, 0, forever ? nullptr : &slice, nullptr, 0);
      } while (forever);
      return w->ready.load(std::memory_order_acquire) != 0;
    };
    while (!wait_slice(false)) {
      if (PyErr_CheckSignals() != 0) {
        token->cancel();
        py::error_already_set interrupted;  // fetched now; restored when raised
        wait_slice(true);
        throw interrupted;
      }
    }
    Completion c = std::move(*w->done);
    if (!c.result) throw PyError(c.result.error(), c.trace.to_json().dump());
    return completion_object(cls, *c.result, std::move(c.trace));
  }

  /// Embeddings (OpenAI's request shape): (response JSON in OpenAI's shape, trace JSON).
  py::tuple embed(const std::string& request_json, py::handle context) {
    EmbeddingRequest req = unwrap(parse_embedding_request(request_json));
    CallContext ctx = context_from_py(context);
    std::shared_ptr<Router> router = hold();
    EmbeddingCompletion c;
    {
      py::gil_scoped_release nogil;
      c = router->embed(std::move(req), std::move(ctx));
    }
    if (!c.result) throw PyError(c.result.error(), c.trace.to_json().dump());
    return py::make_tuple(encode_embedding_response(*c.result, false), trace_handle(std::move(c.trace)));
  }

  /// asyncio embeddings: starts the request and returns at once; the loop's drain of `bridge`
  /// resolves `future` with (response JSON, Trace) or the error.
  std::unique_ptr<PyPendingChat> embed_async(const std::string& request_json, py::handle context,
                                             std::shared_ptr<AsyncBridge> bridge, py::object future) {
    EmbeddingRequest req = unwrap(parse_embedding_request(request_json));
    CallContext ctx = context_from_py(context);
    std::shared_ptr<Router> router = hold();
    auto st = std::make_shared<PendingState>();
    ctx.cancel = st->token;
    auto fut = hold_callable(std::move(future));
    {
      py::gil_scoped_release nogil;
      net::co_spawn(net::make_strand(router->next_executor()), router->co_embed(std::move(req), std::move(ctx)),
                    [st, bridge, fut](std::exception_ptr e, EmbeddingCompletion c) mutable {
                      if (e) c.result = fail(ErrorKind::internal, "embeddings failed with an exception");
                      auto done = std::make_shared<EmbeddingCompletion>(std::move(c));
                      // The Python objects move on to the loop thread: the io thread keeps no
                      // reference that it would have to drop with the GIL.
                      bridge->post([done, fut = std::move(fut)] {
                        if (!done->result) {
                          reject_future(*fut, PyError(done->result.error(), done->trace.to_json().dump()));
                          return;
                        }
                        py::str body(encode_embedding_response(*done->result, false));
                        resolve_future(*fut, py::make_tuple(body, trace_handle(std::move(done->trace))));
                      });
                      {
                        std::lock_guard lk(st->mu);
                        st->finished = true;
                      }
                      st->cv.notify_all();
                    });
    }
    return std::make_unique<PyPendingChat>(std::move(router), std::move(st));
  }

  /// A stream of chunk dicts (`anthropic_id` non-empty: of Anthropic Messages event dicts).
  std::unique_ptr<PyChatStream> stream(py::handle model, py::handle messages, py::handle params, py::handle context,
                                       const std::string& anthropic_id) {
    ChatRequest req = request_from_py(model, messages, params);
    req.stream = true;
    CallContext ctx = context_from_py(context);
    std::shared_ptr<Router> router = hold();
    auto st = std::make_shared<StreamState>();
    ctx.cancel = st->token;
    std::string asked = req.model;
    AsyncChunkSink sink = [st](const ChatChunk& c) -> net::awaitable<bool> {
      for (;;) {
        if (st->cancel.load()) co_return false;
        {
          std::lock_guard lk(st->mu);
          if (st->chunks.size() < StreamState::kMaxQueued) {
            st->chunks.push_back(c);
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
    {
      py::gil_scoped_release nogil;
      net::co_spawn(net::make_strand(router->next_executor()),
                    router->co_complete(std::move(req), std::move(ctx), std::move(sink)),
                    [st](std::exception_ptr e, Completion c) {
                      {
                        std::lock_guard lk(st->mu);
                        if (e) {
                          st->error = fail(ErrorKind::internal, "stream failed with an exception").error();
                        } else {
                          st->trace_json = c.trace.to_json().dump();
                          st->served_model = c.served.model;
                          if (!c.result) st->error = c.result.error();
                        }
                        st->done = true;
                      }
                      st->cv.notify_all();
                      st->wake_async();
                    });
    }
    return std::make_unique<PyChatStream>(std::move(router), std::move(st), anthropic_id, std::move(asked));
  }

  /// asyncio: starts the request and returns at once; the loop's drain of `bridge` resolves
  /// `future` with what chat() would return (or sets the error on it).
  std::unique_ptr<PyPendingChat> chat_async(py::handle model, py::handle messages, py::handle params,
                                            py::handle context, py::object cls, std::shared_ptr<AsyncBridge> bridge,
                                            py::object future) {
    ChatRequest req = request_from_py(model, messages, params);
    req.stream = false;
    CallContext ctx = context_from_py(context);
    std::shared_ptr<Router> router = hold();
    auto st = std::make_shared<PendingState>();
    ctx.cancel = st->token;
    auto fut = hold_callable(std::move(future));
    auto kind = hold_callable(std::move(cls));
    {
      py::gil_scoped_release nogil;
      router->complete_async(std::move(req), std::move(ctx), [st, bridge, fut, kind](Completion c) mutable {
        auto done = std::make_shared<Completion>(std::move(c));
        // The Python objects move on to the loop thread: the io thread keeps no reference
        // that it would have to drop with the GIL.
        bridge->post([done, fut = std::move(fut), kind = std::move(kind)] {
          if (!done->result) {
            reject_future(*fut, PyError(done->result.error(), done->trace.to_json().dump()));
            return;
          }
          resolve_future(*fut, completion_object(*kind, *done->result, std::move(done->trace)));
        });
        {
          std::lock_guard lk(st->mu);
          st->finished = true;
        }
        st->cv.notify_all();
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
      .def("set_notifier", &PyChatStream::set_notifier, arg("notify"), arg("bridge") = nullptr);

  py::class_<PyPendingChat>(m, "PendingChat")
      .def("cancel", &PyPendingChat::cancel)
      .def("wait", &PyPendingChat::wait, arg("timeout") = py::none())
      .def_property_readonly("finished", &PyPendingChat::finished);

  py::class_<AsyncBridge, std::shared_ptr<AsyncBridge>>(m, "AsyncBridge")
      .def(py::init<>())
      .def("fileno", &AsyncBridge::fd)
      .def("drain", &AsyncBridge::drain);

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
      .def("chat", &PyRouter::chat, arg("model"), arg("messages"), arg("params"), arg("context"),
           arg("cls") = py::none())
      .def("stream", &PyRouter::stream, arg("model"), arg("messages"), arg("params"), arg("context"),
           arg("anthropic_id") = std::string())
      .def("chat_async", &PyRouter::chat_async, arg("model"), arg("messages"), arg("params"), arg("context"),
           arg("cls"), arg("bridge"), arg("future"))
      .def("embed_async", &PyRouter::embed_async, arg("request_json"), arg("context"), arg("bridge"), arg("future"))
      .def("begin", &PyRouter::begin, arg("request_json"), arg("context_json"))
      .def("budgets_json", &PyRouter::budgets_json)
      .def("trace_store", &PyRouter::trace_store)
      .def("embed", &PyRouter::embed, arg("request_json"), arg("context"))
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
