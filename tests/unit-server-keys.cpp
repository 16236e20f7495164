// Managed keys: hash-only storage, revocation seen by another connection, expiry parsing.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "modelux/keys.hpp"

using namespace modelux;

namespace {
std::string temp_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("modelux-unit-keys-") + name + "-" + std::to_string(::getpid()) + ".db");
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + ext);
  return p.string();
}
std::string file_bytes(const std::string& path) {
  std::string all;
  for (const char* ext : {"", "-wal"}) {
    std::ifstream in(path + ext, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    all += ss.str();
  }
  return all;
}
}  // namespace

TEST_CASE("KeyStore: create stores only the hash, list never shows the secret") {
  std::string path = temp_db("hash");
  auto store = KeyStore::open(path);
  REQUIRE(store);
  ManagedKey spec;
  spec.project = "acme";
  spec.limits.rpm = 5;
  auto now = std::chrono::system_clock::now();
  auto c = (*store)->create(spec, now);
  REQUIRE(c);
  CHECK(c->secret.starts_with("mlx-"));
  CHECK(c->secret.size() == 47);
  CHECK(c->key.id.starts_with("key_"));
  CHECK(c->key.hint == c->secret.substr(0, 8));
  CHECK(file_bytes(path).find(c->secret) == std::string::npos);
  CHECK(file_bytes(path).find(hash_api_key(c->secret)) != std::string::npos);
  auto active = (*store)->active(now);
  REQUIRE(active);
  REQUIRE(active->size() == 1);
  CHECK(hashes_equal(active->front().first, hash_api_key(c->secret)));
  CHECK(active->front().second.limits.rpm == 5);
  CHECK(new_api_key_secret() != new_api_key_secret());
}

TEST_CASE("hash_api_key is SHA-256 in hex on every call and every thread") {
  // The digest context is kept per thread and reused: each call must still start from scratch.
  const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  const std::string empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const std::string million_a = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  for (int i = 0; i < 3; ++i) {
    CHECK(hash_api_key("abc") == abc);
    CHECK(hash_api_key("") == empty);
    CHECK(hash_api_key(std::string(1000000, 'a')) == million_a);
  }
  std::string other;
  std::thread([&] { other = hash_api_key("abc") + hash_api_key(""); }).join();
  CHECK(other == abc + empty);
}

TEST_CASE("KeyStore: a revocation through another connection moves the change counter") {
  std::string path = temp_db("revoke");
  auto proxy_side = KeyStore::open(path);
  auto cli_side = KeyStore::open(path);
  REQUIRE(proxy_side);
  REQUIRE(cli_side);
  auto now = std::chrono::system_clock::now();
  ManagedKey spec;
  spec.project = "acme";
  auto c = (*cli_side)->create(spec, now);
  REQUIRE(c);
  std::uint64_t before = (*proxy_side)->change_counter();
  auto r = (*cli_side)->revoke(c->key.id, now);
  REQUIRE(r);
  CHECK(*r);
  CHECK((*proxy_side)->change_counter() != before);
  CHECK((*proxy_side)->active(now)->empty());
  auto again = (*cli_side)->revoke(c->key.id, now);
  REQUIRE(again);
  CHECK_FALSE(*again);
}

TEST_CASE("KeyStore: an expired key is not active") {
  auto store = KeyStore::open("");
  REQUIRE(store);
  auto now = std::chrono::system_clock::now();
  ManagedKey spec;
  spec.project = "acme";
  spec.expires = now - std::chrono::seconds(1);
  REQUIRE((*store)->create(spec, now));
  CHECK((*store)->active(now)->empty());
  CHECK((*store)->list()->size() == 1);
}

TEST_CASE("parse_key_expiry: dates, date-times and durations") {
  auto now = std::chrono::system_clock::from_time_t(1'700'000'000);
  CHECK(*parse_key_expiry("30d", now) == now + std::chrono::hours(24 * 30));
  CHECK(*parse_key_expiry("12h", now) == now + std::chrono::hours(12));
  CHECK(std::chrono::system_clock::to_time_t(*parse_key_expiry("2026-01-31", now)) == 1'769'817'600);
  CHECK(std::chrono::system_clock::to_time_t(*parse_key_expiry("2026-01-31T12:00:00Z", now)) == 1'769'860'800);
  for (const char* bad : {"", "soon", "0d", "-3h", "2026-13-01", "2026-01-31T12:00:00", "12x"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_key_expiry(bad, now));
  }
}
