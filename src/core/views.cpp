// Definitions for the shared vocabulary of modelux/views.hpp.
#include "modelux/views.hpp"

namespace modelux {

std::string CallContext::tag(std::string_view key) const {
  for (const auto& [k, v] : tags)
    if (k == key) return v;
  return {};
}

std::string_view to_string(BreakerState s) noexcept {
  switch (s) {
    case BreakerState::closed: return "closed";
    case BreakerState::open: return "open";
    case BreakerState::half_open: return "half_open";
  }
  return "closed";
}

std::string_view to_string(SkipReason r) noexcept {
  switch (r) {
    case SkipReason::not_admitted: return "not_admitted";
  }
  return "not_admitted";
}

}  // namespace modelux
