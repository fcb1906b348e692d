#!/usr/bin/env bash
# Failover hygiene timings, repeated: runs the hygiene half of tests/integration/test_stale_flows.sh
# N times (a fresh lab and daemon each time) and prints min / median / max of each figure, all in ms
# after the daemon's `disconnected` log line unless said otherwise:
#   active_ms    ECONNRESET of a client sending every 100 ms
#   idle_ms      ECONNRESET of a client blocked in recv()
#   udp_ms       first datagram of a UDP flow (every 100 ms) reaching the core from wan2's address
#   hook_ms      the hook's `disconnected` (runs after the daemon's resets and conntrack delete)
#   detect_ms    the log line after the outage began (interval 0.5, timeout 1, down 3)
#   hygiene_us   the daemon's own report of its stale-flow scan at `disconnected` (reading `flows`
#                and resetting idle TCP clients; conntrack is deleted on a thread), in us of work
#
#   sudo bench/failover_bench.sh [N=5]        (UPLINKD_BUILD=dir for another build directory)
# Each run takes about 30 s. Runs that fail are counted and left out of the figures.
set -uo pipefail
N=${1:-5}
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [runs >= 1]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: must run as root (network namespaces)" >&2; exit 1; }
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export UPLINKD_SOURCE=${UPLINKD_SOURCE:-$SRC}
export UPLINKD_BUILD=${UPLINKD_BUILD:-$SRC/build}
export STALE_RUNS=hygiene
OUT=$(mktemp -d /tmp/failover_bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

ok=0 failed=0
for ((i = 1; i <= N; i++)); do
  bash "$SRC/tests/integration/test_stale_flows.sh" >"$OUT/run$i.log" 2>&1
  rc=$?
  line=$(grep -o 'FIGURES .*' "$OUT/run$i.log" | tail -n 1)
  if ((rc == 0)) && [[ -n $line ]]; then
    ok=$((ok + 1))
    echo "${line#FIGURES }" >>"$OUT/figures"
    echo "run $i/$N: ${line#FIGURES }"
  elif ((rc == 77)); then
    grep -m1 'SKIP' "$OUT/run$i.log" >&2
    exit 77
  else
    failed=$((failed + 1))
    echo "run $i/$N: FAILED (exit $rc): $(grep -m1 'FAIL:' "$OUT/run$i.log")"
  fi
done
((ok > 0)) || { echo "no successful run" >&2; exit 1; }

echo
echo "failover hygiene over $ok run(s) ($failed failed), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
python3 - "$OUT/figures" <<'PY'
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
keys = ["active_ms", "idle_ms", "udp_ms", "hook_ms", "detect_ms", "hygiene_us"]
print("| %-10s | %9s | %9s | %9s |" % ("figure", "min", "median", "max"))
print("|%s|%s|%s|%s|" % ("-" * 12, "-" * 11, "-" * 11, "-" * 11))
for k in keys:
    v = sorted(float(r[k]) for r in rows if r.get(k, "") not in ("", None))
    if v:
        print("| %-10s | %9.1f | %9.1f | %9.1f |" % (k, v[0], statistics.median(v), v[-1]))
PY
