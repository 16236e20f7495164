// `modelux configs`, `modelux audit`, `modelux webhooks`: the control plane from the command
// line, either over a running proxy's REST API (--url, --key) or directly on the control
// store file (--db FILE, or --config FILE for its server.control.db). A running proxy picks up
// direct writes within server.control.reconcile_ms.
#include <cstdio>
#include <future>
#include <iostream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <CLI/CLI.hpp>

#include "control_commands.hpp"
#include "modelux/config.hpp"
#include "modelux/control.hpp"
#include "modelux/replay.hpp"
#include "modelux/router.hpp"
#include "modelux/server.hpp"
#include "modelux/transport.hpp"

namespace modelux::cli {

namespace {

struct Target {
  std::string url, key, db, config;
  bool json = false;
};

void add_target(CLI::App* app, Target& t) {
  app->add_option("--url", t.url, "proxy base URL (http://127.0.0.1:8080): use its REST API");
  app->add_option("--key", t.key, "admin API key for --url (default: $MODELUX_API_KEY)")->envname("MODELUX_API_KEY");
  app->add_option("--db", t.db, "control store file (SQLite): work on it directly");
  app->add_option("--config", t.config, "config file: use its server.control.db directly")->check(CLI::ExistingFile);
  app->add_flag("--json", t.json, "JSON output");
}

// ---- REST --------------------------------------------------------------------------------

struct Http {
  int status = 0;
  Json body;
  std::string text;
};

Result<Http> call(const Target& t, std::string method, std::string path, const Json* body = nullptr, Headers extra = {}) {
  net::io_context ioc;
  auto transport = make_http_transport(ioc.get_executor());
  HttpRequestSpec spec;
  spec.method = std::move(method);
  std::string base = t.url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  spec.url = base + path;
  if (!t.key.empty()) spec.headers.emplace_back("authorization", "Bearer " + t.key);
  if (body) {
    spec.headers.emplace_back("content-type", "application/json");
    spec.body = body->dump(-1, ' ', false, Json::error_handler_t::replace);
  }
  for (auto& h : extra) spec.headers.push_back(std::move(h));
  Instant deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  auto fut = net::co_spawn(ioc, transport->send(spec, deadline), net::use_future);
  ioc.run();
  auto r = fut.get();
  if (!r) return fail(r.error());
  Http h;
  h.status = r->status;
  h.text = r->body;
  auto j = parse_json(r->body);
  if (j) h.body = std::move(*j);
  return h;
}

// The REST answer or its error message; exit status 1 for a 4xx/5xx.
int rest_print(const char* cmd, const Result<Http>& r, bool json, const std::function<void(const Json&)>& human) {
  if (!r) {
    std::fprintf(stderr, "modelux %s: %s\n", cmd, r.error().describe().c_str());
    return 1;
  }
  if (r->status >= 400) {
    std::string msg = r->body.is_object() && r->body.contains("error") ? r->body["error"].value("message", r->text) : r->text;
    std::fprintf(stderr, "modelux %s: HTTP %d: %s\n", cmd, r->status, msg.c_str());
    return 1;
  }
  if (json || !human) std::printf("%s\n", r->text.c_str());
  else human(r->body);
  return 0;
}

// ---- direct --------------------------------------------------------------------------------

Result<ControlStore> open_store(const Target& t) {
  std::string path = t.db;
  if (path.empty() && !t.config.empty()) {
    auto cfg = Config::load_file(t.config);
    if (!cfg) return fail(cfg.error());
    auto sc = ServerConfig::from_json(cfg->server);
    if (!sc) return fail(sc.error());
    path = ServerConfig::control_db_path(*cfg, *sc);
    if (path.empty())
      return fail(ErrorKind::invalid_config, "this config keeps the control store in memory (set server.control.db or tracing.path)",
                  "$.server.control.db");
  }
  if (path.empty()) return fail(ErrorKind::invalid_config, "give --url URL (REST), or --db FILE / --config FILE (the store file)");
  return open_control_store(path);
}

AuditEntry cli_audit(std::string action, std::string object, std::string detail) {
  AuditEntry a;
  a.at = std::chrono::system_clock::now();
  const char* user = std::getenv("USER");
  a.actor = std::string("cli:") + (user ? user : "unknown");
  a.from = "cli";
  a.action = std::move(action);
  a.object = std::move(object);
  a.detail = std::move(detail);
  return a;
}

// Compiles `doc` as routing config `slug` against the config file with the store's configs:
// a direct write is checked exactly as the proxy checks one.
Result<void> compile_check(const Target& t, ConfigStore& store, const std::string& slug, const Json& doc) {
  if (t.config.empty())
    return fail(ErrorKind::invalid_config, "a direct rollback or promote needs --config FILE (to compile the config first), or use --url");
  auto cfg = Config::load_file(t.config);
  if (!cfg) return fail(cfg.error());
  auto heads = store.heads(kKindConfig);
  if (!heads) return fail(heads.error());
  for (const auto& h : *heads) cfg->routing[h.name] = h.document;
  cfg->routing[slug] = doc;
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(std::move(*cfg), ro);
  if (!r) return fail(r.error());
  return {};
}

int fail_msg(const char* cmd, const Error& e) {
  std::fprintf(stderr, "modelux %s: %s\n", cmd, e.describe().c_str());
  return 1;
}

void print_versions(const Json& list) {
  std::printf("%-8s %-10s %-24s %-16s %s\n", "VERSION", "ACTION", "CREATED", "AUTHOR", "MESSAGE");
  for (const auto& v : list)
    std::printf("%-8lld %-10s %-24s %-16s %s\n", static_cast<long long>(v.value("version", 0LL)), v.value("action", "").c_str(),
                v.value("created", "").c_str(), v.value("author", "").c_str(), v.value("message", "").c_str());
}

}  // namespace

namespace {

// `modelux replay --promote`: the candidate becomes a new version of the slug in the control
// store, with an audit entry carrying the replay's verdict. A running proxy on the same store
// applies it at its next reconcile (server.control.reconcile_ms, 1 s by default).
class StorePublisher final : public ConfigPublisher {
 public:
  explicit StorePublisher(ControlStore cs) : cs_(std::move(cs)) {}
  Result<std::int64_t> publish(const std::string& slug, const Json& config, const Json& audit) override {
    auto head = cs_.configs->head(kKindConfig, slug);
    if (!head) return fail(head.error());
    ObjectVersion v;
    v.kind = std::string(kKindConfig);
    v.name = slug;
    v.author = "cli";
    v.at = std::chrono::system_clock::now();
    v.action = "promote";
    v.message = "promoted by modelux replay: " + audit.value("verdict", std::string("guard passed"));
    v.document = config;
    AuditEntry a = cli_audit("config.promote", "config:" + slug, audit.dump(-1, ' ', false, Json::error_handler_t::replace));
    std::optional<std::int64_t> expected;
    if (*head) expected = (*head)->version;
    auto written = cs_.configs->commit(std::move(v), expected, std::move(a));
    if (!written) return fail(written.error());
    return written->version;
  }

 private:
  ControlStore cs_;
};

}  // namespace

Result<std::unique_ptr<ConfigPublisher>> open_config_publisher(const std::string& db, const std::string& config) {
  Target t;
  t.db = db;
  t.config = config;
  auto cs = open_store(t);
  if (!cs) return fail(cs.error());
  return std::unique_ptr<ConfigPublisher>(std::make_unique<StorePublisher>(std::move(*cs)));
}

// ---- configs ---------------------------------------------------------------------------------

int run_configs_command(int argc, char** argv) {
  CLI::App app{"modelux configs: versions of routing configs", "modelux configs"};
  app.require_subcommand(1);
  Target t;
  std::string slug, to, message;
  std::int64_t version = 0, from_v = 0, to_v = 0, if_match = -1;
  auto* list = app.add_subcommand("list", "every config with its live version; with SLUG: its versions");
  add_target(list, t);
  list->add_option("slug", slug, "config name");
  auto* show = app.add_subcommand("show", "one config (its newest version, or --version N)");
  add_target(show, t);
  show->add_option("slug", slug, "config name")->required();
  show->add_option("--version", version, "version number")->check(CLI::PositiveNumber);
  auto* diff = app.add_subcommand("diff", "what changed between two versions (text; --json: JSON Patch ops too)");
  add_target(diff, t);
  diff->add_option("slug", slug, "config name")->required();
  diff->add_option("from", from_v, "older version")->required()->check(CLI::PositiveNumber);
  diff->add_option("to", to_v, "newer version (default: the newest)")->check(CLI::PositiveNumber);
  auto* rollback = app.add_subcommand("rollback", "make an old version live again (as a new version)");
  add_target(rollback, t);
  rollback->add_option("slug", slug, "config name")->required();
  rollback->add_option("version", version, "the version to go back to")->required()->check(CLI::PositiveNumber);
  rollback->add_option("--message,-m", message, "why");
  rollback->add_option("--if-match", if_match, "fail unless the config is still at this version")->check(CLI::NonNegativeNumber);
  auto* promote = app.add_subcommand("promote", "copy FROM's version (newest, or --version N) into TO: staging -> production");
  add_target(promote, t);
  promote->add_option("from", slug, "source config")->required();
  promote->add_option("to", to, "target config")->required();
  promote->add_option("--version", version, "source version (default: its newest)")->check(CLI::PositiveNumber);
  promote->add_option("--message,-m", message, "why");
  promote->add_option("--if-match", if_match, "fail unless TO is still at this version")->check(CLI::NonNegativeNumber);
  auto* reset = app.add_subcommand("reset", "re-seed the store from the config file: the file's configs and budgets win (new versions)");
  add_target(reset, t);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto strip = [](std::string& s) {
    if (!s.empty() && s.front() == '@') s.erase(0, 1);
  };
  strip(slug);
  strip(to);
  Headers im;
  if (if_match >= 0) im.emplace_back("if-match", "\"" + std::to_string(if_match) + "\"");

  if (!t.url.empty()) {
    if (*list && slug.empty())
      return rest_print("configs list", call(t, "GET", "/v1/configs"), t.json, [](const Json& j) {
        std::printf("%-24s %-8s\n", "CONFIG", "VERSION");
        for (const auto& c : j["data"]) std::printf("@%-23s %-8lld\n", c.value("slug", "").c_str(), static_cast<long long>(c.value("version", 0LL)));
      });
    if (*list) return rest_print("configs list", call(t, "GET", "/v1/configs/" + slug + "/versions"), t.json, [](const Json& j) { print_versions(j["data"]); });
    if (*show) {
      std::string path = version > 0 ? "/v1/configs/" + slug + "/versions/" + std::to_string(version) : "/v1/configs/" + slug;
      return rest_print("configs show", call(t, "GET", path), t.json, [](const Json& j) {
        std::printf("%s\n", (j.contains("document") ? j["document"] : j["config"]).dump(2, ' ', false, Json::error_handler_t::replace).c_str());
      });
    }
    if (*diff) {
      std::string q = "?from=" + std::to_string(from_v) + (to_v > 0 ? "&to=" + std::to_string(to_v) : std::string());
      return rest_print("configs diff", call(t, "GET", "/v1/configs/" + slug + "/diff" + q), t.json,
                        [](const Json& j) { std::printf("%s", j.value("text", "").c_str()); });
    }
    if (*rollback) {
      Json body{{"version", version}, {"message", message}};
      return rest_print("configs rollback", call(t, "POST", "/v1/configs/" + slug + "/rollback", &body, im), t.json, [&](const Json& j) {
        std::printf("@%s is at version %lld (= version %lld)\n", slug.c_str(), static_cast<long long>(j.value("version", 0LL)),
                    static_cast<long long>(version));
      });
    }
    if (*promote) {
      Json body{{"to", to}, {"message", message}};
      if (version > 0) body["version"] = version;
      return rest_print("configs promote", call(t, "POST", "/v1/configs/" + slug + "/promote", &body, im), t.json, [&](const Json& j) {
        std::printf("@%s is at version %lld (from @%s)\n", to.c_str(), static_cast<long long>(j.value("version", 0LL)), slug.c_str());
      });
    }
    std::fprintf(stderr, "modelux configs reset: works on the store file (--config FILE), or restart the proxy with `serve --reseed`\n");
    return 2;
  }

  auto store = open_store(t);
  if (!store) return fail_msg("configs", store.error());
  ConfigStore& cs = *store->configs;
  if (*list && slug.empty()) {
    auto heads = cs.heads(kKindConfig);
    if (!heads) return fail_msg("configs list", heads.error());
    Json arr = Json::array();
    for (const auto& h : *heads) arr.push_back(h.to_json(false));
    if (t.json) std::printf("%s\n", arr.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    else {
      std::printf("%-24s %-8s %-24s %s\n", "CONFIG", "VERSION", "CREATED", "AUTHOR");
      for (const auto& h : arr)
        std::printf("@%-23s %-8lld %-24s %s\n", h.value("name", "").c_str(), static_cast<long long>(h.value("version", 0LL)),
                    h.value("created", "").c_str(), h.value("author", "").c_str());
    }
    return 0;
  }
  if (*list) {
    auto rows = cs.history(kKindConfig, slug, 1000);
    if (!rows) return fail_msg("configs list", rows.error());
    if (rows->empty()) return fail_msg("configs list", Error{ErrorKind::not_found, "no config '@" + slug + "'"});
    Json arr = Json::array();
    for (const auto& v : *rows) arr.push_back(v.to_json(false));
    if (t.json) std::printf("%s\n", arr.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    else print_versions(arr);
    return 0;
  }
  auto get = [&](std::int64_t v) -> Result<ObjectVersion> {
    auto r = v > 0 ? cs.get(kKindConfig, slug, v) : cs.head(kKindConfig, slug);
    if (!r) return fail(r.error());
    if (!*r) return fail(ErrorKind::not_found, "config '@" + slug + "' has no version " + (v > 0 ? std::to_string(v) : std::string("at all")));
    return **r;
  };
  if (*show) {
    auto v = get(version);
    if (!v) return fail_msg("configs show", v.error());
    std::printf("%s\n", t.json ? v->to_json().dump(-1, ' ', false, Json::error_handler_t::replace).c_str() : v->document.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    return 0;
  }
  if (*diff) {
    auto a = get(from_v);
    auto b = get(to_v);
    if (!a) return fail_msg("configs diff", a.error());
    if (!b) return fail_msg("configs diff", b.error());
    std::string an = "@" + slug + " v" + std::to_string(a->version), bn = "@" + slug + " v" + std::to_string(b->version);
    if (t.json)
      std::printf("%s\n", Json{{"slug", slug}, {"from", a->version}, {"to", b->version}, {"ops", json_diff(a->document, b->document)},
                               {"text", text_diff(a->document, b->document, an, bn)}}.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    else std::printf("%s", text_diff(a->document, b->document, an, bn).c_str());
    return 0;
  }
  if (*rollback || *promote) {
    const bool is_rollback = rollback->parsed();
    std::string target = is_rollback ? slug : to;
    auto src = get(version);
    if (!src) return fail_msg(is_rollback ? "configs rollback" : "configs promote", src.error());
    if (auto ok = compile_check(t, cs, target, src->document); !ok) return fail_msg(is_rollback ? "configs rollback" : "configs promote", ok.error());
    if (message.empty())
      message = is_rollback ? "rollback to version " + std::to_string(src->version)
                            : "promote @" + slug + " v" + std::to_string(src->version) + " to @" + target;
    ObjectVersion v{std::string(kKindConfig), target, 0, "cli", std::chrono::system_clock::now(), message,
                    is_rollback ? "rollback" : "promote", src->document, {}};
    auto head = cs.head(kKindConfig, target);
    if (!head) return fail_msg("configs", head.error());
    std::optional<std::int64_t> expected = if_match >= 0 ? std::optional<std::int64_t>(if_match)
                                                         : std::optional<std::int64_t>(*head ? (*head)->version : 0);
    auto c = cs.commit(std::move(v), expected,
                       cli_audit(is_rollback ? "config.rollback" : "config.promote", "config:" + target, message));
    if (!c) return fail_msg(is_rollback ? "configs rollback" : "configs promote", c.error());
    if (t.json) std::printf("%s\n", c->to_json().dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    else std::printf("@%s is at version %lld\n", target.c_str(), static_cast<long long>(c->version));
    return 0;
  }
  // reset: the file wins once.
  if (t.config.empty()) return fail_msg("configs reset", Error{ErrorKind::invalid_config, "reset needs --config FILE (the file to re-seed from)"});
  auto cfg = Config::load_file(t.config);
  if (!cfg) return fail_msg("configs reset", cfg.error());
  RouterOptions ro;
  ro.open_tracer = false;
  Config check = *cfg;
  if (auto r = Router::create(std::move(check), ro); !r) return fail_msg("configs reset", r.error());
  int changed = 0;
  auto reseed = [&](std::string_view kind, const std::string& name, const Json& doc) -> Result<void> {
    auto head = cs.head(kind, name);
    if (!head) return fail(head.error());
    if (*head && !(*head)->deleted() && (*head)->document == doc) return {};
    ObjectVersion v{std::string(kind), name, 0, "cli", std::chrono::system_clock::now(), "reset from " + t.config, "reseed", doc, {}};
    auto c = cs.commit(std::move(v), std::nullopt, cli_audit(std::string(kind) + ".reseed", std::string(kind) + ":" + name, "reset from the config file"));
    if (!c) return fail(c.error());
    ++changed;
    std::printf("%s %s -> version %lld\n", std::string(kind).c_str(), name.c_str(), static_cast<long long>(c->version));
    return {};
  };
  for (const auto& [name, doc] : cfg->routing)
    if (auto r = reseed(kKindConfig, name, doc); !r) return fail_msg("configs reset", r.error());
  for (const auto& b : cfg->budgets)
    if (b.is_object() && b.contains("name") && b["name"].is_string())
      if (auto r = reseed(kKindBudget, b["name"].get<std::string>(), b); !r) return fail_msg("configs reset", r.error());
  std::printf("reset: %d new versions from %s\n", changed, t.config.c_str());
  return 0;
}

// ---- audit -----------------------------------------------------------------------------------

int run_audit_command(int argc, char** argv) {
  CLI::App app{"modelux audit: who changed what, when, from where (hash-chained)", "modelux audit"};
  Target t;
  std::string since, until, actor, object, action;
  std::size_t limit = 1000;
  bool jsonl = false, verify = false;
  add_target(&app, t);
  app.add_option("--since", since, "from this time: unix seconds, 2026-01-31 or 2026-01-31T12:00:00Z");
  app.add_option("--until", until, "up to this time");
  app.add_option("--actor", actor, "only this actor (an API key's name)");
  app.add_option("--object", object, "only this object (config:production) or kind (config:)");
  app.add_option("--action", action, "only this action (config.rollback)");
  app.add_option("--limit", limit, "at most this many entries")->check(CLI::Range(1, 10000));
  app.add_flag("--jsonl", jsonl, "one JSON entry per line (export)");
  app.add_flag("--verify", verify, "check the hash chain: exit 1 naming the first edited, inserted or deleted entry");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto print_entries = [&](const Json& rows) {
    if (jsonl || t.json) {
      for (const auto& e : rows) std::printf("%s\n", e.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
      return;
    }
    std::printf("%-5s %-24s %-16s %-15s %-18s %-28s %s\n", "SEQ", "AT", "ACTOR", "FROM", "ACTION", "OBJECT", "DETAIL");
    for (const auto& e : rows)
      std::printf("%-5lld %-24s %-16s %-15s %-18s %-28s %s\n", static_cast<long long>(e.value("seq", 0LL)), e.value("at", "").c_str(),
                  e.value("actor", "").c_str(), e.value("from", "").c_str(), e.value("action", "").c_str(), e.value("object", "").c_str(),
                  e.value("detail", "").c_str());
  };
  auto print_verify = [](const Json& v) {
    if (v.value("ok", false)) std::printf("audit log intact: %lld entries, chain verified\n", static_cast<long long>(v.value("checked", 0LL)));
    else std::printf("audit log TAMPERED: %s\n", v.value("problem", "").c_str());
  };
  auto time_of = [](const std::string& s) -> std::optional<WallTime> {
    if (s.empty()) return std::nullopt;
    // Up to 2200: WallTime's 64-bit nanoseconds end in 2262.
    if (s.find_first_not_of("0123456789") == std::string::npos)
      return s.size() > 10 || std::stoll(s) > 7'258'118'400 ? std::nullopt : std::optional<WallTime>(WallTime{std::chrono::seconds{std::stoll(s)}});
    if (s.size() < 4 || s.substr(0, 4) > "2199") return std::nullopt;
    auto t = parse_key_expiry(s, WallTime{});
    if (!t || s.ends_with('d') || s.ends_with('h') || s.ends_with('m')) return std::nullopt;
    return *t;
  };
  for (const auto& s : {since, until})
    if (!s.empty() && !time_of(s)) {
      std::fprintf(stderr, "modelux audit: '%s' is not a time (unix seconds, 2026-01-31 or 2026-01-31T12:00:00Z)\n", s.c_str());
      return 2;
    }
  if (!t.url.empty()) {
    if (verify) {
      auto r = call(t, "GET", "/v1/audit/verify");
      int rc = rest_print("audit", r, t.json, print_verify);
      return rc != 0 ? rc : (r->body.value("ok", false) ? 0 : 1);
    }
    std::string q = "?limit=" + std::to_string(limit);
    auto enc = [](const std::string& s) {
      std::string o;
      for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.') o += static_cast<char>(c);
        else {
          char b[4];
          std::snprintf(b, sizeof b, "%%%02X", c);
          o += b;
        }
      }
      return o;
    };
    for (auto [k, v] : {std::pair{"since", &since}, {"until", &until}, {"actor", &actor}, {"object", &object}, {"action", &action}})
      if (!v->empty()) q += std::string("&") + k + "=" + enc(*v);
    auto r = call(t, "GET", "/v1/audit" + q);
    return rest_print("audit", r, false, [&](const Json& j) { print_entries(j["data"]); });
  }
  auto store = open_store(t);
  if (!store) return fail_msg("audit", store.error());
  if (verify) {
    auto v = store->audit->verify();
    if (!v) return fail_msg("audit", v.error());
    if (t.json) std::printf("%s\n", v->to_json().dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    else print_verify(v->to_json());
    return v->ok ? 0 : 1;
  }
  AuditQuery q;
  q.since = time_of(since);
  q.until = time_of(until);
  q.actor = actor;
  q.object = object;
  q.action = action;
  q.limit = limit;
  auto rows = store->audit->query(q);
  if (!rows) return fail_msg("audit", rows.error());
  Json arr = Json::array();
  for (const auto& e : *rows) arr.push_back(e.to_json());
  print_entries(arr);
  return 0;
}

// ---- webhooks --------------------------------------------------------------------------------

int run_webhooks_command(int argc, char** argv) {
  CLI::App app{"modelux webhooks: signed event deliveries", "modelux webhooks"};
  app.require_subcommand(1);
  Target t;
  std::string id, url, description, delivery;
  std::vector<std::string> events;
  std::size_t limit = 50;
  auto* list = app.add_subcommand("list", "webhooks");
  add_target(list, t);
  auto* add = app.add_subcommand("add", "add a webhook; prints its signing secret once");
  add_target(add, t);
  add->add_option("url", url, "http(s) URL that receives the events")->required();
  add->add_option("--event,-e", events, "an event to send (repeatable; default every event)");
  add->add_option("--description", description, "free text");
  auto* remove = app.add_subcommand("remove", "remove a webhook");
  add_target(remove, t);
  remove->add_option("id", id, "webhook id (wh_...)")->required();
  auto* dels = app.add_subcommand("deliveries", "a webhook's deliveries, newest first");
  add_target(dels, t);
  dels->add_option("id", id, "webhook id (wh_...)")->required();
  dels->add_option("--limit", limit, "at most this many")->check(CLI::Range(1, 1000));
  auto* redeliver = app.add_subcommand("redeliver", "send a delivery again now (same webhook-id; retried while within a day of its event)");
  add_target(redeliver, t);
  redeliver->add_option("id", id, "webhook id (wh_...)")->required();
  redeliver->add_option("delivery", delivery, "delivery id (msg_...)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto print_hooks = [](const Json& arr) {
    std::printf("%-20s %-8s %-40s %s\n", "ID", "ENABLED", "URL", "EVENTS");
    for (const auto& h : arr) {
      std::string ev;
      for (const auto& e : h.value("events", Json::array())) ev += (ev.empty() ? "" : ",") + e.get<std::string>();
      std::printf("%-20s %-8s %-40s %s\n", h.value("id", "").c_str(), h.value("enabled", true) ? "yes" : "no", h.value("url", "").c_str(), ev.c_str());
    }
  };
  auto print_deliveries = [](const Json& arr) {
    std::printf("%-30s %-20s %-10s %-8s %-6s %s\n", "DELIVERY", "EVENT", "STATUS", "ATTEMPTS", "HTTP", "CREATED");
    for (const auto& d : arr)
      std::printf("%-30s %-20s %-10s %-8d %-6d %s\n", d.value("id", "").c_str(), d.value("event", "").c_str(), d.value("status", "").c_str(),
                  d.value("attempts", 0), d.value("last_status", 0), d.value("created", "").c_str());
  };
  Json spec{{"url", url}};
  if (!events.empty()) spec["events"] = events;
  if (!description.empty()) spec["description"] = description;
  if (!t.url.empty()) {
    if (*list) return rest_print("webhooks list", call(t, "GET", "/v1/webhooks"), t.json, [&](const Json& j) { print_hooks(j["data"]); });
    if (*add)
      return rest_print("webhooks add", call(t, "POST", "/v1/webhooks", &spec), t.json, [](const Json& j) {
        std::printf("added %s\nsigning secret (shown once): %s\n", j.value("id", "").c_str(), j.value("secret", "").c_str());
      });
    if (*remove) return rest_print("webhooks remove", call(t, "DELETE", "/v1/webhooks/" + id), t.json, [&](const Json&) { std::printf("removed %s\n", id.c_str()); });
    if (*dels)
      return rest_print("webhooks deliveries", call(t, "GET", "/v1/webhooks/" + id + "/deliveries?limit=" + std::to_string(limit)), t.json,
                        [&](const Json& j) { print_deliveries(j["data"]); });
    Json empty = Json::object();
    return rest_print("webhooks redeliver", call(t, "POST", "/v1/webhooks/" + id + "/deliveries/" + delivery + "/redeliver", &empty), t.json,
                      [&](const Json&) { std::printf("queued %s for redelivery\n", delivery.c_str()); });
  }
  auto store = open_store(t);
  if (!store) return fail_msg("webhooks", store.error());
  ConfigStore& cs = *store->configs;
  if (*list) {
    auto heads = cs.heads(kKindWebhook);
    if (!heads) return fail_msg("webhooks list", heads.error());
    Json arr = Json::array();
    for (const auto& h : *heads) {
      Json j = h.document;
      j["id"] = h.name;
      j["version"] = h.version;
      arr.push_back(std::move(j));
    }
    if (t.json) std::printf("%s\n", arr.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    else print_hooks(arr);
    return 0;
  }
  if (*add) {
    auto doc = normalize_webhook_spec(spec);
    if (!doc) return fail_msg("webhooks add", doc.error());
    std::string secret = new_webhook_secret();
    // The id from the secret's hash-free randomness: 8 random bytes as hex.
    std::string wid = "wh_" + document_hash(Json(secret + std::to_string(std::chrono::system_clock::now().time_since_epoch().count()))).substr(0, 16);
    if (auto r = store->deliveries->set_webhook_secret(wid, secret); !r) return fail_msg("webhooks add", r.error());
    ObjectVersion v{std::string(kKindWebhook), wid, 0, "cli", std::chrono::system_clock::now(), "created", "create", *doc, {}};
    auto c = cs.commit(std::move(v), 0, cli_audit("webhook.create", "webhook:" + wid, url));
    if (!c) return fail_msg("webhooks add", c.error());
    if (t.json) {
      Json j = *doc;
      j["id"] = wid;
      j["secret"] = secret;
      std::printf("%s\n", j.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    } else {
      std::printf("added %s\nsigning secret (shown once): %s\n", wid.c_str(), secret.c_str());
    }
    return 0;
  }
  if (*remove) {
    auto head = cs.head(kKindWebhook, id);
    if (!head) return fail_msg("webhooks remove", head.error());
    if (!*head || (*head)->deleted()) return fail_msg("webhooks remove", Error{ErrorKind::not_found, "no webhook '" + id + "'"});
    ObjectVersion v{std::string(kKindWebhook), id, 0, "cli", std::chrono::system_clock::now(), "removed", "delete", Json(), {}};
    auto c = cs.commit(std::move(v), (*head)->version, cli_audit("webhook.remove", "webhook:" + id, "removed"));
    if (!c) return fail_msg("webhooks remove", c.error());
    std::printf("removed %s\n", id.c_str());
    return 0;
  }
  if (*dels) {
    auto rows = store->deliveries->deliveries(id, limit);
    if (!rows) return fail_msg("webhooks deliveries", rows.error());
    Json arr = Json::array();
    for (const auto& d : *rows) arr.push_back(d.to_json(t.json));
    if (t.json) std::printf("%s\n", arr.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    else print_deliveries(arr);
    return 0;
  }
  auto d = store->deliveries->delivery(delivery);
  if (!d) return fail_msg("webhooks redeliver", d.error());
  if (!*d || (*d)->webhook_id != id) return fail_msg("webhooks redeliver", Error{ErrorKind::not_found, "webhook '" + id + "' has no delivery '" + delivery + "'"});
  WebhookDelivery del = **d;
  del.status = "pending";
  del.next_attempt = std::chrono::system_clock::now();
  if (auto r = store->deliveries->update_delivery(del); !r) return fail_msg("webhooks redeliver", r.error());
  if (auto r = store->audit->append(cli_audit("webhook.redeliver", "webhook:" + id, delivery)); !r) return fail_msg("webhooks redeliver", r.error());
  std::printf("queued %s for redelivery (the running proxy sends it)\n", delivery.c_str());
  return 0;
}

}  // namespace modelux::cli
