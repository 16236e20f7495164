// The unified chat types <-> OpenAI Chat Completions JSON.
#include <algorithm>

#include "modelux/wire.hpp"
#include "wire/codecs.hpp"

namespace modelux {

namespace {

std::string idx(const std::string& path, std::size_t i) { return path + "[" + std::to_string(i) + "]"; }

// Depth check without recursion limits of our own making: nlohmann parses recursively, so a
// hostile body must be rejected before parsing by counting bracket nesting.
bool depth_ok(std::string_view s, int max_depth) {
  int depth = 0;
  bool in_str = false, esc = false;
  for (char c : s) {
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') --depth;
  }
  return true;
}

Result<std::string> get_str(const Json& o, const char* key, const std::string& path, bool required) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) {
    if (required) return fail(ErrorKind::bad_request, std::string("'") + key + "' is required", path + "." + key);
    return std::string{};
  }
  if (!it->is_string()) return fail(ErrorKind::bad_request, std::string("'") + key + "' must be a string", path + "." + key);
  return it->get<std::string>();
}

std::optional<std::int64_t> get_i64(const Json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end()) return std::nullopt;
  return wire::json_int64(*it);  // a float out of int64's range must not be converted blindly
}

Result<std::vector<ContentPart>> parts_from_json(const Json& c, const std::string& path) {
  std::vector<ContentPart> parts;
  for (std::size_t i = 0; i < c.size(); ++i) {
    const Json& p = c[i];
    std::string pp = idx(path, i);
    if (!p.is_object()) return fail(ErrorKind::bad_request, "content part must be an object", pp);
    auto type = get_str(p, "type", pp, true);
    if (!type) return fail(type.error());
    ContentPart part;
    if (auto cc = p.find("cache_control"); cc != p.end()) part.cache_control = *cc;
    if (*type == "text") {
      auto t = get_str(p, "text", pp, true);
      if (!t) return fail(t.error());
      part.text = std::move(*t);
    } else if (*type == "image_url") {
      part.type = ContentPart::Type::image_url;
      auto iu = p.find("image_url");
      if (iu == p.end()) return fail(ErrorKind::bad_request, "'image_url' is required", pp + ".image_url");
      if (iu->is_string()) part.url = iu->get<std::string>();
      else if (iu->is_object()) {
        auto u = get_str(*iu, "url", pp + ".image_url", true);
        if (!u) return fail(u.error());
        part.url = std::move(*u);
        auto d = get_str(*iu, "detail", pp + ".image_url", false);
        if (d) part.detail = std::move(*d);
      } else return fail(ErrorKind::bad_request, "'image_url' must be an object", pp + ".image_url");
    } else if (*type == "input_audio") {
      part.type = ContentPart::Type::input_audio;
      part.data = p.value("input_audio", Json());
    } else if (*type == "file") {
      part.type = ContentPart::Type::file;
      part.data = p.value("file", Json());
    } else {
      return fail(ErrorKind::bad_request, "unknown content part type '" + *type + "'", pp + ".type");
    }
    parts.push_back(std::move(part));
  }
  return parts;
}

Json parts_to_json(const Message& m) {
  if (m.content_null && m.content.empty()) return nullptr;
  if (m.content_is_string) return m.text();
  Json arr = Json::array();
  for (const auto& p : m.content) {
    Json j;
    switch (p.type) {
      case ContentPart::Type::text: j = {{"type", "text"}, {"text", p.text}}; break;
      case ContentPart::Type::image_url: {
        Json iu = {{"url", p.url}};
        if (!p.detail.empty()) iu["detail"] = p.detail;
        j = {{"type", "image_url"}, {"image_url", iu}};
        break;
      }
      case ContentPart::Type::input_audio: j = {{"type", "input_audio"}, {"input_audio", p.data}}; break;
      case ContentPart::Type::file: j = {{"type", "file"}, {"file", p.data}}; break;
    }
    if (!p.cache_control.is_null()) j["cache_control"] = p.cache_control;
    arr.push_back(std::move(j));
  }
  return arr;
}

Result<std::vector<ToolCall>> tool_calls_from_json(const Json& a, const std::string& path) {
  std::vector<ToolCall> out;
  if (!a.is_array()) return fail(ErrorKind::bad_request, "'tool_calls' must be an array", path);
  for (std::size_t i = 0; i < a.size(); ++i) {
    const Json& t = a[i];
    std::string tp = idx(path, i);
    if (!t.is_object()) return fail(ErrorKind::bad_request, "tool call must be an object", tp);
    ToolCall tc;
    auto id = get_str(t, "id", tp, false);
    if (!id) return fail(id.error());
    tc.id = std::move(*id);
    auto fn = t.find("function");
    if (fn == t.end() || !fn->is_object()) return fail(ErrorKind::bad_request, "'function' is required", tp + ".function");
    auto name = get_str(*fn, "name", tp + ".function", true);
    if (!name) return fail(name.error());
    tc.name = std::move(*name);
    if (auto args = fn->find("arguments"); args != fn->end()) {
      if (args->is_string()) tc.arguments = args->get<std::string>();
      else if (!args->is_null()) tc.arguments = args->dump();
    }
    out.push_back(std::move(tc));
  }
  return out;
}

}  // namespace

std::string Message::text() const {
  std::string s;
  for (const auto& p : content)
    if (p.type == ContentPart::Type::text) s += p.text;
  return s;
}

Message Message::user(std::string text) {
  Message m;
  m.role = "user";
  m.content.push_back(ContentPart{.text = std::move(text)});
  return m;
}
Message Message::system(std::string text) {
  Message m = user(std::move(text));
  m.role = "system";
  return m;
}
Message Message::assistant(std::string text) {
  Message m = user(std::move(text));
  m.role = "assistant";
  return m;
}

std::string ChatResponse::text() const { return choices.empty() ? std::string{} : choices.front().message.text(); }

Result<Json> parse_json(std::string_view text, const ParseLimits& limits) {
  if (text.size() > limits.max_bytes)
    return fail(ErrorKind::bad_request, "body of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                                            std::to_string(limits.max_bytes));
  if (!depth_ok(text, limits.max_depth))
    return fail(ErrorKind::bad_request, "JSON nesting deeper than " + std::to_string(limits.max_depth));
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail(ErrorKind::bad_request, "body is not valid JSON");
  return j;
}

Result<Message> message_from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) return fail(ErrorKind::bad_request, "message must be an object", path);
  Message m;
  auto role = get_str(j, "role", path, true);
  if (!role) return fail(role.error());
  static constexpr std::string_view kRoles[] = {"system", "developer", "user", "assistant", "tool", "function"};
  if (std::find(std::begin(kRoles), std::end(kRoles), *role) == std::end(kRoles))
    return fail(ErrorKind::bad_request, "unknown role '" + *role + "'", path + ".role");
  m.role = std::move(*role);
  auto c = j.find("content");
  if (c == j.end() || c->is_null()) {
    m.content_null = true;
  } else if (c->is_string()) {
    m.content.push_back(ContentPart{.text = c->get<std::string>()});
  } else if (c->is_array()) {
    m.content_is_string = false;
    auto parts = parts_from_json(*c, path + ".content");
    if (!parts) return fail(parts.error());
    m.content = std::move(*parts);
  } else {
    return fail(ErrorKind::bad_request, "'content' must be a string, an array or null", path + ".content");
  }
  auto name = get_str(j, "name", path, false);
  if (!name) return fail(name.error());
  m.name = std::move(*name);
  auto tcid = get_str(j, "tool_call_id", path, m.role == "tool");
  if (!tcid) return fail(tcid.error());
  m.tool_call_id = std::move(*tcid);
  if (auto tc = j.find("tool_calls"); tc != j.end() && !tc->is_null()) {
    auto calls = tool_calls_from_json(*tc, path + ".tool_calls");
    if (!calls) return fail(calls.error());
    m.tool_calls = std::move(*calls);
  }
  if (auto r = j.find("refusal"); r != j.end() && r->is_string()) m.refusal = r->get<std::string>();
  if (m.content_null && m.tool_calls.empty() && m.role != "assistant")
    return fail(ErrorKind::bad_request, "'content' is required", path + ".content");
  return m;
}

Json to_json(const Message& m) {
  Json j = {{"role", m.role}, {"content", parts_to_json(m)}};
  if (!m.name.empty()) j["name"] = m.name;
  if (!m.tool_call_id.empty()) j["tool_call_id"] = m.tool_call_id;
  if (!m.tool_calls.empty()) {
    Json arr = Json::array();
    for (const auto& tc : m.tool_calls)
      arr.push_back({{"id", tc.id}, {"type", "function"}, {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
    j["tool_calls"] = std::move(arr);
  }
  if (m.refusal) j["refusal"] = *m.refusal;
  return j;
}

Result<ChatRequest> chat_request_from_json(const Json& j) {
  if (!j.is_object()) return fail(ErrorKind::bad_request, "request body must be a JSON object", "$");
  ChatRequest r;
  Json extra = Json::object();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const Json& v = it.value();
    const std::string path = "$." + k;
    auto bad = [&](const char* what) { return fail(ErrorKind::bad_request, "'" + k + "' " + what, path); };
    if (k == "model") {
      if (!v.is_string() || v.get_ref<const std::string&>().empty()) return bad("must be a non-empty string");
      r.model = v.get<std::string>();
    } else if (k == "messages") {
      if (!v.is_array()) return bad("must be an array");
      if (v.empty()) return bad("must not be empty");
      r.messages.reserve(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) {
        auto m = message_from_json(v[i], idx(path, i));
        if (!m) return fail(m.error());
        r.messages.push_back(std::move(*m));
      }
    } else if (k == "temperature" || k == "top_p") {
      if (v.is_null()) continue;
      if (!v.is_number()) return bad("must be a number");
      (k == "temperature" ? r.temperature : r.top_p) = v.get<double>();
    } else if (k == "max_tokens" || k == "max_completion_tokens") {
      if (v.is_null()) continue;
      if (!v.is_number_integer() || v.get<std::int64_t>() < 1) return bad("must be a positive integer");
      r.max_tokens = v.get<std::int64_t>();
      r.max_tokens_is_completion = (k == "max_completion_tokens");
    } else if (k == "n" || k == "seed") {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) return bad("must be an integer");
      (k == "n" ? r.n : r.seed) = v.get<std::int64_t>();
    } else if (k == "stop") {
      if (v.is_string()) r.stop.push_back(v.get<std::string>());
      else if (v.is_array()) {
        for (const auto& s : v) {
          if (!s.is_string()) return bad("must be a string or an array of strings");
          r.stop.push_back(s.get<std::string>());
        }
      } else if (!v.is_null()) return bad("must be a string or an array of strings");
    } else if (k == "stream") {
      if (v.is_null()) continue;
      if (!v.is_boolean()) return bad("must be a boolean");
      r.stream = v.get<bool>();
    } else if (k == "stream_options") {
      if (v.is_null()) continue;
      if (!v.is_object()) return bad("must be an object");
      if (auto iu = v.find("include_usage"); iu != v.end() && !iu->is_null() && !iu->is_boolean())
        return fail(ErrorKind::bad_request, "'include_usage' must be a boolean", path + ".include_usage");
      r.include_usage = wire::jbool(v, "include_usage");
    } else if (k == "tools") {
      if (v.is_null()) continue;
      if (!v.is_array()) return bad("must be an array");
      for (std::size_t i = 0; i < v.size(); ++i) {
        const Json& t = v[i];
        std::string tp = idx(path, i);
        auto ty = t.is_object() ? t.find("type") : t.end();
        if (!t.is_object() || (ty != t.end() && !(ty->is_string() && ty->get_ref<const std::string&>() == "function")))
          return fail(ErrorKind::bad_request, "only function tools are supported", tp);
        auto fn = t.find("function");
        if (fn == t.end() || !fn->is_object()) return fail(ErrorKind::bad_request, "'function' is required", tp + ".function");
        Tool tool;
        auto name = get_str(*fn, "name", tp + ".function", true);
        if (!name) return fail(name.error());
        tool.name = std::move(*name);
        auto desc = get_str(*fn, "description", tp + ".function", false);
        if (!desc) return fail(desc.error());
        tool.description = std::move(*desc);
        tool.parameters = fn->value("parameters", Json());
        tool.strict = fn->value("strict", false);
        if (auto cc = t.find("cache_control"); cc != t.end()) tool.cache_control = *cc;
        r.tools.push_back(std::move(tool));
      }
    } else if (k == "tool_choice") {
      if (!v.is_null() && !v.is_string() && !v.is_object()) return bad("must be a string or an object");
      r.tool_choice = v;
    } else if (k == "parallel_tool_calls") {
      if (v.is_null()) continue;
      if (!v.is_boolean()) return bad("must be a boolean");
      r.parallel_tool_calls = v.get<bool>();
    } else if (k == "response_format") {
      if (v.is_null()) continue;
      if (!v.is_object() || !v.contains("type") || !v["type"].is_string()) return bad("must be an object with a 'type'");
      const auto& t = v["type"].get_ref<const std::string&>();
      if (t != "text" && t != "json_object" && t != "json_schema") return bad("has an unknown type");
      r.response_format = v;
    } else if (k == "user") {
      if (v.is_null()) continue;
      if (!v.is_string()) return bad("must be a string");
      r.user = v.get<std::string>();
    } else if (k == "metadata") {
      if (!v.is_null() && !v.is_object()) return bad("must be an object");
      r.metadata = v;
    } else {
      extra[k] = v;
    }
  }
  if (r.model.empty()) return fail(ErrorKind::bad_request, "'model' is required", "$.model");
  if (r.messages.empty()) return fail(ErrorKind::bad_request, "'messages' is required", "$.messages");
  if (!extra.empty()) r.extra = std::move(extra);
  return r;
}

Result<ChatRequest> parse_chat_request(std::string_view body, const ParseLimits& limits) {
  // A plain body is read without a DOM, to the same ChatRequest (openai_direct.cpp).
  if (auto plain = wire::read_plain_chat_request(body, limits)) return std::move(*plain);
  auto j = parse_json(body, limits);
  if (!j) return fail(j.error());
  return chat_request_from_json(*j);
}

Json to_json(const ChatRequest& r) {
  Json j = {{"model", r.model}};
  Json msgs = Json::array();
  for (const auto& m : r.messages) msgs.push_back(to_json(m));
  j["messages"] = std::move(msgs);
  if (r.temperature) j["temperature"] = *r.temperature;
  if (r.top_p) j["top_p"] = *r.top_p;
  if (r.max_tokens) j[r.max_tokens_is_completion ? "max_completion_tokens" : "max_tokens"] = *r.max_tokens;
  if (r.n) j["n"] = *r.n;
  if (r.seed) j["seed"] = *r.seed;
  if (!r.stop.empty()) j["stop"] = r.stop;
  if (r.stream) {
    j["stream"] = true;
    if (r.include_usage) j["stream_options"] = {{"include_usage", true}};
  }
  if (!r.tools.empty()) {
    Json tools = Json::array();
    for (const auto& t : r.tools) {
      Json fn = {{"name", t.name}};
      if (!t.description.empty()) fn["description"] = t.description;
      if (!t.parameters.is_null()) fn["parameters"] = t.parameters;
      if (t.strict) fn["strict"] = true;
      tools.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    j["tools"] = std::move(tools);
  }
  if (!r.tool_choice.is_null()) j["tool_choice"] = r.tool_choice;
  if (r.parallel_tool_calls) j["parallel_tool_calls"] = *r.parallel_tool_calls;
  if (!r.response_format.is_null()) j["response_format"] = r.response_format;
  if (!r.user.empty()) j["user"] = r.user;
  if (!r.metadata.is_null()) j["metadata"] = r.metadata;
  if (r.extra.is_object())
    for (auto it = r.extra.begin(); it != r.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

Json to_json(const Usage& u) {
  Json j = {{"prompt_tokens", u.prompt_tokens}, {"completion_tokens", u.completion_tokens}, {"total_tokens", u.total()}};
  j["prompt_tokens_details"] = {{"cached_tokens", u.cached_tokens}};
  if (u.cache_write_tokens) j["prompt_tokens_details"]["cache_write_tokens"] = u.cache_write_tokens;
  j["completion_tokens_details"] = {{"reasoning_tokens", u.reasoning_tokens}};
  return j;
}

Usage usage_from_openai_json(const Json& j) {
  Usage u;
  if (!j.is_object()) return u;
  u.prompt_tokens = get_i64(j, "prompt_tokens").value_or(0);
  u.completion_tokens = get_i64(j, "completion_tokens").value_or(0);
  if (auto d = j.find("prompt_tokens_details"); d != j.end() && d->is_object()) {
    u.cached_tokens = get_i64(*d, "cached_tokens").value_or(0);
    u.cache_write_tokens = get_i64(*d, "cache_write_tokens").value_or(0);
  }
  // DeepSeek reports cache hits at the top level.
  if (auto hit = get_i64(j, "prompt_cache_hit_tokens")) u.cached_tokens = *hit;
  if (auto d = j.find("completion_tokens_details"); d != j.end() && d->is_object())
    u.reasoning_tokens = get_i64(*d, "reasoning_tokens").value_or(0);
  return u;
}

Json to_json(const ChatResponse& r) {
  Json choices = Json::array();
  for (const auto& c : r.choices) {
    Json msg = to_json(c.message);
    if (!msg.contains("refusal")) msg["refusal"] = nullptr;
    choices.push_back({{"index", c.index}, {"message", std::move(msg)}, {"logprobs", nullptr},
                       {"finish_reason", c.finish_reason.empty() ? Json(nullptr) : Json(c.finish_reason)}});
  }
  Json j = {{"id", r.id}, {"object", "chat.completion"}, {"created", r.created}, {"model", r.model},
            {"choices", std::move(choices)}, {"usage", to_json(r.usage)}};
  if (!r.system_fingerprint.empty()) j["system_fingerprint"] = r.system_fingerprint;
  return j;
}

Result<ChatResponse> chat_response_from_json(const Json& j) {
  if (!j.is_object()) return fail(ErrorKind::malformed_response, "response is not a JSON object");
  if (j.contains("error")) return fail(ErrorKind::malformed_response, "response carries an error object");
  ChatResponse r;
  r.id = wire::jstr(j, "id");  // a provider's odd types must not throw
  r.model = wire::jstr(j, "model");
  r.created = get_i64(j, "created").value_or(0);
  r.system_fingerprint = j.contains("system_fingerprint") && j["system_fingerprint"].is_string()
                             ? j["system_fingerprint"].get<std::string>() : std::string{};
  auto ch = j.find("choices");
  if (ch == j.end() || !ch->is_array()) return fail(ErrorKind::malformed_response, "response has no 'choices' array");
  for (std::size_t i = 0; i < ch->size(); ++i) {
    const Json& c = (*ch)[i];
    if (!c.is_object()) return fail(ErrorKind::malformed_response, "choice is not an object");
    Choice choice;
    choice.index = static_cast<int>(get_i64(c, "index").value_or(static_cast<std::int64_t>(i)));
    auto msg = c.find("message");
    if (msg == c.end()) return fail(ErrorKind::malformed_response, "choice has no 'message'");
    Json mj = *msg;
    if (mj.is_object() && !mj.contains("role")) mj["role"] = "assistant";
    auto m = message_from_json(mj, "$.choices[" + std::to_string(i) + "].message");
    if (!m) return fail(ErrorKind::malformed_response, m.error().message + " at " + m.error().path);
    choice.message = std::move(*m);
    if (auto fr = c.find("finish_reason"); fr != c.end() && fr->is_string()) choice.finish_reason = fr->get<std::string>();
    r.choices.push_back(std::move(choice));
  }
  if (auto u = j.find("usage"); u != j.end()) r.usage = usage_from_openai_json(*u);
  return r;
}

Json to_json(const ChatChunk& c) {
  Json choices = Json::array();
  for (const auto& ch : c.choices) {
    Json delta = Json::object();
    if (!ch.role.empty()) delta["role"] = ch.role;
    if (ch.content) delta["content"] = *ch.content;
    if (!ch.tool_calls.empty()) {
      Json tcs = Json::array();
      for (const auto& t : ch.tool_calls) {
        Json tj = {{"index", t.index}};
        Json fn = {{"arguments", t.arguments}};
        if (!t.id.empty()) {
          tj["id"] = t.id;
          tj["type"] = "function";
        }
        if (!t.name.empty()) fn["name"] = t.name;
        tj["function"] = std::move(fn);
        tcs.push_back(std::move(tj));
      }
      delta["tool_calls"] = std::move(tcs);
    }
    choices.push_back({{"index", ch.index}, {"delta", std::move(delta)}, {"logprobs", nullptr},
                       {"finish_reason", ch.finish_reason.empty() ? Json(nullptr) : Json(ch.finish_reason)}});
  }
  Json j = {{"id", c.id}, {"object", "chat.completion.chunk"}, {"created", c.created}, {"model", c.model},
            {"choices", std::move(choices)}};
  j["usage"] = c.usage ? to_json(*c.usage) : Json(nullptr);
  return j;
}

Result<ChatChunk> chat_chunk_from_json(const Json& j) {
  if (!j.is_object()) return fail(ErrorKind::malformed_response, "stream chunk is not a JSON object");
  if (auto e = j.find("error"); e != j.end()) {
    std::string msg = "error event in stream";
    if (e->is_object() && (*e).contains("message") && (*e)["message"].is_string()) msg = (*e)["message"].get<std::string>();
    return fail(ErrorKind::stream_interrupted, msg);
  }
  ChatChunk c;
  c.id = wire::jstr(j, "id");
  c.model = wire::jstr(j, "model");
  c.created = get_i64(j, "created").value_or(0);
  if (auto ch = j.find("choices"); ch != j.end() && ch->is_array()) {
    for (const auto& cj : *ch) {
      if (!cj.is_object()) return fail(ErrorKind::malformed_response, "chunk choice is not an object");
      ChunkChoice cc;
      cc.index = static_cast<int>(get_i64(cj, "index").value_or(0));
      if (auto fr = cj.find("finish_reason"); fr != cj.end() && fr->is_string()) cc.finish_reason = fr->get<std::string>();
      if (auto d = cj.find("delta"); d != cj.end() && d->is_object()) {
        if (auto role = d->find("role"); role != d->end() && role->is_string()) cc.role = role->get<std::string>();
        if (auto ct = d->find("content"); ct != d->end() && ct->is_string()) cc.content = ct->get<std::string>();
        if (auto tcs = d->find("tool_calls"); tcs != d->end() && tcs->is_array()) {
          for (const auto& t : *tcs) {
            if (!t.is_object()) continue;
            ToolCallDelta td;
            td.index = static_cast<int>(get_i64(t, "index").value_or(0));
            if (auto id = t.find("id"); id != t.end() && id->is_string()) td.id = id->get<std::string>();
            if (auto fn = t.find("function"); fn != t.end() && fn->is_object()) {
              if (auto n = fn->find("name"); n != fn->end() && n->is_string()) td.name = n->get<std::string>();
              if (auto a = fn->find("arguments"); a != fn->end() && a->is_string()) td.arguments = a->get<std::string>();
            }
            cc.tool_calls.push_back(std::move(td));
          }
        }
      }
      c.choices.push_back(std::move(cc));
    }
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) c.usage = usage_from_openai_json(*u);
  return c;
}

std::string encode_sse_chunk(const ChatChunk& c) {
  std::string s = "data: ";
  s += to_json(c).dump(-1, ' ', false, Json::error_handler_t::replace);
  s += "\n\n";
  return s;
}

std::string_view openai_error_type(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::auth: return "authentication_error";
    case ErrorKind::not_found: return "not_found_error";
    case ErrorKind::rate_limited:
    case ErrorKind::quota_exceeded: return "rate_limit_error";
    case ErrorKind::budget_exceeded: return "budget_exceeded";
    case ErrorKind::timeout: return "timeout_error";
    case ErrorKind::bad_request:
    case ErrorKind::context_length:
    case ErrorKind::unsupported:
    case ErrorKind::content_filter:
    case ErrorKind::invalid_config: return "invalid_request_error";
    default: return "api_error";
  }
}

namespace {
/// One code per error kind, whichever provider produced it (OpenAI's spelling where OpenAI
/// has one), so a caller's error handling does not depend on the provider that answered.
std::string_view provider_error_code(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::rate_limited: return "rate_limit_exceeded";
    case ErrorKind::quota_exceeded: return "insufficient_quota";
    case ErrorKind::context_length: return "context_length_exceeded";
    case ErrorKind::auth: return "provider_auth_failed";  // the provider refused our key, not the caller's
    default: return to_string(kind);
  }
}
}  // namespace

Json openai_error_json(const Error& e) {
  // An error from a provider gets the normalized code; its native code ("RESOURCE_EXHAUSTED",
  // "overloaded_error"...) and the provider's name ride along for debugging. modelux's own
  // errors keep their code ("model_not_found", "invalid_api_key"...).
  const bool from_provider = !e.provider.empty();
  std::string code = from_provider || e.code.empty()
                         ? std::string(from_provider ? provider_error_code(e.kind) : to_string(e.kind))
                         : e.code;
  Json err = {{"message", e.message}, {"type", openai_error_type(e.kind)},
              {"param", e.path.empty() ? Json(nullptr) : Json(e.path)}, {"code", std::move(code)}};
  if (from_provider) {
    err["provider"] = e.provider;
    if (!e.code.empty()) err["provider_code"] = e.code;
  }
  return {{"error", std::move(err)}};
}

void ChunkAccumulator::add(const ChatChunk& c) {
  ++chunks_;
  if (r_.id.empty()) r_.id = c.id;
  if (r_.model.empty()) r_.model = c.model;
  if (!r_.created) r_.created = c.created;
  for (const auto& ch : c.choices) {
    if (ch.index < 0 || ch.index > 127) continue;
    auto i = static_cast<std::size_t>(ch.index);
    while (r_.choices.size() <= i) {
      Choice nc;
      nc.index = static_cast<int>(r_.choices.size());
      nc.message.role = "assistant";
      r_.choices.push_back(std::move(nc));
      calls_.emplace_back();
    }
    Choice& dst = r_.choices[i];
    if (ch.content) {
      if (dst.message.content.empty()) dst.message.content.push_back(ContentPart{});
      dst.message.content.front().text += *ch.content;
    }
    for (const auto& t : ch.tool_calls) {
      if (t.index < 0 || t.index > 127) continue;
      auto& calls = calls_[i];
      while (calls.size() <= static_cast<std::size_t>(t.index)) calls.emplace_back();
      auto& call = calls[static_cast<std::size_t>(t.index)];
      if (!t.id.empty()) call.id = t.id;
      if (!t.name.empty()) call.name = t.name;
      call.arguments += t.arguments;
    }
    if (!ch.finish_reason.empty()) {
      dst.finish_reason = ch.finish_reason;
      saw_finish_ = true;
    }
  }
  if (c.usage) r_.usage = *c.usage;
}

ChatResponse ChunkAccumulator::finish() const {
  ChatResponse r = r_;
  for (std::size_t i = 0; i < r.choices.size(); ++i) {
    r.choices[i].message.tool_calls = calls_[i];
    if (r.choices[i].message.content.empty()) r.choices[i].message.content_null = true;
  }
  return r;
}

}  // namespace modelux
