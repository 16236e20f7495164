// See ca_bundle.hpp.
#include "transport/ca_bundle.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <openssl/x509.h>

namespace modelux {

std::string fallback_ca_bundle(const CaDefaults& d, std::span<const std::string_view> candidates) {
  if (d.env_set) return {};
  std::error_code ec;
  if (!d.default_file.empty() && std::filesystem::is_regular_file(d.default_file, ec)) return {};
  if (!d.default_dir.empty() && std::filesystem::is_directory(d.default_dir, ec)) return {};
  for (std::string_view c : candidates) {
    std::string path(c);
    if (std::filesystem::is_regular_file(path, ec) && std::ifstream(path).good()) return path;
  }
  return {};
}

std::string process_fallback_ca_bundle() {
  CaDefaults d;
  // The variable names OpenSSL itself reads (X509_get_default_cert_file_env() and _dir_env()).
  d.env_set = std::getenv(X509_get_default_cert_file_env()) != nullptr ||
              std::getenv(X509_get_default_cert_dir_env()) != nullptr;
  d.default_file = X509_get_default_cert_file();
  d.default_dir = X509_get_default_cert_dir();
  return fallback_ca_bundle(d);
}

}  // namespace modelux
