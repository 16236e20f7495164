#include "modelux/server.hpp"
#include "server/http_server.hpp"

#include <atomic>
#include <chrono>
#include <thread>
#include <unordered_map>

#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/trace.hpp"

namespace modelux::proxy {

namespace net = boost::asio;
using http_server::Request;
using http_server::ResponseWriter;

struct Proxy::State {
  std::unique_ptr<Router> router;
  std::unordered_map<std::string, ApiKeyConfig> keys;  // secret → identity
  std::atomic<std::uint64_t> requests{0}, ok{0}, client_errors{0}, upstream_errors{0}, streams{0}, in_flight{0};
  std::size_t max_body = 0;
  http_server::Server* server = nullptr;  // set once started; for /readyz and /metrics
  Millis drain_timeout{10'000};
};

namespace {

constexpr std::string_view kJson = "application/json";

std::string error_body(const Error& e) { return openai_error_json(e).dump(-1, ' ', false, Json::error_handler_t::replace); }

Error make_error(ErrorKind k, std::string msg, std::string code = {}) {
  Error e;
  e.kind = k;
  e.message = std::move(msg);
  e.code = std::move(code);
  return e;
}

// The caller's SDK honours these when it retries (OpenAI's SDKs read retry-after-ms first).
Headers with_retry_after(Headers h, const Error& e) {
  if (e.retry_after && e.retry_after->count() >= 0) {
    auto ms = e.retry_after->count();
    h.emplace_back("retry-after", std::to_string((ms + 999) / 1000));
    h.emplace_back("retry-after-ms", std::to_string(ms));
  }
  return h;
}

int status_for(const Error& e) {
  return http_status_for(e.kind);
}

// Constant-time comparison would need the key length to leak anyway; the map lookup hashes
// the whole presented key, and keys are long random strings.
const ApiKeyConfig* authenticate(Proxy::State& st, const http_server::RequestHead& req) {
  const std::string* auth = req.header("authorization");
  std::string key;
  if (auth && auth->size() > 7 && (auth->starts_with("Bearer ") || auth->starts_with("bearer "))) key = auth->substr(7);
  else if (const std::string* k = req.header("x-api-key")) key = *k;
  if (key.empty()) return nullptr;
  auto it = st.keys.find(key);
  return it == st.keys.end() ? nullptr : &it->second;
}

std::vector<std::pair<std::string, std::string>> parse_tags(std::string_view s) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!s.empty()) {
    auto comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    auto eq = item.find('=');
    if (eq != std::string_view::npos && eq > 0) out.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

std::string metrics_text(Proxy::State& st) {
  std::string s;
  auto line = [&](const char* name, const char* help, const char* type, double v) {
    s += "# HELP ";
    s += name;
    s += " ";
    s += help;
    s += "\n# TYPE ";
    s += name;
    s += " ";
    s += type;
    s += "\n";
    s += name;
    s += " ";
    s += std::to_string(v);
    s += "\n";
  };
  line("modelux_requests_total", "Chat requests received.", "counter", static_cast<double>(st.requests.load()));
  line("modelux_requests_ok_total", "Chat requests answered successfully.", "counter", static_cast<double>(st.ok.load()));
  line("modelux_requests_client_error_total", "Requests rejected (4xx).", "counter", static_cast<double>(st.client_errors.load()));
  line("modelux_requests_upstream_error_total", "Requests failed after routing (5xx).", "counter", static_cast<double>(st.upstream_errors.load()));
  line("modelux_streams_total", "Streaming requests.", "counter", static_cast<double>(st.streams.load()));
  line("modelux_requests_in_flight", "Requests being served now.", "gauge", static_cast<double>(st.in_flight.load()));
  if (Tracer* t = st.router->tracer()) {
    auto ts = t->stats();
    line("modelux_traces_submitted_total", "Traces handed to the tracer.", "counter", static_cast<double>(ts.submitted));
    line("modelux_traces_written_total", "Traces written to the store.", "counter", static_cast<double>(ts.written));
    line("modelux_traces_dropped_total", "Traces dropped (queue full or write failure).", "counter", static_cast<double>(ts.dropped));
    // What a kill -9 would lose now: submitted, not yet written (docs/traces.md).
    line("modelux_traces_queued", "Traces submitted and not yet written (lost on a crash).", "gauge", static_cast<double>(ts.queued));
    line("modelux_traces_write_errors_total", "Trace batches that failed to write.", "counter", static_cast<double>(ts.write_errors));
  }
  if (st.server) {
    auto ss = st.server->stats();
    line("modelux_accept_backoffs_total", "accept() failures for lack of fds or memory (the accept loop paused).", "counter",
         static_cast<double>(ss.accept_backoffs));
    line("modelux_accept_refused_total", "Connections refused with 503 at the fd limit (through the reserve fd).", "counter",
         static_cast<double>(ss.accept_refused));
    line("modelux_body_budget_refused_total", "Requests refused (503) by server.max_inflight_body_bytes.", "counter",
         static_cast<double>(ss.body_budget_refused));
    line("modelux_connections_open", "Client connections open.", "gauge", static_cast<double>(ss.connections_open));
    line("modelux_body_bytes_in_flight", "Request-body bytes buffered now (counted against max_inflight_body_bytes).", "gauge",
         static_cast<double>(ss.body_bytes_in_flight));
    line("modelux_draining", "1 while the server drains for shutdown.", "gauge", st.server->draining() ? 1.0 : 0.0);
  }
  auto tr = st.router->transport().stats();
  line("modelux_upstream_connections_opened_total", "Upstream connections opened.", "counter", static_cast<double>(tr.connections_opened));
  line("modelux_upstream_connections_reused_total", "Upstream requests on a pooled connection.", "counter", static_cast<double>(tr.connections_reused));
  return s;
}

net::awaitable<void> chat(Proxy::State& st, Request& req, ResponseWriter& w, const ApiKeyConfig* key) {
  st.requests.fetch_add(1, std::memory_order_relaxed);
  auto parsed = parse_chat_request(req.body, ParseLimits{.max_bytes = st.max_body, .max_depth = 64});
  if (!parsed) {
    st.client_errors.fetch_add(1, std::memory_order_relaxed);
    { auto arg0_ = std::string(kJson); auto arg1_ = error_body(parsed.error()); co_await w.respond(400, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  ChatRequest creq = std::move(*parsed);
  CallContext ctx;
  if (key) {
    ctx.api_key_id = key->name;
    ctx.project = key->project;
    ctx.org = key->org;
  }
  if (const auto* p = req.header("x-modelux-project"); p && ctx.project.empty()) ctx.project = *p;
  if (const auto* u = req.header("x-modelux-end-user")) ctx.end_user = *u;
  else ctx.end_user = creq.user;
  if (const auto* t = req.header("x-modelux-tags")) ctx.tags = parse_tags(*t);
  if (creq.metadata.is_object())
    for (auto it = creq.metadata.begin(); it != creq.metadata.end(); ++it)
      if (it.value().is_string()) ctx.tags.emplace_back(it.key(), it.value().get<std::string>());
  ctx.request_id = new_request_id();
  // A client that hangs up stops the request's upstream calls at once (not at the next
  // chunk or the attempt timeout).
  ctx.cancel = std::make_shared<CancellationToken>();
  w.watch_client(ctx.cancel);
  const std::string rid = ctx.request_id;
  const bool want_stream = creq.stream;
  const bool include_usage = creq.include_usage;
  Headers extra = {{"x-request-id", rid}};

  st.in_flight.fetch_add(1, std::memory_order_relaxed);
  struct Dec {
    Proxy::State& s;
    ~Dec() { s.in_flight.fetch_sub(1, std::memory_order_relaxed); }
  } dec{st};

  if (!want_stream) {
    Completion c = co_await st.router->co_complete(std::move(creq), std::move(ctx));
    w.stop_watching();
    if (!c.result) {
      const Error& e = c.result.error();
      (status_for(e) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
      co_await w.respond(status_for(e), std::string(kJson), error_body(e), with_retry_after(extra, e));
      co_return;
    }
    st.ok.fetch_add(1, std::memory_order_relaxed);
    ChatResponse& r = *c.result;
    r.id = "chatcmpl-" + rid.substr(4);
    if (!c.served.model.empty()) r.model = c.served.model;
    extra.emplace_back("x-modelux-served-by", c.served.key());
    { auto arg0_ = std::string(kJson); auto arg1_ = to_json(r).dump(-1, ' ', false, Json::error_handler_t::replace); auto arg2_ = extra; co_await w.respond(200, std::move(arg0_), std::move(arg1_), std::move(arg2_)); }
    co_return;
  }

  st.streams.fetch_add(1, std::memory_order_relaxed);
  bool started = false;
  AsyncChunkSink sink = [&](const ChatChunk& c) -> net::awaitable<bool> {
    if (!started) {
      started = true;
      if (!co_await w.start_stream(200, std::string("text/event-stream"), extra)) co_return false;
    }
    if (c.usage && c.choices.empty()) {
      if (!include_usage) co_return true;
      co_return co_await w.write(encode_sse_chunk(c));
    }
    if (c.usage && !include_usage) {
      ChatChunk copy = c;
      copy.usage.reset();
      co_return co_await w.write(encode_sse_chunk(copy));
    }
    co_return co_await w.write(encode_sse_chunk(c));
  };
  Completion c = co_await st.router->co_complete(std::move(creq), std::move(ctx), sink);
  w.stop_watching();
  if (c.result) {
    st.ok.fetch_add(1, std::memory_order_relaxed);
    if (!started) {
      started = true;
      co_await w.start_stream(200, std::string("text/event-stream"), extra);
    }
    co_await w.write(kSseDone);
    co_await w.end_stream();
    co_return;
  }
  const Error& e = c.result.error();
  (status_for(e) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
  if (!started) {
    co_await w.respond(status_for(e), std::string(kJson), error_body(e), with_retry_after(extra, e));
    co_return;
  }
  // The stream already started: end it with an explicit error event and no [DONE], so a
  // truncated answer can never look like a clean end.
  co_await w.write("data: " + error_body(e) + "\n\n");
  co_await w.end_stream();
}

net::awaitable<void> handle(std::shared_ptr<Proxy::State> stp, Request& req, ResponseWriter& w) {
  Proxy::State& st = *stp;
  if (req.path == "/readyz" && st.server && st.server->draining()) {
    co_await w.respond(503, std::string("application/json"), std::string("{\"status\":\"draining\"}"));
    co_return;
  }
  if (req.path == "/healthz" || req.path == "/readyz") {
    { auto arg0_ = std::string("application/json"); auto arg1_ = std::string("{\"status\":\"ok\"}"); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path == "/metrics") {
    { auto arg0_ = std::string("text/plain; version=0.0.4"); auto arg1_ = metrics_text(st); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  const ApiKeyConfig* key = nullptr;
  if (!st.keys.empty()) {
    key = authenticate(st, req);
    if (!key) {
      st.client_errors.fetch_add(1, std::memory_order_relaxed);
      co_await w.respond(401, std::string(kJson),
                         error_body(make_error(ErrorKind::auth, "Incorrect API key provided. Pass a modelux API key as 'Authorization: Bearer <key>'.", "invalid_api_key")));
      co_return;
    }
  }
  if (req.path == "/v1/chat/completions" || req.path == "/chat/completions") {
    if (req.method != "POST") {
      { auto arg0_ = std::string(kJson); auto arg1_ = error_body(make_error(ErrorKind::bad_request, "use POST for " + req.path)); co_await w.respond(405, std::move(arg0_), std::move(arg1_)); }
      co_return;
    }
    co_await chat(st, req, w, key);
    co_return;
  }
  if (req.path == "/v1/models" && req.method == "GET") {
    Json data = Json::array();
    for (const auto& slug : st.router->routing_slugs())
      data.push_back({{"id", "@" + slug}, {"object", "model"}, {"created", 0}, {"owned_by", "modelux"}});
    for (const auto& m : st.router->routable_models()) {
      const ModelInfo* mi = st.router->catalog().find_model(m);
      data.push_back({{"id", m}, {"object", "model"}, {"created", 0}, {"owned_by", mi ? mi->provider : "modelux"}});
    }
    { auto arg0_ = std::string(kJson); auto arg1_ = Json{{"object", "list"}, {"data", data}}.dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path.starts_with("/v1/traces") && req.method == "GET") {
    Tracer* t = st.router->tracer();
    if (!t) {
      { auto arg0_ = std::string(kJson); auto arg1_ = error_body(make_error(ErrorKind::not_found, "tracing is disabled")); co_await w.respond(404, std::move(arg0_), std::move(arg1_)); }
      co_return;
    }
    t->flush();  // admin path: make what was submitted visible
    auto store = t->store();
    if (req.path.size() > 11 && req.path[10] == '/') {
      std::string id = req.path.substr(11);
      auto tr = store->get(id);
      if (!tr) {
        { auto arg0_ = std::string(kJson); auto arg1_ = error_body(tr.error()); co_await w.respond(500, std::move(arg0_), std::move(arg1_)); }
        co_return;
      }
      if (!*tr) {
        { auto arg0_ = std::string(kJson); auto arg1_ = error_body(make_error(ErrorKind::not_found, "no trace with id '" + id + "'")); co_await w.respond(404, std::move(arg0_), std::move(arg1_)); }
        co_return;
      }
      { auto arg0_ = std::string(kJson); auto arg1_ = (*tr)->to_json().dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
      co_return;
    }
    TraceQuery q;
    q.limit = 50;
    auto rows = store->query(q);
    Json arr = Json::array();
    if (rows)
      for (const auto& r : *rows) arr.push_back(r.to_json());
    { auto arg0_ = std::string(kJson); auto arg1_ = Json{{"object", "list"}, {"data", arr}}.dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path == "/v1/health" && req.method == "GET") {
    // Operators read why a target's breaker is open and until when.
    std::string body = st.router->health() ? st.router->health()->state_json(st.router->clock().now()).dump() : std::string("{}");
    co_await w.respond(200, std::string(kJson), std::move(body));
    co_return;
  }
  if (req.path == "/v1/budgets" && req.method == "GET") {
    Json body = st.router->budgets() ? st.router->budgets()->snapshot(st.router->clock().now()) : Json::object();
    { auto arg0_ = std::string(kJson); auto arg1_ = body.dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path == "/v1/configs" && req.method == "GET") {
    Json arr = Json::array();
    for (const auto& slug : st.router->routing_slugs()) {
      auto p = st.router->routing_config(slug);
      arr.push_back({{"slug", slug}, {"version", p ? p->version() : 0}, {"config", p ? p->source() : Json()}});
    }
    { auto arg0_ = std::string(kJson); auto arg1_ = Json{{"object", "list"}, {"data", arr}}.dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path.starts_with("/v1/configs/")) {
    std::string slug = req.path.substr(12);
    if (req.method == "PUT" || req.method == "POST") {
      auto j = parse_json(req.body);
      if (!j) {
        { auto arg0_ = std::string(kJson); auto arg1_ = error_body(j.error()); co_await w.respond(400, std::move(arg0_), std::move(arg1_)); }
        co_return;
      }
      auto v = st.router->set_routing_config(slug, *j);
      if (!v) {
        { auto arg0_ = std::string(kJson); auto arg1_ = error_body(v.error()); co_await w.respond(400, std::move(arg0_), std::move(arg1_)); }
        co_return;
      }
      { auto arg0_ = std::string(kJson); auto arg1_ = Json{{"slug", slug}, {"version", *v}}.dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
      co_return;
    }
    auto p = st.router->routing_config(slug);
    if (!p) {
      { auto arg0_ = std::string(kJson); auto arg1_ = error_body(make_error(ErrorKind::not_found, "no routing config '@" + slug + "'")); co_await w.respond(404, std::move(arg0_), std::move(arg1_)); }
      co_return;
    }
    { auto arg0_ = std::string(kJson); auto arg1_ = Json{{"slug", slug}, {"version", p->version()}, {"config", p->source()}}.dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  { auto arg0_ = std::string(kJson); auto arg1_ = error_body(make_error(ErrorKind::not_found, "unknown path " + req.path)); co_await w.respond(404, std::move(arg0_), std::move(arg1_)); }
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
  so.max_inflight_body_bytes = sc.max_inflight_body_bytes;
  st.max_body = sc.max_body_bytes;
  st.drain_timeout = sc.drain_timeout;
  if (sc.api_keys.empty() && so.host != "127.0.0.1" && so.host != "localhost" && so.host != "::1")
    return fail(ErrorKind::invalid_config, "refusing to serve without API keys on a non-loopback address", "$.server.api_keys");
  for (const auto& k : sc.api_keys) st.keys.emplace(k.key, k);
  RouterOptions ro;
  ro.io_threads = so.threads;
  auto router = Router::create(std::move(config), ro);
  if (!router) return fail(router.error());
  st.router = std::move(*router);
  so.executor = st.router->executor();
  auto stp = p->state_;
  // The key is checked from the header, before the body is read: an unauthenticated upload
  // costs its header, never its body (issue #11 item 6).
  so.on_head = [stp](const http_server::RequestHead& h) -> std::optional<http_server::Rejection> {
    Proxy::State& st = *stp;
    if (st.keys.empty() || h.path == "/healthz" || h.path == "/readyz" || h.path == "/metrics") return std::nullopt;
    const ApiKeyConfig* key = authenticate(st, h);
    if (!key) {
      st.client_errors.fetch_add(1, std::memory_order_relaxed);
      return http_server::Rejection{
          401, std::string(kJson),
          error_body(make_error(ErrorKind::auth, "Incorrect API key provided. Pass a modelux API key as 'Authorization: Bearer <key>'.",
                                "invalid_api_key")),
          {}};
    }
    h.context = std::shared_ptr<void>(stp, const_cast<ApiKeyConfig*>(key));  // lives as long as the state
    return std::nullopt;
  };
  auto srv = http_server::Server::start(so, [stp](Request& req, ResponseWriter& w) { return handle(stp, req, w); });
  if (!srv) return fail(srv.error());
  p->server_ = std::move(*srv);
  st.server = p->server_.get();
  return p;
}

Proxy::~Proxy() { stop(); }
int Proxy::port() const noexcept { return server_ ? server_->port() : 0; }
Router& Proxy::router() noexcept { return *state_->router; }
bool Proxy::drain(std::optional<Millis> timeout) {
  if (!server_ || !state_ || !state_->router) return true;
  const Millis limit = timeout.value_or(state_->drain_timeout);
  server_->drain();
  // Poll the in-flight count: the requests finish on the io threads, this thread only waits.
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool finished = true;
  while (server_->requests_in_flight() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      finished = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // What the finished requests produced is on disk before the process exits.
  Router& r = *state_->router;
  if (BudgetManager* b = r.budgets()) (void)b->flush();
  if (Tracer* t = r.tracer()) t->flush();
  return finished;
}

void Proxy::stop() {
  // Close the listener, then stop the router's io_context (which runs every session) before
  // the server object goes away.
  if (server_) server_->stop();
  if (state_) state_->router.reset();
}

}  // namespace modelux::proxy
