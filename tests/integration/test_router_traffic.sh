#!/usr/bin/env bash
# The router's own traffic, on the lab:
#   - it follows the policy of the default rule (wan1 metric 1, wan2 metric 2: failover): uplinkd's
#     default route (metric 1, below the lab's netifd-like metrics 10 and 20) goes via wan1; the
#     router's ping and TCP connect to the core leave by wan1;
#   - wan1 fails beyond its gateway (lab_outage: the link and the system's metric-10 route stay): the
#     route moves to wan2 and the router's ping and TCP connect leave by wan2; then back to wan1;
#   - a policy balancing both gives a multipath route with the members' weights (after a reload);
#   - `uplinkctl use wan2 ping ...` leaves by wan2 while the default goes by wan1; the command's exit
#     status is uplinkctl's; an unknown or disabled interface is a clear error;
#   - connections to the router's own wan2 address (TCP to a listener bound to it, ping) are answered
#     by wan2 while the default goes by wan1: both ISPs drop packets whose source is not theirs
#     (source validation, BCP 38); without uplinkd that fails (checked first, as a witness), with it
#     the source rules (pref 1500+N `from <address> fwmark 0/0x3f00 lookup N`; without the fwmark
#     when `local_rules` is '0') send the replies by wan2; the rules
#     follow an address added to and removed from wan2;
#   - stopping uplinkd removes its route: rules and routes are as before it started.
# Which uplink a packet left by is counted by nft counters in the router's output path.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init router_traffic daemon

P=$UL_PREFIX
ul_lab_up
make_hook
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" 0.5 1 3 3

before=$(rtr_routing_snapshot "$P")
ul_out_counters "$P" \
  'icmp_wan1=oifname "wan1" ip daddr 203.0.113.3 icmp type echo-request' \
  'icmp_wan2=oifname "wan2" ip daddr 203.0.113.3 icmp type echo-request' \
  'tcp_wan1=oifname "wan1" tcp dport 7001 tcp flags syn' \
  'tcp_wan2=oifname "wan2" tcp dport 7001 tcp flags syn' \
  'in_tcp_wan1=oifname "wan1" ip saddr 198.51.100.2 tcp sport 7002' \
  'in_tcp_wan2=oifname "wan2" ip saddr 198.51.100.2 tcp sport 7002' \
  'in_icmp_wan1=oifname "wan1" ip saddr 198.51.100.2 icmp type echo-reply' \
  'in_icmp_wan2=oifname "wan2" ip saddr 198.51.100.2 icmp type echo-reply' ||
  fail "cannot add the counting table"
# Each ISP forwards only packets from its own prefix (source validation), as real ISPs do.
ul_source_validation "$P" || fail "cannot add source validation on the ISPs"
spoofed() { ul_spoofed "$1"; }
count() { ul_count "$1"; }
reset_counts() { ip netns exec "$P-rtr" nft reset counters table inet ulcount >/dev/null; }
default_routes() { ip -n "$P-rtr" -4 route show default | tr '\n' ';'; }
# hi_server <ns> <address> <port>: a TCP server (≤ 120 s) that greets every connection with "hi".
hi_server() {
  ip netns exec "$P-$1" timeout 120 python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()' "$2" "$3" &
  ul_bg_add $!
}
hi_server core 0.0.0.0 7001
# A service on the router bound to its wan2 address (an SSH or VPN server listening there).
hi_server rtr 198.51.100.2 7002
core_connects_to_wan2() {
  ip netns exec "$P-core" timeout 5 python3 -c '
import socket
c = socket.create_connection(("198.51.100.2", 7002), timeout=2)
assert c.recv(2) == b"hi"' 2>/dev/null
}
core_pings_wan2() { ip netns exec "$P-core" ping -n -c 2 -i 0.2 -W 1 198.51.100.2 >/dev/null 2>&1; }

# Witness, before uplinkd runs: the replies leave by the main table's wan1 and isp1 drops them.
for ((i = 0; i < 30; i++)); do
  ip netns exec "$P-rtr" ss -ltn 'sport = :7002' | grep -q 198.51.100.2 && break
  sleep 0.1
done
core_connects_to_wan2 && fail "witness: the core reached 198.51.100.2:7002 without uplinkd (no source validation?)"
core_pings_wan2 && fail "witness: the core's ping to 198.51.100.2 was answered without uplinkd"
(($(count in_tcp_wan1) >= 1 && $(count in_icmp_wan1) >= 1 && $(spoofed isp1) >= 2)) ||
  fail "witness: replies from 198.51.100.2 by wan1: TCP $(count in_tcp_wan1), ICMP $(count in_icmp_wan1), isp1 dropped $(spoofed isp1)"
info "without uplinkd: replies from 198.51.100.2 left by wan1 (TCP $(count in_tcp_wan1), ICMP $(count in_icmp_wan1)), isp1 dropped $(spoofed isp1)"
pass "witness: without source rules the router's wan2 address is unreachable (replies leave by wan1)"

# router_goes_by <uplink>: the router's own ping and TCP connect to the core leave by that uplink.
router_goes_by() {
  local dev=$1 other
  [[ $dev == wan1 ]] && other=wan2 || other=wan1
  reset_counts
  ip netns exec "$P-rtr" ping -n -c 2 -i 0.2 -W 2 203.0.113.3 >/dev/null 2>&1 ||
    fail "the router's ping to 203.0.113.3 failed (expected via $dev; default routes: $(default_routes))"
  ip netns exec "$P-rtr" timeout 10 python3 -c '
import socket
c = socket.create_connection(("203.0.113.4", 7001), timeout=3)
assert c.recv(2) == b"hi"' || fail "the router's TCP connect to 203.0.113.4:7001 failed (expected via $dev)"
  (($(count "icmp_$dev") >= 2 && $(count "icmp_$other") == 0)) ||
    fail "router ping: $dev $(count "icmp_$dev"), $other $(count "icmp_$other") (expected all by $dev; routes: $(default_routes))"
  (($(count "tcp_$dev") >= 1 && $(count "tcp_$other") == 0)) ||
    fail "router TCP connect: $dev $(count "tcp_$dev"), $other $(count "tcp_$other") (expected by $dev)"
}

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
for ((i = 0; i < 20; i++)); do
  [[ $(default_routes) == *"via 192.0.2.1 dev wan1 proto static metric 1 "* ]] && break
  sleep 0.1
done
info "default routes: $(default_routes)"
[[ $(default_routes) == *"via 192.0.2.1 dev wan1 proto static metric 1 "* ]] ||
  fail "no default route of uplinkd via wan1 at metric 1: $(default_routes)"
router_goes_by wan1
pass "the router's own ping and TCP connect follow the default policy: wan1"

# Connections to the router's wan2 address are answered by wan2 while the default goes by wan1.
rules4() { ip -n "$P-rtr" -4 rule show; }
for ((i = 0; i < 30; i++)); do
  rules4 | grep -Eq "^1502:.*from 198.51.100.2 (fwmark 0/0x3f00 )?lookup 2" && break
  sleep 0.1
done
rules4 | grep -Eq "^1501:.*from 192.0.2.2 (fwmark 0/0x3f00 )?lookup 1" && rules4 | grep -Eq "^1502:.*from 198.51.100.2 (fwmark 0/0x3f00 )?lookup 2" ||
  fail "no source rules for the uplinks' addresses: $(rules4 | tr '\n' ';')"
reset_counts
core_connects_to_wan2 || fail "the core's TCP connection to 198.51.100.2:7002 was not answered (routes: $(default_routes))"
core_pings_wan2 || fail "the core's ping to 198.51.100.2 was not answered"
(($(count in_tcp_wan2) >= 1 && $(count in_tcp_wan1) == 0)) ||
  fail "TCP replies from 198.51.100.2: wan1 $(count in_tcp_wan1), wan2 $(count in_tcp_wan2) (expected all by wan2)"
(($(count in_icmp_wan2) >= 2 && $(count in_icmp_wan1) == 0)) ||
  fail "echo replies from 198.51.100.2: wan1 $(count in_icmp_wan1), wan2 $(count in_icmp_wan2) (expected all by wan2)"
info "replies from 198.51.100.2: TCP wan2 $(count in_tcp_wan2) wan1 0, ICMP wan2 $(count in_icmp_wan2) wan1 0"
pass "a TCP connection and a ping to the router's wan2 address are answered by wan2 (default via wan1)"

# The source rules follow the addresses: one added to wan2, then removed (a DHCP renew, a new address).
ip -n "$P-rtr" addr add 198.51.100.7/24 dev wan2
for ((i = 0; i < 30; i++)); do
  rules4 | grep -Eq "^1502:.*from 198.51.100.7 (fwmark 0/0x3f00 )?lookup 2" && break
  sleep 0.1
done
rules4 | grep -Eq "^1502:.*from 198.51.100.7 (fwmark 0/0x3f00 )?lookup 2" ||
  fail "no source rule for 198.51.100.7 added to wan2: $(rules4 | tr '\n' ';')"
ip -n "$P-rtr" addr del 198.51.100.7/24 dev wan2
for ((i = 0; i < 30; i++)); do
  rules4 | grep -q "from 198.51.100.7 " || break
  sleep 0.1
done
rules4 | grep -q "from 198.51.100.7 " && fail "the source rule of the removed 198.51.100.7 stayed: $(rules4 | tr '\n' ';')"
rules4 | grep -Eq "^1502:.*from 198.51.100.2 (fwmark 0/0x3f00 )?lookup 2" || fail "the source rule of 198.51.100.2 went too"
pass "the source rules follow an address added to and removed from wan2"

seen=$(hook_count)
lab_outage "$P" isp1 on
wait_hook disconnected wan1 "$seen" 10 >/dev/null || fail "wan1 not disconnected after the outage"
sleep 0.3
info "default routes with wan1 offline: $(default_routes)"
[[ $(default_routes) == *"via 198.51.100.1 dev wan2 proto static metric 1 "* ]] ||
  fail "uplinkd's default route did not move to wan2: $(default_routes)"
router_goes_by wan2
pass "wan1 offline (its link and the system's metric-10 route still up): the router's traffic leaves by wan2"

seen=$(hook_count)
lab_outage "$P" isp1 off
wait_hook connected wan1 "$seen" 15 >/dev/null || fail "wan1 not connected again"
sleep 0.3
router_goes_by wan1
pass "wan1 back: the router's traffic leaves by wan1 again"

# uplinkctl use: one command by wan2 while the default goes by wan1.
reset_counts
out=$(ctl use wan2 ping -n -c 1 -W 2 203.0.113.3 2>&1) || fail "uplinkctl use wan2 ping failed: $out"
(($(count icmp_wan2) == 1 && $(count icmp_wan1) == 0)) ||
  fail "uplinkctl use wan2: wan1 $(count icmp_wan1), wan2 $(count icmp_wan2) (expected the ping by wan2)"
reset_counts
ctl use wan2 python3 -c '
import socket
c = socket.create_connection(("203.0.113.4", 7001), timeout=3)
assert c.recv(2) == b"hi"' || fail "uplinkctl use wan2 python3 (TCP connect) failed"
(($(count tcp_wan2) == 1 && $(count tcp_wan1) == 0)) ||
  fail "uplinkctl use wan2, TCP: wan1 $(count tcp_wan1), wan2 $(count tcp_wan2)"
ip netns exec "$P-rtr" ping -n -c 1 -W 2 203.0.113.3 >/dev/null || fail "plain ping failed"
(($(count icmp_wan1) == 1)) || fail "without use the ping did not go by wan1"
pass "uplinkctl use wan2: ping and a TCP connect leave by wan2 while the default goes by wan1"
ctl use wan1 sh -c 'exit 7'
rc=$?
((rc == 7)) || fail "uplinkctl use returned $rc for a command that exited 7"
out=$(ctl use nosuch true 2>&1) && fail "uplinkctl use accepted an unknown interface"
grep -q "unknown interface 'nosuch'" <<<"$out" || fail "unclear error for an unknown interface: $out"
info "use: exit status passed through (7); unknown interface: '$out'"
pass "uplinkctl use passes the exit status through and names an unknown interface"

# A balancing policy gives a multipath route with the weights (applied by reload).
sed -i "s/option metric '2'/option metric '1'/" "$CFG"
out=$(ctl reload 2>&1) || fail "reload to a balancing policy failed: $out"
sleep 0.3
routes=$(ip -n "$P-rtr" -4 route show default metric 1)
info "default route with wan1:3 wan2:2 -> $(tr '\n' ' ' <<<"$routes")"
grep -q "nexthop via 192.0.2.1 dev wan1 weight 3" <<<"$routes" &&
  grep -q "nexthop via 198.51.100.1 dev wan2 weight 2" <<<"$routes" ||
  fail "no multipath default route with weights 3 and 2: $routes"
pass "members sharing the lowest metric give a multipath route with their weights (3, 2)"

stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
ip netns exec "$P-rtr" nft delete table inet ulcount
ip netns exec "$P-isp1" nft delete table inet ulbcp38
ip netns exec "$P-isp2" nft delete table inet ulbcp38
after=$(rtr_routing_snapshot "$P")
if [[ $before != "$after" ]]; then
  diff <(echo "$before") <(echo "$after") | sed 's/^/    /'
  fail "the router's rules and routes differ from before uplinkd started"
fi
pass "stopping uplinkd removes its default route: rules and routes exactly as before"
