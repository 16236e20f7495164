// Request bodies: the unified (OpenAI) parser and each family's server-side native parser, then
// re-encoding the parsed request for every family.
#include "common.hpp"
#include "testing/server_codecs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  modelux::Result<modelux::ChatRequest> req = modelux::parse_chat_request(body);
  if (auto j = modelux::parse_json(body); j) {
    switch (data[0] % 5) {
      case 0: req = modelux::wire::anthropic_request_from_native(*j); break;
      case 1: req = modelux::wire::gemini_request_from_native(*j, "m"); break;
      case 2: req = modelux::wire::cohere_request_from_native(*j); break;
      case 3: req = modelux::wire::bedrock_request_from_native(*j, "m"); break;
      default: break;
    }
  }
  if (!req) return 0;
  modelux::ProviderEndpoint ep;
  ep.api_key = "k";
  for (auto f : fuzz::kFamilies) {
    ep.family = std::string(f);
    auto spec = modelux::find_codec(f)->encode_request(*req, ep, "m");
    (void)spec;
  }
  return 0;
}
