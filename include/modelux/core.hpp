// modelux core: errors, results, clocks, randomness, request ids.
//
// Everything that can fail at run time returns Result<T> = std::expected<T, Error>.
// All time flows through a Clock and all randomness through a seeded Random, so every
// routing behaviour can be reproduced on virtual time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

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

/// HTTP status a gateway should answer with for this kind (OpenAI conventions).
int http_status_for(ErrorKind kind) noexcept;

using Nanos = std::chrono::nanoseconds;
using Millis = std::chrono::milliseconds;
using Instant = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

/// Source of time. Monotonic `now()` for intervals and deadlines, `wall_now()` for timestamps.
/// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual Instant now() const noexcept = 0;
  virtual WallTime wall_now() const noexcept = 0;
};

/// The real clock.
class SteadyClock final : public Clock {
 public:
  Instant now() const noexcept override { return std::chrono::steady_clock::now(); }
  WallTime wall_now() const noexcept override { return std::chrono::system_clock::now(); }
  /// A process-wide instance.
  static SteadyClock& instance() noexcept;
};

/// A clock that moves only when told to. Used by tests, simulation and replay.
/// Thread-safe (atomic), so a simulated fleet may share it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(WallTime wall_start = WallTime{std::chrono::seconds{1'767'225'600}})
      : wall_start_(wall_start) {}
  Instant now() const noexcept override { return Instant{Nanos{offset_.load(std::memory_order_acquire)}}; }
  WallTime wall_now() const noexcept override {
    return wall_start_ + std::chrono::duration_cast<WallTime::duration>(Nanos{offset_.load()});
  }
  void advance(Nanos d) noexcept { offset_.fetch_add(d.count(), std::memory_order_acq_rel); }
  void set(Instant t) noexcept { offset_.store(t.time_since_epoch().count(), std::memory_order_release); }

 private:
  WallTime wall_start_;
  std::atomic<std::int64_t> offset_{1'000'000'000};  // start at 1 s so Instant{} means "unset"
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

/// A new request id ("req_" + 24 hex chars). Thread-safe.
std::string new_request_id();

/// True when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
/// above U+10FFFF). Every text that enters from the edge (header values, slugs, tags) is
/// checked with this one function. Thread-safe, allocation-free.
bool valid_utf8(std::string_view s) noexcept;

/// Library version ("0.1.0").
std::string_view version() noexcept;

}  // namespace modelux
