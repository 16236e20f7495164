// Routing-mode replay: stored traces → fitted targets → the Simulator → a report.
//
// 1. Load: one column-only scan of the slug's traces (TraceStore::scan, no JSON parsing),
//    newest `limit` of the window, replayed oldest first.
// 2. Fit: every recorded attempt is one sample of its target's behaviour (outcome, latency,
//    TTFT); a simulated call draws one uniformly. Drawing recorded samples keeps every tail
//    and the correlation between error class and latency (a 429 is fast, a timeout is slow)
//    that a parametric fit would smooth away. Attempts that say nothing about the target
//    (cancelled by us, refused by a budget, our own failures) are left out.
// 3. Run: each request arrives at its recorded offset with its recorded inputs; the request
//    text is sized so the token estimate budgets reserve on matches the recorded prompt.
// Cost: O(traces) memory for the summaries and rows; the simulation is O(log E) per event.
#include "modelux/replay.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "modelux/budget.hpp"
#include "modelux/simulate.hpp"
#include "modelux/trace.hpp"
#include "replay/replay_impl.hpp"
#include "router/resolver.hpp"

namespace modelux {

std::string_view to_string(ReplayMode m) noexcept { return m == ReplayMode::routing ? "routing" : "responses"; }
std::optional<ReplayMode> replay_mode_from_string(std::string_view s) noexcept {
  if (s == "routing") return ReplayMode::routing;
  if (s == "responses") return ReplayMode::responses;
  return std::nullopt;
}

namespace replay_detail {

double ms(Nanos n) { return static_cast<double>(n.count()) / 1e6; }

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::size_t k = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  k = std::clamp<std::size_t>(k, 1, v.size()) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

void finish_side(ReplaySide& s, std::vector<double>& lat, std::vector<double>& ttft) {
  s.success_rate = s.requests ? static_cast<double>(s.succeeded) / static_cast<double>(s.requests) : 0;
  s.failover_rate = s.requests ? static_cast<double>(s.failovers) / static_cast<double>(s.requests) : 0;
  s.cost_per_request_usd = s.requests ? s.cost_usd / static_cast<double>(s.requests) : 0;
  s.p50_ms = percentile(lat, 0.50);
  s.p95_ms = percentile(lat, 0.95);
  s.p99_ms = percentile(lat, 0.99);
  s.ttft_samples = ttft.size();
  s.ttft_p50_ms = percentile(ttft, 0.50);
  s.ttft_p95_ms = percentile(ttft, 0.95);
  s.ttft_p99_ms = percentile(ttft, 0.99);
}

Result<std::string> normalize_slug(std::string_view slug) {
  std::string s(slug);
  if (!s.empty() && s[0] == '@') s.erase(0, 1);
  if (s.empty()) return fail(ErrorKind::bad_request, "replay needs a slug (--slug production)");
  return s;
}

Result<Json> candidate_routing_of(const Json& candidate, const std::string& slug) {
  if (!candidate.is_object())
    return fail(ErrorKind::invalid_config, "the candidate must be a JSON object (a routing config or a config document)");
  if (candidate.contains("routing")) {
    const Json& r = candidate["routing"];
    if (!r.is_object() || !r.contains(slug))
      return fail(ErrorKind::invalid_config, "the candidate config document has no routing config for '@" + slug +
                                                 "' ($.routing." + slug + ")");
    return r[slug];
  }
  return candidate;
}

Result<CandidateSetup> build_candidate(const ReplayOptions& o, const std::string& slug) {
  CandidateSetup c;
  auto cfg = std::make_unique<Config>();
  if (o.candidate.is_object() && (o.candidate.contains("routing") || o.candidate.contains("providers"))) {
    auto parsed = Config::from_json(o.candidate);
    if (!parsed) {
      Error e = parsed.error();
      e.message = "the candidate does not compile: " + e.message;
      return fail(std::move(e));
    }
    *cfg = std::move(*parsed);
  } else {
    if (o.base) {
      *cfg = *o.base;
    } else {
      auto d = Config::embedded_defaults();
      if (!d) return fail(d.error());
      *cfg = std::move(*d);
    }
  }
  auto routing = candidate_routing_of(o.candidate, slug);
  if (!routing) return fail(routing.error());
  cfg->routing[slug] = *routing;
  c.routing = *routing;
  auto table = RouteTable::build(*cfg, nullptr);
  if (!table) {
    Error e = table.error();
    e.kind = ErrorKind::invalid_config;
    e.message = "the candidate does not compile: " + e.message;
    return fail(std::move(e));
  }
  c.policy = (*table)->lookup("@" + slug);
  if (!c.policy) return fail(ErrorKind::invalid_config, "the candidate has no routing config for '@" + slug + "'");
  c.table = std::move(*table);
  c.config = std::move(cfg);
  return c;
}

Result<std::vector<TraceSummary>> load_traces(const ReplayOptions& o, const std::string& slug, TraceStore& store) {
  TraceQuery q;
  q.config = "@" + slug;
  q.since = o.since;
  q.until = o.until;
  q.limit = o.limit;
  q.newest_first = true;  // the newest `limit`, then replayed oldest first
  std::vector<TraceSummary> traces;
  auto n = store.scan(q, [&](TraceSummary&& t) { traces.push_back(std::move(t)); });
  if (!n) return fail(n.error());
  if (traces.empty()) {
    auto configs = store.configs();
    if (!configs) return fail(configs.error());
    if (configs->empty())
      return fail(ErrorKind::not_found, "trace store '" + store.path() + "' has no traces: nothing to replay");
    std::string have;
    for (std::size_t i = 0; i < configs->size() && i < 10; ++i)
      have += (i ? ", " : "") + (*configs)[i].first + " (" + std::to_string((*configs)[i].second) + ")";
    return fail(ErrorKind::not_found, "no traces for '@" + slug + "' in trace store '" + store.path() +
                                          (o.since ? "' in the window" : "'") + "; the store has: " + have);
  }
  std::reverse(traces.begin(), traces.end());
  return traces;
}

}  // namespace replay_detail

using namespace replay_detail;

namespace {

/// Whether an attempt's outcome says something about its target.
bool informative(const AttemptSummary& a) {
  if (a.ok) return true;
  auto k = error_kind_from_string(a.outcome);
  if (!k) return false;
  switch (*k) {
    case ErrorKind::cancelled:
    case ErrorKind::budget_exceeded:
    case ErrorKind::local_resource_exhausted:
    case ErrorKind::no_route:
    case ErrorKind::invalid_config:
    case ErrorKind::internal:
      return false;
    default:
      return true;
  }
}

/// TTFT is measured only on streamed attempts (a non-streamed answer records its whole
/// latency as TTFT). A sample from a non-streamed request gets the target's median
/// TTFT/latency ratio over its streamed answers, so a streamed replay of it is plausible; a
/// target never streamed keeps TTFT = latency.
void fill_ttft(EmpiricalOutcomes& e, const std::vector<bool>& streamed) {
  std::vector<double> ratios;
  for (std::size_t i = 0; i < e.samples.size(); ++i) {
    const auto& s = e.samples[i];
    if (streamed[i] && s.ok && s.latency_ms > 0 && s.ttft_ms > 0) ratios.push_back(s.ttft_ms / s.latency_ms);
  }
  const double ratio = ratios.empty() ? 1.0 : percentile(ratios, 0.5);
  for (std::size_t i = 0; i < e.samples.size(); ++i)
    if (!streamed[i] || e.samples[i].ttft_ms <= 0)
      e.samples[i].ttft_ms = static_cast<float>(e.samples[i].latency_ms * ratio);
}

/// Each stored request's own informative attempts, in order: (target, index into its fit).
struct OwnOutcomes {
  std::vector<std::uint32_t> offset;  ///< request i's entries are [offset[i], offset[i + 1])
  std::vector<std::pair<const std::string*, std::size_t>> entries;
};

std::map<std::string, std::shared_ptr<EmpiricalOutcomes>> fit_targets(const std::vector<TraceSummary>& traces,
                                                                      OwnOutcomes& own) {
  std::map<std::string, std::shared_ptr<EmpiricalOutcomes>> fits;
  std::map<std::string, std::vector<bool>> streamed;
  std::string key;
  own.offset.assign(1, 0);
  for (const auto& t : traces) {
    for (const auto& a : t.attempts) {
      if (!informative(a)) continue;
      key.assign(a.provider).append("/").append(a.model);
      auto& f = fits[key];
      if (!f) f = std::make_shared<EmpiricalOutcomes>();
      EmpiricalOutcomes::Sample s;
      s.latency_ms = static_cast<float>(ms(a.duration));
      s.ttft_ms = static_cast<float>(ms(a.ttft));
      s.ok = a.ok;
      s.status = a.status;
      if (!a.ok) {
        s.error = error_kind_from_string(a.outcome).value_or(ErrorKind::server_error);
        s.timed_out = s.error == ErrorKind::timeout;
      }
      f->samples.push_back(s);
      streamed[key].push_back(t.stream);
      own.entries.emplace_back(&fits.find(key)->first, f->samples.size() - 1);
    }
    own.offset.push_back(static_cast<std::uint32_t>(own.entries.size()));
  }
  for (auto& [k, f] : fits) fill_ttft(*f, streamed[k]);
  return fits;
}

TargetFit describe_fit(const std::string& key, const EmpiricalOutcomes* e) {
  TargetFit f;
  f.target = key;
  if (!e || e->samples.empty()) return f;
  f.fitted = true;
  f.samples = e->samples.size();
  std::vector<double> lat;
  std::size_t ok = 0, rl = 0, to = 0, other = 0;
  for (const auto& s : e->samples) {
    if (s.ok) {
      ++ok;
      lat.push_back(s.latency_ms);
    } else if (s.timed_out) {
      ++to;
    } else if (s.error == ErrorKind::rate_limited) {
      ++rl;
    } else {
      ++other;
    }
  }
  const double n = static_cast<double>(e->samples.size());
  f.ok_rate = static_cast<double>(ok) / n;
  f.rate_limited_rate = static_cast<double>(rl) / n;
  f.timeout_rate = static_cast<double>(to) / n;
  f.error_rate = static_cast<double>(other) / n;
  f.p50_ms = percentile(lat, 0.5);
  f.p95_ms = percentile(lat, 0.95);
  return f;
}

std::int64_t median_of(std::vector<std::int64_t> v, std::int64_t fallback) {
  if (v.empty()) return fallback;
  auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

std::size_t ok_attempts(const TraceSummary& t) {
  std::size_t n = 0;
  for (const auto& a : t.attempts) n += a.ok ? 1 : 0;
  return std::max<std::size_t>(1, n);
}

/// The recorded side, straight from the traces.
ReplaySide recorded_side(const std::vector<TraceSummary>& traces, Nanos total_budget) {
  ReplaySide s;
  std::vector<double> lat, ttft;
  lat.reserve(traces.size());
  for (const auto& t : traces)
    add_sample(s,
               {.ok = t.ok, .stream = t.stream, .served_provider = t.served_provider, .served_model = t.served_model,
                .error_kind = t.error_kind, .ttft = t.ttft, .total = t.total, .attempts = t.attempts.size(),
                .downgraded = t.downgraded, .cost_usd = t.cost_usd},
               lat, ttft, total_budget);
  finish_side(s, lat, ttft);
  return s;
}

}  // namespace

void replay_detail::add_sample(ReplaySide& s, const SideSample& t, std::vector<double>& lat, std::vector<double>& ttft,
                                Nanos total_budget) {
  ++s.requests;
  if (t.ok) {
    ++s.succeeded;
    ++s.routes[std::string(t.served_provider) + "/" + std::string(t.served_model)];
    if (t.stream && t.ttft.count() > 0) ttft.push_back(ms(t.ttft));
  } else {
    ++s.errors[t.error_kind.empty() ? std::string("unknown") : std::string(t.error_kind)];
    if (t.error_kind == "budget_exceeded") ++s.budget_blocks;
  }
  if (t.attempts > 1) ++s.failovers;
  if (t.downgraded) ++s.budget_downgrades;
  if (total_budget.count() > 0 && t.total > total_budget) ++s.total_budget_violations;
  s.cost_usd += t.cost_usd;
  lat.push_back(ms(t.total));
}

Result<ReplayReport> replay(const ReplayOptions& o) {
  const auto wall0 = std::chrono::steady_clock::now();
  auto slug = normalize_slug(o.slug);
  if (!slug) return fail(slug.error());
  if (o.mode == ReplayMode::responses) return replay_responses(o, *slug);

  auto cand = build_candidate(o, *slug);
  if (!cand) return fail(cand.error());
  auto store = TraceStore::open(o.store_path, TraceStore::Mode::read_only);
  if (!store) return fail(store.error());
  auto loaded = load_traces(o, *slug, **store);
  if (!loaded) return fail(loaded.error());
  const std::vector<TraceSummary>& traces = *loaded;

  ReplayReport rep;
  rep.mode = ReplayMode::routing;
  rep.slug = "@" + *slug;
  rep.store = o.store_path;
  rep.traces = traces.size();
  rep.from = traces.front().time;
  rep.to = traces.back().time;
  rep.seed = o.seed;

  // The current config's total budget, for total-budget violations of the recorded side: the
  // base config's slug when it has one, else the candidate's.
  Nanos current_budget = cand->policy->total_budget();
  if (o.base) {
    auto it = o.base->routing.find(*slug);
    if (it != o.base->routing.end() && it->second.is_object() && it->second.contains("total_budget_ms") &&
        it->second["total_budget_ms"].is_number())
      current_budget = std::chrono::milliseconds(it->second["total_budget_ms"].get<std::int64_t>());
  }
  rep.current = recorded_side(traces, current_budget);

  // Token counts: the served usage when recorded; a failed request's pre-routing estimate;
  // else the median of the requests that have one (noted).
  std::vector<std::int64_t> known_in, known_out;
  for (const auto& t : traces)
    if (t.ok && t.input_tokens > 0) {
      known_in.push_back(t.input_tokens / static_cast<std::int64_t>(ok_attempts(t)));
      known_out.push_back(t.output_tokens / static_cast<std::int64_t>(ok_attempts(t)));
    }
  const std::int64_t med_in = median_of(known_in, 500), med_out = median_of(known_out, 200);
  std::size_t guessed_in = 0;
  std::vector<std::int64_t> prompt(traces.size()), completion(traces.size());
  for (std::size_t i = 0; i < traces.size(); ++i) {
    const auto& t = traces[i];
    if (t.ok && t.input_tokens > 0) {
      prompt[i] = t.input_tokens / static_cast<std::int64_t>(ok_attempts(t));
      completion[i] = t.output_tokens / static_cast<std::int64_t>(ok_attempts(t));
    } else {
      prompt[i] = t.est_input_tokens > 0 ? t.est_input_tokens : (++guessed_in, med_in);
      completion[i] = med_out;
    }
  }
  if (guessed_in)
    rep.notes.push_back(std::to_string(guessed_in) + " requests carried no token counts (recorded before modelux "
                        "stored estimates); the median prompt of " + std::to_string(med_in) + " tokens was used");

  // Fit every target seen; every routable model of the candidate that was never seen gets the
  // defaults (flagged below if the candidate used it).
  OwnOutcomes own;
  auto fits = fit_targets(traces, own);
  Simulator sim;
  for (auto& [key, f] : fits) {
    SimTarget st;
    st.key = key;
    st.empirical = f;
    sim.add_target(std::move(st));
  }
  std::unordered_set<std::string> unseen;
  for (const auto& m : cand->table->models()) {
    std::string key = cand->table->provider_for(m) + "/" + m;
    if (fits.count(key)) continue;
    unseen.insert(key);
    SimTarget st;
    st.key = key;  // the Simulator's default latency distribution, no errors
    sim.add_target(std::move(st));
  }

  // Budgets on the replayed clock: windows follow the recorded wall time.
  ManualClock clock(traces.front().time);
  std::unique_ptr<BudgetManager> budgets;
  if (cand->config->budgets.is_array() && !cand->config->budgets.empty()) {
    BudgetOptions bo;
    bo.sync_interval = Millis{0};
    bo.log = [](const std::string&) {};
    auto b = BudgetManager::create(cand->config->budgets, cand->config->catalog, clock, bo);
    if (!b) {
      Error e = b.error();
      e.message = "the candidate's budgets do not compile: " + e.message;
      return fail(std::move(e));
    }
    budgets = std::move(*b);
  }

  // Each request's inputs, rebuilt on arrival (only requests in flight hold their text).
  const std::string model = "@" + *slug;
  SimOptions so;
  so.seed = o.seed;
  so.keep_traces = false;
  so.clock = &clock;
  so.budgets = budgets.get();
  so.budget = budgets.get();
  so.config = cand->config.get();
  so.health = cand->config->health;
  so.use_health = cand->config->health.enabled;
  const WallTime t0 = traces.front().time;
  so.arrival = [&](std::size_t i) {
    return std::chrono::duration_cast<Nanos>(traces[i].time - t0);
  };
  so.completion_tokens = [&](std::size_t i) { return completion[i]; };
  so.request = [&](std::size_t i) {
    ChatRequest r;
    r.model = model;
    r.stream = traces[i].stream;
    if (traces[i].max_tokens > 0) r.max_tokens = traces[i].max_tokens;
    Message u;
    u.role = "user";
    ContentPart p;
    // estimate_input_tokens: ~4 characters a token plus 7 tokens of framing for one message.
    p.text.assign(static_cast<std::size_t>(std::max<std::int64_t>(0, prompt[i] - 7)) * 4, 'x');
    u.content.push_back(std::move(p));
    r.messages.push_back(std::move(u));
    return r;
  };
  so.context = [&](std::size_t i) {
    const auto& t = traces[i];
    CallContext c;
    c.request_id = t.request_id;
    c.project = t.project;
    c.org = t.org;
    c.end_user = t.end_user;
    c.api_key_id = t.api_key_id;
    c.tags = t.tags;
    return c;
  };
  auto table = cand->table;
  so.lookup = [table](std::string_view name) { return table->lookup(name); };
  // Counterfactual pairing: when the candidate calls a target this request really called, it
  // gets what that target really did for it then; only calls the recording never made are
  // drawn from the target's fitted distribution. Replaying the deployed config then follows
  // the recording instead of a fresh draw of it (bursts and streaks included).
  so.recorded_outcome = [&](std::size_t i, std::string_view target, std::uint32_t nth)
      -> const EmpiricalOutcomes::Sample* {
    for (std::uint32_t j = own.offset[i]; j < own.offset[i + 1]; ++j) {
      const auto& [name, idx] = own.entries[j];
      if (*name == target && nth-- == 0) return &fits.find(*name)->second->samples[idx];
    }
    return nullptr;
  };
  if (o.progress) so.progress = [&](std::size_t done) { o.progress(done, traces.size()); };

  SimReport sr = sim.run(cand->policy, traces.size(), so);

  // The candidate side.
  ReplaySide& c = rep.candidate;
  std::vector<double> lat, ttft;
  lat.reserve(traces.size());
  const Nanos cand_budget = cand->policy->total_budget();
  for (std::size_t i = 0; i < sr.results.size(); ++i) {
    const SimRequest& r = sr.results[i];
    ++c.requests;
    if (r.ok) {
      ++c.succeeded;
      ++c.routes[r.served.key()];
      if (traces[i].stream && r.ttft.count() > 0) ttft.push_back(ms(r.ttft));
    } else {
      std::string kind(to_string(r.error.kind));
      ++c.errors[kind];
      if (r.error.kind == ErrorKind::budget_exceeded) ++c.budget_blocks;
    }
    if (r.failed_over) ++c.failovers;
    if (r.downgraded) ++c.budget_downgrades;
    if (cand_budget.count() > 0 && r.latency > cand_budget) ++c.total_budget_violations;
    c.cost_usd += r.cost_usd;
    lat.push_back(ms(r.latency));
    if (o.keep_rows) {
      const auto& t = traces[i];
      ReplayRow row;
      row.request_id = t.request_id;
      row.time = t.time;
      row.current_ok = t.ok;
      if (t.ok) row.current_target = t.served_provider + "/" + t.served_model;
      row.current_error = t.error_kind;
      row.current_latency_ms = ms(t.total);
      row.current_cost_usd = t.cost_usd;
      row.candidate_ok = r.ok;
      if (r.ok) row.candidate_target = r.served.key();
      else row.candidate_error = std::string(to_string(r.error.kind));
      row.candidate_latency_ms = ms(r.latency);
      row.candidate_ttft_ms = ms(r.ttft);
      row.candidate_cost_usd = r.cost_usd;
      row.candidate_attempts = r.attempts;
      row.candidate_downgraded = r.downgraded;
      rep.rows.push_back(std::move(row));
    }
  }
  finish_side(c, lat, ttft);

  for (const auto& [key, f] : fits) {
    TargetFit tf = describe_fit(key, f.get());
    auto it = sr.attempted.find(key);
    tf.attempted = it == sr.attempted.end() ? 0 : it->second;
    rep.targets.push_back(std::move(tf));
  }
  for (const auto& [key, n] : sr.attempted)
    if (unseen.count(key) || !fits.count(key)) {
      TargetFit tf = describe_fit(key, nullptr);
      tf.attempted = n;
      rep.targets.push_back(std::move(tf));
      rep.unfitted_targets.push_back(key);
    }
  if (!rep.unfitted_targets.empty())
    rep.notes.push_back("targets never seen in the traces behave as the simulator's defaults (300 ms median, no "
                        "errors): their figures are assumptions, not measurements");
  rep.notes.push_back("a call the recording made is replayed with its recorded outcome; other calls draw from the "
                      "target's fitted distribution");
  rep.notes.push_back("timeouts are replayed as calls that never answer: a longer candidate timeout does not rescue them");
  rep.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return rep;
}

Result<Json> candidate_routing(const Json& candidate, std::string_view slug) {
  auto s = normalize_slug(slug);
  if (!s) return fail(s.error());
  return candidate_routing_of(candidate, *s);
}

}  // namespace modelux
