// Skips Asio's speculative recv on a socket known to be empty (see drained_reads.hpp).
#include "transport/drained_reads.hpp"

#include <sys/socket.h>

#include <cerrno>

#include <boost/asio/detail/config.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>

#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/scheduler.hpp>

#include "core/private_access.hpp"
#define MODELUX_DRAINED_READS 1
#endif

#if defined(MODELUX_DRAINED_READS)
// The tags live in namespace modelux, as Expose does: a friend declared in a class belongs to
// the class's innermost namespace, and both must name the same get().
namespace modelux {
namespace asio_access {
namespace ad = boost::asio::detail;
using Socket = boost::asio::ip::tcp::socket;
using State = ad::epoll_reactor::descriptor_state;
using SocketBase = boost::asio::basic_socket<boost::asio::ip::tcp, Socket::executor_type>;
using SocketImpl = ad::io_object_impl<ad::reactive_socket_service<boost::asio::ip::tcp>, Socket::executor_type>;

struct ImplOf {  // basic_socket::impl_
  using type = SocketImpl SocketBase::*;
  friend type get(ImplOf);
};
struct MutexOf {
  using type = ad::conditionally_enabled_mutex State::*;
  friend type get(MutexOf);
};
struct SpeculativeOf {
  using type = bool (State::*)[ad::epoll_reactor::max_ops];
  friend type get(SpeculativeOf);
};
template struct Expose<ImplOf, &SocketBase::impl_>;
template struct Expose<MutexOf, &State::mutex_>;
template struct Expose<SpeculativeOf, &State::try_speculative_>;
}  // namespace asio_access
using asio_access::ImplOf, asio_access::MutexOf, asio_access::SpeculativeOf;

}  // namespace modelux
#endif

namespace modelux::transport {

#if defined(MODELUX_DRAINED_READS)
namespace {
namespace ad = boost::asio::detail;
using Socket = boost::asio::ip::tcp::socket;
using State = ad::epoll_reactor::descriptor_state;
State* state_of(void* p) { return static_cast<State*>(p); }

void clear_flag(State* s) {
  ad::conditionally_enabled_mutex::scoped_lock lock(s->*get(MutexOf{}));
  (s->*get(SpeculativeOf{}))[ad::epoll_reactor::read_op] = false;
}
}  // namespace

DrainedReads::DrainedReads(Socket& sock) noexcept {
  if (!sock.is_open()) return;
  auto& ctx = boost::asio::query(sock.get_executor(), boost::asio::execution::context);
  // One thread promised (concurrency hint 1): no other thread can consume the socket's
  // readiness between our recv and our clearing of the flag.
  if (!boost::asio::has_service<ad::scheduler>(ctx) || boost::asio::use_service<ad::scheduler>(ctx).concurrency_hint() != 1)
    return;
  auto& impl = (sock.*get(ImplOf{})).get_implementation();
  if (!impl.reactor_data_) return;
  state_ = impl.reactor_data_;
  fd_ = impl.socket_;
}

bool DrainedReads::wait_needed(std::span<char> into, std::size_t& got, boost::system::error_code& ec) noexcept {
  got = 0;
  started_clear_ = false;
  if (!state_) return true;  // not enabled: the async read does what Asio always does
  State* s = state_of(state_);
  {
    ad::conditionally_enabled_mutex::scoped_lock lock(s->*get(MutexOf{}));
    if (!(s->*get(SpeculativeOf{}))[ad::epoll_reactor::read_op]) {
      started_clear_ = true;  // nothing reported since the socket was found empty
      return true;
    }
  }
  // Epoll reported the socket since: read what is there, as Asio's speculative read would.
  for (;;) {
    const ssize_t n = ::recv(fd_, into.data(), into.size(), MSG_DONTWAIT);
    if (n > 0) {
      got = static_cast<std::size_t>(n);
      return false;
    }
    if (n == 0) {
      ec = boost::asio::error::eof;
      return false;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      clear_flag(s);  // empty now, and no handler runs before the read is queued
      started_clear_ = true;
      return true;
    }
    ec = boost::system::error_code(errno, boost::system::system_category());
    return false;
  }
}

void DrainedReads::after_read(std::size_t got, std::size_t capacity) noexcept {
  // Completed from the reactor (it started clear, so not speculatively), inline in the
  // handling of the edge that brought the bytes: a short read drained the socket.
  if (state_ && started_clear_ && got > 0 && got < capacity) clear_flag(state_of(state_));
  started_clear_ = false;
}

#else  // another reactor: Asio's own behaviour

DrainedReads::DrainedReads(boost::asio::ip::tcp::socket&) noexcept {}
bool DrainedReads::wait_needed(std::span<char>, std::size_t& got, boost::system::error_code&) noexcept {
  got = 0;
  return true;
}
void DrainedReads::after_read(std::size_t, std::size_t) noexcept {}

#endif

}  // namespace modelux::transport
