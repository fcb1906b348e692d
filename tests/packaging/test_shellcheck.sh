#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# packaging.shellcheck: shellcheck on every shell script the OpenWrt and Debian packages ship, and
# the OpenWrt package's JSON (the rpcd ACL) through a JSON parser.
#
# Checked:
# - packaging/openwrt/*/files/*: each file whose first line is a shell shebang. The procd init
#   script (`#!/bin/sh /etc/rc.common`) is run by rc.common, which sources it, reads START and
#   USE_PROCD and calls its *_service functions: shellcheck only sees those variables assigned, so
#   for such scripts, and only for them, SC2034 (assigned but unused) is disabled. They are checked
#   as POSIX sh (-s sh): what busybox ash runs.
# - packaging/openwrt/*/Makefile: the maintainer scripts in `define Package/<name>/{preinst,postinst,
#   prerm,postrm}` blocks, with make's `$$` turned into `$` (as the build writes them out).
# - debian/: every file whose first line is a shell shebang (maintainer scripts, init scripts,
#   autopkgtests), and the shell scripts of this tree that debian/*.install lists as sources.
# Exit 77 (CTest: skipped) without shellcheck; 1 with the list of what failed.
set -euo pipefail

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "SKIP: shellcheck is not installed (Debian: apt-get install shellcheck)"
  exit 77
fi

here="${BASH_SOURCE[0]%/*}"
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
root="${UPLINKD_SOURCE:-$(cd "$here/../.." && pwd)}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

checked=0
failures=()

rel() { printf '%s\n' "${1#"$root"/}"; }

first_line() {
  local line=""
  IFS= read -r line <"$1" || true
  printf '%s\n' "$line"
}

is_shell_script() {
  case "$(first_line "$1")" in
    '#!/bin/sh'* | '#!/bin/bash'* | '#!/bin/dash'* | '#!/bin/ash'* | '#!/usr/bin/env sh'* | '#!/usr/bin/env bash'*)
      return 0 ;;
  esac
  return 1
}

# run_shellcheck <label> <file> [shellcheck options...]
run_shellcheck() {
  local label="$1" file="$2"
  shift 2
  echo "shellcheck $label"
  checked=$((checked + 1))
  if ! shellcheck "$@" "$file"; then
    failures+=("$label")
  fi
}

check_script() {
  local file="$1"
  case "$(first_line "$file")" in
    '#!/bin/sh /etc/rc.common'*)
      # rc.common reads START/USE_PROCD: see the header.
      run_shellcheck "$(rel "$file")" "$file" -s sh -e SC2034 ;;
    *)
      run_shellcheck "$(rel "$file")" "$file" ;;
  esac
}

declare -A seen=()

# ---- OpenWrt -------------------------------------------------------------------------------------
openwrt_scripts=0
for file in "$root"/packaging/openwrt/*/files/*; do
  [ -f "$file" ] || continue
  if is_shell_script "$file"; then
    check_script "$file"
    openwrt_scripts=$((openwrt_scripts + 1))
  fi
done

for makefile in "$root"/packaging/openwrt/*/Makefile; do
  [ -f "$makefile" ] || continue
  pkgdir="$(basename "$(dirname "$makefile")")"
  # Each define block to a file named after it; make's `$$` is a literal `$` in the script.
  awk -v dir="$work" -v pkg="$pkgdir" '
    /^define Package\/[^\/]+\/(preinst|postinst|prerm|postrm)[ \t]*$/ {
      name = $2; gsub("/", "_", name); out = dir "/" pkg "-" name; next
    }
    /^endef/ { if (out != "") close(out); out = ""; next }
    out != "" { line = $0; gsub(/\$\$/, "$", line); print line > out }
  ' "$makefile"
  for script in "$work/$pkgdir"-*; do
    [ -f "$script" ] || continue
    block="${script##*/}"
    block="${block#"$pkgdir"-}"
    run_shellcheck "$(rel "$makefile") (define ${block//_//})" "$script" -s sh
    openwrt_scripts=$((openwrt_scripts + 1))
  done
done

if [ "$openwrt_scripts" -eq 0 ]; then
  failures+=("packaging/openwrt: no shell script found (was the package moved?)")
fi

json_check() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -m json.tool "$1" >/dev/null
  elif command -v jq >/dev/null 2>&1; then
    jq empty "$1"
  else
    echo "neither python3 nor jq to parse JSON with" >&2
    return 1
  fi
}

for file in "$root"/packaging/openwrt/*/files/*.json; do
  [ -f "$file" ] || continue
  echo "json $(rel "$file")"
  checked=$((checked + 1))
  if ! json_check "$file"; then
    failures+=("$(rel "$file") (JSON)")
  fi
done

# ---- Debian --------------------------------------------------------------------------------------
if [ -d "$root/debian" ]; then
  while IFS= read -r -d '' file; do
    if is_shell_script "$file"; then
      seen["$file"]=1
      check_script "$file"
    fi
  done < <(find "$root/debian" -type f -print0 | sort -z)

  # Scripts of this tree the .deb installs: the source fields of debian/*.install lines
  # ("src... dest", or one field); paths that only exist in the build's install tree are skipped.
  for install in "$root"/debian/install "$root"/debian/*.install; do
    [ -f "$install" ] || continue
    while read -r -a fields; do
      [ "${#fields[@]}" -gt 0 ] || continue
      case "${fields[0]}" in '#'*) continue ;; esac
      sources=("${fields[@]}")
      if [ "${#fields[@]}" -gt 1 ]; then
        unset 'sources[${#sources[@]}-1]'
      fi
      for pattern in "${sources[@]}"; do
        for file in "$root"/$pattern; do
          [ -f "$file" ] || continue
          [ -z "${seen[$file]:-}" ] || continue
          if is_shell_script "$file"; then
            seen["$file"]=1
            check_script "$file"
          fi
        done
      done
    done <"$install"
  done
else
  echo "(no debian/ directory: nothing of the Debian package to check)"
fi

echo
if [ "${#failures[@]}" -gt 0 ]; then
  echo "FAILED: ${#failures[@]} of $checked check(s):"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
echo "OK: $checked file(s) checked"
