// Budgets persisted to a real SQLite file survive restarts.
#include <doctest/doctest.h>

#include <sqlite3.h>

#include <filesystem>

#include "modelux/budget.hpp"
#include "support/budget_support.hpp"

using namespace modelux;
using namespace std::chrono;

using modelux::testing::TempDb;

namespace {

const ModelInfo kPaid = modelux::testing::paid_model();

CallContext ctx(std::string user = "u1") {
  CallContext c;
  c.project = "acme";
  c.end_user = std::move(user);
  return c;
}

const Json kBudgets = Json::parse(R"([
  {"name":"acme-daily","scope":{"project":"acme"},"window":"daily","limit_usd":1},
  {"name":"per-user","scope":{"end_user":"*"},"window":"rolling","window_s":3600,"limit_usd":0.5}])");

std::unique_ptr<BudgetManager> open(const std::string& path, const Clock& clock, std::string instance = {}) {
  static const Catalog catalog;
  BudgetOptions o;
  o.sqlite_path = path;
  o.sync_interval = Millis{0};  // manual flush: deterministic
  o.instance_id = std::move(instance);
  auto m = BudgetManager::create(kBudgets, catalog, clock, o);
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().describe()));
  return std::move(*m);
}

void spend(BudgetManager& m, const Clock& clock, const CallContext& c, int tokens) {
  auto a = m.admit(c, &kPaid, tokens, 0, clock.now());
  REQUIRE(a.has_value());
  Usage u;
  u.prompt_tokens = tokens;
  m.settle(*a, tokens * 0.001, u, clock.now());
}

double spent(const BudgetManager& m, const Clock& clock, const std::string& name, const std::string& scope) {
  auto s = m.snapshot(clock.now());
  for (const auto& l : s["budgets"])
    if (l["name"] == name && l["scope"] == scope) return l["spent_usd"].get<double>();
  return -1;
}

}  // namespace

TEST_CASE("BudgetManager(SQLite): spend survives a restart") {
  TempDb db;
  ManualClock clock;
  {
    auto m = open(db.path, clock);
    spend(*m, clock, ctx("alice"), 300);
    spend(*m, clock, ctx("bob"), 100);
    REQUIRE(m->flush().has_value());
    spend(*m, clock, ctx("alice"), 50);  // not flushed explicitly: the destructor flushes
  }
  clock.advance(minutes(10));
  auto m = open(db.path, clock);
  CHECK(spent(*m, clock, "acme-daily", "project:acme") == doctest::Approx(0.45));
  CHECK(spent(*m, clock, "per-user", "end_user:alice") == doctest::Approx(0.35));
  CHECK(spent(*m, clock, "per-user", "end_user:bob") == doctest::Approx(0.1));
  // The reloaded spend is enforced.
  CHECK_FALSE(m->admit(ctx("alice"), &kPaid, 200, 0, clock.now()).has_value());
  CHECK(m->admit(ctx("alice"), &kPaid, 150, 0, clock.now()).has_value());
}

TEST_CASE("BudgetManager(SQLite): old windows are not reloaded") {
  TempDb db;
  ManualClock clock;
  {
    auto m = open(db.path, clock);
    spend(*m, clock, ctx("alice"), 300);
  }
  clock.advance(hours(24));  // next day, and past the 1 h rolling window
  auto m = open(db.path, clock);
  CHECK(m->status(ctx("alice"), clock.now()).spent_usd == doctest::Approx(0.0));
  CHECK(spent(*m, clock, "acme-daily", "project:acme") == doctest::Approx(0.0));
}

TEST_CASE("BudgetManager(SQLite): rolling buckets reload where they were") {
  TempDb db;
  ManualClock clock;
  {
    auto m = open(db.path, clock);
    spend(*m, clock, ctx("alice"), 100);  // t = 0
    clock.advance(minutes(30));
    spend(*m, clock, ctx("alice"), 200);  // t = 30 min
  }
  clock.advance(minutes(20));  // t = 50 min: both inside the hour
  {
    auto m = open(db.path, clock);
    CHECK(spent(*m, clock, "per-user", "end_user:alice") == doctest::Approx(0.3));
    clock.advance(minutes(12));  // t = 62 min: the first 0.1 has left the window
    CHECK(spent(*m, clock, "per-user", "end_user:alice") == doctest::Approx(0.2));
  }
}

TEST_CASE("BudgetManager(SQLite): instances sharing a file keep their own rows") {
  TempDb db;
  ManualClock clock;
  {
    auto a = open(db.path, clock, "a");
    auto b = open(db.path, clock, "b");
    spend(*a, clock, ctx(), 100);
    spend(*b, clock, ctx(), 200);
  }
  auto a = open(db.path, clock, "a");
  auto b = open(db.path, clock, "b");
  CHECK(spent(*a, clock, "acme-daily", "project:acme") == doctest::Approx(0.1));
  CHECK(spent(*b, clock, "acme-daily", "project:acme") == doctest::Approx(0.2));
}

TEST_CASE("BudgetManager(SQLite): an unusable path is an io error") {
  ManualClock clock;
  static const Catalog catalog;
  BudgetOptions o;
  o.sqlite_path = "/nonexistent-dir/x/budgets.db";
  auto m = BudgetManager::create(kBudgets, catalog, clock, o);
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error().kind == ErrorKind::io);
}

TEST_CASE("BudgetManager(SQLite): rows of periods no window can reach are pruned") {
  TempDb db;
  ManualClock clock;
  {
    auto m = open(db.path, clock);
    spend(*m, clock, ctx("alice"), 10);
  }
  clock.advance(hours(24 * 402));
  {
    auto m = open(db.path, clock);
    spend(*m, clock, ctx("alice"), 20);
    REQUIRE(m->flush().has_value());
  }
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.path.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, "SELECT COUNT(*), SUM(nusd) FROM budget_spend", -1, &q, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(q) == SQLITE_ROW);
  CHECK(sqlite3_column_int64(q, 0) == 2);  // today's acme-daily and per-user rows only
  CHECK(sqlite3_column_int64(q, 1) == 2 * 20'000'000);
  sqlite3_finalize(q);
  sqlite3_close(h);
}

TEST_CASE("BudgetManager(SQLite): a spend reset clears the live window and its persisted rows") {
  TempDb db;
  ManualClock clock;
  {
    auto m = open(db.path, clock);
    spend(*m, clock, ctx("alice"), 400);
    spend(*m, clock, ctx("bob"), 100);
    REQUIRE(m->flush().has_value());
    CHECK_FALSE(m->admit(ctx("alice"), &kPaid, 200, 0, clock.now()).has_value());  // 0.4 + 0.2 > 0.5
    auto n = m->reset("per-user", clock.now());
    REQUIRE(n.has_value());
    CHECK(*n == 2);  // alice's and bob's ledgers
    CHECK(spent(*m, clock, "per-user", "end_user:alice") == doctest::Approx(0.0));
    CHECK(spent(*m, clock, "acme-daily", "project:acme") == doctest::Approx(0.5));  // other budgets keep theirs
    spend(*m, clock, ctx("alice"), 200);  // admitted again after the reset
    CHECK_FALSE(m->reset("nope", clock.now()).has_value());
  }
  // After a restart only the spend made after the reset comes back.
  auto m = open(db.path, clock);
  CHECK(spent(*m, clock, "per-user", "end_user:alice") == doctest::Approx(0.2));
  CHECK(spent(*m, clock, "per-user", "end_user:bob") == -1);  // no rows, so no ledger reloaded
  CHECK(spent(*m, clock, "acme-daily", "project:acme") == doctest::Approx(0.7));
}

TEST_CASE("BudgetManager(SQLite): a budget removed and added again live comes back with its spend") {
  TempDb db;
  ManualClock clock;
  auto m = open(db.path, clock);
  spend(*m, clock, ctx("u1"), 300);  // $0.3 on acme-daily (and on per-user u1), not flushed yet
  CHECK(spent(*m, clock, "acme-daily", "project:acme") == doctest::Approx(0.3));
  // Removed: its unflushed spend is written first, then it is gone from the snapshot.
  const Json only_users = Json::array({kBudgets[1]});
  auto r = m->update(only_users, clock.now());
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().describe()));
  CHECK(r->removed == std::vector<std::string>{"acme-daily"});
  CHECK(spent(*m, clock, "acme-daily", "project:acme") == -1);
  CHECK(spent(*m, clock, "per-user", "end_user:u1") == doctest::Approx(0.3));  // untouched
  // Added again (same identity): like a restart, its rows of the live window count.
  r = m->update(kBudgets, clock.now());
  REQUIRE(r.has_value());
  CHECK(r->added == std::vector<std::string>{"acme-daily"});
  CHECK(spent(*m, clock, "acme-daily", "project:acme") == doctest::Approx(0.3));
  // A changed cap keeps the ledger; a restart afterwards still sees the spend.
  Json tighter = kBudgets;
  tighter[0]["limit_usd"] = 0.35;
  REQUIRE(m->update(tighter, clock.now()).has_value());
  auto a = m->admit(ctx("u2"), &kPaid, 100, 0, clock.now());  // 0.3 + 0.1 > 0.35
  REQUIRE_FALSE(a.has_value());
  CHECK(a.error().kind == ErrorKind::budget_exceeded);
  m.reset();
  auto again = open(db.path, clock);
  CHECK(spent(*again, clock, "acme-daily", "project:acme") == doctest::Approx(0.3));
}
