#include "server/routes.hpp"

#include "modelux/scrub.hpp"
#include "wire/anthropic_messages.hpp"

namespace modelux::proxy {

namespace {

// Roles each access level admits. Checked here, once, for every route.
bool role_allows(Access a, KeyRole r) noexcept {
  switch (a) {
    case Access::open: return true;
    case Access::read: return true;
    case Access::data: return r == KeyRole::admin || r == KeyRole::project;
    case Access::admin: return r == KeyRole::admin;
  }
  return false;
}

const Route kRoutes[] = {
    {"POST", "/v1/chat/completions", Access::data, chat_completions, true},
    {"POST", "/chat/completions", Access::data, chat_completions, true},
    {"POST", "/v1/messages", Access::data, messages, true, ErrorShape::anthropic},
    {"POST", "/v1/messages/count_tokens", Access::data, count_tokens, false, ErrorShape::anthropic},
    {"GET", "/v1/kept/{request_id}", Access::read, get_kept},
    {"POST", "/v1/embeddings", Access::data, embeddings, true},
    {"GET", "/v1/models", Access::read, list_models},
    {"GET", "/v1/configs", Access::read, list_configs},
    {"GET", "/v1/configs/{slug}", Access::read, get_config},
    {"PUT", "/v1/configs/{slug}", Access::admin, put_config},
    {"POST", "/v1/configs/{slug}", Access::admin, put_config},
    {"GET", "/v1/traces", Access::read, list_traces},
    {"GET", "/v1/traces/{id}", Access::read, get_trace},
    {"GET", "/v1/budgets", Access::read, get_budgets},
    {"GET", "/v1/health", Access::read, get_health},
    {"POST", "/v1/keys", Access::admin, create_key},
    {"GET", "/v1/keys", Access::admin, list_keys},
    {"GET", "/v1/keys/{id}", Access::admin, get_key},
    {"DELETE", "/v1/keys/{id}", Access::admin, revoke_key},
    {"GET", "/v1/configs/{slug}/versions", Access::read, config_versions},
    {"GET", "/v1/configs/{slug}/versions/{version}", Access::read, config_version},
    {"GET", "/v1/configs/{slug}/diff", Access::read, config_diff},
    {"POST", "/v1/configs/{slug}/rollback", Access::admin, config_rollback},
    {"POST", "/v1/configs/{slug}/promote", Access::admin, config_promote},
    {"GET", "/v1/budgets/{name}", Access::admin, get_budget},
    {"PUT", "/v1/budgets/{name}", Access::admin, put_budget},
    {"DELETE", "/v1/budgets/{name}", Access::admin, delete_budget},
    {"GET", "/v1/budgets/{name}/versions", Access::admin, budget_versions},
    {"POST", "/v1/budgets/{name}/reset", Access::admin, reset_budget},
    {"GET", "/v1/webhooks", Access::admin, list_webhooks},
    {"POST", "/v1/webhooks", Access::admin, create_webhook},
    {"GET", "/v1/webhooks/{id}", Access::admin, get_webhook},
    {"PUT", "/v1/webhooks/{id}", Access::admin, update_webhook},
    {"DELETE", "/v1/webhooks/{id}", Access::admin, delete_webhook},
    {"GET", "/v1/webhooks/{id}/versions", Access::admin, webhook_versions},
    {"GET", "/v1/keys/{id}/versions", Access::admin, key_versions},
    {"GET", "/v1/webhooks/{id}/deliveries", Access::admin, webhook_deliveries},
    {"POST", "/v1/webhooks/{id}/deliveries/{delivery}/redeliver", Access::admin, redeliver_webhook},
    {"GET", "/v1/audit", Access::admin, list_audit},
    {"GET", "/v1/audit/verify", Access::admin, verify_audit},
    {"GET", "/v1/analytics/spend", Access::read, analytics_spend},
    {"GET", "/v1/analytics/latency", Access::read, analytics_latency},
    {"GET", "/v1/analytics/errors", Access::read, analytics_errors},
    {"GET", "/v1/analytics/failovers", Access::read, analytics_failovers},
    {"GET", "/v1/analytics/forecast", Access::read, analytics_forecast},
    {"GET", "/v1/analytics/budget-forecast", Access::read, analytics_budget_forecast},
    {"GET", "/openapi.json", Access::open, openapi},
    {"POST", "/mcp", Access::read, mcp_post},  // MCP tools/resources; each call re-checked by admit() (mcp.cpp)
    {"GET", "/healthz", Access::open, healthz},
    {"GET", "/readyz", Access::open, readyz},
    {"GET", "/metrics", Access::open, metrics},
    {"GET", "/", Access::open, console_index},
    {"GET", "/assets/{file}", Access::open, console_asset},
    {"GET", "/v1/whoami", Access::read, whoami},
    {"POST", "/v1/configs/{slug}/replay", Access::admin, config_replay},
};

// Matches `path` against `pattern` segment by segment; {name} takes one non-empty segment.
bool match(std::string_view pattern, std::string_view path, std::vector<std::string>& params) {
  params.clear();
  while (!pattern.empty() || !path.empty()) {
    if (pattern.empty() || path.empty() || pattern.front() != '/' || path.front() != '/') return false;
    pattern.remove_prefix(1);
    path.remove_prefix(1);
    auto pe = pattern.find('/'), ve = path.find('/');
    std::string_view ps = pattern.substr(0, pe), vs = path.substr(0, ve);
    if (ps.starts_with('{')) {
      if (vs.empty()) return false;
      params.emplace_back(vs);
    } else if (ps != vs) {
      return false;
    }
    pattern = pe == std::string_view::npos ? std::string_view{} : pattern.substr(pe);
    path = ve == std::string_view::npos ? std::string_view{} : path.substr(ve);
  }
  return true;
}

// RFC 3629 UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool utf8_ok(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) { ++i; continue; }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return false;
    if (i + len > n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

Reply forbidden(Proxy::State& st, std::string message, std::string code = "permission_denied") {
  st.forbidden.fetch_add(1, std::memory_order_relaxed);
  return error_reply(403, ErrorKind::auth, std::move(message), std::move(code));
}

}  // namespace

const Route* find_route(std::string_view method, std::string_view pattern) noexcept {
  for (const Route& r : kRoutes)
    if (r.method == method && r.pattern == pattern) return &r;
  return nullptr;
}

bool role_allows_access(Access a, KeyRole r) noexcept { return role_allows(a, r); }

Reply error_reply(int status, ErrorKind kind, std::string message, std::string code, std::string param) {
  Error e;
  e.kind = kind;
  e.message = std::move(message);
  e.code = std::move(code);
  e.path = std::move(param);
  Reply r;
  r.status = status;
  r.body = openai_error_json(e).dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

Reply error_reply(const Error& e) {
  Reply r;
  r.status = http_status_for(e.kind);
  r.body = openai_error_json(e).dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

Reply json_reply(const Json& j, int status) {
  Reply r;
  r.status = status;
  // Stored strings may hold anything a client sent; never throw on invalid UTF-8 (an
  // exception here used to leave the connection without an answer).
  r.body = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

bool valid_slug(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  auto ok = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (!first && (c == '_' || c == '-'));
  };
  for (std::size_t i = 0; i < s.size(); ++i)
    if (!ok(s[i], i == 0)) return false;
  return true;
}

namespace {
std::variant<Admission, Reply> admit_route(Proxy::State& st, std::string_view method, std::string_view path, const Headers& headers,
                                           const Route*& matched);
}  // namespace

std::variant<Admission, Reply> admit(Proxy::State& st, std::string_view method, std::string_view path, const Headers& headers) {
  const Route* matched = nullptr;
  auto decided = admit_route(st, method, path, headers, matched);
  if (auto* refuse = std::get_if<Reply>(&decided); refuse && matched && matched->errors == ErrorShape::anthropic)
    return to_anthropic_error(std::move(*refuse));
  return decided;
}

ErrorShape error_shape_of(std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  std::vector<std::string> params;
  for (const Route& r : kRoutes)
    if (match(r.pattern, path, params)) return r.errors;
  return ErrorShape::openai;
}

Reply to_anthropic_error(Reply r) {
  auto j = parse_json(r.body);
  std::string message = j && j->is_object() && j->contains("error") && (*j)["error"].is_object()
                            ? (*j)["error"].value("message", std::string("error"))
                            : std::string("error");
  r.body = wire::anthropic_error_body(r.status, message).dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

namespace {
std::variant<Admission, Reply> admit_route(Proxy::State& st, std::string_view method, std::string_view path, const Headers& headers,
                                           const Route*& matched) {
  Admission a;
  std::string allow;
  std::vector<std::string> params;
  for (const Route& r : kRoutes) {
    if (!match(r.pattern, path, params)) continue;
    if (r.method == method) {
      a.route = &r;
      a.params = params;
      matched = &r;
      break;
    }
    if (allow.find(r.method) == std::string::npos) allow += allow.empty() ? std::string(r.method) : ", " + std::string(r.method);
  }
  if (!a.route) {
    if (allow.empty()) return error_reply(404, ErrorKind::not_found, "unknown path " + scrubbed(path), "unknown_url");
    Reply r = error_reply(405, ErrorKind::bad_request, "use " + allow + " for " + std::string(path), "method_not_allowed");
    r.headers.emplace_back("allow", allow);
    return r;
  }
  for (const auto& [k, v] : headers)
    if (!utf8_ok(v))
      return error_reply(400, ErrorKind::bad_request, "header '" + k + "' is not valid UTF-8", "invalid_header", k);
  for (const auto& p : a.params)
    if (!utf8_ok(p)) return error_reply(400, ErrorKind::bad_request, "the path is not valid UTF-8", "invalid_path");
  if (a.route->access == Access::open) return a;

  if (st.keys->open_access()) {
    a.caller.role = KeyRole::admin;  // no keys at all: loopback-only, everything allowed
  } else {
    auto res = st.keys->authenticate(presented_key(headers));
    if (auto* f = std::get_if<AuthFailure>(&res)) {
      st.auth_refused.fetch_add(1, std::memory_order_relaxed);
      st.client_errors.fetch_add(1, std::memory_order_relaxed);
      std::string msg = *f == AuthFailure::missing
                            ? "Missing API key. Pass a modelux API key as 'Authorization: Bearer <key>'."
                            : *f == AuthFailure::expired ? "This API key has expired."
                                                         : "Incorrect API key provided. Pass a modelux API key as 'Authorization: Bearer <key>'.";
      return error_reply(401, ErrorKind::auth, std::move(msg), "invalid_api_key");
    }
    a.caller = std::get<Caller>(std::move(res));
  }
  if (!role_allows(a.route->access, a.caller.role))
    return forbidden(st, a.route->access == Access::admin
                             ? "this endpoint needs an admin key; this key's role is '" + std::string(to_string(a.caller.role)) + "'"
                             : "a '" + std::string(to_string(a.caller.role)) + "' key cannot call " + std::string(method) + " " +
                                   std::string(a.route->pattern));
  // Only admin keys choose the project a request is charged to and traced under: a project key
  // is pinned to its own, and a key without a project cannot charge someone else's budget.
  if (const std::string* p = find_header(headers, "x-modelux-project"); p && !p->empty()) {
    if (!a.caller.admin() && *p != a.caller.project)
      return forbidden(st, "x-modelux-project names another project than this key's; only admin keys may set it",
                       "project_not_allowed");
    if (a.caller.admin()) a.caller.project = *p;
  }
  if (a.route->data_plane_limits && a.caller.key) {
    const KeyIdentity& k = *a.caller.key;
    if (auto wait = st.keys->take_rate_token(k)) {
      st.key_rate_limited.fetch_add(1, std::memory_order_relaxed);
      st.client_errors.fetch_add(1, std::memory_order_relaxed);
      Reply r = error_reply(429, ErrorKind::rate_limited,
                            "this key's limit of " + std::to_string(k.limits.rpm) + " requests per minute is reached", "key_rate_limited");
      r.headers.emplace_back("retry-after", std::to_string((wait->count() + 999) / 1000));
      r.headers.emplace_back("retry-after-ms", std::to_string(wait->count()));
      return r;
    }
    if (k.limits.max_concurrency > 0) {
      auto usage = k.usage;
      if (usage->in_flight.fetch_add(1) >= k.limits.max_concurrency) {
        usage->in_flight.fetch_sub(1);
        st.key_rate_limited.fetch_add(1, std::memory_order_relaxed);
        st.client_errors.fetch_add(1, std::memory_order_relaxed);
        Reply r = error_reply(429, ErrorKind::rate_limited,
                              "this key already has " + std::to_string(k.limits.max_concurrency) + " requests in flight (its max_concurrency)",
                              "key_concurrency_limited");
        r.headers.emplace_back("retry-after", "1");
        return r;
      }
      a.slot = std::shared_ptr<void>(nullptr, [usage](void*) { usage->in_flight.fetch_sub(1); });
    }
  }
  return a;
}
}  // namespace

net::awaitable<void> respond(ResponseWriter& w, Reply r, bool scrub_body) {
  // Error bodies can quote an upstream that echoed a key; admin answers hold stored text.
  if (scrub_body) scrub(r.body);
  co_await w.respond(r.status, std::move(r.content_type), std::move(r.body), std::move(r.headers));
}

net::awaitable<void> serve(Proxy::State& st, Admission& a, Request& req, ResponseWriter& w) {
  RouteCtx ctx{st, req, w, a.caller, a.params};
  std::optional<Reply> r = co_await a.route->fn(ctx);
  if (!r) co_return;  // a streaming handler wrote its own reply
  const bool is_chat_ok = a.route->access == Access::data && r->status < 400;
  const bool scrub_body = !is_chat_ok && !r->verbatim;
  // respond()'s two lines, inline: one coroutine frame less on every request.
  if (scrub_body) scrub(r->body);
  co_await w.respond(r->status, std::move(r->content_type), std::move(r->body), std::move(r->headers));
}

}  // namespace modelux::proxy
