// Small helpers shared by the provider codecs: data URIs, lenient JSON reads, URL pieces,
// error construction.
#include <algorithm>
#include <cctype>

#include "modelux/scrub.hpp"
#include "wire/codecs.hpp"

#include <cmath>

namespace modelux::wire {

std::optional<DataUri> parse_data_uri(std::string_view url) {
  if (!url.starts_with("data:")) return std::nullopt;
  auto comma = url.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  std::string_view meta = url.substr(5, comma - 5);
  constexpr std::string_view kB64 = ";base64";
  if (!meta.ends_with(kB64)) return std::nullopt;
  DataUri d;
  d.mime = std::string(meta.substr(0, meta.size() - kB64.size()));
  d.data = std::string(url.substr(comma + 1));
  return d;
}

std::string make_data_uri(std::string_view mime, std::string_view b64) {
  std::string s = "data:";
  s += mime;
  s += ";base64,";
  s += b64;
  return s;
}

std::unexpected<Error> unsupported_field(std::string_view family, std::string_view field, std::string_view why) {
  Error e;
  e.kind = ErrorKind::unsupported;
  e.message = std::string(family) + " cannot honour request field " + std::string(field);
  if (!why.empty()) {
    e.message += ": ";
    e.message += why;
  }
  e.path = std::string(field);
  e.provider = std::string(family);
  return std::unexpected<Error>(std::move(e));
}

std::unexpected<Error> malformed(std::string_view family, std::string message) {
  Error e;
  e.kind = ErrorKind::malformed_response;
  e.message = std::string(family) + ": " + message;
  e.provider = std::string(family);
  return std::unexpected<Error>(std::move(e));
}

std::string join_url(std::string_view base, std::string_view path) {
  std::string s(base);
  while (!s.empty() && s.back() == '/') s.pop_back();
  if (!path.empty() && path.front() != '/') s += '/';
  s += path;
  return s;
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

Result<Json> arguments_object(const std::string& arguments, const std::string& path) {
  if (arguments.empty()) return Json::object();
  auto j = parse_json(arguments);
  if (!j) return fail(ErrorKind::bad_request, "tool call arguments are not valid JSON: " + j.error().message, path);
  if (!j->is_object()) return fail(ErrorKind::bad_request, "tool call arguments must be a JSON object", path);
  return std::move(*j);
}

std::string jstr(const Json& j, std::string_view key, std::string_view fallback) {
  if (!j.is_object()) return std::string(fallback);
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::string(fallback);
  return it->get<std::string>();
}

bool jbool(const Json& j, std::string_view key, bool fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end() || !it->is_boolean()) return fallback;
  return it->get<bool>();
}

std::optional<std::int64_t> json_int64(const Json& v) {
  if (!v.is_number()) return std::nullopt;
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isnan(d)) return std::nullopt;
    // Converting a double outside int64's range is undefined behaviour: clamp first.
    if (d >= 9.2233720368547758e18) return INT64_MAX;
    if (d <= -9.2233720368547758e18) return INT64_MIN;
    return static_cast<std::int64_t>(d);
  }
  if (v.is_number_unsigned()) {
    auto u = v.get<std::uint64_t>();
    return u > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(u);
  }
  return v.get<std::int64_t>();
}

std::int64_t jint(const Json& j, std::string_view key, std::int64_t fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  return json_int64(*it).value_or(fallback);
}

const Json* jobj(const Json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? &*it : nullptr;
}

const Json* jarr(const Json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it != j.end() && it->is_array() ? &*it : nullptr;
}

std::vector<std::string> split_text(std::string_view text, int n) {
  std::vector<std::string> out;
  if (n < 1) n = 1;
  std::size_t per = std::max<std::size_t>(1, (text.size() + n - 1) / static_cast<std::size_t>(n));
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t end = std::min(text.size(), i + per);
    // never cut inside a UTF-8 sequence
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    out.emplace_back(text.substr(i, end - i));
    i = end;
  }
  if (out.empty()) out.emplace_back();
  return out;
}

bool looks_like_context_length(std::string_view code, std::string_view message) {
  auto has = [](std::string_view hay, std::string_view needle) {
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
           }) != hay.end();
  };
  return code == "context_length_exceeded" || has(message, "context length") || has(message, "context window") ||
         has(message, "prompt is too long") || has(message, "too many tokens") ||
         has(message, "input is too long") || has(message, "maximum context");
}

Error provider_error(std::string_view family, int status, const Headers& headers, std::string message,
                     std::string provider_type) {
  Error e = classify_http_error(status, headers, message);
  e.message = std::move(message);
  scrub(e.message);  // upstream 401s echo the key they were sent
  e.status = status;
  e.provider = std::string(family);
  e.code = std::move(provider_type);
  if (status == 529) e.kind = ErrorKind::overloaded;
  if (status == 400 && looks_like_context_length(e.code, e.message)) e.kind = ErrorKind::context_length;
  return e;
}

}  // namespace modelux::wire
