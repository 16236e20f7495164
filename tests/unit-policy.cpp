// Routing session, config compilation, single and fallback strategies — on a ManualClock.
#include <doctest/doctest.h>

#include <functional>
#include <map>

#include "modelux/policy.hpp"

#include "support/catalog_resolver.hpp"

using namespace modelux;
using modelux::testing::CatalogResolver;
using namespace std::chrono_literals;

namespace {

class FakeHealth final : public HealthView {
 public:
  TargetStats stats(std::string_view key, Instant) const override {
    auto it = m.find(std::string(key));
    return it == m.end() ? TargetStats{} : it->second;
  }
  std::map<std::string, TargetStats> m;
};

struct Reply {
  bool ok = true;
  ErrorKind kind = ErrorKind::server_error;
  int status = 0;
  Nanos latency = 100ms;
  bool hang = false;       // never reported: the session must expire it
  bool delivered = false;
  std::string text = "hello";
};

struct Run {
  bool ok = false;
  Error error;
  Target served;
  DecisionTrace trace;
  Nanos elapsed{0};
  std::vector<AttemptPlan> plans;
  std::vector<Instant> started;
  std::string text;
};

ChatRequest make_request() {
  ChatRequest r;
  r.model = "@prod";
  Message m;
  m.role = "user";
  ContentPart p;
  p.text = "hi there";
  m.content.push_back(p);
  r.messages.push_back(m);
  return r;
}

/// A minimal driver: attempts finish after their scripted latency on the manual clock.
Run drive(std::shared_ptr<const Policy> p, const std::function<Reply(const AttemptPlan&)>& script, ManualClock& clock,
          const HealthView* health = nullptr, const CallContext* ctx = nullptr, std::uint64_t seed = 1,
          RoutingSession* reuse = nullptr) {
  static const ChatRequest req = make_request();
  static const CallContext default_ctx{"req_1", "acme", "org", "user-1", "key", {}, nullptr};
  SessionInputs in;
  in.request = &req;
  in.context = ctx ? ctx : &default_ctx;
  in.health = health;
  in.seed = seed;
  in.start = clock.now();
  RoutingSession fresh;
  RoutingSession& s = reuse ? *reuse : fresh;
  s.reset(p, in);
  std::vector<std::pair<Instant, AttemptResult>> pending;
  Run run;
  for (int guard = 0; guard < 10000; ++guard) {
    Step st = s.next(clock.now());
    if (st.kind == Step::Kind::done || st.kind == Step::Kind::failed) {
      run.ok = st.kind == Step::Kind::done;
      if (run.ok) {
        run.served = s.served();
        run.text = s.response().choices.empty() ? "" : s.response().choices[0].message.content[0].text;
      } else {
        run.error = s.error();
      }
      run.trace = s.trace();
      run.elapsed = clock.now() - in.start;
      return run;
    }
    if (st.kind == Step::Kind::attempt) {
      for (const auto& plan : st.attempts) {
        run.plans.push_back(plan);
        run.started.push_back(clock.now());
        Reply rep = script(plan);
        if (rep.hang) continue;
        AttemptResult r;
        r.id = plan.id;
        r.latency = rep.latency;
        r.delivered = rep.delivered;
        if (rep.ok) {
          Choice c;
          c.message.role = "assistant";
          ContentPart cp;
          cp.text = rep.text;
          c.message.content.push_back(cp);
          c.finish_reason = "stop";
          ChatResponse resp;
          resp.choices.push_back(c);
          r.answer = std::move(resp);
          r.usage.prompt_tokens = 10;
          r.usage.completion_tokens = 5;
        } else {
          Error e;
          e.kind = rep.kind;
          e.status = rep.status;
          e.message = "scripted failure";
          r.answer = std::unexpected(std::move(e));
        }
        pending.emplace_back(clock.now() + rep.latency, r);
      }
      continue;
    }
    // wait: jump to the earliest of wake_at and the next pending result
    Instant t = st.wake_at;
    for (auto& [at, r] : pending) t = std::min(t, at);
    if (t > clock.now()) clock.set(t);
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->first <= clock.now()) {
        s.report(it->second, clock.now());
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
  }
  FAIL("session did not finish");
  return run;
}

std::shared_ptr<const Policy> compile_ok(const Json& j, const PolicyResolver& r) {
  auto p = Policy::compile(j, r, "@prod");
  if (!p) FAIL(p.error().describe());
  return *p;
}

Json seed_chain() {
  return Json::parse(R"({"strategy":"fallback",
    "attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},{"model":"gpt-4o-mini","timeout_ms":3000,"retries":1}],
    "retry_on":["429","5xx","timeout"],"total_budget_ms":8000,
    "backoff":{"initial_ms":100,"max_ms":2000,"jitter":0.2}})");
}

}  // namespace

TEST_CASE("SingleStrategy: serves from its one model and traces it") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(Json::parse(R"({"strategy":"single","model":"gpt-4o","timeout_ms":30000})"), r);
  CHECK(p->strategy() == "single");
  auto run = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock);
  REQUIRE(run.ok);
  CHECK(run.served.model == "gpt-4o");
  CHECK(run.served.provider == "openai");
  CHECK(run.text == "hello");
  REQUIRE(run.trace.attempts.size() == 1);
  CHECK(run.trace.attempts[0].why_ended == "served");
  CHECK(run.trace.attempts[0].why_tried == "primary");
  CHECK(run.trace.served_model == "gpt-4o");
  CHECK(run.trace.cost.total() > 0);  // catalog prices were applied to the usage
  CHECK(run.trace.total == 100ms);
  CHECK(run.plans[0].deadline == run.started[0] + 30s);
}

TEST_CASE("Policy::single_model: plain model requests") {
  CatalogResolver r;
  auto p = Policy::single_model("gpt-4o-mini", r);
  REQUIRE(p);
  CHECK((*p)->strategy() == "single");
  CHECK((*p)->name() == "gpt-4o-mini");
  auto bad = Policy::single_model("no-such-model", r);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().kind == ErrorKind::invalid_config);
}

TEST_CASE("FallbackStrategy: advances on 429 within the total budget") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(seed_chain(), r);
  CHECK(p->total_budget() == 8s);
  auto run = drive(p, [](const AttemptPlan& a) {
    if (a.target.model == "claude-haiku-4-5") return Reply{false, ErrorKind::rate_limited, 429, 50ms};
    return Reply{};
  }, clock);
  REQUIRE(run.ok);
  CHECK(run.served.model == "gpt-4o-mini");
  REQUIRE(run.trace.attempts.size() == 2);
  CHECK(run.trace.attempts[0].outcome == "rate_limited");
  CHECK(run.trace.attempts[0].status == 429);
  CHECK(run.trace.attempts[0].why_ended == "429 from provider");
  CHECK(run.trace.attempts[1].why_tried == "fallback 1 after rate_limited");
  CHECK(run.trace.attempts[1].start_offset == 50ms);
  CHECK(run.trace.reason == "primary rate_limited (429), served by gpt-4o-mini");
  CHECK(run.trace.decision == "served by gpt-4o-mini (attempt 2)");
  CHECK(run.elapsed == 150ms);
}

TEST_CASE("FallbackStrategy: an error outside retry_on ends the request") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(seed_chain(), r);
  auto run = drive(p, [](const AttemptPlan&) { return Reply{false, ErrorKind::bad_request, 400, 20ms}; }, clock);
  REQUIRE_FALSE(run.ok);
  CHECK(run.error.kind == ErrorKind::bad_request);
  CHECK(run.trace.attempts.size() == 1);
  CHECK(run.trace.error_kind == "bad_request");
}

TEST_CASE("FallbackStrategy: a delivered stream never fails over") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(seed_chain(), r);
  auto run = drive(p, [](const AttemptPlan&) {
    Reply rep{false, ErrorKind::stream_interrupted, 0, 500ms};
    rep.delivered = true;
    return rep;
  }, clock);
  REQUIRE_FALSE(run.ok);
  CHECK(run.error.kind == ErrorKind::stream_interrupted);
  CHECK(run.trace.attempts.size() == 1);
  CHECK(run.trace.reason.find("no failover") != std::string::npos);
}

TEST_CASE("FallbackStrategy: a hung attempt times out at its own deadline and fails over") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(seed_chain(), r);
  auto run = drive(p, [](const AttemptPlan& a) {
    Reply rep;
    rep.hang = a.target.model == "claude-haiku-4-5";
    return rep;
  }, clock);
  REQUIRE(run.ok);
  CHECK(run.trace.attempts[0].outcome == "timeout");
  CHECK(run.trace.attempts[0].why_ended == "attempt timeout 2000 ms");
  CHECK(run.trace.attempts[1].start_offset == 2000ms);
  CHECK(run.elapsed == 2100ms);
}

TEST_CASE("FallbackStrategy: attempt deadline is min(now + timeout, total budget deadline)") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(Json::parse(R"({"strategy":"fallback","total_budget_ms":3000,
     "attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},{"model":"gpt-4o-mini","timeout_ms":3000}]})"), r);
  auto run = drive(p, [](const AttemptPlan& a) {
    Reply rep;
    rep.hang = true;
    (void)a;
    return rep;
  }, clock);
  REQUIRE_FALSE(run.ok);
  CHECK(run.error.kind == ErrorKind::timeout);
  REQUIRE(run.plans.size() == 2);
  CHECK(run.plans[0].deadline - run.started[0] == 2000ms);
  CHECK(run.plans[1].deadline - run.started[0] == 3000ms);  // total budget, not 2000 + 3000
  CHECK(run.elapsed == 3000ms);
}

TEST_CASE("FallbackStrategy: retries wait a jittered backoff and never pass the budget") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(seed_chain(), r);
  auto run = drive(p, [](const AttemptPlan& a) {
    if (a.target.model == "claude-haiku-4-5") return Reply{false, ErrorKind::server_error, 500, 100ms};
    static int n = 0;
    return ++n == 1 ? Reply{false, ErrorKind::server_error, 503, 100ms} : Reply{};
  }, clock);
  REQUIRE(run.ok);
  REQUIRE(run.trace.attempts.size() == 3);
  CHECK(run.trace.attempts[2].model == "gpt-4o-mini");
  CHECK(run.trace.attempts[2].why_tried == "retry 1 of gpt-4o-mini");
  Nanos gap = run.trace.attempts[2].start_offset - (run.trace.attempts[1].start_offset + 100ms);
  CHECK(gap >= 80ms);   // initial 100 ms +- 20 % jitter
  CHECK(gap <= 120ms);

  SUBCASE("a retry that would pass the budget is not made") {
    ManualClock c2;
    auto p2 = compile_ok(Json::parse(R"({"strategy":"fallback","total_budget_ms":1000,
      "attempts":[{"model":"gpt-4o-mini","timeout_ms":1000,"retries":3}],
      "backoff":{"initial_ms":900,"max_ms":900,"jitter":0}})"), r);
    auto run2 = drive(p2, [](const AttemptPlan&) { return Reply{false, ErrorKind::server_error, 500, 200ms}; }, c2);
    REQUIRE_FALSE(run2.ok);
    CHECK(run2.trace.attempts.size() == 1);
    CHECK(run2.elapsed <= 1000ms);
  }
}

TEST_CASE("FallbackStrategy: targets with an open breaker are skipped with a reason") {
  CatalogResolver r;
  ManualClock clock;
  FakeHealth h;
  TargetStats open;
  open.breaker = BreakerState::open;
  open.admits = false;
  open.retry_at = clock.now() + 30s;
  h.m["anthropic/claude-haiku-4-5"] = open;
  auto p = compile_ok(seed_chain(), r);
  auto run = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock, &h);
  REQUIRE(run.ok);
  REQUIRE(run.trace.attempts.size() == 1);
  CHECK(run.served.model == "gpt-4o-mini");
  CHECK(run.trace.attempts[0].why_tried == "fallback 1 after skip");
  CHECK(run.trace.reason.find("skipped claude-haiku-4-5: breaker open for another 30000 ms") != std::string::npos);

  SUBCASE("all targets open: panic mode tries them anyway") {
    h.m["openai/gpt-4o-mini"] = open;
    auto run2 = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock, &h);
    REQUIRE(run2.ok);
    CHECK(run2.served.model == "claude-haiku-4-5");
    CHECK(run2.trace.reason.find("all targets open: panic mode") != std::string::npos);
  }
  SUBCASE("one target open, the other rate-limited: panic tries the open one, never the empty bucket") {
    TargetStats limited;
    limited.admits = false;  // breaker closed, token bucket empty
    limited.retry_at = clock.now() + 20s;
    h.m["openai/gpt-4o-mini"] = limited;
    std::vector<std::string> tried;
    auto run2 = drive(p, [&](const AttemptPlan& plan) { tried.push_back(plan.target.model); return Reply{}; }, clock, &h);
    REQUIRE(run2.ok);
    CHECK(tried == std::vector<std::string>{"claude-haiku-4-5"});
    CHECK(run2.trace.reason.find("rate limit bucket empty") != std::string::npos);
    CHECK(run2.trace.reason.find("all targets open: panic mode") != std::string::npos);
  }
  SUBCASE("every target rate-limited (no breaker open): no panic, no_route") {
    TargetStats limited;
    limited.admits = false;
    h.m["anthropic/claude-haiku-4-5"] = limited;
    h.m["openai/gpt-4o-mini"] = limited;
    auto run2 = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock, &h);
    REQUIRE_FALSE(run2.ok);
    CHECK(run2.error.kind == ErrorKind::no_route);
    CHECK(run2.trace.attempts.empty());
  }
  SUBCASE("all targets open with on_all_open=fail: no_route without any attempt") {
    h.m["openai/gpt-4o-mini"] = open;
    Json j = seed_chain();
    j["on_all_open"] = "fail";
    auto run2 = drive(compile_ok(j, r), [](const AttemptPlan&) { return Reply{}; }, clock, &h);
    REQUIRE_FALSE(run2.ok);
    CHECK(run2.error.kind == ErrorKind::no_route);
    CHECK(run2.trace.attempts.empty());
  }
}

TEST_CASE("FallbackStrategy: 429 absorption modes for an empty token bucket") {
  CatalogResolver r;
  ManualClock clock;
  FakeHealth h;
  TargetStats empty;
  empty.admits = false;  // breaker closed, bucket empty
  empty.retry_at = clock.now() + 500ms;
  h.m["anthropic/claude-haiku-4-5"] = empty;
  auto chain = [&](const char* mode) {
    Json j = seed_chain();
    j["on_rate_limit"] = mode;
    return compile_ok(j, r);
  };
  SUBCASE("fallback skips the target") {
    auto run = drive(chain("fallback"), [](const AttemptPlan&) { return Reply{}; }, clock, &h);
    REQUIRE(run.ok);
    CHECK(run.served.model == "gpt-4o-mini");
  }
  SUBCASE("queue waits for the reset, then tries the target") {
    struct Refilling : HealthView {
      Instant at;
      TargetStats stats(std::string_view k, Instant now) const override {
        TargetStats s;
        if (k == "anthropic/claude-haiku-4-5" && now < at) {
          s.admits = false;
          s.retry_at = at;
        }
        return s;
      }
    } rh;
    rh.at = clock.now() + 500ms;
    auto run = drive(chain("queue"), [](const AttemptPlan&) { return Reply{}; }, clock, &rh);
    REQUIRE(run.ok);
    CHECK(run.served.model == "claude-haiku-4-5");
    CHECK(run.trace.attempts[0].start_offset == 500ms);
  }
  SUBCASE("fail_fast ends the request with rate_limited") {
    auto run = drive(chain("fail_fast"), [](const AttemptPlan&) { return Reply{}; }, clock, &h);
    REQUIRE_FALSE(run.ok);
    CHECK(run.error.kind == ErrorKind::rate_limited);
    CHECK(run.trace.attempts.empty());
  }
}

TEST_CASE("FallbackStrategy: budget exhausted mid-chain fails with timeout inside the budget") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(Json::parse(R"({"strategy":"fallback","total_budget_ms":2500,"retry_on":["5xx","timeout"],
     "attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},{"model":"gpt-4o-mini","timeout_ms":2000},
                 {"model":"gemini-2.5-flash","timeout_ms":2000}]})"), r);
  auto run = drive(p, [](const AttemptPlan&) { return Reply{false, ErrorKind::server_error, 500, 1300ms}; }, clock);
  REQUIRE_FALSE(run.ok);
  CHECK(run.trace.attempts.size() == 2);
  CHECK(run.elapsed <= 2500ms);
  CHECK(run.trace.attempts[1].outcome == "timeout");  // cut at the total budget, not 1300 ms
}

TEST_CASE("FallbackStrategy: nested configs and @slug references") {
  CatalogResolver r;
  ManualClock clock;
  r.configs["cheap"] = compile_ok(Json::parse(R"({"strategy":"single","model":"gpt-4o-mini"})"), r);
  auto p = compile_ok(Json::parse(R"({"strategy":"fallback","total_budget_ms":5000,
     "attempts":["claude-haiku-4-5",{"config":"@cheap"},{"config":{"strategy":"single","model":"gemini-2.5-flash"}}]})"), r);
  auto run = drive(p, [](const AttemptPlan& a) {
    if (a.target.model != "gemini-2.5-flash") return Reply{false, ErrorKind::server_error, 502, 10ms};
    return Reply{};
  }, clock);
  REQUIRE(run.ok);
  CHECK(run.served.model == "gemini-2.5-flash");
  CHECK(run.trace.attempts.size() == 3);
}

TEST_CASE("RoutingSession: cancel abandons running attempts") {
  CatalogResolver r;
  ManualClock clock;
  auto p = compile_ok(seed_chain(), r);
  ChatRequest req = make_request();
  SessionInputs in;
  in.request = &req;
  in.start = clock.now();
  RoutingSession s(p, in);
  Step st = s.next(clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  s.cancel(clock.now(), "client disconnected");
  Step f = s.next(clock.now());
  CHECK(f.kind == Step::Kind::failed);
  CHECK(s.error().kind == ErrorKind::cancelled);
  CHECK(s.trace().attempts[0].why_ended == "abandoned: client disconnected");
}

TEST_CASE("Policy::compile: rejects bad configs with the JSON path") {
  CatalogResolver r;
  auto err = [&](const char* text) {
    auto p = Policy::compile(Json::parse(text), r);
    REQUIRE_FALSE(p);
    CHECK(p.error().kind == ErrorKind::invalid_config);
    return p.error().path;
  };
  CHECK(err(R"({"strategy":"roundrobin"})") == "$.strategy");
  CHECK(err(R"({"strategy":"single","model":"gpt-9"})") == "$.model");
  CHECK(err(R"({"strategy":"fallback","attempts":[]})") == "$.attempts");
  CHECK(err(R"({"strategy":"fallback","attempts":"gpt-4o"})") == "$.attempts");
  CHECK(err(R"({"strategy":"fallback","total_budget_ms":1000,"attempts":[{"model":"gpt-4o","timeout_ms":2000}]})") ==
        "$.attempts[0].timeout_ms");
  CHECK(err(R"({"strategy":"fallback","attempts":["gpt-4o",{"model":"nope"}]})") == "$.attempts[1].model");
  CHECK(err(R"({"strategy":"fallback","attempts":["gpt-4o"],"retry_on":["429","teapot"]})") == "$.retry_on[1]");
  CHECK(err(R"({"strategy":"fallback","attempts":["gpt-4o"],"retyr_on":["429"]})") == "$.retyr_on");
  CHECK(err(R"({"strategy":"fallback","attempts":["gpt-4o"],"total_budget_ms":"8s"})") == "$.total_budget_ms");
  CHECK(err(R"({"strategy":"fallback","attempts":[{"config":"@missing"}]})") == "$.attempts[0].config");
  CHECK(err(R"({"strategy":"fallback","attempts":["gpt-4o"],"backoff":{"initial_ms":-1}})") == "$.backoff.initial_ms");
  CHECK(err(R"({"strategy":"fallback","attempts":[{"model":"gpt-4o","retries":"x"}]})") == "$.attempts[0].retries");
  CHECK(err(R"([1,2])") == "$");
}

TEST_CASE("retry_class_matches: classes map onto error kinds") {
  Error e;
  e.kind = ErrorKind::rate_limited;
  CHECK(retry_class_matches("429", e));
  CHECK_FALSE(retry_class_matches("5xx", e));
  e.kind = ErrorKind::overloaded;
  e.status = 529;
  CHECK(retry_class_matches("5xx", e));
  CHECK(retry_class_matches("overloaded", e));
  e.kind = ErrorKind::bad_request;
  e.status = 400;
  for (auto c : retry_class_names()) CHECK_FALSE(retry_class_matches(c, e));
  e.kind = ErrorKind::connection;
  e.status = 0;
  CHECK(retry_class_matches("connection", e));
  CHECK(retry_class_matches("5xx", e));  // a refused upstream is a 502 to a gateway
  CHECK_FALSE(retry_class_matches("429", e));
  e.kind = ErrorKind::malformed_response;
  CHECK(retry_class_matches("malformed", e));
  CHECK(retry_class_matches("5xx", e));
  CHECK_FALSE(retry_class_matches("timeout", e));
}

TEST_CASE("LatencyOptimizedStrategy: prefers the target holding the prompt prefix unless it is much slower") {
  CatalogResolver r;
  ManualClock clock;
  struct Warm final : HealthView {
    double haiku_p50 = 330;
    Instant now;
    TargetStats stats(std::string_view k, Instant) const override {
      TargetStats s;
      s.samples = 50;
      s.last_sample = now;
      s.p50_ms = k == "anthropic/claude-haiku-4-5" ? haiku_p50 : 300;
      return s;
    }
    std::string preferred_target(std::uint64_t fp, Instant) const override {
      return fp ? "anthropic/claude-haiku-4-5" : "";
    }
  } h;
  h.now = clock.now();
  auto p = compile_ok(Json::parse(R"({"strategy":"latency_optimized","explore":0,
     "candidates":["gpt-4o-mini","claude-haiku-4-5"]})"), r);
  auto run = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock, &h);
  REQUIRE(run.ok);
  CHECK(run.served.model == "claude-haiku-4-5");
  CHECK(run.trace.reason.find("lowest p50: gpt-4o-mini (p50 300 ms), prompt-cache affinity: claude-haiku-4-5 (p50 330 ms)") == 0);
  h.haiku_p50 = 900;  // over 1.5x the best: latency wins
  auto run2 = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock, &h);
  CHECK(run2.served.model == "gpt-4o-mini");
  CHECK(run2.trace.reason.find("lowest p50: gpt-4o-mini (p50 300 ms)") != std::string::npos);
}

TEST_CASE("RoutingSession: a reused session gives exactly the trace a fresh one gives") {
  // reset() recycles plans, trace records, strings and strategy states; nothing of an earlier
  // request may leak into the next one. Each scenario runs in a fresh session and in one
  // session reused across every scenario (in an order that shrinks and grows the attempt
  // count), and the traces must match field for field.
  CatalogResolver r;
  struct Scenario {
    std::string config;
    std::function<Reply(const AttemptPlan&)> script;
  };
  auto fail_first = [](ErrorKind k, int status) {
    return [k, status](const AttemptPlan& p) {
      Reply rep;
      if (p.id == 1) {
        rep.ok = false;
        rep.kind = k;
        rep.status = status;
      }
      return rep;
    };
  };
  auto all_ok = [](const AttemptPlan&) { return Reply{}; };
  auto all_fail = [](const AttemptPlan&) {
    Reply rep;
    rep.ok = false;
    rep.status = 503;
    return rep;
  };
  auto hang_first = [](const AttemptPlan& p) {
    Reply rep;
    rep.hang = p.id == 1;
    return rep;
  };
  auto votes = [](const AttemptPlan& p) {
    Reply rep;
    rep.text = p.id == 2 ? "Lyon" : "Paris";
    rep.latency = std::chrono::milliseconds(50 * p.id);
    return rep;
  };
  const char* chain = R"({"strategy":"fallback","attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},
      {"model":"gpt-4o-mini","retries":1},"gemini-2.5-flash"],"retry_on":["429","5xx","timeout"],"total_budget_ms":8000})";
  std::vector<Scenario> scenarios = {
      {chain, fail_first(ErrorKind::rate_limited, 429)},
      {R"({"strategy":"single","model":"gpt-4o"})", all_ok},
      {chain, all_fail},
      {chain, hang_first},
      {R"({"strategy":"ensemble","members":["claude-haiku-4-5","gpt-4o-mini","gemini-2.5-flash"]})", votes},
      {R"({"strategy":"cascade","steps":["gpt-4o-mini","gpt-4o"]})", fail_first(ErrorKind::server_error, 500)},
      {R"({"strategy":"ab_test","arms":[{"weight":50,"model":"gpt-4o"},{"weight":50,"config":)" +
           std::string(chain) + "}]}",
       fail_first(ErrorKind::overloaded, 529)},
      {R"({"strategy":"single","model":"gpt-4o"})", all_fail},
      {chain, all_ok},
  };
  RoutingSession reused;
  for (int round = 0; round < 2; ++round)
    for (std::size_t i = 0; i < scenarios.size(); ++i) {
      CAPTURE(i);
      auto p = Policy::compile(Json::parse(scenarios[i].config), r, "@prod");
      REQUIRE(p);
      ManualClock c1, c2;
      Run a = drive(*p, scenarios[i].script, c1, nullptr, nullptr, 7 + i);
      Run b = drive(*p, scenarios[i].script, c2, nullptr, nullptr, 7 + i, &reused);
      CHECK(a.ok == b.ok);
      CHECK(a.served.key() == b.served.key());
      CHECK(a.text == b.text);
      CHECK(a.trace.to_json().dump() == b.trace.to_json().dump());
      CHECK(a.plans.size() == b.plans.size());
    }
}

TEST_CASE("DecisionTrace::clear resets every field") {
  DecisionTrace t;
  t.request_id = "req_1";
  t.time = WallTime{std::chrono::seconds(1700000000)};
  t.config = "@prod";
  t.config_version = 3;
  t.strategy = "fallback";
  t.project = "p";
  t.org = "o";
  t.end_user = "u";
  t.api_key_id = "k";
  t.tags = {{"a", "b"}};
  t.stream = true;
  AttemptRecord a;
  a.id = 1;
  a.model = "gpt-4o";
  a.provider = "openai";
  a.start_offset = a.duration = a.ttft = std::chrono::milliseconds(5);
  a.ok = true;
  a.outcome = "ok";
  a.status = 200;
  a.error = "e";
  a.usage.prompt_tokens = 3;
  a.cost.input_usd = 1;
  a.why_tried = "primary";
  a.why_ended = "served";
  a.member = 2;
  a.vote = "x";
  t.attempts.push_back(a);
  t.ok = true;
  t.served_model = "gpt-4o";
  t.served_provider = "openai";
  t.error_kind = "timeout";
  t.error_message = "m";
  t.decision = "d";
  t.reason = "r";
  t.total = t.ttft = std::chrono::milliseconds(9);
  t.usage.completion_tokens = 4;
  t.cost.output_usd = 2;
  t.budget_actions = {"x"};
  t.ab_arm = "arm";
  t.aggregation = "agg";
  t.request_body = "{}";
  t.response_body = "{}";
  CHECK(t.to_json() != DecisionTrace{}.to_json());
  t.clear();
  CHECK(t.to_json() == DecisionTrace{}.to_json());
  a.clear();
  DecisionTrace one, other;
  one.attempts.push_back(a);
  other.attempts.push_back(AttemptRecord{});
  CHECK(one.to_json() == other.to_json());
}

TEST_CASE("RoutingSession: an idle or cleared session is inert, and reset() brings it back") {
  CatalogResolver r;
  auto p = compile_ok(seed_chain(), r);
  RoutingSession idle;
  CHECK(idle.finished());
  CHECK(idle.next(Instant{}).kind == Step::Kind::failed);
  CHECK(idle.error().kind == ErrorKind::internal);
  CHECK(idle.served().model.empty());
  AttemptResult stray;
  stray.id = 1;
  idle.report(stray, Instant{});  // ignored, no crash
  idle.cancel(Instant{});

  ManualClock clock;
  Run first = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock, nullptr, nullptr, 1, &idle);
  REQUIRE(first.ok);
  idle.clear();
  CHECK(idle.finished());
  CHECK(idle.next(clock.now()).kind == Step::Kind::failed);
  Run again = drive(p, [](const AttemptPlan&) { return Reply{}; }, clock, nullptr, nullptr, 1, &idle);
  REQUIRE(again.ok);
  CHECK(again.trace.decision == first.trace.decision);
}

TEST_CASE("RoutingSession: a refused health claim is a skip with today's text, not a try") {
  CatalogResolver r;
  auto p = compile_ok(Json::parse(R"({"strategy":"fallback","attempts":["claude-haiku-4-5","gpt-4o-mini"]})"), r);
  ManualClock clock;
  FakeHealth h;
  TargetStats probing;
  probing.breaker = BreakerState::half_open;  // admits: a probe may go (if nobody took it)
  h.m["anthropic/claude-haiku-4-5"] = probing;
  static const ChatRequest req = make_request();
  SessionInputs in;
  in.request = &req;
  in.health = &h;
  in.start = clock.now();
  RoutingSession s(p, in);
  Step st = s.next(clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  REQUIRE(st.attempts.size() == 1);
  CHECK(st.attempts[0].target.model == "claude-haiku-4-5");
  CHECK(st.attempts[0].must_claim);
  // The executor's claim is refused: another request holds the probe.
  s.report(AttemptSkip{.id = st.attempts[0].id, .reason = SkipReason::not_admitted}, clock.now());
  st = s.next(clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  CHECK(st.attempts[0].target.model == "gpt-4o-mini");
  CHECK(st.cancel.empty());  // it never ran: nothing to stop
  AttemptResult good;
  good.id = st.attempts[0].id;
  good.answer = ChatResponse{};
  s.report(good, clock.now());
  st = s.next(clock.now());
  REQUIRE(st.kind == Step::Kind::done);
  const DecisionTrace& t = s.trace();
  REQUIRE(t.attempts.size() == 1);  // the refused claim is not an attempt
  CHECK(t.attempts[0].model == "gpt-4o-mini");
  CHECK(t.attempts[0].id == 2);
  CHECK(t.attempts[0].why_ended == "served");
  CHECK(t.reason.find("skipped claude-haiku-4-5: breaker half_open, probe already out") != std::string::npos);
  SUBCASE("a reused session starts clean after a dropped record") {
    s.reset(p, in);
    st = s.next(clock.now());
    REQUIRE(st.kind == Step::Kind::attempt);
    CHECK(st.attempts[0].id == 1);
    CHECK(s.trace().attempts.size() == 1);
  }
}

namespace {
/// A session started on `config` at the clock's now, for tests that report by hand.
struct HandDriven {
  CatalogResolver resolver;
  ManualClock clock;
  ChatRequest req = make_request();
  SessionInputs in;
  RoutingSession s;
  explicit HandDriven(const char* config) {
    in.request = &req;
    in.start = clock.now();
    s.reset(compile_ok(Json::parse(config), resolver), in);
  }
  /// The id of the one attempt the first step asks for.
  std::uint32_t first_attempt() {
    Step st = s.next(clock.now());
    REQUIRE(st.kind == Step::Kind::attempt);
    return st.attempts[0].id;
  }
};
}  // namespace

TEST_CASE("AttemptResult: a result nobody filled in is a failure, never an empty success") {
  AttemptResult r;
  CHECK_FALSE(r.served());
  CHECK(r.answer.error().kind == ErrorKind::internal);
  HandDriven d(R"({"strategy":"single","model":"gpt-4o-mini"})");
  r.id = d.first_attempt();
  d.s.report(r, d.clock.now());
  CHECK(d.s.next(d.clock.now()).kind == Step::Kind::failed);
  CHECK(d.s.error().kind == ErrorKind::internal);
}

TEST_CASE("RoutingSession: a skip reported for the committed attempt fails the request instead of waiting") {
  HandDriven d(R"({"strategy":"fallback","attempts":["claude-haiku-4-5","gpt-4o-mini"]})");
  const std::uint32_t id = d.first_attempt();
  REQUIRE(d.s.commit(id, d.clock.now()));
  d.s.report(AttemptSkip{.id = id}, d.clock.now());  // a driver bug: it wrote output, then said it never started
  // No failover after output, and no wait for a report that never comes.
  REQUIRE(d.s.next(d.clock.now()).kind == Step::Kind::failed);
  CHECK(d.s.error().kind == ErrorKind::internal);
  CHECK(d.s.trace().attempts.size() == 1);
  SUBCASE("a later report for it changes nothing") {
    AttemptResult late;
    late.id = id;
    late.answer = ChatResponse{};
    d.s.report(late, d.clock.now());
    CHECK(d.s.next(d.clock.now()).kind == Step::Kind::failed);
  }
}

TEST_CASE("RoutingSession: panic-mode tries past an open breaker claim nothing") {
  CatalogResolver r;
  auto p = compile_ok(Json::parse(R"({"strategy":"fallback","attempts":["claude-haiku-4-5"]})"), r);
  ManualClock clock;
  FakeHealth h;
  TargetStats open;
  open.breaker = BreakerState::open;
  open.admits = false;
  h.m["anthropic/claude-haiku-4-5"] = open;
  Run run = drive(p, [](const AttemptPlan& plan) {
    CHECK_FALSE(plan.must_claim);
    return Reply{};
  }, clock, &h);
  CHECK(run.ok);
  REQUIRE(run.plans.size() == 1);
}

TEST_CASE("FallbackStrategy: a local failure fails over whatever retry_on says") {
  CatalogResolver r;
  auto p = compile_ok(Json::parse(R"({"strategy":"fallback","retry_on":["429"],"attempts":["claude-haiku-4-5","gpt-4o-mini"]})"), r);
  ManualClock clock;
  static const ChatRequest req = make_request();
  SessionInputs in;
  in.request = &req;
  in.start = clock.now();
  for (bool local : {true, false}) {
    CAPTURE(local);
    RoutingSession s(p, in);
    Step st = s.next(clock.now());
    AttemptResult r1;
    r1.id = st.attempts[0].id;
    Error e;
    e.kind = local ? ErrorKind::local_resource_exhausted : ErrorKind::server_error;
    e.local = local;
    e.message = local ? "connect: Too many open files" : "boom";
    r1.answer = std::unexpected(std::move(e));
    s.report(r1, clock.now());
    st = s.next(clock.now());
    if (!local) {  // a provider 500 outside retry_on ends the request
      CHECK(st.kind == Step::Kind::failed);
      continue;
    }
    REQUIRE(st.kind == Step::Kind::attempt);
    CHECK(st.attempts[0].target.model == "gpt-4o-mini");
  }
}
