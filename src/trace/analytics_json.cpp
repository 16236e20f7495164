// Analytics reports as JSON: the one rendering behind GET /v1/analytics/* (admin API) and
// `modelux spend --json` (CLI), so the two never drift.
#include <charconv>

#include "modelux/trace.hpp"

namespace modelux {

namespace {

Json usd_row(const SpendRow& r) {
  return Json{{"key", r.key},
              {"requests", r.requests},
              {"input_tokens", r.input_tokens},
              {"output_tokens", r.output_tokens},
              {"input_usd", r.input_usd},
              {"output_usd", r.output_usd},
              {"total_usd", r.total_usd()}};
}

Json rows_json(const std::vector<SpendRow>& rows) {
  Json a = Json::array();
  for (const auto& r : rows) a.push_back(usd_row(r));
  return a;
}

Json project_json(const std::string& p) { return p.empty() ? Json(nullptr) : Json(p); }

double ms(Nanos n) { return static_cast<double>(n.count()) / 1e6; }

Json window_json(const char* object, const AnalyticsQuery& q) {
  return Json{{"object", object}, {"since", format_iso_time(q.since)}, {"until", format_iso_time(q.until)},
              {"project", project_json(q.project)}};
}

}  // namespace

Json analytics_json(const SpendReport& r) {
  Json j{{"object", "spend_report"},
         {"by", std::string(to_string(r.by))},
         {"since", format_iso_time(r.since)},
         {"until", format_iso_time(r.until)},
         {"project", project_json(r.project)},
         {"bucket_s", r.bucket.count() > 0 ? Json(r.bucket.count()) : Json(nullptr)},
         {"rows", rows_json(r.rows)},
         {"total", usd_row(r.total)}};
  if (r.bucket.count() > 0) {
    Json b = Json::array();
    for (const auto& s : r.buckets)
      b.push_back(Json{{"start", format_iso_time(s.start)}, {"rows", rows_json(s.rows)}, {"total", usd_row(s.total)}});
    j["buckets"] = std::move(b);
  }
  return j;
}

Json analytics_json(const std::vector<LatencyRow>& rows, LatencyDimension by, const AnalyticsQuery& q) {
  Json j = window_json("latency_report", q);
  j["by"] = by == LatencyDimension::model ? "model" : "provider";
  Json a = Json::array();
  for (const auto& r : rows)
    a.push_back(Json{{"key", r.key},
                     {"count", r.count},
                     {"p50_ms", ms(r.p50)},
                     {"p95_ms", ms(r.p95)},
                     {"p99_ms", ms(r.p99)},
                     {"ttft_count", r.ttft_count},
                     {"ttft_p50_ms", ms(r.ttft_p50)},
                     {"ttft_p95_ms", ms(r.ttft_p95)},
                     {"ttft_p99_ms", ms(r.ttft_p99)}});
  j["rows"] = std::move(a);
  return j;
}

Json analytics_json(const std::vector<ErrorGroup>& groups, const AnalyticsQuery& q) {
  Json j = window_json("error_groups", q);
  Json a = Json::array();
  for (const auto& g : groups)
    a.push_back(Json{{"error_class", g.error_class},
                     {"provider", g.provider},
                     {"model", g.model},
                     {"count", g.count},
                     {"first", format_iso_time(g.first)},
                     {"last", format_iso_time(g.last)},
                     {"sample_message", g.sample_message}});
  j["groups"] = std::move(a);
  return j;
}

Json analytics_json(const FailoverStats& f, const AnalyticsQuery& q) {
  Json j = window_json("failover_stats", q);
  j["requests"] = f.requests;
  j["failed_over"] = f.failed_over;
  j["rescued"] = f.rescued;
  j["failed"] = f.failed;
  j["failover_rate"] = f.rate();
  return j;
}

Json analytics_json(const CostForecast& f, int lookback_days, const std::string& project) {
  return Json{{"object", "spend_forecast"},
              {"method", "linear: month-to-date spend + (mean daily spend over the last " + std::to_string(lookback_days) +
                             " days of this UTC calendar month) x days remaining in the month"},
              {"lookback_days", lookback_days},
              {"project", project_json(project)},
              {"month_to_date_usd", f.month_to_date_usd},
              {"daily_rate_usd", f.daily_rate_usd},
              {"forecast_usd", f.forecast_usd},
              {"days_elapsed", f.days_elapsed},
              {"days_remaining", f.days_remaining},
              {"period_start", format_iso_time(f.month_start)},
              {"period_end", format_iso_time(f.month_end)}};
}

std::optional<std::chrono::seconds> parse_analytics_duration(std::string_view s) noexcept {
  if (s.empty()) return std::nullopt;
  std::int64_t n = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), n);
  if (r.ec != std::errc{} || r.ptr == s.data() || n <= 0) return std::nullopt;
  std::string_view unit(r.ptr, static_cast<std::size_t>(s.data() + s.size() - r.ptr));
  std::int64_t mult = 0;
  if (unit.empty() || unit == "s") mult = 1;
  else if (unit == "m") mult = 60;
  else if (unit == "h") mult = 3600;
  else if (unit == "d") mult = 86400;
  else if (unit == "w") mult = 7 * 86400;
  else return std::nullopt;
  constexpr std::int64_t kMax = 366LL * 86400;
  if (n > kMax / mult) return std::nullopt;
  return std::chrono::seconds{n * mult};
}

}  // namespace modelux
