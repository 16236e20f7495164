// Internal: finds the system's CA bundle when the OpenSSL modelux runs with was built for
// another distribution. The manylinux wheel bundles Debian's libcrypto, whose compiled-in
// defaults (/usr/lib/ssl/cert.pem, /usr/lib/ssl/certs) do not exist on Fedora, RHEL, openSUSE
// or Alpine; there every HTTPS request would fail verification with no CA loaded.
//
// Threading: pure functions of their arguments and the file system.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace modelux {

/// Where Linux distributions keep their CA bundle (the list Go's crypto/x509 probes).
inline constexpr std::string_view kSystemCaBundles[] = {
    "/etc/ssl/certs/ca-certificates.crt",                 // Debian, Ubuntu, Gentoo, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",                   // Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem",                             // openSUSE
    "/etc/pki/tls/cacert.pem",                            // OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  // CentOS, RHEL 7
    "/etc/ssl/cert.pem",                                  // Alpine
};

struct CaDefaults {
  bool env_set = false;        ///< SSL_CERT_FILE or SSL_CERT_DIR is set: OpenSSL uses that, nothing to add
  std::string default_file;    ///< OpenSSL's compiled-in default CA file (X509_get_default_cert_file)
  std::string default_dir;     ///< OpenSSL's compiled-in default CA directory (X509_get_default_cert_dir)
};

/// The CA bundle to load besides OpenSSL's defaults: "" when those find CAs (the environment
/// names them, or the default file or directory exists), else the first of `candidates` that
/// is a readable file ("" when none is).
std::string fallback_ca_bundle(const CaDefaults& d, std::span<const std::string_view> candidates = kSystemCaBundles);

/// fallback_ca_bundle() for this process: its environment and the linked OpenSSL's defaults.
std::string process_fallback_ca_bundle();

}  // namespace modelux
