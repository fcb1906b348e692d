#!/usr/bin/env bash
# How long traffic through the router stalls when the daemon goes away and comes back (issue 11),
# repeated: the scenario of tests/integration/restart_scenario.sh (a TCP client sending every 100 ms
# and echoed by the core, an idle TCP client, a UDP stream of 100 datagrams/s, all through wan1) on a
# fresh lab and daemon per run, and in each run three cases, one after the other:
#   kill9     `kill -9` of the daemon's own pid, then a new daemon started at once, which adopts the
#             pinned datapath (window: 1 s before the kill to 3 s after the new daemon answers)
#   upgrade   the binary on disk replaced by rename with uplinkd-test-variant (other BPF programs),
#             then `uplinkctl restart`: same pid, programs replaced in place (window: 1 s before the
#             command to 3 s after it returned)
#   baseline  nothing happens, over a window as long as the longer of the two above
# Figures, per case: the longest gap in ms between consecutive echoes the TCP client received, and
# between consecutive datagrams the core received (a gap that straddles an edge of the window counts),
# the UDP datagrams lost in the window (holes in their sequence numbers), the seconds until the
# daemon answered again, and the daemon's open fds before and after. A client or server that saw a
# connection fail is reported loudly and makes the exit status 1.
#
#   sudo bench/restart_gap_bench.sh [runs=3]     (UPLINKD_BUILD=dir for another build directory)
# Each run takes about 40 s. Runs that fail are counted and left out of the figures.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
N=${1:-3}
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [runs >= 1]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: must run as root (network namespaces)" >&2; exit 1; }
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export UPLINKD_SOURCE=${UPLINKD_SOURCE:-$SRC}
export UPLINKD_BUILD=${UPLINKD_BUILD:-$SRC/build}
source "$SRC/tests/integration/lib.sh"
source "$SRC/tests/integration/restart_scenario.sh"
BEFORE_S=1 # the window opens this long before the event
AFTER_S=3  # and closes this long after the daemon answers again
SETTLE_S=2 # traffic before the first window

now_ns() { date +%s%N; }
# sleep_until_ns <ns>: sleep until that CLOCK_REALTIME instant (at most 30 s).
sleep_until_ns() { sleep "$(awk -v t="$1" -v n="$(now_ns)" 'BEGIN { d = (t - n) / 1e9; printf "%.3f", d < 0 ? 0 : (d > 30 ? 30 : d) }')"; }
fd_count() { find "/proc/$UPLINKD_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# errors_of_clients: the clients' error lines and the server's closed connections (empty: none).
errors_of_clients() {
  rs_client_errors
  grep -h '"closed"' "$UL_TMP/srv.out" 2>/dev/null || true
}

# measure <case> <from ns> <to ns>: waits until the window is over, then appends the case's figures
# to FIG ("<case>_tcp=... <case>_udp=... <case>_lost=...") and the errors seen so far to ERRS.
measure() {
  local c=$1 from=$2 to=$3 tcp udp
  sleep_until_ns "$((to + 300000000))" # the last lines of the window are written
  read -r tcp _ _ <<<"$(rs_gap_in_window active echo "$from" "$to")"
  read -r udp _ lost <<<"$(rs_gap_in_window srv udp "$from" "$to")"
  FIG+=" ${c}_tcp=$tcp ${c}_udp=$udp ${c}_lost=$lost"
  local e
  e=$(errors_of_clients)
  if [[ -n $e && $e != "$ERRS_SEEN" ]]; then
    log "CLIENT ERROR during $c: $(tr '\n' ' ' <<<"${e#"$ERRS_SEEN"}")"
    ERRS+=" $c"
    ERRS_SEEN=$e
  fi
}

# one_run <i>: a fresh lab and daemon, the three cases; prints "FIGURES key=value ..." at the end.
# Runs in a subshell: ul_init's trap removes the lab and everything the run started when it ends.
one_run() {
  ul_init "restart_gap_run$1" daemon
  command -v conntrack >/dev/null 2>&1 || skip "needs the 'conntrack' tool (Debian package conntrack)"
  local variant=$UL_BUILD/uplinkd-test-variant
  [[ -x $variant ]] || skip "no $variant (cmake --build build --target uplinkd-test-variant)"
  FIG="run=$1" ERRS="" ERRS_SEEN=""
  rs_setup
  rs_start
  ul_wait_tracking wan1 wan2
  rs_traffic
  sleep "$SETTLE_S"
  [[ -z $(errors_of_clients) ]] || fail "a client failed before any restart: $(errors_of_clients)"
  local t0 t1 fd0 fd1 len_k len_u pid

  # kill -9, restarted at once (as a supervisor would), adopts the datapath.
  fd0=$(fd_count)
  t0=$(now_ns)
  rs_kill9
  rs_start
  t1=$(now_ns)
  grep -q "adopting the datapath" "$UPLINKD_LOG" || fail "the restart after kill -9 did not adopt the datapath"
  fd1=$(fd_count)
  len_k=$((t1 - t0 + (BEFORE_S + AFTER_S) * 1000000000))
  FIG+=" kill9_ready_s=$(awk -v d="$((t1 - t0))" 'BEGIN { printf "%.2f", d / 1e9 }') kill9_fds=$fd0/$fd1"
  measure kill9 "$((t0 - BEFORE_S * 1000000000))" "$((t1 + AFTER_S * 1000000000))"

  # Upgrade: the binary replaced by rename, restarted in place.
  pid=$UPLINKD_PID
  cp "$variant" "$UL_TMP/bin/.uplinkd.new"
  fd0=$(fd_count)
  t0=$(now_ns)
  mv -f "$UL_TMP/bin/.uplinkd.new" "$RS_BIN"
  ctl restart >/dev/null || fail "uplinkctl restart failed: $(tail -20 "$UPLINKD_LOG")"
  t1=$(now_ns)
  uplinkd_alive || fail "uplinkd is gone after uplinkctl restart"
  [[ $(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["pid"])') == "$pid" ]] ||
    fail "uplinkctl restart changed the daemon's pid"
  fd1=$(fd_count)
  len_u=$((t1 - t0 + (BEFORE_S + AFTER_S) * 1000000000))
  FIG+=" upgrade_ready_s=$(awk -v d="$((t1 - t0))" 'BEGIN { printf "%.2f", d / 1e9 }') upgrade_fds=$fd0/$fd1"
  measure upgrade "$((t0 - BEFORE_S * 1000000000))" "$((t1 + AFTER_S * 1000000000))"

  # Baseline: the same window length, nothing happens (the window opened 1 s before "now").
  local len=$((len_k > len_u ? len_k : len_u))
  t0=$(now_ns)
  FIG+=" window_s=$(awk -v d="$len" 'BEGIN { printf "%.2f", d / 1e9 }')"
  measure baseline "$((t0 - BEFORE_S * 1000000000))" "$((t0 - BEFORE_S * 1000000000 + len))"

  [[ $(iface_get wan1 transitions) == 0 ]] || FIG+=" note=wan1_transitions_$(iface_get wan1 transitions)"
  echo "FIGURES $FIG errors=${ERRS:-none}"
  stop_uplinkd || fail "uplinkd did not stop cleanly on SIGTERM (exit $UPLINKD_EXIT)"
  [[ -z $ERRS ]] || exit 3
  exit 0
}

OUT=$(mktemp -d /tmp/restart_gap_bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
ok=0 failed=0 errored=0
for ((i = 1; i <= N; i++)); do
  (one_run "$i") >"$OUT/run$i.log" 2>&1
  rc=$?
  line=$(grep -o 'FIGURES .*' "$OUT/run$i.log" | tail -n 1)
  if [[ -n $line ]] && ((rc == 0 || rc == 3)); then
    ok=$((ok + 1))
    echo "${line#FIGURES }" >>"$OUT/figures"
    echo "run $i/$N: ${line#FIGURES }"
    if ((rc == 3)); then
      errored=$((errored + 1))
      echo "!!!!! run $i/$N: A CLIENT CONNECTION FAILED across a restart:" >&2
      grep 'CLIENT ERROR' "$OUT/run$i.log" >&2
    fi
  elif ((rc == 77)); then
    grep -m1 'SKIP' "$OUT/run$i.log" >&2
    exit 77
  else
    failed=$((failed + 1))
    echo "run $i/$N: FAILED (exit $rc): $(grep -m1 'FAIL:' "$OUT/run$i.log")"
    cp "$OUT/run$i.log" "/tmp/restart_gap_bench.run$i.failed.log" && echo "  log: /tmp/restart_gap_bench.run$i.failed.log"
  fi
done
((ok > 0)) || { echo "no successful run" >&2; exit 1; }

echo
echo "restart gaps over $ok run(s) ($failed failed), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
echo "(ms: longest gap between TCP echoes / UDP datagrams received, window ${BEFORE_S} s before to ${AFTER_S} s after the daemon answers again)"
python3 - "$OUT/figures" <<'PY'
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
cases = [("kill9", "kill -9 + restart"), ("upgrade", "upgrade, uplinkctl restart"), ("baseline", "no restart")]
figs = [("tcp", "TCP echo gap, ms", "%8.1f"), ("udp", "UDP gap, ms", "%8.1f"),
        ("lost", "UDP datagrams lost", "%8d"), ("ready_s", "seconds until it answers", "%8.2f")]
print("| %-26s | %-24s | %8s | %8s | %8s |" % ("case", "figure", "min", "median", "max"))
print("|%s|%s|%s|%s|%s|" % ("-" * 28, "-" * 26, "-" * 10, "-" * 10, "-" * 10))
for c, cname in cases:
    for k, kname, f in figs:
        v = sorted(float(r[c + "_" + k]) for r in rows if c + "_" + k in r)
        if v:
            print(("| %-26s | %-24s | " + " | ".join([f] * 3) + " |") % (cname, kname, v[0], statistics.median(v), v[-1]))
PY
if ((errored > 0)); then
  echo
  echo "!!!!! $errored run(s) had a client connection fail across a restart (see above) !!!!!" >&2
  exit 1
fi
((failed == 0))
