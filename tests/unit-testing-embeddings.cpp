// Embeddings: the unified request parser, each family's request encoding and answer decoding
// (native fixtures in tests/fixtures/wire/embeddings), base64 floats, and a round trip of every
// family against the mock provider's server side.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "modelux/wire.hpp"
#include "support/paths.hpp"
#include "testing/native.hpp"

using namespace modelux;

namespace {

std::string fixture(const std::string& name) {
  std::ifstream f(test::source_dir() + "/tests/fixtures/wire/embeddings/" + name, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << name);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

EmbeddingRequest texts(std::vector<std::string> t, std::optional<std::int64_t> dims = std::nullopt) {
  EmbeddingRequest r;
  r.model = "m";
  r.texts = std::move(t);
  r.dimensions = dims;
  return r;
}

ProviderEndpoint endpoint(std::string family, std::string base, std::string name = {}) {
  ProviderEndpoint ep;
  ep.family = std::move(family);
  ep.name = name.empty() ? ep.family : std::move(name);
  ep.base_url = std::move(base);
  ep.api_key = "sk-test-key";
  return ep;
}

Json body_of(const HttpRequestSpec& s) { return Json::parse(s.body); }

}  // namespace

TEST_CASE("Embeddings: the OpenAI request parses every input shape") {
  auto one = parse_embedding_request(R"({"model":"text-embedding-3-small","input":"hi"})");
  REQUIRE(one);
  CHECK(one->texts == std::vector<std::string>{"hi"});
  auto many = parse_embedding_request(R"({"model":"m","input":["a","b"],"dimensions":256,"encoding_format":"base64","user":"u1"})");
  REQUIRE(many);
  CHECK(many->texts.size() == 2);
  CHECK(many->dimensions == 256);
  CHECK(many->base64);
  CHECK(many->user == "u1");
  auto toks = parse_embedding_request(R"({"model":"m","input":[1,2,3]})");
  REQUIRE(toks);
  REQUIRE(toks->tokens.size() == 1);
  CHECK(toks->tokens[0] == std::vector<std::int64_t>{1, 2, 3});
  auto tok2 = parse_embedding_request(R"({"model":"m","input":[[1,2],[3]],"input_type":"search_query"})");
  REQUIRE(tok2);
  CHECK(tok2->tokens.size() == 2);
  CHECK(tok2->extra["input_type"] == "search_query");
}

TEST_CASE("Embeddings: malformed requests get errors naming the field") {
  struct Case {
    const char* body;
    const char* path;
  };
  const Case cases[] = {
      {R"({"input":"x"})", "model"},
      {R"({"model":"m"})", "input"},
      {R"({"model":"m","input":[]})", "input"},
      {R"({"model":"m","input":""})", "input"},
      {R"({"model":"m","input":["a",2]})", "input[1]"},
      {R"({"model":"m","input":[1,-2]})", "input"},
      {R"({"model":"m","input":[[1],"a"]})", "input[1]"},
      {R"({"model":"m","input":{"a":1}})", "input"},
      {R"({"model":"m","input":"a","dimensions":0})", "dimensions"},
      {R"({"model":"m","input":"a","dimensions":"5"})", "dimensions"},
      {R"({"model":"m","input":"a","encoding_format":"int8"})", "encoding_format"},
      {R"([1,2])", "$"},
  };
  for (const auto& c : cases) {
    INFO(c.body);
    auto r = parse_embedding_request(c.body);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::bad_request);
    CHECK(r.error().path == c.path);
  }
  CHECK_FALSE(parse_embedding_request("{not json"));
  std::string big = R"({"model":"m","input":[)";
  for (int i = 0; i < 2049; ++i) big += std::string(i ? "," : "") + "\"x\"";
  big += "]}";
  CHECK_FALSE(parse_embedding_request(big));
}

TEST_CASE("Embeddings: base64 is little-endian float32 and round-trips") {
  std::vector<float> v = {0.5f, -0.25f};
  CHECK(base64_floats(v) == "AAAAPwAAgL4=");
  auto back = floats_from_base64("AAAAPwAAgL4=");
  REQUIRE(back);
  CHECK(*back == v);
  CHECK_FALSE(floats_from_base64("AAAA!"));
  CHECK_FALSE(floats_from_base64("AAA="));  // 2 bytes: not a float
  EmbeddingResponse r;
  r.model = "m";
  r.data = {v};
  r.usage.prompt_tokens = 3;
  Json j = Json::parse(encode_embedding_response(r, true));
  CHECK(j["data"][0]["embedding"] == "AAAAPwAAgL4=");
  CHECK(j["usage"]["total_tokens"] == 3);
  Json f = Json::parse(encode_embedding_response(r, false));
  CHECK(f["data"][0]["embedding"][1].get<double>() == doctest::Approx(-0.25));
  CHECK(f["object"] == "list");
}

TEST_CASE("Embeddings: OpenAI and Mistral requests and answers") {
  auto req = texts({"hello", "world"}, 64);
  req.user = "u";
  auto spec = encode_embedding_request(req, endpoint("openai", "https://api.openai.com/v1"), "text-embedding-3-small");
  REQUIRE(spec);
  CHECK(spec->url == "https://api.openai.com/v1/embeddings");
  Json b = body_of(*spec);
  CHECK(b["model"] == "text-embedding-3-small");
  CHECK(b["input"].size() == 2);
  CHECK(b["dimensions"] == 64);
  CHECK(b["encoding_format"] == "float");
  CHECK(*find_header(spec->headers, "authorization") == "Bearer sk-test-key");

  auto ms = encode_embedding_request(req, endpoint("openai", "https://api.mistral.ai/v1", "mistral"), "mistral-embed");
  REQUIRE(ms);
  Json mb = body_of(*ms);
  CHECK(mb["output_dimension"] == 64);  // Mistral's name for it
  CHECK_FALSE(mb.contains("dimensions"));
  CHECK_FALSE(mb.contains("user"));  // Mistral refuses fields it does not know
  EmbeddingRequest tok;
  tok.model = "m";
  tok.tokens = {{1, 2}};
  auto mt = encode_embedding_request(tok, endpoint("openai", "https://api.mistral.ai/v1", "mistral"), "mistral-embed");
  REQUIRE_FALSE(mt);
  CHECK(mt.error().kind == ErrorKind::unsupported);
  auto ot = encode_embedding_request(tok, endpoint("openai", "https://api.openai.com/v1"), "text-embedding-3-small");
  REQUIRE(ot);
  CHECK(body_of(*ot)["input"] == Json::array({1, 2}));

  auto d = decode_embedding_response("openai", req, {}, fixture("openai.json"));
  REQUIRE(d);
  REQUIRE(d->data.size() == 2);
  CHECK(d->data[0] == std::vector<float>{0.125f, 1.0f});  // ordered by index, not position
  CHECK(d->data[1] == std::vector<float>{0.5f, -0.25f});
  CHECK(d->usage.prompt_tokens == 7);
  auto d64 = decode_embedding_response("openai", texts({"x"}), {}, fixture("openai_base64.json"));
  REQUIRE(d64);
  CHECK(d64->data[0] == std::vector<float>{0.5f, -0.25f});
  auto dm = decode_embedding_response("openai", texts({"x"}), {}, fixture("mistral.json"));
  REQUIRE(dm);
  CHECK(dm->usage.prompt_tokens == 5);
}

TEST_CASE("Embeddings: Azure uses the deployment URL and api-key") {
  auto ep = endpoint("azure", "https://{resource}.openai.azure.com/openai");
  ep.options["resource"] = "acme";
  auto spec = encode_embedding_request(texts({"a"}), ep, "text-embedding-3-small");
  REQUIRE(spec);
  CHECK(spec->url == "https://acme.openai.azure.com/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21");
  CHECK(*find_header(spec->headers, "api-key") == "sk-test-key");
  CHECK_FALSE(body_of(*spec).contains("model"));
  ep.options.erase("resource");
  CHECK_FALSE(encode_embedding_request(texts({"a"}), ep, "d"));
}

TEST_CASE("Embeddings: Gemini batchEmbedContents") {
  auto req = texts({"hello", "world"}, 3);
  req.extra = Json{{"task_type", "RETRIEVAL_QUERY"}};
  auto spec = encode_embedding_request(req, endpoint("gemini", "https://generativelanguage.googleapis.com"), "gemini-embedding-001");
  REQUIRE(spec);
  CHECK(spec->url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:batchEmbedContents");
  CHECK(*find_header(spec->headers, "x-goog-api-key") == "sk-test-key");
  Json b = body_of(*spec);
  REQUIRE(b["requests"].size() == 2);
  CHECK(b["requests"][0]["model"] == "models/gemini-embedding-001");
  CHECK(b["requests"][1]["content"]["parts"][0]["text"] == "world");
  CHECK(b["requests"][0]["outputDimensionality"] == 3);
  CHECK(b["requests"][0]["taskType"] == "RETRIEVAL_QUERY");
  auto d = decode_embedding_response("gemini", req, {}, fixture("gemini_batch.json"));
  REQUIRE(d);
  CHECK(d->data[1][2] == doctest::Approx(-0.3));
  // Gemini reports no tokens: the estimate stands in (4 characters a token, rounded up).
  CHECK(d->usage.prompt_tokens == estimate_embedding_tokens(req));
  CHECK(d->usage.prompt_tokens == 4);
  // One vector for two inputs is a malformed answer, never a silent success.
  auto short_answer = decode_embedding_response("gemini", texts({"a", "b", "c"}), {}, fixture("gemini_batch.json"));
  REQUIRE_FALSE(short_answer);
  CHECK(short_answer.error().kind == ErrorKind::malformed_response);
}

TEST_CASE("Embeddings: Cohere v2 embed") {
  auto req = texts({"hello", "world"});
  auto spec = encode_embedding_request(req, endpoint("cohere", "https://api.cohere.com"), "embed-english-v3.0");
  REQUIRE(spec);
  CHECK(spec->url == "https://api.cohere.com/v2/embed");
  Json b = body_of(*spec);
  CHECK(b["texts"].size() == 2);
  CHECK(b["input_type"] == "search_document");
  CHECK(b["embedding_types"] == Json::array({"float"}));
  req.extra = Json{{"input_type", "search_query"}};
  CHECK(body_of(*encode_embedding_request(req, endpoint("cohere", "https://api.cohere.com"), "e"))["input_type"] == "search_query");
  auto d = decode_embedding_response("cohere", req, {}, fixture("cohere_v2.json"));
  REQUIRE(d);
  CHECK(d->data[1] == std::vector<float>{0.75f, -1.0f});
  CHECK(d->usage.prompt_tokens == 4);
  std::vector<std::string> many(97, "x");
  CHECK(encode_embedding_request(texts(many), endpoint("cohere", "https://api.cohere.com"), "e").error().kind == ErrorKind::unsupported);
}

TEST_CASE("Embeddings: Bedrock InvokeModel for Titan and Cohere Embed") {
  auto ep = endpoint("bedrock", "https://bedrock-runtime.us-east-1.amazonaws.com");
  ep.options["secret_access_key"] = "secret";
  ep.options["amz_date"] = "20250101T000000Z";
  auto titan = encode_embedding_request(texts({"hello"}, 256), ep, "amazon.titan-embed-text-v2:0");
  REQUIRE(titan);
  CHECK(titan->url == "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke");
  CHECK(body_of(*titan) == Json{{"inputText", "hello"}, {"dimensions", 256}});
  CHECK(find_header(titan->headers, "authorization")->starts_with("AWS4-HMAC-SHA256 Credential=sk-test-key/20250101/us-east-1/bedrock/"));
  auto batch = encode_embedding_request(texts({"a", "b"}), ep, "amazon.titan-embed-text-v2:0");
  REQUIRE_FALSE(batch);  // Titan embeds one text a call: a batch fails over to a target that takes it
  CHECK(batch.error().kind == ErrorKind::unsupported);
  auto co = encode_embedding_request(texts({"a", "b"}), ep, "cohere.embed-english-v3");
  REQUIRE(co);
  CHECK(body_of(*co)["texts"].size() == 2);
  CHECK_FALSE(body_of(*co).contains("model"));
  CHECK_FALSE(encode_embedding_request(texts({"a"}), ep, "amazon.nova-pro-v1:0"));

  auto dt = decode_embedding_response("bedrock", texts({"hello"}), {}, fixture("bedrock_titan.json"));
  REQUIRE(dt);
  CHECK(dt->usage.prompt_tokens == 6);
  CHECK(dt->data[0].size() == 3);
  Headers h = {{"X-Amzn-Bedrock-Input-Token-Count", "9"}};
  auto dc = decode_embedding_response("bedrock", texts({"a", "b"}), h, fixture("bedrock_cohere.json"));
  REQUIRE(dc);
  CHECK(dc->usage.prompt_tokens == 9);  // from the header: the body has no count
  CHECK(dc->data[1] == std::vector<float>{0.3f, 0.4f});
}

TEST_CASE("Embeddings: malformed answers are errors") {
  for (const char* fam : {"openai", "gemini", "cohere", "bedrock"}) {
    INFO(fam);
    for (const char* body : {"", "{", "[]", R"({"data":[{"embedding":"!!"}]})", R"({"embeddings":[{"values":"x"}]})",
                             R"({"data":[{"index":0,"embedding":[]}],"embeddings":{"float":[[]]}})"}) {
      auto d = decode_embedding_response(fam, texts({"a"}), {}, body);
      REQUIRE_FALSE(d);
      CHECK(d.error().kind == ErrorKind::malformed_response);
    }
  }
}

TEST_CASE("Embeddings: every family round-trips through the mock provider's server side") {
  struct Fam {
    const char* family;
    const char* name;
    const char* model;
    bool reports_usage;
  };
  const Fam fams[] = {{"openai", "openai", "text-embedding-3-small", true}, {"openai", "mistral", "mistral-embed", true},
                      {"azure", "azure", "text-embedding-3-small", true},   {"gemini", "google", "gemini-embedding-001", false},
                      {"cohere", "cohere", "embed-english-v3.0", true},     {"bedrock", "bedrock", "cohere.embed-english-v3", true}};
  for (const Fam& f : fams) {
    INFO(f.name);
    auto req = texts({"a b c d", "jumps"}, f.family == std::string("bedrock") ? std::nullopt : std::optional<std::int64_t>(4));
    std::string base = f.family == std::string("azure") ? "http://mock/openai" : std::string(f.name) == "mistral" ? "http://mock/v1" : f.family == std::string("openai") ? "http://mock/v1" : "http://mock";
    auto spec = encode_embedding_request(req, endpoint(f.family, base, f.name), f.model);
    REQUIRE(spec);
    std::string target = spec->url.substr(std::string("http://mock").size());
    auto parsed = mock::parse_embedding_request("POST", target, spec->body);
    REQUIRE(parsed.has_value());
    REQUIRE(*parsed);
    CHECK((*parsed)->texts == req.texts);
    CHECK_FALSE((*parsed)->refusal);  // Mistral would 422 a field it does not know
    auto rendered = mock::render_embedding_response(**parsed);
    auto d = decode_embedding_response(f.family, req, rendered.headers, rendered.body);
    REQUIRE(d);
    REQUIRE(d->data.size() == 2);
    CHECK(d->data[0] == mock::mock_vector("a b c d", req.dimensions.value_or(8)));
    // The mock bills words + 1 a text (4+1 and 1+1 = 7), the estimate 4 characters a token (2+2):
    // a reported count shows.
    CHECK(d->usage.prompt_tokens == (f.reports_usage ? 7 : 4));
  }
  auto titan = texts({"one"});
  auto spec = encode_embedding_request(titan, endpoint("bedrock", "http://mock"), "amazon.titan-embed-text-v2:0");
  REQUIRE(spec);
  auto parsed = mock::parse_embedding_request("POST", spec->url.substr(11), spec->body);
  REQUIRE((parsed && *parsed));
  auto rendered = mock::render_embedding_response(**parsed);
  auto d = decode_embedding_response("bedrock", titan, rendered.headers, rendered.body);
  REQUIRE(d);
  CHECK(d->usage.prompt_tokens == 2);
}
