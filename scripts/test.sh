#!/usr/bin/env bash
# The whole test suite: installs dependencies (Debian packages), builds, and runs every test
# (unit, BPF fixtures, namespace tests, integration in the lab) through ctest, then the BPF and
# namespace suites inside VMs on Debian's 6.1 and 6.12 kernels (vmtest/run). Run as root.
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

# The BPF and namespace suites again on the kernels routers run (Debian's 6.1 and 6.12, in
# virtme-ng VMs under qemu; vmtest/README.md). UPLINKD_VMTEST=0 skips them; UPLINKD_VM_KERNELS and
# UPLINKD_VM_SUITE choose. A kernel that cannot be had here (exit 77) is a skip, said so; a failing
# test inside a VM fails this script, with the test's own output above.
if [ "${UPLINKD_VMTEST:-1}" != 0 ]; then
  for kernel in ${UPLINKD_VM_KERNELS:-6.1 6.12}; do
    echo "test.sh: vmtest --kernel $kernel --suite ${UPLINKD_VM_SUITE:-all}"
    vm_status=0
    vmtest/run --kernel "$kernel" --suite "${UPLINKD_VM_SUITE:-all}" --timeout "${UPLINKD_VM_TIMEOUT:-2400}" || vm_status=$?
    case $vm_status in
      0) echo "test.sh: vmtest $kernel passed" ;;
      77) echo "test.sh: vmtest $kernel SKIPPED (the reason is printed above)" ;;
      *) echo "test.sh: vmtest $kernel FAILED (exit $vm_status)"; status=1 ;;
    esac
  done
fi
exit "$status"
