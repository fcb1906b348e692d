#!/usr/bin/env bash
# Benchmark: uplinkd's CPU and resident memory while probing 4 uplinks x 4 targets at 10 Hz
# (interval 0.1 s). Builds its own two namespaces (router with 4 veth uplinks, one "isp" holding
# the targets), runs the daemon for DURATION seconds (default 60), and prints CPU % of one core and
# VmRSS. Run as root from the repository root after building: `sudo bench/daemon_load.sh [seconds]`.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${UPLINKD_BUILD:-$PWD/build}
DURATION=${1:-60}
P=ulb$$
R=$P-rtr
I=$P-isp
cleanup() {
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  ip netns del "$R" 2>/dev/null || true
  ip netns del "$I" 2>/dev/null || true
  rm -rf "$TMP"
}
TMP=$(mktemp -d)
trap cleanup EXIT INT TERM

ip netns add "$R"
ip netns add "$I"
ip -n "$I" link set lo up
ip -n "$R" link set lo up
for t in 1 2 3 4; do ip -n "$I" addr add 203.0.113.$t/32 dev lo; done
{
  echo "config globals 'globals'"
  echo "	option mmx_mask '0x3F00'"
} >"$TMP/mwan3"
for n in 1 2 3 4; do
  ip link add wan$n netns "$R" type veth peer name up$n netns "$I"
  ip -n "$R" addr add 10.0.$n.2/24 dev wan$n
  ip -n "$I" addr add 10.0.$n.1/24 dev up$n
  ip -n "$R" link set wan$n up
  ip -n "$I" link set up$n up
  cat >>"$TMP/mwan3" <<CONF
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

ip netns exec "$R" sh -c "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec $BUILD/uplinkd --foreground --no-hook --config $TMP/mwan3 --socket $TMP/sock --instance bench$$" 2>"$TMP/log" &
DPID=$!
for _ in $(seq 1 50); do [ -S "$TMP/sock" ] && break; sleep 0.1; done
sleep 2
pid=$(pgrep -f "instance bench$$" | head -n1)
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
