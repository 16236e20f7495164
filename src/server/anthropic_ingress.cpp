// POST /v1/messages and /v1/messages/count_tokens: the Anthropic Messages API in front of the
// Router, so Claude Code and the Anthropic SDKs reach any provider family through the same
// routing configs, keys, budgets and traces as the OpenAI ingress. The request becomes the
// unified ChatRequest (wire/anthropic_messages.hpp, the same translation the mock provider
// uses); the answer is rendered back as a `message`, or as Anthropic's event stream from the
// unified chunks whichever provider produced them. Errors are in Anthropic's shape.
#include "modelux/catalog.hpp"
#include "modelux/scrub.hpp"
#include "server/kept.hpp"
#include "wire/anthropic_messages.hpp"

namespace modelux::proxy {

namespace {

Reply anthropic_error(int status, std::string_view message, std::string_view request_id = {}) {
  Reply r;
  r.status = status;
  r.body = scrubbed(wire::anthropic_error_body(status, message, request_id).dump(-1, ' ', false, Json::error_handler_t::replace));
  return r;
}

// "messages[0].content: ..." in Anthropic's own "field: problem" form.
std::string with_path(const Error& e) {
  if (e.path.empty() || e.message.starts_with(e.path)) return e.message;
  return e.path + ": " + e.message;
}

Reply refusal_reply(const Refusal& r) { return anthropic_error(r.status, with_path(r.error)); }

// anthropic-version is a date ("2023-06-01"). The SDKs always send it; curl users may not, so
// a missing one is accepted, a malformed one is refused as Anthropic does.
bool valid_version(std::string_view v) noexcept {
  if (v.size() != 10 || v[4] != '-' || v[7] != '-') return false;
  for (std::size_t i = 0; i < v.size(); ++i)
    if (i != 4 && i != 7 && (v[i] < '0' || v[i] > '9')) return false;
  return true;
}

// The body as a unified request, or the 400 to answer. `count_only` accepts a body without
// max_tokens (count_tokens takes none).
std::variant<ChatRequest, Reply> parse_messages_request(const RouteCtx& c, bool count_only) {
  if (const std::string* v = c.req.header("anthropic-version"); v && !valid_version(*v))
    return anthropic_error(400, "anthropic-version: '" + v->substr(0, 40) + "' is not a version date like 2023-06-01");
  auto j = parse_json(c.req.body, ParseLimits{.max_bytes = c.st.max_body, .max_depth = 64});
  if (!j) return anthropic_error(400, "the request body is not valid JSON: " + j.error().message);
  if (count_only && j->is_object() && !j->contains("max_tokens")) (*j)["max_tokens"] = 1;
  auto parsed = wire::anthropic_request_from_native(*j);
  if (!parsed) return anthropic_error(400, with_path(parsed.error()));
  return std::move(*parsed);
}

std::string message_id(const std::string& rid) { return "msg_" + (rid.starts_with("req_") ? rid.substr(4) : rid); }

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace

net::awaitable<std::optional<Reply>> messages(RouteCtx& c) {
  Proxy::State& st = c.st;
  ResponseWriter& w = c.w;
  st.requests.fetch_add(1, std::memory_order_relaxed);
  auto client_error = [&](Reply r) -> std::optional<Reply> {
    st.client_errors.fetch_add(1, std::memory_order_relaxed);
    return r;
  };
  auto parsed = parse_messages_request(c, false);
  if (auto* r = std::get_if<Reply>(&parsed)) co_return client_error(std::move(*r));
  ChatRequest creq = std::get<ChatRequest>(std::move(parsed));
  auto edge = edge_context(c, creq);
  if (!edge) co_return client_error(refusal_reply(edge.error()));
  CallContext ctx = std::move(*edge);
  auto keep = co_await KeptRequest::begin(c, creq, ctx);
  if (!keep) co_return client_error(refusal_reply(keep.error()));
  std::shared_ptr<KeptRequest> kept = std::move(*keep);
  // A client that hangs up stops the request's upstream calls at once, unless it asked for
  // its answer to be kept.
  if (!kept) w.watch_client(ctx.cancel);
  const std::string rid = ctx.request_id;
  const std::string msg_id = message_id(rid);
  const std::string asked_model = creq.model;
  const bool want_stream = creq.stream;
  // request-id is the header the Anthropic SDKs expose (`_request_id`); x-request-id is ours.
  Headers extra = {{"x-request-id", rid}, {"request-id", rid}};

  st.in_flight.fetch_add(1, std::memory_order_relaxed);
  struct Dec {
    Proxy::State& s;
    ~Dec() { s.in_flight.fetch_sub(1, std::memory_order_relaxed); }
  } dec{st};
  auto failed = [&](const Error& e) {
    (http_status_for(e.kind) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
    Reply r = anthropic_error(http_status_for(e.kind), e.message, rid);
    r.headers = with_retry_after(extra, e);
    return r;
  };

  if (!want_stream) {
    Completion done = co_await st.router->co_complete(std::move(creq), std::move(ctx));
    w.stop_watching();
    if (!done.result) {
      Reply r = failed(done.result.error());
      if (kept) kept->store(r.status, r.body);
      co_return r;
    }
    st.ok.fetch_add(1, std::memory_order_relaxed);
    ChatResponse& resp = *done.result;
    resp.id = msg_id;
    if (!done.served.model.empty()) resp.model = done.served.model;
    extra.emplace_back("x-modelux-served-by", done.served.key());
    Reply r;
    r.body = dump(wire::anthropic_response_to_native(resp));
    r.headers = std::move(extra);
    if (kept) kept->store(200, r.body);
    co_return r;
  }

  st.streams.fetch_add(1, std::memory_order_relaxed);
  bool started = false;
  std::optional<wire::AnthropicStreamEncoder> enc;
  std::string events;
  // Writes what the encoder produced; false when the client is gone. The header goes out
  // with the first events (one send), and the chunks of one upstream read (ChatChunk::more)
  // together.
  auto flush = [&]() -> net::awaitable<bool> {
    bool ok = true;
    if (!started) {
      started = true;
      std::string content_type = "text/event-stream";
      ok = co_await w.start_stream(200, std::move(content_type), extra, events);
    } else if (!events.empty()) {
      ok = co_await w.write(events);
    }
    events.clear();
    co_return ok;
  };
  AsyncChunkSink sink = [&](const ChatChunk& ch) -> net::awaitable<bool> {
    if (!enc) enc.emplace(msg_id, ch.model.empty() ? asked_model : ch.model);
    enc->add(ch, events);
    if (ch.more) co_return true;
    co_return co_await flush();
  };
  if (kept) sink = keep_stream(kept, std::move(sink));
  Completion done = co_await st.router->co_complete(std::move(creq), std::move(ctx), sink);
  w.stop_watching();
  if (done.result) {
    st.ok.fetch_add(1, std::memory_order_relaxed);
    if (!enc) enc.emplace(msg_id, done.served.model.empty() ? asked_model : done.served.model);
    enc->finish(events);
    if (!(kept && kept->client_gone())) {
      if (started) co_await w.end_stream(events);  // the last events and the end in one send
      else if (co_await flush()) co_await w.end_stream();
    }
    if (kept) {
      ChatResponse resp = kept->accumulated();
      resp.id = msg_id;
      if (!done.served.model.empty()) resp.model = done.served.model;
      kept->store(200, dump(wire::anthropic_response_to_native(resp)));
    }
    co_return std::nullopt;
  }
  Reply r = failed(done.result.error());
  if (kept) kept->store(r.status, r.body);
  if (!started && events.empty()) co_return r;
  // The stream already started (or has events held for it): end it with Anthropic's error
  // event and no message_stop, so a truncated answer can never look like a clean end.
  if (!(kept && kept->client_gone())) {
    events += wire::sse_event("error", r.body);  // after the events still held
    if (started) {
      co_await w.end_stream(events);
    } else if (co_await flush()) {
      co_await w.end_stream();
    }
  }
  co_return std::nullopt;
}

net::awaitable<std::optional<Reply>> count_tokens(RouteCtx& c) {
  auto parsed = parse_messages_request(c, true);
  if (auto* r = std::get_if<Reply>(&parsed)) {
    c.st.client_errors.fetch_add(1, std::memory_order_relaxed);
    co_return std::move(*r);
  }
  ChatRequest creq = std::get<ChatRequest>(std::move(parsed));
  // The same model and config allowlists as a real request.
  auto edge = edge_context(c, creq);
  if (!edge) co_return refusal_reply(edge.error());
  // An estimate (about 4 characters a token, plus per-message and per-image charges): the
  // one modelux reserves budgets with; no provider is called.
  Reply r;
  r.body = dump(Json{{"input_tokens", estimate_input_tokens(creq)}});
  co_return r;
}

}  // namespace modelux::proxy
