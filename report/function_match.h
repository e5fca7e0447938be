// SPDX-License-Identifier: MIT
// Functions by the names people type: what --fail-if (and any filter on functions) uses to
// find the functions of a report. Reports print C++ functions as the demangler does
// ("ns::Engine::step(long) const", "void spin<3>()"), people type "step", "Engine::step",
// "acc_cpu_hot" or a regular expression, as pprof's -focus and perf's filters take them.
#pragma once

#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace profctl {

// What a pattern denotes among a report's function names:
//   "/REGEX/"   every name the ECMAScript regular expression finds a match in (as pprof's
//               -focus: a search, not a whole-name match); never ambiguous.
//   a name that is printed exactly as given: that name only (module+offset names included).
//   "NAME"      (no parameter list) every C++ function whose qualified name is NAME or ends
//               in "::NAME", whatever its parameter list, qualifiers ("const"), return type or
//               GCC clone suffix; template arguments may be left out ("spin" for spin<3>).
//   "NAME(...)" the same with the parameter list as printed; trailing qualifiers may be left
//               out.
// A NAME that fits functions of two different qualified names (a::helper and b::helper) is
// ambiguous; overloads of one qualified name are one function for it.
class FunctionPattern {
 public:
  // Fails on an empty pattern or a regular expression that does not compile.
  static Result<FunctionPattern> parse(std::string_view text);

  const std::string& text() const { return text_; }
  bool is_regex() const { return regex_; }

  struct Resolution {
    std::vector<std::string> names;       // the names it denotes, sorted, distinct
    std::vector<std::string> candidates;  // non-empty when ambiguous: one name per function
  };
  // The names among `names` (any order, duplicates allowed) that the pattern denotes.
  Resolution resolve(const std::vector<std::string>& names) const;

 private:
  std::string text_;
  bool regex_ = false;
  std::regex re_;
};

// "'f' matches 3 functions: a::f(), b::f(int), c::f(); ..." in one line, at most `limit`
// candidates named.
std::string ambiguity_message(const FunctionPattern& p, const std::vector<std::string>& candidates,
                              size_t limit = 8);

}  // namespace profctl
