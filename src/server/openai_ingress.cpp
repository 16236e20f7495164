// POST /v1/chat/completions: the OpenAI-compatible data plane (JSON or SSE).
#include <algorithm>

#include "modelux/scrub.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

namespace {

constexpr std::string_view kJson = "application/json";

std::string error_body(const Error& e) {
  return scrubbed(openai_error_json(e).dump(-1, ' ', false, Json::error_handler_t::replace));
}

// The caller's SDK honours these when it retries (OpenAI's SDKs read retry-after-ms first).
Headers with_retry_after(Headers h, const Error& e) {
  if (e.retry_after && e.retry_after->count() >= 0) {
    auto ms = e.retry_after->count();
    h.emplace_back("retry-after", std::to_string((ms + 999) / 1000));
    h.emplace_back("retry-after-ms", std::to_string(ms));
  }
  return h;
}

// "k=v,k2=v2" → pairs; entries without '=' are errors (silently dropping them hid typos).
Result<std::vector<std::pair<std::string, std::string>>> parse_tags(std::string_view s, const EdgeLimits& lim) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!s.empty()) {
    auto comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) {
      auto eq = item.find('=');
      if (eq == std::string_view::npos || eq == 0)
        return fail(ErrorKind::bad_request, "x-modelux-tags takes k=v pairs separated by commas; got '" + std::string(item.substr(0, 80)) + "'",
                    "x-modelux-tags");
      if (out.size() >= lim.max_tags)
        return fail(ErrorKind::bad_request, "too many tags (at most " + std::to_string(lim.max_tags) + ")", "x-modelux-tags");
      out.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    }
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

// Tag count and sizes are bounded: every tag is a trace row and an index entry, and writing
// grew superlinearly with their number (100,000 metadata keys cost 10 s of writer CPU).
std::optional<Error> check_tags(const std::vector<std::pair<std::string, std::string>>& tags, std::size_t metadata_keys,
                                const EdgeLimits& lim) {
  auto bad = [](std::string m, std::string param) {
    Error e;
    e.kind = ErrorKind::bad_request;
    e.message = std::move(m);
    e.code = "too_many_tags";
    e.path = std::move(param);
    return e;
  };
  if (tags.size() > lim.max_tags || metadata_keys > lim.max_tags)
    return bad("too many tags: " + std::to_string(std::max(tags.size(), metadata_keys)) + " (metadata keys count as tags; at most " +
                   std::to_string(lim.max_tags) + ")",
               "metadata");
  for (const auto& [k, v] : tags) {
    if (k.size() > lim.max_tag_key_bytes)
      return bad("a tag key is longer than " + std::to_string(lim.max_tag_key_bytes) + " bytes", "metadata");
    if (v.size() > lim.max_tag_value_bytes)
      return bad("the value of tag '" + k + "' is longer than " + std::to_string(lim.max_tag_value_bytes) + " bytes", "metadata");
  }
  return std::nullopt;
}

Reply bad_request(std::string msg, std::string code, std::string param = {}) {
  return error_reply(400, ErrorKind::bad_request, std::move(msg), std::move(code), std::move(param));
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

  // What the key may ask for.
  const KeyIdentity* key = c.caller.key.get();
  if (creq.model.starts_with('@')) {
    std::string_view slug = std::string_view(creq.model).substr(1);
    if (!valid_slug(slug))
      co_return client_error(bad_request("'" + creq.model.substr(0, 80) + "' is not a valid config name: @ then [a-z0-9][a-z0-9_-]{0,63}",
                                         "invalid_slug", "model"));
    if (key && !key->limits.configs.empty() &&
        std::find(key->limits.configs.begin(), key->limits.configs.end(), slug) == key->limits.configs.end())
      co_return client_error(error_reply(403, ErrorKind::auth, "this key may not use config '" + creq.model + "'", "model_not_allowed", "model"));
  } else if (key && !key->limits.models.empty() &&
             std::find(key->limits.models.begin(), key->limits.models.end(), creq.model) == key->limits.models.end()) {
    co_return client_error(error_reply(403, ErrorKind::auth, "this key may not use model '" + creq.model.substr(0, 80) + "'",
                                       "model_not_allowed", "model"));
  }

  CallContext ctx;
  if (key) {
    ctx.api_key_id = key->id;
    ctx.org = key->org;
  }
  ctx.project = c.caller.project;  // admit() let only admin keys override it
  if (const auto* u = req.header("x-modelux-end-user")) ctx.end_user = *u;
  else ctx.end_user = creq.user;
  if (ctx.end_user.size() > 256) co_return client_error(bad_request("the end user id is longer than 256 bytes", "invalid_end_user", "user"));
  if (const auto* t = req.header("x-modelux-tags")) {
    auto tags = parse_tags(*t, st.server.limits);
    if (!tags) co_return client_error(bad_request(tags.error().message, "invalid_tags", "x-modelux-tags"));
    ctx.tags = std::move(*tags);
  }
  std::size_t metadata_keys = creq.metadata.is_object() ? creq.metadata.size() : 0;
  if (metadata_keys <= st.server.limits.max_tags && creq.metadata.is_object())
    for (auto it = creq.metadata.begin(); it != creq.metadata.end(); ++it)
      if (it.value().is_string()) ctx.tags.emplace_back(it.key(), it.value().get<std::string>());
  if (auto e = check_tags(ctx.tags, metadata_keys, st.server.limits)) co_return client_error(error_reply(*e));

  ctx.request_id = new_request_id();
  // A client that hangs up stops the request's upstream calls at once (not at the next
  // chunk or the attempt timeout).
  ctx.cancel = std::make_shared<CancellationToken>();
  w.watch_client(ctx.cancel);
  const std::string rid = ctx.request_id;
  const bool want_stream = creq.stream;
  const bool include_usage = creq.include_usage;
  Headers extra = {{"x-request-id", rid}};

  st.in_flight.fetch_add(1, std::memory_order_relaxed);
  struct Dec {
    Proxy::State& s;
    ~Dec() { s.in_flight.fetch_sub(1, std::memory_order_relaxed); }
  } dec{st};

  if (!want_stream) {
    Completion done = co_await st.router->co_complete(std::move(creq), std::move(ctx));
    w.stop_watching();
    if (!done.result) {
      const Error& e = done.result.error();
      (http_status_for(e.kind) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
      Reply r = error_reply(e);
      r.headers = with_retry_after(extra, e);
      co_return r;
    }
    st.ok.fetch_add(1, std::memory_order_relaxed);
    ChatResponse& resp = *done.result;
    std::string id = "chatcmpl-" + rid.substr(4);
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
    co_return co_await flush();
  };
  Completion done = co_await st.router->co_complete(std::move(creq), std::move(ctx), sink);
  w.stop_watching();
  if (done.result) {
    st.ok.fetch_add(1, std::memory_order_relaxed);
    if (!started) co_await flush();
    pending += kSseDone;
    co_await w.end_stream(pending);
    co_return std::nullopt;
  }
  const Error& e = done.result.error();
  (http_status_for(e.kind) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
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
