// The console's static assets (web/dist, embedded at build time by cmake/embed_console.cmake)
// at / and /assets/*, and GET /v1/whoami, which tells the console the role of the key it logged
// in with. The assets hold no data: every number the console shows comes from the JSON API
// with the user's key, so these routes are open; a strict Content-Security-Policy keeps the
// page to its own scripts and to this origin.
//
// Threading: the table is immutable static data; handlers only copy bytes.
#include <algorithm>

#include "server/routes.hpp"

namespace modelux::embedded {
struct ConsoleFile {
  std::string_view path;
  std::string_view bytes;
};
extern const ConsoleFile kConsoleFiles[];
extern const std::size_t kConsoleFileCount;
}  // namespace modelux::embedded

namespace modelux::proxy {

namespace {

// 'self' only: the build has no inline script or style (vite.config.js), the API is same-origin,
// and nothing may frame the console (clickjacking a rollback button).
constexpr std::string_view kCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

std::string_view content_type_of(std::string_view path) {
  auto ends = [&](std::string_view ext) { return path.ends_with(ext); };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js") || ends(".mjs")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  if (ends(".ico")) return "image/x-icon";
  if (ends(".json")) return "application/json";
  if (ends(".woff2")) return "font/woff2";
  return "application/octet-stream";
}

const embedded::ConsoleFile* find_file(std::string_view path) {
  for (std::size_t i = 0; i < embedded::kConsoleFileCount; ++i)
    if (embedded::kConsoleFiles[i].path == path) return &embedded::kConsoleFiles[i];
  return nullptr;
}

Reply file_reply(const embedded::ConsoleFile& f, bool immutable) {
  Reply r;
  r.verbatim = true;  // the scrubber's key shapes ("Bearer …") occur in the scripts themselves
  r.body = std::string(f.bytes);
  r.content_type = std::string(content_type_of(f.path));
  // Assets carry a content hash in their names (a new build = new names): cache for good.
  // The page itself must be revalidated so a new binary's page (and its new asset names) shows.
  r.headers.emplace_back("cache-control", immutable ? "public, max-age=31536000, immutable" : "no-cache");
  r.headers.emplace_back("content-security-policy", std::string(kCsp));
  r.headers.emplace_back("x-content-type-options", "nosniff");
  r.headers.emplace_back("x-frame-options", "DENY");
  r.headers.emplace_back("referrer-policy", "no-referrer");
  return r;
}

}  // namespace

net::awaitable<std::optional<Reply>> console_index(RouteCtx&) {
  const auto* f = find_file("/index.html");
  if (!f)
    co_return error_reply(404, ErrorKind::not_found,
                          "the console is not in this build (web/dist was empty when modelux was built; see docs/console.md)",
                          "console_not_built");
  co_return file_reply(*f, false);
}

net::awaitable<std::optional<Reply>> console_asset(RouteCtx& c) {
  const std::string path = "/assets/" + c.params[0];
  const auto* f = find_file(path);
  if (!f) co_return error_reply(404, ErrorKind::not_found, "no console asset '" + c.params[0] + "'", "not_found");
  co_return file_reply(*f, true);
}

net::awaitable<std::optional<Reply>> whoami(RouteCtx& c) {
  const auto& k = c.caller.key;
  co_return json_reply(Json{{"role", std::string(to_string(c.caller.role))},
                            {"name", k ? k->id : std::string()},
                            {"project", c.caller.project},
                            {"open_access", !k}});
}

}  // namespace modelux::proxy
