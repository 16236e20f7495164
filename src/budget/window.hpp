// Budget windows: time zones and calendar window bounds (internal).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/budget.hpp"

namespace modelux::budget_detail {

using SysSeconds = std::chrono::sys_seconds;

/// A time zone: a fixed UTC offset, or an IANA zone read from the system's TZif files.
/// Immutable; safe to share.
class TimeZone {
 public:
  /// "UTC", "Z", "+02:00", "-0530", "UTC+01:00", or an IANA name ("Europe/Berlin").
  /// IANA zones come from $TZDIR or /usr/share/zoneinfo; after the file's last transition
  /// (2037 in "fat" files) the last offset is kept.
  static Result<TimeZone> parse(std::string_view name);
  static TimeZone utc() { return TimeZone{}; }

  /// UTC offset in force at `t`.
  std::chrono::seconds offset_at(SysSeconds t) const noexcept;
  /// The UTC instant of a local wall-clock time (for midnights; a local time inside a DST gap
  /// maps to the instant just after the gap).
  SysSeconds to_utc(SysSeconds local) const noexcept;

 private:
  std::chrono::seconds fixed_{0};
  std::vector<std::int64_t> transitions_;  ///< UTC seconds, ascending
  std::vector<std::int32_t> offsets_;      ///< offset in force from transitions_[i]
  std::int32_t initial_offset_ = 0;
};

/// [start, end) of the calendar window (daily / weekly ISO / monthly) containing `t`.
struct WindowBounds {
  SysSeconds start;
  SysSeconds end;
};
WindowBounds calendar_window(BudgetWindowKind kind, const TimeZone& tz, SysSeconds t) noexcept;

/// "2026-01-01T00:00:00Z"
std::string format_utc(SysSeconds t);

}  // namespace modelux::budget_detail
