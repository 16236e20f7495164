# Writes a .cpp holding every file of web/dist (the console's built static assets) as byte
# arrays with their paths (run at build time), so the proxy serves the console with no files
# around. An absent or empty web/dist gives an empty table (the proxy then answers / with a
# 404 saying the console was not built).
file(GLOB_RECURSE files RELATIVE ${DIST} ${DIST}/*)
list(SORT files)
set(arrays "")
set(table "")
set(i 0)
foreach(f IN LISTS files)
  file(READ ${DIST}/${f} hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR n "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND arrays "alignas(8) const unsigned char f${i}[] = {${bytes}0};\n")
  string(APPEND table "  {\"/${f}\", std::string_view(reinterpret_cast<const char*>(f${i}), ${n})},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE ${OUT}.tmp "// generated from web/dist by cmake/embed_console.cmake\n#include <cstddef>\n#include <string_view>\nnamespace modelux::embedded {\nstruct ConsoleFile { std::string_view path; std::string_view bytes; };\nnamespace {\n${arrays}}  // namespace\nextern const ConsoleFile kConsoleFiles[];\nextern const std::size_t kConsoleFileCount;\nconst ConsoleFile kConsoleFiles[] = {\n${table}  {\"\", std::string_view()}};\nconst std::size_t kConsoleFileCount = ${i};\n}\n")
# Only touch the output when it changed (no rebuild of the server library otherwise).
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
