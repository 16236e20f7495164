// The HTTP server layer on real loopback sockets: the header-phase hook (on_head), early
// rejections that never read the body, and the context handed from the hook to the handler.
#include <doctest/doctest.h>

#include <atomic>
#include <string>

#include <sys/socket.h>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "server/http_server.hpp"

using namespace modelux;
using namespace modelux::http_server;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// A blocking client socket to 127.0.0.1:port.
struct RawClient {
  net::io_context ioc;
  tcp::socket sock{ioc};
  explicit RawClient(int port) {
    sock.connect({net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
    // A server that waits for bytes we never send must fail the test, not hang it.
    timeval tv{10, 0};
    ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void send(std::string_view s) { net::write(sock, net::buffer(s)); }
  // Everything until the server closes the connection.
  std::string read_all() {
    std::string out;
    boost::system::error_code ec;
    char buf[4096];
    for (;;) {
      std::size_t n = sock.read_some(net::buffer(buf), ec);
      if (ec) break;
      out.append(buf, n);
    }
    return out;
  }
};

struct HookedServer {
  std::atomic<int> handled{0};
  std::atomic<int> heads{0};
  std::unique_ptr<Server> server;

  HookedServer() {
    ServerOptions so;
    so.on_head = [this](const RequestHead& h) -> std::optional<Rejection> {
      heads.fetch_add(1);
      const std::string* key = h.header("x-key");
      if (!key || *key != "good") return Rejection{401, "application/json", R"({"error":"no key"})", {{"x-why", "nokey"}}};
      h.context = std::make_shared<std::string>("user:" + *key);
      return std::nullopt;
    };
    auto s = Server::start(so, [this](Request& req, ResponseWriter& w) -> net::awaitable<void> {
      handled.fetch_add(1);
      auto* who = static_cast<std::string*>(req.context.get());
      // Named arguments, not temporaries: GCC 12 may relocate class temporaries of a co_await
      // expression bitwise (see router.hpp), which frees an invalid pointer.
      std::string type = "text/plain";
      std::string body = (who ? *who : std::string("nobody")) + " " + std::to_string(req.body.size());
      Headers extra;
      co_await w.respond(200, std::move(type), std::move(body), std::move(extra));
    });
    REQUIRE(s);
    server = std::move(*s);
  }
};

}  // namespace

TEST_CASE("on_head rejects from the header alone and the body is never waited for") {
  HookedServer hs;
  RawClient c(hs.server->port());
  // Announces 1 MiB but sends none of it: the answer must come from the header alone.
  c.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n");
  std::string reply = c.read_all();
  CHECK(reply.starts_with("HTTP/1.1 401"));
  CHECK(reply.find("x-why: nokey") != std::string::npos);
  CHECK(reply.find("Connection: close") != std::string::npos);
  CHECK(reply.find(R"({"error":"no key"})") != std::string::npos);
  CHECK(hs.handled.load() == 0);
  CHECK(hs.heads.load() == 1);
}

TEST_CASE("on_head context reaches the handler and keep-alive still works") {
  HookedServer hs;
  RawClient c(hs.server->port());
  c.send("POST /a HTTP/1.1\r\nHost: x\r\nx-key: good\r\nContent-Length: 5\r\n\r\nhello"
         "POST /b HTTP/1.1\r\nHost: x\r\nx-key: good\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc");
  std::string reply = c.read_all();
  CHECK(reply.find("user:good 5") != std::string::npos);
  CHECK(reply.find("user:good 3") != std::string::npos);
  CHECK(hs.handled.load() == 2);
}

TEST_CASE("a client expecting 100-continue gets it only after on_head accepts") {
  HookedServer hs;
  {
    RawClient c(hs.server->port());
    c.send("POST /a HTTP/1.1\r\nHost: x\r\nx-key: good\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Length: 4\r\n\r\n");
    std::string first(25, '\0');
    net::read(c.sock, net::buffer(first));
    CHECK(first == "HTTP/1.1 100 Continue\r\n\r\n");
    c.send("body");
    CHECK(c.read_all().find("user:good 4") != std::string::npos);
  }
  {
    RawClient c(hs.server->port());
    c.send("POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    std::string reply = c.read_all();
    CHECK(reply.starts_with("HTTP/1.1 401"));
    CHECK(reply.find("100 Continue") == std::string::npos);
  }
}
