// The admin API and probes: models, config listing, traces, budgets, health, keys, /healthz,
// /readyz, /metrics (versioned config reads and writes live in control_api.cpp). Anything slower than a few microseconds (trace reads and flushes, config
// compiles, budget snapshots, key store writes) runs on the worker pool.
#include <charconv>
#include <cstdio>
#include <variant>

#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/scrub.hpp"
#include "modelux/trace.hpp"
#include "server/control_plane.hpp"
#include "server/http_server.hpp"
#include "server/metrics.hpp"
#include "server/routes.hpp"
#include "server/query_params.hpp"
#include "trace/trace_json_util.hpp"

namespace modelux::proxy {

namespace {

Reply not_found(std::string msg) { return error_reply(404, ErrorKind::not_found, std::move(msg), "not_found"); }

// An opaque page cursor: hex of "v1|<time_us>|<request_id>|<filters fingerprint>". The
// fingerprint ties a cursor to the filters it was made for: reusing it with other filters is a
// 400, not a silently wrong page.
std::int64_t micros_of(WallTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::string filters_fingerprint(const TraceQuery& q) {
  std::string f = q.project + '\x1f' + q.end_user + '\x1f' + q.config + '\x1f' + q.model + '\x1f' + q.provider + '\x1f' +
                  (q.ok ? (*q.ok ? "ok" : "error") : "") + '\x1f' + (q.since ? std::to_string(micros_of(*q.since)) : "") +
                  '\x1f' + (q.until ? std::to_string(micros_of(*q.until)) : "");
  for (const auto& [k, v] : q.tags) f += '\x1f' + k + '=' + v;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(fnv1a(f)));
  return buf;
}

std::string encode_cursor(std::int64_t time_us, const std::string& id, const TraceQuery& q) {
  std::string raw = "v1|" + std::to_string(time_us) + "|" + id + "|" + filters_fingerprint(q);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::optional<std::pair<std::int64_t, std::string>> decode_cursor(std::string_view hex, const TraceQuery& q, std::string& why) {
  why = "the cursor is not one this server gave out";
  if (hex.empty() || hex.size() % 2 || hex.size() > 1024) return std::nullopt;
  std::string raw;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    auto r = std::from_chars(hex.data() + i, hex.data() + i + 2, v, 16);
    if (r.ec != std::errc{} || r.ptr != hex.data() + i + 2) return std::nullopt;
    raw += static_cast<char>(v);
  }
  if (!raw.starts_with("v1|")) return std::nullopt;
  auto a = raw.find('|', 3), b = raw.rfind('|');
  if (a == std::string::npos || b <= a) return std::nullopt;
  std::int64_t t = 0;
  auto r = std::from_chars(raw.data() + 3, raw.data() + a, t);
  if (r.ec != std::errc{} || r.ptr != raw.data() + a || t < 0) return std::nullopt;
  std::string id = raw.substr(a + 1, b - a - 1);
  if (id.empty()) return std::nullopt;
  if (raw.substr(b + 1) != filters_fingerprint(q)) {
    why = "the cursor belongs to a listing with other filters; repeat the same filters with it";
    return std::nullopt;
  }
  return std::pair{t, std::move(id)};
}

// GET /v1/traces?...: every query parameter becomes a TraceQuery filter; an unknown parameter
// or a bad value is a 400 naming it (a typo must not silently list everything).
std::variant<TraceQuery, Reply> trace_query_of(std::string_view query, std::string& cursor) {
  TraceQuery q;
  q.limit = 50;
  auto bad = [](std::string msg, std::string param) {
    return error_reply(400, ErrorKind::bad_request, std::move(msg), "invalid_" + param, param);
  };
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (kv.empty()) continue;
    auto eq = kv.find('=');
    std::string key(kv.substr(0, eq));
    auto value = url_decode(eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1));
    if (!value) return bad("bad percent-encoding in '" + key + "'", key);
    const std::string& v = *value;
    if (key == "cursor") {
      if (v.empty()) return bad("cursor must not be empty (omit it for the first page)", "cursor");
      cursor = v;
    } else if (key == "limit") {
      std::size_t n = 0;
      auto r = std::from_chars(v.data(), v.data() + v.size(), n);
      if (r.ec != std::errc{} || r.ptr != v.data() + v.size() || n < 1 || n > 1000) return bad("limit must be an integer 1..1000", "limit");
      q.limit = n;
    } else if (key == "model") {
      q.model = v;
    } else if (key == "provider") {
      q.provider = v;
    } else if (key == "config") {
      q.config = v;
    } else if (key == "project") {
      q.project = v;
    } else if (key == "end_user" || key == "user") {
      q.end_user = v;
    } else if (key == "status") {
      if (v != "ok" && v != "error") return bad("status must be ok or error", "status");
      q.ok = v == "ok";
    } else if (key == "tag") {
      auto e = v.find('=');
      if (e == std::string::npos || e == 0) return bad("tag takes k=v", "tag");
      q.tags.emplace_back(v.substr(0, e), v.substr(e + 1));
    } else if (key == "since" || key == "until") {
      std::optional<WallTime> t = trace_detail::parse_iso_time(v);
      if (!t) {  // unix seconds also accepted
        long long secs = 0;
        auto r = std::from_chars(v.data(), v.data() + v.size(), secs);
        if (r.ec != std::errc{} || r.ptr != v.data() + v.size() || secs < 0 || secs > 253402300799 /* year 9999 */)
          return bad(key + " must be an ISO 8601 UTC time (2026-01-01T00:00:00Z) or unix seconds", key);
        t = WallTime{std::chrono::seconds{secs}};
      }
      (key == "since" ? q.since : q.until) = *t;
    } else {
      return bad("unknown parameter '" + key +
                     "' (known: cursor, limit, model, provider, config, project, end_user, status, tag, since, until)",
                 key);
    }
  }
  return q;
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
  std::string cursor;
  auto parsed = trace_query_of(c.req.query, cursor);
  if (auto* refused = std::get_if<Reply>(&parsed)) co_return std::move(*refused);
  TraceQuery q = std::get<TraceQuery>(std::move(parsed));
  // Non-admin keys see their own project only (the store filters, so the limit still holds).
  if (!c.caller.admin()) q.project = c.caller.project;
  // Keyset pages, newest first: a page is "older than the last one seen", so traces written
  // meanwhile (newer) never shift it, and a cursor stays valid while traces are inserted.
  q.keyset = true;
  if (!cursor.empty()) {
    std::string why;
    q.after = decode_cursor(cursor, q, why);
    if (!q.after) co_return error_reply(400, ErrorKind::bad_request, std::move(why), "invalid_cursor", "cursor");
  }
  const std::size_t page = q.limit;
  q.limit = page + 1;  // one more tells whether there is a next page
  auto store = t->store();
  auto job = [t, store, q, page]() -> std::string {
    t->flush();  // make what was submitted visible
    auto rows = store->query(q);
    if (!rows) return {};
    const bool more = rows->size() > page;
    if (more) rows->resize(page);
    Json arr = Json::array();
    for (const auto& r : *rows) arr.push_back(r.to_json());
    Json next = more ? Json(encode_cursor(micros_of(rows->back().time), rows->back().request_id, q)) : Json(nullptr);
    std::string out = Json{{"object", "list"}, {"data", std::move(arr)}, {"has_more", more}, {"next_cursor", std::move(next)}}.dump(
        -1, ' ', false, Json::error_handler_t::replace);
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
  // prometheus-cpp's registry and text serializer (server/metrics.cpp); scrubbed there. The
  // scrape reads health and budget snapshots and formats every series: on the worker pool.
  Reply r;
  r.content_type = "text/plain; version=0.0.4";
  if (const ProxyMetrics* m = c.st.metrics.get()) {
    const ControlPlane* ctl = c.st.control.get();
    auto job = [m, ctl] {
      std::string s = m->render();
      if (ctl) append_control_metrics(s, *ctl);  // the control thread's counters (control_plane.cpp)
      return s;
    };
    r.body = co_await c.st.workers->run(std::move(job));
  }
  co_return r;
}

}  // namespace modelux::proxy
