#include "modelux/catalog.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/embedded.hpp"

namespace modelux {

namespace {

Result<std::string> req_string(const Json& o, const char* key, const std::string& path) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_string() || it->get_ref<const std::string&>().empty())
    return fail(ErrorKind::invalid_config, std::string("missing or empty string '") + key + "'", path + "." + key);
  return it->get<std::string>();
}

std::string opt_string(const Json& o, const char* key) {
  auto it = o.find(key);
  return (it != o.end() && it->is_string()) ? it->get<std::string>() : std::string{};
}

// Reads an optional price; null/absent → nullopt. Negative or non-finite → error.
Result<std::optional<double>> opt_price(const Json& o, const char* key, const std::string& path) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::optional<double>{};
  if (!it->is_number()) return fail(ErrorKind::invalid_config, std::string("'") + key + "' must be a number or null", path + "." + key);
  double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) return fail(ErrorKind::invalid_config, std::string("'") + key + "' must be >= 0", path + "." + key);
  return std::optional<double>{v};
}

std::int64_t opt_int(const Json& o, const char* key) {
  auto it = o.find(key);
  return (it != o.end() && it->is_number_integer()) ? it->get<std::int64_t>() : 0;
}

}  // namespace

Result<Catalog> Catalog::from_json(const Json& doc) {
  if (!doc.is_object()) return fail(ErrorKind::invalid_config, "catalog must be a JSON object", "$");
  Catalog c;
  c.as_of_ = opt_string(doc, "as_of");
  if (auto it = doc.find("providers"); it != doc.end()) {
    if (!it->is_array()) return fail(ErrorKind::invalid_config, "'providers' must be an array", "$.providers");
    for (std::size_t i = 0; i < it->size(); ++i) {
      const Json& p = (*it)[i];
      std::string path = "$.providers[" + std::to_string(i) + "]";
      if (!p.is_object()) return fail(ErrorKind::invalid_config, "provider must be an object", path);
      ProviderInfo info;
      auto name = req_string(p, "name", path);
      if (!name) return fail(name.error());
      auto family = req_string(p, "family", path);
      if (!family) return fail(family.error());
      info.name = *name;
      info.family = *family;
      info.base_url = opt_string(p, "base_url");
      info.auth_style = opt_string(p, "auth");
      info.key_env = opt_string(p, "key_env");
      c.providers_.push_back(std::move(info));
    }
  }
  if (auto it = doc.find("models"); it != doc.end()) {
    if (!it->is_array()) return fail(ErrorKind::invalid_config, "'models' must be an array", "$.models");
    for (std::size_t i = 0; i < it->size(); ++i) {
      const Json& m = (*it)[i];
      std::string path = "$.models[" + std::to_string(i) + "]";
      if (!m.is_object()) return fail(ErrorKind::invalid_config, "model must be an object", path);
      ModelInfo info;
      auto id = req_string(m, "id", path);
      if (!id) return fail(id.error());
      auto prov = req_string(m, "provider", path);
      if (!prov) return fail(prov.error());
      info.id = *id;
      info.provider = *prov;
      info.upstream = opt_string(m, "upstream");
      if (info.upstream.empty()) info.upstream = info.id;
      auto in = opt_price(m, "input", path);
      auto out = opt_price(m, "output", path);
      auto cached = opt_price(m, "cached_input", path);
      auto write = opt_price(m, "cache_write", path);
      for (auto* r : {&in, &out, &cached, &write})
        if (!*r) return fail(r->error());
      bool priced_flag = true;
      if (auto pf = m.find("priced"); pf != m.end() && pf->is_boolean()) priced_flag = pf->get<bool>();
      info.priced = priced_flag && in->has_value() && out->has_value();
      if (priced_flag && !info.priced)
        return fail(ErrorKind::invalid_config, "a priced model needs 'input' and 'output' prices (or \"priced\": false)", path);
      info.input_per_m = in->value_or(0);
      info.output_per_m = out->value_or(0);
      // A provider without a cache discount bills cached tokens at the input rate.
      info.cached_input_per_m = cached->value_or(info.input_per_m);
      info.cache_write_per_m = write->value_or(info.input_per_m);
      info.context_window = opt_int(m, "context_window");
      info.max_output = opt_int(m, "max_output");
      info.quality_tier = static_cast<int>(opt_int(m, "tier"));
      if (info.quality_tier < 0 || info.quality_tier > 5)
        return fail(ErrorKind::invalid_config, "'tier' must be within 1..5", path + ".tier");
      info.source = opt_string(m, "source");
      // "kind": "embedding" marks a model /v1/embeddings may route to (chat is the default).
      const std::string kind = opt_string(m, "kind");
      if (!kind.empty() && kind != "chat" && kind != "embedding")
        return fail(ErrorKind::invalid_config, "'kind' must be \"chat\" or \"embedding\"", path + ".kind");
      info.embedding = kind == "embedding";
      c.models_.push_back(std::move(info));
    }
  }
  c.index();
  for (std::size_t i = 0; i < c.models_.size(); ++i) {
    if (c.model_index_.at(c.models_[i].id) != i)
      return fail(ErrorKind::invalid_config, "duplicate model id '" + c.models_[i].id + "'",
                  "$.models[" + std::to_string(i) + "].id");
  }
  return c;
}

void Catalog::index() {
  model_index_.clear();
  provider_index_.clear();
  for (std::size_t i = 0; i < models_.size(); ++i) model_index_.emplace(models_[i].id, i);
  for (std::size_t i = 0; i < providers_.size(); ++i) provider_index_.emplace(providers_[i].name, i);
}

const Catalog& Catalog::builtin() {
  static const Catalog c = [] {
    auto doc = Json::parse(embedded::kCatalogJson, nullptr, false);
    auto parsed = Catalog::from_json(doc);
    if (!parsed) {
      // The shipped file is validated by tests; reaching this is a build defect.
      std::fprintf(stderr, "modelux: embedded catalog is invalid: %s\n", parsed.error().describe().c_str());
      std::abort();
    }
    return std::move(*parsed);
  }();
  return c;
}

const ModelInfo* Catalog::find_model(std::string_view id) const noexcept {
  auto it = model_index_.find(std::string(id));
  return it == model_index_.end() ? nullptr : &models_[it->second];
}

const ProviderInfo* Catalog::find_provider(std::string_view name) const noexcept {
  auto it = provider_index_.find(std::string(name));
  return it == provider_index_.end() ? nullptr : &providers_[it->second];
}

Catalog Catalog::merged_with(const Catalog& o) const {
  Catalog c = *this;
  for (const auto& p : o.providers_) {
    if (auto it = c.provider_index_.find(p.name); it != c.provider_index_.end())
      c.providers_[it->second] = p;
    else
      c.providers_.push_back(p);
  }
  for (const auto& m : o.models_) {
    if (auto it = c.model_index_.find(m.id); it != c.model_index_.end())
      c.models_[it->second] = m;
    else
      c.models_.push_back(m);
  }
  if (!o.as_of_.empty()) c.as_of_ = o.as_of_;
  c.index();
  return c;
}

Cost Catalog::cost(const ModelInfo& m, const Usage& u) noexcept {
  const double per = 1.0 / 1'000'000.0;
  std::int64_t cached = std::max<std::int64_t>(0, u.cached_tokens);
  std::int64_t written = std::max<std::int64_t>(0, u.cache_write_tokens);
  std::int64_t plain = std::max<std::int64_t>(0, u.prompt_tokens - cached - written);
  Cost c;
  c.input_usd = (static_cast<double>(plain) * m.input_per_m + static_cast<double>(cached) * m.cached_input_per_m +
                 static_cast<double>(written) * m.cache_write_per_m) * per;
  c.output_usd = static_cast<double>(std::max<std::int64_t>(0, u.completion_tokens)) * m.output_per_m * per;
  return c;
}

std::optional<Cost> Catalog::cost(std::string_view model, const Usage& usage) const noexcept {
  const ModelInfo* m = find_model(model);
  if (!m || !m->priced) return std::nullopt;
  return cost(*m, usage);
}

std::int64_t estimate_input_tokens(const ChatRequest& req) noexcept {
  // ~4 characters per token for English text and JSON (OpenAI's rule of thumb), rounded up,
  // plus 4 tokens of framing per message and 3 for the reply primer; 85 tokens per image
  // (OpenAI's low-detail charge) as a floor. Tool schemas count as text.
  std::size_t chars = 0;
  std::int64_t extra = 3;
  for (const auto& m : req.messages) {
    extra += 4;
    for (const auto& p : m.content) {
      if (p.type == ContentPart::Type::text) chars += p.text.size();
      else extra += 85;
    }
    for (const auto& tc : m.tool_calls) chars += tc.name.size() + tc.arguments.size();
  }
  for (const auto& t : req.tools) {
    chars += t.name.size() + t.description.size();
    if (!t.parameters.is_null()) chars += t.parameters.dump().size();
  }
  return static_cast<std::int64_t>((chars + 3) / 4) + extra;
}

}  // namespace modelux
