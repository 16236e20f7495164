// The proxy: wires the route table (routes.cpp) to the HTTP server and owns the state every
// handler shares (router, keys, worker pool, counters). Handlers live in openai_ingress.cpp
// (the data plane) and admin_api.cpp (admin API and probes).
#include "modelux/server.hpp"

#include <malloc.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "modelux/budget.hpp"
#include "modelux/router.hpp"
#include "modelux/scrub.hpp"
#include "modelux/trace.hpp"
#include "server/control_plane.hpp"
#include "server/http_server.hpp"
#include "server/kept.hpp"
#include "server/metrics.hpp"
#include "server/reactor_pool.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

void log_event(std::string_view level, std::string_view event, Json fields) {
  if (!fields.is_object()) fields = Json::object();
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[96];  // room for any int the format could print (silences -Wformat-truncation)
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  Json line = {{"ts", ts}, {"level", level}, {"event", event}};
  line.update(fields);
  std::string out = scrubbed(line.dump(-1, ' ', false, Json::error_handler_t::replace));
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stderr);  // one call per line: lines never interleave
  std::fflush(stderr);
}

namespace {

/// Where budget alerts go: a structured log line always, and a JSON POST to the configured
/// webhook (fire and forget on the router's io_context: an alert never delays a request).
struct AlertSink {
  std::string url;
  std::atomic<Router*> router{nullptr};  ///< set once the router exists; alerts before that are only logged
};

Json alert_json(const BudgetAlert& a) {
  return {{"budget", a.budget},         {"scope", a.scope},           {"window", a.window},
          {"threshold", a.threshold},   {"percent", a.percent},       {"spent_usd", a.spent_usd},
          {"limit_usd", a.limit_usd},   {"at", format_iso_time(a.at)}, {"message", a.message()}};
}

net::awaitable<void> post_alert(Transport& t, HttpRequestSpec spec, Instant deadline) {
  auto r = co_await t.send(spec, deadline);
  if (!r) {
    log_event("warn", "budget.alert_webhook_failed", {{"url", spec.url}, {"error", r.error().describe()}});
  } else if (r->status < 200 || r->status >= 300) {
    log_event("warn", "budget.alert_webhook_failed", {{"url", spec.url}, {"status", r->status}});
  }
}

void deliver_alert(const AlertSink& sink, const BudgetAlert& a) {
  Json body = alert_json(a);
  log_event("warn", "budget.alert", body);
  Router* router = sink.router.load(std::memory_order_acquire);
  if (sink.url.empty() || !router) return;
  HttpRequestSpec spec;
  spec.method = "POST";
  spec.url = sink.url;
  spec.headers.emplace_back("content-type", "application/json");
  spec.headers.emplace_back("user-agent", "modelux-alerts");
  spec.body = Json{{"type", "budget.alert"}, {"data", std::move(body)}}.dump();
  const Instant deadline = router->clock().now() + std::chrono::seconds(10);
  auto posting = post_alert(router->transport(), std::move(spec), deadline);
  net::co_spawn(router->executor(), std::move(posting), net::detached);
}

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

// After a burst of streams glibc keeps most of what they freed: free chunks between live
// ones in the main heap and in each thread's arena are not handed back by free(), so RSS
// stayed near its peak (340 MB after 10,000 streams) although the live heap was back near
// idle (the RSS did not grow round after round: retention, not a leak). Once every proxy of
// the process is idle (nothing in flight) after traffic, malloc_trim(0) returns the free
// pages of every arena. It runs at most once per period and only when requests came since
// the last trim, so a busy or an idle proxy pays nothing. Before trimming it closes the idle
// upstream connections beyond Transport's quiet_idle_per_origin (Transport::trim_idle) and lets
// the tracer release its surplus nodes, page cache, batch storage and queue pages
// (Tracer::release_idle), shrinks the server's connection set (Server::release_idle), and on
// each io thread frees the per-socket states Asio keeps for reuse (release_reactor_pool: one
// per socket the burst had open, 4,000 after 2,000 streams, each pinning a page; a state is
// freed by the pass after the one that found it unused, so a burst gets one more pass, 0.5 s
// later), shrinks Asio's timer heap and cycles the thread's malloc cache, whose chunks
// malloc_trim cannot see (release_thread_cache). One thread per process (the heap is per
// process), started by the first proxy.
class IdleTrimmer {
 public:
  static IdleTrimmer& instance() {
    static IdleTrimmer t;
    return t;
  }
  void attach(const Proxy::State* st) {
    std::lock_guard lk(mu_);
    states_.push_back(st);
    if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }
  void detach(const Proxy::State* st) {
    std::lock_guard lk(mu_);
    std::erase(states_, st);
  }

 private:
  static constexpr auto kPeriod = std::chrono::seconds(2);
  // The pass that frees what the previous one marked comes sooner: the marked states' queued
  // completions, if any, ran long before (release_reactor_pool posts behind them).
  static constexpr auto kFollowUp = std::chrono::milliseconds(500);
  void run(std::stop_token stop) {
    std::uint64_t seen = 0;
    bool reactor_marked = false;
    std::unique_lock lk(mu_);
    while (!stop.stop_requested()) {
      const std::chrono::milliseconds wait = reactor_marked ? kFollowUp : std::chrono::milliseconds(kPeriod);
      cv_.wait_for(lk, stop, wait, [] { return false; });  // woken early only by stop
      if (stop.stop_requested()) break;
      std::uint64_t requests = 0;
      bool busy = false;
      for (const auto* st : states_) {
        requests += st->requests.load(std::memory_order_relaxed);
        busy = busy || st->in_flight.load(std::memory_order_relaxed) != 0;
      }
      // A pass also runs once more after a burst's when it marked Asio's free socket states:
      // that second pass frees them (release_reactor_pool frees only what one pass marked).
      if (busy || (requests == seen && !reactor_marked)) continue;
      seen = requests;
      // First what the burst left behind on purpose: its surplus of idle upstream connections
      // (up to max_idle_per_origin, each a socket, a stream and a buffer allocated mid-burst).
      // Kept, they would pin the pages around them until the next request expires them.
      for (const auto* st : states_)
        if (st->router) st->router->transport().trim_idle();
      // Then the tracer's: recycled trace nodes beyond a few and SQLite's page cache, both
      // grown by the burst's traces (the writer rereads the pages it needs).
      for (const auto* st : states_)
        if (st->router)
          if (Tracer* t = st->router->tracer()) t->release_idle();
      // The server's set of open connections, whose bucket array grew to the burst's peak.
      for (const auto* st : states_)
        if (st->http) st->http->release_idle();
      // Then Asio's per-socket states, one per socket the burst had open (posts to each io
      // thread and waits for it; an attached proxy's io_context runs: detach() comes first).
      reactor_marked = false;
      for (const auto* st : states_)
        if (st->router)
          for (auto& ex : st->router->executors())  // one reactor per io thread
            reactor_marked = release_reactor_pool(ex).marked > 0 || reactor_marked;
      malloc_trim(0);
    }
  }
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<const Proxy::State*> states_;
  std::jthread thread_;  // last: stopped and joined before the rest goes
};

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
  st.server = sc;
  // Budget spend must survive a restart: the embedded default keeps it in budgets.db next to
  // the traces; with traces in memory too, say loudly that it does not.
  // (Also without budgets in the file: budgets added through the API at run time, or stored by
  // another instance, are live here and keep their spend the same way.)
  if (config.budget_backend_options.sqlite_path.empty() && config.budget_backend_options.redis_url.empty()) {
    std::string db = ServerConfig::default_budgets_db_path(config);
    if (!db.empty()) {
      config.budget_backend_options.sqlite_path = db;
      if (!config.budget_backend.is_object()) config.budget_backend = Json::object();
      config.budget_backend["sqlite_path"] = db;
    } else if (!config.budgets.empty()) {
      log_event("warn", "budget.memory_only",
                {{"message", "budgets are configured but spend is kept in memory: it resets on restart "
                             "(set budget_backend.sqlite_path, or tracing.path to keep budgets.db next to the traces)"}});
    }
  }
  // The control store first: on the first start the file seeds it; afterwards its versions
  // replace the file's routing configs and budgets (docs/control-plane.md).
  ControlOptions co;
  co.path = ServerConfig::control_db_path(config, sc);
  co.reconcile = Millis{sc.control.reconcile_ms};
  co.retry_base = Millis{sc.control.webhook_retry_base_ms};
  co.give_up = Millis{sc.control.webhook_give_up_ms};
  co.delivery_timeout = Millis{sc.control.webhook_timeout_ms};
  co.anomaly.bucket = Millis{static_cast<std::int64_t>(sc.control.anomaly_bucket_s * 1000)};
  co.anomaly.baseline_buckets = static_cast<std::size_t>(sc.control.anomaly_baseline_buckets);
  co.anomaly.min_buckets = static_cast<std::size_t>(sc.control.anomaly_min_buckets);
  co.anomaly.factor = sc.control.anomaly_factor;
  co.anomaly.min_usd = sc.control.anomaly_min_usd;
  auto control = ControlPlane::open(std::move(co));
  if (!control) return fail(control.error());
  if (auto r = (*control)->seed(config, opts.reseed, Actor{"file", "startup"}); !r) return fail(r.error());
  RouterOptions ro;
  ro.io_threads = so.threads;
  ro.always_budgets = true;  // budgets added through the admin API apply at once, even on a start without any
  auto alerts = std::make_shared<AlertSink>();
  alerts->url = sc.alert_webhook_url;
  ro.on_alert = [alerts](const BudgetAlert& a) { deliver_alert(*alerts, a); };
  auto router = Router::create(std::move(config), ro);
  if (!router) return fail(router.error());
  st.router = std::move(*router);
  alerts->router.store(st.router.get(), std::memory_order_release);
  auto store = KeyStore::open(ServerConfig::keys_db_path(st.router->config(), sc));
  if (!store) return fail(store.error());
  st.keys = std::make_unique<KeyRegistry>(sc.api_keys, std::move(*store), st.router->clock());
  if (st.keys->open_access() && so.host != "127.0.0.1" && so.host != "localhost" && so.host != "::1")
    return fail(ErrorKind::invalid_config, "refusing to serve without API keys on a non-loopback address", "$.server.api_keys");
  st.kept = std::make_unique<KeptResponses>(sc.keep_responses, ServerConfig::kept_db_path(st.router->config(), sc), st.router->clock());
  st.workers = std::make_unique<WorkerPool>(sc.worker_threads);
  st.metrics = std::make_unique<ProxyMetrics>(st);  // before the server starts: handlers read it
  if (auto r = (*control)->attach(*st.router, st.keys.get()); !r) return fail(r.error());
  st.control = std::move(*control);
  so.executor = st.router->executor();
  so.executors = st.router->executors();  // a listener per io thread: a connection stays on the thread that accepted it
  auto stp = p->state_;
  so.on_head = [stp](const http_server::RequestHead& h) { return on_head(*stp, h); };
  // The server's own refusals (413, a header that is not UTF-8, 503 busy) in the shape of the
  // API the caller spoke: an Anthropic SDK on /v1/messages reads Anthropic's error object.
  so.error_body = [](int status, const std::string& message, std::string_view target) {
    std::string body = http_server::default_error_body(status, message, target);
    if (error_shape_of(target) != ErrorShape::anthropic) return body;
    Reply r;
    r.status = status;
    r.body = std::move(body);
    return to_anthropic_error(std::move(r)).body;
  };
  auto srv = http_server::Server::start(so, [stp](Request& req, ResponseWriter& w) { return handle(stp, req, w); });
  if (!srv) return fail(srv.error());
  p->server_ = std::move(*srv);
  st.http = p->server_.get();
  IdleTrimmer::instance().attach(&st);
  return p;
}

Proxy::~Proxy() { stop(); }
int Proxy::port() const noexcept { return server_ ? server_->port() : 0; }
Router& Proxy::router() noexcept { return *state_->router; }
bool Proxy::drain(std::optional<Millis> timeout) {
  if (!server_ || !state_ || !state_->router) return true;
  const Millis limit = timeout.value_or(state_->server.drain_timeout);
  state_->draining = true;  // /readyz answers 503 from now on
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
  if (state_) IdleTrimmer::instance().detach(state_.get());
  if (server_) server_->stop();
  // Workers may hold the router (a compile, a trace read): finish them first.
  if (state_ && state_->workers) state_->workers->stop();
  // The control thread reads the router (reconcile, watchers): stop it before the router goes.
  if (state_ && state_->control) state_->control->stop();
  if (state_) state_->router.reset();
}

}  // namespace modelux::proxy
