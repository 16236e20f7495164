// HealthRegistry hot paths: lock-free stats()/pick_key() reads, claim() (also contended) and
// observe() writes, with a null baseline.
#include <benchmark/benchmark.h>

#include "modelux/health.hpp"

using namespace modelux;

namespace {

HealthRegistry& shared_registry() {
  static HealthRegistry h;
  static bool init = [] {
    ManualClock c;
    AttemptResult ok;
    ok.answer = ChatResponse{};
    ok.latency = std::chrono::milliseconds(250);
    for (int i = 0; i < 64; ++i)
      for (int j = 0; j < 20; ++j) h.observe("p" + std::to_string(i) + "/m", ok, c.now());
    h.set_key_pool("openai", 4);
    return true;
  }();
  (void)init;
  return h;
}

void BM_Null(benchmark::State& state) {
  int x = 0;
  for (auto _ : state) benchmark::DoNotOptimize(x += 1);
}
BENCHMARK(BM_Null);

void BM_Stats(benchmark::State& state) {
  HealthRegistry& h = shared_registry();
  ManualClock c;
  for (auto _ : state) benchmark::DoNotOptimize(h.stats("p17/m", c.now()));
}
BENCHMARK(BM_Stats)->Threads(1)->Threads(2)->UseRealTime();

void BM_Claim(benchmark::State& state) {
  HealthRegistry& h = shared_registry();
  ManualClock c;
  for (auto _ : state) benchmark::DoNotOptimize(h.claim("p17/m", c.now()));
}
BENCHMARK(BM_Claim)->Threads(1)->Threads(2)->UseRealTime();

void BM_PickKey(benchmark::State& state) {
  HealthRegistry& h = shared_registry();
  ManualClock c;
  for (auto _ : state) benchmark::DoNotOptimize(h.pick_key("openai", "gpt-4o", c.now()));
}
BENCHMARK(BM_PickKey)->Threads(1)->Threads(2)->UseRealTime();

void BM_Observe(benchmark::State& state) {
  HealthRegistry h;
  ManualClock c;
  AttemptResult ok;
  ok.answer = ChatResponse{};
  ok.latency = std::chrono::milliseconds(250);
  for (auto _ : state) {
    h.observe("openai/gpt-4o", ok, c.now());
    c.advance(std::chrono::milliseconds(1));
  }
}
BENCHMARK(BM_Observe);

}  // namespace

BENCHMARK_MAIN();
