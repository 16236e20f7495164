// Redis fleet sharing of budget ledgers, off the hot path.
//
// Each ledger is one Redis hash, "<prefix>:<budget>|<scope value>". Every instance owns its
// own fields and writes ABSOLUTE values there, never increments:
//   "<instance>|p|<period start ms>" -> "nusd:tokens:requests"   settled spend in that period
//   "<instance>|r"                   -> "nusd:tokens:requests:expiry_ms"  in-flight reservations
// One sync cycle (every sync_interval, on the background thread) pipelines, per ledger:
// HSET of the own fields, PEXPIRE of the key, HGETALL; then folds the other instances' fields
// into the ledger's remote view. Because writes are absolute and per instance, a retry after
// a failure is idempotent and a Redis that restarts empty is refilled on the next cycle:
// nothing is lost and nothing is double counted. While Redis is unreachable the instance keeps
// serving on its local view (the last fleet view it saw plus its own spend), reports
// "connected": false in snapshot() and logs once per outage.
//
// Staleness: a view of another instance is at most G_self + G_other old, where G is the gap
// between two successful syncs (≈ sync_interval + round trip); see docs/budgets.md for the
// overshoot bound this gives.
#include <hiredis/hiredis.h>

#include <charconv>
#include <map>
#include <unordered_map>

#include "budget/manager_impl.hpp"

namespace modelux {

namespace {

bool parse_i64(std::string_view s, std::int64_t& v) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

/// "a:b:c[:d]" -> up to 4 integers.
int parse_fields(std::string_view s, std::int64_t out[4]) {
  int n = 0;
  while (n < 4) {
    auto colon = s.find(':');
    if (!parse_i64(s.substr(0, colon), out[n])) return -1;
    ++n;
    if (colon == std::string_view::npos) break;
    s.remove_prefix(colon + 1);
  }
  return n;
}

std::string totals_value(const BudgetTotals& t) {
  return std::to_string(t.nusd) + ":" + std::to_string(t.tokens) + ":" + std::to_string(t.requests);
}

struct ReplyFree {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;


/// Percent-decodes a URL component. False on a malformed escape.
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    unsigned v = 0;
    auto r = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
    if (r.ec != std::errc{} || r.ptr != in.data() + i + 3) return false;
    out += static_cast<char>(v);
    i += 2;
  }
  return true;
}

}  // namespace

// redis://[[user]:password@]host[:port][/db]. Error messages never quote the URL: it may
// carry the password.
Result<void> BudgetManager::Impl::parse_redis_url() {
  std::string_view u = options.redis_url;
  auto bad = [](std::string what) {
    return fail(ErrorKind::invalid_config, "budget_backend.redis_url: " + what, "redis_url");
  };
  if (u.starts_with("rediss://"))
    return bad("rediss:// (TLS) is not supported by this build: the hiredis it links (0.14) has no SSL support. "
               "Use redis:// (over a private network or a TLS tunnel such as stunnel)");
  if (u.starts_with("redis://")) u.remove_prefix(8);
  else if (u.find("://") != std::string_view::npos)
    return bad("must look like redis://[[user]:password@]host[:port][/db]");
  // The credentials end at the last '@' (so an unescaped '@' or '/' in the password works).
  if (auto at = u.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = u.substr(0, at);
    u.remove_prefix(at + 1);
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos)
      return bad("credentials must be written ':password@' or 'user:password@'");
    if (!percent_decode(userinfo.substr(0, colon), redis.user) ||
        !percent_decode(userinfo.substr(colon + 1), redis.password))
      return bad("malformed percent-escape in the credentials");
    if (redis.password.empty()) return bad("empty password in the credentials");
  }
  std::string_view hostport = u.substr(0, u.find('/'));
  if (auto slash = u.find('/'); slash != std::string_view::npos && slash + 1 < u.size()) {
    std::int64_t db_i = 0;
    if (!parse_i64(u.substr(slash + 1), db_i) || db_i < 0 || db_i > 1000) return bad("database must be a number");
    redis.db = static_cast<int>(db_i);
  }
  std::string_view portpart;
  if (hostport.starts_with('[')) {  // [::1]:6379
    const auto close = hostport.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 address");
    redis.host = std::string(hostport.substr(1, close - 1));
    if (close + 1 < hostport.size()) {
      if (hostport[close + 1] != ':') return bad("expected ':port' after the IPv6 address");
      portpart = hostport.substr(close + 2);
    }
  } else {
    auto colon = hostport.rfind(':');
    redis.host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) portpart = hostport.substr(colon + 1);
  }
  if (!portpart.empty() || hostport.ends_with(':')) {
    std::int64_t p = 0;
    if (!parse_i64(portpart, p) || p <= 0 || p > 65535) return bad("port must be in 1..65535");
    redis.port = static_cast<int>(p);
  }
  if (redis.host.empty()) redis.host = "127.0.0.1";
  return {};
}

void BudgetManager::Impl::close_redis() noexcept {
  if (redis.ctx) redisFree(redis.ctx);
  redis.ctx = nullptr;
}

Json BudgetManager::Impl::redis_status() const {
  if (options.redis_url.empty()) return Json{{"configured", false}};
  std::lock_guard st(status_mu);
  return Json{{"configured", true},
              {"connected", redis.connected},
              {"instance", options.instance_id},
              {"syncs", redis.syncs},
              {"failures", redis.failures},
              {"last_error", redis.last_error},
              {"max_sync_gap_ms", std::chrono::duration<double, std::milli>(redis.max_gap).count()},
              {"sync_interval_ms", options.sync_interval.count()}};
}

Result<void> BudgetManager::Impl::sync_redis() {
  std::lock_guard io(io_mu);
  // Real time: this measures a real background loop, not request time.
  const Instant cycle_start = std::chrono::steady_clock::now();
  auto failed = [&](std::string why) -> Result<void> {
    close_redis();
    // Defence in depth: no server or library message may carry the password out.
    if (!redis.password.empty())
      for (auto p = why.find(redis.password); p != std::string::npos; p = why.find(redis.password, p))
        why.replace(p, redis.password.size(), "***");
    bool first = false;
    {
      std::lock_guard st(status_mu);
      ++redis.failures;
      redis.last_error = why;
      first = redis.connected || !redis.ever_failed_logged;  // log once per outage
      redis.ever_failed_logged = true;
      redis.connected = false;
    }
    redis_up.store(false, std::memory_order_release);
    if (first)
      log("Redis at " + redis.host + ":" + std::to_string(redis.port) + " unreachable (" + why +
          "); serving on the local view until it returns");
    if (options.outage_policy == RedisOutagePolicy::fair_share) {
      // Freeze this instance's share of what is left, once per outage.
      for (BudgetLedger* l : ledgers()) {
        std::lock_guard lk(l->mu);
        if (l->entry().limit_nusd <= 0 || l->outage_cap_nusd >= 0) continue;
        const std::int64_t c = l->committed().nusd;
        const std::int64_t left = std::max<std::int64_t>(0, l->entry().limit_nusd - c);
        l->outage_cap_nusd = c + left / std::max<std::uint32_t>(1, l->fleet_instances);
      }
    }
    return fail(ErrorKind::connection, "budget Redis sync failed: " + why);
  };

  if (!redis.ctx) {
    const auto t = std::chrono::duration_cast<std::chrono::microseconds>(options.redis_timeout);
    timeval tv{static_cast<time_t>(t.count() / 1'000'000), static_cast<suseconds_t>(t.count() % 1'000'000)};
    redis.ctx = redisConnectWithTimeout(redis.host.c_str(), redis.port, tv);
    if (!redis.ctx) return failed("out of memory");
    if (redis.ctx->err) return failed(redis.ctx->errstr);
    redisSetTimeout(redis.ctx, tv);
    // On every (re)connect: AUTH first, then SELECT.
    if (!redis.password.empty()) {
      std::vector<const char*> argv{"AUTH"};
      std::vector<std::size_t> lens{4};
      if (!redis.user.empty()) {
        argv.push_back(redis.user.data());
        lens.push_back(redis.user.size());
      }
      argv.push_back(redis.password.data());
      lens.push_back(redis.password.size());
      ReplyPtr r(static_cast<redisReply*>(
          redisCommandArgv(redis.ctx, static_cast<int>(argv.size()), argv.data(), lens.data())));
      if (!r) return failed(std::string("AUTH failed: ") + redis.ctx->errstr);
      if (r->type == REDIS_REPLY_ERROR)
        return failed("authentication failed" + (redis.user.empty() ? std::string() : " for user '" + redis.user + "'") +
                      " (check the password in budget_backend.redis_url): " + std::string(r->str, r->len));
    }
    if (redis.db != 0) {
      ReplyPtr r(static_cast<redisReply*>(redisCommand(redis.ctx, "SELECT %d", redis.db)));
      if (!r) return failed(std::string("SELECT failed: ") + redis.ctx->errstr);
      if (r->type == REDIS_REPLY_ERROR) return failed("SELECT " + std::to_string(redis.db) + " failed: " + std::string(r->str, r->len));
    }
  }

  struct Snap {
    BudgetLedger* ledger;
    std::string key;
    std::vector<std::int64_t> live;  // live period starts
  };
  std::vector<Snap> snaps;
  const std::string& inst = options.instance_id;
  const std::int64_t wall_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock.wall_now().time_since_epoch()).count();
  const std::int64_t res_ttl_ms = 3 * options.sync_interval.count() + 1000;
  std::size_t commands = 0;
  for (BudgetLedger* l : ledgers()) {
    std::vector<std::string> argv{"HSET", options.redis_prefix + ":" + l->key};
    Snap s{l, argv[1], {}};
    std::int64_t ttl_ms;
    {
      std::lock_guard lk(l->mu);
      if (!l->rolled_once) continue;  // never used here yet: nothing to push, nothing to check
      for (const BudgetPeriod& p : l->periods) {
        s.live.push_back(p.start_ms);
        argv.push_back(inst + "|p|" + std::to_string(p.start_ms));
        argv.push_back(totals_value(p.own));
      }
      argv.push_back(inst + "|r");
      argv.push_back(totals_value(l->reserved) + ":" + std::to_string(wall_ms + res_ttl_ms));
      ttl_ms = 2 * l->window_ms() + 3'600'000;
    }
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    redisAppendCommandArgv(redis.ctx, static_cast<int>(argv.size()), ptrs.data(), lens.data());
    const std::string ttl = std::to_string(ttl_ms);
    const char* ex[] = {"PEXPIRE", s.key.c_str(), ttl.c_str()};
    const std::size_t exl[] = {7, s.key.size(), ttl.size()};
    redisAppendCommandArgv(redis.ctx, 3, ex, exl);
    const char* hg[] = {"HGETALL", s.key.c_str()};
    const std::size_t hgl[] = {7, s.key.size()};
    redisAppendCommandArgv(redis.ctx, 2, hg, hgl);
    commands += 3;
    snaps.push_back(std::move(s));
  }

  struct Remote {
    std::map<std::int64_t, BudgetTotals> periods;
    BudgetTotals reserved;
    std::vector<std::string> stale_own;  // own fields of periods that left the window
    std::vector<std::string> instances;  // distinct other instances seen on this ledger
  };
  std::vector<Remote> remotes(snaps.size());
  const std::string own_prefix = inst + "|";
  for (std::size_t i = 0; i < snaps.size(); ++i) {
    for (int k = 0; k < 3; ++k) {
      void* raw = nullptr;
      if (redisGetReply(redis.ctx, &raw) != REDIS_OK || !raw) return failed(redis.ctx->errstr[0] ? redis.ctx->errstr : "no reply");
      ReplyPtr r(static_cast<redisReply*>(raw));
      if (r->type == REDIS_REPLY_ERROR) return failed(std::string(r->str, r->len));
      if (k != 2) continue;
      if (r->type != REDIS_REPLY_ARRAY) return failed("unexpected HGETALL reply");
      for (std::size_t e = 0; e + 1 < r->elements; e += 2) {
        std::string_view field(r->element[e]->str, r->element[e]->len);
        std::string_view value(r->element[e + 1]->str, r->element[e + 1]->len);
        auto bar = field.find('|');
        if (bar == std::string_view::npos) continue;
        const bool own = field.substr(0, bar) == inst;
        if (!own) {
          auto& seen = remotes[i].instances;
          if (std::find(seen.begin(), seen.end(), field.substr(0, bar)) == seen.end())
            seen.emplace_back(field.substr(0, bar));
        }
        std::string_view rest = field.substr(bar + 1);
        std::int64_t f[4] = {0, 0, 0, 0};
        const int n = parse_fields(value, f);
        if (rest == "r") {
          if (!own && n == 4 && f[3] > wall_ms) remotes[i].reserved += BudgetTotals{f[0], f[1], f[2]};
          continue;
        }
        std::int64_t start = 0;
        if (!rest.starts_with("p|") || !parse_i64(rest.substr(2), start)) continue;
        const bool live = std::find(snaps[i].live.begin(), snaps[i].live.end(), start) != snaps[i].live.end();
        if (own) {
          if (!live && (snaps[i].live.empty() || start < snaps[i].live.front())) remotes[i].stale_own.emplace_back(field);
          continue;
        }
        if (n >= 3) remotes[i].periods[start] += BudgetTotals{f[0], f[1], f[2]};
      }
    }
  }
  (void)commands;

  // Own fields of expired periods: delete (best effort; the key's PEXPIRE is the backstop).
  std::size_t dels = 0;
  for (std::size_t i = 0; i < snaps.size(); ++i) {
    if (remotes[i].stale_own.empty()) continue;
    std::vector<const char*> ptrs{"HDEL", snaps[i].key.c_str()};
    std::vector<std::size_t> lens{4, snaps[i].key.size()};
    for (const auto& f : remotes[i].stale_own) {
      ptrs.push_back(f.data());
      lens.push_back(f.size());
    }
    redisAppendCommandArgv(redis.ctx, static_cast<int>(ptrs.size()), ptrs.data(), lens.data());
    ++dels;
  }
  for (std::size_t d = 0; d < dels; ++d) {
    void* raw = nullptr;
    if (redisGetReply(redis.ctx, &raw) != REDIS_OK || !raw) return failed(redis.ctx->errstr);
    freeReplyObject(raw);
  }

  // Fold the fleet's totals into each ledger. Other instances' settled spend in a period only
  // grows, so the view never moves down (a Redis that restarted empty cannot make spend vanish
  // from our view before its owners have re-pushed it).
  for (std::size_t i = 0; i < snaps.size(); ++i) {
    BudgetLedger& l = *snaps[i].ledger;
    std::lock_guard lk(l.mu);
    BudgetTotals sum;
    for (BudgetPeriod& p : l.periods) {
      auto it = remotes[i].periods.find(p.start_ms);
      if (it != remotes[i].periods.end()) {
        p.remote.nusd = std::max(p.remote.nusd, it->second.nusd);
        p.remote.tokens = std::max(p.remote.tokens, it->second.tokens);
        p.remote.requests = std::max(p.remote.requests, it->second.requests);
      }
      sum += p.remote;
    }
    l.remote_sum = sum;
    l.remote_reserved = remotes[i].reserved;
    l.fleet_instances = 1 + static_cast<std::uint32_t>(remotes[i].instances.size());
    l.outage_cap_nusd = -1;
  }

  // The staleness bound uses G = the longest time from the start of one successful cycle
  // (its snapshot) to the end of the next (its view applied). Gaps across an outage are not
  // counted: the bound does not hold during an outage (see docs/budgets.md).
  const Instant t = std::chrono::steady_clock::now();
  bool back = false;
  {
    std::lock_guard st(status_mu);
    if (redis.connected && redis.last_ok != Instant{}) redis.max_gap = std::max(redis.max_gap, Nanos{t - redis.last_ok});
    back = !redis.connected && redis.ever_failed_logged;
    redis.last_ok = cycle_start;
    redis.connected = true;
    ++redis.syncs;
  }
  redis_up.store(true, std::memory_order_release);
  if (back) log("Redis reachable again; fleet view reconciled");
  return {};
}

}  // namespace modelux
