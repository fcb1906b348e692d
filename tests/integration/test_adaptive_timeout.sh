#!/usr/bin/env bash
# `option timeout 'auto'` (extension, issue 14 item 8): fast probes that survive their own uplink's
# queue, and still detect an outage fast. Interval 0.05, down 3, up 3, two targets, reliability 1.
#   phase A (60 s): isp1 shapes its egress towards the router with tbf rate 20mbit and 100 ms of
#            queue, and iperf3 downloads from the core to the LAN client through wan1 (it fills that
#            queue). timeout 'auto'. Assert: wan1 0 transitions, no `disconnected` hook, the probes'
#            RTT rose above 50 ms (the queue was full) and the targets' timeout_ms followed it.
#   phase B (15 s, the control): the same load with a fixed `timeout 0.05`, the interval itself,
#            as a user picking 50 ms probes would set it. Asserted: wan1 goes offline (the point of
#            phase A); the fixed timeout cannot hold a 100 ms queue.
#   phase C: no load, timeout 'auto'; 10 outages of isp1 (it drops everything it forwards, the
#            link stays up). Detection = outage start -> the daemon's "interface wan1 (wan1) is
#            offline" line, stamped as it is written (bash's EPOCHREALTIME, no fork). The outage
#            starts when lab_outage's nft command has committed its rule: its start is taken when
#            the command returns; from before the command (what test_outage_detection does, which
#            adds the nft process's start-up, 0.05-0.5 s on a loaded machine) is printed too, as is
#            the hook's time and the daemon's own detection_s (first failed probe sent to offline).
#            Asserted: each <= 1 s x UL_TIME_SCALE (a generous bound on a shared machine); the
#            goal, worst <= 0.25 s, and the median are printed as the benchmark figure
#            ("adaptive timeout: detection worst ... median ..."), with every outage's figures and
#            the daemon's probe send lateness (how late its loop woke).
# The daemon runs as the shipped systemd unit (Nice=-10) and OpenWrt init script (procd nice -10)
# start it: at nice -10 (UL_NICE; UL_NICE=0 measures the difference), in a session of its own as
# a service is. Its loop sends the probes and expires their timeouts; at nice 0 in this script's
# session on this shared machine it woke tens of ms late. With the kernel's autogroup scheduling
# (sched_autogroup_enabled, this machine and Debian's kernels) a nice value weighs only against the
# same session's tasks, so the session of its own matters as much as the nice value.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init adaptive_timeout daemon
command -v iperf3 >/dev/null 2>&1 || skip "needs 'iperf3' (Debian package iperf3)"

P=$UL_PREFIX
# The daemon as a service: a wrapper that lib.sh's start_uplinkd executes in place of the binary
# (nice's adjustment is relative, so from this shell's own niceness; setsid does not fork, as the
# wrapper is no process group leader, so the daemon keeps start_uplinkd's pid).
UL_NICE=${UL_NICE:--10}
NICE_WRAPPER=$UL_TMP/uplinkd-nice
printf '#!/bin/sh\nexec setsid nice -n %d %q "$@"\n' "$((UL_NICE - $(nice)))" "$UPLINKD" >"$NICE_WRAPPER"
chmod +x "$NICE_WRAPPER"
UPLINKD=$NICE_WRAPPER
INTERVAL=0.05 DOWN=3 UP=3
FIXED_TIMEOUT=0.05
LOAD_S=${UL_LOAD_SECONDS:-60}
CONTROL_S=${UL_CONTROL_SECONDS:-15}
OUTAGES=${UL_OUTAGES:-10}
DETECT_BOUND=$(ul_scaled 1)
SERVER=203.0.113.4 # on the core's lo, beside the probe targets 203.0.113.1 and .2
ul_lab_up
make_hook

# The ISP's side of wan1's access link: 20 Mbit/s with 100 ms of queue towards the router.
tc -n "$P-isp1" qdisc add dev rtr root tbf rate 20mbit burst 32kb latency 100ms ||
  fail "tc tbf on isp1's rtr link failed"
info "isp1 -> rtr: $(tc -n "$P-isp1" qdisc show dev rtr)"

# Python that prints one line about wan1 from the JSON status: state, transitions, probes, and per
# target rtt_ms / timeout_ms.
PY_WAN1='
import json, sys
d = json.load(sys.stdin)
for i in d.get("interfaces", []):
    if i.get("name") != "wan1":
        continue
    p = i.get("probes", {})
    t = " ".join("%s rtt=%.1f timeout=%s" % (x.get("ip"), x.get("rtt_ms", 0),
                 "%.1f" % x["timeout_ms"] if "timeout_ms" in x else "-") for x in i.get("targets", []))
    print("state=%s transitions=%s sent=%s replied=%s lost=%s | %s" % (i.get("state"), i.get("transitions"),
          p.get("sent"), p.get("replied"), p.get("lost"), t))
'
wan1_line() { ctl_json 2>/dev/null | python3 -c "$PY_WAN1" 2>/dev/null || echo "(no status)"; }
# The largest rtt_ms and timeout_ms over wan1's targets right now ("rtt timeout").
PY_MAX='
import json, sys
d = json.load(sys.stdin)
w = [i for i in d.get("interfaces", []) if i.get("name") == "wan1"][0]
ts = w.get("targets", [])
print("%.1f %.1f" % (max(x.get("rtt_ms", 0) for x in ts), max(x.get("timeout_ms", -1) for x in ts)))
'
wan1_max() { ctl_json 2>/dev/null | python3 -c "$PY_MAX" 2>/dev/null || echo "0 -1"; }

# start_download <seconds>: iperf3 from the core to the LAN client (-R: the server sends), through
# wan1 (the policy's first member); two streams with 1 MB windows, more than the 250 kB queue, so
# the queue stays full. Sets IPERF_LOG.
start_download() {
  local secs=$1 pid
  IPERF_LOG=$UL_TMP/iperf3.$RANDOM.json
  ip netns exec "$P-core" timeout "$((secs + 30))" iperf3 -s -1 -B "$SERVER" -p 5201 </dev/null \
    >"$UL_TMP/iperf3_server.log" 2>&1 &
  ul_bg_add $!
  sleep 0.5
  ip netns exec "$P-lan" timeout "$((secs + 20))" iperf3 -c "$SERVER" -p 5201 -R -P 2 -w 1M -t "$secs" -J </dev/null \
    >"$IPERF_LOG" 2>&1 &
  pid=$!
  ul_bg_add "$pid"
  IPERF_PID=$pid
}
# download_mbit: the receiver's rate of the finished download.
download_mbit() {
  python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))' \
    <"$IPERF_LOG" 2>/dev/null || echo "?"
}

# ---------------------------------------------------------------------------------------------
log "phase A: timeout 'auto', interval $INTERVAL, down $DOWN; a $LOAD_S s download fills wan1's queue"
CFG_AUTO=$UL_TMP/auto.conf
ul_write_config "$CFG_AUTO" "$INTERVAL" auto "$DOWN" "$UP"
start_uplinkd "$P" "$CFG_AUTO" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
read -r ni sid comm <<<"$(ps -o ni=,sid=,comm= -p "$UPLINKD_PID")"
info "uplinkd (pid $UPLINKD_PID, $comm) runs at nice $ni (UL_NICE $UL_NICE) in session $sid (this script's: $(ps -o sid= -p $$ | tr -d ' '))"
[[ $comm == uplinkd ]] || fail "start_uplinkd's pid $UPLINKD_PID is $comm, not uplinkd (the wrapper forked)"
sleep 1
info "idle: $(wan1_line)"
read -r idle_rtt idle_timeout <<<"$(wan1_max)"
[[ $idle_timeout != "-1.0" ]] || fail "no timeout_ms per target in uplinkctl status --json with timeout 'auto'"
tr0=$(iface_get wan1 transitions) || fail "no transitions field for wan1"
h0=$(hook_count)
start_download "$LOAD_S"
T0=$(now)
max_rtt=0 max_timeout=0 k=0
while kill -0 "$IPERF_PID" 2>/dev/null && fle "$(fsub "$T0" "$(now)")" "$((LOAD_S + 15))"; do
  sleep 0.5
  read -r r t <<<"$(wan1_max)"
  fle "$r" "$max_rtt" || max_rtt=$r
  fle "$t" "$max_timeout" || max_timeout=$t
  el=$(fsub "$T0" "$(now)")
  k=$((k + 1))
  ((k < 4 || k % 10 == 0)) && info "t+${el}s $(wan1_line)"
  uplinkd_alive || fail "uplinkd exited during the download"
done
wait "$IPERF_PID" 2>/dev/null
info "download: $(download_mbit) Mbit/s received over $(fsub "$T0" "$(now)") s"
info "wan1 idle rtt ${idle_rtt} ms / timeout ${idle_timeout} ms; under load at most rtt ${max_rtt} ms, timeout ${max_timeout} ms"
tr1=$(iface_get wan1 transitions)
down_events=$(hook_since "$h0" | awk '$3 == "wan1" && $2 == "disconnected"' | wc -l)
wobbles=$(hook_since "$h0" | awk '$3 == "wan1" && $2 == "disconnecting"' | wc -l)
info "wan1 transitions $tr0 -> $tr1; hook: $down_events disconnected, $wobbles disconnecting (a failed cycle or two)"
info "wan1 target 1 RTT histogram under load: $(iface_get wan1 targets.0.rtt_histogram | tr -d ' \n' | cut -c1-400)"
fle 20 "$max_rtt" || fail "the probes' mean RTT never rose above 20 ms (max $max_rtt ms): the download did not use the queue"
fle 60 "$max_timeout" || fail "timeout_ms never followed the RTT above the 50 ms floor (max $max_timeout ms)"
[[ $tr1 == "$tr0" ]] || fail "wan1 made $((tr1 - tr0)) transitions under its own queue with timeout 'auto' (expected 0)"
((down_events == 0)) || fail "hook saw 'disconnected wan1' $down_events times during the download"
[[ $(iface_get wan1 state) == online ]] || fail "wan1 is not online after the download"
pass "timeout 'auto': 0 transitions during the $LOAD_S s download (RTT up to $max_rtt ms, timeout up to $max_timeout ms)"
stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
sleep 1

# ---------------------------------------------------------------------------------------------
log "phase B (control): fixed timeout $FIXED_TIMEOUT under the same load for $CONTROL_S s"
CFG_FIXED=$UL_TMP/fixed.conf
ul_write_config "$CFG_FIXED" "$INTERVAL" "$FIXED_TIMEOUT" "$DOWN" "$UP"
: >"$UL_HOOK_LOG"
start_uplinkd "$P" "$CFG_FIXED" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
tr0=$(iface_get wan1 transitions)
start_download "$CONTROL_S"
T0=$(now)
while kill -0 "$IPERF_PID" 2>/dev/null && fle "$(fsub "$T0" "$(now)")" "$((CONTROL_S + 15))"; do
  sleep 1
  el=$(fsub "$T0" "$(now)")
  [[ ${el%.*} -lt 3 || $((${el%.*} % 5)) == 0 ]] && info "t+${el}s $(wan1_line)"
done
wait "$IPERF_PID" 2>/dev/null
tr1=$(iface_get wan1 transitions)
offs=$(awk '$3 == "wan1" && $2 == "disconnected"' "$UL_HOOK_LOG" | wc -l)
info "fixed timeout $FIXED_TIMEOUT: download $(download_mbit) Mbit/s; wan1 transitions $tr0 -> $tr1, $offs x disconnected"
((offs > 0)) || fail "the control did not false-fail: fixed timeout $FIXED_TIMEOUT kept wan1 online under the load"
pass "control: a fixed timeout of $FIXED_TIMEOUT s takes wan1 offline $offs times under the same load"
stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
tc -n "$P-isp1" qdisc del dev rtr root || fail "removing the tbf failed"

# ---------------------------------------------------------------------------------------------
log "phase C: timeout 'auto', no load, $OUTAGES outages of isp1; each detection <= $DETECT_BOUND s (goal 0.25 s)"
: >"$UL_HOOK_LOG"
start_uplinkd "$P" "$CFG_AUTO" --hook "$UL_HOOK"
# Every line the daemon writes from now on, stamped when it is read (tail follows by inotify), by
# readers at the daemon's priority, so the stamp is not held up longer than the line's writer was.
STAMPED=$UL_TMP/uplinkd.stamped.log
: >"$STAMPED"
adj=$((UL_NICE - $(nice)))
# shellcheck disable=SC2016 # the inner bash expands $EPOCHREALTIME and $l itself
(nice -n "$adj" tail -F -n 0 --pid=$$ "$UPLINKD_LOG" 2>/dev/null | nice -n "$adj" bash -c '
  while IFS= read -r l; do printf "%s %s\n" "$EPOCHREALTIME" "$l"; done' >>"$STAMPED") &
ul_bg_add $!
ul_wait_tracking wan1 wan2
sleep 1
info "idle: $(wan1_line)"
# wait_line <after line n> <text> <seconds>: the stamp of the first stamped line after line n
# containing text.
wait_line() {
  local after=$1 text=$2 secs=$3 t0=$EPOCHREALTIME ts
  while fle "$(fsub "$t0" "$EPOCHREALTIME")" "$secs"; do
    ts=$(tail -n "+$((after + 1))" "$STAMPED" | awk -v t="$text" 'index($0, t) { print $1; exit }')
    [[ -n $ts ]] && { echo "$ts"; return 0; }
    sleep 0.05
  done
  return 1
}
median_of() { sort -n | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f %.3f", v[NR], m }'; }
read -r _ idle_timeout_ms <<<"$(wan1_max)"
detections=() before_nft=() by_hook=() by_daemon=() waits=()
for ((n = 1; n <= OUTAGES; n++)); do
  h=$(hook_count)
  l=$(wc -l <"$STAMPED")
  Tb=$EPOCHREALTIME
  lab_outage "$P" isp1 on || fail "lab_outage isp1 on failed"
  T0=$EPOCHREALTIME
  ts=$(wait_line "$l" "interface wan1 (wan1) is offline" "$(ul_scaled 10)") ||
    fail "outage $n: no 'is offline' line for wan1 within $(ul_scaled 10) s (state $(iface_get wan1 state))"
  th=$(wait_hook disconnected wan1 "$h" "$(ul_scaled 10)") || fail "outage $n: no 'disconnected wan1' hook"
  dd=$(iface_get wan1 detection_s)
  detections+=("$(fsub "$T0" "$ts")") before_nft+=("$(fsub "$Tb" "$ts")") by_hook+=("$(fsub "$T0" "$th")")
  by_daemon+=("$(fcalc "$dd")")
  # Outage start to the first failed probe, plus the test's own reading of the log line.
  waits+=("$(fsub "${by_daemon[-1]}" "${detections[-1]}")")
  h=$(hook_count)
  lab_outage "$P" isp1 off || fail "lab_outage isp1 off failed"
  ts=$(wait_hook connected wan1 "$h" "$(ul_scaled 10)") || fail "outage $n: wan1 did not come back"
  info "outage $n: offline line after ${detections[-1]} s (${before_nft[-1]} s from before nft;" \
    "hook after ${by_hook[-1]} s; daemon's detection_s ${by_daemon[-1]} s); back after $(fsub "$T0" "$ts") s"
  # A different phase against the probe schedule each time.
  sleep "$(fcalc "0.6 + $n * 0.037")"
done
# Where each outage's time went: the daemon's detection_s is down x (the idle timeout + the cycle's
# spread) by design, the rest its loop's lateness; the remainder of the detection is the wait for
# the first failed probe (up to one interval) and the log line's way to this script.
info "per outage (s): detection ${detections[*]}"
info "  daemon's detection_s ${by_daemon[*]} (design: $DOWN x (timeout ${idle_timeout_ms} ms + spread))"
info "  outage start -> first failed probe, plus the log line's reading: ${waits[*]}"
info "  probe send lateness: $(iface_get wan1 probe_lateness | python3 -c '
import json, sys
h = json.load(sys.stdin)
le = h["le_ms"] + ["inf"]
print("%d probes, mean %.2f ms, max %.1f ms; per bucket %s" % (h["count"], h["sum_ms"] / max(h["count"], 1),
      h["max_ms"], " ".join("<=%s:%d" % (b, c) for b, c in zip(le, h["counts"]) if c)))' 2>/dev/null)"
read -r worst median <<<"$(printf '%s\n' "${detections[@]}" | median_of)"
read -r worst_b median_b <<<"$(printf '%s\n' "${before_nft[@]}" | median_of)"
read -r worst_h median_h <<<"$(printf '%s\n' "${by_hook[@]}" | median_of)"
read -r worst_d median_d <<<"$(printf '%s\n' "${by_daemon[@]}" | median_of)"
info "adaptive timeout: detection worst $worst s, median $median s over $OUTAGES outages (interval $INTERVAL, down $DOWN; goal worst <= 0.25 s)"
info "  from before the nft command: worst $worst_b s, median $median_b s; to the hook: worst $worst_h s, median $median_h s;" \
  "daemon's detection_s: worst $worst_d s, median $median_d s"
fle "$worst" "$DETECT_BOUND" || fail "worst detection $worst s is more than $DETECT_BOUND s"
fle "$worst" 0.25 || info "NOTE: worst detection $worst s is above the 0.25 s goal on this run"
pass "$OUTAGES outages detected, worst $worst s <= $DETECT_BOUND s, median $median s"
exit 0
