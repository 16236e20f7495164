#include "policy/strategies/ab_test.hpp"

#include <cmath>

namespace modelux {

namespace {

struct Arm {
  std::string name;
  double weight = 0;            ///< percent
  std::uint32_t upper = 0;      ///< cumulative upper bound in basis points (0..10000)
  std::unique_ptr<Strategy> node;
};

class AbTestStrategy final : public Strategy {
 public:
  std::vector<Arm> arms;
  std::string salt;
  bool sticky_user = true;
  Nanos total{0};

  std::string_view name() const noexcept override { return "ab_test"; }
  Nanos total_budget() const noexcept override { return total; }
  void collect_targets(std::vector<Target>& out) const override {
    for (const auto& a : arms) a.node->collect_targets(out);
  }

  /// Bucket in [0, 10000): fnv1a64(salt ":" end_user) when sticky and the caller names an end
  /// user, otherwise the session's seeded RNG. The arm is the first whose cumulative upper
  /// bound exceeds the bucket. Cost: one hash + a scan of the arms.
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override {
    std::uint32_t bucket;
    const CallContext* ctx = s.in.context;
    bool by_user = sticky_user && ctx && !ctx->end_user.empty();
    if (by_user) {
      std::uint64_t h = fnv1a64(salt);
      h = fnv1a64(":", h);
      h = fnv1a64(ctx->end_user, h);
      bucket = static_cast<std::uint32_t>(h % 10000);
    } else {
      bucket = static_cast<std::uint32_t>(s.rng.below(10000));
    }
    const Arm* arm = &arms.back();
    for (const auto& x : arms)
      if (bucket < x.upper) {
        arm = &x;
        break;
      }
    s.trace.ab_arm = arm->name;
    s.notes.push_back("A/B arm " + arm->name + (by_user ? " (sticky for end user)" : " (random: no end user)"));
    return arm->node->start(s, now, a);
  }
};

}  // namespace

Result<std::unique_ptr<Strategy>> compile_ab_test(const Json& cfg, const std::string& path, const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  if (auto k = check_keys(cfg, path, {"strategy", "arms", "salt", "sticky", "total_budget_ms"}); !k)
    return std::unexpected(k.error());
  auto s = std::make_unique<AbTestStrategy>();
  auto total = read_ms(cfg, "total_budget_ms", path, Nanos{0});
  if (!total) return std::unexpected(total.error());
  s->total = *total;
  auto sticky = read_string(cfg, "sticky", path, "end_user");
  if (!sticky) return std::unexpected(sticky.error());
  if (*sticky != "end_user" && *sticky != "none")
    return fail(ErrorKind::invalid_config, "sticky must be \"end_user\" or \"none\"", path_key(path, "sticky"));
  s->sticky_user = *sticky == "end_user";
  auto it = cfg.find("arms");
  std::string ap = path_key(path, "arms");
  if (it == cfg.end() || !it->is_array() || it->size() < 2)
    return fail(ErrorKind::invalid_config, "arms must be an array of at least two arms", ap);
  double sum = 0;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& aj = (*it)[i];
    std::string ep = path_index(ap, i);
    if (auto o = require_object(aj, ep); !o) return std::unexpected(o.error());
    if (auto k = check_keys(aj, ep, {"name", "weight", "model", "config", "target"}); !k) return std::unexpected(k.error());
    Arm arm;
    auto w = aj.find("weight");
    if (w == aj.end() || !w->is_number() || !(w->get<double>() >= 0) || w->get<double>() > 100)
      return fail(ErrorKind::invalid_config, "weight must be a percentage 0..100", path_key(ep, "weight"));
    arm.weight = w->get<double>();
    sum += arm.weight;
    int forms = aj.contains("model") + aj.contains("config") + aj.contains("target");
    if (forms != 1) return fail(ErrorKind::invalid_config, "an arm needs exactly one of model, config, target", ep);
    Result<std::unique_ptr<Strategy>> node = std::unexpected(Error{});
    if (aj.contains("model")) node = compile_node(aj["model"], path_key(ep, "model"), r);
    else if (aj.contains("target")) node = compile_node(aj["target"], path_key(ep, "target"), r);
    else {
      Json c = {{"config", aj["config"]}};
      node = compile_node(c, ep, r);
    }
    if (!node) return std::unexpected(node.error());
    arm.node = std::move(*node);
    auto nm = read_string(aj, "name", ep, "");
    if (!nm) return std::unexpected(nm.error());
    arm.name = nm->empty() ? (arm.node->only_target() ? arm.node->only_target()->model : "arm" + std::to_string(i)) : *nm;
    for (const auto& other : s->arms)
      if (other.name == arm.name) return fail(ErrorKind::invalid_config, "duplicate arm name '" + arm.name + "'", path_key(ep, "name"));
    s->arms.push_back(std::move(arm));
  }
  if (std::abs(sum - 100.0) > 1e-6)
    return fail(ErrorKind::invalid_config, "arm weights sum to " + std::to_string(sum) + ", not 100", ap);
  double acc = 0;
  for (auto& a : s->arms) {
    acc += a.weight;
    a.upper = static_cast<std::uint32_t>(std::llround(acc * 100));
  }
  s->arms.back().upper = 10000;
  auto salt = read_string(cfg, "salt", path, path);
  if (!salt) return std::unexpected(salt.error());
  s->salt = *salt;
  return std::unique_ptr<Strategy>(std::move(s));
}

}  // namespace modelux
