// modelux timer: awaiting a Clock's Timer from an Asio coroutine.
//
// `co_await async_wait_until(timer, deadline, use_awaitable)` completes with true when the
// clock reached `deadline` and false when the wait was cancelled: by timer.cancel(), or by
// per-operation cancellation (a cancellation slot bound to the awaiting coroutine), so a timer
// wait stops like any Asio operation. Threading: as Timer (use it from its executor).
#pragma once

#include <memory>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>

#include "modelux/core.hpp"

namespace modelux {

template <class Token>
auto async_wait_until(Timer& timer, Instant deadline, Token&& token) {
  return boost::asio::async_initiate<Token, void(bool)>(
      [&timer, deadline](auto handler) {
        auto slot = boost::asio::get_associated_cancellation_slot(handler);
        if (slot.is_connected())
          slot.assign([&timer](boost::asio::cancellation_type) { timer.cancel(); });
        // Timer handlers are copyable std::functions; Asio's are move-only.
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        timer.async_wait_until(deadline, [h](bool fired) mutable {
          auto s = boost::asio::get_associated_cancellation_slot(*h);
          if (s.is_connected()) s.clear();
          std::move (*h)(fired);
        });
      },
      token);
}

}  // namespace modelux
