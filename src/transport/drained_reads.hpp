// Skips Asio's speculative recv on a socket known to be empty (the relay's one-event reads).
//
// Every async read on an Asio socket starts with a speculative recv, which pays off when data
// is already waiting. A relayed stream's reads are different: each upstream read drains the
// socket (one event, shorter than the buffer), so the next read's speculative recv always
// finds nothing: one system call per relayed chunk for nothing (issue 19 item 4; nginx does
// not make it: a short read marks its connection not ready until epoll says otherwise).
//
// The epoll reactor keeps a per-descriptor "try a speculative operation" flag that it sets
// whenever epoll reports the descriptor readable. Clearing it when we know the socket is
// empty makes the next async read wait for epoll's next edge with no system call (the socket
// is registered edge-triggered for reads once, so no epoll_ctl either). It is correct only if
// no readiness of that socket was consumed between the recv that found it empty and the
// clearing: then any data that arrives later raises a new edge, which sets the flag again and
// completes the read. Two places give that guarantee, on an io_context run by one thread:
//  - a read that completed from the reactor (the flag was clear when it started, so it did not
//    complete speculatively) resumes its coroutine inline, inside the reactor's handling of
//    that very edge: a short read there means the socket was empty with nothing consumed since;
//  - our own recv that just found the socket empty, with no handler run since.
// The helper therefore works only where the io_context's concurrency hint is 1 (one thread
// promised: the Router's and the Server's io_contexts), on plain TCP with the epoll reactor;
// elsewhere every call is a no-op and Asio behaves as usual.
//
// It reaches into Asio's private members (Boost 1.81's epoll_reactor::descriptor_state and
// basic_socket::impl_) through explicit instantiation; a Boost that renames them fails to
// compile here. Threading: on the socket's io thread only.
#pragma once

#include <cstddef>
#include <span>

#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

namespace modelux::transport {

class DrainedReads {
 public:
  /// Enabled for `sock` when it is open, its io_context promised one thread and the reactor is epoll.
  explicit DrainedReads(boost::asio::ip::tcp::socket& sock) noexcept;
  bool enabled() const noexcept { return state_ != nullptr; }

  /// Before an async read: true when the next async read needs no recv of its own, because
  /// this call just found the socket empty (and made the read wait for epoll), or epoll has
  /// reported nothing since the last read found it empty. False: `got` bytes (0 or more) were
  /// read into `into` with one recv, or `ec` is set (end of stream included: eof).
  bool wait_needed(std::span<char> into, std::size_t& got, boost::system::error_code& ec) noexcept;

  /// After an async read that started with wait_needed() true and read `got` of `capacity`
  /// bytes: a short read drained the socket, so the next read waits for epoll's next edge.
  void after_read(std::size_t got, std::size_t capacity) noexcept;

 private:
  void* state_ = nullptr;  // epoll_reactor::descriptor_state*
  int fd_ = -1;
  bool started_clear_ = false;  // the read in progress started with the flag clear
};

}  // namespace modelux::transport
