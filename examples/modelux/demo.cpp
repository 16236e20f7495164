// `modelux demo`: starts the mock provider and the proxy on 127.0.0.1 with the embedded
// defaults, makes the primary of `@production` fail, sends real HTTP requests through the
// proxy, and prints each answer with its decision trace.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "modelux/testing.hpp"
#include "cli.hpp"
#include "modelux/trace.hpp"
#include "modelux/server.hpp"

namespace modelux::cli {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

struct Reply {
  int status = 0;
  std::string request_id;
  std::string body;
};

// A plain blocking HTTP client, enough for the demo. `on_piece` sees the body as it arrives.
Reply http_call(int port, const std::string& method, const std::string& target, const std::string& body,
                const std::string& key, const std::function<void(std::string_view)>& on_piece = nullptr) {
  Reply out;
  net::io_context ioc;
  tcp::socket sock(ioc);
  beast::error_code ec;
  sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)), ec);
  if (ec) {
    out.body = "connect failed: " + ec.message();
    return out;
  }
  http::request<http::string_body> req{method == "GET" ? http::verb::get : http::verb::post, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::authorization, "Bearer " + key);
  req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  http::write(sock, req, ec);
  beast::flat_buffer buf;
  http::response_parser<http::buffer_body> p;
  p.body_limit(64 * 1024 * 1024);
  http::read_header(sock, buf, p, ec);
  if (ec) {
    out.body = "read failed: " + ec.message();
    return out;
  }
  out.status = static_cast<int>(p.get().result_int());
  if (auto it = p.get().find("x-request-id"); it != p.get().end()) out.request_id = std::string(it->value());
  char chunk[8192];
  while (!p.is_done()) {
    p.get().body().data = chunk;
    p.get().body().size = sizeof chunk;
    http::read_some(sock, buf, p, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) break;
    std::size_t n = sizeof chunk - p.get().body().size;
    out.body.append(chunk, n);
    if (on_piece && n) on_piece(std::string_view(chunk, n));
  }
  return out;
}

void print_trace(int port, const std::string& key, const std::string& rid) {
  auto r = http_call(port, "GET", "/v1/traces/" + rid, "", key);
  auto j = parse_json(r.body);
  if (r.status != 200 || !j) {
    std::printf("   (trace unavailable: HTTP %d)\n", r.status);
    return;
  }
  auto t = DecisionTrace::from_json(*j);
  if (!t) {
    std::printf("   (trace unreadable: %s)\n", t.error().describe().c_str());
    return;
  }
  auto ms = [](Nanos d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("   trace %s  config %s v%lld  strategy %s\n", t->request_id.c_str(), t->config.c_str(),
              static_cast<long long>(t->config_version), t->strategy.c_str());
  for (const auto& a : t->attempts) {
    std::printf("   #%u %-18s %-10s %-22s %7.1f ms  ttft %6.1f ms  tokens %lld/%lld  $%.6f  (%s; %s)\n", a.id,
                a.model.c_str(), a.provider.c_str(), (a.ok ? std::string("ok") : a.outcome + (a.status ? " " + std::to_string(a.status) : "")).c_str(),
                ms(a.duration), ms(a.ttft), static_cast<long long>(a.usage.prompt_tokens),
                static_cast<long long>(a.usage.completion_tokens), a.cost.total(), a.why_tried.c_str(), a.why_ended.c_str());
  }
  std::printf("   decision: %s\n   reason:   %s\n   total %.1f ms, ttft %.1f ms, cost $%.6f (input $%.6f, output $%.6f)\n",
              t->decision.c_str(), t->reason.c_str(), ms(t->total), ms(t->ttft), t->cost.total(), t->cost.input_usd,
              t->cost.output_usd);
}

std::string chat_body(const std::string& model, const std::string& prompt, bool stream) {
  Json b = {{"model", model}, {"messages", Json::array({{{"role", "user"}, {"content", prompt}}})}};
  if (stream) {
    b["stream"] = true;
    b["stream_options"] = {{"include_usage", true}};
  }
  return b.dump();
}

}  // namespace

int run_demo() {
  // 1. The mock provider: every model answers after a little latency; the primary of
  //    @production (claude-haiku-4-5) is rate limited.
  mock::MockOptions mo;
  mo.config = {{"default", {{"latency_ms", 30}, {"chunks", 6}, {"chunk_interval_ms", 15},
                            {"text", "Routing is a config change, never a code change."}}},
               {"models", {{"claude-haiku-4-5", {{"error_status", 429}, {"retry_after_ms", 1000}}}}}};
  auto mock = mock::MockProvider::start(mo);
  if (!mock) {
    std::fprintf(stderr, "demo: cannot start the mock provider: %s\n", mock.error().describe().c_str());
    return 1;
  }
  // 2. The proxy with the embedded defaults pointed at the mock.
  std::string db = (std::filesystem::temp_directory_path() / ("modelux-demo-" + std::to_string(::getpid()) + ".db")).string();
  ::setenv("MODELUX_MOCK_URL", (*mock)->base_url().c_str(), 1);
  ::setenv("MODELUX_TRACE_DB", db.c_str(), 1);
  auto cfg = Config::embedded_defaults();
  if (!cfg) {
    std::fprintf(stderr, "demo: embedded defaults invalid: %s\n", cfg.error().describe().c_str());
    return 1;
  }
  auto server = ServerConfig::from_json(cfg->server);
  if (!server) {
    std::fprintf(stderr, "demo: embedded defaults invalid: %s\n", server.error().describe().c_str());
    return 1;
  }
  const std::string key = server->api_keys.empty() ? "" : server->api_keys.front().key;
  auto px = proxy::Proxy::start(std::move(*cfg), proxy::ProxyOptions{.host = "127.0.0.1", .port = 0, .threads = 1});
  if (!px) {
    std::fprintf(stderr, "demo: cannot start the proxy: %s\n", px.error().describe().c_str());
    return 1;
  }
  int port = (*px)->port();
  std::printf("modelux demo\n  mock provider: %s  (claude-haiku-4-5 answers 429)\n  proxy:         http://127.0.0.1:%d\n  traces:        %s\n\n",
              (*mock)->base_url().c_str(), port, db.c_str());
  int failures = 0;

  std::printf("1) POST /v1/chat/completions  model=@production  (fallback: claude-haiku-4-5 -> gpt-4o-mini -> gemini-2.5-flash)\n");
  auto r1 = http_call(port, "POST", "/v1/chat/completions", chat_body("@production", "Say something about routing.", false), key);
  if (auto j = parse_json(r1.body); r1.status == 200 && j) {
    std::printf("   HTTP 200  model=%s  answer: %s\n", (*j)["model"].get<std::string>().c_str(),
                (*j)["choices"][0]["message"]["content"].get<std::string>().c_str());
  } else {
    ++failures;
    std::printf("   HTTP %d  %s\n", r1.status, r1.body.c_str());
  }
  print_trace(port, key, r1.request_id);

  std::printf("\n2) the same, streaming (SSE) \n   chunks: ");
  auto r2 = http_call(port, "POST", "/v1/chat/completions", chat_body("@production", "Stream it.", true), key,
                      [](std::string_view piece) {
                        std::string_view s = piece;
                        while (true) {
                          auto d = s.find("\"content\":\"");
                          if (d == std::string_view::npos) break;
                          s.remove_prefix(d + 11);
                          auto e = s.find('"');
                          std::printf("[%.*s]", static_cast<int>(e), s.data());
                          std::fflush(stdout);
                        }
                      });
  bool done = r2.body.find("data: [DONE]") != std::string::npos;
  std::printf("\n   HTTP %d, stream ended with %s\n", r2.status, done ? "data: [DONE]" : "NO [DONE] (error)");
  if (r2.status != 200 || !done) ++failures;
  print_trace(port, key, r2.request_id);

  std::printf("\n3) gpt-4o-mini now hangs too: its 3000 ms attempt timeout expires, gemini-2.5-flash serves\n");
  (void)(*mock)->configure({{"models", {{"gpt-4o-mini", {{"hang_rate", 1.0}}}}}});
  auto r3 = http_call(port, "POST", "/v1/chat/completions", chat_body("@production", "Still there?", false), key);
  if (auto j = parse_json(r3.body); r3.status == 200 && j) {
    std::printf("   HTTP 200  model=%s  answer: %s\n", (*j)["model"].get<std::string>().c_str(),
                (*j)["choices"][0]["message"]["content"].get<std::string>().c_str());
  } else {
    ++failures;
    std::printf("   HTTP %d  %s\n", r3.status, r3.body.c_str());
  }
  print_trace(port, key, r3.request_id);

  std::printf("\n4) an unknown model gets OpenAI's error format\n");
  auto r4 = http_call(port, "POST", "/v1/chat/completions", chat_body("no-such-model", "hi", false), key);
  std::printf("   HTTP %d  %s\n", r4.status, r4.body.c_str());
  if (r4.status != 404) ++failures;

  (*px)->stop();
  (*mock)->stop();
  std::printf("\ndemo %s. Inspect the traces with: modelux logs --db %s\n", failures ? "FAILED" : "finished", db.c_str());
  return failures ? 1 : 0;
}

}  // namespace modelux::cli
