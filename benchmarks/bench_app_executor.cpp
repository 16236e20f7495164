// Executor overhead: the Router (routing session, health, trace hand-off, budget-free config)
// against the in-process mock provider, compared with calling the mock directly with the same
// HTTP client (Transport::send on the same pooled connections), in the same run.
// Reports p50/p99 per request at concurrency 1 and 64 and the ratios router/direct.
//
//   bench_app_executor [--requests N]      (default 4000 per cell)
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <future>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_future.hpp>

#include "modelux/testing.hpp"
#include "modelux/router.hpp"

using namespace modelux;
namespace net = boost::asio;

namespace {

struct Stats {
  double p50_us = 0, p99_us = 0, rps = 0;
  int errors = 0;
};

Stats summarize(std::vector<double>& us, double wall_s, int errors) {
  std::sort(us.begin(), us.end());
  Stats s;
  if (!us.empty()) {
    s.p50_us = us[us.size() / 2];
    s.p99_us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  }
  s.rps = static_cast<double>(us.size()) / wall_s;
  s.errors = errors;
  return s;
}

// Runs `total` requests with `conc` in flight on the router's io_context; `one` is the request.
template <class One>
Stats run(Router& router, int total, int conc, One one) {
  std::vector<double> lat(static_cast<std::size_t>(total));
  std::atomic<int> next{0}, errors{0};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::future<void>> workers;
  for (int w = 0; w < conc; ++w) {
    workers.push_back(net::co_spawn(
        router.executor(),
        [&]() -> net::awaitable<void> {
          for (;;) {
            int i = next.fetch_add(1);
            if (i >= total) co_return;
            auto s = std::chrono::steady_clock::now();
            bool ok = co_await one();
            lat[static_cast<std::size_t>(i)] =
                std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - s).count();
            if (!ok) ++errors;
          }
        },
        net::use_future));
  }
  for (auto& f : workers) f.get();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summarize(lat, wall, errors.load());
}

}  // namespace

int main(int argc, char** argv) {
  int total = 4000;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--requests")) total = std::atoi(argv[i + 1]);
  mock::MockOptions mo;
  mo.threads = 1;
  auto m = mock::MockProvider::start(mo);
  if (!m) return 1;
  std::string base = (*m)->base_url();
  auto cfg = Config::from_json(Json{{"providers", {{"openai", {{"base_url", base + "/v1"}, {"api_key", "k"}}}}},
                                    {"routing", {{"fast", {{"strategy", "single"}, {"model", "gpt-4o-mini"}}}}},
                                    {"tracing", {{"path", ":memory:"}, {"enabled", std::getenv("BENCH_NO_TRACE") == nullptr}}}});
  if (!cfg) return 1;
  RouterOptions ro;
  ro.io_threads = 1;
  auto router = Router::create(std::move(*cfg), ro);
  if (!router) {
    std::fprintf(stderr, "%s\n", router.error().describe().c_str());
    return 1;
  }
  Router& r = **router;
  ChatRequest req;
  req.model = "@fast";
  req.messages.push_back(Message::user("benchmark prompt"));
  HttpRequestSpec direct;
  direct.url = base + "/v1/chat/completions";
  direct.headers = {{"content-type", "application/json"}, {"authorization", "Bearer k"}};
  direct.body = R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"benchmark prompt"}]})";

  auto direct_one = [&]() -> net::awaitable<bool> {
    auto resp = co_await r.transport().send(direct, std::chrono::steady_clock::now() + std::chrono::seconds(10));
    // Parse the body like the router does, so the baseline is "HTTP + decode".
    co_return resp && resp->status == 200 && find_codec("openai")->decode_response(resp->body).has_value();
  };
  auto router_one = [&]() -> net::awaitable<bool> {
    CallContext ctx;  // a named local: see the note on co_complete() about temporaries
    Completion c = co_await r.co_complete(req, std::move(ctx));
    co_return c.result.has_value();
  };
  // Warm the pool and the caches.
  run(r, 200, 8, direct_one);
  run(r, 200, 8, router_one);

  std::printf("executor overhead vs direct (same HTTP client, mock provider in-process, %d requests per cell)\n", total);
  std::printf("%-6s %-8s %10s %10s %10s %7s\n", "conc", "path", "p50 us", "p99 us", "req/s", "errors");
  for (int conc : {1, 64}) {
    Stats d = run(r, total, conc, direct_one);
    Stats x = run(r, total, conc, router_one);
    std::printf("%-6d %-8s %10.1f %10.1f %10.0f %7d\n", conc, "direct", d.p50_us, d.p99_us, d.rps, d.errors);
    std::printf("%-6d %-8s %10.1f %10.1f %10.0f %7d\n", conc, "router", x.p50_us, x.p99_us, x.rps, x.errors);
    std::printf("%-6d %-8s %10.2fx %9.2fx %9.2fx   added p50 %.1f us\n", conc, "ratio", x.p50_us / d.p50_us,
                x.p99_us / d.p99_us, x.rps / d.rps, x.p50_us - d.p50_us);
  }
  return 0;
}
