# Writes a .cpp holding docs/openapi.json as a raw string literal (run at build time), so the
# proxy serves the very document the repository holds at GET /openapi.json.
file(READ ${OPENAPI} openapi)
file(WRITE ${OUT} "// generated from docs/openapi.json by cmake/embed_openapi.cmake\n#include <string_view>\nnamespace modelux::embedded {\nextern const std::string_view kOpenApiJson;\nconst std::string_view kOpenApiJson = R\"mlxjson(${openapi})mlxjson\";\n}\n")
