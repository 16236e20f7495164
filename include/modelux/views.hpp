// modelux views: the small vocabulary that routing, health and budgets share, kept apart so
// that none of them depends on another's header.
//
//   - who is calling (CallContext) and what a target is (Target);
//   - what one attempt came to (AttemptReport): an attempt that ran (AttemptResult: served
//     or failed, a closed std::expected) or one that was skipped (AttemptSkip). The executor
//     reports it to the routing session and feeds what ran to health;
//   - the read-only views a routing decision reads: HealthView (live stats, breaker state)
//     and BudgetView (spend against caps).
//
// A view is a pure read: every method is const and changes no state. Claims (half-open probe
// slots, ramp shares, token-bucket tokens, budget reservations) are made by the executor on
// the concrete registries (HealthRegistry::claim, BudgetManager::admit), never by a decision.
//
// Threading: plain value types; views must be safe to call from many threads and must not
// block.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "modelux/core.hpp"
#include "modelux/wire.hpp"

namespace modelux {

/// Who is calling: used for budgets, A/B stickiness, rules and traces.
struct CallContext {
  std::string request_id;
  std::string project;
  std::string org;
  std::string end_user;
  std::string api_key_id;
  std::vector<std::pair<std::string, std::string>> tags;
  /// Optional: cancel() it from any thread to stop the request (see CancellationToken).
  std::shared_ptr<CancellationToken> cancel;
  std::string tag(std::string_view key) const;
};

/// A concrete thing to call.
struct Target {
  std::string model;      ///< catalog id ("gpt-4o-mini")
  std::string provider;   ///< provider name ("openai"); from the catalog unless overridden
  std::string key() const { return provider + "/" + model; }
};

/// An attempt that ran: how it ended, and what every ending has.
///
/// The outcome is closed: `answer` holds the response (served) or the error (failed), never
/// both and never neither, so "ok with an error" or "failed with a body" cannot be built. A
/// default-constructed result is failed (ErrorKind::internal, no message): a driver that
/// forgets the outcome reports a failure, never an empty success. An attempt that never ran
/// is not an AttemptResult at all but an AttemptSkip (see AttemptReport).
struct AttemptResult {
  std::uint32_t id = 0;
  /// Served: the response (possibly accumulated from a stream). Failed: why there is none.
  Result<ChatResponse> answer{std::unexpect};
  Usage usage;           ///< billed tokens (a broken stream's partial usage too); empty: the response's
  Nanos latency{0};
  Nanos ttft{0};
  /// Output already reached the caller (a stream started): no failover. An attempt the
  /// session saw commit() for is treated as delivered whatever this says.
  bool delivered = false;

  bool served() const noexcept { return answer.has_value(); }
  /// The tokens to bill: `usage`, else the served response's own usage.
  const Usage& billed_usage() const noexcept {
    return usage.empty() && answer ? answer->usage : usage;
  }
};

/// Why a planned attempt was not started. Closed.
enum class SkipReason : std::uint8_t {
  /// HealthRegistry::claim() refused it (half-open probe already out, ramp share or token
  /// bucket used up).
  not_admitted,
};
std::string_view to_string(SkipReason r) noexcept;

/// A planned attempt the driver did not start: a skip, not a try. It has no outcome, usage,
/// latency or delivery; the session moves on as if health had refused the plan, and health
/// does not observe it.
struct AttemptSkip {
  std::uint32_t id = 0;
  SkipReason reason = SkipReason::not_admitted;
};

/// What a driver reports to the routing session about one planned attempt. Closed: it ran
/// (AttemptResult: served or failed) or it was skipped (AttemptSkip).
using AttemptReport = std::variant<AttemptResult, AttemptSkip>;

/// The attempt id a report is about.
inline std::uint32_t attempt_id(const AttemptReport& r) noexcept {
  return std::visit([](const auto& x) { return x.id; }, r);
}

/// Circuit-breaker state of a target.
enum class BreakerState : std::uint8_t { closed, open, half_open };
std::string_view to_string(BreakerState s) noexcept;

/// Live stats of one target, as the policy sees them.
struct TargetStats {
  double p50_ms = 0;        ///< 0 when never measured
  double p95_ms = 0;
  double error_rate = 0;    ///< recent fraction of failed attempts, 0..1
  std::int64_t samples = 0;
  BreakerState breaker = BreakerState::closed;
  /// The breaker / token bucket would let a request through now. A plan made on this may
  /// still be refused by the executor's claim (one probe slot, ramp share or token at a time).
  bool admits = true;
  Instant last_sample{};
  Instant retry_at{};       ///< when an open breaker or exhausted bucket reopens
};

/// Read-only view of live health. Implemented by the health module and by test fakes.
/// Every method is const and claims nothing. Must be safe to call from many threads; must
/// not block.
class HealthView {
 public:
  virtual ~HealthView() = default;
  /// Stats for target key "provider/model". Unknown targets: default TargetStats (healthy).
  virtual TargetStats stats(std::string_view target_key, Instant now) const = 0;
  /// Prompt-cache affinity: the target key ("provider/model") that recently served the prompt
  /// prefix `fingerprint` while its provider's cache TTL holds; empty when none.
  virtual std::string preferred_target(std::uint64_t fingerprint, Instant now) const {
    (void)fingerprint;
    (void)now;
    return {};
  }
};

/// Budget status for a request's scopes (the tightest one).
struct BudgetStatus {
  double spent_usd = 0;
  double limit_usd = 0;      ///< 0 = no limit
  double remaining_usd = 0;  ///< +inf-like when no limit
  double percent = 0;        ///< spent / limit * 100
};

/// Read-only view of budgets for the rules DSL. Implemented by the budget module.
class BudgetView {
 public:
  virtual ~BudgetView() = default;
  virtual BudgetStatus status(const CallContext& ctx, Instant now) const = 0;
};

}  // namespace modelux
