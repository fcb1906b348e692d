/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Recognisers for replies to the daemon's probes. Each one looks at a parsed packet and, if it has
 * the shape of a reply, fills the probe_key the daemon would have stored for the probe plus the
 * nonce evidence the reply carries. The lookup and the nonce comparison happen in the caller.
 * Every recogniser checks both the frame end (the verifier's bound) and the length the IP header
 * declares (so Ethernet padding never counts as payload).
 */
#ifndef UPLINKD_BPF_LIB_PROBE_MATCH_H
#define UPLINKD_BPF_LIB_PROBE_MATCH_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/icmpv6.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/parse.h"

/* linux/icmp.h and linux/if_arp.h pull in glibc's sys/socket.h (through linux/if.h), which does
 * not compile for the BPF target; what we need of them is fixed by RFC 792 and RFC 826. */
#define UPLINKD_ICMP_ECHOREPLY 0
#define UPLINKD_ICMP_DEST_UNREACH 3
#define UPLINKD_ICMP_PORT_UNREACH 3
#define UPLINKD_ICMPV6_DEST_UNREACH 1
#define UPLINKD_ICMPV6_PORT_UNREACH 4
#define UPLINKD_ARPHRD_ETHER 1
#define UPLINKD_ARPOP_REPLY 2

struct arp_ipv4 {
	__be16 hw_type;
	__be16 proto_type;
	__u8 hw_len;
	__u8 proto_len;
	__be16 op;
	__u8 sender_hw[ETH_ALEN];
	__u8 sender_ip[4];
	__u8 target_hw[ETH_ALEN];
	__u8 target_ip[4];
};

/* TCP flag bits of header byte 13 (the UAPI names are for the 32-bit word, or bitfields). */
#define UPLINKD_TCP_SYN 0x02
#define UPLINKD_TCP_RST 0x04
#define UPLINKD_TCP_ACK 0x10

#define UPLINKD_DNS_PORT 53
#define UPLINKD_DNS_HEADER_LEN 12
#define UPLINKD_DNS_QR 0x80 /* in the third header byte */

/* The probe's nonce travels in the echo payload's first bytes. */
#define UPLINKD_ECHO_NONCE_LEN 8

enum nonce_rule {
	NONCE_NONE = 0,      /* DNS and ARP: the key is all there is */
	NONCE_PAYLOAD64 = 1, /* ICMP/ICMPv6: payload's first 8 bytes == nonce */
	NONCE_TCP_ACK = 2,   /* TCP: ack_seq == (u32)nonce + 1, the SYN having consumed one number */
};

struct reply_candidate {
	struct probe_key key; /* addr filled by the L3 parser */
	__u64 wire_nonce;
	__u8 nonce_rule;
};

/* ICMP and ICMPv6 echo headers share this layout. */
struct echo_hdr {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be16 id;
	__be16 seq;
};

static __always_inline int match_echo_reply(const struct l3_view *l3, void *end, __u8 reply_type,
					    __u8 kind, struct reply_candidate *c)
{
	struct echo_hdr *echo = l3->l4;
	const __u8 *payload = (const __u8 *)(echo + 1);

	if ((void *)(payload + UPLINKD_ECHO_NONCE_LEN) > end ||
	    l3->l4_len < sizeof(*echo) + UPLINKD_ECHO_NONCE_LEN)
		return 0;
	if (echo->type != reply_type || echo->code != 0)
		return 0;

	c->key.kind = kind;
	c->key.ident = bpf_ntohs(echo->id);
	c->key.seq = bpf_ntohs(echo->seq);
	c->wire_nonce = load_u64_memory_order(payload);
	c->nonce_rule = NONCE_PAYLOAD64;
	return 1;
}

/* The target answers our SYN with SYN+ACK (port open) or RST+ACK (port closed): either proves
 * the path works. Both acknowledge our ISN + 1; a RST without ACK carries no usable ack_seq. */
static __always_inline int match_tcp_reply(const struct l3_view *l3, void *end,
					   struct reply_candidate *c)
{
	struct tcphdr *th = l3->l4;
	__u8 flags;

	if ((void *)(th + 1) > end || l3->l4_len < sizeof(*th))
		return 0;
	flags = ((__u8 *)th)[13];
	if (!(flags & UPLINKD_TCP_ACK) || !(flags & (UPLINKD_TCP_SYN | UPLINKD_TCP_RST)))
		return 0;

	c->key.kind = PROBE_KIND_TCP;
	c->key.ident = bpf_ntohs(th->dest);
	c->key.seq = bpf_ntohs(th->source);
	c->wire_nonce = load_be32((const __u8 *)&th->ack_seq);
	c->nonce_rule = NONCE_TCP_ACK;
	return 1;
}

static __always_inline int match_dns_reply(const struct l3_view *l3, void *end,
					   struct reply_candidate *c)
{
	struct udphdr *udp = l3->l4;
	const __u8 *dns = (const __u8 *)(udp + 1);

	if ((void *)(dns + UPLINKD_DNS_HEADER_LEN) > end ||
	    l3->l4_len < sizeof(*udp) + UPLINKD_DNS_HEADER_LEN)
		return 0;
	if (udp->source != bpf_htons(UPLINKD_DNS_PORT) || !(dns[2] & UPLINKD_DNS_QR))
		return 0;

	c->key.kind = PROBE_KIND_DNS;
	c->key.ident = bpf_ntohs(udp->dest);
	c->key.seq = bpf_ntohs(*(__be16 *)dns);
	c->nonce_rule = NONCE_NONE;
	return 1;
}

/* nping-udp's nonce follows the UDP header of the probe (or of the probe as an ICMP error quotes it). */
static __always_inline int udp_probe_fields(const struct udphdr *udp, void *end, __u16 local_port,
					    __u16 remote_port, struct reply_candidate *c)
{
	const __u8 *payload = (const __u8 *)(udp + 1);

	if ((void *)(payload + UPLINKD_ECHO_NONCE_LEN) > end)
		return 0;
	c->key.kind = PROBE_KIND_UDP;
	c->key.ident = local_port;
	c->key.seq = remote_port;
	c->wire_nonce = load_u64_memory_order(payload);
	c->nonce_rule = NONCE_PAYLOAD64;
	return 1;
}

static __always_inline int is_udp_probe_port(__u16 port)
{
	return (__u32)port - UPLINKD_UDP_PROBE_PORT_MIN < UPLINKD_UDP_PROBE_PORT_COUNT;
}

/* A UDP datagram to one of the probe ports is an echo of an nping-udp probe (target:port -> our
 * port, the nonce first in the payload); anything else to UDP is looked at as a DNS reply. The
 * port range check comes first, so ordinary UDP costs one compare more than before. */
static __always_inline int match_udp_reply(const struct l3_view *l3, void *end,
					   struct reply_candidate *c)
{
	struct udphdr *udp = l3->l4;
	__u16 dest;

	if ((void *)(udp + 1) > end)
		return 0;
	dest = bpf_ntohs(udp->dest);
	if (!is_udp_probe_port(dest))
		return match_dns_reply(l3, end, c);
	if (l3->l4_len < sizeof(*udp) + UPLINKD_ECHO_NONCE_LEN)
		return 0;
	return udp_probe_fields(udp, end, dest, bpf_ntohs(udp->source), c);
}

/* An ICMP port unreachable from the target quoting our probe, as nping counts it. `quoted` is the
 * quoted UDP header of our probe: source = our port, dest = the target port. Only errors sent by the
 * target itself count (the quoted destination is the sender): an unreachable from a router on the
 * way means the path is broken, not working. */
static __always_inline int match_quoted_udp(const struct udphdr *quoted, void *end,
					    struct reply_candidate *c)
{
	__u16 local;

	if ((void *)(quoted + 1) > end)
		return 0;
	local = bpf_ntohs(quoted->source);
	if (!is_udp_probe_port(local))
		return 0;
	return udp_probe_fields(quoted, end, local, bpf_ntohs(quoted->dest), c);
}

/* ICMP header (8 bytes) + our IPv4 header without options (the daemon sends none) + UDP + nonce. */
static __always_inline int match_udp_unreach4(const struct l3_view *l3, void *end,
					      struct reply_candidate *c)
{
	const __u8 *icmp = l3->l4;
	const struct iphdr *inner = (const struct iphdr *)(icmp + 8);

	if ((void *)(inner + 1) > end)
		return 0;
	if (*(const __u8 *)inner != 0x45 || inner->protocol != IPPROTO_UDP)
		return 0;
	if (l3->l4_len < 8 + sizeof(*inner) + sizeof(struct udphdr) + UPLINKD_ECHO_NONCE_LEN)
		return 0;
	if (load_be32((const __u8 *)&inner->daddr) != load_be32(c->key.addr))
		return 0;
	return match_quoted_udp((const struct udphdr *)(inner + 1), end, c);
}

static __always_inline int match_udp_unreach6(const struct l3_view *l3, void *end,
					      struct reply_candidate *c)
{
	const __u8 *icmp = l3->l4;
	const struct ipv6hdr *inner = (const struct ipv6hdr *)(icmp + 8);
	const __u8 *dst;

	if ((void *)(inner + 1) > end)
		return 0;
	if (inner->nexthdr != IPPROTO_UDP)
		return 0;
	if (l3->l4_len < 8 + sizeof(*inner) + sizeof(struct udphdr) + UPLINKD_ECHO_NONCE_LEN)
		return 0;
	dst = (const __u8 *)&inner->daddr;
	if (load_be32(dst) != load_be32(c->key.addr) || load_be32(dst + 4) != load_be32(c->key.addr + 4) ||
	    load_be32(dst + 8) != load_be32(c->key.addr + 8) ||
	    load_be32(dst + 12) != load_be32(c->key.addr + 12))
		return 0;
	return match_quoted_udp((const struct udphdr *)(inner + 1), end, c);
}

/* ICMP/ICMPv6: an echo reply, or a port unreachable answering an nping-udp probe. */
static __always_inline int match_icmp_reply(const struct l3_view *l3, void *end, __u8 echo_reply,
					    __u8 unreach, __u8 port_unreach, __u8 echo_kind,
					    struct reply_candidate *c)
{
	const __u8 *hdr = l3->l4;

	if ((void *)(hdr + 2) > end)
		return 0;
	if (hdr[0] == unreach && hdr[1] == port_unreach)
		return l3->is_ipv6 ? match_udp_unreach6(l3, end, c) : match_udp_unreach4(l3, end, c);
	return match_echo_reply(l3, end, echo_reply, echo_kind, c);
}

/* Only IPv4-over-Ethernet replies: that is what the daemon asks its gateway for. Sender fields
 * are read up to sender_ip; the target fields may be cut without harm. */
static __always_inline int match_arp_reply(void *pos, void *end, struct reply_candidate *c)
{
	struct arp_ipv4 *arp = pos;

	if ((void *)(arp->sender_ip + 4) > end)
		return 0;
	if (arp->hw_type != bpf_htons(UPLINKD_ARPHRD_ETHER) || arp->proto_type != bpf_htons(ETH_P_IP) ||
	    arp->hw_len != ETH_ALEN || arp->proto_len != 4 || arp->op != bpf_htons(UPLINKD_ARPOP_REPLY))
		return 0;

	copy_bytes4(c->key.addr, arp->sender_ip);
	c->key.kind = PROBE_KIND_ARP;
	c->nonce_rule = NONCE_NONE;
	return 1;
}

/* Picks the recogniser for the L4 protocol. IPv4 fragments are never replies: the daemon's probes
 * are small, and a fragment's "L4 header" may be another fragment's payload. */
static __always_inline int match_ip_reply(const struct l3_view *l3, void *end,
					  struct reply_candidate *c)
{
	if (l3->is_fragment)
		return 0;
	switch (l3->proto) {
	case IPPROTO_ICMP:
		return !l3->is_ipv6 &&
		       match_icmp_reply(l3, end, UPLINKD_ICMP_ECHOREPLY, UPLINKD_ICMP_DEST_UNREACH,
					UPLINKD_ICMP_PORT_UNREACH, PROBE_KIND_ICMP, c);
	case IPPROTO_ICMPV6:
		return l3->is_ipv6 &&
		       match_icmp_reply(l3, end, ICMPV6_ECHO_REPLY, UPLINKD_ICMPV6_DEST_UNREACH,
					UPLINKD_ICMPV6_PORT_UNREACH, PROBE_KIND_ICMPV6, c);
	case IPPROTO_TCP:
		return match_tcp_reply(l3, end, c);
	case IPPROTO_UDP:
		return match_udp_reply(l3, end, c);
	default:
		return 0;
	}
}

static __always_inline int reply_nonce_ok(const struct reply_candidate *c,
					  const struct probe_value *probe)
{
	switch (c->nonce_rule) {
	case NONCE_PAYLOAD64:
		return c->wire_nonce == probe->nonce;
	case NONCE_TCP_ACK:
		return (__u32)c->wire_nonce == (__u32)probe->nonce + 1;
	default:
		return 1;
	}
}

#endif /* UPLINKD_BPF_LIB_PROBE_MATCH_H */
