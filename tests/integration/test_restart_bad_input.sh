#!/usr/bin/env bash
# Restarts that find something unexpected (issue 11, "Bad input"). Each gets one clear log line, and no
# connection of a healthy uplink is lost. On the scenario of restart_scenario.sh (clients through wan1):
#   1. a lock left behind by a dead process (kill -9): the restart names the dead pid and takes over;
#   2. foreign files in the instance's pin directory (a map pinned by someone else, a directory): named
#      once, left alone, and still there after a full stop;
#   3. a configuration changed between the crash and the restart (a rule sending one destination to
#      wan2 added): adopted, then applied as a reload would (the new rule steers a new flow by wan2);
#   4. pins of an older, incompatible map layout (daemon_state says layout 1): the restart says it
#      starts with fresh maps and what is lost; the established connections keep working.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init restart_bad_input daemon
source "$(dirname "${BASH_SOURCE[0]}")/restart_scenario.sh"
command -v conntrack >/dev/null 2>&1 || skip "needs the 'conntrack' tool (Debian package conntrack)"
command -v bpftool >/dev/null 2>&1 || skip "needs bpftool (to pin a foreign map, to age daemon_state)"

P=$UL_PREFIX
PIN_DIR=/sys/fs/bpf/uplinkd/$P

# log_lines_since <line count before> <pattern>: the daemon's log lines after that point that match.
log_lines_since() { tail -n "+$(($1 + 1))" "$UPLINKD_LOG" | grep -E "$2" || true; }

rs_setup
rs_start
ul_wait_tracking wan1 wan2
rs_traffic
sleep 1

# ---- 1. a lock left behind by a dead process ----------------------------------------------------------
dead_pid=$UPLINKD_PID
rs_kill9
# ---- 2. foreign files in the pin directory -------------------------------------------------------------
rtr_exec bpftool map create "$PIN_DIR/foreign_map" type array key 4 value 4 entries 1 name foreign_map ||
  fail "cannot pin a foreign map"
rtr_exec mkdir "$PIN_DIR/foreign_dir" || fail "cannot make a foreign directory on bpffs"
n=$(wc -l <"$UPLINKD_LOG")
rs_start
sleep "$(ul_scaled 2)"
lock_line=$(log_lines_since "$n" "last held by pid $dead_pid, which is no longer running")
[[ $(wc -l <<<"$lock_line") == 1 && -n $lock_line ]] || fail "no single line about the dead holder $dead_pid: $(tail -n "+$((n + 1))" "$UPLINKD_LOG")"
foreign_line=$(log_lines_since "$n" "foreign_dir, foreign_map")
[[ $(wc -l <<<"$foreign_line") == 1 && -n $foreign_line ]] || fail "no single line naming the foreign files: $(tail -n "+$((n + 1))" "$UPLINKD_LOG")"
[[ -z $(rs_client_errors) ]] || fail "a client failed: $(rs_client_errors)"
pass "a dead holder's lock: '$lock_line'"
pass "foreign files: '$foreign_line'"

# ---- 3. a configuration changed between the crash and the restart --------------------------------------
rs_kill9
cat >>"$RS_CFG" <<'EOF'

config member 'wan2_only_m'
	option interface 'wan2'

config policy 'wan2_only'
	list use_member 'wan2_only_m'

config rule 'core_by_wan2'
	option dest_ip '203.0.113.3'
	option use_policy 'wan2_only'
EOF
# The new rule must come before default_rule: rewrite the file with it first.
python3 - "$RS_CFG" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
rule = re.search(r"\nconfig rule 'core_by_wan2'\n(\t.*\n?)+", text).group(0)
text = text.replace(rule, "\n")
text = text.replace("\nconfig rule 'default_rule'", rule.rstrip("\n") + "\n\nconfig rule 'default_rule'", 1)
open(path, "w").write(text)
PY
HOOKS0=$(hook_count)
n=$(wc -l <"$UPLINKD_LOG")
rs_start
sleep "$(ul_scaled 2)"
log_lines_since "$n" "adopting the datapath" | grep -q . || fail "the restart with a changed configuration did not adopt"
rs_bg srv3 core timeout 60 python3 "$RS_TOOLS/stale_server.py" --bind 203.0.113.3 --tcp-port 5003 --duration 50
rs_wait_line srv3 '"listen"' 5 || fail "second core server did not start: $(cat "$UL_TMP/srv3.err")"
ip netns exec "$P-lan" timeout 5 python3 -c '
import socket; s = socket.create_connection(("203.0.113.3", 5003), timeout=3); s.sendall(b"x\n"); s.recv(8)' ||
  fail "a new flow to 203.0.113.3 failed after the restart with the new rule"
rs_wait_line srv3 '"accept"' 3 || fail "the core saw no connection on 203.0.113.3"
peer=$(grep '"accept"' "$UL_TMP/srv3.out" | head -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer"])')
[[ $peer == 198.51.100.2 ]] || fail "the new rule did not apply: the flow to 203.0.113.3 came from $peer, not wan2's 198.51.100.2"
[[ -z $(rs_client_errors) ]] || fail "a client failed across the restart with a changed configuration: $(rs_client_errors)"
[[ $(hook_count) == "$HOOKS0" ]] || fail "hook events across the restart: $(hook_since "$HOOKS0")"
pass "a configuration changed while no daemon ran: adopted, the new rule steers a new flow by wan2, nothing else moved"

# ---- 4. pins of an older, incompatible layout ---------------------------------------------------------
rs_kill9
# daemon_state of layout 1 (pid 0): as an older uplinkd would have left it.
rtr_exec bpftool map update pinned "$PIN_DIR/daemon_state" key 0 0 0 0 \
  value 1 0 0 0  0 0 0 0  0 0 0 0 0 0 0 0  0 0 0 0  0 0 0 0 || fail "cannot age daemon_state"
# First a start that fails after attaching (test-only injection): the older layout's maps must be
# back under their names, the very maps the predecessor's programs use, and forwarding unchanged.
pinned_map_id() { rtr_exec bpftool -j map show pinned "$PIN_DIR/$1" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' || true; }
flows_id=$(pinned_map_id flows)
[[ -n $flows_id ]] || fail "no flows map pinned before the layout-1 restart"
injected_rc=0
rtr_exec env UPLINKD_TEST_FAIL_START=layout timeout 20 "$UPLINKD" --config "$RS_CFG" --socket "$UL_TMP/injected.sock" \
  --instance "$P" --foreground --hook "$UL_HOOK" >"$UL_TMP/injected.out" 2>&1 || injected_rc=$?
[[ $injected_rc == 1 ]] || fail "the failing start over layout-1 pins exited $injected_rc: $(cat "$UL_TMP/injected.out")"
[[ $(pinned_map_id flows) == "$flows_id" ]] ||
  fail "after a failed start over layout-1 pins, flows is map $(pinned_map_id flows), not the predecessor's $flows_id"
rtr_exec sh -c "ls $PIN_DIR | grep -c '_old$'" | grep -qx 0 || fail "set-aside maps left by the failed start: $(rtr_exec ls "$PIN_DIR")"
[[ -z $(rs_client_errors) ]] || fail "a client failed across the failed start: $(rs_client_errors)"
rs_new_flow_works || fail "a new TCP connection failed after the failed start over layout-1 pins"
pass "a start over layout-1 pins that fails puts the predecessor's maps back (flows is map $flows_id again)"
n=$(wc -l <"$UPLINKD_LOG")
rs_start
sleep "$(ul_scaled 3)"
layout_line=$(log_lines_since "$n" "map layout version 1, this build's is")
[[ $(wc -l <<<"$layout_line") == 1 && -n $layout_line ]] || fail "no single line about the older layout: $(tail -n "+$((n + 1))" "$UPLINKD_LOG")"
grep -q "lost:" <<<"$layout_line" || fail "the layout line does not say what was lost: $layout_line"
grep -Eq '\(([1-9][0-9]*) set aside\)' <<<"$layout_line" ||
  fail "the older layout's maps were not set aside (so not restorable had the start failed): $layout_line"
# The fresh maps' daemon_state says this build's layout: the first 4 bytes, little-endian.
state=$(rtr_exec bpftool -j map lookup pinned "$PIN_DIR/daemon_state" key 0 0 0 0 2>/dev/null |
  python3 -c 'import json,sys; v=json.load(sys.stdin)["value"]; print(int(v[0],16) | int(v[1],16) << 8)' || true)
[[ $state == 2 ]] || fail "daemon_state's layout after starting fresh is '$state', expected 2"
rtr_exec sh -c "ls $PIN_DIR | grep -c '_old$'" | grep -qx 0 || fail "set-aside maps left after the start succeeded: $(rtr_exec ls "$PIN_DIR")"
[[ -z $(rs_client_errors) ]] || fail "a client failed across the restart with an older layout: $(rs_client_errors)"
rs_new_flow_works || fail "a new TCP connection failed after starting with fresh maps"
[[ $(iface_get wan1 state) == online ]] || fail "wan1 is $(iface_get wan1 state) after starting with fresh maps"
pass "pins of layout 1: '$layout_line'; the connections kept working"

# ---- a full stop leaves the foreign files --------------------------------------------------------------
stop_uplinkd || fail "uplinkd did not stop cleanly"
rtr_exec test -e "$PIN_DIR/foreign_map" || fail "the full stop removed a foreign map pin"
rtr_exec test -e "$PIN_DIR/flows" && fail "the full stop left uplinkd's own pins"
left=$(rtr_exec ls "$PIN_DIR" | tr '\n' ' ')
[[ $left == "foreign_dir foreign_map " ]] || fail "after the full stop the pin directory holds '$left', expected only the foreign files"
pass "a full stop removes uplinkd's pins and leaves the foreign files ($left)"
