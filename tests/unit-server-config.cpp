// The "server" section: parsed by the server component, every fault with its JSON path.
#include <doctest/doctest.h>

#include "modelux/config.hpp"
#include "modelux/server.hpp"

using namespace modelux;

TEST_CASE("ServerConfig: the embedded defaults carry one API key for the demo") {
  auto c = Config::embedded_defaults();
  REQUIRE(c);
  auto s = ServerConfig::from_json(c->server);
  REQUIRE(s);
  CHECK(s->api_keys.size() == 1);
  CHECK(s->host == "127.0.0.1");
}

TEST_CASE("ServerConfig: wrong fields are rejected with the JSON path of the fault") {
  struct Case { Json doc; std::string path; };
  std::vector<Case> cases = {
      {Json{{"port", 70000}}, "$.server.port"},
      {Json{{"threads", 0}}, "$.server.threads"},
      {Json{{"max_body_bytes", 10}}, "$.server.max_body_bytes"},
      {Json{{"api_keys", {"short"}}}, "$.server.api_keys[0]"},
      {Json{{"api_keys", {{{"key", 5}}}}}, "$.server.api_keys[0].key"},
      {Json{{"surprise", true}}, "$.server.surprise"},
      {Json{{"api_keys", {{{"key", "mlx-0123456789"}, {"rol", "admin"}}}}}, "$.server.api_keys[0].rol"},
      {Json{{"api_keys", {{{"key", "mlx-0123456789"}, {"role", "root"}}}}}, "$.server.api_keys[0].role"},
      {Json{{"api_keys", {{{"key", "mlx-0123456789"}, {"rpm", -1}}}}}, "$.server.api_keys[0].rpm"},
      {Json{{"api_keys", {{{"key", "mlx-0123456789"}, {"models", {1}}}}}}, "$.server.api_keys[0].models[0]"},
      {Json{{"api_keys", {{{"key", "mlx-0123456789"}, {"expires", "soon"}}}}}, "$.server.api_keys[0].expires"},
      {Json{{"limits", {{"max_tagz", 3}}}}, "$.server.limits.max_tagz"},
      {Json{{"worker_threads", 0}}, "$.server.worker_threads"},
      {Json{{"max_inflight_body_bytes", -1}}, "$.server.max_inflight_body_bytes"},
      {Json{{"max_inflight_body_bytes", "64MiB"}}, "$.server.max_inflight_body_bytes"},
      {Json{{"drain_timeout_ms", -5}}, "$.server.drain_timeout_ms"},
      {Json{{"drain_timeout_ms", 1.5}}, "$.server.drain_timeout_ms"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.doc.dump());
    auto r = ServerConfig::from_json(c.doc);
    REQUIRE_FALSE(r);
    CHECK(r.error().path == c.path);
  }
}

TEST_CASE("ServerConfig: key roles, limits and where managed keys live") {
  Json doc = {{"api_keys",
               {{{"key", "mlx-admin-0001"}, {"role", "admin"}},
                {{"key", "mlx-view-00001"}, {"project", "a"}, {"role", "viewer"}},
                {{"key", "mlx-proj-00001"}, {"project", "a"}, {"models", {"gpt-4o-mini"}}, {"configs", {"@fast"}},
                 {"rpm", 60}, {"max_concurrency", 2}}}}};
  auto s = ServerConfig::from_json(doc);
  REQUIRE(s);
  CHECK(s->api_keys[0].role == KeyRole::admin);
  CHECK(s->api_keys[1].role == KeyRole::viewer);
  CHECK(s->api_keys[2].role == KeyRole::project);  // the default
  CHECK(s->api_keys[2].limits.configs == std::vector<std::string>{"fast"});
  CHECK(s->api_keys[2].limits.rpm == 60);
  CHECK(s->api_keys[2].limits.max_concurrency == 2);

  Config c;
  CHECK(ServerConfig::keys_db_path(c, *s).empty());  // no trace file: in memory
  c.tracing = Json{{"path", "/var/lib/modelux/traces.db"}};
  CHECK(ServerConfig::keys_db_path(c, *s) == "/var/lib/modelux/keys.db");
  s->keys_db = "/etc/k.db";
  CHECK(ServerConfig::keys_db_path(c, *s) == "/etc/k.db");
}

TEST_CASE("ServerConfig: the edge limits and the drain time have defaults and can be set") {
  auto d = ServerConfig::from_json(Json::object());
  REQUIRE(d);
  CHECK(d->max_inflight_body_bytes == 64u * 1024 * 1024);
  CHECK(d->drain_timeout == Millis{10'000});
  auto s = ServerConfig::from_json(Json{{"max_inflight_body_bytes", 0}, {"drain_timeout_ms", 2500}});
  REQUIRE(s);
  CHECK(s->max_inflight_body_bytes == 0);  // 0 = no cap
  CHECK(s->drain_timeout == Millis{2500});
}

TEST_CASE("ServerConfig: keep_responses has defaults, can be set and names its faults") {
  auto d = ServerConfig::from_json(Json::object());
  REQUIRE(d);
  CHECK(d->keep_responses.default_ttl == Millis{3'600'000});
  Config c;
  c.tracing = {{"path", "/var/lib/mx/traces.db"}};
  CHECK(ServerConfig::kept_db_path(c, *d) == "/var/lib/mx/kept.db");
  auto s = ServerConfig::from_json({{"keep_responses", {{"path", ":memory:"}, {"default_ttl_s", 0.5}, {"max_ttl_s", 60}}}});
  REQUIRE(s);
  CHECK(s->keep_responses.default_ttl == Millis{500});
  CHECK(s->keep_responses.max_ttl == Millis{60'000});
  CHECK(ServerConfig::kept_db_path(c, *s).empty());
  auto capped = ServerConfig::from_json({{"keep_responses", {{"default_ttl_s", 100}, {"max_ttl_s", 10}}}});
  REQUIRE(capped);
  CHECK(capped->keep_responses.default_ttl == Millis{10'000});
  for (auto [doc, path] : std::vector<std::pair<Json, std::string>>{
           {{{"keep_responses", 5}}, "$.server.keep_responses"},
           {{{"keep_responses", {{"ttl", 5}}}}, "$.server.keep_responses.ttl"},
           {{{"keep_responses", {{"default_ttl_s", -1}}}}, "$.server.keep_responses.default_ttl_s"},
           {{{"keep_responses", {{"path", 3}}}}, "$.server.keep_responses.path"}}) {
    auto r = ServerConfig::from_json(doc);
    REQUIRE_FALSE(r);
    CHECK(r.error().path == path);
  }
}

TEST_CASE("ServerConfig: control.postgres_url puts a fleet's control store and managed keys in PostgreSQL") {
  const std::string url = "postgres://modelux:secret@db:5432/modelux";
  auto s = ServerConfig::from_json(Json{{"control", {{"postgres_url", url}, {"db", "/var/lib/c.db"}}}});
  REQUIRE(s);
  Config c;
  c.tracing = Json{{"path", "/var/lib/modelux/traces.db"}};
  CHECK(ServerConfig::control_db_path(c, *s) == url);  // it wins over db
  CHECK(ServerConfig::keys_db_path(c, *s) == url);     // keys are shared too
  s->keys_db = "/etc/k.db";
  CHECK(ServerConfig::keys_db_path(c, *s) == "/etc/k.db");  // unless they are named apart
  for (const Json& bad : {Json("db.internal:5432"), Json(5), Json("mysql://x")}) {
    auto r = ServerConfig::from_json(Json{{"control", {{"postgres_url", bad}}}});
    REQUIRE_FALSE(r);
    CHECK(r.error().path == "$.server.control.postgres_url");
  }
}
