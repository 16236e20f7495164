// The contract every control store backend keeps (include/modelux/control.hpp,
// docs/control-plane.md "The store interfaces"), as checks on a backend: the SQLite tests
// (unit-server-control.cpp) and the PostgreSQL tests (unit-server-control-pg.cpp) run the
// same functions on their own stores. Each takes a fresh, empty store.
#pragma once

#include <doctest/doctest.h>

#include <functional>
#include <string>

#include "modelux/control.hpp"

namespace modelux::test {

inline WallTime at_s(std::int64_t s) { return WallTime{std::chrono::seconds{s}}; }

inline ObjectVersion cfg_version(std::string name, Json doc, std::int64_t t = 1000) {
  ObjectVersion v;
  v.kind.assign(kKindConfig.data(), kKindConfig.size());
  v.name = std::move(name);
  v.author = "alice";
  v.at = at_s(t);
  v.message = "m";
  v.document = std::move(doc);
  return v;
}

inline AuditEntry entry(std::string action, std::string object, std::int64_t t = 1000, std::string actor = "alice") {
  AuditEntry a;
  a.at = at_s(t);
  a.actor = std::move(actor);
  a.from = "127.0.0.1";
  a.action = std::move(action);
  a.object = std::move(object);
  return a;
}

inline void contract_versions_and_conflicts(ControlStore& s) {
  ConfigStore& cs = *s.configs;
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
  auto got = cs.get(kKindConfig, "prod", 1);
  REQUIRE(got);
  REQUIRE(*got);
  CHECK((*got)->document == Json{{"model", "a"}});
  CHECK_FALSE(*cs.get(kKindConfig, "prod", 9));
  auto heads = cs.heads(kKindConfig);
  REQUIRE(heads);
  CHECK(heads->size() == 2);
  // The refused commits wrote no audit entry either (one transaction).
  auto rows = s.audit->query(AuditQuery{});
  REQUIRE(rows);
  CHECK(rows->size() == 3);
  CHECK((*rows)[1].before_hash == v1->hash);
  CHECK((*rows)[1].after_hash == v2->hash);
  // Bookkeeping and the change counter.
  auto c0 = cs.change_counter();
  CHECK_FALSE(*cs.meta("seeded_at"));
  REQUIRE(cs.set_meta("seeded_at", "123"));
  CHECK(**cs.meta("seeded_at") == "123");
  CHECK(cs.change_counter() != c0);
}

inline void contract_deletion(ControlStore& s) {
  ConfigStore& cs = *s.configs;
  REQUIRE(cs.commit(cfg_version("w", Json{{"url", "x"}}), 0, entry("webhook.create", "webhook:w")));
  auto del = cfg_version("w", Json());
  REQUIRE(cs.commit(del, 1, entry("webhook.remove", "webhook:w")));
  CHECK(cs.heads(kKindConfig)->empty());
  auto head = cs.head(kKindConfig, "w");
  REQUIRE(head);
  CHECK((*head)->deleted());
  CHECK(cs.commit(cfg_version("w", Json{{"url", "y"}}), 0, entry("webhook.create", "webhook:w"))->version == 3);
}

inline void contract_audit_queries(ControlStore& s) {
  AuditLog& log = *s.audit;
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
  AuditQuery by_action;
  by_action.action = "key.create";
  CHECK(log.query(by_action)->front().actor == "bob");
  AuditQuery cursor;
  cursor.after_seq = 2;
  CHECK(log.query(cursor)->front().seq == 3);
  AuditQuery limited;
  limited.limit = 2;
  CHECK(log.query(limited)->size() == 2);
  auto v = log.verify();
  REQUIRE(v);
  CHECK(v->ok);
  CHECK(v->checked == 3);
}

inline void contract_deliveries(ControlStore& s) {
  DeliveryLog& d = *s.deliveries;
  REQUIRE(d.set_webhook_secret("wh_1", "whsec_AAAA"));
  CHECK(*d.webhook_secret("wh_1") == "whsec_AAAA");
  CHECK(d.all_webhook_secrets()->size() == 1);
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
  CHECK((*got)->delivered == at_s(150));
  CHECK(d.deliveries("wh_1", 10)->size() == 2);
  CHECK(d.deliveries("", 1)->size() == 1);
}

/// Tampering with the stored log: `exec` runs SQL on the store's database directly (true = it
/// succeeded); `open` opens the same store again. `disable` is the SQL that lifts the
/// append-only guard on the audit table (a tamperer with write access does that first).
inline void contract_audit_tamper(const std::function<ControlStore()>& open, const std::function<bool(const std::string&)>& exec,
                                  const std::string& audit_table, const std::string& disable) {
  {
    auto s = open();
    for (int i = 0; i < 5; ++i) REQUIRE(s.audit->append(entry("config.update", "config:p", 100 + i)));
    CHECK(s.audit->verify()->ok);
  }
  auto verify = [&] {
    auto s = open();
    auto v = s.audit->verify();
    REQUIRE(v);
    return *v;
  };
  // The guard refuses edits through SQL.
  CHECK_FALSE(exec("UPDATE " + audit_table + " SET actor = 'mallory' WHERE seq = 2"));
  CHECK_FALSE(exec("DELETE FROM " + audit_table + " WHERE seq = 2"));
  SUBCASE("edited") {
    REQUIRE(exec(disable + "; UPDATE " + audit_table + " SET detail = 'nothing to see' WHERE seq = 3"));
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.first_bad_seq == 3);
    CHECK(v.problem.find("edited") != std::string::npos);
  }
  SUBCASE("edited with its hash recomputed breaks the next link") {
    // Recomputing entry 3's own hash is not enough: entry 4 names the old one.
    AuditEntry e;
    {
      auto s = open();
      e = (*s.audit->query(AuditQuery{}))[2];
    }
    e.actor = "mallory";
    std::string h = audit_entry_hash(e);
    REQUIRE(exec(disable + "; UPDATE " + audit_table + " SET actor = 'mallory', hash = '" + h + "' WHERE seq = 3"));
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.first_bad_seq == 4);
  }
  SUBCASE("deleted") {
    REQUIRE(exec(disable + "; DELETE FROM " + audit_table + " WHERE seq = 2"));
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.first_bad_seq == 2);
    CHECK(v.problem.find("missing") != std::string::npos);
  }
  SUBCASE("the newest deleted") {
    REQUIRE(exec(disable + "; DELETE FROM " + audit_table + " WHERE seq = 5"));
    auto v = verify();
    CHECK_FALSE(v.ok);
    CHECK(v.problem.find("entry 5") != std::string::npos);
  }
}

}  // namespace modelux::test
