// Once output reached the caller, that attempt owns the response: RoutingSession::commit(),
// Step::cancel and max_stream_ms — deterministic cases first, then a property test that
// drives thousands of random fault timings through single, fallback, cascade and ensemble on
// virtual time, with an executor model that behaves like the real one (commit gate before the
// first write, cancels that take a while to land, stall detection, late chunks).
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <queue>
#include <set>

#include "modelux/policy.hpp"

#include "support/catalog_resolver.hpp"

using namespace modelux;
using modelux::testing::CatalogResolver;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<const Policy> compile(const std::string& text) {
  static const CatalogResolver r;
  auto p = Policy::compile(Json::parse(text), r, "@t");
  if (!p) FAIL(p.error().describe());
  return *p;
}

ChatRequest request(bool stream) {
  ChatRequest r;
  r.model = "@t";
  r.stream = stream;
  Message m;
  m.role = "user";
  ContentPart p;
  p.text = "hi";
  m.content.push_back(p);
  r.messages.push_back(m);
  return r;
}

AttemptResult ok_result(std::uint32_t id, std::string text, std::int64_t tokens, Nanos ttft) {
  AttemptResult r;
  r.id = id;
  Choice c;
  c.message.role = "assistant";
  ContentPart cp;
  cp.text = std::move(text);
  c.message.content.push_back(cp);
  c.finish_reason = "stop";
  ChatResponse resp;
  resp.choices.push_back(c);
  r.answer = std::move(resp);
  r.usage.prompt_tokens = 3;
  r.usage.completion_tokens = tokens;
  r.ttft = ttft;
  return r;
}

AttemptResult failed(std::uint32_t id, ErrorKind k, std::string msg, int status = 0) {
  AttemptResult r;
  r.id = id;
  Error e;
  e.kind = k;
  e.message = std::move(msg);
  e.status = status;
  r.answer = std::unexpected(std::move(e));
  return r;
}

struct Fixture {
  ManualClock clock;
  ChatRequest req = request(true);
  CallContext ctx{"req_own", "acme", "", "", "", {}, nullptr};
  RoutingSession s;
  void start(std::shared_ptr<const Policy> p) {
    SessionInputs in;
    in.request = &req;
    in.context = &ctx;
    in.seed = 7;
    in.start = clock.now();
    s.reset(std::move(p), in);
  }
};

std::vector<std::uint32_t> ids(std::span<const std::uint32_t> v) { return {v.begin(), v.end()}; }

}  // namespace

TEST_CASE("RoutingSession: a committed stream outlives timeout_ms and the total budget") {
  Fixture f;
  f.start(compile(R"({"strategy":"single","model":"gpt-4o-mini","timeout_ms":2000,"total_budget_ms":3000})"));
  Step st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  const std::uint32_t id = st.attempts[0].id;
  f.clock.advance(300ms);
  REQUIRE(f.s.commit(id, f.clock.now()));
  CHECK(f.s.commit(id, f.clock.now()));  // idempotent
  for (int i = 0; i < 50; ++i) {  // 5 s of healthy streaming, far past both bounds
    f.clock.advance(100ms);
    st = f.s.next(f.clock.now());
    REQUIRE(st.kind == Step::Kind::wait);
    CHECK(st.wake_at == Instant{});  // no max_stream_ms: only the report ends it
    CHECK(st.attempts.empty());
    CHECK(st.cancel.empty());
  }
  f.s.report(ok_result(id, "long answer", 400, 0ns), f.clock.now());
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::done);
  const DecisionTrace& t = f.s.trace();
  REQUIRE(t.attempts.size() == 1);
  CHECK(t.attempts[0].why_ended == "served");
  CHECK(t.attempts[0].ttft == 300ms);  // measured at the commit: the report had none
  CHECK(t.usage.completion_tokens == 400);
  CHECK(t.ttft == 300ms);
}

TEST_CASE("RoutingSession: before a commit the attempt timeout still fails over, after it nothing does") {
  Fixture f;
  f.start(compile(R"({"strategy":"fallback","attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},
                      {"model":"gpt-4o-mini","timeout_ms":3000}],"total_budget_ms":8000})"));
  Step st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  const std::uint32_t haiku = st.attempts[0].id;
  f.clock.advance(2000ms);  // haiku hung before its first token
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  CHECK(ids(st.cancel) == std::vector<std::uint32_t>{haiku});  // the executor must stop it
  const std::uint32_t mini = st.attempts[0].id;
  f.clock.advance(10ms);
  CHECK_FALSE(f.s.commit(haiku, f.clock.now()));  // a late first token of the loser may not write
  REQUIRE(f.s.commit(mini, f.clock.now()));
  f.clock.advance(10s);
  st = f.s.next(f.clock.now());
  CHECK(st.kind == Step::Kind::wait);
  CHECK(st.cancel.empty());  // haiku was listed once already
  SUBCASE("its failure fails the request with its error, no failover") {
    AttemptResult r = failed(mini, ErrorKind::stream_interrupted, "stream stalled: no data for 1000 ms");
    r.usage.completion_tokens = 42;
    r.ttft = 10ms;
    f.s.report(r, f.clock.now());
    st = f.s.next(f.clock.now());
    REQUIRE(st.kind == Step::Kind::failed);
    CHECK(f.s.error().kind == ErrorKind::stream_interrupted);
    CHECK(f.s.trace().attempts.size() == 2);
    CHECK(f.s.trace().attempts[1].usage.completion_tokens == 42);
    CHECK(f.s.trace().reason.find("no failover") != std::string::npos);
  }
  SUBCASE("the loser's late report brings its tokens to the trace, not a decision") {
    AttemptResult late = failed(haiku, ErrorKind::cancelled, "attempt abandoned");
    late.usage.completion_tokens = 3;
    f.s.report(late, f.clock.now());
    CHECK(f.s.trace().attempts[0].outcome == "timeout");
    CHECK(f.s.trace().attempts[0].usage.completion_tokens == 3);
    f.s.report(ok_result(mini, "answer", 9, 10ms), f.clock.now());
    st = f.s.next(f.clock.now());
    REQUIRE(st.kind == Step::Kind::done);
    CHECK(f.s.served().model == "gpt-4o-mini");
  }
}

TEST_CASE("RoutingSession: max_stream_ms bounds a committed stream, from the commit, per attempt or per chain") {
  Fixture f;
  SUBCASE("per attempt") {
    f.start(compile(R"({"strategy":"single","model":"gpt-4o-mini","timeout_ms":2000,"max_stream_ms":60000})"));
  }
  SUBCASE("per chain") {
    f.start(compile(R"({"strategy":"fallback","max_stream_ms":60000,
                        "attempts":[{"model":"gpt-4o-mini","timeout_ms":2000}]})"));
  }
  SUBCASE("the tighter of both") {
    f.start(compile(R"({"strategy":"fallback","max_stream_ms":90000,
                        "attempts":[{"model":"gpt-4o-mini","timeout_ms":2000,"max_stream_ms":60000}]})"));
  }
  Step st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  const std::uint32_t id = st.attempts[0].id;
  CHECK(st.attempts[0].max_stream == 60s);
  f.clock.advance(500ms);
  const Instant committed_at = f.clock.now();
  REQUIRE(f.s.commit(id, committed_at));
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::wait);
  CHECK(st.wake_at == committed_at + 60s);
  f.clock.set(committed_at + 60s);
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::failed);
  CHECK(ids(st.cancel) == std::vector<std::uint32_t>{id});
  CHECK(f.s.error().kind == ErrorKind::timeout);
  CHECK(f.s.error().message == "max_stream_ms 60000 ms reached");
  CHECK(f.s.trace().attempts[0].why_ended == "max_stream_ms 60000 ms reached");
  CHECK(f.s.trace().attempts[0].ttft == 500ms);
}

TEST_CASE("RoutingSession: max_stream_ms is checked at compile time like the other bounds") {
  CatalogResolver r;
  for (const char* bad : {R"({"strategy":"single","model":"gpt-4o-mini","max_stream_ms":0})",
                          R"({"strategy":"single","model":"gpt-4o-mini","max_stream_ms":"1m"})",
                          R"({"strategy":"fallback","attempts":["gpt-4o-mini"],"max_stream_ms":-5})"}) {
    auto p = Policy::compile(Json::parse(bad), r);
    REQUIRE_FALSE(p);
    CHECK(p.error().path == "$.max_stream_ms");
  }
  auto nested = Policy::compile(Json::parse(R"({"strategy":"fallback","attempts":[{"model":"gpt-4o-mini","max_stream_ms":false}]})"), r);
  REQUIRE_FALSE(nested);
  CHECK(nested.error().path == "$.attempts[0].max_stream_ms");
}

TEST_CASE("RoutingSession: a commit abandons every other running attempt and the step lists them") {
  Fixture f;
  f.start(compile(R"({"strategy":"ensemble","members":["gpt-4o-mini","claude-haiku-4-5","gemini-2.5-flash"],
                      "aggregation":"majority_vote","timeout_ms":3000})"));
  Step st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::attempt);
  REQUIRE(st.attempts.size() == 3);
  f.clock.advance(100ms);
  REQUIRE(f.s.commit(2, f.clock.now()));
  CHECK_FALSE(f.s.commit(1, f.clock.now()));
  st = f.s.next(f.clock.now());
  CHECK(st.kind == Step::Kind::wait);
  CHECK(ids(st.cancel) == std::vector<std::uint32_t>{1, 3});
  CHECK(f.s.trace().attempts[0].why_ended == "abandoned: attempt 2 owns the response");
  f.s.report(ok_result(2, "B", 5, 100ms), f.clock.now());
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::done);
  CHECK(f.s.served().model == "claude-haiku-4-5");  // no vote: the committed answer is the answer
}

TEST_CASE("RoutingSession: ensemble first_valid losers are listed in Step::cancel") {
  Fixture f;
  f.req.stream = false;
  f.start(compile(R"({"strategy":"ensemble","members":["gpt-4o-mini","claude-haiku-4-5","gemini-2.5-flash"],
                      "aggregation":"first_valid"})"));
  Step st = f.s.next(f.clock.now());
  REQUIRE(st.attempts.size() == 3);
  f.clock.advance(100ms);
  f.s.report(ok_result(3, "C", 5, 100ms), f.clock.now());
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::done);
  CHECK(ids(st.cancel) == std::vector<std::uint32_t>{1, 2});
  CHECK(f.s.next(f.clock.now()).cancel.empty());  // listed once
}

TEST_CASE("RoutingSession: a caller cancel lists the committed attempt too") {
  Fixture f;
  f.start(compile(R"({"strategy":"single","model":"gpt-4o-mini"})"));
  Step st = f.s.next(f.clock.now());
  REQUIRE(f.s.commit(st.attempts[0].id, f.clock.now()));
  f.s.cancel(f.clock.now(), "caller went away");
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::failed);
  CHECK(f.s.error().kind == ErrorKind::cancelled);
  CHECK(ids(st.cancel) == std::vector<std::uint32_t>{1});
  CHECK_FALSE(f.s.commit(1, f.clock.now()));
}

TEST_CASE("RoutingSession: a delivered report without commit() still ends failover (older drivers)") {
  Fixture f;
  f.start(compile(R"({"strategy":"fallback","attempts":["gpt-4o-mini","claude-haiku-4-5"]})"));
  Step st = f.s.next(f.clock.now());
  AttemptResult r = failed(st.attempts[0].id, ErrorKind::stream_interrupted, "broke");
  r.delivered = true;
  f.s.report(r, f.clock.now());
  CHECK(f.s.committed() == st.attempts[0].id);
  st = f.s.next(f.clock.now());
  REQUIRE(st.kind == Step::Kind::failed);
  CHECK(f.s.error().kind == ErrorKind::stream_interrupted);
  CHECK(f.s.trace().attempts.size() == 1);
}

// ---- property test ------------------------------------------------------------------------

namespace {

/// What one simulated provider call does, on virtual time from its start.
struct Script {
  enum class Kind : std::uint8_t { hang, error, stream, drop, stall } kind = Kind::stream;
  Nanos first{0};                  ///< first output (stream/drop/stall) or the error (error)
  std::vector<Nanos> gaps;         ///< between chunks after the first
  std::size_t drop_after = 0;      ///< drop: connection dies after this many chunks
  std::size_t stall_after = 0;     ///< stall: no data after this many chunks
  ErrorKind error = ErrorKind::server_error;
  int status = 0;
};

Script random_script(Random& rng) {
  Script s;
  const std::uint64_t k = rng.below(100);
  s.first = std::chrono::milliseconds(20 + rng.below(4000));  // up to twice the attempt timeouts
  const std::size_t n = 1 + rng.below(40);
  for (std::size_t i = 1; i < n; ++i) s.gaps.push_back(std::chrono::milliseconds(10 + rng.below(300)));
  if (k < 10) {
    s.kind = Script::Kind::hang;
  } else if (k < 35) {
    s.kind = Script::Kind::error;
    s.first = std::chrono::milliseconds(5 + rng.below(2500));
    static constexpr std::pair<ErrorKind, int> kErrors[] = {{ErrorKind::rate_limited, 429},
                                                            {ErrorKind::server_error, 500},
                                                            {ErrorKind::overloaded, 529},
                                                            {ErrorKind::connection, 0},
                                                            {ErrorKind::timeout, 0}};
    auto [kind, status] = kErrors[rng.below(5)];
    s.error = kind;
    s.status = status;
  } else if (k < 50) {
    s.kind = Script::Kind::drop;
    s.drop_after = rng.below(n + 1);
  } else if (k < 62) {
    s.kind = Script::Kind::stall;
    s.stall_after = rng.below(n + 1);
  } else {
    s.kind = Script::Kind::stream;
  }
  return s;
}

struct Event {
  Instant at;
  std::uint64_t seq;
  enum class Kind : std::uint8_t { chunk, end, error, stop, caller_cancel } kind;
  std::uint32_t id = 0;
  bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

/// The executor model: one attempt as the driver sees it.
struct Flight {
  AttemptPlan plan;
  Script script;
  Instant started{};
  std::size_t produced = 0;        ///< chunks the provider sent (written or dropped)
  Instant last_data{};
  std::optional<Nanos> ttft;
  bool committed = false;          ///< this flight owns the client stream
  bool stop_requested = false;
  bool finished = false;           ///< reported to the session
  bool stream_mode = false;        ///< output goes to the caller as it arrives
};

struct ClientStream {
  std::vector<std::uint32_t> chunk_from;  ///< attempt id of every chunk written
  int done = 0, errors = 0;
  bool closed = false;
};

struct Scenario {
  const char* name;
  const char* config;
};

constexpr Scenario kScenarios[] = {
    {"single", R"({"strategy":"single","model":"gpt-4o-mini","timeout_ms":2000,"ttft_timeout_ms":1500,
                   "stall_timeout_ms":800,"total_budget_ms":4000})"},
    {"single+max_stream", R"({"strategy":"single","model":"gpt-4o-mini","timeout_ms":2000,"stall_timeout_ms":800,
                              "max_stream_ms":3000})"},
    {"fallback", R"({"strategy":"fallback","total_budget_ms":8000,"retry_on":["429","5xx","timeout","connection"],
                     "attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000,"stall_timeout_ms":600},
                                 {"model":"gpt-4o-mini","timeout_ms":3000,"stall_timeout_ms":600},
                                 {"model":"gemini-2.5-flash","timeout_ms":5000,"stall_timeout_ms":600}]})"},
    {"fallback+retries", R"({"strategy":"fallback","total_budget_ms":6000,"retries":1,"max_stream_ms":4000,
                             "backoff":{"initial_ms":50,"max_ms":200},
                             "attempts":[{"model":"claude-haiku-4-5","timeout_ms":1500},
                                         {"model":"gpt-4o-mini","timeout_ms":2500}]})"},
    {"cascade", R"({"strategy":"cascade","total_budget_ms":8000,
                    "steps":[{"model":"gpt-4o-mini","timeout_ms":2000},{"model":"claude-haiku-4-5","timeout_ms":3000}]})"},
    {"ensemble", R"({"strategy":"ensemble","members":["gpt-4o-mini","claude-haiku-4-5","gemini-2.5-flash"],
                     "aggregation":"majority_vote","timeout_ms":3000,"total_budget_ms":5000})"},
    {"ensemble-first", R"({"strategy":"ensemble","members":["gpt-4o-mini","claude-haiku-4-5","gemini-2.5-flash"],
                           "aggregation":"first_valid","timeout_ms":3000,"total_budget_ms":5000})"},
};

/// Runs one request; returns a description of the first violated property ("" when none).
std::string run_one(std::uint64_t seed, const Scenario& sc, const std::shared_ptr<const Policy>& policy,
                    std::size_t* commits) {
  Random rng(seed);
  ManualClock clock;
  const bool stream = rng.below(4) != 0;
  ChatRequest req = request(stream);
  CallContext ctx{"req_prop", "acme", "", "", "", {}, nullptr};
  SessionInputs in;
  in.request = &req;
  in.context = &ctx;
  in.seed = seed;
  in.start = clock.now();
  RoutingSession s(policy, in);
  std::map<std::uint32_t, Flight> flights;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> q;
  std::uint64_t seq = 0;
  ClientStream client;
  std::uint32_t owner = 0;  // the driver's view: the attempt whose commit() returned true
  const Nanos default_stall = 1000ms;
  if (rng.below(10) == 0) q.push(Event{clock.now() + std::chrono::milliseconds(rng.below(6000)), seq++, Event::Kind::caller_cancel, 0});

  auto fail_msg = [&](std::string m) { return std::string(sc.name) + (stream ? " stream" : " non-stream") + ": " + m; };
  auto running = [&](std::uint32_t except) {
    std::vector<std::uint32_t> v;
    for (auto& [id, f] : flights)
      if (!f.finished && !f.stop_requested && id != except) v.push_back(id);
    return v;
  };
  auto report = [&](Flight& f, AttemptResult r) {
    if (f.finished) return;
    f.finished = true;
    r.usage.completion_tokens = static_cast<std::int64_t>(f.produced);
    if (f.ttft) r.ttft = *f.ttft;
    r.delivered = f.committed;
    s.report(std::move(r), clock.now());
  };
  // The driver's own timer for a flight, as the executor arms it: before the first output the
  // attempt deadline and TTFT; once committed only the stall timeout (max_stream is the
  // session's); a buffered attempt keeps its deadline.
  auto stall_of = [&](const Flight& f) { return f.plan.stall_timeout.count() ? f.plan.stall_timeout : default_stall; };
  auto next_data_at = [&](const Flight& f) -> std::optional<Instant> {
    const Script& sc2 = f.script;
    if (sc2.kind == Script::Kind::hang) return std::nullopt;
    if (f.produced == 0) return f.started + sc2.first;
    if (sc2.kind == Script::Kind::stall && f.produced >= sc2.stall_after) return std::nullopt;
    if (f.produced - 1 < sc2.gaps.size()) return f.last_data + sc2.gaps[f.produced - 1];
    return std::nullopt;
  };
  auto driver_timeout_at = [&](const Flight& f) -> Instant {
    if (f.committed) return f.last_data + stall_of(f);
    Instant t = f.plan.deadline;
    if (f.produced == 0 && f.plan.ttft_timeout.count()) t = std::min(t, f.started + f.plan.ttft_timeout);
    if (f.produced > 0 && f.stream_mode) t = std::min(t, f.last_data + stall_of(f));
    return t;
  };
  auto schedule = [&](Flight& f) {
    if (f.finished) return;
    const Script& sc2 = f.script;
    std::optional<Instant> data = next_data_at(f);
    Instant timeout = driver_timeout_at(f);
    if (sc2.kind == Script::Kind::error) {
      Instant at = f.started + sc2.first;
      if (at < timeout) return q.push(Event{at, seq++, Event::Kind::error, f.plan.id});
      return q.push(Event{timeout, seq++, Event::Kind::end, f.plan.id});  // end = driver timeout here
    }
    const bool ended = f.produced > 0 && f.produced - 1 >= sc2.gaps.size() && sc2.kind != Script::Kind::stall;
    if (ended) return q.push(Event{f.last_data, seq++, Event::Kind::end, f.plan.id});
    if (sc2.kind == Script::Kind::drop && f.produced > 0 && f.produced >= sc2.drop_after)
      return q.push(Event{f.last_data + 1ms, seq++, Event::Kind::error, f.plan.id});
    if (data && *data < timeout) return q.push(Event{*data, seq++, Event::Kind::chunk, f.plan.id});
    q.push(Event{timeout, seq++, Event::Kind::end, f.plan.id});
  };
  auto close_client = [&](bool ok) {
    if (client.closed) return;
    client.closed = true;
    (ok ? client.done : client.errors)++;
  };

  // One event of the simulated providers / caller, as the executor handles it.
  auto process = [&](const Event& e) {
    if (e.kind == Event::Kind::caller_cancel) {
      s.cancel(clock.now(), "caller went away");
      return;
    }
    Flight& f = flights.at(e.id);
    if (f.finished) return;  // late events of an ended attempt: nothing happens
    switch (e.kind) {
      case Event::Kind::chunk: {
        ++f.produced;
        f.last_data = clock.now();
        if (!f.ttft) f.ttft = clock.now() - f.started;
        if (f.stream_mode) {
          // The commit gate, asked even by an attempt whose cancel has not landed yet: the
          // session must refuse an attempt it already ended, so its output goes nowhere.
          if (f.produced == 1 && s.commit(f.plan.id, clock.now())) {
            f.committed = true;
            owner = f.plan.id;
            ++*commits;
          }
          if (f.committed && !client.closed) client.chunk_from.push_back(f.plan.id);
        }
        schedule(f);
        break;
      }
      case Event::Kind::end: {
        const bool complete = f.produced > 0 && f.produced - 1 >= f.script.gaps.size() &&
                              f.script.kind != Script::Kind::stall && f.script.kind != Script::Kind::error &&
                              !(f.script.kind == Script::Kind::drop && f.produced >= f.script.drop_after) &&
                              clock.now() == f.last_data;
        if (complete) {
          report(f, ok_result(f.plan.id, "answer " + f.plan.target.model, 0, Nanos{0}));
        } else if (f.committed) {
          report(f, failed(f.plan.id, ErrorKind::stream_interrupted, "stream stalled: no data"));
        } else {
          report(f, failed(f.plan.id, ErrorKind::timeout, "attempt timeout (driver)"));
        }
        break;
      }
      case Event::Kind::error:
        if (f.produced > 0 && f.committed)
          report(f, failed(f.plan.id, ErrorKind::stream_interrupted, "stream broke after output started"));
        else if (f.produced > 0)
          report(f, failed(f.plan.id, ErrorKind::connection, "stream died before output"));
        else
          report(f, failed(f.plan.id, f.script.error, "provider error", f.script.status));
        break;
      case Event::Kind::stop:
        report(f, failed(f.plan.id, ErrorKind::cancelled, "attempt abandoned"));
        break;
      case Event::Kind::caller_cancel: break;
  }
  };

  for (int guard = 0; guard < 100000; ++guard) {
    Step st = s.next(clock.now());
    // (1) After a commit, nothing new starts.
    if (s.committed() && !st.attempts.empty()) return fail_msg("an attempt started after attempt " + std::to_string(s.committed()) + " committed");
    // Cancels land after a random lag, like an executor unwinding a coroutine; until then
    // the attempt keeps producing, and its output must go nowhere.
    for (std::uint32_t id : st.cancel) {
      auto it = flights.find(id);
      if (it == flights.end()) return fail_msg("cancel of unknown attempt " + std::to_string(id));
      if (it->second.stop_requested) return fail_msg("attempt " + std::to_string(id) + " listed twice in cancel");
      it->second.stop_requested = true;
      q.push(Event{clock.now() + std::chrono::milliseconds(rng.below(200)), seq++, Event::Kind::stop, id});
    }
    // (2) Every other running attempt is listed once the response is owned or finished.
    if (s.committed() && !running(s.committed()).empty())
      return fail_msg("attempt " + std::to_string(running(s.committed())[0]) + " still runs after attempt " +
                      std::to_string(s.committed()) + " committed, and no step said to cancel it");
    if (st.kind == Step::Kind::done || st.kind == Step::Kind::failed) {
      if (!running(0).empty()) return fail_msg("the request finished with attempts left running");
      if (st.kind == Step::Kind::done && !client.closed) {
        if (!owner) client.chunk_from.push_back(0);  // buffered winner, replayed by the executor
        close_client(true);
      } else {
        close_client(false);
      }
      break;
    }
    for (const auto& plan : st.attempts) {
      Flight f;
      f.plan = plan;
      f.script = random_script(rng);
      f.started = clock.now();
      f.stream_mode = stream && !plan.needs_full_response;
      auto [it, fresh] = flights.emplace(plan.id, std::move(f));
      if (!fresh) return fail_msg("attempt id reused");
      schedule(it->second);
    }
    if (st.kind == Step::Kind::attempt) continue;
    // Next event: the earliest of the queue and the session's wake-up.
    Instant t = q.empty() ? Instant::max() : q.top().at;
    if (st.wake_at != Instant{}) t = std::min(t, st.wake_at);
    if (t == Instant::max()) return fail_msg("nothing left to wait for and the session is not finished");
    if (t > clock.now()) clock.set(t);
    while (!q.empty() && q.top().at <= clock.now()) {
      Event e = q.top();
      q.pop();
      process(e);
    }
  }
  // The executor waits for every attempt to unwind after the request ended; their reports
  // still reach the session (late: tokens for the trace, no decision).
  while (!q.empty()) {
    Event e = q.top();
    q.pop();
    clock.set(std::max(clock.now(), e.at));
    process(e);
  }
  if (!s.finished()) return fail_msg("the session never finished");

  // (3) One attempt ever wrote to the client, and the stream ends once.
  std::set<std::uint32_t> writers(client.chunk_from.begin(), client.chunk_from.end());
  if (writers.size() > 1) return fail_msg("the client got output from " + std::to_string(writers.size()) + " attempts");
  if (client.done + client.errors != 1) return fail_msg("the client stream did not end exactly once");
  const DecisionTrace& t = s.trace();
  if (t.ok != (client.done == 1)) return fail_msg("client end does not match the trace");
  if (owner != s.committed()) return fail_msg("the driver's owner and the session's committed attempt differ");
  if (!owner) return {};
  // (4) The committed attempt: never ended by a routing timeout, recorded with its real ttft
  // and tokens, served or failed in the trace as it really went.
  const Flight& f = flights.at(owner);
  const AttemptRecord* rec = nullptr;
  for (const auto& a : t.attempts)
    if (a.id == owner) rec = &a;
  if (!rec) return fail_msg("no trace record for the committed attempt");
  if (rec->outcome == "timeout" && rec->why_ended.find("max_stream_ms") == std::string::npos)
    return fail_msg("the committed attempt was ended by a routing timeout: " + rec->why_ended);
  if (rec->outcome == "timeout" && f.plan.max_stream.count() == 0) return fail_msg("max_stream expiry without max_stream");
  if (!f.ttft || rec->ttft != *f.ttft) return fail_msg("the committed attempt's ttft is not its real ttft");
  if (rec->usage.completion_tokens != static_cast<std::int64_t>(f.produced))
    return fail_msg("the committed attempt's tokens are " + std::to_string(rec->usage.completion_tokens) + ", it produced " +
                    std::to_string(f.produced));
  if (t.ok) {
    if (rec->why_ended != "served" || t.served_model != f.plan.target.model) return fail_msg("served attempt mismatch");
    if (t.usage.completion_tokens != static_cast<std::int64_t>(f.produced)) return fail_msg("served usage mismatch");
  } else if (rec->ok) {
    return fail_msg("a committed attempt that answered did not serve the request");
  }
  // (5) A healthy stream is never cut: complete within the stall bound and max_stream.
  const bool healthy = f.script.kind == Script::Kind::stream &&
                       std::all_of(f.script.gaps.begin(), f.script.gaps.end(), [&](Nanos g) { return g < stall_of(f); });
  Nanos length{0};
  for (Nanos g : f.script.gaps) length += g;
  const bool fits = f.plan.max_stream.count() == 0 || length < f.plan.max_stream;
  if (healthy && fits && !t.ok && t.error_kind != "cancelled")
    return fail_msg("a healthy stream was cut: " + t.error_message);
  return {};
}

}  // namespace

TEST_CASE("Ownership property: random fault timings never overlap, cut or misreport a delivering stream") {
  std::size_t commits = 0, runs = 0;
  for (const Scenario& sc : kScenarios) {
    auto policy = compile(sc.config);
    for (std::uint64_t i = 0; i < 1500; ++i) {
      const std::uint64_t seed = 0x0515'0000ULL + i * 7919 + static_cast<std::uint64_t>(&sc - kScenarios) * 1'000'003;
      std::string violation = run_one(seed, sc, policy, &commits);
      ++runs;
      if (!violation.empty()) {
        INFO("seed " << seed << " (" << sc.name << ")");
        FAIL(violation);
      }
    }
  }
  CHECK(runs == 1500 * std::size(kScenarios));
  CHECK(commits > 1000);  // the commit path was really exercised
}
