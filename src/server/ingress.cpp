// Edge checks shared by the data-plane ingresses (see ingress.hpp).
#include "server/ingress.hpp"

#include <algorithm>

namespace modelux::proxy {

namespace {

Refusal refuse(int status, std::string message, std::string code, std::string param = {}) {
  Refusal r;
  r.status = status;
  r.error.kind = status == 403 ? ErrorKind::auth : ErrorKind::bad_request;
  r.error.message = std::move(message);
  r.error.code = std::move(code);
  r.error.path = std::move(param);
  return r;
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
std::optional<Refusal> check_tags(const std::vector<std::pair<std::string, std::string>>& tags, std::size_t metadata_keys,
                                  const EdgeLimits& lim) {
  if (tags.size() > lim.max_tags || metadata_keys > lim.max_tags)
    return refuse(400,
                  "too many tags: " + std::to_string(std::max(tags.size(), metadata_keys)) + " (metadata keys count as tags; at most " +
                      std::to_string(lim.max_tags) + ")",
                  "too_many_tags", "metadata");
  for (const auto& [k, v] : tags) {
    if (k.size() > lim.max_tag_key_bytes)
      return refuse(400, "a tag key is longer than " + std::to_string(lim.max_tag_key_bytes) + " bytes", "too_many_tags", "metadata");
    if (v.size() > lim.max_tag_value_bytes)
      return refuse(400, "the value of tag '" + k + "' is longer than " + std::to_string(lim.max_tag_value_bytes) + " bytes",
                    "too_many_tags", "metadata");
  }
  return std::nullopt;
}

}  // namespace

std::expected<CallContext, Refusal> edge_context(const RouteCtx& c, const std::string& model, const std::string& user,
                                                 const Json& metadata) {
  const Proxy::State& st = c.st;
  // What the key may ask for.
  const KeyIdentity* key = c.caller.key.get();
  if (model.starts_with('@')) {
    std::string_view slug = std::string_view(model).substr(1);
    if (!valid_slug(slug))
      return std::unexpected(refuse(400, "'" + model.substr(0, 80) + "' is not a valid config name: @ then [a-z0-9][a-z0-9_-]{0,63}",
                                    "invalid_slug", "model"));
    if (key && !key->limits.configs.empty() &&
        std::find(key->limits.configs.begin(), key->limits.configs.end(), slug) == key->limits.configs.end())
      return std::unexpected(refuse(403, "this key may not use config '" + model + "'", "model_not_allowed", "model"));
  } else if (key && !key->limits.models.empty() &&
             std::find(key->limits.models.begin(), key->limits.models.end(), model) == key->limits.models.end()) {
    return std::unexpected(refuse(403, "this key may not use model '" + model.substr(0, 80) + "'", "model_not_allowed", "model"));
  }

  CallContext ctx;
  if (key) {
    ctx.api_key_id = key->id;
    ctx.org = key->org;
  }
  ctx.project = c.caller.project;  // admit() let only admin keys override it
  if (const auto* u = c.req.header("x-modelux-end-user")) ctx.end_user = *u;
  else ctx.end_user = user;
  if (ctx.end_user.size() > 256) return std::unexpected(refuse(400, "the end user id is longer than 256 bytes", "invalid_end_user", "user"));
  if (const auto* t = c.req.header("x-modelux-tags")) {
    auto tags = parse_tags(*t, st.server.limits);
    if (!tags) return std::unexpected(refuse(400, tags.error().message, "invalid_tags", "x-modelux-tags"));
    ctx.tags = std::move(*tags);
  }
  std::size_t metadata_keys = metadata.is_object() ? metadata.size() : 0;
  if (metadata_keys <= st.server.limits.max_tags && metadata.is_object())
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
      if (it.value().is_string()) ctx.tags.emplace_back(it.key(), it.value().get<std::string>());
  if (auto e = check_tags(ctx.tags, metadata_keys, st.server.limits)) return std::unexpected(std::move(*e));
  ctx.request_id = new_request_id();
  ctx.cancel = std::make_shared<CancellationToken>();
  return ctx;
}

std::expected<CallContext, Refusal> edge_context(const RouteCtx& c, const ChatRequest& creq) {
  return edge_context(c, creq.model, creq.user, creq.metadata);
}

Reply openai_refusal(const Refusal& r) {
  return error_reply(r.status, r.error.kind, r.error.message, r.error.code, r.error.path);
}

Headers with_retry_after(Headers h, const Error& e) {
  if (e.retry_after && e.retry_after->count() >= 0) {
    auto ms = e.retry_after->count();
    h.emplace_back("retry-after", std::to_string((ms + 999) / 1000));
    h.emplace_back("retry-after-ms", std::to_string(ms));
  }
  // A budget refusal is modelux's own and stands until its window frees spend: the OpenAI SDKs
  // would otherwise retry a 429 at once (they honour x-should-retry before the status).
  if (e.kind == ErrorKind::budget_exceeded) h.emplace_back("x-should-retry", "false");
  return h;
}

}  // namespace modelux::proxy
