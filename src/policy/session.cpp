// The routing session and config compilation.
//
// RoutingSession wraps the root StrategyState of a compiled Policy. It owns the per-request
// SessionCore (plans, results, trace), routes reported results to the node that started the
// attempt, enforces the total budget and finalises the DecisionTrace.
#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "policy/strategies/single.hpp"
#include "policy/strategy.hpp"

namespace modelux {

// ---- small public helpers declared in policy.hpp ------------------------------------------

namespace {
constexpr std::array<std::string_view, 8> kRetryClasses = {"429",        "5xx",           "timeout", "connection",
                                                           "overloaded", "context_length", "stream",  "malformed"};
}  // namespace

bool retry_class_matches(std::string_view cls, const Error& e) noexcept {
  switch (e.kind) {
    case ErrorKind::rate_limited:
    case ErrorKind::quota_exceeded: return cls == "429";
    case ErrorKind::server_error: return cls == "5xx";
    case ErrorKind::overloaded: return cls == "5xx" || cls == "overloaded" || (cls == "429" && e.status == 429);
    case ErrorKind::timeout: return cls == "timeout";
    // A gateway answers 502 for a refused or reset upstream connection and for a garbled
    // upstream body, so "5xx" covers both: a provider outage must fail over under the seeds'
    // retry_on ["429","5xx","timeout"].
    case ErrorKind::connection: return cls == "connection" || cls == "5xx";
    case ErrorKind::context_length: return cls == "context_length";
    case ErrorKind::stream_interrupted: return cls == "stream";
    case ErrorKind::malformed_response: return cls == "malformed" || cls == "5xx";
    default: return cls == "5xx" && e.status >= 500 && e.status < 600;
  }
}

const std::vector<std::string_view>& retry_class_names() noexcept {
  static const std::vector<std::string_view> names(kRetryClasses.begin(), kRetryClasses.end());
  return names;
}

// ---- compiler helpers ---------------------------------------------------------------------

std::string path_key(const std::string& path, std::string_view key) {
  std::string p = path;
  p += '.';
  p += key;
  return p;
}

std::string path_index(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

long long to_ms(Nanos d) noexcept { return std::chrono::duration_cast<Millis>(d).count(); }

Result<void> require_object(const Json& cfg, const std::string& path) {
  if (!cfg.is_object()) return fail(ErrorKind::invalid_config, "expected an object", path);
  return {};
}

Result<Nanos> read_ms(const Json& cfg, const char* key, const std::string& path, Nanos fallback) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return fallback;
  if (!it->is_number()) return fail(ErrorKind::invalid_config, std::string(key) + " must be a number of milliseconds",
                                    path_key(path, key));
  double v = it->get<double>();
  if (!(v > 0) || v > 86'400'000.0)
    return fail(ErrorKind::invalid_config, std::string(key) + " must be > 0 and at most one day", path_key(path, key));
  return std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(v));
}

Result<double> read_number(const Json& cfg, const char* key, const std::string& path, double fallback, double lo,
                           double hi) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return fallback;
  if (!it->is_number()) return fail(ErrorKind::invalid_config, std::string(key) + " must be a number", path_key(path, key));
  double v = it->get<double>();
  if (!(v >= lo && v <= hi))
    return fail(ErrorKind::invalid_config,
                std::string(key) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi),
                path_key(path, key));
  return v;
}

Result<std::string> read_string(const Json& cfg, const char* key, const std::string& path, std::string fallback) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return fallback;
  if (!it->is_string()) return fail(ErrorKind::invalid_config, std::string(key) + " must be a string", path_key(path, key));
  return it->get<std::string>();
}

Result<RateLimitMode> read_rate_limit_mode(const Json& cfg, const std::string& path) {
  auto s = read_string(cfg, "on_rate_limit", path, "fallback");
  if (!s) return std::unexpected(s.error());
  if (*s == "fallback") return RateLimitMode::fallback;
  if (*s == "queue") return RateLimitMode::queue;
  if (*s == "fail_fast") return RateLimitMode::fail_fast;
  return fail(ErrorKind::invalid_config, "on_rate_limit must be one of fallback, queue, fail_fast",
              path_key(path, "on_rate_limit"));
}

namespace {
std::uint32_t bit(ErrorKind k) { return 1u << static_cast<unsigned>(k); }
std::uint32_t class_mask(std::string_view cls) {
  std::uint32_t m = 0;
  for (unsigned k = 0; k <= static_cast<unsigned>(ErrorKind::internal); ++k) {
    Error e;
    e.kind = static_cast<ErrorKind>(k);
    if (retry_class_matches(cls, e)) m |= 1u << k;
  }
  return m;
}
}  // namespace

Result<std::uint32_t> read_retry_on(const Json& cfg, const std::string& path, std::uint32_t fallback) {
  auto it = cfg.find("retry_on");
  if (it == cfg.end() || it->is_null()) return fallback;
  std::string p = path_key(path, "retry_on");
  if (!it->is_array()) return fail(ErrorKind::invalid_config, "retry_on must be an array of classes", p);
  std::uint32_t mask = 0;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& c = (*it)[i];
    if (!c.is_string() && !c.is_number_integer())
      return fail(ErrorKind::invalid_config, "retry_on entries are strings", path_index(p, i));
    std::string cls = c.is_string() ? c.get<std::string>() : std::to_string(c.get<long long>());
    auto& names = retry_class_names();
    if (std::find(names.begin(), names.end(), cls) == names.end()) {
      std::string all;
      for (auto n : names) all += (all.empty() ? "" : ", ") + std::string(n);
      return fail(ErrorKind::invalid_config, "unknown retry class '" + cls + "' (known: " + all + ")", path_index(p, i));
    }
    mask |= class_mask(cls);
  }
  return mask;
}

bool retry_mask_matches(std::uint32_t mask, const Error& e) noexcept {
  // A failure inside our own process says nothing about the next target, which may well
  // work (memory or descriptors freed meanwhile): always fail over, whatever retry_on says.
  // retry_on classifies what providers answer. Our own cancellations end the request.
  if (e.kind == ErrorKind::local_resource_exhausted || (e.local && e.kind != ErrorKind::cancelled)) return true;
  if (mask & bit(e.kind)) return true;
  // 5xx by status for kinds that do not map on their own (e.g. an unexpected 5xx body).
  return (mask & bit(ErrorKind::server_error)) && e.status >= 500 && e.status < 600 &&
         e.kind != ErrorKind::bad_request && e.kind != ErrorKind::auth;
}

Result<void> check_keys(const Json& cfg, const std::string& path, std::initializer_list<std::string_view> allowed) {
  for (auto it = cfg.begin(); it != cfg.end(); ++it) {
    const std::string& k = it.key();
    if (k == "description" || k == "name" || k == "$comment") continue;
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
      return fail(ErrorKind::invalid_config, "unknown key '" + k + "'", path_key(path, k));
  }
  return {};
}

Result<Target> resolve_target(std::string_view model, const Json* provider_override, const std::string& path,
                              const PolicyResolver& r) {
  if (model.empty()) return fail(ErrorKind::invalid_config, "model must be a non-empty string", path);
  Target t;
  t.model = std::string(model);
  if (provider_override && !provider_override->is_null()) {
    if (!provider_override->is_string() || provider_override->get_ref<const std::string&>().empty())
      return fail(ErrorKind::invalid_config, "provider must be a non-empty string", path);
    t.provider = provider_override->get<std::string>();
  } else {
    t.provider = r.provider_for(model);
  }
  const ModelInfo* mi = r.catalog().find_model(model);
  if (!mi && r.provider_for(model).empty())
    return fail(ErrorKind::invalid_config, "unknown model '" + t.model + "' (not in the catalog)", path);
  if (t.provider.empty())
    return fail(ErrorKind::invalid_config, "no configured provider serves model '" + t.model + "'", path);
  return t;
}

std::uint64_t prompt_prefix_fingerprint(const ChatRequest& req) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  bool any = false;
  int users = 0;
  for (const auto& m : req.messages) {
    bool sys = m.role == "system" || m.role == "developer";
    if (!sys && m.role == "user" && users++ > 0) break;
    if (!sys && m.role != "user") break;
    h = fnv1a64(m.role, h);
    h = fnv1a64("\x1f", h);
    for (const auto& p : m.content)
      if (p.type == ContentPart::Type::text) {
        h = fnv1a64(p.text, h);
        any = true;
      }
    h = fnv1a64("\x1e", h);
  }
  return any ? (h ? h : 1) : 0;
}

std::string response_text(const ChatResponse& r) {
  if (r.choices.empty()) return {};
  std::string out;
  for (const auto& p : r.choices.front().message.content)
    if (p.type == ContentPart::Type::text) out += p.text;
  return out;
}

void append_number(std::string& out, long long v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, end);
}

void append_error_label(std::string& out, const Error& e) {
  out += to_string(e.kind);
  if (e.status) {
    out += " (";
    append_number(out, e.status);
    out += ')';
  }
}

std::string error_label(const Error& e) {
  std::string s;
  append_error_label(s, e);
  return s;
}

// ---- compile_node: the shapes a node can take ---------------------------------------------

namespace {

/// {"config":"@slug"} / "@slug": delegates to another compiled config, bounded by its budget.
class ConfigRefStrategy final : public Strategy {
 public:
  ConfigRefStrategy(std::string slug, std::shared_ptr<const Policy> p) : slug_(std::move(slug)), p_(std::move(p)) {}
  std::string_view name() const noexcept override { return p_->root().name(); }
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override {
    StartArgs b = a;
    if (p_->root().total_budget().count() > 0) b.node_deadline = std::min(a.node_deadline, now + p_->total_budget());
    return p_->root().start(s, now, b);
  }
  Nanos total_budget() const noexcept override { return p_->root().total_budget(); }
  const Target* only_target() const noexcept override { return p_->root().only_target(); }
  void collect_targets(std::vector<Target>& out) const override { p_->root().collect_targets(out); }

 private:
  std::string slug_;
  std::shared_ptr<const Policy> p_;
};

Result<std::unique_ptr<Strategy>> compile_ref(std::string_view ref, const std::string& path, const PolicyResolver& r) {
  std::string_view slug = ref;
  if (!slug.empty() && slug.front() == '@') slug.remove_prefix(1);
  if (slug.empty()) return fail(ErrorKind::invalid_config, "empty config reference", path);
  auto p = r.config(slug);
  if (!p) return fail(ErrorKind::invalid_config, "unknown config '@" + std::string(slug) + "'", path);
  return std::make_unique<ConfigRefStrategy>(std::string(slug), std::move(p));
}

}  // namespace

Result<std::unique_ptr<Strategy>> compile_node(const Json& cfg, const std::string& path, const PolicyResolver& r) {
  if (cfg.is_string()) {
    const auto& s = cfg.get_ref<const std::string&>();
    if (!s.empty() && s.front() == '@') return compile_ref(s, path, r);
    auto t = resolve_target(s, nullptr, path, r);
    if (!t) return std::unexpected(t.error());
    return make_target_strategy(std::move(*t), r, kDefaultTotalBudget);
  }
  if (!cfg.is_object())
    return fail(ErrorKind::invalid_config, "expected a model name, an \"@config\" reference or an object", path);
  if (auto it = cfg.find("strategy"); it != cfg.end()) {
    if (!it->is_string()) return fail(ErrorKind::invalid_config, "strategy must be a string", path_key(path, "strategy"));
    const auto& name = it->get_ref<const std::string&>();
    StrategyCompiler c = find_strategy(name);
    if (!c) {
      std::string all;
      for (auto n : strategy_names()) all += (all.empty() ? "" : ", ") + std::string(n);
      return fail(ErrorKind::invalid_config, "unknown strategy '" + name + "' (known: " + all + ")",
                  path_key(path, "strategy"));
    }
    return c(cfg, path, r);
  }
  if (auto it = cfg.find("config"); it != cfg.end()) {
    if (auto k = check_keys(cfg, path, {"config", "timeout_ms", "retries"}); !k) return std::unexpected(k.error());
    if (it->is_string()) return compile_ref(it->get_ref<const std::string&>(), path_key(path, "config"), r);
    if (it->is_object()) return compile_node(*it, path_key(path, "config"), r);
    return fail(ErrorKind::invalid_config, "config must be \"@slug\" or an inline config object", path_key(path, "config"));
  }
  if (cfg.contains("model")) return compile_single(cfg, path, r);
  return fail(ErrorKind::invalid_config, "expected \"strategy\", \"model\" or \"config\"", path);
}

// ---- Policy -------------------------------------------------------------------------------

Policy::Policy(std::string name, Json source, std::unique_ptr<Strategy> root, Nanos total_budget)
    : name_(std::move(name)), source_(std::move(source)), root_(std::move(root)), total_budget_(total_budget) {}
Policy::~Policy() = default;

std::string_view Policy::strategy() const noexcept { return root_->name(); }

Result<std::shared_ptr<const Policy>> Policy::compile(const Json& config, const PolicyResolver& resolver,
                                                      std::string name) {
  // `keep_responses` is read by the proxy (kept responses for clients that hang up), not by a
  // strategy: checked here so a bad value is refused like any other fault, then left out of
  // what the strategy sees.
  const Json* body = &config;
  Json without_keep;
  if (config.is_object() && config.contains("keep_responses")) {
    const Json& k = config["keep_responses"];
    if (!k.is_object()) return fail(ErrorKind::invalid_config, "keep_responses must be an object like {\"ttl_s\": 3600}", "$.keep_responses");
    for (auto it = k.begin(); it != k.end(); ++it)
      if (it.key() != "ttl_s") return fail(ErrorKind::invalid_config, "unknown key '" + it.key() + "'", "$.keep_responses." + it.key());
    auto ttl = k.find("ttl_s");
    if (ttl == k.end() || !ttl->is_number() || ttl->get<double>() <= 0 || ttl->get<double>() > 365.0 * 86400)
      return fail(ErrorKind::invalid_config, "ttl_s must be a number of seconds in (0, 31536000]", "$.keep_responses.ttl_s");
    without_keep = config;
    without_keep.erase("keep_responses");
    body = &without_keep;
  }
  auto root = compile_node(*body, "$", resolver);
  if (!root) return std::unexpected(root.error());
  Nanos budget = (*root)->total_budget();
  if (budget.count() <= 0) budget = kDefaultTotalBudget;
  return std::make_shared<const Policy>(std::move(name), config, std::move(*root), budget);
}

Result<std::shared_ptr<const Policy>> Policy::single_model(std::string_view model, const PolicyResolver& resolver) {
  auto t = resolve_target(model, nullptr, "$.model", resolver);
  if (!t) return std::unexpected(t.error());
  auto node = make_target_strategy(std::move(*t), resolver, kDefaultTotalBudget);
  if (!node) return std::unexpected(node.error());
  Json src = {{"strategy", "single"}, {"model", std::string(model)}};
  return std::make_shared<const Policy>(std::string(model), std::move(src), std::move(*node), kDefaultTotalBudget);
}

// ---- SessionCore --------------------------------------------------------------------------

void* StateArena::allocate(std::size_t n, std::size_t align) {
  // Blocks come from new[], aligned for any fundamental type; states need no more than that.
  if (align > __STDCPP_DEFAULT_NEW_ALIGNMENT__) throw std::bad_alloc();
  for (;;) {
    if (block_ < blocks_.size()) {
      Block& b = blocks_[block_];
      std::size_t at = (used_ + align - 1) & ~(align - 1);
      if (at + n <= b.size) {
        used_ = at + n;
        return b.mem.get() + at;
      }
      ++block_;
      used_ = 0;
      continue;
    }
    std::size_t size = std::max<std::size_t>(blocks_.empty() ? 2048 : blocks_.back().size * 2, n + align);
    blocks_.push_back(Block{std::unique_ptr<std::byte[]>(new std::byte[size]), size});
    block_ = blocks_.size() - 1;
    used_ = 0;
  }
}

void SessionCore::begin(std::shared_ptr<const Policy> p, const SessionInputs& i) {
  in = i;
  policy = std::move(p);
  rng.reseed(i.seed);
  deadline = in.start + policy->total_budget();
  // Keep the previous request's trace records (and their strings' buffers) for this one.
  // make_attempt takes spares from the back, so they go there in reverse: attempt i gets the
  // record attempt i had, whose strings already have the capacity its model and why need
  // (taken the other way round, a long and a short name swap records and reallocate).
  if (spare_records_.empty()) {
    spare_records_.swap(trace.attempts);  // O(1): the records are not moved one by one
    std::reverse(spare_records_.begin(), spare_records_.end());
  } else {
    if (spare_records_.capacity() < spare_records_.size() + trace.attempts.size())
      spare_records_.reserve(std::max<std::size_t>(4, 2 * (spare_records_.size() + trace.attempts.size())));
    for (auto r = trace.attempts.rbegin(); r != trace.attempts.rend(); ++r) spare_records_.push_back(std::move(*r));
  }
  trace.clear();
  n_plans_ = 0;
  results.clear();
  models.clear();
  targets.clear();
  ended_by_session.clear();
  to_cancel.clear();
  cancel_handed = 0;
  committed = 0;
  commit_at = Instant{};
  skipped = 0;
  notes.clear();
  n_scratch_ = 0;
  cancelled = false;
  cancel_reason.clear();
  arena_.reset();
  est_tokens_ = -1;
  fp_ = 0;
  fp_done_ = false;
  if (plans.capacity() < 4) {
    plans.reserve(4);
    results.reserve(4);
    models.reserve(4);
    targets.reserve(4);
    ended_by_session.reserve(4);
    to_cancel.reserve(4);
    trace.attempts.reserve(4);
    spare_records_.reserve(4);
  }
}

const AttemptPlan& SessionCore::make_attempt(const Target& t, const ModelInfo* model, Nanos timeout, Instant now,
                                             Instant node_deadline, std::string_view why, int member,
                                             bool needs_full_response) {
  if (n_plans_ == plans.size()) plans.emplace_back();
  AttemptPlan& p = plans[n_plans_++];
  p.id = n_plans_;
  p.target.model = t.model;  // assignments: a reused plan keeps its strings' buffers
  p.target.provider = t.provider;
  p.timeout = timeout;
  p.deadline = std::min({now + timeout, node_deadline, deadline});
  p.ttft_timeout = Nanos{0};
  p.stall_timeout = Nanos{0};
  p.max_stream = Nanos{0};
  p.must_claim = true;
  p.why.assign(why);
  p.member = member;
  p.needs_full_response = needs_full_response;
  results.emplace_back();
  models.push_back(model);
  targets.push_back(&t);
  ended_by_session.push_back(0);
  if (!spare_records_.empty()) {
    trace.attempts.push_back(std::move(spare_records_.back()));
    spare_records_.pop_back();
    trace.attempts.back().clear();
  } else {
    trace.attempts.emplace_back();
  }
  AttemptRecord& rec = trace.attempts.back();
  rec.id = p.id;
  rec.model = t.model;
  rec.provider = t.provider;
  rec.start_offset = now - in.start;
  rec.why_tried.assign(why);
  rec.member = member;
  return p;
}

std::string& SessionCore::scratch() {
  if (n_scratch_ == scratch_.size()) scratch_.push_back(std::make_unique<std::string>());
  std::string& s = *scratch_[n_scratch_++];
  s.clear();
  return s;
}

bool SessionCore::record_result(AttemptReport report, Instant now) {
  const std::uint32_t id = attempt_id(report);
  if (id == 0 || id > n_plans_ || reported(id)) return false;
  AttemptRecord& rec = record(id);
  if (const AttemptSkip* skip = std::get_if<AttemptSkip>(&report)) {
    // Never started: no duration, usage or cost. The record is dropped when the trace is
    // finished (a skip, not a try); until then it says why.
    results[id - 1] = *skip;
    ++skipped;
    rec.duration = Nanos{0};
    rec.ok = false;
    rec.outcome.assign(to_string(skip->reason));
    rec.why_ended.assign("not admitted by health (claim refused)");
    return true;
  }
  AttemptResult& r = results[id - 1].emplace<AttemptResult>(std::move(std::get<AttemptResult>(report)));
  rec.duration = r.latency.count() > 0 ? r.latency : now - (in.start + rec.start_offset);
  if (id == committed) r.delivered = true;    // its output reached the caller: no failover
  if (r.ttft.count() > 0) rec.ttft = r.ttft;  // else keep what commit() measured
  rec.ok = r.served();
  rec.usage = r.billed_usage();
  if (const ModelInfo* mi = models[id - 1]) rec.cost = Catalog::cost(*mi, rec.usage);
  if (r.answer) {
    rec.outcome.assign("ok");
    rec.why_ended.assign("ok");
    rec.status = 200;  // every provider answers a served attempt with 200
  } else {
    // Assigned and appended into the record's own strings: a reused record keeps its buffers.
    const Error& e = r.answer.error();
    rec.outcome.assign(to_string(e.kind));
    rec.status = e.status;
    rec.error = e.message;
    if (e.status) {
      rec.why_ended.clear();
      append_number(rec.why_ended, e.status);
      rec.why_ended += " from provider";
    } else {
      rec.why_ended = rec.outcome;
    }
  }
  return true;
}

namespace {
/// A failed result for attempt `id` that the session ends itself (no latency of the driver's).
AttemptResult ended_result(std::uint32_t id, Nanos latency, ErrorKind kind, std::string_view message) {
  AttemptResult r;  // failed (ErrorKind::internal) until told otherwise
  r.id = id;
  r.latency = latency;
  Error& e = r.answer.error();
  e.kind = kind;
  e.message.assign(message);
  return r;
}
}  // namespace

void SessionCore::expire(std::uint32_t id, Instant now, std::string why) {
  if (id == 0 || id > n_plans_ || reported(id)) return;
  record_result(ended_result(id, now - (in.start + record(id).start_offset), ErrorKind::timeout, why), now);
  record(id).why_ended = std::move(why);
  ended_by_session[id - 1] = 1;
  to_cancel.push_back(id);
}

void SessionCore::abandon(std::uint32_t id, Instant now, std::string_view why, std::string_view message) {
  if (id == 0 || id > n_plans_ || reported(id)) return;
  record_result(ended_result(id, now - (in.start + record(id).start_offset), ErrorKind::cancelled,
                             message.empty() ? why : message),
                now);
  record(id).why_ended.assign(why);
  ended_by_session[id - 1] = 1;
  to_cancel.push_back(id);
}

AttemptRecord& SessionCore::record(std::uint32_t id) {
  for (std::size_t i = std::min<std::size_t>(id, trace.attempts.size()); i > 0; --i)  // see set_why_ended
    if (trace.attempts[i - 1].id == id) return trace.attempts[i - 1];
  throw std::out_of_range("no trace record for attempt " + std::to_string(id));  // a driver bug
}

void SessionCore::set_why_ended(std::uint32_t id, std::string why) {
  // Ids ascend and records are only ever dropped, so attempt `id` sits at index id - 1 or
  // before it.
  for (std::size_t i = std::min<std::size_t>(id, trace.attempts.size()); i > 0; --i)
    if (trace.attempts[i - 1].id == id) {
      trace.attempts[i - 1].why_ended = std::move(why);
      return;
    }
}

TargetStats SessionCore::stats(std::string_view key, Instant now) const {
  if (!in.health) return TargetStats{};
  return in.health->stats(key, now);
}

std::uint64_t SessionCore::fingerprint() {
  if (!fp_done_) {
    fp_ = in.request ? prompt_prefix_fingerprint(*in.request) : 0;
    fp_done_ = true;
  }
  return fp_;
}

std::int64_t SessionCore::estimated_tokens() {
  if (est_tokens_ < 0) est_tokens_ = in.request ? estimate_input_tokens(*in.request) : 0;
  return est_tokens_;
}

// ---- RoutingSession -----------------------------------------------------------------------

namespace {
void fill_trace_header(SessionCore& c) {
  DecisionTrace& t = c.trace;
  const Policy& p = *c.policy;
  t.time = c.in.wall_start;
  t.config = p.name();
  t.config_version = p.version();
  t.strategy = p.strategy();
  if (const CallContext* ctx = c.in.context) {
    t.request_id = ctx->request_id;
    t.project = ctx->project;
    t.org = ctx->org;
    t.end_user = ctx->end_user;
    t.api_key_id = ctx->api_key_id;
    t.tags = ctx->tags;
  }
  if (c.in.request) {
    t.stream = c.in.request->stream;
    t.max_tokens = c.in.request->max_tokens.value_or(0);
  }
}

/// Appends the notes joined by ", " (appending keeps `out`'s buffer).
void append_notes(std::string& out, const Notes& notes) {
  for (std::size_t i = 0; i < notes.size(); ++i) {
    if (i) out += ", ";
    out += notes[i];
  }
}
}  // namespace


RoutingSession::RoutingSession() : core_(std::make_unique<SessionCore>()) {}

RoutingSession::RoutingSession(std::shared_ptr<const Policy> policy, const SessionInputs& in) : RoutingSession() {
  reset(std::move(policy), in);
}

void RoutingSession::reset(std::shared_ptr<const Policy> policy, const SessionInputs& in) {
  root_.reset();  // states first: they live in the arena begin() recycles
  core_->begin(std::move(policy), in);
  fill_trace_header(*core_);
  StartArgs a;
  a.node_deadline = core_->deadline;
  a.why = "primary";
  root_ = core_->policy->root().start(*core_, in.start, a);
}

void RoutingSession::clear() noexcept {
  root_.reset();
  SessionCore& c = *core_;
  c.results.clear();  // response bodies came from the transport: nothing to reuse there
  c.policy.reset();
  c.in = SessionInputs{};
  c.arena_.reset();
}

RoutingSession::~RoutingSession() = default;  // root_ (arena states) goes before core_ (the arena)

Step RoutingSession::next(Instant now) {
  SessionCore& c = *core_;
  // Ids handed out by the previous call were the driver's to stop; drop them.
  if (c.cancel_handed) {
    c.to_cancel.erase(c.to_cancel.begin(), c.to_cancel.begin() + static_cast<std::ptrdiff_t>(c.cancel_handed));
    c.cancel_handed = 0;
  }
  Step step = decide(now);
  c.cancel_handed = c.to_cancel.size();
  step.cancel = std::span<const std::uint32_t>(c.to_cancel.data(), c.cancel_handed);
  return step;
}

Step RoutingSession::decide(Instant now) {
  Step step;
  SessionCore& c = *core_;
  if (!root_) {  // idle: never reset, or cleared
    step.kind = Step::Kind::failed;
    return step;
  }
  if (c.trace.total.count() != 0 || finished()) {
    step.kind = c.trace.ok ? Step::Kind::done : Step::Kind::failed;
    return step;
  }
  auto finish = [&](bool ok) {
    // Whatever still runs is no longer wanted: the driver hears it through Step::cancel.
    for (std::uint32_t id = 1; id <= c.plan_count(); ++id)
      if (!c.reported(id)) c.abandon(id, now, "abandoned: request finished");
    DecisionTrace& t = c.trace;
    if (c.skipped) {
      // Skipped attempts never ran: they are skips (in the notes), not tries.
      auto keep = std::stable_partition(t.attempts.begin(), t.attempts.end(),
                                        [&](const AttemptRecord& a) { return !c.was_skipped(a.id); });
      for (auto it = keep; it != t.attempts.end(); ++it) c.spare_records_.push_back(std::move(*it));
      t.attempts.erase(keep, t.attempts.end());
    }
    const NodeOutcome& o = root_->outcome();
    const Target& served = served_of(o);
    t.ok = ok;
    t.total = std::max(now - c.in.start, Nanos{1});
    t.cost = Cost{};
    t.usage = Usage{};
    for (const auto& a : t.attempts) {
      t.cost.input_usd += a.cost.input_usd;
      t.cost.output_usd += a.cost.output_usd;
    }
    // Built by appending into the (reused) strings: no temporaries on the success path.
    t.decision.clear();
    t.reason.clear();
    if (ok) {
      t.served_model = served.model;
      t.served_provider = served.provider;
      t.decision += "served by ";
      if (o.attempt) {
        const AttemptRecord& rec = c.record(o.attempt);
        t.usage = rec.usage;
        // The caller's time to first token: from the request's start, failed attempts included
        // (the record's own ttft is the attempt's, from its start).
        t.ttft = rec.ttft.count() > 0 ? rec.start_offset + rec.ttft : Nanos{0};
        c.set_why_ended(o.attempt, "served");
        t.decision += served.model;
        t.decision += " (attempt ";
        append_number(t.decision, o.attempt);
        t.decision += ')';
      } else {
        for (const auto& a : t.attempts)
          if (a.ok) {
            t.usage.prompt_tokens = add_tokens(t.usage.prompt_tokens, a.usage.prompt_tokens);
            t.usage.completion_tokens = add_tokens(t.usage.completion_tokens, a.usage.completion_tokens);
          }
        t.decision += served.model.empty() ? std::string_view("aggregate") : std::string_view(served.model);
        t.decision += " (aggregate of ";
        append_number(t.decision, static_cast<long long>(t.attempts.size()));
        t.decision += " attempts)";
      }
      if (c.notes.empty()) {
        t.reason = t.decision;
      } else {
        append_notes(t.reason, c.notes);
        t.reason += ", served by ";
        t.reason += served.model;
      }
    } else {
      t.error_kind = to_string(o.error.kind);
      t.error_message = o.error.message;
      // A failed request has no usage: keep the estimate so replay can cost it on a candidate
      // (computed here, off the success path).
      t.est_input_tokens = c.estimated_tokens();
      t.decision += "failed: ";
      t.decision += t.error_kind;
      if (c.notes.empty()) {
        t.reason = o.error.message;
      } else {
        append_notes(t.reason, c.notes);
        t.reason += "; ";
        t.reason += o.error.message;
      }
    }
    step.kind = ok ? Step::Kind::done : Step::Kind::failed;
  };

  if (c.cancelled) {
    root_->outcome() = NodeOutcome{};
    root_->outcome().error.kind = ErrorKind::cancelled;
    root_->outcome().error.message = c.cancel_reason;
    finish(false);
    return step;
  }
  if (c.committed) {
    // The committed attempt owns the response: the tree is not consulted any more (see
    // StrategyState), routing deadlines no longer apply, only max_stream does.
    const std::uint32_t id = c.committed;
    const AttemptPlan& p = c.plan(id);
    if (!c.reported(id)) {
      if (p.max_stream.count() > 0 && now >= c.commit_at + p.max_stream) {
        c.expire(id, now, "max_stream_ms " + std::to_string(to_ms(p.max_stream)) + " ms reached");
      } else {
        step.kind = Step::Kind::wait;
        step.wake_at = p.max_stream.count() > 0 ? c.commit_at + p.max_stream : Instant{};
        return step;
      }
    }
    const AttemptResult& r = *c.result(id);  // a committed attempt ran: report() never records it as skipped
    NodeOutcome& o = root_->outcome();
    o = NodeOutcome{};
    o.ok = r.served();
    o.attempt = id;
    o.served = c.targets[id - 1];
    o.delivered = true;
    if (!r.answer) {
      o.error = r.answer.error();
      if (o.error.provider.empty()) o.error.provider = p.target.provider;
      c.notes.push_back("stream already delivered to the caller; no failover");
    }
    finish(r.served());
    return step;
  }
  const std::uint32_t first = c.plan_count();
  Step::Kind k = root_->next(c, now, step);
  if (k == Step::Kind::done || k == Step::Kind::failed) {
    finish(k == Step::Kind::done);
    return step;
  }
  // The attempts are the ones created during this call (strategies make them in order).
  if (k == Step::Kind::attempt) step.attempts = std::span<const AttemptPlan>(c.plans.data() + first, c.plan_count() - first);
  if (now >= c.deadline && step.attempts.empty()) {
    // The root should have ended on its own; this is the session-level guarantee.
    for (std::uint32_t id = 1; id <= c.plan_count(); ++id)
      if (!c.reported(id)) c.expire(id, now, "total budget " + std::to_string(to_ms(c.policy->total_budget())) + " ms exhausted");
    root_->outcome() = NodeOutcome{};
    root_->outcome().error.kind = ErrorKind::timeout;
    root_->outcome().error.message =
        "total budget " + std::to_string(to_ms(c.policy->total_budget())) + " ms exhausted";
    finish(false);
    return step;
  }
  step.kind = k;
  if (k == Step::Kind::wait) step.wake_at = std::min(step.wake_at == Instant{} ? c.deadline : step.wake_at, c.deadline);
  return step;
}

void RoutingSession::report(AttemptReport report, Instant now) {
  SessionCore& c = *core_;
  if (!root_) return;
  const std::uint32_t id = attempt_id(report);
  if (id == 0 || id > c.plan_count()) return;
  const AttemptResult* ran = std::get_if<AttemptResult>(&report);
  if (c.reported(id)) {
    // Late: the session already ended this attempt. Its decision stands, but the tokens it
    // spent are real: they reach its trace record (once). A skip spent nothing.
    if (!c.ended_by_session[id - 1] || !ran) return;
    const AttemptResult& result = *ran;
    c.ended_by_session[id - 1] = 0;
    AttemptRecord& rec = c.record(id);
    const Usage& u = result.billed_usage();
    if (rec.ttft.count() == 0 && result.ttft.count() > 0 && (result.served() || result.delivered)) rec.ttft = result.ttft;
    if (!u.empty()) {
      const Cost before = rec.cost;
      rec.usage = u;
      if (const ModelInfo* mi = c.models[id - 1]) rec.cost = Catalog::cost(*mi, u);
      if (c.trace.total.count() != 0) {  // finished: keep the request's total in step
        c.trace.cost.input_usd += rec.cost.input_usd - before.input_usd;
        c.trace.cost.output_usd += rec.cost.output_usd - before.output_usd;
      }
    }
    return;
  }
  if (finished()) return;
  if (!ran && id == c.committed) {
    // A driver bug: the attempt that owns the response cannot have been skipped. It fails
    // the request (its output may have reached the caller) rather than leave it waiting.
    report = ended_result(id, Nanos{0}, ErrorKind::internal, "the committed attempt was reported as skipped");
    ran = &std::get<AttemptResult>(report);
  }
  // Output that reached the caller without a commit() (an older driver) commits now.
  if (ran && ran->delivered && !c.committed) commit(id, now);
  if (!c.record_result(std::move(report), now)) return;
  if (c.committed) return;  // the tree is no longer consulted
  root_->on_result(c, id, now);
}

bool RoutingSession::commit(std::uint32_t id, Instant now) {
  SessionCore& c = *core_;
  if (!root_ || finished() || c.cancelled) return false;
  if (c.committed) return c.committed == id;
  if (id == 0 || id > c.plan_count() || c.reported(id)) return false;
  c.committed = id;
  c.commit_at = now;
  AttemptRecord& rec = c.record(id);
  rec.ttft = now - (c.in.start + rec.start_offset);  // the driver's own report refines it
  std::string why = "abandoned: attempt ";
  append_number(why, id);
  why += " owns the response";
  for (std::uint32_t other = 1; other <= c.plan_count(); ++other)
    if (other != id && !c.reported(other)) c.abandon(other, now, why);
  return true;
}

std::uint32_t RoutingSession::committed() const noexcept { return core_->committed; }

void RoutingSession::cancel(Instant now, std::string why) {
  SessionCore& c = *core_;
  if (finished()) return;
  const std::string ended = "abandoned: " + why;
  for (std::uint32_t id = 1; id <= c.plan_count(); ++id)
    if (!c.reported(id)) c.abandon(id, now, ended, why);
  c.cancelled = true;
  c.cancel_reason = std::move(why);
}

namespace {
/// What an idle session (never reset, or cleared) reports: failed, nothing served.
const NodeOutcome& idle_outcome() {
  static const NodeOutcome o = [] {
    NodeOutcome n;
    n.error.kind = ErrorKind::internal;
    n.error.message = "routing session has no request (call reset() first)";
    return n;
  }();
  return o;
}
}  // namespace

// An idle session counts as finished, so next() says failed and report()/cancel() do nothing.
bool RoutingSession::finished() const noexcept { return !root_ || core_->trace.total.count() != 0; }
const ChatResponse& RoutingSession::response() const {
  return response_of(*core_, root_ ? root_->outcome() : idle_outcome());
}
const Target& RoutingSession::served() const { return served_of(root_ ? root_->outcome() : idle_outcome()); }
const Error& RoutingSession::error() const { return (root_ ? root_->outcome() : idle_outcome()).error; }
DecisionTrace& RoutingSession::trace() noexcept { return core_->trace; }
Instant RoutingSession::deadline() const noexcept { return core_->deadline; }
const SessionInputs& RoutingSession::inputs() const noexcept { return core_->in; }

}  // namespace modelux
