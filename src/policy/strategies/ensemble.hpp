// `ensemble`: parallel fan-out to several members with per-member timeouts, aggregated by
// majority_vote, first_valid or weighted_vote. Each member's answer and vote is recorded in
// its AttemptRecord::vote and the outcome in DecisionTrace::aggregation.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {
Result<std::unique_ptr<Strategy>> compile_ensemble(const Json& cfg, const std::string& path, const PolicyResolver& r);
/// The normalised form answers are compared in: trimmed, lower-case, inner whitespace
/// collapsed, trailing punctuation dropped.
std::string normalize_answer(std::string_view text);
}  // namespace modelux
