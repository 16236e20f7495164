// modelux config file: one JSON document read by the library, the Python package and the
// proxy alike. `${ENV}` references (and `${ENV:-default}`) are expanded in every string, so
// secrets stay out of the file. Provider keys never appear in logs, traces or errors.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "modelux/catalog.hpp"
#include "modelux/health.hpp"

namespace modelux {

/// One upstream provider as configured: where to send, with which keys.
struct ProviderConfig {
  std::string name;                     ///< catalog provider name or a custom one
  std::string family;                   ///< codec family (from the catalog when omitted)
  std::string base_url;                 ///< from the catalog when omitted
  std::vector<std::string> api_keys;    ///< one or more (a key pool)
  std::map<std::string, std::string> options;  ///< family-specific (api_version, region, secret_key...)
};

/// The "budget_backend" section, typed at load (unset optionals keep the library defaults).
struct BudgetBackendConfig {
  std::string sqlite_path;
  std::string redis_url;
  std::string instance_id;
  std::optional<Millis> sync_interval;
  std::optional<std::size_t> max_wildcard_ledgers;
  std::optional<Millis> evict_interval;
  bool fair_share = false;  ///< outage_policy "fair_share" (default "local_view")
};

/// The "tracing" section, typed at load (unset optionals keep the Tracer's defaults).
struct TracingConfig {
  bool enabled = true;
  std::string path;
  bool capture_bodies = false;
  std::vector<std::string> redact_fields;
  std::optional<std::size_t> queue_capacity;
  std::optional<std::size_t> batch_size;
  std::optional<std::size_t> body_cap_bytes;
  std::optional<int> retention_days;
  std::optional<Millis> flush_interval;
};

struct Config {
  /// The "server" section as written (env-expanded). The optional server component
  /// (modelux/server.hpp, ServerConfig::from_json) parses and checks it.
  Json server = Json::object();
  std::vector<ProviderConfig> providers;
  std::map<std::string, Json> routing;  ///< slug (without '@') → routing config
  Catalog catalog;                      ///< built-in catalog merged with the file's "catalog" overrides
  Json budgets = Json::array();         ///< the "budgets" section (budget module parses it)
  /// Where budget spend lives: {"sqlite_path", "redis_url", "instance_id", "sync_interval_ms",
  /// "outage_policy": "local_view"|"fair_share"}. Empty = in memory only.
  Json budget_backend = Json::object();
  Json tracing = Json::object();        ///< the "tracing" section
  /// The "health" section: {"enabled": false} turns breakers, buckets and health-aware
  /// routing off (every target healthy), e.g. for an A/B comparison.
  HealthConfig health;
  BudgetBackendConfig budget_backend_options;  ///< budget_backend, typed (what Router::create uses)
  TracingConfig tracing_options;               ///< tracing, typed (what Router::create uses)
  std::string source_path;              ///< file it came from ("" for embedded / in-memory)

  /// Parses a config document. Every fault names its JSON path ("$.providers.openai.base_url").
  static Result<Config> from_json(const Json& doc);
  /// Reads and parses a file.
  static Result<Config> load_file(const std::string& path);
  /// The embedded defaults (data/defaults.json): every provider pointed at the mock provider
  /// at ${MODELUX_MOCK_URL:-http://127.0.0.1:8089}, with `@production` a fallback chain.
  static Result<Config> embedded_defaults();

  const ProviderConfig* find_provider(std::string_view name) const noexcept;
};

/// Expands `${NAME}` / `${NAME:-default}` in every string of `doc`. An unset variable without
/// default is an error naming the variable and the JSON path.
Result<Json> expand_env(const Json& doc, std::string path = "$");

}  // namespace modelux
