// Budgets shared by a fleet through a real redis-server started by the test: three
// BudgetManagers stand for three router instances.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "modelux/budget.hpp"
#include "support/budget_support.hpp"
#include "support/closed_port.hpp"
#include "support/redis_server.hpp"

using namespace modelux;
using namespace std::chrono;

namespace {

const ModelInfo kPaid = modelux::testing::paid_model();
constexpr double kCost = 0.001;  // one request = 1 input token = $0.001

CallContext ctx() { return modelux::testing::acme_context(); }
Json budget(double limit) { return modelux::testing::fleet_budget(limit); }

struct Instance {
  std::unique_ptr<BudgetManager> m;
  std::vector<std::string> logs;
  std::mutex logs_mu;
  std::int64_t spent_requests = 0;  // settled by this instance
  std::vector<steady_clock::time_point> admitted_at;
};

std::unique_ptr<Instance> start(const std::string& url, const std::string& id, const Clock& clock, double limit,
                                Millis interval) {
  static const Catalog catalog;
  auto inst = std::make_unique<Instance>();
  BudgetOptions o;
  o.redis_url = url;
  o.instance_id = id;
  o.redis_prefix = "test:" + std::to_string(::getpid());
  o.sync_interval = interval;
  // Real sockets on a loaded machine: a sync that takes 100 ms at load average 4 is not an
  // outage. The outages below are a killed server (refused at once), never a slow one.
  o.redis_timeout = Millis{2000};
  Instance* p = inst.get();
  o.log = [p](const std::string& s) {
    std::lock_guard lk(p->logs_mu);
    p->logs.push_back(s);
  };
  auto m = BudgetManager::create(budget(limit), catalog, clock, o);
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().describe()));
  inst->m = std::move(*m);
  return inst;
}

bool spend_one(Instance& i, const Clock& clock) {
  auto a = i.m->admit(ctx(), &kPaid, 1, 0, clock.now());
  if (!a) return false;
  i.admitted_at.push_back(steady_clock::now());
  Usage u;
  u.prompt_tokens = 1;
  i.m->settle(*a, kCost, u, clock.now());
  ++i.spent_requests;
  return true;
}

double view(const Instance& i, const Clock& clock) {
  return i.m->snapshot(clock.now())["budgets"][0]["spent_usd"].get<double>();
}

/// Polls `pred` every 2 ms for up to `limit` (waiting on a background thread, not sleeping logic).
/// The limit only matters when the test fails, so it is generous (load average 4).
template <class F>
bool eventually(F pred, milliseconds limit = milliseconds(20000)) {
  const auto until = steady_clock::now() + limit;
  while (steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return pred();
}

/// Moves a ManualClock along with real time (1 ms steps) for the tests that measure the real
/// background sync loop: the loop sleeps on the Clock, so on virtual time it runs only when
/// the clock moves. The budgets' windows stay on the same clock.
class RealTimeTicker {
 public:
  explicit RealTimeTicker(ManualClock& c)
      : t_([&c](std::stop_token st) {
          while (!st.stop_requested()) {
            std::this_thread::sleep_for(milliseconds(1));
            c.advance(milliseconds(1));
          }
        }) {}

 private:
  std::jthread t_;
};

/// Most admissions one instance made within any interval of length `l`.
std::int64_t max_in_window(const std::vector<steady_clock::time_point>& ts, Nanos l) {
  std::int64_t best = 0;
  std::size_t lo = 0;
  for (std::size_t hi = 0; hi < ts.size(); ++hi) {
    while (ts[hi] - ts[lo] > l) ++lo;
    best = std::max<std::int64_t>(best, static_cast<std::int64_t>(hi - lo + 1));
  }
  return best;
}

}  // namespace

TEST_CASE("BudgetManager(Redis): instances see each other's spend after a sync") {
  test::RedisServer redis;
  ManualClock clock;
  auto a = start(redis.url(), "a", clock, 1.0, Millis{0});
  auto b = start(redis.url(), "b", clock, 1.0, Millis{0});
  for (int i = 0; i < 300; ++i) REQUIRE(spend_one(*a, clock));
  CHECK(view(*b, clock) == doctest::Approx(0.0));
  REQUIRE(a->m->sync_now().has_value());
  REQUIRE(b->m->sync_now().has_value());
  CHECK(view(*b, clock) == doctest::Approx(0.3));
  CHECK(b->m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.3));
  // In-flight reservations are shared too.
  auto r = a->m->admit(ctx(), &kPaid, 600, 0, clock.now());
  REQUIRE(r.has_value());
  REQUIRE(a->m->sync_now().has_value());
  REQUIRE(b->m->sync_now().has_value());
  CHECK_FALSE(b->m->admit(ctx(), &kPaid, 200, 0, clock.now()).has_value());
  a->m->release(*r);
  REQUIRE(a->m->sync_now().has_value());
  REQUIRE(b->m->sync_now().has_value());
  CHECK(b->m->admit(ctx(), &kPaid, 200, 0, clock.now()).has_value());
  CHECK(a->m->redis_connected());
  CHECK(a->m->snapshot(clock.now())["redis"]["connected"] == true);
}

TEST_CASE("BudgetManager(Redis): overshoot in lock-step rounds stays within (N-1) x m x c") {
  // Each round every instance admits up to m requests on its current view, then all sync
  // (two passes, so everyone sees everyone). The view is one round stale, so the bound is
  // (N - 1) * m * c_max.
  test::RedisServer redis;
  ManualClock clock;
  constexpr int kN = 3;
  constexpr double kLimit = 0.2;
  for (int m_per_round : {1, 5, 20}) {
    CAPTURE(m_per_round);
    std::vector<std::unique_ptr<Instance>> fleet;
    for (int i = 0; i < kN; ++i) {
      std::string id = "r";
      id += std::to_string(m_per_round);
      id += '-';
      id += std::to_string(i);
      fleet.push_back(start(redis.url(), id, clock, kLimit, Millis{0}));
    }
    std::int64_t total = 0;
    for (int round = 0; round < 1000; ++round) {
      int admitted = 0;
      for (auto& inst : fleet)
        for (int k = 0; k < m_per_round; ++k)
          if (spend_one(*inst, clock)) ++admitted;
      for (int pass = 0; pass < 2; ++pass)
        for (auto& inst : fleet) REQUIRE(inst->m->sync_now().has_value());
      total += admitted;
      if (admitted == 0) break;
    }
    const double spent = static_cast<double>(total) * kCost;
    const double bound = (kN - 1) * m_per_round * kCost;
    CHECK(spent <= kLimit + bound + 1e-9);
    CHECK(spent >= kLimit - 1e-9);  // the cap was reached, not starved
    for (auto& inst : fleet) CHECK(view(*inst, clock) == doctest::Approx(spent));
    // Stop these instances before the next key space; they share the Redis hash otherwise.
    for (auto& inst : fleet) inst->m.reset();
    redis.stop();
    redis.start();
  }
}

TEST_CASE("BudgetManager(Redis): background sync keeps fleet overshoot within the documented bound") {
  test::RedisServer redis;
  ManualClock clock;  // budgets' windows on virtual time; the sync loop runs on real time
  RealTimeTicker ticker(clock);
  constexpr int kN = 3;
  constexpr double kLimit = 0.3;
  std::vector<std::unique_ptr<Instance>> fleet;
  for (int i = 0; i < kN; ++i) fleet.push_back(start(redis.url(), "i" + std::to_string(i), clock, kLimit, Millis{10}));
  REQUIRE(eventually([&] { return std::all_of(fleet.begin(), fleet.end(), [](auto& f) { return f->m->redis_connected(); }); }));
  std::vector<std::thread> routers;
  for (auto& f : fleet) {
    routers.emplace_back([&clock, inst = f.get()] {
      // A router serving ~1000 requests/s until its view says the budget is spent for good.
      int refused = 0;
      while (refused < 50) {
        if (spend_one(*inst, clock)) refused = 0;
        else ++refused;
        std::this_thread::sleep_for(microseconds(1000));
      }
    });
  }
  for (auto& t : routers) t.join();
  std::int64_t total_requests = 0;
  for (auto& f : fleet) total_requests += f->spent_requests;
  const double total = static_cast<double>(total_requests) * kCost;

  // Bound: overshoot <= (N-1) * A(L) * c_max, where L = 2 * G (G = max_sync_gap_ms: the longest
  // time from the start of one successful sync cycle to the end of the next, any instance) and
  // A(L) = the most requests one instance admitted in any interval of length L. The test's
  // timestamps are taken just after admit() returns, so L gets 0.5 ms of slack for that jitter.
  double max_gap_ms = 0;
  for (auto& f : fleet)
    max_gap_ms = std::max(max_gap_ms, f->m->snapshot(clock.now())["redis"]["max_sync_gap_ms"].get<double>());
  const auto staleness = duration_cast<Nanos>(duration<double, std::milli>(2 * max_gap_ms + 0.5));
  std::int64_t a_max = 0;
  for (auto& f : fleet) a_max = std::max(a_max, max_in_window(f->admitted_at, staleness));
  const double bound = (kN - 1) * static_cast<double>(a_max) * kCost;
  MESSAGE("fleet spent $" << total << " of $" << kLimit << " (overshoot $" << (total - kLimit) << "), bound $" << bound
                          << " (max sync gap " << max_gap_ms << " ms, A(L) = " << a_max << ")");
  CHECK(total >= kLimit - 1e-9);
  CHECK(total <= kLimit + bound + 1e-9);
  // Every instance converges on the measured fleet total.
  for (auto& f : fleet) CHECK(eventually([&] { return std::abs(view(*f, clock) - total) < 1e-9; }));
}

TEST_CASE("BudgetManager(Redis): killing and restarting Redis mid-run loses no spend") {
  test::RedisServer redis;
  ManualClock clock;
  RealTimeTicker ticker(clock);  // the sync loop runs on real time
  constexpr int kN = 3;
  std::vector<std::unique_ptr<Instance>> fleet;
  for (int i = 0; i < kN; ++i) fleet.push_back(start(redis.url(), "k" + std::to_string(i), clock, 100.0, Millis{10}));
  auto total = [&] {
    std::int64_t n = 0;
    for (auto& f : fleet) n += f->spent_requests;
    return static_cast<double>(n) * kCost;
  };
  auto converged = [&] {
    return std::all_of(fleet.begin(), fleet.end(), [&](auto& f) { return std::abs(view(*f, clock) - total()) < 1e-9; });
  };
  for (int r = 0; r < 40; ++r)
    for (auto& f : fleet) REQUIRE(spend_one(*f, clock));
  REQUIRE(eventually(converged));

  redis.stop();
  REQUIRE(eventually([&] { return std::none_of(fleet.begin(), fleet.end(), [](auto& f) { return f->m->redis_connected(); }); }));
  // Serving goes on, on the local view.
  for (int r = 0; r < 25; ++r)
    for (std::size_t i = 0; i < fleet.size(); ++i)
      for (std::size_t k = 0; k <= i; ++k) REQUIRE(spend_one(*fleet[i], clock));
  for (auto& f : fleet) {
    auto s = f->m->snapshot(clock.now());
    CHECK(s["redis"]["connected"] == false);
    CHECK_FALSE(s["redis"]["last_error"].get<std::string>().empty());
    // Own spend is all there; the others' is the last view (nothing invented, nothing lost).
    CHECK(s["budgets"][0]["own_spent_usd"].get<double>() == doctest::Approx(static_cast<double>(f->spent_requests) * kCost));
  }

  redis.start();  // comes back empty
  REQUIRE(eventually([&] { return std::all_of(fleet.begin(), fleet.end(), [](auto& f) { return f->m->redis_connected(); }); }));
  CHECK(eventually(converged));
  CHECK(total() == doctest::Approx((40 * 3 + 25 * 6) * kCost));
  for (auto& f : fleet) {
    std::lock_guard lk(f->logs_mu);
    const auto down = std::count_if(f->logs.begin(), f->logs.end(), [](auto& s) { return s.find("unreachable") != std::string::npos; });
    const auto up = std::count_if(f->logs.begin(), f->logs.end(), [](auto& s) { return s.find("reachable again") != std::string::npos; });
    CHECK(down == 1);  // logged once per outage, not once per failed sync
    CHECK(up == 1);
  }
}

TEST_CASE("BudgetManager(Redis): an unreachable Redis at start does not stop the instance") {
  ManualClock clock;
  test::ClosedPort refusing;  // bound, never listening: every connect is refused
  auto i = start("redis://127.0.0.1:" + std::to_string(refusing.port()), "lonely", clock, 1.0, Millis{0});
  CHECK_FALSE(i->m->redis_connected());
  CHECK(spend_one(*i, clock));
  auto s = i->m->snapshot(clock.now());
  CHECK(s["redis"]["connected"] == false);
  CHECK(s["budgets"][0]["spent_usd"].get<double>() == doctest::Approx(kCost));
  CHECK_FALSE(i->m->sync_now().has_value());
  std::lock_guard lk(i->logs_mu);
  CHECK(i->logs.size() == 1);
}

TEST_CASE("BudgetManager(Redis): a fleet config needs an instance id") {
  ManualClock clock;
  static const Catalog catalog;
  BudgetOptions o;
  o.redis_url = "redis://127.0.0.1:1";
  auto m = BudgetManager::create(budget(1), catalog, clock, o);
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error().kind == ErrorKind::invalid_config);
}

TEST_CASE("BudgetManager(Redis): outage policies — local view vs fair share of the remaining budget") {
  constexpr double kLimit = 0.3;
  for (auto policy : {RedisOutagePolicy::local_view, RedisOutagePolicy::fair_share}) {
    CAPTURE(static_cast<int>(policy));
    test::RedisServer redis;
    ManualClock clock;
    static const Catalog catalog;
    std::vector<std::unique_ptr<Instance>> fleet;
    for (int i = 0; i < 3; ++i) {
      auto inst = std::make_unique<Instance>();
      BudgetOptions o;
      o.redis_url = redis.url();
      o.instance_id = std::string("o").append(std::to_string(i));
      o.sync_interval = Millis{0};  // driven by the test
      o.outage_policy = policy;
      o.log = [](const std::string&) {};
      auto m = BudgetManager::create(budget(kLimit), catalog, clock, o);
      REQUIRE(m.has_value());
      inst->m = std::move(*m);
      fleet.push_back(std::move(inst));
    }
    for (auto& f : fleet)
      for (int k = 0; k < 60; ++k) REQUIRE(spend_one(*f, clock));  // $0.18 in all
    for (int pass = 0; pass < 2; ++pass)
      for (auto& f : fleet) REQUIRE(f->m->sync_now().has_value());
    redis.stop();
    for (auto& f : fleet) CHECK_FALSE(f->m->sync_now().has_value());
    std::int64_t during = 0;
    for (auto& f : fleet)
      while (spend_one(*f, clock)) ++during;
    const double total = (180 + static_cast<double>(during)) * kCost;
    if (policy == RedisOutagePolicy::fair_share) {
      CHECK(during == 120);  // 40 each: a third of the $0.12 left
      CHECK(total <= kLimit + 1e-9);
      CHECK(fleet[0]->m->snapshot(clock.now())["budgets"][0]["outage_cap_usd"].get<double>() == doctest::Approx(0.22));
    } else {
      CHECK(during == 360);  // each spends all $0.12 it believes is left
      CHECK(total == doctest::Approx(kLimit + 2 * 0.12));
    }
    redis.start();
    for (int pass = 0; pass < 2; ++pass)
      for (auto& f : fleet) REQUIRE(f->m->sync_now().has_value());
    for (auto& f : fleet) {
      CHECK(view(*f, clock) == doctest::Approx(total));
      CHECK(f->m->snapshot(clock.now())["budgets"][0]["outage_cap_usd"].is_null());
    }
  }
}
