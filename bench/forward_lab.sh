#!/usr/bin/env bash
# What the forwarding benches (forward_bench.sh, forward_cpu_bench.sh) share, sourced after
# tests/integration/lib.sh and ul_lab_up: the iperf3 server on the core, uplinkd's two-uplink
# configuration with a balanced policy, and mwan3's ip rules and tables for the nft cases.
# Defines fl_start_iperf_server, fl_uplinkd_config and fl_mwan3_routing.

# fl_start_iperf_server [command prefix...]: iperf3 -s on the core's 203.0.113.1 (run under the
# prefix, e.g. taskset); waits until it listens (bounded, 5 s). lab_down ends it with the namespace.
fl_start_iperf_server() {
  ip netns exec "$UL_PREFIX-core" "$@" iperf3 -s -B 203.0.113.1 </dev/null >"$UL_TMP/iperf3-server.log" 2>&1 &
  ul_bg_add $!
  for _ in $(seq 1 50); do
    ip netns exec "$UL_PREFIX-core" ss -Hltn 'sport = :5201' | grep -q . && return 0
    sleep 0.1
  done
  fail "iperf3 server on the core did not listen within 5 s"
}

# fl_uplinkd_config <file> [rules=1] [globals line]: wan1 and wan2 probed every second, policies
# wan1_only and balanced (weight 1 each); rules-1 rules that match none of the benches' traffic
# (dest_ip 10.200.x.y/32, proto udp, dest_port 5000:5100, to wan1_only), then default_rule to
# balanced.
fl_uplinkd_config() {
  local f=$1 n=${2:-1} extra=${3:-} i
  cat >"$f" <<EOF
config globals 'globals'
	option mmx_mask '0x3F00'
${extra:+	$extra}
EOF
  for i in 1 2; do
    local gw
    if [[ $i == 1 ]]; then gw=192.0.2.1; else gw=198.51.100.1; fi
    cat >>"$f" <<EOF

config interface 'wan$i'
	option enabled '1'
	option device 'wan$i'
	option gateway '$gw'
	list track_ip '203.0.113.2'
	option interval '1'
	option timeout '1'
	option down '3'
	option up '2'

config member 'wan${i}_m1_w1'
	option interface 'wan$i'
	option metric '1'
	option weight '1'
EOF
  done
  cat >>"$f" <<'EOF'

config policy 'wan1_only'
	list use_member 'wan1_m1_w1'

config policy 'balanced'
	list use_member 'wan1_m1_w1'
	list use_member 'wan2_m1_w1'
	option last_resort 'unreachable'
EOF
  for ((i = 1; i < n; i++)); do
    printf "\nconfig rule 'r%d'\n\toption dest_ip '%s/32'\n\toption proto 'udp'\n\toption dest_port '5000:5100'\n\toption use_policy 'wan1_only'\n" \
      "$i" "$(fl_rule_dest "$i")" >>"$f"
  done
  printf "\nconfig rule 'default_rule'\n\toption dest_ip '0.0.0.0/0'\n\toption use_policy 'balanced'\n" >>"$f"
}

# fl_rule_dest <i>: the /32 of non-matching rule i (10.200.0.0/16 is never a bench's destination).
fl_rule_dest() { echo "10.200.$(($1 / 256)).$(($1 % 256))"; }

# fl_mwan3_routing add|del: mwan3's ip rules and tables for ids 1 and 2 (mark 0x100, 0x200 under
# 0x3F00), the tables holding the uplink's default route and the connected routes as mwan3rtmon
# copies them; the nft cases route by them.
fl_mwan3_routing() {
  local op=$1 rtr=$UL_PREFIX-rtr
  ip -n "$rtr" route "$op" default via 192.0.2.1 dev wan1 table 1
  ip -n "$rtr" route "$op" 192.0.2.0/24 dev wan1 table 1
  ip -n "$rtr" route "$op" 10.10.0.0/24 dev lan0 table 1
  ip -n "$rtr" route "$op" default via 198.51.100.1 dev wan2 table 2
  ip -n "$rtr" route "$op" 198.51.100.0/24 dev wan2 table 2
  ip -n "$rtr" route "$op" 10.10.0.0/24 dev lan0 table 2
  ip -n "$rtr" rule "$op" pref 1001 iif wan1 lookup 1
  ip -n "$rtr" rule "$op" pref 1002 iif wan2 lookup 2
  ip -n "$rtr" rule "$op" pref 2001 fwmark 0x100/0x3f00 lookup 1
  ip -n "$rtr" rule "$op" pref 2002 fwmark 0x200/0x3f00 lookup 2
  ip -n "$rtr" rule "$op" pref 2061 fwmark 0x3d00/0x3f00 blackhole
  ip -n "$rtr" rule "$op" pref 2062 fwmark 0x3e00/0x3f00 unreachable
}
