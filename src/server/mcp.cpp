// The MCP endpoint (POST /mcp): the Model Context Protocol over streamable HTTP, answered with
// application/json only (no SSE stream, no session id: every POST carries its own key).
//
// Tools are generated at run time from the embedded OpenAPI document (docs/openapi.json): one
// tool per admin operation (every operation under /v1/ that answers JSON, is not tagged
// "data plane", "probes" or "mcp", and that the route table serves), named by its operationId, described by its summary and description, its
// input schema made of the path, query and header parameters plus a `body` property holding
// the request body's schema. So a REST endpoint added to the document and the route table is
// a tool at once, and tools never drift from the API.
//
// tools/call and resources/read dispatch in-process through the route table (admit() + serve()),
// with the caller's own key headers: the same key, role and project checks as the REST request,
// and the same handler. A viewer key lists only the tools its role may call; calling another
// one is refused by the route table exactly like the REST call (403).
//
// Threading: the tool catalog is built once (a function-local static) and read-only after;
// a request runs on its connection's strand like every route.
#include <algorithm>
#include <regex>
#include <variant>

#include "modelux/core.hpp"
#include "modelux/scrub.hpp"
#include "server/mcp.hpp"
#include "server/routes.hpp"

namespace modelux::embedded {
extern const std::string_view kOpenApiJson;
}

namespace modelux::proxy {

namespace {

// Newest first: the answer to an initialize asking for a version we do not know.
constexpr std::string_view kProtocolVersions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};

bool known_protocol_version(std::string_view v) {
  return std::find(std::begin(kProtocolVersions), std::end(kProtocolVersions), v) != std::end(kProtocolVersions);
}

// JSON-RPC 2.0 error codes (and MCP's resource-not-found).
constexpr int kParseError = -32700, kInvalidRequest = -32600, kMethodNotFound = -32601, kInvalidParams = -32602,
              kInternalError = -32603, kResourceNotFound = -32002;

struct ToolParam {
  std::string name;
  std::string in;  ///< path, query or header
  bool required = false;
};

struct Tool {
  std::string name;
  std::string method;   ///< upper case
  std::string pattern;  ///< "/v1/configs/{slug}"
  std::vector<ToolParam> params;
  bool has_body = false;
  Json def;  ///< the MCP Tool object: name, title, description, inputSchema, annotations
  const Route* route = nullptr;
};

// ---- OpenAPI → tools ---------------------------------------------------------------------

// Follows a local "#/a/b" reference (JSON Pointer, ~0 ~1 escapes); null when it leads nowhere.
const Json* follow_ref(const Json& doc, std::string_view ref) {
  if (!ref.starts_with("#/")) return nullptr;
  const Json* cur = &doc;
  std::string_view rest = ref.substr(2);
  while (true) {
    auto slash = rest.find('/');
    std::string token;
    const std::string_view raw = rest.substr(0, slash);
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '~' && i + 1 < raw.size() && (raw[i + 1] == '0' || raw[i + 1] == '1')) {
        token.push_back(raw[i + 1] == '1' ? '/' : '~');
        ++i;
      } else {
        token.push_back(raw[i]);
      }
    }
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(token);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    if (slash == std::string_view::npos) return cur;
    rest = rest.substr(slash + 1);
  }
}

// The schema with every $ref inlined (an MCP inputSchema must stand alone). Cycles and very
// deep nesting end in {} (any value): the REST handler still validates the body in full.
Json inline_refs(const Json& doc, const Json& s, int depth = 0) {
  if (depth > 24) return Json::object();
  if (s.is_array()) {
    Json out = Json::array();
    for (const auto& v : s) out.push_back(inline_refs(doc, v, depth + 1));
    return out;
  }
  if (!s.is_object()) return s;
  if (auto it = s.find("$ref"); it != s.end() && it->is_string()) {
    const Json* target = follow_ref(doc, it->get_ref<const std::string&>());
    Json out = target ? inline_refs(doc, *target, depth + 1) : Json::object();
    if (!out.is_object()) out = Json::object();
    for (const auto& [k, v] : s.items())
      if (k != "$ref") out[k] = inline_refs(doc, v, depth + 1);
    return out;
  }
  Json out = Json::object();
  for (const auto& [k, v] : s.items()) out[k] = inline_refs(doc, v, depth + 1);
  return out;
}

std::string upper(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

std::string_view access_words(Access a) {
  switch (a) {
    case Access::open: return "no key";
    case Access::read: return "any key (viewer, project or admin; non-admin keys see their own project)";
    case Access::data: return "a project or admin key";
    case Access::admin: return "an admin key";
  }
  return "";
}

// An operation whose success answers are all something else than JSON (a page, an asset, a
// text export) is not a tool: an agent gets nothing useful from it.
bool answers_json(const Json& op) {
  auto responses = op.find("responses");
  if (responses == op.end() || !responses->is_object()) return true;
  bool any_content = false;
  for (const auto& [status, r] : responses->items()) {
    if (status.empty() || status[0] != '2' || !r.is_object()) continue;
    auto content = r.find("content");
    if (content == r.end() || !content->is_object() || content->empty()) continue;
    any_content = true;
    if (content->contains("application/json")) return true;
  }
  return !any_content;
}

// One tool per admin operation of the document, in the document's order.
std::vector<Tool> build_tools(const Json& doc) {
  std::vector<Tool> tools;
  if (!doc.is_object() || !doc.contains("paths") || !doc["paths"].is_object()) return tools;
  for (const auto& [path, item] : doc["paths"].items()) {
    if (!item.is_object()) continue;
    for (const auto& [m, op] : item.items()) {
      static const std::string_view kMethods[] = {"get", "put", "post", "delete", "patch"};
      if (std::find(std::begin(kMethods), std::end(kMethods), m) == std::end(kMethods) || !op.is_object()) continue;
      if (!op.contains("operationId") || !op["operationId"].is_string()) continue;
      bool admin_op = true;
      if (auto t = op.find("tags"); t != op.end() && t->is_array())
        for (const auto& tag : *t)
          if (tag == "data plane" || tag == "probes" || tag == "mcp") admin_op = false;
      if (!admin_op || !path.starts_with("/v1/") || !answers_json(op)) continue;
      Tool tool;
      tool.name = op["operationId"].get<std::string>();
      tool.method = upper(m);
      tool.pattern = path;
      tool.route = find_route(tool.method, tool.pattern);
      if (!tool.route) continue;  // documented but not served: no tool that can only fail

      Json props = Json::object(), required = Json::array();
      // Path-item parameters first, then the operation's (which override by name and place).
      std::vector<Json> params;
      auto add_params = [&](const Json& holder) {
        auto it = holder.find("parameters");
        if (it == holder.end() || !it->is_array()) return;
        for (const auto& raw : *it) {
          Json p = inline_refs(doc, raw);
          if (!p.is_object() || !p.contains("name") || !p["name"].is_string()) continue;
          std::erase_if(params, [&](const Json& q) { return q["name"] == p["name"] && q.value("in", "") == p.value("in", ""); });
          params.push_back(std::move(p));
        }
      };
      add_params(item);
      add_params(op);
      for (const auto& p : params) {
        ToolParam tp{p["name"].get<std::string>(), p.value("in", std::string{}), p.value("required", false)};
        if (tp.in != "path" && tp.in != "query" && tp.in != "header") continue;
        if (tp.in == "path") tp.required = true;
        Json schema = p.contains("schema") && p["schema"].is_object() ? p["schema"] : Json::object();
        if (auto d = p.find("description"); d != p.end() && d->is_string() && !schema.contains("description"))
          schema["description"] = *d;
        props[tp.name] = std::move(schema);
        if (tp.required) required.push_back(tp.name);
        tool.params.push_back(std::move(tp));
      }
      if (auto rb = op.find("requestBody"); rb != op.end() && rb->is_object()) {
        Json body = inline_refs(doc, *rb);
        Json schema = Json::object();
        if (auto c = body.find("content"); c != body.end() && c->is_object())
          if (auto js = c->find("application/json"); js != c->end() && js->is_object() && js->contains("schema"))
            schema = (*js)["schema"];
        if (!schema.is_object()) schema = Json::object();
        if (!schema.contains("description"))
          schema["description"] = body.value("description", std::string("The JSON request body of ") + tool.method + " " + path);
        props["body"] = std::move(schema);
        tool.has_body = true;
        if (body.value("required", false)) required.push_back("body");
      }
      Json input = {{"type", "object"}, {"properties", std::move(props)}, {"additionalProperties", false}};
      if (!required.empty()) input["required"] = std::move(required);

      std::string summary = op.value("summary", std::string{});
      std::string description = summary;
      if (auto d = op.find("description"); d != op.end() && d->is_string() && !d->get_ref<const std::string&>().empty())
        description += (description.empty() ? "" : "\n\n") + d->get<std::string>();
      description += (description.empty() ? "" : "\n\n") + std::string("REST: ") + tool.method + " " + path +
                     ". Needs " + std::string(access_words(tool.route->access)) + ".";
      const bool read_only = tool.method == "GET";
      Json annotations = {{"readOnlyHint", read_only},
                          {"destructiveHint", tool.method == "DELETE"},
                          {"idempotentHint", read_only || tool.method == "PUT" || tool.method == "DELETE"},
                          {"openWorldHint", false}};
      if (!summary.empty()) annotations["title"] = summary;
      tool.def = {{"name", tool.name}, {"description", std::move(description)}, {"inputSchema", std::move(input)},
                  {"annotations", std::move(annotations)}};
      if (!summary.empty()) tool.def["title"] = summary;
      tools.push_back(std::move(tool));
    }
  }
  return tools;
}

const std::vector<Tool>& catalog() {
  static const std::vector<Tool> tools = [] {
    auto doc = parse_json(embedded::kOpenApiJson);
    return doc ? build_tools(*doc) : std::vector<Tool>{};
  }();
  return tools;
}

const Tool* find_tool(std::string_view name) {
  for (const auto& t : catalog())
    if (t.name == name) return &t;
  return nullptr;
}

// ---- argument validation (the JSON Schema keywords the document uses) ----------------------

std::string json_type(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

bool type_matches(std::string_view want, const Json& v) {
  const std::string got = json_type(v);
  if (want == got) return true;
  if (want == "number" && got == "integer") return true;
  if (want == "integer" && got == "number") {
    double d = v.get<double>();
    return d == static_cast<double>(static_cast<long long>(d));
  }
  return false;
}

std::size_t utf8_length(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0) != 0x80; }));
}

void check_schema(const Json& schema, const Json& v, const std::string& at, std::vector<std::string>& errs, int depth = 0) {
  if (depth > 48 || errs.size() >= 8 || !schema.is_object()) return;
  auto fail = [&](std::string msg) {
    if (errs.size() < 8) errs.push_back(at + ": " + std::move(msg));
  };
  if (auto t = schema.find("type"); t != schema.end()) {
    bool ok = false;
    std::string want;
    if (t->is_string()) {
      want = t->get<std::string>();
      ok = type_matches(want, v);
    } else if (t->is_array()) {
      for (const auto& w : *t)
        if (w.is_string()) {
          want += (want.empty() ? "" : " or ") + w.get<std::string>();
          ok = ok || type_matches(w.get<std::string>(), v);
        }
    } else {
      ok = true;
    }
    if (!ok) return fail("expected " + want + ", got " + json_type(v));
  }
  if (auto e = schema.find("enum"); e != schema.end() && e->is_array() &&
                                      std::find(e->begin(), e->end(), v) == e->end())
    return fail("must be one of " + e->dump());
  if (auto c = schema.find("const"); c != schema.end() && *c != v) return fail("must be " + c->dump());
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    const std::size_t n = utf8_length(s);
    if (auto m = schema.find("minLength"); m != schema.end() && m->is_number_unsigned() && n < m->get<std::size_t>())
      return fail("shorter than " + m->dump() + " characters");
    if (auto m = schema.find("maxLength"); m != schema.end() && m->is_number_unsigned() && n > m->get<std::size_t>())
      return fail("longer than " + m->dump() + " characters");
    // The document's patterns are anchored character classes; std::regex recurses per
    // character, so very long strings are left to the REST handler's own checks.
    if (auto p = schema.find("pattern"); p != schema.end() && p->is_string() && s.size() <= 4096) {
      std::regex re;
      bool compiled = true;
      try {
        re = std::regex(p->get<std::string>(), std::regex::ECMAScript);
      } catch (const std::regex_error&) {
        compiled = false;  // a pattern std::regex cannot compile is left to the REST handler
      }
      if (compiled && !std::regex_search(s, re)) return fail("does not match the pattern " + p->get<std::string>());
    }
  }
  if (v.is_number()) {
    const double d = v.get<double>();
    if (auto m = schema.find("minimum"); m != schema.end() && m->is_number() && d < m->get<double>()) return fail("less than " + m->dump());
    if (auto m = schema.find("maximum"); m != schema.end() && m->is_number() && d > m->get<double>()) return fail("more than " + m->dump());
    if (auto m = schema.find("exclusiveMinimum"); m != schema.end() && m->is_number() && d <= m->get<double>())
      return fail("not more than " + m->dump());
    if (auto m = schema.find("exclusiveMaximum"); m != schema.end() && m->is_number() && d >= m->get<double>())
      return fail("not less than " + m->dump());
  }
  if (v.is_object()) {
    if (auto r = schema.find("required"); r != schema.end() && r->is_array())
      for (const auto& k : *r)
        if (k.is_string() && !v.contains(k.get<std::string>())) fail("missing required property '" + k.get<std::string>() + "'");
    const Json* props = schema.contains("properties") && schema["properties"].is_object() ? &schema["properties"] : nullptr;
    auto extra = schema.find("additionalProperties");
    for (const auto& [k, val] : v.items()) {
      if (props && props->contains(k)) {
        check_schema((*props)[k], val, at + "." + k, errs, depth + 1);
      } else if (extra != schema.end()) {
        if (extra->is_boolean() && !extra->get<bool>()) fail("unknown property '" + k + "'");
        else if (extra->is_object()) check_schema(*extra, val, at + "." + k, errs, depth + 1);
      }
    }
  }
  if (v.is_array()) {
    if (auto m = schema.find("minItems"); m != schema.end() && m->is_number_unsigned() && v.size() < m->get<std::size_t>())
      return fail("fewer than " + m->dump() + " items");
    if (auto m = schema.find("maxItems"); m != schema.end() && m->is_number_unsigned() && v.size() > m->get<std::size_t>())
      return fail("more than " + m->dump() + " items");
    if (auto items = schema.find("items"); items != schema.end() && items->is_object())
      for (std::size_t i = 0; i < v.size(); ++i) check_schema(*items, v[i], at + "[" + std::to_string(i) + "]", errs, depth + 1);
  }
  if (auto all = schema.find("allOf"); all != schema.end() && all->is_array())
    for (const auto& s : *all) check_schema(s, v, at, errs, depth + 1);
  for (const char* key : {"anyOf", "oneOf"}) {
    auto any = schema.find(key);
    if (any == schema.end() || !any->is_array() || any->empty()) continue;
    bool one_ok = false;
    for (const auto& s : *any) {
      std::vector<std::string> sub;
      check_schema(s, v, at, sub, depth + 1);
      if (sub.empty()) {
        one_ok = true;
        break;
      }
    }
    if (!one_ok) fail("matches none of the allowed shapes");
  }
}

// ---- in-process dispatch through the route table ------------------------------------------

/// Collects a route's answer instead of writing it to a socket.
class CaptureWriter final : public ResponseWriter {
 public:
  int status = 0;
  std::string content_type, body;
  Headers headers;

  net::awaitable<bool> respond(int s, std::string ct, std::string b, Headers extra) override {
    status = s;
    content_type = std::move(ct);
    body = std::move(b);
    headers = std::move(extra);
    co_return true;
  }
  net::awaitable<bool> start_stream(int s, std::string ct, Headers extra) override {
    status = s;
    content_type = std::move(ct);
    headers = std::move(extra);
    co_return true;
  }
  net::awaitable<bool> write(std::string_view piece) override {
    body.append(piece);
    co_return true;
  }
  net::awaitable<bool> end_stream() override { co_return true; }
  net::awaitable<bool> start_stream(int s, std::string ct, Headers extra, std::string_view first) override {
    status = s;
    content_type = std::move(ct);
    headers = std::move(extra);
    body.append(first);
    co_return true;
  }
  net::awaitable<bool> end_stream(std::string_view last) override {
    body.append(last);
    co_return true;
  }
  void abort() override {}
  void watch_client(std::shared_ptr<CancellationToken>) override {}
  void stop_watching() override {}
  bool started() const noexcept override { return status != 0; }
};

/// One REST call made on the MCP caller's behalf.
struct Call {
  std::string method, path, query, body;
  Headers headers;  ///< the tool's header parameters
};

struct Called {
  int status = 0;
  std::string body;
  Headers headers;
};

std::string percent_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

std::string scalar_text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string out;
    for (const auto& x : v) {
      if (!out.empty()) out.push_back(',');
      out.append(scalar_text(x));
    }
    return out;
  }
  return v.dump();
}

// Runs `call` as if the MCP caller had sent it: the caller's key headers, then admit() (route,
// key, role, project) and serve() (the route's own handler).
net::awaitable<Called> dispatch(Proxy::State& st, const Request& outer, Call& call) {
  Headers hs;
  for (const auto& [k, v] : outer.headers)
    if (k == "authorization" || k == "x-api-key" || k == "x-modelux-project" || k == "user-agent") hs.emplace_back(k, v);
  for (auto& h : call.headers) hs.push_back(h);
  if (!call.body.empty()) hs.emplace_back("content-type", "application/json");
  Called out;
  if (st.max_body && call.body.size() > st.max_body) {
    out.status = 413;
    out.body = error_reply(413, ErrorKind::bad_request, "the body is larger than the proxy's limit of " + std::to_string(st.max_body) + " bytes",
                           "body_too_large")
                   .body;
    co_return out;
  }
  auto decided = admit(st, call.method, call.path, hs);
  if (auto* refused = std::get_if<Reply>(&decided)) {
    out.status = refused->status;
    out.body = scrubbed(refused->body);
    out.headers = std::move(refused->headers);
    co_return out;
  }
  Admission a = std::get<Admission>(std::move(decided));
  Request req;
  req.method = call.method;
  req.path = call.path;
  req.query = call.query;
  req.target = call.query.empty() ? call.path : call.path + "?" + call.query;
  req.headers = std::move(hs);
  req.remote = outer.remote;
  req.content_length = call.body.size();
  req.body = std::move(call.body);
  CaptureWriter w;
  co_await serve(st, a, req, w);
  out.status = w.status;
  out.body = std::move(w.body);
  out.headers = std::move(w.headers);
  co_return out;
}

// ---- JSON-RPC -----------------------------------------------------------------------------

Json rpc_error(const Json& id, int code, std::string message, Json data = nullptr) {
  Json e = {{"code", code}, {"message", std::move(message)}};
  if (!data.is_null()) e["data"] = std::move(data);
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(e)}};
}

Json rpc_result(const Json& id, Json result) { return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}}; }

/// A failed method: the JSON-RPC error to answer with.
struct RpcFailure {
  int code;
  std::string message;
};
using RpcOutcome = std::variant<Json, RpcFailure>;

Json initialize_result(const Json& params) {
  std::string asked = params.contains("protocolVersion") && params["protocolVersion"].is_string()
                          ? params["protocolVersion"].get<std::string>()
                          : std::string{};
  // The client's version when we speak it, else our newest (the client then decides).
  std::string version = known_protocol_version(asked) ? asked : std::string(kProtocolVersions[0]);
  return {{"protocolVersion", version},
          {"capabilities", {{"tools", {{"listChanged", false}}}, {"resources", {{"listChanged", false}, {"subscribe", false}}}}},
          {"serverInfo", {{"name", "modelux"}, {"title", "modelux LLM proxy"}, {"version", std::string(modelux::version())}}},
          {"instructions",
           "modelux's admin REST API as tools, one per operation of GET /openapi.json: routing configs (versions, diff, "
           "rollback, promote), traces, budgets and spend, provider health, keys, webhooks and the audit log. Write tools "
           "need an admin key. Resources: modelux://configs, modelux://configs/{slug}, modelux://traces/recent, "
           "modelux://traces/{id}, modelux://budgets."}};
}

bool caller_sees(const Tool& t, const Caller& c) { return role_allows_access(t.route->access, c.role); }

Json tools_list(const Caller& caller) {
  Json arr = Json::array();
  for (const auto& t : catalog())
    if (caller_sees(t, caller)) arr.push_back(t.def);
  return {{"tools", std::move(arr)}};
}

Json tool_error(std::string text) {
  return {{"content", Json::array({{{"type", "text"}, {"text", std::move(text)}}})}, {"isError", true}};
}

net::awaitable<RpcOutcome> tools_call(Proxy::State& st, const Request& outer, const Json& params) {
  if (!params.contains("name") || !params["name"].is_string())
    co_return RpcFailure{kInvalidParams, "tools/call needs params.name (a string)"};
  const std::string name = params["name"].get<std::string>();
  const Tool* tool = find_tool(name);
  if (!tool) co_return RpcFailure{kInvalidParams, "unknown tool '" + scrubbed(name) + "' (tools/list names them)"};
  Json args = Json::object();
  if (auto a = params.find("arguments"); a != params.end() && !a->is_null()) {
    if (!a->is_object()) co_return RpcFailure{kInvalidParams, "params.arguments must be an object"};
    args = *a;
  }
  // Invalid arguments are a tool execution error (SEP-1303): the model reads it and retries.
  std::vector<std::string> errs = mcp::validate(tool->def["inputSchema"], args);
  if (!errs.empty()) {
    std::string text = "invalid arguments for " + name + ":";
    for (const auto& e : errs) text += "\n- " + e;
    co_return tool_error(scrubbed(text));
  }
  Call call;
  call.method = tool->method;
  call.path = tool->pattern;
  for (const auto& p : tool->params) {
    auto it = args.find(p.name);
    if (it == args.end() || it->is_null()) continue;
    const std::string value = scalar_text(*it);
    if (p.in == "path") {
      const std::string key = "{" + p.name + "}";
      if (auto pos = call.path.find(key); pos != std::string::npos) call.path.replace(pos, key.size(), percent_encode(value));
    } else if (p.in == "query") {
      call.query += (call.query.empty() ? "" : "&") + percent_encode(p.name) + "=" + percent_encode(value);
    } else {
      call.headers.emplace_back(p.name, value);
    }
  }
  if (tool->has_body)
    if (auto b = args.find("body"); b != args.end()) call.body = b->dump(-1, ' ', false, Json::error_handler_t::replace);
  Called r = co_await dispatch(st, outer, call);
  const bool ok = r.status >= 200 && r.status < 300;
  std::string text = ok ? r.body : "HTTP " + std::to_string(r.status) + ": " + r.body;
  Json result = {{"content", Json::array({{{"type", "text"}, {"text", std::move(text)}}})}, {"isError", !ok}};
  if (ok)
    if (auto j = parse_json(r.body); j && j->is_object()) result["structuredContent"] = std::move(*j);
  co_return result;
}

// ---- resources ----------------------------------------------------------------------------

Json resource(std::string uri, std::string name, std::string title, std::string description) {
  return {{"uri", std::move(uri)}, {"name", std::move(name)}, {"title", std::move(title)},
          {"description", std::move(description)}, {"mimeType", "application/json"}};
}

// modelux://… → the REST GET that reads it; nullopt for a URI we do not serve.
std::optional<Call> resource_call(std::string_view uri) {
  constexpr std::string_view kScheme = "modelux://";
  if (!uri.starts_with(kScheme)) return std::nullopt;
  std::vector<std::string> seg;
  std::string_view rest = uri.substr(kScheme.size());
  while (!rest.empty()) {
    auto slash = rest.find('/');
    seg.emplace_back(rest.substr(0, slash));
    if (seg.back().empty()) return std::nullopt;
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    if (slash != std::string_view::npos && rest.empty()) return std::nullopt;
  }
  Call c;
  c.method = "GET";
  if (seg.size() == 1 && seg[0] == "configs") c.path = "/v1/configs";
  else if (seg.size() == 2 && seg[0] == "configs") c.path = "/v1/configs/" + percent_encode(seg[1]);
  else if (seg.size() == 3 && seg[0] == "configs" && seg[2] == "versions") c.path = "/v1/configs/" + percent_encode(seg[1]) + "/versions";
  else if (seg.size() == 2 && seg[0] == "traces" && seg[1] == "recent") { c.path = "/v1/traces"; c.query = "limit=50"; }
  else if (seg.size() == 2 && seg[0] == "traces") c.path = "/v1/traces/" + percent_encode(seg[1]);
  else if (seg.size() == 1 && seg[0] == "budgets") c.path = "/v1/budgets";
  else return std::nullopt;
  return c;
}

net::awaitable<RpcOutcome> resources_list(Proxy::State& st, const Request& outer) {
  Json arr = Json::array({
      resource("modelux://configs", "configs", "Routing configs", "Every routing config with its live version (GET /v1/configs)"),
      resource("modelux://traces/recent", "recent-traces", "Recent decision traces", "The 50 newest decision traces (GET /v1/traces)"),
      resource("modelux://budgets", "budgets", "Budgets and spend", "Live budget ledgers: spend against each limit (GET /v1/budgets)"),
  });
  Call call;
  call.method = "GET";
  call.path = "/v1/configs";
  Called r = co_await dispatch(st, outer, call);
  if (r.status == 200)
    if (auto j = parse_json(r.body); j && j->is_object() && j->contains("data") && (*j)["data"].is_array())
      for (const auto& c : (*j)["data"])
        if (c.is_object() && c.contains("slug") && c["slug"].is_string()) {
          const std::string slug = c["slug"].get<std::string>();
          arr.push_back(resource("modelux://configs/" + slug, "config-" + slug, "Routing config @" + slug,
                                 "The live version of @" + slug + " (GET /v1/configs/" + slug + ")"));
        }
  co_return Json{{"resources", std::move(arr)}};
}

Json resource_templates() {
  auto tpl = [](std::string uri, std::string name, std::string title, std::string description) {
    return Json{{"uriTemplate", std::move(uri)}, {"name", std::move(name)}, {"title", std::move(title)},
                {"description", std::move(description)}, {"mimeType", "application/json"}};
  };
  return {{"resourceTemplates", Json::array({
                                    tpl("modelux://configs/{slug}", "config", "A routing config", "One routing config's live version"),
                                    tpl("modelux://configs/{slug}/versions", "config-versions", "A config's versions", "Versions of a config, newest first"),
                                    tpl("modelux://traces/{id}", "trace", "A decision trace", "One decision trace by request id"),
                                })}};
}

net::awaitable<RpcOutcome> resources_read(Proxy::State& st, const Request& outer, const Json& params) {
  if (!params.contains("uri") || !params["uri"].is_string()) co_return RpcFailure{kInvalidParams, "resources/read needs params.uri (a string)"};
  const std::string uri = params["uri"].get<std::string>();
  auto call = resource_call(uri);
  if (!call) co_return RpcFailure{kResourceNotFound, "resource not found: " + scrubbed(uri)};
  Called r = co_await dispatch(st, outer, *call);
  if (r.status == 404) co_return RpcFailure{kResourceNotFound, "resource not found: " + scrubbed(uri) + " (" + r.body + ")"};
  if (r.status < 200 || r.status >= 300) co_return RpcFailure{kInternalError, "reading " + scrubbed(uri) + " failed: HTTP " + std::to_string(r.status) + ": " + r.body};
  co_return Json{{"contents", Json::array({{{"uri", uri}, {"mimeType", "application/json"}, {"text", std::move(r.body)}}})}};
}

Reply rpc_reply(const Json& j, int status = 200) { return json_reply(j, status); }

// Browsers send Origin: a page from another site must not drive the admin API through a
// local proxy (DNS rebinding). Non-browser clients send none.
bool origin_allowed(const Request& req) {
  const std::string* origin = req.header("origin");
  if (!origin || origin->empty() || *origin == "null") return !origin || origin->empty();
  const std::string* host = req.header("host");
  auto sep = origin->find("://");
  if (!host || sep == std::string::npos) return false;
  return origin->substr(sep + 3) == *host;
}

}  // namespace

namespace mcp {

Json tools_from_openapi(const Json& doc) {
  Json arr = Json::array();
  for (auto& t : build_tools(doc)) arr.push_back(std::move(t.def));
  return arr;
}

std::vector<std::string> validate(const Json& schema, const Json& value, const std::string& at) {
  std::vector<std::string> errs;
  check_schema(schema, value, at, errs);
  return errs;
}

}  // namespace mcp

net::awaitable<std::optional<Reply>> mcp_post(RouteCtx& c) {
  if (!origin_allowed(c.req))
    co_return error_reply(403, ErrorKind::auth, "this Origin may not use the MCP endpoint (it must match Host)", "origin_not_allowed");
  if (const std::string* v = c.req.header("mcp-protocol-version"); v && !known_protocol_version(*v))
    co_return rpc_reply(rpc_error(nullptr, kInvalidRequest, "unsupported MCP-Protocol-Version '" + scrubbed(*v) + "'"), 400);
  auto parsed = parse_json(c.req.body);
  if (!parsed) co_return rpc_reply(rpc_error(nullptr, kParseError, "parse error: " + parsed.error().message), 400);
  const Json& msg = *parsed;
  if (msg.is_array())
    co_return rpc_reply(rpc_error(nullptr, kInvalidRequest, "JSON-RPC batches are not supported: send one message per POST"), 400);
  if (!msg.is_object()) co_return rpc_reply(rpc_error(nullptr, kInvalidRequest, "a JSON-RPC message must be an object"), 400);
  Json id = nullptr;
  const bool has_id = msg.contains("id");
  if (has_id) {
    const Json& raw = msg["id"];
    if (!raw.is_string() && !raw.is_number_integer() && !raw.is_number_unsigned())
      co_return rpc_reply(rpc_error(nullptr, kInvalidRequest, "id must be a string or an integer"), 400);
    id = raw;
  }
  if (!msg.contains("jsonrpc") || msg["jsonrpc"] != "2.0")
    co_return rpc_reply(rpc_error(id, kInvalidRequest, "jsonrpc must be \"2.0\""), 400);
  if (!msg.contains("method")) {
    // A client's response to a server request: we never send any, so there is nothing to do.
    if (has_id && (msg.contains("result") || msg.contains("error"))) co_return Reply{202, "", "application/json", {}};
    co_return rpc_reply(rpc_error(id, kInvalidRequest, "a request needs a method"), 400);
  }
  if (!msg["method"].is_string()) co_return rpc_reply(rpc_error(id, kInvalidRequest, "method must be a string"), 400);
  const std::string method = msg["method"].get<std::string>();
  Json params = Json::object();
  if (auto p = msg.find("params"); p != msg.end() && !p->is_null()) {
    if (!p->is_object()) {
      if (!has_id) co_return Reply{202, "", "application/json", {}};
      co_return rpc_reply(rpc_error(id, kInvalidParams, "params must be an object"));
    }
    params = *p;
  }
  // Notifications (initialized, cancelled, progress…) need no answer and change nothing here.
  if (!has_id) co_return Reply{202, "", "application/json", {}};

  RpcOutcome out = RpcFailure{kMethodNotFound, "method not found: " + scrubbed(method)};
  if (method == "initialize") {
    if (!params.contains("protocolVersion") || !params["protocolVersion"].is_string())
      out = RpcFailure{kInvalidParams, "initialize needs params.protocolVersion (a string)"};
    else
      out = initialize_result(params);
  } else if (method == "ping") {
    out = Json::object();
  } else if (method == "tools/list") {
    out = tools_list(c.caller);
  } else if (method == "tools/call") {
    out = co_await tools_call(c.st, c.req, params);
    if (auto* result = std::get_if<Json>(&out)) {
      // The tool's content is the REST answer exactly as REST gives it: already scrubbed by the
      // route's respond(), except what a handler shows on purpose (a new key's or webhook's
      // secret, once), which a second scrub here would hide. So this reply is written as is;
      // only the client's own id is scrubbed.
      Json safe_id = id.is_string() ? Json(scrubbed(id.get<std::string>())) : id;
      Reply r = rpc_reply(rpc_result(safe_id, std::move(*result)));
      co_await c.w.respond(r.status, std::move(r.content_type), std::move(r.body), std::move(r.headers));
      co_return std::nullopt;
    }
  } else if (method == "resources/list") {
    out = co_await resources_list(c.st, c.req);
  } else if (method == "resources/templates/list") {
    out = resource_templates();
  } else if (method == "resources/read") {
    out = co_await resources_read(c.st, c.req, params);
  }
  if (auto* f = std::get_if<RpcFailure>(&out)) co_return rpc_reply(rpc_error(id, f->code, std::move(f->message)));
  co_return rpc_reply(rpc_result(id, std::move(std::get<Json>(out))));
}

}  // namespace modelux::proxy
