// One attempt's lifecycle (see attempt.hpp).
#include "router/attempt.hpp"

#include "modelux/ratelimits.hpp"
#include "modelux/wire.hpp"

namespace modelux {


std::int64_t estimated_output_tokens(const ChatRequest& req, const ModelInfo* model) noexcept {
  if (req.max_tokens) return *req.max_tokens;
  if (model && model->max_output > 0) return std::min<std::int64_t>(model->max_output, 1024);
  return 1024;
}

bool failure_is_ours(const Error& e) noexcept { return e.local || e.kind == ErrorKind::cancelled; }

AttemptReport refused_report(std::uint32_t id, const AttemptRefusal& refusal) {
  if (refusal.why == AttemptRefusal::Why::not_admitted)
    return AttemptSkip{.id = id, .reason = SkipReason::not_admitted};  // a skip, not a try: the session moves on
  AttemptResult r;
  r.id = id;
  r.answer = std::unexpected(refusal.error);
  return r;
}

std::expected<AttemptTracker, AttemptRefusal> AttemptTracker::start(const AttemptEffects& fx, const AttemptPlan& plan,
                                                                    const ChatRequest& req, const CallContext& ctx,
                                                                    Options opts) {
  AttemptTracker t;
  t.fx_ = &fx;
  t.plan_ = plan;
  const Instant now = fx.clock->now();
  auto refuse = [](ErrorKind kind, std::string msg, int status = 0) {
    AttemptRefusal r;
    r.why = AttemptRefusal::Why::refused;
    r.error = error_of(kind, std::move(msg));
    r.error.status = status;
    return std::unexpected(std::move(r));
  };
  if (fx.config) {
    t.provider_ = fx.config->find_provider(plan.target.provider);
    if (!t.provider_) return refuse(ErrorKind::no_route, "provider '" + plan.target.provider + "' is not configured");
    if (!find_codec(t.provider_->family)) return refuse(ErrorKind::no_route, "no codec for family '" + t.provider_->family + "'");
    t.model_ = fx.config->catalog.find_model(plan.target.model);
  }

  // Health admission is claimed just before the start (the session only read it). A plan that
  // tries past an open breaker on purpose (panic mode) has nothing to claim.
  if (fx.health) t.target_key_ = plan.target.key();  // once per attempt: claim, rate limits, observe
  if (fx.health && plan.must_claim && !fx.health->claim(t.target_key_, now)) {
    AttemptRefusal r;
    r.why = AttemptRefusal::Why::not_admitted;
    return std::unexpected(std::move(r));
  }

  if (fx.budgets) {
    // Without max_tokens the output estimate is a guess: it never blocks on its own (admit()).
    auto adm = fx.budgets->admit(ctx, t.model_, estimate_input_tokens(req), estimated_output_tokens(req, t.model_), now,
                                 req.max_tokens.has_value(), opts.allow_downgrade);
    if (!adm) {
      AttemptRefusal r;
      r.error = std::move(adm.error());
      return std::unexpected(std::move(r));
    }
    if (opts.allow_downgrade && !adm->downgrade_to.empty()) {
      AttemptRefusal r;
      r.why = AttemptRefusal::Why::downgrade;
      r.downgrade_to = adm->downgrade_to;
      r.note = "downgrade to " + adm->downgrade_to + " (budget " + adm->downgrade_budget + " at " +
               std::to_string(static_cast<int>(adm->downgrade_percent)) + "%)";
      r.error = error_of(ErrorKind::budget_exceeded, r.note);
      fx.budgets->release(*adm);
      return std::unexpected(std::move(r));
    }
    t.admission_ = std::move(*adm);
  }

  // A key from the provider's pool: spread across keys, skipping keys that sit out a 429
  // until their reset.
  if (t.provider_ && t.provider_->api_keys.size() > 1) {
    const auto& keys = t.provider_->api_keys;
    if (fx.health) {
      auto k = fx.health->pick_key(t.provider_->name, t.plan_.target.model, now);
      if (!k) {
        Error e = error_of(ErrorKind::rate_limited,
                           "every API key of provider '" + t.provider_->name + "' is cooling down after 429s");
        e.status = 429;
        auto wait = fx.health->key_retry_at(t.provider_->name, t.plan_.target.model, now) - now;
        if (wait.count() > 0) e.retry_after = std::chrono::duration_cast<Millis>(wait);
        if (t.admission_) fx.budgets->release(*t.admission_), t.admission_.reset();
        AttemptRefusal r;
        r.error = std::move(e);
        return std::unexpected(std::move(r));
      }
      t.key_index_ = *k;
    } else if (fx.key_cursor) {
      std::size_t pi = static_cast<std::size_t>(t.provider_ - fx.config->providers.data());
      t.key_index_ = static_cast<int>(fx.key_cursor[pi].fetch_add(1, std::memory_order_relaxed) % keys.size());
    } else {
      t.key_index_ = 0;
    }
  } else if (t.provider_ && !t.provider_->api_keys.empty()) {
    t.key_index_ = 0;
  }
  return t;
}

AttemptTracker::AttemptTracker(AttemptTracker&& o) noexcept
    : fx_(o.fx_), plan_(std::move(o.plan_)), target_key_(std::move(o.target_key_)), provider_(o.provider_), model_(o.model_),
      admission_(std::move(o.admission_)), key_index_(o.key_index_), key_switches_(o.key_switches_),
      finished_(o.finished_) {
  o.admission_.reset();
  o.finished_ = true;
}

AttemptTracker& AttemptTracker::operator=(AttemptTracker&& o) noexcept {
  if (this != &o) {
    if (!finished_ && admission_ && fx_ && fx_->budgets) fx_->budgets->release(*admission_);
    fx_ = o.fx_;
    plan_ = std::move(o.plan_);
    target_key_ = std::move(o.target_key_);
    provider_ = o.provider_;
    model_ = o.model_;
    admission_ = std::move(o.admission_);
    key_index_ = o.key_index_;
    key_switches_ = o.key_switches_;
    finished_ = o.finished_;
    o.admission_.reset();
    o.finished_ = true;
  }
  return *this;
}

AttemptTracker::~AttemptTracker() {
  if (!finished_ && admission_ && fx_ && fx_->budgets) fx_->budgets->release(*admission_);
}

ProviderEndpoint AttemptTracker::endpoint() const {
  if (!provider_) {
    ProviderEndpoint ep;
    ep.name = plan_.target.provider;
    return ep;
  }
  const auto& keys = provider_->api_keys;
  std::string key = key_index_ >= 0 && static_cast<std::size_t>(key_index_) < keys.size()
                        ? keys[static_cast<std::size_t>(key_index_)]
                        : std::string{};
  return ProviderEndpoint{provider_->name, provider_->family, provider_->base_url, std::move(key), provider_->options};
}

std::string_view AttemptTracker::upstream_model() const noexcept {
  return model_ && !model_->upstream.empty() ? std::string_view(model_->upstream) : std::string_view(plan_.target.model);
}

bool AttemptTracker::switch_key_after(const Error& e, std::string& note) {
  if (!fx_ || !fx_->health || !provider_ || key_index_ < 0 || provider_->api_keys.size() < 2) return false;
  if (e.kind != ErrorKind::rate_limited && e.kind != ErrorKind::quota_exceeded && e.kind != ErrorKind::auth) return false;
  if (key_switches_ + 1 >= static_cast<int>(provider_->api_keys.size())) return false;
  const Instant now = fx_->clock->now();
  if (now >= plan_.deadline) return false;
  AttemptResult seen;
  seen.id = plan_.id;
  seen.answer = std::unexpected(e);
  fx_->health->observe_key(provider_->name, plan_.target.model, key_index_, seen, now);
  auto k = fx_->health->pick_key(provider_->name, plan_.target.model, now);
  if (!k || *k == key_index_) return false;
  if (!note.empty()) note += "; ";
  note += "key " + std::to_string(key_index_ + 1) + " of " + provider_->name + " " + std::string(to_string(e.kind));
  if (e.status) note += " (" + std::to_string(e.status) + ")";
  if (e.retry_after) note += " sits out " + std::to_string(e.retry_after->count()) + " ms";
  note += ", sent again with key " + std::to_string(*k + 1);
  key_index_ = *k;
  ++key_switches_;
  return true;
}

void AttemptTracker::observe_headers(const Headers& headers) {
  if (!fx_->health || !provider_) return;
  auto rl = parse_rate_limits(provider_->family, headers);
  if (!rl.remaining_requests && !rl.remaining_tokens) return;
  const Instant now = fx_->clock->now();
  auto reset = std::max(rl.reset_requests.value_or(Millis{0}), rl.reset_tokens.value_or(Millis{0}));
  fx_->health->observe_rate_limits(target_key_, rl.remaining_requests, rl.remaining_tokens, now + reset, now);
}

AttemptResult AttemptTracker::finish(AttemptEnd&& end, std::vector<std::string>& budget_actions,
                                     std::uint64_t prompt_fingerprint) {
  AttemptResult r;
  r.id = plan_.id;
  r.answer = std::move(end.answer);
  r.latency = end.latency;
  r.ttft = end.ttft;
  r.delivered = end.delivered;
  r.usage = end.usage;
  if (r.answer) {
    if (r.usage.empty()) r.usage = r.answer->usage;
    // Anthropic, Gemini, Cohere and Bedrock answers carry no creation time: ours, like OpenAI's.
    if (r.answer->created == 0)
      r.answer->created = std::chrono::duration_cast<std::chrono::seconds>(fx_->clock->wall_now().time_since_epoch()).count();
  } else {
    Error& err = r.answer.error();
    // One name per provider: the configured one ("google"), never the codec family ("gemini")
    // a wire error was built with, in the field and at the head of the message.
    const std::string& name = plan_.target.provider;
    if (!err.provider.empty() && err.provider != name && err.message.starts_with(err.provider + " "))
      err.message = name + err.message.substr(err.provider.size());
    if (!err.local && err.kind != ErrorKind::cancelled) err.provider = name;
    else if (err.provider.empty()) err.provider = name;
  }
  const Instant now = fx_->clock->now();

  // Health: one observation of how the target behaved. The session's verdict stands for an
  // attempt it ended first (expired and then cancelled by the driver: a timeout).
  if (fx_->health) {
    const bool overruled = end.session_verdict.has_value();
    const Error* failure = overruled ? &*end.session_verdict : (r.answer ? nullptr : &r.answer.error());
    if (!failure || !failure_is_ours(*failure)) {
      const std::string& key = target_key_;
      if (overruled) {
        AttemptResult seen;
        seen.id = r.id;
        seen.latency = r.latency;
        seen.answer = std::unexpected(*end.session_verdict);
        fx_->health->observe(key, seen, now);
      } else {
        fx_->health->observe(key, r, now);
      }
      if (key_index_ >= 0 && provider_) fx_->health->observe_key(provider_->name, plan_.target.model, key_index_, r, now);
      if (r.answer && !overruled && prompt_fingerprint) fx_->health->note_prefix(prompt_fingerprint, key, now);
    }
  }

  // Budget: settle with the actual cost (once), or release when the attempt cost nothing.
  if (fx_->budgets && admission_) {
    for (auto& a : admission_->actions()) budget_actions.push_back(std::move(a));
    if (r.answer || !r.usage.empty()) {
      const ModelInfo* mi = fx_->config ? fx_->config->catalog.find_model(admission_->model) : nullptr;
      double usd = mi && mi->priced ? Catalog::cost(*mi, r.usage).total() : 0.0;
      for (const auto& a : fx_->budgets->settle(*admission_, usd, r.usage, now)) budget_actions.push_back("alert: " + a.message());
    } else {
      fx_->budgets->release(*admission_);
      budget_actions.push_back("released reservation (attempt failed)");
    }
    admission_.reset();
  }
  finished_ = true;
  return r;
}

}  // namespace modelux
