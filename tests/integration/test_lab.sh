#!/usr/bin/env bash
# The lab itself (no daemon): routing and NAT through the router, both uplinks, the ISP outage
# switch, and the banIP ICMP limiter reproducing the field report (one-shot pings fail while the
# replies arrive on the wire), then a teardown that leaves nothing behind.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init lab
for t in conntrack tcpdump arping; do command -v "$t" >/dev/null || skip "needs '$t'"; done

P=$UL_PREFIX
RTR=$P-rtr

# Root namespace guard: the lab must not create anything there.
lab_ifnames='^(eth0|lan0|wan1|wan2|wan3|rtr|rtr3|core|isp1|isp2)$'
root_links_before=$(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort)

log "1. building the lab"
ul_lab_up
for n in $(lab_nodes); do
  [[ -e /run/netns/$P-$n ]] || fail "namespace $P-$n missing after lab_up"
done
pass "namespaces $(lab_nodes | sed "s/^/$P-/" | tr '\n' ' ')exist"

new_root_links=$(comm -13 <(printf '%s\n' "$root_links_before") \
  <(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort) | grep -E "$lab_ifnames" || true)
[[ -z $new_root_links ]] || fail "lab interfaces appeared in the root namespace: $new_root_links"
pass "no lab interface in the root namespace"

out=$(bash "$UL_SOURCE/lab/lab.sh" up "$P" 2>&1) && fail "a second 'lab.sh up $P' succeeded"
grep -q 'already in use' <<<"$out" || fail "second 'up' failed without a clear message: $out"
pass "a second 'lab.sh up $P' refuses: $(head -n 1 <<<"$out")"

log "2. LAN client reaches the internet through the router, NAT via wan1"
out=$(ip netns exec "$P-lan" ping -n -c 3 -i 0.2 -W 1 203.0.113.1 2>&1) ||
  fail "lan cannot ping 203.0.113.1: $out"
info "$(grep 'packets transmitted' <<<"$out")"
ct=$(ip netns exec "$RTR" conntrack -L -p icmp -s 10.10.0.2 -d 203.0.113.1 2>/dev/null)
info "conntrack: $(head -n 1 <<<"$ct")"
grep -q 'src=203.0.113.1 dst=192.0.2.2 ' <<<"$ct" ||
  fail "the LAN's ping was not masqueraded to wan1's 192.0.2.2 (conntrack: $ct)"
pass "lan 10.10.0.2 -> 203.0.113.1 works, NATed to 192.0.2.2 (wan1)"
out=$(ip netns exec "$P-lan" ping -n -c 2 -i 0.2 -W 1 2001:db8:ff::1 2>&1) ||
  fail "lan cannot ping 2001:db8:ff::1: $out"
pass "lan 2001:db8:10::2 -> 2001:db8:ff::1 works"

log "3. the router reaches every target out of each uplink"
for dev in wan1 wan2; do
  for t in 203.0.113.{1..4} 2001:db8:ff::{1..4}; do
    out=$(ip netns exec "$RTR" ping -I "$dev" -n -c 1 -W 2 "$t" 2>&1) || fail "ping -I $dev $t failed: $out"
  done
  src=$(ip netns exec "$RTR" ping -I "$dev" -n -c 1 -W 2 203.0.113.1 | sed -n 's/^PING .* from \([^ ]*\) .*/\1/p')
  pass "ping -I $dev reaches 203.0.113.1-4 and 2001:db8:ff::1-4 (IPv4 source $src)"
done
ip -n "$RTR" route show default | sed 's/^/    main: /'

log "4. outage of isp1: core unreachable via wan1, the gateway still answers"
lab_outage "$P" isp1 on || fail "lab_outage isp1 on failed"
for t in 203.0.113.1 203.0.113.2 2001:db8:ff::1; do
  ip netns exec "$RTR" ping -I wan1 -n -c 2 -i 0.2 -W 1 "$t" >/dev/null 2>&1 && fail "$t still answers via wan1 during the outage"
done
pass "203.0.113.1, .2 and 2001:db8:ff::1 do not answer via wan1"
out=$(ip netns exec "$RTR" ping -I wan1 -n -c 1 -W 1 192.0.2.1 2>&1) || fail "gateway 192.0.2.1 does not answer ping: $out"
out=$(ip netns exec "$RTR" arping -I wan1 -c 1 -w 2 192.0.2.1 2>&1) || fail "gateway 192.0.2.1 does not answer ARP: $out"
pass "gateway 192.0.2.1 answers ping and ARP; wan1 is $(ip -n "$RTR" -br link show wan1 | awk '{ print $2 }')"
ip netns exec "$RTR" ping -I wan2 -n -c 1 -W 1 203.0.113.1 >/dev/null 2>&1 || fail "wan2 affected by isp1's outage"
pass "wan2 still reaches 203.0.113.1"
lab_outage "$P" isp1 off || fail "lab_outage isp1 off failed"
ip netns exec "$RTR" ping -I wan1 -n -c 1 -W 2 203.0.113.1 >/dev/null 2>&1 || fail "wan1 not back after the outage"
pass "outage off: 203.0.113.1 answers via wan1 again"

log "5. banIP ICMP limiter on wan1 (limit rate over 25/second burst 5 packets drop)"
lab_banip "$P" on || fail "lab_banip on failed"
oneshot_pings "$P" wan1 203.0.113.1 20 30 0.2
info "without competing ICMP: $ONESHOT_FAIL of $ONESHOT_TOTAL one-shot pings failed, drops $(lab_banip_drops "$P")"
((ONESHOT_FAIL == 0)) || fail "one-shot pings fail under the limiter even without a burst ($ONESHOT_FAIL/$ONESHOT_TOTAL)"
pass "at 5 pings/s the limiter lets every one-shot ping through"

# Count the echo replies from 203.0.113.1 that reach wan1 (tcpdump sees them before nftables).
tdout=$UL_TMP/tcpdump.out
ip netns exec "$RTR" timeout 90 tcpdump -i wan1 -n -l -Q in \
  'icmp and icmp[icmptype] == icmp-echoreply and src host 203.0.113.1' >"$tdout" 2>"$tdout.err" &
td=$!
ul_bg_add "$td"
for ((i = 0; i < 50; i++)); do grep -q listening "$tdout.err" && break; sleep 0.1; done
grep -q listening "$tdout.err" || fail "tcpdump did not start: $(cat "$tdout.err")"
drops0=$(lab_banip_drops "$P")
start_burst_pinger "$P" 80 0.01 203.0.113.3
sleep 0.5
oneshot_pings "$P" wan1 203.0.113.1 45 70 0.2
drops1=$(lab_banip_drops "$P")
burst=$(stop_burst_pinger)
sleep 0.3
ul_kill "$td" INT
wire=$(grep -c 'echo reply' "$tdout")
ok=$((ONESHOT_TOTAL - ONESHOT_FAIL))
info "burst pinger (one persistent socket, -i 0.01): $burst"
info "one-shot pings: $ONESHOT_FAIL of $ONESHOT_TOTAL failed; $wire echo replies from 203.0.113.1 reached wan1; ping saw $ok"
info "banIP counter: $((drops1 - drops0)) packets dropped during the burst (total $drops1)"
((ONESHOT_FAIL >= 1)) || fail "no one-shot ping failed under the limiter with a concurrent burst"
((drops1 > drops0)) || fail "the banIP counter did not move"
((wire > ok)) || fail "expected more replies on the wire ($wire) than pings that succeeded ($ok)"
pass "field report reproduced: $ONESHOT_FAIL/$ONESHOT_TOTAL one-shot pings fail although $wire replies arrived; banIP dropped $((drops1 - drops0))"
lab_banip "$P" off || fail "lab_banip off failed"
[[ $(lab_banip_drops "$P") == 0 ]] || fail "banIP table still present after off"

log "6. a third uplink appears later (lab_add_wan3)"
lab_add_wan3 "$P" || fail "lab_add_wan3 failed"
out=$(ip netns exec "$RTR" ping -I wan3 -n -c 1 -W 2 203.0.113.2 2>&1) || fail "ping -I wan3 203.0.113.2 failed: $out"
pass "wan3 (10.3.0.2 via 10.3.0.1) reaches 203.0.113.2"

log "7. teardown"
# A process left in a namespace must not keep it (and its veths) alive.
ip netns exec "$P-core" sleep 300 &
stray=$!
t0=$(now)
lab_down "$P" || fail "lab_down $P failed"
info "lab_down took $(fsub "$t0" "$(now)") s"
_ul_reap "$stray" 3 || fail "lab_down left a process running in $P-core"
for n in $(lab_nodes); do [[ ! -e /run/netns/$P-$n ]] || fail "namespace $P-$n left behind"; done
pass "no namespace $P-* left, no process left in them"
lab_down "$P" || fail "a second lab_down failed"
pass "lab_down is idempotent"

# A half-built lab (only the router namespace) is removed too.
ip netns add "$P-rtr"
ip -n "$P-rtr" link add name wan1 type veth peer name x
lab_down "$P" || fail "lab_down of a half-built lab failed"
[[ ! -e /run/netns/$P-rtr ]] || fail "half-built lab: $P-rtr left behind"
pass "lab_down removes a half-built lab"
exit 0
