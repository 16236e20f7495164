#include <doctest/doctest.h>

#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>

#include "modelux/transport.hpp"
#include "support/closed_port.hpp"

using namespace modelux;
using tcp = net::ip::tcp;

TEST_CASE("parse_url: schemes, default ports, IPv6 and bad input") {
  auto a = parse_url("https://api.openai.com/v1/chat/completions");
  REQUIRE(a);
  CHECK(a->tls);
  CHECK(a->host == "api.openai.com");
  CHECK(a->port == "443");
  CHECK(a->target == "/v1/chat/completions");
  auto b = parse_url("http://127.0.0.1:8089");
  REQUIRE(b);
  CHECK_FALSE(b->tls);
  CHECK(b->port == "8089");
  CHECK(b->target == "/");
  auto c = parse_url("http://[::1]:9000/x?y=1");
  REQUIRE(c);
  CHECK(c->host == "::1");
  CHECK(c->target == "/x?y=1");
  CHECK_FALSE(parse_url("ftp://x"));
  CHECK_FALSE(parse_url("http://:80/"));
  CHECK_FALSE(parse_url("http://host:80x/"));
}

namespace {
// A one-shot CONNECT proxy that records the request head and answers with `status`.
struct FakeProxy {
  net::io_context io;
  tcp::acceptor acc{io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
  std::string head;
  std::thread t;
  explicit FakeProxy(std::string reply) {
    t = std::thread([this, reply] {
      tcp::socket s(io);
      acc.accept(s);
      net::streambuf buf;
      boost::system::error_code ec;
      net::read_until(s, buf, "\r\n\r\n", ec);
      head.assign(net::buffers_begin(buf.data()), net::buffers_end(buf.data()));
      net::write(s, net::buffer(reply), ec);
    });
  }
  int port() const { return acc.local_endpoint().port(); }
  ~FakeProxy() { t.join(); }
};
}  // namespace

TEST_CASE("Transport: HTTPS goes through an HTTPS_PROXY CONNECT tunnel with proxy credentials") {
  FakeProxy proxy("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n");
  net::io_context io;
  TransportOptions o;
  o.https_proxy = "http://user:pw@127.0.0.1:" + std::to_string(proxy.port());
  auto tr = make_http_transport(io.get_executor(), o);
  HttpRequestSpec req;
  req.url = "https://api.example.com/v1/chat/completions";
  req.body = "{}";
  auto fut = net::co_spawn(io, tr->send(req, std::chrono::steady_clock::now() + std::chrono::seconds(5)), net::use_future);
  io.run();
  auto r = fut.get();
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == ErrorKind::connection);
  CHECK(r.error().message.find("407") != std::string::npos);
  CHECK(proxy.head.starts_with("CONNECT api.example.com:443 HTTP/1.1\r\n"));
  CHECK(proxy.head.find("Proxy-Authorization: Basic dXNlcjpwdw==") != std::string::npos);
}

TEST_CASE("Transport: connection refused is a connection error, a silent server a timeout") {
  net::io_context io;
  auto tr = make_http_transport(io.get_executor());
  tcp::acceptor silent(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));  // accepts in backlog, never answers
  int silent_port = silent.local_endpoint().port();
  test::ClosedPort refusing;  // bound, not listening: refused, and no one else can take the port
  const int closed_port = refusing.port();
  HttpRequestSpec a;
  a.url = "http://127.0.0.1:" + std::to_string(closed_port) + "/";
  HttpRequestSpec b;
  b.url = "http://127.0.0.1:" + std::to_string(silent_port) + "/";
  auto fa = net::co_spawn(io, tr->send(a, std::chrono::steady_clock::now() + std::chrono::seconds(5)), net::use_future);
  auto fb = net::co_spawn(io, tr->send(b, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)), net::use_future);
  io.run();
  auto ra = fa.get();
  auto rb = fb.get();
  REQUIRE_FALSE(ra);
  CHECK(ra.error().kind == ErrorKind::connection);
  REQUIRE_FALSE(rb);
  CHECK(rb.error().kind == ErrorKind::timeout);
  CHECK(tr->stats().in_flight == 0);
}
