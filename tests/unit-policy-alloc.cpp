// Steady-state heap allocations of a routing decision. This executable replaces the global
// operator new to count allocations, so it holds only these tests.
//
// The issue's bar: a reused RoutingSession (the steady state of a driver that keeps one per
// worker) does no heap allocation per decision for single and fallback configs, including a
// decision that fails over once.
// A count is not a timing: it is exact and machine-independent.
#include <doctest/doctest.h>

#include "modelux/policy.hpp"

#include "support/catalog_resolver.hpp"
#include "support/counting_new.hpp"

using namespace modelux;
using modelux::testing::CatalogResolver;

namespace {

/// Runs one request through `s`: every attempt fails with `bad` until `fail_first` attempts
/// have failed, then succeeds. Returns the heap allocations it made; `attempts` counts the
/// attempts the session asked for.
long decide(RoutingSession& s, const std::shared_ptr<const Policy>& p, SessionInputs& in, ManualClock& clock,
            int fail_first, AttemptResult& ok, AttemptResult& bad, int& attempts) {
  long before = modelux::testing::heap_allocations.load();
  in.start = clock.now();
  s.reset(p, in);
  int failures = 0;
  attempts = 0;
  Step st = s.next(in.start);
  while (st.kind == Step::Kind::attempt) {
    for (const auto& a : st.attempts) {
      ++attempts;
      AttemptResult& r = failures < fail_first ? bad : ok;
      if (failures < fail_first) ++failures;
      r.id = a.id;
      s.report(r, in.start);  // a copy of a result without a body: no allocation of its own
    }
    st = s.next(in.start);
  }
  long n = modelux::testing::heap_allocations.load() - before;
  REQUIRE(st.kind == Step::Kind::done);  // outside the count: doctest's assertions allocate
  return n;
}


struct Case {
  const char* config;
  int fail_first;
};

const char* const kFallback = R"({"strategy":"fallback","attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},
      {"model":"gpt-4o-mini","timeout_ms":3000}],"retry_on":["429","5xx","timeout"],"total_budget_ms":8000})";

/// Decides each case 100 times on one reused session (after a warm-up) and requires no heap
/// allocation per decision, and exactly the attempts the case asks for.
void check_no_allocation(const Case* cases, std::size_t n_cases) {
  CatalogResolver r;
  const ChatRequest req = modelux::testing::decision_request();
  CallContext ctx;
  ctx.project = "acme";
  ctx.end_user = "user-17";
  ctx.tags = {{"tier", "pro"}};
  ManualClock clock;
  SessionInputs in;
  in.request = &req;
  in.context = &ctx;
  AttemptResult ok;
  ok.answer = ChatResponse{};
  ok.latency = std::chrono::milliseconds(300);
  ok.usage.prompt_tokens = 30;
  ok.usage.completion_tokens = 2;
  AttemptResult bad;  // failed
  bad.answer.error().kind = ErrorKind::rate_limited;
  bad.answer.error().status = 429;
  for (std::size_t k = 0; k < n_cases; ++k) {
    const Case& c = cases[k];
    CAPTURE(c.config);
    CAPTURE(c.fail_first);
    auto p = Policy::compile(Json::parse(c.config), r, "@bench");
    REQUIRE(p);
    RoutingSession s;
    AttemptResult o = ok, b = bad;
    int attempts = 0;
    decide(s, *p, in, clock, c.fail_first, o, b, attempts);  // warm-up: buffers reach their size
    for (int i = 0; i < 100; ++i) {
      in.seed = static_cast<std::uint64_t>(i);
      long n = decide(s, *p, in, clock, c.fail_first, o, b, attempts);
      REQUIRE(attempts == c.fail_first + 1);  // the failover really happened (and nothing more)
      REQUIRE(n == 0);
    }
    // The same decision in a fresh session does allocate: the counter is live.
    long before = modelux::testing::heap_allocations.load();
    RoutingSession fresh(*p, in);
    CHECK(modelux::testing::heap_allocations.load() > before);
  }
}

}  // namespace

TEST_CASE("A reused session decides single and fallback configs without heap allocation") {
  const Case cases[] = {
      {R"({"strategy":"single","model":"gpt-4o","timeout_ms":30000})", 0},
      {kFallback, 0},
  };
  check_no_allocation(cases, std::size(cases));
}

// A decision that fails over once writes more text than one that does not: the failed
// primary's trace record (why_ended "429 from provider"), the fallback's why_tried ("fallback
// 1 after rate_limited") and the note "primary rate_limited (429)". Each of those must land in
// a buffer the previous decision left behind: trace records reused in attempt order (not
// last-in-first-out, where the long and the short model name swap records), strings appended
// into rather than built from temporaries, notes and whys in session buffers kept across
// requests. This case failed with 5 allocations per decision before that.
TEST_CASE("A reused session decides a fallback that fails over once without heap allocation") {
  const Case cases[] = {{kFallback, 1}};  // the primary answers 429: the decision fails over
  check_no_allocation(cases, std::size(cases));
}
