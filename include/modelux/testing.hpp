// modelux testing (optional component, CMake target modelux::testing).
//
// `modelux mock`: a provider mock that speaks every family's wire format at its real paths
// and injects faults per model — latency, time to first token, chunk pacing, error statuses
// with retry-after, hangs, mid-stream disconnects, malformed bodies, request-rate limits.
// Deterministic for a given seed and request order. Reconfigurable at run time:
//   POST /_mock/config   {"models":{"gpt-4o-mini":{"error_status":429,"retry_after_ms":1000}}}
//   POST /_mock/config   {"revoked_keys":["k-bad"]}: requests presenting that provider key get a 401
//   POST /_mock/config   {"rate_limited_keys":{"k-hot":30000}}: that key gets a 429 with retry-after 30 s;
//                        {"k-hot@gpt-4o":30000}: on that model only
//                        (a negative value sends no retry-after)
//   GET  /_mock/config, GET /_mock/stats (per model, and "keys": requests per presented key, "key_models": per "key@model"),
//   GET  /_mock/last_request?model=M (the last request M received, in the unified shape),
//   POST /_mock/reset
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "modelux/transport.hpp"
#include "modelux/wire.hpp"

namespace modelux::http_server {
class Server;
}

namespace modelux::mock {

/// How the mock answers one model. Every field is optional in JSON.
struct Behavior {
  double latency_ms = 0;          ///< before the response head (non-stream) / first byte
  double latency_jitter_ms = 0;   ///< + uniform [0, jitter)
  double ttft_ms = 0;             ///< streams: extra delay before the first chunk
  double chunk_interval_ms = 0;   ///< streams: delay between chunks
  int chunks = 4;                 ///< streams: pieces the answer is split in
  int error_status = 0;           ///< 429, 500, 502, 503, 529... (0 = none)
  double error_rate = 1.0;        ///< probability of error_status when set
  double retry_after_ms = -1;     ///< sent with errors (-1 = none)
  double hang_rate = 0;           ///< probability the request gets no response at all
  int disconnect_after_chunks = -1;  ///< streams: drop the connection after N chunks
  double malformed_rate = 0;      ///< probability of a 200 with an invalid body
  int rate_limit_requests = 0;    ///< > 0: at most this many requests per window, then 429
  double rate_limit_window_ms = 1000;
  std::string text = "Hello from the modelux mock provider.";
  /// Errors quote the credential the request carried ("Incorrect API key provided: <key>"), as
  /// OpenAI's 401 does: the canary for the scrubber.
  bool echo_key = false;
  int cache_read_tokens = 0;   ///< usage: input tokens read from the prompt cache (added to the input)
  int cache_write_tokens = 0;  ///< usage: input tokens written to the prompt cache (added to the input)
  std::string tool_arguments = "{}";  ///< the arguments of the tool call answered when tools are offered
};

/// Parses a behavior object on top of `base`; errors name the JSON path.
Result<Behavior> behavior_from_json(const Json& j, const Behavior& base, const std::string& path);
Json to_json(const Behavior& b);

struct MockOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  int threads = 1;
  std::uint64_t seed = 42;
  Json config = Json::object();   ///< {"default": {...}, "models": {"name": {...}}}
};

class MockProvider {
 public:
  static Result<std::unique_ptr<MockProvider>> start(MockOptions opts);
  ~MockProvider();
  int port() const noexcept;
  std::string base_url() const;  ///< "http://127.0.0.1:PORT"
  /// Merges a config document ({"default":{...},"models":{...}}) into the live config.
  Result<void> configure(const Json& doc);
  Json stats() const;
  void stop();

  struct State;

 private:
  MockProvider() = default;
  std::shared_ptr<State> state_;
  std::unique_ptr<http_server::Server> server_;
};

/// The mock provider without sockets, on a Clock's time: a Transport that answers every
/// request as MockProvider would (same config and fault knobs, same native wire formats, any
/// URL host), with its latency, TTFT, chunk pacing and hangs as timers of `clock`. On a
/// ManualClock, a router using it runs on virtual time: a test drives the io_context and
/// advances the clock to the next timer, so a 20 s timeout costs no wall time and every
/// instant is exact. Disconnects surface as stream_interrupted, like a broken socket.
/// `opts.host/port/threads` are ignored. stats(): requests and streams not yet destroyed
/// (in_flight). Threading: as any Transport; the clock must outlive it.
Result<std::shared_ptr<Transport>> make_simulated_transport(const Clock& clock, MockOptions opts = {});

}  // namespace modelux::mock
