// The Router and its executor: drives a RoutingSession over a Transport.
//
// One request = one coroutine on a strand. Attempts run as child coroutines on the same
// strand (several at once for ensembles), each bound to a cancellation signal so losers and
// abandoned attempts stop their upstream I/O at once. The session decides; this file only
// executes: encode → send → decode, budget reserve/settle, health observe, trace fill-in.
#include "modelux/router.hpp"

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/ratelimits.hpp"
#include "modelux/trace.hpp"
#include "router/resolver.hpp"

namespace modelux {

using net::redirect_error;
using net::use_awaitable;

namespace {

std::string ms_text(Nanos d) { return std::to_string(std::chrono::duration_cast<Millis>(d).count()) + " ms"; }


// A chunk "carries output" once the caller would see something of the answer.
bool carries_output(const ChatChunk& c) {
  for (const auto& ch : c.choices)
    if ((ch.content && !ch.content->empty()) || !ch.tool_calls.empty() || !ch.finish_reason.empty()) return true;
  return false;
}

// The chunks a non-streamed answer becomes when the caller asked to stream (ensembles and
// cascades must see whole answers before choosing one).
std::vector<ChatChunk> synthesize_chunks(const ChatResponse& r) {
  std::vector<ChatChunk> out;
  for (const auto& choice : r.choices) {
    ChatChunk c;
    c.id = r.id;
    c.model = r.model;
    c.created = r.created;
    ChunkChoice cc;
    cc.index = choice.index;
    cc.role = "assistant";
    cc.content = choice.message.text();
    for (std::size_t i = 0; i < choice.message.tool_calls.size(); ++i) {
      const auto& t = choice.message.tool_calls[i];
      cc.tool_calls.push_back(ToolCallDelta{static_cast<int>(i), t.id, t.name, t.arguments});
    }
    c.choices.push_back(std::move(cc));
    out.push_back(std::move(c));
    ChatChunk fin;
    fin.id = r.id;
    fin.model = r.model;
    fin.created = r.created;
    ChunkChoice fc;
    fc.index = choice.index;
    fc.finish_reason = choice.finish_reason.empty() ? "stop" : choice.finish_reason;
    fin.choices.push_back(std::move(fc));
    out.push_back(std::move(fin));
  }
  ChatChunk u;
  u.id = r.id;
  u.model = r.model;
  u.created = r.created;
  u.usage = r.usage;
  out.push_back(std::move(u));
  return out;
}

}  // namespace

struct Router::Impl {
  Config config;
  RouterOptions opts;
  const Clock* clock = nullptr;
  // Idle routing sessions, reused across requests (RoutingSession::reset keeps their buffers,
  // so the routing decision itself allocates nothing in steady state). Bounded. Declared
  // before `ioc` so it outlives it: request frames still pending when the Router goes away
  // are destroyed with the io_context, and their leases give sessions back here.
  std::mutex pool_mu;
  std::vector<std::unique_ptr<RoutingSession>> session_pool;
  static constexpr std::size_t kMaxPooledSessions = 256;
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
  std::vector<std::thread> threads;
  std::shared_ptr<Transport> transport;
  std::unique_ptr<Tracer> tracer;
  std::unique_ptr<BudgetManager> budgets;
  std::unique_ptr<HealthRegistry> health;
  std::atomic<std::shared_ptr<const RouteTable>> table;
  std::mutex config_mu;  // serialises config swaps (readers never take it)
  std::unique_ptr<std::atomic<std::uint64_t>[]> key_cursor;
  std::atomic<std::uint64_t> seed_counter{0};
  std::uint64_t seed_base = 0;

  /// A pooled session for one request; goes back to the pool when the lease ends.
  class SessionLease {
   public:
    explicit SessionLease(Impl& impl) : impl_(impl) {
      {
        std::lock_guard lk(impl_.pool_mu);
        if (!impl_.session_pool.empty()) {
          s_ = std::move(impl_.session_pool.back());
          impl_.session_pool.pop_back();
        }
      }
      if (!s_) s_ = std::make_unique<RoutingSession>();
    }
    ~SessionLease() {
      s_->clear();  // a parked session holds no policy or response body
      std::lock_guard lk(impl_.pool_mu);
      if (impl_.session_pool.size() < kMaxPooledSessions) impl_.session_pool.push_back(std::move(s_));
    }
    SessionLease(const SessionLease&) = delete;
    SessionLease& operator=(const SessionLease&) = delete;
    RoutingSession& get() noexcept { return *s_; }

   private:
    Impl& impl_;
    std::unique_ptr<RoutingSession> s_;
  };

  ~Impl() {
    work.reset();
    ioc.stop();
    for (auto& t : threads) t.join();
  }

  std::size_t provider_index(std::string_view name) const {
    for (std::size_t i = 0; i < config.providers.size(); ++i)
      if (config.providers[i].name == name) return i;
    return config.providers.size();
  }

  // A key from the provider's pool: spread across keys, skipping keys that sit out a 429
  // until their reset (health key pool). -1 when every key is cooling down.
  int pick_key(std::size_t pi, Instant now) {
    const auto& keys = config.providers[pi].api_keys;
    if (keys.empty()) return 0;
    if (keys.size() == 1) return 0;
    if (health) {
      auto k = health->pick_key(config.providers[pi].name, now);
      return k ? *k : -1;
    }
    return static_cast<int>(key_cursor[pi].fetch_add(1, std::memory_order_relaxed) % keys.size());
  }

  struct AttemptRun {
    AttemptResult result;
    std::optional<Admission> admission;
    std::string downgrade_to;   // set when a soft budget threshold asks to reroute
    std::string budget_note;
    int key_index = -1;         // which key of the provider's pool was used
    std::string provider;
  };

  net::awaitable<AttemptRun> run_attempt(const AttemptPlan& plan, const ChatRequest& req, const CallContext& ctx,
                                         const AsyncChunkSink* sink, bool allow_downgrade, const std::string& request_id) {
    AttemptRun run;
    AttemptResult& r = run.result;
    r.id = plan.id;
    const Instant t0 = clock->now();
    auto finish_error = [&](Error e) {
      r.ok = false;
      if (e.provider.empty()) e.provider = plan.target.provider;
      r.error = std::move(e);
      r.latency = clock->now() - t0;
    };
    std::size_t pi = provider_index(plan.target.provider);
    if (pi == config.providers.size()) {
      finish_error(Error{ErrorKind::no_route, "provider '" + plan.target.provider + "' is not configured", 0, {}, {}, {}, {}});
      co_return run;
    }
    const ProviderConfig& pc = config.providers[pi];
    const Codec* codec = find_codec(pc.family);
    if (!codec) {
      finish_error(Error{ErrorKind::no_route, "no codec for family '" + pc.family + "'", 0, {}, {}, {}, {}});
      co_return run;
    }
    const ModelInfo* mi = config.catalog.find_model(plan.target.model);
    std::string upstream = mi ? mi->upstream : plan.target.model;

    if (budgets) {
      std::int64_t est_in = estimate_input_tokens(req);
      std::int64_t est_out = req.max_tokens.value_or(mi && mi->max_output ? std::min<std::int64_t>(mi->max_output, 1024) : 1024);
      auto adm = budgets->admit(ctx, mi, est_in, est_out, clock->now());
      if (!adm) {
        finish_error(adm.error());
        co_return run;
      }
      if (allow_downgrade && !adm->downgrade_to.empty()) {
        run.downgrade_to = adm->downgrade_to;
        run.budget_note = "downgrade to " + adm->downgrade_to + " (budget " + adm->downgrade_budget + " at " +
                          std::to_string(static_cast<int>(adm->downgrade_percent)) + "%)";
        budgets->release(*adm);
        finish_error(Error{ErrorKind::budget_exceeded, run.budget_note, 0, {}, {}, {}, {}});
        co_return run;
      }
      run.admission = std::move(*adm);
    }

    int key_index = pick_key(pi, clock->now());
    if (key_index < 0) {
      if (run.admission) budgets->release(*run.admission), run.admission.reset();
      Error e{ErrorKind::rate_limited, "every API key of provider '" + pc.name + "' is cooling down after 429s", 429, {}, {}, {}, {}};
      if (health) {
        auto wait = health->key_retry_at(pc.name, clock->now()) - clock->now();
        if (wait.count() > 0) e.retry_after = std::chrono::duration_cast<Millis>(wait);
      }
      finish_error(std::move(e));
      co_return run;
    }
    run.key_index = key_index;
    ProviderEndpoint ep{pc.name, pc.family, pc.base_url, pc.api_keys.empty() ? std::string{} : pc.api_keys[static_cast<std::size_t>(key_index)], pc.options};
    const bool stream_mode = req.stream && sink && *sink && !plan.needs_full_response;
    Result<HttpRequestSpec> spec;
    if (req.stream && !stream_mode) {
      ChatRequest copy = req;
      copy.stream = false;
      copy.include_usage = false;
      spec = codec->encode_request(copy, ep, upstream);
    } else {
      spec = codec->encode_request(req, ep, upstream);
    }
    if (!spec) {
      finish_error(spec.error());
      co_return run;
    }

    auto opened = co_await transport->open(*spec, plan.deadline);
    if (!opened) {
      Error e = opened.error();
      if (e.kind == ErrorKind::timeout) e.message = "attempt timeout after " + ms_text(clock->now() - t0);
      finish_error(std::move(e));
      co_return run;
    }
    auto& s = **opened;
    run.provider = pc.name;
    if (health) {
      auto rl = parse_rate_limits(pc.family, s.headers());
      if (rl.remaining_requests || rl.remaining_tokens) {
        auto reset = std::max(rl.reset_requests.value_or(Millis{0}), rl.reset_tokens.value_or(Millis{0}));
        health->observe_rate_limits(plan.target.key(), rl.remaining_requests, rl.remaining_tokens, clock->now() + reset,
                                    clock->now());
      }
    }
    if (s.status() < 200 || s.status() >= 300) {
      auto body = co_await s.read_all(plan.deadline);
      finish_error(codec->decode_error(s.status(), s.headers(), body ? *body : std::string{}));
      co_return run;
    }
    if (!stream_mode) {
      auto body = co_await s.read_all(plan.deadline);
      if (!body) {
        Error e = body.error();
        if (e.kind == ErrorKind::timeout) e.message = "attempt timeout after " + ms_text(clock->now() - t0);
        finish_error(std::move(e));
        co_return run;
      }
      auto resp = codec->decode_response(*body);
      if (!resp) {
        finish_error(resp.error());
        co_return run;
      }
      r.ok = true;
      r.response = std::move(*resp);
      r.usage = r.response.usage;
      r.latency = clock->now() - t0;
      r.ttft = r.latency;
      co_return run;
    }

    // Streaming: hold chunks until one carries output, so that a failure before the caller
    // saw anything still fails over transparently.
    auto decoder = codec->stream_decoder();
    ChunkAccumulator acc;
    std::vector<ChatChunk> chunks, held;
    const std::string chunk_id = "chatcmpl-" + request_id.substr(request_id.find('_') + 1);
    const Nanos stall = plan.stall_timeout.count() > 0 ? plan.stall_timeout : opts.default_stall_timeout;
    Instant total_deadline = plan.deadline;
    bool first_output = false;
    for (;;) {
      Instant now = clock->now();
      Instant read_deadline = first_output ? now + stall : plan.deadline;
      if (!first_output && plan.ttft_timeout.count() > 0) read_deadline = std::min(read_deadline, t0 + plan.ttft_timeout);
      if (first_output) read_deadline = std::min(read_deadline, std::max(total_deadline, now + stall));
      auto piece = co_await s.read_some(read_deadline);
      if (!piece) {
        Error e = piece.error();
        if (e.kind == ErrorKind::timeout)
          e.message = first_output ? "stream stalled: no data for " + ms_text(stall)
                                   : "no first token within " + ms_text(clock->now() - t0);
        if (first_output) e.kind = ErrorKind::stream_interrupted;
        else if (e.kind == ErrorKind::stream_interrupted) e.kind = ErrorKind::connection;  // nothing reached the caller
        finish_error(std::move(e));
        r.delivered = first_output;
        break;
      }
      chunks.clear();
      bool ended = piece->empty();
      Result<void> fed = ended ? decoder->finish(chunks) : decoder->feed(*piece, chunks);
      if (fed && !ended && decoder->done()) {
        fed = decoder->finish(chunks);  // flush what the decoder holds back until the end (usage)
        ended = true;
      }
      for (auto& c : chunks) {
        c.id = chunk_id;
        c.model = plan.target.model;
        acc.add(c);
        if (!first_output && !carries_output(c) && !c.usage) {
          held.push_back(std::move(c));
          continue;
        }
        if (!first_output) {
          first_output = true;
          r.ttft = clock->now() - t0;
          r.delivered = true;
          for (auto& h : held)
            if (!co_await (*sink)(h)) {
              s.abort();
              finish_error(Error{ErrorKind::cancelled, "caller went away mid-stream", 0, {}, {}, {}, {}});
              co_return run;
            }
          held.clear();
        }
        if (!co_await (*sink)(c)) {
          s.abort();
          finish_error(Error{ErrorKind::cancelled, "caller went away mid-stream", 0, {}, {}, {}, {}});
          r.delivered = true;
          co_return run;
        }
      }
      if (!fed) {
        Error e = fed.error();
        if (first_output && e.kind != ErrorKind::stream_interrupted) {
          e.message = "stream broke after output started: " + e.message;
          e.kind = ErrorKind::stream_interrupted;
        } else if (!first_output && e.kind == ErrorKind::stream_interrupted && e.status == 0) {
          e.kind = ErrorKind::connection;  // the stream died before the caller saw anything: fail over
        }
        finish_error(std::move(e));
        r.delivered = first_output;
        break;
      }
      if (ended) {
        r.ok = true;
        r.response = acc.finish();
        r.usage = r.response.usage;
        r.latency = clock->now() - t0;
        if (!first_output) {
          // An empty but well-formed stream: deliver what was held.
          for (auto& h : held) co_await (*sink)(h);
          r.ttft = r.latency;
          r.delivered = true;
        }
        break;
      }
    }
    if (!r.ok) r.usage = acc.finish().usage;  // partial usage of a broken stream, if any
    co_return run;
  }

  net::awaitable<Completion> execute(ChatRequest req, CallContext ctx, AsyncChunkSink sink) {
    Completion out;
    const Instant start = clock->now();
    if (ctx.request_id.empty()) ctx.request_id = new_request_id();
    if (sink) req.stream = true;
    auto tab = table.load(std::memory_order_acquire);
    std::vector<std::string> budget_actions;
    std::string model = req.model;
    std::shared_ptr<const Policy> policy;
    bool downgraded = false;

    auto fill_base = [&](DecisionTrace& t) { fill_context(t, ctx, model, req.stream); };
    auto reject = [&](Error e) {
      fill_base(out.trace);
      out.trace.ok = false;
      out.trace.error_kind = std::string(to_string(e.kind));
      out.trace.error_message = e.message;
      out.trace.decision = "rejected before routing";
      out.trace.reason = e.message;
      out.trace.total = clock->now() - start;
      out.result = std::unexpected(std::move(e));
      if (tracer) tracer->submit(DecisionTrace(out.trace));
    };

    policy = tab->lookup(model);
    if (!policy) {
      if (model.starts_with("@"))
        reject(Error{ErrorKind::not_found, "routing config '" + model + "' does not exist", 404, {}, "$.model", {}, "model_not_found"});
      else
        reject(Error{ErrorKind::not_found,
                     "model '" + model + "' is not available: not in the catalog, or its provider is not configured", 404,
                     {}, "$.model", {}, "model_not_found"});
      co_return out;
    }

    auto ex = co_await net::this_coro::executor;
    const std::uint64_t fingerprint = health ? prompt_prefix_fingerprint(req) : 0;
    for (;;) {  // runs twice at most: once more after a budget downgrade
      SessionInputs in;
      in.request = &req;
      in.context = &ctx;
      in.budget = budgets.get();
      in.health = health.get();
      in.seed = seed_base ^ (seed_counter.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ULL);
      in.start = clock->now();
      in.wall_start = clock->wall_now();
      SessionLease lease(*this);
      RoutingSession& session = lease.get();
      session.reset(policy, in);

      struct Flight {
        AttemptPlan plan;
        net::cancellation_signal cancel;
        bool finished = false;
        bool cancelled = false;  // set with cancel.emit(): an attempt not started yet has no slot to hear it
      };
      std::vector<std::unique_ptr<Flight>> flights;
      std::vector<AttemptRun> arrived;
      net::steady_timer wake(ex);
      std::size_t in_flight = 0;
      std::string downgrade_to;
      bool sink_gone = false;
      bool delivered_any = false;
      // The caller's CancellationToken wakes this loop on the request's strand. The state is
      // shared so a late post after the request ended finds `wake == nullptr` and does nothing.
      struct CancelState {
        bool requested = false;
        net::steady_timer* wake = nullptr;
      };
      auto cancel_state = std::make_shared<CancelState>();
      cancel_state->wake = &wake;
      if (ctx.cancel)
        ctx.cancel->arm([ex, cancel_state] {
          net::post(ex, [cancel_state] {
            cancel_state->requested = true;
            if (cancel_state->wake) cancel_state->wake->cancel();
          });
        });
      auto caller_gone = [&] { return sink_gone || cancel_state->requested; };

      AsyncChunkSink guarded_sink;
      if (sink) {
        guarded_sink = [&](const ChatChunk& c) -> net::awaitable<bool> {
          if (sink_gone) co_return false;
          bool ok = co_await sink(c);
          if (!ok) sink_gone = true;
          co_return ok;
        };
      }

      for (;;) {
        Step step = session.next(clock->now());
        if (step.kind == Step::Kind::done || step.kind == Step::Kind::failed) break;
        if (step.kind == Step::Kind::attempt) {
          for (auto& plan : step.attempts) {
            // Health admission is claimed here, just before the start (the plan only read it).
            if (health && plan.must_claim && !health->claim(plan.target.key(), clock->now())) {
              AttemptRun refused;
              refused.result.id = plan.id;
              refused.result.not_admitted = true;
              arrived.push_back(std::move(refused));
              ++in_flight;
              continue;
            }
            auto f = std::make_unique<Flight>();
            f->plan = plan;
            Flight* fp = f.get();
            flights.push_back(std::move(f));
            ++in_flight;
            net::co_spawn(
                ex,
                [this, fp, &req, &ctx, &guarded_sink, downgraded, rid = ctx.request_id]() -> net::awaitable<AttemptRun> {
                  // A cancelled attempt must still report back (the request waits for it), so
                  // cancellation surfaces as error codes, never as exceptions.
                  co_await net::this_coro::throw_if_cancelled(false);
                  AttemptRun run;
                  if (fp->cancelled) {  // cancelled before it ever ran
                    run.result.id = fp->plan.id;
                    run.result.error = Error{ErrorKind::cancelled, "attempt abandoned before it started", 0, {}, {}, {}, {}};
                  } else try {
                    run = co_await run_attempt(fp->plan, req, ctx, guarded_sink ? &guarded_sink : nullptr, !downgraded, rid);
                  } catch (...) {
                    run = AttemptRun{};
                    run.result.id = fp->plan.id;
                    run.result.error = Error{ErrorKind::cancelled, "attempt abandoned", 0, {}, {}, {}, {}};
                  }
                  co_return run;
                },
                // The attempt counts as finished in its completion handler, never at the end
                // of its body: co_spawn's entry point resumes the coroutine once more after a
                // body that never suspended (a budget refusal, a breaker skip), and that
                // resumption clears the coroutine's cancellation slot, which lives in this
                // Flight's signal. Reporting from the body let the request free the Flight
                // first, so the late resumption wrote into freed (and, under concurrency,
                // reused) memory: issue #11's SIGSEGV in cancellation_slot::clear(). The
                // handler is dispatched as the coroutine's very last step.
                net::bind_cancellation_slot(
                    fp->cancel.slot(), [fp, &arrived, &wake](std::exception_ptr e, AttemptRun run) {
                      if (e) {
                        run = AttemptRun{};
                        run.result.id = fp->plan.id;
                        run.result.error = Error{ErrorKind::cancelled, "attempt abandoned", 0, {}, {}, {}, {}};
                      }
                      fp->finished = true;
                      arrived.push_back(std::move(run));
                      wake.cancel();
                    }));
          }
          continue;
        }
        // wait: for a result, or until the session's timer.
        // A cancellation that landed before this point found no pending wait to cancel: check
        // the flag before sleeping, never only after.
        if (arrived.empty() && !caller_gone()) {
          if (in_flight == 0 && step.wake_at == Instant{}) {
            session.cancel(clock->now(), "routing session stalled (internal error)");
            session.next(clock->now());
            break;
          }
          Instant until = step.wake_at == Instant{} ? clock->now() + std::chrono::hours(24) : step.wake_at;
          // Translate session time (clock domain) into real steady time for the timer.
          auto delay = until - clock->now();
          wake.expires_after(std::max(Nanos{0}, delay));
          boost::system::error_code ec;
          co_await wake.async_wait(redirect_error(use_awaitable, ec));
        }
        for (auto& run : arrived) {
          --in_flight;
          observe(run, flights, fingerprint);
          if (!run.downgrade_to.empty() && downgrade_to.empty()) {
            downgrade_to = run.downgrade_to;
            budget_actions.push_back(run.budget_note);
          }
          for (auto& a : settle(run)) budget_actions.push_back(std::move(a));
          if (run.result.delivered) delivered_any = true;
          if (caller_gone() && !run.result.ok) run.result.error = Error{ErrorKind::cancelled, "caller went away", 0, {}, {}, {}, {}};
          std::uint32_t id = run.result.id;
          session.report(std::move(run.result), clock->now());
          fill_attempt_cost(session.trace(), id);
          if (!downgrade_to.empty() || caller_gone()) break;
        }
        arrived.clear();
        if (!downgrade_to.empty() || caller_gone()) {
          session.cancel(clock->now(), caller_gone() ? "caller went away" : "budget downgrade");
          session.next(clock->now());  // lets the session finish as cancelled
          break;
        }
      }
      if (ctx.cancel) ctx.cancel->disarm();
      cancel_state->wake = nullptr;
      // Stop whatever is still running (ensemble losers, abandoned attempts) and wait for
      // the coroutines to unwind: they reference this frame. Per-operation cancellation
      // reaches only the operation pending when the signal fires, so the signal is repeated
      // every 100 ms: a step that missed it hears the next one (a lost cancel costs ~100 ms,
      // never the attempt timeout).
      auto stop_unfinished = [&] {
        for (auto& f : flights)
          if (!f->finished) {
            f->cancelled = true;
            f->cancel.emit(net::cancellation_type::terminal);
          }
      };
      stop_unfinished();
      while (in_flight > 0) {
        if (arrived.empty()) {
          wake.expires_after(std::chrono::milliseconds(100));
          boost::system::error_code ec;
          co_await wake.async_wait(redirect_error(use_awaitable, ec));
          stop_unfinished();
        }
        for (auto& run : arrived) {
          --in_flight;
          settle(run);
        }
        arrived.clear();
      }

      if (!downgrade_to.empty() && !downgraded) {
        auto next = tab->lookup(downgrade_to);
        if (next) {
          downgraded = true;
          policy = next;
          budget_actions.push_back("rerouted to " + downgrade_to);
          continue;
        }
        budget_actions.push_back("downgrade target " + downgrade_to + " unknown; kept " + model);
        downgraded = true;
        continue;
      }

      DecisionTrace& t = session.trace();
      fill_base(t);
      t.config = model;
      t.config_version = policy->version();
      for (auto& a : budget_actions) t.budget_actions.push_back(a);
      t.total = clock->now() - start;
      sum_cost(t);
      if (session.finished() && t.ok) {
        out.result = session.response();
        out.served = session.served();
        if (sink) {
          // A winner that was not streamed (ensemble, cascade) is replayed as chunks.
          if (!delivered_any) {
            for (auto& c : synthesize_chunks(*out.result)) {
              c.id = "chatcmpl-" + ctx.request_id.substr(ctx.request_id.find('_') + 1);
              if (!co_await sink(c)) break;
            }
          }
        }
      } else {
        out.result = std::unexpected(session.error());
      }
      out.trace = t;
      if (tracer) tracer->submit(DecisionTrace(t));
      co_return out;
    }
  }

  // Feeds health, the key pool and prompt-cache affinity with one attempt's outcome.
  // Budget downgrades and cancellations say nothing about the target's health.
  template <class Flights>
  void observe(const AttemptRun& run, const Flights& flights, std::uint64_t fingerprint) {
    if (!health || !run.downgrade_to.empty()) return;
    const AttemptResult& r = run.result;
    if (!r.ok && r.error.kind == ErrorKind::cancelled) return;
    for (const auto& f : flights) {
      if (f->plan.id != r.id) continue;
      Instant now = clock->now();
      health->observe(f->plan.target.key(), r, now);
      if (run.key_index >= 0 && !run.provider.empty()) health->observe_key(run.provider, run.key_index, r, now);
      if (r.ok && fingerprint) health->note_prefix(fingerprint, f->plan.target.key(), now);
    }
  }

  void fill_context(DecisionTrace& t, const CallContext& ctx, const std::string& model, bool stream) const {
    t.request_id = ctx.request_id;
    t.time = clock->wall_now();
    t.config = model;
    t.project = ctx.project;
    t.org = ctx.org;
    t.end_user = ctx.end_user;
    t.api_key_id = ctx.api_key_id;
    t.tags = ctx.tags;
    t.stream = stream;
  }

  // Everything the request spent, over all attempts.
  static void sum_cost(DecisionTrace& t) {
    Cost total;
    for (const auto& a : t.attempts) {
      total.input_usd += a.cost.input_usd;
      total.output_usd += a.cost.output_usd;
    }
    t.cost = total;
  }

  // Settles (or releases) an attempt's reservation; returns the trace's budget actions
  // (reservations, downgrades, unpriced flags, alerts fired).
  std::vector<std::string> settle(AttemptRun& run) {
    if (!budgets || !run.admission) return {};
    std::vector<std::string> actions = run.admission->actions();
    if (run.result.ok || !run.result.usage.empty()) {
      const ModelInfo* mi = config.catalog.find_model(run.admission->model);
      double usd = mi && mi->priced ? Catalog::cost(*mi, run.result.usage).total() : 0.0;
      for (const auto& a : budgets->settle(*run.admission, usd, run.result.usage, clock->now()))
        actions.push_back("alert: " + a.message());
    } else {
      budgets->release(*run.admission);
      actions.push_back("released reservation (attempt failed)");
    }
    return actions;
  }

  void fill_attempt_cost(DecisionTrace& t, std::uint32_t id) {
    for (auto& a : t.attempts) {
      if (a.id != id) continue;
      if (const ModelInfo* mi = config.catalog.find_model(a.model); mi && mi->priced) a.cost = Catalog::cost(*mi, a.usage);
    }
  }

};

// ---- bring your own client -----------------------------------------------------------------

struct ClientSession::State {
  Router::Impl* impl = nullptr;
  std::shared_ptr<const RouteTable> table;
  std::shared_ptr<const Policy> policy;
  ChatRequest req;
  CallContext ctx;
  Instant start{};
  std::unique_ptr<RoutingSession> session;
  std::unordered_map<std::uint32_t, std::pair<AttemptPlan, std::optional<Admission>>> open;
  std::optional<Error> rejected;
  bool finished = false;
  std::vector<AttemptPlan> admitted;  ///< what next() last handed out (Step::attempts views it)
  std::vector<std::uint32_t> cancels;  ///< what next() last said to stop (Step::cancel views it)
};

ClientSession::ClientSession(std::unique_ptr<State> s) : s_(std::move(s)) {}
ClientSession::~ClientSession() {
  // Attempts the app never reported hold no budget.
  if (s_ && s_->impl->budgets)
    for (auto& [id, p] : s_->open)
      if (p.second) s_->impl->budgets->release(*p.second);
}

Step ClientSession::next() {
  auto& s = *s_;
  s.cancels.clear();
  for (;;) {
    Instant now = s.impl->clock->now();
    Step step = s.session->next(now);
    s.cancels.insert(s.cancels.end(), step.cancel.begin(), step.cancel.end());
    if (step.kind != Step::Kind::attempt) {
      step.cancel = s.cancels;
      return step;
    }
    // Claim health admission and reserve each attempt's estimated cost; a refused attempt is
    // reported at once and the session asked again (it may fall back to another target or
    // fail with budget_exceeded).
    s.admitted.clear();
    for (auto& p : step.attempts) {
      if (s.impl->health && p.must_claim && !s.impl->health->claim(p.target.key(), now)) {
        AttemptResult r;
        r.id = p.id;
        r.not_admitted = true;
        s.session->report(std::move(r), now);
        continue;
      }
      if (!s.impl->budgets) {
        s.open[p.id] = {p, std::nullopt};
        s.admitted.push_back(p);
        continue;
      }
      const ModelInfo* mi = s.impl->config.catalog.find_model(p.target.model);
      auto adm = s.impl->budgets->admit(s.ctx, mi, estimate_input_tokens(s.req), s.req.max_tokens.value_or(1024), now);
      if (!adm) {
        AttemptResult r;
        r.id = p.id;
        r.error = adm.error();
        s.session->report(std::move(r), now);
        continue;
      }
      s.open[p.id] = {p, std::move(*adm)};
      s.admitted.push_back(p);
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
  const auto& cfg = s_->impl->config;
  const ProviderConfig* pc = cfg.find_provider(plan.target.provider);
  if (!pc) return fail(ErrorKind::no_route, "provider '" + plan.target.provider + "' is not configured");
  const Codec* codec = find_codec(pc->family);
  if (!codec) return fail(ErrorKind::no_route, "no codec for family '" + pc->family + "'");
  const ModelInfo* mi = cfg.catalog.find_model(plan.target.model);
  ProviderEndpoint ep{pc->name, pc->family, pc->base_url, pc->api_keys.empty() ? std::string{} : pc->api_keys.front(), pc->options};
  return codec->encode_request(s_->req, ep, mi ? mi->upstream : plan.target.model);
}

void ClientSession::report(std::uint32_t attempt_id, Result<ChatResponse> outcome, Nanos latency) {
  auto& s = *s_;
  auto it = s.open.find(attempt_id);
  if (it == s.open.end()) return;  // unknown or already reported
  Router::Impl::AttemptRun run;
  run.result.id = attempt_id;
  run.result.latency = latency;
  run.result.ttft = latency;
  if (outcome) {
    run.result.ok = true;
    run.result.usage = outcome->usage;
    run.result.response = std::move(*outcome);
  } else {
    run.result.error = outcome.error();
  }
  run.admission = std::move(it->second.second);
  run.provider = it->second.first.target.provider;
  for (auto& a : s.impl->settle(run)) s.session->trace().budget_actions.push_back(std::move(a));
  struct Flight {
    AttemptPlan plan;
  };
  std::vector<std::unique_ptr<Flight>> flights;
  flights.push_back(std::make_unique<Flight>(Flight{it->second.first}));
  s.impl->observe(run, flights, s.impl->health ? prompt_prefix_fingerprint(s.req) : 0);
  s.open.erase(it);
  Instant now = s.impl->clock->now();
  s.session->report(std::move(run.result), now);
  s.impl->fill_attempt_cost(s.session->trace(), attempt_id);
}

void ClientSession::report_http(std::uint32_t attempt_id, int status, const Headers& headers, std::string_view body,
                                Nanos latency) {
  auto it = s_->open.find(attempt_id);
  if (it == s_->open.end()) return;
  const ProviderConfig* pc = s_->impl->config.find_provider(it->second.first.target.provider);
  const Codec* codec = pc ? find_codec(pc->family) : nullptr;
  if (!codec) {
    report(attempt_id, fail(ErrorKind::no_route, "provider not configured"), latency);
    return;
  }
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
  DecisionTrace& t = s.session->trace();
  s.impl->fill_context(t, s.ctx, s.req.model, s.req.stream);
  t.config_version = s.policy->version();
  t.total = s.impl->clock->now() - s.start;
  Router::Impl::sum_cost(t);
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
    return fail(Error{ErrorKind::not_found, "model or routing config '" + request.model + "' does not exist", 404, {},
                      "$.model", {}, "model_not_found"});
  if (ctx.request_id.empty()) ctx.request_id = new_request_id();
  st->req = std::move(request);
  st->ctx = std::move(ctx);
  st->start = impl_->clock->now();
  SessionInputs in;
  in.request = &st->req;
  in.context = &st->ctx;
  in.budget = impl_->budgets.get();
  in.health = impl_->health.get();
  in.seed = impl_->seed_base ^ (impl_->seed_counter.fetch_add(1) * 0x9e3779b97f4a7c15ULL);
  in.start = st->start;
  in.wall_start = impl_->clock->wall_now();
  st->session = std::make_unique<RoutingSession>(st->policy, in);
  return std::unique_ptr<ClientSession>(new ClientSession(std::move(st)));
}

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Router::~Router() = default;

Result<std::unique_ptr<Router>> Router::create(Config config, RouterOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  impl->opts = options;
  impl->clock = options.clock ? options.clock : &SteadyClock::instance();
  impl->seed_base = options.seed ? options.seed : fnv1a64(new_request_id());
  impl->key_cursor = std::make_unique<std::atomic<std::uint64_t>[]>(impl->config.providers.size() + 1);
  impl->health = std::make_unique<HealthRegistry>(impl->config.health);
  for (const auto& p : impl->config.providers)
    if (p.api_keys.size() > 1) impl->health->set_key_pool(p.name, static_cast<int>(std::min<std::size_t>(p.api_keys.size(), 16)));
  auto table = RouteTable::build(impl->config, nullptr);
  if (!table) return fail(table.error());
  impl->table.store(std::move(*table));
  impl->transport = options.transport ? options.transport
                                      : make_http_transport(impl->ioc.get_executor(), options.transport_options);
  if (!impl->config.budgets.empty()) {
    BudgetOptions bo;
    const Json& bb = impl->config.budget_backend;
    bo.sqlite_path = bb.value("sqlite_path", std::string{});
    bo.redis_url = bb.value("redis_url", std::string{});
    bo.instance_id = bb.value("instance_id", std::string{});
    if (auto i = bb.find("sync_interval_ms"); i != bb.end() && i->is_number_integer()) bo.sync_interval = Millis{i->get<std::int64_t>()};
    if (auto i = bb.find("max_wildcard_ledgers"); i != bb.end() && i->is_number_integer())
      bo.max_wildcard_ledgers = i->get<std::size_t>();
    if (auto i = bb.find("evict_interval_ms"); i != bb.end() && i->is_number_integer()) bo.evict_interval = Millis{i->get<std::int64_t>()};
    if (bb.value("outage_policy", std::string{}) == "fair_share") bo.outage_policy = RedisOutagePolicy::fair_share;
    auto bm = BudgetManager::create(impl->config.budgets, impl->config.catalog, *impl->clock, std::move(bo));
    if (!bm) return fail(bm.error());
    impl->budgets = std::move(*bm);
  }
  if (options.open_tracer) {
    TracerOptions to;
    const Json& tc = impl->config.tracing;
    to.path = tc.value("path", std::string{});
    if (tc.value("enabled", true)) {
      to.capture_bodies = tc.value("capture_bodies", false);
      if (auto r = tc.find("redact_fields"); r != tc.end() && r->is_array())
        for (const auto& f : *r)
          if (f.is_string()) to.redact_fields.push_back(f.get<std::string>());
      if (auto q = tc.find("queue_capacity"); q != tc.end() && q->is_number_unsigned()) to.queue_capacity = q->get<std::size_t>();
      if (auto q = tc.find("batch_size"); q != tc.end() && q->is_number_unsigned()) to.batch_size = q->get<std::size_t>();
      if (auto q = tc.find("body_cap_bytes"); q != tc.end() && q->is_number_unsigned()) to.body_cap_bytes = q->get<std::size_t>();
      if (auto q = tc.find("retention_days"); q != tc.end() && q->is_number_integer()) to.retention_days = q->get<int>();
      if (auto q = tc.find("flush_interval_ms"); q != tc.end() && q->is_number_unsigned()) to.flush_interval = Millis{q->get<std::int64_t>()};
      auto tr = Tracer::open(to, *impl->clock);
      if (!tr) return fail(tr.error());
      impl->tracer = std::move(*tr);
    }
  }
  int n = std::max(1, options.io_threads);
  for (int i = 0; i < n; ++i) impl->threads.emplace_back([p = impl.get()] { p->ioc.run(); });
  return std::unique_ptr<Router>(new Router(std::move(impl)));
}

Completion Router::complete(ChatRequest request, CallContext ctx) {
  auto strand = net::make_strand(impl_->ioc);
  auto fut = net::co_spawn(strand, impl_->execute(std::move(request), std::move(ctx), nullptr), net::use_future);
  return fut.get();
}

Completion Router::stream(ChatRequest request, CallContext ctx, ChunkSink sink) {
  auto strand = net::make_strand(impl_->ioc);
  AsyncChunkSink as = [sink = std::move(sink)](const ChatChunk& c) -> net::awaitable<bool> { co_return sink(c); };
  auto fut = net::co_spawn(strand, impl_->execute(std::move(request), std::move(ctx), std::move(as)), net::use_future);
  return fut.get();
}

void Router::complete_async(ChatRequest request, CallContext ctx, std::function<void(Completion)> done) {
  auto strand = net::make_strand(impl_->ioc);
  net::co_spawn(strand, impl_->execute(std::move(request), std::move(ctx), nullptr),
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
net::any_io_executor Router::executor() noexcept { return impl_->ioc.get_executor(); }
const Clock& Router::clock() const noexcept { return *impl_->clock; }

}  // namespace modelux
