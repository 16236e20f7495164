// Body capture for traces: redaction of configured JSON fields and a UTF-8-safe size cap.
// Runs on the tracer's writer thread, never on the hot path.
#include <algorithm>

#include "modelux/trace.hpp"

namespace modelux {

namespace {

void redact(Json& j, const std::vector<std::string>& fields, int depth) {
  if (depth > 64) return;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (std::find(fields.begin(), fields.end(), it.key()) != fields.end()) it.value() = "[redacted]";
      else redact(it.value(), fields, depth + 1);
    }
  } else if (j.is_array()) {
    for (auto& v : j) redact(v, fields, depth + 1);
  }
}

}  // namespace

std::string prepare_body(std::string_view body, const std::vector<std::string>& fields, std::size_t cap_bytes) {
  std::string out;
  if (!fields.empty()) {
    // Parse with a depth limit of sorts: nlohmann recurses, so refuse absurdly deep input by
    // counting brackets first (hostile bodies must not crash the writer).
    int depth = 0, max_depth = 0;
    for (char c : body) {
      if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
      else if (c == '}' || c == ']') --depth;
    }
    Json j = max_depth <= 128 ? Json::parse(body, nullptr, false) : Json(Json::value_t::discarded);
    if (!j.is_discarded()) {
      redact(j, fields, 0);
      out = j.dump(-1, ' ', false, Json::error_handler_t::replace);
    } else {
      out.assign(body);  // not JSON: nothing to redact by key
    }
  } else {
    out.assign(body);
  }
  if (out.size() > cap_bytes) {
    std::size_t cut = cap_bytes;
    // Do not split a UTF-8 sequence: back up over continuation bytes.
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    const std::size_t dropped = out.size() - cut;
    out.resize(cut);
    out += "…[truncated " + std::to_string(dropped) + " bytes]";
  }
  return out;
}

}  // namespace modelux
