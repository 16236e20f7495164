#include "policy/strategies/latency_optimized.hpp"

#include <algorithm>
#include <cstdio>

#include "policy/strategies/fallback.hpp"

namespace modelux {

namespace {

/// Candidates with fewer than min_samples are explored at least this often even when
/// `explore` is 0, so a new candidate is measured at all; bounded like any exploration.
constexpr double kColdExplore = 0.1;

class LatencyOptimizedStrategy final : public Strategy {
 public:
  std::vector<ChainEntry> candidates;
  std::vector<std::string> keys;  ///< "" for nested configs (never measured as one target)
  ChainOptions opts;
  double explore = 0.05;
  Nanos stale_after = std::chrono::seconds(60);
  std::int64_t min_samples = 5;
  std::size_t max_attempts = 3;
  bool cache_affinity = true;

  std::string_view name() const noexcept override { return "latency_optimized"; }
  Nanos total_budget() const noexcept override { return opts.total; }
  void collect_targets(std::vector<Target>& out) const override {
    for (const auto& c : candidates) c.node->collect_targets(out);
  }

  /// Ranks admitted candidates by p50; unmeasured or stale ones go last, except that with
  /// probability `explore` (capped at 0.2 by the compiler) one of them is moved to the front
  /// so it gets re-measured. Exploration is therefore bounded by `explore` of traffic.
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override {
    struct Ranked {
      std::size_t i;
      double p50;
      bool fresh;
    };
    std::vector<Ranked> fresh, stale;
    bool any_cold = false;  // never measured enough: explored at least kColdExplore of the time
    fresh.reserve(candidates.size());
    std::string preferred;
    if (cache_affinity && s.in.health)
      if (std::uint64_t fp = s.fingerprint()) preferred = s.in.health->preferred_target(fp, now);
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      TargetStats st = keys[i].empty() ? TargetStats{} : s.stats(keys[i], now);
      bool is_fresh = st.samples >= min_samples && st.p50_ms > 0 && now - st.last_sample < stale_after;
      if (st.samples < min_samples) any_cold = true;
      if (is_fresh)
        fresh.push_back({i, st.p50_ms, true});
      else
        stale.push_back({i, 0, false});
    }
    std::stable_sort(fresh.begin(), fresh.end(), [](const Ranked& x, const Ranked& y) { return x.p50 < y.p50; });
    std::vector<const ChainEntry*> order;
    order.reserve(candidates.size());
    bool explored = false;
    const double p_explore = any_cold ? std::max(explore, kColdExplore) : explore;
    if (!stale.empty() && (fresh.empty() || s.rng.uniform() < p_explore)) {
      std::size_t pick = s.rng.below(stale.size());
      order.push_back(&candidates[stale[pick].i]);
      stale.erase(stale.begin() + static_cast<std::ptrdiff_t>(pick));
      explored = !fresh.empty();
      s.notes.push_back((fresh.empty() ? "no live latency yet, measuring " : "exploring stale ") +
                        candidates[order.back() - &candidates[0]].label);
    }
    if (!fresh.empty() && !explored) {
      char buf[48];
      std::snprintf(buf, sizeof buf, " (p50 %.0f ms)", fresh[0].p50);
      s.notes.push_back("lowest p50: " + candidates[fresh[0].i].label + buf);
    }
    if (!explored && !fresh.empty() && !preferred.empty()) {
      // Prompt-cache affinity: keep the warm target if it is not much slower than the best.
      for (std::size_t k = 1; k < fresh.size(); ++k)
        if (keys[fresh[k].i] == preferred && fresh[k].p50 <= fresh[0].p50 * 1.5) {
          std::rotate(fresh.begin(), fresh.begin() + static_cast<std::ptrdiff_t>(k), fresh.begin() + static_cast<std::ptrdiff_t>(k) + 1);
          char buf[48];
          std::snprintf(buf, sizeof buf, " (p50 %.0f ms)", fresh[0].p50);
          s.notes.push_back("prompt-cache affinity: " + candidates[fresh[0].i].label + buf);
          break;
        }
    }
    for (const auto& f : fresh) order.push_back(&candidates[f.i]);
    for (const auto& f : stale) order.push_back(&candidates[f.i]);
    if (order.size() > max_attempts) order.resize(max_attempts);
    return start_chain(s, opts, std::move(order), a);
  }
};

}  // namespace

Result<std::unique_ptr<Strategy>> compile_latency_optimized(const Json& cfg, const std::string& path,
                                                            const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  if (auto k = check_keys(cfg, path,
                          {"strategy", "candidates", "explore", "stale_after_ms", "min_samples", "max_attempts",
                           "cache_affinity", "retry_on", "total_budget_ms", "backoff", "on_rate_limit", "retries",
                           "on_all_open", "max_stream_ms", "ttft_timeout_ms", "stall_timeout_ms"});
      !k)
    return std::unexpected(k.error());
  auto s = std::make_unique<LatencyOptimizedStrategy>();
  auto opts = read_chain_options(cfg, path);
  if (!opts) return std::unexpected(opts.error());
  s->opts = *opts;
  auto ex = read_number(cfg, "explore", path, 0.05, 0.0, 0.2);
  if (!ex) return std::unexpected(ex.error());
  s->explore = *ex;
  auto st = read_ms(cfg, "stale_after_ms", path, s->stale_after);
  if (!st) return std::unexpected(st.error());
  s->stale_after = *st;
  auto ms = read_number(cfg, "min_samples", path, 5, 1, 1e6);
  if (!ms) return std::unexpected(ms.error());
  s->min_samples = static_cast<std::int64_t>(*ms);
  if (auto it = cfg.find("cache_affinity"); it != cfg.end()) {
    if (!it->is_boolean()) return fail(ErrorKind::invalid_config, "cache_affinity must be a boolean", path_key(path, "cache_affinity"));
    s->cache_affinity = it->get<bool>();
  }
  auto it = cfg.find("candidates");
  std::string cp = path_key(path, "candidates");
  if (it == cfg.end() || !it->is_array() || it->empty())
    return fail(ErrorKind::invalid_config, "candidates must be a non-empty array", cp);
  if (it->size() > 32) return fail(ErrorKind::invalid_config, "at most 32 candidates", cp);
  for (std::size_t i = 0; i < it->size(); ++i) {
    auto e = compile_chain_entry((*it)[i], path_index(cp, i), r, s->opts);
    if (!e) return std::unexpected(e.error());
    const Target* t = e->node->only_target();
    s->keys.push_back(t ? t->key() : std::string{});
    s->candidates.push_back(std::move(*e));
  }
  auto ma = read_number(cfg, "max_attempts", path, static_cast<double>(s->candidates.size()), 1, 32);
  if (!ma) return std::unexpected(ma.error());
  s->max_attempts = static_cast<std::size_t>(*ma);
  return std::unique_ptr<Strategy>(std::move(s));
}

}  // namespace modelux
