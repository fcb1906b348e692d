#!/usr/bin/env bash
# Policy routing with mwan3 parity, on the lab (LAN client behind the router, two ISPs):
#   - policy `balanced` (weights 3:2): 2000 new UDP flows from the LAN land within 5 points of 60/40;
#   - a rule for one destination (203.0.113.3 -> wan2 only) overrides the default rule;
#   - policy `blocked` (no member online, last_resort unreachable) for 203.0.113.2: the client gets
#     an ICMP unreachable at once;
#   - failover: when wan1 goes offline, new flows of `balanced` all leave by wan2, and move back
#     when it returns;
#   - stopping uplinkd leaves the router's rules and routes exactly as they were before it started.
# Which uplink a flow took is counted by nft counters on the router's postrouting per oif.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init policy daemon

P=$UL_PREFIX
ul_lab_up
make_hook
CFG=$UL_TMP/uplinkd.conf
cat >"$CFG" <<'EOF2'
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan1'
	option enabled '1'
	option device 'wan1'
	option gateway '192.0.2.1'
	list track_ip '203.0.113.1'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'

config interface 'wan2'
	option enabled '1'
	option device 'wan2'
	option gateway '198.51.100.1'
	list track_ip '203.0.113.1'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'

config interface 'wan3'
	option enabled '0'
	option device 'wan3'

config member 'wan1_m1_w3'
	option interface 'wan1'
	option metric '1'
	option weight '3'

config member 'wan2_m1_w2'
	option interface 'wan2'
	option metric '1'
	option weight '2'

config member 'wan2_only'
	option interface 'wan2'

config member 'wan3_only'
	option interface 'wan3'

config policy 'balanced'
	list use_member 'wan1_m1_w3'
	list use_member 'wan2_m1_w2'

config policy 'backup'
	list use_member 'wan2_only'

config policy 'blocked'
	list use_member 'wan3_only'
	option last_resort 'unreachable'

config rule 'to_core3'
	option dest_ip '203.0.113.3'
	option use_policy 'backup'

config rule 'to_core2'
	option dest_ip '203.0.113.2'
	option use_policy 'blocked'

config rule 'default_rule_v4'
	option dest_ip '0.0.0.0/0'
	option family 'ipv4'
	option use_policy 'balanced'
EOF2

before=$(rtr_routing_snapshot "$P")
ip netns exec "$P-rtr" nft -f - <<'NFT' || fail "cannot add the counting table"
table inet ulcount {
  counter wan1 { }
  counter wan2 { }
  chain post {
    type filter hook postrouting priority 0;
    oifname "wan1" udp dport 9999 counter name "wan1"
    oifname "wan2" udp dport 9999 counter name "wan2"
  }
}
NFT
count() { ip netns exec "$P-rtr" nft list counter inet ulcount "$1" | awk '/packets/ { print $2 }'; }
reset_counts() { ip netns exec "$P-rtr" nft reset counters table inet ulcount >/dev/null; }
# flows <n> <dest> <first source port>: n new UDP flows from the LAN client, one datagram each.
flows() {
  ip netns exec "$P-lan" timeout 60 python3 -c '
import socket, sys
n, dest, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.10.0.2", port + i))
    s.sendto(b"x", (dest, 9999))
    s.close()' "$1" "$2" "$3"
  sleep 0.5
}

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
wait_uplinkd_ready 15 || fail "uplinkd did not start"
wait_iface_state wan1 online 10 || fail "wan1 not online"
wait_iface_state wan2 online 10 || fail "wan2 not online"
ctl policies | sed 's/^/    /'

reset_counts
flows 2000 203.0.113.4 20000
w1=$(count wan1) w2=$(count wan2)
share=$(fcalc "100 * $w1 / ($w1 + $w2)")
info "balanced 3:2 over 2000 new flows: wan1 $w1, wan2 $w2 (wan1 $share %)"
((w1 + w2 == 2000)) || fail "expected 2000 flows out of wan1+wan2, saw $((w1 + w2))"
fle 55 "$share" && fle "$share" 65 || fail "wan1 share $share % is not within 5 points of 60 %"
pass "weights 3:2 split new flows $share/$(fcalc "100 - $share")"

reset_counts
flows 50 203.0.113.3 30000
[[ $(count wan2) == 50 && $(count wan1) == 0 ]] || fail "rule to_core3: wan1 $(count wan1), wan2 $(count wan2) (expected all 50 on wan2)"
pass "a rule for one destination overrides the default rule (50 of 50 flows to 203.0.113.3 on wan2)"

out=$(ip netns exec "$P-lan" ping -c 1 -W 2 203.0.113.2 2>&1) && fail "ping to a last_resort unreachable destination succeeded"
grep -qi "unreachable" <<<"$out" || fail "no ICMP unreachable for the last_resort destination: $out"
pass "last_resort unreachable: the client gets '$(grep -io 'destination [a-z ]*unreachable' <<<"$out" | head -n1)'"

seen=$(hook_count)
lab_outage "$P" isp1 on
wait_hook disconnected wan1 "$seen" 10 >/dev/null || fail "wan1 not disconnected after the outage"
reset_counts
flows 200 203.0.113.4 40000
[[ $(count wan2) == 200 && $(count wan1) == 0 ]] || fail "with wan1 offline: wan1 $(count wan1), wan2 $(count wan2) (expected all 200 on wan2)"
pass "failover: with wan1 offline every new flow of 'balanced' leaves by wan2"

seen=$(hook_count)
lab_outage "$P" isp1 off
wait_hook connected wan1 "$seen" 15 >/dev/null || fail "wan1 not connected again"
reset_counts
flows 500 203.0.113.4 50000
w1=$(count wan1)
((w1 > 200)) || fail "after wan1 returned only $w1 of 500 new flows used it"
pass "failback: new flows use wan1 again ($w1 of 500)"

stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
ip netns exec "$P-rtr" nft delete table inet ulcount
after=$(rtr_routing_snapshot "$P")
if [[ $before != "$after" ]]; then
  diff <(echo "$before") <(echo "$after") | sed 's/^/    /'
  fail "the router's rules and routes differ from before uplinkd started"
fi
pass "stopping uplinkd leaves the router's rules and routes exactly as before"
