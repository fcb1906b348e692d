#!/usr/bin/env bash
# The arm64 Debian package, cross-built as a router's would be: `scripts/build-deb.sh --arch arm64`
# (a Debian cross build in a cached build root; the host's apt setup unchanged), then its contents:
# the three commands at their paths, the unit and the example, and the binaries aarch64 ELF.
# Installing and running it on arm64 is not done here (tests/packaging/test_deb.sh does that for
# amd64; the arm64 VM runs the BPF suite, vmtest/README.md).
#
#   tests/packaging/test_deb_arm64.sh        (exit 0 passed, 1 failed, 77 cannot be built here)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (the cross build root)"; exit 77; }
out=$(mktemp -d /tmp/uplinkd-deb-arm64.XXXXXX)
trap 'rm -rf "$out"' EXIT
t0=$(date +%s)
status=0
"$repo/scripts/build-deb.sh" --arch arm64 --out "$out" --jobs "$(nproc)" || status=$?
((status == 77)) && { echo "SKIP: scripts/build-deb.sh --arch arm64 cannot build here (above)"; exit 77; }
((status == 0)) || { echo "test_deb_arm64: FAIL: the arm64 build failed (exit $status, above)"; exit 1; }
echo "test_deb_arm64: built in $(($(date +%s) - t0)) s"
deb=$(find "$out" -maxdepth 1 -name 'uplinkd_*_arm64.deb' | head -n 1)
[[ -n $deb ]] || { echo "test_deb_arm64: FAIL: no uplinkd_*_arm64.deb in $out: $(ls "$out")"; exit 1; }
[[ $(dpkg-deb -f "$deb" Architecture) == arm64 ]] || { echo "test_deb_arm64: FAIL: $deb is not Architecture arm64"; exit 1; }
contents=$(dpkg-deb -c "$deb")
for path in ./usr/sbin/uplinkd ./usr/sbin/uplinkctl './usr/sbin/mwan3 -> uplinkctl' uplinkd.service \
  ./usr/share/doc/uplinkd/examples/mwan3; do
  grep -qF -- "$path" <<<"$contents" || { echo "test_deb_arm64: FAIL: $deb lacks $path"; exit 1; }
done
dpkg-deb -x "$deb" "$out/root"
for bin in uplinkd uplinkctl; do
  kind=$(file -b "$out/root/usr/sbin/$bin")
  [[ $kind == *"ELF 64-bit"*"ARM aarch64"* ]] || { echo "test_deb_arm64: FAIL: $bin is '$kind'"; exit 1; }
  echo "test_deb_arm64: $bin: $kind"
done
echo "test_deb_arm64: PASS: $(basename "$deb") ($(stat -c %s "$deb") bytes): uplinkd, uplinkctl, mwan3, the unit and the example; aarch64"
