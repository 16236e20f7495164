// Test support: a real PostgreSQL server (Debian `postgresql`) in a temp dir, started for a
// test and stopped after. It listens only on a unix socket inside that dir (no TCP port, so
// parallel tests never collide). PostgreSQL refuses to run as root: as root (CI) the server is
// run as the `postgres` OS user through runuser, in a dir that user owns. Binaries come from
// /usr/lib/postgresql/<newest>/bin. When it cannot start, the constructor throws with the
// reason: the test fails, it is never skipped silently.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace modelux::test {

class PostgresServer {
 public:
  PostgresServer() {
    bin_ = find_bin();
    if (bin_.empty()) throw std::runtime_error("PostgreSQL not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)");
    std::string tmpl = (std::filesystem::temp_directory_path() / "modelux-pg-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (::geteuid() == 0) {
      // root: the server runs as `postgres`, which must own the dir.
      if (std::system(("chown postgres " + dir_).c_str()) != 0)
        throw std::runtime_error("running as root, but cannot hand " + dir_ + " to the 'postgres' user (does it exist? apt-get install postgresql)");
      as_ = "runuser -u postgres -- ";
    }
    run_or_throw(as_ + bin_ + "/initdb -D " + dir_ + "/data -A trust -U postgres --no-sync -E UTF8 > " + dir_ + "/initdb.log 2>&1",
                 "initdb failed; see " + dir_ + "/initdb.log");
    start();
  }
  ~PostgresServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  /// A libpq URL for database `db` over the server's unix socket.
  std::string url(const std::string& db = "postgres") const { return "postgresql:///" + db + "?host=" + dir_ + "&user=postgres"; }
  const std::string& dir() const { return dir_; }

  /// Runs SQL through psql (as the superuser); returns its trimmed output. Throws on failure.
  std::string psql(const std::string& sql, const std::string& db = "postgres") const {
    const std::string f = dir_ + "/q.sql";
    std::ofstream(f) << sql;
    const std::string out = dir_ + "/q.out";
    run_or_throw(bin_ + "/psql -X -q -t -A -v ON_ERROR_STOP=1 -h " + dir_ + " -U postgres -d " + db + " -f " + f + " > " + out + " 2>&1",
                 "psql failed: " + slurp(out));
    std::string s = slurp(out);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  /// Starts (again) and waits until it accepts connections.
  void start() {
    if (running_) return;
    run_or_throw(as_ + bin_ + "/pg_ctl -D " + dir_ + "/data -l " + dir_ + "/server.log -w -t 30 -o \"-k " + dir_ +
                     " -c listen_addresses='' -F -c max_connections=60\" start > /dev/null 2>&1",
                 "pg_ctl start failed; see " + dir_ + "/server.log");
    running_ = true;
  }
  /// Stops it at once (like a crash).
  void stop() {
    if (!running_) return;
    (void)std::system((as_ + bin_ + "/pg_ctl -D " + dir_ + "/data -m immediate -w stop > /dev/null 2>&1").c_str());
    running_ = false;
  }

 private:
  static std::string find_bin() {
    std::string best;
    int best_major = -1;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
      std::string b = e.path().string() + "/bin";
      int major = std::atoi(e.path().filename().c_str());
      if (std::filesystem::exists(b + "/pg_ctl") && major > best_major) {
        best = b;
        best_major = major;
      }
    }
    return best;
  }
  static std::string slurp(const std::string& f) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void run_or_throw(const std::string& cmd, const std::string& why) const {
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error(why);
  }

  std::string bin_, dir_, as_;
  bool running_ = false;
};

}  // namespace modelux::test
