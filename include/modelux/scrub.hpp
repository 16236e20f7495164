// modelux scrub: the one scrubber for everything that leaves the process (client error
// bodies, every trace field, logs, admin responses). It removes, by value, every secret
// registered with it (provider keys at Router::create, modelux keys at proxy start and key
// creation), whatever their prefix, and also text shaped like a known credential (sk-…,
// sk-ant-…, AIza…, AKIA…/ASIA…, mlx-…, xai-…, gsk_…, "Bearer <token>"), the way CI systems
// mask every registered secret in job logs.
//
// Threading: thread-safe. scrub() loads an immutable snapshot (one atomic shared_ptr load)
// and never locks; add_secret() builds a new snapshot and swaps it in (writers serialize on a
// mutex). Registered secrets are never forgotten for the life of the process: a revoked key
// still must not appear in anything printed later.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace modelux {

/// What a removed secret is replaced with.
inline constexpr std::string_view kRedacted = "[redacted]";

/// Registers a secret to remove by value. Values shorter than 8 bytes are ignored (they would
/// erase ordinary words and are not credentials anyway). Idempotent.
void add_secret(std::string_view secret);
/// Number of distinct secrets registered (for tests and /metrics).
std::size_t secret_count() noexcept;

/// Removes every registered secret and every known key shape from `s` in place. Returns true
/// when something was replaced. Linear in s.size() (one Aho-Corasick pass for the registered
/// values, one pass for the shapes).
bool scrub(std::string& s);
/// Copying form of scrub().
std::string scrubbed(std::string_view s);

}  // namespace modelux
