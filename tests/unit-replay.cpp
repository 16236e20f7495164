// Replay on hand-made traces in a real SQLite store: the fit of each target, the report of
// the recorded side, the candidate's diff, budgets in time order, the guard, promotion, errors,
// and the schema migration replay relies on.
#include <sqlite3.h>

#include <doctest/doctest.h>

#include "modelux/replay.hpp"
#include "unit-trace-support.hpp"

using namespace trace_test;

namespace {

const char* kHaiku = "claude-haiku-4-5";
const char* kMini = "gpt-4o-mini";

/// What the catalog charges for 400 prompt and 100 completion tokens on `model`.
Cost priced(const char* model) {
  Usage u;
  u.prompt_tokens = 400;
  u.completion_tokens = 100;
  return Catalog::builtin().cost(model, u).value();
}

/// `n` requests on @production, one a second: every `fail_every`-th request's primary (haiku)
/// answers 429 after 50 ms and gpt-4o-mini serves it in 700 ms; the others are served by haiku
/// in 400 ms (+ i % 100 ms).
std::vector<DecisionTrace> traffic(std::size_t n, std::size_t fail_every) {
  std::vector<DecisionTrace> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<AttemptSpec> a;
    const Millis jitter{static_cast<int>(i % 100)};
    if (fail_every && i % fail_every == 0) {
      a.push_back({kHaiku, "anthropic", false, "rate_limited", Millis{50}});
      a.push_back({kMini, "openai", true, "ok", Millis{700} + jitter, priced(kMini).input_usd, priced(kMini).output_usd,
                   400, 100});
    } else {
      a.push_back({kHaiku, "anthropic", true, "ok", Millis{400} + jitter, priced(kHaiku).input_usd,
                   priced(kHaiku).output_usd, 400, 100});
    }
    auto t = make_trace("req_" + std::to_string(i), base_time() + std::chrono::seconds(i), a, "acme",
                        "user-" + std::to_string(i % 7));
    out.push_back(std::move(t));
  }
  return out;
}

void write_store(const std::string& path, const std::vector<DecisionTrace>& traces) {
  auto store = TraceStore::open(path);
  REQUIRE(store);
  REQUIRE((*store)->write(traces));
}

Json production_as_deployed() {
  return Json::parse(R"({"strategy":"fallback","attempts":[{"model":"claude-haiku-4-5","timeout_ms":2000},
    {"model":"gpt-4o-mini","timeout_ms":3000},{"model":"gemini-2.5-flash","timeout_ms":5000}],
    "retry_on":["429","5xx","timeout"],"total_budget_ms":8000})");
}

ReplayOptions options(const std::string& path, Json candidate) {
  ReplayOptions o;
  o.store_path = path;
  o.slug = "production";
  o.candidate = std::move(candidate);
  o.seed = 7;
  return o;
}

Json without_wall_time(Json j) {
  j.erase("wall_seconds");
  return j;
}

}  // namespace

TEST_CASE("replay: each target's behaviour is fitted from its recorded attempts") {
  TempDb db("replay-fit");
  write_store(db.path, traffic(200, 4));  // 50 of 200 primaries answered 429
  auto rep = replay(options(db.path, production_as_deployed()));
  REQUIRE(rep);
  const TargetFit* haiku = nullptr;
  const TargetFit* mini = nullptr;
  for (const auto& t : rep->targets) {
    if (t.target == "anthropic/claude-haiku-4-5") haiku = &t;
    if (t.target == "openai/gpt-4o-mini") mini = &t;
  }
  REQUIRE(haiku);
  REQUIRE(mini);
  CHECK(haiku->fitted);
  CHECK(haiku->samples == 200);
  CHECK(haiku->rate_limited_rate == doctest::Approx(0.25));
  CHECK(haiku->ok_rate == doctest::Approx(0.75));
  CHECK(haiku->timeout_rate == 0);
  CHECK(haiku->p50_ms >= 400);
  CHECK(haiku->p50_ms < 500);
  CHECK(mini->samples == 50);
  CHECK(mini->ok_rate == 1.0);
  CHECK(mini->p50_ms >= 700);
  CHECK(rep->unfitted_targets.empty());
}

TEST_CASE("replay: the recorded side is the traces as they happened") {
  TempDb db("replay-current");
  write_store(db.path, traffic(100, 5));
  auto rep = replay(options(db.path, production_as_deployed()));
  REQUIRE(rep);
  CHECK(rep->traces == 100);
  CHECK(rep->slug == "@production");
  CHECK(rep->current.requests == 100);
  CHECK(rep->current.success_rate == 1.0);
  CHECK(rep->current.failovers == 20);
  CHECK(rep->current.routes.at("anthropic/claude-haiku-4-5") == 80);
  CHECK(rep->current.routes.at("openai/gpt-4o-mini") == 20);
  CHECK(rep->current.cost_usd == doctest::Approx(80 * priced(kHaiku).total() + 20 * priced(kMini).total()));
  CHECK(rep->from == base_time());
  CHECK(rep->to == base_time() + std::chrono::seconds(99));
  REQUIRE(rep->rows.size() == 100);
  CHECK(rep->rows.front().request_id == "req_0");  // oldest first
  CHECK(rep->rows.front().current_target == "openai/gpt-4o-mini");
}

TEST_CASE("replay: replaying the deployed config with health off reproduces the recording exactly") {
  TempDb db("replay-reproduce");
  write_store(db.path, traffic(2000, 4));
  // The hand-made 429s fall on every 4th request, a pattern health-aware routing would have
  // reacted to when recording; with health off the replay must reproduce the recorded mix.
  auto o = options(db.path, production_as_deployed());
  o.base = Config::embedded_defaults().value();
  o.base->health.enabled = false;
  auto rep = replay(o);
  REQUIRE(rep);
  CHECK(rep->candidate.requests == 2000);
  CHECK(rep->candidate.success_rate == 1.0);
  // Every call the deployed config makes is one the recording made: each gets its recorded
  // outcome, so the replay follows the recording exactly.
  CHECK(rep->candidate.routes == rep->current.routes);
  CHECK(rep->candidate.failovers == rep->current.failovers);
  CHECK(rep->candidate.cost_usd == doctest::Approx(rep->current.cost_usd));
  CHECK(rep->candidate.p50_ms == doctest::Approx(rep->current.p50_ms).epsilon(0.01));
  CHECK(rep->candidate.p99_ms == doctest::Approx(rep->current.p99_ms).epsilon(0.01));
  for (const auto& row : rep->rows) CHECK(row.candidate_target == row.current_target);
}

TEST_CASE("replay: a candidate that drops the failing target has no failovers and the fast route") {
  TempDb db("replay-drop");
  write_store(db.path, traffic(1000, 2));  // half the primaries 429
  auto rep = replay(options(db.path, Json::parse(R"({"strategy":"single","model":"gpt-4o-mini","timeout_ms":3000})")));
  REQUIRE(rep);
  CHECK(rep->current.failover_rate == doctest::Approx(0.5));
  CHECK(rep->candidate.failovers == 0);
  CHECK(rep->candidate.success_rate == 1.0);
  CHECK(rep->candidate.routes.size() == 1);
  CHECK(rep->candidate.routes["openai/gpt-4o-mini"] == 1000);
  CHECK(rep->candidate.p50_ms >= 700);  // every request now pays gpt-4o-mini's recorded latency
  auto v = evaluate_guard("failover<current,success>=current", *rep);
  REQUIRE(v);
  CHECK(v->passed);
}

TEST_CASE("replay: the same seed gives the same report and another seed other draws") {
  TempDb db("replay-seed");
  write_store(db.path, traffic(500, 3));
  auto a = replay(options(db.path, production_as_deployed()));
  auto b = replay(options(db.path, production_as_deployed()));
  REQUIRE(a);
  REQUIRE(b);
  CHECK(without_wall_time(a->to_json()) == without_wall_time(b->to_json()));
  // gpt-4o-mini was called for a third of the requests: the other calls draw from its fit,
  // and the draws follow the seed.
  const Json mini = Json::parse(R"({"strategy":"single","model":"gpt-4o-mini"})");
  auto m1 = replay(options(db.path, mini));
  auto m2 = replay(options(db.path, mini));
  auto o = options(db.path, mini);
  o.seed = 8;
  auto m3 = replay(o);
  REQUIRE(m1);
  REQUIRE(m2);
  REQUIRE(m3);
  CHECK(without_wall_time(m1->to_json()) == without_wall_time(m2->to_json()));
  CHECK(without_wall_time(m1->to_json())["rows"] != without_wall_time(m3->to_json())["rows"]);
}

TEST_CASE("replay: a target the traces never saw is flagged and uses defaults") {
  TempDb db("replay-unseen");
  write_store(db.path, traffic(50, 0));
  auto rep = replay(options(db.path, Json::parse(R"({"strategy":"single","model":"gemini-2.5-flash"})")));
  REQUIRE(rep);
  REQUIRE(rep->unfitted_targets.size() == 1);
  CHECK(rep->unfitted_targets[0] == "google/gemini-2.5-flash");
  CHECK(rep->table().find("NOT SEEN") != std::string::npos);
  bool flagged = false;
  for (const auto& t : rep->targets)
    if (t.target == "google/gemini-2.5-flash") flagged = !t.fitted && t.attempted == 50;
  CHECK(flagged);
}

TEST_CASE("replay: clear errors for an empty store, an unknown slug, a bad candidate and missing bodies") {
  TempDb db("replay-errors");
  SUBCASE("empty store") {
    write_store(db.path, {});
    auto rep = replay(options(db.path, production_as_deployed()));
    REQUIRE_FALSE(rep);
    CHECK(rep.error().message.find("has no traces") != std::string::npos);
  }
  SUBCASE("no store file") {
    auto rep = replay(options(db.path + ".missing", production_as_deployed()));
    REQUIRE_FALSE(rep);
    CHECK(rep.error().message.find("no trace store") != std::string::npos);
  }
  SUBCASE("slug not in the store names the ones it has") {
    write_store(db.path, traffic(3, 0));
    auto o = options(db.path, production_as_deployed());
    o.slug = "@staging";
    auto rep = replay(o);
    REQUIRE_FALSE(rep);
    CHECK(rep.error().kind == ErrorKind::not_found);
    CHECK(rep.error().message.find("no traces for '@staging'") != std::string::npos);
    CHECK(rep.error().message.find("@production (3)") != std::string::npos);
  }
  SUBCASE("candidate that does not compile") {
    write_store(db.path, traffic(3, 0));
    auto rep = replay(options(db.path, Json::parse(R"({"strategy":"fallback","attempts":[{"model":"no-such-model"}]})")));
    REQUIRE_FALSE(rep);
    CHECK(rep.error().kind == ErrorKind::invalid_config);
    CHECK(rep.error().message.find("does not compile") != std::string::npos);
    CHECK(rep.error().message.find("no-such-model") != std::string::npos);
  }
  SUBCASE("config document without the slug") {
    write_store(db.path, traffic(3, 0));
    auto rep = replay(options(db.path, Json::parse(R"({"routing":{"other":{"strategy":"single","model":"gpt-4o-mini"}}})")));
    REQUIRE_FALSE(rep);
    CHECK(rep.error().message.find("$.routing.production") != std::string::npos);
  }
  SUBCASE("responses mode on traces without bodies") {
    write_store(db.path, traffic(3, 0));
    auto o = options(db.path, production_as_deployed());
    o.mode = ReplayMode::responses;
    auto rep = replay(o);
    REQUIRE_FALSE(rep);
    CHECK(rep.error().message.find("capture_bodies was off") != std::string::npos);
  }
}

TEST_CASE("replay: budgets replay in time order so blocks start where the cap is reached") {
  TempDb db("replay-budget");
  write_store(db.path, traffic(100, 0));  // every request costs about $0.0014 on haiku
  // A config document: the candidate's own budgets. $0.05 a day for project acme blocks
  // after roughly 35 requests (reservations are estimates, so not exactly).
  Json doc = Json::parse(R"({"providers":{"anthropic":{"base_url":"http://127.0.0.1:9","api_key":"k"},"openai":{"base_url":"http://127.0.0.1:9/v1","api_key":"k"}},
    "routing":{"production":{"strategy":"single","model":"claude-haiku-4-5"},
      "fast":{"strategy":"single","model":"gpt-4o-mini"}},
    "budgets":[{"name":"acme-daily","scope":{"project":"acme"},"window":"daily","limit_usd":0.05}]})");
  auto rep = replay(options(db.path, doc));
  REQUIRE_MESSAGE(rep, (rep ? "" : rep.error().describe()));
  CHECK(rep->current.budget_blocks == 0);
  CHECK(rep->candidate.budget_blocks > 30);
  CHECK(rep->candidate.budget_blocks < 90);
  CHECK(rep->candidate.errors["budget_exceeded"] == rep->candidate.budget_blocks);
  // These requests carry no max_tokens, so their output estimate does not block on its own
  // (docs/budgets.md): the cap can be passed by at most the last admitted request's cost.
  CHECK(rep->candidate.cost_usd <= 0.05 + 0.0015);
  CHECK(rep->candidate.cost_usd >= 0.05 - 0.0015);
  // Time order: the served requests come first, then only blocks.
  std::size_t first_block = rep->rows.size();
  for (std::size_t i = 0; i < rep->rows.size(); ++i)
    if (!rep->rows[i].candidate_ok) {
      first_block = i;
      break;
    }
  REQUIRE(first_block < rep->rows.size());
  CHECK(first_block > 10);
  for (std::size_t i = first_block; i < rep->rows.size(); ++i) CHECK_FALSE(rep->rows[i].candidate_ok);
}

TEST_CASE("replay: a soft budget threshold downgrades to the cheaper config") {
  TempDb db("replay-downgrade");
  write_store(db.path, traffic(100, 0));
  Json doc = Json::parse(R"({"providers":{"anthropic":{"base_url":"http://127.0.0.1:9","api_key":"k"},"openai":{"base_url":"http://127.0.0.1:9/v1","api_key":"k"}},
    "routing":{"production":{"strategy":"single","model":"claude-haiku-4-5"},
      "fast":{"strategy":"single","model":"gpt-4o-mini"}},
    "budgets":[{"name":"acme-daily","scope":{"project":"acme"},"window":"daily","limit_usd":1,
                "soft":{"percent":2,"downgrade_to":"@fast"}}]})");
  auto rep = replay(options(db.path, doc));
  REQUIRE_MESSAGE(rep, (rep ? "" : rep.error().describe()));
  CHECK(rep->candidate.budget_downgrades > 50);
  CHECK(rep->candidate.routes["openai/gpt-4o-mini"] == rep->candidate.budget_downgrades);
  CHECK(rep->candidate.success_rate == 1.0);
  CHECK(rep->rows.front().candidate_downgraded == false);  // below the threshold at first
  CHECK(rep->rows.back().candidate_downgraded == true);
}

TEST_CASE("replay guard: parses clauses and names what is wrong") {
  auto g = parse_guard("success>=current, p95 <= 1.1*current,cost_per_request<0.002,success>=99.5%");
  REQUIRE(g);
  REQUIRE(g->size() == 4);
  CHECK((*g)[0].metric == "success");
  CHECK((*g)[0].relative);
  CHECK((*g)[1].op == "<=");
  CHECK((*g)[1].factor == doctest::Approx(1.1));
  CHECK_FALSE((*g)[2].relative);
  CHECK((*g)[2].constant == doctest::Approx(0.002));
  CHECK((*g)[3].constant == doctest::Approx(0.995));
  auto bad = [](const char* text, const char* says) {
    auto r = parse_guard(text);
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(r.error().message.find(says) != std::string::npos, r.error().message);
  };
  bad("", "empty");
  bad("succes>=current", "unknown metric 'succes'");
  bad("success current", "no comparison");
  bad("success=current", "use ==");
  bad("p95<=abc", "not a number");
  bad("p95<=1.1*x", "k*current");
  bad("success>=current,,p95<=current", "empty clause");
  bad(">=current", "no metric");
}

TEST_CASE("replay guard: evaluates on the candidate against the recorded side") {
  ReplayReport r;
  r.current.success_rate = 0.95;
  r.current.p95_ms = 1000;
  r.candidate.success_rate = 0.97;
  r.candidate.p95_ms = 1150;
  auto v = evaluate_guard("success>=current,p95<=1.1*current", r);
  REQUIRE(v);
  CHECK_FALSE(v->passed);
  REQUIRE(v->checks.size() == 2);
  CHECK(v->checks[0].passed);
  CHECK_FALSE(v->checks[1].passed);
  CHECK(v->checks[1].bound == doctest::Approx(1100));
  CHECK(v->summary().find("FAIL p95<=1.1*current") != std::string::npos);
  auto w = evaluate_guard("success>=current,p95<=1.2*current", r);
  REQUIRE(w);
  CHECK(w->passed);
}

namespace {
struct FakePublisher final : ConfigPublisher {
  std::string slug;
  Json config, audit;
  int calls = 0;
  Result<std::int64_t> publish(const std::string& s, const Json& c, const Json& a) override {
    slug = s;
    config = c;
    audit = a;
    ++calls;
    return 4;
  }
};
}  // namespace

TEST_CASE("replay promote: publishes only when the guard passes, and says when there is no config store") {
  ReplayReport r;
  r.slug = "@production";
  r.current.success_rate = 0.9;
  r.candidate.success_rate = 0.99;
  Json cfg = Json::parse(R"({"strategy":"single","model":"gpt-4o-mini"})");
  FakePublisher pub;
  auto v = promote(r, cfg, "success>=current", &pub);
  REQUIRE(v);
  CHECK(*v == 4);
  CHECK(pub.slug == "production");
  CHECK(pub.config == cfg);
  CHECK(pub.audit["source"] == "replay");
  CHECK(pub.audit["replay"]["candidate"]["success_rate"] == 0.99);
  auto no = promote(r, cfg, "success>=1.2*current", &pub);
  REQUIRE_FALSE(no);
  CHECK(no.error().message.find("not promoted") != std::string::npos);
  CHECK(pub.calls == 1);
  auto nostore = promote(r, cfg, "success>=current", nullptr);
  REQUIRE_FALSE(nostore);
  CHECK(nostore.error().message.find("needs the config store") != std::string::npos);
}

TEST_CASE("trace store migration: an older file gains the replay columns, backfilled from the bodies") {
  TempDb db("replay-migrate");
  auto t = traffic(2, 0);
  t[0].stream = true;
  t[0].api_key_id = "key_1";
  t[0].budget_actions.push_back("downgrade to @fast (budget acme at 81%)");
  t[1].ok = false;
  t[1].error_kind = "timeout";
  t[1].est_input_tokens = 321;
  t[1].max_tokens = 64;
  write_store(db.path, t);
  {  // make it look like a store written before the columns existed
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(db.path.c_str(), &raw) == SQLITE_OK);
    for (const char* col : {"stream", "api_key_id", "est_input_tokens", "max_tokens", "downgraded"})
      REQUIRE(sqlite3_exec(raw, (std::string("ALTER TABLE traces DROP COLUMN ") + col).c_str(), nullptr, nullptr,
                           nullptr) == SQLITE_OK);
    sqlite3_close(raw);
  }
  auto check = [&](TraceStore& s) {
    std::vector<TraceSummary> got;
    TraceQuery q;
    q.newest_first = false;
    REQUIRE(s.scan(q, [&](TraceSummary&& x) { got.push_back(std::move(x)); }));
    REQUIRE(got.size() == 2);
    CHECK(got[0].stream);
    CHECK(got[0].api_key_id == "key_1");
    CHECK(got[0].downgraded);
    CHECK(got[0].attempts.size() == 1);
    CHECK(got[0].attempts[0].model == kHaiku);
    CHECK_FALSE(got[1].stream);
    CHECK(got[1].est_input_tokens == 321);
    CHECK(got[1].max_tokens == 64);
    CHECK_FALSE(got[1].downgraded);
  };
  SUBCASE("read-only: read from the JSON bodies") {
    auto ro = TraceStore::open(db.path, TraceStore::Mode::read_only);
    REQUIRE(ro);
    check(**ro);
  }
  SUBCASE("read-write open migrates in place") {
    auto rw = TraceStore::open(db.path);
    REQUIRE(rw);
    check(**rw);
    rw->reset();
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(db.path.c_str(), &raw) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(raw, "SELECT stream, downgraded FROM traces ORDER BY time_us", -1, &st, nullptr) ==
            SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) == 1);
    CHECK(sqlite3_column_int(st, 1) == 1);
    sqlite3_finalize(st);
    sqlite3_close(raw);
  }
}
