#!/usr/bin/env bash
# The router's own traffic follows every rule (issue 15), as mwan3's mangle OUTPUT chain does:
#   - rules for one destination (any protocol: TCP and UDP), one TCP port, one ipset (an nft set in
#     table inet fw4) and a sticky rule send the router's own TCP connect (python), ping and DNS
#     query (UDP to a responder in the core) by wan2 (policy wan2 first, wan1 backup) while the
#     default rule and uplinkd's default route say wan1;
#   - both ISPs drop packets whose source is not theirs: the re-routed packets carry wan2's address;
#   - wan2 fails beyond its gateway: they move to wan1; wan2 back: they return to wan2;
#   - `uplinkctl use wan1 ...` still overrides a rule;
#   - the sticky rule (wan1 and wan2 balanced 1:1) keeps every new connection of the router to its
#     port on one uplink; when that uplink fails its entries go and the connections move;
#   - stopping uplinkd removes its nft table.
# Which uplink a packet left by is counted by nft counters at postrouting (after source NAT): the
# output hook's oifname is the device chosen before uplinkd's route chain re-routed the packet.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init router_rules daemon

P=$UL_PREFIX
ul_lab_up
make_hook
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" 0.5 1 3 3
# No local_rules line: the output table is the default.
grep -q "local_rules" "$CFG" && fail "the lab's config sets local_rules; this test checks the default"
# Our members, policies and rules go before the file's catch-all default_rule (first match wins).
python3 - "$CFG" <<'PY' || fail "cannot write the rules into $CFG"
import sys
path = sys.argv[1]
text = open(path).read()
ours = """config member 'wan2_m1'
	option interface 'wan2'
	option metric '1'

config member 'wan1_m2'
	option interface 'wan1'
	option metric '2'

config member 'wan1_m1'
	option interface 'wan1'
	option metric '1'

config policy 'wan2_wan1'
	list use_member 'wan2_m1'
	list use_member 'wan1_m2'

config policy 'balanced'
	list use_member 'wan1_m1'
	list use_member 'wan2_m1'

config rule 'one_dest'
	option dest_ip '203.0.113.4'
	option use_policy 'wan2_wan1'

config rule 'one_port'
	option proto 'tcp'
	option dest_port '7003'
	option use_policy 'wan2_wan1'

config rule 'by_ipset'
	option ipset 'ul_dst'
	option use_policy 'wan2_wan1'

config rule 'sticky_port'
	option proto 'tcp'
	option dest_port '7005'
	option sticky '1'
	option timeout '600'
	option use_policy 'balanced'

"""
at = text.index("config rule 'default_rule'")
open(path, "w").write(text[:at] + ours + text[at:])
PY
# The ipset: an nft set of fw4's table, as OpenWrt's firewall makes it.
ip netns exec "$P-rtr" nft -f - <<'NFT' || fail "cannot add the ipset"
table inet fw4 {
  set ul_dst { type ipv4_addr; flags interval; elements = { 203.0.113.3 } }
}
NFT
ip netns exec "$P-rtr" nft -f - <<'NFT' || fail "cannot add the counting table"
table inet ulrt {
  counter tcp4_wan1 { }
  counter tcp4_wan2 { }
  counter tcp3_wan1 { }
  counter tcp3_wan2 { }
  counter tcp5_wan1 { }
  counter tcp5_wan2 { }
  counter icmp_wan1 { }
  counter icmp_wan2 { }
  counter dns_wan1 { }
  counter dns_wan2 { }
  counter udp4_wan1 { }
  counter udp4_wan2 { }
  chain post {
    type filter hook postrouting priority 300; policy accept;
    oifname "wan1" ip daddr 203.0.113.4 tcp dport 7001 tcp flags syn counter name "tcp4_wan1"
    oifname "wan2" ip daddr 203.0.113.4 tcp dport 7001 tcp flags syn counter name "tcp4_wan2"
    oifname "wan1" tcp dport 7003 tcp flags syn counter name "tcp3_wan1"
    oifname "wan2" tcp dport 7003 tcp flags syn counter name "tcp3_wan2"
    oifname "wan1" tcp dport 7005 tcp flags syn counter name "tcp5_wan1"
    oifname "wan2" tcp dport 7005 tcp flags syn counter name "tcp5_wan2"
    oifname "wan1" ip daddr 203.0.113.3 icmp type echo-request counter name "icmp_wan1"
    oifname "wan2" ip daddr 203.0.113.3 icmp type echo-request counter name "icmp_wan2"
    oifname "wan1" ip daddr 203.0.113.3 udp dport 53 counter name "dns_wan1"
    oifname "wan2" ip daddr 203.0.113.3 udp dport 53 counter name "dns_wan2"
    oifname "wan1" ip daddr 203.0.113.4 udp dport 5304 counter name "udp4_wan1"
    oifname "wan2" ip daddr 203.0.113.4 udp dport 5304 counter name "udp4_wan2"
  }
}
NFT
# Each ISP forwards only packets from its own prefix (source validation), as real ISPs do.
ul_source_validation "$P" || fail "cannot add source validation on the ISPs"
spoofed() { ul_spoofed "$1"; }
count() { ip netns exec "$P-rtr" nft list counter inet ulrt "$1" | awk '/packets/ { print $2 }'; }
reset_counts() { ip netns exec "$P-rtr" nft reset counters table inet ulrt >/dev/null; }

# Servers in the core: TCP greeters and a UDP responder on port 53 and 5304 (≤ 150 s each).
ip netns exec "$P-core" timeout 150 python3 -c '
import socket, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.sendall(b"hi"); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(data, peer)
for p in (7001, 7003, 7005): threading.Thread(target=tcp, args=(p,), daemon=True).start()
for p in (53, 5304): threading.Thread(target=udp, args=(p,), daemon=True).start()
try:
    threading.Event().wait()
except KeyboardInterrupt:
    pass' &
ul_bg_add $!

# A DNS query for openwrt.org (a real query's bytes) to 203.0.113.3:53, answered by the responder.
dns_query() {
  ip netns exec "$P-rtr" timeout 5 python3 -c '
import socket, struct
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07openwrt\x03org\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(q, ("203.0.113.3", 53))
assert s.recvfrom(2048)[0] == q'
}
tcp_connect() {
  ip netns exec "$P-rtr" timeout 5 python3 -c '
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
assert c.recv(2) == b"hi"' "$1" "$2"
}
udp_echo() {
  ip netns exec "$P-rtr" timeout 5 python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"uplinkd", (sys.argv[1], int(sys.argv[2])))
assert s.recvfrom(64)[0] == b"uplinkd"' "$1" "$2"
}

# rules_go_by <dev>: the router's own TCP connect and UDP to 203.0.113.4 (one_dest), TCP to port
# 7003 (one_port), ping and DNS to 203.0.113.3 (by_ipset) all leave by <dev>, and are answered.
rules_go_by() {
  local dev=$1 other name
  [[ $dev == wan1 ]] && other=wan2 || other=wan1
  reset_counts
  tcp_connect 203.0.113.4 7001 || fail "the router's TCP connect to 203.0.113.4:7001 failed (expected via $dev)"
  udp_echo 203.0.113.4 5304 || fail "the router's UDP to 203.0.113.4:5304 got no answer (expected via $dev)"
  tcp_connect 203.0.113.1 7003 || fail "the router's TCP connect to 203.0.113.1:7003 failed (expected via $dev)"
  ip netns exec "$P-rtr" ping -n -c 2 -i 0.2 -W 2 203.0.113.3 >/dev/null ||
    fail "the router's ping to 203.0.113.3 failed (expected via $dev)"
  dns_query || fail "the router's DNS query to 203.0.113.3 got no answer (expected via $dev)"
  for name in tcp4 udp4 tcp3 icmp dns; do
    (($(count "${name}_$dev") >= 1 && $(count "${name}_$other") == 0)) ||
      fail "$name: $dev $(count "${name}_$dev"), $other $(count "${name}_$other") (expected all by $dev)"
  done
  info "by $dev: tcp4 $(count "tcp4_$dev") udp4 $(count "udp4_$dev") tcp3 $(count "tcp3_$dev")" \
    "icmp $(count "icmp_$dev") dns $(count "dns_$dev"); $other none"
}

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
table=$(ip netns exec "$P-rtr" nft list tables | grep -o "uplinkd-out[^ ]*" | head -n 1)
[[ -n $table ]] || fail "no uplinkd-out table in the router: $(ip netns exec "$P-rtr" nft list tables | tr '\n' ';')"
info "uplinkd's output table: inet $table"

rules_go_by wan2
(($(spoofed isp1) == 0 && $(spoofed isp2) == 0)) ||
  fail "an ISP dropped spoofed packets: isp1 $(spoofed isp1), isp2 $(spoofed isp2)"
pass "destination, port and ipset rules send the router's TCP, UDP, ping and DNS by wan2 (default: wan1), with wan2's source"

# uplinkctl use overrides the rule.
reset_counts
out=$(ctl use wan1 ping -n -c 1 -W 2 203.0.113.3 2>&1) || fail "uplinkctl use wan1 ping failed: $out"
(($(count icmp_wan1) == 1 && $(count icmp_wan2) == 0)) ||
  fail "uplinkctl use wan1: wan1 $(count icmp_wan1), wan2 $(count icmp_wan2) (expected the ping by wan1)"
pass "uplinkctl use wan1 overrides the ipset rule's wan2"

# Sticky: ten new connections of the router to port 7005 all take one uplink of the 1:1 policy.
sticky_round() {
  local i
  reset_counts
  for ((i = 0; i < 10; i++)); do
    tcp_connect 203.0.113.2 7005 || fail "the router's TCP connect $i to 203.0.113.2:7005 failed"
  done
  info "sticky rule, ten connections: wan1 $(count tcp5_wan1), wan2 $(count tcp5_wan2)"
}
sticky_round
if (($(count tcp5_wan1) == 10)); then stuck=wan1 other=wan2; elif (($(count tcp5_wan2) == 10)); then
  stuck=wan2 other=wan1
else
  fail "the sticky rule split the router's connections: wan1 $(count tcp5_wan1), wan2 $(count tcp5_wan2)"
fi
pass "the sticky rule keeps the router's new connections on one uplink ($stuck)"

# Failover of the sticky uplink: its entries go, the connections move to the other one, and stay
# there when it comes back (the source now sticks to the other uplink).
# sticky_entries <uplink>: the sources in the sticky set of rule 3 (sticky_port) for that uplink.
sticky_entries() {
  ip netns exec "$P-rtr" nft list set inet "$table" "sticky3_${1#wan}_v4" | grep -c "elements = "
}
(($(sticky_entries "$stuck") == 1)) || fail "no sticky entry for $stuck: $(ip netns exec "$P-rtr" nft list set inet "$table" "sticky3_${stuck#wan}_v4")"
isp=isp${stuck#wan}
seen=$(hook_count)
lab_outage "$P" "$isp" on
wait_hook disconnected "$stuck" "$seen" 10 >/dev/null || fail "$stuck not disconnected after the outage"
sleep 0.3
(($(sticky_entries "$stuck") == 0)) || fail "the sticky entries of $stuck stayed after it went offline"
sticky_round
(($(count "tcp5_$other") == 10)) || fail "after $stuck failed the sticky connections did not all move to $other"
seen=$(hook_count)
lab_outage "$P" "$isp" off
wait_hook connected "$stuck" "$seen" 15 >/dev/null || fail "$stuck not connected again"
sleep 0.3
# The key is the router's source address, which the main table's route chose: while wan1 is offline
# uplinkd's default route (hence that source) moves to wan2, so only with wan2 as the failed uplink
# does the same source come back; then it must stay on wan1 although wan2 is back.
if [[ $stuck == wan2 ]]; then
  sticky_round
  (($(count tcp5_wan1) == 10)) || fail "with wan2 back the sticky connections left wan1"
  info "wan2 back: the router's source stays on wan1 (sticky)"
fi
pass "$stuck offline: its sticky entries went and the router's connections took $other"

# Failover of the rules' uplink (wan2): they move to wan1, then come back.
seen=$(hook_count)
lab_outage "$P" isp2 on
wait_hook disconnected wan2 "$seen" 10 >/dev/null || fail "wan2 not disconnected after the outage"
sleep 0.3
rules_go_by wan1
pass "wan2 offline: the rules' traffic of the router leaves by wan1"
seen=$(hook_count)
lab_outage "$P" isp2 off
wait_hook connected wan2 "$seen" 15 >/dev/null || fail "wan2 not connected again"
sleep 0.3
rules_go_by wan2
pass "wan2 back: the rules' traffic of the router leaves by wan2 again"

stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
ip netns exec "$P-rtr" nft list tables | grep -q "uplinkd-out" &&
  fail "uplinkd's output table stayed after stop: $(ip netns exec "$P-rtr" nft list tables | tr '\n' ';')"
pass "stopping uplinkd removes its output table"
# Every update of the table (policies, sticky flushes, connected networks, ipset copies) went in.
if grep -E "the router's own traffic|router traffic rules" "$UPLINKD_LOG"; then
  fail "uplinkd logged errors about its output table (above)"
fi
pass "no error about the output table in uplinkd's log"
