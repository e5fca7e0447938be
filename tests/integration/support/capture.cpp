// SPDX-License-Identifier: MIT
#include "capture.h"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

namespace profctl::testing {
namespace {

namespace fs = std::filesystem;

bool is_hex(const Json& v) {
  static const std::regex hex("^0x[0-9a-f]+$");
  return v.is_string() && std::regex_match(v.get<std::string>(), hex);
}

bool is_libc(const Json& frame) {
  if (!frame.contains("module") || !frame["module"].is_string()) {
    return false;
  }
  return fs::path(frame["module"].get<std::string>()).filename().string().rfind("libc.so", 0) == 0;
}

std::string function_of(const Json& frame) {
  if (!frame.contains("function") || !frame["function"].is_string()) {
    return {};
  }
  return frame["function"].get<std::string>();
}

bool inlined(const Json& frame) {
  return frame.contains("inlined") && frame["inlined"].is_boolean() && frame["inlined"].get<bool>();
}

std::string describe_step(const Step& s) {
  switch (s.kind) {
    case Step::Kind::kExe:
      return "exe!" + s.name;
    case Step::Kind::kExeInlined:
      return "exe!" + s.name + "[inl]";
    case Step::Kind::kExeUnknown:
      return "exe!<null>";
    case Step::Kind::kLibRun:
      return "libc!(..." + s.name + "...)+";
    case Step::Kind::kLibOne:
      return "libc!*" + s.name + "*";
  }
  return "?";
}

// Checks one frame object; appends problems to `why`.
void check_frame(const Json& f, std::ostringstream& why) {
  if (!f.is_object()) {
    why << " frame is not an object;";
    return;
  }
  if (!is_hex(f.value("pc", Json()))) {
    why << " pc not 0x-hex: " << f.value("pc", Json()).dump() << ";";
  }
  if (!is_hex(f.value("offset", Json()))) {
    why << " offset not 0x-hex: " << f.value("offset", Json()).dump() << ";";
  }
  if (!f.contains("module") || !f["module"].is_string() || f["module"].get<std::string>().empty()) {
    why << " module missing;";
  }
  if (!f.contains("function") || !(f["function"].is_null() || f["function"].is_string())) {
    why << " function not string|null;";
  }
  if (!f.contains("file") || !(f["file"].is_null() || f["file"].is_string())) {
    why << " file not string|null;";
  }
  if (!f.contains("line") || !(f["line"].is_null() || f["line"].is_number_integer())) {
    why << " line not int|null;";
  }
  if (!f.contains("inlined") || !f["inlined"].is_boolean()) {
    why << " inlined not bool;";
  }
}

}  // namespace

std::string profctl_path() {
  if (const char* env = std::getenv("PROFCTL_TEST_BIN"); env && *env) {
    return env;
  }
  return PROFCTL_BIN;
}

std::string source_dir() { return SOURCE_DIR; }

std::string canonical(const std::string& path) {
  std::error_code ec;
  auto c = fs::canonical(path, ec);
  return ec ? path : c.string();
}

bool can_ptrace() {
  static const bool allowed = [] {
    pid_t child = ::fork();
    if (child == 0) {
      ::pause();
      ::_exit(0);
    }
    if (child < 0) {
      return false;
    }
    bool ok = ::ptrace(PTRACE_SEIZE, child, nullptr, nullptr) == 0 || errno != EPERM;
    ::kill(child, SIGKILL);  // our own child, by pid
    int status;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return ok;
  }();
  return allowed;
}

std::string why_cannot_run() {
  std::string bin = profctl_path();
  if (bin.empty() || ::access(bin.c_str(), X_OK) != 0) {
    return "profctl binary not built (" + (bin.empty() ? std::string("no target") : bin) + ")";
  }
  if (!can_ptrace()) {
    return "ptrace not allowed here (PTRACE_SEIZE of a child: EPERM)";
  }
  return {};
}

RunResult profctl(const std::vector<std::string>& args, const RunOptions& options) {
  std::vector<std::string> argv = {profctl_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, options);
}

RunResult profctl_stack(pid_t pid, const std::vector<std::string>& args, milliseconds timeout) {
  std::vector<std::string> all = {"stack", std::to_string(pid)};
  all.insert(all.end(), args.begin(), args.end());
  RunOptions options;
  options.timeout = timeout;
  return profctl(all, options);
}

::testing::AssertionResult schema_valid(const std::string& json_text,
                                        const std::string& schema_name) {
  std::string schema = source_dir() + "/schema/" + schema_name;
  std::string validator = source_dir() + "/tests/tools/validate_json.py";
  // Both are in the repository: a missing one is a broken checkout or build, and a check
  // that passes without them would hide any schema violation.
  if (!fs::exists(schema) || !fs::exists(validator)) {
    return ::testing::AssertionFailure()
           << "schema or validator missing: " << schema << ", " << validator;
  }
  char path[] = "/tmp/profctl-capture-XXXXXX.json";
  int fd = ::mkstemps(path, 5);
  if (fd < 0) {
    return ::testing::AssertionFailure() << "mkstemps failed";
  }
  ::close(fd);
  {
    std::ofstream out(path);
    out << json_text;
  }
  RunOptions options;
  options.timeout = milliseconds(60000);
  RunResult r = run({"/usr/bin/python3", validator, schema, path}, options);
  ::unlink(path);
  if (r.exit_code != 0) {
    return ::testing::AssertionFailure() << "validate_json.py: " << r.describe();
  }
  return ::testing::AssertionSuccess();
}

std::optional<Json> parse_capture(const std::string& json_text, pid_t pid) {
  Json doc;
  try {
    doc = Json::parse(json_text);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << e.what() << "\n" << json_text.substr(0, 2000);
    return std::nullopt;
  }
  EXPECT_TRUE(schema_valid(json_text));
  std::ostringstream why;
  if (doc.value("schema", Json()) != "profctl.capture/1") {
    why << " schema != profctl.capture/1;";
  }
  const Json target = doc.value("target", Json::object());
  if (target.value("pid", Json()) != pid) {
    why << " target.pid " << target.value("pid", Json()).dump() << " != " << pid << ";";
  }
  if (!target.value("exe", Json()).is_string()) {
    why << " target.exe not a string;";
  }
  if (!target.value("cmdline", Json()).is_array()) {
    why << " target.cmdline not an array;";
  }
  const Json window = doc.value("window", Json::object());
  if (!window.value("start", Json()).is_string() ||
      !window.value("duration_s", Json()).is_number()) {
    why << " window.start/duration_s missing;";
  }
  const Json pause = doc.value("pause", Json::object());
  if (!pause.value("world_stopped_ns", Json()).is_number()) {
    why << " pause.world_stopped_ns missing;";
  }
  if (!doc.value("profiles", Json()).is_object()) {
    why << " profiles not an object;";
  }
  if (!doc.value("threads", Json()).is_array()) {
    why << " threads not an array;";
  } else {
    for (const Json& t : doc["threads"]) {
      std::string state =
          t.value("state", Json("")).is_string() ? t["state"].get<std::string>() : "";
      if (!t.value("tid", Json()).is_number_integer() || !t.value("name", Json()).is_string() ||
          state.size() != 1 || std::string("RSDTtZ").find(state) == std::string::npos ||
          !t.value("cpu_ns", Json()).is_number_integer() ||
          !t.value("truncated", Json()).is_boolean() || !t.value("frames", Json()).is_array()) {
        why << " thread fields wrong: " << t.dump().substr(0, 300) << ";";
        continue;
      }
      if (t.contains("wait_syscall") && !t["wait_syscall"].is_null() &&
          !t["wait_syscall"].is_string()) {
        why << " tid " << t["tid"] << " wait_syscall not a string;";
      }
      if (t.contains("wait_address") && !t["wait_address"].is_null() &&
          !is_hex(t["wait_address"])) {
        why << " tid " << t["tid"] << " wait_address not 0x-hex;";
      }
      for (const Json& f : t["frames"]) {
        check_frame(f, why);
      }
    }
  }
  if (!why.str().empty()) {
    ADD_FAILURE() << "capture shape:" << why.str();
  }
  return doc;
}

// The capture's thread array, by reference (value() would return a copy, and the pointers
// returned below would dangle).
const Json& threads_of(const Json& capture) {
  static const Json empty = Json::array();
  return capture.is_object() && capture.contains("threads") && capture["threads"].is_array()
             ? capture["threads"]
             : empty;
}

const Json* thread_by_tid(const Json& capture, pid_t tid) {
  for (const Json& t : threads_of(capture)) {
    if (t.value("tid", Json()) == tid) {
      return &t;
    }
  }
  return nullptr;
}

const Json* thread_by_name(const Json& capture, const std::string& name) {
  for (const Json& t : threads_of(capture)) {
    if (t.value("name", Json()) == name) {
      return &t;
    }
  }
  return nullptr;
}

Step exe(std::string name) { return {Step::Kind::kExe, std::move(name)}; }
Step exe_inlined(std::string name) { return {Step::Kind::kExeInlined, std::move(name)}; }
Step exe_unknown() { return {Step::Kind::kExeUnknown, {}}; }
Step lib_run(std::string contains) { return {Step::Kind::kLibRun, std::move(contains)}; }
Step lib_one(std::string contains) { return {Step::Kind::kLibOne, std::move(contains)}; }
std::vector<Step> thread_tail() { return {lib_one("start_thread"), lib_one("clone")}; }

std::vector<Step> concat(std::vector<std::vector<Step>> parts) {
  std::vector<Step> all;
  for (auto& p : parts) {
    all.insert(all.end(), p.begin(), p.end());
  }
  return all;
}

std::string describe_frames(const Json& thread) {
  std::ostringstream s;
  int i = 0;
  for (const Json& f : thread.value("frames", Json::array())) {
    std::string module =
        f.value("module", Json("")).is_string() ? f["module"].get<std::string>() : "?";
    s << "  #" << i++ << " " << fs::path(module).filename().string() << "!"
      << (function_of(f).empty() ? "<null>" : function_of(f)) << (inlined(f) ? " [inl]" : "") << " "
      << f.value("offset", Json("")).dump();
    if (f.value("file", Json()).is_string()) {
      s << " " << f["file"].get<std::string>() << ":" << f.value("line", Json()).dump();
    }
    s << "\n";
  }
  return s.str();
}

::testing::AssertionResult stack_matches(const Json& thread, const std::string& exe_path,
                                         const std::vector<Step>& steps) {
  const std::string exe_canonical = canonical(exe_path);
  const Json frames = thread.value("frames", Json::array());
  auto in_exe = [&](const Json& f) {
    return f.value("module", Json("")).is_string() &&
           canonical(f["module"].get<std::string>()) == exe_canonical;
  };
  auto fail = [&](size_t step, size_t frame, const std::string& reason) {
    std::ostringstream expected;
    for (size_t i = 0; i < steps.size(); ++i) {
      expected << (i == step ? " >>" : " ") << describe_step(steps[i]);
    }
    return ::testing::AssertionFailure()
           << "thread " << thread.value("tid", Json()).dump() << " "
           << thread.value("name", Json()).dump() << ": " << reason << " (step " << step
           << ", frame " << frame << ")\n expected:" << expected.str() << "\n actual:\n"
           << describe_frames(thread);
  };
  size_t i = 0;
  for (size_t s = 0; s < steps.size(); ++s) {
    const Step& step = steps[s];
    if (i >= frames.size()) {
      return fail(s, i, "stack ends too early");
    }
    const Json& f = frames[i];
    switch (step.kind) {
      case Step::Kind::kExe:
      case Step::Kind::kExeInlined:
        if (!in_exe(f) || function_of(f) != step.name ||
            inlined(f) != (step.kind == Step::Kind::kExeInlined)) {
          return fail(s, i, "frame mismatch");
        }
        ++i;
        break;
      case Step::Kind::kExeUnknown:
        if (!in_exe(f) || !f.value("function", Json(0)).is_null()) {
          return fail(s, i, "expected a frame in the executable with function null");
        }
        ++i;
        break;
      case Step::Kind::kLibOne:
        if (!is_libc(f) || function_of(f).find(step.name) == std::string::npos) {
          return fail(s, i, "frame mismatch");
        }
        ++i;
        break;
      case Step::Kind::kLibRun: {
        bool seen = step.name.empty();
        size_t start = i;
        while (i < frames.size() && is_libc(frames[i])) {
          seen = seen || function_of(frames[i]).find(step.name) != std::string::npos;
          ++i;
        }
        if (i == start) {
          return fail(s, i, "expected libc frames");
        }
        if (!seen) {
          return fail(s, start, "no libc frame here contains \"" + step.name + "\"");
        }
        break;
      }
    }
  }
  if (i != frames.size()) {
    return fail(steps.size(), i, "extra frames after the expected end");
  }
  return ::testing::AssertionSuccess();
}

int marker_line(const std::string& file, const std::string& marker) {
  std::ifstream in(file);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find(marker) != std::string::npos) {
      return n;
    }
  }
  return -1;
}

}  // namespace profctl::testing
