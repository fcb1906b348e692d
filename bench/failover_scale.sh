#!/usr/bin/env bash
# The daemon at scale (issue 14, item 7): a failover with 1,000,000 tracked flows and 250,000
# conntrack entries on the failing uplink, while both uplinks are probed every 0.1 s. Says whether
# the daemon's loop was ever held more than 10 ms, and how late the probes left around the failover.
#
#   sudo bench/failover_scale.sh [flows=1000000] [conntrack=250000]      (UPLINKD_BUILD=dir)
#
# On the lab: uplinkd with flow_table_size 1048576, wan1 and wan2 probed at interval 0.1, timeout
# 0.3, down 3. Then, in the router:
#   - bench/fill_flows writes flows/4 TCP flows on wan1, each with a fresh tcp_seen entry (an idle
#     client the daemon must reset at failover), and the other 3/4 as UDP flows on wan2;
#   - `conntrack -R` loads `conntrack` TCP entries with wan1's mark;
#   - wan1's ISP stops forwarding (lab_outage): wan1 goes offline; the daemon's scan resets the
#     idle clients (RSTs out of lan0) and its conntrack thread deletes the entries by mark.
# Read from `uplinkctl status --json` just before the outage and after the scan and the conntrack
# delete are done: the loop's turns (daemon.loop: longest turn, turns over 10 ms) and each uplink's
# probe send lateness (histogram of how late probes left against their schedule). Takes about 2 min.
set -uo pipefail
FLOWS=${1:-1000000}
CT=${2:-250000}
[[ $FLOWS =~ ^[0-9]+$ && $CT =~ ^[0-9]+$ ]] || { echo "usage: $0 [flows] [conntrack entries]" >&2; exit 2; }
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export UPLINKD_SOURCE=${UPLINKD_SOURCE:-$SRC}
export UPLINKD_BUILD=${UPLINKD_BUILD:-$SRC/build}
# shellcheck source-path=SCRIPTDIR
source "$SRC/tests/integration/lib.sh"
ul_init failover_scale daemon
FILL=$UPLINKD_BUILD/fill_flows
[[ -x $FILL ]] || skip "no $FILL (build the fill_flows target)"
command -v conntrack >/dev/null || skip "needs conntrack (conntrack package)"

P=$UL_PREFIX
ul_lab_up
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" 0.1 0.3 3 3
sed -i "s/^\toption mmx_mask '0x3F00'$/&\n\toption flow_table_size '1048576'/" "$CFG"
start_uplinkd "$P" "$CFG"
wait_uplinkd_ready 30 || fail "uplinkd did not answer"
wait_iface_state wan1 online 20 || fail "wan1 not online"
wait_iface_state wan2 online 20 || fail "wan2 not online"

failing=$((FLOWS / 4))
lan_ifindex=$(rtr_exec cat /sys/class/net/lan0/ifindex)
out=$(rtr_exec "$FILL" "/sys/fs/bpf/uplinkd/$UPLINKD_INSTANCE" 1 "$failing" 2 $((FLOWS - failing)) "$lan_ifindex") ||
  fail "fill_flows: $out"
info "$out"

mark=$(printf '%d' 0x100)
ct_file=$UL_TMP/conntrack.txt
python3 - "$CT" "$mark" >"$ct_file" <<'PY'
import sys
n, mark = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(f"-A -t 600 -s 10.{128 + i // 65536 % 64}.{i // 256 % 256}.{i % 256} -d 203.0.113.{i % 4 + 1} "
          f"-p tcp --sport {1024 + i // 4194304} --dport 443 --state ESTABLISHED -m {mark}")
PY
t0=$(now)
ip netns exec "$P-rtr" conntrack -R "$ct_file" >/dev/null 2>&1
loaded=$(ip netns exec "$P-rtr" conntrack -C)
info "conntrack -R: $loaded entries in the router after $(fsub "$t0" "$(now)") s"

before=$UL_TMP/before.json after=$UL_TMP/after.json
sleep 2 # a few cycles with the full tables
ctl status --json >"$before" || fail "status --json"
lines_before=$(wc -l <"$UPLINKD_LOG")
t_out=$(now)
lab_outage "$P" isp1 on || fail "lab_outage isp1 on failed"
wait_iface_state wan1 offline 20 || fail "wan1 not offline within 20 s of the outage"
info "wan1 offline $(fsub "$t_out" "$(now)") s after the outage began"
# The scan's line, then the conntrack thread's.
for ((i = 0; i < 600; i++)); do
  tail -n +"$lines_before" "$UPLINKD_LOG" | grep -q 'interface wan1: [0-9]* idle TCP client(s) reset' &&
    tail -n +"$lines_before" "$UPLINKD_LOG" | grep -q 'interface wan1: [0-9]* conntrack entries .* deleted in' && break
  sleep 0.1
done
ctl status --json >"$after" || fail "status --json"
tail -n +"$lines_before" "$UPLINKD_LOG" | grep -E 'wan1|conntrack' | sed 's/^/    | /' | head -n 12
left=$(ip netns exec "$P-rtr" conntrack -C)
info "conntrack entries left in the router: $left (of $loaded)"

python3 - "$before" "$after" "$FLOWS" "$CT" <<'PY'
import json, sys
b, a = (json.load(open(p)) for p in sys.argv[1:3])
flows, ct = sys.argv[3:5]
lb, la = b["daemon"]["loop"], a["daemon"]["loop"]
hb, ha = lb["busy_ms"], la["busy_ms"]
bounds = ha["le_ms"]
turns = la["turns"] - lb["turns"]
over = la["turns_over_10ms"] - lb["turns_over_10ms"]
def diff(x, y):
    return [q - p for p, q in zip(x["counts"], y["counts"])]
def pct(counts, bounds, q):
    total = sum(counts)
    acc = 0
    for c, le in zip(counts, bounds + [float("inf")]):
        acc += c
        if acc >= q * total:
            return le
    return float("inf")
d = diff(hb, ha)
print(f"RESULT flows={flows} conntrack={ct} loop_turns={turns} loop_turns_over_10ms={over} "
      f"loop_busy_p99_le_ms={pct(d, bounds, 0.99)} loop_busy_max_ms_since_start={la['busy_max_ms']:.2f} "
      f"loop_cpu_turns_over_10ms={la['cpu_turns_over_10ms'] - lb['cpu_turns_over_10ms']} "
      f"loop_cpu_max_ms_since_start={la['cpu_max_ms']:.2f}")
parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(la["part_max_ms"].items(), key=lambda kv: -kv[1]))
print(f"RESULT longest part of a turn since start, ms: {parts}")
for name in ("wan1", "wan2"):
    ib = next(i for i in b["interfaces"] if i["name"] == name)
    ia = next(i for i in a["interfaces"] if i["name"] == name)
    lb_, la_ = ib["probe_lateness"], ia["probe_lateness"]
    dl = diff(lb_, la_)
    n = sum(dl)
    print(f"RESULT {name}: probes_sent={n} lateness_p50_le_ms={pct(dl, la_['le_ms'], 0.5)} "
          f"p99_le_ms={pct(dl, la_['le_ms'], 0.99)} max_ms_since_start={la_['max_ms']:.2f} "
          f"late_over_10ms={sum(c for c, le in zip(dl, la_['le_ms'] + [float('inf')]) if le > 10)}")
PY
lab_outage "$P" isp1 off
stop_uplinkd || fail "uplinkd did not stop cleanly"
pass "failover at scale measured"
