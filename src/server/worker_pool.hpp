// A small thread pool for the proxy's slow work (trace reads and flushes, config compiles,
// large snapshots), so the io threads only parse, route and relay.
//
// Threading: run() may be awaited from any coroutine; the callable runs on a pool thread and
// the coroutine resumes on its own executor (the connection's strand) with the result.
// The pool joins its threads in its destructor after finishing queued work.
#pragma once

#include <type_traits>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace modelux::proxy {

class WorkerPool {
 public:
  explicit WorkerPool(int threads) : pool_(static_cast<std::size_t>(threads < 1 ? 1 : threads)) {}
  ~WorkerPool() { pool_.join(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  /// Runs `fn` on a pool thread; resumes the caller on its executor with fn's result.
  template <class Fn>
  boost::asio::awaitable<std::invoke_result_t<Fn&>> run(Fn fn) {
    using R = std::invoke_result_t<Fn&>;
    // co_spawn delivers the completion through the awaiting coroutine's executor.
    co_return co_await boost::asio::co_spawn(
        pool_.get_executor(), [fn = std::move(fn)]() mutable -> boost::asio::awaitable<R> { co_return fn(); },
        boost::asio::use_awaitable);
  }

  void stop() { pool_.join(); }

 private:
  boost::asio::thread_pool pool_;
};

}  // namespace modelux::proxy
