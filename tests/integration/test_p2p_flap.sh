#!/usr/bin/env bash
# A point-to-point uplink (PPPoE's pppoe-wan) whose device appears before its addresses, and then
# flaps. This host has no PPP, so a tun device held by tools/p2p_device.py stands in (POINTOPOINT,
# NOARP, no Ethernet header, gone when its holder ends, as pppoe-wan is when pppd ends):
#   1. the device appears and comes up without addresses: uplinkd waits (no route via a peer the
#      kernel cannot reach yet, no error), and once `ip addr add L peer P` is done the uplink's table
#      route and rule go in on the address notification, within 0.5 s, not after the 2 s retry timer;
#   2. the device is created and deleted every second for 20 s (addresses 0.1 s after it appears):
#      uplinkd answers `uplinkctl status` within 1 s throughout and stays up;
#   3. afterwards the uplink's table and rules are exactly what they were after step 1, the other
#      uplinks' tables untouched, and wan1 never left online.
# Bounds are stretched by UL_TIME_SCALE (vmtest sets it under TCG).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init p2p_flap daemon
[[ -c /dev/net/tun ]] || skip "needs /dev/net/tun (a tun device stands in for pppoe-wan)"

P=$UL_PREFIX
RTR=$P-rtr
DEV=pppoe-wan
LOCAL=10.64.0.2
PEER=10.64.0.1
TABLE=3
FLAPS=20
HOLDER=$UL_SOURCE/tests/integration/tools/p2p_device.py
ul_lab_up
CFG=$UL_TMP/uplinkd.conf
cat >"$CFG" <<EOF
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan1'
	option enabled '1'
	option device 'wan1'
	option gateway '192.0.2.1'
	list track_ip '203.0.113.1'
	option interval '1'
	option timeout '1'
	option down '3'
	option up '2'

config interface 'wan2'
	option enabled '1'
	option device 'wan2'
	option gateway '198.51.100.1'
	list track_ip '203.0.113.1'
	option interval '1'
	option timeout '1'
	option down '3'
	option up '2'

config interface 'wan'
	option enabled '1'
	option device '$DEV'
	option gateway '$PEER'
	list track_ip '203.0.113.1'
	option interval '1'
	option timeout '1'
	option down '3'
	option up '2'
EOF

# start_device <address delay, s; negative: none>: the holder in the router; HOLDER_PID is its pid.
start_device() {
  ip netns exec "$RTR" python3 "$HOLDER" --name "$DEV" --local "$LOCAL" --peer "$PEER" \
    --address-after "$1" >>"$UL_TMP/holder.log" 2>&1 &
  HOLDER_PID=$!
  ul_bg_add "$HOLDER_PID"
}
stop_device() {
  kill -TERM "$HOLDER_PID" 2>/dev/null
  _ul_reap "$HOLDER_PID" 3 || { kill -KILL "$HOLDER_PID" 2>/dev/null; _ul_reap "$HOLDER_PID" 2; }
}
# shellcheck disable=SC2317 # called through wait_for
device_up() { ip -n "$RTR" link show dev "$DEV" 2>/dev/null | grep -q '[<,]UP[,>]'; }
table_of() { ip -n "$RTR" -4 route show table "$1" 2>/dev/null | sort; }
rules_of() { ip -n "$RTR" -4 rule show 2>/dev/null | grep -w "lookup $1" | sort; }
# wait_for <seconds> <command...>: polls every 20 ms; 0 when it held in time.
wait_for() {
  local secs=$1 t0
  shift
  t0=$(now)
  until "$@"; do
    fle "$(fsub "$t0" "$(now)")" "$secs" || return 1
    sleep 0.02
  done
}
# shellcheck disable=SC2317 # called through wait_for
table_has_default() { table_of "$TABLE" | grep -q "^default via $PEER dev $DEV"; }
# status_prompt <bound>: `uplinkctl status` answers within the bound; STATUS_TOOK is how long it took.
status_prompt() {
  local t0
  t0=$(now)
  ctl status >/dev/null 2>&1 || return 1
  STATUS_TOOK=$(fsub "$t0" "$(now)")
  fle "$STATUS_TOOK" "$1"
}

start_uplinkd "$P" "$CFG"
wait_uplinkd_ready 15 || fail "uplinkd did not answer"
wait_iface_state wan1 online "$(ul_scaled 15)" || fail "wan1 is '$UL_LAST_STATE', not online"
main_tables_before="$(table_of 1)|$(table_of 2)|$(rules_of 1)|$(rules_of 2)"
wan1_tr0=$(iface_get wan1 transitions) || fail "no transitions field for wan1"

log "1. $DEV appears and comes up without addresses"
start_device -1
wait_for "$(ul_scaled 5)" device_up || fail "$DEV did not come up ($(cat "$UL_TMP/holder.log"))"
sleep 1
[[ -z $(table_of "$TABLE") ]] || fail "table $TABLE has routes before $DEV has addresses: $(table_of "$TABLE" | tr '\n' ';')"
why=$(iface_get wan last_error) || fail "no last_error for wan"
[[ $why == *"has no IPv4 address yet"* ]] || fail "wan's last_error is '$why' (expected: waiting for its address)"
pass "uplinkd waits for $DEV's addresses: $why"
T0=$(now)
ip -n "$RTR" addr add "$LOCAL" peer "$PEER/32" dev "$DEV" || fail "ip addr add $LOCAL peer $PEER failed"
BOUND=$(ul_scaled 0.5)
wait_for "$(ul_scaled 5)" table_has_default ||
  fail "table $TABLE has no default route via $PEER 5 s after the addresses: $(table_of "$TABLE" | tr '\n' ';')"
took=$(fsub "$T0" "$(now)")
fle "$took" "$BOUND" ||
  fail "table $TABLE's route went in $took s after $DEV's addresses (bound $BOUND s; the retry timer is 2 s)"
[[ -n $(rules_of "$TABLE") ]] || fail "no rule looks up table $TABLE"
pass "table $TABLE's route and rule went in $took s after $DEV's addresses (bound $BOUND s, no timer)"
sleep 1
xdp_on "$P" "$DEV" || fail "no XDP program on $DEV"
want_table=$(table_of "$TABLE")
want_rules=$(rules_of "$TABLE")
info "table $TABLE: $(tr '\n' ';' <<<"$want_table")  rules: $(tr '\n' ';' <<<"$want_rules")"
stop_device

log "2. $DEV created and deleted every second, $FLAPS times"
slowest=0
for ((i = 0; i < FLAPS; i++)); do
  start_device 0.1
  sleep 0.5
  stop_device
  sleep 0.4
  uplinkd_alive || fail "uplinkd exited during flap $i"
  status_prompt "$(ul_scaled 1)" || fail "uplinkctl status took ${STATUS_TOOK:-?} s (or failed) during flap $i"
  fle "$STATUS_TOOK" "$slowest" || slowest=$STATUS_TOOK
done
pass "$FLAPS flaps: uplinkd alive, uplinkctl status answered within $slowest s each time"

log "3. $DEV back for good: the tables converge"
start_device 0.1
# shellcheck disable=SC2317 # called through wait_for
converged() { [[ $(table_of "$TABLE") == "$want_table" && $(rules_of "$TABLE") == "$want_rules" ]]; }
wait_for "$(ul_scaled 5)" converged ||
  fail "table $TABLE or its rules differ after the flaps: table '$(table_of "$TABLE" | tr '\n' ';')' (want '$(tr '\n' ';' <<<"$want_table")'), rules '$(rules_of "$TABLE" | tr '\n' ';')' (want '$(tr '\n' ';' <<<"$want_rules")')"
xdp_on "$P" "$DEV" || fail "no XDP program on $DEV after the flaps"
mode=$(iface_get wan xdp_mode) || fail "wan has no xdp_mode after the flaps"
pass "table $TABLE and its rule exactly as before the flaps; XDP on $DEV ($mode mode)"
[[ "$(table_of 1)|$(table_of 2)|$(rules_of 1)|$(rules_of 2)" == "$main_tables_before" ]] ||
  fail "tables or rules of wan1/wan2 changed during the flaps"
[[ $(iface_get wan1 state) == online && $(iface_get wan1 transitions) == "$wan1_tr0" ]] ||
  fail "wan1 was disturbed: $(iface_get wan1 state), transitions $wan1_tr0 -> $(iface_get wan1 transitions)"
status_prompt "$(ul_scaled 1)" || fail "uplinkctl status took ${STATUS_TOOK:-?} s after the flaps"
pass "wan1 and wan2 untouched; uplinkctl status answers in $STATUS_TOOK s"
stop_device
ul_status_summary | while read -r l; do info "  $l"; done
exit 0
