// Azure OpenAI codec: the OpenAI body and stream format on deployment URLs.
//   POST {base}/deployments/{deployment}/chat/completions?api-version=...  with `api-key`.
// base_url is "https://{resource}.openai.azure.com/openai" ({resource} from options.resource);
// the deployment is options.deployment or the upstream model name; api-version is
// options.api_version (default 2024-10-21, the GA version). Azure streams chunks with empty
// `choices` that carry only prompt filter results; they decode to chunks without choices.
#include "wire/codecs.hpp"

namespace modelux {
namespace {

using namespace wire;

class AzureCodec final : public Codec {
 public:
  std::string_view family() const noexcept override { return "azure"; }

  Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                         std::string_view upstream_model) const override {
    auto opt = [&](const char* k, std::string fallback) {
      auto it = ep.options.find(k);
      return it == ep.options.end() || it->second.empty() ? fallback : it->second;
    };
    std::string deployment = opt("deployment", std::string(upstream_model));
    std::string base = ep.base_url;
    if (auto r = base.find("{resource}"); r != std::string::npos) {
      std::string resource = opt("resource", "");
      if (resource.empty())
        return fail(ErrorKind::invalid_config, "azure base_url has {resource} but options.resource is not set", "options.resource");
      base.replace(r, 10, resource);
    }
    ProviderEndpoint plain = ep;
    plain.api_key.clear();
    plain.base_url = join_url(base, "/deployments/" + percent_encode(deployment));
    auto spec = openai_codec().encode_request(req, plain, upstream_model);
    if (!spec) return spec;
    spec->url += "?api-version=" + percent_encode(opt("api_version", "2024-10-21"));
    if (!ep.api_key.empty()) spec->headers.emplace_back("api-key", ep.api_key);
    return spec;
  }

  Result<ChatResponse> decode_response(std::string_view body) const override { return openai_codec().decode_response(body); }

  Error decode_error(int status, const Headers& headers, std::string_view body) const override {
    Error e = openai_codec().decode_error(status, headers, body);
    e.provider = "azure";
    if (e.code == "DeploymentNotFound") e.kind = ErrorKind::not_found;
    if (e.code == "content_filter" || e.code == "ResponsibleAIPolicyViolation") e.kind = ErrorKind::content_filter;
    return e;
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override { return openai_codec().stream_decoder(); }
};

}  // namespace

const Codec& azure_codec() {
  static const AzureCodec c;
  return c;
}

}  // namespace modelux
