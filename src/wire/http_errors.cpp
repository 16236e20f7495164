// Shared classification of provider HTTP errors and retry hints.
#include <cctype>
#include <charconv>
#include <ctime>

#include "modelux/scrub.hpp"
#include "modelux/wire.hpp"

namespace modelux {

const std::string* find_header(const Headers& h, std::string_view name) noexcept {
  for (const auto& [k, v] : h) {
    if (k.size() != name.size()) continue;
    bool eq = true;
    for (std::size_t i = 0; i < k.size() && eq; ++i)
      eq = std::tolower(static_cast<unsigned char>(k[i])) == std::tolower(static_cast<unsigned char>(name[i]));
    if (eq) return &v;
  }
  return nullptr;
}

std::optional<Millis> parse_duration(std::string_view s) noexcept {
  // Go-style durations: sequence of <number><unit> with units h, m, s, ms, us, ns; a bare
  // number means seconds.
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (s.empty()) return std::nullopt;
  double total_ms = 0;
  bool any = false;
  while (!s.empty()) {
    std::size_t n = 0;
    while (n < s.size() && (std::isdigit(static_cast<unsigned char>(s[n])) || s[n] == '.')) ++n;
    if (n == 0) return std::nullopt;
    double v = 0;
    auto res = std::from_chars(s.data(), s.data() + n, v);
    if (res.ec != std::errc{}) return std::nullopt;
    s.remove_prefix(n);
    std::size_t u = 0;
    while (u < s.size() && std::isalpha(static_cast<unsigned char>(s[u]))) ++u;
    std::string_view unit = s.substr(0, u);
    s.remove_prefix(u);
    double mult;
    if (unit.empty() || unit == "s") mult = 1000;
    else if (unit == "ms") mult = 1;
    else if (unit == "m") mult = 60'000;
    else if (unit == "h") mult = 3'600'000;
    else if (unit == "us" || unit == "\xC2\xB5s") mult = 0.001;
    else if (unit == "ns") mult = 0.000001;
    else return std::nullopt;
    total_ms += v * mult;
    any = true;
    if (unit.empty() && !s.empty()) return std::nullopt;
  }
  if (!any || total_ms < 0 || total_ms > 1e12) return std::nullopt;
  return Millis{static_cast<std::int64_t>(total_ms + 0.5)};
}

namespace {
// RFC 7231 IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") → ms from now (clamped at 0).
std::optional<Millis> parse_http_date(const std::string& s) {
  std::tm tm{};
  char wd[4], mon[4];
  int day, year, h, m, sec;
  if (std::sscanf(s.c_str(), "%3s, %d %3s %d %d:%d:%d GMT", wd, &day, mon, &year, &h, &m, &sec) != 7)
    return std::nullopt;
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int mi = -1;
  for (int i = 0; i < 12; ++i)
    if (std::string_view(mon) == months[i]) mi = i;
  if (mi < 0) return std::nullopt;
  tm.tm_year = year - 1900;
  tm.tm_mon = mi;
  tm.tm_mday = day;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  std::time_t t = timegm(&tm);
  auto now = std::chrono::system_clock::now();
  auto d = std::chrono::system_clock::from_time_t(t) - now;
  auto ms = std::chrono::duration_cast<Millis>(d);
  return ms.count() < 0 ? Millis{0} : ms;
}
}  // namespace

Error classify_http_error(int status, const Headers& headers, std::string message) {
  Error e;
  e.status = status;
  e.message = std::move(message);
  scrub(e.message);  // upstream 401s echo the key they were sent
  if (status == 429) e.kind = ErrorKind::rate_limited;
  else if (status == 529 || status == 503) e.kind = ErrorKind::overloaded;
  else if (status == 408 || status == 504) e.kind = ErrorKind::timeout;
  else if (status >= 500) e.kind = ErrorKind::server_error;
  else if (status == 409) e.kind = ErrorKind::server_error;  // lock timeout: retryable
  else if (status == 401 || status == 403) e.kind = ErrorKind::auth;
  else if (status == 404) e.kind = ErrorKind::not_found;
  else if (status == 413) e.kind = ErrorKind::context_length;
  else if (status >= 400) e.kind = ErrorKind::bad_request;
  else e.kind = ErrorKind::malformed_response;

  // Retry hints, most precise first.
  if (const auto* v = find_header(headers, "retry-after-ms")) {
    double ms = 0;
    auto r = std::from_chars(v->data(), v->data() + v->size(), ms);
    if (r.ec == std::errc{} && ms >= 0) e.retry_after = Millis{static_cast<std::int64_t>(ms)};
  }
  if (!e.retry_after) {
    if (const auto* v = find_header(headers, "retry-after")) {
      if (auto d = parse_duration(*v)) e.retry_after = d;
      else if (auto hd = parse_http_date(*v)) e.retry_after = hd;
    }
  }
  if (!e.retry_after && e.kind == ErrorKind::rate_limited) {
    for (const char* h : {"x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"}) {
      if (const auto* v = find_header(headers, h)) {
        if (auto d = parse_duration(*v); d && (!e.retry_after || *d > *e.retry_after)) e.retry_after = d;
      }
    }
  }
  return e;
}

}  // namespace modelux
