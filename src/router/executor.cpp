// The executor: drives one request's RoutingSession over the Transport.
//
// One request = one coroutine on a strand. Attempts run as child coroutines on the same
// strand (several at once for ensembles), each bound to a cancellation signal so losers and
// abandoned attempts stop their upstream I/O at once. The session decides; the executor only
// executes, through one AttemptTracker per attempt (attempt.hpp) and the stream relay.
//
// Exactly one attempt ever writes to the caller: the first attempt that hands output to the
// caller's sink commits the response (RoutingSession::commit) and owns it. From then on no
// other attempt may write (their writes are refused and their connections closed), the
// session never expires the owner by a routing timeout (only its stall timeout and
// max_stream_ms bound it), and no further attempt starts. Attempts the session ends (listed in
// Step::cancel) are stopped at once.
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "modelux/catalog.hpp"
#include "modelux/timer.hpp"
#include "router/router_impl.hpp"
#include "router/stream_relay.hpp"

namespace modelux {

using net::use_awaitable;

namespace {

// The session's verdict on an attempt it already ended (expired at its deadline, or
// abandoned); nullopt while the session still counts it as running.
// Attempt `id`'s trace record. Ids ascend and records are only ever dropped (a skip leaves
// none), so it sits at index id - 1 or before it.
const AttemptRecord* record_of(RoutingSession& session, std::uint32_t id) {
  const auto& attempts = session.trace().attempts;
  for (std::size_t i = std::min<std::size_t>(id, attempts.size()); i > 0; --i)
    if (attempts[i - 1].id == id) return &attempts[i - 1];
  return nullptr;
}

std::optional<Error> session_verdict(RoutingSession& session, std::uint32_t id) {
  const AttemptRecord* found = record_of(session, id);
  if (!found) return std::nullopt;
  const AttemptRecord& rec = *found;
  if (rec.outcome.empty()) return std::nullopt;
  Error e;
  e.kind = error_kind_from_string(rec.outcome).value_or(ErrorKind::internal);
  e.message = rec.error;
  e.status = rec.status;
  // The committed attempt was delivering; the session ends it only at max_stream_ms (or on the
  // caller's cancel). That is a limit of ours, not the provider failing: health must not count
  // it (issue #19: limits we enforce never open a target's breaker).
  if (session.committed() == id) e.local = true;
  return e;
}

// A stream cut after its output started (a stall, max_stream_ms, the caller hanging up, a
// dropped connection) usually ends without usage: OpenAI-format streams send it in their last
// event. The caller got that output and the provider bills it, so the trace and the budget
// must not record a free answer (a caller could otherwise hang up just before the end and
// never be charged). Estimated like the input: 4 characters a token.
void estimate_delivered_usage(AttemptEnd& end, std::size_t delivered_chars, const ChatRequest& req) {
  if (end.answer || !end.delivered || delivered_chars == 0 || end.usage.completion_tokens > 0) return;
  end.usage.completion_tokens = static_cast<std::int64_t>((delivered_chars + 3) / 4);
  if (end.usage.prompt_tokens == 0) end.usage.prompt_tokens = estimate_input_tokens(req);
}

}  // namespace

net::awaitable<Completion> Router::Impl::execute(ChatRequest req, CallContext ctx, AsyncChunkSink sink) {
  Completion out;
  const Instant start = clock->now();
  if (ctx.request_id.empty()) ctx.request_id = new_request_id();
  if (sink) req.stream = true;
  auto tab = table.load(std::memory_order_acquire);
  std::vector<std::string> budget_actions;
  std::vector<std::string> key_notes;  // key pool switches inside attempts (trace reason)
  const std::string model = req.model;

  std::shared_ptr<const Policy> policy = tab->lookup(model);
  if (!policy) {
    Error e = error_of(ErrorKind::not_found,
                       model.starts_with("@") ? "routing config '" + model + "' does not exist"
                                              : "model '" + model +
                                                    "' is not available: not in the catalog, or its provider is not configured");
    e.status = 404;
    e.path = "$.model";
    e.code = "model_not_found";
    fill_context(out.trace, ctx, model, req.stream);
    out.trace.ok = false;
    out.trace.error_kind = std::string(to_string(e.kind));
    out.trace.error_message = e.message;
    out.trace.decision = "rejected before routing";
    out.trace.reason = e.message;
    out.trace.total = clock->now() - start;
    out.result = std::unexpected(std::move(e));
    if (tracer) tracer->submit(DecisionTrace(out.trace));
    co_return out;
  }

  auto ex = co_await net::this_coro::executor;
  const std::uint64_t fingerprint = health ? prompt_prefix_fingerprint(req) : 0;
  const std::string chunk_id = sink ? chunk_id_for(ctx.request_id) : std::string{};  // streams only
  bool downgraded = false;
  for (;;) {  // runs twice at most: once more after a budget downgrade
    SessionInputs in;
    in.request = &req;
    in.context = &ctx;
    in.budget = budgets.get();
    in.health = health.get();
    in.seed = next_seed();
    in.start = clock->now();
    in.wall_start = clock->wall_now();
    SessionLease lease(*this);
    RoutingSession& session = lease.get();
    session.reset(policy, in);

    struct Flight {
      AttemptPlan plan;
      Instant started{};                              // when the session planned it (its start)
      net::cancellation_signal cancel;
      GatedSink gate;
      std::optional<AttemptTracker> tracker;          // started
      std::optional<AttemptRefusal> refusal;          // refused at start
      AttemptEnd end;                                 // how a started attempt ended
      std::optional<Error> verdict;                   // the session ended it first
      std::string key_note;                           // key pool switches, for the trace
      std::size_t delivered_chars = 0;                // text and tool arguments the caller got
      bool finished = false;
      bool cancelled = false;  // set with cancel.emit(): an attempt not started yet has no slot to hear it
    };
    std::vector<std::unique_ptr<Flight>> flights;
    std::vector<Flight*> arrived;
    // Every wait of this loop is on the Clock: on a ManualClock the executor runs on virtual time.
    std::unique_ptr<Timer> wake_timer = clock->make_timer(ex);
    Timer& wake = *wake_timer;
    std::size_t in_flight = 0;
    std::string downgrade_to;
    bool sink_gone = false;
    Flight* owner = nullptr;  // the attempt that writes to the caller, once one did
    // The caller's CancellationToken wakes this loop on the request's strand. The state is
    // shared so a late post after the request ended finds `wake == nullptr` and does nothing.
    struct CancelState {
      bool requested = false;
      Timer* wake = nullptr;
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

    auto stop_flight = [](Flight& f) {
      f.cancelled = true;
      f.cancel.emit(net::cancellation_type::terminal);
    };
    // The session's verdict on a flight it ended. A timeout at the total budget before the
    // attempt's own timeout_ms (and ttft_timeout_ms) had passed came from a limit of ours: the
    // provider was not given its time, so health must not count it (issue #19: limits we
    // enforce never open a breaker). The trace still says "timeout".
    // Only the request's total budget counts as ours here: a node's deadline (an ensemble's
    // member timeout_ms, a nested config's budget) is how that config bounds the attempt, and
    // a target that hangs through it is charged as before.
    const Instant total_deadline = in.start + policy->total_budget();
    auto cut_short = [&, total_deadline](const Flight& f) {
      const Instant now = clock->now();
      const AttemptPlan& p = f.plan;
      const bool own_timeout = p.timeout.count() > 0 && now >= f.started + p.timeout;
      const bool own_ttft = p.ttft_timeout.count() > 0 && now >= f.started + p.ttft_timeout;
      return now >= total_deadline && !own_timeout && !own_ttft;
    };
    auto verdict_of = [&](const Flight& f) {
      std::optional<Error> v = session_verdict(session, f.plan.id);
      if (v && v->kind == ErrorKind::timeout && !v->local && cut_short(f)) v->local = true;
      return v;
    };
    // The same for an attempt whose own transport deadline (the plan's, already clamped to
    // the budget) fired first: health sees a local verdict, the trace the attempt's timeout.
    auto judge_own_timeout = [&](Flight& f) {
      if (f.verdict || f.end.answer || f.end.answer.error().kind != ErrorKind::timeout || f.end.answer.error().local) return;
      if (!cut_short(f)) return;
      Error v = f.end.answer.error();
      v.local = true;
      f.verdict = std::move(v);
    };
    // Attempts the session ended (Step::cancel: expired, ensemble losers, displaced by a
    // commit) stop at once and can never write again; health will see the session's verdict
    // (a timeout counts, an abandonment does not), not our cancellation.
    auto stop_ended_by_session = [&](std::span<const std::uint32_t> ids) {
      for (std::uint32_t id : ids)
        for (auto& f : flights)
          if (f->plan.id == id && !f->finished && !f->cancelled) {
            f->verdict = verdict_of(*f);
            stop_flight(*f);
          }
    };
    // Commits the response to `f` if the session still lets it write; every other running
    // attempt is stopped at once (the session lists them in the next Step::cancel too).
    auto commit = [&](Flight& f) {
      if (!session.commit(f.plan.id, clock->now())) return false;
      owner = &f;
      for (auto& o : flights)
        if (o.get() != &f && !o->finished && !o->cancelled) stop_flight(*o);
      // The loop sleeps until the wake-up the session gave before the commit (the attempt
      // deadline or the budget). A commit changes it: max_stream_ms now counts from here, and
      // the routing deadlines are gone. Wake the loop so it asks the session again; without
      // this max_stream_ms was only enforced once the old deadline had passed.
      wake.cancel();
      return true;
    };

    for (;;) {
      Instant wake_at{};
      {
        Step step = session.next(clock->now());
        stop_ended_by_session(step.cancel);
        if (step.kind == Step::Kind::done || step.kind == Step::Kind::failed) break;
        if (step.kind == Step::Kind::attempt) {
          for (const auto& plan : step.attempts) {
            auto f = std::make_unique<Flight>();
            f->plan = plan;
            // The instant the session planned it at (its deadline is counted from there), not
            // now: on a real clock now is a few microseconds later, and an attempt's own timeout
            // firing at its deadline would look like one cut short.
            const AttemptRecord* rec = record_of(session, plan.id);
            f->started = rec ? in.start + rec->start_offset : clock->now();
            Flight* fp = f.get();
            if (sink && !plan.needs_full_response) {
              fp->gate.admit = [&, fp]() {
                if (sink_gone || cancel_state->requested) return SinkVerdict::caller_gone;
                if (fp->cancelled || (owner && owner != fp)) return SinkVerdict::not_owner;
                if (!owner && !commit(*fp)) return SinkVerdict::not_owner;
                return SinkVerdict::written;
              };
              fp->gate.sink = &sink;
              fp->gate.gone = &sink_gone;
              fp->gate.delivered_chars = &fp->delivered_chars;
            }
            flights.push_back(std::move(f));
            ++in_flight;
            net::co_spawn(
                ex,
                [this, fp, &req, &ctx, &chunk_id, downgraded]() -> net::awaitable<void> {
                  // A cancelled attempt must still report back (the request waits for it), so
                  // cancellation surfaces as error codes, never as exceptions.
                  co_await net::this_coro::throw_if_cancelled(false);
                  try {
                    // No co_await while `t` is alive: GCC 12 mishandles such locals in
                    // coroutine frames (seen as a corrupted refusal under load).
                    bool started = false;
                    if (fp->cancelled) {
                      fp->refusal = AttemptRefusal{};
                      fp->refusal->error = error_of(ErrorKind::cancelled, "attempt abandoned before it started", true);
                    } else {
                      auto t = AttemptTracker::start(effects, fp->plan, req, ctx, {.allow_downgrade = !downgraded});
                      if (t) {
                        fp->tracker.emplace(std::move(*t));
                        started = true;
                      } else {
                        fp->refusal = std::move(t.error());
                      }
                    }
                    if (started) {
                      RelayArgs args{.request = &req,
                                     .tracker = &*fp->tracker,
                                     .transport = transport.get(),
                                     .clock = clock,
                                     .sink = fp->gate ? &fp->gate : nullptr,
                                     .chunk_id = chunk_id,
                                     .default_stall = opts.default_stall_timeout};
                      fp->end = co_await relay_attempt(args);
                      // A key of a pool refused (429, quota, auth) before anything reached the
                      // caller: the same request goes again on another key of the pool.
                      while (!fp->end.answer && !fp->end.delivered && !fp->cancelled &&
                             fp->tracker->switch_key_after(fp->end.answer.error(), fp->key_note))
                        fp->end = co_await relay_attempt(args);
                    }
                  } catch (...) {
                    fp->end = AttemptEnd{};
                    fp->end.answer = std::unexpected(error_of(ErrorKind::cancelled, "attempt abandoned", true));
                  }
                },
                // The attempt counts as finished in its completion handler, never at the end of
                // its body: co_spawn's entry point resumes the coroutine once more after a body
                // that never suspended (a budget refusal, a breaker skip), and that resumption
                // clears the coroutine's cancellation slot, which lives in this Flight's signal.
                // Reporting from the body let the request free the Flight first, so the late
                // resumption wrote into freed (and, under concurrency, reused) memory: issue
                // #11's SIGSEGV in cancellation_slot::clear(). The handler is dispatched as the
                // coroutine's very last step.
                net::bind_cancellation_slot(fp->cancel.slot(), [fp, &arrived, &wake](std::exception_ptr e) {
                  if (e) {  // the body catches everything; an escaped exception still reports back
                    fp->end = AttemptEnd{};
                    fp->end.answer = std::unexpected(error_of(ErrorKind::cancelled, "attempt abandoned", true));
                  }
                  fp->finished = true;
                  arrived.push_back(fp);
                  wake.cancel();
                }));
          }
          continue;
        }
        if (in_flight == 0 && step.wake_at == Instant{} && arrived.empty() && !caller_gone()) {
          session.cancel(clock->now(), "routing session stalled (internal error)");
          session.next(clock->now());
          break;
        }
        wake_at = step.wake_at;
      }
      // Wait for a result, or until the session's timer (a committed stream without
      // max_stream_ms has none). A cancellation that landed before this point found no pending
      // wait to cancel: check the flag before sleeping, never only after.
      if (arrived.empty() && !caller_gone()) {
        const Instant until = wake_at == Instant{} ? clock->now() + std::chrono::hours(24) : wake_at;
        co_await async_wait_until(wake, until, use_awaitable);
      }
      for (Flight* fp : arrived) {
        --in_flight;
        AttemptReport report;
        if (fp->refusal) {
          if (fp->refusal->why == AttemptRefusal::Why::downgrade && downgrade_to.empty()) {
            downgrade_to = fp->refusal->downgrade_to;
            budget_actions.push_back(fp->refusal->note);
          }
          report = refused_report(fp->plan.id, *fp->refusal);
        } else {
          judge_own_timeout(*fp);
          fp->end.session_verdict = fp->verdict;
          estimate_delivered_usage(fp->end, fp->delivered_chars, req);
          report = fp->tracker->finish(std::move(fp->end), budget_actions, fingerprint);
        }
        if (!fp->key_note.empty()) key_notes.push_back(std::move(fp->key_note));
        if (AttemptResult* r = std::get_if<AttemptResult>(&report); r && !r->answer && caller_gone())
          r->answer = std::unexpected(error_of(ErrorKind::cancelled, "caller went away", true));
        session.report(std::move(report), clock->now());
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
          if (!f->cancelled && !f->verdict) f->verdict = verdict_of(*f);
          stop_flight(*f);
        }
    };
    stop_unfinished();
    std::vector<std::string> drained_actions;  // attempts the session no longer counts
    while (in_flight > 0) {
      if (arrived.empty()) {
        co_await async_wait_until(wake, clock->now() + std::chrono::milliseconds(100), use_awaitable);
        stop_unfinished();
      }
      for (Flight* fp : arrived) {
        --in_flight;
        if (fp->tracker) {
          judge_own_timeout(*fp);
          fp->end.session_verdict = fp->verdict;
          estimate_delivered_usage(fp->end, fp->delivered_chars, req);
          // Late for the session (it ended this attempt, e.g. at max_stream_ms): no decision,
          // but what it spent reaches its trace record.
          AttemptResult late = fp->tracker->finish(std::move(fp->end), drained_actions, fingerprint);
          session.report(std::move(late), clock->now());
        }
      }
      arrived.clear();
    }

    if (!downgrade_to.empty() && !downgraded) {
      downgraded = true;
      if (auto next = tab->lookup(downgrade_to)) {
        policy = next;
        budget_actions.push_back("rerouted to " + downgrade_to);
      } else {
        budget_actions.push_back("downgrade target " + downgrade_to + " unknown; kept " + model);
      }
      continue;
    }

    DecisionTrace& t = session.trace();
    // Read before the total is overwritten: the session's "finished" is a non-zero total, and
    // a request served in no time (virtual time, an instant provider) has a zero total here.
    const bool finished = session.finished();
    fill_context(t, ctx, model, req.stream);
    t.config_version = policy->version();
    for (auto& a : budget_actions) t.budget_actions.push_back(std::move(a));
    for (auto& n : key_notes) {
      t.reason += t.reason.empty() ? "" : "; ";
      t.reason += n;
    }
    t.total = clock->now() - start;
    if (finished && t.ok) {
      // Moved, not copied (the answer's body is the relayed upstream body): the lease clears
      // the session when this scope ends and nothing reads its response before that.
      out.result = std::move(const_cast<ChatResponse&>(session.response()));
      out.served = session.served();
      // A winner that was not streamed (ensemble, cascade) is replayed as chunks: no attempt
      // is running any more, so this is the only writer.
      if (sink && !owner) {
        for (auto& c : synthesize_chunks(*out.result)) {
          c.id = chunk_id;
          if (!co_await sink(c)) break;
        }
      }
    } else {
      out.result = std::unexpected(session.error());
    }
    if (tracer && config.tracing_options.capture_bodies) {
      // tracing.capture_bodies: the request as the caller sent it and the answer as served, in
      // OpenAI's shape. The tracer redacts and caps them on its writer thread.
      t.request_body = to_json(req).dump(-1, ' ', false, Json::error_handler_t::replace);
      if (out.result) t.response_body = to_json(*out.result).dump(-1, ' ', false, Json::error_handler_t::replace);
    }
    // Moved out (one copy for the tracer at most): reset() starts the next trace afresh.
    if (tracer) tracer->submit(DecisionTrace(t));
    out.trace = std::move(t);
    co_return out;
  }
}

void Router::Impl::fill_context(DecisionTrace& t, const CallContext& ctx, const std::string& model, bool stream) const {
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

Router::Impl::SessionLease::SessionLease(Impl& impl) : pool_(*impl.pools[impl.shard_here()]) {
  {
    std::lock_guard lk(pool_.mu);
    ++pool_.leased;
    if (!pool_.idle.empty()) {
      s_ = std::move(pool_.idle.back());
      pool_.idle.pop_back();
    }
  }
  if (!s_) s_ = std::make_unique<RoutingSession>();
}

Router::Impl::SessionLease::~SessionLease() {
  s_->clear();  // a parked session holds no policy or response body
  std::vector<std::unique_ptr<RoutingSession>> surplus;  // freed outside the lock
  std::lock_guard lk(pool_.mu);
  if (pool_.idle.size() < kMaxPooledSessions) pool_.idle.push_back(std::move(s_));
  if (--pool_.leased == 0 && pool_.idle.size() > kQuietPooledSessions) {
    auto keep = pool_.idle.begin() + static_cast<std::ptrdiff_t>(kQuietPooledSessions);
    surplus.assign(std::make_move_iterator(keep), std::make_move_iterator(pool_.idle.end()));
    pool_.idle.erase(keep, pool_.idle.end());
  }
}

}  // namespace modelux
