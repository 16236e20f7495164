// `rules`: ordered `when` expressions (the rules DSL), each routing to a model, a config or an
// inline strategy; a required `default`.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {
Result<std::unique_ptr<Strategy>> compile_rules(const Json& cfg, const std::string& path, const PolicyResolver& r);
}  // namespace modelux
