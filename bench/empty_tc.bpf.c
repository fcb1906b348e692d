/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * An empty tc program (direct action, TC_ACT_OK) for bench/forward_cpu_bench.sh's plain-tc case:
 * attached where uplinkd attaches its tc programs (the LAN device's ingress, the uplinks' egress),
 * it shows what those hooks cost a forwarded packet before a program does any work. The bench
 * compiles it itself (clang -target bpf); it is not part of the build.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

__attribute__((section("tc"), used)) int empty_tc(struct __sk_buff *skb)
{
	(void)skb;
	return TC_ACT_OK;
}

char LICENSE[] __attribute__((section("license"), used)) = "Dual BSD/GPL";
