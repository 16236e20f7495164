#include "server/http_server.hpp"

#include <array>
#include <future>

#include <poll.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace modelux::http_server {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using net::redirect_error;
using net::use_awaitable;

namespace {

std::string default_error_body(int status, const std::string& message) {
  Error e;
  e.kind = status == 413 ? ErrorKind::bad_request : ErrorKind::bad_request;
  e.message = message;
  e.code = status == 413 ? "request_too_large" : "invalid_request";
  return openai_error_json(e).dump();
}

// Watches a client socket for a hang-up while its request runs, without consuming bytes (a
// pipelined next request stays queued for the session). Everything runs on the connection's
// strand. Two triggers, each followed by a poll(0) for POLLRDHUP/POLLHUP/POLLERR:
//  - an async_wait for readability, which hears a FIN at once;
//  - a periodic timer. Asio's epoll reactor is edge-triggered and its wait operations are never
//    tried speculatively, so with several io threads a FIN whose edge another thread consumed
//    between our poll(0) and arming the wait would never wake it. The timer bounds any such
//    miss to one period instead of the request's timeout. While pipelined bytes are queued the
//    socket stays readable, so only the (faster) timer runs then.
class ClientWatch : public std::enable_shared_from_this<ClientWatch> {
 public:
  static constexpr auto kBackstop = std::chrono::milliseconds(200);
  static constexpr auto kWhileQueued = std::chrono::milliseconds(50);

  ClientWatch(tcp::socket& sock, std::shared_ptr<CancellationToken> token)
      : sock_(sock), token_(std::move(token)), timer_(sock.get_executor()) {}

  void start() {
    if (check()) arm_wait();
    tick();
  }
  /// After stop() nothing touches the socket again (it may be gone); the caller cancels the
  /// pending wait.
  void stop() {
    alive_ = false;
    timer_.cancel();
  }

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
      if (ec || !self->alive_) return;  // stopped (the socket may be gone): do not touch it
      if (self->check()) self->arm_wait();
    });
  }
  void tick() {
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
  bool alive_ = true, waiting_ = false, queued_ = false;
};

class BeastWriter final : public ResponseWriter {
 public:
  BeastWriter(beast::tcp_stream& s, bool keep_alive, unsigned version)
      : stream_(s), keep_alive_(keep_alive), version_(version) {}
  ~BeastWriter() override { stop_watching(); }

  net::awaitable<bool> respond(int status, std::string content_type, std::string body, Headers extra) override {
    if (started_ || gone_) co_return false;
    started_ = true;
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

  net::awaitable<bool> start_stream(int status, std::string content_type, Headers extra) override {
    if (started_ || gone_) co_return false;
    started_ = true;
    streaming_ = true;
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
    co_return !gone_;
  }

  net::awaitable<bool> write(std::string_view piece) override {
    if (!streaming_ || gone_) co_return false;
    if (piece.empty()) co_return true;
    beast::error_code ec;
    // A client that does not read for 30 s is treated as gone (backpressure has a limit).
    stream_.expires_after(std::chrono::seconds(30));
    co_await net::async_write(stream_, http::make_chunk(net::const_buffer(piece.data(), piece.size())),
                              redirect_error(use_awaitable, ec));
    if (ec) gone_ = true;
    co_return !gone_;
  }

  net::awaitable<bool> end_stream() override {
    if (!streaming_ || gone_) co_return false;
    beast::error_code ec;
    stream_.expires_after(std::chrono::seconds(30));
    co_await net::async_write(stream_, http::make_chunk_last(), redirect_error(use_awaitable, ec));
    done_ = true;
    if (ec) gone_ = true;
    co_return !gone_;
  }

  void abort() override {
    gone_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }
  void watch_client(std::shared_ptr<CancellationToken> token) override {
    stop_watching();
    watch_ = std::make_shared<ClientWatch>(stream_.socket(), std::move(token));
    watch_->start();
  }
  void stop_watching() override {
    if (!watch_) return;
    watch_->stop();
    watch_.reset();
    beast::error_code ec;
    stream_.socket().cancel(ec);  // only the watcher's wait is pending here
  }
  bool started() const noexcept override { return started_; }
  bool done() const noexcept { return done_; }
  bool gone() const noexcept { return gone_; }

 private:
  beast::tcp_stream& stream_;
  bool keep_alive_;
  unsigned version_;
  bool started_ = false, streaming_ = false, done_ = false, gone_ = false;
  std::shared_ptr<ClientWatch> watch_;
};

}  // namespace

Result<std::unique_ptr<Server>> Server::start(ServerOptions opts, Handler handler) {
  std::unique_ptr<Server> s(new Server());
  s->opts_ = std::move(opts);
  if (!s->opts_.error_body) s->opts_.error_body = default_error_body;
  s->handler_ = std::move(handler);
  beast::error_code ec;
  auto addr = net::ip::make_address(s->opts_.host, ec);
  if (ec) return fail(ErrorKind::invalid_config, "bad listen address '" + s->opts_.host + "'");
  tcp::endpoint ep{addr, static_cast<unsigned short>(s->opts_.port)};
  s->ex_ = s->opts_.executor ? *s->opts_.executor : net::any_io_executor(s->ioc_.get_executor());
  s->acceptor_ = std::make_unique<tcp::acceptor>(net::make_strand(s->ex_));
  s->acceptor_->open(ep.protocol(), ec);
  if (!ec) s->acceptor_->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s->acceptor_->bind(ep, ec);
  if (!ec) s->acceptor_->listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return fail(ErrorKind::io, "cannot listen on " + s->opts_.host + ":" + std::to_string(s->opts_.port) + ": " + ec.message());
  s->port_ = s->acceptor_->local_endpoint().port();
  net::co_spawn(s->acceptor_->get_executor(), s->accept_loop(), net::detached);
  if (!s->opts_.executor)
    for (int i = 0; i < std::max(1, s->opts_.threads); ++i) s->threads_.emplace_back([p = s.get()] { p->ioc_.run(); });
  return s;
}

Server::~Server() { stop(); }

void Server::stop() {
  if (stopped_.exchange(true)) return;
  std::promise<void> closed;
  net::post(acceptor_->get_executor(), [this, &closed] {
    beast::error_code ec;
    acceptor_->close(ec);
    closed.set_value();
  });
  // Own io_context: stop it. Shared executor: wait for the acceptor to close; the
  // executor's owner stops its io_context (and so every session) afterwards.
  if (opts_.executor) closed.get_future().wait_for(std::chrono::seconds(5));
  else ioc_.stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

net::awaitable<void> Server::accept_loop() {
  for (;;) {
    beast::error_code ec;
    tcp::socket sock(net::make_strand(ex_));
    co_await acceptor_->async_accept(sock, redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor_->is_open()) co_return;
      continue;
    }
    auto ex = sock.get_executor();
    net::co_spawn(ex, session(std::move(sock)), net::detached);
  }
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
net::awaitable<void> lingering_close(beast::tcp_stream& stream, std::size_t max_bytes) {
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

RequestHead make_head(const http::request_parser<http::string_body>& parser, const std::string& remote) {
  const auto& msg = parser.get();
  RequestHead h;
  h.method = std::string(msg.method_string());
  h.target = std::string(msg.target());
  auto q = h.target.find('?');
  h.path = h.target.substr(0, q);
  if (q != std::string::npos) h.query = h.target.substr(q + 1);
  for (const auto& f : msg) h.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  h.remote = remote;
  if (auto cl = parser.content_length()) h.content_length = *cl;
  else if (!parser.chunked()) h.content_length = 0;  // no body framing: no body
  return h;
}

}  // namespace

net::awaitable<void> Server::session(tcp::socket sock) {
  beast::tcp_stream stream(std::move(sock));
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
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(opts_.max_body_bytes);
    parser.header_limit(static_cast<std::uint32_t>(opts_.max_header_bytes));
    stream.expires_after(opts_.read_timeout);
    // Phase 1: the header only.
    co_await http::async_read_header(stream, buffer, parser, redirect_error(use_awaitable, ec));
    if (ec) {
      if (is_protocol_error(ec)) {
        auto [status, msg] = protocol_error(ec);
        BeastWriter w(stream, false, 11);
        co_await w.respond(status, "application/json", opts_.error_body(status, msg), {});
        co_await lingering_close(stream, opts_.max_body_bytes);
      }
      break;
    }
    RequestHead head = make_head(parser, remote);
    std::optional<Rejection> rejection;
    if (opts_.on_head) rejection = opts_.on_head(head);
    if (rejection) {
      BeastWriter w(stream, false, parser.get().version());
      co_await w.respond(rejection->status, std::move(rejection->content_type), std::move(rejection->body),
                         std::move(rejection->headers));
      co_await lingering_close(stream, opts_.max_body_bytes);
      co_return;
    }
    // Phase 2: the body. A client that waits for "100 Continue" (curl does for large
    // bodies) gets it only now that the header was accepted.
    if (const auto* expect = head.header("expect"); expect && beast::iequals(*expect, "100-continue") &&
                                                    !parser.is_done()) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      co_await net::async_write(stream, net::buffer(kContinue), redirect_error(use_awaitable, ec));
      if (ec) break;
    }
    while (!parser.is_done()) {
      co_await http::async_read_some(stream, buffer, parser, redirect_error(use_awaitable, ec));
      if (ec) break;
    }
    if (ec) {
      if (is_protocol_error(ec)) {
        auto [status, msg] = protocol_error(ec);
        BeastWriter w(stream, false, 11);
        co_await w.respond(status, "application/json", opts_.error_body(status, msg), {});
        co_await lingering_close(stream, opts_.max_body_bytes);
      }
      break;
    }
    auto msg = parser.release();
    Request req;
    static_cast<RequestHead&>(req) = std::move(head);
    req.body = std::move(msg.body());
    bool keep = msg.keep_alive();
    BeastWriter w(stream, keep, msg.version());
    co_await handler_(req, w);
    if (!w.started()) co_await w.respond(500, "application/json", opts_.error_body(500, "handler wrote no response"), {});
    if (w.gone() || !keep || !w.done()) break;
  }
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

}  // namespace modelux::http_server
