// The control store (SQLite): versions with optimistic concurrency, the hash-chained audit log
// and its verification against direct edits of the file, the delivery log; JSON Patch and text
// diffs; Standard Webhooks signatures.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <random>

#include "modelux/control.hpp"
#include "modelux/config.hpp"
#include "modelux/router.hpp"
#include "server/control_plane.hpp"
#include "support/control_store_contract.hpp"

using namespace modelux;

namespace {

std::string temp_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("modelux-control-") + name + "-" + std::to_string(::getpid()) + ".db");
  std::filesystem::remove(p);
  std::filesystem::remove(p.string() + "-wal");
  std::filesystem::remove(p.string() + "-shm");
  return p.string();
}

// Applies JSON Patch ops (add / remove / replace) the way RFC 6902 says, to check json_diff.
Json apply_patch(Json doc, const Json& ops) {
  for (const auto& op : ops) {
    Json::json_pointer ptr(op["path"].get<std::string>());
    std::string kind = op["op"];
    if (kind == "replace") {
      doc[ptr] = op["value"];
    } else if (kind == "add") {
      Json& parent = ptr.empty() ? doc : doc[ptr.parent_pointer()];
      if (parent.is_array()) parent.insert(parent.begin() + std::stoll(ptr.back()), op["value"]);
      else doc[ptr] = op["value"];
    } else if (kind == "remove") {
      Json& parent = doc[ptr.parent_pointer()];
      if (parent.is_array()) parent.erase(static_cast<std::size_t>(std::stoll(ptr.back())));
      else parent.erase(ptr.back());
    }
  }
  return doc;
}

}  // namespace

// The backend contract (tests/support/control_store_contract.hpp), on SQLite; the same
// checks run on PostgreSQL in unit-server-control-pg.cpp.

TEST_CASE("ConfigStore: versions are numbered per object and a stale expected version is a conflict") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  test::contract_versions_and_conflicts(*s);
}

TEST_CASE("ConfigStore: a deletion is a version and the object can be created again") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  test::contract_deletion(*s);
}

TEST_CASE("AuditLog: queries by time, actor, object prefix and cursor") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  test::contract_audit_queries(*s);
}

TEST_CASE("AuditLog: verify detects an edited, a deleted and a truncated entry in the file") {
  const std::string path = temp_db("audit");
  auto open = [&] {
    auto s = open_sqlite_control_store(path);
    REQUIRE(s);
    return *s;
  };
  auto run = [&](const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    bool ok = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
    sqlite3_close(db);
    return ok;
  };
  // The triggers are recreated on every open: a tamperer drops them first.
  test::contract_audit_tamper(open, run, "audit", "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete");
  std::filesystem::remove(path);
}

TEST_CASE("DeliveryLog: due deliveries, updates and secrets") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  test::contract_deliveries(*s);
}

TEST_CASE("json_diff: the ops turn the old document into the new one") {
  Json a = {{"strategy", "fallback"}, {"attempts", {{{"model", "a"}}, {{"model", "b"}}, {{"model", "c"}}}}, {"x/y", 1}, {"t~", 2}};
  Json b = {{"strategy", "fallback"}, {"attempts", {{{"model", "a"}, {"timeout_ms", 5}}}}, {"retry_on", {"429"}}, {"t~", 3}};
  Json ops = json_diff(a, b);
  CHECK(apply_patch(a, ops) == b);
  CHECK(json_diff(a, a).empty());
  CHECK(json_diff(Json{{"model", "a"}}, Json{{"model", "b"}}) == Json::parse(R"([{"op":"replace","path":"/model","value":"b"}])"));
  // Random documents: the patch always reproduces the target.
  std::mt19937 rng(7);
  auto random_doc = [&](auto& self, int depth) -> Json {
    int k = static_cast<int>(rng() % (depth > 2 ? 3 : 5));
    if (k == 0) return static_cast<int>(rng() % 4);
    if (k == 1) return std::string(1, static_cast<char>('a' + rng() % 3));
    if (k == 2) return nullptr;
    if (k == 3) {
      Json arr = Json::array();
      for (unsigned i = 0, n = rng() % 4; i < n; ++i) arr.push_back(self(self, depth + 1));
      return arr;
    }
    Json obj = Json::object();
    for (unsigned i = 0, n = rng() % 4; i < n; ++i) obj[std::string(1, static_cast<char>('p' + rng() % 4))] = self(self, depth + 1);
    return obj;
  };
  for (int i = 0; i < 300; ++i) {
    Json x = random_doc(random_doc, 0), y = random_doc(random_doc, 0);
    if (!x.is_object() || !y.is_object()) continue;
    CHECK(apply_patch(x, json_diff(x, y)) == y);
  }
}

TEST_CASE("text_diff: unified hunks with removals before additions") {
  Json a = {{"model", "gpt-4o-mini"}, {"strategy", "single"}};
  Json b = {{"model", "gpt-4o"}, {"strategy", "single"}};
  std::string d = text_diff(a, b, "@fast v1", "@fast v2");
  CHECK(d == "--- @fast v1\n+++ @fast v2\n@@ -1,4 +1,4 @@\n {\n-  \"model\": \"gpt-4o-mini\",\n+  \"model\": \"gpt-4o\",\n   \"strategy\": \"single\"\n }\n");
  CHECK(text_diff(a, a, "x", "y") == "--- x\n+++ y\n");
}

TEST_CASE("sign_webhook: the Standard Webhooks reference vector") {
  // From the Standard Webhooks specification's test suite.
  auto sig = sign_webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, R"({"test": 2432232314})");
  REQUIRE(sig);
  CHECK(*sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  const std::string secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const std::string body = R"({"test": 2432232314})";
  CHECK(verify_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, "v1,bogus " + *sig, 1614265400).has_value());
  CHECK_FALSE(verify_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body + " ", *sig, 1614265400));
  CHECK_FALSE(verify_webhook(secret, "msg_other", "1614265330", body, *sig, 1614265400));
  CHECK_FALSE(verify_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, *sig, 1614265330 + 301));  // too old
  CHECK_FALSE(verify_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "abc", body, *sig, 1614265400));
  CHECK_FALSE(sign_webhook("whsec_not base64!", "m", 1, "b"));
  auto fresh = new_webhook_secret();
  CHECK(fresh.starts_with("whsec_"));
  CHECK(sign_webhook(fresh, "m", 1, "b"));
}

TEST_CASE("normalize_webhook_spec: defaults and errors with their JSON path") {
  auto ok = normalize_webhook_spec(Json{{"url", "https://example.com/h"}});
  REQUIRE(ok);
  CHECK((*ok)["events"] == Json::array({"*"}));
  CHECK((*ok)["enabled"] == true);
  CHECK(normalize_webhook_spec(Json{{"url", "ftp://x"}}).error().path == "$.url");
  CHECK(normalize_webhook_spec(Json{{"url", "http://x"}, {"events", {"config.changed", "nope"}}}).error().path == "$.events[1]");
  CHECK(normalize_webhook_spec(Json{{"url", "http://x"}, {"extra", 1}}).error().path == "$.extra");
}

TEST_CASE("parse_if_match: quoted, weak and bare versions") {
  using modelux::proxy::parse_if_match;
  CHECK(parse_if_match("\"3\"") == 3);
  CHECK(parse_if_match("W/\"3\"") == 3);
  CHECK(parse_if_match("3") == 3);
  CHECK_FALSE(parse_if_match("\"x\""));
  CHECK_FALSE(parse_if_match(""));
  CHECK(modelux::proxy::version_etag(7) == "\"7\"");
}

TEST_CASE("Router: set_routing_config with a version pins it, and a refused config changes nothing") {
  auto c = Config::embedded_defaults();
  REQUIRE(c);
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(*c, ro);
  REQUIRE(r);
  auto pinned = (*r)->set_routing_config("production", Json{{"strategy", "single"}, {"model", "gpt-4o"}}, 7);
  REQUIRE(pinned);
  CHECK(*pinned == 7);
  CHECK((*r)->routing_config("production")->version() == 7);
  auto bad = (*r)->set_routing_config("production", Json{{"strategy", "single"}, {"model", "no-such-model"}}, 8);
  REQUIRE_FALSE(bad);
  CHECK((*r)->routing_config("production")->version() == 7);
  // Another slug's change keeps the pinned version; the unpinned form bumps from it.
  REQUIRE((*r)->set_routing_config("other", Json{{"strategy", "single"}, {"model", "gpt-4o-mini"}}));
  CHECK((*r)->routing_config("production")->version() == 7);
  CHECK(*(*r)->set_routing_config("production", Json{{"strategy", "single"}, {"model", "gpt-4o-mini"}}) == 8);
}

TEST_CASE("breaker_events: opened, closed, and a trip that closed between two looks") {
  using modelux::proxy::breaker_events;
  modelux::proxy::BreakerMemory seen;
  auto state = [](std::string breaker, int trips) {
    return Json{{"targets", Json::array({Json{{"target", "openai/gpt-4o"}, {"breaker", breaker}, {"trips", trips}, {"why_open", "5xx"}}})}};
  };
  auto names = [](const std::vector<std::pair<std::string, Json>>& ev) {
    std::vector<std::string> out;
    for (const auto& e : ev) out.push_back(e.first);
    return out;
  };
  CHECK(names(breaker_events(state("closed", 0), seen)).empty());
  auto opened = breaker_events(state("open", 1), seen);
  REQUIRE(names(opened) == std::vector<std::string>{"breaker.opened"});
  CHECK(opened[0].second["target"] == "openai/gpt-4o");
  CHECK(opened[0].second["why"] == "5xx");
  CHECK(names(breaker_events(state("half_open", 1), seen)).empty());
  CHECK(names(breaker_events(state("open", 2), seen)) == std::vector<std::string>{"breaker.opened"});  // re-trip from half-open
  CHECK(names(breaker_events(state("closed", 2), seen)) == std::vector<std::string>{"breaker.closed"});
  CHECK(names(breaker_events(state("closed", 2), seen)).empty());
  CHECK(names(breaker_events(state("closed", 3), seen)) == std::vector<std::string>{"breaker.opened", "breaker.closed"});
}
