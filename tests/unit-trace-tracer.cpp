// Tracer: concurrent submitters, the drop policy and its counters, flush and shutdown, body
// capture/redaction, secret scrubbing, and staying up when the file is locked.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <thread>
#if defined(__linux__)
#include <sched.h>
#endif

#include "modelux/scrub.hpp"
#include "unit-trace-support.hpp"

using namespace trace_test;

namespace {
DecisionTrace simple(const std::string& id, WallTime t = base_time()) {
  return make_trace(id, t, {{"gpt-4o-mini", "openai", true, "ok", 20ms, 0.001, 0.002, 10, 5}}, "acme", "u1",
                    {{"env", "prod"}});
}
}  // namespace

TEST_CASE("Tracer: traces from concurrent threads are all written or counted as dropped") {
  TempDb db("tracer-concurrent");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 3000;
  TracerStats final_stats;
  {
    auto tracer = Tracer::open(TracerOptions{.path = db.path, .queue_capacity = 1024, .batch_size = 256,
                                             .flush_interval = Millis{5}},
                               SteadyClock::instance());
    REQUIRE(tracer);
    std::vector<std::thread> threads;
    std::atomic<std::uint64_t> accepted{0};
    std::vector<std::vector<std::string>> accepted_ids(kThreads);
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          std::string id = "req_" + std::to_string(t) + "_" + std::to_string(i);
          if ((*tracer)->submit(simple(id))) {
            ++accepted;
            accepted_ids[t].push_back(std::move(id));
          }
        }
      });
    for (auto& th : threads) th.join();
    (*tracer)->flush();
    final_stats = (*tracer)->stats();
    CHECK(final_stats.submitted == kThreads * kPerThread);
    // The queue drops only when full, so at least its capacity was accepted, whatever the
    // writer's pace: a tracer that dropped everything fails here.
    CHECK(accepted.load() >= 1024);
    CHECK(final_stats.written + final_stats.dropped == final_stats.submitted);
    CHECK(final_stats.written == accepted.load());
    CHECK(final_stats.queued == 0);
    CHECK(final_stats.write_errors == 0);
    auto n = (*tracer)->store()->count(TraceQuery{});
    REQUIRE(n);
    CHECK(*n == final_stats.written);
    // Every accepted trace is the one in the file (not merely the right number of rows).
    std::size_t missing = 0;
    for (const auto& ids : accepted_ids)
      for (const auto& id : ids) {
        auto got = (*tracer)->store()->get(id);
        if (!got || !got->has_value() || (*got)->request_id != id) ++missing;
      }
    CHECK(missing == 0);
  }
  // After shutdown the file holds every written trace and the persisted counters agree.
  auto ro = TraceStore::open(db.path, TraceStore::Mode::read_only);
  REQUIRE(ro);
  auto c = (*ro)->counters();
  REQUIRE(c);
  CHECK(c->stored == final_stats.written);
  CHECK(c->written == final_stats.written);
  CHECK(c->dropped == final_stats.dropped);
}

TEST_CASE("Tracer: a full queue drops the newest traces and counts them") {
  TempDb db("tracer-full");
  // The writer sleeps for a long interval and a batch is never full, so nothing drains while
  // we submit: exactly the queue's capacity is accepted.
  auto tracer = Tracer::open(TracerOptions{.path = db.path, .queue_capacity = 8, .batch_size = 1000,
                                           .flush_interval = Millis{60'000}},
                             SteadyClock::instance());
  REQUIRE(tracer);
  int accepted = 0;
  for (int i = 0; i < 100; ++i) accepted += (*tracer)->submit(simple("r" + std::to_string(i))) ? 1 : 0;
  CHECK(accepted == 8);
  auto s = (*tracer)->stats();
  CHECK(s.submitted == 100);
  CHECK(s.dropped == 92);
  CHECK(s.queued == 8);
  (*tracer)->flush();
  s = (*tracer)->stats();
  CHECK(s.written == 8);
  CHECK(s.queued == 0);
  // The first eight were kept (drop newest), and the drop count reached the file.
  auto kept = (*tracer)->store()->get("r7");
  REQUIRE(kept);
  CHECK(kept->has_value());
  auto lost = (*tracer)->store()->get("r8");
  REQUIRE(lost);
  CHECK_FALSE(lost->has_value());
  auto c = (*tracer)->store()->counters();
  REQUIRE(c);
  CHECK(c->dropped == 92);
  CHECK(c->written == 8);
}

TEST_CASE("Tracer: destruction flushes everything still queued") {
  TempDb db("tracer-shutdown");
  {
    auto tracer = Tracer::open(TracerOptions{.path = db.path, .batch_size = 64, .flush_interval = Millis{60'000}},
                               SteadyClock::instance());
    REQUIRE(tracer);
    for (int i = 0; i < 500; ++i) REQUIRE((*tracer)->submit(simple("s" + std::to_string(i))));
  }
  auto ro = TraceStore::open(db.path, TraceStore::Mode::read_only);
  REQUIRE(ro);
  auto n = (*ro)->count(TraceQuery{});
  REQUIRE(n);
  CHECK(*n == 500);
  // And a new tracer on the same file continues where the last one stopped.
  {
    auto tracer = Tracer::open(TracerOptions{.path = db.path}, SteadyClock::instance());
    REQUIRE(tracer);
    REQUIRE((*tracer)->submit(simple("after-restart")));
  }
  auto again = TraceStore::open(db.path, TraceStore::Mode::read_only);
  REQUIRE(again);
  auto c = (*again)->counters();
  REQUIRE(c);
  CHECK(c->stored == 501);
  CHECK(c->written == 501);
}

TEST_CASE("Tracer: bodies are dropped by default, and capped and redacted when captured") {
  SUBCASE("off by default") {
    auto tracer = Tracer::open(TracerOptions{}, SteadyClock::instance());
    REQUIRE(tracer);
    DecisionTrace t = simple("b1");
    t.request_body = R"({"messages":[{"role":"user","content":"secret plans"}]})";
    t.response_body = "hello";
    REQUIRE((*tracer)->submit(std::move(t)));
    (*tracer)->flush();
    auto got = (*tracer)->store()->get("b1");
    REQUIRE(got);
    REQUIRE(got->has_value());
    CHECK((*got)->request_body.empty());
    CHECK((*got)->response_body.empty());
  }
  SUBCASE("captured with redaction and a cap") {
    auto tracer = Tracer::open(TracerOptions{.capture_bodies = true, .body_cap_bytes = 80,
                                             .redact_fields = {"password", "ssn"}},
                               SteadyClock::instance());
    REQUIRE(tracer);
    DecisionTrace t = simple("b2");
    t.request_body = R"({"user":{"name":"ann","password":"hunter2","nested":[{"ssn":"123-45-6789"}]}})";
    t.response_body = std::string(500, 'x');
    REQUIRE((*tracer)->submit(std::move(t)));
    (*tracer)->flush();
    auto got = (*tracer)->store()->get("b2");
    REQUIRE(got);
    REQUIRE(got->has_value());
    const std::string& req = (*got)->request_body;
    CHECK(req.find("hunter2") == std::string::npos);
    CHECK(req.find("123-45-6789") == std::string::npos);
    CHECK(req.find(R"("password":"[redacted]")") != std::string::npos);
    CHECK(req.find(R"("name":"ann")") != std::string::npos);
    CHECK((*got)->response_body == std::string(80, 'x') + "…[truncated 420 bytes]");
  }
}

TEST_CASE("prepare_body: caps without splitting a UTF-8 character and survives hostile input") {
  std::string body = "ab\xC3\xA9\xC3\xA9";  // "abéé" (6 bytes)
  CHECK(prepare_body(body, {}, 3) == "ab…[truncated 4 bytes]");
  CHECK(prepare_body(body, {}, 100) == body);
  std::string deep(100000, '[');
  CHECK(prepare_body(deep, {"k"}, 10).size() < 64);  // not JSON-parsed, only capped
  CHECK(prepare_body("not json", {"k"}, 100) == "not json");
}

TEST_CASE("Tracer: provider keys echoed in error messages are scrubbed") {
  auto tracer = Tracer::open(TracerOptions{}, SteadyClock::instance());
  REQUIRE(tracer);
  DecisionTrace t = make_trace("k1", base_time(),
                               {{"gpt-4o", "openai", false, "auth", 5ms, 0, 0, 0, 0, 0ms,
                                 "Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwxyz0123"}});
  t.error_message = "auth failed with Bearer abcdefghijklmnop1234567890";
  REQUIRE((*tracer)->submit(std::move(t)));
  (*tracer)->flush();
  auto got = (*tracer)->store()->get("k1");
  REQUIRE(got);
  REQUIRE(got->has_value());
  CHECK((*got)->attempts[0].error == "Incorrect API key provided: [redacted]");
  // The scheme word stays so a reader sees a bearer token was there; the token goes.
  CHECK((*got)->error_message == "auth failed with Bearer [redacted]");
}

TEST_CASE("Tracer: a registered secret without a known prefix is scrubbed from every field") {
  add_secret("zz-tracer-canary-0042");
  auto tracer = Tracer::open(TracerOptions{}, SteadyClock::instance());
  REQUIRE(tracer);
  DecisionTrace t = make_trace("k2", base_time(),
                               {{"gpt-4o", "openai", false, "auth", 5ms, 0, 0, 0, 0, 0ms, "bad key zz-tracer-canary-0042"}});
  t.reason = "primary failed: bad key zz-tracer-canary-0042";
  t.decision = "zz-tracer-canary-0042";
  t.end_user = "user zz-tracer-canary-0042";
  t.tags = {{"note", "zz-tracer-canary-0042"}};
  t.budget_actions = {"blocked for zz-tracer-canary-0042"};
  REQUIRE((*tracer)->submit(std::move(t)));
  (*tracer)->flush();
  auto got = (*tracer)->store()->get("k2");
  REQUIRE(got);
  REQUIRE(got->has_value());
  CHECK((*got)->to_json().dump().find("zz-tracer-canary-0042") == std::string::npos);
  CHECK((*got)->reason == "primary failed: bad key [redacted]");
  CHECK((*got)->attempts[0].error == "bad key [redacted]");
}

TEST_CASE("Tracer: keeps accepting while the file is locked, counts the losses, recovers after") {
  TempDb db("tracer-locked");
  auto tracer = Tracer::open(TracerOptions{.path = db.path, .flush_interval = Millis{5}, .busy_timeout = Millis{10},
                                           .write_retries = 1},
                             SteadyClock::instance());
  REQUIRE(tracer);
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(db.path.c_str(), &raw) == SQLITE_OK);
  REQUIRE(sqlite3_exec(raw, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);

  for (int i = 0; i < 10; ++i) CHECK((*tracer)->submit(simple("l" + std::to_string(i))));
  (*tracer)->flush();  // returns: the batch cannot be written and is counted
  auto s = (*tracer)->stats();
  CHECK(s.submitted == 10);
  CHECK(s.written == 0);
  CHECK(s.dropped == 10);
  CHECK(s.write_errors >= 1);
  CHECK(s.last_error.find("locked") != std::string::npos);

  sqlite3_exec(raw, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(raw);
  for (int i = 0; i < 5; ++i) CHECK((*tracer)->submit(simple("ok" + std::to_string(i))));
  (*tracer)->flush();
  s = (*tracer)->stats();
  CHECK(s.written == 5);
  CHECK(s.written + s.dropped == s.submitted);
  auto c = (*tracer)->store()->counters();
  REQUIRE(c);
  CHECK(c->written == 5);
  CHECK(c->dropped == 10);
  CHECK(c->write_errors == s.write_errors);
}

TEST_CASE("Tracer: retention removes old traces at open and as the clock moves") {
  TempDb db("tracer-retention");
  ManualClock clock(base_time());
  {
    auto store = TraceStore::open(db.path);
    REQUIRE(store);
    REQUIRE((*store)->write({simple("old", base_time() - 24h * 10), simple("new", base_time() - 1h)}));
  }
  auto tracer = Tracer::open(TracerOptions{.path = db.path, .flush_interval = Millis{1}, .retention_days = 3}, clock);
  REQUIRE(tracer);
  auto old = (*tracer)->store()->get("old");
  REQUIRE(old);
  CHECK_FALSE(old->has_value());
  CHECK((*tracer)->store()->get("new")->has_value());

  clock.advance(std::chrono::hours{24 * 4});  // "new" is now 4 days old
  REQUIRE((*tracer)->submit(simple("fresh", clock.wall_now())));
  (*tracer)->flush();  // the writer re-applies retention (hourly, on the injected clock)
  (*tracer)->flush();
  CHECK_FALSE((*tracer)->store()->get("new")->has_value());
  CHECK((*tracer)->store()->get("fresh")->has_value());
}

TEST_CASE("Tracer: in-memory store is queryable through store()") {
  auto tracer = Tracer::open(TracerOptions{.path = ":memory:"}, SteadyClock::instance());
  REQUIRE(tracer);
  for (int i = 0; i < 20; ++i) REQUIRE((*tracer)->submit(simple("m" + std::to_string(i))));
  (*tracer)->flush();
  auto spend = (*tracer)->store()->spend(SpendDimension::project, base_time() - 1h, base_time() + 1h);
  REQUIRE(spend);
  REQUIRE(spend->rows.size() == 1);
  CHECK(spend->rows[0].requests == 20);
  CHECK(spend->total.total_usd() == doctest::Approx(0.06));
}

#if defined(__linux__)
TEST_CASE("Tracer: the writer thread is named mlx-trace and runs as SCHED_BATCH") {
  // The writer shares a core with the io thread: SCHED_BATCH keeps its CPU share but stops it
  // preempting the io thread on wake-up; the name is how top, perf and the gateway benchmark
  // tell it apart.
  auto tracer = Tracer::open(TracerOptions{.path = ":memory:"}, SteadyClock::instance());
  REQUIRE(tracer);
  REQUIRE((*tracer)->submit(simple("sched")));
  (*tracer)->flush();  // the writer has run (and set both) by now
  int found = 0, policy = -1;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name != "mlx-trace") continue;
    ++found;
    policy = sched_getscheduler(static_cast<pid_t>(std::stoi(task.path().filename().string())));
  }
  CHECK(found == 1);
  CHECK(policy == SCHED_BATCH);
}
#endif
TEST_CASE("Tracer: release_idle frees the surplus recycled nodes and the page cache a burst grew") {
  TempDb db("tracer-release-idle");
  // The writer does not wake on its own before flush(): every submit finds the node pool
  // empty and allocates, so the writer hands all 1,000 nodes back to the pool.
  auto tracer = Tracer::open(
      TracerOptions{.path = db.path, .queue_capacity = 4096, .batch_size = 4096, .flush_interval = Millis{60'000}},
      SteadyClock::instance());
  REQUIRE(tracer);
  constexpr std::size_t kBurst = 1000;
  for (std::size_t i = 0; i < kBurst; ++i) REQUIRE((*tracer)->submit(simple("b" + std::to_string(i))));
  (*tracer)->flush();
  auto store = (*tracer)->store();
  const std::size_t cache_before = store->cache_bytes();
  CHECK(cache_before > 0);

  auto released = (*tracer)->release_idle();
  CHECK(released.nodes == kBurst - 8);
  CHECK(released.cache_bytes > 0);
  CHECK(store->cache_bytes() < cache_before);
  CHECK(store->cache_bytes() + released.cache_bytes == cache_before);
  // Nothing more to give back, and the tracer keeps working (the kept nodes are reused).
  CHECK((*tracer)->release_idle().nodes == 0);
  for (std::size_t i = 0; i < 100; ++i) REQUIRE((*tracer)->submit(simple("a" + std::to_string(i))));
  (*tracer)->flush();
  auto n = store->count(TraceQuery{});
  REQUIRE(n);
  CHECK(*n == kBurst + 100);
  CHECK((*tracer)->stats().dropped == 0);
}

TEST_CASE("Tracer: release_idle gives the empty queue's pages back and the queue keeps its bounds and counts") {
  TempDb db("tracer-rebase");
  // A queue of 8 that the writer drains only on flush(): each round fills it exactly, so a
  // rebase that broke the positions shows as a wrong number accepted (or a hang).
  auto tracer = Tracer::open(
      TracerOptions{.path = db.path, .queue_capacity = 8, .batch_size = 1000, .flush_interval = Millis{60'000}},
      SteadyClock::instance());
  REQUIRE(tracer);
  std::uint64_t submitted = 0, accepted = 0;
  for (int round = 0; round < 20; ++round) {
    // Odd rounds stop halfway through the queue: the next rebase starts from a partial lap.
    const int n = round % 2 == 0 ? 9 : 5;
    int ok = 0;
    for (int i = 0; i < n; ++i) ok += (*tracer)->submit(simple("r" + std::to_string(round) + "_" + std::to_string(i)));
    submitted += n;
    accepted += ok;
    CHECK(ok == std::min(n, 8));  // full at exactly the capacity, whatever the base
    auto s = (*tracer)->stats();
    CHECK(s.submitted == submitted);
    CHECK(s.queued == static_cast<std::uint64_t>(ok));
    (*tracer)->flush();
    auto released = (*tracer)->release_idle();
    CHECK(released.ring_bytes > 0);   // the cells this round wrote were resident, and are given back
    CHECK(released.batch_bytes > 0);  // the batch the writer reserved for them
    auto again = (*tracer)->release_idle();
    CHECK(again.ring_bytes == 0);  // nothing used since: no second rebase
    CHECK(again.batch_bytes == 0);
    s = (*tracer)->stats();
    CHECK(s.submitted == submitted);
    CHECK(s.written == accepted);
    CHECK(s.dropped == submitted - accepted);
    CHECK(s.queued == 0);
  }
  auto n = (*tracer)->store()->count(TraceQuery{});
  REQUIRE(n);
  CHECK(*n == accepted);
  auto last = (*tracer)->store()->get("r19_4");
  REQUIRE(last);
  CHECK(last->has_value());
}

TEST_CASE("Tracer: release_idle racing concurrent submitters loses and drops no trace") {
  TempDb db("tracer-rebase-concurrent");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1000;
  // The queue holds every trace, so none may be dropped: a claim misled by a rebase (a stale
  // base or a dropped page read as "full") shows as a drop, a broken position as a lost trace.
  auto tracer = Tracer::open(TracerOptions{.path = db.path, .queue_capacity = kThreads * kPerThread,
                                           .batch_size = 64, .flush_interval = Millis{1}},
                             SteadyClock::instance());
  REQUIRE(tracer);
  std::atomic<int> running{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        CHECK((*tracer)->submit(simple("c" + std::to_string(t) + "_" + std::to_string(i))));
        if (i % 10 == 9) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // lets the queue empty
      }
      --running;
    });
  int rebases = 0, calls = 0;
  while (running.load() > 0) {
    rebases += (*tracer)->release_idle().ring_bytes > 0;
    ++calls;
  }
  for (auto& th : threads) th.join();
  (*tracer)->flush();
  auto s = (*tracer)->stats();
  MESSAGE("rebases during the submits: " << rebases << " of " << calls << " calls");
  CHECK(s.submitted == kThreads * kPerThread);
  CHECK(s.dropped == 0);
  CHECK(s.written == kThreads * kPerThread);
  CHECK(s.queued == 0);
  auto n = (*tracer)->store()->count(TraceQuery{});
  REQUIRE(n);
  CHECK(*n == kThreads * kPerThread);
  rebases += (*tracer)->release_idle().ring_bytes > 0;  // once quiet the pages go back, if not already
  CHECK(rebases > 0);
}
