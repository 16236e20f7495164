// Property: whatever the fault timings, every request's client stream carries one model's
// answer, ends once (the answer or exactly one error), and matches its trace.
//
// Random faults (hangs, slow first tokens, stalls, drops mid-stream, late chunks, errors)
// are drawn per round from a seeded Random and pushed into the in-process mock provider;
// requests go through the real executor with fallback, cascade and ensemble configs, streamed
// and not. Bounded: a few hundred requests with attempt timeouts of a few hundred ms.
// MODELUX_PROPERTY_ROUNDS raises the number of rounds (12 requests each).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "modelux/testing.hpp"
#include "modelux/router.hpp"

using namespace modelux;

namespace {

const std::map<std::string, std::string> kTexts = {
    {"claude-haiku-4-5", "haiku says one two three four five six seven eight nine ten."},
    {"gpt-4o-mini", "mini says alpha beta gamma delta epsilon zeta eta theta iota."},
    {"gemini-2.5-flash", "flash says red orange yellow green blue indigo violet black."},
};

Json random_behavior(Random& rng, const std::string& model) {
  Json b = {{"text", kTexts.at(model)}, {"chunks", 2 + static_cast<int>(rng.below(6))}};
  double x = rng.uniform() * 1.3;  // > 1: healthy and fast
  if (x < 0.15) b["hang_rate"] = 1.0;                                                  // hang
  else if (x < 0.30) b["ttft_ms"] = 150 + static_cast<int>(rng.below(250));            // slow first token
  else if (x < 0.40) b["chunk_interval_ms"] = 150 + static_cast<int>(rng.below(150));  // stall between chunks
  else if (x < 0.50) b["disconnect_after_chunks"] = 1 + static_cast<int>(rng.below(3)); // drop mid-stream
  else if (x < 0.60) b["error_status"] = rng.uniform() < 0.5 ? 503 : 429;              // error
  else if (x < 0.90) {                                                                 // steady, longer than a timeout
    b["chunk_interval_ms"] = 30 + static_cast<int>(rng.below(50));
    b["chunks"] = 8 + static_cast<int>(rng.below(8));
  }
  else if (x < 1.00) b["latency_ms"] = 100 + static_cast<int>(rng.below(250));         // slow head
  if (rng.uniform() < 0.3) b["latency_jitter_ms"] = 60;
  return b;
}

Json attempt(const std::string& model, int timeout_ms) { return {{"model", model}, {"timeout_ms", timeout_ms}}; }

Json random_routing(Random& rng, std::uint64_t kind) {
  const int t = 150 + static_cast<int>(rng.below(150));
  Json stall = 120;
  switch (kind) {
    case 0: {
      Json a0 = attempt("claude-haiku-4-5", t), a1 = attempt("gpt-4o-mini", t), a2 = attempt("gemini-2.5-flash", t);
      for (auto* a : {&a0, &a1, &a2}) (*a)["stall_timeout_ms"] = stall;
      return {{"strategy", "fallback"},
              {"attempts", {a0, a1, a2}},
              {"retry_on", {"429", "5xx", "timeout", "connection", "stream"}},
              {"total_budget_ms", 700}};
    }
    case 1:
      return {{"strategy", "cascade"},
              {"steps", {attempt("claude-haiku-4-5", t), attempt("gpt-4o-mini", t), attempt("gemini-2.5-flash", t)}},
              {"accept", {{"min_length", 20}}},
              {"total_budget_ms", 800}};
    default:
      return {{"strategy", "ensemble"},
              {"aggregation", rng.uniform() < 0.5 ? "first_valid" : "majority_vote"},
              {"members", {attempt("claude-haiku-4-5", t), attempt("gpt-4o-mini", t), attempt("gemini-2.5-flash", t)}},
              {"total_budget_ms", 600}};
  }
}

struct Seen {
  std::string text;
  std::set<std::string> chunk_models;
  int chunks = 0;
  bool after_finish = false;  // a content chunk after a finish_reason chunk
  bool finished = false;
};

}  // namespace

TEST_CASE("Executor property: random fault timings never cut, mix or mis-trace an answer") {
  mock::MockOptions mo;
  mo.threads = 2;
  auto m = mock::MockProvider::start(mo);
  REQUIRE(m);
  std::string base = (*m)->base_url();
  Json routing = Json::object();
  Random rng(0x5eed);
  int rounds = 20;
  if (const char* n = std::getenv("MODELUX_PROPERTY_ROUNDS")) rounds = std::max(1, std::atoi(n));
  // Eight configs: fallback chains, cascades and ensembles (at least two of each).
  for (int i = 0; i < 8; ++i) routing["r" + std::to_string(i)] = random_routing(rng, i < 6 ? i % 3 : rng.below(3));
  Json doc = {{"providers",
               {{"anthropic", {{"base_url", base}, {"api_key", "k-a"}}},
                {"openai", {{"base_url", base + "/v1"}, {"api_key", "k-o"}}},
                {"google", {{"base_url", base}, {"api_key", "k-g"}}}}},
              {"routing", routing}};
  auto cfg = Config::from_json(doc);
  REQUIRE(cfg);

  std::mutex mu;  // doctest assertions from several threads
  int checked = 0, succeeded = 0, streamed = 0;
  for (int round = 0; round < rounds; ++round) {
    Json mock_cfg = {{"models", Json::object()}};
    for (const auto& [model, text] : kTexts) mock_cfg["models"][model] = random_behavior(rng, model);
    REQUIRE((*m)->configure(mock_cfg));
    // A fresh Router per round: breakers opened by one round's faults do not decide the next.
    RouterOptions ro;
    ro.open_tracer = false;
    ro.io_threads = 2;
    auto r = Router::create(*cfg, ro);
    REQUIRE(r);
    Router& router = **r;
    std::vector<std::thread> ts;
    for (int w = 0; w < 4; ++w) {
      const std::uint64_t pick = rng.next_u64();
      ts.emplace_back([&, w, pick] {
        for (int k = 0; k < 3; ++k) {
          const std::string slug = "@r" + std::to_string((pick >> (8 * k)) % 8);
          const bool stream = ((pick >> (40 + k)) & 1) != 0;
          ChatRequest q;
          q.model = slug;
          q.messages.push_back(Message::user("hello " + std::to_string(w)));
          Seen seen;
          Completion c;
          if (stream) {
            q.stream = true;
            c = router.stream(q, {}, [&](const ChatChunk& ch) {
              ++seen.chunks;
              seen.chunk_models.insert(ch.model);
              for (const auto& choice : ch.choices) {
                if (choice.content && !choice.content->empty()) {
                  if (seen.finished) seen.after_finish = true;
                  seen.text += *choice.content;
                }
                if (!choice.finish_reason.empty()) seen.finished = true;
              }
              return true;
            });
          } else {
            c = router.complete(q);
          }
          std::lock_guard lk(mu);
          CAPTURE(slug);
          CAPTURE(stream);
          CAPTURE(round);
          CAPTURE(seen.text);
          ++checked;
          const DecisionTrace& t = c.trace;
          // The trace agrees with the result.
          CHECK(t.ok == c.result.has_value());
          if (c.result) {
            ++succeeded;
            const std::string answer = c.result->text();
            CHECK(kTexts.count(c.served.model) == 1);
            CHECK(answer == kTexts.at(c.served.model));  // one model's whole answer
            CHECK(t.served_model == c.served.model);
            int ok_attempts = 0;
            bool served_attempt_ok = false;
            for (const auto& a : t.attempts) {
              ok_attempts += a.ok;
              if (a.ok && a.model == c.served.model) served_attempt_ok = true;
            }
            CHECK(served_attempt_ok);
            if (t.strategy == "fallback") CHECK(ok_attempts == 1);
            if (stream) {
              ++streamed;
              CHECK(seen.text == answer);  // the caller got exactly that answer, once
              CHECK(seen.chunk_models == std::set<std::string>{c.served.model});
              CHECK_FALSE(seen.after_finish);
            }
          } else {
            CHECK(t.error_kind == std::string(to_string(c.result.error().kind)));
            if (stream && !seen.text.empty()) {
              // Output started and then broke: one model's partial answer, never a mix.
              CHECK(seen.chunk_models.size() == 1);
              const std::string& m0 = *seen.chunk_models.begin();
              CHECK((kTexts.count(m0) == 1 && kTexts.at(m0).starts_with(seen.text)));
              CHECK(c.result.error().kind == ErrorKind::stream_interrupted);
            }
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    CHECK(router.transport().stats().in_flight == 0);
  }
  MESSAGE("checked ", checked, " requests (", succeeded, " ok, ", streamed, " streamed ok)");
  CHECK(checked == rounds * 12);
  CHECK(succeeded > 0);
  CHECK(streamed > 0);
}
