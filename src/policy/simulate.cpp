// Simulator: a discrete-event driver of RoutingSessions over simulated providers.
//
// Events (arrivals, attempt completions, session wake-ups) sit in a min-heap by virtual time.
// The driver behaves like the real executor: it starts every attempt a step asks for through
// the executor's own AttemptTracker (router/attempt.hpp: health claim at the start, a refused
// claim reported as a skip; health and prompt-cache affinity at the end), reports a
// timeout itself at the attempt's deadline when the simulated call is slower or hangs, and
// re-asks the session what to do next.
// Cost: O(log E) per event; a few microseconds per request in practice.
#include "modelux/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <queue>
#include <unordered_map>

#include "policy/strategy.hpp"
#include "router/attempt.hpp"

namespace modelux {

struct Simulator::Impl {
  std::unordered_map<std::string, SimTarget> targets;
  std::unique_ptr<HealthRegistry> health;
};

Simulator::Simulator() : impl_(std::make_unique<Impl>()) {}
Simulator::~Simulator() = default;
void Simulator::add_target(SimTarget t) { impl_->targets[t.key] = std::move(t); }
const HealthRegistry* Simulator::health() const noexcept { return impl_->health.get(); }

namespace {

double normal(Random& rng) {
  double u1 = std::max(rng.uniform(), 1e-12), u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

struct Event {
  Instant at;
  std::uint64_t seq;
  /// complete: a started attempt's simulated call ended; refused: an attempt refused at
  /// its start reaches the session (in event order, like the executor's).
  enum class Kind : std::uint8_t { arrive, complete, refused, wake } kind;
  std::size_t session;
  std::uint32_t attempt = 0;             ///< complete, refused
  AttemptEnd end{};                      ///< complete: how the simulated call went
  std::optional<AttemptReport> refused;  ///< refused: what the session hears
  std::uint8_t gen = 0;  ///< complete, refused: the routing pass (a budget downgrade starts a new one)
  bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

ChatRequest default_request(std::size_t i) {
  ChatRequest r;
  r.model = "sim";
  Message sys;
  sys.role = "system";
  ContentPart p;
  p.text = "You are a concise assistant.";
  sys.content.push_back(p);
  Message u;
  u.role = "user";
  ContentPart q;
  q.text = "Question " + std::to_string(i) + ": summarise the routing decision in one line.";
  u.content.push_back(q);
  r.messages = {sys, u};
  return r;
}

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::size_t k = static_cast<std::size_t>(std::ceil(q * v.size()));
  k = std::clamp<std::size_t>(k, 1, v.size()) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

SimReport Simulator::run(std::shared_ptr<const Policy> policy, std::size_t n, const SimOptions& o) {
  impl_->health = std::make_unique<HealthRegistry>(o.health);
  HealthRegistry& health = *impl_->health;
  ManualClock own_clock;
  ManualClock& clock = o.clock ? *o.clock : own_clock;
  Random rng(o.seed ^ 0x51u);
  const Instant t0 = clock.now();

  struct Live {
    ChatRequest req;
    CallContext ctx;
    std::unique_ptr<RoutingSession> s;
    Instant scheduled_wake{};
    bool finished = false;
    bool downgraded = false;  // a budget downgrade rerouted it (once at most, like the executor)
    std::uint8_t gen = 0;     // routing pass: attempts of an abandoned pass are not reported
    std::vector<std::pair<std::string, std::uint32_t>> calls;  // target → calls so far (recorded_outcome)
  };
  std::vector<Live> live(n);
  // Finished sessions are reused for later arrivals (RoutingSession::reset), as a driver that
  // keeps a session per worker would: the simulator exercises the same reuse path.
  std::vector<std::unique_ptr<RoutingSession>> idle;
  // One lifecycle per attempt, as in the executor (claim at start; health and prompt-cache
  // affinity at the end), keyed by (request, attempt id).
  AttemptEffects fx;
  fx.clock = &clock;
  fx.health = o.use_health ? &health : nullptr;
  fx.budgets = o.budgets;
  fx.config = o.config;
  std::unordered_map<std::uint64_t, AttemptTracker> open;
  auto open_key = [](std::size_t session, std::uint32_t id, std::uint8_t gen = 0) {
    return (static_cast<std::uint64_t>(session) << 32) | (static_cast<std::uint64_t>(gen) << 31) | id;
  };
  std::priority_queue<Event, std::vector<Event>, std::greater<>> q;
  std::uint64_t seq = 0;
  for (std::size_t i = 0; i < n; ++i)
    q.push(Event{t0 + (o.arrival ? o.arrival(i) : o.interarrival * static_cast<std::int64_t>(i)), seq++,
                 Event::Kind::arrive, i});

  SimReport rep;
  rep.requests = n;
  rep.results.resize(n);
  std::vector<double> lat;
  lat.reserve(n);

  auto to_nanos = [](double ms) {
    return std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(ms));
  };
  auto outcome_for = [&](const AttemptPlan& plan, Instant now, bool stream,
                         const EmpiricalOutcomes::Sample* own) -> std::pair<Instant, AttemptEnd> {
    AttemptEnd r;
    auto it = impl_->targets.find(plan.target.key());
    if (it == impl_->targets.end() && !own) {
      r.answer = ChatResponse{};
      r.latency = std::chrono::milliseconds(1);
    } else if (own || (it->second.empirical && !it->second.empirical->samples.empty())) {
      // The request's own recorded outcome, else one drawn uniformly from the target's: either
      // way latency, TTFT and error class stay joint.
      const EmpiricalOutcomes::Sample* pick = own;
      if (!pick) {
        const auto& samples = it->second.empirical->samples;
        pick = &samples[std::min(samples.size() - 1, static_cast<std::size_t>(rng.uniform() * samples.size()))];
      }
      const auto& sm = *pick;
      r.latency = to_nanos(sm.latency_ms);
      if (sm.timed_out) {
        r.latency = Nanos::max() / 4;
      } else if (!sm.ok) {
        Error e = error_of(sm.error, "replayed " + std::string(to_string(sm.error)));
        e.provider = plan.target.provider;
        e.status = sm.status;
        if (sm.error == ErrorKind::rate_limited && it != impl_->targets.end()) e.retry_after = it->second.retry_after;
        r.answer = std::unexpected(std::move(e));
      } else {
        if (stream) r.ttft = sm.ttft_ms > 0 ? to_nanos(sm.ttft_ms) : r.latency;
        Choice c;
        c.message.role = "assistant";
        ContentPart cp;
        cp.text = "ok";
        c.message.content.push_back(std::move(cp));
        c.finish_reason = it != impl_->targets.end() ? it->second.finish_reason : std::string("stop");
        ChatResponse resp;
        resp.choices.push_back(std::move(c));
        resp.model = plan.target.model;
        r.answer = std::move(resp);
        r.usage.completion_tokens = it != impl_->targets.end() ? it->second.completion_tokens : 60;
      }
    } else {
      const SimTarget& t = it->second;
      double err_p = 0, hang_p = t.hang_probability, factor = 1;
      ErrorKind win_kind = ErrorKind::server_error;
      Nanos since = now - t0;
      for (const auto& w : t.degraded)
        if (since >= w.from && since < w.to) {
          err_p = w.error_rate;
          win_kind = w.error;
          hang_p = std::max(hang_p, w.hang_probability);
          factor = w.latency_factor;
        }
      double ms = t.latency.median_ms * std::exp(t.latency.sigma * normal(rng)) * factor;
      ms = std::clamp(ms, t.latency.min_ms, t.latency.max_ms);
      r.latency = std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(ms));
      bool hang = rng.uniform() < hang_p;
      std::optional<ErrorKind> kind;
      if (rng.uniform() < err_p) kind = win_kind;
      for (const auto& [k, p] : t.errors)
        if (!kind && rng.uniform() < p) kind = k;
      if (hang) {
        r.latency = Nanos::max() / 4;
      } else if (kind) {
        Error e = error_of(*kind, "simulated " + std::string(to_string(*kind)));
        e.provider = plan.target.provider;
        switch (*kind) {
          case ErrorKind::rate_limited: e.status = 429; e.retry_after = t.retry_after; break;
          case ErrorKind::server_error: e.status = 500; break;
          case ErrorKind::overloaded: e.status = 529; break;
          case ErrorKind::bad_request: e.status = 400; break;
          default: break;
        }
        r.answer = std::unexpected(std::move(e));
        r.latency = r.latency / 4;  // errors come back faster than answers
      } else {
        std::string text = "ok";
        if (!t.answers.empty()) {
          double total = 0;
          for (const auto& a : t.answers) total += a.second;
          double x = rng.uniform() * total;
          text = t.answers.back().first;
          for (const auto& a : t.answers) {
            if (x < a.second) {
              text = a.first;
              break;
            }
            x -= a.second;
          }
        }
        Choice c;
        c.message.role = "assistant";
        ContentPart cp;
        cp.text = std::move(text);
        c.message.content.push_back(std::move(cp));
        c.finish_reason = t.finish_reason;
        ChatResponse resp;
        resp.choices.push_back(std::move(c));
        resp.model = plan.target.model;
        r.answer = std::move(resp);
        r.usage.completion_tokens = t.completion_tokens;
      }
    }
    Instant done = now + r.latency;
    if (done > plan.deadline) {  // the executor cuts the attempt at its deadline
      done = plan.deadline;
      AttemptEnd to;
      to.answer = std::unexpected(error_of(ErrorKind::timeout, "attempt deadline passed"));
      to.latency = plan.deadline - now;
      return {done, std::move(to)};
    }
    return {done, std::move(r)};
  };

  auto pump = [&](std::size_t i, Instant now) {
    Live& l = live[i];
    if (l.finished) return;
    for (int guard = 0; guard < 1000; ++guard) {
      Step st = l.s->next(now);
      switch (st.kind) {
        case Step::Kind::attempt: {
          std::optional<std::string> reroute_to;
          for (const auto& plan : st.attempts) {
            auto t = AttemptTracker::start(fx, plan, l.req, l.ctx, {.allow_downgrade = !l.downgraded});
            if (!t) {
              if (t.error().why == AttemptRefusal::Why::downgrade && !reroute_to) {
                l.s->trace().budget_actions.push_back(t.error().note);
                reroute_to = t.error().downgrade_to;
              }
              // Like the executor: a refused claim is reported at once and never runs.
              Event ev{now, seq++, Event::Kind::refused, i, plan.id};
              ev.refused = refused_report(plan.id, t.error());
              ev.gen = l.gen;
              q.push(std::move(ev));
              continue;
            }
            open.insert_or_assign(open_key(i, plan.id, l.gen), std::move(*t));
            const EmpiricalOutcomes::Sample* own = nullptr;
            if (o.recorded_outcome) {
              const std::string key = plan.target.key();
              std::uint32_t nth = 0;
              auto c = std::find_if(l.calls.begin(), l.calls.end(), [&](const auto& e) { return e.first == key; });
              if (c == l.calls.end()) l.calls.emplace_back(key, 1);
              else nth = c->second++;
              own = o.recorded_outcome(i, key, nth);
            }
            auto [at, end] = outcome_for(plan, now, l.req.stream, own);
            if (end.answer) end.usage.prompt_tokens = estimate_input_tokens(l.req);
            if (end.answer && o.completion_tokens) end.usage.completion_tokens = o.completion_tokens(i);
            Event ev{at, seq++, Event::Kind::complete, i, plan.id};
            ev.end = std::move(end);
            ev.gen = l.gen;
            q.push(std::move(ev));
          }
          if (reroute_to) {
            // Like the executor: the request is routed again on the downgrade target; attempts
            // of the abandoned pass release their reservations and are never reported.
            l.downgraded = true;
            for (auto it = open.begin(); it != open.end();)
              it = (it->first >> 32) == i ? open.erase(it) : std::next(it);
            ++l.gen;
            std::vector<std::string> actions = l.s->trace().budget_actions;
            auto next = o.lookup ? o.lookup(*reroute_to) : nullptr;
            actions.push_back(next ? "rerouted to " + *reroute_to
                                   : "downgrade target " + *reroute_to + " unknown; kept " + l.req.model);
            SessionInputs in = l.s->inputs();
            in.start = now;
            in.wall_start = clock.wall_now();
            l.s->reset(next ? next : policy, in);
            for (auto& a : actions) l.s->trace().budget_actions.push_back(std::move(a));
          }
          continue;
        }
        case Step::Kind::wait: {
          Instant w = std::max(st.wake_at, now + Nanos{1});
          if (l.scheduled_wake != w) {
            l.scheduled_wake = w;
            q.push(Event{w, seq++, Event::Kind::wake, i});
          }
          return;
        }
        case Step::Kind::done:
        case Step::Kind::failed: {
          l.finished = true;
          SimRequest& out = rep.results[i];
          out.ok = st.kind == Step::Kind::done;
          const DecisionTrace& tr = l.s->trace();
          out.latency = now - l.s->inputs().start;
          out.attempts = tr.attempts.size();
          out.ttft = tr.ttft;
          out.cost_usd = tr.cost.total();
          out.failed_over = tr.attempts.size() > 1;
          out.downgraded = l.downgraded;
          for (const auto& a : tr.attempts) ++rep.attempted[a.provider + "/" + a.model];
          if (out.ok) {
            out.served = l.s->served();
            out.text = response_text(l.s->response());
            ++rep.succeeded;
            ++rep.routes[out.served.key()];
          } else {
            out.error = l.s->error();
            ++rep.errors[std::string(to_string(out.error.kind))];
          }
          rep.cost_usd += tr.cost.total();
          rep.attempts += tr.attempts.size();
          if (tr.attempts.size() > 1) ++rep.failovers;
          lat.push_back(std::chrono::duration<double, std::milli>(out.latency).count());
          if (o.keep_traces) out.trace = tr;
          idle.push_back(std::move(l.s));
          l.req = ChatRequest{};  // finished: keep memory bounded by the requests in flight
          l.ctx = CallContext{};
          l.calls = {};
          if (o.progress && (lat.size() % 1024 == 0 || lat.size() == n)) o.progress(lat.size());
          return;
        }
      }
    }
  };

  while (!q.empty()) {
    Event e = q.top();
    q.pop();
    clock.set(e.at);
    Live& l = live[e.session];
    switch (e.kind) {
      case Event::Kind::arrive: {
        l.req = o.request ? o.request(e.session) : default_request(e.session);
        if (o.context) {
          l.ctx = o.context(e.session);
        } else {
          l.ctx.request_id = "sim_" + std::to_string(e.session);
          l.ctx.project = "sim";
          l.ctx.end_user = "user-" + std::to_string(e.session % std::max<std::size_t>(1, o.end_users));
        }
        SessionInputs in;
        in.request = &l.req;
        in.context = &l.ctx;
        in.health = o.use_health ? &health : nullptr;
        in.budget = o.budget;
        in.seed = o.seed * 0x9e3779b97f4a7c15ULL + e.session;
        in.start = e.at;
        in.wall_start = clock.wall_now();
        if (idle.empty()) {
          l.s = std::make_unique<RoutingSession>(policy, in);
        } else {
          l.s = std::move(idle.back());
          idle.pop_back();
          l.s->reset(policy, in);
        }
        pump(e.session, e.at);
        break;
      }
      case Event::Kind::refused:  // never ran, nothing to observe
        if (e.gen != l.gen) break;  // a pass a budget downgrade abandoned
        if (!l.finished && l.s) {
          l.s->report(std::move(*e.refused), e.at);
          pump(e.session, e.at);
        }
        break;
      case Event::Kind::complete: {
        if (e.gen != l.gen) break;  // an attempt of a pass a budget downgrade abandoned
        auto it = open.find(open_key(e.session, e.attempt, e.gen));
        if (it == open.end()) break;
        AttemptTracker t = std::move(it->second);
        open.erase(it);
        // Only attempts still owned by a live session are observed (like the executor).
        if (l.finished || !l.s) break;
        std::vector<std::string> actions;
        const std::uint64_t fp = o.use_health ? prompt_prefix_fingerprint(l.req) : 0;
        l.s->report(t.finish(std::move(e.end), actions, fp), e.at);
        pump(e.session, e.at);
        break;
      }
      case Event::Kind::wake:
        if (l.scheduled_wake == e.at) {
          l.scheduled_wake = Instant{};
          pump(e.session, e.at);
        }
        break;
    }
  }

  rep.success_rate = n ? static_cast<double>(rep.succeeded) / n : 0;
  if (!lat.empty()) {
    rep.max_ms = *std::max_element(lat.begin(), lat.end());
    rep.p50_ms = percentile(lat, 0.50);
    rep.p95_ms = percentile(lat, 0.95);
    rep.p99_ms = percentile(lat, 0.99);
  }
  return rep;
}

std::string SimReport::summary() const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%zu requests: %.2f%% ok, p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, max %.0f ms, cost $%.4f, "
                "%zu failovers, %zu attempts\n",
                requests, success_rate * 100, p50_ms, p95_ms, p99_ms, max_ms, cost_usd, failovers, attempts);
  std::string s = buf;
  for (const auto& [k, v] : routes) s += "  served by " + k + ": " + std::to_string(v) + "\n";
  for (const auto& [k, v] : errors) s += "  failed " + k + ": " + std::to_string(v) + "\n";
  return s;
}

Json SimReport::to_json() const {
  Json j = {{"requests", requests}, {"succeeded", succeeded}, {"success_rate", success_rate},
            {"p50_ms", p50_ms},     {"p95_ms", p95_ms},       {"p99_ms", p99_ms},
            {"max_ms", max_ms},     {"cost_usd", cost_usd},   {"failovers", failovers},
            {"attempts", attempts}, {"routes", routes},       {"errors", errors}};
  return j;
}

}  // namespace modelux
