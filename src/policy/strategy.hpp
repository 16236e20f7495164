// Internal interface between the routing session and the strategies.
//
// A compiled config is a tree of Strategy nodes (immutable, shared). Each request starts a
// tree of StrategyState objects mirroring it. A state answers next() with attempts to make,
// a wait, or its own terminal outcome (done / failed); its parent then reads outcome().
// Results are routed to the state that started the attempt (owns()).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <new>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "modelux/policy.hpp"

namespace modelux {

/// What a fallback chain does when a target's token bucket is empty (429 absorption).
enum class RateLimitMode : std::uint8_t {
  fallback,   ///< skip the target, try the next one
  queue,      ///< wait until the bucket refills, if that fits in the budget
  fail_fast,  ///< end the request with rate_limited
};

/// A strategy state, allocated in its session's arena.
using StatePtr = std::unique_ptr<StrategyState, StateDeleter>;

/// Bump allocator for one session's strategy states. reset() keeps its blocks, so a reused
/// session allocates nothing once it has seen its config's shape.
class StateArena {
 public:
  StateArena() = default;
  StateArena(const StateArena&) = delete;
  StateArena& operator=(const StateArena&) = delete;
  void* allocate(std::size_t n, std::size_t align);
  /// Forgets every allocation (their objects must be destroyed already); keeps the blocks.
  void reset() noexcept {
    block_ = 0;
    used_ = 0;
  }

 private:
  struct Block {
    std::unique_ptr<std::byte[]> mem;
    std::size_t size = 0;
  };
  std::vector<Block> blocks_;
  std::size_t block_ = 0;  ///< current block
  std::size_t used_ = 0;   ///< bytes used in the current block
};

/// The reason fragments of one request ("primary rate_limited (429)"), joined into the
/// trace's reason when it ends. clear() keeps every fragment's buffer and the next request
/// writes its fragments into them in order, so a reused session's notes allocate nothing
/// once they have reached their size.
class Notes {
 public:
  /// Starts a fragment and returns its (empty, reused) buffer to append into.
  std::string& add() {
    if (n_ == items_.size()) items_.emplace_back();
    std::string& s = items_[n_++];
    s.clear();
    return s;
  }
  void push_back(std::string_view note) { add().assign(note); }
  void clear() noexcept { n_ = 0; }
  bool empty() const noexcept { return n_ == 0; }
  std::size_t size() const noexcept { return n_; }
  const std::string& operator[](std::size_t i) const noexcept { return items_[i]; }

 private:
  std::vector<std::string> items_;  ///< the first n_ are this request's
  std::size_t n_ = 0;
};

/// What the session holds for one attempt: no report yet, the result of an attempt that ran,
/// or a skip (the driver never started it). Closed, like the AttemptReport it is filled from.
using AttemptSlot = std::variant<std::monostate, AttemptResult, AttemptSkip>;

/// Per-request state shared by all strategy states of one session. Reusable: begin() starts
/// a new request and keeps the capacity of every container and string, so a session that is
/// reused (RoutingSession::reset) does no heap allocation in steady state.
class SessionCore {
 public:
  SessionCore() = default;
  /// Starts a request: clears the previous one's state, keeping storage.
  void begin(std::shared_ptr<const Policy> p, const SessionInputs& in);

  SessionInputs in;
  std::shared_ptr<const Policy> policy;
  Random rng;
  DecisionTrace trace;
  Instant deadline{};
  std::vector<AttemptPlan> plans;        ///< index = id - 1; only the first plan_count() are live
  std::vector<AttemptSlot> results;      ///< index = id - 1 (monostate until reported); size == plan_count()
  std::vector<const ModelInfo*> models;  ///< index = id - 1: prices for cost (may be null)
  std::vector<const Target*> targets;    ///< index = id - 1: the compiled Policy's target (never copied)
  /// index = id - 1: the session ended this attempt itself (expired, abandoned) and the
  /// driver's own report has not arrived yet (it may still bring usage for the trace).
  std::vector<std::uint8_t> ended_by_session;
  /// Attempts the session ended while the driver may still run them, for Step::cancel.
  /// The first `cancel_handed` were handed out by the last next().
  std::vector<std::uint32_t> to_cancel;
  std::size_t cancel_handed = 0;
  std::uint32_t committed = 0;           ///< the attempt that owns the response (0 = none)
  Instant commit_at{};
  std::uint32_t skipped = 0;             ///< attempts the driver reported as skipped (claim refused)
  Notes notes;                           ///< reason fragments ("primary rate_limited (429)")
  bool cancelled = false;
  std::string cancel_reason;

  /// Creates an attempt for `t`, bounded by `timeout` and by min(node_deadline, deadline).
  /// Records it in the trace as started at `now`.
  const AttemptPlan& make_attempt(const Target& t, const ModelInfo* model, Nanos timeout, Instant now,
                                  Instant node_deadline, std::string_view why, int member = -1,
                                  bool needs_full_response = false);
  /// Whether attempt `id` has ended: a result or a skip was recorded (by the driver or the session).
  bool reported(std::uint32_t id) const noexcept {
    return id != 0 && id <= n_plans_ && results[id - 1].index() != 0;
  }
  /// The result of attempt `id` if it ran and ended; nullptr while it runs and for a skip.
  const AttemptResult* result(std::uint32_t id) const noexcept {
    return id != 0 && id <= n_plans_ ? std::get_if<AttemptResult>(&results[id - 1]) : nullptr;
  }
  /// Whether the driver skipped attempt `id` (never started it).
  bool was_skipped(std::uint32_t id) const noexcept {
    return id != 0 && id <= n_plans_ && std::holds_alternative<AttemptSkip>(results[id - 1]);
  }
  /// The plan for an id.
  const AttemptPlan& plan(std::uint32_t id) const { return plans.at(id - 1); }
  AttemptPlan& plan(std::uint32_t id) { return plans.at(id - 1); }
  /// Attempts created so far in this request.
  std::uint32_t plan_count() const noexcept { return n_plans_; }
  /// Makes a state in this session's arena.
  template <class T, class... A>
  StatePtr make_state(A&&... args) {
    void* mem = arena_.allocate(sizeof(T), alignof(T));
    return StatePtr(new (mem) T(std::forward<A>(args)...));
  }
  /// Stores a report (a result or a skip) and fills the trace record. Returns false for
  /// late/unknown ids.
  bool record_result(AttemptReport r, Instant now);
  /// The driver never reported `id` before its deadline: records a timeout for it and lists
  /// it for the driver to cancel.
  void expire(std::uint32_t id, Instant now, std::string why);
  /// The session gives up on running attempt `id` (an ensemble's loser, displaced by a
  /// commit, the caller went away): records it as cancelled with `why` as why_ended and lists
  /// it for the driver to cancel. No-op when `id` already has a result. The error message
  /// is `message`, or `why` when empty.
  void abandon(std::uint32_t id, Instant now, std::string_view why, std::string_view message = {});
  /// A string that stays valid (same address) until the next begin(), for text that
  /// outlives the state building it, e.g. a why handed to a child as StartArgs::why. The
  /// buffers are reused in the order they are asked for, so a reused session allocates
  /// nothing here once a request of the same shape has been through.
  std::string& scratch();
  /// Sets why_ended on an attempt's trace record.
  void set_why_ended(std::uint32_t id, std::string why);
  /// The trace record of attempt `id` (records of attempts the driver could not start are
  /// dropped from the finished trace, so after finish the index may differ from id - 1).
  AttemptRecord& record(std::uint32_t id);
  /// Health of a target key (default stats when there is no health view).
  TargetStats stats(std::string_view key, Instant now) const;
  /// Estimated input tokens of the request (computed once).
  std::int64_t estimated_tokens();
  /// Prompt prefix fingerprint (computed once).
  std::uint64_t fingerprint();

 private:
  friend class RoutingSession;
  StateArena arena_;
  std::uint32_t n_plans_ = 0;
  /// Recycled trace records (string capacity kept), taken from the back: begin() puts the
  /// previous request's records there in reverse, so attempt i reuses the record attempt i
  /// had before and each record keeps strings of the right size.
  std::vector<AttemptRecord> spare_records_;
  /// See scratch(). Held by pointer so that growing the vector never moves a string (a
  /// moved short string changes address); a vector, unlike a deque, allocates nothing
  /// until first used.
  std::vector<std::unique_ptr<std::string>> scratch_;
  std::size_t n_scratch_ = 0;
  std::int64_t est_tokens_ = -1;
  std::uint64_t fp_ = 0;
  bool fp_done_ = false;
};

/// A node's terminal outcome.
struct NodeOutcome {
  bool ok = false;
  std::uint32_t attempt = 0;   ///< the winning attempt (0 for aggregates)
  ChatResponse response;       ///< the answer (copied from the attempt, or aggregated)
  const Target* served = nullptr;  ///< who answered; owned by the compiled Policy (never copied)
  Error error;
  std::string reason;          ///< why this node ended the way it did
  bool skipped = false;        ///< never tried: breaker open / bucket empty (always fail over)
  bool delivered = false;      ///< output already reached the caller: never fail over
  bool fatal = false;          ///< the request must end now (fail_fast): never fail over
};

/// The served target of an outcome, or an empty Target.
inline const Target& served_of(const NodeOutcome& o) noexcept {
  static const Target none;
  return o.served ? *o.served : none;
}

/// How a parent starts a child.
struct StartArgs {
  Instant node_deadline{};
  std::string_view why = "primary";
  int member = -1;
  bool needs_full_response = false;
  RateLimitMode rate_limit_mode = RateLimitMode::fallback;
  bool ignore_breakers = false;  ///< panic pass: try targets whose breaker is open (rate limits still hold)
  /// Bound on a committed stream set by an enclosing node's max_stream_ms (0 = none); a
  /// leaf uses the tighter of this and its own.
  Nanos max_stream{0};
};

/// The tighter of two optional bounds (0 = none).
inline Nanos tighter(Nanos a, Nanos b) noexcept {
  if (a.count() <= 0) return b;
  if (b.count() <= 0) return a;
  return a < b ? a : b;
}

/// The answer of an outcome: the winning attempt's stored response (never copied), or the
/// outcome's own response for aggregates (attempt == 0).
inline const ChatResponse& response_of(const SessionCore& s, const NodeOutcome& o) {
  const AttemptResult* r = s.result(o.attempt);
  return r && r->answer ? *r->answer : o.response;
}

/// After RoutingSession::commit() the session stops consulting the tree: the committed
/// attempt owns the response, so no node can expire it, start another attempt, fail over or
/// reject its answer (cascade checks, ensemble votes). Nodes still guard against a committed
/// attempt of their own (TargetState never expires it) in case a driver asks anyway.
class StrategyState {
 public:
  virtual ~StrategyState() = default;
  /// Next action. Kind done/failed: this node is finished and outcome() is valid.
  /// Kind attempt: the attempts are the ones this call created with SessionCore::make_attempt
  /// (the session hands them to the driver); `step.wake_at` is the node's wake-up for wait.
  virtual Step::Kind next(SessionCore& s, Instant now, Step& step) = 0;
  /// Attempt `id`, which this node (or one of its children) started, was reported (ran or
  /// skipped): read it with SessionCore::result() / was_skipped().
  virtual void on_result(SessionCore& s, std::uint32_t id, Instant now) = 0;
  /// Whether this node or its children started attempt `id`.
  virtual bool owns(std::uint32_t id) const noexcept = 0;
  const NodeOutcome& outcome() const noexcept { return outcome_; }
  NodeOutcome& outcome() noexcept { return outcome_; }

 protected:
  NodeOutcome outcome_;
};

inline void StateDeleter::operator()(StrategyState* p) const noexcept { p->~StrategyState(); }

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string_view name() const noexcept = 0;
  /// Starts a state for one request. `a.node_deadline` bounds everything this node does.
  virtual StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const = 0;
  /// Total budget this node declares (0 = none); the session uses the root's.
  virtual Nanos total_budget() const noexcept { return Nanos{0}; }
  /// The single target this node always sends to, if it is a plain model leaf.
  virtual const Target* only_target() const noexcept { return nullptr; }
  /// Every target this node may send to (for docs, validation and health warm-up).
  virtual void collect_targets(std::vector<Target>& out) const = 0;
};

/// Compiles one node: a model name string, an "@slug" string, {"model":...}, {"config":"@slug"}
/// or {"strategy":...}. Errors carry the JSON path.
Result<std::unique_ptr<Strategy>> compile_node(const Json& cfg, const std::string& path, const PolicyResolver& r);

/// Signature of a strategy compiler registered by name.
using StrategyCompiler = Result<std::unique_ptr<Strategy>> (*)(const Json& cfg, const std::string& path,
                                                               const PolicyResolver& r);
/// The compiler for a strategy name; nullptr if unknown. The list lives in registry.cpp.
StrategyCompiler find_strategy(std::string_view name) noexcept;
/// All registered strategy names.
std::vector<std::string_view> strategy_names();

// ---- helpers for strategy compilers -------------------------------------------------------

/// Reads an optional positive millisecond field; error with path when present and invalid.
Result<Nanos> read_ms(const Json& cfg, const char* key, const std::string& path, Nanos fallback);
/// Resolves a model name into a Target; error with path if the model is unknown or has no provider.
Result<Target> resolve_target(std::string_view model, const Json* provider_override, const std::string& path,
                              const PolicyResolver& r);
/// Rejects keys not in `allowed` (typos must not silently change routing).
Result<void> check_keys(const Json& cfg, const std::string& path, std::initializer_list<std::string_view> allowed);
/// Requires `cfg` to be an object.
Result<void> require_object(const Json& cfg, const std::string& path);
/// Reads an optional number field in [lo, hi].
Result<double> read_number(const Json& cfg, const char* key, const std::string& path, double fallback, double lo,
                           double hi);
/// Reads an optional string field.
Result<std::string> read_string(const Json& cfg, const char* key, const std::string& path, std::string fallback);
/// Reads an optional "on_rate_limit" mode.
Result<RateLimitMode> read_rate_limit_mode(const Json& cfg, const std::string& path);
/// Bitmask over ErrorKind of the classes in a `retry_on` array; error with path for unknown ones.
Result<std::uint32_t> read_retry_on(const Json& cfg, const std::string& path, std::uint32_t fallback);
/// Whether an error kind is in a retry mask built by read_retry_on.
bool retry_mask_matches(std::uint32_t mask, const Error& e) noexcept;
/// Joins a path and a key: path_key("$.a", "b") == "$.a.b".
std::string path_key(const std::string& path, std::string_view key);
std::string path_index(const std::string& path, std::size_t i);
/// Text of a response's first choice (kept here so policy does not depend on wire's helpers).
std::string response_text(const ChatResponse& r);
/// Short human label for an error: "rate_limited (429)".
std::string error_label(const Error& e);
/// Appends error_label(e) to `out` (no temporary string).
void append_error_label(std::string& out, const Error& e);
/// Appends a decimal number to `out` (no temporary string).
void append_number(std::string& out, long long v);
/// Milliseconds as an integer for messages.
long long to_ms(Nanos d) noexcept;

}  // namespace modelux
