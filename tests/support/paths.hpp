// Test support: where the repository's data files are. ctest passes the source tree in the
// MODELUX_SOURCE_DIR environment variable (tests/CMakeLists.txt sets it on every entry), so no
// path of the machine that built the tests is compiled into them.
#pragma once

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace modelux::test {

/// The repository root: $MODELUX_SOURCE_DIR. Throws (a test failure naming the fix) when unset.
inline std::string source_dir() {
  const char* d = std::getenv("MODELUX_SOURCE_DIR");
  if (!d || !*d)
    throw std::runtime_error("MODELUX_SOURCE_DIR is not set: run the test through ctest, or set it to the repository root");
  return d;
}

}  // namespace modelux::test
