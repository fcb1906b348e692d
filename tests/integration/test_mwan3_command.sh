#!/usr/bin/env bash
# mwan3's surface on a running uplinkd (issue 12), called as LuCI, rpcd, netifd and scripts call it:
#   1. `mwan3` (uplinkctl under that name) status, interfaces, policies, connected and rules: their
#      text line by line against mwan3's shapes for the lab's state, and their values against
#      `uplinkctl status --json`; help, internal;
#   2. `mwan3 ifdown wan1` takes wan1 out as mwan3 does (disconnected then ifdown with an empty
#      DEVICE, no table 1, the policy on wan2) and it stays out while its device is up; `mwan3 ifup
#      wan1` brings it back (ifup with DEVICE, then connected); bad input (an unknown and a disabled
#      interface, a missing argument) is refused with a clear error and changes nothing;
#   3. `mwan3 use wan2 ping` leaves by wan2, and `use` returns its command's status;
#   4. the rpcd exec plugin (packaging/openwrt/uplinkd/files/mwan3.rpcd) as rpcd runs it: `list`,
#      `call status` with no arguments, each section and one interface, each answer checked against
#      the key set and types of mwan3's plugin and its values against `uplinkctl status --json`;
#      malformed JSON and an unknown argument refused;
#   5. the netifd hotplug script (packaging/openwrt/uplinkd/files/uplinkd.hotplug) run with netifd's
#      environment for ifdown and ifup, and for an interface uplinkd does not track;
#   6. mwan3's state files (iface_state, mwan3track/<iface>/...) written and kept current, and
#      removed at a full stop.
#   An interface out by ifdown stays out across an in-place restart (as across a crash or respawn).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init mwan3_command daemon

P=$UL_PREFIX
FILES=$UL_SOURCE/packaging/openwrt/uplinkd/files
RUN=$UL_TMP/run # the daemon's --state-dir: /var/run on a router
BIN=$UL_TMP/bin
mkdir -p "$BIN" "$RUN"
ln -s "$UPLINKCTL" "$BIN/mwan3"

ul_lab_up
cfg=$UL_TMP/uplinkd.conf
ul_write_config "$cfg" 0.3 1 3 2
cat >>"$cfg" <<'EOF'

config interface 'wanx'
	option enabled '0'
	option device 'wanx'

config member 'wan2_only_m'
	option interface 'wan2'

config policy 'wan2_only'
	list use_member 'wan2_only_m'

config rule 'https'
	option proto 'tcp'
	option dest_port '443'
	option use_policy 'wan2_only'

config rule 'lan_udp'
	option src_ip '10.10.0.0/24'
	option proto 'udp'
	option sticky '1'
	option use_policy 'wan1_wan2'

config rule 'v6_any'
	option family 'ipv6'
	option dest_ip '2001:db8:ff::/64'
	option use_policy 'wan1_wan2'
EOF
# The default rule goes last, as in mwan3's shipped configuration.
python3 - "$cfg" <<'PY' || fail "could not move default_rule to the end of the config"
import re, sys
p = sys.argv[1]
s = open(p).read()
m = re.search(r"\nconfig rule 'default_rule'\n(?:\t[^\n]*\n)*", s)
s = s[:m.start()] + s[m.end():].rstrip("\n") + "\n" + m.group(0)
open(p, "w").write(s)
PY
make_hook
start_uplinkd "$P" "$cfg" --hook "$UL_HOOK" --state-dir "$RUN"
ul_wait_tracking wan1 wan2

# mwan3 args...: the mwan3 command inside the router, as a script or LuCI runs it (≤ 20 s).
mwan3() {
  timeout 20 nsenter -t "$UL_HOLDER_PID" -m -n -- \
    env UPLINKD_SOCKET="$UPLINKD_SOCK" UPLINKD_SERVICE=none "$BIN/mwan3" "$@"
}
json=$(ctl_json) || fail "uplinkctl status --json failed"

# expect_lines <what> <text> <regex...>: the text has exactly these lines, each matching its regex.
expect_lines() {
  local what=$1 text=$2 i=0 line
  shift 2
  local -a want=("$@") got=()
  mapfile -t got <<<"$text"
  # $(...) strips trailing newlines: the callers end the text with "<end>" so a final blank line counts.
  ((${#got[@]} == ${#want[@]})) ||
    fail "$what: ${#got[@]} lines, expected ${#want[@]}:"$'\n'"$text"
  for line in "${got[@]}"; do
    [[ $line =~ ^${want[i]}$ ]] || fail "$what: line $((i + 1)) '$line' does not match '${want[i]}':"$'\n'"$text"
    i=$((i + 1))
  done
}
D='[0-9]{2}h:[0-9]{2}m:[0-9]{2}s'

# ---- 1. the reports --------------------------------------------------------------------------------
log "1. mwan3 status, interfaces, policies, connected, rules against mwan3's shapes"
out=$(mwan3 interfaces && echo "<end>") || fail "mwan3 interfaces failed: $out"
expect_lines "mwan3 interfaces" "$out" \
  'Interface status:' \
  " interface wan1 is online and tracking is active \(online $D, uptime $D\)" \
  " interface wan2 is online and tracking is active \(online $D, uptime $D\)" \
  ' interface wanx is disabled and tracking is disabled' \
  '' '<end>'
pass "mwan3 interfaces: mwan3's line per interface (online with its times, the disabled one)"

out=$(mwan3 policies && echo "<end>") || fail "mwan3 policies failed: $out"
expect_lines "mwan3 policies" "$out" \
  'Current ipv4 policies:' 'wan1_wan2:' ' wan1 \(100%\)' 'wan2_only:' ' wan2 \(100%\)' '' \
  'Current ipv6 policies:' 'wan1_wan2:' ' unreachable' 'wan2_only:' ' unreachable' '' '<end>'
pass "mwan3 policies: the lowest metric member at 100 %, last_resort where a family has no member"

out=$(mwan3 connected) || fail "mwan3 connected failed: $out"
want_connected=$(python3 -c '
import json, sys
c = json.load(sys.stdin)["connected"]
for fam in ("ipv4", "ipv6"):
    print("Directly connected %s networks:" % fam)
    for p in c[fam]:
        print(p)
    print()' <<<"$json")
[[ $out == "$want_connected" ]] || fail "mwan3 connected differs from status --json:"$'\n'"$out"$'\n'"expected:"$'\n'"$want_connected"
grep -qx '10.10.0.0/24' <<<"$out" || fail "mwan3 connected does not list the LAN 10.10.0.0/24: $out"
pass "mwan3 connected: headings, one prefix a line, equal to status --json ($(grep -c / <<<"$out") prefixes)"

out=$(mwan3 rules && echo "<end>") || fail "mwan3 rules failed: $out"
N='[0-9]+[KMGT]?'
expect_lines "mwan3 rules" "$out" \
  'Active ipv4 user rules:' \
  " *$N +$N - wan2_only +tcp +-- +\* +\* +0\.0\.0\.0/0 +0\.0\.0\.0/0 +multiport dports 443 *" \
  " *$N +$N S lan_udp +udp +-- +\* +\* +10\.10\.0\.0/24 +0\.0\.0\.0/0 *" \
  " *$N +$N - wan1_wan2 +all +-- +\* +\* +0\.0\.0\.0/0 +0\.0\.0\.0/0 *" \
  '' \
  'Active ipv6 user rules:' \
  " *$N +$N - wan2_only +tcp +-- +\* +\* +::/0 +::/0 +multiport dports 443 *" \
  " *$N +$N - wan1_wan2 +all +-- +\* +\* +::/0 +2001:db8:ff::/64 *" \
  '' '<end>'
pass "mwan3 rules: iptables' columns per family in rule order (policy '-', sticky 'S', ports, addresses)"

out=$(mwan3 status) || fail "mwan3 status failed: $out"
parts=$(
  mwan3 interfaces
  mwan3 policies
  mwan3 connected
  mwan3 rules
)
mask() { sed -E "s/$D/XXh:XXm:XXs/g; s/^ *$N +$N /  C  C /"; }
[[ $(mask <<<"$out") == "$(mask <<<"$parts")" ]] ||
  fail "mwan3 status is not interfaces + policies + connected + rules:"$'\n'"$out"
pass "mwan3 status = interfaces, policies, connected, rules in mwan3's order"

out=$(mwan3) || fail "mwan3 without a verb exited non-zero"
grep -qx 'Syntax: mwan3 \[command\]' <<<"$out" || fail "mwan3's help is missing its syntax line: $out"
for v in start stop restart 'ifup <iface>' 'ifdown <iface>' interfaces policies connected rules status \
  'internal <ipv4|ipv6>' 'use <iface> <cmd>'; do
  awk -v v="$v" 'index($0, v) == 1 && substr($0, length(v) + 1) ~ /^ +[A-Z]/ { found = 1 } END { exit !found }' \
    <<<"$out" || fail "mwan3's help lacks '$v': $out"
done
err=$(mwan3 frobnicate 2>&1 >/dev/null) || fail "mwan3 frobnicate: exit non-zero (mwan3 prints its help, exit 0)"
grep -q "unknown command 'frobnicate'" <<<"$err" || fail "mwan3 frobnicate: no clear error on stderr: $err"
out=$(mwan3 internal ipv4) || fail "mwan3 internal ipv4 failed"
for h in 'Software-Version' 'Output of "ip -4 a show"' 'Output of "ip -4 route show"' 'Output of "ip -4 rule show"' \
  'Output of "ip -4 route list table 1-250"' 'Routing table 1:' 'Routing table 2:' 'Output of "uplinkctl status"'; do
  grep -qxF "$h" <<<"$out" || fail "mwan3 internal ipv4 lacks '$h'"
done
grep -qE '^2001:\s+from all fwmark 0x100/0x3f00 lookup 1' <<<"$out" || fail "mwan3 internal ipv4: no rule 2001 in its ip rule section"
err=$(mwan3 internal ipv5 2>&1) && fail "mwan3 internal ipv5 succeeded: $err"
pass "mwan3 help (exit 0, stderr names an unknown verb), internal ipv4 (rules, tables 1 and 2), internal ipv5 refused"

# ---- 2. ifdown, ifup, bad input ----------------------------------------------------------------------
log "2. mwan3 ifdown wan1 / ifup wan1, and bad input"
h0=$(hook_count)
out=$(mwan3 ifdown wan1 2>&1) || fail "mwan3 ifdown wan1 failed: $out"
[[ -z $out ]] || fail "mwan3 ifdown wan1 printed '$out' (mwan3 prints nothing)"
wait_hook ifdown wan1 "$h0" 5 >/dev/null || fail "no ifdown hook for wan1 within 5 s: $(hook_since "$h0")"
events=$(hook_since "$h0" | awk '$3 == "wan1" { print $2 "," $4 }' | tr '\n' ' ')
[[ $events == "disconnected,wan1 ifdown,- " ]] ||
  fail "hooks after ifdown wan1: '$events' (expected disconnected with DEVICE wan1, then ifdown with DEVICE empty)"
ul_snapshot
[[ $(iface_get wan1 state) == offline && $(iface_get wan1 mwan3.tracking) == down && $(iface_get wan1 admin_down) == true ]] ||
  fail "after ifdown: wan1 is $(iface_get wan1 state), tracking $(iface_get wan1 mwan3.tracking)"
ul_snapshot_end
[[ -z $(rtr_exec ip route show table 1) ]] || fail "table 1 still has routes after ifdown wan1: $(rtr_exec ip route show table 1)"
mwan3 policies | grep -A1 -x 'wan1_wan2:' | grep -qx ' wan2 (100%)' || fail "after ifdown wan1 the policy is not on wan2: $(mwan3 policies)"
sleep 2 # several device polls and cycles: the device is up, the interface must stay out
[[ $(iface_get wan1 state) == offline ]] || fail "wan1 came back by itself ($(iface_get wan1 state)) after ifdown"
grep -qx offline "$RUN/mwan3/iface_state/wan1" || fail "iface_state/wan1 is '$(cat "$RUN/mwan3/iface_state/wan1")' after ifdown"
pass "mwan3 ifdown wan1: disconnected then ifdown (empty DEVICE), table 1 empty, policy on wan2, stays out 2 s with its device up"

# An in-place restart (and so a crash or a respawn, which adopt the same way) keeps it out.
h0=$(hook_count)
out=$(ctl restart) || fail "uplinkctl restart failed: $out"
wait_uplinkd_ready 15 || fail "no answer after the restart"
sleep 1
ul_snapshot
[[ $(iface_get wan1 state) == offline && $(iface_get wan1 admin_down) == true && $(iface_get wan2 state) == online ]] ||
  fail "after an in-place restart: wan1 $(iface_get wan1 state) (admin_down $(iface_get wan1 admin_down)), wan2 $(iface_get wan2 state)"
ul_snapshot_end
[[ -z $(hook_since "$h0") ]] || fail "hooks ran across the restart: $(hook_since "$h0")"
grep -qx wan1 "$RUN/uplinkd/$UPLINKD_INSTANCE.ifdown" || fail "no record of wan1's ifdown in $RUN/uplinkd"
pass "an in-place restart keeps wan1 out (recorded in $RUN/uplinkd/$UPLINKD_INSTANCE.ifdown), no hook, wan2 online"

h0=$(hook_count)
out=$(mwan3 ifup wan1 2>&1) || fail "mwan3 ifup wan1 failed: $out"
wait_hook connected wan1 "$h0" 10 >/dev/null || fail "no connected hook for wan1 within 10 s: $(hook_since "$h0")"
events=$(hook_since "$h0" | awk '$3 == "wan1" { print $2 "," $4 }' | tr '\n' ' ')
[[ $events == "ifup,wan1 connected,wan1 " ]] || fail "hooks after ifup wan1: '$events' (expected ifup then connected, DEVICE wan1)"
wait_iface_state wan1 online 10 || fail "wan1 not online after ifup (last '$UL_LAST_STATE')"
[[ -n $(rtr_exec ip route show table 1) ]] || fail "table 1 empty after ifup wan1"
pass "mwan3 ifup wan1: ifup then connected with DEVICE wan1, online again in ${UL_WAITED} s, table 1 back"

before=$(ul_status_summary | awk '{ print $1, $2, $4 }')
err=$(mwan3 ifup nosuch 2>&1) && fail "mwan3 ifup nosuch succeeded: $err"
grep -q "unknown interface 'nosuch'" <<<"$err" || fail "mwan3 ifup nosuch: unclear error: $err"
err=$(mwan3 ifup wanx 2>&1) && fail "mwan3 ifup wanx (disabled) succeeded: $err"
grep -q "interface wanx is disabled" <<<"$err" || fail "mwan3 ifup wanx: unclear error: $err"
err=$(mwan3 ifdown 2>&1) && fail "mwan3 ifdown without an interface succeeded: $err"
grep -q "Usage: mwan3 ifdown <interface>" <<<"$err" || fail "mwan3 ifdown without an interface: unclear error: $err"
uplinkd_alive || fail "the daemon died on bad ifup/ifdown input"
states() { ul_status_summary | awk '{ print $1, $2, $4 }'; } # name, state, transitions
[[ $(states) == "$before" ]] || fail "the interfaces changed after refused input:"$'\n'"$before"$'\n'"$(states)"
out=$(ctl ifdown wan2) || fail "uplinkctl ifdown wan2 failed"
[[ $out == "wan2: offline" ]] || fail "uplinkctl ifdown wan2 printed '$out'"
out=$(ctl ifup wan2) || fail "uplinkctl ifup wan2 failed"
wait_iface_state wan2 online 10 || fail "wan2 not online after uplinkctl ifup"
pass "bad input refused with clear errors (unknown, disabled, missing argument), nothing changed; uplinkctl ifdown/ifup wan2"

# ---- 3. mwan3 use --------------------------------------------------------------------------------------
log "3. mwan3 use wan2"
ul_out_counters "$P" \
  'icmp_wan1=oifname "wan1" ip daddr 203.0.113.3 icmp type echo-request' \
  'icmp_wan2=oifname "wan2" ip daddr 203.0.113.3 icmp type echo-request' ||
  fail "cannot add the counting table"
count() { ul_count "$1"; }
out=$(mwan3 use wan2 ping -n -c 1 -W 2 203.0.113.3 2>&1) || fail "mwan3 use wan2 ping failed: $out"
(($(count icmp_wan2) == 1 && $(count icmp_wan1) == 0)) ||
  fail "mwan3 use wan2 ping: wan1 $(count icmp_wan1), wan2 $(count icmp_wan2) echo requests (expected 0 and 1)"
mwan3 use wan2 sh -c 'exit 7'
st=$?
((st == 7)) || fail "mwan3 use wan2 sh -c 'exit 7' returned $st"
ip netns exec "$P-rtr" nft delete table inet ulcount
pass "mwan3 use wan2 ping left by wan2 (1 echo request on wan2, 0 on wan1); use returns its command's status (7)"

# ---- 4. the rpcd plugin ------------------------------------------------------------------------------
log "4. the rpcd exec plugin, called as rpcd calls it"
[[ -x $FILES/mwan3.rpcd ]] || fail "no executable rpcd plugin at $FILES/mwan3.rpcd"
# rpcd runs `<plugin> list` and `<plugin> call <method>` with the arguments on stdin.
plugin() {
  timeout 20 nsenter -t "$UL_HOLDER_PID" -m -n -- \
    env UPLINKD_CTL="$UPLINKCTL" UPLINKD_SOCKET="$UPLINKD_SOCK" "$FILES/mwan3.rpcd" "$@"
}
out=$(plugin list) || fail "plugin list failed: $out"
python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert list(d) == ["status"], d
assert sorted(d["status"]) == ["interface", "section"], d
assert all(isinstance(v, str) for v in d["status"].values()), d' "$out" || fail "plugin list: unexpected answer $out"
pass "plugin list: $out"

check_answer() { # <args JSON> <answer> <expected top keys> [interface]
  python3 - "$json" "$1" "$2" "$3" "${4:-}" <<'PY'
import json, sys
status, args, answer, keys, only = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4].split(","), sys.argv[5]
def die(msg):
    print("%s: %s\n%s" % (args, msg, json.dumps(answer, indent=1)), file=sys.stderr); sys.exit(1)
if sorted(answer) != sorted(keys): die("top-level keys %s, expected %s" % (sorted(answer), sorted(keys)))
types = {"age": int, "online": int, "offline": int, "uptime": int, "score": int, "lost": int, "turn": int,
         "status": str, "enabled": bool, "running": bool, "tracking": str, "up": bool, "track_ip": list}
by_name = {i["name"]: i for i in status["interfaces"]}
if "interfaces" in answer:
    want = [only] if only else list(by_name)
    if sorted(answer["interfaces"]) != sorted(want): die("interfaces %s, expected %s" % (sorted(answer["interfaces"]), want))
    for name, i in answer["interfaces"].items():
        if sorted(i) != sorted(types): die("%s: keys %s" % (name, sorted(i)))
        for k, t in types.items():
            if type(i[k]) is not t: die("%s.%s is %s, expected %s" % (name, k, type(i[k]).__name__, t.__name__))
        s = by_name[name]
        if i["status"] not in ("online", "offline", "connecting", "disconnecting", "disabled", "unknown"): die("%s status %s" % (name, i["status"]))
        if i["tracking"] not in ("active", "paused", "down", "disabled"): die("%s tracking %s" % (name, i["tracking"]))
        m = s.get("mwan3", {})
        for k in ("status", "tracking", "running", "up"):
            if i[k] != m.get(k): die("%s.%s = %r, status --json says %r" % (name, k, i[k], m.get(k)))
        if i["enabled"] != s["enabled"]: die("%s.enabled differs" % name)
        if abs(i["score"] - s["score"]) > 1 or abs(i["turn"] - m.get("turn", 0)) > 10 or i["lost"] < m.get("lost", 0):
            die("%s: score/turn/lost %s/%s/%s vs %s/%s/%s" % (name, i["score"], i["turn"], i["lost"], s["score"], m.get("turn"), m.get("lost")))
        ips = [t["ip"] for t in i["track_ip"]]
        if ips != [t["ip"] for t in s["targets"]]: die("%s track_ip %s" % (name, ips))
        for t in i["track_ip"]:
            if sorted(t) != ["ip", "latency", "packetloss", "status"]: die("%s track_ip keys %s" % (name, sorted(t)))
            if not (isinstance(t["latency"], int) and isinstance(t["packetloss"], int) and t["status"] in ("up", "down", "skipped", "unknown")):
                die("%s track_ip entry %s" % (name, t))
        for k in ("online", "offline", "uptime", "age"):
            if abs(i[k] - m.get(k, 0)) > 2: die("%s.%s = %s, status --json says %s" % (name, k, i[k], m.get(k)))
        if s["enabled"] and s["state"] == "online" and not (i["up"] and i["running"] and i["offline"] == 0):
            die("%s: online but %s" % (name, i))
if "connected" in answer:
    if answer["connected"] != status["connected"]: die("connected %s != %s" % (answer["connected"], status["connected"]))
if "policies" in answer:
    p = answer["policies"]
    if sorted(p) != ["ipv4", "ipv6"]: die("policies keys %s" % sorted(p))
    for fam in ("ipv4", "ipv6"):
        for name, members in status["policies"][fam].items():
            want = [{"interface": m["interface"], "percent": m["percent"]} for m in members]
            if p[fam].get(name) != want: die("policies.%s.%s = %s, expected %s" % (fam, name, p[fam].get(name), want))
PY
}
for args in '' '{}' '{"section":"interfaces"}' '{"section":"connected"}' '{"section":"policies"}' \
  '{"section":"interfaces","interface":"wan2"}' '{"section":"everything"}'; do
  # A fresh status for each call: the seconds fields (online, uptime, age) are compared within 2 s,
  # and on a loaded machine the calls of this loop can span more than that.
  json=$(ctl_json) || fail "uplinkctl status --json failed"
  out=$(plugin call status <<<"$args") || fail "plugin call status '$args' failed: $out"
  case $args in
    *'"interface":"wan2"'*) keys=interfaces only=wan2 ;;
    *interfaces*) keys=interfaces only= ;;
    *connected*) keys=connected only= ;;
    *policies*) keys=policies only= ;;
    *) keys=interfaces,connected,policies only= ;;
  esac
  check_answer "${args:-(none)}" "$out" "$keys" "$only" || fail "plugin call status '$args': answer does not match (above)"
  info "call status ${args:-(no arguments)}: $(head -c 160 <<<"$out")..."
done
out=$(plugin call status <<<'{"section":"interfaces","interface":"nosuch"}') || fail "call status for an unknown interface failed"
[[ $out == '{"interfaces":{}}' ]] || fail "call status for an unknown interface: $out (mwan3's plugin answers an empty object)"
pass "plugin call status: no arguments, {}, each section, one interface, an unknown section (all three): mwan3's keys and types, values of status --json"

t0=$(now)
for _ in 1 2 3 4 5 6 7 8 9 10; do plugin call status <<<'{"section":"interfaces"}' >/dev/null || fail "plugin call failed"; done
info "10 calls of the plugin in $(fsub "$t0" "$(now)") s (bench/mwan3_status_bench.sh measures it)"
for bad in '{"section":' '[1,2]' '{"section":"interfaces","bogus":1}' '{"section":5}'; do
  err=$(plugin call status 2>&1 <<<"$bad") && fail "plugin call status '$bad' succeeded: $err"
  grep -qE 'malformed JSON|must be a JSON object|unknown argument .bogus.|must be a string' <<<"$err" ||
    fail "plugin call status '$bad': unclear error: $err"
  info "refused '$bad': $err"
done
err=$(plugin call frob </dev/null 2>&1) && fail "plugin call frob succeeded"
uplinkd_alive || fail "the daemon died on bad plugin input"
pass "plugin: malformed JSON, a non-object, an unknown argument, a non-string and an unknown method refused with clear errors"

# ---- 5. the hotplug script ---------------------------------------------------------------------------
log "5. netifd's hotplug script"
[[ -r $FILES/uplinkd.hotplug ]] || fail "no hotplug script at $FILES/uplinkd.hotplug"
# netifd runs hotplug.d scripts with ACTION, INTERFACE and DEVICE (empty on ifdown) set, via sh.
hotplug() { # ACTION INTERFACE DEVICE
  timeout 20 nsenter -t "$UL_HOLDER_PID" -m -n -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    UPLINKD_CTL="$UPLINKCTL" UPLINKD_SOCKET="$UPLINKD_SOCK" ACTION="$1" INTERFACE="$2" DEVICE="$3" \
    sh "$FILES/uplinkd.hotplug"
}
h0=$(hook_count)
out=$(hotplug ifdown wan2 "" 2>&1) || fail "hotplug ifdown wan2 failed: $out"
wait_iface_state wan2 offline 5 || fail "wan2 not offline after hotplug ifdown (last '$UL_LAST_STATE')"
wait_hook ifdown wan2 "$h0" 5 >/dev/null || fail "no ifdown hook for wan2 after hotplug ifdown"
out=$(hotplug ifup wan2 wan2 2>&1) || fail "hotplug ifup wan2 failed: $out"
wait_iface_state wan2 online 10 || fail "wan2 not online after hotplug ifup (last '$UL_LAST_STATE')"
wait_hook ifup wan2 "$h0" 5 >/dev/null || fail "no ifup hook for wan2 after hotplug ifup"
out=$(hotplug ifupdate wan2 wan2 2>&1) || fail "hotplug ifupdate (not forwarded) failed: $out"
before=$(iface_get wan1 state)
err=$(hotplug ifup lan br-lan 2>&1) && fail "hotplug ifup for lan (not tracked) succeeded: $err"
grep -q "unknown interface 'lan'" <<<"$err" || fail "hotplug ifup lan: unclear error: $err"
[[ $(iface_get wan1 state) == "$before" && $(iface_get wan2 state) == online ]] || fail "interfaces changed after hotplug for lan"
pass "hotplug: ifdown wan2 (empty DEVICE) took it out, ifup wan2 brought it back, ifupdate ignored, lan refused: $err"

# ---- 6. state files --------------------------------------------------------------------------------------
log "6. mwan3's state files under $RUN"
sleep 1.2 # one sync period after the last change
d=$RUN/mwan3track/wan1
for f in STATUS ONLINE OFFLINE SCORE LOST TURN TIME TRACK_203.0.113.1 LATENCY_203.0.113.1 LOSS_203.0.113.1; do
  [[ -s $d/$f ]] || fail "missing $d/$f: $(ls "$d" 2>&1)"
done
ul_snapshot
[[ $(cat "$d/STATUS") == online && $(cat "$RUN/mwan3/iface_state/wan1") == online ]] || fail "STATUS $(cat "$d/STATUS"), iface_state $(cat "$RUN/mwan3/iface_state/wan1")"
[[ $(cat "$d/OFFLINE") == 0 ]] || fail "OFFLINE is $(cat "$d/OFFLINE") while online"
up=$(awk '{ printf "%d", $1 }' /proc/uptime)
online_at=$(cat "$d/ONLINE")
((online_at > 0 && online_at <= up)) || fail "ONLINE $online_at not an uptime instant (uptime $up)"
score=$(iface_get wan1 score)
(($(cat "$d/SCORE") == score || $(cat "$d/SCORE") == score - 1 || $(cat "$d/SCORE") == score + 1)) || fail "SCORE $(cat "$d/SCORE") vs status $score"
[[ $(cat "$d/TRACK_203.0.113.1") =~ ^(up|skipped)$ ]] || fail "TRACK_203.0.113.1 is $(cat "$d/TRACK_203.0.113.1")"
ul_snapshot_end
turn0=$(cat "$d/TURN")
sleep 1.5
(($(cat "$d/TURN") > turn0)) || fail "TURN did not advance in 1.5 s at interval 0.3 ($turn0 -> $(cat "$d/TURN"))"
[[ ! -e $RUN/mwan3track/wanx && ! -e $RUN/mwan3/iface_state/wanx ]] || fail "files for the disabled wanx exist"
left=$(find "$RUN" -name '*.tmp' | head -3)
[[ -z $left ]] || fail "temporary files left: $left"
pass "state files: STATUS/iface_state online, ONLINE an uptime instant, OFFLINE 0, SCORE, TRACK_, TURN advancing; none for wanx"

stop_uplinkd || fail "uplinkd did not stop cleanly"
[[ -z $(find "$RUN" -mindepth 1 | head -3) ]] || fail "state files left after a full stop: $(find "$RUN" -mindepth 1 | head -3)"
pass "a full stop removed the state files and their directories"
log "PASS: test_mwan3_command"
