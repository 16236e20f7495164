#include "modelux/core.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

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

void StopSignal::stop() {
  {
    std::lock_guard lk(mu_);
    stopped_ = true;
  }
  cv_.notify_all();
}

bool StopSignal::stopped() const {
  std::lock_guard lk(mu_);
  return stopped_;
}

namespace {

// The real timer: an asio steady_timer (SteadyClock instants are steady_clock instants).
class SteadyTimer final : public Timer {
 public:
  explicit SteadyTimer(const boost::asio::any_io_executor& ex) : t_(ex) {}
  void async_wait_until(Instant deadline, std::function<void(bool)> handler) override {
    t_.expires_at(deadline);  // cancels a pending wait (its handler runs with false)
    t_.async_wait([h = std::move(handler)](const boost::system::error_code& ec) { h(!ec); });
  }
  void cancel() noexcept override { t_.cancel(); }

 private:
  boost::asio::steady_timer t_;
};

}  // namespace

std::unique_ptr<Timer> SteadyClock::make_timer(const boost::asio::any_io_executor& ex) const {
  return std::make_unique<SteadyTimer>(ex);
}

bool SteadyClock::sleep_until(Instant deadline, StopSignal& stop) const {
  std::unique_lock lk(stop.mu_);
  return stop.cv_.wait_until(lk, deadline, [&] { return stop.stopped_; });
}

// One virtual timer's pending wait. Shared between the Timer and the clock's queue so either
// side may end it first; `mu` (the clock's) guards `handler` and `queued`.
struct ManualClock::TimerState {
  boost::asio::any_io_executor ex;
  std::function<void(bool)> handler;  // empty when no wait is pending
  std::multimap<Instant, std::shared_ptr<TimerState>>::iterator pos;
  bool queued = false;
};

namespace {

class ManualTimer final : public Timer {
 public:
  ManualTimer(const ManualClock& clock, std::mutex& mu, std::multimap<Instant, std::shared_ptr<ManualClock::TimerState>>& q,
              const boost::asio::any_io_executor& ex)
      : clock_(clock), mu_(mu), q_(q), st_(std::make_shared<ManualClock::TimerState>()) {
    st_->ex = ex;
  }
  ~ManualTimer() override { cancel(); }
  void async_wait_until(Instant deadline, std::function<void(bool)> handler) override {
    std::function<void(bool)> old;
    bool due = false;
    {
      std::lock_guard lk(mu_);
      old = unqueue();
      st_->handler = std::move(handler);
      if (deadline <= clock_.now()) {
        due = true;
      } else {
        st_->pos = q_.emplace(deadline, st_);
        st_->queued = true;
      }
    }
    if (old) boost::asio::post(st_->ex, [h = std::move(old)] { h(false); });
    if (due) {
      std::function<void(bool)> h;
      {
        std::lock_guard lk(mu_);
        h = std::move(st_->handler);
        st_->handler = nullptr;
      }
      if (h) boost::asio::post(st_->ex, [h = std::move(h)] { h(true); });
    }
  }
  void cancel() noexcept override {
    std::function<void(bool)> old;
    {
      std::lock_guard lk(mu_);
      old = unqueue();
    }
    if (old) boost::asio::post(st_->ex, [h = std::move(old)] { h(false); });
  }

 private:
  // Caller holds mu_. Takes the pending handler out of the queue.
  std::function<void(bool)> unqueue() {
    if (st_->queued) {
      q_.erase(st_->pos);
      st_->queued = false;
    }
    auto h = std::move(st_->handler);
    st_->handler = nullptr;
    return h;
  }

  const ManualClock& clock_;
  std::mutex& mu_;
  std::multimap<Instant, std::shared_ptr<ManualClock::TimerState>>& q_;
  std::shared_ptr<ManualClock::TimerState> st_;
};

}  // namespace

std::unique_ptr<Timer> ManualClock::make_timer(const boost::asio::any_io_executor& ex) const {
  return std::make_unique<ManualTimer>(*this, mu_, timers_, ex);
}

bool ManualClock::sleep_until(Instant deadline, StopSignal& stop) const {
  // Registered before taking stop.mu_ (advance() takes mu_, then each sleeper's mutex), and
  // the time is read under stop.mu_: an advance either happened before the check or notifies
  // the wait.
  {
    std::lock_guard lk(mu_);
    sleepers_.push_back(&stop);
  }
  bool stopped = false;
  {
    std::unique_lock lk(stop.mu_);
    while (!stop.stopped_ && now() < deadline) stop.cv_.wait(lk);
    stopped = stop.stopped_;
  }
  std::lock_guard lk(mu_);
  std::erase(sleepers_, &stop);
  return stopped;
}

void ManualClock::advance(Nanos d) {
  if (d.count() <= 0) return;
  offset_.fetch_add(d.count(), std::memory_order_acq_rel);
  fire_due();
}

void ManualClock::set(Instant t) {
  std::int64_t want = t.time_since_epoch().count();
  std::int64_t cur = offset_.load(std::memory_order_acquire);
  while (want > cur && !offset_.compare_exchange_weak(cur, want, std::memory_order_acq_rel)) {
  }
  fire_due();
}

std::optional<Instant> ManualClock::next_timer() const {
  std::lock_guard lk(mu_);
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first;
}

bool ManualClock::advance_to_next_timer() {
  auto t = next_timer();
  if (!t) return false;
  set(*t);
  return true;
}

std::size_t ManualClock::pending_timers() const {
  std::lock_guard lk(mu_);
  return timers_.size();
}

void ManualClock::fire_due() {
  std::vector<std::pair<boost::asio::any_io_executor, std::function<void(bool)>>> due;
  {
    std::lock_guard lk(mu_);
    const Instant t = now();
    while (!timers_.empty() && timers_.begin()->first <= t) {
      auto st = timers_.begin()->second;
      timers_.erase(timers_.begin());
      st->queued = false;
      due.emplace_back(st->ex, std::move(st->handler));
      st->handler = nullptr;
    }
    for (StopSignal* s : sleepers_) {
      std::lock_guard sl(s->mu_);  // see sleep_until: no wake-up is lost
      s->cv_.notify_all();
    }
  }
  for (auto& [ex, h] : due)
    if (h) boost::asio::post(ex, [h = std::move(h)] { h(true); });
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
  // Process-unique, time-ordered, with an unpredictable tail (ids are not secrets): the first
  // 16 hex digits are the wall clock in microseconds shifted left by 10 bits plus a sequence,
  // kept strictly increasing across threads; the last 8 are a random per-process base plus a
  // counter mixed through splitmix64. Time order is what keeps the trace store cheap: each
  // request id is a key of three B-tree indexes (traces, attempts, tags), and ascending keys
  // append to the last page of each, where random ones dirtied a different page per insert
  // (about 12 KB written per trace on a store of 100k traces; see docs/traces.md).
  static const std::uint64_t base = [] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }();
  static std::atomic<std::uint64_t> counter{0};
  static std::atomic<std::uint64_t> last{0};
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
  std::uint64_t want = static_cast<std::uint64_t>(us) << 10;
  std::uint64_t prev = last.load(std::memory_order_relaxed);
  std::uint64_t hi;
  do {
    hi = std::max(want, prev + 1);
  } while (!last.compare_exchange_weak(prev, hi, std::memory_order_relaxed));
  std::uint64_t x = base + counter.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t tail = splitmix64(x);
  // "req_%016llx%08llx", written by hand: snprintf was a tenth of the edge's per-request work.
  static constexpr char kHex[] = "0123456789abcdef";
  char buf[28] = {'r', 'e', 'q', '_'};
  for (int i = 0; i < 16; ++i) buf[4 + i] = kHex[(hi >> (60 - 4 * i)) & 15];
  for (int i = 0; i < 8; ++i) buf[20 + i] = kHex[(tail >> (28 - 4 * i)) & 15];
  return std::string(buf, sizeof buf);
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
    // ASCII eight bytes at a time (request bodies, headers and relayed events are mostly ASCII; byte by byte
    // this was ~3 instructions a byte on every request).
    while (end - p >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      if (w & 0x8080808080808080ULL) break;
      p += 8;
    }
    if (p == end) break;
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
