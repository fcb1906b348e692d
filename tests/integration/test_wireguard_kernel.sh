#!/usr/bin/env bash
# WireGuard endpoints follow the active uplink (issues 4 and 6) with kernel WireGuard at both ends:
# the scenario of wireguard_scenario.sh, as test_wireguard.sh runs it with wireguard-go. Kernel
# WireGuard caches each peer's source address and route, so after a failover or a failback its
# outer packets could keep the dead uplink's address; the scenario checks at every stage that they
# cross only the active uplink's ISP, with that uplink's address, and that the tunnel passes traffic.
# Needs the wireguard module: it skips on this host (exit 77, with the reason) and runs in the vmtest
# VMs (vmtest/run --kernel 6.12 --suite lab), which set UL_TIME_SCALE for their slower clock.
WG_IMPL=kernel
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/wireguard_scenario.sh"
