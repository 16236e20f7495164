// TraceStore against a real SQLite file: queries and aggregates on known data, restart,
// retention, export, and clear errors for locked, corrupt and foreign files.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <fstream>
#include <sstream>

#include "unit-trace-support.hpp"

using namespace trace_test;

namespace {

// Seven traces with hand-computed aggregates (see the comments on each check).
std::vector<DecisionTrace> known_traces() {
  const WallTime b = base_time();
  return {
      make_trace("r1", b - 1h, {{"claude-haiku-4-5", "anthropic", true, "ok", 100ms, 0.001, 0.002, 100, 50}}, "acme",
                 "u1", {{"env", "prod"}, {"team", "a"}}),
      make_trace("r2", b - 2h,
                 {{"claude-haiku-4-5", "anthropic", false, "rate_limited", 50ms, 0, 0, 0, 0, 0ms, "429 slow down"},
                  {"gpt-4o-mini", "openai", true, "ok", 200ms, 0.003, 0.004, 300, 80, 50ms}},
                 "acme", "u2", {{"env", "prod"}}),
      make_trace("r3", b - 3h, {{"gpt-4o-mini", "openai", true, "ok", 300ms, 0.01, 0.02, 1000, 400}}, "beta", "u1",
                 {{"env", "dev"}}),
      make_trace("r4", b - 30h, {{"gemini-2.5-flash", "google", true, "ok", 400ms, 0.5, 0.5, 9000, 9000}}, "beta"),
      make_trace("r5", b - 4h,
                 {{"claude-haiku-4-5", "anthropic", false, "timeout", 2000ms, 0, 0, 0, 0, 0ms, "attempt timeout 2000 ms"},
                  {"gpt-4o-mini", "openai", false, "server_error", 30ms, 0, 0, 0, 0, 0ms, "upstream 500"}},
                 "acme", "u2"),
      make_trace("r6", b - 5h, {}, "acme"),
      make_trace("r7", b - 24h * 13 - 12h, {{"gemini-2.5-flash", "google", true, "ok", 400ms, 1.0, 1.0, 1, 1}},
                 "beta"),
  };
}

std::shared_ptr<TraceStore> filled_store(const std::string& path) {
  auto s = TraceStore::open(path);
  REQUIRE(s);
  REQUIRE((*s)->write(known_traces()));
  return *s;
}

std::vector<std::string> ids(const std::vector<DecisionTrace>& ts) {
  std::vector<std::string> out;
  for (const auto& t : ts) out.push_back(t.request_id);
  return out;
}

const SpendRow* row(const SpendReport& r, const std::string& key) {
  for (const auto& x : r.rows)
    if (x.key == key) return &x;
  return nullptr;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

}  // namespace

TEST_CASE("TraceStore: get by id returns the stored trace intact") {
  TempDb db("store-get");
  auto store = filled_store(db.path);
  auto r2 = store->get("r2");
  REQUIRE(r2);
  REQUIRE(r2->has_value());
  const DecisionTrace& t = **r2;
  CHECK(t.to_json() == known_traces()[1].to_json());
  auto missing = store->get("nope");
  REQUIRE(missing);
  CHECK_FALSE(missing->has_value());
}

TEST_CASE("TraceStore: queries filter by time, tag, user, project, model, provider and status") {
  TempDb db("store-query");
  auto store = filled_store(db.path);
  const WallTime b = base_time();
  auto q = [&](TraceQuery query) {
    auto r = store->query(query);
    REQUIRE(r);
    return ids(*r);
  };
  using V = std::vector<std::string>;
  TraceQuery all;
  all.limit = 0;
  CHECK(q(all) == V{"r1", "r2", "r3", "r5", "r6", "r4", "r7"});  // newest first
  TraceQuery oldest = all;
  oldest.newest_first = false;
  oldest.limit = 2;
  CHECK(q(oldest) == V{"r7", "r4"});

  TraceQuery window;
  window.since = b - 24h;
  window.until = b;
  CHECK(q(window) == V{"r1", "r2", "r3", "r5", "r6"});
  window.ok = true;
  CHECK(q(window) == V{"r1", "r2", "r3"});
  window.ok = false;
  CHECK(q(window) == V{"r5", "r6"});

  TraceQuery tag;
  tag.tags = {{"env", "prod"}};
  CHECK(q(tag) == V{"r1", "r2"});
  tag.tags.push_back({"team", "a"});
  CHECK(q(tag) == V{"r1"});

  TraceQuery model;
  model.model = "gpt-4o-mini";  // any attempt, served or not
  CHECK(q(model) == V{"r2", "r3", "r5"});
  TraceQuery provider;
  provider.provider = "google";
  CHECK(q(provider) == V{"r4", "r7"});
  TraceQuery user;
  user.end_user = "u1";
  CHECK(q(user) == V{"r1", "r3"});
  TraceQuery project;
  project.project = "beta";
  project.tags = {{"env", "dev"}};
  CHECK(q(project) == V{"r3"});
  TraceQuery limited;
  limited.limit = 2;
  CHECK(q(limited) == V{"r1", "r2"});

  auto n = store->count(TraceQuery{.project = "acme"});
  REQUIRE(n);
  CHECK(*n == 4);
}

TEST_CASE("TraceStore: spend by model, provider, project, tag and user over a window") {
  TempDb db("store-spend");
  auto store = filled_store(db.path);
  const WallTime b = base_time();

  auto by_model = store->spend(SpendDimension::model, b - 24h, b);
  REQUIRE(by_model);
  // r4 and r7 are outside the window: gemini does not appear.
  CHECK(by_model->rows.size() == 2);
  CHECK(by_model->rows[0].key == "gpt-4o-mini");  // most expensive first
  CHECK(by_model->rows[0].requests == 3);         // r2, r3, r5
  CHECK(by_model->rows[0].total_usd() == doctest::Approx(0.037));
  CHECK(by_model->rows[0].input_tokens == 1300);
  CHECK(row(*by_model, "claude-haiku-4-5")->requests == 3);
  CHECK(row(*by_model, "claude-haiku-4-5")->output_usd == doctest::Approx(0.002));
  CHECK(by_model->total.requests == 5);
  CHECK(by_model->total.total_usd() == doctest::Approx(0.040));

  auto by_provider = store->spend(SpendDimension::provider, b - 24h, b);
  REQUIRE(by_provider);
  CHECK(row(*by_provider, "openai")->total_usd() == doctest::Approx(0.037));
  CHECK(row(*by_provider, "anthropic")->total_usd() == doctest::Approx(0.003));

  auto by_project = store->spend(SpendDimension::project, b - 24h, b);
  REQUIRE(by_project);
  CHECK(row(*by_project, "acme")->requests == 4);
  CHECK(row(*by_project, "acme")->total_usd() == doctest::Approx(0.010));
  CHECK(row(*by_project, "beta")->total_usd() == doctest::Approx(0.030));

  auto by_tag = store->spend(SpendDimension::tag, b - 24h, b);
  REQUIRE(by_tag);
  CHECK(row(*by_tag, "env=prod")->requests == 2);
  CHECK(row(*by_tag, "env=prod")->total_usd() == doctest::Approx(0.010));
  CHECK(row(*by_tag, "team=a")->total_usd() == doctest::Approx(0.003));
  CHECK(row(*by_tag, "env=dev")->total_usd() == doctest::Approx(0.030));

  auto by_user = store->spend(SpendDimension::end_user, b - 24h, b);
  REQUIRE(by_user);
  CHECK(row(*by_user, "u1")->total_usd() == doctest::Approx(0.033));
  CHECK(row(*by_user, "u2")->requests == 2);
  CHECK(row(*by_user, "(none)")->requests == 1);  // r6 had no end user

  auto wide = store->spend(SpendDimension::model, b - 24h * 60, b + 1h);
  REQUIRE(wide);
  CHECK(row(*wide, "gemini-2.5-flash")->total_usd() == doctest::Approx(3.0));
}

TEST_CASE("TraceStore: latency percentiles, error groups and failover frequency") {
  TempDb db("store-analytics");
  auto store = filled_store(db.path);
  const WallTime b = base_time();

  auto lat = store->latency(LatencyDimension::model, b - 24h, b);
  REQUIRE(lat);
  REQUIRE(lat->size() == 2);
  const LatencyRow& mini = (*lat)[1];
  CHECK(mini.key == "gpt-4o-mini");
  CHECK(mini.count == 2);
  CHECK(mini.p50 == Nanos{200ms});
  CHECK(mini.p95 == Nanos{300ms});
  CHECK(mini.p99 == Nanos{300ms});
  CHECK(mini.ttft_p50 == Nanos{50ms});
  CHECK((*lat)[0].p50 == Nanos{100ms});
  CHECK((*lat)[0].ttft_p50 == Nanos{0});

  auto latp = store->latency(LatencyDimension::provider, b - 48h, b);
  REQUIRE(latp);
  REQUIRE(latp->size() == 3);
  CHECK((*latp)[1].key == "google");
  CHECK((*latp)[1].p99 == Nanos{400ms});

  // Many samples: nearest-rank over 1..100 ms.
  std::vector<DecisionTrace> many;
  for (int i = 1; i <= 100; ++i)
    many.push_back(make_trace("m" + std::to_string(i), b - 24h * 20, {{"m", "p", true, "ok", Millis{i}}}));
  REQUIRE(store->write(many));
  auto lat100 = store->latency(LatencyDimension::provider, b - 24h * 20 - 1h, b - 24h * 20 + 1h);
  REQUIRE(lat100);
  REQUIRE(lat100->size() == 1);
  CHECK((*lat100)[0].p50 == Nanos{50ms});
  CHECK((*lat100)[0].p95 == Nanos{95ms});
  CHECK((*lat100)[0].p99 == Nanos{99ms});

  auto errs = store->error_groups(b - 24h, b);
  REQUIRE(errs);
  REQUIRE(errs->size() == 4);
  bool saw_timeout = false, saw_budget = false;
  for (const auto& g : *errs) {
    CHECK(g.count == 1);
    if (g.error_class == "timeout") {
      saw_timeout = true;
      CHECK(g.provider == "anthropic");
      CHECK(g.model == "claude-haiku-4-5");
      CHECK(g.sample_message == "attempt timeout 2000 ms");
      CHECK(g.first == b - 4h);
    }
    if (g.error_class == "budget_exceeded") {
      saw_budget = true;
      CHECK(g.sample_message == "project cap reached");
    }
  }
  CHECK(saw_timeout);
  CHECK(saw_budget);

  auto fo = store->failovers(b - 24h, b);
  REQUIRE(fo);
  CHECK(fo->requests == 5);
  CHECK(fo->failed_over == 2);  // r2 and r5
  CHECK(fo->rescued == 1);      // r2
  CHECK(fo->failed == 2);       // r5 and r6
  CHECK(fo->rate() == doctest::Approx(0.4));
}

TEST_CASE("TraceStore: month-end forecast from month-to-date spend and the recent daily rate") {
  TempDb db("store-forecast");
  auto store = filled_store(db.path);
  auto f = store->forecast(base_time(), 7);  // 2026-01-15 12:00 UTC
  REQUIRE(f);
  CHECK(f->days_elapsed == doctest::Approx(14.5));
  CHECK(f->days_remaining == doctest::Approx(16.5));
  CHECK(f->month_to_date_usd == doctest::Approx(3.04));  // everything, r7 included
  CHECK(f->daily_rate_usd == doctest::Approx(1.04 / 7));  // r7 is 13.5 days old: outside the 7 days
  CHECK(f->forecast_usd == doctest::Approx(3.04 + 1.04 / 7 * 16.5));
}

TEST_CASE("TraceStore: a reopened file keeps every trace (restart)") {
  TempDb db("store-restart");
  {
    auto store = filled_store(db.path);
    REQUIRE(store->add_counters(7, 2, 1, base_time()));
  }
  auto ro = TraceStore::open(db.path, TraceStore::Mode::read_only);
  REQUIRE(ro);
  auto all = (*ro)->query(TraceQuery{.limit = 0});
  REQUIRE(all);
  CHECK(all->size() == 7);
  auto r5 = (*ro)->get("r5");
  REQUIRE(r5);
  REQUIRE(r5->has_value());
  CHECK((*r5)->to_json() == known_traces()[4].to_json());
  auto c = (*ro)->counters();
  REQUIRE(c);
  CHECK(c->written == 7);
  CHECK(c->dropped == 2);
  CHECK(c->write_errors == 1);
  CHECK(c->stored == 7);
  CHECK(c->updated == base_time());
  auto w = (*ro)->write({known_traces()[0]});
  REQUIRE_FALSE(w);
  CHECK(w.error().kind == ErrorKind::io);
}

namespace {
std::int64_t page_size_of(const std::string& path) {
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw, "PRAGMA page_size", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  const std::int64_t n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(raw);
  return n;
}
}  // namespace

TEST_CASE("TraceStore: new files get 8 KB pages and a file with 4 KB pages keeps them and stays writable") {
  TempDb fresh("store-page-new");
  { filled_store(fresh.path); }
  CHECK(page_size_of(fresh.path) == 8192);

  // A store made by an older build (4 KB pages, WAL), already holding traces.
  TempDb old("store-page-old");
  {
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(old.path.c_str(), &raw) == SQLITE_OK);
    REQUIRE(sqlite3_exec(raw, "PRAGMA page_size=4096; PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(raw);
    filled_store(old.path);
  }
  REQUIRE(page_size_of(old.path) == 4096);
  auto store = TraceStore::open(old.path);
  REQUIRE(store);
  auto extra = known_traces()[0];
  extra.request_id = "after-reopen";
  REQUIRE((*store)->write({extra}));
  auto all = (*store)->query(TraceQuery{.limit = 0});
  REQUIRE(all);
  CHECK(all->size() == known_traces().size() + 1);
  CHECK((*store)->get("after-reopen")->has_value());
  store->reset();
  CHECK(page_size_of(old.path) == 4096);
}

namespace {
std::vector<std::string> index_names(const std::string& path) {
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw,
                             "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name IN ('traces','trace_tags','trace_attempts') "
                             "ORDER BY name",
                             -1, &st, nullptr) == SQLITE_OK);
  std::vector<std::string> out;
  while (sqlite3_step(st) == SQLITE_ROW) out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
  sqlite3_finalize(st);
  sqlite3_close(raw);
  return out;
}

// Gives a file the indexes of schema 2 (what older builds create, and recreate on every open);
// `created_by_old` also removes schema 3's index (a file an older build created).
void add_schema2_indexes(const std::string& path, bool created_by_old) {
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
  if (created_by_old) REQUIRE(sqlite3_exec(raw, "DROP INDEX traces_timeline", nullptr, nullptr, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_exec(raw,
                       "CREATE INDEX IF NOT EXISTS traces_project ON traces(project, time_us); "
                       "CREATE INDEX IF NOT EXISTS traces_time ON traces(time_us); "
                       "CREATE INDEX IF NOT EXISTS traces_end_user ON traces(end_user, time_us); "
                       "CREATE INDEX IF NOT EXISTS trace_tags_kv ON trace_tags(key, value, time_us); "
                       "CREATE INDEX IF NOT EXISTS trace_attempts_time ON trace_attempts(time_us); "
                       "UPDATE trace_meta SET value=2 WHERE key='schema_version'",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);
}
}  // namespace

TEST_CASE("TraceStore: schema 3 migration drops five indexes, adds one and keeps every search and aggregate") {
  using V = std::vector<std::string>;
  TempDb db("store-migrate-3");
  { filled_store(db.path); }
  CHECK(index_names(db.path) == V{"sqlite_autoindex_traces_1", "traces_timeline"});
  add_schema2_indexes(db.path, true);  // now as an older build made it
  REQUIRE(index_names(db.path) ==
          V{"sqlite_autoindex_traces_1", "trace_attempts_time", "trace_tags_kv", "traces_end_user", "traces_project",
            "traces_time"});

  auto searches = [&](TraceStore& s) {
    auto user = s.query(TraceQuery{.end_user = "u1"});
    REQUIRE(user);
    CHECK(ids(*user) == V{"r1", "r3"});
    TraceQuery window;
    window.since = base_time() - 24h;
    window.end_user = "u2";
    auto w = s.query(window);
    REQUIRE(w);
    CHECK(ids(*w) == V{"r2", "r5"});
    auto n = s.count(TraceQuery{.end_user = "u2"});
    REQUIRE(n);
    CHECK(*n == 2);
    TraceQuery tag;
    tag.tags = {{"env", "prod"}};
    auto tagged = s.query(tag);
    REQUIRE(tagged);
    CHECK(ids(*tagged) == V{"r1", "r2"});
    auto by_tag = s.spend(SpendDimension::tag, base_time() - 48h, base_time());
    REQUIRE(by_tag);
    const SpendRow* prod = row(*by_tag, "env=prod");
    REQUIRE(prod);
    CHECK(prod->requests == 2);
    auto beta = s.query(TraceQuery{.project = "beta"});
    REQUIRE(beta);
    CHECK(ids(*beta) == V{"r3", "r4", "r7"});
    // Per-attempt analytics of one project (r3, beta, also used gpt-4o-mini in the window).
    AnalyticsQuery acme{base_time() - 48h, base_time(), "acme", std::chrono::seconds{0}};
    auto by_model = s.spend(SpendDimension::model, acme);
    REQUIRE(by_model);
    const SpendRow* mini = row(*by_model, "gpt-4o-mini");
    REQUIRE(mini);
    CHECK(mini->requests == 2);
    CHECK(mini->input_usd == doctest::Approx(0.003));
    auto lat = s.latency(LatencyDimension::model, acme);
    REQUIRE(lat);
    std::uint64_t mini_ok = 0;
    for (const auto& r : *lat)
      if (r.key == "gpt-4o-mini") mini_ok = r.count;
    CHECK(mini_ok == 1);  // r2's served attempt (r3's is beta's, r5's failed)
    auto errors = s.error_groups(acme);
    REQUIRE(errors);
    CHECK(errors->size() == 4);  // r2 haiku rate_limited, r5 haiku timeout and mini server_error, r6 budget
    for (const auto& g : *errors)
      if (g.error_class == "timeout") CHECK(g.sample_message == "attempt timeout 2000 ms");
  };
  {  // read-only: the old indexes serve, nothing changes
    auto ro = TraceStore::open(db.path, TraceStore::Mode::read_only);
    REQUIRE(ro);
    searches(**ro);
  }
  CHECK(index_names(db.path) ==
        V{"sqlite_autoindex_traces_1", "trace_attempts_time", "trace_tags_kv", "traces_end_user", "traces_project",
            "traces_time"});
  {  // read-write: migrated in place, still searchable and writable
    auto rw = TraceStore::open(db.path);
    REQUIRE(rw);
    searches(**rw);
    auto extra = known_traces()[0];
    extra.request_id = "after-migration";
    REQUIRE((*rw)->write({extra}));
    auto user = (*rw)->query(TraceQuery{.end_user = "u1"});
    REQUIRE(user);
    CHECK(ids(*user) == V{"after-migration", "r1", "r3"});
  }
  CHECK(index_names(db.path) == V{"sqlite_autoindex_traces_1", "traces_timeline"});

  // An older build that opens the migrated file recreates its indexes: the next open drops them again.
  add_schema2_indexes(db.path, false);
  REQUIRE(index_names(db.path).size() == 7);
  { REQUIRE(TraceStore::open(db.path)); }
  CHECK(index_names(db.path) == V{"sqlite_autoindex_traces_1", "traces_timeline"});
}

TEST_CASE("TraceStore: a large batch keeps every attempt and tag row, and a repeated id in it replaces the earlier one") {
  // 45 traces x 2 attempts x 2 tags: the side rows go through the multi-row inserts (groups of
  // 32) and the single-row rest; "dup" appears twice in the same batch, the second time with one
  // attempt and one tag, and must leave exactly that.
  TempDb db("store-big-batch");
  auto store = TraceStore::open(db.path);
  REQUIRE(store);
  std::vector<DecisionTrace> batch;
  for (int i = 0; i < 45; ++i) {
    const std::string id = i == 10 ? "dup" : "b" + std::to_string(i);
    batch.push_back(make_trace(id, base_time() + std::chrono::seconds{i},
                               {{"claude-haiku-4-5", "anthropic", false, "rate_limited", 40ms, 0, 0, 0, 0, 0ms, "429 #" + id},
                                {"gpt-4o-mini", "openai", true, "ok", 800ms, 0.001, 0.002, 100, 20}},
                               "acme", "u" + std::to_string(i % 3), {{"env", "prod"}, {"n", std::to_string(i)}}));
  }
  batch.push_back(make_trace("dup", base_time() + 50s, {{"gpt-4o", "openai", true, "ok", 500ms, 0.01, 0.02, 10, 5}}, "beta",
                             "", {{"env", "dev"}}));
  REQUIRE((*store)->write(batch));

  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(db.path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  auto count = [&](const char* sql) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(raw, sql, -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    const auto n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
  };
  CHECK(count("SELECT count(*) FROM traces") == 45);
  CHECK(count("SELECT count(*) FROM trace_attempts") == 44 * 2 + 1);
  CHECK(count("SELECT count(*) FROM trace_tags") == 44 * 2 + 1);
  CHECK(count("SELECT count(*) FROM trace_attempts WHERE request_id = 'dup' AND model = 'gpt-4o'") == 1);
  CHECK(count("SELECT count(*) FROM trace_tags WHERE request_id = 'dup' AND key = 'env' AND value = 'dev'") == 1);
  CHECK(count("SELECT count(*) FROM trace_attempts WHERE request_id = 'b44' AND idx = 0 AND error = '429 #b44' "
              "AND status = 429 AND ok = 0") == 1);
  CHECK(count("SELECT count(*) FROM trace_attempts WHERE request_id = 'b44' AND idx = 1 AND output_tokens = 20 AND ok = 1") == 1);
  sqlite3_close(raw);

  auto q = (*store)->query(TraceQuery{.tags = {{"n", "33"}}, .limit = 0});
  REQUIRE(q);
  REQUIRE(q->size() == 1);
  CHECK(q->front().request_id == "b33");
  auto by_model = (*store)->query(TraceQuery{.model = "claude-haiku-4-5", .limit = 0});
  REQUIRE(by_model);
  CHECK(by_model->size() == 44);
}

TEST_CASE("TraceStore: writing a request id again replaces the trace and its side rows") {
  TempDb db("store-replace");
  auto store = filled_store(db.path);
  DecisionTrace again = make_trace("r1", base_time() - 1h, {{"gpt-4o", "openai", true, "ok", 10ms, 1, 1}}, "zeta");
  REQUIRE(store->write({again}));
  auto t = store->get("r1");
  REQUIRE(t);
  CHECK((*t)->project == "zeta");
  auto by_model = store->spend(SpendDimension::model, base_time() - 24h, base_time());
  REQUIRE(by_model);
  CHECK(row(*by_model, "claude-haiku-4-5")->requests == 2);  // r1's haiku attempt is gone
  CHECK(row(*by_model, "gpt-4o")->total_usd() == doctest::Approx(2.0));
  auto tagged = store->query(TraceQuery{.tags = {{"team", "a"}}});
  REQUIRE(tagged);
  CHECK(tagged->empty());
}

TEST_CASE("TraceStore: retention deletes old traces with their attempts and tags") {
  TempDb db("store-retention");
  auto store = filled_store(db.path);
  auto deleted = store->apply_retention(1, base_time());
  REQUIRE(deleted);
  CHECK(*deleted == 2);  // r4 (30 h) and r7 (13.5 days)
  auto left = store->query(TraceQuery{.limit = 0});
  REQUIRE(left);
  CHECK(left->size() == 5);
  auto wide = store->spend(SpendDimension::provider, base_time() - 24h * 60, base_time());
  REQUIRE(wide);
  CHECK(row(*wide, "google") == nullptr);
  auto none = store->apply_retention(0, base_time());
  REQUIRE(none);
  CHECK(*none == 0);
}

TEST_CASE("TraceStore: export to JSONL and CSV") {
  TempDb db("store-export");
  auto store = filled_store(db.path);
  std::ostringstream jl;
  auto n = store->export_jsonl(TraceQuery{.limit = 0, .newest_first = false}, jl);
  REQUIRE(n);
  CHECK(*n == 7);
  std::istringstream lines(jl.str());
  std::string line;
  std::vector<std::string> seen;
  while (std::getline(lines, line)) {
    auto t = DecisionTrace::from_json(Json::parse(line));
    REQUIRE(t);
    seen.push_back(t->request_id);
  }
  CHECK(seen == std::vector<std::string>{"r7", "r4", "r6", "r5", "r3", "r2", "r1"});

  DecisionTrace quoted = make_trace("q1", base_time(), {{"m", "p", true, "ok", 1ms}});
  quoted.reason = "primary \"slow\", secondary healthy";
  REQUIRE(store->write({quoted}));
  std::ostringstream csv;
  auto rows = store->export_csv(TraceQuery{.tags = {}, .end_user = "", .project = "", .config = "", .model = "m"}, csv);
  REQUIRE(rows);
  CHECK(*rows == 1);
  std::string text = csv.str();
  CHECK(text.rfind("request_id,time,config,", 0) == 0);
  CHECK(text.find("q1,2026-01-15T12:00:00.000000Z,@production,3,fallback,acme") != std::string::npos);
  CHECK(text.find("\"primary \"\"slow\"\", secondary healthy\"\n") != std::string::npos);
}

TEST_CASE("TraceStore: a corrupt file gives a clear io error, never a crash") {
  TempDb db("store-corrupt");
  std::string garbage;
  for (int i = 0; i < 8192; ++i) garbage += static_cast<char>((i * 131 + 7) % 251);
  write_file(db.path, garbage);
  for (auto mode : {TraceStore::Mode::read_write, TraceStore::Mode::read_only}) {
    auto s = TraceStore::open(db.path, mode);
    REQUIRE_FALSE(s);
    CHECK(s.error().kind == ErrorKind::io);
    CHECK(s.error().message.find("not a SQLite database or is corrupt") != std::string::npos);
    CHECK(s.error().message.find(db.path) != std::string::npos);
  }
  auto tracer = Tracer::open(TracerOptions{.path = db.path}, SteadyClock::instance());
  REQUIRE_FALSE(tracer);
  CHECK(tracer.error().kind == ErrorKind::io);
}

TEST_CASE("TraceStore: a malformed stored trace is reported with its id") {
  TempDb db("store-badrow");
  auto store = filled_store(db.path);
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(db.path.c_str(), &raw) == SQLITE_OK);
  REQUIRE(sqlite3_exec(raw, "UPDATE traces SET body='{\"attempts\": 5' WHERE request_id='r3'", nullptr, nullptr,
                       nullptr) == SQLITE_OK);
  sqlite3_close(raw);
  auto t = store->get("r3");
  REQUIRE_FALSE(t);
  CHECK(t.error().kind == ErrorKind::io);
  CHECK(t.error().message.find("r3") != std::string::npos);
  CHECK(store->get("r2"));
}

TEST_CASE("TraceStore: missing files and foreign databases give clear errors") {
  TempDb db("store-missing");
  auto s = TraceStore::open(db.path, TraceStore::Mode::read_only);
  REQUIRE_FALSE(s);
  CHECK(s.error().kind == ErrorKind::io);
  CHECK(s.error().message.find("no trace store at") != std::string::npos);

  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(db.path.c_str(), &raw) == SQLITE_OK);
  REQUIRE(sqlite3_exec(raw, "CREATE TABLE other(x)", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);
  auto foreign = TraceStore::open(db.path, TraceStore::Mode::read_only);
  REQUIRE_FALSE(foreign);
  CHECK(foreign.error().message.find("not a modelux trace store") != std::string::npos);
}

TEST_CASE("TraceStore: a file locked by another connection gives a clear io error") {
  TempDb db("store-locked");
  SUBCASE("locked before open (rollback journal, exclusive lock)") {
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(db.path.c_str(), &raw) == SQLITE_OK);
    REQUIRE(sqlite3_exec(raw, "CREATE TABLE x(a); BEGIN EXCLUSIVE; INSERT INTO x VALUES(1);", nullptr, nullptr,
                         nullptr) == SQLITE_OK);
    auto s = TraceStore::open(db.path, TraceStore::Mode::read_write, Millis{20});
    REQUIRE_FALSE(s);
    CHECK(s.error().kind == ErrorKind::io);
    CHECK(s.error().message.find("is locked by another connection") != std::string::npos);
    sqlite3_exec(raw, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(raw);
    CHECK(TraceStore::open(db.path, TraceStore::Mode::read_write, Millis{20}));
  }
  SUBCASE("locked while open (WAL, another writer holds the lock)") {
    auto store = TraceStore::open(db.path, TraceStore::Mode::read_write, Millis{20});
    REQUIRE(store);
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(db.path.c_str(), &raw) == SQLITE_OK);
    REQUIRE(sqlite3_exec(raw, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
    auto w = (*store)->write(known_traces());
    REQUIRE_FALSE(w);
    CHECK(w.error().kind == ErrorKind::io);
    CHECK(w.error().message.find("locked") != std::string::npos);
    auto readable = (*store)->count(TraceQuery{});  // WAL readers are not blocked
    REQUIRE(readable);
    CHECK(*readable == 0);
    sqlite3_exec(raw, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(raw);
    CHECK((*store)->write(known_traces()));
  }
}

TEST_CASE("TraceStore: an in-memory store works and cannot be opened read-only") {
  auto mem = TraceStore::open(":memory:");
  REQUIRE(mem);
  REQUIRE((*mem)->write(known_traces()));
  auto n = (*mem)->count(TraceQuery{});
  REQUIRE(n);
  CHECK(*n == 7);
  CHECK_FALSE(TraceStore::open("", TraceStore::Mode::read_only));
}
