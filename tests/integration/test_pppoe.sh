#!/usr/bin/env bash
# A PPPoE uplink (issue 15): pppoe-wan as pppd makes it, with no Ethernet header, tracked with
# generic XDP, failing over to the Ethernet backup wan2 on an upstream blackhole, and followed
# through a redial. pppoe-server (Debian's `pppoe`) runs in the ISP namespace isp1 with kernel-mode
# PPPoE, pppd (Debian's `ppp`, its rp-pppoe plugin) in the router over the lab's wan1 veth, which
# carries nothing but PPPoE here (its IP addresses are taken off). Both read their options from files
# in the test's temp dir (`file`, pppoe-server -O), authenticate nothing (noauth on both ends), run
# their ip-up/ip-down scripts from there too and never write /etc/ppp. pppd still reads the system's
# /etc/ppp/options first, as it always does; the test's options come after and win.
#   1. wan (pppoe-wan) online over PPP, XDP in generic mode on it, LAN traffic leaving through it;
#   2. isp1 blackholes what it forwards: wan offline, the LAN's traffic on wan2, and back;
#   3. pppd killed and dialled again: wan online within 5 s of the new pppoe-wan appearing, its
#      table's route via the peer in place, and no bring-up failure in uplinkd's log.
# Needs PPP in the kernel (ppp_generic, pppoe): this host has none, so it skips here (exit 77) and
# runs in the VM lab (vmtest/run --kernel 6.12 --suite lab), which sets UL_TIME_SCALE for TCG.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init pppoe daemon
for t in pppd pppoe-server bpftool conntrack; do
  command -v "$t" >/dev/null 2>&1 || skip "needs '$t' (Debian packages ppp, pppoe, bpftool, conntrack)"
done
PLUGIN=$(find /usr/lib/pppd -name rp-pppoe.so -print -quit 2>/dev/null)
[[ -n $PLUGIN ]] || skip "pppd's rp-pppoe plugin is not installed (Debian package ppp)"
modprobe -q pppoe 2>/dev/null
[[ -c /dev/ppp && -e /proc/net/pppoe ]] ||
  skip "this kernel has no PPP/PPPoE (ppp_generic, pppoe): the scenario runs in the VMs (vmtest/run --kernel 6.12 --suite lab --filter test_pppoe.sh)"

P=$UL_PREFIX
RTR=$P-rtr
ISP=$P-isp1
DEV=pppoe-wan
PEER=10.64.0.1
PPPDIR=$UL_TMP/ppp
INTERVAL=0.5 TIMEOUT=1 DOWN=3 UP=2

ul_lab_up
# wan1 becomes a bare Ethernet link for PPPoE: no addresses, no routes through it on either side.
for ns in "$RTR" "$ISP"; do
  dev=$([[ $ns == "$RTR" ]] && echo wan1 || echo rtr)
  ip -n "$ns" addr flush dev "$dev" || fail "flushing $dev's addresses in $ns failed"
done
# The LAN is masqueraded out of the PPP device too, and the core routes the PPP pool back via isp1.
ip netns exec "$RTR" nft add rule inet lab_nat post oifname "$DEV" ip saddr 10.10.0.0/24 masquerade ||
  fail "adding the NAT rule for $DEV failed"
ip -n "$P-core" route add 10.64.0.0/24 via 10.1.0.1 dev isp1 || fail "core: no route to the PPP pool"

mkdir -p "$PPPDIR"
# ip-up/ip-down of both ends: a line in a log of ours instead of Debian's /etc/ppp/ip-up.d.
cat >"$PPPDIR/ip-script" <<EOF
#!/bin/sh
echo "\$(date +%s.%N) \$0 \$*" >>'$PPPDIR/ip-scripts.log'
EOF
chmod 755 "$PPPDIR/ip-script"
ln -s ip-script "$PPPDIR/ip-up"
ln -s ip-script "$PPPDIR/ip-down"
common_options() {
  cat <<EOF
noauth
noipv6
noccp
novj
nodefaultroute
nolock
mtu 1492
mru 1492
lcp-echo-interval 1
lcp-echo-failure 5
ip-up-script $PPPDIR/ip-up
ip-down-script $PPPDIR/ip-down
debug
EOF
}
{
  common_options
  echo "logfile $PPPDIR/server-pppd.log"
} >"$PPPDIR/server-options"
{
  common_options
  cat <<EOF
plugin $PLUGIN
nic-wan1
ifname $DEV
noipdefault
maxfail 1
logfile $PPPDIR/client-pppd.log
EOF
} >"$PPPDIR/client-options"

log "starting pppoe-server in isp1 (kernel mode, local $PEER, pool 10.64.0.2-)"
ip netns exec "$ISP" pppoe-server -F -k -I rtr -L "$PEER" -R 10.64.0.2 -N 8 \
  -O "$PPPDIR/server-options" -X "$PPPDIR/pppoe-server.pid" >"$PPPDIR/pppoe-server.out" 2>&1 &
ul_bg_add $!
sleep 0.5

# dial: pppd in the router; PPPD_PID is its pid (nodetach: pppd itself).
dial() {
  ip netns exec "$RTR" pppd file "$PPPDIR/client-options" nodetach >>"$PPPDIR/client-pppd.out" 2>&1 &
  PPPD_PID=$!
  ul_bg_add "$PPPD_PID"
}
ppp_addresses() { ip -n "$RTR" -4 addr show dev "$DEV" 2>/dev/null | grep -q "peer $PEER/32"; }
# shellcheck disable=SC2317 # called through wait_for
ppp_device() { ip -n "$RTR" link show dev "$DEV" >/dev/null 2>&1; }
# wait_for <seconds> <command...>: polls every 50 ms; 0 when it held in time.
wait_for() {
  local secs=$1 t0
  shift
  t0=$(now)
  until "$@"; do
    fle "$(fsub "$t0" "$(now)")" "$secs" || return 1
    sleep 0.05
  done
}
ppp_logs() { tail -n 15 "$PPPDIR/client-pppd.log" "$PPPDIR/server-pppd.log" "$PPPDIR/pppoe-server.out" 2>&1; }

dial
wait_for "$(ul_scaled 20)" ppp_addresses || fail "no PPP session: $DEV has no address with peer $PEER ($(ppp_logs))"
pass "PPPoE session up: $(ip -n "$RTR" -4 -br addr show dev "$DEV")"

CFG=$UL_TMP/uplinkd.conf
cat >"$CFG" <<EOF
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan'
	option enabled '1'
	option family 'ipv4'
	option device '$DEV'
	option gateway '$PEER'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option reliability '1'
	option timeout '$TIMEOUT'
	option interval '$INTERVAL'
	option failure_interval '$INTERVAL'
	option recovery_interval '$INTERVAL'
	option down '$DOWN'
	option up '$UP'

config interface 'wan2'
	option enabled '1'
	option family 'ipv4'
	option device 'wan2'
	option gateway '198.51.100.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option reliability '1'
	option timeout '$TIMEOUT'
	option interval '$INTERVAL'
	option failure_interval '$INTERVAL'
	option recovery_interval '$INTERVAL'
	option down '$DOWN'
	option up '$UP'

config member 'wan_m1'
	option interface 'wan'
	option metric '1'

config member 'wan2_m2'
	option interface 'wan2'
	option metric '2'

config policy 'wan_wan2'
	list use_member 'wan_m1'
	list use_member 'wan2_m2'
	option last_resort 'unreachable'

config rule 'default_rule'
	option dest_ip '0.0.0.0/0'
	option use_policy 'wan_wan2'
EOF
make_hook
start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
wait_uplinkd_ready 30 || fail "uplinkd did not answer"

log "1. wan tracked over PPP"
wait_iface_state wan online "$(ul_scaled 15)" || fail "wan is '$UL_LAST_STATE', not online over $DEV"
wait_iface_state wan2 online "$(ul_scaled 15)" || fail "wan2 is '$UL_LAST_STATE', not online"
mode=$(iface_get wan xdp_mode) || fail "no xdp_mode for wan"
[[ $mode == generic ]] || fail "XDP on $DEV is in '$mode' mode (a ppp device has no native XDP: expected generic)"
xdp_on "$P" "$DEV" || fail "no XDP program on $DEV ($(ip -n "$RTR" -d link show dev "$DEV" | head -n 3 | tr '\n' ' '))"
ip -n "$RTR" -d link show dev "$DEV" | grep -q 'xdpgeneric' || fail "$DEV's XDP is not generic: $(ip -n "$RTR" -d link show dev "$DEV" | head -n 3 | tr '\n' ' ')"
replied=$(iface_get wan probes.replied)
((replied > 0)) || fail "no probe of wan answered"
pass "wan online over $DEV, XDP $mode mode (ip link: xdpgeneric), $replied probes answered"
# lan_exit <target>: the address the LAN's ping to <target> was masqueraded to (conntrack's reply dst).
lan_exit() {
  ip netns exec "$RTR" conntrack -D -s 10.10.0.2 -d "$1" >/dev/null 2>&1
  ip netns exec "$P-lan" ping -n -c 1 -W 2 "$1" >/dev/null 2>&1 || return 1
  ip netns exec "$RTR" conntrack -L -p icmp -s 10.10.0.2 -d "$1" 2>/dev/null |
    sed -n 's/.* src=[^ ]* dst=\([^ ]*\) type=0 .*/\1/p' | head -n 1
}
ppp_local=$(ip -n "$RTR" -4 -o addr show dev "$DEV" | awk '{ print $4; exit }')
exit_ip=$(lan_exit 203.0.113.3) || fail "the LAN client cannot reach 203.0.113.3 through wan"
[[ $exit_ip == "$ppp_local" ]] || fail "the LAN's traffic left as $exit_ip, not as $DEV's $ppp_local"
pass "the LAN's traffic leaves through $DEV ($exit_ip)"

log "2. blackhole upstream of the PPPoE session (isp1 drops what it forwards)"
lab_outage "$P" isp1 on || fail "lab_outage isp1 on failed"
wait_iface_state wan offline "$(ul_scaled 10)" || fail "wan is '$UL_LAST_STATE' during isp1's blackhole (expected offline)"
info "wan offline $UL_WAITED s after the blackhole"
ppp_addresses || fail "the PPP session went down during the blackhole ($(ppp_logs))"
exit_ip=$(lan_exit 203.0.113.4) || fail "the LAN client cannot reach 203.0.113.4 while wan is offline"
[[ $exit_ip == 198.51.100.2 ]] || fail "during the blackhole the LAN's traffic left as $exit_ip, not via wan2 (198.51.100.2)"
pass "failover: the LAN's traffic leaves through wan2 ($exit_ip) while the PPP session stays up"
lab_outage "$P" isp1 off || fail "lab_outage isp1 off failed"
wait_iface_state wan online "$(ul_scaled 10)" || fail "wan is '$UL_LAST_STATE' after the blackhole ended"
pass "wan online again $UL_WAITED s after the blackhole ended"

log "3. pppd killed, then dialled again"
kill -TERM "$PPPD_PID"
_ul_reap "$PPPD_PID" 10 || fail "pppd did not end within 10 s of SIGTERM"
# shellcheck disable=SC2317 # called through wait_for
gone() { ! ppp_device; }
wait_for "$(ul_scaled 5)" gone || fail "$DEV still exists after pppd ended"
wait_iface_state wan 'offline|disabled' "$(ul_scaled 5)" || fail "wan is '$UL_LAST_STATE' without its device"
pass "pppd ended: $DEV gone, wan $UL_LAST_STATE"
sleep 1
log_mark=$(wc -l <"$UPLINKD_LOG")
h0=$(hook_count)
dial
wait_for "$(ul_scaled 20)" ppp_device || fail "pppd made no new $DEV ($(ppp_logs))"
T0=$(now)
LIMIT=$(ul_scaled 5)
wait_iface_state wan online "$LIMIT" || fail "wan is '$UL_LAST_STATE' $LIMIT s after the new $DEV appeared ($(ppp_logs))"
back=$(fsub "$T0" "$(now)")
pass "wan online $back s after the new $DEV appeared (bound $LIMIT s)"
ip -n "$RTR" -4 route show table 1 | grep -q "^default via $PEER dev $DEV" ||
  fail "table 1 has no default route via $PEER dev $DEV: $(ip -n "$RTR" -4 route show table 1 | tr '\n' ';')"
errors=$(tail -n "+$((log_mark + 1))" "$UPLINKD_LOG" | grep -E 'retrying|unreachable' || true)
[[ -z $errors ]] || fail "uplinkd's bring-up of the new $DEV failed on the way: $errors"
mode=$(iface_get wan xdp_mode)
xdp_on "$P" "$DEV" || fail "no XDP program on the new $DEV"
pass "the new $DEV: table 1 via $PEER, XDP $mode mode, no bring-up retried"
seq=$(hook_since "$h0" | awk '$3 == "wan" { print $2 }' | tr '\n' ' ')
[[ $seq == "ifup connected " ]] || fail "wan's hook events after the redial are '$seq' (expected: ifup connected)"
pass "hook events after the redial: $seq"
ul_status_summary | while read -r l; do info "  $l"; done
exit 0
