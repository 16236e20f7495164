#include "server/http_server.hpp"

#include <array>
#include <deque>
#include <future>
#include <memory_resource>
#include <span>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/unsent.hpp"

namespace modelux::http_server {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using net::redirect_error;
using net::use_awaitable;

namespace {

constexpr auto kAcceptBackoffMin = std::chrono::milliseconds(10);
constexpr auto kAcceptBackoffMax = std::chrono::seconds(1);

// accept() errors that concern one connection only (the next accept may well succeed).
bool per_connection_accept_error(const beast::error_code& ec) {
  return ec == net::error::connection_aborted || ec == net::error::connection_reset ||
         ec.value() == EPROTO || ec.value() == EPERM || ec.value() == EAGAIN;
}

// A connection's socket with one deadline for the operation about to run, as
// beast::tcp_stream's expires_after(), but checked lazily by one timer per connection:
// tcp_stream arms a timer before every read and write and cancels it after (a timer-queue
// insert and removal, a posted cancellation handler, and, when it becomes the earliest timer,
// a timerfd_settime; per operation). Here setting a deadline is a store; the timer is only
// re-armed when a deadline comes earlier than the one it waits for, and when it fires it
// re-arms itself for the current deadline or, if that has passed, cancels the socket's
// pending operations (which complete with operation_aborted).
//
// Every asynchronous read or write is preceded by expires_after(), as with tcp_stream. A
// deadline that passes while no operation is pending cancels only a ClientWatch's wait (which
// its periodic check re-arms). Runs on the connection's executor (its strand, if any).
class ConnStream {
 public:
  using executor_type = net::any_io_executor;
  explicit ConnStream(tcp::socket s) : sock_(std::move(s)), st_(std::make_shared<State>(sock_.get_executor())) {
    st_->sock = &sock_;
  }
  ~ConnStream() {
    st_->sock = nullptr;
    st_->deadline = Instant::max();
    st_->timer.cancel();
  }
  ConnStream(const ConnStream&) = delete;
  ConnStream& operator=(const ConnStream&) = delete;

  executor_type get_executor() noexcept { return sock_.get_executor(); }
  tcp::socket& socket() noexcept { return sock_; }
  void expires_after(Nanos d) { expires_at(std::chrono::steady_clock::now() + d); }
  void expires_at(Instant t) {
    st_->deadline = t;
    if (t == Instant::max() || (st_->armed && st_->timer.expiry() <= t)) return;
    arm(st_);
  }
  template <class Buffers, class Token>
  auto async_read_some(const Buffers& b, Token&& token) {
    return sock_.async_read_some(b, std::forward<Token>(token));
  }
  template <class Buffers, class Token>
  auto async_write_some(const Buffers& b, Token&& token) {
    return sock_.async_write_some(b, std::forward<Token>(token));
  }

 private:
  struct State {
    explicit State(const net::any_io_executor& ex) : timer(ex) {}
    net::steady_timer timer;
    Instant deadline = Instant::max();
    tcp::socket* sock = nullptr;  // null once the connection is gone
    bool armed = false;
    std::uint64_t generation = 0;  // a handler of an earlier arm() finds it changed
  };
  static void arm(const std::shared_ptr<State>& st) {
    st->armed = true;
    const std::uint64_t gen = ++st->generation;
    st->timer.expires_at(st->deadline);
    st->timer.async_wait([st, gen](const boost::system::error_code&) {
      if (gen != st->generation) return;  // replaced by a later arm()
      st->armed = false;
      if (!st->sock || st->deadline == Instant::max()) return;
      if (std::chrono::steady_clock::now() < st->deadline) {
        arm(st);
        return;
      }
      st->deadline = Instant::max();
      beast::error_code ec;
      st->sock->cancel(ec);
    });
  }
  tcp::socket sock_;
  std::shared_ptr<State> st_;
};

// Watches a client socket for a hang-up while its request runs, without consuming bytes (a
// pipelined next request stays queued for the session). Everything runs on the connection's
// strand. Two triggers, each followed by a poll(0) for POLLRDHUP/POLLHUP/POLLERR:
//  - an async_wait for readability, which hears a FIN at once;
//  - a periodic timer. Asio's epoll reactor is edge-triggered and its wait operations are never
//    tried speculatively, so with several io threads a FIN whose edge another thread consumed
//    between our poll(0) and arming the wait would never wake it. The timer bounds any such
//    miss to one period instead of the request's timeout. While pipelined bytes are queued the
//    socket stays readable, so only the (faster) timer runs then. With one io thread there is
//    no such race: the timer runs only while bytes are queued.
class ClientWatch : public std::enable_shared_from_this<ClientWatch> {
 public:
  static constexpr auto kBackstop = std::chrono::milliseconds(200);
  static constexpr auto kWhileQueued = std::chrono::milliseconds(50);
  // Most requests are answered before a hang-up could matter: the socket is first looked at
  // after this long, so a quick request costs one timer and no system call (a poll and an
  // epoll_ctl per request were 2% of a proxied request's CPU).
  static constexpr auto kFirstLook = std::chrono::milliseconds(10);

  // `backstop`: keep the periodic timer while the readability wait is armed. Only needed with
  // several io threads (the race above); with one, a stream's watch costs no timer and no
  // poll every kBackstop (at 5,000 open streams that was 25,000 of each per second).
  ClientWatch(tcp::socket& sock, std::shared_ptr<CancellationToken> token, bool backstop = true)
      : sock_(sock), token_(std::move(token)), timer_(sock.get_executor()), backstop_(backstop) {}

  void start() {
    timer_.expires_after(kFirstLook);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec) return;
      self->first_look();
    });
  }
  /// What start()'s timer does kFirstLook later; called by the server's WatchStarter instead
  /// when one io thread runs everything.
  void first_look() {
    if (!alive_) return;
    if (check()) arm_wait();
    tick();
  }
  /// After stop() nothing touches the socket again (it may be gone); the caller cancels the
  /// pending wait.
  void stop() {
    alive_ = false;
    timer_.cancel();
  }
  bool waiting() const noexcept { return waiting_; }

 private:
  enum class State { idle, queued, gone };

  State probe() const {
    pollfd p{};
    p.fd = sock_.native_handle();
    p.events = POLLIN | POLLRDHUP;
    if (::poll(&p, 1, 0) <= 0) return State::idle;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return State::gone;
    return (p.revents & POLLIN) ? State::queued : State::idle;
  }
  // Probes the socket; cancels the token on a hang-up. True while watching should go on.
  bool check() {
    if (!alive_) return false;
    State s = probe();
    if (s == State::gone) {
      alive_ = false;
      timer_.cancel();
      token_->cancel();
      return false;
    }
    queued_ = s == State::queued;
    return true;
  }
  void arm_wait() {
    if (waiting_ || queued_) return;
    waiting_ = true;
    sock_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](const boost::system::error_code& ec) {
      self->waiting_ = false;
      if (!self->alive_) return;  // stopped (the socket may be gone): do not touch it
      // Without the backstop nothing else re-arms a wait that the connection's deadline timer
      // cancelled (ConnStream cancels whatever is pending): look again and wait again.
      if (ec && !(ec == net::error::operation_aborted && !self->backstop_)) return;
      if (self->check()) self->arm_wait();
    });
  }
  void tick() {
    if (!backstop_ && !queued_) return;  // the readability wait alone hears a hang-up
    timer_.expires_after(queued_ ? kWhileQueued : kBackstop);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || !self->alive_) return;
      if (!self->check()) return;
      self->arm_wait();  // re-arms a wait that ended while bytes were queued
      self->tick();
    });
  }

  tcp::socket& sock_;
  std::shared_ptr<CancellationToken> token_;
  net::steady_timer timer_;
  bool backstop_ = true;
  bool alive_ = true, waiting_ = false, queued_ = false;
};

}  // namespace

// Gives each ClientWatch its first look kFirstLook after its request began, from one timer per
// server, instead of a timer armed and cancelled per request (most requests end long before:
// the arm, the cancel and its posted handler were per-request work, and at c=1 each arm moved
// the earliest timer: a timerfd_settime). Watches that stopped meanwhile are dropped at their
// turn. One per io_context run by one thread (none with strands: the tick runs the watches'
// checks itself, which must be on the thread of their connections).
struct Server::WatchStarter : std::enable_shared_from_this<Server::WatchStarter> {
  explicit WatchStarter(const net::any_io_executor& ex) : timer(ex) {}
  void add(std::shared_ptr<ClientWatch> w) {
    pending.push_back({std::chrono::steady_clock::now() + ClientWatch::kFirstLook, std::move(w)});
    if (!ticking && !stopped) schedule();
  }
  void stop() {
    stopped = true;
    timer.cancel();
    pending.clear();
  }
  void schedule() {
    ticking = true;
    timer.expires_at(pending.front().due);
    timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      self->ticking = false;
      if (ec || self->stopped) return;
      const auto now = std::chrono::steady_clock::now();
      // Entries are in order of their due time (one delay for all).
      while (!self->pending.empty() && self->pending.front().due <= now) {
        auto w = std::move(self->pending.front().watch);
        self->pending.pop_front();
        w->first_look();
      }
      if (!self->pending.empty()) self->schedule();
    });
  }
  struct Entry {
    Instant due;
    std::shared_ptr<ClientWatch> watch;
  };
  net::steady_timer timer;
  std::deque<Entry> pending;
  bool ticking = false, stopped = false;
};

namespace {

class BeastWriter final : public ResponseWriter {
 public:
  /// `draining`: when set by the time the response header goes out, the response closes its
  /// connection although the request asked for keep-alive.
  BeastWriter(ConnStream& s, bool keep_alive, unsigned version, const std::atomic<bool>* draining = nullptr,
              Server::WatchStarter* starter = nullptr)
      : stream_(s), keep_alive_(keep_alive), version_(version), draining_(draining), starter_(starter) {}
  ~BeastWriter() override { stop_watching(); }

  net::awaitable<bool> respond(int status, std::string content_type, std::string body, Headers extra) override {
    if (started_ || gone_) co_return false;
    started_ = true;
    decide_keep_alive();
    if (!plain_head(status)) {
      http::response<http::string_body> res{static_cast<http::status>(status), version_};
      res.set(http::field::server, "modelux");
      res.set(http::field::content_type, content_type);
      for (auto& [k, v] : extra) res.set(k, v);
      res.body() = std::move(body);
      res.keep_alive(keep_alive_);
      res.prepare_payload();
      beast::error_code ec;
      stream_.expires_after(std::chrono::seconds(30));
      co_await http::async_write(stream_, res, redirect_error(use_awaitable, ec));
      done_ = true;
      if (ec) gone_ = true;
      co_return !gone_;
    }
    // Header and body in one send.
    std::string head = make_head(status, content_type, extra, false, body.size());
    std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer(body)};
    const bool ok = co_await send(bufs);
    done_ = true;
    co_return ok;
  }

  net::awaitable<bool> start_stream(int status, std::string content_type, Headers extra) override {
    co_return co_await start_stream(status, std::move(content_type), std::move(extra), std::string_view{});
  }

  net::awaitable<bool> start_stream(int status, std::string content_type, Headers extra, std::string_view first) override {
    if (started_ || gone_) co_return false;
    started_ = true;
    streaming_ = true;
    decide_keep_alive();
    if (!plain_head(status)) {
      http::response<http::empty_body> res{static_cast<http::status>(status), version_};
      res.set(http::field::server, "modelux");
      res.set(http::field::content_type, content_type);
      res.set(http::field::cache_control, "no-cache");
      for (auto& [k, v] : extra) res.set(k, v);
      res.chunked(true);
      res.keep_alive(keep_alive_);
      http::response_serializer<http::empty_body> sr{res};
      beast::error_code ec;
      stream_.expires_after(std::chrono::seconds(30));
      co_await http::async_write_header(stream_, sr, redirect_error(use_awaitable, ec));
      if (ec) gone_ = true;
      if (gone_) co_return false;
      co_return co_await write(first);
    }
    // The header and the first piece in one send.
    std::string head = make_head(status, content_type, extra, true, 0);
    ChunkHead ch(first.size());
    std::array<net::const_buffer, 4> bufs{net::buffer(head), ch.buffer(), net::buffer(first.data(), first.size()),
                                          net::buffer(kCrlf)};
    co_return co_await send(first.empty() ? std::span<const net::const_buffer>(bufs.data(), 1) : std::span<const net::const_buffer>(bufs));
  }

  net::awaitable<bool> write(std::string_view piece) override {
    if (!streaming_ || gone_) co_return false;
    if (piece.empty()) co_return true;
    ChunkHead ch(piece.size());
    std::array<net::const_buffer, 3> bufs{ch.buffer(), net::buffer(piece.data(), piece.size()), net::buffer(kCrlf)};
    // A stream's pieces (one per relayed upstream read) usually fit the socket at once: that
    // write is done here, without send()'s coroutine frame; send() takes only the rest.
    auto& sock = stream_.socket();
    beast::error_code ec;
    if (sock.non_blocking()) {
      const std::size_t total = ch.buffer().size() + piece.size() + kCrlf.size();
      std::size_t n = sock.write_some(bufs, ec);
      if (!ec && n == total) co_return true;
      if (ec == net::error::would_block || ec == net::error::try_again) ec = {}, n = 0;
      if (ec) {
        gone_ = true;
        co_return false;
      }
      std::array<net::const_buffer, 3> rest;
      const std::span<const net::const_buffer> left(rest.data(), unsent(bufs, n, rest));  // named: GCC 12 and co_await temporaries
      co_return co_await send_rest(left);
    }
    co_return co_await send(bufs);
  }

  net::awaitable<bool> end_stream() override { co_return co_await end_stream(std::string_view{}); }

  net::awaitable<bool> end_stream(std::string_view last) override {
    if (!streaming_ || gone_) co_return false;
    // The last piece and the terminating chunk in one send.
    ChunkHead ch(last.size());
    std::array<net::const_buffer, 4> bufs{ch.buffer(), net::buffer(last.data(), last.size()), net::buffer(kCrlf),
                                          net::buffer(kLastChunk)};
    const bool ok = co_await send(last.empty() ? std::span<const net::const_buffer>(bufs.data() + 3, 1)
                                               : std::span<const net::const_buffer>(bufs));
    done_ = true;
    co_return ok;
  }

  void abort() override {
    gone_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }
  void watch_client(std::shared_ptr<CancellationToken> token) override {
    stop_watching();
    watch_ = std::make_shared<ClientWatch>(stream_.socket(), std::move(token), /*backstop=*/starter_ == nullptr);
    if (starter_) starter_->add(watch_);
    else watch_->start();
  }
  void stop_watching() override {
    if (!watch_) return;
    const bool waiting = watch_->waiting();
    watch_->stop();
    watch_.reset();
    beast::error_code ec;
    if (waiting) stream_.socket().cancel(ec);  // only the watcher's wait is pending here
  }
  bool started() const noexcept override { return started_; }
  bool keep_alive() const noexcept { return keep_alive_; }
  bool done() const noexcept { return done_; }
  bool gone() const noexcept { return gone_; }

 private:
  ConnStream& stream_;
  bool keep_alive_;
  unsigned version_;
  const std::atomic<bool>* draining_;
  Server::WatchStarter* starter_;
  bool started_ = false, streaming_ = false, done_ = false, gone_ = false;
  std::shared_ptr<ClientWatch> watch_;

  void decide_keep_alive() {
    if (draining_ && draining_->load(std::memory_order_acquire)) keep_alive_ = false;
  }

  static constexpr std::string_view kCrlf = "\r\n";
  static constexpr std::string_view kLastChunk = "0\r\n\r\n";

  // "<size in hex>\r\n" of a chunk.
  struct ChunkHead {
    explicit ChunkHead(std::size_t n) {
      char* p = buf + sizeof buf;
      *--p = '\n';
      *--p = '\r';
      do {
        *--p = "0123456789abcdef"[n & 15];
        n >>= 4;
      } while (n);
      begin = p;
    }
    net::const_buffer buffer() const { return net::const_buffer(begin, static_cast<std::size_t>(buf + sizeof buf - begin)); }
    char buf[24];
    const char* begin;
  };

  // The header is written by hand (one string, no Beast serializer) for HTTP/1.1 answers that
  // have a body; other versions and bodiless statuses keep Beast's rules.
  bool plain_head(int status) const noexcept { return version_ == 11 && status >= 200 && status != 204 && status != 304; }

  static bool header_ok(std::string_view k, std::string_view v) {
    if (k.empty()) return false;
    for (char c : k)
      if (c <= ' ' || c == ':' || c == 0x7f) return false;
    for (char c : v)
      if (c == '\r' || c == '\n' || c == '\0') return false;
    return true;
  }

  std::string make_head(int status, std::string_view content_type, const Headers& extra, bool chunked, std::size_t length) const {
    std::string h;
    h.reserve(256);
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h += http::obsolete_reason(static_cast<http::status>(status));
    h += "\r\nServer: modelux\r\n";
    auto is = [](std::string_view a, std::string_view b) { return beast::iequals(a, b); };
    bool own_type = false;
    for (const auto& [k, v] : extra) own_type = own_type || is(k, "content-type");
    if (!own_type) {
      h += "Content-Type: ";
      h += content_type;
      h += "\r\n";
    }
    if (chunked) h += "Cache-Control: no-cache\r\n";
    for (std::size_t i = 0; i < extra.size(); ++i) {
      const auto& [k, v] = extra[i];
      // Framing is ours; a later header of the same name replaces this one (as Beast's set()).
      if (is(k, "content-length") || is(k, "transfer-encoding") || is(k, "connection") || is(k, "server") ||
          (chunked && is(k, "cache-control")) || !header_ok(k, v))
        continue;
      bool replaced = false;
      for (std::size_t j = i + 1; j < extra.size() && !replaced; ++j) replaced = is(extra[j].first, k);
      if (replaced) continue;
      h += k;
      h += ": ";
      h += v;
      h += "\r\n";
    }
    if (chunked) {
      h += "Transfer-Encoding: chunked\r\n";
    } else {
      h += "Content-Length: ";
      h += std::to_string(length);
      h += "\r\n";
    }
    if (!keep_alive_) h += "Connection: close\r\n";
    h += "\r\n";
    return h;
  }

  // Sends `bufs` (one gather write): at once without blocking when the socket has room (the
  // usual case: one sendmsg, no asynchronous operation, no timer), the rest asynchronously
  // under the 30 s write timeout (a client that does not read is treated as gone:
  // backpressure has a limit).
  net::awaitable<bool> send(std::span<const net::const_buffer> bufs) {
    if (gone_) co_return false;
    auto& sock = stream_.socket();
    beast::error_code ec;
    if (!sock.non_blocking()) sock.non_blocking(true, ec);
    std::size_t total = 0;
    for (const auto& b : bufs) total += b.size();
    std::size_t n = ec ? 0 : sock.write_some(bufs, ec);
    if (ec == net::error::would_block || ec == net::error::try_again) ec = {}, n = 0;
    if (ec) {
      gone_ = true;
      co_return false;
    }
    if (n < total) {
      std::array<net::const_buffer, 8> rest;
      const std::size_t k = unsent(bufs, n, std::span<net::const_buffer>(rest.data(), bufs.size()));
      stream_.expires_after(std::chrono::seconds(30));
      co_await net::async_write(stream_, std::span<const net::const_buffer>(rest.data(), k), redirect_error(use_awaitable, ec));
      if (ec) gone_ = true;
    }
    co_return !gone_;
  }
  // The part of a write the socket did not take at once, under the same 30 s write timeout.
  net::awaitable<bool> send_rest(std::span<const net::const_buffer> rest) {
    beast::error_code ec;
    stream_.expires_after(std::chrono::seconds(30));
    co_await net::async_write(stream_, rest, redirect_error(use_awaitable, ec));
    if (ec) gone_ = true;
    co_return !gone_;
  }
};

}  // namespace

std::string default_error_body(int status, const std::string& message, std::string_view /*target*/) {
  Error e;
  e.kind = status == 503 ? ErrorKind::local_resource_exhausted : ErrorKind::bad_request;
  e.message = message;
  e.code = status == 413 ? "request_too_large" : status == 503 ? "server_busy" : "invalid_request";
  return openai_error_json(e).dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<std::unique_ptr<Server>> Server::start(ServerOptions opts, Handler handler) {
  std::unique_ptr<Server> s(new Server());
  s->opts_ = std::move(opts);
  if (!s->opts_.error_body) s->opts_.error_body = default_error_body;
  s->handler_ = std::move(handler);
  beast::error_code ec;
  auto addr = net::ip::make_address(s->opts_.host, ec);
  if (ec) return fail(ErrorKind::invalid_config, "bad listen address '" + s->opts_.host + "'");
  tcp::endpoint ep{addr, static_cast<unsigned short>(s->opts_.port)};
  // The executors that get a listener each, every one run by one thread, except a single
  // shared executor run by several threads (then each connection gets a strand).
  std::vector<net::any_io_executor> exs = s->opts_.executors;
  if (exs.empty() && s->opts_.executor) {
    exs.push_back(*s->opts_.executor);
    s->strands_ = s->opts_.threads > 1;
  }
  if (exs.empty()) {
    exs.push_back(s->ioc_.get_executor());
    for (int i = 1; i < s->opts_.threads; ++i) {
      s->more_iocs_.push_back(std::make_unique<net::io_context>(1));
      exs.push_back(s->more_iocs_.back()->get_executor());
    }
  }
  s->ex_ = exs.front();
  auto cannot_listen = [&](const beast::error_code& e) {
    return fail(ErrorKind::io, "cannot listen on " + s->opts_.host + ":" + std::to_string(s->opts_.port) + ": " + e.message());
  };
  // Several listeners share the port through SO_REUSEPORT. Any socket of the same user that
  // sets it could join that group, another modelux included, and would silently take a share
  // of the connections: a plain bind first makes a port already in use an error, as it is
  // with one listener.
  if (exs.size() > 1 && ep.port() != 0) {
    tcp::acceptor probe(exs.front());
    probe.open(ep.protocol(), ec);
    if (!ec) probe.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) probe.bind(ep, ec);
    if (ec) return cannot_listen(ec);
  }
  for (const auto& ex : exs) {
    Listener l;
    l.acceptor = std::make_shared<tcp::acceptor>(s->strands_ ? net::any_io_executor(net::make_strand(ex)) : ex);
    l.acceptor->open(ep.protocol(), ec);
    if (!ec) l.acceptor->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec && exs.size() > 1) {
      int one = 1;
      if (::setsockopt(l.acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        ec = beast::error_code(errno, boost::system::system_category());
    }
    if (!ec) l.acceptor->bind(ep, ec);
    if (!ec) l.acceptor->listen(net::socket_base::max_listen_connections, ec);
    if (ec) return cannot_listen(ec);
    if (ep.port() == 0) ep.port(l.acceptor->local_endpoint().port());  // the others join the first's port
    l.pause = std::make_shared<net::steady_timer>(l.acceptor->get_executor());
    if (!s->strands_) l.starter = std::make_shared<WatchStarter>(ex);
    s->listeners_.push_back(std::move(l));
  }
  s->port_ = ep.port();
  s->reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  {
    std::string body = s->opts_.error_body(503, "the server is out of file descriptors; retry shortly", {});
    s->refusal_ = "HTTP/1.1 503 Service Unavailable\r\nServer: modelux\r\nContent-Type: application/json\r\n"
                  "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n" + body;
  }
  for (const auto& l : s->listeners_)
    net::co_spawn(l.acceptor->get_executor(), s->accept_loop(l.acceptor, l.pause, l.starter), net::detached);
  if (s->opts_.executors.empty() && !s->opts_.executor) {
    s->threads_.emplace_back([p = s.get()] { p->ioc_.run(); });
    for (auto& ioc : s->more_iocs_) s->threads_.emplace_back([c = ioc.get()] { c->run(); });
  }
  return s;
}

Server::~Server() {
  stop();
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
}

void Server::stop() {
  if (stopped_.exchange(true)) return;
  std::vector<std::future<void>> closed;
  for (const auto& l : listeners_) {
    auto done = std::make_shared<std::promise<void>>();
    closed.push_back(done->get_future());
    net::post(l.acceptor->get_executor(), [acc = l.acceptor, pause = l.pause, starter = l.starter, done] {
      beast::error_code ec;
      acc->close(ec);
      pause->cancel();
      if (starter) starter->stop();
      done->set_value();
    });
  }
  // Own io_contexts: stop them. Shared executors: wait for the acceptors to close; the
  // executors' owner stops its io_contexts (and so every session) afterwards.
  const bool shared = opts_.executor || !opts_.executors.empty();
  if (shared) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (auto& f : closed) f.wait_until(until);
  } else {
    ioc_.stop();
    for (auto& ioc : more_iocs_) ioc->stop();
  }
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  // On a shared executor the io_context dies before this object: no io object (nor strand)
  // of ours may outlive it here (ASan: use-after-free in ~strand_impl at exit).
  listeners_.clear();
}

ServerStats Server::stats() const noexcept {
  ServerStats st;
  st.accept_backoffs = accept_backoffs_.load(std::memory_order_relaxed);
  st.accept_refused = accept_refused_.load(std::memory_order_relaxed);
  st.body_budget_refused = body_budget_refused_.load(std::memory_order_relaxed);
  st.connections_open = connections_open_.load(std::memory_order_relaxed);
  st.requests_in_flight = requests_in_flight_.load(std::memory_order_relaxed);
  st.body_bytes_in_flight = body_bytes_in_flight_.load(std::memory_order_relaxed);
  return st;
}

bool Server::reserve_body(std::size_t n) noexcept {
  if (n == 0) return true;
  const std::size_t cap = opts_.max_inflight_body_bytes;
  std::uint64_t cur = body_bytes_in_flight_.load(std::memory_order_relaxed);
  do {
    if (cap != 0 && (n > cap || cur > cap - n)) return false;
  } while (!body_bytes_in_flight_.compare_exchange_weak(cur, cur + n, std::memory_order_acq_rel));
  return true;
}

void Server::release_body(std::size_t n) noexcept {
  if (n) body_bytes_in_flight_.fetch_sub(n, std::memory_order_acq_rel);
}

// Out of fds, the pending connections would wait in the backlog until their clients give up.
// Give up the reserve fd for a moment to take each one and answer 503 at once (a client then
// sees a fast, retryable refusal), then take the reserve back. Runs on the acceptor's strand.
void Server::refuse_pending(tcp::acceptor& acceptor) {
  std::lock_guard lk(reserve_mu_);
  if (reserve_fd_ < 0) return;
  ::close(reserve_fd_);
  reserve_fd_ = -1;
  const int lfd = acceptor.native_handle();
  for (int i = 0; i < 64; ++i) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) break;
    // Read what the client already sent (a close with unread bytes is a RST, which can
    // destroy the answer before the client reads it), answer, close.
    char sink[4096];
    for (int r = 0; r < 16 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++r) {
    }
    (void)!::send(fd, refusal_.data(), refusal_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
    accept_refused_.fetch_add(1, std::memory_order_relaxed);
  }
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

// At the fd limit accept() fails at once, and retrying at once spins a core (issue #11: 35,000
// failed accepts per second). Pause 10 ms, doubling to 1 s while it lasts; refuse the pending
// connections quickly through the reserve fd meanwhile.
net::awaitable<void> Server::accept_loop(std::shared_ptr<tcp::acceptor> acceptor, std::shared_ptr<net::steady_timer> pause,
                                         std::shared_ptr<WatchStarter> starter) {
  const net::any_io_executor ex = acceptor->get_executor();
  auto backoff = std::chrono::duration_cast<std::chrono::milliseconds>(kAcceptBackoffMin);
  for (;;) {
    beast::error_code ec;
    // One io thread runs every handler of this io_context in turn already: a strand per
    // connection would only add a queue and a dispatch to every completion (it was a sixth of
    // the CPU of a request). The connection stays on the thread that accepted it.
    tcp::socket sock(strands_ ? net::any_io_executor(net::make_strand(ex_)) : ex);
    co_await acceptor->async_accept(sock, redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) co_return;
      if (per_connection_accept_error(ec)) continue;
      accept_backoffs_.fetch_add(1, std::memory_order_relaxed);
      refuse_pending(*acceptor);
      pause->expires_after(backoff);
      co_await pause->async_wait(redirect_error(use_awaitable, ec));
      if (!acceptor->is_open()) co_return;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, kAcceptBackoffMax);
      continue;
    }
    backoff = std::chrono::duration_cast<std::chrono::milliseconds>(kAcceptBackoffMin);
    auto sock_ex = sock.get_executor();
    net::co_spawn(sock_ex, session(std::move(sock), starter), net::detached);
  }
}

// What drain() needs of a session: its strand, and its stream while it waits idle for the
// next request. Touched only on that strand.
struct Server::Live {
  net::any_io_executor ex;
  ConnStream* stream = nullptr;
  bool idle = false;
};

void Server::drain() {
  if (draining_.exchange(true, std::memory_order_acq_rel)) return;
  if (stopped_.load(std::memory_order_acquire)) return;
  for (const auto& l : listeners_)
    net::post(l.acceptor->get_executor(), [acc = l.acceptor, pause = l.pause] {
      beast::error_code ec;
      acc->close(ec);
      pause->cancel();
    });
  close_idle();
}

std::size_t Server::release_idle() {
  std::lock_guard lk(live_mu_);
  const std::size_t before = live_.bucket_count();
  // Not for a set still in use at its size: rehashing that would only make it regrow.
  if (before <= 64 || before < 8 * live_.size()) return 0;
  live_.rehash(0);  // the fewest buckets the current size needs
  return before > live_.bucket_count() ? (before - live_.bucket_count()) * sizeof(void*) : 0;
}

void Server::close_idle() {
  std::lock_guard lk(live_mu_);
  for (const auto& l : live_)
    net::post(l->ex, [l] {
      if (l->stream && l->idle) {
        beast::error_code ec;
        l->stream->socket().cancel(ec);
      }
    });
}

namespace {

bool is_protocol_error(const beast::error_code& ec) {
  return ec == http::error::body_limit || ec == http::error::header_limit || ec == http::error::bad_target ||
         ec == http::error::bad_method || ec == http::error::bad_version || ec == http::error::bad_field ||
         ec == http::error::bad_value || ec == http::error::bad_chunk || ec == http::error::bad_content_length ||
         ec == http::error::bad_line_ending || ec == http::error::bad_transfer_encoding ||
         ec == http::error::bad_chunk_extension || ec == http::error::bad_obs_fold;
}

// After an early answer the client may still be sending its body. Closing with unread bytes
// makes the kernel send a RST, which can destroy our answer before the client reads it; so
// (as nginx's lingering close) stop sending, then read and discard for a bounded time and
// amount through a small fixed buffer. Nothing is buffered.
net::awaitable<void> lingering_close(ConnStream& stream, std::size_t max_bytes) {
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) co_return;
  std::array<char, 4096> sink;
  std::size_t total = 0;
  stream.expires_after(std::chrono::seconds(2));
  while (total < max_bytes) {
    std::size_t n = co_await stream.async_read_some(net::buffer(sink), redirect_error(use_awaitable, ec));
    if (ec) break;
    total += n;
  }
  stream.socket().close(ec);
}

// The request's header fields live in a per-request arena (RequestParser below): Beast
// allocates each field, and the method and target, separately, five or six allocations per
// request that the arena turns into none (a larger header spills over to the heap).
using FieldAlloc = std::pmr::polymorphic_allocator<char>;
using RequestParser = http::request_parser<http::string_body, FieldAlloc>;
constexpr std::size_t kFieldArena = 1536;

RequestHead make_head(const RequestParser& parser, const std::string& remote) {
  const auto& msg = parser.get();
  RequestHead h;
  h.method = std::string(msg.method_string());
  h.target = std::string(msg.target());
  auto q = h.target.find('?');
  h.path = h.target.substr(0, q);
  if (q != std::string::npos) h.query = h.target.substr(q + 1);
  std::size_t fields = 0;
  for (auto it = msg.begin(); it != msg.end(); ++it) ++fields;
  h.headers.reserve(fields);  // one allocation, not one per doubling
  for (const auto& f : msg) h.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  h.remote = remote;
  if (auto cl = parser.content_length()) h.content_length = *cl;
  else if (!parser.chunked()) h.content_length = 0;  // no body framing: no body
  return h;
}

}  // namespace

net::awaitable<void> Server::session(tcp::socket sock, std::shared_ptr<WatchStarter> starter) {
  connections_open_.fetch_add(1, std::memory_order_relaxed);
  ConnStream stream(std::move(sock));
  auto live = std::make_shared<Live>();
  live->ex = stream.get_executor();
  live->stream = &stream;
  {
    std::lock_guard lk(live_mu_);
    live_.insert(live);
  }
  struct Leave {
    Server* s;
    std::shared_ptr<Live> live;
    ~Leave() {
      live->stream = nullptr;  // on the session's strand, as every reader of it
      {
        std::lock_guard lk(s->live_mu_);
        s->live_.erase(live);
      }
      s->connections_open_.fetch_sub(1, std::memory_order_relaxed);
    }
  } leave{this, live};

  beast::error_code ec;
  stream.socket().set_option(tcp::no_delay(true), ec);
  std::string remote;
  {
    auto ep = stream.socket().remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string();
  }
  beast::flat_buffer buffer;
  auto protocol_error = [&](const beast::error_code& e) -> std::pair<int, std::string> {
    int status = (e == http::error::body_limit) ? 413 : (e == http::error::header_limit ? 431 : 400);
    std::string msg = e == http::error::body_limit
                          ? "request body exceeds the limit of " + std::to_string(opts_.max_body_bytes) + " bytes"
                          : "malformed HTTP request: " + e.message();
    return {status, std::move(msg)};
  };
  // The target as far as the request line was read (empty before it): it picks the error shape.
  auto target_of = [](const RequestParser& p) -> std::string_view {
    auto t = p.get().target();
    return {t.data(), t.size()};
  };
  auto busy = [&](std::string_view target) {
    body_budget_refused_.fetch_add(1, std::memory_order_relaxed);
    return Rejection{503, "application/json",
                     opts_.error_body(503, "the server is buffering too many request bodies; retry shortly", target),
                     {{"retry-after", "1"}}};
  };
  alignas(std::max_align_t) std::array<std::byte, kFieldArena> field_arena;
  for (;;) {
    if (draining()) break;
    // Declared before the parser and the message released from it: it outlives both.
    std::pmr::monotonic_buffer_resource field_mem(field_arena.data(), field_arena.size());
    RequestParser parser(std::piecewise_construct, std::make_tuple(), std::make_tuple(FieldAlloc(&field_mem)));
    parser.body_limit(opts_.max_body_bytes);
    parser.header_limit(static_cast<std::uint32_t>(opts_.max_header_bytes));
    stream.expires_after(opts_.read_timeout);
    // Phase 1: the header only. Idle until it arrives: drain() may close us here.
    live->idle = true;
    co_await http::async_read_header(stream, buffer, parser, redirect_error(use_awaitable, ec));
    live->idle = false;
    if (ec) {
      if (is_protocol_error(ec)) {
        auto [status, msg] = protocol_error(ec);
        BeastWriter w(stream, false, 11);
        co_await w.respond(status, "application/json", opts_.error_body(status, msg, target_of(parser)), {});
        co_await lingering_close(stream, opts_.max_body_bytes);
      }
      break;
    }
    requests_in_flight_.fetch_add(1, std::memory_order_acq_rel);
    // Bytes of this request's body counted against max_inflight_body_bytes, released when
    // the request is done (its body lives until the handler returns).
    struct Request_ {
      Server* s;
      std::size_t reserved = 0;
      ~Request_() {
        s->release_body(reserved);
        s->requests_in_flight_.fetch_sub(1, std::memory_order_acq_rel);
      }
    } held{this};

    RequestHead head = make_head(parser, remote);
    std::optional<Rejection> rejection;
    // Header values become trace fields, ledger keys and JSON strings: invalid UTF-8 is
    // refused here, at the edge, before anything stores it (issue #11 item 5).
    for (const auto& [name, value] : head.headers)
      if (!valid_utf8(value) || !valid_utf8(name)) {
        rejection = Rejection{400, "application/json",
                              opts_.error_body(400, "header '" + (valid_utf8(name) ? name : std::string("?")) +
                                                        "' is not valid UTF-8", head.path),
                              {}};
        break;
      }
    if (!rejection && opts_.on_head) rejection = opts_.on_head(head);
    // The whole announced body is claimed before a byte of it is read (Beast's string body
    // reserves that much at once).
    if (!rejection && head.content_length && *head.content_length > 0) {
      if (reserve_body(*head.content_length)) held.reserved = *head.content_length;
      else rejection = busy(head.path);
    }
    if (rejection) {
      BeastWriter w(stream, false, parser.get().version());
      co_await w.respond(rejection->status, std::move(rejection->content_type), std::move(rejection->body),
                         std::move(rejection->headers));
      co_await lingering_close(stream, opts_.max_body_bytes);
      break;
    }
    // Phase 2: the body. A client that waits for "100 Continue" (curl does for large
    // bodies) gets it only now that the header was accepted.
    if (const auto* expect = head.header("expect"); expect && beast::iequals(*expect, "100-continue") &&
                                                    !parser.is_done()) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      co_await net::async_write(stream, net::buffer(kContinue), redirect_error(use_awaitable, ec));
      if (ec) break;
    }
    parser.eager(true);
    bool over_budget = false;
    while (!parser.is_done()) {
      co_await http::async_read_some(stream, buffer, parser, redirect_error(use_awaitable, ec));
      if (ec) break;
      // A chunked body is counted as it grows.
      const std::size_t have = parser.get().body().size();
      if (have > held.reserved) {
        if (!reserve_body(have - held.reserved)) {
          over_budget = true;
          break;
        }
        held.reserved = have;
      }
    }
    if (over_budget) {
      Rejection r = busy(head.path);
      BeastWriter w(stream, false, parser.get().version());
      co_await w.respond(r.status, std::move(r.content_type), std::move(r.body), std::move(r.headers));
      co_await lingering_close(stream, opts_.max_body_bytes);
      break;
    }
    if (ec) {
      if (is_protocol_error(ec)) {
        auto [status, msg] = protocol_error(ec);
        BeastWriter w(stream, false, 11);
        co_await w.respond(status, "application/json", opts_.error_body(status, msg, target_of(parser)), {});
        co_await lingering_close(stream, opts_.max_body_bytes);
      }
      break;
    }
    auto msg = parser.release();
    Request req;
    static_cast<RequestHead&>(req) = std::move(head);
    req.body = std::move(msg.body());
    // While draining, every answer closes its connection (decided when its header goes out).
    BeastWriter w(stream, msg.keep_alive(), msg.version(), &draining_, starter.get());
    co_await handler_(req, w);
    if (!w.started()) co_await w.respond(500, "application/json", opts_.error_body(500, "handler wrote no response", req.path), {});
    if (w.gone() || !w.keep_alive() || !w.done()) break;
  }
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

}  // namespace modelux::http_server
