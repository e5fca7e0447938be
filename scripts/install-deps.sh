#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages profctl builds, tests and benchmarks with; only the
# missing ones, so a second run costs nothing.
set -euo pipefail
packages=(
  build-essential cmake pkg-config libzydis-dev
  libdw-dev libelf-dev libcli11-dev libspdlog-dev nlohmann-json3-dev libgtest-dev robin-map-dev
  libprotobuf-dev protobuf-compiler zlib1g-dev
  golang-go python3 python3-jsonschema elfutils libc6-dbg lld chromium
  libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 heaptrack zstd
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=()
[[ $EUID -ne 0 ]] && sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
