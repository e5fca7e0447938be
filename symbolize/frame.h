// SPDX-License-Identifier: MIT
// Frame: one symbolized frame, as capture.json's FRAME (docs/DESIGN.md "Output").
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace profctl {

struct Frame {
  uint64_t pc = 0;      // the unwound pc (a return address for caller frames)
  std::string module;   // module path, "[vdso]", or "[unknown]"
  uint64_t offset = 0;  // pc relative to the module's ELF load address (addr2line -e)
  std::optional<std::string> function;  // demangled; nullopt when unknown
  std::optional<std::string> file;
  std::optional<int> line;
  bool inlined = false;  // an inlined call, listed before the frame it was inlined into
  // Where the function that holds pc starts, in the same terms as `offset`: the ELF
  // symbol's value, else the start of the CFI's FDE (a stripped module still has
  // .eh_frame). Every pc of one function has the same value, so it names the function when
  // `function` is unknown ("libfoo.so+0x15ae0"). nullopt when neither is known.
  std::optional<uint64_t> function_start;

  bool operator==(const Frame&) const = default;
};

}  // namespace profctl
