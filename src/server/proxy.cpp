// The proxy: wires the route table (routes.cpp) to the HTTP server and owns the state every
// handler shares (router, keys, worker pool, counters). Handlers live in openai_ingress.cpp
// (the data plane) and admin_api.cpp (admin API and probes).
#include "modelux/server.hpp"

#include "modelux/scrub.hpp"
#include "server/http_server.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

namespace {

// Auth is a function of the request head (method, path, headers): on_head runs admit() before
// the body is read (an unauthenticated upload costs only its header) and hands the admission
// to the handler in Request::context.
std::optional<http_server::Rejection> on_head(Proxy::State& st, const http_server::RequestHead& head) {
  auto decided = admit(st, head.method, head.path, head.headers);
  if (auto* refuse = std::get_if<Reply>(&decided)) {
    scrub(refuse->body);
    return http_server::Rejection{refuse->status, std::move(refuse->content_type), std::move(refuse->body), std::move(refuse->headers)};
  }
  head.context = std::make_shared<Admission>(std::get<Admission>(std::move(decided)));
  return std::nullopt;
}

net::awaitable<void> handle(std::shared_ptr<Proxy::State> stp, Request& req, ResponseWriter& w) {
  std::shared_ptr<Admission> admitted = std::static_pointer_cast<Admission>(req.context);
  req.context.reset();
  if (!admitted) {  // no head phase ran (cannot happen with on_head set; kept for safety)
    auto decided = admit(*stp, req.method, req.path, req.headers);
    if (auto* refuse = std::get_if<Reply>(&decided)) {
      co_await respond(w, std::move(*refuse), true);
      co_return;
    }
    admitted = std::make_shared<Admission>(std::get<Admission>(std::move(decided)));
  }
  co_await serve(*stp, *admitted, req, w);
}

}  // namespace

Result<std::unique_ptr<Proxy>> Proxy::start(Config config, ProxyOptions opts) {
  std::unique_ptr<Proxy> p(new Proxy());
  p->state_ = std::make_shared<State>();
  auto& st = *p->state_;
  auto server_cfg = ServerConfig::from_json(config.server);
  if (!server_cfg) return fail(server_cfg.error());
  const ServerConfig& sc = *server_cfg;
  http_server::ServerOptions so;
  so.host = opts.host.empty() ? sc.host : opts.host;
  so.port = opts.port >= 0 ? opts.port : sc.port;
  so.threads = opts.threads > 0 ? opts.threads : sc.threads;
  so.max_body_bytes = sc.max_body_bytes;
  st.max_body = sc.max_body_bytes;
  st.server = sc;
  RouterOptions ro;
  ro.io_threads = so.threads;
  auto router = Router::create(std::move(config), ro);
  if (!router) return fail(router.error());
  st.router = std::move(*router);
  auto store = KeyStore::open(ServerConfig::keys_db_path(st.router->config(), sc));
  if (!store) return fail(store.error());
  st.keys = std::make_unique<KeyRegistry>(sc.api_keys, std::move(*store), st.router->clock());
  if (st.keys->open_access() && so.host != "127.0.0.1" && so.host != "localhost" && so.host != "::1")
    return fail(ErrorKind::invalid_config, "refusing to serve without API keys on a non-loopback address", "$.server.api_keys");
  st.workers = std::make_unique<WorkerPool>(sc.worker_threads);
  so.executor = st.router->executor();
  auto stp = p->state_;
  so.on_head = [stp](const http_server::RequestHead& h) { return on_head(*stp, h); };
  auto srv = http_server::Server::start(so, [stp](Request& req, ResponseWriter& w) { return handle(stp, req, w); });
  if (!srv) return fail(srv.error());
  p->server_ = std::move(*srv);
  return p;
}

Proxy::~Proxy() { stop(); }
int Proxy::port() const noexcept { return server_ ? server_->port() : 0; }
Router& Proxy::router() noexcept { return *state_->router; }
void Proxy::stop() {
  // Close the listener, then stop the router's io_context (which runs every session) before
  // the server object goes away.
  if (server_) server_->stop();
  // Workers may hold the router (a compile, a trace read): finish them first.
  if (state_ && state_->workers) state_->workers->stop();
  if (state_) state_->router.reset();
}

}  // namespace modelux::proxy
