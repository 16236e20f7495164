#include "policy/strategies/single.hpp"

#include <algorithm>

namespace modelux {

namespace {

/// One attempt against one target. Phases: not started (health gate, maybe queued until a
/// token bucket refills), running (waiting for the driver's report or the attempt deadline),
/// finished.
class TargetState final : public StrategyState {
 public:
  /// `a.why` views a string of the parent state, which outlives this child.
  TargetState(const TargetStrategy& spec, const StartArgs& a) : spec_(spec), args_(a) {}

  Step::Kind next(SessionCore& s, Instant now, Step& step) override {
    if (phase_ == Phase::finished) return outcome_.ok ? Step::Kind::done : Step::Kind::failed;
    if (phase_ == Phase::running) {
      if (s.reported(id_)) return finish(s);
      // Committed: its output reaches the caller, routing timeouts no longer apply (the
      // session bounds it with max_stream and does not normally ask this node any more).
      if (s.committed == id_) return Step::Kind::wait;
      const AttemptPlan& p = s.plan(id_);
      if (now >= p.deadline) {
        std::string why = now >= s.deadline ? "total budget exhausted" : "attempt timeout " + std::to_string(to_ms(p.deadline - (s.in.start + s.record(id_).start_offset))) + " ms";
        s.expire(id_, now, why);
        return finish(s);
      }
      step.wake_at = p.deadline;
      return Step::Kind::wait;
    }
    Instant limit = std::min(args_.node_deadline, s.deadline);
    if (now >= limit) return fail_now(ErrorKind::timeout, "no time left to try " + spec_.target().model, false);
    TargetStats st = s.stats(spec_.key(), now);
    // Panic pass (every target of the chain was skipped and some for their breaker): a target
    // whose breaker is open is tried anyway; an empty token bucket still holds.
    const bool panic_try = args_.ignore_breakers && st.breaker != BreakerState::closed;
    if (!panic_try) {
      if (!st.admits) {
        if (st.breaker != BreakerState::closed) {
          std::string why = "skipped " + spec_.target().model + ": breaker " + std::string(to_string(st.breaker));
          if (st.retry_at > now) why += " for another " + std::to_string(to_ms(st.retry_at - now)) + " ms";
          return skip(s, std::move(why));
        }
        switch (args_.rate_limit_mode) {
          case RateLimitMode::fallback:
            return skip(s, "skipped " + spec_.target().model + ": rate limit bucket empty");
          case RateLimitMode::queue:
            if (st.retry_at > now && st.retry_at < limit) {
              if (phase_ != Phase::queued)
                s.notes.push_back("queued " + std::to_string(to_ms(st.retry_at - now)) + " ms for " +
                                  spec_.target().model + " rate limit");
              phase_ = Phase::queued;
              step.wake_at = st.retry_at;
              return Step::Kind::wait;
            }
            return skip(s, "skipped " + spec_.target().model + ": rate limit resets after the budget");
          case RateLimitMode::fail_fast: {
            s.notes.push_back(spec_.target().model + " rate limit bucket empty (fail_fast)");
            Step::Kind k = fail_now(ErrorKind::rate_limited, "rate limit reached for " + spec_.key(), true);
            outcome_.error.status = 429;
            if (st.retry_at > now) outcome_.error.retry_after = std::chrono::duration_cast<Millis>(st.retry_at - now);
            return k;
          }
        }
      }
    }
    const AttemptPlan& p = s.make_attempt(spec_.target(), spec_.model(), spec_.timeout(), now, args_.node_deadline,
                                          args_.why, args_.member, args_.needs_full_response);
    id_ = p.id;
    AttemptPlan& mp = s.plan(id_);
    mp.ttft_timeout = spec_.ttft_timeout();
    mp.stall_timeout = spec_.stall_timeout();
    mp.max_stream = tighter(spec_.max_stream(), args_.max_stream);
    // Planned from stats() alone; the executor claims the probe slot / ramp share / token
    // just before it starts the attempt. A panic-mode try past an open breaker claims nothing.
    mp.must_claim = !panic_try;
    planned_breaker_ = st.breaker;
    phase_ = Phase::running;
    return Step::Kind::attempt;
  }

  void on_result(SessionCore&, std::uint32_t, Instant) override {}  // next() reads the result
  bool owns(std::uint32_t id) const noexcept override { return id == id_ && id != 0; }

 private:
  enum class Phase : std::uint8_t { init, queued, running, finished };

  Step::Kind finish(SessionCore& s) {
    const AttemptResult* r = s.result(id_);
    if (!r) {
      // The executor's claim was refused: a skip, exactly as if health had said no up front.
      std::string why = "skipped " + spec_.target().model + ": " +
                        (planned_breaker_ == BreakerState::half_open ? "breaker half_open, probe already out"
                                                                     : "not admitted (breaker ramp or token bucket)");
      s.set_why_ended(id_, why);
      return skip(s, std::move(why));
    }
    phase_ = Phase::finished;
    outcome_.attempt = id_;
    outcome_.served = &spec_.target();
    if (r->answer) {
      outcome_.ok = true;
      return Step::Kind::done;
    }
    outcome_.ok = false;
    outcome_.error = r->answer.error();
    if (outcome_.error.provider.empty()) outcome_.error.provider = spec_.target().provider;
    outcome_.delivered = r->delivered;
    return Step::Kind::failed;
  }
  Step::Kind skip(SessionCore& s, std::string why) {
    s.notes.push_back(why);
    phase_ = Phase::finished;
    outcome_.ok = false;
    outcome_.skipped = true;
    outcome_.served = &spec_.target();
    outcome_.error.kind = ErrorKind::no_route;
    outcome_.error.message = std::move(why);
    outcome_.error.provider = spec_.target().provider;
    return Step::Kind::failed;
  }
  Step::Kind fail_now(ErrorKind k, std::string msg, bool fatal) {
    phase_ = Phase::finished;
    outcome_.ok = false;
    outcome_.fatal = fatal;
    outcome_.served = &spec_.target();
    outcome_.error.kind = k;
    outcome_.error.message = std::move(msg);
    return Step::Kind::failed;
  }

  const TargetStrategy& spec_;
  StartArgs args_;
  std::uint32_t id_ = 0;
  Phase phase_ = Phase::init;
  BreakerState planned_breaker_ = BreakerState::closed;
};

}  // namespace

TargetStrategy::TargetStrategy(Target t, std::optional<ModelInfo> model, Nanos timeout, Nanos ttft, Nanos stall,
                               Nanos total, Nanos max_stream)
    : target_(std::move(t)), key_(target_.key()), model_(std::move(model)), timeout_(timeout), ttft_(ttft),
      stall_(stall), total_(total), max_stream_(max_stream) {}

StatePtr TargetStrategy::start(SessionCore& s, Instant, const StartArgs& a) const {
  return s.make_state<TargetState>(*this, a);
}

Result<std::unique_ptr<Strategy>> make_target_strategy(Target t, const PolicyResolver& r, Nanos timeout, Nanos ttft,
                                                       Nanos stall, Nanos total, Nanos max_stream) {
  std::optional<ModelInfo> mi;
  if (const ModelInfo* m = r.catalog().find_model(t.model)) mi = *m;
  return std::unique_ptr<Strategy>(
      std::make_unique<TargetStrategy>(std::move(t), std::move(mi), timeout, ttft, stall, total, max_stream));
}

Result<std::unique_ptr<Strategy>> compile_single(const Json& cfg, const std::string& path, const PolicyResolver& r) {
  if (auto o = require_object(cfg, path); !o) return std::unexpected(o.error());
  bool entry = !cfg.contains("strategy");  // {"model":...} inside a chain may carry "retries"
  auto keys = entry ? check_keys(cfg, path,
                                 {"model", "provider", "timeout_ms", "ttft_timeout_ms", "stall_timeout_ms",
                                  "max_stream_ms", "total_budget_ms", "retries"})
                    : check_keys(cfg, path,
                                 {"strategy", "model", "provider", "timeout_ms", "ttft_timeout_ms", "stall_timeout_ms",
                                  "max_stream_ms", "total_budget_ms"});
  if (!keys) return std::unexpected(keys.error());
  auto m = cfg.find("model");
  if (m == cfg.end() || !m->is_string())
    return fail(ErrorKind::invalid_config, "model must be a string", path_key(path, "model"));
  const Json* prov = cfg.contains("provider") ? &cfg["provider"] : nullptr;
  auto t = resolve_target(m->get_ref<const std::string&>(), prov, path_key(path, "model"), r);
  if (!t) return std::unexpected(t.error());
  auto total = read_ms(cfg, "total_budget_ms", path, Nanos{0});
  if (!total) return std::unexpected(total.error());
  auto timeout = read_ms(cfg, "timeout_ms", path, total->count() ? *total : kDefaultTotalBudget);
  if (!timeout) return std::unexpected(timeout.error());
  if (total->count() && *timeout > *total)
    return fail(ErrorKind::invalid_config, "timeout_ms is over total_budget_ms", path_key(path, "timeout_ms"));
  auto ttft = read_ms(cfg, "ttft_timeout_ms", path, Nanos{0});
  if (!ttft) return std::unexpected(ttft.error());
  auto stall = read_ms(cfg, "stall_timeout_ms", path, Nanos{0});
  if (!stall) return std::unexpected(stall.error());
  // Bounds a committed stream, which routing budgets no longer do: it may exceed them.
  auto max_stream = read_ms(cfg, "max_stream_ms", path, Nanos{0});
  if (!max_stream) return std::unexpected(max_stream.error());
  if (auto rt = cfg.find("retries"); rt != cfg.end() && (!rt->is_number_integer() || rt->get<long long>() < 0 ||
                                                         rt->get<long long>() > 10))
    return fail(ErrorKind::invalid_config, "retries must be an integer 0..10", path_key(path, "retries"));
  return make_target_strategy(std::move(*t), r, *timeout, *ttft, *stall, *total, *max_stream);
}

}  // namespace modelux
