/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * lan_egress: tc egress on every LAN-side device. Learns, per TCP flow that has an uplink, the
 * next sequence number the remote will send toward the LAN client (the client's RCV.NXT once the
 * segment arrives) and how to reach the client, in `tcp_seen`. At failover the daemon uses it to
 * reset an idle client's socket at once (issue 5, item 3) instead of waiting for the client to
 * send. It never changes a packet: the verdict is always TC_ACT_OK.
 *
 * A packet toward a LAN client belongs to the flow the client opened, so its flows key is the
 * packet's reverse: client = destination, remote = source, ports swapped. Only flows lan_ingress
 * pinned to an uplink (uplink_id != 0) are followed; a flow through the main table has nothing to
 * fail over.
 *
 * Cost: anything that is not TCP stops after the IP header; a TCP packet costs one flows lookup
 * and, for a followed flow, one tcp_seen lookup and an in-place update.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/flow_maps.h"
#include "lib/flow_parse.h"
#include "lib/parse.h"
#include "lib/tcp_reset.h"

/* Load-time configuration, set through the skeleton's rodata before load. */
const volatile __u32 l3_only = 0; /* 1: no link-layer header (e.g. a WireGuard LAN device) */

/* A TCP segment toward the client, as far as tcp_seen needs it. */
struct segment_toward_client {
	struct flow_key key; /* the client's flow: saddr = client, daddr = remote */
	__u32 seq;	     /* host order */
	__u32 headers_len;   /* bytes from the frame start to the end of the TCP header */
	__u8 flags;	     /* TCP header byte 13 */
	__u8 pad[3];
};

/* Reads the TCP segment at l3 into seg. Returns 0, or -1 for a fragment, a cut-short header or a
 * data offset below 5. */
static __always_inline int read_segment(const struct l3_view *l3, void *data, void *end,
					struct segment_toward_client *seg)
{
	__u8 *tcp = l3->l4;
	const __be16 *ports = l3->l4;
	__u32 hdr_len;

	if (l3->is_fragment || l3->proto != IPPROTO_TCP)
		return -1;
	if ((void *)(tcp + UPLINKD_TCP_MIN_HDR) > end || l3->l4_len < UPLINKD_TCP_MIN_HDR)
		return -1;
	hdr_len = (__u32)(tcp[12] >> 4) * 4;
	if (hdr_len < UPLINKD_TCP_MIN_HDR)
		return -1;
	seg->key.sport = ports[1];
	seg->key.dport = ports[0];
	seg->key.proto = IPPROTO_TCP;
	seg->seq = load_be32(tcp + 4);
	seg->flags = tcp[13];
	seg->headers_len = (__u32)((void *)tcp - data) + hdr_len;
	return 0;
}

/* Fills seg from a TCP packet toward the client. Returns -1 for anything else. A GSO packet may
 * be BIG TCP (IP length 0, the length is the skb's): parsed by skb->len, as the kernel does. */
static __always_inline int parse_toward_client(struct __sk_buff *skb, void *data, void *end,
					       struct segment_toward_client *seg)
{
	const __u32 gso_frame_len = skb->gso_size ? skb->len : 0;
	struct l3_view l3 = {};

	/* The packet's source is the remote: it goes to key.daddr, its destination to key.saddr. */
	if (parse_addresses_gso(data, end, l3_only, &l3, seg->key.daddr, seg->key.saddr,
				&seg->key.family, gso_frame_len))
		return -1;
	return read_segment(&l3, data, end, seg);
}

/* Sequence space the remote uses after this segment. skb->len, not the IP length, so a GSO
 * packet counts its whole payload (a BIG TCP one too, whose IP length is 0). SYN and FIN take one
 * sequence number each. */
static __always_inline __u32 next_seq_after(const struct segment_toward_client *seg, __u32 skb_len)
{
	__u32 payload = skb_len > seg->headers_len ? skb_len - seg->headers_len : 0;
	__u32 next = seg->seq + payload;

	if (seg->flags & UPLINKD_TCP_SYN)
		next++;
	if (seg->flags & UPLINKD_TCP_FIN)
		next++;
	return next;
}

/* Later in sequence space (RFC 793 arithmetic, wrap-safe). */
static __always_inline int seq_after(__u32 a, __u32 b) { return (__s32)(a - b) > 0; }

static __always_inline void fill_seen(struct tcp_seen *seen, void *data, void *end, __u32 ifindex,
				      __u64 now)
{
	__u8 *eth = data;

	seen->last_seen_ns = now;
	seen->ifindex = ifindex;
	seen->l3_only = l3_only ? 1 : 0;
	if (l3_only || (void *)(eth + 12) > end)
		return;
#pragma unroll
	for (int i = 0; i < 6; i++) {
		seen->client_mac[i] = eth[i];
		seen->router_mac[i] = eth[6 + i];
	}
}

/* Updates the flow's entry in place, or inserts it. Two CPUs sending on one flow at once may
 * interleave their read and write of next_seq; the later segment wins within a packet or two,
 * which the daemon's RST tolerates (RFC 5961 answers an inexact in-window RST with a challenge
 * ACK, and the next segment corrects the entry). */
static __always_inline void remember_segment(const struct segment_toward_client *seg,
					     struct __sk_buff *skb, void *data, void *end)
{
	__u32 next = next_seq_after(seg, skb->len);
	/* The coarse clock: the daemon reads this stamp against idle timeouts of seconds, and the
	 * fine one cost about 30 ns a packet on the reference machine (README, "Benchmarks"). */
	__u64 now = bpf_ktime_get_coarse_ns();
	struct tcp_seen *seen = bpf_map_lookup_elem(&tcp_seen, &seg->key);
	struct tcp_seen fresh = {};

	if (seen) {
		/* A retransmission or a reordered segment never moves RCV.NXT back. */
		if (seq_after(next, seen->next_seq))
			seen->next_seq = next;
		fill_seen(seen, data, end, skb->ifindex, now);
		return;
	}
	fresh.next_seq = next;
	fill_seen(&fresh, data, end, skb->ifindex, now);
	bpf_map_update_elem(&tcp_seen, &seg->key, &fresh, BPF_NOEXIST);
}

SEC("tc")
int lan_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct segment_toward_client seg = {};
	struct flow_value *flow;

	if (parse_toward_client(skb, data, end, &seg) < 0)
		return TC_ACT_OK;
	flow = bpf_map_lookup_elem(&flows, &seg.key);
	if (!flow || flow->uplink_id == 0)
		return TC_ACT_OK;
	remember_segment(&seg, skb, data, end);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
