#!/usr/bin/env bash
# The field report's banIP story (wireguard-stuck-on-backup-uplink.txt): an ICMP limiter on the
# primary uplink (`limit rate over 25/second burst 5 packets drop`) plus a busy persistent pinger
# make mwan3-style one-shot pings fail although the line is fine. uplinkd must not see an outage.
#   phase 1 (≥ 60 s): banIP rule in the router's prerouting + burst pinger; uplinkd tracks wan1 every
#            0.5 s. Assert: wan1 0 transitions and online, no disconnect hook, banIP counter > 0.
#            Printed for contrast: one-shot ping failures over the same period.
#   phase 2 (~20 s): no banIP rule; uplinkd's own limiter instead (icmp_limit_rate 25,
#            icmp_limit_burst 5 on wan1) + burst pinger. Assert: 0 transitions, online.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init banip_no_false_outage daemon

P=$UL_PREFIX
PHASE1=${UL_PHASE1_SECONDS:-62}
PHASE2=${UL_PHASE2_SECONDS:-22}
INTERVAL=0.5
ul_lab_up
make_hook

SAMPLES_BAD=
# shellcheck disable=SC2317 # called through ONESHOT_CALLBACK
sample() {
  local s
  s=$(ul_status_summary | grep -E '^wan1 ')
  info "  t+$(fsub "$PHASE_T0" "$(now)")s $s | banIP drops $(lab_banip_drops "$P")"
  [[ $s == *"state=online "* ]] || SAMPLES_BAD+="t+$(fsub "$PHASE_T0" "$(now)")s: $s; "
  uplinkd_alive || fail "uplinkd exited during the phase"
}

# check_phase <name>: the assertions common to both phases.
check_phase() {
  local name=$1 tr st sent replied lost ev
  ul_snapshot  # one status for all the values below, so sent and replied are from the same instant
  tr=$(iface_get wan1 transitions) || fail "$name: no 'transitions' for wan1 in uplinkctl status --json"
  st=$(iface_get wan1 state) || fail "$name: no 'state' for wan1"
  sent=$(iface_get wan1 probes.sent)
  replied=$(iface_get wan1 probes.replied)
  lost=$(iface_get wan1 probes.lost)
  info "$name: wan1 state=$st transitions=$tr probes sent=$sent replied=$replied lost=$lost" \
    "loss_pct=$(iface_get wan1 loss_pct) rtt_ms=$(iface_get wan1 rtt_ms)"
  ul_snapshot_end
  ((replied <= sent)) || fail "$name: more replies ($replied) than probes sent ($sent)"
  ev=$(awk '$3 == "wan1" && ($2 == "disconnecting" || $2 == "disconnected" || $2 == "ifdown")' "$UL_HOOK_LOG")
  [[ -z $SAMPLES_BAD ]] || fail "$name: wan1 was seen not online: $SAMPLES_BAD"
  [[ $tr == 0 ]] || fail "$name: wan1 made $tr transitions under the ICMP limiter (expected 0)"
  [[ $st == online ]] || fail "$name: wan1 is '$st' (expected online)"
  [[ -z $ev ]] || fail "$name: hook saw wan1 going down: $ev"
  if ! [[ $replied =~ ^[0-9]+$ ]] || ((replied == 0)); then
    fail "$name: no probe reply counted for wan1 (replied=$replied)"
  fi
  pass "$name: wan1 online with 0 transitions and no down event ($replied of $sent probes answered)"
}

# ---------------------------------------------------------------------------------------------
log "phase 1: banIP limiter on wan1 + burst pinger, uplinkd interval $INTERVAL s, for $PHASE1 s"
CFG1=$UL_TMP/phase1.conf
ul_write_config "$CFG1" "$INTERVAL" 1 3 3
lab_banip "$P" on || fail "lab_banip on failed"
start_burst_pinger "$P" $((PHASE1 + 60)) 0.01 203.0.113.3
sleep 1
drops_before=$(lab_banip_drops "$P")
((drops_before > 0)) || info "(the limiter has not dropped anything yet)"
start_uplinkd "$P" "$CFG1" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2

PHASE_T0=$(now)
ONESHOT_CALLBACK=sample ONESHOT_EVERY=5
oneshot_pings "$P" wan1 203.0.113.1 100000 "$PHASE1" 0.2
drops=$(lab_banip_drops "$P")
info "phase 1 lasted $(fsub "$PHASE_T0" "$(now)") s of tracking (plus the start-up wait)"
info "for contrast, mwan3-style one-shot pings via wan1: $ONESHOT_FAIL of $ONESHOT_TOTAL failed"
info "burst pinger: $(stop_burst_pinger)"
info "banIP counter: $drops packets dropped"
((drops > 0)) || fail "phase 1: the banIP counter shows no drop, the limiter never bit"
pass "phase 1: banIP dropped $drops ICMP packets on wan1"
((ONESHOT_FAIL > 0)) || info "NOTE: no one-shot ping failed in phase 1 (the limiter was mild this run)"
check_phase "phase 1"

stop_uplinkd || fail "uplinkd did not stop on SIGTERM within 10 s"
[[ $UPLINKD_EXIT == 0 ]] || fail "uplinkd exited with status $UPLINKD_EXIT on SIGTERM"

# ---------------------------------------------------------------------------------------------
log "phase 2: no banIP; uplinkd's own XDP limiter (icmp_limit_rate 25, icmp_limit_burst 5) + burst pinger, $PHASE2 s"
lab_banip "$P" off || fail "lab_banip off failed"
CFG2=$UL_TMP/phase2.conf
ul_write_config "$CFG2" "$INTERVAL" 1 3 3 "	option icmp_limit_rate '25'
	option icmp_limit_burst '5'"
: >"$UL_HOOK_LOG"
SAMPLES_BAD=
start_burst_pinger "$P" $((PHASE2 + 60)) 0.01 203.0.113.3
start_uplinkd "$P" "$CFG2" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
PHASE_T0=$(now)
oneshot_pings "$P" wan1 203.0.113.1 100000 "$PHASE2" 0.2
info "one-shot pings via wan1 (not uplinkd's probes, so the limiter may drop them): $ONESHOT_FAIL of $ONESHOT_TOTAL failed"
burst=$(stop_burst_pinger)
info "burst pinger (its replies are what the limiter is for): $burst"
[[ $burst == *" 0% packet loss"* ]] && info "NOTE: uplinkd's limiter dropped none of the burst pinger's replies"
check_phase "phase 2"
exit 0
