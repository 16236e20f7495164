// DecisionTrace JSON: round trip and hostile input.
#include <doctest/doctest.h>

#include "modelux/decision.hpp"

using namespace modelux;
using namespace std::chrono_literals;

namespace {
DecisionTrace sample_trace() {
  DecisionTrace t;
  t.request_id = "req_0123456789abcdef01234567";
  t.time = WallTime{std::chrono::microseconds{1'767'225'600'123'456}};
  t.config = "@production";
  t.config_version = 7;
  t.strategy = "fallback";
  t.project = "acme";
  t.org = "acme-org";
  t.end_user = "user-42";
  t.api_key_id = "key_1";
  t.tags = {{"env", "prod"}, {"feature", "chat"}};
  t.stream = true;
  AttemptRecord a1;
  a1.id = 1;
  a1.model = "claude-haiku-4-5";
  a1.provider = "anthropic";
  a1.start_offset = 0ns;
  a1.duration = 2'000'000'123ns;
  a1.ok = false;
  a1.outcome = "timeout";
  a1.status = 0;
  a1.error = "attempt timeout 2000 ms";
  a1.why_tried = "primary";
  a1.why_ended = "attempt timeout 2000 ms";
  AttemptRecord a2;
  a2.id = 2;
  a2.model = "gpt-4o-mini";
  a2.provider = "openai";
  a2.start_offset = 2'000'100'000ns;
  a2.duration = 812'345'678ns;
  a2.ttft = 201'000'001ns;
  a2.ok = true;
  a2.outcome = "ok";
  a2.status = 200;
  a2.usage.prompt_tokens = 1200;
  a2.usage.completion_tokens = 340;
  a2.usage.cached_tokens = 1000;
  a2.cost = {0.00018, 0.000204};
  a2.why_tried = "fallback after timeout";
  a2.why_ended = "served";
  a2.member = 1;
  a2.vote = "B";
  t.attempts = {a1, a2};
  t.ok = true;
  t.served_model = "gpt-4o-mini";
  t.served_provider = "openai";
  t.decision = "served by gpt-4o-mini (attempt 2)";
  t.reason = "primary timeout, secondary healthy";
  t.total = 2'812'445'678ns;
  t.ttft = 2'201'100'001ns;
  t.usage = a2.usage;
  t.cost = a2.cost;
  t.budget_actions = {"reserved 0.0012 on project:acme/daily"};
  t.ab_arm = "B";
  t.aggregation = "";
  t.request_body = R"({"model":"@production"})";
  return t;
}
}  // namespace

TEST_CASE("DecisionTrace: to_json/from_json round-trips every field") {
  DecisionTrace t = sample_trace();
  Json j = t.to_json();
  CHECK(j["time"] == "2026-01-01T00:00:00.123456Z");
  CHECK(j["attempts"][1]["duration_ms"].get<double>() == doctest::Approx(812.345678));
  CHECK(j["cost"]["total_usd"].get<double>() == doctest::Approx(0.000384));
  auto back = DecisionTrace::from_json(Json::parse(j.dump()));
  REQUIRE(back.has_value());
  const DecisionTrace& b = *back;
  CHECK(b.request_id == t.request_id);
  CHECK(b.time == t.time);
  CHECK(b.config == t.config);
  CHECK(b.config_version == 7);
  CHECK(b.project == "acme");
  CHECK(b.end_user == "user-42");
  CHECK(b.tags == t.tags);
  CHECK(b.stream);
  REQUIRE(b.attempts.size() == 2);
  CHECK(b.attempts[0].duration == t.attempts[0].duration);
  CHECK(b.attempts[1].start_offset == t.attempts[1].start_offset);
  CHECK(b.attempts[1].duration == t.attempts[1].duration);
  CHECK(b.attempts[1].ttft == t.attempts[1].ttft);
  CHECK(b.attempts[1].usage.cached_tokens == 1000);
  CHECK(b.attempts[1].cost.output_usd == doctest::Approx(0.000204));
  CHECK(b.attempts[1].member == 1);
  CHECK(b.attempts[1].vote == "B");
  CHECK(b.attempts[0].member == -1);
  CHECK(b.attempts[0].outcome == "timeout");
  CHECK(b.total == t.total);
  CHECK(b.ttft == t.ttft);
  CHECK(b.reason == t.reason);
  CHECK(b.budget_actions == t.budget_actions);
  CHECK(b.request_body == t.request_body);
  CHECK(b.to_json() == j);
}

TEST_CASE("DecisionTrace: repeated tag keys survive the round trip") {
  DecisionTrace t = sample_trace();
  t.tags = {{"team", "a"}, {"team", "b"}};
  Json j = t.to_json();
  CHECK(j["tags"].is_array());
  auto back = DecisionTrace::from_json(j);
  REQUIRE(back);
  CHECK(back->tags == t.tags);
}

TEST_CASE("DecisionTrace: from_json reports the path of a bad field and never throws") {
  SUBCASE("not an object") {
    auto r = DecisionTrace::from_json(Json::array());
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::bad_request);
  }
  SUBCASE("wrong type deep inside") {
    Json j = sample_trace().to_json();
    j["attempts"][1]["usage"]["prompt_tokens"] = "many";
    auto r = DecisionTrace::from_json(j);
    REQUIRE_FALSE(r);
    CHECK(r.error().path == "$.attempts[1].usage.prompt_tokens");
  }
  SUBCASE("bad time") {
    Json j = sample_trace().to_json();
    j["time"] = "yesterday";
    auto r = DecisionTrace::from_json(j);
    REQUIRE_FALSE(r);
    CHECK(r.error().path == "$.time");
  }
  SUBCASE("negative duration") {
    Json j = sample_trace().to_json();
    j["total_ms"] = -5;
    auto r = DecisionTrace::from_json(j);
    REQUIRE_FALSE(r);
    CHECK(r.error().path == "$.total_ms");
  }
  SUBCASE("epoch milliseconds accepted") {
    Json j = sample_trace().to_json();
    j["time"] = 1'767'225'600'123LL;
    auto r = DecisionTrace::from_json(j);
    REQUIRE(r);
    CHECK(r->time == WallTime{std::chrono::milliseconds{1'767'225'600'123LL}});
  }
}

#include "trace/trace_json_util.hpp"

TEST_CASE("DecisionTrace: the writer's direct serializer reads back to the same trace as to_json()") {
  DecisionTrace t = sample_trace();
  t.error_message = "quote \" backslash \\ newline \n tab \t ctrl \x01 del \x7f";
  t.attempts[0].error = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80";  // valid 2-, 3- and 4-byte UTF-8
  t.reason = "bad \xC3 utf8 \xFF\xFE and overlong \xC0\xAF and surrogate \xED\xA0\x80";
  t.cost = {1.0, 3.0};  // integral doubles stay numbers
  t.budget_actions = {"a", "b"};
  SUBCASE("unique tag keys") {}
  SUBCASE("repeated tag keys") { t.tags = {{"k", "1"}, {"k", "2"}}; }
  SUBCASE("no tags, attempts or bodies") {
    t.tags.clear();
    t.attempts.clear();
    t.request_body.clear();
  }
  SUBCASE("defaults everywhere: empty strings, zero usage and cost, false, no budget actions") {
    t.config.clear();
    t.org.clear();
    t.end_user.clear();
    t.config_version = 0;
    t.ok = false;
    t.stream = false;
    t.usage = {};
    t.cost = {};
    t.budget_actions.clear();
    t.error_message.clear();
    t.total = Nanos{0};
    for (auto& a : t.attempts) {
      a.ok = false;
      a.usage = {};
      a.cost = {};
      a.error.clear();
      a.ttft = Nanos{0};
      a.start_offset = Nanos{0};
    }
  }
  SUBCASE("negative zero and one-sided costs keep their values") {
    t.cost = {-0.0, 0.5};
    t.attempts[0].cost = {0.25, 0.0};
    t.attempts[0].usage = {.cached_tokens = 3};
  }
  std::string fast;
  trace_detail::append_trace_json(fast, t);
  Json parsed = Json::parse(fast);  // throws (fails the test) if not valid JSON/UTF-8
  Json reference = Json::parse(t.to_json().dump(-1, ' ', false, Json::error_handler_t::replace));
  auto back = DecisionTrace::from_json(parsed);
  REQUIRE(back);
  // What the stored body reads back to renders exactly as the trace itself does.
  CHECK(back->to_json() == reference);
  CHECK(back->error_message == t.error_message);
  CHECK(back->attempts.size() == t.attempts.size());
  // Defaults are left out of the stored body, and so is the derived total.
  CHECK(parsed.size() <= reference.size());
  CHECK_FALSE(parsed.contains("aggregation"));
  for (const auto& a : parsed.value("attempts", Json::array()))
    if (a.contains("cost")) CHECK_FALSE(a["cost"].contains("total_usd"));
  if (t.org.empty()) CHECK_FALSE(parsed.contains("org"));
  if (t.usage.empty()) CHECK_FALSE(parsed.contains("usage"));
}
