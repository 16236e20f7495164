// Wildcard ("*") budget ledgers are evicted from memory once they hold nothing, and above
// max_wildcard_ledgers when their spend is safely in SQLite (read back on the next request).
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>

#include "modelux/budget.hpp"
#include "support/budget_support.hpp"

using namespace modelux;
using namespace std::chrono;

using modelux::testing::TempDb;

namespace {

const ModelInfo kPaid = modelux::testing::paid_model();

CallContext user(const std::string& u) {
  CallContext c;
  c.project = "acme";
  c.end_user = u;
  return c;
}

std::string name(int i) { return "user-" + std::to_string(i); }

struct Made {
  std::unique_ptr<BudgetManager> m;
  std::shared_ptr<std::vector<std::string>> logs = std::make_shared<std::vector<std::string>>();
};

Made make(const Json& budgets, const Clock& clock, BudgetOptions o = {}) {
  static const Catalog catalog;
  Made out;
  o.sync_interval = Millis{0};  // evict() is driven by the test: deterministic
  auto logs = out.logs;
  o.log = [logs](const std::string& s) { logs->push_back(s); };
  auto m = BudgetManager::create(budgets, catalog, clock, std::move(o));
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().describe()));
  out.m = std::move(*m);
  return out;
}

Json per_user(std::string window = "daily", double limit = 1.0, std::int64_t window_s = 0) {
  Json b{{"name", "per-user"}, {"scope", {{"end_user", "*"}}}, {"window", window}, {"limit_usd", limit}};
  if (window_s) b["window_s"] = window_s;
  return Json::array({Json{{"name", "acme"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", 1000}},
                      std::move(b)});
}

void spend(BudgetManager& m, const Clock& clock, const std::string& u, int tokens) {
  auto a = m.admit(user(u), &kPaid, tokens, 0, clock.now());
  REQUIRE_MESSAGE(a.has_value(), (a ? "" : a.error().message));
  Usage us;
  us.prompt_tokens = tokens;
  m.settle(*a, tokens * 0.001, us, clock.now());
}

}  // namespace

TEST_CASE("BudgetManager eviction: many end users across a daily rollover, the live ledger count drops") {
  ManualClock clock;  // 2026-01-01T00:00:01Z
  auto [m, logs] = make(per_user(), clock);
  constexpr int kUsers = 2000;
  for (int i = 0; i < kUsers; ++i) spend(*m, clock, name(i), 1);
  CHECK(m->ledger_stats().wildcard_live == kUsers);
  CHECK(m->ledger_stats().live == kUsers + 1);
  // Inside the window every ledger holds spend: nothing may go.
  CHECK(m->evict(clock.now()) == 0);
  CHECK(m->ledger_stats().wildcard_live == kUsers);
  // Next day: every window rolled over, every ledger is empty and goes.
  clock.advance(hours(24));
  CHECK(m->evict(clock.now()) == kUsers);
  const auto st = m->ledger_stats();
  CHECK(st.wildcard_live == 0);
  CHECK(st.live == 1);
  CHECK(st.evicted == kUsers);
  CHECK(st.evicted_with_spend == 0);
  auto snap = m->snapshot(clock.now());
  CHECK(snap["budgets"].size() == 1);  // only the project ledger
  CHECK(snap["ledgers"]["wildcard_live"] == 0);
  CHECK(snap["ledgers"]["evicted"] == kUsers);
  // A returning user starts the new window from zero, with a fresh ledger.
  spend(*m, clock, name(7), 3);
  CHECK(m->status(user(name(7)), clock.now()).spent_usd == doctest::Approx(0.003));
  CHECK(m->ledger_stats().wildcard_live == 1);
}

TEST_CASE("BudgetManager eviction: a rolling window is evicted only after a full window without spend") {
  ManualClock clock;
  auto [m, logs] = make(per_user("rolling", 1.0, 600), clock);
  for (int i = 0; i < 100; ++i) spend(*m, clock, name(i), 1);
  clock.advance(seconds(300));
  spend(*m, clock, name(0), 1);  // user-0 spends again halfway
  CHECK(m->evict(clock.now()) == 0);
  clock.advance(seconds(400));  // 700 s after the first spend (+ at most one 20 s bucket)
  CHECK(m->evict(clock.now()) == 99);
  CHECK(m->ledger_stats().wildcard_live == 1);
  CHECK(m->status(user(name(0)), clock.now()).spent_usd == doctest::Approx(0.001));
  clock.advance(seconds(700));
  CHECK(m->evict(clock.now()) == 1);
  CHECK(m->ledger_stats().wildcard_live == 0);
}

TEST_CASE("BudgetManager eviction: a reservation in flight keeps its ledger") {
  ManualClock clock;
  auto [m, logs] = make(per_user(), clock);
  auto held = m->admit(user("held"), &kPaid, 10, 0, clock.now());
  REQUIRE(held.has_value());
  auto dropped = m->admit(user("released"), &kPaid, 10, 0, clock.now());
  REQUIRE(dropped.has_value());
  m->release(*dropped);
  clock.advance(hours(25));
  CHECK(m->evict(clock.now()) == 1);  // "released" goes, "held" stays
  CHECK(m->ledger_stats().wildcard_live == 1);
  // The open admission still refers to a live ledger: settling it is safe and lands in the
  // window in which it settles.
  Usage u;
  u.prompt_tokens = 10;
  m->settle(*held, 0.01, u, clock.now());
  CHECK(m->status(user("held"), clock.now()).spent_usd == doctest::Approx(0.01));
  CHECK(m->evict(clock.now()) == 0);  // now it holds spend in the live window
  clock.advance(hours(24));
  CHECK(m->evict(clock.now()) == 1);
  CHECK(m->ledger_stats().wildcard_live == 0);
}

TEST_CASE("BudgetManager eviction: without a store the bound never drops live spend") {
  ManualClock clock;
  BudgetOptions o;
  o.max_wildcard_ledgers = 10;
  auto [m, logs] = make(per_user(), clock, o);
  for (int i = 0; i < 50; ++i) spend(*m, clock, name(i), 100);
  CHECK(m->evict(clock.now()) == 0);
  const auto st = m->ledger_stats();
  CHECK(st.wildcard_live == 50);
  CHECK(st.over_bound);
  REQUIRE(logs->size() == 1);  // logged once, not per sweep
  CHECK(logs->front().find("max_wildcard_ledgers") != std::string::npos);
  CHECK(m->evict(clock.now()) == 0);
  CHECK(logs->size() == 1);
  for (int i = 0; i < 50; ++i) CHECK(m->status(user(name(i)), clock.now()).spent_usd == doctest::Approx(0.1));
}

TEST_CASE("BudgetManager eviction: above the bound, a user evicted with spend comes back with it (SQLite)") {
  TempDb db;
  ManualClock clock;
  BudgetOptions o;
  o.sqlite_path = db.path;
  o.max_wildcard_ledgers = 10;
  auto [m, logs] = make(per_user("daily", 0.25), clock, o);
  for (int i = 0; i < 50; ++i) {
    spend(*m, clock, name(i), 100);  // $0.10 each
    clock.advance(milliseconds(10));  // so least-recently-used is well defined
  }
  // Unflushed spend is never dropped.
  CHECK(m->evict(clock.now()) == 0);
  REQUIRE(m->flush().has_value());
  CHECK(m->evict(clock.now()) == 40);
  auto st = m->ledger_stats();
  CHECK(st.wildcard_live == 10);
  CHECK(st.evicted_with_spend == 40);
  CHECK_FALSE(st.over_bound);
  // user-0 was the least recently used: evicted. Her spend is read back on her next request.
  CHECK(m->status(user(name(0)), clock.now()).spent_usd == doctest::Approx(0.1));
  CHECK_FALSE(m->admit(user(name(0)), &kPaid, 200, 0, clock.now()).has_value());  // 0.1 + 0.2 > 0.25
  spend(*m, clock, name(0), 100);                                                 // 0.2 fits
  CHECK_FALSE(m->admit(user(name(0)), &kPaid, 100, 0, clock.now()).has_value());
  CHECK(m->ledger_stats().reloaded >= 1);
  // Evicted again (after a flush), and back again: the store has the new total.
  REQUIRE(m->flush().has_value());
  for (int i = 40; i < 50; ++i) spend(*m, clock, name(i), 1);  // the others are more recent now
  REQUIRE(m->flush().has_value());
  CHECK(m->evict(clock.now()) >= 1);
  CHECK(m->status(user(name(0)), clock.now()).spent_usd == doctest::Approx(0.2));
  // The project budget saw every request exactly once.
  auto snap = m->snapshot(clock.now());
  CHECK(snap["budgets"][0]["name"] == "acme");
  CHECK(snap["budgets"][0]["spent_usd"].get<double>() == doctest::Approx(5.0 + 0.1 + 0.01));
  // A restart (same file) sees the same spend for an evicted user.
  m.reset();
  auto again = make(per_user("daily", 0.25), clock, o);
  CHECK(again.m->status(user(name(0)), clock.now()).spent_usd == doctest::Approx(0.2));
  CHECK(again.m->status(user(name(3)), clock.now()).spent_usd == doctest::Approx(0.1));
  // Next day the store's rows are of an old window: nothing comes back.
  clock.advance(hours(24));
  CHECK(again.m->status(user(name(3)), clock.now()).spent_usd == doctest::Approx(0.0));
}

TEST_CASE("BudgetManager eviction: concurrent admissions, settlements and sweeps (run under TSan/ASan)") {
  TempDb db;
  ManualClock clock;
  BudgetOptions o;
  o.sqlite_path = db.path;
  o.max_wildcard_ledgers = 8;  // 64 users: most sweeps drop ledgers that hold spend
  auto [m, logs] = make(per_user("daily", 1.0), clock, o);
  constexpr int kUsers = 64;
  std::array<std::atomic<std::int64_t>, kUsers> per_user_settled{};
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> settled{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; i < 3000; ++i) {
        const int k = (i * 7 + t) % kUsers;
        auto a = m->admit(user(name(k)), &kPaid, 1, 0, clock.now());
        if (!a) {
          FAIL_CHECK(a.error().message);
          return;
        }
        if (i % 5 == 0) {
          m->release(*a);
          continue;
        }
        Usage us;
        us.prompt_tokens = 1;
        m->settle(*a, 0.001, us, clock.now());
        settled.fetch_add(1);
        per_user_settled[static_cast<std::size_t>(k)].fetch_add(1);
        if (i % 97 == 0) (void)m->status(user(name(k)), clock.now());
      }
    });
  std::thread sweeper([&] {
    while (!stop.load()) {
      (void)m->flush();
      (void)m->evict(clock.now());
      (void)m->snapshot(clock.now());
      clock.advance(milliseconds(100));
    }
  });
  for (auto& w : workers) w.join();
  stop = true;
  sweeper.join();
  // How many sweeps overlapped the workers depends on scheduling; one more after them makes
  // the bound eviction certain (64 users hold spend, the bound is 8, everything is flushed).
  (void)m->flush();
  (void)m->evict(clock.now());
  CHECK(m->ledger_stats().evicted_with_spend > 0);
  // Every settled request is counted once in the project budget and in its user's budget,
  // however often that user's ledger was evicted and read back.
  auto snap = m->snapshot(clock.now());
  CHECK(snap["budgets"][0]["requests"].get<std::int64_t>() == settled.load());
  CHECK(snap["budgets"][0]["in_flight"].get<std::int64_t>() == 0);
  for (int k = 0; k < kUsers; ++k) {
    CAPTURE(k);
    CHECK(m->status(user(name(k)), clock.now()).spent_usd ==
          doctest::Approx(0.001 * static_cast<double>(per_user_settled[static_cast<std::size_t>(k)].load())));
  }
}
