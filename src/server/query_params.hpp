// Query-string parsing shared by the admin API's list and analytics handlers: split on '&',
// percent-decode, refuse what does not decode. Pure functions, no state.
#pragma once

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace modelux::proxy {

/// %XX and '+' decoded; nullopt for a bad escape.
inline std::optional<std::string> url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int v = 0;
      auto r = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (r.ec != std::errc{} || r.ptr != s.data() + i + 3) return std::nullopt;
      out += static_cast<char>(v);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

/// The query's key=value pairs in order, decoded; on a bad escape, nullopt and `bad_key` names it.
inline std::optional<std::vector<std::pair<std::string, std::string>>> split_query(std::string_view query, std::string& bad_key) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (kv.empty()) continue;
    auto eq = kv.find('=');
    auto key = url_decode(kv.substr(0, eq));
    auto value = url_decode(eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1));
    if (!key || !value) {
      bad_key = std::string(kv.substr(0, eq));
      return std::nullopt;
    }
    out.emplace_back(std::move(*key), std::move(*value));
  }
  return out;
}

}  // namespace modelux::proxy
