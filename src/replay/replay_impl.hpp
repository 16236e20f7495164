// Internal: what routing and responses replay share (loading, the candidate, report helpers).
#pragma once

#include <memory>
#include <string>
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
