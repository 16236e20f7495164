#include "policy/strategies/fallback.hpp"

#include <algorithm>
#include <cmath>

namespace modelux {

namespace {

class FallbackStrategy final : public Strategy {
 public:
  std::vector<ChainEntry> entries;
  ChainOptions opts;
  std::vector<const ChainEntry*> order;

  std::string_view name() const noexcept override { return "fallback"; }
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override;
  Nanos total_budget() const noexcept override { return opts.total; }
  void collect_targets(std::vector<Target>& out) const override {
    for (const auto& e : entries) e.node->collect_targets(out);
  }
};

/// Walks the chain. Each child runs to its own terminal outcome; then: success ends the chain;
/// a skipped child (breaker open, bucket empty) advances; a delivered or fatal failure, or
/// an error outside retry_on, ends the request with that error; otherwise retry the same
/// entry after a jittered backoff (if it has retries left and the wait fits the budget) or
/// advance. Cost: O(1) per call apart from the child.
class FallbackState final : public StrategyState {
 public:
  /// Owns a per-request ordering (cost/latency strategies).
  FallbackState(const ChainOptions& spec, std::vector<const ChainEntry*> order, const StartArgs& a)
      : spec_(spec), owned_(std::move(order)), entries_(owned_), args_(a) {}
  /// Borrows the compiled ordering (fallback): no per-request copy.
  FallbackState(const ChainOptions& spec, const std::vector<const ChainEntry*>* order, const StartArgs& a)
      : spec_(spec), entries_(*order), args_(a) {}

  Step::Kind next(SessionCore& s, Instant now, Step& step) override {
    Instant limit = std::min(args_.node_deadline, s.deadline);
    for (;;) {
      if (child_) {
        Step::Kind k = child_->next(s, now, step);
        if (k == Step::Kind::attempt || k == Step::Kind::wait) {
          if (k == Step::Kind::wait && step.wake_at > limit) step.wake_at = limit;
          return k;
        }
        NodeOutcome& o = child_->outcome();
        if (k == Step::Kind::done) {
          outcome_ = std::move(o);
          child_.reset();
          return Step::Kind::done;
        }
        const ChainEntry& e = *entries_[index_];
        Error err = o.error;
        bool skipped = o.skipped, delivered = o.delivered, fatal = o.fatal;
        // Read everything needed from the child's outcome before the child goes away.
        if (skipped && err.message.find("breaker") != std::string::npos) any_breaker_skip_ = true;
        child_.reset();
        if (!skipped) {
          last_error_ = err;
          have_error_ = true;
          std::string& note = s.notes.add();  // appended into a reused buffer: no temporaries
          if (index_ == 0 && tries_ == 0) {
            note += "primary ";
          } else {
            note += e.label;
            note += ' ';
          }
          append_error_label(note, err);
        }
        if (delivered) return end(s, err, "stream already delivered to the caller; no failover");
        if (fatal) return end(s, err, "");
        if (!skipped && !retry_mask_matches(spec_.retry_mask, err)) {
          s.notes.push_back(std::string(to_string(err.kind)) + " is not in retry_on");
          return end(s, err, "");
        }
        if (!skipped && tries_ < e.retries && err.kind != ErrorKind::quota_exceeded) {
          Nanos d = backoff_delay(s);
          if (err.retry_after) d = std::max<Nanos>(d, *err.retry_after);
          if (now + d < limit) {
            ++tries_;
            wake_at_ = now + d;
            retrying_ = true;
            continue;
          }
        }
        ++index_;
        tries_ = 0;
        retrying_ = false;
        continue;
      }
      if (wake_at_ > now) {
        step.wake_at = wake_at_;
        return Step::Kind::wait;
      }
      if (index_ >= entries_.size()) {
        if (have_error_) {
          Error e = last_error_;
          e.message = "all " + std::to_string(entries_.size()) + " fallback targets failed; last: " +
                      (last_error_.message.empty() ? std::string(to_string(last_error_.kind)) : last_error_.message);
          return end(s, e, "");
        }
        if (spec_.panic && !panic_ && any_breaker_skip_ && now < limit) {
          // Nothing admitted traffic and breakers are part of why: trying the open targets
          // anyway beats failing everything (Envoy's panic threshold). Their breakers still
          // learn from the outcomes; targets whose rate-limit bucket is empty stay skipped.
          panic_ = true;
          args_.ignore_breakers = true;
          index_ = 0;
          s.notes.push_back("all targets open: panic mode, trying anyway");
          continue;
        }
        Error e;
        e.kind = ErrorKind::no_route;
        e.message = "no target admits traffic (all " + std::to_string(entries_.size()) + " skipped)";
        outcome_.skipped = true;
        return end(s, e, "");
      }
      if (now >= limit) {
        Error e;
        e.kind = ErrorKind::timeout;
        e.message = "total budget " + std::to_string(to_ms(spec_.total.count() ? spec_.total : limit - s.in.start)) +
                    " ms exhausted before " + entries_[index_]->label;
        return end(s, e, "");
      }
      const ChainEntry& e = *entries_[index_];
      StartArgs a = args_;
      a.node_deadline = e.timeout.count() ? std::min(limit, now + e.timeout) : limit;
      a.rate_limit_mode = spec_.mode;
      a.max_stream = tighter(args_.max_stream, spec_.max_stream);
      // The why must outlive this state's loop (the child keeps it in its StartArgs) and this
      // state lives in the arena, so it goes into a session scratch string, which a reused
      // session recycles: building it allocates nothing in steady state.
      if (retrying_) {
        std::string& why = s.scratch();
        why += "retry ";
        append_number(why, tries_);
        why += " of ";
        why += e.label;
        a.why = why;
      } else if (index_ == 0) {
        a.why = args_.why;
      } else {
        std::string& why = s.scratch();
        why += "fallback ";
        append_number(why, static_cast<long long>(index_));
        if (have_error_) {
          why += " after ";
          why += to_string(last_error_.kind);
        } else {
          why += " after skip";
        }
        a.why = why;
      }
      child_ = e.node->start(s, now, a);
    }
  }

  void on_result(SessionCore& s, std::uint32_t id, Instant now) override {
    if (child_ && child_->owns(id)) child_->on_result(s, id, now);
  }
  bool owns(std::uint32_t id) const noexcept override { return child_ && child_->owns(id); }

 private:
  Nanos backoff_delay(SessionCore& s) {
    double base = static_cast<double>(spec_.backoff.initial.count()) * std::pow(2.0, tries_);
    base = std::min(base, static_cast<double>(spec_.backoff.max.count()));
    double j = spec_.backoff.jitter;
    double f = 1.0 + j * (2.0 * s.rng.uniform() - 1.0);
    return Nanos{static_cast<std::int64_t>(base * f)};
  }
  Step::Kind end(SessionCore& s, const Error& e, std::string note) {
    if (!note.empty()) s.notes.push_back(std::move(note));
    outcome_.ok = false;
    outcome_.error = e;
    return Step::Kind::failed;
  }

  const ChainOptions& spec_;
  std::vector<const ChainEntry*> owned_;
  const std::vector<const ChainEntry*>& entries_;
  StartArgs args_;
  StatePtr child_;
  std::size_t index_ = 0;
  int tries_ = 0;
  bool retrying_ = false;
  Instant wake_at_{};
  Error last_error_;
  bool have_error_ = false;
  bool panic_ = false;
  bool any_breaker_skip_ = false;
};

StatePtr FallbackStrategy::start(SessionCore& s, Instant, const StartArgs& a) const {
  return s.make_state<FallbackState>(opts, &order, a);
}

}  // namespace

StatePtr start_chain(SessionCore& s, const ChainOptions& opts, std::vector<const ChainEntry*> order,
                                           const StartArgs& a) {
  return s.make_state<FallbackState>(opts, std::move(order), a);
}

std::uint32_t default_retry_mask() noexcept {
  static const std::uint32_t m = [] {
    Json j = {{"retry_on", {"429", "5xx", "timeout", "connection"}}};
    return *read_retry_on(j, "$", 0);
  }();
  return m;
}

Result<ChainOptions> read_chain_options(const Json& cfg, const std::string& path) {
  ChainOptions f;
  auto total = read_ms(cfg, "total_budget_ms", path, Nanos{0});
  if (!total) return std::unexpected(total.error());
  f.total = *total;
  auto mask = read_retry_on(cfg, path, default_retry_mask());
  if (!mask) return std::unexpected(mask.error());
  f.retry_mask = *mask;
  auto max_stream = read_ms(cfg, "max_stream_ms", path, Nanos{0});
  if (!max_stream) return std::unexpected(max_stream.error());
  f.max_stream = *max_stream;
  auto mode = read_rate_limit_mode(cfg, path);
  if (!mode) return std::unexpected(mode.error());
  f.mode = *mode;
  auto all_open = read_string(cfg, "on_all_open", path, "try_anyway");
  if (!all_open) return std::unexpected(all_open.error());
  if (*all_open != "try_anyway" && *all_open != "fail")
    return fail(ErrorKind::invalid_config, "on_all_open must be \"try_anyway\" or \"fail\"", path_key(path, "on_all_open"));
  f.panic = *all_open == "try_anyway";
  if (auto it = cfg.find("retries"); it != cfg.end()) {
    if (!it->is_number_integer() || it->get<long long>() < 0 || it->get<long long>() > 10)
      return fail(ErrorKind::invalid_config, "retries must be an integer 0..10", path_key(path, "retries"));
    f.retries = it->get<int>();
  }
  if (auto it = cfg.find("backoff"); it != cfg.end()) {
    std::string bp = path_key(path, "backoff");
    if (auto o = require_object(*it, bp); !o) return std::unexpected(o.error());
    if (auto k = check_keys(*it, bp, {"initial_ms", "max_ms", "jitter"}); !k) return std::unexpected(k.error());
    auto init = read_ms(*it, "initial_ms", bp, f.backoff.initial);
    if (!init) return std::unexpected(init.error());
    auto mx = read_ms(*it, "max_ms", bp, std::max(f.backoff.max, *init));
    if (!mx) return std::unexpected(mx.error());
    if (*mx < *init) return fail(ErrorKind::invalid_config, "max_ms is below initial_ms", path_key(bp, "max_ms"));
    auto jit = read_number(*it, "jitter", bp, 0.2, 0.0, 1.0);
    if (!jit) return std::unexpected(jit.error());
    f.backoff = Backoff{*init, *mx, *jit};
  }
  return f;
}

Result<ChainEntry> compile_chain_entry(const Json& ej, const std::string& ep, const PolicyResolver& r,
                                       const ChainOptions& opts) {
  ChainEntry e;
  e.retries = opts.retries;
  if (ej.is_object()) {
    auto to = read_ms(ej, "timeout_ms", ep, Nanos{0});
    if (!to) return std::unexpected(to.error());
    if (opts.total.count() && *to > opts.total)
      return fail(ErrorKind::invalid_config,
                  "timeout_ms " + std::to_string(to_ms(*to)) + " is over total_budget_ms " +
                      std::to_string(to_ms(opts.total)),
                  path_key(ep, "timeout_ms"));
    if (auto rt = ej.find("retries"); rt != ej.end()) {
      if (!rt->is_number_integer() || rt->get<long long>() < 0 || rt->get<long long>() > 10)
        return fail(ErrorKind::invalid_config, "retries must be an integer 0..10", path_key(ep, "retries"));
      e.retries = rt->get<int>();
    }
    if (!ej.contains("model")) e.timeout = *to;  // nested config: bound the whole node
  }
  auto node = compile_node(ej, ep, r);
  if (!node) return std::unexpected(node.error());
  e.node = std::move(*node);
  if (const Target* t = e.node->only_target())
    e.label = t->model;
  else if (ej.is_string())
    e.label = ej.get<std::string>();
  else if (ej.is_object() && ej.contains("config") && ej["config"].is_string())
    e.label = ej["config"].get<std::string>();
  else
    e.label = std::string(e.node->name());
  return e;
}

Result<std::unique_ptr<Strategy>> compile_fallback(const Json& cfg, const std::string& path, const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  if (auto k = check_keys(cfg, path,
                          {"strategy", "attempts", "retry_on", "total_budget_ms", "backoff", "on_rate_limit", "retries",
                           "on_all_open", "max_stream_ms"});
      !k)
    return std::unexpected(k.error());
  auto f = std::make_unique<FallbackStrategy>();
  auto opts = read_chain_options(cfg, path);
  if (!opts) return std::unexpected(opts.error());
  f->opts = *opts;
  auto at = cfg.find("attempts");
  std::string ap = path_key(path, "attempts");
  if (at == cfg.end()) return fail(ErrorKind::invalid_config, "fallback needs \"attempts\"", ap);
  if (!at->is_array()) return fail(ErrorKind::invalid_config, "attempts must be an array", ap);
  if (at->empty()) return fail(ErrorKind::invalid_config, "attempts is empty: a chain needs at least one target", ap);
  if (at->size() > 32) return fail(ErrorKind::invalid_config, "at most 32 attempts", ap);
  for (std::size_t i = 0; i < at->size(); ++i) {
    auto e = compile_chain_entry((*at)[i], path_index(ap, i), r, f->opts);
    if (!e) return std::unexpected(e.error());
    f->entries.push_back(std::move(*e));
  }
  for (const auto& e : f->entries) f->order.push_back(&e);
  return std::unique_ptr<Strategy>(std::move(f));
}

}  // namespace modelux
