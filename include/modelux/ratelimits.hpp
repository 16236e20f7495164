// modelux ratelimits: a provider's rate-limit response headers as one snapshot, so health and
// routing can see remaining capacity before the provider answers 429.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "modelux/core.hpp"
#include "modelux/wire.hpp"

namespace modelux {

/// What a provider's headers said about its limits at the time of one response. Fields the
/// provider did not send stay empty. Reset times are durations from the response.
struct RateLimitSnapshot {
  std::optional<std::int64_t> remaining_requests, remaining_tokens, limit_requests, limit_tokens;
  std::optional<Millis> reset_requests, reset_tokens;

  bool empty() const noexcept {
    return !remaining_requests && !remaining_tokens && !limit_requests && !limit_tokens && !reset_requests &&
           !reset_tokens;
  }
};

/// Parses rate-limit headers for a codec family:
///   * OpenAI, Azure and every OpenAI-compatible provider (Groq...): `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`,
///     resets as Go-style durations ("6m0s", "12ms") or plain seconds.
///   * Anthropic: `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`; resets are RFC 3339
///     times, turned into durations against the response's `date` header (no `date`, no reset).
///     When the combined `tokens` headers are absent, `input-tokens` stands in for them.
/// Any other family falls back to the `x-ratelimit-*` names. Pure and thread-safe.
RateLimitSnapshot parse_rate_limits(std::string_view family, const Headers& h);

}  // namespace modelux
