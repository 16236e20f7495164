// POST /v1/embeddings: OpenAI's embeddings API in front of Router::co_embed. The same key
// rules as chat (a key's model and config allowlists, the project it is pinned to), the end
// user and tags from the same headers; float or base64 answers (the OpenAI SDKs ask for base64
// unless told otherwise).
#include <algorithm>

#include "server/ingress.hpp"
#include "server/metrics.hpp"
#include "server/routes.hpp"

namespace modelux::proxy {

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

  // The same key rules, end user and tags as chat (ingress.cpp).
  auto edge = edge_context(c, ereq.model, ereq.user, Json());
  if (!edge) co_return client_error(openai_refusal(edge.error()));
  CallContext ctx = std::move(*edge);
  const std::string rid = ctx.request_id;
  const bool base64 = ereq.base64;

  st.in_flight.fetch_add(1, std::memory_order_relaxed);
  struct Dec {
    Proxy::State& s;
    ~Dec() { s.in_flight.fetch_sub(1, std::memory_order_relaxed); }
  } dec{st};
  // A client that hangs up stops the upstream call at once, as for chat.
  c.w.watch_client(ctx.cancel);
  EmbeddingCompletion done = co_await st.router->co_embed(std::move(ereq), std::move(ctx));
  c.w.stop_watching();
  if (st.metrics) st.metrics->observe(done.trace);
  Headers extra = {{"x-request-id", rid}};
  if (!done.result) {
    const Error& e = done.result.error();
    (http_status_for(e.kind) < 500 ? st.client_errors : st.upstream_errors).fetch_add(1, std::memory_order_relaxed);
    Reply r = error_reply(e);
    extra = with_retry_after(std::move(extra), e);
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
