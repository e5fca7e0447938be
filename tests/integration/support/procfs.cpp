// SPDX-License-Identifier: MIT
#include "procfs.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace profctl::testing {
namespace {

std::string task_path(pid_t pid, pid_t tid, const char* file) {
  return "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/" + file;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Fields of a stat line after "(comm)": index 0 is the state.
std::vector<std::string> stat_fields_after_comm(const std::string& stat) {
  std::vector<std::string> fields;
  auto close = stat.rfind(')');
  if (close == std::string::npos) {
    return fields;
  }
  std::istringstream rest(stat.substr(close + 1));
  std::string f;
  while (rest >> f) {
    fields.push_back(f);
  }
  return fields;
}

}  // namespace

std::vector<pid_t> task_ids(pid_t pid) {
  std::vector<pid_t> tids;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    return tids;
  }
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') {
      tids.push_back(static_cast<pid_t>(std::stol(e->d_name)));
    }
  }
  ::closedir(d);
  return tids;
}

char task_state(pid_t pid, pid_t tid) {
  auto stat = read_file(task_path(pid, tid, "stat"));
  if (!stat) {
    return '?';
  }
  auto fields = stat_fields_after_comm(*stat);
  return fields.empty() || fields[0].empty() ? '?' : fields[0][0];
}

char process_state(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) {
    return '?';
  }
  auto fields = stat_fields_after_comm(*stat);
  return fields.empty() || fields[0].empty() ? '?' : fields[0][0];
}

long long task_cpu_ns(pid_t pid, pid_t tid) {
  auto text = read_file(task_path(pid, tid, "schedstat"));
  if (!text || text->empty()) {
    return -1;
  }
  return std::stoll(*text);
}

std::optional<unsigned long> process_flags(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) {
    return std::nullopt;
  }
  auto fields = stat_fields_after_comm(*stat);
  // After comm: state(0) ppid pgrp session tty_nr tpgid flags(6)
  if (fields.size() < 7) {
    return std::nullopt;
  }
  return std::stoul(fields[6]);
}

pid_t tracer_pid(pid_t pid, pid_t tid) {
  auto status = read_file(task_path(pid, tid, "status"));
  if (!status) {
    return -1;
  }
  std::istringstream lines(*status);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("TracerPid:", 0) == 0) {
      return static_cast<pid_t>(std::stol(line.substr(10)));
    }
  }
  return -1;
}

std::string task_comm(pid_t pid, pid_t tid) {
  auto comm = read_file(task_path(pid, tid, "comm"));
  if (!comm) {
    return {};
  }
  if (!comm->empty() && comm->back() == '\n') {
    comm->pop_back();
  }
  return *comm;
}

std::optional<BlockedSyscall> blocked_syscall(pid_t pid, pid_t tid) {
  auto text = read_file(task_path(pid, tid, "syscall"));
  if (!text || text->rfind("running", 0) == 0) {
    return std::nullopt;
  }
  std::istringstream in(*text);
  BlockedSyscall s;
  std::string word;
  if (!(in >> word)) {
    return std::nullopt;
  }
  s.nr = std::stol(word);
  for (int i = 0; i < 6 && (in >> word); ++i) {
    s.args[i] = std::stoull(word, nullptr, 0);
  }
  return s;
}

::testing::AssertionResult untouched(pid_t pid, pid_t expected_tracer, bool allow_group_stop) {
  auto tids = task_ids(pid);
  if (tids.empty()) {
    return ::testing::AssertionFailure() << "pid " << pid << " has no /proc/PID/task (gone?)";
  }
  for (pid_t tid : tids) {
    char state = task_state(pid, tid);
    pid_t tracer = tracer_pid(pid, tid);
    if (state == '?' || tracer == -1) {
      continue;  // the thread exited between the listing and the read
    }
    if (state == 't' || (state == 'T' && !allow_group_stop)) {
      return ::testing::AssertionFailure()
             << "pid " << pid << " tid " << tid << " left in state '" << state << "'";
    }
    if (tracer != expected_tracer) {
      return ::testing::AssertionFailure() << "pid " << pid << " tid " << tid << " TracerPid "
                                           << tracer << ", expected " << expected_tracer;
    }
  }
  return ::testing::AssertionSuccess();
}

bool wait_all_tasks_in_state(pid_t pid, char state, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool all = true;
    for (pid_t tid : task_ids(pid)) {
      if (task_state(pid, tid) != state) {
        all = false;
      }
    }
    if (all) {
      return true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace profctl::testing
