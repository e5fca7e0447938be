// SPDX-License-Identifier: MIT
#include "report/stack_text.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "base/thread_state.h"
#include "report/units.h"

namespace profctl {
namespace {

using report_detail::hex;

std::string fixed(double v, const char* suffix) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f%s", v, suffix);
  return buf;
}

std::string padded_pc(uint64_t pc) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, pc);
  return buf;
}

// A thread name in double quotes; names come from the target (comm), so '"', '\\' and
// control bytes are escaped to keep one thread on one line.
std::string quoted(const std::string& name) {
  std::string s = "\"";
  for (unsigned char ch : name) {
    if (ch == '"' || ch == '\\') {
      s += '\\';
      s += static_cast<char>(ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      s += buf;
    } else {
      s += static_cast<char>(ch);
    }
  }
  return s + "\"";
}

// "[sleeping, futex wait 0x7f3a2c0041a0, cpu 1.20s]"
std::string thread_summary(const CaptureThread& t) {
  std::string s = "[" + thread_state_name(t.state);
  if (t.wait_syscall) {
    s += *t.wait_syscall == "futex" ? ", futex wait" : ", in " + *t.wait_syscall;
    if (t.wait_address) {
      s += " " + hex(*t.wait_address);
    }
  } else if (t.wait_address) {
    s += ", waiting on " + hex(*t.wait_address);
  }
  if (t.waiting_ns) {
    // Go's "[chan receive, 14 minutes]": how long this wait has lasted so far.
    s += ", waiting " +
         report_detail::format_value(
             static_cast<int64_t>(std::min<uint64_t>(*t.waiting_ns, INT64_MAX)), "nanoseconds");
    if (t.waiting_in) {
      s += " in " + *t.waiting_in;
    }
  }
  s += ", cpu " +
       report_detail::format_value(static_cast<int64_t>(std::min<uint64_t>(t.cpu_ns, INT64_MAX)),
                                   "nanoseconds") +
       "]";
  return s;
}

void write_frames(const std::vector<Frame>& frames, std::ostream& out) {
  // Number real frames; an inlined call takes the number of the real frame after it.
  std::vector<size_t> numbers(frames.size());
  size_t n = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    numbers[i] = n;
    if (!frames[i].inlined) {
      ++n;
    }
  }
  const size_t width = std::to_string(n == 0 ? 0 : n - 1).size();
  for (size_t i = 0; i < frames.size(); ++i) {
    const Frame& f = frames[i];
    std::string num = std::to_string(numbers[i]);
    num.resize(width, ' ');
    out << "  #" << num << "  ";
    if (f.inlined) {
      out << "(inlined)         ";  // as wide as padded_pc()
    } else {
      out << padded_pc(f.pc);
    }
    out << " in " << report_detail::frame_name(f);
    if (f.file) {
      out << "  at " << *f.file;
      if (f.line) {
        out << ':' << *f.line;
      }
    }
    if (!f.inlined) {
      out << "  (" << f.module << '+' << hex(f.offset) << ')';
    }
    out << '\n';
  }
}

}  // namespace

std::string thread_state_name(const std::string& state) {
  const char* w = state.size() == 1 ? thread_state_word(state[0]) : nullptr;
  if (w != nullptr) {
    return w;
  }
  return state.empty() ? "unknown" : state;
}

void write_stack_text(const Capture& c, std::ostream& out) {
  const size_t n = c.threads.size();
  out << "profctl stack: pid " << c.target.pid << " (" << c.target.exe << ") \u2014 " << n
      << (n == 1 ? " thread" : " threads") << ", world stopped "
      << fixed(static_cast<double>(c.pause.world_stopped_ns) / 1e6, " ms") << '\n';
  for (const std::string& w : c.warnings) {
    out << "warning: " << w << '\n';
  }
  for (const CaptureThread& t : c.threads) {
    out << "\nthread " << t.tid << ' ' << quoted(t.name) << ' ' << thread_summary(t) << ":\n";
    if (t.frames.empty() && !t.truncated) {
      out << "  (no frames)\n";
    }
    write_frames(t.frames, out);
    if (t.truncated) {
      out << "  ... (truncated" << (t.truncated_reason.empty() ? "" : ": " + t.truncated_reason)
          << ")\n";
    }
  }
}

}  // namespace profctl
