// Cohere, server side: what the provider's API accepts and answers. The mock provider
// serves it; the round-trip tests run the client codec against it.
#include "testing/server_codecs.hpp"

#include <algorithm>

namespace modelux {
namespace {

std::string_view cohere_finish(std::string_view f) {
  if (f == "length") return "MAX_TOKENS";
  if (f == "tool_calls") return "TOOL_CALL";
  if (f == "content_filter") return "ERROR_TOXIC";
  return "COMPLETE";
}

Json usage_to_cohere(const Usage& u) {
  Json tokens = {{"input_tokens", u.prompt_tokens}, {"output_tokens", u.completion_tokens}};
  return {{"billed_units", tokens}, {"tokens", tokens}, {"cached_tokens", u.cached_tokens}};
}

}  // namespace

namespace wire {

Result<ChatRequest> cohere_request_from_native(const Json& j) {
  // v2 messages are OpenAI-shaped, so the unified parser does the work; p/k/stop_sequences
  // are renamed first.
  Json o = j;
  if (o.contains("p")) o["top_p"] = o["p"], o.erase("p");
  if (o.contains("stop_sequences")) o["stop"] = o["stop_sequences"], o.erase("stop_sequences");
  if (o.contains("k")) o["top_k"] = o["k"], o.erase("k");
  if (o.contains("tool_choice") && o["tool_choice"].is_string()) {
    std::string c = o["tool_choice"].get<std::string>();
    o["tool_choice"] = c == "REQUIRED" ? "required" : c == "NONE" ? "none" : "auto";
  }
  if (const Json* msgs = jarr(o, "messages"))
    for (auto& m : o["messages"]) {
      (void)msgs;
      if (m.is_object() && m.contains("tool_plan")) m.erase("tool_plan");
    }
  auto r = chat_request_from_json(o);
  if (!r) {
    Error e = r.error();
    e.kind = ErrorKind::bad_request;
    return fail(std::move(e));
  }
  return r;
}

Json cohere_response_to_native(const ChatResponse& r) {
  Json msg = {{"role", "assistant"}};
  std::string finish = "stop";
  if (!r.choices.empty()) {
    const Choice& c = r.choices.front();
    finish = c.finish_reason;
    std::string text = c.message.text();
    if (!text.empty()) msg["content"] = Json::array({{{"type", "text"}, {"text", text}}});
    if (!c.message.tool_calls.empty()) {
      Json calls = Json::array();
      for (const auto& tc : c.message.tool_calls)
        calls.push_back({{"id", tc.id}, {"type", "function"}, {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
      msg["tool_calls"] = std::move(calls);
      msg["tool_plan"] = "I will call the tool.";
    }
  }
  return {{"id", r.id}, {"finish_reason", std::string(cohere_finish(finish))}, {"message", std::move(msg)}, {"usage", usage_to_cohere(r.usage)}};
}

std::vector<std::string> cohere_stream_events(const ChatResponse& r, int chunks) {
  std::vector<std::string> out;
  auto emit = [&](std::string_view type, Json data) {
    data["type"] = std::string(type);
    out.push_back(sse_event(type, data.dump()));
  };
  emit("message-start", {{"id", r.id}, {"delta", {{"message", {{"role", "assistant"}, {"content", Json::array()}, {"tool_plan", ""}, {"tool_calls", Json::array()}, {"citations", Json::array()}}}}}});
  std::string finish = "stop";
  if (!r.choices.empty()) {
    const Choice& c = r.choices.front();
    finish = c.finish_reason;
    std::string text = c.message.text();
    if (!text.empty()) {
      emit("content-start", {{"index", 0}, {"delta", {{"message", {{"content", {{"type", "text"}, {"text", ""}}}}}}}});
      for (auto& piece : split_text(text, chunks))
        emit("content-delta", {{"index", 0}, {"delta", {{"message", {{"content", {{"text", piece}}}}}}}});
      emit("content-end", {{"index", 0}});
    }
    for (std::size_t i = 0; i < c.message.tool_calls.size(); ++i) {
      const auto& tc = c.message.tool_calls[i];
      emit("tool-call-start", {{"index", i}, {"delta", {{"message", {{"tool_calls", {{"id", tc.id}, {"type", "function"}, {"function", {{"name", tc.name}, {"arguments", ""}}}}}}}}}});
      for (auto& piece : split_text(tc.arguments, chunks))
        emit("tool-call-delta", {{"index", i}, {"delta", {{"message", {{"tool_calls", {{"function", {{"arguments", piece}}}}}}}}}});
      emit("tool-call-end", {{"index", i}});
    }
  }
  emit("message-end", {{"delta", {{"finish_reason", std::string(cohere_finish(finish))}, {"usage", usage_to_cohere(r.usage)}}}});
  return out;
}

Json cohere_error_body(int status, std::string_view message) {
  (void)status;
  return {{"id", "mock-error"}, {"message", std::string(message)}};
}

}  // namespace wire
}  // namespace modelux
