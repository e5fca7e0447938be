// SPDX-License-Identifier: MIT
// --fail-if expressions: parsing (what each form means, and one clear error per mistake) and
// evaluation against a hand-made diff.
#include <gtest/gtest.h>

#include <cmath>

#include "report/fail_if.h"

namespace profctl {
namespace {

Gate parsed(const std::string& text) {
  auto g = parse_gate(text);
  EXPECT_TRUE(g) << text << ": " << (g ? "" : g.error().message());
  return g ? *g : Gate{};
}

std::string error_of(const std::string& text) {
  auto g = parse_gate(text);
  EXPECT_FALSE(g) << text << " should not parse";
  return g ? "" : g.error().message();
}

TEST(FailIfParse, FunctionTotalInPercent) {
  Gate g = parsed("cpu:work_fifty>+10%");
  EXPECT_EQ(g.kind, "cpu");
  EXPECT_EQ(g.type, "");
  EXPECT_EQ(g.subject, Gate::Subject::kFunctionTotal);
  EXPECT_EQ(g.function, "work_fifty");
  EXPECT_TRUE(g.greater);
  EXPECT_FALSE(g.or_equal);
  EXPECT_EQ(g.measure, Gate::Measure::kPercent);
  EXPECT_DOUBLE_EQ(g.threshold, 10);
}

TEST(FailIfParse, KindWithSampleTypeAndTotal) {
  Gate g = parsed("heap.inuse_space:total>+20%");
  EXPECT_EQ(g.kind, "heap");
  EXPECT_EQ(g.type, "inuse_space");
  EXPECT_EQ(g.subject, Gate::Subject::kTotal);
  EXPECT_DOUBLE_EQ(g.threshold, 20);
}

TEST(FailIfParse, AbsoluteUnitsBecomeTheTypesBaseUnit) {
  Gate ms = parsed("cpu:total>+5ms");
  EXPECT_EQ(ms.measure, Gate::Measure::kAbsolute);
  EXPECT_EQ(ms.unit_class, Gate::UnitClass::kTime);
  EXPECT_DOUBLE_EQ(ms.threshold, 5e6);
  Gate mib = parsed("heap:total > +1MiB");
  EXPECT_EQ(mib.unit_class, Gate::UnitClass::kBytes);
  EXPECT_DOUBLE_EQ(mib.threshold, 1024.0 * 1024);
  Gate s = parsed("wall:f>1.5s");
  EXPECT_DOUBLE_EQ(s.threshold, 1.5e9);
  Gate plain = parsed("threadcreate:total>100");
  EXPECT_EQ(plain.measure, Gate::Measure::kAbsolute);
  EXPECT_EQ(plain.unit_class, Gate::UnitClass::kNone);
  EXPECT_DOUBLE_EQ(plain.threshold, 100);
}

TEST(FailIfParse, PointsSelfAndOtherOperators) {
  Gate g = parsed("cpu:self:memcpy>=+2.5pp");
  EXPECT_EQ(g.subject, Gate::Subject::kFunctionSelf);
  EXPECT_EQ(g.function, "memcpy");
  EXPECT_EQ(g.measure, Gate::Measure::kPoints);
  EXPECT_TRUE(g.or_equal);
  EXPECT_DOUBLE_EQ(g.threshold, 2.5);
  Gate less = parsed("cpu:total<-10%");
  EXPECT_FALSE(less.greater);
  EXPECT_DOUBLE_EQ(less.threshold, -10);
}

TEST(FailIfParse, CppNamesKeepTheirColonsAndAngleBrackets) {
  Gate g = parsed("cpu:std::vector<int, std::allocator<int> >::push_back(int const&)>+10%");
  EXPECT_EQ(g.function, "std::vector<int, std::allocator<int> >::push_back(int const&)");
  EXPECT_DOUBLE_EQ(g.threshold, 10);
  Gate self = parsed("cpu:self:ns::f<a>()<=-3ms");
  EXPECT_EQ(self.function, "ns::f<a>()");
  EXPECT_FALSE(self.greater);
  EXPECT_DOUBLE_EQ(self.threshold, -3e6);
}

TEST(FailIfParse, MistakesAreOneClearLine) {
  EXPECT_NE(error_of("cpu").find("no ':'"), std::string::npos);
  EXPECT_NE(error_of("cpu:f").find("no comparison"), std::string::npos);
  EXPECT_NE(error_of("cpu:f>+10 parsecs").find("no comparison"), std::string::npos);
  EXPECT_NE(error_of("cpu:f>abc").find("no comparison"), std::string::npos);
  EXPECT_NE(error_of("cpu:>+10%").find("no subject"), std::string::npos);
  EXPECT_NE(error_of(":f>+10%").find("not a profile kind"), std::string::npos);
  EXPECT_NE(error_of("cpu:self:>+10%").find("no function"), std::string::npos);
  EXPECT_NE(error_of("heap.:total>1").find("not a sample type"), std::string::npos);
  for (const char* text : {"cpu", "cpu:f>", "cpu:f=10%"}) {
    const std::string e = error_of(text);
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_NE(e.find("expected KIND[.TYPE]:SUBJECT OP THRESHOLD"), std::string::npos) << e;
  }
}

// cpu: f doubled (100 -> 200 of 1000 -> 1100 ns), g unchanged, h new.
CaptureDiff small_diff() {
  CaptureDiff d;
  TypeDiff t;
  t.type = {"cpu", "nanoseconds"};
  t.total = diff_value(1000, 1100, 1, 1000, 1100);
  t.functions = {
      {"f", "app", diff_value(100, 200, 1, 1000, 1100), diff_value(100, 200, 1, 1000, 1100)},
      {"g", "app", diff_value(900, 800, 1, 1000, 1100), diff_value(900, 800, 1, 1000, 1100)},
      {"h", "app", diff_value(0, 100, 1, 1000, 1100), diff_value(0, 100, 1, 1000, 1100)}};
  KindDiff k;
  k.kind = "cpu";
  k.types = {t};
  d.kinds = {k};
  return d;
}

GateResult eval(const std::string& text) {
  auto r = evaluate_gate(parsed(text), small_diff());
  EXPECT_TRUE(r) << text << ": " << (r ? "" : r.error().message());
  return r ? *r : GateResult{};
}

TEST(FailIfEvaluate, PercentOfTheBase) {
  GateResult r = eval("cpu:f>+10%");
  EXPECT_TRUE(r.crossed);
  EXPECT_DOUBLE_EQ(r.observed, 100);
  EXPECT_EQ(r.message, "cpu:f>+10%: f total 100ns -> 200ns (+100.00%, +8.18pp)");
  EXPECT_FALSE(eval("cpu:f>+100%").crossed);
  EXPECT_TRUE(eval("cpu:f>=+100%").crossed);
  EXPECT_FALSE(eval("cpu:g>+1%").crossed);
  EXPECT_TRUE(eval("cpu:g<-10%").crossed);  // -11.1%
  EXPECT_TRUE(eval("cpu:total>+9%").crossed);
  EXPECT_FALSE(eval("cpu:total>+10%").crossed);
}

TEST(FailIfEvaluate, ANewFunctionIsAnInfiniteRise) {
  GateResult r = eval("cpu:h>+1000%");
  EXPECT_TRUE(r.crossed);
  EXPECT_TRUE(std::isinf(r.observed));
  EXPECT_NE(r.message.find("(new,"), std::string::npos) << r.message;
}

TEST(FailIfEvaluate, AbsoluteAndPoints) {
  EXPECT_TRUE(eval("cpu:f>+99ns").crossed);
  EXPECT_FALSE(eval("cpu:f>+100ns").crossed);
  EXPECT_TRUE(eval("cpu:self:f>+8pp").crossed);  // 10% -> 18.18%
  EXPECT_FALSE(eval("cpu:self:f>+8.2pp").crossed);
}

TEST(FailIfEvaluate, WhatCannotBeEvaluatedIsAnError) {
  auto no_kind = evaluate_gate(parsed("heap:total>1%"), small_diff());
  ASSERT_FALSE(no_kind);
  EXPECT_NE(no_kind.error().message().find("no 'heap' profile"), std::string::npos);
  auto no_type = evaluate_gate(parsed("cpu.alloc_space:total>1%"), small_diff());
  ASSERT_FALSE(no_type);
  EXPECT_NE(no_type.error().message().find("it has cpu"), std::string::npos);
  auto no_function = evaluate_gate(parsed("cpu:typo>1%"), small_diff());
  ASSERT_FALSE(no_function);
  EXPECT_NE(no_function.error().message().find("no function 'typo'"), std::string::npos);
  auto wrong_unit = evaluate_gate(parsed("cpu:f>1MiB"), small_diff());
  ASSERT_FALSE(wrong_unit);
  EXPECT_NE(wrong_unit.error().message().find("in nanoseconds"), std::string::npos);
}

// C++ names as the reports print them: ns::f(int) calls ns::f(double) in one stack, so the
// two overloads together are that stack once, not twice; a::g() and b::g() share a name.
CaptureDiff cxx_diff() {
  TypeDiff t;
  t.type = {"cpu", "nanoseconds"};
  auto v = [](double b, double n) { return diff_value(b, n, 1, 1000, 1200); };
  t.total = v(1000, 1200);
  t.functions = {{"ns::f(int)", "app", v(0, 0), v(300, 500)},
                 {"ns::f(double)", "app", v(300, 500), v(300, 500)},
                 {"a::g()", "app", v(200, 200), v(200, 200)},
                 {"b::g()", "app", v(500, 500), v(500, 500)}};
  t.stacks = {{{"main", "ns::f(int)", "ns::f(double)"}, v(300, 500)},
              {{"main", "a::g()"}, v(200, 200)},
              {{"main", "b::g()"}, v(500, 500)}};
  KindDiff k;
  k.kind = "cpu";
  k.types = {t};
  CaptureDiff d;
  d.kinds = {k};
  return d;
}

Result<GateResult> eval_cxx(const std::string& text) {
  return evaluate_gate(parsed(text), cxx_diff());
}

TEST(FailIfEvaluate, ABareCxxNameIsTheFunctionWhateverItsParameters) {
  auto r = eval_cxx("cpu:a::g>+0%");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->message, "cpu:a::g>+0%: a::g total 200ns -> 200ns (+0.00%, -3.33pp)");
  auto f = eval_cxx("cpu:f>+50%");  // both overloads: 300 -> 500 once, not 600 -> 1000
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_TRUE(f->crossed);
  EXPECT_NEAR(f->observed, 66.67, 0.01);
  EXPECT_NE(f->message.find("f total 300ns -> 500ns"), std::string::npos) << f->message;
  auto self = eval_cxx("cpu:self:ns::f>+0%");
  ASSERT_TRUE(self) << self.error().message();
  EXPECT_NE(self->message.find("300ns -> 500ns"), std::string::npos) << self->message;
  auto one = eval_cxx("cpu:self:f(int)>+0%");  // never the leaf
  ASSERT_TRUE(one) << one.error().message();
  EXPECT_NE(one->message.find("0 -> 0"), std::string::npos) << one->message;
}

TEST(FailIfEvaluate, AnAmbiguousNameListsTheCandidatesInOneLine) {
  auto r = eval_cxx("cpu:g>+10%");
  ASSERT_FALSE(r);
  const std::string m = r.error().message();
  EXPECT_EQ(m,
            "--fail-if 'cpu:g>+10%': 'g' matches 2 functions: a::g(), b::g(); give one as the "
            "reports print it (e.g. 'a::g()'), or /REGEX/ for all it matches");
}

TEST(FailIfEvaluate, ARegexSumsEveryStackItMatchesOnce) {
  auto r = eval_cxx("cpu:/::(f|g)\\(/>+0%");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_NE(r->message.find("total 1.00us -> 1.20us (+20.00%"), std::string::npos) << r->message;
  EXPECT_FALSE(parse_gate("cpu:/(/>+1%"));
}

}  // namespace
}  // namespace profctl
