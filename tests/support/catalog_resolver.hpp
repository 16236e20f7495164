// Test helper: resolves models against the shipped catalog (every catalog provider counts as
// configured) and "@slug" references against a map the test fills.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "modelux/policy.hpp"

namespace modelux::testing {

class CatalogResolver final : public PolicyResolver {
 public:
  const Catalog& catalog() const override { return Catalog::builtin(); }
  std::string provider_for(std::string_view model) const override {
    const ModelInfo* m = catalog().find_model(model);
    return m ? m->provider : std::string{};
  }
  std::shared_ptr<const Policy> config(std::string_view slug) const override {
    auto it = configs.find(std::string(slug));
    return it == configs.end() ? nullptr : it->second;
  }
  std::map<std::string, std::shared_ptr<const Policy>> configs;
};

}  // namespace modelux::testing
