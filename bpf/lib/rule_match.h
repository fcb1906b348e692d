/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * "Does rule i match this packet": mwan3's rule fields (family, proto, src_iface, src_port,
 * dest_port, src_ip, dest_ip, ipset) against a parsed packet, and the first-match walk over the
 * rule list.
 *
 * rule_matches() and first_matching_rule() are global (non-static, never inlined) functions: the
 * verifier checks each once, on its own, instead of once per rule the loop walks, which is what
 * lets the classifier carry UPLINKD_MAX_RULES rules of full lists within a small fraction of the
 * 1M-instruction budget, on 5.15 as on 6.x. The price is the global-function contract: the
 * pointer argument is checked against the BTF size of struct flow_packet (fully initialised
 * memory) and may be NULL as far as the verifier knows.
 *
 * Defines global functions: include from one program file per object only.
 */
#ifndef UPLINKD_BPF_LIB_RULE_MATCH_H
#define UPLINKD_BPF_LIB_RULE_MATCH_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/classifier_maps.h"
#include "lib/flow_parse.h"
#include "lib/lpm_key.h"

/* addr and net are 16-byte addresses read as four 32-bit words in memory (network) order;
 * prefixlen counts from the first byte. */
static __always_inline int prefix_match(const __u32 *addr, const __u32 *net, __u32 prefixlen)
{
#pragma unroll
	for (int w = 0; w < 4; w++) {
		__u32 bits, mask;

		if (prefixlen <= (__u32)w * 32)
			break;
		bits = prefixlen - (__u32)w * 32;
		mask = bits >= 32 ? 0xffffffffU : bpf_htonl(~0U << (32 - bits));
		if ((addr[w] ^ net[w]) & mask)
			return 0;
	}
	return 1;
}

/* An empty list matches anything; otherwise one entry of the packet's family must cover addr. An
 * IPv4 entry never matches an IPv6 packet (mwan3 puts it in the iptables chain only). */
static __always_inline int addr_list_match(const struct addr_match *list, __u8 n, const __u8 *addr,
					   __u8 family)
{
	if (n == 0)
		return 1;
	for (int i = 0; i < UPLINKD_RULE_MAX_ADDRS; i++) {
		const struct addr_match *m = &list[i];

		if (i >= n)
			break;
		if (m->family == family &&
		    prefix_match((const __u32 *)addr, (const __u32 *)m->addr, m->prefixlen))
			return 1;
	}
	return 0;
}

/* port: host order. An empty list matches anything. */
static __always_inline int port_list_match(const struct port_range *list, __u8 n, __u16 port)
{
	if (n == 0)
		return 1;
	for (int i = 0; i < UPLINKD_RULE_MAX_PORTS; i++) {
		if (i >= n)
			break;
		if (port >= list[i].lo && port <= list[i].hi)
			return 1;
	}
	return 0;
}

/* The destination must be in set set_id (1-based); a slot the daemon has not filled matches
 * nothing, as an ipset rule whose set does not exist matches nothing. */
static __always_inline int set_match(__u8 set_id, const struct flow_packet *pkt)
{
	__u32 slot = (__u32)set_id - 1;
	struct lpm_key key;
	void *trie;

	if (set_id == 0)
		return 1;
	trie = bpf_map_lookup_elem(&sets, &slot);
	if (!trie)
		return 0;
	lpm_key_for_host(&key, pkt->key.daddr, pkt->key.family);
	return bpf_map_lookup_elem(trie, &key) != 0;
}

/* Returns 1 when rules[index] matches pkt. Fields are tested cheapest first. */
__noinline int rule_matches(__u32 index, const struct flow_packet *pkt)
{
	const struct rule_entry *rule;

	if (!pkt)
		return 0;
	rule = bpf_map_lookup_elem(&rules, &index);
	if (!rule)
		return 0;
	if (rule->family && rule->family != pkt->key.family)
		return 0;
	if (rule->proto && rule->proto != pkt->key.proto)
		return 0;
	if (rule->src_ifindex && rule->src_ifindex != pkt->ifindex)
		return 0;
	/* mwan3 matches ports only for tcp and udp; a fragment's ports are unknown. */
	if (rule->n_sport || rule->n_dport) {
		if (!pkt->ports_known)
			return 0;
		if (!port_list_match(rule->sport, rule->n_sport, bpf_ntohs(pkt->key.sport)))
			return 0;
		if (!port_list_match(rule->dport, rule->n_dport, bpf_ntohs(pkt->key.dport)))
			return 0;
	}
	if (!addr_list_match(rule->src, rule->n_src, pkt->key.saddr, pkt->key.family))
		return 0;
	if (!addr_list_match(rule->dst, rule->n_dst, pkt->key.daddr, pkt->key.family))
		return 0;
	return set_match(rule->set_id, pkt);
}

/* The index of the first of rules[0 .. n_rules-1] that matches pkt, or -1. Global as well: its
 * caller then sees one unknown index instead of UPLINKD_MAX_RULES known ones, and verifies what
 * follows a match once rather than once per rule. */
__noinline int first_matching_rule(const struct flow_packet *pkt, __u32 n_rules)
{
	if (!pkt)
		return -1;
	for (__u32 i = 0; i < UPLINKD_MAX_RULES; i++) {
		if (i >= n_rules)
			break;
		if (rule_matches(i, pkt))
			return (int)i;
	}
	return -1;
}

#endif /* UPLINKD_BPF_LIB_RULE_MATCH_H */
