// The one scrubber: registered secrets by value (Aho-Corasick), known key shapes, thread safety.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "modelux/scrub.hpp"

using namespace modelux;

TEST_CASE("scrub: a registered secret without any known prefix is removed by value") {
  add_secret("plain-canary-value-0001");
  std::string s = "Incorrect API key provided: plain-canary-value-0001. Check it.";
  CHECK(scrub(s));
  CHECK(s == "Incorrect API key provided: [redacted]. Check it.");
}

TEST_CASE("scrub: overlapping and nested secrets are removed whole") {
  add_secret("abcdefgh-1111");
  add_secret("defgh-1111-2222");
  add_secret("xx-abcdefgh-1111-yy");
  std::string s = "[abcdefgh-1111-2222] [xx-abcdefgh-1111-yy] [defgh-1111-2222]";
  scrub(s);
  CHECK(s.find("1111") == std::string::npos);
  CHECK(s.find("abcdefgh") == std::string::npos);
  CHECK(s == "[[redacted]] [[redacted]] [[redacted]]");
}

TEST_CASE("scrub: many secrets, each found wherever it is") {
  std::vector<std::string> keys;
  for (int i = 0; i < 500; ++i) keys.push_back("many-secret-" + std::to_string(i * 7919) + "-end");
  for (const auto& k : keys) add_secret(k);
  for (int i = 0; i < 500; i += 37) {
    std::string s = "before " + keys[i] + " after";
    scrub(s);
    CHECK(s == "before [redacted] after");
  }
}

TEST_CASE("scrub: known key shapes") {
  struct Case {
    const char* in;
    const char* out;
  } cases[] = {
      {"key sk-proj-abcdefghijklmnop1234 is bad", "key [redacted] is bad"},
      {"sk-ant-api03-abcdefghijklmnopqrstuv", "[redacted]"},
      {"AIzaSyA1234567890abcdefghijklmnop", "[redacted]"},
      {"id AKIAIOSFODNN7EXAMPLE!", "id [redacted]!"},
      {"Authorization: Bearer eyJhbGciOi.J9abc/def+g=", "Authorization: Bearer [redacted]"},
      {"mlx-AbCdEfGhIjKlMnOpQrStUv", "[redacted]"},
      // Not credentials: short tails, prefixes inside words.
      {"risk-assessment-for-the-whole-team", "risk-assessment-for-the-whole-team"},
      {"sk-short", "sk-short"},
      {"Bearer x", "Bearer x"},
      {"task-abcdefghijklmnopqrstuvwxyz", "task-abcdefghijklmnopqrstuvwxyz"},
  };
  for (const auto& c : cases) {
    std::string s = c.in;
    scrub(s);
    CHECK_MESSAGE(s == c.out, c.in);
  }
}

TEST_CASE("scrub: short values are not registered and text without secrets is unchanged") {
  add_secret("short");
  std::string s = "a short message, nothing secret";
  CHECK_FALSE(scrub(s));
  CHECK(s == "a short message, nothing secret");
  std::string empty;
  CHECK_FALSE(scrub(empty));
}

TEST_CASE("scrub: concurrent readers while secrets are added") {
  std::atomic<bool> stop{false};
  std::atomic<int> leaks{0};
  add_secret("concurrent-secret-base-0");
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&] {
      while (!stop.load()) {
        std::string s = "x concurrent-secret-base-0 y";
        scrub(s);
        if (s.find("concurrent-secret-base-0") != std::string::npos) leaks.fetch_add(1);
      }
    });
  for (int i = 1; i < 200; ++i) add_secret("concurrent-secret-more-" + std::to_string(i));
  stop = true;
  for (auto& r : readers) r.join();
  CHECK(leaks.load() == 0);
  std::string s = "concurrent-secret-more-199";
  scrub(s);
  CHECK(s == "[redacted]");
}
