// HealthRegistry: stats, breaker transitions, token buckets, key pools, affinity — on virtual time.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "modelux/health.hpp"

using namespace modelux;
using namespace std::chrono_literals;

namespace {
AttemptResult ok(Nanos latency) {
  AttemptResult r;
  r.answer = ChatResponse{};
  r.latency = latency;
  return r;
}
AttemptResult err(ErrorKind k, int status = 0, std::optional<Millis> retry_after = std::nullopt) {
  AttemptResult r;  // failed
  Error& e = r.answer.error();
  e.kind = k;
  e.status = status;
  e.retry_after = retry_after;
  return r;
}
constexpr std::string_view kT = "openai/gpt-4o";
}  // namespace

TEST_CASE("HealthRegistry: unknown targets read as healthy") {
  HealthRegistry h;
  ManualClock c;
  TargetStats s = h.stats("x/y", c.now());
  CHECK(s.admits);
  CHECK(s.breaker == BreakerState::closed);
  CHECK(s.samples == 0);
  CHECK(h.claim("x/y", c.now()));
}

TEST_CASE("HealthRegistry: latency quantiles and error rate over the window") {
  HealthRegistry h;
  ManualClock c;
  for (int i = 1; i <= 100; ++i) {
    h.observe(kT, ok(std::chrono::milliseconds(i * 10)), c.now());
    c.advance(10ms);
  }
  TargetStats s = h.stats(kT, c.now());
  CHECK(s.samples == 100);
  CHECK(s.p50_ms == doctest::Approx(500).epsilon(0.15));
  CHECK(s.p95_ms == doctest::Approx(950).epsilon(0.15));
  CHECK(s.error_rate == 0);
  for (int i = 0; i < 4; ++i) h.observe(kT, err(ErrorKind::server_error, 500), c.now());
  CHECK(h.stats(kT, c.now()).error_rate == doctest::Approx(4.0 / 104));
  SUBCASE("caller faults do not count against the target") {
    h.observe(kT, err(ErrorKind::bad_request, 400), c.now());
    CHECK(h.stats(kT, c.now()).error_rate == doctest::Approx(4.0 / 105));
  }
  SUBCASE("the window forgets") {
    c.advance(61s);
    h.observe(kT, ok(10ms), c.now());
    CHECK(h.stats(kT, c.now()).error_rate == 0);
    CHECK(h.stats(kT, c.now()).p50_ms < 15);
  }
}

TEST_CASE("HealthRegistry: the window's stats follow its slices as time moves, jumps and wraps") {
  // Against a reference that keeps every sample: the window is the slices (10 s each by
  // default) from the current one back 5, whatever happened in between.
  HealthRegistry h;
  ManualClock c;
  struct Sample {
    std::int64_t epoch;
    double ms;
    bool failed;
  };
  std::vector<Sample> seen;
  std::uint64_t rng = 12345;
  auto next = [&](std::uint64_t mod) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (rng >> 33) % mod;
  };
  const std::int64_t slice_ns = std::chrono::nanoseconds(std::chrono::seconds(10)).count();
  for (int i = 0; i < 600; ++i) {
    const std::uint64_t jump = next(100);
    if (jump < 60) c.advance(std::chrono::milliseconds(next(2000)));
    else if (jump < 95) c.advance(std::chrono::seconds(1 + next(25)));
    else c.advance(std::chrono::seconds(55 + next(30)));  // about a whole window
    const std::int64_t epoch = c.now().time_since_epoch().count() / slice_ns;
    const bool failed = next(4) == 0;
    const double ms = 2.0 + static_cast<double>(next(2000));
    if (failed) h.observe(kT, err(ErrorKind::server_error, 500), c.now());
    else h.observe(kT, ok(std::chrono::microseconds(static_cast<std::int64_t>(ms * 1000))), c.now());
    seen.push_back({epoch, ms, failed});
    std::uint64_t total = 0, failures = 0;
    std::vector<double> lat;
    for (const Sample& x : seen)
      if (x.epoch >= epoch - 5 && x.epoch <= epoch) {
        ++total;
        if (x.failed) ++failures;
        else lat.push_back(x.ms);
      }
    TargetStats st = h.stats(kT, c.now());
    CAPTURE(i);
    CHECK(st.error_rate == doctest::Approx(static_cast<double>(failures) / static_cast<double>(total)));
    if (!lat.empty()) {
      std::sort(lat.begin(), lat.end());
      auto at = [&](double q) { return lat[static_cast<std::size_t>(std::ceil(q * static_cast<double>(lat.size()))) - 1]; };
      CHECK(st.p50_ms == doctest::Approx(at(0.50)).epsilon(0.06));
      CHECK(st.p95_ms == doctest::Approx(at(0.95)).epsilon(0.06));
    }
  }
}

TEST_CASE("HealthRegistry: breaker opens, half-opens with probes, closes and ramps back") {
  HealthConfig cfg;
  cfg.consecutive_failures = 3;
  cfg.cooldown = 10s;
  cfg.probe_interval = 1s;
  cfg.probe_successes = 2;
  cfg.ramp = 10s;
  cfg.ramp_start = 0.1;
  HealthRegistry h(cfg);
  ManualClock c;
  h.observe(kT, err(ErrorKind::timeout), c.now());
  h.observe(kT, err(ErrorKind::server_error, 503), c.now());
  CHECK(h.stats(kT, c.now()).breaker == BreakerState::closed);
  h.observe(kT, err(ErrorKind::server_error, 500), c.now());
  TargetStats s = h.stats(kT, c.now());
  CHECK(s.breaker == BreakerState::open);
  CHECK_FALSE(s.admits);
  CHECK(s.retry_at == c.now() + 10s);
  Json st = h.state_json(c.now());
  CHECK(st["targets"][0]["why_open"] == "3 consecutive failures (last: server_error (500))");
  CHECK(st["targets"][0]["until_ms"] == 10000);

  c.advance(10s);
  s = h.stats(kT, c.now());
  CHECK(s.breaker == BreakerState::half_open);
  CHECK(s.admits);
  CHECK(h.claim(kT, c.now()));        // the probe
  CHECK_FALSE(h.claim(kT, c.now()));  // only one per probe interval
  SUBCASE("a failed probe re-opens with a doubled cool-down") {
    h.observe(kT, err(ErrorKind::timeout), c.now());
    s = h.stats(kT, c.now());
    CHECK(s.breaker == BreakerState::open);
    CHECK(s.retry_at == c.now() + 20s);
  }
  SUBCASE("good probes close it; traffic ramps back progressively") {
    h.observe(kT, ok(100ms), c.now());
    c.advance(1s);
    CHECK(h.claim(kT, c.now()));
    h.observe(kT, ok(100ms), c.now());
    CHECK(h.stats(kT, c.now()).breaker == BreakerState::closed);
    int admitted = 0;
    for (int i = 0; i < 1000; ++i) admitted += h.claim(kT, c.now());
    CHECK(admitted == doctest::Approx(100).epsilon(0.02));  // 10 % right after closing
    c.advance(5s);
    admitted = 0;
    for (int i = 0; i < 1000; ++i) admitted += h.claim(kT, c.now());
    CHECK(admitted == doctest::Approx(550).epsilon(0.02));  // halfway: 10 % + 45 %
    c.advance(5s);
    admitted = 0;
    for (int i = 0; i < 100; ++i) admitted += h.claim(kT, c.now());
    CHECK(admitted == 100);
  }
}

TEST_CASE("HealthRegistry: failure rate trips the breaker once the window has enough samples") {
  HealthConfig cfg;
  cfg.consecutive_failures = 1000;
  cfg.min_samples = 20;
  cfg.failure_rate = 0.5;
  HealthRegistry h(cfg);
  ManualClock c;
  for (int i = 0; i < 9; ++i) {
    h.observe(kT, ok(50ms), c.now());
    h.observe(kT, err(ErrorKind::connection), c.now());
  }
  CHECK(h.stats(kT, c.now()).breaker == BreakerState::closed);  // 18 samples
  h.observe(kT, ok(50ms), c.now());
  h.observe(kT, err(ErrorKind::connection), c.now());
  CHECK(h.stats(kT, c.now()).breaker == BreakerState::open);
}

TEST_CASE("HealthRegistry: 429s empty the token bucket until the reset, not the breaker") {
  HealthRegistry h;
  ManualClock c;
  for (int i = 0; i < 10; ++i) h.observe(kT, err(ErrorKind::rate_limited, 429, Millis{2000}), c.now());
  TargetStats s = h.stats(kT, c.now());
  CHECK(s.breaker == BreakerState::closed);
  CHECK_FALSE(s.admits);
  CHECK(s.retry_at == c.now() + 2s);
  c.advance(2s);
  CHECK(h.stats(kT, c.now()).admits);
}

TEST_CASE("HealthRegistry: rate-limit headers become a bucket claim() draws from") {
  HealthRegistry h;
  ManualClock c;
  h.observe_rate_limits(kT, 3, std::nullopt, c.now() + 5s, c.now());
  CHECK(h.claim(kT, c.now()));
  CHECK(h.claim(kT, c.now()));
  CHECK(h.claim(kT, c.now()));
  CHECK_FALSE(h.claim(kT, c.now()));
  TargetStats s = h.stats(kT, c.now());
  CHECK_FALSE(s.admits);
  CHECK(s.retry_at == c.now() + 5s);
  c.advance(5s);
  CHECK(h.claim(kT, c.now()));
}

TEST_CASE("HealthRegistry: key pools spread load and sit out a 429ing key") {
  HealthRegistry h;
  ManualClock c;
  h.set_key_pool("openai", 3);
  int uses[3] = {0, 0, 0};
  for (int i = 0; i < 300; ++i) ++uses[*h.pick_key("openai", "gpt-4o", c.now())];
  CHECK(uses[0] == 100);
  CHECK(uses[1] == 100);
  CHECK(uses[2] == 100);
  h.observe_key("openai", "gpt-4o", 1, err(ErrorKind::rate_limited, 429, Millis{3000}), c.now());
  for (int i = 0; i < 50; ++i) CHECK(*h.pick_key("openai", "gpt-4o", c.now()) != 1);
  h.observe_key("openai", "gpt-4o", 0, err(ErrorKind::rate_limited, 429, Millis{1000}), c.now());
  h.observe_key("openai", "gpt-4o", 2, err(ErrorKind::rate_limited, 429, Millis{1000}), c.now());
  CHECK_FALSE(h.pick_key("openai", "gpt-4o", c.now()).has_value());
  CHECK(h.key_retry_at("openai", "gpt-4o", c.now()) == c.now() + 1s);
  c.advance(3s);
  CHECK(h.pick_key("openai", "gpt-4o", c.now()).has_value());
  CHECK(h.state_json(c.now())["key_pools"][0]["provider"] == "openai");
}

TEST_CASE("HealthRegistry: a rate limit sits a key out for its model only, a refused key for every model") {
  HealthRegistry h;
  ManualClock c;
  h.set_key_pool("openai", 2);
  // Key 0 is out of gpt-4o requests for 30 s: gpt-4o goes to key 1 only ...
  h.observe_key("openai", "gpt-4o", 0, err(ErrorKind::rate_limited, 429, Millis{30000}), c.now());
  for (int i = 0; i < 20; ++i) CHECK(*h.pick_key("openai", "gpt-4o", c.now()) == 1);
  // ... while gpt-4o-mini still spreads over both keys.
  int mini[2] = {0, 0};
  for (int i = 0; i < 20; ++i) ++mini[*h.pick_key("openai", "gpt-4o-mini", c.now())];
  CHECK(mini[0] == 10);
  CHECK(mini[1] == 10);
  Json state = h.state_json(c.now())["key_pools"][0]["keys"][0];
  CHECK(state["rate_limited_ms"]["gpt-4o"].get<long long>() == 30000);
  CHECK_FALSE(state.contains("sits_out_ms"));
  // Both keys rate limited on gpt-4o: none is handed out, and the wait is the earlier reset.
  h.observe_key("openai", "gpt-4o", 1, err(ErrorKind::rate_limited, 429, Millis{5000}), c.now());
  CHECK_FALSE(h.pick_key("openai", "gpt-4o", c.now()).has_value());
  CHECK(h.key_retry_at("openai", "gpt-4o", c.now()) == c.now() + 5s);
  CHECK(h.key_retry_at("openai", "gpt-4o-mini", c.now()) == c.now());
  // A refused key (401) leaves the pool for every model.
  h.observe_key("openai", "gpt-4o-mini", 1, err(ErrorKind::auth, 401, std::nullopt), c.now());
  for (int i = 0; i < 20; ++i) CHECK(*h.pick_key("openai", "gpt-4o-mini", c.now()) == 0);
  for (int i = 0; i < 20; ++i) CHECK(*h.pick_key("openai", "o3", c.now()) == 0);
  // A spent quota likewise, for its retry-after.
  h.observe_key("openai", "o3", 0, err(ErrorKind::quota_exceeded, 429, Millis{2000}), c.now());
  CHECK_FALSE(h.pick_key("openai", "o3", c.now()).has_value());
  CHECK_FALSE(h.pick_key("openai", "gpt-4o-mini", c.now()).has_value());
  c.advance(2s);
  CHECK(*h.pick_key("openai", "o3", c.now()) == 0);
}

TEST_CASE("HealthRegistry: prompt-cache affinity holds for the TTL") {
  HealthRegistry h;
  ManualClock c;
  std::uint64_t fp = fnv1a64("You are a helpful assistant.");
  CHECK(h.preferred_target(fp, c.now()).empty());
  h.note_prefix(fp, "anthropic/claude-haiku-4-5", c.now(), 300s);
  CHECK(h.preferred_target(fp, c.now()) == "anthropic/claude-haiku-4-5");
  CHECK(h.preferred_target(fp + 1, c.now()).empty());
  h.note_prefix(fp, "openai/gpt-4o", c.now(), 300s);  // a live entry is not stolen
  CHECK(h.preferred_target(fp, c.now()) == "anthropic/claude-haiku-4-5");
  c.advance(301s);
  CHECK(h.preferred_target(fp, c.now()).empty());
}

namespace {
AttemptResult local_failure(ErrorKind k) {
  AttemptResult r = err(k);
  r.answer.error().local = true;
  r.answer.error().message = "connect: Too many open files (local)";
  return r;
}
}  // namespace

TEST_CASE("HealthRegistry: 100 local failures do not open a breaker, 100 provider failures do") {
  HealthConfig cfg;
  cfg.consecutive_failures = 5;
  HealthRegistry h(cfg);
  ManualClock c;
  SUBCASE("local failures leave no trace") {
    for (int i = 0; i < 100; ++i) {
      h.observe(kT, local_failure(i % 2 ? ErrorKind::connection : ErrorKind::timeout), c.now());
      h.observe(kT, err(ErrorKind::local_resource_exhausted, 0), c.now());  // the kind alone is local too
      c.advance(10ms);
    }
    TargetStats s = h.stats(kT, c.now());
    CHECK(s.breaker == BreakerState::closed);
    CHECK(s.admits);
    CHECK(s.error_rate == 0);
    CHECK(h.claim(kT, c.now()));
    CHECK(h.state_json(c.now())["targets"].empty());  // not even tracked
  }
  SUBCASE("a local 429 (a limit we enforce) does not empty the provider's bucket") {
    for (int i = 0; i < 100; ++i) h.observe(kT, local_failure(ErrorKind::rate_limited), c.now());
    CHECK(h.stats(kT, c.now()).admits);
  }
  SUBCASE("cancelled attempts leave no trace either") {
    // A never-started attempt is an AttemptSkip, which observe() cannot even be given.
    static_assert(!std::is_convertible_v<AttemptSkip, const AttemptResult&>);
    for (int i = 0; i < 100; ++i) h.observe(kT, err(ErrorKind::cancelled), c.now());
    CHECK(h.stats(kT, c.now()).breaker == BreakerState::closed);
    CHECK(h.state_json(c.now())["targets"].empty());
  }
  SUBCASE("the same failures from the provider open it") {
    for (int i = 0; i < 100; ++i) {
      h.observe(kT, err(i % 2 ? ErrorKind::connection : ErrorKind::timeout), c.now());
      c.advance(10ms);
    }
    TargetStats s = h.stats(kT, c.now());
    CHECK(s.breaker == BreakerState::open);
    CHECK_FALSE(s.admits);
  }
}

TEST_CASE("HealthRegistry: disabled health reports every target healthy, claims always, observes nothing") {
  HealthConfig cfg;
  cfg.enabled = false;
  cfg.consecutive_failures = 2;
  HealthRegistry h(cfg);
  ManualClock c;
  for (int i = 0; i < 50; ++i) h.observe(kT, err(ErrorKind::server_error, 500), c.now());
  h.observe(kT, err(ErrorKind::rate_limited, 429, Millis{60'000}), c.now());
  h.observe_rate_limits(kT, 0, std::nullopt, c.now() + 60s, c.now());
  h.force_open(kT, 60s, "drill", c.now());
  h.note_prefix(42, kT, c.now());
  TargetStats s = h.stats(kT, c.now());
  CHECK(s.breaker == BreakerState::closed);
  CHECK(s.admits);
  CHECK(s.error_rate == 0);
  for (int i = 0; i < 10; ++i) CHECK(h.claim(kT, c.now()));
  CHECK(h.preferred_target(42, c.now()).empty());
  Json st = h.state_json(c.now());
  CHECK(st["enabled"] == false);
  CHECK(st["targets"].empty());
}
