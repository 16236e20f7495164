// The MCP tool generator (OpenAPI document → tools) and the argument check against a tool's
// input schema (src/server/mcp.hpp). The HTTP endpoint itself is tested end to end with the
// official MCP SDK in tests/e2e/test_mcp.py.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "modelux/wire.hpp"
#include "server/mcp.hpp"

namespace modelux::embedded {
extern const std::string_view kOpenApiJson;
}

using modelux::Json;
namespace mcp = modelux::proxy::mcp;

namespace {

Json parse(std::string_view s) {
  auto j = modelux::parse_json(s);
  REQUIRE(j.has_value());
  return *j;
}

const Json* tool_named(const Json& tools, std::string_view name) {
  for (const auto& t : tools)
    if (t["name"] == name) return &t;
  return nullptr;
}

// A document with the real routes' paths (the generator keeps only what the route table serves).
const char* kDoc = R"({
  "openapi": "3.1.0",
  "paths": {
    "/v1/configs/{slug}": {
      "parameters": [{"name": "slug", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z]+$"}}],
      "get": {"operationId": "getConfig", "summary": "One config", "tags": ["configs"]},
      "put": {"operationId": "putConfig", "summary": "Change a config", "description": "Admin.", "tags": ["configs"],
              "parameters": [{"name": "if-match", "in": "header", "description": "The version", "schema": {"type": "string"}},
                             {"name": "slug", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 3}}],
              "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}}}
    },
    "/v1/configs/{slug}/diff": {
      "get": {"operationId": "diffConfig", "tags": ["configs"],
              "parameters": [{"name": "slug", "in": "path", "schema": {"type": "string"}},
                             {"name": "from", "in": "query", "schema": {"type": "integer", "minimum": 1}}]}
    },
    "/v1/chat/completions": {"post": {"operationId": "createChatCompletion", "tags": ["data plane"]}},
    "/healthz": {"get": {"operationId": "healthz", "tags": ["probes"]}},
    "/mcp": {"post": {"operationId": "mcp", "tags": ["mcp"]}},
    "/v1/not-routed": {"get": {"operationId": "notRouted", "tags": ["configs"]}},
    "/v1/traces": {"get": {"operationId": "tracesPage", "tags": ["traces"],
                           "responses": {"200": {"content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/v1/traces/{id}": {"get": {"operationId": "getTrace", "tags": ["traces"],
                           "responses": {"200": {"content": {"text/plain": {}, "application/json": {}}}, "4XX": {"content": {"text/html": {}}}}}},
    "/metrics": {"get": {"operationId": "metricsUntagged"}},
    "/v1/keys": {"get": {"summary": "no operationId", "tags": ["keys"]}, "delete": {"operationId": "bogusMethod"}}
  },
  "components": {"schemas": {
    "Node": {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string"}, "child": {"$ref": "#/components/schemas/Node"},
                            "weird~name": {"$ref": "#/components/schemas/a~1b"}}},
    "a/b": {"type": "integer"}
  }}
})";

}  // namespace

TEST_CASE("mcp tools: one per routed admin operation with its parameters and body") {
  Json tools = mcp::tools_from_openapi(parse(kDoc));
  std::set<std::string> names;
  for (const auto& t : tools) names.insert(t["name"].get<std::string>());
  // Data plane, probes, mcp, paths outside /v1/, answers that are not JSON, unrouted paths,
  // operations without an operationId or a route: no tool.
  CHECK(names == std::set<std::string>{"getConfig", "putConfig", "diffConfig", "getTrace"});

  const Json* put = tool_named(tools, "putConfig");
  REQUIRE(put);
  const Json& in = (*put)["inputSchema"];
  CHECK(in["type"] == "object");
  CHECK(in["additionalProperties"] == false);
  CHECK(in["required"] == Json::array({"slug", "body"}));
  // The operation's own parameter overrides the path item's of the same name and place.
  CHECK(in["properties"]["slug"]["maxLength"] == 3);
  CHECK_FALSE(in["properties"]["slug"].contains("pattern"));
  CHECK(in["properties"]["if-match"]["description"] == "The version");
  // The body's $ref is inlined, a self-reference ends in {} instead of looping, and ~1 is '/'.
  CHECK(in["properties"]["body"]["required"] == Json::array({"name"}));
  CHECK(in["properties"]["body"]["properties"]["weird~name"]["type"] == "integer");
  CHECK(in.dump().find("$ref") == std::string::npos);
  CHECK((*put)["description"].get<std::string>().find("Admin.") != std::string::npos);
  CHECK((*put)["description"].get<std::string>().find("REST: PUT /v1/configs/{slug}. Needs an admin key.") != std::string::npos);
  CHECK((*put)["annotations"]["readOnlyHint"] == false);
  CHECK((*put)["annotations"]["idempotentHint"] == true);

  const Json* diff = tool_named(tools, "diffConfig");
  REQUIRE(diff);
  // A path parameter is required even when the document forgets to say so.
  CHECK((*diff)["inputSchema"]["required"] == Json::array({"slug"}));
  CHECK((*diff)["annotations"]["readOnlyHint"] == true);
}

TEST_CASE("mcp tools: nothing from a document without paths or with the wrong shapes") {
  CHECK(mcp::tools_from_openapi(Json::object()).empty());
  CHECK(mcp::tools_from_openapi(Json::array()).empty());
  CHECK(mcp::tools_from_openapi(parse(R"({"paths": {"/v1/configs": []}})")).empty());
  CHECK(mcp::tools_from_openapi(parse(R"({"paths": {"/v1/configs": {"get": {"operationId": 7}}}})")).empty());
  // A dangling $ref is an empty schema, not a crash.
  Json tools = mcp::tools_from_openapi(parse(
      R"({"paths": {"/v1/webhooks": {"post": {"operationId": "createWebhook", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/nowhere"}}}}}}}})"));
  REQUIRE(tools.size() == 1);
  CHECK(tools[0]["inputSchema"]["properties"]["body"].is_object());
}

TEST_CASE("mcp tools: the embedded document gives unique names and object schemas") {
  auto doc = parse(modelux::embedded::kOpenApiJson);
  Json tools = mcp::tools_from_openapi(doc);
  CHECK(tools.size() >= 20);
  std::set<std::string> names;
  for (const auto& t : tools) {
    CHECK(names.insert(t["name"].get<std::string>()).second);
    CHECK(t["inputSchema"]["type"] == "object");
    CHECK(!t["description"].get<std::string>().empty());
  }
  CHECK(names.count("rollbackConfig") == 1);
  CHECK(names.count("createChatCompletion") == 0);
}

TEST_CASE("mcp arguments: the schema keywords the document uses are checked") {
  Json schema = parse(R"({
    "type": "object", "additionalProperties": false, "required": ["slug"],
    "properties": {
      "slug": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
      "limit": {"type": "integer", "minimum": 1, "maximum": 10},
      "ratio": {"type": ["number", "null"]},
      "mode": {"enum": ["a", "b"]},
      "body": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
               "additionalProperties": {"type": "integer"}},
      "either": {"anyOf": [{"type": "string"}, {"type": "boolean"}]}
    }})");
  CHECK(mcp::validate(schema, parse(R"({"slug": "abc", "limit": 3, "ratio": null, "mode": "a"})")).empty());
  CHECK(mcp::validate(schema, parse(R"({"slug": "abc", "limit": 3.0, "ratio": 0.5})")).empty());  // 3.0 is an integer
  CHECK(mcp::validate(schema, parse(R"({"slug": "abc", "body": {"tags": ["x"], "extra": 1}, "either": true})")).empty());

  auto one = [&](std::string_view args) {
    auto errs = mcp::validate(schema, parse(args));
    REQUIRE(errs.size() == 1);
    return errs[0];
  };
  CHECK(one(R"({})") == "arguments: missing required property 'slug'");
  CHECK(one(R"({"slug": "abc", "nope": 1})") == "arguments: unknown property 'nope'");
  CHECK(one(R"({"slug": 5})") == "arguments.slug: expected string, got integer");
  CHECK(one(R"({"slug": "ABC"})") == "arguments.slug: does not match the pattern ^[a-z]+$");
  CHECK(one(R"({"slug": "abcdef"})") == "arguments.slug: longer than 5 characters");
  CHECK(one(R"({"slug": "abc", "limit": 2.5})") == "arguments.limit: expected integer, got number");
  CHECK(one(R"({"slug": "abc", "limit": 11})") == "arguments.limit: more than 10");
  CHECK(one(R"({"slug": "abc", "ratio": "x"})") == "arguments.ratio: expected number or null, got string");
  CHECK(one(R"({"slug": "abc", "mode": "c"})") == R"(arguments.mode: must be one of ["a","b"])");
  CHECK(one(R"({"slug": "abc", "body": {"tags": [1]}})") == "arguments.body.tags[0]: expected string, got integer");
  CHECK(one(R"({"slug": "abc", "body": {"tags": ["a", "b", "c"]}})") == "arguments.body.tags: more than 2 items");
  CHECK(one(R"({"slug": "abc", "body": {"extra": "s"}})") == "arguments.body.extra: expected integer, got string");
  CHECK(one(R"({"slug": "abc", "either": 1})") == "arguments.either: matches none of the allowed shapes");
  CHECK(one(R"([])") == "arguments: expected object, got array");
}

TEST_CASE("mcp arguments: many problems are capped and deep values do not recurse forever") {
  Json schema = parse(R"({"type": "object", "additionalProperties": false})");
  Json args = Json::object();
  for (int i = 0; i < 50; ++i) {
    std::string key = "k";
    key += std::to_string(i);
    args[key] = i;
  }
  CHECK(mcp::validate(schema, args).size() == 8);
  // A schema nested deeper than the check follows: the deep part is not checked, no crash.
  Json deep = Json::object(), v = Json::object();
  Json* s = &deep;
  Json* x = &v;
  for (int i = 0; i < 200; ++i) {
    (*s)["type"] = "object";
    (*s)["properties"]["a"] = Json::object();
    s = &(*s)["properties"]["a"];
    (*x)["a"] = Json::object();
    x = &(*x)["a"];
  }
  CHECK(mcp::validate(deep, v).empty());
  // An invalid pattern in a schema is skipped, not thrown.
  CHECK(mcp::validate(parse(R"({"type": "string", "pattern": "(["})"), Json("x")).empty());
}
