// SPDX-License-Identifier: MIT
// profctl's own vDSO image, for targets whose vDSO can no longer be read.
//
// A sample is sometimes unwound after its process exited (the last samples of a run, a
// followed child): /proc/PID/mem is gone, and with it the only copy of the target's vDSO,
// so its frames (clock_gettime's syscall, say) had no module. The kernel maps one image per
// ABI into every process, so a 64-bit target of this machine's architecture has the very
// image profctl has; that is what `perf` does too (it keeps its own vDSO for the same
// reason).
#pragma once

#include <link.h>

#include <cstdint>
#include <span>
#include <string>

namespace profctl {

// A copy of profctl's own vDSO, made once (empty when it has none).
std::span<const char> own_vdso_image();

// True when a target whose executable is `exe_path` (opened as given: the caller resolves
// /proc/PID/root) and whose [vdso] mapping is `vdso_bytes` long has profctl's vDSO: the
// executable is an ELF of profctl's class and machine, and the sizes agree.
bool shares_own_vdso(const std::string& exe_path, uint64_t vdso_bytes);

}  // namespace profctl
