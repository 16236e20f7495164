// The control plane: versioned writes that go live on the Router, the audit trail of every
// admin action, webhook events and their delivery, and the watchers that turn budget, breaker
// and spend changes into events. See control_plane.hpp for the threading contract.
#include "server/control_plane.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <future>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "modelux/budget.hpp"
#include "modelux/health.hpp"
#include "modelux/scrub.hpp"
#include "modelux/transport.hpp"
#include "server/auth.hpp"

namespace modelux::proxy {

namespace {

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> b(bytes);
  if (RAND_bytes(b.data(), static_cast<int>(bytes)) != 1) std::abort();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::int64_t unix_s(WallTime t) { return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count(); }

Error conflict_error(std::string msg) {
  Error e;
  e.kind = ErrorKind::bad_request;
  e.code = std::string(kVersionConflict);
  e.message = std::move(msg);
  return e;
}

Error not_found_error(std::string msg) {
  Error e;
  e.kind = ErrorKind::not_found;
  e.message = std::move(msg);
  return e;
}

AuditEntry audit_of(const Actor& who, std::string action, std::string object, std::string detail, WallTime at) {
  AuditEntry a;
  a.at = at;
  a.actor = who.name;
  a.from = who.from;
  a.action = std::move(action);
  a.object = std::move(object);
  a.detail = scrubbed(detail);  // free text from a client: no secret is stored
  return a;
}

}  // namespace

std::vector<std::pair<std::string, Json>> breaker_events(const Json& health_state, BreakerMemory& seen) {
  std::vector<std::pair<std::string, Json>> out;
  for (const auto& t : health_state.value("targets", Json::array())) {
    std::string target = t.value("target", ""), state = t.value("breaker", "closed");
    std::int64_t trips = t.value("trips", std::int64_t{0});
    auto& prev = seen[target];
    if (prev.first.empty()) prev = {"closed", 0};
    const bool tripped = trips > prev.second || (prev.first == "closed" && state != "closed");
    if (tripped) out.emplace_back("breaker.opened", Json{{"target", target}, {"state", state}, {"trips", trips}, {"why", t.value("why_open", "")}});
    // Closed again, also when it tripped and closed between two looks.
    if (state == "closed" && (prev.first != "closed" || tripped)) out.emplace_back("breaker.closed", Json{{"target", target}, {"trips", trips}});
    prev = {state, trips};
  }
  return out;
}

std::string version_etag(std::int64_t v) { return "\"" + std::to_string(v) + "\""; }

std::optional<std::int64_t> parse_if_match(std::string_view h) {
  if (h.starts_with("W/")) h.remove_prefix(2);
  if (h.size() >= 2 && h.front() == '"' && h.back() == '"') h = h.substr(1, h.size() - 2);
  std::int64_t v = 0;
  auto r = std::from_chars(h.data(), h.data() + h.size(), v);
  if (h.empty() || r.ec != std::errc{} || r.ptr != h.data() + h.size() || v < 0) return std::nullopt;
  return v;
}

// The HTTP client of the deliveries: its own io_context, driven by the control thread only.
struct ControlPlane::Sender {
  net::io_context ioc;
  std::shared_ptr<Transport> transport;
  std::atomic<bool> stopping{false};
  Sender() : transport(make_http_transport(ioc.get_executor())) {}
  Result<HttpResponse> post(HttpRequestSpec spec, Millis timeout) {
    if (stopping.load()) return fail(ErrorKind::cancelled, "shutting down");
    Instant deadline = std::chrono::steady_clock::now() + timeout;
    auto fut = net::co_spawn(ioc, transport->send(spec, deadline), net::use_future);
    ioc.restart();
    ioc.run();
    // stop() interrupts a slow receiver at shutdown: the send never finished.
    if (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return fail(ErrorKind::cancelled, "shutting down");
    return fut.get();
  }
  void stop() {
    stopping = true;
    ioc.stop();
  }
};

ControlPlane::ControlPlane(ControlOptions o, ControlStore s) : opts_(std::move(o)), store_(std::move(s)), sender_(std::make_unique<Sender>()) {}

ControlPlane::~ControlPlane() { stop(); }

Result<std::unique_ptr<ControlPlane>> ControlPlane::open(ControlOptions options) {
  auto s = open_control_store(options.path, options.reconcile);
  if (!s) return fail(s.error());
  // Webhook secrets are secrets: every output of the process scrubs them.
  auto secrets = s->deliveries->all_webhook_secrets();
  if (!secrets) return fail(secrets.error());
  for (const auto& sec : *secrets) add_secret(sec);
  return std::unique_ptr<ControlPlane>(new ControlPlane(std::move(options), std::move(*s)));
}

WallTime ControlPlane::wall_now() const { return router_ ? router_->clock().wall_now() : std::chrono::system_clock::now(); }

Result<void> ControlPlane::seed(Config& cfg, bool reseed, const Actor& actor) {
  std::lock_guard lk(write_mu_);
  auto seeded = configs().meta("seeded_at");
  if (!seeded) return fail(seeded.error());
  const bool first = !*seeded;
  WallTime now = std::chrono::system_clock::now();
  const std::string action = first ? "seed" : reseed ? "reseed" : "seed";
  // Routing configs: the file's document becomes a version when the store has none (or on
  // reseed, when it differs); otherwise the store's head replaces the file's.
  for (auto& [slug, doc] : cfg.routing) {
    auto head = configs().head(kKindConfig, slug);
    if (!head) return fail(head.error());
    bool absent = !*head || (*head)->deleted();
    if (absent || (reseed && (*head)->document != doc)) {
      ObjectVersion v{std::string(kKindConfig), slug, 0, actor.name, now, "from the config file", action, doc, {}};
      // Expecting the head we read: instances of a fleet starting together seed a slug once;
      // the ones that lose take the winner's version.
      std::int64_t seen = *head ? (*head)->version : 0;
      auto c = configs().commit(std::move(v), seen, audit_of(actor, "config." + action, "config:" + slug, "from the config file", now));
      if (!c && c.error().code == kVersionConflict) {
        auto again = configs().head(kKindConfig, slug);
        if (!again) return fail(again.error());
        if (*again && !(*again)->deleted()) doc = (*again)->document;
      } else if (!c) {
        return fail(c.error());
      }
    } else {
      doc = (*head)->document;
    }
  }
  // Slugs only the store has (added through the API) are live too.
  auto heads = configs().heads(kKindConfig);
  if (!heads) return fail(heads.error());
  for (const auto& h : *heads)
    if (!cfg.routing.contains(h.name)) cfg.routing[h.name] = h.document;
  // Budgets: one version per budget name, same rule.
  if (cfg.budgets.is_array()) {
    for (const auto& b : cfg.budgets) {
      if (!b.is_object() || !b.contains("name") || !b["name"].is_string()) continue;  // the budget parser reports it
      std::string name = b["name"].get<std::string>();
      auto head = configs().head(kKindBudget, name);
      if (!head) return fail(head.error());
      // Never seen: seed. Deleted through the API: stays deleted (the store wins) unless reseeded.
      const bool write = !*head || (reseed && ((*head)->deleted() || (*head)->document != b));
      if (write) {
        ObjectVersion v{std::string(kKindBudget), name, 0, actor.name, now, "from the config file", action, b, {}};
        auto c = configs().commit(std::move(v), std::nullopt, audit_of(actor, "budget." + action, "budget:" + name, "from the config file", now));
        if (!c) return fail(c.error());
      }
    }
    auto bheads = configs().heads(kKindBudget);
    if (!bheads) return fail(bheads.error());
    Json arr = Json::array();
    for (const auto& h : *bheads) arr.push_back(h.document);
    cfg.budgets = std::move(arr);
  }
  if (first) {
    std::string at = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
    if (auto r = configs().set_meta("seeded_at", at); !r) return fail(r.error());
  }
  return {};
}

bool ControlPlane::budget_running(const std::string& name, const Json& doc) {
  std::lock_guard lk(write_mu_);
  if (!router_ || !router_->budgets()) return false;
  auto it = budget_docs_.find(name);
  return it != budget_docs_.end() && it->second == doc;
}

Config ControlPlane::router_config() {
  std::lock_guard lk(write_mu_);
  return router_ ? router_->config() : Config{};
}

Result<void> ControlPlane::attach(Router& router, KeyRegistry* keys) {
  router_ = &router;
  keys_ = keys;
  seen_counter_ = configs().change_counter();
  // A store that hears other instances' writes (PostgreSQL) wakes the control thread at once:
  // a change on any instance is live here within milliseconds, not at the next tick.
  watch_id_ = configs().watch([this] {
    {
      std::lock_guard lk(q_mu_);
      changed_ = true;
    }
    q_cv_.notify_all();
  });
  auto heads = configs().heads(kKindConfig);
  if (!heads) return fail(heads.error());
  for (const auto& h : *heads) {
    auto p = router.routing_config(h.name);
    if (p && p->version() == h.version) continue;
    auto r = router.set_routing_config(h.name, h.document, h.version);
    if (!r) return fail(r.error());
  }
  if (auto bheads = configs().heads(kKindBudget)) {
    std::lock_guard lk(write_mu_);
    for (const auto& h : *bheads) budget_seen_[h.name] = h.version;  // resets before this start are in the ledgers already
    // What the Router was built from (seed()'s heads); a fleet write since then applies now.
    if (router.budgets())
      for (const auto& b : router.config().budgets)
        if (b.is_object() && b.contains("name") && b["name"].is_string()) budget_docs_[b["name"].get<std::string>()] = b;
    (void)apply_budgets_locked();
  }
  last_reconcile_ = router.clock().now();
  bucket_start_ = last_reconcile_;
  thread_ = std::thread([this] { run(); });
  return {};
}

void ControlPlane::stop() {
  {
    std::lock_guard lk(q_mu_);
    if (stop_) return;
    stop_ = true;
  }
  q_cv_.notify_all();
  if (watch_id_) configs().unwatch(watch_id_);
  watch_id_ = 0;
  sender_->stop();
  if (thread_.joinable()) thread_.join();
}

ControlStats ControlPlane::stats() const {
  return ControlStats{events_.load(), dropped_.load(), delivered_.load(), failures_.load(), gave_up_.load(), reconciled_.load()};
}

// ---- configs --------------------------------------------------------------------------------

Result<ObjectVersion> ControlPlane::apply_config(const std::string& slug, const Json& doc, std::optional<std::int64_t> expected,
                                                 const Actor& who, std::string message, std::string action, std::string audit_action,
                                                 Json extra_event) {
  message = scrubbed(message);
  std::lock_guard lk(write_mu_);
  auto head = configs().head(kKindConfig, slug);
  if (!head) return fail(head.error());
  std::int64_t have = *head ? (*head)->version : 0;
  if (expected && *expected != have)
    return fail(conflict_error("config '@" + slug + "' is at version " + std::to_string(have) + ", not " + std::to_string(*expected) +
                               ": someone changed it since you read it; read it again and retry"));
  if (*head && !(*head)->deleted() && (*head)->document == doc) return **head;  // nothing changes: no new version
  // Compile first: a config that does not compile never becomes a version.
  const std::int64_t next = have + 1;
  auto live = router_->set_routing_config(slug, doc, next);
  if (!live) return fail(live.error());
  WallTime now = wall_now();
  ObjectVersion v{std::string(kKindConfig), slug, 0, who.name, now, message, action, doc, {}};
  auto c = configs().commit(std::move(v), have, audit_of(who, std::move(audit_action), "config:" + slug, message, now));
  if (!c) {
    // Another process committed in between: put the router back on what the store holds.
    if (*head && !(*head)->deleted()) (void)router_->set_routing_config(slug, (*head)->document, have);
    return fail(c.error());
  }
  Json data{{"slug", slug}, {"version", c->version}, {"previous_version", have}, {"author", who.name}, {"message", c->message}, {"hash", c->hash}};
  for (auto it = extra_event.begin(); extra_event.is_object() && it != extra_event.end(); ++it) data[it.key()] = *it;
  emit(action == "rollback" ? "config.rolled_back" : action == "promote" ? "config.promoted" : "config.changed", std::move(data));
  return c;
}

Result<ObjectVersion> ControlPlane::put_config(const std::string& slug, const Json& doc, std::optional<std::int64_t> expected,
                                               const Actor& who, std::string message) {
  return apply_config(slug, doc, expected, who, std::move(message), "update", "config.update", Json::object());
}

Result<ObjectVersion> ControlPlane::rollback_config(const std::string& slug, std::int64_t to, std::optional<std::int64_t> expected,
                                                    const Actor& who, std::string message) {
  auto old = configs().get(kKindConfig, slug, to);
  if (!old) return fail(old.error());
  if (!*old || (*old)->deleted()) return fail(not_found_error("config '@" + slug + "' has no version " + std::to_string(to)));
  if (message.empty()) message = "rollback to version " + std::to_string(to);
  return apply_config(slug, (*old)->document, expected, who, std::move(message), "rollback", "config.rollback", Json{{"rolled_back_to", to}});
}

Result<ObjectVersion> ControlPlane::promote_config(const std::string& from, std::int64_t version, const std::string& to,
                                                   std::optional<std::int64_t> expected, const Actor& who, std::string message) {
  auto src = version > 0 ? configs().get(kKindConfig, from, version) : configs().head(kKindConfig, from);
  if (!src) return fail(src.error());
  if (!*src || (*src)->deleted())
    return fail(not_found_error("config '@" + from + "' has no version " + (version > 0 ? std::to_string(version) : std::string("at all"))));
  if (message.empty()) message = "promote @" + from + " v" + std::to_string((*src)->version) + " to @" + to;
  return apply_config(to, (*src)->document, expected, who, std::move(message), "promote", "config.promote",
                      Json{{"from", from}, {"from_version", (*src)->version}});
}

// ---- budgets --------------------------------------------------------------------------------

Result<ObjectVersion> ControlPlane::put_budget(const std::string& name, Json doc, std::optional<std::int64_t> expected, const Actor& who,
                                               std::string message) {
  if (!doc.is_object()) return fail(ErrorKind::bad_request, "a budget must be a JSON object", "$");
  if (auto n = doc.find("name"); n != doc.end() && (!n->is_string() || n->get<std::string>() != name))
    return fail(ErrorKind::bad_request, "'name' must equal the budget's name in the path ('" + name + "')", "$.name");
  doc["name"] = name;
  auto parsed = parse_budgets(Json::array({doc}), "$");
  if (!parsed) {
    Error e = parsed.error();
    if (e.path.starts_with("$[0]")) e.path = "$" + e.path.substr(4);
    return fail(std::move(e));
  }
  message = scrubbed(message);
  std::lock_guard lk(write_mu_);
  WallTime now = wall_now();
  ObjectVersion v{std::string(kKindBudget), name, 0, who.name, now, message, "update", doc, {}};
  auto c = configs().commit(std::move(v), expected, audit_of(who, "budget.update", "budget:" + name, message, now));
  if (!c) return c;
  budget_seen_[name] = c->version;
  (void)apply_budgets_locked();  // live here now; the version is committed either way
  return c;
}

bool ControlPlane::apply_budgets_locked() {
  BudgetManager* bm = router_ ? router_->budgets() : nullptr;
  if (!bm) return false;
  auto heads = configs().heads(kKindBudget);
  if (!heads) return false;  // the store is unreachable: the next reconcile retries
  std::map<std::string, Json> docs;
  for (const auto& h : *heads) docs[h.name] = h.document;
  if (docs == budget_docs_) return true;
  Json arr = Json::array();
  for (const auto& [name, doc] : docs) arr.push_back(doc);
  auto r = bm->update(arr, router_->clock().now());
  if (!r) {
    std::fprintf(stderr, "modelux control: stored budgets do not apply here (%s); keeping the running ones\n",
                 scrubbed(r.error().describe()).c_str());
    return false;
  }
  budget_docs_ = std::move(docs);
  if (!r->added.empty() || !r->changed.empty() || !r->removed.empty()) reconciled_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

Result<ObjectVersion> ControlPlane::delete_budget(const std::string& name, std::optional<std::int64_t> expected, const Actor& who) {
  std::lock_guard lk(write_mu_);
  auto head = configs().head(kKindBudget, name);
  if (!head) return fail(head.error());
  if (!*head || (*head)->deleted()) return fail(not_found_error("no budget '" + name + "'"));
  WallTime now = wall_now();
  ObjectVersion v{std::string(kKindBudget), name, 0, who.name, now, "deleted", "delete", Json(), {}};
  auto c = configs().commit(std::move(v), expected ? expected : std::optional<std::int64_t>((*head)->version),
                            audit_of(who, "budget.delete", "budget:" + name, "deleted", now));
  if (!c) return c;
  budget_seen_[name] = c->version;
  (void)apply_budgets_locked();
  return c;
}

Result<ObjectVersion> ControlPlane::reset_budget(const std::string& name, std::optional<std::int64_t> expected, const Actor& who,
                                                 std::string message) {
  std::lock_guard lk(write_mu_);
  auto head = configs().head(kKindBudget, name);
  if (!head) return fail(head.error());
  if (!*head || (*head)->deleted()) return fail(not_found_error("no budget '" + name + "'"));
  BudgetManager* bm = router_ ? router_->budgets() : nullptr;
  bool running = false;
  if (bm)
    for (const auto& s : bm->specs()) running = running || s.name == name;
  if (!running) {
    Error e;
    e.kind = ErrorKind::bad_request;
    e.code = "budget_not_running";
    e.message = "budget '" + name + "' is not running on this instance (its stored definition was refused here; see the log)";
    return fail(std::move(e));
  }
  WallTime now = wall_now();
  message = message.empty() ? std::string("spend reset") : scrubbed(message);
  ObjectVersion v{std::string(kKindBudget), name, 0, who.name, now, message, "reset", (*head)->document, {}};
  auto c = configs().commit(std::move(v), expected, audit_of(who, "budget.reset", "budget:" + name, message, now));
  if (!c) return c;
  budget_seen_[name] = c->version;
  if (auto r = bm->reset(name, router_->clock().now()); !r) return fail(r.error());
  return c;
}

// ---- webhooks -------------------------------------------------------------------------------

Result<Json> ControlPlane::check_webhook_spec(const Json& spec) { return normalize_webhook_spec(spec); }

Result<ControlPlane::NewWebhook> ControlPlane::add_webhook(const Json& spec, const Actor& who) {
  auto doc = check_webhook_spec(spec);
  if (!doc) return fail(doc.error());
  std::string id = "wh_" + random_hex(8);
  std::string secret = new_webhook_secret();
  add_secret(secret);
  std::lock_guard lk(write_mu_);
  if (auto r = deliveries().set_webhook_secret(id, secret); !r) return fail(r.error());
  WallTime now = wall_now();
  ObjectVersion v{std::string(kKindWebhook), id, 0, who.name, now, "created", "create", *doc, {}};
  auto c = configs().commit(std::move(v), 0, audit_of(who, "webhook.create", "webhook:" + id, (*doc)["url"].get<std::string>(), now));
  if (!c) return fail(c.error());
  return NewWebhook{std::move(*c), std::move(secret)};
}

Result<ObjectVersion> ControlPlane::update_webhook(const std::string& id, const Json& spec, std::optional<std::int64_t> expected,
                                                   const Actor& who) {
  auto doc = check_webhook_spec(spec);
  if (!doc) return fail(doc.error());
  std::lock_guard lk(write_mu_);
  auto head = configs().head(kKindWebhook, id);
  if (!head) return fail(head.error());
  if (!*head || (*head)->deleted()) return fail(not_found_error("no webhook '" + id + "'"));
  WallTime now = wall_now();
  ObjectVersion v{std::string(kKindWebhook), id, 0, who.name, now, "updated", "update", *doc, {}};
  return configs().commit(std::move(v), expected ? expected : std::optional<std::int64_t>((*head)->version),
                          audit_of(who, "webhook.update", "webhook:" + id, (*doc)["url"].get<std::string>(), now));
}

Result<ObjectVersion> ControlPlane::remove_webhook(const std::string& id, std::optional<std::int64_t> expected, const Actor& who) {
  std::lock_guard lk(write_mu_);
  auto head = configs().head(kKindWebhook, id);
  if (!head) return fail(head.error());
  if (!*head || (*head)->deleted()) return fail(not_found_error("no webhook '" + id + "'"));
  WallTime now = wall_now();
  ObjectVersion v{std::string(kKindWebhook), id, 0, who.name, now, "removed", "delete", Json(), {}};
  return configs().commit(std::move(v), expected ? expected : std::optional<std::int64_t>((*head)->version),
                          audit_of(who, "webhook.remove", "webhook:" + id, "removed", now));
}

Result<WebhookDelivery> ControlPlane::redeliver(const std::string& delivery_id, const Actor& who) {
  auto d = deliveries().delivery(delivery_id);
  if (!d) return fail(d.error());
  if (!*d) return fail(not_found_error("no delivery '" + delivery_id + "'"));
  WebhookDelivery del = std::move(**d);
  WallTime now = wall_now();
  del.status = "pending";
  del.next_attempt = now;
  // One attempt now; on failure it retries with backoff while within give_up of its event.
  if (auto r = deliveries().update_delivery(del); !r) return fail(r.error());
  auto a = audit().append(audit_of(who, "webhook.redeliver", "webhook:" + del.webhook_id, del.id, now));
  if (!a) return fail(a.error());
  q_cv_.notify_all();
  return del;
}

// ---- keys -----------------------------------------------------------------------------------

Result<void> ControlPlane::record_key(const ManagedKey& key, bool revoked, const Actor& who) {
  std::lock_guard lk(write_mu_);
  WallTime now = wall_now();
  auto c = commit_key_change(configs(), key, revoked, who.name, who.from, now);
  if (!c) return fail(c.error());
  emit(revoked ? "key.revoked" : "key.created",
       Json{{"id", key.id}, {"name", key.name}, {"project", key.project}, {"role", std::string(to_string(key.role))}, {"by", who.name}});
  return {};
}

// ---- events and deliveries --------------------------------------------------------------------

void ControlPlane::emit(std::string_view event, Json data) {
  {
    std::lock_guard lk(q_mu_);
    if (queue_.size() >= opts_.queue_capacity) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.emplace_back(std::string(event), std::move(data));
  }
  events_.fetch_add(1, std::memory_order_relaxed);
  q_cv_.notify_all();
}

void ControlPlane::fan_out(const std::string& event, const Json& data, WallTime now) {
  auto hooks = configs().heads(kKindWebhook);
  if (!hooks) return;
  for (const auto& h : *hooks) {
    if (!h.document.value("enabled", true)) continue;
    bool wants = false;
    for (const auto& e : h.document.value("events", Json::array()))
      if (e == "*" || e == event) wants = true;
    if (!wants) continue;
    WebhookDelivery d;
    d.id = "msg_" + random_hex(12);
    d.webhook_id = h.name;
    d.event = event;
    Json body{{"type", event}, {"timestamp", unix_s(now)}, {"data", data}};
    d.payload = body.dump(-1, ' ', false, Json::error_handler_t::replace);
    scrub(d.payload);  // an event never carries a secret out
    d.created = now;
    d.next_attempt = now;
    (void)deliveries().insert_delivery(d);
  }
}

void ControlPlane::attempt(WebhookDelivery d, WallTime now) {
  auto hook = configs().head(kKindWebhook, d.webhook_id);
  auto secret = deliveries().webhook_secret(d.webhook_id);
  ++d.attempts;
  if (!hook || !*hook || (*hook)->deleted() || !secret || !*secret) {
    d.status = "failed";
    d.last_error = "the webhook was removed";
    (void)deliveries().update_delivery(d);
    return;
  }
  std::int64_t ts = unix_s(now);
  auto sig = sign_webhook(**secret, d.id, ts, d.payload);
  HttpRequestSpec spec;
  spec.method = "POST";
  spec.url = (*hook)->document.value("url", std::string{});
  spec.headers = {{"content-type", "application/json"},
                  {"user-agent", "modelux-webhooks"},
                  {"webhook-id", d.id},
                  {"webhook-timestamp", std::to_string(ts)},
                  {"webhook-signature", sig ? *sig : std::string()}};
  spec.body = d.payload;
  auto r = sender_->post(spec, opts_.delivery_timeout);
  if (r && r->status >= 200 && r->status < 300) {
    d.status = "delivered";
    d.delivered = now;
    d.last_status = r->status;
    d.last_error.clear();
    delivered_.fetch_add(1, std::memory_order_relaxed);
  } else {
    failures_.fetch_add(1, std::memory_order_relaxed);
    d.last_status = r ? r->status : 0;
    d.last_error = scrubbed(r ? "HTTP " + std::to_string(r->status) : r.error().message);
    // Exponential backoff: base, 2x base, 4x base ... (at most 6 h apart), for up to
    // give_up after the event (a day by default); then the delivery is marked failed.
    int shift = std::min(d.attempts - 1, 20);
    Millis delay = std::min<Millis>(Millis{opts_.retry_base.count() << shift}, Millis{6LL * 3600 * 1000});
    WallTime next = now + delay;
    if (next > d.created + opts_.give_up) {
      d.status = "failed";
      gave_up_.fetch_add(1, std::memory_order_relaxed);
    } else {
      d.next_attempt = next;
    }
  }
  (void)deliveries().update_delivery(d);
}

void ControlPlane::deliver_due() {
  WallTime now = wall_now();
  auto due = deliveries().due_deliveries(now, 64);
  if (!due) return;
  for (auto& d : *due) {
    if (sender_->stopping.load()) return;
    attempt(std::move(d), wall_now());
  }
}

void ControlPlane::reconcile() {
  std::uint64_t c = configs().change_counter();
  if (c == seen_counter_) return;
  // Managed keys written elsewhere (another instance, the CLI): reloaded here, off the io
  // threads, so requests find a fresh snapshot.
  if (keys_) keys_->reload();
  // A webhook added by the CLI on the file: its secret is scrubbed here from now on too.
  if (auto secrets = deliveries().all_webhook_secrets())
    for (const auto& sec : *secrets) add_secret(sec);
  // Under the write lock from the read on: a write of this process between reading the heads
  // and applying them would otherwise be put back to the head read before it.
  std::lock_guard lk(write_mu_);
  auto heads = configs().heads(kKindConfig);
  // The store is unreachable (PostgreSQL down): keep serving what runs, try again next tick.
  if (!heads) return;
  seen_counter_ = c;
  for (const auto& h : *heads) {
    auto p = router_->routing_config(h.name);
    if (p && p->version() == h.version) continue;
    if (router_->set_routing_config(h.name, h.document, h.version)) reconciled_.fetch_add(1, std::memory_order_relaxed);
    else std::fprintf(stderr, "modelux control: stored config '@%s' v%lld does not compile here; keeping the live one\n", h.name.c_str(),
                      static_cast<long long>(h.version));
  }
  // A spend reset made on another instance (a "reset" version this instance has not applied).
  if (auto bheads = configs().heads(kKindBudget); bheads && router_->budgets()) {
    for (const auto& h : *bheads) {
      std::int64_t& seen = budget_seen_[h.name];
      if (h.version <= seen) continue;
      seen = h.version;
      if (h.action == "reset" && router_->budgets()->reset(h.name, router_->clock().now())) reconciled_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Definitions changed elsewhere (put, delete, or a start that seeded new ones).
  (void)apply_budgets_locked();
}

void ControlPlane::tick_watchers(WallTime wall) {
  Instant now = router_->clock().now();
  if (BudgetManager* b = router_->budgets()) {
    for (const auto& a : b->alerts()) {
      std::string key = "alert|" + a.budget + "|" + a.scope + "|" + a.window + "|" + std::to_string(a.threshold);
      if (!fired_.insert(key).second) continue;
      emit("budget.alert", Json{{"budget", a.budget}, {"scope", a.scope}, {"window", a.window}, {"threshold", a.threshold},
                                {"percent", a.percent}, {"spent_usd", a.spent_usd}, {"limit_usd", a.limit_usd}, {"message", a.message()}});
    }
    Json snap = b->snapshot(now);
    const std::vector<BudgetSpec> running = b->specs();  // a copy: update() may replace them
    std::map<std::string, const BudgetSpec*> specs;
    for (const auto& s : running) specs[s.name] = &s;
    const bool close_bucket = now - bucket_start_ >= opts_.anomaly.bucket;
    for (const auto& l : snap.value("budgets", Json::array())) {
      std::string name = l.value("name", ""), scope = l.value("scope", ""), window = l.value("window_label", "");
      double percent = l.value("percent", 0.0), spent = l.value("spent_usd", 0.0);
      Json base{{"budget", name}, {"scope", scope}, {"window", window}, {"percent", percent}, {"spent_usd", spent}, {"limit_usd", l["limit_usd"]}};
      // Blocked: the hard cap is reached. The ledger's 100% alert fires at 100% committed or at
      // the first request the cap refuses (a refused request never raises the committed spend).
      bool capped = !l["limit_usd"].is_null() && percent >= 100.0;
      for (const auto& f : l.value("alerts_fired", Json::array())) capped = capped || (f.is_number() && f.get<double>() >= 100.0);
      if (capped && fired_.insert("blocked|" + name + "|" + scope + "|" + window).second) emit("budget.blocked", base);
      if (auto it = specs.find(name); it != specs.end() && it->second->soft_percent && !it->second->downgrade_to.empty() &&
                                       percent >= *it->second->soft_percent &&
                                       fired_.insert("downgraded|" + name + "|" + scope + "|" + window).second) {
        Json d = base;
        d["downgrade_to"] = it->second->downgrade_to;
        d["soft_percent"] = *it->second->soft_percent;
        emit("budget.downgraded", std::move(d));
      }
      // spend.anomaly (control_plane.hpp): bucketed spend per ledger against its own baseline.
      SpendSeries& s = spend_[name + "|" + scope];
      if (s.last_spent >= 0) s.bucket_sum += std::max(0.0, spent - s.last_spent);  // a window reset is not negative spend
      s.last_spent = spent;
      if (!close_bucket) continue;
      double current = s.bucket_sum;
      s.bucket_sum = 0;
      if (s.history.size() >= opts_.anomaly.min_buckets) {
        double mean = 0;
        for (double h : s.history) mean += h;
        mean /= static_cast<double>(s.history.size());
        bool high = current > opts_.anomaly.factor * mean && current > opts_.anomaly.min_usd;
        if (high && !s.firing)
          emit("spend.anomaly", Json{{"budget", name}, {"scope", scope}, {"bucket_s", opts_.anomaly.bucket.count() / 1000.0},
                                     {"spend_usd", current}, {"baseline_usd", mean}, {"factor", opts_.anomaly.factor},
                                     {"baseline_buckets", s.history.size()}});
        s.firing = high;
      }
      s.history.push_back(current);
      while (s.history.size() > opts_.anomaly.baseline_buckets) s.history.pop_front();
    }
    if (close_bucket) bucket_start_ = now;
  }
  if (HealthRegistry* h = router_->health()) {
    Json st = h->state_json(now);
    for (auto& [event, data] : breaker_events(st, breakers_)) emit(event, std::move(data));
  }
  (void)wall;
}

void ControlPlane::run() {
  const Millis tick{std::min<std::int64_t>(opts_.reconcile.count(), 250)};
  for (;;) {
    std::deque<std::pair<std::string, Json>> batch;
    bool changed = false;
    {
      std::unique_lock lk(q_mu_);
      q_cv_.wait_for(lk, tick, [&] { return stop_ || changed_ || !queue_.empty(); });
      if (stop_) return;
      batch.swap(queue_);
      changed = std::exchange(changed_, false);
    }
    // Heard of a change (watch()): apply it before anything slower, like sending deliveries.
    if (changed) reconcile();
    WallTime wall = wall_now();
    for (const auto& [event, data] : batch) fan_out(event, data, wall);
    deliver_due();
    Instant now = router_->clock().now();
    if (now - last_reconcile_ >= opts_.reconcile) {
      last_reconcile_ = now;
      reconcile();
      tick_watchers(wall_now());
    }
  }
}

}  // namespace modelux::proxy
