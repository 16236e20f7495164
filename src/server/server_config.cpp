// The "server" section of the config file: listen address, threads, limits and API keys.
#include <algorithm>

#include "modelux/server.hpp"

namespace modelux {

namespace {

Result<std::string> opt_str(const Json& o, const char* key, const std::string& path, std::string def = {}) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return def;
  if (!it->is_string()) return fail(ErrorKind::invalid_config, std::string("'") + key + "' must be a string", path + "." + key);
  return it->get<std::string>();
}

Result<std::vector<std::string>> opt_str_array(const Json& o, const char* key, const std::string& path) {
  std::vector<std::string> out;
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return out;
  if (!it->is_array()) return fail(ErrorKind::invalid_config, std::string("'") + key + "' must be an array of strings", path + "." + key);
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& v = (*it)[i];
    if (!v.is_string() || v.get<std::string>().empty())
      return fail(ErrorKind::invalid_config, std::string("'") + key + "' must hold non-empty strings",
                  path + "." + key + "[" + std::to_string(i) + "]");
    std::string s = v.get<std::string>();
    if (std::string_view(key) == "configs" && s.front() == '@') s.erase(0, 1);
    out.push_back(std::move(s));
  }
  return out;
}

Result<int> opt_count(const Json& o, const char* key, const std::string& path) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return 0;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 0 || it->get<std::int64_t>() > 1000000)
    return fail(ErrorKind::invalid_config, std::string("'") + key + "' must be an integer 0..1000000 (0 = unlimited)", path + "." + key);
  return it->get<int>();
}

// One key object. Unknown fields are errors (a typo in "role" must not leave a key with more
// rights than meant).
Result<ApiKeyConfig> parse_key_object(const Json& k, const std::string& path) {
  static constexpr std::string_view kFields[] = {"key", "name", "project", "org", "role", "models", "configs",
                                                 "rpm", "max_concurrency", "expires"};
  for (auto it = k.begin(); it != k.end(); ++it)
    if (std::find(std::begin(kFields), std::end(kFields), it.key()) == std::end(kFields))
      return fail(ErrorKind::invalid_config, "unknown field '" + it.key() + "' in an API key", path + "." + it.key());
  ApiKeyConfig ak;
  auto key = opt_str(k, "key", path);
  auto name = opt_str(k, "name", path);
  auto project = opt_str(k, "project", path);
  auto org = opt_str(k, "org", path);
  auto role = opt_str(k, "role", path, "project");
  for (auto* r : {&key, &name, &project, &org, &role})
    if (!*r) return fail(r->error());
  ak.key = *key;
  ak.name = *name;
  ak.project = *project;
  ak.org = *org;
  auto kr = key_role_from_string(*role);
  if (!kr) return fail(ErrorKind::invalid_config, "'role' must be \"admin\", \"project\" or \"viewer\"", path + ".role");
  ak.role = *kr;
  auto models = opt_str_array(k, "models", path);
  if (!models) return fail(models.error());
  auto configs = opt_str_array(k, "configs", path);
  if (!configs) return fail(configs.error());
  auto rpm = opt_count(k, "rpm", path);
  if (!rpm) return fail(rpm.error());
  auto mc = opt_count(k, "max_concurrency", path);
  if (!mc) return fail(mc.error());
  ak.limits = KeyLimits{std::move(*models), std::move(*configs), *rpm, *mc};
  auto exp = opt_str(k, "expires", path);
  if (!exp) return fail(exp.error());
  if (!exp->empty()) {
    auto t = parse_key_expiry(*exp, std::chrono::system_clock::now());
    if (!t) return fail(ErrorKind::invalid_config, t.error().message, path + ".expires");
    ak.expires = *t;
  }
  return ak;
}

}  // namespace

Result<ServerConfig> ServerConfig::from_json(const Json& s) {
  ServerConfig out;
  if (s.is_null()) return out;
  if (!s.is_object()) return fail(ErrorKind::invalid_config, "'server' must be an object", "$.server");
  static constexpr std::string_view kKeys[] = {"host", "port", "threads", "max_body_bytes", "api_keys", "keys_db",
                                               "worker_threads", "limits", "max_inflight_body_bytes", "drain_timeout_ms",
                                               "alert_webhook_url", "keep_responses", "control"};
  for (auto it = s.begin(); it != s.end(); ++it)
    if (std::find(std::begin(kKeys), std::end(kKeys), it.key()) == std::end(kKeys))
      return fail(ErrorKind::invalid_config, "unknown key '" + it.key() + "' in server", "$.server." + it.key());
  auto host = opt_str(s, "host", "$.server", out.host);
  if (!host) return fail(host.error());
  out.host = *host;
  if (auto p = s.find("port"); p != s.end()) {
    if (!p->is_number_integer() || p->get<int>() < 0 || p->get<int>() > 65535)
      return fail(ErrorKind::invalid_config, "'port' must be an integer 0..65535", "$.server.port");
    out.port = p->get<int>();
  }
  if (auto t = s.find("threads"); t != s.end()) {
    if (!t->is_number_integer() || t->get<int>() < 1 || t->get<int>() > 256)
      return fail(ErrorKind::invalid_config, "'threads' must be an integer 1..256", "$.server.threads");
    out.threads = t->get<int>();
  }
  if (auto m = s.find("max_body_bytes"); m != s.end()) {
    if (!m->is_number_integer() || m->get<std::int64_t>() < 1024)
      return fail(ErrorKind::invalid_config, "'max_body_bytes' must be an integer >= 1024", "$.server.max_body_bytes");
    out.max_body_bytes = m->get<std::size_t>();
  }
  if (auto m = s.find("max_inflight_body_bytes"); m != s.end()) {
    if (!m->is_number_integer() || m->get<std::int64_t>() < 0)
      return fail(ErrorKind::invalid_config, "'max_inflight_body_bytes' must be a non-negative integer (0 = no cap)",
                  "$.server.max_inflight_body_bytes");
    out.max_inflight_body_bytes = m->get<std::size_t>();
  }
  if (auto d = s.find("drain_timeout_ms"); d != s.end()) {
    if (!d->is_number_integer() || d->get<std::int64_t>() < 0 || d->get<std::int64_t>() > 3'600'000)
      return fail(ErrorKind::invalid_config, "'drain_timeout_ms' must be an integer 0..3600000", "$.server.drain_timeout_ms");
    out.drain_timeout = Millis{d->get<std::int64_t>()};
  }
  if (auto keys = s.find("api_keys"); keys != s.end()) {
    if (!keys->is_array()) return fail(ErrorKind::invalid_config, "'api_keys' must be an array", "$.server.api_keys");
    for (std::size_t i = 0; i < keys->size(); ++i) {
      const Json& k = (*keys)[i];
      std::string path = "$.server.api_keys[" + std::to_string(i) + "]";
      ApiKeyConfig ak;
      if (k.is_string()) {
        ak.key = k.get<std::string>();
      } else if (k.is_object()) {
        auto parsed = parse_key_object(k, path);
        if (!parsed) return fail(parsed.error());
        ak = std::move(*parsed);
      } else {
        return fail(ErrorKind::invalid_config, "an API key must be a string or an object", path);
      }
      if (ak.key.size() < 8) return fail(ErrorKind::invalid_config, "API key too short (min 8 characters)", path);
      if (ak.name.empty()) ak.name = "key" + std::to_string(i);
      out.api_keys.push_back(std::move(ak));
    }
  }
  if (auto kd = opt_str(s, "keys_db", "$.server"); !kd) return fail(kd.error());
  else out.keys_db = *kd;
  if (auto wh = opt_str(s, "alert_webhook_url", "$.server"); !wh) return fail(wh.error());
  else if (!wh->empty() && !wh->starts_with("http://") && !wh->starts_with("https://"))
    return fail(ErrorKind::invalid_config, "'alert_webhook_url' must be an http:// or https:// URL", "$.server.alert_webhook_url");
  else out.alert_webhook_url = *wh;
  if (auto w = s.find("worker_threads"); w != s.end()) {
    if (!w->is_number_integer() || w->get<int>() < 1 || w->get<int>() > 64)
      return fail(ErrorKind::invalid_config, "'worker_threads' must be an integer 1..64", "$.server.worker_threads");
    out.worker_threads = w->get<int>();
  }
  if (auto l = s.find("limits"); l != s.end()) {
    if (!l->is_object()) return fail(ErrorKind::invalid_config, "'limits' must be an object", "$.server.limits");
    for (auto it = l->begin(); it != l->end(); ++it) {
      std::string path = "$.server.limits." + it.key();
      std::size_t* dst = it.key() == "max_tags"              ? &out.limits.max_tags
                         : it.key() == "max_tag_key_bytes"   ? &out.limits.max_tag_key_bytes
                         : it.key() == "max_tag_value_bytes" ? &out.limits.max_tag_value_bytes
                                                             : nullptr;
      if (!dst) return fail(ErrorKind::invalid_config, "unknown key '" + it.key() + "' in server.limits", path);
      if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 1 << 20)
        return fail(ErrorKind::invalid_config, "'" + it.key() + "' must be an integer 1..1048576", path);
      *dst = it->get<std::size_t>();
    }
  }
  if (auto k = s.find("keep_responses"); k != s.end()) {
    if (!k->is_object()) return fail(ErrorKind::invalid_config, "'keep_responses' must be an object", "$.server.keep_responses");
    for (auto it = k->begin(); it != k->end(); ++it) {
      std::string path = "$.server.keep_responses." + it.key();
      if (it.key() == "path") {
        if (!it->is_string()) return fail(ErrorKind::invalid_config, "'path' must be a string", path);
        out.keep_responses.path = it->get<std::string>();
      } else if (it.key() == "default_ttl_s" || it.key() == "max_ttl_s") {
        if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 365.0 * 86400)
          return fail(ErrorKind::invalid_config, "'" + it.key() + "' must be a number of seconds in (0, 31536000]", path);
        Millis v{static_cast<std::int64_t>(it->get<double>() * 1000)};
        (it.key() == "default_ttl_s" ? out.keep_responses.default_ttl : out.keep_responses.max_ttl) = v;
      } else {
        return fail(ErrorKind::invalid_config, "unknown key '" + it.key() + "' in server.keep_responses", path);
      }
    }
    if (out.keep_responses.default_ttl > out.keep_responses.max_ttl) out.keep_responses.default_ttl = out.keep_responses.max_ttl;
  }
  if (auto ctl = s.find("control"); ctl != s.end() && !ctl->is_null()) {
    if (!ctl->is_object()) return fail(ErrorKind::invalid_config, "'control' must be an object", "$.server.control");
    ControlConfig& cc = out.control;
    for (auto it = ctl->begin(); it != ctl->end(); ++it) {
      const std::string path = "$.server.control." + it.key();
      if (it.key() == "db") {
        if (!it->is_string()) return fail(ErrorKind::invalid_config, "'db' must be a string (a file path)", path);
        cc.db = it->get<std::string>();
        continue;
      }
      if (it.key() == "postgres_url") {
        if (!it->is_string() || !(it->get<std::string>().starts_with("postgres://") || it->get<std::string>().starts_with("postgresql://")))
          return fail(ErrorKind::invalid_config, "'postgres_url' must be a PostgreSQL URL: postgres://user:password@host:5432/dbname", path);
        cc.postgres_url = it->get<std::string>();
        continue;
      }
      struct IntField {
        const char* name;
        std::int64_t* dst;
        std::int64_t lo, hi;
      };
      const IntField ints[] = {{"reconcile_ms", &cc.reconcile_ms, 10, 3'600'000},
                               {"webhook_retry_base_ms", &cc.webhook_retry_base_ms, 1, 3'600'000},
                               {"webhook_give_up_ms", &cc.webhook_give_up_ms, 1, 30LL * 86'400'000},
                               {"webhook_timeout_ms", &cc.webhook_timeout_ms, 10, 600'000},
                               {"anomaly_baseline_buckets", &cc.anomaly_baseline_buckets, 1, 100'000},
                               {"anomaly_min_buckets", &cc.anomaly_min_buckets, 1, 100'000}};
      bool done = false;
      for (const auto& f : ints) {
        if (it.key() != f.name) continue;
        if (!it->is_number_integer() || it->get<std::int64_t>() < f.lo || it->get<std::int64_t>() > f.hi)
          return fail(ErrorKind::invalid_config, "'" + it.key() + "' must be an integer " + std::to_string(f.lo) + ".." + std::to_string(f.hi), path);
        *f.dst = it->get<std::int64_t>();
        done = true;
      }
      const std::pair<const char*, double*> nums[] = {{"anomaly_bucket_s", &cc.anomaly_bucket_s}, {"anomaly_factor", &cc.anomaly_factor},
                                                      {"anomaly_min_usd", &cc.anomaly_min_usd}};
      for (const auto& [name, dst] : nums) {
        if (it.key() != name) continue;
        if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 1e9)
          return fail(ErrorKind::invalid_config, "'" + it.key() + "' must be a positive number", path);
        *dst = it->get<double>();
        done = true;
      }
      if (!done) return fail(ErrorKind::invalid_config, "unknown key '" + it.key() + "' in server.control", path);
    }
  }
  return out;
}

std::string ServerConfig::kept_db_path(const Config& config, const ServerConfig& server) {
  const std::string& p = server.keep_responses.path;
  if (!p.empty()) return p == ":memory:" ? std::string() : p;
  std::string trace = config.tracing.is_object() ? config.tracing.value("path", std::string{}) : std::string{};
  if (trace.empty() || trace == ":memory:") return {};
  auto slash = trace.rfind('/');
  return slash == std::string::npos ? std::string("kept.db") : trace.substr(0, slash + 1) + "kept.db";
  }
std::string ServerConfig::control_db_path(const Config& config, const ServerConfig& server) {
  if (!server.control.postgres_url.empty()) return server.control.postgres_url;
  if (!server.control.db.empty()) return server.control.db == ":memory:" ? std::string() : server.control.db;
  std::string trace = config.tracing.is_object() ? config.tracing.value("path", std::string{}) : std::string{};
  if (trace.empty() || trace == ":memory:") return {};
  auto slash = trace.rfind('/');
  return slash == std::string::npos ? std::string("control.db") : trace.substr(0, slash + 1) + "control.db";
}

std::string ServerConfig::keys_db_path(const Config& config, const ServerConfig& server) {
  if (!server.keys_db.empty()) return server.keys_db == ":memory:" ? std::string() : server.keys_db;
  // A fleet shares its managed keys with its control store.
  if (!server.control.postgres_url.empty()) return server.control.postgres_url;
  std::string trace = config.tracing.is_object() ? config.tracing.value("path", std::string{}) : std::string{};
  if (trace.empty() || trace == ":memory:") return {};
  auto slash = trace.rfind('/');
  return slash == std::string::npos ? std::string("keys.db") : trace.substr(0, slash + 1) + "keys.db";
}

std::string ServerConfig::default_budgets_db_path(const Config& config) {
  const BudgetBackendConfig& bb = config.budget_backend_options;
  if (config.budgets.empty() || !bb.sqlite_path.empty() || !bb.redis_url.empty()) return {};
  std::string trace = config.tracing.is_object() ? config.tracing.value("path", std::string{}) : std::string{};
  if (trace.empty() || trace == ":memory:") return {};
  auto slash = trace.rfind('/');
  return slash == std::string::npos ? std::string("budgets.db") : trace.substr(0, slash + 1) + "budgets.db";
}

}  // namespace modelux
