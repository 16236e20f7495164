// modelux health: per-target live stats (latency EWMA and windowed quantiles, error rates by
// class), circuit breakers (closed / open / half-open with probes, cool-down, progressive ramp
// back), token buckets fed by 429s and rate-limit headers, API key pools and the prompt-cache
// affinity table.
//
// Reads and claims are apart (Envoy's wouldRetry / shouldRetry): stats() and
// preferred_target() are the HealthView a routing decision reads and change nothing; the
// executor claims a half-open probe slot, a ramp share or a token with claim() just before it
// starts an attempt. A registry built with `enabled = false` (config `health.enabled: false`,
// for A/B comparisons) reports every target healthy, claims always succeed and observations
// are dropped.
//
// Local failures (Error::local: fd or memory exhaustion, our own queueing, our own
// cancellation, a limit we enforce) and cancelled or never-started attempts say nothing about
// the provider: observe() ignores them entirely.
//
// Threading: every method may be called from any thread. The hot-path calls — stats(),
// claim(), pick_key(), preferred_target() — never take a lock: targets live in a fixed-size
// open-addressed table of atomics and their published stats are atomics. Writers (observe*)
// serialise per target on a small mutex (never held across I/O). state_json() is an operator
// read and takes the per-target writer locks briefly.
//
// Time: nothing runs in the background. Every transition (open → half-open after the
// cool-down, bucket refill at reset, ramp progress) is evaluated lazily against the `now`
// passed in, so a ManualClock drives all of it in tests.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "modelux/views.hpp"

namespace modelux {

/// Tuning for HealthRegistry. The defaults suit interactive LLM traffic.
struct HealthConfig {
  /// false: health is off (every target healthy, claim() always true, observe*() no-ops).
  bool enabled = true;
  double ewma_alpha = 0.2;                       ///< weight of the newest latency sample
  Nanos window = std::chrono::seconds(60);       ///< error rate and quantile window
  int window_slices = 6;                         ///< the window rotates in this many slices (1..16)
  // circuit breaker
  int consecutive_failures = 5;                  ///< trip after this many failures in a row
  double failure_rate = 0.5;                     ///< ... or this failure fraction over the window
  int min_samples = 20;                          ///< ... once the window holds this many attempts
  Nanos cooldown = std::chrono::seconds(30);     ///< open for this long, doubling on each re-trip
  Nanos max_cooldown = std::chrono::minutes(5);
  Nanos probe_interval = std::chrono::seconds(1);  ///< half-open: at most one probe per interval
  int probe_successes = 2;                       ///< half-open → closed after this many good probes
  Nanos ramp = std::chrono::seconds(60);         ///< after closing, traffic ramps back over this
  double ramp_start = 0.1;                       ///< fraction admitted right after closing
  // rate limits
  /// A 429 without retry-after backs the target off this long, doubling with each further
  /// such 429 up to rate_limit_backoff_max and reset by a success. The backoff is our guess,
  /// so a route with nothing else to try still tries the target (TargetStats::backoff_only).
  /// A key of a pool sits out rate_limit_backoff.
  Nanos rate_limit_backoff = std::chrono::milliseconds(100);
  Nanos rate_limit_backoff_max = std::chrono::seconds(5);
  /// Key pools: a key the provider refuses (401/403) sits out this long. A revoked key does
  /// not come back by itself; the hour only lets a key that was fixed upstream return.
  Nanos rejected_key_sit_out = std::chrono::hours(1);
  // prompt-cache affinity
  Nanos cache_ttl = std::chrono::minutes(5);     ///< default provider prompt-cache TTL
};

/// Which failures count against a target's health (breaker, error rate). The caller's own
/// faults (bad_request, context_length, content_filter, cancelled, budget_exceeded) and our
/// own (local_resource_exhausted) do not, and 429s feed the token bucket instead of the
/// breaker.
bool counts_against_health(ErrorKind kind) noexcept;
/// Whether an attempt's outcome is observed at all: false for local failures (Error::local
/// or local_resource_exhausted) and cancellations. Those leave no sample, trip nothing and
/// touch no bucket. An attempt that never started (AttemptSkip) is not an AttemptResult and
/// never reaches health.
bool observable(const AttemptResult& r) noexcept;

/// Live health of every target "provider/model" (and key pools per provider).
class HealthRegistry final : public HealthView {
 public:
  explicit HealthRegistry(HealthConfig cfg = {});
  ~HealthRegistry() override;
  HealthRegistry(const HealthRegistry&) = delete;
  HealthRegistry& operator=(const HealthRegistry&) = delete;

  // ---- HealthView (lock-free, read-only) ----
  TargetStats stats(std::string_view target_key, Instant now) const override;
  std::string preferred_target(std::uint64_t fingerprint, Instant now) const override;

  // ---- claim (lock-free) ----
  /// Claims admission for one attempt on `target_key` starting now: the half-open probe slot
  /// (one per probe_interval), a share of the progressive ramp, a token of a known rate-limit
  /// bucket. The executor calls it just before starting an attempt whose plan says
  /// must_claim; false means "do not start it" (report an AttemptSkip). True for unknown
  /// targets and when health is disabled.
  bool claim(std::string_view target_key, Instant now);

  // ---- writers ----
  /// The executor calls this after every attempt on `target_key`. Ignores what is not
  /// observable(): local failures and cancellations.
  void observe(std::string_view target_key, const AttemptResult& r, Instant now);
  /// Parsed rate-limit headers (x-ratelimit-remaining-requests / -tokens, reset). A known
  /// remaining count becomes a token bucket that claim() draws from until `reset`.
  void observe_rate_limits(std::string_view target_key, std::optional<std::int64_t> remaining_requests,
                           std::optional<std::int64_t> remaining_tokens, Instant reset, Instant now);
  /// Forces a breaker open (operator action) until now + duration.
  void force_open(std::string_view target_key, Nanos duration, std::string why, Instant now);
  /// Records that `target_key` served a prompt whose prefix fingerprint is `fingerprint`;
  /// the provider's cache is assumed warm for `ttl` (0 = config default).
  void note_prefix(std::uint64_t fingerprint, std::string_view target_key, Instant now, Nanos ttl = Nanos{0});

  // ---- key pools ----
  /// Declares that `provider` has `keys` API keys (1..16). Call at configuration time.
  void set_key_pool(std::string_view provider, int keys);
  /// Picks a key index for the next call to `provider`: round-robin over keys that are not
  /// sitting out a 429; when every key sits out, the key back soonest among those sitting out
  /// only a backoff of ours (a 429 without retry-after); nullopt when every key sits out the
  /// provider's word (retry-after, quota, 401/403): then see key_retry_at().
  /// Rate limits are per key *and* model (a 429 on gpt-4o leaves the key serving gpt-4o-mini);
  /// a refused key (401/403) or a spent quota sits the key out for every model.
  std::optional<int> pick_key(std::string_view provider, std::string_view model, Instant now) const;
  /// When the earliest sitting-out key of `provider` comes back.
  Instant key_retry_at(std::string_view provider, std::string_view model, Instant now) const;
  /// Outcome of a call made with key `index`: a 429 sits the key out until its reset
  /// (retry_after, or the default reset).
  void observe_key(std::string_view provider, std::string_view model, int index, const AttemptResult& r, Instant now);

  /// Operator-readable state of every target: breaker state, why it opened, until when,
  /// latency and error stats, bucket state; and key pools.
  Json state_json(Instant now) const;

  const HealthConfig& config() const noexcept { return cfg_; }

  struct Impl;

 private:
  HealthConfig cfg_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace modelux
