#!/usr/bin/env bash
# The control socket of a running daemon (issue 11), used as users and scripts use it:
#   1. `option control_group` (a gid no account has, so nothing on the host changes): a process of
#      uid nobody with that group as a supplementary group reads `uplinkctl status` but is refused
#      `reload`, `stop` and `restart`; nobody without the group is refused even `status`;
#   2. garbage, an oversized line and a client that never finishes its line get errors or a timeout;
#   3. 31 silent or half-sent clients held open for 3 s delay neither the probes (probes sent compared
#      with the 3 s before) nor another client's answer; past the 32 served at once, a client is told
#      "busy" at once rather than left waiting.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init control_socket daemon
command -v setpriv >/dev/null 2>&1 || skip "needs setpriv (util-linux) to run uplinkctl as another user"

P=$UL_PREFIX
GID=47113 # no group of the system: only the process's own supplementary group list names it
ul_lab_up
cfg=$UL_TMP/uplinkd.conf
ul_write_config "$cfg" 0.2 1 3 3
sed -i "s/^\toption mmx_mask '0x3F00'$/&\n\toption control_group '$GID'/" "$cfg"
grep -q "control_group '$GID'" "$cfg" || fail "could not add control_group to the config"
# The socket lives in the test's own directory: let other users reach it (the file's mode decides).
chmod 711 "$UL_TMP"
start_uplinkd "$P" "$cfg" --no-hook
ul_wait_tracking wan1 wan2

# as_user <groups> <uplinkctl args...>: uplinkctl as uid/gid nobody with those supplementary groups
# ("" for none); prints its output and returns its status.
as_user() {
  local groups=$1
  shift
  local g=(--clear-groups)
  [[ -n $groups ]] && g=(--groups "$groups")
  timeout 10 nsenter -t "$UL_HOLDER_PID" -m -n -- setpriv --reuid=65534 --regid=65534 "${g[@]}" \
    "$UPLINKCTL" --socket "$UPLINKD_SOCK" "$@" 2>&1
}

# ---- 1. who may ask what -------------------------------------------------------------------------
mode=$(rtr_exec stat -c '%a %g' "$UPLINKD_SOCK")
[[ $mode == "660 $GID" ]] || fail "the socket file is '$mode' (mode, group), expected '660 $GID'"
out=$(as_user "$GID" status) || fail "a member of control_group could not read status: $out"
grep -q "wan1" <<<"$out" || fail "status for a member of control_group does not show wan1: $out"
for verb in reload stop restart; do
  out=$(as_user "$GID" "$verb") && fail "a member of control_group could '$verb': $out"
  grep -q "permission denied: '$verb' needs root" <<<"$out" || fail "'$verb' by a group member: unexpected answer: $out"
done
uplinkd_alive || fail "the daemon is gone after a group member's refused stop/restart"
out=$(as_user "" status) && fail "uid nobody outside control_group read status: $out"
info "outside the group: $(head -1 <<<"$out")"
out=$(ctl reload) || fail "root could not reload: $out"
pass "control_group $GID: a member reads status and is refused reload, stop and restart; a non-member is refused; root reloads"

# ---- 2. garbage, an oversized line, a line never finished ---------------------------------------
answers=$(rtr_exec timeout 20 python3 - "$UPLINKD_SOCK" <<'PY'
import socket, sys, time
path = sys.argv[1]
def ask(data, shut=True, wait=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(wait)
    t = time.monotonic()
    try:
        s.sendall(data)
    except OSError:
        pass  # the daemon may close an oversized request before taking it all
    if shut:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass
    s.close()
    return out.decode(errors="replace").strip().replace("\n", " "), time.monotonic() - t
print("garbage\t%s\t%.2f" % ask(b"this is not json\n"))
print("oversized\t%s\t%.2f" % ask(b"{" + b"x" * (70 * 1024) + b"\n"))
print("unfinished\t%s\t%.2f" % ask(b'{"command":"stat', shut=False))
PY
) || fail "the request script failed: $answers"
info "$(tr '\t' ' ' <<<"$answers")"
grep -P '^garbage\t.*"error":"bad request' <<<"$answers" >/dev/null || fail "garbage did not get a 'bad request' error: $answers"
grep -P '^oversized\t.*"error":"[^"]*(too long|too large|longer than)' <<<"$answers" >/dev/null ||
  fail "an oversized line did not get a size error: $answers"
grep -P '^unfinished\t.*"error":"timeout' <<<"$answers" >/dev/null || fail "an unfinished line did not time out: $answers"
uplinkd_alive || fail "the daemon is gone after bad requests"
pass "garbage, a 70 KiB line and an unfinished line get errors (bad request, size, timeout)"

# ---- 3. stalled clients delay neither probes nor other clients -------------------------------------
sent() { ctl status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(i["probes"]["sent"] for i in d["interfaces"]))'; }
s0=$(sent)
t_s0=$(now)
sleep 3
s1=$(sent)
t_s1=$(now)
rtr_exec timeout 20 python3 - "$UPLINKD_SOCK" "$UL_TMP/stalled.out" <<'PY' &
import socket, sys, time
path, out = sys.argv[1:3]
held = []
for i in range(31):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        if i % 2:
            s.sendall(b'{"command":"sta')  # half a request, never finished
        held.append(s)
    except OSError as e:
        pass
with open(out, "w") as f:
    f.write("connected %d\n" % len(held))
time.sleep(3)
PY
stalled_pid=$!
for _ in $(seq 30); do [[ -s $UL_TMP/stalled.out ]] && break; sleep 0.1; done
[[ -s $UL_TMP/stalled.out ]] || fail "the stalled clients did not connect"
t0=$(now)
out=$(ctl status) || fail "status failed beside the stalled clients: $out"
answer_s=$(fsub "$t0" "$(now)")
sleep 2.5
s2=$(sent)
t_s2=$(now)
wait "$stalled_pid" 2>/dev/null || true
base=$(fcalc "($s1 - $s0) / ($t_s1 - $t_s0)")
during=$(fcalc "($s2 - $s1) / ($t_s2 - $t_s1)")
info "probes sent per second: $base before, $during with $(cut -d' ' -f2 "$UL_TMP/stalled.out") stalled clients; status answered in $answer_s s"
fle 1 "$base" || fail "hardly any probes sent before the stalled clients ($base/s)"
fle "$(fcalc "$base * 0.8")" "$during" || fail "probing slowed beside stalled clients: $during/s vs $base/s before"
fle "$answer_s" 1 || fail "status took $answer_s s beside the stalled clients"
uplinkd_alive || fail "the daemon is gone after the stalled clients"
pass "31 stalled clients: probes went on ($during/s vs $base/s before) and status answered in $answer_s s"

# Past the limit: 40 held open at once, the ones beyond 32 are answered "busy" without waiting.
busy=$(rtr_exec timeout 20 python3 - "$UPLINKD_SOCK" <<'PY'
import socket, sys, time
held, busy, slowest = [], 0, 0.0
for i in range(40):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    held.append(s)
time.sleep(0.3)
for s in held:
    s.setblocking(False)
    try:
        data = s.recv(4096)
        if b'"busy' in data:
            busy += 1
    except BlockingIOError:
        pass
print(busy)
PY
) || fail "the busy check failed: $busy"
((busy >= 8)) || fail "$busy of 40 clients held at once were told busy within 0.3 s (expected at least 8)"
uplinkd_alive || fail "the daemon is gone after 40 clients at once"
ctl status >/dev/null || fail "status failed after the 40 clients went"
pass "40 clients at once: $busy told busy within 0.3 s; status answers once they are gone"

stop_uplinkd || fail "uplinkd did not stop cleanly"
