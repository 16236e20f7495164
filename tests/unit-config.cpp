#include <doctest/doctest.h>

#include <cstdlib>

#include "modelux/config.hpp"
#include "modelux/router.hpp"

using namespace modelux;

TEST_CASE("Config: ${ENV} expansion with defaults, unset variables are errors with a path") {
  ::setenv("MLX_TEST_KEY", "sk-from-env", 1);
  ::unsetenv("MLX_TEST_MISSING");
  auto ok = expand_env(Json{{"a", "${MLX_TEST_KEY}"}, {"b", {"x-${MLX_TEST_MISSING:-dflt}-y"}}});
  REQUIRE(ok);
  CHECK((*ok)["a"] == "sk-from-env");
  CHECK((*ok)["b"][0] == "x-dflt-y");
  auto bad = expand_env(Json{{"providers", {{"openai", {{"api_key", "${MLX_TEST_MISSING}"}}}}}});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().path == "$.providers.openai.api_key");
  CHECK(bad.error().message.find("MLX_TEST_MISSING") != std::string::npos);
  CHECK_FALSE(expand_env(Json("${unterminated")));
}

TEST_CASE("Config: embedded defaults parse and route @production over three providers") {
  auto c = Config::embedded_defaults();
  REQUIRE(c);
  CHECK(c->providers.size() == 3);
  CHECK(c->routing.count("production") == 1);
  CHECK(c->server.contains("api_keys"));  // parsed by the server component
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(*c, ro);
  REQUIRE(r);
  auto p = (*r)->routing_config("@production");
  REQUIRE(p);
  CHECK(p->strategy() == "fallback");
  auto models = (*r)->routable_models();
  CHECK(std::find(models.begin(), models.end(), "gpt-4o-mini") != models.end());
  // A model whose provider is not configured is not routable.
  CHECK(std::find(models.begin(), models.end(), "command-a-03-2025") == models.end());
}

TEST_CASE("Config: hostile or wrong configs are rejected with the JSON path of the fault") {
  struct Case { Json doc; std::string path; };
  std::vector<Case> cases = {
      {Json{{"surprise", 1}}, "$.surprise"},
      {Json{{"server", 5}}, "$.server"},
      {Json{{"providers", {{"acme", {{"base_url", "http://x"}}}}}}, "$.providers.acme.family"},
      {Json{{"providers", {{"acme", {{"family", "klingon"}, {"base_url", "http://x"}}}}}}, "$.providers.acme.family"},
      {Json{{"providers", {{"openai", {{"base_url", "ftp://x"}}}}}}, "$.providers.openai.base_url"},
      {Json{{"providers", {{"openai", {{"api_keys", {1}}}}}}}, "$.providers.openai.api_keys[0]"},
      {Json{{"budgets", {{"limit", 5}}}}, "$.budgets"},
      {Json{{"catalog", {{"models", {{{"id", "x"}}}}}}}, "$.catalog.models[0].provider"},
  };
  for (auto& c : cases) {
    CAPTURE(c.doc.dump());
    auto r = Config::from_json(c.doc);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::invalid_config);
    CHECK(r.error().path == c.path);
  }
  CHECK(Config::load_file("/nonexistent/modelux.json").error().kind == ErrorKind::io);
}

TEST_CASE("Router: a routing config naming an unknown model never loads, the error names its path") {
  auto c = Config::from_json(Json{
      {"providers", {{"openai", {{"api_key", "k"}}}}},
      {"routing", {{"prod", {{"strategy", "fallback"}, {"attempts", {{{"model", "gpt-4o-mini"}}, {{"model", "gpt-17"}}}}}}}}});
  REQUIRE(c);
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(*c, ro);
  REQUIRE_FALSE(r);
  CHECK(r.error().path.starts_with("$.routing.prod.attempts[1]"));
}

TEST_CASE("Router: set_routing_config validates before swapping and bumps the version") {
  auto c = Config::embedded_defaults();
  REQUIRE(c);
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(*c, ro);
  REQUIRE(r);
  auto before = (*r)->routing_config("production");
  REQUIRE(before);
  auto bad = (*r)->set_routing_config("production", Json{{"strategy", "fallback"}, {"attempts", Json::array()}});
  REQUIRE_FALSE(bad);
  CHECK((*r)->routing_config("production") == before);  // still live, untouched
  auto v = (*r)->set_routing_config("production", Json{{"strategy", "single"}, {"model", "gpt-4o"}});
  REQUIRE(v);
  CHECK(*v == before->version() + 1);
  CHECK((*r)->routing_config("production")->strategy() == "single");
  auto added = (*r)->set_routing_config("@new", Json{{"strategy", "single"}, {"model", "gpt-4o-mini"}});
  REQUIRE(added);
  CHECK(*added == 1);
}

TEST_CASE("Config: budget_backend eviction knobs are positive integers") {
  auto load = [](const char* bb) {
    return Config::from_json(Json::parse(std::string(R"({"budget_backend":)") + bb + "}"));
  };
  CHECK(load(R"({"max_wildcard_ledgers":5000,"evict_interval_ms":2000})"));
  auto bad = load(R"({"max_wildcard_ledgers":0})");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().path == "$.budget_backend.max_wildcard_ledgers");
  auto bad2 = load(R"({"evict_interval_ms":"10s"})");
  REQUIRE_FALSE(bad2);
  CHECK(bad2.error().path == "$.budget_backend.evict_interval_ms");
}

TEST_CASE("Config: mistyped budget_backend and tracing fields are errors with their path, never a crash later") {
  auto err = [](const char* doc) {
    auto c = Config::from_json(Json::parse(doc));
    return c ? std::string("ok") : c.error().path;
  };
  CHECK(err(R"({"budget_backend":{"sqlite_path":5}})") == "$.budget_backend.sqlite_path");
  CHECK(err(R"({"budget_backend":{"outage_policy":"panic"}})") == "$.budget_backend.outage_policy");
  CHECK(err(R"({"tracing":{"path":7}})") == "$.tracing.path");
  CHECK(err(R"({"tracing":{"enabled":"yes"}})") == "$.tracing.enabled");
  CHECK(err(R"({"tracing":{"redact_fields":["a",1]}})") == "$.tracing.redact_fields[1]");
  CHECK(err(R"({"tracing":{"queue_capacity":-1}})") == "$.tracing.queue_capacity");
  CHECK(err(R"({"tracing":{"pathh":"x.db"}})") == "$.tracing.pathh");
  CHECK(err(R"({"tracing":{"path":"x.db","enabled":false,"capture_bodies":true,"redact_fields":["pw"],
                "queue_capacity":1024,"batch_size":64,"body_cap_bytes":4096,"retention_days":0,
                "flush_interval_ms":100},
                "budget_backend":{"sqlite_path":"b.db","outage_policy":"fair_share"}})") == "ok");
}

TEST_CASE("Config: health.enabled switches health off, is typed at load, unknown health keys are errors") {
  auto load = [](const char* doc) { return Config::from_json(Json::parse(doc)); };
  auto def = load("{}");
  REQUIRE(def);
  CHECK(def->health.enabled);
  auto off = load(R"({"health":{"enabled":false}})");
  REQUIRE(off);
  CHECK_FALSE(off->health.enabled);
  auto path = [&](const char* doc) {
    auto c = load(doc);
    return c ? std::string("ok") : c.error().path;
  };
  CHECK(path(R"({"health":{"enabled":"no"}})") == "$.health.enabled");
  CHECK(path(R"({"health":{"enabld":false}})") == "$.health.enabld");
  CHECK(path(R"({"health":false})") == "$.health");
}
