// Incremental SSE framing (WHATWG event-stream): lines end in \n, \r\n or \r; a blank line
// ends an event; ':' lines are comments. State is the current line and event only, so memory
// is bounded by max_event_bytes whatever the split of the input.
#include "modelux/wire.hpp"

namespace modelux {

Result<void> SseParser::line(std::string_view l, std::vector<SseEvent>& out) {
  if (l.empty()) {
    if (has_data_ || !cur_.event.empty()) {
      if (has_data_) out.push_back(std::move(cur_));
      cur_ = SseEvent{};
      has_data_ = false;
    }
    return {};
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

Result<void> SseParser::feed(std::string_view bytes, std::vector<SseEvent>& out) {
  for (char c : bytes) {
    if (last_cr_) {
      last_cr_ = false;
      if (c == '\n') continue;  // \r\n is one line end
    }
    if (c == '\n' || c == '\r') {
      last_cr_ = (c == '\r');
      auto r = line(line_, out);
      line_.clear();
      if (!r) return r;
      continue;
    }
    line_.push_back(c);
    if (line_.size() > max_event_)
      return fail(ErrorKind::malformed_response, "stream line longer than " + std::to_string(max_event_) + " bytes");
  }
  return {};
}

}  // namespace modelux
