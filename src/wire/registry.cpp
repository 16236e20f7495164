// Codec lookup by family name. Explicit list (no static self-registration: a static library
// would drop unreferenced registrars).
#include <mutex>
#include <vector>

#include "wire/codecs.hpp"

namespace modelux {

namespace {
std::vector<const Codec*>& extra_codecs() {
  static std::vector<const Codec*> v;
  return v;
}
}  // namespace

void register_codec(const Codec* codec) {
  if (codec) extra_codecs().push_back(codec);
}

const Codec* find_codec(std::string_view family) noexcept {
  static const Codec* builtin[] = {&openai_codec(),    &azure_codec(),  &anthropic_codec(),
                                   &gemini_codec(),    &cohere_codec(), &bedrock_codec()};
  for (const Codec* c : builtin)
    if (c->family() == family) return c;
  for (const Codec* c : extra_codecs())
    if (c->family() == family) return c;
  return nullptr;
}

}  // namespace modelux
