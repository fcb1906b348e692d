#!/usr/bin/env bash
# The whole test suite: installs dependencies (Debian packages), builds, and runs every test
# (unit, BPF fixtures, namespace tests, integration in the lab) through ctest. Run as root.
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
cd build
ctest --output-on-failure --timeout 900 "$@"
