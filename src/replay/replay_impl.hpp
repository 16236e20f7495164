// Internal: what routing and responses replay share (loading, the candidate, report helpers).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/policy.hpp"
#include "modelux/replay.hpp"
#include "modelux/trace.hpp"

namespace modelux {

class RouteTable;

namespace replay_detail {

/// The candidate compiled: its whole config (base + the slug's routing), the route table and
/// the slug's policy. The table points into `config`: keep them together.
struct CandidateSetup {
  std::unique_ptr<Config> config;
  std::shared_ptr<const RouteTable> table;
  std::shared_ptr<const Policy> policy;
  Json routing;
};

double ms(Nanos n);
/// One request as a replay side counts it, whether it comes from a stored trace summary
/// (routing mode) or a live decision trace (responses mode).
struct SideSample {
  bool ok = false;
  bool stream = false;
  std::string_view served_provider, served_model, error_kind;
  Nanos ttft{0}, total{0};
  std::size_t attempts = 0;
  bool downgraded = false;
  double cost_usd = 0;
};
/// Counts one request into `s` (requests, success, routes, errors, blocks, failovers,
/// downgrades, total-budget violations, cost) and its latency and TTFT samples.
void add_sample(ReplaySide& s, const SideSample& t, std::vector<double>& lat, std::vector<double>& ttft, Nanos total_budget);
double percentile(std::vector<double>& v, double q);
void finish_side(ReplaySide& s, std::vector<double>& lat, std::vector<double>& ttft);
Result<std::string> normalize_slug(std::string_view slug);
Result<Json> candidate_routing_of(const Json& candidate, const std::string& slug);
Result<CandidateSetup> build_candidate(const ReplayOptions& o, const std::string& slug);
/// The slug's traces in the window, oldest first. Clear errors for an empty store or a slug
/// with no traces.
Result<std::vector<TraceSummary>> load_traces(const ReplayOptions& o, const std::string& slug, TraceStore& store);

}  // namespace replay_detail

/// Responses mode (responses.cpp).
Result<ReplayReport> replay_responses(const ReplayOptions& o, const std::string& slug);

}  // namespace modelux
