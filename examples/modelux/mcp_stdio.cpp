// `modelux mcp --url URL [--key KEY]`: the MCP stdio transport for clients that launch their
// servers as subprocesses (Claude Desktop, Claude Code, the inspector). Each JSON-RPC line read
// on stdin is POSTed to the proxy's streamable-HTTP endpoint (URL/mcp) with the key, and the
// answer is written as one line on stdout. The tools, their schemas and every role check are the
// proxy's own (src/server/mcp.cpp: generated from its OpenAPI document), so stdio and HTTP can
// never disagree. Logs go to stderr only: stdout carries protocol messages and nothing else.
//
// Threading: one thread; each message is sent and answered before the next line is read.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "cli.hpp"
#include "modelux/transport.hpp"

namespace modelux::cli {

namespace {

// A JSON-RPC error for a request the proxy did not answer in JSON-RPC (a 401, a network error).
std::string rpc_failure(const Json& id, std::string message) {
  return Json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", -32603}, {"message", std::move(message)}}}}.dump(
      -1, ' ', false, Json::error_handler_t::replace);
}

void emit(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace

int run_mcp_stdio(std::string url, std::string key) {
  if (key.empty())
    if (const char* env = std::getenv("MODELUX_API_KEY")) key = env;
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (!url.ends_with("/mcp")) url += "/mcp";
  if (auto u = parse_url(url); !u) {
    std::fprintf(stderr, "modelux mcp: bad --url: %s\n", u.error().describe().c_str());
    return 2;
  }
  net::io_context ioc;
  auto transport = make_http_transport(ioc.get_executor());
  std::string line;
  while (std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    auto msg = parse_json(line);
    // Only requests (an id and a method) get an answer; notifications and responses do not.
    const bool is_request = msg && msg->is_object() && msg->contains("id") && msg->contains("method");
    const Json id = is_request ? (*msg)["id"] : Json(nullptr);

    HttpRequestSpec spec;
    spec.method = "POST";
    spec.url = url;
    spec.body = line;
    spec.headers = {{"content-type", "application/json"}, {"accept", "application/json, text/event-stream"}};
    if (!key.empty()) spec.headers.emplace_back("authorization", "Bearer " + key);
    const Instant deadline = SteadyClock::instance().now() + std::chrono::seconds(120);
    auto fut = net::co_spawn(
        ioc, [&]() -> net::awaitable<Result<HttpResponse>> { co_return co_await transport->send(spec, deadline); }, net::use_future);
    ioc.restart();
    ioc.run();
    Result<HttpResponse> r = fut.get();
    if (!r) {
      std::fprintf(stderr, "modelux mcp: %s: %s\n", url.c_str(), r.error().describe().c_str());
      if (is_request) emit(rpc_failure(id, "the modelux proxy at " + url + " could not be reached: " + r.error().describe()));
      continue;
    }
    if (r->status == 202 || r->body.empty()) continue;
    // A JSON-RPC answer (a result, or an error such as -32700 with HTTP 400) goes out as is.
    if (auto j = parse_json(r->body); j && j->is_object() && j->contains("jsonrpc")) {
      emit(j->dump(-1, ' ', false, Json::error_handler_t::replace));
      continue;
    }
    std::string why = "the modelux proxy answered HTTP " + std::to_string(r->status);
    if (auto j = parse_json(r->body); j && j->is_object() && j->contains("error") && (*j)["error"].is_object())
      why += ": " + (*j)["error"].value("message", std::string{});
    std::fprintf(stderr, "modelux mcp: %s\n", why.c_str());
    if (is_request) emit(rpc_failure(id, why));
  }
  return 0;
}

}  // namespace modelux::cli
