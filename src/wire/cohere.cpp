// Cohere v2 chat (POST /v2/chat), both sides. The v2 API is close to OpenAI's: roles
// system/user/assistant/tool, OpenAI-shaped tools and tool calls; differences are the response
// envelope (message.content blocks, finish_reason COMPLETE/MAX_TOKENS/TOOL_CALL...), usage
// (usage.tokens / billed_units) and the stream's typed events (message-start, content-delta,
// tool-call-start/delta/end, message-end).
#include <algorithm>

#include "wire/codecs.hpp"

namespace modelux {
namespace {

using namespace wire;
constexpr std::string_view kFamily = "cohere";
constexpr std::string_view kIgnorableExtras[] = {"store", "prompt_cache_key", "prompt_cache_retention",
                                                 "safety_identifier", "stream_options"};

Result<std::string_view> finish_from_cohere(std::string_view r) {
  if (r == "MAX_TOKENS") return "length";
  if (r == "TOOL_CALL") return "tool_calls";
  if (r == "ERROR_TOXIC") return "content_filter";
  if (r == "ERROR") {
    Error e;
    e.kind = ErrorKind::server_error;
    e.message = "cohere: generation ended with finish_reason ERROR";
    e.provider = std::string(kFamily);
    return std::unexpected<Error>(std::move(e));
  }
  return "stop";  // COMPLETE, STOP_SEQUENCE
}


Usage usage_from_cohere(const Json& u) {
  Usage out;
  const Json* t = jobj(u, "tokens");
  if (!t) t = jobj(u, "billed_units");
  if (t) {
    out.prompt_tokens = jint(*t, "input_tokens");
    out.completion_tokens = jint(*t, "output_tokens");
  }
  out.cached_tokens = jint(u, "cached_tokens");
  return out;
}


Result<Json> content_json(const Message& m, const std::string& path) {
  if (m.content_is_string) return Json(m.text());
  Json arr = Json::array();
  for (std::size_t k = 0; k < m.content.size(); ++k) {
    const auto& p = m.content[k];
    if (p.type == ContentPart::Type::text) arr.push_back({{"type", "text"}, {"text", p.text}});
    else if (p.type == ContentPart::Type::image_url && m.role == "user")
      arr.push_back({{"type", "image_url"}, {"image_url", {{"url", p.url}}}});
    else return unsupported_field(kFamily, path + ".content[" + std::to_string(k) + "]", "part type not accepted here");
  }
  return arr;
}

class CohereStreamDecoder final : public StreamDecoder {
 public:
  Result<void> feed(std::string_view bytes, std::vector<ChatChunk>& out) override {
    events_.clear();
    if (auto r = sse_.feed(bytes, events_); !r) return r;
    for (auto& ev : events_) {
      if (done_) break;
      if (ev.data.empty() || ev.data == "[DONE]") continue;
      auto j = parse_json(ev.data);
      if (!j || !j->is_object()) return malformed(kFamily, "stream event is not a JSON object");
      std::string type = jstr(*j, "type", ev.event);
      const Json* delta = jobj(*j, "delta");
      const Json* msg = delta ? jobj(*delta, "message") : nullptr;
      if (type == "message-start") {
        id_ = jstr(*j, "id");
        ChunkChoice cc;
        cc.role = "assistant";
        cc.content = std::string{};
        emit(out, std::move(cc));
      } else if (type == "content-delta") {
        const Json* content = msg ? jobj(*msg, "content") : nullptr;
        ChunkChoice cc;
        cc.content = content ? jstr(*content, "text") : "";
        emit(out, std::move(cc));
      } else if (type == "tool-call-start" || type == "tool-call-delta") {
        const Json* tc = msg ? jobj(*msg, "tool_calls") : nullptr;
        if (!tc) return malformed(kFamily, type + " without delta.message.tool_calls");
        const Json* fn = jobj(*tc, "function");
        ToolCallDelta d;
        if (type == "tool-call-start") {
          d.index = next_tool_++;
          d.id = jstr(*tc, "id");
          d.name = fn ? jstr(*fn, "name") : "";
        } else {
          d.index = std::max(0, next_tool_ - 1);
        }
        d.arguments = fn ? jstr(*fn, "arguments") : "";
        ChunkChoice cc;
        cc.tool_calls.push_back(std::move(d));
        emit(out, std::move(cc));
      } else if (type == "message-end") {
        std::string fr = delta ? jstr(*delta, "finish_reason", "COMPLETE") : "COMPLETE";
        auto finish = finish_from_cohere(fr);
        if (!finish) return fail(finish.error());
        ChunkChoice cc;
        cc.finish_reason = std::string(*finish);
        emit(out, std::move(cc));
        ChatChunk u;
        u.id = id_;
        u.usage = delta && jobj(*delta, "usage") ? usage_from_cohere(*jobj(*delta, "usage")) : Usage{};
        out.push_back(std::move(u));
        done_ = true;
      }
      // content-start/end, tool-plan-delta, tool-call-end, citation-*: nothing to forward
    }
    return {};
  }
  Result<void> finish(std::vector<ChatChunk>&) override {
    if (!done_) return fail(ErrorKind::stream_interrupted, "cohere stream ended before message-end");
    return {};
  }
  bool done() const noexcept override { return done_; }

 private:
  void emit(std::vector<ChatChunk>& out, ChunkChoice cc) const {
    ChatChunk c;
    c.id = id_;
    c.choices.push_back(std::move(cc));
    out.push_back(std::move(c));
  }
  SseParser sse_;
  std::vector<SseEvent> events_;
  std::string id_;
  int next_tool_ = 0;
  bool done_ = false;
};

class CohereCodec final : public Codec {
 public:
  std::string_view family() const noexcept override { return kFamily; }

  Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                         std::string_view upstream_model) const override {
    Json body = {{"model", std::string(upstream_model)}};
    if (req.n && *req.n != 1) return unsupported_field(kFamily, "n");
    if (req.parallel_tool_calls && !*req.parallel_tool_calls) return unsupported_field(kFamily, "parallel_tool_calls");
    if (req.temperature) body["temperature"] = *req.temperature;
    if (req.top_p) body["p"] = *req.top_p;
    if (req.max_tokens) body["max_tokens"] = *req.max_tokens;
    if (req.seed) body["seed"] = *req.seed;
    if (!req.stop.empty()) body["stop_sequences"] = req.stop;
    if (req.stream) body["stream"] = true;
    if (req.extra.is_object()) {
      for (auto it = req.extra.begin(); it != req.extra.end(); ++it) {
        const std::string& k = it.key();
        if (it.value().is_null()) continue;
        if (k == "frequency_penalty" || k == "presence_penalty" || k == "logprobs" || k == "safety_mode" ||
            k == "strict_tools" || k == "documents" || k == "citation_options")
          body[k] = it.value();
        else if (k == "top_k") body["k"] = it.value();
        else if (std::ranges::find(kIgnorableExtras, k) == std::end(kIgnorableExtras)) return unsupported_field(kFamily, k);
      }
    }
    Json messages = Json::array();
    for (std::size_t i = 0; i < req.messages.size(); ++i) {
      const Message& m = req.messages[i];
      std::string path = "messages[" + std::to_string(i) + "]";
      std::string role = m.role == "developer" ? "system" : m.role;
      if (role != "system" && role != "user" && role != "assistant" && role != "tool")
        return fail(ErrorKind::bad_request, "unknown message role '" + m.role + "'", path + ".role");
      Json jm = {{"role", role}};
      if (!(m.content_null && m.content.empty())) {
        auto c = content_json(m, path);
        if (!c) return fail(c.error());
        jm["content"] = std::move(*c);
      }
      if (role == "tool") jm["tool_call_id"] = m.tool_call_id;
      if (!m.tool_calls.empty()) {
        Json calls = Json::array();
        for (const auto& tc : m.tool_calls)
          calls.push_back({{"id", tc.id}, {"type", "function"}, {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
        jm["tool_calls"] = std::move(calls);
      }
      messages.push_back(std::move(jm));
    }
    body["messages"] = std::move(messages);
    if (!req.tools.empty()) {
      Json tools = Json::array();
      for (const auto& t : req.tools) {
        Json f = {{"name", t.name}, {"parameters", t.parameters.is_object() ? t.parameters : Json::object()}};
        if (!t.description.empty()) f["description"] = t.description;
        tools.push_back({{"type", "function"}, {"function", std::move(f)}});
      }
      body["tools"] = std::move(tools);
    }
    if (req.tool_choice.is_string()) {
      auto c = req.tool_choice.get<std::string>();
      if (c == "required") body["tool_choice"] = "REQUIRED";
      else if (c == "none") body["tool_choice"] = "NONE";
      else if (c != "auto") return fail(ErrorKind::bad_request, "unknown tool_choice '" + c + "'", "tool_choice");
    } else if (req.tool_choice.is_object()) {
      return unsupported_field(kFamily, "tool_choice", "Cohere cannot force one named tool");
    }
    if (req.response_format.is_object()) {
      std::string rf = jstr(req.response_format, "type");
      if (rf == "json_object") {
        body["response_format"] = {{"type", "json_object"}};
      } else if (rf == "json_schema") {
        const Json* js = jobj(req.response_format, "json_schema");
        Json f = {{"type", "json_object"}};
        if (const Json* s = js ? jobj(*js, "schema") : nullptr) f["json_schema"] = *s;
        body["response_format"] = std::move(f);
      } else if (rf != "text" && !rf.empty()) {
        return unsupported_field(kFamily, "response_format.type", rf);
      }
    }
    HttpRequestSpec spec;
    std::string base = ep.base_url.empty() ? "https://api.cohere.com" : ep.base_url;
    spec.url = join_url(base, base.ends_with("/v2") ? "/chat" : "/v2/chat");
    spec.headers.emplace_back("content-type", "application/json");
    if (!ep.api_key.empty()) spec.headers.emplace_back("authorization", "Bearer " + ep.api_key);
    spec.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
    return spec;
  }

  Result<ChatResponse> decode_response(std::string_view body) const override {
    auto j = parse_json(body);
    if (!j || !j->is_object()) return malformed(kFamily, "response is not a JSON object");
    const Json* msg = jobj(*j, "message");
    if (!msg) return malformed(kFamily, "response has no message");
    ChatResponse r;
    r.id = jstr(*j, "id");
    Choice c;
    c.message.role = "assistant";
    std::string text;
    bool any = false;
    if (const Json* content = jarr(*msg, "content"))
      for (const auto& b : *content)
        if (jstr(b, "type") == "text") {
          text += jstr(b, "text");
          any = true;
        }
    if (any) {
      ContentPart p;
      p.text = std::move(text);
      c.message.content.push_back(std::move(p));
    } else {
      c.message.content_null = true;
    }
    if (const Json* calls = jarr(*msg, "tool_calls"))
      for (const auto& tc : *calls) {
        const Json* fn = jobj(tc, "function");
        c.message.tool_calls.push_back(ToolCall{jstr(tc, "id"), fn ? jstr(*fn, "name") : "", fn ? jstr(*fn, "arguments", "{}") : "{}"});
      }
    auto finish = finish_from_cohere(jstr(*j, "finish_reason", "COMPLETE"));
    if (!finish) return fail(finish.error());
    c.finish_reason = std::string(*finish);
    r.choices.push_back(std::move(c));
    if (const Json* u = jobj(*j, "usage")) r.usage = usage_from_cohere(*u);
    return r;
  }

  Error decode_error(int status, const Headers& headers, std::string_view body) const override {
    std::string message = "HTTP " + std::to_string(status);
    if (auto j = parse_json(body); j && j->is_object()) message = jstr(*j, "message", message);
    else if (!body.empty()) message += ": " + std::string(body.substr(0, 200));
    Error e = provider_error(kFamily, status, headers, std::move(message), "");
    if (status == 498) e.kind = ErrorKind::auth;  // invalid token
    return e;
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override { return std::make_unique<CohereStreamDecoder>(); }
};

}  // namespace

const Codec& cohere_codec() {
  static const CohereCodec c;
  return c;
}

}  // namespace modelux
