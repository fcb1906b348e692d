/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Turns a LAN client's own TCP segment on a stale flow, in place, into a RST back to that client
 * (issue 5). RFC 5961 (DESIGN.md "Facts"): a RST whose sequence number equals the receiver's
 * RCV.NXT resets the connection at once, and the acknowledgment number of the client's latest
 * segment is its RCV.NXT, so the segment in hand carries everything the RST needs.
 *
 * Only a segment that is safe to answer is turned around: ACK set (without it there is no
 * RCV.NXT to aim at), no RST (never answer a reset), no SYN (a bare SYN opens a new connection on
 * a reused tuple; a SYN-ACK is a LAN server still in its handshake), a sane data offset with the
 * whole TCP header in the packet, IPv4 without options and not a fragment, IPv6 with TCP as the
 * first next header. Anything else is left untouched and the caller classifies it again.
 *
 * Checksum state (checked in net/core/filter.c __bpf_skb_change_tail / __bpf_skb_min_len and
 * include/linux/skbuff.h __skb_trim_rcsum, kernels 5.15 to 6.18):
 *  - The RST leaves with a full IPv4 header checksum and a full TCP checksum over the pseudo
 *    header, computed here. Physical NICs deliver CHECKSUM_NONE, _UNNECESSARY or _COMPLETE; on
 *    output NONE and UNNECESSARY both mean "the checksum is in the packet", which it is.
 *  - A packet that arrives CHECKSUM_PARTIAL can only come from a local virtual device (veth or
 *    tap with TX checksum offload: the sender never filled its checksum). It goes back out by
 *    that same device, whose receiving stack trusts PARTIAL without verifying, so the full
 *    checksum written over the field does no harm. bpf_skb_change_tail() refuses (-EINVAL) to cut
 *    a PARTIAL skb before csum_start + csum_offset + 2, which the kept TCP header always covers.
 *  - bpf_skb_change_tail() trims through __skb_trim_rcsum(), which drops CHECKSUM_COMPLETE to
 *    NONE. When nothing is trimmed (the segment was already header-only) COMPLETE stays, so the
 *    header store passes BPF_F_RECOMPUTE_CSUM to keep skb->csum in step with the new bytes. The
 *    MAC swap needs no such care: it only permutes 16-bit words (and skb->csum does not cover
 *    the link-layer header at ingress anyway).
 *  - GSO: bpf_skb_change_tail() makes the skb private and linear (__bpf_try_make_writable over
 *    skb->len) and calls skb_gso_reset() on a GSO skb, so a GRO-merged segment leaves as one
 *    small RST, not cut into segments. It returns -ENOTSUPP for an encapsulated skb; nothing has
 *    been written then and the caller classifies the packet again instead.
 *
 * Alignment as in lib/parse.h: anything wider than 16 bits is read from the packet a byte at a
 * time; the headers are built on the stack and written with bpf_skb_store_bytes().
 */
#ifndef UPLINKD_BPF_LIB_TCP_RESET_H
#define UPLINKD_BPF_LIB_TCP_RESET_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/parse.h"

/* TCP flag bits of header byte 13. */
#define UPLINKD_TCP_FIN 0x01
#define UPLINKD_TCP_SYN 0x02
#define UPLINKD_TCP_RST 0x04
#define UPLINKD_TCP_ACK 0x10

#define UPLINKD_TCP_MIN_HDR 20
#define UPLINKD_RST_HOP_LIMIT 64
#define UPLINKD_IP_DF 0x4000

/* What tcp_reset_in_place() did. */
enum tcp_reset_result {
	TCP_RESET_FAILED = -1, /* the packet was changed half way: drop it */
	TCP_RESET_REFUSED = 0, /* not a segment to answer: untouched */
	TCP_RESET_SENT = 1,    /* the packet is now the RST: send it back out the device */
};

/* The RST's TCP header in wire order; 32-bit fields as bytes (copied, never computed). */
struct rst_tcphdr {
	__be16 source;
	__be16 dest;
	__u8 seq[4];
	__u8 ack_seq[4];
	__u8 doff_reserved; /* data offset in 32-bit words, high nibble */
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

struct rst_ipv4 {
	__u8 version_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__u8 saddr[4];
	__u8 daddr[4];
	struct rst_tcphdr tcp;
};

struct rst_ipv6 {
	__be32 version_class_label;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
	struct rst_tcphdr tcp;
};

/* TCP checksum pseudo headers (RFC 793, RFC 8200 section 8.1). */
struct pseudo_ipv4 {
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 zero;
	__u8 protocol;
	__be16 tcp_len;
};

struct pseudo_ipv6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 tcp_len;
	__u8 zero[3];
	__u8 nexthdr;
};

_Static_assert(sizeof(struct rst_tcphdr) == 20, "rst_tcphdr is the bare TCP header");
_Static_assert(sizeof(struct rst_ipv4) == 40, "rst_ipv4 is IPv4 without options + TCP");
_Static_assert(sizeof(struct rst_ipv6) == 60, "rst_ipv6 is IPv6 + TCP");
_Static_assert(sizeof(struct pseudo_ipv4) == 12 && sizeof(struct pseudo_ipv6) == 40,
	       "bpf_csum_diff() takes multiples of 4 bytes");

/* One's-complement sum of `len` bytes (a multiple of 4) added to `seed`, not yet folded. */
static __always_inline __u32 csum_add_bytes(void *buf, __u32 len, __u32 seed)
{
	__s64 sum = bpf_csum_diff(0, 0, buf, len, seed);

	return sum < 0 ? 0 : (__u32)sum;
}

static __always_inline __sum16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* The RST's TCP header from the client's segment: ports swapped, seq = the segment's ack (the
 * client's RCV.NXT), RST alone (no ACK, so ack 0), window 0, no options. Checksum left 0. */
static __always_inline void build_rst_tcp(struct rst_tcphdr *rst, const __u8 *tcp)
{
	const __be16 *ports = (const __be16 *)tcp;

	rst->source = ports[1];
	rst->dest = ports[0];
	copy_bytes4(rst->seq, tcp + 8);
	rst->doff_reserved = 5 << 4;
	rst->flags = UPLINKD_TCP_RST;
}

/* The segment's ACK flag, data offset and header length allow a RST (see the top of the file). */
static __always_inline int tcp_resettable(const __u8 *tcp, void *end, __u32 l4_len)
{
	__u32 hdr_len;
	__u8 flags;

	if ((void *)(tcp + UPLINKD_TCP_MIN_HDR) > end || l4_len < UPLINKD_TCP_MIN_HDR)
		return 0;
	hdr_len = (__u32)(tcp[12] >> 4) * 4;
	if (hdr_len < UPLINKD_TCP_MIN_HDR || hdr_len > l4_len || (void *)(tcp + hdr_len) > end)
		return 0;
	flags = tcp[13];
	return (flags & UPLINKD_TCP_ACK) && !(flags & (UPLINKD_TCP_RST | UPLINKD_TCP_SYN));
}

/* Cuts the packet to `l3_off + hdr_len` bytes and writes the RST's headers over it, then the
 * swapped MACs unless the device has none. Nothing is written when the cut fails. */
static __always_inline int write_rst(struct __sk_buff *skb, __u32 l3_off, void *hdrs, __u32 hdr_len,
				     const __u8 macs[12], int l3_only)
{
	if (bpf_skb_change_tail(skb, l3_off + hdr_len, 0))
		return TCP_RESET_REFUSED;
	if (hdr_len == sizeof(struct rst_ipv4)) {
		if (bpf_skb_store_bytes(skb, l3_off, hdrs, sizeof(struct rst_ipv4),
					BPF_F_RECOMPUTE_CSUM))
			return TCP_RESET_FAILED;
	} else {
		if (bpf_skb_store_bytes(skb, l3_off, hdrs, sizeof(struct rst_ipv6),
					BPF_F_RECOMPUTE_CSUM))
			return TCP_RESET_FAILED;
	}
	if (!l3_only && bpf_skb_store_bytes(skb, 0, macs, 12, 0))
		return TCP_RESET_FAILED;
	return TCP_RESET_SENT;
}

static __always_inline int reset_ipv4(struct __sk_buff *skb, __u32 l3_off, const __u8 *ip,
				      const __u8 *tcp, const __u8 macs[12], int l3_only)
{
	struct rst_ipv4 rst = {};
	struct pseudo_ipv4 pseudo = {};
	__u32 sum;

	rst.version_ihl = 0x45;
	rst.tot_len = bpf_htons(sizeof(rst));
	rst.frag_off = bpf_htons(UPLINKD_IP_DF);
	rst.ttl = UPLINKD_RST_HOP_LIMIT;
	rst.protocol = IPPROTO_TCP;
	copy_bytes4(rst.saddr, ip + 16); /* the segment's destination */
	copy_bytes4(rst.daddr, ip + 12); /* the client */
	build_rst_tcp(&rst.tcp, tcp);
	rst.check = csum_fold32(csum_add_bytes(&rst, 20, 0));

	copy_bytes4(pseudo.saddr, rst.saddr);
	copy_bytes4(pseudo.daddr, rst.daddr);
	pseudo.protocol = IPPROTO_TCP;
	pseudo.tcp_len = bpf_htons(sizeof(rst.tcp));
	sum = csum_add_bytes(&pseudo, sizeof(pseudo), 0);
	rst.tcp.check = csum_fold32(csum_add_bytes(&rst.tcp, sizeof(rst.tcp), sum));
	return write_rst(skb, l3_off, &rst, sizeof(rst), macs, l3_only);
}

static __always_inline int reset_ipv6(struct __sk_buff *skb, __u32 l3_off, const __u8 *ip6,
				      const __u8 *tcp, const __u8 macs[12], int l3_only)
{
	struct rst_ipv6 rst = {};
	struct pseudo_ipv6 pseudo = {};
	__u32 sum;

	rst.version_class_label = bpf_htonl(6U << 28);
	rst.payload_len = bpf_htons(sizeof(rst.tcp));
	rst.nexthdr = IPPROTO_TCP;
	rst.hop_limit = UPLINKD_RST_HOP_LIMIT;
	copy_bytes16(rst.saddr, ip6 + 24); /* the segment's destination */
	copy_bytes16(rst.daddr, ip6 + 8);  /* the client */
	build_rst_tcp(&rst.tcp, tcp);

	copy_bytes16(pseudo.saddr, rst.saddr);
	copy_bytes16(pseudo.daddr, rst.daddr);
	pseudo.tcp_len = bpf_htonl(sizeof(rst.tcp));
	pseudo.nexthdr = IPPROTO_TCP;
	sum = csum_add_bytes(&pseudo, sizeof(pseudo), 0);
	rst.tcp.check = csum_fold32(csum_add_bytes(&rst.tcp, sizeof(rst.tcp), sum));
	return write_rst(skb, l3_off, &rst, sizeof(rst), macs, l3_only);
}

/* Parses the frame at skb->data (Ethernet with up to two VLAN tags, kept as they are, or bare IP
 * when l3_only) and, for a segment safe to answer, rewrites it into the RST. Returns an
 * enum tcp_reset_result. */
static __always_inline int tcp_reset_in_place(struct __sk_buff *skb, int l3_only)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct l3_view l3 = {};
	__u8 addr[16];
	__u8 macs[12] = {};
	void *pos = data;
	__u8 *ip;
	int err;

	if (l3_only) {
		err = parse_raw_ip(pos, end, &l3, addr);
	} else {
		__u8 *eth = data;
		__be16 proto = parse_ethernet(&pos, end);

		if (proto == bpf_htons(ETH_P_IP))
			err = parse_ipv4(pos, end, &l3, addr);
		else if (proto == bpf_htons(ETH_P_IPV6))
			err = parse_ipv6(pos, end, &l3, addr);
		else
			return TCP_RESET_REFUSED;
		if ((void *)(eth + 12) > end)
			return TCP_RESET_REFUSED;
			/* The RST goes to the client's MAC from the router's: the frame's two
			 * swapped. */
#pragma unroll
		for (int i = 0; i < 6; i++) {
			macs[i] = eth[6 + i];
			macs[6 + i] = eth[i];
		}
	}
	if (err || l3.proto != IPPROTO_TCP)
		return TCP_RESET_REFUSED;
	ip = pos;
	if (!l3.is_ipv6 && ((ip[0] & 0x0f) != 5 || l3.is_fragment))
		return TCP_RESET_REFUSED; /* options would need rewriting; a fragment has no full
					     TCP */
	if (!tcp_resettable(l3.l4, end, l3.l4_len))
		return TCP_RESET_REFUSED;
	if (l3.is_ipv6) {
		if ((void *)(ip + 40) > end)
			return TCP_RESET_REFUSED;
		return reset_ipv6(skb, (__u32)((void *)ip - data), ip, l3.l4, macs, l3_only);
	}
	if ((void *)(ip + 20) > end)
		return TCP_RESET_REFUSED;
	return reset_ipv4(skb, (__u32)((void *)ip - data), ip, l3.l4, macs, l3_only);
}

#endif /* UPLINKD_BPF_LIB_TCP_RESET_H */
