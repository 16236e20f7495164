// Internal: one ledger = one budget x one scope value. Holds the live window's periods
// (one for calendar windows, a ring of buckets for rolling ones), this instance's settled
// spend per period, the fleet's (other instances') spend per period, and in-flight
// reservations. Every field below `mu` is guarded by it.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "budget/window.hpp"
#include "modelux/budget.hpp"

namespace modelux {

struct BudgetTotals {
  std::int64_t nusd = 0;
  std::int64_t tokens = 0;
  std::int64_t requests = 0;
  BudgetTotals& operator+=(const BudgetTotals& o) noexcept {
    nusd += o.nusd;
    tokens += o.tokens;
    requests += o.requests;
    return *this;
  }
  BudgetTotals& operator-=(const BudgetTotals& o) noexcept {
    nusd -= o.nusd;
    tokens -= o.tokens;
    requests -= o.requests;
    return *this;
  }
  bool operator==(const BudgetTotals&) const = default;
};

struct BudgetPeriod {
  std::int64_t start_ms = 0;  ///< wall-clock start (unix ms): window start, or bucket start
  BudgetTotals own;           ///< settled by this instance
  BudgetTotals remote;        ///< settled by the other instances (last Redis sync)
};

/// Rolling windows keep this many buckets; spend leaves the window up to one bucket late
/// (never early), i.e. the window is conservative by at most window_s / kRollingBuckets.
inline constexpr std::int64_t kRollingBuckets = 30;

struct BudgetEntry;

class BudgetLedger {
 public:
  BudgetLedger(const BudgetEntry& entry, std::string scope_value, bool wildcard = false);

  /// The budget's definition. Replaced (under mu) when the definition changes live
  /// (BudgetManager::update); the identity fields (name, scope, window, timezone) never change
  /// for a ledger, so they may be read without mu. Entries are never freed before the manager.
  const BudgetEntry& entry() const noexcept { return *entry_.load(std::memory_order_acquire); }
  void set_entry(const BudgetEntry& e) noexcept { entry_.store(&e, std::memory_order_release); }
  const std::string scope_value;  ///< the concrete value ("acme", or the end user for "*")
  const std::string key;          ///< "name|value", stable across restarts and instances
  const bool wildcard;            ///< one of a "*" budget's ledgers: may be evicted
 private:
  std::atomic<const BudgetEntry*> entry_;
 public:
  /// Wildcard ledgers: admissions between the lookup that found this ledger and the end of
  /// their reservation (incremented under the slot's lock, so eviction, which holds it
  /// exclusively, sees every one). A pinned ledger is never evicted.
  std::atomic<std::uint32_t> pins{0};

  std::mutex mu;
  // --- guarded by mu ---
  Instant period_end{};           ///< when roll() must do work again (monotonic clock)
  std::int64_t window_end_ms = 0; ///< calendar windows: the window's exact wall-clock end (unix ms)
  bool rolled_once = false;
  std::deque<BudgetPeriod> periods;  ///< live periods, oldest first
  BudgetTotals own_sum;           ///< Σ periods.own
  BudgetTotals remote_sum;        ///< Σ periods.remote
  BudgetTotals reserved;          ///< this instance's in-flight reservations (requests = count)
  BudgetTotals remote_reserved;   ///< other instances' in-flight reservations (last sync)
  std::uint32_t alerts_fired = 0; ///< bit i: entry().spec.alerts[i] fired in this window
  std::int64_t outage_cap_nusd = -1;  ///< fair_share outage policy: committed USD cap while Redis is down
  std::uint32_t fleet_instances = 1;  ///< distinct instances seen in the last sync (self included)
  std::uint64_t version = 0;      ///< bumps on every settle (for flush / sync dirtiness)
  std::uint64_t flushed_version = 0;
  Instant last_use{};             ///< last admission (eviction above the bound drops the oldest)
  bool evicted = false;           ///< dropped from its slot; about to be freed

  /// Committed = settled (own + fleet) + in flight (own + fleet).
  BudgetTotals committed() const noexcept {
    BudgetTotals t = own_sum;
    t += remote_sum;
    t += reserved;
    t += remote_reserved;
    return t;
  }
  /// Brings the periods up to `now` (wall = the wall-clock time of `now`). Caller holds mu.
  void roll(Instant now, WallTime wall);
  /// Adds settled spend to the newest period. Caller holds mu (after roll()).
  void add_own(const BudgetTotals& t) noexcept;
  /// "daily 2026-01-01T00:00:00Z", "rolling 3600s". Caller holds mu.
  std::string window_label() const;
  /// Window length in ms (nominal: 31 days for monthly), for Redis key expiry.
  std::int64_t window_ms() const noexcept;
};

struct BudgetEntry {
  BudgetSpec spec;
  budget_detail::TimeZone tz;
  std::int64_t limit_nusd = 0;  ///< when spec.limit_usd
  std::int64_t bucket_ms = 0;   ///< rolling only
  std::int64_t soft_nusd = -1;  ///< committed spend at which to ask for a downgrade (-1: never)
  std::vector<std::int64_t> alert_nusd;  ///< committed spend per alert threshold (same order as spec.alerts)
};

}  // namespace modelux
