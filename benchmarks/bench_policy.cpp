// Routing-decision cost per request for every strategy, rule evaluation and health reads,
// with a null baseline. Heap allocations per iteration are counted with a replaced global
// operator new and reported as the "allocs" counter.
//
// One "decision" = start a request in a RoutingSession, next() (the plan), report a success,
// next() (done, trace finalised) — everything the routing core does for a request that
// succeeds on its first attempt. Ensembles report one success per member.
// Row 8 is the fallback config of row 1 whose primary answers 429 once: the decision fails
// over (primary rate_limited, then the second target serves).
// BM_Decision reuses one session (RoutingSession::reset, how a driver keeps a session per
// worker: the steady state); BM_DecisionFresh constructs a new session per decision.
#include <benchmark/benchmark.h>

#include "modelux/health.hpp"
#include "modelux/policy.hpp"
#include "policy/dsl.hpp"
#include "support/catalog_resolver.hpp"
#include "support/counting_new.hpp"

using namespace modelux;
using modelux::testing::CatalogResolver;

namespace {

const char* config_for(int which) {
  switch (which) {
    case 0: return R"({"strategy":"single","model":"gpt-4o","timeout_ms":30000})";
    case 1:
      return R"({"strategy":"fallback","attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},
        {"model":"gpt-4o-mini","timeout_ms":3000,"retries":1}],"retry_on":["429","5xx","timeout"],"total_budget_ms":8000,
        "backoff":{"initial_ms":100,"max_ms":2000,"jitter":0.2}})";
    case 2: return R"({"strategy":"cost_optimized","min_tier":3,"allow":["gpt-4o","claude-haiku-4-5","gemini-2.5-flash","gpt-4o-mini"]})";
    case 3: return R"({"strategy":"latency_optimized","candidates":["claude-haiku-4-5","gpt-4o-mini","gemini-2.5-flash"]})";
    case 4: return R"({"strategy":"ensemble","members":["claude-haiku-4-5","gpt-4o-mini","gemini-2.5-flash"]})";
    case 5: return R"({"strategy":"ab_test","arms":[{"weight":90,"model":"gpt-4o"},{"weight":10,"model":"gpt-4o-mini"}]})";
    case 6: return R"({"strategy":"cascade","steps":["gpt-4o-mini","gpt-4o"]})";
    case 8: return config_for(1);  // the same fallback; decision_bench fails its primary once
    default:
      return R"({"strategy":"rules","rules":[{"when":"tags[\"tier\"] == \"free\" && budget.percent > 80","model":"gpt-4o-mini"},
        {"when":"estimated_tokens > 100000","model":"gemini-2.5-pro"}],"default":"gpt-4o"})";
  }
}

void BM_Null(benchmark::State& state) {
  int x = 0;
  for (auto _ : state) benchmark::DoNotOptimize(x += 1);
}
BENCHMARK(BM_Null);

void decision_bench(benchmark::State& state, bool reuse) {
  CatalogResolver r;
  auto p = Policy::compile(Json::parse(config_for(static_cast<int>(state.range(0)))), r, "@bench");
  if (!p) {
    state.SkipWithError(p.error().describe().c_str());
    return;
  }
  state.SetLabel(std::string((*p)->strategy()) + (state.range(0) == 8 ? " (failover)" : ""));
  const ChatRequest req = modelux::testing::decision_request();
  CallContext ctx;
  ctx.project = "acme";
  ctx.end_user = "user-17";
  ctx.tags = {{"tier", "pro"}};
  HealthRegistry health;
  ManualClock clock;
  AttemptResult ok;
  ok.answer = ChatResponse{};
  ok.latency = std::chrono::milliseconds(300);
  // Strategies that read the answer (ensemble votes, cascade checks) get one; single and
  // fallback get a usage-only result, so the count is the routing core's own allocations —
  // the decoder allocates the response body in any case and hands it over by move.
  const bool needs_answer = state.range(0) == 4 || state.range(0) == 6;
  if (needs_answer) {
    Choice c;
    c.message.role = "assistant";
    ContentPart cp;
    cp.text = "Paris";
    c.message.content.push_back(cp);
    c.finish_reason = "stop";
    ok.answer->choices.push_back(c);
  }
  ok.usage.prompt_tokens = 30;
  ok.usage.completion_tokens = 2;
  // Row 8: the first attempt of each decision answers 429, so the fallback fails over once.
  const int fail_first = state.range(0) == 8 ? 1 : 0;
  AttemptResult bad;  // failed
  bad.answer.error().kind = ErrorKind::rate_limited;
  bad.answer.error().status = 429;
  // An ensemble tries its three members at once; every other row tries one target, plus
  // one for the failover of row 8.
  const std::size_t expected_attempts = state.range(0) == 4 ? 3 : static_cast<std::size_t>(fail_first + 1);
  SessionInputs in;
  in.request = &req;
  in.context = &ctx;
  in.health = &health;
  std::uint64_t seed = 1;
  RoutingSession reused;
  auto run = [&](RoutingSession& s) {
    int failures = 0;
    Step st = s.next(in.start);
    while (st.kind == Step::Kind::attempt) {
      for (const auto& a : st.attempts) {
        AttemptResult& r = failures < fail_first ? bad : ok;
        if (failures < fail_first) ++failures;
        r.id = a.id;
        s.report(r, in.start);
      }
      st = s.next(in.start);
    }
    benchmark::DoNotOptimize(st.kind);
    benchmark::DoNotOptimize(s.trace().total);
    if (st.kind != Step::Kind::done || s.trace().attempts.size() != expected_attempts)
      state.SkipWithError("the decision did not go as the row says");
  };
  // Warm-up: a reused session reaches its steady state (buffers sized) after one request.
  in.start = clock.now();
  reused.reset(*p, in);
  run(reused);
  std::uint64_t allocs_before = modelux::testing::heap_allocations.load();
  for (auto _ : state) {
    in.seed = seed++;
    in.start = clock.now();
    if (reuse) {
      reused.reset(*p, in);
      run(reused);
    } else {
      RoutingSession s(*p, in);
      run(s);
    }
  }
  state.counters["allocs"] = benchmark::Counter(static_cast<double>(modelux::testing::heap_allocations.load() - allocs_before),
                                                benchmark::Counter::kAvgIterations);
}
void BM_Decision(benchmark::State& state) { decision_bench(state, true); }
void BM_DecisionFresh(benchmark::State& state) { decision_bench(state, false); }
BENCHMARK(BM_Decision)->DenseRange(0, 8);
BENCHMARK(BM_DecisionFresh)->DenseRange(0, 8);

void BM_RuleEval(benchmark::State& state) {
  auto e = dsl::Expression::compile(
      "tags[\"tier\"] == \"free\" && budget.percent > 80 || estimated_tokens > 100000 || "
      "health(\"anthropic/claude-haiku-4-5\").breaker == \"open\" || hour >= 22",
      dsl::Type::boolean, &Catalog::builtin());
  if (!e) {
    state.SkipWithError(e.error().describe().c_str());
    return;
  }
  const ChatRequest req = modelux::testing::decision_request();
  CallContext ctx;
  ctx.tags = {{"tier", "pro"}};
  HealthRegistry health;
  dsl::EvalContext c;
  c.request = &req;
  c.context = &ctx;
  c.health = &health;
  c.estimated_tokens = 40;
  std::uint64_t allocs_before = modelux::testing::heap_allocations.load();
  for (auto _ : state) benchmark::DoNotOptimize(e->eval_bool(c));
  state.counters["allocs"] =
      benchmark::Counter(static_cast<double>(modelux::testing::heap_allocations.load() - allocs_before), benchmark::Counter::kAvgIterations);
  state.counters["instructions"] = static_cast<double>(e->size());
}
BENCHMARK(BM_RuleEval);

}  // namespace

BENCHMARK_MAIN();
