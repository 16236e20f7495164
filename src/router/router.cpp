// The Router's public API and create(): builds the route table, the health registry, the
// budget manager, the tracer and the transport, and starts the io threads. Requests run in
// the executor (executor.cpp); bring-your-own-client sessions in client_session.cpp.
#include "modelux/router.hpp"
#include "modelux/otlp.hpp"
#include "modelux/scrub.hpp"

#include <future>

#include <pthread.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include "router/router_impl.hpp"

namespace modelux {

namespace {
// Every provider credential is removed by value from whatever leaves the process (modelux/scrub.hpp):
// upstream 401s echo keys, and a key without a known prefix would pass a shape-only check.
void register_provider_secrets(const Config& c) {
  for (const auto& p : c.providers) {
    for (const auto& k : p.api_keys) add_secret(k);
    for (const auto& [name, value] : p.options)
      if (name.find("key") != std::string::npos || name.find("secret") != std::string::npos || name.find("token") != std::string::npos)
        add_secret(value);
  }
}

// Router::transport() with several io threads: each thread has its own HTTP client (its own
// connection pool); this view sends on the calling io thread's one (round-robin from other
// threads), sums the stats and trims every pool. The request path does the same lookup.
class ShardedTransport final : public Transport {
 public:
  ShardedTransport(Router::Impl& impl, std::vector<std::shared_ptr<Transport>> parts)
      : impl_(impl), parts_(std::move(parts)) {}
  net::awaitable<Result<HttpResponse>> send(const HttpRequestSpec& req, Instant deadline) override {
    return here().send(req, deadline);
  }
  net::awaitable<Result<std::unique_ptr<HttpStream>>> open(const HttpRequestSpec& req, Instant deadline) override {
    return here().open(req, deadline);
  }
  TransportStats stats() const override {
    TransportStats sum;
    for (const auto& p : parts_) {
      auto s = p->stats();
      sum.connections_opened += s.connections_opened;
      sum.connections_reused += s.connections_reused;
      sum.requests += s.requests;
      sum.idle += s.idle;
      sum.in_flight += s.in_flight;
    }
    return sum;
  }
  void close_idle() override {
    for (auto& p : parts_) p->close_idle();
  }
  void trim_idle() override {
    for (auto& p : parts_) p->trim_idle();
  }

 private:
  Transport& here() { return *parts_[impl_.shard_here()]; }
  Router::Impl& impl_;
  std::vector<std::shared_ptr<Transport>> parts_;
};

}  // namespace

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Router::~Router() = default;

Result<std::unique_ptr<Router>> Router::create(Config config, RouterOptions options) {
  auto impl = std::make_unique<Impl>(options.io_threads);
  impl->config = std::move(config);
  impl->opts = options;
  impl->clock = options.clock ? options.clock : &SteadyClock::instance();
  impl->seed_base = options.seed ? options.seed : fnv1a64(new_request_id());
  impl->key_cursor = std::make_unique<std::atomic<std::uint64_t>[]>(impl->config.providers.size() + 1);
  impl->health = std::make_unique<HealthRegistry>(impl->config.health);
  register_provider_secrets(impl->config);
  for (const auto& p : impl->config.providers)
    if (p.api_keys.size() > 1) impl->health->set_key_pool(p.name, static_cast<int>(std::min<std::size_t>(p.api_keys.size(), 16)));
  auto table = RouteTable::build(impl->config, nullptr);
  if (!table) return fail(table.error());
  impl->table.store(std::move(*table));
  if (!options.transport && !options.transport_options.clock && impl->clock != &SteadyClock::instance())
    options.transport_options.clock = impl->clock;  // deadlines are this clock's instants
  for (auto& sh : impl->shards)
    impl->shard_transports.push_back(options.transport ? options.transport
                                                       : make_http_transport(sh->ioc.get_executor(), options.transport_options));
  impl->transport = impl->shards.size() == 1 || options.transport
                        ? impl->shard_transports[0]
                        : std::make_shared<ShardedTransport>(*impl, impl->shard_transports);
  // The config file's sections were validated and typed by Config::from_json: nothing here
  // reads JSON again.
  if (!impl->config.budgets.empty() || options.always_budgets) {
    const BudgetBackendConfig& bb = impl->config.budget_backend_options;
    BudgetOptions bo;
    bo.sqlite_path = bb.sqlite_path;
    bo.redis_url = bb.redis_url;
    bo.instance_id = bb.instance_id;
    if (bb.sync_interval) bo.sync_interval = *bb.sync_interval;
    if (bb.max_wildcard_ledgers) bo.max_wildcard_ledgers = *bb.max_wildcard_ledgers;
    if (bb.evict_interval) bo.evict_interval = *bb.evict_interval;
    if (bb.fair_share) bo.outage_policy = RedisOutagePolicy::fair_share;
    bo.on_alert = options.on_alert;
    auto bm = BudgetManager::create(impl->config.budgets, impl->config.catalog, *impl->clock, std::move(bo));
    if (!bm) return fail(bm.error());
    impl->budgets = std::move(*bm);
  }
  const TracingConfig& tc = impl->config.tracing_options;
  if (options.open_tracer && tc.enabled) {
    TracerOptions to;
    to.path = tc.path;
    to.capture_bodies = tc.capture_bodies;
    to.redact_fields = tc.redact_fields;
    if (tc.queue_capacity) to.queue_capacity = *tc.queue_capacity;
    if (tc.batch_size) to.batch_size = *tc.batch_size;
    if (tc.body_cap_bytes) to.body_cap_bytes = *tc.body_cap_bytes;
    if (tc.retention_days) to.retention_days = *tc.retention_days;
    if (tc.flush_interval) to.flush_interval = *tc.flush_interval;
    // tracing.otlp: validated by Config::from_json, kept in the raw "tracing" section.
    if (const Json& tr = impl->config.tracing; tr.is_object() && tr.contains("otlp")) {
      auto oo = parse_otlp_options(tr["otlp"]);
      if (!oo) return fail(oo.error());
      auto ex = OtlpExporter::create(std::move(*oo));
      if (!ex) return fail(ex.error());
      to.otlp = std::move(*ex);
    }
    auto tr = Tracer::open(to, *impl->clock);
    if (!tr) return fail(tr.error());
    impl->tracer = std::move(*tr);
  }
  impl->effects = AttemptEffects{.clock = impl->clock,
                                 .config = &impl->config,
                                 .health = impl->health.get(),
                                 .budgets = impl->budgets.get(),
                                 .key_cursor = impl->key_cursor.get()};
  for (std::size_t i = 0; i < impl->shards.size(); ++i)
    impl->threads.emplace_back([p = impl.get(), i] {
      Impl::tl_owner = p;
      Impl::tl_shard = i;
      // Named, so per-thread CPU and wake-ups can be read from /proc/PID/task/*/comm.
      const std::string name = "modelux-io" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      p->shards[i]->ioc.run();
    });
  return std::unique_ptr<Router>(new Router(std::move(impl)));
}

Completion Router::complete(ChatRequest request, CallContext ctx) {
  auto ex = impl_->next_shard().ioc.get_executor();  // one thread runs it: no strand needed
  auto fut = net::co_spawn(ex, impl_->execute(std::move(request), std::move(ctx), nullptr), net::use_future);
  return fut.get();
}

Completion Router::stream(ChatRequest request, CallContext ctx, ChunkSink sink) {
  auto ex = impl_->next_shard().ioc.get_executor();  // one thread runs it: no strand needed
  AsyncChunkSink as = [sink = std::move(sink)](const ChatChunk& c) -> net::awaitable<bool> { co_return sink(c); };
  auto fut = net::co_spawn(ex, impl_->execute(std::move(request), std::move(ctx), std::move(as)), net::use_future);
  return fut.get();
}

void Router::complete_async(ChatRequest request, CallContext ctx, std::function<void(Completion)> done) {
  auto ex = impl_->next_shard().ioc.get_executor();  // one thread runs it: no strand needed
  net::co_spawn(ex, impl_->execute(std::move(request), std::move(ctx), nullptr),
                [done = std::move(done)](std::exception_ptr e, Completion c) {
                  if (e) {
                    Completion err;
                    err.result = fail(ErrorKind::internal, "request failed with an exception");
                    done(std::move(err));
                    return;
                  }
                  done(std::move(c));
                });
}

// Not a coroutine itself: one coroutine frame per request is enough.
net::awaitable<Completion> Router::co_complete(ChatRequest request, CallContext ctx, AsyncChunkSink sink) {
  return impl_->execute(std::move(request), std::move(ctx), std::move(sink));
}

EmbeddingCompletion Router::embed(EmbeddingRequest request, CallContext ctx) {
  auto ex = impl_->next_shard().ioc.get_executor();  // one thread runs it: no strand needed
  auto fut = net::co_spawn(ex, impl_->execute_embed(std::move(request), std::move(ctx)), net::use_future);
  return fut.get();
}

net::awaitable<EmbeddingCompletion> Router::co_embed(EmbeddingRequest request, CallContext ctx) {
  return impl_->execute_embed(std::move(request), std::move(ctx));
}

Result<std::int64_t> Router::set_routing_config(std::string slug, const Json& cfg) {
  if (!slug.empty() && slug.front() == '@') slug.erase(0, 1);
  std::lock_guard lk(impl_->config_mu);
  auto cur = impl_->table.load();
  auto next = cur->with_config(impl_->config, slug, cfg);
  if (!next) return fail(next.error());
  std::int64_t v = (*next)->lookup("@" + slug)->version();
  impl_->table.store(std::move(*next), std::memory_order_release);
  impl_->config.routing[slug] = cfg;
  return v;
}

Result<std::int64_t> Router::set_routing_config(std::string slug, const Json& cfg, std::int64_t version) {
  if (!slug.empty() && slug.front() == '@') slug.erase(0, 1);
  std::lock_guard lk(impl_->config_mu);
  auto cur = impl_->table.load();
  auto next = cur->with_config(impl_->config, slug, cfg);
  if (!next) return fail(next.error());
  // The table is not published yet: its policies are still private to this thread.
  std::const_pointer_cast<Policy>((*next)->lookup("@" + slug))->set_version(version);
  impl_->table.store(std::move(*next), std::memory_order_release);
  impl_->config.routing[slug] = cfg;
  return version;
}

std::shared_ptr<const Policy> Router::routing_config(std::string_view slug) const {
  std::string s(slug);
  if (s.empty() || s.front() != '@') s.insert(0, "@");
  return impl_->table.load()->lookup(s);
}

std::vector<std::string> Router::routing_slugs() const { return impl_->table.load()->slugs(); }
std::vector<std::string> Router::routable_models() const { return impl_->table.load()->models(); }
const Config& Router::config() const noexcept { return impl_->config; }
const Catalog& Router::catalog() const noexcept { return impl_->config.catalog; }
Tracer* Router::tracer() noexcept { return impl_->tracer.get(); }
BudgetManager* Router::budgets() noexcept { return impl_->budgets.get(); }
HealthRegistry* Router::health() noexcept { return impl_->health.get(); }
Transport& Router::transport() noexcept { return *impl_->transport; }
net::any_io_executor Router::executor() noexcept { return impl_->shards[0]->ioc.get_executor(); }
net::any_io_executor Router::next_executor() noexcept { return impl_->next_shard().ioc.get_executor(); }
std::vector<net::any_io_executor> Router::executors() {
  std::vector<net::any_io_executor> out;
  for (auto& sh : impl_->shards) out.push_back(sh->ioc.get_executor());
  return out;
}
const Clock& Router::clock() const noexcept { return *impl_->clock; }

}  // namespace modelux
