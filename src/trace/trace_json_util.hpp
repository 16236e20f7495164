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

namespace modelux {
struct DecisionTrace;
}

namespace modelux::trace_detail {

/// Appends the same JSON document as DecisionTrace::to_json().dump() (keys in declaration order
/// instead of sorted), written directly without building a Json tree: the writer thread's
/// serializer. Invalid UTF-8 is replaced by U+FFFD, as nlohmann's `replace` handler does.
void append_trace_json(std::string& out, const DecisionTrace& t);

}  // namespace modelux::trace_detail
