// Rules DSL (parse, type-check, evaluate), the rules strategy and the cascade strategy.
#include <doctest/doctest.h>

#include <map>

#include "modelux/simulate.hpp"
#include "policy/dsl.hpp"
#include "policy/strategies/cascade.hpp"

#include "support/catalog_resolver.hpp"

using namespace modelux;
using modelux::testing::CatalogResolver;
using namespace std::chrono_literals;

namespace {

struct FixedBudget final : BudgetView {
  BudgetStatus s;
  BudgetStatus status(const CallContext&, Instant) const override { return s; }
};
struct FixedHealth final : HealthView {
  std::map<std::string, TargetStats> m;
  TargetStats stats(std::string_view k, Instant) const override {
    auto it = m.find(std::string(k));
    return it == m.end() ? TargetStats{} : it->second;
  }
};

dsl::Expression expr(const char* src, dsl::Type t = dsl::Type::boolean) {
  auto e = dsl::Expression::compile(src, t, &Catalog::builtin());
  if (!e) FAIL(e.error().describe());
  return std::move(*e);
}
std::string compile_error(const char* src) {
  auto e = dsl::Expression::compile(src, dsl::Type::boolean, &Catalog::builtin());
  REQUIRE_FALSE(e);
  CHECK(e.error().kind == ErrorKind::invalid_config);
  return e.error().message;
}

struct World {
  ChatRequest req;
  CallContext ctx;
  FixedBudget budget;
  FixedHealth health;
  dsl::EvalContext c;
  World() {
    req.model = "@production";
    req.stream = true;
    req.max_tokens = 100;
    ctx.project = "acme";
    ctx.end_user = "u-42";
    ctx.tags = {{"tier", "free"}, {"feature", "chat"}};
    budget.s = BudgetStatus{8.5, 10, 1.5, 85};
    TargetStats open;
    open.breaker = BreakerState::open;
    open.admits = false;
    open.p50_ms = 420;
    open.error_rate = 0.6;
    health.m["anthropic/claude-haiku-4-5"] = open;
    c.request = &req;
    c.context = &ctx;
    c.budget = &budget;
    c.health = &health;
    c.estimated_tokens = 1200;
    // 2026-01-01 00:00:00 UTC was a Thursday; + 14 h 30 min
    c.wall = WallTime{std::chrono::seconds(1'767'225'600 + 14 * 3600 + 30 * 60)};
  }
};

}  // namespace

TEST_CASE("Rules DSL: evaluates request, tags, budget, health, cost and time") {
  World w;
  auto t = [&](const char* src) { return expr(src).eval_bool(w.c); };
  CHECK(t("request.model == \"@production\""));
  CHECK(t("model == '@production' && stream"));
  CHECK(t("tags[\"tier\"] == \"free\" && request.tags[\"feature\"] == \"chat\""));
  CHECK(t("tags[\"missing\"] == \"\""));
  CHECK(t("end_user == \"u-42\" && project == 'acme'"));
  CHECK(t("estimated_tokens > 1000 && estimated_tokens <= 1200"));
  CHECK(t("budget.percent > 80 && budget.remaining < 2 && budget.spent == 8.5"));
  CHECK(t("health(\"anthropic/claude-haiku-4-5\").breaker == \"open\""));
  CHECK(t("health(\"anthropic/claude-haiku-4-5\").error_rate > 0.5 && !health(\"anthropic/claude-haiku-4-5\").admits"));
  CHECK(t("health(\"openai/gpt-4o\").breaker == \"closed\" && health(\"openai/gpt-4o\").p50_ms == 0"));
  CHECK(t("hour == 14 && minute == 30 && weekday == 4 && time.hour >= 9"));
  CHECK(t("weekday in [1, 2, 3, 4, 5]"));
  CHECK_FALSE(t("weekday in [0, 6]"));
  CHECK(t("tags[\"tier\"] in [\"free\", \"trial\"]"));
  // gpt-4o: (1200 * 2.50 + 100 * 10.00) / 1e6 = 0.004
  CHECK(expr("estimated_cost(\"gpt-4o\")", dsl::Type::number).eval_number(w.c) == doctest::Approx(0.004));
  CHECK(t("estimated_cost(\"gpt-4o\") > estimated_cost(\"gpt-4o-mini\") * 10"));
  CHECK(t("(1 + 2) * 3 == 9 && 7 % 4 == 3 && -2 < 0 && 10 / 4 == 2.5"));
  CHECK(t("contains(model, \"prod\") && starts_with(model, \"@\") && ends_with(model, \"tion\") && len(model) == 11"));
  CHECK(t("false || true"));
  CHECK_FALSE(t("false && true"));
  CHECK(t("!(budget.percent < 50)"));
  SUBCASE("short-circuit leaves the right value") {
    CHECK(t("true || 1 / 0 > 1"));
    CHECK_FALSE(t("false && health(\"x/y\").admits"));
  }
  SUBCASE("nothing set: reads as empty and zero") {
    dsl::EvalContext empty;
    CHECK(expr("model == \"\" && budget.percent == 0 && tags[\"a\"] == \"\" && !stream").eval_bool(empty));
  }
}

TEST_CASE("Rules DSL: parse and type errors carry line and column") {
  CHECK(compile_error("budget.percent > ") == "line 1, column 18: unexpected end of expression");
  CHECK(compile_error("modle == \"x\"") == "line 1, column 1: unknown name 'modle'");
  CHECK(compile_error("model == 3") == "line 1, column 7: cannot compare string with number");
  CHECK(compile_error("budget.percnt > 3").find("line 1, column 8: unknown field 'percnt' of budget") == 0);
  CHECK(compile_error("stream &&\n  tags[\"a\"] + 1") == "line 2, column 13: arithmetic needs numbers, got string");
  CHECK(compile_error("model = \"x\"") == "line 1, column 7: '=' is not an operator; use '=='");
  CHECK(compile_error("\"abc") == "line 1, column 1: unterminated string");
  CHECK(compile_error("health(\"gpt-4o\").p50_ms > 1").find("provider/model") != std::string::npos);
  CHECK(compile_error("estimated_cost(\"nope\") > 1").find("unknown model 'nope'") != std::string::npos);
  CHECK(compile_error("budget.percent").find("expected bool") != std::string::npos);
  CHECK(compile_error(std::string(100, '(').append("1").append(100, ')').append(" == 1").c_str()).find("too deeply nested") !=
        std::string::npos);
  CHECK(compile_error((std::string(100, '!') + "true").c_str()).find("too deeply nested") != std::string::npos);
  std::string deep = "1";
  for (int i = 0; i < 40; ++i) deep = "1 + (" + deep + ")";
  CHECK(compile_error((deep + " == 1").c_str()).find("too deeply nested") != std::string::npos);
}

TEST_CASE("RulesStrategy: first matching rule routes, default otherwise") {
  CatalogResolver r;
  r.configs["cheap"] = *Policy::compile(Json::parse(R"({"strategy":"single","model":"gpt-4o-mini"})"), r, "@cheap");
  auto p = Policy::compile(Json::parse(R"({"strategy":"rules","rules":[
      {"when":"tags[\"tier\"] == \"free\"","config":"@cheap"},
      {"when":"estimated_tokens > 100000","model":"gemini-2.5-pro"},
      {"when":"health(\"openai/gpt-4o\").breaker == \"open\"","route":{"strategy":"fallback","attempts":["claude-sonnet-4-5","gemini-2.5-pro"]}}],
    "default":"gpt-4o"})"), r, "@rules");
  REQUIRE(p);
  Simulator sim;
  SimOptions o;
  o.context = [](std::size_t i) {
    CallContext c;
    c.end_user = "u" + std::to_string(i);
    if (i % 2 == 0) c.tags = {{"tier", "free"}};
    return c;
  };
  auto rep = sim.run(*p, 100, o);
  CHECK(rep.routes["openai/gpt-4o-mini"] == 50);
  CHECK(rep.routes["openai/gpt-4o"] == 50);
  CHECK(rep.results[0].trace.reason.find("rule 0 matched") == 0);
  CHECK(rep.results[1].trace.reason.find("no rule matched -> default gpt-4o") == 0);

  SUBCASE("health rules see live breaker state") {
    SimTarget down;
    down.key = "openai/gpt-4o";
    down.errors = {{ErrorKind::server_error, 1.0}};
    down.latency = {100, 0, 1, 1000};
    sim.add_target(down);
    SimOptions o2;
    o2.interarrival = 1s;
    auto rep2 = sim.run(*p, 40, o2);
    CHECK(rep2.routes["anthropic/claude-sonnet-4-5"] > 20);  // after the breaker trips (5 failures)
    CHECK(rep2.errors["server_error"] == 6);  // 5 to trip it + 1 half-open probe after the 30 s cool-down
  }
  SUBCASE("config faults carry the path and the position") {
    auto bad = Policy::compile(Json::parse(R"({"strategy":"rules","rules":[{"when":"budget.percent >> 3","model":"gpt-4o"}],"default":"gpt-4o"})"), r);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().path == "$.rules[0].when");
    CHECK(bad.error().message.find("line 1, column 17") == 0);
    auto nodef = Policy::compile(Json::parse(R"({"strategy":"rules","rules":[]})"), r);
    REQUIRE_FALSE(nodef);
    CHECK(nodef.error().path == "$.default");
    auto badroute = Policy::compile(Json::parse(R"({"strategy":"rules","rules":[{"when":"true","model":"gpt-7"}],"default":"gpt-4o"})"), r);
    REQUIRE_FALSE(badroute);
    CHECK(badroute.error().path == "$.rules[0].model");
  }
}

TEST_CASE("CascadeStrategy: stops at the first accepted answer") {
  CatalogResolver r;
  auto p = *Policy::compile(Json::parse(R"({"strategy":"cascade","accept":{"valid_json":true},"steps":[
      {"model":"gpt-4o-mini","accept":{"json_schema":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}},
      {"model":"gpt-4o"}]})"), r);
  Simulator sim;
  SimTarget mini;
  mini.key = "openai/gpt-4o-mini";
  mini.latency = {100, 0, 1, 1000};
  mini.answers = {{R"({"town":"Paris"})", 1}};
  SimTarget big = mini;
  big.key = "openai/gpt-4o";
  big.answers = {{R"({"city":"Paris"})", 1}};
  sim.add_target(mini);
  sim.add_target(big);
  auto rep = sim.run(p, 5);
  CHECK(rep.success_rate == 1.0);
  CHECK(rep.routes["openai/gpt-4o"] == 5);
  const auto& tr = rep.results[0].trace;
  REQUIRE(tr.attempts.size() == 2);
  CHECK(tr.attempts[0].why_ended == "rejected: schema: $: missing required \"city\"");
  CHECK(tr.attempts[1].why_tried == "cascade step 1 after rejection");

  SUBCASE("an accepted first step ends the cascade") {
    mini.answers = {{R"({"city":"Lyon"})", 1}};
    sim.add_target(mini);
    auto r2 = sim.run(p, 5);
    CHECK(r2.routes["openai/gpt-4o-mini"] == 5);
    CHECK(r2.attempts == 5);
  }
  SUBCASE("nothing accepted: serve the last answer, or fail") {
    big.answers = {{"not json", 1}};
    sim.add_target(big);
    auto r3 = sim.run(p, 1);
    CHECK(r3.success_rate == 1.0);
    CHECK(r3.results[0].text == "not json");
    CHECK(r3.results[0].trace.reason.find("no answer accepted") != std::string::npos);
    Json cfg = p->source();
    cfg["on_none_accepted"] = "fail";
    auto strict = *Policy::compile(cfg, r);
    auto r4 = sim.run(strict, 1);
    CHECK(r4.success_rate == 0.0);
    CHECK(r4.results[0].error.kind == ErrorKind::no_route);
  }
  SUBCASE("DSL, length and finish_reason checks") {
    auto q = *Policy::compile(Json::parse(R"J({"strategy":"cascade","steps":[
        {"model":"gpt-4o-mini","accept":{"when":"response.length >= 20 && !contains(response.text, \"sorry\")"}},
        {"model":"gpt-4o","accept":{"finish_reason":"stop","max_length":100}}]})J"), r);
    mini.answers = {{"sorry, cannot", 1}};
    sim.add_target(mini);
    big.answers = {{"a proper answer", 1}};
    sim.add_target(big);
    auto r5 = sim.run(q, 1);
    CHECK(r5.results[0].text == "a proper answer");
    CHECK(r5.results[0].trace.attempts[0].why_ended.find("rejected: check failed") == 0);
  }
}

TEST_CASE("validate_json_schema: the supported subset") {
  Json schema = Json::parse(R"({"type":"object","required":["a"],"additionalProperties":false,
    "properties":{"a":{"type":"integer","minimum":1,"maximum":5},"b":{"type":"array","items":{"type":"string","enum":["x","y"]}},
                  "c":{"type":"string","minLength":2}}})");
  CHECK(validate_json_schema(Json::parse(R"({"a":3,"b":["x","y"],"c":"hi"})"), schema).empty());
  CHECK(validate_json_schema(Json::parse(R"({"b":[]})"), schema) == "$: missing required \"a\"");
  CHECK(validate_json_schema(Json::parse(R"({"a":9})"), schema) == "$.a: above maximum");
  CHECK(validate_json_schema(Json::parse(R"({"a":1,"b":["z"]})"), schema) == "$.b[0]: not one of the enum values");
  CHECK(validate_json_schema(Json::parse(R"({"a":1,"d":1})"), schema) == "$: unexpected property \"d\"");
  CHECK(validate_json_schema(Json::parse(R"({"a":1.5})"), schema) == "$.a: expected integer");
  CHECK(validate_json_schema(Json::parse(R"({"a":1,"c":"h"})"), schema) == "$.c: shorter than minLength");
}
