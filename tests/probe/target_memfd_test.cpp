// SPDX-License-Identifier: MIT
// probe/target_memfd: the proof that a file taken from the target is the fresh memfd
// profctl asked for, on every kind of file a target could put at that fd number; and the
// whole path (pidfd_getfd, proof, sized, sealed, mapped) on a memfd of this process.
#include "probe/target_memfd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>

#include "probe/shared_area.h"

namespace profctl::probe {
namespace {

namespace fs = std::filesystem;

Fd fresh_memfd(const std::string& name, unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING) {
  return Fd(memfd_create(name.c_str(), flags));
}

// A file with known content, and a check that it is still exactly that.
class Victim {
 public:
  Victim() {
    path_ = fs::temp_directory_path() / ("profctl-victim-" + std::to_string(getpid()));
    std::ofstream(path_) << kContent;
    fs::permissions(path_, fs::perms::owner_read | fs::perms::owner_write);
  }
  ~Victim() { fs::remove(path_); }
  const std::string path() const { return path_.string(); }
  bool unchanged() const {
    std::ifstream in(path_);
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return s == kContent && fs::file_size(path_) == sizeof kContent - 1;
  }

 private:
  static constexpr char kContent[] = "root-owned secret, never to be truncated\n";
  fs::path path_;
};

std::string refusal(Result<ProvenMemfd>&& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message();
}

TEST(ProbeTargetMemfd, RandomNamesAreDistinctAndShaped) {
  std::set<std::string> names;
  const std::regex shape("profctl-probe-[0-9a-f]{16}");
  for (int i = 0; i < 100; ++i) {
    std::string n = random_memfd_name();
    EXPECT_TRUE(std::regex_match(n, shape)) << n;
    names.insert(n);
  }
  EXPECT_EQ(names.size(), 100u);
}

TEST(ProbeTargetMemfd, AFreshMemfdOfTheRightNameIsAccepted) {
  const std::string name = random_memfd_name();
  auto p = prove_fresh_memfd(fresh_memfd(name), name, getuid());
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_GE(p->get(), 0);
}

TEST(ProbeTargetMemfd, ARegularFileIsRefusedAndUntouched) {
  Victim v;
  auto fd = Fd::open(v.path(), O_RDWR);
  ASSERT_TRUE(fd);
  const std::string why = refusal(prove_fresh_memfd(std::move(*fd), "x", getuid()));
  EXPECT_NE(why.find("probes refused"), std::string::npos) << why;
  EXPECT_NE(why.find("not shmem"), std::string::npos) << why;
  EXPECT_TRUE(v.unchanged());
}

TEST(ProbeTargetMemfd, AnOPathDescriptorIsRefused) {
  Victim v;
  auto fd = Fd::open(v.path(), O_PATH);
  ASSERT_TRUE(fd);
  const std::string why = refusal(prove_fresh_memfd(std::move(*fd), "x", getuid()));
  EXPECT_NE(why.find("O_PATH"), std::string::npos) << why;
  EXPECT_TRUE(v.unchanged());
  // And an O_PATH descriptor of a memfd, through /proc/self/fd.
  const std::string name = random_memfd_name();
  Fd m = fresh_memfd(name);
  auto path_fd = Fd::open("/proc/self/fd/" + std::to_string(m.get()), O_PATH);
  ASSERT_TRUE(path_fd);
  EXPECT_NE(refusal(prove_fresh_memfd(std::move(*path_fd), name, getuid())).find("O_PATH"),
            std::string::npos);
}

TEST(ProbeTargetMemfd, AReadOnlyDescriptorIsRefused) {
  const std::string name = random_memfd_name();
  Fd m = fresh_memfd(name);
  auto ro = Fd::open("/proc/self/fd/" + std::to_string(m.get()), O_RDONLY);
  ASSERT_TRUE(ro);
  EXPECT_NE(refusal(prove_fresh_memfd(std::move(*ro), name, getuid())).find("not open O_RDWR"),
            std::string::npos);
}

TEST(ProbeTargetMemfd, AMemfdOfAnotherNameIsRefused) {
  const std::string name = random_memfd_name();
  const std::string why =
      refusal(prove_fresh_memfd(fresh_memfd("profctl-probe-0000000000000000"), name, getuid()));
  EXPECT_NE(why.find("is named '/memfd:profctl-probe-0000000000000000 (deleted)'"),
            std::string::npos)
      << why;
  // A prefix of the name is another name.
  EXPECT_FALSE(prove_fresh_memfd(fresh_memfd(name + "x"), name, getuid()));
  EXPECT_FALSE(prove_fresh_memfd(fresh_memfd(name.substr(0, 20)), name, getuid()));
}

TEST(ProbeTargetMemfd, AMemfdThatIsNotEmptyIsRefused) {
  const std::string name = random_memfd_name();
  Fd m = fresh_memfd(name);
  ASSERT_EQ(ftruncate(m.get(), 4096), 0);
  const std::string why = refusal(prove_fresh_memfd(std::move(m), name, getuid()));
  EXPECT_NE(why.find("not empty (4096 bytes)"), std::string::npos) << why;
}

TEST(ProbeTargetMemfd, ASealedMemfdIsRefused) {
  const std::string name = random_memfd_name();
  Fd m = fresh_memfd(name);
  ASSERT_EQ(fcntl(m.get(), F_ADD_SEALS, F_SEAL_GROW), 0);
  std::string why = refusal(prove_fresh_memfd(std::move(m), name, getuid()));
  EXPECT_NE(why.find("sealed (seals 0x4)"), std::string::npos) << why;
  // Without MFD_ALLOW_SEALING a memfd reads F_SEAL_SEAL.
  why = refusal(prove_fresh_memfd(fresh_memfd(name, MFD_CLOEXEC), name, getuid()));
  EXPECT_NE(why.find("sealed (seals 0x1)"), std::string::npos) << why;
}

TEST(ProbeTargetMemfd, AMemfdOfAnotherUidIsRefused) {
  const std::string name = random_memfd_name();
  const std::string why = refusal(prove_fresh_memfd(fresh_memfd(name), name, getuid() + 1));
  EXPECT_NE(why.find("belongs to uid"), std::string::npos) << why;
}

TEST(ProbeTargetMemfd, AnUnlinkedTmpfsFileIsRefused) {
  if (!fs::exists("/dev/shm")) {
    GTEST_SKIP() << "no /dev/shm";
  }
  Fd f(open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!f.valid()) {
    GTEST_SKIP() << "no O_TMPFILE on /dev/shm";
  }
  const std::string why = refusal(prove_fresh_memfd(std::move(f), "x", getuid()));
  EXPECT_NE(why.find("probes refused"), std::string::npos) << why;  // not a memfd
}

TEST(ProbeTargetMemfd, TakeTargetFdTakesTheSameFile) {
  const std::string name = random_memfd_name();
  Fd m = fresh_memfd(name);
  auto taken = take_target_fd(getpid(), m.get());
  ASSERT_TRUE(taken) << taken.error().message();
  struct stat a {
  }, b{};
  ASSERT_EQ(fstat(m.get(), &a), 0);
  ASSERT_EQ(fstat(taken->get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_dev, b.st_dev);
  EXPECT_NE(taken->get(), m.get());
  EXPECT_FALSE(take_target_fd(getpid(), 100000));  // no such fd: an error, no path tried
  auto uid = target_fsuid(getpid());
  ASSERT_TRUE(uid);
  EXPECT_EQ(*uid, geteuid());
}

TEST(ProbeTargetMemfd, TheSharedAreaIsSealedAgainstShrinkingAndGrowing) {
  const std::string name = random_memfd_name();
  Fd m = fresh_memfd(name);
  SharedAreaOptions o;
  o.ring_bytes = 64 << 10;
  o.pointer_capacity = 1024;
  o.thread_capacity = 16;
  auto area = open_target_shared_area(getpid(), m.get(), name, o);
  ASSERT_TRUE(area) << area.error().message();
  EXPECT_EQ(fcntl(m.get(), F_GET_SEALS), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  struct stat st {};
  ASSERT_EQ(fstat(m.get(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), area->size());
  // The "target" (this fd) can neither shrink nor grow it, nor unseal it.
  EXPECT_NE(ftruncate(m.get(), 0), 0);
  EXPECT_NE(ftruncate(m.get(), static_cast<off_t>(area->size() * 2)), 0);
  EXPECT_NE(fcntl(m.get(), F_ADD_SEALS, F_SEAL_WRITE), 0);
  // The same file as the one profctl mapped.
  area->ctl()->mem_rate = 12345;
  void* mine = mmap(nullptr, area->size(), PROT_READ, MAP_SHARED, m.get(), 0);
  ASSERT_NE(mine, MAP_FAILED);
  EXPECT_EQ(static_cast<const probe_ctl*>(mine)->mem_rate, 12345);
  munmap(mine, area->size());
  // A second take of the same memfd is no longer fresh.
  auto again = open_target_shared_area(getpid(), m.get(), name, o);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("not empty"), std::string::npos);
}

TEST(ProbeTargetMemfd, OwnAreasAreSealedToo) {
  SharedAreaOptions o;
  o.ring_bytes = 64 << 10;
  o.pointer_capacity = 1024;
  o.thread_capacity = 16;
  auto area = SharedArea::create(o);
  ASSERT_TRUE(area);
  EXPECT_EQ(fcntl(area->fd(), F_GET_SEALS), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
}

}  // namespace
}  // namespace profctl::probe
