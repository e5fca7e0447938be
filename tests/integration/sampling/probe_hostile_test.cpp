// SPDX-License-Identifier: MIT
// A hostile target against the probes (issue 17, points 1-4), with the real profctl:
//  - probe_fd_swap swaps the fd of the memfd profctl has it create for an O_PATH fd of a
//    file it must not touch, from a helper process sharing its fd table; over repeated
//    attaches the file never changes, and each attach either probes or refuses with a
//    message;
//  - probe_scribbler forges the shared area's control block and ring while the heap probes
//    are in: profctl stays bounded, gives up on the ring with a note, exits cleanly and
//    restores the target.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;

std::string maps_of(pid_t pid) {
  return read_text("/proc/" + std::to_string(pid) + "/maps").value_or("");
}

// As heap_test.cpp's check: no probe mapping left, every executable file mapping of the
// target reads exactly as its file (no patched byte left).
::testing::AssertionResult restored(pid_t pid) {
  std::istringstream maps(maps_of(pid));
  std::ifstream mem("/proc/" + std::to_string(pid) + "/mem", std::ios::binary);
  std::string line;
  size_t checked = 0;
  while (std::getline(maps, line)) {
    if (line.find("profctl-probe") != std::string::npos) {
      return ::testing::AssertionFailure() << "a probe mapping is left: " << line;
    }
    unsigned long long lo = 0, hi = 0, off = 0;
    char perms[8] = {};
    char path[512] = {};
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %511s", &lo, &hi, perms, &off, path) <
            5 ||
        perms[2] != 'x' || path[0] != '/') {
      continue;
    }
    std::string in_memory(hi - lo, '\0');
    mem.clear();
    mem.seekg(static_cast<std::streamoff>(lo));
    mem.read(in_memory.data(), static_cast<std::streamsize>(in_memory.size()));
    std::ifstream file(path, std::ios::binary);
    std::string on_disk(hi - lo, '\0');
    file.seekg(static_cast<std::streamoff>(off));
    file.read(on_disk.data(), static_cast<std::streamsize>(on_disk.size()));
    const size_t n = static_cast<size_t>(std::min(mem.gcount(), file.gcount()));
    if (in_memory.compare(0, n, on_disk, 0, n) != 0) {
      return ::testing::AssertionFailure() << path << " differs from its file";
    }
    checked += n;
  }
  if (checked == 0) {
    return ::testing::AssertionFailure() << "no executable mapping was compared";
  }
  return ::testing::AssertionSuccess();
}

// VmHWM of a live process in KiB (0 when gone).
long long peak_rss_kib(pid_t pid) {
  std::istringstream in(read_text("/proc/" + std::to_string(pid) + "/status").value_or(""));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      return std::atoll(line.c_str() + 6);
    }
  }
  return 0;
}

TEST(ProbeHostile, ASwappedMemfdNeverReachesAFileOutsideTheTarget) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  // The victim: 0600 in a directory others may search but not list, as a root-owned file
  // in /etc would be; a target that became nobody can open it only with O_PATH.
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
  const std::string victim = dir.file("victim");
  const std::string content = "PFPROBE1 must never be written here\n";
  { std::ofstream(victim) << content; }
  ASSERT_EQ(::chmod(victim.c_str(), 0600), 0);
  struct stat before {};
  ASSERT_EQ(::stat(victim.c_str(), &before), 0);

  Child target({PROBE_FD_SWAP, victim});
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready);
  int probed = 0, refused = 0;
  std::string refusals;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(round);
    const RunResult r =
        profctl({"attach", std::to_string(target.pid()), "--profiles", "heap", "-d", "0.2s",
                 "--mem-rate", "64", "-o", dir.file("out" + std::to_string(round))});
    ASSERT_EQ(r.term_signal, 0) << r.describe();
    ASSERT_FALSE(r.timed_out) << r.describe();
    if (r.exit_code == 0) {
      ++probed;
    } else {
      // Refused: the probes were the only thing asked for, so nothing was captured.
      ASSERT_EQ(r.exit_code, 3) << r.describe();
      EXPECT_NE(r.err.find("probe"), std::string::npos) << r.describe();
      ++refused;
      refusals += r.err;
    }
    // The file is exactly as it was: never truncated, grown or written.
    struct stat after {};
    ASSERT_EQ(::stat(victim.c_str(), &after), 0);
    const std::string now = read_text(victim).value_or("");
    ASSERT_TRUE(now == content && after.st_size == before.st_size &&
                after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
        << "profctl changed the victim file: " << after.st_size << " bytes, starting '"
        << ::testing::PrintToString(now.substr(0, 16)) << "'";
    // And the target runs on, restored.
    ASSERT_EQ(target.command("alloc"), "done alloc") << describe_tasks(target.pid());
    EXPECT_TRUE(restored(target.pid()));
  }
  const auto swaps = target.command("swaps");
  ASSERT_TRUE(swaps);
  // The helper did swap memfds under profctl, and profctl refused at least once.
  EXPECT_NE(*swaps, "swaps=0");
  EXPECT_GT(refused, 0) << *swaps;
  RecordProperty("probed", probed);
  RecordProperty("refused", refused);
  RecordProperty("swaps", *swaps);
  // A refusal names what it refused (a swapped fd seen by the proof, or a remote mmap of
  // an fd that is no longer the memfd).
  EXPECT_TRUE(refusals.find("probes refused") != std::string::npos ||
              refusals.find("mmap of the probe shared area") != std::string::npos ||
              refusals.find("pidfd_getfd") != std::string::npos)
      << refusals;
}

TEST(ProbeHostile, AScribblingTargetCannotCrashOrBloatProfctl) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({PROBE_SCRIBBLER});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(
      attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("alloc 1000"), "done alloc");
  // The scribble takes about 2 s; profctl's peak memory is sampled while it runs.
  long long peak_kib = 0;
  std::atomic<bool> replied{false};
  std::thread watch([&] {
    while (!replied.load()) {
      peak_kib = std::max(peak_kib, peak_rss_kib(p.pid()));
      std::this_thread::sleep_for(milliseconds(20));
    }
  });
  const std::optional<std::string> reply = target.command("scribble", milliseconds(60000));
  replied.store(true);
  watch.join();
  ASSERT_TRUE(reply) << p.err();
  ASSERT_EQ(reply->rfind("done scribble", 0), 0u) << *reply;
  peak_kib = std::max(peak_kib, peak_rss_kib(p.pid()));
  ASSERT_TRUE(wait_until([&] { return catches(p.pid(), SIGINT); }, milliseconds(30000)));
  ASSERT_TRUE(p.signal(SIGINT));
  auto st = p.wait_exit(milliseconds(60000));
  ASSERT_TRUE(st) << "profctl did not end: " << p.err();
  const int code = exit_code_of(*st);
  EXPECT_TRUE(code == 0 || code == 3) << p.describe_status() << "\n" << p.err();
  // The records claimed 1 MiB stacks each, with new pointers and sizes: without bounds
  // profctl grew by gigabytes. Its own ring (8 MiB) is mapped in it too.
  EXPECT_LT(peak_kib, 768 * 1024) << "profctl peaked at " << peak_kib << " KiB";
  RecordProperty("peak_rss_kib", static_cast<int>(peak_kib));
  RecordProperty("scribble", *reply);
  EXPECT_NE(p.err().find("the probe ring was found corrupt"), std::string::npos) << p.err();
  // Restored, and it still allocates.
  EXPECT_TRUE(restored(target.pid()));
  EXPECT_EQ(target.command("alloc 1000"), "done alloc");
  if (code == 0) {
    auto capture = load_capture(dir.path());
    ASSERT_TRUE(capture);
    bool noted = false;
    for (const Json& w : capture->value("warnings", Json::array())) {
      noted = noted || w.get<std::string>().find("probe ring") != std::string::npos;
    }
    EXPECT_TRUE(noted) << capture->value("warnings", Json::array()).dump();
  }
}

}  // namespace
}  // namespace profctl::testing::sampling
