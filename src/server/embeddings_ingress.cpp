// POST /v1/embeddings: OpenAI's embeddings API in front of Router::co_embed. The same key
// rules as chat (a key's model and config allowlists, the project it is pinned to), the end
// user and tags from the same headers; float or base64 answers (the OpenAI SDKs ask for base64
// unless told otherwise).
#include <algorithm>

#include "server/metrics.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

namespace {

Reply bad_request(std::string msg, std::string code, std::string param = {}) {
  return error_reply(400, ErrorKind::bad_request, std::move(msg), std::move(code), std::move(param));
}

// "k=v,k2=v2" (x-modelux-tags) → pairs, bounded like chat's.
std::optional<std::string> parse_tag_header(std::string_view s, const EdgeLimits& lim,
                                            std::vector<std::pair<std::string, std::string>>& out) {
  while (!s.empty()) {
    auto comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) {
      auto eq = item.find('=');
      if (eq == std::string_view::npos || eq == 0) return "x-modelux-tags takes k=v pairs separated by commas";
      if (out.size() >= lim.max_tags) return "too many tags (at most " + std::to_string(lim.max_tags) + ")";
      if (eq > lim.max_tag_key_bytes || item.size() - eq - 1 > lim.max_tag_value_bytes) return "a tag is too long";
      out.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    }
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return std::nullopt;
}

}  // namespace

net::awaitable<std::optional<Reply>> embeddings(RouteCtx& c) {
  Proxy::State& st = c.st;
  st.requests.fetch_add(1, std::memory_order_relaxed);
  auto client_error = [&](Reply r) -> std::optional<Reply> {
    st.client_errors.fetch_add(1, std::memory_order_relaxed);
    return r;
  };
  auto parsed = parse_embedding_request(c.req.body, ParseLimits{.max_bytes = st.max_body, .max_depth = 64});
  if (!parsed) co_return client_error(error_reply(400, parsed.error().kind, parsed.error().message, "invalid_request", parsed.error().path));
  EmbeddingRequest ereq = std::move(*parsed);

  const KeyIdentity* key = c.caller.key.get();
  if (ereq.model.starts_with('@')) {
    std::string_view slug = std::string_view(ereq.model).substr(1);
    if (!valid_slug(slug))
      co_return client_error(bad_request("'" + ereq.model.substr(0, 80) + "' is not a valid config name: @ then [a-z0-9][a-z0-9_-]{0,63}",
                                         "invalid_slug", "model"));
    if (key && !key->limits.configs.empty() && std::ranges::find(key->limits.configs, slug) == key->limits.configs.end())
      co_return client_error(error_reply(403, ErrorKind::auth, "this key may not use config '" + ereq.model + "'", "model_not_allowed", "model"));
  } else if (key && !key->limits.models.empty() && std::ranges::find(key->limits.models, ereq.model) == key->limits.models.end()) {
    co_return client_error(
        error_reply(403, ErrorKind::auth, "this key may not use model '" + ereq.model.substr(0, 80) + "'", "model_not_allowed", "model"));
  }

  CallContext ctx;
  if (key) {
    ctx.api_key_id = key->id;
    ctx.org = key->org;
  }
  ctx.project = c.caller.project;
  if (const auto* u = c.req.header("x-modelux-end-user")) ctx.end_user = *u;
  else ctx.end_user = ereq.user;
  if (ctx.end_user.size() > 256) co_return client_error(bad_request("the end user id is longer than 256 bytes", "invalid_end_user", "user"));
  if (const auto* t = c.req.header("x-modelux-tags"))
    if (auto err = parse_tag_header(*t, st.server.limits, ctx.tags)) co_return client_error(bad_request(*err, "invalid_tags", "x-modelux-tags"));
  ctx.request_id = new_request_id();
  const std::string rid = ctx.request_id;
  const bool base64 = ereq.base64;

  st.in_flight.fetch_add(1, std::memory_order_relaxed);
  struct Dec {
    Proxy::State& s;
    ~Dec() { s.in_flight.fetch_sub(1, std::memory_order_relaxed); }
  } dec{st};
  // A client that hangs up stops the upstream call at once, as for chat.
  ctx.cancel = std::make_shared<CancellationToken>();
  c.w.watch_client(ctx.cancel);
  EmbeddingCompletion done = co_await st.router->co_embed(std::move(ereq), std::move(ctx));
  c.w.stop_watching();
  if (st.metrics) st.metrics->observe(done.trace);
  Headers extra = {{"x-request-id", rid}};
  if (!done.result) {
    const Error& e = done.result.error();
    (http_status_for(e.kind) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
    Reply r = error_reply(e);
    if (e.retry_after && e.retry_after->count() >= 0) {
      auto ms = e.retry_after->count();
      extra.emplace_back("retry-after", std::to_string((ms + 999) / 1000));
      extra.emplace_back("retry-after-ms", std::to_string(ms));
    }
    r.headers = std::move(extra);
    co_return r;
  }
  st.ok.fetch_add(1, std::memory_order_relaxed);
  extra.emplace_back("x-modelux-served-by", done.served.key());
  // Encoding thousands of floats is not free: a big answer is written off the io thread.
  Reply r;
  if (done.result->data.size() * (done.result->data.empty() ? 0 : done.result->data[0].size()) > 16384) {
    auto job = [resp = std::move(*done.result), base64] { return encode_embedding_response(resp, base64); };
    r.body = co_await st.workers->run(std::move(job));
  } else {
    r.body = encode_embedding_response(*done.result, base64);
  }
  r.headers = std::move(extra);
  co_return r;
}

}  // namespace modelux::proxy
