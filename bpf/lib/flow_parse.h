/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A packet's flow identity as the classifier keys it: struct flow_key (maps/uplinkd_maps.h) plus
 * what the rules and the inbound check need beside it. Builds on lib/parse.h and keeps its
 * alignment rule: anything wider than 16 bits is read from the packet a byte at a time.
 *
 * Fragments: only a datagram's first fragment carries the ports. parse_flow() keys every fragment
 * (IPv4 MF set or offset non-zero, anything behind an IPv6 fragment header) with ports 0, so all
 * of a datagram's fragments land on one key. parse_flow_fragment() (lan_ingress) reads the first
 * fragment's ports like an unfragmented packet's and says where the packet stands in its datagram
 * (struct frag_info), so the classifier can hand the first fragment's decision to the later ones
 * (lib/frag_map.h); a later fragment is still keyed with ports 0.
 */
#ifndef UPLINKD_BPF_LIB_FLOW_PARSE_H
#define UPLINKD_BPF_LIB_FLOW_PARSE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/parse.h"

/* IPv6 extension headers walked before giving up on the ports (hop-by-hop, routing, destination
 * options, AH in any order; a fragment header ends the walk). Real traffic carries zero or one. */
#define UPLINKD_IPV6_MAX_EXT 4
#define UPLINKD_NEXTHDR_HOP 0
#define UPLINKD_NEXTHDR_ROUTING 43
#define UPLINKD_NEXTHDR_FRAGMENT 44
#define UPLINKD_NEXTHDR_AUTH 51
#define UPLINKD_NEXTHDR_DEST 60

/* TCP flag bits of header byte 13. */
#define UPLINKD_FLOW_TCP_SYN 0x02
#define UPLINKD_FLOW_TCP_ACK 0x10

/* What rule matching reads. Also the argument of the global rule matcher, so its layout has no
 * implicit padding (the verifier wants every byte a global function may read initialised) and it
 * is 8-byte aligned (the matcher and the hash read the addresses as 32-bit words). */
struct flow_packet {
	struct flow_key key; /* ports in network order, 0 when unknown */
	__u32 ifindex;	     /* skb->ingress_ifindex */
	__u8 ports_known;    /* TCP or UDP with its ports present: port lists can match */
	__u8 tcp_flags;	     /* header byte 13 of TCP; 0 for anything else */
	__u16 pad;
} __attribute__((aligned(8)));

_Static_assert(sizeof(struct flow_packet) == 48, "flow_packet has no implicit padding");

/* A TCP segment that opens a connection: SYN without ACK. */
static __always_inline int is_bare_syn(__u8 tcp_flags)
{
	return (tcp_flags & (UPLINKD_FLOW_TCP_SYN | UPLINKD_FLOW_TCP_ACK)) == UPLINKD_FLOW_TCP_SYN;
}

static __always_inline int is_ipv6_extension(__u8 proto)
{
	return proto == UPLINKD_NEXTHDR_HOP || proto == UPLINKD_NEXTHDR_ROUTING ||
	       proto == UPLINKD_NEXTHDR_FRAGMENT || proto == UPLINKD_NEXTHDR_AUTH ||
	       proto == UPLINKD_NEXTHDR_DEST;
}

/* Moves l3 past IPv6 extension headers to the upper-layer header. A fragment header ends the walk
 * with its next-header value as the protocol and l3->is_fragment set. A chain cut short, or longer
 * than UPLINKD_IPV6_MAX_EXT, leaves l4_len 0: no ports. */
static __always_inline void skip_ipv6_extensions(struct l3_view *l3, void *end)
{
	void *pos = l3->l4;
	__u32 left = l3->l4_len;
	__u8 proto = l3->proto;

#pragma unroll
	for (int i = 0; i < UPLINKD_IPV6_MAX_EXT; i++) {
		__u8 *hdr = pos;
		__u32 len;

		if (!is_ipv6_extension(proto))
			break;
		if ((void *)(hdr + 2) > end || left < 8) {
			left = 0;
			break;
		}
		if (proto == UPLINKD_NEXTHDR_FRAGMENT) {
			proto = hdr[0];
			l3->is_fragment = 1;
			break;
		}
		/* Lengths in 8-byte units not counting the first 8; AH counts 4-byte units,
		 * minus 2. */
		if (proto == UPLINKD_NEXTHDR_AUTH)
			len = ((__u32)hdr[1] + 2) * 4;
		else
			len = ((__u32)hdr[1] + 1) * 8;
		if (len > left) {
			left = 0;
			break;
		}
		proto = hdr[0];
		pos += len;
		left -= len;
	}
	if (is_ipv6_extension(proto) && !l3->is_fragment)
		left = 0;
	l3->l4 = pos;
	l3->l4_len = left;
	l3->proto = proto;
}

static __always_inline void read_ports(const struct l3_view *l3, void *end, struct flow_packet *pkt)
{
	__be16 *ports = l3->l4;
	__u8 *tcp = l3->l4;

	if (l3->is_fragment || (l3->proto != IPPROTO_TCP && l3->proto != IPPROTO_UDP))
		return;
	if (l3->l4_len < 4 || (void *)(ports + 2) > end)
		return;
	pkt->key.sport = ports[0];
	pkt->key.dport = ports[1];
	pkt->ports_known = 1;
	if (l3->proto == IPPROTO_TCP && l3->l4_len >= 14 && (void *)(tcp + 14) <= end)
		pkt->tcp_flags = tcp[13];
}

/* parse_addresses(), also handing back where the IP header starts (*ip_hdr), for the fragment
 * fields parse_addresses()'s callers do not need. gso_frame_len: 0, or a GSO skb's length from
 * the frame start, for BIG TCP (parse_ipv4_gso()). */
static __always_inline int parse_ip_header(void *pos, void *end, int l3_only, struct l3_view *l3,
					   __u8 *src, __u8 *dst, __u8 *family, void **ip_hdr,
					   __u32 gso_frame_len)
{
	void *frame = pos;
	int err;

	if (l3_only) {
		err = parse_raw_ip_gso(pos, end, l3, src, gso_frame_len);
	} else {
		__be16 proto = parse_ethernet(&pos, end);
		__u32 link_len = (__u32)(pos - frame);
		__u32 gso_l3_len = gso_frame_len > link_len ? gso_frame_len - link_len : 0;

		if (proto == bpf_htons(ETH_P_IP))
			err = parse_ipv4_gso(pos, end, l3, src, gso_l3_len);
		else if (proto == bpf_htons(ETH_P_IPV6))
			err = parse_ipv6_gso(pos, end, l3, src, gso_l3_len);
		else
			return -1;
	}
	if (err)
		return -1;

	if (l3->is_ipv6) {
		struct ipv6hdr *ip6 = pos;

		if ((void *)(ip6 + 1) > end)
			return -1;
		copy_bytes16(dst, (const __u8 *)&ip6->daddr);
		*family = 6;
		skip_ipv6_extensions(l3, end);
	} else {
		struct iphdr *ip = pos;

		if ((void *)(ip + 1) > end)
			return -1;
		copy_bytes4(dst, (const __u8 *)&ip->daddr);
		*family = 4;
	}
	*ip_hdr = pos;
	return 0;
}

/* Parses the frame at pos (Ethernet with up to two VLAN tags, or bare IP when l3_only) up to the
 * upper-layer header: the source address goes to src, the destination to dst, the family (4 or 6)
 * to *family, and l3 points at the upper layer as lan_ingress keys flows (IPv6 extension headers
 * skipped). Returns 0 for IPv4/IPv6, -1 for anything else or a malformed IP header. Shared by
 * lan_ingress (src = the client) and lan_egress (src = the remote), which must key alike. */
static __always_inline int parse_addresses(void *pos, void *end, int l3_only, struct l3_view *l3,
					   __u8 *src, __u8 *dst, __u8 *family)
{
	void *ip_hdr;

	return parse_ip_header(pos, end, l3_only, l3, src, dst, family, &ip_hdr, 0);
}

/* parse_addresses() that also parses BIG TCP packets (an IP length of 0 on a GSO skb):
 * gso_frame_len is the skb's length when it is GSO, else 0. */
static __always_inline int parse_addresses_gso(void *pos, void *end, int l3_only,
					       struct l3_view *l3, __u8 *src, __u8 *dst,
					       __u8 *family, __u32 gso_frame_len)
{
	void *ip_hdr;

	return parse_ip_header(pos, end, l3_only, l3, src, dst, family, &ip_hdr, gso_frame_len);
}

/* Fills pkt from the frame at pos; see parse_addresses(). Returns 0 for IPv4/IPv6, -1 for anything
 * else or a malformed IP header: pass it untouched. */
static __always_inline int parse_flow(void *pos, void *end, int l3_only, struct flow_packet *pkt)
{
	struct l3_view l3 = {};

	if (parse_addresses(pos, end, l3_only, &l3, pkt->key.saddr, pkt->key.daddr,
			    &pkt->key.family))
		return -1;
	pkt->key.proto = l3.proto;
	read_ports(&l3, end, pkt);
	return 0;
}

/* Where a packet stands in its datagram. */
enum frag_kind {
	FRAG_NONE = 0, /* a whole datagram (also an IPv6 atomic fragment: offset 0, no more) */
	FRAG_FIRST,    /* offset 0, more to come: carries the upper-layer header */
	FRAG_LATER,    /* offset non-zero: payload only */
	FRAG_OPAQUE,   /* a fragment header cut short: no identification to go by, no ports */
};

struct frag_info {
	__u32 id;  /* host order: IPv4's 16-bit identification, IPv6's 32-bit one */
	__u8 kind; /* enum frag_kind */
	__u8 pad[3];
};

/* IPv6 fragment header: offset in 8-byte units (13 bits), then two reserved bits and M. */
#define UPLINKD_IPV6_FRAG_MORE 0x0001
#define UPLINKD_IPV6_FRAG_OFFSET 0xfff8
#define UPLINKD_IPV6_FRAG_HDR_LEN 8

/* A first fragment (or an atomic one) is read like a whole datagram from here on: its view stops
 * counting as a fragment, and read_ports() finds the ports. */
static __always_inline void view_as_datagram(struct l3_view *l3, __u32 skip)
{
	l3->l4 += skip;
	l3->l4_len -= skip;
	l3->is_fragment = 0;
}

static __always_inline void read_ipv4_fragment(struct iphdr *ip, void *end, struct l3_view *l3,
					       struct frag_info *frag)
{
	if ((void *)(ip + 1) > end) {
		frag->kind = FRAG_OPAQUE; /* parse_ipv4() saw it whole: only for the verifier */
		return;
	}
	frag->id = bpf_ntohs(ip->id);
	if (ip->frag_off & bpf_htons(UPLINKD_IP_OFFSET)) {
		frag->kind = FRAG_LATER;
		return;
	}
	frag->kind = FRAG_FIRST; /* offset 0 and a fragment at all: MF is set */
	view_as_datagram(l3, 0);
}

/* skip_ipv6_extensions() leaves l3->l4 at the fragment header it stopped on. Extension headers
 * after it (in the fragmentable part) are not walked: the first fragment then has no ports, as
 * before. */
static __always_inline void read_ipv6_fragment(struct l3_view *l3, void *end,
					       struct frag_info *frag)
{
	__u8 *hdr = l3->l4;
	__u16 offset_flags;

	if ((void *)(hdr + UPLINKD_IPV6_FRAG_HDR_LEN) > end ||
	    l3->l4_len < UPLINKD_IPV6_FRAG_HDR_LEN) {
		frag->kind = FRAG_OPAQUE;
		return;
	}
	frag->id = load_be32(hdr + 4);
	offset_flags = (__u16)hdr[2] << 8 | hdr[3];
	if (offset_flags & UPLINKD_IPV6_FRAG_OFFSET) {
		frag->kind = FRAG_LATER;
		return;
	}
	/* Offset 0 without M is the whole datagram in one piece (RFC 6946): nothing follows it. */
	frag->kind = (offset_flags & UPLINKD_IPV6_FRAG_MORE) ? FRAG_FIRST : FRAG_NONE;
	view_as_datagram(l3, UPLINKD_IPV6_FRAG_HDR_LEN);
}

/* parse_flow(), but the first fragment of a datagram is keyed with its ports like an unfragmented
 * packet of its flow, and *frag says which fragment the packet is (FRAG_NONE when none). */
static __always_inline int parse_flow_fragment(void *pos, void *end, int l3_only,
					       struct flow_packet *pkt, struct frag_info *frag)
{
	struct l3_view l3 = {};
	void *ip_hdr;

	if (parse_ip_header(pos, end, l3_only, &l3, pkt->key.saddr, pkt->key.daddr,
			    &pkt->key.family, &ip_hdr, 0))
		return -1;
	pkt->key.proto = l3.proto;
	if (l3.is_fragment) {
		if (l3.is_ipv6)
			read_ipv6_fragment(&l3, end, frag);
		else
			read_ipv4_fragment(ip_hdr, end, &l3, frag);
	}
	read_ports(&l3, end, pkt);
	return 0;
}

#endif /* UPLINKD_BPF_LIB_FLOW_PARSE_H */
