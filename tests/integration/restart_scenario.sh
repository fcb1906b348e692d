# shellcheck shell=bash source-path=SCRIPTDIR
# shellcheck disable=SC2034 # globals set here are read by the test and the benchmark
# The crash/restart/upgrade scenario shared by test_restart.sh and bench/restart_gap_bench.sh.
# Source it after lib.sh and ul_init; it only defines things.
#
# A router with two uplinks (wan1 primary, wan2 backup), one bpffs that outlives each daemon (the lib's
# holder), and through wan1: a TCP client sending every 100 ms (echoed by the core), an idle TCP client
# blocked in recv(), and a UDP stream of 100 datagrams/s. The daemon runs from a copy of the binary in
# $UL_TMP/bin, so an upgrade can replace that file under it as a package manager does (rename over it).

RS_TOOLS=$UL_SOURCE/tests/integration/tools
RS_SERVER=203.0.113.4
RS_BIN=
RS_CFG=

# rs_config <file>: wan1 then wan2, probes every 0.5 s.
rs_config() {
  cat >"$1" <<EOF
config globals 'globals'
	option mmx_mask '0x3F00'

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

config policy 'wan1_wan2'
	list use_member 'wan1_m1'
	list use_member 'wan2_m2'

config rule 'default_rule'
	option dest_ip '0.0.0.0/0'
	option use_policy 'wan1_wan2'
EOF
  chmod 644 "$1"
}

# rs_setup: lab, hook, config, the daemon's binary copied to $UL_TMP/bin/uplinkd.
rs_setup() {
  ul_lab_up
  make_hook
  RS_CFG=$UL_TMP/uplinkd.conf
  rs_config "$RS_CFG"
  mkdir -p "$UL_TMP/bin"
  RS_BIN=$UL_TMP/bin/uplinkd
  cp "$UPLINKD" "$RS_BIN"
  UPLINKD=$RS_BIN
}

# rs_upgrade_in_place <binary>: replaces $RS_BIN by <binary> as a package manager does (a rename over
# the running file) and runs `uplinkctl restart`; fails unless the daemon answers afterwards with the
# same pid. Then waits 3 s (scaled) for the new datapath to settle.
rs_upgrade_in_place() {
  local pid_before=$UPLINKD_PID
  cp "$1" "$UL_TMP/bin/.uplinkd.new"
  mv -f "$UL_TMP/bin/.uplinkd.new" "$RS_BIN"
  ctl restart || fail "uplinkctl restart failed: $(tail -20 "$UPLINKD_LOG")"
  uplinkd_alive || fail "uplinkd is gone after the restart in place"
  [[ $(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["pid"])') == "$pid_before" ]] ||
    fail "the restart in place changed the daemon's pid"
  sleep "$(ul_scaled 3)"
}

# rs_start: the daemon from $RS_BIN; waits until it answers (bounded by 15 s).
rs_start() {
  start_uplinkd "$UL_PREFIX" "$RS_CFG" --hook "$UL_HOOK"
  wait_uplinkd_ready 15 || fail "uplinkd did not answer after its start"
}

# rs_bg <name> <node> cmd...: background tool in a lab node, JSON lines in $UL_TMP/<name>.out.
rs_bg() {
  local name=$1 node=$2
  shift 2
  ip netns exec "$UL_PREFIX-$node" "$@" </dev/null >"$UL_TMP/$name.out" 2>"$UL_TMP/$name.err" &
  ul_bg_add $!
  eval "RS_PID_$name=$!"
}

# rs_wait_line <name> <pattern> <seconds>: until the tool's output has a line matching the pattern.
rs_wait_line() {
  local i n
  n=$(awk -v s="$(ul_scaled "$3")" 'BEGIN { printf "%d", s * 20 }')
  for ((i = 0; i < n; i++)); do
    grep -q "$2" "$UL_TMP/$1.out" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# rs_traffic: the core's echo server, then the three clients through wan1.
rs_traffic() {
  rs_bg srv core timeout 300 python3 "$RS_TOOLS/stale_server.py" --tcp-port 5001 --udp-port 5002 --duration 280
  rs_wait_line srv '"listen"' 5 || fail "core server did not start: $(cat "$UL_TMP/srv.err")"
  rs_bg active lan timeout 300 python3 "$RS_TOOLS/stale_client.py" active "$RS_SERVER" 5001 --sport 40001 \
    --duration 280 --log-echo
  rs_bg idle lan timeout 300 python3 "$RS_TOOLS/stale_client.py" idle "$RS_SERVER" 5001 --sport 40002 --duration 280
  rs_bg udp lan timeout 300 python3 "$RS_TOOLS/stale_client.py" udp "$RS_SERVER" 5002 --sport 40003 \
    --interval 0.01 --duration 280
  local n
  for n in active idle udp; do
    rs_wait_line "$n" '"connected"' 6 || fail "client '$n' did not connect: $(cat "$UL_TMP/$n.out" "$UL_TMP/$n.err")"
  done
  rs_wait_line srv '"udp"' 5 || fail "no UDP datagram reached the core"
}

# rs_client_errors: the clients' error lines (empty: none failed).
rs_client_errors() { grep -h '"error"' "$UL_TMP/active.out" "$UL_TMP/idle.out" "$UL_TMP/udp.out" 2>/dev/null || true; }

# rs_ct_ids: "<sport> <conntrack id>" of the three clients' entries in the router, sorted.
rs_ct_ids() {
  ip netns exec "$UL_PREFIX-rtr" conntrack -L -o id 2>/dev/null |
    awk '{ sp = ""; id = ""; for (i = 1; i <= NF; i++) { if (sp == "" && $i ~ /^sport=/) sp = substr($i, 7); if ($i ~ /^id=/) id = substr($i, 4) }
           if (sp == 40001 || sp == 40002 || sp == 40003) print sp, id }' | sort
}

# rs_xdp_id <dev>: the id of the XDP program on the router's device (empty: none).
rs_xdp_id() {
  ip -n "$UL_PREFIX-rtr" -d link show dev "$1" 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "prog/xdp" && $(i + 1) == "id") { print $(i + 2); exit } }'
}

# rs_tags <dev...>: "<dev> xdp <tag>" and "<dev> <direction> <tag>" for every program on the devices.
rs_tags() {
  local dev id dir
  for dev in "$@"; do
    id=$(rs_xdp_id "$dev")
    [[ -n $id ]] && echo "$dev xdp $(rtr_exec bpftool prog show id "$id" | awk '{ for (i = 1; i < NF; i++) if ($i == "tag") print $(i + 1) }')"
    for dir in ingress egress; do
      ip netns exec "$UL_PREFIX-rtr" tc filter show dev "$dev" "$dir" 2>/dev/null |
        awk -v d="$dev" -v r="$dir" '{ for (i = 1; i < NF; i++) if ($i == "tag") print d, r, $(i + 1) }'
    done
  done
}

# rs_snapshot: everything of the router a restart must leave as it was (programs, rules, routes, nft).
rs_snapshot() {
  local dev
  for dev in wan1 wan2 lan0; do echo "xdp $dev $(rs_xdp_id "$dev")"; done
  rs_tags wan1 wan2 lan0
  ip -n "$UL_PREFIX-rtr" -4 rule show
  ip -n "$UL_PREFIX-rtr" -4 route show table all | grep -v '^local\|^broadcast' || true
  ip netns exec "$UL_PREFIX-rtr" nft list tables 2>/dev/null
}

# rs_gap_in_window <name> <event> [<from ns> <to ns>]: "<longest gap ms> <events> <lost>" over the
# events of the tool's JSON lines ($UL_TMP/<name>.out) in the window (the whole run without one). A gap
# counts when it overlaps the window, so one that begins before it or ends after it is seen whole; with
# a window, a stream that stopped counts up to its end. <lost>: holes in the "seq" numbers of the
# events in the window (UDP), -1 without any.
rs_gap_in_window() {
  python3 - "$UL_TMP/$1.out" "$2" "${3:-0}" "${4:--1}" <<'PY'
import json, sys
path, ev, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
windowed = hi >= 0
if not windowed:
    hi = float("inf")
ts, seqs = [], []
for line in open(path):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("ev") == ev:
        ts.append(d["t"])
        if lo <= d["t"] <= hi and isinstance(d.get("seq"), int) and d["seq"] >= 0:
            seqs.append(d["seq"])
ts.sort()
gaps = [b - a for a, b in zip(ts, ts[1:]) if b >= lo and a <= hi]
if windowed and ts and ts[-1] < hi:
    gaps.append(hi - max(ts[-1], lo))
n = sum(1 for t in ts if lo <= t <= hi)
lost = (max(seqs) - min(seqs) + 1 - len(set(seqs))) if seqs else -1
print("%.1f %d %d" % (max(gaps) / 1e6 if gaps else -1, n, lost))
PY
}

# rs_max_gap_ms <name> <event>: the longest gap in ms between consecutive lines of that event.
rs_max_gap_ms() {
  local gap
  read -r gap _ _ <<<"$(rs_gap_in_window "$1" "$2")"
  echo "$gap"
}

# rs_kill9: SIGKILL of the daemon's own pid (start_uplinkd execs down to it), reaped.
rs_kill9() {
  local pid=$UPLINKD_PID
  kill -KILL "$pid" 2>/dev/null || fail "no uplinkd to kill (pid $pid)"
  _ul_reap "$pid" 5 || fail "uplinkd (pid $pid) still there 5 s after SIGKILL"
  UPLINKD_PID=
  info "uplinkd (pid $pid) killed with SIGKILL"
}

# rs_new_flow_works: a new TCP connection from the LAN reaches the core and is echoed (≤ 3 s).
rs_new_flow_works() {
  ip netns exec "$UL_PREFIX-lan" timeout 5 python3 - "$RS_SERVER" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], 5001), timeout=3)
s.sendall(b"hello\n")
s.settimeout(3)
sys.exit(0 if s.recv(64) == b"hello\n" else 1)
PY
}
