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
  };
  for (const auto& c : cases) {
    CAPTURE(c.doc.dump());
    auto r = ServerConfig::from_json(c.doc);
    REQUIRE_FALSE(r);
    CHECK(r.error().path == c.path);
  }
}
