// Trace costs: Tracer::submit() on the hot path (target < 300 ns) and sustained store
// throughput in traces per second.
//
//   BM_Null                    loop overhead baseline
//   BM_BuildTrace              building a realistic 2-attempt trace (the router pays this anyway)
//   BM_BuildAndSubmit          the same plus submit(): the difference is submit's own cost
//   BM_SubmitMinimal           submit() of a trace with only short (SSO) strings: node + moves + CAS
//   BM_SubmitDropped           submit() when the queue is full (the drop path)
//   BM_StoreWriteBatch         TraceStore::write of 512-trace batches into a WAL file
//   BM_TracerSustained         submit 20k traces and flush: end-to-end traces/s through the writer
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>

#include "modelux/trace.hpp"

using namespace modelux;
using namespace std::chrono_literals;

namespace {

DecisionTrace realistic_trace(std::uint64_t n) {
  DecisionTrace t;
  t.request_id = "req_" + std::to_string(1'000'000'000'000ULL + n) + "abcdefghijkl";
  t.time = WallTime{std::chrono::seconds{1'768'478'400}} + std::chrono::milliseconds{n};
  t.config = "@production";
  t.config_version = 7;
  t.strategy = "fallback";
  t.project = "acme";
  t.end_user = "user-42";
  t.tags = {{"env", "prod"}, {"feature", "chat"}};
  t.attempts.resize(2);
  auto& a = t.attempts[0];
  a.id = 1;
  a.model = "claude-haiku-4-5";
  a.provider = "anthropic";
  a.duration = 2000ms;
  a.outcome = "timeout";
  a.error = "attempt timeout 2000 ms";
  a.why_tried = "primary";
  a.why_ended = "attempt timeout 2000 ms";
  auto& b = t.attempts[1];
  b.id = 2;
  b.model = "gpt-4o-mini";
  b.provider = "openai";
  b.start_offset = 2000ms;
  b.duration = 812ms;
  b.ttft = 201ms;
  b.ok = true;
  b.outcome = "ok";
  b.status = 200;
  b.usage.prompt_tokens = 1200;
  b.usage.completion_tokens = 340;
  b.cost = {0.00018, 0.000204};
  b.why_tried = "fallback after timeout";
  b.why_ended = "served";
  t.ok = true;
  t.served_model = "gpt-4o-mini";
  t.served_provider = "openai";
  t.decision = "served by gpt-4o-mini (attempt 2)";
  t.reason = "primary timeout, secondary healthy";
  t.total = 2812ms;
  t.ttft = 2201ms;
  t.usage = b.usage;
  t.cost = b.cost;
  return t;
}

std::string bench_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("modelux-bench-") + name + "-" +
                                                      std::to_string(::getpid()) + ".db");
  for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + s);
  return p.string();
}
void remove_db(const std::string& p) {
  for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(p + s);
}

std::unique_ptr<Tracer> g_tracer;

// A tracer on an in-memory store whose node pool already holds `warm` recycled nodes (as in a
// running router whose writer keeps up), so a timed loop of up to `warm` submits measures
// steady-state submits: no node allocation, no page faults on fresh memory.
std::unique_ptr<Tracer> warm_tracer(std::size_t capacity, std::size_t warm) {
  auto t = std::move(*Tracer::open(
      TracerOptions{.path = ":memory:", .queue_capacity = capacity, .batch_size = 1 << 30, .flush_interval = Millis{60'000}},
      SteadyClock::instance()));
  for (std::size_t i = 0; i < warm; ++i) {  // all queued at once: `warm` distinct nodes
    DecisionTrace d;
    d.request_id = "warm";
    t->submit(std::move(d));
  }
  t->flush();  // the writer empties them into the pool
  return t;
}

void report(benchmark::State& state, const TracerStats& s) {
  state.counters["accepted"] = static_cast<double>(s.submitted - s.dropped);
  state.counters["dropped"] = static_cast<double>(s.dropped);
}

}  // namespace

static void BM_Null(benchmark::State& state) {
  std::uint64_t n = 0;
  for (auto _ : state) benchmark::DoNotOptimize(++n);
}
BENCHMARK(BM_Null);

static void BM_BuildTrace(benchmark::State& state) {
  std::uint64_t n = 0;
  for (auto _ : state) {
    DecisionTrace t = realistic_trace(n++);
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_BuildTrace);

// Fixed iteration count below the queue's capacity, so every submit takes the accept path
// (no drops) while the writer drains an in-memory store on the other core. The node pool is
// warmed first, so no submit allocates a node.
static void BM_BuildAndSubmit(benchmark::State& state) {
  if (state.thread_index() == 0)
    g_tracer = warm_tracer(1 << 18, 200'000);
  std::uint64_t n = static_cast<std::uint64_t>(state.thread_index()) << 40;
  for (auto _ : state) benchmark::DoNotOptimize(g_tracer->submit(realistic_trace(n++)));
  if (state.thread_index() == 0) {
    report(state, g_tracer->stats());
    g_tracer.reset();
  }
}
BENCHMARK(BM_BuildAndSubmit)->Iterations(200'000);
BENCHMARK(BM_BuildAndSubmit)->Iterations(100'000)->Threads(2)->UseRealTime();

static void BM_SubmitMinimal(benchmark::State& state) {
  if (state.thread_index() == 0)
    g_tracer = warm_tracer(1 << 18, 200'000);
  for (auto _ : state) {
    DecisionTrace t;
    t.request_id = "req_short";  // SSO: no allocation of its own
    benchmark::DoNotOptimize(g_tracer->submit(std::move(t)));
  }
  if (state.thread_index() == 0) {
    report(state, g_tracer->stats());
    g_tracer.reset();
  }
}
BENCHMARK(BM_SubmitMinimal)->Iterations(200'000);
BENCHMARK(BM_SubmitMinimal)->Iterations(100'000)->Threads(2)->UseRealTime();

static void BM_SubmitDropped(benchmark::State& state) {
  auto tracer = std::move(*Tracer::open(
      TracerOptions{.path = ":memory:", .queue_capacity = 2, .batch_size = 1 << 30, .flush_interval = Millis{60'000}},
      SteadyClock::instance()));
  DecisionTrace t;
  for (auto _ : state) benchmark::DoNotOptimize(tracer->submit(std::move(t)));
  report(state, tracer->stats());
}
BENCHMARK(BM_SubmitDropped);

static void BM_StoreWriteBatch(benchmark::State& state) {
  const std::string path = bench_db("store");
  auto store = *TraceStore::open(path);
  std::vector<DecisionTrace> batch;
  std::uint64_t n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    batch.clear();
    for (int i = 0; i < 512; ++i) batch.push_back(realistic_trace(n++));
    state.ResumeTiming();
    auto r = store->write(batch);
    if (!r) state.SkipWithError(r.error().message.c_str());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n));
  store.reset();
  remove_db(path);
}
BENCHMARK(BM_StoreWriteBatch)->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_TracerSustained(benchmark::State& state) {
  const std::string path = bench_db("tracer");
  auto tracer = std::move(*Tracer::open(TracerOptions{.path = path}, SteadyClock::instance()));
  std::uint64_t n = 0;
  constexpr int kPerIteration = 20'000;
  for (auto _ : state) {
    for (int i = 0; i < kPerIteration; ++i) tracer->submit(realistic_trace(n++));
    tracer->flush();
  }
  auto s = tracer->stats();
  state.SetItemsProcessed(static_cast<std::int64_t>(s.written));
  report(state, s);
  tracer.reset();
  remove_db(path);
}
BENCHMARK(BM_TracerSustained)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

BENCHMARK_MAIN();
