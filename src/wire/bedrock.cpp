// AWS Bedrock Converse / ConverseStream codec, both sides.
//
// Auth: SigV4 (service "bedrock") when the endpoint has options.secret_access_key (access key id
// in options.access_key_id or api_key, optional options.session_token), else a Bedrock API key
// as a Bearer token. Signing needs the time: options.amz_date ("YYYYMMDDTHHMMSSZ") pins it
// (tests); otherwise the system clock is read, the one clock read in the codecs.
// Usage: inputTokens excludes cache reads/writes, so prompt = input + cacheRead + cacheWrite.
#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "wire/codecs.hpp"

namespace modelux {
namespace {

using namespace wire;
constexpr std::string_view kFamily = "bedrock";
constexpr std::string_view kIgnorableExtras[] = {"store", "prompt_cache_key", "prompt_cache_retention",
                                                 "safety_identifier", "stream_options"};

std::string_view finish_from_bedrock(std::string_view r) {
  if (r == "max_tokens" || r == "model_context_window_exceeded") return "length";
  if (r == "tool_use") return "tool_calls";
  if (r == "guardrail_intervened" || r == "content_filtered") return "content_filter";
  return "stop";
}

Usage usage_from_bedrock(const Json& u) {
  Usage out;
  auto in = jint(u, "inputTokens"), read = jint(u, "cacheReadInputTokens"), write = jint(u, "cacheWriteInputTokens");
  out.prompt_tokens = in + read + write;
  out.cached_tokens = read;
  out.cache_write_tokens = write;
  out.completion_tokens = jint(u, "outputTokens");
  return out;
}

Error bedrock_error(std::string type, int status, const Headers& headers, std::string message) {
  if (auto colon = type.find(':'); colon != std::string::npos) type.resize(colon);
  Error e = provider_error(kFamily, status, headers, std::move(message), type);
  if (type == "ThrottlingException" || type == "throttlingException") e.kind = ErrorKind::rate_limited;
  else if (type == "ServiceUnavailableException" || type == "serviceUnavailableException" || type == "ModelNotReadyException")
    e.kind = ErrorKind::overloaded;
  else if (type == "ServiceQuotaExceededException") e.kind = ErrorKind::quota_exceeded;
  else if (type == "AccessDeniedException" || type == "UnrecognizedClientException") e.kind = ErrorKind::auth;
  else if (type == "ResourceNotFoundException") e.kind = ErrorKind::not_found;
  else if (type == "ModelTimeoutException") e.kind = ErrorKind::timeout;
  else if (type == "InternalServerException" || type == "internalServerException" || type == "ModelErrorException" ||
           type == "modelStreamErrorException")
    e.kind = ErrorKind::server_error;
  else if (type == "ValidationException" || type == "validationException")
    e.kind = looks_like_context_length("", e.message) ? ErrorKind::context_length : ErrorKind::bad_request;
  return e;
}

Result<Json> bedrock_block(const ContentPart& p, const std::string& path) {
  if (p.type == ContentPart::Type::text) return Json{{"text", p.text}};
  if (p.type == ContentPart::Type::image_url) {
    auto d = parse_data_uri(p.url);
    if (!d) return unsupported_field(kFamily, path + ".image_url.url", "Bedrock takes images as base64 data URIs only");
    if (d->mime == "application/pdf")
      return Json{{"document", {{"format", "pdf"}, {"name", "document"}, {"source", {{"bytes", d->data}}}}}};
    std::string fmt = d->mime.starts_with("image/") ? d->mime.substr(6) : "";
    if (fmt != "png" && fmt != "jpeg" && fmt != "gif" && fmt != "webp")
      return unsupported_field(kFamily, path + ".image_url.url", "image format " + d->mime);
    return Json{{"image", {{"format", fmt}, {"source", {{"bytes", d->data}}}}}};
  }
  return unsupported_field(kFamily, path, "part type not supported by Converse");
}

class BedrockStreamDecoder final : public StreamDecoder {
 public:
  Result<void> feed(std::string_view bytes, std::vector<ChatChunk>& out) override {
    msgs_.clear();
    if (auto r = es_.feed(bytes, msgs_); !r) return r;
    for (auto& m : msgs_) {
      if (done_) break;
      const std::string* mt = m.header(":message-type");
      if (mt && *mt == "exception") {
        const std::string* et = m.header(":exception-type");
        auto j = parse_json(m.payload);
        std::string message = j ? jstr(*j, "message", jstr(*j, "Message", "stream exception")) : "stream exception";
        Error e = bedrock_error(et ? *et : "", 0, {}, "bedrock stream exception: " + message);
        return fail(std::move(e));
      }
      if (mt && *mt == "error") {
        const std::string* code = m.header(":error-code");
        const std::string* msg = m.header(":error-message");
        return fail(bedrock_error(code ? *code : "", 0, {}, "bedrock stream error: " + (msg ? *msg : std::string("unknown"))));
      }
      const std::string* et = m.header(":event-type");
      if (!et) continue;
      auto j = parse_json(m.payload);
      if (!j || !j->is_object()) return malformed(kFamily, "event payload is not a JSON object");
      if (*et == "messageStart") {
        ChunkChoice cc;
        cc.role = "assistant";
        cc.content = std::string{};
        emit(out, std::move(cc));
      } else if (*et == "contentBlockStart") {
        const Json* start = jobj(*j, "start");
        const Json* tu = start ? jobj(*start, "toolUse") : nullptr;
        if (tu) {
          if (tool_of_block_.size() > 4096) return malformed(kFamily, "too many content blocks");
          int t = next_tool_++;
          tool_of_block_[jint(*j, "contentBlockIndex")] = t;
          ChunkChoice cc;
          cc.tool_calls.push_back(ToolCallDelta{t, jstr(*tu, "toolUseId"), jstr(*tu, "name"), ""});
          emit(out, std::move(cc));
        }
      } else if (*et == "contentBlockDelta") {
        const Json* d = jobj(*j, "delta");
        if (!d) return malformed(kFamily, "contentBlockDelta without delta");
        if (d->contains("text") && (*d)["text"].is_string()) {
          ChunkChoice cc;
          cc.content = (*d)["text"].get<std::string>();
          emit(out, std::move(cc));
        } else if (const Json* tu = jobj(*d, "toolUse")) {
          auto it = tool_of_block_.find(jint(*j, "contentBlockIndex"));
          if (it == tool_of_block_.end()) return malformed(kFamily, "toolUse delta for an unknown block");
          ChunkChoice cc;
          cc.tool_calls.push_back(ToolCallDelta{it->second, "", "", jstr(*tu, "input")});
          emit(out, std::move(cc));
        }
      } else if (*et == "messageStop") {
        ChunkChoice cc;
        cc.finish_reason = std::string(finish_from_bedrock(jstr(*j, "stopReason", "end_turn")));
        emit(out, std::move(cc));
        stopped_ = true;
      } else if (*et == "metadata") {
        ChatChunk c;
        c.usage = jobj(*j, "usage") ? usage_from_bedrock(*jobj(*j, "usage")) : Usage{};
        out.push_back(std::move(c));
        done_ = true;
      }
    }
    return {};
  }
  Result<void> finish(std::vector<ChatChunk>&) override {
    if (es_.has_partial()) return fail(ErrorKind::stream_interrupted, "bedrock stream ended inside a message");
    if (!stopped_) return fail(ErrorKind::stream_interrupted, "bedrock stream ended before messageStop");
    return {};
  }
  bool done() const noexcept override { return done_; }

 private:
  void emit(std::vector<ChatChunk>& out, ChunkChoice cc) const {
    ChatChunk c;
    c.choices.push_back(std::move(cc));
    out.push_back(std::move(c));
  }
  EventStreamParser es_;
  std::vector<EventStreamMessage> msgs_;
  std::unordered_map<std::int64_t, int> tool_of_block_;
  int next_tool_ = 0;
  bool stopped_ = false;
  bool done_ = false;
};

std::string amz_now() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[20];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

// Shared by Converse (chat) and InvokeModel (embeddings): the URL on the region's runtime host,
// and SigV4 (or a Bedrock API key as Bearer) over the body.
HttpRequestSpec wire::bedrock_request(const ProviderEndpoint& ep, std::string_view upstream_model, std::string_view action,
                                      std::string body, bool event_stream) {
  auto opt = [&](const char* k) -> std::string {
    auto it = ep.options.find(k);
    return it == ep.options.end() ? std::string{} : it->second;
  };
  std::string region = opt("region");
  std::string base = ep.base_url;
  if (region.empty()) {
    // https://bedrock-runtime.{region}.amazonaws.com
    auto p = base.find("bedrock-runtime.");
    auto e = base.find(".amazonaws.com");
    if (p != std::string::npos && e != std::string::npos && e > p + 16) region = base.substr(p + 16, e - p - 16);
    if (region.empty() || region.find('{') != std::string::npos) region = "us-east-1";
  }
  if (base.empty()) base = "https://bedrock-runtime.{region}.amazonaws.com";
  if (auto r = base.find("{region}"); r != std::string::npos) base.replace(r, 8, region);
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string path = "/model/" + percent_encode(upstream_model) + "/" + std::string(action);

  HttpRequestSpec spec;
  spec.url = base + path;
  spec.body = std::move(body);
  spec.headers.emplace_back("content-type", "application/json");
  if (event_stream) spec.headers.emplace_back("accept", "application/vnd.amazon.eventstream");
  std::string secret = opt("secret_access_key");
  if (secret.empty()) {
    if (!ep.api_key.empty()) spec.headers.emplace_back("authorization", "Bearer " + ep.api_key);
    return spec;
  }
  std::string host = base.substr(base.find("://") == std::string::npos ? 0 : base.find("://") + 3);
  std::string date = opt("amz_date");
  if (date.empty()) date = amz_now();
  SigV4Request sr;
  sr.method = "POST";
  // Non-S3 services sign the path with each segment encoded a second time.
  sr.canonical_uri = "/model/" + percent_encode(percent_encode(upstream_model)) + "/" + std::string(action);
  sr.headers = {{"content-type", "application/json"}, {"host", host}, {"x-amz-date", date}};
  std::string token = opt("session_token");
  if (!token.empty()) sr.headers.emplace_back("x-amz-security-token", token);
  sr.payload_sha256 = sha256_hex(spec.body);
  std::string akid = opt("access_key_id");
  if (akid.empty()) akid = ep.api_key;
  auto sig = sigv4_sign(sr, SigV4Credentials{akid, secret, region, "bedrock"}, date);
  spec.headers.emplace_back("x-amz-date", date);
  if (!token.empty()) spec.headers.emplace_back("x-amz-security-token", token);
  spec.headers.emplace_back("authorization", sig.authorization);
  return spec;
}

namespace {

class BedrockCodec final : public Codec {
 public:
  std::string_view family() const noexcept override { return kFamily; }

  Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                         std::string_view upstream_model) const override {
    auto body = encode_body(req);
    if (!body) return fail(body.error());
    return bedrock_request(ep, upstream_model, req.stream ? "converse-stream" : "converse",
                           body->dump(-1, ' ', false, Json::error_handler_t::replace), req.stream);
  }

  Result<ChatResponse> decode_response(std::string_view body) const override {
    auto j = parse_json(body);
    if (!j || !j->is_object()) return malformed(kFamily, "response is not a JSON object");
    const Json* output = jobj(*j, "output");
    const Json* msg = output ? jobj(*output, "message") : nullptr;
    if (!msg) return malformed(kFamily, "response has no output.message");
    ChatResponse r;
    Choice c;
    c.message.role = "assistant";
    std::string text;
    bool any = false;
    if (const Json* content = jarr(*msg, "content"))
      for (const auto& b : *content) {
        if (b.contains("text") && b["text"].is_string()) {
          text += b["text"].get<std::string>();
          any = true;
        } else if (const Json* tu = jobj(b, "toolUse")) {
          const Json& input = tu->contains("input") ? (*tu)["input"] : Json::object();
          c.message.tool_calls.push_back(ToolCall{jstr(*tu, "toolUseId"), jstr(*tu, "name"), input.dump()});
        }
      }
    if (any) {
      ContentPart p;
      p.text = std::move(text);
      c.message.content.push_back(std::move(p));
    } else {
      c.message.content_null = true;
    }
    c.finish_reason = std::string(finish_from_bedrock(jstr(*j, "stopReason", "end_turn")));
    r.choices.push_back(std::move(c));
    if (const Json* u = jobj(*j, "usage")) r.usage = usage_from_bedrock(*u);
    return r;
  }

  Error decode_error(int status, const Headers& headers, std::string_view body) const override {
    std::string message = "HTTP " + std::to_string(status);
    std::string type;
    if (const auto* t = find_header(headers, "x-amzn-ErrorType")) type = *t;
    if (auto j = parse_json(body); j && j->is_object()) {
      message = jstr(*j, "message", jstr(*j, "Message", message));
      if (type.empty()) type = jstr(*j, "__type");
    } else if (!body.empty()) {
      message += ": " + std::string(body.substr(0, 200));
    }
    if (auto hash = type.rfind('#'); hash != std::string::npos) type = type.substr(hash + 1);
    return bedrock_error(type, status, headers, std::move(message));
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override { return std::make_unique<BedrockStreamDecoder>(); }

 private:
  static Result<Json> encode_body(const ChatRequest& req) {
    Json body = Json::object();
    if (req.n && *req.n != 1) return unsupported_field(kFamily, "n");
    if (req.seed) return unsupported_field(kFamily, "seed");
    if (req.parallel_tool_calls && !*req.parallel_tool_calls) return unsupported_field(kFamily, "parallel_tool_calls");
    if (req.response_format.is_object() && jstr(req.response_format, "type") != "text" &&
        !jstr(req.response_format, "type").empty())
      return unsupported_field(kFamily, "response_format", "Converse has no JSON mode");
    Json inf = Json::object();
    if (req.max_tokens) inf["maxTokens"] = *req.max_tokens;
    if (req.temperature) inf["temperature"] = *req.temperature;
    if (req.top_p) inf["topP"] = *req.top_p;
    if (!req.stop.empty()) inf["stopSequences"] = req.stop;
    if (!inf.empty()) body["inferenceConfig"] = std::move(inf);
    Json additional = Json::object();
    if (req.extra.is_object()) {
      for (auto it = req.extra.begin(); it != req.extra.end(); ++it) {
        const std::string& k = it.key();
        if (it.value().is_null()) continue;
        if (k == "top_k") additional["top_k"] = it.value();
        else if (k == "additionalModelRequestFields" && it.value().is_object()) additional.update(it.value());
        else if (k == "guardrailConfig" || k == "requestMetadata" || k == "performanceConfig") body[k] = it.value();
        else if (std::ranges::find(kIgnorableExtras, k) == std::end(kIgnorableExtras)) return unsupported_field(kFamily, k);
      }
    }
    if (!additional.empty()) body["additionalModelRequestFields"] = std::move(additional);

    Json system = Json::array();
    Json messages = Json::array();
    auto append = [&](const char* role, Json blocks) {
      if (!messages.empty() && messages.back()["role"] == role) {
        for (auto& b : blocks) messages.back()["content"].push_back(std::move(b));
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
          system.push_back({{"text", p.text}});
          if (!p.cache_control.is_null()) system.push_back({{"cachePoint", {{"type", "default"}}}});
        }
        continue;
      }
      Json blocks = Json::array();
      if (m.role == "tool") {
        std::string text = m.text();
        auto parsed = parse_json(text);
        Json content = parsed && parsed->is_object() ? Json::array({{{"json", *parsed}}}) : Json::array({{{"text", text}}});
        blocks.push_back({{"toolResult", {{"toolUseId", m.tool_call_id}, {"content", std::move(content)}, {"status", "success"}}}});
        append("user", std::move(blocks));
        continue;
      }
      if (m.role != "user" && m.role != "assistant")
        return fail(ErrorKind::bad_request, "unknown message role '" + m.role + "'", path + ".role");
      for (std::size_t k = 0; k < m.content.size(); ++k) {
        const auto& p = m.content[k];
        if (p.type == ContentPart::Type::text && p.text.empty()) continue;
        auto b = bedrock_block(p, path + ".content[" + std::to_string(k) + "]");
        if (!b) return fail(b.error());
        blocks.push_back(std::move(*b));
        if (!p.cache_control.is_null()) blocks.push_back({{"cachePoint", {{"type", "default"}}}});
      }
      for (std::size_t k = 0; k < m.tool_calls.size(); ++k) {
        const auto& tc = m.tool_calls[k];
        auto input = arguments_object(tc.arguments, path + ".tool_calls[" + std::to_string(k) + "].function.arguments");
        if (!input) return fail(input.error());
        blocks.push_back({{"toolUse", {{"toolUseId", tc.id}, {"name", tc.name}, {"input", std::move(*input)}}}});
      }
      if (blocks.empty()) continue;
      append(m.role == "assistant" ? "assistant" : "user", std::move(blocks));
    }
    if (messages.empty()) return fail(ErrorKind::bad_request, "bedrock needs at least one user or assistant message", "messages");
    if (!system.empty()) body["system"] = std::move(system);
    body["messages"] = std::move(messages);
    if (!req.tools.empty()) {
      Json tools = Json::array();
      for (const auto& t : req.tools) {
        Json spec = {{"name", t.name}, {"inputSchema", {{"json", t.parameters.is_object() ? t.parameters : Json{{"type", "object"}}}}}};
        if (!t.description.empty()) spec["description"] = t.description;
        tools.push_back({{"toolSpec", std::move(spec)}});
        if (!t.cache_control.is_null()) tools.push_back({{"cachePoint", {{"type", "default"}}}});
      }
      Json cfg = {{"tools", std::move(tools)}};
      if (req.tool_choice.is_string()) {
        auto c = req.tool_choice.get<std::string>();
        if (c == "auto") cfg["toolChoice"] = {{"auto", Json::object()}};
        else if (c == "required") cfg["toolChoice"] = {{"any", Json::object()}};
        else if (c == "none") return unsupported_field(kFamily, "tool_choice", "Converse has no 'none' tool choice");
        else return fail(ErrorKind::bad_request, "unknown tool_choice '" + c + "'", "tool_choice");
      } else if (req.tool_choice.is_object()) {
        const Json* f = jobj(req.tool_choice, "function");
        std::string name = f ? jstr(*f, "name") : "";
        if (name.empty()) return fail(ErrorKind::bad_request, "tool_choice.function.name is required", "tool_choice.function.name");
        cfg["toolChoice"] = {{"tool", {{"name", name}}}};
      }
      body["toolConfig"] = std::move(cfg);
    } else if (!req.tool_choice.is_null() && !(req.tool_choice.is_string() && req.tool_choice.get<std::string>() != "required")) {
      return fail(ErrorKind::bad_request, "tool_choice requires tools", "tool_choice");
    }
    return body;
  }
};

}  // namespace

const Codec& bedrock_codec() {
  static const BedrockCodec c;
  return c;
}

}  // namespace modelux
