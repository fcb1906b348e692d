/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * mwan3's first-match rule walk as a bit-vector classifier (DESIGN.md, "Classifying new flows at a
 * cost independent of the number of rules"; the tables are described in maps/uplinkd_maps.h).
 *
 * mwan3's semantics, which the daemon's table compiler (loader/policy/rule_tables.h) folds into
 * one bitmap per field value, and which tests/bpf/lan_ingress_bitvec_test.cpp checks against a
 * linear reference:
 * - family (0 any), proto (0 all), src_iface (ifindex 0 any) must equal the packet's;
 * - a rule with a source or destination port list matches only TCP and UDP packets whose ports
 *   are known (not a fragment); each non-empty list must hold the port (ranges, host order);
 * - each non-empty address list must hold an entry of the packet's family covering the address
 *   (an IPv4 entry never matches an IPv6 packet);
 * - an ipset rule also needs the destination in its set; a set slot the daemon has not filled
 *   matches nothing;
 * - rules[0 .. n_rules-1] are live, and the first that matches wins: bit order is rule order.
 *
 * The cost is a fixed number of lookups whatever the rule count: the table set, one LPM lookup per
 * address, one hash lookup for the interface, two 13-step branch-free binary searches for the
 * ports, then an AND of four words per field and a De Bruijn multiply per word for the first set
 * bit. A field's lookup is skipped when every rule still in the running accepts any value there
 * (rule_tbl_ext, rule_tbl.any_iface): a default rule, or a rule set without port or interface
 * rules, costs the array reads only. ipset
 * membership stays a lookup in the set's own trie, made only for a candidate that has a set: a
 * per-set bitmap in the tables would have to be recompiled whenever a set's contents change (nft
 * sets change at run time without a reload), so the first candidate's set is checked, and a miss
 * clears every rule of that set at once: at most UPLINKD_MAX_SETS lookups, fewer in practice.
 *
 * first_matching_rule() and first_rule_left() are global (non-static, never inlined) functions:
 * the verifier checks each once, on its own, and the caller sees one unknown index. The price is
 * the global-function contract: the pointer argument is checked against the BTF size of struct
 * flow_packet and may be NULL as far as the verifier knows.
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

static __always_inline void bitmap_and(struct rule_bitmap *acc, const struct rule_bitmap *b)
{
#pragma unroll
	for (int w = 0; w < UPLINKD_RULE_WORDS; w++)
		acc->w[w] &= b->w[w];
}

static __always_inline void bitmap_clear(struct rule_bitmap *acc, const struct rule_bitmap *b)
{
#pragma unroll
	for (int w = 0; w < UPLINKD_RULE_WORDS; w++)
		acc->w[w] &= ~b->w[w];
}

/* Keeps rules 0 .. n-1: the live ones (classifier_cfg.n_rules). */
static __always_inline void bitmap_limit(struct rule_bitmap *acc, __u32 n)
{
#pragma unroll
	for (int w = 0; w < UPLINKD_RULE_WORDS; w++) {
		__u32 first = (__u32)w * 64;

		if (n <= first)
			acc->w[w] = 0;
		else if (n < first + 64)
			acc->w[w] &= (1ULL << (n - first)) - 1;
	}
}

/* The index of the lowest set bit of a non-zero word: x & -x isolates it, and multiplying that
 * power of two by a De Bruijn sequence puts a distinct 6-bit pattern in the top bits (BPF has no
 * count-trailing-zeros instruction). */
static const __u8 debruijn_bit_index[64] = {
    0,	1,  48, 2,  57, 49, 28, 3,  61, 58, 50, 42, 38, 29, 17, 4,  62, 55, 59, 36, 53, 51,
    43, 22, 45, 39, 33, 30, 24, 18, 12, 5,  63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21,
    44, 32, 23, 11, 46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9,  13, 8,  7,	6,
};

static __always_inline __u32 lowest_bit(__u64 word)
{
	return debruijn_bit_index[((word & -word) * 0x03f79d71b4cb0a89ULL) >> 58];
}

/* The first rule left in acc, or -1. */
static __always_inline int first_bit(const struct rule_bitmap *acc)
{
#pragma unroll
	for (int w = 0; w < UPLINKD_RULE_WORDS; w++) {
		if (acc->w[w])
			return w * 64 + (int)lowest_bit(acc->w[w]);
	}
	return -1;
}

static __always_inline int bit_is_set(const struct rule_bitmap *b, __u32 bit)
{
	return (b->w[(bit / 64) & (UPLINKD_RULE_WORDS - 1)] >> (bit % 64)) & 1;
}

/* The destination (key) must be in set set_id (1-based); a slot the daemon has not filled matches
 * nothing, as an ipset rule whose set does not exist matches nothing. */
static __always_inline int in_set(__u8 set_id, const struct lpm_key *key)
{
	__u32 slot = (__u32)set_id - 1;
	void *trie;

	trie = bpf_map_lookup_elem(&sets, &slot);
	if (!trie)
		return 0;
	return bpf_map_lookup_elem(trie, key) != 0;
}

/* The bitmap of the rules whose dir list accepts addr; NULL when the set holds no root for this
 * direction and family (tables never written). */
static __always_inline const struct rule_bitmap *addr_bitmap(__u32 set, __u8 dir, const __u8 *addr,
							     __u8 family)
{
	struct rule_addr_key key = {};

	key.prefixlen = 32 + (family == 6 ? 128 : 32);
	key.set = (__u8)set;
	key.dir = dir;
	key.family = family;
	copy_bytes16(key.addr, addr); /* IPv4: the first 4 bytes; the prefix ends there */
	return bpf_map_lookup_elem(&rule_tbl_addr, &key);
}

/* 1 when port >= start (both below 2^17), computed without a branch: a branch would hand the
 * verifier two constant outcomes per step, 2^13 paths per search, where one path with a range
 * suffices. The empty asm keeps the compiler from turning the arithmetic back into a compare. */
static __always_inline __u32 at_or_above(__u32 port, __u32 start)
{
	__u32 diff = port - start;

	asm volatile("" : "+r"(diff));
	return (diff >> 31) ^ 1;
}

/* The last of the sorted boundaries start[0 .. 2^steps - 1] at or below port (start[0] is 0):
 * a branch-free binary search, probing lo + 2^step for step steps - 1 .. 0. */
static __always_inline __u32 port_interval(const __u32 *start, __u32 steps, __u16 port)
{
	__u32 lo = 0;

#pragma unroll
	for (int step = UPLINKD_PORT_SEARCH_STEPS - 1; step >= 0; step--) {
		__u32 probe = lo + (1U << step);

		if (step >= steps)
			continue; /* resolved at compile time: steps is a constant at each call */
		/* The mask is what bounds the index for the verifier; clang can prove it redundant
		 * and drop it, and 6.1's verifier then loses the bound (it does not follow the OR
		 * clang turns the add into). */
		asm volatile("" : "+r"(probe));
		probe &= (1U << steps) - 1;

		lo += at_or_above(port, start[probe]) << step;
	}
	return lo;
}

/* The bitmap of the elementary port interval holding port (host order): the last boundary at or
 * below it, searched in the set's sorted boundaries (padded with UPLINKD_PORT_PAST): the 64-slot
 * copy in rule_tbl_ext when they fit there (6 steps), else rule_tbl's (13 steps). */
static __always_inline const struct rule_bitmap *port_bitmap(const struct rule_tbl *t,
							     const struct rule_tbl_ext *ext, __u32 set,
							     __u32 dir, __u16 port)
{
	__u32 lo, slot;

	if (ext && ext->small_ports[dir & 1])
		lo = port_interval(ext->port_start_small[dir & 1], UPLINKD_PORT_SMALL_STEPS, port);
	else
		lo = port_interval(t->port_start[dir & 1], UPLINKD_PORT_SEARCH_STEPS, port);
	if (lo >= UPLINKD_PORT_INTERVALS)
		return 0;
	slot = UPLINKD_RULE_PORT_SLOT(set, dir & 1, lo);
	return bpf_map_lookup_elem(&rule_tbl_ports, &slot);
}

static __always_inline const struct rule_bitmap *iface_bitmap(const struct rule_tbl *t, __u32 set,
							      __u32 ifindex)
{
	struct rule_iface_key key = {.set = set, .ifindex = ifindex};
	const struct rule_bitmap *b = bpf_map_lookup_elem(&rule_tbl_iface, &key);

	return b ? b : &t->any_iface;
}

/* first_bit() as a global function: its caller learns nothing about which word was zero, so the
 * ipset loop below stays one verifier state per iteration instead of one per combination of
 * words already emptied (about 80,000 instructions more to verify, inline). */
__noinline int first_rule_left(const struct rule_bitmap *acc)
{
	if (!acc)
		return -1;
	return first_bit(acc);
}

/* acc: the rules every other field accepts. The first of them whose ipset (if any) holds the
 * destination, or -1. Each pass either returns or drops every rule of one set, so
 * UPLINKD_MAX_SETS + 1 passes suffice. */
static __always_inline int first_rule_in_sets(const struct rule_tbl *t, struct rule_bitmap *acc,
					      const struct flow_packet *pkt)
{
	struct lpm_key key;

	lpm_key_for_host(&key, pkt->key.daddr, pkt->key.family);
	for (int i = 0; i <= UPLINKD_MAX_SETS; i++) {
		int bit = first_rule_left(acc);
		__u8 set_id;

		if (bit < 0 || bit >= UPLINKD_MAX_RULES)
			return -1;
		if (!bit_is_set(&t->set_rules, (__u32)bit))
			return bit;
		set_id = t->rule_set[bit];
		if (set_id == 0 || set_id > UPLINKD_MAX_SETS)
			return -1; /* tables out of step with themselves: match nothing */
		if (in_set(set_id, &key))
			return bit;
		bitmap_clear(acc, &t->by_set[set_id - 1]);
	}
	return -1;
}

/* 1 when every rule left in acc is in b: a lookup whose bitmap always holds b removes none. */
static __always_inline int bitmap_within(const struct rule_bitmap *acc, const struct rule_bitmap *b)
{
	__u64 outside = 0;

#pragma unroll
	for (int w = 0; w < UPLINKD_RULE_WORDS; w++)
		outside |= acc->w[w] & ~b->w[w];
	return outside == 0;
}

/* ANDs the address fields into acc; 0 when the tables were never written. A direction's LPM
 * lookup is made only when a rule left constrains it (rule_tbl_ext; a NULL `ext` skips none). */
static __always_inline int and_addresses(struct rule_bitmap *acc, const struct rule_tbl_ext *ext,
					 __u32 set, const struct flow_packet *pkt)
{
	__u32 fam = pkt->key.family == 6 ? 1 : 0;
	const struct rule_bitmap *b;

	if (!ext || !bitmap_within(acc, &ext->any_addr[UPLINKD_RULE_DIR_SRC][fam])) {
		b = addr_bitmap(set, UPLINKD_RULE_DIR_SRC, pkt->key.saddr, pkt->key.family);
		if (!b)
			return 0;
		bitmap_and(acc, b);
	}
	if (!ext || !bitmap_within(acc, &ext->any_addr[UPLINKD_RULE_DIR_DST][fam])) {
		b = addr_bitmap(set, UPLINKD_RULE_DIR_DST, pkt->key.daddr, pkt->key.family);
		if (!b)
			return 0;
		bitmap_and(acc, b);
	}
	return 1;
}

/* The same for the port fields of a packet whose ports are known. */
static __always_inline int and_ports(struct rule_bitmap *acc, const struct rule_tbl_ext *ext,
				     const struct rule_tbl *t, __u32 set,
				     const struct flow_packet *pkt)
{
	const struct rule_bitmap *b;

	if (!ext || !bitmap_within(acc, &ext->any_port[UPLINKD_RULE_DIR_SRC])) {
		b = port_bitmap(t, ext, set, UPLINKD_RULE_DIR_SRC, bpf_ntohs(pkt->key.sport));
		if (!b)
			return 0;
		bitmap_and(acc, b);
	}
	if (!ext || !bitmap_within(acc, &ext->any_port[UPLINKD_RULE_DIR_DST])) {
		b = port_bitmap(t, ext, set, UPLINKD_RULE_DIR_DST, bpf_ntohs(pkt->key.dport));
		if (!b)
			return 0;
		bitmap_and(acc, b);
	}
	return 1;
}

/* The index of the first of rules[0 .. n_rules-1] that matches pkt, or -1. The plain arrays
 * first (family, protocol, live rules): what they rule out needs no lookup in the other tables. */
__noinline int first_matching_rule(const struct flow_packet *pkt, __u32 n_rules)
{
	const struct rule_tbl_select *sel;
	const struct rule_tbl_ext *ext;
	const struct rule_tbl *t;
	struct rule_bitmap acc;
	__u32 zero = 0, set;

	if (!pkt)
		return -1;
	sel = bpf_map_lookup_elem(&rule_tbl_sel, &zero);
	if (!sel)
		return -1;
	set = sel->active & 1;
	t = bpf_map_lookup_elem(&rule_tbl, &set);
	if (!t)
		return -1;
	ext = bpf_map_lookup_elem(&rule_tbl_ext, &set);
	acc = t->family[pkt->key.family == 6 ? 1 : 0];
	bitmap_and(&acc, &t->proto[pkt->key.proto]);
	bitmap_limit(&acc, n_rules);
	if (!pkt->ports_known)
		bitmap_and(&acc, &t->no_ports); /* mwan3 matches ports only for tcp and udp */
	/* A rule_tbl_iface entry is that interface's rules ORed with any_iface. */
	if (!bitmap_within(&acc, &t->any_iface))
		bitmap_and(&acc, iface_bitmap(t, set, pkt->ifindex));
	if (pkt->ports_known && !and_ports(&acc, ext, t, set, pkt))
		return -1;
	if (!and_addresses(&acc, ext, set, pkt))
		return -1;
	return first_rule_in_sets(t, &acc, pkt);
}

#endif /* UPLINKD_BPF_LIB_RULE_MATCH_H */
