#include "router/resolver.hpp"

#include <algorithm>

namespace modelux {

std::string RouteTable::provider_for(std::string_view model) const {
  const ModelInfo* m = cfg_->catalog.find_model(model);
  if (!m) return {};
  return cfg_->find_provider(m->provider) ? m->provider : std::string{};
}

std::shared_ptr<const Policy> RouteTable::config(std::string_view slug) const {
  if (!slug.empty() && slug.front() == '@') slug.remove_prefix(1);
  auto it = slugs_.find(std::string(slug));
  return it == slugs_.end() ? nullptr : it->second;
}

std::shared_ptr<const Policy> RouteTable::lookup(std::string_view name) const {
  if (!name.empty() && name.front() == '@') return config(name);
  auto it = models_.find(std::string(name));
  return it == models_.end() ? nullptr : it->second;
}

std::vector<std::string> RouteTable::slugs() const {
  std::vector<std::string> v;
  for (const auto& [k, _] : slugs_) v.push_back(k);
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::string> RouteTable::models() const {
  std::vector<std::string> v;
  for (const auto& [k, _] : models_) v.push_back(k);
  std::sort(v.begin(), v.end());
  return v;
}

Result<void> RouteTable::compile_all(const std::map<std::string, Json>& routing, const RouteTable* previous) {
  // Repeated passes: each pass compiles the configs whose references are already known.
  // A pass without progress means an unknown reference or a cycle: report the first error.
  std::map<std::string, const Json*> pending;
  for (const auto& [slug, j] : routing) pending[slug] = &j;
  while (!pending.empty()) {
    bool progress = false;
    std::optional<Error> first_error;
    for (auto it = pending.begin(); it != pending.end();) {
      auto p = Policy::compile(*it->second, *this, "@" + it->first);
      if (!p) {
        if (!first_error) {
          first_error = p.error();
          first_error->message = "routing config '@" + it->first + "': " + first_error->message;
          first_error->path = "$.routing." + it->first + (p.error().path.size() > 1 ? p.error().path.substr(1) : "");
        }
        ++it;
        continue;
      }
      std::int64_t version = 1;
      if (previous) {
        if (auto old = previous->config(it->first)) {
          version = old->version();
          if (old->source() != *it->second) ++version;
        }
      }
      auto mutable_policy = std::const_pointer_cast<Policy>(*p);
      mutable_policy->set_version(version);
      slugs_[it->first] = std::move(*p);
      it = pending.erase(it);
      progress = true;
    }
    if (!progress) return fail(std::move(*first_error));
  }
  return {};
}

Result<std::shared_ptr<const RouteTable>> RouteTable::build(const Config& cfg, const RouteTable* previous) {
  std::shared_ptr<RouteTable> t(new RouteTable(cfg));
  for (const auto& m : cfg.catalog.models()) {
    if (!cfg.find_provider(m.provider)) continue;
    auto p = Policy::single_model(m.id, *t);
    if (!p) continue;  // e.g. a model the policy layer refuses; it is simply not routable
    t->models_[m.id] = std::move(*p);
  }
  if (auto r = t->compile_all(cfg.routing, previous); !r) return fail(r.error());
  return std::shared_ptr<const RouteTable>(std::move(t));
}

Result<std::shared_ptr<const RouteTable>> RouteTable::with_config(const Config& cfg, const std::string& slug,
                                                                  const Json& config) const {
  std::map<std::string, Json> routing = cfg.routing;
  routing[slug] = config;
  std::shared_ptr<RouteTable> t(new RouteTable(cfg));
  t->models_ = models_;
  if (auto r = t->compile_all(routing, this); !r) return fail(r.error());
  return std::shared_ptr<const RouteTable>(std::move(t));
}

}  // namespace modelux
