#!/usr/bin/env bash
# uplinkd refuses bad input with a message a person can act on, and leaves nothing behind:
#   - a malformed config line: non-zero exit, message with <file>:<line> and the option name
#     (interface options, a rule with ports but no proto, a rule naming an unknown policy)
#   - a missing config file: message naming the file
#   - not root (uid 65534, no capabilities): message mentioning root / CAP_NET_ADMIN
#   - no bpffs at /sys/fs/bpf (an empty tmpfs there): message with `mount -t bpf bpf /sys/fs/bpf`
# After each failed start: no XDP program and no tc filter on the router's uplinks and LAN device,
# no uplinkd process left, no pin directory left.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init bad_input daemon
command -v setpriv >/dev/null || skip "needs setpriv (util-linux)"

P=$UL_PREFIX
ul_lab_up
ensure_rtr_holder "$P" || fail "cannot set up the router's mount namespace"
GOOD=$UL_TMP/good.conf
ul_write_config "$GOOD" 1 1 3 3

# run_refused <label> cmd...: run a start that must fail (bounded: 20 s). Sets OUT and RC.
run_refused() {
  local label=$1 t0
  shift
  log "$label"
  t0=$(now)
  OUT=$(timeout -k 2 20 "$@" </dev/null 2>&1)
  RC=$?
  info "exit status $RC after $(fsub "$t0" "$(now)") s; output:"
  printf '%s\n' "$OUT" | head -n 15 | sed 's/^/    | /'
  UPLINKD_LOG=$UL_TMP/last-refused.log
  printf '%s\n' "$OUT" >"$UPLINKD_LOG"
  ((RC == 124 || RC == 137)) && fail "$label: uplinkd was still running after 20 s instead of refusing"
  ((RC != 0)) || fail "$label: uplinkd exited with status 0"
  pass "$label: refused with exit status $RC"
}

# expect_text <label> <fixed string>
expect_text() {
  grep -qiF -- "$2" <<<"$OUT" || fail "$1: the message does not contain '$2'"
  pass "$1: message contains '$2'"
}

# after_refusal <label>: nothing may be left behind.
after_refusal() {
  local label=$1 pids
  pids=$(ip netns pids "$P-rtr" 2>/dev/null | grep -vx "$UL_HOLDER_PID" || true)
  [[ -z $pids ]] || fail "$label: processes left in the router: $(for p in $pids; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)"
  assert_no_datapath "$P" "$label" wan1 wan2 lan0
  if rtr_exec test -e "/sys/fs/bpf/uplinkd/$P"; then
    fail "$label: pin directory /sys/fs/bpf/uplinkd/$P left behind: $(rtr_exec find "/sys/fs/bpf/uplinkd/$P" | head)"
  fi
  [[ -e $UL_TMP/bad.sock ]] && info "NOTE: socket file $UL_TMP/bad.sock left behind"
  rm -f "$UL_TMP/bad.sock"
}

# Commands (not shell functions: they run under `timeout`).
IN_RTR=(nsenter -t "$UL_HOLDER_PID" -m -n --)
UPLINKD_IN_RTR=("${IN_RTR[@]}" "$UPLINKD" --socket "$UL_TMP/bad.sock" --instance "$P" --foreground)

# 1. malformed values, with the line they are on
BAD1=$UL_TMP/bad-interval.conf
awk '!done && /option interval/ { print "\toption interval '\''soon'\''"; done = 1; next } { print }' "$GOOD" >"$BAD1"
L1=$(grep -n "option interval 'soon'" "$BAD1" | cut -d: -f1)
[[ -n $L1 ]] || fail "could not build the malformed config"
info "$BAD1:$L1: $(sed -n "${L1}p" "$BAD1")"
run_refused "config: non-numeric interval" "${UPLINKD_IN_RTR[@]}" --config "$BAD1"
expect_text "config: non-numeric interval" "$BAD1:$L1"
expect_text "config: non-numeric interval" "interval"
after_refusal "config: non-numeric interval"

BAD2=$UL_TMP/bad-track-ip.conf
awk '!done && /track_ip .203.0.113.2./ { print "\tlist track_ip '\''203.0.113.300'\''"; done = 1; next } { print }' "$GOOD" >"$BAD2"
L2=$(grep -n "203.0.113.300" "$BAD2" | cut -d: -f1)
[[ -n $L2 ]] || fail "could not build the malformed config"
info "$BAD2:$L2: $(sed -n "${L2}p" "$BAD2")"
run_refused "config: invalid track_ip address" "${UPLINKD_IN_RTR[@]}" --config "$BAD2"
expect_text "config: invalid track_ip address" "$BAD2:$L2"
expect_text "config: invalid track_ip address" "track_ip"
after_refusal "config: invalid track_ip address"

BAD3=$UL_TMP/bad-rule.conf
cp "$GOOD" "$BAD3"
printf "\nconfig policy 'p'\n\nconfig rule 'https'\n\toption dest_port '443'\n\toption use_policy 'p'\n" >>"$BAD3"
L3=$(grep -n "option dest_port '443'" "$BAD3" | cut -d: -f1)
run_refused "config: rule with ports but no proto" "${UPLINKD_IN_RTR[@]}" --config "$BAD3"
expect_text "config: rule with ports but no proto" "$BAD3:$L3"
expect_text "config: rule with ports but no proto" "dest_port"
after_refusal "config: rule with ports but no proto"

BAD4=$UL_TMP/bad-policy.conf
cp "$GOOD" "$BAD4"
printf "\nconfig rule 'r1'\n\toption use_policy 'no_such_policy'\n" >>"$BAD4"
run_refused "config: rule naming an unknown policy" "${UPLINKD_IN_RTR[@]}" --config "$BAD4"
expect_text "config: rule naming an unknown policy" "use_policy"
expect_text "config: rule naming an unknown policy" "no_such_policy"
after_refusal "config: rule naming an unknown policy"

# 2. a missing file
run_refused "config: missing file" "${UPLINKD_IN_RTR[@]}" --config "$UL_TMP/no-such.conf"
expect_text "config: missing file" "$UL_TMP/no-such.conf"
after_refusal "config: missing file"

# 3. not root: uid/gid 65534, no supplementary groups, and so no capabilities.
bin=$UPLINKD
if ! setpriv --reuid=65534 --regid=65534 --clear-groups -- test -x "$bin"; then
  mkdir -p "$UL_TMP/bin" && cp "$UPLINKD" "$UL_TMP/bin/uplinkd" && chmod 755 "$UL_TMP/bin/uplinkd"
  bin=$UL_TMP/bin/uplinkd
  info "uid 65534 cannot execute $UPLINKD; using a copy at $bin"
fi
mkdir -p "$UL_TMP/nobody" && chmod 1777 "$UL_TMP/nobody"
run_refused "not root (uid 65534)" "${IN_RTR[@]}" setpriv --reuid=65534 --regid=65534 --clear-groups -- \
  "$bin" --config "$GOOD" --socket "$UL_TMP/nobody/uplinkd.sock" --instance "$P" --foreground
if ! grep -qiE '(^|[^a-z/])root([^a-z/]|$)|CAP_NET_ADMIN' <<<"$OUT"; then
  fail "not root: the message mentions neither root nor CAP_NET_ADMIN"
fi
pass "not root: message mentions $(grep -oiE 'CAP_NET_ADMIN|(^|[^a-z/])root([^a-z/]|$)' <<<"$OUT" | head -n 1 | tr -d ' ')"
after_refusal "not root"

# 4. no bpffs: a private mount namespace with an empty tmpfs over /sys/fs/bpf.
run_refused "no bpffs at /sys/fs/bpf" ip netns exec "$P-rtr" unshare -m --propagation private -- \
  sh -c 'mount -t tmpfs -o size=1m,mode=0700 ul-no-bpffs /sys/fs/bpf && exec "$@"' uplinkd \
  "$UPLINKD" --config "$GOOD" --socket "$UL_TMP/bad.sock" --instance "$P" --foreground
expect_text "no bpffs" "mount -t bpf bpf /sys/fs/bpf"
after_refusal "no bpffs"
exit 0
