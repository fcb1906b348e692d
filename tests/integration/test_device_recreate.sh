#!/usr/bin/env bash
# An uplink's device deleted and re-created under a running daemon (a PPPoE session or a USB modem
# reconnecting, netifd re-creating a VLAN): same name, same addresses, a new ifindex. uplinkd takes the
# uplink offline when the device goes, and when it is back attaches the datapath to the new device (XDP
# and the wan_ingress tc filter, the very programs pinned for it), puts the uplink's table back and
# brings it online again from answered probes. The other uplink sees nothing of it.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init device_recreate daemon
command -v bpftool >/dev/null 2>&1 || skip "needs bpftool (program ids of the pins)"

P=$UL_PREFIX
RTR=$P-rtr
INTERVAL=1 TIMEOUT=1 DOWN=3 UP=3
ul_lab_up
make_hook
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" "$INTERVAL" "$TIMEOUT" "$DOWN" "$UP"
PIN=/sys/fs/bpf/uplinkd/$P

# recreate_wan2: wan2 and its peer in isp2 as lab_up made them (lab/lab.sh), as netifd would bring a
# re-created device up: addresses, link up, the main table's default routes through it.
recreate_wan2() {
  ip -n "$RTR" link add name wan2 type veth peer name rtr netns "$P-isp2" &&
    ip -n "$P-isp2" addr add 198.51.100.1/24 dev rtr &&
    ip -n "$P-isp2" addr add 2001:db8:2::1/64 dev rtr nodad &&
    ip -n "$P-isp2" link set rtr up &&
    ip -n "$RTR" addr add 198.51.100.2/24 dev wan2 &&
    ip -n "$RTR" addr add 2001:db8:2::2/64 dev wan2 nodad &&
    ip -n "$RTR" link set wan2 up &&
    ip -n "$RTR" route add default via 198.51.100.1 dev wan2 metric 20 &&
    ip -n "$RTR" -6 route add default via 2001:db8:2::1 dev wan2 metric 20
}

ifindex_of() { ip -n "$RTR" -o link show dev "$1" 2>/dev/null | awk -F': ' '{ print $1; exit }'; }
# pinned_id <pin name>: the id of the program pinned in uplinkd's pin directory (empty: none).
pinned_id() { rtr_exec bpftool -j prog show pinned "$PIN/$1" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' 2>/dev/null; }
# xdp_id <dev>: the id of the XDP program on the device (empty: none).
xdp_id() { ip -n "$RTR" -d link show dev "$1" 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "prog/xdp" && $(i + 1) == "id") { print $(i + 2); exit } }'; }
# tc_ingress_ids <dev>: ids of the programs of the device's tc ingress filters.
tc_ingress_ids() { ip netns exec "$RTR" tc filter show dev "$1" ingress 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "id") print $(i + 1) }'; }
prog_name() { rtr_exec bpftool -j prog show id "$1" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin).get("name", ""))' 2>/dev/null; }

# assert_datapath_on <dev> <uplink id>: uplinkd's XDP program (pinned as prog_xdp_<id>) holds the device's
# XDP hook, alone or as a program of libxdp's dispatcher, and its wan_ingress (prog_tc_<id>) is the
# device's tc ingress filter.
assert_datapath_on() {
  local dev=$1 id=$2 want_xdp want_tc on_dev
  xdp_on "$P" "$dev" || fail "no XDP program on $dev ($(ip -n "$RTR" -d link show dev "$dev" | head -n 3 | tr '\n' ' '))"
  want_xdp=$(pinned_id "prog_xdp_$id")
  [[ -n $want_xdp ]] || fail "uplinkd has no pinned XDP program prog_xdp_$id for $dev (pins: $(rtr_exec ls "$PIN" | tr '\n' ' '))"
  on_dev=$(xdp_id "$dev")
  if [[ $on_dev != "$want_xdp" ]]; then
    # In libxdp's dispatcher the device holds the dispatcher, which runs ours through a freplace link.
    [[ $(prog_name "$on_dev") == xdp_dispatcher ]] ||
      fail "XDP on $dev is program $on_dev ($(prog_name "$on_dev")), not uplinkd's prog_xdp_$id ($want_xdp)"
    rtr_exec bpftool link show 2>/dev/null | grep -q "prog_id $want_xdp\b" ||
      fail "XDP on $dev is libxdp's dispatcher $on_dev, but uplinkd's program $want_xdp is not linked into it"
  fi
  want_tc=$(pinned_id "prog_tc_$id")
  [[ -n $want_tc ]] || fail "uplinkd has no pinned tc program prog_tc_$id for $dev"
  tc_ingress_ids "$dev" | grep -qx "$want_tc" ||
    fail "uplinkd's wan_ingress ($want_tc) is not on $dev's tc ingress (filters: $(tc_filters "$P" "$dev" | tr '\n' ' '))"
  info "$dev: XDP program $want_xdp (on the device: $on_dev), tc ingress wan_ingress $want_tc"
}

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
sleep 1
old_ifindex=$(ifindex_of wan2)
assert_datapath_on wan2 2
pass "wan2 (ifindex $old_ifindex) carries uplinkd's XDP and tc programs"
[[ -n $(ip -n "$RTR" -4 route show table 2 default) ]] || fail "table 2 has no default route before the test"
wan1_tr0=$(iface_get wan1 transitions) || fail "no transitions field for wan1"
h0=$(hook_count)

log "deleting wan2 (its peer in isp2 goes with it)"
T0=$(now)
ip -n "$RTR" link del wan2 || fail "ip link del wan2 failed"
ts=$(wait_hook disconnected wan2 "$h0" 10) || fail "no 'disconnected wan2' hook within 10 s of deleting the device (state: $(iface_get wan2 state))"
info "'disconnected wan2' $(fsub "$T0" "$ts") s after the device went"
wait_iface_state wan2 'offline|disabled' 5 || fail "wan2 is '$UL_LAST_STATE' without its device (expected offline or disabled)"
pass "wan2 went $UL_LAST_STATE when its device was deleted"
wait_hook ifdown wan2 "$h0" 5 >/dev/null || fail "no 'ifdown wan2' hook after the device was deleted"
[[ -z $(ip -n "$RTR" -4 route show table 2 default 2>/dev/null) ]] || fail "table 2 still has a default route without wan2"
sleep 1
uplinkd_alive || fail "uplinkd exited after wan2 was deleted"

log "re-creating wan2 with the same name and addresses"
h1=$(hook_count)
T1=$(now)
recreate_wan2 || fail "re-creating wan2 failed"
new_ifindex=$(ifindex_of wan2)
[[ -n $new_ifindex && $new_ifindex != "$old_ifindex" ]] || fail "wan2's ifindex did not change ($old_ifindex -> $new_ifindex)"
# With wan2's mark (id 2: 0x200 = 512), as uplinkd's probes and `uplinkctl use` have it: the router's
# own unmarked packets follow the rules (the default rule's wan1), like mwan3's OUTPUT chain. Table 2
# gets its default route back when uplinkd sees the new device (≤ 3 s).
reached=0
for ((i = 0; i < 30; i++)); do
  ip netns exec "$RTR" ping -I wan2 -m 512 -n -c 1 -W 1 203.0.113.1 >/dev/null 2>&1 && reached=1 && break
  sleep 0.1
done
((reached)) || fail "the re-created wan2 does not reach 203.0.113.1"
info "wan2 is back as ifindex $new_ifindex (was $old_ifindex)"
LIMIT=$(fcalc "($UP * $INTERVAL + $TIMEOUT) * 1.2 + 2")
ts=$(wait_hook connected wan2 "$h1" 20) || fail "no 'connected wan2' hook within 20 s of the device coming back (state: $(iface_get wan2 state))"
back=$(fsub "$T1" "$ts")
info "'connected wan2' $back s after the device came back (bound $LIMIT s)"
fle "$back" "$LIMIT" || fail "wan2 took $back s to come back online, more than $LIMIT s"
wait_iface_state wan2 online 3 || fail "wan2 is '$UL_LAST_STATE' after 'connected' (expected online)"
pass "wan2 online again $back s after its device was re-created"

assert_datapath_on wan2 2
pass "the new wan2 (ifindex $new_ifindex) carries uplinkd's XDP and tc programs"
ip -n "$RTR" -4 route show table 2 default | grep -q "via 198.51.100.1 dev wan2" ||
  fail "table 2 has no default route via the new wan2: $(ip -n "$RTR" -4 route show table 2 | tr '\n' ';')"
pass "table 2's default route is through the new wan2"

r0=$(iface_get wan2 probes.replied) || fail "no probes.replied for wan2"
sleep 3
r1=$(iface_get wan2 probes.replied)
((r1 >= r0 + 2)) || fail "wan2's probes are not answered on the new device (replied $r0 -> $r1 in 3 s)"
pass "wan2's probes are answered on the new device (replied $r0 -> $r1 in 3 s)"

log "hook events since wan2 was deleted"
hook_since "$h0" | sed 's/^/    | /'
seq=$(hook_since "$h0" | awk '$3 == "wan2" { print $2 }' | tr '\n' ' ')
[[ $seq == "disconnected ifdown ifup connected " ]] ||
  fail "wan2's hook events are '$seq' (expected: disconnected ifdown ifup connected)"
pass "wan2's hook events: $seq"

# A reconnect faster than the daemon looks: deleted and re-created back to back, so one device poll may
# find the new device where the old one was.
log "deleting and re-creating wan2 back to back"
h2=$(hook_count)
ifindex_before=$(ifindex_of wan2)
T2=$(now)
{ ip -n "$RTR" link del wan2 && recreate_wan2; } || fail "deleting and re-creating wan2 failed"
new_ifindex=$(ifindex_of wan2)
info "wan2 re-created as ifindex $new_ifindex (was $ifindex_before) in $(fsub "$T2" "$(now)") s"
wait_hook ifup wan2 "$h2" 10 >/dev/null || fail "no 'ifup wan2' hook within 10 s of the quick re-creation (state: $(iface_get wan2 state))"
wait_iface_state wan2 online "$LIMIT" || fail "wan2 is '$UL_LAST_STATE' $LIMIT s after the quick re-creation (expected online)"
assert_datapath_on wan2 2
ip -n "$RTR" -4 route show table 2 default | grep -q "via 198.51.100.1 dev wan2" ||
  fail "table 2 has no default route via wan2 after the quick re-creation"
r0=$(iface_get wan2 probes.replied)
sleep 3
r1=$(iface_get wan2 probes.replied)
((r1 >= r0 + 2)) || fail "wan2's probes are not answered after the quick re-creation (replied $r0 -> $r1 in 3 s)"
seq=$(hook_since "$h2" | awk '$3 == "wan2" { print $2 }' | tr '\n' ' ')
[[ $seq == "disconnected ifdown ifup connected " ]] ||
  fail "wan2's hook events after the quick re-creation are '$seq' (expected: disconnected ifdown ifup connected)"
pass "quick re-creation: wan2 online on ifindex $new_ifindex with its programs and table, probes answered ($seq)"
log "every hook event since wan2 was first deleted"
hook_since "$h0" | sed 's/^/    | /'
others=$(hook_since "$h0" | awk '$3 != "wan2"')
[[ -z $others ]] || fail "hook events for other interfaces while wan2 was re-created: $others"
wan1_st=$(iface_get wan1 state)
wan1_tr=$(iface_get wan1 transitions)
[[ $wan1_st == online && $wan1_tr == "$wan1_tr0" ]] ||
  fail "wan1 was disturbed: state '$wan1_st', transitions $wan1_tr0 -> $wan1_tr"
assert_datapath_on wan1 1
pass "wan1 undisturbed: online, no transition, no hook event, its programs in place"
ul_status_summary | while read -r l; do info "  $l"; done
exit 0
