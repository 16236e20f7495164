// AWS event-stream framing (application/vnd.amazon.eventstream), used by Bedrock
// ConverseStream. Each message: total length, headers length, prelude CRC, headers, payload,
// message CRC, all big-endian. Both CRCs are checked; a bad CRC ends the stream with an error.
#include <array>
#include <cstdio>

#include "wire/codecs.hpp"

namespace modelux::wire {
namespace {

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc_table();

std::uint32_t be32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
}
void put32(std::string& s, std::uint32_t v) {
  s += static_cast<char>(v >> 24);
  s += static_cast<char>(v >> 16);
  s += static_cast<char>(v >> 8);
  s += static_cast<char>(v);
}

std::unexpected<Error> bad(std::string message) {
  Error e;
  e.kind = ErrorKind::malformed_response;
  e.message = "event stream: " + std::move(message);
  e.provider = "bedrock";
  return std::unexpected<Error>(std::move(e));
}

Result<void> parse_headers(std::string_view h, EventStreamMessage& m) {
  std::size_t i = 0;
  while (i < h.size()) {
    std::size_t name_len = static_cast<unsigned char>(h[i++]);
    if (name_len == 0 || i + name_len + 1 > h.size()) return bad("truncated header name");
    std::string name(h.substr(i, name_len));
    i += name_len;
    auto type = static_cast<unsigned char>(h[i++]);
    std::string value;
    auto need = [&](std::size_t n) { return i + n <= h.size(); };
    auto int_be = [&](std::size_t n) {
      std::uint64_t v = 0;
      for (std::size_t k = 0; k < n; ++k) v = (v << 8) | static_cast<unsigned char>(h[i + k]);
      // sign-extend
      if (n < 8 && (v >> (n * 8 - 1)) & 1) v |= ~std::uint64_t{0} << (n * 8);
      i += n;
      return static_cast<std::int64_t>(v);
    };
    switch (type) {
      case 0: value = "true"; break;
      case 1: value = "false"; break;
      case 2: if (!need(1)) return bad("truncated header"); value = std::to_string(int_be(1)); break;
      case 3: if (!need(2)) return bad("truncated header"); value = std::to_string(int_be(2)); break;
      case 4: if (!need(4)) return bad("truncated header"); value = std::to_string(int_be(4)); break;
      case 5:
      case 8: if (!need(8)) return bad("truncated header"); value = std::to_string(int_be(8)); break;
      case 6:
      case 7: {
        if (!need(2)) return bad("truncated header");
        std::size_t len = (std::size_t{static_cast<unsigned char>(h[i])} << 8) | static_cast<unsigned char>(h[i + 1]);
        i += 2;
        if (!need(len)) return bad("truncated header value");
        value.assign(h.substr(i, len));
        i += len;
        break;
      }
      case 9: {
        if (!need(16)) return bad("truncated uuid header");
        static constexpr char kHex[] = "0123456789abcdef";
        for (std::size_t k = 0; k < 16; ++k) {
          auto c = static_cast<unsigned char>(h[i + k]);
          value += kHex[c >> 4];
          value += kHex[c & 15];
        }
        i += 16;
        break;
      }
      default: return bad("unknown header type " + std::to_string(type));
    }
    m.headers.emplace_back(std::move(name), std::move(value));
  }
  return {};
}

}  // namespace

std::uint32_t crc32(std::string_view data, std::uint32_t crc) noexcept {
  crc = ~crc;
  for (unsigned char c : data) crc = kCrcTable[(crc ^ c) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

const std::string* EventStreamMessage::header(std::string_view name) const noexcept {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

Result<void> EventStreamParser::feed(std::string_view bytes, std::vector<EventStreamMessage>& out) {
  buf_.append(bytes);
  std::size_t pos = 0;
  while (buf_.size() - pos >= 12) {
    const char* p = buf_.data() + pos;
    std::uint32_t total = be32(p), hlen = be32(p + 4), prelude_crc = be32(p + 8);
    if (crc32(std::string_view(p, 8)) != prelude_crc) return bad("prelude CRC mismatch");
    if (total < 16 || hlen > total - 16) return bad("inconsistent message lengths");
    if (total > max_) return bad("message of " + std::to_string(total) + " bytes exceeds the limit");
    if (buf_.size() - pos < total) break;
    if (crc32(std::string_view(p, total - 4)) != be32(p + total - 4)) return bad("message CRC mismatch");
    EventStreamMessage m;
    if (auto r = parse_headers(std::string_view(p + 12, hlen), m); !r) return r;
    m.payload.assign(p + 12 + hlen, total - 16 - hlen);
    out.push_back(std::move(m));
    pos += total;
  }
  buf_.erase(0, pos);
  return {};
}

std::string encode_event_stream_message(const std::vector<std::pair<std::string, std::string>>& headers,
                                        std::string_view payload) {
  std::string h;
  for (const auto& [k, v] : headers) {
    h += static_cast<char>(k.size());
    h += k;
    h += static_cast<char>(7);
    h += static_cast<char>(v.size() >> 8);
    h += static_cast<char>(v.size() & 0xFF);
    h += v;
  }
  std::string out;
  auto total = static_cast<std::uint32_t>(16 + h.size() + payload.size());
  put32(out, total);
  put32(out, static_cast<std::uint32_t>(h.size()));
  put32(out, crc32(out));
  out += h;
  out += payload;
  put32(out, crc32(out));
  return out;
}

}  // namespace modelux::wire
