// The analytics behind GET /v1/analytics/* and `modelux spend --bucket`: project filters,
// time buckets, the config dimension, TTFT percentiles, keyset pages stable under inserts, the
// JSON rendering, and the OTLP span mapping of a trace.
#include <doctest/doctest.h>

#include <set>

#include "modelux/otlp.hpp"
#include "unit-trace-support.hpp"

using namespace trace_test;

namespace {

std::vector<DecisionTrace> traffic() {
  const WallTime b = base_time();
  auto t1 = make_trace("a1", b - 10min, {{"gpt-4o-mini", "openai", true, "ok", 100ms, 0.01, 0.02, 10, 20, 30ms}}, "alpha", "u1",
                       {{"team", "x"}});
  auto t2 = make_trace("a2", b - 70min,
                       {{"claude-haiku-4-5", "anthropic", false, "rate_limited", 20ms, 0, 0, 0, 0, 0ms, "429 slow down"},
                        {"gpt-4o-mini", "openai", true, "ok", 300ms, 0.1, 0.2, 10, 20, 90ms}},
                       "alpha", "u2");
  auto t3 = make_trace("b1", b - 75min, {{"gpt-4o-mini", "openai", true, "ok", 200ms, 1.0, 2.0, 10, 20}}, "beta");
  t3.config = "@cheap";
  auto t4 = make_trace("b2", b - 5min, {{"gemini-2.5-flash", "google", false, "server_error", 50ms, 0, 0, 0, 0, 0ms, "upstream 500"}},
                       "beta");
  return {t1, t2, t3, t4};
}

std::shared_ptr<TraceStore> store_with(const std::vector<DecisionTrace>& ts) {
  auto s = TraceStore::open("");
  REQUIRE(s);
  REQUIRE((*s)->write(ts));
  return *s;
}

double usd(const SpendReport& r, const std::string& key) {
  for (const auto& x : r.rows)
    if (x.key == key) return x.total_usd();
  return -1;
}

}  // namespace

TEST_CASE("analytics: a project filter narrows every report to that project") {
  auto s = store_with(traffic());
  const WallTime b = base_time();
  AnalyticsQuery all{b - 2h, b, "", std::chrono::seconds{0}}, alpha{b - 2h, b, "alpha", std::chrono::seconds{0}};
  auto everyone = s->spend(SpendDimension::model, all);
  auto mine = s->spend(SpendDimension::model, alpha);
  REQUIRE(everyone);
  REQUIRE(mine);
  CHECK(everyone->total.requests == 4);
  CHECK(mine->total.requests == 2);
  CHECK(mine->total.total_usd() == doctest::Approx(0.33));
  CHECK(usd(*mine, "gpt-4o-mini") == doctest::Approx(0.33));
  CHECK(usd(*everyone, "gpt-4o-mini") == doctest::Approx(3.33));
  auto fo = s->failovers(alpha);
  REQUIRE(fo);
  CHECK(fo->requests == 2);
  CHECK(fo->failed_over == 1);
  auto errs = s->error_groups(alpha);
  REQUIRE(errs);
  REQUIRE(errs->size() == 1);
  CHECK((*errs)[0].error_class == "rate_limited");
  CHECK((*errs)[0].sample_message == "429 slow down");
  auto beta_errs = s->error_groups(AnalyticsQuery{b - 2h, b, "beta", std::chrono::seconds{0}});
  REQUIRE(beta_errs);
  REQUIRE(beta_errs->size() == 1);
  CHECK((*beta_errs)[0].provider == "google");
  auto lat = s->latency(LatencyDimension::provider, alpha);
  REQUIRE(lat);
  REQUIRE(lat->size() == 1);
  CHECK((*lat)[0].count == 2);
  CHECK((*lat)[0].ttft_count == 2);
  CHECK((*lat)[0].ttft_p50 == Nanos{30ms});
  CHECK((*lat)[0].ttft_p99 == Nanos{90ms});
  auto f = s->forecast(b, 7, "beta");
  REQUIRE(f);
  CHECK(f->month_to_date_usd == doctest::Approx(3.0));
}

TEST_CASE("analytics: spend by config and in hourly buckets adds up to the window") {
  auto s = store_with(traffic());
  const WallTime b = base_time();
  auto by_config = s->spend(SpendDimension::config, AnalyticsQuery{b - 2h, b, "", std::chrono::seconds{0}});
  REQUIRE(by_config);
  CHECK(usd(*by_config, "@cheap") == doctest::Approx(3.0));
  CHECK(usd(*by_config, "@production") == doctest::Approx(0.33));
  auto rep = s->spend(SpendDimension::project, AnalyticsQuery{b - 2h, b, "", std::chrono::hours{1}});
  REQUIRE(rep);
  REQUIRE(rep->buckets.size() == 2);
  CHECK(rep->buckets[0].start == b - 2h);  // a2 (70 min ago) and b1 (75 min ago)
  CHECK(rep->buckets[0].total.requests == 2);
  CHECK(rep->buckets[1].start == b - 1h);  // a1 and b2
  CHECK(rep->buckets[1].total.requests == 2);
  CHECK(rep->buckets[0].total.total_usd() + rep->buckets[1].total.total_usd() == doctest::Approx(rep->total.total_usd()));
  CHECK(usd(SpendReport{.rows = rep->buckets[0].rows}, "beta") == doctest::Approx(3.0));
  Json j = analytics_json(*rep);
  CHECK(j["bucket_s"] == 3600);
  CHECK(j["buckets"].size() == 2);
  CHECK(j["by"] == "project");
}

TEST_CASE("analytics: buckets that are too small or an empty window are refused") {
  auto s = store_with(traffic());
  const WallTime b = base_time();
  auto tiny = s->spend(SpendDimension::model, AnalyticsQuery{b - 24h * 30, b, "", std::chrono::seconds{1}});
  REQUIRE_FALSE(tiny);
  CHECK(tiny.error().kind == ErrorKind::bad_request);
  CHECK(tiny.error().path == "bucket");
  auto empty = s->spend(SpendDimension::model, AnalyticsQuery{b, b - 1h, "", std::chrono::hours{1}});
  REQUIRE_FALSE(empty);
  CHECK(empty.error().path == "until");
}

TEST_CASE("analytics: durations parse with units and refuse junk") {
  CHECK(parse_analytics_duration("90") == std::chrono::seconds{90});
  CHECK(parse_analytics_duration("5m") == std::chrono::seconds{300});
  CHECK(parse_analytics_duration("1h") == std::chrono::seconds{3600});
  CHECK(parse_analytics_duration("2d") == std::chrono::seconds{172800});
  CHECK(parse_analytics_duration("1w") == std::chrono::seconds{604800});
  for (const char* bad : {"", "0", "-1", "1x", "h", "1.5h", "1hh", "367d", "99999999999999999999"})
    CHECK_MESSAGE(!parse_analytics_duration(bad), bad);
}

TEST_CASE("trace pages: keyset pages never repeat or skip a trace while newer ones arrive") {
  auto s = store_with(traffic());
  const WallTime b = base_time();
  // Two more at the same microsecond as a1: the request id breaks the tie.
  std::vector<DecisionTrace> same = {make_trace("a1-x", b - 10min, {}), make_trace("a1-y", b - 10min, {})};
  REQUIRE(s->write(same));
  std::vector<std::string> expected;
  {
    TraceQuery all;
    all.keyset = true;
    all.limit = 0;
    auto rows = s->query(all);
    REQUIRE(rows);
    for (const auto& t : *rows) expected.push_back(t.request_id);
  }
  REQUIRE(expected.size() == 6);
  std::vector<std::string> seen;
  TraceQuery q;
  q.keyset = true;
  q.limit = 2;
  int round = 0;
  for (;;) {
    auto page = s->query(q);
    REQUIRE(page);
    for (const auto& t : *page) seen.push_back(t.request_id);
    if (page->size() < 2) break;
    q.after = std::pair{std::chrono::duration_cast<std::chrono::microseconds>(page->back().time.time_since_epoch()).count(),
                        page->back().request_id};
    // A newer trace and a rewrite of an already-listed one between pages.
    std::vector<DecisionTrace> more = {make_trace("new" + std::to_string(round++), b, {})};
    REQUIRE(s->write(more));
    REQUIRE(s->write(std::vector<DecisionTrace>{traffic()[0]}));
  }
  CHECK(seen == expected);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == seen.size());
}

TEST_CASE("otlp: a trace maps to one request span and a child span per attempt") {
  auto t = traffic()[1];
  t.max_tokens = 64;
  Json req = otlp_request_json({t}, "svc");
  const Json& rs = req["resourceSpans"][0];
  CHECK(rs["resource"]["attributes"][0]["key"] == "service.name");
  CHECK(rs["resource"]["attributes"][0]["value"]["stringValue"] == "svc");
  const Json& spans = rs["scopeSpans"][0]["spans"];
  REQUIRE(spans.size() == 3);
  const Json& root = spans[0];
  CHECK_FALSE(root.contains("parentSpanId"));
  CHECK(root["kind"] == 2);
  CHECK(root["name"] == "chat @production");
  CHECK(root["traceId"].get<std::string>().size() == 32);
  CHECK(root["spanId"].get<std::string>().size() == 16);
  auto attr = [](const Json& span, const std::string& key) -> Json {
    for (const auto& a : span["attributes"])
      if (a["key"] == key) return a["value"];
    return Json();
  };
  CHECK(attr(root, "gen_ai.operation.name")["stringValue"] == "chat");
  CHECK(attr(root, "gen_ai.provider.name")["stringValue"] == "openai");
  CHECK(attr(root, "gen_ai.response.model")["stringValue"] == "gpt-4o-mini");
  CHECK(attr(root, "gen_ai.usage.input_tokens")["intValue"] == "10");
  CHECK(attr(root, "gen_ai.request.max_tokens")["intValue"] == "64");
  std::set<std::string> ids{root["spanId"].get<std::string>()};
  for (int i = 1; i <= 2; ++i) {
    CHECK(spans[i]["parentSpanId"] == root["spanId"]);
    CHECK(spans[i]["traceId"] == root["traceId"]);
    CHECK(spans[i]["kind"] == 3);
    ids.insert(spans[i]["spanId"].get<std::string>());
  }
  CHECK(ids.size() == 3);
  CHECK(spans[1]["status"]["code"] == 2);
  CHECK(attr(spans[1], "error.type")["stringValue"] == "rate_limited");
  CHECK(attr(spans[1], "gen_ai.provider.name")["stringValue"] == "anthropic");
  CHECK(spans[2]["status"]["code"] == 1);
  CHECK(std::stoll(spans[2]["startTimeUnixNano"].get<std::string>()) >= std::stoll(spans[1]["endTimeUnixNano"].get<std::string>()));
  // Same request id, same ids: a re-export is recognisable as the same trace.
  CHECK(otlp_request_json({t}, "svc") == req);
  // Bedrock and Gemini use the conventions' well-known provider names.
  auto g = traffic()[3];
  CHECK(attr(otlp_request_json({g}, "svc")["resourceSpans"][0]["scopeSpans"][0]["spans"][1], "gen_ai.provider.name")["stringValue"] ==
        "gcp.gemini");
}

TEST_CASE("otlp: options are validated with their JSON path") {
  CHECK(parse_otlp_options(Json{{"endpoint", "http://127.0.0.1:4318/v1/traces"}, {"batch_size", 10}}));
  auto bad = parse_otlp_options(Json{{"endpoint", "ftp://x"}});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().path == "$.tracing.otlp.endpoint");
  auto unknown = parse_otlp_options(Json{{"endpoint", "http://h/v1/traces"}, {"colour", 1}});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().path == "$.tracing.otlp.colour");
  auto missing = parse_otlp_options(Json::object());
  REQUIRE_FALSE(missing);
  CHECK(missing.error().path == "$.tracing.otlp.endpoint");
}
