// `cascade`: sequential steps (typically cheap → strong), stopping at the first answer that
// passes an acceptance check: finish_reason, non_empty, valid_json, json_schema (a subset),
// min/max length, or a DSL expression over response.*.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {
Result<std::unique_ptr<Strategy>> compile_cascade(const Json& cfg, const std::string& path, const PolicyResolver& r);
/// Validates `v` against a JSON-schema subset (type, properties, required, items, enum,
/// minLength/maxLength, minimum/maximum, additionalProperties: false). Empty string = valid,
/// otherwise the first violation with its JSON path.
std::string validate_json_schema(const Json& v, const Json& schema, const std::string& path = "$");
}  // namespace modelux
