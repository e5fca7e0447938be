// SPDX-License-Identifier: MIT
#include "base/safe_file.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <deque>

namespace profctl {
namespace {

constexpr size_t kMaxStem = 64;
// As the kernel's MAXSYMLINKS: a cycle of links ends in ELOOP, not in a hang.
constexpr int kMaxLinks = 40;

bool stem_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// "a//b/./c/" -> a, b, c: what the kernel resolves ("." is a no-op; ".." is a real entry,
// kept, as the kernel goes up from wherever the walk is, links followed).
void push_components(std::string_view path, std::deque<std::string>& out) {
  std::deque<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) {
      end = path.size();
    }
    const std::string_view c = path.substr(start, end - start);
    if (!c.empty() && c != ".") {
      parts.emplace_back(c);
    }
    start = end + 1;
  }
  out.insert(out.begin(), parts.begin(), parts.end());
}

std::string joined(const std::string& dir, std::string_view name) {
  if (dir.empty()) {
    return std::string(name);
  }
  return dir + (dir.back() == '/' ? "" : "/") + std::string(name);
}

Result<Fd> open_path_dir(const char* path) {
  Fd fd(::open(path, O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    return errno_error(std::string("cannot open ") + path);
  }
  return fd;
}

// The target of the symlink `link` (an O_PATH|O_NOFOLLOW fd of the link itself, so what is
// read is the link that was checked, not one swapped in since).
Result<std::string> link_target(const Fd& link, const std::string& shown) {
  std::array<char, PATH_MAX> buf{};
  const ssize_t n = ::readlinkat(link.get(), "", buf.data(), buf.size());
  if (n < 0) {
    return errno_error("cannot read the symlink " + shown);
  }
  if (static_cast<size_t>(n) >= buf.size()) {
    return Error{"cannot read the symlink " + shown, ENAMETOOLONG};
  }
  return std::string(buf.data(), static_cast<size_t>(n));
}

bool valid_entry_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos;
}

std::string random_hex() {
  std::array<unsigned char, 8> bytes{};
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n <= 0) {
      break;  // no entropy yet: the pid and the counter below still differ per try
    }
    got += static_cast<size_t>(n);
  }
  static std::atomic<unsigned> counter{0};
  std::string out;
  constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

}  // namespace

bool is_safe_file_stem(std::string_view name) {
  if (name.empty() || name.size() > kMaxStem || name.front() == '.' || name.front() == '-') {
    return false;
  }
  for (char c : name) {
    if (!stem_char(c)) {
      return false;
    }
  }
  return true;
}

std::string printable_name(std::string_view text) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size() && i < kMaxStem; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (text.size() > kMaxStem) {
    out += "...";
  }
  return out;
}

Result<OutputDir> OutputDir::open(const std::string& path, bool create) {
  if (path.empty()) {
    return Error{"cannot use an empty path as the output directory", ENOENT};
  }
  const uid_t me = ::geteuid();
  std::deque<std::string> todo;
  push_components(path, todo);
  const bool absolute = path.front() == '/';
  auto start = open_path_dir(absolute ? "/" : ".");
  if (!start) {
    return start.error();
  }
  Fd cur = std::move(*start);
  // The directory `cur` as a path, for messages: the walk's own, links resolved.
  std::string shown = absolute ? "/" : "";
  int links = 0;
  while (!todo.empty()) {
    const std::string c = std::move(todo.front());
    todo.pop_front();
    const std::string here = joined(shown, c);
    Fd next(::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid() && errno == ENOENT && create) {
      if (::mkdirat(cur.get(), c.c_str(), 0755) != 0 && errno != EEXIST) {
        return errno_error("cannot create the output directory " + here);
      }
      next = Fd(::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    if (!next.valid()) {
      return errno_error("cannot use the output directory " + here);
    }
    struct stat st {};
    if (::fstat(next.get(), &st) != 0) {
      return errno_error("cannot use the output directory " + here);
    }
    if (S_ISDIR(st.st_mode)) {
      cur = std::move(next);
      shown = here;
      continue;
    }
    if (!S_ISLNK(st.st_mode)) {
      return Error{"cannot use " + here + " as the output directory", ENOTDIR};
    }
    if (st.st_uid != 0 && st.st_uid != me) {
      return Error{"refusing the output directory " + path + ": " + here +
                   " is a symlink owned by uid " + std::to_string(st.st_uid) +
                   " (not by you or root), who could point it anywhere"};
    }
    if (++links > kMaxLinks) {
      return Error{"cannot use the output directory " + path, ELOOP};
    }
    auto target = link_target(next, here);
    if (!target) {
      return target.error();
    }
    if (target->empty()) {
      return Error{"cannot use the output directory " + here, ENOENT};
    }
    push_components(*target, todo);
    if (target->front() == '/') {
      auto root = open_path_dir("/");
      if (!root) {
        return root.error();
      }
      cur = std::move(*root);
      shown = "/";
    }
  }
  return OutputDir(std::move(cur), path);
}

std::string OutputDir::path_of(std::string_view name) const { return joined(path_, name); }

std::string OutputDir::describe(std::string_view for_name) const {
  return for_name.empty() ? "a file in " + path_ : path_of(for_name);
}

Result<std::optional<struct stat>> OutputDir::entry(std::string_view name) const {
  const std::string n(name);
  struct stat st {};
  if (::fstatat(fd_.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) {
      return std::optional<struct stat>();
    }
    return errno_error("cannot use " + path_of(name));
  }
  return std::optional<struct stat>(st);
}

Result<std::string> OutputDir::write_temporary(std::string_view for_name,
                                               std::string_view data) const {
  // A name nobody can guess: a file or link planted at a guessable one would make every
  // write fail (O_EXCL) and so stop the outputs.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string tmp = ".profctl-" + random_hex() + ".tmp";
    Fd fd(::openat(fd_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   0644));
    if (!fd.valid()) {
      if (errno == EEXIST) {
        continue;
      }
      return errno_error("cannot create " + describe(for_name));
    }
    auto fail = [&](int err) -> Result<std::string> {
      ::unlinkat(fd_.get(), tmp.c_str(), 0);
      return Error{"cannot write " + describe(for_name), err};
    };
    while (!data.empty()) {
      const ssize_t n = ::write(fd.get(), data.data(), data.size());
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        return fail(n < 0 ? errno : EIO);
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    // close(2) is where some filesystems (NFS, a full quota) report a failed write.
    if (Result<void> r = fd.close(); !r) {
      return fail(r.error().err != 0 ? r.error().err : EIO);
    }
    return tmp;
  }
  return Error{"cannot create " + describe(for_name), EEXIST};
}

Result<void> OutputDir::write_file(std::string_view name, std::string_view data) const {
  if (!valid_entry_name(name)) {
    return Error{"cannot write " + path_of(name) + ": not a plain file name", EINVAL};
  }
  auto tmp = write_temporary(name, data);
  if (!tmp) {
    return tmp.error();
  }
  const std::string final_name(name);
  if (::renameat(fd_.get(), tmp->c_str(), fd_.get(), final_name.c_str()) != 0) {
    const int err = errno;
    ::unlinkat(fd_.get(), tmp->c_str(), 0);
    return Error{"cannot write " + path_of(name), err};
  }
  return {};
}

Result<void> OutputDir::test_write() const {
  auto tmp = write_temporary("", "probe\n");
  if (!tmp) {
    return tmp.error();
  }
  if (::unlinkat(fd_.get(), tmp->c_str(), 0) != 0) {
    return errno_error("cannot remove " + path_of(*tmp));
  }
  return {};
}

SplitPath split_file_path(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    return {".", path};
  }
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace profctl
