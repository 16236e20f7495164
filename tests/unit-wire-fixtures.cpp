// Real-format fixtures (tests/fixtures/wire, provenance in its README.md) through the client
// codecs: each one must decode to the content, tool calls, finish reason and usage the provider
// meant, and each stream must decode the same for every split of its bytes. These bodies were
// not produced by our server-side codecs, so they catch a misreading that the mock would share.
#include <doctest/doctest.h>

#include "modelux/wire.hpp"
#include "support/wire_decode.hpp"
#include "wire/codecs.hpp"

using namespace modelux;
using modelux::test::check_every_split;
using modelux::test::codec;
using modelux::test::Decoded;
using modelux::test::fixture;

namespace {

ChatResponse decode_json(std::string_view family, const std::string& body) {
  auto r = codec(family).decode_response(body);
  REQUIRE_MESSAGE(r.has_value(), r.error().describe());
  REQUIRE(r->choices.size() == 1);
  return *r;
}

void check_usage(const Usage& u, std::int64_t prompt, std::int64_t completion, std::int64_t cached = 0,
                 std::int64_t cache_write = 0) {
  CHECK(u.prompt_tokens == prompt);
  CHECK(u.completion_tokens == completion);
  CHECK(u.cached_tokens == cached);
  CHECK(u.cache_write_tokens == cache_write);
}

}  // namespace

// ------------------------------------------------------------------------------ OpenAI family

TEST_CASE("Fixture openai_response.json: text, stop, usage") {
  auto r = decode_json("openai", fixture("openai_response.json"));
  CHECK(r.id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT");
  CHECK(r.model == "gpt-4.1-2025-04-14");
  CHECK(r.choices[0].message.text() == "Hello! How can I assist you today?");
  CHECK(r.choices[0].finish_reason == "stop");
  check_usage(r.usage, 19, 10);
}

TEST_CASE("Fixture openai_stream_text.sse: text pieces, finish chunk, then the usage chunk") {
  Decoded d = check_every_split("openai", fixture("openai_stream_text.sse"));
  CHECK(d.response.choices.at(0).message.text() == "Hello!");
  CHECK(d.response.choices.at(0).finish_reason == "stop");
  CHECK(d.usage_chunks == 1);
  check_usage(d.response.usage, 9, 2);
}

TEST_CASE("Fixture azure_response.json: content filter results around an OpenAI body") {
  auto r = decode_json("azure", fixture("azure_response.json"));
  CHECK(r.choices[0].message.text() == "Yes, many other Azure AI services support customer managed keys.");
  CHECK(r.choices[0].finish_reason == "stop");
  CHECK(r.model == "gpt-4o-2024-11-20");
  check_usage(r.usage, 58, 12);
}

TEST_CASE("Fixture azure_stream.sse: the leading prompt-filter chunk with no choices and no id") {
  Decoded d = check_every_split("azure", fixture("azure_stream.sse"));
  REQUIRE(d.response.choices.size() == 1);
  CHECK(d.response.choices[0].message.text() == "Azure says hello.");
  CHECK(d.response.choices[0].finish_reason == "stop");
  CHECK(d.response.id == "chatcmpl-AzRr1");  // the empty id of the filter chunk does not win
  CHECK(d.response.model == "gpt-4o-2024-11-20");
  check_usage(d.response.usage, 25, 4);
}

TEST_CASE("Fixture groq_response.json: timing fields in usage are ignored, tokens kept") {
  auto r = decode_json("openai", fixture("groq_response.json"));
  CHECK(r.choices[0].message.text() == "Fast language models have gained significant attention in recent years.");
  CHECK(r.choices[0].finish_reason == "stop");
  check_usage(r.usage, 18, 556);
}

TEST_CASE("Fixture groq_stream.sse: usage arrives in x_groq.usage on the finish chunk") {
  Decoded d = check_every_split("openai", fixture("groq_stream.sse"));
  CHECK(d.response.choices.at(0).message.text() == "Fast models.");
  CHECK(d.response.choices.at(0).finish_reason == "stop");
  check_usage(d.response.usage, 18, 3);
}

TEST_CASE("Fixture mistral_response.json: null tool_calls and the prefix flag") {
  auto r = decode_json("openai", fixture("mistral_response.json"));
  CHECK(r.choices[0].message.text() == "The best French cheese depends on personal preference.");
  CHECK(r.choices[0].message.tool_calls.empty());
  CHECK(r.choices[0].finish_reason == "stop");
  check_usage(r.usage, 16, 34);
}

TEST_CASE("Fixture mistral_stream_tool.sse: a whole tool call, finish and usage in one chunk") {
  Decoded d = check_every_split("openai", fixture("mistral_stream_tool.sse"));
  const auto& c = d.response.choices.at(0);
  REQUIRE(c.message.tool_calls.size() == 1);
  CHECK(c.message.tool_calls[0].id == "D681PevKs");
  CHECK(c.message.tool_calls[0].name == "retrieve_payment_status");
  CHECK(c.message.tool_calls[0].arguments == R"({"transaction_id": "T1001"})");
  CHECK(c.finish_reason == "tool_calls");
  check_usage(d.response.usage, 167, 27);
}

TEST_CASE("Fixtures mistral_error_*.json: errors without an error envelope keep their message") {
  Error refused = codec("openai").decode_error(422, {}, fixture("mistral_error_422.json"));
  CHECK(refused.kind == ErrorKind::bad_request);
  CHECK(refused.message.find("extra_forbidden") != std::string::npos);
  CHECK(refused.message.find("stream_options") != std::string::npos);
  CHECK(refused.code == "invalid_request_error");
  Error limited = codec("openai").decode_error(429, {{"retry-after", "2"}}, fixture("mistral_error_429.json"));
  CHECK(limited.kind == ErrorKind::rate_limited);
  CHECK(limited.message == "Rate limit exceeded");
  CHECK(limited.code == "1300");
  REQUIRE(limited.retry_after.has_value());
  CHECK(limited.retry_after->count() == 2000);
  Error plain = codec("openai").decode_error(429, {}, fixture("mistral_error_429_plain.json"));
  CHECK(plain.kind == ErrorKind::rate_limited);
  CHECK(plain.message == "Requests rate limit exceeded");
}

TEST_CASE("Fixture deepseek_stream_reasoning.sse: reasoning_content is not content, usage with cache hits") {
  Decoded d = check_every_split("openai", fixture("deepseek_stream_reasoning.sse"));
  const auto& c = d.response.choices.at(0);
  CHECK(c.message.text() == "9.8 is greater.");
  CHECK(c.finish_reason == "stop");
  check_usage(d.response.usage, 84, 190, 64);
  CHECK(d.response.usage.reasoning_tokens == 180);
}

// ------------------------------------------------------------------------------ Anthropic

TEST_CASE("Fixture anthropic_stream_thinking.sse: thinking and signature deltas are skipped, text kept") {
  Decoded d = check_every_split("anthropic", fixture("anthropic_stream_thinking.sse"));
  const auto& c = d.response.choices.at(0);
  CHECK(c.message.text() == "The greatest common divisor of 1071 and 462 is **21**.");
  CHECK(c.message.tool_calls.empty());
  CHECK(c.finish_reason == "stop");
  CHECK(d.response.id == "msg_01BZ8HcZfk4r9GpqEJqEWFR3");
  check_usage(d.response.usage, 49, 115);
}

// ------------------------------------------------------------------------------ Cohere

TEST_CASE("Fixture cohere_response.json: text block, COMPLETE, tokens (not billed units)") {
  auto r = decode_json("cohere", fixture("cohere_response.json"));
  CHECK(r.id == "c14c80c3-18eb-4519-9460-6c92edd8cfb4");
  CHECK(r.choices[0].message.text() == "LLMs stand for Large Language Models, which are a type of neural network model.");
  CHECK(r.choices[0].finish_reason == "stop");
  check_usage(r.usage, 215, 16);
}

TEST_CASE("Fixture cohere_response_tool.json: tool plan is not content, the call is kept") {
  auto r = decode_json("cohere", fixture("cohere_response_tool.json"));
  const auto& c = r.choices[0];
  CHECK(c.message.text().empty());
  CHECK(c.message.content_null);
  REQUIRE(c.message.tool_calls.size() == 1);
  CHECK(c.message.tool_calls[0].id == "query_daily_sales_report_1rkbx0h9qfjm");
  CHECK(c.message.tool_calls[0].name == "query_daily_sales_report");
  CHECK(c.message.tool_calls[0].arguments == R"({"day":"2023-09-29"})");
  CHECK(c.finish_reason == "tool_calls");
  check_usage(r.usage, 1040, 63);
}

TEST_CASE("Fixture cohere_stream_tool.sse: tool-plan deltas, call start and argument deltas") {
  Decoded d = check_every_split("cohere", fixture("cohere_stream_tool.sse"));
  const auto& c = d.response.choices.at(0);
  CHECK(c.message.text().empty());
  REQUIRE(c.message.tool_calls.size() == 1);
  CHECK(c.message.tool_calls[0].id == "query_daily_sales_report_1rkbx0h9qfjm");
  CHECK(c.message.tool_calls[0].arguments == R"({"day":"2023-09-29"})");
  CHECK(c.finish_reason == "tool_calls");
  check_usage(d.response.usage, 1040, 63);
}

// ------------------------------------------------------------------------------ Gemini

TEST_CASE("Fixture gemini_response_tool.json: a function call with a thought signature, thoughts in usage") {
  auto r = decode_json("gemini", fixture("gemini_response_tool.json"));
  const auto& c = r.choices[0];
  REQUIRE(c.message.tool_calls.size() == 1);
  CHECK(c.message.tool_calls[0].name == "get_current_temperature");
  CHECK(c.message.tool_calls[0].arguments == R"({"location":"London"})");
  CHECK(c.finish_reason == "tool_calls");
  CHECK(r.usage.prompt_tokens == 64);
  CHECK(r.usage.completion_tokens == 17 + 58);
  CHECK(r.usage.reasoning_tokens == 58);
}

// ------------------------------------------------------------------------------ Bedrock

TEST_CASE("Fixture bedrock_converse_stream_tool.eventstream: text then a tool call, padding, cache usage") {
  Decoded d = check_every_split("bedrock", fixture("bedrock_converse_stream_tool.eventstream"));
  const auto& c = d.response.choices.at(0);
  CHECK(c.message.text() == "Let me check the charts.");
  REQUIRE(c.message.tool_calls.size() == 1);
  CHECK(c.message.tool_calls[0].id == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
  CHECK(c.message.tool_calls[0].name == "top_song");
  CHECK(c.message.tool_calls[0].arguments == R"({"sign": "WZPZ"})");
  CHECK(c.finish_reason == "tool_calls");
  check_usage(d.response.usage, 375 + 800 + 200, 57, 800, 200);
}
