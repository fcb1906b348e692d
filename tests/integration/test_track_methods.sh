#!/usr/bin/env bash
# Every probe method works end to end through the daemon, each reply caught by XDP:
#   wan1    nping-tcp  SYN to 203.0.113.1:5201 (an iperf3 server: answered by SYN-ACK)
#   wan1v6  ping       ICMPv6 to 2001:db8:ff::1, sharing device wan1 (mwan3's wan + wan6 case)
#   wan2    nslookup   DNS query to a resolver on 203.0.113.2:53 (a small responder in the core)
#   wan2arp arping     ARP to the gateway 198.51.100.1, sharing device wan2
# Then an upstream outage on isp1 takes wan1 and wan1v6 offline (not the ARP or DNS ones on wan2),
# and the BPF uplink record of wan1 says offline with its generation bumped once.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init track_methods daemon

P=$UL_PREFIX
ul_lab_up
make_hook

# A TCP listener (SYN-ACK) and a DNS responder in the core, bounded in time like every test process.
ip netns exec "$P-core" timeout 300 iperf3 -s -B 203.0.113.1 -p 5201 >/dev/null 2>&1 &
ul_bg_add $!
ip netns exec "$P-core" timeout 300 python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("203.0.113.2", 53))
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 12:
        continue
    # Same id and question, QR and RA set, no answers: enough for a resolver health check.
    s.sendto(q[:2] + bytes([0x81, 0x80]) + q[4:6] + b"\0\0\0\0\0\0" + q[12:], peer)
' >/dev/null 2>&1 &
ul_bg_add $!

CFG=$UL_TMP/uplinkd.conf
cat >"$CFG" <<'EOF2'
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan1'
	option enabled '1'
	option device 'wan1'
	option gateway '192.0.2.1'
	option track_method 'nping-tcp'
	option track_port '5201'
	list track_ip '203.0.113.1'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'

config interface 'wan2'
	option enabled '1'
	option device 'wan2'
	option gateway '198.51.100.1'
	option track_method 'nslookup'
	list track_ip '203.0.113.2'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'

config interface 'wan1v6'
	option enabled '1'
	option family 'ipv6'
	option device 'wan1'
	option gateway '2001:db8:1::1'
	list track_ip '2001:db8:ff::1'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'

config interface 'wan2arp'
	option enabled '1'
	option device 'wan2'
	option gateway '198.51.100.1'
	option track_method 'arping'
	list track_ip '198.51.100.1'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'
EOF2

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
wait_uplinkd_ready 15 || fail "uplinkd did not start"
for i in wan1 wan2 wan1v6 wan2arp; do
  wait_replied "$i" 4 10 || fail "$i: fewer than 4 probe replies in 10 s ($(iface_get "$i" probes.replied 2>/dev/null) replied)"
done
ul_snapshot
for i in wan1 wan2 wan1v6 wan2arp; do
  st=$(iface_get "$i" state) sent=$(iface_get "$i" probes.sent) rep=$(iface_get "$i" probes.replied)
  lost=$(iface_get "$i" probes.lost)
  info "$i: state $st, $rep of $sent probes answered, $lost lost"
  [[ $st == online ]] || fail "$i is '$st' (expected online)"
  ((lost == 0)) || fail "$i lost $lost probes on a clean path"
done
ul_snapshot_end
pass "TCP (SYN-ACK), DNS, ICMPv6 and ARP probes are answered and caught by XDP"

# The uplink record the datapath reads: {ifindex, state, generation, mark, ...} for id 1 (wan1).
record() {
  rtr_exec bpftool -j map lookup pinned "/sys/fs/bpf/uplinkd/$UPLINKD_INSTANCE/uplinks" key 1 0 0 0 |
    python3 -c '
import json, sys
v = json.load(sys.stdin)["value"]
b = bytes(int(x, 16) for x in v)
u32 = lambda o: int.from_bytes(b[o:o + 4], "little")
print(u32(4), u32(8), hex(u32(12)))'
}
read -r state gen mark < <(record) || fail "cannot read the uplinks map"
info "wan1 record before the outage: state $state, generation $gen, mark $mark"
[[ $state == 3 && $gen == 0 && $mark == 0x100 ]] || fail "wan1 record should be online(3), generation 0, mark 0x100"

seen=$(hook_count)
lab_outage "$P" isp1 on
wait_hook disconnected wan1 "$seen" 10 >/dev/null || fail "wan1 (nping-tcp) not disconnected within 10 s"
wait_hook disconnected wan1v6 "$seen" 10 >/dev/null || fail "wan1v6 (ping6) not disconnected within 10 s"
pass "the outage on isp1 takes wan1 (TCP) and wan1v6 (ICMPv6) offline"
read -r state gen mark < <(record)
info "wan1 record after the outage: state $state, generation $gen"
[[ $state == 1 && $gen == 1 ]] || fail "wan1 record should be offline(1) with generation 1"
pass "the BPF uplink record follows: offline, generation bumped once"
for i in wan2 wan2arp; do
  [[ $(iface_get "$i" state) == online ]] || fail "$i went '$(iface_get "$i" state)' during isp1's outage"
  [[ $(iface_get "$i" transitions) == 0 ]] || fail "$i made transitions during isp1's outage"
done
pass "wan2 (DNS) and wan2arp (ARP) stay online with 0 transitions"
