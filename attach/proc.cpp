// SPDX-License-Identifier: MIT
#include "attach/proc.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "base/fd.h"
#include "base/schedstat.h"
#include "base/syscall_names.h"
#include "base/text_fields.h"

namespace profctl {
namespace {

std::string proc_path(pid_t pid, pid_t tid, const char* leaf) {
  return "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/" + leaf;
}

}  // namespace

std::optional<TaskStat> parse_stat(std::string_view text) {
  // "pid (comm) S ppid ..." — comm may hold spaces and parentheses: it ends at the LAST ')'.
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) {
    return std::nullopt;
  }
  TaskStat st;
  st.comm = std::string(text.substr(open + 1, close - open - 1));
  std::string_view rest = text.substr(close + 1);
  // Fields after comm, numbered from 3 (state) as in proc(5).
  std::string_view state = next_token(rest);
  if (state.size() != 1) {
    return std::nullopt;
  }
  st.state = state[0];
  for (int field = 4; field <= 15; ++field) {
    std::string_view tok = next_token(rest);
    if (tok.empty()) {
      return std::nullopt;
    }
    if (field == 9 && !parse_num(tok, st.flags)) {
      return std::nullopt;
    }
    if (field == 14 && !parse_num(tok, st.utime_ticks)) {
      return std::nullopt;
    }
    if (field == 15 && !parse_num(tok, st.stime_ticks)) {
      return std::nullopt;
    }
  }
  // Optional from here: a short line (an old kernel, a test's) keeps processor -1.
  for (int field = 16; field <= 39; ++field) {
    std::string_view tok = next_token(rest);
    if (tok.empty()) {
      break;
    }
    if (unsigned cpu = 0; field == 39 && parse_num(tok, cpu) && cpu < 65536) {
      st.processor = static_cast<int>(cpu);
    }
  }
  return st;
}

std::optional<ProcStatus> parse_status(std::string_view text) {
  ProcStatus st;
  bool have_state = false;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      continue;
    }
    std::string_view key = line.substr(0, colon);
    std::string_view val = line.substr(colon + 1);
    std::string_view tok = next_token(val);
    if (key == "State" && !tok.empty()) {
      st.state = tok[0];
      have_state = true;
    } else if (key == "Tgid") {
      parse_num(tok, st.tgid);
    } else if (key == "PPid") {
      parse_num(tok, st.ppid);
    } else if (key == "TracerPid") {
      parse_num(tok, st.tracer_pid);
    }
  }
  if (!have_state) {
    return std::nullopt;
  }
  return st;
}

std::optional<SyscallWait> parse_syscall(std::string_view text) {
  // "nr a0 a1 a2 a3 a4 a5 sp pc" (hex args) when blocked; "running" or "-1 sp pc" otherwise.
  std::string_view rest = text;
  std::string_view nr_tok = next_token(rest);
  SyscallWait w;
  if (!parse_num(nr_tok, w.nr) || w.nr < 0) {
    return std::nullopt;
  }
  for (auto& a : w.args) {
    if (!parse_num(next_token(rest), a, 16)) {
      return std::nullopt;
    }
  }
  if (!parse_num(next_token(rest), w.sp, 16) || !parse_num(next_token(rest), w.pc, 16)) {
    return std::nullopt;
  }
  return w;
}

std::string syscall_name(long nr) {
  if (auto name = x86_64_syscall_name(nr)) {
    return std::string(*name);
  }
  return "syscall_" + std::to_string(nr);
}

Result<std::vector<pid_t>> list_tasks(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/task";
  std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir(path.c_str()), closedir);
  if (!dir) {
    return errno_error("opendir " + path);
  }
  std::vector<pid_t> tids;
  while (dirent* e = readdir(dir.get())) {
    pid_t tid = 0;
    if (parse_num(std::string_view(e->d_name), tid) && tid > 0) {
      tids.push_back(tid);
    }
  }
  std::sort(tids.begin(), tids.end());
  return tids;
}

Result<TaskStat> read_task_stat(pid_t pid, pid_t tid) {
  auto text = read_file(proc_path(pid, tid, "stat"));
  if (!text) {
    return text.error();
  }
  auto st = parse_stat(*text);
  if (!st) {
    return Error{"malformed " + proc_path(pid, tid, "stat")};
  }
  return *st;
}

Result<ProcStatus> read_status(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/status";
  auto text = read_file(path);
  if (!text) {
    return text.error();
  }
  auto st = parse_status(*text);
  if (!st) {
    return Error{"malformed " + path};
  }
  return *st;
}

std::optional<SyscallWait> read_task_syscall(pid_t pid, pid_t tid) {
  auto text = read_file(proc_path(pid, tid, "syscall"));
  if (!text) {
    return std::nullopt;
  }
  return parse_syscall(*text);
}

Result<std::map<uint64_t, uint64_t>> read_auxv(pid_t pid, std::initializer_list<uint64_t> keys) {
  auto auxv = read_file("/proc/" + std::to_string(pid) + "/auxv");
  if (!auxv) {
    return auxv.error();
  }
  std::map<uint64_t, uint64_t> out;
  for (size_t off = 0; off + 16 <= auxv->size(); off += 16) {
    uint64_t key = 0;
    uint64_t val = 0;
    std::memcpy(&key, auxv->data() + off, 8);
    std::memcpy(&val, auxv->data() + off + 8, 8);
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) {
      out[key] = val;
    }
  }
  return out;
}

Result<std::string> read_maps_text(pid_t pid) {
  return read_file("/proc/" + std::to_string(pid) + "/maps");
}

std::string read_exe(pid_t pid) {
  std::string link = "/proc/" + std::to_string(pid) + "/exe";
  char buf[4096];
  ssize_t n = readlink(link.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

std::vector<std::string> read_cmdline(pid_t pid) {
  std::vector<std::string> out;
  auto text = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  if (!text) {
    return out;
  }
  std::string_view s = *text;
  while (!s.empty()) {
    size_t z = s.find('\0');
    out.emplace_back(s.substr(0, z));
    if (z == std::string_view::npos) {
      break;
    }
    s.remove_prefix(z + 1);
  }
  return out;
}

std::string read_comm(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/comm");
  if (!text) {
    return {};
  }
  std::string s = std::move(*text);
  while (!s.empty() && s.back() == '\n') {
    s.pop_back();
  }
  return s;
}

std::optional<uint64_t> read_task_runtime_ns(pid_t pid, pid_t tid) {
  auto text = read_file(proc_path(pid, tid, "schedstat"));
  if (!text) {
    return std::nullopt;
  }
  auto st = parse_schedstat(*text);
  return st ? std::optional<uint64_t>(st->run_ns) : std::nullopt;
}

uint64_t ticks_to_ns(uint64_t ticks) {
  static const long hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
  return ticks * (1000000000ULL / static_cast<uint64_t>(hz));
}

}  // namespace profctl
