// modelux._core.Simulator: the offline test kit (modelux/simulate.hpp) for Python. Routing
// configs are compiled against a config file's catalog and providers, exactly as the Router
// would compile them, and pushed through simulated targets on a virtual clock.
#include <set>
#include <unordered_map>

#include <pybind11/stl.h>

#include "common.hpp"
#include "modelux/config.hpp"
#include "modelux/simulate.hpp"

namespace modelux::python {

namespace {

/// Resolves models to their configured provider (like the router's route table) and "@slug"
/// references to the config file's routing configs, compiled lazily. Not thread-safe; used
/// with the GIL held.
class ConfigResolver final : public PolicyResolver {
 public:
  explicit ConfigResolver(Config cfg) : cfg_(std::move(cfg)) {}
  const Catalog& catalog() const override { return cfg_.catalog; }
  std::string provider_for(std::string_view model) const override {
    const ModelInfo* m = cfg_.catalog.find_model(model);
    if (!m) return {};
    return cfg_.find_provider(m->provider) ? m->provider : std::string{};
  }
  std::shared_ptr<const Policy> config(std::string_view slug) const override {
    if (!slug.empty() && slug.front() == '@') slug.remove_prefix(1);
    std::string s(slug);
    if (auto it = compiled_.find(s); it != compiled_.end()) return it->second;
    auto src = cfg_.routing.find(s);
    if (src == cfg_.routing.end() || compiling_.contains(s)) return nullptr;  // unknown, or a cycle
    compiling_.insert(s);
    auto p = Policy::compile(src->second, *this, "@" + s);
    compiling_.erase(s);
    if (!p) {
      last_error_ = p.error();
      return nullptr;
    }
    compiled_[s] = *p;
    return *p;
  }
  /// The error of the last referenced config that failed to compile (for a better message).
  const std::optional<Error>& last_error() const { return last_error_; }
  const Config& cfg() const { return cfg_; }

 private:
  Config cfg_;
  mutable std::unordered_map<std::string, std::shared_ptr<const Policy>> compiled_;
  mutable std::set<std::string> compiling_;
  mutable std::optional<Error> last_error_;
};

[[noreturn]] void bad(const std::string& msg, const std::string& path) {
  throw PyError(fail(ErrorKind::bad_request, msg, path).error());
}

double num(const Json& j, const char* key, double dflt, const std::string& path, double lo, double hi) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  std::string p = path + "." + key;
  if (!it->is_number()) bad(std::string("'") + key + "' must be a number", p);
  double v = it->get<double>();
  if (!(v >= lo && v <= hi)) bad(std::string("'") + key + "' is out of range", p);
  return v;
}

ErrorKind kind_of(const Json& j, const std::string& path) {
  if (!j.is_string()) bad("an error kind must be a string", path);
  auto k = error_kind_from_string(j.get<std::string>());
  if (!k) bad("unknown error kind '" + j.get<std::string>() + "'", path);
  return *k;
}

bool flag(const Json& j, const char* key, bool dflt, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) bad(std::string("'") + key + "' must be true or false", path + "." + key);
  return it->get<bool>();
}

Nanos ms(double v) { return std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(v)); }

void check_keys(const Json& j, std::initializer_list<std::string_view> allowed, const std::string& path) {
  for (const auto& [k, _] : j.items()) {
    bool ok = false;
    for (auto a : allowed) ok = ok || a == k;
    if (!ok) bad("unknown field '" + k + "'", path + "." + k);
  }
}

SimTarget target_from_json(const Json& j) {
  const std::string P = "$";
  if (!j.is_object()) bad("a target must be an object", P);
  check_keys(j, {"key", "latency", "errors", "hang_probability", "degraded", "answers", "finish_reason",
                 "completion_tokens", "retry_after_ms"},
             P);
  SimTarget t;
  auto key = j.find("key");
  if (key == j.end() || !key->is_string() || key->get<std::string>().find('/') == std::string::npos)
    bad("'key' must be \"provider/model\"", P + ".key");
  t.key = key->get<std::string>();
  if (auto l = j.find("latency"); l != j.end() && !l->is_null()) {
    if (l->is_number()) {
      t.latency.median_ms = num(j, "latency", 300, P, 0, 1e7);
    } else {
      if (!l->is_object()) bad("'latency' must be a number (median ms) or an object", P + ".latency");
      check_keys(*l, {"median_ms", "sigma", "min_ms", "max_ms"}, P + ".latency");
      t.latency.median_ms = num(*l, "median_ms", t.latency.median_ms, P + ".latency", 0, 1e7);
      t.latency.sigma = num(*l, "sigma", t.latency.sigma, P + ".latency", 0, 10);
      t.latency.min_ms = num(*l, "min_ms", t.latency.min_ms, P + ".latency", 0, 1e7);
      t.latency.max_ms = num(*l, "max_ms", t.latency.max_ms, P + ".latency", 0, 1e8);
    }
  }
  if (auto e = j.find("errors"); e != j.end() && !e->is_null()) {
    if (!e->is_object()) bad("'errors' must be a dict of error kind -> probability", P + ".errors");
    for (const auto& [k, v] : e->items()) {
      std::string p = P + ".errors." + k;
      ErrorKind kind = kind_of(Json(k), p);
      if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1) bad("a probability must be in [0, 1]", p);
      t.errors.emplace_back(kind, v.get<double>());
    }
  }
  t.hang_probability = num(j, "hang_probability", 0, P, 0, 1);
  if (auto d = j.find("degraded"); d != j.end() && !d->is_null()) {
    if (!d->is_array()) bad("'degraded' must be a list", P + ".degraded");
    for (std::size_t i = 0; i < d->size(); ++i) {
      const Json& w = (*d)[i];
      std::string p = P + ".degraded[" + std::to_string(i) + "]";
      if (!w.is_object()) bad("a degraded window must be an object", p);
      check_keys(w, {"from_ms", "to_ms", "error_rate", "error", "hang_probability", "latency_factor"}, p);
      DegradedWindow dw;
      dw.from = ms(num(w, "from_ms", 0, p, 0, 1e12));
      dw.to = ms(num(w, "to_ms", 0, p, 0, 1e12));
      if (dw.to < dw.from) bad("'to_ms' must not be before 'from_ms'", p + ".to_ms");
      dw.error_rate = num(w, "error_rate", dw.error_rate, p, 0, 1);
      if (auto k = w.find("error"); k != w.end()) dw.error = kind_of(*k, p + ".error");
      dw.hang_probability = num(w, "hang_probability", 0, p, 0, 1);
      dw.latency_factor = num(w, "latency_factor", 1, p, 0, 1e6);
      t.degraded.push_back(dw);
    }
  }
  if (auto a = j.find("answers"); a != j.end() && !a->is_null()) {
    if (!a->is_object()) bad("'answers' must be a dict of answer text -> weight", P + ".answers");
    for (const auto& [k, v] : a->items()) {
      if (!v.is_number() || v.get<double>() < 0) bad("a weight must be a non-negative number", P + ".answers." + k);
      t.answers.emplace_back(k, v.get<double>());
    }
  }
  if (auto f = j.find("finish_reason"); f != j.end() && !f->is_null()) {
    if (!f->is_string()) bad("'finish_reason' must be a string", P + ".finish_reason");
    t.finish_reason = f->get<std::string>();
  }
  t.completion_tokens = static_cast<std::int64_t>(num(j, "completion_tokens", 60, P, 0, 1e9));
  if (auto r = j.find("retry_after_ms"); r != j.end() && !r->is_null())
    t.retry_after = Millis{static_cast<std::int64_t>(num(j, "retry_after_ms", 0, P, 0, 1e9))};
  return t;
}

class PySimulator {
 public:
  explicit PySimulator(std::optional<std::string> config_json)
      : resolver_(config_json ? unwrap(Config::from_json(parse_text(*config_json, "config")))
                              : unwrap(Config::embedded_defaults())) {}

  void add_target(const std::string& target_json) { sim_.add_target(target_from_json(parse_text(target_json, "target"))); }

  std::string run(const std::string& route_json, std::size_t n, const std::string& options_json) {
    Json route = parse_text(route_json, "route");
    std::shared_ptr<const Policy> policy;
    if (route.is_string()) {
      std::string name = route.get<std::string>();
      if (!name.empty() && name.front() == '@') {
        policy = resolver_.config(name);
        if (!policy) {
          if (resolver_.last_error()) throw PyError(*resolver_.last_error());
          throw PyError(fail(ErrorKind::not_found, "unknown routing config '" + name + "'").error());
        }
      } else {
        policy = unwrap(Policy::single_model(name, resolver_));
      }
    } else {
      policy = unwrap(Policy::compile(route, resolver_, "@simulated"));
    }
    Json o = parse_text(options_json, "options");
    if (!o.is_object()) bad("options must be an object", "$");
    check_keys(o, {"seed", "interarrival_ms", "use_health", "keep_traces", "end_users", "project"}, "$");
    SimOptions opts;
    opts.seed = static_cast<std::uint64_t>(num(o, "seed", 1, "$", 0, 1.8e19));
    opts.interarrival = ms(num(o, "interarrival_ms", 50, "$", 0, 1e9));
    opts.use_health = flag(o, "use_health", true, "$");
    opts.keep_traces = flag(o, "keep_traces", false, "$");
    opts.end_users = static_cast<std::size_t>(num(o, "end_users", 1000, "$", 1, 1e9));
    if (auto p = o.find("project"); p != o.end() && p->is_string()) {
      std::string project = p->get<std::string>();
      std::size_t users = opts.end_users;
      opts.context = [project, users](std::size_t i) {
        CallContext c;
        c.project = project;
        c.end_user = "user-" + std::to_string(i % users);
        return c;
      };
    }
    SimReport report;
    {
      py::gil_scoped_release nogil;
      report = sim_.run(policy, n, opts);
    }
    Json j = report.to_json();
    j["summary"] = report.summary();
    j["strategy"] = std::string(policy->strategy());
    if (opts.keep_traces) {
      Json results = Json::array();
      for (const auto& r : report.results) {
        results.push_back({{"ok", r.ok},
                           {"served", r.ok ? r.served.key() : std::string{}},
                           {"error_kind", r.ok ? std::string{} : std::string(to_string(r.error.kind))},
                           {"error", r.ok ? std::string{} : r.error.message},
                           {"latency_ms", std::chrono::duration<double, std::milli>(r.latency).count()},
                           {"attempts", r.attempts},
                           {"text", r.text},
                           {"trace", r.trace.to_json()}});
      }
      j["results"] = std::move(results);
    }
    return j.dump();
  }

 private:
  ConfigResolver resolver_;
  Simulator sim_;
};

}  // namespace

void bind_simulate(py::module_& m) {
  using py::arg;
  py::class_<PySimulator>(m, "Simulator")
      .def(py::init<std::optional<std::string>>(), arg("config_json") = py::none())
      .def("add_target", &PySimulator::add_target, arg("target_json"))
      .def("run", &PySimulator::run, arg("route_json"), arg("requests"), arg("options_json"));
}

}  // namespace modelux::python
