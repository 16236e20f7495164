// Internal interface between the routing session and the strategies.
//
// A compiled config is a tree of Strategy nodes (immutable, shared). Each request starts a
// tree of StrategyState objects mirroring it. A state answers next() with attempts to make,
// a wait, or its own terminal outcome (done / failed); its parent then reads outcome().
// Results are routed to the state that started the attempt (owns()).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "modelux/policy.hpp"

namespace modelux {

/// Per-request state shared by all strategy states of one session.
class SessionCore {
 public:
  SessionCore(std::shared_ptr<const Policy> p, const SessionInputs& in);

  SessionInputs in;
  std::shared_ptr<const Policy> policy;
  Random rng;
  DecisionTrace trace;
  Instant deadline{};
  std::vector<AttemptPlan> plans;      ///< index = id - 1
  std::vector<AttemptResult> results;  ///< index = id - 1 (id == 0 until reported)
  bool cancelled = false;
  std::string cancel_reason;

  /// Creates an attempt for `t`, bounded by `timeout` and by min(node_deadline, deadline).
  /// Records it in the trace as started at `now`.
  AttemptPlan make_attempt(const Target& t, Nanos timeout, Instant now, Instant node_deadline, std::string why,
                           int member = -1);
  /// The result for an id (nullptr if not yet reported).
  const AttemptResult* result(std::uint32_t id) const noexcept;
  /// The plan for an id.
  const AttemptPlan& plan(std::uint32_t id) const { return plans.at(id - 1); }
  /// Sets why_ended on an attempt's trace record.
  void set_why_ended(std::uint32_t id, std::string why);
  const Catalog& catalog() const;
};

/// A node's terminal outcome.
struct NodeOutcome {
  bool ok = false;
  std::uint32_t attempt = 0;   ///< the winning attempt (0 for aggregates)
  ChatResponse response;       ///< the answer (copied from the attempt, or aggregated)
  Target served;
  Error error;
  std::string reason;          ///< why this node ended the way it did
};

class StrategyState {
 public:
  virtual ~StrategyState() = default;
  /// Next action. Kind done/failed: this node is finished and outcome() is valid.
  virtual Step next(SessionCore& s, Instant now) = 0;
  /// A result for an attempt this node (or one of its children) started.
  virtual void on_result(SessionCore& s, const AttemptResult& r, Instant now) = 0;
  /// Whether this node or its children started attempt `id`.
  virtual bool owns(std::uint32_t id) const noexcept = 0;
  const NodeOutcome& outcome() const noexcept { return outcome_; }

 protected:
  NodeOutcome outcome_;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string_view name() const noexcept = 0;
  /// Starts a state for one request. `node_deadline` bounds everything this node does.
  virtual std::unique_ptr<StrategyState> start(SessionCore& s, Instant now, Instant node_deadline) const = 0;
  /// Total budget this node declares (0 = none); the session uses the root's.
  virtual Nanos total_budget() const noexcept { return Nanos{0}; }
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

}  // namespace modelux
