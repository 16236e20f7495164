// Budgets: parsing, reservations, block/downgrade, zero-cost and unpriced models, alerts,
// scopes, windows on the manual clock, and concurrency (exact, never overspends).
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include "modelux/budget.hpp"

using namespace modelux;
using namespace std::chrono;

namespace {

ModelInfo model(std::string id, double in_per_m, double out_per_m, bool priced = true) {
  ModelInfo m;
  m.id = std::move(id);
  m.provider = "test";
  m.input_per_m = in_per_m;
  m.output_per_m = out_per_m;
  m.priced = priced;
  return m;
}

// $0.001 per input token, $0.002 per output token: small exact numbers.
const ModelInfo kPaid = model("paid", 1000, 2000);
const ModelInfo kCheap = model("cheap", 100, 200);
const ModelInfo kFree = model("free-local", 0, 0);
const ModelInfo kUnpriced = model("mystery", 0, 0, false);

CallContext ctx(std::string project = "acme", std::string user = "u1") {
  CallContext c;
  c.project = std::move(project);
  c.org = "org1";
  c.end_user = std::move(user);
  c.api_key_id = "key1";
  c.tags = {{"team", "search"}};
  return c;
}

std::unique_ptr<BudgetManager> make(const Json& budgets, const Clock& clock, BudgetOptions o = {}) {
  static const Catalog catalog;
  auto m = BudgetManager::create(budgets, catalog, clock, std::move(o));
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().describe()));
  return std::move(*m);
}

Json one(Json b) { return Json::array({std::move(b)}); }

Json usd_budget(double limit, std::string window = "daily") {
  return Json{{"name", "acme-daily"}, {"scope", {{"project", "acme"}}}, {"window", window}, {"limit_usd", limit}};
}

Usage usage(std::int64_t in, std::int64_t out) {
  Usage u;
  u.prompt_tokens = in;
  u.completion_tokens = out;
  return u;
}

}  // namespace

TEST_CASE("parse_budgets: the documented example parses") {
  auto b = parse_budgets(Json::parse(R"([{"name":"acme-daily","scope":{"project":"acme"},"window":"daily",
      "timezone":"UTC","limit_usd":50,"limit_tokens":null,"limit_requests":null,
      "soft":{"percent":80,"downgrade_to":"@cheap"},"alerts":[80,100],"unknown_price":"block"},
      {"name":"search","scope":{"tag":"team=search"},"window":"rolling","window_s":3600,"limit_tokens":1000},
      {"name":"per-user","scope":{"end_user":"*"},"window":"monthly","timezone":"+02:00","limit_usd":1,
       "unknown_price":"allow"}])"));
  REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error().describe()));
  REQUIRE(b->size() == 3);
  CHECK((*b)[0].scope == BudgetScopeKind::project);
  CHECK((*b)[0].scope_value == "acme");
  CHECK((*b)[0].soft_percent == 80);
  CHECK((*b)[0].downgrade_to == "@cheap");
  CHECK((*b)[0].scope_label() == "project:acme");
  CHECK((*b)[1].tag_key == "team");
  CHECK((*b)[1].scope_value == "search");
  CHECK((*b)[1].window_s == 3600);
  CHECK((*b)[1].alerts.empty());
  CHECK((*b)[2].unknown_price == UnknownPricePolicy::allow_and_flag);
}

TEST_CASE("parse_budgets: faults carry their JSON path") {
  struct Case {
    const char* json;
    const char* path;
  } cases[] = {
      {R"([{"name":"a","window":"hourly","limit_usd":1}])", "$.budgets[0].window"},
      {R"([{"name":"a","window":"daily","limit_usd":1,"scope":{"team":"x"}}])", "$.budgets[0].scope.team"},
      {R"([{"name":"a","window":"rolling","limit_usd":1}])", "$.budgets[0].window_s"},
      {R"([{"name":"a","window":"daily","limit_usd":1,"timezone":"Mars/Olympus"}])", "$.budgets[0].timezone"},
      {R"([{"name":"a","window":"daily","limit_usd":1},{"name":"a","window":"daily","limit_usd":2}])",
       "$.budgets[1].name"},
      {R"([{"name":"a","window":"daily"}])", "$.budgets[0].limit_usd"},
      {R"([{"name":"a","window":"daily","limit_usd":-1}])", "$.budgets[0].limit_usd"},
      {R"([{"name":"a","window":"daily","limit_usd":1,"soft":{"percent":120}}])", "$.budgets[0].soft.percent"},
      {R"([{"name":"a","window":"daily","limit_usd":1,"alerts":[80,"x"]}])", "$.budgets[0].alerts[1]"},
      {R"([{"name":"a","window":"daily","limit_usd":1,"unknown_price":"zero"}])", "$.budgets[0].unknown_price"},
      {R"([{"name":"a","window":"daily","limit_usd":1,"limt_tokens":5}])", "$.budgets[0].limt_tokens"},
      {R"([{"name":"a","window":"daily","limit_tokens":1.5}])", "$.budgets[0].limit_tokens"},
      {R"([{"name":"a","window":"daily","limit_usd":1,"scope":{"tag":"novalue"}}])", "$.budgets[0].scope.tag"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.json);
    auto b = parse_budgets(Json::parse(c.json));
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error().kind == ErrorKind::invalid_config);
    CHECK(b.error().path == c.path);
  }
}

TEST_CASE("BudgetManager: a reservation under a cent is named with six decimals") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  auto a = m->admit(ctx(), &kPaid, 1, 1, clock.now());  // 0.001 + 0.002 = $0.003
  REQUIRE(a.has_value());
  auto acts = a->actions();
  REQUIRE(acts.size() == 1);
  CHECK(acts[0] == "reserved $0.003000 on project:acme/daily (acme-daily)");
}

TEST_CASE("BudgetManager: reserve, settle and release move committed spend") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  auto a = m->admit(ctx(), &kPaid, 100, 50, clock.now());  // 0.1 + 0.1 = $0.2
  REQUIRE(a.has_value());
  CHECK(a->reserved_usd == doctest::Approx(0.2));
  CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.2));
  auto acts = a->actions();
  REQUIRE(acts.size() == 1);
  CHECK(acts[0] == "reserved $0.2000 on project:acme/daily (acme-daily)");
  m->settle(*a, 0.05, usage(40, 5), clock.now());
  CHECK_FALSE(a->open);
  CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.05));
  m->settle(*a, 0.05, usage(40, 5), clock.now());  // closed: no double count
  CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.05));
  auto b = m->admit(ctx(), &kPaid, 100, 0, clock.now());
  REQUIRE(b.has_value());
  m->release(*b);
  auto st = m->status(ctx(), clock.now());
  CHECK(st.spent_usd == doctest::Approx(0.05));
  CHECK(st.limit_usd == 1.0);
  CHECK(st.remaining_usd == doctest::Approx(0.95));
  CHECK(st.percent == doctest::Approx(5.0));
  // Other projects are outside the scope.
  CHECK(m->status(ctx("other"), clock.now()).limit_usd == 0);
}

TEST_CASE("BudgetManager: blocks at the cap with budget_exceeded naming scope and window") {
  ManualClock clock;
  auto m = make(one(usd_budget(0.01)), clock);
  for (int i = 0; i < 10; ++i) {
    auto a = m->admit(ctx(), &kPaid, 1, 0, clock.now());
    REQUIRE(a.has_value());
    m->settle(*a, 0.001, usage(1, 0), clock.now());
  }
  auto blocked = m->admit(ctx(), &kPaid, 1, 0, clock.now());
  REQUIRE_FALSE(blocked.has_value());
  CHECK(blocked.error().kind == ErrorKind::budget_exceeded);
  CHECK(blocked.error().message.find("acme-daily") != std::string::npos);
  CHECK(blocked.error().message.find("project:acme") != std::string::npos);
  CHECK(blocked.error().message.find("daily window") != std::string::npos);
  CHECK(http_status_for(blocked.error().kind) == 429);
  // A request for another project is not affected.
  CHECK(m->admit(ctx("other"), &kPaid, 1, 0, clock.now()).has_value());
}

TEST_CASE("BudgetManager: a reservation that does not fit is refused even below the cap") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  auto a = m->admit(ctx(), &kPaid, 0, 300, clock.now());  // $0.6
  REQUIRE(a.has_value());
  CHECK_FALSE(m->admit(ctx(), &kPaid, 0, 250, clock.now()).has_value());  // $0.5 more would pass $1
  CHECK(m->admit(ctx(), &kPaid, 0, 200, clock.now()).has_value());        // $0.4 fits exactly
}

TEST_CASE("BudgetManager: soft threshold asks for a downgrade") {
  ManualClock clock;
  Json b = usd_budget(1.0);
  b["soft"] = {{"percent", 80}, {"downgrade_to", "@cheap"}};
  auto m = make(one(b), clock);
  auto a = m->admit(ctx(), &kPaid, 700, 0, clock.now());  // 70%
  REQUIRE(a.has_value());
  CHECK(a->downgrade_to.empty());
  m->settle(*a, 0.7, usage(700, 0), clock.now());
  auto d = m->admit(ctx(), &kPaid, 110, 0, clock.now());  // 81%
  REQUIRE(d.has_value());
  CHECK(d->downgrade_to == "@cheap");
  CHECK(d->downgrade_budget == "acme-daily");
  CHECK(d->downgrade_percent == doctest::Approx(81.0));
  auto acts = d->actions();
  CHECK(std::find(acts.begin(), acts.end(), "downgrade to @cheap at 81% (acme-daily)") != acts.end());
  // The router re-admits on the cheaper target: no downgrade loop when already there.
  m->release(*d);
  Json c = usd_budget(1.0);
  c["soft"] = {{"percent", 80}, {"downgrade_to", "cheap"}};
  auto m2 = make(one(c), clock);
  auto x = m2->admit(ctx(), &kPaid, 900, 0, clock.now());
  REQUIRE(x.has_value());
  CHECK(x->downgrade_to == "cheap");
  auto y = m2->admit(ctx(), &kCheap, 10, 0, clock.now());
  REQUIRE(y.has_value());
  CHECK(y->downgrade_to.empty());
}

TEST_CASE("BudgetManager: zero-cost models are never blocked by USD caps") {
  ManualClock clock;
  auto m = make(one(usd_budget(0.001)), clock);
  auto a = m->admit(ctx(), &kPaid, 1, 0, clock.now());
  REQUIRE(a.has_value());
  m->settle(*a, 0.005, usage(1, 0), clock.now());  // overshoot by the provider's real usage
  CHECK_FALSE(m->admit(ctx(), &kPaid, 1, 0, clock.now()).has_value());
  for (int i = 0; i < 100; ++i) {
    auto f = m->admit(ctx(), &kFree, 100000, 100000, clock.now());
    REQUIRE(f.has_value());
    CHECK_FALSE(f->unpriced);
    m->settle(*f, 0.0, usage(100000, 100000), clock.now());
  }
}

TEST_CASE("BudgetManager: unknown prices follow the budget's explicit policy") {
  ManualClock clock;
  SUBCASE("block (the default)") {
    auto m = make(one(usd_budget(10)), clock);
    auto a = m->admit(ctx(), &kUnpriced, 10, 10, clock.now());
    REQUIRE_FALSE(a.has_value());
    CHECK(a.error().kind == ErrorKind::budget_exceeded);
    CHECK(a.error().message.find("mystery") != std::string::npos);
    CHECK(a.error().message.find("no known price") != std::string::npos);
    CHECK_FALSE(m->admit(ctx(), nullptr, 10, 10, clock.now()).has_value());
    // Only that model is affected: priced requests still pass.
    CHECK(m->admit(ctx(), &kPaid, 10, 10, clock.now()).has_value());
    // Out-of-scope requests are not affected at all.
    CHECK(m->admit(ctx("other"), &kUnpriced, 10, 10, clock.now()).has_value());
  }
  SUBCASE("allow and flag") {
    Json b = usd_budget(10);
    b["unknown_price"] = "allow";
    auto m = make(one(b), clock);
    auto a = m->admit(ctx(), &kUnpriced, 10, 10, clock.now());
    REQUIRE(a.has_value());
    CHECK(a->unpriced);
    CHECK(a->reserved_usd == 0);
    auto acts = a->actions();
    CHECK(std::find(acts.begin(), acts.end(), "unpriced model 'mystery' allowed and flagged") != acts.end());
  }
  SUBCASE("token-only budgets do not care about prices") {
    auto m = make(one(Json{{"name", "t"}, {"window", "daily"}, {"limit_tokens", 100}}), clock);
    auto a = m->admit(ctx(), &kUnpriced, 10, 10, clock.now());
    REQUIRE(a.has_value());
    CHECK_FALSE(a->unpriced);
  }
}

TEST_CASE("BudgetManager: token and request limits") {
  ManualClock clock;
  auto m = make(one(Json{{"name", "vol"}, {"scope", {{"api_key", "key1"}}}, {"window", "daily"},
                         {"limit_tokens", 1000}, {"limit_requests", 3}}),
                clock);
  auto a = m->admit(ctx(), &kPaid, 400, 400, clock.now());
  REQUIRE(a.has_value());
  CHECK_FALSE(m->admit(ctx(), &kPaid, 100, 150, clock.now()).has_value());  // 1050 tokens
  m->settle(*a, 0.1, usage(300, 100), clock.now());                         // actual 400
  auto b = m->admit(ctx(), &kPaid, 100, 150, clock.now());
  REQUIRE(b.has_value());
  m->settle(*b, 0.1, usage(10, 10), clock.now());
  auto c = m->admit(ctx(), &kPaid, 1, 1, clock.now());
  REQUIRE(c.has_value());
  auto d = m->admit(ctx(), &kPaid, 1, 1, clock.now());
  REQUIRE_FALSE(d.has_value());
  CHECK(d.error().message.find("request limit") != std::string::npos);
  m->release(*c);  // a failed attempt does not count as a request
  CHECK(m->admit(ctx(), &kPaid, 1, 1, clock.now()).has_value());
}

TEST_CASE("BudgetManager: scopes match org, project, tag, end user, api key, * keeps one ledger per value") {
  ManualClock clock;
  Json b = Json::array({
      Json{{"name", "org"}, {"scope", {{"org", "org1"}}}, {"window", "daily"}, {"limit_usd", 100}},
      Json{{"name", "tag"}, {"scope", {{"tag", "team=search"}}}, {"window", "daily"}, {"limit_usd", 100}},
      Json{{"name", "user"}, {"scope", {{"end_user", "*"}}}, {"window", "daily"}, {"limit_usd", 0.002}},
  });
  auto m = make(b, clock);
  auto a = m->admit(ctx("acme", "alice"), &kPaid, 2, 0, clock.now());
  REQUIRE(a.has_value());
  CHECK(a->holds.size() == 3);
  m->settle(*a, 0.002, usage(2, 0), clock.now());
  // alice is at her cap; bob has his own ledger.
  auto alice = m->admit(ctx("acme", "alice"), &kPaid, 1, 0, clock.now());
  REQUIRE_FALSE(alice.has_value());
  CHECK(alice.error().message.find("end_user:alice") != std::string::npos);
  CHECK(m->admit(ctx("acme", "bob"), &kPaid, 1, 0, clock.now()).has_value());
  // All or nothing: alice's refused request reserved nothing in the org and tag budgets.
  auto snap = m->snapshot(clock.now());
  int org_seen = 0, tag_seen = 0;  // the checks below must not pass on an empty snapshot
  for (const auto& l : snap["budgets"]) {
    if (l["name"] == "org") {
      ++org_seen;
      CHECK(l["committed_usd"].get<double>() == doctest::Approx(0.003));
    }
    if (l["name"] == "tag") {
      ++tag_seen;
      CHECK(l["committed_usd"].get<double>() == doctest::Approx(0.003));
    }
  }
  CHECK(org_seen == 1);
  CHECK(tag_seen == 1);
  // The tightest budget is what the rules DSL sees.
  auto st = m->status(ctx("acme", "alice"), clock.now());
  CHECK(st.limit_usd == doctest::Approx(0.002));
  CHECK(st.percent == doctest::Approx(100.0));
  // A user never seen yet starts at 0% of her own cap, so the org budget (0.003%) is tighter.
  auto carol = m->status(ctx("acme", "carol"), clock.now());
  CHECK(carol.limit_usd == doctest::Approx(100));
  CHECK(carol.spent_usd == doctest::Approx(0.003));
  // A request without the tag or user is outside those scopes.
  CallContext bare;
  bare.org = "org1";
  auto c = m->admit(bare, &kPaid, 1, 0, clock.now());
  REQUIRE(c.has_value());
  CHECK(c->holds.size() == 1);
}

TEST_CASE("BudgetManager: alerts fire once per window, through the sink and the list") {
  ManualClock clock;  // 2026-01-01T00:00:01Z
  std::vector<std::string> sunk;
  BudgetOptions o;
  o.on_alert = [&](const BudgetAlert& a) { sunk.push_back(a.budget + "@" + std::to_string(int(a.threshold))); };
  Json b = usd_budget(0.01);
  b["alerts"] = {50, 80, 100};
  auto m = make(one(b), clock, o);
  auto spend = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto a = m->admit(ctx(), &kPaid, 1, 0, clock.now());
      if (!a) return false;
      m->settle(*a, 0.001, usage(1, 0), clock.now());
    }
    return true;
  };
  REQUIRE(spend(4));
  CHECK(sunk.empty());
  {
    // The alert also comes back to the caller, for the trace.
    auto a = m->admit(ctx(), &kPaid, 1, 0, clock.now());  // committed reaches 50% here
    REQUIRE(a.has_value());
    REQUIRE(a->alerts.size() == 1);
    CHECK(a->alerts[0].threshold == 50);
    auto acts = a->actions();
    CHECK(acts.back().rfind("alert: budget acme-daily", 0) == 0);
    CHECK(m->settle(*a, 0.001, usage(1, 0), clock.now()).empty());  // already fired: not again
  }
  CHECK(sunk == std::vector<std::string>{"acme-daily@50"});
  REQUIRE(spend(3));  // 80%
  REQUIRE(spend(2));  // 100%
  CHECK(sunk == std::vector<std::string>{"acme-daily@50", "acme-daily@80", "acme-daily@100"});
  CHECK_FALSE(spend(1));  // blocked: no repeat
  CHECK(sunk.size() == 3);
  auto list = m->alerts();
  REQUIRE(list.size() == 3);
  CHECK(list[2].percent == doctest::Approx(100.0));
  CHECK(list[2].message().find("acme-daily (project:acme, daily from 2026-01-01T00:00:00Z)") != std::string::npos);
  // Next day: a new window, alerts re-arm.
  clock.advance(hours(24));
  REQUIRE(spend(5));
  CHECK(sunk.size() == 4);
  CHECK(sunk.back() == "acme-daily@50");
}

TEST_CASE("BudgetManager: the cap blocking a request fires the 100% alert") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  auto a = m->admit(ctx(), &kPaid, 500, 0, clock.now());
  REQUIRE(a.has_value());
  CHECK(m->alerts().empty());
  CHECK_FALSE(m->admit(ctx(), &kPaid, 600, 0, clock.now()).has_value());
  auto list = m->alerts();
  REQUIRE(list.size() == 2);
  CHECK(list[0].threshold == 80);
  CHECK(list[1].threshold == 100);
}

namespace {
// Spends `usd` (in $0.001 steps) and reports whether all of it was admitted.
bool spend_usd(BudgetManager& m, const Clock& clock, double usd) {
  const int n = static_cast<int>(std::lround(usd / 0.001));
  for (int i = 0; i < n; ++i) {
    auto a = m.admit(ctx(), &kPaid, 1, 0, clock.now());
    if (!a) return false;
    m.settle(*a, 0.001, usage(1, 0), clock.now());
  }
  return true;
}
}  // namespace

TEST_CASE("BudgetManager: calendar windows roll over on the manual clock") {
  // ManualClock starts at 2026-01-01T00:00:01Z, a Thursday.
  SUBCASE("daily UTC") {
    ManualClock clock;
    auto m = make(one(usd_budget(0.005)), clock);
    REQUIRE(spend_usd(*m, clock, 0.005));
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(hours(23) + minutes(59) + seconds(58));  // 23:59:59
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(1));  // 2026-01-02T00:00:00Z
    CHECK(spend_usd(*m, clock, 0.005));
    CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.005));
  }
  SUBCASE("daily at a fixed offset: +02:00 rolls at 22:00 UTC") {
    ManualClock clock;
    Json b = usd_budget(0.005);
    b["timezone"] = "+02:00";
    auto m = make(one(b), clock);
    REQUIRE(spend_usd(*m, clock, 0.005));
    clock.advance(hours(21) + minutes(59) + seconds(58));  // 21:59:59Z = 23:59:59 local
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(1));  // 22:00Z = midnight local
    CHECK(spend_usd(*m, clock, 0.005));
  }
  SUBCASE("daily in an IANA zone (America/New_York, UTC-5 in January)") {
    ManualClock clock;
    Json b = usd_budget(0.005);
    b["timezone"] = "America/New_York";
    auto m = make(one(b), clock);
    REQUIRE(spend_usd(*m, clock, 0.005));  // local: Dec 31, 19:00
    clock.advance(hours(4) + minutes(59) + seconds(58));  // 04:59:59Z = 23:59:59 local
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(1));
    CHECK(spend_usd(*m, clock, 0.005));
  }
  SUBCASE("weekly rolls on Monday 00:00") {
    ManualClock clock;
    auto m = make(one(usd_budget(0.005, "weekly")), clock);
    REQUIRE(spend_usd(*m, clock, 0.005));
    clock.advance(hours(24 * 4) - seconds(2));  // Sunday 2026-01-04 23:59:59
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(1));  // Monday 2026-01-05
    CHECK(spend_usd(*m, clock, 0.005));
    clock.advance(hours(24 * 6));  // Sunday again: same week
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
  }
  SUBCASE("monthly rolls on the 1st") {
    ManualClock clock;
    auto m = make(one(usd_budget(0.005, "monthly")), clock);
    REQUIRE(spend_usd(*m, clock, 0.005));
    clock.advance(hours(24 * 31) - seconds(2));  // Jan 31 23:59:59
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(1));  // Feb 1
    REQUIRE(spend_usd(*m, clock, 0.005));
    clock.advance(hours(24 * 28) - seconds(1));  // Feb 28 23:59:59 (2026 is not a leap year)
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(1));  // Mar 1
    CHECK(spend_usd(*m, clock, 0.001));
  }
  SUBCASE("rolling: spend leaves the window after window_s (at most one bucket late)") {
    ManualClock clock;
    Json b = usd_budget(0.005, "rolling");
    b["window_s"] = 3000;  // buckets of 100 s
    auto m = make(one(b), clock);
    REQUIRE(spend_usd(*m, clock, 0.003));  // t = 0
    clock.advance(seconds(1500));
    REQUIRE(spend_usd(*m, clock, 0.002));  // t = 1500
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(1400));  // t = 2900: all still inside
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(200));  // t = 3100: the first 0.003 left (bucket [0,100) ended at 3100)
    CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.002));
    CHECK(spend_usd(*m, clock, 0.003));
    CHECK_FALSE(spend_usd(*m, clock, 0.001));
    clock.advance(seconds(6000));
    CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.0));
  }
}

TEST_CASE("BudgetManager: a reservation made before a rollover settles into the new window") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  auto a = m->admit(ctx(), &kPaid, 500, 0, clock.now());
  REQUIRE(a.has_value());
  clock.advance(hours(24));
  // Still in flight: it counts against the new window until it settles.
  CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.5));
  m->settle(*a, 0.3, usage(300, 0), clock.now());
  CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.3));
}

TEST_CASE("BudgetManager: many threads hammering one budget never overspend (exact)") {
  ManualClock clock;
  Json b = Json::array({usd_budget(1.0), Json{{"name", "org"}, {"scope", {{"org", "org1"}}}, {"window", "daily"},
                                                {"limit_usd", 1000}}});
  auto m = make(b, clock);
  constexpr int kThreads = 8;
  std::atomic<int> admitted{0}, released{0};
  std::atomic<std::int64_t> settled_nusd{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      Random rng(static_cast<std::uint64_t>(t) + 1);
      for (int i = 0; i < 1000; ++i) {
        // Estimates of $0.001..$0.004; actual cost at or below the estimate; 1 in 5 fails.
        const std::int64_t in = 1 + static_cast<std::int64_t>(rng.below(4));
        auto a = m->admit(ctx(), &kPaid, in, 0, clock.now());
        if (!a) {
          CHECK(a.error().kind == ErrorKind::budget_exceeded);
          continue;
        }
        admitted.fetch_add(1);
        if (rng.below(5) == 0) {
          m->release(*a);
          released.fetch_add(1);
        } else {
          const std::int64_t used = 1 + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(in)));
          settled_nusd.fetch_add(used * 1'000'000);
          m->settle(*a, static_cast<double>(used) * 0.001, usage(used, 0), clock.now());
        }
        const auto st = m->status(ctx(), clock.now());
        CHECK(st.spent_usd <= 1.0 + 1e-12);
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(admitted.load() > 0);
  const auto st = m->status(ctx(), clock.now());
  CHECK(st.spent_usd == doctest::Approx(static_cast<double>(settled_nusd.load()) / 1e9).epsilon(1e-12));
  CHECK(settled_nusd.load() <= 1'000'000'000);
  // The budget was actually used up: less than one max estimate is left.
  CHECK(settled_nusd.load() > 1'000'000'000 - 4'000'000);
  auto snap = m->snapshot(clock.now());
  REQUIRE(snap["budgets"].size() == 2);  // both budgets: an empty snapshot must not pass
  for (const auto& l : snap["budgets"]) CHECK(l["in_flight"] == 0);
}

TEST_CASE("BudgetManager: N parallel requests against the last dollar admit only what fits") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  auto pre = m->admit(ctx(), &kPaid, 900, 0, clock.now());  // $0.9 spent
  REQUIRE(pre.has_value());
  m->settle(*pre, 0.9, usage(900, 0), clock.now());
  std::atomic<int> admitted{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 16; ++t)
    ts.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      if (m->admit(ctx(), &kPaid, 30, 0, clock.now())) admitted.fetch_add(1);  // $0.03 each
    });
  go = true;
  for (auto& t : ts) t.join();
  CHECK(admitted.load() == 3);  // $0.09 of the last $0.10
}

TEST_CASE("BudgetManager: snapshot reports every ledger") {
  ManualClock clock;
  auto m = make(one(usd_budget(2.0)), clock);
  auto a = m->admit(ctx(), &kPaid, 500, 0, clock.now());
  REQUIRE(a.has_value());
  m->settle(*a, 0.5, usage(500, 0), clock.now());
  auto s = m->snapshot(clock.now());
  REQUIRE(s["budgets"].size() == 1);
  const auto& l = s["budgets"][0];
  CHECK(l["name"] == "acme-daily");
  CHECK(l["scope"] == "project:acme");
  CHECK(l["spent_usd"].get<double>() == doctest::Approx(0.5));
  CHECK(l["percent"].get<double>() == doctest::Approx(25.0));
  CHECK(l["requests"] == 1);
  CHECK(l["tokens"] == 500);
  CHECK(s["redis"]["configured"] == false);
}

// ---- time zones and calendar bounds (internal header) -------------------------------------
#include "budget/window.hpp"

namespace {
budget_detail::SysSeconds at(int y, unsigned mo, unsigned d, int h = 0, int mi = 0) {
  return budget_detail::SysSeconds{sys_days{year{y} / month{mo} / day{d}}} + hours(h) + minutes(mi);
}
}  // namespace

TEST_CASE("TimeZone: fixed offsets and IANA zones") {
  using budget_detail::TimeZone;
  auto p = TimeZone::parse("+05:30");
  REQUIRE(p.has_value());
  CHECK(p->offset_at(at(2026, 1, 1)) == seconds(5 * 3600 + 1800));
  CHECK(TimeZone::parse("-0800")->offset_at(at(2026, 1, 1)) == seconds(-8 * 3600));
  CHECK(TimeZone::parse("UTC+01:00")->offset_at(at(2026, 1, 1)) == seconds(3600));
  CHECK(TimeZone::parse("UTC")->offset_at(at(2026, 1, 1)) == seconds(0));
  CHECK_FALSE(TimeZone::parse("+25:00").has_value());
  CHECK_FALSE(TimeZone::parse("../../etc/passwd").has_value());
  CHECK_FALSE(TimeZone::parse("Nowhere/City").has_value());
  auto berlin = TimeZone::parse("Europe/Berlin");
  REQUIRE(berlin.has_value());
  CHECK(berlin->offset_at(at(2026, 1, 15)) == seconds(3600));
  CHECK(berlin->offset_at(at(2026, 7, 1)) == seconds(7200));
  // DST starts 2026-03-29 at 01:00 UTC.
  CHECK(berlin->offset_at(at(2026, 3, 29, 0, 59)) == seconds(3600));
  CHECK(berlin->offset_at(at(2026, 3, 29, 1, 0)) == seconds(7200));
}

TEST_CASE("calendar_window: days, ISO weeks and months follow the zone, DST included") {
  using namespace budget_detail;
  auto berlin = *TimeZone::parse("Europe/Berlin");
  // The DST day is 23 hours long.
  auto d = calendar_window(BudgetWindowKind::daily, berlin, at(2026, 3, 29, 12));
  CHECK(d.start == at(2026, 3, 28, 23));
  CHECK(d.end == at(2026, 3, 29, 22));
  auto m = calendar_window(BudgetWindowKind::monthly, berlin, at(2026, 3, 15));
  CHECK(m.start == at(2026, 2, 28, 23));
  CHECK(m.end == at(2026, 3, 31, 22));
  auto w = calendar_window(BudgetWindowKind::weekly, TimeZone::utc(), at(2026, 1, 1, 12));  // a Thursday
  CHECK(w.start == at(2025, 12, 29));
  CHECK(w.end == at(2026, 1, 5));
  // Just before local midnight at -05:00 is still the previous local day.
  auto ny = *TimeZone::parse("-05:00");
  auto n = calendar_window(BudgetWindowKind::daily, ny, at(2026, 1, 2, 4, 59));
  CHECK(n.start == at(2026, 1, 1, 5));
  CHECK(format_utc(n.start) == "2026-01-01T05:00:00Z");
}

TEST_CASE("BudgetManager: a daily budget in Europe/Berlin rolls at 22:00 UTC in summer") {
  ManualClock clock(WallTime{sys_days{year{2026} / 7 / 1}});  // wall = 2026-07-01T00:00:01Z
  Json b = usd_budget(0.005);
  b["timezone"] = "Europe/Berlin";
  auto m = make(one(b), clock);
  REQUIRE(spend_usd(*m, clock, 0.005));
  clock.advance(hours(21) + minutes(59) + seconds(58));  // 21:59:59Z = 23:59:59 CEST
  CHECK_FALSE(spend_usd(*m, clock, 0.001));
  clock.advance(seconds(1));
  CHECK(spend_usd(*m, clock, 0.005));
  auto blocked = m->admit(ctx(), &kPaid, 1, 0, clock.now());
  REQUIRE_FALSE(blocked.has_value());
  CHECK(blocked.error().message.find("(project:acme, daily window from 2026-07-01T22:00:00Z Europe/Berlin)") != std::string::npos);
}

// ---- live definition changes (BudgetManager::update) ----------------------------------------

TEST_CASE("BudgetManager: update changes caps live and keeps spend and reservations") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  // $0.3 settled, then $0.2 reserved by a request still in flight.
  auto a = m->admit(ctx(), &kPaid, 100, 100, clock.now());  // $0.3
  REQUIRE(a.has_value());
  m->settle(*a, 0.3, usage(100, 100), clock.now());
  auto inflight = m->admit(ctx(), &kPaid, 200, 0, clock.now());  // $0.2 reserved
  REQUIRE(inflight.has_value());
  CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.5));

  // Cap down to $0.5: the same identity keeps the ledger (spend and the reservation), and the
  // next admission is refused at once.
  auto r = m->update(one(usd_budget(0.5)), clock.now());
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().describe()));
  CHECK(r->changed == std::vector<std::string>{"acme-daily"});
  CHECK(r->added.empty());
  CHECK(r->removed.empty());
  auto st = m->status(ctx(), clock.now());
  CHECK(st.limit_usd == doctest::Approx(0.5));
  CHECK(st.spent_usd == doctest::Approx(0.5));
  auto blocked = m->admit(ctx(), &kPaid, 10, 0, clock.now());
  REQUIRE_FALSE(blocked.has_value());
  CHECK(blocked.error().kind == ErrorKind::budget_exceeded);
  CHECK(blocked.error().message.find("$0.5000 limit") != std::string::npos);

  // The reservation made before the change settles into the same ledger: $0.2 reserved
  // becomes $0.1 spent, so $0.4 in all.
  m->settle(*inflight, 0.1, usage(100, 0), clock.now());
  CHECK(m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.4));
  CHECK(m->admit(ctx(), &kPaid, 200, 0, clock.now()).error().kind == ErrorKind::budget_exceeded);  // 0.4 + 0.2 > 0.5

  // Cap up: admitted again, spend still there.
  REQUIRE(m->update(one(usd_budget(2.0)), clock.now()).has_value());
  auto ok = m->admit(ctx(), &kPaid, 200, 0, clock.now());
  REQUIRE(ok.has_value());
  m->release(*ok);
  st = m->status(ctx(), clock.now());
  CHECK(st.limit_usd == doctest::Approx(2.0));
  CHECK(st.spent_usd == doctest::Approx(0.4));

  // The same definitions again change nothing.
  auto same = m->update(one(usd_budget(2.0)), clock.now());
  REQUIRE(same.has_value());
  CHECK(same->unchanged == 1);
  CHECK(same->changed.empty());
}

TEST_CASE("BudgetManager: update adds and removes budgets live") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  auto a = m->admit(ctx(), &kPaid, 100, 0, clock.now());  // $0.1 on acme-daily
  REQUIRE(a.has_value());
  m->settle(*a, 0.1, usage(100, 0), clock.now());
  auto held = m->admit(ctx(), &kPaid, 100, 0, clock.now());  // in flight across the removal
  REQUIRE(held.has_value());

  // Add a per-user request cap next to it.
  Json users{{"name", "per-user"}, {"scope", {{"end_user", "*"}}}, {"window", "daily"}, {"limit_requests", 1}};
  auto r = m->update(Json::array({usd_budget(1.0), users}), clock.now());
  REQUIRE(r.has_value());
  CHECK(r->added == std::vector<std::string>{"per-user"});
  CHECK(r->unchanged == 1);
  CHECK(m->specs().size() == 2);
  auto first = m->admit(ctx("acme", "u9"), &kPaid, 1, 0, clock.now());
  REQUIRE(first.has_value());
  m->settle(*first, 0.001, usage(1, 0), clock.now());
  auto second = m->admit(ctx("acme", "u9"), &kPaid, 1, 0, clock.now());
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().message.find("per-user") != std::string::npos);

  // Remove acme-daily: it no longer matches, is no longer listed, and the reservation made
  // before the removal settles harmlessly.
  r = m->update(one(users), clock.now());
  REQUIRE(r.has_value());
  CHECK(r->removed == std::vector<std::string>{"acme-daily"});
  CHECK(m->status(ctx(), clock.now()).limit_usd == 0);
  m->settle(*held, 0.5, usage(100, 0), clock.now());
  Json snap = m->snapshot(clock.now());
  for (const auto& l : snap["budgets"]) CHECK(l["name"] == "per-user");
  CHECK(m->ledger_stats().live == 1);  // the per-user ledger of u9
  auto reset = m->reset("acme-daily", clock.now());
  CHECK_FALSE(reset.has_value());

  // Re-adding it starts a fresh ledger (no store: the old spend is gone with the definition).
  REQUIRE(m->update(Json::array({users, usd_budget(0.05)}), clock.now()).has_value());
  CHECK(m->status(ctx("acme", "u10"), clock.now()).spent_usd == doctest::Approx(0.0));
  CHECK(m->admit(ctx("acme", "u10"), &kPaid, 100, 0, clock.now()).error().kind == ErrorKind::budget_exceeded);
}

TEST_CASE("BudgetManager: a bad update changes nothing") {
  ManualClock clock;
  auto m = make(one(usd_budget(1.0)), clock);
  Json bad = usd_budget(0.5);
  bad["window"] = "hourly";
  auto r = m->update(one(bad), clock.now());
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().path == "$.budgets[0].window");
  CHECK(m->status(ctx(), clock.now()).limit_usd == doctest::Approx(1.0));
}

TEST_CASE("BudgetManager: a lowered cap re-arms alerts against the new limit") {
  ManualClock clock;
  std::vector<double> fired;
  BudgetOptions o;
  o.on_alert = [&](const BudgetAlert& a) { fired.push_back(a.threshold); };
  auto m = make(one(usd_budget(1.0)), clock, o);
  auto a = m->admit(ctx(), &kPaid, 100, 0, clock.now());
  REQUIRE(a.has_value());
  m->settle(*a, 0.1, usage(100, 0), clock.now());  // 10%: nothing
  CHECK(fired.empty());
  REQUIRE(m->update(one(usd_budget(0.11)), clock.now()).has_value());
  auto b = m->admit(ctx(), &kPaid, 1, 0, clock.now());  // 0.101 of 0.11 = 92%
  REQUIRE(b.has_value());
  CHECK(fired == std::vector<double>{80});
  m->release(*b);
}

TEST_CASE("BudgetManager: updates racing admissions keep spend exact") {
  ManualClock clock;
  const Json users{{"name", "per-user"}, {"scope", {{"end_user", "*"}}}, {"window", "daily"}, {"limit_usd", 1000}};
  auto m = make(one(usd_budget(100.0)), clock);
  constexpr int kThreads = 4;
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> settled_nusd{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      Random rng(static_cast<std::uint64_t>(t) + 7);
      for (int i = 0; i < 2000; ++i) {
        auto a = m->admit(ctx("acme", "u" + std::to_string(rng.below(16))), &kPaid, 1, 0, clock.now());
        if (!a) {
          CHECK(a.error().kind == ErrorKind::budget_exceeded);
          continue;
        }
        if (rng.below(4) == 0) {
          m->release(*a);
        } else {
          settled_nusd.fetch_add(1'000'000);
          m->settle(*a, 0.001, usage(1, 0), clock.now());
        }
      }
    });
  }
  // Meanwhile: the cap moves between $100 and $3 (same identity) and a wildcard budget comes
  // and goes.
  std::thread updater([&] {
    for (int i = 0; !done.load(); ++i) {
      Json b = Json::array({usd_budget(i % 2 ? 3.0 : 100.0)});
      if (i % 3 == 0) b.push_back(users);
      auto r = m->update(b, clock.now());
      CHECK(r.has_value());
      (void)m->snapshot(clock.now());
    }
  });
  for (auto& t : ts) t.join();
  done = true;
  updater.join();
  REQUIRE(m->update(one(usd_budget(100.0)), clock.now()).has_value());
  // Every settle landed in the one acme-daily ledger that survived every change.
  const auto st = m->status(ctx(), clock.now());
  CHECK(st.spent_usd == doctest::Approx(static_cast<double>(settled_nusd.load()) / 1e9).epsilon(1e-12));
  auto snap = m->snapshot(clock.now());
  REQUIRE(snap["budgets"].size() == 1);
  CHECK(snap["budgets"][0]["in_flight"] == 0);
}
