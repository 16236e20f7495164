// The executor's timing logic on virtual time: failover, total budget, TTFT, stall,
// cancellation and the issue #19 reproductions, against the simulated mock provider
// (mock::make_simulated_transport) on a ManualClock. No sockets, no sleeps: the test owns the
// io_context, runs every ready handler, then moves the clock to the next pending timer. A
// 20 s timeout costs nothing, and every duration in a trace is exact.
#include <doctest/doctest.h>

#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "modelux/router.hpp"
#include "modelux/testing.hpp"
#include "modelux/timer.hpp"
#include "support/router_fixture.hpp"

using namespace modelux;
using modelux::test::ask;
using modelux::test::chain;
using namespace std::chrono_literals;

namespace {

net::awaitable<void> run_one(Router& r, ChatRequest q, CallContext ctx, AsyncChunkSink sink, std::optional<Completion>& out) {
  out = co_await r.co_complete(std::move(q), std::move(ctx), std::move(sink));
}

struct SimFixture {
  ManualClock clock;
  std::shared_ptr<Transport> transport;
  std::unique_ptr<Router> router;
  Instant started{};  ///< virtual instant the last request started
  Nanos took{};       ///< virtual time the last request took

  SimFixture(Json mock_config, Json routing) {
    mock::MockOptions mo;
    mo.config = std::move(mock_config);
    auto t = mock::make_simulated_transport(clock, mo);
    REQUIRE(t);
    transport = *t;
    Json doc = test::mock_providers_config("http://provider.sim", std::move(routing));
    auto cfg = Config::from_json(doc);
    REQUIRE(cfg);
    RouterOptions ro;
    ro.clock = &clock;
    ro.transport = transport;
    auto r = Router::create(std::move(*cfg), ro);
    REQUIRE(r);
    router = std::move(*r);
  }

  /// Runs one request to its end on virtual time. `at` (optional) runs once the clock reaches
  /// `at_time` after the start (a caller cancelling, say).
  Completion run(ChatRequest q, CallContext ctx = {}, ChunkSink sink = nullptr, Nanos at_time = {},
                 std::function<void()> at = nullptr) {
    net::io_context ioc;
    std::optional<Completion> out;
    AsyncChunkSink as;
    if (sink) as = [sink](const ChatChunk& c) -> net::awaitable<bool> { co_return sink(c); };
    started = clock.now();
    std::unique_ptr<Timer> at_timer;
    if (at) {
      at_timer = clock.make_timer(ioc.get_executor());
      at_timer->async_wait_until(started + at_time, [at](bool fired) {
        if (fired) at();
      });
    }
    net::co_spawn(ioc, run_one(*router, std::move(q), std::move(ctx), std::move(as), out), net::detached);
    for (;;) {
      ioc.restart();
      ioc.poll();
      if (out) break;
      // Nothing is runnable: the request waits on a timer, or on nothing at all (a hang).
      REQUIRE_MESSAGE(clock.advance_to_next_timer(), "the request waits on nothing: it would never end");
    }
    took = clock.now() - started;
    at_timer.reset();
    ioc.restart();
    ioc.poll();
    return std::move(*out);
  }

  std::string stream_text(ChatRequest q, Completion& c, int* chunks = nullptr, CallContext ctx = {}) {
    std::string text;
    c = run(std::move(q), std::move(ctx), [&](const ChatChunk& ch) {
      if (chunks) ++*chunks;
      for (const auto& choice : ch.choices)
        if (choice.content) text += *choice.content;
      return true;
    });
    return text;
  }
};

// Distinct answers per model, so that interleaved streams show in the text.
const std::string kHaiku = "haiku says one two three four five six seven eight nine ten.";
const std::string kMini = "mini says alpha beta gamma delta epsilon zeta eta theta iota.";
const std::string kFlash = "flash says red orange yellow green blue indigo violet black.";

Json three_answers(Json haiku, Json mini, Json flash) {
  haiku["text"] = kHaiku;
  mini["text"] = kMini;
  flash["text"] = kFlash;
  return {{"models", {{"claude-haiku-4-5", haiku}, {"gpt-4o-mini", mini}, {"gemini-2.5-flash", flash}}}};
}

}  // namespace

TEST_CASE("Virtual time: the fallback chain fails over on 429 across provider families") {
  SimFixture f({{"default", {{"latency_ms", 30}}}, {"models", {{"claude-haiku-4-5", {{"error_status", 429}, {"retry_after_ms", 1000}}}}}},
               {{"prod", chain()}});
  CallContext ctx;
  ctx.project = "p1";
  auto c = f.run(ask("@prod"), ctx);
  REQUIRE(c.result);
  CHECK(c.result->text() == "Hello from the modelux mock provider.");
  CHECK(c.served.model == "gpt-4o-mini");
  REQUIRE(c.trace.attempts.size() == 2);
  CHECK(c.trace.attempts[0].outcome == "rate_limited");
  CHECK(c.trace.attempts[0].status == 429);
  CHECK(c.trace.attempts[1].ok);
  CHECK(c.trace.attempts[1].cost.total() > 0);
  CHECK(c.trace.project == "p1");
  // Exact on virtual time: two answers, 30 ms each, one after the other.
  CHECK(f.took == 60ms);
  CHECK(c.trace.total == 60ms);
}

TEST_CASE("Virtual time: streams are delivered chunk by chunk, failover before the first byte is invisible") {
  SimFixture f({{"default", {{"chunks", 5}, {"chunk_interval_ms", 10}}}, {"models", {{"claude-haiku-4-5", {{"error_status", 529}}}}}},
               {{"prod", chain()}});
  int chunks = 0;
  Completion c;
  std::string text = f.stream_text(ask("@prod", true), c, &chunks);
  REQUIRE(c.result);
  CHECK(text == "Hello from the modelux mock provider.");
  CHECK(chunks >= 5);
  CHECK(c.trace.attempts.at(0).outcome == "overloaded");
  CHECK(c.trace.attempts.at(1).ok);
  CHECK(c.trace.attempts.at(1).ttft.count() >= 0);
}

TEST_CASE("Virtual time: a stream cut after output started ends with stream_interrupted, not success") {
  SimFixture f({{"default", {{"chunks", 6}, {"disconnect_after_chunks", 5}}}}, {{"prod", chain()}});
  Completion c;
  std::string text = f.stream_text(ask("@prod", true), c);
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::stream_interrupted);
  CHECK_FALSE(text.empty());
  CHECK(c.trace.attempts.size() == 1);  // no failover once the caller saw output
}

TEST_CASE("Virtual time: malformed provider bodies are failures that fail over") {
  // Providers that answer in no time: every attempt completes without suspending and the
  // request takes 0 ns. This caught two executor bugs real sockets never showed: a Flight
  // freed while co_spawn still used its cancellation slot (a crash), and a served request
  // reported as failed because its zero total read as "not finished".
  SimFixture f({{"models", {{"claude-haiku-4-5", {{"malformed_rate", 1.0}}}}}}, {{"prod", chain()}});
  auto c = f.run(ask("@prod"));
  REQUIRE(c.result);
  CHECK(c.trace.attempts.at(0).outcome == "malformed_response");
  CHECK(c.served.model == "gpt-4o-mini");
}

TEST_CASE("Virtual time: when every attempt hangs the request ends at total_budget_ms") {
  SimFixture f({{"default", {{"hang_rate", 1.0}}}}, {{"prod", chain(600, 250)}});
  auto c = f.run(ask("@prod"));
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::timeout);
  // Attempts of 250 ms at 0 and 250 ms, the third cut by the budget at 600 ms: exactly.
  CHECK(f.took == 600ms);
  REQUIRE(c.trace.attempts.size() == 3);
  CHECK(c.trace.attempts[0].outcome == "timeout");
  CHECK(c.trace.attempts[1].outcome == "timeout");
}

TEST_CASE("Virtual time: a first token later than ttft_timeout_ms fails over") {
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", 5000}, {"ttft_timeout_ms", 200}},
                                {{"model", "gpt-4o-mini"}, {"timeout_ms", 5000}}}},
                  {"retry_on", {"timeout"}},
                  {"total_budget_ms", 20000}};
  SimFixture f(three_answers({{"ttft_ms", 1000}}, {{"chunks", 3}}, {}), {{"chain", routing}});
  Completion c;
  std::string text = f.stream_text(ask("@chain", true), c);
  REQUIRE(c.result);
  CHECK(text == kMini);
  REQUIRE(c.trace.attempts.size() == 2);
  CHECK(c.trace.attempts[0].outcome == "timeout");
  CHECK(f.took == 200ms);  // the second attempt answers at once
}

TEST_CASE("Virtual time: a stream that stops delivering is cut by its stall timeout") {
  // OpenAI streams: the role chunk at once, the first text 10 s later (inside the 30 s attempt
  // timeout), then a 10 s gap: stall_timeout_ms 500 ends the committed stream 500 ms after the
  // first text, not at the attempt timeout.
  Json routing = {{"strategy", "single"}, {"model", "gpt-4o-mini"}, {"timeout_ms", 30000}, {"stall_timeout_ms", 500}};
  SimFixture f(three_answers({}, {{"chunks", 4}, {"chunk_interval_ms", 10000}}, {}), {{"one", routing}});
  Completion c;
  std::string text = f.stream_text(ask("@one", true), c);
  REQUIRE_FALSE(c.result);
  CHECK_FALSE(text.empty());
  CHECK(f.took == 10500ms);
}

TEST_CASE("Virtual time: a 400 from the provider is not retried elsewhere") {
  SimFixture f({{"models", {{"claude-haiku-4-5", {{"error_status", 400}}}}}}, {{"prod", chain()}});
  auto c = f.run(ask("@prod"));
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::bad_request);
  CHECK(c.trace.attempts.size() == 1);
}

TEST_CASE("Virtual time: the caller going away mid-stream stops the request as cancelled") {
  SimFixture f({{"default", {{"chunks", 20}, {"chunk_interval_ms", 20}}}}, {{"prod", chain()}});
  int seen = 0;
  auto c = f.run(ask("@prod", true), {}, [&](const ChatChunk&) { return ++seen < 3; });
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::cancelled);
  CHECK(seen == 3);
  CHECK(f.transport->stats().in_flight == 0);
}

TEST_CASE("Virtual time: a CancellationToken stops a request waiting on a hung upstream at once") {
  SimFixture f({{"default", {{"hang_rate", 1.0}}}}, {{"slow", chain(20000, 8000)}});
  for (bool stream : {false, true}) {
    CAPTURE(stream);
    CallContext ctx;
    ctx.cancel = std::make_shared<CancellationToken>();
    auto token = ctx.cancel;
    ChunkSink sink;
    if (stream) sink = [](const ChatChunk&) { return true; };
    Completion c = f.run(ask("@slow", stream), ctx, sink, 100ms, [token] { token->cancel(); });
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().kind == ErrorKind::cancelled);
    CHECK(f.took == 100ms);  // at once: not at the 8 s attempt timeout
    REQUIRE_FALSE(c.trace.attempts.empty());
    CHECK(c.trace.attempts[0].outcome == "cancelled");
  }
  CHECK(f.transport->stats().in_flight == 0);
}

// ---- streams that deliver own the response (issue #19) -------------------------------------

TEST_CASE("Virtual time: a stream delivering steadily outlives the attempt timeout of a single config") {
  // Issue #19, reproduction 1: timeout_ms 300, a healthy stream of ~1 s. Before the fix the
  // attempt was cut at 300 ms with a timeout error mid-answer.
  Json steady = {{"chunks", 25}, {"chunk_interval_ms", 40}, {"ttft_ms", 80}};
  SimFixture f(three_answers(steady, steady, steady),
               {{"one", {{"strategy", "single"}, {"model", "claude-haiku-4-5"}, {"timeout_ms", 300}}}});
  Completion c;
  std::string text = f.stream_text(ask("@one", true), c);
  REQUIRE(c.result);
  CHECK(text == kHaiku);
  REQUIRE(c.trace.attempts.size() == 1);
  CHECK(c.trace.attempts[0].ok);
  // The first text comes after Anthropic's preamble frames (paced like the rest), still
  // before the 300 ms timeout; the answer ends long after it.
  CHECK(c.trace.attempts[0].ttft > 80ms);
  CHECK(c.trace.attempts[0].ttft < 300ms);
  CHECK(c.trace.attempts[0].usage.completion_tokens > 0);
  CHECK(f.took > 900ms);
}

TEST_CASE("Virtual time: a fallback chain whose first stream delivers gives one model's answer and a true trace") {
  // Issue #19, reproduction 2: attempts of 300/450/750 ms, every stream healthy and ~1 s long.
  // Before the fix the three answers interleaved and the trace said "timeout" for all three.
  Json steady = {{"chunks", 25}, {"chunk_interval_ms", 40}, {"ttft_ms", 80}};
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", 300}},
                                {{"model", "gpt-4o-mini"}, {"timeout_ms", 450}},
                                {{"model", "gemini-2.5-flash"}, {"timeout_ms", 750}}}},
                  {"retry_on", {"429", "5xx", "timeout"}},
                  {"total_budget_ms", 1500}};
  SimFixture f(three_answers(steady, steady, steady), {{"chain", routing}});
  Completion c;
  std::string text = f.stream_text(ask("@chain", true), c);
  REQUIRE(c.result);
  CHECK(text == kHaiku);
  CHECK(c.served.model == "claude-haiku-4-5");
  REQUIRE(c.trace.attempts.size() == 1);
  CHECK(c.trace.attempts[0].outcome == "ok");
  CHECK(c.trace.attempts[0].ttft > 80ms);
  CHECK(c.trace.attempts[0].ttft < 300ms);
  CHECK(c.trace.usage.completion_tokens > 0);
}

TEST_CASE("Virtual time: an attempt expired before its first token never writes, even when its chunks come late") {
  SimFixture f(three_answers({{"ttft_ms", 500}, {"chunks", 6}, {"chunk_interval_ms", 20}},
                             {{"chunks", 8}, {"chunk_interval_ms", 100}}, {{"chunks", 4}}),
               {{"chain",
                 {{"strategy", "fallback"},
                  {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", 300}}, {{"model", "gpt-4o-mini"}, {"timeout_ms", 3000}}}},
                  {"retry_on", {"timeout"}},
                  {"total_budget_ms", 5000}}}});
  Completion c;
  std::string text = f.stream_text(ask("@chain", true), c);
  REQUIRE(c.result);
  CHECK(text == kMini);
  CHECK(c.served.model == "gpt-4o-mini");
  REQUIRE(c.trace.attempts.size() == 2);
  CHECK(c.trace.attempts[0].outcome == "timeout");
  CHECK(c.trace.attempts[1].ok);
  CHECK(f.transport->stats().in_flight == 0);
}
