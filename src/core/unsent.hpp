// Internal: what is left of a gather write after a non-blocking write_some took its first n
// bytes. The server's writes and the HTTP client's request write try the socket at once and
// hand only the rest to an async write; this is that "rest", in one place.
#pragma once

#include <cstddef>
#include <span>

#include <boost/asio/buffer.hpp>

namespace modelux {

/// Copies into `rest` the buffers of `bufs` that follow their first `n` bytes (the first of
/// them shortened); returns how many it wrote. `rest` must hold bufs.size() buffers.
inline std::size_t unsent(std::span<const boost::asio::const_buffer> bufs, std::size_t n,
                          std::span<boost::asio::const_buffer> rest) noexcept {
  std::size_t k = 0;
  for (const auto& b : bufs) {
    if (n >= b.size()) {
      n -= b.size();
      continue;
    }
    rest[k++] = b + n;
    n = 0;
  }
  return k;
}

}  // namespace modelux
