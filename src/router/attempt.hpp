// Internal: one attempt's lifecycle, start to finish (the call tracker).
//
// Every side effect of an attempt hangs off one AttemptTracker, in this order:
//   start():  health claim (HealthRegistry::claim) → budget reserve, or a downgrade → API key pick
//   observe_headers():  the provider's rate-limit headers (token buckets)
//   finish(): health observe, key pool, prompt-cache affinity → budget settle (cost once)
//             → the AttemptResult the routing session takes (a refused start: refused_report()).
// The executor, ClientSession (bring your own client) and the Simulator all drive attempts
// through it, so the three cannot drift apart. Encoding, sending and decoding are not here:
// they are the stream relay's job (the executor) or the app's (ClientSession).
//
// Threading: a tracker belongs to one attempt and is used by one coroutine or thread at a time.
// The registries it touches (health, budgets) are thread-safe.
#pragma once

#include <atomic>
#include <expected>
#include <optional>
#include <string>
#include <vector>

#include "modelux/budget.hpp"
#include "modelux/config.hpp"
#include "modelux/health.hpp"
#include "modelux/policy.hpp"

namespace modelux {

/// What an attempt's side effects reach. Any pointer may be null (the simulator has no
/// providers, keys or budget manager; a router without budgets has no BudgetManager).
struct AttemptEffects {
  const Clock* clock = nullptr;
  const Config* config = nullptr;              ///< providers (keys, family) and the catalog
  HealthRegistry* health = nullptr;
  BudgetManager* budgets = nullptr;
  std::atomic<std::uint64_t>* key_cursor = nullptr;  ///< round robin per provider when health is off
};

/// Why an attempt did not start. Closed: exactly one of these.
struct AttemptRefusal {
  enum class Why : std::uint8_t {
    not_admitted,  ///< the health claim was refused (probe already out, ramp, empty bucket)
    refused,       ///< `error` says why: budget_exceeded, every key cooling down, no provider/codec
    downgrade,     ///< a soft budget threshold asks to reroute to `downgrade_to`
  };
  Why why = Why::refused;
  Error error;               ///< refused (and downgrade: a budget_exceeded naming the reroute)
  std::string downgrade_to;  ///< downgrade: "@cheap"
  std::string note;          ///< downgrade: the trace's budget action
};

/// How a started attempt ended. `answer` is the response or why there is none; the rest is
/// what every ending has.
struct AttemptEnd {
  Result<ChatResponse> answer = std::unexpected(error_of(ErrorKind::internal, "attempt not run"));
  Usage usage;           ///< billed tokens (a broken stream's partial usage too)
  Nanos latency{0};
  Nanos ttft{0};
  bool delivered = false;  ///< output reached the caller: no failover
  /// How the routing session saw this attempt end when it ended it first (an attempt it expired
  /// is cancelled by the driver; health must still see the timeout). Empty: the attempt's own.
  std::optional<Error> session_verdict;
};

class AttemptTracker {
 public:
  struct Options {
    bool allow_downgrade = true;  ///< false once the request was already rerouted by a downgrade
  };

  /// Starts the attempt `plan`: claims health admission, reserves the budget (or asks for a
  /// downgrade), picks an API key. Nothing is held when it refuses.
  static std::expected<AttemptTracker, AttemptRefusal> start(const AttemptEffects& fx, const AttemptPlan& plan,
                                                             const ChatRequest& req, const CallContext& ctx,
                                                             Options opts);
  AttemptTracker(AttemptTracker&&) noexcept;
  AttemptTracker& operator=(AttemptTracker&&) noexcept;
  ~AttemptTracker();  ///< an attempt never finished releases its reservation

  const AttemptPlan& plan() const noexcept { return plan_; }
  /// The provider as configured; null when the effects have no config (simulator).
  const ProviderConfig* provider() const noexcept { return provider_; }
  /// Where to send, with the picked API key.
  ProviderEndpoint endpoint() const;
  /// The model id the provider knows (catalog `upstream`, else the target model).
  std::string_view upstream_model() const noexcept;
  int key_index() const noexcept { return key_index_; }

  /// Key pools fail over across their keys first: after `e` (a 429, quota or auth refusal of
  /// this attempt's key, nothing delivered) the key sits out (its own retry-after) and, when
  /// another key of the pool is free and the attempt's deadline has not passed, the attempt
  /// switches to it and returns true: the driver sends the same request again on it. One
  /// key's 429 then never blocks the target's good keys nor makes a retry wait its
  /// retry-after. At most keys - 1 switches per attempt. `note` gets what happened.
  bool switch_key_after(const Error& e, std::string& note);

  /// The provider's rate-limit headers feed the target's token bucket.
  void observe_headers(const Headers& headers);

  /// Ends the attempt: feeds health (unless the failure is ours: cancelled or local), the key
  /// pool and prompt-cache affinity, then settles or releases the budget reservation. Budget
  /// actions for the trace are appended to `budget_actions`. Returns what the session takes.
  AttemptResult finish(AttemptEnd&& end, std::vector<std::string>& budget_actions, std::uint64_t prompt_fingerprint);

 private:
  AttemptTracker() = default;
  const AttemptEffects* fx_ = nullptr;
  AttemptPlan plan_;
  std::string target_key_;  ///< "provider/model" (with health only)
  const ProviderConfig* provider_ = nullptr;
  const ModelInfo* model_ = nullptr;
  std::optional<Admission> admission_;
  int key_index_ = -1;
  int key_switches_ = 0;
  bool finished_ = false;
};

/// Output tokens an attempt reserves budget for: the request's max_tokens, else the model's
/// max output capped at 1024, else 1024. One estimate for every driver.
std::int64_t estimated_output_tokens(const ChatRequest& req, const ModelInfo* model) noexcept;

/// Whether a failure says something about the target's health. Our own failures (cancelled,
/// local: fd or memory exhaustion, our limits) never do.
bool failure_is_ours(const Error& e) noexcept;

/// What the session hears of an attempt refused at start(): a skip when health did not
/// admit it, else a failed result carrying the refusal's error (budget, keys, no provider).
AttemptReport refused_report(std::uint32_t id, const AttemptRefusal& refusal);

}  // namespace modelux
