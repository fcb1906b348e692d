/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * uplink_ingress: XDP on every tracked uplink, one loaded instance per uplink.
 *
 * Recognises replies to the daemon's health probes (ICMP/ICMPv6 echo, TCP SYN, DNS, ARP) by the
 * outstanding-probe map plus a nonce, reports their RTT through a ring buffer and tags them with
 * XDP metadata for the tc marker (uplink_mark). Optionally rate-limits every other ICMP/ICMPv6
 * packet on the uplink, so a flood cannot starve the router's own probes: a matched reply is
 * never charged to the limiter and never dropped.
 *
 * Everything odd (truncated, malformed, unknown) passes untouched: this program only ever drops
 * ICMP over the configured rate.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/icmpv6.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/icmp_limiter.h"
#include "lib/parse.h"
#include "lib/probe_maps.h"
#include "lib/probe_match.h"
#include "lib/reply_meta.h"
#include "lib/uplink_maps.h"

/* Load-time configuration, set through the skeleton's rodata before load; the verifier prunes
 * the branches a setting rules out. */
const volatile __u32 uplink_id = 0; /* mwan3 interface id, 1..255 (0 only for the map-owning
				     * instance the daemon never attaches) */
const volatile __u32 l3_only = 0;   /* 1: no link-layer header (PPPoE, raw-IP LTE) */
/* 0 where the kernel refuses bpf_xdp_adjust_meta (loader/datapath/kernel_features.h): the call below is
 * then never reached, so the verifier never checks it and the program still loads. */
const volatile __u32 tag_replies = 1;

/* Neighbour discovery keeps the uplink's IPv6 next hop reachable, as ARP does for IPv4 (which the
 * limiter never sees). Dropping it under a flood would take IPv6 probes down with it, the very
 * failure the limiter exists to prevent, so these types bypass the limiter. */
#define UPLINKD_ND_ROUTER_SOLICIT 133
#define UPLINKD_ND_NEIGHBOUR_ADVERT 136

enum reply_outcome {
	REPLY_UNMATCHED = 0, /* no outstanding probe, or a wrong nonce */
	REPLY_MATCHED = 1,   /* first reply: reported and tagged */
	REPLY_DUPLICATE = 2, /* another CPU took the entry between lookup and delete */
};

struct ingress_packet {
	struct reply_candidate reply;
	__u8 is_reply_candidate;
	__u8 is_limited_icmp;  /* subject to the ICMP limiter unless it is a matched reply */
};

static __always_inline struct uplink_counters *my_counters(void)
{
	__u32 id = uplink_id;

	return bpf_map_lookup_elem(&uplink_counters, &id);
}

static __always_inline int is_limited_icmp(const struct l3_view *l3, void *end)
{
	const __u8 *type = l3->l4;

	if (!l3->is_ipv6)
		return l3->proto == IPPROTO_ICMP;
	if (l3->proto != IPPROTO_ICMPV6)
		return 0;
	/* A header too short to hold a type is still ICMPv6, and still limited. */
	if ((void *)(type + 1) > end)
		return 1;
	return *type < UPLINKD_ND_ROUTER_SOLICIT || *type > UPLINKD_ND_NEIGHBOUR_ADVERT;
}

static __always_inline void classify_ip(const struct l3_view *l3, void *end,
					struct ingress_packet *pkt)
{
	pkt->is_limited_icmp = is_limited_icmp(l3, end);
	pkt->is_reply_candidate = match_ip_reply(l3, end, &pkt->reply);
}

/* Returns 0 when pkt says what to do with the frame, -1 when there is nothing to do (not IP/ARP,
 * or malformed): pass it untouched. */
static __always_inline int classify(struct xdp_md *ctx, struct ingress_packet *pkt)
{
	void *pos = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct l3_view l3 = {};
	__be16 proto;

	if (l3_only) {
		if (parse_raw_ip(pos, end, &l3, pkt->reply.key.addr) < 0)
			return -1;
		classify_ip(&l3, end, pkt);
		return 0;
	}

	proto = parse_ethernet(&pos, end);
	if (proto == bpf_htons(ETH_P_IP)) {
		if (parse_ipv4(pos, end, &l3, pkt->reply.key.addr) < 0)
			return -1;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (parse_ipv6(pos, end, &l3, pkt->reply.key.addr) < 0)
			return -1;
	} else if (proto == bpf_htons(ETH_P_ARP)) {
		pkt->is_reply_candidate = match_arp_reply(pos, end, &pkt->reply);
		return 0;
	} else {
		return -1;
	}
	classify_ip(&l3, end, pkt);
	return 0;
}

static __always_inline void publish_reply(struct xdp_md *ctx, const struct probe_key *key,
					  __u64 sent_ns, __u64 now)
{
	struct uplink_counters *counters = my_counters();
	struct probe_reply_event *event;

	event = bpf_ringbuf_reserve(&probe_events, sizeof(*event), 0);
	if (!event) {
		if (counters)
			counters->ringbuf_full++;
		return;
	}
	event->key = *key;
	event->sent_ns = sent_ns;
	/* Both clocks are CLOCK_MONOTONIC; a reply can still beat a daemon that stamped sent_ns
	 * after sending, so clamp instead of wrapping. */
	event->rtt_ns = now > sent_ns ? now - sent_ns : 0;
	event->ifindex = ctx->ingress_ifindex;
	event->pad = 0;
	bpf_ringbuf_submit(event, 0);
	if (counters)
		counters->probe_replies++;
}

static __always_inline enum reply_outcome take_reply(struct xdp_md *ctx,
						     const struct reply_candidate *reply)
{
	struct probe_value *probe;
	__u64 sent_ns, now;

	probe = bpf_map_lookup_elem(&probes, &reply->key);
	if (!probe)
		return REPLY_UNMATCHED;
	if (!reply_nonce_ok(reply, probe)) {
		struct uplink_counters *counters = my_counters();

		/* Forged or stale: the entry stays for the genuine reply. */
		if (counters)
			counters->nonce_mismatch++;
		return REPLY_UNMATCHED;
	}
	/* Read before deleting: a freed preallocated element can be reused by another CPU at once. */
	sent_ns = probe->sent_ns;
	now = bpf_ktime_get_ns();
	/* The delete is the claim: of two CPUs holding copies of one reply only one succeeds. */
	if (bpf_map_delete_elem(&probes, &reply->key))
		return REPLY_DUPLICATE;
	publish_reply(ctx, &reply->key, sent_ns, now);
	return REPLY_MATCHED;
}

/* The tc marker reads this; without it (driver refuses metadata) the reply is simply unmarked. */
static __always_inline void tag_reply(struct xdp_md *ctx)
{
	__u8 *meta;
	void *data;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct probe_reply_meta)))
		return;
	meta = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(meta + sizeof(struct probe_reply_meta)) > data)
		return;
	reply_meta_write(meta, uplink_id);
}

static __always_inline struct icmp_limiter_state *limiter_state(struct icmp_limit *limit)
{
	__u32 id = uplink_id;
	struct uplink_record *uplink = bpf_map_lookup_elem(&uplinks, &id);

	*limit = icmp_limit_of(uplink);
	if (!limit->interval_ns)
		return 0;
	return bpf_map_lookup_elem(&icmp_limiter, &id);
}

/* Counts every matched ICMP reply that gets through while the bucket is exhausted, i.e. exactly
 * the replies the limiter would have dropped had they not been recognised. Read-only: an exempt
 * reply is never charged. */
static __always_inline void count_exemption(void)
{
	struct icmp_limiter_state *state;
	struct uplink_counters *counters;
	struct icmp_limit limit;

	state = limiter_state(&limit);
	if (!state || !icmp_limiter_exhausted(state, &limit, bpf_ktime_get_ns()))
		return;
	counters = my_counters();
	if (counters)
		counters->probe_replies_exempted++;
}

static __always_inline int limit_icmp(void)
{
	struct icmp_limiter_state *state;
	struct uplink_counters *counters;
	struct icmp_limit limit;
	int admitted;

	state = limiter_state(&limit);
	if (!state)
		return XDP_PASS;
	admitted = icmp_limiter_admit(state, &limit, bpf_ktime_get_ns());
	counters = my_counters();
	if (counters) {
		if (admitted)
			counters->icmp_passed++;
		else
			counters->icmp_dropped++;
	}
	return admitted ? XDP_PASS : XDP_DROP;
}

SEC("xdp")
int uplink_ingress(struct xdp_md *ctx)
{
	struct ingress_packet pkt = {};

#ifdef UPLINKD_TEST_VARIANT
	/* Only in the test build `uplinkd-test-variant` (CMakeLists.txt): two more instructions, the same
	 * behaviour, another program tag, so an upgrade whose programs differ can be tested. */
	{
		volatile __u32 variant = UPLINKD_TEST_VARIANT;
		(void)variant;
	}
#endif
	pkt.reply.key.uplink_id = (__u16)uplink_id;
	if (classify(ctx, &pkt) < 0)
		return XDP_PASS;

	if (pkt.is_reply_candidate) {
		switch (take_reply(ctx, &pkt.reply)) {
		case REPLY_MATCHED:
			if (pkt.is_limited_icmp)
				count_exemption();
			if (tag_replies)
				tag_reply(ctx);
			return XDP_PASS;
		case REPLY_DUPLICATE:
			/* A copy of a reply already reported: neither news nor flood. */
			return XDP_PASS;
		default:
			break;
		}
	}
	if (pkt.is_limited_icmp)
		return limit_icmp();
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
