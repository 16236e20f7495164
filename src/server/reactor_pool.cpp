// Frees the descriptor states Asio's epoll reactor keeps after a burst (see reactor_pool.hpp).
#include "server/reactor_pool.hpp"

#include <array>
#include <chrono>
#include <cstdlib>
#include <future>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <memory>
#include <vector>

#include <boost/asio/detail/config.hpp>
#include <boost/asio/post.hpp>

#if defined(BOOST_ASIO_HAS_EPOLL)
#include <boost/asio/detail/chrono_time_traits.hpp>
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/object_pool.hpp>
#include <boost/asio/detail/timer_queue.hpp>
#include <boost/asio/wait_traits.hpp>

#include "core/private_access.hpp"
#endif

#if defined(BOOST_ASIO_HAS_EPOLL)
// The private members this file reaches (see core/private_access.hpp): the tags live in its
// namespace.
namespace modelux::asio_access {
namespace ad = boost::asio::detail;
using Reactor = ad::epoll_reactor;
using State = Reactor::descriptor_state;
using Pool = ad::object_pool<State>;
struct PoolOf {
  using type = Pool Reactor::*;
  friend type get(PoolOf);
};
struct PoolMutexOf {
  using type = ad::conditionally_enabled_mutex Reactor::*;
  friend type get(PoolMutexOf);
};
struct FreeListOf {
  using type = State* Pool::*;
  friend type get(FreeListOf);
};
struct DescriptorOf {
  using type = int State::*;
  friend type get(DescriptorOf);
};
template struct Expose<PoolOf, &Reactor::registered_descriptors_>;
template struct Expose<PoolMutexOf, &Reactor::registered_descriptors_mutex_>;
template struct Expose<FreeListOf, &Pool::free_list_>;
template struct Expose<DescriptorOf, &State::descriptor_>;

// The timer heap of the steady_timer queue (every timer this program arms is a steady_timer:
// the server's per-connection timers, the tcp_streams' and the upstream pool's). Its
// std::vector grows to the burst's peak number of timers and never shrinks.
using SteadyQueue =
    ad::timer_queue<ad::chrono_time_traits<std::chrono::steady_clock, boost::asio::wait_traits<std::chrono::steady_clock>>>;
struct ReactorMutexOf {
  using type = ad::conditionally_enabled_mutex Reactor::*;
  friend type get(ReactorMutexOf);
};
struct TimerQueuesOf {
  using type = ad::timer_queue_set Reactor::*;
  friend type get(TimerQueuesOf);
};
struct FirstQueueOf {
  using type = ad::timer_queue_base* ad::timer_queue_set::*;
  friend type get(FirstQueueOf);
};
struct NextQueueOf {
  using type = ad::timer_queue_base* ad::timer_queue_base::*;
  friend type get(NextQueueOf);
};
template struct Expose<ReactorMutexOf, &Reactor::mutex_>;
template struct Expose<TimerQueuesOf, &Reactor::timer_queues_>;
template struct Expose<FirstQueueOf, &ad::timer_queue_set::first_>;
template struct Expose<NextQueueOf, &ad::timer_queue_base::next_>;
struct HeapOf {  // the heap's element type is private too: the member pointer's type is deduced
  friend auto get(HeapOf);
};
template struct ExposeDeduced<HeapOf, &SteadyQueue::heap_>;
}  // namespace modelux::asio_access
#endif

namespace modelux::proxy {

#if defined(BOOST_ASIO_HAS_EPOLL)
namespace {

namespace ad = boost::asio::detail;
using namespace modelux::asio_access;  // the tags above

// Shrinks each steady_timer heap whose capacity is far above its size (a burst's peak), under
// the reactor's mutex (the heap is only touched under it). Returns the bytes freed.
std::size_t shrink_timer_heaps(Reactor& r) {
  auto& mu = r.*get(ReactorMutexOf{});
  ad::conditionally_enabled_mutex::scoped_lock lock(mu);
  std::size_t freed = 0;
  for (ad::timer_queue_base* q = r.*get(TimerQueuesOf{}).*get(FirstQueueOf{}); q; q = q->*get(NextQueueOf{})) {
    auto* steady = dynamic_cast<SteadyQueue*>(q);
    if (!steady) continue;
    auto& heap = steady->*get(HeapOf{});
    // A heap of 1 kB or less, or one that is more than a quarter full, stays: it is what an idle
    // or a steadily busy proxy uses, and shrinking it would only make the next timers regrow it.
    constexpr std::size_t kSmall = 64;
    if (heap.capacity() <= kSmall || heap.capacity() < 4 * heap.size()) continue;
    const std::size_t before = heap.capacity();
    heap.shrink_to_fit();  // the entries are copied: timers refer to their index, not their address
    freed += (before - heap.capacity()) * sizeof(heap.front());
  }
  return freed;
}

// A state on the free list has descriptor_ -1 (deregistration sets it) until it is reused
// (registration sets the socket's fd). This value marks one seen unused by a release().
constexpr int kMarked = -2;

ReactorPoolReleased release_on_io_thread(Reactor& r) {
  ReactorPoolReleased out;
  auto& mu = r.*get(PoolMutexOf{});
  if (!mu.enabled()) return out;  // a reactor without locking: its free list is not ours to walk
  out.timer_heap_bytes = shrink_timer_heaps(r);
  ad::conditionally_enabled_mutex::scoped_lock lock(mu);
  State*& head = r.*get(PoolOf{}).*get(FreeListOf{});
  State** link = &head;
  while (State* s = *link) {
    State*& next = ad::object_pool_access::next(s);
    int& fd = s->*get(DescriptorOf{});
    if (fd == kMarked) {  // unused since the previous release: nothing can refer to it any more
      *link = next;
      ad::object_pool_access::destroy(s);
      ++out.freed;
      continue;
    }
    fd = kMarked;
    ++out.marked;
    link = &next;
  }
  return out;
}

}  // namespace
#endif

std::size_t release_thread_cache() noexcept {
#if defined(__GLIBC__) && !defined(MODELUX_NO_TCACHE_FLUSH)
  // glibc's tcache: 64 bins of chunk sizes 32 to 1,040 bytes in steps of 16, 7 chunks each
  // (the defaults; a bin configured smaller only makes some of this moot). A request of
  // 24 + 16 i bytes is served from bin i.
  constexpr int kBins = 64, kPerBin = 7;
  std::size_t moved = 0;
  // First merge the arenas' fastbins into their neighbours (malloc_trim consolidates them):
  // the refill would otherwise take its chunks from there, chunks freed here and there.
  malloc_trim(0);
  for (int b = 0; b < kBins; ++b) {
    const std::size_t n = 24 + 16 * static_cast<std::size_t>(b);
    std::array<void*, kPerBin> cached{}, fresh{};
    for (auto& p : cached) p = std::malloc(n);  // the bin's chunks (LIFO), then the arena's
    for (auto& p : fresh) p = std::malloc(n);   // the bin is empty: these come from the arena
    // The pointers escape: the compiler may not pair these mallocs with the frees and drop both.
    asm volatile("" : : "r"(cached.data()), "r"(fresh.data()) : "memory");
    for (void* p : fresh) std::free(p);         // the bin fills with these...
    for (void* p : cached) std::free(p);        // ...so these go back to the arena, to be trimmed
    moved += kPerBin;
  }
  return moved;
#else
  return 0;
#endif
}

ReactorPoolReleased release_reactor_pool(const boost::asio::any_io_executor& ex, std::chrono::milliseconds wait) {
#if defined(BOOST_ASIO_HAS_EPOLL)
  auto& ctx = boost::asio::query(ex, boost::asio::execution::context);
  if (!boost::asio::has_service<Reactor>(ctx)) return {};
  Reactor& r = boost::asio::use_service<Reactor>(ctx);
  auto done = std::make_shared<std::promise<ReactorPoolReleased>>();
  auto result = done->get_future();
  boost::asio::post(ex, [&r, done] {
    ReactorPoolReleased out = release_on_io_thread(r);
    out.cached_chunks = release_thread_cache();  // last: what the release freed goes through it
    done->set_value(out);
  });
  if (result.wait_for(wait) != std::future_status::ready) return {};
  return result.get();
#else
  (void)ex;
  (void)wait;
  return {};
#endif
}

}  // namespace modelux::proxy
