// The embeddings executor: drives one embeddings request's RoutingSession over the Transport.
//
// The same session, AttemptTracker (health claim, key pick, budget reserve and settle) and trace
// as chat, with a simpler loop: an embeddings answer is one JSON body, never a stream, so there
// is nothing to commit and attempts run one at a time (an ensemble's members in turn). What
// differs is the exchange (wire's embedding codecs) and what the session is given to read: a
// stand-in ChatRequest whose single user message carries the inputs, so budget estimates,
// rules and cost-based strategies see the input size, with max_tokens 0 (nothing is generated).
// A target that is not an embedding model (a chat model in a mixed config) is skipped, not tried.
//
// Threading: one coroutine per request on a strand of the Router's io_context.
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "modelux/timer.hpp"
#include "router/router_impl.hpp"
#include "wire/codecs.hpp"

namespace modelux {

using net::use_awaitable;

namespace {

std::string ms_text(Nanos d) { return std::to_string(std::chrono::duration_cast<Millis>(d).count()) + " ms"; }

// What the routing session and the budget read in place of a chat request.
ChatRequest stand_in_request(const EmbeddingRequest& req) {
  ChatRequest c;
  c.model = req.model;
  c.max_tokens = 0;
  c.user = req.user;
  std::string text;
  if (!req.texts.empty()) {
    std::size_t n = 0;
    for (const auto& t : req.texts) n += t.size() + 1;
    text.reserve(n);
    for (const auto& t : req.texts) {
      text += t;
      text += '\n';
    }
  } else {
    // Token ids: 4 characters a token is what the estimate assumes.
    text.assign(static_cast<std::size_t>(estimate_embedding_tokens(req)) * 4, ' ');
  }
  c.messages.push_back(Message::user(std::move(text)));
  return c;
}

// One attempt's exchange: encode, send, decode. The tracker lives on the heap (GCC 12 and
// coroutine-frame locals of move-only types with destructors do not mix, see executor.cpp).
struct EmbedExchange {
  AttemptEnd end;
  std::optional<EmbeddingResponse> answer;
};

net::awaitable<EmbedExchange> exchange(AttemptTracker* tracker, const EmbeddingRequest* req, Transport* transport,
                                       const Clock* clock) {
  // A cancelled attempt reports back like any other: cancellation surfaces as error codes.
  co_await net::this_coro::throw_if_cancelled(false);
  EmbedExchange x;
  const AttemptPlan& plan = tracker->plan();
  const Instant t0 = clock->now();
  auto failed = [&](Error e) {
    x.end.answer = std::unexpected(std::move(e));
    x.end.latency = clock->now() - t0;
  };
  const ProviderConfig* pc = tracker->provider();
  const Codec* codec = pc ? find_codec(pc->family) : nullptr;
  if (!pc || !codec) {
    failed(error_of(ErrorKind::no_route, "provider '" + plan.target.provider + "' has no codec"));
    co_return x;
  }
  const ProviderEndpoint ep = tracker->endpoint();
  auto spec = encode_embedding_request(*req, ep, tracker->upstream_model());
  if (!spec) {
    failed(std::move(spec.error()));
    co_return x;
  }
  auto opened = co_await transport->open(*spec, plan.deadline);
  if (!opened) {
    Error e = std::move(opened.error());
    if (e.kind == ErrorKind::timeout) e.message = "attempt timeout after " + ms_text(clock->now() - t0);
    failed(std::move(e));
    co_return x;
  }
  HttpStream& s = **opened;
  tracker->observe_headers(s.headers());
  auto body = co_await s.read_all(plan.deadline);
  if (s.status() < 200 || s.status() >= 300) {
    failed(codec->decode_error(s.status(), s.headers(), body ? *body : std::string{}));
    co_return x;
  }
  if (!body) {
    Error e = std::move(body.error());
    if (e.kind == ErrorKind::timeout) e.message = "attempt timeout after " + ms_text(clock->now() - t0);
    failed(std::move(e));
    co_return x;
  }
  auto decoded = decode_embedding_response(pc->family, *req, s.headers(), *body);
  x.end.latency = clock->now() - t0;
  x.end.ttft = x.end.latency;
  if (!decoded) {
    x.end.answer = std::unexpected(std::move(decoded.error()));
    co_return x;
  }
  decoded->model = plan.target.model;
  x.end.usage = decoded->usage;
  ChatResponse stand_in;  // the session keeps a ChatResponse per answer; the vectors stay here
  stand_in.model = plan.target.model;
  stand_in.usage = decoded->usage;
  x.end.answer = std::move(stand_in);
  x.answer = std::move(*decoded);
  co_return x;
}

}  // namespace

net::awaitable<EmbeddingCompletion> Router::Impl::execute_embed(EmbeddingRequest req, CallContext ctx) {
  EmbeddingCompletion out;
  const Instant start = clock->now();
  if (ctx.request_id.empty()) ctx.request_id = new_request_id();
  auto tab = table.load(std::memory_order_acquire);
  const std::string model = req.model;
  std::vector<std::string> budget_actions;
  std::shared_ptr<const Policy> policy = tab->lookup(model);
  if (!policy) {
    Error e = error_of(ErrorKind::not_found,
                       model.starts_with("@") ? "routing config '" + model + "' does not exist"
                                              : "model '" + model +
                                                    "' is not available: not in the catalog, or its provider is not configured");
    e.status = 404;
    e.path = "$.model";
    e.code = "model_not_found";
    fill_context(out.trace, ctx, model, false);
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

  const ChatRequest stand_in = stand_in_request(req);
  auto ex = co_await net::this_coro::executor;
  std::unique_ptr<Timer> wake = clock->make_timer(ex);
  bool downgraded = false;
  for (;;) {  // twice at most: once more after a budget downgrade
    SessionInputs in;
    in.request = &stand_in;
    in.context = &ctx;
    in.budget = budgets.get();
    in.health = health.get();
    in.seed = next_seed();
    in.start = clock->now();
    in.wall_start = clock->wall_now();
    SessionLease lease(*this);
    RoutingSession& session = lease.get();
    session.reset(policy, in);
    std::string downgrade_to;
    std::vector<std::pair<std::uint32_t, EmbeddingResponse>> answers;
    std::vector<std::string> skipped;  // targets that are not embedding models

    for (;;) {
      Step step = session.next(clock->now());
      if (step.kind == Step::Kind::done || step.kind == Step::Kind::failed) break;
      if (step.kind == Step::Kind::attempt) {
        for (const AttemptPlan& plan : step.attempts) {
          AttemptReport r;
          const ModelInfo* mi = config.catalog.find_model(plan.target.model);
          if (!mi || !mi->embedding) {
            r = AttemptSkip{.id = plan.id, .reason = SkipReason::not_admitted};  // a skip, not a try: the session moves on
            skipped.push_back(plan.target.model);
          } else if (ctx.cancel && ctx.cancel->cancelled()) {
            AttemptResult gone;
            gone.id = plan.id;
            gone.answer = std::unexpected(error_of(ErrorKind::cancelled, "caller went away", true));
            r = std::move(gone);
          } else {
            auto tracker = std::make_unique<std::optional<AttemptTracker>>();
            std::optional<AttemptRefusal> refusal;
            {
              auto t = AttemptTracker::start(effects, plan, stand_in, ctx, {.allow_downgrade = !downgraded});
              if (t) tracker->emplace(std::move(*t));
              else refusal = std::move(t.error());
            }
            if (refusal) {
              if (refusal->why == AttemptRefusal::Why::downgrade && downgrade_to.empty()) {
                downgrade_to = refusal->downgrade_to;
                budget_actions.push_back(refusal->note);
              }
              r = refused_report(plan.id, *refusal);
            } else {
              AttemptTracker* tp = &**tracker;
              const EmbeddingRequest* rp = &req;
              Transport* trp = transport.get();
              const Clock* cp = clock;
              // The caller's CancellationToken (a client hang-up) stops the upstream call at
              // once: its hook posts to this strand, where the signal lives while the attempt runs.
              net::cancellation_signal sig;
              auto hook = std::make_shared<net::cancellation_signal*>(&sig);
              if (ctx.cancel)
                ctx.cancel->arm([ex, hook] {
                  net::post(ex, [hook] {
                    if (*hook) (*hook)->emit(net::cancellation_type::terminal);
                  });
                });
              auto xp = std::make_unique<EmbedExchange>();  // on the heap, like the chat executor's flights
              EmbedExchange& x = *xp;
              bool threw = false;
              try {
                auto op = exchange(tp, rp, trp, cp);
                auto token = net::bind_cancellation_slot(sig.slot(), use_awaitable);
                x = co_await net::co_spawn(ex, std::move(op), token);
              } catch (...) {
                threw = true;
              }
              if (ctx.cancel) ctx.cancel->disarm();
              *hook = nullptr;
              if (threw || (ctx.cancel && ctx.cancel->cancelled() && !x.answer)) {
                x.answer.reset();
                x.end.answer = std::unexpected(error_of(ErrorKind::cancelled, "caller went away", true));
              }
              if (x.answer) answers.emplace_back(plan.id, std::move(*x.answer));
              r = (*tracker)->finish(std::move(x.end), budget_actions, 0);
            }
          }
          session.report(std::move(r), clock->now());
          if (!downgrade_to.empty()) break;
        }
        if (!downgrade_to.empty() || (ctx.cancel && ctx.cancel->cancelled())) {
          session.cancel(clock->now(), downgrade_to.empty() ? "caller went away" : "budget downgrade");
          session.next(clock->now());
          break;
        }
        continue;
      }
      if (step.wake_at == Instant{}) {
        session.cancel(clock->now(), "routing session stalled (internal error)");
        session.next(clock->now());
        break;
      }
      co_await async_wait_until(*wake, step.wake_at, use_awaitable);
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
    const bool finished = session.finished();
    fill_context(t, ctx, model, false);
    t.config_version = policy->version();
    for (auto& a : budget_actions) t.budget_actions.push_back(std::move(a));
    for (const auto& s : skipped) t.reason += (t.reason.empty() ? "" : "; ") + ("skipped " + s + ": not an embedding model");
    t.tags.emplace_back("endpoint", "embeddings");  // tells embeddings from chat in trace queries
    t.total = clock->now() - start;
    if (finished && t.ok) {
      // The served attempt is the last successful one (attempts run one at a time).
      for (auto it = answers.rbegin(); it != answers.rend(); ++it) {
        out.result = std::move(it->second);
        break;
      }
      out.served = session.served();
      if (answers.empty()) out.result = std::unexpected(error_of(ErrorKind::internal, "served without an answer"));
    } else {
      Error e = session.error();
      if (e.kind == ErrorKind::no_route && !skipped.empty() && answers.empty())
        e.message = "no embedding model among the targets of '" + model + "' (" + e.message + ")";
      out.result = std::unexpected(std::move(e));
    }
    out.trace = t;
    if (tracer) tracer->submit(DecisionTrace(out.trace));
    co_return out;
  }
}

}  // namespace modelux
