#include <doctest/doctest.h>

#include "modelux/wire.hpp"
#include "wire/openai_relay.hpp"

using namespace modelux;

namespace {
std::string sample_request() {
  return R"({"model":"gpt-4o","messages":[
    {"role":"system","content":"You are terse."},
    {"role":"user","content":[{"type":"text","text":"What is in this image?"},
                              {"type":"image_url","image_url":{"url":"data:image/png;base64,AAA","detail":"low"}}]},
    {"role":"assistant","content":null,"tool_calls":[{"id":"call_a1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
    {"role":"tool","tool_call_id":"call_a1","content":"{\"temp_c\":18}"}],
    "temperature":0.2,"max_completion_tokens":100,"stop":["\n\n"],"stream":true,"stream_options":{"include_usage":true},
    "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object"}}}],
    "tool_choice":"auto","response_format":{"type":"json_object"},"user":"u-1","logit_bias":{"50256":-100}})";
}
}  // namespace

TEST_CASE("parse_chat_request: a full request round-trips through the unified types") {
  auto r = parse_chat_request(sample_request());
  REQUIRE(r);
  CHECK(r->model == "gpt-4o");
  REQUIRE(r->messages.size() == 4);
  CHECK(r->messages[1].content.size() == 2);
  CHECK(r->messages[1].content[1].type == ContentPart::Type::image_url);
  CHECK(r->messages[1].content[1].detail == "low");
  CHECK(r->messages[2].tool_calls.at(0).arguments == R"({"city":"Paris"})");
  CHECK(r->messages[3].tool_call_id == "call_a1");
  CHECK(*r->max_tokens == 100);
  CHECK(r->max_tokens_is_completion);
  CHECK(r->stream);
  CHECK(r->include_usage);
  CHECK(r->tools.at(0).name == "get_weather");
  CHECK(r->extra.contains("logit_bias"));  // unknown fields pass through
  Json back = to_json(*r);
  auto again = chat_request_from_json(back);
  REQUIRE(again);
  CHECK(to_json(*again) == back);
  CHECK(back["max_completion_tokens"] == 100);
  CHECK(back["logit_bias"]["50256"] == -100);
}

TEST_CASE("parse_chat_request: malformed input gets an error naming the JSON path") {
  struct Case { const char* body; const char* path; };
  Case cases[] = {
      {R"({"messages":[{"role":"user","content":"x"}]})", "$.model"},
      {R"({"model":"m"})", "$.messages"},
      {R"({"model":"m","messages":[]})", "$.messages"},
      {R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", "$.messages[0].role"},
      {R"({"model":"m","messages":[{"role":"user","content":5}]})", "$.messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"})", "$.temperature"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1})", "$.max_tokens"},
      {R"({"model":"m","messages":[{"role":"tool","content":"x"}]})", "$.messages[0].tool_call_id"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"video"}]}]})", "$.messages[0].content[0].type"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.body);
    auto r = parse_chat_request(c.body);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::bad_request);
    CHECK(r.error().path == c.path);
  }
  CHECK_FALSE(parse_chat_request("{not json"));
  CHECK_FALSE(parse_chat_request("[1,2]"));
  CHECK_FALSE(parse_chat_request(""));
  std::string deep(10000, '[');
  auto d = parse_chat_request(deep);
  REQUIRE_FALSE(d);
  CHECK(d.error().message.find("nesting") != std::string::npos);
  auto big = parse_chat_request(std::string(100, ' '), ParseLimits{.max_bytes = 10, .max_depth = 64});
  REQUIRE_FALSE(big);
  CHECK(big.error().message.find("exceeds") != std::string::npos);
}

TEST_CASE("SseParser: every split of the input yields the same events") {
  std::string stream =
      ": keep-alive\n\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\r\n\r\nevent: error\ndata: {\"e\":true}\r\rdata: [DONE]\n\n";
  std::vector<SseEvent> whole;
  SseParser p0;
  REQUIRE(p0.feed(stream, whole));
  REQUIRE(whole.size() == 4);
  CHECK(whole[0].data == R"({"a":1})");
  CHECK(whole[1].data == "line1\nline2");
  CHECK(whole[2].event == "error");
  CHECK(whole[3].data == "[DONE]");
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    SseParser p;
    std::vector<SseEvent> ev;
    REQUIRE(p.feed(stream.substr(0, split), ev));
    REQUIRE(p.feed(stream.substr(split), ev));
    REQUIRE(ev.size() == whole.size());
    for (std::size_t i = 0; i < ev.size(); ++i) {
      CHECK(ev[i].data == whole[i].data);
      CHECK(ev[i].event == whole[i].event);
    }
  }
  for (std::size_t split = 0; split <= stream.size(); ++split) {  // feed_each: the same, out of reused buffers
    SseParser p;
    std::vector<SseEvent> ev;
    auto keep = [&](SseEvent& e) -> Result<void> {
      ev.push_back(e);
      return {};
    };
    REQUIRE(p.feed_each(stream.substr(0, split), keep));
    REQUIRE(p.feed_each(stream.substr(split), keep));
    REQUIRE(ev.size() == whole.size());
    for (std::size_t i = 0; i < ev.size(); ++i) {
      CHECK(ev[i].data == whole[i].data);
      CHECK(ev[i].event == whole[i].event);
    }
  }
  {  // an error from the callback stops the feed and is returned
    SseParser p;
    int seen = 0;
    auto r = p.feed_each(stream, [&](SseEvent&) -> Result<void> {
      ++seen;
      return fail(ErrorKind::malformed_response, "stop");
    });
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "stop");
    CHECK(seen == 1);
  }
  {  // one byte per feed: lines are gathered across feeds, a \r ending one feed and its \n the next
    SseParser p;
    std::vector<SseEvent> ev;
    for (char ch : stream) REQUIRE(p.feed(std::string_view(&ch, 1), ev));
    REQUIRE(ev.size() == whole.size());
    for (std::size_t i = 0; i < ev.size(); ++i) CHECK(ev[i].data == whole[i].data);
  }
  SseParser small(16);
  std::vector<SseEvent> ev;
  CHECK_FALSE(small.feed("data: " + std::string(100, 'x'), ev));
  SseParser pieces(16);  // a line over the bound is refused also when it comes in small pieces
  bool ok = true;
  for (int i = 0; i < 10 && ok; ++i) ok = pieces.feed("xxxx", ev).has_value();
  CHECK_FALSE(ok);
}

TEST_CASE("OpenAI codec: encodes URL, auth and upstream model, decodes responses and streams") {
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  auto req = parse_chat_request(R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true})");
  REQUIRE(req);
  ProviderEndpoint ep{"openai", "openai", "https://api.openai.com/v1/", "sk-test", {}};
  auto spec = c->encode_request(*req, ep, "gpt-4o-mini-2024-07-18");
  REQUIRE(spec);
  CHECK(spec->url == "https://api.openai.com/v1/chat/completions");
  CHECK(*find_header(spec->headers, "Authorization") == "Bearer sk-test");
  auto body = Json::parse(spec->body);
  CHECK(body["model"] == "gpt-4o-mini-2024-07-18");
  CHECK(body["stream_options"]["include_usage"] == true);

  auto resp = c->decode_response(R"({"id":"x","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,
     "message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},
     "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1200,"completion_tokens":20,"total_tokens":1220,
     "prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":5}}})");
  REQUIRE(resp);
  CHECK(resp->choices.at(0).finish_reason == "tool_calls");
  CHECK(resp->choices[0].message.tool_calls.at(0).name == "f");
  CHECK(resp->usage.cached_tokens == 1024);
  CHECK(resp->usage.reasoning_tokens == 5);

  CHECK_FALSE(c->decode_response("{\"choices\": [ {\"message\": "));
  CHECK_FALSE(c->decode_response(R"({"id":"x"})"));
  CHECK(c->decode_response("").error().kind == ErrorKind::malformed_response);

  std::string sse =
      "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
      "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
      "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n"
      "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
      "data: [DONE]\n\n";
  for (std::size_t split = 0; split <= sse.size(); split += 7) {
    auto d = c->stream_decoder();
    std::vector<ChatChunk> out;
    REQUIRE(d->feed(sse.substr(0, split), out));
    REQUIRE(d->feed(sse.substr(split), out));
    REQUIRE(d->finish(out));
    CHECK(d->done());
    ChunkAccumulator acc;
    for (auto& ch : out) acc.add(ch);
    auto r = acc.finish();
    CHECK(r.text() == "Hello");
    CHECK(r.usage.total() == 11);
    CHECK(acc.saw_finish());
  }
  // Cut before [DONE]: the decoder must not report a clean end.
  auto d = c->stream_decoder();
  std::vector<ChatChunk> out;
  REQUIRE(d->feed(sse.substr(0, sse.find("data: [DONE]")), out));
  auto fin = d->finish(out);
  REQUIRE_FALSE(fin);
  CHECK(fin.error().kind == ErrorKind::stream_interrupted);
  // A mid-stream error object is an error, not content.
  auto d2 = c->stream_decoder();
  auto e = d2->feed("data: {\"error\":{\"message\":\"overloaded\"}}\n\n", out);
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("overloaded") != std::string::npos);
}

TEST_CASE("OpenAI codec: errors map to kinds with retry-after from any header") {
  const Codec* c = find_codec("openai");
  auto e = c->decode_error(429, {{"retry-after-ms", "1500"}},
                           R"({"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}})");
  CHECK(e.kind == ErrorKind::rate_limited);
  CHECK(e.retry_after == Millis{1500});
  CHECK(e.message == "Rate limit reached");
  auto q = c->decode_error(429, {}, R"({"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}})");
  CHECK(q.kind == ErrorKind::quota_exceeded);
  auto ctx = c->decode_error(400, {}, R"({"error":{"message":"too long","code":"context_length_exceeded"}})");
  CHECK(ctx.kind == ErrorKind::context_length);
  auto reset = c->decode_error(429, {{"x-ratelimit-reset-requests", "2m59.56s"}}, "");
  CHECK(reset.retry_after == Millis{179560});
  auto s = c->decode_error(503, {{"Retry-After", "3"}}, "<html>busy</html>");
  CHECK(s.kind == ErrorKind::overloaded);
  CHECK(s.retry_after == Millis{3000});
  CHECK(c->decode_error(500, {}, "").kind == ErrorKind::server_error);
  CHECK(c->decode_error(401, {}, "").kind == ErrorKind::auth);
}

TEST_CASE("parse_duration: Go-style durations and plain seconds") {
  CHECK(parse_duration("1s") == Millis{1000});
  CHECK(parse_duration("6m0s") == Millis{360000});
  CHECK(parse_duration("12ms") == Millis{12});
  CHECK(parse_duration("0.5") == Millis{500});
  CHECK_FALSE(parse_duration(""));
  CHECK_FALSE(parse_duration("soon"));
  CHECK_FALSE(parse_duration("5 parsecs"));
}

TEST_CASE("encode_sse_chunk and openai_error_json have OpenAI's shapes") {
  ChatChunk c;
  c.id = "chatcmpl-1";
  c.model = "m";
  c.choices.push_back(ChunkChoice{.index = 0, .role = "", .content = std::string("hi"), .tool_calls = {}, .finish_reason = ""});
  std::string s = encode_sse_chunk(c);
  CHECK(s.starts_with("data: {"));
  CHECK(s.ends_with("}\n\n"));
  auto j = Json::parse(s.substr(6));
  CHECK(j["object"] == "chat.completion.chunk");
  CHECK(j["choices"][0]["delta"]["content"] == "hi");
  CHECK(j["usage"].is_null());
  Error e;
  e.kind = ErrorKind::not_found;
  e.message = "no such model";
  auto ej = openai_error_json(e);
  CHECK(ej["error"]["message"] == "no such model");
  CHECK(ej["error"]["type"] == "not_found_error");
  CHECK(ej["error"]["code"] == "not_found");
  CHECK_FALSE(ej["error"].contains("provider"));
  e.code = "model_not_found";  // modelux's own code is kept
  CHECK(openai_error_json(e)["error"]["code"] == "model_not_found");
}

TEST_CASE("openai_error_json: provider errors get one code per kind, the native code rides along") {
  Error g;
  g.kind = ErrorKind::rate_limited;
  g.status = 429;
  g.provider = "google";
  g.code = "RESOURCE_EXHAUSTED";
  auto j = openai_error_json(g)["error"];
  CHECK(j["code"] == "rate_limit_exceeded");
  CHECK(j["type"] == "rate_limit_error");
  CHECK(j["provider"] == "google");
  CHECK(j["provider_code"] == "RESOURCE_EXHAUSTED");
  Error a;
  a.kind = ErrorKind::overloaded;
  a.provider = "anthropic";
  a.code = "overloaded_error";
  CHECK(openai_error_json(a)["error"]["code"] == "overloaded");
  CHECK(openai_error_json(a)["error"]["provider_code"] == "overloaded_error");
  Error k;
  k.kind = ErrorKind::auth;
  k.provider = "openai";
  k.code = "invalid_api_key";  // the provider refused modelux's key: not the caller's fault
  CHECK(openai_error_json(k)["error"]["code"] == "provider_auth_failed");
  Error q;
  q.kind = ErrorKind::quota_exceeded;
  q.provider = "openai";
  CHECK(openai_error_json(q)["error"]["code"] == "insufficient_quota");
  CHECK_FALSE(openai_error_json(q)["error"].contains("provider_code"));
}

TEST_CASE("Odd JSON types from a provider or a caller never throw: lenient where harmless, else a clear error") {
  // Found by fuzz_stream: a chunk whose "model" is not a string threw out of the decoder.
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  auto d = c->stream_decoder();
  std::vector<ChatChunk> out;
  std::string sse =
      "data: {\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":5,"
      "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n"
      "event: error\ndata: [1,2]\n\n";
  std::optional<Result<void>> r;
  CHECK_NOTHROW(r = d->feed(sse, out));
  REQUIRE(out.size() == 1);
  CHECK(out[0].model.empty());
  CHECK(out[0].choices.at(0).content == std::optional<std::string>("hi"));
  REQUIRE(r);
  CHECK_FALSE(*r);  // the error event
  CHECK(r->error().kind == ErrorKind::stream_interrupted);

  Result<ChatResponse> resp = fail(ErrorKind::internal, "unset");
  CHECK_NOTHROW(resp = c->decode_response(
                    R"({"id":7,"model":["x"],"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]})"));
  REQUIRE(resp);
  CHECK(resp->text() == "ok");

  auto bad_usage = parse_chat_request(
      R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":"yes"}})");
  REQUIRE_FALSE(bad_usage);
  CHECK(bad_usage.error().path == "$.stream_options.include_usage");
  auto bad_tool = parse_chat_request(
      R"({"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":3,"function":{"name":"f"}}]})");
  REQUIRE_FALSE(bad_tool);
  CHECK(bad_tool.error().kind == ErrorKind::bad_request);
}

// ---- the relay decoder: the provider's bytes with our id and model, or the full decode ------

namespace {
struct Decoded {
  std::vector<ChatChunk> chunks;
  std::vector<std::string> events;  ///< relay decoder only: one per chunk
  std::optional<Error> error;
};
Decoded decode_all(StreamDecoder& d, std::string_view sse, std::size_t split, bool relay = false) {
  Decoded r;
  Result<void> a;
  for (std::string_view part : {sse.substr(0, split), sse.substr(split)}) {
    a = d.feed(part, r.chunks);
    if (!a) break;
  }
  if (a) a = d.finish(r.chunks);
  if (!a) r.error = a.error();
  if (relay)
    for (const auto& c : r.chunks) r.events.push_back(c.sse);
  return r;
}

// What a caller sees of a chunk is the same from the relay decoder (`a`) as from the full one
// (`b`): creation time, usage, and every choice's index, role, content, finish and tool calls.
void check_same_chunk(const ChatChunk& a, const ChatChunk& b) {
  CHECK(a.created == b.created);
  CHECK(a.usage.has_value() == b.usage.has_value());
  REQUIRE(a.choices.size() == b.choices.size());
  for (std::size_t k = 0; k < a.choices.size(); ++k) {
    CAPTURE(k);
    CHECK(a.choices[k].index == b.choices[k].index);
    CHECK(a.choices[k].role == b.choices[k].role);
    CHECK(a.choices[k].content == b.choices[k].content);
    CHECK(a.choices[k].finish_reason == b.choices[k].finish_reason);
    CHECK(a.choices[k].tool_calls.size() == b.choices[k].tool_calls.size());
  }
}
}  // namespace

TEST_CASE("OpenAI relay decoder: each chunk keeps the provider's bytes with our id and model, and decodes as the full decoder does") {
  // Escapes of every kind, a surrogate pair, extra members (logprobs, system_fingerprint, an
  // object), usage null on every chunk: relayed as received. A tool call and a usage object go
  // through the full decode (no event: re-encoded) and decode the same.
  const std::string sse =
      "data: {\"id\":\"up-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024\","
      "\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
      "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
      "data: {\"id\":\"up-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024\","
      "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"He said \\\"hi\\\"\\n\\u00e9\\ud83d\\ude00 \\\\ \\/ \\t\"},"
      "\"logprobs\":{\"content\":[{\"token\":\"x\",\"logprob\":-0.5e-3,\"top_logprobs\":[]}]},\"finish_reason\":null}],\"usage\":null}\n\n"
      "data: {\"model\":\"gpt-4o-mini-2024\",\"id\":\"up-1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\","
      "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n"
      "data: {\"id\":\"up-1\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024\",\"choices\":[{\"index\":0,\"delta\":{},"
      "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
      "data: {\"id\":\"up-1\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024\",\"choices\":[],"
      "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
      "data: [DONE]\n\n";
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  for (std::size_t split = 0; split <= sse.size(); split += 5) {
    CAPTURE(split);
    auto full = c->stream_decoder();
    auto relay = openai_relay_decoder("chatcmpl-ours", "gpt-4o-mini");
    Decoded f = decode_all(*full, sse, split), r = decode_all(*relay, sse, split, true);
    REQUIRE_FALSE(f.error);
    REQUIRE_FALSE(r.error);
    REQUIRE(r.chunks.size() == f.chunks.size());
    REQUIRE(r.chunks.size() == 5);
    for (std::size_t i = 0; i < r.chunks.size(); ++i) {
      CAPTURE(i);
      const ChatChunk &a = r.chunks[i], &b = f.chunks[i];
      CHECK(a.id == "chatcmpl-ours");
      CHECK(a.model == "gpt-4o-mini");
      check_same_chunk(a, b);
    }
    // The relayed events: the provider's JSON with only id and model replaced.
    const bool relayed[] = {true, true, false, true, false};
    std::size_t pos = 0;
    for (std::size_t i = 0; i < r.chunks.size(); ++i) {
      CAPTURE(i);
      std::size_t b = sse.find("data: ", pos), e = sse.find("\n\n", b);
      std::string upstream = sse.substr(b + 6, e - b - 6);
      pos = e;
      REQUIRE(r.events.size() == r.chunks.size());
      CHECK(r.events[i].empty() == !relayed[i]);
      if (!relayed[i]) continue;
      const std::string& ev = r.events[i];
      REQUIRE(ev.starts_with("data: "));
      REQUIRE(ev.ends_with("\n\n"));
      auto got = parse_json(std::string_view(ev).substr(6, ev.size() - 8));
      auto want = parse_json(upstream);
      REQUIRE(got);
      REQUIRE(want);
      (*want)["id"] = "chatcmpl-ours";
      (*want)["model"] = "gpt-4o-mini";
      CHECK(*got == *want);
    }
    CHECK(r.chunks[1].choices.at(0).content == std::optional<std::string>("He said \"hi\"\n\xC3\xA9\xF0\x9F\x98\x80 \\ / \t"));
    CHECK(r.chunks[4].usage->total() == 11);
  }
}

TEST_CASE("OpenAI relay decoder: chunks of one shape take the same-shape path and decode as the full decoder does") {
  // OpenAI's real stream: every chunk repeats id, created, model, fingerprint and the choice's
  // layout; only the content and the "obfuscation" padding after the choices change. Chunks
  // that differ elsewhere (logprobs, a finish reason, keys after the content, usage, a second
  // "id" after the choices) must leave that path and decode as the full decoder says.
  auto chunk = [](std::string_view content_json, std::string_view after_content, std::string_view tail) {
    return "data: {\"id\":\"chatcmpl-D0q8\",\"object\":\"chat.completion.chunk\",\"created\":1769092764,"
           "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_29330a9688\","
           "\"choices\":[{\"index\":0,\"delta\":{\"content\":" +
           std::string(content_json) + std::string(after_content) + "]" + std::string(tail) + "}\n\n";
  };
  const std::string plain_mid = "},\"logprobs\":null,\"finish_reason\":null}";
  const std::string sse =
      "data: {\"id\":\"chatcmpl-D0q8\",\"object\":\"chat.completion.chunk\",\"created\":1769092764,"
      "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_29330a9688\","
      "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
      "\"finish_reason\":null}],\"obfuscation\":\"q\"}\n\n" +
      chunk("\"Hello\"", plain_mid, ",\"obfuscation\":\"ZGF\"") +          // full scan: sets the shape
      chunk("\",\"", plain_mid, ",\"obfuscation\":\"lRK2aBv\"") +         // same shape
      chunk("\" W\\u00f6rld \\\"q\\\" \\ud83d\\ude00\\n\"", plain_mid, ",\"obfuscation\":\"kJ\"") +  // same shape, escapes
      chunk("\"\"", plain_mid, "") +                                       // same shape, no padding
      chunk("\"x\"", "},\"logprobs\":{\"content\":[]},\"finish_reason\":null}", ",\"obfuscation\":\"a\"") +  // other mid
      chunk("\"y\"", plain_mid, ",\"obfuscation\":\"b\"") +                // full scan again, then
      chunk("\"z\"", plain_mid, ",\"obfuscation\":\"cc\"") +               // same shape
      chunk("\"w\"", "},\"logprobs\":null,\"finish_reason\":\"ab\"}", "") +  // a mid of the same length, other value
      chunk("\"a\"", ",\"role\":\"assistant\"},\"logprobs\":null,\"finish_reason\":null}", "") +  // a key after the content
      chunk("\"b\"", plain_mid, ",\"id\":\"other\"") +                     // a second id after the choices
      chunk("\"c\"", plain_mid, ",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}") +
      chunk("\"d\"", plain_mid, ",\"obfuscation\":\"dd\"") +
      chunk("\"e\"", plain_mid, ",\"obfuscation\":\"ee\" , \"extra\":[1,{\"k\":null}] ") +  // same shape, other members
      chunk("\"f\"", plain_mid, ",\"obfuscation\":7e") +                   // not JSON after the choices
      "data: [DONE]\n\n";
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  for (std::size_t split : {std::size_t{0}, sse.size() / 3, sse.size() / 2, sse.size()}) {
    CAPTURE(split);
    auto full = c->stream_decoder();
    auto relay = openai_relay_decoder("chatcmpl-ours", "gpt-4o-mini");
    Decoded f = decode_all(*full, sse, split), r = decode_all(*relay, sse, split, true);
    // The last chunk is not JSON: both decoders stop there with the same error.
    REQUIRE(f.error.has_value());
    REQUIRE(r.error.has_value());
    CHECK(r.error->kind == f.error->kind);
    CHECK(r.error->message == f.error->message);
    REQUIRE(r.chunks.size() == f.chunks.size());
    REQUIRE(r.chunks.size() == 14);
    for (std::size_t i = 0; i < r.chunks.size(); ++i) {
      CAPTURE(i);
      const ChatChunk &a = r.chunks[i], &b = f.chunks[i];
      CHECK(a.id == "chatcmpl-ours");
      CHECK(a.model == "gpt-4o-mini");
      check_same_chunk(a, b);
      // Relayed as received (id and model ours) except the usage chunk, which the full decode
      // re-encodes.
      CHECK(a.sse.empty() == (i == 10 || i == 11));  // a second id: the full decode
      if (a.sse.empty()) continue;
      const std::string& ev = a.sse;
      REQUIRE(ev.starts_with("data: {"));
      REQUIRE(ev.ends_with("\n\n"));
      std::size_t b0 = 0;
      for (std::size_t k = 0; k <= i; ++k) b0 = sse.find("data: ", k == 0 ? 0 : b0 + 1);
      const std::string upstream = sse.substr(b0 + 6, sse.find("\n\n", b0) - b0 - 6);
      auto got = parse_json(std::string_view(ev).substr(6, ev.size() - 8));
      auto want = parse_json(upstream);
      REQUIRE(got);
      REQUIRE(want);
      (*want)["id"] = "chatcmpl-ours";
      (*want)["model"] = "gpt-4o-mini";
      CHECK(*got == *want);
      // Byte for byte: the upstream's bytes from the content on are the relayed event's.
      const std::size_t at = upstream.find("\"content\":\"", upstream.find("\"delta\""));
      if (at != std::string::npos && upstream.find("\"other\"") == std::string::npos)
        CHECK(ev.ends_with(upstream.substr(at) + "\n\n"));
    }
    CHECK(r.chunks[3].choices.at(0).content == std::optional<std::string>(" W\xC3\xB6rld \"q\" \xF0\x9F\x98\x80\n"));
    CHECK(r.chunks[8].choices.at(0).finish_reason == "ab");
    CHECK(r.chunks[11].usage->total() == 7);
    // Chunks 2, 3, 4, 7 and 13 took the same-shape path; every other took the full scan.
    CHECK(openai_relay_same_shape_count(*relay) == 5);
  }
}

TEST_CASE("OpenAI relay decoder: chunks with sorted keys (id and model after the choices) take the same-shape path only when all after the content is the same") {
  auto chunk = [](std::string_view content_json, std::string_view finish, std::string_view created, std::string_view id) {
    return "data: {\"choices\":[{\"delta\":{\"content\":" + std::string(content_json) + "},\"finish_reason\":" +
           std::string(finish) + ",\"index\":0,\"logprobs\":null}],\"created\":" + std::string(created) + ",\"id\":\"" +
           std::string(id) + "\",\"model\":\"gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"usage\":null}\n\n";
  };
  const std::string sse =
      "data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0,"
      "\"logprobs\":null}],\"created\":1767225600,\"id\":\"mock-1\",\"model\":\"gpt-4o-mini\",\"object\":\"chat.completion.chunk\","
      "\"usage\":null}\n\n" +
      chunk("\"w0 \"", "null", "1767225600", "mock-1") +    // full scan: sets the shape
      chunk("\"w1 \"", "null", "1767225600", "mock-1") +    // same shape
      chunk("\"\\u00e9\\\"\"", "null", "1767225600", "mock-1") +  // same shape, escapes
      chunk("\"w3\"", "null", "1767225601", "mock-1") +     // another created: full scan
      chunk("\"w4\"", "null", "1767225601", "mock-2") +     // another id (same length): full scan
      chunk("\"w5\"", "null", "1767225601", "mock-2") +     // same shape
      chunk("\"w6\"", "\"ab\"", "1767225601", "mock-2") +   // a finish reason of the same length: full scan
      "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0,\"logprobs\":null}],\"created\":1767225601,"
      "\"id\":\"mock-2\",\"model\":\"gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"usage\":null}\n\n"
      "data: [DONE]\n\n";
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  for (std::size_t split : {std::size_t{0}, sse.size() / 2, sse.size()}) {
    CAPTURE(split);
    auto full = c->stream_decoder();
    auto relay = openai_relay_decoder("chatcmpl-ours", "gpt-4o-mini");
    Decoded f = decode_all(*full, sse, split), r = decode_all(*relay, sse, split, true);
    REQUIRE_FALSE(f.error);
    REQUIRE_FALSE(r.error);
    REQUIRE(r.chunks.size() == 9);
    REQUIRE(f.chunks.size() == 9);
    std::size_t b0 = 0;
    for (std::size_t i = 0; i < r.chunks.size(); ++i) {
      CAPTURE(i);
      const ChatChunk &a = r.chunks[i], &b = f.chunks[i];
      check_same_chunk(a, b);
      b0 = sse.find("data: ", i == 0 ? 0 : b0 + 1);
      const std::string upstream = sse.substr(b0 + 6, sse.find("\n\n", b0) - b0 - 6);
      REQUIRE_FALSE(a.sse.empty());
      auto got = parse_json(std::string_view(a.sse).substr(6, a.sse.size() - 8));
      auto want = parse_json(upstream);
      REQUIRE(got);
      REQUIRE(want);
      (*want)["id"] = "chatcmpl-ours";
      (*want)["model"] = "gpt-4o-mini";
      CHECK(*got == *want);
    }
    CHECK(r.chunks[3].choices[0].content == std::optional<std::string>("\xC3\xA9\""));
    CHECK(r.chunks[4].created == 1767225601);
    CHECK(r.chunks[7].choices[0].finish_reason == "ab");
    CHECK(openai_relay_same_shape_count(*relay) == 3);  // chunks 2, 3 and 6
  }
}

TEST_CASE("OpenAI relay decoder: a key read twice in one object takes the full decode, which keeps the last") {
  // Found by fuzz_stream: a choice with two deltas gave the first delta's role with the second's
  // content (the scan merged them; the full parser keeps only the last), and a repeated role or
  // finish_reason was appended to the first.
  const std::string head = "data: {\"id\":\"a\",\"model\":\"m\",";
  const std::string cases[] = {
      head + "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"delta\":{\"content\":\"x\"}}]}\n\n",
      head + "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"role\":\"user\",\"content\":\"x\"}}]}\n\n",
      head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}\n\n",
      head + "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"finish_reason\":\"length\"}]}\n\n",
      head + "\"choices\":[{\"index\":0,\"index\":1,\"delta\":{\"content\":\"x\"}}]}\n\n",
      head + "\"created\":1,\"created\":2,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
      head + "\"id\":\"b\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
      head + "\"choices\":[],\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
  };
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  for (const auto& one : cases) {
    CAPTURE(one);
    const std::string sse = one + "data: [DONE]\n\n";
    auto full = c->stream_decoder();
    auto relay = openai_relay_decoder("chatcmpl-ours", "m");
    Decoded f = decode_all(*full, sse, sse.size()), r = decode_all(*relay, sse, sse.size(), true);
    REQUIRE_FALSE(f.error);
    REQUIRE_FALSE(r.error);
    REQUIRE(r.chunks.size() == 1);
    REQUIRE(f.chunks.size() == 1);
    CHECK(r.events[0].empty());  // re-encoded from the full decode
    check_same_chunk(r.chunks[0], f.chunks[0]);
  }
}

TEST_CASE("OpenAI relay decoder: chunks given back and reused decode exactly as fresh ones") {
  // Each chunk reuses the buffers of the one before it (recycle after every event): nothing of
  // the earlier chunk may show through (content, role, a second choice, created, finish).
  const std::string sse =
      "data: {\"id\":\"u\",\"created\":17,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
      "\"content\":\"a content longer than the small-string buffer\"},\"finish_reason\":null},"
      "{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":null}]}\n\n"
      "data: {\"id\":\"u\",\"model\":\"m\",\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"
      "data: {\"id\":\"u\",\"model\":\"m\",\"choices\":[]}\n\n"
      "data: {\"id\":\"u\",\"created\":18,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":null},"
      "\"finish_reason\":\"stop\"}]}\n\n"
      "data: {\"id\":\"u\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"}}]}\n\n"
      "data: [DONE]\n\n";
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  Decoded f = decode_all(*c->stream_decoder(), sse, sse.size());
  REQUIRE_FALSE(f.error);
  REQUIRE(f.chunks.size() == 5);
  auto relay = openai_relay_decoder("chatcmpl-ours", "m");
  std::vector<ChatChunk> got, piece;
  for (std::size_t b = 0; b < sse.size();) {
    const std::size_t e = sse.find("\n\n", b) + 2;
    REQUIRE(relay->feed(std::string_view(sse).substr(b, e - b), piece));
    got.insert(got.end(), piece.begin(), piece.end());
    relay->recycle(piece);
    CHECK(piece.empty());
    b = e;
  }
  REQUIRE(relay->finish(got));
  REQUIRE(got.size() == f.chunks.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    const ChatChunk &a = got[i], &x = f.chunks[i];
    check_same_chunk(a, x);
    CHECK_FALSE(a.sse.empty());  // all relayed as received
    CHECK(a.sse.find("\"chatcmpl-ours\"") != std::string::npos);
  }
  CHECK_FALSE(got[1].choices.at(0).content.has_value());
  CHECK(got[1].created == 0);
  CHECK(got[4].choices.at(0).content == std::optional<std::string>(""));
}

TEST_CASE("OpenAI relay decoder: errors, bad JSON and odd types end the stream as the full decoder does") {
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  const std::string cases[] = {
      "data: {\"error\":{\"message\":\"overloaded\",\"code\":503}}\n\n",
      "data: {\"id\":\"a\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}\n\n",
      "data: {\"id\":\"a\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]\n\n",  // truncated JSON
      "data: {\"id\":\"a\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud800\"}}]}\n\n",  // lone surrogate
      "event: error\ndata: {\"error\":{\"message\":\"boom\"}}\n\n",
      "data: {\"id\":{},\"model\":5,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
      "data: {\"id\":\"a\",\"model\":\"m\",\"choices\":[]} trailing\n\n",
      "data: {\"id\":\"a\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\"}}]}\n\n",  // invalid UTF-8
      "data: {\"id\":\"a\",\"model\":\"m\",\"x\":0869,\"choices\":[]}\n\n",  // a leading zero (not JSON)
      "data: {\"id\":\"a\",\"model\":\"m\",\"created\":-012,\"choices\":[]}\n\n",
  };
  for (const auto& sse : cases) {
    CAPTURE(sse);
    auto full = c->stream_decoder();
    auto relay = openai_relay_decoder("chatcmpl-ours", "gpt-4o-mini");
    Decoded f = decode_all(*full, sse, sse.size()), r = decode_all(*relay, sse, sse.size(), true);
    REQUIRE(f.error.has_value() == r.error.has_value());
    if (f.error) {
      CHECK(r.error->kind == f.error->kind);
      CHECK(r.error->message == f.error->message);
    }
    REQUIRE(r.chunks.size() == f.chunks.size());
    for (const auto& ev : r.events) CHECK(ev.empty());  // none of these is relayed as is
  }
}

TEST_CASE("OpenAI relay response: a plain answer decodes as decode_response and keeps its bytes with our id and model") {
  const std::string body =
      "{\"id\":\"chatcmpl-up\\u0031\",\"object\":\"chat.completion\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\","
      "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello \\\"there\\\"\\n\\ud83d\\ude00\","
      "\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
      "\"usage\":{\"prompt_tokens\":28,\"completion_tokens\":16,\"total_tokens\":44,"
      "\"prompt_tokens_details\":{\"cached_tokens\":3,\"audio_tokens\":0},"
      "\"completion_tokens_details\":{\"reasoning_tokens\":5,\"audio_tokens\":0}},"
      "\"service_tier\":\"default\",\"system_fingerprint\":\"fp_b376dfbbd5\"}";
  const Codec* c = find_codec("openai");
  REQUIRE(c);
  auto full = c->decode_response(body);
  REQUIRE(full);
  std::string copy = body;
  auto fast = openai_relay_response(std::move(copy));
  REQUIRE(fast);
  CHECK(fast->id == full->id);
  CHECK(fast->id == "chatcmpl-up1");
  CHECK(fast->model == full->model);
  CHECK(fast->created == full->created);
  CHECK(fast->system_fingerprint == full->system_fingerprint);
  REQUIRE(fast->choices.size() == 1);
  CHECK(fast->choices[0].message.role == "assistant");
  CHECK(fast->choices[0].message.text() == full->choices[0].message.text());
  CHECK(fast->choices[0].message.content_null == full->choices[0].message.content_null);
  CHECK(fast->choices[0].finish_reason == "stop");
  CHECK(fast->usage.prompt_tokens == 28);
  CHECK(fast->usage.completion_tokens == 16);
  CHECK(fast->usage.cached_tokens == full->usage.cached_tokens);
  CHECK(fast->usage.reasoning_tokens == 5);
  // The relayed body: the provider's JSON with only id and model replaced.
  REQUIRE_FALSE(fast->relayed.empty());
  auto got = parse_json(fast->relayed.with("chatcmpl-ours", "gpt-4o-mini \"quoted\""));
  auto want = parse_json(body);
  REQUIRE(got);
  REQUIRE(want);
  (*want)["id"] = "chatcmpl-ours";
  (*want)["model"] = "gpt-4o-mini \"quoted\"";
  CHECK(*got == *want);
  // Plain ids are quoted as they are, anything else is escaped: a backslash, a tab, UTF-8.
  auto odd = parse_json(fast->relayed.with("chat\\cmpl\tid", "mod\xC3\xA9le"));
  REQUIRE(odd);
  CHECK((*odd)["id"] == "chat\\cmpl\tid");
  CHECK((*odd)["model"] == "mod\xC3\xA9le");
}

TEST_CASE("OpenAI relay response: tool calls, errors, bad JSON and odd shapes take the full decode") {
  const std::string cases[] = {
      R"({"id":"a","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]})",
      R"({"error":{"message":"boom"}})",
      R"({"id":"a","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"}}])",
      R"({"id":"a","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":[{"type":"text","text":"x"}]}}]})",
      R"({"id":"a","model":"m","choices":[{"index":0}]})",
      R"({"id":"a","id":"b","model":"m","choices":[]})",
      R"({"id":"a","model":"m","choices":[],"usage":{"prompt_tokens":1.5}})",
      R"({"id":"a","model":"m"})",
      R"({"id":"a","model":"m","choices":[]} trailing)",
      R"({"id":5,"model":"m","choices":[]})",
      "{\"id\":\"a\",\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"\xff\xfe\"}}]}",  // invalid UTF-8
  };
  for (const auto& body : cases) {
    CAPTURE(body);
    std::string copy = body;
    CHECK_FALSE(openai_relay_response(std::move(copy)));
  }
  // DeepSeek's top-level cache hits win, as in the full decode.
  std::string ds = R"({"id":"a","model":"m","choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_cache_hit_tokens":7}})";
  auto full = find_codec("openai")->decode_response(ds);
  auto fast = openai_relay_response(std::move(ds));
  REQUIRE(full);
  REQUIRE(fast);
  CHECK(fast->usage.cached_tokens == 7);
  CHECK(fast->usage.cached_tokens == full->usage.cached_tokens);
  CHECK(fast->choices.at(0).message.role == "assistant");
}
