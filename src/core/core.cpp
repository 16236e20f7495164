#include "modelux/core.hpp"

#include <array>
#include <atomic>
#include <cstdio>
#include <random>

namespace modelux {

namespace {
constexpr std::array<std::string_view, 21> kKindNames = {
    "bad_request",   "auth",          "not_found",        "rate_limited",       "quota_exceeded",
    "server_error",  "overloaded",    "timeout",          "connection",         "context_length",
    "content_filter", "budget_exceeded", "no_route",      "cancelled",          "invalid_config",
    "malformed_response", "stream_interrupted", "unsupported", "io",            "local_resource_exhausted",
    "internal",
};
}  // namespace

std::string_view to_string(ErrorKind kind) noexcept {
  auto i = static_cast<std::size_t>(kind);
  return i < kKindNames.size() ? kKindNames[i] : std::string_view{"internal"};
}

std::optional<ErrorKind> error_kind_from_string(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kKindNames.size(); ++i)
    if (kKindNames[i] == name) return static_cast<ErrorKind>(i);
  return std::nullopt;
}

std::string Error::describe() const {
  std::string s(to_string(kind));
  s += ": ";
  s += message;
  if (!path.empty()) {
    s += " (at ";
    s += path;
    s += ")";
  }
  return s;
}

int http_status_for(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::bad_request:
    case ErrorKind::context_length:
    case ErrorKind::unsupported:
    case ErrorKind::invalid_config:
    case ErrorKind::content_filter: return 400;
    case ErrorKind::auth: return 401;
    case ErrorKind::not_found: return 404;
    case ErrorKind::rate_limited:
    case ErrorKind::quota_exceeded:
    case ErrorKind::budget_exceeded: return 429;
    case ErrorKind::timeout: return 504;
    case ErrorKind::overloaded:
    case ErrorKind::local_resource_exhausted:
    case ErrorKind::no_route: return 503;
    case ErrorKind::cancelled: return 499;
    case ErrorKind::server_error:
    case ErrorKind::connection:
    case ErrorKind::malformed_response:
    case ErrorKind::stream_interrupted: return 502;
    case ErrorKind::io:
    case ErrorKind::internal: return 500;
  }
  return 500;
}

SteadyClock& SteadyClock::instance() noexcept {
  static SteadyClock c;
  return c;
}

namespace {
std::uint64_t splitmix64(std::uint64_t& x) noexcept {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Random::reseed(std::uint64_t seed) noexcept {
  for (auto& s : s_) s = splitmix64(seed);
}

std::uint64_t Random::next_u64() noexcept {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::string new_request_id() {
  // Process-unique, unpredictable enough for ids (not a secret): a random 64-bit prefix per
  // process plus an atomic counter mixed through splitmix64.
  static const std::uint64_t base = [] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }();
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t x = base + counter.fetch_add(1, std::memory_order_relaxed);
  std::uint64_t a = splitmix64(x);
  std::uint64_t b = splitmix64(x);
  char buf[32];
  std::snprintf(buf, sizeof buf, "req_%016llx%08llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b & 0xffffffffULL));
  return buf;
}

void CancellationToken::cancel() noexcept {
  std::lock_guard lk(mu_);
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  if (hook_) hook_();  // under the lock, so disarm() can promise the hook is not running
}

void CancellationToken::arm(std::function<void()> hook) {
  std::lock_guard lk(mu_);
  hook_ = std::move(hook);
  if (cancelled_.load(std::memory_order_acquire) && hook_) hook_();
}

void CancellationToken::disarm() noexcept {
  std::lock_guard lk(mu_);
  hook_ = nullptr;
}

std::string_view version() noexcept { return MODELUX_VERSION; }

bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t n;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) n = 2, lo = 0xA0;          // no overlong 3-byte forms
    else if (c == 0xED) n = 2, hi = 0x9F;          // no UTF-16 surrogates
    else if (c >= 0xE1 && c <= 0xEF) n = 2;
    else if (c == 0xF0) n = 3, lo = 0x90;          // no overlong 4-byte forms
    else if (c == 0xF4) n = 3, hi = 0x8F;          // nothing above U+10FFFF
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else return false;                             // 0x80..0xC1, 0xF5..0xFF
    if (static_cast<std::size_t>(end - p) <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (std::size_t k = 2; k <= n; ++k)
      if ((p[k] & 0xC0) != 0x80) return false;
    p += n + 1;
  }
  return true;
}

}  // namespace modelux
