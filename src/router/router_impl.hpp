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
  // so the routing decision itself allocates nothing in steady state). Bounded. One pool per
  // io thread (a request leases from the pool of the thread it runs on; the mutex is
  // uncontended then, and only guards the rare lease from another thread). Declared
  // before `shards` so they outlive every io_context: request frames still pending when the
  // Router goes away are destroyed with their io_context, and their leases give sessions
  // back here. When the last lease of a pool ends (nothing in flight there: a burst
  // drained) the pool keeps only kQuietPooledSessions: the rest were allocated mid-burst
  // between its buffers, and kept they would pin those heap pages (issue #19, RSS after streams).
  struct SessionPool {
    std::mutex mu;
    std::vector<std::unique_ptr<RoutingSession>> idle;
    std::size_t leased = 0;  ///< guarded by mu
  };
  std::vector<std::unique_ptr<SessionPool>> pools;
  static constexpr std::size_t kMaxPooledSessions = 256;
  static constexpr std::size_t kQuietPooledSessions = 8;
  // One io_context per io thread (issue #13, scaling): a request runs start to finish on the
  // thread whose listener accepted it, with that thread's upstream connection pool and
  // session pool; nothing on the hot path posts across threads and no strand is needed. The
  // concurrency hint is 1: Asio's scheduler knows no other thread runs its handlers and
  // skips the cross-thread wake-up work on every handler (posting from other threads stays
  // safe).
  struct Shard {
    net::io_context ioc{1};
    net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
  };
  std::vector<std::unique_ptr<Shard>> shards;
  explicit Impl(int io_threads = 1) {
    const int n = std::max(1, io_threads);
    for (int i = 0; i < n; ++i) {
      pools.push_back(std::make_unique<SessionPool>());
      shards.push_back(std::make_unique<Shard>());
    }
  }
  // Which shard of which Router the calling thread runs (set once by each io thread); other
  // threads (the app's, a caller's own io_context) see another owner.
  static inline thread_local const Impl* tl_owner = nullptr;
  static inline thread_local std::size_t tl_shard = 0;
  /// The shard index of the calling io thread; round-robin for any other thread.
  std::size_t shard_here() noexcept {
    if (shards.size() == 1) return 0;
    if (tl_owner == this) return tl_shard;
    return rr_cursor.fetch_add(1, std::memory_order_relaxed) % shards.size();
  }
  /// A shard for work started from outside (the blocking and callback API): round-robin.
  Shard& next_shard() noexcept {
    if (shards.size() == 1) return *shards[0];
    return *shards[rr_cursor.fetch_add(1, std::memory_order_relaxed) % shards.size()];
  }
  std::atomic<std::size_t> rr_cursor{0};
  std::vector<std::thread> threads;
  /// What Router::transport() hands out: with one io thread (or a transport given in
  /// RouterOptions) the transport itself; with several, a view over the per-thread transports
  /// that sends on the calling io thread's own and sums their stats.
  std::shared_ptr<Transport> transport;
  /// One HTTP client per io thread (its connection pool serves only that thread's requests);
  /// all the same object when RouterOptions::transport is given.
  std::vector<std::shared_ptr<Transport>> shard_transports;
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
    SessionPool& pool_;  // the pool of the thread that leased it
    std::unique_ptr<RoutingSession> s_;
  };

  ~Impl() {
    for (auto& sh : shards) {
      sh->work.reset();
      sh->ioc.stop();
    }
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
