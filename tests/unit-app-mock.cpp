// The mock provider's wire layer (src/testing/native.hpp) against the library's real client
// codecs: what a codec encodes, the mock parses; what the mock renders, the codec decodes to the
// same answer (whole bodies, streams at every byte split, errors with retry-after). Plus the
// mock's behaviour (fault knob) parsing and live reconfiguration.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "testing/native.hpp"
#include "modelux/testing.hpp"
#include "modelux/wire.hpp"

using namespace modelux;
using modelux::mock::MockRequest;

namespace {

struct FamilyCase {
  const char* family;
  const char* base_url;
  const char* upstream;
  std::map<std::string, std::string> options;
};

// Every family the mock speaks, with an endpoint shaped like the e2e config's.
const std::vector<FamilyCase>& families() {
  static const std::vector<FamilyCase> f = {
      {"openai", "http://127.0.0.1:9/v1", "gpt-4o-mini", {}},
      {"azure", "http://127.0.0.1:9/openai", "gpt-4o", {{"api_version", "2024-10-21"}}},
      {"anthropic", "http://127.0.0.1:9", "claude-haiku-4-5", {}},
      {"gemini", "http://127.0.0.1:9", "gemini-2.5-flash", {}},
      {"cohere", "http://127.0.0.1:9", "command-r-08-2024", {}},
      {"bedrock", "http://127.0.0.1:9", "global.anthropic.claude-haiku-4-5-20251001-v1:0",
       {{"region", "us-east-1"}, {"access_key_id", "AKIDEXAMPLE"},
        {"secret_access_key", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}, {"amz_date", "20260101T000000Z"}}},
      // OpenAI-compatible providers at their own paths.
      {"openai", "http://127.0.0.1:9/openai/v1", "llama-3.1-8b-instant", {}},
      {"openai", "http://127.0.0.1:9/inference/v1", "accounts/fireworks/models/llama-v3p1-8b-instruct", {}},
  };
  return f;
}

ProviderEndpoint endpoint(const FamilyCase& fc) {
  return ProviderEndpoint{"p", fc.family, fc.base_url, "test-key", fc.options};
}

std::string target_of(const std::string& url) {
  auto scheme = url.find("://");
  auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return slash == std::string::npos ? "/" : url.substr(slash);
}

Tool weather_tool() {
  Tool t;
  t.name = "get_weather";
  t.description = "Weather in a city";
  t.parameters = Json{{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}};
  return t;
}

ChatRequest sample_request(bool stream, bool tools) {
  ChatRequest r;
  r.model = "whatever";
  r.messages.push_back(Message::system("You are terse."));
  r.messages.push_back(Message::user("What is the weather in Oslo?"));
  r.max_tokens = 64;
  r.stream = stream;
  r.include_usage = stream;
  if (tools) {
    r.tools.push_back(weather_tool());
    Tool t2 = weather_tool();
    t2.name = "get_time";
    r.tools.push_back(t2);
  }
  return r;
}

// Encodes with the family's client codec and parses it back with the mock.
MockRequest round_trip_request(const FamilyCase& fc, const ChatRequest& req) {
  const Codec* codec = find_codec(fc.family);
  REQUIRE(codec != nullptr);
  auto spec = codec->encode_request(req, endpoint(fc), fc.upstream);
  REQUIRE_MESSAGE(spec.has_value(), (spec ? "" : spec.error().describe()));
  auto parsed = mock::parse_request(spec->method, target_of(spec->url), spec->headers, spec->body);
  REQUIRE_MESSAGE(parsed.has_value(), (parsed ? "" : parsed.error().describe()), " target ", target_of(spec->url));
  return *parsed;
}

std::string all_bytes(const std::vector<std::string>& frames) {
  std::string s;
  for (const auto& f : frames) s += f;
  return s;
}

// Decodes `bytes` split at `split` into two feeds, then closes; folds the chunks.
Result<ChatResponse> decode_stream(const Codec& codec, const std::string& bytes, std::size_t split) {
  auto dec = codec.stream_decoder();
  std::vector<ChatChunk> chunks;
  ChunkAccumulator acc;
  for (std::string_view part : {std::string_view(bytes).substr(0, split), std::string_view(bytes).substr(split)}) {
    chunks.clear();
    if (auto r = dec->feed(part, chunks); !r) return fail(r.error());
    for (auto& c : chunks) acc.add(c);
  }
  chunks.clear();
  if (auto r = dec->finish(chunks); !r) return fail(r.error());
  for (auto& c : chunks) acc.add(c);
  if (!dec->done()) return fail(ErrorKind::stream_interrupted, "decoder never saw the end of the stream");
  return acc.finish();
}

void check_same_answer(const ChatResponse& got, const ChatResponse& want, bool call_ids_on_wire) {
  REQUIRE(got.choices.size() == want.choices.size());
  const auto& g = got.choices[0];
  const auto& w = want.choices[0];
  CHECK(g.message.text() == w.message.text());
  CHECK(g.finish_reason == w.finish_reason);
  REQUIRE(g.message.tool_calls.size() == w.message.tool_calls.size());
  for (std::size_t i = 0; i < w.message.tool_calls.size(); ++i) {
    CHECK(g.message.tool_calls[i].name == w.message.tool_calls[i].name);
    auto ga = parse_json(g.message.tool_calls[i].arguments);
    REQUIRE(ga.has_value());
    CHECK(*ga == *parse_json(w.message.tool_calls[i].arguments));
    CHECK_FALSE(g.message.tool_calls[i].id.empty());
    if (call_ids_on_wire) CHECK(g.message.tool_calls[i].id == w.message.tool_calls[i].id);
  }
  CHECK(got.usage.prompt_tokens == want.usage.prompt_tokens);
  CHECK(got.usage.completion_tokens == want.usage.completion_tokens);
}

// The canned answer, with real tool arguments and a second, parallel call when it calls tools,
// so that argument fragments and call indexes are exercised too.
ChatResponse rich_answer(const MockRequest& m) {
  ChatResponse r = mock::canned_response(m, "The weather in Oslo is mild, 12 degrees. Øl og smørbrød 🍺");
  auto& calls = r.choices[0].message.tool_calls;
  if (!calls.empty()) {
    calls[0].arguments = R"({"city":"Oslo","days":[1,2,3],"units":{"temp":"C"},"note":"\u00f8 \"quoted\""})";
    calls.push_back(ToolCall{"call_mock0002", "get_time", R"({"city":"Bergen"})"});
  }
  return r;
}

}  // namespace

TEST_CASE("mock native: parse_request reads what every family's client codec sends") {
  for (const auto& fc : families()) {
    for (bool stream : {false, true}) {
      for (bool tools : {false, true}) {
        const std::string fam_name = fc.family;
        CAPTURE(fam_name);
        CAPTURE(fc.base_url);
        CAPTURE(stream);
        CAPTURE(tools);
        MockRequest m = round_trip_request(fc, sample_request(stream, tools));
        const std::string want_family = std::string(fc.family);
        CHECK(m.family == want_family);
        CHECK(m.model == fc.upstream);
        CHECK(m.stream == stream);
        CHECK(m.request.stream == stream);
        REQUIRE_FALSE(m.request.messages.empty());
        CHECK(m.request.messages.back().role == "user");
        CHECK(m.request.messages.back().text() == "What is the weather in Oslo?");
        bool saw_system = false;
        for (const auto& msg : m.request.messages)
          if (msg.text() == "You are terse.") saw_system = true;
        // Families with a separate system field (Anthropic, Gemini, Bedrock) still carry it.
        CHECK(saw_system);
        if (tools) {
          REQUIRE(m.request.tools.size() == 2);
          CHECK(m.request.tools[0].name == "get_weather");
          CHECK(m.request.tools[1].name == "get_time");
        } else {
          CHECK(m.request.tools.empty());
        }
      }
    }
  }
}

TEST_CASE("mock native: unknown paths are not_found and bad bodies bad_request, per family") {
  Headers h;
  const std::string ok_body = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
  SUBCASE("unknown path or method") {
    auto r = mock::parse_request("POST", "/v1/nothing-here", h, ok_body);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == ErrorKind::not_found);
    auto g = mock::parse_request("GET", "/v1/chat/completions", h, ok_body);
    REQUIRE_FALSE(g.has_value());
    CHECK(g.error().kind == ErrorKind::not_found);
    auto gem = mock::parse_request("POST", "/v1beta/models/gemini-2.5-flash:countTokens", h, "{}");
    REQUIRE_FALSE(gem.has_value());
    CHECK(gem.error().kind == ErrorKind::not_found);
    auto bed = mock::parse_request("POST", "/model/amazon.nova-lite-v1%3A0/invoke", h, "{}");
    REQUIRE_FALSE(bed.has_value());
    CHECK(bed.error().kind == ErrorKind::not_found);
  }
  SUBCASE("azure needs api-version") {
    auto r = mock::parse_request("POST", "/openai/deployments/gpt-4o/chat/completions", h, ok_body);
    REQUIRE_FALSE(r.has_value());
    auto ok = mock::parse_request("POST", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", h, ok_body);
    REQUIRE(ok.has_value());
    CHECK(ok->family == "azure");
    CHECK(ok->model == "gpt-4o");
  }
  SUBCASE("gemini streams only with alt=sse") {
    const std::string body = R"({"contents":[{"role":"user","parts":[{"text":"hi"}]}]})";
    auto r = mock::parse_request("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", h, body);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == ErrorKind::bad_request);
    auto ok = mock::parse_request("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", h, body);
    REQUIRE(ok.has_value());
    CHECK(ok->stream);
    CHECK(ok->model == "gemini-2.5-flash");
  }
  SUBCASE("bodies that are not JSON objects") {
    for (const char* path : {"/v1/chat/completions", "/v1/messages", "/v2/chat",
                             "/v1beta/models/gemini-2.5-flash:generateContent", "/model/amazon.nova-lite-v1%3A0/converse"}) {
      CAPTURE(path);
      for (const char* body : {"{not json", "[1,2]", "\"str\""}) {
        CAPTURE(body);
        auto r = mock::parse_request("POST", path, h, body);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().kind == ErrorKind::bad_request);
      }
    }
  }
  SUBCASE("bedrock model ids are percent-decoded") {
    auto r = mock::parse_request("POST", "/model/amazon.nova-lite-v1%3A0/converse-stream", h,
                                 R"({"messages":[{"role":"user","content":[{"text":"hi"}]}]})");
    REQUIRE(r.has_value());
    CHECK(r->family == "bedrock");
    CHECK(r->model == "amazon.nova-lite-v1:0");
    CHECK(r->stream);
  }
}

TEST_CASE("mock native: refused requests are answered in the family's own error shape") {
  Headers h;
  // Current Claude models refuse temperature with top_p.
  auto both = mock::parse_request("POST", "/v1/messages", h,
                                  R"({"model":"claude-haiku-4-5","max_tokens":8,"temperature":0.5,"top_p":0.9,)"
                                  R"("messages":[{"role":"user","content":"hi"}]})");
  REQUIRE_FALSE(both.has_value());
  CHECK(both.error().kind == ErrorKind::bad_request);
  CHECK(both.error().path == "top_p");
  CHECK(mock::family_of_target("/v1/messages") == "anthropic");
  CHECK(mock::family_of_target("/v2/chat") == "cohere");
  CHECK(mock::family_of_target("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse") == "gemini");
  CHECK(mock::family_of_target("/model/amazon.nova-lite-v1%3A0/converse") == "bedrock");
  CHECK(mock::family_of_target("/openai/deployments/gpt-4o/chat/completions?api-version=1") == "azure");
  CHECK(mock::family_of_target("/v1/chat/completions") == "openai");
  auto r = mock::render_error(mock::family_of_target("/v1/messages"), 400, both.error().message, std::nullopt);
  auto body = parse_json(r.body);
  REQUIRE(body.has_value());
  CHECK((*body)["type"] == "error");
  CHECK((*body)["error"]["type"] == "invalid_request_error");
}

TEST_CASE("mock native: canned_response calls the first tool unless tools are off") {
  MockRequest m;
  m.family = "openai";
  m.model = "gpt-4o-mini";
  m.request = sample_request(false, false);
  SUBCASE("no tools: the text, finish stop, usage from the prompt size") {
    ChatResponse r = mock::canned_response(m, "Hi there, friend.");
    REQUIRE(r.choices.size() == 1);
    CHECK(r.choices[0].message.text() == "Hi there, friend.");
    CHECK(r.choices[0].finish_reason == "stop");
    std::size_t chars = 0;
    for (const auto& msg : m.request.messages) chars += msg.text().size() + 4;
    CHECK(r.usage.prompt_tokens == static_cast<std::int64_t>(chars / 4));
    CHECK(r.usage.completion_tokens == static_cast<std::int64_t>(std::string("Hi there, friend.").size() / 4));
  }
  SUBCASE("tools: a call to the first tool") {
    m.request = sample_request(false, true);
    ChatResponse r = mock::canned_response(m, "ignored");
    REQUIRE(r.choices[0].message.tool_calls.size() == 1);
    CHECK(r.choices[0].message.tool_calls[0].name == "get_weather");
    CHECK(r.choices[0].finish_reason == "tool_calls");
    CHECK(r.choices[0].message.text().empty());
  }
  SUBCASE("tool_choice none: text") {
    m.request = sample_request(false, true);
    m.request.tool_choice = "none";
    ChatResponse r = mock::canned_response(m, "plain");
    CHECK(r.choices[0].message.tool_calls.empty());
    CHECK(r.choices[0].message.text() == "plain");
  }
  SUBCASE("tool_choice naming a function: that one") {
    m.request = sample_request(false, true);
    m.request.tool_choice = Json{{"type", "function"}, {"function", {{"name", "get_time"}}}};
    ChatResponse r = mock::canned_response(m, "x");
    REQUIRE(r.choices[0].message.tool_calls.size() == 1);
    CHECK(r.choices[0].message.tool_calls[0].name == "get_time");
  }
}

TEST_CASE("mock native: render_response decodes to the same answer with each family's codec") {
  for (const auto& fc : families()) {
    for (bool tools : {false, true}) {
      const std::string fam_name = fc.family;
      CAPTURE(fam_name);
      CAPTURE(tools);
      MockRequest m = round_trip_request(fc, sample_request(false, tools));
      ChatResponse want = rich_answer(m);
      auto rendered = mock::render_response(m.family, want);
      CHECK(rendered.status == 200);
      CHECK(rendered.content_type == "application/json");
      auto got = find_codec(fc.family)->decode_response(rendered.body);
      REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().describe()));
      check_same_answer(*got, want, std::string_view(fc.family) != "gemini");
    }
  }
}

TEST_CASE("mock native: render_stream decodes to the same answer at every byte split") {
  for (const auto& fc : families()) {
    for (bool tools : {false, true}) {
      for (int pieces : {1, 4}) {
        const std::string fam_name = fc.family;
        CAPTURE(fam_name);
        CAPTURE(tools);
        CAPTURE(pieces);
        MockRequest m = round_trip_request(fc, sample_request(true, tools));
        ChatResponse want = rich_answer(m);
        auto frames = mock::render_stream(m.family, want, pieces, /*include_usage=*/true);
        REQUIRE_FALSE(frames.empty());
        CHECK(mock::stream_content_type(m.family) ==
              (m.family == "bedrock" ? "application/vnd.amazon.eventstream" : "text/event-stream"));
        const std::string bytes = all_bytes(frames);
        const Codec& codec = *find_codec(fc.family);
        for (std::size_t split = 0; split <= bytes.size(); ++split) {
          auto got = decode_stream(codec, bytes, split);
          REQUIRE_MESSAGE(got.has_value(), "split ", split, ": ", (got ? "" : got.error().describe()));
          if (split == 0 || split == bytes.size() / 2 || split == bytes.size())
            check_same_answer(*got, want, std::string_view(fc.family) != "gemini");
          else
            REQUIRE(got->choices.at(0).message.text() == want.choices[0].message.text());
        }
      }
    }
  }
}

TEST_CASE("mock native: Mistral models get Mistral's dialect - unknown fields refused, usage on the finish chunk") {
  ChatRequest req = sample_request(/*stream=*/true, /*tools=*/false);
  const Codec& openai = *find_codec("openai");
  auto encode = [&](const char* provider_name, const char* model) {
    ProviderEndpoint ep{provider_name, "openai", "http://127.0.0.1:9/v1", "test-key", {}};
    auto spec = openai.encode_request(req, ep, model);
    REQUIRE(spec.has_value());
    auto parsed = mock::parse_request(spec->method, target_of(spec->url), spec->headers, spec->body);
    REQUIRE(parsed.has_value());
    return *parsed;
  };
  // Our codec, configured for Mistral, sends nothing Mistral refuses.
  MockRequest ok = encode("mistral", "mistral-small-latest");
  CHECK(ok.family == "mistral");
  CHECK_FALSE(ok.refusal.has_value());
  // A generic OpenAI-compatible endpoint asks for stream_options: Mistral's 422 extra_forbidden.
  MockRequest refused = encode("p", "mistral-small-latest");
  REQUIRE(refused.refusal.has_value());
  CHECK(refused.refusal->status == 422);
  auto body = parse_json(refused.refusal->body);
  REQUIRE(body.has_value());
  CHECK((*body)["message"]["detail"][0]["loc"] == Json::array({"body", "stream_options"}));
  CHECK(openai.decode_error(422, {}, refused.refusal->body).message.find("stream_options") != std::string::npos);
  // OpenAI's own models on the same path are OpenAI.
  MockRequest gpt = encode("p", "gpt-4o-mini");
  CHECK(gpt.family == "openai");
  CHECK_FALSE(gpt.refusal.has_value());
  // Mistral streams report usage unasked, on the chunk that carries the finish reason.
  ChatResponse want = mock::canned_response(ok, "Bonjour.");
  auto frames = mock::render_stream("mistral", want, 3, /*include_usage=*/false);
  REQUIRE(frames.size() >= 3);
  CHECK(frames.back() == kSseDone);
  auto last = parse_json(frames[frames.size() - 2].substr(6));
  REQUIRE(last.has_value());
  CHECK((*last)["choices"][0]["finish_reason"] == "stop");
  CHECK((*last)["usage"]["prompt_tokens"] == want.usage.prompt_tokens);
  auto got = decode_stream(openai, all_bytes(frames), 0);
  REQUIRE(got.has_value());
  check_same_answer(*got, want, true);
}

TEST_CASE("mock native: a stream cut short is an error for every family's decoder") {
  for (const auto& fc : families()) {
    const std::string fam_name = fc.family;
    CAPTURE(fam_name);
    MockRequest m = round_trip_request(fc, sample_request(true, false));
    ChatResponse want = mock::canned_response(m, "The weather in Oslo is mild, 12 degrees.");
    auto frames = mock::render_stream(m.family, want, 4, true);
    REQUIRE(frames.size() >= 3);
    // Everything but the last two frames: the end of the stream is missing.
    std::vector<std::string> head(frames.begin(), frames.end() - 2);
    auto got = decode_stream(*find_codec(fc.family), all_bytes(head), 0);
    CHECK_FALSE(got.has_value());
  }
}

TEST_CASE("mock native: a 401 asked of Bedrock is what AWS sends, 403 UnrecognizedClientException") {
  auto r = mock::render_error("bedrock", 401, "The security token included in the request is invalid.", std::nullopt);
  CHECK(r.status == 403);
  REQUIRE(find_header(r.headers, "x-amzn-ErrorType") != nullptr);
  CHECK(*find_header(r.headers, "x-amzn-ErrorType") == "UnrecognizedClientException");
  Error e = find_codec("bedrock")->decode_error(r.status, r.headers, r.body);
  CHECK(e.kind == ErrorKind::auth);
}

TEST_CASE("mock native: render_error is classified by each family's codec, with retry-after") {
  struct Want {
    int status;
    ErrorKind kind;
  };
  const Want cases[] = {{429, ErrorKind::rate_limited}, {500, ErrorKind::server_error}, {502, ErrorKind::server_error},
                        {400, ErrorKind::bad_request},  {401, ErrorKind::auth},         {404, ErrorKind::not_found}};
  for (const auto& fc : families()) {
    const Codec& codec = *find_codec(fc.family);
    for (Want w : cases) {
      const std::string fam_name = fc.family;
      CAPTURE(fam_name);
      // Bedrock has no 401: bad credentials are a 403 (AccessDenied / UnrecognizedClient).
      if (fam_name == "bedrock" && w.status == 401) w.status = 403;
      CAPTURE(w.status);
      auto r = mock::render_error(fc.family, w.status, "injected", Millis{1500});
      CHECK(r.status == w.status);
      REQUIRE(find_header(r.headers, "retry-after-ms") != nullptr);
      CHECK(*find_header(r.headers, "retry-after-ms") == "1500");
      CHECK(*find_header(r.headers, "retry-after") == "2");  // seconds, rounded up
      Error e = codec.decode_error(r.status, r.headers, r.body);
      CHECK(e.kind == w.kind);
      CHECK(e.status == w.status);
      if (w.status == 429) {
        REQUIRE(e.retry_after.has_value());
        CHECK(e.retry_after->count() == 1500);
      }
    }
    // 503 and 529 are "overloaded" for the families that say so, at least a retryable 5xx for all.
    for (int status : {503, 529}) {
      const std::string fam_name = fc.family;
      CAPTURE(fam_name);
      CAPTURE(status);
      auto r = mock::render_error(fc.family, status, "busy", std::nullopt);
      CHECK(find_header(r.headers, "retry-after") == nullptr);
      Error e = codec.decode_error(r.status, r.headers, r.body);
      CHECK((e.kind == ErrorKind::overloaded || e.kind == ErrorKind::server_error));
      CHECK(e.status == status);
    }
  }
  // Anthropic's own overloaded_error on 529.
  auto r = mock::render_error("anthropic", 529, "Overloaded", std::nullopt);
  CHECK(find_codec("anthropic")->decode_error(529, r.headers, r.body).kind == ErrorKind::overloaded);
}

TEST_CASE("mock behavior: every knob parses, and faults name their JSON path") {
  mock::Behavior base;
  SUBCASE("all knobs") {
    Json j = {{"latency_ms", 5},         {"latency_jitter_ms", 2.5}, {"ttft_ms", 7},
              {"chunk_interval_ms", 3},  {"chunks", 9},              {"error_status", 529},
              {"error_rate", 0.25},      {"retry_after_ms", 1200},   {"hang_rate", 0.1},
              {"disconnect_after_chunks", 2}, {"malformed_rate", 0.5}, {"rate_limit_requests", 3},
              {"rate_limit_window_ms", 250}, {"text", "custom"}};
    auto b = mock::behavior_from_json(j, base, "$.models.m");
    REQUIRE(b.has_value());
    CHECK(b->latency_ms == 5);
    CHECK(b->latency_jitter_ms == 2.5);
    CHECK(b->ttft_ms == 7);
    CHECK(b->chunk_interval_ms == 3);
    CHECK(b->chunks == 9);
    CHECK(b->error_status == 529);
    CHECK(b->error_rate == 0.25);
    CHECK(b->retry_after_ms == 1200);
    CHECK(b->hang_rate == 0.1);
    CHECK(b->disconnect_after_chunks == 2);
    CHECK(b->malformed_rate == 0.5);
    CHECK(b->rate_limit_requests == 3);
    CHECK(b->rate_limit_window_ms == 250);
    CHECK(b->text == "custom");
    // to_json is the inverse.
    auto again = mock::behavior_from_json(mock::to_json(*b), base, "$");
    REQUIRE(again.has_value());
    CHECK(mock::to_json(*again) == mock::to_json(*b));
  }
  SUBCASE("unset knobs keep the base") {
    base.latency_ms = 42;
    auto b = mock::behavior_from_json(Json{{"error_status", 429}}, base, "$.models.m");
    REQUIRE(b.has_value());
    CHECK(b->latency_ms == 42);
    CHECK(b->error_status == 429);
  }
  SUBCASE("bad values are rejected with the path") {
    struct Bad {
      Json j;
      const char* path;
    };
    const Bad bad[] = {{Json{{"error_rate", 1.5}}, "$.models.m.error_rate"},
                       {Json{{"chunks", 0}}, "$.models.m.chunks"},
                       {Json{{"chunks", 2.5}}, "$.models.m.chunks"},
                       {Json{{"latency_ms", -1}}, "$.models.m.latency_ms"},
                       {Json{{"hang_rate", "often"}}, "$.models.m.hang_rate"},
                       {Json{{"text", 5}}, "$.models.m.text"},
                       {Json{{"error_status", 600}}, "$.models.m.error_status"},
                       {Json{{"latency", 5}}, "$.models.m.latency"}};
    for (const auto& b : bad) {
      CAPTURE(b.j.dump());
      auto r = mock::behavior_from_json(b.j, base, "$.models.m");
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().kind == ErrorKind::invalid_config);
      CHECK(r.error().path == b.path);
    }
    CHECK_FALSE(mock::behavior_from_json(Json::array(), base, "$").has_value());
  }
}

namespace {
/// GET /_mock/config over a real socket: the live config as the mock reports it.
Json mock_config(int port) {
  namespace http = boost::beast::http;
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  sock.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
  http::request<http::string_body> req{http::verb::get, "/_mock/config", 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(sock, req);
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(sock, buf, res);
  REQUIRE(res.result_int() == 200);
  return Json::parse(res.body());
}
}  // namespace

TEST_CASE("MockProvider: configure merges models over the defaults, null removes, bad docs change nothing") {
  auto m = mock::MockProvider::start(mock::MockOptions{});
  REQUIRE(m.has_value());
  auto& mp = **m;
  CHECK(mp.port() > 0);
  CHECK(mp.base_url() == "http://127.0.0.1:" + std::to_string(mp.port()));
  REQUIRE(mp.configure(Json{{"default", {{"latency_ms", 10}}}, {"models", {{"a", {{"error_status", 503}}}}}}).has_value());
  Json c = mock_config(mp.port());
  CHECK(c["default"]["latency_ms"] == 10);
  CHECK(c["models"]["a"]["error_status"] == 503);
  CHECK(c["models"]["a"]["latency_ms"] == 10);  // inherits the defaults in force
  // A second document merges: "a" stays, "b" is added on the same defaults.
  REQUIRE(mp.configure(Json{{"models", {{"b", {{"chunks", 2}}}}}}).has_value());
  c = mock_config(mp.port());
  CHECK(c["models"].size() == 2);
  CHECK(c["models"]["a"]["error_status"] == 503);
  CHECK(c["models"]["b"]["chunks"] == 2);
  CHECK(c["models"]["b"]["latency_ms"] == 10);
  CHECK(c["models"]["b"]["error_status"] == 0);
  // A bad document is refused whole: "c", valid on its own, is not added; defaults unchanged.
  const Json before = c;
  auto bad = mp.configure(Json{{"default", {{"latency_ms", 99}}}, {"models", {{"c", {{"chunks", 3}}}, {"d", {{"chunks", -5}}}}}});
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().path == "$.models.d.chunks");
  CHECK_FALSE(mp.configure(Json::array()).has_value());
  CHECK_FALSE(mp.configure(Json{{"models", 5}}).has_value());
  CHECK(mock_config(mp.port()) == before);
  // null removes one model and leaves the others.
  REQUIRE(mp.configure(Json{{"models", {{"a", nullptr}}}}).has_value());
  c = mock_config(mp.port());
  CHECK_FALSE(c["models"].contains("a"));
  CHECK(c["models"].contains("b"));
  Json st = mp.stats();
  CHECK(st["total"] == 0);
  mp.stop();
}
