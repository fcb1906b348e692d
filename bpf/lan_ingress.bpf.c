/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * lan_ingress: tc ingress on every LAN-side device. Gives each flow the mwan3 mark of the uplink
 * it should leave by and keeps that decision in `flows`, so policy routing (ip rule fwmark) sends
 * every packet of the flow the same way. It marks: the verdict is TC_ACT_OK, except for the RST
 * answering a stale TCP flow (below).
 *
 * A flow's first packet is decided in mwan3's hook order (../shared/reference/mwan3-behaviour.md
 * section 4): the remembered decision (mwan3 restores the conntrack mark), the uplink a connection
 * came in on (mwan3 marks traffic arriving on a WAN), connected networks, then the user rules in
 * order, first match wins, each naming a policy that spreads new flows over its online members by
 * weight (section 5).
 *
 * Stale flows in O(1) (DESIGN.md): a flow stores its uplink's generation; the daemon bumps the
 * generation once when the uplink goes down, and the flow's next packet finds the mismatch here.
 * With UPLINKD_CFG_RESET_STALE_TCP, that packet of a TCP flow comes back to the client as a RST
 * (lib/tcp_reset.h) and is not forwarded: the verdict is then a redirect out of the LAN device it
 * came in by. Everything else stale, and flows idle beyond their protocol's timeout, is simply
 * classified again.
 *
 * Fragments: a datagram's first fragment carries its ports and is decided by them, like an
 * unfragmented packet of its flow; its later fragments take that decision from `fragments`
 * (lib/frag_map.h), so a port rule matches a fragmented datagram whole.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/classifier_maps.h"
#include "lib/flow_hash.h"
#include "lib/flow_parse.h"
#include "lib/frag_map.h"
#include "lib/inbound_map.h"
#include "lib/lpm_key.h"
#include "lib/parse.h"
#include "lib/rule_match.h"
#include "lib/tcp_reset.h"

/* Load-time configuration, set through the skeleton's rodata before load. */
const volatile __u32 l3_only = 0; /* 1: no link-layer header (e.g. a WireGuard LAN device) */

#define NS_PER_S 1000000000ULL

/* A decision as it goes into `flows`. An argument of the global classify_flow(), so no implicit
 * padding (the verifier wants every byte it may read initialised). */
struct decision {
	__u32 mark;
	__u32 generation;
	__u16 uplink_id;
	__u16 rule_id;
	__u8 origin;
	__u8 pad[3];
};

/* timeout_s 0 never expires. A time stamp from the future (another CPU's `now` was later than
 * ours) counts as fresh rather than as ancient. */
static __always_inline int is_fresh(__u64 last_seen_ns, __u64 now, __u32 timeout_s)
{
	return timeout_s == 0 || now <= last_seen_ns || now - last_seen_ns < timeout_s * NS_PER_S;
}

/* An entry's time stamp is rewritten at most once a second: an established flow costs one map
 * lookup per packet, not a cache line bouncing between CPUs. */
static __always_inline void touch(__u64 *last_seen_ns, __u64 now)
{
	if (now > *last_seen_ns && now - *last_seen_ns >= UPLINKD_REFRESH_NS)
		*last_seen_ns = now;
}

/* A decision that names an uplink holds while that uplink is usable and has not gone down since
 * (same generation). Uplink 0 (connected, last_resort, unmatched) always holds. */
static __always_inline int uplink_still_valid(__u16 uplink_id, __u32 generation)
{
	struct uplink_record *u;

	if (uplink_id == 0)
		return 1;
	u = uplink_lookup(uplink_id);
	return uplink_usable(u) && u->generation == generation;
}

static __always_inline __u32 uplink_generation(__u16 uplink_id)
{
	struct uplink_record *u;

	if (uplink_id == 0)
		return 0;
	u = uplink_lookup(uplink_id);
	return u ? u->generation : 0;
}

/* What the flow's remembered decision is worth for this packet. */
enum flow_state {
	FLOW_NEW = 0, /* no entry */
	FLOW_HELD,    /* the decision holds */
	FLOW_STALE,   /* its uplink is not usable any more, or went down since (generation moved) */
	FLOW_IDLE,    /* idle beyond its protocol's timeout */
};

/* Idle timeout of a flow by its protocol; 0 never expires. */
static __always_inline __u32 flow_timeout_s(const struct classifier_cfg *cfg, __u8 proto)
{
	if (proto == IPPROTO_TCP)
		return cfg->flow_timeout_tcp_s;
	if (proto == IPPROTO_UDP)
		return cfg->flow_timeout_udp_s;
	return cfg->flow_timeout_s;
}

/* Staleness first: a flow that is both stale and idle is still a connection pinned to a dead
 * uplink, and its client is better served by a RST than by a silent new route. */
static __always_inline enum flow_state
flow_state_of(const struct flow_value *v, const struct classifier_cfg *cfg, __u8 proto, __u64 now)
{
	if (!v)
		return FLOW_NEW;
	if (!uplink_still_valid(v->uplink_id, v->generation))
		return FLOW_STALE;
	if (!is_fresh(v->last_seen_ns, now, flow_timeout_s(cfg, proto)))
		return FLOW_IDLE;
	return FLOW_HELD;
}

/* Step 1: the flow's remembered decision, while it holds. */
static __always_inline void reuse_flow(struct flow_value *v, __u64 now, struct decision *d)
{
	d->mark = v->mark;
	d->generation = v->generation;
	d->uplink_id = v->uplink_id;
	d->rule_id = v->rule_id;
	d->origin = v->origin;
	touch(&v->last_seen_ns, now);
}

/* Step 2: the LAN side of a connection that came in on an uplink (port forward): its replies
 * leave by that uplink. Keyed by the remote endpoint, which DNAT leaves unchanged. */
static __always_inline int inbound_reply(const struct flow_packet *pkt,
					 const struct classifier_cfg *cfg, __u64 now,
					 struct decision *d)
{
	struct inbound_key key = {};
	struct inbound_value *v;
	struct uplink_record *u;

	if (!pkt->ports_known)
		return 0;
	/* A LAN host opening a TCP connection is never replying to one: a remote endpoint that once
	 * connected in must not capture the LAN's own new connections to it. */
	if (pkt->key.proto == IPPROTO_TCP && is_bare_syn(pkt->tcp_flags))
		return 0;
	copy_bytes16(key.raddr, pkt->key.daddr);
	key.rport = pkt->key.dport;
	key.proto = pkt->key.proto;
	key.family = pkt->key.family;
	v = bpf_map_lookup_elem(&inbound, &key);
	if (!v)
		return 0;
	/* UDP endpoints are refreshed by every datagram in, so an idle one is over. A TCP endpoint
	 * is written by the SYN only; its connection can idle for hours and still need its replies
	 * to go back the same way (and the SYN check above keeps an old entry harmless). */
	if (pkt->key.proto == IPPROTO_UDP &&
	    !is_fresh(v->last_seen_ns, now, cfg->flow_timeout_udp_s))
		return 0;
	u = uplink_lookup(v->uplink_id);
	if (!uplink_usable(u))
		return 0; /* its uplink is gone, so is the connection: decide like any flow */
	d->mark = v->mark;
	d->uplink_id = v->uplink_id;
	d->generation = u->generation;
	d->origin = FLOW_ORIGIN_INBOUND;
	return 1;
}

/* Step 3: destinations in connected networks use the main table (MMX_DEFAULT). */
static __always_inline int to_connected(const struct flow_packet *pkt,
					const struct classifier_cfg *cfg, struct decision *d)
{
	struct lpm_key key;

	lpm_key_for_host(&key, pkt->key.daddr, pkt->key.family);
	if (!bpf_map_lookup_elem(&connected, &key))
		return 0;
	d->mark = cfg->default_mark;
	d->origin = FLOW_ORIGIN_CONNECTED;
	return 1;
}

static __always_inline void count_rule(__u32 index, __u32 bytes)
{
	struct rule_counter *c = bpf_map_lookup_elem(&rule_counters, &index);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The member a flow hash selects: the first with hash <= threshold (the last threshold is
 * 0xFFFFFFFF); the last member for a malformed table without it. Global so the verifier sees one
 * unknown index come back rather than following each of UPLINKD_POLICY_MAX_MEMBERS constants
 * through the rest of the decision. p points at a policies value. */
__noinline int pick_member(const struct policy_entry *p, __u32 n_members, __u32 hash)
{
	if (!p || n_members == 0)
		return 0;
	for (__u32 i = 0; i < UPLINKD_POLICY_MAX_MEMBERS; i++) {
		if (i >= n_members)
			break;
		if (hash <= p->threshold[i])
			return (int)i;
	}
	return (int)n_members - 1;
}

/* -1 when the uplink is not among the policy's current members. */
static __always_inline int member_of(const struct policy_entry *p, __u32 n_members, __u16 uplink_id)
{
	for (__u32 i = 0; i < UPLINKD_POLICY_MAX_MEMBERS; i++) {
		if (i >= n_members)
			break;
		if (p->uplink_id[i] == uplink_id)
			return (int)i;
	}
	return -1;
}

static __always_inline void sticky_key_for(struct sticky_key *key, const struct flow_packet *pkt,
					   __u32 rule_id)
{
	copy_bytes16(key->saddr, pkt->key.saddr);
	key->rule_id = rule_id;
	key->family = pkt->key.family;
}

/* A sticky rule reuses the uplink it gave this source last, while the entry is within the rule's
 * timeout, the uplink has not gone down since, and it is still one of the policy's members (mwan3
 * restores a sticky mark only for interfaces in the policy's current chain). */
static __always_inline int sticky_reuse(const struct sticky_key *key, const struct rule_entry *rule,
					const struct policy_entry *p, __u32 n_members, __u64 now,
					struct decision *d)
{
	struct sticky_value *v = bpf_map_lookup_elem(&sticky, key);
	int member;

	if (!v)
		return 0;
	if (!is_fresh(v->last_seen_ns, now, rule->sticky_timeout_s))
		return 0;
	if (v->uplink_id == 0 || !uplink_still_valid(v->uplink_id, v->generation))
		return 0;
	member = member_of(p, n_members, v->uplink_id);
	if (member < 0 || member >= UPLINKD_POLICY_MAX_MEMBERS)
		return 0;
	d->mark = p->mark[member];
	d->uplink_id = v->uplink_id;
	d->generation = v->generation;
	v->last_seen_ns = now; /* mwan3 re-adds the source with a fresh timeout on each new flow */
	return 1;
}

static __always_inline void sticky_store(const struct sticky_key *key, const struct decision *d,
					 __u64 now)
{
	struct sticky_value v = {};

	v.last_seen_ns = now;
	v.generation = d->generation;
	v.uplink_id = d->uplink_id;
	v.mark = d->mark;
	bpf_map_update_elem(&sticky, key, &v, BPF_ANY);
}

/* Step 4: rule `index`, the first that matched (first_matching_rule()), decides through its
 * policy: last_resort when no member is online, else the sticky uplink or the hash's pick. */
static __always_inline void apply_rule(const struct flow_packet *pkt, __u32 index, __u32 bytes,
				       __u64 now, struct decision *d)
{
	const struct rule_entry *rule;
	const struct policy_entry *p;
	struct sticky_key skey = {};
	__u32 slot, n_members;
	int member;

	count_rule(index, bytes);
	d->origin = FLOW_ORIGIN_RULE;
	d->rule_id = (__u16)(index + 1);
	rule = bpf_map_lookup_elem(&rules, &index);
	if (!rule)
		return;
	slot = UPLINKD_POLICY_SLOT(rule->policy_id, pkt->key.family);
	p = bpf_map_lookup_elem(&policies, &slot);
	if (!p)
		return; /* a policy id outside the map: unmarked, as if the policy were empty */

	n_members = p->n_members;
	if (n_members == 0) {
		d->mark = p->fallback_mark; /* last_resort: unreachable, blackhole or default */
		return;
	}
	if (n_members > UPLINKD_POLICY_MAX_MEMBERS)
		n_members = UPLINKD_POLICY_MAX_MEMBERS;

	if (rule->sticky) {
		sticky_key_for(&skey, pkt, index + 1);
		if (sticky_reuse(&skey, rule, p, n_members, now, d))
			return;
	}
	member = pick_member(p, n_members, flow_hash_words((const __u32 *)&pkt->key));
	if (member < 0 || member >= UPLINKD_POLICY_MAX_MEMBERS)
		return;
	d->mark = p->mark[member];
	d->uplink_id = p->uplink_id[member];
	d->generation = uplink_generation(d->uplink_id);
	if (rule->sticky)
		sticky_store(&skey, d, now);
}

/* Steps 2-5 for a flow without a usable decision; fills d (zeroed by the caller). A global
 * function, verified once: otherwise every way of parsing a packet (VLAN tags, IPv4, IPv6 with
 * extension headers) would walk these steps again. Returns 0. */
__noinline int classify_flow(const struct flow_packet *pkt, struct decision *d, __u64 now,
			     __u32 bytes)
{
	const struct classifier_cfg *cfg;
	__u32 zero = 0, n_rules;
	int index;

	if (!pkt || !d)
		return 0;
	cfg = bpf_map_lookup_elem(&classifier_cfg, &zero);
	if (!cfg)
		return 0;
	if (inbound_reply(pkt, cfg, now, d))
		return 0;
	if (to_connected(pkt, cfg, d))
		return 0;
	n_rules = cfg->n_rules;
	if (n_rules > UPLINKD_MAX_RULES)
		n_rules = UPLINKD_MAX_RULES;
	index = n_rules ? first_matching_rule(pkt, n_rules) : -1;
	if (index >= 0 && index < UPLINKD_MAX_RULES) {
		apply_rule(pkt, (__u32)index, bytes, now, d);
		return 0;
	}
	/* Step 5: no rule matched; mwan3 leaves the flow unmarked (main table). */
	d->origin = FLOW_ORIGIN_UNMATCHED;
	return 0;
}

static __always_inline void store_decision(const struct flow_key *key, const struct decision *d,
					   __u64 now)
{
	struct flow_value v = {};

	v.last_seen_ns = now;
	v.mark = d->mark;
	v.generation = d->generation;
	v.uplink_id = d->uplink_id;
	v.rule_id = d->rule_id;
	v.origin = d->origin;
	bpf_map_update_elem(&flows, key, &v, BPF_ANY);
}

/* A global function, verified once whatever path led to it: rewrites the packet into a RST to the
 * client when it is safe to (lib/tcp_reset.h). Returns an enum tcp_reset_result. The caller uses
 * no packet pointer after it (it may change the packet's data). */
__noinline int answer_stale_tcp(struct __sk_buff *skb)
{
	if (!skb)
		return TCP_RESET_REFUSED;
	return tcp_reset_in_place(skb, l3_only);
}

/* The packet's flow is stale and TCP: no entry of it may survive (a RST ends the connection; a
 * refused segment is classified afresh, its new decision replacing the flows entry). */
static __always_inline void forget_tcp_flow(const struct flow_key *key)
{
	bpf_map_delete_elem(&flows, key);
	bpf_map_delete_elem(&tcp_seen, key);
}

/* A flow whose decision does not hold (stale, idle or new), before it is decided again: counts
 * why, and answers a stale TCP flow's packet with a RST when the daemon asks for that. Returns 1
 * with *verdict set when the packet is done with (sent back as the RST, or dropped), 0 when it is
 * to be classified like a new flow. */
static __always_inline int answer_undecided(struct __sk_buff *skb, const struct flow_key *key,
					    const struct classifier_cfg *cfg, enum flow_state state,
					    struct flow_counters *counters, int *verdict)
{
	int reset;

	if (state == FLOW_IDLE && counters)
		counters->idle_reclassified++;
	if (state != FLOW_STALE)
		return 0;
	if (key->proto != IPPROTO_TCP || !(cfg->flags & UPLINKD_CFG_RESET_STALE_TCP)) {
		if (counters)
			counters->reclassified++;
		return 0;
	}

	reset = answer_stale_tcp(skb);
	forget_tcp_flow(key);
	if (reset == TCP_RESET_SENT) {
		if (counters)
			counters->stale_tcp_reset++;
		/* Out of the LAN device it came in by: the client is behind it. */
		*verdict = bpf_redirect(skb->ifindex, 0);
		return 1;
	}
	if (reset == TCP_RESET_FAILED) {
		*verdict = TC_ACT_SHOT; /* half rewritten: neither the segment nor a RST */
		return 1;
	}
	if (counters)
		counters->stale_tcp_refused++;
	return 0;
}

/* Only the mmx_mask bits of skb->mark are ours; a mark of 0 (unmatched) leaves the packet alone. */
static __always_inline void set_mark(struct __sk_buff *skb, const struct classifier_cfg *cfg,
				     __u32 mark)
{
	if (mark)
		skb->mark = (skb->mark & ~cfg->mmx_mask) | (mark & cfg->mmx_mask);
}

/* The fragment functions below are global, verified once and with their own stack frames: their
 * map keys on lan_ingress's own stack would push it, plus classify_flow()'s, past 512 bytes. */

/* A later fragment's mark: its first fragment's (lib/frag_map.h). Returns 1 with *mark set, 0 when
 * that first fragment was not seen. */
__noinline int first_fragment_mark(const struct flow_key *key, const struct frag_info *frag,
				   __u64 now, __u32 *mark)
{
	const struct frag_value *first;

	if (!key || !frag || !mark)
		return 0;
	first = first_fragment_of(key, frag, now);
	if (!first)
		return 0;
	*mark = first->mark;
	return 1;
}

/* A first fragment's decision, kept for the rest of its datagram. Returns 0. */
__noinline int keep_first_fragment(const struct flow_key *key, const struct frag_info *frag,
				   const struct decision *d, __u64 now)
{
	if (!key || !frag || !d)
		return 0;
	remember_first_fragment(key, frag, d->mark, d->uplink_id, now);
	return 0;
}

/* A later fragment whose first fragment was decided gets the same mark, and nothing else is to be
 * done (the first fragment refreshed its flow). Returns 0 when there is no such decision. */
static __always_inline int follow_first_fragment(struct __sk_buff *skb,
						 const struct classifier_cfg *cfg,
						 const struct flow_packet *pkt,
						 const struct frag_info *frag, __u64 now)
{
	__u32 mark = 0;

	if (frag->kind != FRAG_LATER)
		return 0;
	if (!first_fragment_mark(&pkt->key, frag, now, &mark))
		return 0;
	set_mark(skb, cfg, mark);
	return 1;
}

SEC("tc")
int lan_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct flow_packet pkt = {};
	struct frag_info frag = {};
	struct decision d = {};

#ifdef UPLINKD_TEST_VARIANT
	/* Only in the test build `uplinkd-test-variant` (CMakeLists.txt): two more instructions, the same
	 * behaviour, another program tag, so an upgrade whose programs differ can be tested. */
	{
		volatile __u32 variant = UPLINKD_TEST_VARIANT;
		(void)variant;
	}
#endif
	struct classifier_cfg *cfg;
	struct flow_counters *counters;
	struct flow_value *v;
	enum flow_state state;
	int verdict = TC_ACT_OK;
	__u32 zero = 0;
	__u64 now;

	if (parse_flow_fragment(data, end, l3_only, &pkt, &frag) < 0)
		return TC_ACT_OK;
	cfg = bpf_map_lookup_elem(&classifier_cfg, &zero);
	if (!cfg)
		return TC_ACT_OK;
	pkt.ifindex = skb->ingress_ifindex;
	/* The coarse clock (CLOCK_MONOTONIC as of the last tick, 1-10 ms old): every stamp here
	 * serves timeouts of a second or more, and bpf_ktime_get_ns() cost about 30 ns a packet on
	 * the reference machine, as much as the flow lookup (README, "Benchmarks"). A stamp another
	 * program wrote with the fine clock may look up to a tick in the future: is_fresh() counts
	 * that as fresh. */
	now = bpf_ktime_get_coarse_ns();
	if (follow_first_fragment(skb, cfg, &pkt, &frag, now))
		return TC_ACT_OK;

	v = bpf_map_lookup_elem(&flows, &pkt.key);
	state = flow_state_of(v, cfg, pkt.key.proto, now);
	if (state == FLOW_HELD && v) {
		reuse_flow(v, now, &d);
	} else {
		/* Only a flow being decided counts: an established packet writes nothing. */
		counters = flow_counters_here();
		if (answer_undecided(skb, &pkt.key, cfg, state, counters, &verdict))
			return verdict;
		classify_flow(&pkt, &d, now, skb->len);
		store_decision(&pkt.key, &d, now);
		if (counters)
			counters->created++;
	}
	/* A first fragment without ports (not TCP or UDP, or too short) is keyed like its later
	 * fragments already: they find its decision in `flows` and need no entry here. */
	if (frag.kind == FRAG_FIRST && pkt.ports_known)
		keep_first_fragment(&pkt.key, &frag, &d, now);
	set_mark(skb, cfg, d.mark);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
