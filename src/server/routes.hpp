// The proxy's route table: method + path pattern → a small handler, each route declaring the
// access it needs; the table (not the handlers) checks roles, from the request head alone, so
// an unauthorised request is refused before its body is read. One respond() writes every reply
// and scrubs every error body and admin answer on the way out.
//
// Threading: the table is built once at start and read-only afterwards. Handlers run on the
// connection's strand; slow work goes to State::workers.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelux/server.hpp"
#include "server/auth.hpp"
#include "server/http_server.hpp"
#include "server/worker_pool.hpp"

namespace modelux::proxy {

namespace net = boost::asio;
using http_server::Request;
using http_server::ResponseWriter;

/// What a route requires of the caller.
enum class Access : std::uint8_t {
  open,   ///< no key (health probes, metrics)
  read,   ///< any valid key (viewer, project, admin); project data filtered to the caller's
  data,   ///< the data plane: project or admin keys
  admin,  ///< admin keys only
};

/// A whole reply. Handlers return one; streaming handlers write themselves and return nullopt.
struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  Headers headers;
  bool verbatim = false;  ///< static bytes built into the binary (the console): never scrubbed
};

/// An error reply in OpenAI's error shape.
Reply error_reply(int status, ErrorKind kind, std::string message, std::string code = {}, std::string param = {});
Reply error_reply(const Error& e);
Reply json_reply(const Json& j, int status = 200);

/// One structured log line on stderr: {"ts":"<UTC>","level":..,"event":..,...fields}, scrubbed
/// of every registered secret. Thread-safe (one write per line).
void log_event(std::string_view level, std::string_view event, Json fields = Json::object());

/// Is `s` a valid routing-config slug: [a-z0-9][a-z0-9_-]{0,63}.
bool valid_slug(std::string_view s) noexcept;

}  // namespace modelux::proxy

namespace modelux::proxy {

class KeptResponses;
class ProxyMetrics;
class ControlPlane;

struct Proxy::State {
  std::unique_ptr<Router> router;
  std::unique_ptr<KeyRegistry> keys;
  std::unique_ptr<KeptResponses> kept;  ///< before workers: the pool joins (finishing its writes) first
  std::unique_ptr<WorkerPool> workers;
  std::unique_ptr<ControlPlane> control;  ///< versions, audit, webhooks (control_plane.hpp)
  ServerConfig server;
  std::atomic<std::uint64_t> requests{0}, ok{0}, client_errors{0}, upstream_errors{0}, streams{0}, in_flight{0};
  std::atomic<std::uint64_t> auth_refused{0}, forbidden{0}, key_rate_limited{0};
  std::atomic<bool> draining{false};  ///< set by drain(): /readyz answers 503
  std::size_t max_body = 0;
  http_server::Server* http = nullptr;  ///< set once started; for /readyz and /metrics
  std::unique_ptr<ProxyMetrics> metrics;  ///< /metrics (server/metrics.hpp); set at start
};

/// What a route handler gets.
struct RouteCtx {
  Proxy::State& st;
  Request& req;
  ResponseWriter& w;
  const Caller& caller;
  std::vector<std::string> params;  ///< the {…} segments of the pattern, in order
};

using RouteFn = net::awaitable<std::optional<Reply>> (*)(RouteCtx&);

/// The error body shape a route's clients parse.
enum class ErrorShape : std::uint8_t { openai, anthropic };

struct Route {
  std::string_view method;
  std::string_view pattern;  ///< "/v1/configs/{slug}"
  Access access;
  RouteFn fn;
  bool data_plane_limits = false;  ///< rpm and concurrency of the key apply
  ErrorShape errors = ErrorShape::openai;  ///< refusals by the table (401, 403, 429) use this shape
};

/// What the head phase decided: the route, the caller and its held concurrency slot.
struct Admission {
  const Route* route = nullptr;
  std::vector<std::string> params;
  Caller caller;
  std::shared_ptr<void> slot;  ///< releases the key's concurrency slot when dropped
};

/// Decides from method, path and headers alone (no body): route match (404 / 405 with Allow),
/// header UTF-8, key, role, x-modelux-project, per-key rate and concurrency limits. Either an
/// admission or the reply that refuses the request.
std::variant<Admission, Reply> admit(Proxy::State& st, std::string_view method, std::string_view path, const Headers& headers);

/// The route declared for exactly this method and pattern ("/v1/configs/{slug}"), or null.
const Route* find_route(std::string_view method, std::string_view pattern) noexcept;
/// Whether a key of role `r` may call a route of access `a` (the table's own check).
bool role_allows_access(Access a, KeyRole r) noexcept;

/// Runs an admitted request and writes its reply.
net::awaitable<void> serve(Proxy::State& st, Admission& a, Request& req, ResponseWriter& w);
/// The one place replies are written (error bodies and admin answers scrubbed).
net::awaitable<void> respond(ResponseWriter& w, Reply r, bool scrub_body);

/// An OpenAI-shaped error reply re-rendered in Anthropic's shape
/// ({"type":"error","error":{"type","message"}}), same status and headers.
Reply to_anthropic_error(Reply r);
/// The error shape of the API that serves `target` (path, query ignored), by the route table;
/// OpenAI's for paths the table does not know.
ErrorShape error_shape_of(std::string_view target);

// Handlers (openai_ingress.cpp, anthropic_ingress.cpp, kept.cpp, admin_api.cpp).
net::awaitable<std::optional<Reply>> chat_completions(RouteCtx& c);
net::awaitable<std::optional<Reply>> messages(RouteCtx& c);
net::awaitable<std::optional<Reply>> count_tokens(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_kept(RouteCtx& c);
net::awaitable<std::optional<Reply>> embeddings(RouteCtx& c);  // embeddings_ingress.cpp
net::awaitable<std::optional<Reply>> list_models(RouteCtx& c);
net::awaitable<std::optional<Reply>> list_configs(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_config(RouteCtx& c);
net::awaitable<std::optional<Reply>> put_config(RouteCtx& c);
net::awaitable<std::optional<Reply>> list_traces(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_trace(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_budgets(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_health(RouteCtx& c);
net::awaitable<std::optional<Reply>> create_key(RouteCtx& c);
net::awaitable<std::optional<Reply>> list_keys(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_key(RouteCtx& c);
net::awaitable<std::optional<Reply>> revoke_key(RouteCtx& c);
net::awaitable<std::optional<Reply>> healthz(RouteCtx& c);
net::awaitable<std::optional<Reply>> readyz(RouteCtx& c);
net::awaitable<std::optional<Reply>> metrics(RouteCtx& c);
// Control plane (control_api.cpp).
net::awaitable<std::optional<Reply>> config_versions(RouteCtx& c);
net::awaitable<std::optional<Reply>> config_version(RouteCtx& c);
net::awaitable<std::optional<Reply>> config_diff(RouteCtx& c);
net::awaitable<std::optional<Reply>> config_rollback(RouteCtx& c);
net::awaitable<std::optional<Reply>> config_promote(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_budget(RouteCtx& c);
net::awaitable<std::optional<Reply>> put_budget(RouteCtx& c);
net::awaitable<std::optional<Reply>> delete_budget(RouteCtx& c);
net::awaitable<std::optional<Reply>> budget_versions(RouteCtx& c);
net::awaitable<std::optional<Reply>> reset_budget(RouteCtx& c);
net::awaitable<std::optional<Reply>> list_webhooks(RouteCtx& c);
net::awaitable<std::optional<Reply>> create_webhook(RouteCtx& c);
net::awaitable<std::optional<Reply>> get_webhook(RouteCtx& c);
net::awaitable<std::optional<Reply>> update_webhook(RouteCtx& c);
net::awaitable<std::optional<Reply>> delete_webhook(RouteCtx& c);
net::awaitable<std::optional<Reply>> webhook_deliveries(RouteCtx& c);
net::awaitable<std::optional<Reply>> redeliver_webhook(RouteCtx& c);
net::awaitable<std::optional<Reply>> list_audit(RouteCtx& c);
net::awaitable<std::optional<Reply>> verify_audit(RouteCtx& c);
net::awaitable<std::optional<Reply>> openapi(RouteCtx& c);
net::awaitable<std::optional<Reply>> key_versions(RouteCtx& c);
net::awaitable<std::optional<Reply>> webhook_versions(RouteCtx& c);
// Trace analytics (analytics_api.cpp).
net::awaitable<std::optional<Reply>> analytics_spend(RouteCtx& c);
net::awaitable<std::optional<Reply>> analytics_latency(RouteCtx& c);
net::awaitable<std::optional<Reply>> analytics_errors(RouteCtx& c);
net::awaitable<std::optional<Reply>> analytics_failovers(RouteCtx& c);
net::awaitable<std::optional<Reply>> analytics_forecast(RouteCtx& c);
net::awaitable<std::optional<Reply>> analytics_budget_forecast(RouteCtx& c);
// The console (console.cpp) and replay over the proxy's own traces (replay_api.cpp).
net::awaitable<std::optional<Reply>> console_index(RouteCtx& c);
net::awaitable<std::optional<Reply>> console_asset(RouteCtx& c);
net::awaitable<std::optional<Reply>> whoami(RouteCtx& c);
net::awaitable<std::optional<Reply>> config_replay(RouteCtx& c);
// The MCP endpoint (mcp.cpp): tools generated from the OpenAPI document, dispatched through admit() + serve().
net::awaitable<std::optional<Reply>> mcp_post(RouteCtx& c);
/// The control plane's counters in Prometheus text (for /metrics).
void append_control_metrics(std::string& out, const ControlPlane& cp);

}  // namespace modelux::proxy
