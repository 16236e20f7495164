#include <doctest/doctest.h>

#include <chrono>
#include <set>
#include <mutex>
#include <thread>
#include <vector>

#include "modelux/core.hpp"

using namespace modelux;

TEST_CASE("ErrorKind: names round-trip and map to OpenAI-style HTTP statuses") {
  for (int i = 0; i <= static_cast<int>(ErrorKind::internal); ++i) {
    auto k = static_cast<ErrorKind>(i);
    auto back = error_kind_from_string(to_string(k));
    REQUIRE(back.has_value());
    CHECK(*back == k);
  }
  CHECK_FALSE(error_kind_from_string("nope").has_value());
  CHECK(http_status_for(ErrorKind::rate_limited) == 429);
  CHECK(http_status_for(ErrorKind::auth) == 401);
  CHECK(http_status_for(ErrorKind::not_found) == 404);
  CHECK(http_status_for(ErrorKind::bad_request) == 400);
  CHECK(http_status_for(ErrorKind::timeout) == 504);
}

TEST_CASE("Error: describe names kind, message and JSON path") {
  auto r = [] () -> Result<int> { return fail(ErrorKind::invalid_config, "timeout over budget", "$.attempts[1].timeout_ms"); }();
  REQUIRE_FALSE(r);
  CHECK(r.error().describe() == "invalid_config: timeout over budget (at $.attempts[1].timeout_ms)");
}

TEST_CASE("ManualClock: moves only when told, wall time follows") {
  ManualClock c;
  Instant t0 = c.now();
  WallTime w0 = c.wall_now();
  CHECK(t0 != Instant{});
  c.advance(std::chrono::milliseconds(1500));
  CHECK(c.now() - t0 == std::chrono::milliseconds(1500));
  CHECK(c.wall_now() - w0 == std::chrono::milliseconds(1500));
}

TEST_CASE("Random: deterministic per seed, uniform in 0..1, below(n) in range") {
  Random a(7), b(7), c(8);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    auto x = a.next_u64();
    CHECK(x == b.next_u64());
    differs |= (x != c.next_u64());
  }
  CHECK(differs);
  Random r(1);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    double u = r.uniform();
    CHECK(u >= 0.0);
    CHECK(u < 1.0);
    sum += u;
    CHECK(r.below(10) < 10);
  }
  CHECK(sum / 10000 == doctest::Approx(0.5).epsilon(0.05));
}

TEST_CASE("new_request_id: unique across threads, fixed shape") {
  std::set<std::string> ids;
  std::mutex mu;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        auto id = new_request_id();
        std::lock_guard lk(mu);
        ids.insert(id);
      }
    });
  for (auto& t : ts) t.join();
  CHECK(ids.size() == 8000);
  auto id = *ids.begin();
  CHECK(id.starts_with("req_"));
  CHECK(id.size() == 28);
  CHECK(id.find_first_not_of("0123456789abcdef", 4) == std::string::npos);
  // The first 16 hex digits are the wall clock in microseconds, shifted left by 10 bits.
  const auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  const auto id_us = static_cast<long long>(std::stoull(new_request_id().substr(4, 16), nullptr, 16) >> 10);
  CHECK(id_us >= now_us - 60'000'000);
  CHECK(id_us <= now_us + 60'000'000);
}

TEST_CASE("new_request_id: ids made one after another sort in the order they were made") {
  // The trace store's id indexes append instead of dirtying a random page per insert only
  // while ids ascend (fixed-width hex, so string order is numeric order).
  std::string prev = new_request_id();
  for (int i = 0; i < 10000; ++i) {
    std::string id = new_request_id();
    REQUIRE(id.size() == 28);
    REQUIRE(id > prev);
    prev = std::move(id);
  }
}

TEST_CASE("fnv1a64: stable known values") {
  CHECK(fnv1a64("") == 0xcbf29ce484222325ULL);
  CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
}

TEST_CASE("valid_utf8: accepts well-formed text and refuses every malformed form") {
  using namespace std::string_view_literals;
  CHECK(modelux::valid_utf8(""));
  CHECK(modelux::valid_utf8("plain ascii"));
  CHECK(modelux::valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  CHECK(modelux::valid_utf8("\xF4\x8F\xBF\xBF"));                          // U+10FFFF
  CHECK(modelux::valid_utf8("nul \0 inside"sv));
  CHECK_FALSE(modelux::valid_utf8("\xFF"));                   // never valid
  CHECK_FALSE(modelux::valid_utf8("\x80"));                   // lone continuation
  CHECK_FALSE(modelux::valid_utf8("\xC3"));                   // truncated
  CHECK_FALSE(modelux::valid_utf8("\xE2\x82"));               // truncated
  CHECK_FALSE(modelux::valid_utf8("\xC0\xAF"));               // overlong '/'
  CHECK_FALSE(modelux::valid_utf8("\xE0\x80\xAF"));           // overlong
  CHECK_FALSE(modelux::valid_utf8("\xF0\x80\x80\xAF"));       // overlong
  CHECK_FALSE(modelux::valid_utf8("\xED\xA0\x80"));           // surrogate U+D800
  CHECK_FALSE(modelux::valid_utf8("\xF4\x90\x80\x80"));       // above U+10FFFF
  CHECK_FALSE(modelux::valid_utf8("\xC3\x28"));               // bad continuation
  CHECK_FALSE(modelux::valid_utf8("ok then \xE2\x28\xA1"));   // bad continuation mid-string
  // ASCII is checked eight bytes at a time: faults right after, inside and across such runs.
  CHECK_FALSE(modelux::valid_utf8("12345678\xFF"));
  CHECK_FALSE(modelux::valid_utf8("1234567\xC3"));
  CHECK_FALSE(modelux::valid_utf8("1234567890abcdef\xE2\x82"));
  CHECK_FALSE(modelux::valid_utf8("abc\x80defghijklmnop"));
  CHECK_FALSE(modelux::valid_utf8("0123456789abcdefghij\xC0\xAFklmnopqrstuvwxyz"));
  CHECK(modelux::valid_utf8("1234567\xC3\xA9" "0123456789abcdef\xF0\x9F\x98\x80" "tail of more than eight"));
}

// ASCII is skipped a word at a time: a bad or multi-byte sequence must be seen at every offset
// (inside a word, across a word boundary, in the tail shorter than a word).
TEST_CASE("valid_utf8: finds a sequence at every offset of an ASCII run") {
  for (std::size_t len = 0; len < 40; ++len)
    for (std::size_t at = 0; at <= len; ++at) {
      CAPTURE(len);
      CAPTURE(at);
      std::string s(len, 'a');
      CHECK(modelux::valid_utf8(std::string(s).insert(at, "\xE2\x82\xAC")));  // €
      CHECK_FALSE(modelux::valid_utf8(std::string(s).insert(at, "\xFF")));
      CHECK_FALSE(modelux::valid_utf8(std::string(s).insert(at, "\xE2\x82")));  // truncated (or bad continuation)
      CHECK_FALSE(modelux::valid_utf8(std::string(s).insert(at, "\xC3\x28")));
    }
}
