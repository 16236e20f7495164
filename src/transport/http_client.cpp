// HTTP/1.1 client on Boost.Beast with a keep-alive pool per origin.
//
// Why this shape: provider calls are few but long (seconds) and streamed, so the cost that
// matters is connection setup (TCP + TLS handshakes), which the pool removes; a reused
// connection the server already closed is detected on first use and the request is retried
// once on a fresh connection (safe: nothing was received). Bodies are read piece by piece
// with buffer_body, so a slow consumer slows only its own upstream read.
#include <array>
#include <memory_resource>
#include <iterator>
#include <cerrno>
#include <span>
#include <cstdlib>
#include <mutex>
#include <optional>

#include <openssl/evp.h>
#include <unordered_map>
#include <vector>

#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "modelux/transport.hpp"
#include "core/unsent.hpp"
#include "transport/body_framer.hpp"
#include "transport/drained_reads.hpp"
#include "transport/ca_bundle.hpp"
#include "transport/send.hpp"

namespace modelux {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using net::redirect_error;
using net::use_awaitable;

Result<Url> parse_url(std::string_view url) {
  Url u;
  std::string_view rest;
  if (url.starts_with("https://")) {
    u.tls = true;
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else {
    return fail(ErrorKind::invalid_config, "URL must start with http:// or https://: '" + std::string(url) + "'");
  }
  auto slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!u.target.empty() && u.target.front() == '?') u.target.insert(0, "/");
  if (authority.empty()) return fail(ErrorKind::invalid_config, "URL has no host: '" + std::string(url) + "'");
  if (authority.front() == '[') {  // [v6]:port
    auto close = authority.find(']');
    if (close == std::string_view::npos) return fail(ErrorKind::invalid_config, "bad IPv6 host in URL");
    u.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size() && authority[close + 1] == ':') u.port = std::string(authority.substr(close + 2));
  } else {
    auto colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      u.host = std::string(authority.substr(0, colon));
      u.port = std::string(authority.substr(colon + 1));
    } else {
      u.host = std::string(authority);
    }
  }
  if (u.host.empty()) return fail(ErrorKind::invalid_config, "URL has no host: '" + std::string(url) + "'");
  if (u.port.empty()) u.port = u.tls ? "443" : "80";
  for (char c : u.port)
    if (c < '0' || c > '9') return fail(ErrorKind::invalid_config, "bad port in URL: '" + std::string(url) + "'");
  return u;
}

namespace {

// Failures of our own process: out of descriptors or memory. They say nothing about the
// provider, so they are `local` (health never counts them) and carry the real cause.
std::optional<std::string_view> local_cause(const beast::error_code& ec) {
  if (ec.category() != boost::system::system_category() && ec.category() != boost::system::generic_category())
    return std::nullopt;
  switch (ec.value()) {
    case EMFILE: return "too many open files (EMFILE)";
    case ENFILE: return "too many open files in the system (ENFILE)";
    case ENOBUFS: return "no buffer space (ENOBUFS)";
    case ENOMEM: return "out of memory (ENOMEM)";
    default: return std::nullopt;
  }
}

Error local_error(std::string_view cause, std::string_view while_doing) {
  Error e = error_of(ErrorKind::local_resource_exhausted, "local: " + std::string(cause) + " while " + std::string(while_doing), true);
  e.retry_after = Millis{1000};
  return e;
}

Error net_error(const beast::error_code& ec, std::string_view what, bool timed_out) {
  if (auto cause = local_cause(ec)) return local_error(*cause, what);
  Error e;
  e.kind = timed_out ? ErrorKind::timeout : ErrorKind::connection;
  e.message = std::string(what) + ": " + (timed_out ? std::string("deadline exceeded") : ec.message());
  return e;
}

// Asio's per-operation cancellation reaches only the operation pending when the signal is
// emitted. A cancel that lands during a DNS lookup (the resolver does not hear per-operation
// cancellation) or while a completion is already queued is not seen by the next operation, which
// would then run to its deadline (on a hung upstream, the whole attempt timeout). So the
// coroutine's cancellation state is checked between steps: callers that switched off
// throw_if_cancelled (the router's attempts) depend on it.
bool cancel_requested(const net::cancellation_state& cs) { return cs.cancelled() != net::cancellation_type::none; }

// A cancellation we made (the caller went away, a loser of a race, an attempt the routing
// session ended): ours, never the provider's.
Error cancelled_error(std::string_view where) {
  return error_of(ErrorKind::cancelled, "cancelled " + std::string(where), true);
}

struct Connection {
  Connection(net::any_io_executor ex, ssl::context& ctx, bool tls_) : tls(tls_) {
    if (tls) ssl_stream = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ex, ctx);
    else tcp_stream = std::make_unique<beast::tcp_stream>(ex);
  }
  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*ssl_stream) : *tcp_stream; }
  bool tls;
  std::unique_ptr<beast::tcp_stream> tcp_stream;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> ssl_stream;
  beast::flat_buffer buffer;
  std::string origin;
  Instant idle_since{};
  bool reused = false;
};

class HttpTransport;

// The answer's parser with its header fields in an arena of its own: Beast allocates every
// field separately (seven allocations for a typical provider answer), the arena makes that one
// allocation (this object) per exchange; a larger header spills over to the heap.
using FieldAlloc = std::pmr::polymorphic_allocator<char>;
struct FieldArena {
  alignas(std::max_align_t) std::array<std::byte, 1024> bytes;
  std::pmr::monotonic_buffer_resource mem{bytes.data(), bytes.size()};
};
struct UpstreamParser : private FieldArena, http::response_parser<http::buffer_body, FieldAlloc> {
  UpstreamParser()  // FieldArena, a base listed first, exists before the parser that uses it
      : http::response_parser<http::buffer_body, FieldAlloc>(std::piecewise_construct, std::make_tuple(),
                                                             std::make_tuple(FieldAlloc(&mem))) {}
  UpstreamParser(const UpstreamParser&) = delete;
  UpstreamParser& operator=(const UpstreamParser&) = delete;
};

class BeastHttpStream final : public HttpStream {
 public:
  BeastHttpStream(std::shared_ptr<HttpTransport> owner, std::unique_ptr<Connection> c,
                  std::unique_ptr<UpstreamParser> p);
  ~BeastHttpStream() override;
  int status() const noexcept override { return status_; }
  const Headers& headers() const noexcept override { return headers_; }
  net::awaitable<Result<std::string>> read_some(Instant deadline) override;
  net::awaitable<Result<std::string>> read_all(Instant deadline) override;
  net::awaitable<Result<std::string>> read_some_real(Instant deadline);  // deadline in real time
  void recycle(std::string&& piece) noexcept override {
    if (piece.capacity() <= kMaxSpare) spare_ = std::move(piece);
  }
  // Completes the body from bytes already received, without waiting. True: the rest is still
  // to come (worth a short wait); false: done_ says whether it completed.
  bool finish_received() noexcept;
  void abort() noexcept override {
    release_guard();
    if (conn_) {
      beast::error_code ec;
      conn_->lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      conn_->lowest().close();
      conn_.reset();
    }
  }

 private:
  std::shared_ptr<HttpTransport> owner_;
  std::unique_ptr<Connection> conn_;
  std::unique_ptr<UpstreamParser> parser_;
  int status_ = 0;
  Headers headers_;
  bool done_ = false;
  std::size_t total_ = 0;
  // The body is read into this, allocated on the first read: a buffer in read_some's frame
  // made every call (one per relayed chunk) allocate and free 16 KB.
  static constexpr std::size_t kReadBuf = 8 * 1024;
  std::unique_ptr<char[]> rbuf_;
  // A piece given back (recycle): the next framed read appends into it, so a relayed stream
  // does not allocate a string per read. Not kept when a burst made it large.
  static constexpr std::size_t kMaxSpare = 64 * 1024;
  std::string spare_;

  // A chunked or Content-Length body is decoded by this framer straight from the connection's
  // buffer (body_framer.hpp): one socket read, however many chunks it brought, is one
  // read_some. Other bodies (read to the connection's end) keep Beast's parser.
  std::optional<transport::BodyFramer> framer_;
  // Skips Asio's speculative recv when the last read drained the socket (drained_reads.hpp).
  std::optional<transport::DrainedReads> drained_;
  // The deadline of the read in progress, checked lazily: one timer per stream, armed for the
  // earliest deadline and re-armed only when it fires while a read is still waiting with a
  // later one. A relayed stream's reads (each bounded by now + stall) then cost no timer
  // operation each, where the tcp_stream armed and cancelled one per read. The timer cancels
  // the socket's read when the deadline passed; `sock` is cleared once the connection goes.
  struct ReadGuard {
    explicit ReadGuard(const net::any_io_executor& ex) : timer(ex) {}
    net::steady_timer timer;
    Instant deadline = Instant::max();  // of the read in progress
    Instant armed = Instant::max();     // the timer's expiry while it waits
    tcp::socket* sock = nullptr;
    bool reading = false;
    bool fired = false;  // the read in progress was cancelled by its deadline
  };
  std::shared_ptr<ReadGuard> guard_;
  static void arm_guard(const std::shared_ptr<ReadGuard>& g, Instant at);
  void release_guard() noexcept {
    if (!guard_) return;
    guard_->sock = nullptr;
    guard_->reading = false;
    guard_->timer.cancel();
    guard_.reset();
  }
  net::awaitable<Result<std::string>> read_framed(Instant deadline);
  Error body_error(const beast::error_code& ec);
};

class HttpTransport final : public Transport, public std::enable_shared_from_this<HttpTransport> {
 public:
  HttpTransport(net::any_io_executor ex, TransportOptions opts)
      : ex_(std::move(ex)), opts_(std::move(opts)), ssl_ctx_(ssl::context::tls_client) {
    ssl_ctx_.set_verify_mode(opts_.verify_tls ? ssl::verify_peer : ssl::verify_none);
    std::string proxy = opts_.https_proxy;
    for (const char* var : {"HTTPS_PROXY", "https_proxy"})
      if (proxy.empty())
        if (const char* v = std::getenv(var)) proxy = v;
    if (!proxy.empty()) {
      if (proxy.find("://") == std::string::npos) proxy = "http://" + proxy;
      // user:pass@host:port → Proxy-Authorization: Basic
      auto scheme_end = proxy.find("://") + 3;
      auto at = proxy.find('@', scheme_end);
      if (at != std::string::npos) {
        std::string cred = proxy.substr(scheme_end, at - scheme_end);
        proxy.erase(scheme_end, at - scheme_end + 1);
        std::string b64(4 * ((cred.size() + 2) / 3) + 1, '\0');  // EVP_EncodeBlock adds a NUL
        int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                reinterpret_cast<const unsigned char*>(cred.data()), static_cast<int>(cred.size()));
        b64.resize(static_cast<std::size_t>(std::max(0, n)));
        proxy_auth_ = "Basic " + b64;
      }
      if (auto u = parse_url(proxy); u && !u->tls) proxy_ = *u;  // TLS to the proxy itself is not supported
    }
    std::string np;
    for (const char* var : {"NO_PROXY", "no_proxy"})
      if (np.empty())
        if (const char* v = std::getenv(var)) np = v;
    for (std::size_t i = 0; i <= np.size();) {
      auto comma = np.find(',', i);
      std::string item = np.substr(i, comma == std::string::npos ? std::string::npos : comma - i);
      while (!item.empty() && item.front() == ' ') item.erase(0, 1);
      while (!item.empty() && item.back() == ' ') item.pop_back();
      if (!item.empty()) no_proxy_.push_back(item);
      if (comma == std::string::npos) break;
      i = comma + 1;
    }
  }

  net::awaitable<Result<HttpResponse>> send(const HttpRequestSpec& req, Instant deadline) override {
    return send_and_read_all(*this, req, deadline);
  }

  net::awaitable<Result<std::unique_ptr<HttpStream>>> open(const HttpRequestSpec& req, Instant clock_deadline) override {
    const Instant deadline = real_deadline(clock_deadline);
    auto url = parse_url(req.url);
    if (!url) co_return std::unexpected(url.error());
    requests_.fetch_add(1, std::memory_order_relaxed);
    // One retry when a reused pooled connection turns out to be dead before any response. A
    // cancelled exchange is not a dead connection: retrying it would start a fresh exchange
    // that no longer hears the cancel (it was already delivered) and runs to the deadline.
    for (int tries = 0; tries < 2; ++tries) {
      auto conn = co_await lease(*url, deadline);
      if (!conn) co_return std::unexpected(conn.error());
      bool reused = (*conn)->reused;
      auto r = co_await exchange(std::move(*conn), *url, req, deadline);
      // Only a connection failure means the pooled connection was dead; an answer over a
      // limit is the server's answer and must not be asked for twice.
      if (r || !reused || r.error().kind != ErrorKind::connection) co_return r;
    }
    co_return std::unexpected(error_of(ErrorKind::connection, "connection failed"));
  }

  TransportStats stats() const override {
    std::lock_guard lk(mu_);
    TransportStats s;
    s.connections_opened = opened_;
    s.connections_reused = reused_;
    s.requests = requests_.load();
    for (const auto& [k, v] : idle_) s.idle += v.size();
    s.in_flight = leased_;
    return s;
  }

  void close_idle() override {
    std::lock_guard lk(mu_);
    idle_.clear();
  }

  void trim_idle() override {
    std::vector<std::unique_ptr<Connection>> doomed;  // closed outside the lock
    {
      std::lock_guard lk(mu_);
      for (auto it = idle_.begin(); it != idle_.end();) {
        auto& v = it->second;  // oldest idle first
        if (v.size() > opts_.quiet_idle_per_origin) {
          // Those that stay are the ones lowest in memory: with glibc, made before the burst
          // (when the heap was small), among what stays resident anyway. Kept, the burst's own
          // would each pin the pages around their pieces (issue #19, RSS after streams). All
          // were used moments ago, so none is staler than another.
          const auto keep = static_cast<std::ptrdiff_t>(opts_.quiet_idle_per_origin);
          std::nth_element(v.begin(), v.begin() + keep, v.end(), [](const auto& a, const auto& b) {
            return std::less<const Connection*>{}(a.get(), b.get());
          });
          std::move(v.begin() + keep, v.end(), std::back_inserter(doomed));
          v.erase(v.begin() + keep, v.end());
          std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a->idle_since < b->idle_since; });
        }
        it = v.empty() ? idle_.erase(it) : std::next(it);
      }
    }
  }

  void give_back(std::unique_ptr<Connection> c) {
    std::lock_guard lk(mu_);
    --leased_;
    park(std::move(c));
  }
  // Into the idle pool (or closed when it is full); mu_ held.
  void park(std::unique_ptr<Connection> c) {
    if (!c) return;
    auto& v = idle_[c->origin];
    const auto now = std::chrono::steady_clock::now();
    // The oldest idle connections sit at the front: those past the idle timeout go, so a pool
    // that grew for a burst shrinks back while traffic goes on.
    std::size_t expired = 0;
    while (expired < v.size() && now - v[expired]->idle_since > opts_.idle_timeout) ++expired;
    if (expired) v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(expired));
    if (v.size() >= opts_.max_idle_per_origin) return;
    // An idle connection keeps no large read buffer: it grew to the largest read of its last
    // answer (up to 64 KB for a stream), and a pool of such buffers outlives every burst.
    if (c->buffer.size() == 0 && c->buffer.capacity() > 4096) c->buffer.shrink_to_fit();
    c->idle_since = now;
    v.push_back(std::move(c));
  }
  void dropped() {
    std::lock_guard lk(mu_);
    --leased_;
  }
  // The end of a body its reader no longer needs (a stream's last chunk after data: [DONE])
  // had not arrived: read it in the background for up to 2 s, then pool the connection. It no
  // longer counts as leased meanwhile (nobody uses it).
  void finish_later(std::unique_ptr<Connection> conn, std::unique_ptr<UpstreamParser> parser,
                    std::optional<transport::BodyFramer> framer = std::nullopt) {
    dropped();
    Connection* c = conn.get();
    auto* p = parser.get();
    net::co_spawn(
        c->lowest().get_executor(),
        [self = shared_from_this(), conn = std::move(conn), parser = std::move(parser), c, p, framer]() mutable -> net::awaitable<void> {
          std::array<char, 512> sink;
          beast::error_code ec;
          std::size_t total = 0;
          c->lowest().expires_after(std::chrono::seconds(2));
          if (framer) {  // the framer decodes the body (BeastHttpStream::read_framed)
            while (!framer->done() && !framer->error() && total < 4096) {
              if (c->buffer.size() == 0) {
                std::size_t n = co_await c->tcp_stream->async_read_some(c->buffer.prepare(512), redirect_error(use_awaitable, ec));
                c->buffer.commit(n);
                if (ec) break;
              }
              const auto d = c->buffer.data();
              std::size_t used = framer->feed(std::string_view(static_cast<const char*>(d.data()), d.size()), nullptr);
              c->buffer.consume(used);
              total += used;
            }
            if (!ec && framer->done() && p->get().keep_alive()) {
              std::lock_guard lk(self->mu_);
              self->park(std::move(conn));
            } else {
              beast::error_code ignore;
              c->lowest().socket().close(ignore);
            }
            co_return;
          }
          while (!p->is_done() && total < 4096) {
            p->get().body().data = sink.data();
            p->get().body().size = sink.size();
            co_await http::async_read_some(*c->tcp_stream, c->buffer, *p, redirect_error(use_awaitable, ec));
            if (ec == http::error::need_buffer) ec = {};
            if (ec) break;
            total += sink.size() - p->get().body().size;
          }
          if (!ec && p->is_done() && p->get().keep_alive()) {
            std::lock_guard lk(self->mu_);
            self->park(std::move(conn));
          } else {
            beast::error_code ignore;
            c->lowest().socket().close(ignore);
          }
        },
        net::detached);
  }
  const TransportOptions& options() const noexcept { return opts_; }

  /// The edge where Clock instants become real time: every deadline the transport receives
  /// is an instant of the router's Clock, translated here once, on entry, by its distance
  /// from that clock's now (identity for the real clock).
  Instant real_deadline(Instant d) const noexcept {
    if (!opts_.clock || d == Instant::max()) return d;
    const Instant now = std::chrono::steady_clock::now();
    const Nanos left = d - opts_.clock->now();
    return left >= Instant::max() - now ? Instant::max() : now + left;
  }

 private:
  net::awaitable<Result<std::unique_ptr<Connection>>> lease(const Url& url, Instant deadline) {
    std::string origin = (url.tls ? "https://" : "http://") + url.host + ":" + url.port;
    {
      std::lock_guard lk(mu_);
      auto& v = idle_[origin];
      auto now = std::chrono::steady_clock::now();
      while (!v.empty()) {
        auto c = std::move(v.back());
        v.pop_back();
        if (now - c->idle_since > opts_.idle_timeout) continue;
        c->reused = true;
        ++reused_;
        ++leased_;
        co_return c;
      }
      ++leased_;
    }
    if (url.tls) std::call_once(trust_loaded_, [this] { load_trust(); });
    if (url.tls && !ca_error_.empty()) {
      dropped();
      co_return fail(ErrorKind::invalid_config, ca_error_);
    }
    auto c = std::make_unique<Connection>(ex_, ssl_ctx_, url.tls);
    c->origin = origin;
    // Beast reads max(512, free capacity) at a time: from an empty buffer a typical answer
    // (head + a ~1 KB body) took two recvmsg. Room for one read of it from the start.
    c->buffer.reserve(4096);
    // HTTPS through a proxy: TCP to the proxy, then an HTTP CONNECT tunnel to the origin,
    // then TLS end to end with the origin (the proxy sees only ciphertext).
    const bool tunnel = url.tls && proxy_ && !no_proxy(url.host);
    const Url& hop = tunnel ? *proxy_ : url;
    auto ep = co_await resolve(hop, deadline);
    if (!ep) {
      dropped();
      co_return std::unexpected(ep.error());
    }
    const auto cs = co_await net::this_coro::cancellation_state;
    if (cancel_requested(cs)) {
      dropped();
      co_return std::unexpected(cancelled_error("before connecting to " + hop.host));
    }
    beast::error_code ec;
    c->lowest().expires_at(deadline);
    co_await c->lowest().async_connect(*ep, redirect_error(use_awaitable, ec));
    if (ec) {
      dropped();
      const std::string what = "connect to " + hop.host + ":" + hop.port + (tunnel ? " (HTTPS proxy)" : "");
      if (cancel_requested(cs)) co_return std::unexpected(cancelled_error("while connecting to " + hop.host));
      // Asio's range connect reports operation_aborted when it could not even open a socket
      // (its socket is not open afterwards): find the real cause, usually EMFILE.
      if (ec == net::error::operation_aborted) {
        tcp::socket probe(ex_);
        beast::error_code pec;
        probe.open(ep->begin()->endpoint().protocol(), pec);
        if (auto cause = local_cause(pec)) co_return std::unexpected(local_error(*cause, "connecting to " + hop.host));
      }
      forget_dns(hop);
      co_return std::unexpected(net_error(ec, what, ec == beast::error::timeout));
    }
    c->lowest().socket().set_option(tcp::no_delay(true), ec);
    if (tunnel) {
      if (auto t = co_await connect_tunnel(c->lowest(), url); !t) {
        dropped();
        co_return std::unexpected(t.error());
      }
    }
    if (url.tls) {
      if (!SSL_set_tlsext_host_name(c->ssl_stream->native_handle(), url.host.c_str())) {
        dropped();
        co_return std::unexpected(error_of(ErrorKind::connection, "TLS: cannot set SNI host name"));
      }
      if (opts_.verify_tls) c->ssl_stream->set_verify_callback(ssl::host_name_verification(url.host));
      co_await c->ssl_stream->async_handshake(ssl::stream_base::client, redirect_error(use_awaitable, ec));
      if (ec) {
        dropped();
        co_return std::unexpected(net_error(ec, "TLS handshake with " + url.host, ec == beast::error::timeout));
      }
    }
    {
      std::lock_guard lk(mu_);
      ++opened_;
    }
    co_return c;
  }

  net::awaitable<Result<tcp::resolver::results_type>> resolve(const Url& url, Instant deadline) {
    std::string key = url.host + ":" + url.port;
    auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lk(mu_);
      auto it = dns_.find(key);
      if (it != dns_.end() && it->second.second > now) co_return it->second.first;
    }
    tcp::resolver resolver(ex_);
    beast::error_code ec;
    (void)deadline;  // getaddrinfo cannot be bounded; numeric hosts resolve without a lookup
    // Forward a cancel to the resolver by hand: a lookup still queued is dropped; one already in
    // getaddrinfo finishes, and lease() checks the cancellation state afterwards.
    const auto cs = co_await net::this_coro::cancellation_state;
    struct SlotGuard {
      net::cancellation_slot slot;
      ~SlotGuard() {
        if (slot.is_connected()) slot.clear();
      }
    } guard{cs.slot()};
    if (guard.slot.is_connected()) guard.slot.assign([&resolver](net::cancellation_type) { resolver.cancel(); });
    auto results = co_await resolver.async_resolve(url.host, url.port, redirect_error(use_awaitable, ec));
    if (ec == net::error::operation_aborted && cancel_requested(cs))
      co_return std::unexpected(cancelled_error("while resolving " + url.host));
    if (ec) co_return std::unexpected(net_error(ec, "resolve " + url.host, false));
    std::lock_guard lk(mu_);
    dns_[key] = {results, now + opts_.dns_ttl};
    co_return results;
  }

  // CONNECT host:port through the proxy; anything but a 2xx is an error naming the status.
  net::awaitable<Result<void>> connect_tunnel(beast::tcp_stream& s, const Url& url) {
    http::request<http::empty_body> req{http::verb::connect, url.host + ":" + url.port, 11};
    req.set(http::field::host, url.host + ":" + url.port);
    if (!proxy_auth_.empty()) req.set(http::field::proxy_authorization, proxy_auth_);
    beast::error_code ec;
    co_await http::async_write(s, req, redirect_error(use_awaitable, ec));
    if (ec) co_return std::unexpected(net_error(ec, "HTTPS proxy CONNECT", ec == beast::error::timeout));
    beast::flat_buffer buf;
    http::response_parser<http::empty_body> p;
    p.skip(true);  // a CONNECT response has no body
    co_await http::async_read_header(s, buf, p, redirect_error(use_awaitable, ec));
    if (ec) co_return std::unexpected(net_error(ec, "HTTPS proxy CONNECT response", ec == beast::error::timeout));
    int status = static_cast<int>(p.get().result_int());
    if (status < 200 || status >= 300)
      co_return std::unexpected(error_of(ErrorKind::connection, "HTTPS proxy refused CONNECT to " + url.host + ":" + url.port +
                                                                   " with status " + std::to_string(status)));
    co_return Result<void>{};
  }

  bool no_proxy(const std::string& host) const {
    for (const auto& suffix : no_proxy_) {
      if (suffix == "*") return true;
      if (host == suffix || (host.size() > suffix.size() && host.ends_with(suffix) &&
                             (suffix.front() == '.' || host[host.size() - suffix.size() - 1] == '.')))
        return true;
    }
    return false;
  }

  void forget_dns(const Url& url) {
    std::lock_guard lk(mu_);
    dns_.erase(url.host + ":" + url.port);
  }

  // Writes the request (head and body in one gather write) and reads the response head. On a
  // plain TCP connection the write is first tried at once without blocking: a request fits the
  // socket buffer, so it costs one sendmsg and no asynchronous operation.
  template <class Stream>
  net::awaitable<beast::error_code> write_and_read_head(Stream& s, Connection& c, const std::string& head, std::string_view body,
                                                        http::response_parser<http::buffer_body, FieldAlloc>& parser) {
    beast::error_code ec;
    const auto cs = co_await net::this_coro::cancellation_state;
    if (cancel_requested(cs)) co_return net::error::operation_aborted;
    std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer(body.data(), body.size())};
    std::size_t sent = 0;
    if (!c.tls) {
      auto& sock = c.lowest().socket();
      if (!sock.non_blocking()) sock.non_blocking(true, ec);
      if (!ec) sent = sock.write_some(bufs, ec);
      if (ec == net::error::would_block || ec == net::error::try_again) ec = {}, sent = 0;
      if (ec) co_return ec;
    }
    if (sent < head.size() + body.size()) {
      std::array<net::const_buffer, 2> rest;
      const std::size_t k = unsent(bufs, sent, rest);
      co_await net::async_write(s, std::span<const net::const_buffer>(rest.data(), k), redirect_error(use_awaitable, ec));
      if (ec) co_return ec;
    }
    if (cancel_requested(cs)) co_return net::error::operation_aborted;
    co_await http::async_read_header(s, c.buffer, parser, redirect_error(use_awaitable, ec));
    co_return ec;
  }

  // The request head, written by hand (Beast's serializer cost more than the rest of the write).
  // Host, User-Agent and the framing are ours; among the spec's headers a later one of the same
  // name replaces an earlier one.
  static std::string request_head(const Url& url, const HttpRequestSpec& req) {
    auto is = [](std::string_view a, std::string_view b) { return beast::iequals(a, b); };
    std::string h;
    h.reserve(256 + req.headers.size() * 48);
    h += req.method.empty() ? std::string_view("POST") : std::string_view(req.method);
    h += ' ';
    h += url.target;
    h += " HTTP/1.1\r\nHost: ";
    h += url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
    const bool default_port = (url.tls && url.port == "443") || (!url.tls && url.port == "80");
    if (!default_port) {
      h += ':';
      h += url.port;
    }
    bool own_agent = false;
    for (const auto& [k, v] : req.headers) own_agent = own_agent || is(k, "user-agent");
    if (!own_agent) {
      h += "\r\nUser-Agent: modelux/";
      h += version();
    }
    h += "\r\n";
    for (std::size_t i = 0; i < req.headers.size(); ++i) {
      const auto& [k, v] = req.headers[i];
      if (is(k, "host") || is(k, "content-length") || is(k, "transfer-encoding") || is(k, "connection")) continue;
      if (k.empty() || k.find_first_of(":\r\n ") != std::string::npos || v.find_first_of("\r\n") != std::string::npos) continue;
      bool replaced = false;
      for (std::size_t j = i + 1; j < req.headers.size() && !replaced; ++j) replaced = is(req.headers[j].first, k);
      if (replaced) continue;
      h += k;
      h += ": ";
      h += v;
      h += "\r\n";
    }
    h += "Content-Length: ";
    h += std::to_string(req.body.size());
    h += "\r\n\r\n";
    return h;
  }

  net::awaitable<Result<std::unique_ptr<HttpStream>>> exchange(std::unique_ptr<Connection> c, const Url& url,
                                                              const HttpRequestSpec& req, Instant deadline) {
    const std::string head = request_head(url, req);

    auto parser = std::make_unique<UpstreamParser>();
    parser->header_limit(static_cast<std::uint32_t>(opts_.max_header_bytes));
    parser->body_limit(opts_.max_response_bytes);
    c->lowest().expires_at(deadline);
    beast::error_code ec = c->tls ? co_await write_and_read_head(*c->ssl_stream, *c, head, req.body, *parser)
                                  : co_await write_and_read_head(*c->tcp_stream, *c, head, req.body, *parser);
    if (ec) {
      dropped();
      const auto cs = co_await net::this_coro::cancellation_state;
      if (cancel_requested(cs))
        co_return std::unexpected(cancelled_error("during the HTTP exchange with " + url.host));
      // The head arrived but breaks a limit (a Content-Length over max_response_bytes is
      // refused as soon as the head is parsed): the answer is bad, the connection was fine.
      if (ec == http::error::body_limit)
        co_return fail(ErrorKind::malformed_response, "response body exceeds the limit of " +
                                                          std::to_string(opts_.max_response_bytes) +
                                                          " bytes (Content-Length from " + url.host + ")");
      if (ec == http::error::header_limit)
        co_return fail(ErrorKind::malformed_response, "response headers from " + url.host + " exceed the limit of " +
                                                          std::to_string(opts_.max_header_bytes) + " bytes");
      co_return std::unexpected(net_error(ec, "HTTP exchange with " + url.host, ec == beast::error::timeout));
    }
    co_return std::make_unique<BeastHttpStream>(shared_from_this(), std::move(c), std::move(parser));
  }

  net::any_io_executor ex_;
  TransportOptions opts_;
  // The trust store is loaded on the first HTTPS connection, not in the constructor: parsing
  // the system's ~150 CA certificates costs about 1 MB of heap and touches about 2 MB of
  // libcrypto per transport, which a process that speaks only plain HTTP (a local provider,
  // the mock) or has not sent anything yet would carry for nothing (issue #13, idle RSS).
  void load_trust() {
    ssl_ctx_.set_default_verify_paths();
    // An OpenSSL built for another distribution (the wheel's) looks for CAs where this system
    // has none: then the system's own bundle is the store.
    if (std::string bundle = process_fallback_ca_bundle(); !bundle.empty()) {
      beast::error_code ignored;
      ssl_ctx_.load_verify_file(bundle, ignored);
    }
    if (!opts_.ca_file.empty()) {
      beast::error_code ec;
      ssl_ctx_.load_verify_file(opts_.ca_file, ec);
      // Never silent: every HTTPS request fails with this message instead of an unexplained
      // certificate error.
      if (ec) ca_error_ = "cannot load ca_file '" + opts_.ca_file + "': " + ec.message();
    }
  }
  ssl::context ssl_ctx_;
  std::once_flag trust_loaded_;
  std::string ca_error_;              // why ca_file could not be loaded ("" = fine); set once, by load_trust
  std::optional<Url> proxy_;          // HTTPS_PROXY (http:// only)
  std::string proxy_auth_;            // Proxy-Authorization from user:pass@ in the proxy URL
  std::vector<std::string> no_proxy_; // NO_PROXY host suffixes
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Connection>>> idle_;
  std::unordered_map<std::string, std::pair<tcp::resolver::results_type, Instant>> dns_;
  std::uint64_t opened_ = 0, reused_ = 0;
  std::size_t leased_ = 0;
  std::atomic<std::uint64_t> requests_{0};
};

BeastHttpStream::BeastHttpStream(std::shared_ptr<HttpTransport> owner, std::unique_ptr<Connection> c,
                                 std::unique_ptr<UpstreamParser> p)
    : owner_(std::move(owner)), conn_(std::move(c)), parser_(std::move(p)) {
  const auto& h = parser_->get();
  status_ = static_cast<int>(h.result_int());
  std::size_t fields = 0;
  for (auto it = h.begin(); it != h.end(); ++it) ++fields;
  headers_.reserve(fields);  // one allocation, not one per doubling
  for (const auto& f : h) headers_.emplace_back(std::string(f.name_string()), std::string(f.value()));
  done_ = parser_->is_done();
  if (!done_) {
    if (parser_->chunked()) framer_ = transport::BodyFramer::chunked();
    else if (auto len = parser_->content_length()) framer_ = transport::BodyFramer::with_length(*len);
    // The framer's reads are bounded by the ReadGuard: the head's deadline (the attempt's)
    // must not cut a stream that outlives it (a TLS read goes through the tcp_stream).
    if (framer_) conn_->lowest().expires_never();
  }
}

BeastHttpStream::~BeastHttpStream() {
  release_guard();
  if (!conn_) return;
  // A stream its reader ended early (an SSE stream after data: [DONE]) usually has the rest of
  // its body (the last chunk) already received: finish it without waiting, and the connection
  // can be reused instead of closed and reopened for the next stream.
  // When the rest has not arrived yet, a detached read waits for it briefly.
  if (!done_ && finish_received()) {
    owner_->finish_later(std::move(conn_), std::move(parser_), framer_);
    return;
  }
  // Keep the connection only if the body was read to the end and the server allows it.
  if (done_ && parser_->get().keep_alive()) owner_->give_back(std::move(conn_));
  else {
    beast::error_code ec;
    conn_->lowest().socket().close(ec);
    owner_->dropped();
  }
}

bool BeastHttpStream::finish_received() noexcept {
  if (conn_->tls || !conn_->lowest().socket().is_open() || !parser_->get().keep_alive()) return false;
  if (!rbuf_) rbuf_ = std::make_unique_for_overwrite<char[]>(kReadBuf);
  auto& sock = conn_->lowest().socket();
  beast::error_code ec;
  if (!sock.non_blocking()) sock.non_blocking(true, ec);
  // A few bytes at most are missing ("\r\n0\r\n\r\n"); a body with more left is not worth it.
  std::size_t discarded = 0;
  bool need_more = conn_->buffer.size() == 0;
  if (framer_) {
    for (int round = 0; round < 4 && !framer_->done(); ++round) {
      if (need_more) {
        std::size_t n = sock.read_some(conn_->buffer.prepare(512), ec);
        if (ec) return ec == net::error::would_block || ec == net::error::try_again;
        conn_->buffer.commit(n);
      }
      need_more = true;
      const auto d = conn_->buffer.data();
      std::size_t used = framer_->feed(std::string_view(static_cast<const char*>(d.data()), d.size()), nullptr);
      conn_->buffer.consume(used);
      discarded += used;
      if (framer_->error() || discarded > 4096) return false;
    }
    if (framer_->done()) done_ = true;
    return !done_;
  }
  for (int round = 0; round < 4 && !ec && !parser_->is_done(); ++round) {
    if (need_more) {
      std::size_t n = sock.read_some(conn_->buffer.prepare(512), ec);
      // Not here yet: worth waiting for; anything else: the connection is done for.
      if (ec) return ec == net::error::would_block || ec == net::error::try_again;
      conn_->buffer.commit(n);
    }
    need_more = true;
    while (conn_->buffer.size() > 0 && !parser_->is_done()) {
      parser_->get().body().data = rbuf_.get();
      parser_->get().body().size = kReadBuf;
      std::size_t used = parser_->put(conn_->buffer.data(), ec);
      conn_->buffer.consume(used);
      discarded += kReadBuf - parser_->get().body().size;
      if (ec == http::error::need_buffer) ec = {};
      if (ec == http::error::need_more) {  // a partial element: read more
        ec = {};
        break;
      }
      if (ec || discarded > 4096) return false;
      if (used == 0 && parser_->get().body().size == kReadBuf) break;
    }
  }
  if (!ec && parser_->is_done()) done_ = true;
  return !done_ && !ec;
}

// Not a coroutine: it hands out the reading coroutine itself, so a relayed chunk passes through
// one frame between the socket and the relay.
net::awaitable<Result<std::string>> BeastHttpStream::read_some(Instant clock_deadline) {
  const Instant deadline = owner_->real_deadline(clock_deadline);
  if (framer_ && !done_ && conn_) return read_framed(deadline);
  return read_some_real(deadline);
}

void BeastHttpStream::arm_guard(const std::shared_ptr<ReadGuard>& g, Instant at) {
  g->armed = at;
  g->timer.expires_at(at);  // a wait still pending completes with operation_aborted
  g->timer.async_wait([g](const beast::error_code& ec) {
    if (ec || !g->sock) return;  // re-armed, or the stream let go of its connection
    g->armed = Instant::max();
    if (!g->reading) return;  // the next read arms it again
    if (std::chrono::steady_clock::now() >= g->deadline) {
      g->fired = true;
      beast::error_code ignore;
      g->sock->cancel(ignore);
    } else {
      arm_guard(g, g->deadline);
    }
  });
}

Error BeastHttpStream::body_error(const beast::error_code& ec) {
  Error e = net_error(ec, "reading response body", ec == beast::error::timeout);
  if (ec == http::error::body_limit) {
    e.kind = ErrorKind::malformed_response;
    e.message = "response body exceeds the limit of " + std::to_string(owner_->options().max_response_bytes) + " bytes";
  } else if (ec != beast::error::timeout) {
    e.kind = ErrorKind::stream_interrupted;
    e.message = "upstream connection broke mid-body: " + ec.message();
  }
  beast::error_code ignore;
  conn_->lowest().socket().close(ignore);
  return e;
}

// Every complete piece of body already received goes out in one string; a read only when
// there is none.
net::awaitable<Result<std::string>> BeastHttpStream::read_framed(Instant deadline) {
  const auto cs = co_await net::this_coro::cancellation_state;
  std::string out = std::move(spare_);
  out.clear();
  for (;;) {
    if (cancel_requested(cs)) {
      beast::error_code ignore;
      conn_->lowest().socket().close(ignore);
      co_return std::unexpected(cancelled_error("while reading the response body"));
    }
    if (conn_->buffer.size() > 0) {
      const auto d = conn_->buffer.data();
      const std::size_t before = out.size();
      std::size_t used = framer_->feed(std::string_view(static_cast<const char*>(d.data()), d.size()), &out);
      conn_->buffer.consume(used);
      total_ += out.size() - before;
      if (framer_->error()) co_return std::unexpected(body_error(http::error::bad_chunk));
      if (total_ > owner_->options().max_response_bytes) co_return std::unexpected(body_error(http::error::body_limit));
      if (framer_->done()) done_ = true;
      if (!out.empty() || done_) co_return out;
    }
    // Wait for more bytes (read_more, inline: one frame less per chunk).
    beast::error_code ec;
    if (deadline != Instant::max() && !guard_) {
      auto ex = co_await net::this_coro::executor;
      guard_ = std::make_shared<ReadGuard>(ex);
      guard_->sock = &conn_->lowest().socket();
    }
    if (guard_) {
      guard_->deadline = deadline;
      guard_->reading = true;
      guard_->fired = false;
      if (deadline < guard_->armed) arm_guard(guard_, deadline);
    }
    auto space = conn_->buffer.prepare(kReadBuf);
    std::size_t got = 0;
    if (conn_->tls) {
      got = co_await conn_->ssl_stream->async_read_some(space, redirect_error(use_awaitable, ec));
    } else {
      // One recv per relayed chunk: no speculative recv when the last read drained the socket.
      if (!drained_) drained_.emplace(conn_->lowest().socket());
      const std::span<char> into(static_cast<char*>(space.data()), space.size());
      if (drained_->wait_needed(into, got, ec)) {
        got = co_await conn_->lowest().socket().async_read_some(space, redirect_error(use_awaitable, ec));
        if (!ec) drained_->after_read(got, space.size());
      }
    }
    if (!conn_) co_return std::unexpected(error_of(ErrorKind::cancelled, "stream aborted", true));
    conn_->buffer.commit(got);
    if (guard_) {
      guard_->reading = false;
      if (ec == net::error::operation_aborted && guard_->fired) ec = beast::error::timeout;
      guard_->fired = false;
    }
    if (ec == net::error::eof) ec = http::error::partial_message;  // the body is not complete
    if (ec) {
      if (ec == net::error::operation_aborted && cancel_requested(cs)) continue;  // reported as cancelled above
      co_return std::unexpected(body_error(ec));
    }
  }
}

net::awaitable<Result<std::string>> BeastHttpStream::read_some_real(Instant deadline) {
  if (done_) co_return std::string{};
  if (!conn_) co_return std::unexpected(error_of(ErrorKind::cancelled, "stream aborted", true));
  if (framer_) co_return co_await read_framed(deadline);  // read_all's path
  if (!rbuf_) rbuf_ = std::make_unique_for_overwrite<char[]>(kReadBuf);
  char* const buf = rbuf_.get();
  const auto cs = co_await net::this_coro::cancellation_state;
  for (;;) {
    if (cancel_requested(cs)) {
      beast::error_code ignore;
      conn_->lowest().socket().close(ignore);
      co_return std::unexpected(cancelled_error("while reading the response body"));
    }
    parser_->get().body().data = buf;
    parser_->get().body().size = kReadBuf;
    conn_->lowest().expires_at(deadline);
    beast::error_code ec;
    if (conn_->tls) co_await http::async_read_some(*conn_->ssl_stream, conn_->buffer, *parser_, redirect_error(use_awaitable, ec));
    else co_await http::async_read_some(*conn_->tcp_stream, conn_->buffer, *parser_, redirect_error(use_awaitable, ec));
    if (!conn_) co_return std::unexpected(error_of(ErrorKind::cancelled, "stream aborted", true));
    if (ec == http::error::need_buffer) ec = {};
    std::size_t n = kReadBuf - parser_->get().body().size;
    if (ec) co_return std::unexpected(body_error(ec));
    total_ += n;
    if (parser_->is_done()) done_ = true;
    if (n > 0 || done_) co_return std::string(buf, n);
  }
}

net::awaitable<Result<std::string>> BeastHttpStream::read_all(Instant clock_deadline) {
  const Instant deadline = owner_->real_deadline(clock_deadline);
  std::string all;
  for (;;) {
    // A framed body is read by read_framed itself: one coroutine frame less per answer.
    Result<std::string> piece;
    if (framer_ && !done_ && conn_) piece = co_await read_framed(deadline);
    else piece = co_await read_some_real(deadline);
    if (!piece) co_return std::unexpected(piece.error());
    if (piece->empty() && done_) co_return all;
    if (all.empty()) all = std::move(*piece);  // a whole answer usually comes in one piece
    else all += *piece;
    if (done_) co_return all;
  }
}

}  // namespace

std::shared_ptr<Transport> make_http_transport(net::any_io_executor ex, TransportOptions opts) {
  return std::make_shared<HttpTransport>(std::move(ex), std::move(opts));
}

}  // namespace modelux
