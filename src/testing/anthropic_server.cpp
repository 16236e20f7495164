// Anthropic Messages, server side: what api.anthropic.com accepts and answers. The mock
// provider serves this; the round-trip tests run the client codec against it.
#include "testing/server_codecs.hpp"

namespace modelux::wire {
namespace {

ContentPart text_part(std::string t, Json cache_control = nullptr) {
  ContentPart p;
  p.text = std::move(t);
  p.cache_control = std::move(cache_control);
  return p;
}

Result<ContentPart> part_from_block(const Json& b, const std::string& path) {
  std::string type = jstr(b, "type");
  Json cc = b.contains("cache_control") ? b["cache_control"] : Json(nullptr);
  if (type == "text") return text_part(jstr(b, "text"), cc);
  if (type == "image" || type == "document") {
    const Json* src = jobj(b, "source");
    if (!src) return fail(ErrorKind::bad_request, type + " block without source", path + ".source");
    ContentPart p;
    p.type = ContentPart::Type::image_url;
    std::string st = jstr(*src, "type");
    if (st == "base64") p.url = make_data_uri(jstr(*src, "media_type"), jstr(*src, "data"));
    else if (st == "url") p.url = jstr(*src, "url");
    else return fail(ErrorKind::bad_request, "unsupported source type '" + st + "'", path + ".source.type");
    p.cache_control = cc;
    return p;
  }
  return fail(ErrorKind::bad_request, "unsupported content block type '" + type + "'", path + ".type");
}

}  // namespace

Result<ChatRequest> anthropic_request_from_native(const Json& j) {
  ChatRequest r;
  r.model = jstr(j, "model");
  if (r.model.empty()) return fail(ErrorKind::bad_request, "model: field required", "model");
  if (!j.contains("max_tokens") || !j["max_tokens"].is_number_integer())
    return fail(ErrorKind::bad_request, "max_tokens: field required", "max_tokens");
  r.max_tokens = jint(j, "max_tokens");
  if (j.contains("temperature") && j["temperature"].is_number()) r.temperature = j["temperature"].get<double>();
  if (j.contains("top_p") && j["top_p"].is_number()) r.top_p = j["top_p"].get<double>();
  // What current Claude models answer to both (the older ones took both).
  if (r.temperature && r.top_p)
    return fail(ErrorKind::bad_request,
                "`temperature` and `top_p` cannot both be specified for this model. Please use only one.", "top_p");
  if (const Json* s = jarr(j, "stop_sequences"))
    for (const auto& x : *s)
      if (x.is_string()) r.stop.push_back(x.get<std::string>());
  r.stream = jbool(j, "stream");
  if (const Json* md = jobj(j, "metadata")) r.user = jstr(*md, "user_id");
  if (j.contains("top_k")) r.extra["top_k"] = j["top_k"];

  if (j.contains("system")) {
    Message sys;
    sys.role = "system";
    if (j["system"].is_string()) {
      sys.content.push_back(text_part(j["system"].get<std::string>()));
    } else if (j["system"].is_array()) {
      sys.content_is_string = false;
      for (std::size_t i = 0; i < j["system"].size(); ++i) {
        auto p = part_from_block(j["system"][i], "system[" + std::to_string(i) + "]");
        if (!p) return fail(p.error());
        sys.content.push_back(std::move(*p));
      }
    }
    r.messages.push_back(std::move(sys));
  }
  const Json* msgs = jarr(j, "messages");
  if (!msgs || msgs->empty()) return fail(ErrorKind::bad_request, "messages: at least one message is required", "messages");
  for (std::size_t i = 0; i < msgs->size(); ++i) {
    const Json& m = (*msgs)[i];
    std::string path = "messages[" + std::to_string(i) + "]";
    std::string role = jstr(m, "role");
    if (role != "user" && role != "assistant")
      return fail(ErrorKind::bad_request, "messages: roles must be user or assistant", path + ".role");
    if (m.contains("content") && m["content"].is_string()) {
      Message u;
      u.role = role;
      u.content.push_back(text_part(m["content"].get<std::string>()));
      r.messages.push_back(std::move(u));
      continue;
    }
    const Json* blocks = jarr(m, "content");
    if (!blocks) return fail(ErrorKind::bad_request, "content must be a string or an array", path + ".content");
    Message cur;
    cur.role = role;
    cur.content_is_string = false;
    for (std::size_t k = 0; k < blocks->size(); ++k) {
      const Json& b = (*blocks)[k];
      std::string bpath = path + ".content[" + std::to_string(k) + "]";
      std::string type = jstr(b, "type");
      if (type == "tool_use") {
        if (role != "assistant") return fail(ErrorKind::bad_request, "tool_use blocks belong to assistant turns", bpath);
        const Json& input = b.contains("input") ? b["input"] : Json::object();
        cur.tool_calls.push_back(ToolCall{jstr(b, "id"), jstr(b, "name"), input.dump()});
      } else if (type == "tool_result") {
        Message t;
        t.role = "tool";
        t.tool_call_id = jstr(b, "tool_use_id");
        if (b.contains("content") && b["content"].is_array()) {
          t.content_is_string = false;
          for (std::size_t q = 0; q < b["content"].size(); ++q) {
            auto p = part_from_block(b["content"][q], bpath + ".content[" + std::to_string(q) + "]");
            if (!p) return fail(p.error());
            t.content.push_back(std::move(*p));
          }
        } else {
          t.content.push_back(text_part(jstr(b, "content")));
        }
        r.messages.push_back(std::move(t));
      } else if (type == "thinking" || type == "redacted_thinking") {
        continue;
      } else {
        auto p = part_from_block(b, bpath);
        if (!p) return fail(p.error());
        cur.content.push_back(std::move(*p));
      }
    }
    if (!cur.content.empty() || !cur.tool_calls.empty()) {
      if (cur.content.empty()) cur.content_null = true;
      r.messages.push_back(std::move(cur));
    }
  }
  if (const Json* tools = jarr(j, "tools")) {
    for (const auto& t : *tools) {
      Tool tool;
      tool.name = jstr(t, "name");
      tool.description = jstr(t, "description");
      tool.parameters = t.contains("input_schema") ? t["input_schema"] : Json::object();
      if (t.contains("cache_control")) tool.cache_control = t["cache_control"];
      r.tools.push_back(std::move(tool));
    }
  }
  if (const Json* tc = jobj(j, "tool_choice")) {
    std::string type = jstr(*tc, "type");
    if (type == "auto") r.tool_choice = "auto";
    else if (type == "any") r.tool_choice = "required";
    else if (type == "none") r.tool_choice = "none";
    else if (type == "tool") r.tool_choice = {{"type", "function"}, {"function", {{"name", jstr(*tc, "name")}}}};
    if (tc->value("disable_parallel_tool_use", false) == true) r.parallel_tool_calls = false;
  }
  return r;
}

Json anthropic_response_to_native(const ChatResponse& r) {
  Json content = Json::array();
  std::string finish = "stop";
  if (!r.choices.empty()) {
    const Choice& c = r.choices.front();
    finish = c.finish_reason;
    std::string text = c.message.text();
    if (!text.empty()) content.push_back({{"type", "text"}, {"text", text}});
    for (const auto& tc : c.message.tool_calls) {
      auto input = parse_json(tc.arguments);
      content.push_back({{"type", "tool_use"},
                         {"id", tc.id},
                         {"name", tc.name},
                         {"input", input && input->is_object() ? *input : Json::object()}});
    }
  }
  const Usage& u = r.usage;
  return {{"id", r.id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", r.model},
          {"content", std::move(content)},
          {"stop_reason", std::string(stop_reason_from_finish(finish))},
          {"stop_sequence", nullptr},
          {"usage",
           {{"input_tokens", u.prompt_tokens - u.cached_tokens - u.cache_write_tokens},
            {"output_tokens", u.completion_tokens},
            {"cache_creation_input_tokens", u.cache_write_tokens},
            {"cache_read_input_tokens", u.cached_tokens}}}};
}

std::vector<std::string> anthropic_stream_events(const ChatResponse& r, int chunks) {
  std::vector<std::string> out;
  auto emit = [&](std::string_view type, const Json& data) { out.push_back(sse_event(type, data.dump())); };
  const Usage& u = r.usage;
  emit("message_start",
       {{"type", "message_start"},
        {"message",
         {{"id", r.id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", r.model},
          {"content", Json::array()},
          {"stop_reason", nullptr},
          {"stop_sequence", nullptr},
          {"usage",
           {{"input_tokens", u.prompt_tokens - u.cached_tokens - u.cache_write_tokens},
            {"output_tokens", 1},
            {"cache_creation_input_tokens", u.cache_write_tokens},
            {"cache_read_input_tokens", u.cached_tokens}}}}}});
  std::string finish = "stop";
  int index = 0;
  if (!r.choices.empty()) {
    const Choice& c = r.choices.front();
    finish = c.finish_reason;
    std::string text = c.message.text();
    if (!text.empty()) {
      emit("content_block_start", {{"type", "content_block_start"}, {"index", index}, {"content_block", {{"type", "text"}, {"text", ""}}}});
      emit("ping", {{"type", "ping"}});
      for (auto& piece : split_text(text, chunks))
        emit("content_block_delta",
             {{"type", "content_block_delta"}, {"index", index}, {"delta", {{"type", "text_delta"}, {"text", piece}}}});
      emit("content_block_stop", {{"type", "content_block_stop"}, {"index", index}});
      ++index;
    }
    for (const auto& tc : c.message.tool_calls) {
      emit("content_block_start",
           {{"type", "content_block_start"},
            {"index", index},
            {"content_block", {{"type", "tool_use"}, {"id", tc.id}, {"name", tc.name}, {"input", Json::object()}}}});
      auto input = parse_json(tc.arguments);
      std::string args = input && input->is_object() ? input->dump() : "{}";
      for (auto& piece : split_text(args, chunks))
        emit("content_block_delta", {{"type", "content_block_delta"},
                                     {"index", index},
                                     {"delta", {{"type", "input_json_delta"}, {"partial_json", piece}}}});
      emit("content_block_stop", {{"type", "content_block_stop"}, {"index", index}});
      ++index;
    }
  }
  emit("message_delta", {{"type", "message_delta"},
                         {"delta", {{"stop_reason", std::string(stop_reason_from_finish(finish))}, {"stop_sequence", nullptr}}},
                         {"usage", {{"output_tokens", u.completion_tokens}}}});
  emit("message_stop", {{"type", "message_stop"}});
  return out;
}

std::string_view anthropic_error_type(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 504: return "timeout_error";
    case 503:
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

Json anthropic_error_body(int status, std::string_view message) {
  return {{"type", "error"},
          {"error", {{"type", std::string(anthropic_error_type(status))}, {"message", std::string(message)}}},
          {"request_id", "req_mock"}};
}

}  // namespace modelux::wire
