// SPDX-License-Identifier: MIT
#include "report/function_match.h"

#include <algorithm>
#include <cctype>
#include <set>

namespace profctl {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) {
    s.remove_prefix(1);
  }
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) {
    s.remove_suffix(1);
  }
  return s;
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// GCC's clones print as "f(int) [clone .isra.0] [clone .cold]": the same source function.
std::string_view strip_clones(std::string_view s) {
  s = trim(s);
  while (ends_with(s, "]")) {
    const size_t open = s.rfind(" [clone ");
    if (open == std::string_view::npos) {
      break;
    }
    s = trim(s.substr(0, open));
  }
  return s;
}

// "f(int) const &" -> "f(int)": what follows a member function's parameter list.
std::string_view strip_qualifiers(std::string_view s) {
  static constexpr std::string_view kTails[] = {"const", "volatile", "noexcept", "&&", "&"};
  bool again = true;
  while (again) {
    again = false;
    s = trim(s);
    for (std::string_view t : kTails) {
      if (ends_with(s, t) && s.size() > t.size()) {
        const char before = s[s.size() - t.size() - 1];
        // A word ends at a space or ')'; "&" also right after a word ("const&").
        if (before == ' ' || before == ')' || (t.front() == '&' && before != '&')) {
          s.remove_suffix(t.size());
          again = true;
          break;
        }
      }
    }
  }
  return s;
}

// "ns::f(int, g(x))" -> "ns::f"; a name without a parameter list unchanged. Parentheses are
// matched from the end, so "operator()(int)" keeps its own "()" and "f<void (*)(int)>(x)"
// its template argument.
std::string_view strip_params(std::string_view s) {
  if (!ends_with(s, ")")) {
    return s;
  }
  int depth = 0;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] == ')') {
      ++depth;
    } else if (s[i] == '(' && --depth == 0) {
      return i == 0 ? s : trim(s.substr(0, i));
    }
  }
  return s;
}

// The Itanium ABI tag of a name: "f[abi:cxx11]".
std::string_view strip_abi_tags(std::string_view s) {
  while (ends_with(s, "]")) {
    const size_t open = s.rfind("[abi:");
    if (open == std::string_view::npos || open == 0) {
      break;
    }
    s = s.substr(0, open);
  }
  return s;
}

// An operator's name ("operator<", "operator->*"): its '<' and '>' are not brackets.
bool is_operator_name(std::string_view s) {
  const size_t op = s.rfind("operator");
  if (op == std::string_view::npos) {
    return false;
  }
  const std::string_view rest = trim(s.substr(op + 8));
  return !rest.empty() && std::none_of(rest.begin(), rest.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  });
}

// "void spin<3>" -> "void spin": the template arguments at the end of a name.
std::string_view strip_template_args(std::string_view s) {
  if (!ends_with(s, ">") || is_operator_name(s)) {
    return s;
  }
  int depth = 0;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] == '>') {
      ++depth;
    } else if (s[i] == '<' && --depth == 0) {
      return i == 0 ? s : trim(s.substr(0, i));
    }
  }
  return s;
}

// "void ns::spin<3>" -> "ns::spin<3>": a template function's return type, which the
// demangler prints first. Names with an operator are left whole (their spaces and brackets
// are not separators).
std::string_view strip_return_type(std::string_view s) {
  if (s.find("operator") != std::string_view::npos) {
    return s;
  }
  int depth = 0;
  size_t last_space = std::string_view::npos;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '<' || c == '(') {
      ++depth;
    } else if ((c == '>' || c == ')') && depth > 0) {
      --depth;
    } else if (c == ' ' && depth == 0) {
      last_space = i;
    }
  }
  return last_space == std::string_view::npos ? s : s.substr(last_space + 1);
}

// `key` is `typed`, or ends with it after a scope ("ns::typed") or a return type
// ("void typed").
bool names_it(std::string_view key, std::string_view typed) {
  if (key == typed) {
    return true;
  }
  if (key.size() <= typed.size() || !ends_with(key, typed)) {
    return false;
  }
  const size_t at = key.size() - typed.size();
  return key[at - 1] == ' ' || (at >= 2 && key[at - 1] == ':' && key[at - 2] == ':');
}

// The function `name` is, as `typed` (no regex, not printed exactly) denotes it; empty when
// `typed` does not denote it. Overloads of one function give one key.
std::string function_of(std::string_view name, std::string_view typed) {
  const std::string_view whole = strip_clones(name);
  const std::string_view unqualified = strip_qualifiers(whole);
  const std::string_view typed_call = strip_qualifiers(typed);
  // A parameter list was typed: "f(int)", "operator()(int)", but not "operator()" alone.
  if (ends_with(typed_call, ")") && !ends_with(strip_params(typed_call), "operator")) {
    if (names_it(whole, typed) || names_it(unqualified, typed)) {
      return std::string(strip_return_type(unqualified));
    }
    return {};
  }
  const std::string_view base = strip_abi_tags(strip_params(unqualified));
  if (names_it(base, typed)) {
    return std::string(strip_return_type(base));
  }
  const std::string_view generic = strip_template_args(base);
  if (generic != base && names_it(generic, typed)) {
    return std::string(strip_return_type(generic));
  }
  return {};
}

}  // namespace

Result<FunctionPattern> FunctionPattern::parse(std::string_view text) {
  FunctionPattern p;
  const std::string_view t = trim(text);
  p.text_ = std::string(t);
  if (t.empty()) {
    return Error{"no function name"};
  }
  if (t.size() >= 2 && t.front() == '/' && t.back() == '/') {
    p.regex_ = true;
    try {
      p.re_ = std::regex(std::string(t.substr(1, t.size() - 2)), std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return Error{"'" + p.text_ + "' is not a regular expression (" + e.what() + ")"};
    }
  }
  return p;
}

FunctionPattern::Resolution FunctionPattern::resolve(const std::vector<std::string>& names) const {
  Resolution r;
  const std::set<std::string> distinct(names.begin(), names.end());
  if (regex_) {
    // libstdc++'s matcher recurses about once per character: a name from a hostile or
    // corrupt capture file is not searched past a length no demangled name reaches.
    constexpr size_t kMaxSearched = 16384;
    for (const std::string& n : distinct) {
      if (n.size() <= kMaxSearched && std::regex_search(n, re_)) {
        r.names.push_back(n);
      }
    }
    return r;
  }
  if (distinct.count(text_) != 0) {  // printed exactly so: that one, as before
    r.names.push_back(text_);
    return r;
  }
  std::set<std::string> functions;
  for (const std::string& n : distinct) {
    if (std::string key = function_of(n, text_); !key.empty()) {
      r.names.push_back(n);
      functions.insert(std::move(key));
    }
  }
  if (functions.size() > 1) {
    r.candidates = r.names;
    r.names.clear();
  }
  return r;
}

std::string ambiguity_message(const FunctionPattern& p, const std::vector<std::string>& candidates,
                              size_t limit) {
  std::string s =
      "'" + p.text() + "' matches " + std::to_string(candidates.size()) + " functions: ";
  for (size_t i = 0; i < candidates.size() && i < limit; ++i) {
    s += (i == 0 ? "" : ", ") + candidates[i];
  }
  if (candidates.size() > limit) {
    s += ", and " + std::to_string(candidates.size() - limit) + " more";
  }
  s += "; give one as the reports print it (e.g. '" + candidates.front() +
       "'), or /REGEX/ for all it matches";
  return s;
}

}  // namespace profctl
