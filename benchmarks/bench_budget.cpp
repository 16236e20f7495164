// Budget hot path: reserve + settle per request, in memory.
//   BM_Null                      baseline: the loop and an opaque call
//   BM_AdmitSettle               one project budget, uncontended
//   BM_AdmitSettle_ThreeScopes   org + project + end-user budgets on every request
//   BM_AdmitRelease              reserve + release (failed attempt)
//   BM_AdmitSettle/threads:2     two threads on the same budget (contention)
//   BM_AdmitSettle_FixedNow      the same without the clock read (budget code alone)
//   BM_NoMatchingBudget          request outside every scope
#include <benchmark/benchmark.h>

#include "modelux/budget.hpp"

using namespace modelux;

namespace {

ModelInfo paid() {
  ModelInfo m;
  m.id = "paid";
  m.input_per_m = 0.15;
  m.output_per_m = 0.6;
  m.priced = true;
  return m;
}
const ModelInfo kPaid = paid();

const Catalog& catalog() {
  static const Catalog c;
  return c;
}

std::unique_ptr<BudgetManager> make(const char* json) {
  auto m = BudgetManager::create(Json::parse(json), catalog(), SteadyClock::instance());
  if (!m) throw std::runtime_error(m.error().describe());
  return std::move(*m);
}

CallContext ctx() {
  CallContext c;
  c.project = "acme";
  c.org = "org1";
  c.end_user = "user-42";
  return c;
}

// Effectively unlimited so the loop never hits the cap.
constexpr const char* kOne =
    R"([{"name":"acme","scope":{"project":"acme"},"window":"daily","limit_usd":1e9,"soft":{"percent":99,"downgrade_to":"@cheap"}}])";
constexpr const char* kThree = R"([
  {"name":"org","scope":{"org":"org1"},"window":"monthly","limit_usd":1e9},
  {"name":"acme","scope":{"project":"acme"},"window":"daily","limit_usd":1e9},
  {"name":"users","scope":{"end_user":"*"},"window":"rolling","window_s":3600,"limit_usd":1e9}])";

Usage usage() {
  Usage u;
  u.prompt_tokens = 500;
  u.completion_tokens = 200;
  return u;
}

void BM_Null(benchmark::State& state) {
  CallContext c = ctx();
  for (auto _ : state) {
    benchmark::DoNotOptimize(c);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Null);

// What the router pays anyway to get `now` (the admit/settle figures include one such read).
void BM_ClockNow(benchmark::State& state) {
  const auto& clock = SteadyClock::instance();
  for (auto _ : state) benchmark::DoNotOptimize(clock.now());
}
BENCHMARK(BM_ClockNow);

void run(benchmark::State& state, BudgetManager& m) {
  const CallContext c = ctx();
  const Usage u = usage();
  const auto& clock = SteadyClock::instance();
  for (auto _ : state) {
    const Instant now = clock.now();
    auto a = m.admit(c, &kPaid, 500, 256, now);
    if (!a) {
      state.SkipWithError("blocked");
      break;
    }
    m.settle(*a, 0.0002, u, now);
    benchmark::DoNotOptimize(a);
  }
}

BudgetManager& shared_one() {
  static auto m = make(kOne);
  return *m;
}

void BM_AdmitSettle(benchmark::State& state) { run(state, shared_one()); }
BENCHMARK(BM_AdmitSettle);
BENCHMARK(BM_AdmitSettle)->Threads(2)->UseRealTime();

// The same without the clock read: the budget code alone.
void BM_AdmitSettle_FixedNow(benchmark::State& state) {
  auto& m = shared_one();
  const CallContext c = ctx();
  const Usage u = usage();
  const Instant now = SteadyClock::instance().now();  // windows are daily: stays valid for the run
  for (auto _ : state) {
    auto a = m.admit(c, &kPaid, 500, 256, now);
    if (!a) {
      state.SkipWithError("blocked");
      break;
    }
    m.settle(*a, 0.0002, u, now);
    benchmark::DoNotOptimize(a);
  }
}
BENCHMARK(BM_AdmitSettle_FixedNow);
BENCHMARK(BM_AdmitSettle_FixedNow)->Threads(2)->UseRealTime();

void BM_AdmitSettle_ThreeScopes(benchmark::State& state) {
  static auto m = make(kThree);
  run(state, *m);
}
BENCHMARK(BM_AdmitSettle_ThreeScopes);
BENCHMARK(BM_AdmitSettle_ThreeScopes)->Threads(2)->UseRealTime();

void BM_AdmitRelease(benchmark::State& state) {
  auto& m = shared_one();
  const CallContext c = ctx();
  const auto& clock = SteadyClock::instance();
  for (auto _ : state) {
    auto a = m.admit(c, &kPaid, 500, 256, clock.now());
    if (a) m.release(*a);
    benchmark::DoNotOptimize(a);
  }
}
BENCHMARK(BM_AdmitRelease);

void BM_NoMatchingBudget(benchmark::State& state) {
  auto& m = shared_one();
  CallContext c = ctx();
  c.project = "other";
  const auto& clock = SteadyClock::instance();
  for (auto _ : state) {
    auto a = m.admit(c, &kPaid, 500, 256, clock.now());
    benchmark::DoNotOptimize(a);
  }
}
BENCHMARK(BM_NoMatchingBudget);

}  // namespace

BENCHMARK_MAIN();
