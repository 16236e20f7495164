// modelux router: the public entry point. Resolves `@slug` configs and plain models to a
// compiled Policy, runs the routing session over a Transport (the executor), applies budgets,
// feeds health, and hands every decision trace to the Tracer.
//
// Threading model: a Router owns `io_threads` io_contexts, each run by one thread, each with
// its own upstream connection pool and routing-session pool. All upstream I/O runs there; a
// request runs start to finish on the io thread it started on (the blocking and callback
// calls pick one round-robin; the proxy runs each connection on the thread that accepted it). `complete()` / `stream()` are blocking and may be called from any number of
// application threads at once (never from a Router io thread). `complete_async()` calls its
// callback on an io thread. `co_complete()` is an Asio awaitable for apps that already run an
// io_context: it runs on the caller's executor. Config swaps (`set_routing_config`) are atomic
// and safe while requests are in flight; a request keeps the version it started with.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "modelux/config.hpp"
#include "modelux/policy.hpp"
#include "modelux/transport.hpp"

namespace modelux {

class Tracer;
class BudgetManager;
struct BudgetAlert;
class HealthRegistry;

struct RouterOptions {
  const Clock* clock = nullptr;          ///< default: the real clock
  std::uint64_t seed = 0;                ///< 0: random per process
  int io_threads = 1;
  std::shared_ptr<Transport> transport;  ///< default: the HTTP client on the router's io_context
  TransportOptions transport_options;
  bool open_tracer = true;               ///< open the Tracer from the config's "tracing" section
  /// Run a BudgetManager even when the config has no budgets, so that definitions applied later
  /// (BudgetManager::update, the proxy's budget API) are live at once. An empty manager admits
  /// every request; its cost on the request path is one empty loop.
  bool always_budgets = false;
  Nanos default_stall_timeout = std::chrono::seconds(30);  ///< streams: max gap between chunks
  /// Budget alerts (80 % / 100 % thresholds...): called on the admitting or settling thread,
  /// outside every budget lock. Keep it cheap (log, post to a queue); null = alerts are only
  /// listed by BudgetManager::alerts() and recorded in traces.
  std::function<void(const BudgetAlert&)> on_alert;
};

/// The outcome of one request: the answer or the error, and the full decision trace.
struct Completion {
  Result<ChatResponse> result = fail(ErrorKind::internal, "not run");
  DecisionTrace trace;
  Target served;  ///< the target that answered (empty on failure)
};

/// The outcome of one embeddings request: the vectors or the error, and the decision trace.
struct EmbeddingCompletion {
  Result<EmbeddingResponse> result = fail(ErrorKind::internal, "not run");
  DecisionTrace trace;
  Target served;  ///< the target that answered (empty on failure)
};

/// Receives stream chunks as they arrive, on a router io thread. Return false to cancel
/// (the caller went away): upstream reads stop and the trace records the cancellation.
using ChunkSink = std::function<bool(const ChatChunk&)>;
/// Awaitable sink for Asio apps and the proxy: awaiting it applies backpressure upstream.
using AsyncChunkSink = std::function<net::awaitable<bool>(const ChatChunk&)>;

class ClientSession;

class Router {
 public:
  static Result<std::unique_ptr<Router>> create(Config config, RouterOptions options = {});
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  /// Blocking chat call. `request.model` is a catalog model or "@slug".
  Completion complete(ChatRequest request, CallContext ctx = {});
  /// Blocking streaming call: chunks go to `sink` as they arrive. A stream that breaks after
  /// output reached the sink fails with stream_interrupted (never a silent clean end).
  Completion stream(ChatRequest request, CallContext ctx, ChunkSink sink);
  /// Callback form; `done` runs on a router io thread.
  void complete_async(ChatRequest request, CallContext ctx, std::function<void(Completion)> done);
  /// Awaitable form. With a sink the request streams (request.stream is forced on).
  /// With GCC 12, pass named objects, not temporaries (`co_complete(req, CallContext{})`):
  /// GCC 12 may relocate class temporaries of a co_await expression bitwise, which corrupts
  /// std::string members (seen under valgrind). Clang and newer GCC are not affected.
  net::awaitable<Completion> co_complete(ChatRequest request, CallContext ctx, AsyncChunkSink sink = nullptr);

  /// Embeddings (OpenAI's /v1/embeddings shape), routed like chat: `request.model` is an
  /// embedding model of the catalog or "@slug" whose targets are embedding models (other
  /// targets are skipped). Failover, budgets (input tokens at the model's input price), health
  /// and traces work as for chat; attempts run one at a time (an ensemble's members in turn).
  EmbeddingCompletion embed(EmbeddingRequest request, CallContext ctx = {});
  /// Awaitable form (pass named objects, as for co_complete).
  net::awaitable<EmbeddingCompletion> co_embed(EmbeddingRequest request, CallContext ctx);

  /// Bring your own client: starts a session the app drives itself (see ClientSession).
  /// not_found for an unknown model or "@slug".
  Result<std::unique_ptr<ClientSession>> begin(ChatRequest request, CallContext ctx = {});

  /// Validates and compiles a routing config, then swaps it in atomically. A bad config
  /// never takes traffic: the error names the JSON path.
  Result<std::int64_t> set_routing_config(std::string slug, const Json& config);
  /// The same, with the version number given (the control store's, so traces name the stored
  /// version a request ran with) instead of bumped.
  Result<std::int64_t> set_routing_config(std::string slug, const Json& config, std::int64_t version);
  /// The live compiled config for a slug (without '@'); nullptr if unknown.
  std::shared_ptr<const Policy> routing_config(std::string_view slug) const;
  std::vector<std::string> routing_slugs() const;
  /// Models that can be routed (catalog models whose provider is configured).
  std::vector<std::string> routable_models() const;

  const Config& config() const noexcept;
  const Catalog& catalog() const noexcept;
  Tracer* tracer() noexcept;
  BudgetManager* budgets() noexcept;
  HealthRegistry* health() noexcept;
  Transport& transport() noexcept;
  /// The first io thread's executor (for background work: alerts, timers).
  net::any_io_executor executor() noexcept;
  /// One executor per io thread, each run by exactly one thread (serve on all of them, one
  /// listener each, to spread connections over the io threads without strands).
  std::vector<net::any_io_executor> executors();
  /// An io thread's executor, round-robin: where to co_spawn co_complete() for work started
  /// from outside (the Python binding's streams), spread over the io threads.
  net::any_io_executor next_executor() noexcept;
  const Clock& clock() const noexcept;

  struct Impl;

 private:
  explicit Router(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// "Bring your own client": the app makes every provider call itself, with whatever SDK it
/// already uses, and reports the outcome; modelux still decides the route, reserves and
/// settles budgets, feeds health and breakers, and records the trace. The loop:
///
///   auto s = router.begin(req, ctx);
///   for (Step st = (*s)->next(); st.kind == Step::Kind::attempt || st.kind == Step::Kind::wait; st = (*s)->next()) {
///     for (const AttemptPlan& p : st.attempts) {           // p.target.model / .provider, p.deadline
///       auto r = my_sdk_call(p.target, req);               // or (*s)->native_request(p) + own HTTP
///       (*s)->report(p.id, r, latency);                    // or report_http(p.id, status, headers, body, latency)
///     }
///     if (st.kind == Step::Kind::wait) sleep_until(st.wake_at);
///   }
///   Completion c = (*s)->finish();
///
/// Not thread-safe: one thread drives one session. The Router must outlive it.
class ClientSession {
 public:
  ~ClientSession();
  /// What to do now (attempts are budget-checked first; a refused one is reported for you).
  Step next();
  /// The native HTTP request modelux would send for `plan` (URL, headers incl. the provider
  /// key, body), for apps that want modelux's encoding over their own HTTP stack.
  Result<HttpRequestSpec> native_request(const AttemptPlan& plan) const;
  /// Reports one attempt: the unified response, or the error (its kind drives failover).
  void report(std::uint32_t attempt_id, Result<ChatResponse> outcome, Nanos latency);
  /// Reports a raw HTTP answer; modelux decodes it with the provider's codec.
  void report_http(std::uint32_t attempt_id, int status, const Headers& headers, std::string_view body, Nanos latency);
  /// Ends the session: the answer or error and the trace (also handed to the Tracer).
  Completion finish();
  const RoutingSession& session() const noexcept;

  struct State;
  explicit ClientSession(std::unique_ptr<State> s);

 private:
  std::unique_ptr<State> s_;
};

}  // namespace modelux
