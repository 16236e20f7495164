// modelux server (optional component, CMake target modelux::server): the OpenAI-compatible
// HTTP proxy in front of a Router, with modelux API keys and the admin API. C++ and Python
// apps can start it in-process; `modelux serve` is a thin wrapper around Proxy::start.
//   POST /v1/chat/completions   (JSON or SSE; model = catalog model or "@slug")   project, admin
//   GET  /v1/models   GET /v1/configs   GET /v1/configs/{slug}   GET /v1/health     any key
//   GET  /v1/traces?limit=N   GET /v1/traces/{request_id}   GET /v1/budgets  any key, own project
//   PUT  /v1/configs/{slug}   POST|GET /v1/keys   GET|DELETE /v1/keys/{id}            admin
//   POST /v1/messages   POST /v1/messages/count_tokens  (Anthropic Messages API)      project, admin
//   GET  /v1/kept/{request_id}  (a kept response; its own key, its project, or admin)  any key
//   GET  /healthz   GET /readyz   GET /metrics   GET /openapi.json                     no key
//   versions, diff, rollback, promote, budgets, webhooks, audit: docs/control-plane.md
// Roles are checked by the route table from the request head, before the body is read.
#pragma once

#include <memory>

#include <optional>

#include "modelux/keys.hpp"
#include "modelux/router.hpp"

namespace modelux {

namespace http_server {
class Server;
}

/// A modelux API key from the config file, and who it stands for.
struct ApiKeyConfig {
  std::string key;      ///< the secret ("mlx-..."); any string of 8+ characters
  std::string name;     ///< id for traces and budgets (never the key itself)
  std::string project;
  std::string org;
  KeyRole role = KeyRole::project;  ///< "admin" | "project" (default) | "viewer"
  KeyLimits limits;                 ///< models, configs, rpm, max_concurrency
  std::optional<WallTime> expires;
};

/// Limits on what a request may carry, checked at the edge (400 beyond them).
struct EdgeLimits {
  std::size_t max_tags = 64;          ///< x-modelux-tags entries + string metadata keys
  std::size_t max_tag_key_bytes = 64;
  std::size_t max_tag_value_bytes = 256;
};

/// Kept responses (`server.keep_responses`): where a request that opted in
/// (`x-modelux-keep: 1` or a routing config's `keep_responses`) stores its completed answer
/// when the client hung up, for `GET /v1/kept/{request_id}`.
struct KeepConfig {
  /// SQLite file. Unset: "kept.db" next to tracing.path when that is a file, else in memory.
  /// ":memory:" forces memory.
  std::string path;
  Millis default_ttl{3'600'000};  ///< `default_ttl_s`: TTL for `x-modelux-keep: 1`
  Millis max_ttl{7 * 86'400'000LL};  ///< `max_ttl_s`: no request or config keeps longer
};

/// The config file's "server.control" section: the control store (versions, audit log,
/// webhooks; docs/control-plane.md).
struct ControlConfig {
  /// SQLite file of the control store. Unset: "control.db" next to tracing.path when that is a
  /// file, else in memory (versions then last until exit and the file seeds every start).
  std::string db;
  /// A fleet: the PostgreSQL database ("postgres://user:pass@host:5432/db", `${ENV}` welcome)
  /// that every instance shares for configs and versions, the audit log, webhooks and managed
  /// keys (unless server.keys_db names another store). Overrides `db`. A change on any instance
  /// is live on every other within a second (LISTEN/NOTIFY; docs/control-plane.md "Fleet").
  std::string postgres_url;
  /// How often writes by another process are picked up; with PostgreSQL, how often the shared
  /// change counter is compared (the heal for a missed notification).
  std::int64_t reconcile_ms = 1000;
  std::int64_t webhook_retry_base_ms = 5000;    ///< first retry delay; doubles per attempt (max 6 h)
  std::int64_t webhook_give_up_ms = 86'400'000; ///< a delivery is abandoned a day after its event
  std::int64_t webhook_timeout_ms = 10'000;     ///< per delivery attempt
  /// spend.anomaly: spend per budget ledger in buckets of bucket_s; fires when a bucket is above
  /// factor x the mean of the previous (up to baseline_buckets) buckets and above min_usd, once
  /// min_buckets of history exist.
  double anomaly_bucket_s = 60;
  std::int64_t anomaly_baseline_buckets = 60;
  std::int64_t anomaly_min_buckets = 10;
  double anomaly_factor = 5;
  double anomaly_min_usd = 1;
};

/// The config file's "server" section.
struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::vector<ApiKeyConfig> api_keys;   ///< empty (and no managed keys) = no auth, loopback only
  /// SQLite file (or a postgres:// URL) of managed keys (POST /v1/keys, `modelux keys`). Unset:
  /// control.postgres_url when set (a fleet shares its keys), else "keys.db" next to
  /// tracing.path when that is a file, else in memory (managed keys then last until exit).
  std::string keys_db;
  /// Budget alerts are logged (a structured `budget.alert` line on stderr) and, when set,
  /// POSTed as JSON to this URL (http:// or https://), fire and forget, never delaying a
  /// request.
  std::string alert_webhook_url;
  std::size_t max_body_bytes = 4 * 1024 * 1024;
  /// Request-body bytes buffered at once over all connections; a request that would pass it
  /// gets 503 + retry-after before its body is read.
  std::size_t max_inflight_body_bytes = 64 * 1024 * 1024;
  /// On SIGTERM/SIGINT (Proxy::drain): how long requests in flight may take to finish.
  Millis drain_timeout{10'000};
  int threads = 1;
  int worker_threads = 2;               ///< pool for trace reads, config compiles, snapshots
  EdgeLimits limits;
  KeepConfig keep_responses;
  ControlConfig control;

  /// Parses `Config::server`; every fault names its JSON path ("$.server.port").
  static Result<ServerConfig> from_json(const Json& section);
  /// Where managed keys live for `config` (see keys_db): a file, a postgres:// URL, or "" = in memory.
  static std::string keys_db_path(const Config& config, const ServerConfig& server);
  /// Where the proxy keeps budget spend when `budget_backend` names no store: `budgets.db` next
  /// to tracing.path (like keys.db); "" when the config has no budgets, names a store
  /// (sqlite_path or redis_url) itself, or keeps traces in memory (the proxy then warns that
  /// spend resets on restart).
  static std::string default_budgets_db_path(const Config& config);
  /// Where kept responses live for `config` (see KeepConfig::path); "" = in memory.
  static std::string kept_db_path(const Config& config, const ServerConfig& server);
  /// Where the control store lives for `config` (ControlConfig::postgres_url, else
  /// ControlConfig::db): a file, a postgres:// URL, or "" = in memory.
  static std::string control_db_path(const Config& config, const ServerConfig& server);
};

}  // namespace modelux

namespace modelux::proxy {

struct ProxyOptions {
  std::string host;   ///< overrides config.server.host when set
  int port = -1;      ///< overrides config.server.port when >= 0 (0 = pick a free port)
  int threads = 0;    ///< overrides config.server.threads when > 0
  /// The config file wins once: its routing configs and budgets become new versions where they
  /// differ from the control store's (`modelux serve --reseed`). Otherwise the store wins.
  bool reseed = false;
};

class Proxy {
 public:
  static Result<std::unique_ptr<Proxy>> start(Config config, ProxyOptions opts = {});
  ~Proxy();
  int port() const noexcept;
  Router& router() noexcept;
  /// Graceful shutdown: stops accepting (new connections are refused, /readyz answers 503),
  /// lets the requests in flight finish for up to `timeout` (config server.drain_timeout_ms
  /// when nullopt), then flushes traces and budgets. True when every request finished in
  /// time. Call stop() (or destroy) afterwards. Thread-safe; not from an io thread.
  bool drain(std::optional<Millis> timeout = std::nullopt);
  void stop();

  struct State;

 private:
  Proxy() = default;
  std::shared_ptr<State> state_;
  std::unique_ptr<http_server::Server> server_;
};

}  // namespace modelux::proxy
