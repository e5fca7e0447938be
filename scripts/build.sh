#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures and builds profctl, its tests and its demo into build/ (RelWithDebInfo).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" "$@"
