// OpenAI Chat Completions codec: the unified shape is OpenAI's, so encoding is mostly a
// model-name swap; decoding validates and normalises.
#include <cctype>

#include "wire/codecs.hpp"

namespace modelux {

namespace {

std::string join_url(const std::string& base, std::string_view path) {
  std::string u = base;
  while (!u.empty() && u.back() == '/') u.pop_back();
  u += path;
  return u;
}

class OpenAIStreamDecoder final : public StreamDecoder {
 public:
  Result<void> feed(std::string_view bytes, std::vector<ChatChunk>& out) override {
    events_.clear();
    auto r = sse_.feed(bytes, events_);
    if (!r) return r;
    for (auto& ev : events_) {
      if (done_) break;  // anything after [DONE] is ignored
      if (ev.data == "[DONE]") {
        done_ = true;
        break;
      }
      if (ev.event == "error") {
        auto j = parse_json(ev.data);
        std::string msg = j && j->is_object() && j->contains("error") ? wire::jstr((*j)["error"], "message", ev.data) : ev.data;
        return fail(ErrorKind::stream_interrupted, msg);
      }
      auto j = parse_json(ev.data);
      if (!j) return fail(ErrorKind::malformed_response, "stream event is not valid JSON");
      // A JSON object with an `error` member in place of a chunk is fatal (OpenAI, OpenRouter...).
      if (j->is_object() && j->contains("error") && !j->contains("choices")) {
        const Json& err = (*j)["error"];
        std::string msg = err.is_object() ? wire::jstr(err, "message", "stream error") : err.is_string() ? err.get<std::string>() : "stream error";
        int status = err.is_object() ? static_cast<int>(wire::jint(err, "code", 0)) : 0;
        Error e = classify_http_error(status ? status : 500, {}, "stream error: " + msg);
        if (status == 0) e.kind = ErrorKind::stream_interrupted;
        return fail(std::move(e));
      }
      auto c = chat_chunk_from_json(*j);
      if (!c) return fail(c.error());
      for (const auto& ch : c->choices)
        if (ch.finish_reason == "error")  // OpenRouter: the upstream failed mid-stream
          return fail(ErrorKind::stream_interrupted, "provider reported finish_reason \"error\" mid-stream");
      if (!c->usage) {
        // Groq reports a stream's usage in x_groq.usage on its finish chunk, not in `usage`.
        const Json* xg = wire::jobj(*j, "x_groq");
        if (const Json* u = xg ? wire::jobj(*xg, "usage") : nullptr) {
          Usage g;
          g.prompt_tokens = wire::jint(*u, "prompt_tokens");
          g.completion_tokens = wire::jint(*u, "completion_tokens");
          c->usage = g;
        }
      }
      if (c->usage && c->usage->cached_tokens == 0) {
        if (const Json* u = wire::jobj(*j, "usage")) c->usage->cached_tokens = wire::jint(*u, "prompt_cache_hit_tokens");
      }
      out.push_back(std::move(*c));
    }
    return {};
  }
  Result<void> finish(std::vector<ChatChunk>&) override {
    if (!done_) return fail(ErrorKind::stream_interrupted, "stream ended before data: [DONE]");
    return {};
  }
  bool done() const noexcept override { return done_; }

 private:
  SseParser sse_;
  std::vector<SseEvent> events_;
  bool done_ = false;
};

class OpenAICodec final : public Codec {
 public:
  std::string_view family() const noexcept override { return "openai"; }

  Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                         std::string_view upstream_model) const override {
    HttpRequestSpec spec;
    spec.url = join_url(ep.base_url, "/chat/completions");
    spec.headers.emplace_back("content-type", "application/json");
    if (!ep.api_key.empty()) spec.headers.emplace_back("authorization", "Bearer " + ep.api_key);
    auto provider_is = [&](std::string_view name, std::string_view host) {
      return ep.name == name || ep.base_url.find(host) != std::string::npos;
    };
    if (provider_is("perplexity", "api.perplexity.ai") && !req.tools.empty())
      return wire::unsupported_field(ep.name.empty() ? "perplexity" : ep.name, "tools", "Perplexity has no tool calling");
    Json body = to_json(req);
    body["model"] = std::string(upstream_model);
    const bool mistral = provider_is("mistral", "api.mistral.ai");
    if (mistral) {
      // Mistral accepts only tool call ids matching [a-zA-Z0-9]{9}: rewrite others
      // deterministically so an assistant call and its tool result keep matching.
      auto fix = [](const std::string& id) {
        bool ok = id.size() == 9;
        for (char c : id) ok = ok && std::isalnum(static_cast<unsigned char>(c));
        if (ok) return id;
        static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        std::uint64_t h = fnv1a64(id);
        std::string out;
        for (int i = 0; i < 9; ++i, h /= 62) out += kAlnum[h % 62];
        return out;
      };
      if (body.contains("messages"))
        for (auto& m : body["messages"]) {
          if (m.contains("tool_call_id") && m["tool_call_id"].is_string()) m["tool_call_id"] = fix(m["tool_call_id"].get<std::string>());
          if (m.contains("tool_calls") && m["tool_calls"].is_array())
            for (auto& tc : m["tool_calls"])
              if (tc.contains("id") && tc["id"].is_string()) tc["id"] = fix(tc["id"].get<std::string>());
        }
      if (body.contains("seed")) body["random_seed"] = body["seed"], body.erase("seed");
      // Mistral refuses fields it does not know (422 extra_forbidden): rename the one it has
      // under another name, leave out the hints that do not change the answer.
      if (body.contains("max_completion_tokens"))
        body["max_tokens"] = body["max_completion_tokens"], body.erase("max_completion_tokens");
      for (const char* hint : {"user", "store", "safety_identifier", "prompt_cache_retention"}) body.erase(hint);
    }
    // Always ask for usage on streams: cost accounting needs it even when the caller did not.
    // Mistral refuses stream_options (422 extra_forbidden) and reports usage on its last chunk.
    if (req.stream && !mistral) body["stream_options"] = {{"include_usage", true}};
    else if (mistral) body.erase("stream_options");
    spec.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
    return spec;
  }

  Result<ChatResponse> decode_response(std::string_view body) const override {
    auto j = parse_json(body);
    if (!j) return fail(ErrorKind::malformed_response, "provider response is not valid JSON");
    auto r = chat_response_from_json(*j);
    // DeepSeek reports cache hits as usage.prompt_cache_hit_tokens instead of cached_tokens.
    if (r && r->usage.cached_tokens == 0)
      if (const Json* u = wire::jobj(*j, "usage")) r->usage.cached_tokens = wire::jint(*u, "prompt_cache_hit_tokens");
    return r;
  }

  Error decode_error(int status, const Headers& headers, std::string_view body) const override {
    std::string message = "HTTP " + std::to_string(status);
    std::string code, type;
    auto j = parse_json(body);
    if (j && j->is_object()) {
      const Json* err = j->contains("error") ? &(*j)["error"] : nullptr;
      if (err && err->is_object()) {
        if (err->contains("message") && (*err)["message"].is_string()) message = (*err)["message"].get<std::string>();
        if (err->contains("code") && (*err)["code"].is_string()) code = (*err)["code"].get<std::string>();
        if (err->contains("type") && (*err)["type"].is_string()) type = (*err)["type"].get<std::string>();
      } else if (err && err->is_string()) {
        message = err->get<std::string>();
      } else if (!err && j->contains("message")) {
        // Mistral: no "error" envelope; `message` is a string, or for validation errors (422) an
        // object with pydantic's `detail` list; `type` and `code` sit beside it.
        const Json& m = (*j)["message"];
        message = m.is_string() ? m.get<std::string>() : m.dump(-1, ' ', false, Json::error_handler_t::replace);
        code = wire::jstr(*j, "code");
        type = wire::jstr(*j, "type");
      }
    } else if (!body.empty()) {
      message += ": " + std::string(body.substr(0, 200));
    }
    Error e = classify_http_error(status, headers, std::move(message));
    e.code = !code.empty() ? code : type;
    if (code == "insufficient_quota") e.kind = ErrorKind::quota_exceeded;
    else if (code == "context_length_exceeded") e.kind = ErrorKind::context_length;
    else if (code == "content_filter" || code == "content_policy_violation") e.kind = ErrorKind::content_filter;
    if (const auto* sr = find_header(headers, "x-should-retry"); sr && *sr == "false" &&
        (e.kind == ErrorKind::rate_limited || e.kind == ErrorKind::server_error))
      e.kind = ErrorKind::quota_exceeded;
    return e;
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override { return std::make_unique<OpenAIStreamDecoder>(); }
};

}  // namespace

const Codec& openai_codec() {
  static const OpenAICodec c;
  return c;
}

}  // namespace modelux
