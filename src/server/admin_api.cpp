// The admin API and probes: models, config listing, traces, budgets, health, keys, /healthz,
// /readyz, /metrics (versioned config reads and writes live in control_api.cpp). Anything slower than a few microseconds (trace reads and flushes, config
// compiles, budget snapshots, key store writes) runs on the worker pool.
#include <charconv>

#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/scrub.hpp"
#include "modelux/trace.hpp"
#include "server/control_plane.hpp"
#include "server/http_server.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

namespace {

Reply not_found(std::string msg) { return error_reply(404, ErrorKind::not_found, std::move(msg), "not_found"); }

std::optional<std::string> query_param(std::string_view q, std::string_view name) {
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

}  // namespace

net::awaitable<std::optional<Reply>> list_models(RouteCtx& c) {
  Router& r = *c.st.router;
  Json data = Json::array();
  for (const auto& slug : r.routing_slugs())
    data.push_back({{"id", "@" + slug}, {"object", "model"}, {"created", 0}, {"owned_by", "modelux"}});
  for (const auto& m : r.routable_models()) {
    const ModelInfo* mi = r.catalog().find_model(m);
    data.push_back({{"id", m}, {"object", "model"}, {"created", 0}, {"owned_by", mi ? mi->provider : "modelux"}});
  }
  co_return json_reply(Json{{"object", "list"}, {"data", std::move(data)}});
}

net::awaitable<std::optional<Reply>> list_configs(RouteCtx& c) {
  Router& r = *c.st.router;
  Json arr = Json::array();
  for (const auto& slug : r.routing_slugs()) {
    auto p = r.routing_config(slug);
    arr.push_back({{"slug", slug}, {"version", p ? p->version() : 0}, {"config", p ? p->source() : Json()}});
  }
  co_return json_reply(Json{{"object", "list"}, {"data", std::move(arr)}});
}

// get_config and put_config (versioned, If-Match) live in control_api.cpp.

net::awaitable<std::optional<Reply>> list_traces(RouteCtx& c) {
  Tracer* t = c.st.router->tracer();
  if (!t) co_return not_found("tracing is disabled");
  TraceQuery q;
  q.limit = 50;
  if (auto l = query_param(c.req.query, "limit")) {
    std::size_t n = 0;
    auto r = std::from_chars(l->data(), l->data() + l->size(), n);
    if (r.ec != std::errc{} || r.ptr != l->data() + l->size() || n < 1 || n > 1000)
      co_return error_reply(400, ErrorKind::bad_request, "limit must be an integer 1..1000", "invalid_limit", "limit");
    q.limit = n;
  }
  // Non-admin keys see their own project only (the store filters, so the limit still holds).
  if (!c.caller.admin()) q.project = c.caller.project;
  auto store = t->store();
  auto job = [t, store, q]() -> std::string {
    t->flush();  // make what was submitted visible
    auto rows = store->query(q);
    if (!rows) return {};
    Json arr = Json::array();
    for (const auto& r : *rows) arr.push_back(r.to_json());
    std::string out = Json{{"object", "list"}, {"data", std::move(arr)}}.dump(-1, ' ', false, Json::error_handler_t::replace);
    scrub(out);
    return out;
  };
  auto body = co_await c.st.workers->run(std::move(job));
  if (body.empty()) co_return error_reply(500, ErrorKind::io, "the trace store could not be read", "trace_store_error");
  Reply r;
  r.body = std::move(body);
  co_return r;
}

net::awaitable<std::optional<Reply>> get_trace(RouteCtx& c) {
  Tracer* t = c.st.router->tracer();
  if (!t) co_return not_found("tracing is disabled");
  auto store = t->store();
  std::string id = c.params[0];
  auto job = [t, store, id] {
    t->flush();
    return store->get(id);
  };
  auto tr = co_await c.st.workers->run(std::move(job));
  if (!tr) co_return error_reply(tr.error());
  if (!*tr) co_return not_found("no trace with id '" + id + "'");
  if (!c.caller.sees_project((*tr)->project))
    co_return error_reply(403, ErrorKind::auth, "this trace belongs to another project", "permission_denied");
  co_return json_reply((*tr)->to_json());
}

net::awaitable<std::optional<Reply>> get_budgets(RouteCtx& c) {
  BudgetManager* b = c.st.router->budgets();
  Instant now = c.st.router->clock().now();
  const bool admin = c.caller.admin();
  std::string project = c.caller.project;
  auto job = [b, now, admin, project] {
    Json snap = b ? b->snapshot(now) : Json::object();
    if (!admin) {
      // Only the ledgers of the caller's own project; fleet-wide and other scopes stay hidden.
      Json mine = Json::array();
      if (auto it = snap.find("budgets"); it != snap.end())
        for (auto& l : *it)
          if (l.value("scope", std::string{}) == "project:" + project && !project.empty()) mine.push_back(std::move(l));
      snap = Json{{"budgets", std::move(mine)}};
    }
    return snap.dump(-1, ' ', false, Json::error_handler_t::replace);
  };
  auto body = co_await c.st.workers->run(std::move(job));
  Reply r;
  r.body = std::move(body);
  co_return r;
}

net::awaitable<std::optional<Reply>> get_health(RouteCtx& c) {
  // Operators read why a target's breaker is open and until when.
  Router& r = *c.st.router;
  Reply rep;
  rep.body = r.health() ? r.health()->state_json(r.clock().now()).dump(-1, ' ', false, Json::error_handler_t::replace) : std::string("{}");
  co_return rep;
}

// ---- keys ----------------------------------------------------------------------------------

net::awaitable<std::optional<Reply>> create_key(RouteCtx& c) {
  KeyStore* store = c.st.keys->store();
  auto j = parse_json(c.req.body, ParseLimits{.max_bytes = 64 * 1024, .max_depth = 8});
  if (!j || !j->is_object()) co_return error_reply(400, ErrorKind::bad_request, "the body must be a JSON object", "invalid_json");
  ManagedKey k;
  static constexpr std::string_view kFields[] = {"name", "project", "org", "role", "models", "configs", "rpm", "max_concurrency", "expires"};
  for (auto it = j->begin(); it != j->end(); ++it)
    if (std::find(std::begin(kFields), std::end(kFields), it.key()) == std::end(kFields))
      co_return error_reply(400, ErrorKind::bad_request, "unknown field '" + it.key() + "'", "invalid_request", "$." + it.key());
  auto str = [&](const char* f, std::string& dst) -> bool {
    auto it = j->find(f);
    if (it == j->end() || it->is_null()) return true;
    if (!it->is_string()) return false;
    dst = it->get<std::string>();
    return true;
  };
  std::string role = "project", expires;
  for (auto [f, dst] : {std::pair{"name", &k.name}, {"project", &k.project}, {"org", &k.org}, {"role", &role}, {"expires", &expires}})
    if (!str(f, *dst)) co_return error_reply(400, ErrorKind::bad_request, std::string("'") + f + "' must be a string", "invalid_request", std::string("$.") + f);
  auto r = key_role_from_string(role);
  if (!r) co_return error_reply(400, ErrorKind::bad_request, "role must be admin, project or viewer", "invalid_request", "$.role");
  k.role = *r;
  if (k.role != KeyRole::admin && !valid_slug(k.project))
    co_return error_reply(400, ErrorKind::bad_request, "a project or viewer key needs a project: [a-z0-9][a-z0-9_-]{0,63}", "invalid_request", "$.project");
  for (auto [f, dst] : {std::pair{"models", &k.limits.models}, {"configs", &k.limits.configs}}) {
    auto it = j->find(f);
    if (it == j->end() || it->is_null()) continue;
    if (!it->is_array()) co_return error_reply(400, ErrorKind::bad_request, std::string("'") + f + "' must be an array of strings", "invalid_request", std::string("$.") + f);
    for (const auto& v : *it) {
      if (!v.is_string() || v.get<std::string>().empty())
        co_return error_reply(400, ErrorKind::bad_request, std::string("'") + f + "' must hold non-empty strings", "invalid_request", std::string("$.") + f);
      std::string s = v.get<std::string>();
      if (std::string_view(f) == "configs" && s.front() == '@') s.erase(0, 1);
      dst->push_back(std::move(s));
    }
  }
  for (auto [f, dst] : {std::pair{"rpm", &k.limits.rpm}, {"max_concurrency", &k.limits.max_concurrency}}) {
    auto it = j->find(f);
    if (it == j->end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<std::int64_t>() < 0 || it->get<std::int64_t>() > 1000000)
      co_return error_reply(400, ErrorKind::bad_request, std::string("'") + f + "' must be an integer 0..1000000", "invalid_request", std::string("$.") + f);
    *dst = it->get<int>();
  }
  WallTime now = c.st.router->clock().wall_now();
  if (!expires.empty()) {
    auto t = parse_key_expiry(expires, now);
    if (!t) co_return error_reply(400, ErrorKind::bad_request, t.error().message, "invalid_request", "$.expires");
    k.expires = *t;
  }
  KeyRegistry* reg = c.st.keys.get();
  ControlPlane* cp = c.st.control.get();
  Actor who{c.caller.key ? c.caller.key->id : std::string("anonymous"), c.req.remote};
  auto job = [store, reg, cp, who, k = std::move(k), now]() mutable {
    auto res = store->create(std::move(k), now);
    if (res) {
      add_secret(res->secret);
      reg->reload();
      if (cp) (void)cp->record_key(res->key, false, who);  // version + audit + key.created
    }
    return res;
  };
  auto created = co_await c.st.workers->run(std::move(job));
  if (!created) co_return error_reply(created.error());
  Json out = created->key.to_json();
  out["key"] = created->secret;  // shown once: only its hash is stored
  // Not scrubbed on the way out (the caller must see it once); serve() scrubs admin answers,
  // so write this one here.
  // Named arguments: GCC 12 destroys temporaries of a co_await expression twice.
  std::string content_type = "application/json", body = out.dump();
  co_await c.w.respond(201, std::move(content_type), std::move(body), {});
  co_return std::nullopt;
}

net::awaitable<std::optional<Reply>> list_keys(RouteCtx& c) {
  KeyStore* store = c.st.keys->store();
  auto job = [store] { return store->list(); };
  auto rows = co_await c.st.workers->run(std::move(job));
  if (!rows) co_return error_reply(rows.error());
  Json arr = Json::array();
  for (const auto& k : *rows) arr.push_back(k.to_json());
  co_return json_reply(Json{{"object", "list"}, {"data", std::move(arr)}});
}

net::awaitable<std::optional<Reply>> get_key(RouteCtx& c) {
  KeyStore* store = c.st.keys->store();
  auto job = [store] { return store->list(); };
  auto rows = co_await c.st.workers->run(std::move(job));
  if (!rows) co_return error_reply(rows.error());
  for (const auto& k : *rows)
    if (k.id == c.params[0]) co_return json_reply(k.to_json());
  co_return not_found("no managed key '" + c.params[0] + "'");
}

net::awaitable<std::optional<Reply>> revoke_key(RouteCtx& c) {
  KeyStore* store = c.st.keys->store();
  KeyRegistry* reg = c.st.keys.get();
  WallTime now = c.st.router->clock().wall_now();
  std::string id = c.params[0];
  ControlPlane* cp = c.st.control.get();
  Actor who{c.caller.key ? c.caller.key->id : std::string("anonymous"), c.req.remote};
  auto job = [store, reg, cp, who, id, now] {
    auto r = store->revoke(id, now);
    reg->reload();  // effective for the very next request
    if (r && *r && cp) {
      if (auto rows = store->list())
        for (const auto& k : *rows)
          if (k.id == id) (void)cp->record_key(k, true, who);  // version + audit + key.revoked
    }
    return r;
  };
  auto done = co_await c.st.workers->run(std::move(job));
  if (!done) co_return error_reply(done.error());
  if (!*done) co_return not_found("no active managed key '" + id + "'");
  co_return json_reply(Json{{"id", id}, {"object", "api_key"}, {"revoked", true}});
}

// ---- probes --------------------------------------------------------------------------------

net::awaitable<std::optional<Reply>> healthz(RouteCtx&) { co_return json_reply(Json{{"status", "ok"}}); }

net::awaitable<std::optional<Reply>> readyz(RouteCtx& c) {
  // Ready = configs compiled (the router exists only once they did), the stores writable, not
  // draining. A store that cannot be written would silently lose traces or spend.
  Proxy::State& st = c.st;
  Json checks = Json::object();
  bool ready = true;
  if (st.draining.load() || (st.http && st.http->draining())) {
    checks["draining"] = true;
    ready = false;
  }
  checks["configs"] = st.router->routing_slugs().size();
  if (Tracer* t = st.router->tracer()) {
    auto ts = t->stats();
    bool ok = ts.last_error.empty() || ts.write_errors == 0;
    checks["trace_store"] = ok ? "ok" : scrubbed(ts.last_error);
    ready = ready && ok;
  }
  Reply r = json_reply(Json{{"status", ready ? "ready" : "not_ready"}, {"checks", checks}}, ready ? 200 : 503);
  co_return r;
}

net::awaitable<std::optional<Reply>> metrics(RouteCtx& c) {
  Proxy::State& st = c.st;
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
  line("modelux_auth_refused_total", "Requests refused for a missing, unknown or expired key (401).", "counter",
       static_cast<double>(st.auth_refused.load()));
  line("modelux_forbidden_total", "Requests refused by role or project (403).", "counter", static_cast<double>(st.forbidden.load()));
  line("modelux_key_limited_total", "Requests refused by a key's rpm or concurrency limit (429).", "counter",
       static_cast<double>(st.key_rate_limited.load()));
  if (Tracer* t = st.router->tracer()) {
    auto ts = t->stats();
    line("modelux_traces_submitted_total", "Traces handed to the tracer.", "counter", static_cast<double>(ts.submitted));
    line("modelux_traces_written_total", "Traces written to the store.", "counter", static_cast<double>(ts.written));
    line("modelux_traces_dropped_total", "Traces dropped (queue full or write failure).", "counter", static_cast<double>(ts.dropped));
    // What a kill -9 would lose now: submitted, not yet written (docs/traces.md).
    line("modelux_traces_queued", "Traces submitted and not yet written (lost on a crash).", "gauge", static_cast<double>(ts.queued));
    line("modelux_traces_write_errors_total", "Trace batches that failed to write.", "counter", static_cast<double>(ts.write_errors));
  }
  if (st.http) {
    auto ss = st.http->stats();
    line("modelux_accept_backoffs_total", "accept() failures for lack of fds or memory (the accept loop paused).", "counter",
         static_cast<double>(ss.accept_backoffs));
    line("modelux_accept_refused_total", "Connections refused with 503 at the fd limit (through the reserve fd).", "counter",
         static_cast<double>(ss.accept_refused));
    line("modelux_body_budget_refused_total", "Requests refused (503) by server.max_inflight_body_bytes.", "counter",
         static_cast<double>(ss.body_budget_refused));
    line("modelux_connections_open", "Client connections open.", "gauge", static_cast<double>(ss.connections_open));
    line("modelux_body_bytes_in_flight", "Request-body bytes buffered now (counted against max_inflight_body_bytes).", "gauge",
         static_cast<double>(ss.body_bytes_in_flight));
    line("modelux_draining", "1 while the server drains for shutdown.", "gauge", st.http->draining() ? 1.0 : 0.0);
  }
  if (st.control) append_control_metrics(s, *st.control);
  auto tr = st.router->transport().stats();
  line("modelux_upstream_connections_opened_total", "Upstream connections opened.", "counter", static_cast<double>(tr.connections_opened));
  line("modelux_upstream_connections_reused_total", "Upstream requests on a pooled connection.", "counter", static_cast<double>(tr.connections_reused));
  Reply r;
  r.content_type = "text/plain; version=0.0.4";
  r.body = std::move(s);
  co_return r;
}

}  // namespace modelux::proxy
