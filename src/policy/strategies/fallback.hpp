// `fallback`: an ordered chain of attempts with per-attempt timeouts, retry_on classes, a total
// budget bounding the whole request, jittered backoff for same-target retries and 429
// absorption per `on_rate_limit`.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {

Result<std::unique_ptr<Strategy>> compile_fallback(const Json& cfg, const std::string& path, const PolicyResolver& r);

/// Default retry_on: 429, 5xx, timeout, connection.
std::uint32_t default_retry_mask() noexcept;

}  // namespace modelux
