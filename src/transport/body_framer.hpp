// Internal: the framing of an HTTP/1.1 response body (chunked or Content-Length), decoded
// incrementally from whatever bytes have arrived.
//
// Why not Beast's parser for the body: a streamed answer is many small chunks (one SSE event
// each), and Beast's parser hands out one chunk per read operation, through a composed
// operation with a timer, for every event. This framer decodes every complete chunk of the
// bytes already received in one call, straight out of the connection's read buffer, so one
// socket read relays every event it brought. Beast still parses the response head (and bodies
// that are neither chunked nor of known length, which end with the connection).
//
// Strict like Beast: a chunk size is hex digits (an extension after ';' is skipped) ended by
// CRLF, chunk data is followed by CRLF, trailers end with an empty line; anything else is an
// error and the connection is not reused.
//
// Threading: one framer belongs to one response; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace modelux::transport {

class BodyFramer {
 public:
  enum class Mode : std::uint8_t { length, chunked };

  /// A body of `length` bytes.
  static BodyFramer with_length(std::uint64_t length) noexcept {
    BodyFramer f;
    f.mode_ = Mode::length;
    f.left_ = length;
    f.st_ = length == 0 ? St::done : St::data;
    return f;
  }
  static BodyFramer chunked() noexcept {
    BodyFramer f;
    f.mode_ = Mode::chunked;
    return f;
  }

  /// Decodes from `in`, appending body bytes to `out` (discarding them when null). Returns the
  /// bytes of `in` consumed; stops at the end of the body (bytes after it are not consumed).
  /// After an error (bad framing) error() is true and nothing more is consumed.
  std::size_t feed(std::string_view in, std::string* out) noexcept {
    std::size_t i = 0;
    const std::size_t n = in.size();
    while (i < n && st_ != St::done && st_ != St::bad) {
      const char c = in[i];
      switch (st_) {
        case St::data: {
          const std::size_t take = left_ < n - i ? static_cast<std::size_t>(left_) : n - i;
          if (out) out->append(in.data() + i, take);
          i += take;
          left_ -= take;
          if (left_ == 0) st_ = mode_ == Mode::length ? St::done : St::data_cr;
          continue;
        }
        case St::size:
          if (int d = hex(c); d >= 0) {
            if (digits_ >= 15) return bad(i);  // over 2^60: no real chunk is that large
            left_ = left_ * 16 + static_cast<std::uint64_t>(d);
            ++digits_;
          } else if (digits_ > 0 && (c == ';' || c == ' ' || c == '\t')) {
            st_ = St::ext;
          } else if (digits_ > 0 && c == '\r') {
            st_ = St::size_lf;
          } else {
            return bad(i);
          }
          break;
        case St::ext:  // chunk extensions: ignored, up to a bounded length
          if (c == '\r') st_ = St::size_lf;
          else if (c == '\n' || ++line_ > kMaxLine) return bad(i);
          break;
        case St::size_lf:
          if (c != '\n') return bad(i);
          digits_ = 0;
          line_ = 0;
          st_ = left_ == 0 ? St::trailer_start : St::data;
          break;
        case St::data_cr:
          if (c != '\r') return bad(i);
          st_ = St::data_lf;
          break;
        case St::data_lf:
          if (c != '\n') return bad(i);
          st_ = St::size;
          break;
        case St::trailer_start:
          if (c == '\r') st_ = St::end_lf;
          else st_ = St::trailer;
          break;
        case St::trailer:
          if (c == '\n') st_ = St::trailer_start;
          else if (++line_ > kMaxTrailers) return bad(i);
          break;
        case St::end_lf:
          if (c != '\n') return bad(i);
          st_ = St::done;
          break;
        case St::done:
        case St::bad:
          break;
      }
      ++i;
    }
    return i;
  }

  bool done() const noexcept { return st_ == St::done; }
  bool error() const noexcept { return st_ == St::bad; }
  Mode mode() const noexcept { return mode_; }

 private:
  enum class St : std::uint8_t { size, ext, size_lf, data, data_cr, data_lf, trailer_start, trailer, end_lf, done, bad };
  static constexpr std::size_t kMaxLine = 4096;      // a chunk-size line with its extensions
  static constexpr std::size_t kMaxTrailers = 8192;  // all trailer lines together

  static int hex(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  std::size_t bad(std::size_t i) noexcept {
    st_ = St::bad;
    return i;
  }

  Mode mode_ = Mode::chunked;
  St st_ = St::size;
  std::uint64_t left_ = 0;  // bytes left of the body (length) or of the current chunk
  int digits_ = 0;
  std::size_t line_ = 0;
};

}  // namespace modelux::transport
