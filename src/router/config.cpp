#include "modelux/config.hpp"
#include "modelux/otlp.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/embedded.hpp"

namespace modelux {

namespace {

Result<std::string> expand_string(const std::string& s, const std::string& path) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    auto start = s.find("${", i);
    if (start == std::string::npos) {
      out.append(s, i);
      break;
    }
    out.append(s, i, start - i);
    auto end = s.find('}', start);
    if (end == std::string::npos) return fail(ErrorKind::invalid_config, "unterminated ${ in string", path);
    std::string expr = s.substr(start + 2, end - start - 2);
    std::string name = expr, def;
    bool has_def = false;
    if (auto d = expr.find(":-"); d != std::string::npos) {
      name = expr.substr(0, d);
      def = expr.substr(d + 2);
      has_def = true;
    }
    if (name.empty()) return fail(ErrorKind::invalid_config, "empty ${} reference", path);
    const char* v = std::getenv(name.c_str());
    if (v && *v) out += v;
    else if (has_def) out += def;
    else return fail(ErrorKind::invalid_config, "environment variable " + name + " is not set", path);
    i = end + 1;
  }
  return out;
}

Result<std::string> opt_str(const Json& o, const char* key, const std::string& path, std::string def = {}) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return def;
  if (!it->is_string()) return fail(ErrorKind::invalid_config, std::string("'") + key + "' must be a string", path + "." + key);
  return it->get<std::string>();
}

}  // namespace

Result<Json> expand_env(const Json& doc, std::string path) {
  if (doc.is_string()) {
    auto s = expand_string(doc.get<std::string>(), path);
    if (!s) return fail(s.error());
    return Json(std::move(*s));
  }
  if (doc.is_array()) {
    Json out = Json::array();
    for (std::size_t i = 0; i < doc.size(); ++i) {
      auto e = expand_env(doc[i], path + "[" + std::to_string(i) + "]");
      if (!e) return e;
      out.push_back(std::move(*e));
    }
    return out;
  }
  if (doc.is_object()) {
    Json out = Json::object();
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      // Routing configs are compiled later and have no secrets; expanding them is harmless.
      auto e = expand_env(it.value(), path + "." + it.key());
      if (!e) return e;
      out[it.key()] = std::move(*e);
    }
    return out;
  }
  return doc;
}

Result<Config> Config::from_json(const Json& raw) {
  if (!raw.is_object()) return fail(ErrorKind::invalid_config, "config must be a JSON object", "$");
  auto expanded = expand_env(raw);
  if (!expanded) return fail(expanded.error());
  const Json& doc = *expanded;
  static constexpr std::string_view kTop[] = {"server", "providers", "routing", "catalog", "budgets", "budget_backend", "tracing", "health", "$schema", "comment"};
  for (auto it = doc.begin(); it != doc.end(); ++it)
    if (std::find(std::begin(kTop), std::end(kTop), it.key()) == std::end(kTop))
      return fail(ErrorKind::invalid_config, "unknown top-level key '" + it.key() + "'", "$." + it.key());

  Config c;
  c.catalog = Catalog::builtin();
  if (auto cat = doc.find("catalog"); cat != doc.end()) {
    auto over = Catalog::from_json(*cat);
    if (!over) {
      Error e = over.error();
      e.path = "$.catalog" + (e.path.size() > 1 ? e.path.substr(1) : std::string{});
      return fail(std::move(e));
    }
    c.catalog = c.catalog.merged_with(*over);
  }

  // The "server" section belongs to the optional server component (modelux::server), which
  // parses and checks it (ServerConfig::from_json); the core only keeps it.
  if (auto s = doc.find("server"); s != doc.end()) {
    if (!s->is_object()) return fail(ErrorKind::invalid_config, "'server' must be an object", "$.server");
    c.server = *s;
  }

  if (auto ps = doc.find("providers"); ps != doc.end()) {
    if (!ps->is_object()) return fail(ErrorKind::invalid_config, "'providers' must be an object keyed by provider name", "$.providers");
    for (auto it = ps->begin(); it != ps->end(); ++it) {
      std::string path = "$.providers." + it.key();
      const Json& p = it.value();
      if (!p.is_object()) return fail(ErrorKind::invalid_config, "provider must be an object", path);
      ProviderConfig pc;
      pc.name = it.key();
      const ProviderInfo* info = c.catalog.find_provider(pc.name);
      auto family = opt_str(p, "family", path, info ? info->family : std::string{});
      auto base = opt_str(p, "base_url", path, info ? info->base_url : std::string{});
      if (!family) return fail(family.error());
      if (!base) return fail(base.error());
      pc.family = *family;
      pc.base_url = *base;
      if (pc.family.empty())
        return fail(ErrorKind::invalid_config, "provider '" + pc.name + "' is not in the catalog: set 'family'", path + ".family");
      if (!find_codec(pc.family))
        return fail(ErrorKind::invalid_config, "unknown provider family '" + pc.family + "'", path + ".family");
      if (pc.base_url.empty()) return fail(ErrorKind::invalid_config, "'base_url' is required", path + ".base_url");
      if (!pc.base_url.starts_with("http://") && !pc.base_url.starts_with("https://"))
        return fail(ErrorKind::invalid_config, "'base_url' must start with http:// or https://", path + ".base_url");
      if (auto k = p.find("api_key"); k != p.end()) {
        if (!k->is_string()) return fail(ErrorKind::invalid_config, "'api_key' must be a string", path + ".api_key");
        pc.api_keys.push_back(k->get<std::string>());
      }
      if (auto ks = p.find("api_keys"); ks != p.end()) {
        if (!ks->is_array()) return fail(ErrorKind::invalid_config, "'api_keys' must be an array of strings", path + ".api_keys");
        for (std::size_t i = 0; i < ks->size(); ++i) {
          if (!(*ks)[i].is_string())
            return fail(ErrorKind::invalid_config, "API key must be a string", path + ".api_keys[" + std::to_string(i) + "]");
          pc.api_keys.push_back((*ks)[i].get<std::string>());
        }
      }
      if (auto o = p.find("options"); o != p.end()) {
        if (!o->is_object()) return fail(ErrorKind::invalid_config, "'options' must be an object", path + ".options");
        for (auto oi = o->begin(); oi != o->end(); ++oi) {
          if (!oi.value().is_string())
            return fail(ErrorKind::invalid_config, "option values must be strings", path + ".options." + oi.key());
          pc.options[oi.key()] = oi.value().get<std::string>();
        }
      }
      c.providers.push_back(std::move(pc));
    }
  }

  if (auto rs = doc.find("routing"); rs != doc.end()) {
    if (!rs->is_object()) return fail(ErrorKind::invalid_config, "'routing' must be an object keyed by slug", "$.routing");
    for (auto it = rs->begin(); it != rs->end(); ++it) {
      std::string slug = it.key();
      if (!slug.empty() && slug.front() == '@') slug.erase(0, 1);
      if (slug.empty()) return fail(ErrorKind::invalid_config, "empty routing slug", "$.routing");
      c.routing[slug] = it.value();
    }
  }
  if (auto b = doc.find("budgets"); b != doc.end()) {
    if (!b->is_array()) return fail(ErrorKind::invalid_config, "'budgets' must be an array", "$.budgets");
    c.budgets = *b;
  }
  if (auto bb = doc.find("budget_backend"); bb != doc.end()) {
    if (!bb->is_object()) return fail(ErrorKind::invalid_config, "'budget_backend' must be an object", "$.budget_backend");
    for (auto it = bb->begin(); it != bb->end(); ++it) {
      static constexpr std::string_view kKeys[] = {"sqlite_path",   "redis_url",        "instance_id",
                                                   "sync_interval_ms", "outage_policy", "max_wildcard_ledgers",
                                                   "evict_interval_ms"};
      if (std::find(std::begin(kKeys), std::end(kKeys), it.key()) == std::end(kKeys))
        return fail(ErrorKind::invalid_config, "unknown key '" + it.key() + "'", "$.budget_backend." + it.key());
    }
    for (const char* k : {"sync_interval_ms", "max_wildcard_ledgers", "evict_interval_ms"})
      if (auto v = bb->find(k); v != bb->end() && (!v->is_number_integer() || v->get<std::int64_t>() <= 0))
        return fail(ErrorKind::invalid_config, std::string(k) + " must be a positive integer",
                    std::string("$.budget_backend.") + k);
    for (const char* k : {"sqlite_path", "redis_url", "instance_id", "outage_policy"})
      if (auto v = bb->find(k); v != bb->end() && !v->is_string())
        return fail(ErrorKind::invalid_config, std::string(k) + " must be a string", std::string("$.budget_backend.") + k);
    if (auto v = bb->find("outage_policy");
        v != bb->end() && *v != "local_view" && *v != "fair_share")
      return fail(ErrorKind::invalid_config, "outage_policy must be \"local_view\" or \"fair_share\"",
                  "$.budget_backend.outage_policy");
    if (bb->contains("redis_url") && !bb->contains("instance_id"))
      return fail(ErrorKind::invalid_config, "'instance_id' is required with 'redis_url'", "$.budget_backend.instance_id");
    c.budget_backend = *bb;
    BudgetBackendConfig& o = c.budget_backend_options;
    o.sqlite_path = bb->value("sqlite_path", std::string{});
    o.redis_url = bb->value("redis_url", std::string{});
    o.instance_id = bb->value("instance_id", std::string{});
    if (auto v = bb->find("sync_interval_ms"); v != bb->end()) o.sync_interval = Millis{v->get<std::int64_t>()};
    if (auto v = bb->find("max_wildcard_ledgers"); v != bb->end()) o.max_wildcard_ledgers = v->get<std::size_t>();
    if (auto v = bb->find("evict_interval_ms"); v != bb->end()) o.evict_interval = Millis{v->get<std::int64_t>()};
    o.fair_share = bb->value("outage_policy", std::string{}) == "fair_share";
  }
  if (auto t = doc.find("tracing"); t != doc.end()) {
    if (!t->is_object()) return fail(ErrorKind::invalid_config, "'tracing' must be an object", "$.tracing");
    // Typed here so a hostile or mistyped config is an error with its path, never a crash later.
    for (auto it = t->begin(); it != t->end(); ++it) {
      const std::string& k = it.key();
      const Json& v = it.value();
      const std::string path = "$.tracing." + k;
      if (k == "path") {
        if (!v.is_string()) return fail(ErrorKind::invalid_config, "path must be a string", path);
      } else if (k == "enabled" || k == "capture_bodies") {
        if (!v.is_boolean()) return fail(ErrorKind::invalid_config, k + " must be true or false", path);
      } else if (k == "redact_fields") {
        if (!v.is_array()) return fail(ErrorKind::invalid_config, "redact_fields must be an array of strings", path);
        for (std::size_t i = 0; i < v.size(); ++i)
          if (!v[i].is_string())
            return fail(ErrorKind::invalid_config, "redact_fields must be an array of strings",
                        path + "[" + std::to_string(i) + "]");
      } else if (k == "queue_capacity" || k == "batch_size" || k == "body_cap_bytes" || k == "flush_interval_ms") {
        if (!v.is_number_integer() || v.get<std::int64_t>() <= 0)
          return fail(ErrorKind::invalid_config, k + " must be a positive integer", path);
      } else if (k == "retention_days") {
        if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
          return fail(ErrorKind::invalid_config, "retention_days must be an integer >= 0 (0 = keep forever)", path);
      } else if (k == "otlp") {
        if (auto o = parse_otlp_options(v, path); !o) return fail(o.error());
      } else {
        return fail(ErrorKind::invalid_config, "unknown key '" + k + "'", path);
      }
    }
    c.tracing = *t;
    TracingConfig& o = c.tracing_options;
    o.path = t->value("path", std::string{});
    o.enabled = t->value("enabled", true);
    o.capture_bodies = t->value("capture_bodies", false);
    if (auto v = t->find("redact_fields"); v != t->end())
      for (const auto& f : *v) o.redact_fields.push_back(f.get<std::string>());
    if (auto v = t->find("queue_capacity"); v != t->end()) o.queue_capacity = v->get<std::size_t>();
    if (auto v = t->find("batch_size"); v != t->end()) o.batch_size = v->get<std::size_t>();
    if (auto v = t->find("body_cap_bytes"); v != t->end()) o.body_cap_bytes = v->get<std::size_t>();
    if (auto v = t->find("retention_days"); v != t->end()) o.retention_days = v->get<int>();
    if (auto v = t->find("flush_interval_ms"); v != t->end()) o.flush_interval = Millis{v->get<std::int64_t>()};
  }
  if (auto h = doc.find("health"); h != doc.end()) {
    if (!h->is_object()) return fail(ErrorKind::invalid_config, "'health' must be an object", "$.health");
    for (auto it = h->begin(); it != h->end(); ++it) {
      const std::string path = "$.health." + it.key();
      if (it.key() == "enabled") {
        if (!it.value().is_boolean()) return fail(ErrorKind::invalid_config, "enabled must be true or false", path);
        c.health.enabled = it.value().get<bool>();
      } else {
        return fail(ErrorKind::invalid_config, "unknown key '" + it.key() + "'", path);
      }
    }
  }
  return c;
}

Result<Config> Config::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(ErrorKind::io, "cannot open config file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = parse_json(ss.str(), ParseLimits{.max_bytes = 16 * 1024 * 1024, .max_depth = 64});
  if (!j) return fail(ErrorKind::invalid_config, "config file '" + path + "' is not valid JSON");
  auto c = from_json(*j);
  if (c) c->source_path = path;
  return c;
}

Result<Config> Config::embedded_defaults() {
  auto j = parse_json(embedded::kDefaultsJson);
  if (!j) return fail(ErrorKind::internal, "embedded defaults are not valid JSON");
  return from_json(*j);
}

const ProviderConfig* Config::find_provider(std::string_view name) const noexcept {
  for (const auto& p : providers)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace modelux
