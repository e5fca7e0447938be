// SPDX-License-Identifier: MIT
// base/safe_file.h: which names a capture may give a file, and OutputDir in a real scratch
// directory: planted symlinks and hard links are replaced, never written through; a symlink
// of another user on the way to the directory is refused.
#include "base/safe_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace profctl {
namespace {

// A uid that is neither root nor us, for symlinks "another user" planted (needs root).
constexpr uid_t kOtherUid = 65534;

class Scratch {
 public:
  Scratch() {
    char tmpl[] = "/tmp/profctl-safe-file-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    path_ = made != nullptr ? made : "";
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
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

void put(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.insert(e.path().filename().string());
  }
  return out;
}

TEST(SafeFileStem, ProfctlsKindsAreFileNames) {
  for (const char* kind : {"cpu", "wall", "threadcreate", "threads", "heap", "block", "mutex",
                           "mutex_holders", "a.b", "x-1", "K9"}) {
    EXPECT_TRUE(is_safe_file_stem(kind)) << kind;
  }
  EXPECT_TRUE(is_safe_file_stem(std::string(64, 'a')));
}

TEST(SafeFileStem, NamesThatLeaveTheDirectoryOrHideAreRefused) {
  for (const std::string kind :
       {"", ".", "..", "../x/pwned", "../../etc/passwd", "a/b", "/abs", ".hidden", "-rf", "a b",
        "a\nb", "tab\t", "caf\xc3\xa9", "back\\slash"}) {
    EXPECT_FALSE(is_safe_file_stem(kind)) << printable_name(kind);
  }
  EXPECT_FALSE(is_safe_file_stem(std::string("a\0b", 3)));
  EXPECT_FALSE(is_safe_file_stem(std::string(65, 'a')));
}

TEST(SafeFileStem, PrintableNameIsOneBoundedLine) {
  EXPECT_EQ(printable_name("../x/pwned"), "../x/pwned");
  EXPECT_EQ(printable_name("a\nb\x1b[31m"), "a\\x0ab\\x1b[31m");
  EXPECT_EQ(printable_name(std::string("a\0\\", 3)), "a\\x00\\x5c");
  EXPECT_EQ(printable_name(std::string(100, 'z')), std::string(64, 'z') + "...");
}

TEST(SplitFilePath, DirectoryAndName) {
  EXPECT_EQ(split_file_path("a/b/c").dir, "a/b");
  EXPECT_EQ(split_file_path("a/b/c").name, "c");
  EXPECT_EQ(split_file_path("c").dir, ".");
  EXPECT_EQ(split_file_path("c").name, "c");
  EXPECT_EQ(split_file_path("/c").dir, "/");
  EXPECT_EQ(split_file_path("/c").name, "c");
  EXPECT_EQ(split_file_path("a/").name, "");
}

// A symlink at the name, pointing outside: the link is replaced by a regular file, the file
// it pointed at keeps its bytes. Before, profctl opened the name with O_TRUNC and wrote there.
TEST(OutputDir, ASymlinkAtTheNameIsReplacedNotFollowed) {
  Scratch s;
  ASSERT_FALSE(s.path().empty());
  put(s / "victim", "secret\n");
  ASSERT_EQ(::mkdir((s / "out").c_str(), 0755), 0);
  ASSERT_EQ(::symlink((s / "victim").c_str(), (s / "out/capture.json").c_str()), 0);
  auto dir = OutputDir::open(s / "out", false);
  ASSERT_TRUE(dir) << dir.error().message();
  auto r = dir->write_file("capture.json", "{}\n");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(slurp(s / "victim"), "secret\n");
  struct stat st {};
  ASSERT_EQ(::lstat((s / "out/capture.json").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(slurp(s / "out/capture.json"), "{}\n");
  EXPECT_EQ(listing(s / "out"), std::set<std::string>{"capture.json"}) << "a temporary was left";
}

// A hard link of another file at the name: its inode is never written.
TEST(OutputDir, AHardLinkAtTheNameIsReplacedNotWritten) {
  Scratch s;
  put(s / "victim", "secret\n");
  ASSERT_EQ(::mkdir((s / "out").c_str(), 0755), 0);
  ASSERT_EQ(::link((s / "victim").c_str(), (s / "out/cpu.txt").c_str()), 0);
  auto dir = OutputDir::open(s / "out", false);
  ASSERT_TRUE(dir) << dir.error().message();
  ASSERT_TRUE(dir->write_file("cpu.txt", "profile\n"));
  EXPECT_EQ(slurp(s / "victim"), "secret\n");
  EXPECT_EQ(slurp(s / "out/cpu.txt"), "profile\n");
  struct stat st {};
  ASSERT_EQ(::stat((s / "victim").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1U);
}

TEST(OutputDir, ADirectoryAtTheNameFailsAndLeavesNoTemporary) {
  Scratch s;
  ASSERT_EQ(::mkdir((s / "out").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((s / "out/cpu.txt").c_str(), 0755), 0);
  auto dir = OutputDir::open(s / "out", false);
  ASSERT_TRUE(dir);
  auto r = dir->write_file("cpu.txt", "x");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, EISDIR);
  EXPECT_NE(r.error().message().find(s / "out/cpu.txt"), std::string::npos) << r.error().message();
  EXPECT_EQ(listing(s / "out"), std::set<std::string>{"cpu.txt"});
}

TEST(OutputDir, NamesWithASlashAreRefused) {
  Scratch s;
  ASSERT_EQ(::mkdir((s / "out").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((s / "x").c_str(), 0755), 0);
  auto dir = OutputDir::open(s / "out", false);
  ASSERT_TRUE(dir);
  for (const char* name : {"../x/pwned.txt", "..", ".", "", "a/b"}) {
    EXPECT_FALSE(dir->write_file(name, "x")) << name;
  }
  EXPECT_TRUE(listing(s / "x").empty());
  EXPECT_TRUE(listing(s / "out").empty());
}

TEST(OutputDir, CreatesMissingComponentsAndTestWriteLeavesNothing) {
  Scratch s;
  auto dir = OutputDir::open(s / "a/b/./c/", true);
  ASSERT_TRUE(dir) << dir.error().message();
  struct stat st {};
  ASSERT_EQ(::stat((s / "a/b/c").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  ASSERT_TRUE(dir->test_write());
  EXPECT_TRUE(listing(s / "a/b/c").empty());
  // Without `create`, a missing directory is ENOENT, named.
  auto missing = OutputDir::open(s / "nope/deeper", false);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().err, ENOENT);
  EXPECT_NE(missing.error().message().find(s / "nope"), std::string::npos);
}

TEST(OutputDir, ARegularFileOnThePathIsNotADirectory) {
  Scratch s;
  put(s / "file", "x");
  auto dir = OutputDir::open(s / "file/sub", true);
  ASSERT_FALSE(dir);
  EXPECT_EQ(dir.error().err, ENOTDIR);
  EXPECT_NE(dir.error().message().find(s / "file"), std::string::npos);
  EXPECT_EQ(slurp(s / "file"), "x");
}

// Our own symlinks are followed as the kernel would, relative ones from where they are.
TEST(OutputDir, OwnSymlinksAreFollowed) {
  Scratch s;
  ASSERT_EQ(::mkdir((s / "real").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((s / "links").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("../real", (s / "links/rel").c_str()), 0);
  ASSERT_EQ(::symlink((s / "real").c_str(), (s / "abs").c_str()), 0);
  for (const std::string& path : {s / "links/rel", s / "abs", s / "links/rel/../links/rel/"}) {
    auto dir = OutputDir::open(path, true);
    ASSERT_TRUE(dir) << path << ": " << dir.error().message();
    ASSERT_TRUE(dir->write_file("f", path));
    EXPECT_EQ(slurp(s / "real/f"), path);
  }
  // Through a link, missing components are made at its target.
  auto deeper = OutputDir::open(s / "abs/new/sub", true);
  ASSERT_TRUE(deeper) << deeper.error().message();
  struct stat st {};
  EXPECT_EQ(::stat((s / "real/new/sub").c_str(), &st), 0);
}

TEST(OutputDir, ASymlinkLoopIsELOOP) {
  Scratch s;
  ASSERT_EQ(::symlink("b", (s / "a").c_str()), 0);
  ASSERT_EQ(::symlink("a", (s / "b").c_str()), 0);
  auto dir = OutputDir::open(s / "a", true);
  ASSERT_FALSE(dir);
  EXPECT_EQ(dir.error().err, ELOOP);
}

// Another user's symlink, as DIR itself or on the way to it, is never followed: it could
// point at /etc. Root is needed to make a symlink owned by someone else.
TEST(OutputDir, AnotherUsersSymlinkIsRefused) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to plant a symlink owned by another user";
  }
  Scratch s;
  ASSERT_EQ(::mkdir((s / "secret").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((s / "home").c_str(), 0755), 0);
  ASSERT_EQ(::chown((s / "home").c_str(), kOtherUid, kOtherUid), 0);
  ASSERT_EQ(::symlink((s / "secret").c_str(), (s / "home/out").c_str()), 0);
  ASSERT_EQ(::lchown((s / "home/out").c_str(), kOtherUid, kOtherUid), 0);
  for (const std::string& path : {s / "home/out", s / "home/out/sub", s / "home/out/"}) {
    auto dir = OutputDir::open(path, true);
    ASSERT_FALSE(dir) << path;
    EXPECT_NE(dir.error().message().find("symlink owned by uid 65534"), std::string::npos)
        << dir.error().message();
    EXPECT_NE(dir.error().message().find(s / "home/out"), std::string::npos);
  }
  EXPECT_TRUE(listing(s / "secret").empty());
  // The same link made by root is followed.
  ASSERT_EQ(::symlink((s / "secret").c_str(), (s / "home/root-link").c_str()), 0);
  auto dir = OutputDir::open(s / "home/root-link", false);
  ASSERT_TRUE(dir) << dir.error().message();
}

}  // namespace
}  // namespace profctl
