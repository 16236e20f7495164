// Budget fleet sync against a real redis-server that requires a password (set with CONFIG SET
// on the server the shared test helper starts): AUTH / SELECT from the URL, on every
// reconnect; a wrong password is an outage that follows outage_policy, and the password never
// shows up in errors, logs or snapshots.
#include <doctest/doctest.h>

#include <hiredis/hiredis.h>

#include <mutex>

#include "modelux/budget.hpp"
#include "support/budget_support.hpp"
#include "support/redis_server.hpp"

using namespace modelux;
using namespace std::chrono;

namespace {

const ModelInfo kPaid = modelux::testing::paid_model();

// Characters that must be percent-encoded in a URL, to exercise the decoding too.
const std::string kPassword = "Zq9:s3cr@t/pw%";
const std::string kEncoded = "Zq9%3As3cr%40t%2Fpw%25";
const std::string kWrong = "WrongPw-7731";

CallContext ctx() { return modelux::testing::acme_context(); }
Json budget(double limit) { return modelux::testing::fleet_budget(limit); }

/// A plain admin connection to the test server.
struct Admin {
  redisContext* c = nullptr;
  explicit Admin(int port) {
    c = redisConnect("127.0.0.1", port);
    REQUIRE((c && !c->err));
  }
  ~Admin() { redisFree(c); }
  std::string run(std::initializer_list<std::string> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    REQUIRE(r != nullptr);
    std::string out = r->str ? std::string(r->str, r->len) : std::to_string(r->type == REDIS_REPLY_ARRAY ? r->elements : r->integer);
    freeReplyObject(r);
    return out;
  }
};

struct Instance {
  std::unique_ptr<BudgetManager> m;
  std::shared_ptr<std::vector<std::string>> logs = std::make_shared<std::vector<std::string>>();
  std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
};

Instance start(const std::string& url, const std::string& id, const Clock& clock, double limit,
               RedisOutagePolicy policy = RedisOutagePolicy::local_view) {
  static const Catalog catalog;
  Instance inst;
  BudgetOptions o;
  o.redis_url = url;
  o.instance_id = id;
  o.redis_prefix = "authtest";
  o.sync_interval = Millis{0};  // driven by the test
  o.redis_timeout = Millis{2000};  // not an outage at load average 4; outages here are refusals
  o.outage_policy = policy;
  o.log = [logs = inst.logs, mu = inst.mu](const std::string& s) {
    std::lock_guard lk(*mu);
    logs->push_back(s);
  };
  auto m = BudgetManager::create(budget(limit), catalog, clock, o);
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().describe()));
  inst.m = std::move(*m);
  return inst;
}

bool spend_one(Instance& i, const Clock& clock) {
  auto a = i.m->admit(ctx(), &kPaid, 1, 0, clock.now());
  if (!a) return false;
  Usage u;
  u.prompt_tokens = 1;
  i.m->settle(*a, 0.001, u, clock.now());
  return true;
}

std::string url(int port, const std::string& userinfo, int db = 0) {
  return "redis://" + userinfo + "@127.0.0.1:" + std::to_string(port) + (db ? "/" + std::to_string(db) : "");
}

/// Nothing the instance says may contain a password.
void check_no_secret(const Instance& i, const Clock& clock) {
  const std::string snap = i.m->snapshot(clock.now()).dump();
  for (const std::string& secret : {kPassword, kEncoded, kWrong, std::string("s3cr@t")}) {
    CHECK(snap.find(secret) == std::string::npos);
    for (const auto& l : *i.logs) CHECK(l.find(secret) == std::string::npos);
  }
}

}  // namespace

TEST_CASE("BudgetManager(Redis AUTH): the right password syncs, as password or user + password, and SELECT db") {
  test::RedisServer redis;
  Admin admin(redis.port());
  REQUIRE(admin.run({"CONFIG", "SET", "requirepass", kPassword}) == "OK");
  REQUIRE(admin.run({"AUTH", kPassword}) == "OK");
  ManualClock clock;
  auto a = start(url(redis.port(), ":" + kEncoded, 3), "a", clock, 1.0);
  auto b = start(url(redis.port(), "default:" + kEncoded, 3), "b", clock, 1.0);
  for (int i = 0; i < 100; ++i) REQUIRE(spend_one(a, clock));
  CHECK(b.m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.0));  // b uses the budget too
  auto ra = a.m->sync_now();
  REQUIRE_MESSAGE(ra.has_value(), (ra ? "" : ra.error().message));
  REQUIRE(b.m->sync_now().has_value());
  CHECK(b.m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.1));
  CHECK(a.m->redis_connected());
  CHECK(b.m->redis_connected());
  // The keys live in database 3, not 0.
  CHECK(admin.run({"SELECT", "3"}) == "OK");
  CHECK(admin.run({"EXISTS", "authtest:fleet|acme"}) == "1");
  CHECK(admin.run({"SELECT", "0"}) == "OK");
  CHECK(admin.run({"EXISTS", "authtest:fleet|acme"}) == "0");
  check_no_secret(a, clock);
  check_no_secret(b, clock);
}

TEST_CASE("BudgetManager(Redis AUTH): a wrong or missing password is an outage with a clear error and no secret") {
  test::RedisServer redis;
  Admin admin(redis.port());
  REQUIRE(admin.run({"CONFIG", "SET", "requirepass", kPassword}) == "OK");
  ManualClock clock;
  for (const std::string& userinfo : {":" + kWrong, "default:" + kWrong}) {
    CAPTURE(userinfo);
    auto w = start(url(redis.port(), userinfo), "w", clock, 1.0);  // the instance starts anyway
    auto r = w.m->sync_now();
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("authentication failed") != std::string::npos);
    CHECK(r.error().message.find("WRONGPASS") != std::string::npos);
    CHECK(r.error().message.find(kWrong) == std::string::npos);
    CHECK_FALSE(w.m->redis_connected());
    auto snap = w.m->snapshot(clock.now());
    CHECK(snap["redis"]["connected"] == false);
    CHECK(snap["redis"]["last_error"].get<std::string>().find("authentication failed") != std::string::npos);
    REQUIRE(w.logs->size() == 1);  // once per outage, not per failed sync
    CHECK(w.logs->front().find("authentication failed") != std::string::npos);
    // local_view: it keeps serving on its own view.
    CHECK(spend_one(w, clock));
    check_no_secret(w, clock);
  }
  // No credentials at all against a server that needs them.
  auto n = start("redis://127.0.0.1:" + std::to_string(redis.port()), "n", clock, 1.0);
  REQUIRE(spend_one(n, clock));
  auto r = n.m->sync_now();
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("NOAUTH") != std::string::npos);
}

TEST_CASE("BudgetManager(Redis AUTH): AUTH is sent on every reconnect and a rotated password follows fair_share") {
  constexpr double kLimit = 0.3;
  test::RedisServer redis;
  Admin admin(redis.port());
  REQUIRE(admin.run({"CONFIG", "SET", "requirepass", kPassword}) == "OK");
  REQUIRE(admin.run({"AUTH", kPassword}) == "OK");
  ManualClock clock;
  std::vector<Instance> fleet;
  for (int i = 0; i < 3; ++i)
    fleet.push_back(start(url(redis.port(), ":" + kEncoded), "f" + std::to_string(i), clock, kLimit,
                          RedisOutagePolicy::fair_share));
  for (auto& f : fleet)
    for (int k = 0; k < 60; ++k) REQUIRE(spend_one(f, clock));  // $0.18 in all
  for (int pass = 0; pass < 2; ++pass)
    for (auto& f : fleet) REQUIRE(f.m->sync_now().has_value());
  // The server's password changes and every client connection is dropped: the instances'
  // reconnects send the old password and are refused.
  REQUIRE(admin.run({"CONFIG", "SET", "requirepass", kWrong}) == "OK");
  admin.run({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
  for (auto& f : fleet) {
    CHECK_FALSE(f.m->sync_now().has_value());  // the dropped connection, or already the refused AUTH
    auto r = f.m->sync_now();                   // a fresh connect: AUTH is refused
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("authentication failed") != std::string::npos);
  }
  // fair_share: each instance may spend a third of the $0.12 that was left.
  std::int64_t during = 0;
  for (auto& f : fleet)
    while (spend_one(f, clock)) ++during;
  CHECK(during == 120);
  CHECK(fleet[0].m->snapshot(clock.now())["budgets"][0]["outage_cap_usd"].get<double>() == doctest::Approx(0.22));
  // The password is set back: the next reconnect authenticates and the fleet reconciles.
  REQUIRE(admin.run({"CONFIG", "SET", "requirepass", kPassword}) == "OK");
  for (int pass = 0; pass < 2; ++pass)
    for (auto& f : fleet) REQUIRE(f.m->sync_now().has_value());
  for (auto& f : fleet) {
    CHECK(f.m->redis_connected());
    CHECK(f.m->status(ctx(), clock.now()).spent_usd == doctest::Approx(0.3));
    CHECK(f.m->snapshot(clock.now())["budgets"][0]["outage_cap_usd"].is_null());
    check_no_secret(f, clock);
  }
}

TEST_CASE("BudgetManager(Redis AUTH): rediss:// and malformed credentials are refused at creation, without the secret") {
  static const Catalog catalog;
  ManualClock clock;
  auto make = [&](const std::string& u) {
    BudgetOptions o;
    o.redis_url = u;
    o.instance_id = "x";
    o.sync_interval = Millis{0};
    o.log = [](const std::string&) {};
    return BudgetManager::create(budget(1), catalog, clock, o);
  };
  auto tls = make("rediss://:" + kWrong + "@127.0.0.1:6380");
  REQUIRE_FALSE(tls.has_value());
  CHECK(tls.error().kind == ErrorKind::invalid_config);
  CHECK(tls.error().message.find("TLS") != std::string::npos);
  CHECK(tls.error().message.find("not supported by this build") != std::string::npos);
  CHECK(tls.error().message.find(kWrong) == std::string::npos);
  for (const std::string& u : {"redis://" + kWrong + "@127.0.0.1:1", std::string("redis://user:@127.0.0.1:1"),
                               "redis://:" + kWrong + "%zz@127.0.0.1:1", "redis://:" + kWrong + "@127.0.0.1:99999"}) {
    CAPTURE(u);
    auto m = make(u);
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().kind == ErrorKind::invalid_config);
    CHECK(m.error().message.find(kWrong) == std::string::npos);
    CHECK(m.error().describe().find(kWrong) == std::string::npos);
  }
}
