// The HTTP server layer on real loopback sockets: the header-phase hook (on_head), early
// rejections that never read the body, and the context handed from the hook to the handler.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sys/socket.h>

#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
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
      // Named arguments, no temporaries in the co_await (GCC 12 miscompiles some).
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

TEST_CASE("max_inflight_body_bytes refuses an announced body past the cap before reading it") {
  ServerOptions so;
  so.max_inflight_body_bytes = 100;
  std::atomic<int> handled{0};
  auto s = Server::start(so, [&](Request& req, ResponseWriter& w) -> net::awaitable<void> {
    handled.fetch_add(1);
    std::string type = "text/plain", body = std::to_string(req.body.size());
    co_await w.respond(200, std::move(type), std::move(body));
  });
  REQUIRE(s);
  {
    RawClient c((*s)->port());
    c.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n");  // no body sent at all
    std::string reply = c.read_all();
    CHECK(reply.starts_with("HTTP/1.1 503"));
    CHECK(reply.find("retry-after: 1") != std::string::npos);
    CHECK(reply.find("server_busy") != std::string::npos);
  }
  {
    // Chunked: counted as it arrives, refused once it passes the cap.
    RawClient c((*s)->port());
    c.send("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + std::string(64, 'a') + "\r\n40\r\n" +
           std::string(64, 'b') + "\r\n0\r\n\r\n");
    CHECK(c.read_all().starts_with("HTTP/1.1 503"));
  }
  {
    RawClient c((*s)->port());
    c.send("POST /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x'));
    CHECK(c.read_all().find("\r\n\r\n100") != std::string::npos);
  }
  CHECK(handled.load() == 1);
  auto st = (*s)->stats();
  CHECK(st.body_budget_refused == 2);
  CHECK(st.body_bytes_in_flight == 0);
}

TEST_CASE("header values that are not UTF-8 get 400 before the handler") {
  std::atomic<int> handled{0};
  auto s = Server::start(ServerOptions{}, [&](Request&, ResponseWriter& w) -> net::awaitable<void> {
    handled.fetch_add(1);
    std::string type = "text/plain", body = "ok";
    co_await w.respond(200, std::move(type), std::move(body));
  });
  REQUIRE(s);
  RawClient c((*s)->port());
  c.send("GET /a HTTP/1.1\r\nHost: x\r\nx-modelux-end-user: caf\xE9\r\n\r\n");
  std::string reply = c.read_all();
  CHECK(reply.starts_with("HTTP/1.1 400"));
  CHECK(reply.find("x-modelux-end-user") != std::string::npos);
  CHECK(handled.load() == 0);
}

TEST_CASE("drain closes the listener and idle connections and lets a request in flight finish") {
  std::atomic<bool> entered{false};
  std::atomic<bool> release{false};
  auto s = Server::start(ServerOptions{}, [&](Request&, ResponseWriter& w) -> net::awaitable<void> {
    entered = true;
    net::steady_timer t(co_await net::this_coro::executor);
    while (!release) {  // held until the test has started the drain
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(net::use_awaitable);
    }
    std::string type = "text/plain", body = "finished";
    co_await w.respond(200, std::move(type), std::move(body));
  });
  REQUIRE(s);
  const int port = (*s)->port();
  RawClient idle(port);  // connected, never sends: closed by the drain
  RawClient busy(port);
  busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");  // keep-alive requested
  while (!entered) std::this_thread::yield();
  CHECK((*s)->requests_in_flight() == 1);
  (*s)->drain();
  CHECK((*s)->draining());
  CHECK(idle.read_all().empty());  // closed without an answer
  // The listener is closed: a new connection is refused.
  bool refused = false;
  for (int i = 0; i < 200 && !refused; ++i) {
    net::io_context ioc;
    tcp::socket probe(ioc);
    boost::system::error_code ec;
    probe.connect({net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}, ec);
    refused = ec == net::error::connection_refused;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(refused);
  release = true;
  std::string reply = busy.read_all();  // answered, then closed although keep-alive was asked
  CHECK(reply.find("finished") != std::string::npos);
  CHECK(reply.find("Connection: close") != std::string::npos);
  for (int i = 0; i < 200 && (*s)->requests_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK((*s)->requests_in_flight() == 0);
}

namespace {

// Reads until the server closes; true when it closed (EOF or reset), false when the client's own
// 10 s receive timeout ran out first (the server kept the connection).
bool closed_by_server(RawClient& c, std::string* got = nullptr) {
  boost::system::error_code ec;
  char buf[4096];
  for (;;) {
    std::size_t n = c.sock.read_some(net::buffer(buf), ec);
    if (ec) return ec != net::error::would_block && ec != net::error::try_again;
    if (got) got->append(buf, n);
  }
}

Result<std::unique_ptr<Server>> start_echo(int threads, Nanos read_timeout, Nanos handler_delay = Nanos{0}) {
  ServerOptions so;
  so.threads = threads;
  so.read_timeout = read_timeout;
  return Server::start(so, [handler_delay](Request& req, ResponseWriter& w) -> net::awaitable<void> {
    if (handler_delay > Nanos{0}) {
      net::steady_timer t(co_await net::this_coro::executor);
      t.expires_after(handler_delay);
      co_await t.async_wait(net::use_awaitable);
    }
    std::string type = "text/plain", body = "echo " + req.path;
    co_await w.respond(200, std::move(type), std::move(body));
  });
}

}  // namespace

// The read deadline is one per connection, checked lazily (not a timer per read): it must
// still close a connection that stalls in a header or idles after an answer.
TEST_CASE("read_timeout closes a stalled header and an idle keep-alive connection") {
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    auto s = start_echo(threads, std::chrono::milliseconds(200));
    REQUIRE(s);
    RawClient stalled((*s)->port());
    stalled.send("GET /a HTTP/1.1\r\nHost: x\r\n");  // the header never ends
    CHECK(closed_by_server(stalled));
    RawClient idle((*s)->port());
    idle.send("GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string got;
    CHECK(closed_by_server(idle, &got));  // answered, then idle past the timeout
    CHECK(got.find("echo /b") != std::string::npos);
  }
}

// The deadline of the read that brought a request must not reach the handler's own time: a
// handler that runs past read_timeout still answers on the same connection, which stays usable.
TEST_CASE("a handler running longer than read_timeout still answers and keeps its connection") {
  auto s = start_echo(1, std::chrono::milliseconds(100), std::chrono::milliseconds(400));
  REQUIRE(s);
  RawClient c((*s)->port());
  c.send("GET /slow1 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string got;
  CHECK(closed_by_server(c, &got));
  CHECK(got.find("echo /slow1") != std::string::npos);
  CHECK(got.find("echo /slow2") != std::string::npos);
}

// threads: 2 is two io_contexts, each with its own listener on the shared port (SO_REUSEPORT):
// the kernel spreads connections over both, and a connection's requests run start to finish
// on the thread that accepted it (no strand: nothing hops threads mid-request).
TEST_CASE("threads 2 spreads connections over both io threads and keeps each on one thread") {
  std::mutex mu;
  std::map<std::string, std::set<std::thread::id>> threads_of;  // per connection (x-conn)
  std::set<std::thread::id> all;
  std::atomic<int> hopped{0};
  ServerOptions so;
  so.threads = 2;
  auto s = Server::start(so, [&](Request& req, ResponseWriter& w) -> net::awaitable<void> {
    const auto before = std::this_thread::get_id();
    net::steady_timer t(co_await net::this_coro::executor);  // a suspension mid-request
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(net::use_awaitable);
    if (std::this_thread::get_id() != before) hopped.fetch_add(1);
    {
      std::lock_guard lk(mu);
      threads_of[*req.header("x-conn")].insert(before);
      all.insert(before);
    }
    std::string type = "text/plain", body = "ok";
    co_await w.respond(200, std::move(type), std::move(body));
  });
  REQUIRE(s);
  // 32 connections: the chance that the kernel's hash puts all on one listener is 2^-31.
  constexpr int kConns = 32;
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kConns; ++i) clients.push_back(std::make_unique<RawClient>((*s)->port()));
  for (int i = 0; i < kConns; ++i) {
    const std::string c = std::to_string(i);
    clients[i]->send("GET /1 HTTP/1.1\r\nHost: x\r\nx-conn: " + c + "\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nx-conn: " + c +
                     "\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\nx-conn: " + c + "\r\nConnection: close\r\n\r\n");
  }
  for (auto& c : clients) {
    std::string got = c->read_all();
    std::size_t n = 0;
    for (std::size_t at = got.find("200 OK"); at != std::string::npos; at = got.find("200 OK", at + 1)) ++n;
    CHECK(n == 3);
  }
  std::lock_guard lk(mu);
  CHECK(all.size() == 2);  // both io threads served requests
  CHECK(threads_of.size() == kConns);
  for (const auto& [conn, ts] : threads_of) {
    CAPTURE(conn);
    CHECK(ts.size() == 1);  // every request of a connection on the thread that accepted it
  }
  CHECK(hopped.load() == 0);
}

// The listeners share the port through SO_REUSEPORT, which another socket of the same user
// could join: a port already taken must still be an error, as with one listener.
TEST_CASE("threads 2 refuses a port another server already listens on") {
  ServerOptions so;
  so.threads = 2;
  auto handler = [](Request&, ResponseWriter& w) -> net::awaitable<void> {
    std::string type = "text/plain", body = "ok";
    co_await w.respond(200, std::move(type), std::move(body));
  };
  auto first = Server::start(so, handler);
  REQUIRE(first);
  ServerOptions again = so;
  again.port = (*first)->port();
  auto second = Server::start(again, handler);
  CHECK_FALSE(second);
  again.threads = 1;
  auto third = Server::start(again, handler);
  CHECK_FALSE(third);
}

// A drain with requests in flight on both io threads: every listener closes (new connections
// are refused), idle connections close, and every request in flight still finishes, answered
// with Connection: close.
TEST_CASE("threads 2 drain closes every listener and finishes the requests in flight on both threads") {
  std::mutex mu;
  std::set<std::thread::id> entered_on;
  std::atomic<int> entered{0};
  std::atomic<bool> release{false};
  ServerOptions so;
  so.threads = 2;
  auto s = Server::start(so, [&](Request&, ResponseWriter& w) -> net::awaitable<void> {
    {
      std::lock_guard lk(mu);
      entered_on.insert(std::this_thread::get_id());
    }
    entered.fetch_add(1);
    net::steady_timer t(co_await net::this_coro::executor);
    while (!release) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(net::use_awaitable);
    }
    std::string type = "text/plain", body = "finished";
    co_await w.respond(200, std::move(type), std::move(body));
  });
  REQUIRE(s);
  const int port = (*s)->port();
  constexpr int kBusy = 16;
  std::vector<std::unique_ptr<RawClient>> idle, busy;
  for (int i = 0; i < 8; ++i) idle.push_back(std::make_unique<RawClient>(port));
  for (int i = 0; i < kBusy; ++i) {
    busy.push_back(std::make_unique<RawClient>(port));
    busy.back()->send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (entered.load() < kBusy && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  REQUIRE(entered.load() == kBusy);
  {
    std::lock_guard lk(mu);
    CHECK(entered_on.size() == 2);  // in flight on both threads (16 connections: 2^-15 to miss)
  }
  CHECK((*s)->requests_in_flight() == kBusy);
  (*s)->drain();
  for (auto& c : idle) CHECK(c->read_all().empty());
  bool refused = false;
  for (int i = 0; i < 200 && !refused; ++i) {
    // Several probes: each listener must be closed, not only the one the hash picks first.
    int ok = 0;
    for (int k = 0; k < 16; ++k) {
      net::io_context ioc;
      tcp::socket probe(ioc);
      boost::system::error_code ec;
      probe.connect({net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}, ec);
      ok += (ec == net::error::connection_refused || ec == net::error::connection_reset) ? 1 : 0;
    }
    refused = ok == 16;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(refused);
  release = true;
  for (auto& c : busy) {
    std::string reply = c->read_all();
    CHECK(reply.find("finished") != std::string::npos);
    CHECK(reply.find("Connection: close") != std::string::npos);
  }
  for (int i = 0; i < 200 && (*s)->requests_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK((*s)->requests_in_flight() == 0);
}

TEST_CASE("release_idle shrinks the connection set a burst grew once the connections closed") {
  auto s = Server::start(ServerOptions{}, [](Request&, ResponseWriter& w) -> net::awaitable<void> {
    std::string type = "text/plain", body = "ok";
    co_await w.respond(200, std::move(type), std::move(body));
  });
  REQUIRE(s);
  {
    std::vector<std::unique_ptr<RawClient>> burst;
    for (int i = 0; i < 300; ++i) burst.push_back(std::make_unique<RawClient>((*s)->port()));
    for (int i = 0; i < 2000 && (*s)->stats().connections_open < 300; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE((*s)->stats().connections_open == 300);
    CHECK((*s)->release_idle() == 0);  // in use at its size: left alone
  }
  for (int i = 0; i < 2000 && (*s)->stats().connections_open > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE((*s)->stats().connections_open == 0);
  CHECK((*s)->release_idle() > 0);
  CHECK((*s)->release_idle() == 0);  // already small
  // The server still serves.
  RawClient c((*s)->port());
  c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(c.read_all().find("ok") != std::string::npos);
}
