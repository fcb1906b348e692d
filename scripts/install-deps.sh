#!/usr/bin/env bash
# Installs every build and test dependency of uplinkd from Debian's packages (bookworm or later).
# Idempotent: packages already present are left alone. Run as root.
set -euo pipefail

packages=(
  # build
  cmake make g++ clang llvm pkg-config
  libbpf-dev bpftool libxdp-dev libelf-dev zlib1g-dev
  libnl-3-dev libnl-route-3-dev libnl-genl-3-dev libnl-nf-3-dev libnftables-dev
  nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  linux-libc-dev
  libclang-rt-dev  # libFuzzer and sanitizer runtimes of the default clang (libclang-rt-14-dev on bookworm)
  libmicrohttpd-dev  # the metrics listener (/metrics and the status page)
  libsystemd-dev  # sd_notify: Type=notify readiness and the watchdog (optional at build time)
  libssl-dev openssl  # httping_ssl (HTTPS probes); openssl makes the tests' self-signed certificates
  # runtime and test tools
  iproute2 nftables conntrack iputils-ping iputils-arping iperf3
  wireguard-go wireguard-tools tcpdump procps python3
  ppp pppoe  # tests/integration/test_pppoe.sh: pppd with its rp-pppoe plugin, and pppoe-server (run in VMs)
  curl prometheus chromium  # tests/integration/test_metrics.sh: a real scraper and a real browser
  # packaging tests (tests/packaging): the .deb built, installed into a fresh root, inspected
  dpkg-dev debhelper mmdebstrap file shellcheck
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all packages present"
fi
