// HealthRegistry: live stats, circuit breakers, token buckets, key pools, prompt affinity.
//
// Layout: targets live in a fixed-size open-addressed table of atomic pointers (inserted under
// a mutex, never removed), so a reader finds a target with a hash and a few atomic loads.
// Each target publishes its stats as atomics; writers rebuild them under a per-target mutex
// from a rotating window of slices (counts by error kind + a log-scale latency histogram).
// Quantiles come from the merged histogram: 144 buckets growing by 1.1x from 1 ms, so a
// quantile is exact to about ±5 %. The window's sums are kept as slices enter and leave it (a
// slice's histogram is added or subtracted once), so an observation costs a few comparisons and
// the quantile scans, not a merge of every slice (6 × 144 adds, 2% of a proxied request).
#include "modelux/health.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <mutex>
#include <vector>

namespace modelux {

namespace {

/// Short label for an error: "server_error (500)".
std::string error_label(const Error& e) {
  std::string s(to_string(e.kind));
  if (e.status) s += " (" + std::to_string(e.status) + ")";
  return s;
}

long long to_ms(Nanos d) noexcept { return std::chrono::duration_cast<Millis>(d).count(); }

constexpr std::size_t kSlots = 2048;  // power of two; up to ~1500 targets
constexpr std::size_t kAffinitySlots = 4096;
constexpr std::size_t kMaxProviders = 64;
constexpr int kMaxKeys = 16;
constexpr std::size_t kMaxPoolModels = 32;
constexpr int kBuckets = 144;  // 1.1x steps from 1 ms: up to ~10 min, quantiles within ±5 %
constexpr int kMaxSlices = 16;
constexpr std::size_t kKinds = static_cast<std::size_t>(ErrorKind::internal) + 1;

std::int64_t ns(Instant t) noexcept { return t.time_since_epoch().count(); }
Instant at(std::int64_t v) noexcept { return Instant{Nanos{v}}; }

int bucket_of(double ms) noexcept {
  if (ms < 1.0) return 0;
  int b = 1 + static_cast<int>(std::log(ms) / std::log(1.1));
  return std::clamp(b, 0, kBuckets - 1);
}
double bucket_value(int b) noexcept {
  if (b == 0) return 0.5;
  // geometric middle of [1.1^(b-1), 1.1^b)
  return std::pow(1.1, b - 0.5);
}

struct Slice {
  std::int64_t epoch = -1;
  std::uint32_t total = 0;
  std::uint32_t failures = 0;
  std::array<std::uint32_t, kKinds> kinds{};
  std::array<std::uint32_t, kBuckets> hist{};
};

}  // namespace

bool counts_against_health(ErrorKind k) noexcept {
  switch (k) {
    case ErrorKind::server_error:
    case ErrorKind::overloaded:
    case ErrorKind::timeout:
    case ErrorKind::connection:
    case ErrorKind::malformed_response:
    case ErrorKind::stream_interrupted:
    case ErrorKind::auth:  // a revoked key makes the target unusable just as well
    case ErrorKind::internal: return true;
    default: return false;
  }
}

bool observable(const AttemptResult& r) noexcept {
  if (r.answer) return true;
  const Error& e = r.answer.error();
  return !e.local && e.kind != ErrorKind::cancelled && e.kind != ErrorKind::local_resource_exhausted;
}

struct TargetHealth {
  explicit TargetHealth(std::string k) : key(std::move(k)) {}
  const std::string key;
  // published, read lock-free
  std::atomic<double> ewma_ms{0}, p50{0}, p95{0}, p99{0}, error_rate{0};
  std::atomic<std::int64_t> samples{0}, last_sample{0};
  std::atomic<std::uint8_t> state{static_cast<std::uint8_t>(BreakerState::closed)};
  std::atomic<std::int64_t> open_until{0};
  std::atomic<std::int64_t> next_probe_at{0};
  std::atomic<std::int64_t> ramp_from{0};  // 0 = no ramp in progress
  std::atomic<std::uint64_t> ramp_counter{0};
  std::atomic<std::int64_t> bucket_until{0};       // empty until (429 / remaining 0)
  std::atomic<std::int64_t> bucket_remaining{-1};  // -1: unknown
  std::atomic<std::int64_t> bucket_reset{0};
  std::atomic<std::int64_t> backoff_until{0};      // our backoff after 429s without retry-after
  std::atomic<std::int64_t> backoff_ns{0};         // its current length (0 = none)
  // writer-only, under mu
  mutable std::mutex mu;
  std::array<Slice, kMaxSlices> slices{};
  // The sums over the slices inside the window (observe() keeps them in step with `slices`).
  std::array<bool, kMaxSlices> counted{};
  std::uint64_t window_total = 0, window_failures = 0, window_samples = 0;  // samples: in window_hist
  std::array<std::uint64_t, kBuckets> window_hist{};
  int consecutive = 0;
  int half_open_ok = 0;
  int trips = 0;
  Nanos cooldown{0};
  std::string open_reason;
  std::int64_t opened_at = 0;
  std::string last_error;
};

/// Rate limits of one model on every key of a pool. Providers meter requests and tokens per
/// key *and* model (OpenAI, Anthropic, Gemini, Mistral): a key out of gpt-4o requests still
/// serves gpt-4o-mini, so a 429 sits the key out for that model only.
struct ModelKeys {
  std::atomic<std::uint64_t> model_hash{0};  // 0 = free slot; published after `model`
  std::string model;
  std::array<std::atomic<std::int64_t>, kMaxKeys> sit_out_until{};
  /// The key sits out only our own backoff (a 429 without retry-after): when every key sits
  /// out, such a key is still handed out rather than refusing the call.
  std::array<std::atomic<bool>, kMaxKeys> soft{};
};

struct KeyPool {
  explicit KeyPool(std::string p, int n) : provider(std::move(p)), keys(n) {}
  const std::string provider;
  std::atomic<int> keys;
  /// What holds for the key on every model: the provider refused it (401/403) or its quota
  /// (billing) is spent.
  std::array<std::atomic<std::int64_t>, kMaxKeys> sit_out_until{};
  std::array<std::atomic<std::uint64_t>, kMaxKeys> uses{};
  std::array<ModelKeys, kMaxPoolModels> models{};
  std::mutex insert_mu;
  mutable std::atomic<std::uint64_t> rr{0};

  static std::uint64_t hash_of(std::string_view model) noexcept { return fnv1a64(model) | 1; }
  /// The model's row, or nullptr when it has none yet (nothing sits out for it).
  const ModelKeys* find(std::string_view model) const noexcept {
    const std::uint64_t h = hash_of(model);
    for (const auto& m : models) {
      std::uint64_t mh = m.model_hash.load(std::memory_order_acquire);
      if (mh == 0) return nullptr;
      if (mh == h && m.model == model) return &m;
    }
    return nullptr;
  }
  /// The model's row, made on first use. More models than rows share the last row: a 429 on
  /// one of them then sits the key out for all of them, the safe side.
  ModelKeys& row(std::string_view model) {
    if (const ModelKeys* m = find(model)) return const_cast<ModelKeys&>(*m);
    std::lock_guard lk(insert_mu);
    if (const ModelKeys* m = find(model)) return const_cast<ModelKeys&>(*m);
    for (auto& m : models) {
      if (m.model_hash.load(std::memory_order_relaxed) != 0) continue;
      m.model = std::string(model);
      m.model_hash.store(hash_of(model), std::memory_order_release);
      return m;
    }
    return models.back();
  }
  /// When key `i` is back for `model` (the later of its key-wide and per-model sit-outs).
  std::int64_t until(const ModelKeys* m, int i) const noexcept {
    std::int64_t u = sit_out_until[i].load(std::memory_order_acquire);
    if (m) u = std::max(u, m->sit_out_until[i].load(std::memory_order_acquire));
    return u;
  }
  /// Whether key `i` sits out only our own backoff for `model`, not the provider's word.
  bool soft(const ModelKeys* m, int i, std::int64_t now) const noexcept {
    return sit_out_until[i].load(std::memory_order_acquire) <= now && m && m->soft[i].load(std::memory_order_relaxed);
  }
};

struct AffinitySlot {
  std::atomic<std::uint64_t> fp{0};
  std::atomic<TargetHealth*> target{nullptr};
  std::atomic<std::int64_t> expires{0};
};

struct HealthRegistry::Impl {
  std::array<std::atomic<TargetHealth*>, kSlots> slots{};
  std::mutex insert_mu;
  std::vector<std::unique_ptr<TargetHealth>> owned;
  std::array<std::atomic<KeyPool*>, kMaxProviders> pools{};
  std::vector<std::unique_ptr<KeyPool>> owned_pools;
  std::unique_ptr<std::array<AffinitySlot, kAffinitySlots>> affinity = std::make_unique<std::array<AffinitySlot, kAffinitySlots>>();

  TargetHealth* find(std::string_view key) const noexcept {
    std::size_t i = fnv1a64(key) & (kSlots - 1);
    for (std::size_t n = 0; n < kSlots; ++n, i = (i + 1) & (kSlots - 1)) {
      TargetHealth* t = slots[i].load(std::memory_order_acquire);
      if (!t) return nullptr;
      if (t->key == key) return t;
    }
    return nullptr;
  }
  TargetHealth* find_or_add(std::string_view key) {
    if (TargetHealth* t = find(key)) return t;
    std::lock_guard lk(insert_mu);
    if (TargetHealth* t = find(key)) return t;
    if (owned.size() >= kSlots * 3 / 4) return nullptr;  // table full: stop tracking new targets
    auto th = std::make_unique<TargetHealth>(std::string(key));
    std::size_t i = fnv1a64(key) & (kSlots - 1);
    while (slots[i].load(std::memory_order_relaxed)) i = (i + 1) & (kSlots - 1);
    TargetHealth* raw = th.get();
    owned.push_back(std::move(th));
    slots[i].store(raw, std::memory_order_release);
    return raw;
  }
  KeyPool* pool(std::string_view provider) const noexcept {
    for (const auto& p : pools) {
      KeyPool* kp = p.load(std::memory_order_acquire);
      if (!kp) return nullptr;
      if (kp->provider == provider) return kp;
    }
    return nullptr;
  }
};

HealthRegistry::HealthRegistry(HealthConfig cfg) : cfg_(cfg), impl_(std::make_unique<Impl>()) {
  cfg_.window_slices = std::clamp(cfg_.window_slices, 1, kMaxSlices);
  if (cfg_.window.count() <= 0) cfg_.window = std::chrono::seconds(60);
}
HealthRegistry::~HealthRegistry() = default;

namespace {

/// Breaker state as of `now`: an open breaker whose cool-down passed reads as half-open.
BreakerState effective_state(const TargetHealth& t, Instant now) noexcept {
  auto s = static_cast<BreakerState>(t.state.load(std::memory_order_acquire));
  if (s == BreakerState::open && ns(now) >= t.open_until.load(std::memory_order_acquire)) return BreakerState::half_open;
  return s;
}

}  // namespace

TargetStats HealthRegistry::stats(std::string_view key, Instant now) const {
  TargetStats s;
  if (!cfg_.enabled) return s;
  const TargetHealth* t = impl_->find(key);
  if (!t) return s;
  s.p50_ms = t->p50.load(std::memory_order_relaxed);
  s.p95_ms = t->p95.load(std::memory_order_relaxed);
  s.error_rate = t->error_rate.load(std::memory_order_relaxed);
  s.samples = t->samples.load(std::memory_order_relaxed);
  s.last_sample = at(t->last_sample.load(std::memory_order_relaxed));
  s.breaker = effective_state(*t, now);
  std::int64_t n = ns(now);
  if (s.breaker == BreakerState::open) {
    s.admits = false;
    s.retry_at = at(t->open_until.load(std::memory_order_relaxed));
    return s;
  }
  if (s.breaker == BreakerState::half_open) {
    std::int64_t probe = t->next_probe_at.load(std::memory_order_relaxed);
    if (n < probe) {
      s.admits = false;
      s.retry_at = at(probe);
      return s;
    }
  }
  std::int64_t until = t->bucket_until.load(std::memory_order_relaxed);
  if (n < until) {
    s.admits = false;
    s.retry_at = at(until);
    return s;
  }
  std::int64_t reset = t->bucket_reset.load(std::memory_order_relaxed);
  if (n < reset && t->bucket_remaining.load(std::memory_order_relaxed) == 0) {
    s.admits = false;
    s.retry_at = at(reset);
    return s;
  }
  std::int64_t backoff = t->backoff_until.load(std::memory_order_relaxed);
  if (n < backoff) {
    s.admits = false;
    s.backoff_only = true;
    s.retry_at = at(backoff);
  }
  return s;
}

bool HealthRegistry::claim(std::string_view key, Instant now) {
  if (!cfg_.enabled) return true;
  TargetHealth* t = impl_->find(key);
  if (!t) return true;
  TargetStats s = stats(key, now);
  if (!s.admits) return false;
  std::int64_t n = ns(now);
  if (s.breaker == BreakerState::half_open) {
    // One probe per probe_interval: whoever wins the CAS sends it.
    std::int64_t cur = t->next_probe_at.load(std::memory_order_acquire);
    if (n < cur) return false;
    return t->next_probe_at.compare_exchange_strong(cur, n + cfg_.probe_interval.count(), std::memory_order_acq_rel);
  }
  if (n < t->bucket_reset.load(std::memory_order_relaxed)) {
    std::int64_t rem = t->bucket_remaining.load(std::memory_order_relaxed);
    while (rem > 0 && !t->bucket_remaining.compare_exchange_weak(rem, rem - 1, std::memory_order_acq_rel)) {
    }
    if (rem == 0) return false;
  }
  std::int64_t from = t->ramp_from.load(std::memory_order_relaxed);
  if (from != 0 && n < from + cfg_.ramp.count()) {
    // Progressive ramp: admit fraction f of calls, spread evenly (floor((k+1)f) > floor(kf)).
    double f = cfg_.ramp_start + (1.0 - cfg_.ramp_start) * static_cast<double>(n - from) / cfg_.ramp.count();
    std::uint64_t k = t->ramp_counter.fetch_add(1, std::memory_order_relaxed);
    return std::floor((k + 1) * f) > std::floor(k * f);
  }
  return true;
}

void HealthRegistry::observe(std::string_view key, const AttemptResult& r, Instant now) {
  // Checked before the target is even added: a local failure leaves no trace at all.
  if (!cfg_.enabled || !observable(r)) return;
  TargetHealth* t = impl_->find_or_add(key);
  if (!t) return;
  std::lock_guard lk(t->mu);
  const std::int64_t n = ns(now);
  const std::int64_t slice_len = std::max<std::int64_t>(1, cfg_.window.count() / cfg_.window_slices);
  const std::int64_t epoch = n / slice_len;
  const std::int64_t oldest = epoch - cfg_.window_slices + 1;
  auto count = [&](std::size_t i, bool in) {
    const Slice& s = t->slices[i];
    std::uint64_t samples = 0;
    if (in) {
      t->window_total += s.total;
      t->window_failures += s.failures;
      for (int b = 0; b < kBuckets; ++b) {
        t->window_hist[static_cast<std::size_t>(b)] += s.hist[static_cast<std::size_t>(b)];
        samples += s.hist[static_cast<std::size_t>(b)];
      }
      t->window_samples += samples;
    } else {
      t->window_total -= s.total;
      t->window_failures -= s.failures;
      for (int b = 0; b < kBuckets; ++b) {
        t->window_hist[static_cast<std::size_t>(b)] -= s.hist[static_cast<std::size_t>(b)];
        samples += s.hist[static_cast<std::size_t>(b)];
      }
      t->window_samples -= samples;
    }
    t->counted[i] = in;
  };
  const auto at = static_cast<std::size_t>(epoch % cfg_.window_slices);
  Slice& sl = t->slices[at];
  if (sl.epoch != epoch) {
    if (t->counted[at]) count(at, false);  // its old content leaves the window with it
    sl = Slice{epoch};
  }
  // Slices that entered (this one) or left the window since the last observation.
  for (int i = 0; i < cfg_.window_slices; ++i) {
    const auto ix = static_cast<std::size_t>(i);
    const bool in = t->slices[ix].epoch >= oldest && t->slices[ix].epoch <= epoch;
    if (in != t->counted[ix]) count(ix, in);
  }
  const Error* err = r.answer ? nullptr : &r.answer.error();
  const bool failure = err && counts_against_health(err->kind);
  ++sl.total;
  ++t->window_total;
  if (err) ++sl.kinds[static_cast<std::size_t>(err->kind)];
  if (failure) ++sl.failures, ++t->window_failures;
  if (!err) {
    double ms = std::chrono::duration<double, std::milli>(r.latency).count();
    const auto bucket = static_cast<std::size_t>(bucket_of(ms));
    ++sl.hist[bucket];
    ++t->window_hist[bucket];
    ++t->window_samples;
    double e = t->ewma_ms.load(std::memory_order_relaxed);
    t->ewma_ms.store(e == 0 ? ms : e + cfg_.ewma_alpha * (ms - e), std::memory_order_relaxed);
    t->samples.fetch_add(1, std::memory_order_relaxed);
    t->last_sample.store(n, std::memory_order_relaxed);
  }

  // Rate limits feed the token bucket, not the breaker. The provider's retry-after (or a
  // quota error's minute) is its word and empties the bucket until then. A 429 without one
  // is met with a short backoff of our own that doubles with each further such 429 and is
  // reset by a success: proportionate to how hard the target pushes back (one stray 429 in
  // a busy stream costs 100 ms, not a second of no_route).
  if (err && (err->kind == ErrorKind::rate_limited || err->kind == ErrorKind::quota_exceeded)) {
    if (err->retry_after || err->kind == ErrorKind::quota_exceeded) {
      Nanos wait = err->retry_after ? Nanos{*err->retry_after} : Nanos{std::chrono::seconds(60)};
      std::int64_t until = n + wait.count();
      if (until > t->bucket_until.load(std::memory_order_relaxed)) t->bucket_until.store(until, std::memory_order_release);
    } else {
      std::int64_t cur = t->backoff_ns.load(std::memory_order_relaxed);
      std::int64_t next = cur == 0 ? cfg_.rate_limit_backoff.count()
                                   : std::min<std::int64_t>(cur * 2, cfg_.rate_limit_backoff_max.count());
      t->backoff_ns.store(next, std::memory_order_relaxed);
      t->backoff_until.store(n + next, std::memory_order_release);
    }
  } else if (!err) {
    t->backoff_ns.store(0, std::memory_order_relaxed);
  }

  // Window aggregates → published stats.
  const std::uint64_t total = t->window_total, failures = t->window_failures;
  const std::array<std::uint64_t, kBuckets>& hist = t->window_hist;
  const std::uint64_t hn = t->window_samples;
  if (hn) {
    // p50, p95 and p99 in one pass: the first bucket where the running count reaches each rank.
    const std::array<double, 3> qs{0.50, 0.95, 0.99};
    std::array<double, 3> at{};
    std::array<std::uint64_t, 3> rank{};
    for (std::size_t k = 0; k < qs.size(); ++k) rank[k] = static_cast<std::uint64_t>(std::ceil(qs[k] * hn));
    std::size_t found = 0;
    std::uint64_t acc = 0;
    for (int b = 0; b < kBuckets && found < qs.size(); ++b) {
      acc += hist[static_cast<std::size_t>(b)];
      while (found < qs.size() && acc >= rank[found]) at[found++] = bucket_value(b);
    }
    for (; found < qs.size(); ++found) at[found] = bucket_value(kBuckets - 1);
    t->p50.store(at[0], std::memory_order_relaxed);
    t->p95.store(at[1], std::memory_order_relaxed);
    t->p99.store(at[2], std::memory_order_relaxed);
  }
  t->error_rate.store(total ? static_cast<double>(failures) / total : 0.0, std::memory_order_relaxed);
  if (err) t->last_error = error_label(*err);

  // Breaker transitions.
  auto trip = [&](std::string why) {
    t->trips++;
    t->cooldown = t->cooldown.count() == 0 ? cfg_.cooldown : std::min(t->cooldown * 2, cfg_.max_cooldown);
    t->open_reason = std::move(why);
    t->opened_at = n;
    t->half_open_ok = 0;
    t->consecutive = 0;
    t->ramp_from.store(0, std::memory_order_relaxed);
    t->open_until.store(n + t->cooldown.count(), std::memory_order_release);
    t->next_probe_at.store(n + t->cooldown.count(), std::memory_order_release);
    t->state.store(static_cast<std::uint8_t>(BreakerState::open), std::memory_order_release);
  };
  BreakerState st = effective_state(*t, now);
  if (st == BreakerState::open) return;  // late results from before the trip change nothing
  if (st == BreakerState::half_open) {
    if (failure) {
      trip("probe failed: " + error_label(*err));
    } else if (!err && ++t->half_open_ok >= cfg_.probe_successes) {
      t->state.store(static_cast<std::uint8_t>(BreakerState::closed), std::memory_order_release);
      t->ramp_counter.store(0, std::memory_order_relaxed);
      t->ramp_from.store(n, std::memory_order_release);
      t->consecutive = 0;
      t->cooldown = Nanos{0};
      t->open_reason.clear();
    }
    return;
  }
  if (failure) {
    ++t->consecutive;
    if (t->consecutive >= cfg_.consecutive_failures) {
      trip(std::to_string(t->consecutive) + " consecutive failures (last: " + error_label(*err) + ")");
    } else if (total >= static_cast<std::uint64_t>(cfg_.min_samples) &&
               static_cast<double>(failures) / total >= cfg_.failure_rate) {
      trip("failure rate " + std::to_string(static_cast<int>(100.0 * failures / total)) + "% over " +
           std::to_string(total) + " attempts (last: " + error_label(*err) + ")");
    }
  } else if (!err) {
    t->consecutive = 0;
  }
}

void HealthRegistry::observe_rate_limits(std::string_view key, std::optional<std::int64_t> remaining_requests,
                                         std::optional<std::int64_t> remaining_tokens, Instant reset, Instant now) {
  if (!cfg_.enabled) return;
  TargetHealth* t = impl_->find_or_add(key);
  if (!t || reset <= now) return;
  std::lock_guard lk(t->mu);
  std::int64_t rem = -1;
  if (remaining_requests) rem = std::max<std::int64_t>(0, *remaining_requests);
  if (remaining_tokens && *remaining_tokens <= 0) rem = 0;
  if (rem < 0) return;
  t->bucket_remaining.store(rem, std::memory_order_relaxed);
  t->bucket_reset.store(ns(reset), std::memory_order_release);
}

void HealthRegistry::force_open(std::string_view key, Nanos duration, std::string why, Instant now) {
  if (!cfg_.enabled) return;  // nothing reads breakers while health is off
  TargetHealth* t = impl_->find_or_add(key);
  if (!t) return;
  std::lock_guard lk(t->mu);
  t->trips++;
  t->cooldown = duration;
  t->open_reason = "forced by operator: " + why;
  t->opened_at = ns(now);
  t->half_open_ok = 0;
  t->open_until.store(ns(now) + duration.count(), std::memory_order_release);
  t->next_probe_at.store(ns(now) + duration.count(), std::memory_order_release);
  t->state.store(static_cast<std::uint8_t>(BreakerState::open), std::memory_order_release);
}

void HealthRegistry::note_prefix(std::uint64_t fp, std::string_view key, Instant now, Nanos ttl) {
  if (!cfg_.enabled) return;
  TargetHealth* t = impl_->find_or_add(key);
  if (!t) return;
  AffinitySlot& s = (*impl_->affinity)[fp & (kAffinitySlots - 1)];
  // A live entry for the same prefix on another target stays: requests that were in flight
  // when the holder was chosen elsewhere must not flip the preference back and forth.
  if (s.fp.load(std::memory_order_acquire) == fp && s.target.load(std::memory_order_relaxed) != t &&
      ns(now) < s.expires.load(std::memory_order_relaxed))
    return;
  s.fp.store(0, std::memory_order_release);  // invalidate while rewriting
  s.target.store(t, std::memory_order_relaxed);
  s.expires.store(ns(now) + (ttl.count() ? ttl : cfg_.cache_ttl).count(), std::memory_order_relaxed);
  s.fp.store(fp, std::memory_order_release);
}

std::string HealthRegistry::preferred_target(std::uint64_t fp, Instant now) const {
  if (!cfg_.enabled) return {};
  const AffinitySlot& s = (*impl_->affinity)[fp & (kAffinitySlots - 1)];
  if (fp == 0 || s.fp.load(std::memory_order_acquire) != fp) return {};
  TargetHealth* t = s.target.load(std::memory_order_relaxed);
  if (!t || ns(now) >= s.expires.load(std::memory_order_relaxed)) return {};
  return t->key;
}

// ---- key pools ----------------------------------------------------------------------------

void HealthRegistry::set_key_pool(std::string_view provider, int keys) {
  keys = std::clamp(keys, 1, kMaxKeys);
  if (KeyPool* p = impl_->pool(provider)) {
    p->keys.store(keys, std::memory_order_release);
    return;
  }
  std::lock_guard lk(impl_->insert_mu);
  for (auto& slot : impl_->pools) {
    if (slot.load(std::memory_order_acquire)) continue;
    auto kp = std::make_unique<KeyPool>(std::string(provider), keys);
    slot.store(kp.get(), std::memory_order_release);
    impl_->owned_pools.push_back(std::move(kp));
    return;
  }
}

std::optional<int> HealthRegistry::pick_key(std::string_view provider, std::string_view model, Instant now) const {
  KeyPool* p = impl_->pool(provider);
  if (!p) return 0;
  const ModelKeys* m = p->find(model);
  int n = p->keys.load(std::memory_order_acquire);
  std::uint64_t start = p->rr.fetch_add(1, std::memory_order_relaxed);
  for (int k = 0; k < n; ++k) {
    int i = static_cast<int>((start + k) % n);
    if (p->until(m, i) <= ns(now)) {
      p->uses[i].fetch_add(1, std::memory_order_relaxed);
      return i;
    }
  }
  // Every key sits out. Keys that only sit out our guess (429 without retry-after) are still
  // better than refusing: the one back soonest is handed out.
  int best = -1;
  std::int64_t best_until = INT64_MAX;
  for (int i = 0; i < n; ++i) {
    std::int64_t u = p->until(m, i);
    if (p->soft(m, i, ns(now)) && u < best_until) best = i, best_until = u;
  }
  if (best >= 0) {
    p->uses[best].fetch_add(1, std::memory_order_relaxed);
    return best;
  }
  return std::nullopt;
}

Instant HealthRegistry::key_retry_at(std::string_view provider, std::string_view model, Instant now) const {
  KeyPool* p = impl_->pool(provider);
  if (!p) return now;
  const ModelKeys* m = p->find(model);
  std::int64_t best = INT64_MAX;
  int n = p->keys.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) best = std::min(best, p->until(m, i));
  return at(std::max(best, ns(now)));
}

void HealthRegistry::observe_key(std::string_view provider, std::string_view model, int index, const AttemptResult& r,
                                 Instant now) {
  if (!cfg_.enabled || !observable(r)) return;
  KeyPool* p = impl_->pool(provider);
  if (!p || index < 0 || index >= p->keys.load()) return;
  if (r.answer) return;
  const Error& e = r.answer.error();
  if (e.kind == ErrorKind::auth || e.kind == ErrorKind::quota_exceeded) {
    // The provider refused this key (revoked, wrong project) or its quota is spent: every
    // request on it would fail the same way whatever the model, so it leaves the pool and
    // the other keys carry the traffic. A refused key does not come back by itself.
    Nanos wait = e.kind == ErrorKind::auth ? cfg_.rejected_key_sit_out
                                           : (e.retry_after ? Nanos{*e.retry_after} : Nanos{std::chrono::seconds(60)});
    p->sit_out_until[index].store(ns(now) + wait.count(), std::memory_order_release);
    return;
  }
  if (e.kind != ErrorKind::rate_limited) return;
  // A rate limit is the key's limit on this model: the key keeps serving other models.
  ModelKeys& m = p->row(model);
  Nanos wait = e.retry_after ? Nanos{*e.retry_after} : cfg_.rate_limit_backoff;
  m.soft[index].store(!e.retry_after, std::memory_order_relaxed);
  m.sit_out_until[index].store(ns(now) + wait.count(), std::memory_order_release);
}

// ---- operator view --------------------------------------------------------------------------

Json HealthRegistry::state_json(Instant now) const {
  Json targets = Json::array();
  for (const auto& slot : impl_->slots) {
    TargetHealth* t = slot.load(std::memory_order_acquire);
    if (!t) continue;
    TargetStats s = stats(t->key, now);
    std::lock_guard lk(t->mu);
    Json j = {{"target", t->key},
              {"breaker", std::string(to_string(s.breaker))},
              {"admits", s.admits},
              {"p50_ms", s.p50_ms},
              {"p95_ms", s.p95_ms},
              {"p99_ms", t->p99.load()},
              {"ewma_ms", t->ewma_ms.load()},
              {"error_rate", s.error_rate},
              {"samples", s.samples},
              {"trips", t->trips}};
    if (s.breaker != BreakerState::closed) {
      j["why_open"] = t->open_reason;
      j["open_for_ms"] = to_ms(now - at(t->opened_at));
      j["until_ms"] = std::max<long long>(0, to_ms(at(t->open_until.load()) - now));
    }
    if (!t->last_error.empty()) j["last_error"] = t->last_error;
    if (s.retry_at > now) j["retry_in_ms"] = to_ms(s.retry_at - now);
    if (std::int64_t b = t->backoff_ns.load(); b > 0) {
      // Visible: the current 429 backoff (grows while 429s without retry-after keep coming).
      j["rate_limit_backoff_ms"] = to_ms(Nanos{b});
      if (s.backoff_only) j["backing_off"] = true;
    }
    std::int64_t from = t->ramp_from.load();
    if (from && ns(now) < from + cfg_.ramp.count())
      j["ramp"] = cfg_.ramp_start + (1.0 - cfg_.ramp_start) * static_cast<double>(ns(now) - from) / cfg_.ramp.count();
    targets.push_back(std::move(j));
  }
  Json pools = Json::array();
  for (const auto& slot : impl_->pools) {
    KeyPool* p = slot.load(std::memory_order_acquire);
    if (!p) break;
    Json keys = Json::array();
    for (int i = 0; i < p->keys.load(); ++i) {
      std::int64_t until = p->sit_out_until[i].load();
      Json k = {{"index", i}, {"uses", p->uses[i].load()}};
      if (until > ns(now)) k["sits_out_ms"] = to_ms(at(until) - now);
      // Per-model sit-outs (rate limits): {"gpt-4o": 2950}.
      Json per_model = Json::object();
      for (const auto& m : p->models) {
        if (m.model_hash.load(std::memory_order_acquire) == 0) break;
        std::int64_t mu = m.sit_out_until[i].load();
        if (mu > ns(now)) per_model[m.model] = to_ms(at(mu) - now);
      }
      if (!per_model.empty()) k["rate_limited_ms"] = std::move(per_model);
      keys.push_back(std::move(k));
    }
    pools.push_back({{"provider", p->provider}, {"keys", std::move(keys)}});
  }
  return {{"enabled", cfg_.enabled}, {"targets", std::move(targets)}, {"key_pools", std::move(pools)}};
}

}  // namespace modelux
