// Documented Router behaviour over real sockets against the in-process mock provider: key
// pools, budget persistence across a restart, catalog price overrides, co_complete().
#include <doctest/doctest.h>

#include <filesystem>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include "modelux/budget.hpp"
#include "modelux/router.hpp"
#include "modelux/testing.hpp"

using namespace modelux;

namespace {

std::unique_ptr<mock::MockProvider> start_mock(Json config = Json::object()) {
  mock::MockOptions mo;
  mo.config = std::move(config);
  auto m = mock::MockProvider::start(mo);
  REQUIRE(m);
  return std::move(*m);
}

std::unique_ptr<Router> make_router(Json doc) {
  auto cfg = Config::from_json(doc);
  REQUIRE_MESSAGE(cfg, (cfg ? std::string{} : cfg.error().describe()));
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(std::move(*cfg), ro);
  REQUIRE_MESSAGE(r, (r ? std::string{} : r.error().describe()));
  return std::move(*r);
}

ChatRequest ask(std::string model) {
  ChatRequest r;
  r.model = std::move(model);
  r.messages.push_back(Message::user("hello"));
  r.max_tokens = 16;
  return r;
}

std::uint64_t key_count(const Json& stats, const std::string& key) {
  auto it = stats["keys"].find(key);
  return it == stats["keys"].end() ? 0 : it->get<std::uint64_t>();
}

// A fresh directory under the build tree for SQLite files, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) {
    path = std::filesystem::temp_directory_path() / "modelux-test-tmp" / (name + "-" + new_request_id());
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("Key pool: requests spread over every key of the provider's pool") {
  auto m = start_mock();
  auto r = make_router({{"providers", {{"openai", {{"base_url", m->base_url() + "/v1"}, {"api_keys", {"k-1", "k-2", "k-3"}}}}}}});
  for (int i = 0; i < 9; ++i) REQUIRE(r->complete(ask("gpt-4o-mini")).result);
  Json s = m->stats();
  // Round robin over three healthy keys: each one carried a third of the requests.
  CHECK(key_count(s, "k-1") == 3);
  CHECK(key_count(s, "k-2") == 3);
  CHECK(key_count(s, "k-3") == 3);
}

TEST_CASE("Key pool: a key the provider answers 401 is taken out of the pool") {
  auto m = start_mock({{"revoked_keys", {"k-bad"}}});
  auto r = make_router({{"providers", {{"openai", {{"base_url", m->base_url() + "/v1"}, {"api_keys", {"k-good", "k-bad"}}}}}}});
  int failed = 0;
  for (int i = 0; i < 12; ++i) {
    auto c = r->complete(ask("gpt-4o-mini"));
    if (!c.result) {
      CHECK(c.result.error().kind == ErrorKind::auth);
      ++failed;
    }
  }
  Json s = m->stats();
  // The revoked key is tried once and leaves the pool; the request that drew it is sent again
  // at once on the good key (a pool fails over across its keys first, issue #14), so none fails.
  CHECK(key_count(s, "k-bad") == 1);
  CHECK(key_count(s, "k-good") == 12);
  CHECK(failed == 0);
  Json pools = r->health()->state_json(r->clock().now())["key_pools"];
  CHECK_MESSAGE(pools.dump().find("openai") != std::string::npos, pools.dump());
}

TEST_CASE("Budgets: SQLite spend survives a Router restart and the cap still bites") {
  auto m = start_mock();
  TempDir dir("budget-restart");
  const std::string db = (dir.path / "budgets.db").string();
  Json doc = {{"providers", {{"openai", {{"base_url", m->base_url() + "/v1"}, {"api_key", "k"}}}}},
              {"budgets", {{{"name", "acme-daily"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 0.0004}}}},
              {"budget_backend", {{"sqlite_path", db}, {"sync_interval_ms", 50}}}};
  CallContext ctx;
  ctx.project = "acme";
  double spent_before = 0;
  int served = 0;
  {
    auto r = make_router(doc);
    // Spend until the cap blocks: gpt-4o costs ~1.6e-4 per answer here, so two or three fit.
    bool blocked = false;
    for (int i = 0; i < 20 && !blocked; ++i) {
      auto c = r->complete(ask("gpt-4o"), ctx);
      if (c.result) ++served;
      else {
        REQUIRE(c.result.error().kind == ErrorKind::budget_exceeded);
        blocked = true;
      }
    }
    REQUIRE(blocked);
    REQUIRE(served >= 1);
    spent_before = r->budgets()->status(ctx, r->clock().now()).spent_usd;
    REQUIRE(spent_before > 0);
  }  // the Router and its BudgetManager are destroyed: the last spend is flushed to SQLite
  CHECK(m->stats()["models"]["gpt-4o"]["requests"].get<int>() == served);

  auto r2 = make_router(doc);
  // The spend is read back from the file...
  CHECK(r2->budgets()->status(ctx, r2->clock().now()).spent_usd == doctest::Approx(spent_before).epsilon(1e-9));
  // ...so the cap still bites on the first request after the restart, before any upstream call.
  auto c = r2->complete(ask("gpt-4o"), ctx);
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::budget_exceeded);
  CHECK(m->stats()["models"]["gpt-4o"]["requests"].get<int>() == served);
  // Another project's ledger starts empty.
  CallContext other;
  other.project = "other";
  CHECK(r2->complete(ask("gpt-4o"), other).result);
}

TEST_CASE("Catalog overrides: a config's catalog section changes the price the trace is costed at") {
  auto m = start_mock();
  Json base = {{"providers", {{"openai", {{"base_url", m->base_url() + "/v1"}, {"api_key", "k"}}}}}};
  Json over = base;
  // gpt-4o-mini at 100x its list price, everything else as shipped.
  over["catalog"] = {{"models", {{{"id", "gpt-4o-mini"}, {"provider", "openai"}, {"upstream", "gpt-4o-mini"},
                                  {"input", 15.0}, {"output", 60.0}, {"tier", 2}, {"priced", true}}}}};
  auto listed = make_router(base);
  auto priced = make_router(over);
  CHECK(priced->catalog().find_model("gpt-4o-mini")->input_per_m == doctest::Approx(15.0));
  auto a = listed->complete(ask("gpt-4o-mini"));
  auto b = priced->complete(ask("gpt-4o-mini"));
  REQUIRE(a.result);
  REQUIRE(b.result);
  REQUIRE(a.trace.usage.prompt_tokens == b.trace.usage.prompt_tokens);
  REQUIRE(a.trace.usage.completion_tokens == b.trace.usage.completion_tokens);
  const double in = static_cast<double>(b.trace.usage.prompt_tokens), out = static_cast<double>(b.trace.usage.completion_tokens);
  CHECK(a.trace.cost.total() == doctest::Approx((in * 0.15 + out * 0.60) / 1e6));
  CHECK(b.trace.cost.total() == doctest::Approx((in * 15.0 + out * 60.0) / 1e6));
  CHECK(b.trace.attempts.back().cost.total() == doctest::Approx(b.trace.cost.total()));
}

TEST_CASE("co_complete: an Asio app awaits the Router on its own io_context") {
  auto m = start_mock();
  auto r = make_router({{"providers", {{"openai", {{"base_url", m->base_url() + "/v1"}, {"api_key", "k"}}}}},
                        {"routing", {{"main", {{"strategy", "fallback"},
                                               {"attempts", {{{"model", "gpt-4o"}, {"timeout_ms", 3000}},
                                                             {{"model", "gpt-4o-mini"}, {"timeout_ms", 3000}}}},
                                               {"retry_on", {"5xx"}}}}}}});
  REQUIRE(m->configure({{"models", {{"gpt-4o", {{"error_status", 503}}}}}}));
  net::io_context app;  // the application's own loop, not the Router's
  auto strand = net::make_strand(app);
  std::thread::id app_thread;
  std::thread::id resumed_on;
  auto fut = net::co_spawn(
      strand,
      [&]() -> net::awaitable<std::pair<Completion, Completion>> {
        ChatRequest q = ask("@main");
        CallContext ctx;
        ctx.project = "asio-app";
        Completion first = co_await r->co_complete(q, ctx);
        resumed_on = std::this_thread::get_id();
        ChatRequest s = ask("gpt-4o-mini");
        CallContext sctx;
        std::string streamed;
        AsyncChunkSink sink = [&streamed](const ChatChunk& c) -> net::awaitable<bool> {
          if (!c.choices.empty() && c.choices[0].content) streamed += *c.choices[0].content;
          co_return true;
        };
        Completion second = co_await r->co_complete(s, sctx, sink);
        CHECK(streamed == "Hello from the modelux mock provider.");
        co_return std::make_pair(std::move(first), std::move(second));
      },
      net::use_future);
  std::thread runner([&] {
    app_thread = std::this_thread::get_id();
    app.run();
  });
  auto [first, second] = fut.get();
  runner.join();
  REQUIRE(first.result);
  CHECK(first.served.model == "gpt-4o-mini");
  REQUIRE(first.trace.attempts.size() == 2);
  CHECK(first.trace.attempts[0].status == 503);
  CHECK(first.trace.project == "asio-app");
  CHECK(first.result->choices.at(0).message.text() == "Hello from the modelux mock provider.");
  CHECK(resumed_on == app_thread);  // the awaiting coroutine resumed on the app's executor
  REQUIRE(second.result);
  CHECK(second.trace.stream);
}
