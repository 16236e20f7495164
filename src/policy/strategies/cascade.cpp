#include "policy/strategies/cascade.hpp"

#include <optional>

#include "policy/dsl.hpp"

namespace modelux {

std::string validate_json_schema(const Json& v, const Json& schema, const std::string& path) {
  if (!schema.is_object()) return {};
  if (auto t = schema.find("type"); t != schema.end() && t->is_string()) {
    const std::string& ty = t->get_ref<const std::string&>();
    bool ok = (ty == "object" && v.is_object()) || (ty == "array" && v.is_array()) || (ty == "string" && v.is_string()) ||
              (ty == "number" && v.is_number()) || (ty == "integer" && v.is_number_integer()) ||
              (ty == "boolean" && v.is_boolean()) || (ty == "null" && v.is_null());
    if (!ok) return path + ": expected " + ty;
  }
  if (auto e = schema.find("enum"); e != schema.end() && e->is_array()) {
    bool found = false;
    for (const auto& x : *e)
      if (x == v) found = true;
    if (!found) return path + ": not one of the enum values";
  }
  if (v.is_string()) {
    auto n = static_cast<double>(v.get_ref<const std::string&>().size());
    if (auto m = schema.find("minLength"); m != schema.end() && m->is_number() && n < m->get<double>())
      return path + ": shorter than minLength";
    if (auto m = schema.find("maxLength"); m != schema.end() && m->is_number() && n > m->get<double>())
      return path + ": longer than maxLength";
  }
  if (v.is_number()) {
    double n = v.get<double>();
    if (auto m = schema.find("minimum"); m != schema.end() && m->is_number() && n < m->get<double>())
      return path + ": below minimum";
    if (auto m = schema.find("maximum"); m != schema.end() && m->is_number() && n > m->get<double>())
      return path + ": above maximum";
  }
  if (v.is_object()) {
    if (auto req = schema.find("required"); req != schema.end() && req->is_array())
      for (const auto& k : *req)
        if (k.is_string() && !v.contains(k.get<std::string>())) return path + ": missing required \"" + k.get<std::string>() + "\"";
    auto props = schema.find("properties");
    bool closed = schema.contains("additionalProperties") && schema["additionalProperties"] == false;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (props != schema.end() && props->is_object() && props->contains(it.key())) {
        std::string err = validate_json_schema(*it, (*props)[it.key()], path + "." + it.key());
        if (!err.empty()) return err;
      } else if (closed) {
        return path + ": unexpected property \"" + it.key() + "\"";
      }
    }
  }
  if (v.is_array()) {
    if (auto items = schema.find("items"); items != schema.end())
      for (std::size_t i = 0; i < v.size(); ++i) {
        std::string err = validate_json_schema(v[i], *items, path + "[" + std::to_string(i) + "]");
        if (!err.empty()) return err;
      }
  }
  return {};
}

namespace {

struct Acceptance {
  std::vector<std::string> finish_reasons;  ///< empty = any
  bool non_empty = true;
  bool valid_json = false;
  Json schema;                               ///< null = none
  std::int64_t min_length = 0, max_length = 0;
  std::optional<dsl::Expression> when;

  /// Empty when accepted, otherwise why not.
  std::string check(const ChatResponse& r, const dsl::EvalContext& base) const {
    std::string text = response_text(r);
    std::string_view fr = r.choices.empty() ? std::string_view{} : std::string_view(r.choices[0].finish_reason);
    if (!finish_reasons.empty()) {
      bool ok = false;
      for (const auto& f : finish_reasons) ok |= f == fr;
      if (!ok) return "finish_reason " + std::string(fr.empty() ? "(none)" : fr);
    }
    if (non_empty && text.find_first_not_of(" \t\r\n") == std::string::npos) return "empty answer";
    if (min_length && static_cast<std::int64_t>(text.size()) < min_length) return "shorter than min_length";
    if (max_length && static_cast<std::int64_t>(text.size()) > max_length) return "longer than max_length";
    if (valid_json || !schema.is_null()) {
      Json j = Json::parse(text, nullptr, false);
      if (j.is_discarded()) return "not valid JSON";
      if (!schema.is_null()) {
        std::string err = validate_json_schema(j, schema);
        if (!err.empty()) return "schema: " + err;
      }
    }
    if (when) {
      dsl::EvalContext c = base;
      c.response = &r;
      c.response_text = text;
      if (!when->eval_bool(c)) return "check failed: " + when->source();
    }
    return {};
  }
};

struct CascadeStep {
  std::unique_ptr<Strategy> node;
  Acceptance accept;
  std::string label;
};

class CascadeStrategy final : public Strategy {
 public:
  std::vector<CascadeStep> steps;
  Nanos total{0};
  bool serve_last = true;  ///< on_none_accepted: "last" (serve the last answer) or "fail"

  std::string_view name() const noexcept override { return "cascade"; }
  Nanos total_budget() const noexcept override { return total; }
  void collect_targets(std::vector<Target>& out) const override {
    for (const auto& s : steps) s.node->collect_targets(out);
  }
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override;
};

class CascadeState final : public StrategyState {
 public:
  CascadeState(const CascadeStrategy& spec, const StartArgs& a) : spec_(spec), args_(a) {}

  Step::Kind next(SessionCore& s, Instant now, Step& step) override {
    for (;;) {
      if (!child_) {
        if (index_ >= spec_.steps.size()) return none_accepted(s);
        if (now >= std::min(args_.node_deadline, s.deadline)) {
          if (have_last_ && spec_.serve_last) return none_accepted(s);
          outcome_.ok = false;
          outcome_.error.kind = ErrorKind::timeout;
          outcome_.error.message = "total budget exhausted before cascade step " + std::to_string(index_);
          return Step::Kind::failed;
        }
        StartArgs b = args_;
        b.needs_full_response = true;
        why_ = index_ == 0 ? std::string(args_.why) : "cascade step " + std::to_string(index_) + " after " + last_why_;
        b.why = why_;
        child_ = spec_.steps[index_].node->start(s, now, b);
      }
      Step::Kind k = child_->next(s, now, step);
      if (k == Step::Kind::attempt || k == Step::Kind::wait) return k;
      NodeOutcome o = std::move(child_->outcome());
      child_.reset();
      const CascadeStep& cs = spec_.steps[index_];
      if (k == Step::Kind::failed) {
        if (o.delivered || o.fatal) {
          outcome_ = std::move(o);
          return Step::Kind::failed;
        }
        last_error_ = o.error;
        last_why_ = std::string(to_string(o.error.kind));
        s.notes.push_back("cascade step " + std::to_string(index_) + " (" + cs.label + ") " + error_label(o.error));
        ++index_;
        continue;
      }
      dsl::EvalContext c;
      c.request = s.in.request;
      c.context = s.in.context;
      c.health = s.in.health;
      c.budget = s.in.budget;
      c.now = now;
      c.wall = s.in.wall_start + std::chrono::duration_cast<WallTime::duration>(now - s.in.start);
      c.estimated_tokens = s.estimated_tokens();
      std::string why_not = cs.accept.check(response_of(s, o), c);
      if (why_not.empty()) {
        if (index_ > 0 || spec_.steps.size() > 1)
          s.notes.push_back("cascade step " + std::to_string(index_) + " (" + cs.label + ") accepted");
        outcome_ = std::move(o);
        return Step::Kind::done;
      }
      if (o.attempt) s.set_why_ended(o.attempt, "rejected: " + why_not);
      s.notes.push_back("cascade step " + std::to_string(index_) + " (" + cs.label + ") rejected: " + why_not);
      last_ = std::move(o);
      have_last_ = true;
      last_why_ = "rejection";
      ++index_;
    }
  }
  void on_result(SessionCore& s, std::uint32_t id, Instant now) override {
    if (child_ && child_->owns(id)) child_->on_result(s, id, now);
  }
  bool owns(std::uint32_t id) const noexcept override { return child_ && child_->owns(id); }

 private:
  Step::Kind none_accepted(SessionCore& s) {
    if (have_last_ && spec_.serve_last) {
      s.notes.push_back("no answer accepted; serving the last answer");
      outcome_ = std::move(last_);
      return Step::Kind::done;
    }
    outcome_.ok = false;
    if (have_last_) {
      outcome_.error.kind = ErrorKind::no_route;
      outcome_.error.message = "cascade: no answer passed the acceptance checks";
    } else {
      outcome_.error = last_error_;
      outcome_.error.message = "cascade: every step failed; last: " + last_error_.message;
    }
    return Step::Kind::failed;
  }

  const CascadeStrategy& spec_;
  StartArgs args_;
  StatePtr child_;
  std::size_t index_ = 0;
  NodeOutcome last_;
  bool have_last_ = false;
  Error last_error_;
  std::string why_, last_why_;
};

StatePtr CascadeStrategy::start(SessionCore& s, Instant, const StartArgs& a) const {
  return s.make_state<CascadeState>(*this, a);
}

Result<Acceptance> read_accept(const Json& j, const std::string& p, const PolicyResolver& r, const Acceptance* base) {
  Acceptance a = base ? Acceptance{base->finish_reasons, base->non_empty, base->valid_json, base->schema,
                                   base->min_length, base->max_length, base->when}
                      : Acceptance{};
  if (j.is_null()) return a;
  if (auto o = require_object(j, p); !o) return std::unexpected(o.error());
  if (auto k = check_keys(j, p, {"finish_reason", "non_empty", "valid_json", "json_schema", "min_length", "max_length", "when"}); !k)
    return std::unexpected(k.error());
  if (auto f = j.find("finish_reason"); f != j.end()) {
    a.finish_reasons.clear();
    if (f->is_string()) a.finish_reasons.push_back(f->get<std::string>());
    else if (f->is_array()) {
      for (std::size_t i = 0; i < f->size(); ++i) {
        if (!(*f)[i].is_string()) return fail(ErrorKind::invalid_config, "finish reasons are strings", path_index(path_key(p, "finish_reason"), i));
        a.finish_reasons.push_back((*f)[i].get<std::string>());
      }
    } else {
      return fail(ErrorKind::invalid_config, "finish_reason must be a string or an array", path_key(p, "finish_reason"));
    }
  }
  for (const char* key : {"non_empty", "valid_json"})
    if (auto f = j.find(key); f != j.end()) {
      if (!f->is_boolean()) return fail(ErrorKind::invalid_config, std::string(key) + " must be a boolean", path_key(p, key));
      (std::string_view(key) == "non_empty" ? a.non_empty : a.valid_json) = f->get<bool>();
    }
  if (auto f = j.find("json_schema"); f != j.end()) {
    if (!f->is_object()) return fail(ErrorKind::invalid_config, "json_schema must be an object", path_key(p, "json_schema"));
    a.schema = *f;
  }
  auto mn = read_number(j, "min_length", p, static_cast<double>(a.min_length), 0, 1e9);
  if (!mn) return std::unexpected(mn.error());
  a.min_length = static_cast<std::int64_t>(*mn);
  auto mx = read_number(j, "max_length", p, static_cast<double>(a.max_length), 0, 1e9);
  if (!mx) return std::unexpected(mx.error());
  a.max_length = static_cast<std::int64_t>(*mx);
  if (a.max_length && a.min_length > a.max_length)
    return fail(ErrorKind::invalid_config, "min_length is over max_length", path_key(p, "min_length"));
  if (auto f = j.find("when"); f != j.end()) {
    if (!f->is_string()) return fail(ErrorKind::invalid_config, "when must be an expression string", path_key(p, "when"));
    auto e = dsl::Expression::compile(f->get<std::string>(), dsl::Type::boolean, &r.catalog());
    if (!e) {
      Error err = e.error();
      err.path = path_key(p, "when");
      return std::unexpected(std::move(err));
    }
    a.when = std::move(*e);
  }
  return a;
}

}  // namespace

Result<std::unique_ptr<Strategy>> compile_cascade(const Json& cfg, const std::string& path, const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  if (auto k = check_keys(cfg, path, {"strategy", "steps", "accept", "total_budget_ms", "on_none_accepted"}); !k)
    return std::unexpected(k.error());
  auto s = std::make_unique<CascadeStrategy>();
  auto total = read_ms(cfg, "total_budget_ms", path, Nanos{0});
  if (!total) return std::unexpected(total.error());
  s->total = *total;
  auto none = read_string(cfg, "on_none_accepted", path, "last");
  if (!none) return std::unexpected(none.error());
  if (*none != "last" && *none != "fail")
    return fail(ErrorKind::invalid_config, "on_none_accepted must be \"last\" or \"fail\"", path_key(path, "on_none_accepted"));
  s->serve_last = *none == "last";
  auto base = read_accept(cfg.contains("accept") ? cfg["accept"] : Json(), path_key(path, "accept"), r, nullptr);
  if (!base) return std::unexpected(base.error());
  auto it = cfg.find("steps");
  std::string sp = path_key(path, "steps");
  if (it == cfg.end() || !it->is_array() || it->empty())
    return fail(ErrorKind::invalid_config, "steps must be a non-empty array", sp);
  if (it->size() > 16) return fail(ErrorKind::invalid_config, "at most 16 steps", sp);
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& sj = (*it)[i];
    std::string ep = path_index(sp, i);
    Json node = sj;
    Json acc;
    if (sj.is_object() && sj.contains("accept")) {
      acc = sj["accept"];
      node.erase("accept");
    }
    auto a = read_accept(acc, path_key(ep, "accept"), r, &*base);
    if (!a) return std::unexpected(a.error());
    if (s->total.count() && node.is_object() && node.contains("timeout_ms")) {
      auto to = read_ms(node, "timeout_ms", ep, Nanos{0});
      if (!to) return std::unexpected(to.error());
      if (*to > s->total)
        return fail(ErrorKind::invalid_config, "timeout_ms is over total_budget_ms", path_key(ep, "timeout_ms"));
    }
    auto n = compile_node(node, ep, r);
    if (!n) return std::unexpected(n.error());
    CascadeStep st{std::move(*n), std::move(*a), {}};
    const Target* t = st.node->only_target();
    st.label = t ? t->model : std::string(st.node->name());
    s->steps.push_back(std::move(st));
  }
  return std::unique_ptr<Strategy>(std::move(s));
}

}  // namespace modelux
