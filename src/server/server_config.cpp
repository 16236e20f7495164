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

}  // namespace

Result<ServerConfig> ServerConfig::from_json(const Json& s) {
  ServerConfig out;
  if (s.is_null()) return out;
  if (!s.is_object()) return fail(ErrorKind::invalid_config, "'server' must be an object", "$.server");
  static constexpr std::string_view kKeys[] = {"host", "port", "threads", "max_body_bytes", "max_inflight_body_bytes",
                                               "drain_timeout_ms", "api_keys"};
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
          auto key = opt_str(k, "key", path);
          auto name = opt_str(k, "name", path);
          auto project = opt_str(k, "project", path);
          auto org = opt_str(k, "org", path);
          for (auto* r : {&key, &name, &project, &org})
            if (!*r) return fail(r->error());
          ak = ApiKeyConfig{*key, *name, *project, *org};
        } else {
          return fail(ErrorKind::invalid_config, "an API key must be a string or an object", path);
        }
        if (ak.key.size() < 8) return fail(ErrorKind::invalid_config, "API key too short (min 8 characters)", path);
        if (ak.name.empty()) ak.name = "key" + std::to_string(i);
        out.api_keys.push_back(std::move(ak));
      }
    }
    return out;
}

}  // namespace modelux
