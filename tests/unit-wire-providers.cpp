// Provider codecs: fixtures, every byte split of each stream, round trips against the server
// side (the mock's formats), errors, rate limits, SigV4 vectors and event-stream framing.
#include <doctest/doctest.h>

#include "modelux/ratelimits.hpp"
#include "modelux/wire.hpp"
#include "support/wire_decode.hpp"
#include "testing/server_codecs.hpp"

using namespace modelux;
using modelux::test::check_every_split;
using modelux::test::codec;
using modelux::test::decode_parts;
using modelux::test::Decoded;
using modelux::test::fixture;
using modelux::test::summary;

namespace {

ChatResponse sample_response(bool tool) {
  ChatResponse r;
  r.id = "resp_1";
  r.model = "m-1";
  Choice c;
  c.message.role = "assistant";
  if (tool) {
    c.message.content_null = true;
    c.message.tool_calls.push_back(ToolCall{"call_1", "get_weather", R"({"city":"Paris","days":2})"});
    c.finish_reason = "tool_calls";
  } else {
    ContentPart p;
    p.text = "Bonjour, le monde — ça va? 🌍 long enough to split in pieces";
    c.message.content.push_back(p);
    c.finish_reason = "stop";
  }
  r.choices.push_back(c);
  r.usage.prompt_tokens = 120;
  r.usage.completion_tokens = 17;
  r.usage.cached_tokens = 64;
  return r;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
}

ChatRequest tool_request() {
  auto r = parse_chat_request(R"({
    "model":"x","max_tokens":256,"temperature":0.5,"stop":["END"],
    "messages":[
      {"role":"system","content":"You are terse."},
      {"role":"user","content":[{"type":"text","text":"Weather in Paris?"},
                                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0"}}]},
      {"role":"assistant","content":null,"tool_calls":[{"id":"call_a1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
      {"role":"tool","tool_call_id":"call_a1","content":"{\"temp_c\":18}"},
      {"role":"user","content":"And tomorrow?"}],
    "tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather",
      "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],
    "tool_choice":"required"})");
  REQUIRE_MESSAGE(r.has_value(), r.error().describe());
  return *r;
}

ProviderEndpoint endpoint(std::string family) {
  ProviderEndpoint ep;
  ep.name = family;
  ep.family = family;
  ep.api_key = "sk-test";
  return ep;
}

}  // namespace

TEST_CASE("Codecs: every family is registered") {
  for (auto f : {"openai", "azure", "anthropic", "gemini", "cohere", "bedrock"}) CHECK(find_codec(f) != nullptr);
  CHECK(find_codec("nope") == nullptr);
}

TEST_CASE("Anthropic: stream fixture decodes the same for every byte split") {
  std::string bytes = fixture("anthropic_stream_tool.sse");
  check_every_split("anthropic", bytes);
  Decoded d = decode_parts("anthropic", {bytes});
  REQUIRE(d.response.choices.size() == 1);
  const auto& c = d.response.choices[0];
  CHECK(c.message.text() == "Let me check");
  REQUIRE(c.message.tool_calls.size() == 1);
  CHECK(c.message.tool_calls[0].id == "toolu_01A");
  CHECK(c.message.tool_calls[0].arguments == R"({"city": "Paris"})");
  CHECK(c.finish_reason == "tool_calls");
  CHECK(d.usage_chunks > 0);
  CHECK(d.response.usage.prompt_tokens == 25 + 100 + 10);
  CHECK(d.response.usage.cached_tokens == 100);
  CHECK(d.response.usage.cache_write_tokens == 10);
  CHECK(d.response.usage.completion_tokens == 42);
}

TEST_CASE("Anthropic: a mid-stream error event is an overloaded Error, and a cut stream is interrupted") {
  Decoded d = decode_parts("anthropic", {fixture("anthropic_stream_error.sse")});
  REQUIRE_FALSE(d.ok);
  CHECK(d.error.kind == ErrorKind::overloaded);
  std::string cut = fixture("anthropic_stream_tool.sse");
  cut.resize(cut.find("event: message_stop"));
  Decoded c = decode_parts("anthropic", {cut});
  REQUIRE_FALSE(c.ok);
  CHECK(c.error.kind == ErrorKind::stream_interrupted);
}

TEST_CASE("Anthropic: response fixture maps content, tool_use, stop reason and cache usage") {
  auto r = codec("anthropic").decode_response(fixture("anthropic_response_tool.json"));
  REQUIRE(r.has_value());
  CHECK(r->choices[0].message.text() == "Checking.");
  REQUIRE(r->choices[0].message.tool_calls.size() == 1);
  CHECK(r->choices[0].message.tool_calls[0].arguments == R"({"city":"Paris"})");
  CHECK(r->choices[0].finish_reason == "tool_calls");
  CHECK(r->usage.prompt_tokens == 12 + 2048);
  CHECK(r->usage.cached_tokens == 2048);
}

TEST_CASE("Anthropic: request encoding extracts system, merges tool results, maps tools and choice") {
  auto spec = codec("anthropic").encode_request(tool_request(), endpoint("anthropic"), "claude-haiku-4-5");
  REQUIRE_MESSAGE(spec.has_value(), spec.error().describe());
  CHECK(spec->url == "https://api.anthropic.com/v1/messages");
  REQUIRE(find_header(spec->headers, "x-api-key"));
  CHECK(*find_header(spec->headers, "anthropic-version") == "2023-06-01");
  auto body = Json::parse(spec->body);
  CHECK(body["system"][0]["text"] == "You are terse.");
  CHECK(body["max_tokens"] == 256);
  CHECK(body["stop_sequences"][0] == "END");
  CHECK(body["tool_choice"]["type"] == "any");
  CHECK(body["tools"][0]["input_schema"]["required"][0] == "city");
  auto& msgs = body["messages"];
  REQUIRE(msgs.size() == 3);
  CHECK(msgs[0]["content"][1]["source"]["media_type"] == "image/png");
  CHECK(msgs[1]["content"][0]["type"] == "tool_use");
  CHECK(msgs[1]["content"][0]["input"]["city"] == "Paris");
  // tool result and the next user text share one user turn, result first
  CHECK(msgs[2]["role"] == "user");
  CHECK(msgs[2]["content"][0]["type"] == "tool_result");
  CHECK(msgs[2]["content"][1]["text"] == "And tomorrow?");
  // and the server side reads it back
  auto back = wire::anthropic_request_from_native(body);
  REQUIRE(back.has_value());
  CHECK(back->tools.size() == 1);
  CHECK(back->tool_choice == "required");
}

TEST_CASE("Codecs: features a target cannot honour are unsupported errors naming the field") {
  auto req = tool_request();
  req.n = 2;
  auto a = codec("anthropic").encode_request(req, endpoint("anthropic"), "m");
  REQUIRE_FALSE(a.has_value());
  CHECK(a.error().kind == ErrorKind::unsupported);
  CHECK(a.error().path == "n");
  req.n.reset();
  req.extra = {{"logit_bias", {{"50256", -100}}}};
  for (auto f : {"anthropic", "gemini", "cohere", "bedrock"}) {
    auto r = codec(f).encode_request(req, endpoint(f), "m");
    REQUIRE_MESSAGE(!r.has_value(), f);
    CHECK(r.error().kind == ErrorKind::unsupported);
    CHECK(r.error().path == "logit_bias");
  }
  auto b = tool_request();
  b.response_format = {{"type", "json_object"}};
  auto br = codec("bedrock").encode_request(b, endpoint("bedrock"), "m");
  REQUIRE_FALSE(br.has_value());
  CHECK(br.error().path == "response_format");
}

TEST_CASE("Anthropic: temperature and top_p are never sent together") {
  // Current Claude models answer 400 to both; the anthropic SDK (>= 1.0) no longer has them.
  auto req = tool_request();  // temperature 0.5
  req.top_p = 0.9;
  auto both = codec("anthropic").encode_request(req, endpoint("anthropic"), "m");
  REQUIRE_FALSE(both.has_value());
  CHECK(both.error().kind == ErrorKind::unsupported);
  CHECK(both.error().path == "top_p");
  req.top_p = 1.0;  // no restriction at all: dropped, temperature kept
  auto neutral = codec("anthropic").encode_request(req, endpoint("anthropic"), "m");
  REQUIRE(neutral.has_value());
  auto body = Json::parse(neutral->body);
  CHECK(body["temperature"] == 0.5);
  CHECK_FALSE(body.contains("top_p"));
  req.temperature.reset();
  req.top_p = 0.9;  // alone it goes through
  auto alone = codec("anthropic").encode_request(req, endpoint("anthropic"), "m");
  REQUIRE(alone.has_value());
  CHECK(Json::parse(alone->body)["top_p"] == 0.9);
}

TEST_CASE("Anthropic: JSON mode is a forced tool whose input comes back as content") {
  auto req = parse_chat_request(R"({"model":"x","messages":[{"role":"user","content":"json please"}],
    "response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}})");
  REQUIRE(req.has_value());
  auto spec = codec("anthropic").encode_request(*req, endpoint("anthropic"), "m");
  REQUIRE(spec.has_value());
  auto body = Json::parse(spec->body);
  CHECK(body["tool_choice"]["name"] == wire::kJsonTool);
  CHECK(body["tools"][0]["input_schema"]["properties"]["a"]["type"] == "integer");
  auto r = codec("anthropic").decode_response(
      R"({"id":"m","model":"c","content":[{"type":"tool_use","id":"t","name":"json_response","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}})");
  REQUIRE(r.has_value());
  CHECK(r->choices[0].message.text() == R"({"a":1})");
  CHECK(r->choices[0].finish_reason == "stop");
  CHECK(r->choices[0].message.tool_calls.empty());
}

TEST_CASE("Gemini: stream fixture for every split, function call ids generated, usage from the last chunk") {
  std::string bytes = fixture("gemini_stream.sse");
  check_every_split("gemini", bytes);
  Decoded d = decode_parts("gemini", {bytes});
  const auto& c = d.response.choices.at(0);
  CHECK(c.message.text() == "Sunny, 18C.");
  REQUIRE(c.message.tool_calls.size() == 1);
  CHECK(c.message.tool_calls[0].name == "get_weather");
  CHECK(c.message.tool_calls[0].id == "call_0_0");
  CHECK(c.finish_reason == "tool_calls");
  CHECK(d.response.usage.prompt_tokens == 1200);
  CHECK(d.response.usage.cached_tokens == 1024);
  CHECK(d.response.usage.completion_tokens == 8 + 42);
  // no finishReason before the close: interrupted
  std::string cut = bytes.substr(0, bytes.find("data: ", 10));
  CHECK(decode_parts("gemini", {cut}).error.kind == ErrorKind::stream_interrupted);
}

TEST_CASE("Gemini: response, request and errors") {
  auto r = codec("gemini").decode_response(fixture("gemini_response.json"));
  REQUIRE(r.has_value());
  CHECK(r->choices[0].message.text() == "Sunny, 18C.");
  CHECK(r->usage.reasoning_tokens == 42);
  auto ep = endpoint("gemini");
  auto req = tool_request();
  req.stream = true;
  auto spec = codec("gemini").encode_request(req, ep, "gemini-2.5-flash");
  REQUIRE_MESSAGE(spec.has_value(), spec.error().describe());
  CHECK(spec->url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
  CHECK(*find_header(spec->headers, "x-goog-api-key") == "sk-test");
  auto body = Json::parse(spec->body);
  CHECK(body["systemInstruction"]["parts"][0]["text"] == "You are terse.");
  CHECK(body["contents"][1]["role"] == "model");
  CHECK(body["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather");
  CHECK(body["contents"][2]["parts"][0]["functionResponse"]["response"]["temp_c"] == 18);
  CHECK(body["toolConfig"]["functionCallingConfig"]["mode"] == "ANY");
  CHECK(body["generationConfig"]["maxOutputTokens"] == 256);
  // Tool parameters are JSON Schema, which only parametersJsonSchema takes whole.
  auto& decl = body["tools"][0]["functionDeclarations"][0];
  CHECK(decl["parametersJsonSchema"] == req.tools[0].parameters);
  CHECK_FALSE(decl.contains("parameters"));
  Error e = codec("gemini").decode_error(429, {}, fixture("gemini_error_429.json"));
  CHECK(e.kind == ErrorKind::rate_limited);
  REQUIRE(e.retry_after.has_value());
  CHECK(e.retry_after->count() == 38000);
}

TEST_CASE("Gemini: token counts past 2^63 saturate instead of overflowing") {
  // Found by fuzz_response: a candidatesTokenCount beyond int64 (clamped to its maximum) plus
  // the thoughts count overflowed, undefined behaviour (a negative count in a release build).
  const std::string body =
      R"({"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP","index":0}],)"
      R"("usageMetadata":{"promptTokenCount":9223372036854775807,"candidatesTokenCount":222222222222222222222222222222,)"
      R"("thoughtsTokenCount":42}})";
  auto r = codec("gemini").decode_response(body);
  REQUIRE(r.has_value());
  CHECK(r->usage.completion_tokens == INT64_MAX);
  CHECK(r->usage.reasoning_tokens == 42);
  CHECK(r->usage.total() == INT64_MAX);
  CHECK(modelux::add_tokens(INT64_MIN, -1) == INT64_MIN);
  CHECK(modelux::add_tokens(40, 2) == 42);
}

TEST_CASE("Cohere and OpenAI: stream fixtures for every split") {
  check_every_split("cohere", fixture("cohere_stream.sse"));
  Decoded c = decode_parts("cohere", {fixture("cohere_stream.sse")});
  CHECK(c.response.choices.at(0).message.text() == "Hello world");
  CHECK(c.response.usage.prompt_tokens == 70);
  check_every_split("openai", fixture("openai_stream_tool.sse"));
  Decoded o = decode_parts("openai", {fixture("openai_stream_tool.sse")});
  CHECK(o.response.choices.at(0).message.tool_calls.at(0).arguments == R"({"city":"Paris"})");
  CHECK(o.response.usage.completion_tokens == 2);
}

TEST_CASE("Bedrock: response fixture with cache usage") {
  auto r = codec("bedrock").decode_response(fixture("bedrock_response.json"));
  REQUIRE(r.has_value());
  CHECK(r->choices[0].finish_reason == "tool_calls");
  CHECK(r->choices[0].message.tool_calls[0].id == "tooluse_1");
  CHECK(r->usage.prompt_tokens == 30 + 5 + 7);
  CHECK(r->usage.cached_tokens == 5);
  CHECK(r->usage.cache_write_tokens == 7);
}

TEST_CASE("Round trip: server-side stream of each family decodes to the original response, any split") {
  for (bool tool : {false, true}) {
    ChatResponse orig = sample_response(tool);
    for (std::string family : {"openai", "anthropic", "gemini", "cohere", "bedrock"}) {
      CAPTURE(family);
      CAPTURE(tool);
      std::vector<std::string> events;
      if (family == "openai") events = wire::openai_stream_events(orig, 4, true);
      else if (family == "anthropic") events = wire::anthropic_stream_events(orig, 4);
      else if (family == "gemini") events = wire::gemini_stream_events(orig, 4);
      else if (family == "cohere") events = wire::cohere_stream_events(orig, 4);
      else events = wire::bedrock_stream_frames(orig, 4);
      std::string bytes = joined(events);
      Decoded d = decode_parts(family, {bytes});
      REQUIRE_MESSAGE(d.ok, d.error.describe());
      CHECK(d.usage_chunks > 0);
      const auto& c = d.response.choices.at(0);
      CHECK(c.message.text() == orig.choices[0].message.text());
      CHECK(c.finish_reason == orig.choices[0].finish_reason);
      REQUIRE(c.message.tool_calls.size() == orig.choices[0].message.tool_calls.size());
      if (tool) {
        CHECK(Json::parse(c.message.tool_calls[0].arguments) == Json::parse(orig.choices[0].message.tool_calls[0].arguments));
        CHECK(c.message.tool_calls[0].name == "get_weather");
        if (family != "gemini") CHECK(c.message.tool_calls[0].id == "call_1");
      }
      CHECK(d.response.usage.prompt_tokens == orig.usage.prompt_tokens);
      CHECK(d.response.usage.completion_tokens == orig.usage.completion_tokens);
      if (family != "cohere") CHECK(d.response.usage.cached_tokens == orig.usage.cached_tokens);
      check_every_split(family, bytes);
    }
  }
}

TEST_CASE("Round trip: server-side response bodies decode to the original response") {
  for (bool tool : {false, true}) {
    ChatResponse orig = sample_response(tool);
    for (std::string family : {"anthropic", "gemini", "cohere", "bedrock"}) {
      CAPTURE(family);
      Json body = family == "anthropic" ? wire::anthropic_response_to_native(orig)
                  : family == "gemini"  ? wire::gemini_response_to_native(orig)
                  : family == "cohere"  ? wire::cohere_response_to_native(orig)
                                        : wire::bedrock_response_to_native(orig);
      auto r = codec(family).decode_response(body.dump());
      REQUIRE_MESSAGE(r.has_value(), r.error().describe());
      if (family != "gemini") CHECK(summary(*r) == summary(orig));  // Gemini generates its own call ids
      CHECK(r->choices[0].message.text() == orig.choices[0].message.text());
      CHECK(r->choices[0].finish_reason == orig.choices[0].finish_reason);
      CHECK(r->usage.prompt_tokens == orig.usage.prompt_tokens);
    }
  }
}

TEST_CASE("Round trip: encoded requests parse back on each family's server side") {
  ChatRequest req = tool_request();
  for (std::string family : {"anthropic", "gemini", "cohere", "bedrock"}) {
    CAPTURE(family);
    auto spec = codec(family).encode_request(req, endpoint(family), "model-x");
    REQUIRE_MESSAGE(spec.has_value(), spec.error().describe());
    Json body = Json::parse(spec->body);
    Result<ChatRequest> back = family == "anthropic" ? wire::anthropic_request_from_native(body)
                               : family == "gemini"  ? wire::gemini_request_from_native(body, "model-x")
                               : family == "cohere"  ? wire::cohere_request_from_native(body)
                                                     : wire::bedrock_request_from_native(body, "model-x");
    REQUIRE_MESSAGE(back.has_value(), back.error().describe());
    REQUIRE(back->tools.size() == 1);
    CHECK(back->tools[0].name == "get_weather");
    CHECK(back->tools[0].parameters == req.tools[0].parameters);
    CHECK(back->tool_choice == "required");
    CHECK(back->max_tokens == 256);
    // system, user(text+image), assistant(tool call), tool, user
    std::vector<std::string> roles;
    for (const auto& m : back->messages) roles.push_back(m.role);
    CHECK(roles == std::vector<std::string>{"system", "user", "assistant", "tool", "user"});
    CHECK(back->messages[2].tool_calls.at(0).name == "get_weather");
    CHECK(Json::parse(back->messages[3].text())["temp_c"] == 18);
  }
}

TEST_CASE("Errors: status, body and headers map to kinds with retry-after") {
  SUBCASE("Anthropic 529 overloaded and 429 with retry-after") {
    Error e = codec("anthropic").decode_error(529, {}, wire::anthropic_error_body(529, "Overloaded").dump());
    CHECK(e.kind == ErrorKind::overloaded);
    CHECK(e.code == "overloaded_error");
    Error r = codec("anthropic").decode_error(429, {{"retry-after", "7"}}, wire::anthropic_error_body(429, "slow").dump());
    CHECK(r.kind == ErrorKind::rate_limited);
    REQUIRE(r.retry_after);
    CHECK(r.retry_after->count() == 7000);
  }
  SUBCASE("Anthropic 429 without retry-after uses anthropic-ratelimit reset against date") {
    Headers h = {{"date", "Thu, 21 Aug 2025 12:40:50 GMT"},
                 {"anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"},
                 {"anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:53.5Z"}};
    Error r = codec("anthropic").decode_error(429, h, wire::anthropic_error_body(429, "slow").dump());
    REQUIRE(r.retry_after);
    CHECK(r.retry_after->count() == 3500);
  }
  SUBCASE("Bedrock error type header") {
    Error e = codec("bedrock").decode_error(429, {{"x-amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/coral/"}},
                                            R"({"message":"Too many requests"})");
    CHECK(e.kind == ErrorKind::rate_limited);
    CHECK(e.message == "Too many requests");
    Error v = codec("bedrock").decode_error(400, {{"x-amzn-ErrorType", "ValidationException"}},
                                            R"({"message":"Input is too long for requested model."})");
    CHECK(v.kind == ErrorKind::context_length);
  }
  SUBCASE("Gemini daily quota is not retryable") {
    Error e = codec("gemini").decode_error(429, {}, R"({"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel"}]}]}})");
    CHECK(e.kind == ErrorKind::quota_exceeded);
  }
  SUBCASE("Cohere and Azure") {
    CHECK(codec("cohere").decode_error(429, {{"retry-after-ms", "1500"}}, R"({"message":"rate"})").retry_after->count() == 1500);
    CHECK(codec("azure").decode_error(404, {}, R"({"error":{"code":"DeploymentNotFound","message":"no"}})").kind == ErrorKind::not_found);
  }
}

TEST_CASE("Rate limits: OpenAI/Groq duration resets and Anthropic RFC 3339 resets") {
  Headers oa = {{"x-ratelimit-limit-requests", "10000"}, {"x-ratelimit-remaining-requests", "9999"},
                {"x-ratelimit-limit-tokens", "30000"},   {"x-ratelimit-remaining-tokens", "29000"},
                {"x-ratelimit-reset-requests", "6m0s"},  {"x-ratelimit-reset-tokens", "2m59.56s"}};
  auto s = parse_rate_limits("openai", oa);
  CHECK(s.limit_requests == 10000);
  CHECK(s.remaining_tokens == 29000);
  CHECK(s.reset_requests->count() == 360000);
  CHECK(s.reset_tokens->count() == 179560);
  Headers an = {{"date", "Thu, 21 Aug 2025 12:40:00 GMT"},
                {"anthropic-ratelimit-requests-limit", "50"},
                {"anthropic-ratelimit-requests-remaining", "49"},
                {"anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"},
                {"anthropic-ratelimit-input-tokens-limit", "40000"},
                {"anthropic-ratelimit-input-tokens-remaining", "39000"}};
  auto a = parse_rate_limits("anthropic", an);
  CHECK(a.remaining_requests == 49);
  CHECK(a.reset_requests->count() == 59000);
  CHECK(a.limit_tokens == 40000);
  CHECK(parse_rate_limits("gemini", {}).empty());
}

TEST_CASE("Dates: RFC 3339 and IMF-fixdate parsing") {
  CHECK(wire::parse_rfc3339_ms("1970-01-01T00:00:00Z") == 0);
  CHECK(wire::parse_rfc3339_ms("2000-03-01T00:00:00.25+01:00") == 951865200250LL);
  CHECK_FALSE(wire::parse_rfc3339_ms("2000-13-01T00:00:00Z"));
  CHECK(wire::parse_http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777000LL);
}

TEST_CASE("SigV4: AWS published vectors") {
  SUBCASE("signing key and signature from the IAM example") {
    std::string key = wire::sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20110909", "us-east-1", "iam");
    CHECK(wire::to_hex(key) == "98f1d889fec4f4421adc522bab0ce1f82e6929c262ed15e5a94c90efd1e3b0e7");
    std::string sts = "AWS4-HMAC-SHA256\n20110909T233600Z\n20110909/us-east-1/iam/aws4_request\n"
                      "3511de7e95d28ecd39e9513b642aee07e54f4941150d8df8bf94b328ef7e55e2";
    CHECK(wire::to_hex(wire::hmac_sha256(key, sts)) == "ced6826de92d2bdeed8f846f0bf508e8559e98e4b0199114b84c54174deb456c");
  }
  SUBCASE("test suite get-vanilla and get-vanilla-query-order-key-case") {
    wire::SigV4Request r;
    r.method = "GET";
    r.canonical_uri = "/";
    r.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
    r.payload_sha256 = wire::sha256_hex("");
    wire::SigV4Credentials cred{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service"};
    auto s = wire::sigv4_sign(r, cred, "20150830T123600Z");
    CHECK(s.authorization ==
          "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
          "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    r.query = "Param2=value2&Param1=value1";
    CHECK(wire::sigv4_sign(r, cred, "20150830T123600Z").signature ==
          "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
  }
  SUBCASE("S3 GET object example") {
    wire::SigV4Request r;
    r.method = "GET";
    r.canonical_uri = "/test.txt";
    r.payload_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    r.headers = {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"},
                 {"x-amz-content-sha256", r.payload_sha256}, {"x-amz-date", "20130524T000000Z"}};
    auto s = wire::sigv4_sign(r, {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3"},
                              "20130524T000000Z");
    CHECK(wire::sha256_hex(s.canonical_request) == "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    CHECK(s.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  }
  SUBCASE("Bedrock requests are signed with a double-encoded model path") {
    ProviderEndpoint ep = endpoint("bedrock");
    ep.base_url = "https://bedrock-runtime.{region}.amazonaws.com";
    ep.api_key.clear();
    ep.options = {{"region", "us-west-2"}, {"access_key_id", "AKIDEXAMPLE"},
                  {"secret_access_key", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}, {"amz_date", "20250101T000000Z"}};
    auto spec = codec("bedrock").encode_request(tool_request(), ep, "anthropic.claude-3-5-sonnet-20240620-v1:0");
    REQUIRE_MESSAGE(spec.has_value(), spec.error().describe());
    CHECK(spec->url == "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse");
    const std::string* auth = find_header(spec->headers, "authorization");
    REQUIRE(auth);
    CHECK(auth->starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-west-2/bedrock/aws4_request"));
    wire::SigV4Request r;
    r.method = "POST";
    r.canonical_uri = "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse";
    r.headers = {{"content-type", "application/json"}, {"host", "bedrock-runtime.us-west-2.amazonaws.com"}, {"x-amz-date", "20250101T000000Z"}};
    r.payload_sha256 = wire::sha256_hex(spec->body);
    auto expect = wire::sigv4_sign(r, {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-west-2", "bedrock"}, "20250101T000000Z");
    CHECK(*auth == expect.authorization);
  }
}

TEST_CASE("EventStream: the published vector, CRC checks and every split") {
  const unsigned char v[] = {0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x20, 0x07, 0xfd, 0x83, 0x96, 0x0c, 'c', 'o', 'n', 't', 'e',
                             'n',  't',  '-',  't',  'y',  'p',  'e',  0x07, 0x00, 0x10, 'a',  'p',  'p',  'l', 'i', 'c', 'a', 't',
                             'i',  'o',  'n',  '/',  'j',  's',  'o',  'n',  '{',  '\'', 'f',  'o',  'o',  '\'', ':', '\'', 'b', 'a',
                             'r',  '\'', '}',  0x8d, 0x9c, 0x08, 0xb1};
  std::string bytes(reinterpret_cast<const char*>(v), sizeof v);
  REQUIRE(bytes.size() == 61);
  wire::EventStreamParser p;
  std::vector<wire::EventStreamMessage> out;
  REQUIRE(p.feed(bytes, out).has_value());
  REQUIRE(out.size() == 1);
  CHECK(*out[0].header("content-type") == "application/json");
  CHECK(out[0].payload == "{'foo':'bar'}");
  CHECK(wire::encode_event_stream_message({{"content-type", "application/json"}}, "{'foo':'bar'}") == bytes);
  for (std::size_t i = 0; i <= bytes.size(); ++i) {
    wire::EventStreamParser q;
    std::vector<wire::EventStreamMessage> o;
    REQUIRE(q.feed(bytes.substr(0, i), o).has_value());
    REQUIRE(q.feed(bytes.substr(i), o).has_value());
    REQUIRE(o.size() == 1);
  }
  std::string bad = bytes;
  bad[50] ^= 1;
  wire::EventStreamParser q;
  auto r = q.feed(bad, out);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("CRC") != std::string::npos);
  std::string bad_prelude = bytes;
  bad_prelude[3] = 0x3e;
  wire::EventStreamParser q2;
  CHECK_FALSE(q2.feed(bad_prelude, out).has_value());
}

TEST_CASE("Bedrock: a stream exception frame is an Error with its kind") {
  std::string frame = wire::encode_event_stream_message(
      {{":exception-type", "throttlingException"}, {":content-type", "application/json"}, {":message-type", "exception"}},
      R"({"message":"slow down"})");
  Decoded d = decode_parts("bedrock", {frame});
  REQUIRE_FALSE(d.ok);
  CHECK(d.error.kind == ErrorKind::rate_limited);
}

TEST_CASE("Azure: deployment URL, api-version and api-key header") {
  ProviderEndpoint ep = endpoint("azure");
  ep.base_url = "https://{resource}.openai.azure.com/openai";
  ep.options = {{"resource", "contoso"}, {"api_version", "2024-10-21"}};
  auto spec = codec("azure").encode_request(tool_request(), ep, "gpt-4o-prod");
  REQUIRE(spec.has_value());
  CHECK(spec->url == "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
  CHECK(*find_header(spec->headers, "api-key") == "sk-test");
  CHECK(find_header(spec->headers, "authorization") == nullptr);
}

TEST_CASE("OpenAI-compatible quirks: Mistral ids, Perplexity tools, DeepSeek cache usage, mid-stream errors") {
  ProviderEndpoint m = endpoint("openai");
  m.name = "mistral";
  m.base_url = "https://api.mistral.ai/v1";
  auto spec = codec("openai").encode_request(tool_request(), m, "mistral-large-latest");
  REQUIRE(spec.has_value());
  auto body = Json::parse(spec->body);
  std::string id = body["messages"][2]["tool_calls"][0]["id"];
  CHECK(id.size() == 9);
  CHECK(body["messages"][3]["tool_call_id"] == id);
  // Streams ask for usage with stream_options, except on Mistral, which refuses the field (422).
  auto streaming = tool_request();
  streaming.stream = true;
  streaming.include_usage = true;
  auto ms = codec("openai").encode_request(streaming, m, "mistral-large-latest");
  REQUIRE(ms.has_value());
  CHECK_FALSE(Json::parse(ms->body).contains("stream_options"));
  // Fields Mistral knows under another name are renamed, hints it would refuse are left out.
  auto hinted = parse_chat_request(
      R"({"model":"x","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":50,"seed":7,"user":"u-1","store":false})");
  REQUIRE(hinted.has_value());
  auto mh = codec("openai").encode_request(*hinted, m, "mistral-small-latest");
  REQUIRE(mh.has_value());
  auto hb = Json::parse(mh->body);
  CHECK(hb["max_tokens"] == 50);
  CHECK(hb["random_seed"] == 7);
  for (const char* k : {"max_completion_tokens", "seed", "user", "store"}) CHECK_FALSE(hb.contains(k));
  auto os = codec("openai").encode_request(streaming, endpoint("openai"), "gpt-4o");
  REQUIRE(os.has_value());
  CHECK(Json::parse(os->body)["stream_options"]["include_usage"] == true);
  ProviderEndpoint p = endpoint("openai");
  p.name = "perplexity";
  auto pr = codec("openai").encode_request(tool_request(), p, "sonar");
  REQUIRE_FALSE(pr.has_value());
  CHECK(pr.error().path == "tools");
  auto ds = codec("openai").decode_response(
      R"({"id":"x","object":"chat.completion","created":1,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":2,"total_tokens":102,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}})");
  REQUIRE(ds.has_value());
  CHECK(ds->usage.cached_tokens == 64);
  Decoded e = decode_parts("openai", {"data: {\"error\":{\"message\":\"upstream died\",\"code\":502}}\n\n"});
  REQUIRE_FALSE(e.ok);
  CHECK(e.error.kind == ErrorKind::server_error);
}
