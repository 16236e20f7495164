// modelux: the proxy, the mock provider, the demo and the trace CLI in one binary.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "modelux/cli.hpp"
#include "mock/server.hpp"
#include "modelux/config.hpp"
#include "modelux/router.hpp"
#include "proxy/proxy.hpp"
#if __has_include("cli/trace_commands.hpp")
#include "cli/trace_commands.hpp"
#define MODELUX_HAVE_TRACE_CLI 1
#endif

namespace modelux::cli {

std::optional<std::string> flag(const std::vector<std::string>& args, const std::string& name) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == name && i + 1 < args.size()) return args[i + 1];
    if (args[i].starts_with(name + "=")) return args[i].substr(name.size() + 1);
  }
  return std::nullopt;
}

std::vector<std::string> flags(const std::vector<std::string>& args, const std::string& name) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == name && i + 1 < args.size()) out.push_back(args[i + 1]);
    else if (args[i].starts_with(name + "=")) out.push_back(args[i].substr(name.size() + 1));
  }
  return out;
}

bool has(const std::vector<std::string>& args, const std::string& name) {
  for (const auto& a : args)
    if (a == name) return true;
  return false;
}

void wait_for_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
}

}  // namespace modelux::cli

namespace {

using namespace modelux;

int usage() {
  std::fprintf(stderr,
               "usage: modelux <command> [flags]\n"
               "  serve [--config FILE] [--host H] [--port N] [--threads N]   OpenAI-compatible proxy\n"
               "  mock  [--port N] [--host H] [--config FILE] [--seed S] [--fail MODEL=STATUS]... [--latency-ms MS]\n"
               "  demo                                                       mock + proxy + requests, with traces\n"
               "  logs  [--db FILE] [--trace ID] [--since 1h] [--tag k=v] [--model M] [--status ok|error]\n"
               "  spend [--db FILE] --by model|provider|project|tag|user [--since 24h]\n"
               "  check-config [FILE | --config FILE]                        validate a config file\n"
               "  version\n");
  return 2;
}

Result<Config> load_config(const std::vector<std::string>& args) {
  if (auto path = cli::flag(args, "--config")) return Config::load_file(*path);
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

int serve(const std::vector<std::string>& args) {
  auto cfg = load_config(args);
  if (!cfg) {
    std::fprintf(stderr, "modelux serve: %s\n", cfg.error().describe().c_str());
    return 1;
  }
  proxy::ProxyOptions po;
  if (auto h = cli::flag(args, "--host")) po.host = *h;
  if (auto p = cli::flag(args, "--port")) po.port = std::atoi(p->c_str());
  if (auto t = cli::flag(args, "--threads")) po.threads = std::atoi(t->c_str());
  block_signals();
  auto px = proxy::Proxy::start(std::move(*cfg), po);
  if (!px) {
    std::fprintf(stderr, "modelux serve: %s\n", px.error().describe().c_str());
    return 1;
  }
  std::printf("modelux proxy listening on http://%s:%d (configs: ", po.host.empty() ? (*px)->router().config().server.host.c_str() : po.host.c_str(),
              (*px)->port());
  for (const auto& s : (*px)->router().routing_slugs()) std::printf("@%s ", s.c_str());
  std::printf(")\n");
  std::fflush(stdout);
  cli::wait_for_signal();
  (*px)->stop();
  return 0;
}

int mock_cmd(const std::vector<std::string>& args) {
  mock::MockOptions mo;
  if (auto h = cli::flag(args, "--host")) mo.host = *h;
  mo.port = std::atoi(cli::flag(args, "--port").value_or("8089").c_str());
  if (auto s = cli::flag(args, "--seed")) mo.seed = std::strtoull(s->c_str(), nullptr, 10);
  if (auto t = cli::flag(args, "--threads")) mo.threads = std::atoi(t->c_str());
  if (auto c = cli::flag(args, "--config")) {
    auto j = read_json_file(*c);
    if (!j) {
      std::fprintf(stderr, "modelux mock: %s\n", j.error().describe().c_str());
      return 1;
    }
    mo.config = *j;
  }
  if (!mo.config.contains("models")) mo.config["models"] = Json::object();
  for (const auto& f : cli::flags(args, "--fail")) {
    auto eq = f.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "modelux mock: --fail takes MODEL=STATUS\n");
      return 2;
    }
    mo.config["models"][f.substr(0, eq)] = {{"error_status", std::atoi(f.c_str() + eq + 1)}, {"retry_after_ms", 1000}};
  }
  if (auto l = cli::flag(args, "--latency-ms")) mo.config["default"] = {{"latency_ms", std::atof(l->c_str())}};
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

int check_config(const std::vector<std::string>& args) {
  // `check-config FILE` and `check-config --config FILE` both check FILE; checking the
  // embedded defaults needs no argument at all (a stray word must not pass as "ok").
  Result<Config> cfg = fail(ErrorKind::internal, "unset");
  if (!args.empty() && !args.front().starts_with("-")) {
    if (args.size() > 1) {
      std::fprintf(stderr, "usage: modelux check-config [FILE | --config FILE]\n");
      return 2;
    }
    cfg = Config::load_file(args.front());
  } else {
    cfg = load_config(args);
  }
  if (!cfg) {
    std::fprintf(stderr, "invalid: %s\n", cfg.error().describe().c_str());
    return 1;
  }
  RouterOptions ro;
  ro.open_tracer = false;
  auto r = Router::create(std::move(*cfg), ro);
  if (!r) {
    std::fprintf(stderr, "invalid: %s\n", r.error().describe().c_str());
    return 1;
  }
  std::printf("ok: %zu routing configs, %zu routable models\n", (*r)->routing_slugs().size(), (*r)->routable_models().size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "serve") return serve(args);
  if (cmd == "mock") return mock_cmd(args);
  if (cmd == "demo") return cli::run_demo(args);
  if (cmd == "check-config") return check_config(args);
  if (cmd == "version" || cmd == "--version") {
    std::printf("modelux %s\n", std::string(version()).c_str());
    return 0;
  }
#ifdef MODELUX_HAVE_TRACE_CLI
  if (cmd == "logs") return run_logs_command(argc - 1, argv + 1);
  if (cmd == "spend") return run_spend_command(argc - 1, argv + 1);
#endif
  return usage();
}
