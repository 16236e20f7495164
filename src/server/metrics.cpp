// Prometheus metrics of the proxy (see metrics.hpp).
#include "server/metrics.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/otlp.hpp"
#include "modelux/scrub.hpp"
#include "modelux/trace.hpp"
#include "server/http_server.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

namespace pm = prometheus;

namespace {

double seconds(Nanos d) { return std::chrono::duration<double>(d).count(); }

// Latencies from a fast cache hit to a long generation.
const pm::Histogram::BucketBoundaries& latency_buckets() {
  static const pm::Histogram::BucketBoundaries b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return b;
}

// Every outcome an attempt or a request can have: the "ok" and ErrorKind names, plus what the
// session writes for attempts it skipped.
constexpr std::size_t kMaxOutcomes = 24;

// The series of one (config, provider, model): looked up once per thread, then only used.
struct TargetSeries {
  std::string config, provider, model;
  pm::Histogram* latency = nullptr;
  pm::Histogram* ttft = nullptr;
  pm::Counter* input_tokens = nullptr;
  pm::Counter* output_tokens = nullptr;
  pm::Counter* cost = nullptr;
  std::array<std::pair<std::string, pm::Counter*>, kMaxOutcomes> outcomes{};
  std::atomic<std::size_t> n_outcomes{0};  ///< entries below it are complete (published with release)
};

struct ConfigSeries {
  std::string config;
  pm::Histogram* latency = nullptr;
  pm::Histogram* ttft = nullptr;
  std::array<std::pair<std::string, pm::Counter*>, kMaxOutcomes> outcomes{};
  std::atomic<std::size_t> n_outcomes{0};  ///< entries below it are complete (published with release)
};

struct Key3 {
  std::string_view config, provider, model;
  bool operator==(const Key3&) const = default;
};
struct Key3Hash {
  std::size_t operator()(const Key3& k) const noexcept {
    std::hash<std::string_view> h;
    return h(k.config) ^ (h(k.provider) * 31) ^ (h(k.model) * 1000003);
  }
};

pm::ClientMetric gauge_metric(double v, std::vector<pm::ClientMetric::Label> labels = {}) {
  pm::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  return m;
}
pm::ClientMetric counter_metric(double v, std::vector<pm::ClientMetric::Label> labels = {}) {
  pm::ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  return m;
}
pm::MetricFamily family(std::string name, std::string help, pm::MetricType type, std::vector<pm::ClientMetric> ms) {
  pm::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  f.metric = std::move(ms);
  return f;
}

// What is read at scrape time from the state the proxy already keeps.
class StateCollector final : public pm::Collectable {
 public:
  explicit StateCollector(const Proxy::State& st) : st_(st) {}
  std::vector<pm::MetricFamily> Collect() const override {
    std::vector<pm::MetricFamily> out;
    const Proxy::State& st = st_;
    auto counter = [&](const char* name, const char* help, std::uint64_t v) {
      out.push_back(family(name, help, pm::MetricType::Counter, {counter_metric(static_cast<double>(v))}));
    };
    auto gauge = [&](const char* name, const char* help, double v) {
      out.push_back(family(name, help, pm::MetricType::Gauge, {gauge_metric(v)}));
    };
    // The server's counters (names kept from the hand-written exposition).
    counter("modelux_requests_total", "Requests received on the data plane (chat and embeddings).", st.requests.load());
    counter("modelux_requests_ok_total", "Data-plane requests answered successfully.", st.ok.load());
    counter("modelux_requests_client_error_total", "Requests rejected (4xx).", st.client_errors.load());
    counter("modelux_requests_upstream_error_total", "Requests failed after routing (5xx).", st.upstream_errors.load());
    counter("modelux_streams_total", "Streaming requests.", st.streams.load());
    gauge("modelux_requests_in_flight", "Requests being served now.", static_cast<double>(st.in_flight.load()));
    counter("modelux_auth_refused_total", "Requests refused for a missing, unknown or expired key (401).", st.auth_refused.load());
    counter("modelux_forbidden_total", "Requests refused by role or project (403).", st.forbidden.load());
    counter("modelux_key_limited_total", "Requests refused by a key's rpm or concurrency limit (429).", st.key_rate_limited.load());
    if (st.http) {
      auto ss = st.http->stats();
      counter("modelux_accept_backoffs_total", "accept() failures for lack of fds or memory (the accept loop paused).", ss.accept_backoffs);
      counter("modelux_accept_refused_total", "Connections refused with 503 at the fd limit (through the reserve fd).", ss.accept_refused);
      counter("modelux_body_budget_refused_total", "Requests refused (503) by server.max_inflight_body_bytes.", ss.body_budget_refused);
      gauge("modelux_connections_open", "Client connections open.", static_cast<double>(ss.connections_open));
      gauge("modelux_body_bytes_in_flight", "Request-body bytes buffered now (counted against max_inflight_body_bytes).",
            static_cast<double>(ss.body_bytes_in_flight));
      gauge("modelux_draining", "1 while the server drains for shutdown.", st.http->draining() ? 1.0 : 0.0);
    }
    if (!st.router) return out;
    Router& r = *st.router;
    auto tr = r.transport().stats();
    counter("modelux_upstream_connections_opened_total", "Upstream connections opened.", tr.connections_opened);
    counter("modelux_upstream_connections_reused_total", "Upstream requests on a pooled connection.", tr.connections_reused);
    gauge("modelux_upstream_connections_idle", "Idle upstream connections in the pool.", static_cast<double>(tr.idle));
    if (Tracer* t = r.tracer()) {
      auto ts = t->stats();
      counter("modelux_traces_submitted_total", "Traces handed to the tracer.", ts.submitted);
      counter("modelux_traces_written_total", "Traces written to the store.", ts.written);
      counter("modelux_traces_dropped_total", "Traces dropped (queue full or write failure).", ts.dropped);
      gauge("modelux_traces_queued", "Traces submitted and not yet written (the trace queue depth; lost on a crash).",
            static_cast<double>(ts.queued));
      counter("modelux_traces_write_errors_total", "Trace batches that failed to write.", ts.write_errors);
      if (auto ox = t->otlp()) {  // tracing.otlp: OpenTelemetry export (modelux/otlp.hpp)
        auto os = ox->stats();
        counter("modelux_otlp_traces_exported_total", "Traces the OTLP collector accepted.", os.exported);
        counter("modelux_otlp_spans_exported_total", "Spans (request + attempt) the OTLP collector accepted.", os.spans_exported);
        counter("modelux_otlp_traces_dropped_total", "Traces not exported: the export queue was full or the collector refused twice.",
                os.dropped);
        counter("modelux_otlp_export_failures_total", "OTLP POSTs that failed (network error or non-2xx).", os.failed_posts);
        gauge("modelux_otlp_queued", "Traces waiting for OTLP export.", static_cast<double>(os.queued));
      }
    }
    const Instant now = r.clock().now();
    if (HealthRegistry* h = r.health()) {
      // One series per target and state, 1 for the current one (the usual enum-as-gauge shape).
      Json hs = h->state_json(now);
      std::vector<pm::ClientMetric> states;
      if (auto it = hs.find("targets"); it != hs.end() && it->is_array())
        for (const auto& t : *it) {
          std::string target = t.value("target", std::string{}), cur = t.value("breaker", std::string{});
          for (const char* s : {"closed", "open", "half_open"})
            states.push_back(gauge_metric(cur == s ? 1.0 : 0.0, {{"target", target}, {"state", s}}));
        }
      out.push_back(family("modelux_breaker_state", "Circuit breaker state per target (provider/model): 1 for the current state.",
                           pm::MetricType::Gauge, std::move(states)));
    }
    if (BudgetManager* b = r.budgets()) {
      Json snap = b->snapshot(now);
      std::vector<pm::ClientMetric> spent, limit, reserved;
      if (auto it = snap.find("budgets"); it != snap.end() && it->is_array())
        for (const auto& l : *it) {
          std::vector<pm::ClientMetric::Label> labels = {{"budget", l.value("name", std::string{})},
                                                         {"scope", l.value("scope", std::string{})},
                                                         {"window", l.value("window", std::string{})}};
          spent.push_back(gauge_metric(l.value("spent_usd", 0.0), labels));
          reserved.push_back(gauge_metric(l.value("reserved_usd", 0.0), labels));
          if (auto lim = l.find("limit_usd"); lim != l.end() && lim->is_number()) limit.push_back(gauge_metric(lim->get<double>(), labels));
        }
      out.push_back(family("modelux_budget_spent_usd", "Spend in the budget's current window (USD), per ledger.", pm::MetricType::Gauge,
                           std::move(spent)));
      out.push_back(family("modelux_budget_limit_usd", "The budget's limit (USD), per ledger.", pm::MetricType::Gauge, std::move(limit)));
      out.push_back(family("modelux_budget_reserved_usd", "Reserved for requests in flight (USD), per ledger.", pm::MetricType::Gauge,
                           std::move(reserved)));
    }
    return out;
  }

 private:
  const Proxy::State& st_;
};

std::atomic<std::uint64_t> g_instances{0};

}  // namespace

struct ProxyMetrics::Impl {
  std::shared_ptr<pm::Registry> registry = std::make_shared<pm::Registry>();
  std::shared_ptr<StateCollector> state;
  std::uint64_t id = g_instances.fetch_add(1) + 1;
  pm::Family<pm::Counter>* attempts = nullptr;
  pm::Family<pm::Histogram>* attempt_latency = nullptr;
  pm::Family<pm::Histogram>* attempt_ttft = nullptr;
  pm::Family<pm::Counter>* tokens = nullptr;
  pm::Family<pm::Counter>* cost = nullptr;
  pm::Family<pm::Counter>* routed = nullptr;
  pm::Family<pm::Histogram>* routed_latency = nullptr;
  pm::Family<pm::Histogram>* routed_ttft = nullptr;
  // Series are created under this lock (prometheus-cpp locks its families too); only a thread's
  // first use of a series gets here.
  std::mutex create_mu;
  std::vector<std::unique_ptr<TargetSeries>> targets;  // owned here; threads cache pointers
  std::vector<std::unique_ptr<ConfigSeries>> configs;

  TargetSeries* make_target(std::string_view config, std::string_view provider, std::string_view model) {
    std::lock_guard lk(create_mu);
    for (auto& t : targets)
      if (t->config == config && t->provider == provider && t->model == model) return t.get();
    auto t = std::make_unique<TargetSeries>();
    t->config = config;
    t->provider = provider;
    t->model = model;
    pm::Labels l = {{"config", t->config}, {"provider", t->provider}, {"model", t->model}};
    t->latency = &attempt_latency->Add(l, latency_buckets());
    t->ttft = &attempt_ttft->Add(l, latency_buckets());
    auto with = [&](const char* k, const char* v) {
      pm::Labels x = l;
      x[k] = v;
      return x;
    };
    t->input_tokens = &tokens->Add(with("type", "input"));
    t->output_tokens = &tokens->Add(with("type", "output"));
    t->cost = &cost->Add(l);
    targets.push_back(std::move(t));
    return targets.back().get();
  }
  ConfigSeries* make_config(std::string_view config) {
    std::lock_guard lk(create_mu);
    for (auto& c : configs)
      if (c->config == config) return c.get();
    auto c = std::make_unique<ConfigSeries>();
    c->config = config;
    c->latency = &routed_latency->Add({{"config", c->config}}, latency_buckets());
    c->ttft = &routed_ttft->Add({{"config", c->config}}, latency_buckets());
    configs.push_back(std::move(c));
    return configs.back().get();
  }
  // The outcome counter of a series, found without a lock; created on first use (outcomes
  // are a small closed set). `labels()` builds the series' labels only then.
  template <class Series, class LabelsFn>
  pm::Counter* outcome(Series& s, std::string_view o, pm::Family<pm::Counter>& fam, LabelsFn labels) {
    std::size_t n = s.n_outcomes.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i)
      if (s.outcomes[i].first == o) return s.outcomes[i].second;
    std::lock_guard lk(create_mu);
    n = s.n_outcomes.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i)  // another thread may have added it
      if (s.outcomes[i].first == o) return s.outcomes[i].second;
    pm::Labels l = labels();
    l["outcome"] = std::string(o);
    pm::Counter* c = &fam.Add(l);  // the same labels give the same counter
    if (n < kMaxOutcomes) {
      s.outcomes[n].first = std::string(o);
      s.outcomes[n].second = c;
      s.n_outcomes.store(n + 1, std::memory_order_release);  // the entry is complete before it is counted
    }
    return c;
  }
};

namespace {

// Per-thread caches: (config, provider, model) -> series, config -> series. Keys view the
// strings the series own. Reset when the thread meets another ProxyMetrics instance.
struct ThreadCache {
  std::uint64_t owner = 0;
  std::unordered_map<Key3, TargetSeries*, Key3Hash> targets;
  std::unordered_map<std::string_view, ConfigSeries*> configs;
};
thread_local ThreadCache t_cache;

}  // namespace

ProxyMetrics::ProxyMetrics(const Proxy::State& state) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.attempts = &pm::BuildCounter()
                    .Name("modelux_upstream_attempts_total")
                    .Help("Upstream attempts per config, provider and model, by outcome (ok or the error kind).")
                    .Register(*m.registry);
  m.attempt_latency = &pm::BuildHistogram()
                           .Name("modelux_upstream_attempt_duration_seconds")
                           .Help("Duration of upstream attempts (whole answer), per config, provider and model.")
                           .Register(*m.registry);
  m.attempt_ttft = &pm::BuildHistogram()
                        .Name("modelux_upstream_ttft_seconds")
                        .Help("Time to first token of successful upstream attempts, per config, provider and model.")
                        .Register(*m.registry);
  m.tokens = &pm::BuildCounter()
                  .Name("modelux_tokens_total")
                  .Help("Tokens billed by providers (type input or output), per config, provider and model.")
                  .Register(*m.registry);
  m.cost = &pm::BuildCounter()
                .Name("modelux_cost_usd_total")
                .Help("Cost of upstream attempts in USD at catalog prices, per config, provider and model.")
                .Register(*m.registry);
  m.routed = &pm::BuildCounter()
                  .Name("modelux_routed_requests_total")
                  .Help("Routed requests per config (the model or @config asked for), by outcome.")
                  .Register(*m.registry);
  m.routed_latency = &pm::BuildHistogram()
                          .Name("modelux_request_duration_seconds")
                          .Help("Total duration of routed requests (all attempts), per config.")
                          .Register(*m.registry);
  m.routed_ttft = &pm::BuildHistogram()
                       .Name("modelux_request_ttft_seconds")
                       .Help("Time to first token of successful routed requests as the caller saw it, per config.")
                       .Register(*m.registry);
  m.state = std::make_shared<StateCollector>(state);
}

ProxyMetrics::~ProxyMetrics() = default;

void ProxyMetrics::observe(const DecisionTrace& t) {
  Impl& m = *impl_;
  ThreadCache& cache = t_cache;
  if (cache.owner != m.id) {
    cache.targets.clear();
    cache.configs.clear();
    cache.owner = m.id;
  }
  // A request refused before routing names whatever the caller sent: one bounded label.
  const std::string_view config = t.attempts.empty() && !t.ok ? std::string_view("unknown") : std::string_view(t.config);
  ConfigSeries* cs;
  if (auto it = cache.configs.find(config); it != cache.configs.end()) {
    cs = it->second;
  } else {
    cs = m.make_config(config);
    cache.configs.emplace(cs->config, cs);
  }
  // Both arms string_view: `cond ? "error" : some_string` would be a temporary std::string.
  const std::string_view outcome = t.ok ? std::string_view("ok")
                                        : t.error_kind.empty() ? std::string_view("error") : std::string_view(t.error_kind);
  m.outcome(*cs, outcome, *m.routed, [cs] { return pm::Labels{{"config", cs->config}}; })->Increment();
  cs->latency->Observe(seconds(t.total));
  if (t.ok && t.ttft.count() > 0) cs->ttft->Observe(seconds(t.ttft));

  for (const AttemptRecord& a : t.attempts) {
    if (a.provider.empty() && a.model.empty()) continue;
    const Key3 k{config, a.provider, a.model};
    TargetSeries* ts;
    if (auto it = cache.targets.find(k); it != cache.targets.end()) {
      ts = it->second;
    } else {
      ts = m.make_target(config, a.provider, a.model);
      cache.targets.emplace(Key3{ts->config, ts->provider, ts->model}, ts);
    }
    const std::string_view ao = a.ok ? std::string_view("ok")
                                     : a.outcome.empty() ? std::string_view("error") : std::string_view(a.outcome);
    m.outcome(*ts, ao, *m.attempts, [ts] {
       return pm::Labels{{"config", ts->config}, {"provider", ts->provider}, {"model", ts->model}};
     })->Increment();
    if (a.duration.count() > 0) ts->latency->Observe(seconds(a.duration));
    if (a.ok && a.ttft.count() > 0) ts->ttft->Observe(seconds(a.ttft));
    if (a.usage.prompt_tokens > 0) ts->input_tokens->Increment(static_cast<double>(a.usage.prompt_tokens));
    if (a.usage.completion_tokens > 0) ts->output_tokens->Increment(static_cast<double>(a.usage.completion_tokens));
    if (a.cost.total() > 0) ts->cost->Increment(a.cost.total());
  }
}

std::string ProxyMetrics::render() const {
  // prometheus-cpp 1.0's Registry takes no foreign Collectables (its Exposer does, but the
  // proxy serves /metrics itself): the scrape-time families are appended here.
  auto families = impl_->registry->Collect();
  for (auto& f : impl_->state->Collect()) families.push_back(std::move(f));
  std::ostringstream os;
  pm::TextSerializer().Serialize(os, families);
  std::string s = os.str();
  scrub(s);  // label values come from configs and traces: never let a secret out
  return s;
}

}  // namespace modelux::proxy
