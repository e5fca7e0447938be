// SPDX-License-Identifier: MIT
// Functions by the names people type (report/function_match.h): the names below are as the
// demangler prints them in profctl's reports.
#include <gtest/gtest.h>

#include "report/function_match.h"

namespace profctl {
namespace {

const std::vector<std::string> kNames = {
    "acc_cpu_hot(int)",
    "work::Engine::step(long) const",
    "work::Engine::operator()(int)",
    "a::helper()",
    "b::helper()",
    "void spin<3>()",
    "void spin<5>()",
    "overloaded(int)",
    "overloaded(double)",
    "std::vector<int, std::allocator<int> >::push_back(int const&)",
    "bool operator< <int>(Box<int> const&, Box<int> const&)",
    "(anonymous namespace)::local_fn()",
    "cold_path(int) [clone .cold]",
    "work_fifty",
    "sort+0x4d20",
    "main",
    "domain()",
};

FunctionPattern pattern(const std::string& text) {
  auto p = FunctionPattern::parse(text);
  EXPECT_TRUE(p) << text << ": " << (p ? "" : p.error().message());
  return p ? *p : *FunctionPattern::parse("?");
}

std::vector<std::string> names(const std::string& text) {
  const FunctionPattern::Resolution r = pattern(text).resolve(kNames);
  EXPECT_TRUE(r.candidates.empty()) << text << " is ambiguous";
  return r.names;
}

std::vector<std::string> candidates(const std::string& text) {
  const FunctionPattern::Resolution r = pattern(text).resolve(kNames);
  EXPECT_TRUE(r.names.empty()) << text << " resolved to " << r.names.size() << " names";
  return r.candidates;
}

using V = std::vector<std::string>;

TEST(FunctionMatch, ABareNameIsTheFunctionWhateverItsParameters) {
  EXPECT_EQ(names("acc_cpu_hot"), V{"acc_cpu_hot(int)"});
  EXPECT_EQ(names("step"), V{"work::Engine::step(long) const"});
  EXPECT_EQ(names("cold_path"), V{"cold_path(int) [clone .cold]"});
  EXPECT_EQ(names("local_fn"), V{"(anonymous namespace)::local_fn()"});
  EXPECT_EQ(names("push_back"), V{"std::vector<int, std::allocator<int> >::push_back(int const&)"});
}

TEST(FunctionMatch, NamespacesMayBeGivenInPartOrInFull) {
  EXPECT_EQ(names("Engine::step"), V{"work::Engine::step(long) const"});
  EXPECT_EQ(names("work::Engine::step"), V{"work::Engine::step(long) const"});
  EXPECT_EQ(names("a::helper"), V{"a::helper()"});
  EXPECT_EQ(names("(anonymous namespace)::local_fn"), V{"(anonymous namespace)::local_fn()"});
  // Only at a scope boundary: "ngine::step" is not a name of Engine::step, "main" not of
  // "domain()".
  EXPECT_TRUE(names("ngine::step").empty());
  EXPECT_EQ(names("main"), V{"main"});
  EXPECT_TRUE(names("omain").empty());
}

TEST(FunctionMatch, AParameterListNarrowsItAndQualifiersMayBeLeftOut) {
  EXPECT_EQ(names("acc_cpu_hot()"), V{});
  EXPECT_EQ(names("acc_cpu_hot(int)"), V{"acc_cpu_hot(int)"});
  EXPECT_EQ(names("overloaded(double)"), V{"overloaded(double)"});
  EXPECT_EQ(names("Engine::step(long)"), V{"work::Engine::step(long) const"});
  EXPECT_EQ(names("step(long) const"), V{"work::Engine::step(long) const"});
  EXPECT_EQ(names("Engine::operator()(int)"), V{"work::Engine::operator()(int)"});
  EXPECT_EQ(names("operator()"), V{"work::Engine::operator()(int)"});
}

TEST(FunctionMatch, OverloadsAndInstantiationsOfOneNameAreThatFunction) {
  EXPECT_EQ(names("overloaded"), (V{"overloaded(double)", "overloaded(int)"}));
  EXPECT_EQ(names("spin"), (V{"void spin<3>()", "void spin<5>()"}));
  EXPECT_EQ(names("spin<3>"), V{"void spin<3>()"});
  EXPECT_EQ(names("operator<"), V{"bool operator< <int>(Box<int> const&, Box<int> const&)"});
}

TEST(FunctionMatch, ExactNamesWinAsBefore) {
  EXPECT_EQ(names("work_fifty"), V{"work_fifty"});
  EXPECT_EQ(names("sort+0x4d20"), V{"sort+0x4d20"});
  EXPECT_EQ(names("a::helper()"), V{"a::helper()"});
  EXPECT_TRUE(names("sort").empty());  // a module is not a function
}

TEST(FunctionMatch, TwoFunctionsOfOneNameAreAmbiguous) {
  EXPECT_EQ(candidates("helper"), (V{"a::helper()", "b::helper()"}));
  EXPECT_EQ(candidates("helper()"), (V{"a::helper()", "b::helper()"}));
  const FunctionPattern p = pattern("helper");
  const std::string m = ambiguity_message(p, candidates("helper"));
  EXPECT_EQ(m,
            "'helper' matches 2 functions: a::helper(), b::helper(); give one as the reports "
            "print it (e.g. 'a::helper()'), or /REGEX/ for all it matches");
  EXPECT_EQ(
      ambiguity_message(p, V{"a", "b", "c"}, 2).find("a, b, and 1 more;") != std::string::npos,
      true);
}

TEST(FunctionMatch, ARegexIsASearchAsPprofFocusAndNeverAmbiguous) {
  EXPECT_EQ(names("/helper/"), (V{"a::helper()", "b::helper()"}));
  EXPECT_EQ(names("/^work_/"), V{"work_fifty"});
  EXPECT_EQ(names("/^spin|spin<5>/"), V{"void spin<5>()"});
  EXPECT_TRUE(names("/nothing here/").empty());
  auto bad = FunctionPattern::parse("/(unclosed/");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("is not a regular expression"), std::string::npos);
  EXPECT_FALSE(FunctionPattern::parse("  "));
}

}  // namespace
}  // namespace profctl
