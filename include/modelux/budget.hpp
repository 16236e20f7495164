// modelux budget: spend caps that hold. Ledgers per budget, scope value and window;
// reservations before each attempt, settlement after; soft-threshold downgrade, hard-cap
// block, alerts; SQLite persistence and a Redis-shared fleet view.
//
// Config (the "budgets" array of the modelux config file):
//
//   {"name":"acme-daily", "scope":{"project":"acme"}, "window":"daily", "timezone":"UTC",
//    "limit_usd":50, "limit_tokens":null, "limit_requests":null,
//    "soft":{"percent":80, "downgrade_to":"@cheap"}, "alerts":[80,100], "unknown_price":"block"}
//
//   scope:    {"org":v} {"project":v} {"tag":"key=value"} {"end_user":v} {"api_key":v}
//             v may be "*": one ledger per distinct value (e.g. $1/day for every end user).
//             {} (or no "scope") matches every request.
//   window:   "daily" | "weekly" (ISO, Monday 00:00) | "monthly" (calendar) | "rolling"
//             (needs "window_s"). Calendar windows follow "timezone": "UTC", fixed offsets
//             ("+02:00", "-05:30") or IANA names ("Europe/Berlin", read from the system
//             zoneinfo files, since g++ 12 ships no chrono tzdb).
//   limits:   at least one of limit_usd / limit_tokens / limit_requests (null = none).
//   alerts:   percents of limit_usd (default [80,100]); each fires once per window.
//   unknown_price: "block" (default) or "allow" (= allow and flag) for models whose price the
//             catalog does not know. Never a silent zero.
//
// Threading: BudgetManager is thread-safe. admit/settle/release/status take one short
// critical section per matching ledger (no I/O, no allocation in the steady state except the
// Admission's small vectors); they read the definitions through one atomic pointer, so
// update() may replace them at any time (definitions are never freed before the manager).
// Persistence, Redis sync and the eviction of idle wildcard
// ledgers run on one background thread. The first request of a wildcard value not in memory
// (new, or evicted) reads that value's rows from SQLite (one indexed point query) when a store
// is configured.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <string>
#include <vector>

#include "modelux/catalog.hpp"
#include "modelux/views.hpp"

namespace modelux {

enum class BudgetScopeKind : std::uint8_t { all, org, project, tag, end_user, api_key };
enum class BudgetWindowKind : std::uint8_t { daily, weekly, monthly, rolling };
enum class UnknownPricePolicy : std::uint8_t { block, allow_and_flag };

std::string_view to_string(BudgetScopeKind k) noexcept;
std::string_view to_string(BudgetWindowKind k) noexcept;

/// One parsed budget definition.
struct BudgetSpec {
  std::string name;
  BudgetScopeKind scope = BudgetScopeKind::all;
  std::string scope_value;       ///< "acme"; for tags the value part; "*" = per distinct value
  std::string tag_key;           ///< tags only: "team"
  BudgetWindowKind window = BudgetWindowKind::daily;
  std::string timezone = "UTC";  ///< as written in the config
  std::int64_t window_s = 0;     ///< rolling only
  std::optional<double> limit_usd;
  std::optional<std::int64_t> limit_tokens;
  std::optional<std::int64_t> limit_requests;
  std::optional<double> soft_percent;  ///< downgrade threshold, percent of limit_usd
  std::string downgrade_to;            ///< "@cheap" or a model id (empty: soft threshold only alerts)
  std::vector<double> alerts{80, 100};
  UnknownPricePolicy unknown_price = UnknownPricePolicy::block;
  /// "project:acme", "tag:team=search", "end_user:*", "all".
  std::string scope_label() const;
};

/// Parses the "budgets" array. Every fault carries its JSON path ("$.budgets[2].window").
/// Names must be unique. `path` is the array's own path.
Result<std::vector<BudgetSpec>> parse_budgets(const Json& budgets, const std::string& path = "$.budgets");

/// A threshold crossed. Emitted once per budget, scope value and window.
struct BudgetAlert {
  std::string budget;        ///< "acme-daily"
  std::string scope;         ///< "project:acme"
  std::string window;        ///< "daily 2026-01-01T00:00:00Z" / "rolling 3600s"
  double threshold = 0;      ///< the configured percent (80)
  double percent = 0;        ///< committed percent when it fired
  double spent_usd = 0;      ///< committed (settled + in flight)
  double limit_usd = 0;
  WallTime at{};
  std::string message() const;  ///< "budget acme-daily (project:acme, daily ...) at 81% of $50"
};

class BudgetLedger;

/// One reservation in one ledger.
struct BudgetHold {
  BudgetLedger* ledger = nullptr;
  std::int64_t nusd = 0;      ///< reserved USD in nano-dollars
  std::int64_t tokens = 0;    ///< reserved tokens (input + output estimate)
};

/// A small vector of holds: up to 4 inline (the common case: no allocation and no zeroing on
/// the hot path).
class BudgetHolds {
 public:
  BudgetHolds() noexcept {}
  std::size_t size() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  BudgetHold* begin() noexcept { return n_ <= kInline ? inline_ptr() : heap_.data(); }
  BudgetHold* end() noexcept { return begin() + n_; }
  const BudgetHold* begin() const noexcept { return n_ <= kInline ? inline_ptr() : heap_.data(); }
  const BudgetHold* end() const noexcept { return begin() + n_; }
  BudgetHold& operator[](std::size_t i) noexcept { return begin()[i]; }
  const BudgetHold& operator[](std::size_t i) const noexcept { return begin()[i]; }
  void push_back(const BudgetHold& h) {
    if (n_ < kInline) {
      new (inline_ + n_ * sizeof(BudgetHold)) BudgetHold(h);
      ++n_;
      return;
    }
    if (n_ == kInline) heap_.assign(inline_ptr(), inline_ptr() + kInline);
    heap_.push_back(h);
    ++n_;
  }

 private:
  static_assert(std::is_trivially_copyable_v<BudgetHold>);
  static constexpr std::size_t kInline = 4;
  BudgetHold* inline_ptr() noexcept { return std::launder(reinterpret_cast<BudgetHold*>(inline_)); }
  const BudgetHold* inline_ptr() const noexcept {
    return std::launder(reinterpret_cast<const BudgetHold*>(inline_));
  }
  alignas(BudgetHold) unsigned char inline_[kInline * sizeof(BudgetHold)];
  std::vector<BudgetHold> heap_;
  std::size_t n_ = 0;
};

/// The result of a successful admission: a reservation to settle or release exactly once.
/// Move-only in spirit (copying it would double-settle). Destroying an open Admission does
/// NOT release it: the caller must say what happened (settle or release; both are cheap).
/// It refers to the manager's ledgers and to the ModelInfo it was admitted for: both must
/// outlive it.
struct Admission {
  BudgetHolds holds;                   ///< one per matching ledger
  double reserved_usd = 0;             ///< estimated cost reserved (0 when unpriced)
  std::string downgrade_to;            ///< non-empty: a soft threshold was crossed; route here instead
  std::string downgrade_budget;        ///< which budget asked for the downgrade
  double downgrade_percent = 0;        ///< committed percent of that budget after this reservation
  bool unpriced = false;               ///< the model has no known price and every USD budget allowed it: flag it
  std::string_view model;              ///< id of the ModelInfo admitted ("" when unknown); views its id
  std::vector<BudgetAlert> alerts;     ///< alerts this admission fired (usually empty)
  bool open = false;                   ///< true until settled or released

  /// Trace text, rendered on demand (never on the hot path):
  /// "reserved $0.0012 on project:acme/daily", "downgrade to @cheap at 81% (acme-daily)",
  /// "unpriced model x allowed and flagged", "alert: ...".
  std::vector<std::string> actions() const;
};

/// What an instance does with USD caps while Redis is unreachable.
enum class RedisOutagePolicy : std::uint8_t {
  /// Keep admitting against the local view (own spend + the last fleet view). The fleet bound
  /// does not hold during the outage (worst case N x the remaining budget).
  local_view,
  /// Also keep admitting on the local view, but cap this instance's new spend to its 1/N share
  /// of what remained at the outage (N = instances seen in the last sync): the fleet then stays
  /// within the bound even while Redis is down, at the price of refusing some requests early.
  fair_share,
};

/// Tunables for BudgetManager::create.
struct BudgetOptions {
  std::string sqlite_path;        ///< empty: no persistence
  /// "redis://[[user]:password@]host[:port][/db]"; empty: no fleet sharing. User and password
  /// may be percent-encoded; AUTH (and SELECT) are sent on every (re)connect. The password
  /// never appears in logs, errors or snapshot(). "rediss://" (TLS) is refused: the hiredis
  /// this is built against (0.14) has no SSL support.
  std::string redis_url;
  std::string instance_id;        ///< unique per instance in a fleet (required with redis_url)
  std::string redis_prefix = "modelux:budget";
  Millis sync_interval{250};      ///< background SQLite flush + Redis sync period; 0 = manual only
  Millis redis_timeout{200};      ///< connect / command timeout
  RedisOutagePolicy outage_policy = RedisOutagePolicy::local_view;
  std::function<void(const BudgetAlert&)> on_alert;  ///< called on the admitting/settling thread; keep it cheap
  std::function<void(const std::string&)> log;       ///< warnings (Redis down/up); default stderr
  std::size_t max_alerts_kept = 1000;                ///< alerts() keeps the most recent ones
  /// Wildcard ("*") budgets keep one ledger per distinct value. A ledger that holds nothing
  /// (its window rolled over, or a rolling window saw no spend for a full window; no
  /// reservation in flight; nothing unflushed) is dropped from memory by the background
  /// thread every `evict_interval`, or by evict(). Above `max_wildcard_ledgers` live wildcard
  /// ledgers, the least recently used ones that still hold spend are also dropped, but only
  /// when that spend is safely in SQLite (it is read back on the value's next request) and no
  /// fleet (Redis) spend would have to be restored. Otherwise they are kept above the bound
  /// (logged once): a user's spend inside a live window is never reset.
  std::size_t max_wildcard_ledgers = 100'000;
  Millis evict_interval{10'000};  ///< idle-ledger sweep period on the background thread (which
                                  ///< also runs for wildcard budgets without a backend)
};

/// Live ledgers and evictions (also in snapshot()["ledgers"]).
struct BudgetLedgerStats {
  std::size_t live = 0;                  ///< every ledger in memory (fixed + wildcard)
  std::size_t wildcard_live = 0;         ///< ledgers of "*" budgets in memory
  std::size_t max_wildcard = 0;          ///< BudgetOptions::max_wildcard_ledgers
  std::uint64_t evicted = 0;             ///< wildcard ledgers dropped so far (idle + with spend)
  std::uint64_t evicted_with_spend = 0;  ///< of which held spend (persisted) when dropped
  std::uint64_t reloaded = 0;            ///< ledgers recreated with spend read back from SQLite
  bool over_bound = false;               ///< the last sweep could not get under max_wildcard
};

/// What BudgetManager::update changed (by budget name).
struct BudgetUpdate {
  std::vector<std::string> added, changed, removed;
  std::size_t unchanged = 0;
};

/// Per-request budgets: reservations, settlement, thresholds, alerts, persistence, fleet sync.
class BudgetManager final : public BudgetView {
 public:
  /// Builds from the "budgets" JSON array. Loads persisted spend from `sqlite_path` (if any)
  /// and starts the background thread when `sync_interval` > 0 and a backend is configured.
  /// The catalog and clock must outlive the manager.
  static Result<std::unique_ptr<BudgetManager>> create(const Json& budgets, const Catalog& catalog,
                                                       const Clock& clock, BudgetOptions options = {});
  ~BudgetManager() override;
  BudgetManager(const BudgetManager&) = delete;
  BudgetManager& operator=(const BudgetManager&) = delete;

  /// Estimates the cost of one attempt on `model` (nullptr = unknown model) and reserves it in
  /// every matching ledger, all or nothing. Fails with ErrorKind::budget_exceeded naming the
  /// budget, scope and window when any hard limit would be passed, or when the model has no
  /// known price and a matching USD budget says "block". Priced zero-cost models are never
  /// blocked by USD limits. The error carries retry_after: when the blocking window next
  /// frees spend (its reset; for rolling windows, its next bucket).
  ///
  /// `output_bounded` false: the output estimate is a guess (the request set no max_tokens),
  /// so it never blocks on its own: the request is blocked only when the committed spend plus
  /// its input estimate pass a USD cap, and it reserves its output estimate only up to the
  /// cap's headroom. (Nothing spent and a $0.51 guess over a $0.50 cap is not a block.)
  ///
  /// `allow_downgrade`: a USD cap that would block the request but names a soft
  /// `downgrade_to` (other than this model) answers a downgrade instead (Admission with
  /// downgrade_to, holding nothing, open == false): the downgrade target's own, cheaper
  /// estimate is then admitted on its own. False once the request was rerouted.
  Result<Admission> admit(const CallContext& ctx, const ModelInfo* model, std::int64_t est_input_tokens,
                          std::int64_t est_output_tokens, Instant now, bool output_bounded = true,
                          bool allow_downgrade = true);
  /// Replaces the reservation with the actual cost (and tokens from `usage`) in every ledger
  /// it held. Returns the alerts this settlement fired (usually none) for the trace.
  /// No-op on a closed Admission.
  std::vector<BudgetAlert> settle(Admission& a, double actual_usd, const Usage& usage, Instant now);
  /// Drops the reservation (the attempt failed and cost nothing).
  void release(Admission& a);

  /// BudgetView: the tightest matching USD budget (highest committed percent).
  BudgetStatus status(const CallContext& ctx, Instant now) const override;

  /// Every ledger: budget, scope, window, spent/reserved/limit/percent, fleet share, backend
  /// health ("redis": {"configured","connected","last_error","syncs","max_sync_gap_ms"}).
  Json snapshot(Instant now) const;
  /// Alerts fired so far (most recent last, bounded by max_alerts_kept).
  std::vector<BudgetAlert> alerts() const;

  /// Writes settled spend to SQLite now. No-op without sqlite_path.
  Result<void> flush();
  /// One Redis sync cycle now (push own totals, pull the fleet's). No-op without redis_url.
  Result<void> sync_now();
  /// True when Redis is configured and the last sync succeeded.
  bool redis_connected() const noexcept;
  /// One eviction sweep of the wildcard ledgers now (the background thread runs one every
  /// evict_interval, and every sync cycle while above max_wildcard_ledgers). Returns how many
  /// ledgers were dropped. Never drops a ledger with a reservation in flight.
  std::size_t evict(Instant now);
  /// Live ledger count and eviction counters. Cheap (atomics).
  BudgetLedgerStats ledger_stats() const noexcept;

  /// The running definitions (a copy: update() may replace them at any time).
  std::vector<BudgetSpec> specs() const;
  /// Replaces the definitions live (the "budgets" array, parsed like create()'s; all or
  /// nothing). A budget whose identity (name, scope, window, window_s, timezone) is unchanged
  /// keeps its ledgers and their spend and in-flight reservations; its limits, soft threshold,
  /// downgrade target, alerts and unknown_price policy change at once (alerts re-arm when the
  /// USD limit or the thresholds change). A new budget (or a changed identity) starts from
  /// its persisted rows, like a restart would. A removed budget stops matching requests; its
  /// unflushed spend is written first, and settles of reservations made before stay harmless
  /// (its ledgers are kept, inert, until the manager is destroyed). Thread-safe; admissions
  /// in flight see either the old or the new definitions.
  Result<BudgetUpdate> update(const Json& budgets, Instant now);
  /// Spend reset (an operator's decision, e.g. after a refund): every ledger of budget `name`
  /// forgets this instance's settled spend and the fleet's last-synced share in its live
  /// window, its alerts re-arm, and its persisted rows (this instance's) are deleted, so a
  /// restart does not bring the spend back. In-flight reservations stay (they settle
  /// normally). With Redis, the other instances' shares return at the next sync unless they
  /// reset too (the control plane applies a reset on every instance). Returns the number of
  /// ledgers reset; not_found when no budget has that name.
  Result<std::size_t> reset(const std::string& name, Instant now);

  class Impl;

 private:
  explicit BudgetManager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Cost estimate used by admit(): input at the input rate, output at the output rate.
/// nullopt when the model is unknown or unpriced.
std::optional<double> estimate_cost_usd(const ModelInfo* model, std::int64_t input_tokens,
                                        std::int64_t output_tokens) noexcept;

}  // namespace modelux
