// Bring your own client: the app makes the provider calls, modelux routes, and every attempt
// goes through the same AttemptTracker as the executor's (admission, key pick, budget reserve
// or downgrade, rate-limit headers, health, settle, cost), so the two paths cannot drift.
#include <unordered_map>

#include "router/router_impl.hpp"

namespace modelux {

struct ClientSession::State {
  Router::Impl* impl = nullptr;
  std::shared_ptr<const RouteTable> table;
  std::shared_ptr<const Policy> policy;
  ChatRequest req;
  CallContext ctx;
  Instant start{};
  SessionInputs inputs;
  std::unique_ptr<RoutingSession> session;
  std::unordered_map<std::uint32_t, AttemptTracker> open;  ///< started, not reported yet
  std::vector<std::string> budget_actions;
  std::uint64_t fingerprint = 0;
  bool downgraded = false;
  bool finished = false;
  std::vector<AttemptPlan> admitted;  ///< what next() last handed out (Step::attempts views it)
  std::vector<std::uint32_t> cancels;  ///< what next() last said to stop (Step::cancel views it)

  /// Restarts routing on `next_policy` after a budget downgrade; attempts still open are
  /// abandoned (their reservations released).
  void reroute(std::shared_ptr<const Policy> next_policy) {
    open.clear();
    policy = std::move(next_policy);
    inputs.start = impl->clock->now();
    inputs.wall_start = impl->clock->wall_now();
    inputs.seed = impl->next_seed();
    session->reset(policy, inputs);
  }
};

ClientSession::ClientSession(std::unique_ptr<State> s) : s_(std::move(s)) {}
ClientSession::~ClientSession() = default;  // open trackers release their reservations

Step ClientSession::next() {
  auto& s = *s_;
  s.cancels.clear();
  for (;;) {
    const Instant now = s.impl->clock->now();
    Step step = s.session->next(now);
    s.cancels.insert(s.cancels.end(), step.cancel.begin(), step.cancel.end());
    if (step.kind != Step::Kind::attempt) {
      step.cancel = s.cancels;
      return step;
    }
    // Start each attempt; a refused one is reported at once and the session asked again (it
    // may fall back to another target or fail with budget_exceeded).
    s.admitted.clear();
    std::optional<std::string> reroute_to;
    for (const auto& p : step.attempts) {
      auto t = AttemptTracker::start(s.impl->effects, p, s.req, s.ctx, {.allow_downgrade = !s.downgraded});
      if (t) {
        s.open.emplace(p.id, std::move(*t));
        s.admitted.push_back(p);
        continue;
      }
      if (t.error().why == AttemptRefusal::Why::downgrade && !reroute_to) {
        s.budget_actions.push_back(t.error().note);
        reroute_to = t.error().downgrade_to;
      }
      s.session->report(refused_report(p.id, t.error()), now);
    }
    if (reroute_to) {  // like the executor: route the request again on the downgrade target
      s.downgraded = true;
      s.admitted.clear();
      if (auto next = s.table->lookup(*reroute_to)) {
        s.budget_actions.push_back("rerouted to " + *reroute_to);
        s.reroute(std::move(next));
      } else {
        s.budget_actions.push_back("downgrade target " + *reroute_to + " unknown; kept " + s.req.model);
        s.reroute(s.policy);
      }
      continue;
    }
    if (s.admitted.empty()) continue;
    Step out;
    out.kind = Step::Kind::attempt;
    out.attempts = s.admitted;
    out.cancel = s.cancels;
    return out;
  }
}

Result<HttpRequestSpec> ClientSession::native_request(const AttemptPlan& plan) const {
  auto it = s_->open.find(plan.id);
  if (it == s_->open.end())
    return fail(ErrorKind::bad_request, "attempt " + std::to_string(plan.id) + " is not open in this session");
  const AttemptTracker& t = it->second;
  const ProviderConfig* pc = t.provider();
  const Codec* codec = pc ? find_codec(pc->family) : nullptr;
  if (!codec) return fail(ErrorKind::no_route, "provider '" + plan.target.provider + "' is not configured");
  // The key the attempt picked from the provider's pool (round robin, skipping keys that sit
  // out a 429), exactly as the executor would send.
  return codec->encode_request(s_->req, t.endpoint(), t.upstream_model());
}

void ClientSession::report(std::uint32_t attempt_id, Result<ChatResponse> outcome, Nanos latency) {
  auto& s = *s_;
  auto it = s.open.find(attempt_id);
  if (it == s.open.end()) return;  // unknown or already reported
  AttemptEnd end;
  end.latency = latency;
  end.ttft = latency;
  if (outcome) end.usage = outcome->usage;
  end.answer = std::move(outcome);
  AttemptResult r = it->second.finish(std::move(end), s.budget_actions, s.fingerprint);
  s.open.erase(it);
  s.session->report(std::move(r), s.impl->clock->now());
}

void ClientSession::report_http(std::uint32_t attempt_id, int status, const Headers& headers, std::string_view body,
                                Nanos latency) {
  auto it = s_->open.find(attempt_id);
  if (it == s_->open.end()) return;
  const ProviderConfig* pc = it->second.provider();
  const Codec* codec = pc ? find_codec(pc->family) : nullptr;
  if (!codec) {
    report(attempt_id, fail(ErrorKind::no_route, "provider not configured"), latency);
    return;
  }
  it->second.observe_headers(headers);
  if (status < 200 || status >= 300) {
    report(attempt_id, std::unexpected(codec->decode_error(status, headers, body)), latency);
    return;
  }
  report(attempt_id, codec->decode_response(body), latency);
}

Completion ClientSession::finish() {
  auto& s = *s_;
  Completion out;
  if (!s.session->finished()) {
    s.session->cancel(s.impl->clock->now(), "finished by the app before the session ended");
    s.session->next(s.impl->clock->now());
  }
  s.open.clear();  // attempts never reported hold no budget
  DecisionTrace& t = s.session->trace();
  s.impl->fill_context(t, s.ctx, s.req.model, s.req.stream);
  t.config_version = s.policy->version();
  if (!s.finished)
    for (auto& a : s.budget_actions) t.budget_actions.push_back(std::move(a));
  t.total = s.impl->clock->now() - s.start;
  if (t.ok) {
    out.result = s.session->response();
    out.served = s.session->served();
  } else {
    out.result = std::unexpected(s.session->error());
  }
  out.trace = t;
  if (!s.finished && s.impl->tracer) s.impl->tracer->submit(DecisionTrace(t));
  s.finished = true;
  return out;
}

const RoutingSession& ClientSession::session() const noexcept { return *s_->session; }

Result<std::unique_ptr<ClientSession>> Router::begin(ChatRequest request, CallContext ctx) {
  auto st = std::make_unique<ClientSession::State>();
  st->impl = impl_.get();
  st->table = impl_->table.load(std::memory_order_acquire);
  st->policy = st->table->lookup(request.model);
  if (!st->policy)
  {
    Error e = error_of(ErrorKind::not_found, "model or routing config '" + request.model + "' does not exist");
    e.status = 404;
    e.path = "$.model";
    e.code = "model_not_found";
    return fail(std::move(e));
  }
  if (ctx.request_id.empty()) ctx.request_id = new_request_id();
  st->req = std::move(request);
  st->ctx = std::move(ctx);
  st->start = impl_->clock->now();
  st->fingerprint = impl_->health ? prompt_prefix_fingerprint(st->req) : 0;
  SessionInputs& in = st->inputs;
  in.request = &st->req;
  in.context = &st->ctx;
  in.budget = impl_->budgets.get();
  in.health = impl_->health.get();
  in.seed = impl_->next_seed();
  in.start = st->start;
  in.wall_start = impl_->clock->wall_now();
  st->session = std::make_unique<RoutingSession>(st->policy, in);
  return std::unique_ptr<ClientSession>(new ClientSession(std::move(st)));
}

}  // namespace modelux
