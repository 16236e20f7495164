// The rules DSL: small CEL-like expressions over the request, budget, health, estimated cost
// and time of day, e.g.
//
//   tags["tier"] == "free" && budget.percent > 80
//   health("anthropic/claude-haiku-4-5").breaker == "open" || estimated_tokens > 100000
//   hour >= 22 || weekday in [0, 6]
//
// Expressions are parsed and type-checked when the config loads (errors carry line:column)
// and compiled to a flat instruction array. Evaluation walks that array over a fixed-size
// value stack: no heap allocation, no recursion, bounded by the instruction count.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/policy.hpp"

namespace modelux::dsl {

enum class Type : std::uint8_t { boolean, number, string };
std::string_view to_string(Type t) noexcept;

/// What an expression may read. Pointers may be null (then the values read as empty/zero).
struct EvalContext {
  const ChatRequest* request = nullptr;
  const CallContext* context = nullptr;
  const HealthView* health = nullptr;
  const BudgetView* budget = nullptr;
  Instant now{};
  WallTime wall{};
  std::int64_t estimated_tokens = 0;
  const ChatResponse* response = nullptr;  ///< cascade acceptance
  std::string_view response_text{};
};

enum class Op : std::uint8_t;

struct Instr {
  Op op;
  std::uint8_t field = 0;
  std::uint16_t a = 0;
  double num = 0;
};

/// A compiled expression. Immutable; safe to evaluate from many threads.
class Expression {
 public:
  static constexpr std::size_t kMaxStack = 32;
  static constexpr std::size_t kMaxSource = 4096;

  /// Parses and type-checks `source`. `catalog` prices estimated_cost("model"); without it
  /// that function is a compile error.
  /// Errors: kind invalid_config, message "line L, column C: ...".
  static Result<Expression> compile(std::string_view source, Type expected, const Catalog* catalog = nullptr);

  Type type() const noexcept { return type_; }
  const std::string& source() const noexcept { return source_; }
  std::size_t size() const noexcept { return code_.size(); }

  bool eval_bool(const EvalContext& c) const noexcept;
  double eval_number(const EvalContext& c) const noexcept;

  struct Price {
    double input_per_m = 0, output_per_m = 0;
  };

 private:
  struct Value {
    double n = 0;
    std::string_view s;
    bool b = false;
  };
  Value run(const EvalContext& c) const noexcept;
  friend class Parser;

  std::string source_;
  Type type_ = Type::boolean;
  std::vector<Instr> code_;
  std::vector<std::string> strings_;        ///< string constants (stable storage)
  std::vector<std::vector<std::string>> str_lists_;
  std::vector<std::vector<double>> num_lists_;
  std::vector<Price> prices_;               ///< estimated_cost("model") operands
  std::int64_t default_output_tokens_ = 256;  ///< estimated_cost when the request sets no max_tokens
};

}  // namespace modelux::dsl
