// release_reactor_pool: Asio's free per-socket states are marked by one call and freed by the
// next when still unused; states in use or reused in between are left alone; a timer heap a
// burst grew is shrunk; the thread's malloc cache gives its chunks back.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "server/reactor_pool.hpp"

namespace net = boost::asio;
using modelux::proxy::release_reactor_pool;

namespace {

// An io_context run by one thread, as the proxy's.
struct Running {
  net::io_context ioc{1};
  net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
  std::thread t{[this] { ioc.run(); }};
  ~Running() {
    work.reset();
    ioc.stop();
    t.join();
  }
};

// Opens n sockets (each registers one descriptor state with the reactor).
std::vector<net::ip::tcp::socket> open_sockets(net::io_context& ioc, int n) {
  std::vector<net::ip::tcp::socket> v;
  for (int i = 0; i < n; ++i) {
    v.emplace_back(ioc);
    v.back().open(net::ip::tcp::v4());
  }
  return v;
}

}  // namespace

TEST_CASE("the reactor's states of closed sockets are marked by one release and freed by the next") {
  Running r;
  { auto s = open_sockets(r.ioc, 50); }  // closed: 50 states on the free list
  auto first = release_reactor_pool(r.ioc.get_executor());
  CHECK(first.marked == 50);
  CHECK(first.freed == 0);
  auto second = release_reactor_pool(r.ioc.get_executor());
  CHECK(second.freed == 50);
  CHECK(second.marked == 0);
  auto third = release_reactor_pool(r.ioc.get_executor());
  CHECK(third.freed == 0);
  CHECK(third.marked == 0);
  // The reactor still works: new sockets get new states, and go back to the free list.
  { auto s = open_sockets(r.ioc, 3); }
  CHECK(release_reactor_pool(r.ioc.get_executor()).marked == 3);
}

TEST_CASE("states reused after being marked and states of open sockets are not freed") {
  Running r;
  { auto s = open_sockets(r.ioc, 10); }
  CHECK(release_reactor_pool(r.ioc.get_executor()).marked == 10);
  auto open = open_sockets(r.ioc, 4);  // reuses 4 marked states and keeps them in use
  { auto s = open_sockets(r.ioc, 2); }  // reuses 2 more, back on the free list unmarked
  auto rel = release_reactor_pool(r.ioc.get_executor());
  CHECK(rel.freed == 4);   // the 4 never reused
  CHECK(rel.marked == 2);  // the 2 reused since: they wait for the next release
  for (auto& s : open) CHECK(s.is_open());
  open.clear();
  rel = release_reactor_pool(r.ioc.get_executor());
  CHECK(rel.freed == 2);
  CHECK(rel.marked == 4);
}

TEST_CASE("an io_context that does not run releases nothing and does not block") {
  net::io_context ioc{1};
  { auto s = open_sockets(ioc, 5); }
  auto rel = release_reactor_pool(ioc.get_executor(), std::chrono::milliseconds(50));
  CHECK(rel.freed == 0);
  CHECK(rel.marked == 0);
}

TEST_CASE("a steady_timer heap grown by a burst of timers is shrunk once they are gone and timers still fire") {
  Running r;
  {
    // 4,000 armed timers grow the heap's vector to 4,096 entries (64 kB); cancelling them
    // empties the heap but keeps the vector's capacity.
    std::vector<std::unique_ptr<net::steady_timer>> timers;
    std::atomic<int> cancelled{0};
    std::promise<void> destroyed;
    net::post(r.ioc, [&] {
      for (int i = 0; i < 4000; ++i) {
        timers.push_back(std::make_unique<net::steady_timer>(r.ioc, std::chrono::hours(1)));
        timers.back()->async_wait([&](boost::system::error_code ec) { cancelled += ec == net::error::operation_aborted; });
      }
      for (auto& t : timers) t->cancel();
      // Posted from the io thread after the cancelled handlers: runs after them (FIFO).
      net::post(r.ioc, [&] {
        timers.clear();
        destroyed.set_value();
      });
    });
    destroyed.get_future().wait();
    CHECK(cancelled.load() == 4000);
  }
  auto first = release_reactor_pool(r.ioc.get_executor());
  CHECK(first.timer_heap_bytes >= 4000 * 16);
  CHECK(release_reactor_pool(r.ioc.get_executor()).timer_heap_bytes == 0);  // already small
  // The heap works after the shrink: timers armed now fire in deadline order.
  std::vector<int> order;
  std::promise<void> fired;
  net::steady_timer late(r.ioc, std::chrono::milliseconds(20)), early(r.ioc, std::chrono::milliseconds(1));
  late.async_wait([&](boost::system::error_code) {
    order.push_back(2);
    fired.set_value();
  });
  early.async_wait([&](boost::system::error_code) { order.push_back(1); });
  fired.get_future().wait();
  CHECK(order == std::vector<int>{1, 2});
}

// glibc's own malloc only: a sanitizer's allocator replaces it (ASan's quarantine never hands a
// freed chunk back soon, so the check could not fail there; TSan's reuses them at once).
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
TEST_CASE("release_thread_cache hands the chunks the thread's malloc cache holds back to the arena") {
  // Seven freed chunks of one size sit in this thread's cache, and the next mallocs of that
  // size would return them. After release_thread_cache they are back in the arena and the
  // cache holds other chunks: the next mallocs return none of them.
  constexpr std::size_t kSize = 200;
  std::vector<void*> held;
  for (int i = 0; i < 7; ++i) held.push_back(std::malloc(kSize));
  asm volatile("" : : "r"(held.data()) : "memory");
  for (void* p : held) std::free(p);
  CHECK(modelux::proxy::release_thread_cache() > 0);
  std::vector<void*> next;
  for (int i = 0; i < 7; ++i) next.push_back(std::malloc(kSize));
  asm volatile("" : : "r"(next.data()) : "memory");
  int reused = 0;
  for (void* p : next) reused += std::count(held.begin(), held.end(), p) > 0;
  for (void* p : next) std::free(p);
  CHECK(reused == 0);
}
#endif
