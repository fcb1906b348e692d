#!/usr/bin/env bash
# WireGuard endpoints follow the active uplink (issue 4), with wireguard-go on the router and on the
# core (the host has no kernel WireGuard module): the scenario of wireguard_scenario.sh (field report
# wireguard-stuck-on-backup-uplink, failover and failback with the outer packets' uplink and source
# address, an endpoint that moves, a full tunnel). test_wireguard_kernel.sh runs the same scenario
# with kernel WireGuard.
WG_IMPL=go
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/wireguard_scenario.sh"
