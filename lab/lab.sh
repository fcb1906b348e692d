#!/usr/bin/env bash
# uplinkd lab: a two-uplink router in network namespaces.
#
#   lab/lab.sh up   <prefix>             build the lab (fails if any <prefix>-* namespace exists)
#   lab/lab.sh down <prefix>             remove it (also a half-built one); safe to repeat
#   lab/lab.sh exec <prefix> <node> cmd  run cmd in <prefix>-<node>
#   lab/lab.sh outage <prefix> isp1|isp2 on|off
#   lab/lab.sh banip <prefix> on|off     banIP-style ICMP limiter on the router's wan1
#   lab/lab.sh banip-drops <prefix>      packets that limiter has dropped
#   lab/lab.sh add-wan3 <prefix>         a third uplink (wan3 <-> isp1), as netifd would bring it up
#   lab/lab.sh silent-drop <prefix> on|off   the core swallows TCP segments of flows it does not know
#   lab/lab.sh silent-drops <prefix>     segments the core has swallowed so far
#   lab/lab.sh wg-up <prefix> <rtr dev> <core dev> <dir> [go|kernel]   a WireGuard tunnel rtr <-> core
#                                        (wireguard-go, or kernel WireGuard; default $LAB_WG_IMPL or go)
#   lab/lab.sh wg-down <prefix> <rtr dev> <core dev> <dir> end it (processes, sockets or kernel links)
#   lab/lab.sh shape <prefix> <rate>|off  the backup (wan2 <-> isp2) shaped with tbf, both directions
#
# Sourcing it defines lab_up, lab_down, lab_ns, lab_exec, lab_outage, lab_banip, lab_banip_drops,
# lab_add_wan3, lab_silent_drop, lab_silent_drops, lab_wg_up, lab_wg_down, lab_shape, lab_nodes and
# lab_exists without changing the caller's shell options.
#
#            lan                       rtr                          isp1               core
#   eth0 10.10.0.2/24     lan0 10.10.0.1/24                rtr 192.0.2.1/24      isp1 10.1.0.2/30
#        2001:db8:10::2        2001:db8:10::1                  2001:db8:1::1          2001:db8:f1::2
#                         wan1 192.0.2.2/24  (metric 10)   core 10.1.0.1/30      isp2 10.2.0.2/30
#                              2001:db8:1::2                    2001:db8:f1::1         2001:db8:f2::2
#                         wan2 198.51.100.2/24 (metric 20)     isp2              targets on lo:
#                              2001:db8:2::2               rtr 198.51.100.1/24    203.0.113.1-4/32
#                                                              2001:db8:2::1      2001:db8:ff::1-4/128
#                                                          core 10.2.0.1/30
#                                                               2001:db8:f2::1
# Everything lives in the five namespaces <prefix>-{lan,rtr,isp1,isp2,core}; veth pairs are created
# inside them directly, so the root namespace never sees an interface, route, rule or nft table of
# the lab. Addresses are documentation prefixes and 10.x only.

LAB_SH=$(readlink -f "${BASH_SOURCE[0]}")
LAB_NODES=(lan rtr isp1 isp2 core)

lab_nodes() { printf '%s\n' "${LAB_NODES[@]}"; }

# lab_ns <prefix> <node>: the namespace name of a node.
lab_ns() { printf '%s-%s\n' "$1" "$2"; }

_lab_check_prefix() {
  if [[ ! ${1:-} =~ ^[A-Za-z0-9_]{1,24}$ ]]; then
    echo "lab: bad prefix '${1:-}' (letters, digits, _; at most 24)" >&2
    return 2
  fi
}

_lab_ns_exists() { [[ -e /run/netns/$1 ]]; }

_lab_list() {
  local n out=
  for n in "${LAB_NODES[@]}"; do _lab_ns_exists "$1-$n" && out+="$1-$n "; done
  printf '%s\n' "$out"
}

# lab_exists <prefix>: true when any namespace of the prefix exists.
lab_exists() {
  local n
  for n in "${LAB_NODES[@]}"; do _lab_ns_exists "$1-$n" && return 0; done
  return 1
}

# lab_exec <prefix> <node> cmd...
lab_exec() {
  local p=$1 node=$2
  shift 2
  ip netns exec "$p-$node" "$@"
}

# The build runs as its own bash process so that `set -e` holds whatever the caller's context
# (bash ignores errexit inside functions called from `if`, `||` and `&&`).
_lab_build() {
  set -euo pipefail
  local p=$1
  local lan=$p-lan rtr=$p-rtr isp1=$p-isp1 isp2=$p-isp2 core=$p-core n

  for n in "${LAB_NODES[@]}"; do
    ip netns add "$p-$n"
    ip -n "$p-$n" link set lo up
    # Kernel defaults made explicit: the router answers and forwards on any uplink (mwan3's
    # per-uplink routing needs rp_filter off), IPv6 addresses are usable at once (no DAD).
    ip netns exec "$p-$n" sysctl -q -w \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
      net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
  done
  for n in rtr isp1 isp2 core; do
    ip netns exec "$p-$n" sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  done

  # Links (created inside the namespaces: the root namespace never holds them).
  ip -n "$lan" link add name eth0 type veth peer name lan0 netns "$rtr"
  ip -n "$rtr" link add name wan1 type veth peer name rtr netns "$isp1"
  ip -n "$rtr" link add name wan2 type veth peer name rtr netns "$isp2"
  ip -n "$isp1" link add name core type veth peer name isp1 netns "$core"
  ip -n "$isp2" link add name core type veth peer name isp2 netns "$core"

  # lan: the client.
  ip -n "$lan" addr add 10.10.0.2/24 dev eth0
  ip -n "$lan" addr add 2001:db8:10::2/64 dev eth0 nodad
  ip -n "$lan" link set eth0 up
  ip -n "$lan" route add default via 10.10.0.1 dev eth0
  ip -n "$lan" -6 route add default via 2001:db8:10::1 dev eth0

  # rtr: the gateway uplinkd runs on. Default routes in main like OpenWrt's netifd sets them.
  ip -n "$rtr" addr add 10.10.0.1/24 dev lan0
  ip -n "$rtr" addr add 2001:db8:10::1/64 dev lan0 nodad
  ip -n "$rtr" addr add 192.0.2.2/24 dev wan1
  ip -n "$rtr" addr add 2001:db8:1::2/64 dev wan1 nodad
  ip -n "$rtr" addr add 198.51.100.2/24 dev wan2
  ip -n "$rtr" addr add 2001:db8:2::2/64 dev wan2 nodad
  for n in lan0 wan1 wan2; do ip -n "$rtr" link set "$n" up; done
  ip -n "$rtr" route add default via 192.0.2.1 dev wan1 metric 10
  ip -n "$rtr" route add default via 198.51.100.1 dev wan2 metric 20
  ip -n "$rtr" -6 route add default via 2001:db8:1::1 dev wan1 metric 10
  ip -n "$rtr" -6 route add default via 2001:db8:2::1 dev wan2 metric 20
  # NAT the LAN out of every uplink. IPv6 is masqueraded too: the "internet" has no route to the
  # LAN prefix, as a multi-WAN site without its own address space would not have one either.
  ip netns exec "$rtr" nft -f - <<'EOF'
table inet lab_nat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname { "wan1", "wan2", "wan3" } ip saddr 10.10.0.0/24 masquerade
    oifname { "wan1", "wan2", "wan3" } ip6 saddr 2001:db8:10::/64 masquerade
  }
}
EOF

  # isp1 and isp2: each a gateway to the core.
  ip -n "$isp1" addr add 192.0.2.1/24 dev rtr
  ip -n "$isp1" addr add 2001:db8:1::1/64 dev rtr nodad
  ip -n "$isp1" addr add 10.1.0.1/30 dev core
  ip -n "$isp1" addr add 2001:db8:f1::1/64 dev core nodad
  ip -n "$isp2" addr add 198.51.100.1/24 dev rtr
  ip -n "$isp2" addr add 2001:db8:2::1/64 dev rtr nodad
  ip -n "$isp2" addr add 10.2.0.1/30 dev core
  ip -n "$isp2" addr add 2001:db8:f2::1/64 dev core nodad
  for n in "$isp1" "$isp2"; do
    ip -n "$n" link set rtr up
    ip -n "$n" link set core up
  done
  ip -n "$isp1" route add default via 10.1.0.2 dev core
  ip -n "$isp1" -6 route add default via 2001:db8:f1::2 dev core
  ip -n "$isp2" route add default via 10.2.0.2 dev core
  ip -n "$isp2" -6 route add default via 2001:db8:f2::2 dev core

  # core: the "internet" with the probe targets.
  ip -n "$core" addr add 10.1.0.2/30 dev isp1
  ip -n "$core" addr add 2001:db8:f1::2/64 dev isp1 nodad
  ip -n "$core" addr add 10.2.0.2/30 dev isp2
  ip -n "$core" addr add 2001:db8:f2::2/64 dev isp2 nodad
  for n in 1 2 3 4; do
    ip -n "$core" addr add "203.0.113.$n/32" dev lo
    ip -n "$core" addr add "2001:db8:ff::$n/128" dev lo nodad
  done
  for n in isp1 isp2; do ip -n "$core" link set "$n" up; done
  ip -n "$core" route add 192.0.2.0/24 via 10.1.0.1 dev isp1
  ip -n "$core" route add 198.51.100.0/24 via 10.2.0.1 dev isp2
  ip -n "$core" -6 route add 2001:db8:1::/64 via 2001:db8:f1::1 dev isp1
  ip -n "$core" -6 route add 2001:db8:2::/64 via 2001:db8:f2::1 dev isp2
}

# lab_up <prefix>: build the lab; on any error remove what was built and return non-zero.
lab_up() {
  local p=${1:-}
  _lab_check_prefix "$p" || return 2
  if lab_exists "$p"; then
    echo "lab: prefix '$p' is already in use (namespaces: $(_lab_list "$p"))" >&2
    echo "lab: remove it first with: $LAB_SH down $p" >&2
    return 1
  fi
  if ! bash "$LAB_SH" __build "$p"; then
    echo "lab: building '$p' failed; removing what was built" >&2
    lab_down "$p"
    return 1
  fi
}

# lab_down <prefix>: end the processes left in the lab's namespaces, delete the namespaces
# (which deletes their veths and nft tables). Works on a half-built lab; idempotent.
lab_down() {
  local p=${1:-} n ns pids pid i left=0
  _lab_check_prefix "$p" || return 2
  for n in "${LAB_NODES[@]}"; do
    ns=$p-$n
    _lab_ns_exists "$ns" || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n $pids ]]; then
      # shellcheck disable=SC2086 # a list of pids
      kill -TERM $pids 2>/dev/null || true
      for ((i = 0; i < 30; i++)); do
        [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
        sleep 0.1
      done
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
  for n in "${LAB_NODES[@]}"; do
    if _lab_ns_exists "$p-$n"; then
      echo "lab: could not delete namespace $p-$n" >&2
      left=1
    fi
  done
  return $left
}

# lab_outage <prefix> isp1|isp2 on|off: the ISP silently drops everything it would forward between
# the router and the core. Its own addresses (192.0.2.1 / 198.51.100.1) still answer ARP, ND and
# ping, and the router's link stays up: the failure only a probe beyond the gateway can see.
lab_outage() {
  local p=$1 isp=$2 mode=$3 ns
  case $isp in isp1 | isp2) ;; *) echo "lab_outage: isp1 or isp2, not '$isp'" >&2; return 2 ;; esac
  ns=$p-$isp
  ip netns exec "$ns" nft delete table inet lab_outage 2>/dev/null || true
  case $mode in
    on)
      ip netns exec "$ns" nft -f - <<'EOF'
table inet lab_outage {
  chain outage {
    type filter hook forward priority filter; policy accept;
    counter drop
  }
}
EOF
      ;;
    off) ;;
    *) echo "lab_outage: on or off, not '$mode'" >&2; return 2 ;;
  esac
}

# lab_banip <prefix> on|off: banIP's ICMP flood rule (field report wireguard-stuck-on-backup-uplink)
# on the router's wan1, in prerouting, after XDP and tc ingress and before any socket.
lab_banip() {
  local p=$1 mode=$2 ns=$1-rtr
  ip netns exec "$ns" nft delete table inet banip 2>/dev/null || true
  case $mode in
    on)
      ip netns exec "$ns" nft -f - <<'EOF'
table inet banip {
  chain pre {
    type filter hook prerouting priority -150; policy accept;
    iifname "wan1" meta l4proto { icmp, ipv6-icmp } limit rate over 25/second burst 5 packets counter drop
  }
}
EOF
      ;;
    off) ;;
    *) echo "lab_banip: on or off, not '$mode'" >&2; return 2 ;;
  esac
}

# lab_banip_drops <prefix>: packets dropped by the banIP rule so far (0 when it is off).
lab_banip_drops() {
  local out
  out=$(ip netns exec "$1-rtr" nft list chain inet banip pre 2>/dev/null) || { echo 0; return 0; }
  sed -n 's/.*counter packets \([0-9][0-9]*\) .*/\1/p' <<<"$out" | head -n 1 | grep . || echo 0
}

# lab_add_wan3 <prefix>: a third uplink as netifd would bring it up: veth wan3 (rtr, 10.3.0.2/24)
# to isp1 (rtr3, 10.3.0.1/24), default route via 10.3.0.1 metric 30, the core routing 10.3.0.0/24
# back through isp1.
lab_add_wan3() {
  local p=$1
  ip -n "$p-rtr" link add name wan3 type veth peer name rtr3 netns "$p-isp1" || return 1
  ip -n "$p-isp1" addr add 10.3.0.1/24 dev rtr3 &&
    ip -n "$p-isp1" link set rtr3 up &&
    ip -n "$p-core" route replace 10.3.0.0/24 via 10.1.0.1 dev isp1 &&
    ip -n "$p-rtr" addr add 10.3.0.2/24 dev wan3 &&
    ip -n "$p-rtr" link set wan3 up &&
    ip -n "$p-rtr" route add default via 10.3.0.1 dev wan3 metric 30
}

# lab_silent_drop <prefix> on|off: the core's own sockets behave like a remote behind a stateful
# firewall that silently drops unknown flows (field report stale-flows-after-failover): a TCP
# segment that is not a bare SYN and belongs to no connection the core knows is dropped before the
# TCP stack could answer it with a RST. A connection re-NATed to another uplink's address mid-stream
# is such a segment, so without help from the router its client hangs instead of being reset.
# Forwarded traffic and ICMP (the probes) are not affected.
lab_silent_drop() {
  local p=$1 mode=$2 ns=$1-core
  ip netns exec "$ns" nft delete table inet lab_silent 2>/dev/null || true
  case $mode in
    on)
      ip netns exec "$ns" nft -f - <<'EOF'
table inet lab_silent {
  chain in {
    type filter hook input priority filter; policy accept;
    meta l4proto tcp ct state invalid counter drop
    tcp flags & (fin | syn | rst | ack) != syn ct state new counter drop
  }
}
EOF
      ;;
    off) ;;
    *) echo "lab_silent_drop: on or off, not '$mode'" >&2; return 2 ;;
  esac
}

# lab_silent_drops <prefix>: TCP segments the core has swallowed so far (0 when it is off).
lab_silent_drops() {
  local out
  out=$(ip netns exec "$1-core" nft list chain inet lab_silent in 2>/dev/null) || { echo 0; return 0; }
  sed -n 's/.*counter packets \([0-9][0-9]*\) .*/\1/p' <<<"$out" | awk '{ n += $1 } END { print n + 0 }'
}

# lab_wg_up <prefix> <rtr dev> <core dev> <dir> [go|kernel]: a WireGuard tunnel between the router
# and the core, as a site's VPN to its office would be. The core's server listens on port 51820 of
# every address; its endpoint is 203.0.113.5 (203.0.113.6 is a second address of the same server, for
# an endpoint that moves). Tunnel addresses: core 10.99.0.1/24, router 10.99.0.2/24; the router's peer
# has allowed-ips 10.99.0.0/24 and keepalive 1 s (outer packets flow even when the tunnel is idle).
# Keys, pids and logs go to <dir>.
# The implementation is the 5th argument, else $LAB_WG_IMPL, else go:
#   go      wireguard-go at both ends (needs /dev/net/tun; this host has no kernel WireGuard module).
#           Device names must be unique on the host: wireguard-go's UAPI sockets
#           (/var/run/wireguard/<dev>.sock) live in the shared file system, not in the namespace.
#   kernel  `ip link add <dev> type wireguard` in each namespace (the wireguard module: the VMs of
#           vmtest have it). Kernel WireGuard caches each peer's source address and route, which is
#           what tests/integration/test_wireguard_kernel.sh is about.
lab_wg_up() {
  local p=$1 rdev=$2 cdev=$3 dir=$4 impl=${5:-${LAB_WG_IMPL:-go}} n
  case $impl in go | kernel) ;; *) echo "lab_wg_up: implementation go or kernel, not '$impl'" >&2; return 2 ;; esac
  command -v wg >/dev/null 2>&1 || { echo "lab_wg_up: 'wg' not installed (wireguard-tools)" >&2; return 1; }
  mkdir -p "$dir" || return 1
  echo "$impl" >"$dir/impl"
  (umask 077 && wg genkey >"$dir/core.key" && wg genkey >"$dir/rtr.key") || return 1
  wg pubkey <"$dir/core.key" >"$dir/core.pub" && wg pubkey <"$dir/rtr.key" >"$dir/rtr.pub" || return 1
  ip -n "$p-core" addr add 203.0.113.5/32 dev lo 2>/dev/null
  ip -n "$p-core" addr add 203.0.113.6/32 dev lo 2>/dev/null
  if [[ $impl == kernel ]]; then
    _lab_wg_kernel_devices "$p" "$rdev" "$cdev" || return 1
  else
    _lab_wg_go_devices "$p" "$rdev" "$cdev" "$dir" || return 1
  fi
  ip netns exec "$p-core" wg set "$cdev" private-key "$dir/core.key" listen-port 51820 \
    peer "$(cat "$dir/rtr.pub")" allowed-ips 10.99.0.2/32 || return 1
  ip -n "$p-core" addr add 10.99.0.1/24 dev "$cdev" && ip -n "$p-core" link set "$cdev" up || return 1
  ip netns exec "$p-rtr" wg set "$rdev" private-key "$dir/rtr.key" listen-port 51821 \
    peer "$(cat "$dir/core.pub")" endpoint 203.0.113.5:51820 allowed-ips 10.99.0.0/24 \
    persistent-keepalive 1 || return 1
  ip -n "$p-rtr" addr add 10.99.0.2/24 dev "$rdev" && ip -n "$p-rtr" link set "$rdev" up
}

# _lab_wg_go_devices <prefix> <rtr dev> <core dev> <dir>: one wireguard-go per end, ready to configure.
_lab_wg_go_devices() {
  local p=$1 rdev=$2 cdev=$3 dir=$4 n i
  command -v wireguard-go >/dev/null 2>&1 || { echo "lab_wg_up: 'wireguard-go' not installed" >&2; return 1; }
  [[ -c /dev/net/tun ]] || { echo "lab_wg_up: no /dev/net/tun (wireguard-go needs it)" >&2; return 1; }
  for n in "core:$cdev" "rtr:$rdev"; do
    # -f: stay in the foreground, so the pid is wireguard-go's and lab_wg_down can end it.
    ip netns exec "$p-${n%%:*}" wireguard-go -f "${n#*:}" </dev/null >"$dir/${n%%:*}.wg.log" 2>&1 &
    echo $! >"$dir/${n%%:*}.wg.pid"
  done
  for ((i = 0; i < 50; i++)); do
    [[ -S /var/run/wireguard/$cdev.sock && -S /var/run/wireguard/$rdev.sock ]] && break
    sleep 0.1
  done
  ((i < 50)) || { echo "lab_wg_up: wireguard-go did not create its UAPI sockets: $(cat "$dir"/*.wg.log)" >&2; return 1; }
}

# _lab_wg_kernel_devices <prefix> <rtr dev> <core dev>: a kernel WireGuard link in each namespace.
_lab_wg_kernel_devices() {
  local p=$1 rdev=$2 cdev=$3 err
  err=$(ip -n "$p-core" link add "$cdev" type wireguard 2>&1) || {
    echo "lab_wg_up: ip link add $cdev type wireguard: $err (no kernel WireGuard here: modprobe wireguard," \
      "or use wireguard-go: LAB_WG_IMPL=go)" >&2
    return 1
  }
  ip -n "$p-rtr" link add "$rdev" type wireguard
}

# lab_wg_down <prefix> <rtr dev> <core dev> <dir>: remove the tunnel lab_wg_up made (the kind it
# recorded in <dir>): end both wireguard-go processes (their devices go with them) and remove their
# UAPI sockets, or delete the kernel links. Safe to repeat.
lab_wg_down() {
  local p=$1 rdev=$2 cdev=$3 dir=$4 n pid i
  if [[ $(cat "$dir/impl" 2>/dev/null) == kernel ]]; then
    ip -n "$p-rtr" link del "$rdev" 2>/dev/null
    ip -n "$p-core" link del "$cdev" 2>/dev/null
    return 0
  fi
  for n in core rtr; do
    pid=$(cat "$dir/$n.wg.pid" 2>/dev/null) || continue
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$dir/$n.wg.pid"
  done
  rm -f "/var/run/wireguard/$rdev.sock" "/var/run/wireguard/$cdev.sock"
  return 0
}

# lab_shape <prefix> <rate>|off: the backup shaped like a slow 5G link (field report
# wireguard-stuck-on-backup-uplink): tbf at <rate> (e.g. 4mbit) on the router's wan2 egress and on
# isp2's egress towards the router, so both directions of the backup are slow.
lab_shape() {
  local p=$1 rate=$2 n
  for n in "rtr:wan2" "isp2:rtr"; do
    tc -n "$p-${n%%:*}" qdisc del dev "${n#*:}" root 2>/dev/null
    [[ $rate == off ]] && continue
    tc -n "$p-${n%%:*}" qdisc add dev "${n#*:}" root tbf rate "$rate" burst 16kb latency 100ms || return 1
  done
}

_lab_usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$LAB_SH" | sed '/^Everything lives/,$d' >&2
  return 2
}

_lab_main() {
  local cmd=${1:-}
  [[ $cmd == -h || $cmd == --help || -z $cmd ]] && { _lab_usage; return 2; }
  if [[ $(id -u) != 0 ]]; then
    echo "lab: must run as root (it creates network namespaces)" >&2
    return 1
  fi
  shift
  case $cmd in
    __build) _lab_check_prefix "${1:-}" && _lab_build "$1" ;;
    up) lab_up "$@" && echo "lab: $1 is up (namespaces: $(lab_nodes | sed "s/^/$1-/" | tr "\n" " "))" ;;
    down) lab_down "$@" ;;
    exec)
      (($# >= 3)) || { _lab_usage; return 2; }
      local p=$1 node=$2
      shift 2
      exec ip netns exec "$p-$node" "$@"
      ;;
    outage) lab_outage "$@" ;;
    banip) lab_banip "$@" ;;
    banip-drops) lab_banip_drops "$@" ;;
    add-wan3) lab_add_wan3 "$@" ;;
    silent-drop) lab_silent_drop "$@" ;;
    silent-drops) lab_silent_drops "$@" ;;
    wg-up) lab_wg_up "$@" ;;
    wg-down) lab_wg_down "$@" ;;
    shape) lab_shape "$@" ;;
    *) _lab_usage ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  _lab_main "$@"
  exit $?
fi
