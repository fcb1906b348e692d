#!/usr/bin/env bash
# The whole test suite: installs dependencies (Debian packages), builds, and runs every test
# (unit, BPF fixtures, namespace tests, integration in the lab) through ctest, then suites inside
# VMs (vmtest/run): BPF and namespace on Debian's 6.1 and 6.12, the lab's kernel scenarios on 6.12,
# BPF on arm64 6.12. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (the BPF and namespace tests load programs and create namespaces)" >&2
  exit 1
fi
./scripts/install-deps.sh
# BPF tests and the daemon need a BPF filesystem; mount one if the machine has none.
if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  mount -t bpf bpf /sys/fs/bpf
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
status=0
(cd build && ctest --output-on-failure --timeout 900 "$@") || status=$?
# The parsers' libFuzzer targets (tests/fuzz), UPLINKD_FUZZ_SECONDS each, in build-fuzz with clang.
./scripts/fuzz.sh "${UPLINKD_FUZZ_SECONDS:-30}" || status=1

# The BPF suite on Debian's 6.1 and the BPF and namespace suites on 6.12 (virtme-ng VMs under qemu;
# vmtest/README.md), then the lab scenarios the host cannot run (kernel WireGuard, stale flows,
# PPPoE) on 6.12, then the BPF suite on arm64. The namespace suite on 6.1 (about 15 minutes under TCG here)
# is one command outside the test command: `vmtest/run --kernel 6.1 --suite all` (its last result
# is in vmtest/README.md). UPLINKD_VMTEST=0 skips them all; UPLINKD_VM_RUNS chooses the x86_64 runs
# as kernel:suite words (default "6.1:bpf 6.12:all"; UPLINKD_VM_KERNELS with UPLINKD_VM_SUITE, when
# set, give one suite for every kernel listed), UPLINKD_VM_LAB_KERNELS the lab runs and
# UPLINKD_VM_ARM64_KERNELS the arm64 runs ("" for none). A kernel or architecture that
# cannot be had here (exit 77) is a skip, said so; a failing test inside a VM fails this script,
# with the test's own output above.
vm_run() {
  local what=$1 vm_status=0
  shift
  echo "test.sh: vmtest $what"
  vmtest/run "$@" --timeout "${UPLINKD_VM_TIMEOUT:-2400}" || vm_status=$?
  case $vm_status in
    0) echo "test.sh: vmtest $what passed" ;;
    77) echo "test.sh: vmtest $what SKIPPED (the reason is printed above)" ;;
    *) echo "test.sh: vmtest $what FAILED (exit $vm_status)"; status=1 ;;
  esac
}
if [ "${UPLINKD_VMTEST:-1}" != 0 ]; then
  runs=${UPLINKD_VM_RUNS-6.1:bpf 6.12:all}
  if [ -n "${UPLINKD_VM_KERNELS+set}" ]; then
    runs=""
    for kernel in $UPLINKD_VM_KERNELS; do runs+=" $kernel:${UPLINKD_VM_SUITE:-all}"; done
  fi
  for run in $runs; do
    vm_run "--kernel ${run%%:*} --suite ${run#*:}" --kernel "${run%%:*}" --suite "${run#*:}"
  done
  for kernel in ${UPLINKD_VM_LAB_KERNELS-6.12}; do
    vm_run "--kernel $kernel --suite lab" --kernel "$kernel" --suite lab
  done
  for kernel in ${UPLINKD_VM_ARM64_KERNELS-6.12}; do
    vm_run "--kernel $kernel --arch arm64 --suite bpf" --kernel "$kernel" --arch arm64 --suite bpf
  done
fi
exit "$status"
