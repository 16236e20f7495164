# Writes a .cpp holding data files as raw string literals (run at build time).
file(READ ${CATALOG} catalog)
file(READ ${DEFAULTS} defaults)
file(WRITE ${OUT} "// generated from data/*.json by cmake/embed.cmake\n#include <string_view>\nnamespace modelux::embedded {\nextern const std::string_view kCatalogJson = R\"mlxjson(${catalog})mlxjson\";\nextern const std::string_view kDefaultsJson = R\"mlxjson(${defaults})mlxjson\";\n}\n")
