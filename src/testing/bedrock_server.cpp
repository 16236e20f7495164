// Bedrock, server side: what the provider's API accepts and answers. The mock provider
// serves it; the round-trip tests run the client codec against it.
#include "testing/server_codecs.hpp"

#include <algorithm>
#include <chrono>
#include <unordered_map>

namespace modelux {
namespace {

std::string_view bedrock_stop(std::string_view f) {
  if (f == "length") return "max_tokens";
  if (f == "tool_calls") return "tool_use";
  if (f == "content_filter") return "content_filtered";
  return "end_turn";
}

Json usage_to_bedrock(const Usage& u) {
  auto in = u.prompt_tokens - u.cached_tokens - u.cache_write_tokens;
  return {{"inputTokens", in},
          {"outputTokens", u.completion_tokens},
          {"totalTokens", in + u.completion_tokens},
          {"cacheReadInputTokens", u.cached_tokens},
          {"cacheWriteInputTokens", u.cache_write_tokens}};
}

}  // namespace

namespace wire {

Result<ChatRequest> bedrock_request_from_native(const Json& j, std::string_view model) {
  ChatRequest r;
  r.model = std::string(model);
  if (const Json* sys = jarr(j, "system")) {
    Message m;
    m.role = "system";
    m.content_is_string = false;
    for (const auto& b : *sys)
      if (b.contains("text")) {
        ContentPart p;
        p.text = jstr(b, "text");
        m.content.push_back(std::move(p));
      } else if (b.contains("cachePoint") && !m.content.empty()) {
        m.content.back().cache_control = {{"type", "ephemeral"}};
      }
    r.messages.push_back(std::move(m));
  }
  const Json* msgs = jarr(j, "messages");
  if (!msgs || msgs->empty()) return fail(ErrorKind::bad_request, "messages: at least one message is required", "messages");
  for (std::size_t i = 0; i < msgs->size(); ++i) {
    const Json& jm = (*msgs)[i];
    std::string role = jstr(jm, "role");
    if (role != "user" && role != "assistant")
      return fail(ErrorKind::bad_request, "role must be user or assistant", "messages[" + std::to_string(i) + "].role");
    Message m;
    m.role = role;
    m.content_is_string = false;
    if (const Json* content = jarr(jm, "content"))
      for (const auto& b : *content) {
        if (b.contains("text")) {
          ContentPart p;
          p.text = jstr(b, "text");
          m.content.push_back(std::move(p));
        } else if (const Json* img = jobj(b, "image")) {
          ContentPart p;
          p.type = ContentPart::Type::image_url;
          const Json* src = jobj(*img, "source");
          p.url = make_data_uri("image/" + jstr(*img, "format"), src ? jstr(*src, "bytes") : "");
          m.content.push_back(std::move(p));
        } else if (const Json* tu = jobj(b, "toolUse")) {
          m.tool_calls.push_back(ToolCall{jstr(*tu, "toolUseId"), jstr(*tu, "name"), tu->contains("input") ? (*tu)["input"].dump() : "{}"});
        } else if (const Json* tr = jobj(b, "toolResult")) {
          Message t;
          t.role = "tool";
          t.tool_call_id = jstr(*tr, "toolUseId");
          ContentPart p;
          if (const Json* c = jarr(*tr, "content"))
            for (const auto& x : *c) p.text += x.contains("json") ? x["json"].dump() : jstr(x, "text");
          t.content.push_back(std::move(p));
          r.messages.push_back(std::move(t));
        }
      }
    if (!m.content.empty() || !m.tool_calls.empty()) {
      if (m.content.empty()) m.content_null = true;
      r.messages.push_back(std::move(m));
    }
  }
  if (const Json* inf = jobj(j, "inferenceConfig")) {
    if (inf->contains("maxTokens")) r.max_tokens = jint(*inf, "maxTokens");
    if (inf->contains("temperature") && (*inf)["temperature"].is_number()) r.temperature = (*inf)["temperature"].get<double>();
    if (inf->contains("topP") && (*inf)["topP"].is_number()) r.top_p = (*inf)["topP"].get<double>();
    if (const Json* s = jarr(*inf, "stopSequences"))
      for (const auto& x : *s)
        if (x.is_string()) r.stop.push_back(x.get<std::string>());
  }
  if (const Json* tc = jobj(j, "toolConfig")) {
    if (const Json* tools = jarr(*tc, "tools"))
      for (const auto& t : *tools)
        if (const Json* spec = jobj(t, "toolSpec")) {
          Tool tool;
          tool.name = jstr(*spec, "name");
          tool.description = jstr(*spec, "description");
          const Json* schema = jobj(*spec, "inputSchema");
          tool.parameters = schema && schema->contains("json") ? (*schema)["json"] : Json::object();
          r.tools.push_back(std::move(tool));
        }
    if (const Json* choice = jobj(*tc, "toolChoice")) {
      if (choice->contains("auto")) r.tool_choice = "auto";
      else if (choice->contains("any")) r.tool_choice = "required";
      else if (const Json* t = jobj(*choice, "tool")) r.tool_choice = {{"type", "function"}, {"function", {{"name", jstr(*t, "name")}}}};
    }
  }
  return r;
}

Json bedrock_response_to_native(const ChatResponse& r) {
  Json content = Json::array();
  std::string finish = "stop";
  if (!r.choices.empty()) {
    const Choice& c = r.choices.front();
    finish = c.finish_reason;
    std::string text = c.message.text();
    if (!text.empty()) content.push_back({{"text", text}});
    for (const auto& tc : c.message.tool_calls) {
      auto input = parse_json(tc.arguments);
      content.push_back({{"toolUse", {{"toolUseId", tc.id}, {"name", tc.name}, {"input", input && input->is_object() ? *input : Json::object()}}}});
    }
  }
  return {{"output", {{"message", {{"role", "assistant"}, {"content", std::move(content)}}}}},
          {"stopReason", std::string(bedrock_stop(finish))},
          {"usage", usage_to_bedrock(r.usage)},
          {"metrics", {{"latencyMs", 1}}}};
}

std::vector<std::string> bedrock_stream_frames(const ChatResponse& r, int chunks) {
  std::vector<std::string> out;
  auto emit = [&](const char* type, const Json& payload) {
    out.push_back(encode_event_stream_message(
        {{":event-type", type}, {":content-type", "application/json"}, {":message-type", "event"}}, payload.dump()));
  };
  emit("messageStart", {{"role", "assistant"}});
  std::string finish = "stop";
  int index = 0;
  if (!r.choices.empty()) {
    const Choice& c = r.choices.front();
    finish = c.finish_reason;
    std::string text = c.message.text();
    if (!text.empty()) {
      for (auto& piece : split_text(text, chunks)) emit("contentBlockDelta", {{"contentBlockIndex", index}, {"delta", {{"text", piece}}}});
      emit("contentBlockStop", {{"contentBlockIndex", index}});
      ++index;
    }
    for (const auto& tc : c.message.tool_calls) {
      emit("contentBlockStart", {{"contentBlockIndex", index}, {"start", {{"toolUse", {{"toolUseId", tc.id}, {"name", tc.name}}}}}});
      for (auto& piece : split_text(tc.arguments, chunks))
        emit("contentBlockDelta", {{"contentBlockIndex", index}, {"delta", {{"toolUse", {{"input", piece}}}}}});
      emit("contentBlockStop", {{"contentBlockIndex", index}});
      ++index;
    }
  }
  emit("messageStop", {{"stopReason", std::string(bedrock_stop(finish))}});
  emit("metadata", {{"usage", usage_to_bedrock(r.usage)}, {"metrics", {{"latencyMs", 1}}}});
  return out;
}

std::string_view bedrock_error_type(int status) {
  switch (status) {
    case 400: return "ValidationException";
    case 401: return "UnrecognizedClientException";  // sent with status 403 by AWS
    case 403: return "AccessDeniedException";
    case 404: return "ResourceNotFoundException";
    case 408: return "ModelTimeoutException";
    case 424: return "ModelErrorException";
    case 429: return "ThrottlingException";
    case 503:
    case 529: return "ServiceUnavailableException";
    default: return status >= 500 ? "InternalServerException" : "ValidationException";
  }
}

Json bedrock_error_body(std::string_view message) { return {{"message", std::string(message)}}; }

}  // namespace wire
}  // namespace modelux
