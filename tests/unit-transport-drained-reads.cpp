// The transport's drained-read rule (src/transport/drained_reads.hpp): after a read that drained
// the socket the next read waits for epoll without a recv, and readiness that epoll reported
// while nobody was reading is never lost.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "transport/drained_reads.hpp"

namespace net = boost::asio;
using net::ip::tcp;
using modelux::transport::DrainedReads;

namespace {

// A connected loopback pair on `ioc`: `reader` and `writer`.
struct Pair {
  explicit Pair(net::io_context& ioc) : reader(ioc), writer(ioc) {
    tcp::acceptor acc(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    reader.connect(acc.local_endpoint());
    acc.accept(writer);
  }
  tcp::socket reader, writer;
};

struct ReadResult {
  std::string data;
  bool waited = false;  // wait_needed() said the async read needs no recv of its own
  boost::system::error_code ec;
};

// One read as the transport does it: wait_needed(), then the async read when it asks for one.
net::awaitable<ReadResult> read_once(DrainedReads& dr, tcp::socket& s) {
  ReadResult r;
  char buf[256];
  std::size_t got = 0;
  r.waited = dr.wait_needed(std::span<char>(buf, sizeof buf), got, r.ec);
  if (r.waited) {
    got = co_await s.async_read_some(net::buffer(buf), net::redirect_error(net::use_awaitable, r.ec));
    if (!r.ec) dr.after_read(got, sizeof buf);
  }
  r.data.assign(buf, got);
  co_return r;
}

net::awaitable<void> pause(std::chrono::milliseconds d) {
  net::steady_timer t(co_await net::this_coro::executor, d);
  co_await t.async_wait(net::use_awaitable);
}

void write_now(tcp::socket& s, std::string_view bytes) { net::write(s, net::buffer(bytes.data(), bytes.size())); }

}  // namespace

TEST_CASE("drained reads are enabled only on an io_context promised to one thread") {
  net::io_context one{1};
  Pair p1(one);
  CHECK(DrainedReads(p1.reader).enabled());
  net::io_context many;  // the default hint: any number of threads may run it
  Pair p2(many);
  CHECK_FALSE(DrainedReads(p2.reader).enabled());
  tcp::socket closed(one);
  CHECK_FALSE(DrainedReads(closed).enabled());
}

TEST_CASE("after a read that drained the socket the next read waits for epoll and gets the next bytes") {
  net::io_context ioc{1};
  Pair p(ioc);
  DrainedReads dr(p.reader);
  REQUIRE(dr.enabled());
  std::vector<ReadResult> seen;
  bool finished = false;
  net::co_spawn(ioc, [&]() -> net::awaitable<void> {
    // Nothing sent yet: the first read finds the socket empty itself, then waits.
    auto first = [&]() -> net::awaitable<void> {
      co_await pause(std::chrono::milliseconds(5));
      write_now(p.writer, "one");
    };
    net::co_spawn(ioc, first(), net::detached);
    seen.push_back(co_await read_once(dr, p.reader));
    // Drained by a short read completed from the reactor: the next read needs no recv, and the
    // bytes written while it waits complete it.
    auto second = [&]() -> net::awaitable<void> {
      co_await pause(std::chrono::milliseconds(5));
      write_now(p.writer, "two");
    };
    net::co_spawn(ioc, second(), net::detached);
    seen.push_back(co_await read_once(dr, p.reader));
    // The end of the stream also completes a waiting read.
    p.writer.shutdown(tcp::socket::shutdown_send);
    seen.push_back(co_await read_once(dr, p.reader));
    finished = true;
  }, net::detached);
  ioc.run_for(std::chrono::seconds(10));  // a read that never completes leaves `finished` false
  REQUIRE(finished);
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].waited);
  CHECK(seen[0].data == "one");
  CHECK(seen[1].waited);
  CHECK(seen[1].data == "two");
  CHECK(seen[2].waited);
  CHECK(seen[2].ec == net::error::eof);
}

TEST_CASE("readiness that epoll reported while nobody was reading is read at once, never lost") {
  // The reader drains the socket, then does something else that lets the io_context poll
  // (here a timer). Bytes that arrive meanwhile raise the edge with no read queued; the next
  // read must recv them itself. Clearing the flag here instead would wait for an edge that
  // already came: the read would hang until the writer wrote again (never, in this test).
  net::io_context ioc{1};
  Pair p(ioc);
  DrainedReads dr(p.reader);
  REQUIRE(dr.enabled());
  std::vector<ReadResult> seen;
  bool finished = false;
  net::co_spawn(ioc, [&]() -> net::awaitable<void> {
    auto first = [&]() -> net::awaitable<void> {
      co_await pause(std::chrono::milliseconds(5));
      write_now(p.writer, "first");
    };
    net::co_spawn(ioc, first(), net::detached);
    seen.push_back(co_await read_once(dr, p.reader));  // drained: the flag is clear now
    write_now(p.writer, "late");                        // arrives while nobody reads
    co_await pause(std::chrono::milliseconds(20));      // the io_context polls: the edge is consumed
    seen.push_back(co_await read_once(dr, p.reader));
    finished = true;
  }, net::detached);
  ioc.run_for(std::chrono::seconds(10));
  REQUIRE(finished);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].data == "first");
  CHECK_FALSE(seen[1].waited);  // read by its own recv: epoll had reported the socket
  CHECK(seen[1].data == "late");
}

TEST_CASE("a read that filled its buffer leaves the next read to recv what is still waiting") {
  net::io_context ioc{1};
  Pair p(ioc);
  DrainedReads dr(p.reader);
  REQUIRE(dr.enabled());
  std::string all;
  bool finished = false;
  const std::string big(1000, 'x');  // four buffers' worth: no read of 256 bytes drains it
  net::co_spawn(ioc, [&]() -> net::awaitable<void> {
    auto send = [&]() -> net::awaitable<void> {
      co_await pause(std::chrono::milliseconds(5));
      write_now(p.writer, big);
      p.writer.shutdown(tcp::socket::shutdown_send);
    };
    net::co_spawn(ioc, send(), net::detached);
    for (;;) {
      auto r = co_await read_once(dr, p.reader);
      all += r.data;
      if (r.ec) break;
    }
    finished = true;
  }, net::detached);
  ioc.run_for(std::chrono::seconds(10));
  REQUIRE(finished);
  CHECK(all == big);
}
