// Gemini generateContent, server side (what the mock provider speaks).
#include "testing/server_codecs.hpp"

namespace modelux::wire {
namespace {

std::string_view gemini_finish(std::string_view finish) {
  if (finish == "length") return "MAX_TOKENS";
  if (finish == "content_filter") return "SAFETY";
  return "STOP";  // tool calls also end in STOP on Gemini
}

Json usage_json(const Usage& u) {
  Json j = {{"promptTokenCount", u.prompt_tokens},
            {"candidatesTokenCount", u.completion_tokens - u.reasoning_tokens},
            {"totalTokenCount", u.prompt_tokens + u.completion_tokens}};
  if (u.cached_tokens) j["cachedContentTokenCount"] = u.cached_tokens;
  if (u.reasoning_tokens) j["thoughtsTokenCount"] = u.reasoning_tokens;
  return j;
}

Json parts_of(const Message& m) {
  Json parts = Json::array();
  std::string text = m.text();
  if (!text.empty()) parts.push_back({{"text", text}});
  for (const auto& tc : m.tool_calls) {
    auto args = parse_json(tc.arguments);
    parts.push_back({{"functionCall", {{"name", tc.name}, {"args", args && args->is_object() ? *args : Json::object()}}}});
  }
  return parts;
}

}  // namespace

Result<ChatRequest> gemini_request_from_native(const Json& j, std::string_view model) {
  ChatRequest r;
  r.model = std::string(model);
  if (const Json* si = jobj(j, "systemInstruction")) {
    Message sys;
    sys.role = "system";
    if (const Json* parts = jarr(*si, "parts"))
      for (const auto& p : *parts) {
        ContentPart cp;
        cp.text = jstr(p, "text");
        sys.content.push_back(std::move(cp));
      }
    r.messages.push_back(std::move(sys));
  }
  const Json* contents = jarr(j, "contents");
  if (!contents || contents->empty())
    return fail(ErrorKind::bad_request, "contents is not specified", "contents");
  int call_no = 0;
  for (std::size_t i = 0; i < contents->size(); ++i) {
    const Json& c = (*contents)[i];
    std::string path = "contents[" + std::to_string(i) + "]";
    std::string role = jstr(c, "role", "user");
    if (role != "user" && role != "model")
      return fail(ErrorKind::bad_request, "Please use a valid role: user, model.", path + ".role");
    const Json* parts = jarr(c, "parts");
    if (!parts) return fail(ErrorKind::bad_request, "parts is required", path + ".parts");
    Message m;
    m.role = role == "model" ? "assistant" : "user";
    m.content_is_string = false;
    for (const auto& p : *parts) {
      if (p.contains("text") && p["text"].is_string()) {
        ContentPart cp;
        cp.text = p["text"].get<std::string>();
        m.content.push_back(std::move(cp));
      } else if (const Json* d = jobj(p, "inlineData")) {
        ContentPart cp;
        cp.type = ContentPart::Type::image_url;
        cp.url = make_data_uri(jstr(*d, "mimeType"), jstr(*d, "data"));
        m.content.push_back(std::move(cp));
      } else if (const Json* f = jobj(p, "fileData")) {
        ContentPart cp;
        cp.type = ContentPart::Type::image_url;
        cp.url = jstr(*f, "fileUri");
        m.content.push_back(std::move(cp));
      } else if (const Json* fc = jobj(p, "functionCall")) {
        std::string id = jstr(*fc, "id", "call_0_" + std::to_string(call_no++));
        m.tool_calls.push_back(ToolCall{id, jstr(*fc, "name"), fc->contains("args") ? (*fc)["args"].dump() : "{}"});
      } else if (const Json* fr = jobj(p, "functionResponse")) {
        Message t;
        t.role = "tool";
        t.name = jstr(*fr, "name");
        t.tool_call_id = jstr(*fr, "id", t.name);
        ContentPart cp;
        cp.text = fr->contains("response") ? (*fr)["response"].dump() : "{}";
        t.content.push_back(std::move(cp));
        r.messages.push_back(std::move(t));
      }
    }
    if (!m.content.empty() || !m.tool_calls.empty()) {
      if (m.content.empty()) m.content_null = true;
      r.messages.push_back(std::move(m));
    }
  }
  if (const Json* tools = jarr(j, "tools"))
    for (const auto& t : *tools)
      if (const Json* decls = jarr(t, "functionDeclarations"))
        for (const auto& d : *decls) {
          Tool tool;
          tool.name = jstr(d, "name");
          tool.description = jstr(d, "description");
          // JSON Schema in parametersJsonSchema, or the OpenAPI subset in parameters: one of them.
          if (d.contains("parameters") && d.contains("parametersJsonSchema"))
            return fail(ErrorKind::bad_request, "parameters and parametersJsonSchema are mutually exclusive",
                        "tools.functionDeclarations.parametersJsonSchema");
          tool.parameters = d.contains("parametersJsonSchema") ? d["parametersJsonSchema"]
                            : d.contains("parameters")         ? d["parameters"]
                                                               : Json::object();
          r.tools.push_back(std::move(tool));
        }
  if (const Json* tc = jobj(j, "toolConfig"))
    if (const Json* fcc = jobj(*tc, "functionCallingConfig")) {
      std::string mode = jstr(*fcc, "mode");
      const Json* allowed = jarr(*fcc, "allowedFunctionNames");
      if (mode == "ANY" && allowed && allowed->size() == 1 && (*allowed)[0].is_string())
        r.tool_choice = {{"type", "function"}, {"function", {{"name", (*allowed)[0]}}}};
      else if (mode == "ANY") r.tool_choice = "required";
      else if (mode == "NONE") r.tool_choice = "none";
      else if (mode == "AUTO") r.tool_choice = "auto";
    }
  if (const Json* g = jobj(j, "generationConfig")) {
    if (g->contains("temperature") && (*g)["temperature"].is_number()) r.temperature = (*g)["temperature"].get<double>();
    if (g->contains("topP") && (*g)["topP"].is_number()) r.top_p = (*g)["topP"].get<double>();
    if (g->contains("maxOutputTokens")) r.max_tokens = jint(*g, "maxOutputTokens");
    if (g->contains("candidateCount")) r.n = jint(*g, "candidateCount");
    if (g->contains("seed")) r.seed = jint(*g, "seed");
    if (const Json* s = jarr(*g, "stopSequences"))
      for (const auto& x : *s)
        if (x.is_string()) r.stop.push_back(x.get<std::string>());
    if (jstr(*g, "responseMimeType") == "application/json") {
      if (g->contains("responseJsonSchema"))
        r.response_format = {{"type", "json_schema"}, {"json_schema", {{"name", "response"}, {"schema", (*g)["responseJsonSchema"]}}}};
      else
        r.response_format = {{"type", "json_object"}};
    }
  }
  return r;
}

Json gemini_response_to_native(const ChatResponse& r) {
  Json cands = Json::array();
  for (const auto& c : r.choices)
    cands.push_back({{"content", {{"role", "model"}, {"parts", parts_of(c.message)}}},
                     {"finishReason", std::string(gemini_finish(c.finish_reason))},
                     {"index", c.index}});
  return {{"candidates", std::move(cands)}, {"usageMetadata", usage_json(r.usage)}, {"modelVersion", r.model}, {"responseId", r.id}};
}

std::vector<std::string> gemini_stream_events(const ChatResponse& r, int chunks) {
  // One GenerateContentResponse per event: text pieces, then whole function calls, with the
  // finishReason and the (cumulative) usage on the last one.
  std::vector<std::string> out;
  const Choice* c = r.choices.empty() ? nullptr : &r.choices.front();
  std::vector<Json> parts;
  if (c) {
    std::string text = c->message.text();
    if (!text.empty())
      for (auto& piece : split_text(text, chunks)) parts.push_back({{"text", piece}});
    for (const auto& tc : c->message.tool_calls) {
      auto args = parse_json(tc.arguments);
      parts.push_back({{"functionCall", {{"name", tc.name}, {"args", args && args->is_object() ? *args : Json::object()}}}});
    }
  }
  if (parts.empty()) parts.push_back({{"text", ""}});
  for (std::size_t i = 0; i < parts.size(); ++i) {
    Json cand = {{"content", {{"role", "model"}, {"parts", Json::array({parts[i]})}}}, {"index", 0}};
    Json ev = {{"modelVersion", r.model}, {"responseId", r.id}};
    if (i + 1 == parts.size()) {
      cand["finishReason"] = std::string(gemini_finish(c ? c->finish_reason : "stop"));
      ev["usageMetadata"] = usage_json(r.usage);
    }
    ev["candidates"] = Json::array({std::move(cand)});
    out.push_back(sse_event("", ev.dump()));
  }
  return out;
}

Json gemini_error_body(int status, std::string_view message) {
  std::string st;
  switch (status) {
    case 400: st = "INVALID_ARGUMENT"; break;
    case 401: st = "UNAUTHENTICATED"; break;
    case 403: st = "PERMISSION_DENIED"; break;
    case 404: st = "NOT_FOUND"; break;
    case 429: st = "RESOURCE_EXHAUSTED"; break;
    case 499: st = "CANCELLED"; break;
    case 503:
    case 529: st = "UNAVAILABLE"; break;
    case 504: st = "DEADLINE_EXCEEDED"; break;
    default: st = status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT";
  }
  return {{"error", {{"code", status}, {"message", std::string(message)}, {"status", st}}}};
}

}  // namespace modelux::wire
