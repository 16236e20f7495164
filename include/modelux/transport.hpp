// modelux transport: the HTTP client the executor sends provider calls through — pooled
// keep-alive connections per origin, TLS with certificate verification on by default,
// deadlines on every operation, streaming bodies read incrementally (backpressure: nothing is
// read until the caller asks for the next piece), limits on body size and header count.
//
// Built on Boost.Asio C++20 coroutines. Threading: a Transport may be used from any number of
// coroutines on the io_context it was created for; the pool is guarded by a short mutex that
// is never held across I/O.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "modelux/wire.hpp"

namespace modelux {

namespace net = boost::asio;

struct TransportOptions {
  std::size_t max_response_bytes = 64 * 1024 * 1024;
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_idle_per_origin = 1024;  ///< idle connections kept per origin (never more than were in flight at once)
  Nanos idle_timeout = std::chrono::seconds(60);
  /// What trim_idle() keeps per origin: the idle connections a burst left beyond this are
  /// closed once the process is quiet (the proxy calls it when nothing is in flight).
  std::size_t quiet_idle_per_origin = 16;
  bool verify_tls = true;            ///< verify certificates against the system CA store
  std::string ca_file;               ///< extra CA bundle (PEM), optional; one that cannot be loaded fails every HTTPS request with invalid_config
  Nanos dns_ttl = std::chrono::seconds(30);
  std::string https_proxy;           ///< "http://host:port"; empty = read HTTPS_PROXY / https_proxy
  /// The clock whose instants the deadlines are (the Router passes its own); null = the real
  /// clock. The transport translates them to real time once, on entry.
  const Clock* clock = nullptr;
};

/// A buffered HTTP response.
struct HttpResponse {
  int status = 0;
  Headers headers;
  std::string body;
};

/// A response whose body is read piece by piece.
class HttpStream {
 public:
  virtual ~HttpStream() = default;
  virtual int status() const noexcept = 0;
  virtual const Headers& headers() const noexcept = 0;
  /// Next piece of the body (empty string at the end). Bounded by `deadline`.
  virtual net::awaitable<Result<std::string>> read_some(Instant deadline) = 0;
  /// Reads the rest of the body (bounded by the size limit).
  virtual net::awaitable<Result<std::string>> read_all(Instant deadline) = 0;
  /// Drops the connection immediately (cancellation): the upstream read stops.
  virtual void abort() noexcept = 0;
  /// Gives back a piece read_some() returned once the caller is done with it: the next
  /// read_some() may reuse its buffer (a relayed stream then allocates nothing per read).
  virtual void recycle(std::string&& piece) noexcept { (void)piece; }
};

struct TransportStats {
  std::uint64_t connections_opened = 0;
  std::uint64_t connections_reused = 0;
  std::uint64_t requests = 0;
  std::size_t idle = 0;      ///< pooled idle connections now
  std::size_t in_flight = 0; ///< connections leased now
};

/// Sends HTTP requests. Deadlines are instants of the caller's Clock (TransportOptions::clock
/// for the HTTP client; a simulated transport waits on the same clock's timers).
class Transport {
 public:
  virtual ~Transport() = default;
  /// Sends `req` and reads the whole response.
  virtual net::awaitable<Result<HttpResponse>> send(const HttpRequestSpec& req, Instant deadline) = 0;
  /// Sends `req` and returns once the response head arrived; the body is read on demand.
  virtual net::awaitable<Result<std::unique_ptr<HttpStream>>> open(const HttpRequestSpec& req, Instant deadline) = 0;
  virtual TransportStats stats() const = 0;
  /// Closes idle pooled connections.
  virtual void close_idle() = 0;
  /// Closes the idle pooled connections beyond TransportOptions::quiet_idle_per_origin of each
  /// origin: a burst's surplus, whose sockets and buffers would otherwise stay (and pin the heap
  /// pages they sit in) until the idle timeout, which only the next request enforces. The ones
  /// kept are those lowest in memory (with glibc, made before the burst).
  /// Any thread. A transport without a pool has nothing to do.
  virtual void trim_idle() {}
};

/// The real HTTP/1.1 client (Boost.Beast), http and https.
std::shared_ptr<Transport> make_http_transport(net::any_io_executor ex, TransportOptions opts = {});

/// Parsed absolute URL.
struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;  ///< path + query, at least "/"
};
Result<Url> parse_url(std::string_view url);

}  // namespace modelux
