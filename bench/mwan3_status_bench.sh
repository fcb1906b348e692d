#!/usr/bin/env bash
# What one ubus `mwan3 status` costs (issue 12): the rpcd exec plugin
# (packaging/openwrt/uplinkd/files/mwan3.rpcd) run as rpcd runs it, `call status` with
# {"section":"interfaces"} on stdin (what LuCI's overview and prometheus-node-exporter-lua-mwan3
# send), against a daemon tracking the lab's two uplinks at interval 1 s. Beside it, in the same run
# and interleaved (a b c a b c ...):
#   version   `uplinkctl --version`: starting the process, no request (the floor for any exec plugin)
#   request   `uplinkctl status --json`: the one request, printed as the daemon sends it
#   plugin    the plugin's `call status` (sh, uplinkctl, one request, mwan3's JSON)
# Prints the median and 95th percentile in ms of each and the plugin's median over version's.
#
#   sudo bench/mwan3_status_bench.sh [calls per case=200]     (UPLINKD_BUILD=dir for another build)
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
N=${1:-200}
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [calls >= 1]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: must run as root (network namespaces)" >&2; exit 1; }
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export UPLINKD_SOURCE=${UPLINKD_SOURCE:-$SRC}
export UPLINKD_BUILD=${UPLINKD_BUILD:-$SRC/build}
source "$SRC/tests/integration/lib.sh"
ul_init mwan3_status_bench daemon
ul_lab_up
cfg=$UL_TMP/uplinkd.conf
ul_write_config "$cfg" 1 1 3 3
start_uplinkd "$UL_PREFIX" "$cfg" --no-hook
ul_wait_tracking wan1 wan2
log "$N calls per case, interleaved"
rtr_exec env UPLINKD_CTL="$UPLINKCTL" UPLINKD_SOCKET="$UPLINKD_SOCK" python3 - "$N" "$UPLINKCTL" \
  "$UL_SOURCE/packaging/openwrt/uplinkd/files/mwan3.rpcd" <<'PY' || fail "the measurement failed"
import statistics, subprocess, sys, time
n, ctl, plugin = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cases = {
    "version": ([ctl, "--version"], None),
    "request": ([ctl, "status", "--json"], None),
    "plugin": ([plugin, "call", "status"], b'{"section":"interfaces"}'),
}
ms = {k: [] for k in cases}
for _ in range(n):
    for name, (argv, stdin) in cases.items():
        t = time.perf_counter()
        r = subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ms[name].append((time.perf_counter() - t) * 1000)
        if r.returncode != 0:
            sys.exit("%s failed: %s" % (name, r.stderr.decode()))
for name, v in ms.items():
    v.sort()
    print("%-8s median %6.2f ms   p95 %6.2f ms   (n=%d)" % (name, statistics.median(v), v[int(0.95 * (len(v) - 1))], len(v)))
print("plugin / version (medians): %.2f" % (statistics.median(ms["plugin"]) / statistics.median(ms["version"])))
PY
stop_uplinkd
