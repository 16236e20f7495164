// modelux: the proxy, the mock provider, the demo and the trace CLI in one binary. One
// command-line parser (CLI11) for every command; a bad number or an unknown flag is a usage
// error (exit 2), never a silent default.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "control_commands.hpp"
#include "modelux/config.hpp"
#include "modelux/control.hpp"
#include "modelux/keys.hpp"
#include "modelux/router.hpp"
#include "modelux/server.hpp"
#include "modelux/testing.hpp"
#include "replay_cli.hpp"
#include "trace_commands.hpp"

#ifdef MODELUX_WITH_JEMALLOC
// The binary allocates with jemalloc (examples/CMakeLists.txt, MODELUX_JEMALLOC). glibc keeps
// the pages a burst of streams used whenever one long-lived object (a pooled session, a trace
// node, Asio's per-socket state) sits among them: 10,000 streams left RSS at 2.5x idle, and
// malloc_trim cannot return a page with a live object in it. jemalloc keeps each size class
// in its own slabs, so a burst's buffers never share pages with what outlives it, and its
// background thread returns the freed pages after a second even while the process is idle.
// Off by default: since the idle trimmer also frees Asio's kept socket states (the objects that
// pinned most of those pages), glibc ends lower after a burst than jemalloc (docs/performance.md,
// "Memory after streams, fourth session").
extern "C" {
// NOLINTNEXTLINE: the name and type are jemalloc's documented compile-time configuration hook
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}
#endif

namespace modelux::cli {

int wait_for_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace modelux::cli

namespace {

using namespace modelux;

Result<Config> load_config(const std::string& path) {
  if (!path.empty()) return Config::load_file(path);
  return Config::embedded_defaults();
}

Result<Json> read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(ErrorKind::io, "cannot open '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_json(ss.str());
}

// Signals are blocked in every thread (servers start threads after this) and taken by sigwait.
void block_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

struct ServeArgs {
  std::string config, host;
  int port = -1, threads = 0;
  bool reseed = false;
};

int serve(const ServeArgs& args) {
  auto cfg = load_config(args.config);
  if (!cfg) {
    std::fprintf(stderr, "modelux serve: %s\n", cfg.error().describe().c_str());
    return 1;
  }
  proxy::ProxyOptions po;
  po.host = args.host;
  po.port = args.port;
  po.threads = args.threads;
  po.reseed = args.reseed;
  block_signals();
  auto px = proxy::Proxy::start(std::move(*cfg), po);
  if (!px) {
    std::fprintf(stderr, "modelux serve: %s\n", px.error().describe().c_str());
    return 1;
  }
  auto sc = ServerConfig::from_json((*px)->router().config().server);
  std::string host = !po.host.empty() ? po.host : sc ? sc->host : std::string("127.0.0.1");
  std::printf("modelux proxy listening on http://%s:%d (configs: ", host.c_str(), (*px)->port());
  for (const auto& s : (*px)->router().routing_slugs()) std::printf("@%s ", s.c_str());
  std::printf(")\n");
  std::fflush(stdout);
  // SIGTERM/SIGINT: drain (stop accepting, let requests in flight finish up to
  // server.drain_timeout_ms, flush traces and budgets), then exit 0.
  int sig = cli::wait_for_signal();
  std::fprintf(stderr, "modelux serve: %s, draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  bool clean = (*px)->drain();
  if (!clean) std::fprintf(stderr, "modelux serve: drain timeout, cutting the requests still in flight\n");
  (*px)->stop();
  return 0;
}

struct MockArgs {
  std::string host = "127.0.0.1", config;
  int port = 8089, threads = 1;
  std::uint64_t seed = 42;
  std::vector<std::string> fail;
  std::optional<double> latency_ms;
};

int mock_cmd(const MockArgs& args) {
  mock::MockOptions mo;
  mo.host = args.host;
  mo.port = args.port;
  mo.seed = args.seed;
  mo.threads = args.threads;
  if (!args.config.empty()) {
    auto j = read_json_file(args.config);
    if (!j) {
      std::fprintf(stderr, "modelux mock: %s\n", j.error().describe().c_str());
      return 1;
    }
    mo.config = *j;
  }
  if (!mo.config.contains("models")) mo.config["models"] = Json::object();
  for (const auto& f : args.fail) {
    auto eq = f.find('=');
    int status = 0;
    if (eq != std::string::npos) {
      try {
        status = std::stoi(f.substr(eq + 1));
      } catch (...) {
        status = 0;
      }
    }
    if (eq == std::string::npos || eq == 0 || status < 100 || status > 599) {
      std::fprintf(stderr, "modelux mock: --fail takes MODEL=STATUS (a status 100..599), got '%s'\n", f.c_str());
      return 2;
    }
    mo.config["models"][f.substr(0, eq)] = {{"error_status", status}, {"retry_after_ms", 1000}};
  }
  if (args.latency_ms) mo.config["default"] = {{"latency_ms", *args.latency_ms}};
  block_signals();
  auto m = mock::MockProvider::start(mo);
  if (!m) {
    std::fprintf(stderr, "modelux mock: %s\n", m.error().describe().c_str());
    return 1;
  }
  std::printf("modelux mock provider listening on %s\n", (*m)->base_url().c_str());
  std::fflush(stdout);
  cli::wait_for_signal();
  (*m)->stop();
  return 0;
}

int check_config(const std::string& file) {
  // `check-config FILE` (or --config FILE) checks FILE; with neither, the embedded defaults.
  Result<Config> cfg = load_config(file);
  if (!cfg) {
    std::fprintf(stderr, "invalid: %s\n", cfg.error().describe().c_str());
    return 1;
  }
  RouterOptions ro;
  ro.open_tracer = false;
  auto server = ServerConfig::from_json(cfg->server);
  if (!server) {
    std::fprintf(stderr, "invalid: %s\n", server.error().describe().c_str());
    return 1;
  }
  auto r = Router::create(std::move(*cfg), ro);
  if (!r) {
    std::fprintf(stderr, "invalid: %s\n", r.error().describe().c_str());
    return 1;
  }
  std::printf("ok: %zu routing configs, %zu routable models\n", (*r)->routing_slugs().size(), (*r)->routable_models().size());
  return 0;
}

struct KeysArgs {
  std::string db, config, control_db;
  // create
  std::string project, org, name, role = "project", expires;
  std::vector<std::string> models, configs;
  int rpm = 0, max_concurrency = 0;
  bool json = false;
  // revoke
  std::string id;
};

// `modelux keys` works on the key store file directly (like `modelux logs` on the trace
// store): --db FILE, or --config FILE to use that config's server.keys_db. A running proxy
// sees every change on its next request.
Result<std::shared_ptr<KeyStore>> open_key_store(const KeysArgs& a) {
  std::string path = a.db;
  if (path.empty() && !a.config.empty()) {
    auto cfg = Config::load_file(a.config);
    if (!cfg) return fail(cfg.error());
    auto sc = ServerConfig::from_json(cfg->server);
    if (!sc) return fail(sc.error());
    path = ServerConfig::keys_db_path(*cfg, *sc);
    if (path.empty())
      return fail(ErrorKind::invalid_config, "this config keeps managed keys in memory (set server.keys_db or tracing.path)",
                  "$.server.keys_db");
  }
  if (path.empty()) return fail(ErrorKind::invalid_config, "give --db FILE or --config FILE");
  return KeyStore::open(path);
}

// Every key change is a version and an audit entry in the control store, as through the API:
// --control-db, else the one --config names, else the store beside --db (control.db next to
// the keys file, or the same PostgreSQL database).
Result<ControlStore> open_key_audit_store(const KeysArgs& a) {
  std::string path = a.control_db;
  if (path.empty() && !a.config.empty()) {
    auto cfg = Config::load_file(a.config);
    if (!cfg) return fail(cfg.error());
    auto sc = ServerConfig::from_json(cfg->server);
    if (!sc) return fail(sc.error());
    path = ServerConfig::control_db_path(*cfg, *sc);
  } else if (path.empty() && !a.db.empty()) {
    auto slash = a.db.rfind('/');
    path = a.db.starts_with("postgres://") || a.db.starts_with("postgresql://") ? a.db
           : slash == std::string::npos                                            ? std::string("control.db")
                                                                                   : a.db.substr(0, slash + 1) + "control.db";
  }
  if (path.empty())
    return fail(ErrorKind::invalid_config,
                "this config keeps the control store in memory, so the key change could not be audited (set server.control.db, or "
                "give --control-db FILE)",
                "$.server.control.db");
  return open_control_store(path);
}

int record_key_change(const char* cmd, ControlStore& audit, const ManagedKey& k, bool revoked) {
  const char* user = std::getenv("USER");
  auto r = commit_key_change(*audit.configs, k, revoked, std::string("cli:") + (user ? user : "unknown"), "cli", std::chrono::system_clock::now());
  if (!r) {
    std::fprintf(stderr, "modelux keys %s: the key changed but its audit entry failed: %s\n", cmd, r.error().describe().c_str());
    return 1;
  }
  return 0;
}

int keys_create(const KeysArgs& a) {
  auto store = open_key_store(a);
  if (!store) {
    std::fprintf(stderr, "modelux keys create: %s\n", store.error().describe().c_str());
    return 1;
  }
  auto audit = open_key_audit_store(a);
  if (!audit) {
    std::fprintf(stderr, "modelux keys create: %s\n", audit.error().describe().c_str());
    return 1;
  }
  ManagedKey k;
  k.name = a.name;
  k.project = a.project;
  k.org = a.org;
  k.role = *key_role_from_string(a.role);  // CLI11 checked the choice
  if (k.role != KeyRole::admin && k.project.empty()) {
    std::fprintf(stderr, "modelux keys create: a %s key needs --project\n", a.role.c_str());
    return 2;
  }
  k.limits.models = a.models;
  for (auto c : a.configs) k.limits.configs.push_back(!c.empty() && c.front() == '@' ? c.substr(1) : c);
  k.limits.rpm = a.rpm;
  k.limits.max_concurrency = a.max_concurrency;
  auto now = std::chrono::system_clock::now();
  if (!a.expires.empty()) {
    auto t = parse_key_expiry(a.expires, now);
    if (!t) {
      std::fprintf(stderr, "modelux keys create: %s\n", t.error().message.c_str());
      return 2;
    }
    k.expires = *t;
  }
  auto created = (*store)->create(std::move(k), now);
  if (!created) {
    std::fprintf(stderr, "modelux keys create: %s\n", created.error().describe().c_str());
    return 1;
  }
  if (int rc = record_key_change("create", *audit, created->key, false); rc != 0) return rc;
  if (a.json) {
    Json j = created->key.to_json();
    j["key"] = created->secret;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("created %s (role %s, project %s)\n", created->key.id.c_str(), std::string(to_string(created->key.role)).c_str(),
                created->key.project.empty() ? "-" : created->key.project.c_str());
    std::printf("secret (shown once, only its hash is stored): %s\n", created->secret.c_str());
  }
  return 0;
}

int keys_list(const KeysArgs& a) {
  auto store = open_key_store(a);
  if (!store) {
    std::fprintf(stderr, "modelux keys list: %s\n", store.error().describe().c_str());
    return 1;
  }
  auto rows = (*store)->list();
  if (!rows) {
    std::fprintf(stderr, "modelux keys list: %s\n", rows.error().describe().c_str());
    return 1;
  }
  if (a.json) {
    Json arr = Json::array();
    for (const auto& k : *rows) arr.push_back(k.to_json());
    std::printf("%s\n", arr.dump().c_str());
    return 0;
  }
  std::printf("%-22s %-9s %-8s %-16s %-10s %s\n", "ID", "HINT", "ROLE", "PROJECT", "STATE", "LIMITS");
  auto now = std::chrono::system_clock::now();
  for (const auto& k : *rows) {
    std::string limits;
    if (k.limits.rpm) limits += "rpm=" + std::to_string(k.limits.rpm) + " ";
    if (k.limits.max_concurrency) limits += "concurrency=" + std::to_string(k.limits.max_concurrency) + " ";
    if (!k.limits.models.empty()) limits += "models=" + std::to_string(k.limits.models.size()) + " ";
    if (!k.limits.configs.empty()) limits += "configs=" + std::to_string(k.limits.configs.size()) + " ";
    const char* state = k.revoked ? "revoked" : k.active(now) ? "active" : "expired";
    std::printf("%-22s %-9s %-8s %-16s %-10s %s\n", k.id.c_str(), k.hint.c_str(), std::string(to_string(k.role)).c_str(),
                k.project.empty() ? "-" : k.project.c_str(), state, limits.c_str());
  }
  return 0;
}

int keys_revoke(const KeysArgs& a) {
  auto store = open_key_store(a);
  if (!store) {
    std::fprintf(stderr, "modelux keys revoke: %s\n", store.error().describe().c_str());
    return 1;
  }
  auto audit = open_key_audit_store(a);
  if (!audit) {
    std::fprintf(stderr, "modelux keys revoke: %s\n", audit.error().describe().c_str());
    return 1;
  }
  auto r = (*store)->revoke(a.id, std::chrono::system_clock::now());
  if (!r) {
    std::fprintf(stderr, "modelux keys revoke: %s\n", r.error().describe().c_str());
    return 1;
  }
  if (!*r) {
    std::fprintf(stderr, "modelux keys revoke: no active key '%s'\n", a.id.c_str());
    return 1;
  }
  if (auto rows = (*store)->list())
    for (const auto& k : *rows)
      if (k.id == a.id)
        if (int rc = record_key_change("revoke", *audit, k, true); rc != 0) return rc;
  std::printf("revoked %s\n", a.id.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"modelux: route every LLM call (proxy, mock provider, demo, trace CLI)", "modelux"};
  app.require_subcommand(1);

  ServeArgs serve_args;
  auto* serve_cmd = app.add_subcommand("serve", "OpenAI-compatible proxy (embedded defaults without --config)");
  serve_cmd->add_option("--config", serve_args.config, "config file")->check(CLI::ExistingFile);
  serve_cmd->add_option("--host", serve_args.host, "listen address (overrides server.host)");
  serve_cmd->add_option("--port", serve_args.port, "listen port, 0 picks a free one (overrides server.port)")
      ->check(CLI::Range(0, 65535));
  serve_cmd->add_option("--threads", serve_args.threads, "io threads (overrides server.threads)")->check(CLI::Range(1, 256));
  serve_cmd->add_flag("--reseed", serve_args.reseed,
                      "the config file wins once: its routing configs and budgets become new versions where they differ from the control store's");

  MockArgs mock_args;
  auto* mock = app.add_subcommand("mock", "provider mock speaking every family's wire format, with fault knobs");
  mock->add_option("--host", mock_args.host, "listen address");
  mock->add_option("--port", mock_args.port, "listen port, 0 picks a free one")->check(CLI::Range(0, 65535));
  mock->add_option("--config", mock_args.config, "mock config JSON file")->check(CLI::ExistingFile);
  mock->add_option("--seed", mock_args.seed, "random seed");
  mock->add_option("--threads", mock_args.threads, "threads")->check(CLI::Range(1, 256));
  mock->add_option("--fail", mock_args.fail, "MODEL=STATUS: that model answers STATUS (repeatable)");
  mock->add_option("--latency-ms", mock_args.latency_ms, "default latency")->check(CLI::NonNegativeNumber);

  app.add_subcommand("demo", "mock + proxy + real requests through @production, with their traces");

  std::string check_file, check_flag;
  auto* check = app.add_subcommand("check-config", "validate a config file (embedded defaults without one)");
  check->add_option("file", check_file, "config file")->check(CLI::ExistingFile);
  check->add_option("--config", check_flag, "config file")->check(CLI::ExistingFile);
  check->callback([&] {
    if (!check_file.empty() && !check_flag.empty()) throw CLI::ValidationError("check-config", "give FILE or --config FILE, not both");
  });

  // logs and spend parse their own flags (with CLI11 too, see trace_cli.cpp) so that tests can
  // run them in-process; here they take the rest of the line as is.
  auto* logs = app.add_subcommand("logs", "decision traces from the trace store");
  logs->prefix_command();
  auto* spend = app.add_subcommand("spend", "spend by model, provider, project, tag or user");
  spend->prefix_command();
  // configs, audit and webhooks parse their own arguments (control_cli.cpp).
  auto* configs_cmd = app.add_subcommand("configs", "routing config versions: list, show, diff, rollback, promote, reset");
  configs_cmd->prefix_command();
  auto* audit_cmd = app.add_subcommand("audit", "the audit log: query, export (--jsonl), verify the hash chain (--verify)");
  audit_cmd->prefix_command();
  auto* webhooks_cmd = app.add_subcommand("webhooks", "signed webhooks: list, add, remove, deliveries, redeliver");
  webhooks_cmd->prefix_command();
  ReplayArgs replay_args;
  auto* replay_cmd = app.add_subcommand("replay", "replay stored traffic against a candidate config and diff the outcome");
  add_replay_options(*replay_cmd, replay_args);
  std::string replay_control_db;
  replay_cmd->add_option("--control-db", replay_control_db,
                         "--promote writes here: the control store file (default: the one --config names)");
  KeysArgs keys_args;
  auto* keys = app.add_subcommand("keys", "managed modelux API keys (create, list, revoke) in the key store");
  keys->require_subcommand(1);
  auto key_store_opts = [&](CLI::App* sub) {
    sub->add_option("--db", keys_args.db, "key store file (SQLite) or postgres:// URL");
    sub->add_option("--config", keys_args.config, "config file: use its server.keys_db")->check(CLI::ExistingFile);
    sub->add_flag("--json", keys_args.json, "JSON output");
    sub->add_option("--control-db", keys_args.control_db,
                    "where creates and revokes are recorded as versions and audit entries (default: the config's control store, or "
                    "control.db beside --db)");
  };
  auto* keys_create_cmd = keys->add_subcommand("create", "create a key; prints its secret once");
  key_store_opts(keys_create_cmd);
  keys_create_cmd->add_option("--project", keys_args.project, "project the key acts for");
  keys_create_cmd->add_option("--org", keys_args.org, "org");
  keys_create_cmd->add_option("--name", keys_args.name, "name (default: the key id)");
  keys_create_cmd->add_option("--role", keys_args.role, "admin | project | viewer")->check(CLI::IsMember({"admin", "project", "viewer"}));
  keys_create_cmd->add_option("--models", keys_args.models, "allowed models (repeatable; default any)");
  keys_create_cmd->add_option("--configs", keys_args.configs, "allowed @configs (repeatable; default any)");
  keys_create_cmd->add_option("--rpm", keys_args.rpm, "requests per minute (0 = unlimited)")->check(CLI::Range(0, 1000000));
  keys_create_cmd->add_option("--max-concurrency", keys_args.max_concurrency, "requests in flight (0 = unlimited)")->check(CLI::Range(0, 1000000));
  keys_create_cmd->add_option("--expires", keys_args.expires, "2026-01-31, 2026-01-31T12:00:00Z, or 30d / 12h / 90m");
  auto* keys_list_cmd = keys->add_subcommand("list", "list keys (never their secrets)");
  key_store_opts(keys_list_cmd);
  auto* keys_revoke_cmd = keys->add_subcommand("revoke", "revoke a key (effective on the proxy's next request)");
  key_store_opts(keys_revoke_cmd);
  keys_revoke_cmd->add_option("id", keys_args.id, "key id (key_...)")->required();

  std::string mcp_url = "http://127.0.0.1:8080", mcp_key;
  auto* mcp_cmd = app.add_subcommand("mcp", "MCP over stdio for agents: relays to a running proxy's /mcp (tools = its admin API)");
  mcp_cmd->add_option("--url", mcp_url, "the proxy (its /mcp endpoint is used)");
  mcp_cmd->add_option("--key", mcp_key, "API key (default: $MODELUX_API_KEY); a viewer key gets read-only tools");

  app.add_subcommand("version", "print the version");
  app.set_version_flag("--version", std::string("modelux ") + std::string(version()));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help / --version exit 0; every usage error exits 2
  }
  if (*serve_cmd) return serve(serve_args);
  if (*mock) return mock_cmd(mock_args);
  if (app.got_subcommand("demo")) return cli::run_demo();
  if (*mcp_cmd) return cli::run_mcp_stdio(mcp_url, mcp_key);
  if (*keys_create_cmd) return keys_create(keys_args);
  if (*keys_list_cmd) return keys_list(keys_args);
  if (*keys_revoke_cmd) return keys_revoke(keys_args);
  if (*replay_cmd) {
    std::unique_ptr<ConfigPublisher> publisher;
    if (replay_args.promote && (!replay_control_db.empty() || !replay_args.config.empty())) {
      auto p = cli::open_config_publisher(replay_control_db, replay_args.config);
      if (!p) {
        std::cerr << "modelux replay: --promote: " << p.error().describe() << "\n";
        return 1;
      }
      publisher = std::move(*p);
    }
    return run_replay(replay_args, std::cout, std::cerr, SteadyClock::instance(), publisher.get());
  }
  if (*check) return check_config(!check_file.empty() ? check_file : check_flag);
  auto forward = [](const char* name, CLI::App* sub, int (*run)(int, char**)) {
    std::vector<std::string> rest = sub->remaining();
    rest.insert(rest.begin(), name);
    std::vector<char*> ptrs;
    for (auto& r : rest) ptrs.push_back(r.data());
    return run(static_cast<int>(ptrs.size()), ptrs.data());
  };
  if (*logs) return forward("logs", logs, run_logs_command);
  if (*configs_cmd) return forward("configs", configs_cmd, cli::run_configs_command);
  if (*audit_cmd) return forward("audit", audit_cmd, cli::run_audit_command);
  if (*webhooks_cmd) return forward("webhooks", webhooks_cmd, cli::run_webhooks_command);
  if (*spend) return forward("spend", spend, run_spend_command);
  std::printf("modelux %s\n", std::string(version()).c_str());
  return 0;
}
