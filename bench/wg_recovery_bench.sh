#!/usr/bin/env bash
# WireGuard tunnel recovery after a failover, without and with uplinkd, from one run (issue 4).
# The field report's setup (wireguard-stuck-on-backup-uplink): the tunnel (wireguard-go, router <->
# core) comes up while the primary (wan1) is down, netifd pins a host route to the endpoint via the
# backup (wan2, tbf-shaped). Then the primary returns. "Recovery" = time from the primary's return
# until the tunnel's outer packets cross isp1 again (nft counter on isp1; a ping through the tunnel
# every 50 ms keeps outer packets flowing).
#   without uplinkd: the pinned route keeps the tunnel on the backup; reported as "not within N s"
#   with uplinkd (interval 0.5, timeout 0.5, up 3): detection of the return + route hygiene
#
#   sudo bench/wg_recovery_bench.sh [window seconds=15]   (UPLINKD_BUILD=dir for another build)
# About 45 s. Exit 77 when wireguard-go, wg or the build is missing.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
WINDOW=${1:-15}
[[ $WINDOW =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [window seconds]" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
ul_init wg_recovery_bench daemon
for t in wireguard-go wg; do command -v "$t" >/dev/null 2>&1 || skip "needs '$t'"; done
[[ -c /dev/net/tun ]] || skip "needs /dev/net/tun (wireguard-go)"

P=$UL_PREFIX
RDEV=wgr$$
CDEV=wgc$$
WGDIR=$UL_TMP/wg
EP=203.0.113.5
# shellcheck disable=SC2317 # run by the EXIT trap
wg_cleanup() {
  local rc=$?
  lab_wg_down "$P" "$RDEV" "$CDEV" "$WGDIR"
  (exit "$rc") # ul_cleanup reads the status from $?
  ul_cleanup
}
trap wg_cleanup EXIT

ul_lab_up
ip netns exec "$P-isp1" nft -f - <<EOF || fail "nft counter on isp1"
table inet wgcount {
  counter to_ep {}
  chain count {
    type filter hook forward priority -10; policy accept;
    ip daddr $EP udp dport 51820 counter name to_ep
  }
}
EOF
outer() { ip netns exec "$P-isp1" nft list counter inet wgcount to_ep | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }
# recovery <label>: lift isp1's outage; seconds until an outer packet crosses isp1 (or "none").
recovery() {
  local n t0 m
  n=$(outer)
  t0=$(now)
  lab_outage "$P" isp1 off
  while fle "$(fsub "$t0" "$(now)")" "$WINDOW"; do
    m=$(outer)
    ((m > n)) && { fsub "$t0" "$(now)"; return 0; }
    sleep 0.05
  done
  echo none
}

lab_outage "$P" isp1 on
lab_shape "$P" 4mbit || fail "tbf on the backup"
out=$(lab_wg_up "$P" "$RDEV" "$CDEV" "$WGDIR" 2>&1) || fail "wireguard-go tunnel: $out"
ip -n "$P-rtr" route add "$EP/32" via 198.51.100.1 dev wan2 proto static || fail "netifd-style host route"
for ((i = 0; i < 20; i++)); do
  ip netns exec "$P-rtr" ping -n -c 1 -W 1 10.99.0.1 >/dev/null 2>&1 && break
done
((i < 20)) || fail "no ping through the tunnel over the backup"
ip netns exec "$P-rtr" ping -n -q -i 0.05 -w 120 10.99.0.1 </dev/null >/dev/null 2>&1 &
ul_bg_add $!

log "without uplinkd: the primary returns"
without=$(recovery without)

lab_outage "$P" isp1 on
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" 0.5 0.5 3 3
start_uplinkd "$P" "$CFG"
wait_uplinkd_ready 15 || fail "uplinkd is not ready"
wait_iface_state wan2 online 20 || fail "wan2 not online"
wait_iface_state wan1 offline 20 || fail "wan1 not offline during its outage"
sleep 6 # one WireGuard poll (5 s): the peer and its pinned route are known
log "with uplinkd: the primary returns"
with=$(recovery with)
[[ $with == none ]] && fail "with uplinkd the tunnel did not return to wan1 within $WINDOW s"
if [[ $without == none ]]; then
  log "RESULT wg_recovery: without uplinkd not within $WINDOW s (the pinned route keeps the tunnel on the backup); with uplinkd $with s"
else
  log "RESULT wg_recovery: without uplinkd $without s; with uplinkd $with s"
fi
stop_uplinkd >/dev/null
exit 0
