// The executor's timing logic on virtual time: failover, total budget, TTFT, stall,
// cancellation and the issue #19 reproductions, against the simulated mock provider
// (mock::make_simulated_transport) on a ManualClock. No sockets, no sleeps: the test owns the
// io_context, runs every ready handler, then moves the clock to the next pending timer. A
// 20 s timeout costs nothing, and every duration in a trace is exact.
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <set>

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

net::awaitable<void> embed_one(Router& r, EmbeddingRequest q, CallContext ctx, std::optional<EmbeddingCompletion>& out) {
  out = co_await r.co_embed(std::move(q), std::move(ctx));
}

struct SimFixture {
  ManualClock clock;
  std::shared_ptr<Transport> transport;
  std::unique_ptr<Router> router;
  Instant started{};  ///< virtual instant the last request started
  Nanos took{};       ///< virtual time the last request took

  SimFixture(Json mock_config, Json routing, Json providers = nullptr) {
    mock::MockOptions mo;
    mo.config = std::move(mock_config);
    auto t = mock::make_simulated_transport(clock, mo);
    REQUIRE(t);
    transport = *t;
    Json doc = test::mock_providers_config("http://provider.sim", std::move(routing));
    if (providers.is_object())
      for (auto it = providers.begin(); it != providers.end(); ++it) {
        if (it.key() == "__budgets") doc["budgets"] = Json::array({it.value()});
        else doc["providers"][it.key()].update(it.value());
      }
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
    pump(ioc, [&] { return out.has_value(); });
    at_timer.reset();
    ioc.restart();
    ioc.poll();
    return std::move(*out);
  }

  /// One embeddings request to its end on virtual time.
  EmbeddingCompletion embed(EmbeddingRequest q, CallContext ctx = {}) {
    net::io_context ioc;
    std::optional<EmbeddingCompletion> out;
    started = clock.now();
    net::co_spawn(ioc, embed_one(*router, std::move(q), std::move(ctx), out), net::detached);
    pump(ioc, [&] { return out.has_value(); });
    return std::move(*out);
  }

  /// Runs every ready handler, then moves the clock to the next timer, until `done`.
  void pump(net::io_context& ioc, const std::function<bool()>& done) {
    for (;;) {
      ioc.restart();
      ioc.poll();
      if (done()) break;
      // Nothing is runnable: the request waits on a timer, or on nothing at all (a hang).
      REQUIRE_MESSAGE(clock.advance_to_next_timer(), "the request waits on nothing: it would never end");
    }
    took = clock.now() - started;
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

TEST_CASE("Virtual time: a committed stream outlives total_budget_ms, which bounds the routing phase only") {
  // docs/routing.md: total_budget_ms bounds routing, never a committed stream. A healthy ~1 s
  // stream under a 400 ms total budget (and a 300 ms attempt timeout) is delivered whole.
  Json steady = {{"chunks", 25}, {"chunk_interval_ms", 40}, {"ttft_ms", 80}};
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {{{"model", "gpt-4o-mini"}, {"timeout_ms", 300}}, {{"model", "claude-haiku-4-5"}, {"timeout_ms", 300}}}},
                  {"retry_on", {"timeout"}},
                  {"total_budget_ms", 400}};
  SimFixture f(three_answers(steady, steady, steady), {{"chain", routing}});
  Completion c;
  std::string text = f.stream_text(ask("@chain", true), c);
  REQUIRE(c.result);
  CHECK(text == kMini);
  REQUIRE(c.trace.attempts.size() == 1);
  CHECK(c.trace.attempts[0].outcome == "ok");
  CHECK(f.took > 960ms);  // 24 gaps of 40 ms after the first chunk: far past the 400 ms budget
  // Before a commit the budget still holds: a buffered answer that comes after 1 s fails at
  // 400 ms (the first attempt's 300 ms, then the budget cuts the second).
  Json slow = {{"latency_ms", 1000}};
  SimFixture g(three_answers(slow, slow, slow), {{"chain", routing}});
  auto b = g.run(ask("@chain"));
  REQUIRE_FALSE(b.result);
  CHECK(b.result.error().kind == ErrorKind::timeout);
  CHECK(g.took == 400ms);
}

TEST_CASE("Virtual time: max_stream_ms ends a committed stream, and that limit of ours never opens the breaker") {
  // A healthy ~1 s stream under max_stream_ms 300: the caller gets one model's partial answer
  // and a timeout naming max_stream_ms. The provider was delivering all along, so health must
  // not count it: eight in a row (the breaker trips after 5 consecutive failures) leave the
  // breaker closed and the next request is served.
  Json steady = {{"chunks", 25}, {"chunk_interval_ms", 40}};
  Json routing = {{"strategy", "single"}, {"model", "gpt-4o-mini"}, {"timeout_ms", 2000}, {"max_stream_ms", 300}};
  SimFixture f(three_answers(steady, steady, steady), {{"one", routing}});
  for (int i = 0; i < 8; ++i) {
    CAPTURE(i);
    Completion c;
    std::string text = f.stream_text(ask("@one", true), c);
    CAPTURE(c.trace.reason);
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().kind == ErrorKind::timeout);
    CHECK(c.result.error().message.find("max_stream_ms 300 ms reached") != std::string::npos);
    CHECK(f.took == 340ms);  // the first text at 40 ms (after the role chunk) commits; 300 ms from there
    CHECK_FALSE(text.empty());
    CHECK(kMini.starts_with(text));
    CHECK(text != kMini);
    REQUIRE(c.trace.attempts.size() == 1);
    CHECK(c.trace.attempts[0].why_ended == "max_stream_ms 300 ms reached");
    CHECK(c.trace.attempts[0].ttft == 40ms);
  }
  CHECK(f.transport->stats().in_flight == 0);
  auto st = f.router->health()->stats("openai/gpt-4o-mini", f.clock.now());
  CHECK(st.breaker == BreakerState::closed);
  CHECK(st.error_rate == 0.0);
  // The same router: a buffered answer (no max_stream) is served by gpt-4o-mini, not skipped.
  auto c = f.run(ask("@one"));
  REQUIRE(c.result);
  CHECK(c.served.model == "gpt-4o-mini");
}

TEST_CASE("Virtual time: a stream cut after output started records the tokens the caller got, not 0") {
  // OpenAI-format streams carry usage only in their last event: a stream cut before it (a
  // stall, max_stream_ms, the caller hanging up) had no usage, so the trace said 0 tokens for
  // an answer the caller partly received, and the budget released the reservation as if the
  // attempt cost nothing. The executor now estimates what was delivered (4 characters a
  // token, as the input estimate).
  Json slow = {{"chunks", 25}, {"chunk_interval_ms", 40}};
  Json routing = {{"strategy", "single"}, {"model", "gpt-4o-mini"}, {"timeout_ms", 2000}};
  for (const std::string how : {"max_stream", "stall", "caller_gone"}) {
    CAPTURE(how);
    Json r = routing;
    Json mock = three_answers(slow, slow, slow);
    if (how == "max_stream") r["max_stream_ms"] = 300;
    if (how == "stall") {  // the first text at 10 s, inside the attempt timeout, then a 10 s gap
      r["timeout_ms"] = 30000;
      r["stall_timeout_ms"] = 500;
      mock = three_answers({}, {{"chunks", 4}, {"chunk_interval_ms", 10000}}, {});
    }
    SimFixture f(mock, {{"one", r}});
    std::string text;
    int seen = 0;
    auto c = f.run(ask("@one", true), {}, [&](const ChatChunk& ch) {
      if (how == "caller_gone" && ++seen >= 6) return false;  // the caller hung up: this one never arrived
      for (const auto& choice : ch.choices)
        if (choice.content) text += *choice.content;
      return true;
    });
    REQUIRE_FALSE(c.result);
    REQUIRE_FALSE(text.empty());
    REQUIRE(c.trace.attempts.size() == 1);
    const AttemptRecord& a = c.trace.attempts[0];
    CAPTURE(text);
    CHECK(a.usage.completion_tokens == static_cast<std::int64_t>((text.size() + 3) / 4));
    CHECK(a.usage.prompt_tokens > 0);
  }
}

TEST_CASE("Virtual time: an attempt cut short by total_budget_ms is not charged to the provider") {
  // haiku hangs for its whole 250 ms timeout (its fault: counted). gpt-4o-mini answers in
  // 300 ms, within its own 400 ms timeout, but the 400 ms budget leaves it only 150 ms: the
  // budget, a limit of ours, ended it. Before, five such requests opened mini's breaker
  // (error rate 1) although it never failed within the time it was meant to have. (Five: then
  // haiku's own breaker opens and mini gets the whole budget.)
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", 250}}, {{"model", "gpt-4o-mini"}, {"timeout_ms", 400}}}},
                  {"retry_on", {"timeout"}},
                  {"total_budget_ms", 400}};
  SimFixture f(three_answers({{"hang_rate", 1.0}}, {{"latency_ms", 300}}, {}), {{"c", routing}});
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    auto c = f.run(ask("@c"));
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().kind == ErrorKind::timeout);
    CHECK(f.took == 400ms);
    REQUIRE(c.trace.attempts.size() == 2);
    CHECK(c.trace.attempts[1].model == "gpt-4o-mini");
    CHECK(c.trace.attempts[1].outcome == "timeout");  // the trace still says how it ended
  }
  auto mini = f.router->health()->stats("openai/gpt-4o-mini", f.clock.now());
  CHECK(mini.breaker == BreakerState::closed);
  CHECK(mini.error_rate == 0.0);
  // The control: haiku had its whole timeout and hung through it, which is its own failure.
  auto haiku = f.router->health()->stats("anthropic/claude-haiku-4-5", f.clock.now());
  CHECK(haiku.breaker == BreakerState::open);
  // With haiku skipped, mini has the whole budget and serves.
  auto ok = f.run(ask("@c"));
  REQUIRE(ok.result);
  CHECK(ok.served.model == "gpt-4o-mini");
}

TEST_CASE("Virtual time: an ensemble member that hangs through the member timeout_ms is still charged") {
  // An ensemble's member timeout is a node deadline (the member's own model entry has none and
  // defaults to the budget): it is that attempt's bound, not a budget of ours cutting it
  // short. haiku hangs through it five times: its breaker opens.
  Json routing = {{"strategy", "ensemble"}, {"aggregation", "majority_vote"}, {"timeout_ms", 300},
                  {"members", {"claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash"}}, {"total_budget_ms", 2000}};
  SimFixture f(three_answers({{"hang_rate", 1.0}}, {}, {}), {{"e", routing}});
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    auto c = f.run(ask("@e"));
    CHECK(f.took == 300ms);
    REQUIRE(c.trace.attempts.size() == 3);
    CHECK(c.trace.attempts[0].outcome == "timeout");
  }
  auto haiku = f.router->health()->stats("anthropic/claude-haiku-4-5", f.clock.now());
  CHECK(haiku.breaker == BreakerState::open);
}

// ---- issue #14: defects --------------------------------------------------------------------

TEST_CASE("Virtual time: ttft_timeout_ms cuts an attempt whose head has not come by the limit and fails over at once") {
  // Issue #14 (1): the first byte of claude comes at 1.5 s, the limit is 500 ms. Before the fix
  // the attempt ran to 1.5 s, its working answer was thrown away, then gpt-4o-mini was tried.
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", 5000}, {"ttft_timeout_ms", 500}},
                                {{"model", "gpt-4o-mini"}, {"timeout_ms", 5000}}}},
                  {"retry_on", {"timeout"}},
                  {"total_budget_ms", 20000}};
  SimFixture f(three_answers({{"latency_ms", 1500}}, {{"latency_ms", 40}, {"chunks", 3}}, {}), {{"chain", routing}});
  Completion c;
  std::string text = f.stream_text(ask("@chain", true), c);
  REQUIRE(c.result);
  CHECK(text == kMini);
  REQUIRE(c.trace.attempts.size() == 2);
  CHECK(c.trace.attempts[0].outcome == "timeout");
  CHECK(c.trace.attempts[0].duration == 500ms);
  CHECK(c.trace.attempts[0].why_ended.find("ttft_timeout_ms 500") != std::string::npos);
  CHECK(c.trace.attempts[1].start_offset == 500ms);
  CHECK(f.took == 540ms);  // the limit, then the next target's own latency
  CHECK(f.transport->stats().in_flight == 0);
}

TEST_CASE("Virtual time: ttft_timeout_ms applies to the last target and can be set on the chain") {
  SUBCASE("the only target") {
    Json routing = {{"strategy", "single"}, {"model", "gpt-4o-mini"}, {"timeout_ms", 5000}, {"ttft_timeout_ms", 500}};
    SimFixture f(three_answers({}, {{"latency_ms", 1500}}, {}), {{"one", routing}});
    Completion c;
    f.stream_text(ask("@one", true), c);
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().kind == ErrorKind::timeout);
    CHECK(c.result.error().message.find("ttft_timeout_ms 500") != std::string::npos);
    CHECK(f.took == 500ms);
  }
  SUBCASE("set once for every entry of a chain") {
    Json routing = {{"strategy", "fallback"},
                    {"ttft_timeout_ms", 300},
                    {"stall_timeout_ms", 1000},
                    {"attempts", {"claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash"}},
                    {"retry_on", {"timeout"}},
                    {"total_budget_ms", 20000}};
    SimFixture f(three_answers({{"latency_ms", 1500}}, {{"ttft_ms", 2000}}, {{"latency_ms", 20}}), {{"chain", routing}});
    Completion c;
    std::string text = f.stream_text(ask("@chain", true), c);
    REQUIRE(c.result);
    CHECK(text == kFlash);
    REQUIRE(c.trace.attempts.size() == 3);
    CHECK(c.trace.attempts[0].duration == 300ms);
    CHECK(c.trace.attempts[1].duration == 300ms);
    CHECK(f.took == 620ms);
  }
  SUBCASE("non-streamed requests are not cut by a first-token limit") {
    Json routing = {{"strategy", "single"}, {"model", "gpt-4o-mini"}, {"timeout_ms", 5000}, {"ttft_timeout_ms", 500}};
    SimFixture f(three_answers({}, {{"latency_ms", 1500}}, {}), {{"one", routing}});
    auto c = f.run(ask("@one"));
    REQUIRE(c.result);
    CHECK(f.took == 1500ms);
  }
}

TEST_CASE("Virtual time: a key answered 429 with retry-after 30 s sits out alone and its pool serves on the good keys") {
  // Issue #14 (2): keys [good, bad, good], the bad one answered 429 with retry-after: 30. Before
  // the fix the 429 emptied the whole target's bucket: the next requests got no_route without
  // trying the good keys, and a retry waited the 30 s.
  Json keys = {{"openai", {{"api_keys", {"k-good1", "k-bad", "k-good2"}}}}};
  SUBCASE("plain model requests") {
    SimFixture f({{"default", {{"latency_ms", 20}}}, {"rate_limited_keys", {{"k-bad", 30000}}}}, {{"unused", "gpt-4o-mini"}},
                 keys);
    for (int i = 0; i < 9; ++i) {
      CAPTURE(i);
      auto c = f.run(ask("gpt-4o-mini"));
      REQUIRE(c.result);
      REQUIRE(c.trace.attempts.size() == 1);
      CHECK(c.trace.attempts[0].ok);
      // A request that drew the bad key was answered at once on another key of the pool.
      CHECK(f.took == 20ms);
      if (i == 1) CHECK(c.trace.reason.find("key 2 of openai") != std::string::npos);
    }
  }
  SUBCASE("a chain with retries never waits the bad key's retry-after") {
    Json routing = {{"strategy", "fallback"}, {"attempts", {"gpt-4o-mini"}}, {"retries", 2}, {"total_budget_ms", 60000}};
    SimFixture f({{"default", {{"latency_ms", 20}}}, {"rate_limited_keys", {{"k-bad", 30000}}}}, {{"chain", routing}}, keys);
    for (int i = 0; i < 6; ++i) {
      CAPTURE(i);
      auto c = f.run(ask("@chain"));
      REQUIRE(c.result);
      CHECK(f.took == 20ms);
    }
  }
  SUBCASE("every key limited: the request fails with the pool's earliest retry, not a guess") {
    SimFixture f({{"rate_limited_keys", {{"k-good1", 30000}, {"k-bad", 30000}, {"k-good2", 30000}}}},
                 {{"unused", "gpt-4o-mini"}}, keys);
    auto c = f.run(ask("gpt-4o-mini"));
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().kind == ErrorKind::rate_limited);
    CHECK(f.took == 0ms);
  }
}

TEST_CASE("Virtual time: a key rate limited on one model keeps serving the provider's other models") {
  // Issue #14 (2): providers meter requests per key and model. k-o1 is out of gpt-4o-mini
  // requests for 30 s; it still serves gpt-4o, and gpt-4o-mini goes to k-o2 without waiting.
  SimFixture f({{"default", {{"latency_ms", 20}}}, {"rate_limited_keys", {{"k-o1@gpt-4o-mini", 30000}}}},
               {{"unused", "gpt-4o-mini"}});
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    auto c = f.run(ask("gpt-4o-mini"));
    REQUIRE(c.result);
    CHECK(f.took == 20ms);
  }
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    auto c = f.run(ask("gpt-4o"));
    REQUIRE(c.result);
    CHECK(f.took == 20ms);
  }
  // What reached the provider: k-o1 tried gpt-4o-mini once (the 429), then only k-o2 served it;
  // gpt-4o was spread over both keys.
  auto stats = f.router->health()->state_json(f.clock.now());
  Json keys = stats["key_pools"][0]["keys"];
  REQUIRE(keys.size() == 2);
  CHECK(keys[0]["rate_limited_ms"]["gpt-4o-mini"].get<long long>() > 29000);
  CHECK_FALSE(keys[0]["rate_limited_ms"].contains("gpt-4o"));
  CHECK_FALSE(keys[0].contains("sits_out_ms"));
}

TEST_CASE("Virtual time: embeddings fail over on the simulated provider and its faults") {
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {{{"model", "text-embedding-3-small"}, {"timeout_ms", 1000}},
                                {{"model", "text-embedding-3-large"}, {"timeout_ms", 1000}}}},
                  {"retry_on", {"429", "5xx", "timeout", "malformed"}},
                  {"total_budget_ms", 5000}};
  EmbeddingRequest q;
  q.model = "@emb";
  q.texts = {"alpha", "beta"};
  SUBCASE("a 503 fails over") {
    SimFixture f({{"default", {{"latency_ms", 10}}}, {"models", {{"text-embedding-3-small", {{"error_status", 503}}}}}},
                 {{"emb", routing}});
    auto c = f.embed(q);
    REQUIRE(c.result);
    CHECK(c.result->data.size() == 2);
    CHECK(c.served.model == "text-embedding-3-large");
    REQUIRE(c.trace.attempts.size() == 2);
    CHECK_FALSE(c.trace.attempts[0].ok);
    CHECK(f.took == 20ms);
  }
  SUBCASE("a hang is cut at the attempt timeout") {
    SimFixture f({{"default", {{"latency_ms", 10}}}, {"models", {{"text-embedding-3-small", {{"hang_rate", 1.0}}}}}},
                 {{"emb", routing}});
    auto c = f.embed(q);
    REQUIRE(c.result);
    CHECK(c.served.model == "text-embedding-3-large");
    CHECK(f.took == 1010ms);
  }
  SUBCASE("a truncated body is malformed and fails over") {
    SimFixture f({{"default", {{"latency_ms", 10}}}, {"models", {{"text-embedding-3-small", {{"malformed_rate", 1.0}}}}}},
                 {{"emb", routing}});
    auto c = f.embed(q);
    REQUIRE(c.result);
    CHECK(c.served.model == "text-embedding-3-large");
    CHECK(c.trace.attempts[0].outcome == "malformed_response");
  }
}

TEST_CASE("Virtual time: 429s without retry-after back a target off briefly and proportionately") {
  // Issue #14 (3): with 30 % 429s (no retry-after) on a single-model route, every 429 used to
  // block the target for 1 s: 99.9 % of the following requests failed with 503 no_route.
  SUBCASE("a single-model route serves about as often as its provider does") {
    SimFixture f({{"models", {{"gpt-4o-mini", {{"latency_ms", 10}, {"error_status", 429}, {"error_rate", 0.3}, {"retry_after_ms", -1}}}}}},
                 {{"unused", "gpt-4o-mini"}});
    int served = 0, no_route = 0, limited = 0;
    for (int i = 0; i < 300; ++i) {
      auto c = f.run(ask("gpt-4o-mini"));
      if (c.result) ++served;
      else if (c.result.error().kind == ErrorKind::no_route) ++no_route;
      else if (c.result.error().kind == ErrorKind::rate_limited) ++limited;
    }
    CHECK(no_route == 0);
    CHECK(served + limited == 300);
    CHECK(served > 170);  // ~70 % are served upstream
  }
  SUBCASE("in a chain the backed-off target is skipped with a visible reason, and the backoff grows") {
    Json routing = {{"strategy", "fallback"}, {"attempts", {"gpt-4o-mini", "claude-haiku-4-5"}}, {"total_budget_ms", 20000}};
    SimFixture f({{"models", {{"gpt-4o-mini", {{"error_status", 429}, {"retry_after_ms", -1}}}}}}, {{"chain", routing}});
    auto c1 = f.run(ask("@chain"));  // mini 429s: backoff 100 ms; haiku serves
    REQUIRE(c1.result);
    CHECK(c1.trace.attempts.size() == 2);
    auto c2 = f.run(ask("@chain"));  // at once: mini still backing off, skipped
    REQUIRE(c2.result);
    CHECK(c2.trace.attempts.size() == 1);
    CHECK(c2.trace.reason.find("backoff") != std::string::npos);
    CHECK(c2.trace.reason.find("100 ms") != std::string::npos);
    f.clock.advance(100ms);
    auto c3 = f.run(ask("@chain"));  // mini tried again, 429 again: the backoff doubles
    REQUIRE(c3.result);
    CHECK(c3.trace.attempts.size() == 2);
    auto c4 = f.run(ask("@chain"));
    CHECK(c4.trace.reason.find("200 ms") != std::string::npos);
  }
}

TEST_CASE("Virtual time: a parameter one target cannot honour skips that target, not the chain") {
  // Issue #14 (4): temperature 1.5 is outside Anthropic's range. Before the fix the chain ended
  // with 400 "anthropic cannot honour request field temperature" and never tried the others.
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {"claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash"}},
                  {"total_budget_ms", 20000}};
  SimFixture f(three_answers({}, {}, {}), {{"production", routing}});
  ChatRequest q = ask("@production");
  q.temperature = 1.5;
  auto c = f.run(q);
  REQUIRE(c.result);
  CHECK(c.served.model == "gpt-4o-mini");
  CHECK(c.trace.reason.find("skipped claude-haiku-4-5: anthropic cannot honour request field temperature") !=
        std::string::npos);
  SUBCASE("400 only when no target can serve") {
    SimFixture g(three_answers({}, {}, {}), {{"claude_only", {{"strategy", "fallback"}, {"attempts", {"claude-haiku-4-5"}}}}});
    ChatRequest only = q;
    only.model = "@claude_only";
    auto d = g.run(only);
    REQUIRE_FALSE(d.result);
    CAPTURE(d.result.error().message);
    CHECK(d.result.error().kind == ErrorKind::unsupported);
    CHECK(d.result.error().message.find("no target can serve this request") != std::string::npos);
    CHECK(d.result.error().message.find("temperature") != std::string::npos);
  }
}

namespace {
struct BudgetFixture : SimFixture {
  BudgetFixture(Json routing, Json budget)
      : SimFixture({{"default", {{"latency_ms", 10}}}}, std::move(routing), Json{{"__budgets", std::move(budget)}}) {}
};
CallContext project(std::string p) {
  CallContext c;
  c.project = std::move(p);
  return c;
}
}  // namespace

TEST_CASE("Virtual time: budgets reroute a blocked request to the downgrade target when that fits") {
  // Issue #14 (5): a request blocked on gpt-4o's estimate while @cheap (gpt-4o-mini) still fit.
  Json budget = {{"name", "acme"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 0.005},
                 {"soft", {{"percent", 80}, {"downgrade_to", "@cheap"}}}};
  BudgetFixture f({{"expensive", "gpt-4o"}, {"cheap", "gpt-4o-mini"}}, budget);
  ChatRequest q = ask("@expensive");
  q.max_tokens = 1000;  // gpt-4o: ~$0.01 estimated, over the $0.005 cap; gpt-4o-mini: ~$0.0006
  auto c = f.run(q, project("acme"));
  REQUIRE(c.result);
  CHECK(c.served.model == "gpt-4o-mini");
  bool rerouted = false;
  for (const auto& a : c.trace.budget_actions) rerouted |= a.find("rerouted to @cheap") != std::string::npos;
  CHECK(rerouted);
}

TEST_CASE("Virtual time: a request without max_tokens is not blocked by its output estimate alone") {
  // Issue #14 (5): blocked at $0 spent (and the 100 % alert fired) on the estimate of an
  // answer nobody bounded.
  Json budget = {{"name", "acme"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 0.005},
                 {"alerts", {80, 100}}};
  BudgetFixture f({{"one", "gpt-4o"}}, budget);
  auto c = f.run(ask("gpt-4o"), project("acme"));  // 1024 output tokens of gpt-4o: $0.01 > $0.005
  REQUIRE(c.result);
  for (const auto& a : c.trace.budget_actions) CHECK(a.find("alert") == std::string::npos);
}

TEST_CASE("Virtual time: the budget's own 429 is modelux's, with a retry-after") {
  Json budget = {{"name", "acme"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 0.000001}};
  BudgetFixture f({{"one", "gpt-4o"}}, budget);
  auto c = f.run(ask("gpt-4o"), project("acme"));  // the prompt alone is over the cap
  REQUIRE_FALSE(c.result);
  CHECK(c.result.error().kind == ErrorKind::budget_exceeded);
  CHECK(c.result.error().provider.empty());
  REQUIRE(c.result.error().retry_after.has_value());
  CHECK(c.result.error().retry_after->count() > 0);
  CHECK(*c.result.error().retry_after <= std::chrono::hours(24));
  Json body = openai_error_json(c.result.error());
  CHECK_FALSE(body["error"].contains("provider"));
}

TEST_CASE("Virtual time: traces tell the caller's story after a failover") {
  // Issue #14 (7).
  Json routing = {{"strategy", "fallback"},
                  {"attempts", {"claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash"}},
                  {"retry_on", {"429", "5xx", "timeout", "connection", "malformed"}},
                  {"total_budget_ms", 20000}};
  SUBCASE("ttft is the caller's, the served attempt shows its status, created is real") {
    SimFixture f(three_answers({{"latency_ms", 2000}, {"error_status", 500}}, {{"error_status", 503}},
                               {{"latency_ms", 5}, {"chunks", 3}}),
                 {{"chain", routing}});
    Completion c;
    f.stream_text(ask("@chain", true), c);
    REQUIRE(c.result);
    REQUIRE(c.trace.attempts.size() == 3);
    CHECK(c.trace.attempts[2].ttft == 5ms);  // the attempt's own
    CHECK(c.trace.ttft == 2005ms);           // the caller's: from the request's start
    CHECK(c.trace.attempts[2].status == 200);
    CHECK(c.trace.attempts[0].status == 500);
    CHECK(c.result->created > 1'600'000'000);  // Gemini's answer carries no created of its own
    auto j = f.run(ask("@chain"));
    REQUIRE(j.result);
    CHECK(j.result->created > 1'600'000'000);
  }
  SUBCASE("one provider name for Gemini, in every error") {
    Json only = {{"strategy", "fallback"}, {"attempts", {"gemini-2.5-flash"}}};
    SimFixture f(three_answers({}, {}, {}), {{"g", only}});
    ChatRequest q = ask("@g");
    q.parallel_tool_calls = false;  // Gemini cannot limit a turn to one call
    auto c = f.run(q);
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().provider == "google");
    CHECK(c.result.error().message.find("gemini cannot") == std::string::npos);
  }
  SUBCASE("skipped targets are not counted as failed ones") {
    SimFixture f(three_answers({{"error_status", 500}}, {{"error_status", 500}}, {{"error_status", 500}}), {{"chain", routing}});
    f.router->health()->force_open("google/gemini-2.5-flash", std::chrono::minutes(5), "test", f.clock.now());
    Json fail_closed = routing;
    fail_closed["on_all_open"] = "fail";
    REQUIRE(f.router->set_routing_config("chain", fail_closed));
    auto c = f.run(ask("@chain"));
    REQUIRE_FALSE(c.result);
    CHECK(c.result.error().message.find("all 3") == std::string::npos);
    CHECK(c.result.error().message.find("2 tried targets failed, 1 skipped") != std::string::npos);
  }
}

TEST_CASE("Virtual time: a cascade written like a fallback chain is accepted or refused with its shape explained") {
  // Issue #14 (9): "unknown key 'attempts'" for the shape the product pages show.
  Json as_chain = {{"strategy", "cascade"},
                   {"attempts", {{{"model", "gpt-4o-mini"}, {"timeout_ms", 2000}}, {{"model", "gpt-4o"}, {"timeout_ms", 4000}}}},
                   {"accept", {{"min_length", 5}}},
                   {"total_budget_ms", 10000}};
  SimFixture f(three_answers({}, {}, {}), {{"casc", as_chain}});
  auto c = f.run(ask("@casc"));
  REQUIRE(c.result);
  CHECK(c.served.model == "gpt-4o-mini");

  Json with_retry = as_chain;
  with_retry["retry_on"] = {"429", "5xx"};
  auto refused = f.router->set_routing_config("casc2", with_retry);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().path.ends_with(".retry_on"));
  CHECK(refused.error().message.find("A cascade is") != std::string::npos);
  CHECK(refused.error().message.find("fallback node") != std::string::npos);
}

// ---- property: the real executor under random fault timings (issue #19) --------------------
//
// Thousands of requests through the real executor, its stream relay and the simulated
// provider on virtual time (no sockets, no sleeps): random hangs, slow heads, slow first tokens,
// stalls mid-stream, dropped connections, malformed bodies, errors, and healthy streams longer
// than every routing timeout, through single, fallback (with and without max_stream_ms),
// cascade and ensemble configs, streamed and not. unit-policy-ownership drives the session
// alone against a model of the executor; this drives the executor itself. Every request:
//   - the caller's stream carries one model's answer (one model, one chunk id, the text a
//     prefix of that model's answer, nothing after a finish), whole when the request succeeds;
//   - it ends once, and the trace agrees: ok, served model, the writer's attempt record;
//   - a healthy stream that started is never cut by a routing timeout;
//   - nothing is left running upstream.
// MODELUX_EXECUTOR_PROPERTY_CASES changes the number of requests (default 3000).

namespace {

Json random_model_behavior(Random& rng, const std::string& text, std::string& kind) {
  Json b = {{"text", text}, {"chunks", 2 + static_cast<int>(rng.below(5))}};
  const auto ms = [&](int lo, int span) { return lo + static_cast<int>(rng.below(static_cast<std::uint64_t>(span))); };
  switch (rng.below(10)) {
    case 0: kind = "hang"; b["hang_rate"] = 1.0; break;
    case 1: kind = "slow_head"; b["latency_ms"] = ms(100, 1400); break;
    case 2: kind = "slow_first_token"; b["ttft_ms"] = ms(100, 1400); break;
    case 3:  // stalls mid-stream: gaps beyond the 250 ms stall timeout
      kind = "stall";
      b["chunks"] = ms(3, 4);
      b["chunk_interval_ms"] = ms(300, 1500);
      break;
    case 4:
      kind = "drop";
      b["chunks"] = ms(5, 6);
      b["chunk_interval_ms"] = ms(10, 60);
      b["disconnect_after_chunks"] = ms(0, 5);
      break;
    case 5: {
      kind = "error";
      static constexpr int kStatus[] = {429, 500, 503, 529};
      b["error_status"] = kStatus[rng.below(4)];
      b["latency_ms"] = ms(0, 300);
      break;
    }
    case 6: kind = "malformed"; b["malformed_rate"] = 1.0; break;
    case 7:
    case 8:  // healthy, and longer than every routing timeout below
      kind = "long";
      b["chunks"] = ms(10, 30);
      b["chunk_interval_ms"] = ms(20, 200);  // < the 250 ms stall timeout
      b["ttft_ms"] = ms(0, 150);
      break;
    default: kind = "fast"; break;
  }
  if (rng.below(4) == 0) b["latency_jitter_ms"] = 80;
  return b;
}

Json property_routing(std::uint64_t which) {
  const Json retry = {"429", "5xx", "timeout", "connection", "malformed", "stream"};
  auto at = [](const char* m, int t) { return Json{{"model", m}, {"timeout_ms", t}, {"stall_timeout_ms", 250}}; };
  switch (which) {
    case 0:
      return {{"strategy", "single"}, {"model", "gpt-4o-mini"}, {"timeout_ms", 300}, {"stall_timeout_ms", 250},
              {"total_budget_ms", 500}};
    case 1:
      return {{"strategy", "fallback"},
              {"attempts", {at("claude-haiku-4-5", 200), at("gpt-4o-mini", 300), at("gemini-2.5-flash", 500)}},
              {"retry_on", retry},
              {"total_budget_ms", 900}};
    case 2: {
      Json a0 = at("claude-haiku-4-5", 250), a1 = at("gpt-4o-mini", 400);
      a0["ttft_timeout_ms"] = 150;
      return {{"strategy", "fallback"}, {"attempts", {a0, a1}}, {"retry_on", retry}, {"retries", 1},
              {"max_stream_ms", 1500}, {"total_budget_ms", 1000}};
    }
    case 3:
      return {{"strategy", "cascade"},
              {"steps", {at("gpt-4o-mini", 300), at("claude-haiku-4-5", 400), at("gemini-2.5-flash", 500)}},
              {"accept", {{"min_length", 20}}},
              {"total_budget_ms", 1200}};
    case 4:
      return {{"strategy", "ensemble"}, {"aggregation", "first_valid"},
              {"members", {at("claude-haiku-4-5", 400), at("gpt-4o-mini", 400), at("gemini-2.5-flash", 400)}},
              {"total_budget_ms", 700}};
    default:
      return {{"strategy", "ensemble"}, {"aggregation", "majority_vote"},
              {"members", {at("claude-haiku-4-5", 400), at("gpt-4o-mini", 400), at("gemini-2.5-flash", 400)}},
              {"total_budget_ms", 700}};
  }
}

constexpr const char* kConfigNames[] = {"single", "fallback", "fallback+max_stream", "cascade", "ensemble-first", "ensemble-vote"};

}  // namespace

TEST_CASE("Executor property on virtual time: random fault timings never cut, mix or mis-trace an answer") {
  const std::map<std::string, std::string> texts = {{"claude-haiku-4-5", kHaiku}, {"gpt-4o-mini", kMini}, {"gemini-2.5-flash", kFlash}};
  int cases = 3000;
  if (const char* n = std::getenv("MODELUX_EXECUTOR_PROPERTY_CASES")) cases = std::max(1, std::atoi(n));
  Random rng(0x19'19'19);
  std::map<std::string, int> outcomes;  // what the cases exercised, for the summary
  int commits = 0, healthy_committed = 0;
  for (int i = 0; i < cases; ++i) {
    const std::uint64_t which = static_cast<std::uint64_t>(i) % std::size(kConfigNames);
    const bool stream = rng.below(4) != 0;
    std::map<std::string, std::string> kind;
    Json models = Json::object();
    for (const auto& [m, text] : texts) models[m] = random_model_behavior(rng, text, kind[m]);
    // A fresh fixture per case: one case's breakers never decide another's.
    SimFixture f({{"models", models}}, {{"p", property_routing(which)}});
    std::string text;
    std::set<std::string> chunk_models, chunk_ids;
    bool after_finish = false, finished = false;
    Completion c = f.run(ask("@p", stream), {}, stream ? ChunkSink([&](const ChatChunk& ch) {
      chunk_models.insert(ch.model);
      chunk_ids.insert(ch.id);
      for (const auto& choice : ch.choices) {
        if (choice.content && !choice.content->empty()) {
          if (finished) after_finish = true;
          text += *choice.content;
        }
        if (!choice.finish_reason.empty()) finished = true;
      }
      return true;
    }) : ChunkSink{});
    const DecisionTrace& t = c.trace;
    std::string recs;
    for (const auto& a : t.attempts)
      recs += " [" + a.model + " " + a.outcome + " ttft " + std::to_string(a.ttft.count() / 1000000) + " ms, " + a.why_ended + "]";
    INFO("case " << i << " (" << std::string(kConfigNames[which]) << (stream ? ", streamed" : ", buffered") << "): haiku "
                 << kind["claude-haiku-4-5"] << ", mini " << kind["gpt-4o-mini"] << ", flash " << kind["gemini-2.5-flash"]
                 << "; models " << models.dump() << "; text '" << text << "'; reason: " << t.reason << "; attempts:" << recs);
    ++outcomes[c.result ? std::string("ok") : std::string(to_string(c.result.error().kind))];
    // One end, and the trace agrees with it.
    REQUIRE(t.ok == c.result.has_value());
    if (!c.result) REQUIRE(t.error_kind == std::string(to_string(c.result.error().kind)));
    // Nothing left running upstream: losers and expired attempts were closed.
    REQUIRE(f.transport->stats().in_flight == 0);
    // One model's answer, one chunk id, nothing after the finish.
    REQUIRE(chunk_models.size() <= 1);
    REQUIRE(chunk_ids.size() <= 1);
    REQUIRE_FALSE(after_finish);
    if (!stream) REQUIRE(chunk_models.empty());
    if (c.result) {
      REQUIRE(texts.count(c.served.model) == 1);
      REQUIRE(c.result->text() == texts.at(c.served.model));
      REQUIRE(t.served_model == c.served.model);
      int ok_records = 0, served_ok = 0;
      for (const auto& a : t.attempts) {
        ok_records += a.ok;
        served_ok += a.ok && a.model == c.served.model;
      }
      REQUIRE(served_ok >= 1);
      if (which <= 2) {  // single and fallback: exactly one attempt answered, and it served
        REQUIRE(ok_records == 1);
        REQUIRE(t.attempts.back().why_ended == "served");
      }
      if (stream) {
        REQUIRE(text == texts.at(c.served.model));
        REQUIRE(chunk_models == std::set<std::string>{c.served.model});
      }
    }
    if (!text.empty()) {
      // Output reached the caller: one attempt wrote it and its record tells the truth.
      ++commits;
      const std::string& writer = *chunk_models.begin();
      REQUIRE(texts.count(writer) == 1);
      REQUIRE(texts.at(writer).starts_with(text));
      const AttemptRecord* rec = nullptr;
      int with_output = 0;
      for (const auto& a : t.attempts)
        if (a.model == writer && (a.ok || a.outcome == "stream_interrupted" || a.outcome == "timeout" ||
                                                       a.outcome == "malformed_response")) {
          rec = &a;
          ++with_output;
        }
      REQUIRE(rec != nullptr);
      if (!c.result) {
        // Failed after output: that attempt's failure is the request's, nothing failed over.
        REQUIRE(t.attempts.back().model == writer);
        REQUIRE(c.result.error().kind != ErrorKind::cancelled);
      }
      // A healthy stream that started is never cut by a routing timeout: only max_stream_ms
      // (config 2: at most 1.5 s from the commit) may end it.
      if (kind[writer] == "long" || kind[writer] == "fast") {
        ++healthy_committed;
        const Json& b = models[writer];
        // From the first text to the end: the text chunks plus the provider's few framing
        // events (role, finish, usage; Anthropic's preamble), each one interval apart.
        const double longest = (b.value("chunks", 4) + 6) * b.value("chunk_interval_ms", 0.0);
        if (which != 2) {
          REQUIRE(c.result.has_value());
        } else if (!c.result) {
          REQUIRE(c.result.error().message.find("max_stream_ms 1500 ms reached") != std::string::npos);
          REQUIRE(longest >= 1500);
        }
      }
    }
  }
  std::string summary;
  for (const auto& [k, n] : outcomes) summary += " " + k + "=" + std::to_string(n);
  MESSAGE(cases, " requests:", summary, "; output reached the caller in ", commits, " (", healthy_committed, " healthy)");
  CHECK(outcomes["ok"] > cases / 4);
  CHECK(commits > cases / 10);
  CHECK(healthy_committed > cases / 20);
}
