// The executor over real sockets against the in-process mock provider.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "mock/server.hpp"
#include "modelux/budget.hpp"
#include "modelux/router.hpp"

using namespace modelux;

namespace {

struct Fixture {
  std::unique_ptr<mock::MockProvider> mock;
  std::unique_ptr<Router> router;

  explicit Fixture(Json mock_config, Json routing, Json tracing = Json::object()) {
    mock::MockOptions mo;
    mo.config = std::move(mock_config);
    auto m = mock::MockProvider::start(mo);
    REQUIRE(m);
    mock = std::move(*m);
    std::string base = mock->base_url();
    Json doc = {{"providers",
                 {{"anthropic", {{"base_url", base}, {"api_key", "k-a"}}},
                  {"openai", {{"base_url", base + "/v1"}, {"api_keys", {"k-o1", "k-o2"}}}},
                  {"google", {{"base_url", base}, {"api_key", "k-g"}}}}},
                {"routing", std::move(routing)},
                {"tracing", std::move(tracing)}};
    auto cfg = Config::from_json(doc);
    REQUIRE(cfg);
    RouterOptions ro;
    ro.open_tracer = !doc["tracing"].empty();
    auto r = Router::create(std::move(*cfg), ro);
    REQUIRE(r);
    router = std::move(*r);
  }
};

Json chain(int total_budget_ms = 4000, int attempt_ms = 1500) {
  return {{"strategy", "fallback"},
          {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", attempt_ms}},
                        {{"model", "gpt-4o-mini"}, {"timeout_ms", attempt_ms}},
                        {{"model", "gemini-2.5-flash"}, {"timeout_ms", attempt_ms}}}},
          {"retry_on", {"429", "5xx", "timeout", "connection", "malformed"}},
          {"total_budget_ms", total_budget_ms}};
}

ChatRequest ask(std::string model, bool stream = false) {
  ChatRequest r;
  r.model = std::move(model);
  r.messages.push_back(Message::user("hello"));
  r.stream = stream;
  return r;
}

}  // namespace

TEST_CASE("Executor: the fallback chain fails over on 429 across provider families") {
  Fixture f({{"models", {{"claude-haiku-4-5", {{"error_status", 429}, {"retry_after_ms", 1000}}}}}}, {{"prod", chain()}});
  CallContext ctx;
  ctx.project = "p1";
  ctx.end_user = "u1";
  auto c = f.router->complete(ask("@prod"), ctx);
  REQUIRE(c.result);
  CHECK(c.result->text() == "Hello from the modelux mock provider.");
  CHECK(c.served.model == "gpt-4o-mini");
  CHECK(c.result->usage.completion_tokens > 0);
  REQUIRE(c.trace.attempts.size() == 2);
  CHECK(c.trace.attempts[0].outcome == "rate_limited");
  CHECK(c.trace.attempts[0].status == 429);
  CHECK(c.trace.attempts[1].ok);
  CHECK(c.trace.attempts[1].cost.total() > 0);
  CHECK(c.trace.cost.total() == doctest::Approx(c.trace.attempts[1].cost.total()));
  CHECK(c.trace.project == "p1");
  CHECK(c.trace.config == "@prod");
}

TEST_CASE("Executor: streams are delivered chunk by chunk, failover before the first byte is invisible") {
  Fixture f({{"default", {{"chunks", 5}}}, {"models", {{"claude-haiku-4-5", {{"error_status", 529}}}}}}, {{"prod", chain()}});
  std::string text;
  int chunks = 0;
  auto c = f.router->stream(ask("@prod", true), {}, [&](const ChatChunk& ch) {
    ++chunks;
    for (const auto& choice : ch.choices)
      if (choice.content) text += *choice.content;
    return true;
  });
  REQUIRE(c.result);
  CHECK(text == "Hello from the modelux mock provider.");
  CHECK(chunks >= 5);
  CHECK(c.trace.attempts.at(0).outcome == "overloaded");
  CHECK(c.trace.attempts.at(1).ok);
  CHECK(c.trace.attempts.at(1).ttft.count() > 0);
}

TEST_CASE("Executor: a stream cut after output started ends with stream_interrupted, not success") {
  Fixture f({{"default", {{"chunks", 6}, {"disconnect_after_chunks", 5}}}}, {{"prod", chain()}});
  std::string text;
  auto c = f.router->stream(ask("@prod", true), {}, [&](const ChatChunk& ch) {
    for (const auto& choice : ch.choices)
      if (choice.content) text += *choice.content;
    return true;
  });
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::stream_interrupted);
  CHECK_FALSE(text.empty());
  CHECK(c.trace.attempts.size() == 1);  // no failover once the caller saw output
}

TEST_CASE("Executor: malformed provider bodies are failures that fail over") {
  Fixture f({{"models", {{"claude-haiku-4-5", {{"malformed_rate", 1.0}}}}}}, {{"prod", chain()}});
  auto c = f.router->complete(ask("@prod"));
  REQUIRE(c.result);
  CHECK(c.trace.attempts.at(0).outcome == "malformed_response");
  CHECK(c.served.model == "gpt-4o-mini");
}

TEST_CASE("Executor: when every attempt hangs the request ends within total_budget_ms") {
  // Attempts of 1.5 s under a 2 s budget: the first times out, the second is cut by the budget.
  // Without the budget the three attempts would take 4.5 s. The bound sits between the two with
  // 1 s or more on each side, which holds at load average 4 on real sockets.
  Fixture f({{"default", {{"hang_rate", 1.0}}}}, {{"prod", chain(2000, 1500)}});
  auto t0 = std::chrono::steady_clock::now();
  auto c = f.router->complete(ask("@prod"));
  auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::timeout);
  CHECK(took >= std::chrono::milliseconds(1800));
  CHECK(took < std::chrono::milliseconds(3500));
  CHECK(c.trace.attempts.size() == 2);
}

TEST_CASE("Executor: a 400 from the provider is not retried elsewhere") {
  Fixture f({{"models", {{"claude-haiku-4-5", {{"error_status", 400}}}}}}, {{"prod", chain()}});
  auto c = f.router->complete(ask("@prod"));
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::bad_request);
  CHECK(c.trace.attempts.size() == 1);
}

TEST_CASE("Executor: unknown models and slugs are not_found, plain catalog models route directly") {
  Fixture f(Json::object(), {{"prod", chain()}});
  auto u = f.router->complete(ask("gpt-99"));
  REQUIRE_FALSE(u.result);
  CHECK(u.result.error().kind == ErrorKind::not_found);
  auto s = f.router->complete(ask("@nope"));
  REQUIRE_FALSE(s.result);
  CHECK(s.result.error().kind == ErrorKind::not_found);
  auto d = f.router->complete(ask("gemini-2.5-flash"));
  REQUIRE(d.result);
  CHECK(d.served.provider == "google");
}

TEST_CASE("Executor: the caller going away mid-stream stops the request as cancelled") {
  Fixture f({{"default", {{"chunks", 20}, {"chunk_interval_ms", 20}}}}, {{"prod", chain()}});
  int seen = 0;
  auto c = f.router->stream(ask("@prod", true), {}, [&](const ChatChunk&) { return ++seen < 3; });
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::cancelled);
  CHECK(seen == 3);
}

TEST_CASE("Executor: many concurrent requests reuse pooled connections and all succeed") {
  Fixture f(Json::object(), {{"fast", {{"strategy", "single"}, {"model", "gpt-4o-mini"}}}});
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 25; ++i)
        if (f.router->complete(ask("@fast")).result) ++ok;
    });
  for (auto& t : ts) t.join();
  CHECK(ok == 100);
  auto st = f.router->transport().stats();
  CHECK(st.connections_opened <= 8);
  CHECK(st.connections_reused >= 90);
}

TEST_CASE("ClientSession: the app makes the calls, modelux routes, fails over and traces") {
  Fixture f(Json::object(), {{"prod", chain()}});
  auto s = f.router->begin(ask("@prod"), {});
  REQUIRE(s);
  Step st = (*s)->next();
  REQUIRE(st.kind == Step::Kind::attempt);
  REQUIRE(st.attempts.size() == 1);
  CHECK(st.attempts[0].target.model == "claude-haiku-4-5");
  auto native = (*s)->native_request(st.attempts[0]);
  REQUIRE(native);
  CHECK(native->url.ends_with("/v1/messages"));
  CHECK(find_header(native->headers, "x-api-key") != nullptr);
  // The app's own SDK got a 429.
  (*s)->report_http(st.attempts[0].id, 429, {{"retry-after", "2"}},
                    R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})", std::chrono::milliseconds(12));
  st = (*s)->next();
  REQUIRE(st.kind == Step::Kind::attempt);
  CHECK(st.attempts[0].target.model == "gpt-4o-mini");
  ChatResponse ok;
  ok.choices.push_back(Choice{0, Message::assistant("from my own client"), "stop"});
  ok.usage.prompt_tokens = 10;
  ok.usage.completion_tokens = 5;
  (*s)->report(st.attempts[0].id, ok, std::chrono::milliseconds(30));
  st = (*s)->next();
  CHECK(st.kind == Step::Kind::done);
  Completion c = (*s)->finish();
  REQUIRE(c.result);
  CHECK(c.result->text() == "from my own client");
  CHECK(c.served.model == "gpt-4o-mini");
  REQUIRE(c.trace.attempts.size() == 2);
  CHECK(c.trace.attempts[0].outcome == "rate_limited");
  CHECK(c.trace.attempts[1].cost.total() > 0);
  CHECK_FALSE(f.router->begin(ask("@missing"), {}));
}

TEST_CASE("Executor: budgets downgrade at the soft threshold and block at the cap, through the router") {
  mock::MockOptions mo;
  auto m = mock::MockProvider::start(mo);
  REQUIRE(m);
  std::string base = (*m)->base_url();
  // gpt-4o costs far more per request than gpt-4o-mini; the cap is sized so that a few
  // gpt-4o answers cross 50% (downgrade to @cheap) and then the cap blocks.
  Json doc = {{"providers", {{"openai", {{"base_url", base + "/v1"}, {"api_key", "k"}}}}},
              {"routing", {{"main", {{"strategy", "single"}, {"model", "gpt-4o"}}},
                           {"cheap", {{"strategy", "single"}, {"model", "gpt-4o-mini"}}}}},
              {"budgets", {{{"name", "acme"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 0.0006},
                            {"soft", {{"percent", 50}, {"downgrade_to", "@cheap"}}}}}}};
  auto cfg = Config::from_json(doc);
  REQUIRE(cfg);
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(std::move(*cfg), ro);
  REQUIRE(r);
  CallContext ctx;
  ctx.project = "acme";
  bool saw_downgrade = false, saw_block = false;
  for (int i = 0; i < 200 && !saw_block; ++i) {
    ChatRequest q = ask("@main");
    q.max_tokens = 16;
    auto c = (*r)->complete(q, ctx);
    if (c.result && c.served.model == "gpt-4o-mini") {
      saw_downgrade = true;
      bool noted = false;
      for (const auto& a : c.trace.budget_actions) noted |= a.find("@cheap") != std::string::npos;
      CHECK(noted);
    }
    if (!c.result) {
      CHECK(c.result.error().kind == ErrorKind::budget_exceeded);
      CHECK(c.result.error().message.find("acme") != std::string::npos);
      saw_block = true;
    }
  }
  CHECK(saw_downgrade);
  CHECK(saw_block);
  auto st = (*r)->budgets()->status(ctx, (*r)->clock().now());
  CHECK(st.spent_usd <= 0.0006 + 1e-12);  // never past the cap
  // Another project is not affected.
  CallContext other;
  other.project = "other";
  CHECK((*r)->complete(ask("@main"), other).result);
}

TEST_CASE("Executor: a soak of mixed faults leaves no leased connection behind") {
  // MODELUX_SOAK_REQUESTS=10000 for the full soak (run it under ASan/valgrind for leaks);
  // the default keeps the unit suite fast.
  int total = 1000;
  if (const char* n = std::getenv("MODELUX_SOAK_REQUESTS")) total = std::max(8, std::atoi(n));
  Fixture f({{"default", {{"chunks", 4}}},
             {"models", {{"claude-haiku-4-5", {{"error_status", 429}, {"error_rate", 0.3}, {"disconnect_after_chunks", 2}}},
                         {"gpt-4o-mini", {{"malformed_rate", 0.2}, {"error_status", 503}, {"error_rate", 0.2}}},
                         {"gemini-2.5-flash", {{"error_status", 500}, {"error_rate", 0.1}}}}}},
            {{"prod", chain(3000, 1000)}});
  std::atomic<int> ok{0}, failed{0}, unexpected{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = t; i < total; i += 4) {
        bool stream = (i % 2) == 0;
        Completion c = stream ? f.router->stream(ask("@prod", true), {}, [](const ChatChunk&) { return true; })
                              : f.router->complete(ask("@prod"));
        if (c.result) ++ok;
        else {
          ++failed;
          auto k = c.result.error().kind;
          if (k != ErrorKind::server_error && k != ErrorKind::stream_interrupted && k != ErrorKind::malformed_response &&
              k != ErrorKind::rate_limited && k != ErrorKind::overloaded && k != ErrorKind::connection && k != ErrorKind::no_route)
            ++unexpected;
        }
      }
    });
  for (auto& t : ts) t.join();
  CHECK(ok + failed == total);
  // Breakers open under this fault mix (by design), so the success rate is not the point here:
  // every request ends, with a known outcome, and nothing stays leased.
  CHECK(ok > 0);
  CHECK(unexpected == 0);
  auto st = f.router->transport().stats();
  CHECK(st.in_flight == 0);
  CHECK(st.idle <= 3 * 64);
}

TEST_CASE("Executor: a CancellationToken stops a request waiting on a hung upstream at once") {
  Fixture f({{"default", {{"hang_rate", 1.0}}}}, {{"slow", chain(60000, 30000)}});
  for (bool stream : {false, true}) {
    CAPTURE(stream);
    CallContext ctx;
    ctx.cancel = std::make_shared<CancellationToken>();
    auto token = ctx.cancel;
    std::thread canceller([token] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the request is blocked upstream by then
      token->cancel();
    });
    auto t0 = std::chrono::steady_clock::now();
    Completion c = stream ? f.router->stream(ask("@slow", true), ctx, [](const ChatChunk&) { return true; })
                          : f.router->complete(ask("@slow"), ctx);
    auto took = std::chrono::steady_clock::now() - t0;
    canceller.join();
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().kind == ErrorKind::cancelled);
    // Far below the 30 s attempt timeout, with margin at load average 4 on real sockets.
    CHECK(took < std::chrono::seconds(10));
    REQUIRE_FALSE(c.trace.attempts.empty());
    CHECK(c.trace.attempts[0].outcome == "cancelled");
  }
  CHECK(f.router->transport().stats().in_flight == 0);
}

// Destroying the Router with requests in flight: tests/unit-app-router-teardown.cpp (it counts
// heap blocks, so it fails without a sanitizer too, and needs an executable of its own).
