// ProxyMetrics: series recorded from decision traces from many threads at once add up exactly,
// are exposed in Prometheus text by prometheus-cpp, and keep caller-chosen names out of labels.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "server/control_plane.hpp"
#include "server/kept.hpp"
#include "server/metrics.hpp"
#include "server/routes.hpp"

using namespace modelux;

namespace {

DecisionTrace trace(std::string config, bool primary_fails) {
  DecisionTrace t;
  t.config = std::move(config);
  t.ok = true;
  t.total = std::chrono::milliseconds(30);
  t.ttft = std::chrono::milliseconds(10);
  if (primary_fails) {
    AttemptRecord a;
    a.provider = "anthropic";
    a.model = "claude-haiku-4-5";
    a.outcome = "rate_limited";
    a.duration = std::chrono::milliseconds(5);
    t.attempts.push_back(a);
  }
  AttemptRecord b;
  b.provider = "openai";
  b.model = "gpt-4o-mini";
  b.ok = true;
  b.outcome = "ok";
  b.duration = std::chrono::milliseconds(20);
  b.ttft = std::chrono::milliseconds(8);
  b.usage.prompt_tokens = 10;
  b.usage.completion_tokens = 3;
  b.cost.input_usd = 0.5;
  b.cost.output_usd = 0.25;
  t.attempts.push_back(b);
  return t;
}

// The value of the sample line that starts with `series` (name and labels as exposed).
double sample(const std::string& text, const std::string& series) {
  auto p = text.find("\n" + series + " ");
  REQUIRE_MESSAGE(p != std::string::npos, "missing " << series);
  return std::stod(text.substr(p + series.size() + 2));
}

}  // namespace

TEST_CASE("ProxyMetrics: traces observed from many threads add up exactly") {
  proxy::Proxy::State st;
  proxy::ProxyMetrics m(st);
  constexpr int kThreads = 4, kEach = 2000;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&m, i] {
      const DecisionTrace a = trace("@production", true), b = trace("@fast", false);
      for (int k = 0; k < kEach; ++k) m.observe((k + i) % 2 ? a : b);
    });
  for (auto& t : threads) t.join();
  const std::string text = m.render();
  const double half = kThreads * kEach / 2.0;
  CHECK(sample(text, R"(modelux_upstream_attempts_total{config="@production",model="claude-haiku-4-5",outcome="rate_limited",provider="anthropic"})") == half);
  CHECK(sample(text, R"(modelux_upstream_attempts_total{config="@production",model="gpt-4o-mini",outcome="ok",provider="openai"})") == half);
  CHECK(sample(text, R"(modelux_upstream_attempts_total{config="@fast",model="gpt-4o-mini",outcome="ok",provider="openai"})") == half);
  CHECK(sample(text, R"(modelux_tokens_total{config="@fast",model="gpt-4o-mini",provider="openai",type="input"})") == half * 10);
  CHECK(sample(text, R"(modelux_tokens_total{config="@fast",model="gpt-4o-mini",provider="openai",type="output"})") == half * 3);
  CHECK(sample(text, R"(modelux_cost_usd_total{config="@fast",model="gpt-4o-mini",provider="openai"})") == doctest::Approx(half * 0.75));
  CHECK(sample(text, R"(modelux_upstream_attempt_duration_seconds_count{config="@production",model="gpt-4o-mini",provider="openai"})") == half);
  CHECK(sample(text, R"(modelux_upstream_ttft_seconds_count{config="@production",model="gpt-4o-mini",provider="openai"})") == half);
  // A failed attempt has no time to first token.
  CHECK(sample(text, R"(modelux_upstream_ttft_seconds_count{config="@production",model="claude-haiku-4-5",provider="anthropic"})") == 0);
  CHECK(sample(text, R"(modelux_routed_requests_total{config="@production",outcome="ok"})") == half);
  CHECK(sample(text, R"(modelux_request_duration_seconds_count{config="@fast"})") == half);
  // The server's own counters are there even without a router or an HTTP server.
  CHECK(sample(text, "modelux_requests_in_flight") == 0);
  CHECK(text.find("# TYPE modelux_upstream_attempt_duration_seconds histogram") != std::string::npos);
}

TEST_CASE("ProxyMetrics: a request refused before routing is counted under config unknown") {
  proxy::Proxy::State st;
  proxy::ProxyMetrics m(st);
  for (const char* name : {"no-such-model-1", "no-such-model-2", "@nope"}) {
    DecisionTrace t;
    t.config = name;
    t.ok = false;
    t.error_kind = "not_found";
    m.observe(t);
  }
  const std::string text = m.render();
  CHECK(sample(text, R"(modelux_routed_requests_total{config="unknown",outcome="not_found"})") == 3);
  CHECK(text.find("no-such-model") == std::string::npos);
}

TEST_CASE("ProxyMetrics: two instances on one thread keep their own series") {
  proxy::Proxy::State st;
  proxy::ProxyMetrics a(st), b(st);
  const DecisionTrace t = trace("@fast", false);
  a.observe(t);
  b.observe(t);
  a.observe(t);
  CHECK(sample(a.render(), R"(modelux_routed_requests_total{config="@fast",outcome="ok"})") == 2);
  CHECK(sample(b.render(), R"(modelux_routed_requests_total{config="@fast",outcome="ok"})") == 1);
}
