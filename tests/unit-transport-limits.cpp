// The HTTP client's documented limits and its one retry on a dead pooled connection, against a
// scripted raw-socket server (docs/executor.md, "Transport").
#include <doctest/doctest.h>

#include <future>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "modelux/transport.hpp"
#include "support/raw_server.hpp"

using namespace modelux;
using modelux::test::RawServer;
using tcp = net::ip::tcp;

namespace {

Instant in_seconds(int s) { return std::chrono::steady_clock::now() + std::chrono::seconds(s); }

HttpRequestSpec post(const std::string& url) {
  HttpRequestSpec r;
  r.url = url;
  r.body = "{}";
  r.headers.emplace_back("content-type", "application/json");
  return r;
}

Result<HttpResponse> send_one(Transport& tr, net::io_context& io, const HttpRequestSpec& req) {
  auto fut = net::co_spawn(io, tr.send(req, in_seconds(10)), net::use_future);
  io.restart();
  io.run();
  return fut.get();
}

std::string ok_response(const std::string& body, bool keep_alive = true) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: " + (keep_alive ? "keep-alive" : "close") + "\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("Transport: a body over max_response_bytes is a clear error, with or without Content-Length") {
  const std::string big(4096, 'x');
  SUBCASE("Content-Length over the limit") {
    RawServer srv(1, [&](tcp::socket& s, int) {
      RawServer::read_request(s);
      RawServer::write(s, ok_response(big));
    });
    net::io_context io;
    TransportOptions o;
    o.max_response_bytes = 1000;
    auto tr = make_http_transport(io.get_executor(), o);
    auto r = send_one(*tr, io, post(srv.url()));
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::malformed_response);
    CHECK_MESSAGE(r.error().message.find("exceeds the limit of 1000 bytes") != std::string::npos, r.error().message);
    CHECK(srv.accepted() == 1);  // not retried elsewhere: the answer itself is too big
    CHECK(tr->stats().in_flight == 0);
  }
  SUBCASE("chunked body growing past the limit") {
    RawServer srv(1, [&](tcp::socket& s, int) {
      RawServer::read_request(s);
      std::string out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
      for (int i = 0; i < 4; ++i) out += "400\r\n" + std::string(1024, 'y') + "\r\n";
      out += "0\r\n\r\n";
      RawServer::write(s, out);
    });
    net::io_context io;
    TransportOptions o;
    o.max_response_bytes = 1000;
    auto tr = make_http_transport(io.get_executor(), o);
    auto r = send_one(*tr, io, post(srv.url()));
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::malformed_response);
    CHECK_MESSAGE(r.error().message.find("exceeds the limit of 1000 bytes") != std::string::npos, r.error().message);
  }
  SUBCASE("a body just under the limit is delivered whole") {
    RawServer srv(1, [&](tcp::socket& s, int) {
      RawServer::read_request(s);
      RawServer::write(s, ok_response(std::string(1000, 'z')));
    });
    net::io_context io;
    TransportOptions o;
    o.max_response_bytes = 1000;
    auto tr = make_http_transport(io.get_executor(), o);
    auto r = send_one(*tr, io, post(srv.url()));
    REQUIRE(r);
    CHECK(r->body == std::string(1000, 'z'));
  }
}

TEST_CASE("Transport: response headers over max_header_bytes are an error, not a crash or a hang") {
  RawServer srv(1, [&](tcp::socket& s, int) {
    RawServer::read_request(s);
    RawServer::write(s, "HTTP/1.1 200 OK\r\nX-Padding: " + std::string(8192, 'h') + "\r\nContent-Length: 2\r\n\r\n{}");
  });
  net::io_context io;
  TransportOptions o;
  o.max_header_bytes = 4096;
  auto tr = make_http_transport(io.get_executor(), o);
  auto r = send_one(*tr, io, post(srv.url()));
  REQUIRE_FALSE(r);
  CHECK(r.error().kind != ErrorKind::timeout);
  CHECK_MESSAGE(r.error().message.find("header") != std::string::npos, r.error().message);
  CHECK(srv.accepted() == 1);
  CHECK(tr->stats().in_flight == 0);
  CHECK(tr->stats().idle == 0);
}

TEST_CASE("Transport: a pooled connection the server closed is retried once on a fresh one") {
  std::string second_request;
  // Connection 0 answers one request with keep-alive, then closes without a word; connection 1
  // answers the retried request.
  RawServer srv(2, [&](tcp::socket& s, int i) {
    std::string req = RawServer::read_request(s);
    if (i == 1) second_request = req;
    RawServer::write(s, ok_response(i == 0 ? R"({"n":1})" : R"({"n":2})"));
    if (i == 0) {
      boost::system::error_code ec;
      s.shutdown(tcp::socket::shutdown_both, ec);
      s.close(ec);
    } else {
      RawServer::read_request(s);  // hold the connection until the client is done with it
    }
  });
  net::io_context io;
  auto tr = make_http_transport(io.get_executor());
  auto a = send_one(*tr, io, post(srv.url("/first")));
  REQUIRE(a);
  CHECK(a->body == R"({"n":1})");
  CHECK(tr->stats().idle == 1);  // kept for reuse; the server has closed it meanwhile
  auto b = send_one(*tr, io, post(srv.url("/second")));
  REQUIRE_MESSAGE(b, (b ? std::string{} : b.error().message));
  CHECK(b->body == R"({"n":2})");
  CHECK(second_request.starts_with("POST /second HTTP/1.1"));
  auto st = tr->stats();
  CHECK(st.connections_opened == 2);
  CHECK(st.connections_reused == 1);
  CHECK(st.in_flight == 0);
  tr->close_idle();
}

TEST_CASE("Transport: a fresh connection that dies before answering is not retried") {
  RawServer srv(2, [&](tcp::socket& s, int) {
    RawServer::read_request(s);
    boost::system::error_code ec;
    s.close(ec);  // no answer at all
  });
  net::io_context io;
  auto tr = make_http_transport(io.get_executor());
  auto r = send_one(*tr, io, post(srv.url()));
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == ErrorKind::connection);
  CHECK(srv.accepted() == 1);  // a new connection's failure is the server's answer, not retried
  CHECK(tr->stats().connections_opened == 1);
}

TEST_CASE("Transport: an answer over the limit on a pooled connection is not asked for twice") {
  RawServer srv(2, [&](tcp::socket& s, int i) {
    if (i != 0) return;  // a retry would land here
    RawServer::read_request(s);
    RawServer::write(s, ok_response("{}"));
    RawServer::read_request(s);
    RawServer::write(s, ok_response(std::string(4096, 'x')));
    RawServer::read_request(s);
  });
  net::io_context io;
  TransportOptions o;
  o.max_response_bytes = 1000;
  auto tr = make_http_transport(io.get_executor(), o);
  REQUIRE(send_one(*tr, io, post(srv.url())));
  auto r = send_one(*tr, io, post(srv.url()));
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == ErrorKind::malformed_response);
  CHECK(srv.accepted() == 1);
  CHECK(tr->stats().connections_reused == 1);
}

namespace {
// Reads a streamed body until a piece contains [DONE] (as the stream relay does), then drops
// the stream without reading the body's end.
net::awaitable<bool> read_to_done(Transport& tr, HttpRequestSpec req) {
  auto s = co_await tr.open(req, in_seconds(10));
  if (!s) co_return false;
  std::string all;
  while (all.find("[DONE]") == std::string::npos) {
    auto piece = co_await (*s)->read_some(in_seconds(10));
    if (!piece || piece->empty()) co_return false;
    all += *piece;
  }
  co_return true;
}
}  // namespace

TEST_CASE("Transport: a stream dropped after its [DONE] gives its connection back, its last chunk early or late") {
  for (bool late : {false, true}) {
    CAPTURE(late);
    RawServer srv(2, [&](tcp::socket& s, int i) {
      if (i != 0) return;  // a second connection would land here
      RawServer::read_request(s);
      const std::string event = "data: [DONE]\n\n";
      const std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
      const std::string chunk = "e\r\n" + event + "\r\n";
      if (late) {
        RawServer::write(s, head + chunk);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the last chunk comes after the reader stopped
        RawServer::write(s, "0\r\n\r");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        RawServer::write(s, "\n");
      } else {
        RawServer::write(s, head + chunk + "0\r\n\r\n");
      }
      RawServer::read_request(s);
      RawServer::write(s, ok_response(R"({"n":2})"));
      RawServer::read_request(s);  // hold the connection until the client is done with it
    });
    net::io_context io;
    auto tr = make_http_transport(io.get_executor());
    HttpRequestSpec req = post(srv.url("/stream"));
    auto fut = net::co_spawn(io, read_to_done(*tr, req), net::use_future);
    io.run();  // also runs the background read of a late last chunk to its end
    REQUIRE(fut.get());
    CHECK(tr->stats().in_flight == 0);
    CHECK(tr->stats().idle == 1);
    auto b = send_one(*tr, io, post(srv.url("/second")));
    REQUIRE_MESSAGE(b, (b ? std::string{} : b.error().message));
    CHECK(b->body == R"({"n":2})");
    CHECK(tr->stats().connections_opened == 1);
    CHECK(tr->stats().connections_reused == 1);
  }
}

namespace {
// Reads a stream with every read bounded by now + `gap`: the pieces as they came, and how the
// stream ended.
struct GapRead {
  std::vector<std::string> pieces;
  std::optional<Error> error;
  bool ended = false;
};
net::awaitable<GapRead> read_with_gap(Transport& tr, HttpRequestSpec req, std::chrono::milliseconds gap) {
  GapRead r;
  auto s = co_await tr.open(req, in_seconds(10));
  if (!s) {
    r.error = s.error();
    co_return r;
  }
  for (;;) {
    auto piece = co_await (*s)->read_some(std::chrono::steady_clock::now() + gap);
    if (!piece) {
      r.error = piece.error();
      co_return r;
    }
    if (piece->empty()) {
      r.ended = true;
      co_return r;
    }
    r.pieces.push_back(std::move(*piece));
  }
}
}  // namespace

// The body's reads share one lazily re-armed deadline timer: each read must still be bounded by
// its own deadline, a later read's never cut by an earlier read's, and a stall must time out.
TEST_CASE("Transport: each body read is bounded by its own deadline, a steady stream longer than one is not cut") {
  for (bool stall : {false, true}) {
    CAPTURE(stall);
    RawServer srv(1, [&](tcp::socket& s, int) {
      RawServer::read_request(s);
      RawServer::write(s, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
      // Ten events 60 ms apart: the stream lasts ~600 ms, longer than one read's 400 ms bound.
      for (int i = 0; i < 10; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(60));
        RawServer::write(s, "8\r\ndata: " + std::to_string(i) + "\n\r\n");
      }
      if (stall) std::this_thread::sleep_for(std::chrono::milliseconds(2000));  // > 400 ms: must time out
      RawServer::write(s, "0\r\n\r\n");
      RawServer::read_request(s);  // hold the connection until the client let go of it
    });
    net::io_context io;
    auto tr = make_http_transport(io.get_executor());
    auto fut = net::co_spawn(io, read_with_gap(*tr, post(srv.url("/stream")), std::chrono::milliseconds(400)), net::use_future);
    io.run();
    GapRead r = fut.get();
    std::string all;
    for (const auto& p : r.pieces) all += p;
    std::string want;
    for (int i = 0; i < 10; ++i) want += "data: " + std::to_string(i) + "\n";
    CHECK(all == want);
    if (stall) {
      REQUIRE(r.error);
      CHECK(r.error->kind == ErrorKind::timeout);
      CHECK_FALSE(r.ended);
    } else {
      CHECK_MESSAGE(!r.error, (r.error ? r.error->message : std::string{}));
      CHECK(r.ended);
    }
  }
}

TEST_CASE("Transport: trim_idle closes a burst's surplus of idle connections and keeps a few") {
  // Six requests at once need six connections; all six go back to the pool. Once quiet,
  // trim_idle() keeps quiet_idle_per_origin of them (the proxy calls it when nothing is in
  // flight, so a burst's sockets and buffers do not outlive it until the next request).
  constexpr int kBurst = 6;
  RawServer srv(kBurst, [&](tcp::socket& s, int) {
    RawServer::read_request(s);
    RawServer::write(s, ok_response("{}"));
  });
  net::io_context io;
  TransportOptions o;
  o.quiet_idle_per_origin = 2;
  auto tr = make_http_transport(io.get_executor(), o);
  std::vector<std::future<Result<HttpResponse>>> sent;
  const auto req = post(srv.url());
  for (int i = 0; i < kBurst; ++i) sent.push_back(net::co_spawn(io, tr->send(req, in_seconds(10)), net::use_future));
  io.run();
  for (auto& f : sent) {
    auto r = f.get();
    REQUIRE_MESSAGE(r, (r ? std::string{} : r.error().message));
  }
  CHECK(srv.accepted() == kBurst);
  CHECK(tr->stats().connections_opened == kBurst);
  CHECK(tr->stats().idle == kBurst);
  tr->trim_idle();
  CHECK(tr->stats().idle == 2);
  tr->trim_idle();  // nothing more to close
  CHECK(tr->stats().idle == 2);
  o.quiet_idle_per_origin = 0;
  auto none = make_http_transport(io.get_executor(), o);
  none->trim_idle();  // an empty pool is fine
  CHECK(none->stats().idle == 0);
}
