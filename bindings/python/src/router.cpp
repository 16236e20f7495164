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

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pybind11/stl.h>

#include "common.hpp"
#include "modelux/router.hpp"

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
  void cancel_now() {
    cancel.store(true);
    token->cancel();
    cv.notify_all();
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

class PyRouter {
 public:
  PyRouter(std::optional<std::string> config_json, std::optional<std::string> config_path, int io_threads,
           std::uint64_t seed, bool tracing) {
    Config cfg = [&] {
      if (config_path) return unwrap(Config::load_file(*config_path));
      if (config_json) return unwrap(Config::from_json(parse_text(*config_json, "config")));
      return unwrap(Config::embedded_defaults());
    }();
    RouterOptions opts;
    opts.io_threads = io_threads;
    opts.seed = seed;
    opts.open_tracer = tracing;
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
    std::string trace = c.trace.to_json().dump();
    if (!c.result) throw PyError(c.result.error(), std::move(trace));
    return py::make_tuple(to_json(*c.result).dump(), std::move(trace));
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
    std::string trace = c.trace.to_json().dump();
    if (!c.result) throw PyError(c.result.error(), std::move(trace));
    return py::make_tuple(encode_embedding_response(*c.result, false), std::move(trace));
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
                  });
    return std::make_unique<PyChatStream>(std::move(router), std::move(st));
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
  py::class_<PyChatStream>(m, "ChatStream")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &PyChatStream::next)
      .def("close", &PyChatStream::close)
      .def("wait", &PyChatStream::wait, arg("timeout") = py::none())
      .def_property_readonly("finished", &PyChatStream::finished)
      .def_property_readonly("cancelled", &PyChatStream::cancelled)
      .def_property_readonly("error_kind", &PyChatStream::error_kind)
      .def("trace_json", &PyChatStream::trace_json);

  py::class_<PyRouter>(m, "Router")
      .def(py::init<std::optional<std::string>, std::optional<std::string>, int, std::uint64_t, bool>(),
           arg("config_json") = py::none(), arg("config_path") = py::none(), arg("io_threads") = 1, arg("seed") = 0,
           arg("tracing") = true)
      .def("chat", &PyRouter::chat, arg("request_json"), arg("context_json"))
      .def("stream", &PyRouter::stream, arg("request_json"), arg("context_json"))
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
