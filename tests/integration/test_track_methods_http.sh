#!/usr/bin/env bash
# The track methods added for issue 15 (part 2), each against a real server in the lab's core:
#   wan1h   httping                  HEAD / to a Python HTTP server on 203.0.113.3:80
#   wan1s   httping, httping_ssl '1' the same over TLS on 203.0.113.3:443 (self-signed certificate)
#   wan1u   nping-udp (count 2)      UDP echo server on 203.0.113.4:40125 (nping's default port)
#   wan1i   nping-icmp (count 2)     ICMP echo to 203.0.113.1
#   wan2a   nping-arp (count 2)      ARP to the gateway 198.51.100.1
#   wan2u   nping-udp, track_port 9  nobody listens: the target's ICMP port unreachable answers, as
#                                    nping counts it
# Phases: all online; replies dropped by the router's firewall after XDP (the XDP-matched methods
# stay online, httping goes offline: its answer is read from the TCP stack); an HTTP 500; a TLS
# failure (plain HTTP on the HTTPS port); an upstream blackhole on isp1 (every wan1 method offline)
# and on isp2 with ARP dropped there (wan2a and wan2u offline).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init track_methods_http daemon
command -v openssl >/dev/null 2>&1 || skip "needs 'openssl' (the HTTPS server's self-signed certificate)"

P=$UL_PREFIX
SERVERS=$(dirname "${BASH_SOURCE[0]}")/tools/track_servers.py
ul_lab_up
make_hook

# Linux answers a closed UDP port with at most one ICMP error per second per peer (burst 6): wan2u
# probes 4 times a second, so the target's limit is lifted (in the lab's core only).
ip netns exec "$P-core" sysctl -qw net.ipv4.icmp_ratelimit=0 || fail "cannot lift the core's ICMP rate limit"

MODE=$UL_TMP/http_status
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=203.0.113.3" \
  -keyout "$UL_TMP/key.pem" -out "$UL_TMP/cert.pem" >/dev/null 2>&1 || fail "openssl req failed"
# Run with & only: exec makes $! the server's own pid (timeout passes a signal on to python).
core() { exec ip netns exec "$P-core" timeout 300 python3 "$SERVERS" "$@" >>"$UL_TMP/servers.log" 2>&1; }
core http 203.0.113.3 80 "$MODE" &
ul_bg_add $!
core https 203.0.113.3 443 "$MODE" "$UL_TMP/cert.pem" "$UL_TMP/key.pem" &
HTTPS_PID=$!
ul_bg_add $HTTPS_PID
core udp-echo 203.0.113.4 40125 &
ul_bg_add $!
# listening <ss filter>: the core has such a socket (the servers need a moment to start).
listening() { [[ -n $(ip netns exec "$P-core" ss -Hln "$@" 2>/dev/null) ]]; }
wait_servers() {
  local i
  for ((i = 0; i < 100; i++)); do
    listening -t "sport = :80" && listening -t "sport = :443" && listening -u "sport = :40125" && return 0
    sleep 0.1
  done
  return 1
}
wait_servers || fail "the HTTP, HTTPS and UDP echo servers did not start within 10 s ($(cat "$UL_TMP/servers.log"))"

CFG=$UL_TMP/uplinkd.conf
{
  echo "config globals 'globals'"
  echo "	option mmx_mask '0x3F00'"
  # name device gateway method target extra-options...
  while read -r name dev gw method target extra; do
    printf "\nconfig interface '%s'\n\toption enabled '1'\n\toption device '%s'\n" "$name" "$dev"
    printf "\toption gateway '%s'\n\toption track_method '%s'\n\tlist track_ip '%s'\n" "$gw" "$method" "$target"
    printf "\toption interval '0.5'\n\toption timeout '1'\n\toption down '3'\n\toption up '3'\n"
    for o in $extra; do printf "\toption %s '%s'\n" "${o%%=*}" "${o#*=}"; done
  done <<'EOF2'
wan1h wan1 192.0.2.1 httping 203.0.113.3
wan1s wan1 192.0.2.1 httping 203.0.113.3 httping_ssl=1
wan1u wan1 192.0.2.1 nping-udp 203.0.113.4 count=2
wan1i wan1 192.0.2.1 nping-icmp 203.0.113.1 count=2
wan2a wan2 198.51.100.1 nping-arp 198.51.100.1 count=2
wan2u wan2 198.51.100.1 nping-udp 203.0.113.2 count=2 track_port=9
EOF2
} >"$CFG"
ALL=(wan1h wan1s wan1u wan1i wan2a wan2u)
XDP_MATCHED=(wan1u wan1i wan2a wan2u)

start_uplinkd "$P" "$CFG" --hook "$UL_HOOK"
wait_uplinkd_ready 15 || fail "uplinkd did not start"
for i in "${ALL[@]}"; do
  wait_replied "$i" 4 15 || fail "$i: fewer than 4 probe replies in 15 s ($(iface_get "$i" probes.replied 2>/dev/null) replied)"
done
ul_snapshot
for i in "${ALL[@]}"; do
  st=$(iface_get "$i" state) sent=$(iface_get "$i" probes.sent) rep=$(iface_get "$i" probes.replied)
  lost=$(iface_get "$i" probes.lost) rtt=$(iface_get "$i" rtt_ms 2>/dev/null || echo '?')
  info "$i: state $st, $rep of $sent probes answered, $lost lost, rtt ${rtt} ms"
  [[ $st == online ]] || fail "$i is '$st' (expected online)"
  ((lost == 0)) || fail "$i lost $lost probes on a clean path"
done
ul_snapshot_end
pass "httping (HTTP, HTTPS), nping-udp (echo and port unreachable), nping-icmp and nping-arp are answered"

# ---- the router's firewall drops every reply after XDP ----------------------------------------
seen=$(hook_count)
declare -A TRANSITIONS
for i in "${XDP_MATCHED[@]}"; do TRANSITIONS[$i]=$(iface_get "$i" transitions); done
rtr_exec nft -f - <<'EOF2'
table inet ul_fw {
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr { 203.0.113.1, 203.0.113.2, 203.0.113.3, 203.0.113.4 } counter drop
  }
}
table arp ul_fw_arp {
  chain input {
    type filter hook input priority filter; policy accept;
    counter drop
  }
}
EOF2
wait_hook disconnected wan1h "$seen" 10 >/dev/null || fail "wan1h (httping) not disconnected within 10 s of the drop"
wait_hook disconnected wan1s "$seen" 10 >/dev/null || fail "wan1s (httping_ssl) not disconnected within 10 s"
sleep 2  # well over down x interval + timeout for the XDP-matched ones too
for i in "${XDP_MATCHED[@]}"; do
  st=$(iface_get "$i" state) tr=$(iface_get "$i" transitions)
  info "$i under the firewall drop: state $st, transitions ${TRANSITIONS[$i]} -> $tr"
  [[ $st == online && $tr == "${TRANSITIONS[$i]}" ]] || fail "$i went '$st' although XDP saw every reply"
done
drops=$(rtr_exec nft list table inet ul_fw | awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }')
arp_drops=$(rtr_exec nft list table arp ul_fw_arp | awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }')
info "firewall dropped $drops IP and $arp_drops ARP packets"
((drops > 0 && arp_drops > 0)) || fail "the firewall rules dropped nothing"
pass "a firewall drop after XDP cannot fake a loss for nping-udp/icmp/arp; httping (read from TCP) goes offline"
rtr_exec nft delete table inet ul_fw
rtr_exec nft delete table arp ul_fw_arp
for i in wan1h wan1s; do
  wait_iface_state "$i" online 10 || fail "$i not back online within 10 s of the drop's end ($UL_LAST_STATE)"
done

# ---- HTTP 500 --------------------------------------------------------------------------------
seen=$(hook_count)
echo 500 >"$MODE"
wait_hook disconnected wan1h "$seen" 10 >/dev/null || fail "wan1h not disconnected within 10 s of HTTP 500s"
wait_hook disconnected wan1s "$seen" 10 >/dev/null || fail "wan1s not disconnected within 10 s of HTTPS 500s"
pass "HTTP 500 counts as failure (HTTP and HTTPS)"
echo 404 >"$MODE"
for i in wan1h wan1s; do
  wait_iface_state "$i" online 10 || fail "$i not back online within 10 s on HTTP 404 ($UL_LAST_STATE)"
done
pass "HTTP 404 counts as an answer (as httping counts it)"
rm -f "$MODE"

# ---- TLS failure: plain HTTP where HTTPS is expected -------------------------------------------
seen=$(hook_count)
ul_kill "$HTTPS_PID"
listening -t "sport = :443" && fail "the HTTPS server still listens after its kill"
core http 203.0.113.3 443 "$MODE" &
PLAIN_PID=$!
ul_bg_add $PLAIN_PID
wait_servers || fail "the plain HTTP server on 443 did not start"
wait_hook disconnected wan1s "$seen" 10 >/dev/null || fail "wan1s not disconnected within 10 s of a non-TLS server on 443"
[[ $(iface_get wan1h state) == online ]] || fail "wan1h (plain HTTP) went '$(iface_get wan1h state)'"
pass "a TLS failure (plain HTTP on the HTTPS port) counts as failure"
ul_kill "$PLAIN_PID"
core https 203.0.113.3 443 "$MODE" "$UL_TMP/cert.pem" "$UL_TMP/key.pem" &
ul_bg_add $!
wait_servers || fail "the HTTPS server did not come back"
wait_iface_state wan1s online 10 || fail "wan1s not back online within 10 s of the TLS server's return"

# ---- upstream blackholes -----------------------------------------------------------------------
seen=$(hook_count)
lab_outage "$P" isp1 on
for i in wan1h wan1s wan1u wan1i; do
  wait_hook disconnected "$i" "$seen" 10 >/dev/null || fail "$i not disconnected within 10 s of isp1's outage"
done
for i in wan2a wan2u; do
  [[ $(iface_get "$i" state) == online ]] || fail "$i went '$(iface_get "$i" state)' during isp1's outage"
done
pass "isp1's blackhole takes every wan1 method offline; wan2's stay online"
seen=$(hook_count)
lab_outage "$P" isp2 on
ip netns exec "$P-isp2" nft -f - <<'EOF2'
table arp lab_arp_outage {
  chain input {
    type filter hook input priority filter; policy accept;
    drop
  }
}
EOF2
for i in wan2a wan2u; do
  wait_hook disconnected "$i" "$seen" 15 >/dev/null || fail "$i not disconnected within 15 s of isp2's outage"
done
pass "isp2's blackhole (ARP dropped there too) takes nping-arp and nping-udp offline"
