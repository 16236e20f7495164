// The PostgreSQL entry points for a build without libpq (-DMODELUX_WITH_POSTGRES=OFF; the
// Python wheel uses it: the in-process package never runs a fleet, and libpq with its
// dependencies would be most of the wheel). Replaces control_store_pg.cpp, keys_pg.cpp and
// pg_fleet.cpp: SQLite works as always; a postgres:// URL is a clear invalid_config error.
// Threading: pure functions.
#include <string>
#include <string_view>

#include "modelux/control.hpp"
#include "server/key_backend.hpp"

namespace modelux {

namespace {

bool is_postgres(std::string_view s) { return s.starts_with("postgres://") || s.starts_with("postgresql://"); }

Error no_postgres() {
  return fail(ErrorKind::invalid_config,
              "this build of modelux has no PostgreSQL support (built with MODELUX_WITH_POSTGRES=OFF); "
              "use a SQLite path, or the modelux proxy")
      .error();
}

}  // namespace

Result<ControlStore> open_postgres_control_store(const std::string&, Millis) { return std::unexpected(no_postgres()); }

Result<ControlStore> open_control_store(const std::string& path_or_url, Millis reconcile) {
  if (is_postgres(path_or_url)) return open_postgres_control_store(path_or_url, reconcile);
  return open_sqlite_control_store(path_or_url);
}

Result<std::unique_ptr<KeyBackend>> open_postgres_key_backend(const std::string&) { return std::unexpected(no_postgres()); }

}  // namespace modelux
