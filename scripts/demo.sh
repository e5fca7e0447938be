#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quick start, part 1: install what is missing, build, start the bundled demo workload and
# dump every thread's stack with `profctl stack`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh --target profctl profctl-demo
coproc DEMO { exec build/demo/profctl-demo; }
demo_pid=$DEMO_PID
trap 'kill -KILL "$demo_pid" 2>/dev/null; wait "$demo_pid" 2>/dev/null || true' EXIT
read -r ready pid <&"${DEMO[0]}"
[[ $ready == ready && $pid == "$demo_pid" ]] || { echo "demo did not start" >&2; exit 1; }
echo "\$ profctl stack $demo_pid" >&2
build/profctl stack "$demo_pid"
