#!/usr/bin/env bash
# Reload without restart (`uplinkctl reload` and SIGHUP), on the lab:
#   - a long-lived TCP connection from the LAN via wan1 keeps flowing through every reload below;
#   - a reload that changes weights and adds a rule: the uplinks keep their tracking (no transition,
#     no hook event), mwan3's ip rules stay as they are, and the new rule takes effect for new flows;
#   - per-rule packet counters follow their rule by name when a reload renumbers the rules;
#   - wan1 probed differently (same id and mark): a new monitor, and its flows keep going;
#   - a config with an error is refused with file:line: option, uplinkctl exits non-zero, and the
#     running configuration keeps working (status, rules and the flow unchanged);
#   - SIGHUP does the same: a good config disabling wan2 removes wan2's ip rules and tracking, a bad
#     one is logged and refused;
#   - stopping uplinkd leaves the router's rules and routes as they were before it started.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init reload daemon

P=$UL_PREFIX
ul_lab_up
make_hook
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" 0.5 1 3 3

# with_rule_to_core3: balanced 3:2 instead of failover, and a rule sending 203.0.113.3 to wan2 only.
with_rule_to_core3() {
  sed -e "s/option metric '2'/option metric '1'/" "$CFG.orig"
  cat <<'EOF2'

config member 'wan2_only'
	option interface 'wan2'

config policy 'backup'
	list use_member 'wan2_only'
EOF2
}
cp "$CFG" "$CFG.orig"

before=$(rtr_routing_snapshot "$P")
ip netns exec "$P-rtr" nft -f - <<'NFT' || fail "cannot add the counting table"
table inet ulcount {
  counter tcp_wan1 { }
  counter tcp_wan2 { }
  counter wan1 { }
  counter wan2 { }
  chain post {
    type filter hook postrouting priority 0;
    oifname "wan1" tcp dport 7000 counter name "tcp_wan1"
    oifname "wan2" tcp dport 7000 counter name "tcp_wan2"
    oifname "wan1" udp dport 9999 counter name "wan1"
    oifname "wan2" udp dport 9999 counter name "wan2"
  }
}
NFT
count() { ip netns exec "$P-rtr" nft list counter inet ulcount "$1" | awk '/packets/ { print $2 }'; }
# table_flips: how many times the classifier's rule tables were rewritten and flipped
# (rule_tbl_sel.generation, maps/uplinkd_maps.h), read from the pin with bpftool.
table_flips() {
  rtr_exec bpftool -j map lookup pinned "/sys/fs/bpf/uplinkd/$UPLINKD_INSTANCE/rule_tbl_sel" key 0 0 0 0 |
    python3 -c 'import json, sys; v = json.load(sys.stdin)["value"]; print(int.from_bytes(bytes(int(b, 16) for b in v[4:8]), "little"))'
}
# rule_packets <name>: the rule's new-flow packet counter from `uplinkctl rules --json`, -1 if absent.
rule_packets() {
  ctl rules --json | python3 -c '
import json, sys
data = json.load(sys.stdin)
rules = data["rules"] if isinstance(data, dict) else data
print(next((r["packets"] for r in rules if r["name"] == sys.argv[1]), -1))' "$1"
}
reset_udp() {
  ip netns exec "$P-rtr" nft reset counter inet ulcount wan1 >/dev/null
  ip netns exec "$P-rtr" nft reset counter inet ulcount wan2 >/dev/null
}
flows() {
  ip netns exec "$P-lan" timeout 30 python3 -c '
import socket, sys
n, dest, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.10.0.2", port + i))
    s.sendto(b"x", (dest, 9999))
    s.close()' "$1" "$2" "$3"
  sleep 0.5
}

# The long-lived connection: an echo server in the core, a client in the LAN sending one line every
# 0.1 s for at most 90 s and counting answers in a file; it exits non-zero at the first failure.
ip netns exec "$P-core" timeout 120 python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.4", 7000)); s.listen(1)
c, _ = s.accept()
while True:
    d = c.recv(256)
    if not d: break
    c.sendall(d)' &
ul_bg_add $!
ECHOES=$UL_TMP/echoes
start_client() {
  ip netns exec "$P-lan" timeout 100 python3 -c '
import os, socket, sys, time
c = socket.create_connection(("203.0.113.4", 7000), timeout=3)
n = 0
end = time.time() + 90
while time.time() < end:
    c.sendall(b"ping\n")
    if c.recv(64) != b"ping\n":
        print("bad echo after %d" % n); sys.exit(1)
    n += 1
    with open(sys.argv[1] + ".tmp", "w") as f: f.write("%d\n" % n)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])  # the reader never sees a half-written count
    time.sleep(0.1)' "$ECHOES" >"$UL_TMP/client.out" 2>&1 &
  CLIENT_PID=$!
  ul_bg_add "$CLIENT_PID"
}
echoes() { cat "$ECHOES" 2>/dev/null || echo 0; }
# flow_alive <what>: the client is still running and got new echoes within 2 s.
flow_alive() {
  local a b
  a=$(echoes)
  sleep 2
  b=$(echoes)
  kill -0 "$CLIENT_PID" 2>/dev/null || fail "the long-lived TCP connection ended $1: $(cat "$UL_TMP/client.out")"
  ((b > a)) || fail "the long-lived TCP connection stalled $1 ($a -> $b echoes)"
  info "TCP connection alive $1: $a -> $b echoes, wan1 $(count tcp_wan1) / wan2 $(count tcp_wan2) packets"
}
transitions() { iface_get "$1" transitions; }
uplink_rules() { ip -n "$P-rtr" -4 rule show | grep -E '^(1|2|3)00[0-9]:|^206[12]:'; }

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
ul_wait_tracking wan1 wan2
start_client
sleep 1
flow_alive "before any reload"
((count_w2 = $(count tcp_wan2), count_w2 == 0)) || fail "the TCP connection used wan2 ($count_w2 packets); expected wan1"
pass "a long-lived TCP connection runs via wan1"

# ---- a good reload: weights change, a rule is added ----------------------------------------
t1=$(transitions wan1) t2=$(transitions wan2) hooks=$(hook_count) rules_before=$(uplink_rules)
reset_udp
flows 40 203.0.113.3 30000
[[ $(count wan1) == 40 ]] || fail "before the reload 203.0.113.3 should go by wan1: wan1 $(count wan1), wan2 $(count wan2)"
default_packets=$(rule_packets default_rule)
((default_packets >= 40)) || fail "default_rule counted $default_packets new-flow packets, expected at least 40"
with_rule_to_core3 >"$CFG"
cat >>"$CFG" <<'EOF2'

config rule 'to_core3'
	option dest_ip '203.0.113.3'
	option dst_port '443'
	option use_policy 'backup'
EOF2
# The new rule must come before the default rule: rewrite the file with it first.
python3 - "$CFG" <<'PY'
import sys, re
t = open(sys.argv[1]).read()
blocks = re.split(r"\n(?=config )", t)
rule = [b for b in blocks if b.startswith("config rule 'to_core3'")]
rest = [b for b in blocks if not b.startswith("config rule 'to_core3'")]
i = next(k for k, b in enumerate(rest) if b.startswith("config rule 'default_rule'"))
open(sys.argv[1], "w").write("\n".join(rest[:i] + rule + rest[i:]) + "\n")
PY
flips=$(table_flips)
out=$(ctl reload 2>&1) || fail "uplinkctl reload failed: $out"
info "uplinkctl reload: $out"
grep -q "kept wan1,wan2" <<<"$out" || fail "reload summary does not say both uplinks were kept: $out"
(($(table_flips) == flips + 1)) || fail "a reload that added a rule flipped the rule tables $(($(table_flips) - flips)) times, not once"
flow_alive "after a reload that changed weights and added a rule"
[[ $(transitions wan1) == "$t1" && $(transitions wan2) == "$t2" ]] ||
  fail "reload caused tracker transitions (wan1 $t1 -> $(transitions wan1), wan2 $t2 -> $(transitions wan2))"
[[ $(hook_count) == "$hooks" ]] || fail "reload caused hook events: $(hook_since "$hooks")"
[[ $(uplink_rules) == "$rules_before" ]] || fail "reload changed mwan3's ip rules of the kept uplinks: $(diff <(echo "$rules_before") <(uplink_rules))"
pass "reload kept both uplinks' tracking (no transition, no hook event) and their ip rules"
# to_core3 now sits where default_rule was: the counters follow the rule's name, not the position.
after_default=$(rule_packets default_rule) after_new=$(rule_packets to_core3)
((after_default >= default_packets && after_new == 0)) ||
  fail "per-rule counters did not follow the rules: default_rule $default_packets -> $after_default, new to_core3 $after_new"
pass "per-rule counters follow each rule by name across a reload that renumbers them (default_rule $after_default, to_core3 0)"
ctl rules | grep -q to_core3 || fail "uplinkctl rules does not show the new rule: $(ctl rules)"
ctl policies | grep -q "wan2 (40%)" || fail "the new weights are not in force: $(ctl policies)"
reset_udp
flows 40 203.0.113.3 31000
[[ $(count wan2) == 40 && $(count wan1) == 0 ]] || fail "the new rule: wan1 $(count wan1), wan2 $(count wan2) (expected all 40 on wan2)"
pass "the new rule takes effect for new flows (40 of 40 to 203.0.113.3 on wan2), weights 3:2 in force"
# Its misspelt dst_port is ignored, as mwan3 ignores it (the rule matched UDP to port 31000 above),
# but said once in the log and by --check-config, with its line and the name meant.
typo_line=$(grep -n "option dst_port" "$CFG" | cut -d: -f1)
typo="$CFG:$typo_line: option 'dst_port': unknown in rule 'to_core3', ignored; did you mean 'dest_port'?"
[[ $(grep -cF -- "$typo" "$UPLINKD_LOG") == 1 ]] || fail "the log does not say once: $typo"
out=$("$UPLINKD" --check-config --config "$CFG" 2>&1) || fail "--check-config refused a config with an unknown option: $out"
grep -qF -- "warning: $typo" <<<"$out" || fail "--check-config does not warn: $typo (it printed: $out)"
grep -q "OK (1 warning(s) above)" <<<"$out" || fail "--check-config does not count the warning: $out"
pass "an unknown rule option is ignored and named once with file, line and the likely name (log, --check-config)"
((count_w2 = $(count tcp_wan2), count_w2 == 0)) || fail "the established connection moved to wan2 ($count_w2 packets)"
pass "the established TCP connection stayed on wan1 through the reload"

# ---- a bad config is refused -------------------------------------------------------------------
cp "$CFG" "$CFG.good"
sed -i "s/option use_policy 'backup'/option use_policy 'no_such_policy'/" "$CFG"
line=$(grep -n "no_such_policy" "$CFG" | cut -d: -f1)
status_before=$(ctl policies)
out=$(ctl reload 2>&1) && fail "uplinkctl reload accepted a config naming an unknown policy: $out"
info "refused: $out"
grep -q "$CFG:$line" <<<"$out" || fail "the refusal does not name $CFG:$line: $out"
grep -q "use_policy" <<<"$out" || fail "the refusal does not name the option use_policy: $out"
uplinkd_alive || fail "uplinkd died on a bad reload"
[[ $(ctl policies) == "$status_before" ]] || fail "policies changed after a refused reload"
ctl rules | grep -q to_core3 || fail "the running rules were lost after a refused reload"
reset_udp
flows 20 203.0.113.3 32000
[[ $(count wan2) == 20 ]] || fail "after a refused reload the running rule no longer works: wan1 $(count wan1), wan2 $(count wan2)"
flow_alive "after a refused reload"
pass "a bad config is refused naming $CFG:$line and use_policy; the running one keeps working"

# ---- wan1 probed differently (same id and mark): re-tracked, its flows keep going ---------------
sed -e "/config interface 'wan1'/,/^\$/ s/option timeout '1'/option timeout '2'/" "$CFG.good" >"$CFG"
flips=$(table_flips)
out=$(ctl reload 2>&1) || fail "reload with wan1's timeout changed failed: $out"
info "uplinkctl reload: $out"
grep -q "kept wan2, retracked wan1" <<<"$out" || fail "reload summary does not say wan1 was re-tracked: $out"
wait_iface_state wan1 online 10 || fail "wan1 not online after it was re-tracked (state ${UL_LAST_STATE})"
flow_alive "after wan1 was re-tracked with another timeout"
((count_w2 = $(count tcp_wan2), count_w2 == 0)) || fail "the connection moved to wan2 after wan1 was re-tracked"
pass "wan1 re-tracked with new settings (same id and mark): its TCP connection kept going on wan1"
(($(table_flips) == flips)) || fail "a reload that left every rule as it was rewrote the rule tables ($flips -> $(table_flips) flips)"
pass "a reload that changes no rule leaves the classifier's tables alone; one that adds a rule flips them once"

# ---- SIGHUP ----------------------------------------------------------------------------------------
# A good config that disables wan2 (and drops the rule): wan2's ip rules and tracking go.
sed -e "/config interface 'wan2'/,/^\$/ s/option enabled '1'/option enabled '0'/" "$CFG.orig" >"$CFG"
marker=$(($(wc -l <"$UPLINKD_LOG") + 1))
kill -HUP "$UPLINKD_PID"
for ((i = 0; i < 50; i++)); do
  tail -n "+$marker" "$UPLINKD_LOG" | grep -q "reloaded .*removed wan2" && break
  sleep 0.1
done
tail -n "+$marker" "$UPLINKD_LOG" | grep -q "reloaded .*removed wan2" || fail "SIGHUP did not reload (log: $(tail -n "+$marker" "$UPLINKD_LOG"))"
[[ $(iface_get wan2 state) == disabled ]] || fail "wan2 is $(iface_get wan2 state) after SIGHUP disabled it"
ip -n "$P-rtr" rule show | grep -qE '^(1002|2002|3002):' && fail "wan2's ip rules are still there: $(ip -n "$P-rtr" rule show)"
ctl rules | grep -q to_core3 && fail "the dropped rule is still there after SIGHUP"
flow_alive "after SIGHUP disabled wan2"
pass "SIGHUP reloads like uplinkctl reload: wan2 disabled, its ip rules gone, the rule dropped, the flow on wan1 continues"
cp "$CFG.good" "$CFG"
sed -i "s/option use_policy 'backup'/option use_policy 'no_such_policy'/" "$CFG"
marker=$(($(wc -l <"$UPLINKD_LOG") + 1))
kill -HUP "$UPLINKD_PID"
for ((i = 0; i < 50; i++)); do
  tail -n "+$marker" "$UPLINKD_LOG" | grep -q "reload refused" && break
  sleep 0.1
done
tail -n "+$marker" "$UPLINKD_LOG" | grep -q "reload refused.*use_policy" || fail "SIGHUP with a bad config: no refusal in the log"
uplinkd_alive || fail "uplinkd died on SIGHUP with a bad config"
[[ $(iface_get wan2 state) == disabled ]] || fail "a refused SIGHUP changed the running configuration"
flow_alive "after a refused SIGHUP"
pass "SIGHUP with a bad config: refused in the log ($(tail -n "+$marker" "$UPLINKD_LOG" | grep -o "$CFG:[0-9]*: option '[a-z_]*'" | head -n1)), running config kept"

# Back to both uplinks: wan2 is tracked again.
cp "$CFG.orig" "$CFG"
out=$(ctl reload 2>&1) || fail "reload back to the first config failed: $out"
wait_iface_state wan2 online 15 || fail "wan2 not online again after it was re-enabled"
flow_alive "after wan2 came back"
pass "re-enabling wan2 by reload brings it back online"

[[ $(grep -cF -- "$typo" "$UPLINKD_LOG") == 1 ]] || fail "a reload repeated the warning for the same unknown option"
pass "the reloads after it did not repeat the warning"

ul_kill "$CLIENT_PID" TERM
stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
ip netns exec "$P-rtr" nft delete table inet ulcount
after=$(rtr_routing_snapshot "$P")
if [[ $before != "$after" ]]; then
  diff <(echo "$before") <(echo "$after") | sed 's/^/    /'
  fail "the router's rules and routes differ from before uplinkd started"
fi
pass "stopping uplinkd leaves the router's rules and routes exactly as before"
