// Internal helpers shared by the trace module's files.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "modelux/core.hpp"

namespace modelux::trace_detail {

/// "2026-01-01T00:00:00.123456Z" (UTC, microseconds).
std::string format_iso_time(WallTime t);
/// Parses the format above (fraction optional, 'Z' required); nullopt when malformed.
std::optional<WallTime> parse_iso_time(std::string_view s);

}  // namespace modelux::trace_detail
