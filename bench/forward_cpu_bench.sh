#!/usr/bin/env bash
# Benchmark: the CPU a forwarded packet costs, not throughput (issue 14 item 6). Throughput on this
# shared 2-core machine moves by ±30 % between runs and cannot rank marking methods; CPU time at a
# fixed offered load can.
#
# The senders and receivers in the lab's namespaces run on one CPU (taskset), and veth delivers
# each packet in its sender's softirq, so the router's forwarding, marking and NAT run in the context
# of the process that sent the packet and are counted in its CPU time (this kernel has no
# IRQ_TIME_ACCOUNTING, so softirq work is part of the running task's runtime). The cost of a run is
# the CPU time of its sending and receiving processes (getrusage, via udp_flood's own report and
# iperf3's) plus what ksoftirqd ran meanwhile, divided by the packets the router forwarded (received
# on lan0, and for TCP also on wan1 + wan2: the ACKs). Other jobs on this shared machine do not land
# in that figure, unlike a CPU-wide reading. The sender, the two ISP hops and the core's receive
# path cost the same in every case, so the differences between cases are the marking's cost;
# "above plain" states it. The lab's veths send MTU-sized packets (gso_max_segs 1), as a router's
# forwarding path sees them.
#
# Workloads, each at a fixed offered load:
#   tcp   one iperf3 stream at TCP_RATE (established flows: after the first packet every packet is a
#         flow-table hit for uplinkd, a ct mark restore for nft);
#   flood bench/udp_flood at FLOOD_PPS, every datagram a new UDP 5-tuple (every packet pays the new-flow
#         path: uplinkd's classifier, or the nft chain's rules, plus a conntrack insert everywhere).
# Cases, interleaved (a b c ... a b c ...) REPS times so slow drifts in the machine's load fall on
# every case alike; each figure is the median over the repetitions, with min..max:
#   plain          no marking, uplinkd not running (every flow by the main table's wan1);
#   uplinkd-N      uplinkd, N rules: N-1 that do not match (dest_ip /32, proto udp, dest_port range),
#                  then the catch-all to a balanced policy (wan1 and wan2, weight 1 each);
#   nft-linear-N   uplinkd stopped; mwan3's mangle chain in nft with the same N rules as linear rules
#                  (what mwan3 generates), plus mwan3's fwmark ip rules and tables;
#   nft-vmap-N     the same rules as one verdict map over the concatenation daddr . l4proto . dport
#                  (nft's best: one lookup for all of them), then the catch-all.
# N is RULES (default "8 64 256").
#
#   sudo bench/forward_cpu_bench.sh [reps=3] [seconds=3]
# Environment: UPLINKD_BUILD (default ./build), RULES, TCP_RATE (default 200M), FLOOD_PPS (default
# 20000). About (1 + 3 × |RULES|) × (2 × seconds + 6) s per repetition: about 6 minutes by default.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
REPS=${1:-3}
SECS=${2:-3}
RULES=${RULES:-8 64 256}
TCP_RATE=${TCP_RATE:-200M}
FLOOD_PPS=${FLOOD_PPS:-20000}
UL_NO_RESULT=1
UPLINKD_LOG_LEVEL=${UPLINKD_LOG_LEVEL:-warn}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/forward_lab.sh"
ul_init forward_cpu_bench daemon
command -v iperf3 >/dev/null || skip "needs iperf3"
command -v conntrack >/dev/null || skip "needs conntrack"
command -v taskset >/dev/null || skip "needs taskset"
[[ -x $UL_BUILD/udp_flood ]] || skip "needs $UL_BUILD/udp_flood (cmake --build build --target udp_flood)"
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 && $REPS -le 15 ]] || skip "reps: 1..15"
[[ $SECS =~ ^[0-9]+$ && $SECS -ge 1 && $SECS -le 30 ]] || skip "seconds: 1..30"
for n in $RULES; do
  [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 256 ]] || skip "RULES: numbers 1..256"
done

CPU=$(($(nproc) - 1))
P=$UL_PREFIX
ul_lab_up
RTR=$P-rtr
ON_CPU=(taskset -c "$CPU")

# The iperf3 server on the core, on the measured CPU.
fl_start_iperf_server "${ON_CPU[@]}"
# The flood's datagrams end at the core without an ICMP answer (which would be a second, reverse
# workload rate-limited differently in each case).
ip netns exec "$P-core" nft -f - <<'EOF' || fail "core: the flood's drop rule"
table ip flood_sink {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 10000-60000 drop
  }
}
EOF

# ---- measuring ------------------------------------------------------------------------------------
for d in "$P-lan:eth0" "$P-core:isp1" "$P-core:isp2" "$P-rtr:lan0" "$P-rtr:wan1" "$P-rtr:wan2"; do
  ip -n "${d%%:*}" link set dev "${d#*:}" gso_max_segs 1 || fail "gso_max_segs 1 on ${d#*:} in ${d%%:*}"
done
rx_packets() { ip -n "$RTR" -s -j link show "$1" | jq -r '.[0].stats64.rx.packets'; }
forwarded() {
  local sum=0 d
  for d in "$@"; do sum=$((sum + $(rx_packets "$d"))); done
  echo "$sum"
}
# ksoftirqd_ns: what every ksoftirqd thread has run, in ns (/proc/<pid>/schedstat's first field).
ksoftirqd_ns() {
  local sum=0 pid ns
  for pid in $(pgrep -x 'ksoftirqd/[0-9]+'); do
    read -r ns _ <"/proc/$pid/schedstat" 2>/dev/null || continue
    sum=$((sum + ns))
  done
  echo "$sum"
}
flush_conntrack() {
  local n
  for n in rtr isp1 isp2 core; do ip netns exec "$P-$n" conntrack -F >/dev/null 2>&1; done
}

# measure <workload>: runs it once on the measured CPU; prints "ns_per_packet packets".
measure() {
  local workload=$1 k0 k1 p0 p1 devs out cpu_ns
  if [[ $workload == tcp ]]; then devs=(lan0 wan1 wan2); else devs=(lan0); fi
  flush_conntrack
  k0=$(ksoftirqd_ns) p0=$(forwarded "${devs[@]}")
  if [[ $workload == tcp ]]; then
    out=$(timeout $((SECS + 20)) ip netns exec "$P-lan" "${ON_CPU[@]}" \
      iperf3 -c 203.0.113.1 -b "$TCP_RATE" -t "$SECS" -J 2>&1) || fail "iperf3: $out"
    # iperf3's client (host) and server (remote) CPU, in percent of the run's duration.
    cpu_ns=$(jq -r '.end.cpu_utilization_percent as $c | .end.sum_sent.seconds as $s
      | (($c.host_total + $c.remote_total) / 100 * $s * 1e9) | floor' <<<"$out") ||
      fail "iperf3 printed no CPU figures: $out"
  else
    out=$(timeout $((SECS + 20)) ip netns exec "$P-lan" "${ON_CPU[@]}" \
      "$UL_BUILD/udp_flood" 10.10.0.2 203.0.113.1 "$FLOOD_PPS" "$SECS" 2>&1) || fail "udp_flood: $out"
    cpu_ns=$(awk '{ for (i = 1; i < NF; i++) if ($i == "cpu_ns") print $(i + 1) }' <<<"$out")
    [[ $cpu_ns =~ ^[0-9]+$ ]] || fail "udp_flood printed no cpu_ns: $out"
  fi
  k1=$(ksoftirqd_ns) p1=$(forwarded "${devs[@]}")
  awk -v c="$cpu_ns" -v k=$((k1 - k0)) -v p=$((p1 - p0)) \
    'BEGIN { if (p > 0) printf "%.0f %d\n", (c + k) / p, p; else print "nan 0" }'
}

# ---- the cases ------------------------------------------------------------------------------------
# nft_ruleset <linear|vmap> <n>: mwan3's mangle chain (restore the ct mark, interfaces in, connected
# networks, the rules, save the mark) with n rules.
nft_ruleset() {
  local style=$1 n=$2 i sep=""
  cat <<'EOF'
table ip mwan3_bench {
  set connected {
    type ipv4_addr; flags interval;
    elements = { 10.10.0.0/24, 127.0.0.0/8, 192.0.2.0/24, 198.51.100.0/24, 224.0.0.0/3 }
  }
  chain policy_wan1_only {
    meta mark set 0x100 ct mark set meta mark
  }
  chain policy_balanced {
    meta mark set numgen random mod 2 map { 0 : 0x100, 1 : 0x200 } ct mark set meta mark
  }
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta mark set ct mark and 0x3f00
    meta mark and 0x3f00 != 0 return
    iifname "wan1" meta mark set 0x100 ct mark set meta mark return
    iifname "wan2" meta mark set 0x200 ct mark set meta mark return
    ip daddr @connected meta mark set 0x3f00 ct mark set meta mark return
EOF
  if [[ $style == linear ]]; then
    for ((i = 1; i < n; i++)); do
      echo "    ip daddr $(fl_rule_dest "$i") meta l4proto udp udp dport 5000-5100 goto policy_wan1_only"
    done
  elif ((n > 1)); then
    printf '    ip daddr . meta l4proto . th dport vmap {'
    for ((i = 1; i < n; i++)); do
      printf '%s %s . udp . 5000-5100 : goto policy_wan1_only' "$sep" "$(fl_rule_dest "$i")"
      sep=","
    done
    printf ' }\n'
  fi
  cat <<'EOF'
    ip daddr 0.0.0.0/0 goto policy_balanced
  }
}
EOF
}

case_up() {
  local c=$1 n
  case $c in
    plain) ;;
    uplinkd-*)
      n=${c#uplinkd-}
      fl_uplinkd_config "$UL_TMP/uplinkd-$n.conf" "$n" "option local_rules '0'"
      start_uplinkd "$P" "$UL_TMP/uplinkd-$n.conf" --no-hook
      wait_uplinkd_ready 15 || fail "uplinkd did not start ($c)"
      wait_iface_state wan1 online 15 || fail "wan1 not online ($c)"
      wait_iface_state wan2 online 15 || fail "wan2 not online ($c)"
      ;;
    nft-linear-* | nft-vmap-*)
      n=${c##*-}
      local style=${c#nft-}
      style=${style%-*}
      fl_mwan3_routing add
      nft_ruleset "$style" "$n" >"$UL_TMP/nft-$style-$n.nft"
      ip netns exec "$RTR" nft -f "$UL_TMP/nft-$style-$n.nft" || fail "loading $UL_TMP/nft-$style-$n.nft"
      ;;
  esac
}

case_down() {
  local c=$1
  case $c in
    plain) ;;
    uplinkd-*) stop_uplinkd || fail "uplinkd did not stop ($c)" ;;
    nft-*)
      ip netns exec "$RTR" nft delete table ip mwan3_bench
      fl_mwan3_routing del
      ;;
  esac
}

CASES=(plain)
for n in $RULES; do CASES+=("uplinkd-$n" "nft-linear-$n" "nft-vmap-$n"); done

RESULTS=$UL_TMP/results
: >"$RESULTS"
for ((r = 1; r <= REPS; r++)); do
  for c in "${CASES[@]}"; do
    case_up "$c"
    for w in tcp flood; do
      read -r ns pkts < <(measure "$w") || fail "measuring $c $w"
      echo "$c $w $r $ns $pkts" >>"$RESULTS"
      info "rep $r: $c $w: $ns ns/packet over $pkts packets"
    done
    case_down "$c"
  done
done

# ---- the table ------------------------------------------------------------------------------------
# stats <case> <workload>: median min max of ns/packet over the repetitions.
stats() {
  awk -v c="$1" -v w="$2" '$1 == c && $2 == w { print $4 }' "$RESULTS" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan nan nan"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}
read -r PLAIN_TCP _ _ < <(stats plain tcp)
read -r PLAIN_FLOOD _ _ < <(stats plain flood)
echo
echo "CPU per forwarded packet (ns: the senders' and receivers' CPU time + ksoftirqd's, / packets the router forwarded), median of $REPS interleaved runs, min..max"
echo "command: sudo UPLINKD_BUILD=$UL_BUILD RULES=\"$RULES\" TCP_RATE=$TCP_RATE FLOOD_PPS=$FLOOD_PPS bench/forward_cpu_bench.sh $REPS $SECS"
echo "kernel $(uname -r), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
printf '| %-16s | %-24s | %-12s | %-28s | %-12s |\n' case "tcp ${TCP_RATE}bit/s, 1 stream" "above plain" "new-flow flood ${FLOOD_PPS} pps" "above plain"
printf '|---|---|---|---|---|\n'
for c in "${CASES[@]}"; do
  read -r tm tl th < <(stats "$c" tcp)
  read -r fm fl fh < <(stats "$c" flood)
  printf '| %-16s | %5s (%s..%s) | %6s | %5s (%s..%s) | %6s |\n' "$c" "$tm" "$tl" "$th" \
    "$(awk -v a="$tm" -v b="$PLAIN_TCP" 'BEGIN { printf "%+d", a - b }')" "$fm" "$fl" "$fh" \
    "$(awk -v a="$fm" -v b="$PLAIN_FLOOD" 'BEGIN { printf "%+d", a - b }')"
done
echo "raw: $RESULTS (case workload rep ns packets)"
cp "$RESULTS" "${FORWARD_CPU_RESULTS:-/tmp/forward_cpu_bench.results}" 2>/dev/null || true
