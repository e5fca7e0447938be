// SPDX-License-Identifier: MIT
#include "sampling_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "report/profile.pb.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

void close_fd(int& fd) {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

}  // namespace

BgProcess::BgProcess(std::vector<std::string> argv) {
  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  char err_path[] = "/tmp/profctl-sampling-stderr-XXXXXX";
  stderr_fd_ = ::mkostemp(err_path, O_CLOEXEC);
  if (stderr_fd_ < 0) {
    throw std::runtime_error(std::string("mkostemp: ") + std::strerror(errno));
  }
  ::unlink(err_path);
  // Sources are moved out of the way by spawn() first: no dup2 clobbers one still to be used.
  pid_ = spawn(argv, {{in[0], 0}, {out[1], 1}, {stderr_fd_, 2}});
  ::close(in[0]);
  ::close(out[1]);
  stdin_write_ = in[1];
  stdout_read_ = out[0];
}

BgProcess::~BgProcess() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);  // our own unreaped child: the pid cannot have been reused
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  close_fd(stdin_write_);
  close_fd(stdout_read_);
  close_fd(stderr_fd_);
}

std::optional<std::string> BgProcess::read_line(milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      seen_ += line + "\n";
      return line;
    }
    struct pollfd pfd = {stdout_read_, POLLIN, 0};
    int r = ::poll(&pfd, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      return std::nullopt;
    }
    char buf[4096];
    ssize_t got = ::read(stdout_read_, buf, sizeof buf);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      return std::nullopt;
    }
    buffer_.append(buf, static_cast<size_t>(got));
  }
}

std::optional<std::string> BgProcess::read_until(const std::string& prefix, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto line = read_line(milliseconds(remaining_ms(deadline)));
    if (!line || line->rfind(prefix, 0) == 0) {
      return line;
    }
  }
}

bool BgProcess::send_line(const std::string& line) {
  std::string text = line + "\n";
  return ::write(stdin_write_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

bool BgProcess::signal(int sig) { return !status_ && pid_ > 0 && ::kill(pid_, sig) == 0; }

std::optional<int> BgProcess::wait_exit(milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!status_) {
    int status = 0;
    pid_t w = ::waitpid(pid_, &status, WNOHANG);
    if (w == pid_) {
      status_ = status;
      break;
    }
    if (w < 0 && errno != EINTR) {
      break;
    }
    if (remaining_ms(deadline) == 0) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(2));
  }
  return status_;
}

std::string BgProcess::describe_status() const {
  if (!status_) {
    return "still running";
  }
  if (WIFEXITED(*status_)) {
    return "exit " + std::to_string(WEXITSTATUS(*status_));
  }
  if (WIFSIGNALED(*status_)) {
    return "killed by signal " + std::to_string(WTERMSIG(*status_));
  }
  return "status " + std::to_string(*status_);
}

std::string BgProcess::err() const {
  std::string text;
  char buf[4096];
  off_t at = 0;
  for (;;) {
    ssize_t got = ::pread(stderr_fd_, buf, sizeof buf, at);
    if (got <= 0) {
      break;
    }
    text.append(buf, static_cast<size_t>(got));
    at += got;
  }
  return text;
}

int exit_code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

TempDir::TempDir() {
  char tmpl[] = "/tmp/profctl-sampling-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (std::getenv("PROFCTL_KEEP_TEST_DIRS")) {
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

bool wait_until(const std::function<bool()>& done, milliseconds timeout, milliseconds interval) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (done()) {
      return true;
    }
    if (Clock::now() >= deadline) {
      return done();
    }
    std::this_thread::sleep_for(interval);
  }
}

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  return static_cast<bool>(out);
}

pid_t tracer_of(pid_t pid) { return tracer_pid(pid, pid); }

bool wait_traced(pid_t pid, milliseconds timeout) {
  return wait_until([&] { return tracer_of(pid) > 0; }, timeout, milliseconds(1));
}

bool wait_untraced(pid_t pid, milliseconds timeout) {
  return wait_until([&] { return tracer_of(pid) <= 0; }, timeout, milliseconds(1));
}

bool catches(pid_t pid, int sig) {
  auto text = read_text("/proc/" + std::to_string(pid) + "/status");
  auto at = text ? text->find("SigCgt:") : std::string::npos;
  if (at == std::string::npos) {
    return false;
  }
  return (std::stoull(text->substr(at + 7), nullptr, 16) >> (sig - 1)) & 1;
}

std::vector<std::string> attach_argv(pid_t pid, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {profctl_path(), "attach", std::to_string(pid)};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<std::string> run_argv(const std::vector<std::string>& args,
                                  const std::vector<std::string>& command) {
  std::vector<std::string> argv = {profctl_path(), "run"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--");
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

std::string comm_of_exe(const std::string& path) {
  return fs::path(path).filename().string().substr(0, 15);
}

std::string describe_tasks(pid_t pid) {
  std::ostringstream s;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    const std::string dir = entry.path().string();
    auto trim = [](std::optional<std::string> t) {
      std::string v = t.value_or("?");
      while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) {
        v.pop_back();
      }
      return v;
    };
    std::string stat = trim(read_text(dir + "/stat"));
    auto close = stat.rfind(')');
    std::string state =
        close != std::string::npos && close + 2 < stat.size() ? stat.substr(close + 2, 1) : "?";
    std::string syscall = trim(read_text(dir + "/syscall"));
    s << entry.path().filename().string() << " " << state << " " << trim(read_text(dir + "/comm"))
      << " wchan=" << trim(read_text(dir + "/wchan"))
      << " syscall=" << syscall.substr(0, syscall.find(' ')) << "; ";
  }
  return s.str();
}

long long process_cpu_ns(pid_t pid) {
  long long total = 0;
  for (pid_t tid : task_ids(pid)) {
    if (long long ns = task_cpu_ns(pid, tid); ns > 0) {
      total += ns;
    }
  }
  return total;
}

const Json* profile_of(const Json& capture, const std::string& kind) {
  if (!capture.is_object() || !capture.contains("profiles") || !capture["profiles"].is_object() ||
      !capture["profiles"].contains(kind)) {
    return nullptr;
  }
  return &capture["profiles"][kind];
}

int value_index(const Json& profile, const std::string& type) {
  const Json& types = profile.at("sample_types");
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i].value("type", "") == type) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

bool has_function(const Json& sample, const std::string& function) {
  for (const Json& f : sample.value("frames", Json::array())) {
    if (f.value("function", Json()) == function) {
      return true;
    }
  }
  return false;
}

namespace {

std::string function_name(const Json& f) {
  return f.value("function", Json()).is_string() ? f["function"].get<std::string>() : "";
}

bool in_system_module(const Json& f) {
  const std::string m = f.value("module", "");
  const std::string base = fs::path(m).filename().string();
  return base.starts_with("libc.so") || base.starts_with("ld-linux") || m == "[vdso]";
}

bool name_matches(const std::string& expected, const std::string& actual) {
  if (expected == "clone*") {
    return actual.starts_with("clone") || actual.starts_with("__clone");
  }
  return expected == actual;
}

std::string stack_text(const Json& sample) {
  std::string s;
  for (const Json& f : sample.value("frames", Json::array())) {
    s += "  " + (function_name(f).empty() ? "<null>" : function_name(f)) +
         (f.value("inlined", false) ? " [inlined]" : "") + "  " + f.value("module", "") + "\n";
  }
  return s;
}

}  // namespace

std::vector<std::string> thread_root() { return {"start_thread", "clone*"}; }
std::vector<std::string> main_root() {
  return {"main", "__libc_start_call_main", "__libc_start_main", "_start"};
}

std::vector<std::string> then(std::vector<std::string> functions,
                              const std::vector<std::string>& root) {
  functions.insert(functions.end(), root.begin(), root.end());
  return functions;
}

::testing::AssertionResult stack_ends_with(const Json& sample,
                                           const std::vector<std::string>& outer) {
  const Json frames = sample.value("frames", Json::array());
  size_t at = frames.size();
  for (size_t i = 0; i < frames.size(); ++i) {
    if (!outer.empty() && name_matches(outer.front(), function_name(frames[i])) &&
        !frames[i].value("inlined", false)) {
      at = i;
      break;
    }
  }
  std::string want;
  for (const auto& o : outer) {
    want += " " + o;
  }
  auto fail = [&](const std::string& why) {
    return ::testing::AssertionFailure()
           << why << "; expected the stack to end with" << want << ", got:\n"
           << stack_text(sample);
  };
  if (at == frames.size()) {
    return fail("no " + (outer.empty() ? std::string("frame") : outer.front()));
  }
  for (size_t i = 0; i < at; ++i) {
    // Inside the expected function: system code, inlined calls, or the program's own PLT
    // stub on the way to a system function (named "name@plt").
    const std::string name = function_name(frames[i]);
    const bool plt = name.size() > 4 && name.compare(name.size() - 4, 4, "@plt") == 0;
    if (!in_system_module(frames[i]) && !frames[i].value("inlined", false) && !plt) {
      return fail("frame " + std::to_string(i) + " (" + function_name(frames[i]) + ") is inside " +
                  outer.front() + " but in no system module");
    }
  }
  if (frames.size() - at != outer.size()) {
    return fail(std::to_string(frames.size() - at) + " frames from " + outer.front() + ", not " +
                std::to_string(outer.size()));
  }
  for (size_t k = 0; k < outer.size(); ++k) {
    if (!name_matches(outer[k], function_name(frames[at + k]))) {
      return fail("frame " + std::to_string(at + k) + " is " + function_name(frames[at + k]) +
                  ", not " + outer[k]);
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult stack_is(const Json& sample, const std::vector<std::string>& stack) {
  const Json frames = sample.value("frames", Json::array());
  bool same = frames.size() == stack.size();
  for (size_t i = 0; same && i < stack.size(); ++i) {
    same = name_matches(stack[i], function_name(frames[i]));
  }
  if (same) {
    return ::testing::AssertionSuccess();
  }
  std::string want;
  for (const auto& f : stack) {
    want += "  " + f + "\n";
  }
  return ::testing::AssertionFailure() << "expected the whole stack\n"
                                       << want << "got:\n"
                                       << stack_text(sample);
}

std::string label(const Json& sample, const std::string& key) {
  const Json labels = sample.value("labels", Json::object());
  return labels.contains(key) && labels[key].is_string() ? labels[key].get<std::string>() : "";
}

long long sum_values(const Json& profile, int index, const std::function<bool(const Json&)>& keep) {
  long long sum = 0;
  if (index < 0) {
    return 0;
  }
  for (const Json& s : profile.value("samples", Json::array())) {
    if (!keep || keep(s)) {
      sum += s.at("values").at(static_cast<size_t>(index)).get<long long>();
    }
  }
  return sum;
}

std::map<std::string, long long> totals(const Json& profile) {
  std::map<std::string, long long> out;
  const Json& types = profile.at("sample_types");
  for (size_t i = 0; i < types.size(); ++i) {
    out[types[i].value("type", "") + "/" + types[i].value("unit", "")] =
        sum_values(profile, static_cast<int>(i));
  }
  return out;
}

std::string describe_samples(const Json& profile, size_t max) {
  std::ostringstream s;
  size_t n = 0;
  for (const Json& sample : profile.value("samples", Json::array())) {
    if (n++ == max) {
      s << "  ... (" << profile["samples"].size() << " samples)\n";
      break;
    }
    s << "  " << sample.value("values", Json::array()).dump() << " "
      << sample.value("labels", Json::object()).dump() << " |";
    for (const Json& f : sample.value("frames", Json::array())) {
      s << " "
        << (f.value("function", Json()).is_string() ? f["function"].get<std::string>() : "?");
    }
    s << "\n";
  }
  return s.str();
}

std::optional<Json> load_capture(const std::string& dir) {
  auto text = read_text(dir + "/capture.json");
  if (!text) {
    ADD_FAILURE() << dir << "/capture.json was not written";
    return std::nullopt;
  }
  try {
    return Json::parse(*text);
  } catch (const std::exception& e) {
    ADD_FAILURE() << dir << "/capture.json is not JSON: " << e.what();
    return std::nullopt;
  }
}

std::optional<RunResult> go_pprof(const std::vector<std::string>& args) {
  const std::string go = go_binary();
  if (go.empty()) {
    return std::nullopt;
  }
  TempDir home;
  RunOptions options;
  options.timeout = milliseconds(60000);
  // run() takes no environment: env(1) sets it (HOME, GOCACHE, PPROF_TMPDIR: no writes to
  // the real home; no PPROF_BINARY_PATH, so pprof finds binaries by the mappings' paths).
  std::vector<std::string> argv = {"/usr/bin/env",
                                   "HOME=" + home.path(),
                                   "GOCACHE=" + home.file("cache"),
                                   "PPROF_TMPDIR=" + home.path(),
                                   "GOTOOLCHAIN=local",
                                   go,
                                   "tool",
                                   "pprof"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, options);
}

std::optional<RunResult> pprof_raw(const std::string& file) { return go_pprof({"-raw", file}); }

std::optional<std::string> gunzip(const std::string& in) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) {  // gzip only
    return std::nullopt;
  }
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  std::vector<char> buf(65536);
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf.data(), buf.size() - zs.avail_out);
  }
  inflateEnd(&zs);
  return rc == Z_STREAM_END ? std::optional<std::string>(out) : std::nullopt;
}

std::optional<std::vector<std::string>> pprof_comments(const std::string& file) {
  auto gz = read_text(file);
  auto raw = gz ? gunzip(*gz) : std::nullopt;
  perftools::profiles::Profile p;
  if (!raw || !p.ParseFromString(*raw)) {
    ADD_FAILURE() << file << " is missing or not a gzipped profile";
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (int64_t i : p.comment()) {
    if (i < 0 || i >= p.string_table_size()) {
      ADD_FAILURE() << file << ": a comment's string index " << i << " is out of range";
      return std::nullopt;
    }
    out.push_back(p.string_table(static_cast<int>(i)));
  }
  return out;
}

std::map<std::string, long long> pprof_raw_totals(const std::string& raw) {
  // Samples:
  // samples/count cpu/nanoseconds
  //           1   10101010: 1 2 3
  //                 label:[...]
  // Locations
  std::map<std::string, long long> out;
  std::istringstream in(raw);
  std::string line;
  bool in_samples = false;
  std::vector<std::string> types;
  while (std::getline(in, line)) {
    if (line.rfind("Samples:", 0) == 0) {
      in_samples = true;
      continue;
    }
    if (!in_samples) {
      continue;
    }
    if (line.rfind("Locations", 0) == 0 || line.rfind("Mappings", 0) == 0) {
      break;
    }
    if (types.empty()) {
      std::istringstream words(line);
      std::string w;
      while (words >> w) {
        // pprof marks the default sample type: "inuse_space/bytes[dflt]".
        if (w.size() > 6 && w.compare(w.size() - 6, 6, "[dflt]") == 0) {
          w.resize(w.size() - 6);
        }
        types.push_back(w);
        out[w] = 0;
      }
      continue;
    }
    auto colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    const std::string head = line.substr(0, colon);
    if (head.find_first_not_of(" 0123456789-") != std::string::npos) {
      continue;  // a label line: "    key:[value] ..."
    }
    std::istringstream values(head);
    std::vector<long long> v;
    long long x;
    while (values >> x) {
      v.push_back(x);
    }
    if (v.size() == types.size()) {
      for (size_t i = 0; i < v.size(); ++i) {
        out[types[i]] += v[i];
      }
    }
  }
  return out;
}

::testing::AssertionResult outputs_valid(
    const std::string& dir,
    const std::map<std::string, std::vector<std::string>>& expect_functions) {
  auto text = read_text(dir + "/capture.json");
  if (!text) {
    return ::testing::AssertionFailure() << dir << "/capture.json was not written";
  }
  if (auto valid = schema_valid(*text); !valid) {
    return valid;
  }
  Json doc;
  try {
    doc = Json::parse(*text);
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "capture.json is not JSON: " << e.what();
  }
  const Json profiles = doc.value("profiles", Json::object());
  for (const auto& [kind, profile] : profiles.items()) {
    const std::string file = dir + "/" + kind + ".pb.gz";
    if (!fs::exists(file)) {
      return ::testing::AssertionFailure() << file << " was not written";
    }
    auto raw = pprof_raw(file);
    if (!raw) {
      return ::testing::AssertionFailure() << kNoGo;
    }
    if (raw->exit_code != 0) {
      return ::testing::AssertionFailure()
             << "go tool pprof -raw " << file << " rejects it: " << raw->describe();
    }
    auto from_pprof = pprof_raw_totals(raw->out);
    auto from_json = totals(profile);
    if (from_pprof != from_json) {
      std::ostringstream s;
      for (const auto& [k, v] : from_json) {
        s << " json " << k << "=" << v;
      }
      for (const auto& [k, v] : from_pprof) {
        s << " pprof " << k << "=" << v;
      }
      return ::testing::AssertionFailure() << kind << ": the totals of `go tool pprof -raw " << file
                                           << "` differ from capture.json:" << s.str() << "\n"
                                           << raw->out.substr(0, 3000);
    }
    if (auto it = expect_functions.find(kind); it != expect_functions.end()) {
      for (const auto& fn : it->second) {
        if (raw->out.find(" " + fn + " ") == std::string::npos &&
            raw->out.find(" " + fn + "\n") == std::string::npos) {
          return ::testing::AssertionFailure()
                 << "go tool pprof -raw " << file << " does not name " << fn << ":\n"
                 << raw->out.substr(0, 4000);
        }
      }
    }
  }
  return ::testing::AssertionSuccess();
}

bool probes_in(pid_t pid) {
  return read_text("/proc/" + std::to_string(pid) + "/maps").value_or("").find("profctl-probe") !=
         std::string::npos;
}

void start_and_wait_for_probes(Child& target, BgProcess& p) {
  ASSERT_TRUE(wait_traced(target.pid())) << p.err();
  ASSERT_TRUE(wait_until(
      [&] {
        return probes_in(target.pid()) && p.err().find("probes installed") != std::string::npos;
      },
      milliseconds(30000)))
      << "the probes never appeared: " << p.err();
}

void end_with_signal(BgProcess& p, int sig) {
  ASSERT_TRUE(wait_until([&] { return catches(p.pid(), sig); }, milliseconds(30000)));
  ASSERT_TRUE(p.signal(sig));
  auto st = p.wait_exit(milliseconds(60000));
  ASSERT_TRUE(st) << "profctl did not end after " << sigabbrev_np(sig);
  EXPECT_EQ(exit_code_of(*st), 0) << p.describe_status() << "\n" << p.err();
}

}  // namespace profctl::testing::sampling
