// modelux trace: the non-blocking Tracer (bounded queue, background batch writer), the SQLite
// trace store with its queries and analytics, and the text reports behind `modelux logs` and
// `modelux spend`.
//
// The hot path only calls Tracer::submit(): a lock-free enqueue of one pointer into a bounded
// ring. Serialization, redaction, body capping and every SQLite call happen on the writer
// thread. When the ring is full the newest trace is dropped and counted (spdlog's
// "discard new" policy); the request itself is never slowed down.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "modelux/decision.hpp"

namespace modelux {

class TraceStore;
class OtlpExporter;

// ---- Tracer -----------------------------------------------------------------------------------

struct TracerOptions {
  std::string path{};                      ///< SQLite file; "" or ":memory:" -> in-memory store
  std::size_t queue_capacity = 65536;      ///< rounded up to a power of two
  std::size_t batch_size = 512;            ///< traces per SQLite transaction
  Millis flush_interval{200};              ///< the writer wakes at least this often
  bool capture_bodies = false;             ///< keep request/response bodies (off by default)
  std::size_t body_cap_bytes = 16 * 1024;  ///< bodies longer than this are cut (marked)
  std::vector<std::string> redact_fields{};  ///< JSON keys whose values become "[redacted]"
  int retention_days = 0;                  ///< 0 = keep forever
  Millis busy_timeout{250};                ///< how long a batch write waits on a locked file
  int write_retries = 3;                   ///< failed batch retried this often, then dropped
  /// Optional OpenTelemetry export (modelux/otlp.hpp): the writer offers every trace it wrote
  /// (scrubbed, bodies capped) to it. Null = no export.
  std::shared_ptr<OtlpExporter> otlp{};
};

/// Counters since the tracer was opened. Invariant: submitted == written + dropped + queued
/// (a trace lost to a failing write is counted in `dropped`; `write_errors` counts failed
/// batch writes).
struct TracerStats {
  std::uint64_t submitted = 0;
  std::uint64_t written = 0;
  std::uint64_t dropped = 0;
  std::uint64_t write_errors = 0;
  std::size_t queued = 0;
  std::string last_error;
};

/// Thread-safe. submit() never blocks, never touches disk, and allocates one DecisionTrace
/// node (the moved-in strings are not copied). Everything else runs on one writer thread.
class Tracer {
 public:
  /// Opens (creating if needed) the store at opts.path, applies retention, starts the writer.
  /// A corrupt or locked file gives an Error of kind io.
  static Result<std::unique_ptr<Tracer>> open(TracerOptions opts, const Clock& clock);

  /// Hands a trace to the writer. false = dropped (queue full), counted in stats().dropped.
  bool submit(DecisionTrace&& t) noexcept;
  /// Waits until everything submitted before the call is written (or counted as dropped).
  void flush();
  TracerStats stats() const noexcept;
  /// The store the writer writes to; safe to query from any thread (queries are serialized
  /// with the writer's batches). For an in-memory tracer this is the only way to read it.
  std::shared_ptr<TraceStore> store() const noexcept;
  /// The OTLP exporter the writer feeds (null when export is off).
  std::shared_ptr<OtlpExporter> otlp() const noexcept;
  /// What release_idle() gave back.
  struct Released {
    std::size_t nodes = 0;        ///< recycled trace nodes freed
    std::size_t cache_bytes = 0;  ///< SQLite page cache freed
    std::size_t ring_bytes = 0;   ///< the queue's resident pages given back (the queue was empty)
    std::size_t batch_bytes = 0;  ///< the writer's batch storage freed
  };
  /// Gives back what a burst grew and a quiet tracer does not need: the recycled trace nodes
  /// beyond a few (a burst of N concurrent submits leaves up to N), the store's page cache
  /// (TraceStore::release_memory), the writer's batch storage and, when the queue is empty,
  /// the queue's pages (its positions move to a fresh lap). Safe from any thread, concurrently
  /// with submit() and the writer; waits for the writer's part (at most 2 s). Meant for an idle
  /// process (the proxy's idle trimmer), where it costs nothing later.
  Released release_idle() noexcept;

  /// Flushes everything still queued, then stops the writer.
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  struct Impl;

 private:
  explicit Tracer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// What the tracer applies to a body before it is stored: redacts the values of `fields`
/// (at any depth) when the body is JSON, then cuts it to `cap_bytes` (UTF-8 safe) with a
/// "…[truncated N bytes]" marker. Non-JSON bodies are only capped.
std::string prepare_body(std::string_view body, const std::vector<std::string>& fields, std::size_t cap_bytes);

// ---- Store --------------------------------------------------------------------------------------

/// Filters for TraceStore::query. Empty strings / nullopt mean "any". All set filters must match.
struct TraceQuery {
  std::optional<WallTime> since{};  ///< inclusive
  std::optional<WallTime> until{};  ///< exclusive
  std::vector<std::pair<std::string, std::string>> tags{};  ///< every k=v must be on the trace
  std::string end_user{};
  std::string project{};
  std::string config{};
  std::string model{};   ///< any attempt used this model
  std::string provider{};  ///< any attempt went to this provider
  std::optional<bool> ok{};
  std::size_t limit = 100;  ///< 0 = no limit
  bool newest_first = true;
  /// Keyset pagination (GET /v1/traces): order by (time, request id) instead of insertion, and
  /// when `after` is set return only the traces strictly past that (time_us, request_id) in
  /// this order. Stable under concurrent inserts: a page never repeats or skips a trace that
  /// existed when the first page was read.
  bool keyset = false;
  std::optional<std::pair<std::int64_t, std::string>> after{};
};

enum class SpendDimension : std::uint8_t { model, provider, project, tag, end_user, config };
std::string_view to_string(SpendDimension d) noexcept;
/// "model" | "provider" | "project" | "tag" | "user" (or "end_user") | "config".
std::optional<SpendDimension> spend_dimension_from_string(std::string_view s) noexcept;

struct SpendRow {
  std::string key;                ///< "gpt-4o-mini", "openai", "acme", "env=prod", "user-42"; "(none)"
  std::uint64_t requests = 0;     ///< distinct requests that spent under this key
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  double input_usd = 0;
  double output_usd = 0;
  double total_usd() const noexcept { return input_usd + output_usd; }
};

/// Spend in [since, until). model/provider rows sum each attempt's own cost under the attempt's
/// target (a failed attempt that billed counts); project/user/tag rows sum whole-request cost.
/// `total` is the window's spend counted once per request, so for tags (a request may carry
/// several) the rows may add up to more than the total.
/// One time bucket of a bucketed spend report: [start, start + bucket).
struct SpendBucket {
  WallTime start{};
  std::vector<SpendRow> rows;  ///< most expensive first; keys with no spend in the bucket absent
  SpendRow total;              ///< the bucket's spend counted once per request
};

struct SpendReport {
  SpendDimension by = SpendDimension::model;
  WallTime since{}, until{};
  std::vector<SpendRow> rows;  ///< most expensive first
  SpendRow total;
  std::string project;               ///< the project filter ("" = every project)
  std::chrono::seconds bucket{0};    ///< 0 = not bucketed
  std::vector<SpendBucket> buckets;  ///< bucketed only: every non-empty bucket, oldest first
};

/// What the analytics read: a window, optionally one project, optionally time buckets.
struct AnalyticsQuery {
  WallTime since{}, until{};
  std::string project{};            ///< "" = every project
  std::chrono::seconds bucket{0};   ///< spend only; 0 = one total per key
};
/// At most this many buckets per report (a 1 s bucket over a year is refused, bad_request).
inline constexpr std::int64_t kMaxSpendBuckets = 10000;

enum class LatencyDimension : std::uint8_t { model, provider };
/// Latency of successful attempts in a window (nearest-rank percentiles).
struct LatencyRow {
  std::string key;
  std::uint64_t count = 0;
  Nanos p50{0}, p95{0}, p99{0};
  Nanos ttft_p50{0};  ///< over attempts that streamed (ttft > 0); 0 when none did
  Nanos ttft_p95{0}, ttft_p99{0};
  std::uint64_t ttft_count = 0;  ///< attempts with a measured time to first token
};

/// Failed attempts grouped by outcome class, provider and model.
struct ErrorGroup {
  std::string error_class;  ///< "rate_limited", "timeout", ...
  std::string provider;
  std::string model;
  std::uint64_t count = 0;
  WallTime first{}, last{};
  std::string sample_message;  ///< the most recent message
};

/// How often requests needed more than their first target.
struct FailoverStats {
  std::uint64_t requests = 0;
  std::uint64_t failed_over = 0;  ///< a later attempt started after an earlier one failed
  std::uint64_t rescued = 0;      ///< failed over and still served
  std::uint64_t failed = 0;       ///< requests that ended in an error
  double rate() const noexcept { return requests ? static_cast<double>(failed_over) / requests : 0.0; }
};

/// Month-end forecast: month-to-date spend plus the recent daily rate times the days left.
struct CostForecast {
  double month_to_date_usd = 0;
  double daily_rate_usd = 0;  ///< mean over the lookback window (clipped to the month's start)
  double forecast_usd = 0;
  double days_elapsed = 0;    ///< in the current UTC month
  double days_remaining = 0;
  WallTime month_start{}, month_end{};
};

/// Counters the tracer persists with every batch (so `modelux logs` can show drops).
struct TraceCounters {
  std::uint64_t written = 0;
  std::uint64_t dropped = 0;
  std::uint64_t write_errors = 0;
  std::optional<WallTime> updated;
  std::uint64_t stored = 0;  ///< rows currently in the store
};

/// One attempt as `TraceStore::scan` reads it (the trace_attempts columns).
struct AttemptSummary {
  std::string model;
  std::string provider;
  bool ok = false;
  std::string outcome;  ///< "ok" or an ErrorKind name
  int status = 0;
  Nanos duration{0};
  Nanos ttft{0};
};

/// A trace's routing inputs and outcome, read from the store's columns and side tables without
/// parsing the JSON body (what replay reads: 50,000 of these take a fraction of a second).
struct TraceSummary {
  std::string request_id;
  WallTime time{};
  std::string config;  ///< "@production" or the model asked for
  std::string project, org, end_user, api_key_id;
  std::vector<std::pair<std::string, std::string>> tags;
  bool stream = false;
  std::int64_t input_tokens = 0;      ///< billed, all attempts
  std::int64_t output_tokens = 0;
  std::int64_t est_input_tokens = 0;  ///< estimate before routing (failed requests); 0 = unknown
  std::int64_t max_tokens = 0;
  bool ok = false;
  std::string served_model, served_provider, error_kind;
  Nanos total{0};
  Nanos ttft{0};
  double cost_usd = 0;
  bool failed_over = false;
  bool downgraded = false;  ///< a budget downgrade rerouted it
  std::vector<AttemptSummary> attempts;
};

/// A SQLite trace store (WAL). Thread-safe: calls are serialized on one connection.
/// Open errors (missing file in read-only mode, a file that is not a database, a file locked
/// by another process) are Errors of kind io with a message naming the file and the cause.
class TraceStore {
 public:
  enum class Mode : std::uint8_t { read_only, read_write };
  /// "" or ":memory:" opens a private in-memory store (read_write only).
  static Result<std::shared_ptr<TraceStore>> open(const std::string& path, Mode mode = Mode::read_write,
                                                  Millis busy_timeout = Millis{250});
  ~TraceStore();
  TraceStore(const TraceStore&) = delete;
  TraceStore& operator=(const TraceStore&) = delete;

  /// Writes traces in one transaction (a trace with an existing request id replaces it).
  Result<void> write(const std::vector<DecisionTrace>& traces);
  /// Writes a batch and bumps the persisted counters in the same transaction.
  Result<void> write_batch(const std::vector<DecisionTrace>& traces, std::uint64_t written_delta,
                           std::uint64_t dropped_delta, std::uint64_t write_errors_delta, WallTime now);
  /// Bumps the persisted counters alone (drops or write errors with nothing written).
  Result<void> add_counters(std::uint64_t written_delta, std::uint64_t dropped_delta,
                            std::uint64_t write_errors_delta, WallTime now);
  /// Bytes of page cache the connection holds (sqlite3_db_status, SQLITE_DBSTATUS_CACHE_USED).
  std::size_t cache_bytes() const noexcept;
  /// Frees the connection's page cache (sqlite3_db_release_memory; for an in-memory store that
  /// cache is the data and stays) and the insert buffer; returns the cache bytes freed.
  std::size_t release_memory() noexcept;

  Result<std::optional<DecisionTrace>> get(const std::string& request_id);
  Result<std::vector<DecisionTrace>> query(const TraceQuery& q);
  Result<std::uint64_t> count(const TraceQuery& q);
  /// Calls `fn` for every trace matching `q` (order and limit as in query()) with its summary.
  /// Reads columns only (older files, opened read-only before migration, fall back to the JSON
  /// body for the columns they lack).
  Result<std::uint64_t> scan(const TraceQuery& q, const std::function<void(TraceSummary&&)>& fn);
  /// Distinct `config` values with their trace counts, most traced first.
  Result<std::vector<std::pair<std::string, std::uint64_t>>> configs();

  Result<SpendReport> spend(SpendDimension by, WallTime since, WallTime until);
  Result<std::vector<LatencyRow>> latency(LatencyDimension by, WallTime since, WallTime until);
  Result<std::vector<ErrorGroup>> error_groups(WallTime since, WallTime until);
  Result<FailoverStats> failovers(WallTime since, WallTime until);
  /// Forecast for the UTC calendar month containing `now`; the daily rate is measured over
  /// the last `lookback_days` (default 7) of this month.
  Result<CostForecast> forecast(WallTime now, int lookback_days = 7);

  // The same analytics with a project filter and (spend) time buckets: what the REST admin API
  // (/v1/analytics/*) and `modelux spend --bucket` both call. A bucket that would give more
  // than kMaxSpendBuckets, or until <= since, is a bad_request.
  Result<SpendReport> spend(SpendDimension by, const AnalyticsQuery& q);
  Result<std::vector<LatencyRow>> latency(LatencyDimension by, const AnalyticsQuery& q);
  Result<std::vector<ErrorGroup>> error_groups(const AnalyticsQuery& q);
  Result<FailoverStats> failovers(const AnalyticsQuery& q);
  Result<CostForecast> forecast(WallTime now, int lookback_days, const std::string& project);

  /// Deletes traces older than now - days. Returns how many were deleted. days <= 0: none.
  Result<std::uint64_t> apply_retention(int days, WallTime now);
  /// One JSON object per line (DecisionTrace::to_json). Returns the number of traces written.
  Result<std::uint64_t> export_jsonl(const TraceQuery& q, std::ostream& out);
  /// One row per trace with a header line (RFC 4180 quoting). Returns the number of rows.
  Result<std::uint64_t> export_csv(const TraceQuery& q, std::ostream& out);

  Result<TraceCounters> counters();
  const std::string& path() const noexcept;

  struct Impl;

 private:
  explicit TraceStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// "2026-01-01T00:00:00.123456Z" (UTC, microseconds), as traces store their timestamps.
std::string format_iso_time(WallTime t);

}  // namespace modelux

namespace modelux {

// ---- Analytics as JSON (one rendering for `GET /v1/analytics/*` and `modelux spend --json`) ---

/// {"object":"spend_report","by","since","until","project"|null,"bucket_s"|null,"rows":[...],
///  "total":{...},"buckets":[{"start","rows","total"}] (bucketed only)}; money in USD.
Json analytics_json(const SpendReport& r);
/// {"object":"latency_report","by","since","until","project"|null,"rows":[{"key","count",
///  "p50_ms","p95_ms","p99_ms","ttft_count","ttft_p50_ms","ttft_p95_ms","ttft_p99_ms"}]}.
Json analytics_json(const std::vector<LatencyRow>& rows, LatencyDimension by, const AnalyticsQuery& q);
/// {"object":"error_groups","since","until","project"|null,"groups":[{"error_class","provider",
///  "model","count","first","last","sample_message"}]} (messages scrubbed by the caller).
Json analytics_json(const std::vector<ErrorGroup>& groups, const AnalyticsQuery& q);
/// {"object":"failover_stats","since","until","project"|null,"requests","failed_over","rescued",
///  "failed","failover_rate"}.
Json analytics_json(const FailoverStats& f, const AnalyticsQuery& q);
/// {"object":"spend_forecast","method":"linear ...","lookback_days",..."month_to_date_usd",
///  "daily_rate_usd","forecast_usd","days_elapsed","days_remaining","period_start","period_end"}.
Json analytics_json(const CostForecast& f, int lookback_days, const std::string& project);
/// "1h", "15m", "90s", "7d", "2w" or plain seconds ("3600") → seconds; nullopt when malformed,
/// zero, or over 366 days. What --bucket / ?bucket= and the window lengths accept.
std::optional<std::chrono::seconds> parse_analytics_duration(std::string_view s) noexcept;

}  // namespace modelux
