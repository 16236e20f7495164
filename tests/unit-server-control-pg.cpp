// The PostgreSQL control store and key store against a real PostgreSQL server started by the
// test (tests/support/postgres_server.hpp): the same backend contract as SQLite
// (tests/support/control_store_contract.hpp), the audit chain under concurrent writers, the
// change hub (LISTEN/NOTIFY, the periodic counter check that heals a missed notification, a
// killed listener), a server that goes away and comes back, and managed keys shared by two
// "instances" (two hubs on one database).
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "modelux/control.hpp"
#include "modelux/keys.hpp"
#include "server/pg_fleet.hpp"
#include "support/control_store_contract.hpp"
#include "support/postgres_server.hpp"

using namespace modelux;
using modelux::test::PostgresServer;

namespace {

// One server per test process; every test (and every pass through a SUBCASE) gets its own
// fresh database on it.
PostgresServer& server() {
  static PostgresServer s;
  return s;
}

std::string fresh_db() {
  static int n = 0;
  std::string name = "t";
  name += std::to_string(::getpid());
  name += "_";
  name += std::to_string(++n);
  server().psql("CREATE DATABASE " + name);
  return server().url(name);
}

ControlStore open_pg(const std::string& url, Millis reconcile = Millis{2000}) {
  auto s = open_postgres_control_store(url, reconcile);
  REQUIRE_MESSAGE(s, (s ? std::string() : s.error().message));
  return *s;
}

// Waits (bounded) until `pred` holds, woken by a store's watch() callback: event-driven, the
// bound only turns a hang into a failure.
class ChangeWaiter {
 public:
  void notify() {
    std::lock_guard lk(mu_);
    ++changes_;
    cv_.notify_all();
  }
  bool wait_for(const std::function<bool()>& pred, std::chrono::seconds bound = std::chrono::seconds(15)) {
    std::unique_lock lk(mu_);
    auto until = std::chrono::steady_clock::now() + bound;
    while (!pred()) {
      if (cv_.wait_until(lk, until) == std::cv_status::timeout) return pred();
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int changes_ = 0;
};

std::string db_name(const std::string& url) {
  std::string rest = url.substr(url.find(":///") + 4);
  return rest.substr(0, rest.find('?'));
}

}  // namespace

TEST_CASE("PostgreSQL ConfigStore: versions are numbered per object and a stale expected version is a conflict") {
  auto s = open_pg(fresh_db());
  test::contract_versions_and_conflicts(s);
}

TEST_CASE("PostgreSQL ConfigStore: a deletion is a version and the object can be created again") {
  auto s = open_pg(fresh_db());
  test::contract_deletion(s);
}

TEST_CASE("PostgreSQL AuditLog: queries by time, actor, object prefix and cursor") {
  auto s = open_pg(fresh_db());
  test::contract_audit_queries(s);
}

TEST_CASE("PostgreSQL DeliveryLog: due deliveries, updates and secrets") {
  auto s = open_pg(fresh_db());
  test::contract_deliveries(s);
}

TEST_CASE("PostgreSQL AuditLog: verify detects an edited, a deleted and a truncated entry") {
  const std::string url = fresh_db();
  const std::string db = db_name(url);
  auto open = [&] { return open_pg(url); };
  auto run = [&](const std::string& sql) {
    try {
      server().psql(sql, db);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  };
  test::contract_audit_tamper(open, run, "modelux_audit", "ALTER TABLE modelux_audit DISABLE TRIGGER USER");
}

TEST_CASE("PostgreSQL ConfigStore: concurrent writers from two instances keep one audit chain and gapless versions") {
  const std::string url = fresh_db();
  // Two stores with their own connections and hubs (a second URL spelling = another instance).
  auto a = open_pg(url);
  auto b = open_pg(url + "&connect_timeout=4");
  constexpr int kPerWriter = 25;
  std::atomic<int> conflicts{0}, failures{0};
  auto writer = [&](ControlStore* s, const std::string& who) {
    for (int i = 0; i < kPerWriter; ++i) {
      // Half on one shared object (versions interleave), half on the writer's own.
      std::string name = i % 2 ? "shared" : who;
      std::string object = "config:";
      object += name;
      Json doc = Json::object();
      doc["by"] = who.c_str();
      doc["i"] = i;
      auto r = s->configs->commit(test::cfg_version(name, std::move(doc)), std::nullopt,
                                  test::entry("config.update", object, 1000 + i, who));
      if (!r) (r.error().code == kVersionConflict ? conflicts : failures)++;
    }
  };
  std::vector<std::thread> ts;
  ts.emplace_back(writer, &a, "a1");
  ts.emplace_back(writer, &a, "a2");
  ts.emplace_back(writer, &b, "b1");
  ts.emplace_back(writer, &b, "b2");
  for (auto& t : ts) t.join();
  CHECK(failures == 0);
  CHECK(conflicts == 0);  // no expected version given: every write lands
  auto v = b.audit->verify();
  REQUIRE(v);
  CHECK_MESSAGE(v->ok, v->problem);
  CHECK(v->checked == 4 * kPerWriter);
  auto hist = a.configs->history(kKindConfig, "shared", 1000);
  REQUIRE(hist);
  REQUIRE(hist->size() == 4 * (kPerWriter / 2));  // the odd i of each writer
  for (std::size_t i = 0; i < hist->size(); ++i) CHECK((*hist)[i].version == static_cast<std::int64_t>(hist->size() - i));
  // Each audit entry's before-hash is the previous version's hash of its object.
  AuditQuery q;
  q.object = "config:shared";
  auto rows = a.audit->query(q);
  REQUIRE(rows);
  REQUIRE(rows->size() == hist->size());
  for (std::size_t i = 1; i < rows->size(); ++i) CHECK((*rows)[i].before_hash == (*rows)[i - 1].after_hash);
}

TEST_CASE("PostgreSQL ConfigStore: optimistic concurrency across instances gives exactly one winner") {
  const std::string url = fresh_db();
  auto a = open_pg(url);
  auto b = open_pg(url + "&connect_timeout=4");
  REQUIRE(a.configs->commit(test::cfg_version("p", Json{{"v", 0}}), 0, test::entry("config.update", "config:p")));
  std::atomic<int> won{0}, lost{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 6; ++i)
    ts.emplace_back([&, i] {
      ControlStore& s = i % 2 ? a : b;
      auto r = s.configs->commit(test::cfg_version("p", Json{{"v", i + 1}}), 1, test::entry("config.update", "config:p"));
      if (r) ++won;
      else if (r.error().code == kVersionConflict) ++lost;
    });
  for (auto& t : ts) t.join();
  CHECK(won == 1);
  CHECK(lost == 5);
  CHECK(a.audit->verify()->ok);
}

TEST_CASE("PostgreSQL change hub: another instance hears a write through NOTIFY") {
  const std::string url = fresh_db();
  auto a = open_pg(url);
  // Another hub: only LISTEN/NOTIFY (or its counter check, set long here) can tell it.
  auto b = open_pg(url + "&connect_timeout=4", Millis{60'000});
  ChangeWaiter w;
  auto id = b.configs->watch([&] { w.notify(); });
  CHECK(id != 0);
  REQUIRE(w.wait_for([&] { return pg::PgHub::for_url(url + "&connect_timeout=4")->listening(); }));
  auto before = b.configs->change_counter();
  REQUIRE(a.configs->commit(test::cfg_version("p", Json{{"v", 1}}), 0, test::entry("config.update", "config:p")));
  CHECK(w.wait_for([&] { return b.configs->change_counter() != before; }));
  CHECK((*b.configs->head(kKindConfig, "p"))->version == 1);
  b.configs->unwatch(id);
}

TEST_CASE("PostgreSQL change hub: the periodic check heals a missed notification and a killed listener") {
  const std::string url = fresh_db();
  const std::string url_b = url + "&connect_timeout=4";
  auto a = open_pg(url);
  auto b = open_pg(url_b, Millis{200});
  auto hub = pg::PgHub::for_url(url_b);
  ChangeWaiter w;
  auto id = b.configs->watch([&] { w.notify(); });
  REQUIRE(w.wait_for([&] { return hub->listening(); }));
  SUBCASE("a change without NOTIFY") {
    // What a lost notification looks like: the counter row moved, nobody was told.
    // The hub's first check after LISTEN is a forced one (anything may have been missed
    // while connecting) and is not counted as a heal: a change that lands before it is taken
    // by it. So the missed change is made until a periodic check is what finds it (twice at
    // most: after the first, the forced check has run).
    bool healed_one = false;
    for (int round = 0; round < 2 && !healed_one; ++round) {
      auto before = b.configs->change_counter();
      auto healed = hub->healed();
      server().psql("UPDATE modelux_changes SET n = n + 1 WHERE id = 1", db_name(url));
      CHECK(w.wait_for([&] { return b.configs->change_counter() != before; }));
      healed_one = hub->healed() > healed;
    }
    CHECK(healed_one);
  }
  SUBCASE("the listener connection killed") {
    std::string killed = server().psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'modelux-listen' AND datname = '" +
            db_name(url) + "'",
        db_name(url));
    CHECK(std::stoi(killed) >= 1);
    auto before = b.configs->change_counter();
    REQUIRE(a.configs->commit(test::cfg_version("p", Json{{"v", 2}}), std::nullopt, test::entry("config.update", "config:p")));
    CHECK(w.wait_for([&] { return b.configs->change_counter() != before && hub->listening(); }));
    CHECK((*b.configs->head(kKindConfig, "p"))->version == 1);
  }
  b.configs->unwatch(id);
}

TEST_CASE("PostgreSQL stores: a server that goes away gives errors, never a hang, and the stores recover") {
  const std::string url = fresh_db();
  auto s = open_pg(url, Millis{200});
  REQUIRE(s.configs->commit(test::cfg_version("p", Json{{"v", 1}}), 0, test::entry("config.update", "config:p")));
  auto keys = KeyStore::open(url);
  REQUIRE(keys);
  server().stop();
  auto h = s.configs->head(kKindConfig, "p");
  CHECK_FALSE(h);
  if (!h) CHECK(h.error().kind == ErrorKind::io);
  CHECK_FALSE((*keys)->list());
  auto hub = pg::PgHub::for_url(url);
  server().start();
  // The connections come back on the next call; the hub reconnects and reloads once.
  ChangeWaiter w;
  auto id = s.configs->watch([&] { w.notify(); });
  CHECK(w.wait_for([&] { return hub->listening(); }));
  auto again = s.configs->head(kKindConfig, "p");
  REQUIRE(again);
  CHECK((*again)->version == 1);
  CHECK((*keys)->list());
  s.configs->unwatch(id);
}

TEST_CASE("PostgreSQL KeyStore: a key created on one instance authenticates on another, a revocation reaches both") {
  const std::string url = fresh_db();
  auto a = KeyStore::open(url);
  REQUIRE(a);
  auto b = KeyStore::open(url + "&connect_timeout=4");
  REQUIRE(b);
  auto hub_b = pg::PgHub::for_url(url + "&connect_timeout=4");
  ChangeWaiter w;
  auto hub_a = pg::PgHub::for_url(url);
  auto sub = hub_b->subscribe([&] { w.notify(); });
  auto sub_a = hub_a->subscribe([&] { w.notify(); });
  REQUIRE(w.wait_for([&] { return hub_b->listening(); }));
  auto now = std::chrono::system_clock::now();
  auto before = (*b)->change_counter();
  ManagedKey spec;
  spec.project = "p1";
  spec.limits.models = {"m1", "m2"};
  spec.limits.rpm = 7;
  auto made = (*a)->create(spec, now);
  REQUIRE(made);
  CHECK(w.wait_for([&] { return (*b)->change_counter() != before; }));
  auto act = (*b)->active(now);
  REQUIRE(act);
  REQUIRE(act->size() == 1);
  CHECK(act->front().first == hash_api_key(made->secret));
  CHECK(act->front().second.limits.models == std::vector<std::string>{"m1", "m2"});
  CHECK(act->front().second.limits.rpm == 7);
  before = (*a)->change_counter();
  REQUIRE(*(*b)->revoke(made->key.id, now));
  CHECK_FALSE(*(*b)->revoke(made->key.id, now));  // already revoked
  CHECK(w.wait_for([&] { return (*a)->change_counter() != before; }));
  CHECK((*a)->active(now)->empty());
  CHECK((*a)->list()->front().revoked.has_value());
  hub_b->unsubscribe(sub);
  hub_a->unsubscribe(sub_a);
}
