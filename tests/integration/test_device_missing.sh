#!/usr/bin/env bash
# A configured uplink whose device does not exist yet (a USB modem, a PPPoE session not up yet):
# uplinkd starts anyway, reports it offline or disabled, keeps answering uplinkctl, tracks the other
# uplink, and picks the device up when it appears (veth wan3 with address and default route, as
# netifd would), bringing it online within a bounded time.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init device_missing daemon

P=$UL_PREFIX
ul_lab_up
make_hook
CFG=$UL_TMP/uplinkd.conf
cat >"$CFG" <<'EOF'
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan1'
	option enabled '1'
	option device 'wan1'
	option gateway '192.0.2.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option reliability '1'
	option interval '1'
	option timeout '1'
	option down '3'
	option up '3'

config interface 'wan3'
	option enabled '1'
	option device 'wan3'
	option gateway '10.3.0.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option reliability '1'
	option interval '1'
	option timeout '1'
	option down '3'
	option up '3'

config member 'wan1_m1'
	option interface 'wan1'
	option metric '1'

config member 'wan3_m2'
	option interface 'wan3'
	option metric '2'

config policy 'failover'
	list use_member 'wan1_m1'
	list use_member 'wan3_m2'
EOF
chmod 644 "$CFG"

ip -n "$P-rtr" link show wan3 >/dev/null 2>&1 && fail "wan3 exists before the test created it"
start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
wait_uplinkd_ready 15 || fail "uplinkd did not start with a configured but missing device"
pass "uplinkd runs with device wan3 missing"

# Let a whole down-detection period pass: (down x interval + timeout) + margin.
ctl_fail=0
states=
for ((i = 0; i < 8; i++)); do
  sleep 1
  uplinkd_alive || fail "uplinkd exited while wan3 was missing"
  if ! out=$(ctl status 2>&1); then
    ctl_fail=$((ctl_fail + 1))
    info "uplinkctl status failed: $out"
  fi
  s=$(iface_get wan3 state 2>&1) || s="(no wan3 in status: $s)"
  states+="$s "
done
info "wan3 states over 8 s: $states"
ctl status 2>&1 | sed 's/^/    | /'
((ctl_fail == 0)) || fail "uplinkctl status failed $ctl_fail times while wan3 was missing"
pass "uplinkctl status answered every second"
s=$(iface_get wan3 state) || fail "uplinkctl status --json has no wan3 entry"
[[ $s == offline || $s == disabled ]] || fail "wan3 (missing device) reported '$s' (expected offline or disabled)"
pass "wan3 reported '$s' while its device is missing"
[[ " $states" == *" online "* ]] && info "NOTE: wan3 was reported online at some point while its device was missing"
wait_iface_state wan1 online 10 || fail "wan1 not online while wan3 is missing (state '$UL_LAST_STATE')"
wait_replied wan1 2 10 || fail "wan1 is not being tracked while wan3 is missing"
pass "wan1 tracked and online meanwhile"

log "creating wan3 (veth to isp1, 10.3.0.2/24, default via 10.3.0.1 metric 30)"
h0=$(hook_count)
T0=$(now)
lab_add_wan3 "$P" || fail "lab_add_wan3 failed"
ip netns exec "$P-rtr" ping -I wan3 -n -c 1 -W 2 203.0.113.1 >/dev/null 2>&1 || fail "the lab's wan3 does not reach 203.0.113.1"
LIMIT=30
wait_iface_state wan3 online "$LIMIT" || fail "wan3 not online within $LIMIT s of its device appearing (state '$UL_LAST_STATE')"
t_online=$(fsub "$T0" "$(now)")
wait_replied wan3 1 10 || fail "wan3 online but no probe reply counted (not really tracked)"
pass "wan3 tracked and online $t_online s after its device appeared (bound $LIMIT s)"
ul_status_summary | while read -r l; do info "  $l"; done
ctl status 2>&1 | sed 's/^/    | /'
info "hook events since wan3 appeared:"
hook_since "$h0" | sed 's/^/    | /'
uplinkd_alive || fail "uplinkd exited"
ctl status >/dev/null 2>&1 || fail "uplinkctl status failed at the end"
pass "uplinkctl status works throughout"
exit 0
