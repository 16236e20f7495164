#include "policy/strategies/ensemble.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace modelux {

std::string normalize_answer(std::string_view t) {
  std::string out;
  out.reserve(t.size());
  bool space = false;
  for (unsigned char c : t) {
    if (std::isspace(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(c));
  }
  while (!out.empty() && std::string_view(".!?;:,").find(out.back()) != std::string_view::npos) out.pop_back();
  return out;
}

namespace {

enum class Aggregation : std::uint8_t { majority_vote, first_valid, weighted_vote };
std::string_view to_string(Aggregation a) {
  switch (a) {
    case Aggregation::majority_vote: return "majority_vote";
    case Aggregation::first_valid: return "first_valid";
    case Aggregation::weighted_vote: return "weighted_vote";
  }
  return "majority_vote";
}

struct Member {
  std::unique_ptr<Strategy> node;
  double weight = 1;
  Nanos timeout{0};
  std::string label;
};

class EnsembleStrategy final : public Strategy {
 public:
  std::vector<Member> members;
  Aggregation agg = Aggregation::majority_vote;
  Nanos total{0};
  std::size_t min_responses = 1;

  std::string_view name() const noexcept override { return "ensemble"; }
  Nanos total_budget() const noexcept override { return total; }
  void collect_targets(std::vector<Target>& out) const override {
    for (const auto& m : members) m.node->collect_targets(out);
  }
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override;
};

/// Starts every member at once; each runs to its own terminal outcome. first_valid ends at
/// the first member with a non-empty answer (the rest are abandoned); the votes wait for all
/// members (or the deadline), then group normalised answers and pick the group with the most
/// votes (weighted: summed weights). Ties go to the group whose first answer finished first.
class EnsembleState final : public StrategyState {
 public:
  EnsembleState(const EnsembleStrategy& spec, SessionCore& s, Instant now, const StartArgs& a) : spec_(spec), args_(a) {
    whys_.reserve(spec.members.size());  // children keep views of these strings
    for (std::size_t i = 0; i < spec.members.size(); ++i) {
      const Member& m = spec.members[i];
      StartArgs b = a;
      b.member = static_cast<int>(i);
      b.needs_full_response = true;
      b.node_deadline = m.timeout.count() ? std::min(a.node_deadline, now + m.timeout) : a.node_deadline;
      whys_.push_back("ensemble member " + std::to_string(i));
      b.why = whys_.back();
      children_.push_back(m.node->start(s, now, b));
      finished_.push_back(false);
    }
  }

  Step::Kind next(SessionCore& s, Instant now, Step& step) override {
    if (ended_) return outcome_.ok ? Step::Kind::done : Step::Kind::failed;
    Instant wake{};
    bool any_attempt = false, any_running = false;
    for (std::size_t i = 0; i < children_.size(); ++i) {
      if (finished_[i]) continue;
      Step sub;
      Step::Kind k = children_[i]->next(s, now, sub);
      if (k == Step::Kind::done || k == Step::Kind::failed) {
        finished_[i] = true;
        order_.push_back(i);
        const NodeOutcome& o = children_[i]->outcome();
        if (o.attempt) {
          std::string vote = o.ok ? normalize_answer(response_text(response_of(s, o))) : "";
          s.record(o.attempt).vote = o.ok ? vote : "(failed: " + std::string(modelux::to_string(o.error.kind)) + ")";
        }
        if (spec_.agg == Aggregation::first_valid && o.ok && !response_text(response_of(s, o)).empty()) {
          abandon(s, now, "abandoned: first_valid satisfied by member " + std::to_string(i));
          outcome_ = o;
          s.trace.aggregation = "first_valid: member " + std::to_string(i) + " (" + spec_.members[i].label + ")";
          ended_ = true;
          return Step::Kind::done;
        }
        continue;
      }
      any_running = true;
      if (k == Step::Kind::attempt) {
        any_attempt = true;  // the session hands every attempt made in this call to the driver
      } else if (sub.wake_at != Instant{} && (wake == Instant{} || sub.wake_at < wake)) {
        wake = sub.wake_at;
      }
    }
    if (any_attempt) return Step::Kind::attempt;
    if (any_running) {
      step.wake_at = wake;
      return Step::Kind::wait;
    }
    return aggregate(s);
  }

  void on_result(SessionCore& s, std::uint32_t id, Instant now) override {
    for (auto& c : children_)
      if (c->owns(id)) c->on_result(s, id, now);
  }
  bool owns(std::uint32_t id) const noexcept override {
    for (const auto& c : children_)
      if (c->owns(id)) return true;
    return false;
  }

 private:
  /// Ends every member still running; the session lists them in Step::cancel.
  void abandon(SessionCore& s, Instant now, const std::string& why) {
    for (std::size_t i = 0; i < children_.size(); ++i) {
      if (finished_[i]) continue;
      for (std::uint32_t id = 1; id <= s.plan_count(); ++id)
        if (children_[i]->owns(id)) s.abandon(id, now, why);
    }
  }

  Step::Kind aggregate(SessionCore& s) {
    ended_ = true;
    struct Group {
      std::string answer;
      double votes = 0;
      std::size_t count = 0;
      std::size_t first_rank = 0;  // finishing order of its first member
      std::size_t member = 0;
    };
    std::vector<Group> groups;
    std::size_t ok = 0;
    for (std::size_t rank = 0; rank < order_.size(); ++rank) {
      std::size_t i = order_[rank];
      const NodeOutcome& o = children_[i]->outcome();
      if (!o.ok) continue;
      std::string text = response_text(response_of(s, o));
      if (text.empty()) continue;
      ++ok;
      std::string norm = normalize_answer(text);
      double w = spec_.agg == Aggregation::weighted_vote ? spec_.members[i].weight : 1.0;
      auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.answer == norm; });
      if (g == groups.end()) {
        groups.push_back(Group{norm, w, 1, rank, i});
      } else {
        g->votes += w;
        ++g->count;
      }
    }
    if (ok < std::max<std::size_t>(1, spec_.min_responses)) {
      outcome_.ok = false;
      outcome_.error.kind = ErrorKind::no_route;
      outcome_.error.message = "ensemble: " + std::to_string(ok) + " of " + std::to_string(children_.size()) +
                               " members answered, " + std::to_string(spec_.min_responses) + " needed";
      for (std::size_t i : order_)
        if (!children_[i]->outcome().ok) {
          outcome_.error.kind = children_[i]->outcome().error.kind;  // surface a real cause
          break;
        }
      s.trace.aggregation = std::string(to_string(spec_.agg)) + ": not enough answers (" + std::to_string(ok) + ")";
      return Step::Kind::failed;
    }
    auto best = groups.begin();
    bool tie = false;
    for (auto g = groups.begin() + 1; g != groups.end(); ++g) {
      if (g->votes > best->votes + 1e-12) {
        best = g;
        tie = false;
      } else if (std::abs(g->votes - best->votes) <= 1e-12) {
        tie = true;  // best keeps the earlier finisher
      }
    }
    const NodeOutcome& win = children_[best->member]->outcome();
    outcome_.ok = true;
    outcome_.response = response_of(s, win);
    outcome_.served = win.served;
    outcome_.attempt = 0;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g/%g", best->votes, total_votes(groups));
    std::string agg = std::string(to_string(spec_.agg)) + ": \"" + best->answer.substr(0, 60) + "\" " + buf +
                      " from " + std::to_string(ok) + " answers";
    if (groups.size() > 1) agg += ", " + std::to_string(groups.size()) + " distinct";
    if (tie) agg += ", tie broken by earliest answer (member " + std::to_string(best->member) + ")";
    s.trace.aggregation = agg;
    s.notes.push_back(agg);
    return Step::Kind::done;
  }
  static double total_votes(const std::vector<auto>& groups) {
    double t = 0;
    for (const auto& g : groups) t += g.votes;
    return t;
  }

  const EnsembleStrategy& spec_;
  StartArgs args_;
  std::vector<std::string> whys_;
  std::vector<StatePtr> children_;
  std::vector<bool> finished_;
  std::vector<std::size_t> order_;
  bool ended_ = false;
};

StatePtr EnsembleStrategy::start(SessionCore& s, Instant now, const StartArgs& a) const {
  return s.make_state<EnsembleState>(*this, s, now, a);
}

}  // namespace

Result<std::unique_ptr<Strategy>> compile_ensemble(const Json& cfg, const std::string& path, const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  if (auto k = check_keys(cfg, path, {"strategy", "members", "aggregation", "timeout_ms", "total_budget_ms", "min_responses"}); !k)
    return std::unexpected(k.error());
  auto s = std::make_unique<EnsembleStrategy>();
  auto total = read_ms(cfg, "total_budget_ms", path, Nanos{0});
  if (!total) return std::unexpected(total.error());
  s->total = *total;
  auto agg = read_string(cfg, "aggregation", path, "majority_vote");
  if (!agg) return std::unexpected(agg.error());
  if (*agg == "majority_vote") s->agg = Aggregation::majority_vote;
  else if (*agg == "first_valid") s->agg = Aggregation::first_valid;
  else if (*agg == "weighted_vote") s->agg = Aggregation::weighted_vote;
  else
    return fail(ErrorKind::invalid_config, "aggregation must be majority_vote, first_valid or weighted_vote",
                path_key(path, "aggregation"));
  auto default_timeout = read_ms(cfg, "timeout_ms", path, Nanos{0});
  if (!default_timeout) return std::unexpected(default_timeout.error());
  auto it = cfg.find("members");
  std::string mp = path_key(path, "members");
  if (it == cfg.end() || !it->is_array() || it->size() < 2)
    return fail(ErrorKind::invalid_config, "members must be an array of at least two entries", mp);
  if (it->size() > 16) return fail(ErrorKind::invalid_config, "at most 16 members", mp);
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& mj = (*it)[i];
    std::string ep = path_index(mp, i);
    Member m;
    m.timeout = *default_timeout;
    Json node = mj;
    if (mj.is_object()) {
      auto w = read_number(mj, "weight", ep, 1.0, 0.0, 1e6);
      if (!w) return std::unexpected(w.error());
      m.weight = *w;
      if (mj.contains("weight") && s->agg != Aggregation::weighted_vote)
        return fail(ErrorKind::invalid_config, "weight only applies to weighted_vote", path_key(ep, "weight"));
      auto to = read_ms(mj, "timeout_ms", ep, *default_timeout);
      if (!to) return std::unexpected(to.error());
      m.timeout = *to;
      node.erase("weight");
      if (!mj.contains("model")) node.erase("timeout_ms");
    }
    if (s->total.count() && m.timeout > s->total)
      return fail(ErrorKind::invalid_config, "member timeout_ms is over total_budget_ms", path_key(ep, "timeout_ms"));
    auto n = compile_node(node, ep, r);
    if (!n) return std::unexpected(n.error());
    m.node = std::move(*n);
    const Target* t = m.node->only_target();
    m.label = t ? t->model : std::string(m.node->name());
    s->members.push_back(std::move(m));
  }
  if (s->agg == Aggregation::weighted_vote) {
    double sum = 0;
    for (const auto& m : s->members) sum += m.weight;
    if (!(sum > 0)) return fail(ErrorKind::invalid_config, "weights sum to zero", mp);
  }
  auto mr = read_number(cfg, "min_responses", path, 1, 1, static_cast<double>(s->members.size()));
  if (!mr) return std::unexpected(mr.error());
  s->min_responses = static_cast<std::size_t>(*mr);
  return std::unique_ptr<Strategy>(std::move(s));
}

}  // namespace modelux
