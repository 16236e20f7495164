// Gives back what an io thread keeps after a burst: the per-socket states Asio's epoll reactor
// keeps for reuse, its timer heap's surplus, and the chunks in the thread's malloc cache.
//
// Asio allocates one `descriptor_state` (about 170 bytes) per open socket and, when the socket
// closes, keeps it on a free list that it never shrinks. After 2,000 concurrent streams that
// is 4,000 objects allocated mid-burst between the burst's buffers; with glibc each pins the
// heap page around it, so malloc_trim cannot return those pages and RSS stays far above idle
// (issue 19 item 5; heaptrack named them the only long-lived allocation a burst makes by the
// thousand). release_reactor_pool frees them while the process is quiet.
//
// Safety: the reactor may have queued a socket's state as a completion just before the
// socket closed; that queued completion still refers to it. So a state is freed only when it
// has stayed unused on the free list from one call to the next (marked by the first,
// freed by the second), and the freeing runs as a handler on the io_context: a completion
// queued before the state was freed (before the first release) has run by the time a handler
// posted later runs (the scheduler is FIFO). With several io threads on one io_context, a
// completion dequeued by another thread could in theory still be running: the caller keeps
// the two calls apart (the proxy's trimmer by 0.5 s or more), which makes that window that
// long. Reaches into Asio's private members (Boost 1.81's epoll_reactor): a Boost that
// renames them fails to compile here, and a non-epoll build compiles this out.
//
// It also shrinks the reactor's steady_timer heap: a std::vector that grows to the burst's peak
// number of armed timers (one per connection and more, 128 kB after 2,000 streams) and never
// shrinks; allocated mid-burst, it pins its pages like the states do. The heap is touched only
// under the reactor's mutex, which the shrink holds; timers refer to their heap index, not to
// the entries' addresses, so moving the entries is what the heap's own growth does.
//
// Threading: release_reactor_pool() may be called from any thread; it posts to the io_context
// and waits for that handler (up to a timeout, for an io_context that no longer runs).
#pragma once

#include <chrono>
#include <cstddef>

#include <boost/asio/any_io_executor.hpp>

namespace modelux::proxy {

struct ReactorPoolReleased {
  std::size_t freed = 0;   ///< descriptor states deleted now (marked by the previous call)
  std::size_t marked = 0;  ///< free descriptor states marked now: the next call frees those still unused
  std::size_t timer_heap_bytes = 0;  ///< freed by shrinking steady_timer heaps grown far above their size
  std::size_t cached_chunks = 0;     ///< the io thread's malloc cache entries cycled (release_thread_cache)
};

/// Hands the chunks in the calling thread's malloc cache (glibc's tcache: up to 7 freed chunks
/// per size class up to 1 kB, kept for the thread's next malloc and invisible to malloc_trim)
/// back to its arena, and refills the cache with chunks taken from the arena now. After a burst
/// the cached chunks are the last the burst freed, one here and one there across the arena's
/// 100 MB; each pins its page, about 300 pages (1.2 MB) on the proxy's io thread after 2,000
/// streams. The fresh chunks come from the arena's free space in one place, and what the
/// cache gave up is trimmed by the next malloc_trim. Returns the chunks cycled (0 on a libc
/// other than glibc, where it does nothing). Cheap (900 mallocs and frees); meant for an idle
/// thread. release_reactor_pool() calls it on the io thread it runs on.
std::size_t release_thread_cache() noexcept;

/// Marks the free descriptor states of the reactor behind `ex`'s io_context and deletes those
/// marked by the previous call and still unused; shrinks its steady_timer heap when it is less
/// than a quarter full. Returns zeros when the context has no epoll
/// reactor (not yet used, or another platform), when its reactor does not lock (a concurrency
/// hint that disables it), or when the io_context did not run the handler within `wait`.
ReactorPoolReleased release_reactor_pool(const boost::asio::any_io_executor& ex,
                                         std::chrono::milliseconds wait = std::chrono::milliseconds(1000));

}  // namespace modelux::proxy
