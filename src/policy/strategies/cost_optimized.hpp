// `cost_optimized`: the cheapest model meeting a quality tier (optionally from an allowlist),
// priced from the request's estimated tokens and catalog list prices; fails over to the next
// cheapest like a fallback chain. A target holding the prompt prefix in its cache is priced
// at its cached-input rate, so prompt-cache affinity falls out of the price comparison.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {
Result<std::unique_ptr<Strategy>> compile_cost_optimized(const Json& cfg, const std::string& path,
                                                         const PolicyResolver& r);
}  // namespace modelux
