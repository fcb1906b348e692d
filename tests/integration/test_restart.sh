#!/usr/bin/env bash
# Survive crashes, respawns, upgrades and a second start without losing a connection (issue 11).
#
# The scenario of restart_scenario.sh (a client sending every 100 ms, an idle client and a UDP stream,
# all through the healthy primary wan1), then, on one lab and one bpffs:
#   1. kill -9: established and new flows work while no daemon runs; a restart adopts within 5 s:
#      no ECONNRESET, the clients' conntrack entries keep their ids, packets flow across, no hook event,
#      no transition, the same programs' maps in use;
#   2. a second daemon of the same instance is refused (exit 1, "instance NAME is already running
#      (pid N)") and the first is undisturbed;
#   3. a failing start (stop --keep-datapath, then a start whose control socket cannot be bound) exits
#      1 with one message and leaves the datapath exactly as it was; the next start adopts it;
#   4. upgrade under traffic: the binary is replaced on disk by one whose BPF programs differ
#      (uplinkd-test-variant) and `uplinkctl restart` executes it in place: same pid, every program's
#      tag changed, no connection lost, no hook event;
#   5. an outage while no daemon runs: the restart finds wan1 dead and fails over as designed (the
#      clients are reset, conntrack entries of wan1 deleted, hook events);
#   6. SIGTERM removes everything: no rule with pref 1000-3999, no pins, no XDP or tc program, no nft
#      table of uplinkd.
# The longest gaps of the TCP echoes and the UDP stream across each restart are printed (the
# benchmark bench/restart_gap_bench.sh runs this scenario for its figures).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init restart daemon
source "$(dirname "${BASH_SOURCE[0]}")/restart_scenario.sh"
command -v conntrack >/dev/null 2>&1 || skip "needs the 'conntrack' tool (Debian package conntrack)"
command -v bpftool >/dev/null 2>&1 || skip "needs bpftool (program tags)"
VARIANT=$UL_BUILD/uplinkd-test-variant
[[ -x $VARIANT ]] || skip "no $VARIANT (built with the project; cmake --build build)"

P=$UL_PREFIX
PIN_DIR=/sys/fs/bpf/uplinkd/$P

rs_setup
rs_start
ul_wait_tracking wan1 wan2
rs_traffic
sleep 1
CT0=$(rs_ct_ids)
[[ $(wc -l <<<"$CT0") == 3 ]] || fail "expected conntrack entries of the 3 clients, got: $CT0"
info "conntrack ids before: $(tr '\n' ' ' <<<"$CT0")"
HOOKS0=$(hook_count)
SNAP0=$(rs_snapshot)
TAGS0=$(rs_tags wan1 wan2 lan0)

# ---- 1. kill -9, traffic while dead, restart adopts ----------------------------------------------
rs_kill9
sleep 1
rs_new_flow_works || fail "a new TCP connection failed while no daemon ran"
[[ -z $(rs_client_errors) ]] || fail "a client failed while no daemon ran: $(rs_client_errors)"
rtr_exec test -e "$PIN_DIR/flows" || fail "the pins went with the daemon"
pass "kill -9: established and new flows work while no daemon runs; pins kept"

t0=$(now)
rs_start
ready_s=$(fsub "$t0" "$(now)")
fle "$ready_s" "$(ul_scaled 5)" || fail "the restart took $ready_s s to answer (bound 5 s)"
grep -q "adopting the datapath" "$UPLINKD_LOG" || fail "the restart did not adopt the datapath (log: $(tail -20 "$UPLINKD_LOG"))"
sleep "$(ul_scaled 3)" # several probe cycles: any false transition or reset would show now
[[ -z $(rs_client_errors) ]] || fail "a client failed across the restart: $(rs_client_errors)"
CT1=$(rs_ct_ids)
[[ $CT1 == "$CT0" ]] || fail "conntrack entries changed across the restart: before '$CT0', after '$CT1'"
[[ $(hook_count) == "$HOOKS0" ]] || fail "hook events across the restart: $(hook_since "$HOOKS0")"
# Programs replaced in place (new ids, same tags); ip rules, routes and nft tables exactly as before.
SNAP_ADOPTED=$(rs_snapshot | grep -v '^xdp ')
[[ $SNAP_ADOPTED == "$(grep -v '^xdp ' <<<"$SNAP0")" ]] ||
  fail "the adopting start changed rules, routes, nft or program tags: $(diff <(grep -v '^xdp ' <<<"$SNAP0") <(echo "$SNAP_ADOPTED"))"
[[ $(iface_get wan1 state) == online && $(iface_get wan1 transitions) == 0 ]] ||
  fail "wan1 after the restart: state $(iface_get wan1 state), transitions $(iface_get wan1 transitions)"
[[ $(iface_get wan2 state) == online ]] || fail "wan2 after the restart: $(iface_get wan2 state)"
rs_new_flow_works || fail "a new TCP connection failed after the restart"
pass "restart after kill -9: adopted in $ready_s s; no reset, conntrack ids kept, no hook event, no transition"
info "longest gap across kill -9 + restart: TCP echoes $(rs_max_gap_ms active echo) ms, UDP $(rs_max_gap_ms srv udp) ms"

# ---- 2. a second daemon of the same instance ------------------------------------------------------
XDP_BEFORE=$(rs_xdp_id wan1)
second_out=$UL_TMP/second.out
second_rc=0
rtr_exec timeout 20 "$UPLINKD" --config "$RS_CFG" --socket "$UL_TMP/second.sock" --instance "$P" \
  --foreground --no-hook >"$second_out" 2>&1 || second_rc=$?
[[ $second_rc == 1 ]] || fail "a second daemon exited $second_rc, expected 1: $(cat "$second_out")"
grep -q "instance $P is already running (pid $UPLINKD_PID)" "$second_out" ||
  fail "the second daemon's message does not name the running one: $(cat "$second_out")"
[[ $(rs_xdp_id wan1) == "$XDP_BEFORE" ]] || fail "the second daemon touched wan1's XDP program"
[[ $(hook_count) == "$HOOKS0" ]] || fail "hook events after the second start: $(hook_since "$HOOKS0")"
ctl status >/dev/null || fail "the first daemon stopped answering after the second start"
[[ -z $(rs_client_errors) ]] || fail "a client failed after the second start: $(rs_client_errors)"
pass "a second daemon is refused ($(head -1 "$second_out")); the first is undisturbed"

# ---- 3. a failing start leaves the datapath as it was ---------------------------------------------
SNAP1=$(rs_snapshot) # the restart replaced the programs: new ids, the same tags
ctl stop --keep-datapath >/dev/null || fail "uplinkctl stop --keep-datapath failed"
_ul_reap "$UPLINKD_PID" 15 || fail "uplinkd did not exit after stop --keep-datapath"
UPLINKD_EXIT=$UL_REAPED
UPLINKD_PID=
[[ $UPLINKD_EXIT == 0 ]] || fail "stop --keep-datapath exited $UPLINKD_EXIT"
SNAP_KEPT=$(rs_snapshot)
[[ $SNAP_KEPT == "$SNAP1" ]] || fail "stop --keep-datapath changed the router: $(diff <(echo "$SNAP1") <(echo "$SNAP_KEPT"))"
failing_out=$UL_TMP/failing.out
failing_rc=0
rtr_exec timeout 20 "$UPLINKD" --config "$RS_CFG" --socket "$UL_TMP/no/such/dir/uplinkd.sock" --instance "$P" \
  --foreground --hook "$UL_HOOK" >"$failing_out" 2>&1 || failing_rc=$?
[[ $failing_rc == 1 ]] || fail "the failing start exited $failing_rc, expected 1: $(cat "$failing_out")"
grep -q "cannot start: .*control socket" "$failing_out" || fail "the failing start did not say why: $(cat "$failing_out")"
SNAP_FAILED=$(rs_snapshot)
[[ $SNAP_FAILED == "$SNAP1" ]] || fail "the failing start changed the router: $(diff <(echo "$SNAP1") <(echo "$SNAP_FAILED"))"
rtr_exec test -e "$PIN_DIR/flows" || fail "the failing start removed the pins"
[[ $(hook_count) == "$HOOKS0" ]] || fail "hook events from the failing start: $(hook_since "$HOOKS0")"
rs_new_flow_works || fail "a new TCP connection failed after the failing start"
[[ -z $(rs_client_errors) ]] || fail "a client failed: $(rs_client_errors)"
pass "a failing start exits 1 ($(grep 'cannot start' "$failing_out" | head -1 | sed 's/^.*cannot start: //')) and leaves programs, rules, routes, nft and pins as they were"
# A failure after the programs were replaced in place (injected, test-only): the programs are new (same
# tags), everything else as it was, and the pins are the predecessor's.
injected_out=$UL_TMP/injected.out
injected_rc=0
rtr_exec env UPLINKD_TEST_FAIL_START=after-attach timeout 20 "$UPLINKD" --config "$RS_CFG" \
  --socket "$UL_TMP/injected.sock" --instance "$P" --foreground --hook "$UL_HOOK" >"$injected_out" 2>&1 || injected_rc=$?
[[ $injected_rc == 1 ]] || fail "the start with an injected failure exited $injected_rc: $(cat "$injected_out")"
grep -q "cannot start: injected failure" "$injected_out" || fail "no message for the injected failure: $(cat "$injected_out")"
SNAP_INJECTED=$(rs_snapshot | grep -v '^xdp ')
[[ $SNAP_INJECTED == "$(grep -v '^xdp ' <<<"$SNAP1")" ]] ||
  fail "the start that failed after attaching changed the router: $(diff <(grep -v '^xdp ' <<<"$SNAP1") <(echo "$SNAP_INJECTED"))"
rtr_exec test -e "$PIN_DIR/flows" || fail "the start that failed after attaching removed the pins"
[[ $(hook_count) == "$HOOKS0" ]] || fail "hook events from the start that failed after attaching: $(hook_since "$HOOKS0")"
rs_new_flow_works || fail "a new TCP connection failed after the start that failed after attaching"
[[ -z $(rs_client_errors) ]] || fail "a client failed: $(rs_client_errors)"
pass "a start that fails after replacing the programs exits 1 and leaves rules, routes, nft, pins and forwarding as they were"

rs_start
sleep "$(ul_scaled 2)"
[[ -z $(rs_client_errors) ]] || fail "a client failed after the start that followed: $(rs_client_errors)"
[[ $(hook_count) == "$HOOKS0" ]] || fail "hook events: $(hook_since "$HOOKS0")"

# ---- 4. upgrade under traffic: programs that differ, restart in place ------------------------------
PID_BEFORE=$UPLINKD_PID
rs_upgrade_in_place "$VARIANT"
TAGS1=$(rs_tags wan1 wan2 lan0)
info "program tags before: $(tr '\n' ';' <<<"$TAGS0")"
info "program tags after:  $(tr '\n' ';' <<<"$TAGS1")"
[[ $(wc -l <<<"$TAGS1") == "$(wc -l <<<"$TAGS0")" ]] || fail "programs attached after the upgrade differ in number"
while read -r dev hook tag; do
  now_tag=$(awk -v d="$dev" -v h="$hook" '$1 == d && $2 == h { print $3; exit }' <<<"$TAGS1")
  case "$dev $hook" in
    "wan1 xdp" | "wan2 xdp" | "wan1 ingress" | "wan2 ingress" | "lan0 ingress")
      [[ -n $now_tag && $now_tag != "$tag" ]] || fail "$dev $hook: program tag $tag is still $now_tag after the upgrade" ;;
  esac
done <<<"$TAGS0"
[[ -z $(rs_client_errors) ]] || fail "a client failed across the upgrade: $(rs_client_errors)"
[[ $(rs_ct_ids) == "$CT0" ]] || fail "conntrack entries changed across the upgrade: $(rs_ct_ids)"
[[ $(hook_count) == "$HOOKS0" ]] || fail "hook events across the upgrade: $(hook_since "$HOOKS0")"
rs_new_flow_works || fail "a new TCP connection failed after the upgrade"
pass "upgrade in place (pid $PID_BEFORE kept): every program's tag changed, no connection lost, no hook event"
info "longest gap so far (both restarts): TCP echoes $(rs_max_gap_ms active echo) ms, UDP $(rs_max_gap_ms srv udp) ms"

# ---- 5. an outage while no daemon runs -------------------------------------------------------------
HOOKS1=$(hook_count)
rs_kill9
lab_outage "$P" isp1 on
UPLINKD=$UL_BUILD/uplinkd # back to the project's binary: a downgrade is adopted as well
rs_start
wait_hook disconnected wan1 "$HOOKS1" "$(ul_scaled 15)" >/dev/null ||
  fail "wan1 was not declared disconnected after the restart found it dead: $(hook_since "$HOOKS1")"
rs_wait_line active '"error"' "$(ul_scaled 5)" || fail "the active client on dead wan1 was not reset"
rs_wait_line idle '"error"' "$(ul_scaled 5)" || fail "the idle client on dead wan1 was not reset"
grep -q ECONNRESET "$UL_TMP/active.out" || fail "the active client failed otherwise: $(grep error "$UL_TMP/active.out")"
sleep 0.5
left=$(ip netns exec "$P-rtr" conntrack -L -p tcp --dport 5001 -o id 2>/dev/null | grep -c "mark=256" || true)
[[ $left == 0 ]] || fail "$left conntrack entries with wan1's mark left after the failover"
rs_new_flow_works || fail "a new TCP connection failed after the failover to wan2"
pass "an outage while no daemon ran: the restart declared wan1 disconnected, reset its clients and deleted its conntrack entries"
lab_outage "$P" isp1 off

# ---- 6. SIGTERM removes everything ----------------------------------------------------------------
stop_uplinkd || fail "uplinkd did not stop cleanly on SIGTERM (exit $UPLINKD_EXIT)"
assert_no_datapath "$P" "SIGTERM after the restarts" wan1 wan2 lan0
rules=$(ip -n "$P-rtr" rule show; ip -n "$P-rtr" -6 rule show)
bad=$(awk -F: '$1 >= 1000 && $1 <= 3999' <<<"$rules")
[[ -z $bad ]] || fail "ip rules with pref 1000-3999 left after SIGTERM: $bad"
rtr_exec test ! -e "$PIN_DIR" || fail "pins left after SIGTERM: $(rtr_exec ls -la "$PIN_DIR")"
ip netns exec "$P-rtr" nft list tables 2>/dev/null | grep -q uplinkd && fail "nft table of uplinkd left after SIGTERM"
qd=$(ip netns exec "$P-rtr" tc qdisc show | grep clsact || true)
[[ -z $qd ]] || fail "clsact qdiscs left after SIGTERM: $qd"
pass "SIGTERM after the restarts removes every rule, pin, program, qdisc and nft table of uplinkd"
