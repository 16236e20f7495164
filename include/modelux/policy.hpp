// modelux policy: routing configs (JSON) compiled into immutable Policies, and the routing
// session — a pure state machine that says what to try next and takes back each outcome.
//
// The session reads only what it is given: the clock value passed to next(), the health and
// budget views, and a seeded Random. It does no I/O. The executor (router), the app itself
// ("bring your own client") and the simulator all drive the same session.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "modelux/catalog.hpp"
#include "modelux/decision.hpp"
#include "modelux/views.hpp"

namespace modelux {

/// One attempt the driver must make.
struct AttemptPlan {
  std::uint32_t id = 0;
  Target target;
  Nanos timeout{0};       ///< this attempt's own timeout
  Instant deadline{};     ///< min(start + timeout, total budget deadline)
  Nanos ttft_timeout{0};  ///< streams: first-token timeout (0 = none)
  Nanos stall_timeout{0}; ///< streams: max gap between chunks (0 = none)
  /// Once committed (RoutingSession::commit), the longest this attempt may keep streaming,
  /// from the commit (0 = no bound but stall_timeout). The session enforces it.
  Nanos max_stream{0};
  bool needs_full_response = false;  ///< ensemble / cascade: the driver must buffer
  /// The driver must HealthRegistry::claim() the target just before starting this attempt
  /// and, when the claim is refused, report AttemptSkip{.id = id} (SkipReason::not_admitted)
  /// instead of starting it. False for a panic-mode attempt past an open breaker (tried on
  /// purpose, nothing to claim).
  bool must_claim = true;
  std::string why;        ///< "primary", "fallback after timeout"...
  int member = -1;        ///< ensemble member index
};

/// What to do next.
struct Step {
  enum class Kind : std::uint8_t {
    attempt,  ///< make every attempt in `attempts` (several at once for ensembles)
    wait,     ///< nothing to start now; call next() again at `wake_at` or when a result arrives
    done,     ///< finished successfully: see RoutingSession::response()
    failed,   ///< finished with an error: see RoutingSession::error()
  };
  Kind kind = Kind::wait;
  /// The attempts to start (kind == attempt). A view into the session's storage: valid until
  /// the next call to next() or reset() on that session; copy what you keep.
  std::span<const AttemptPlan> attempts;
  /// Attempts the driver must stop now, whatever the kind: the session has already ended
  /// them (attempt or routing timeout, an ensemble's losers, the attempts another attempt's
  /// commit displaced, the caller's cancel). Their output must be dropped and their upstream
  /// closed; reporting them afterwards is allowed and changes no decision. Each id is listed
  /// once, by the first next() after the session ended it. Same lifetime as `attempts`.
  std::span<const std::uint32_t> cancel;
  /// kind == wait: when to call next() again if nothing arrives first; Instant{} = only when
  /// a result arrives (a committed stream without max_stream_ms).
  Instant wake_at{};
};

class Policy;

/// Inputs a session may read. Pointers must outlive the session.
struct SessionInputs {
  const ChatRequest* request = nullptr;
  const CallContext* context = nullptr;
  const HealthView* health = nullptr;  ///< may be null: everything healthy
  const BudgetView* budget = nullptr;  ///< may be null: no budgets
  std::uint64_t seed = 0;
  Instant start{};
  WallTime wall_start{};               ///< for time-of-day rules and trace timestamps
};

class SessionCore;
class StrategyState;
/// Internal: destroys a strategy state living in its session's arena.
struct StateDeleter {
  void operator()(StrategyState* p) const noexcept;
};

/// One request's routing state machine. Not thread-safe: one driver at a time.
///
/// Reusable: reset() starts the next request in the same object and keeps every buffer
/// (attempt plans, trace records and strings, strategy states), so a driver that keeps one
/// session per thread or per worker does no heap allocation per decision in steady state for
/// single and fallback configs. A trace moved out with `std::move(trace())` takes its
/// buffers with it.
class RoutingSession {
 public:
  RoutingSession(std::shared_ptr<const Policy> policy, const SessionInputs& in);
  /// An idle session: call reset() before anything else.
  RoutingSession();
  ~RoutingSession();
  RoutingSession(const RoutingSession&) = delete;
  RoutingSession& operator=(const RoutingSession&) = delete;

  /// Starts a new request in this session, dropping the previous one (its trace included).
  void reset(std::shared_ptr<const Policy> policy, const SessionInputs& in);
  /// Drops the current request (the policy reference, attempt results and their response
  /// bodies) but keeps the reusable buffers: for a session parked in a pool. reset() next.
  void clear() noexcept;

  /// What to do now. Attempts returned are recorded as started at `now`.
  Step next(Instant now);
  /// Reports how a planned attempt ended: an AttemptResult (it ran: served or failed) or an
  /// AttemptSkip (the driver's health claim was refused: a skip, not a try; the session moves
  /// on as if health had refused the plan). A result for an attempt the session already
  /// ended (expired, abandoned) changes no decision; its usage and ttft still reach that
  /// attempt's trace record. A second report for an attempt is ignored.
  void report(AttemptReport report, Instant now);
  /// Output of `attempt_id` is about to reach the caller: from now on that attempt owns the
  /// response. Call it once per request, just before the first output byte is written (a
  /// repeated call for the same attempt is a no-op that returns true).
  ///
  /// After it: routing timeouts (the attempt's timeout_ms and TTFT, node deadlines and
  /// total_budget_ms, which bounds the routing phase only) no longer end this attempt; no new
  /// attempt starts; every other running attempt is abandoned and listed in the next Step's
  /// `cancel`; next() waits for this attempt's report (wake_at = now + max_stream when the
  /// plan has one, then the attempt ends with "max_stream_ms N ms reached"). Its success
  /// serves the request; its failure fails the request with its error (no failover: output
  /// was delivered). A stalled stream is the driver's to detect (stall_timeout).
  ///
  /// Returns false, and changes nothing, when the attempt may not write: it already ended
  /// (expired, lost, abandoned), another attempt committed, or the session finished. The
  /// driver must then drop that attempt's output and write nothing.
  bool commit(std::uint32_t attempt_id, Instant now);
  /// The attempt that owns the response (0 = none yet).
  std::uint32_t committed() const noexcept;
  /// The caller went away: every running attempt is abandoned; next() says failed(cancelled).
  void cancel(Instant now, std::string why = "caller cancelled");

  bool finished() const noexcept;
  /// The answer (after Step::done). For ensembles, the aggregate.
  const ChatResponse& response() const;
  /// The served attempt's target (after Step::done); owned by the policy, valid until reset().
  const Target& served() const;
  /// The failure (after Step::failed).
  const Error& error() const;
  /// The trace so far; complete after done/failed.
  DecisionTrace& trace() noexcept;
  /// Overall deadline from total_budget_ms.
  Instant deadline() const noexcept;
  const SessionInputs& inputs() const noexcept;

 private:
  Step decide(Instant now);

  std::unique_ptr<SessionCore> core_;
  std::unique_ptr<StrategyState, StateDeleter> root_;
};

/// Resolves names a config refers to: catalog models and other configs ("@slug").
class PolicyResolver {
 public:
  virtual ~PolicyResolver() = default;
  virtual const Catalog& catalog() const = 0;
  /// Provider that serves `model` (catalog default unless the config file remaps it);
  /// empty when no configured provider can serve it.
  virtual std::string provider_for(std::string_view model) const = 0;
  /// A compiled config by slug (without '@'); nullptr when unknown.
  virtual std::shared_ptr<const Policy> config(std::string_view slug) const = 0;
};

class Strategy;

/// An immutable compiled routing config. Thread-safe to share.
class Policy {
 public:
  /// Compiles a routing config. Every fault is reported with its JSON path
  /// ("$.attempts[1].timeout_ms"); nothing half-loads.
  static Result<std::shared_ptr<const Policy>> compile(const Json& config, const PolicyResolver& resolver,
                                                       std::string name = {});
  /// A policy that sends everything to one model (used for plain `model` requests).
  static Result<std::shared_ptr<const Policy>> single_model(std::string_view model, const PolicyResolver& resolver);

  const std::string& name() const noexcept { return name_; }
  std::string_view strategy() const noexcept;
  Nanos total_budget() const noexcept { return total_budget_; }
  const Json& source() const noexcept { return source_; }
  std::int64_t version() const noexcept { return version_; }
  void set_version(std::int64_t v) noexcept { version_ = v; }
  const Strategy& root() const noexcept { return *root_; }

  Policy(std::string name, Json source, std::unique_ptr<Strategy> root, Nanos total_budget);
  ~Policy();

 private:
  std::string name_;
  Json source_;
  std::unique_ptr<Strategy> root_;
  Nanos total_budget_;
  std::int64_t version_ = 0;
};

/// Default total budget when a config sets none.
inline constexpr Nanos kDefaultTotalBudget = std::chrono::seconds(60);

/// Fingerprint of a request's prompt prefix (system/developer messages and the first user
/// message, fnv1a64) for prompt-cache affinity; 0 for an empty prompt. After a successful
/// attempt the executor may call HealthRegistry::note_prefix(fingerprint, target key).
std::uint64_t prompt_prefix_fingerprint(const ChatRequest& req) noexcept;

/// Maps a `retry_on` class name ("429", "5xx", "timeout", "connection", "overloaded",
/// "context_length", "stream", "malformed") to whether an error of `kind` matches it.
bool retry_class_matches(std::string_view cls, const Error& e) noexcept;
/// All valid retry class names.
const std::vector<std::string_view>& retry_class_names() noexcept;

}  // namespace modelux
