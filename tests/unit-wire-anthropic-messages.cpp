// The Anthropic Messages server side shared by the proxy's ingress and the mock
// (wire/anthropic_messages.hpp): request decoding with JSON paths, stop reasons and usage
// mapped from the unified response, and the event stream built from unified chunks as any
// provider family produces them.
#include <doctest/doctest.h>

#include "wire/anthropic_messages.hpp"

using namespace modelux;

namespace {

struct Event {
  std::string name;
  Json data;
};

std::vector<Event> parse_events(const std::string& text) {
  std::vector<Event> out;
  SseParser p;
  std::vector<SseEvent> evs;
  REQUIRE(p.feed(text, evs));
  for (auto& e : evs) {
    auto j = parse_json(e.data);
    REQUIRE(j);
    CHECK(e.event == (*j)["type"].get<std::string>());  // the event line names the data's type
    out.push_back({e.event, *j});
  }
  return out;
}

std::vector<std::string> names(const std::vector<Event>& evs) {
  std::vector<std::string> n;
  for (auto& e : evs) n.push_back(e.name);
  return n;
}

ChatChunk text_chunk(std::string t) {
  ChatChunk c;
  ChunkChoice ch;
  ch.content = std::move(t);
  c.choices.push_back(std::move(ch));
  return c;
}

ChatChunk tool_chunk(int index, std::string id, std::string name, std::string args) {
  ChatChunk c;
  ChunkChoice ch;
  ch.tool_calls.push_back(ToolCallDelta{index, std::move(id), std::move(name), std::move(args)});
  c.choices.push_back(std::move(ch));
  return c;
}

ChatChunk finish_chunk(std::string reason) {
  ChatChunk c;
  ChunkChoice ch;
  ch.finish_reason = std::move(reason);
  c.choices.push_back(std::move(ch));
  return c;
}

}  // namespace

TEST_CASE("AnthropicStreamEncoder: text then two tool calls become three blocks in order") {
  wire::AnthropicStreamEncoder enc("msg_1", "gpt-4o-mini");
  std::string out;
  enc.add(text_chunk("Let me "), out);
  enc.add(text_chunk("check."), out);
  enc.add(tool_chunk(0, "call_a", "get_weather", "{\"city\":"), out);
  enc.add(tool_chunk(0, "", "", "\"Oslo\"}"), out);
  enc.add(tool_chunk(1, "call_b", "get_time", "{}"), out);
  enc.add(finish_chunk("tool_calls"), out);
  ChatChunk usage;
  usage.usage = Usage{.prompt_tokens = 120, .completion_tokens = 30, .cached_tokens = 100, .cache_write_tokens = 5};
  enc.add(usage, out);
  enc.finish(out);
  auto evs = parse_events(out);
  CHECK(names(evs) == std::vector<std::string>{"message_start", "ping", "content_block_start", "content_block_delta",
                                               "content_block_delta", "content_block_stop", "content_block_start",
                                               "content_block_delta", "content_block_delta", "content_block_stop",
                                               "content_block_start", "content_block_delta", "content_block_stop",
                                               "message_delta", "message_stop"});
  CHECK(evs[0].data["message"]["id"] == "msg_1");
  CHECK(evs[2].data["content_block"]["type"] == "text");
  CHECK(evs[3].data["delta"] == Json{{"type", "text_delta"}, {"text", "Let me "}});
  CHECK(evs[6].data["index"] == 1);
  CHECK(evs[6].data["content_block"]["type"] == "tool_use");
  CHECK(evs[6].data["content_block"]["id"] == "call_a");
  CHECK(evs[6].data["content_block"]["name"] == "get_weather");
  CHECK(evs[7].data["delta"]["type"] == "input_json_delta");
  CHECK(evs[7].data["delta"]["partial_json"].get<std::string>() + evs[8].data["delta"]["partial_json"].get<std::string>() ==
        "{\"city\":\"Oslo\"}");
  CHECK(evs[10].data["index"] == 2);
  const Json& md = evs[13].data;
  CHECK(md["delta"]["stop_reason"] == "tool_use");
  // Usage is Anthropic's: input without the cached and cache-written tokens.
  CHECK(md["usage"] == Json{{"input_tokens", 15}, {"output_tokens", 30}, {"cache_creation_input_tokens", 5}, {"cache_read_input_tokens", 100}});
}

TEST_CASE("AnthropicStreamEncoder: stop reasons from every finish reason") {
  for (auto [finish, stop] : std::vector<std::pair<std::string, std::string>>{
           {"stop", "end_turn"}, {"length", "max_tokens"}, {"tool_calls", "tool_use"}, {"content_filter", "refusal"}}) {
    wire::AnthropicStreamEncoder enc("m", "x");
    std::string out;
    enc.add(text_chunk("hi"), out);
    enc.add(finish_chunk(finish), out);
    enc.finish(out);
    auto evs = parse_events(out);
    CHECK(evs[evs.size() - 2].data["delta"]["stop_reason"] == stop);
    ChatResponse r;
    Choice c;
    c.message = Message::assistant("hi");
    c.finish_reason = finish;
    r.choices.push_back(c);
    CHECK(wire::anthropic_response_to_native(r)["stop_reason"] == stop);
  }
}

TEST_CASE("AnthropicStreamEncoder: a stream without chunks still opens and closes the message") {
  wire::AnthropicStreamEncoder enc("m", "x", Usage{.prompt_tokens = 7});
  std::string out;
  enc.finish(out);
  auto evs = parse_events(out);
  CHECK(names(evs) == std::vector<std::string>{"message_start", "ping", "message_delta", "message_stop"});
  CHECK(evs[0].data["message"]["usage"]["input_tokens"] == 7);  // known up front: in message_start
  CHECK(evs[2].data["delta"]["stop_reason"] == "end_turn");
}

TEST_CASE("anthropic_request_from_native: faults name their JSON path") {
  auto decode = [](const char* text) { return wire::anthropic_request_from_native(*parse_json(text)); };
  auto path = [&](const char* text) {
    auto r = decode(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::bad_request);
    return r.error().path;
  };
  CHECK(path(R"([])") == "");
  CHECK(path(R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})") == "model");
  CHECK(path(R"({"model":"m","messages":[{"role":"user","content":"x"}]})") == "max_tokens");
  CHECK(path(R"({"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]})") == "max_tokens");
  CHECK(path(R"({"model":"m","max_tokens":5,"system":7,"messages":[{"role":"user","content":"x"}]})") == "system");
  CHECK(path(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"bot","content":"y"}]})") ==
        "messages[1].role");
  CHECK(path(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a"},7]}]})") ==
        "messages[0].content[1]");
  CHECK(path(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file"}}]}]})") ==
        "messages[0].content[0].source.type");
  CHECK(path(R"({"model":"m","max_tokens":5,"tools":[{}],"messages":[{"role":"user","content":"x"}]})") == "tools[0].name");
  CHECK(path(R"({"model":"m","max_tokens":5,"tool_choice":{"type":"maybe"},"messages":[{"role":"user","content":"x"}]})") ==
        "tool_choice.type");
}

TEST_CASE("anthropic_request_from_native: system blocks, tool use and results, images") {
  auto r = wire::anthropic_request_from_native(*parse_json(R"({
    "model":"m","max_tokens":9,"temperature":0.5,"top_p":0.9,
    "system":[{"type":"text","text":"A"},{"type":"text","text":"B","cache_control":{"type":"ephemeral"}}],
    "messages":[
      {"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},
                                {"type":"image","source":{"type":"url","url":"https://x/y.png"}},{"type":"text","text":"hi"}]},
      {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
      {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"done"}]}]})"));
  REQUIRE(r);
  CHECK(r->temperature == 0.5);  // both sampling fields kept: the target decides what it takes
  CHECK(r->top_p == 0.9);
  REQUIRE(r->messages.size() == 4);
  CHECK(r->messages[0].role == "system");
  CHECK(r->messages[0].content[1].cache_control == Json{{"type", "ephemeral"}});
  CHECK(r->messages[1].content[0].url == "data:image/png;base64,AAAA");
  CHECK(r->messages[1].content[1].url == "https://x/y.png");
  CHECK(r->messages[2].tool_calls[0].id == "t1");
  CHECK(parse_json(r->messages[2].tool_calls[0].arguments)->at("a") == 1);
  CHECK(r->messages[3].role == "tool");
  CHECK(r->messages[3].tool_call_id == "t1");
  CHECK(r->messages[3].text() == "done");
}

TEST_CASE("anthropic_error_body: Anthropic's error types by status") {
  CHECK(wire::anthropic_error_body(400, "bad")["error"]["type"] == "invalid_request_error");
  CHECK(wire::anthropic_error_body(401, "x")["error"]["type"] == "authentication_error");
  CHECK(wire::anthropic_error_body(403, "x")["error"]["type"] == "permission_error");
  CHECK(wire::anthropic_error_body(404, "x")["error"]["type"] == "not_found_error");
  CHECK(wire::anthropic_error_body(429, "x")["error"]["type"] == "rate_limit_error");
  CHECK(wire::anthropic_error_body(502, "x")["error"]["type"] == "api_error");
  CHECK(wire::anthropic_error_body(503, "x")["error"]["type"] == "overloaded_error");
  CHECK(wire::anthropic_error_body(504, "x")["error"]["type"] == "timeout_error");
  Json j = wire::anthropic_error_body(500, "boom", "req_1");
  CHECK(j == Json{{"type", "error"}, {"error", {{"type", "api_error"}, {"message", "boom"}}}, {"request_id", "req_1"}});
  CHECK_FALSE(wire::anthropic_error_body(500, "boom").contains("request_id"));
}
