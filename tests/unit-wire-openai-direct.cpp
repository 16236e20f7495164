// The plain OpenAI request without a JSON DOM (src/wire/openai_direct.cpp) against the DOM path
// it short-cuts: for every body, the direct reader must give the same ChatRequest as
// chat_request_from_json(parse_json(body)) or decline; for every request, the direct writer must
// give the same bytes as nlohmann's dump of the encoder's DOM or decline. Hand-written bodies
// cover each field and each reason to decline; generated ones mix fields, escapes, non-ASCII
// text and number spellings; the wire fixtures' messages are encoded as conversation turns.
#include <doctest/doctest.h>

#include <filesystem>
#include <random>

#include "modelux/wire.hpp"
#include "support/paths.hpp"
#include "support/wire_decode.hpp"
#include "wire/codecs.hpp"

using namespace modelux;

namespace {

// Everything of a ChatRequest that to_json does not show.
std::string shape(const ChatRequest& r) {
  std::string s = to_json(r).dump(-1, ' ', false, Json::error_handler_t::replace);
  s += "|" + std::to_string(r.stream) + std::to_string(r.include_usage) + std::to_string(r.max_tokens_is_completion);
  for (const auto& m : r.messages) {
    s += "|" + std::to_string(m.content_null) + std::to_string(m.content_is_string) + std::to_string(m.content.size());
    for (const auto& p : m.content) s += std::to_string(static_cast<int>(p.type));
  }
  return s;
}

// What the OpenAI encoder's DOM path sends for `r` (non-Mistral).
std::string dom_body(const ChatRequest& r, std::string_view model) {
  Json body = to_json(r);
  body["model"] = std::string(model);
  if (r.stream) body["stream_options"] = {{"include_usage", true}};
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

struct Tally {
  int read_direct = 0, write_direct = 0;
};

// Checks one body both ways; returns whether the direct reader took it.
bool check_body(const std::string& body, Tally& t, const ParseLimits& limits = {}) {
  INFO("body: " << body);
  Result<ChatRequest> dom = [&]() -> Result<ChatRequest> {
    auto j = parse_json(body, limits);
    if (!j) return fail(j.error());
    return chat_request_from_json(*j);
  }();
  auto direct = wire::read_plain_chat_request(body, limits);
  if (direct) {
    ++t.read_direct;
    REQUIRE_MESSAGE(dom.has_value(), dom.error().describe());
    CHECK(shape(*direct) == shape(*dom));
  }
  // The public entry point answers as the DOM path, errors included.
  auto pub = parse_chat_request(body, limits);
  REQUIRE(pub.has_value() == dom.has_value());
  if (!dom) {
    CHECK(pub.error().message == dom.error().message);
    CHECK(pub.error().path == dom.error().path);
    return false;
  }
  CHECK(shape(*pub) == shape(*dom));
  for (std::string_view model : {"gpt-4o-mini", "m\"odel\\/ü"}) {
    auto w = wire::openai_body_direct(*dom, model);
    if (w) {
      ++t.write_direct;
      CHECK(*w == dom_body(*dom, model));
    }
    // Through the codecs as the router calls them.
    ProviderEndpoint ep;
    ep.base_url = "https://api.openai.com/v1";
    auto spec = openai_codec().encode_request(*dom, ep, model);
    REQUIRE(spec.has_value());
    CHECK(spec->body == dom_body(*dom, model));
    ep.base_url = "https://{resource}.openai.azure.com/openai";
    ep.options["resource"] = "r";
    auto az = azure_codec().encode_request(*dom, ep, model);
    REQUIRE(az.has_value());
    CHECK(az->body == dom_body(*dom, model));
  }
  return direct.has_value();
}

}  // namespace

TEST_CASE("Direct reader and writer: plain bodies are taken and match the DOM path") {
  const char* plain[] = {
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})",
      R"({"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi","name":"ann"}],"temperature":0.7,"max_tokens":64})",
      R"( { "messages" : [ { "content" : "a\"b\\c\/d\n\t\r\b\f" , "role" : "user" } ] , "model" : "x" , "stream" : true } )",
      R"({"model":"m","messages":[{"role":"user","content":"héllo wörld ✓ 😀"}],"stream":true,"stream_options":{"include_usage":true}})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":false,"stream_options":{}})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":null},"stream":null})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"n":2,"seed":-7,"top_p":1})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e-5,"top_p":0.1234567890123,"seed":0})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":-0,"top_p":2.5E+2,"user":"u1"})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":"\n\n"})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b"],"user":null,"n":null,"seed":null})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":[],"temperature":null,"top_p":null,"max_tokens":null})",
      R"({"model":"m","messages":[{"role":"assistant","content":null},{"role":"assistant"},{"role":"user","content":""}]})",
      R"({"model":"m","messages":[{"role":"tool","content":"42","tool_call_id":"call_1"},{"role":"developer","content":"d","name":null}]})",
      R"({"model":"m","messages":[{"role":"tool","content":"42","tool_call_id":""},{"role":"function","content":"f","name":"fn"}]})",
      "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\x7f del\"}]}",
  };
  Tally t;
  for (const char* b : plain) CHECK_MESSAGE(check_body(b, t), b);
  CHECK(t.write_direct == 2 * static_cast<int>(std::size(plain)));
}

TEST_CASE("Direct reader declines what it does not handle and the errors stay the DOM path's") {
  const char* others[] = {
      // other fields and shapes: the DOM path
      R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"auto"})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"k":"v"}})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"parallel_tool_calls":false})",
      R"({"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]})",
      R"({"model":"m","messages":[{"role":"assistant","content":"x","refusal":"no"}]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true,"other":1}})",
      R"({"model":"m","messages":[{"role":"user","content":"\u00e9\ud83d\ude00"}]})",
      R"({"model":"m","model":"n","messages":[{"role":"user","content":"x"}]})",
      R"({"model":"m","messages":[{"role":"user","content":"x","content":"y"}]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_completion_tokens":6})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551615})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e400})",
      "\xEF\xBB\xBF{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
      // errors
      R"({"model":"","messages":[{"role":"user","content":"x"}]})",
      R"({"messages":[{"role":"user","content":"x"}]})",
      R"({"model":"m"})",
      R"({"model":"m","messages":[]})",
      R"({"model":"m","messages":[{"role":"robot","content":"x"}]})",
      R"({"model":"m","messages":[{"role":"user"}]})",
      R"({"model":"m","messages":[{"role":"tool","content":"x"}]})",
      R"({"model":"m","messages":[{"role":"tool","content":"x","tool_call_id":null}]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.0})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":1e2})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"1"})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":1})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":[1]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":01})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":.5})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}]} x)",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],})",
      R"({"model":"m","messages":[{"role":"user","content":"x"},]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}])",
      R"({"model":"m","messages":[{"role":"user","content":"a\qb"}]})",
      "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\x01\"}]}",
      "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"bad \xC3\x28 utf8\"}]}",
      "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"cut \xE2\x9C\"}]}",
      R"([])",
      R"({})",
      "",
  };
  Tally t;
  for (const char* b : others) CHECK_MESSAGE(!check_body(b, t), b);
  CHECK(t.read_direct == 0);
  // The limits are the DOM path's.
  const std::string small = R"({"model":"m","messages":[{"role":"user","content":"x"}]})";
  CHECK_FALSE(check_body(small, t, ParseLimits{.max_bytes = 10, .max_depth = 64}));
  CHECK_FALSE(check_body(small, t, ParseLimits{.max_bytes = 1000, .max_depth = 2}));
}

TEST_CASE("Direct reader and writer: generated bodies match the DOM path") {
  std::mt19937 rng(1913);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const char* texts[] = {"hello", "", "tab\\there", "quote \\\" and \\\\ back", "ünïcødé ✓", "😀 emoji",
                         "line\\nbreak", "\\/slash", "ctl \\b\\f\\r", "{\\\"json\\\": [1,2]}", "a b  c   "};
  const char* roles[] = {"system", "user", "assistant", "developer", "user", "user"};
  const char* numbers[] = {"0", "1", "0.5", "0.7", "1.0", "2", "1e-3", "1E2", "0.30000000000000004", "-0.0", "123456789.125", "7e-10",
                           "1e16", "123456789012345678", "0.0001", "0.00001", "1.7976931348623157e308", "5e-324"};
  const char* ints[] = {"1", "16", "4096", "9223372036854775807", "0", "-3"};
  Tally t;
  int taken = 0;
  const int rounds = 600;
  for (int i = 0; i < rounds; ++i) {
    std::vector<std::string> members;
    std::string msgs = "[";
    int nm = 1 + pick(4);
    for (int k = 0; k < nm; ++k) {
      if (k) msgs += ",";
      std::vector<std::string> f = {std::string("\"role\":\"") + roles[pick(6)] + "\"",
                                    std::string("\"content\":\"") + texts[pick(11)] + "\""};
      if (pick(4) == 0) f.push_back(std::string("\"name\":\"") + texts[pick(3)] + "\"");
      std::shuffle(f.begin(), f.end(), rng);
      msgs += "{";
      for (std::size_t q = 0; q < f.size(); ++q) msgs += (q ? (pick(2) ? ", " : ",") : "") + f[q];
      msgs += "}";
    }
    msgs += "]";
    members.push_back("\"messages\":" + msgs);
    members.push_back(std::string("\"model\":\"") + (pick(2) ? "gpt-4o-mini" : "llama-3.1-8b") + "\"");
    if (pick(2)) members.push_back(std::string("\"temperature\":") + numbers[pick(static_cast<int>(std::size(numbers)))]);
    if (pick(3) == 0) members.push_back(std::string("\"top_p\":") + numbers[pick(static_cast<int>(std::size(numbers)))]);
    if (pick(2)) members.push_back(std::string(pick(2) ? "\"max_tokens\":" : "\"max_completion_tokens\":") + ints[pick(6)]);
    if (pick(4) == 0) members.push_back(std::string("\"seed\":") + ints[pick(6)]);
    if (pick(5) == 0) members.push_back(std::string("\"n\":") + ints[pick(3)]);
    if (pick(2)) members.push_back(std::string("\"stream\":") + (pick(3) ? "true" : "false"));
    if (pick(3) == 0) members.push_back(std::string("\"stream_options\":{\"include_usage\":") + (pick(2) ? "true" : "false") + "}");
    if (pick(4) == 0) members.push_back(std::string("\"stop\":") + (pick(2) ? "\"\\n\"" : "[\"END\",\"\\u0000\"]"));
    if (pick(4) == 0) members.push_back(std::string("\"user\":\"") + texts[pick(11)] + "\"");
    if (pick(8) == 0) members.push_back("\"logprobs\":true");
    std::shuffle(members.begin(), members.end(), rng);
    std::string body = pick(2) ? "{" : " {\n  ";
    for (std::size_t q = 0; q < members.size(); ++q) body += (q ? "," : "") + members[q];
    body += "}";
    if (check_body(body, t)) ++taken;
  }
  // Most generated bodies are plain (the rest carry logprobs, a \u escape, an invalid value).
  CHECK(taken > rounds / 2);
  CHECK(t.write_direct > rounds);
}

TEST_CASE("Direct writer: the wire fixtures' messages as conversation turns match the DOM path") {
  namespace fs = std::filesystem;
  int files = 0, direct = 0;
  for (const auto& e : fs::directory_iterator(fs::path(test::source_dir()) / "tests/fixtures/wire")) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() != ".json" || name.find("_response") == std::string::npos) continue;
    std::string family = name.substr(0, name.find('_'));
    if (family == "groq" || family == "mistral" || family == "deepseek") family = "openai";
    const Codec* c = find_codec(family);
    if (!c) continue;
    auto resp = c->decode_response(test::fixture(name));
    REQUIRE_MESSAGE(resp.has_value(), name);
    ++files;
    for (bool stream : {false, true}) {
      ChatRequest r;
      r.model = "m";
      r.stream = stream;
      r.messages.push_back(Message::user("what does " + name + " say?"));
      for (const auto& ch : resp->choices) r.messages.push_back(ch.message);
      auto w = wire::openai_body_direct(r, "gpt-4o");
      if (w) {
        ++direct;
        CHECK_MESSAGE(*w == dom_body(r, "gpt-4o"), name);
      }
      ProviderEndpoint ep;
      auto spec = openai_codec().encode_request(r, ep, "gpt-4o");
      REQUIRE(spec.has_value());
      CHECK_MESSAGE(spec->body == dom_body(r, "gpt-4o"), name);
    }
  }
  CHECK(files >= 8);
  CHECK(direct >= 8);  // the text answers; tool calls take the DOM path
}
