// modelux replay: stored traffic against a candidate config, with a side-by-side diff.
//
// Routing mode (the default; offline, no provider calls) reads the trace store, rebuilds each
// stored request's routing inputs (the slug, tags, end user, project, API key, token counts,
// stream flag and arrival time) and drives them through the candidate config on the Simulator,
// whose targets behave as FITTED from the same traces: every recorded attempt of a target is
// one sample of its empirical joint distribution of outcome (ok, 429, 5xx, timeout...),
// latency and TTFT. Targets the traces never saw get the Simulator's default behaviour and
// are flagged in the report. Requests arrive at their recorded (relative) times, so budgets
// are reserved and settled in time order and downgrades and blocks appear where they would
// have. Same store + candidate + seed = the same report.
//
// Responses mode re-sends the stored request bodies (needs tracing.capture_bodies) to the
// candidate's providers through a Router, with a concurrency limit and a cost cap, and
// compares each answer with the recorded one.
//
//   modelux::ReplayOptions o;
//   o.store_path = "modelux-traces.db";
//   o.slug = "production";
//   o.candidate = modelux::Json::parse(R"({"strategy":"single","model":"gpt-4o-mini"})");
//   auto report = modelux::replay(o);           // Result<ReplayReport>
//   std::cout << report->table();
//   auto verdict = modelux::evaluate_guard("success>=current,p95<=1.1*current", *report);
//
// Threading: replay() is a blocking call on the calling thread (responses mode runs its own
// io thread inside a Router); independent calls may run on different threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelux/config.hpp"
#include "modelux/core.hpp"

namespace modelux {

enum class ReplayMode : std::uint8_t { routing, responses };
std::string_view to_string(ReplayMode m) noexcept;
std::optional<ReplayMode> replay_mode_from_string(std::string_view s) noexcept;

/// One stored request's original and re-sent answer (responses mode), given to a scorer.
struct ResponsePair {
  std::string request_id;
  std::string request_body;   ///< as stored (redacted, capped)
  std::string recorded;       ///< the recorded answer's text
  std::string candidate;      ///< the candidate's answer text
};

struct ReplayOptions {
  std::string store_path = "modelux-traces.db";
  std::string slug;          ///< "production" or "@production"
  /// The candidate: a routing config for the slug ({"strategy": ...}) or a whole config
  /// document ({"routing": {...}, "budgets": [...], ...}) whose routing has the slug.
  Json candidate;
  /// Providers, catalog, budgets and the other slugs. Default: the embedded defaults.
  std::optional<Config> base;
  std::optional<WallTime> since;
  std::optional<WallTime> until;
  std::size_t limit = 50'000;  ///< the newest `limit` requests of the window (0 = all)
  ReplayMode mode = ReplayMode::routing;
  std::uint64_t seed = 1;
  bool keep_rows = true;       ///< one ReplayRow per request in the report
  /// Called with (done, total) while requests replay.
  std::function<void(std::size_t, std::size_t)> progress{};
  // ---- responses mode ----
  std::size_t concurrency = 4;   ///< requests in flight at once
  double cost_cap_usd = 1.0;     ///< stop sending once the candidate's spend reaches this
  /// Scores a pair (higher is better, e.g. an embedding similarity); nullopt = not scored.
  std::function<std::optional<double>(const ResponsePair&)> scorer{};
};

/// One side of the comparison (current = as recorded, candidate = as replayed).
struct ReplaySide {
  std::size_t requests = 0;
  std::size_t succeeded = 0;
  double success_rate = 0;
  std::map<std::string, std::size_t> errors;  ///< final error class → requests
  std::size_t failovers = 0;                  ///< requests that needed more than one attempt
  double failover_rate = 0;
  double p50_ms = 0, p95_ms = 0, p99_ms = 0;  ///< end-to-end latency, all requests
  double ttft_p50_ms = 0, ttft_p95_ms = 0, ttft_p99_ms = 0;  ///< streamed requests served
  std::size_t ttft_samples = 0;
  double cost_usd = 0;                        ///< every attempt
  double cost_per_request_usd = 0;
  std::map<std::string, std::size_t> routes;  ///< served "provider/model" → requests
  /// Requests whose end-to-end latency passed the routing config's total_budget_ms.
  std::size_t total_budget_violations = 0;
  std::size_t budget_downgrades = 0;          ///< rerouted by a soft spend threshold
  std::size_t budget_blocks = 0;              ///< failed with budget_exceeded
  Json to_json() const;
};

/// How one target's behaviour was fitted.
struct TargetFit {
  std::string target;          ///< "provider/model"
  std::size_t samples = 0;     ///< recorded attempts (0 = never seen: defaults, flagged)
  double ok_rate = 0;
  double rate_limited_rate = 0;
  double timeout_rate = 0;
  double error_rate = 0;       ///< other failures
  double p50_ms = 0, p95_ms = 0;
  bool fitted = false;         ///< false: the traces never saw it (defaults used)
  std::size_t attempted = 0;   ///< attempts the candidate made on it in the replay
};

/// One request, recorded vs replayed (the rows view; pandas takes a list of these as dicts).
struct ReplayRow {
  std::string request_id;
  WallTime time{};
  bool current_ok = false;
  std::string current_target;   ///< served "provider/model" ("" when failed)
  std::string current_error;
  double current_latency_ms = 0;
  double current_cost_usd = 0;
  bool candidate_ok = false;
  std::string candidate_target;
  std::string candidate_error;
  double candidate_latency_ms = 0;
  double candidate_ttft_ms = 0;
  double candidate_cost_usd = 0;
  std::size_t candidate_attempts = 0;
  bool candidate_downgraded = false;
  // responses mode
  std::optional<bool> exact_match;
  std::optional<bool> candidate_json_valid;
  std::optional<double> length_ratio;  ///< candidate length / recorded length
  std::optional<double> score;
  Json to_json() const;
};

/// Responses mode totals.
struct ResponsesSummary {
  std::size_t with_bodies = 0;   ///< stored requests that had a captured body
  std::size_t sent = 0;
  std::size_t skipped_cost_cap = 0;
  std::size_t exact_matches = 0;
  std::size_t json_valid_recorded = 0, json_valid_candidate = 0;
  double mean_length_ratio = 0;
  std::optional<double> mean_score;
  Json to_json() const;
};

struct ReplayReport {
  ReplayMode mode = ReplayMode::routing;
  std::string slug;             ///< "@production"
  std::string store;
  std::size_t traces = 0;       ///< stored requests replayed
  WallTime from{}, to{};        ///< first and last replayed request
  std::uint64_t seed = 1;
  ReplaySide current;           ///< as recorded
  ReplaySide candidate;         ///< as replayed
  std::vector<TargetFit> targets;
  std::vector<std::string> unfitted_targets;  ///< used by the candidate, never seen in traces
  std::vector<std::string> notes;             ///< what the replay had to assume
  ResponsesSummary responses;                 ///< responses mode only
  std::vector<ReplayRow> rows;
  double wall_seconds = 0;

  /// A metric by guard name ("success", "p95", "cost_per_request"...) of one side.
  std::optional<double> metric(std::string_view name, bool candidate_side) const;
  /// Every field, with a "delta" object (candidate - current).
  Json to_json() const;
  /// The terminal table: current | candidate | delta, then routes, fits and notes.
  std::string table() const;
};

/// Runs a replay. Errors a person can act on: an empty store, a slug with no traces (naming
/// the slugs the store has), a candidate that does not compile (with its JSON path), responses
/// mode on traces captured without bodies.
Result<ReplayReport> replay(const ReplayOptions& options);

// ---- Promotion guard ---------------------------------------------------------------------------

/// One clause of a guard: `metric op rhs`, rhs = number | current | k*current | current*k
/// (numbers may end in %: "99%" = 0.99).
struct GuardClause {
  std::string text;
  std::string metric;
  std::string op;           ///< ">=", "<=", ">", "<", "=="
  double factor = 1;        ///< relative: rhs = factor * current
  bool relative = false;
  double constant = 0;      ///< absolute: rhs = constant
};
struct GuardCheck {
  std::string clause;
  double candidate = 0;
  double bound = 0;
  bool passed = false;
};
struct GuardVerdict {
  bool passed = false;
  std::vector<GuardCheck> checks;
  std::string summary() const;
};
/// Parses "success>=current,p95<=1.1*current". Errors name the clause and what is wrong.
Result<std::vector<GuardClause>> parse_guard(std::string_view text);
/// Guard metric names, for help texts and errors.
const std::vector<std::string>& guard_metrics();
Result<GuardVerdict> evaluate_guard(std::string_view text, const ReplayReport& report);

// ---- Promotion -----------------------------------------------------------------------------------

/// Where a promoted candidate goes: a versioned config store with an audit log. The control
/// module's store implements it; replay only needs this much.
class ConfigPublisher {
 public:
  virtual ~ConfigPublisher() = default;
  /// Stores `config` as a new version of `slug` with an audit entry carrying `audit` (the
  /// replay report summary and the guard verdict). Returns the new version number.
  virtual Result<std::int64_t> publish(const std::string& slug, const Json& config, const Json& audit) = 0;
};

/// Evaluates `guard` on `report` and, when it passes, publishes the slug's candidate routing
/// config through `publisher`. A failed guard is an Error (kind bad_request) listing the
/// failing clauses; no publisher is an Error saying promotion needs the config store.
Result<std::int64_t> promote(const ReplayReport& report, const Json& candidate_routing, std::string_view guard,
                             ConfigPublisher* publisher);

/// The slug's routing config from a candidate document (a routing config itself, or a whole
/// config document's routing[slug]).
Result<Json> candidate_routing(const Json& candidate, std::string_view slug);

}  // namespace modelux
