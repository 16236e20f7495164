// Steady-state heap allocations of a routing decision. This executable replaces the global
// operator new to count allocations, so it holds only these tests.
//
// The issue's bar: a reused RoutingSession (the steady state of a driver that keeps one per
// worker) does no heap allocation per decision for single and fallback configs, including a
// decision that fails over once. A count is not a timing: it is exact and machine-independent.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "modelux/policy.hpp"

#include "support/catalog_resolver.hpp"

namespace {
std::atomic<long> g_allocs{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

using namespace modelux;
using modelux::testing::CatalogResolver;

namespace {

ChatRequest make_request() {
  ChatRequest r;
  r.model = "@production";
  Message sys;
  sys.role = "system";
  ContentPart p;
  p.text = "You are a concise assistant.";
  sys.content.push_back(p);
  Message u;
  u.role = "user";
  ContentPart q;
  q.text = "What is the capital of France? Answer in one word.";
  u.content.push_back(q);
  r.messages = {sys, u};
  return r;
}

/// Runs one request through `s`: every attempt fails with `first_error` until `fail_first`
/// attempts have failed, then succeeds. Returns the heap allocations it made.
long decide(RoutingSession& s, const std::shared_ptr<const Policy>& p, SessionInputs& in, ManualClock& clock,
            int fail_first, AttemptResult& ok, AttemptResult& bad) {
  long before = g_allocs.load();
  in.start = clock.now();
  s.reset(p, in);
  int failures = 0;
  Step st = s.next(in.start);
  while (st.kind == Step::Kind::attempt) {
    for (const auto& a : st.attempts) {
      AttemptResult& r = failures < fail_first ? bad : ok;
      if (failures < fail_first) ++failures;
      r.id = a.id;
      s.report(r, in.start);  // a copy of a result without a body: no allocation of its own
    }
    st = s.next(in.start);
  }
  long n = g_allocs.load() - before;
  REQUIRE(st.kind == Step::Kind::done);  // outside the count: doctest's assertions allocate
  return n;
}

}  // namespace

TEST_CASE("A reused session decides single and fallback configs without heap allocation") {
  CatalogResolver r;
  const ChatRequest req = make_request();
  CallContext ctx;
  ctx.project = "acme";
  ctx.end_user = "user-17";
  ctx.tags = {{"tier", "pro"}};
  ManualClock clock;
  SessionInputs in;
  in.request = &req;
  in.context = &ctx;
  AttemptResult ok;
  ok.ok = true;
  ok.latency = std::chrono::milliseconds(300);
  ok.usage.prompt_tokens = 30;
  ok.usage.completion_tokens = 2;
  AttemptResult bad;
  bad.error.kind = ErrorKind::rate_limited;
  bad.error.status = 429;
  struct Case {
    const char* config;
    int fail_first;
  };
  const Case cases[] = {
      {R"({"strategy":"single","model":"gpt-4o","timeout_ms":30000})", 0},
      {R"({"strategy":"fallback","attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},
        {"model":"gpt-4o-mini","timeout_ms":3000}],"retry_on":["429","5xx","timeout"],"total_budget_ms":8000})",
       0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.config);
    auto p = Policy::compile(Json::parse(c.config), r, "@bench");
    REQUIRE(p);
    RoutingSession s;
    AttemptResult o = ok, b = bad;
    decide(s, *p, in, clock, c.fail_first, o, b);  // warm-up: buffers reach their size
    for (int i = 0; i < 100; ++i) {
      in.seed = static_cast<std::uint64_t>(i);
      long n = decide(s, *p, in, clock, c.fail_first, o, b);
      REQUIRE(n == 0);
    }
    // The same decision in a fresh session does allocate: the counter is live.
    long before = g_allocs.load();
    RoutingSession fresh(*p, in);
    CHECK(g_allocs.load() > before);
  }
}
