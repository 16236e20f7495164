// Rate-limit header parsing (public: modelux/ratelimits.hpp) and the date parsing it needs.
#include "modelux/ratelimits.hpp"

#include <charconv>
#include <cstdio>

#include "wire/codecs.hpp"

namespace modelux {
namespace wire {
namespace {

// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

std::optional<std::int64_t> header_int(const Headers& h, std::string_view name) {
  const std::string* v = find_header(h, name);
  if (!v) return std::nullopt;
  std::int64_t out = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc{} || p != v->data() + v->size()) return std::nullopt;
  return out;
}

}  // namespace

std::optional<std::int64_t> parse_rfc3339_ms(std::string_view s) {
  int y, mo, d, h, mi, se;
  if (!digits(s, 0, 4, y) || s.size() < 19 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s, 11, 2, h) ||
      s[13] != ':' || !digits(s, 14, 2, mi) || s[16] != ':' || !digits(s, 17, 2, se))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return std::nullopt;
  std::size_t i = 19;
  std::int64_t frac_ms = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int scale = 100, n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (scale > 0) frac_ms += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
      ++n;
    }
    if (n == 0) return std::nullopt;
  }
  std::int64_t offset_min = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh, om;
    if (!digits(s, i + 1, 2, oh) || i + 3 >= s.size() || s[i + 3] != ':' || !digits(s, i + 4, 2, om))
      return std::nullopt;
    offset_min = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  std::int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset_min * 60;
  return secs * 1000 + frac_ms;
}

std::optional<std::int64_t> parse_http_date_ms(std::string_view s) {
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() != 29 || s[3] != ',' || s.substr(26) != "GMT") return std::nullopt;
  int d, y, h, mi, se;
  if (!digits(s, 5, 2, d) || !digits(s, 12, 4, y) || !digits(s, 17, 2, h) || !digits(s, 20, 2, mi) ||
      !digits(s, 23, 2, se))
    return std::nullopt;
  int mo = 0;
  for (int k = 0; k < 12; ++k)
    if (s.substr(8, 3) == kMonths[k]) mo = k + 1;
  if (mo == 0 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return std::nullopt;
  return (days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 + h * 3600 + mi * 60 + se) *
         1000;
}

namespace {
std::optional<Millis> anthropic_reset(const Headers& h, std::string_view name, std::optional<std::int64_t> now_ms) {
  if (!now_ms) return std::nullopt;
  const std::string* v = find_header(h, name);
  if (!v) return std::nullopt;
  auto at = parse_rfc3339_ms(*v);
  if (!at) return std::nullopt;
  return Millis{std::max<std::int64_t>(0, *at - *now_ms)};
}

std::optional<std::int64_t> response_date_ms(const Headers& h) {
  const std::string* d = find_header(h, "date");
  return d ? parse_http_date_ms(*d) : std::nullopt;
}
}  // namespace

std::optional<Millis> anthropic_reset_delay(const Headers& h) {
  auto now = response_date_ms(h);
  std::optional<Millis> best;
  for (auto name : {"anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
                    "anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-output-tokens-reset"}) {
    auto r = anthropic_reset(h, name, now);
    if (r && (!best || *r < *best)) best = r;
  }
  return best;
}

}  // namespace wire

RateLimitSnapshot parse_rate_limits(std::string_view family, const Headers& h) {
  RateLimitSnapshot s;
  if (family == "anthropic") {
    auto now = wire::response_date_ms(h);
    s.limit_requests = wire::header_int(h, "anthropic-ratelimit-requests-limit");
    s.remaining_requests = wire::header_int(h, "anthropic-ratelimit-requests-remaining");
    s.reset_requests = wire::anthropic_reset(h, "anthropic-ratelimit-requests-reset", now);
    std::string_view tok = find_header(h, "anthropic-ratelimit-tokens-limit") || find_header(h, "anthropic-ratelimit-tokens-remaining")
                               ? "tokens"
                               : "input-tokens";
    std::string base = "anthropic-ratelimit-" + std::string(tok);
    s.limit_tokens = wire::header_int(h, base + "-limit");
    s.remaining_tokens = wire::header_int(h, base + "-remaining");
    s.reset_tokens = wire::anthropic_reset(h, base + "-reset", now);
    return s;
  }
  s.limit_requests = wire::header_int(h, "x-ratelimit-limit-requests");
  s.limit_tokens = wire::header_int(h, "x-ratelimit-limit-tokens");
  s.remaining_requests = wire::header_int(h, "x-ratelimit-remaining-requests");
  s.remaining_tokens = wire::header_int(h, "x-ratelimit-remaining-tokens");
  if (const auto* v = find_header(h, "x-ratelimit-reset-requests")) s.reset_requests = parse_duration(*v);
  if (const auto* v = find_header(h, "x-ratelimit-reset-tokens")) s.reset_tokens = parse_duration(*v);
  return s;
}

}  // namespace modelux
