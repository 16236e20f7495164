#include "policy/strategies/cost_optimized.hpp"

#include <algorithm>
#include <cstdio>

#include "policy/strategies/fallback.hpp"
#include "policy/strategies/single.hpp"

namespace modelux {

namespace {

struct Candidate {
  ChainEntry entry;
  ModelInfo info;
  std::string key;
};

class CostOptimizedStrategy final : public Strategy {
 public:
  std::vector<Candidate> candidates;
  ChainOptions opts;
  int min_tier = 1;
  std::int64_t expected_output = 256;
  std::size_t max_attempts = 3;
  bool cache_affinity = true;

  std::string_view name() const noexcept override { return "cost_optimized"; }
  Nanos total_budget() const noexcept override { return opts.total; }
  void collect_targets(std::vector<Target>& out) const override {
    for (const auto& c : candidates) c.entry.node->collect_targets(out);
  }

  /// Sorts candidates by estimated cost for this request (n is small: insertion sort).
  /// Cost: O(n^2) with n = candidates, no allocation beyond the order vector.
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override {
    const double in_tok = static_cast<double>(s.estimated_tokens());
    std::int64_t out = expected_output;
    if (s.in.request && s.in.request->max_tokens) out = std::min<std::int64_t>(out, *s.in.request->max_tokens);
    const double out_tok = static_cast<double>(out);
    std::string preferred;
    if (cache_affinity && s.in.health) {
      if (std::uint64_t fp = s.fingerprint()) preferred = s.in.health->preferred_target(fp, now);
    }
    struct Ranked {
      const Candidate* c;
      double usd;
      bool cached;
    };
    std::vector<Ranked> ranked;
    ranked.reserve(candidates.size());
    std::size_t too_long = 0;
    for (const auto& c : candidates) {
      if (c.info.context_window > 0 && in_tok + out_tok > static_cast<double>(c.info.context_window)) {
        ++too_long;
        continue;
      }
      bool cached = !preferred.empty() && preferred == c.key && c.info.cached_input_per_m > 0;
      double in_rate = cached ? c.info.cached_input_per_m : c.info.input_per_m;
      double usd = (in_tok * in_rate + out_tok * c.info.output_per_m) / 1e6;
      Ranked r{&c, usd, cached};
      auto pos = std::upper_bound(ranked.begin(), ranked.end(), r,
                                  [](const Ranked& x, const Ranked& y) { return x.usd < y.usd; });
      ranked.insert(pos, r);
    }
    std::vector<const ChainEntry*> order;
    for (std::size_t i = 0; i < ranked.size() && i < max_attempts; ++i) order.push_back(&ranked[i].c->entry);
    if (!ranked.empty()) {
      char buf[64];
      std::snprintf(buf, sizeof buf, " (~$%.6f)", ranked[0].usd);
      s.notes.push_back("cheapest meeting tier " + std::to_string(min_tier) + ": " + ranked[0].c->info.id + buf +
                        (ranked[0].cached ? " with prompt-cache affinity" : ""));
    }
    if (too_long) s.notes.push_back(std::to_string(too_long) + " candidates skipped: prompt over context window");
    return start_chain(s, opts, std::move(order), a);
  }
};

}  // namespace

Result<std::unique_ptr<Strategy>> compile_cost_optimized(const Json& cfg, const std::string& path,
                                                         const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  if (auto k = check_keys(cfg, path,
                          {"strategy", "min_tier", "allow", "deny", "expected_output_tokens", "max_attempts",
                           "timeout_ms", "cache_affinity", "retry_on", "total_budget_ms", "backoff", "on_rate_limit",
                           "retries", "on_all_open", "max_stream_ms", "ttft_timeout_ms", "stall_timeout_ms"});
      !k)
    return std::unexpected(k.error());
  auto s = std::make_unique<CostOptimizedStrategy>();
  auto opts = read_chain_options(cfg, path);
  if (!opts) return std::unexpected(opts.error());
  s->opts = *opts;
  auto tier = read_number(cfg, "min_tier", path, 1, 1, 5);
  if (!tier) return std::unexpected(tier.error());
  s->min_tier = static_cast<int>(*tier);
  auto out = read_number(cfg, "expected_output_tokens", path, 256, 1, 1e7);
  if (!out) return std::unexpected(out.error());
  s->expected_output = static_cast<std::int64_t>(*out);
  auto ma = read_number(cfg, "max_attempts", path, 3, 1, 32);
  if (!ma) return std::unexpected(ma.error());
  s->max_attempts = static_cast<std::size_t>(*ma);
  auto timeout = read_ms(cfg, "timeout_ms", path, s->opts.total.count() ? s->opts.total : Nanos{std::chrono::seconds(30)});
  if (!timeout) return std::unexpected(timeout.error());
  if (s->opts.total.count() && *timeout > s->opts.total)
    return fail(ErrorKind::invalid_config, "timeout_ms is over total_budget_ms", path_key(path, "timeout_ms"));
  if (auto it = cfg.find("cache_affinity"); it != cfg.end()) {
    if (!it->is_boolean()) return fail(ErrorKind::invalid_config, "cache_affinity must be a boolean", path_key(path, "cache_affinity"));
    s->cache_affinity = it->get<bool>();
  }
  std::vector<std::string> deny;
  if (auto it = cfg.find("deny"); it != cfg.end()) {
    if (!it->is_array()) return fail(ErrorKind::invalid_config, "deny must be an array of model names", path_key(path, "deny"));
    for (std::size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string())
        return fail(ErrorKind::invalid_config, "model names are strings", path_index(path_key(path, "deny"), i));
      deny.push_back((*it)[i].get<std::string>());
    }
  }
  auto add = [&](const std::string& model, const std::string& mpath) -> Result<void> {
    if (std::find(deny.begin(), deny.end(), model) != deny.end()) return {};
    const ModelInfo* mi = r.catalog().find_model(model);
    auto t = resolve_target(model, nullptr, mpath, r);
    if (!t) return std::unexpected(t.error());
    if (!mi || !mi->priced)
      return fail(ErrorKind::invalid_config, "model '" + model + "' has no known price; cost_optimized cannot rank it", mpath);
    if (mi->quality_tier < s->min_tier) return {};
    Candidate c;
    c.info = *mi;
    c.key = t->key();
    auto leaf = make_target_strategy(std::move(*t), r, *timeout);
    if (!leaf) return std::unexpected(leaf.error());
    c.entry.node = std::move(*leaf);
    c.entry.label = model;
    c.entry.retries = s->opts.retries;
    s->candidates.push_back(std::move(c));
    return {};
  };
  if (auto it = cfg.find("allow"); it != cfg.end()) {
    std::string ap = path_key(path, "allow");
    if (!it->is_array() || it->empty())
      return fail(ErrorKind::invalid_config, "allow must be a non-empty array of model names", ap);
    for (std::size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string()) return fail(ErrorKind::invalid_config, "model names are strings", path_index(ap, i));
      if (auto a = add((*it)[i].get<std::string>(), path_index(ap, i)); !a) return std::unexpected(a.error());
    }
  } else {
    for (const auto& m : r.catalog().models()) {
      // Embedding models answer /v1/embeddings only: never a chat candidate.
      if (!m.priced || m.embedding || r.provider_for(m.id).empty()) continue;
      if (auto a = add(m.id, path); !a) return std::unexpected(a.error());
    }
  }
  if (s->candidates.empty())
    return fail(ErrorKind::invalid_config,
                "no allowed, priced model meets min_tier " + std::to_string(s->min_tier),
                path_key(path, cfg.contains("allow") ? "allow" : "min_tier"));
  return std::unique_ptr<Strategy>(std::move(s));
}

}  // namespace modelux
