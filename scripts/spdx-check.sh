#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every tracked source file of ours starts with an SPDX license line (LICENSE: MIT):
#   // SPDX-License-Identifier: MIT     C, C++, Go, protobuf
#   /* SPDX-License-Identifier: MIT */  assembly (.S), linker scripts (.ld)
#   # SPDX-License-Identifier: MIT      CMake, shell, Python (after the #! line when there is one)
# scripts/spdx-check.sh          lists the files without it and fails (ctest SpdxHeaders)
# scripts/spdx-check.sh --fix    adds it to those files and lists them
# Not ours, left as they are: report/profile.proto (pprof's wire format, after google/pprof).
# Outside a git checkout (a release tarball) there is no list of tracked files: exit 77 (skip).
set -euo pipefail
cd "$(dirname "$0")/.."
# The body is a function, read whole before it runs: --fix rewrites this file too.
main() {
  fix=false
  [[ ${1:-} == --fix ]] && fix=true
  git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "not a git checkout: skipped"; exit 77; }

  local -r exclude='^report/profile\.proto$'
  local -r id='SPDX-License-Identifier: MIT'

  header_for() {
    case $1 in
      *.cpp | *.h | *.c | *.go | *.proto) echo "// $id" ;;
      *.S | *.ld) echo "/* $id */" ;;
      *) echo "# $id" ;;
    esac
  }

  missing=()
  while IFS= read -r -d '' f; do
    [[ $f =~ $exclude ]] && continue
    [[ -f $f ]] || continue  # deleted in the work tree, not yet in the index
    want=$(header_for "$f")
    first=$(head -n 1 "$f")
    if [[ $first == '#!'* ]]; then
      line=$(sed -n 2p "$f")
    else
      line=$first
    fi
    [[ $line == "$want" ]] && continue
    missing+=("$f")
    if $fix; then
      tmp=$(mktemp "$f.spdx.XXXXXX")
      if [[ $first == '#!'* ]]; then
        { echo "$first"; echo "$want"; tail -n +2 "$f"; } >"$tmp"
      else
        { echo "$want"; cat "$f"; } >"$tmp"
      fi
      chmod --reference="$f" "$tmp"  # executable scripts stay executable
      mv "$tmp" "$f"                  # atomic: a build reading the file sees old or new
    fi
  done < <(git ls-files -z -- '*.cpp' '*.h' '*.c' '*.go' '*.py' '*.sh' '*.cmake' '*.proto' '*.S' \
             '*.ld' 'CMakeLists.txt' '*/CMakeLists.txt')

  if ((${#missing[@]} == 0)); then
    exit 0
  fi
  if $fix; then
    echo "added the SPDX line to ${#missing[@]} files:"
    printf '  %s\n' "${missing[@]}"
    exit 0
  fi
  echo "${#missing[@]} tracked source files lack '$id' on their first line (after #!);" \
       "scripts/spdx-check.sh --fix adds it:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
}
main "$@"
