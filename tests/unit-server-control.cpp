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

using namespace modelux;

namespace {

std::string temp_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("modelux-control-") + name + "-" + std::to_string(::getpid()) + ".db");
  std::filesystem::remove(p);
  std::filesystem::remove(p.string() + "-wal");
  std::filesystem::remove(p.string() + "-shm");
  return p.string();
}

WallTime at_s(std::int64_t s) { return WallTime{std::chrono::seconds{s}}; }

ObjectVersion cfg_version(std::string name, Json doc, std::int64_t t = 1000) {
  ObjectVersion v;
  v.kind = std::string(kKindConfig);
  v.name = std::move(name);
  v.author = "alice";
  v.at = at_s(t);
  v.message = "m";
  v.document = std::move(doc);
  return v;
}

AuditEntry entry(std::string action, std::string object, std::int64_t t = 1000, std::string actor = "alice") {
  AuditEntry a;
  a.at = at_s(t);
  a.actor = std::move(actor);
  a.from = "127.0.0.1";
  a.action = std::move(action);
  a.object = std::move(object);
  return a;
}

void exec(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
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

TEST_CASE("ConfigStore: versions are numbered per object and a stale expected version is a conflict") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  ConfigStore& cs = *s->configs;
  auto v1 = cs.commit(cfg_version("prod", Json{{"model", "a"}}), 0, entry("config.update", "config:prod"));
  REQUIRE(v1);
  CHECK(v1->version == 1);
  CHECK(v1->hash == document_hash(Json{{"model", "a"}}));
  auto again = cs.commit(cfg_version("prod", Json{{"model", "b"}}), 0, entry("config.update", "config:prod"));
  REQUIRE_FALSE(again);
  CHECK(again.error().code == kVersionConflict);
  auto v2 = cs.commit(cfg_version("prod", Json{{"model", "b"}}), 1, entry("config.update", "config:prod"));
  REQUIRE(v2);
  CHECK(v2->version == 2);
  auto stale = cs.commit(cfg_version("prod", Json{{"model", "c"}}), 1, entry("config.update", "config:prod"));
  REQUIRE_FALSE(stale);
  CHECK(stale.error().code == kVersionConflict);
  CHECK(cs.commit(cfg_version("other", Json{{"model", "x"}}), std::nullopt, entry("config.update", "config:other"))->version == 1);
  auto hist = cs.history(kKindConfig, "prod", 10);
  REQUIRE(hist);
  REQUIRE(hist->size() == 2);
  CHECK((*hist)[0].document == Json{{"model", "b"}});
  auto heads = cs.heads(kKindConfig);
  REQUIRE(heads);
  CHECK(heads->size() == 2);
  // The refused commits wrote no audit entry either (one transaction).
  auto rows = s->audit->query(AuditQuery{});
  REQUIRE(rows);
  CHECK(rows->size() == 3);
  CHECK((*rows)[1].before_hash == v1->hash);
  CHECK((*rows)[1].after_hash == v2->hash);
}

TEST_CASE("ConfigStore: a deletion is a version and the object can be created again") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  ConfigStore& cs = *s->configs;
  REQUIRE(cs.commit(cfg_version("w", Json{{"url", "x"}}), 0, entry("webhook.create", "webhook:w")));
  auto del = cfg_version("w", Json());
  REQUIRE(cs.commit(del, 1, entry("webhook.remove", "webhook:w")));
  CHECK(cs.heads(kKindConfig)->empty());
  auto head = cs.head(kKindConfig, "w");
  REQUIRE(head);
  CHECK((*head)->deleted());
  CHECK(cs.commit(cfg_version("w", Json{{"url", "y"}}), 0, entry("webhook.create", "webhook:w"))->version == 3);
}

TEST_CASE("AuditLog: queries by time, actor, object prefix and cursor") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  AuditLog& log = *s->audit;
  REQUIRE(log.append(entry("config.update", "config:a", 100, "alice")));
  REQUIRE(log.append(entry("key.create", "key:k1", 200, "bob")));
  REQUIRE(log.append(entry("config.rollback", "config:b", 300, "alice")));
  AuditQuery q;
  q.since = at_s(150);
  CHECK(log.query(q)->size() == 2);
  q.until = at_s(250);
  CHECK(log.query(q)->size() == 1);
  AuditQuery by_actor;
  by_actor.actor = "alice";
  CHECK(log.query(by_actor)->size() == 2);
  AuditQuery by_kind;
  by_kind.object = "config:";
  CHECK(log.query(by_kind)->size() == 2);
  AuditQuery exact;
  exact.object = "config:b";
  CHECK(log.query(exact)->front().action == "config.rollback");
  AuditQuery cursor;
  cursor.after_seq = 2;
  CHECK(log.query(cursor)->front().seq == 3);
  auto v = log.verify();
  REQUIRE(v);
  CHECK(v->ok);
  CHECK(v->checked == 3);
}

TEST_CASE("AuditLog: verify detects an edited, a deleted and a truncated entry in the file") {
  const std::string path = temp_db("audit");
  {
    auto s = open_sqlite_control_store(path);
    REQUIRE(s);
    for (int i = 0; i < 5; ++i) REQUIRE(s->audit->append(entry("config.update", "config:p", 100 + i)));
    CHECK(s->audit->verify()->ok);
  }
  auto verify = [&] {
    auto s = open_sqlite_control_store(path);
    REQUIRE(s);
    auto v = s->audit->verify();
    REQUIRE(v);
    return *v;
  };
  // The triggers refuse edits through SQL; a tamperer drops them first.
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "UPDATE audit SET actor = 'mallory' WHERE seq = 2", nullptr, nullptr, nullptr) != SQLITE_OK);
    sqlite3_close(db);
  }
  exec(path, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;");
  SUBCASE("edited") {
    exec(path, "UPDATE audit SET detail = 'nothing to see' WHERE seq = 3");
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.first_bad_seq == 3);
    CHECK(v.problem.find("edited") != std::string::npos);
  }
  SUBCASE("edited with its hash recomputed breaks the next link") {
    // Recomputing entry 3's own hash is not enough: entry 4 names the old one.
    auto s = open_sqlite_control_store(path);
    auto rows = s->audit->query(AuditQuery{});
    AuditEntry e = (*rows)[2];
    e.actor = "mallory";
    std::string h = audit_entry_hash(e);
    s = fail(ErrorKind::internal, "closed");  // close the store (opening it recreates the triggers)
    exec(path, ("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory', hash = '" + h + "' WHERE seq = 3").c_str());
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.first_bad_seq == 4);
  }
  SUBCASE("deleted") {
    exec(path, "DELETE FROM audit WHERE seq = 2");
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.first_bad_seq == 2);
    CHECK(v.problem.find("missing") != std::string::npos);
  }
  SUBCASE("the newest deleted") {
    exec(path, "DELETE FROM audit WHERE seq = 5");
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.problem.find("entry 5") != std::string::npos);
  }
  std::filesystem::remove(path);
}

TEST_CASE("DeliveryLog: due deliveries, updates and secrets") {
  auto s = open_sqlite_control_store(":memory:");
  REQUIRE(s);
  DeliveryLog& d = *s->deliveries;
  REQUIRE(d.set_webhook_secret("wh_1", "whsec_AAAA"));
  CHECK(*d.webhook_secret("wh_1") == "whsec_AAAA");
  WebhookDelivery a;
  a.id = "msg_a";
  a.webhook_id = "wh_1";
  a.event = "config.changed";
  a.payload = "{}";
  a.created = at_s(100);
  a.next_attempt = at_s(100);
  REQUIRE(d.insert_delivery(a));
  WebhookDelivery b = a;
  b.id = "msg_b";
  b.next_attempt = at_s(500);
  REQUIRE(d.insert_delivery(b));
  CHECK(d.due_deliveries(at_s(200), 10)->size() == 1);
  a.status = "delivered";
  a.attempts = 1;
  a.delivered = at_s(150);
  REQUIRE(d.update_delivery(a));
  CHECK(d.due_deliveries(at_s(600), 10)->front().id == "msg_b");
  auto got = d.delivery("msg_a");
  REQUIRE(got);
  CHECK((*got)->status == "delivered");
  CHECK(d.deliveries("wh_1", 10)->size() == 2);
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
