/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Header parsing for uplinkd's packet programs: Ethernet with up to two VLAN tags, IPv4, IPv6.
 * UAPI headers only, so the objects load on kernels without BTF.
 *
 * Alignment: kernels on architectures without efficient unaligned access (MIPS, the common OpenWrt
 * case) make the verifier check packet loads against NET_IP_ALIGN = 2. An Ethernet frame puts IPv4
 * addresses on a 4-byte boundary then, a raw-IP frame (pppoe-wan, LTE) does not. So anything wider
 * than 16 bits is read from the packet a byte at a time; 16-bit fields sit on even offsets in every
 * layout we parse.
 */
#ifndef UPLINKD_BPF_LIB_PARSE_H
#define UPLINKD_BPF_LIB_PARSE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Not in the UAPI headers: IPv4 flag/offset bits of frag_off (host order). */
#define UPLINKD_IP_MF 0x2000
#define UPLINKD_IP_OFFSET 0x1fff

/* Two tags cover 802.1ad QinQ; a third is rare enough to leave to the stack. */
#define UPLINKD_MAX_VLAN_TAGS 2

struct vlan_tag {
	__be16 tci;
	__be16 next_proto;
};

/* What the L3 parser learned: where L4 starts and how long the IP header says it is. */
struct l3_view {
	void *l4;
	/* L4 bytes the IP header declares. Ethernet pads short frames to 60 bytes, so the frame end
	 * alone would let padding pass for payload; every length check uses this as well. */
	__u32 l4_len;
	__u8 proto;	  /* IPPROTO_* of the first header after the fixed IP header */
	__u8 is_fragment; /* IPv4 fragment: its L4 header may be absent or not the first */
	__u8 is_ipv6;
	__u8 pad;
};

static __always_inline __u32 load_be32(const __u8 *p)
{
	return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

/* Memory order, not network order: the daemon writes its nonce's bytes as they sit in its memory.
 */
static __always_inline __u64 load_u64_memory_order(const __u8 *p)
{
	__u64 v;
	__u8 *out = (__u8 *)&v;

#pragma unroll
	for (int i = 0; i < 8; i++)
		out[i] = p[i];
	return v;
}

static __always_inline void copy_bytes4(__u8 *dst, const __u8 *src)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		dst[i] = src[i];
}

static __always_inline void copy_bytes16(__u8 *dst, const __u8 *src)
{
#pragma unroll
	for (int i = 0; i < 16; i++)
		dst[i] = src[i];
}

/* Skips the Ethernet header and up to two VLAN tags. Returns the inner ethertype (network order)
 * and moves *pos past the headers, or returns 0 when the frame is too short. */
static __always_inline __be16 parse_ethernet(void **pos, void *end)
{
	struct ethhdr *eth = *pos;
	void *cursor = eth + 1;
	__be16 proto;

	if (cursor > end)
		return 0;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < UPLINKD_MAX_VLAN_TAGS; i++) {
		struct vlan_tag *tag = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > end)
			return 0;
		proto = tag->next_proto;
		cursor = tag + 1;
	}
	*pos = cursor;
	return proto;
}

/* Returns 0 and fills l3 and addr (source address, IPv4 in the first 4 bytes) for a sane IPv4
 * header, -1 for anything malformed or cut short.
 *
 * gso_l3_len: 0, or for a GSO skb its length from the IP header on. BIG TCP (a GSO TCP packet
 * above 64 KiB, Linux 6.3+ for IPv4) carries an IP total length of 0 and the kernel takes the
 * length from the skb (iph_totlen()); a caller that can tell GSO passes the skb's length so such a
 * packet is parsed too. With 0 a total length of 0 stays malformed. */
static __always_inline int parse_ipv4_gso(void *pos, void *end, struct l3_view *l3, __u8 addr[16],
					  __u32 gso_l3_len)
{
	struct iphdr *ip = pos;
	__u32 hdr_len, total_len;
	__u8 version_ihl;

	if ((void *)(ip + 1) > end)
		return -1;
	/* The first byte by hand: bitfield order in struct iphdr depends on the target's
	 * endianness. */
	version_ihl = *(__u8 *)ip;
	if ((version_ihl >> 4) != 4)
		return -1;
	hdr_len = (version_ihl & 0x0f) * 4;
	if (hdr_len < sizeof(*ip))
		return -1;
	if (pos + hdr_len > end)
		return -1;
	total_len = bpf_ntohs(ip->tot_len);
	if (total_len == 0 && gso_l3_len != 0 && ip->protocol == IPPROTO_TCP)
		total_len = gso_l3_len;
	if (total_len < hdr_len)
		return -1;

	l3->l4 = pos + hdr_len;
	l3->l4_len = total_len - hdr_len;
	l3->proto = ip->protocol;
	l3->is_fragment = (ip->frag_off & bpf_htons(UPLINKD_IP_MF | UPLINKD_IP_OFFSET)) != 0;
	l3->is_ipv6 = 0;
	copy_bytes4(addr, (const __u8 *)&ip->saddr);
	return 0;
}

static __always_inline int parse_ipv4(void *pos, void *end, struct l3_view *l3, __u8 addr[16])
{
	return parse_ipv4_gso(pos, end, l3, addr, 0);
}

/* Same contract as parse_ipv4_gso: an IPv6 BIG TCP packet has a payload length of 0 (one that
 * still carries the hop-by-hop jumbo option, next header 0, is not recognised). Extension headers
 * are not walked: our probes never carry them, so l3->proto is then the extension header's number
 * and no matcher accepts it. */
static __always_inline int parse_ipv6_gso(void *pos, void *end, struct l3_view *l3, __u8 addr[16],
					  __u32 gso_l3_len)
{
	struct ipv6hdr *ip6 = pos;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if ((*(__u8 *)ip6 >> 4) != 6)
		return -1;

	l3->l4 = ip6 + 1;
	l3->l4_len = bpf_ntohs(ip6->payload_len);
	if (l3->l4_len == 0 && gso_l3_len > sizeof(*ip6) && ip6->nexthdr == IPPROTO_TCP)
		l3->l4_len = gso_l3_len - sizeof(*ip6);
	l3->proto = ip6->nexthdr;
	l3->is_fragment = 0;
	l3->is_ipv6 = 1;
	copy_bytes16(addr, (const __u8 *)&ip6->saddr);
	return 0;
}

static __always_inline int parse_ipv6(void *pos, void *end, struct l3_view *l3, __u8 addr[16])
{
	return parse_ipv6_gso(pos, end, l3, addr, 0);
}

/* For devices without a link-layer header: the IP version nibble says which parser applies. */
static __always_inline int parse_raw_ip_gso(void *pos, void *end, struct l3_view *l3, __u8 addr[16],
					    __u32 gso_l3_len)
{
	__u8 *first = pos;

	if ((void *)(first + 1) > end)
		return -1;
	switch (*first >> 4) {
	case 4:
		return parse_ipv4_gso(pos, end, l3, addr, gso_l3_len);
	case 6:
		return parse_ipv6_gso(pos, end, l3, addr, gso_l3_len);
	default:
		return -1;
	}
}

static __always_inline int parse_raw_ip(void *pos, void *end, struct l3_view *l3, __u8 addr[16])
{
	return parse_raw_ip_gso(pos, end, l3, addr, 0);
}

#endif /* UPLINKD_BPF_LIB_PARSE_H */
