// Internal: what a Router owns (Router::Impl), shared by the files that implement its jobs:
//   router.cpp          create() and the public API
//   executor.cpp        drives a RoutingSession over the Transport (one coroutine per request)
//   stream_relay.cpp    one attempt's exchange with its provider, and the stream relay
//   client_session.cpp  bring your own client
//   attempt.cpp         one attempt's side effects (health, keys, budget, cost)
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/router.hpp"
#include "modelux/trace.hpp"
#include "router/attempt.hpp"
#include "router/resolver.hpp"

namespace modelux {

struct Router::Impl {
  Config config;
  RouterOptions opts;
  const Clock* clock = nullptr;
  // Idle routing sessions, reused across requests (RoutingSession::reset keeps their buffers,
  // so the routing decision itself allocates nothing in steady state). Bounded. Declared
  // before `ioc` so it outlives it: request frames still pending when the Router goes away
  // are destroyed with the io_context, and their leases give sessions back here.
  // When the last lease ends (nothing in flight: a burst drained) the pool keeps only
  // kQuietPooledSessions: the rest were allocated mid-burst between its buffers, and kept
  // they would pin those heap pages (issue #19, RSS after streams).
  std::mutex pool_mu;
  std::vector<std::unique_ptr<RoutingSession>> session_pool;
  std::size_t sessions_leased = 0;  ///< guarded by pool_mu
  static constexpr std::size_t kMaxPooledSessions = 256;
  static constexpr std::size_t kQuietPooledSessions = 8;
  // The concurrency hint is the number of io threads: with one, Asio's scheduler knows no
  // other thread runs handlers and skips the cross-thread wake-up work on every handler.
  net::io_context ioc;
  explicit Impl(int io_threads = 1) : ioc(std::max(1, io_threads)) {}
  net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
  std::vector<std::thread> threads;
  std::shared_ptr<Transport> transport;
  std::unique_ptr<Tracer> tracer;
  std::unique_ptr<BudgetManager> budgets;
  std::unique_ptr<HealthRegistry> health;
  std::atomic<std::shared_ptr<const RouteTable>> table;
  std::mutex config_mu;  // serialises config swaps (readers never take it)
  std::unique_ptr<std::atomic<std::uint64_t>[]> key_cursor;
  std::atomic<std::uint64_t> seed_counter{0};
  std::uint64_t seed_base = 0;
  AttemptEffects effects;  ///< what every attempt's lifecycle touches (set by create())

  /// A pooled session for one request; goes back to the pool when the lease ends.
  class SessionLease {
   public:
    explicit SessionLease(Impl& impl);
    ~SessionLease();
    SessionLease(const SessionLease&) = delete;
    SessionLease& operator=(const SessionLease&) = delete;
    RoutingSession& get() noexcept { return *s_; }

   private:
    Impl& impl_;
    std::unique_ptr<RoutingSession> s_;
  };

  ~Impl() {
    work.reset();
    ioc.stop();
    for (auto& t : threads) t.join();
  }

  std::uint64_t next_seed() noexcept {
    return seed_base ^ (seed_counter.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ULL);
  }

  /// Runs one request (executor.cpp).
  net::awaitable<Completion> execute(ChatRequest req, CallContext ctx, AsyncChunkSink sink);

  /// Runs one embeddings request (embed_executor.cpp).
  net::awaitable<EmbeddingCompletion> execute_embed(EmbeddingRequest req, CallContext ctx);

  void fill_context(DecisionTrace& t, const CallContext& ctx, const std::string& model, bool stream) const;
};

}  // namespace modelux
