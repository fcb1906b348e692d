#!/usr/bin/env bash
# Benchmark: TCP forwarding throughput through the lab's router namespace (lab/lab.sh: lan -> rtr ->
# isp1/isp2 -> core), iperf3 client in lan, server on the core's 203.0.113.1, STREAMS parallel
# streams for SECONDS each run, one run per case:
#   a) plain routing: no marking, uplinkd not running (every flow takes the main table's wan1);
#   b) uplinkd running with a two-member balanced policy (wan1 and wan2, metric 1, weight 1 each):
#      the LAN classifier marks each new flow, mwan3's ip rules route it;
#   c) uplinkd stopped, an nft ruleset doing what mwan3's mangle chain does (restore the conntrack
#      mark, connected networks from a set to the main table, the rule, a random split by weight
#      (`numgen`, mwan3 uses iptables' statistic), save the mark) plus mwan3's fwmark rules and
#      per-uplink tables.
# Prints Gbit/s per case and the ratio to (a), from this one run. The lab's NAT (masquerade on
# both uplinks) is there in every case. Bounded: about 40 s with the defaults; the lab's
# namespaces are deleted on exit whatever happens (tests/integration/lib.sh's trap).
#
#   sudo bench/forward_bench.sh [seconds=5] [streams=8]
# with UPLINKD_BUILD pointing at a build directory (default ./build).
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
SECONDS_PER_RUN=${1:-5}
STREAMS=${2:-8}
UL_NO_RESULT=1
UPLINKD_LOG_LEVEL=${UPLINKD_LOG_LEVEL:-info}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/forward_lab.sh"
ul_init forward_bench daemon
command -v iperf3 >/dev/null || skip "needs iperf3"
command -v jq >/dev/null || skip "needs jq"
[[ $SECONDS_PER_RUN =~ ^[0-9]+$ && $SECONDS_PER_RUN -ge 1 && $SECONDS_PER_RUN -le 30 ]] || skip "seconds: 1..30"
[[ $STREAMS =~ ^[0-9]+$ && $STREAMS -ge 1 && $STREAMS -le 16 ]] || skip "streams: 1..16"

P=$UL_PREFIX
ul_lab_up
RTR=$P-rtr

# shellcheck disable=SC2119 # no prefix: the server runs on any CPU
fl_start_iperf_server

# run_iperf <label>: one run from the LAN client; prints Gbit/s (receiver side), fails on error.
run_iperf() {
  local label=$1 out bps
  out=$(timeout $((SECONDS_PER_RUN + 20)) ip netns exec "$P-lan" \
    iperf3 -c 203.0.113.1 -P "$STREAMS" -t "$SECONDS_PER_RUN" -J 2>&1) || fail "iperf3 ($label): $out"
  bps=$(jq -r '.end.sum_received.bits_per_second' <<<"$out") || fail "iperf3 ($label) printed no result"
  printf '%s\n' "$out" >"$UL_TMP/iperf3-$label.json"
  awk -v b="$bps" 'BEGIN { printf "%.2f", b / 1e9 }'
}

# Packets the router sent out of each uplink during a run (both share the load only when marked).
oif_packets() { ip -n "$RTR" -s -j link show "$1" | jq -r '.[0].stats64.tx.packets'; }

# ---- a) plain routing -------------------------------------------------------------------------
info "a) plain routing, ${STREAMS} streams x ${SECONDS_PER_RUN} s"
GBPS_A=$(run_iperf plain) || exit 1

# ---- b) uplinkd, balanced policy --------------------------------------------------------------
CFG=$UL_TMP/uplinkd.conf
fl_uplinkd_config "$CFG"
start_uplinkd "$P" "$CFG" --no-hook
wait_uplinkd_ready 15 || fail "uplinkd did not start"
wait_iface_state wan1 online 15 || fail "wan1 not online"
wait_iface_state wan2 online 15 || fail "wan2 not online"
info "b) uplinkd running, policy balanced (wan1 1 : wan2 1)"
w1=$(oif_packets wan1) w2=$(oif_packets wan2)
GBPS_B=$(run_iperf uplinkd) || exit 1
SPLIT_B="wan1 $(($(oif_packets wan1) - w1)) / wan2 $(($(oif_packets wan2) - w2)) packets"
stop_uplinkd || fail "uplinkd did not stop"

# ---- c) mwan3's mangle chain in nft -----------------------------------------------------------
fl_mwan3_routing add
ip netns exec "$RTR" nft -f - <<'EOF' || fail "loading the mwan3-like nft ruleset"
table ip mwan3_bench {
  set connected {
    type ipv4_addr; flags interval;
    elements = { 10.10.0.0/24, 127.0.0.0/8, 192.0.2.0/24, 198.51.100.0/24, 224.0.0.0/3 }
  }
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    # CONNMARK --restore-mark: a known connection keeps its uplink.
    meta mark set ct mark and 0x3f00
    meta mark and 0x3f00 != 0 return
    # mwan3_ifaces_in: a connection that came in on an uplink answers by it.
    iifname "wan1" meta mark set 0x100 ct mark set meta mark return
    iifname "wan2" meta mark set 0x200 ct mark set meta mark return
    # mwan3_connected: destinations reached through the main table.
    ip daddr @connected meta mark set 0x3f00 ct mark set meta mark return
    # The rule (dest_ip 0.0.0.0/0 -> balanced): members split by weight at random, then saved.
    ip daddr 0.0.0.0/0 meta mark set numgen random mod 2 map { 0 : 0x100, 1 : 0x200 } ct mark set meta mark
  }
}
EOF
info "c) nft ruleset doing mwan3's mangle chain, same policy"
w1=$(oif_packets wan1) w2=$(oif_packets wan2)
GBPS_C=$(run_iperf nft_mwan3) || exit 1
SPLIT_C="wan1 $(($(oif_packets wan1) - w1)) / wan2 $(($(oif_packets wan2) - w2)) packets"

ratio() { awk -v x="$1" -v a="$GBPS_A" 'BEGIN { if (a > 0) printf "%.2f", x / a; else print "n/a" }'; }
echo
echo "forwarding throughput, TCP, ${STREAMS} streams x ${SECONDS_PER_RUN} s, lan -> rtr -> isp1/isp2 -> core, one run"
echo "command: sudo UPLINKD_BUILD=$UL_BUILD bench/forward_bench.sh $SECONDS_PER_RUN $STREAMS"
echo "kernel $(uname -r), $(nproc) CPUs"
printf '%-44s %8s %8s\n' "case" "Gbit/s" "ratio"
printf '%-44s %8s %8s\n' "a) plain routing (no marking)" "$GBPS_A" "1.00"
printf '%-44s %8s %8s   %s\n' "b) uplinkd (tc classifier, balanced 1:1)" "$GBPS_B" "$(ratio "$GBPS_B")" "$SPLIT_B"
printf '%-44s %8s %8s   %s\n' "c) nft mwan3 mangle chain (numgen 1:1)" "$GBPS_C" "$(ratio "$GBPS_C")" "$SPLIT_C"
