# shellcheck shell=bash
# The WireGuard scenario of issue 4 (endpoints follow the active uplink), shared by
# test_wireguard.sh (wireguard-go at both ends: this host has no kernel WireGuard module) and
# test_wireguard_kernel.sh (kernel WireGuard, run in the vmtest VMs). Source it with WG_IMPL set to
# go or kernel; it calls ul_init itself and exits with the test's status.
#   - the field report wireguard-stuck-on-backup-uplink: the tunnel comes up while the primary (wan1)
#     is down, netifd pins a host route to the endpoint via the backup (wan2, shaped to a few Mbit/s
#     with tbf). When wan1 returns, within its detection time + a few s the tunnel's outer packets
#     leave by wan1 (counted on isp1), `uplinkctl wireguard` shows the pinned route fixed, and iperf3
#     through the tunnel gets clearly more than the backup's rate (both directions);
#   - wan1 fails again: the tunnel moves to wan2, and a ping through it every 0.2 s loses no more
#     than the probes needed to detect the outage;
#   - the source address of the outer packets (kernel WireGuard caches each peer's source address,
#     the dead uplink's after a switch): at every stage (backup, failback, failover, failback) the
#     tunnel's packets cross only the active uplink's ISP, all with that uplink's address as source,
#     the core's peer sees the router at that address, and pings through the tunnel are answered;
#   - an endpoint that changes address (`wg set ... endpoint`) is followed: shown by uplinkctl, and
#     its packets are steered to wan1 although a stale host route pins the new address to wan2;
#     `ip route get` to it (wan2's table by an ip rule) is listed under stale_routes;
#   - a full-tunnel configuration (0.0.0.0/1 + 128.0.0.0/1 via the tunnel) handshakes and passes
#     traffic thanks to uplinkd's guard route (field report wireguard-full-tunnel-endpoint-loop);
#   - an IPv6 endpoint (the router's dual-stack config: wan1_6 and wan2_6 under default_rule_v6):
#     netifd's pin via wan2 fixed, the outer packets cross isp1 from wan1's IPv6 address, and after
#     wan1 fails they cross isp2 from wan2's, pings through the tunnel answered at every stage;
#   - `uplinkctl wireguard --json` has device, peer, endpoint, policy, uplink, steered_packets,
#     stale_routes;
#   - wg_steer (tc egress of the uplinks) is attached only while there is an endpoint: none on wan1
#     and wan2 before the tunnel exists, on both once its peer is seen, kept without a gap across a
#     restart in place, taken away by a daemon that restarts (after a crash) to find the peer gone,
#     and none after a restart without WireGuard endpoints.
# Which uplink outer packets take, and with which source, is counted by nft counters in isp1's and
# isp2's forward hooks.
# Timing: the bounds come from the tracking configuration (down x interval + timeout, ...) and the
# host's fixed waits; UL_TIME_SCALE (default 1) multiplies all of them, for slow machines (vmtest's
# VMs run under TCG and set it), and shapes the backup to 1 instead of 4 Mbit/s (see SHAPE_MBIT).
# The throughput, loss and packet-count criteria do not change.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WG_IMPL=${WG_IMPL:-go}
case $WG_IMPL in
  go) ul_init wireguard daemon ;;
  kernel) ul_init wireguard_kernel daemon ;;
  *) echo "wireguard_scenario.sh: WG_IMPL is go or kernel, not '$WG_IMPL'" >&2; exit 2 ;;
esac
for t in wg iperf3; do
  command -v "$t" >/dev/null 2>&1 || skip "needs '$t' (Debian packages wireguard-tools, iperf3)"
done
if [[ $WG_IMPL == go ]]; then
  command -v wireguard-go >/dev/null 2>&1 || skip "needs 'wireguard-go' (Debian package wireguard-go)"
  [[ -c /dev/net/tun ]] || skip "needs /dev/net/tun (wireguard-go's TUN device)"
else
  # A throwaway network namespace: the probe device vanishes with it, the root namespace is untouched.
  probe=$(unshare -n ip link add ulwgprobe type wireguard 2>&1) ||
    skip "no kernel WireGuard here ('ip link add type wireguard': ${probe:-failed}); it runs in the" \
      "vmtest VMs: vmtest/run --kernel 6.12 --suite lab"
fi
if ! [[ ${UL_TIME_SCALE:-1} =~ ^[0-9]+([.][0-9]+)?$ ]] || ! fle 1 "${UL_TIME_SCALE:-1}"; then
  fail "UL_TIME_SCALE must be a number >= 1, not '${UL_TIME_SCALE}'"
fi
SCALE=${UL_TIME_SCALE:-1}
sc() { ul_scaled "$1"; }

P=$UL_PREFIX
TOOLS=$UL_SOURCE/tests/integration/tools
# Unique device names: wireguard-go's UAPI sockets share /var/run/wireguard with the host (kernel
# links live in the lab's namespaces; unique names cost nothing there).
RDEV=wgr$$
CDEV=wgc$$
WGDIR=$UL_TMP/wg
EP1=203.0.113.5
EP2=203.0.113.6
EP6=2001:db8:ff::5 # the core's IPv6 address for the endpoint of the last stage
# The backup's rate. On a slow machine (UL_TIME_SCALE > 1) it is 1 Mbit/s instead of 4: under
# vmtest's TCG emulation kernel WireGuard's own crypto manages only 11-13 Mbit/s (6.1 guest), which
# would not clear the 3 x backup margin the failback's iperf3 must show.
SHAPE_MBIT=$(awk -v k="$SCALE" 'BEGIN { print (k > 1) ? 1 : 4 }')
# Tracking: an outage is declared within down x interval + timeout (README, "Scheduling"), with
# test_outage_detection's 20 % margin for a loaded host. timeout = interval: a cycle begins only when
# the previous one is decided (loader/health/monitor.cpp), so a timeout above the interval would
# stretch every failing cycle to the timeout.
IV=0.5
TO=0.5
DOWN=3
UP=3
DETECT_S=$(fcalc "($DOWN * $IV + $TO) * 1.2 * $SCALE")
PING_IV=0.2
SRC_WAN1=192.0.2.2 # the router's address on each uplink: the outer packets' source
SRC_WAN2=198.51.100.2
SRC6_WAN1=2001:db8:1::2
SRC6_WAN2=2001:db8:2::2

# shellcheck disable=SC2317 # run by the EXIT trap
wg_cleanup() {
  local rc=$?
  lab_wg_down "$P" "$RDEV" "$CDEV" "$WGDIR"
  (exit "$rc") # ul_cleanup reads the test's status from $?
  ul_cleanup
}
trap wg_cleanup EXIT

ul_lab_up

# Outer packets per ISP: named counters in each ISP's forward hook, before lab_outage's drop.
for isp in isp1 isp2; do
  ip netns exec "$P-$isp" nft -f - <<EOF || fail "nft counters on $isp"
table inet wgcount {
  counter to_ep1 {}
  counter to_ep2 {}
  counter src_wan1 {}
  counter src_wan2 {}
  counter to_ep6 {}
  counter src6_wan1 {}
  counter src6_wan2 {}
  chain count {
    type filter hook forward priority -10; policy accept;
    ip daddr $EP1 udp dport 51820 counter name to_ep1
    ip daddr $EP2 udp dport 51820 counter name to_ep2
    ip daddr { $EP1, $EP2 } udp dport 51820 ip saddr $SRC_WAN1 counter name src_wan1
    ip daddr { $EP1, $EP2 } udp dport 51820 ip saddr $SRC_WAN2 counter name src_wan2
    ip6 daddr $EP6 udp dport 51820 counter name to_ep6
    ip6 daddr $EP6 udp dport 51820 ip6 saddr $SRC6_WAN1 counter name src6_wan1
    ip6 daddr $EP6 udp dport 51820 ip6 saddr $SRC6_WAN2 counter name src6_wan2
  }
}
EOF
done
# outer <isp> <counter>: packets counted so far.
outer() {
  ip netns exec "$P-$1" nft list counter inet wgcount "$2" | sed -n 's/.*packets \([0-9]*\).*/\1/p'
}
# outer_sources [src|src6]: the outer packets so far by ISP and source (IPv4 or IPv6), as
# "<isp1 from wan1's address> <isp1 from wan2's> <isp2 from wan1's> <isp2 from wan2's>".
outer_sources() {
  local c=${1:-src}
  echo "$(outer isp1 "${c}_wan1") $(outer isp1 "${c}_wan2") $(outer isp2 "${c}_wan1") $(outer isp2 "${c}_wan2")"
}

# wait_outer_pinging <isp> <counter> <above> <seconds>: wait_outer with a ping through the tunnel
# every second meanwhile, so that the wait does not hang on the keepalive's timing.
wait_outer_pinging() {
  local t0 n
  t0=$(now)
  while fle "$(fsub "$t0" "$(now)")" "$4"; do
    n=$(outer "$1" "$2")
    [[ $n =~ ^[0-9]+$ ]] && ((n > $3)) && return 0
    ip netns exec "$P-rtr" ping -n -c 1 -W 1 10.99.0.1 >/dev/null 2>&1
  done
  return 1
}

# check_sources <active uplink> <label> <seconds> [4|6]: the outer packets' source address, which
# kernel WireGuard caches per peer (the dead uplink's after a switch, unless something corrects it).
# Within <seconds> (pinging through the tunnel) a packet from the active uplink's address crosses
# that uplink's ISP; then, after a settling second, 10 pings through the tunnel over 2 s are all
# answered while every outer packet (the pings' and the keepalives') crosses that ISP from that
# address: none by the other ISP, none with the other uplink's address, and the core's peer has
# the router at the active address.
check_sources() {
  local up=$1 label=$2 bound=$3 fam=${4:-4} isp addr good i t0 waited wrong=0 ep c=src a1=$SRC_WAN1 a2=$SRC_WAN2
  local -a before after d
  [[ $fam == 6 ]] && c=src6 a1=$SRC6_WAN1 a2=$SRC6_WAN2
  case $up in
    wan1) isp=isp1 addr=$a1 good=0 ;;
    wan2) isp=isp2 addr=$a2 good=3 ;;
  esac
  t0=$(now)
  wait_outer_pinging "$isp" "${c}_$up" "$(outer "$isp" "${c}_$up")" "$bound" ||
    fail "$label: no outer packet from $addr ($up's address) on $isp within $bound s; counters [isp1 from wan1, isp1 from wan2, isp2 from wan1, isp2 from wan2]: $(outer_sources "$c"); $(ip netns exec "$P-rtr" wg show "$RDEV" endpoints)"
  waited=$(fsub "$t0" "$(now)")
  sleep 1
  read -r -a before <<<"$(outer_sources "$c")"
  ip netns exec "$P-rtr" ping -n -c 10 -i 0.2 -W 2 10.99.0.1 >"$UL_TMP/ping.src_$label.out" 2>&1
  read -r -a after <<<"$(outer_sources "$c")"
  grep -q ' 10 received' "$UL_TMP/ping.src_$label.out" ||
    fail "$label: ping through the tunnel: $(grep transmitted "$UL_TMP/ping.src_$label.out")"
  for i in 0 1 2 3; do
    d[i]=$((after[i] - before[i]))
    ((i == good)) || wrong=$((wrong + d[i]))
  done
  local counts="isp1 from $a1: ${d[0]}, isp1 from $a2: ${d[1]}, isp2 from $a1: ${d[2]}, isp2 from $a2: ${d[3]}"
  ((d[good] >= 10)) || fail "$label: fewer than 10 outer packets from $addr on $isp for 10 pings ($counts)"
  # A packet from the other uplink's address is the stale cached source; one by the other ISP has
  # left by the wrong uplink.
  ((wrong == 0)) || fail "$label: outer packets not from $addr via $isp while $up is active ($counts)"
  ep=$(ip netns exec "$P-core" wg show "$CDEV" endpoints | awk '{ print $2 }')
  local want=$addr:51821
  [[ $fam == 6 ]] && want="[$addr]:51821"
  [[ $ep == "$want" ]] || fail "$label: the core has the router's endpoint at $ep, not $up's $want"
  pass "$label: outer packets from $up's $addr on $isp after $waited s (bound $bound s); 10 pings through the tunnel answered, outer packets meanwhile: $counts; the core has the router at $ep"
}

wgjson() { ctl wireguard --json; }
# egress_programs <dev>: the BPF programs on dev's tc egress in the router, as tc and bpftool list
# them (bpftool also lists tcx links, which tc does not show); empty when there is none.
egress_programs() {
  ip netns exec "$P-rtr" tc filter show dev "$1" egress 2>/dev/null
  if command -v bpftool >/dev/null 2>&1; then
    ip netns exec "$P-rtr" bpftool net show dev "$1" 2>/dev/null | grep -F "$1(" | grep -F egress || true
  fi
}
# steer_on <dev>: uplinkd's WireGuard steering program is on dev's tc egress.
steer_on() { ip netns exec "$P-rtr" tc filter show dev "$1" egress 2>/dev/null | grep -q 'wg_steer'; }
# wait_steer <on|off> <seconds>: until wg_steer is on (off) both wan1 and wan2.
wait_steer() {
  local i n dev ok
  n=$(awk -v s="$2" 'BEGIN { printf "%d", s * 5 }')
  for ((i = 0; i <= n; i++)); do
    ok=1
    for dev in wan1 wan2; do
      if [[ $1 == on ]]; then steer_on "$dev" || ok=0; else [[ -z $(egress_programs "$dev") ]] || ok=0; fi
    done
    ((ok)) && return 0
    sleep 0.2
  done
  return 1
}
# log_count <text>: lines of uplinkd's log with the text.
log_count() { grep -cF "$1" "$UPLINKD_LOG" || true; }
# peer_field <field>: one field of the router's peer from `uplinkctl wireguard --json`.
peer_field() {
  local j
  j=$(wgjson 2>&1) || { echo "uplinkctl wireguard --json failed: $j" >&2; return 1; }
  python3 "$TOOLS/wg_peer.py" "$RDEV" "$1" <<<"$j"
}
# wait_peer <field> <regex> <seconds>: until the field matches (whole value). UL_WAITED set.
wait_peer() {
  local t0 v
  t0=$(now)
  while fle "$(fsub "$t0" "$(now)")" "$3"; do
    v=$(peer_field "$1" 2>/dev/null) && [[ $v =~ ^($2)$ ]] && { UL_WAITED=$(fsub "$t0" "$(now)"); return 0; }
    uplinkd_alive || return 1
    sleep 0.2
  done
  PEER_LAST=$v
  return 1
}
# wait_outer <isp> <counter> <above> <seconds>: until the counter exceeds <above>. UL_WAITED set.
wait_outer() {
  local t0 n
  t0=$(now)
  while fle "$(fsub "$t0" "$(now)")" "$4"; do
    n=$(outer "$1" "$2")
    [[ $n =~ ^[0-9]+$ ]] && ((n > $3)) && { UL_WAITED=$(fsub "$t0" "$(now)"); return 0; }
    sleep 0.1
  done
  return 1
}
# wait_handshake <after epoch s> <seconds>: the router's peer has handshaken after the given time.
wait_handshake() {
  local t0 hs
  t0=$(now)
  while fle "$(fsub "$t0" "$(now)")" "$2"; do
    hs=$(ip netns exec "$P-rtr" wg show "$RDEV" latest-handshakes | awk '{ print $2 }')
    [[ $hs =~ ^[0-9]+$ ]] && ((hs >= $1)) && return 0
    sleep 0.2
  done
  return 1
}
# tunnel_mbit <label> [-R]: iperf3 through the tunnel for 3 s (router -> core; -R core -> router),
# the receiver's rate in Mbit/s.
tunnel_mbit() {
  local label=$1 out
  shift
  out=$UL_TMP/iperf.$label.json
  ip netns exec "$P-rtr" timeout "$(sc 20)" iperf3 -c 10.99.0.1 -p 5201 -t 3 -J "$@" >"$out" 2>&1 ||
    fail "iperf3 ($label) through the tunnel failed: $(tail -c 600 "$out")"
  python3 -c 'import json, sys; print("%.1f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6))' "$out"
}

# ---------------------------------------------------------------------------------------------
# The field report: primary down when the tunnel comes up, netifd's pin via the backup.
# ---------------------------------------------------------------------------------------------
lab_outage "$P" isp1 on
lab_shape "$P" "${SHAPE_MBIT}mbit" || fail "tbf on the backup"
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" "$IV" "$TO" "$DOWN" "$UP"
# The IPv6 half of mwan3's dual-stack setup, for the IPv6 endpoint of the last stage.
for i in 1 2; do
  printf "\nconfig interface 'wan%s_6'\n\toption enabled '1'\n\toption family 'ipv6'\n\toption device 'wan%s'\n" "$i" "$i"
  printf "\toption gateway '2001:db8:%s::1'\n\tlist track_ip '2001:db8:ff::1'\n\tlist track_ip '2001:db8:ff::2'\n" "$i"
  printf "\toption reliability '1'\n\toption count '1'\n\toption timeout '%s'\n\toption interval '%s'\n" "$TO" "$IV"
  printf "\toption failure_interval '%s'\n\toption recovery_interval '%s'\n" "$IV" "$IV"
  printf "\toption down '%s'\n\toption up '%s'\n" "$DOWN" "$UP"
  printf "\nconfig member 'wan%s_6_m%s'\n\toption interface 'wan%s_6'\n\toption metric '%s'\n" "$i" "$i" "$i" "$i"
done >>"$CFG"
cat >>"$CFG" <<'EOF'

config policy 'wan1_wan2_v6'
	list use_member 'wan1_6_m1'
	list use_member 'wan2_6_m2'

config rule 'default_rule_v6'
	option family 'ipv6'
	option dest_ip '::/0'
	option use_policy 'wan1_wan2_v6'
EOF
make_hook
# The router's own traffic goes through every rule by default (option local_rules; the tunnel's
# outer packets are router traffic). WG_LOCAL_RULES=0 runs the same with it off.
if [[ ${WG_LOCAL_RULES:-1} == 0 ]]; then
  sed -i "s/^\toption mmx_mask '0x3F00'$/&\n\toption local_rules '0'/" "$CFG"
  grep -q "option local_rules '0'" "$CFG" || fail "cannot turn local_rules off in $CFG"
fi
start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
wait_uplinkd_ready "$(sc 15)" || fail "uplinkd is not ready"
if [[ ${WG_LOCAL_RULES:-1} == 1 ]]; then
  ip netns exec "$P-rtr" nft list tables | grep -q "uplinkd-out" || fail "local_rules: no output table"
fi
wait_iface_state wan2 online "$(sc 20)" || fail "wan2 not online within $(sc 20) s (last '$UL_LAST_STATE')"
wait_iface_state wan1 offline "$(sc 20)" || fail "wan1 not offline within $(sc 20) s of its outage (last '$UL_LAST_STATE')"
info "wan1 offline (isp1 outage), wan2 online: the tunnel comes up now"
# No WireGuard endpoint yet: the uplinks forward without the steering program.
for dev in wan1 wan2; do
  progs=$(egress_programs "$dev")
  [[ -z $progs ]] || fail "a BPF program on $dev's tc egress without any WireGuard endpoint: $progs"
done
pass "no WireGuard endpoint: no BPF program on wan1's or wan2's tc egress"

# Before the tunnel exists: kernel WireGuard handshakes as soon as the device is up, within the
# same second.
T_WG=$(date +%s)
out=$(lab_wg_up "$P" "$RDEV" "$CDEV" "$WGDIR" "$WG_IMPL" 2>&1) || fail "WireGuard tunnel ($WG_IMPL): $out"
ip -n "$P-rtr" route add "$EP1/32" via 198.51.100.1 dev wan2 proto static ||
  fail "netifd-style host route to $EP1 via wan2"
info "tunnel $RDEV (rtr) <-> $CDEV (core) up, endpoint $EP1:51820; netifd pin: $EP1 via 198.51.100.1 dev wan2 proto static"
ping_ok=0
for ((i = 0; i < $(sc 20 | cut -d. -f1); i++)); do
  ip netns exec "$P-rtr" ping -n -c 1 -W 1 10.99.0.1 >/dev/null 2>&1 && { ping_ok=1; break; }
done
((ping_ok)) || fail "no ping through the tunnel over the backup within 20 s: $(ip netns exec "$P-rtr" wg show "$RDEV")"
wait_handshake "$T_WG" "$(sc 5)" || fail "no handshake on $RDEV"
ip netns exec "$P-core" timeout "$(sc 150)" iperf3 -s -B 10.99.0.1 -p 5201 </dev/null >"$UL_TMP/iperf_server.log" 2>&1 &
ul_bg_add $!
wait_peer endpoint "$EP1:51820" "$(sc 15)" || fail "uplinkctl wireguard does not list $RDEV's peer with endpoint $EP1:51820 within $(sc 15) s (last '$PEER_LAST'): $(wgjson)"
wait_steer on "$(sc 3)" || fail "wg_steer not on wan1's and wan2's egress with the peer's endpoint listed: $(egress_programs wan1) / $(egress_programs wan2)"
[[ $(log_count "WireGuard steering attached on wan1, wan2") == 1 ]] ||
  fail "uplinkd's log does not say once that steering was attached: $(grep -F 'WireGuard steering' "$UPLINKD_LOG")"
pass "the peer's endpoint appeared: wg_steer on wan1 and wan2 ($(grep -F 'WireGuard steering attached' "$UPLINKD_LOG" | tail -n 1 | sed 's/^.*WireGuard/WireGuard/'))"
j=$(wgjson) || fail "uplinkctl wireguard --json failed: $j"
python3 "$TOOLS/wg_peer.py" "$RDEV" --check-fields <<<"$j" || fail "uplinkctl wireguard --json lacks fields"
[[ $(peer_field peer) == "$(cat "$WGDIR/core.pub")" ]] || fail "peer is not the core's public key: $j"
[[ $(peer_field policy) == wan1_wan2 ]] || fail "policy is not the default rule's wan1_wan2: $j"
[[ $(peer_field uplink) == wan2 ]] || fail "with wan1 offline the peer's uplink is not wan2: $j"
pass "uplinkctl wireguard --json: device $RDEV, peer $(peer_field peer), endpoint $EP1:51820, policy wan1_wan2 ($(peer_field policy_from)), uplink wan2"
check_sources wan2 "on the backup" "$(sc 5)"
ctl wireguard | while read -r l; do info "  $l"; done
sleep 1 # the server listens
slow_up=$(tunnel_mbit backup_up)
slow_down=$(tunnel_mbit backup_down -R)
info "iperf3 through the tunnel on the backup: up $slow_up Mbit/s, down $slow_down Mbit/s (tbf $SHAPE_MBIT Mbit/s)"

# ---------------------------------------------------------------------------------------------
# The primary returns: the tunnel follows it.
# ---------------------------------------------------------------------------------------------
n1=$(outer isp1 to_ep1)
t_back=$(now)
lab_outage "$P" isp1 off
log "isp1 forwards again"
wait_iface_state wan1 online "$(sc 15)" || fail "wan1 not online within $(sc 15) s of its return"
t_online=$(fsub "$t_back" "$(now)")
RECOVER_BOUND=$(fcalc "($UP * $IV + $TO + 3) * $SCALE")
wait_outer isp1 to_ep1 "$n1" "$RECOVER_BOUND" ||
  fail "no outer packet to $EP1 on isp1 within $RECOVER_BOUND s of wan1's return"
t_outer=$(fsub "$t_back" "$(now)")
n2=$(outer isp2 to_ep1)
sleep 1
n2b=$(outer isp2 to_ep1)
((n2b - n2 <= 1)) || fail "outer packets to $EP1 still cross isp2 after the switch ($((n2b - n2)) in 1 s)"
pass "wan1 back: online after $t_online s, outer packets on isp1 after $t_outer s (bound (up x interval + timeout + 3) x $SCALE = $RECOVER_BOUND s); isp2 saw $((n2b - n2)) in the next second"
wait_peer uplink wan1 "$(sc 3)" || fail "uplinkctl wireguard: uplink is not wan1: $(wgjson)"
fixed=$(peer_field fixed_routes)
[[ $fixed == *"$EP1"*wan1* ]] || fail "the pinned host route is not reported fixed: $(wgjson)"
rg=$(ip -n "$P-rtr" route get "$EP1")
[[ $rg == *"dev wan1"* ]] || fail "ip route get $EP1 does not say wan1: $rg"
pass "the netifd pin is fixed: '$fixed'; ip route get $EP1: $(head -n 1 <<<"$rg")"
check_sources wan1 "wan1 back" "$RECOVER_BOUND"
fast_up=$(tunnel_mbit primary_up)
fast_down=$(tunnel_mbit primary_down -R)
log "RESULT wireguard throughput through the tunnel: backup (tbf $SHAPE_MBIT Mbit/s) up $slow_up / down $slow_down Mbit/s; after wan1's return up $fast_up / down $fast_down Mbit/s"
want=$(fcalc "3 * $SHAPE_MBIT")
for v in "$fast_up" "$fast_down"; do
  fle "$v" "$want" && fail "iperf3 through the tunnel after wan1's return: $v Mbit/s, not more than 3 x tbf = $want Mbit/s"
done
pass "iperf3 through the tunnel: up $fast_up, down $fast_down Mbit/s > 3 x the backup's $SHAPE_MBIT Mbit/s"

# ---------------------------------------------------------------------------------------------
# The primary fails again: the tunnel moves to the backup within the detection time.
# ---------------------------------------------------------------------------------------------
# The bound: pings sent while the outage is undetected ((down x interval + timeout) x 1.2), plus one
# in flight when it is detected and one at the end of ping's deadline.
LOSS_BOUND=$(awk -v d="$DETECT_S" -v i="$PING_IV" 'BEGIN { printf "%d", int(d / i + 0.999) + 2 }')
WINDOW=$(awk -v d="$DETECT_S" -v k="$SCALE" 'BEGIN { printf "%d", d + 6 * k }') # whole seconds for ping -w
ip netns exec "$P-rtr" ping -n -i "$PING_IV" -w "$WINDOW" 10.99.0.1 </dev/null >"$UL_TMP/failover_ping.out" 2>&1 &
ping_pid=$!
ul_bg_add "$ping_pid"
sleep 1
n2=$(outer isp2 to_ep1)
h0=$(hook_count)
t_fail=$(now)
lab_outage "$P" isp1 on
log "isp1 drops everything again"
wait_iface_state wan1 offline "$(fcalc "$DETECT_S + 2 * $SCALE")" || fail "wan1 not offline within $(fcalc "$DETECT_S + 2 * $SCALE") s"
ts=$(wait_hook disconnected wan1 "$h0" "$(sc 3)") || fail "no hook 'disconnected wan1'"
t_off=$(fsub "$t_fail" "$ts")
wait_outer isp2 to_ep1 "$n2" "$(sc 3)" || fail "no outer packet to $EP1 on isp2 within $(sc 3) s of wan1 going offline"
t_moved=$(fsub "$t_fail" "$(now)")
_ul_reap "$ping_pid" "$(fcalc "$WINDOW + 3")" || fail "ping through the tunnel did not end"
summary=$(grep 'packets transmitted' "$UL_TMP/failover_ping.out")
tx=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' <<<"$summary")
rx=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$summary")
[[ $tx =~ ^[0-9]+$ && $rx =~ ^[0-9]+$ ]] || fail "no ping summary: $(cat "$UL_TMP/failover_ping.out")"
lost=$((tx - rx))
log "RESULT wireguard failover: hook 'disconnected wan1' $t_off s after the outage began, outer packets on isp2 seen by $t_moved s (polled after the hook); ping -i $PING_IV through the tunnel: $tx sent, $lost lost (bound $LOSS_BOUND = ceil(($DOWN x $IV + $TO) x 1.2 x $SCALE / $PING_IV) + 2)"
((lost <= LOSS_BOUND)) || fail "ping through the tunnel lost $lost of $tx (bound $LOSS_BOUND)"
wait_peer uplink wan2 "$(sc 3)" || fail "uplinkctl wireguard: uplink is not wan2 after the failover: $(wgjson)"
pass "the tunnel moved to wan2: $lost of $tx pings lost (bound $LOSS_BOUND)"
check_sources wan2 "failover to wan2" "$(sc 3)"

lab_outage "$P" isp1 off
wait_iface_state wan1 online "$(sc 15)" || fail "wan1 not online again within $(sc 15) s"
wait_peer uplink wan1 "$(sc 3)" || fail "uplinkctl wireguard: uplink is not wan1 again: $(wgjson)"
check_sources wan1 "wan1 back again" "$RECOVER_BOUND"

# ---------------------------------------------------------------------------------------------
# The endpoint moves (DDNS, roaming): followed, and its packets steered in the datapath.
# ---------------------------------------------------------------------------------------------
# A policy rule sends the new address by wan2's own table (2). Route hygiene leaves an uplink's own
# table alone, so only the tc egress program on wan2 can bring these packets to wan1. Both
# implementations drop their cached source (address and interface) when the endpoint is set, so
# their first packets to the new address follow that rule; wireguard-go then keeps sending by wan1
# once a reply arrives there. Whatever either does next, every outer packet must cross isp1 with
# wan1's address.
ip -n "$P-rtr" rule add to "$EP2/32" lookup 2 pref 500 || fail "ip rule to $EP2 lookup 2"
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" endpoint "$EP2:51820" || fail "wg set endpoint $EP2"
info "endpoint moved to $EP2:51820; 'ip rule to $EP2 lookup 2' sends it by wan2's table"
wait_peer endpoint "$EP2:51820" "$(sc 12)" || fail "uplinkctl wireguard does not show the new endpoint $EP2:51820 within $(sc 12) s: $(wgjson)"
t_seen=$UL_WAITED
wait_peer uplink wan1 "$(sc 3)" || fail "the new endpoint's uplink is not wan1: $(wgjson)"
wait_peer steered_packets "[1-9][0-9]*" "$(sc 5)" || fail "no packet to the new endpoint steered within $(sc 5) s: $(wgjson)"
# The rule's lookup disagrees with steering: listed under stale_routes (the kernel's own answer).
wait_peer stale_routes ".*ip route get $EP2: dev wan2 \\(active uplink: dev wan1\\).*" "$(sc 6)" ||
  fail "'ip route get $EP2' (wan2's table) is not listed under stale_routes within $(sc 6) s: $(wgjson)"

# tunnel_traffic_2s <label>: 10 pings through the tunnel over 2 s; the outer packets to EP2 that
# crossed each ISP meanwhile in OUT_ISP1 / OUT_ISP2.
tunnel_traffic_2s() {
  local a b
  a=$(outer isp1 to_ep2)
  b=$(outer isp2 to_ep2)
  ip netns exec "$P-rtr" ping -n -c 10 -i 0.2 -W 1 10.99.0.1 >"$UL_TMP/ping.$1.out" 2>&1
  grep -q ' 10 received' "$UL_TMP/ping.$1.out" || fail "ping through the tunnel ($1): $(grep transmitted "$UL_TMP/ping.$1.out")"
  OUT_ISP1=$(($(outer isp1 to_ep2) - a))
  OUT_ISP2=$(($(outer isp2 to_ep2) - b))
}
sleep 1
tunnel_traffic_2s moved
((OUT_ISP1 >= 10)) || fail "packets to the new endpoint do not cross isp1 ($OUT_ISP1 for 10 pings)"
((OUT_ISP2 == 0)) || fail "packets to the new endpoint still cross isp2 ($OUT_ISP2 for 10 pings)"
src=$(ip netns exec "$P-core" wg show "$CDEV" endpoints | awk '{ print $2 }')
[[ $src == 192.0.2.2:51821 ]] || fail "the core sees the router at $src, not wan1's 192.0.2.2:51821"
pass "the new endpoint $EP2 is listed after $t_seen s; steered_packets $(peer_field steered_packets) although 'ip route get $EP2' says: $(ip -n "$P-rtr" route get "$EP2" | head -n 1) (stale_routes: $(peer_field stale_routes | tr '\n' ' ')); 10 pings through the tunnel: all answered, $OUT_ISP1 outer packets on isp1, none on isp2; the core sees the router at $src"
check_sources wan1 "endpoint moved" "$(sc 3)"
ip -n "$P-rtr" rule del to "$EP2/32" lookup 2 pref 500

# ---------------------------------------------------------------------------------------------
# Full tunnel: the endpoint's own packets would enter the tunnel without the guard route.
# ---------------------------------------------------------------------------------------------
ip -n "$P-rtr" route del "$EP1/32" 2>/dev/null
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" allowed-ips 0.0.0.0/0 || fail "wg set allowed-ips"
for half in 0.0.0.0/1 128.0.0.0/1; do
  ip -n "$P-rtr" route add "$half" dev "$RDEV" || fail "full-tunnel route $half via $RDEV"
done
info "full tunnel: 0.0.0.0/1 and 128.0.0.0/1 via $RDEV, no host route to the endpoint"
wait_peer guard_route ".*$EP2.*wan1.*" "$(sc 12)" || fail "no guard route for $EP2 via wan1 within $(sc 12) s: $(wgjson)"
guard=$(peer_field guard_route)
rg=$(ip -n "$P-rtr" route get "$EP2")
[[ $rg == *"dev wan1"* ]] || fail "ip route get $EP2 in the full tunnel: $rg"
# A fresh peer must handshake through the full tunnel configuration.
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" remove || fail "wg peer remove"
T_HS=$(date +%s)
sleep 1
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" endpoint "$EP2:51820" \
  allowed-ips 0.0.0.0/0 persistent-keepalive 1 || fail "wg peer re-add"
wait_handshake "$T_HS" "$(sc 10)" || fail "no handshake in the full-tunnel configuration within $(sc 10) s: $(ip netns exec "$P-rtr" wg show "$RDEV")"
rg3=$(ip -n "$P-rtr" route get 203.0.113.3)
[[ $rg3 == *"dev $RDEV"* ]] || fail "203.0.113.3 is not routed into the tunnel: $rg3"
ip netns exec "$P-rtr" ping -n -c 3 -i 0.2 -W 1 203.0.113.3 >/dev/null 2>&1 ||
  fail "no ping to 203.0.113.3 through the full tunnel: $(ip netns exec "$P-rtr" wg show "$RDEV")"
pass "full tunnel: guard route '$guard', ip route get $EP2: $(head -n 1 <<<"$rg"); a fresh peer handshakes and 203.0.113.3 answers through $RDEV"
ctl wireguard | while read -r l; do info "  $l"; done

# ---------------------------------------------------------------------------------------------
# An IPv6 endpoint: fixed, steered and moved at failover like the IPv4 one.
# ---------------------------------------------------------------------------------------------
ip -n "$P-core" addr add "$EP6/128" dev lo nodad || fail "core address $EP6"
ip -n "$P-rtr" -6 route add "$EP6/128" via 2001:db8:2::1 dev wan2 proto static ||
  fail "netifd-style host route to $EP6 via wan2"
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" endpoint "[$EP6]:51820" || fail "wg set endpoint [$EP6]"
info "endpoint moved to [$EP6]:51820; netifd pin: $EP6 via 2001:db8:2::1 dev wan2 proto static"
wait_peer endpoint "\\[$EP6\\]:51820" "$(sc 12)" || fail "uplinkctl wireguard does not show the endpoint [$EP6]:51820 within $(sc 12) s: $(wgjson)"
wait_peer uplink wan1_6 "$(sc 3)" || fail "the IPv6 endpoint's uplink is not wan1_6: $(wgjson)"
fixed=$(peer_field fixed_routes)
[[ $fixed == *"$EP6"*wan1* ]] || fail "the pinned IPv6 host route is not reported fixed: $(wgjson)"
check_sources wan1 "IPv6 endpoint" "$(sc 5)" 6
n6=$(outer isp2 to_ep6)
t_fail=$(now)
lab_outage "$P" isp1 on
wait_iface_state wan1_6 offline "$(fcalc "$DETECT_S + 2 * $SCALE")" || fail "wan1_6 not offline within $(fcalc "$DETECT_S + 2 * $SCALE") s"
wait_outer isp2 to_ep6 "$n6" "$(sc 3)" || fail "no outer packet to $EP6 on isp2 within $(sc 3) s of wan1_6 going offline"
t_moved=$(fsub "$t_fail" "$(now)")
wait_peer uplink wan2_6 "$(sc 3)" || fail "uplinkctl wireguard: uplink is not wan2_6 after the failover: $(wgjson)"
pass "IPv6 endpoint: outer packets to $EP6 on isp2 $t_moved s after isp1's outage began; stale_routes: $(peer_field stale_routes | tr '\n' ' ')"
check_sources wan2 "IPv6 endpoint, failover to wan2" "$(sc 3)" 6
lab_outage "$P" isp1 off
wait_iface_state wan1_6 online "$(sc 15)" || fail "wan1_6 not online again within $(sc 15) s"
wait_peer uplink wan1_6 "$(sc 3)" || fail "uplinkctl wireguard: the IPv6 endpoint's uplink is not wan1_6 again: $(wgjson)"
check_sources wan1 "IPv6 endpoint, wan1 back" "$RECOVER_BOUND" 6

# ---------------------------------------------------------------------------------------------
# wg_steer only while there is an endpoint, across restarts.
# ---------------------------------------------------------------------------------------------
# A restart in place with the endpoint: the filter never leaves either uplink (sampled every 50 ms
# from before the restart until the new daemon answers), and the tunnel still answers.
SAMPLES=$UL_TMP/steer_samples
: >"$SAMPLES"
(
  for ((i = 0; i < 600; i++)); do # ≤ 30 s
    [[ -e $UL_TMP/steer_samples.stop ]] && break
    for dev in wan1 wan2; do steer_on "$dev" && echo "$dev on" || echo "$dev off"; done
    sleep 0.05
  done >>"$SAMPLES"
) &
sampler=$!
ul_bg_add "$sampler"
sleep 0.3
ctl restart || fail "uplinkctl restart failed: $(tail -20 "$UPLINKD_LOG")"
wait_uplinkd_ready "$(sc 15)" || fail "uplinkd does not answer after the restart in place"
sleep "$(sc 2)" # the new daemon's first poll has decided by now
touch "$UL_TMP/steer_samples.stop"
_ul_reap "$sampler" 5 || fail "the steering sampler did not end"
on=$(grep -c ' on$' "$SAMPLES" || true)
off=$(grep -c ' off$' "$SAMPLES" || true)
((on > 0 && off == 0)) || fail "wg_steer left wan1 or wan2 during the restart in place: $off of $((on + off)) samples without it"
wait_steer on 1 || fail "wg_steer is not on wan1 and wan2 after the restart in place"
ip netns exec "$P-rtr" ping -n -c 3 -i 0.2 -W 1 10.99.0.1 >/dev/null 2>&1 || fail "no ping through the tunnel after the restart in place"
pass "restart in place with an endpoint: wg_steer on wan1 and wan2 in all $on samples across it; the tunnel answers"

# A crash, and the peer goes while no daemon runs: the next daemon takes the filter away.
pid=$UPLINKD_PID
kill -KILL "$pid" 2>/dev/null || fail "no uplinkd to kill (pid $pid)"
_ul_reap "$pid" 5 || fail "uplinkd (pid $pid) still there 5 s after SIGKILL"
UPLINKD_PID=
steer_on wan1 || fail "wg_steer did not stay on wan1 while no daemon ran"
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" remove || fail "wg peer remove"
n_detached=$(log_count "WireGuard steering detached from")
start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
wait_uplinkd_ready "$(sc 15)" || fail "uplinkd does not answer after its start following the crash"
wait_steer off "$(sc 3)" || fail "wg_steer still on an uplink's egress with the peer gone: $(egress_programs wan1) / $(egress_programs wan2)"
(($(log_count "WireGuard steering detached from") == n_detached + 1)) ||
  fail "uplinkd's log does not say once that steering was detached: $(grep -F 'WireGuard steering' "$UPLINKD_LOG")"
pass "after a crash the peer was gone: the restarted daemon took wg_steer off wan1 and wan2"

# A peer again, then the last one goes with a daemon running: detached within a poll (5 s).
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" endpoint "$EP1:51820" allowed-ips 10.99.0.1/32 ||
  fail "wg peer re-add"
wait_steer on "$(sc 8)" || fail "wg_steer not on wan1 and wan2 within $(sc 8) s of a peer appearing"
ip netns exec "$P-rtr" wg set "$RDEV" peer "$(cat "$WGDIR/core.pub")" remove || fail "wg peer remove"
wait_steer off "$(sc 8)" || fail "wg_steer still on within $(sc 8) s of the last peer going: $(egress_programs wan1) / $(egress_programs wan2)"
pass "a peer appears: wg_steer on both uplinks; the last one goes: off both within a poll"

# A restart in place without endpoints leaves none attached.
ctl restart || fail "uplinkctl restart failed: $(tail -20 "$UPLINKD_LOG")"
wait_uplinkd_ready "$(sc 15)" || fail "uplinkd does not answer after the restart in place"
sleep "$(sc 2)"
wait_steer off 1 || fail "wg_steer on an uplink after a restart without endpoints: $(egress_programs wan1) / $(egress_programs wan2)"
pass "restart in place without WireGuard endpoints: no BPF program on wan1's or wan2's egress"

stop_uplinkd || fail "uplinkd did not stop on SIGTERM"
exit 0
