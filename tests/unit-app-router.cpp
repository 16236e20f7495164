// The executor over real sockets against the in-process mock provider: what is about sockets
// (pooled connections, leases, fds) and the app-driven ClientSession. The executor's timing
// logic runs on virtual time in unit-app-executor-time.cpp.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "modelux/testing.hpp"
#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/router.hpp"
#include "support/raw_server.hpp"
#include "support/router_fixture.hpp"

using namespace modelux;
using modelux::test::ask;
using modelux::test::chain;

namespace {

struct Fixture {
  std::unique_ptr<mock::MockProvider> mock;
  std::unique_ptr<Router> router;

  explicit Fixture(Json mock_config, Json routing, Json tracing = Json::object(), int io_threads = 1) {
    mock::MockOptions mo;
    mo.config = std::move(mock_config);
    auto m = mock::MockProvider::start(mo);
    REQUIRE(m);
    mock = std::move(*m);
    Json doc = test::mock_providers_config(mock->base_url(), std::move(routing));
    doc["tracing"] = std::move(tracing);
    auto cfg = Config::from_json(doc);
    REQUIRE(cfg);
    RouterOptions ro;
    ro.open_tracer = !doc["tracing"].empty();
    ro.io_threads = io_threads;
    auto r = Router::create(std::move(*cfg), ro);
    REQUIRE(r);
    router = std::move(*r);
  }
};

}  // namespace

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

// io_threads 2: one io_context per thread, each with its own upstream connection pool. Calls
// from the app alternate over the threads; each thread opens its own connection once and
// reuses it (one shared pool would open one connection for these sequential calls).
TEST_CASE("Executor: with two io threads each thread keeps its own upstream pool and both serve") {
  Fixture f(Json::object(), {{"fast", {{"strategy", "single"}, {"model", "gpt-4o-mini"}}}}, Json::object(), 2);
  CHECK(f.router->executors().size() == 2);
  std::mutex mu;
  std::set<std::thread::id> ran_on;
  for (int i = 0; i < 20; ++i) {
    std::promise<bool> done;
    f.router->complete_async(ask("@fast"), CallContext{}, [&](Completion c) {
      {
        std::lock_guard lk(mu);
        ran_on.insert(std::this_thread::get_id());
      }
      done.set_value(static_cast<bool>(c.result));
    });
    CHECK(done.get_future().get());
  }
  CHECK(ran_on.size() == 2);
  auto st = f.router->transport().stats();  // summed over the threads' pools
  CHECK(st.requests == 20);
  CHECK(st.connections_opened == 2);
  CHECK(st.connections_reused == 18);
  // Concurrent blocking calls from app threads still all succeed.
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 25; ++i)
        if (f.router->complete(ask("@fast")).result) ++ok;
    });
  for (auto& t : ts) t.join();
  CHECK(ok == 100);
  CHECK(f.router->transport().stats().connections_opened <= 8);
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

// Destroying the Router with requests in flight: tests/unit-app-router-teardown.cpp (it counts
// heap blocks, so it fails without a sanitizer too, and needs an executable of its own).

// ---- local failures are ours (issue #19) ---------------------------------------------------

TEST_CASE("Executor: running out of file descriptors is a local failure that never opens a breaker") {
  Fixture f(Json::object(), {{"one", {{"strategy", "single"}, {"model", "claude-haiku-4-5"}}}});
  REQUIRE(f.router->complete(ask("@one")).result);  // warm: the mock and the router are up
  f.router->transport().close_idle();
  // Take every descriptor this process may open (under a lowered soft limit, so the hog stays
  // small), make requests, then give them back.
  rlimit saved{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
  rlimit low = saved;
  low.rlim_cur = std::min<rlim_t>(saved.rlim_cur, 1024);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::vector<int> hog;
  for (;;) {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    hog.push_back(fd);
  }
  std::vector<Completion> failed;
  for (int i = 0; i < 8; ++i) failed.push_back(f.router->complete(ask("@one")));
  for (int fd : hog) ::close(fd);
  ::setrlimit(RLIMIT_NOFILE, &saved);
  for (const auto& c : failed) {
    REQUIRE_FALSE(c.result);
    CAPTURE(c.result.error().message);
    CHECK(c.result.error().local);
    CHECK(c.result.error().message.find("too many open files (EMFILE)") != std::string::npos);
    CHECK(c.result.error().message.find("Operation canceled") == std::string::npos);
  }
  // Eight failures in a row would trip the breaker (5 consecutive) had they been charged to
  // the provider; the next request after the descriptors are back is served.
  auto st = f.router->health()->stats("anthropic/claude-haiku-4-5", f.router->clock().now());
  CHECK(st.breaker == BreakerState::closed);
  auto ok = f.router->complete(ask("@one"));
  REQUIRE(ok.result);
  CHECK(ok.trace.attempts.size() == 1);
}

// ---- bring your own client behaves like the executor (issue #12) ---------------------------

namespace {

std::string auth_of(const HttpRequestSpec& spec) {
  const std::string* h = find_header(spec.headers, "authorization");
  return h ? *h : std::string{};
}

}  // namespace

TEST_CASE("ClientSession: attempts use the provider's key pool like the executor") {
  Fixture f(Json::object(), {{"mini", {{"strategy", "single"}, {"model", "gpt-4o-mini"}}}});
  std::vector<std::string> keys;
  for (int i = 0; i < 4; ++i) {
    auto s = f.router->begin(ask("@mini"), {});
    REQUIRE(s);
    Step st = (*s)->next();
    REQUIRE(st.kind == Step::Kind::attempt);
    auto spec = (*s)->native_request(st.attempts[0]);
    REQUIRE(spec);
    keys.push_back(auth_of(*spec));
    (*s)->finish();
  }
  // Spread over the pool's two keys (round robin), as the executor does; before: always the first.
  CHECK(std::count(keys.begin(), keys.end(), "Bearer k-o1") == 2);
  CHECK(std::count(keys.begin(), keys.end(), "Bearer k-o2") == 2);
}

TEST_CASE("ClientSession: rate-limit headers the app reports feed the target's token bucket") {
  Fixture f(Json::object(), {{"mini", {{"strategy", "single"}, {"model", "gpt-4o-mini"}}}});
  auto s = f.router->begin(ask("@mini"), {});
  REQUIRE(s);
  Step st = (*s)->next();
  REQUIRE(st.kind == Step::Kind::attempt);
  (*s)->report_http(st.attempts[0].id, 200,
                    {{"x-ratelimit-remaining-requests", "0"}, {"x-ratelimit-reset-requests", "20s"}},
                    R"({"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})",
                    std::chrono::milliseconds(5));
  CHECK((*s)->next().kind == Step::Kind::done);
  CHECK((*s)->finish().result);
  auto stats = f.router->health()->stats("openai/gpt-4o-mini", f.router->clock().now());
  CHECK_FALSE(stats.admits);  // before: the headers were ignored
}

TEST_CASE("ClientSession: budgets downgrade at the soft threshold like the executor") {
  mock::MockOptions mo;
  auto m = mock::MockProvider::start(mo);
  REQUIRE(m);
  Json doc = {{"providers", {{"openai", {{"base_url", (*m)->base_url() + "/v1"}, {"api_key", "k"}}}}},
              {"routing", {{"main", {{"strategy", "single"}, {"model", "gpt-4o"}}},
                           {"cheap", {{"strategy", "single"}, {"model", "gpt-4o-mini"}}}}},
              {"budgets", {{{"name", "acme"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 1.0},
                            {"soft", {{"percent", 50}, {"downgrade_to", "@cheap"}}}}}}};
  auto cfg = Config::from_json(doc);
  REQUIRE(cfg);
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(std::move(*cfg), ro);
  REQUIRE(r);
  CallContext ctx;
  ctx.project = "acme";
  // Spend 60% of the cap so the next reservation crosses the soft threshold.
  auto adm = (*r)->budgets()->admit(ctx, (*r)->catalog().find_model("gpt-4o"), 1, 1, (*r)->clock().now());
  REQUIRE(adm);
  Usage u;
  u.prompt_tokens = 1;
  (*r)->budgets()->settle(*adm, 0.6, u, (*r)->clock().now());

  auto s = (*r)->begin(ask("@main"), ctx);
  REQUIRE(s);
  Step st = (*s)->next();
  REQUIRE(st.kind == Step::Kind::attempt);
  CHECK(st.attempts[0].target.model == "gpt-4o-mini");  // before: gpt-4o, the downgrade ignored
  ChatResponse ok;
  ok.choices.push_back(Choice{0, Message::assistant("cheap answer"), "stop"});
  ok.usage.prompt_tokens = 5;
  ok.usage.completion_tokens = 2;
  (*s)->report(st.attempts[0].id, ok, std::chrono::milliseconds(3));
  CHECK((*s)->next().kind == Step::Kind::done);
  Completion c = (*s)->finish();
  REQUIRE(c.result);
  CHECK(c.served.model == "gpt-4o-mini");
  bool rerouted = false;
  for (const auto& a : c.trace.budget_actions) rerouted |= a == "rerouted to @cheap";
  CHECK(rerouted);
  // The executor takes the same route for the same state.
  auto e = (*r)->complete(ask("@main"), ctx);
  REQUIRE(e.result);
  CHECK(e.served.model == "gpt-4o-mini");
}

TEST_CASE("ClientSession: the budget reservation uses the executor's output-token estimate") {
  mock::MockOptions mo;
  auto m = mock::MockProvider::start(mo);
  REQUIRE(m);
  // A model whose max output (100) is below the default estimate (1024): the executor reserves
  // for 100 output tokens, and so must the app's own client.
  Json doc = {{"providers", {{"openai", {{"base_url", (*m)->base_url() + "/v1"}, {"api_key", "k"}}}}},
              {"catalog", {{"models", {{{"id", "short-out"}, {"provider", "openai"}, {"upstream", "gpt-4o-mini"},
                                         {"input", 1.0}, {"output", 10.0}, {"max_output", 100}}}}}},
              {"routing", {{"short", {{"strategy", "single"}, {"model", "short-out"}}}}},
              {"budgets", {{{"name", "acme"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 100.0}}}}};
  auto cfg = Config::from_json(doc);
  REQUIRE(cfg);
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(std::move(*cfg), ro);
  REQUIRE(r);
  CallContext ctx;
  ctx.project = "acme";
  auto reserved = [](const DecisionTrace& t) {
    for (const auto& a : t.budget_actions)
      if (a.starts_with("reserved ")) return a;
    return std::string{};
  };
  auto e = (*r)->complete(ask("@short"), ctx);
  REQUIRE(e.result);
  auto s = (*r)->begin(ask("@short"), ctx);
  REQUIRE(s);
  Step st = (*s)->next();
  REQUIRE(st.kind == Step::Kind::attempt);
  ChatResponse ok;
  ok.choices.push_back(Choice{0, Message::assistant("x"), "stop"});
  ok.usage.prompt_tokens = 5;
  ok.usage.completion_tokens = 1;
  (*s)->report(st.attempts[0].id, ok, std::chrono::milliseconds(3));
  CHECK((*s)->next().kind == Step::Kind::done);
  Completion c = (*s)->finish();
  REQUIRE_FALSE(reserved(e.trace).empty());
  CHECK(reserved(c.trace) == reserved(e.trace));  // before: 1024 output tokens, not 100
}

TEST_CASE("Router: a 200 stream whose body is not an event stream is a protocol error, not a connection failure") {
  // Issue #14 (7): the upstream answered 200 with garbage and closed cleanly; nothing reached
  // the caller. It was reported as `connection` (the decoder's "ended before [DONE]").
  const std::string garbage = "<html>upstream proxy error</html>";
  test::RawServer srv(1, [&](test::RawServer::tcp::socket& s, int) {
    test::RawServer::read_request(s);
    test::RawServer::write(s, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " +
                                  std::to_string(garbage.size()) + "\r\nConnection: close\r\n\r\n" + garbage);
  });
  Json doc = {{"providers", {{"openai", {{"base_url", srv.url("/v1")}, {"api_key", "k"}}}}}};
  auto cfg = Config::from_json(doc);
  REQUIRE(cfg);
  auto r = Router::create(std::move(*cfg));
  REQUIRE(r);
  ChatRequest q;
  q.model = "gpt-4o-mini";
  q.messages.push_back(Message::user("hi"));
  int chunks = 0;
  Completion c = (*r)->stream(q, {}, [&](const ChatChunk&) { return ++chunks > 0; });
  REQUIRE_FALSE(c.result);
  CHECK(chunks == 0);
  CHECK(c.result.error().kind == ErrorKind::malformed_response);
  REQUIRE(c.trace.attempts.size() == 1);
  CHECK(c.trace.attempts[0].outcome == "malformed_response");
}

TEST_CASE("Router: a stream that arrives in one read writes its first output at once and keeps its last chunk for the end") {
  // A provider that sends the whole answer at once (one socket read). Before: every chunk but
  // the read's last said `more` (the first token waited for the whole read's scan), and the
  // last was written on its own before [DONE].
  auto ev = [](const std::string& delta, const std::string& finish) {
    return "data: {\"id\":\"up\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
           "\"delta\":" + delta + ",\"finish_reason\":" + finish + "}]}\n\n";
  };
  const std::string body = ev(R"({"role":"assistant","content":""})", "null") + ev(R"({"content":"He"})", "null") +
                           ev(R"({"content":"llo"})", "null") + ev("{}", "\"stop\"") + "data: [DONE]\n\n";
  test::RawServer srv(1, [&](test::RawServer::tcp::socket& s, int) {
    test::RawServer::read_request(s);
    test::RawServer::write(s, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " +
                                  std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  Json doc = {{"providers", {{"openai", {{"base_url", srv.url("/v1")}, {"api_key", "k"}}}}}};
  auto cfg = Config::from_json(doc);
  REQUIRE(cfg);
  auto r = Router::create(std::move(*cfg));
  REQUIRE(r);
  ChatRequest q;
  q.model = "gpt-4o-mini";
  q.stream = true;
  q.messages.push_back(Message::user("hi"));
  std::vector<bool> more;
  std::string text;
  Completion c = (*r)->stream(q, {}, [&](const ChatChunk& ch) {
    more.push_back(ch.more);
    for (const auto& choice : ch.choices) text += choice.content.value_or("");
    CHECK_FALSE(ch.sse.empty());  // relayed as received
    return true;
  });
  REQUIRE(c.result);
  CHECK(text == "Hello");
  // role (held until output, goes with it), "He" (the first output: written at once), "llo"
  // (more follows), finish (the stream ended with this read: goes with the end).
  CHECK(more == std::vector<bool>{true, false, true, true});
}
