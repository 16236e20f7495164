// POST /v1/chat/completions: the OpenAI-compatible data plane (JSON or SSE).
#include <algorithm>

#include "modelux/scrub.hpp"
#include "server/kept.hpp"
#include "server/metrics.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

namespace {

constexpr std::string_view kJson = "application/json";

std::string error_body(const Error& e) {
  return scrubbed(openai_error_json(e).dump(-1, ' ', false, Json::error_handler_t::replace));
}

}  // namespace

net::awaitable<std::optional<Reply>> chat_completions(RouteCtx& c) {
  Proxy::State& st = c.st;
  Request& req = c.req;
  ResponseWriter& w = c.w;
  st.requests.fetch_add(1, std::memory_order_relaxed);
  auto client_error = [&](Reply r) -> std::optional<Reply> {
    st.client_errors.fetch_add(1, std::memory_order_relaxed);
    return r;
  };
  auto parsed = parse_chat_request(req.body, ParseLimits{.max_bytes = st.max_body, .max_depth = 64});
  if (!parsed) co_return client_error(error_reply(400, parsed.error().kind, parsed.error().message, "invalid_request", parsed.error().path));
  ChatRequest creq = std::move(*parsed);

  auto edge = edge_context(c, creq);
  if (!edge) co_return client_error(openai_refusal(edge.error()));
  CallContext ctx = std::move(*edge);
  // Kept responses (kept.hpp): a request that opted in outlives its client; nullptr otherwise.
  auto keep = co_await KeptRequest::begin(c, creq, ctx);
  if (!keep) co_return client_error(openai_refusal(keep.error()));
  std::shared_ptr<KeptRequest> kept = std::move(*keep);
  // A client that hangs up stops the request's upstream calls at once (not at the next
  // chunk or the attempt timeout), unless its answer is kept.
  if (!kept) w.watch_client(ctx.cancel);
  const std::string rid = ctx.request_id;
  const bool want_stream = creq.stream;
  const bool include_usage = creq.include_usage;
  Headers extra;
  extra.reserve(2);  // x-request-id, then x-modelux-served-by or the retry headers
  extra.emplace_back("x-request-id", rid);

  st.in_flight.fetch_add(1, std::memory_order_relaxed);
  struct Dec {
    Proxy::State& s;
    ~Dec() { s.in_flight.fetch_sub(1, std::memory_order_relaxed); }
  } dec{st};

  if (!want_stream) {
    Completion done = co_await st.router->co_complete(std::move(creq), std::move(ctx));
    w.stop_watching();
    if (st.metrics) st.metrics->observe(done.trace);
    if (!done.result) {
      const Error& e = done.result.error();
      (http_status_for(e.kind) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
      Reply r = error_reply(e);
      r.headers = with_retry_after(extra, e);
      if (kept) kept->store(r.status, scrubbed(r.body));
      co_return r;
    }
    st.ok.fetch_add(1, std::memory_order_relaxed);
    ChatResponse& resp = *done.result;
    std::string id = "chatcmpl-";
    id.append(rid, 4);
    if (!done.served.model.empty()) resp.model = done.served.model;
    extra.emplace_back("x-modelux-served-by", done.served.key());
    Reply r;
    // An OpenAI-format provider's body goes out as received with our id and model (no
    // re-encode); any other answer is encoded from the unified response.
    if (!resp.relayed.empty()) {
      r.body = resp.relayed.with(id, resp.model);
    } else {
      resp.id = std::move(id);
      r.body = to_json(resp).dump(-1, ' ', false, Json::error_handler_t::replace);
    }
    r.headers = std::move(extra);
    if (kept) kept->store(200, r.body);
    co_return r;
  }

  st.streams.fetch_add(1, std::memory_order_relaxed);
  bool started = false;
  // Events not yet written: the chunks of one upstream read (ChatChunk::more) go out in one
  // write, and the stream's header with the first of them.
  std::string pending;
  auto flush = [&]() -> net::awaitable<bool> {
    bool ok = true;
    if (!started) {
      started = true;
      std::string content_type = "text/event-stream";
      ok = co_await w.start_stream(200, std::move(content_type), extra, pending);
    } else if (!pending.empty()) {
      ok = co_await w.write(pending);
    }
    pending.clear();
    co_return ok;
  };
  AsyncChunkSink sink = [&](const ChatChunk& ch) -> net::awaitable<bool> {
    if (!(ch.usage && ch.choices.empty() && !include_usage)) {
      // The provider's event, already what the caller gets (ChatChunk::sse): written as is.
      if (!ch.sse.empty() && (!ch.usage || include_usage)) {
        pending += ch.sse;
      } else if (ch.usage && !include_usage) {
        ChatChunk copy = ch;
        copy.usage.reset();
        pending += encode_sse_chunk(copy);
      } else {
        pending += encode_sse_chunk(ch);
      }
    }
    if (ch.more) co_return true;
    if (started && !pending.empty()) {  // flush() without its frame: once per relayed read
      const bool ok = co_await w.write(pending);
      pending.clear();
      co_return ok;
    }
    co_return co_await flush();
  };
  if (kept) sink = keep_stream(kept, std::move(sink));
  Completion done = co_await st.router->co_complete(std::move(creq), std::move(ctx), sink);
  w.stop_watching();
  if (st.metrics) st.metrics->observe(done.trace);
  if (done.result) {
    st.ok.fetch_add(1, std::memory_order_relaxed);
    if (!started) co_await flush();
    pending += kSseDone;
    co_await w.end_stream(pending);
    if (kept) {
      ChatResponse resp = kept->accumulated();
      resp.id = "chatcmpl-" + rid.substr(4);
      if (!done.served.model.empty()) resp.model = done.served.model;
      kept->store(200, to_json(resp).dump(-1, ' ', false, Json::error_handler_t::replace));
    }
    co_return std::nullopt;
  }
  const Error& e = done.result.error();
  (http_status_for(e.kind) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
  if (kept) kept->store(http_status_for(e.kind), error_body(e));
  if (!started && pending.empty()) {
    Reply r = error_reply(e);
    r.headers = with_retry_after(extra, e);
    co_return r;
  }
  // The stream already started: end it with an explicit error event and no [DONE], so a
  // truncated answer can never look like a clean end.
  if (!started) co_await flush();
  pending += "data: " + error_body(e) + "\n\n";
  co_await w.end_stream(pending);
  co_return std::nullopt;
}

}  // namespace modelux::proxy
