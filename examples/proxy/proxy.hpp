// `modelux serve`: the OpenAI-compatible proxy in front of a Router.
//   POST /v1/chat/completions   (JSON or SSE; model = catalog model or "@slug")
//   GET  /v1/models
//   GET  /v1/traces/{request_id}   GET /v1/traces?limit=N
//   GET  /v1/configs   GET|PUT /v1/configs/{slug}
//   GET  /v1/budgets   GET /healthz   GET /readyz   GET /metrics
#pragma once

#include <memory>

#include "http/server.hpp"
#include "modelux/router.hpp"

namespace modelux::proxy {

struct ProxyOptions {
  std::string host;   ///< overrides config.server.host when set
  int port = -1;      ///< overrides config.server.port when >= 0 (0 = pick a free port)
  int threads = 0;    ///< overrides config.server.threads when > 0
};

class Proxy {
 public:
  static Result<std::unique_ptr<Proxy>> start(Config config, ProxyOptions opts = {});
  ~Proxy();
  int port() const noexcept;
  Router& router() noexcept;
  void stop();

  struct State;

 private:
  Proxy() = default;
  std::shared_ptr<State> state_;
  std::unique_ptr<http_server::Server> server_;
};

}  // namespace modelux::proxy
