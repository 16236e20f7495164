#include "policy/strategies/rules.hpp"

#include "policy/dsl.hpp"

namespace modelux {

namespace {

struct Rule {
  dsl::Expression when;
  std::unique_ptr<Strategy> node;
  std::string label;
};

class RulesStrategy final : public Strategy {
 public:
  std::vector<Rule> rules;
  std::unique_ptr<Strategy> fallback;
  std::string default_label;
  Nanos total{0};

  std::string_view name() const noexcept override { return "rules"; }
  Nanos total_budget() const noexcept override { return total; }
  void collect_targets(std::vector<Target>& out) const override {
    for (const auto& r : rules) r.node->collect_targets(out);
    fallback->collect_targets(out);
  }
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override {
    dsl::EvalContext c;
    c.request = s.in.request;
    c.context = s.in.context;
    c.health = s.in.health;
    c.budget = s.in.budget;
    c.now = now;
    c.wall = s.in.wall_start + std::chrono::duration_cast<WallTime::duration>(now - s.in.start);
    c.estimated_tokens = s.estimated_tokens();
    for (std::size_t i = 0; i < rules.size(); ++i)
      if (rules[i].when.eval_bool(c)) {
        s.notes.push_back("rule " + std::to_string(i) + " matched (" + rules[i].when.source() + ") -> " + rules[i].label);
        return rules[i].node->start(s, now, a);
      }
    s.notes.push_back("no rule matched -> default " + default_label);
    return fallback->start(s, now, a);
  }
};

std::string label_of(const Json& j, const Strategy& n) {
  if (const Target* t = n.only_target()) return t->model;
  if (j.is_string()) return j.get<std::string>();
  return std::string(n.name());
}

/// A route: {"model":...} / {"config":...} / {"route": <node>} / or a node itself.
Result<std::unique_ptr<Strategy>> compile_route(const Json& j, const std::string& p, const PolicyResolver& r,
                                                Json* shown) {
  if (j.is_object() && j.contains("route")) {
    *shown = j["route"];
    return compile_node(j["route"], path_key(p, "route"), r);
  }
  if (j.is_object() && j.contains("config") && !j.contains("strategy")) {
    *shown = j["config"];
    Json c = {{"config", j["config"]}};
    return compile_node(c, p, r);
  }
  if (j.is_object() && j.contains("model") && !j.contains("strategy")) {
    *shown = j["model"];
    Json m = j;
    m.erase("when");
    return compile_node(m, p, r);
  }
  *shown = j;
  return compile_node(j, p, r);
}

}  // namespace

Result<std::unique_ptr<Strategy>> compile_rules(const Json& cfg, const std::string& path, const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  if (auto k = check_keys(cfg, path, {"strategy", "rules", "default", "total_budget_ms"}); !k)
    return std::unexpected(k.error());
  auto s = std::make_unique<RulesStrategy>();
  auto total = read_ms(cfg, "total_budget_ms", path, Nanos{0});
  if (!total) return std::unexpected(total.error());
  s->total = *total;
  auto it = cfg.find("rules");
  std::string rp = path_key(path, "rules");
  if (it == cfg.end() || !it->is_array()) return fail(ErrorKind::invalid_config, "rules must be an array", rp);
  if (it->size() > 256) return fail(ErrorKind::invalid_config, "at most 256 rules", rp);
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& rj = (*it)[i];
    std::string ep = path_index(rp, i);
    if (auto o = require_object(rj, ep); !o) return std::unexpected(o.error());
    if (auto k = check_keys(rj, ep, {"when", "model", "provider", "timeout_ms", "config", "route"}); !k)
      return std::unexpected(k.error());
    auto w = rj.find("when");
    if (w == rj.end() || !w->is_string())
      return fail(ErrorKind::invalid_config, "a rule needs a \"when\" expression string", path_key(ep, "when"));
    auto expr = dsl::Expression::compile(w->get<std::string>(), dsl::Type::boolean, &r.catalog());
    if (!expr) {
      Error e = expr.error();
      e.path = path_key(ep, "when");
      return std::unexpected(std::move(e));
    }
    int forms = rj.contains("model") + rj.contains("config") + rj.contains("route");
    if (forms != 1) return fail(ErrorKind::invalid_config, "a rule needs exactly one of model, config, route", ep);
    Json shown;
    auto node = compile_route(rj, ep, r, &shown);
    if (!node) return std::unexpected(node.error());
    Rule rule{std::move(*expr), std::move(*node), {}};
    rule.label = label_of(shown, *rule.node);
    s->rules.push_back(std::move(rule));
  }
  auto d = cfg.find("default");
  if (d == cfg.end()) return fail(ErrorKind::invalid_config, "rules needs a \"default\" route", path_key(path, "default"));
  Json shown;
  auto node = compile_route(*d, path_key(path, "default"), r, &shown);
  if (!node) return std::unexpected(node.error());
  s->fallback = std::move(*node);
  s->default_label = label_of(shown, *s->fallback);
  return std::unique_ptr<Strategy>(std::move(s));
}

}  // namespace modelux
