// Request bodies: the unified (OpenAI) parser and each family's server-side native parser, then
// re-encoding the parsed request for every family.
#include "common.hpp"
#include "testing/server_codecs.hpp"
#include "wire/codecs.hpp"

namespace {
// The direct reader and writer (src/wire/openai_direct.cpp) must agree with the DOM path.
void check_direct(std::string_view body) {
  using namespace modelux;
  auto direct = wire::read_plain_chat_request(body, ParseLimits{});
  auto j = parse_json(body);
  Result<ChatRequest> dom = j ? chat_request_from_json(*j) : Result<ChatRequest>(fail(j.error()));
  if (direct && (!dom || to_json(*direct) != to_json(*dom) || direct->stream != dom->stream ||
                 direct->include_usage != dom->include_usage ||
                 direct->max_tokens_is_completion != dom->max_tokens_is_completion))
    __builtin_trap();
  if (!dom) return;
  if (auto w = wire::openai_body_direct(*dom, "m")) {
    Json expect = to_json(*dom);
    expect["model"] = "m";
    if (dom->stream) expect["stream_options"] = {{"include_usage", true}};
    if (*w != expect.dump(-1, ' ', false, Json::error_handler_t::replace)) __builtin_trap();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_direct(body);
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
