// modelux._core.replay / evaluate_guard: replay stored traffic against a candidate config
// (modelux/replay.hpp). Options and the report cross as JSON text; the pure-Python layer
// wraps the report in modelux.ReplayReport.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "common.hpp"
#include "modelux/config.hpp"
#include "modelux/replay.hpp"

namespace modelux::python {

namespace {

[[noreturn]] void bad(const std::string& msg, const std::string& path) {
  throw PyError(fail(ErrorKind::bad_request, msg, path).error());
}

std::string str(const Json& o, const char* key, const std::string& dflt = {}) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return dflt;
  if (!it->is_string()) bad(std::string("'") + key + "' must be a string", std::string("$.") + key);
  return it->get<std::string>();
}

double number(const Json& o, const char* key, double dflt, double lo, double hi) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return dflt;
  if (!it->is_number()) bad(std::string("'") + key + "' must be a number", std::string("$.") + key);
  double v = it->get<double>();
  if (!(v >= lo && v <= hi)) bad(std::string("'") + key + "' is out of range", std::string("$.") + key);
  return v;
}

std::string run_replay(const std::string& options_json, std::optional<std::function<std::optional<double>(std::string)>> scorer) {
  Json o = parse_text(options_json, "options");
  if (!o.is_object()) bad("options must be an object", "$");
  for (const auto& [k, _] : o.items()) {
    static const char* known[] = {"db", "slug", "candidate", "config", "config_path", "since_s", "limit", "mode",
                                  "seed", "concurrency", "cost_cap_usd", "keep_rows"};
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (!ok) bad("unknown option '" + k + "'", "$." + k);
  }
  ReplayOptions r;
  r.store_path = str(o, "db", r.store_path);
  r.slug = str(o, "slug");
  if (!o.contains("candidate")) bad("a candidate config is required", "$.candidate");
  r.candidate = o["candidate"];
  if (auto c = o.find("config"); c != o.end() && !c->is_null()) {
    r.base = unwrap(Config::from_json(unwrap(expand_env(*c))));
  } else if (auto p = str(o, "config_path"); !p.empty()) {
    r.base = unwrap(Config::load_file(p));
  }
  if (auto s = o.find("since_s"); s != o.end() && !s->is_null()) {
    double secs = number(o, "since_s", 0, 0, 1e10);
    r.since = std::chrono::system_clock::now() -
              std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(secs));
  }
  r.limit = static_cast<std::size_t>(number(o, "limit", 50'000, 0, 1e12));
  auto mode = replay_mode_from_string(str(o, "mode", "routing"));
  if (!mode) bad("mode must be 'routing' or 'responses'", "$.mode");
  r.mode = *mode;
  r.seed = static_cast<std::uint64_t>(number(o, "seed", 1, 0, 1.8e19));
  r.concurrency = static_cast<std::size_t>(number(o, "concurrency", 4, 1, 256));
  r.cost_cap_usd = number(o, "cost_cap_usd", 1.0, 0, 1e9);
  if (auto k = o.find("keep_rows"); k != o.end() && k->is_boolean()) r.keep_rows = k->get<bool>();
  if (scorer && *scorer) {
    auto fn = *scorer;
    // Called on this thread with the GIL released around the replay: take it back per call.
    r.scorer = [fn](const ResponsePair& p) -> std::optional<double> {
      Json pair{{"request_id", p.request_id}, {"request_body", p.request_body}, {"recorded", p.recorded},
                {"candidate", p.candidate}};
      py::gil_scoped_acquire gil;
      return fn(pair.dump());
    };
  }
  Result<ReplayReport> rep = fail(ErrorKind::internal, "not run");
  {
    py::gil_scoped_release nogil;
    rep = replay(r);
  }
  ReplayReport report = unwrap(std::move(rep));
  Json j = report.to_json();
  j["table"] = report.table();
  return j.dump();
}

/// The metrics a guard reads, back from a report's JSON.
ReplaySide side_from_json(const Json& j) {
  ReplaySide s;
  auto d = [&](const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : 0.0; };
  auto n = [&](const char* k) { return static_cast<std::size_t>(d(k)); };
  s.requests = n("requests");
  s.succeeded = n("succeeded");
  s.success_rate = d("success_rate");
  s.failover_rate = d("failover_rate");
  s.p50_ms = d("p50_ms");
  s.p95_ms = d("p95_ms");
  s.p99_ms = d("p99_ms");
  s.ttft_p50_ms = d("ttft_p50_ms");
  s.ttft_p95_ms = d("ttft_p95_ms");
  s.ttft_p99_ms = d("ttft_p99_ms");
  s.cost_usd = d("cost_usd");
  s.cost_per_request_usd = d("cost_per_request_usd");
  s.total_budget_violations = n("total_budget_violations");
  s.budget_downgrades = n("budget_downgrades");
  s.budget_blocks = n("budget_blocks");
  return s;
}

std::string guard(const std::string& text, const std::string& report_json) {
  Json j = parse_text(report_json, "report");
  if (!j.is_object() || !j.contains("current") || !j.contains("candidate"))
    bad("not a replay report (no current / candidate)", "$");
  ReplayReport r;
  r.current = side_from_json(j["current"]);
  r.candidate = side_from_json(j["candidate"]);
  GuardVerdict v = unwrap(evaluate_guard(text, r));
  Json checks = Json::array();
  for (const auto& c : v.checks)
    checks.push_back({{"clause", c.clause}, {"candidate", c.candidate}, {"bound", c.bound}, {"passed", c.passed}});
  return Json{{"passed", v.passed}, {"summary", v.summary()}, {"checks", std::move(checks)}}.dump();
}

}  // namespace

void bind_replay(py::module_& m) {
  using py::arg;
  m.def("replay", &run_replay, arg("options_json"), arg("scorer") = py::none(),
        "Replays stored traces against a candidate config; the report as JSON text.");
  m.def("evaluate_guard", &guard, arg("guard"), arg("report_json"),
        "Evaluates a promotion guard on a replay report; the verdict as JSON text.");
}

}  // namespace modelux::python
