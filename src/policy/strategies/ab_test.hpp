// `ab_test`: a percentage split between arms (models or configs), sticky per end user
// (fnv1a64 of salt + end user), the chosen arm recorded in DecisionTrace::ab_arm.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {
Result<std::unique_ptr<Strategy>> compile_ab_test(const Json& cfg, const std::string& path, const PolicyResolver& r);
}  // namespace modelux
