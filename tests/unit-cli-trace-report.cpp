// Reports and the `modelux logs` / `modelux spend` commands, run end to end on a real file.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "trace_cli.hpp"
#include "unit-trace-support.hpp"

using namespace trace_test;

namespace {

DecisionTrace failover_trace() {
  auto t = make_trace("req_failover01",
                      base_time() - 10min,
                      {{"claude-haiku-4-5", "anthropic", false, "timeout", 2000ms, 0, 0, 0, 0, 0ms,
                        "attempt timeout 2000 ms"},
                       {"gpt-4o-mini", "openai", true, "ok", 812ms, 0.00018, 0.000204, 1200, 340, 201ms}},
                      "acme", "user-42", {{"env", "prod"}, {"feature", "chat"}});
  t.config_version = 7;
  t.reason = "primary timeout, secondary healthy";
  t.attempts[1].start_offset = 2000ms;
  t.attempts[1].usage.cached_tokens = 1000;
  t.usage.cached_tokens = 1000;
  t.budget_actions = {"reserved $0.0012 on project:acme/daily"};
  return t;
}

struct Cli {
  TempDb db{"cli"};
  ManualClock clock{base_time()};
  Cli() {
    auto store = TraceStore::open(db.path);
    REQUIRE(store);
    REQUIRE((*store)->write({
        failover_trace(),
        make_trace("req_ok_dev", base_time() - 2h, {{"gpt-4o-mini", "openai", true, "ok", 300ms, 0.01, 0.02, 1000, 400}},
                   "beta", "u1", {{"env", "dev"}}),
        make_trace("req_err", base_time() - 3h,
                   {{"claude-haiku-4-5", "anthropic", false, "rate_limited", 40ms, 0, 0, 0, 0, 0ms, "slow down"}}, "acme",
                   "u2", {{"env", "prod"}}),
        make_trace("req_old", base_time() - 48h, {{"gemini-2.5-flash", "google", true, "ok", 400ms, 0.5, 0.5, 9, 9}},
                   "beta"),
    }));
    REQUIRE((*store)->add_counters(4, 3, 1, base_time()));
  }
  std::tuple<int, std::string, std::string> run(std::vector<std::string> args) {
    std::ostringstream out, err;
    int rc = args[0] == "logs" ? run_logs(args, out, err, clock) : run_spend(args, out, err, clock);
    return {rc, out.str(), err.str()};
  }
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("format_trace: attempts with outcome and timing, decision, reason, cost split, latency and TTFT") {
  std::string s = format_trace(failover_trace());
  INFO(s);
  CHECK(has(s, "request   req_failover01  2026-01-15 11:50:00.000 UTC\n"));
  CHECK(has(s, "config    @production v7 (fallback)\n"));
  CHECK(has(s, "who       project acme  user user-42\n"));
  CHECK(has(s, "tags      env=prod feature=chat\n"));
  CHECK(has(s, "status    ok\n"));
  CHECK(has(s, "decision  served by gpt-4o-mini (attempt 2)\n"));
  CHECK(has(s, "reason    primary timeout, secondary healthy\n"));
  CHECK(has(s, "latency   total 2812 ms, ttft 2201 ms\n"));
  CHECK(has(s, "tokens    1,200 in (1,000 cached) / 340 out\n"));
  CHECK(has(s, "cost      $0.000384 = input $0.000180 + output $0.000204\n"));
  CHECK(has(s, "budget    reserved $0.0012 on project:acme/daily\n"));
  // The attempt table: header plus one row per attempt, columns aligned.
  auto ls = lines_of(s);
  std::vector<std::string> rows;
  for (const auto& l : ls)
    if (l.rfind("  ", 0) == 0) rows.push_back(l);
  REQUIRE(rows.size() == 3);
  CHECK(has(rows[1], "claude-haiku-4-5 (anthropic)"));
  CHECK(has(rows[1], "timeout"));
  CHECK(has(rows[1], "primary"));
  CHECK(has(rows[2], "gpt-4o-mini (openai)"));
  CHECK(has(rows[2], "+2000 ms"));
  CHECK(has(rows[2], "812 ms"));
  CHECK(has(rows[2], "201 ms"));
  CHECK(has(rows[2], "ok 200"));
  CHECK(has(rows[2], "fallback after timeout"));
  CHECK(has(rows[2], "served"));
  // Right-aligned "took" column: "2000 ms", "812 ms" and the header "took" end at the same
  // offset. Each is found first: npos + 7 == npos + 7 would pass on a missing column.
  const auto took_head = rows[0].find(" took");
  const auto took1 = rows[1].find(" 2000 ms");  // after "+0 ms": only the took column has it
  const auto took2 = rows[2].find(" 812 ms");
  REQUIRE(took_head != std::string::npos);
  REQUIRE(took1 != std::string::npos);
  REQUIRE(took2 != std::string::npos);
  CHECK(took1 + 8 == took2 + 7);
  CHECK(took_head + 5 == took2 + 7);
}

TEST_CASE("format_spend: aligned table with a totals line") {
  SpendReport r;
  r.by = SpendDimension::model;
  r.since = base_time() - 24h;
  r.until = base_time();
  r.rows = {{"gpt-4o-mini", 3, 1300, 480, 0.013, 0.024}, {"claude-haiku-4-5", 12, 100, 50, 0.001, 0.002}};
  r.total = {"total", 14, 1400, 530, 0.014, 0.026};
  std::string s = format_spend(r);
  INFO(s);
  auto ls = lines_of(s);
  REQUIRE(ls.size() == 6);
  CHECK(ls[0] == "spend by model, 2026-01-14 12:00:00 .. 2026-01-15 12:00:00 UTC");
  CHECK(ls[1].rfind("MODEL", 0) == 0);
  CHECK(ls[4] == std::string(ls[1].size(), '-'));
  CHECK(ls[5].rfind("TOTAL", 0) == 0);
  for (std::size_t i = 1; i < ls.size(); ++i) CHECK(ls[i].size() == ls[1].size());  // right-aligned: same width
  CHECK(has(ls[2], "gpt-4o-mini"));
  CHECK(has(ls[2], "$0.0370"));
  CHECK(has(ls[2], "92.5%"));
  CHECK(has(ls[5], "$0.0400"));
  CHECK(has(ls[5], "1,400"));
  CHECK(has(ls[5], "100.0%"));
}

TEST_CASE("parse_since: units and bad input") {
  CHECK(parse_since("90s").value() == Nanos{90s});
  CHECK(parse_since("15m").value() == Nanos{15min});
  CHECK(parse_since("1h").value() == Nanos{1h});
  CHECK(parse_since("7d").value() == Nanos{168h});
  CHECK(parse_since("2w").value() == Nanos{336h});
  for (const char* bad : {"", "h", "1", "1y", "-1h", "1.5h", "99999999999h"}) {
    INFO(bad);
    CHECK_FALSE(parse_since(bad));
  }
}

TEST_CASE("modelux logs --trace prints one trace in full") {
  Cli cli;
  auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path, "--trace", "req_failover01"});
  CHECK(rc == 0);
  CHECK(err.empty());
  CHECK(out == format_trace(failover_trace()));

  auto [rc2, out2, err2] = cli.run({"logs", "--db=" + cli.db.path, "--trace", "req_nope"});
  CHECK(rc2 == 1);
  CHECK(has(err2, "no trace with request id 'req_nope'"));

  auto [rc3, out3, err3] = cli.run({"logs", "--db", cli.db.path, "--trace", "req_failover01", "--json"});
  CHECK(rc3 == 0);
  auto back = DecisionTrace::from_json(Json::parse(out3));
  REQUIRE(back);
  CHECK(back->reason == "primary timeout, secondary healthy");
}

TEST_CASE("modelux logs lists traces with filters and shows the drop counts") {
  Cli cli;
  SUBCASE("no filter: every trace, newest first, with counters") {
    auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path});
    CHECK(rc == 0);
    auto ls = lines_of(out);
    REQUIRE(ls.size() == 8);  // header, 4 traces, counters, what they cannot count, drop warning
    CHECK(ls[0].rfind("TIME (UTC)", 0) == 0);
    CHECK(has(ls[1], "req_failover01"));
    CHECK(has(ls[4], "req_old"));
    CHECK(has(ls[5], "4 shown; store holds 4 traces; tracer wrote 4, dropped 3, write errors 1"));
    // "dropped" is never presented as all that could be lost (issue #11 item 10).
    CHECK(has(ls[6], "traces still queued when a process crashed or was killed are not counted"));
    CHECK(has(ls[7], "warning: 3 traces were dropped"));
  }
  SUBCASE("--tag and --since") {
    auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path, "--tag", "env=prod", "--since", "1h"});
    CHECK(rc == 0);
    CHECK(has(out, "req_failover01"));
    CHECK_FALSE(has(out, "req_err"));  // env=prod but 3 h old
    CHECK(has(out, "1 shown"));
  }
  SUBCASE("--model, --status, --limit") {
    auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path, "--model", "gpt-4o-mini", "--limit", "1"});
    CHECK(rc == 0);
    CHECK(has(out, "req_failover01"));
    CHECK_FALSE(has(out, "req_ok_dev"));
    auto [rc2, out2, err2] = cli.run({"logs", "--db", cli.db.path, "--status", "error"});
    CHECK(rc2 == 0);
    CHECK(has(out2, "req_err"));
    CHECK(has(out2, "error rate_limited"));
    CHECK(has(out2, "1 shown"));
  }
  SUBCASE("--json writes JSONL") {
    auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path, "--json", "--project", "beta"});
    CHECK(rc == 0);
    auto ls = lines_of(out);
    REQUIRE(ls.size() == 2);
    CHECK(Json::parse(ls[0])["request_id"] == "req_ok_dev");
    CHECK(Json::parse(ls[1])["request_id"] == "req_old");
  }
  SUBCASE("--csv writes a header and one row per trace") {
    auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path, "--csv", "--status", "ok"});
    CHECK(rc == 0);
    auto ls = lines_of(out);
    REQUIRE(ls.size() == 4);
    CHECK(ls[0].rfind("request_id,time,", 0) == 0);
    CHECK(ls[1].rfind("req_failover01,", 0) == 0);
    CHECK(has(ls[1], "\"primary timeout, secondary healthy\""));
  }
  SUBCASE("--summary: latency, errors, failovers") {
    auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path, "--summary", "--since", "24h"});
    CHECK(rc == 0);
    CHECK(has(out, "latency by model"));
    CHECK(has(out, "gpt-4o-mini"));
    CHECK(has(out, "rate_limited"));
    CHECK(has(out, "failover  1 of 3 requests (33.3%), 1 rescued; 1 requests failed"));
  }
}

TEST_CASE("modelux spend --by ... --since ... prints an aligned table with totals") {
  Cli cli;
  auto [rc, out, err] = cli.run({"spend", "--db", cli.db.path, "--by", "project", "--since", "24h"});
  CHECK(rc == 0);
  INFO(out);
  auto ls = lines_of(out);
  REQUIRE(ls.size() == 6);
  CHECK(ls[1].rfind("PROJECT", 0) == 0);
  CHECK(has(ls[2], "beta"));  // $0.03 beats acme's $0.000384
  CHECK(has(ls[3], "acme"));
  CHECK(has(ls[5], "TOTAL"));
  CHECK(has(ls[5], "$0.0304"));
  CHECK_FALSE(has(out, "$0.5"));  // req_old is outside the window

  auto [rc2, out2, err2] = cli.run({"spend", "--db", cli.db.path, "--by", "user", "--since", "7d", "--forecast"});
  CHECK(rc2 == 0);
  CHECK(has(out2, "USER"));
  CHECK(has(out2, "(none)"));
  CHECK(has(out2, "forecast  month to date $1.0304; "));
  CHECK(has(out2, "month end ~$"));

  for (const char* by : {"model", "provider", "tag"}) {
    auto [r, o, e] = cli.run({"spend", "--db", cli.db.path, "--by", by});
    CHECK(r == 0);
    CHECK(has(o, "TOTAL"));
  }
}

TEST_CASE("modelux spend --bucket --project --json reads the same report as the admin API") {
  Cli cli;
  auto [rc, out, err] = cli.run({"spend", "--db", cli.db.path, "--by", "project", "--since", "24h", "--bucket", "1h", "--json"});
  REQUIRE(rc == 0);
  INFO(out);
  Json j = Json::parse(out);
  CHECK(j["object"] == "spend_report");
  CHECK(j["bucket_s"] == 3600);
  REQUIRE(j["buckets"].is_array());
  double sum = 0;
  for (const auto& b : j["buckets"]) sum += b["total"]["total_usd"].get<double>();
  CHECK(sum == doctest::Approx(j["total"]["total_usd"].get<double>()));
  CHECK(j["buckets"].size() >= 2);  // the traces are hours apart

  auto [rc2, out2, err2] = cli.run({"spend", "--db", cli.db.path, "--by", "config", "--since", "24h", "--project", "beta", "--json"});
  REQUIRE(rc2 == 0);
  Json k = Json::parse(out2);
  CHECK(k["project"] == "beta");
  CHECK(k["total"]["requests"] == 1);

  auto [rc3, out3, err3] = cli.run({"spend", "--db", cli.db.path, "--since", "24h", "--bucket", "1h"});
  CHECK(rc3 == 0);
  CHECK(has(out3, "spend by model"));
  CHECK(lines_of(out3).size() > 6);  // the window's table, then one per bucket

  auto [rc4, out4, err4] = cli.run({"spend", "--db", cli.db.path, "--bucket", "xx"});
  CHECK(rc4 == 2);
  CHECK(has(err4, "--bucket"));
  auto [rc5, out5, err5] = cli.run({"spend", "--db", cli.db.path, "--since", "30d", "--bucket", "1s"});
  CHECK(rc5 == 2);
  CHECK(has(err5, "bucket"));
}

TEST_CASE("modelux logs/spend: usage errors and unreadable files") {
  Cli cli;
  auto [rc, out, err] = cli.run({"logs", "--db", cli.db.path, "--bogus"});
  CHECK(rc == 2);
  CHECK(has(err, "--bogus"));
  CHECK(has(err, "not expected"));
  CHECK(has(err, "usage: modelux logs"));
  CHECK(std::get<0>(cli.run({"logs", "--db", cli.db.path, "--status", "maybe"})) == 2);
  CHECK(std::get<0>(cli.run({"logs", "--db", cli.db.path, "--since", "yesterday"})) == 2);
  CHECK(std::get<0>(cli.run({"logs", "--db", cli.db.path, "--tag", "novalue"})) == 2);
  CHECK(std::get<0>(cli.run({"logs", "--db", cli.db.path, "--limit"})) == 2);
  CHECK(std::get<0>(cli.run({"spend", "--db", cli.db.path, "--by", "color"})) == 2);

  TempDb missing("cli-missing");
  auto [rc2, out2, err2] = cli.run({"logs", "--db", missing.path});
  CHECK(rc2 == 1);
  CHECK(has(err2, "no trace store at"));

  TempDb corrupt("cli-corrupt");
  std::ofstream(corrupt.path, std::ios::binary) << std::string(4096, '\x7f');
  auto [rc3, out3, err3] = cli.run({"spend", "--db", corrupt.path});
  CHECK(rc3 == 1);
  CHECK(has(err3, "not a SQLite database or is corrupt"));
}

TEST_CASE("format_forecast: month to date, daily rate and month-end estimate") {
  CostForecast f;
  f.month_to_date_usd = 3.04;
  f.daily_rate_usd = 1.04 / 7;
  f.forecast_usd = 3.04 + 1.04 / 7 * 16.5;
  f.days_remaining = 16.5;
  CHECK(format_forecast(f) == "forecast  month to date $3.0400; $0.1486/day recently; month end ~$5.4914 (16.5 days left)\n");
  f = {};
  f.month_to_date_usd = 0.000047;
  CHECK(has(format_forecast(f), "month to date $0.000047;"));
}

TEST_CASE("modelux logs and spend --config FILE read the config's tracing.path") {
  // Issue #14 (9): only --db found the trace store.
  Cli cli;
  const std::string cfg_path = cli.db.path + ".config.json";
  {
    std::ofstream f(cfg_path);
    f << Json{{"providers", {{"openai", {{"api_key", "k"}}}}}, {"tracing", {{"path", cli.db.path}}}}.dump();
  }
  auto [rc, out, err] = cli.run({"logs", "--config", cfg_path, "--trace", "req_failover01"});
  CHECK(rc == 0);
  CHECK(err.empty());
  CHECK(out == format_trace(failover_trace()));
  auto [rc2, out2, err2] = cli.run({"spend", "--config", cfg_path, "--since", "100h"});
  CHECK(rc2 == 0);
  CHECK(err2.empty());
  CHECK(has(out2, "gpt-4o-mini"));
  // --config @slug still filters by routing config.
  auto [rc3, out3, err3] = cli.run({"logs", "--db", cli.db.path, "--config", "@nope"});
  CHECK(rc3 == 0);
  CHECK_FALSE(has(out3, "req_ok_dev"));
  // A config without a trace file says so.
  const std::string bare = cli.db.path + ".bare.json";
  {
    std::ofstream f(bare);
    f << Json{{"providers", {{"openai", {{"api_key", "k"}}}}}}.dump();
  }
  auto [rc4, out4, err4] = cli.run({"spend", "--config", bare});
  CHECK(rc4 == 2);
  CHECK(has(err4, "tracing.path"));
  std::remove(cfg_path.c_str());
  std::remove(bare.c_str());
}
