// The offline test kit: simulated providers, virtual time, the same RoutingSession.
#include <doctest/doctest.h>

#include <cstdio>

#include "modelux/simulate.hpp"

using namespace modelux;
using namespace std::chrono_literals;

namespace {

class CatalogResolver final : public PolicyResolver {
 public:
  const Catalog& catalog() const override { return Catalog::builtin(); }
  std::string provider_for(std::string_view model) const override {
    const ModelInfo* m = catalog().find_model(model);
    return m ? m->provider : std::string{};
  }
  std::shared_ptr<const Policy> config(std::string_view) const override { return nullptr; }
};

std::shared_ptr<const Policy> compile(const char* text) {
  CatalogResolver r;
  auto p = Policy::compile(Json::parse(text), r, "@sim");
  if (!p) FAIL(p.error().describe());
  return *p;
}

const char* kSeedChain = R"({"strategy":"fallback",
  "attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},{"model":"gpt-4o-mini","timeout_ms":3000},
              {"model":"gemini-2.5-flash","timeout_ms":5000}],
  "retry_on":["429","5xx","timeout"],"total_budget_ms":8000})";

const char* kKeys[3] = {"anthropic/claude-haiku-4-5", "openai/gpt-4o-mini", "google/gemini-2.5-flash"};

/// "Degraded" (documented in docs/routing.md): the provider fails half of its calls —
/// 30 % answer 5xx quickly, 20 % hang until the attempt timeout — and its successful answers
/// are 2x slower. A healthy provider answers every call, median 600 ms.
SimTarget provider(const char* key, bool degraded) {
  SimTarget t;
  t.key = key;
  t.latency = {600, 0.5, 50, 20'000};
  if (degraded) {
    t.hang_probability = 0.20;                            // 20 % of all calls hang
    t.errors = {{ErrorKind::server_error, 0.30 / 0.80}};  // 30 % of all calls: 5xx (drawn among the rest)
    t.latency.median_ms *= 2;
  }
  return t;
}

}  // namespace

TEST_CASE("Simulator: healthy providers serve everything from the primary") {
  Simulator sim;
  for (auto k : kKeys) {
    SimTarget t = provider(k, false);
    t.latency.sigma = 0.3;  // P(> 2 s timeout) ~ 3e-5
    sim.add_target(t);
  }
  auto rep = sim.run(compile(kSeedChain), 2000);
  CHECK(rep.requests == 2000);
  CHECK(rep.success_rate == 1.0);
  CHECK(rep.failovers == 0);
  CHECK(rep.routes["anthropic/claude-haiku-4-5"] == 2000);
  CHECK(rep.p50_ms == doctest::Approx(600).epsilon(0.1));
  CHECK(rep.cost_usd > 0);
  CHECK(rep.results[0].trace.attempts.size() == 1);
}

TEST_CASE("Simulator: deterministic for a seed") {
  Simulator sim;
  for (auto k : kKeys) sim.add_target(provider(k, true));
  auto a = sim.run(compile(kSeedChain), 500);
  auto b = sim.run(compile(kSeedChain), 500);
  CHECK(a.succeeded == b.succeeded);
  CHECK(a.p95_ms == b.p95_ms);
  CHECK(a.routes == b.routes);
  SimOptions o;
  o.seed = 99;
  auto c = sim.run(compile(kSeedChain), 500, o);
  CHECK((c.p95_ms != a.p95_ms || c.routes != a.routes));
}

TEST_CASE("Simulator: a 429ing primary fails over and the trace says why") {
  Simulator sim;
  SimTarget haiku = provider(kKeys[0], false);
  haiku.errors = {{ErrorKind::rate_limited, 1.0}};
  sim.add_target(haiku);
  sim.add_target(provider(kKeys[1], false));
  SimOptions o;
  o.use_health = false;  // every request meets the 429 (no token bucket absorbing it)
  auto rep = sim.run(compile(kSeedChain), 200, o);
  CHECK(rep.success_rate == 1.0);
  CHECK(rep.routes["openai/gpt-4o-mini"] == 200);
  CHECK(rep.failovers == 200);
  CHECK(rep.results[7].trace.reason == "primary rate_limited (429), served by gpt-4o-mini");
  SUBCASE("with health on, the token bucket sends later requests straight to the secondary") {
    auto rep2 = sim.run(compile(kSeedChain), 200);
    CHECK(rep2.success_rate == 1.0);
    CHECK(rep2.failovers < 200);
  }
}

TEST_CASE("Simulator property: no request exceeds total_budget_ms under random faults") {
  Simulator sim;
  Random pick(7);
  for (auto k : kKeys) {
    SimTarget t;
    t.key = k;
    t.latency = {800 + 1000 * pick.uniform(), 1.0, 1, 60'000};
    t.errors = {{ErrorKind::rate_limited, 0.1 * pick.uniform()}, {ErrorKind::server_error, 0.2 * pick.uniform()},
                {ErrorKind::connection, 0.05}};
    t.hang_probability = 0.15;
    t.degraded = {DegradedWindow{30s, 90s, 0.8, ErrorKind::overloaded, 0.3, 3.0}};
    sim.add_target(t);
  }
  for (const char* cfg : {kSeedChain,
                          R"({"strategy":"fallback","total_budget_ms":3000,"retries":2,
                             "backoff":{"initial_ms":200,"max_ms":1000,"jitter":0.5},
                             "attempts":[{"model":"claude-haiku-4-5","timeout_ms":2500},
                                         {"model":"gpt-4o-mini","timeout_ms":2500}],
                             "retry_on":["429","5xx","timeout","connection","overloaded"],
                             "on_rate_limit":"queue"})"}) {
    auto p = compile(cfg);
    SimOptions o;
    o.seed = 2024;
    o.keep_traces = false;
    auto rep = sim.run(p, 4000, o);
    double budget_ms = std::chrono::duration<double, std::milli>(p->total_budget()).count();
    CHECK(rep.max_ms <= budget_ms);
    CHECK(rep.success_rate > 0.2);
    CHECK(rep.success_rate < 1.0);  // the faults were real
    MESSAGE(rep.summary());
  }
}

TEST_CASE("Simulator: the degradation table with a three-provider fallback chain") {
  // Success rate with 0..3 of the three providers degraded; printed for the report.
  std::printf("\nDegradation table (seed chain: haiku 2s -> gpt-4o-mini 3s -> gemini-flash 5s, total 8s; "
              "10000 requests each; degraded = 30%% 5xx + 20%% hang, 2x latency)\n");
  std::printf("%-10s %-14s %-14s %-10s %-10s\n", "degraded", "health on", "health off", "p95 ms", "seeds");
  const char* seeds[4] = {"100%", "100%", "99.6%", "87.0%"};
  double on_rates[4], off_rates[4];
  for (int d = 0; d <= 3; ++d) {
    Simulator sim;
    for (int i = 0; i < 3; ++i) sim.add_target(provider(kKeys[i], i < d));
    SimOptions o;
    o.keep_traces = false;
    auto on = sim.run(compile(kSeedChain), 10000, o);
    o.use_health = false;
    auto off = sim.run(compile(kSeedChain), 10000, o);
    on_rates[d] = on.success_rate;
    off_rates[d] = off.success_rate;
    std::printf("%-10d %-14.2f %-14.2f %-10.0f %-10s\n", d, on.success_rate * 100, off.success_rate * 100, on.p95_ms,
                seeds[d]);
    CHECK(on.max_ms <= 8000);
  }
  CHECK(on_rates[0] == 1.0);
  CHECK(on_rates[1] == 1.0);
  CHECK(off_rates[1] == 1.0);
  CHECK(on_rates[2] > 0.99);
  // With all three degraded, only independence of failures helps: about 1 - 0.5^3.
  CHECK(off_rates[3] == doctest::Approx(0.875).epsilon(0.05));  // minus budget cuts: ~0.85
}
