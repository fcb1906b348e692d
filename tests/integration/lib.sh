# shellcheck shell=bash source-path=SCRIPTDIR
# shellcheck disable=SC2034 # globals set here are read by the tests
# Shared helpers for tests/integration/test_*.sh and demo/run. Source it; it only defines things.
#
# A test calls `ul_init <name> [daemon]` first: root and tools checked (else exit 77), a unique lab
# prefix (UL_PREFIX, e.g. ul12345), a private temp dir (UL_TMP), and an EXIT/INT/TERM trap that stops
# every process the test started, deletes the lab namespaces and the temp dir (kept on failure).
#
# Where uplinkd runs, and why a "holder" process:
#   `ip netns exec` gives each command a new mount namespace with a fresh /sys, and a bpffs mount is
#   its own instance (bpffs is a nodev filesystem), so pins made under one `ip netns exec` are
#   invisible to the next one and vanish with it. A real router has one persistent /sys/fs/bpf. To
#   test what a real router would see (pins left behind after SIGTERM, a restart finding the pins of
#   the previous run), the lib starts one holder per lab:
#       ip netns exec <prefix>-rtr sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec sleep 3600'
#   and runs uplinkd, uplinkctl and every bpffs check with `nsenter -t <holder> -m -n` (rtr_exec): the
#   router's network namespace plus that one mount namespace, where /sys shows the router's devices
#   and /sys/fs/bpf is one bpffs that outlives each daemon. start_uplinkd runs exactly the command of
#   the contract in there:  sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec uplinkd ...'
#   The holder lives in the lab's namespace, so lab_down ends it with everything else.

UL_SOURCE=${UPLINKD_SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
UL_BUILD=${UPLINKD_BUILD:-$UL_SOURCE/build}
UPLINKD=${UPLINKD:-$UL_BUILD/uplinkd}
UPLINKCTL=${UPLINKCTL:-$UL_BUILD/uplinkctl}
# shellcheck source=../../lab/lab.sh
source "$UL_SOURCE/lab/lab.sh"

UL_NAME=${UL_NAME:-uplinkd}
UL_PREFIX=
UL_TMP=
UL_HOLDER_PID=
UL_HOLDER_PREFIX=
UL_BG_PIDS=()
UL_FAILED=0
UL_DIAG_DONE=0
UPLINKD_PID=
UPLINKD_PREFIX=
UPLINKD_LOG=
UPLINKD_SOCK=
UPLINKD_INSTANCE=
UPLINKD_EXIT=
UPLINKD_LOG_LEVEL=${UPLINKD_LOG_LEVEL:-debug}
# Put into the daemon's environment; the hook must never see it (env -i).
UL_CANARY=UPLINKD_TEST_CANARY

# ---------------------------------------------------------------------------------------------
# Output, verdicts
# ---------------------------------------------------------------------------------------------
log() { printf '[%s %s] %s\n' "$(date +%T.%3N)" "$UL_NAME" "$*"; }
info() { log "    $*"; }
pass() { log "PASS: $*"; }
skip() {
  log "SKIP: $*"
  exit 77
}
# fail <message>: print it, the daemon's log and `uplinkctl status`, then exit 1 (the trap cleans up).
fail() {
  UL_FAILED=1
  log "FAIL: $*"
  ul_diag
  exit 1
}

now() { date +%s.%N; }
# fsub <a> <b>: b - a, 3 decimals.
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# fle <a> <b>: true when a <= b (floats).
fle() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
# fcalc <awk expression>
fcalc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
# ul_scaled <seconds>: a wait or time bound stretched by UL_TIME_SCALE (a number >= 1, default 1),
# for slow machines: vmtest's VMs run under software emulation and set it (vmtest/guest.sh).
ul_scaled() { fcalc "$1 * ${UL_TIME_SCALE:-1}"; }

# ---------------------------------------------------------------------------------------------
# Setup and teardown
# ---------------------------------------------------------------------------------------------
# ul_init <test name> [daemon]: checks (exit 77 when the test cannot run here), prefix, temp dir, trap.
ul_init() {
  UL_NAME=$1
  local need_daemon=${2:-} t
  [[ $(id -u) == 0 ]] || skip "needs root (creates network namespaces)"
  for t in ip nft ping tc nsenter unshare timeout python3 awk; do
    command -v "$t" >/dev/null 2>&1 || skip "needs '$t'"
  done
  if [[ -n $need_daemon ]]; then
    [[ -x $UPLINKD ]] || skip "no uplinkd at $UPLINKD (build first; UPLINKD_BUILD=${UPLINKD_BUILD:-unset})"
    [[ -x $UPLINKCTL ]] || skip "no uplinkctl at $UPLINKCTL (build first)"
  fi
  UL_PREFIX=ul$$
  lab_exists "$UL_PREFIX" && UL_PREFIX=ul$$r$RANDOM
  UL_TMP=$(mktemp -d "/tmp/uplinkd-it.$UL_NAME.XXXXXX") || skip "cannot create a temp dir"
  chmod 755 "$UL_TMP"
  trap ul_cleanup EXIT
  trap 'log "interrupted"; UL_FAILED=1; exit 130' INT
  trap 'log "terminated"; UL_FAILED=1; exit 143' TERM
  log "test $UL_NAME: prefix $UL_PREFIX, temp dir $UL_TMP"
}

# ul_lab_up: build the lab for UL_PREFIX, fail the test if it cannot be built.
ul_lab_up() {
  local t0 out
  t0=$(now)
  out=$(lab_up "$UL_PREFIX" 2>&1) || fail "lab_up $UL_PREFIX: $out"
  info "lab $UL_PREFIX up in $(fsub "$t0" "$(now)") s"
}

# _ul_pstate <pid>: the process state letter (R, S, D, Z, ...), or nothing if there is no such process.
_ul_pstate() { sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null; }

# _ul_reap <pid> <seconds>: wait for a child to end (bounded); 0 = ended (status in UL_REAPED).
_ul_reap() {
  local pid=$1 secs=$2 i n state
  n=$(awk -v s="$secs" 'BEGIN { printf "%d", s * 10 }')
  UL_REAPED=
  for ((i = 0; i <= n; i++)); do
    state=$(_ul_pstate "$pid")
    if [[ -z $state || $state == Z || $state == X ]]; then
      wait "$pid" 2>/dev/null
      UL_REAPED=$?
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# ul_kill <pid> [signal]: signal a child, wait ≤ 3 s, then SIGKILL.
ul_kill() {
  local pid=$1 sig=${2:-TERM}
  [[ -n $pid ]] || return 0
  kill "-$sig" "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  _ul_reap "$pid" 3 && return 0
  kill -KILL "$pid" 2>/dev/null
  _ul_reap "$pid" 2
}

ul_bg_add() { UL_BG_PIDS+=("$1"); }

ul_cleanup() {
  local rc=$? pid left
  set +e
  trap - INT TERM
  ((rc != 0 && rc != 77)) && UL_FAILED=1
  if ((UL_FAILED)) && ((UL_DIAG_DONE == 0)); then ul_diag; fi
  for pid in "${UL_BG_PIDS[@]}"; do ul_kill "$pid" INT; done
  UL_BG_PIDS=()
  if [[ -n $UPLINKD_PID ]]; then
    stop_uplinkd >/dev/null 2>&1 || true
  fi
  if [[ -n $UL_HOLDER_PID ]]; then
    ul_kill "$UL_HOLDER_PID"
    UL_HOLDER_PID=
  fi
  if [[ -n $UL_PREFIX ]]; then
    lab_down "$UL_PREFIX" || rc=1
    left=$(lab_nodes | while read -r n; do [[ -e /run/netns/$UL_PREFIX-$n ]] && echo "$UL_PREFIX-$n"; done)
    if [[ -n $left ]]; then
      log "cleanup: namespaces left behind: $left"
      rc=1
    fi
  fi
  if [[ -n $UL_TMP && -d $UL_TMP ]]; then
    if ((UL_FAILED)) || [[ -n ${UL_KEEP:-} ]]; then
      log "kept $UL_TMP (logs, configs)"
    else
      rm -rf "$UL_TMP"
    fi
  fi
  if [[ -z ${UL_NO_RESULT:-} ]]; then
    if ((rc == 0)); then log "result: PASS"; elif ((rc == 77)); then log "result: SKIP"; else log "result: FAIL ($rc)"; fi
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# The router's execution context (see the header)
# ---------------------------------------------------------------------------------------------
# ensure_rtr_holder <prefix>: start the holder of the router's mount namespace (bpffs) once.
ensure_rtr_holder() {
  local p=$1 i
  if [[ -n $UL_HOLDER_PID && $UL_HOLDER_PREFIX == "$p" ]] && kill -0 "$UL_HOLDER_PID" 2>/dev/null; then
    return 0
  fi
  ip netns exec "$p-rtr" sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || exit 1; exec sleep 3600' \
    </dev/null >/dev/null 2>&1 &
  UL_HOLDER_PID=$!
  UL_HOLDER_PREFIX=$p
  # Ready once the shell has mounted bpffs and exec'd sleep (before, its mount ns is not final).
  for ((i = 0; i < 50; i++)); do
    [[ $(cat "/proc/$UL_HOLDER_PID/comm" 2>/dev/null) == sleep ]] && return 0
    kill -0 "$UL_HOLDER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "cannot start the router's mount-namespace holder (bpffs mount failed?)"
  return 1
}

# rtr_exec cmd...: run in the router's network namespace and the holder's mount namespace.
rtr_exec() {
  [[ -n $UL_HOLDER_PID ]] || { log "rtr_exec: no holder (call ensure_rtr_holder)"; return 1; }
  nsenter -t "$UL_HOLDER_PID" -m -n -- "$@"
}

# ---------------------------------------------------------------------------------------------
# uplinkd and uplinkctl
# ---------------------------------------------------------------------------------------------
# start_uplinkd <prefix> <config> [extra uplinkd args...]: start the daemon in the background inside
# the router (stdout+stderr appended to UPLINKD_LOG). Sets UPLINKD_PID. Defaults: --socket
# $UL_TMP/uplinkd.sock --instance <prefix> --foreground --log-level $UPLINKD_LOG_LEVEL
# --state-dir $UL_TMP/run (unless the args give --state-dir).
start_uplinkd() {
  local p=$1 cfg=$2
  shift 2
  ensure_rtr_holder "$p" || return 1
  UPLINKD_PREFIX=$p
  UPLINKD_SOCK=$UL_TMP/uplinkd.sock
  UPLINKD_INSTANCE=$p
  UPLINKD_LOG=$UL_TMP/uplinkd.log
  UPLINKD_EXIT=
  rm -f "$UPLINKD_SOCK"
  # mwan3's state files go to the test's own directory unless the test says where (never /var/run).
  local a state=(--state-dir "$UL_TMP/run")
  for a in "$@"; do [[ $a == --state-dir* ]] && state=(); done
  mkdir -p "$UL_TMP/run"
  local cmd=("$UPLINKD" --config "$cfg" --socket "$UPLINKD_SOCK" --instance "$UPLINKD_INSTANCE"
    --foreground --log-level "$UPLINKD_LOG_LEVEL" "${state[@]}" "$@")
  printf '=== %s start: %s\n' "$(date +%T.%3N)" "${cmd[*]}" >>"$UPLINKD_LOG"
  env "$UL_CANARY=must-not-reach-the-hook" \
    nsenter -t "$UL_HOLDER_PID" -m -n -- \
    sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec "$@"' uplinkd "${cmd[@]}" \
    </dev/null >>"$UPLINKD_LOG" 2>&1 &
  UPLINKD_PID=$!
  info "uplinkd started (pid $UPLINKD_PID, config $cfg${*:+, args $*})"
}

# uplinkd_alive: the daemon started by start_uplinkd is still running (not exited, not a zombie).
uplinkd_alive() {
  local st
  [[ -n $UPLINKD_PID ]] || return 1
  st=$(_ul_pstate "$UPLINKD_PID")
  [[ -n $st && $st != Z && $st != X ]]
}

# stop_uplinkd: SIGTERM, wait ≤ 10 s. Sets UPLINKD_EXIT (exit status). Returns 1 if it had to be
# killed (did not stop within 10 s) or exited non-zero (a clean stop exits 0; 143 means SIGTERM's
# default action killed it, skipping its cleanup).
stop_uplinkd() {
  local pid=$UPLINKD_PID t0
  [[ -n $pid ]] || return 0
  t0=$(now)
  kill -TERM "$pid" 2>/dev/null
  if _ul_reap "$pid" 10; then
    UPLINKD_EXIT=$UL_REAPED
    UPLINKD_PID=
    info "uplinkd stopped by SIGTERM in $(fsub "$t0" "$(now)") s, exit status $UPLINKD_EXIT"
    if [[ $UPLINKD_EXIT != 0 ]]; then
      log "uplinkd exited with status $UPLINKD_EXIT on SIGTERM, not 0: not a clean stop"
      return 1
    fi
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null
  _ul_reap "$pid" 3
  UPLINKD_EXIT=$UL_REAPED
  UPLINKD_PID=
  log "uplinkd did not stop within 10 s of SIGTERM; killed"
  return 1
}

# ctl args...: uplinkctl --socket $UPLINKD_SOCK args... inside the router (≤ 10 s).
ctl() {
  timeout 10 nsenter -t "$UL_HOLDER_PID" -m -n -- "$UPLINKCTL" --socket "$UPLINKD_SOCK" "$@"
}

# wait_uplinkd_ready [seconds=15]: until `uplinkctl status` answers. 1 if the daemon died or timed out.
wait_uplinkd_ready() {
  local secs=${1:-15} t0 i n
  t0=$(now)
  n=$(awk -v s="$secs" 'BEGIN { printf "%d", s * 5 }')
  for ((i = 0; i < n; i++)); do
    uplinkd_alive || { log "uplinkd exited before answering (status: $(_ul_exit_of_dead))"; return 1; }
    if ctl status >/dev/null 2>&1; then
      info "uplinkd answers on $UPLINKD_SOCK after $(fsub "$t0" "$(now)") s"
      return 0
    fi
    sleep 0.2
  done
  log "uplinkd did not answer within $secs s"
  return 1
}

_ul_exit_of_dead() {
  [[ -n $UPLINKD_PID ]] || { echo "not started"; return; }
  if _ul_reap "$UPLINKD_PID" 0.1; then
    UPLINKD_EXIT=$UL_REAPED
    UPLINKD_PID=
    echo "exit $UPLINKD_EXIT"
  else
    echo running
  fi
}

_UL_PY_GET='
import json, sys
iface, path = sys.argv[1], sys.argv[2]
try:
    d = json.load(sys.stdin)
except Exception as e:
    print("bad json: %s" % e, file=sys.stderr); sys.exit(2)
for i in d.get("interfaces", []):
    if i.get("name") != iface:
        continue
    v = i
    for k in [k for k in path.split(".") if k]:
        if isinstance(v, list):
            v = v[int(k)]
        elif isinstance(v, dict) and k in v:
            v = v[k]
        else:
            print("no field %s" % path, file=sys.stderr); sys.exit(4)
    if isinstance(v, bool):
        print("true" if v else "false")
    elif isinstance(v, (dict, list)):
        print(json.dumps(v))
    else:
        print(v)
    sys.exit(0)
print("no interface %s" % iface, file=sys.stderr); sys.exit(3)
'
_UL_PY_SUMMARY='
import json, sys
d = json.load(sys.stdin)
for i in d.get("interfaces", []):
    p = i.get("probes", {})
    t = " ".join("%s:%s" % (x.get("ip"), x.get("state")) for x in i.get("targets", []))
    print("%-5s state=%-13s score=%s transitions=%s probes sent=%s replied=%s lost=%s rtt_ms=%s loss_pct=%s [%s]" % (
        i.get("name"), i.get("state"), i.get("score"), i.get("transitions"), p.get("sent"),
        p.get("replied"), p.get("lost"), i.get("rtt_ms"), i.get("loss_pct"), t))
'

# ctl_json: `uplinkctl status --json` on stdout.
ctl_json() { ctl status --json; }

# iface_get <iface> <field[.sub...]>: one value from the JSON status, e.g. `iface_get wan1 state`,
# `iface_get wan1 probes.replied`, `iface_get wan1 targets.0.state`. Non-zero if unavailable.
# With UL_SNAPSHOT set (see ul_snapshot), reads that one snapshot, so values read together agree.
iface_get() {
  local json
  if [[ -n ${UL_SNAPSHOT:-} ]]; then
    json=$UL_SNAPSHOT
  else
    json=$(ctl_json 2>/dev/null) || return 1
  fi
  python3 -c "$_UL_PY_GET" "$1" "$2" <<<"$json"
}

# ul_snapshot: takes one JSON status for the iface_get calls that follow; ul_snapshot_end drops it.
ul_snapshot() { UL_SNAPSHOT=$(ctl_json 2>/dev/null) || UL_SNAPSHOT=""; }
ul_snapshot_end() { UL_SNAPSHOT=""; }

# ul_status_summary: one line per interface from the JSON status (for the test's narration).
ul_status_summary() {
  local json
  json=$(ctl_json 2>&1) || { echo "(uplinkctl status --json failed: $json)"; return 1; }
  python3 -c "$_UL_PY_SUMMARY" <<<"$json" 2>&1 || echo "(unparseable JSON: $json)"
}

# wait_iface_state <iface> <state regex> <seconds>: poll every 0.2 s. Prints nothing; returns 0/1.
# UL_WAITED = seconds waited, UL_LAST_STATE = last state seen.
wait_iface_state() {
  local iface=$1 want=$2 secs=$3 t0 s
  t0=$(now)
  UL_LAST_STATE=
  while fle "$(fsub "$t0" "$(now)")" "$secs"; do
    s=$(iface_get "$iface" state 2>/dev/null) && UL_LAST_STATE=$s
    if [[ $s =~ ^($want)$ ]]; then
      UL_WAITED=$(fsub "$t0" "$(now)")
      return 0
    fi
    uplinkd_alive || return 1
    sleep 0.2
  done
  UL_WAITED=$(fsub "$t0" "$(now)")
  return 1
}

# wait_replied <iface> <n> <seconds>: until probes.replied >= n.
wait_replied() {
  local iface=$1 n=$2 secs=$3 t0 r
  t0=$(now)
  while fle "$(fsub "$t0" "$(now)")" "$secs"; do
    r=$(iface_get "$iface" probes.replied 2>/dev/null) || r=
    if [[ $r =~ ^[0-9]+$ ]] && ((r >= n)); then
      UL_WAITED=$(fsub "$t0" "$(now)")
      return 0
    fi
    uplinkd_alive || return 1
    sleep 0.2
  done
  return 1
}

# ul_wait_tracking <iface...>: the daemon answers and every iface is online with ≥ 2 probe replies.
ul_wait_tracking() {
  local i
  wait_uplinkd_ready 15 || fail "uplinkd is not ready"
  for i in "$@"; do
    wait_iface_state "$i" online 20 || fail "$i not online within 20 s (last state '${UL_LAST_STATE}')"
    wait_replied "$i" 2 20 || fail "$i: fewer than 2 probe replies within 20 s"
  done
  info "tracking: $*"
  ul_status_summary | while read -r l; do info "  $l"; done
}

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
# ul_write_config <file> <interval> <timeout> <down> <up> [extra wan1 option lines]
# Two tracked uplinks like the lab's (mwan3 UCI plus uplinkd's device/gateway extensions), with a
# member/policy/rule set as an OpenWrt user would have.
ul_write_config() {
  local f=$1 iv=$2 to=$3 down=$4 up=$5 extra=${6:-}
  cat >"$f" <<EOF
# uplinkd integration test config (mwan3 UCI)
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan1'
	option enabled '1'
	option family 'ipv4'
	option device 'wan1'
	option gateway '192.0.2.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option track_method 'ping'
	option reliability '1'
	option count '1'
	option timeout '$to'
	option interval '$iv'
	option failure_interval '$iv'
	option recovery_interval '$iv'
	option down '$down'
	option up '$up'
$extra
config interface 'wan2'
	option enabled '1'
	option family 'ipv4'
	option device 'wan2'
	option gateway '198.51.100.1'
	list track_ip '203.0.113.1'
	list track_ip '203.0.113.2'
	option track_method 'ping'
	option reliability '1'
	option count '1'
	option timeout '$to'
	option interval '$iv'
	option failure_interval '$iv'
	option recovery_interval '$iv'
	option down '$down'
	option up '$up'

config member 'wan1_m1_w3'
	option interface 'wan1'
	option metric '1'
	option weight '3'

config member 'wan2_m2_w2'
	option interface 'wan2'
	option metric '2'
	option weight '2'

config policy 'wan1_wan2'
	list use_member 'wan1_m1_w3'
	list use_member 'wan2_m2_w2'
	option last_resort 'unreachable'

config rule 'default_rule'
	option dest_ip '0.0.0.0/0'
	option use_policy 'wan1_wan2'
EOF
  chmod 644 "$f"
}

# ---------------------------------------------------------------------------------------------
# Hook
# ---------------------------------------------------------------------------------------------
# make_hook: a hook script appending one line per event to UL_HOOK_LOG:
#   <epoch.ns> <ACTION> <INTERFACE> <DEVICE or -> <number of env variables> <their names,>
# Sets UL_HOOK (pass `--hook "$UL_HOOK"` to start_uplinkd).
make_hook() {
  UL_HOOK=$UL_TMP/hook.sh
  UL_HOOK_LOG=$UL_TMP/hook.log
  : >"$UL_HOOK_LOG"
  cat >"$UL_HOOK" <<EOF
#!/bin/sh
# uplinkd test hook. Run by uplinkd as: env -i ACTION=... INTERFACE=... DEVICE=... $UL_TMP/hook.sh
ul_env=\$(/usr/bin/env)
PATH=/usr/sbin:/usr/bin:/sbin:/bin
n=\$(printf '%s\n' "\$ul_env" | grep -c .)
names=\$(printf '%s\n' "\$ul_env" | cut -d= -f1 | sort | tr '\n' ',')
echo "\$(date +%s.%N) \${ACTION:--} \${INTERFACE:--} \${DEVICE:--} \$n \$names" >>'$UL_HOOK_LOG'
EOF
  chmod 755 "$UL_HOOK"
}

hook_count() { if [[ -s ${UL_HOOK_LOG:-} ]]; then wc -l <"$UL_HOOK_LOG"; else echo 0; fi; }

# hook_since <n>: hook lines after the first n.
hook_since() { tail -n "+$(($1 + 1))" "$UL_HOOK_LOG" 2>/dev/null; }

# wait_hook <action> <iface> <after line n> <seconds>: wait for the first such line after line n;
# prints its timestamp. Returns 1 on timeout (or if the daemon died).
wait_hook() {
  local action=$1 iface=$2 after=$3 secs=$4 t0 ts
  t0=$(now)
  while fle "$(fsub "$t0" "$(now)")" "$secs"; do
    ts=$(hook_since "$after" | awk -v a="$action" -v i="$iface" '$2 == a && $3 == i { print $1; exit }')
    if [[ -n $ts ]]; then
      echo "$ts"
      return 0
    fi
    uplinkd_alive || return 1
    sleep 0.05
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# Traffic
# ---------------------------------------------------------------------------------------------
# ul_out_counters <prefix> <name=match>...: a table inet ulcount in the router counting, per pair,
# the packets of its output path that match (an nft match), e.g.
#   ul_out_counters "$P" 'icmp_wan1=oifname "wan1" icmp type echo-request'
# Read one with ul_count <name>; the test deletes the table (nft delete table inet ulcount).
ul_out_counters() {
  local p=$1 spec counters="" rules=""
  shift
  for spec in "$@"; do
    counters+="  counter ${spec%%=*} { }"$'\n'
    rules+="    ${spec#*=} counter name \"${spec%%=*}\""$'\n'
  done
  ip netns exec "$p-rtr" nft -f - <<NFT
table inet ulcount {
${counters}  chain out {
    type filter hook output priority 0;
${rules}  }
}
NFT
}
ul_count() { ip netns exec "$UL_PREFIX-rtr" nft list counter inet ulcount "$1" | awk '/packets/ { print $2 }'; }

# ul_source_validation <prefix>: each ISP forwards from the router only packets whose source is in
# its own prefix (BCP 38), as real ISPs do, counting what it drops; ul_spoofed <isp> reads the count.
ul_source_validation() {
  local p=$1 isp
  for isp in isp1:192.0.2.0/24 isp2:198.51.100.0/24; do
    ip netns exec "$p-${isp%%:*}" nft -f - <<NFT || return 1
table inet ulbcp38 {
  counter spoofed { }
  chain validate {
    type filter hook forward priority -10;
    iifname "rtr" ip saddr != ${isp#*:} counter name "spoofed" drop
  }
}
NFT
  done
}
ul_spoofed() { ip netns exec "$UL_PREFIX-$1" nft list counter inet ulbcp38 spoofed | awk '/packets/ { print $2 }'; }

# start_burst_pinger <prefix> <seconds> [interval=0.01] [target=203.0.113.3] [dev=wan1]:
# a persistent ping on the router (one socket, like Telegraf's) flooding the ICMP budget of wan1.
# Output in UL_BURST_OUT; pid in UL_BURST_PID.
start_burst_pinger() {
  local p=$1 secs=$2 iv=${3:-0.01} target=${4:-203.0.113.3} dev=${5:-wan1}
  UL_BURST_OUT=$UL_TMP/burst.$RANDOM.out
  ip netns exec "$p-rtr" ping -I "$dev" -q -n -i "$iv" -w "$secs" "$target" </dev/null >"$UL_BURST_OUT" 2>&1 &
  UL_BURST_PID=$!
  ul_bg_add "$UL_BURST_PID"
  info "burst pinger: ping -I $dev -i $iv -w $secs $target (pid $UL_BURST_PID)"
}

# stop_burst_pinger: SIGINT it; prints its summary line (transmitted/received/loss).
stop_burst_pinger() {
  [[ -n ${UL_BURST_PID:-} ]] || return 0
  ul_kill "$UL_BURST_PID" INT
  UL_BURST_PID=
  grep -E 'packets transmitted' "$UL_BURST_OUT" || echo "(no summary)"
}

# oneshot_pings <prefix> <dev> <target> <max count> <max seconds> <spacing>: mwan3track-style
# one-shot pings (`ping -I dev -c 1 -W 1`, a new process and socket each). Sets ONESHOT_TOTAL and
# ONESHOT_FAIL. If ONESHOT_EVERY (seconds) and ONESHOT_CALLBACK are set, calls the callback that often.
oneshot_pings() {
  local p=$1 dev=$2 target=$3 max=$4 secs=$5 spacing=$6 t0 last
  ONESHOT_TOTAL=0
  ONESHOT_FAIL=0
  t0=$(now)
  last=$t0
  while ((ONESHOT_TOTAL < max)) && fle "$(fsub "$t0" "$(now)")" "$secs"; do
    ONESHOT_TOTAL=$((ONESHOT_TOTAL + 1))
    timeout 3 ip netns exec "$p-rtr" ping -I "$dev" -n -c 1 -W 1 "$target" >/dev/null 2>&1 ||
      ONESHOT_FAIL=$((ONESHOT_FAIL + 1))
    if [[ -n ${ONESHOT_CALLBACK:-} ]] && ! fle "$(fsub "$last" "$(now)")" "${ONESHOT_EVERY:-5}"; then
      last=$(now)
      "$ONESHOT_CALLBACK"
    fi
    sleep "$spacing"
  done
}

# ---------------------------------------------------------------------------------------------
# Datapath and routing state of the router
# ---------------------------------------------------------------------------------------------
# xdp_on <prefix> <dev>: true if an XDP program (any mode) is attached to dev.
xdp_on() {
  ip -n "$1-rtr" -d link show dev "$2" 2>/dev/null | grep -Eq '(^|[^A-Za-z])xdp(generic|drv|offload|multi)?([^A-Za-z]|$)|prog/xdp'
}

# tc_filters <prefix> <dev>: every tc filter on dev's ingress and egress hooks (empty: none).
tc_filters() {
  local dir
  for dir in ingress egress; do
    ip netns exec "$1-rtr" tc filter show dev "$2" "$dir" 2>/dev/null | sed "s/^/$dir: /"
  done
}

# assert_no_datapath <prefix> <what happened> <dev...>: no XDP program and no tc filter on each dev.
assert_no_datapath() {
  local p=$1 what=$2 dev f bad=0
  shift 2
  for dev in "$@"; do
    if xdp_on "$p" "$dev"; then
      log "  $dev: XDP program still attached after $what:"
      ip -n "$p-rtr" -d link show dev "$dev" | sed 's/^/      /'
      bad=1
    fi
    f=$(tc_filters "$p" "$dev")
    if [[ -n $f ]]; then
      log "  $dev: tc filters still present after $what:"
      printf '%s\n' "$f" | sed 's/^/      /'
      bad=1
    fi
    # bpftool also lists attachments tc does not show (e.g. tcx links on kernels >= 6.6).
    if command -v bpftool >/dev/null 2>&1; then
      f=$(ip netns exec "$p-rtr" bpftool net show dev "$dev" 2>/dev/null | grep -F "$dev(" || true)
      if [[ -n $f ]]; then
        log "  $dev: BPF programs still attached after $what (bpftool net show):"
        printf '%s\n' "$f" | sed 's/^/      /'
        bad=1
      fi
    fi
  done
  ((bad == 0)) || fail "datapath left attached after $what"
  pass "no XDP program and no tc filter on $* after $what"
}

# rtr_routing_snapshot <prefix>: policy rules and every routing table, IPv4 and IPv6.
rtr_routing_snapshot() {
  local ns=$1-rtr
  echo "## ip -4 rule"; ip -n "$ns" -4 rule show
  echo "## ip -6 rule"; ip -n "$ns" -6 rule show
  echo "## ip -4 route show table all"; ip -n "$ns" -4 route show table all
  echo "## ip -6 route show table all"; ip -n "$ns" -6 route show table all
}

# ---------------------------------------------------------------------------------------------
# Diagnostics (printed by fail)
# ---------------------------------------------------------------------------------------------
ul_diag() {
  UL_DIAG_DONE=1
  echo "----------------------------------------------------------------- diagnostics"
  if [[ -n $UPLINKD_LOG && -f $UPLINKD_LOG ]]; then
    echo "## uplinkd log ($UPLINKD_LOG, last 300 lines; daemon $(uplinkd_alive && echo "running, pid $UPLINKD_PID" || echo "not running${UPLINKD_EXIT:+, exit status $UPLINKD_EXIT}"))"
    tail -n 300 "$UPLINKD_LOG"
  fi
  if [[ -n $UPLINKD_SOCK && -n $UL_HOLDER_PID ]]; then
    echo "## uplinkctl status"
    ctl status 2>&1 | head -n 60
    echo "## uplinkctl status --json"
    ctl status --json 2>&1 | head -c 6000
    echo
  fi
  if [[ -n ${UL_HOOK_LOG:-} && -f ${UL_HOOK_LOG:-} ]]; then
    echo "## hook log ($UL_HOOK_LOG)"
    cat "$UL_HOOK_LOG"
  fi
  if [[ -n $UL_PREFIX && -e /run/netns/$UL_PREFIX-rtr ]]; then
    echo "## router: ip rule / ip route (main) / links"
    ip -n "$UL_PREFIX-rtr" rule show 2>&1
    ip -n "$UL_PREFIX-rtr" route show 2>&1
    ip -n "$UL_PREFIX-rtr" -br link show 2>&1
    echo "## router: banIP drops $(lab_banip_drops "$UL_PREFIX")"
  fi
  echo "----------------------------------------------------------------- end of diagnostics"
}
