// Anthropic Messages codec (client side): unified request -> POST /v1/messages; native
// response, stream events and errors -> unified.
//
// Mapping choices (see docs/providers.md):
//   * system/developer messages become the top-level `system` blocks, in order.
//   * tool messages become `tool_result` blocks in a user turn; consecutive same-role turns are
//     merged, because the API wants alternating roles.
//   * response_format json_object/json_schema becomes a forced tool named kJsonTool whose input
//     schema is the schema; the decoders turn that tool's input back into message content.
//   * prompt_tokens = input + cache_creation + cache_read (OpenAI semantics).
#include <algorithm>
#include <unordered_map>

#include "wire/codecs.hpp"

namespace modelux {
namespace {

using namespace wire;
constexpr std::string_view kFamily = "anthropic";

// OpenAI-only request fields with no Anthropic equivalent: refusing beats silently ignoring.
constexpr std::string_view kUnsupportedExtras[] = {
    "logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "audio",
    "modalities", "prediction", "web_search_options", "reasoning_effort", "verbosity",
};
// Anthropic-native fields a caller may put in the request; passed through untouched.
constexpr std::string_view kPassthroughExtras[] = {
    "top_k", "thinking", "service_tier", "container", "mcp_servers", "context_management",
};
// Hints that do not change the answer; accepted and not forwarded.
constexpr std::string_view kIgnorableExtras[] = {
    "store", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "stream_options",
};

bool is_null_or_false(const Json& v) { return v.is_null() || (v.is_boolean() && !v.get<bool>()); }

Result<Json> content_block(const ContentPart& p, const std::string& path) {
  Json b;
  switch (p.type) {
    case ContentPart::Type::text:
      b = {{"type", "text"}, {"text", p.text}};
      break;
    case ContentPart::Type::image_url: {
      if (auto d = parse_data_uri(p.url)) {
        std::string type = d->mime == "application/pdf" ? "document" : "image";
        b = {{"type", type}, {"source", {{"type", "base64"}, {"media_type", d->mime}, {"data", d->data}}}};
      } else if (p.url.starts_with("http://") || p.url.starts_with("https://")) {
        b = {{"type", "image"}, {"source", {{"type", "url"}, {"url", p.url}}}};
      } else {
        return fail(ErrorKind::bad_request, "image_url must be an http(s) URL or a base64 data URI", path + ".image_url.url");
      }
      break;
    }
    case ContentPart::Type::input_audio: return unsupported_field(kFamily, path + ".input_audio");
    case ContentPart::Type::file: {
      // A file given inline as a PDF data URI maps to a document block; file ids do not.
      const Json* f = p.data.is_object() ? &p.data : nullptr;
      std::string data = f ? jstr(*f, "file_data") : "";
      auto d = parse_data_uri(data);
      if (!d) return unsupported_field(kFamily, path + ".file", "only inline file_data data URIs are supported");
      b = {{"type", "document"}, {"source", {{"type", "base64"}, {"media_type", d->mime}, {"data", d->data}}}};
      break;
    }
  }
  if (!p.cache_control.is_null()) b["cache_control"] = p.cache_control;
  return b;
}

class AnthropicStreamDecoder final : public StreamDecoder {
 public:
  Result<void> feed(std::string_view bytes, std::vector<ChatChunk>& out) override {
    events_.clear();
    if (auto r = sse_.feed(bytes, events_); !r) return r;
    for (auto& ev : events_) {
      if (done_) break;
      if (auto r = on_event(ev, out); !r) return r;
    }
    return {};
  }
  Result<void> finish(std::vector<ChatChunk>&) override {
    if (!done_) return fail(ErrorKind::stream_interrupted, "anthropic stream ended before message_stop");
    return {};
  }
  bool done() const noexcept override { return done_; }

 private:
  static constexpr std::size_t kMaxBlocks = 4096;

  ChatChunk chunk() const {
    ChatChunk c;
    c.id = id_;
    c.model = model_;
    return c;
  }
  void emit(std::vector<ChatChunk>& out, ChunkChoice cc) const {
    ChatChunk c = chunk();
    c.choices.push_back(std::move(cc));
    out.push_back(std::move(c));
  }

  Result<void> on_event(const SseEvent& ev, std::vector<ChatChunk>& out) {
    if (ev.data.empty()) return {};
    auto j = parse_json(ev.data);
    if (!j || !j->is_object()) return malformed(kFamily, "stream event is not a JSON object");
    std::string type = jstr(*j, "type", ev.event);
    if (type == "error") {
      const Json* err = jobj(*j, "error");
      std::string etype = err ? jstr(*err, "type") : "";
      Error e = anthropic_error_from(etype, err ? jstr(*err, "message", "stream error") : "stream error", 0, {});
      e.message = "anthropic stream error: " + e.message;
      return fail(std::move(e));
    }
    if (type == "message_start") {
      const Json* m = jobj(*j, "message");
      if (!m) return malformed(kFamily, "message_start without message");
      id_ = jstr(*m, "id");
      model_ = jstr(*m, "model");
      if (const Json* u = jobj(*m, "usage")) merge_usage(*u);
      ChunkChoice cc;
      cc.role = "assistant";
      cc.content = std::string{};
      emit(out, std::move(cc));
      return {};
    }
    if (type == "content_block_start") {
      auto index = jint(*j, "index", -1);
      const Json* b = jobj(*j, "content_block");
      if (!b || index < 0) return malformed(kFamily, "content_block_start without index or content_block");
      if (blocks_.size() >= kMaxBlocks) return malformed(kFamily, "too many content blocks");
      std::string btype = jstr(*b, "type");
      Block& blk = blocks_[index];
      if (btype == "tool_use") {
        std::string name = jstr(*b, "name");
        if (name == kJsonTool) {
          blk.kind = Block::json_tool;
          json_mode_ = true;
          return {};
        }
        blk.kind = Block::tool;
        blk.tool_index = next_tool_++;
        ChunkChoice cc;
        cc.tool_calls.push_back(ToolCallDelta{blk.tool_index, jstr(*b, "id"), name, ""});
        emit(out, std::move(cc));
      } else if (btype == "text") {
        blk.kind = Block::text;
        std::string t = jstr(*b, "text");
        if (!t.empty()) {
          ChunkChoice cc;
          cc.content = std::move(t);
          emit(out, std::move(cc));
        }
      }
      return {};
    }
    if (type == "content_block_delta") {
      auto index = jint(*j, "index", -1);
      const Json* d = jobj(*j, "delta");
      if (!d) return malformed(kFamily, "content_block_delta without delta");
      auto it = blocks_.find(index);
      std::string dtype = jstr(*d, "type");
      if (dtype == "text_delta") {
        ChunkChoice cc;
        cc.content = jstr(*d, "text");
        emit(out, std::move(cc));
      } else if (dtype == "input_json_delta") {
        if (it == blocks_.end()) return malformed(kFamily, "input_json_delta for an unknown block");
        ChunkChoice cc;
        if (it->second.kind == Block::json_tool) {
          cc.content = jstr(*d, "partial_json");
        } else {
          cc.tool_calls.push_back(ToolCallDelta{it->second.tool_index, "", "", jstr(*d, "partial_json")});
        }
        emit(out, std::move(cc));
      }
      return {};  // thinking/signature/citations deltas have no unified form
    }
    if (type == "message_delta") {
      if (const Json* u = jobj(*j, "usage")) merge_usage(*u);
      const Json* d = jobj(*j, "delta");
      std::string stop = d ? jstr(*d, "stop_reason") : "";
      if (!stop.empty()) {
        ChunkChoice cc;
        cc.finish_reason = std::string(finish_from_stop_reason(stop));
        if (json_mode_ && cc.finish_reason == "tool_calls" && next_tool_ == 0) cc.finish_reason = "stop";
        emit(out, std::move(cc));
      }
      return {};
    }
    if (type == "message_stop") {
      ChatChunk c = chunk();
      c.usage = usage_;
      out.push_back(std::move(c));
      done_ = true;
      return {};
    }
    return {};  // ping, content_block_stop, and event types added later
  }

  void merge_usage(const Json& u) {
    // message_delta usage is cumulative: assign, never add.
    if (u.contains("input_tokens") && u["input_tokens"].is_number()) input_ = jint(u, "input_tokens");
    if (u.contains("cache_read_input_tokens") && u["cache_read_input_tokens"].is_number())
      cache_read_ = jint(u, "cache_read_input_tokens");
    if (u.contains("cache_creation_input_tokens") && u["cache_creation_input_tokens"].is_number())
      cache_write_ = jint(u, "cache_creation_input_tokens");
    if (u.contains("output_tokens") && u["output_tokens"].is_number()) usage_.completion_tokens = jint(u, "output_tokens");
    usage_.prompt_tokens = input_ + cache_read_ + cache_write_;
    usage_.cached_tokens = cache_read_;
    usage_.cache_write_tokens = cache_write_;
  }

  struct Block {
    enum Kind { other, text, tool, json_tool } kind = other;
    int tool_index = 0;
  };
  SseParser sse_;
  std::vector<SseEvent> events_;
  std::unordered_map<std::int64_t, Block> blocks_;
  std::string id_, model_;
  Usage usage_;
  std::int64_t input_ = 0, cache_read_ = 0, cache_write_ = 0;
  int next_tool_ = 0;
  bool json_mode_ = false;
  bool done_ = false;
};

class AnthropicCodec final : public Codec {
 public:
  std::string_view family() const noexcept override { return kFamily; }

  Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                         std::string_view upstream_model) const override {
    auto body = encode_body(req, ep, upstream_model);
    if (!body) return fail(body.error());
    HttpRequestSpec spec;
    std::string base = ep.base_url.empty() ? "https://api.anthropic.com" : ep.base_url;
    spec.url = join_url(base, base.ends_with("/v1") ? "/messages" : "/v1/messages");
    spec.headers.emplace_back("content-type", "application/json");
    if (!ep.api_key.empty()) spec.headers.emplace_back("x-api-key", ep.api_key);
    auto ver = ep.options.find("anthropic_version");
    spec.headers.emplace_back("anthropic-version", ver != ep.options.end() ? ver->second : "2023-06-01");
    if (auto beta = ep.options.find("anthropic_beta"); beta != ep.options.end() && !beta->second.empty())
      spec.headers.emplace_back("anthropic-beta", beta->second);
    spec.body = body->dump(-1, ' ', false, Json::error_handler_t::replace);
    return spec;
  }

  Result<ChatResponse> decode_response(std::string_view body) const override {
    auto j = parse_json(body);
    if (!j || !j->is_object()) return malformed(kFamily, "response is not a JSON object");
    return anthropic_response_from_native(*j);
  }

  Error decode_error(int status, const Headers& headers, std::string_view body) const override {
    std::string message = "HTTP " + std::to_string(status);
    std::string type;
    if (auto j = parse_json(body); j && j->is_object()) {
      if (const Json* err = jobj(*j, "error")) {
        type = jstr(*err, "type");
        message = jstr(*err, "message", message);
      }
    } else if (!body.empty()) {
      message += ": " + std::string(body.substr(0, 200));
    }
    return anthropic_error_from(type, std::move(message), status, headers);
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override { return std::make_unique<AnthropicStreamDecoder>(); }

 private:
  static Result<Json> encode_body(const ChatRequest& req, const ProviderEndpoint& ep, std::string_view model) {
    Json body = Json::object();
    body["model"] = std::string(model);
    if (req.n && *req.n != 1) return unsupported_field(kFamily, "n", "one choice per request only");
    if (req.seed) return unsupported_field(kFamily, "seed");
    if (req.temperature) {
      if (*req.temperature > 1.0) return unsupported_field(kFamily, "temperature", "the range is 0..1");
      body["temperature"] = *req.temperature;
    }
    if (req.top_p) {
      // Current Claude models refuse temperature and top_p together ("temperature and top_p
      // cannot both be specified"); top_p = 1 samples from everything, so it can be left out.
      if (req.temperature && *req.top_p < 1.0)
        return unsupported_field(kFamily, "top_p", "Anthropic takes temperature or top_p, not both");
      if (!req.temperature) body["top_p"] = *req.top_p;
    }
    std::int64_t max_tokens = 4096;
    if (auto d = ep.options.find("default_max_tokens"); d != ep.options.end()) {
      try {
        max_tokens = std::stoll(d->second);
      } catch (...) {
      }
    }
    body["max_tokens"] = req.max_tokens.value_or(max_tokens);
    if (!req.stop.empty()) {
      Json stops = Json::array();
      for (std::size_t i = 0; i < req.stop.size(); ++i) {
        if (req.stop[i].find_first_not_of(" \t\r\n") == std::string::npos)
          return unsupported_field(kFamily, "stop[" + std::to_string(i) + "]", "whitespace-only stop sequences are rejected");
        stops.push_back(req.stop[i]);
      }
      body["stop_sequences"] = std::move(stops);
    }
    if (req.stream) body["stream"] = true;
    if (!req.user.empty()) body["metadata"] = {{"user_id", req.user}};

    // extra fields: forward Anthropic-native ones, refuse OpenAI-only ones.
    if (req.extra.is_object()) {
      for (auto it = req.extra.begin(); it != req.extra.end(); ++it) {
        const std::string& k = it.key();
        if (std::ranges::find(kPassthroughExtras, k) != std::end(kPassthroughExtras)) {
          body[k] = it.value();
        } else if (std::ranges::find(kIgnorableExtras, k) != std::end(kIgnorableExtras)) {
          continue;
        } else if (std::ranges::find(kUnsupportedExtras, k) != std::end(kUnsupportedExtras)) {
          if (!is_null_or_false(it.value())) return unsupported_field(kFamily, k);
        } else if (!it.value().is_null()) {
          return unsupported_field(kFamily, k, "unknown field");
        }
      }
    }

    // system + messages
    Json system = Json::array();
    Json messages = Json::array();
    auto append = [&](const std::string& role, Json blocks) {
      if (!messages.empty() && messages.back()["role"] == role) {
        auto& content = messages.back()["content"];
        // tool_result blocks must come first in a user turn
        for (auto& b : blocks) content.push_back(std::move(b));
      } else {
        messages.push_back({{"role", role}, {"content", std::move(blocks)}});
      }
    };
    for (std::size_t i = 0; i < req.messages.size(); ++i) {
      const Message& m = req.messages[i];
      std::string path = "messages[" + std::to_string(i) + "]";
      if (m.role == "system" || m.role == "developer") {
        for (const auto& p : m.content) {
          if (p.type != ContentPart::Type::text) return unsupported_field(kFamily, path + ".content", "system content must be text");
          Json b = {{"type", "text"}, {"text", p.text}};
          if (!p.cache_control.is_null()) b["cache_control"] = p.cache_control;
          system.push_back(std::move(b));
        }
        continue;
      }
      Json blocks = Json::array();
      if (m.role == "tool") {
        Json result = {{"type", "tool_result"}, {"tool_use_id", m.tool_call_id}};
        if (m.content_is_string || m.content.empty()) {
          result["content"] = m.text();
        } else {
          Json parts = Json::array();
          for (std::size_t k = 0; k < m.content.size(); ++k) {
            auto b = content_block(m.content[k], path + ".content[" + std::to_string(k) + "]");
            if (!b) return fail(b.error());
            parts.push_back(std::move(*b));
          }
          result["content"] = std::move(parts);
        }
        blocks.push_back(std::move(result));
        append("user", std::move(blocks));
        continue;
      }
      if (m.role != "user" && m.role != "assistant")
        return fail(ErrorKind::bad_request, "unknown message role '" + m.role + "'", path + ".role");
      for (std::size_t k = 0; k < m.content.size(); ++k) {
        const auto& p = m.content[k];
        if (p.type == ContentPart::Type::text && p.text.empty() && p.cache_control.is_null()) continue;
        auto b = content_block(p, path + ".content[" + std::to_string(k) + "]");
        if (!b) return fail(b.error());
        blocks.push_back(std::move(*b));
      }
      if (m.role == "assistant") {
        for (std::size_t k = 0; k < m.tool_calls.size(); ++k) {
          const auto& tc = m.tool_calls[k];
          auto input = arguments_object(tc.arguments, path + ".tool_calls[" + std::to_string(k) + "].function.arguments");
          if (!input) return fail(input.error());
          blocks.push_back({{"type", "tool_use"}, {"id", tc.id}, {"name", tc.name}, {"input", std::move(*input)}});
        }
      }
      if (blocks.empty()) continue;  // an empty assistant turn carries nothing
      append(m.role, std::move(blocks));
    }
    if (!system.empty()) body["system"] = std::move(system);
    if (messages.empty()) return fail(ErrorKind::bad_request, "anthropic needs at least one user or assistant message", "messages");
    body["messages"] = std::move(messages);

    // tools, tool_choice, response_format
    Json tools = Json::array();
    for (const auto& t : req.tools) {
      Json tj = {{"name", t.name}};
      if (!t.description.empty()) tj["description"] = t.description;
      tj["input_schema"] = t.parameters.is_object() ? t.parameters : Json{{"type", "object"}, {"properties", Json::object()}};
      if (!t.cache_control.is_null()) tj["cache_control"] = t.cache_control;
      tools.push_back(std::move(tj));
    }
    Json choice;
    if (req.tool_choice.is_string()) {
      auto c = req.tool_choice.get<std::string>();
      if (c == "auto") choice = {{"type", "auto"}};
      else if (c == "required") choice = {{"type", "any"}};
      else if (c == "none") choice = {{"type", "none"}};
      else return fail(ErrorKind::bad_request, "unknown tool_choice '" + c + "'", "tool_choice");
    } else if (req.tool_choice.is_object()) {
      const Json* f = jobj(req.tool_choice, "function");
      std::string name = f ? jstr(*f, "name") : "";
      if (name.empty()) return fail(ErrorKind::bad_request, "tool_choice.function.name is required", "tool_choice.function.name");
      choice = {{"type", "tool"}, {"name", name}};
    }
    if (req.response_format.is_object()) {
      std::string rf = jstr(req.response_format, "type");
      if (rf == "json_object" || rf == "json_schema") {
        if (!req.tools.empty())
          return unsupported_field(kFamily, "response_format", "JSON mode cannot be combined with tools on Anthropic");
        Json schema = {{"type", "object"}};
        if (rf == "json_schema") {
          const Json* js = jobj(req.response_format, "json_schema");
          const Json* s = js ? jobj(*js, "schema") : nullptr;
          if (s) schema = *s;
        }
        tools.push_back({{"name", kJsonTool}, {"description", "Respond with the JSON object that answers the request."},
                         {"input_schema", schema}});
        choice = {{"type", "tool"}, {"name", kJsonTool}};
      } else if (rf != "text" && !rf.empty()) {
        return unsupported_field(kFamily, "response_format.type", rf);
      }
    }
    if (req.parallel_tool_calls && !*req.parallel_tool_calls) {
      if (choice.is_null()) choice = {{"type", "auto"}};
      if (choice["type"] != "none") choice["disable_parallel_tool_use"] = true;
    }
    if (!tools.empty()) body["tools"] = std::move(tools);
    if (!choice.is_null()) body["tool_choice"] = std::move(choice);
    return body;
  }
};

}  // namespace

namespace wire {

std::string_view finish_from_stop_reason(std::string_view stop) {
  if (stop == "max_tokens" || stop == "model_context_window_exceeded") return "length";
  if (stop == "tool_use") return "tool_calls";
  if (stop == "refusal") return "content_filter";
  return "stop";  // end_turn, stop_sequence, pause_turn, anything new
}

std::string_view stop_reason_from_finish(std::string_view finish) {
  if (finish == "length") return "max_tokens";
  if (finish == "tool_calls" || finish == "function_call") return "tool_use";
  if (finish == "content_filter") return "refusal";
  return "end_turn";
}

Error anthropic_error_from(std::string_view type, std::string message, int status, const Headers& headers) {
  Error e = provider_error(kFamily, status, headers, std::move(message), std::string(type));
  if (type == "overloaded_error") e.kind = ErrorKind::overloaded;
  else if (type == "rate_limit_error") e.kind = ErrorKind::rate_limited;
  else if (type == "authentication_error" || type == "permission_error") e.kind = ErrorKind::auth;
  else if (type == "not_found_error") e.kind = ErrorKind::not_found;
  else if (type == "billing_error") e.kind = ErrorKind::quota_exceeded;
  else if (type == "api_error") e.kind = ErrorKind::server_error;
  else if (type == "timeout_error") e.kind = ErrorKind::timeout;
  else if (type == "request_too_large") e.kind = ErrorKind::bad_request;
  else if (type == "invalid_request_error")
    e.kind = looks_like_context_length("", e.message) ? ErrorKind::context_length : ErrorKind::bad_request;
  if (!e.retry_after && (e.kind == ErrorKind::rate_limited || e.kind == ErrorKind::overloaded))
    e.retry_after = anthropic_reset_delay(headers);
  return e;
}

Result<ChatResponse> anthropic_response_from_native(const Json& j) {
  ChatResponse r;
  r.id = jstr(j, "id");
  r.model = jstr(j, "model");
  Choice c;
  c.message.role = "assistant";
  std::string text;
  bool any_text = false;
  const Json* content = jarr(j, "content");
  if (!content) return malformed(kFamily, "response has no content array");
  bool json_tool = false;
  for (const auto& b : *content) {
    std::string type = jstr(b, "type");
    if (type == "text") {
      text += jstr(b, "text");
      any_text = true;
    } else if (type == "tool_use") {
      const Json& input = b.contains("input") ? b["input"] : Json::object();
      if (jstr(b, "name") == kJsonTool) {
        text += input.dump();
        any_text = true;
        json_tool = true;
        continue;
      }
      c.message.tool_calls.push_back(ToolCall{jstr(b, "id"), jstr(b, "name"), input.dump()});
    }
  }
  if (any_text) c.message.content.push_back(ContentPart{.type = ContentPart::Type::text, .text = std::move(text), .url = {}, .detail = {}, .data = {}, .cache_control = {}});
  else c.message.content_null = true;
  c.finish_reason = std::string(finish_from_stop_reason(jstr(j, "stop_reason", "end_turn")));
  if (json_tool && c.message.tool_calls.empty()) c.finish_reason = "stop";
  r.choices.push_back(std::move(c));
  if (const Json* u = jobj(j, "usage")) {
    auto in = jint(*u, "input_tokens"), read = jint(*u, "cache_read_input_tokens"),
         write = jint(*u, "cache_creation_input_tokens");
    r.usage.prompt_tokens = in + read + write;
    r.usage.cached_tokens = read;
    r.usage.cache_write_tokens = write;
    r.usage.completion_tokens = jint(*u, "output_tokens");
  }
  return r;
}

}  // namespace wire

const Codec& anthropic_codec() {
  static const AnthropicCodec c;
  return c;
}

}  // namespace modelux
