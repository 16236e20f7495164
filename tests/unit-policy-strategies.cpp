// cost_optimized, latency_optimized, ensemble, ab_test — driven through the public Simulator.
#include <doctest/doctest.h>

#include <map>

#include "modelux/simulate.hpp"

#include "support/catalog_resolver.hpp"

using namespace modelux;
using modelux::testing::CatalogResolver;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<const Policy> compile(const std::string& text, const CatalogResolver& r = CatalogResolver{}) {
  auto p = Policy::compile(Json::parse(text), r, "@t");
  if (!p) FAIL(p.error().describe());
  return *p;
}

std::string compile_error_path(const std::string& text) {
  CatalogResolver r;
  auto p = Policy::compile(Json::parse(text), r);
  REQUIRE_FALSE(p);
  CHECK(p.error().kind == ErrorKind::invalid_config);
  return p.error().path;
}

SimTarget fixed(const char* key, double ms, std::string answer = "ok") {
  SimTarget t;
  t.key = key;
  t.latency = {ms, 0.0, 1, 60'000};
  t.answers = {{std::move(answer), 1.0}};
  return t;
}

}  // namespace

// ---- cost_optimized -----------------------------------------------------------------------

TEST_CASE("CostOptimizedStrategy: cheapest allowed model meeting the tier, next cheapest on failure") {
  auto p = compile(R"({"strategy":"cost_optimized","min_tier":3,"total_budget_ms":10000,
     "allow":["gpt-4o","claude-haiku-4-5","gemini-2.5-flash","gpt-4o-mini"]})");
  Simulator sim;
  sim.add_target(fixed("google/gemini-2.5-flash", 100));
  auto rep = sim.run(p, 50);
  CHECK(rep.success_rate == 1.0);
  CHECK(rep.routes["google/gemini-2.5-flash"] == 50);  // 0.30/2.50 beats haiku 1.00/5.00; mini is tier 2
  CHECK(rep.results[0].trace.reason.find("cheapest meeting tier 3: gemini-2.5-flash") != std::string::npos);

  SimTarget down = fixed("google/gemini-2.5-flash", 100);
  down.errors = {{ErrorKind::server_error, 1.0}};
  sim.add_target(down);
  SimOptions o;
  o.use_health = false;
  rep = sim.run(p, 20, o);
  CHECK(rep.success_rate == 1.0);
  CHECK(rep.routes["anthropic/claude-haiku-4-5"] == 20);
}

TEST_CASE("CostOptimizedStrategy: config faults") {
  CHECK(compile_error_path(R"({"strategy":"cost_optimized","allow":["gpt-4o","nope"]})") == "$.allow[1]");
  CHECK(compile_error_path(R"({"strategy":"cost_optimized","min_tier":9})") == "$.min_tier");
  CHECK(compile_error_path(R"({"strategy":"cost_optimized","min_tier":4,"allow":["gpt-4o-mini"]})") == "$.allow");
}

// ---- latency_optimized --------------------------------------------------------------------

TEST_CASE("LatencyOptimizedStrategy: lowest live p50 wins, exploration stays bounded") {
  auto p = compile(R"({"strategy":"latency_optimized","explore":0.05,"stale_after_ms":20000,"min_samples":3,
     "candidates":["claude-haiku-4-5","gpt-4o-mini","gemini-2.5-flash"]})");
  Simulator sim;
  sim.add_target(fixed("anthropic/claude-haiku-4-5", 900));
  sim.add_target(fixed("openai/gpt-4o-mini", 300));
  sim.add_target(fixed("google/gemini-2.5-flash", 600));
  SimOptions o;
  o.interarrival = 100ms;
  auto rep = sim.run(p, 6000, o);
  CHECK(rep.success_rate == 1.0);
  double best = static_cast<double>(rep.routes["openai/gpt-4o-mini"]) / rep.requests;
  std::size_t explored = 0;
  for (const auto& r : rep.results)
    if (r.trace.reason.find("exploring stale") != std::string::npos) ++explored;
  CHECK(best > 0.93);
  CHECK(explored > 0);                                            // stale candidates get re-measured
  CHECK(static_cast<double>(explored) / rep.requests <= 0.05 + 0.01);  // ... but at most ~explore of traffic
  CHECK(rep.results.back().trace.reason.find("lowest p50: gpt-4o-mini") != std::string::npos);
  CHECK(compile_error_path(R"({"strategy":"latency_optimized","explore":0.5,"candidates":["gpt-4o"]})") == "$.explore");
  CHECK(compile_error_path(R"({"strategy":"latency_optimized","candidates":[]})") == "$.candidates");
}

// ---- ensemble -----------------------------------------------------------------------------

TEST_CASE("EnsembleStrategy: majority vote records every member's answer and vote") {
  auto p = compile(R"({"strategy":"ensemble","aggregation":"majority_vote","timeout_ms":5000,
     "members":["claude-haiku-4-5","gpt-4o-mini","gemini-2.5-flash"]})");
  Simulator sim;
  sim.add_target(fixed("anthropic/claude-haiku-4-5", 300, "Paris"));
  sim.add_target(fixed("openai/gpt-4o-mini", 200, "London"));
  sim.add_target(fixed("google/gemini-2.5-flash", 400, "  paris. "));
  auto rep = sim.run(p, 3);
  REQUIRE(rep.success_rate == 1.0);
  const auto& r = rep.results[0];
  CHECK(r.text == "Paris");
  REQUIRE(r.trace.attempts.size() == 3);
  CHECK(r.trace.attempts[0].vote == "paris");
  CHECK(r.trace.attempts[1].vote == "london");
  CHECK(r.trace.attempts[2].vote == "paris");
  CHECK(r.trace.attempts[1].member == 1);
  CHECK(r.trace.aggregation.find("majority_vote: \"paris\" 2/3") == 0);
  CHECK(r.latency == 400ms);  // waited for every member

  SUBCASE("a tie goes to the earliest answer") {
    sim.add_target(fixed("google/gemini-2.5-flash", 400, "Rome"));
    auto t = sim.run(p, 1);
    CHECK(t.results[0].text == "London");  // 200 ms, first to finish
    CHECK(t.results[0].trace.aggregation.find("tie broken") != std::string::npos);
  }
  SUBCASE("partial failures: the answering members vote") {
    SimTarget bad = fixed("openai/gpt-4o-mini", 50);
    bad.errors = {{ErrorKind::server_error, 1.0}};
    sim.add_target(bad);
    auto t = sim.run(p, 1);
    CHECK(t.success_rate == 1.0);
    CHECK(t.results[0].trace.attempts[1].vote == "(failed: server_error)");
    CHECK(t.results[0].trace.aggregation.find("2/2") != std::string::npos);
  }
  SUBCASE("every member failing fails the request") {
    for (auto k : {"anthropic/claude-haiku-4-5", "openai/gpt-4o-mini", "google/gemini-2.5-flash"}) {
      SimTarget bad = fixed(k, 50);
      bad.errors = {{ErrorKind::server_error, 1.0}};
      sim.add_target(bad);
    }
    auto t = sim.run(p, 1);
    CHECK(t.success_rate == 0.0);
    CHECK(t.results[0].error.kind == ErrorKind::server_error);
  }
  SUBCASE("a hung member is cut at its timeout") {
    SimTarget hang = fixed("google/gemini-2.5-flash", 50);
    hang.hang_probability = 1.0;
    sim.add_target(hang);
    auto t = sim.run(p, 1);
    CHECK(t.success_rate == 1.0);
    CHECK(t.results[0].latency == 5000ms);
    CHECK(t.results[0].trace.aggregation.find("tie broken") != std::string::npos);  // paris vs london, 1:1
  }
}

TEST_CASE("EnsembleStrategy: first_valid returns the first answer and abandons the rest") {
  auto p = compile(R"({"strategy":"ensemble","aggregation":"first_valid",
     "members":["claude-haiku-4-5","gpt-4o-mini","gemini-2.5-flash"]})");
  Simulator sim;
  sim.add_target(fixed("anthropic/claude-haiku-4-5", 300, "A"));
  sim.add_target(fixed("openai/gpt-4o-mini", 200, ""));  // empty: not valid
  sim.add_target(fixed("google/gemini-2.5-flash", 250, "C"));
  auto rep = sim.run(p, 1);
  const auto& r = rep.results[0];
  CHECK(r.text == "C");
  CHECK(r.latency == 250ms);
  CHECK(r.trace.attempts[0].why_ended.find("abandoned: first_valid") == 0);
}

TEST_CASE("EnsembleStrategy: weighted vote") {
  auto p = compile(R"({"strategy":"ensemble","aggregation":"weighted_vote",
     "members":[{"model":"gpt-4o","weight":3},{"model":"gpt-4o-mini","weight":1},{"model":"gemini-2.5-flash","weight":1}]})");
  Simulator sim;
  sim.add_target(fixed("openai/gpt-4o", 300, "A"));
  sim.add_target(fixed("openai/gpt-4o-mini", 100, "B"));
  sim.add_target(fixed("google/gemini-2.5-flash", 100, "B"));
  auto rep = sim.run(p, 1);
  CHECK(rep.results[0].text == "A");
  CHECK(rep.results[0].trace.aggregation.find("weighted_vote: \"a\" 3/5") == 0);
  CHECK(compile_error_path(R"({"strategy":"ensemble","members":[{"model":"gpt-4o","weight":2},"gpt-4o-mini"]})") ==
        "$.members[0].weight");
  CHECK(compile_error_path(R"({"strategy":"ensemble","members":["gpt-4o"]})") == "$.members");
}

// ---- ab_test ------------------------------------------------------------------------------

TEST_CASE("AbTestStrategy: sticky per end user, split accuracy, arm in the trace") {
  auto p = compile(R"({"strategy":"ab_test","salt":"exp-7","arms":[
     {"name":"control","weight":90,"model":"gpt-4o"},
     {"name":"candidate","weight":10,"config":{"strategy":"single","model":"gpt-4o-mini"}}]})");
  Simulator sim;
  SimOptions o;
  o.end_users = 20000;
  auto rep = sim.run(p, 20000, o);
  std::size_t cand = rep.routes["openai/gpt-4o-mini"];
  CHECK(static_cast<double>(cand) / 20000 == doctest::Approx(0.10).epsilon(0.1));  // 10 % +- 1 point
  CHECK(rep.results[3].trace.ab_arm == (rep.results[3].served.model == "gpt-4o" ? "control" : "candidate"));

  // the same 50 users, many requests each: every user always lands in the same arm
  o.end_users = 50;
  auto again = sim.run(p, 2000, o);
  std::map<std::string, std::string> arm_of;
  bool sticky = true;
  for (std::size_t i = 0; i < again.results.size(); ++i) {
    std::string user = "user-" + std::to_string(i % 50);
    auto [it, fresh] = arm_of.emplace(user, again.results[i].trace.ab_arm);
    if (!fresh && it->second != again.results[i].trace.ab_arm) sticky = false;
  }
  CHECK(sticky);
  CHECK(arm_of.size() == 50);

  CHECK(compile_error_path(R"({"strategy":"ab_test","arms":[{"weight":90,"model":"gpt-4o"},{"weight":20,"model":"gpt-4o-mini"}]})") ==
        "$.arms");
  CHECK(compile_error_path(R"({"strategy":"ab_test","arms":[{"weight":90,"model":"gpt-4o"},{"weight":10,"modle":"gpt-4o-mini"}]})") ==
        "$.arms[1].modle");
}

TEST_CASE("LatencyOptimizedStrategy: prompt-cache affinity keeps a warm target that is not much slower") {
  auto p = compile(R"({"strategy":"latency_optimized","explore":0,"min_samples":1,
     "candidates":["claude-haiku-4-5","gpt-4o-mini"]})");
  Simulator sim;
  sim.add_target(fixed("anthropic/claude-haiku-4-5", 380));
  // gpt-4o-mini is the faster one, but it fails for the first second: the first answer, and so
  // the warm prompt prefix, comes from the slower haiku. Only affinity keeps traffic there.
  SimTarget mini = fixed("openai/gpt-4o-mini", 300);
  mini.degraded = {DegradedWindow{.from = Nanos{0}, .to = std::chrono::seconds(1), .error_rate = 1.0}};
  sim.add_target(mini);
  SimOptions o;
  // Its early failures must not open its breaker: then haiku would take the traffic without
  // any affinity, and the test would not tell the two apart.
  o.health.consecutive_failures = 1'000'000;
  o.health.min_samples = 1'000'000;
  // every request shares one system prompt and first user message: one prefix fingerprint
  o.request = [](std::size_t) {
    ChatRequest r;
    Message m;
    m.role = "user";
    ContentPart cp;
    cp.text = "Summarise this 40-page contract.";
    m.content.push_back(cp);
    r.messages.push_back(m);
    return r;
  };
  auto rep = sim.run(p, 400, o);
  CHECK(rep.success_rate == 1.0);
  // Once both are measured, haiku keeps the prefix it holds (its p50 is within 1.5x of the
  // best), so it takes nearly all the traffic although gpt-4o-mini is faster.
  CHECK(rep.routes["anthropic/claude-haiku-4-5"] >= 370);
  CHECK(rep.results.back().trace.reason.find("prompt-cache affinity: claude-haiku-4-5") != std::string::npos);

  SUBCASE("without affinity the faster target takes the traffic") {
    auto q = compile(R"({"strategy":"latency_optimized","explore":0,"min_samples":1,"cache_affinity":false,
       "candidates":["claude-haiku-4-5","gpt-4o-mini"]})");
    auto rep2 = sim.run(q, 400, o);
    // The rest: the first second (~20 requests, mini failing) and cold-start measurements.
    CHECK(rep2.routes["openai/gpt-4o-mini"] >= 350);
  }
}

TEST_CASE("prompt_prefix_fingerprint: system + first user message, stable, 0 when empty") {
  ChatRequest a;
  CHECK(prompt_prefix_fingerprint(a) == 0);
  Message sys;
  sys.role = "system";
  ContentPart p;
  p.text = "You are terse.";
  sys.content.push_back(p);
  Message u = sys;
  u.role = "user";
  u.content[0].text = "Question one";
  a.messages = {sys, u};
  ChatRequest b = a;
  Message later = u;
  later.content[0].text = "a later turn";
  b.messages.push_back(later);
  CHECK(prompt_prefix_fingerprint(a) != 0);
  CHECK(prompt_prefix_fingerprint(a) == prompt_prefix_fingerprint(b));  // later turns do not matter
  b.messages[0].content[0].text = "You are verbose.";
  CHECK(prompt_prefix_fingerprint(a) != prompt_prefix_fingerprint(b));
}
