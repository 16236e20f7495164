// The mock provider's wire layer: path routing and per-family rendering. The translation
// itself lives in the library's server-side codecs (src/wire/*_server.cpp), so the mock speaks
// exactly the formats the client codecs are tested against.
#include "testing/native.hpp"

#include <algorithm>
#include <cmath>

#include "testing/server_codecs.hpp"

namespace modelux::mock {
namespace {

struct Target {
  std::string_view path;
  std::string_view query;
};

Target split_target(std::string_view target) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == name) return wire::percent_decode(eq == std::string_view::npos ? "" : kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::unexpected<Error> not_found(std::string_view path) {
  return fail(ErrorKind::not_found, "no provider API at " + std::string(path));
}

Result<Json> body_json(std::string_view body) {
  auto j = parse_json(body);
  if (!j) return fail(ErrorKind::bad_request, "request body is not valid JSON: " + j.error().message);
  if (!j->is_object()) return fail(ErrorKind::bad_request, "request body must be a JSON object");
  return j;
}

Result<MockRequest> openai_like(std::string family, std::string_view body, std::string deployment) {
  auto req = parse_chat_request(body);
  if (!req) {
    Error e = req.error();
    e.kind = ErrorKind::bad_request;
    return fail(std::move(e));
  }
  MockRequest m;
  m.family = std::move(family);
  m.model = deployment.empty() ? req->model : std::move(deployment);
  m.stream = req->stream;
  m.request = std::move(*req);
  return m;
}

constexpr std::string_view kOpenAiPaths[] = {
    "/v1/chat/completions",           "/chat/completions",           "/openai/v1/chat/completions",
    "/api/v1/chat/completions",       "/inference/v1/chat/completions", "/v1beta/openai/chat/completions",
};

bool is_mistral_model(std::string_view model) {
  for (std::string_view p : {"mistral-", "open-mistral", "codestral", "devstral", "magistral", "ministral", "pixtral"})
    if (model.starts_with(p)) return true;
  return false;
}

// The top-level fields of Mistral's chat completion request (its SDK's ChatCompletionRequest and
// ChatCompletionStreamRequest). The API refuses any other field (pydantic extra="forbid").
constexpr std::string_view kMistralFields[] = {
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
    "metadata", "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty",
    "n", "prediction", "parallel_tool_calls", "prompt_mode", "safe_prompt", "reasoning_effort",
    "guardrails", "prompt_cache_key", "service_tier", "min_tokens", "repetition_penalty", "top_k",
    "logprobs", "top_logprobs",
};

// Mistral's 422 for unknown fields, in the shape its API sends it.
std::optional<Rendered> mistral_refusal(std::string_view body) {
  auto j = parse_json(body);
  if (!j || !j->is_object()) return std::nullopt;
  Json detail = Json::array();
  for (auto it = j->begin(); it != j->end(); ++it)
    if (std::ranges::find(kMistralFields, it.key()) == std::end(kMistralFields))
      detail.push_back({{"type", "extra_forbidden"},
                        {"loc", {"body", it.key()}},
                        {"msg", "Extra inputs are not permitted"},
                        {"input", it.value()}});
  if (detail.empty()) return std::nullopt;
  Json err = {{"object", "error"}, {"message", {{"detail", detail}}}, {"type", "invalid_request_error"},
              {"param", nullptr}, {"code", nullptr}};
  return Rendered{422, "application/json", {}, err.dump()};
}

Headers retry_headers(std::optional<Millis> retry_after) {
  Headers h;
  if (!retry_after) return h;
  auto ms = retry_after->count();
  h.emplace_back("retry-after", std::to_string((ms + 999) / 1000));
  h.emplace_back("retry-after-ms", std::to_string(ms));
  return h;
}

std::string_view openai_type_for(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string_view openai_code_for(int status) {
  switch (status) {
    case 401: return "invalid_api_key";
    case 404: return "model_not_found";
    case 429: return "rate_limit_exceeded";
    default: return "";
  }
}

}  // namespace

Result<MockRequest> parse_request(std::string_view method, std::string_view target, const Headers& headers,
                                  std::string_view body) {
  (void)headers;
  auto [path, query] = split_target(target);
  if (method != "POST") return not_found(path);

  for (auto p : kOpenAiPaths) {
    if (path != p) continue;
    auto m = openai_like("openai", body, {});
    if (m && is_mistral_model(m->model)) {
      m->family = "mistral";
      m->refusal = mistral_refusal(body);
    }
    return m;
  }

  // Azure: /openai/deployments/{deployment}/chat/completions?api-version=...
  constexpr std::string_view kAzure = "/openai/deployments/";
  constexpr std::string_view kAzureTail = "/chat/completions";
  if (path.starts_with(kAzure) && path.ends_with(kAzureTail) && path.size() > kAzure.size() + kAzureTail.size()) {
    std::string deployment =
        wire::percent_decode(path.substr(kAzure.size(), path.size() - kAzure.size() - kAzureTail.size()));
    if (deployment.find('/') != std::string::npos) return not_found(path);
    if (!query_param(query, "api-version"))
      return fail(ErrorKind::not_found, "Azure OpenAI requires the api-version query parameter");
    return openai_like("azure", body, std::move(deployment));
  }

  if (path == "/v1/messages") {
    auto j = body_json(body);
    if (!j) return fail(j.error());
    auto req = wire::anthropic_request_from_native(*j);
    if (!req) return fail(req.error());
    // What current Claude models answer to both (the older ones took both).
    if (req->temperature && req->top_p)
      return fail(ErrorKind::bad_request,
                  "`temperature` and `top_p` cannot both be specified for this model. Please use only one.", "top_p");
    MockRequest m;
    m.family = "anthropic";
    m.model = req->model;
    m.stream = req->stream;
    m.request = std::move(*req);
    return m;
  }

  // Gemini: /v1beta/models/{model}:generateContent | :streamGenerateContent?alt=sse
  for (std::string_view prefix : {std::string_view{"/v1beta/models/"}, std::string_view{"/v1/models/"}}) {
    if (!path.starts_with(prefix)) continue;
    std::string_view rest = path.substr(prefix.size());
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return not_found(path);
    std::string model = wire::percent_decode(rest.substr(0, colon));
    std::string_view action = rest.substr(colon + 1);
    bool stream = false;
    if (action == "streamGenerateContent") {
      if (query_param(query, "alt").value_or("") != "sse")
        return fail(ErrorKind::bad_request, "streamGenerateContent is served only with alt=sse");
      stream = true;
    } else if (action != "generateContent") {
      return not_found(path);
    }
    auto j = body_json(body);
    if (!j) return fail(j.error());
    auto req = wire::gemini_request_from_native(*j, model);
    if (!req) return fail(req.error());
    req->stream = stream;
    MockRequest m;
    m.family = "gemini";
    m.model = std::move(model);
    m.stream = stream;
    m.request = std::move(*req);
    return m;
  }

  if (path == "/v2/chat") {
    auto j = body_json(body);
    if (!j) return fail(j.error());
    auto req = wire::cohere_request_from_native(*j);
    if (!req) return fail(req.error());
    MockRequest m;
    m.family = "cohere";
    m.model = req->model;
    m.stream = req->stream;
    m.request = std::move(*req);
    return m;
  }

  // Bedrock: /model/{modelId}/converse | /converse-stream (modelId percent-encoded)
  constexpr std::string_view kBedrock = "/model/";
  if (path.starts_with(kBedrock)) {
    std::string_view rest = path.substr(kBedrock.size());
    auto slash = rest.rfind('/');
    if (slash == std::string_view::npos || slash == 0) return not_found(path);
    std::string_view action = rest.substr(slash + 1);
    if (action != "converse" && action != "converse-stream") return not_found(path);
    std::string model = wire::percent_decode(rest.substr(0, slash));
    auto j = body_json(body);
    if (!j) return fail(j.error());
    auto req = wire::bedrock_request_from_native(*j, model);
    if (!req) return fail(req.error());
    MockRequest m;
    m.family = "bedrock";
    m.model = std::move(model);
    m.stream = action == "converse-stream";
    req->stream = m.stream;
    m.request = std::move(*req);
    return m;
  }

  return not_found(path);
}

std::string_view family_of_target(std::string_view target) {
  std::string_view path = split_target(target).path;
  if (path == "/v1/messages") return "anthropic";
  if (path == "/v2/chat") return "cohere";
  if (path.starts_with("/v1beta/models/") || path.starts_with("/v1/models/")) return "gemini";
  if (path.starts_with("/model/")) return "bedrock";
  if (path.starts_with("/openai/deployments/")) return "azure";
  return "openai";
}

Rendered render_response(std::string_view family, const ChatResponse& r) {
  Rendered out;
  out.content_type = "application/json";
  Json body;
  if (family == "anthropic") body = wire::anthropic_response_to_native(r);
  else if (family == "gemini") body = wire::gemini_response_to_native(r);
  else if (family == "cohere") body = wire::cohere_response_to_native(r);
  else if (family == "bedrock") body = wire::bedrock_response_to_native(r);
  else body = to_json(r);
  out.body = body.dump();
  return out;
}

std::vector<std::string> render_stream(std::string_view family, const ChatResponse& r, int chunks,
                                       bool include_usage) {
  if (family == "anthropic") return wire::anthropic_stream_events(r, chunks);
  if (family == "gemini") return wire::gemini_stream_events(r, chunks);
  if (family == "cohere") return wire::cohere_stream_events(r, chunks);
  if (family == "bedrock") return wire::bedrock_stream_frames(r, chunks);
  if (family == "mistral") {
    // Mistral has no stream_options: usage always rides on the chunk with the finish reason.
    auto cs = wire::response_to_chunks(r, chunks, false);
    if (!cs.empty()) cs.back().usage = r.usage;
    std::vector<std::string> out;
    for (const auto& c : cs) out.push_back(encode_sse_chunk(c));
    out.emplace_back(kSseDone);
    return out;
  }
  return wire::openai_stream_events(r, chunks, include_usage);
}

std::string_view stream_content_type(std::string_view family) {
  return family == "bedrock" ? "application/vnd.amazon.eventstream" : "text/event-stream";
}

Rendered render_error(std::string_view family, int status, std::string_view message,
                      std::optional<Millis> retry_after) {
  Rendered out;
  out.status = status;
  out.content_type = "application/json";
  out.headers = retry_headers(retry_after);
  Json body;
  if (family == "anthropic") {
    body = wire::anthropic_error_body(status, message, "req_mock");
  } else if (family == "gemini") {
    body = wire::gemini_error_body(status, message);
  } else if (family == "cohere") {
    body = wire::cohere_error_body(status, message);
  } else if (family == "bedrock") {
    // Bedrock never answers 401: a bad or unknown credential is 403 UnrecognizedClientException.
    if (status == 401) out.status = 403;
    body = wire::bedrock_error_body(message);
    out.headers.emplace_back("x-amzn-ErrorType", std::string(wire::bedrock_error_type(status)));
  } else {
    auto code = openai_code_for(status);
    body = Json{{"error",
                 {{"message", std::string(message)},
                  {"type", std::string(openai_type_for(status))},
                  {"param", nullptr},
                  {"code", code.empty() ? Json(nullptr) : Json(std::string(code))}}}};
  }
  out.body = body.dump();
  return out;
}

ChatResponse canned_response(const MockRequest& req, std::string_view text) {
  Behavior b;
  b.text = std::string(text);
  return canned_response(req, b);
}

ChatResponse canned_response(const MockRequest& req, const Behavior& b) {
  std::string_view text = b.text;
  ChatResponse r;
  r.id = "mock-" + std::to_string(fnv1a64(req.model) & 0xffffffffULL);
  r.model = req.model;
  r.created = 1'767'225'600;
  Choice c;
  c.message.role = "assistant";
  bool tools_allowed = !req.request.tools.empty() &&
                       !(req.request.tool_choice.is_string() && req.request.tool_choice.get<std::string>() == "none");
  if (tools_allowed) {
    std::string name = req.request.tools.front().name;
    if (req.request.tool_choice.is_object()) {
      const auto& f = req.request.tool_choice.value("function", Json::object());
      if (f.is_object() && f.contains("name") && f["name"].is_string()) name = f["name"].get<std::string>();
    }
    c.message.content_null = true;
    c.message.tool_calls.push_back(ToolCall{"call_mock0001", name, b.tool_arguments});
    c.finish_reason = "tool_calls";
  } else {
    c.message.content.push_back(ContentPart{.type = ContentPart::Type::text, .text = std::string(text), .url = {}, .detail = {}, .data = {}, .cache_control = {}});
    c.finish_reason = "stop";
  }
  r.choices.push_back(std::move(c));
  std::size_t chars = 0;
  for (const auto& m : req.request.messages) chars += m.text().size() + 4;
  r.usage.prompt_tokens = static_cast<std::int64_t>(std::max<std::size_t>(1, chars / 4));
  r.usage.completion_tokens = static_cast<std::int64_t>(std::max<std::size_t>(1, text.size() / 4));
  r.usage.cached_tokens = b.cache_read_tokens;
  r.usage.cache_write_tokens = b.cache_write_tokens;
  r.usage.prompt_tokens += b.cache_read_tokens + b.cache_write_tokens;
  return r;
}

}  // namespace modelux::mock
