#!/usr/bin/env bash
# Soak: does the daemon's memory or fd count grow while its world keeps changing? uplinkd runs in the
# lab (lab/lab.sh) for N minutes under churn:
#   every  5 s  wan2's link goes down, then up again on the next turn (`ip -n <prefix>-rtr link set
#               wan2 down|up`); after "up" the main table's default route via wan2 is put back, as
#               netifd does (the kernel deletes a device's routes when it goes down);
#   every 10 s  a WireGuard peer comes or goes on the router's wireguard-go device (`wg set ... peer
#               <key> endpoint ...` / `... remove`, its endpoint alternating between two addresses),
#               next to a live tunnel to the core (keepalive 1 s);
#   every 10 s  a new short TCP connection from the LAN (a new flow; to the address config B routes
#               by wan2);
#   every 30 s  `uplinkctl reload`, alternating between two valid configs: B adds a member, a policy
#               and a rule (203.0.113.3/32 by wan2 only) and gives wan2's member another weight;
# and all along a TCP client sending every 100 ms and a UDP stream of 10 datagrams/s through wan1.
# Every 10 s the daemon's VmRSS (/proc/<pid>/status) and open fds (/proc/<pid>/fd) go into a CSV.
# At the end: first, last and max of each, the least-squares slope per hour over the second half (the
# first half is warm-up), and the verdict "no growth" when the RSS slope is below 1 MiB/h and the fds
# end within 2 of their count at the end of the warm-up, else "GROWTH" (with the fds by kind then and
# now). Then SIGTERM: the daemon must exit 0 and leave no program attached; the lab is removed.
# Runs shorter than about 10 minutes give noisy slopes: a single 4 KiB page over the 90 s second half
# of a 3-minute run is 0.16 MiB/h.
#
#   sudo bench/soak.sh [minutes=30]      (UPLINKD_BUILD=dir for another build directory)
# The CSV, the daemon's log and the fd listings are kept in /tmp/uplinkd-soak.XXXXXX (printed).
# Exit status: 0 no growth, 1 growth or a failure (the daemon died, a long-lived client failed, an
# unclean stop), 77 when something it needs is missing.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
MINUTES=${1:-30}
if ! [[ $MINUTES =~ ^[1-9][0-9]*$ ]] || ((MINUTES > 1440)); then
  echo "usage: $0 [minutes, 1-1440]" >&2
  exit 2
fi
export UPLINKD_LOG_LEVEL=${UPLINKD_LOG_LEVEL:-info} # debug would log every probe for the whole run
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
ul_init soak daemon
for t in wg wireguard-go; do command -v "$t" >/dev/null 2>&1 || skip "needs '$t' (Debian packages wireguard-tools, wireguard-go)"; done
[[ -c /dev/net/tun ]] || skip "needs /dev/net/tun (wireguard-go)"

P=$UL_PREFIX
TOTAL=$((MINUTES * 60))
SAMPLE_EVERY=10
RSS_SLOPE_MAX_MIB_H=1
FD_TOLERANCE=2
TOOLS=$UL_SOURCE/tests/integration/tools
SERVER=203.0.113.4
RDEV=wgr$$ # unique on the host: wireguard-go's UAPI sockets live in the shared /var/run/wireguard
CDEV=wgc$$
WGDIR=$UL_TMP/wg
EPS=(203.0.113.5 203.0.113.6)
KEEP=$(mktemp -d /tmp/uplinkd-soak.XXXXXX)
chmod 755 "$KEEP"
CSV=$KEEP/samples.csv

# shellcheck disable=SC2317 # run by the EXIT trap
soak_cleanup() {
  local rc=$?
  [[ -n ${UPLINKD_LOG:-} && -f ${UPLINKD_LOG:-} ]] && cp "$UPLINKD_LOG" "$KEEP/uplinkd.log"
  lab_wg_down "$P" "$RDEV" "$CDEV" "$WGDIR"
  (exit "$rc") # ul_cleanup reads the status from $?
  ul_cleanup
}
trap soak_cleanup EXIT

# soak_config <file> A|B: the lib's two-uplink config (A); B adds a member, a policy and a rule
# before the default rule, and wan2's member weighs 2 in A, 5 in B.
soak_config() {
  ul_write_config "$1" 0.5 1 3 3
  [[ $2 == B ]] || return 0
  local tmp=$1.tmp
  awk '/^config rule .default_rule./ {
         print "config member '\''wan2_only_m1'\''"; print "\toption interface '\''wan2'\''"; print "\toption metric '\''1'\''"; print ""
         print "config policy '\''wan2_only'\''"; print "\tlist use_member '\''wan2_only_m1'\''"; print "\toption last_resort '\''unreachable'\''"; print ""
         print "config rule '\''dot3_by_wan2'\''"; print "\toption dest_ip '\''203.0.113.3/32'\''"; print "\toption use_policy '\''wan2_only'\''"; print ""
       }
       { sub(/option weight .2./, "option weight '\''5'\''"); print }' "$1" >"$tmp" && mv -f "$tmp" "$1"
}

# --- lab, daemon, tunnel, long-lived traffic -------------------------------------------------------
ul_lab_up
make_hook
soak_config "$UL_TMP/config.A" A
soak_config "$UL_TMP/config.B" B
CFG=$UL_TMP/uplinkd.conf
cp "$UL_TMP/config.A" "$CFG"
for c in A B; do
  rtr_out=$("$UPLINKD" --check-config --config "$UL_TMP/config.$c" 2>&1) || fail "config $c is not valid: $rtr_out"
done
start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
out=$(lab_wg_up "$P" "$RDEV" "$CDEV" "$WGDIR" go 2>&1) || fail "WireGuard tunnel (wireguard-go): $out"
(umask 077 && wg genkey >"$WGDIR/extra.key" && wg pubkey <"$WGDIR/extra.key" >"$WGDIR/extra.pub") || fail "wg genkey"
XPUB=$(cat "$WGDIR/extra.pub")

ip netns exec "$P-core" timeout "$((TOTAL + 180))" python3 "$TOOLS/stale_server.py" --tcp-port 5001 --udp-port 5002 \
  --duration "$((TOTAL + 150))" </dev/null >"$UL_TMP/srv.out" 2>"$UL_TMP/srv.err" &
ul_bg_add $!
sleep 1
ip netns exec "$P-lan" timeout "$((TOTAL + 180))" python3 "$TOOLS/stale_client.py" active "$SERVER" 5001 --sport 40001 \
  --duration "$((TOTAL + 120))" </dev/null >"$UL_TMP/active.out" 2>"$UL_TMP/active.err" &
ul_bg_add $!
ip netns exec "$P-lan" timeout "$((TOTAL + 180))" python3 "$TOOLS/stale_client.py" udp "$SERVER" 5002 --sport 40003 \
  --interval 0.1 --duration "$((TOTAL + 120))" </dev/null >"$UL_TMP/udp.out" 2>"$UL_TMP/udp.err" &
ul_bg_add $!
sleep 2
grep -q '"connected"' "$UL_TMP/active.out" || fail "the long-lived TCP client did not connect: $(cat "$UL_TMP/active.err")"

DPID=$UPLINKD_PID
[[ $(cat "/proc/$DPID/comm" 2>/dev/null) == uplinkd* ]] || fail "pid $DPID is not uplinkd ($(cat "/proc/$DPID/comm" 2>/dev/null))"
HOOKS0=$(hook_count)

# --- the churn -------------------------------------------------------------------------------------
flaps=0 reloads_ok=0 reloads_failed=0 wg_changes=0 conns_ok=0 conns_failed=0
wan2_up=1 extra_peer=0 cfg_now=A

flap() {
  if ((wan2_up)); then
    ip -n "$P-rtr" link set wan2 down
    wan2_up=0
  else
    ip -n "$P-rtr" link set wan2 up
    ip -n "$P-rtr" route replace default via 198.51.100.1 dev wan2 metric 20 # netifd's part
    wan2_up=1
  fi
  flaps=$((flaps + 1))
}

reload() {
  local next=B out
  [[ $cfg_now == B ]] && next=A
  cp "$UL_TMP/config.$next" "$CFG.new" && mv -f "$CFG.new" "$CFG"
  if out=$(ctl reload 2>&1); then
    reloads_ok=$((reloads_ok + 1))
    cfg_now=$next
  else
    reloads_failed=$((reloads_failed + 1))
    log "reload to config $next failed: $out"
  fi
}

wg_change() {
  local ep=${EPS[$(((wg_changes / 2) % 2))]}
  if ((extra_peer)); then
    ip netns exec "$P-rtr" timeout 5 wg set "$RDEV" peer "$XPUB" remove && extra_peer=0
  else
    ip netns exec "$P-rtr" timeout 5 wg set "$RDEV" peer "$XPUB" endpoint "$ep:51820" allowed-ips 10.98.0.0/24 &&
      extra_peer=1
  fi
  wg_changes=$((wg_changes + 1))
}

new_connection() {
  if ip netns exec "$P-lan" timeout 3 bash -c 'exec 3<>/dev/tcp/203.0.113.3/5001 && echo hi >&3 && head -c 3 <&3' \
    >/dev/null 2>&1; then
    conns_ok=$((conns_ok + 1))
  else
    conns_failed=$((conns_failed + 1))
  fi
}

# sample <t>: one CSV row: seconds, VmRSS in KiB, open fds, threads.
sample() {
  local rss thr fds
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status" 2>/dev/null)
  thr=$(awk '/^Threads:/ { print $2 }' "/proc/$DPID/status" 2>/dev/null)
  fds=$(find "/proc/$DPID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "$1,${rss:-},$fds,${thr:-}" >>"$CSV"
}

# fd_kinds: the daemon's fds by what they point to (socket, anon_inode:bpf-map, ...), counted.
fd_kinds() {
  find "/proc/$DPID/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null |
    sed -E 's/:\[[0-9]+\]$//; s#^/.*#file#' | sort | uniq -c | sort -rn
}

echo "t_s,rss_kib,fds,threads" >"$CSV"
log "soak: $MINUTES min; link flap every 5 s, WireGuard peer change and a new connection every 10 s, reload every 30 s; samples in $CSV"
T0=$(date +%s.%N)
WARM=$((TOTAL / 2))
for ((k = 0; k < TOTAL; k++)); do
  # Tick k at T0 + k s; a tick that ran late is not caught up (bounded in count and in time).
  delay=$(awk -v t0="$T0" -v k="$k" -v n="$(date +%s.%N)" 'BEGIN { d = t0 + k - n; printf "%.3f", d < 0 ? 0 : (d > 1.5 ? 1.5 : d) }')
  sleep "$delay"
  fle "$(fsub "$T0" "$(now)")" "$((TOTAL + 120))" || { log "soak: behind schedule by 2 min, stopping at tick $k"; break; }
  uplinkd_alive || fail "uplinkd died during the soak at ${k} s (exit $(_ul_exit_of_dead))"
  ((k % SAMPLE_EVERY == 4)) && sample "$k"
  ((k == WARM + 4)) && fd_kinds >"$KEEP/fds.warm"
  ((k > 0 && k % 5 == 0)) && flap
  ((k % 10 == 2)) && new_connection
  ((k % 10 == 7)) && wg_change
  ((k % 30 == 17)) && reload
  ((k > 0 && k % 300 == 0)) && log "soak: $((k / 60)) min: $(tail -n 1 "$CSV")"
done
# The last sample in the same state as the others (wan2 up for 4 s, after a full cycle).
((wan2_up)) || flap
sleep 4
uplinkd_alive || fail "uplinkd died at the end of the soak"
sample "$(printf '%.0f' "$(fsub "$T0" "$(now)")")"
fd_kinds >"$KEEP/fds.end"

# --- what happened ---------------------------------------------------------------------------------
ul_snapshot
w1_tr=$(iface_get wan1 transitions) w2_tr=$(iface_get wan2 transitions) w2_state=$(iface_get wan2 state)
ul_snapshot_end
hooks=$(($(hook_count) - HOOKS0))
client_errors=$(grep -h '"error"' "$UL_TMP/active.out" "$UL_TMP/udp.out" 2>/dev/null)
udp_rx=$(grep -c '"udp"' "$UL_TMP/srv.out")
ctl flows >"$KEEP/flows.txt" 2>&1
log "churn: $flaps link flaps, $reloads_ok reloads ($reloads_failed failed), $wg_changes WireGuard peer changes," \
  "$conns_ok new connections ok, $conns_failed failed (203.0.113.3 is unreachable while config B routes it by an offline wan2)"
log "daemon: wan1 $w1_tr transitions, wan2 $w2_tr transitions (now $w2_state), $hooks hook events; $udp_rx datagrams of the UDP stream arrived"

python3 - "$CSV" "$WARM" "$RSS_SLOPE_MAX_MIB_H" "$FD_TOLERANCE" >"$KEEP/verdict.txt" <<'PY'
import csv, sys
path, warm, rss_max, fd_tol = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rows = [r for r in csv.DictReader(open(path)) if r["rss_kib"] and r["fds"]]
t = [float(r["t_s"]) for r in rows]
rss = [int(r["rss_kib"]) / 1024 for r in rows]  # MiB
fds = [int(r["fds"]) for r in rows]

def slope_per_h(xs, ys):
    n = len(xs)
    if n < 3:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx * 3600 if sxx else float("nan")

late = [i for i, x in enumerate(t) if x >= warm]
rs = slope_per_h([t[i] for i in late], [rss[i] for i in late])
fs = slope_per_h([t[i] for i in late], [fds[i] for i in late])
fd_warm = fds[late[0]] if late else fds[0]
print("samples %d over %.0f s (every 10 s); warm-up: the first %.0f s" % (len(rows), t[-1] - t[0], warm))
print("| %-10s | %8s | %8s | %8s | %8s | %14s |" % ("", "first", "warm", "last", "max", "slope per hour"))
print("|%s|%s|%s|%s|%s|%s|" % ("-" * 12, "-" * 10, "-" * 10, "-" * 10, "-" * 10, "-" * 16))
print("| %-10s | %8.2f | %8.2f | %8.2f | %8.2f | %10.3f MiB |" % ("VmRSS MiB", rss[0], rss[late[0]] if late else rss[0], rss[-1], max(rss), rs))
print("| %-10s | %8d | %8d | %8d | %8d | %14.1f |" % ("open fds", fds[0], fd_warm, fds[-1], max(fds), fs))
growth = not (rs < rss_max) or abs(fds[-1] - fd_warm) > fd_tol
if growth:
    print("verdict: GROWTH (RSS slope %.3f MiB/h, bound %g; fds %d after warm-up, %d at the end, tolerance %d)" % (rs, rss_max, fd_warm, fds[-1], fd_tol))
else:
    print("verdict: no growth (RSS slope %.3f MiB/h < %g; fds %d after warm-up, %d at the end)" % (rs, rss_max, fd_warm, fds[-1]))
sys.exit(1 if growth else 0)
PY
growth=$?
cat "$KEEP/verdict.txt"
if ((growth)); then
  echo "fds by kind after the warm-up:"
  sed 's/^/    /' "$KEEP/fds.warm"
  echo "fds by kind at the end:"
  sed 's/^/    /' "$KEEP/fds.end"
fi
log "kept in $KEEP: samples.csv, verdict.txt, fds.warm, fds.end, flows.txt, uplinkd.log"

[[ -z $client_errors ]] || fail "!!! a long-lived client through wan1 failed during the soak: $client_errors"
stop_uplinkd || fail "uplinkd did not stop cleanly on SIGTERM (exit $UPLINKD_EXIT)"
assert_no_datapath "$P" "SIGTERM after the soak" wan1 wan2 lan0
rtr_exec test ! -e "/sys/fs/bpf/uplinkd/$P" || fail "pins left after SIGTERM"
# Growth is the benchmark's finding, not a failure to diagnose: no dump of the daemon's log (kept above).
((growth == 0)) || { UL_DIAG_DONE=1 UL_NO_RESULT=1; log "result: GROWTH"; exit 1; }
exit 0
