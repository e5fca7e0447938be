// SPDX-License-Identifier: MIT
// Result<T>: the return type of every recoverable failure (STYLE 17). std::expected is
// not usable on Debian 12's toolchains, so this is a small one of our own.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace profctl {

struct Error {
  std::string what;  // what failed, e.g. "PTRACE_SEIZE 1234"
  int err = 0;       // errno when the failure came from a syscall, else 0

  // "what: strerror(err)" or just "what".
  std::string message() const;
};

// An Error from the current errno (read at the call, before anything can clobber it).
inline Error errno_error(std::string what, int err = errno) { return Error{std::move(what), err}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace profctl
