// Internal: the router's immutable table of compiled configs and per-model policies. A new
// table is built and published atomically on every config change; requests keep the table
// (and so the config version) they started with.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "modelux/config.hpp"
#include "modelux/policy.hpp"

namespace modelux {

class RouteTable final : public PolicyResolver {
 public:
  /// Compiles every routing config of `cfg` (in dependency order: "@slug" references are
  /// resolved against configs compiled earlier; cycles are errors) and a single-model policy
  /// for every routable catalog model. `cfg` must outlive the table.
  static Result<std::shared_ptr<const RouteTable>> build(const Config& cfg, const RouteTable* previous);
  /// A copy with one config added or replaced (version bumped).
  Result<std::shared_ptr<const RouteTable>> with_config(const Config& cfg, const std::string& slug,
                                                        const Json& config) const;

  /// "@slug" → routing config; anything else → the model's single-model policy.
  std::shared_ptr<const Policy> lookup(std::string_view name) const;
  std::vector<std::string> slugs() const;
  std::vector<std::string> models() const;

  const Catalog& catalog() const override { return cfg_->catalog; }
  std::string provider_for(std::string_view model) const override;
  std::shared_ptr<const Policy> config(std::string_view slug) const override;

 private:
  explicit RouteTable(const Config& cfg) : cfg_(&cfg) {}
  Result<void> compile_all(const std::map<std::string, Json>& routing, const RouteTable* previous);
  const Config* cfg_;
  std::unordered_map<std::string, std::shared_ptr<const Policy>> slugs_;
  std::unordered_map<std::string, std::shared_ptr<const Policy>> models_;
};

}  // namespace modelux
