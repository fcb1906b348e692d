/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * wg_mss: tc ingress and egress on WireGuard devices. TCP MSS clamping.
 *
 * Why: a tunnel that uplinkd moves to a backup uplink with a smaller path MTU keeps its own MTU,
 * so TCP connections through it negotiate segments that no longer fit once encapsulated, and the
 * ICMP that would say so is often filtered on the way: full-size segments vanish. The daemon
 * computes per WireGuard device the MSS that fits the active uplink's path MTU and writes it to
 * `mss_clamp`; this program lowers the MSS option of every SYN and SYN-ACK through the device to
 * it. Both directions: egress clamps what our side announces, ingress what the far side announces,
 * so each end sends segments that fit whichever side opened the connection.
 *
 * Only ever lowers an MSS option that is there: an absent option means 536 (IPv4) or 1220 (IPv6),
 * already small. Never drops: whatever it cannot parse or rewrite passes as it came.
 *
 * A device without an mss_clamp entry costs one hash lookup.
 *
 * Every verdict is TC_ACT_UNSPEC, "no opinion": the next filter on the hook still runs. The daemon
 * also puts its LAN classifier (lan_ingress) and sequence learner (lan_egress) on WireGuard devices,
 * at a later priority; TC_ACT_OK here would end the chain before them.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/types.h>

/* After the UAPI headers: bpf_helper_defs.h uses their types. */
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/parse.h"
#include "maps/uplinkd_maps.h"

#define MSS_VERDICT TC_ACT_UNSPEC

/* Load-time configuration, set through the skeleton's rodata before load. */
const volatile __u32 l3_only =
    0; /* 1: no link-layer header (WireGuard); 0: Ethernet (veth in tests) */

/* mss_clamp[ifindex]: the device's clamp per family, written by the daemon. Preallocated: the
 * daemon's writes cannot fail for memory. No pinning attribute: the daemon sets pin paths before
 * load (so both header kinds share one set), tests load them unpinned. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UPLINKD_MAX_MSS_CLAMP);
	__type(key, __u32);
	__type(value, struct mss_clamp_value);
} mss_clamp SEC(".maps");

/* mss_counters[0]: per-CPU totals over every device. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mss_clamp_counters);
} mss_counters SEC(".maps");

#define TCP_FLAG_BYTE 13 /* offset of the flags byte (CWR .. FIN) in the TCP header */
#define TCP_SYN_BIT 0x02
#define TCP_MAX_OPTION_BYTES 40 /* data offset 15: 60 bytes of header, 20 of them fixed */

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOLEN_MSS 4

/* A SYN's TCP header, as far as the rewrite needs it. */
struct syn_segment {
	__u8 *tcp;     /* in the packet */
	__u32 l4_off;  /* the same, from skb->data */
	__u32 opt_len; /* option bytes the data offset declares, <= TCP_MAX_OPTION_BYTES */
	__u8 is_ipv6;
};

/* Finds the TCP header of a SYN or SYN-ACK over IPv4 (any header length) or IPv6 (TCP right
 * after the fixed header; extension headers are left alone). Returns 0, or -1 for anything else,
 * fragments included (a SYN is never fragmented; a later fragment has no TCP header). */
static __always_inline int parse_syn(struct __sk_buff *skb, struct syn_segment *seg)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	void *pos = data;
	struct l3_view l3 = {};
	__u8 saddr[16];
	__u8 *tcp;
	__u32 hdr_len;
	int err;

	if (l3_only) {
		err = parse_raw_ip(pos, end, &l3, saddr);
	} else {
		__be16 proto = parse_ethernet(&pos, end);

		if (proto == bpf_htons(ETH_P_IP))
			err = parse_ipv4(pos, end, &l3, saddr);
		else if (proto == bpf_htons(ETH_P_IPV6))
			err = parse_ipv6(pos, end, &l3, saddr);
		else
			return -1;
	}
	if (err || l3.proto != IPPROTO_TCP || l3.is_fragment)
		return -1;
	tcp = l3.l4;
	if ((void *)(tcp + sizeof(struct tcphdr)) > end)
		return -1;
	if (!(tcp[TCP_FLAG_BYTE] & TCP_SYN_BIT))
		return -1;
	/* The data offset by hand, like the IPv4 header length: bitfield order depends on the
	 * target. */
	hdr_len = (tcp[12] >> 4) * 4;
	if (hdr_len < sizeof(struct tcphdr) || hdr_len > l3.l4_len)
		return -1;
	seg->tcp = tcp;
	seg->l4_off = (__u32)((void *)tcp - data);
	seg->opt_len = hdr_len - sizeof(struct tcphdr);
	seg->is_ipv6 = l3.is_ipv6;
	return 0;
}

/* Walks the options for MSS (kind 2, length 4): returns its offset among the options and its
 * value in *mss, or -1 when there is none or the options are malformed (a length below 2, an
 * option running past the header or the packet, an MSS option whose length is not 4): either way
 * the segment is left alone.
 *
 * The options are copied to the stack once (at most 40 bytes, one helper call) and walked there.
 * The walk is built for the verifier of the oldest kernels: every branch but the NOP/other one
 * leaves the loop, so each round adds few states. An earlier walk that called
 * bpf_skb_load_bytes once per option was accepted by 6.18 (99k instructions processed) but went
 * past the verifier's 1M-instruction limit on Debian's 6.1; this one is 102k there (vmtest's
 * verifier report). A SYN carries at most 40
 * bytes of options; TCP_MAX_OPTIONS rounds cover every layout real stacks send (they put MSS
 * first) with room to spare: a walk that runs out leaves the segment alone. */
#define TCP_MAX_OPTIONS 12

static __always_inline int find_mss_option(struct __sk_buff *skb, const struct syn_segment *seg,
					   __u16 *mss)
{
	const __u32 base = seg->l4_off + sizeof(struct tcphdr);
	__u64 opt_len = seg->opt_len;
	__u8 opts[64] = {}; /* 40 used; the mask below keeps every index inside */
	__u32 off = 0;

	/* The helper's size needs a lower bound the verifier of older kernels (6.1) can see: a
	 * 64-bit `<` comparison (it learns nothing from `== 0`). The empty asm keeps clang from
	 * turning `< 4` back into `== 0`, which it may since the length is a multiple of 4. Fewer
	 * than 4 bytes of options cannot hold an MSS option anyway. */
	asm volatile("" : "+r"(opt_len));
	if (opt_len < TCPOLEN_MSS || opt_len > TCP_MAX_OPTION_BYTES)
		return -1;
	if (bpf_skb_load_bytes(skb, base, opts, opt_len))
		return -1; /* the header claims bytes the packet does not have */
	for (int i = 0; i < TCP_MAX_OPTIONS; i++) {
		__u8 kind, len;

		if (off >= opt_len)
			return -1;
		kind = opts[off & 63];
		if (kind == TCPOPT_EOL)
			return -1;
		if (kind == TCPOPT_MSS)
			break;
		len = kind == TCPOPT_NOP ? 1 : opts[(off + 1) & 63];
		if (len == 0 || (kind != TCPOPT_NOP && len < 2))
			return -1;
		off += len;
	}
	/* Out of rounds without finding it, or an MSS option that does not fit or is not 4 long. */
	if (opts[off & 63] != TCPOPT_MSS || off + TCPOLEN_MSS > opt_len ||
	    opts[(off + 1) & 63] != TCPOLEN_MSS)
		return -1;
	*mss = (__u16)opts[(off + 2) & 63] << 8 | opts[(off + 3) & 63];
	return (int)off;
}

/* Writes `to` over the MSS value at `at` (from skb->data) and fixes the TCP checksum.
 *
 * The store goes first: it makes the skb writable up to the MSS value, which lies past the
 * checksum field, so the checksum update has nothing left to fail on, and a failed store leaves the
 * packet as it was. No BPF_F_RECOMPUTE_CSUM: the data and the checksum field change by opposite
 * amounts, so a CHECKSUM_COMPLETE sum over the segment stays right as it is; on a CHECKSUM_PARTIAL
 * skb (a local SYN whose checksum the device finishes) bpf_l4_csum_replace leaves the field alone
 * without BPF_F_PSEUDO_HDR, which is right too: the final sum is taken over the new bytes.
 *
 * The checksum sums 16-bit words from the start of the TCP header. A value at an odd offset from
 * there straddles two words, each byte in the other half: its contribution is the byte-swapped
 * value. Returns 0 or a negative errno. */
static __always_inline int rewrite_mss(struct __sk_buff *skb, __u32 l4_off, __u32 at, __u16 from,
				       __u16 to)
{
	const __u8 bytes[2] = {(__u8)(to >> 8), (__u8)to};
	__u16 csum_from = bpf_htons(from), csum_to = bpf_htons(to);
	int err;

	err = bpf_skb_store_bytes(skb, at, bytes, sizeof(bytes), 0);
	if (err)
		return err;
	if ((at - l4_off) & 1) {
		csum_from = __builtin_bswap16(csum_from);
		csum_to = __builtin_bswap16(csum_to);
	}
	return bpf_l4_csum_replace(skb, l4_off + __builtin_offsetof(struct tcphdr, check),
				   csum_from, csum_to, sizeof(__u16));
}

static __always_inline struct mss_clamp_counters *counters(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&mss_counters, &key);
}

SEC("tc")
int wg_mss(struct __sk_buff *skb)
{
	const struct mss_clamp_value *clamp;
	struct mss_clamp_counters *c;
	struct syn_segment seg = {};
	__u32 ifindex = skb->ifindex;
	__u16 mss = 0, limit;
	int off;

	clamp = bpf_map_lookup_elem(&mss_clamp, &ifindex);
	if (!clamp)
		return MSS_VERDICT;
	/* Keeps the compiler from parsing before the lookup: a device without an entry pays the
	 * lookup only. */
	asm volatile("" ::: "memory");
	if (parse_syn(skb, &seg) < 0)
		return MSS_VERDICT;
	c = counters();
	if (c)
		c->seen_syn++;
	limit = seg.is_ipv6 ? clamp->mss6 : clamp->mss4;
	if (limit == 0)
		return MSS_VERDICT;
	off = find_mss_option(skb, &seg, &mss);
	if (off < 0 || mss <= limit)
		return MSS_VERDICT;
	/* The value is 2 bytes into the option; the options start 20 bytes into the header. */
	if (rewrite_mss(skb, seg.l4_off, seg.l4_off + sizeof(struct tcphdr) + (__u32)off + 2, mss,
			limit))
		return MSS_VERDICT;
	if (c)
		c->clamped++;
	return MSS_VERDICT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
