#!/usr/bin/env bash
# Policy routing with mwan3 parity, on the lab (LAN client behind the router, two ISPs):
#   - policy `balanced` (weights 3:2): 2000 new UDP flows from the LAN land within 5 points of 60/40;
#   - a rule for one destination (203.0.113.3 -> wan2 only) overrides the default rule;
#   - policy `blocked` (no member online, last_resort unreachable) for 203.0.113.2: the client gets
#     an ICMP unreachable at once;
#   - a sticky rule (UDP to port 4433) keeps the client's new flows on one uplink;
#   - a port forward on the backup uplink (wan2:8080 -> LAN 10.10.0.2:8080) is answered via wan2,
#     although the main table's default route is wan1; the same for a UDP port forward (wan2:8081);
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

config rule 'sticky_4433'
	option proto 'udp'
	option dest_port '4433'
	option sticky '1'
	option timeout '600'
	option use_policy 'balanced'

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
  counter fwd_wan1 { }
  counter fwd_wan2 { }
  counter ufwd_wan1 { }
  counter ufwd_wan2 { }
  chain post {
    type filter hook postrouting priority 0;
    oifname "wan1" udp dport { 9999, 4433 } counter name "wan1"
    oifname "wan2" udp dport { 9999, 4433 } counter name "wan2"
    oifname "wan1" tcp sport 8080 counter name "fwd_wan1"
    oifname "wan2" tcp sport 8080 counter name "fwd_wan2"
    oifname "wan1" udp sport 8081 counter name "ufwd_wan1"
    oifname "wan2" udp sport 8081 counter name "ufwd_wan2"
  }
}
table ip ulfwd {
  chain pre {
    type nat hook prerouting priority -100;
    iifname "wan2" tcp dport 8080 dnat to 10.10.0.2:8080
    iifname "wan2" udp dport 8081 dnat to 10.10.0.2:8081
  }
}
NFT
count() { ip netns exec "$P-rtr" nft list counter inet ulcount "$1" | awk '/packets/ { print $2 }'; }
reset_counts() { ip netns exec "$P-rtr" nft reset counters table inet ulcount >/dev/null; }
# flows <n> <dest> <first source port> [dest port]: n new UDP flows from the LAN client, one datagram each.
flows() {
  ip netns exec "$P-lan" timeout 60 python3 -c '
import socket, sys
n, dest, port, dport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.10.0.2", port + i))
    s.sendto(b"x", (dest, dport))
    s.close()' "$1" "$2" "$3" "${4:-9999}"
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

reset_counts
flows 200 203.0.113.4 60000 4433
w1=$(count wan1) w2=$(count wan2)
info "sticky rule: 200 new flows from one client: wan1 $w1, wan2 $w2"
((w1 + w2 == 200)) || fail "sticky: expected 200 flows, saw $((w1 + w2))"
((w1 == 0 || w2 == 0)) || fail "sticky: the client's flows were split ($w1 / $w2), not kept on one uplink"
pass "sticky rule keeps one client's new flows on one uplink (200 of 200)"

# The port forward: a LAN server, and a client in the internet core connecting to wan2's address.
ip netns exec "$P-lan" timeout 60 python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.10.0.2", 8080)); s.listen(8)
for _ in range(3):
    c, _ = s.accept(); c.sendall(c.recv(64).upper()); c.close()' &
ul_bg_add $!
sleep 0.3
# Three connections (three source ports): without the inbound memory each reply would be balanced
# 3:2 by the default rule, so all three leaving by wan2 by chance has a probability of 6 %.
answer=$(ip netns exec "$P-core" timeout 20 python3 -c '
import socket
for _ in range(3):
    c = socket.create_connection(("198.51.100.2", 8080), timeout=5)
    c.sendall(b"hello"); a = c.recv(64).decode(); c.close()
print(a)') || fail "the port forward on wan2 did not answer"
fw1=$(count fwd_wan1) fw2=$(count fwd_wan2)
info "port forward answer '$answer'; reply packets out of wan1 $fw1, out of wan2 $fw2"
[[ $answer == HELLO ]] || fail "unexpected answer through the port forward: '$answer'"
((fw2 > 0 && fw1 == 0)) || fail "the LAN server's replies left by wan1 ($fw1) instead of wan2 ($fw2)"
pass "a port forward on the backup uplink is answered via the backup (main default is wan1)"

# The same for UDP: the LAN server's answers would be classified by the default rule (3:2) without
# uplinkd's inbound rules (ct mark at arrival, packet mark for the answers). Six clients, six
# source ports: all answers leaving by wan2 by chance has a probability of 0.4 %.
ip netns exec "$P-lan" timeout 60 python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.10.0.2", 8081))
for _ in range(6):
    d, a = s.recvfrom(64); s.sendto(d.upper(), a)' &
ul_bg_add $!
sleep 0.3
answers=$(ip netns exec "$P-core" timeout 30 python3 -c '
import socket
got = 0
for _ in range(6):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(3)
    c.sendto(b"hello", ("198.51.100.2", 8081))
    got += c.recv(64) == b"HELLO"
print(got)') || fail "the UDP port forward on wan2 did not answer"
uf1=$(count ufwd_wan1) uf2=$(count ufwd_wan2)
info "UDP port forward: $answers of 6 answered; answers out of wan1 $uf1, out of wan2 $uf2"
[[ $answers == 6 ]] || fail "the UDP port forward answered $answers of 6 datagrams"
((uf2 == 6 && uf1 == 0)) || fail "the LAN server's UDP answers left by wan1 ($uf1) instead of wan2 ($uf2)"
pass "a UDP port forward on the backup uplink is answered via the backup (6 of 6 answers on wan2)"

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

# Table sync follows route events, not only the 2 s safety poll: a route added to the main table
# through wan2 is copied into wan2's table (2) within 0.5 s, and its copy goes when it goes.
last_ms=0
for i in 1 2 3; do
  ip -n "$P-rtr" route add "10.99.$i.0/24" via 198.51.100.1 dev wan2 || fail "cannot add a test route"
  t0=$(date +%s%N)
  copied=0
  for _ in $(seq 1 50); do
    if ip -n "$P-rtr" route show table 2 | grep -q "^10\.99\.$i\.0/24"; then copied=1; break; fi
    sleep 0.01
  done
  last_ms=$((($(date +%s%N) - t0) / 1000000))
  ((copied)) || fail "route 10.99.$i.0/24 via wan2 not copied into table 2 within 0.5 s"
  ip -n "$P-rtr" route del "10.99.$i.0/24" via 198.51.100.1 dev wan2
  gone=0
  for _ in $(seq 1 50); do
    if ! ip -n "$P-rtr" route show table 2 | grep -q "^10\.99\.$i\.0/24"; then gone=1; break; fi
    sleep 0.01
  done
  ((gone)) || fail "the copy of 10.99.$i.0/24 stayed in table 2 after the route was deleted"
done
pass "main-table routes through wan2 are copied into table 2 and removed again within 0.5 s, 3 of 3 (route events; last copy after ${last_ms} ms)"

stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
ip netns exec "$P-rtr" nft delete table inet ulcount
ip netns exec "$P-rtr" nft delete table ip ulfwd
after=$(rtr_routing_snapshot "$P")
if [[ $before != "$after" ]]; then
  diff <(echo "$before") <(echo "$after") | sed 's/^/    /'
  fail "the router's rules and routes differ from before uplinkd started"
fi
pass "stopping uplinkd leaves the router's rules and routes exactly as before"
