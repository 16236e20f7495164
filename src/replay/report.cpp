// The replay report's forms (JSON, the terminal table), the promotion guard and promote().
//
// The guard is a comma-separated list of `metric op rhs` clauses evaluated on the candidate
// side; `current` in rhs is the same metric as recorded. Parsing is a small hand-written
// scanner: the grammar is four tokens long and errors must name the clause.
#include <cmath>
#include <cstdio>
#include <sstream>

#include <fmt/format.h>

#include "modelux/replay.hpp"
#include "modelux/trace.hpp"

namespace modelux {

namespace {

Json sorted_counts(const std::map<std::string, std::size_t>& m) {
  Json j = Json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}

}  // namespace

Json ReplaySide::to_json() const {
  return Json{{"requests", requests},
              {"succeeded", succeeded},
              {"success_rate", success_rate},
              {"errors", sorted_counts(errors)},
              {"failovers", failovers},
              {"failover_rate", failover_rate},
              {"p50_ms", p50_ms},
              {"p95_ms", p95_ms},
              {"p99_ms", p99_ms},
              {"ttft_p50_ms", ttft_p50_ms},
              {"ttft_p95_ms", ttft_p95_ms},
              {"ttft_p99_ms", ttft_p99_ms},
              {"ttft_samples", ttft_samples},
              {"cost_usd", cost_usd},
              {"cost_per_request_usd", cost_per_request_usd},
              {"routes", sorted_counts(routes)},
              {"total_budget_violations", total_budget_violations},
              {"budget_downgrades", budget_downgrades},
              {"budget_blocks", budget_blocks}};
}

Json ReplayRow::to_json() const {
  Json j{{"request_id", request_id},
         {"time", format_iso_time(time)},
         {"current_ok", current_ok},
         {"current_target", current_target},
         {"current_error", current_error},
         {"current_latency_ms", current_latency_ms},
         {"current_cost_usd", current_cost_usd},
         {"candidate_ok", candidate_ok},
         {"candidate_target", candidate_target},
         {"candidate_error", candidate_error},
         {"candidate_latency_ms", candidate_latency_ms},
         {"candidate_ttft_ms", candidate_ttft_ms},
         {"candidate_cost_usd", candidate_cost_usd},
         {"candidate_attempts", candidate_attempts},
         {"candidate_downgraded", candidate_downgraded}};
  if (exact_match) j["exact_match"] = *exact_match;
  if (candidate_json_valid) j["candidate_json_valid"] = *candidate_json_valid;
  if (length_ratio) j["length_ratio"] = *length_ratio;
  if (score) j["score"] = *score;
  return j;
}

Json ResponsesSummary::to_json() const {
  Json j{{"with_bodies", with_bodies},
         {"sent", sent},
         {"skipped_cost_cap", skipped_cost_cap},
         {"exact_matches", exact_matches},
         {"json_valid_recorded", json_valid_recorded},
         {"json_valid_candidate", json_valid_candidate},
         {"mean_length_ratio", mean_length_ratio}};
  j["mean_score"] = mean_score ? Json(*mean_score) : Json(nullptr);
  return j;
}

const std::vector<std::string>& guard_metrics() {
  static const std::vector<std::string> names = {
      "success",  "failover", "p50",  "p95",  "p99",      "ttft_p50",   "ttft_p95",  "ttft_p99",
      "cost",     "cost_per_request", "errors", "violations", "downgrades", "blocks", "requests"};
  return names;
}

std::optional<double> ReplayReport::metric(std::string_view name, bool cand) const {
  const ReplaySide& s = cand ? candidate : current;
  auto d = [](std::size_t v) { return static_cast<double>(v); };
  if (name == "success" || name == "success_rate") return s.success_rate;
  if (name == "failover" || name == "failover_rate") return s.failover_rate;
  if (name == "p50") return s.p50_ms;
  if (name == "p95") return s.p95_ms;
  if (name == "p99") return s.p99_ms;
  if (name == "ttft_p50") return s.ttft_p50_ms;
  if (name == "ttft_p95") return s.ttft_p95_ms;
  if (name == "ttft_p99") return s.ttft_p99_ms;
  if (name == "cost") return s.cost_usd;
  if (name == "cost_per_request") return s.cost_per_request_usd;
  if (name == "errors") return d(s.requests - s.succeeded);
  if (name == "violations") return d(s.total_budget_violations);
  if (name == "downgrades") return d(s.budget_downgrades);
  if (name == "blocks") return d(s.budget_blocks);
  if (name == "requests") return d(s.requests);
  return std::nullopt;
}

Json ReplayReport::to_json() const {
  Json delta = Json::object();
  for (const auto& m : guard_metrics()) {
    auto a = metric(m, false), b = metric(m, true);
    if (a && b) delta[m] = *b - *a;
  }
  Json tj = Json::array();
  for (const auto& t : targets)
    tj.push_back({{"target", t.target},
                  {"samples", t.samples},
                  {"fitted", t.fitted},
                  {"ok_rate", t.ok_rate},
                  {"rate_limited_rate", t.rate_limited_rate},
                  {"timeout_rate", t.timeout_rate},
                  {"error_rate", t.error_rate},
                  {"p50_ms", t.p50_ms},
                  {"p95_ms", t.p95_ms},
                  {"attempted", t.attempted}});
  Json rj = Json::array();
  for (const auto& r : rows) rj.push_back(r.to_json());
  Json j{{"mode", std::string(to_string(mode))},
         {"slug", slug},
         {"store", store},
         {"traces", traces},
         {"from", format_iso_time(from)},
         {"to", format_iso_time(to)},
         {"seed", seed},
         {"current", current.to_json()},
         {"candidate", candidate.to_json()},
         {"delta", std::move(delta)},
         {"targets", std::move(tj)},
         {"unfitted_targets", unfitted_targets},
         {"notes", notes},
         {"wall_seconds", wall_seconds},
         {"rows", std::move(rj)}};
  if (mode == ReplayMode::responses) j["responses"] = responses.to_json();
  return j;
}

std::string ReplayReport::table() const {
  std::string o;
  o += fmt::format("replay of {} ({} requests, {} .. {}), {} mode, seed {}\n", slug, traces, format_iso_time(from),
                   format_iso_time(to), to_string(mode), seed);
  o += fmt::format("{:<26} {:>14} {:>14} {:>14}\n", "", "current", "candidate", "delta");
  auto row = [&](const char* label, double a, double b, const char* f) {
    o += fmt::format("{:<26} {:>14} {:>14} {:>14}\n", label, fmt::format(fmt::runtime(f), a),
                     fmt::format(fmt::runtime(f), b), fmt::format(fmt::runtime(std::string("{:+") + (f + 2)), b - a));
  };
  auto d = [](std::size_t v) { return static_cast<double>(v); };
  row("requests", d(current.requests), d(candidate.requests), "{:.0f}");
  row("success rate %", current.success_rate * 100, candidate.success_rate * 100, "{:.2f}");
  row("failover rate %", current.failover_rate * 100, candidate.failover_rate * 100, "{:.2f}");
  row("latency p50 ms", current.p50_ms, candidate.p50_ms, "{:.1f}");
  row("latency p95 ms", current.p95_ms, candidate.p95_ms, "{:.1f}");
  row("latency p99 ms", current.p99_ms, candidate.p99_ms, "{:.1f}");
  row("ttft p50 ms", current.ttft_p50_ms, candidate.ttft_p50_ms, "{:.1f}");
  row("ttft p95 ms", current.ttft_p95_ms, candidate.ttft_p95_ms, "{:.1f}");
  row("ttft p99 ms", current.ttft_p99_ms, candidate.ttft_p99_ms, "{:.1f}");
  row("cost total $", current.cost_usd, candidate.cost_usd, "{:.4f}");
  row("cost per request $", current.cost_per_request_usd, candidate.cost_per_request_usd, "{:.6f}");
  row("total-budget violations", d(current.total_budget_violations), d(candidate.total_budget_violations), "{:.0f}");
  row("budget downgrades", d(current.budget_downgrades), d(candidate.budget_downgrades), "{:.0f}");
  row("budget blocks", d(current.budget_blocks), d(candidate.budget_blocks), "{:.0f}");
  std::map<std::string, std::pair<std::size_t, std::size_t>> errs, routes;
  for (const auto& [k, v] : current.errors) errs[k].first = v;
  for (const auto& [k, v] : candidate.errors) errs[k].second = v;
  for (const auto& [k, v] : current.routes) routes[k].first = v;
  for (const auto& [k, v] : candidate.routes) routes[k].second = v;
  if (!errs.empty()) o += "errors\n";
  for (const auto& [k, v] : errs) row(("  " + k).c_str(), d(v.first), d(v.second), "{:.0f}");
  if (!routes.empty()) o += "served by\n";
  for (const auto& [k, v] : routes) row(("  " + k).c_str(), d(v.first), d(v.second), "{:.0f}");
  if (mode == ReplayMode::responses) {
    o += fmt::format("responses: {} with bodies, {} sent, {} skipped at the cost cap, {} exact matches, JSON valid "
                     "{} recorded / {} candidate, mean length ratio {:.2f}{}\n",
                     responses.with_bodies, responses.sent, responses.skipped_cost_cap, responses.exact_matches,
                     responses.json_valid_recorded, responses.json_valid_candidate, responses.mean_length_ratio,
                     responses.mean_score ? fmt::format(", mean score {:.3f}", *responses.mean_score) : "");
  }
  if (!targets.empty()) o += "targets (fitted from the traces)\n";
  for (const auto& t : targets) {
    if (t.fitted)
      o += fmt::format("  {:<36} n={:<7} ok {:5.1f}%  429 {:5.1f}%  timeout {:5.1f}%  other {:5.1f}%  p50 {:.0f} ms  "
                       "p95 {:.0f} ms  used {}\n",
                       t.target, t.samples, t.ok_rate * 100, t.rate_limited_rate * 100, t.timeout_rate * 100,
                       t.error_rate * 100, t.p50_ms, t.p95_ms, t.attempted);
    else
      o += fmt::format("  {:<36} NOT SEEN in the traces: defaults assumed, used {}\n", t.target, t.attempted);
  }
  for (const auto& n : notes) o += "note: " + n + "\n";
  o += fmt::format("replayed in {:.2f} s\n", wall_seconds);
  return o;
}

// ---- Guard ----------------------------------------------------------------------------------------

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::optional<double> number(std::string_view s) {
  s = trim(s);
  bool pct = !s.empty() && s.back() == '%';
  if (pct) s.remove_suffix(1);
  if (s.empty()) return std::nullopt;
  std::string str(s);
  char* end = nullptr;
  double v = std::strtod(str.c_str(), &end);
  if (end != str.c_str() + str.size() || !std::isfinite(v)) return std::nullopt;
  return pct ? v / 100 : v;
}

}  // namespace

Result<std::vector<GuardClause>> parse_guard(std::string_view text) {
  std::vector<GuardClause> out;
  auto known = [](std::string_view m) {
    for (const auto& n : guard_metrics())
      if (n == m) return true;
    return false;
  };
  std::string names;
  for (const auto& n : guard_metrics()) names += (names.empty() ? "" : ", ") + n;
  if (trim(text).empty()) return fail(ErrorKind::bad_request, "the guard is empty (e.g. \"success>=current,p95<=1.1*current\")");
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    std::string_view raw = text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    pos = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
    std::string_view c = trim(raw);
    if (c.empty()) return fail(ErrorKind::bad_request, "the guard has an empty clause (two commas in a row?)");
    GuardClause g;
    g.text = std::string(c);
    std::size_t op_at = c.find_first_of("<>=");
    if (op_at == std::string_view::npos)
      return fail(ErrorKind::bad_request, "guard clause '" + g.text + "' has no comparison (>=, <=, >, <, ==)");
    std::size_t op_len = op_at + 1 < c.size() && c[op_at + 1] == '=' ? 2 : 1;
    g.op = std::string(c.substr(op_at, op_len));
    if (g.op == "=") return fail(ErrorKind::bad_request, "guard clause '" + g.text + "': use == to compare for equality");
    if (g.op == "=>" || g.op == "=<")
      return fail(ErrorKind::bad_request, "guard clause '" + g.text + "': write >= or <=");
    g.metric = std::string(trim(c.substr(0, op_at)));
    if (g.metric.empty()) return fail(ErrorKind::bad_request, "guard clause '" + g.text + "' has no metric before " + g.op);
    if (!known(g.metric))
      return fail(ErrorKind::bad_request, "guard clause '" + g.text + "': unknown metric '" + g.metric + "' (known: " + names + ")");
    std::string_view rhs = trim(c.substr(op_at + op_len));
    if (rhs.empty()) return fail(ErrorKind::bad_request, "guard clause '" + g.text + "' has nothing after " + g.op);
    if (rhs == "current") {
      g.relative = true;
    } else if (auto star = rhs.find('*'); star != std::string_view::npos) {
      std::string_view a = trim(rhs.substr(0, star)), b = trim(rhs.substr(star + 1));
      std::string_view num = a == "current" ? b : a;
      if ((a == "current") == (b == "current"))
        return fail(ErrorKind::bad_request, "guard clause '" + g.text + "': write k*current (e.g. 1.1*current)");
      auto k = number(num);
      if (!k) return fail(ErrorKind::bad_request, "guard clause '" + g.text + "': '" + std::string(num) + "' is not a number");
      g.relative = true;
      g.factor = *k;
    } else {
      auto k = number(rhs);
      if (!k)
        return fail(ErrorKind::bad_request, "guard clause '" + g.text + "': '" + std::string(rhs) +
                                                "' is not a number, 'current' or k*current");
      g.constant = *k;
    }
    out.push_back(std::move(g));
  }
  return out;
}

Result<GuardVerdict> evaluate_guard(std::string_view text, const ReplayReport& report) {
  auto clauses = parse_guard(text);
  if (!clauses) return fail(clauses.error());
  GuardVerdict v;
  v.passed = true;
  for (const auto& g : *clauses) {
    GuardCheck c;
    c.clause = g.text;
    c.candidate = report.metric(g.metric, true).value_or(0);
    c.bound = g.relative ? g.factor * report.metric(g.metric, false).value_or(0) : g.constant;
    const double eps = 1e-12 * std::max(1.0, std::fabs(c.bound));
    if (g.op == ">=") c.passed = c.candidate >= c.bound - eps;
    else if (g.op == "<=") c.passed = c.candidate <= c.bound + eps;
    else if (g.op == ">") c.passed = c.candidate > c.bound;
    else if (g.op == "<") c.passed = c.candidate < c.bound;
    else c.passed = std::fabs(c.candidate - c.bound) <= eps;
    v.passed = v.passed && c.passed;
    v.checks.push_back(std::move(c));
  }
  return v;
}

std::string GuardVerdict::summary() const {
  std::string o = passed ? "guard passed:" : "guard FAILED:";
  for (const auto& c : checks)
    o += fmt::format(" [{} {}: candidate {:.6g} vs bound {:.6g}]", c.passed ? "ok" : "FAIL", c.clause, c.candidate,
                     c.bound);
  return o;
}

Result<std::int64_t> promote(const ReplayReport& report, const Json& candidate_routing_config, std::string_view guard,
                             ConfigPublisher* publisher) {
  auto v = evaluate_guard(guard, report);
  if (!v) return fail(v.error());
  if (!v->passed) return fail(ErrorKind::bad_request, "not promoted: " + v->summary());
  if (!publisher)
    return fail(ErrorKind::unsupported,
                "--promote needs the config store (versioned configs with an audit log), which this build does not "
                "have; the guard passed: " + v->summary());
  Json audit{{"action", "promote"},
             {"source", "replay"},
             {"guard", std::string(guard)},
             {"verdict", v->summary()},
             {"replay", {{"slug", report.slug},
                         {"traces", report.traces},
                         {"seed", report.seed},
                         {"from", format_iso_time(report.from)},
                         {"to", format_iso_time(report.to)},
                         {"current", report.current.to_json()},
                         {"candidate", report.candidate.to_json()}}}};
  std::string slug = report.slug.starts_with('@') ? report.slug.substr(1) : report.slug;
  return publisher->publish(slug, candidate_routing_config, audit);
}

}  // namespace modelux
