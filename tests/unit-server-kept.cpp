// The kept-response store (src/server/kept.hpp): rows by id with a TTL, written once, expired
// rows invisible and purged, and a file that outlives the process. Time is passed in, so expiry
// is tested without waiting.
#include <doctest/doctest.h>

#include <filesystem>

#include <unistd.h>

#include "server/kept.hpp"

using namespace modelux;
using namespace modelux::proxy;

namespace {

std::string temp_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("modelux-unit-kept-") + name + "-" + std::to_string(::getpid()) + ".db");
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + suffix);
  return p.string();
}

KeptRecord record(std::string id, std::int64_t created, std::int64_t ttl_ms) {
  KeptRecord r;
  r.id = std::move(id);
  r.key_id = "proj-a";
  r.project = "alpha";
  r.status = 200;
  r.body = std::string("{\"ok\":true,\"nul\":\"a\0b\"}", 24);  // bytes kept as given
  r.created_ms = created;
  r.expires_ms = created + ttl_ms;
  return r;
}

}  // namespace

TEST_CASE("KeptStore: a stored answer is read back until it expires") {
  KeptStore store("");  // in memory
  REQUIRE(store.put(record("req_one", 1000, 500), 1000));
  auto got = store.get("req_one", 1499);
  REQUIRE(got);
  REQUIRE(got->has_value());
  CHECK((*got)->body == record("req_one", 1000, 500).body);
  CHECK((*got)->key_id == "proj-a");
  CHECK((*got)->project == "alpha");
  CHECK((*got)->expires_ms == 1500);
  auto gone = store.get("req_one", 1500);
  REQUIRE(gone);
  CHECK_FALSE(gone->has_value());
  auto unknown = store.get("req_none", 0);
  REQUIRE(unknown);
  CHECK_FALSE(unknown->has_value());
}

TEST_CASE("KeptStore: an id is written once and expired rows are purged by the next write") {
  KeptStore store("");
  REQUIRE(store.put(record("req_a", 0, 100), 0));
  CHECK_FALSE(store.put(record("req_a", 0, 100), 50));  // the same id again: refused, not replaced
  // At t=200 req_a has expired: the next write deletes it, so its id is free again.
  REQUIRE(store.put(record("req_b", 200, 100), 200));
  REQUIRE(store.put(record("req_a", 200, 100), 200));
  auto a = store.get("req_a", 250);
  REQUIRE(a);
  CHECK(a->has_value());
}

TEST_CASE("KeptStore: the file outlives the store object") {
  std::string path = temp_db("reopen");
  {
    KeptStore store(path);
    REQUIRE(store.put(record("req_file", 10, 1000), 10));
  }
  KeptStore again(path);
  auto got = again.get("req_file", 20);
  REQUIRE(got);
  REQUIRE(got->has_value());
  CHECK((*got)->status == 200);
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
}

TEST_CASE("KeptStore: an unopenable path is an io error naming the store") {
  KeptStore store("/nonexistent-dir-for-modelux/kept.db");
  auto r = store.put(record("req_x", 0, 10), 0);
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == ErrorKind::io);
  CHECK(r.error().message.find("kept-response store") != std::string::npos);
}
