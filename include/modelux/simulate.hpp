// modelux simulate: the offline test kit. Simulated providers with latency and error
// distributions, a virtual clock and a runner that pushes N requests through a compiled policy
// — the same RoutingSession production uses — and reports success rate, latency percentiles,
// cost, failovers, the route distribution and every request's trace. Thousands of requests
// run in milliseconds of real time, deterministically for a given seed.
//
//   modelux::Simulator sim;
//   sim.add_target({.key = "anthropic/claude-haiku-4-5", .latency = {.median_ms = 400}});
//   sim.add_target({.key = "openai/gpt-4o-mini", .errors = {{modelux::ErrorKind::rate_limited, 0.3}}});
//   auto report = sim.run(policy, 5000);
//   assert(report.success_rate > 0.99);
//
// Threading: a Simulator is single-threaded; use one per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "modelux/budget.hpp"
#include "modelux/config.hpp"
#include "modelux/health.hpp"
#include "modelux/policy.hpp"

namespace modelux {

/// Log-normal latency: `median_ms` and the spread `sigma` (0 = constant). Sampled values are
/// clamped to [min_ms, max_ms].
struct LatencyDistribution {
  double median_ms = 300;
  double sigma = 0.3;
  double min_ms = 1;
  double max_ms = 600'000;
};

/// A period during which a target behaves worse (offsets from the simulation start).
struct DegradedWindow {
  Nanos from{0};
  Nanos to{0};
  double error_rate = 0.5;                     ///< extra failure probability
  ErrorKind error = ErrorKind::server_error;  ///< kind of those failures
  double hang_probability = 0;                 ///< extra probability the call never answers
  double latency_factor = 1;                   ///< multiplies sampled latency
};

/// Recorded attempt outcomes of one target (replay fits these from stored traces). A call draws
/// one recorded outcome uniformly: the empirical joint distribution of outcome, latency and TTFT.
struct EmpiricalOutcomes {
  struct Sample {
    float latency_ms = 0;
    float ttft_ms = 0;                     ///< 0 when the attempt did not stream
    ErrorKind error = ErrorKind::internal;  ///< when !ok
    int status = 0;
    bool ok = false;
    /// The attempt hit its deadline: how long it would have taken is unknown (censored), so it
    /// never answers and any deadline the candidate sets passes (the conservative reading).
    bool timed_out = false;
  };
  std::vector<Sample> samples;
};

/// One simulated provider target.
struct SimTarget {
  std::string key;                                       ///< "provider/model"
  LatencyDistribution latency{};
  std::vector<std::pair<ErrorKind, double>> errors{};    ///< independent failure probabilities by kind
  double hang_probability = 0;                           ///< the call never answers (times out)
  std::vector<DegradedWindow> degraded{};
  /// Answers and their weights (ensembles, cascades); default: one answer "ok".
  std::vector<std::pair<std::string, double>> answers{};
  std::string finish_reason = "stop";
  std::int64_t completion_tokens = 60;
  std::optional<Millis> retry_after{};                   ///< on rate_limited errors
  /// When set (and not empty) every call draws a recorded outcome instead of using latency,
  /// errors, hang_probability and degraded windows.
  std::shared_ptr<const EmpiricalOutcomes> empirical{};
};

/// How requests are generated and driven.
struct SimOptions {
  std::uint64_t seed = 1;
  Nanos interarrival = std::chrono::milliseconds(50);  ///< virtual time between request starts
  bool use_health = true;        ///< feed a HealthRegistry and let the policy read it
  HealthConfig health{};
  bool keep_traces = true;       ///< keep every request's DecisionTrace in the report
  std::size_t end_users = 1000;  ///< requests cycle through end users "user-0".."user-N"
  /// Makes request i (default: a short user message).
  std::function<ChatRequest(std::size_t)> request{};
  /// Makes the context of request i (default: project "sim", end_user "user-<i % end_users>").
  std::function<CallContext(std::size_t)> context{};
  const BudgetView* budget = nullptr;
  // ---- Driving recorded traffic (replay) ----
  /// Virtual start time of request i as an offset from the run's start (non-decreasing in i);
  /// default: i * interarrival.
  std::function<Nanos(std::size_t)> arrival{};
  /// Completion tokens of request i when it is served (default: the target's completion_tokens).
  std::function<std::int64_t(std::size_t)> completion_tokens{};
  /// The clock the run drives (set to each event's time). Default: a private ManualClock.
  /// Pass one that a BudgetManager reads so budget windows follow the replayed time.
  ManualClock* clock = nullptr;
  /// Budgets reserved and settled per attempt through the executor's AttemptTracker (soft
  /// thresholds downgrade, hard caps block). Needs `config` for model prices.
  BudgetManager* budgets = nullptr;
  const Config* config = nullptr;   ///< providers and catalog for the attempt lifecycle
  /// Resolves a budget downgrade target ("@cheap"); null or unknown keeps the policy.
  std::function<std::shared_ptr<const Policy>(std::string_view)> lookup{};
  /// Request i's own recorded outcome for its `nth` call (0-based) to `target` ("provider/model"),
  /// or null to draw from the target's distribution. Replay pairs each stored request with
  /// what that target really did for it at that moment (counterfactual pairing).
  std::function<const EmpiricalOutcomes::Sample*(std::size_t i, std::string_view target, std::uint32_t nth)>
      recorded_outcome{};
  /// Called with the number of finished requests, every 1024 and at the end.
  std::function<void(std::size_t)> progress{};
};

/// One request's outcome.
struct SimRequest {
  bool ok = false;
  Target served;
  Error error;
  Nanos latency{0};
  std::size_t attempts = 0;
  std::string text;
  DecisionTrace trace;  ///< empty unless keep_traces
  Nanos ttft{0};        ///< of the served attempt (streams)
  double cost_usd = 0;  ///< every attempt
  bool failed_over = false;  ///< needed more than one attempt
  bool downgraded = false;   ///< a budget downgrade rerouted it
};

/// Aggregate of a run.
struct SimReport {
  std::size_t requests = 0;
  std::size_t succeeded = 0;
  double success_rate = 0;
  double p50_ms = 0, p95_ms = 0, p99_ms = 0, max_ms = 0;  ///< end-to-end, all requests
  double cost_usd = 0;                                     ///< every attempt, list prices
  std::size_t failovers = 0;                               ///< requests that needed >1 attempt
  std::size_t attempts = 0;
  std::map<std::string, std::size_t> routes;   ///< served target key → count
  std::map<std::string, std::size_t> errors;   ///< final error kind → count
  std::map<std::string, std::size_t> attempted;  ///< target key → attempts started
  std::vector<SimRequest> results;
  /// A few lines a person can read.
  std::string summary() const;
  Json to_json() const;
};

/// Runs policies against simulated providers on a virtual clock.
class Simulator {
 public:
  Simulator();
  ~Simulator();
  /// Adds or replaces a target. Unknown targets answer instantly and successfully (1 ms).
  void add_target(SimTarget t);
  /// Pushes `n` requests through `policy` (arrivals every `interarrival`, running concurrently
  /// in virtual time). Each run starts with fresh health and a fresh clock.
  SimReport run(std::shared_ptr<const Policy> policy, std::size_t n, const SimOptions& options = {});
  /// The health registry of the last run (breaker states, latencies).
  const HealthRegistry* health() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace modelux
