// Destroying a Router while requests wait on a hung upstream, checked by counting heap blocks:
// this executable replaces the global operator new/delete (support/counting_new.hpp), so it
// holds only this test.
//
// Why a count: the bug this guards against (request frames destroyed with the io_context gave
// their routing sessions back to a pool that had already been destroyed) writes into freed
// memory. Only a sanitizer reports that directly, and the default test run has none. But the
// sessions handed to the dead pool are never freed, so the number of live heap blocks after the
// Router and the mock are gone is higher than before they were made. Blocks, not bytes: exact
// and machine-independent.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include "modelux/testing.hpp"
#include "modelux/router.hpp"
#include "support/counting_new.hpp"

using namespace modelux;

namespace {

ChatRequest ask(bool stream) {
  ChatRequest r;
  r.model = "@slow";
  r.messages.push_back(Message::user("hello"));
  r.stream = stream;
  return r;
}

/// A mock that never answers, a Router in front of it with four requests in flight, then the
/// Router destroyed first (the requests still pending) and the mock after it. Returns how many
/// completion callbacks ran.
int hung_requests_then_destroy(int io_threads = 1) {
  mock::MockOptions mo;
  mo.config = {{"default", {{"hang_rate", 1.0}}}};
  auto m = mock::MockProvider::start(mo);
  REQUIRE(m);
  std::unique_ptr<mock::MockProvider> mock = std::move(*m);
  Json doc = {{"providers", {{"anthropic", {{"base_url", mock->base_url()}, {"api_key", "k-a"}}},
                             {"openai", {{"base_url", mock->base_url() + "/v1"}, {"api_key", "k-o"}}}}},
              {"routing",
               {{"slow",
                 {{"strategy", "fallback"},
                  {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", 8000}}, {{"model", "gpt-4o-mini"}, {"timeout_ms", 8000}}}},
                  {"total_budget_ms", 20000}}}}}};
  auto cfg = Config::from_json(doc);
  REQUIRE(cfg);
  RouterOptions ro;
  ro.io_threads = io_threads;
  auto r = Router::create(std::move(*cfg), ro);
  REQUIRE(r);
  std::unique_ptr<Router> router = std::move(*r);
  std::atomic<int> callbacks{0};
  for (int i = 0; i < 4; ++i) router->complete_async(ask(i % 2 == 1), CallContext{}, [&callbacks](Completion) { ++callbacks; });
  // Every request reaches the mock (which holds it) before the Router goes: wait for the mock to
  // have seen all four, polling, bounded.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (mock->stats()["total"].get<int>() < 4 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(mock->stats()["total"].get<int>() == 4);
  router.reset();
  mock->stop();
  mock.reset();
  return callbacks.load();
}

}  // namespace

TEST_CASE("Executor: destroying the Router while requests wait on a hung upstream frees everything") {
  // The first round also fills what lives for the whole process (lazily made statics, thread
  // pools of libraries): only the second is measured.
  CHECK(hung_requests_then_destroy() <= 4);
  const long before = modelux::testing::live_heap_blocks();
  const int callbacks = hung_requests_then_destroy();
  const long after = modelux::testing::live_heap_blocks();
  CHECK(callbacks <= 4);  // none runs twice
  CHECK(after - before == 0);
  CHECK(modelux::testing::heap_allocations.load() > 0);  // the counter is live
}

// With two io threads the requests wait on both io_contexts, each leasing from its own
// session pool: every pool must outlive every io_context (the frames destroyed with them give
// their sessions back).
TEST_CASE("Executor: destroying a Router with two io threads while requests hang frees everything") {
  CHECK(hung_requests_then_destroy(2) <= 4);
  const long before = modelux::testing::live_heap_blocks();
  const int callbacks = hung_requests_then_destroy(2);
  const long after = modelux::testing::live_heap_blocks();
  CHECK(callbacks <= 4);
  CHECK(after - before == 0);
}
