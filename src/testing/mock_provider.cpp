#include "modelux/testing.hpp"

#include <optional>
#include <set>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/redirect_error.hpp>

#include "modelux/timer.hpp"
#include "modelux/transport.hpp"
#include "server/http_server.hpp"
#include "testing/native.hpp"
#include "transport/send.hpp"
#include "wire/codecs.hpp"

namespace modelux::mock {

namespace net = boost::asio;

Result<Behavior> behavior_from_json(const Json& j, const Behavior& base, const std::string& path) {
  if (!j.is_object()) return fail(ErrorKind::invalid_config, "behavior must be an object", path);
  Behavior b = base;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const Json& v = it.value();
    std::string p = path + "." + k;
    auto num = [&](double& dst, double lo, double hi) -> Result<void> {
      if (!v.is_number() || v.get<double>() < lo || v.get<double>() > hi)
        return fail(ErrorKind::invalid_config, "'" + k + "' must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", p);
      dst = v.get<double>();
      return {};
    };
    auto integer = [&](int& dst, int lo, int hi) -> Result<void> {
      if (!v.is_number_integer() || v.get<int>() < lo || v.get<int>() > hi)
        return fail(ErrorKind::invalid_config, "'" + k + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", p);
      dst = v.get<int>();
      return {};
    };
    Result<void> r;
    if (k == "latency_ms") r = num(b.latency_ms, 0, 600000);
    else if (k == "latency_jitter_ms") r = num(b.latency_jitter_ms, 0, 600000);
    else if (k == "ttft_ms") r = num(b.ttft_ms, 0, 600000);
    else if (k == "chunk_interval_ms") r = num(b.chunk_interval_ms, 0, 600000);
    else if (k == "chunks") r = integer(b.chunks, 1, 10000);
    else if (k == "error_status") r = integer(b.error_status, 0, 599);
    else if (k == "error_rate") r = num(b.error_rate, 0, 1);
    else if (k == "retry_after_ms") r = num(b.retry_after_ms, -1, 3600000);
    else if (k == "hang_rate") r = num(b.hang_rate, 0, 1);
    else if (k == "disconnect_after_chunks") r = integer(b.disconnect_after_chunks, -1, 10000);
    else if (k == "malformed_rate") r = num(b.malformed_rate, 0, 1);
    else if (k == "rate_limit_requests") r = integer(b.rate_limit_requests, 0, 100000000);
    else if (k == "rate_limit_window_ms") r = num(b.rate_limit_window_ms, 1, 3600000);
    else if (k == "cache_read_tokens") r = integer(b.cache_read_tokens, 0, 100000000);
    else if (k == "cache_write_tokens") r = integer(b.cache_write_tokens, 0, 100000000);
    else if (k == "tool_arguments") {
      if (!v.is_string() || !parse_json(v.get<std::string>()) || !parse_json(v.get<std::string>())->is_object())
        return fail(ErrorKind::invalid_config, "'tool_arguments' must be a string holding a JSON object", p);
      b.tool_arguments = v.get<std::string>();
    } else if (k == "echo_key") {
      if (!v.is_boolean()) return fail(ErrorKind::invalid_config, "'echo_key' must be a boolean", p);
      b.echo_key = v.get<bool>();
    } else if (k == "text") {
      if (!v.is_string()) return fail(ErrorKind::invalid_config, "'text' must be a string", p);
      b.text = v.get<std::string>();
    } else return fail(ErrorKind::invalid_config, "unknown behavior key '" + k + "'", p);
    if (!r) return fail(r.error());
  }
  return b;
}

Json to_json(const Behavior& b) {
  return {{"latency_ms", b.latency_ms}, {"latency_jitter_ms", b.latency_jitter_ms}, {"ttft_ms", b.ttft_ms},
          {"chunk_interval_ms", b.chunk_interval_ms}, {"chunks", b.chunks}, {"error_status", b.error_status},
          {"error_rate", b.error_rate}, {"retry_after_ms", b.retry_after_ms}, {"hang_rate", b.hang_rate},
          {"disconnect_after_chunks", b.disconnect_after_chunks}, {"malformed_rate", b.malformed_rate},
          {"rate_limit_requests", b.rate_limit_requests}, {"rate_limit_window_ms", b.rate_limit_window_ms},
          {"text", b.text}, {"echo_key", b.echo_key}, {"cache_read_tokens", b.cache_read_tokens},
          {"cache_write_tokens", b.cache_write_tokens}, {"tool_arguments", b.tool_arguments}};
}

namespace {
// The credential a request carried, whatever the family puts it in (what a real provider's
// 401 would quote back).
std::string presented_credential(const http_server::Request& req) {
  if (const auto* a = req.header("authorization")) return a->starts_with("Bearer ") ? a->substr(7) : *a;
  for (const char* h : {"x-api-key", "api-key", "x-goog-api-key"})
    if (const auto* v = req.header(h)) return *v;
  auto k = req.query.find("key=");
  if (k != std::string::npos) return req.query.substr(k + 4, req.query.find('&', k) - k - 4);
  return "(none)";
}
}  // namespace

struct MockProvider::State {
  mutable std::mutex mu;
  Behavior defaults;
  std::map<std::string, Behavior> models;
  Random rng{42};
  struct Counters {
    std::uint64_t requests = 0, errors = 0, hangs = 0, disconnects = 0, malformed = 0, rate_limited = 0, streams = 0;
    // Streams written to the end, and streams whose reader went away first (a cancel seen
    // from the provider's side).
    std::uint64_t streams_completed = 0, streams_abandoned = 0;
    Instant window_start{};
    int window_count = 0;
  };
  std::map<std::string, Counters> counters;
  std::uint64_t total = 0;
  // Provider keys: how many requests presented each key, and the keys answered with a 401
  // (so a test can watch a key pool spread requests and drop a revoked key).
  std::map<std::string, std::uint64_t> keys_seen;
  std::map<std::string, std::uint64_t> key_models_seen;  ///< "key@model" -> requests
  std::set<std::string> revoked_keys;
  std::map<std::string, double> rate_limited_keys;  ///< key -> retry-after ms (< 0: none)

  Result<void> configure(const Json& doc) {
    if (!doc.is_object()) return fail(ErrorKind::invalid_config, "mock config must be an object", "$");
    std::lock_guard lk(mu);
    Behavior nd = defaults;
    if (auto d = doc.find("default"); d != doc.end()) {
      auto b = behavior_from_json(*d, defaults, "$.default");
      if (!b) return fail(b.error());
      nd = *b;
    }
    std::map<std::string, Behavior> nm = models;
    if (auto m = doc.find("models"); m != doc.end()) {
      if (!m->is_object()) return fail(ErrorKind::invalid_config, "'models' must be an object", "$.models");
      for (auto it = m->begin(); it != m->end(); ++it) {
        if (it.value().is_null()) {
          nm.erase(it.key());
          continue;
        }
        auto b = behavior_from_json(it.value(), nd, "$.models." + it.key());
        if (!b) return fail(b.error());
        nm[it.key()] = *b;
      }
    }
    std::optional<std::set<std::string>> revoked;
    if (auto r = doc.find("revoked_keys"); r != doc.end()) {
      if (!r->is_array()) return fail(ErrorKind::invalid_config, "'revoked_keys' must be an array of strings", "$.revoked_keys");
      revoked.emplace();
      for (std::size_t i = 0; i < r->size(); ++i) {
        if (!(*r)[i].is_string())
          return fail(ErrorKind::invalid_config, "'revoked_keys' must be an array of strings", "$.revoked_keys[" + std::to_string(i) + "]");
        revoked->insert((*r)[i].get<std::string>());
      }
    }
    // {"key": retry_after_ms}: that key is answered 429 (retry-after in ms; a negative value
    // sends none), as a provider answers one key of a pool that used up its own quota.
    std::optional<std::map<std::string, double>> limited;
    if (auto r = doc.find("rate_limited_keys"); r != doc.end()) {
      if (!r->is_object())
        return fail(ErrorKind::invalid_config, "'rate_limited_keys' must be an object of key: retry_after_ms", "$.rate_limited_keys");
      limited.emplace();
      for (auto it = r->begin(); it != r->end(); ++it) {
        if (!it.value().is_number())
          return fail(ErrorKind::invalid_config, "'rate_limited_keys' values are retry-after milliseconds", "$.rate_limited_keys." + it.key());
        (*limited)[it.key()] = it.value().get<double>();
      }
    }
    if (auto s = doc.find("seed"); s != doc.end() && s->is_number_unsigned()) rng.reseed(s->get<std::uint64_t>());
    defaults = nd;
    models = std::move(nm);
    if (revoked) revoked_keys = std::move(*revoked);
    if (limited) rate_limited_keys = std::move(*limited);
    return {};
  }

  Json config_json() const {
    std::lock_guard lk(mu);
    Json m = Json::object();
    for (const auto& [k, v] : models) m[k] = to_json(v);
    return {{"default", to_json(defaults)}, {"models", m}, {"revoked_keys", revoked_keys}, {"rate_limited_keys", rate_limited_keys}};
  }

  Json stats_json() const {
    std::lock_guard lk(mu);
    Json m = Json::object();
    for (const auto& [k, c] : counters)
      m[k] = {{"requests", c.requests}, {"errors", c.errors}, {"hangs", c.hangs}, {"disconnects", c.disconnects},
              {"malformed", c.malformed}, {"rate_limited", c.rate_limited}, {"streams", c.streams},
              {"streams_completed", c.streams_completed}, {"streams_abandoned", c.streams_abandoned}};
    return {{"total", total}, {"models", m}, {"keys", keys_seen}, {"key_models", key_models_seen}};
  }

  // Counts the request's key; true when that key is revoked (the request gets a 401).
  // The last request each model received, in the unified shape (GET /_mock/last_request):
  // lets a test see what a translation delivered upstream.
  std::map<std::string, Json> last_request;
  void note_request(const std::string& model, const ChatRequest& r) {
    Json j = to_json(r);
    std::lock_guard lk(mu);
    last_request[model] = std::move(j);
  }
  void note_stream_end(const std::string& model, bool completed) {
    std::lock_guard lk(mu);
    ++(completed ? counters[model].streams_completed : counters[model].streams_abandoned);
  }

  bool note_key(const std::string& key, const std::string& model) {
    std::lock_guard lk(mu);
    ++keys_seen[key];
    ++key_models_seen[key + "@" + model];
    return revoked_keys.contains(key);
  }
  // The refusal a key configured in rate_limited_keys gets (a 429), if any: "key" is limited
  // on every model, "key@model" on that model only (providers meter per key and model).
  std::optional<Rendered> key_refusal(std::string_view family, const std::string& key, const std::string& model) const {
    std::lock_guard lk(mu);
    auto it = rate_limited_keys.find(key + "@" + model);
    if (it == rate_limited_keys.end()) it = rate_limited_keys.find(key);
    if (it == rate_limited_keys.end()) return std::nullopt;
    std::optional<Millis> ra;
    if (it->second >= 0) ra = Millis{static_cast<std::int64_t>(it->second)};
    return render_error(family, 429, "mock: rate limit reached for this API key", ra);
  }

  // What to do with one request, decided under the lock so that draws are deterministic in
  // arrival order.
  struct Plan {
    Behavior b;
    enum class Kind { ok, error, hang, malformed, rate_limited } kind = Kind::ok;
    double latency_ms = 0;
    double rate_limit_retry_ms = 0;
  };
  // `now` on the provider's clock (real time for the socket mock, the Clock for the simulated one).
  Plan decide(const std::string& model, bool stream, Instant now) {
    std::lock_guard lk(mu);
    Plan p;
    auto it = models.find(model);
    p.b = it != models.end() ? it->second : defaults;
    auto& c = counters[model];
    ++c.requests;
    ++total;
    if (stream) ++c.streams;
    if (p.b.rate_limit_requests > 0) {
      auto window = std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(p.b.rate_limit_window_ms));
      if (c.window_start == Instant{} || now - c.window_start >= window) {
        c.window_start = now;
        c.window_count = 0;
      }
      if (++c.window_count > p.b.rate_limit_requests) {
        ++c.rate_limited;
        p.kind = Plan::Kind::rate_limited;
        p.rate_limit_retry_ms = std::chrono::duration<double, std::milli>(c.window_start + window - now).count();
        return p;
      }
    }
    double u1 = rng.uniform(), u2 = rng.uniform(), u3 = rng.uniform(), u4 = rng.uniform();
    p.latency_ms = p.b.latency_ms + p.b.latency_jitter_ms * u4;
    if (p.b.hang_rate > 0 && u1 < p.b.hang_rate) {
      ++c.hangs;
      p.kind = Plan::Kind::hang;
    } else if (p.b.error_status && u2 < p.b.error_rate) {
      ++c.errors;
      p.kind = Plan::Kind::error;
    } else if (p.b.malformed_rate > 0 && u3 < p.b.malformed_rate) {
      ++c.malformed;
      p.kind = Plan::Kind::malformed;
    }
    if (stream && p.kind == Plan::Kind::ok && p.b.disconnect_after_chunks >= 0) ++c.disconnects;
    return p;
  }
};

namespace {

net::awaitable<void> sleep_ms(double ms) {
  if (ms <= 0) co_return;
  net::steady_timer t(co_await net::this_coro::executor);
  t.expires_after(std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(ms)));
  boost::system::error_code ec;
  co_await t.async_wait(net::redirect_error(net::use_awaitable, ec));
}

// The provider key a request presented, in whichever header its family uses: Bearer
// (OpenAI-compatible, Cohere, Bedrock API keys), x-api-key (Anthropic), x-goog-api-key
// (Gemini), api-key (Azure), or the access key id of a SigV4 credential (Bedrock).
std::string presented_key(const http_server::Request& req) {
  for (const char* h : {"x-api-key", "x-goog-api-key", "api-key"})
    if (const std::string* v = req.header(h)) return *v;
  if (const std::string* v = req.header("authorization")) {
    std::string_view a = *v;
    if (a.starts_with("Bearer ")) return std::string(a.substr(7));
    if (auto c = a.find("Credential="); c != std::string_view::npos) {
      auto id = a.substr(c + 11);
      return std::string(id.substr(0, id.find('/')));
    }
    return std::string(a);
  }
  return {};
}

std::string err_json(const std::string& msg) {
  return Json{{"error", {{"message", msg}, {"type", "invalid_request_error"}, {"param", nullptr}, {"code", nullptr}}}}.dump();
}

// The error a plan injects (`error_status`, with its retry-after), as `family` renders it.
Rendered injected_error(std::string_view family, const MockProvider::State::Plan& plan, std::string message = {}) {
  std::optional<Millis> ra;
  if (plan.b.retry_after_ms >= 0) ra = Millis{static_cast<std::int64_t>(plan.b.retry_after_ms)};
  if (message.empty()) message = "mock injected error " + std::to_string(plan.b.error_status);
  return render_error(family, plan.b.error_status, message, ra);
}

// The faults every endpoint shares, decided by `plan`: a 429 from the rate-limit window, a hang
// (no answer until the client gives up), the latency, an injected error status. True when the
// request was answered (or abandoned) here; false: the endpoint renders its answer (or its own
// malformed body).
net::awaitable<bool> answer_fault(const MockProvider::State::Plan& plan, std::string_view family, http_server::Request& req,
                                  http_server::ResponseWriter& w) {
  using K = MockProvider::State::Plan::Kind;
  if (plan.kind == K::rate_limited) {
    auto r = render_error(family, 429, "mock rate limit: " + std::to_string(plan.b.rate_limit_requests) + " requests per window",
                          Millis{static_cast<std::int64_t>(plan.rate_limit_retry_ms + 1)});
    co_await w.respond(r.status, r.content_type, r.body, r.headers);
    co_return true;
  }
  if (plan.kind == K::hang) {
    // No response at all: hold the connection until the client gives up (or 10 minutes).
    co_await sleep_ms(600000);
    w.abort();
    co_return true;
  }
  co_await sleep_ms(plan.latency_ms);
  if (plan.kind == K::error) {
    std::string msg;
    if (plan.b.echo_key) msg = "Incorrect API key provided: " + presented_credential(req) + ". You can find your API key in your account.";
    auto r = injected_error(family, plan, std::move(msg));
    co_await w.respond(r.status, r.content_type, r.body, r.headers);
    co_return true;
  }
  co_return false;
}

// Embeddings, with the same fault knobs as chat (per model): 429 windows, injected errors,
// hangs and malformed (truncated) bodies.
net::awaitable<void> handle_embeddings(std::shared_ptr<MockProvider::State> st, http_server::Request& req,
                                       http_server::ResponseWriter& w, Result<MockEmbedRequest> parsed) {
  if (!parsed) {
    int status = parsed.error().kind == ErrorKind::not_found ? 404 : 400;
    auto r = render_error(family_of_target(req.target), status, parsed.error().message, std::nullopt);
    co_await w.respond(r.status, r.content_type, r.body, r.headers);
    co_return;
  }
  const MockEmbedRequest& mr = *parsed;
  const std::string family = mr.family == "mistral" ? "openai" : mr.family;
  if (st->note_key(presented_key(req), mr.model)) {
    auto r = render_error(family, 401, "mock: invalid API key", std::nullopt);
    co_await w.respond(r.status, r.content_type, r.body, r.headers);
    co_return;
  }
  if (auto kr = st->key_refusal(family, presented_key(req), mr.model)) {
    co_await w.respond(kr->status, kr->content_type, kr->body, kr->headers);
    co_return;
  }
  auto plan = st->decide(mr.model, false, std::chrono::steady_clock::now());
  if (mr.refusal) {
    co_await w.respond(mr.refusal->status, mr.refusal->content_type, mr.refusal->body, mr.refusal->headers);
    co_return;
  }
  if (co_await answer_fault(plan, family, req, w)) co_return;
  using K = MockProvider::State::Plan::Kind;
  if (plan.kind == K::malformed) {
    auto ct = std::string("application/json");
    auto body = std::string("{\"data\": [{\"embedding\": [0.1, ");
    co_await w.respond(200, std::move(ct), std::move(body));
    co_return;
  }
  auto r = render_embedding_response(mr);
  co_await w.respond(r.status, r.content_type, r.body, r.headers);
}

net::awaitable<void> handle(std::shared_ptr<MockProvider::State> st, http_server::Request& req,
                            http_server::ResponseWriter& w) {
  if (req.path == "/_mock/config") {
    if (req.method == "POST") {
      auto j = parse_json(req.body);
      if (!j) {
        { auto arg0_ = std::string("application/json"); auto arg1_ = err_json("config body is not valid JSON"); co_await w.respond(400, std::move(arg0_), std::move(arg1_)); }
        co_return;
      }
      auto r = st->configure(*j);
      if (!r) {
        { auto arg0_ = std::string("application/json"); auto arg1_ = err_json(r.error().describe()); co_await w.respond(400, std::move(arg0_), std::move(arg1_)); }
        co_return;
      }
    }
    { auto arg0_ = std::string("application/json"); auto arg1_ = st->config_json().dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path == "/_mock/stats") {
    { auto arg0_ = std::string("application/json"); auto arg1_ = st->stats_json().dump(); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path == "/_mock/last_request") {
    auto k = req.query.find("model=");
    std::string model = k == std::string::npos ? std::string() : wire::percent_decode(req.query.substr(k + 6, req.query.find('&', k) - k - 6));
    Json body;
    {
      std::lock_guard lk(st->mu);
      auto it = st->last_request.find(model);
      body = it == st->last_request.end() ? Json(nullptr) : it->second;
    }
    { auto arg0_ = std::string("application/json"); auto arg1_ = body.dump(); co_await w.respond(body.is_null() ? 404 : 200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path == "/_mock/reset" && req.method == "POST") {
    {
      std::lock_guard lk(st->mu);
      st->counters.clear();
      st->total = 0;
      st->keys_seen.clear();
      st->key_models_seen.clear();
      st->last_request.clear();
    }
    { auto arg0_ = std::string("application/json"); auto arg1_ = std::string("{}"); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }
  if (req.path == "/healthz") {
    { auto arg0_ = std::string("text/plain"); auto arg1_ = std::string("ok\n"); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
    co_return;
  }

  if (auto emb = parse_embedding_request(req.method, req.target, req.body)) {
    co_await handle_embeddings(st, req, w, std::move(*emb));
    co_return;
  }
  auto parsed = parse_request(req.method, req.target, req.headers, req.body);
  if (!parsed) {
    // In the provider's own error shape, as its SDK expects it.
    int status = parsed.error().kind == ErrorKind::not_found ? 404 : 400;
    auto r = render_error(family_of_target(req.target), status, parsed.error().message, std::nullopt);
    co_await w.respond(r.status, r.content_type, r.body, r.headers);
    co_return;
  }
  const MockRequest& mr = *parsed;
  st->note_request(mr.model, mr.request);
  if (st->note_key(presented_key(req), mr.model)) {
    // What a provider answers a revoked or unknown key (Bedrock's own 403 comes from render_error).
    auto r = render_error(mr.family, 401, "mock: invalid API key", std::nullopt);
    co_await w.respond(r.status, r.content_type, r.body, r.headers);
    co_return;
  }
  if (auto kr = st->key_refusal(mr.family, presented_key(req), mr.model)) {
    co_await w.respond(kr->status, kr->content_type, kr->body, kr->headers);
    co_return;
  }
  auto plan = st->decide(mr.model, mr.stream, std::chrono::steady_clock::now());
  if (mr.refusal) {  // the provider itself refuses this request (counted: it reached the provider)
    co_await w.respond(mr.refusal->status, mr.refusal->content_type, mr.refusal->body, mr.refusal->headers);
    co_return;
  }
  if (co_await answer_fault(plan, mr.family, req, w)) co_return;
  using K = MockProvider::State::Plan::Kind;
  ChatResponse resp = canned_response(mr, plan.b);
  if (!mr.stream) {
    if (plan.kind == K::malformed) {
      { auto arg0_ = std::string("application/json"); auto arg1_ = std::string("{\"id\": \"broken\", \"choices\": [ {\"message\": "); co_await w.respond(200, std::move(arg0_), std::move(arg1_)); }
      co_return;
    }
    auto r = render_response(mr.family, resp);
    co_await w.respond(r.status, r.content_type, r.body, r.headers);
    co_return;
  }
  auto frames = render_stream(mr.family, resp, plan.b.chunks, mr.request.include_usage);
  if (!co_await w.start_stream(200, std::string(stream_content_type(mr.family)))) co_return;
  co_await sleep_ms(plan.b.ttft_ms);
  for (std::size_t i = 0; i < frames.size(); ++i) {
    if (plan.b.disconnect_after_chunks >= 0 && static_cast<int>(i) == plan.b.disconnect_after_chunks) {
      w.abort();
      co_return;
    }
    if (plan.kind == K::malformed && i == frames.size() / 2) {
      co_await w.write("data: {\"choices\": [{\"delta\": {\"content\": \"tru\n\n");
      w.abort();
      co_return;
    }
    if (!co_await w.write(frames[i])) {
      st->note_stream_end(mr.model, false);
      co_return;
    }
    if (i + 1 < frames.size()) co_await sleep_ms(plan.b.chunk_interval_ms);
  }
  st->note_stream_end(mr.model, co_await w.end_stream());
}

}  // namespace

Result<std::unique_ptr<MockProvider>> MockProvider::start(MockOptions opts) {
  std::unique_ptr<MockProvider> m(new MockProvider());
  m->state_ = std::make_shared<State>();
  m->state_->rng.reseed(opts.seed);
  if (auto r = m->state_->configure(opts.config); !r) return fail(r.error());
  http_server::ServerOptions so;
  so.host = opts.host;
  so.port = opts.port;
  so.threads = opts.threads;
  so.max_body_bytes = 32 * 1024 * 1024;
  auto st = m->state_;
  auto srv = http_server::Server::start(so, [st](http_server::Request& req, http_server::ResponseWriter& w) {
    return handle(st, req, w);
  });
  if (!srv) return fail(srv.error());
  m->server_ = std::move(*srv);
  return m;
}

MockProvider::~MockProvider() { stop(); }
int MockProvider::port() const noexcept { return server_ ? server_->port() : 0; }
std::string MockProvider::base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }
Result<void> MockProvider::configure(const Json& doc) { return state_->configure(doc); }
Json MockProvider::stats() const { return state_->stats_json(); }
void MockProvider::stop() {
  if (server_) server_->stop();
}

// ---- the same provider without sockets, on a Clock's time ------------------------------------

namespace {

Nanos ms_of(double ms) { return std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(ms)); }

struct SimShared {
  const Clock* clock = nullptr;
  std::shared_ptr<MockProvider::State> state;
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::size_t> in_flight{0};
};

// Waits on the clock until `until`: true when reached, false when cancelled (per-operation
// cancellation of the awaiting coroutine, or abort()).
net::awaitable<bool> sim_wait(const Clock& clock, std::unique_ptr<Timer>& timer, Instant until) {
  if (!timer) timer = clock.make_timer(co_await net::this_coro::executor);
  co_return co_await async_wait_until(*timer, until, net::use_awaitable);
}

Error sim_timeout(const char* what) { return error_of(ErrorKind::timeout, std::string(what) + ": deadline exceeded"); }

// presented_key() for a request the simulated transport receives (same headers, same rules).
std::string presented_key_of(const Headers& headers) {
  for (const char* h : {"x-api-key", "x-goog-api-key", "api-key"})
    if (const std::string* v = find_header(headers, h)) return *v;
  if (const std::string* v = find_header(headers, "authorization")) {
    std::string_view a = *v;
    if (a.starts_with("Bearer ")) return std::string(a.substr(7));
    if (auto c = a.find("Credential="); c != std::string_view::npos) {
      auto id = a.substr(c + 11);
      return std::string(id.substr(0, id.find('/')));
    }
    return std::string(a);
  }
  return {};
}

class SimStream final : public HttpStream {
 public:
  SimStream(std::shared_ptr<SimShared> sh, int status, Headers headers, std::vector<std::string> frames, Instant first_due,
            Nanos interval, int cut_at, bool cut_malformed, bool hang_body)
      : sh_(std::move(sh)), status_(status), headers_(std::move(headers)), frames_(std::move(frames)), due_(first_due),
        interval_(interval), cut_at_(cut_at), cut_malformed_(cut_malformed), hang_body_(hang_body) {
    sh_->in_flight.fetch_add(1);
  }
  ~SimStream() override { sh_->in_flight.fetch_sub(1); }
  int status() const noexcept override { return status_; }
  const Headers& headers() const noexcept override { return headers_; }
  net::awaitable<Result<std::string>> read_some(Instant deadline) override {
    if (aborted_) co_return std::unexpected(error_of(ErrorKind::cancelled, "stream aborted", true));
    if (broken_) co_return std::unexpected(error_of(ErrorKind::stream_interrupted, "upstream connection broke mid-body"));
    if (next_ >= frames_.size() && !hang_body_) co_return std::string{};
    const Instant until = hang_body_ && next_ >= frames_.size() ? deadline : std::min(due_, deadline);
    if (until > sh_->clock->now()) {
      if (!co_await sim_wait(*sh_->clock, timer_, until) || aborted_)
        co_return std::unexpected(error_of(ErrorKind::cancelled, "cancelled while reading the response body", true));
    }
    if (sh_->clock->now() < due_ || next_ >= frames_.size())
      co_return std::unexpected(sim_timeout("reading response body"));
    if (cut_at_ >= 0 && static_cast<int>(next_) == cut_at_) {
      broken_ = true;
      if (cut_malformed_) co_return std::string("data: {\"choices\": [{\"delta\": {\"content\": \"tru\n\n");
      co_return std::unexpected(error_of(ErrorKind::stream_interrupted, "upstream connection broke mid-body"));
    }
    due_ = sh_->clock->now() + interval_;
    co_return std::move(frames_[next_++]);
  }
  net::awaitable<Result<std::string>> read_all(Instant deadline) override {
    std::string all;
    for (;;) {
      auto piece = co_await read_some(deadline);
      if (!piece) co_return std::unexpected(piece.error());
      if (piece->empty()) co_return all;
      all += *piece;
    }
  }
  void abort() noexcept override {
    aborted_ = true;
    if (timer_) timer_->cancel();
  }

 private:
  std::shared_ptr<SimShared> sh_;
  int status_;
  Headers headers_;
  std::vector<std::string> frames_;
  std::size_t next_ = 0;
  Instant due_;
  Nanos interval_;
  int cut_at_;
  bool cut_malformed_;
  bool hang_body_;
  bool aborted_ = false;
  bool broken_ = false;
  std::unique_ptr<Timer> timer_;
};

class SimTransport final : public Transport {
 public:
  explicit SimTransport(std::shared_ptr<SimShared> sh) : sh_(std::move(sh)) {}

  net::awaitable<Result<HttpResponse>> send(const HttpRequestSpec& req, Instant deadline) override {
    return send_and_read_all(*this, req, deadline);
  }

  net::awaitable<Result<std::unique_ptr<HttpStream>>> open(const HttpRequestSpec& req, Instant deadline) override {
    // GCC 12: no block-scope locals or temporaries around co_return/co_await here; the
    // rendering is plain code (answer()).
    sh_->requests.fetch_add(1);
    const Clock& clock = *sh_->clock;
    std::shared_ptr<Planned> p = plan_request(req);
    std::unique_ptr<HttpStream> out = std::move(p->immediate);
    if (out) co_return out;
    const Instant head = p->head;
    std::unique_ptr<Timer> timer;
    const Instant until = std::min(head, deadline);
    bool waited = true;
    if (until > clock.now()) waited = co_await sim_wait(clock, timer, until);
    if (!waited) co_return std::unexpected(error_of(ErrorKind::cancelled, "cancelled while waiting for the response", true));
    if (clock.now() < head) co_return std::unexpected(sim_timeout("waiting for the response"));
    out = p->embed ? render_embedding(*p->embed, p->plan) : render(p->mr, p->plan);
    co_return out;
  }

  TransportStats stats() const override {
    TransportStats s;
    s.requests = sh_->requests.load();
    s.in_flight = sh_->in_flight.load();
    return s;
  }
  void close_idle() override {}

 private:
  struct Planned {
    std::unique_ptr<HttpStream> immediate;  ///< an answer with no delay (bad request, refusal, rate limit)
    MockRequest mr;
    std::optional<MockEmbedRequest> embed;  ///< an embeddings request (mr unused)
    MockProvider::State::Plan plan;
    Instant head{};  ///< when the response head is due (max: a hang)
  };

  // Decides the request as the socket mock does.
  std::shared_ptr<Planned> plan_request(const HttpRequestSpec& req) {
    auto out = std::make_shared<Planned>();
    auto one_now = [&](Rendered r) {
      out->immediate = one(std::move(r));
      return out;
    };
    const Clock& clock = *sh_->clock;
    auto url = parse_url(req.url);
    if (!url) return one_now(render_error("openai", 400, url.error().message, std::nullopt));
    using K = MockProvider::State::Plan::Kind;
    // Embeddings, with the faults the socket mock's handle_embeddings() gives them.
    if (auto emb = parse_embedding_request(req.method, url->target, req.body)) {
      if (!*emb) {
        int status = emb->error().kind == ErrorKind::not_found ? 404 : 400;
        return one_now(render_error(family_of_target(url->target), status, emb->error().message, std::nullopt));
      }
      const std::string family = (*emb)->family == "mistral" ? "openai" : (*emb)->family;
      if (sh_->state->note_key(presented_key_of(req.headers), (*emb)->model))
        return one_now(render_error(family, 401, "mock: invalid API key", std::nullopt));
      if (auto kr = sh_->state->key_refusal(family, presented_key_of(req.headers), (*emb)->model)) return one_now(std::move(*kr));
      auto plan = sh_->state->decide((*emb)->model, false, clock.now());
      if ((*emb)->refusal) return one_now(*(*emb)->refusal);
      if (plan.kind == K::rate_limited)
        return one_now(render_error(family, 429, "mock rate limit: " + std::to_string(plan.b.rate_limit_requests) + " requests per window",
                                    Millis{static_cast<std::int64_t>(plan.rate_limit_retry_ms + 1)}));
      out->head = plan.kind == K::hang ? Instant::max() : clock.now() + ms_of(plan.latency_ms);
      out->embed = std::move(**emb);
      out->plan = plan;
      return out;
    }
    auto parsed = parse_request(req.method, url->target, req.headers, req.body);
    if (!parsed) {
      int status = parsed.error().kind == ErrorKind::not_found ? 404 : 400;
      return one_now(render_error(family_of_target(url->target), status, parsed.error().message, std::nullopt));
    }
    if (sh_->state->note_key(presented_key_of(req.headers), parsed->model))
      return one_now(render_error(parsed->family, 401, "mock: invalid API key", std::nullopt));
    if (auto kr = sh_->state->key_refusal(parsed->family, presented_key_of(req.headers), parsed->model)) return one_now(std::move(*kr));
    auto plan = sh_->state->decide(parsed->model, parsed->stream, clock.now());
    if (parsed->refusal) return one_now(*parsed->refusal);
    if (plan.kind == K::rate_limited)
      return one_now(render_error(parsed->family, 429, "mock rate limit: " + std::to_string(plan.b.rate_limit_requests) + " requests per window",
                              Millis{static_cast<std::int64_t>(plan.rate_limit_retry_ms + 1)}));
    out->head = plan.kind == K::hang ? Instant::max() : clock.now() + ms_of(plan.latency_ms);
    out->mr = std::move(*parsed);
    out->plan = plan;
    return out;
  }

  std::unique_ptr<HttpStream> render_embedding(const MockEmbedRequest& er, const MockProvider::State::Plan& plan) {
    using K = MockProvider::State::Plan::Kind;
    const std::string family = er.family == "mistral" ? "openai" : er.family;
    if (plan.kind == K::error) return one(injected_error(family, plan));
    if (plan.kind == K::malformed) {
      Rendered r;
      r.content_type = "application/json";
      r.body = "{\"data\": [{\"embedding\": [0.1, ";
      return one(std::move(r));
    }
    return one(render_embedding_response(er));
  }

  std::unique_ptr<HttpStream> render(const MockRequest& mr, const MockProvider::State::Plan& plan) {
    using K = MockProvider::State::Plan::Kind;
    const Clock& clock = *sh_->clock;
    if (plan.kind == K::error) return one(injected_error(mr.family, plan));
    ChatResponse resp = canned_response(mr, plan.b);
    if (!mr.stream) {
      if (plan.kind == K::malformed) {
        Rendered r;
        r.content_type = "application/json";
        r.body = "{\"id\": \"broken\", \"choices\": [ {\"message\": ";
        return one(std::move(r));
      }
      return one(render_response(mr.family, resp));
    }
    auto frames = render_stream(mr.family, resp, plan.b.chunks, mr.request.include_usage);
    Headers h;
    h.emplace_back("content-type", std::string(stream_content_type(mr.family)));
    int cut = plan.b.disconnect_after_chunks;
    bool malformed = false;
    if (plan.kind == K::malformed) {
      cut = static_cast<int>(frames.size() / 2);
      malformed = true;
    }
    return std::make_unique<SimStream>(sh_, 200, std::move(h), std::move(frames), clock.now() + ms_of(plan.b.ttft_ms),
                                       ms_of(plan.b.chunk_interval_ms), cut, malformed, false);
  }

  std::unique_ptr<HttpStream> one(Rendered r) {
    Headers h = std::move(r.headers);
    if (!r.content_type.empty()) h.emplace_back("content-type", r.content_type);
    std::vector<std::string> body;
    if (!r.body.empty()) body.push_back(std::move(r.body));
    return std::make_unique<SimStream>(sh_, r.status, std::move(h), std::move(body), Instant{}, Nanos{0}, -1, false, false);
  }

  std::shared_ptr<SimShared> sh_;
};

}  // namespace

Result<std::shared_ptr<Transport>> make_simulated_transport(const Clock& clock, MockOptions opts) {
  auto sh = std::make_shared<SimShared>();
  sh->clock = &clock;
  sh->state = std::make_shared<MockProvider::State>();
  sh->state->rng.reseed(opts.seed);
  if (auto r = sh->state->configure(opts.config); !r) return fail(r.error());
  return std::shared_ptr<Transport>(std::make_shared<SimTransport>(std::move(sh)));
}

}  // namespace modelux::mock
