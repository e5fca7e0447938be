// SPDX-License-Identifier: MIT
// Outputs are safe as root (issue 17, point 5): profctl writes where it is told, maybe into a
// directory another user owns. Symlinks and hard links planted there at the output names
// are replaced, never written through; `stack -o` refuses a symlink; a symlink of another
// user to the output directory is refused; and profile kinds read from a capture file never
// take `report` or `diff` outside -o. Each scenario here overwrote a root-only file before.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "support/capture.h"
#include "support/procfs.h"

namespace profctl::testing {
namespace {

// Owns the planted files, as an attacker would (nobody); root is needed to give them away.
constexpr uid_t kOtherUid = 65534;
const char* const kSecret = "root only: must never change\n";

bool is_root() { return ::geteuid() == 0; }

class ScratchDir {
 public:
  ScratchDir() {
    char tmpl[] = "/tmp/profctl-outputs-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    path_ = made != nullptr ? made : "";
  }
  ~ScratchDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool put(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  return static_cast<bool>(f);
}

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    out.insert(e.path().filename().string());
  }
  return out;
}

// Given away to the other user when we are root (a no-op otherwise: the scenario is then
// one user's own links, which profctl followed just the same).
void give_away(const std::string& path) {
  if (is_root()) {
    ASSERT_EQ(::lchown(path.c_str(), kOtherUid, kOtherUid), 0) << path;
  }
}

// A root-only file outside the output directory: DIR/secret/victim, 0600 in a 0700 dir.
std::string make_victim(const ScratchDir& s) {
  EXPECT_EQ(::mkdir((s / "secret").c_str(), 0700), 0);
  std::string victim = s / "secret/victim";
  EXPECT_TRUE(put(victim, kSecret));
  EXPECT_EQ(::chmod(victim.c_str(), 0600), 0);
  return victim;
}

// The victim still holds exactly kSecret (the message shows the start of what replaced it).
::testing::AssertionResult intact(const std::string& victim) {
  const std::string now = slurp(victim);
  if (now == kSecret) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "the root-only file " << victim << " was written (" << now.size() << " bytes now: '"
         << now.substr(0, 60) << "...')";
}

::testing::AssertionResult one_error_line(const RunResult& r, int code) {
  if (r.timed_out || r.exit_code != code) {
    return ::testing::AssertionFailure() << "expected exit " << code << ": " << r.describe();
  }
  if (r.err.empty() || r.err.back() != '\n' || r.err.find('\n') != r.err.size() - 1) {
    return ::testing::AssertionFailure() << "stderr is not exactly one line: " << r.describe();
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult regular_file_of_ours(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return ::testing::AssertionFailure() << path << " is missing";
  }
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != ::geteuid()) {
    return ::testing::AssertionFailure()
           << path << " is not a regular file of ours with one link (mode " << std::oct
           << st.st_mode << std::dec << ", links " << st.st_nlink << ", uid " << st.st_uid << ")";
  }
  return ::testing::AssertionSuccess();
}

// Every file `attach -o DIR` writes with the default profiles and formats.
std::vector<std::string> attach_output_names() {
  std::vector<std::string> names = {"capture.json", "stacks.txt"};
  for (const char* kind : {"cpu", "wall", "threadcreate", "threads"}) {
    for (const char* ext : {".pb.gz", ".txt", ".folded", ".html"}) {
      names.push_back(std::string(kind) + ext);
    }
  }
  return names;
}

// `attach -o DIR` where DIR belongs to another user who planted a symlink to a root-only file
// at every output name (a hard link at one): the file keeps its bytes, and every output is
// a regular file of ours in DIR. Before, profctl truncated and rewrote the file 21 times.
TEST(OutputSafety, AttachReplacesPlantedLinksAndNeverWritesThroughThem) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  ScratchDir s;
  ASSERT_FALSE(s.path().empty());
  const std::string victim = make_victim(s);
  const std::string out = s / "out";
  ASSERT_EQ(::mkdir(out.c_str(), 0755), 0);
  give_away(out);
  const std::vector<std::string> names = attach_output_names();
  for (const std::string& name : names) {
    if (name == "cpu.txt") {
      ASSERT_EQ(::link(victim.c_str(), (out + "/" + name).c_str()), 0);
    } else {
      ASSERT_EQ(::symlink(victim.c_str(), (out + "/" + name).c_str()), 0);
      give_away(out + "/" + name);
    }
  }
  const RunResult r =
      profctl({"attach", std::to_string(target.pid()), "-d", "300ms", "-o", out}, {});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(intact(victim)) << "written through a planted link";
  for (const std::string& name : names) {
    EXPECT_TRUE(regular_file_of_ours(out + "/" + name));
  }
  EXPECT_EQ(listing(out).size(), names.size()) << "a temporary file was left behind";
  EXPECT_TRUE(parse_capture(slurp(out + "/capture.json"), target.pid()).has_value());
  EXPECT_TRUE(untouched(target.pid()));
  EXPECT_EQ(target.command("ping"), "pong");
}

// `stack -o FILE`: a symlink there is refused (replacing it would not be what its owner meant;
// following it wrote a root-only file before); a hard link there is replaced, its other name
// unchanged; a new name is a regular file.
TEST(OutputSafety, StackOutputNeverWritesThroughALink) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  ScratchDir s;
  ASSERT_FALSE(s.path().empty());
  const std::string victim = make_victim(s);
  const std::string out = s / "out";
  ASSERT_EQ(::mkdir(out.c_str(), 0755), 0);
  give_away(out);
  const std::string pid = std::to_string(target.pid());

  const std::string link = out + "/stacks.txt";
  ASSERT_EQ(::symlink(victim.c_str(), link.c_str()), 0);
  give_away(link);
  RunResult r = profctl({"stack", pid, "-o", link});
  EXPECT_TRUE(one_error_line(r, 1));
  EXPECT_NE(r.err.find(link), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("symlink"), std::string::npos) << r.describe();
  EXPECT_TRUE(intact(victim)) << "written through a symlink";
  struct stat st {};
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode)) << "the refused symlink was changed";

  const std::string hard = out + "/hard.txt";
  ASSERT_EQ(::link(victim.c_str(), hard.c_str()), 0);
  r = profctl({"stack", pid, "-o", hard});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(intact(victim)) << "written through a hard link";
  EXPECT_TRUE(regular_file_of_ours(hard));
  EXPECT_NE(slurp(hard).find("#0  "), std::string::npos) << slurp(hard);

  r = profctl({"stack", pid, "-o", out + "/new.txt"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(regular_file_of_ours(out + "/new.txt"));
  EXPECT_EQ(listing(out), (std::set<std::string>{"stacks.txt", "hard.txt", "new.txt"}))
      << "a temporary file was left behind";
  EXPECT_TRUE(untouched(target.pid()));
  EXPECT_EQ(target.command("ping"), "pong");
}

// -o DIR where DIR is a symlink another user planted, pointing at a root-only directory: exit
// 1 with one line before anything is attached, nothing written there. A symlink of our own
// is followed as always.
TEST(OutputSafety, AnotherUsersSymlinkAsTheOutputDirectoryIsRefused) {
  PROFCTL_REQUIRE_PROFCTL();
  if (!is_root()) {
    GTEST_SKIP() << "needs root to plant a symlink owned by another user";
  }
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  ScratchDir s;
  ASSERT_FALSE(s.path().empty());
  make_victim(s);
  ASSERT_EQ(::mkdir((s / "home").c_str(), 0755), 0);
  give_away(s / "home");
  const std::string link = s / "home/out";
  ASSERT_EQ(::symlink((s / "secret").c_str(), link.c_str()), 0);
  give_away(link);
  const std::string pid = std::to_string(target.pid());
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"attach", pid, "-d", "60s", "-o", link},
        std::vector<std::string>{"attach", pid, "-d", "60s", "-o", link + "/sub"},
        std::vector<std::string>{"stack", pid, "-o", link + "/stacks.txt"}}) {
    RunOptions options;
    options.timeout = milliseconds(20000);  // a 60 s capture would time out: it never starts
    const RunResult r = profctl(args, options);
    EXPECT_TRUE(one_error_line(r, 1)) << args.back();
    EXPECT_NE(r.err.find("symlink owned by uid 65534"), std::string::npos) << r.describe();
    EXPECT_EQ(listing(s / "secret"), std::set<std::string>{"victim"});
    EXPECT_TRUE(untouched(target.pid()));
  }
  const std::string own = s / "own-link";
  ASSERT_EQ(::mkdir((s / "real").c_str(), 0755), 0);
  ASSERT_EQ(::symlink((s / "real").c_str(), own.c_str()), 0);
  const RunResult r = profctl({"stack", pid, "-o", own + "/stacks.txt"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(regular_file_of_ours(s / "real/stacks.txt"));
  EXPECT_EQ(target.command("ping"), "pong");
}

// A real capture whose profile kind was edited to "../x/pwned": `report -o OUT` and
// `diff -o OUT` refuse it (exit 1, one line) and write nothing outside OUT. Before, they wrote
// x/pwned.txt (and x/pwned.base.pb.gz) beside OUT. A kind with a newline and an escape
// sequence is named in one printable line; a new but plain kind is still rendered.
TEST(OutputSafety, ProfileKindsFromACaptureNeverLeaveTheOutputDirectory) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  ScratchDir s;
  ASSERT_FALSE(s.path().empty());
  RunResult r = profctl({"attach", std::to_string(target.pid()), "-d", "200ms", "--profiles", "cpu",
                         "--format", "json", "-o", s / "cap"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  Json capture = Json::parse(slurp(s / "cap/capture.json"));
  ASSERT_TRUE(capture["profiles"].contains("cpu"));
  const Json cpu = capture["profiles"]["cpu"];
  auto with_kind = [&](const std::string& kind, const std::string& file) {
    Json c = capture;
    c["profiles"] = Json::object({{kind, cpu}});
    ASSERT_TRUE(put(file, c.dump()));
  };
  with_kind("../x/pwned", s / "evil.json");
  with_kind("line\nbreak\x1b[31m", s / "escape.json");
  with_kind("custom_kind", s / "plain.json");
  // Where a write outside OUT would land, made so that it would succeed.
  ASSERT_EQ(::mkdir((s / "x").c_str(), 0755), 0);

  const std::set<std::string> before = listing(s.path());
  const std::vector<std::vector<std::string>> cases = {
      {"report", s / "evil.json", "-o", s / "rep", "--format", "all"},
      {"diff", s / "evil.json", s / "evil.json", "-o", s / "dif"},
      {"report", s / "escape.json", "-o", s / "rep2", "--format", "all"},
      {"diff", s / "escape.json", s / "escape.json", "-o", s / "dif2"},
  };
  for (const auto& args : cases) {
    SCOPED_TRACE(args[0] + " " + args[1]);
    r = profctl(args);
    EXPECT_TRUE(one_error_line(r, 1));
    EXPECT_NE(r.err.find("cannot be a file name"), std::string::npos) << r.describe();
    EXPECT_TRUE(r.err.find("'../x/pwned'") != std::string::npos ||
                r.err.find("'line\\x0abreak\\x1b[31m'") != std::string::npos)
        << r.describe();
    const std::string out = args[args[0] == "report" ? 3 : 4];
    std::set<std::string> expected = before;
    for (const auto& c : cases) {
      if (&c <= &args) {
        expected.insert(std::filesystem::path(c[c[0] == "report" ? 3 : 4]).filename().string());
      }
    }
    EXPECT_EQ(listing(s.path()), expected) << "a file was written beside -o";
    EXPECT_TRUE(listing(s / "x").empty()) << "a file was written outside -o";
    EXPECT_TRUE(listing(out).empty()) << "a refused capture half written";
  }
  r = profctl({"report", s / "plain.json", "-o", s / "ok", "--format", "text"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(regular_file_of_ours(s / "ok/custom_kind.txt"));
}

}  // namespace
}  // namespace profctl::testing
