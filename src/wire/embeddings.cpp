// Embeddings: OpenAI's /v1/embeddings as the unified shape, and one request encoder and
// response decoder per family:
//   openai (and compatible: Mistral)  POST {base}/embeddings                 {model, input, dimensions}
//   azure                             POST {base}/deployments/{d}/embeddings?api-version=
//   gemini                            POST {base}/v1beta/models/{m}:batchEmbedContents
//                                     {requests:[{model, content:{parts:[{text}]}, outputDimensionality, taskType}]}
//   cohere                            POST {base}/v2/embed  {model, texts, input_type, embedding_types:["float"], output_dimension}
//   bedrock                           POST {base}/model/{id}/invoke (InvokeModel; Converse has no embeddings):
//                                       Titan Text Embeddings (amazon.titan-embed-*): {inputText, dimensions}, one input a call
//                                       Cohere Embed on Bedrock (cohere.embed-*): {texts, input_type, embedding_types}
// Upstream calls always ask for float vectors: the caller's base64 is encoded here, so every
// family answers both encodings. Pure functions, like the chat codecs.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include "wire/codecs.hpp"

namespace modelux {

using namespace wire;

namespace {

std::unexpected<Error> bad(std::string msg, std::string path) { return fail(ErrorKind::bad_request, std::move(msg), std::move(path)); }

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string b64_encode(const unsigned char* p, std::size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < n; i += 3) {
    std::uint32_t v = (std::uint32_t(p[i]) << 16) | (std::uint32_t(p[i + 1]) << 8) | p[i + 2];
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i < n) {
    std::uint32_t v = std::uint32_t(p[i]) << 16;
    if (i + 1 < n) v |= std::uint32_t(p[i + 1]) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += i + 1 < n ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// A JSON array of numbers as floats; nullopt for anything else.
std::optional<std::vector<float>> float_array(const Json& j) {
  if (!j.is_array()) return std::nullopt;
  std::vector<float> v;
  v.reserve(j.size());
  for (const auto& x : j) {
    if (!x.is_number()) return std::nullopt;
    v.push_back(x.get<float>());
  }
  return v;
}

bool is_mistral(const ProviderEndpoint& ep) {
  return ep.name == "mistral" || ep.base_url.find("api.mistral.ai") != std::string::npos;
}

std::string opt_of(const ProviderEndpoint& ep, const char* k, std::string fallback = {}) {
  auto it = ep.options.find(k);
  return it == ep.options.end() || it->second.empty() ? fallback : it->second;
}

// An extra field the caller passed for one family ("input_type" for Cohere, "task_type" for
// Gemini); "" when absent.
std::string extra_str(const EmbeddingRequest& r, std::string_view key) {
  return r.extra.is_object() ? jstr(r.extra, key) : std::string{};
}

Result<void> texts_only(const EmbeddingRequest& r, std::string_view family) {
  if (!r.tokens.empty()) return unsupported_field(family, "input", "this provider takes text inputs only, not token ids");
  return {};
}

Result<HttpRequestSpec> encode_openai(const EmbeddingRequest& r, const ProviderEndpoint& ep, std::string_view model) {
  const bool mistral = is_mistral(ep);
  if (mistral) {
    if (auto t = texts_only(r, "mistral"); !t) return fail(t.error());
  }
  Json body = to_json(r);
  body["model"] = std::string(model);
  if (mistral) {
    // Mistral names it output_dimension and refuses fields it does not know.
    body.erase("user");
    if (r.dimensions) {
      body.erase("dimensions");
      body["output_dimension"] = *r.dimensions;
    }
  }
  HttpRequestSpec spec;
  spec.url = join_url(ep.base_url, "/embeddings");
  spec.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  spec.headers.emplace_back("content-type", "application/json");
  if (!ep.api_key.empty()) spec.headers.emplace_back("authorization", "Bearer " + ep.api_key);
  return spec;
}

Result<HttpRequestSpec> encode_azure(const EmbeddingRequest& r, const ProviderEndpoint& ep, std::string_view model) {
  std::string base = ep.base_url;
  if (auto p = base.find("{resource}"); p != std::string::npos) {
    std::string resource = opt_of(ep, "resource");
    if (resource.empty())
      return fail(ErrorKind::invalid_config, "azure base_url has {resource} but options.resource is not set", "options.resource");
    base.replace(p, 10, resource);
  }
  Json body = to_json(r);
  body.erase("model");  // the deployment names the model
  HttpRequestSpec spec;
  spec.url = join_url(base, "/deployments/" + percent_encode(opt_of(ep, "deployment", std::string(model))) + "/embeddings") +
             "?api-version=" + percent_encode(opt_of(ep, "api_version", "2024-10-21"));
  spec.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  spec.headers.emplace_back("content-type", "application/json");
  if (!ep.api_key.empty()) spec.headers.emplace_back("api-key", ep.api_key);
  return spec;
}

Result<HttpRequestSpec> encode_gemini(const EmbeddingRequest& r, const ProviderEndpoint& ep, std::string_view model) {
  if (auto t = texts_only(r, "gemini"); !t) return fail(t.error());
  const std::string resource = "models/" + std::string(model);
  const std::string task = extra_str(r, "task_type");
  Json reqs = Json::array();
  for (const auto& t : r.texts) {
    Json one = {{"model", resource}, {"content", {{"parts", Json::array({Json{{"text", t}}})}}}};
    if (r.dimensions) one["outputDimensionality"] = *r.dimensions;
    if (!task.empty()) one["taskType"] = task;
    reqs.push_back(std::move(one));
  }
  HttpRequestSpec spec;
  spec.url = join_url(ep.base_url, "/v1beta/" + resource + ":batchEmbedContents");
  spec.body = Json{{"requests", std::move(reqs)}}.dump(-1, ' ', false, Json::error_handler_t::replace);
  spec.headers.emplace_back("content-type", "application/json");
  if (!ep.api_key.empty()) spec.headers.emplace_back("x-goog-api-key", ep.api_key);
  return spec;
}

// Cohere requires input_type on v3+ models; search_document is the neutral default for
// storing vectors (a caller may pass "input_type" as an extra field).
Json cohere_body(const EmbeddingRequest& r, std::string_view model, bool with_model) {
  std::string input_type = extra_str(r, "input_type");
  Json body = {{"texts", r.texts}, {"input_type", input_type.empty() ? "search_document" : input_type},
               {"embedding_types", Json::array({"float"})}};
  if (with_model) body["model"] = std::string(model);
  if (r.dimensions) body["output_dimension"] = *r.dimensions;
  return body;
}

Result<HttpRequestSpec> encode_cohere(const EmbeddingRequest& r, const ProviderEndpoint& ep, std::string_view model) {
  if (auto t = texts_only(r, "cohere"); !t) return fail(t.error());
  if (r.texts.size() > 96) return unsupported_field("cohere", "input", "Cohere embeds at most 96 texts a call");
  HttpRequestSpec spec;
  spec.url = join_url(ep.base_url, "/v2/embed");
  spec.body = cohere_body(r, model, true).dump(-1, ' ', false, Json::error_handler_t::replace);
  spec.headers.emplace_back("content-type", "application/json");
  if (!ep.api_key.empty()) spec.headers.emplace_back("authorization", "Bearer " + ep.api_key);
  return spec;
}

bool bedrock_titan(std::string_view model) { return model.find("titan-embed") != std::string_view::npos; }
bool bedrock_cohere(std::string_view model) { return model.find("cohere.embed") != std::string_view::npos; }

Result<HttpRequestSpec> encode_bedrock(const EmbeddingRequest& r, const ProviderEndpoint& ep, std::string_view model) {
  if (auto t = texts_only(r, "bedrock"); !t) return fail(t.error());
  Json body;
  if (bedrock_titan(model)) {
    // InvokeModel on Titan embeds one text a call; a batch goes to a target that takes batches.
    if (r.texts.size() != 1) return unsupported_field("bedrock", "input", "Titan Text Embeddings on Bedrock embeds one text per call");
    body = {{"inputText", r.texts[0]}};
    if (r.dimensions) body["dimensions"] = *r.dimensions;
  } else if (bedrock_cohere(model)) {
    if (r.texts.size() > 96) return unsupported_field("bedrock", "input", "Cohere Embed on Bedrock embeds at most 96 texts a call");
    body = cohere_body(r, model, false);
    if (r.dimensions && model.find("v4") == std::string_view::npos)
      return unsupported_field("bedrock", "dimensions", "Cohere Embed v3 on Bedrock has a fixed output size");
  } else {
    return unsupported_field("bedrock", "model", "embeddings on Bedrock are supported for Titan Text Embeddings and Cohere Embed models");
  }
  return bedrock_request(ep, model, "invoke", body.dump(-1, ' ', false, Json::error_handler_t::replace), false);
}

Result<EmbeddingResponse> check_count(EmbeddingResponse r, const EmbeddingRequest& req, std::string_view family) {
  if (r.data.size() != req.size())
    return malformed(family, "embeddings answer has " + std::to_string(r.data.size()) + " vectors for " + std::to_string(req.size()) + " inputs");
  for (const auto& v : r.data)
    if (v.empty()) return malformed(family, "embeddings answer has an empty vector");
  if (r.usage.prompt_tokens <= 0) r.usage.prompt_tokens = estimate_embedding_tokens(req);
  return r;
}

Result<EmbeddingResponse> decode_openai(std::string_view family, const Json& j) {
  const Json* data = jarr(j, "data");
  if (!data) return malformed(family, "embeddings answer has no data array");
  EmbeddingResponse r;
  r.model = jstr(j, "model");
  r.data.resize(data->size());
  std::vector<bool> seen(data->size(), false);
  for (std::size_t i = 0; i < data->size(); ++i) {
    const Json& e = (*data)[i];
    std::int64_t idx = jint(e, "index", static_cast<std::int64_t>(i));
    if (idx < 0 || static_cast<std::size_t>(idx) >= data->size() || seen[static_cast<std::size_t>(idx)])
      return malformed(family, "embeddings answer has a bad or repeated index");
    seen[static_cast<std::size_t>(idx)] = true;
    auto it = e.is_object() ? e.find("embedding") : e.end();
    if (!e.is_object() || it == e.end()) return malformed(family, "embeddings answer item has no embedding");
    std::optional<std::vector<float>> v = it->is_string() ? floats_from_base64(it->get<std::string>()) : float_array(*it);
    if (!v) return malformed(family, "embedding is neither a number array nor base64 float32");
    r.data[static_cast<std::size_t>(idx)] = std::move(*v);
  }
  if (const Json* u = jobj(j, "usage")) r.usage.prompt_tokens = jint(*u, "prompt_tokens");
  return r;
}

Result<EmbeddingResponse> decode_gemini(const Json& j) {
  EmbeddingResponse r;
  const Json* embs = jarr(j, "embeddings");
  if (!embs) {
    // embedContent (one input) answers {"embedding": {"values": [...]}}.
    const Json* one = jobj(j, "embedding");
    if (!one) return malformed("gemini", "embeddings answer has no embeddings array");
    auto v = float_array(one->value("values", Json()));
    if (!v) return malformed("gemini", "embedding has no values array");
    r.data.push_back(std::move(*v));
  } else {
    for (const auto& e : *embs) {
      auto v = e.is_object() ? float_array(e.value("values", Json())) : std::nullopt;
      if (!v) return malformed("gemini", "embedding has no values array");
      r.data.push_back(std::move(*v));
    }
  }
  // Gemini's embedding answers carry no token counts (newer ones may: usageMetadata).
  if (const Json* u = jobj(j, "usageMetadata")) r.usage.prompt_tokens = jint(*u, "promptTokenCount");
  return r;
}

// Cohere v2 ({"embeddings":{"float":[[...]]}}) and v1 / Bedrock ({"embeddings":[[...]]}).
Result<EmbeddingResponse> decode_cohere_like(std::string_view family, const Json& j) {
  EmbeddingResponse r;
  auto it = j.find("embeddings");
  if (it == j.end()) return malformed(family, "embeddings answer has no embeddings");
  const Json* rows = it->is_array() ? &*it : (it->is_object() ? jarr(*it, "float") : nullptr);
  if (!rows) return malformed(family, "embeddings answer has no float embeddings");
  for (const auto& row : *rows) {
    auto v = float_array(row);
    if (!v) return malformed(family, "embedding is not a number array");
    r.data.push_back(std::move(*v));
  }
  if (const Json* meta = jobj(j, "meta"))
    if (const Json* bu = jobj(*meta, "billed_units")) r.usage.prompt_tokens = jint(*bu, "input_tokens");
  return r;
}

}  // namespace

Result<EmbeddingRequest> parse_embedding_request(std::string_view body, const ParseLimits& limits) {
  auto parsed = parse_json(body, limits);
  if (!parsed) return fail(parsed.error());
  const Json& j = *parsed;
  if (!j.is_object()) return bad("the request body must be a JSON object", "$");
  EmbeddingRequest r;
  auto m = j.find("model");
  if (m == j.end() || !m->is_string() || m->get<std::string>().empty()) return bad("'model' is required and must be a non-empty string", "model");
  r.model = m->get<std::string>();
  auto in = j.find("input");
  if (in == j.end() || in->is_null()) return bad("'input' is required: a string, an array of strings, or token ids", "input");
  auto token_array = [](const Json& a, std::vector<std::int64_t>& out) {
    for (const auto& t : a) {
      if (!t.is_number_integer() || t.get<std::int64_t>() < 0) return false;
      out.push_back(t.get<std::int64_t>());
    }
    return !out.empty();
  };
  if (in->is_string()) {
    r.texts.push_back(in->get<std::string>());
  } else if (in->is_array()) {
    if (in->empty()) return bad("'input' must not be an empty array", "input");
    if (in->size() > kMaxEmbeddingInputs)
      return bad("'input' has " + std::to_string(in->size()) + " items; at most " + std::to_string(kMaxEmbeddingInputs), "input");
    const Json& first = (*in)[0];
    if (first.is_string()) {
      for (std::size_t i = 0; i < in->size(); ++i) {
        if (!(*in)[i].is_string()) return bad("every item of 'input' must be a string when the first is", "input[" + std::to_string(i) + "]");
        r.texts.push_back((*in)[i].get<std::string>());
      }
    } else if (first.is_number()) {
      std::vector<std::int64_t> one;
      if (!token_array(*in, one)) return bad("token ids in 'input' must be non-negative integers", "input");
      r.tokens.push_back(std::move(one));
    } else if (first.is_array()) {
      for (std::size_t i = 0; i < in->size(); ++i) {
        std::vector<std::int64_t> one;
        if (!(*in)[i].is_array() || !token_array((*in)[i], one))
          return bad("each token array in 'input' must be a non-empty array of non-negative integers", "input[" + std::to_string(i) + "]");
        r.tokens.push_back(std::move(one));
      }
    } else {
      return bad("'input' must be a string, an array of strings, or token ids", "input");
    }
  } else {
    return bad("'input' must be a string, an array of strings, or token ids", "input");
  }
  for (std::size_t i = 0; i < r.texts.size(); ++i)
    if (r.texts[i].empty()) return bad("'input' must not contain empty strings", r.texts.size() == 1 ? "input" : "input[" + std::to_string(i) + "]");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const Json& v = it.value();
    if (k == "model" || k == "input") continue;
    if (k == "dimensions") {
      if (v.is_null()) continue;
      if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > 65536)
        return bad("'dimensions' must be a positive integer", "dimensions");
      r.dimensions = v.get<std::int64_t>();
    } else if (k == "encoding_format") {
      if (v.is_null()) continue;
      if (!v.is_string() || (v.get<std::string>() != "float" && v.get<std::string>() != "base64"))
        return bad("'encoding_format' must be \"float\" or \"base64\"", "encoding_format");
      r.base64 = v.get<std::string>() == "base64";
    } else if (k == "user") {
      if (!v.is_string() && !v.is_null()) return bad("'user' must be a string", "user");
      if (v.is_string()) r.user = v.get<std::string>();
    } else {
      if (!r.extra.is_object()) r.extra = Json::object();
      r.extra[k] = v;
    }
  }
  return r;
}

Json to_json(const EmbeddingRequest& r) {
  Json j = {{"model", r.model}};
  if (!r.tokens.empty()) j["input"] = r.tokens.size() == 1 ? Json(r.tokens[0]) : Json(r.tokens);
  else j["input"] = r.texts;
  if (r.dimensions) j["dimensions"] = *r.dimensions;
  j["encoding_format"] = "float";
  if (!r.user.empty()) j["user"] = r.user;
  return j;
}

std::string base64_floats(const std::vector<float>& v) {
  std::string bytes(v.size() * 4, '\0');
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::uint32_t u;
    std::memcpy(&u, &v[i], 4);
    for (int b = 0; b < 4; ++b) bytes[i * 4 + static_cast<std::size_t>(b)] = static_cast<char>((u >> (8 * b)) & 0xff);  // little-endian
  }
  return b64_encode(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

std::optional<std::vector<float>> floats_from_base64(std::string_view s) {
  std::array<int, 256> dec;
  dec.fill(-1);
  for (int i = 0; i < 64; ++i) dec[static_cast<unsigned char>(kB64[i])] = i;
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  std::string bytes;
  bytes.reserve(s.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int d = dec[static_cast<unsigned char>(c)];
    if (d < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (bytes.size() % 4 != 0) return std::nullopt;
  std::vector<float> v(bytes.size() / 4);
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::uint32_t u = 0;
    for (int b = 0; b < 4; ++b) u |= std::uint32_t(static_cast<unsigned char>(bytes[i * 4 + static_cast<std::size_t>(b)])) << (8 * b);
    std::memcpy(&v[i], &u, 4);
  }
  return v;
}

std::string encode_embedding_response(const EmbeddingResponse& r, bool base64) {
  Json data = Json::array();
  for (std::size_t i = 0; i < r.data.size(); ++i) {
    Json e = {{"object", "embedding"}, {"index", i}};
    if (base64) e["embedding"] = base64_floats(r.data[i]);
    else e["embedding"] = r.data[i];
    data.push_back(std::move(e));
  }
  Json j = {{"object", "list"}, {"data", std::move(data)}, {"model", r.model},
            {"usage", {{"prompt_tokens", r.usage.prompt_tokens}, {"total_tokens", r.usage.prompt_tokens}}}};
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::int64_t estimate_embedding_tokens(const EmbeddingRequest& r) noexcept {
  std::int64_t n = 0;
  for (const auto& t : r.texts) n += static_cast<std::int64_t>((t.size() + 3) / 4);
  for (const auto& t : r.tokens) n += static_cast<std::int64_t>(t.size());
  return std::max<std::int64_t>(n, 1);
}

Result<HttpRequestSpec> encode_embedding_request(const EmbeddingRequest& req, const ProviderEndpoint& ep,
                                                 std::string_view upstream_model) {
  if (req.size() == 0) return fail(ErrorKind::bad_request, "embeddings request has no input", "input");
  const std::string_view f = ep.family;
  if (f == "openai") return encode_openai(req, ep, upstream_model);
  if (f == "azure") return encode_azure(req, ep, upstream_model);
  if (f == "gemini") return encode_gemini(req, ep, upstream_model);
  if (f == "cohere") return encode_cohere(req, ep, upstream_model);
  if (f == "bedrock") return encode_bedrock(req, ep, upstream_model);
  return unsupported_field(f, "input", "this provider family has no embeddings endpoint in modelux");
}

Result<EmbeddingResponse> decode_embedding_response(std::string_view family, const EmbeddingRequest& req,
                                                    const Headers& headers, std::string_view body) {
  auto j = parse_json(body);
  if (!j || !j->is_object()) return malformed(family, "embeddings answer is not a JSON object");
  Result<EmbeddingResponse> r;
  if (family == "openai" || family == "azure") {
    r = decode_openai(family, *j);
  } else if (family == "gemini") {
    r = decode_gemini(*j);
  } else if (family == "cohere") {
    r = decode_cohere_like(family, *j);
  } else if (family == "bedrock") {
    if (j->contains("embedding")) {  // Titan
      auto v = float_array((*j)["embedding"]);
      if (!v) return malformed(family, "Titan answer has no embedding array");
      EmbeddingResponse t;
      t.data.push_back(std::move(*v));
      t.usage.prompt_tokens = jint(*j, "inputTextTokenCount");
      r = std::move(t);
    } else {
      r = decode_cohere_like(family, *j);
    }
    // InvokeModel reports the billed input tokens in a header for every model.
    if (r && r->usage.prompt_tokens <= 0)
      if (const std::string* h = find_header(headers, "x-amzn-bedrock-input-token-count"))
        r->usage.prompt_tokens = std::atoll(h->c_str());
  } else {
    return malformed(family, "no embeddings decoder for this family");
  }
  if (!r) return r;
  return check_count(std::move(*r), req, family);
}

}  // namespace modelux
