#!/usr/bin/env bash
# Benchmark: uplinkd's CPU and resident memory while probing 4 uplinks x 4 targets at 10 Hz
# (interval 0.1 s). Builds its own two namespaces (router with 4 veth uplinks, one "isp" holding
# the targets), runs the daemon for DURATION seconds (default 60), and prints CPU % of one core and
# VmRSS. Run as root from the repository root after building: `sudo bench/daemon_load.sh [seconds]`.
#
# `sudo bench/daemon_load.sh [seconds] --metrics`: what the metrics listener costs, from one run.
# Four phases of seconds/2 each, off/on/off/on: interleaved, so that a noisy shared machine drifts
# alike on both configurations. "off" has no metrics_listen; "on" has
# `option metrics_listen '127.0.0.1:9107'` while a scraper in the router namespace GETs /metrics
# every second and / every 5 s (a browser with the page open). Every phase starts a fresh daemon
# (new instance name, WARMUP_S before measuring) and stops it with SIGTERM. Both configurations
# run `uplinkctl status --json` every 5 s, so the listener and its scrapes are the only difference.
# Prints per phase CPU % of one core, VmRSS and VmHWM at its end, then the medians per
# configuration (on/off ratio of CPU, difference of VmRSS), the size and latency (curl's
# time_total: median, p95, max) of /metrics and /, the latency of status --json, and a summary
# line for the README. The page plots the last hour, but its daemon only lived for the phase: its
# figures are for a page with that much history, not a full one. Helper: bench/metrics_scrape.py.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${UPLINKD_BUILD:-$PWD/build}
HELPER=$PWD/bench/metrics_scrape.py
DURATION=60
METRICS=0
for arg in "$@"; do
  case $arg in
    --metrics) METRICS=1 ;;
    '' | *[!0-9.]*)
      echo "usage: $0 [seconds] [--metrics]" >&2
      exit 2
      ;;
    *) DURATION=$arg ;;
  esac
done
WARMUP_S=2 # after the socket appears: the first cycles and the listener's threads settle
LISTEN=127.0.0.1:9107
P=ulb$$
R=$P-rtr
I=$P-isp
cleanup() {
  [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  ip netns del "$R" 2>/dev/null || true
  ip netns del "$I" 2>/dev/null || true
  rm -rf "$TMP"
}
TMP=$(mktemp -d)
trap cleanup EXIT
# An interrupted run stops here (the EXIT trap cleans up) instead of going on to the next phase.
trap 'exit 130' INT TERM

if ((METRICS)); then
  if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 4)); then
    echo "$0: --metrics needs whole seconds >= 4 (four phases of seconds/2)" >&2
    exit 2
  fi
  PHASE=$((DURATION / 2))
fi

ip netns add "$R"
ip netns add "$I"
ip -n "$I" link set lo up
ip -n "$R" link set lo up
for t in 1 2 3 4; do ip -n "$I" addr add 203.0.113.$t/32 dev lo; done
for n in 1 2 3 4; do
  ip link add wan$n netns "$R" type veth peer name up$n netns "$I"
  ip -n "$R" addr add 10.0.$n.2/24 dev wan$n
  ip -n "$I" addr add 10.0.$n.1/24 dev up$n
  ip -n "$R" link set wan$n up
  ip -n "$I" link set up$n up
  cat >>"$TMP/interfaces" <<CONF
config interface 'wan$n'
	option enabled '1'
	option device 'wan$n'
	option gateway '10.0.$n.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	list track_ip '203.0.113.3'
	list track_ip '203.0.113.4'
	option reliability '4'
	option interval '0.1'
	option timeout '0.5'
	option down '3'
	option up '3'
CONF
done

# write_config <off|on>: the same configuration, with the listener in globals or without it.
write_config() {
  {
    echo "config globals 'globals'"
    echo "	option mmx_mask '0x3F00'"
    if [ "$1" = on ]; then echo "	option metrics_listen '$LISTEN'"; fi
    cat "$TMP/interfaces"
  } >"$TMP/mwan3"
}

# daemon_pid <instance>: the daemon's own pid. Its command line ends with the instance name, and
# so does the sh -c line until sh has exec'd uplinkd: the process must also be named uplinkd.
daemon_pid() {
  local p
  for p in $(pgrep -f -- "--instance $1\$"); do
    if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = uplinkd ]; then
      echo "$p"
      return 0
    fi
  done
  return 0
}

# start_daemon <instance>: uplinkd in the router namespace on $TMP/mwan3, its stderr appended to
# $TMP/log; sets DPID (the job, for cleanup) and pid (the daemon, whose /proc is read). A daemon
# that does not come up ends the run with its log: figures without it would mean nothing.
start_daemon() {
  rm -f "$TMP/sock"
  ip netns exec "$R" sh -c "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec $BUILD/uplinkd --foreground --no-hook --config $TMP/mwan3 --socket $TMP/sock --instance $1" 2>>"$TMP/log" &
  DPID=$!
  for _ in $(seq 1 50); do [ -S "$TMP/sock" ] && break; sleep 0.1; done
  sleep "$WARMUP_S"
  pid=$(daemon_pid "$1")
  if [ -z "$pid" ] || [ ! -S "$TMP/sock" ]; then
    echo "uplinkd (instance $1) did not start; its log:" >&2
    cat "$TMP/log" >&2
    exit 1
  fi
}

# stop_daemon: SIGTERM to the daemon's own pid, as a service manager stops it, then waits until it
# has exited (it takes its datapath down first), so that the next phase starts on a clean router.
stop_daemon() {
  local state="" rc=0
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    state=$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null) || break
    [ "$state" = Z ] && break # exited; reaped by the wait below
    sleep 0.1
  done
  if [ -e /proc/"$pid" ] && [ "$state" != Z ]; then
    echo "ODD: uplinkd $pid still running 10 s after SIGTERM: SIGKILL"
    kill -KILL "$pid"
  fi
  wait "$DPID" || rc=$?
  [ "$rc" = 0 ] || echo "ODD: uplinkd $pid exited with status $rc (log: below)"
  [ "$rc" = 0 ] || cat "$TMP/log"
  DPID=""
}

# run_phase <n> <off|on>: a fresh daemon in that configuration, measured over PHASE seconds while
# the scraper runs; prints the phase's figures and appends them to $TMP/phases.jsonl.
run_phase() {
  local n=$1 cfg=$2 url="" u0 s0 u1 s1 t0 t1 rss hwm
  write_config "$cfg"
  echo "=== phase $n ($cfg), instance bench$$-$n ===" >>"$TMP/log"
  # A fresh instance name: nothing of the previous daemon (lock, pins) can be in the way.
  start_daemon "bench$$-$n"
  if [ "$cfg" = on ]; then
    url=http://$LISTEN
    # The listener must answer before measuring: a daemon that could not bind goes on without it,
    # and the 'on' figures would be 'off' ones.
    if ! ip netns exec "$R" curl -sSf --max-time 5 -o /dev/null "$url/metrics"; then
      echo "phase $n: the metrics listener does not answer; uplinkd's log:" >&2
      cat "$TMP/log" >&2
      exit 1
    fi
  fi
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
  t0=$(date +%s.%N)
  # Its ticks are at most PHASE, each bounded by curl's --max-time and the helper's timeouts.
  ip netns exec "$R" python3 "$HELPER" scrape --seconds "$PHASE" --url "$url" --page "$TMP/page.$n.html" \
    --uplinkctl "$BUILD/uplinkctl" --socket "$TMP/sock" --out "$TMP/scrape.$n.$cfg.jsonl" &
  SPID=$!
  sleep "$PHASE"
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
  t1=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/"$pid"/status)
  wait "$SPID"
  SPID=""
  "$BUILD"/uplinkctl --socket "$TMP/sock" status --json >"$TMP/status.$n.json"
  stop_daemon
  python3 "$HELPER" phase --n "$n" --config "$cfg" --pid "$pid" --ticks "$(((u1 + s1) - (u0 + s0)))" \
    --hz "$(getconf CLK_TCK)" --t0 "$t0" --t1 "$t1" --rss-kb "$rss" --hwm-kb "$hwm" \
    --status "$TMP/status.$n.json" --record "$TMP/phases.jsonl"
}

if ((METRICS)); then
  echo "uplinkd, 4 uplinks x 4 targets, interval 0.1 s: metrics listener off/on/off/on, $PHASE s each" \
    "after $WARMUP_S s of warm-up; 'on': /metrics every 1 s, / every 5 s; both: status --json every 5 s"
  n=0
  for cfg in off on off on; do
    n=$((n + 1))
    run_phase "$n" "$cfg"
  done
  python3 "$HELPER" report --record "$TMP/phases.jsonl" --scrapes-on "$TMP"/scrape.*.on.jsonl \
    --scrapes-off "$TMP"/scrape.*.off.jsonl --pages "$TMP"/page.*.html \
    --phase-seconds "$PHASE" --warmup "$WARMUP_S" --interval 0.1
  exit 0
fi

write_config off
start_daemon "bench$$"
hz=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
t0=$(date +%s.%N)
sleep "$DURATION"
read -r u1 s1 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
t1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)
status=$("$BUILD"/uplinkctl --socket "$TMP/sock" status --json)
python3 - "$u0" "$s0" "$u1" "$s1" "$t0" "$t1" "$hz" "$rss" "$status" <<'PY'
import json, sys
u0, s0, u1, s1 = map(int, sys.argv[1:5]); t0, t1 = float(sys.argv[5]), float(sys.argv[6])
hz, rss = int(sys.argv[7]), int(sys.argv[8]); st = json.loads(sys.argv[9])
cpu = ((u1 + s1) - (u0 + s0)) / hz / (t1 - t0) * 100
sent = sum(i["probes"]["sent"] for i in st["interfaces"]); replied = sum(i["probes"]["replied"] for i in st["interfaces"])
print(f"uplinkd, 4 uplinks x 4 targets, interval 0.1 s, {t1 - t0:.0f} s: CPU {cpu:.2f} % of one core, "
      f"VmRSS {rss / 1024:.1f} MiB, probes sent {sent}, replied {replied} "
      f"({sent / (t1 - t0):.0f} probes/s)")
for i in st["interfaces"]:
    print(f"  {i['name']}: {i['state']}, transitions {i['transitions']}, rtt {i['rtt_ms']:.3f} ms, loss {i['loss_pct']:.1f} %")
PY
