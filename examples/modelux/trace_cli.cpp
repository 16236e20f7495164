// `modelux logs` and `modelux spend`: flag parsing over the trace store and the reports.
// Lives in the library so the binary's entry points stay one-line forwards and tests can run
// the commands end to end against a real SQLite file.
#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <ostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "modelux/config.hpp"
#include "trace_cli.hpp"

namespace modelux {

namespace {

constexpr const char* kLogsUsage =
    "usage: modelux logs [--db FILE | --config FILE] [--trace REQ_ID]\n"
    "                    [--since 1h] [--tag k=v]... [--model M] [--provider P] [--project P]\n"
    "                    [--user U] [--config @slug] [--status ok|error] [--limit N] [--json]\n"
    "                    [--csv] [--summary]\n"
    "  --config FILE   the proxy's config file: read its tracing.path (an existing file; a\n"
    "                  --config that is not a file filters by routing config, e.g. @production)\n"
    "  --trace REQ_ID  one trace in full: attempts, decision and reason, cost, latency\n"
    "  --json          one JSON trace per line (JSONL)\n"
    "  --csv           one CSV row per trace, with a header\n"
    "  --summary       latency percentiles, error groups and failover rate for the window\n";

constexpr const char* kSpendUsage =
    "usage: modelux spend [--db FILE | --config FILE] [--by model|provider|project|config|tag|user] [--since 24h]\n"
    "                     [--bucket 1h] [--project NAME] [--forecast] [--json]\n"
    "  --config FILE   the proxy's config file: read its tracing.path\n"
    "  --bucket D      also split the window into buckets of D (60s, 5m, 1h, 1d)\n"
    "  --project NAME  only this project's spend\n"
    "  --json          the report as JSON (the same document as GET /v1/analytics/spend)\n";

struct Flags {
  std::map<std::string, std::vector<std::string>> values;
  std::vector<std::string> switches;
  bool has(const std::string& s) const { return std::find(switches.begin(), switches.end(), s) != switches.end(); }
  std::string get(const std::string& k, std::string def = {}) const {
    auto it = values.find(k);
    return it == values.end() || it->second.empty() ? def : it->second.back();
  }
};

// Parses "--flag value", "--flag=value" and bare switches with CLI11, the binary's one
// command-line parser. Unknown flags and stray words are usage errors.
Result<Flags> parse_flags(const std::vector<std::string>& args, const std::vector<std::string>& with_value,
                          const std::vector<std::string>& switches) {
  Flags f;
  CLI::App app;
  app.set_help_flag();  // --help / -h are ordinary switches here (the caller prints its usage)
  app.allow_windows_style_options(false);
  std::map<std::string, std::vector<std::string>> got;
  std::map<std::string, bool> on;
  for (const auto& name : with_value) app.add_option(name, got[name])->allow_extra_args(false)->take_all();
  for (const auto& name : switches) app.add_flag(name, on[name]);
  std::vector<std::string> rest(args.size() > 1 ? args.begin() + 1 : args.end(), args.end());
  std::reverse(rest.begin(), rest.end());  // CLI11 consumes a reversed vector
  try {
    app.parse(rest);
  } catch (const CLI::ParseError& e) {
    return fail(ErrorKind::bad_request, e.what());
  }
  for (auto& [name, values] : got)
    if (!values.empty()) f.values[name] = std::move(values);
  for (const auto& [name, set] : on)
    if (set) f.switches.push_back(name);
  return f;
}

std::string fmt_ms(Nanos n) { return fmt::format("{:.1f} ms", static_cast<double>(n.count()) / 1e6); }

std::string summary(TraceStore& store, WallTime since, WallTime until) {
  std::string o;
  for (auto dim : {LatencyDimension::model, LatencyDimension::provider}) {
    auto rows = store.latency(dim, since, until);
    if (!rows) return "error: " + rows.error().describe() + "\n";
    o += fmt::format("latency by {} (successful attempts)\n", dim == LatencyDimension::model ? "model" : "provider");
    if (rows->empty()) o += "  none\n";
    for (const auto& r : *rows)
      o += fmt::format("  {:<28} n={:<6} p50 {:>10}  p95 {:>10}  p99 {:>10}  ttft p50 {:>10}\n", r.key, r.count,
                       fmt_ms(r.p50), fmt_ms(r.p95), fmt_ms(r.p99), r.ttft_p50.count() ? fmt_ms(r.ttft_p50) : "-");
  }
  auto errs = store.error_groups(since, until);
  if (!errs) return "error: " + errs.error().describe() + "\n";
  o += "errors by class, provider, model\n";
  if (errs->empty()) o += "  none\n";
  for (const auto& g : *errs)
    o += fmt::format("  {:<20} {:<12} {:<28} x{:<6} last: {}\n", g.error_class, g.provider.empty() ? "-" : g.provider,
                     g.model.empty() ? "-" : g.model, g.count, g.sample_message);
  auto fo = store.failovers(since, until);
  if (!fo) return "error: " + fo.error().describe() + "\n";
  o += fmt::format("failover  {} of {} requests ({:.1f}%), {} rescued; {} requests failed\n", fo->failed_over,
                   fo->requests, 100.0 * fo->rate(), fo->rescued, fo->failed);
  return o;
}

// The trace store to read: --db, else the tracing.path of the config file named by --config
// (when it names an existing file), else modelux-traces.db. `config_is_file` says whether
// --config was taken as a file (logs then does not filter by it).
Result<std::string> trace_db_of(const Flags& flags, bool& config_is_file) {
  config_is_file = false;
  const std::string cfg = flags.get("--config");
  std::error_code ec;
  if (!cfg.empty() && !cfg.starts_with("@") && std::filesystem::is_regular_file(cfg, ec)) {
    config_is_file = true;
    auto c = Config::load_file(cfg);
    if (!c) return std::unexpected(c.error());
    if (!flags.get("--db").empty()) return flags.get("--db");
    const std::string& path = c->tracing_options.path;
    if (!c->tracing_options.enabled || path.empty() || path == ":memory:")
      return fail(ErrorKind::invalid_config, "the config '" + cfg + "' keeps no trace file (tracing.path is not set)",
                  "$.tracing.path");
    return path;
  }
  return flags.get("--db", "modelux-traces.db");
}

}  // namespace

int run_logs(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, const Clock& clock) {
  auto flags = parse_flags(args,
                           {"--db", "--trace", "--tag", "--since", "--model", "--provider", "--project", "--user",
                            "--config", "--status", "--limit"},
                           {"--json", "--csv", "--summary", "--help", "-h"});
  if (!flags) {
    err << "modelux logs: " << flags.error().message << "\n" << kLogsUsage;
    return 2;
  }
  if (flags->has("--help") || flags->has("-h")) {
    out << kLogsUsage;
    return 0;
  }
  bool config_is_file = false;
  auto dbr = trace_db_of(*flags, config_is_file);
  if (!dbr) {
    err << "modelux logs: " << dbr.error().describe() << "\n";
    return 2;
  }
  const std::string db = *dbr;
  TraceQuery q;
  q.limit = 50;
  const WallTime now = clock.wall_now();
  if (auto s = flags->get("--since"); !s.empty()) {
    auto d = parse_since(s);
    if (!d) {
      err << "modelux logs: --since: " << d.error().message << "\n";
      return 2;
    }
    q.since = now - std::chrono::duration_cast<WallTime::duration>(*d);
  }
  if (auto it = flags->values.find("--tag"); it != flags->values.end()) {
    for (const auto& kv : it->second) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        err << "modelux logs: --tag wants key=value, got '" << kv << "'\n";
        return 2;
      }
      q.tags.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
  }
  q.model = flags->get("--model");
  q.provider = flags->get("--provider");
  q.project = flags->get("--project");
  q.end_user = flags->get("--user");
  if (!config_is_file) q.config = flags->get("--config");
  if (auto s = flags->get("--status"); !s.empty()) {
    if (s == "ok") q.ok = true;
    else if (s == "error") q.ok = false;
    else {
      err << "modelux logs: --status wants ok or error, got '" << s << "'\n";
      return 2;
    }
  }
  if (auto s = flags->get("--limit"); !s.empty()) {
    std::size_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc{} || p != s.data() + s.size()) {
      err << "modelux logs: --limit wants a number, got '" << s << "'\n";
      return 2;
    }
    q.limit = n;
  }

  auto store = TraceStore::open(db, TraceStore::Mode::read_only);
  if (!store) {
    err << "modelux logs: " << store.error().message << "\n";
    return 1;
  }
  if (auto id = flags->get("--trace"); !id.empty()) {
    auto t = (*store)->get(id);
    if (!t) {
      err << "modelux logs: " << t.error().message << "\n";
      return 1;
    }
    if (!*t) {
      err << "modelux logs: no trace with request id '" << id << "' in " << db << "\n";
      return 1;
    }
    out << (flags->has("--json") ? (*t)->to_json().dump(2) + "\n" : format_trace(**t));
    return 0;
  }
  if (flags->has("--summary")) {
    WallTime since = q.since.value_or(now - std::chrono::hours{24});
    out << summary(**store, since, now);
    return 0;
  }
  if (flags->has("--json") || flags->has("--csv")) {
    auto n = flags->has("--csv") ? (*store)->export_csv(q, out) : (*store)->export_jsonl(q, out);
    if (!n) {
      err << "modelux logs: " << n.error().message << "\n";
      return 1;
    }
    return 0;
  }
  auto traces = (*store)->query(q);
  if (!traces) {
    err << "modelux logs: " << traces.error().message << "\n";
    return 1;
  }
  auto counters = (*store)->counters();
  if (!counters) {
    err << "modelux logs: " << counters.error().message << "\n";
    return 1;
  }
  out << format_trace_list(*traces, *counters);
  return 0;
}

int run_spend(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, const Clock& clock) {
  auto flags = parse_flags(args, {"--db", "--config", "--by", "--since", "--bucket", "--project"}, {"--forecast", "--json", "--help", "-h"});
  if (!flags) {
    err << "modelux spend: " << flags.error().message << "\n" << kSpendUsage;
    return 2;
  }
  if (flags->has("--help") || flags->has("-h")) {
    out << kSpendUsage;
    return 0;
  }
  auto by = spend_dimension_from_string(flags->get("--by", "model"));
  if (!by) {
    err << "modelux spend: --by wants model, provider, project, config, tag or user\n";
    return 2;
  }
  auto window = parse_since(flags->get("--since", "24h"));
  if (!window) {
    err << "modelux spend: --since: " << window.error().message << "\n";
    return 2;
  }
  bool config_is_file = false;
  auto dbr = trace_db_of(*flags, config_is_file);
  if (!dbr) {
    err << "modelux spend: " << dbr.error().describe() << "\n";
    return 2;
  }
  if (!flags->get("--config").empty() && !config_is_file) {
    err << "modelux spend: --config wants an existing config file, got '" << flags->get("--config") << "'\n";
    return 2;
  }
  const std::string db = *dbr;
  auto store = TraceStore::open(db, TraceStore::Mode::read_only);
  if (!store) {
    err << "modelux spend: " << store.error().message << "\n";
    return 1;
  }
  const WallTime now = clock.wall_now();
  // The same store call and JSON rendering as GET /v1/analytics/spend (one implementation).
  AnalyticsQuery q{now - std::chrono::duration_cast<WallTime::duration>(*window), now, flags->get("--project"), std::chrono::seconds{0}};
  if (flags->values.count("--bucket")) {
    auto b = parse_analytics_duration(flags->get("--bucket"));
    if (!b) {
      err << "modelux spend: --bucket wants a duration such as 60s, 5m, 1h or 1d\n";
      return 2;
    }
    q.bucket = *b;
  }
  auto rep = (*store)->spend(*by, q);
  if (!rep) {
    err << "modelux spend: " << rep.error().message << "\n";
    return rep.error().kind == ErrorKind::bad_request ? 2 : 1;
  }
  std::optional<CostForecast> f;
  if (flags->has("--forecast")) {
    auto fr = (*store)->forecast(now, 7, q.project);
    if (!fr) {
      err << "modelux spend: " << fr.error().message << "\n";
      return 1;
    }
    f = *fr;
  }
  if (flags->has("--json")) {
    Json j = analytics_json(*rep);
    if (f) j["forecast"] = analytics_json(*f, 7, q.project);
    out << j.dump(2) << "\n";
    return 0;
  }
  out << format_spend(*rep);
  for (const auto& bucket : rep->buckets) {
    SpendReport one = *rep;
    one.rows = bucket.rows;
    one.total = bucket.total;
    one.since = bucket.start;
    one.until = std::min(rep->until, bucket.start + std::chrono::duration_cast<WallTime::duration>(rep->bucket));
    out << "\n" << format_spend(one);
  }
  if (f) out << format_forecast(*f);
  return 0;
}

}  // namespace modelux
