// Incremental SSE framing (WHATWG event-stream): lines end in \n, \r\n or \r; a blank line
// ends an event; ':' lines are comments. State is the current line and event only, so memory
// is bounded by max_event_bytes whatever the split of the input.
#include "modelux/wire.hpp"

#include <cstring>

namespace modelux {

Result<void> SseParser::line(std::string_view l, EventFn fn, void* ctx) {
  if (l.empty()) {
    Result<void> r;
    if (has_data_) r = fn(ctx, cur_);
    // Cleared, not replaced: the next event reuses the buffers (no allocation per event).
    cur_.data.clear();
    cur_.event.clear();
    has_data_ = false;
    return r;
  }
  if (l.front() == ':') return {};
  auto colon = l.find(':');
  std::string_view field = l.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) cur_.data += '\n';
    cur_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    cur_.event.assign(value);
  }
  if (cur_.data.size() + cur_.event.size() > max_event_)
    return fail(ErrorKind::malformed_response, "stream event larger than " + std::to_string(max_event_) + " bytes");
  return {};
}

// Complete lines are handed to line() straight from `bytes`; only a line split across feeds is
// gathered in line_ (a relayed stream feeds one event per read: no copy, no per-byte append).
Result<void> SseParser::feed(std::string_view bytes, std::vector<SseEvent>& out) {
  return feed_impl(
      bytes,
      [](void* o, SseEvent& ev) -> Result<void> {
        static_cast<std::vector<SseEvent>*>(o)->push_back(std::move(ev));
        return {};
      },
      &out);
}

Result<void> SseParser::feed_impl(std::string_view bytes, EventFn fn, void* ctx) {
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  if (last_cr_ && n > 0) {
    last_cr_ = false;
    if (bytes[0] == '\n') i = 1;  // \r\n is one line end
  }
  auto too_long = [&] {
    return fail(ErrorKind::malformed_response, "stream line longer than " + std::to_string(max_event_) + " bytes");
  };
  while (i < n) {
    // The next line end: memchr (vectorised) for \n, then for a \r before it (rare).
    const char* base = bytes.data();
    const void* nl = std::memchr(base + i, '\n', n - i);
    std::size_t j = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - base) : n;
    if (const void* cr = std::memchr(base + i, '\r', j - i)) j = static_cast<std::size_t>(static_cast<const char*>(cr) - base);
    if (line_.size() + (j - i) > max_event_) return too_long();
    if (j == n) {  // no line end yet
      line_.append(bytes.substr(i));
      break;
    }
    Result<void> r;
    if (line_.empty()) {
      r = line(bytes.substr(i, j - i), fn, ctx);
    } else {
      line_.append(bytes.substr(i, j - i));
      r = line(line_, fn, ctx);
      line_.clear();
    }
    if (!r) return r;
    if (bytes[j] == '\r') {
      if (j + 1 == n) last_cr_ = true;
      else if (bytes[j + 1] == '\n') ++j;
    }
    i = j + 1;
  }
  return {};
}

}  // namespace modelux
