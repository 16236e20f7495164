// `modelux replay`: flags → ReplayOptions → replay() → the table / JSON / guard / promotion.
#include "replay_cli.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "trace_cli.hpp"

namespace modelux {

void add_replay_options(CLI::App& cmd, ReplayArgs& a) {
  cmd.add_option("--slug", a.slug, "routing config to replay (production or @production)")->required();
  cmd.add_option("--candidate", a.candidate, "candidate: a routing config, or a whole config file")
      ->required()
      ->check(CLI::ExistingFile);
  cmd.add_option("--config", a.config, "the deployed config file: providers, catalog, budgets (embedded defaults without)")
      ->check(CLI::ExistingFile);
  cmd.add_option("--db", a.db, "trace store (default: the config's tracing.path, else modelux-traces.db)");
  cmd.add_option("--since", a.since, "window: 90s, 15m, 24h, 7d, 2w (default: everything stored)");
  cmd.add_option("--limit", a.limit, "replay at most the newest N requests (0 = all)")->check(CLI::NonNegativeNumber);
  cmd.add_option("--mode", a.mode, "routing (offline, fitted targets) or responses (re-send bodies)")
      ->check(CLI::IsMember({"routing", "responses"}));
  cmd.add_option("--seed", a.seed, "random seed: the same seed gives the same report");
  cmd.add_option("--json", a.json_out, "also write the report (with one row per request) to FILE");
  cmd.add_option("--require", a.require, "guard, e.g. \"success>=current,p95<=1.1*current\" (exit 3 when it fails)");
  cmd.add_flag("--promote", a.promote, "make the candidate a new config version when the guard passes");
  cmd.add_option("--concurrency", a.concurrency, "responses mode: requests in flight")->check(CLI::Range(1, 256));
  cmd.add_option("--cost-cap", a.cost_cap_usd, "responses mode: stop sending at this spend (USD)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--scorer", a.scorer,
                 "responses mode: a command that reads {request_id, request_body, recorded, candidate} as JSON on "
                 "stdin and prints a score");
  cmd.add_flag("--quiet", a.quiet, "no progress bar");
}

namespace {

/// Runs the scorer command on one pair: the pair goes to a temp file fed as its stdin.
std::optional<double> run_scorer(const std::string& cmd, const ResponsePair& p) {
  char path[] = "/tmp/modelux-scorer-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0) return std::nullopt;
  std::string body = Json{{"request_id", p.request_id}, {"request_body", p.request_body}, {"recorded", p.recorded},
                          {"candidate", p.candidate}}
                         .dump();
  bool wrote = ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size());
  ::close(fd);
  std::optional<double> score;
  if (wrote) {
    std::string full = cmd + " < " + path;
    if (FILE* f = ::popen(full.c_str(), "r")) {
      double v = 0;
      if (std::fscanf(f, "%lf", &v) == 1) score = v;
      ::pclose(f);
    }
  }
  ::unlink(path);
  return score;
}

}  // namespace

int run_replay(const ReplayArgs& a, std::ostream& out, std::ostream& err, const Clock& clock,
               ConfigPublisher* publisher) {
  if (a.promote && a.require.empty()) {
    err << "modelux replay: --promote needs --require \"...\" (the guard the candidate must pass)\n";
    return 2;
  }
  if (!a.require.empty()) {  // a bad guard is a usage error before minutes of replay
    if (auto g = parse_guard(a.require); !g) {
      err << "modelux replay: --require: " << g.error().message << "\n";
      return 2;
    }
  }
  ReplayOptions o;
  o.slug = a.slug;
  o.limit = a.limit;
  o.seed = a.seed;
  o.concurrency = a.concurrency;
  o.cost_cap_usd = a.cost_cap_usd;
  auto mode = replay_mode_from_string(a.mode);
  if (!mode) {
    err << "modelux replay: --mode wants routing or responses\n";
    return 2;
  }
  o.mode = *mode;
  if (!a.since.empty()) {
    auto d = parse_since(a.since);
    if (!d) {
      err << "modelux replay: --since: " << d.error().message << "\n";
      return 2;
    }
    o.since = clock.wall_now() - std::chrono::duration_cast<WallTime::duration>(*d);
  }
  auto base = a.config.empty() ? Config::embedded_defaults() : Config::load_file(a.config);
  if (!base) {
    err << "modelux replay: --config: " << base.error().describe() << "\n";
    return 1;
  }
  o.store_path = !a.db.empty()                            ? a.db
                 : !base->tracing_options.path.empty()   ? base->tracing_options.path
                                                         : std::string("modelux-traces.db");
  o.base = std::move(*base);
  {
    std::ifstream f(a.candidate);
    std::stringstream ss;
    ss << f.rdbuf();
    Json doc = Json::parse(ss.str(), nullptr, false);
    if (doc.is_discarded()) {
      err << "modelux replay: the candidate '" << a.candidate << "' is not valid JSON\n";
      return 1;
    }
    auto expanded = expand_env(doc);
    if (!expanded) {
      err << "modelux replay: the candidate: " << expanded.error().describe() << "\n";
      return 1;
    }
    o.candidate = std::move(*expanded);
  }
  if (!a.scorer.empty()) o.scorer = [cmd = a.scorer](const ResponsePair& p) { return run_scorer(cmd, p); };
  const bool bar = !a.quiet && ::isatty(STDERR_FILENO);
  if (bar)
    o.progress = [&err](std::size_t done, std::size_t total) {
      const int width = 30;
      int fill = total ? static_cast<int>(width * done / total) : width;
      err << "\r[" << std::string(static_cast<std::size_t>(fill), '#') << std::string(static_cast<std::size_t>(width - fill), '.')
          << "] " << done << "/" << total << std::flush;
    };

  auto rep = replay(o);
  if (bar) err << "\r" << std::string(60, ' ') << "\r";
  if (!rep) {
    err << "modelux replay: " << rep.error().describe() << "\n";
    return 1;
  }
  out << rep->table();
  if (!a.json_out.empty()) {
    std::ofstream f(a.json_out);
    f << rep->to_json().dump(2) << "\n";
    if (!f) {
      err << "modelux replay: cannot write " << a.json_out << "\n";
      return 1;
    }
  }
  if (a.require.empty()) return 0;
  auto verdict = evaluate_guard(a.require, *rep);
  if (!verdict) {
    err << "modelux replay: --require: " << verdict.error().message << "\n";
    return 2;
  }
  out << verdict->summary() << "\n";
  if (!verdict->passed) return 3;
  if (!a.promote) return 0;
  auto routing = candidate_routing(o.candidate, o.slug);
  if (!routing) {
    err << "modelux replay: " << routing.error().message << "\n";
    return 1;
  }
  auto version = promote(*rep, *routing, a.require, publisher);
  if (!version) {
    err << "modelux replay: " << version.error().message << "\n";
    return 1;
  }
  out << "promoted " << rep->slug << " as version " << *version << "\n";
  return 0;
}

}  // namespace modelux
