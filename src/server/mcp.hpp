// The MCP endpoint's pure parts (mcp.cpp), for tests: the OpenAPI → MCP tools generator and
// the argument check against a tool's input schema.
//
// Threading: pure functions of their arguments.
#pragma once

#include <string>
#include <vector>

#include "modelux/wire.hpp"

namespace modelux::proxy::mcp {

/// The MCP Tool objects (name, title, description, inputSchema, annotations) of `doc`'s admin
/// operations: every operation under /v1/ with an operationId, not tagged "data plane",
/// "probes" or "mcp", whose success answers include JSON (or have no body), and that the route
/// table serves; in the document's order; every $ref inlined.
Json tools_from_openapi(const Json& doc);

/// What is wrong with `value` against `schema` (the JSON Schema keywords the document uses:
/// type, enum, const, required, properties, additionalProperties, items, min/max bounds,
/// lengths, pattern, allOf/anyOf/oneOf), one line per problem with its JSON path from `at`;
/// empty when it is valid. At most 8 problems.
std::vector<std::string> validate(const Json& schema, const Json& value, const std::string& at = "arguments");

}  // namespace modelux::proxy::mcp
