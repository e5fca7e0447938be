#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The whole test suite under sanitizers: configures build-sanitized/ (or $BUILD_DIR) with
# -DPROFCTL_SANITIZE=${SANITIZE:-undefined,float-cast-overflow} (e.g. SANITIZE=address,undefined), builds it and runs
# ctest. The first sanitizer report aborts the process that made it, so the test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
sanitize=${SANITIZE:-undefined,float-cast-overflow}
build=${BUILD_DIR:-build-sanitized}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROFCTL_SANITIZE="$sanitize" >/dev/null
cmake --build "$build" -j"$jobs"
# print_stacktrace: the report names the line; halt_on_error: also for ASan's own checks.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
cd "$build"
ctest --output-on-failure -j"$jobs" --timeout 600 "$@"
