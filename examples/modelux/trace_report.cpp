// Text reports for `modelux logs` and `modelux spend`: a single trace in full, a trace list,
// a spend table. Pure functions from values to strings so tests can check them exactly.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "modelux/trace.hpp"
#include "trace_cli.hpp"

namespace modelux {

namespace {

std::string fmt_time(WallTime t, bool millis = true) {
  // "2026-01-01 00:00:00.123" (UTC)
  std::string iso = format_iso_time(t);  // 2026-01-01T00:00:00.123456Z
  iso[10] = ' ';
  return iso.substr(0, millis ? 23 : 19);
}

std::string fmt_ms(Nanos n) {
  double ms = static_cast<double>(n.count()) / 1e6;
  if (n.count() == 0) return "0 ms";
  if (ms < 10) return fmt::format("{:.1f} ms", ms);
  return fmt::format("{:.0f} ms", ms);
}

std::string fmt_usd(double v) {
  if (v == 0) return "$0";
  if (std::fabs(v) >= 100) return fmt::format("${:.2f}", v);
  if (std::fabs(v) >= 0.01) return fmt::format("${:.4f}", v);
  return fmt::format("${:.6f}", v);
}

std::string fmt_int(std::int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string tags_text(const std::vector<std::pair<std::string, std::string>>& tags) {
  std::string s;
  for (const auto& [k, v] : tags) {
    if (!s.empty()) s += ' ';
    s += k + "=" + v;
  }
  return s;
}

std::string tokens_text(const Usage& u) {
  std::string s = fmt_int(u.prompt_tokens) + " in";
  if (u.cached_tokens) s += " (" + fmt_int(u.cached_tokens) + " cached)";
  s += " / " + fmt_int(u.completion_tokens) + " out";
  if (u.reasoning_tokens) s += " (" + fmt_int(u.reasoning_tokens) + " reasoning)";
  return s;
}

// Lays out rows of cells in aligned columns; `right[i]` right-aligns column i.
std::string table(const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& right,
                  const std::string& indent = "") {
  std::vector<std::size_t> width;
  auto display_width = [](const std::string& s) {
    std::size_t w = 0;
    for (unsigned char c : s)
      if ((c & 0xC0) != 0x80) ++w;
    return w;
  };
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], display_width(r[i]));
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line = indent;
    for (std::size_t i = 0; i < r.size(); ++i) {
      std::size_t pad = width[i] - display_width(r[i]);
      bool last = i + 1 == r.size();
      if (i < right.size() && right[i]) line += std::string(pad, ' ') + r[i];
      else line += r[i] + (last ? "" : std::string(pad, ' '));
      if (!last) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::string format_trace(const DecisionTrace& t) {
  std::string o;
  o += fmt::format("request   {}  {} UTC{}\n", t.request_id, fmt_time(t.time), t.stream ? "  (stream)" : "");
  std::string config = t.config.empty() ? "-" : t.config;
  if (t.config_version) config += fmt::format(" v{}", t.config_version);
  if (!t.strategy.empty()) config += " (" + t.strategy + ")";
  o += "config    " + config + "\n";
  std::string who = "project " + (t.project.empty() ? std::string("-") : t.project);
  if (!t.org.empty()) who += "  org " + t.org;
  if (!t.end_user.empty()) who += "  user " + t.end_user;
  if (!t.api_key_id.empty()) who += "  key " + t.api_key_id;
  o += "who       " + who + "\n";
  if (!t.tags.empty()) o += "tags      " + tags_text(t.tags) + "\n";
  if (!t.ab_arm.empty()) o += "a/b arm   " + t.ab_arm + "\n";
  o += fmt::format("status    {}\n", t.ok ? "ok" : "error " + t.error_kind + (t.error_message.empty() ? "" : ": " + t.error_message));
  o += "decision  " + (t.decision.empty() ? std::string("-") : t.decision) + "\n";
  if (!t.reason.empty()) o += "reason    " + t.reason + "\n";

  o += fmt::format("attempts  {}\n", t.attempts.size());
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"#", "target", "start", "took", "ttft", "outcome", "tokens", "cost", "why tried", "why ended"});
  for (const auto& a : t.attempts) {
    std::string outcome = a.outcome.empty() ? (a.ok ? "ok" : "error") : a.outcome;
    if (a.status) outcome += fmt::format(" {}", a.status);
    std::string target = a.model + (a.provider.empty() ? "" : " (" + a.provider + ")");
    if (a.member >= 0) target += fmt::format(" [member {}]", a.member);
    std::string ended = a.why_ended;
    if (!a.ok && !a.error.empty() && a.error != a.why_ended) ended += (ended.empty() ? "" : ": ") + a.error;
    if (!a.vote.empty()) ended += (ended.empty() ? "" : "; ") + std::string("vote ") + a.vote;
    rows.push_back({std::to_string(a.id), target, "+" + fmt_ms(a.start_offset), fmt_ms(a.duration),
                    a.ttft.count() ? fmt_ms(a.ttft) : "-", outcome,
                    a.usage.empty() ? "-" : fmt::format("{}/{}", fmt_int(a.usage.prompt_tokens), fmt_int(a.usage.completion_tokens)),
                    fmt_usd(a.cost.total()), a.why_tried.empty() ? "-" : a.why_tried, ended.empty() ? "-" : ended});
  }
  if (!t.attempts.empty()) o += table(rows, {true, false, true, true, true, false, true, true, false, false}, "  ");

  o += "latency   total " + fmt_ms(t.total) + (t.ttft.count() ? ", ttft " + fmt_ms(t.ttft) : std::string()) + "\n";
  o += "tokens    " + tokens_text(t.usage) + "\n";
  o += fmt::format("cost      {} = input {} + output {}\n", fmt_usd(t.cost.total()), fmt_usd(t.cost.input_usd),
                   fmt_usd(t.cost.output_usd));
  if (!t.aggregation.empty()) o += "ensemble  " + t.aggregation + "\n";
  for (std::size_t i = 0; i < t.budget_actions.size(); ++i)
    o += (i == 0 ? "budget    " : "          ") + t.budget_actions[i] + "\n";
  if (!t.request_body.empty()) o += "request body\n  " + t.request_body + "\n";
  if (!t.response_body.empty()) o += "response body\n  " + t.response_body + "\n";
  return o;
}

std::string format_trace_list(const std::vector<DecisionTrace>& traces, const TraceCounters& c) {
  std::string o;
  if (traces.empty()) {
    o += "no traces match\n";
  } else {
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"TIME (UTC)", "REQUEST", "CONFIG", "PROJECT", "MODEL", "STATUS", "TRIES", "LATENCY", "COST", "TAGS"});
    for (const auto& t : traces) {
      std::string config = t.config.empty() ? "-" : t.config;
      if (t.config_version) config += fmt::format(" v{}", t.config_version);
      rows.push_back({fmt_time(t.time), t.request_id, config, t.project.empty() ? "-" : t.project,
                      t.served_model.empty() ? "-" : t.served_model, t.ok ? "ok" : "error " + t.error_kind,
                      std::to_string(t.attempts.size()), fmt_ms(t.total), fmt_usd(t.cost.total()),
                      t.tags.empty() ? "-" : tags_text(t.tags)});
    }
    o += table(rows, {false, false, false, false, false, false, true, true, true, false});
  }
  // "dropped" counts what a running tracer knew it dropped; traces still queued when a process
  // was killed (kill -9, a crash) were never counted anywhere, so the line says so.
  o += fmt::format("{} shown; store holds {} traces; tracer wrote {}, dropped {}, write errors {}", traces.size(),
                   fmt_int(static_cast<std::int64_t>(c.stored)), fmt_int(static_cast<std::int64_t>(c.written)),
                   fmt_int(static_cast<std::int64_t>(c.dropped)), fmt_int(static_cast<std::int64_t>(c.write_errors)));
  if (c.updated) o += " (as of " + fmt_time(*c.updated, false) + " UTC)";
  o += "\n";
  o += "note: dropped counts only drops the tracer saw; traces still queued when a process crashed or was killed are not counted\n";
  if (c.dropped) o += "warning: " + fmt_int(static_cast<std::int64_t>(c.dropped)) +
                      " traces were dropped (queue full or the store could not be written)\n";
  return o;
}

std::string format_spend(const SpendReport& r) {
  std::string o = fmt::format("spend by {}, {} .. {} UTC\n", to_string(r.by), fmt_time(r.since, false),
                              fmt_time(r.until, false));
  std::string head = std::string(to_string(r.by));
  std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return std::toupper(c); });
  std::vector<std::vector<std::string>> rows;
  rows.push_back({head, "REQUESTS", "INPUT TOK", "OUTPUT TOK", "INPUT $", "OUTPUT $", "TOTAL $", "SHARE"});
  const double total = r.total.total_usd();
  auto row = [&](const SpendRow& s) {
    return std::vector<std::string>{
        s.key,
        fmt_int(static_cast<std::int64_t>(s.requests)),
        fmt_int(s.input_tokens),
        fmt_int(s.output_tokens),
        fmt_usd(s.input_usd),
        fmt_usd(s.output_usd),
        fmt_usd(s.total_usd()),
        total > 0 ? fmt::format("{:.1f}%", 100.0 * s.total_usd() / total) : "-"};
  };
  for (const auto& s : r.rows) rows.push_back(row(s));
  SpendRow t = r.total;
  t.key = "TOTAL";
  rows.push_back(row(t));
  std::string out = table(rows, {false, true, true, true, true, true, true, true});
  // A rule above the totals line, as wide as the header.
  const std::size_t width = out.find('\n');
  const std::size_t last_line = out.rfind('\n', out.size() - 2) + 1;
  out.insert(last_line, std::string(width, '-') + "\n");
  o += out;
  if (r.by == SpendDimension::tag)
    o += "(a request with several tags counts under each; TOTAL counts it once)\n";
  if (r.rows.empty()) o += "no spend in this window\n";
  return o;
}

std::string format_forecast(const CostForecast& f) {
  return fmt::format("forecast  month to date {}; {}/day recently; month end ~{} ({:.1f} days left)\n",
                     fmt_usd(f.month_to_date_usd), fmt_usd(f.daily_rate_usd), fmt_usd(f.forecast_usd),
                     f.days_remaining);
}

Result<Nanos> parse_since(std::string_view s) {
  if (s.empty()) return fail(ErrorKind::bad_request, "empty duration (use e.g. 90s, 15m, 1h, 7d)");
  std::size_t i = 0;
  std::int64_t n = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    n = n * 10 + (s[i] - '0');
    if (n > 100'000'000) return fail(ErrorKind::bad_request, "duration '" + std::string(s) + "' is too long");
    ++i;
  }
  if (i == 0 || i + 1 != s.size())
    return fail(ErrorKind::bad_request, "bad duration '" + std::string(s) + "' (use e.g. 90s, 15m, 1h, 7d, 2w)");
  using namespace std::chrono;
  switch (s[i]) {
    case 's': return duration_cast<Nanos>(seconds{n});
    case 'm': return duration_cast<Nanos>(minutes{n});
    case 'h': return duration_cast<Nanos>(hours{n});
    case 'd': return duration_cast<Nanos>(hours{24 * n});
    case 'w': return duration_cast<Nanos>(hours{24 * 7 * n});
  }
  return fail(ErrorKind::bad_request, "bad duration unit in '" + std::string(s) + "' (s, m, h, d or w)");
}

}  // namespace modelux
