// Anthropic Messages, server side: what api.anthropic.com accepts and answers (see the header).
#include "wire/anthropic_messages.hpp"

#include "wire/codecs.hpp"

namespace modelux::wire {
namespace {

ContentPart text_part(std::string t, Json cache_control = nullptr) {
  ContentPart p;
  p.text = std::move(t);
  p.cache_control = std::move(cache_control);
  return p;
}

Result<ContentPart> part_from_block(const Json& b, const std::string& path) {
  if (!b.is_object()) return fail(ErrorKind::bad_request, "a content block must be an object", path);
  std::string type = jstr(b, "type");
  Json cc = b.contains("cache_control") ? b["cache_control"] : Json(nullptr);
  if (type == "text") {
    if (!b.contains("text") || !b["text"].is_string())
      return fail(ErrorKind::bad_request, "text: a text block needs a string 'text'", path + ".text");
    return text_part(b["text"].get<std::string>(), cc);
  }
  if (type == "image" || type == "document") {
    const Json* src = jobj(b, "source");
    if (!src) return fail(ErrorKind::bad_request, type + " block without source", path + ".source");
    ContentPart p;
    p.type = ContentPart::Type::image_url;
    std::string st = jstr(*src, "type");
    if (st == "base64") {
      if (jstr(*src, "data").empty()) return fail(ErrorKind::bad_request, "a base64 source needs 'data'", path + ".source.data");
      p.url = make_data_uri(jstr(*src, "media_type"), jstr(*src, "data"));
    } else if (st == "url") {
      if (jstr(*src, "url").empty()) return fail(ErrorKind::bad_request, "a url source needs 'url'", path + ".source.url");
      p.url = jstr(*src, "url");
    } else {
      return fail(ErrorKind::bad_request, "unsupported source type '" + st.substr(0, 40) + "' (base64 or url)", path + ".source.type");
    }
    p.cache_control = cc;
    return p;
  }
  return fail(ErrorKind::bad_request, "unsupported content block type '" + type.substr(0, 40) + "'", path + ".type");
}

}  // namespace

Result<ChatRequest> anthropic_request_from_native(const Json& j) {
  if (!j.is_object()) return fail(ErrorKind::bad_request, "the request body must be a JSON object", "");
  ChatRequest r;
  r.model = jstr(j, "model");
  if (r.model.empty()) return fail(ErrorKind::bad_request, "model: field required", "model");
  if (!j.contains("max_tokens") || !j["max_tokens"].is_number_integer())
    return fail(ErrorKind::bad_request, "max_tokens: field required (an integer)", "max_tokens");
  r.max_tokens = jint(j, "max_tokens");
  if (*r.max_tokens < 1) return fail(ErrorKind::bad_request, "max_tokens: must be at least 1", "max_tokens");
  if (j.contains("temperature") && j["temperature"].is_number()) r.temperature = j["temperature"].get<double>();
  if (j.contains("top_p") && j["top_p"].is_number()) r.top_p = j["top_p"].get<double>();
  if (const Json* s = jarr(j, "stop_sequences"))
    for (const auto& x : *s)
      if (x.is_string()) r.stop.push_back(x.get<std::string>());
  r.stream = jbool(j, "stream");
  if (const Json* md = jobj(j, "metadata")) r.user = jstr(*md, "user_id");
  if (j.contains("top_k")) r.extra["top_k"] = j["top_k"];

  if (j.contains("system") && !j["system"].is_null()) {
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
    } else {
      return fail(ErrorKind::bad_request, "system: must be a string or an array of text blocks", "system");
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
        if (jstr(b, "id").empty() || jstr(b, "name").empty())
          return fail(ErrorKind::bad_request, "a tool_use block needs 'id' and 'name'", bpath);
        const Json& input = b.contains("input") ? b["input"] : Json::object();
        cur.tool_calls.push_back(ToolCall{jstr(b, "id"), jstr(b, "name"), input.dump()});
      } else if (type == "tool_result") {
        if (jstr(b, "tool_use_id").empty()) return fail(ErrorKind::bad_request, "a tool_result block needs 'tool_use_id'", bpath);
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
  if (j.contains("tools") && !j["tools"].is_null() && !j["tools"].is_array())
    return fail(ErrorKind::bad_request, "tools: must be an array", "tools");
  if (const Json* tools = jarr(j, "tools")) {
    for (std::size_t i = 0; i < tools->size(); ++i) {
      const Json& t = (*tools)[i];
      if (!t.is_object() || jstr(t, "name").empty())
        return fail(ErrorKind::bad_request, "a tool needs a 'name'", "tools[" + std::to_string(i) + "].name");
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
    else return fail(ErrorKind::bad_request, "tool_choice.type must be auto, any, none or tool", "tool_choice.type");
    if (tc->value("disable_parallel_tool_use", false) == true) r.parallel_tool_calls = false;
  }
  return r;
}

Json anthropic_usage(const Usage& u) {
  return {{"input_tokens", std::max<std::int64_t>(0, u.prompt_tokens - u.cached_tokens - u.cache_write_tokens)},
          {"output_tokens", u.completion_tokens},
          {"cache_creation_input_tokens", u.cache_write_tokens},
          {"cache_read_input_tokens", u.cached_tokens}};
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
  return {{"id", r.id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", r.model},
          {"content", std::move(content)},
          {"stop_reason", std::string(stop_reason_from_finish(finish))},
          {"stop_sequence", nullptr},
          {"usage", anthropic_usage(r.usage)}};
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

Json anthropic_error_body(int status, std::string_view message, std::string_view request_id) {
  Json j = {{"type", "error"},
            {"error", {{"type", std::string(anthropic_error_type(status))}, {"message", std::string(message)}}}};
  if (!request_id.empty()) j["request_id"] = std::string(request_id);
  return j;
}

std::string sse_event(std::string_view event, std::string_view data) {
  std::string s;
  s.reserve(event.size() + data.size() + 16);
  if (!event.empty()) {
    s += "event: ";
    s += event;
    s += '\n';
  }
  s += "data: ";
  s += data;
  s += "\n\n";
  return s;
}

// ---- AnthropicStreamEncoder ---------------------------------------------------------------

namespace {
void emit(std::string& out, std::string_view type, const Json& data) {
  out += sse_event(type, data.dump(-1, ' ', false, Json::error_handler_t::replace));
}
}  // namespace

AnthropicStreamEncoder::AnthropicStreamEncoder(std::string id, std::string model, Usage known)
    : id_(std::move(id)), model_(std::move(model)), usage_(known) {}

std::string_view AnthropicStreamEncoder::stop_reason() const noexcept { return stop_reason_from_finish(finish_); }

void AnthropicStreamEncoder::start(std::string& out) {
  if (started_) return;
  started_ = true;
  // Output tokens are unknown until the end; Anthropic itself sends a small placeholder here.
  Usage u = usage_;
  u.completion_tokens = 1;
  emit(out, "message_start",
       {{"type", "message_start"},
        {"message",
         {{"id", id_},
          {"type", "message"},
          {"role", "assistant"},
          {"model", model_},
          {"content", Json::array()},
          {"stop_reason", nullptr},
          {"stop_sequence", nullptr},
          {"usage", anthropic_usage(u)}}}});
  emit(out, "ping", {{"type", "ping"}});
}

void AnthropicStreamEncoder::close_block(std::string& out) {
  if (open_ == Open::none) return;
  emit(out, "content_block_stop", {{"type", "content_block_stop"}, {"index", open_index_}});
  open_ = Open::none;
  open_index_ = -1;
}

void AnthropicStreamEncoder::add(const ChatChunk& c, std::string& out) {
  start(out);
  if (c.usage) usage_ = *c.usage;
  for (const ChunkChoice& ch : c.choices) {
    if (ch.index != 0) continue;  // Anthropic has one answer per message
    if (ch.content && !ch.content->empty()) {
      if (open_ != Open::text) {
        close_block(out);
        open_ = Open::text;
        open_index_ = next_index_++;
        emit(out, "content_block_start",
             {{"type", "content_block_start"}, {"index", open_index_}, {"content_block", {{"type", "text"}, {"text", ""}}}});
      }
      emit(out, "content_block_delta",
           {{"type", "content_block_delta"}, {"index", open_index_}, {"delta", {{"type", "text_delta"}, {"text", *ch.content}}}});
    }
    for (const ToolCallDelta& d : ch.tool_calls) {
      if (d.index < 0 || d.index > 1024) continue;  // not a tool call any client could hold
      const auto ti = static_cast<std::size_t>(d.index);
      if (tool_block_.size() <= ti) tool_block_.resize(ti + 1, -1);
      if (tool_block_[ti] < 0) {
        close_block(out);
        open_ = Open::tool;
        open_index_ = tool_block_[ti] = next_index_++;
        emit(out, "content_block_start",
             {{"type", "content_block_start"},
              {"index", open_index_},
              {"content_block", {{"type", "tool_use"}, {"id", d.id}, {"name", d.name}, {"input", Json::object()}}}});
      }
      if (!d.arguments.empty())
        emit(out, "content_block_delta",
             {{"type", "content_block_delta"},
              {"index", tool_block_[ti]},
              {"delta", {{"type", "input_json_delta"}, {"partial_json", d.arguments}}}});
    }
    if (!ch.finish_reason.empty()) finish_ = ch.finish_reason;
  }
}

void AnthropicStreamEncoder::finish(std::string& out) {
  start(out);
  close_block(out);
  // Usage here is cumulative (as Anthropic's own message_delta): the SDKs take input and
  // cache counts from it when message_start could not know them yet.
  emit(out, "message_delta",
       {{"type", "message_delta"},
        {"delta", {{"stop_reason", std::string(stop_reason())}, {"stop_sequence", nullptr}}},
        {"usage", anthropic_usage(usage_)}});
  emit(out, "message_stop", {{"type", "message_stop"}});
}

}  // namespace modelux::wire
