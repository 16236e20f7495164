// Rules DSL: a single-pass recursive-descent parser that type-checks as it emits a flat
// instruction array, and a stack machine that evaluates it.
//
// Grammar (precedence low → high):
//   expr    := or
//   or      := and ("||" and)*
//   and     := not ("&&" not)*
//   not     := "!" not | cmp
//   cmp     := sum (("=="|"!="|"<"|"<="|">"|">=") sum | "in" list)?
//   sum     := prod (("+"|"-") prod)*
//   prod    := unary (("*"|"/"|"%") unary)*
//   unary   := "-" unary | primary
//   primary := number | string | true | false | "(" expr ")" | variable | call
// Evaluation: one pass over the code, a fixed array of kMaxStack values, string values are
// views into the request, the context or the expression's constants — no allocation.
#include "policy/dsl.hpp"

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "policy/strategy.hpp"

namespace modelux::dsl {

std::string_view to_string(Type t) noexcept {
  switch (t) {
    case Type::boolean: return "bool";
    case Type::number: return "number";
    case Type::string: return "string";
  }
  return "bool";
}

enum class Op : std::uint8_t {
  push_num, push_str, push_bool,
  load,        // field = Var
  tag,         // a = string index (tag key)
  health,      // a = string index (target key), field = HealthField
  est_cost,    // a = price index
  add, sub, mul, div, mod, neg, not_,
  eq_num, ne_num, lt, le, gt, ge,
  eq_str, ne_str, lt_str, le_str, gt_str, ge_str,
  eq_bool, ne_bool,
  and_jump,    // if top is false: jump to a (keep it); else pop
  or_jump,     // if top is true: jump to a (keep it); else pop
  in_str, in_num,  // a = list index
  contains, starts_with, ends_with, len,
};

namespace {

enum class Var : std::uint8_t {
  model, estimated_tokens, stream, end_user, project, org, api_key_id, messages, max_tokens, user,
  budget_spent, budget_remaining, budget_percent, budget_limit,
  hour, minute, weekday,
  response_text, response_length, response_finish_reason, response_ok,
};
enum class HealthField : std::uint8_t { p50_ms, p95_ms, error_rate, samples, breaker, admits };

struct VarInfo {
  std::string_view name;
  Var var;
  Type type;
};
constexpr VarInfo kVars[] = {
    {"model", Var::model, Type::string},
    {"estimated_tokens", Var::estimated_tokens, Type::number},
    {"stream", Var::stream, Type::boolean},
    {"end_user", Var::end_user, Type::string},
    {"project", Var::project, Type::string},
    {"org", Var::org, Type::string},
    {"api_key", Var::api_key_id, Type::string},
    {"messages", Var::messages, Type::number},
    {"max_tokens", Var::max_tokens, Type::number},
    {"user", Var::user, Type::string},
    {"hour", Var::hour, Type::number},
    {"minute", Var::minute, Type::number},
    {"weekday", Var::weekday, Type::number},
};
constexpr VarInfo kRequestFields[] = {
    {"model", Var::model, Type::string},         {"estimated_tokens", Var::estimated_tokens, Type::number},
    {"stream", Var::stream, Type::boolean},      {"end_user", Var::end_user, Type::string},
    {"project", Var::project, Type::string},     {"org", Var::org, Type::string},
    {"api_key", Var::api_key_id, Type::string},  {"messages", Var::messages, Type::number},
    {"max_tokens", Var::max_tokens, Type::number}, {"user", Var::user, Type::string},
};
constexpr VarInfo kBudgetFields[] = {
    {"spent", Var::budget_spent, Type::number},
    {"remaining", Var::budget_remaining, Type::number},
    {"percent", Var::budget_percent, Type::number},
    {"limit", Var::budget_limit, Type::number},
};
constexpr VarInfo kTimeFields[] = {
    {"hour", Var::hour, Type::number}, {"minute", Var::minute, Type::number}, {"weekday", Var::weekday, Type::number}};
constexpr VarInfo kResponseFields[] = {
    {"text", Var::response_text, Type::string},
    {"length", Var::response_length, Type::number},
    {"finish_reason", Var::response_finish_reason, Type::string},
    {"ok", Var::response_ok, Type::boolean},
};
struct HealthInfo {
  std::string_view name;
  HealthField f;
  Type type;
};
constexpr HealthInfo kHealthFields[] = {
    {"p50_ms", HealthField::p50_ms, Type::number},         {"p95_ms", HealthField::p95_ms, Type::number},
    {"error_rate", HealthField::error_rate, Type::number}, {"samples", HealthField::samples, Type::number},
    {"breaker", HealthField::breaker, Type::string},       {"admits", HealthField::admits, Type::boolean},
};

enum class Tok : std::uint8_t {
  end, number, string, ident, lparen, rparen, lbracket, rbracket, comma, dot,
  and_, or_, not_, eq, ne, lt, le, gt, ge, plus, minus, star, slash, percent,
};

struct Token {
  Tok kind = Tok::end;
  std::string_view text;
  double num = 0;
  std::string str;  // decoded string literal
  int line = 1, col = 1;
};

}  // namespace

class Parser {
 public:
  Parser(std::string_view src, Expression& out, const Catalog* cat) : src_(src), out_(out), cat_(cat) {}

  Result<Type> parse() {
    if (!advance()) return std::unexpected(err_);
    auto t = parse_or();
    if (!t) return t;
    if (tok_.kind != Tok::end) return error(tok_, "unexpected '" + std::string(tok_.text) + "'");
    return t;
  }
  std::size_t max_depth = 0;

 private:
  // ---- lexer ----
  bool advance() {
    while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) bump();
    tok_ = Token{};
    tok_.line = line_;
    tok_.col = col_;
    if (pos_ >= src_.size()) return true;
    std::size_t start = pos_;
    char c = src_[pos_];
    auto two = [&](char a, char b) { return c == a && pos_ + 1 < src_.size() && src_[pos_ + 1] == b; };
    auto single = [&](Tok k) {
      tok_.kind = k;
      bump();
    };
    auto pair = [&](Tok k) {
      tok_.kind = k;
      bump();
      bump();
    };
    if (std::isdigit(static_cast<unsigned char>(c)) ||
        (c == '.' && pos_ + 1 < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1])))) {
      while (pos_ < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '.' || src_[pos_] == 'e' ||
              src_[pos_] == 'E' || src_[pos_] == '_'))
        bump();
      std::string digits;
      for (char d : src_.substr(start, pos_ - start))
        if (d != '_') digits += d;
      char* end = nullptr;
      tok_.num = std::strtod(digits.c_str(), &end);
      if (end != digits.c_str() + digits.size()) return lex_error("bad number '" + digits + "'");
      tok_.kind = Tok::number;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) bump();
      tok_.kind = Tok::ident;
    } else if (c == '"' || c == '\'') {
      char q = c;
      bump();
      for (;;) {
        if (pos_ >= src_.size()) return lex_error("unterminated string");
        char d = src_[pos_];
        if (d == q) {
          bump();
          break;
        }
        if (d == '\\') {
          bump();
          if (pos_ >= src_.size()) return lex_error("unterminated string");
          char e = src_[pos_];
          tok_.str += e == 'n' ? '\n' : e == 't' ? '\t' : e;
          bump();
          continue;
        }
        if (d == '\n') return lex_error("newline in string");
        tok_.str += d;
        bump();
      }
      tok_.kind = Tok::string;
    } else if (two('&', '&')) pair(Tok::and_);
    else if (two('|', '|')) pair(Tok::or_);
    else if (two('=', '=')) pair(Tok::eq);
    else if (two('!', '=')) pair(Tok::ne);
    else if (two('<', '=')) pair(Tok::le);
    else if (two('>', '=')) pair(Tok::ge);
    else if (c == '<') single(Tok::lt);
    else if (c == '>') single(Tok::gt);
    else if (c == '!') single(Tok::not_);
    else if (c == '(') single(Tok::lparen);
    else if (c == ')') single(Tok::rparen);
    else if (c == '[') single(Tok::lbracket);
    else if (c == ']') single(Tok::rbracket);
    else if (c == ',') single(Tok::comma);
    else if (c == '.') single(Tok::dot);
    else if (c == '+') single(Tok::plus);
    else if (c == '-') single(Tok::minus);
    else if (c == '*') single(Tok::star);
    else if (c == '/') single(Tok::slash);
    else if (c == '%') single(Tok::percent);
    else if (c == '=') return lex_error("'=' is not an operator; use '=='");
    else return lex_error(std::string("unexpected character '") + c + "'");
    tok_.text = src_.substr(start, pos_ - start);
    return true;
  }
  void bump() {
    if (src_[pos_] == '\n') {
      ++line_;
      col_ = 1;
    } else {
      ++col_;
    }
    ++pos_;
  }
  bool lex_error(std::string msg) {
    err_ = make_error(tok_.line, tok_.col, std::move(msg));
    return false;
  }
  static Error make_error(int line, int col, std::string msg) {
    Error e;
    e.kind = ErrorKind::invalid_config;
    e.message = "line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + msg;
    return e;
  }
  std::unexpected<Error> error(const Token& t, std::string msg) { return std::unexpected(make_error(t.line, t.col, std::move(msg))); }

  // ---- emitter ----
  void emit(Op op, std::uint8_t field = 0, std::uint16_t a = 0, double num = 0) {
    out_.code_.push_back(Instr{op, field, a, num});
  }
  void push(int n = 1) {
    depth_ += n;
    if (depth_ > max_depth) max_depth = depth_;
  }
  void pop(int n = 1) { depth_ -= n; }
  std::uint16_t str_const(std::string s) {
    for (std::size_t i = 0; i < out_.strings_.size(); ++i)
      if (out_.strings_[i] == s) return static_cast<std::uint16_t>(i);
    out_.strings_.push_back(std::move(s));
    return static_cast<std::uint16_t>(out_.strings_.size() - 1);
  }
  bool expect(Tok k, const char* what) {
    if (tok_.kind != k) {
      err_ = make_error(tok_.line, tok_.col, std::string("expected ") + what);
      return false;
    }
    return advance();
  }

  // ---- grammar ----
  struct NestGuard {
    Parser& p;
    explicit NestGuard(Parser& x) : p(x) { ++p.nest_; }
    ~NestGuard() { --p.nest_; }
  };
  static constexpr int kMaxNesting = 48;
  std::unexpected<Error> too_deep() { return error(tok_, "expression too deeply nested"); }

  Result<Type> parse_or() {
    NestGuard g(*this);
    if (nest_ > kMaxNesting) return too_deep();
    Token first = tok_;
    auto l = parse_and();
    if (!l) return l;
    while (tok_.kind == Tok::or_) {
      Token op = tok_;
      if (*l != Type::boolean) return error(first, "'||' needs bool operands, got " + std::string(to_string(*l)));
      if (!advance()) return std::unexpected(err_);
      std::size_t jump = out_.code_.size();
      emit(Op::or_jump);
      pop();
      Token rt = tok_;
      auto r = parse_and();
      if (!r) return r;
      if (*r != Type::boolean) return error(rt, "'||' needs bool operands, got " + std::string(to_string(*r)));
      out_.code_[jump].a = static_cast<std::uint16_t>(out_.code_.size());
      (void)op;
    }
    return l;
  }
  Result<Type> parse_and() {
    Token first = tok_;
    auto l = parse_not();
    if (!l) return l;
    while (tok_.kind == Tok::and_) {
      if (*l != Type::boolean) return error(first, "'&&' needs bool operands, got " + std::string(to_string(*l)));
      if (!advance()) return std::unexpected(err_);
      std::size_t jump = out_.code_.size();
      emit(Op::and_jump);
      pop();
      Token rt = tok_;
      auto r = parse_not();
      if (!r) return r;
      if (*r != Type::boolean) return error(rt, "'&&' needs bool operands, got " + std::string(to_string(*r)));
      out_.code_[jump].a = static_cast<std::uint16_t>(out_.code_.size());
    }
    return l;
  }
  Result<Type> parse_not() {
    NestGuard g(*this);
    if (nest_ > kMaxNesting) return too_deep();
    if (tok_.kind == Tok::not_) {
      Token t = tok_;
      if (!advance()) return std::unexpected(err_);
      auto v = parse_not();
      if (!v) return v;
      if (*v != Type::boolean) return error(t, "'!' needs a bool, got " + std::string(to_string(*v)));
      emit(Op::not_);
      return Type::boolean;
    }
    return parse_cmp();
  }
  Result<Type> parse_cmp() {
    Token first = tok_;
    auto l = parse_sum();
    if (!l) return l;
    Tok k = tok_.kind;
    if (k == Tok::ident && tok_.text == "in") {
      Token t = tok_;
      if (!advance()) return std::unexpected(err_);
      return parse_in_list(*l, t);
    }
    if (k != Tok::eq && k != Tok::ne && k != Tok::lt && k != Tok::le && k != Tok::gt && k != Tok::ge) return l;
    Token opt = tok_;
    if (!advance()) return std::unexpected(err_);
    Token rt = tok_;
    auto r = parse_sum();
    if (!r) return r;
    if (*l != *r)
      return error(opt, "cannot compare " + std::string(to_string(*l)) + " with " + std::string(to_string(*r)));
    Op op;
    if (*l == Type::number) {
      op = k == Tok::eq ? Op::eq_num : k == Tok::ne ? Op::ne_num : k == Tok::lt ? Op::lt : k == Tok::le ? Op::le
         : k == Tok::gt ? Op::gt : Op::ge;
    } else if (*l == Type::string) {
      op = k == Tok::eq ? Op::eq_str : k == Tok::ne ? Op::ne_str : k == Tok::lt ? Op::lt_str : k == Tok::le ? Op::le_str
         : k == Tok::gt ? Op::gt_str : Op::ge_str;
    } else {
      if (k != Tok::eq && k != Tok::ne) return error(opt, "bools can only be compared with == and !=");
      op = k == Tok::eq ? Op::eq_bool : Op::ne_bool;
    }
    emit(op);
    pop();
    (void)first;
    (void)rt;
    return Type::boolean;
  }
  Result<Type> parse_in_list(Type lt, const Token& at) {
    if (lt == Type::boolean) return error(at, "'in' needs a string or number on the left");
    if (!expect(Tok::lbracket, "'[' after 'in'")) return std::unexpected(err_);
    std::vector<std::string> strs;
    std::vector<double> nums;
    while (tok_.kind != Tok::rbracket) {
      if (lt == Type::string && tok_.kind == Tok::string) strs.push_back(tok_.str);
      else if (lt == Type::number && tok_.kind == Tok::number) nums.push_back(tok_.num);
      else if (lt == Type::number && tok_.kind == Tok::minus) {
        if (!advance()) return std::unexpected(err_);
        if (tok_.kind != Tok::number) return error(tok_, "expected a number literal");
        nums.push_back(-tok_.num);
      } else
        return error(tok_, std::string("'in' list items must be ") + (lt == Type::string ? "string" : "number") + " literals");
      if (!advance()) return std::unexpected(err_);
      if (tok_.kind == Tok::comma) {
        if (!advance()) return std::unexpected(err_);
      } else if (tok_.kind != Tok::rbracket) {
        return error(tok_, "expected ',' or ']'");
      }
    }
    if (!advance()) return std::unexpected(err_);
    if (lt == Type::string) {
      out_.str_lists_.push_back(std::move(strs));
      emit(Op::in_str, 0, static_cast<std::uint16_t>(out_.str_lists_.size() - 1));
    } else {
      out_.num_lists_.push_back(std::move(nums));
      emit(Op::in_num, 0, static_cast<std::uint16_t>(out_.num_lists_.size() - 1));
    }
    return Type::boolean;
  }
  Result<Type> parse_sum() {
    Token first = tok_;
    auto l = parse_prod();
    if (!l) return l;
    while (tok_.kind == Tok::plus || tok_.kind == Tok::minus) {
      Token opt = tok_;
      if (*l != Type::number) return error(opt, "arithmetic needs numbers, got " + std::string(to_string(*l)));
      if (!advance()) return std::unexpected(err_);
      auto r = parse_prod();
      if (!r) return r;
      if (*r != Type::number) return error(opt, "arithmetic needs numbers, got " + std::string(to_string(*r)));
      emit(opt.kind == Tok::plus ? Op::add : Op::sub);
      pop();
    }
    (void)first;
    return l;
  }
  Result<Type> parse_prod() {
    auto l = parse_unary();
    if (!l) return l;
    while (tok_.kind == Tok::star || tok_.kind == Tok::slash || tok_.kind == Tok::percent) {
      Token opt = tok_;
      if (*l != Type::number) return error(opt, "arithmetic needs numbers, got " + std::string(to_string(*l)));
      if (!advance()) return std::unexpected(err_);
      auto r = parse_unary();
      if (!r) return r;
      if (*r != Type::number) return error(opt, "arithmetic needs numbers, got " + std::string(to_string(*r)));
      emit(opt.kind == Tok::star ? Op::mul : opt.kind == Tok::slash ? Op::div : Op::mod);
      pop();
    }
    return l;
  }
  Result<Type> parse_unary() {
    NestGuard g(*this);
    if (nest_ > kMaxNesting) return too_deep();
    if (tok_.kind == Tok::minus) {
      Token t = tok_;
      if (!advance()) return std::unexpected(err_);
      auto v = parse_unary();
      if (!v) return v;
      if (*v != Type::number) return error(t, "'-' needs a number");
      emit(Op::neg);
      return Type::number;
    }
    return parse_primary();
  }

  template <class Table>
  Result<Type> field_of(const Table& table, const char* what) {
    if (!expect(Tok::dot, (std::string("'.' after ") + what).c_str())) return std::unexpected(err_);
    if (tok_.kind != Tok::ident) return error(tok_, std::string("expected a field of ") + what);
    for (const auto& f : table)
      if (f.name == tok_.text) {
        emit(Op::load, static_cast<std::uint8_t>(f.var));
        push();
        if (!advance()) return std::unexpected(err_);
        return f.type;
      }
    std::string known;
    for (const auto& f : table) known += (known.empty() ? "" : ", ") + std::string(f.name);
    return error(tok_, "unknown field '" + std::string(tok_.text) + "' of " + what + " (known: " + known + ")");
  }
  Result<std::string> string_arg() {
    if (tok_.kind != Tok::string) return error(tok_, "expected a string literal");
    std::string s = tok_.str;
    if (!advance()) return std::unexpected(err_);
    return s;
  }
  Result<Type> tags_index() {
    if (!expect(Tok::lbracket, "'[' after tags")) return std::unexpected(err_);
    auto k = string_arg();
    if (!k) return std::unexpected(k.error());
    if (!expect(Tok::rbracket, "']'")) return std::unexpected(err_);
    emit(Op::tag, 0, str_const(*k));
    push();
    return Type::string;
  }

  Result<Type> parse_primary() {
    Token t = tok_;
    switch (t.kind) {
      case Tok::number:
        emit(Op::push_num, 0, 0, t.num);
        push();
        if (!advance()) return std::unexpected(err_);
        return Type::number;
      case Tok::string:
        emit(Op::push_str, 0, str_const(t.str));
        push();
        if (!advance()) return std::unexpected(err_);
        return Type::string;
      case Tok::lparen: {
        if (!advance()) return std::unexpected(err_);
        auto v = parse_or();
        if (!v) return v;
        if (!expect(Tok::rparen, "')'")) return std::unexpected(err_);
        return v;
      }
      case Tok::ident: break;
      case Tok::end: return error(t, "unexpected end of expression");
      default: return error(t, "unexpected '" + std::string(t.text) + "'");
    }
    std::string_view id = t.text;
    if (!advance()) return std::unexpected(err_);
    if (id == "true" || id == "false") {
      emit(Op::push_bool, id == "true");
      push();
      return Type::boolean;
    }
    if (id == "request") {
      if (tok_.kind == Tok::dot && pos_ < src_.size()) {
        // request.tags["k"] or request.<field>
        std::size_t save_pos = pos_;
        int save_line = line_, save_col = col_;
        Token save = tok_;
        if (!advance()) return std::unexpected(err_);
        if (tok_.kind == Tok::ident && tok_.text == "tags") {
          if (!advance()) return std::unexpected(err_);
          return tags_index();
        }
        pos_ = save_pos;
        line_ = save_line;
        col_ = save_col;
        tok_ = save;
      }
      return field_of(kRequestFields, "request");
    }
    if (id == "tags") return tags_index();
    if (id == "budget") return field_of(kBudgetFields, "budget");
    if (id == "time") return field_of(kTimeFields, "time");
    if (id == "response") return field_of(kResponseFields, "response");
    if (id == "health") {
      if (!expect(Tok::lparen, "'(' after health")) return std::unexpected(err_);
      auto key = string_arg();
      if (!key) return std::unexpected(key.error());
      if (key->find('/') == std::string::npos) return error(t, "health() takes \"provider/model\"");
      if (!expect(Tok::rparen, "')'")) return std::unexpected(err_);
      if (!expect(Tok::dot, "'.' after health(...)")) return std::unexpected(err_);
      if (tok_.kind != Tok::ident) return error(tok_, "expected a health field");
      for (const auto& f : kHealthFields)
        if (f.name == tok_.text) {
          emit(Op::health, static_cast<std::uint8_t>(f.f), str_const(*key));
          push();
          if (!advance()) return std::unexpected(err_);
          return f.type;
        }
      return error(tok_, "unknown health field '" + std::string(tok_.text) +
                             "' (known: p50_ms, p95_ms, error_rate, samples, breaker, admits)");
    }
    if (id == "estimated_cost") {
      if (!expect(Tok::lparen, "'(' after estimated_cost")) return std::unexpected(err_);
      Token at = tok_;
      auto model = string_arg();
      if (!model) return std::unexpected(model.error());
      if (!expect(Tok::rparen, "')'")) return std::unexpected(err_);
      const ModelInfo* mi = cat_ ? cat_->find_model(*model) : nullptr;
      if (!mi) return error(at, "estimated_cost: unknown model '" + *model + "'");
      if (!mi->priced) return error(at, "estimated_cost: model '" + *model + "' has no known price");
      out_.prices_.push_back({mi->input_per_m, mi->output_per_m});
      emit(Op::est_cost, 0, static_cast<std::uint16_t>(out_.prices_.size() - 1));
      push();
      return Type::number;
    }
    if (id == "contains" || id == "starts_with" || id == "ends_with" || id == "size" || id == "len") {
      if (!expect(Tok::lparen, "'('")) return std::unexpected(err_);
      Token a0 = tok_;
      auto x = parse_or();
      if (!x) return x;
      if (*x != Type::string) return error(a0, std::string(id) + "() takes strings");
      if (id == "size" || id == "len") {
        if (!expect(Tok::rparen, "')'")) return std::unexpected(err_);
        emit(Op::len);
        return Type::number;
      }
      if (!expect(Tok::comma, "','")) return std::unexpected(err_);
      Token a1 = tok_;
      auto y = parse_or();
      if (!y) return y;
      if (*y != Type::string) return error(a1, std::string(id) + "() takes strings");
      if (!expect(Tok::rparen, "')'")) return std::unexpected(err_);
      emit(id == "contains" ? Op::contains : id == "starts_with" ? Op::starts_with : Op::ends_with);
      pop();
      return Type::boolean;
    }
    for (const auto& v : kVars)
      if (v.name == id) {
        emit(Op::load, static_cast<std::uint8_t>(v.var));
        push();
        return v.type;
      }
    return error(t, "unknown name '" + std::string(id) + "'");
  }

  std::string_view src_;
  Expression& out_;
  const Catalog* cat_;
  std::size_t pos_ = 0;
  int line_ = 1, col_ = 1;
  Token tok_;
  Error err_;
  std::size_t depth_ = 0;
  int nest_ = 0;
};

Result<Expression> Expression::compile(std::string_view source, Type expected, const Catalog* catalog) {
  if (source.size() > kMaxSource)
    return fail(ErrorKind::invalid_config, "expression longer than " + std::to_string(kMaxSource) + " characters");
  Expression e;
  e.source_ = std::string(source);
  Parser p(e.source_, e, catalog);
  auto t = p.parse();
  if (!t) return std::unexpected(t.error());
  if (*t != expected)
    return fail(ErrorKind::invalid_config, "line 1, column 1: expression is " + std::string(to_string(*t)) + ", expected " +
                                               std::string(to_string(expected)));
  if (p.max_depth > kMaxStack || e.code_.size() > 4096)
    return fail(ErrorKind::invalid_config, "line 1, column 1: expression too deeply nested");
  e.type_ = *t;
  return e;
}

namespace {
std::string_view tag_of(const CallContext* c, std::string_view key) noexcept {
  if (!c) return {};
  for (const auto& [k, v] : c->tags)
    if (k == key) return v;
  return {};
}
}  // namespace

Expression::Value Expression::run(const EvalContext& c) const noexcept {
  std::array<Value, kMaxStack> st;
  std::size_t sp = 0;
  BudgetStatus budget;
  bool have_budget = false;
  auto load_budget = [&]() -> const BudgetStatus& {
    if (!have_budget) {
      if (c.budget && c.context) budget = c.budget->status(*c.context, c.now);
      have_budget = true;
    }
    return budget;
  };
  const std::size_t n = code_.size();
  for (std::size_t pc = 0; pc < n; ++pc) {
    const Instr& in = code_[pc];
    switch (in.op) {
      case Op::push_num: st[sp++] = Value{in.num, {}, false}; break;
      case Op::push_str: st[sp++] = Value{0, strings_[in.a], false}; break;
      case Op::push_bool: st[sp++] = Value{0, {}, in.field != 0}; break;
      case Op::load: {
        Value v;
        switch (static_cast<Var>(in.field)) {
          case Var::model: v.s = c.request ? std::string_view(c.request->model) : std::string_view{}; break;
          case Var::estimated_tokens: v.n = static_cast<double>(c.estimated_tokens); break;
          case Var::stream: v.b = c.request && c.request->stream; break;
          case Var::end_user:
            v.s = c.context && !c.context->end_user.empty() ? std::string_view(c.context->end_user)
                  : c.request ? std::string_view(c.request->user) : std::string_view{};
            break;
          case Var::project: v.s = c.context ? std::string_view(c.context->project) : std::string_view{}; break;
          case Var::org: v.s = c.context ? std::string_view(c.context->org) : std::string_view{}; break;
          case Var::api_key_id: v.s = c.context ? std::string_view(c.context->api_key_id) : std::string_view{}; break;
          case Var::messages: v.n = c.request ? static_cast<double>(c.request->messages.size()) : 0; break;
          case Var::max_tokens:
            v.n = c.request && c.request->max_tokens ? static_cast<double>(*c.request->max_tokens) : 0;
            break;
          case Var::user: v.s = c.request ? std::string_view(c.request->user) : std::string_view{}; break;
          case Var::budget_spent: v.n = load_budget().spent_usd; break;
          case Var::budget_remaining: {
            const BudgetStatus& b = load_budget();
            v.n = b.limit_usd > 0 ? b.remaining_usd : 1e300;
            break;
          }
          case Var::budget_percent: v.n = load_budget().percent; break;
          case Var::budget_limit: v.n = load_budget().limit_usd; break;
          case Var::hour:
          case Var::minute:
          case Var::weekday: {
            auto secs = std::chrono::duration_cast<std::chrono::seconds>(c.wall.time_since_epoch()).count();
            long long day = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
            long long sod = secs - day * 86400;
            if (static_cast<Var>(in.field) == Var::hour) v.n = static_cast<double>(sod / 3600);
            else if (static_cast<Var>(in.field) == Var::minute) v.n = static_cast<double>((sod / 60) % 60);
            else v.n = static_cast<double>(((day % 7) + 11) % 7);  // 1970-01-01 was a Thursday (4); 0 = Sunday
            break;
          }
          case Var::response_text: v.s = c.response_text; break;
          case Var::response_length: v.n = static_cast<double>(c.response_text.size()); break;
          case Var::response_finish_reason:
            v.s = c.response && !c.response->choices.empty() ? std::string_view(c.response->choices[0].finish_reason)
                                                              : std::string_view{};
            break;
          case Var::response_ok: v.b = c.response != nullptr; break;
        }
        st[sp++] = v;
        break;
      }
      case Op::tag: st[sp++] = Value{0, tag_of(c.context, strings_[in.a]), false}; break;
      case Op::health: {
        TargetStats s = c.health ? c.health->stats(strings_[in.a], c.now) : TargetStats{};
        Value v;
        switch (static_cast<HealthField>(in.field)) {
          case HealthField::p50_ms: v.n = s.p50_ms; break;
          case HealthField::p95_ms: v.n = s.p95_ms; break;
          case HealthField::error_rate: v.n = s.error_rate; break;
          case HealthField::samples: v.n = static_cast<double>(s.samples); break;
          case HealthField::breaker: v.s = modelux::to_string(s.breaker); break;
          case HealthField::admits: v.b = s.admits; break;
        }
        st[sp++] = v;
        break;
      }
      case Op::est_cost: {
        const Price& p = prices_[in.a];
        double out = c.request && c.request->max_tokens ? static_cast<double>(*c.request->max_tokens)
                                                        : static_cast<double>(default_output_tokens_);
        st[sp++] = Value{(static_cast<double>(c.estimated_tokens) * p.input_per_m + out * p.output_per_m) / 1e6, {}, false};
        break;
      }
      case Op::add: --sp; st[sp - 1].n += st[sp].n; break;
      case Op::sub: --sp; st[sp - 1].n -= st[sp].n; break;
      case Op::mul: --sp; st[sp - 1].n *= st[sp].n; break;
      case Op::div: --sp; st[sp - 1].n = st[sp].n == 0 ? 0 : st[sp - 1].n / st[sp].n; break;
      case Op::mod: --sp; st[sp - 1].n = st[sp].n == 0 ? 0 : std::fmod(st[sp - 1].n, st[sp].n); break;
      case Op::neg: st[sp - 1].n = -st[sp - 1].n; break;
      case Op::not_: st[sp - 1].b = !st[sp - 1].b; break;
#define MODELUX_CMP(OP, FIELD, EXPR) \
  case Op::OP: --sp; st[sp - 1].b = (st[sp - 1].FIELD EXPR st[sp].FIELD); break;
      MODELUX_CMP(eq_num, n, ==)
      MODELUX_CMP(ne_num, n, !=)
      MODELUX_CMP(lt, n, <)
      MODELUX_CMP(le, n, <=)
      MODELUX_CMP(gt, n, >)
      MODELUX_CMP(ge, n, >=)
      MODELUX_CMP(eq_str, s, ==)
      MODELUX_CMP(ne_str, s, !=)
      MODELUX_CMP(lt_str, s, <)
      MODELUX_CMP(le_str, s, <=)
      MODELUX_CMP(gt_str, s, >)
      MODELUX_CMP(ge_str, s, >=)
      MODELUX_CMP(eq_bool, b, ==)
      MODELUX_CMP(ne_bool, b, !=)
#undef MODELUX_CMP
      case Op::and_jump:
        if (!st[sp - 1].b) pc = in.a - 1u;
        else --sp;
        break;
      case Op::or_jump:
        if (st[sp - 1].b) pc = in.a - 1u;
        else --sp;
        break;
      case Op::in_str: {
        bool found = false;
        for (const auto& x : str_lists_[in.a])
          if (x == st[sp - 1].s) found = true;
        st[sp - 1] = Value{0, {}, found};
        break;
      }
      case Op::in_num: {
        bool found = false;
        for (double x : num_lists_[in.a])
          if (x == st[sp - 1].n) found = true;
        st[sp - 1] = Value{0, {}, found};
        break;
      }
      case Op::contains: --sp; st[sp - 1] = Value{0, {}, st[sp - 1].s.find(st[sp].s) != std::string_view::npos}; break;
      case Op::starts_with: --sp; st[sp - 1] = Value{0, {}, st[sp - 1].s.starts_with(st[sp].s)}; break;
      case Op::ends_with: --sp; st[sp - 1] = Value{0, {}, st[sp - 1].s.ends_with(st[sp].s)}; break;
      case Op::len: st[sp - 1] = Value{static_cast<double>(st[sp - 1].s.size()), {}, false}; break;
    }
  }
  return sp ? st[sp - 1] : Value{};
}

bool Expression::eval_bool(const EvalContext& c) const noexcept { return run(c).b; }
double Expression::eval_number(const EvalContext& c) const noexcept { return run(c).n; }

}  // namespace modelux::dsl
