// GET /v1/analytics/{spend,latency,errors,failovers,forecast}: the trace store's analytics
// (TraceStore::spend/latency/error_groups/failovers/forecast, rendered by analytics_json(), the
// same code `modelux spend` runs). Parameters are checked on the io thread (a bad one is a 400
// naming it); the SQLite reads run on the worker pool, never on an io thread. Non-admin keys
// see their own project only.
#include <algorithm>
#include <charconv>
#include <variant>

#include "modelux/budget.hpp"
#include "modelux/router.hpp"
#include "modelux/scrub.hpp"
#include "modelux/trace.hpp"
#include "server/query_params.hpp"
#include "server/routes.hpp"
#include "trace/trace_json_util.hpp"

namespace modelux::proxy {

namespace {

Reply bad(std::string msg, const std::string& param) {
  return error_reply(400, ErrorKind::bad_request, std::move(msg), "invalid_" + param, param);
}

struct Params {
  AnalyticsQuery q;
  std::string by;
  int lookback_days = 7;
};

// ISO 8601 UTC, unix seconds, or a duration back from now ("24h").
std::optional<WallTime> time_of(const std::string& v, WallTime now) {
  if (auto t = trace_detail::parse_iso_time(v)) return t;
  long long secs = 0;
  auto r = std::from_chars(v.data(), v.data() + v.size(), secs);
  constexpr long long kYear9999 = 253402300799;  // beyond it the clock's nanoseconds would overflow
  if (r.ec == std::errc{} && r.ptr == v.data() + v.size() && secs >= 0 && secs <= kYear9999) return WallTime{std::chrono::seconds{secs}};
  if (auto d = parse_analytics_duration(v)) return now - std::chrono::duration_cast<WallTime::duration>(*d);
  return std::nullopt;
}

/// `allowed`: the parameters this endpoint takes besides since/until/project.
std::variant<Params, Reply> params_of(RouteCtx& c, std::initializer_list<std::string_view> allowed) {
  Params p;
  const WallTime now = c.st.router->clock().wall_now();
  std::optional<WallTime> since, until;
  std::string bad_key;
  auto kvs = split_query(c.req.query, bad_key);
  if (!kvs) return bad("bad percent-encoding in '" + bad_key + "'", bad_key);
  std::string known = "since, until, project";
  for (auto a : allowed) known += ", " + std::string(a);
  bool project_named = false;
  for (auto& [key, v] : *kvs) {
    const bool extra = std::find(allowed.begin(), allowed.end(), key) != allowed.end();
    if (key == "since" || key == "until") {
      auto t = time_of(v, now);
      if (!t) return bad(key + " must be an ISO 8601 UTC time (2026-01-01T00:00:00Z), unix seconds or a duration back from now (24h)", key);
      (key == "since" ? since : until) = *t;
    } else if (key == "project") {
      if (v.empty()) return bad("project must not be empty", key);
      p.q.project = v;
      project_named = true;
    } else if (extra && key == "by") {
      if (v.empty()) return bad("by must name a dimension", key);
      p.by = v;
    } else if (extra && key == "bucket") {
      auto d = parse_analytics_duration(v);
      if (!d) return bad("bucket must be a duration such as 60s, 5m, 1h, 1d (at most 366d) or whole seconds", key);
      p.q.bucket = *d;
    } else if (extra && key == "lookback_days") {
      int n = 0;
      auto r = std::from_chars(v.data(), v.data() + v.size(), n);
      if (r.ec != std::errc{} || r.ptr != v.data() + v.size() || n < 1 || n > 31) return bad("lookback_days must be an integer 1..31", key);
      p.lookback_days = n;
    } else {
      return bad("unknown parameter '" + key + "' (known: " + known + ")", key);
    }
  }
  p.q.until = until.value_or(now);
  p.q.since = since.value_or(p.q.until - std::chrono::hours{24});
  if (p.q.until <= p.q.since) return bad("until must be after since", "until");
  if (!c.caller.admin()) {
    // A project or viewer key reads its own project; naming another is refused, not ignored.
    if (c.caller.project.empty())
      return error_reply(403, ErrorKind::auth, "this key has no project; only admin keys read fleet-wide analytics", "permission_denied");
    if (project_named && p.q.project != c.caller.project)
      return error_reply(403, ErrorKind::auth, "a '" + std::string(to_string(c.caller.role)) + "' key reads its own project's analytics only",
                         "project_not_allowed", "project");
    p.q.project = c.caller.project;
  }
  return p;
}

// Runs `compute` (TraceStore& → Result<Json>) on the worker pool after a flush.
// `compute` by reference: the caller's named lambda outlives this call (GCC 12 mishandles
// class temporaries in co_await argument lists).
template <class Compute>
net::awaitable<std::optional<Reply>> run_on_store(RouteCtx& c, const Compute& compute) {
  Tracer* t = c.st.router->tracer();
  if (!t) co_return error_reply(404, ErrorKind::not_found, "tracing is disabled: analytics read the trace store", "not_found");
  auto store = t->store();
  auto job = [t, store, compute]() -> Result<std::string> {
    t->flush();  // what was submitted before the request is counted
    Result<Json> j = compute(*store);
    if (!j) return fail(j.error());
    std::string out = j->dump(-1, ' ', false, Json::error_handler_t::replace);
    scrub(out);
    return out;
  };
  auto body = co_await c.st.workers->run(std::move(job));
  if (!body) co_return error_reply(body.error());
  Reply r;
  r.body = std::move(*body);
  co_return r;
}

}  // namespace

net::awaitable<std::optional<Reply>> analytics_spend(RouteCtx& c) {
  auto parsed = params_of(c, {"by", "bucket"});
  if (auto* refused = std::get_if<Reply>(&parsed)) co_return std::move(*refused);
  Params p = std::get<Params>(std::move(parsed));
  auto by = spend_dimension_from_string(p.by.empty() ? "model" : p.by);
  if (!by) co_return bad("unknown dimension '" + p.by + "' (by: model, provider, project, config, user, tag)", "by");
  if (p.q.bucket.count() > 0) {
    auto span = std::chrono::duration_cast<std::chrono::seconds>(p.q.until - p.q.since).count();
    if ((span + p.q.bucket.count() - 1) / p.q.bucket.count() > kMaxSpendBuckets)
      co_return bad("the bucket is too small for the window (more than " + std::to_string(kMaxSpendBuckets) + " buckets)", "bucket");
  }
  auto compute = [d = *by, q = p.q](TraceStore& s) -> Result<Json> {
    auto r = s.spend(d, q);
    if (!r) return fail(r.error());
    return analytics_json(*r);
  };
  co_return co_await run_on_store(c, compute);
}

net::awaitable<std::optional<Reply>> analytics_latency(RouteCtx& c) {
  auto parsed = params_of(c, {"by"});
  if (auto* refused = std::get_if<Reply>(&parsed)) co_return std::move(*refused);
  Params p = std::get<Params>(std::move(parsed));
  if (!p.by.empty() && p.by != "model" && p.by != "provider") co_return bad("unknown dimension '" + p.by + "' (by: model, provider)", "by");
  LatencyDimension d = p.by == "provider" ? LatencyDimension::provider : LatencyDimension::model;
  auto compute = [d, q = p.q](TraceStore& s) -> Result<Json> {
    auto r = s.latency(d, q);
    if (!r) return fail(r.error());
    return analytics_json(*r, d, q);
  };
  co_return co_await run_on_store(c, compute);
}

net::awaitable<std::optional<Reply>> analytics_errors(RouteCtx& c) {
  auto parsed = params_of(c, {});
  if (auto* refused = std::get_if<Reply>(&parsed)) co_return std::move(*refused);
  Params p = std::get<Params>(std::move(parsed));
  auto compute = [q = p.q](TraceStore& s) -> Result<Json> {
    auto r = s.error_groups(q);
    if (!r) return fail(r.error());
    return analytics_json(*r, q);
  };
  co_return co_await run_on_store(c, compute);
}

net::awaitable<std::optional<Reply>> analytics_failovers(RouteCtx& c) {
  auto parsed = params_of(c, {});
  if (auto* refused = std::get_if<Reply>(&parsed)) co_return std::move(*refused);
  Params p = std::get<Params>(std::move(parsed));
  auto compute = [q = p.q](TraceStore& s) -> Result<Json> {
    auto r = s.failovers(q);
    if (!r) return fail(r.error());
    return analytics_json(*r, q);
  };
  co_return co_await run_on_store(c, compute);
}

net::awaitable<std::optional<Reply>> analytics_forecast(RouteCtx& c) {
  // The forecast is "now"-anchored: since/until do not apply; only project and lookback_days.
  if (c.req.query.find("since=") != std::string::npos || c.req.query.find("until=") != std::string::npos)
    co_return bad("the forecast is for the current UTC month; use lookback_days instead of since/until", "since");
  auto parsed = params_of(c, {"lookback_days"});
  if (auto* refused = std::get_if<Reply>(&parsed)) co_return std::move(*refused);
  Params p = std::get<Params>(std::move(parsed));
  WallTime now = c.st.router->clock().wall_now();
  auto compute = [now, days = p.lookback_days, project = p.q.project](TraceStore& s) -> Result<Json> {
    auto r = s.forecast(now, days, project);
    if (!r) return fail(r.error());
    return analytics_json(*r, days, project);
  };
  co_return co_await run_on_store(c, compute);
}

// GET /v1/analytics/budget-forecast?budget=NAME: per ledger of a running budget, a linear
// forecast to the end of its current calendar window (rolling windows have no end: null).
net::awaitable<std::optional<Reply>> analytics_budget_forecast(RouteCtx& c) {
  std::string name, bad_key;
  auto kvs = split_query(c.req.query, bad_key);
  if (!kvs) co_return bad("bad percent-encoding in '" + bad_key + "'", bad_key);
  for (auto& [k, v] : *kvs) {
    if (k != "budget") co_return bad("unknown parameter '" + k + "' (known: budget)", k);
    name = v;
  }
  if (!valid_slug(name)) co_return bad("budget must name a budget: [a-z0-9][a-z0-9_-]{0,63}", "budget");
  if (!c.caller.admin() && c.caller.project.empty())
    co_return error_reply(403, ErrorKind::auth, "this key has no project; only admin keys read fleet-wide budgets", "permission_denied");
  BudgetManager* b = c.st.router->budgets();
  const Instant now = c.st.router->clock().now();
  const WallTime wall = c.st.router->clock().wall_now();
  const bool admin = c.caller.admin();
  const std::string project = c.caller.project;
  auto job = [b, now, wall, admin, project, name]() -> Result<Json> {
    bool running = false;
    if (b)
      for (const auto& s : b->specs()) running = running || s.name == name;
    if (!running) return fail(ErrorKind::not_found, "no budget '" + name + "' is running here");
    const double now_ms = static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count());
    Json rows = Json::array();
    for (const auto& l : b->snapshot(now).value("budgets", Json::array())) {
      if (l.value("name", "") != name) continue;
      if (!admin && l.value("scope", "") != "project:" + project) continue;  // only the caller's project's ledger
      const double spent = l.value("spent_usd", 0.0);
      Json row{{"scope", l.value("scope", "")}, {"window", l.value("window_label", "")}, {"spent_usd", spent},
               {"limit_usd", l.value("limit_usd", Json())}, {"window_end", nullptr}, {"forecast_usd", nullptr},
               {"forecast_percent", nullptr}, {"exhausted_at", nullptr}};
      if (l.contains("window_end_ms") && l.contains("window_start_ms")) {
        const double start = l["window_start_ms"].get<double>(), end = l["window_end_ms"].get<double>();
        const double elapsed = std::max(1.0, now_ms - start), left = std::max(0.0, end - now_ms);
        const double rate = spent / elapsed;  // USD per ms over the window so far
        const double forecast = spent + rate * left;
        row["window_end"] = format_iso_time(WallTime{std::chrono::milliseconds{static_cast<std::int64_t>(end)}});
        row["forecast_usd"] = forecast;
        if (l["limit_usd"].is_number() && l["limit_usd"].get<double>() > 0) {
          const double limit = l["limit_usd"].get<double>();
          row["forecast_percent"] = 100.0 * forecast / limit;
          if (spent >= limit) row["exhausted_at"] = format_iso_time(wall);
          else if (rate > 0 && forecast >= limit)
            row["exhausted_at"] = format_iso_time(wall + std::chrono::milliseconds{static_cast<std::int64_t>((limit - spent) / rate)});
        }
      }
      rows.push_back(std::move(row));
    }
    return Json{{"object", "budget_forecast"},
                {"budget", name},
                {"method", "linear: spend so far in the current window / time elapsed in it x time left to the window's end, "
                           "added to the spend so far; exhausted_at is when that rate reaches limit_usd (rolling windows have no end: null)"},
                {"ledgers", std::move(rows)}};
  };
  auto r = co_await c.st.workers->run(std::move(job));
  if (!r && r.error().kind == ErrorKind::not_found) co_return error_reply(404, ErrorKind::not_found, r.error().message, "not_found");
  if (!r) co_return error_reply(r.error());
  co_return json_reply(*r);
}

}  // namespace modelux::proxy
