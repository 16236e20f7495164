// modelux core: errors, results, clocks, randomness, request ids.
//
// Everything that can fail at run time returns Result<T> = std::expected<T, Error>.
// All time flows through a Clock and all randomness through a seeded Random, so every
// routing behaviour can be reproduced on virtual time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class any_io_executor;
}

namespace modelux {

/// Closed set of failure classes. Providers' statuses and bodies map onto these so that
/// `retry_on` classes mean the same thing for every provider.
enum class ErrorKind : std::uint8_t {
  bad_request,         ///< the caller's request is invalid (400)
  auth,                ///< bad or missing credentials (401/403)
  not_found,           ///< unknown model, route or resource (404)
  rate_limited,        ///< 429: retry later
  quota_exceeded,      ///< 429 insufficient_quota / daily quota: do not retry on this target
  server_error,        ///< 5xx
  overloaded,          ///< 529 / 503 overloaded
  timeout,             ///< attempt or total deadline passed
  connection,          ///< could not connect, reset, TLS failure
  context_length,      ///< prompt too long for the model
  content_filter,      ///< refused by the provider's safety system
  budget_exceeded,     ///< a spend cap blocks the request
  no_route,            ///< nothing left to try
  cancelled,           ///< the caller went away
  invalid_config,      ///< a routing config or config file is wrong (carries a JSON path)
  malformed_response,  ///< a provider answered with something we cannot decode
  stream_interrupted,  ///< a stream broke after it started
  unsupported,         ///< a request feature the target cannot honour
  io,                  ///< disk / database
  local_resource_exhausted,  ///< our own process ran out (fds, memory, queue slots): 503, retry later; never the provider's fault
  internal,            ///< a bug (keep last: tables are sized by it)
};

/// Stable snake_case name of a kind ("rate_limited").
std::string_view to_string(ErrorKind kind) noexcept;
/// Parses a kind name; nullopt for an unknown name.
std::optional<ErrorKind> error_kind_from_string(std::string_view name) noexcept;

/// A failure a person can act on.
struct Error {
  ErrorKind kind = ErrorKind::internal;
  std::string message;                            ///< human-readable, never contains secrets
  int status = 0;                                 ///< provider / HTTP status when there is one
  std::optional<std::chrono::milliseconds> retry_after;  ///< from retry-after headers
  std::string path;                               ///< JSON path of a bad field ("$.attempts[1].timeout_ms")
  std::string provider;                           ///< provider that produced it, if any
  std::string code;                               ///< provider error code/type when known
  /// The failure happened inside our process, not at the provider: fd or memory
  /// exhaustion, our own queueing, our own cancellation, a limit we enforce. Health never
  /// counts it against the target (no sample, no breaker trip, no bucket change); a
  /// fallback chain still fails over (another target may work), whatever retry_on says.
  bool local = false;

  /// "kind: message (at path)" for logs and exceptions.
  std::string describe() const;
};

template <class T>
using Result = std::expected<T, Error>;

/// Shorthand for returning an error: `return fail(ErrorKind::bad_request, "...");`
inline std::unexpected<Error> fail(ErrorKind kind, std::string message, std::string path = {}) {
  Error e;
  e.kind = kind;
  e.message = std::move(message);
  e.path = std::move(path);
  return std::unexpected<Error>(std::move(e));
}
inline std::unexpected<Error> fail(Error e) { return std::unexpected<Error>(std::move(e)); }

/// An Error value (not wrapped in unexpected); `local`: our own process failed, not the peer.
inline Error error_of(ErrorKind kind, std::string message, bool local = false) {
  Error e;
  e.kind = kind;
  e.message = std::move(message);
  e.local = local;
  return e;
}

/// HTTP status a gateway should answer with for this kind (OpenAI conventions).
int http_status_for(ErrorKind kind) noexcept;

using Nanos = std::chrono::nanoseconds;
using Millis = std::chrono::milliseconds;
using Instant = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

/// Wakes a thread blocked in Clock::sleep_until early (shutdown). Sticky: once stopped, every
/// later sleep returns at once. Thread-safe.
class StopSignal {
 public:
  void stop();
  bool stopped() const;

 private:
  friend class SteadyClock;
  friend class ManualClock;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
};

/// A one-shot timer on its Clock's time, made by Clock::make_timer for one executor. The
/// handler always runs on that executor, never inside async_wait_until() or cancel(): with
/// true when the clock reached the deadline, with false when the wait was cancelled (cancel(),
/// a new wait, or the timer's destruction). One pending wait at a time. Use it from its
/// executor only. For coroutines, `modelux::async_wait_until` (modelux/timer.hpp) awaits it.
class Timer {
 public:
  virtual ~Timer() = default;
  virtual void async_wait_until(Instant deadline, std::function<void(bool fired)> handler) = 0;
  /// Ends the pending wait, if any (its handler runs with false).
  virtual void cancel() noexcept = 0;
};

/// Source of time, and the timers that run on it (in the spirit of Envoy's Dispatcher, whose
/// timeSource() and createTimer() go together): every deadline in logic code is an Instant of
/// this clock and every wait is one of its timers, so the whole router runs unchanged on a
/// ManualClock (virtual time). Instants become real time only at the edges that wait on the
/// OS: the HTTP transport converts them once, on entry. Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  /// Monotonic time for intervals and deadlines.
  virtual Instant now() const noexcept = 0;
  /// Calendar time for timestamps.
  virtual WallTime wall_now() const noexcept = 0;
  /// A timer whose handlers run on `ex`. The clock must outlive it.
  virtual std::unique_ptr<Timer> make_timer(const boost::asio::any_io_executor& ex) const = 0;
  /// Blocks the calling (background) thread until `deadline` on this clock or until `stop` is
  /// signalled; true when stopped. Never call it on an I/O thread.
  virtual bool sleep_until(Instant deadline, StopSignal& stop) const = 0;
};

/// The real clock: asio steady_timer timers, condition-variable sleeps.
class SteadyClock final : public Clock {
 public:
  Instant now() const noexcept override { return std::chrono::steady_clock::now(); }
  WallTime wall_now() const noexcept override { return std::chrono::system_clock::now(); }
  std::unique_ptr<Timer> make_timer(const boost::asio::any_io_executor& ex) const override;
  bool sleep_until(Instant deadline, StopSignal& stop) const override;
  /// A process-wide instance.
  static SteadyClock& instance() noexcept;
};

/// A clock that moves only when told to (virtual time). Used by tests, simulation and replay.
/// advance()/set() move it and fire every timer that became due (their handlers are posted to
/// their executors, in deadline order) and wake the sleepers. A driver that owns the
/// io_context runs virtual time as: run every ready handler (`ioc.poll()`), then
/// `advance_to_next_timer()`, until the work is done: no sleeps, no real time.
/// Thread-safe (a simulated fleet may share it).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(WallTime wall_start = WallTime{std::chrono::seconds{1'767'225'600}})
      : wall_start_(wall_start) {}
  ManualClock(const ManualClock&) = delete;
  ManualClock& operator=(const ManualClock&) = delete;
  Instant now() const noexcept override { return Instant{Nanos{offset_.load(std::memory_order_acquire)}}; }
  WallTime wall_now() const noexcept override {
    return wall_start_ + std::chrono::duration_cast<WallTime::duration>(Nanos{offset_.load()});
  }
  std::unique_ptr<Timer> make_timer(const boost::asio::any_io_executor& ex) const override;
  bool sleep_until(Instant deadline, StopSignal& stop) const override;

  /// Moves time forward by `d` (negative is ignored) and fires what became due.
  void advance(Nanos d);
  /// Moves time to `t` (never backwards) and fires what became due.
  void set(Instant t);
  /// The earliest pending timer deadline, if any timer waits.
  std::optional<Instant> next_timer() const;
  /// Moves time to the earliest pending timer deadline (not backwards) and fires it; false
  /// when no timer waits.
  bool advance_to_next_timer();
  /// Timers waiting now.
  std::size_t pending_timers() const;

  struct TimerState;  // internal (core.cpp)

 private:
  void fire_due();

  WallTime wall_start_;
  std::atomic<std::int64_t> offset_{1'000'000'000};  // start at 1 s so Instant{} means "unset"
  mutable std::mutex mu_;                             // guards the two sets below
  mutable std::multimap<Instant, std::shared_ptr<TimerState>> timers_;
  mutable std::vector<StopSignal*> sleepers_;
};

/// Seeded pseudo-random generator (xoshiro256**, seeded through splitmix64).
/// Not thread-safe: one per session or per thread.
class Random {
 public:
  explicit Random(std::uint64_t seed = 0x6d6f64656c7578ULL) noexcept { reseed(seed); }
  void reseed(std::uint64_t seed) noexcept;
  std::uint64_t next_u64() noexcept;
  /// Uniform in [0, 1).
  double uniform() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  /// Uniform integer in [0, n). n must be > 0.
  std::uint64_t below(std::uint64_t n) noexcept { return next_u64() % n; }

 private:
  std::uint64_t s_[4]{};
};

/// 64-bit FNV-1a: stable across runs and platforms (sticky A/B arms, prompt fingerprints).
constexpr std::uint64_t fnv1a64(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ULL) noexcept {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// Cancels one request from any thread (the caller went away: a closed client connection, a
/// closed Python stream, Ctrl-C). The executor arms a hook that stops the request's upstream
/// I/O at once; the request ends with ErrorKind::cancelled and the trace says so.
/// Thread-safe.
class CancellationToken {
 public:
  /// Idempotent. Runs the armed hook once (it must not block).
  void cancel() noexcept;
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }
  /// For executors: `hook` runs on cancel(), or at once when already cancelled.
  void arm(std::function<void()> hook);
  /// After disarm() returns the hook is neither running nor going to run.
  void disarm() noexcept;

 private:
  std::mutex mu_;
  std::function<void()> hook_;
  std::atomic<bool> cancelled_{false};
};

/// A new request id ("req_" + 24 hex chars). Thread-safe. Ids made later sort after earlier
/// ones (16 hex digits of wall-clock microseconds and a sequence, then 8 random ones), which
/// keeps the trace store's id indexes append-only.
std::string new_request_id();

/// True when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
/// above U+10FFFF). Every text that enters from the edge (header values, slugs, tags) is
/// checked with this one function. Thread-safe, allocation-free.
bool valid_utf8(std::string_view s) noexcept;

/// Library version ("0.1.0").
std::string_view version() noexcept;

}  // namespace modelux
