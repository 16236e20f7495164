// Test support: a real redis-server on 127.0.0.1 in a temp dir, started for a test and killed
// (by its pid) after. No persistence (--save "" --appendonly no), so a restart comes back
// empty, like a crashed cache node. redis-server is found through PATH.
//
// Ports: redis-server cannot listen on port 0 and report the port it got, so it is given a port
// BELOW the kernel's ephemeral range (ip_local_port_range), which bind(0) and outgoing
// connections never hand out: under `ctest -j` only another RedisServer can want the same port.
// It binds the port itself; if the port is taken it exits at start ("Address already in use")
// and another port is tried, and the server that answers is checked to be ours (INFO's
// process_id), so a test never talks to someone else's server. A restart reuses the port.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

namespace modelux::test {

class RedisServer {
 public:
  /// Starts redis-server on a port of its own. Throws std::runtime_error when it cannot.
  RedisServer() {
    exe_ = find_in_path("redis-server");
    if (exe_.empty()) throw std::runtime_error("redis-server not found in PATH (apt-get install redis-server)");
    std::string tmpl = (std::filesystem::temp_directory_path() / "modelux-redis-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    std::mt19937 rng(std::random_device{}());
    const int hi = ephemeral_low() - 1, lo = std::max(1024, hi - 10000);
    try {
      for (int attempt = 0;; ++attempt) {
        port_ = std::uniform_int_distribution<int>(lo, hi)(rng);
        if (try_start()) return;
        if (attempt == 50)
          throw std::runtime_error("redis-server found no free port in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      }
    } catch (...) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      throw;
    }
  }
  ~RedisServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const noexcept { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  bool running() const noexcept { return pid_ > 0; }

  /// Kills the server (SIGKILL, like a crash) and reaps it.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  /// Starts it again on the same port (empty: no persistence).
  void start() {
    if (pid_ > 0) return;
    if (!try_start()) throw std::runtime_error("redis-server could not listen again on port " + std::to_string(port_) + ": taken");
  }

 private:
  /// Starts redis-server on port_. False if the port was taken (by another process or another
  /// server answering there); throws on any other failure.
  bool try_start() {
    const std::string port = std::to_string(port_);
    const std::string log = dir_ + "/redis.log";
    std::error_code ec;
    std::filesystem::remove(log, ec);
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::execl(exe_.c_str(), "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--dir", dir_.c_str(),
              "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", log.c_str(), "--protected-mode",
              "no", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    pid_ = pid;
    // Wait until it answers as itself (bounded: 10 s), polling every 5 ms.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        if (read_file(log).find("Address already in use") != std::string::npos) return false;
        throw std::runtime_error("redis-server exited at start; see " + log);
      }
      switch (answers_as(pid_)) {
        case Answer::ours: return true;
        case Answer::other: stop(); return false;  // someone else listens there
        case Answer::none: break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop();
    throw std::runtime_error("redis-server did not start on port " + port + "; see " + log);
  }

  enum class Answer { none, ours, other };
  /// Connects to port_ and asks INFO server for the process id.
  Answer answers_as(pid_t pid) const {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port_));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return Answer::none;
    }
    const std::string_view cmd = "INFO server\r\n";
    std::string got;
    if (::send(fd, cmd.data(), cmd.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(cmd.size())) {
      char buf[4096];
      for (ssize_t n; got.size() < 65536 && (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
        got.append(buf, static_cast<std::size_t>(n));
        if (auto at = got.find("process_id:"); at != std::string::npos && got.find("\r\n", at) != std::string::npos) break;
        if (got.starts_with("-")) break;  // an error reply: e.g. LOADING, or not Redis at all
      }
    }
    ::close(fd);
    if (got.find("process_id:" + std::to_string(pid) + "\r\n") != std::string::npos) return Answer::ours;
    if (got.starts_with("-LOADING") || got.empty()) return Answer::none;
    return Answer::other;
  }

  static std::string find_in_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "");
    for (std::string d; std::getline(dirs, d, ':');) {
      const std::string f = (d.empty() ? std::string(".") : d) + "/" + name;
      if (::access(f.c_str(), X_OK) == 0) return f;
    }
    return {};
  }
  /// The lowest port the kernel hands out for bind(0) and outgoing connections.
  static int ephemeral_low() {
    std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
    int lo = 0;
    if (!(f >> lo) || lo <= 2048) lo = 32768;
    return lo;
  }
  static std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  std::string exe_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace modelux::test
