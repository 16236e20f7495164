// Shared fixtures of the budget tests: a priced model and a temporary SQLite file.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

#include "modelux/catalog.hpp"
#include "modelux/policy.hpp"

namespace modelux::testing {

/// A model priced at $0.001 per input and per output token.
inline ModelInfo paid_model() {
  ModelInfo m;
  m.id = "paid";
  m.input_per_m = 1000;  // $0.001 per token
  m.output_per_m = 1000;
  m.priced = true;
  return m;
}

/// A caller of project "acme".
inline CallContext acme_context() {
  CallContext c;
  c.project = "acme";
  return c;
}

/// One daily USD budget named "fleet" on project "acme".
inline Json fleet_budget(double limit) {
  return Json::array({Json{{"name", "fleet"}, {"scope", {{"project", "acme"}}}, {"window", "daily"}, {"limit_usd", limit}}});
}

/// A fresh directory under the system's temp dir ($TMPDIR or /tmp) with a `budgets.db` path in
/// it, removed afterwards.
struct TempDb {
  std::string path;
  TempDb() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "modelux-budget-XXXXXX").string();
    const char* dir = mkdtemp(tmpl.data());
    if (!dir) throw std::runtime_error("mkdtemp failed in " + std::filesystem::temp_directory_path().string());
    path = std::string(dir) + "/budgets.db";
  }
  ~TempDb() {
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(path).parent_path(), ec);
  }
  TempDb(const TempDb&) = delete;
  TempDb& operator=(const TempDb&) = delete;
};

}  // namespace modelux::testing
