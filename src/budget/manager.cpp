// BudgetManager: the in-memory hot path (admit / settle / release / status).
//
// Algorithm: a request matches a handful of ledgers (one per budget whose scope fits it).
// admit() locks them all in address order (deadlock-free), brings each window up to date,
// checks committed + estimate <= limit in every one, and only then reserves in all of them.
// So the reservation is all-or-nothing across scopes, and N parallel requests against the
// last dollar admit exactly those that fit. Each critical section is a few compares and adds;
// nothing formats text, allocates (except the Admission's hold vector) or does I/O there.
// Cost: O(#budgets) scope compares + O(#matching) lock/unlock pairs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>

#include <fmt/format.h>

#include "budget/manager_impl.hpp"

namespace modelux {

using namespace std::chrono;

// ---- ledger -------------------------------------------------------------------------------

BudgetLedger::BudgetLedger(const BudgetEntry& e, std::string value, bool wc)
    : scope_value(std::move(value)), key(e.spec.name + "|" + scope_value), wildcard(wc), entry_(&e) {}

void BudgetLedger::roll(Instant now, WallTime wall) {
  const std::int64_t wall_ns = duration_cast<nanoseconds>(wall.time_since_epoch()).count();
  const std::int64_t wall_ms = wall_ns / 1'000'000 - (wall_ns % 1'000'000 < 0 ? 1 : 0);
  const BudgetSpec& s = entry().spec;
  rolled_once = true;
  if (s.window != BudgetWindowKind::rolling) {
    const auto b = budget_detail::calendar_window(s.window, entry().tz, floor<seconds>(sys_time<nanoseconds>{nanoseconds{wall_ns}}));
    const std::int64_t start_ms = b.start.time_since_epoch().count() * 1000;
    const std::int64_t end_ns = b.end.time_since_epoch().count() * 1'000'000'000;
    if (periods.empty() || periods.back().start_ms != start_ms) {
      periods.clear();
      periods.push_back(BudgetPeriod{start_ms, {}, {}});
      own_sum = {};
      remote_sum = {};
      alerts_fired = 0;
    }
    period_end = now + nanoseconds{end_ns - wall_ns};
    window_end_ms = end_ns / 1'000'000;
    return;
  }
  const std::int64_t w = entry().bucket_ms;
  const std::int64_t window = s.window_s * 1000;
  const std::int64_t bucket = wall_ms - ((wall_ms % w) + w) % w;
  if (periods.empty() || periods.back().start_ms < bucket) periods.push_back(BudgetPeriod{bucket, {}, {}});
  while (!periods.empty() && periods.front().start_ms + w <= wall_ms - window) {
    own_sum -= periods.front().own;
    remote_sum -= periods.front().remote;
    periods.pop_front();
  }
  std::int64_t next_ms = bucket + w;
  if (!periods.empty()) next_ms = std::min(next_ms, periods.front().start_ms + w + window);
  period_end = now + nanoseconds{next_ms * 1'000'000 - wall_ns};
  // Rolling windows have no "new window": a threshold re-arms once spend falls back below it.
  if (alerts_fired) {
    const std::int64_t c = committed().nusd;
    for (std::size_t i = 0; i < entry().alert_nusd.size(); ++i)
      if (c < entry().alert_nusd[i]) alerts_fired &= ~(1u << i);
  }
}

void BudgetLedger::add_own(const BudgetTotals& t) noexcept {
  if (periods.empty()) periods.push_back(BudgetPeriod{});
  periods.back().own += t;
  own_sum += t;
  ++version;
}

std::string BudgetLedger::window_label() const {
  const BudgetSpec& s = entry().spec;
  if (s.window == BudgetWindowKind::rolling) return fmt::format("rolling {}s", s.window_s);
  std::string out(to_string(s.window));
  if (!periods.empty()) {
    out += " from ";
    out += budget_detail::format_utc(budget_detail::SysSeconds{seconds{periods.back().start_ms / 1000}});
  }
  if (s.timezone != "UTC") {
    out += " (";
    out += s.timezone;
    out += ")";
  }
  return out;
}

std::int64_t BudgetLedger::window_ms() const noexcept {
  switch (entry().spec.window) {
    case BudgetWindowKind::daily: return 86'400'000;
    case BudgetWindowKind::weekly: return 7 * 86'400'000LL;
    case BudgetWindowKind::monthly: return 31 * 86'400'000LL;
    case BudgetWindowKind::rolling: return entry().spec.window_s * 1000;
  }
  return 86'400'000;
}

// ---- helpers --------------------------------------------------------------------------------

namespace {

/// The request's value for a scope; nullptr when the request is outside the scope.
const std::string* scope_value_of(const BudgetSpec& s, const CallContext& ctx) noexcept {
  static const std::string kAll = "*";
  const std::string* v = nullptr;
  switch (s.scope) {
    case BudgetScopeKind::all: return &kAll;
    case BudgetScopeKind::org: v = &ctx.org; break;
    case BudgetScopeKind::project: v = &ctx.project; break;
    case BudgetScopeKind::end_user: v = &ctx.end_user; break;
    case BudgetScopeKind::api_key: v = &ctx.api_key_id; break;
    case BudgetScopeKind::tag:
      for (const auto& [k, val] : ctx.tags)
        if (k == s.tag_key) {
          v = &val;
          break;
        }
      break;
  }
  if (!v || v->empty()) return nullptr;
  if (s.scope_value != "*" && *v != s.scope_value) return nullptr;
  return v;
}

std::string money(double usd) {
  if (usd != 0 && std::abs(usd) < 0.01) return fmt::format("${:.6f}", usd);
  return fmt::format("${:.4f}", usd);
}

std::string scope_label_of(const BudgetLedger& l) {
  const BudgetSpec& s = l.entry().spec;
  if (s.scope == BudgetScopeKind::all) return "all";
  std::string out(to_string(s.scope));
  out += ':';
  if (s.scope == BudgetScopeKind::tag) {
    out += s.tag_key;
    out += '=';
  }
  out += l.scope_value;
  return out;
}

double percent_of(std::int64_t committed, std::int64_t limit) noexcept {
  return limit > 0 ? 100.0 * static_cast<double>(committed) / static_cast<double>(limit)
                   : (committed > 0 ? std::numeric_limits<double>::infinity() : 0.0);
}

/// Fires every not-yet-fired threshold reached by `committed` nano-dollars (every one <= 100%
/// when `blocked`). Integer compares only; the percent is computed when something fires.
/// Caller holds l.mu.
template <class WallFn>
void check_alerts(BudgetLedger& l, std::int64_t committed, bool blocked, WallFn&& at, std::vector<BudgetAlert>& out) {
  const BudgetSpec& s = l.entry().spec;
  const auto& th = l.entry().alert_nusd;
  for (std::size_t i = 0; i < th.size(); ++i) {
    const std::uint32_t bit = 1u << i;
    if (l.alerts_fired & bit) continue;
    if (committed >= th[i] || (blocked && s.alerts[i] <= 100)) {
      l.alerts_fired |= bit;
      BudgetAlert a;
      a.budget = s.name;
      a.scope = scope_label_of(l);
      a.window = l.window_label();
      a.threshold = s.alerts[i];
      a.percent = percent_of(committed, l.entry().limit_nusd);
      a.limit_usd = s.limit_usd.value_or(0);
      a.spent_usd = from_nusd(committed);
      a.at = at();
      out.push_back(std::move(a));
    }
  }
}


/// Locks a small set of ledgers in address order; unlocks on destruction.
class LedgerLocks {
 public:
  explicit LedgerLocks(BudgetHolds& holds) : holds_(holds) {
    std::sort(holds_.begin(), holds_.end(), [](const auto& a, const auto& b) { return a.ledger < b.ledger; });
    for (auto& h : holds_) h.ledger->mu.lock();
  }
  ~LedgerLocks() {
    for (auto* it = holds_.end(); it != holds_.begin();) (--it)->ledger->mu.unlock();
  }
  LedgerLocks(const LedgerLocks&) = delete;
  LedgerLocks& operator=(const LedgerLocks&) = delete;

 private:
  BudgetHolds& holds_;
};

}  // namespace

std::string BudgetAlert::message() const {
  return fmt::format("budget {} ({}, {}) at {:.0f}% of ${:.2f} (threshold {:.0f}%)", budget, scope, window, percent,
                     limit_usd, threshold);
}

std::optional<double> estimate_cost_usd(const ModelInfo* model, std::int64_t input_tokens,
                                        std::int64_t output_tokens) noexcept {
  if (!model || !model->priced) return std::nullopt;
  return (static_cast<double>(std::max<std::int64_t>(0, input_tokens)) * model->input_per_m +
          static_cast<double>(std::max<std::int64_t>(0, output_tokens)) * model->output_per_m) /
         1e6;
}

std::vector<std::string> Admission::actions() const {
  std::vector<std::string> out;
  for (const auto& h : holds) {
    if (!h.ledger) continue;
    // "reserved {money} on {scope}/{window} ({name})", appended in place: one per request and
    // budget on the io thread, where the formatted temporaries cost more than the text.
    const double usd = from_nusd(h.nusd);
    std::string line = "reserved ";
    if (usd != 0 && std::abs(usd) < 0.01) fmt::format_to(std::back_inserter(line), "${:.6f}", usd);
    else fmt::format_to(std::back_inserter(line), "${:.4f}", usd);
    line += " on ";
    line += scope_label_of(*h.ledger);
    line += '/';
    line += to_string(h.ledger->entry().spec.window);
    line += " (";
    line += h.ledger->entry().spec.name;
    line += ')';
    out.push_back(std::move(line));
  }
  if (unpriced) out.push_back(fmt::format("unpriced model '{}' allowed and flagged", model.empty() ? std::string_view("(unknown)") : model));
  if (!downgrade_to.empty())
    out.push_back(fmt::format("downgrade to {} at {:.0f}% ({})", downgrade_to, downgrade_percent, downgrade_budget));
  for (const auto& a : alerts) out.push_back("alert: " + a.message());
  return out;
}

// ---- Impl -----------------------------------------------------------------------------------

BudgetLedger* BudgetManager::Impl::ledger_for(BudgetSlot& slot, std::string_view value, Instant now) {
  if (!slot.wildcard()) return slot.single.get();
  {
    std::shared_lock lk(slot.per_value_mu);
    auto it = slot.per_value.find(value);
    if (it != slot.per_value.end()) {
      it->second->pins.fetch_add(1, std::memory_order_relaxed);  // eviction reads it under the exclusive lock
      return it->second.get();
    }
  }
  // First request of this value (new, or its ledger was evicted): read its persisted rows
  // outside the slot's lock, then insert. If an eviction batch of this slot ran in between,
  // the evicted ledger may just have been flushed with newer rows: read again (after two
  // tries, read under the exclusive lock, which no eviction can interleave with).
  std::vector<StoredRow> rows;
  for (int attempt = 0;; ++attempt) {
    rows.clear();
    const bool under_lock = attempt >= 2;
    const std::uint64_t gen = slot.evictions.load(std::memory_order_acquire);
    bool loaded = !under_lock && load_rows(slot, value, now, rows);
    std::unique_lock lk(slot.per_value_mu);
    auto it = slot.per_value.find(value);
    if (it != slot.per_value.end()) {
      it->second->pins.fetch_add(1, std::memory_order_relaxed);
      return it->second.get();
    }
    if (loaded && slot.evictions.load(std::memory_order_acquire) != gen) continue;
    if (under_lock) loaded = load_rows(slot, value, now, rows);
    auto p = std::make_unique<BudgetLedger>(slot.entry(), std::string(value), true);
    BudgetLedger* l = p.get();
    if (!rows.empty()) {
      const WallTime wall = wall_of(now);
      std::lock_guard g(l->mu);
      for (const StoredRow& r : rows) apply_stored(*l, r, now, wall);
      if (l->own_sum != BudgetTotals{}) {
        reloaded.fetch_add(1, std::memory_order_relaxed);
        // Thresholds this spend already passed fired before (settle checks every one).
        const std::int64_t c = l->own_sum.nusd;
        for (std::size_t i = 0; i < l->entry().alert_nusd.size(); ++i)
          if (c >= l->entry().alert_nusd[i]) l->alerts_fired |= 1u << i;
      }
      l->flushed_version = l->version;  // what was read is what the store holds
    }
    l->pins.fetch_add(1, std::memory_order_relaxed);
    slot.per_value.emplace(std::string(value), std::move(p));
    if (slot.retired) return l;  // an admission that read the list before update() removed it
    wildcard_live.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard g(all_mu);
    all_ledgers.push_back(l);
    return l;
  }
}

std::size_t BudgetManager::Impl::evict_locked(Instant now) {
  if (!has_wildcard) return 0;
  const WallTime wall = wall_of(now);
  last_sweep = clock.now();
  enum class Kind : std::uint8_t { keep, idle, spend };
  // Whether `l` may be dropped, and how. Caller holds l.mu.
  auto classify = [&](const BudgetLedger& l) {
    if (l.pins.load(std::memory_order_acquire) != 0 || l.reserved != BudgetTotals{}) return Kind::keep;
    if (l.outage_cap_nusd >= 0) return Kind::keep;  // fair_share cap frozen during a Redis outage
    if (db && l.version != l.flushed_version) return Kind::keep;  // not yet in the store
    if (l.remote_sum != BudgetTotals{} || l.remote_reserved != BudgetTotals{}) return Kind::keep;  // fleet view
    if (l.own_sum == BudgetTotals{}) return Kind::idle;
    return db ? Kind::spend : Kind::keep;  // own spend can only be dropped when it can be read back
  };
  struct Cand {
    BudgetSlot* slot;
    BudgetLedger* ledger;
    Instant last_use;
  };
  std::vector<Cand> idle, spend;
  // Scan a bucket range at a time under the shared lock, so new values are never held up for
  // long (a rehash between chunks may skip a few entries until the next sweep).
  constexpr std::size_t kChunk = 512;
  for (BudgetSlot* sp : live_slots()) {
    if (!sp->wildcard()) continue;
    for (std::size_t b = 0;;) {
      std::shared_lock lk(sp->per_value_mu);
      const std::size_t nb = sp->per_value.bucket_count();
      if (b >= nb) break;
      const std::size_t e = std::min(nb, b + kChunk);
      for (; b < e; ++b)
        for (auto it = sp->per_value.begin(b); it != sp->per_value.end(b); ++it) {
          BudgetLedger& l = *it->second;
          std::lock_guard g(l.mu);
          if (now >= l.period_end || !l.rolled_once) l.roll(now, wall);
          switch (classify(l)) {
            case Kind::idle: idle.push_back(Cand{sp, &l, l.last_use}); break;
            case Kind::spend: spend.push_back(Cand{sp, &l, l.last_use}); break;
            case Kind::keep: break;
          }
        }
    }
  }
  const std::size_t max = options.max_wildcard_ledgers;
  const std::size_t live = wildcard_live.load(std::memory_order_relaxed);
  const std::size_t over = live > max ? live - max : 0;
  std::vector<Cand> victims = std::move(idle);
  if (over > victims.size() && !spend.empty()) {
    // Above the bound even without the idle ones: the least recently used ledgers whose spend
    // is safely in SQLite go too (read back on their next request).
    const std::size_t n = std::min(spend.size(), over - victims.size());
    std::nth_element(spend.begin(), spend.begin() + static_cast<std::ptrdiff_t>(n - 1), spend.end(),
                     [](const Cand& a, const Cand& b) { return a.last_use < b.last_use; });
    victims.insert(victims.end(), spend.begin(), spend.begin() + static_cast<std::ptrdiff_t>(n));
  }
  std::stable_sort(victims.begin(), victims.end(), [](const Cand& a, const Cand& b) { return a.slot < b.slot; });

  // Unlink in batches under the slot's exclusive lock, re-checking each one there (an
  // admission may have pinned or reserved it since the scan).
  std::vector<std::unique_ptr<BudgetLedger>> dead;
  std::uint64_t with_spend = 0;
  for (std::size_t i = 0; i < victims.size();) {
    BudgetSlot& slot = *victims[i].slot;
    std::unique_lock lk(slot.per_value_mu);
    for (std::size_t n = 0; i < victims.size() && victims[i].slot == &slot && n < kChunk; ++i, ++n) {
      BudgetLedger& l = *victims[i].ledger;
      std::lock_guard g(l.mu);
      const Kind k = classify(l);
      if (k == Kind::keep) continue;
      auto it = slot.per_value.find(std::string_view(l.scope_value));
      if (it == slot.per_value.end() || it->second.get() != &l) continue;
      l.evicted = true;
      if (k == Kind::spend) ++with_spend;
      dead.push_back(std::move(it->second));
      slot.per_value.erase(it);
    }
    slot.evictions.fetch_add(1, std::memory_order_release);
  }
  if (!dead.empty()) {
    std::vector<BudgetLedger*> gone;
    gone.reserve(dead.size());
    for (auto& d : dead) gone.push_back(d.get());
    std::sort(gone.begin(), gone.end());
    {
      std::unique_lock lm(list_mu);  // no snapshot() is iterating
      std::lock_guard g(all_mu);
      std::erase_if(all_ledgers, [&](BudgetLedger* l) { return std::binary_search(gone.begin(), gone.end(), l); });
    }
    wildcard_live.fetch_sub(dead.size(), std::memory_order_relaxed);
    evicted_total.fetch_add(dead.size(), std::memory_order_relaxed);
    evicted_spend.fetch_add(with_spend, std::memory_order_relaxed);
  }
  const std::size_t after = wildcard_live.load(std::memory_order_relaxed);
  over_bound.store(after > max, std::memory_order_relaxed);
  if (after > max && !over_bound_logged) {
    over_bound_logged = true;
    log(std::to_string(after) + " wildcard budget ledgers are live, above max_wildcard_ledgers (" + std::to_string(max) +
        "): the others hold reservations, unflushed or fleet spend" + (db ? "" : ", or spend that no SQLite store could restore") +
        "; they are kept (a user's spend is never reset inside a live window)");
  } else if (after <= max) {
    over_bound_logged = false;
  }
  const std::size_t n = dead.size();
  dead.clear();  // freed outside every lock
  return n;
}

void BudgetManager::Impl::maintain() {
  if (!has_wildcard) return;
  std::lock_guard io(io_mu);
  const bool due = clock.now() - last_sweep >= options.evict_interval;
  if (due || wildcard_live.load(std::memory_order_relaxed) > options.max_wildcard_ledgers) (void)evict_locked(clock.now());
}

void BudgetManager::Impl::record_alerts(const std::vector<BudgetAlert>& alerts) {
  if (alerts.empty()) return;
  {
    std::lock_guard lk(alerts_mu);
    for (const auto& a : alerts) {
      alert_log.push_back(a);
      while (alert_log.size() > options.max_alerts_kept) alert_log.pop_front();
    }
  }
  if (options.on_alert)
    for (const auto& a : alerts) options.on_alert(a);
}

void BudgetManager::Impl::log(const std::string& msg) const {
  if (options.log) options.log(msg);
  else std::fprintf(stderr, "modelux budget: %s\n", msg.c_str());
}

BudgetManager::Impl::~Impl() {
  bg_stop.stop();
  if (bg.joinable()) bg.join();
  if (db) (void)flush_store();
  close_store();
  close_redis();
}

// ---- BudgetManager --------------------------------------------------------------------------

BudgetManager::BudgetManager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BudgetManager::~BudgetManager() = default;

namespace {

/// The derived limits of one definition (nano-dollar thresholds, rolling bucket, time zone).
Result<std::unique_ptr<BudgetEntry>> make_entry(BudgetSpec spec) {
  auto e = std::make_unique<BudgetEntry>();
  e->spec = std::move(spec);
  auto tz = budget_detail::TimeZone::parse(e->spec.timezone);
  if (!tz) return fail(tz.error());
  e->tz = std::move(*tz);
  if (const auto& lim = e->spec.limit_usd) {
    e->limit_nusd = to_nusd(*lim);
    if (e->spec.soft_percent && !e->spec.downgrade_to.empty()) e->soft_nusd = to_nusd(*lim * *e->spec.soft_percent / 100);
    if (e->limit_nusd > 0)
      for (double pct : e->spec.alerts) e->alert_nusd.push_back(to_nusd(*lim * pct / 100));
  }
  if (e->spec.window == BudgetWindowKind::rolling)
    e->bucket_ms = std::max<std::int64_t>(1, e->spec.window_s * 1000 / kRollingBuckets);
  return e;
}

/// Same ledgers (same keys, same periods): only limits, thresholds and policies differ.
bool same_identity(const BudgetSpec& a, const BudgetSpec& b) noexcept {
  return a.name == b.name && a.scope == b.scope && a.scope_value == b.scope_value && a.tag_key == b.tag_key &&
         a.window == b.window && a.window_s == b.window_s && a.timezone == b.timezone;
}

}  // namespace

BudgetSlot* BudgetManager::Impl::add_slot(std::unique_ptr<BudgetEntry> entry) {
  auto slot = std::make_unique<BudgetSlot>();
  slot->entry_.store(entry.get(), std::memory_order_release);
  const BudgetSpec& s = entry->spec;
  if (slot->wildcard()) has_wildcard = true;
  else slot->single = std::make_unique<BudgetLedger>(*entry, s.scope == BudgetScopeKind::all ? std::string("*") : s.scope_value);
  owned_entries.push_back(std::move(entry));
  owned_slots.push_back(std::move(slot));
  return owned_slots.back().get();
}

Result<std::unique_ptr<BudgetManager>> BudgetManager::create(const Json& budgets, const Catalog& catalog,
                                                            const Clock& clock, BudgetOptions options) {
  auto specs = parse_budgets(budgets);
  if (!specs) return fail(specs.error());
  if (!options.redis_url.empty() && options.instance_id.empty())
    return fail(ErrorKind::invalid_config, "a Redis-shared budget needs an instance id", "instance_id");
  if (options.instance_id.find('|') != std::string::npos)
    return fail(ErrorKind::invalid_config, "instance id must not contain '|'", "instance_id");
  auto impl = std::make_unique<Impl>(catalog, clock, std::move(options));
  impl->specs = *specs;
  auto list = std::make_unique<Impl::SlotList>();
  for (auto& s : *specs) {
    auto entry = make_entry(std::move(s));
    if (!entry) return fail(entry.error());
    BudgetSlot* slot = impl->add_slot(std::move(*entry));
    if (!slot->wildcard()) impl->all_ledgers.push_back(slot->single.get());
    list->push_back(slot);
  }
  impl->slots.store(list.get(), std::memory_order_release);
  impl->owned_lists.push_back(std::move(list));
  const Instant now = clock.now();
  if (!impl->options.sqlite_path.empty()) {
    if (auto r = impl->open_store(); !r) return fail(r.error());
    if (auto r = impl->load_store(now); !r) return fail(r.error());
  }
  if (!impl->options.redis_url.empty()) {
    if (auto r = impl->parse_redis_url(); !r) return fail(r.error());
    (void)impl->sync_redis();  // best effort: an unreachable Redis must not stop the instance
  }
  const bool backend = !impl->options.sqlite_path.empty() || !impl->options.redis_url.empty();
  if ((backend || impl->has_wildcard) && impl->options.sync_interval.count() > 0) {
    Impl* p = impl.get();
    impl->bg = std::thread([p] {
      Instant next = p->clock.now() + p->options.sync_interval;
      while (!p->clock.sleep_until(next, p->bg_stop)) {
        if (p->db) (void)p->flush_store();
        if (!p->options.redis_url.empty()) (void)p->sync_redis();
        p->maintain();
        // From now, not from `next`: a long cycle (a Redis timeout) is not followed by a burst.
        next = p->clock.now() + p->options.sync_interval;
      }
    });
  }
  return std::unique_ptr<BudgetManager>(new BudgetManager(std::move(impl)));
}

Result<Admission> BudgetManager::admit(const CallContext& ctx, const ModelInfo* model, std::int64_t est_input_tokens,
                                       std::int64_t est_output_tokens, Instant now, bool output_bounded,
                                       bool allow_downgrade) {
  Impl& I = *impl_;
  Admission a;
  a.open = true;
  const bool priced = model && model->priced;
  if (model) a.model = model->id;
  const std::int64_t est_tokens = std::max<std::int64_t>(0, est_input_tokens) + std::max<std::int64_t>(0, est_output_tokens);
  // Price per token is per_m / 1e6 USD = per_m * 1e3 nano-dollars: no division on the hot path.
  const std::int64_t est_nusd =
      priced ? round_i64(static_cast<double>(std::max<std::int64_t>(0, est_input_tokens)) * model->input_per_m * 1e3 +
                         static_cast<double>(std::max<std::int64_t>(0, est_output_tokens)) * model->output_per_m * 1e3)
             : 0;
  const bool zero_cost = priced && est_nusd == 0;
  // What must fit under a USD cap: the whole estimate when max_tokens bounds the answer, else
  // only the input (the output guess reserves at most the headroom left, below).
  const std::int64_t est_in_nusd =
      priced ? round_i64(static_cast<double>(std::max<std::int64_t>(0, est_input_tokens)) * model->input_per_m * 1e3) : 0;
  const std::int64_t must_fit_nusd = output_bounded ? est_nusd : est_in_nusd;

  // Wildcard ledgers come back pinned (not evictable) until their reservation is in place
  // (which then keeps them) or refused and reported.
  auto unpin = [&a] {
    for (auto& h : a.holds)
      if (h.ledger->wildcard) h.ledger->pins.fetch_sub(1, std::memory_order_release);
  };
  for (BudgetSlot* slot : I.live_slots()) {
    const std::string* v = scope_value_of(slot->entry().spec, ctx);
    if (!v) continue;
    a.holds.push_back(BudgetHold{I.ledger_for(*slot, *v, now), est_nusd, est_tokens});
  }
  if (a.holds.empty()) {
    a.reserved_usd = from_nusd(est_nusd);
    return a;
  }

  // Why a request was refused: recorded under the lock, formatted after it is released.
  enum class Why : std::uint8_t { none, unpriced, usd, tokens, requests };
  Why why = Why::none;
  const BudgetLedger* why_ledger = nullptr;
  BudgetTotals why_committed;
  std::int64_t why_period_ms = 0;
  std::int64_t why_outage_cap = -1;
  Nanos why_retry{0};
  std::string blocked_downgrade;  // a USD block turned into a downgrade (see admit's contract)
  std::string blocked_downgrade_budget;
  double blocked_downgrade_percent = 0;
  std::vector<BudgetAlert> fired;
  {
    LedgerLocks locks(a.holds);
    for (auto& h : a.holds) {
      BudgetLedger& l = *h.ledger;
      if (now >= l.period_end || !l.rolled_once) l.roll(now, I.wall_of(now));
      l.last_use = now;
      const BudgetSpec& s = l.entry().spec;
      const BudgetTotals c = l.committed();
      if (s.limit_usd) {
        if (!priced) {
          if (s.unknown_price == UnknownPricePolicy::block) why = Why::unpriced;
          else a.unpriced = true;
        } else if (!zero_cost && c.nusd + must_fit_nusd > (l.outage_cap_nusd < 0 ? l.entry().limit_nusd
                                                                                   : std::min(l.entry().limit_nusd, l.outage_cap_nusd))) {
          if (allow_downgrade && !s.downgrade_to.empty() && !(model && model->id == s.downgrade_to) &&
              blocked_downgrade.empty()) {
            // The downgrade target's own estimate may well fit: reroute rather than block.
            blocked_downgrade = s.downgrade_to;
            blocked_downgrade_budget = s.name;
            blocked_downgrade_percent = percent_of(c.nusd, l.entry().limit_nusd);
            continue;
          }
          why = Why::usd;
          check_alerts(l, c.nusd, true, [&] { return I.wall_of(now); }, fired);
        }
      }
      if (why == Why::none && s.limit_tokens && c.tokens + est_tokens > *s.limit_tokens) why = Why::tokens;
      if (why == Why::none && s.limit_requests && c.requests + 1 > *s.limit_requests) why = Why::requests;
      if (why != Why::none) {
        why_ledger = &l;
        why_committed = c;
        why_period_ms = l.periods.empty() ? 0 : l.periods.back().start_ms;
        why_outage_cap = l.outage_cap_nusd;
        why_retry = std::max<Nanos>(l.period_end - now, std::chrono::milliseconds(1));
        break;
      }
    }
    if (why == Why::none && blocked_downgrade.empty()) {
      for (auto& h : a.holds) {
        BudgetLedger& l = *h.ledger;
        if (!output_bounded && l.entry().limit_nusd > 0 && h.nusd > est_in_nusd) {
          // The output guess reserves no more than the cap's headroom.
          const std::int64_t headroom = std::max<std::int64_t>(0, l.entry().limit_nusd - l.committed().nusd - est_in_nusd);
          h.nusd = est_in_nusd + std::min(h.nusd - est_in_nusd, headroom);
        }
        l.reserved += BudgetTotals{h.nusd, h.tokens, 1};
        if (l.entry().limit_nusd <= 0) continue;
        const BudgetSpec& s = l.entry().spec;
        // An output guess (no max_tokens) is held, not spent: on its own it neither asks for a
        // downgrade nor fires an alert.
        const std::int64_t committed = output_bounded ? l.committed().nusd : l.committed().nusd - (h.nusd - est_in_nusd);
        if (l.entry().soft_nusd >= 0 && committed >= l.entry().soft_nusd && a.downgrade_to.empty() &&
            !(model && model->id == s.downgrade_to)) {
          a.downgrade_to = s.downgrade_to;
          a.downgrade_budget = s.name;
          a.downgrade_percent = percent_of(committed, l.entry().limit_nusd);
        }
        if (!l.entry().alert_nusd.empty()) check_alerts(l, committed, false, [&] { return I.wall_of(now); }, fired);
      }
    }
  }
  if (why == Why::none) unpin();
  if (!fired.empty()) I.record_alerts(fired);
  if (why == Why::none && !blocked_downgrade.empty()) {
    // Nothing was reserved: the caller reroutes and admits the downgrade target afresh.
    Admission d;
    d.model = a.model;
    d.downgrade_to = std::move(blocked_downgrade);
    d.downgrade_budget = std::move(blocked_downgrade_budget);
    d.downgrade_percent = blocked_downgrade_percent;
    d.alerts = std::move(fired);
    return d;
  }
  if (why != Why::none) {
    const BudgetLedger& l = *why_ledger;
    const BudgetSpec& s = l.entry().spec;
    const BudgetTotals& c = why_committed;
    std::string reason;
    switch (why) {
      case Why::unpriced:
        reason = fmt::format("model '{}' has no known price and the budget's unknown_price policy is block",
                             model ? model->id : std::string("(unknown)"));
        break;
      case Why::usd:
        reason = fmt::format("{} committed + {} estimated exceeds the {} limit", money(from_nusd(c.nusd)),
                             money(from_nusd(est_nusd)), money(*s.limit_usd));
        if (why_outage_cap >= 0 && why_outage_cap < l.entry().limit_nusd)
          reason += fmt::format(" (this instance's share while Redis is unreachable: {})", money(from_nusd(why_outage_cap)));
        break;
      case Why::tokens:
        reason = fmt::format("{} tokens committed + {} estimated exceeds the {} token limit", c.tokens, est_tokens,
                             *s.limit_tokens);
        break;
      case Why::requests:
        reason = fmt::format("{} requests reached the {} request limit", c.requests, *s.limit_requests);
        break;
      case Why::none: break;
    }
    std::string window(to_string(s.window));
    if (s.window == BudgetWindowKind::rolling) {
      window += fmt::format(" {}s window", s.window_s);
    } else {
      window += " window from " + budget_detail::format_utc(budget_detail::SysSeconds{seconds{why_period_ms / 1000}});
      if (s.timezone != "UTC") window += " " + s.timezone;
    }
    Error e;
    e.kind = ErrorKind::budget_exceeded;
    e.code = "budget_exceeded";
    e.message = fmt::format("budget '{}' ({}, {}) blocks this request: {}", s.name, scope_label_of(l), window, reason);
    // modelux's own refusal, not a provider's (e.provider stays empty); retrying helps only
    // once the window frees spend.
    e.status = 429;
    e.retry_after = std::chrono::duration_cast<Millis>(why_retry);
    if (e.retry_after->count() <= 0) e.retry_after = Millis{1};
    unpin();
    return fail(std::move(e));
  }
  a.reserved_usd = from_nusd(est_nusd);
  a.alerts = std::move(fired);
  return a;
}

std::vector<BudgetAlert> BudgetManager::settle(Admission& a, double actual_usd, const Usage& usage, Instant now) {
  std::vector<BudgetAlert> fired;
  if (!a.open) return fired;
  a.open = false;
  const std::int64_t actual = to_nusd(std::max(0.0, actual_usd));
  for (auto& h : a.holds) {
    BudgetLedger& l = *h.ledger;
    std::lock_guard lk(l.mu);
    l.reserved -= BudgetTotals{h.nusd, h.tokens, 1};
    if (now >= l.period_end) l.roll(now, impl_->wall_of(now));
    l.add_own(BudgetTotals{actual, usage.total(), 1});
    if (!l.entry().alert_nusd.empty())
      check_alerts(l, l.committed().nusd, false, [&] { return impl_->wall_of(now); }, fired);
  }
  if (!fired.empty()) impl_->record_alerts(fired);
  return fired;
}

void BudgetManager::release(Admission& a) {
  if (!a.open) return;
  a.open = false;
  for (auto& h : a.holds) {
    std::lock_guard lk(h.ledger->mu);
    h.ledger->reserved -= BudgetTotals{h.nusd, h.tokens, 1};
  }
}

BudgetStatus BudgetManager::status(const CallContext& ctx, Instant now) const {
  Impl& I = *impl_;
  BudgetStatus best;
  best.remaining_usd = std::numeric_limits<double>::infinity();
  bool found = false;
  for (BudgetSlot* slot : I.live_slots()) {
    const BudgetEntry& e = slot->entry();
    if (e.limit_nusd <= 0 && !e.spec.limit_usd) continue;
    const std::string* v = scope_value_of(e.spec, ctx);
    if (!v) continue;
    BudgetLedger* l = nullptr;
    std::int64_t committed = 0;
    if (!slot->wildcard()) {
      l = slot->single.get();
    } else if (I.db) {
      // An evicted value may have spend in the store: read it back (pinned while read).
      l = I.ledger_for(*slot, *v, now);
      {
        std::lock_guard lk(l->mu);
        if (now >= l->period_end || !l->rolled_once) l->roll(now, I.wall_of(now));
        committed = l->committed().nusd;
      }
      l->pins.fetch_sub(1, std::memory_order_release);
      l = nullptr;
    } else {
      // No store: a value without a ledger has no spend (only idle ledgers are evicted).
      std::shared_lock lk(slot->per_value_mu);  // held so the ledger cannot be evicted meanwhile
      auto it = slot->per_value.find(*v);
      if (it != slot->per_value.end()) {
        std::lock_guard g(it->second->mu);
        if (now >= it->second->period_end || !it->second->rolled_once) it->second->roll(now, I.wall_of(now));
        committed = it->second->committed().nusd;
      }
    }
    if (l) {
      std::lock_guard lk(l->mu);
      if (now >= l->period_end || !l->rolled_once) l->roll(now, I.wall_of(now));
      committed = l->committed().nusd;
    }
    const double pct = percent_of(committed, e.limit_nusd);
    if (!found || pct > best.percent) {
      found = true;
      best.spent_usd = from_nusd(committed);
      best.limit_usd = *e.spec.limit_usd;
      best.remaining_usd = std::max(0.0, best.limit_usd - best.spent_usd);
      best.percent = pct;
    }
  }
  return best;
}

Json BudgetManager::snapshot(Instant now) const {
  Impl& I = *impl_;
  Json out = Json::object();
  Json list = Json::array();
  std::shared_lock lm(I.list_mu);  // no ledger is freed while this iterates
  for (BudgetLedger* l : I.ledgers()) {
    std::lock_guard lk(l->mu);
    if (l->evicted) continue;
    if (now >= l->period_end || !l->rolled_once) l->roll(now, I.wall_of(now));
    const BudgetSpec& s = l->entry().spec;
    const BudgetTotals c = l->committed();
    Json j;
    j["name"] = s.name;
    j["scope"] = scope_label_of(*l);
    j["window"] = std::string(to_string(s.window));
    j["window_label"] = l->window_label();
    if (!l->periods.empty()) j["window_start_ms"] = l->periods.front().start_ms;
    if (s.window != BudgetWindowKind::rolling)  // calendar windows end at a known instant (forecasts use it)
      j["window_end_ms"] = l->window_end_ms;  // exact: wall_of(period_end) would jitter by the clocks' read gap
    j["limit_usd"] = s.limit_usd ? Json(*s.limit_usd) : Json(nullptr);
    j["limit_tokens"] = s.limit_tokens ? Json(*s.limit_tokens) : Json(nullptr);
    j["limit_requests"] = s.limit_requests ? Json(*s.limit_requests) : Json(nullptr);
    j["spent_usd"] = from_nusd(l->own_sum.nusd + l->remote_sum.nusd);
    j["own_spent_usd"] = from_nusd(l->own_sum.nusd);
    j["fleet_spent_usd"] = from_nusd(l->remote_sum.nusd);
    j["reserved_usd"] = from_nusd(l->reserved.nusd + l->remote_reserved.nusd);
    j["committed_usd"] = from_nusd(c.nusd);
    j["percent"] = l->entry().limit_nusd > 0 ? percent_of(c.nusd, l->entry().limit_nusd) : 0.0;
    j["tokens"] = l->own_sum.tokens + l->remote_sum.tokens;
    j["requests"] = l->own_sum.requests + l->remote_sum.requests;
    j["in_flight"] = l->reserved.requests;
    j["fleet_instances"] = l->fleet_instances;
    j["outage_cap_usd"] = l->outage_cap_nusd >= 0 ? Json(from_nusd(l->outage_cap_nusd)) : Json(nullptr);
    Json fired = Json::array();
    for (std::size_t i = 0; i < s.alerts.size(); ++i)
      if (l->alerts_fired & (1u << i)) fired.push_back(s.alerts[i]);
    j["alerts_fired"] = std::move(fired);
    list.push_back(std::move(j));
  }
  out["budgets"] = std::move(list);
  lm.unlock();
  const BudgetLedgerStats st = ledger_stats();
  out["ledgers"] = Json{{"live", st.live},
                        {"wildcard_live", st.wildcard_live},
                        {"max_wildcard", st.max_wildcard},
                        {"evicted", st.evicted},
                        {"evicted_with_spend", st.evicted_with_spend},
                        {"reloaded", st.reloaded},
                        {"over_bound", st.over_bound}};
  out["redis"] = I.redis_status();
  out["sqlite"] = Json{{"configured", !I.options.sqlite_path.empty()}};
  return out;
}

std::vector<BudgetAlert> BudgetManager::alerts() const {
  std::lock_guard lk(impl_->alerts_mu);
  return {impl_->alert_log.begin(), impl_->alert_log.end()};
}

Result<void> BudgetManager::flush() {
  if (!impl_->db) return {};
  return impl_->flush_store();
}

Result<void> BudgetManager::sync_now() {
  if (impl_->options.redis_url.empty()) return {};
  return impl_->sync_redis();
}

bool BudgetManager::redis_connected() const noexcept { return impl_->redis_up.load(std::memory_order_acquire); }

std::size_t BudgetManager::evict(Instant now) {
  std::lock_guard io(impl_->io_mu);
  return impl_->evict_locked(now);
}

BudgetLedgerStats BudgetManager::ledger_stats() const noexcept {
  const Impl& I = *impl_;
  BudgetLedgerStats s;
  s.wildcard_live = I.wildcard_live.load(std::memory_order_relaxed);
  std::size_t fixed = 0;
  for (const BudgetSlot* slot : I.live_slots())
    if (!slot->wildcard()) ++fixed;
  s.live = fixed + s.wildcard_live;
  s.max_wildcard = I.options.max_wildcard_ledgers;
  s.evicted = I.evicted_total.load(std::memory_order_relaxed);
  s.evicted_with_spend = I.evicted_spend.load(std::memory_order_relaxed);
  s.reloaded = I.reloaded.load(std::memory_order_relaxed);
  s.over_bound = I.over_bound.load(std::memory_order_relaxed);
  return s;
}

std::vector<BudgetSpec> BudgetManager::specs() const {
  std::lock_guard lk(impl_->specs_mu);
  return impl_->specs;
}

namespace {
bool same_terms(const BudgetSpec& a, const BudgetSpec& b) noexcept {
  return a.limit_usd == b.limit_usd && a.limit_tokens == b.limit_tokens && a.limit_requests == b.limit_requests &&
         a.soft_percent == b.soft_percent && a.downgrade_to == b.downgrade_to && a.alerts == b.alerts &&
         a.unknown_price == b.unknown_price;
}
}  // namespace

Result<BudgetUpdate> BudgetManager::update(const Json& budgets, Instant now) {
  Impl& I = *impl_;
  auto parsed = parse_budgets(budgets);
  if (!parsed) return fail(parsed.error());
  // Every entry is built before anything changes: a bad definition changes nothing.
  std::vector<std::unique_ptr<BudgetEntry>> entries;
  for (auto& s : *parsed) {
    auto e = make_entry(s);
    if (!e) return fail(e.error());
    entries.push_back(std::move(*e));
  }
  // Spend of budgets about to be removed (or re-keyed) reaches the store first.
  if (I.db)
    if (auto r = I.flush_store(); !r) return fail(r.error());
  std::lock_guard io(I.io_mu);
  const WallTime wall = I.wall_of(now);
  const Impl::SlotList& old = I.live_slots();
  auto list = std::make_unique<Impl::SlotList>();
  std::vector<BudgetLedger*> fresh;  // new fixed ledgers, listed for flush / sync / snapshot
  BudgetUpdate out;
  for (auto& e : entries) {
    const std::string name = e->spec.name;
    BudgetSlot* prev = nullptr;
    for (BudgetSlot* s : old)
      if (s->entry().spec.name == name) prev = s;
    if (prev && same_identity(prev->entry().spec, e->spec)) {
      if (same_terms(prev->entry().spec, e->spec)) {
        ++out.unchanged;
      } else {
        const BudgetEntry& before = prev->entry();
        const bool rearm = before.limit_nusd != e->limit_nusd || before.alert_nusd != e->alert_nusd;
        const BudgetEntry* ne = e.get();
        I.owned_entries.push_back(std::move(e));
        // The slot first: a wildcard ledger created from now on starts with the new entry; the
        // ones already there are switched below (ledger_for creates under the exclusive lock).
        prev->entry_.store(ne, std::memory_order_release);
        std::vector<BudgetLedger*> ls;
        if (prev->single) ls.push_back(prev->single.get());
        {
          std::shared_lock lk(prev->per_value_mu);
          for (auto& [v, l] : prev->per_value) ls.push_back(l.get());
        }
        for (BudgetLedger* l : ls) {
          std::lock_guard g(l->mu);
          l->set_entry(*ne);
          if (rearm) l->alerts_fired = 0;  // thresholds of the new cap fire afresh when crossed
        }
        out.changed.push_back(name);
      }
      list->push_back(prev);
      continue;
    }
    BudgetSlot* slot = I.add_slot(std::move(e));
    if (slot->single) {
      // Like a restart: the budget's persisted rows of the live window count.
      std::vector<StoredRow> rows;
      if (I.load_rows(*slot, slot->single->scope_value, now, rows) && !rows.empty()) {
        BudgetLedger& l = *slot->single;
        std::lock_guard g(l.mu);
        for (const StoredRow& r : rows) I.apply_stored(l, r, now, wall);
        const std::int64_t c = l.own_sum.nusd;
        for (std::size_t i = 0; i < l.entry().alert_nusd.size(); ++i)
          if (c >= l.entry().alert_nusd[i]) l.alerts_fired |= 1u << i;
        l.flushed_version = l.version;
      }
      fresh.push_back(slot->single.get());
    }
    (prev ? out.changed : out.added).push_back(name);
    list->push_back(slot);
  }
  // Retire the slots no longer listed (removed, or replaced by a new identity).
  std::vector<BudgetLedger*> gone;
  std::size_t wildcard_gone = 0;
  for (BudgetSlot* s : old) {
    if (std::find(list->begin(), list->end(), s) != list->end()) continue;
    if (std::none_of(list->begin(), list->end(), [&](BudgetSlot* n) { return n->entry().spec.name == s->entry().spec.name; }))
      out.removed.push_back(s->entry().spec.name);
    std::unique_lock lk(s->per_value_mu);
    s->retired = true;
    if (s->single) gone.push_back(s->single.get());
    for (auto& [v, l] : s->per_value) gone.push_back(l.get()), ++wildcard_gone;
  }
  std::sort(gone.begin(), gone.end());
  {
    std::unique_lock lm(I.list_mu);  // no snapshot() is iterating
    std::lock_guard g(I.all_mu);
    std::erase_if(I.all_ledgers, [&](BudgetLedger* l) { return std::binary_search(gone.begin(), gone.end(), l); });
    I.all_ledgers.insert(I.all_ledgers.end(), fresh.begin(), fresh.end());
  }
  I.wildcard_live.fetch_sub(wildcard_gone, std::memory_order_relaxed);
  I.slots.store(list.get(), std::memory_order_release);
  I.owned_lists.push_back(std::move(list));
  {
    std::lock_guard lk(I.specs_mu);
    I.specs = std::move(*parsed);
  }
  return out;
}

Result<std::size_t> BudgetManager::reset(const std::string& name, Instant now) {
  Impl& I = *impl_;
  // io_mu: no flush or Redis sync runs between deleting the rows and zeroing the ledgers, and
  // no eviction frees a ledger under us.
  std::lock_guard io(I.io_mu);
  BudgetSlot* slot = nullptr;
  for (BudgetSlot* s : I.live_slots())
    if (s->entry().spec.name == name) slot = s;
  if (!slot) return fail(ErrorKind::not_found, "no budget '" + name + "' is running here");
  if (auto r = I.delete_stored(name); !r) return fail(r.error());
  const WallTime wall = I.wall_of(now);
  std::vector<BudgetLedger*> ledgers;
  if (slot->single) ledgers.push_back(slot->single.get());
  {
    std::shared_lock lk(slot->per_value_mu);
    for (auto& [v, l] : slot->per_value) ledgers.push_back(l.get());
  }
  for (BudgetLedger* l : ledgers) {
    std::lock_guard lk(l->mu);
    l->roll(now, wall);
    for (auto& p : l->periods) {
      p.own = {};
      p.remote = {};
    }
    l->own_sum = {};
    l->remote_sum = {};
    l->alerts_fired = 0;
    l->outage_cap_nusd = -1;
    ++l->version;
    l->flushed_version = l->version;  // nothing of the reset ledger is left to write
  }
  return ledgers.size();
}

}  // namespace modelux
