// The control plane's admin API: routing configs with versions, diffs, rollback and promote
// (optimistic concurrency with If-Match / ETag), budget definitions, webhooks and their
// deliveries, the audit log, and /openapi.json. Every store access and compile runs on the
// worker pool; the handlers only parse and answer.
#include <charconv>

#include "modelux/budget.hpp"
#include "modelux/scrub.hpp"
#include "server/control_plane.hpp"
#include "server/routes.hpp"

namespace modelux::embedded {
extern const std::string_view kOpenApiJson;
}

namespace modelux::proxy {

namespace {

Reply not_found(std::string msg) { return error_reply(404, ErrorKind::not_found, std::move(msg), "not_found"); }

// One error → reply mapping for every control write: conflicts are 409, compile faults 400
// with the JSON path, unknown objects 404.
Reply control_error(const Error& e) {
  if (e.code == kVersionConflict) return error_reply(409, ErrorKind::bad_request, e.message, "version_conflict", "if-match");
  if (e.kind == ErrorKind::not_found) return error_reply(404, ErrorKind::not_found, e.message, "not_found");
  if (e.kind == ErrorKind::invalid_config || e.kind == ErrorKind::bad_request)
    return error_reply(400, ErrorKind::bad_request, e.message, "invalid_config", e.path);
  return error_reply(e);
}

std::optional<std::string> query_param(std::string_view q, std::string_view name) {
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == name) {
      std::string_view raw = eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1);
      // Percent-decoding (timestamps carry ':' as %3A).
      std::string out;
      for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '%' && i + 2 < raw.size()) {
          int v = 0;
          auto r = std::from_chars(raw.data() + i + 1, raw.data() + i + 3, v, 16);
          if (r.ec == std::errc{} && r.ptr == raw.data() + i + 3) {
            out += static_cast<char>(v);
            i += 2;
            continue;
          }
        }
        out += raw[i] == '+' ? ' ' : raw[i];
      }
      return out;
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::int64_t> to_int(std::string_view s, std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc{} || r.ptr != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

Actor actor_of(const RouteCtx& c) {
  return Actor{c.caller.key ? c.caller.key->id : std::string("anonymous"), c.req.remote.empty() ? std::string("unknown") : c.req.remote};
}

// If-Match: absent or "*" = no check; otherwise a version number (quoted or not).
std::variant<std::optional<std::int64_t>, Reply> if_match(const RouteCtx& c) {
  const std::string* h = find_header(c.req.headers, "if-match");
  if (!h || *h == "*") return std::optional<std::int64_t>();
  auto v = parse_if_match(*h);
  if (!v) return error_reply(400, ErrorKind::bad_request, "If-Match must be a version number as given in the ETag (\"3\")", "invalid_if_match", "if-match");
  return std::optional<std::int64_t>(*v);
}

// At most 1 KiB, cut on a UTF-8 character boundary (a cut inside a character would store
// invalid UTF-8, which strict JSON writers refuse).
std::string clip_message(std::string s) {
  if (s.size() <= 1024) return s;
  std::size_t n = 1024;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s;
}

std::string message_of(const RouteCtx& c, const Json* body = nullptr) {
  if (body && body->is_object())
    if (auto m = body->find("message"); m != body->end() && m->is_string()) return clip_message(m->get<std::string>());
  if (const std::string* h = find_header(c.req.headers, "x-modelux-message")) return clip_message(*h);
  return {};
}

Reply version_reply(const ObjectVersion& v, int status = 200) {
  Reply r = json_reply(v.to_json(), status);
  r.headers.emplace_back("etag", version_etag(v.version));
  return r;
}

Reply bad_slug() { return error_reply(400, ErrorKind::bad_request, "not a valid config name: [a-z0-9][a-z0-9_-]{0,63}", "invalid_slug", "slug"); }

Result<std::optional<std::int64_t>> opt_body_int(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<std::int64_t>();
  if (!it->is_number_integer() || it->get<std::int64_t>() < 1)
    return fail(ErrorKind::bad_request, std::string("'") + key + "' must be a positive integer (a version)", std::string("$.") + key);
  return std::optional<std::int64_t>(it->get<std::int64_t>());
}

Result<Json> body_object(const RouteCtx& c, bool allow_empty) {
  if (allow_empty && c.req.body.empty()) return Json::object();
  auto j = parse_json(c.req.body, ParseLimits{.max_bytes = c.st.max_body, .max_depth = 64});
  if (!j) return fail(ErrorKind::bad_request, j.error().message, "$");
  if (!j->is_object()) return fail(ErrorKind::bad_request, "the body must be a JSON object", "$");
  return *j;
}

/// What a write with a JSON object body starts from: the If-Match version and the body.
struct WriteInput {
  std::optional<std::int64_t> expected;
  Json body;
};
/// The write's input, or the refusal to answer (a bad If-Match, a body that is not an object).
std::variant<WriteInput, Reply> write_input(const RouteCtx& c) {
  auto im = if_match(c);
  if (auto* r = std::get_if<Reply>(&im)) return std::move(*r);
  auto body = body_object(c, false);
  if (!body) return control_error(body.error());
  return WriteInput{std::get<0>(im), std::move(*body)};
}

}  // namespace

// ---- configs --------------------------------------------------------------------------------

net::awaitable<std::optional<Reply>> get_config(RouteCtx& c) {
  const std::string& slug = c.params[0];
  if (!valid_slug(slug)) co_return bad_slug();
  auto p = c.st.router->routing_config(slug);
  if (!p) co_return not_found("no routing config '@" + slug + "'");
  Reply r = json_reply(Json{{"slug", slug}, {"version", p->version()}, {"config", p->source()}});
  r.headers.emplace_back("etag", version_etag(p->version()));
  co_return r;
}

net::awaitable<std::optional<Reply>> put_config(RouteCtx& c) {
  const std::string slug = c.params[0];
  if (!valid_slug(slug))
    co_return error_reply(400, ErrorKind::bad_request,
                          "not a valid config name (" + std::to_string(slug.size()) + " bytes): use [a-z0-9][a-z0-9_-]{0,63}",
                          "invalid_slug", "slug");
  auto im = if_match(c);
  if (auto* r = std::get_if<Reply>(&im)) co_return std::move(*r);
  auto j = parse_json(c.req.body, ParseLimits{.max_bytes = c.st.max_body, .max_depth = 64});
  if (!j) co_return error_reply(400, ErrorKind::bad_request, j.error().message, "invalid_json");
  // A compile and a store write: off the io thread.
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, slug, doc = std::move(*j), expected = std::get<0>(im), who = actor_of(c), msg = message_of(c)] {
    return cp->put_config(slug, doc, expected, who, msg);
  };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return control_error(v.error());
  Reply r = json_reply(Json{{"slug", slug}, {"version", v->version}, {"hash", v->hash}});
  r.headers.emplace_back("etag", version_etag(v->version));
  co_return r;
}

net::awaitable<std::optional<Reply>> config_versions(RouteCtx& c) {
  const std::string slug = c.params[0];
  if (!valid_slug(slug)) co_return bad_slug();
  std::int64_t limit = 100;
  if (auto l = query_param(c.req.query, "limit")) {
    auto n = to_int(*l, 1, 1000);
    if (!n) co_return error_reply(400, ErrorKind::bad_request, "limit must be an integer 1..1000", "invalid_limit", "limit");
    limit = *n;
  }
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, slug, limit] { return cp->configs().history(kKindConfig, slug, static_cast<std::size_t>(limit)); };
  auto rows = co_await c.st.workers->run(std::move(job));
  if (!rows) co_return error_reply(rows.error());
  if (rows->empty()) co_return not_found("no routing config '@" + slug + "'");
  Json arr = Json::array();
  for (const auto& v : *rows) arr.push_back(v.to_json(false));
  Reply r = json_reply(Json{{"object", "list"}, {"data", std::move(arr)}});
  r.headers.emplace_back("etag", version_etag(rows->front().version));
  co_return r;
}

net::awaitable<std::optional<Reply>> config_version(RouteCtx& c) {
  const std::string slug = c.params[0];
  if (!valid_slug(slug)) co_return bad_slug();
  auto n = to_int(c.params[1], 1, INT64_MAX);
  if (!n) co_return error_reply(400, ErrorKind::bad_request, "the version must be a positive integer", "invalid_version", "version");
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, slug, v = *n] { return cp->configs().get(kKindConfig, slug, v); };
  auto got = co_await c.st.workers->run(std::move(job));
  if (!got) co_return error_reply(got.error());
  if (!*got) co_return not_found("config '@" + slug + "' has no version " + c.params[1]);
  co_return version_reply(**got);
}

net::awaitable<std::optional<Reply>> config_diff(RouteCtx& c) {
  const std::string slug = c.params[0];
  if (!valid_slug(slug)) co_return bad_slug();
  std::optional<std::int64_t> from, to;
  for (auto [name, dst] : {std::pair{"from", &from}, {"to", &to}}) {
    if (auto q = query_param(c.req.query, name)) {
      auto n = to_int(*q, 1, INT64_MAX);
      if (!n) co_return error_reply(400, ErrorKind::bad_request, std::string("'") + name + "' must be a version number", "invalid_version", name);
      *dst = *n;
    }
  }
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, slug, from, to]() -> Result<Json> {
    auto head = cp->configs().head(kKindConfig, slug);
    if (!head) return fail(head.error());
    if (!*head) return fail(ErrorKind::not_found, "no routing config '@" + slug + "'");
    std::int64_t b = to.value_or((*head)->version);
    std::int64_t a = from.value_or(b > 1 ? b - 1 : b);
    auto va = cp->configs().get(kKindConfig, slug, a);
    auto vb = cp->configs().get(kKindConfig, slug, b);
    if (!va) return fail(va.error());
    if (!vb) return fail(vb.error());
    if (!*va || !*vb) return fail(ErrorKind::not_found, "config '@" + slug + "' has no version " + std::to_string(!*va ? a : b));
    std::string an = "@" + slug + " v" + std::to_string(a), bn = "@" + slug + " v" + std::to_string(b);
    return Json{{"slug", slug}, {"from", a}, {"to", b}, {"ops", json_diff((*va)->document, (*vb)->document)},
                {"text", text_diff((*va)->document, (*vb)->document, an, bn)}};
  };
  auto d = co_await c.st.workers->run(std::move(job));
  if (!d) co_return control_error(d.error());
  co_return json_reply(*d);
}

net::awaitable<std::optional<Reply>> config_rollback(RouteCtx& c) {
  const std::string slug = c.params[0];
  if (!valid_slug(slug)) co_return bad_slug();
  auto in = write_input(c);
  if (auto* r = std::get_if<Reply>(&in)) co_return std::move(*r);
  WriteInput& w = std::get<WriteInput>(in);
  auto to = opt_body_int(w.body, "version");
  if (!to) co_return control_error(to.error());
  if (!*to) co_return error_reply(400, ErrorKind::bad_request, "'version' (the version to roll back to) is required", "invalid_request", "$.version");
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, slug, v = **to, expected = w.expected, who = actor_of(c), msg = message_of(c, &w.body)] {
    return cp->rollback_config(slug, v, expected, who, msg);
  };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return control_error(v.error());
  co_return version_reply(*v);
}

net::awaitable<std::optional<Reply>> config_promote(RouteCtx& c) {
  const std::string slug = c.params[0];
  if (!valid_slug(slug)) co_return bad_slug();
  auto in = write_input(c);
  if (auto* r = std::get_if<Reply>(&in)) co_return std::move(*r);
  WriteInput& w = std::get<WriteInput>(in);
  auto t = w.body.find("to");
  if (t == w.body.end() || !t->is_string())
    co_return error_reply(400, ErrorKind::bad_request, "'to' (the config to promote into) is required", "invalid_request", "$.to");
  std::string to = t->get<std::string>();
  if (!to.empty() && to.front() == '@') to.erase(0, 1);
  if (!valid_slug(to) || to == slug)
    co_return error_reply(400, ErrorKind::bad_request, "'to' must be another config name: [a-z0-9][a-z0-9_-]{0,63}", "invalid_request", "$.to");
  auto ver = opt_body_int(w.body, "version");
  if (!ver) co_return control_error(ver.error());
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, slug, to, v = ver->value_or(0), expected = w.expected, who = actor_of(c), msg = message_of(c, &w.body)] {
    return cp->promote_config(slug, v, to, expected, who, msg);
  };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return control_error(v.error());
  co_return version_reply(*v);
}

// ---- budget definitions -----------------------------------------------------------------------

net::awaitable<std::optional<Reply>> get_budget(RouteCtx& c) {
  std::string name = c.params[0];
  ControlPlane* cp = c.st.control.get();
  BudgetManager* b = c.st.router->budgets();
  Instant now = c.st.router->clock().now();
  auto job = [cp, b, name, now]() -> Result<Json> {
    auto head = cp->configs().head(kKindBudget, name);
    if (!head) return fail(head.error());
    if (!*head || (*head)->deleted()) return fail(ErrorKind::not_found, "no budget '" + name + "'");
    Json out = (*head)->to_json();
    Json ledgers = Json::array();
    if (b)
      for (auto& l : b->snapshot(now).value("budgets", Json::array()))
        if (l.value("name", "") == name) ledgers.push_back(std::move(l));
    out["ledgers"] = std::move(ledgers);
    // The head's document is what runs here (a reset version keeps the document).
    out["live"] = cp->budget_running(name, (*head)->document);
    return out;
  };
  auto r = co_await c.st.workers->run(std::move(job));
  if (!r) co_return control_error(r.error());
  Reply rep = json_reply(*r);
  rep.headers.emplace_back("etag", version_etag((*r)["version"].get<std::int64_t>()));
  co_return rep;
}

net::awaitable<std::optional<Reply>> put_budget(RouteCtx& c) {
  std::string name = c.params[0];
  if (!valid_slug(name)) co_return error_reply(400, ErrorKind::bad_request, "not a valid budget name: [a-z0-9][a-z0-9_-]{0,63}", "invalid_request", "name");
  auto in = write_input(c);
  if (auto* r = std::get_if<Reply>(&in)) co_return std::move(*r);
  WriteInput& w = std::get<WriteInput>(in);
  ControlPlane* cp = c.st.control.get();
  std::string msg = message_of(c);
  auto job = [cp, name, doc = std::move(w.body), expected = w.expected, who = actor_of(c), msg] {
    return cp->put_budget(name, doc, expected, who, msg);
  };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return control_error(v.error());
  co_return version_reply(*v);
}

net::awaitable<std::optional<Reply>> delete_budget(RouteCtx& c) {
  std::string name = c.params[0];
  auto im = if_match(c);
  if (auto* r = std::get_if<Reply>(&im)) co_return std::move(*r);
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, name, expected = std::get<0>(im), who = actor_of(c)] { return cp->delete_budget(name, expected, who); };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return control_error(v.error());
  co_return version_reply(*v);
}

// POST /v1/budgets/{name}/reset: spend reset (a "reset" version, audited; live on this
// instance now and on the others at their next reconcile).
net::awaitable<std::optional<Reply>> reset_budget(RouteCtx& c) {
  std::string name = c.params[0];
  auto im = if_match(c);
  if (auto* r = std::get_if<Reply>(&im)) co_return std::move(*r);
  if (!c.req.body.empty()) {
    auto j = parse_json(c.req.body, ParseLimits{.max_bytes = 1024, .max_depth = 2});
    if (!j || !j->is_object() || !j->empty())
      co_return error_reply(400, ErrorKind::bad_request, "a reset takes no body (or {}); say why in x-modelux-message", "invalid_request");
  }
  ControlPlane* cp = c.st.control.get();
  std::string msg = message_of(c);
  auto job = [cp, name, expected = std::get<0>(im), who = actor_of(c), msg] { return cp->reset_budget(name, expected, who, msg); };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) {
    if (v.error().code == "budget_not_running") co_return error_reply(409, ErrorKind::bad_request, v.error().message, "budget_not_running");
    co_return control_error(v.error());
  }
  co_return version_reply(*v);
}

net::awaitable<std::optional<Reply>> budget_versions(RouteCtx& c) {
  std::string name = c.params[0];
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, name] { return cp->configs().history(kKindBudget, name, 1000); };
  auto rows = co_await c.st.workers->run(std::move(job));
  if (!rows) co_return error_reply(rows.error());
  if (rows->empty()) co_return not_found("no budget '" + name + "'");
  Json arr = Json::array();
  for (const auto& v : *rows) arr.push_back(v.to_json());
  co_return json_reply(Json{{"object", "list"}, {"data", std::move(arr)}});
}

// ---- webhooks -------------------------------------------------------------------------------

namespace {
Json webhook_json(const ObjectVersion& v) {
  Json j = v.document.is_object() ? v.document : Json::object();
  j["id"] = v.name;
  j["object"] = "webhook";
  j["version"] = v.version;
  j["updated"] = v.to_json(false)["created"];
  return j;
}
}  // namespace

net::awaitable<std::optional<Reply>> list_webhooks(RouteCtx& c) {
  ControlPlane* cp = c.st.control.get();
  auto job = [cp] { return cp->configs().heads(kKindWebhook); };
  auto rows = co_await c.st.workers->run(std::move(job));
  if (!rows) co_return error_reply(rows.error());
  Json arr = Json::array();
  for (const auto& v : *rows) arr.push_back(webhook_json(v));
  co_return json_reply(Json{{"object", "list"}, {"data", std::move(arr)}});
}

net::awaitable<std::optional<Reply>> create_webhook(RouteCtx& c) {
  auto body = body_object(c, false);
  if (!body) co_return control_error(body.error());
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, spec = std::move(*body), who = actor_of(c)] { return cp->add_webhook(spec, who); };
  auto made = co_await c.st.workers->run(std::move(job));
  if (!made) co_return control_error(made.error());
  Json out = webhook_json(made->version);
  out["secret"] = made->secret;  // shown once; scrubbed from everything else
  // Not through respond(): the creator must see the secret once (as POST /v1/keys does).
  std::string content_type = "application/json", text = out.dump();
  Headers h{{"etag", version_etag(made->version.version)}};
  co_await c.w.respond(201, std::move(content_type), std::move(text), std::move(h));
  co_return std::nullopt;
}

net::awaitable<std::optional<Reply>> get_webhook(RouteCtx& c) {
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, id = c.params[0]] { return cp->configs().head(kKindWebhook, id); };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return error_reply(v.error());
  if (!*v || (*v)->deleted()) co_return not_found("no webhook '" + c.params[0] + "'");
  Reply r = json_reply(webhook_json(**v));
  r.headers.emplace_back("etag", version_etag((*v)->version));
  co_return r;
}

net::awaitable<std::optional<Reply>> update_webhook(RouteCtx& c) {
  auto in = write_input(c);
  if (auto* r = std::get_if<Reply>(&in)) co_return std::move(*r);
  WriteInput& w = std::get<WriteInput>(in);
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, id = c.params[0], spec = std::move(w.body), expected = w.expected, who = actor_of(c)] {
    return cp->update_webhook(id, spec, expected, who);
  };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return control_error(v.error());
  Reply r = json_reply(webhook_json(*v));
  r.headers.emplace_back("etag", version_etag(v->version));
  co_return r;
}

net::awaitable<std::optional<Reply>> delete_webhook(RouteCtx& c) {
  auto im = if_match(c);
  if (auto* r = std::get_if<Reply>(&im)) co_return std::move(*r);
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, id = c.params[0], expected = std::get<0>(im), who = actor_of(c)] { return cp->remove_webhook(id, expected, who); };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return control_error(v.error());
  co_return json_reply(Json{{"id", c.params[0]}, {"object", "webhook"}, {"deleted", true}, {"version", v->version}});
}

net::awaitable<std::optional<Reply>> webhook_deliveries(RouteCtx& c) {
  std::int64_t limit = 100;
  if (auto l = query_param(c.req.query, "limit")) {
    auto n = to_int(*l, 1, 1000);
    if (!n) co_return error_reply(400, ErrorKind::bad_request, "limit must be an integer 1..1000", "invalid_limit", "limit");
    limit = *n;
  }
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, id = c.params[0], limit]() -> Result<Json> {
    auto head = cp->configs().head(kKindWebhook, id);
    if (!head) return fail(head.error());
    if (!*head) return fail(ErrorKind::not_found, "no webhook '" + id + "'");
    auto rows = cp->deliveries().deliveries(id, static_cast<std::size_t>(limit));
    if (!rows) return fail(rows.error());
    Json arr = Json::array();
    for (const auto& d : *rows) arr.push_back(d.to_json(true));
    return Json{{"object", "list"}, {"data", std::move(arr)}};
  };
  auto r = co_await c.st.workers->run(std::move(job));
  if (!r) co_return control_error(r.error());
  co_return json_reply(*r);
}

net::awaitable<std::optional<Reply>> redeliver_webhook(RouteCtx& c) {
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, hook = c.params[0], id = c.params[1], who = actor_of(c)]() -> Result<WebhookDelivery> {
    auto d = cp->deliveries().delivery(id);
    if (!d) return fail(d.error());
    if (!*d || (*d)->webhook_id != hook) return fail(ErrorKind::not_found, "webhook '" + hook + "' has no delivery '" + id + "'");
    return cp->redeliver(id, who);
  };
  auto d = co_await c.st.workers->run(std::move(job));
  if (!d) co_return control_error(d.error());
  co_return json_reply(d->to_json(), 202);
}

// ---- audit ----------------------------------------------------------------------------------

namespace {
std::optional<WallTime> parse_time(std::string_view s) {
  // RFC 3339 UTC ("2026-01-31T12:00:00Z", "2026-01-31") or unix seconds, up to the year 2200
  // (WallTime counts nanoseconds in 64 bits: it ends in 2262, and a later time used to wrap to
  // a negative one, so `since=2999-01-01` matched everything).
  constexpr std::int64_t kMaxSeconds = 7'258'118'400;  // 2200-01-01T00:00:00Z
  if (s.find_first_not_of("0123456789") == std::string_view::npos) {
    auto n = to_int(s, 0, kMaxSeconds);
    if (!n) return std::nullopt;
    return WallTime{std::chrono::seconds{*n}};
  }
  if (s.size() < 4 || s.substr(0, 4) > "2199") return std::nullopt;
  auto t = parse_key_expiry(s, WallTime{});
  if (!t || s.ends_with('d') || s.ends_with('h') || s.ends_with('m')) return std::nullopt;
  return *t;
}
}  // namespace

net::awaitable<std::optional<Reply>> list_audit(RouteCtx& c) {
  AuditQuery q;
  for (auto [name, dst] : {std::pair{"since", &q.since}, {"until", &q.until}}) {
    if (auto v = query_param(c.req.query, name)) {
      auto t = parse_time(*v);
      if (!t) co_return error_reply(400, ErrorKind::bad_request, std::string("'") + name + "' must be unix seconds or an RFC 3339 UTC time", "invalid_request", name);
      *dst = *t;
    }
  }
  if (auto v = query_param(c.req.query, "actor")) q.actor = *v;
  if (auto v = query_param(c.req.query, "object")) q.object = *v;
  if (auto v = query_param(c.req.query, "action")) q.action = *v;
  if (auto v = query_param(c.req.query, "after")) {
    auto n = to_int(*v, 0, INT64_MAX);
    if (!n) co_return error_reply(400, ErrorKind::bad_request, "'after' must be a sequence number", "invalid_request", "after");
    q.after_seq = *n;
  }
  q.limit = 1000;
  if (auto v = query_param(c.req.query, "limit")) {
    auto n = to_int(*v, 1, 10000);
    if (!n) co_return error_reply(400, ErrorKind::bad_request, "limit must be an integer 1..10000", "invalid_limit", "limit");
    q.limit = static_cast<std::size_t>(*n);
  }
  bool jsonl = false;
  if (auto f = query_param(c.req.query, "format")) {
    if (*f != "json" && *f != "jsonl") co_return error_reply(400, ErrorKind::bad_request, "format must be json or jsonl", "invalid_request", "format");
    jsonl = *f == "jsonl";
  }
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, q] { return cp->audit().query(q); };
  auto rows = co_await c.st.workers->run(std::move(job));
  if (!rows) co_return error_reply(rows.error());
  if (jsonl) {
    Reply r;
    r.content_type = "application/x-ndjson";
    for (const auto& e : *rows) r.body += e.to_json().dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    co_return r;
  }
  Json arr = Json::array();
  for (const auto& e : *rows) arr.push_back(e.to_json());
  co_return json_reply(Json{{"object", "list"}, {"data", std::move(arr)}});
}

net::awaitable<std::optional<Reply>> verify_audit(RouteCtx& c) {
  ControlPlane* cp = c.st.control.get();
  auto job = [cp] { return cp->audit().verify(); };
  auto v = co_await c.st.workers->run(std::move(job));
  if (!v) co_return error_reply(v.error());
  co_return json_reply(v->to_json());
}

// ---- versions of keys and webhooks -------------------------------------------------------------

namespace {
net::awaitable<std::optional<Reply>> object_versions(RouteCtx& c, std::string_view kind) {
  ControlPlane* cp = c.st.control.get();
  auto job = [cp, kind = std::string(kind), name = c.params[0]] { return cp->configs().history(kind, name, 1000); };
  auto rows = co_await c.st.workers->run(std::move(job));
  if (!rows) co_return error_reply(rows.error());
  if (rows->empty()) co_return not_found("no " + std::string(kind) + " '" + c.params[0] + "'");
  Json arr = Json::array();
  for (const auto& v : *rows) arr.push_back(v.to_json());
  co_return json_reply(Json{{"object", "list"}, {"data", std::move(arr)}});
}
}  // namespace

net::awaitable<std::optional<Reply>> key_versions(RouteCtx& c) { return object_versions(c, kKindKey); }
net::awaitable<std::optional<Reply>> webhook_versions(RouteCtx& c) { return object_versions(c, kKindWebhook); }

void append_control_metrics(std::string& out, const ControlPlane& cp) {
  const ControlStats s = cp.stats();
  auto line = [&](const char* name, const char* help, const char* type, std::uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + std::to_string(v) + "\n";
  };
  line("modelux_webhook_events_total", "Webhook events emitted.", "counter", s.events);
  line("modelux_webhook_events_dropped_total", "Webhook events dropped (the control queue was full).", "counter", s.events_dropped);
  line("modelux_webhook_deliveries_total", "Webhook deliveries answered 2xx.", "counter", s.delivered);
  line("modelux_webhook_delivery_failures_total", "Webhook delivery attempts that failed (retried).", "counter", s.delivery_failures);
  line("modelux_webhook_deliveries_failed_total", "Webhook deliveries given up after the retry period.", "counter", s.gave_up);
  line("modelux_config_reconciled_total", "Config versions written by another process and applied here.", "counter", s.reconciled);
}

net::awaitable<std::optional<Reply>> openapi(RouteCtx&) {
  Reply r;
  r.body = std::string(embedded::kOpenApiJson);
  co_return r;
}

}  // namespace modelux::proxy
