// Structural checks on the shipped model catalog (data/catalog.json), read two ways: through
// Catalog::builtin() (the copy embedded in the library, what users get) and as raw JSON from
// the source tree (to check the exact keys the file carries, e.g. null vs missing prices).
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include "modelux/catalog.hpp"
#include "support/paths.hpp"

using modelux::Catalog;
using modelux::Json;
using modelux::ModelInfo;
using modelux::ProviderInfo;

namespace {

// The 15 providers modelux supports (DESIGN.md / task brief). "google" is the Gemini API.
const std::set<std::string> kSupportedProviders = {
    "openai", "anthropic", "google", "azure", "bedrock", "groq", "fireworks", "deepseek",
    "xai", "mistral", "cerebras", "together", "perplexity", "cohere", "openrouter"};

const std::set<std::string> kFamilies = {"openai", "azure", "anthropic", "gemini", "cohere", "bedrock"};
const std::set<std::string> kAuthStyles = {"bearer", "x-api-key", "api-key", "query-key", "sigv4"};

// Local test entries (the demo's mock provider) are the lead's, not list prices.
bool is_mock(std::string_view provider) { return provider.starts_with("mock"); }

const Json& raw_catalog() {
  static const Json doc = [] {
    std::ifstream in(modelux::test::source_dir() + "/data/catalog.json");
    REQUIRE(in.good());
    std::stringstream ss;
    ss << in.rdbuf();
    return Json::parse(ss.str());
  }();
  return doc;
}

const Json* raw_model(std::string_view id) {
  for (const auto& m : raw_catalog().at("models"))
    if (m.at("id").get<std::string>() == id) return &m;
  return nullptr;
}

}  // namespace

TEST_CASE("Catalog data: the embedded catalog is the shipped file and has an as-of date") {
  const Catalog& c = Catalog::builtin();
  const Json& raw = raw_catalog();
  CHECK(c.as_of() == raw.at("as_of").get<std::string>());
  CHECK(c.as_of().size() == 10);  // YYYY-MM-DD
  CHECK(raw.contains("sources_note"));
  CHECK(c.models().size() == raw.at("models").size());
  CHECK(c.providers().size() == raw.at("providers").size());
  auto reparsed = Catalog::from_json(raw);
  REQUIRE_MESSAGE(reparsed.has_value(), (reparsed ? "" : reparsed.error().describe()));
  CHECK(reparsed->models().size() == c.models().size());
}

TEST_CASE("Catalog data: model ids and provider names are unique") {
  std::set<std::string> ids, names;
  for (const auto& m : raw_catalog().at("models")) {
    auto id = m.at("id").get<std::string>();
    CHECK_MESSAGE(ids.insert(id).second, "duplicate model id ", id);
  }
  for (const auto& p : raw_catalog().at("providers")) {
    auto name = p.at("name").get<std::string>();
    CHECK_MESSAGE(names.insert(name).second, "duplicate provider ", name);
  }
}

TEST_CASE("Catalog data: every model's provider exists") {
  const Catalog& c = Catalog::builtin();
  for (const ModelInfo& m : c.models())
    CHECK_MESSAGE(c.find_provider(m.provider) != nullptr, m.id, " names unknown provider ", m.provider);
}

TEST_CASE("Catalog data: every supported provider is present and has at least one model") {
  const Catalog& c = Catalog::builtin();
  for (const auto& name : kSupportedProviders) {
    CHECK_MESSAGE(c.find_provider(name) != nullptr, "missing provider ", name);
    std::size_t n = 0;
    for (const ModelInfo& m : c.models()) n += (m.provider == name);
    CHECK_MESSAGE(n >= 1, "provider ", name, " has no model");
  }
}

TEST_CASE("Catalog data: providers carry a known codec family, auth style, https base URL and key env") {
  for (const ProviderInfo& p : Catalog::builtin().providers()) {
    if (is_mock(p.name)) continue;
    INFO("provider ", p.name);
    CHECK(kFamilies.count(p.family) == 1);
    CHECK(kAuthStyles.count(p.auth_style) == 1);
    CHECK(p.base_url.starts_with("https://"));
    CHECK_FALSE(p.base_url.ends_with("/"));
    CHECK_FALSE(p.key_env.empty());
  }
  // The pairings the codecs rely on.
  const Catalog& c = Catalog::builtin();
  auto family = [&](const char* n) { auto* p = c.find_provider(n); return p ? p->family : std::string{}; };
  auto auth = [&](const char* n) { auto* p = c.find_provider(n); return p ? p->auth_style : std::string{}; };
  CHECK(family("anthropic") == "anthropic");
  CHECK(auth("anthropic") == "x-api-key");
  CHECK(family("google") == "gemini");
  CHECK(family("azure") == "azure");
  CHECK(auth("azure") == "api-key");
  CHECK(family("bedrock") == "bedrock");
  CHECK(auth("bedrock") == "sigv4");
  CHECK(family("cohere") == "cohere");
  for (const char* n : {"openai", "groq", "fireworks", "deepseek", "xai", "mistral", "cerebras", "together",
                        "perplexity", "openrouter"}) {
    INFO("provider ", std::string(n));
    CHECK(family(n) == "openai");
    CHECK(auth(n) == "bearer");
  }
}

TEST_CASE("Catalog data: priced models have positive prices and a source, unpriced ones say why") {
  for (const auto& rm : raw_catalog().at("models")) {
    auto id = rm.at("id").get<std::string>();
    if (is_mock(rm.at("provider").get<std::string>())) continue;
    INFO("model ", id);
    REQUIRE(rm.contains("priced"));
    REQUIRE(rm.contains("source"));
    auto source = rm.at("source").get<std::string>();
    CHECK(source.size() >= 10);
    for (const char* k : {"input", "output", "cached_input", "cache_write"}) CHECK(rm.contains(k));
    if (rm.at("priced").get<bool>()) {
      REQUIRE(rm.at("input").is_number());
      REQUIRE(rm.at("output").is_number());
      double in = rm.at("input").get<double>(), out = rm.at("output").get<double>();
      CHECK(in > 0);
      // Embedding models bill input only.
      if (rm.value("kind", "chat") == "embedding") CHECK(out == 0);
      else CHECK(out > 0);
      CHECK(in < 200);  // USD per 1M tokens: anything above is a unit mistake (per 1K, cents)
      CHECK(out < 700);
      // A cache read is a discount and a cache write a surcharge, never the other way round.
      if (rm.at("cached_input").is_number()) CHECK(rm.at("cached_input").get<double>() <= in);
      if (rm.at("cache_write").is_number()) CHECK(rm.at("cache_write").get<double>() >= in);
    } else {
      for (const char* k : {"input", "output", "cached_input", "cache_write"}) CHECK(rm.at(k).is_null());
      CHECK(source.find("unverified") != std::string::npos);
    }
  }
  for (const ModelInfo& m : Catalog::builtin().models()) {
    if (is_mock(m.provider) || !m.priced) continue;
    INFO("model ", m.id);
    CHECK(m.input_per_m > 0);
    if (!m.embedding) CHECK(m.output_per_m > 0);
    CHECK_FALSE(m.source.empty());
  }
}

TEST_CASE("Catalog data: tiers, context windows and output limits are plausible") {
  for (const ModelInfo& m : Catalog::builtin().models()) {
    if (is_mock(m.provider)) continue;
    INFO("model ", m.id);
    CHECK(m.quality_tier >= 1);
    CHECK(m.quality_tier <= 5);
    if (m.embedding) {  // embedding models produce vectors, not tokens
      CHECK(m.context_window >= 512);
      CHECK(m.max_output == 0);
      continue;
    }
    CHECK(m.context_window >= 4096);
    CHECK(m.max_output >= 1024);
    CHECK(m.max_output <= m.context_window);
    CHECK_FALSE(m.upstream.empty());
  }
}

TEST_CASE("Catalog data: ids for a model on a second provider are prefixed with that provider") {
  for (const ModelInfo& m : Catalog::builtin().models()) {
    if (is_mock(m.provider)) continue;
    INFO("model ", m.id);
    auto slash = m.id.find('/');
    if (slash != std::string::npos) CHECK(m.id.substr(0, slash) == m.provider);
    // Hosts of other vendors' models always use the prefixed form.
    for (const char* host : {"azure", "bedrock", "openrouter", "groq", "fireworks", "cerebras", "together"})
      if (m.provider == host) CHECK(m.id.starts_with(std::string(host) + "/"));
    if (m.provider == "openrouter") CHECK(m.upstream.find('/') != std::string::npos);    // vendor/model
    if (m.provider == "bedrock") CHECK(m.upstream.find('.') != std::string::npos);       // vendor.model-id
    if (m.provider == "fireworks") CHECK(m.upstream.starts_with("accounts/"));
  }
}

TEST_CASE("Catalog data: seed models carry the verified list prices (wire-formats.md section 7)") {
  const Catalog& c = Catalog::builtin();
  struct Seed {
    const char* id;
    const char* provider;
    double input, output;
    double cached;      // < 0: not checked (marked uncertain in section 7)
    double write;       // < 0: not checked
  };
  const Seed seeds[] = {
      {"gpt-4o", "openai", 2.50, 10.00, 1.25, -1},
      {"gpt-4o-mini", "openai", 0.15, 0.60, 0.075, -1},
      {"claude-haiku-4-5", "anthropic", 1.00, 5.00, 0.10, 1.25},
      {"claude-sonnet-4-5", "anthropic", 3.00, 15.00, 0.30, 3.75},
      {"gemini-2.5-flash", "google", 0.30, 2.50, -1, -1},
      {"gemini-2.5-pro", "google", 1.25, 10.00, -1, -1},
  };
  for (const Seed& s : seeds) {
    INFO("seed ", s.id);
    const ModelInfo* m = c.find_model(s.id);
    REQUIRE(m != nullptr);
    CHECK(m->provider == s.provider);
    CHECK(m->priced);
    CHECK(m->input_per_m == doctest::Approx(s.input));
    CHECK(m->output_per_m == doctest::Approx(s.output));
    if (s.cached >= 0) CHECK(m->cached_input_per_m == doctest::Approx(s.cached));
    if (s.write >= 0) CHECK(m->cache_write_per_m == doctest::Approx(s.write));
    CHECK(m->quality_tier >= 1);
    const Json* rm = raw_model(s.id);
    REQUIRE(rm != nullptr);
    CHECK(rm->at("upstream").get<std::string>() == s.id);
  }
  // The data and the cost function agree: 1M plain input + 1M output on gpt-4o-mini is $0.75.
  modelux::Usage u;
  u.prompt_tokens = 1'000'000;
  u.completion_tokens = 1'000'000;
  auto cost = c.cost("gpt-4o-mini", u);
  REQUIRE(cost.has_value());
  CHECK(cost->total() == doctest::Approx(0.75));
}
