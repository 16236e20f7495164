// `latency_optimized`: the lowest live p50 among healthy candidates, with bounded exploration
// so stale or unmeasured candidates get re-measured; fails over down the ranking.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {
Result<std::unique_ptr<Strategy>> compile_latency_optimized(const Json& cfg, const std::string& path,
                                                            const PolicyResolver& r);
}  // namespace modelux
