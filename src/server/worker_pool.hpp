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
#include <boost/asio/async_result.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
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
  /// Pass a named callable (`auto job = [..]{..}; co_await pool.run(std::move(job));`): GCC 12
  /// destroys a temporary inside a co_await expression twice.
  template <class Fn>
  boost::asio::awaitable<std::invoke_result_t<Fn&>> run(Fn fn) {
    using R = std::invoke_result_t<Fn&>;
    namespace net = boost::asio;
    auto ex = co_await net::this_coro::executor;
    // No coroutine lambda here: GCC 12 destroys the captures of a coroutine lambda handed to
    // co_spawn twice (free(): invalid pointer). A plain handler posted back to the caller's
    // executor (its strand) resumes the coroutine there, never on the pool thread.
    auto init = [this, ex](auto handler, Fn f) {
      net::post(pool_, [handler = std::move(handler), f = std::move(f), ex]() mutable {
        R result = f();
        auto hex = net::get_associated_executor(handler, ex);
        net::post(hex, [handler = std::move(handler), result = std::move(result)]() mutable {
          std::move(handler)(std::move(result));
        });
      });
    };
    co_return co_await net::async_initiate<const net::use_awaitable_t<>, void(R)>(std::move(init), net::use_awaitable,
                                                                                  std::move(fn));
  }

  /// Runs `fn` on a pool thread and does not wait for it (work that outlives its request,
  /// such as storing a kept response).
  template <class Fn>
  void post(Fn fn) {
    boost::asio::post(pool_, std::move(fn));
  }

  void stop() { pool_.join(); }

 private:
  boost::asio::thread_pool pool_;
};

}  // namespace modelux::proxy
