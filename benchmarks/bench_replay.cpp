// Replay speed: routing mode over 50,000 stored requests (the issue's target: under 5 s on one
// core, under 500 MB).
//
//   BM_Null          loop overhead baseline
//   BM_Replay50k     replay() of 50,000 stored requests of @production (seven days, three
//                    targets, 20% 429s and 2% timeouts on the primary, a quarter streamed, tags,
//                    users, a daily budget) against the deployed config: load, fit, simulate,
//                    report with one row per request. Counters: requests/s and the process's
//                    peak RSS after the run (ru_maxrss: it includes building the store, which
//                    writes in batches of 1,000).
//
// The store is built once per process in the system temp dir. MODELUX_BENCH_REPLAY_DB=path
// keeps it there (for timing the CLI: `/usr/bin/time -v modelux replay --db path ...`).
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "modelux/replay.hpp"
#include "modelux/trace.hpp"

using namespace modelux;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kRequests = 50'000;

AttemptRecord attempt(std::uint32_t id, const char* model, const char* provider, bool ok, const char* outcome,
                      Nanos duration, Nanos ttft, int status) {
  AttemptRecord a;
  a.id = id;
  a.model = model;
  a.provider = provider;
  a.ok = ok;
  a.outcome = outcome;
  a.duration = duration;
  a.ttft = ttft;
  a.status = status;
  if (ok) {
    a.usage.prompt_tokens = 600;
    a.usage.completion_tokens = 180;
    if (auto c = Catalog::builtin().cost(model, a.usage)) a.cost = *c;
  }
  return a;
}

/// Deterministic synthetic traffic with the shape of a week of production (xorshift draws).
DecisionTrace synthetic(std::size_t i, std::uint64_t& rng) {
  auto draw = [&rng] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return static_cast<double>(rng >> 11) / 9007199254740992.0;
  };
  DecisionTrace t;
  t.request_id = "req_" + std::to_string(1'000'000 + i);
  t.time = WallTime{std::chrono::seconds{1'768'478'400}} + std::chrono::milliseconds(i * 12'096);  // 7 days
  t.config = "@production";
  t.config_version = 3;
  t.strategy = "fallback";
  t.project = i % 3 ? "acme" : "globex";
  t.end_user = "user-" + std::to_string(i % 997);
  t.tags = {{"env", "prod"}, {"feature", i % 2 ? "chat" : "search"}};
  t.stream = i % 4 == 0;
  const double u = draw();
  const Nanos lat = std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(300 + 900 * draw() * draw()));
  const Nanos ttft = t.stream ? lat / 3 : Nanos{0};
  if (u < 0.20) {
    t.attempts.push_back(attempt(1, "claude-haiku-4-5", "anthropic", false, "rate_limited", 40ms, {}, 429));
    t.attempts.push_back(attempt(2, "gpt-4o-mini", "openai", true, "ok", lat + 150ms, ttft, 200));
  } else if (u < 0.22) {
    t.attempts.push_back(attempt(1, "claude-haiku-4-5", "anthropic", false, "timeout", 2000ms, {}, 0));
    if (draw() < 0.9)
      t.attempts.push_back(attempt(2, "gpt-4o-mini", "openai", true, "ok", lat, ttft, 200));
    else
      t.attempts.push_back(attempt(2, "gpt-4o-mini", "openai", false, "server_error", 80ms, {}, 500));
  } else {
    t.attempts.push_back(attempt(1, "claude-haiku-4-5", "anthropic", true, "ok", lat, ttft, 200));
  }
  Nanos offset{0};
  for (auto& a : t.attempts) {
    a.start_offset = offset;
    offset += a.duration;
    t.cost.input_usd += a.cost.input_usd;
    t.cost.output_usd += a.cost.output_usd;
    if (a.ok) {
      t.ok = true;
      t.served_model = a.model;
      t.served_provider = a.provider;
      t.usage = a.usage;
      t.ttft = a.ttft;  // the attempt's own, as the executor records it
    }
  }
  if (!t.ok) {
    t.error_kind = t.attempts.back().outcome;
    t.est_input_tokens = 600;
  }
  t.total = offset;
  return t;
}

const std::string& store_path() {
  static const std::string path = [] {
    std::string p;
    if (const char* keep = std::getenv("MODELUX_BENCH_REPLAY_DB"); keep && *keep) {
      p = keep;
    } else {
      p = (std::filesystem::temp_directory_path() / ("modelux-bench-replay-" + std::to_string(::getpid()) + ".db"))
              .string();
      std::atexit([] {
        std::error_code ec;
        for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(store_path() + s, ec);
      });
    }
    auto store = TraceStore::open(p);
    if (!store) std::abort();
    auto have = (*store)->count(TraceQuery{.limit = 0});
    if (have && *have >= kRequests) return p;
    std::uint64_t rng = 0x9e3779b97f4a7c15ULL;
    std::vector<DecisionTrace> batch;
    for (std::size_t i = 0; i < kRequests; ++i) {
      batch.push_back(synthetic(i, rng));
      if (batch.size() == 1000) {
        if (!(*store)->write(batch)) std::abort();
        batch.clear();
      }
    }
    return p;
  }();
  return path;
}

void BM_Null(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(state.iterations());
}
BENCHMARK(BM_Null);

void BM_Replay50k(benchmark::State& state) {
  ReplayOptions o;
  o.store_path = store_path();
  o.slug = "production";
  o.candidate = Json::parse(R"({"strategy":"fallback","attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},
      {"model":"gpt-4o-mini","timeout_ms":3000},{"model":"gemini-2.5-flash","timeout_ms":5000}],
      "retry_on":["429","5xx","timeout"],"total_budget_ms":8000})");
  o.limit = kRequests;
  auto base = Config::embedded_defaults();
  if (!base) std::abort();
  base->budgets = Json::parse(R"([{"name":"acme-daily","scope":{"project":"acme"},"window":"daily","limit_usd":40}])");
  o.base = std::move(*base);
  std::size_t replayed = 0;
  for (auto _ : state) {
    auto rep = replay(o);
    if (!rep) {
      state.SkipWithError(rep.error().message.c_str());
      return;
    }
    replayed = rep->traces;
    benchmark::DoNotOptimize(rep->candidate.success_rate);
  }
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  state.counters["requests"] = static_cast<double>(replayed);
  state.counters["requests_per_s"] =
      benchmark::Counter(static_cast<double>(replayed) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["peak_rss_mb"] = static_cast<double>(ru.ru_maxrss) / 1024.0;
}
BENCHMARK(BM_Replay50k)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
