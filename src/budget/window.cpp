// Time zones and calendar windows for budgets.
//
// g++ 12's libstdc++ has no chrono tzdb (locate_zone), so IANA zones are read directly from
// the TZif files the system ships: the 64-bit (v2+) transition table gives the UTC offset at
// any instant by binary search. Fixed offsets ("+02:00") need no file.
#include "budget/window.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

namespace modelux::budget_detail {

namespace {

using namespace std::chrono;

bool parse_fixed_offset(std::string_view s, seconds& out) {
  if (s.empty() || (s[0] != '+' && s[0] != '-')) return false;
  const int sign = s[0] == '-' ? -1 : 1;
  s.remove_prefix(1);
  std::string digits;
  for (char c : s) {
    if (c == ':') continue;
    if (c < '0' || c > '9') return false;
    digits += c;
  }
  int h = 0, m = 0;
  if (digits.size() == 2) {
    h = std::stoi(digits);
  } else if (digits.size() == 4) {
    h = std::stoi(digits.substr(0, 2));
    m = std::stoi(digits.substr(2, 2));
  } else {
    return false;
  }
  if (h > 14 || m > 59) return false;
  out = seconds{sign * (h * 3600 + m * 60)};
  return true;
}

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
std::int64_t be64(const unsigned char* p) {
  return static_cast<std::int64_t>((std::uint64_t{be32(p)} << 32) | be32(p + 4));
}

}  // namespace

Result<TimeZone> TimeZone::parse(std::string_view name) {
  TimeZone tz;
  if (name.empty() || name == "UTC" || name == "Z" || name == "GMT" || name == "Etc/UTC") return tz;
  std::string_view rest = name;
  if (rest.starts_with("UTC") || rest.starts_with("GMT")) rest.remove_prefix(3);
  if (parse_fixed_offset(rest, tz.fixed_)) return tz;
  if (name.find("..") != std::string_view::npos || name.front() == '/' ||
      name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") !=
          std::string_view::npos)
    return fail(ErrorKind::invalid_config, "unknown time zone '" + std::string(name) + "'");

  const char* dir = std::getenv("TZDIR");
  std::string file = std::string(dir && *dir ? dir : "/usr/share/zoneinfo") + "/" + std::string(name);
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return fail(ErrorKind::invalid_config, "unknown time zone '" + std::string(name) +
                                               "' (use UTC, a fixed offset like +02:00, or an IANA name)");
  std::vector<unsigned char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto bad = [&] { return fail(ErrorKind::invalid_config, "unreadable zoneinfo file for '" + std::string(name) + "'"); };
  if (b.size() < 44 || b[0] != 'T' || b[1] != 'Z' || b[2] != 'i' || b[3] != 'f') return bad();
  // Header: magic, version, 15 reserved, then isutcnt isstdcnt leapcnt timecnt typecnt charcnt.
  auto counts = [&](std::size_t at, std::uint32_t c[6]) {
    for (int i = 0; i < 6; ++i) c[i] = be32(&b[at + 20 + 4 * i]);
  };
  std::uint32_t c[6];
  counts(0, c);
  std::size_t pos = 44;
  std::size_t tsize = 4;
  if (b[4] >= '2') {  // skip the v1 block, read the 64-bit one
    pos += c[3] * 4 + c[3] + c[4] * 6 + c[5] + c[2] * 8 + c[1] + c[0];
    if (b.size() < pos + 44) return bad();
    counts(pos, c);
    pos += 44;
    tsize = 8;
  }
  const std::uint32_t timecnt = c[3], typecnt = c[4];
  if (typecnt == 0 || b.size() < pos + timecnt * tsize + timecnt + typecnt * 6) return bad();
  const unsigned char* times = &b[pos];
  const unsigned char* idx = times + timecnt * tsize;
  const unsigned char* types = idx + timecnt;
  auto type_offset = [&](std::size_t t) { return static_cast<std::int32_t>(be32(types + 6 * t)); };
  tz.initial_offset_ = type_offset(0);
  tz.fixed_ = seconds{tz.initial_offset_};
  for (std::uint32_t i = 0; i < timecnt; ++i) {
    std::int64_t t = tsize == 8 ? be64(times + 8 * i) : static_cast<std::int32_t>(be32(times + 4 * i));
    if (idx[i] >= typecnt) return bad();
    tz.transitions_.push_back(t);
    tz.offsets_.push_back(type_offset(idx[i]));
  }
  return tz;
}

seconds TimeZone::offset_at(SysSeconds t) const noexcept {
  if (transitions_.empty()) return fixed_;
  auto it = std::upper_bound(transitions_.begin(), transitions_.end(), t.time_since_epoch().count());
  if (it == transitions_.begin()) return seconds{initial_offset_};
  return seconds{offsets_[static_cast<std::size_t>(it - transitions_.begin() - 1)]};
}

SysSeconds TimeZone::to_utc(SysSeconds local) const noexcept {
  // Two fixed-point steps settle every real zone (offsets change at most once near midnight).
  auto off = offset_at(local);
  auto utc = local - off;
  auto off2 = offset_at(utc);
  if (off2 != off) {
    utc = local - off2;
    if (offset_at(utc) != off2) utc = local - std::min(off, off2);  // in a gap: just after it
  }
  return utc;
}

WindowBounds calendar_window(BudgetWindowKind kind, const TimeZone& tz, SysSeconds t) noexcept {
  const auto local = t + tz.offset_at(t);
  const auto ld = floor<days>(local);
  sys_days start = ld, end = ld + days{1};
  if (kind == BudgetWindowKind::weekly) {
    const weekday wd{ld};
    start = ld - days{wd.iso_encoding() - 1};
    end = start + days{7};
  } else if (kind == BudgetWindowKind::monthly) {
    const year_month_day ymd{ld};
    const year_month ym = ymd.year() / ymd.month();
    start = sys_days{ym / 1};
    end = sys_days{(ym + months{1}) / 1};
  }
  return {tz.to_utc(SysSeconds{start}), tz.to_utc(SysSeconds{end})};
}

std::string format_utc(SysSeconds t) {
  const auto d = floor<days>(t);
  const year_month_day ymd{d};
  const hh_mm_ss hms{t - d};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02ldZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long>(hms.hours().count()), static_cast<long>(hms.minutes().count()),
                static_cast<long>(hms.seconds().count()));
  return buf;
}

}  // namespace modelux::budget_detail
