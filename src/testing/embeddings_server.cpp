// The mock provider's embeddings endpoints, in each family's own request and answer shapes:
//   OpenAI / Mistral  POST /v1/embeddings (or /embeddings)                 {"object":"list","data":[...],"usage"}
//   Azure             POST /openai/deployments/{d}/embeddings?api-version=  (the OpenAI answer)
//   Gemini            POST /v1beta/models/{m}:batchEmbedContents | :embedContent  {"embeddings":[{"values"}]} (no usage)
//   Cohere            POST /v2/embed                                        {"embeddings":{"float":[[...]]},"meta":{"billed_units"}}
//   Bedrock           POST /model/{id}/invoke  Titan {"inputText"} -> {"embedding","inputTextTokenCount"};
//                                              Cohere {"texts"} -> {"embeddings":...} + x-amzn-bedrock-input-token-count
// Vectors are deterministic (a hash of the text and the position) and unit length, 8 values
// unless the request asks for a size. Billed tokens are the words of each text plus one, a
// count unlike the client's 4-characters estimate, so tests can tell reported from estimated.
#include <algorithm>
#include <cmath>

#include "testing/native.hpp"
#include "wire/codecs.hpp"

namespace modelux::mock {

namespace {

std::unexpected<Error> bad(std::string m) { return fail(ErrorKind::bad_request, std::move(m)); }

std::optional<std::string> query_value(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? "" : kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::int64_t words_plus_one(std::string_view t) {
  std::int64_t n = 1;
  bool in_word = false;
  for (char c : t) {
    bool space = c == ' ' || c == '\n' || c == '\t';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

Result<std::vector<std::string>> string_list(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_array() || it->empty()) return bad(std::string("'") + field + "' must be a non-empty array of strings");
  std::vector<std::string> out;
  for (const auto& x : *it) {
    if (!x.is_string()) return bad(std::string("'") + field + "' must be a non-empty array of strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

bool is_mistral_model(std::string_view m) { return m.starts_with("mistral-") || m.starts_with("codestral-"); }

// Mistral's embeddings request fields; its API refuses others with a 422.
constexpr std::string_view kMistralEmbedFields[] = {"model", "input", "inputs", "output_dimension", "output_dtype",
                                                    "encoding_format", "metadata"};

Result<MockEmbedRequest> openai_like(std::string family, const Json& j, std::string deployment) {
  auto req = embedding_request_from_json_for_mock(j);
  if (!req) return fail(req.error());
  MockEmbedRequest m;
  m.family = std::move(family);
  m.model = deployment.empty() ? req->model : std::move(deployment);
  for (auto& t : req->texts) m.texts.push_back(std::move(t));
  for (const auto& ids : req->tokens) {  // token ids embed as their text form
    std::string s = "tokens:";
    for (auto id : ids) s += std::to_string(id) + ",";
    m.texts.push_back(std::move(s));
  }
  if (req->dimensions) m.dims = *req->dimensions;
  if (m.family == "openai" && is_mistral_model(m.model)) {
    m.family = "mistral";
    if (auto od = j.find("output_dimension"); od != j.end() && od->is_number_integer()) m.dims = od->get<std::int64_t>();
    Json detail = Json::array();
    for (auto it = j.begin(); it != j.end(); ++it)
      if (std::ranges::find(kMistralEmbedFields, it.key()) == std::end(kMistralEmbedFields))
        detail.push_back({{"type", "extra_forbidden"}, {"loc", {"body", it.key()}}, {"msg", "Extra inputs are not permitted"}});
    if (!detail.empty())
      m.refusal = Rendered{422, "application/json", {},
                           Json{{"object", "error"}, {"message", {{"detail", detail}}}, {"type", "invalid_request_error"}}.dump()};
  }
  return m;
}

}  // namespace

Result<EmbeddingRequest> embedding_request_from_json_for_mock(const Json& j) {
  // The unified parser is OpenAI's own request shape.
  auto r = modelux::parse_embedding_request(j.dump());
  if (!r) {
    Error e = r.error();
    e.kind = ErrorKind::bad_request;
    return fail(std::move(e));
  }
  return r;
}

std::optional<Result<MockEmbedRequest>> parse_embedding_request(std::string_view method, std::string_view target,
                                                                std::string_view body) {
  if (method != "POST") return std::nullopt;
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  auto json_body = [&]() -> Result<Json> {
    auto j = parse_json(body);
    if (!j || !j->is_object()) return bad("request body must be a JSON object");
    return j;
  };

  if (path == "/v1/embeddings" || path == "/embeddings") {
    auto j = json_body();
    if (!j) return Result<MockEmbedRequest>(std::unexpected(j.error()));
    return openai_like("openai", *j, {});
  }
  constexpr std::string_view kAzure = "/openai/deployments/", kAzureTail = "/embeddings";
  if (path.starts_with(kAzure) && path.ends_with(kAzureTail) && path.size() > kAzure.size() + kAzureTail.size()) {
    if (!query_value(query, "api-version")) return Result<MockEmbedRequest>(fail(ErrorKind::not_found, "Azure OpenAI requires api-version"));
    auto j = json_body();
    if (!j) return Result<MockEmbedRequest>(std::unexpected(j.error()));
    if (!j->contains("model")) (*j)["model"] = "deployment";
    return openai_like("azure", *j,
                       wire::percent_decode(path.substr(kAzure.size(), path.size() - kAzure.size() - kAzureTail.size())));
  }
  if (path.starts_with("/v1beta/models/") && (path.ends_with(":batchEmbedContents") || path.ends_with(":embedContent"))) {
    const bool batch = path.ends_with(":batchEmbedContents");
    std::string_view rest = path.substr(15);
    std::string model = wire::percent_decode(rest.substr(0, rest.rfind(':')));
    auto j = json_body();
    if (!j) return Result<MockEmbedRequest>(std::unexpected(j.error()));
    MockEmbedRequest m;
    m.family = "gemini";
    m.model = model;
    m.gemini_single = !batch;
    auto one = [&](const Json& r) -> Result<void> {
      const Json* content = wire::jobj(r, "content");
      const Json* parts = content ? wire::jarr(*content, "parts") : nullptr;
      if (!parts || parts->empty()) return bad("each request needs content.parts");
      std::string text;
      for (const auto& p : *parts) text += wire::jstr(p, "text");
      m.texts.push_back(std::move(text));
      if (auto d = wire::jint(r, "outputDimensionality"); d > 0) m.dims = d;
      if (batch && wire::jstr(r, "model") != "models/" + model) return bad("each request's model must be models/" + model);
      return {};
    };
    if (batch) {
      const Json* reqs = wire::jarr(*j, "requests");
      if (!reqs || reqs->empty()) return Result<MockEmbedRequest>(bad("'requests' must be a non-empty array"));
      for (const auto& r : *reqs)
        if (auto ok = one(r); !ok) return Result<MockEmbedRequest>(std::unexpected(ok.error()));
    } else if (auto ok = one(*j); !ok) {
      return Result<MockEmbedRequest>(std::unexpected(ok.error()));
    }
    return Result<MockEmbedRequest>(std::move(m));
  }
  if (path == "/v2/embed") {
    auto j = json_body();
    if (!j) return Result<MockEmbedRequest>(std::unexpected(j.error()));
    MockEmbedRequest m;
    m.family = "cohere";
    m.model = wire::jstr(*j, "model");
    if (m.model.empty()) return Result<MockEmbedRequest>(bad("model is required"));
    // Cohere's v3+ models refuse a request without input_type.
    if (wire::jstr(*j, "input_type").empty()) return Result<MockEmbedRequest>(bad("input_type is required for embed models v3 and higher"));
    auto texts = string_list(*j, "texts");
    if (!texts) return Result<MockEmbedRequest>(std::unexpected(texts.error()));
    m.texts = std::move(*texts);
    m.dims = wire::jint(*j, "output_dimension");
    return Result<MockEmbedRequest>(std::move(m));
  }
  if (path.starts_with("/model/") && path.ends_with("/invoke")) {
    std::string model = wire::percent_decode(path.substr(7, path.size() - 7 - 7));
    auto j = json_body();
    if (!j) return Result<MockEmbedRequest>(std::unexpected(j.error()));
    MockEmbedRequest m;
    m.family = "bedrock";
    m.model = model;
    if (model.find("titan-embed") != std::string::npos) {
      std::string t = wire::jstr(*j, "inputText");
      if (t.empty()) return Result<MockEmbedRequest>(bad("inputText is required"));
      m.texts.push_back(std::move(t));
      m.dims = wire::jint(*j, "dimensions");
      m.bedrock_titan = true;
    } else if (model.find("cohere.embed") != std::string::npos) {
      if (wire::jstr(*j, "input_type").empty()) return Result<MockEmbedRequest>(bad("input_type is required"));
      auto texts = string_list(*j, "texts");
      if (!texts) return Result<MockEmbedRequest>(std::unexpected(texts.error()));
      m.texts = std::move(*texts);
      m.cohere_by_type = j->contains("embedding_types");
    } else {
      return Result<MockEmbedRequest>(fail(ErrorKind::not_found, "mock: no embeddings model " + model));
    }
    return Result<MockEmbedRequest>(std::move(m));
  }
  return std::nullopt;
}

std::vector<float> mock_vector(std::string_view text, std::int64_t dims) {
  if (dims <= 0) dims = 8;
  std::vector<float> v(static_cast<std::size_t>(dims));
  double norm = 0;
  std::uint64_t h = fnv1a64(text);
  for (auto& x : v) {
    h = h * 6364136223846793005ULL + 1442695040888963407ULL;
    x = static_cast<float>(static_cast<double>(h >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    norm += double(x) * double(x);
  }
  norm = std::sqrt(norm);
  if (norm > 0)
    for (auto& x : v) x = static_cast<float>(x / norm);
  return v;
}

Rendered render_embedding_response(const MockEmbedRequest& r) {
  std::int64_t tokens = 0;
  std::vector<std::vector<float>> vecs;
  for (const auto& t : r.texts) {
    tokens += words_plus_one(t);
    vecs.push_back(mock_vector(t, r.dims));
  }
  Rendered out;
  out.content_type = "application/json";
  Json j;
  if (r.family == "openai" || r.family == "azure" || r.family == "mistral") {
    Json data = Json::array();
    for (std::size_t i = 0; i < vecs.size(); ++i) data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", vecs[i]}});
    j = {{"object", "list"}, {"data", std::move(data)}, {"model", r.model},
         {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
    if (r.family == "mistral") j["id"] = "embd-mock";
  } else if (r.family == "gemini") {
    if (r.gemini_single) {
      j = {{"embedding", {{"values", vecs.at(0)}}}};
    } else {
      Json embs = Json::array();
      for (auto& v : vecs) embs.push_back({{"values", v}});
      j = {{"embeddings", std::move(embs)}};
    }
  } else if (r.family == "cohere") {
    j = {{"id", "mock-embed"}, {"embeddings", {{"float", vecs}}}, {"texts", r.texts}, {"response_type", "embeddings_by_type"},
         {"meta", {{"api_version", {{"version", "2"}}}, {"billed_units", {{"input_tokens", tokens}}}}}};
  } else if (r.family == "bedrock") {
    if (r.bedrock_titan) {
      j = {{"embedding", vecs.at(0)}, {"inputTextTokenCount", tokens}, {"embeddingsByType", {{"float", vecs.at(0)}}}};
    } else if (r.cohere_by_type) {
      j = {{"id", "mock-embed"}, {"embeddings", {{"float", vecs}}}, {"texts", r.texts}, {"response_type", "embeddings_by_type"}};
    } else {
      j = {{"id", "mock-embed"}, {"embeddings", vecs}, {"texts", r.texts}, {"response_type", "embeddings_floats"}};
    }
    out.headers.emplace_back("x-amzn-bedrock-input-token-count", std::to_string(tokens));
  }
  out.body = j.dump();
  return out;
}

}  // namespace modelux::mock
