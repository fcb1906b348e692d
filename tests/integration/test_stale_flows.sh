#!/usr/bin/env bash
# Failover hygiene (issue 5), measured on the lab with real sockets.
#
# A LAN client holds TCP connections through the primary uplink (policy wan1 then wan2) to a server
# in the core that silently drops TCP segments of flows it does not know (lab_silent_drop: the
# remote behind a stateful firewall of the field report). Then isp1 drops everything while wan1's
# link stays up (lab_outage). Two runs on one lab:
#
#   hygiene on  (reset_stale_tcp 1, conntrack_by_mark 1):
#     - the client sending every 100 ms and the idle client blocked in recv() both fail with
#       ECONNRESET; the time from uplinkd's `disconnected` to each is printed (goal 50 / 200 ms) and
#       must stay under STALE_RESET_BOUND_MS (1000);
#     - a crafted mid-stream ACK on a stale flow the router never saw an answer for is answered by
#       the datapath with a RST whose seq is that ACK's acknowledgment number, checksums valid;
#       before the outage the same kind of segment on the fresh flow got no answer;
#     - conntrack (the tool, in the router): before, the clients' entries carry wan1's mark under
#       mmx_mask, the pinned flow wan2's; after, no LAN entry with wan1's mark is left, the wan2
#       entry and the unmarked LAN-to-router entry remain, and the wan2 connection still echoes;
#     - a UDP flow sending every 100 ms reaches the core from wan2's NAT address after the failover;
#     - `uplinkctl flows --json`: resets active >= 1, proactive >= 1.
#   hygiene off (reset_stale_tcp 0, conntrack_by_mark 0): 10 s after `disconnected` neither client
#     has seen an error: the connections hang, as they do under mwan3; the idle flow's conntrack
#     entry (NAT to wan1) is still there.
#
# The figures and a FIGURES line (for bench/failover_bench.sh) are printed by the hygiene run;
# STALE_RUNS="hygiene" or "nohygiene" runs one of the two, STALE_RESET_BOUND_MS changes the bound.
#
# `disconnected` is stamped twice: when the daemon's log line "interface wan1 (wan1) is offline"
# appears (written before the daemon acts on it; the reference for the figures) and by the hook
# (run after the daemon acted, so it can come later than the resets).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/stale_helpers.sh"
ul_init stale_flows daemon
command -v conntrack >/dev/null 2>&1 || skip "needs the 'conntrack' tool (Debian package conntrack)"

TOOLS=$UL_SOURCE/tests/integration/tools
P=$UL_PREFIX
MASK=0x3F00
WAN1_MARK=0x100 # mwan3 mark of interface id 1 under 0x3F00
WAN2_MARK=0x200
SERVER=203.0.113.4 # default rule: policy wan1 then wan2
PINNED=203.0.113.3 # rule to_wan2: policy wan2 only
BOUND_MS=${STALE_RESET_BOUND_MS:-1000}
HANG_S=10

ul_lab_up
lab_silent_drop "$P" on || fail "cannot install the core's silent-drop table"
make_hook

# write_cfg <file> <reset_stale_tcp> <conntrack_by_mark>
write_cfg() {
  cat >"$1" <<EOF
config globals 'globals'
	option mmx_mask '$MASK'
	option reset_stale_tcp '$2'
	option conntrack_by_mark '$3'

config interface 'wan1'
	option enabled '1'
	option family 'ipv4'
	option device 'wan1'
	option gateway '192.0.2.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option reliability '1'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'

config interface 'wan2'
	option enabled '1'
	option family 'ipv4'
	option device 'wan2'
	option gateway '198.51.100.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option reliability '1'
	option interval '0.5'
	option timeout '1'
	option down '3'
	option up '3'

config member 'wan1_m1'
	option interface 'wan1'
	option metric '1'

config member 'wan2_m2'
	option interface 'wan2'
	option metric '2'

config member 'wan2_only_m'
	option interface 'wan2'

config policy 'wan1_wan2'
	list use_member 'wan1_m1'
	list use_member 'wan2_m2'

config policy 'wan2_only'
	list use_member 'wan2_only_m'

config rule 'to_wan2'
	option dest_ip '$PINNED'
	option use_policy 'wan2_only'

config rule 'default_rule'
	option dest_ip '0.0.0.0/0'
	option use_policy 'wan1_wan2'
EOF
  chmod 644 "$1"
}

# ---------------------------------------------------------------------------------------------
# Helpers: conntrack of this family (the rest is in stale_helpers.sh)
# ---------------------------------------------------------------------------------------------
# ct_table: the router's conntrack entries, one line each (tools/ct_list.py format).
ct_table() { ip netns exec "$P-rtr" conntrack -L 2>/dev/null | python3 "$TOOLS/ct_list.py" --mask "$MASK"; }

# flows_json: `uplinkctl flows --json`.
flows_json() { ctl flows --json; }

# The figures should measure the router, not the load of a shared build machine: where SCHED_FIFO
# is allowed, the daemon runs at priority 30 (as a router's only busy process would run: a waking
# client must not preempt it between two resets) and the log follower and the measured clients at
# 20 (their stamps are taken when the kernel wakes them, not a time slice later).
RT=()
chrt -f 20 true 2>/dev/null && RT=(chrt -f 20)

RTR_LAN_MAC=$(ip -n "$P-rtr" -br link show dev lan0 | awk '{ print $3 }')

# raw_ack <name> <sport> <seq> <ack> <wait s>: a crafted ACK from the LAN client to SERVER:5003.
raw_ack() {
  ip netns exec "$P-lan" timeout 10 python3 "$TOOLS/raw_tcp.py" --dev eth0 --dst-mac "$RTR_LAN_MAC" \
    --src 10.10.0.2 --dst "$SERVER" --sport "$2" --dport 5003 --seq "$3" --ack "$4" --wait "$5" \
    >"$UL_TMP/$1.out" 2>"$UL_TMP/$1.err" || fail "raw_tcp.py failed: $(cat "$UL_TMP/$1.err")"
}

# ---------------------------------------------------------------------------------------------
# One run: start uplinkd, open the flows, take isp1 down, watch what happens.
# ---------------------------------------------------------------------------------------------
# run <label> <hygiene 1|0> <first port>
run() {
  local label=$1 hyg=$2 port0=$3 cfg=$UL_TMP/uplinkd.$1.conf
  local a_port=$((port0 + 1)) i_port=$((port0 + 2)) w_port=$((port0 + 3)) r_port=$((port0 + 4))
  local u_port=$((port0 + 5)) raw_port=$((port0 + 6)) n before peer pport want what off t_log t_hook
  log "---- run '$label': reset_stale_tcp $hyg, conntrack_by_mark $hyg"
  lab_outage "$P" isp1 off
  write_cfg "$cfg" "$hyg" "$hyg"
  start_uplinkd "$P" "$cfg" --hook "$UL_HOOK"
  # start_uplinkd's command execs down to uplinkd, so the pid is the daemon's.
  if ((${#RT[@]})); then
    chrt -a -f -p 30 "$UPLINKD_PID" || info "cannot raise uplinkd to SCHED_FIFO; figures include the host's load"
  fi
  ul_wait_tracking wan1 wan2

  bg "srv_$label" core timeout 120 python3 "$TOOLS/stale_server.py" --tcp-port 5001 --udp-port 5002 --duration 100
  bg "rsrv_$label" rtr timeout 120 python3 "$TOOLS/stale_server.py" --bind 10.10.0.1 --tcp-port 5004 --duration 100
  wait_ev "srv_$label" listen 5 >/dev/null || fail "core server did not start: $(cat "$UL_TMP/srv_$label.err")"
  wait_ev "rsrv_$label" listen 5 >/dev/null || fail "router server did not start: $(cat "$UL_TMP/rsrv_$label.err")"

  bg "active_$label" lan "${RT[@]}" timeout 120 python3 "$TOOLS/stale_client.py" active "$SERVER" 5001 --sport "$a_port" --duration 90
  bg "idle_$label" lan "${RT[@]}" timeout 120 python3 "$TOOLS/stale_client.py" idle "$SERVER" 5001 --sport "$i_port" --duration 90
  bg "pinned_$label" lan timeout 120 python3 "$TOOLS/stale_client.py" probe "$PINNED" 5001 --sport "$w_port" \
    --duration 90 --probe-file "$UL_TMP/probe_$label"
  bg "local_$label" lan timeout 120 python3 "$TOOLS/stale_client.py" idle 10.10.0.1 5004 --sport "$r_port" --duration 90
  bg "udp_$label" lan timeout 120 python3 "$TOOLS/stale_client.py" udp "$SERVER" 5002 --sport "$u_port" --duration 90
  for n in active idle pinned local udp; do
    wait_ev "${n}_$label" connected 6 >/dev/null ||
      fail "client '$n' did not connect: $(cat "$UL_TMP/${n}_$label.out" "$UL_TMP/${n}_$label.err")"
  done
  sleep "$(ul_scaled 1)" # echoes flow, the UDP sink counts, LAN egress learns each connection's next sequence

  # Which uplink each flow took: the source address the core sees is the uplink's NAT address.
  for n in "$a_port:192.0.2.2:active" "$i_port:192.0.2.2:idle" "$w_port:198.51.100.2:pinned"; do
    IFS=: read -r pport want what <<<"$n"
    peer=$(jq_ev "srv_$label" accept peer "d['pport'] == $pport" || true)
    [[ $peer == "$want" ]] || fail "$what client's connection reached the core from '$peer', expected $want; core log: $(cat "$UL_TMP/srv_$label.out")"
  done
  peer=$(jq_ev "srv_$label" udp peer) || fail "no UDP datagram reached the core"
  [[ $peer == 192.0.2.2 ]] || fail "the UDP flow reached the core from $peer before the outage (expected wan1's 192.0.2.2)"
  pass "[$label] before the outage: active and idle clients and UDP via wan1 (192.0.2.2), pinned client via wan2"

  if ((hyg)); then
    raw_ack "raw_fresh_$label" "$raw_port" 1000 5000 0.4
    n=$(jq_ev "raw_fresh_$label" "done" replies)
    ((n == 0)) || fail "a segment of a fresh flow was answered: $(cat "$UL_TMP/raw_fresh_$label.out")"
    pass "[$label] a mid-stream ACK on a fresh flow is forwarded, not answered (the core swallows it)"
  fi

  before=$(ct_table)
  info "conntrack before the outage (proto src dst sport dport reply-dst mark mark&mask):"
  grep -F 10.10.0.2 <<<"$before" | sed 's/^/      /'
  local e_active e_idle e_pinned e_local e_udp
  e_active=$(ct_entry "$before" tcp 10.10.0.2 "$a_port" "$SERVER" 5001)
  e_idle=$(ct_entry "$before" tcp 10.10.0.2 "$i_port" "$SERVER" 5001)
  e_pinned=$(ct_entry "$before" tcp 10.10.0.2 "$w_port" "$PINNED" 5001)
  e_local=$(ct_entry "$before" tcp 10.10.0.2 "$r_port" 10.10.0.1 5004)
  e_udp=$(ct_entry "$before" udp 10.10.0.2 "$u_port" "$SERVER" 5002)
  for n in e_active e_idle e_pinned e_local e_udp; do
    [[ -n ${!n} ]] || fail "no conntrack entry for the ${n#e_} flow before the outage"
  done
  if ((hyg)); then
    [[ $(awk '{ print $8 }' <<<"$e_active") == "$WAN1_MARK" && $(awk '{ print $8 }' <<<"$e_idle") == "$WAN1_MARK" &&
      $(awk '{ print $8 }' <<<"$e_udp") == "$WAN1_MARK" ]] ||
      fail "the wan1 flows' conntrack entries do not carry wan1's mark $WAN1_MARK under $MASK (uplinkd's ct mark rules)"
    [[ $(awk '{ print $8 }' <<<"$e_pinned") == "$WAN2_MARK" ]] ||
      fail "the pinned flow's conntrack entry does not carry wan2's mark $WAN2_MARK: $e_pinned"
    [[ $(awk '{ print $8 }' <<<"$e_local") != "$WAN1_MARK" ]] || fail "the LAN-to-router entry carries wan1's mark: $e_local"
    pass "[$label] conntrack marks: wan1 flows $WAN1_MARK, pinned flow $WAN2_MARK, LAN-to-router $(awk '{ print $8 }' <<<"$e_local") (under $MASK)"
  fi

  # The outage, and the two stamps of `disconnected`.
  local h0
  h0=$(hook_count)
  off=$(stat -c %s "$UPLINKD_LOG")
  bg "logf_$label" rtr "${RT[@]}" timeout 40 python3 "$TOOLS/log_follow.py" "$UPLINKD_LOG" "interface wan1 (wan1) is offline" \
    --offset "$off" --timeout 30
  wait_ev "logf_$label" ready 10 >/dev/null || fail "the log follower did not start: $(cat "$UL_TMP/logf_$label.err")"
  local t_out
  t_out=$(date +%s%N)
  lab_outage "$P" isp1 on || fail "lab_outage isp1 on failed"
  log "[$label] isp1 drops everything from now on (wan1's link stays up)"
  wait_ev "logf_$label" match 20 >/dev/null || true
  t_log=$(jq_ev "logf_$label" match t) || t_log=
  [[ -n $t_log ]] || fail "no 'interface wan1 (wan1) is offline' in uplinkd's log within 20 s of the outage"
  local ts
  ts=$(wait_hook disconnected wan1 "$h0" 5) || fail "no hook 'disconnected wan1'"
  t_hook=$(awk -v s="$ts" 'BEGIN { printf "%.0f", s * 1e9 }')
  info "disconnected: log line $(ms_between "$t_out" "$t_log") ms after the outage began, hook $(ms_between "$t_log" "$t_hook") ms after the log line"

  if ((hyg)); then
    check_hygiene
  else
    check_hang
  fi
  stop_bg "active_$label" "idle_$label" "pinned_$label" "local_$label" "udp_$label" "srv_$label" "rsrv_$label" "logf_$label"
  stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
}

# check_hygiene: the expectations of the run with reset_stale_tcp and conntrack_by_mark on. Reads the
# locals of run() (bash's dynamic scope).
check_hygiene() {
  local n e_ms a_ms i_ms errs after
  for n in active idle; do
    wait_ev "${n}_$label" error 3 >/dev/null ||
      fail "the $n client got no error within 3 s of 'disconnected': $(tail -n 3 "$UL_TMP/${n}_$label.out")"
    e_ms=$(ms_between "$t_log" "$(jq_ev "${n}_$label" error t)")
    errs=$(jq_ev "${n}_$label" error errno)
    [[ $errs == ECONNRESET ]] || fail "the $n client failed with $errs, not ECONNRESET"
    fle "$e_ms" "$BOUND_MS" || fail "the $n client's ECONNRESET came $e_ms ms after 'disconnected' (bound $BOUND_MS ms)"
    [[ $n == active ]] && a_ms=$e_ms || i_ms=$e_ms
  done
  pass "[$label] both clients reset: ECONNRESET $a_ms ms (active) and $i_ms ms (idle) after 'disconnected' (bound $BOUND_MS ms)"
  log "RESULT stale_flows: 'disconnected' (daemon log line) -> ECONNRESET: client sending every 100 ms $a_ms ms (goal < 50), idle client blocked in recv() $i_ms ms (goal < 200); the hook ran $(ms_between "$t_log" "$t_hook") ms after the log line; detection $(ms_between "$t_out" "$t_log") ms after the outage began"

  # conntrack: wan1's LAN entries gone (give the daemon's worker 2 s), wan2's and the unmarked one kept.
  ct_polls=$(awk -v s="$(ul_scaled 2)" 'BEGIN { printf "%d", s * 10 }')
  for ((n = 0; n < ct_polls; n++)); do
    after=$(ct_table)
    [[ -z $(awk -v m="$WAN1_MARK" '$2 == "10.10.0.2" && $8 == m' <<<"$after") ]] && break
    sleep 0.1
  done
  info "conntrack after 'disconnected':"
  grep -F 10.10.0.2 <<<"$after" | sed 's/^/      /'
  [[ -z $(awk -v m="$WAN1_MARK" '$2 == "10.10.0.2" && $8 == m' <<<"$after") ]] ||
    fail "LAN conntrack entries with wan1's mark are still there $(ul_scaled 2) s after 'disconnected'"
  [[ -z $(ct_entry "$after" tcp 10.10.0.2 "$a_port" "$SERVER" 5001) && -z $(ct_entry "$after" tcp 10.10.0.2 "$i_port" "$SERVER" 5001) ]] ||
    fail "the reset clients' conntrack entries are still there"
  [[ -n $(ct_entry "$after" tcp 10.10.0.2 "$w_port" "$PINNED" 5001) ]] || fail "the pinned (wan2) flow's conntrack entry was deleted"
  [[ -n $(ct_entry "$after" tcp 10.10.0.2 "$r_port" 10.10.0.1 5004) ]] || fail "the unmarked LAN-to-router conntrack entry was deleted"
  pass "[$label] conntrack: entries with wan1's mark gone; wan2's entry and the unmarked entry remain"

  # The surviving uplink's connection still works, and was not reset.
  : >"$UL_TMP/probe_$label"
  wait_ev "pinned_$label" probe 4 >/dev/null || fail "the pinned client did not report its probe"
  [[ $(jq_ev "pinned_$label" probe ok) == True ]] || fail "the wan2 connection did not echo after the failover: $(cat "$UL_TMP/pinned_$label.out")"
  jq_ev "pinned_$label" error >/dev/null && fail "the wan2 connection failed: $(jq_ev "pinned_$label" error)"
  jq_ev "local_$label" error >/dev/null && fail "the LAN-to-router connection failed: $(jq_ev "local_$label" error)"
  pass "[$label] the wan2 connection still echoes ($(jq_ev "pinned_$label" probe rtt_ms) ms) and the LAN-to-router one is untouched"

  # UDP continues over the backup: datagrams from wan2's NAT address after `disconnected`.
  wait_ev "srv_$label" udp 4 "d['peer'] == '198.51.100.2' and d['pport'] and d['t'] > $t_log" >/dev/null ||
    fail "no UDP datagram from wan2's address (198.51.100.2) within 4 s of 'disconnected'"
  local first last_wan1 udp_ms
  first=$(jq_ev "srv_$label" udp t "d['peer'] == '198.51.100.2'")
  last_wan1=$(python3 -c '
import json, sys
ts = [json.loads(l)["t"] for l in open(sys.argv[1]) if "\"udp\"" in l and "192.0.2.2" in l]
print(max(ts) if ts else "")' "$UL_TMP/srv_$label.out")
  udp_ms=$(ms_between "$t_log" "$first")
  pass "[$label] UDP continues over wan2: first datagram from 198.51.100.2 $udp_ms ms after 'disconnected' (last via wan1 $(ms_between "$t_out" "$last_wan1") ms after the outage began)"

  # The datapath's own reset: a crafted ACK on the stale flow it learnt before the outage.
  raw_ack "raw_stale_$label" "$raw_port" 1001 777777 1.0
  local rst
  rst=$(jq_ev "raw_stale_$label" reply) || fail "no answer to a segment on a stale TCP flow: $(cat "$UL_TMP/raw_stale_$label.out")"
  info "answer to the stale segment (ack 777777): $rst"
  python3 - "$rst" <<'PY' || fail "the datapath's RST is not the expected one: $rst"
import json, sys
r = json.loads(sys.argv[1])
ok = (r["flags"] == "R" and r["seq"] == 777777 and r["ack"] == 0 and r["window"] == 0 and r["payload"] == 0
      and r["ip_csum_ok"] and r["tcp_csum_ok"] and r["src"] == "203.0.113.4" and r["sport"] == 5003)
sys.exit(0 if ok else 1)
PY
  pass "[$label] a stale segment is answered at once with a RST, seq = its ack, checksums valid ($(jq_ev "raw_stale_$label" reply after_ms) ms)"

  # Counters agree.
  local fj active proactive
  fj=$(flows_json) || fail "uplinkctl flows --json failed: $fj"
  info "uplinkctl flows --json: $fj"
  active=$(flow_counter "$fj" "${FLOWS_ACTIVE_KEY:-stale_resets.active}") || fail "no stale_resets.active in uplinkctl flows --json"
  proactive=$(flow_counter "$fj" "${FLOWS_PROACTIVE_KEY:-stale_resets.proactive}") || fail "no stale_resets.proactive in uplinkctl flows --json"
  ((active >= 1 && proactive >= 1)) || fail "counters: resets active $active, proactive $proactive (expected both >= 1)"
  pass "[$label] uplinkctl flows: resets active $active, proactive $proactive"
  # One line for bench/failover_bench.sh (ms after the daemon's `disconnected` log line).
  log "FIGURES active_ms=$a_ms idle_ms=$i_ms udp_ms=$udp_ms hook_ms=$(ms_between "$t_log" "$t_hook") detect_ms=$(ms_between "$t_out" "$t_log") hygiene_us=$(sed -n 's/.*interface wan1: [0-9]* idle TCP client(s) reset; .*, \([0-9]*\) us of work over .*/\1/p' "$UPLINKD_LOG" | tail -n 1)"
}

# check_hang: without the hygiene the connections hang: no error 10 s after `disconnected`.
check_hang() {
  local n t_end=$((t_log + HANG_S * 1000000000))
  while (($(date +%s%N) < t_end)); do
    for n in active idle; do
      grep -q '"ev": "error"' "$UL_TMP/${n}_$label.out" &&
        fail "the $n client failed without uplinkd's hygiene: $(grep '"ev": "error"' "$UL_TMP/${n}_$label.out")"
    done
    sleep 0.2
  done
  pass "[$label] $HANG_S s after 'disconnected' neither client has seen an error: the connections hang (core swallowed $(lab_silent_drops "$P") segments)"
  local after
  after=$(ct_table)
  info "conntrack $HANG_S s after 'disconnected':"
  grep -F 10.10.0.2 <<<"$after" | sed 's/^/      /'
  # Only the idle flow's entry is certain to stay: a packet of a masqueraded flow that the
  # classifier re-routed to wan2 makes the kernel's NAT kill the entry itself (the output device
  # of a masqueraded entry changed) and drop the packet; the flow's next packet is picked up as a
  # new entry masqueraded to wan2's address, which the core does not know either.
  local e
  e=$(ct_entry "$after" tcp 10.10.0.2 "$i_port" "$SERVER" 5001)
  [[ -n $e && $(awk '{ print $6 }' <<<"$e") == 192.0.2.2 ]] ||
    fail "the idle client's conntrack entry (NAT to wan1's 192.0.2.2) is gone without conntrack_by_mark: '$e'"
  pass "[$label] the idle flow's conntrack entry (wan1's NAT) stays without conntrack_by_mark"
  local fj
  if fj=$(flows_json 2>&1); then
    info "uplinkctl flows --json: $fj"
    n=$(flow_counter "$fj" "${FLOWS_PROACTIVE_KEY:-stale_resets.proactive}") || n=
    [[ -z $n || $n == 0 ]] || fail "proactive resets sent with reset_stale_tcp 0: $n"
  fi
}

# STALE_RUNS picks runs when debugging (default: both).
for r in ${STALE_RUNS:-hygiene nohygiene}; do
  case $r in
    hygiene) run hygiene 1 40000 ;;
    nohygiene) run nohygiene 0 40100 ;;
    *) fail "STALE_RUNS: unknown run '$r' (hygiene, nohygiene)" ;;
  esac
done
exit 0
