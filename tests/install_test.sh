#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/install_test.sh CMAKE BUILD_DIR SOURCE_DIR VERSION: `cmake --install BUILD_DIR --prefix
# /usr` with DESTDIR in a temporary directory installs exactly the binary, the man page (the
# template with the project's version), the JSON schemas, README.md and LICENSE; nothing else.
set -euo pipefail
cmake=$1 build=$2 src=$3 version=$4
dest=$(mktemp -d "${TMPDIR:-/tmp}/profctl-install-XXXXXX")
trap 'rm -rf "$dest"' EXIT

DESTDIR=$dest "$cmake" --install "$build" --prefix /usr >/dev/null

expected=$(
  {
    echo usr/bin/profctl
    echo usr/share/man/man1/profctl.1
    for f in "$src"/schema/*.json; do echo "usr/share/profctl/schema/${f##*/}"; done
    echo usr/share/doc/profctl/README.md
    echo usr/share/doc/profctl/LICENSE
  } | LC_ALL=C sort
)
actual=$(cd "$dest" && find . -mindepth 1 ! -type d | sed 's|^\./||' | LC_ALL=C sort)
if [[ $actual != "$expected" ]]; then
  echo "installed files differ from the expected set (< expected, > installed):" >&2
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  exit 1
fi

man=$dest/usr/share/man/man1/profctl.1
if ! head -n 1 "$man" | grep -q "^\.TH PROFCTL 1 .*\"profctl $version\""; then
  echo "the man page's .TH line does not carry version $version: $(head -n 1 "$man")" >&2
  exit 1
fi
if ! sed "s/@PROJECT_VERSION@/$version/" "$src/man/profctl.1.in" | cmp -s - "$man"; then
  echo "the installed man page is not man/profctl.1.in with the version filled in" >&2
  exit 1
fi
for f in "$src"/schema/*.json; do
  cmp "$f" "$dest/usr/share/profctl/schema/${f##*/}"
done
cmp "$src/README.md" "$dest/usr/share/doc/profctl/README.md"
cmp "$src/LICENSE" "$dest/usr/share/doc/profctl/LICENSE"
[[ -x $dest/usr/bin/profctl ]] || { echo "usr/bin/profctl is not executable" >&2; exit 1; }
out=$("$dest/usr/bin/profctl" --version)
[[ $out == *"$version"* ]] || { echo "profctl --version says '$out', not $version" >&2; exit 1; }
echo "installed: $(echo "$actual" | tr '\n' ' ')"
