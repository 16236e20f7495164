// Internal: BudgetManager::Impl, shared by manager.cpp (hot path), sqlite_store.cpp
// (persistence) and redis_sync.cpp (fleet sharing).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "budget/ledger.hpp"

struct sqlite3;
struct redisContext;

namespace modelux {

/// Transparent hash so wildcard ledgers are found by string_view without building a string.
struct BudgetKeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// One configured budget and its ledgers (one, or one per distinct scope value for "*").
struct BudgetSlot {
  BudgetEntry entry;
  std::unique_ptr<BudgetLedger> single;  ///< fixed scope value (or "all")
  mutable std::shared_mutex per_value_mu;
  std::unordered_map<std::string, std::unique_ptr<BudgetLedger>, BudgetKeyHash, std::equal_to<>>
      per_value;  ///< scope value "*"
  bool wildcard() const noexcept { return entry.spec.scope_value == "*"; }
};

struct RedisState {
  redisContext* ctx = nullptr;
  bool connected = false;      ///< last sync succeeded
  bool ever_failed_logged = false;
  std::string last_error;
  std::uint64_t syncs = 0;     ///< successful sync cycles
  std::uint64_t failures = 0;
  Instant last_ok{};           ///< start of the last successful cycle
  Nanos max_gap{0};            ///< longest start(k) -> end(k+1) over consecutive successful cycles
  std::string host;
  int port = 6379;
  int db = 0;
};

class BudgetManager::Impl {
 public:
  Impl(const Catalog& catalog, const Clock& clock, BudgetOptions options)
      : catalog(catalog), clock(clock), options(std::move(options)) {}
  ~Impl();

  const Catalog& catalog;
  const Clock& clock;
  BudgetOptions options;
  std::vector<std::unique_ptr<BudgetSlot>> slots;
  std::vector<BudgetSpec> specs;

  // Every ledger ever created (for flush / sync / snapshot). Guarded by all_mu.
  mutable std::mutex all_mu;
  std::vector<BudgetLedger*> all_ledgers;

  // Alerts kept for alerts().
  mutable std::mutex alerts_mu;
  std::deque<BudgetAlert> alert_log;

  // Backends. sqlite and redis are touched only by flush()/sync_now() under io_mu.
  std::mutex io_mu;
  sqlite3* db = nullptr;
  std::int64_t last_prune_ms = 0;  ///< wall ms of the last prune of dead rows (under io_mu)
  RedisState redis;            ///< written by sync_redis under io_mu; status fields also under status_mu
  mutable std::mutex status_mu;  ///< lets snapshot() read Redis status without waiting for a sync
  std::atomic<bool> redis_up{false};

  // Background thread.
  std::mutex bg_mu;
  std::condition_variable bg_cv;
  bool stopping = false;
  std::thread bg;

  WallTime wall_of(Instant now) const noexcept {
    return clock.wall_now() + std::chrono::duration_cast<WallTime::duration>(now - clock.now());
  }
  /// The ledger of `slot` for a scope value; created on first use for "*" budgets.
  BudgetLedger* ledger_for(BudgetSlot& slot, std::string_view value);
  std::vector<BudgetLedger*> ledgers() const {
    std::lock_guard lk(all_mu);
    return all_ledgers;
  }
  void record_alerts(const std::vector<BudgetAlert>& alerts);
  void log(const std::string& msg) const;

  // sqlite_store.cpp
  Result<void> open_store();
  Result<void> load_store(Instant now);
  Result<void> flush_store();
  void close_store() noexcept;
  // redis_sync.cpp
  Result<void> parse_redis_url();
  Result<void> sync_redis();
  void close_redis() noexcept;
  Json redis_status() const;
};

/// Nano-dollars from dollars.
/// Round half away from zero, without a libm call.
inline std::int64_t round_i64(double v) noexcept { return static_cast<std::int64_t>(v >= 0 ? v + 0.5 : v - 0.5); }
inline std::int64_t to_nusd(double usd) noexcept { return round_i64(usd * 1e9); }
inline double from_nusd(std::int64_t n) noexcept { return static_cast<double>(n) / 1e9; }

}  // namespace modelux
