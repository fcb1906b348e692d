#!/usr/bin/env bash
# Outage detection and recovery times, and the hook's events.
# Config: interval 1, timeout 1, down 3, up 3, failure/recovery_interval = interval, two targets,
# reliability 1. isp1 silently drops everything beyond its gateway (lab_outage), link stays up.
#   detection (outage on -> hook `disconnected wan1`) <= (down x interval + timeout) x 1.2 = 4.8 s
#   recovery  (outage off -> hook `connected wan1`)   <= (up x interval + timeout) x 1.2   = 4.8 s
#   wan1 hook sequence: disconnecting, disconnected, connecting, connected, DEVICE=wan1, clean env;
#   wan2 stays online without a transition.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init outage_detection daemon

P=$UL_PREFIX
INTERVAL=1 TIMEOUT=1 DOWN=3 UP=3
DETECT_MAX=$(fcalc "($DOWN * $INTERVAL + $TIMEOUT) * 1.2")
RECOVER_MAX=$(fcalc "($UP * $INTERVAL + $TIMEOUT) * 1.2")
ul_lab_up
make_hook
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" "$INTERVAL" "$TIMEOUT" "$DOWN" "$UP"

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
sleep 1
wan2_tr0=$(iface_get wan2 transitions) || fail "no transitions field for wan2"
wan1_tr0=$(iface_get wan1 transitions) || fail "no transitions field for wan1"
h0=$(hook_count)
info "before the outage: wan1 transitions=$wan1_tr0, wan2 transitions=$wan2_tr0, $h0 hook lines so far"

log "outage of isp1 (wan1's ISP drops everything to/from the core; gateway and link stay up)"
T0=$(now)
lab_outage "$P" isp1 on || fail "lab_outage isp1 on failed"
ts=$(wait_hook disconnected wan1 "$h0" 20) ||
  fail "no 'disconnected wan1' hook within 20 s of the outage (state now: $(iface_get wan1 state))"
detect=$(fsub "$T0" "$ts")
info "outage at $T0, hook 'disconnected wan1' at $ts: detection $detect s (bound $DETECT_MAX s)"
fle "$detect" "$DETECT_MAX" || fail "detection took $detect s, more than (down x interval + timeout) x 1.2 = $DETECT_MAX s"
pass "outage detected in $detect s <= $DETECT_MAX s"
wait_iface_state wan1 offline 2 || fail "wan1 is '$UL_LAST_STATE' after 'disconnected' (expected offline)"
pass "wan1 is offline in uplinkctl"
ul_status_summary | while read -r l; do info "  $l"; done
ctl status 2>&1 | sed 's/^/    | /'

# wan2 is unaffected while wan1 is down.
sleep 2
wan2_st=$(iface_get wan2 state)
wan2_tr=$(iface_get wan2 transitions)
[[ $wan2_st == online ]] || fail "wan2 is '$wan2_st' during wan1's outage"
[[ $wan2_tr == "$wan2_tr0" ]] || fail "wan2 made $((wan2_tr - wan2_tr0)) transitions during wan1's outage"
pass "wan2 stays online with no transition (transitions=$wan2_tr)"

h1=$(hook_count)
log "isp1 back"
T1=$(now)
lab_outage "$P" isp1 off || fail "lab_outage isp1 off failed"
ts=$(wait_hook connected wan1 "$h1" 20) ||
  fail "no 'connected wan1' hook within 20 s of the recovery (state now: $(iface_get wan1 state))"
recover=$(fsub "$T1" "$ts")
info "recovery at $T1, hook 'connected wan1' at $ts: $recover s (bound $RECOVER_MAX s)"
fle "$recover" "$RECOVER_MAX" || fail "recovery took $recover s, more than (up x interval + timeout) x 1.2 = $RECOVER_MAX s"
pass "recovery detected in $recover s <= $RECOVER_MAX s"
wait_iface_state wan1 online 3 || fail "wan1 is '$UL_LAST_STATE' after 'connected' (expected online)"
pass "wan1 is online in uplinkctl"
sleep 1

log "hook events since the outage"
hook_since "$h0" | sed 's/^/    | /'
events=$(hook_since "$h0" | awk '$3 == "wan1"')
seq=$(awk '{ print $2 }' <<<"$events" | uniq | tr '\n' ' ')
[[ $seq == "disconnecting disconnected connecting connected " ]] ||
  fail "wan1 hook sequence is '$seq' (expected: disconnecting disconnected connecting connected)"
pass "wan1 hook sequence: $seq"
baddev=$(awk '$4 != "wan1"' <<<"$events")
[[ -z $baddev ]] || fail "hook lines for wan1 without DEVICE=wan1: $baddev"
pass "every wan1 hook had INTERFACE=wan1 DEVICE=wan1"
others=$(hook_since "$h0" | awk '$3 != "wan1"')
[[ -z $others ]] || fail "hook events for other interfaces during wan1's outage: $others"
pass "no hook event for wan2"

# Clean environment: uplinkd runs the hook with env -i and ACTION, INTERFACE, DEVICE (mwan3), maybe
# PATH and FIRSTCONNECT; /bin/sh adds PWD itself. Count what the daemon passed (all but the shell's
# own PWD/OLDPWD/SHLVL/_) and look for anything inherited from the daemon's environment.
maxvars=$(awk '{ n = 0; c = split($6, v, ","); for (i = 1; i <= c; i++) if (v[i] != "" && v[i] !~ /^(PWD|OLDPWD|SHLVL|_)$/) n++; if (n > m) m = n } END { print m + 0 }' "$UL_HOOK_LOG")
rawmax=$(awk '{ if ($5 > m) m = $5 } END { print m + 0 }' "$UL_HOOK_LOG")
names=$(awk '{ print $6 }' "$UL_HOOK_LOG" | tr ',' '\n' | grep . | sort -u | tr '\n' ' ')
leak=$(grep -E "$UL_CANARY|[ ,](HOME|USER|LOGNAME|SHELL|TERM|LANG|LD_[A-Z_]*|INVOCATION_ID|UPLINKD_[A-Z_]*|UL_[A-Z_]*)," "$UL_HOOK_LOG" || true)
info "hook environment: variables seen: $names; at most $maxvars from uplinkd ($rawmax with the shell's own)"
((maxvars <= 5)) || fail "the hook's environment has $maxvars variables from uplinkd (expected <= 5: env -i)"
[[ -z $leak ]] || fail "the hook inherited the daemon's environment: $leak"
extra=$(tr ' ' '\n' <<<"$names" | grep -vxE 'ACTION|INTERFACE|DEVICE|PATH|FIRSTCONNECT|PWD|OLDPWD|SHLVL|_' | grep . | tr '\n' ' ' || true)
[[ -z $extra ]] || info "NOTE: hook variables beyond mwan3's: $extra"
pass "hook environment is clean ($maxvars variables at most, nothing inherited)"

wan2_tr=$(iface_get wan2 transitions)
[[ $wan2_tr == "$wan2_tr0" ]] || fail "wan2 made transitions during the test ($wan2_tr0 -> $wan2_tr)"
info "wan1 transitions: $wan1_tr0 -> $(iface_get wan1 transitions)"
info "summary: detection $detect s (<= $DETECT_MAX), recovery $recover s (<= $RECOVER_MAX)"
exit 0
