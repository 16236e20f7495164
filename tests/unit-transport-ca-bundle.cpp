// The CA bundle fallback (src/transport/ca_bundle.hpp): an OpenSSL built for another
// distribution (the manylinux wheel bundles Debian's) gets the system's own CA bundle when its
// compiled-in defaults do not exist, and nothing changes when they do or when the environment
// names the CAs.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include "transport/ca_bundle.hpp"

namespace fs = std::filesystem;
using modelux::CaDefaults;
using modelux::fallback_ca_bundle;

namespace {

struct TempTree {
  fs::path root;
  TempTree() {
    std::string tmpl = (fs::temp_directory_path() / "modelux-ca-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    root = tmpl;
  }
  ~TempTree() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  std::string file(const std::string& name) const {
    fs::path p = root / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "-----BEGIN CERTIFICATE-----\n";
    return p.string();
  }
  std::string dir(const std::string& name) const {
    fs::create_directories(root / name);
    return (root / name).string();
  }
  std::string missing(const std::string& name) const { return (root / name).string(); }
};

std::string pick(const CaDefaults& d, const std::vector<std::string>& candidates) {
  std::vector<std::string_view> views(candidates.begin(), candidates.end());
  return fallback_ca_bundle(d, views);
}

}  // namespace

TEST_CASE("CA bundle fallback: the first existing system bundle when OpenSSL's defaults are missing") {
  TempTree t;
  CaDefaults d{false, t.missing("usr/lib/ssl/cert.pem"), t.missing("usr/lib/ssl/certs")};
  std::string fedora = t.file("etc/pki/tls/certs/ca-bundle.crt");
  std::string alpine = t.file("etc/ssl/cert.pem");
  CHECK(pick(d, {t.missing("etc/ssl/certs/ca-certificates.crt"), fedora, alpine}) == fedora);
  CHECK(pick(d, {t.missing("etc/ssl/certs/ca-certificates.crt"), alpine, fedora}) == alpine);
}

TEST_CASE("CA bundle fallback: nothing when OpenSSL's default file or directory exists") {
  TempTree t;
  std::string fedora = t.file("etc/pki/tls/certs/ca-bundle.crt");
  CHECK(pick(CaDefaults{false, t.missing("cert.pem"), t.dir("usr/lib/ssl/certs")}, {fedora}).empty());
  CHECK(pick(CaDefaults{false, t.file("usr/lib/ssl/cert.pem"), t.missing("certs")}, {fedora}).empty());
}

TEST_CASE("CA bundle fallback: nothing when SSL_CERT_FILE or SSL_CERT_DIR names the CAs") {
  TempTree t;
  std::string fedora = t.file("etc/pki/tls/certs/ca-bundle.crt");
  CHECK(pick(CaDefaults{true, t.missing("cert.pem"), t.missing("certs")}, {fedora}).empty());
}

TEST_CASE("CA bundle fallback: nothing when no candidate is a file, and a directory is not a bundle") {
  TempTree t;
  CaDefaults d{false, t.missing("cert.pem"), t.missing("certs")};
  CHECK(pick(d, {t.missing("a.crt"), t.dir("etc/ssl/cert.pem")}).empty());
  CHECK(pick(d, {}).empty());
}
