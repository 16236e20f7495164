// Google Gemini (generativelanguage.googleapis.com) codec, client side: generateContent and
// streamGenerateContent?alt=sse.
//
// Gemini has no tool-call ids on older models: ids are generated as "call_<choice>_<n>" when the
// response has none, and a tool result finds its function name through the assistant turn that
// issued the call (matched by id). Usage: promptTokenCount includes cached tokens;
// thoughtsTokenCount is separate from candidatesTokenCount, so completion = candidates + thoughts.
#include <algorithm>
#include <map>

#include "wire/codecs.hpp"

namespace modelux {
namespace {

using namespace wire;
constexpr std::string_view kFamily = "gemini";

constexpr std::string_view kIgnorableExtras[] = {"store", "prompt_cache_key", "prompt_cache_retention",
                                                 "safety_identifier", "stream_options"};

std::string mime_from_url(std::string_view url) {
  auto q = url.find_first_of("?#");
  std::string_view p = url.substr(0, q);
  auto ends = [&](std::string_view e) {
    if (p.size() < e.size()) return false;
    for (std::size_t i = 0; i < e.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(p[p.size() - e.size() + i])) != e[i]) return false;
    return true;
  };
  if (ends(".png")) return "image/png";
  if (ends(".jpg") || ends(".jpeg")) return "image/jpeg";
  if (ends(".webp")) return "image/webp";
  if (ends(".gif")) return "image/gif";
  if (ends(".pdf")) return "application/pdf";
  return {};
}

Result<Json> gemini_part(const ContentPart& p, const std::string& path) {
  switch (p.type) {
    case ContentPart::Type::text: return Json{{"text", p.text}};
    case ContentPart::Type::image_url: {
      if (auto d = parse_data_uri(p.url)) return Json{{"inlineData", {{"mimeType", d->mime}, {"data", d->data}}}};
      std::string mime = mime_from_url(p.url);
      if (mime.empty())
        return unsupported_field(kFamily, path + ".image_url.url", "Gemini needs a data URI or a URL ending in a known image extension");
      return Json{{"fileData", {{"mimeType", mime}, {"fileUri", p.url}}}};
    }
    case ContentPart::Type::input_audio: {
      const Json& a = p.data;
      std::string fmt = jstr(a, "format", "wav");
      return Json{{"inlineData", {{"mimeType", "audio/" + fmt}, {"data", jstr(a, "data")}}}};
    }
    case ContentPart::Type::file: {
      auto d = parse_data_uri(jstr(p.data, "file_data"));
      if (!d) return unsupported_field(kFamily, path + ".file", "only inline file_data data URIs are supported");
      return Json{{"inlineData", {{"mimeType", d->mime}, {"data", d->data}}}};
    }
  }
  return Json::object();
}

std::string_view finish_from_gemini(std::string_view r) {
  if (r == "MAX_TOKENS") return "length";
  if (r == "SAFETY" || r == "RECITATION" || r == "BLOCKLIST" || r == "PROHIBITED_CONTENT" || r == "SPII" ||
      r == "IMAGE_SAFETY")
    return "content_filter";
  return "stop";
}

Usage usage_from_gemini(const Json& u) {
  Usage out;
  out.prompt_tokens = jint(u, "promptTokenCount");
  out.cached_tokens = jint(u, "cachedContentTokenCount");
  out.reasoning_tokens = jint(u, "thoughtsTokenCount");
  out.completion_tokens = add_tokens(jint(u, "candidatesTokenCount"), out.reasoning_tokens);
  return out;
}

Error gemini_error(int status, const Headers& headers, const Json* err, std::string fallback) {
  std::string message = err ? jstr(*err, "message", fallback) : fallback;
  std::string st = err ? jstr(*err, "status") : "";
  if (status == 0 && err) status = static_cast<int>(jint(*err, "code"));
  Error e = provider_error(kFamily, status, headers, std::move(message), st);
  if (st == "RESOURCE_EXHAUSTED") e.kind = ErrorKind::rate_limited;
  else if (st == "UNAVAILABLE") e.kind = ErrorKind::overloaded;
  else if (st == "PERMISSION_DENIED" || st == "UNAUTHENTICATED") e.kind = ErrorKind::auth;
  else if (st == "NOT_FOUND") e.kind = ErrorKind::not_found;
  else if (st == "DEADLINE_EXCEEDED") e.kind = ErrorKind::timeout;
  else if (st == "INTERNAL") e.kind = ErrorKind::server_error;
  else if (st == "CANCELLED") e.kind = ErrorKind::cancelled;
  if (const Json* details = err ? jarr(*err, "details") : nullptr) {
    for (const auto& d : *details) {
      std::string type = jstr(d, "@type");
      if (type.ends_with("RetryInfo") && !e.retry_after) {
        if (auto ms = parse_duration(jstr(d, "retryDelay"))) e.retry_after = ms;
      } else if (type.ends_with("QuotaFailure")) {
        // Daily quota exhaustion will not clear on retry.
        if (const Json* v = jarr(d, "violations"))
          for (const auto& q : *v)
            if (jstr(q, "quotaId").find("PerDay") != std::string::npos) e.kind = ErrorKind::quota_exceeded;
      } else if (type.ends_with("ErrorInfo")) {
        std::string reason = jstr(d, "reason");
        if (reason == "API_KEY_INVALID") e.kind = ErrorKind::auth;
        if (!reason.empty()) e.code = reason;
      }
    }
  }
  return e;
}

class GeminiStreamDecoder final : public StreamDecoder {
 public:
  Result<void> feed(std::string_view bytes, std::vector<ChatChunk>& out) override {
    events_.clear();
    if (auto r = sse_.feed(bytes, events_); !r) return r;
    for (auto& ev : events_) {
      if (ev.data.empty()) continue;
      auto j = parse_json(ev.data);
      if (!j || !j->is_object()) return malformed(kFamily, "stream event is not a JSON object");
      if (const Json* err = jobj(*j, "error")) {
        Error e = gemini_error(0, {}, err, "stream error");
        e.message = "gemini stream error: " + e.message;
        return fail(std::move(e));
      }
      if (id_.empty()) id_ = jstr(*j, "responseId");
      if (model_.empty()) model_ = jstr(*j, "modelVersion");
      if (const Json* u = jobj(*j, "usageMetadata")) usage_ = usage_from_gemini(*u);  // cumulative: keep the last
      const Json* cands = jarr(*j, "candidates");
      if (!cands) {
        if (const Json* pf = jobj(*j, "promptFeedback"); pf && !jstr(*pf, "blockReason").empty()) {
          start(0, out);
          ChunkChoice cc;
          cc.finish_reason = "content_filter";
          emit(out, std::move(cc));
          finished_ = true;
        }
        continue;
      }
      for (const auto& cand : *cands) {
        int idx = static_cast<int>(jint(cand, "index", 0));
        if (idx < 0 || idx > 127) return malformed(kFamily, "candidate index out of range");
        start(idx, out);
        if (const Json* content = jobj(cand, "content")) {
          if (const Json* parts = jarr(*content, "parts")) {
            for (const auto& p : *parts) {
              if (jbool(p, "thought")) continue;
              if (p.contains("text") && p["text"].is_string()) {
                ChunkChoice cc;
                cc.index = idx;
                cc.content = p["text"].get<std::string>();
                emit(out, std::move(cc));
              } else if (const Json* fc = jobj(p, "functionCall")) {
                int& n = tools_[idx];
                ChunkChoice cc;
                cc.index = idx;
                std::string id = jstr(*fc, "id");
                if (id.empty()) id = "call_" + std::to_string(idx) + "_" + std::to_string(n);
                const Json& args = fc->contains("args") ? (*fc)["args"] : Json::object();
                cc.tool_calls.push_back(ToolCallDelta{n, id, jstr(*fc, "name"), args.dump()});
                ++n;
                emit(out, std::move(cc));
              }
            }
          }
        }
        std::string fr = jstr(cand, "finishReason");
        if (!fr.empty() && fr != "FINISH_REASON_UNSPECIFIED") {
          ChunkChoice cc;
          cc.index = idx;
          cc.finish_reason = tools_[idx] > 0 && fr == "STOP" ? "tool_calls" : std::string(finish_from_gemini(fr));
          emit(out, std::move(cc));
          finished_ = true;
        }
      }
    }
    return {};
  }
  Result<void> finish(std::vector<ChatChunk>& out) override {
    // Gemini has no end marker: the stream is whole when a finishReason came before the close.
    if (!finished_) return fail(ErrorKind::stream_interrupted, "gemini stream closed before a finishReason");
    if (!usage_sent_) {
      ChatChunk c;
      c.id = id_;
      c.model = model_;
      c.usage = usage_;
      out.push_back(std::move(c));
      usage_sent_ = true;
    }
    return {};
  }
  bool done() const noexcept override { return finished_; }

 private:
  void start(int idx, std::vector<ChatChunk>& out) {
    if (started_.contains(idx)) return;
    started_[idx] = true;
    ChunkChoice cc;
    cc.index = idx;
    cc.role = "assistant";
    cc.content = std::string{};
    emit(out, std::move(cc));
  }
  void emit(std::vector<ChatChunk>& out, ChunkChoice cc) const {
    ChatChunk c;
    c.id = id_;
    c.model = model_;
    c.choices.push_back(std::move(cc));
    out.push_back(std::move(c));
  }
  SseParser sse_;
  std::vector<SseEvent> events_;
  std::string id_, model_;
  Usage usage_;
  std::map<int, bool> started_;
  std::map<int, int> tools_;
  bool finished_ = false;
  bool usage_sent_ = false;
};

class GeminiCodec final : public Codec {
 public:
  std::string_view family() const noexcept override { return kFamily; }

  Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                         std::string_view upstream_model) const override {
    auto body = encode_body(req);
    if (!body) return fail(body.error());
    HttpRequestSpec spec;
    std::string base = ep.base_url.empty() ? "https://generativelanguage.googleapis.com" : ep.base_url;
    std::string path = base.ends_with("/v1beta") || base.ends_with("/v1") ? "/models/" : "/v1beta/models/";
    path += percent_encode(upstream_model);
    path += req.stream ? ":streamGenerateContent?alt=sse" : ":generateContent";
    spec.url = join_url(base, path);
    spec.headers.emplace_back("content-type", "application/json");
    // The key goes in a header, not ?key=, so URLs can be logged.
    if (!ep.api_key.empty()) spec.headers.emplace_back("x-goog-api-key", ep.api_key);
    spec.body = body->dump(-1, ' ', false, Json::error_handler_t::replace);
    return spec;
  }

  Result<ChatResponse> decode_response(std::string_view body) const override {
    auto j = parse_json(body);
    if (!j || !j->is_object()) return malformed(kFamily, "response is not a JSON object");
    ChatResponse r;
    r.id = jstr(*j, "responseId");
    r.model = jstr(*j, "modelVersion");
    if (const Json* u = jobj(*j, "usageMetadata")) r.usage = usage_from_gemini(*u);
    const Json* cands = jarr(*j, "candidates");
    if (!cands || cands->empty()) {
      const Json* pf = jobj(*j, "promptFeedback");
      if (pf && !jstr(*pf, "blockReason").empty()) {
        Choice c;
        c.message.role = "assistant";
        c.message.content_null = true;
        c.finish_reason = "content_filter";
        r.choices.push_back(std::move(c));
        return r;
      }
      return malformed(kFamily, "response has no candidates");
    }
    for (const auto& cand : *cands) {
      Choice c;
      c.index = static_cast<int>(jint(cand, "index", static_cast<std::int64_t>(r.choices.size())));
      c.message.role = "assistant";
      std::string text;
      bool any_text = false;
      if (const Json* content = jobj(cand, "content"))
        if (const Json* parts = jarr(*content, "parts"))
          for (const auto& p : *parts) {
            if (jbool(p, "thought")) continue;
            if (p.contains("text") && p["text"].is_string()) {
              text += p["text"].get<std::string>();
              any_text = true;
            } else if (const Json* fc = jobj(p, "functionCall")) {
              std::string id = jstr(*fc, "id");
              if (id.empty()) id = "call_" + std::to_string(c.index) + "_" + std::to_string(c.message.tool_calls.size());
              const Json& args = fc->contains("args") ? (*fc)["args"] : Json::object();
              c.message.tool_calls.push_back(ToolCall{id, jstr(*fc, "name"), args.dump()});
            }
          }
      if (any_text) {
        ContentPart p;
        p.text = std::move(text);
        c.message.content.push_back(std::move(p));
      } else {
        c.message.content_null = true;
      }
      std::string fr = jstr(cand, "finishReason", "STOP");
      c.finish_reason = !c.message.tool_calls.empty() && fr == "STOP" ? "tool_calls" : std::string(finish_from_gemini(fr));
      r.choices.push_back(std::move(c));
    }
    return r;
  }

  Error decode_error(int status, const Headers& headers, std::string_view body) const override {
    std::string fallback = "HTTP " + std::to_string(status);
    auto j = parse_json(body);
    // Errors come as {"error":{...}}, and from some front ends as a one-element array of it.
    const Json* root = j ? &*j : nullptr;
    if (root && root->is_array() && !root->empty()) root = &(*root)[0];
    const Json* err = root ? jobj(*root, "error") : nullptr;
    if (!err && !body.empty()) fallback += ": " + std::string(body.substr(0, 200));
    return gemini_error(status, headers, err, fallback);
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override { return std::make_unique<GeminiStreamDecoder>(); }

 private:
  static Result<Json> encode_body(const ChatRequest& req) {
    Json body = Json::object();
    Json gen = Json::object();
    if (req.temperature) gen["temperature"] = *req.temperature;
    if (req.top_p) gen["topP"] = *req.top_p;
    if (req.max_tokens) gen["maxOutputTokens"] = *req.max_tokens;
    if (!req.stop.empty()) gen["stopSequences"] = req.stop;
    if (req.n) gen["candidateCount"] = *req.n;
    if (req.seed) gen["seed"] = *req.seed;
    if (req.parallel_tool_calls && !*req.parallel_tool_calls)
      return unsupported_field(kFamily, "parallel_tool_calls", "Gemini cannot limit a turn to one call");
    if (req.response_format.is_object()) {
      std::string rf = jstr(req.response_format, "type");
      if (rf == "json_object") {
        gen["responseMimeType"] = "application/json";
      } else if (rf == "json_schema") {
        gen["responseMimeType"] = "application/json";
        const Json* js = jobj(req.response_format, "json_schema");
        if (const Json* s = js ? jobj(*js, "schema") : nullptr) gen["responseJsonSchema"] = *s;
      } else if (rf != "text" && !rf.empty()) {
        return unsupported_field(kFamily, "response_format.type", rf);
      }
    }
    if (req.extra.is_object()) {
      for (auto it = req.extra.begin(); it != req.extra.end(); ++it) {
        const std::string& k = it.key();
        const Json& v = it.value();
        if (v.is_null()) continue;
        if (k == "top_k") gen["topK"] = v;
        else if (k == "frequency_penalty") gen["frequencyPenalty"] = v;
        else if (k == "presence_penalty") gen["presencePenalty"] = v;
        else if (k == "logprobs") gen["responseLogprobs"] = v;
        else if (k == "top_logprobs") gen["logprobs"] = v;
        else if (k == "thinking_config" || k == "thinkingConfig") gen["thinkingConfig"] = v;
        else if (k == "safety_settings" || k == "safetySettings") body["safetySettings"] = v;
        else if (k == "cached_content" || k == "cachedContent") body["cachedContent"] = v;
        else if (std::ranges::find(kIgnorableExtras, k) != std::end(kIgnorableExtras)) continue;
        else return unsupported_field(kFamily, k);
      }
    }

    Json system_parts = Json::array();
    Json contents = Json::array();
    std::map<std::string, std::string> call_names;  // tool_call_id -> function name
    auto append = [&](const char* role, Json parts) {
      if (!contents.empty() && contents.back()["role"] == role) {
        for (auto& p : parts) contents.back()["parts"].push_back(std::move(p));
      } else {
        contents.push_back({{"role", role}, {"parts", std::move(parts)}});
      }
    };
    for (std::size_t i = 0; i < req.messages.size(); ++i) {
      const Message& m = req.messages[i];
      std::string path = "messages[" + std::to_string(i) + "]";
      Json parts = Json::array();
      if (m.role == "system" || m.role == "developer") {
        for (const auto& p : m.content) {
          if (p.type != ContentPart::Type::text) return unsupported_field(kFamily, path + ".content", "system content must be text");
          system_parts.push_back({{"text", p.text}});
        }
        continue;
      }
      if (m.role == "tool") {
        auto name = call_names.find(m.tool_call_id);
        if (name == call_names.end())
          return fail(ErrorKind::bad_request, "tool message answers no earlier tool call", path + ".tool_call_id");
        std::string text = m.text();
        auto parsed = parse_json(text);
        Json response = parsed && parsed->is_object() ? *parsed : Json{{"content", parsed ? *parsed : Json(text)}};
        Json fr = {{"name", name->second}, {"response", std::move(response)}};
        if (!m.tool_call_id.starts_with("call_")) fr["id"] = m.tool_call_id;
        parts.push_back({{"functionResponse", std::move(fr)}});
        append("user", std::move(parts));
        continue;
      }
      if (m.role != "user" && m.role != "assistant")
        return fail(ErrorKind::bad_request, "unknown message role '" + m.role + "'", path + ".role");
      for (std::size_t k = 0; k < m.content.size(); ++k) {
        if (m.content[k].type == ContentPart::Type::text && m.content[k].text.empty()) continue;
        auto p = gemini_part(m.content[k], path + ".content[" + std::to_string(k) + "]");
        if (!p) return fail(p.error());
        parts.push_back(std::move(*p));
      }
      for (std::size_t k = 0; k < m.tool_calls.size(); ++k) {
        const auto& tc = m.tool_calls[k];
        auto args = arguments_object(tc.arguments, path + ".tool_calls[" + std::to_string(k) + "].function.arguments");
        if (!args) return fail(args.error());
        call_names[tc.id] = tc.name;
        Json fc = {{"name", tc.name}, {"args", std::move(*args)}};
        if (!tc.id.starts_with("call_")) fc["id"] = tc.id;  // ids Gemini gave keep going back
        parts.push_back({{"functionCall", std::move(fc)}});
      }
      if (parts.empty()) continue;
      append(m.role == "assistant" ? "model" : "user", std::move(parts));
    }
    if (contents.empty()) return fail(ErrorKind::bad_request, "gemini needs at least one user or assistant message", "messages");
    if (!system_parts.empty()) body["systemInstruction"] = {{"parts", std::move(system_parts)}};
    body["contents"] = std::move(contents);

    if (!req.tools.empty()) {
      Json decls = Json::array();
      for (const auto& t : req.tools) {
        Json d = {{"name", t.name}};
        if (!t.description.empty()) d["description"] = t.description;
        // Tool parameters are JSON Schema: `parametersJsonSchema` takes it as is, while
        // `parameters` is an OpenAPI subset that refuses $schema, $ref/$defs and type arrays.
        if (t.parameters.is_object() && !t.parameters.empty()) d["parametersJsonSchema"] = t.parameters;
        decls.push_back(std::move(d));
      }
      body["tools"] = Json::array({{{"functionDeclarations", std::move(decls)}}});
    }
    if (req.tool_choice.is_string()) {
      auto c = req.tool_choice.get<std::string>();
      std::string mode = c == "auto" ? "AUTO" : c == "required" ? "ANY" : c == "none" ? "NONE" : "";
      if (mode.empty()) return fail(ErrorKind::bad_request, "unknown tool_choice '" + c + "'", "tool_choice");
      body["toolConfig"] = {{"functionCallingConfig", {{"mode", mode}}}};
    } else if (req.tool_choice.is_object()) {
      const Json* f = jobj(req.tool_choice, "function");
      std::string name = f ? jstr(*f, "name") : "";
      if (name.empty()) return fail(ErrorKind::bad_request, "tool_choice.function.name is required", "tool_choice.function.name");
      body["toolConfig"] = {{"functionCallingConfig", {{"mode", "ANY"}, {"allowedFunctionNames", {name}}}}};
    }
    if (!gen.empty()) body["generationConfig"] = std::move(gen);
    return body;
  }
};

}  // namespace

const Codec& gemini_codec() {
  static const GeminiCodec c;
  return c;
}

}  // namespace modelux
