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
//   BM_StoreFloor              the SQLite floor: the same traces' JSON appended to one table with no
//                              index, 2048 per transaction (the baseline for the two below)
//   BM_StoreThroughput         TraceStore::write of proxy-like traces (random request ids, 1-3
//                              attempts, tags, usage) into a store that already holds 100k traces
//   BM_StoreSimple             the same with the proxy's own traces (1 attempt, no tags, no user)
//   BM_WriterThroughput        the same traces through the real Tracer (submit -> writer thread ->
//                              file): traces/s and the writer's CPU per trace (process CPU minus the
//                              submitting thread's)
#include <benchmark/benchmark.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ctime>
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

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A trace as the proxy writes it: a request id from new_request_id() (as the proxy's, so the id
// indexes see the proxy's insert order), 1 attempt in 7 of 10 requests, 2 in 2, 3 in 1 (failed
// attempts first, each with its error), 2-3 tags, one of 1,000 users and 5 projects, usage and
// cost on the served attempt, one budget action.
DecisionTrace proxy_trace(std::uint64_t n) {
  static const char* models[][2] = {{"gpt-4o-mini", "openai"}, {"claude-haiku-4-5", "anthropic"}, {"gemini-2.5-flash", "google"}};
  static const char* projects[] = {"acme", "beta", "gamma", "delta", "epsilon"};
  const std::uint64_t r = splitmix(n);
  DecisionTrace t;
  t.request_id = new_request_id();
  t.time = WallTime{std::chrono::seconds{1'768'478'400}} + std::chrono::microseconds{n * 33};
  t.config = "@production";
  t.config_version = 7;
  t.strategy = "fallback";
  t.project = projects[r % 5];
  t.end_user = "user-" + std::to_string((r >> 8) % 1000);
  t.api_key_id = "key_prod_01";
  t.tags = {{"env", "prod"}, {"feature", (r >> 20) % 2 ? "chat" : "search"}};
  if ((r >> 24) % 3 == 0) t.tags.emplace_back("team", "growth");
  t.est_input_tokens = 1100;
  t.max_tokens = 512;
  const unsigned roll = static_cast<unsigned>((r >> 32) % 10);
  const std::size_t n_attempts = roll < 7 ? 1 : roll < 9 ? 2 : 3;
  Nanos start{0};
  for (std::size_t i = 0; i < n_attempts; ++i) {
    AttemptRecord a;
    a.id = static_cast<std::uint32_t>(i + 1);
    a.model = models[i][0];
    a.provider = models[i][1];
    a.start_offset = start;
    a.why_tried = i == 0 ? "primary" : "fallback after rate_limited";
    if (i + 1 < n_attempts) {
      a.duration = 40ms;
      a.outcome = "rate_limited";
      a.status = 429;
      a.error = "429 from provider: Rate limit reached for requests per minute";
      a.why_ended = "429 from provider";
    } else {
      a.duration = 800ms;
      a.ttft = 200ms;
      a.ok = true;
      a.outcome = "ok";
      a.status = 200;
      a.usage.prompt_tokens = 1000 + static_cast<std::int64_t>(r % 500);
      a.usage.completion_tokens = 100 + static_cast<std::int64_t>((r >> 12) % 300);
      a.cost = {0.00015 * static_cast<double>(a.usage.prompt_tokens) / 1000,
                0.0006 * static_cast<double>(a.usage.completion_tokens) / 1000};
      a.why_ended = "served";
    }
    start += a.duration;
    t.attempts.push_back(std::move(a));
  }
  const AttemptRecord& served = t.attempts.back();
  t.ok = true;
  t.served_model = served.model;
  t.served_provider = served.provider;
  t.decision = "served by " + served.model + " (attempt " + std::to_string(n_attempts) + ")";
  t.reason = n_attempts == 1 ? "primary healthy" : "primary rate_limited, next healthy";
  t.total = start;
  t.ttft = start - 600ms;
  t.usage = served.usage;
  t.cost = served.cost;
  t.budget_actions = {"reserved 0.0012 on project:" + t.project + "/daily"};
  return t;
}

// CPU seconds of the whole process and of the calling thread.
double process_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
double thread_cpu_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Bytes this process has read and written through system calls (/proc/self/io rchar, wchar):
// SQLite's page reads that miss its cache, WAL appends and checkpoints.
std::pair<double, double> io_bytes() {
  std::pair<double, double> rw{0, 0};
  if (FILE* f = std::fopen("/proc/self/io", "r")) {
    char key[64];
    unsigned long long v = 0;
    while (std::fscanf(f, "%63s %llu", key, &v) == 2) {
      if (std::string_view(key) == "rchar:") rw.first = static_cast<double>(v);
      if (std::string_view(key) == "wchar:") rw.second = static_cast<double>(v);
    }
    std::fclose(f);
  }
  return rw;
}

constexpr std::uint64_t kPrefill = 100'000;  // traces already in the store when timing starts
constexpr int kChunk = 20'000;               // traces per timed iteration

std::string bench_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("modelux-bench-") + name + "-" +
                                                      std::to_string(::getpid()) + ".db");
  for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + s);
  return p.string();
}
void remove_db(const std::string& p) {
  if (std::getenv("MODELUX_BENCH_KEEP_DB")) return;  // keep the file for inspection (dbstat)
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

// The floor any SQLite store pays for these traces: their JSON appended to a rowid table with no
// other index, 2048 rows per transaction, in the same kind of file (WAL, synchronous=NORMAL).
static void BM_StoreFloor(benchmark::State& state) {
  const std::string path = bench_db("floor");
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(id TEXT, body TEXT)", nullptr,
               nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t VALUES(?,?)", -1, &ins, nullptr);
  std::uint64_t n = 0;
  std::vector<std::pair<std::string, std::string>> rows;
  for (auto _ : state) {
    state.PauseTiming();
    rows.clear();
    for (int i = 0; i < kChunk; ++i) {
      DecisionTrace t = proxy_trace(n++);
      rows.emplace_back(t.request_id, t.to_json().dump());
    }
    state.ResumeTiming();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (i % 2048 == 0) sqlite3_exec(db, i ? "COMMIT; BEGIN" : "BEGIN", nullptr, nullptr, nullptr);
      sqlite3_bind_text(ins, 1, rows[i].first.data(), static_cast<int>(rows[i].first.size()), SQLITE_STATIC);
      sqlite3_bind_text(ins, 2, rows[i].second.data(), static_cast<int>(rows[i].second.size()), SQLITE_STATIC);
      sqlite3_step(ins);
      sqlite3_reset(ins);
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n));
  sqlite3_finalize(ins);
  sqlite3_close(db);
  remove_db(path);
}
BENCHMARK(BM_StoreFloor)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

// TraceStore::write of proxy-like traces in batches of `range(0)` into a store that already
// holds kPrefill of them (a store that has been running, not an empty file).
static void store_throughput(benchmark::State& state, DecisionTrace (*make)(std::uint64_t)) {
  const std::string path = bench_db("throughput");
  auto store = *TraceStore::open(path);
  const auto batch_size = static_cast<std::size_t>(state.range(0));
  std::uint64_t n = 0;
  std::vector<DecisionTrace> batch;
  auto write_all = [&](std::vector<DecisionTrace>& all) {
    for (std::size_t i = 0; i < all.size(); i += batch_size) {
      batch.assign(std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(i)),
                   std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), i + batch_size))));
      if (auto r = store->write(batch); !r) return false;
    }
    return true;
  };
  std::vector<DecisionTrace> all;
  while (n < kPrefill) {
    all.clear();
    for (int i = 0; i < kChunk; ++i) all.push_back(make(n++));
    write_all(all);
  }
  const std::uint64_t first = n;
  for (auto _ : state) {
    state.PauseTiming();
    all.clear();
    for (int i = 0; i < kChunk; ++i) all.push_back(make(n++));
    state.ResumeTiming();
    if (!write_all(all)) state.SkipWithError("write failed");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n - first));
  store.reset();
  remove_db(path);
}
static void BM_StoreThroughput(benchmark::State& state) { store_throughput(state, proxy_trace); }
BENCHMARK(BM_StoreThroughput)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

// The proxy's own traces (what gateway.py's modelux-full writes): one served attempt, the API
// key's project and org, no tags, no end user.
DecisionTrace simple_trace(std::uint64_t n) {
  DecisionTrace t = proxy_trace(n);
  if (t.attempts.size() > 1) t.attempts.erase(t.attempts.begin(), t.attempts.end() - 1);
  t.attempts[0].start_offset = Nanos{0};
  t.attempts[0].why_tried = "primary";
  t.total = t.attempts[0].duration;
  t.ttft = t.attempts[0].ttft;
  t.decision = "served by " + t.served_model + " (attempt 1)";
  t.reason = "primary healthy";
  t.tags.clear();
  t.end_user.clear();
  t.project = "bench";
  t.org = "bench-org";
  return t;
}
static void BM_StoreSimple(benchmark::State& state) { store_throughput(state, simple_trace); }
BENCHMARK(BM_StoreSimple)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

// The real writer: kChunk prebuilt traces submitted as fast as one thread can, then flush();
// the store holds kPrefill traces first. Reports traces/s (items_per_second, wall) and
// writer_us_per_trace: the process's CPU over the timed part minus the submitting thread's,
// i.e. the writer thread (serialise, scrub, SQLite), per trace written.
static void BM_WriterThroughput(benchmark::State& state) {
  const std::string path = bench_db("writer");
  TracerOptions opts{.path = path};
  if (state.range(0) > 0) opts.batch_size = static_cast<std::size_t>(state.range(0));  // 0: the default
  auto tracer = std::move(*Tracer::open(opts, SteadyClock::instance()));
  std::uint64_t n = 0;
  std::vector<DecisionTrace> all;
  auto submit_all = [&] {
    for (auto& t : all) tracer->submit(std::move(t));
    tracer->flush();
  };
  while (n < kPrefill) {
    all.clear();
    for (int i = 0; i < kChunk; ++i) all.push_back(proxy_trace(n++));
    submit_all();
  }
  const std::uint64_t written0 = tracer->stats().written;
  double writer_cpu = 0, read_bytes = 0, written_bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    all.clear();
    for (int i = 0; i < kChunk; ++i) all.push_back(proxy_trace(n++));
    const double p0 = process_cpu_s(), t0 = thread_cpu_s();
    const auto io0 = io_bytes();
    state.ResumeTiming();
    submit_all();
    state.PauseTiming();
    writer_cpu += (process_cpu_s() - p0) - (thread_cpu_s() - t0);
    const auto io1 = io_bytes();
    read_bytes += io1.first - io0.first;
    written_bytes += io1.second - io0.second;
    state.ResumeTiming();
  }
  auto s = tracer->stats();
  const auto written = s.written - written0;
  state.SetItemsProcessed(static_cast<std::int64_t>(written));
  const double w = written ? static_cast<double>(written) : 1;
  state.counters["writer_us_per_trace"] = writer_cpu * 1e6 / w;
  state.counters["read_B_per_trace"] = read_bytes / w;
  state.counters["written_B_per_trace"] = written_bytes / w;
  report(state, s);
  tracer.reset();
  remove_db(path);
}
BENCHMARK(BM_WriterThroughput)->Arg(0)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

BENCHMARK_MAIN();
