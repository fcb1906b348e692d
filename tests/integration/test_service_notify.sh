#!/usr/bin/env bash
# Supervision hooks for systemd (issue 11): uplinkd started as a Type=notify service would be, with
# NOTIFY_SOCKET and WATCHDOG_USEC in its environment, and a listener in the router that plays systemd:
#   - READY=1 comes only once the datapath is attached and the control socket answers: on receiving it
#     the listener asks `status` over the control socket and looks for uplinkd's XDP program on wan1,
#     and both must already be there;
#   - WATCHDOG=1 is sent from the event loop at least every half interval (WATCHDOG_USEC=1 s);
#   - `uplinkctl restart` sends RELOADING=1, then READY=1 again from the same pid;
#   - SIGTERM sends STOPPING=1.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init service_notify daemon
ldd "$UPLINKD" 2>/dev/null | grep -q libsystemd || skip "uplinkd was built without libsystemd (sd_notify is compiled out)"

P=$UL_PREFIX
ul_lab_up
cfg=$UL_TMP/uplinkd.conf
ul_write_config "$cfg" 0.5 1 3 3

NOTIFY=$UL_TMP/notify.sock
NOTES=$UL_TMP/notify.log
ensure_rtr_holder "$P" || fail "no holder for the router"
# The listener: one line per datagram, "<t> <message with | for newlines> <checks on READY=1>".
rtr_exec timeout 120 python3 - "$NOTIFY" "$NOTES" "$UPLINKCTL" "$UL_TMP/uplinkd.sock" <<'PY' &
import os, socket, subprocess, sys, time
path, out, ctl, sock = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
deadline = time.time() + 110
with open(out, "a", buffering=1) as f:
    while time.time() < deadline:
        s.settimeout(max(0.1, deadline - time.time()))
        try:
            data = s.recv(4096).decode(errors="replace")
        except socket.timeout:
            break
        checks = ""
        if "READY=1" in data:
            answers = subprocess.run([ctl, "--socket", sock, "status"], capture_output=True).returncode == 0
            link = subprocess.run(["ip", "-d", "link", "show", "dev", "wan1"], capture_output=True, text=True).stdout
            checks = " control=%s xdp=%s" % ("yes" if answers else "no", "yes" if "prog/xdp" in link else "no")
        f.write("%.3f %s%s\n" % (time.time(), data.strip().replace("\n", "|"), checks))
PY
ul_bg_add $!
for _ in $(seq 50); do [[ -S $NOTIFY ]] && break; sleep 0.1; done
[[ -S $NOTIFY ]] || fail "the notify listener did not start"

export NOTIFY_SOCKET=$NOTIFY WATCHDOG_USEC=1000000
start_uplinkd "$P" "$cfg" --no-hook
unset NOTIFY_SOCKET WATCHDOG_USEC
ul_wait_tracking wan1 wan2
sleep 3

ready=$(grep 'READY=1' "$NOTES" | head -1)
[[ -n $ready ]] || fail "no READY=1 from uplinkd: $(cat "$NOTES")"
[[ $ready == *"control=yes xdp=yes"* ]] || fail "READY=1 came before the datapath or the control socket was up: $ready"
pass "READY=1 only once the control socket answers and XDP is attached ($ready)"

pets=$(grep -c 'WATCHDOG=1' "$NOTES" || true)
((pets >= 5)) || fail "only $pets WATCHDOG=1 in about 4 s with WATCHDOG_USEC=1 s (expected every 0.5 s)"
gap=$(grep 'WATCHDOG=1' "$NOTES" | awk 'NR > 1 { g = $1 - p; if (g > m) m = g } { p = $1 } END { printf "%.3f", m }')
fle "$gap" 0.9 || fail "the longest gap between watchdog pets was $gap s (interval 1 s)"
pass "the loop pets the watchdog: $pets pets, longest gap $gap s"

before=$(grep -c 'READY=1' "$NOTES")
ctl restart >/dev/null || fail "uplinkctl restart failed"
for _ in $(seq 50); do (($(grep -c 'READY=1' "$NOTES") > before)) && break; sleep 0.1; done
grep -q 'RELOADING=1' "$NOTES" || fail "no RELOADING=1 before the restart in place: $(cat "$NOTES")"
(($(grep -c 'READY=1' "$NOTES") > before)) || fail "no READY=1 after the restart in place"
uplinkd_alive || fail "the daemon's pid is gone after the restart in place"
pass "restart in place: RELOADING=1, then READY=1 from the same pid"

stop_uplinkd || fail "uplinkd did not stop cleanly"
sleep 0.2
grep -q 'STOPPING=1' "$NOTES" || fail "no STOPPING=1 at SIGTERM"
pass "SIGTERM: STOPPING=1"
