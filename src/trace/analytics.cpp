// Trace analytics over a time window: spend by dimension, latency percentiles, error groups,
// failover frequency and the month-end cost forecast.
//
// Sums and counts are done by SQLite over the narrow columns (no JSON parsing). Percentiles
// are nearest-rank over the window's sorted durations: exact, O(n) memory in the window's
// successful attempts, which is fine for the CLI and admin API (not on the hot path).
#include <algorithm>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>
#include <tuple>

#include "trace/store_impl.hpp"

namespace modelux {

using trace_detail::from_us;
using trace_detail::micros;
using trace_detail::sqlite_error;
using trace_detail::Stmt;

std::string_view to_string(SpendDimension d) noexcept {
  switch (d) {
    case SpendDimension::model: return "model";
    case SpendDimension::provider: return "provider";
    case SpendDimension::project: return "project";
    case SpendDimension::tag: return "tag";
    case SpendDimension::end_user: return "user";
    case SpendDimension::config: return "config";
  }
  return "model";
}

std::optional<SpendDimension> spend_dimension_from_string(std::string_view s) noexcept {
  if (s == "model") return SpendDimension::model;
  if (s == "provider") return SpendDimension::provider;
  if (s == "project") return SpendDimension::project;
  if (s == "tag") return SpendDimension::tag;
  if (s == "user" || s == "end_user") return SpendDimension::end_user;
  if (s == "config") return SpendDimension::config;
  return std::nullopt;
}

namespace {

// Every analytics statement binds ?1 = since_us, ?2 = until_us, ?3 = project ('' = any),
// ?4 = bucket size in us (a bucket index is (time_us - since) / ?4; one bucket when unbucketed).
constexpr const char* kTraceProject = " AND (?3 = '' OR project = ?3)";
// The attempts of the window (and project): trace_attempts has no time index, so they are found
// by primary key from the request ids of the window's traces, which the time index of `traces`
// (time, end user, project, request id) lists without reading any trace row. An attempt's
// time_us is its trace's, so this is the same set as "attempt time in the window".
constexpr const char* kAttemptWindow =
    " request_id IN (SELECT request_id FROM traces WHERE time_us >= ?1 AND time_us < ?2 AND (?3 = '' OR project = ?3))";

std::int64_t bucket_us(const AnalyticsQuery& q) {
  return q.bucket.count() > 0 ? q.bucket.count() * 1'000'000 : std::numeric_limits<std::int64_t>::max();
}

Result<void> check_window(const AnalyticsQuery& q) {
  if (q.until <= q.since) return fail(ErrorKind::bad_request, "the window is empty: 'until' must be after 'since'", "until");
  if (q.bucket.count() < 0) return fail(ErrorKind::bad_request, "the bucket must be positive", "bucket");
  if (q.bucket.count() > 0) {
    auto span = std::chrono::duration_cast<std::chrono::seconds>(q.until - q.since).count();
    if ((span + q.bucket.count() - 1) / q.bucket.count() > kMaxSpendBuckets)
      return fail(ErrorKind::bad_request,
                  "the bucket is too small for the window (more than " + std::to_string(kMaxSpendBuckets) + " buckets)",
                  "bucket");
  }
  return {};
}

void bind_query(Stmt& s, const AnalyticsQuery& q, std::int64_t bucket) {
  s.bind(1, micros(q.since));
  s.bind(2, micros(q.until));
  s.bind(3, std::string_view(q.project));
  s.bind(4, bucket);
}

struct BucketRow {
  std::int64_t bucket = 0;
  SpendRow row;
};

// Runs a "bucket, key, requests, in_tok, out_tok, in_usd, out_usd" query.
Result<std::vector<BucketRow>> spend_rows(TraceStore::Impl& impl, const std::string& sql, const AnalyticsQuery& q,
                                          std::int64_t bucket) {
  auto s = impl.prepare(sql);
  if (!s) return fail(s.error());
  bind_query(*s, q, bucket);
  std::vector<BucketRow> rows;
  int rc;
  while ((rc = s->step()) == SQLITE_ROW) {
    BucketRow b;
    b.bucket = s->i64(0);
    SpendRow& r = b.row;
    r.key = std::string(s->text(1));
    if (r.key.empty()) r.key = "(none)";
    r.requests = static_cast<std::uint64_t>(s->i64(2));
    r.input_tokens = s->i64(3);
    r.output_tokens = s->i64(4);
    r.input_usd = s->dbl(5);
    r.output_usd = s->dbl(6);
    rows.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(impl.db, rc, "aggregate spend", impl.path));
  return rows;
}

void sort_rows(std::vector<SpendRow>& rows) {
  std::sort(rows.begin(), rows.end(), [](const SpendRow& a, const SpendRow& b) {
    if (a.total_usd() != b.total_usd()) return a.total_usd() > b.total_usd();
    return a.key < b.key;
  });
}

std::string spend_sql(SpendDimension by) {
  const char* bucket = "(time_us - ?1) / ?4";
  switch (by) {
    case SpendDimension::model:
    case SpendDimension::provider: {
      const char* col = by == SpendDimension::model ? "model" : "provider";
      return std::string("SELECT ") + bucket + ", " + col +
             ", count(DISTINCT request_id), sum(input_tokens), sum(output_tokens), sum(input_usd), sum(output_usd) "
             "FROM trace_attempts WHERE" + kAttemptWindow + " GROUP BY 1, 2";
    }
    case SpendDimension::project:
    case SpendDimension::end_user:
    case SpendDimension::config: {
      const char* col = by == SpendDimension::project ? "project" : by == SpendDimension::config ? "config" : "end_user";
      return std::string("SELECT ") + bucket + ", " + col +
             ", count(*), sum(input_tokens), sum(output_tokens), sum(input_usd), sum(output_usd) "
             "FROM traces WHERE time_us >= ?1 AND time_us < ?2" + kTraceProject + " GROUP BY 1, 2";
    }
    case SpendDimension::tag:
      return "SELECT (g.time_us - ?1) / ?4, g.key || '=' || g.value, count(*), sum(t.input_tokens), sum(t.output_tokens), "
             "sum(t.input_usd), sum(t.output_usd) FROM trace_tags g JOIN traces t ON t.request_id = g.request_id "
             "WHERE g.time_us >= ?1 AND g.time_us < ?2 AND (?3 = '' OR t.project = ?3) GROUP BY 1, 2";
  }
  return {};
}

constexpr const char* kTotalSql =
    "SELECT (time_us - ?1) / ?4, 'total', count(*), coalesce(sum(input_tokens),0), coalesce(sum(output_tokens),0), "
    "coalesce(sum(input_usd),0), coalesce(sum(output_usd),0) FROM traces "
    "WHERE time_us >= ?1 AND time_us < ?2 AND (?3 = '' OR project = ?3) GROUP BY 1";

Nanos nearest_rank(const std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) return Nanos{0};
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return Nanos{sorted[rank - 1]};
}

}  // namespace

Result<SpendReport> TraceStore::spend(SpendDimension by, WallTime since, WallTime until) {
  return spend(by, AnalyticsQuery{since, until, {}, std::chrono::seconds{0}});
}

Result<SpendReport> TraceStore::spend(SpendDimension by, const AnalyticsQuery& q) {
  // An empty window is an answer (nothing spent) for the whole-window report the CLI has
  // always given; only a bucketed report refuses it (it has no buckets to give).
  if (q.bucket.count() != 0 || q.until < q.since)
    if (auto ok = check_window(q); !ok) return fail(ok.error());
  std::lock_guard lock(impl_->mu);
  SpendReport rep;
  rep.by = by;
  rep.since = q.since;
  rep.until = q.until;
  rep.project = q.project;
  rep.bucket = q.bucket;
  const std::string sql = spend_sql(by);
  const std::int64_t whole = std::numeric_limits<std::int64_t>::max();
  auto rows = spend_rows(*impl_, sql, q, whole);
  if (!rows) return fail(rows.error());
  for (auto& b : *rows) rep.rows.push_back(std::move(b.row));
  sort_rows(rep.rows);
  auto total = spend_rows(*impl_, kTotalSql, q, whole);
  if (!total) return fail(total.error());
  if (!total->empty()) rep.total = std::move(total->front().row);
  rep.total.key = "total";
  if (q.bucket.count() > 0) {
    const std::int64_t size = bucket_us(q);
    auto brows = spend_rows(*impl_, sql, q, size);
    if (!brows) return fail(brows.error());
    auto btotals = spend_rows(*impl_, kTotalSql, q, size);
    if (!btotals) return fail(btotals.error());
    std::map<std::int64_t, SpendBucket> by_index;
    for (auto& b : *btotals) {
      SpendBucket& sb = by_index[b.bucket];
      sb.total = std::move(b.row);
      sb.total.key = "total";
    }
    for (auto& b : *brows) by_index[b.bucket].rows.push_back(std::move(b.row));
    for (auto& [index, sb] : by_index) {
      sb.start = q.since + std::chrono::duration_cast<WallTime::duration>(q.bucket * index);
      sort_rows(sb.rows);
      sb.total.key = "total";
      rep.buckets.push_back(std::move(sb));
    }
  }
  return rep;
}

Result<std::vector<LatencyRow>> TraceStore::latency(LatencyDimension by, WallTime since, WallTime until) {
  return latency(by, AnalyticsQuery{since, until, {}, std::chrono::seconds{0}});
}

Result<std::vector<LatencyRow>> TraceStore::latency(LatencyDimension by, const AnalyticsQuery& q) {
  std::lock_guard lock(impl_->mu);
  const char* col = by == LatencyDimension::model ? "model" : "provider";
  auto s = impl_->prepare(std::string("SELECT ") + col +
                          ", duration_ns, ttft_ns FROM trace_attempts WHERE ok = 1 AND" + kAttemptWindow);
  if (!s) return fail(s.error());
  bind_query(*s, q, 1);
  std::map<std::string, std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>>> groups;
  int rc;
  while ((rc = s->step()) == SQLITE_ROW) {
    auto& g = groups[std::string(s->text(0))];
    g.first.push_back(s->i64(1));
    if (s->i64(2) > 0) g.second.push_back(s->i64(2));
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(impl_->db, rc, "aggregate latency", impl_->path));
  std::vector<LatencyRow> out;
  for (auto& [key, g] : groups) {
    std::sort(g.first.begin(), g.first.end());
    std::sort(g.second.begin(), g.second.end());
    LatencyRow r;
    r.key = key.empty() ? "(none)" : key;
    r.count = g.first.size();
    r.p50 = nearest_rank(g.first, 0.50);
    r.p95 = nearest_rank(g.first, 0.95);
    r.p99 = nearest_rank(g.first, 0.99);
    r.ttft_count = g.second.size();
    r.ttft_p50 = nearest_rank(g.second, 0.50);
    r.ttft_p95 = nearest_rank(g.second, 0.95);
    r.ttft_p99 = nearest_rank(g.second, 0.99);
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<ErrorGroup>> TraceStore::error_groups(WallTime since, WallTime until) {
  return error_groups(AnalyticsQuery{since, until, {}, std::chrono::seconds{0}});
}

Result<std::vector<ErrorGroup>> TraceStore::error_groups(const AnalyticsQuery& q) {
  const WallTime since = q.since, until = q.until;
  const std::string project_filter = q.project;
  std::lock_guard lock(impl_->mu);
  // Failed attempts, plus requests that failed before any attempt (budget blocks, no route).
  auto s = impl_->prepare(
      std::string("SELECT outcome, provider, model, count(*), min(time_us), max(time_us), "
                  " (SELECT b.error FROM trace_attempts b WHERE b.ok = 0 AND b.outcome = a.outcome "
                  "  AND b.provider = a.provider AND b.model = a.model AND") +
      kAttemptWindow +
      " ORDER BY b.time_us DESC, b.request_id DESC, b.idx DESC LIMIT 1) "
      "FROM trace_attempts a WHERE ok = 0 AND" +
      kAttemptWindow +
      " GROUP BY 1, 2, 3 "
      "UNION ALL "
      "SELECT error_kind, '', '', count(*), min(time_us), max(time_us), "
      " '' "
      "FROM traces WHERE ok = 0 AND attempts = 0 AND time_us >= ?1 AND time_us < ?2 AND (?3 = '' OR project = ?3) GROUP BY 1");
  if (!s) return fail(s.error());
  s->bind(1, micros(since));
  s->bind(2, micros(until));
  s->bind(3, std::string_view(project_filter));
  std::vector<ErrorGroup> out;
  int rc;
  while ((rc = s->step()) == SQLITE_ROW) {
    ErrorGroup g;
    g.error_class = std::string(s->text(0));
    if (g.error_class.empty()) g.error_class = "unknown";
    g.provider = std::string(s->text(1));
    g.model = std::string(s->text(2));
    g.count = static_cast<std::uint64_t>(s->i64(3));
    g.first = from_us(s->i64(4));
    g.last = from_us(s->i64(5));
    g.sample_message = std::string(s->text(6));
    out.push_back(std::move(g));
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(impl_->db, rc, "group errors", impl_->path));
  // Pre-attempt failures carry their message on the trace row; fetch it for each group.
  for (auto& g : out) {
    if (!g.provider.empty() || !g.model.empty()) continue;
    auto m = impl_->prepare(
        "SELECT json_extract(body, '$.error_message') FROM traces WHERE ok = 0 AND attempts = 0 AND error_kind = ? "
        "AND time_us >= ? AND time_us < ? AND (?4 = '' OR project = ?4) ORDER BY time_us DESC LIMIT 1");
    if (!m) return fail(m.error());
    m->bind(1, std::string_view(g.error_class == "unknown" ? "" : g.error_class));
    m->bind(2, micros(since));
    m->bind(3, micros(until));
    m->bind(4, std::string_view(project_filter));
    if (m->step() == SQLITE_ROW) g.sample_message = std::string(m->text(0));
  }
  std::stable_sort(out.begin(), out.end(), [](const ErrorGroup& a, const ErrorGroup& b) {
    if (a.count != b.count) return a.count > b.count;
    return std::tie(a.error_class, a.provider, a.model) < std::tie(b.error_class, b.provider, b.model);
  });
  return out;
}

Result<FailoverStats> TraceStore::failovers(WallTime since, WallTime until) {
  return failovers(AnalyticsQuery{since, until, {}, std::chrono::seconds{0}});
}

Result<FailoverStats> TraceStore::failovers(const AnalyticsQuery& q) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->prepare(
      "SELECT count(*), coalesce(sum(failed_over), 0), coalesce(sum(failed_over AND ok), 0), "
      "coalesce(sum(ok = 0), 0) FROM traces WHERE time_us >= ?1 AND time_us < ?2 AND (?3 = '' OR project = ?3)");
  if (!s) return fail(s.error());
  s->bind(1, micros(q.since));
  s->bind(2, micros(q.until));
  s->bind(3, std::string_view(q.project));
  int rc = s->step();
  if (rc != SQLITE_ROW) return fail(sqlite_error(impl_->db, rc, "count failovers", impl_->path));
  FailoverStats f;
  f.requests = static_cast<std::uint64_t>(s->i64(0));
  f.failed_over = static_cast<std::uint64_t>(s->i64(1));
  f.rescued = static_cast<std::uint64_t>(s->i64(2));
  f.failed = static_cast<std::uint64_t>(s->i64(3));
  return f;
}

namespace {
WallTime month_start_of(WallTime t, int month_offset) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  tm.tm_mon += month_offset;
  while (tm.tm_mon > 11) {
    tm.tm_mon -= 12;
    ++tm.tm_year;
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}
}  // namespace

Result<CostForecast> TraceStore::forecast(WallTime now, int lookback_days) { return forecast(now, lookback_days, std::string{}); }

Result<CostForecast> TraceStore::forecast(WallTime now, int lookback_days, const std::string& project) {
  CostForecast f;
  f.month_start = month_start_of(now, 0);
  f.month_end = month_start_of(now, 1);
  using Days = std::chrono::duration<double, std::ratio<86400>>;
  f.days_elapsed = Days(now - f.month_start).count();
  f.days_remaining = Days(f.month_end - now).count();
  WallTime lookback_start = std::max(f.month_start, now - std::chrono::hours{24} * std::max(lookback_days, 1));

  std::lock_guard lock(impl_->mu);
  auto sum = [&](WallTime from, WallTime to) -> Result<double> {
    auto s = impl_->prepare(
        "SELECT coalesce(sum(input_usd + output_usd), 0) FROM traces WHERE time_us >= ?1 AND time_us <= ?2 "
        "AND (?3 = '' OR project = ?3)");
    if (!s) return fail(s.error());
    s->bind(1, micros(from));
    s->bind(2, micros(to));
    s->bind(3, std::string_view(project));
    int rc = s->step();
    if (rc != SQLITE_ROW) return fail(sqlite_error(impl_->db, rc, "forecast", impl_->path));
    return s->dbl(0);
  };
  auto mtd = sum(f.month_start, now);
  if (!mtd) return fail(mtd.error());
  auto recent = sum(lookback_start, now);
  if (!recent) return fail(recent.error());
  f.month_to_date_usd = *mtd;
  double window_days = Days(now - lookback_start).count();
  f.daily_rate_usd = window_days > 0 ? *recent / window_days : 0.0;
  f.forecast_usd = f.month_to_date_usd + f.daily_rate_usd * f.days_remaining;
  return f;
}

}  // namespace modelux
