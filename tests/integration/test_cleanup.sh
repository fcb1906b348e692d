#!/usr/bin/env bash
# uplinkd leaves the router as it found it after SIGTERM: no XDP program, no tc filter or clsact
# qdisc on the uplinks and the LAN device, the same policy rules and routing tables (IPv4 and IPv6),
# the same nftables ruleset, and no pin directory /sys/fs/bpf/uplinkd/<instance>.
#
# Pins are checked in the bpffs the daemon used: the lib runs the daemon inside a long-lived holder
# process's mount namespace (see lib.sh), which stands for a router's persistent /sys/fs/bpf. A check
# from a fresh `ip netns exec` would look at a new, empty bpffs instance and prove nothing.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init cleanup daemon

P=$UL_PREFIX
RTR=$P-rtr
DEVS=(wan1 wan2 lan0)
ul_lab_up
ensure_rtr_holder "$P" || fail "cannot set up the router's mount namespace"
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" 1 1 3 3

snapshot() {
  local d
  rtr_routing_snapshot "$P"
  echo "## nft list ruleset"
  ip netns exec "$RTR" nft list ruleset
  for d in "${DEVS[@]}"; do
    echo "## tc qdisc $d"
    ip netns exec "$RTR" tc qdisc show dev "$d"
  done
}
PIN=/sys/fs/bpf/uplinkd/$P

snapshot >"$UL_TMP/before.txt"
rtr_exec test -e "$PIN" && fail "pin directory $PIN exists before the daemon started"
# A fresh bpffs is not empty (the kernel's preloaded maps.debug/progs.debug): compare the pinned
# objects (regular files in bpffs) before and after.
rtr_exec find /sys/fs/bpf -type f | sort >"$UL_TMP/bpffs-before.txt"
info "bpffs before start: $(tr '\n' ' ' <"$UL_TMP/bpffs-before.txt")"
xdp_on "$P" wan1 && fail "XDP attached on wan1 before the daemon started"

start_uplinkd "$P" "$CFG"
ul_wait_tracking wan1 wan2
sleep 2

log "while running"
snapshot >"$UL_TMP/running.txt"
info "rules and routes while running (changes against before start):"
diff "$UL_TMP/before.txt" "$UL_TMP/running.txt" | grep '^[<>]' | head -n 40 | sed 's/^/    | /'
rtr_exec test -d "$PIN" || fail "pin directory $PIN does not exist while uplinkd runs (bpffs: $(rtr_exec find /sys/fs/bpf -maxdepth 3 | tr '\n' ' '))"
pass "pin directory $PIN exists while running: $(rtr_exec ls "$PIN" | tr '\n' ' ')"
for d in wan1 wan2; do
  xdp_on "$P" "$d" || fail "no XDP program on $d while uplinkd runs (ip -d link: $(ip -n "$RTR" -d link show "$d" | head -n 2))"
done
pass "XDP program attached on wan1 and wan2 while running"
for d in "${DEVS[@]}"; do
  f=$(tc_filters "$P" "$d")
  info "$d tc filters while running: ${f:-(none)}"
done

log "SIGTERM"
stop_uplinkd || fail "uplinkd did not stop within 10 s of SIGTERM"
[[ $UPLINKD_EXIT == 0 ]] || fail "uplinkd exited with status $UPLINKD_EXIT on SIGTERM (expected 0)"
pass "uplinkd exited 0 on SIGTERM"
sleep 0.5

log "after exit"
assert_no_datapath "$P" "SIGTERM" "${DEVS[@]}"
snapshot >"$UL_TMP/after.txt"
if ! diff -u "$UL_TMP/before.txt" "$UL_TMP/after.txt" >"$UL_TMP/diff.txt"; then
  sed 's/^/    | /' "$UL_TMP/diff.txt"
  fail "rules, routes, nftables or qdiscs differ from before start (diff above)"
fi
pass "ip rule, ip route show table all (IPv4 and IPv6), nft ruleset and qdiscs identical to before start"
if rtr_exec test -e "$PIN"; then
  fail "pin directory $PIN left behind: $(rtr_exec find "$PIN" | tr '\n' ' ')"
fi
pass "pin directory $PIN is gone"
info "bpffs after exit: $(rtr_exec find /sys/fs/bpf -mindepth 1 | tr '\n' ' ')"
pins=$(rtr_exec find /sys/fs/bpf -type f | sort | comm -13 "$UL_TMP/bpffs-before.txt" -)
[[ -z $pins ]] || fail "pinned objects left in bpffs that were not there before start: $(tr '\n' ' ' <<<"$pins")"
pass "no new pinned object anywhere in bpffs (libxdp's dispatcher included)"
left=$(ip netns pids "$RTR" | grep -vx "$UL_HOLDER_PID" || true)
[[ -z $left ]] || fail "processes left in the router after SIGTERM: $left"
pass "no process of uplinkd left (hooks, helpers)"
exit 0
