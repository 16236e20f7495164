// Test support for the codec tests (unit-wire-fixtures, unit-wire-providers): the recorded
// provider bodies in tests/fixtures/wire, a stream decoded from parts, and the check that
// every split of a stream's bytes decodes as the whole does.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/wire.hpp"
#include "support/paths.hpp"

namespace modelux::test {

/// The bytes of tests/fixtures/wire/<name> (a test failure when it is missing).
inline std::string fixture(const std::string& name) {
  std::ifstream f(source_dir() + "/tests/fixtures/wire/" + name, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << name);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// The client codec of a provider family (a test failure when there is none).
inline const Codec& codec(std::string_view family) {
  const Codec* c = find_codec(family);
  REQUIRE_MESSAGE(c != nullptr, "no codec for " << family);
  return *c;
}

/// A stream decoded from parts and accumulated into one response.
struct Decoded {
  ChatResponse response;
  bool ok = true;
  Error error;             ///< when !ok: the first error of feed() or finish()
  std::size_t chunks = 0;  ///< chunks the decoder yielded
  int usage_chunks = 0;    ///< of which carried usage
};

/// Feeds `parts` to a fresh stream decoder of `family` in order, then finish().
inline Decoded decode_parts(std::string_view family, const std::vector<std::string_view>& parts) {
  auto dec = codec(family).stream_decoder();
  std::vector<ChatChunk> out;
  Decoded d;
  for (auto p : parts) {
    if (auto r = dec->feed(p, out); !r) {
      d.ok = false;
      d.error = r.error();
      return d;
    }
  }
  if (auto r = dec->finish(out); !r) {
    d.ok = false;
    d.error = r.error();
  }
  ChunkAccumulator acc;
  for (const auto& c : out) {
    acc.add(c);
    if (c.usage) ++d.usage_chunks;
  }
  d.chunks = out.size();
  d.response = acc.finish();
  return d;
}

/// What a client sees of a response: text, tool calls, finish reason, usage.
inline std::string summary(const ChatResponse& r) {
  std::string s;
  for (const auto& c : r.choices) {
    s += "[" + std::to_string(c.index) + "] text=" + c.message.text() + " finish=" + c.finish_reason;
    for (const auto& t : c.message.tool_calls) s += " call(" + t.id + "," + t.name + "," + t.arguments + ")";
  }
  s += " usage=" + std::to_string(r.usage.prompt_tokens) + "/" + std::to_string(r.usage.completion_tokens) + "/" +
       std::to_string(r.usage.cached_tokens) + "/" + std::to_string(r.usage.cache_write_tokens) + "/" +
       std::to_string(r.usage.reasoning_tokens);
  return s;
}

/// Decodes the whole stream, then requires every two-way split of `bytes` and a byte-by-byte
/// feed to decode the same. Returns the whole decode.
inline Decoded check_every_split(std::string_view family, const std::string& bytes) {
  Decoded whole = decode_parts(family, {bytes});
  REQUIRE_MESSAGE(whole.ok, whole.error.describe());
  std::string expect = summary(whole.response);
  for (std::size_t i = 0; i <= bytes.size(); ++i) {
    std::string_view b = bytes;
    Decoded d = decode_parts(family, {b.substr(0, i), b.substr(i)});
    REQUIRE_MESSAGE(d.ok, "split at " << i << ": " << d.error.describe());
    REQUIRE_MESSAGE(summary(d.response) == expect, "split at " << i);
  }
  std::vector<std::string_view> bytewise;
  for (std::size_t i = 0; i < bytes.size(); ++i) bytewise.push_back(std::string_view(bytes).substr(i, 1));
  Decoded d = decode_parts(family, bytewise);
  REQUIRE(d.ok);
  CHECK(summary(d.response) == expect);
  return whole;
}

}  // namespace modelux::test
