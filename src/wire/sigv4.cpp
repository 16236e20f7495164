// AWS Signature Version 4 (header form) for Bedrock. Tested against AWS's published vectors.
#include <algorithm>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "wire/codecs.hpp"

namespace modelux::wire {

std::string to_hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return to_hex(std::string_view(reinterpret_cast<const char*>(md), sizeof md));
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), md, &len);
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string sigv4_signing_key(std::string_view secret, std::string_view date, std::string_view region,
                              std::string_view service) {
  std::string k = hmac_sha256("AWS4" + std::string(secret), date);
  k = hmac_sha256(k, region);
  k = hmac_sha256(k, service);
  return hmac_sha256(k, "aws4_request");
}

SigV4Signature sigv4_sign(const SigV4Request& req, const SigV4Credentials& cred, std::string_view amz_date) {
  SigV4Signature s;
  // canonical query: encode names and values, sort by name (then value)
  std::vector<std::pair<std::string, std::string>> q;
  std::string_view rest = req.query;
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view kv = rest.substr(0, amp);
    if (!kv.empty()) {
      auto eq = kv.find('=');
      std::string k = percent_encode(percent_decode(kv.substr(0, eq)));
      std::string v = eq == std::string_view::npos ? "" : percent_encode(percent_decode(kv.substr(eq + 1)));
      q.emplace_back(std::move(k), std::move(v));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  std::sort(q.begin(), q.end());
  std::string query;
  for (const auto& [k, v] : q) {
    if (!query.empty()) query += '&';
    query += k + "=" + v;
  }
  // canonical headers: lowercase names, trimmed values (inner runs of spaces collapsed), sorted
  std::vector<std::pair<std::string, std::string>> h;
  for (const auto& [k, v] : req.headers) {
    std::string name;
    for (char c : k) name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value;
    bool space = false;
    for (char c : v) {
      if (c == ' ' || c == '\t') {
        space = !value.empty();
        continue;
      }
      if (space) value += ' ';
      space = false;
      value += c;
    }
    h.emplace_back(std::move(name), std::move(value));
  }
  std::sort(h.begin(), h.end());
  std::string canon_headers;
  for (const auto& [k, v] : h) {
    canon_headers += k + ":" + v + "\n";
    if (!s.signed_headers.empty()) s.signed_headers += ';';
    s.signed_headers += k;
  }
  s.canonical_request = req.method + "\n" + req.canonical_uri + "\n" + query + "\n" + canon_headers + "\n" +
                        s.signed_headers + "\n" + req.payload_sha256;
  std::string date(amz_date.substr(0, 8));
  std::string scope = date + "/" + cred.region + "/" + cred.service + "/aws4_request";
  s.string_to_sign = "AWS4-HMAC-SHA256\n" + std::string(amz_date) + "\n" + scope + "\n" + sha256_hex(s.canonical_request);
  s.signature = to_hex(hmac_sha256(sigv4_signing_key(cred.secret_access_key, date, cred.region, cred.service), s.string_to_sign));
  s.authorization = "AWS4-HMAC-SHA256 Credential=" + cred.access_key_id + "/" + scope +
                    ", SignedHeaders=" + s.signed_headers + ", Signature=" + s.signature;
  return s;
}

}  // namespace modelux::wire
