// POST /v1/configs/{slug}/replay: a routing-mode replay (include/modelux/replay.hpp) of the
// proxy's own trace store against a candidate — a stored version of the slug or a config in the
// body — answering the report as JSON (the console's "replay" view; `modelux replay` is the
// CLI's). Routing mode only: it is offline (no provider call, no spend). Admin keys only. The
// replay reads SQLite and simulates every stored request, so it runs on the worker pool.
//
// Threading: the handler parses on the connection's io thread; the replay runs on one worker.
#include <charconv>

#include "modelux/control.hpp"
#include "modelux/replay.hpp"
#include "modelux/trace.hpp"
#include "server/control_plane.hpp"
#include "server/routes.hpp"
#include "trace/trace_json_util.hpp"

namespace modelux::proxy {

namespace {

Reply bad(std::string msg, std::string param) {
  return error_reply(400, ErrorKind::bad_request, std::move(msg), "invalid_" + param, "$." + param);
}

// A replay's own errors: unknown slug / no traces → 404, a candidate that does not compile → 400.
Reply replay_error(const Error& e) {
  if (e.kind == ErrorKind::not_found) return error_reply(404, ErrorKind::not_found, e.message, "not_found");
  if (e.kind == ErrorKind::invalid_config || e.kind == ErrorKind::bad_request)
    return error_reply(400, ErrorKind::bad_request, e.message, "invalid_candidate", e.path);
  return error_reply(e);
}

}  // namespace

net::awaitable<std::optional<Reply>> config_replay(RouteCtx& c) {
  const std::string slug = c.params[0];
  if (!valid_slug(slug))
    co_return error_reply(400, ErrorKind::bad_request, "not a valid config name: [a-z0-9][a-z0-9_-]{0,63}", "invalid_slug", "slug");
  Tracer* tracer = c.st.router->tracer();
  if (!tracer) co_return error_reply(404, ErrorKind::not_found, "tracing is disabled: there are no traces to replay", "not_found");
  auto store = tracer->store();
  const std::string store_path = store ? store->path() : std::string();
  if (store_path.empty() || store_path == ":memory:")
    co_return error_reply(409, ErrorKind::bad_request, "replay reads the trace store file; this proxy's tracing.path is in memory",
                          "no_trace_file");

  auto parsed = parse_json(c.req.body, ParseLimits{.max_bytes = c.st.max_body, .max_depth = 64});
  if (!parsed) co_return error_reply(400, ErrorKind::bad_request, parsed.error().message, "invalid_json");
  const Json& b = *parsed;
  if (!b.is_object()) co_return bad("the body must be a JSON object: {\"version\": n} or {\"candidate\": {...}}", "body");
  for (const auto& [k, v] : b.items())
    if (k != "version" && k != "candidate" && k != "limit" && k != "seed" && k != "since" && k != "until" && k != "guard" && k != "rows")
      co_return bad("unknown field '" + k + "' (known: version, candidate, limit, seed, since, until, guard, rows)", k);
  const bool has_version = b.contains("version"), has_candidate = b.contains("candidate");
  if (has_version == has_candidate) co_return bad("give exactly one of 'version' (a stored version of @" + slug + ") or 'candidate'", "version");
  std::int64_t version = 0;
  if (has_version) {
    if (!b["version"].is_number_integer() || b["version"].get<std::int64_t>() < 1) co_return bad("'version' must be a positive integer", "version");
    version = b["version"].get<std::int64_t>();
  } else if (!b["candidate"].is_object()) {
    co_return bad("'candidate' must be a routing config object", "candidate");
  }

  ReplayOptions o;
  o.store_path = store_path;
  o.slug = slug;
  o.limit = 5000;
  o.keep_rows = false;
  if (auto it = b.find("limit"); it != b.end()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 50000)
      co_return bad("'limit' must be an integer 1..50000 (the newest requests replayed)", "limit");
    o.limit = it->get<std::size_t>();
  }
  if (auto it = b.find("seed"); it != b.end()) {
    if (!it->is_number_unsigned()) co_return bad("'seed' must be a non-negative integer", "seed");
    o.seed = it->get<std::uint64_t>();
  }
  if (auto it = b.find("rows"); it != b.end()) {
    if (!it->is_boolean()) co_return bad("'rows' must be true or false", "rows");
    o.keep_rows = it->get<bool>();
  }
  for (const char* key : {"since", "until"}) {
    auto it = b.find(key);
    if (it == b.end()) continue;
    std::optional<WallTime> t = it->is_string() ? trace_detail::parse_iso_time(it->get<std::string>()) : std::nullopt;
    if (!t) co_return bad(std::string("'") + key + "' must be an ISO 8601 UTC time (2026-01-01T00:00:00Z)", key);
    (std::string_view(key) == "since" ? o.since : o.until) = *t;
  }
  std::string guard;
  if (auto it = b.find("guard"); it != b.end()) {
    if (!it->is_string()) co_return bad("'guard' must be a string such as \"success>=current,p95<=1.1*current\"", "guard");
    guard = it->get<std::string>();
    if (auto g = parse_guard(guard); !g) co_return bad(g.error().message, "guard");
  }
  if (has_candidate) o.candidate = b["candidate"];

  ControlPlane* cp = c.st.control.get();
  auto job = [cp, tracer, o = std::move(o), version, guard]() mutable -> Result<Json> {
    if (version > 0) {
      auto got = cp->configs().get(kKindConfig, o.slug, version);
      if (!got) return fail(got.error());
      if (!*got || (*got)->deleted())
        return fail(ErrorKind::not_found, "config '@" + o.slug + "' has no version " + std::to_string(version));
      o.candidate = (*got)->document;
    }
    // Not Router::config() directly: a routing write on another worker changes it meanwhile.
    o.base = cp->router_config();
    tracer->flush();  // what was submitted so far is replayed too
    auto rep = replay(o);
    if (!rep) return fail(rep.error());
    Json out = rep->to_json();
    if (version > 0) out["candidate_version"] = version;
    if (!guard.empty()) {
      auto v = evaluate_guard(guard, *rep);
      if (!v) return fail(v.error());
      Json checks = Json::array();
      for (const auto& ch : v->checks)
        checks.push_back({{"clause", ch.clause}, {"candidate", ch.candidate}, {"bound", ch.bound}, {"passed", ch.passed}});
      out["guard"] = {{"text", guard}, {"passed", v->passed}, {"checks", std::move(checks)}, {"summary", v->summary()}};
    }
    return out;
  };
  auto res = co_await c.st.workers->run(std::move(job));
  if (!res) co_return replay_error(res.error());
  co_return json_reply(*res);
}

}  // namespace modelux::proxy
