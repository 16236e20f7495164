// The list of strategies a config may name. One line per strategy; each lives in
// src/policy/strategies/<name>.{hpp,cpp}.
#include <array>
#include <utility>

#include "policy/strategies/ab_test.hpp"
#include "policy/strategies/cascade.hpp"

#include "policy/strategies/cost_optimized.hpp"
#include "policy/strategies/ensemble.hpp"
#include "policy/strategies/fallback.hpp"
#include "policy/strategies/latency_optimized.hpp"
#include "policy/strategies/rules.hpp"
#include "policy/strategies/single.hpp"
#include "policy/strategy.hpp"

namespace modelux {

namespace {
constexpr std::array<std::pair<std::string_view, StrategyCompiler>, 8> kStrategies = {{
    {"single", &compile_single},
    {"fallback", &compile_fallback},
    {"cost_optimized", &compile_cost_optimized},
    {"latency_optimized", &compile_latency_optimized},
    {"ensemble", &compile_ensemble},
    {"ab_test", &compile_ab_test},
    {"cascade", &compile_cascade},
    {"rules", &compile_rules},
}};
}  // namespace

StrategyCompiler find_strategy(std::string_view name) noexcept {
  for (const auto& [n, c] : kStrategies)
    if (n == name) return c;
  return nullptr;
}

std::vector<std::string_view> strategy_names() {
  std::vector<std::string_view> out;
  for (const auto& [n, c] : kStrategies) out.push_back(n);
  return out;
}

}  // namespace modelux
