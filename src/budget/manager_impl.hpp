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
struct sqlite3_stmt;
struct redisContext;

namespace modelux {

/// Transparent hash so wildcard ledgers are found by string_view without building a string.
struct BudgetKeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// One configured budget and its ledgers (one, or one per distinct scope value for "*").
struct BudgetSlot {
  /// The current definition (replaced live by BudgetManager::update; old ones stay alive).
  const BudgetEntry& entry() const noexcept { return *entry_.load(std::memory_order_acquire); }
  std::atomic<const BudgetEntry*> entry_{nullptr};
  /// Removed from the definitions (under per_value_mu, exclusive): its ledgers stay in memory
  /// so in-flight settles land harmlessly, but they are no longer flushed, synced or shown.
  bool retired = false;
  std::unique_ptr<BudgetLedger> single;  ///< fixed scope value (or "all")
  mutable std::shared_mutex per_value_mu;
  std::unordered_map<std::string, std::unique_ptr<BudgetLedger>, BudgetKeyHash, std::equal_to<>>
      per_value;  ///< scope value "*"
  /// Bumped (under per_value_mu, exclusive) by every eviction batch of this slot: a ledger
  /// creation that read the store before it re-reads (the evicted ledger may just have been
  /// flushed).
  std::atomic<std::uint64_t> evictions{0};
  bool wildcard() const noexcept { return entry().spec.scope_value == "*"; }
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
  std::string user;      ///< ACL user ("" = AUTH password only)
  std::string password;  ///< never logged, never in an error or in snapshot()
};

/// One persisted row of a ledger (own settled spend in one period).
struct StoredRow {
  std::int64_t start_ms = 0;
  BudgetTotals totals;
};

class BudgetManager::Impl {
 public:
  Impl(const Catalog& catalog, const Clock& clock, BudgetOptions options)
      : catalog(catalog), clock(clock), options(std::move(options)) {}
  ~Impl();

  const Catalog& catalog;
  const Clock& clock;
  BudgetOptions options;
  // The live budgets, read lock-free by the hot path: `slots` points at an immutable list that
  // update() replaces. Lists, slots and entries are only ever added (under io_mu) and freed
  // with the manager, so an admission that read an old list, slot or entry stays valid.
  using SlotList = std::vector<BudgetSlot*>;
  const SlotList& live_slots() const noexcept { return *slots.load(std::memory_order_acquire); }
  std::atomic<const SlotList*> slots{nullptr};
  std::deque<std::unique_ptr<SlotList>> owned_lists;
  std::deque<std::unique_ptr<BudgetSlot>> owned_slots;
  std::deque<std::unique_ptr<BudgetEntry>> owned_entries;
  mutable std::mutex specs_mu;
  std::vector<BudgetSpec> specs;  ///< under specs_mu

  // Every ledger in memory (for flush / sync / snapshot). Guarded by all_mu. Ledgers are
  // freed only by evict_locked(), which holds io_mu (so flush / sync never see a freed one)
  // and list_mu exclusively while it unlinks them (snapshot() holds list_mu shared).
  // Lock order: list_mu -> slot.per_value_mu -> ledger.mu -> all_mu.
  mutable std::mutex all_mu;
  std::vector<BudgetLedger*> all_ledgers;
  mutable std::shared_mutex list_mu;

  // Wildcard ledger accounting (see BudgetLedgerStats).
  std::atomic<std::size_t> wildcard_live{0};
  std::atomic<std::uint64_t> evicted_total{0};
  std::atomic<std::uint64_t> evicted_spend{0};
  std::atomic<std::uint64_t> reloaded{0};
  std::atomic<bool> over_bound{false};
  bool over_bound_logged = false;  ///< under io_mu
  Instant last_sweep{};            ///< Clock time of the last idle sweep (under io_mu)
  std::atomic<bool> has_wildcard{false};

  // Alerts kept for alerts().
  mutable std::mutex alerts_mu;
  std::deque<BudgetAlert> alert_log;

  // Backends. sqlite and redis are touched only by flush()/sync_now() under io_mu.
  std::mutex io_mu;
  sqlite3* db = nullptr;
  std::int64_t last_prune_ms = 0;  ///< wall ms of the last prune of dead rows (under io_mu)
  // A second, read-only connection for loading one wildcard value's rows on first use
  // (ledger_for), so a request never waits behind a flush or a Redis sync holding io_mu.
  std::mutex load_mu;
  sqlite3* rdb = nullptr;
  sqlite3_stmt* load_stmt = nullptr;
  RedisState redis;            ///< written by sync_redis under io_mu; status fields also under status_mu
  mutable std::mutex status_mu;  ///< lets snapshot() read Redis status without waiting for a sync
  std::atomic<bool> redis_up{false};

  // Background thread: sleeps sync_interval on the Clock (virtual time on a ManualClock:
  // the test or simulator that advances the clock drives the syncs and flushes).
  StopSignal bg_stop;
  std::thread bg;

  WallTime wall_of(Instant now) const noexcept {
    return clock.wall_now() + std::chrono::duration_cast<WallTime::duration>(now - clock.now());
  }
  /// The ledger of `slot` for a scope value; created on first use for "*" budgets (with the
  /// value's persisted rows read back from SQLite). A wildcard ledger comes back pinned
  /// (pins + 1): the caller unpins it once its reservation is in place or refused.
  BudgetLedger* ledger_for(BudgetSlot& slot, std::string_view value, Instant now);
  /// Adds one persisted row to a ledger if its period is live. Caller holds l.mu.
  void apply_stored(BudgetLedger& l, const StoredRow& row, Instant now, WallTime wall);
  /// One eviction sweep (caller holds io_mu). `full`: also scan for idle ledgers when not
  /// above the bound.
  std::size_t evict_locked(Instant now);
  /// Background-thread hook: sweep when due or above the bound.
  void maintain();
  /// A slot for a new definition, owned by this Impl (caller holds io_mu, or is create()).
  BudgetSlot* add_slot(std::unique_ptr<BudgetEntry> entry);
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
  /// Deletes this instance's persisted rows of budget `name` (reset). Caller holds io_mu.
  Result<void> delete_stored(const std::string& name);
  void close_store() noexcept;
  /// The persisted rows of one wildcard value that may still be live. False without a store.
  bool load_rows(const BudgetSlot& slot, std::string_view value, Instant now, std::vector<StoredRow>& out);
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
