// A small HTTP/1.1 server on Boost.Beast coroutines, shared by the proxy and the mock
// provider. Keep-alive sessions; per-request body limit; the handler writes either a whole
// response or a chunked stream (SSE) through a ResponseWriter.
//
// A request is read in two phases: the header, then (only if `on_head` accepts it) the body.
// A rejection is answered at once and the connection closed without buffering the body, so
// an unauthenticated upload costs no more than its header.
//
// Threading: one listener per io_context, each io_context run by one thread (`threads` own
// io_contexts, or the `executors` given: the Router's io threads). With several, the
// listeners share the port through SO_REUSEPORT (the kernel spreads connections over them)
// and a connection runs start to finish on the thread that accepted it: no strand, no
// cross-thread hop. Only a single executor run by several threads (`executor` with
// `threads` > 1) puts each connection on its own strand. Either way a handler never runs
// concurrently with itself for one connection; `on_head` and the handler run concurrently
// for different connections.
#pragma once

#include <atomic>
#include <optional>

#include <boost/asio/any_io_executor.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "modelux/wire.hpp"

namespace modelux::http_server {

namespace net = boost::asio;

/// What is known of a request once its header is parsed (before any body byte is read).
struct RequestHead {
  std::string method;
  std::string target;  ///< path + query
  std::string path;    ///< without query
  std::string query;
  Headers headers;
  std::string remote;  ///< peer address
  std::optional<std::uint64_t> content_length;  ///< absent for chunked bodies
  /// Set by `on_head` (e.g. the authenticated key) and handed to the handler in
  /// `Request::context`, so the header-phase work is done once. Mutable because the hook
  /// sees the head as const.
  mutable std::shared_ptr<void> context;
  const std::string* header(std::string_view name) const { return find_header(headers, name); }
};

struct Request : RequestHead {
  std::string body;
};

/// An answer given from the header alone. The connection is closed after it (Connection:
/// close), the body never buffered.
struct Rejection {
  int status = 400;
  std::string content_type = "application/json";
  std::string body;
  Headers headers;  ///< extra headers (e.g. retry-after)
};

/// Writes the response: either respond() once, or start_stream() then write() pieces then
/// end_stream(). Every call returns false once the client is gone.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual net::awaitable<bool> respond(int status, std::string content_type, std::string body, Headers extra = {}) = 0;
  virtual net::awaitable<bool> start_stream(int status, std::string content_type, Headers extra = {}) = 0;
  virtual net::awaitable<bool> write(std::string_view piece) = 0;
  virtual net::awaitable<bool> end_stream() = 0;
  /// start_stream() and write(first) in one send.
  virtual net::awaitable<bool> start_stream(int status, std::string content_type, Headers extra, std::string_view first) = 0;
  /// write(last) and end_stream() in one send.
  virtual net::awaitable<bool> end_stream(std::string_view last) = 0;
  /// Drops the connection without finishing the response (fault injection).
  virtual void abort() = 0;
  /// Cancels `token` if the client closes its connection before stop_watching() (detected
  /// without consuming any request bytes, so keep-alive and pipelining are unaffected).
  virtual void watch_client(std::shared_ptr<CancellationToken> token) = 0;
  virtual void stop_watching() = 0;
  virtual bool started() const noexcept = 0;
};

using Handler = std::function<net::awaitable<void>(Request&, ResponseWriter&)>;

/// The server's own error answer: OpenAI's error shape (413 `request_too_large`, 503
/// `server_busy`, else `invalid_request`).
std::string default_error_body(int status, const std::string& message, std::string_view target);

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  ///< 0 = pick a free port
  /// Own io threads: one io_context and one listener each (SO_REUSEPORT when > 1). With
  /// `executor`: the threads that run that executor's io_context (> 1 puts each connection on
  /// a strand). Ignored with `executors`.
  int threads = 1;
  std::size_t max_body_bytes = 4 * 1024 * 1024;
  std::size_t max_header_bytes = 64 * 1024;
  /// Bytes of request bodies buffered at once, over all connections. A request whose
  /// Content-Length would pass it gets 503 + retry-after before its body is read; a chunked
  /// body is counted as it arrives (503 when it passes). 0 = no cap.
  std::size_t max_inflight_body_bytes = 64 * 1024 * 1024;
  Nanos read_timeout = std::chrono::seconds(60);
  /// Answer for bodies over the limit / unparsable requests / refused headers (status, message,
  /// the request target when the request line was read, else empty); JSON in OpenAI's shape by
  /// default. The target lets an API with its own error shape (Anthropic's /v1/messages) answer
  /// in it even before any handler ran.
  std::function<std::string(int status, const std::string& message, std::string_view target)> error_body;
  /// Called once the header is parsed, before the body is read; a Rejection is sent as the
  /// answer. May set `head.context`. Runs on the connection's strand: must be thread-safe.
  std::function<std::optional<Rejection>(const RequestHead&)> on_head;
  /// Serve on this executor instead of an own io_context and threads (the proxy shares the
  /// Router's io_context so a request never hops threads).
  std::optional<net::any_io_executor> executor;
  /// Serve on these executors, each run by exactly one thread (Router::executors()): one
  /// listener per executor, all on one port (SO_REUSEPORT when more than one), and each
  /// connection on the executor that accepted it, without a strand. Overrides `executor`.
  std::vector<net::any_io_executor> executors;
};

/// Counters of the server's own resource limits (all since start, except the gauges).
struct ServerStats {
  std::uint64_t accept_backoffs = 0;     ///< accept() failed for lack of fds/memory; the loop paused
  std::uint64_t accept_refused = 0;      ///< connections taken on the reserve fd and refused at once (503)
  std::uint64_t body_budget_refused = 0; ///< requests refused (503) by max_inflight_body_bytes
  std::uint64_t connections_open = 0;    ///< gauge
  std::uint64_t requests_in_flight = 0;  ///< gauge: header accepted, response not finished
  std::uint64_t body_bytes_in_flight = 0;  ///< gauge: bytes counted against max_inflight_body_bytes
};

class Server {
 public:
  /// Binds and starts serving on background threads. Error when the address is taken.
  static Result<std::unique_ptr<Server>> start(ServerOptions opts, Handler handler);
  ~Server();
  int port() const noexcept { return port_; }
  /// Stops accepting, closes connections, joins threads.
  void stop();
  /// Graceful drain: closes the listener (new connections are refused), closes idle
  /// keep-alive connections, and answers the requests in flight with Connection: close.
  /// Returns at once; requests_in_flight() says when they are done. Thread-safe, but not
  /// concurrently with stop().
  void drain();
  bool draining() const noexcept { return draining_.load(std::memory_order_acquire); }
  std::uint64_t requests_in_flight() const noexcept { return requests_in_flight_.load(std::memory_order_acquire); }
  ServerStats stats() const noexcept;
  net::any_io_executor executor() const noexcept { return ex_; }
  /// Shrinks the set of open connections' bucket array when a burst grew it far above the
  /// connections open now (it never shrinks on its own; allocated mid-burst, it pins its
  /// pages). Returns the bytes freed. Thread-safe; meant for the idle trimmer.
  std::size_t release_idle();

 private:
  Server() = default;
 public:
  struct WatchStarter;  // starts the client-disconnect watches (one per io_context run by one thread)
 private:
  net::awaitable<void> accept_loop(std::shared_ptr<net::ip::tcp::acceptor> acceptor, std::shared_ptr<net::steady_timer> pause,
                                   std::shared_ptr<WatchStarter> starter);
  net::awaitable<void> session(net::ip::tcp::socket sock, std::shared_ptr<WatchStarter> starter);
  void refuse_pending(net::ip::tcp::acceptor& acceptor);
  bool reserve_body(std::size_t n) noexcept;
  void release_body(std::size_t n) noexcept;
  struct Live;  // a session's handle for drain()
  void close_idle();

  ServerOptions opts_;
  Handler handler_;
  net::io_context ioc_{1};
  std::vector<std::unique_ptr<net::io_context>> more_iocs_;  // own io threads beyond the first
  net::any_io_executor ex_;
  bool strands_ = false;  // one executor run by several threads: a strand per connection
  // One per io_context. Shared with the accept loop's coroutine: on a shared executor the
  // io_context may outlive this object's stop() but not its destruction, so stop() drops
  // these and the coroutine frame (destroyed inside the io_context) holds the last references.
  struct Listener {
    std::shared_ptr<net::ip::tcp::acceptor> acceptor;
    std::shared_ptr<net::steady_timer> pause;
    std::shared_ptr<WatchStarter> starter;  // null with strands
  };
  std::vector<Listener> listeners_;
  std::vector<std::thread> threads_;
  int port_ = 0;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> draining_{false};
  std::mutex reserve_mu_;  // the listeners' accept loops may run on different threads
  int reserve_fd_ = -1;  // /dev/null, given up to accept-and-refuse when fds run out
  std::string refusal_;  // the raw 503 sent on the reserve fd
  std::atomic<std::uint64_t> accept_backoffs_{0}, accept_refused_{0}, body_budget_refused_{0};
  std::atomic<std::uint64_t> connections_open_{0}, requests_in_flight_{0}, body_bytes_in_flight_{0};
  std::mutex live_mu_;
  std::unordered_set<std::shared_ptr<Live>> live_;
};

}  // namespace modelux::http_server
