// modelux catalog: providers, models, list prices, context windows, quality tiers; cost
// computation from usage. The library embeds data/catalog.json; users may load their own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "modelux/wire.hpp"

namespace modelux {

struct ProviderInfo {
  std::string name;         ///< "openai"
  std::string family;       ///< codec family
  std::string base_url;     ///< real base URL
  std::string auth_style;   ///< bearer | x-api-key | api-key | query-key | sigv4
  std::string key_env;      ///< conventional env var for its key ("OPENAI_API_KEY")
};

/// Prices are USD per 1M tokens. `priced == false` means the catalog does not know the price:
/// budgets then follow their explicit unknown-price policy, never a silent zero.
struct ModelInfo {
  std::string id;              ///< "gpt-4o-mini"
  std::string provider;        ///< "openai"
  std::string upstream;        ///< name sent to the provider (defaults to id)
  double input_per_m = 0;
  double output_per_m = 0;
  double cached_input_per_m = 0;
  double cache_write_per_m = 0;
  bool priced = false;
  std::int64_t context_window = 0;
  std::int64_t max_output = 0;
  int quality_tier = 0;        ///< 1 (basic) .. 5 (frontier)
  std::string source;          ///< where the price comes from
  bool embedding = false;      ///< an embeddings model ("kind": "embedding"): priced per input token, output 0
};

/// Cost of one call in USD, split for traces.
struct Cost {
  double input_usd = 0;
  double output_usd = 0;
  double total() const noexcept { return input_usd + output_usd; }
};

/// Immutable after construction; safe to share across threads.
class Catalog {
 public:
  /// Parses a catalog document ({"providers":[...],"models":[...]}). Errors carry the JSON path.
  static Result<Catalog> from_json(const Json& doc);
  /// The catalog embedded at build time from data/catalog.json.
  static const Catalog& builtin();

  const ModelInfo* find_model(std::string_view id) const noexcept;
  const ProviderInfo* find_provider(std::string_view name) const noexcept;
  const std::vector<ModelInfo>& models() const noexcept { return models_; }
  const std::vector<ProviderInfo>& providers() const noexcept { return providers_; }
  std::string_view as_of() const noexcept { return as_of_; }

  /// Adds or replaces entries (user overrides). Returns the merged catalog.
  Catalog merged_with(const Catalog& overrides) const;

  /// Cost of `usage` on `model`: cached input at the cached rate, cache writes at the write
  /// rate, the rest of the input at the input rate, output at the output rate.
  static Cost cost(const ModelInfo& model, const Usage& usage) noexcept;
  /// Cost by model id; nullopt when the model is unknown or unpriced.
  std::optional<Cost> cost(std::string_view model, const Usage& usage) const noexcept;

 private:
  void index();
  std::vector<ProviderInfo> providers_;
  std::vector<ModelInfo> models_;
  std::unordered_map<std::string, std::size_t> model_index_;
  std::unordered_map<std::string, std::size_t> provider_index_;
  std::string as_of_;
};

/// Rough, fast token estimate of a request's input (about 4 characters a token for text,
/// plus per-message overhead and a fixed charge per image). Used for cost estimates and
/// budget reservations before the call.
std::int64_t estimate_input_tokens(const ChatRequest& req) noexcept;

}  // namespace modelux
