// Data files embedded at build time (cmake/embed.cmake).
#pragma once
#include <string_view>
namespace modelux::embedded {
extern const std::string_view kCatalogJson;   ///< data/catalog.json
extern const std::string_view kDefaultsJson;  ///< data/defaults.json (the demo's embedded config)
}  // namespace modelux::embedded
