// ProxyMetrics::observe(): what recording one request's metrics costs on the hot path (a trace
// with a failed and a served attempt: series found in the thread's cache, counters and
// histograms of prometheus-cpp), alone and with two threads on the same series; and a scrape.
// With a null baseline.
#include <benchmark/benchmark.h>

#include "server/control_plane.hpp"
#include "server/kept.hpp"
#include "server/metrics.hpp"
#include "server/routes.hpp"

using namespace modelux;

namespace {

DecisionTrace failover_trace() {
  DecisionTrace t;
  t.config = "@production";
  t.ok = true;
  t.total = std::chrono::milliseconds(30);
  t.ttft = std::chrono::milliseconds(10);
  for (int i = 0; i < 2; ++i) {
    AttemptRecord a;
    a.provider = i ? "openai" : "anthropic";
    a.model = i ? "gpt-4o-mini" : "claude-haiku-4-5";
    a.ok = i == 1;
    a.outcome = i ? "ok" : "rate_limited";
    a.duration = std::chrono::milliseconds(20);
    a.ttft = std::chrono::milliseconds(5);
    a.usage.prompt_tokens = 10;
    a.usage.completion_tokens = 3;
    a.cost.input_usd = 0.001;
    t.attempts.push_back(a);
  }
  return t;
}

proxy::Proxy::State& state() {
  static proxy::Proxy::State st;
  return st;
}
proxy::ProxyMetrics& metrics() {
  static proxy::ProxyMetrics m(state());
  return m;
}

void BM_Null(benchmark::State& state) {
  const DecisionTrace t = failover_trace();
  for (auto _ : state) benchmark::DoNotOptimize(&t);
}
BENCHMARK(BM_Null);

void BM_Observe(benchmark::State& state) {
  const DecisionTrace t = failover_trace();
  proxy::ProxyMetrics& m = metrics();
  for (auto _ : state) m.observe(t);
}
BENCHMARK(BM_Observe)->Threads(1)->Threads(2)->UseRealTime();

void BM_Render(benchmark::State& state) {
  proxy::ProxyMetrics& m = metrics();
  m.observe(failover_trace());
  for (auto _ : state) benchmark::DoNotOptimize(m.render());
}
BENCHMARK(BM_Render);

}  // namespace

BENCHMARK_MAIN();
