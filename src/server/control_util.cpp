// The control plane's pure parts: JSON forms of versions, audit entries and deliveries; the
// audit chain's hash; structural and text diffs; Standard Webhooks signatures.
#include <openssl/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <charconv>
#include <cctype>
#include <ctime>

#include "modelux/control.hpp"
#include "modelux/transport.hpp"

namespace modelux {

namespace {

std::int64_t to_ms(WallTime t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }

std::string iso_ms(WallTime t) {
  std::int64_t ms = to_ms(t);
  std::time_t tt = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}

std::string sha256_hex(std::string_view s) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  return hex(md, sizeof md);
}

std::string b64_encode(const unsigned char* p, std::size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  int w = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(w));
  return out;
}

std::optional<std::string> b64_decode(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return std::nullopt;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) return std::nullopt;
  std::string out(3 * s.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  std::size_t pad = s.ends_with("==") ? 2 : s.ends_with('=') ? 1 : 0;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::string escape_pointer(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

void diff_into(const Json& a, const Json& b, const std::string& path, Json& ops) {
  if (a == b) return;
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      std::string p = path + "/" + escape_pointer(it.key());
      auto jt = b.find(it.key());
      if (jt == b.end()) ops.push_back({{"op", "remove"}, {"path", p}});
      else diff_into(*it, *jt, p, ops);
    }
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key())) ops.push_back({{"op", "add"}, {"path", path + "/" + escape_pointer(it.key())}, {"value", *it}});
    return;
  }
  if (a.is_array() && b.is_array()) {
    std::size_t common = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < common; ++i) diff_into(a[i], b[i], path + "/" + std::to_string(i), ops);
    // Removals from the end backwards, so every index is valid when its op applies.
    for (std::size_t i = a.size(); i > common; --i) ops.push_back({{"op", "remove"}, {"path", path + "/" + std::to_string(i - 1)}});
    for (std::size_t i = common; i < b.size(); ++i) ops.push_back({{"op", "add"}, {"path", path + "/" + std::to_string(i)}, {"value", b[i]}});
    return;
  }
  ops.push_back({{"op", "replace"}, {"path", path}, {"value", b}});
}

std::vector<std::string> lines_of(const Json& j) {
  std::vector<std::string> out;
  if (j.is_null()) return out;
  std::string s = j.dump(2, ' ', false, Json::error_handler_t::replace);
  std::size_t start = 0;
  while (start <= s.size()) {
    auto nl = s.find('\n', start);
    if (nl == std::string::npos) {
      out.push_back(s.substr(start));
      break;
    }
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

}  // namespace

Json ObjectVersion::to_json(bool with_document) const {
  Json j{{"kind", kind},     {"name", name},         {"version", version}, {"author", author}, {"created", iso_ms(at)},
         {"message", message}, {"action", action}, {"hash", hash},       {"deleted", deleted()}};
  if (with_document) j["document"] = document;
  return j;
}

Json AuditEntry::to_json() const {
  return Json{{"seq", seq},
              {"at", iso_ms(at)},
              {"actor", actor},
              {"from", from},
              {"action", action},
              {"object", object},
              {"before_hash", before_hash},
              {"after_hash", after_hash},
              {"detail", detail},
              {"prev_hash", prev_hash},
              {"hash", hash}};
}

Json AuditVerification::to_json() const {
  Json j{{"ok", ok}, {"checked", checked}};
  if (!ok) {
    j["first_bad_seq"] = first_bad_seq;
    j["problem"] = problem;
  }
  return j;
}

Json WebhookDelivery::to_json(bool with_payload) const {
  Json j{{"id", id},
         {"webhook_id", webhook_id},
         {"event", event},
         {"status", status},
         {"attempts", attempts},
         {"created", iso_ms(created)},
         {"next_attempt", status == "pending" ? Json(iso_ms(next_attempt)) : Json(nullptr)},
         {"delivered", delivered ? Json(iso_ms(*delivered)) : Json(nullptr)},
         {"last_status", last_status},
         {"last_error", last_error}};
  if (with_payload) {
    auto p = parse_json(payload);
    j["payload"] = p ? *p : Json(payload);
  }
  return j;
}

std::string audit_entry_hash(const AuditEntry& e) {
  // A JSON array: unambiguous field boundaries whatever the fields hold.
  Json fields = Json::array({e.seq, to_ms(e.at), e.actor, e.from, e.action, e.object, e.before_hash, e.after_hash, e.detail, e.prev_hash});
  return sha256_hex(fields.dump(-1, ' ', false, Json::error_handler_t::replace));
}

std::string document_hash(const Json& doc) {
  if (doc.is_null()) return {};
  return sha256_hex(doc.dump(-1, ' ', false, Json::error_handler_t::replace));  // keys are sorted: canonical
}

Json json_diff(const Json& a, const Json& b) {
  Json ops = Json::array();
  diff_into(a, b, "", ops);
  return ops;
}

std::string text_diff(const Json& a, const Json& b, std::string_view a_name, std::string_view b_name) {
  // Longest common subsequence over lines (O(n*m), configs are small; above 4M cells the
  // whole document is shown as replaced), then hunks with 3 lines of context.
  std::vector<std::string> x = lines_of(a), y = lines_of(b);
  std::string out = "--- " + std::string(a_name) + "\n+++ " + std::string(b_name) + "\n";
  if (a == b) return out;
  const std::size_t n = x.size(), m = y.size();
  struct Line {
    char tag;  // ' ', '-', '+'
    const std::string* text;
    std::size_t ai, bi;  // 1-based line numbers in a and b (position before this line)
  };
  std::vector<Line> seq;
  if (n * m <= 4'000'000) {
    std::vector<std::uint32_t> L((n + 1) * (m + 1), 0);
    for (std::size_t i = n; i-- > 0;)
      for (std::size_t j = m; j-- > 0;)
        L[i * (m + 1) + j] = x[i] == y[j] ? L[(i + 1) * (m + 1) + j + 1] + 1 : std::max(L[(i + 1) * (m + 1) + j], L[i * (m + 1) + j + 1]);
    std::size_t i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && x[i] == y[j]) {
        seq.push_back({' ', &x[i], i, j});
        ++i, ++j;
      } else if (i < n && (j == m || L[(i + 1) * (m + 1) + j] >= L[i * (m + 1) + j + 1])) {
        seq.push_back({'-', &x[i], i, j});  // removals before additions, as diff -u shows them
        ++i;
      } else {
        seq.push_back({'+', &y[j], i, j});
        ++j;
      }
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) seq.push_back({'-', &x[i], i, 0});
    for (std::size_t j = 0; j < m; ++j) seq.push_back({'+', &y[j], n, j});
  }
  constexpr std::size_t kContext = 3;
  std::size_t k = 0;
  while (k < seq.size()) {
    if (seq[k].tag == ' ') {
      ++k;
      continue;
    }
    // A hunk: from kContext before this change to kContext after the last change that is at
    // most 2*kContext unchanged lines away.
    std::size_t start = k >= kContext ? k - kContext : 0;
    while (start < k && seq[start].tag != ' ') ++start;
    std::size_t end = k, quiet = 0;
    for (std::size_t t = k; t < seq.size(); ++t) {
      if (seq[t].tag == ' ') {
        if (++quiet > 2 * kContext) break;
      } else {
        quiet = 0;
        end = t;
      }
    }
    std::size_t stop = std::min(seq.size(), end + 1 + kContext);
    std::size_t a_count = 0, b_count = 0;
    for (std::size_t t = start; t < stop; ++t) {
      if (seq[t].tag != '+') ++a_count;
      if (seq[t].tag != '-') ++b_count;
    }
    std::size_t a_start = seq[start].ai + (a_count ? 1 : 0), b_start = seq[start].bi + (b_count ? 1 : 0);
    out += "@@ -" + std::to_string(a_start) + "," + std::to_string(a_count) + " +" + std::to_string(b_start) + "," +
           std::to_string(b_count) + " @@\n";
    for (std::size_t t = start; t < stop; ++t) {
      out += seq[t].tag;
      out += *seq[t].text;
      out += '\n';
    }
    k = stop;
  }
  return out;
}

Result<Json> normalize_webhook_spec(const Json& spec) {
  if (!spec.is_object()) return fail(ErrorKind::bad_request, "a webhook must be a JSON object", "$");
  static constexpr std::string_view kFields[] = {"url", "events", "description", "enabled"};
  for (auto it = spec.begin(); it != spec.end(); ++it)
    if (std::find(std::begin(kFields), std::end(kFields), it.key()) == std::end(kFields))
      return fail(ErrorKind::bad_request, "unknown field '" + it.key() + "'", "$." + it.key());
  auto url = spec.find("url");
  if (url == spec.end() || !url->is_string()) return fail(ErrorKind::bad_request, "'url' must be an http(s) URL", "$.url");
  auto parsed = parse_url(url->get<std::string>());
  if (!parsed) return fail(ErrorKind::bad_request, "'url' must be an http(s) URL: " + parsed.error().message, "$.url");
  Json out{{"url", *url}, {"events", Json::array()}, {"description", ""}, {"enabled", true}};
  if (auto ev = spec.find("events"); ev != spec.end()) {
    if (!ev->is_array()) return fail(ErrorKind::bad_request, "'events' must be an array of event names", "$.events");
    for (std::size_t i = 0; i < ev->size(); ++i) {
      const Json& e = (*ev)[i];
      if (!e.is_string() || !(known_webhook_event(e.get<std::string>()) || e.get<std::string>() == "*"))
        return fail(ErrorKind::bad_request, "unknown event (see GET /openapi.json for the list)", "$.events[" + std::to_string(i) + "]");
      out["events"].push_back(e);
    }
  }
  if (out["events"].empty()) out["events"].push_back("*");
  if (auto d = spec.find("description"); d != spec.end()) {
    if (!d->is_string() || d->get<std::string>().size() > 1024)
      return fail(ErrorKind::bad_request, "'description' must be a string of at most 1024 bytes", "$.description");
    out["description"] = *d;
  }
  if (auto en = spec.find("enabled"); en != spec.end()) {
    if (!en->is_boolean()) return fail(ErrorKind::bad_request, "'enabled' must be true or false", "$.enabled");
    out["enabled"] = *en;
  }
  return out;
}

bool known_webhook_event(std::string_view e) noexcept {
  return std::find(std::begin(kWebhookEvents), std::end(kWebhookEvents), e) != std::end(kWebhookEvents);
}

std::string new_webhook_secret() {
  unsigned char key[32];
  if (RAND_bytes(key, sizeof key) != 1) std::abort();  // no CSPRNG: nothing safe to do
  return "whsec_" + b64_encode(key, sizeof key);
}

Result<std::string> sign_webhook(std::string_view secret, std::string_view id, std::int64_t timestamp, std::string_view body) {
  if (secret.starts_with("whsec_")) secret.remove_prefix(6);
  auto key = b64_decode(secret);
  if (!key || key->empty()) return fail(ErrorKind::bad_request, "a webhook secret must be 'whsec_' followed by base64");
  std::string msg;
  msg.reserve(id.size() + body.size() + 24);
  msg.append(id).append(".").append(std::to_string(timestamp)).append(".").append(body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key->data(), static_cast<int>(key->size()), reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), mac, &len);
  return "v1," + b64_encode(mac, len);
}

Result<void> verify_webhook(std::string_view secret, std::string_view id, std::string_view timestamp, std::string_view body,
                            std::string_view signature_header, std::int64_t now_s, std::int64_t tolerance_s) {
  std::int64_t ts = 0;
  auto r = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), ts);
  if (timestamp.empty() || r.ec != std::errc{} || r.ptr != timestamp.data() + timestamp.size())
    return fail(ErrorKind::auth, "webhook-timestamp is not a number of seconds");
  if (ts < now_s - tolerance_s) return fail(ErrorKind::auth, "webhook-timestamp is too old");
  if (ts > now_s + tolerance_s) return fail(ErrorKind::auth, "webhook-timestamp is too new");
  auto expected = sign_webhook(secret, id, ts, body);
  if (!expected) return fail(expected.error());
  std::string_view want = std::string_view(*expected).substr(3);
  while (!signature_header.empty()) {
    auto sp = signature_header.find(' ');
    std::string_view one = signature_header.substr(0, sp);
    signature_header = sp == std::string_view::npos ? std::string_view{} : signature_header.substr(sp + 1);
    if (!one.starts_with("v1,")) continue;
    one.remove_prefix(3);
    if (one.size() == want.size() && CRYPTO_memcmp(one.data(), want.data(), want.size()) == 0) return {};
  }
  return fail(ErrorKind::auth, "no matching webhook signature");
}

}  // namespace modelux
