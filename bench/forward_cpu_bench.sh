#!/usr/bin/env bash
# Benchmark: the CPU the router spends forwarding one packet, not throughput (issue 14 item 6).
# Throughput on this shared 2-core machine moves by ±30 % between runs and cannot rank marking
# methods; the router's own time per packet at a fixed offered load can.
#
# What is timed, and why this and not a CPU-wide figure: a tracepoint program (bpftrace) timestamps
# each packet when the router's LAN device receives it (net:netif_receive_skb for lan0 in the
# router's namespace, before tc ingress, netfilter, routing) and again when the router has handed it
# to an uplink's veth (net:net_dev_xmit of the same skb on wan1 or wan2, after the postrouting hooks,
# NAT and the conntrack confirm). Everything between runs synchronously on one CPU with bottom
# halves off (veth's receive is a softirq: it cannot be preempted), so each interval is exactly the
# router's forwarding CPU time for that packet, marking and conntrack included, and nothing else: not the sender (iperf3's own ~33 µs a packet drowned the first version
# of this bench), not the ISP and core hops, not other jobs on the machine. The alternatives are
# worse here: this kernel has no IRQ_TIME_ACCOUNTING and HZ=250, so /proc/stat's softirq time is a
# 4 ms tick sample; the senders' getrusage plus ksoftirqd's schedstat (the first version) carry the
# sender's syscalls and timer wake-ups and every other job's ksoftirqd time; `perf stat -C` counts a
# whole CPU that three other helpers share; bpftrace cannot attach kprobes or fentry here (tracefs
# is not readable), tracepoints it can.
# Tracepoints fire with a BPF program in every case alike, so their cost (a constant in the "plain"
# figure) cancels in "above plain". Work done later, outside the packet's path (conntrack's garbage
# collection, uplinkd's daemon), is not in the figure; the daemon's CPU time is reported beside it.
#
# Workloads (bench/udp_flood), both paced at a fixed rate, 46-byte IPv4/UDP packets:
#   one    one 5-tuple (established: after the first packet a flow-table hit for uplinkd, a
#          conntrack hit and a ct mark restore for nft). Replaces iperf3's TCP stream: its data
#          packets take the same established path, and its ACKs come in on the uplinks, which this
#          timer does not time;
#   new    every datagram a new UDP 5-tuple (uplinkd's classifier or nft's chain, and a conntrack
#          insert in every case, plain included: the lab's router masquerades).
# Cases, interleaved (a b c ... a b c ...) REPS times so slow drifts in the machine fall on every
# case alike:
#   plain          no marking, uplinkd not running (every flow by the main table's wan1);
#   plain-tc       plain, plus an empty tc program (bench/empty_tc.bpf.c) on lan0's ingress and
#                  wan1's and wan2's egress, where uplinkd attaches its two programs: the hooks' cost;
#   plain-rules    plain, plus mwan3's fwmark ip rules and uplink tables (no marking): the policy
#                  routing that uplinkd and nft both add (these two are EXTRA, default both);
#   plain-ctmark   plain, plus uplinkd's own nft table (the ct mark save in postrouting and the
#                  inbound marks in prerouting, as a running uplinkd wrote it; EXTRA, not default):
#                  the part of uplinkd's cost that is nft's, not its BPF programs';
#   plain-ctmark-before  plain, plus that table as it was before e3fde74 (bench/ctmark_before.nft;
#                  EXTRA, not default): beside plain-ctmark, what e3fde74's inbound chain saved;
#   uplinkd-N      uplinkd, N rules: N-1 that do not match (dest_ip /32, proto udp, dest_port range),
#                  then the catch-all to a balanced policy (wan1 and wan2, weight 1 each);
#   nft-linear-N   uplinkd stopped; mwan3's mangle chain in nft with the same N rules as linear rules
#                  (what mwan3 generates), plus mwan3's fwmark ip rules and tables;
#   nft-vmap-N     the same rules as one verdict map over the concatenation daddr . l4proto . dport
#                  (nft's best: one lookup for all of them), then the catch-all.
# Per run: the median over its packets (robust to the few packets a hardware interrupt lands in;
# the mean and the mean without the slowest 1 % are printed too). Per case: the median of that over
# the rounds (min..max), and "above plain": the median over the rounds of (case − plain of the same
# round), with that difference's min..max, so a drift between rounds cancels. Checks printed per
# case: the packets sent, received on lan0, forwarded and timed (they must match: every case
# forwards the same packets), the conntrack entries the router holds after a `new` run (one per
# packet: every packet was a new flow), wan2's share of the packets forwarded (the catch-all, the
# last of the N rules, sends new flows to the balanced policy: about half on wan2; a rule that
# matched early would send them all to wan1, as plain does), and the daemon's CPU time per second
# of the run (its work happens outside the packets' path).
#
#   sudo bench/forward_cpu_bench.sh [reps=5] [seconds=4]
# Environment: UPLINKD_BUILD (default ./build; needs uplinkd and udp_flood), RULES (default
# "8 64 256"), PPS (default 5000, both workloads; the conntrack table must hold PPS × seconds
# entries: nf_conntrack_max), WORKLOADS (default "one new"), EXTRA (default "plain-tc plain-rules";
# "" for none), BPF_STATS (1: also turn kernel.bpf_stats_enabled on for the run and print, per uplinkd
# case, each of its programs' ns per run on lan0, wan1 and wan2 in the forwarding path; the stats'
# two clock reads per program run are then in the uplinkd figures too, so rank with BPF_STATS=0).
# Needs bpftrace, and clang for plain-tc. About 11 minutes by
# default (12 cases × 2 workloads × (seconds + 1.5 s), plus uplinkd's starts, per round).
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
REPS=${1:-5}
SECS=${2:-4}
RULES=${RULES:-8 64 256}
PPS=${PPS:-5000}
WORKLOADS=${WORKLOADS:-one new}
EXTRA=${EXTRA-plain-tc plain-rules}
UL_NO_RESULT=1
UPLINKD_LOG_LEVEL=${UPLINKD_LOG_LEVEL:-warn}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/forward_lab.sh"
ul_init forward_cpu_bench daemon
command -v bpftrace >/dev/null || skip "needs bpftrace (apt-get install bpftrace)"
command -v conntrack >/dev/null || skip "needs conntrack"
[[ -x $UL_BUILD/udp_flood ]] || skip "needs $UL_BUILD/udp_flood (cmake --build build --target udp_flood)"
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 && $REPS -le 25 ]] || skip "reps: 1..25"
[[ $SECS =~ ^[0-9]+$ && $SECS -ge 1 && $SECS -le 25 ]] || skip "seconds: 1..25 (below conntrack's 30 s UDP timeout)"
[[ $PPS =~ ^[0-9]+$ && $PPS -ge 100 && $PPS -le 100000 ]] || skip "PPS: 100..100000"
for n in $RULES; do
  [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 256 ]] || skip "RULES: numbers 1..256"
done
for w in $WORKLOADS; do [[ $w == one || $w == new ]] || skip "WORKLOADS: one, new"; done
for c in $EXTRA; do
  [[ $c == plain-tc || $c == plain-rules || $c == plain-ctmark || $c == plain-ctmark-before ]] ||
    skip "EXTRA: plain-tc, plain-rules, plain-ctmark, plain-ctmark-before"
done
BPF_STATS=${BPF_STATS:-0}
[[ $BPF_STATS == 0 || $BPF_STATS == 1 ]] || skip "BPF_STATS: 0 or 1"
if [[ " $EXTRA " == *" plain-tc "* ]]; then
  command -v clang >/dev/null || skip "plain-tc needs clang (or EXTRA=plain-rules)"
fi
CT_MAX=$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo 0)
((PPS * SECS < CT_MAX)) || skip "PPS × seconds ($((PPS * SECS))) must stay below nf_conntrack_max ($CT_MAX)"

P=$UL_PREFIX
ul_lab_up
RTR=$P-rtr
# The datagrams end at the core without an ICMP answer (which would be a second, reverse workload,
# rate-limited differently in each case).
ip netns exec "$P-core" nft -f - <<'EOF' || fail "core: the flood's drop rule"
table ip flood_sink {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 10000-60000 drop
  }
}
EOF

if [[ " $EXTRA " == *" plain-tc "* ]]; then
  clang -O2 -target bpf -I"/usr/include/$(gcc -dumpmachine)" -c "$(dirname "${BASH_SOURCE[0]}")/empty_tc.bpf.c" \
    -o "$UL_TMP/empty_tc.bpf.o" || fail "compiling bench/empty_tc.bpf.c"
fi

# ---- the timer ------------------------------------------------------------------------------------
# One bpftrace for the whole run, printing its running totals every 100 ms:
#   T <ns forwarding> <packets received on lan0> <forwarded by wan1> <forwarded by wan2>
# Per-CPU keys, so two CPUs never add to the same map value at once.
LAN0=$(ip -n "$RTR" -j link show lan0 | jq -r '.[0].ifindex')
RTR_NS=$(stat -L -c %i "/run/netns/$RTR") || fail "the router's namespace inode"
sum_cpus() {
  local i sep=""
  for ((i = 0; i < $(nproc); i++)); do
    printf '%s@%s[%d]' "$sep" "$1" "$i"
    sep=" + "
  done
}
cat >"$UL_TMP/timer.bt" <<EOF
tracepoint:net:netif_receive_skb
/((struct sk_buff *)args->skbaddr)->dev->ifindex == \$1 &&
 ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == \$2/
{
  @start[cpu] = nsecs;
  @skb[cpu] = (uint64)args->skbaddr;
  @rx[cpu] += 1;
}
tracepoint:net:net_dev_xmit
/@skb[cpu] == (uint64)args->skbaddr/
{
  \$ns = nsecs - @start[cpu];
  @skb[cpu] = 0;
  @ns[cpu] += \$ns;
  if (str(args->name) == "wan2") { @w2[cpu] += 1; printf("P %lld 2\\n", \$ns); }
  else { @w1[cpu] += 1; printf("P %lld 1\\n", \$ns); }
}
interval:ms:100
{
  printf("T %lld %lld %lld %lld\n", $(sum_cpus ns), $(sum_cpus rx), $(sum_cpus w1), $(sum_cpus w2));
}
END { clear(@start); clear(@skb); clear(@rx); clear(@ns); clear(@w1); clear(@w2); }
EOF
bpftrace "$UL_TMP/timer.bt" "$LAN0" "$RTR_NS" >"$UL_TMP/timer.out" 2>"$UL_TMP/timer.err" &
ul_bg_add $!
for _ in $(seq 1 100); do
  grep -q '^T ' "$UL_TMP/timer.out" && break
  sleep 0.1
done
grep -q '^T ' "$UL_TMP/timer.out" || fail "bpftrace did not start: $(cat "$UL_TMP/timer.err")"
# timer_totals: the latest line's four totals (a line is complete once the next one has begun).
timer_totals() {
  local want n
  sleep 0.25
  want=$(grep -c '^T ' "$UL_TMP/timer.out")
  for _ in $(seq 1 30); do
    n=$(grep -c '^T ' "$UL_TMP/timer.out")
    ((n > want)) && break
    sleep 0.05
  done
  grep '^T ' "$UL_TMP/timer.out" | tail -n 2 | head -n 1 | cut -d' ' -f2-
}
# packet_stats <from byte> <packets expected>: the per-packet lines written since that offset
# (nothing else crosses lan0 between runs, so they are the run's), once all have arrived (bounded,
# 3 s): "median mean trimmed_mean count", trimmed = without the slowest 1 % (packets a hardware
# interrupt landed in).
packet_stats() {
  local from=$1 want=$2 n=0
  for _ in $(seq 1 60); do
    n=$(tail -c +"$((from + 1))" "$UL_TMP/timer.out" | grep -c '^P ')
    ((n >= want)) && break
    sleep 0.05
  done
  tail -c +"$((from + 1))" "$UL_TMP/timer.out" | awk '$1 == "P" { print $2 }' | sort -n |
    awk '{ v[NR] = $1; s += $1 } END { if (NR == 0) { print "nan nan nan 0"; exit }
      k = NR - int(NR / 100); for (i = 1; i <= k; i++) t += v[i]
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.0f %.1f %.1f %d\n", m, s / NR, t / k, NR }'
}

# The daemon's CPU time so far (every thread's runtime), in ns; 0 when it is not running.
daemon_ns() {
  local sum=0 f ns
  [[ -n $UPLINKD_PID ]] || {
    echo 0
    return
  }
  for f in /proc/"$UPLINKD_PID"/task/*/schedstat; do
    read -r ns _ <"$f" 2>/dev/null || continue
    sum=$((sum + ns))
  done
  echo "$sum"
}
flush_conntrack() {
  local n
  for n in rtr isp1 isp2 core; do ip netns exec "$P-$n" conntrack -F >/dev/null 2>&1; done
}

# measure <one|new>: one run; prints "median mean trimmed_mean sent received forwarded wan2
# ct_entries daemon_ns timed" (the first three in ns per packet; timed: the per-packet lines read).
measure() {
  local workload=$1 t0 t1 d0 d1 out sent ct from st s0=""
  flush_conntrack
  if ((BPF_STATS)) && [[ -n $UPLINKD_PID ]]; then s0=$(stats_snapshot); fi
  read -r -a t0 < <(timer_totals)
  from=$(stat -c %s "$UL_TMP/timer.out")
  d0=$(daemon_ns)
  out=$(timeout $((SECS + 20)) ip netns exec "$P-lan" \
    "$UL_BUILD/udp_flood" 10.10.0.2 203.0.113.1 "$PPS" "$SECS" "$workload" 2>&1) || fail "udp_flood: $out"
  read -r -a t1 < <(timer_totals)
  d1=$(daemon_ns)
  if [[ -n $s0 ]]; then
    # "name ns_per_run runs" for each program that ran, to the STATS file via the caller's fd 3 (the
    # id and the filter name's tail are dropped: each uplinkd start loads its programs afresh).
    join <(sort <<<"$s0") <(stats_snapshot | sort) |
      awk '$5 > $3 { sub(/:.*$/, "", $1); printf "%s %.1f %d\n", $1, ($4 - $2) / ($5 - $3), $5 - $3 }' >&3
  fi
  ct=$(ip netns exec "$RTR" conntrack -C 2>/dev/null || echo 0)
  sent=$(awk '{ for (i = 1; i < NF; i++) if ($i == "sent") print $(i + 1) }' <<<"$out")
  [[ $sent =~ ^[0-9]+$ ]] || fail "udp_flood printed no packet count: $out"
  local rx=$((t1[1] - t0[1])) w1=$((t1[2] - t0[2])) w2=$((t1[3] - t0[3]))
  read -r -a st < <(packet_stats "$from" $((w1 + w2)))
  echo "${st[0]} ${st[1]} ${st[2]} $sent $rx $((w1 + w2)) $w2 $ct $((d1 - d0)) ${st[3]}"
}

# ---- per-program split (BPF_STATS=1) ---------------------------------------------------------------
# The kernel counts run_time_ns and run_cnt per program while kernel.bpf_stats_enabled is 1 (machine
# wide: it is put back as it was at exit).
STATS=$UL_TMP/bpf_stats
: >"$STATS"
if ((BPF_STATS)); then
  STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled) || skip "needs kernel.bpf_stats_enabled"
  trap 'rc=$?; sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"; (exit $rc); ul_cleanup' EXIT
  sysctl -qw kernel.bpf_stats_enabled=1 || skip "cannot turn kernel.bpf_stats_enabled on"
fi
# forward_progs: "name:id" of each tc program on the forwarding path's devices, once each (one
# program attached to wan1 and wan2 has one set of statistics).
forward_progs() {
  ip netns exec "$RTR" bpftool -j net show 2>/dev/null | jq -r '
    .[] | (.tc // []) + (.tcx // []) | .[] | select(.devname == "lan0" or .devname == "wan1" or .devname == "wan2")
    | "\(.name):\(.prog_id // .id)"' | sort -u
}
# prog_runs <id>: "run_time_ns run_cnt".
prog_runs() { bpftool -j prog show id "$1" 2>/dev/null | jq -r '"\(.run_time_ns // 0) \(.run_cnt // 0)"'; }
# stats_snapshot: "name:id run_time_ns run_cnt" per program.
stats_snapshot() {
  local p
  for p in $(forward_progs); do echo "$p $(prog_runs "${p##*:}")"; done
}

# The ct mark table a running uplinkd writes, for plain-ctmark: taken once from uplinkd itself, so the
# case carries exactly its rules.
CTMARK_NFT=$UL_TMP/uplinkd-ctmark.nft
take_ctmark_table() {
  local t
  fl_uplinkd_config "$UL_TMP/uplinkd-ctmark.conf" 8 "option local_rules '0'"
  start_uplinkd "$P" "$UL_TMP/uplinkd-ctmark.conf" --no-hook
  wait_uplinkd_ready 15 || fail "uplinkd did not start (to take its ct mark table)"
  for t in $(ip netns exec "$RTR" nft list tables inet | awk '{ print $3 }'); do
    ip netns exec "$RTR" nft list table inet "$t" >"$UL_TMP/table.nft"
    grep -q 'hook postrouting' "$UL_TMP/table.nft" && grep -q 'ct mark set' "$UL_TMP/table.nft" &&
      cp "$UL_TMP/table.nft" "$CTMARK_NFT"
  done
  stop_uplinkd || fail "uplinkd did not stop (after taking its ct mark table)"
  [[ -s $CTMARK_NFT ]] || fail "no ct mark table found in the router while uplinkd ran"
  CTMARK_TABLE=$(awk '/^table/ { print $3; exit }' "$CTMARK_NFT")
}
if [[ " $EXTRA " == *" plain-ctmark "* ]]; then take_ctmark_table; fi

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
    plain-tc)
      local d
      for d in lan0:ingress wan1:egress wan2:egress; do
        ip netns exec "$RTR" tc qdisc add dev "${d%%:*}" clsact || fail "clsact on ${d%%:*}"
        ip netns exec "$RTR" tc filter add dev "${d%%:*}" "${d#*:}" bpf direct-action \
          obj "$UL_TMP/empty_tc.bpf.o" sec tc || fail "the empty tc program on ${d%%:*} ${d#*:}"
      done
      ;;
    plain-rules) fl_mwan3_routing add ;;
    plain-ctmark) ip netns exec "$RTR" nft -f "$CTMARK_NFT" || fail "loading uplinkd's ct mark table" ;;
    plain-ctmark-before)
      ip netns exec "$RTR" nft -f "$(dirname "${BASH_SOURCE[0]}")/ctmark_before.nft" ||
        fail "loading bench/ctmark_before.nft"
      ;;
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
    plain-tc)
      local d
      for d in lan0 wan1 wan2; do ip netns exec "$RTR" tc qdisc del dev "$d" clsact; done
      ;;
    plain-rules) fl_mwan3_routing del ;;
    plain-ctmark) ip netns exec "$RTR" nft delete table inet "$CTMARK_TABLE" ;;
    plain-ctmark-before) ip netns exec "$RTR" nft delete table inet uplinkd_before ;;
    uplinkd-*) stop_uplinkd || fail "uplinkd did not stop ($c)" ;;
    nft-*)
      ip netns exec "$RTR" nft delete table ip mwan3_bench
      fl_mwan3_routing del
      ;;
  esac
}

CASES=(plain)
for c in $EXTRA; do CASES+=("$c"); done
for n in $RULES; do CASES+=("uplinkd-$n" "nft-linear-$n" "nft-vmap-$n"); done

RESULTS=$UL_TMP/results
: >"$RESULTS"
LOADS=()
for ((r = 1; r <= REPS; r++)); do
  LOADS+=("$(cut -d' ' -f1-3 /proc/loadavg)")
  for c in "${CASES[@]}"; do
    case_up "$c"
    for w in $WORKLOADS; do
      m=$(measure "$w" 3> >(sed "s/^/$c $w $r /" >>"$STATS")) || fail "measuring $c $w"
      echo "$c $w $r $m" >>"$RESULTS"
      info "round $r: $c $w: $m (median mean trimmed sent received forwarded wan2 ct daemon_ns timed)"
    done
    case_down "$c"
  done
done

# ---- the table ------------------------------------------------------------------------------------
# RESULTS columns: 1 case, 2 workload, 3 round, 4 median, 5 mean, 6 trimmed mean (ns per packet),
# 7 sent, 8 received, 9 forwarded, 10 wan2, 11 ct entries, 12 daemon ns, 13 packets timed.
# med_min_max: median, min and max of stdin's numbers.
med_min_max() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan nan nan"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}
# column <case> <workload> <field>: that field over the rounds.
column() { awk -v c="$1" -v w="$2" -v f="$3" '$1 == c && $2 == w { print $f }' "$RESULTS"; }
# above_plain <case> <workload> <field>: per round, the case's field − plain's of the same round.
above_plain() {
  awk -v c="$1" -v w="$2" -v f="$3" '$2 == w && $1 == "plain" { p[$3] = $f } $2 == w && $1 == c { v[$3] = $f }
    END { for (r in v) if (r in p) print v[r] - p[r] }' "$RESULTS"
}
# above_text <case> <workload> <field>: "+median (min..max)" of above_plain; empty for plain.
above_text() {
  [[ $1 == plain ]] && return 0
  above_plain "$@" | med_min_max | awk '{ printf "%+.0f (%+.0f..%+.0f)", $1, $2, $3 }'
}
declare -A ABOVE
echo
echo "The router's CPU per forwarded packet: ns from lan0's receive to the uplink's transmit; per round the median over the packets (mean: all packets; trimmed: without the slowest 1 %); $REPS interleaved rounds of $SECS s at $PPS packets/s; median over the rounds (min..max); above plain: median over the rounds of (case − plain in the same round) (min..max)"
echo "command: sudo UPLINKD_BUILD=$UL_BUILD RULES=\"$RULES\" PPS=$PPS WORKLOADS=\"$WORKLOADS\" bench/forward_cpu_bench.sh $REPS $SECS"
echo "kernel $(uname -r), $(nproc) CPUs, load average at each round's start: ${LOADS[*]}; at the end $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)"
for w in $WORKLOADS; do
  echo
  if [[ $w == one ]]; then echo "workload one: one 5-tuple (established)"; else echo "workload new: every packet a new 5-tuple"; fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' case "median ns/packet" "above plain" \
    "mean ns/packet" "mean above plain" "trimmed above plain" "sent/received/forwarded/timed" "wan2" \
    "ct entries after; daemon CPU ms/s"
  printf '|---|---|---|---|---|---|---|---|---|\n'
  for c in "${CASES[@]}"; do
    read -r m lo hi < <(column "$c" "$w" 4 | med_min_max)
    read -r mm mlo mhi < <(column "$c" "$w" 5 | med_min_max)
    read -r am _ _ < <(above_plain "$c" "$w" 4 | med_min_max)
    ABOVE[$c.$w]=$am
    counts=""
    for f in 7 8 9 13; do
      read -r v _ _ < <(column "$c" "$w" "$f" | med_min_max)
      counts+="${counts:+/}$v"
    done
    read -r w2 _ _ < <(paste <(column "$c" "$w" 10) <(column "$c" "$w" 9) |
      awk '$2 > 0 { printf "%.1f\n", 100 * $1 / $2 }' | med_min_max)
    read -r ct _ _ < <(column "$c" "$w" 11 | med_min_max)
    read -r d _ _ < <(column "$c" "$w" 12 | awk -v s="$SECS" '{ printf "%.2f\n", $1 / s / 1e6 }' | med_min_max)
    printf '| %s | %.0f (%.0f..%.0f) | %s | %.0f (%.0f..%.0f) | %s | %s | %s | %s %% | %s; %s |\n' "$c" \
      "$m" "$lo" "$hi" "$(above_text "$c" "$w" 4)" "$mm" "$mlo" "$mhi" "$(above_text "$c" "$w" 5)" \
      "$(above_text "$c" "$w" 6)" "$counts" "$w2" "$ct" "$d"
  done
done
echo
echo "ratios of the cost above plain (medians of the paired differences of the per-packet medians):"
for w in $WORKLOADS; do
  for n in $RULES; do
    awk -v w="$w" -v n="$n" -v u="${ABOVE[uplinkd-$n.$w]}" -v l="${ABOVE[nft-linear-$n.$w]}" \
      -v v="${ABOVE[nft-vmap-$n.$w]}" 'function r(a, b) { return (b > 0) ? sprintf("%.2f", a / b) : "n/a" }
      BEGIN { printf "  %s, %d rules: nft linear / uplinkd = %s, nft vmap / uplinkd = %s (uplinkd %+.0f, linear %+.0f, vmap %+.0f ns)\n",
        w, n, r(l, u), r(v, u), u, l, v }'
  done
done
if [[ -s $STATS ]]; then
  echo
  echo "per program, with kernel.bpf_stats_enabled (ns per run: median over the rounds (min..max); runs per round):"
  awk '{ print $1, $2, $4 }' "$STATS" | sort -u | while read -r c w prog; do
    read -r m lo hi < <(awk -v c="$c" -v w="$w" -v p="$prog" '$1 == c && $2 == w && $4 == p { print $5 }' "$STATS" | med_min_max)
    runs=$(awk -v c="$c" -v w="$w" -v p="$prog" '$1 == c && $2 == w && $4 == p { print $6 }' "$STATS" | med_min_max | cut -d' ' -f1)
    printf '  %s %s %s: %.1f (%.1f..%.1f) ns, %s runs\n' "$c" "$w" "$prog" "$m" "$lo" "$hi" "$runs"
  done
fi
echo "raw: $RESULTS (case workload round median mean trimmed sent received forwarded wan2 ct daemon_ns timed)"
cp "$RESULTS" "${FORWARD_CPU_RESULTS:-/tmp/forward_cpu_bench.results}" 2>/dev/null || true
