/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * uplink_egress: tc egress on every uplink. WireGuard endpoint steering.
 *
 * Why (field-reports/wireguard-stuck-on-backup-uplink.txt): netifd pins a host route to the
 * WireGuard endpoint through whatever uplink is up when the tunnel starts, and the tunnel ran over
 * a 2 Mbit/s backup for two months while the fiber was fine. Fixing the route is not enough
 * either: kernel WireGuard caches each peer's source address and route, and keeps sending with the
 * old uplink's address until a handshake retry times out (DESIGN.md, "Facts").
 *
 * So the datapath steers the tunnel's own packets: a UDP datagram to a known endpoint (address,
 * port, family in `wg_endpoints`) that leaves by an uplink other than the active uplink of the
 * endpoint's policy gets the active uplink's source address (IP and UDP checksums fixed) and is
 * redirected to that uplink through its gateway. The peer follows: WireGuard roaming takes our
 * endpoint from the source of the latest authenticated packet, so its replies come back to the
 * active uplink's address. With no member of the policy online the packet is left alone (it may
 * still get through where it is going; nowhere else is better).
 *
 * Before a redirect the program asks the kernel (bpf_fib_lookup) whether the active uplink's
 * gateway has a resolved neighbour entry (see gateway_state()), so the first packet after a move
 * is not lost to an unresolved one. A packet already leaving by the active uplink from another
 * address gets the uplink's address in place (fix_source_in_place()).
 *
 * Everything that is not UDP to an endpoint costs a parse and one hash lookup: TC_ACT_OK.
 * Fragments are never steered: only the first carries the ports, and steering it alone would
 * split the datagram over two uplinks (WireGuard sizes its packets to avoid fragments).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/classifier_maps.h"
#include "lib/flow_hash.h"
#include "lib/parse.h"
#include "lib/wg_maps.h"

/* Load-time configuration, set through the skeleton's rodata before load. */
const volatile __u32 l3_only = 0; /* 1: no link-layer header (PPPoE, raw-IP LTE) */

/* linux/socket.h does not compile for the BPF target; bpf_redir_neigh wants these numbers. */
#define UPLINKD_AF_INET 2
#define UPLINKD_AF_INET6 10

/* Left in skb->cb[0] on a packet this program redirected. The redirect sends it through the
 * active uplink's own tc egress, where this program sees it again, already on the right uplink:
 * the tag keeps it from being counted twice (steered there, passed here). The qdisc layer leaves
 * the cb's data area alone between the two devices. */
#define UPLINKD_WG_STEERED_TAG 0x77677374U /* "wgst" */

/* A datagram to an endpoint, as far as the rewrite needs it. Offsets from skb->data. */
struct wg_packet {
	struct wg_endpoint_key key; /* daddr, dport, family */
	__u32 l3_off;
	__u32 l4_off;
	__u8 saddr[16]; /* the current source; IPv4 in the first 4 bytes */
};

/* Fills pkt for an unfragmented UDP datagram over IPv4 or IPv6 (no extension headers: WireGuard
 * sends none). Returns 0, or -1 for anything else: pass it. */
static __always_inline int parse_udp(struct __sk_buff *skb, struct wg_packet *pkt)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	void *pos = data;
	struct l3_view l3 = {};
	struct udphdr *udp;
	int err;

	if (l3_only) {
		err = parse_raw_ip(pos, end, &l3, pkt->saddr);
	} else {
		__be16 proto = parse_ethernet(&pos, end);

		if (proto == bpf_htons(ETH_P_IP))
			err = parse_ipv4(pos, end, &l3, pkt->saddr);
		else if (proto == bpf_htons(ETH_P_IPV6))
			err = parse_ipv6(pos, end, &l3, pkt->saddr);
		else
			return -1;
	}
	if (err || l3.proto != IPPROTO_UDP || l3.is_fragment)
		return -1;
	udp = l3.l4;
	if ((void *)(udp + 1) > end || l3.l4_len < sizeof(*udp))
		return -1;

	if (l3.is_ipv6) {
		struct ipv6hdr *ip6 = pos;

		if ((void *)(ip6 + 1) > end)
			return -1;
		copy_bytes16(pkt->key.addr, (const __u8 *)&ip6->daddr);
		pkt->key.family = 6;
	} else {
		struct iphdr *ip = pos;

		if ((void *)(ip + 1) > end)
			return -1;
		copy_bytes4(pkt->key.addr, (const __u8 *)&ip->daddr);
		pkt->key.family = 4;
	}
	pkt->key.port = udp->dest;
	pkt->l3_off = (__u32)(pos - data);
	pkt->l4_off = (__u32)((void *)udp - data);
	return 0;
}

/* The member an endpoint follows: the first whose threshold covers the hash of the endpoint
 * (address, port, family; not the source, which is what gets rewritten). A policy that splits by
 * weight thus keeps each endpoint on one member, as a flow stays on one; the last member for a
 * malformed table. The hash is flow_hash_words over a flow_key holding only the destination,
 * proto UDP and family, which the daemon computes the same way. */
static __always_inline __u32 endpoint_hash(const struct wg_endpoint_key *ep)
{
	struct flow_key key = {};

	copy_bytes16(key.daddr, ep->addr);
	key.dport = ep->port;
	key.proto = IPPROTO_UDP;
	key.family = ep->family;
	return flow_hash_words((const __u32 *)&key);
}

static __always_inline __u32 pick_endpoint_member(const struct policy_entry *p, __u32 n_members,
						  __u32 hash)
{
	for (__u32 i = 0; i < UPLINKD_POLICY_MAX_MEMBERS; i++) {
		if (i >= n_members)
			break;
		if (hash <= p->threshold[i])
			return i;
	}
	return n_members - 1;
}

/* The active uplink's id for the endpoint, or 0 when the policy has no member online. */
static __always_inline __u16 active_uplink(const struct wg_packet *pkt,
					   const struct wg_endpoint_value *ep)
{
	__u32 slot = UPLINKD_POLICY_SLOT(ep->policy_id, pkt->key.family);
	const struct policy_entry *p = bpf_map_lookup_elem(&policies, &slot);
	__u32 n_members, member;

	if (!p)
		return 0;
	n_members = p->n_members;
	if (n_members == 0)
		return 0;
	if (n_members > UPLINKD_POLICY_MAX_MEMBERS)
		n_members = UPLINKD_POLICY_MAX_MEMBERS;
	if (n_members == 1)
		return p->uplink_id[0];
	member = pick_endpoint_member(p, n_members, endpoint_hash(&pkt->key));
	if (member >= UPLINKD_POLICY_MAX_MEMBERS)
		return 0;
	return p->uplink_id[member];
}

enum wg_outcome {
	WG_STEERED,
	WG_PASSED,
	WG_FAILED,
};

static __always_inline void count(__u32 endpoint_id, enum wg_outcome outcome, __u32 bytes)
{
	struct wg_counters *c = bpf_map_lookup_elem(&wg_counters, &endpoint_id);

	if (!c)
		return;
	switch (outcome) {
	case WG_STEERED:
		c->steered_packets++;
		c->steered_bytes += bytes;
		break;
	case WG_PASSED:
		c->passed_packets++;
		break;
	default:
		c->failed_packets++;
		break;
	}
}

/* Replaces the source address `from` by `to` (4 or 16 bytes), fixing the UDP checksum (pseudo
 * header) and for IPv4 the header checksum. BPF_F_PSEUDO_HDR keeps a CHECKSUM_PARTIAL skb (a
 * locally generated datagram whose checksum the device will finish) right; BPF_F_MARK_MANGLED_0
 * leaves an IPv4 datagram without checksum (0) at 0 and turns a computed 0 into 0xffff.
 *
 * The UDP checksum goes first: it makes the skb writable up to the end of the UDP header, which
 * covers the IP header, so once it succeeded the later steps have nothing left to fail on and a
 * failure leaves the packet as it was. Returns 0 or a negative errno. */
static __always_inline int rewrite_source(struct __sk_buff *skb, __u32 l3_off, __u32 l4_off,
					  __u8 family, const __u8 *from, const __u8 *to)
{
	const __u32 udp_check = l4_off + __builtin_offsetof(struct udphdr, check);
	int err;

	if (family == 4) {
		__be32 old_addr, new_addr;

		__builtin_memcpy(&old_addr, from, 4);
		__builtin_memcpy(&new_addr, to, 4);
		err =
		    bpf_l4_csum_replace(skb, udp_check, old_addr, new_addr,
					BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | sizeof(new_addr));
		if (err)
			return err;
		err = bpf_l3_csum_replace(skb, l3_off + __builtin_offsetof(struct iphdr, check),
					  old_addr, new_addr, sizeof(new_addr));
		if (err)
			return err;
		return bpf_skb_store_bytes(skb, l3_off + __builtin_offsetof(struct iphdr, saddr),
					   &new_addr, sizeof(new_addr), 0);
	} else {
		__u8 old_addr[16], new_addr[16];
		__s64 diff;

		copy_bytes16(old_addr, from);
		copy_bytes16(new_addr, to);
		diff = bpf_csum_diff((__be32 *)old_addr, sizeof(old_addr), (__be32 *)new_addr,
				     sizeof(new_addr), 0);
		if (diff < 0)
			return (int)diff;
		err = bpf_l4_csum_replace(skb, udp_check, 0, (__u32)diff,
					  BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
		if (err)
			return err;
		return bpf_skb_store_bytes(skb, l3_off + __builtin_offsetof(struct ipv6hdr, saddr),
					   new_addr, sizeof(new_addr), 0);
	}
}

/* bpf_redirect_neigh() strips an Ethernet header before it resolves the next hop; a packet from a
 * device without one (PPPoE, raw IP) gets a placeholder that only carries the ethertype. */
static __always_inline int add_placeholder_ethernet(struct __sk_buff *skb, __u8 family)
{
	struct ethhdr eth = {};

	eth.h_proto = family == 6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	if (bpf_skb_change_head(skb, sizeof(eth), 0))
		return -1;
	return bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0);
}

/* What the kernel knows of the active uplink's gateway, asked before a packet is sent to it.
 *
 * Why (seen on 6.18, IPv4 and IPv6): bpf_redirect_neigh() with an explicit gateway queues the
 * packet while the gateway's neighbour entry is unresolved, with the route it came with still
 * attached; on resolution the kernel sends it with the MAC address of that route's gateway (the
 * old uplink's) out of the new device, where it is lost. So an unresolved gateway is never handed
 * a packet: the redirect then goes without an explicit gateway, where the kernel routes the packet
 * again through the new device and queues it with that route, but only when that route leads to
 * the same gateway; else the packet leaves as it came (by the old uplink, not steered). The check
 * asks the same question the kernel's lookup will: IPv4 keeps to the device, IPv6 only prefers it
 * (a host route to the endpoint through the old uplink wins there, so such a packet is passed;
 * route hygiene replaces that route). bpf_fib_lookup() takes no mark before 6.10: the check
 * looks up with mark 0 where the kernel uses the packet's, so the two can differ only where an ip
 * rule matches the WireGuard device's fwmark, and only while the gateway is unresolved. */
enum gateway_state {
	GW_RESOLVED,	      /* a valid neighbour entry: sent at once */
	GW_UNKNOWN,	      /* the lookup could not tell (forwarding off, device down, too big) */
	GW_UNRESOLVED_ROUTED, /* unresolved; the kernel's route by that device goes through it */
	GW_UNRESOLVED,	      /* unresolved, and nothing of the kernel's to queue the packet on */
};

/* Whether the first `len` (at most 16) bytes of a and b are equal; ipv4_dst shares its first
 * bytes with ipv6_dst in struct bpf_fib_lookup. */
static __always_inline int same_bytes(const __u8 *a, const __u8 *b, __u32 len)
{
	__u8 diff = 0;

#pragma unroll
	for (__u32 i = 0; i < 16; i++) {
		if (i < len)
			diff |= a[i] ^ b[i];
	}
	return diff == 0;
}

/* bpf_fib_lookup() for `dst` (4 or 16 bytes) leaving by out->ifindex. `direct` looks in the main
 * table only, skipping the rules: enough for a gateway, which sits in a connected prefix. */
static __always_inline long fib_lookup_by(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
					  const struct uplink_egress *out, __u8 family,
					  const __u8 *src, const __u8 *dst, int direct)
{
	fib->ifindex = out->ifindex;
	fib->l4_protocol = IPPROTO_UDP;
	if (family == 4) {
		fib->family = UPLINKD_AF_INET;
		__builtin_memcpy(&fib->ipv4_src, src, 4);
		__builtin_memcpy(&fib->ipv4_dst, dst, 4);
	} else {
		fib->family = UPLINKD_AF_INET6;
		__builtin_memcpy(fib->ipv6_src, src, 16);
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
	}
	return bpf_fib_lookup(skb, fib, sizeof(*fib),
			      BPF_FIB_LOOKUP_OUTPUT | (direct ? BPF_FIB_LOOKUP_DIRECT : 0));
}

/* Whether the kernel, routing `endpoint` by the active uplink's device from its address, would
 * queue it on `gw`: the same device and the same next hop. */
static __always_inline int kernel_route_uses_gateway(struct __sk_buff *skb,
						     const struct uplink_egress *out, __u8 family,
						     const __u8 *endpoint, const __u8 *gw)
{
	const __u8 *src = family == 4 ? out->src4 : out->src6;
	struct bpf_fib_lookup fib = {};
	long rc = fib_lookup_by(skb, &fib, out, family, src, endpoint, 0);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	if (fib.ifindex != out->ifindex)
		return 0;
	return same_bytes((const __u8 *)fib.ipv6_dst, gw, family == 4 ? 4 : 16);
}

static __always_inline enum gateway_state
gateway_state(struct __sk_buff *skb, const struct uplink_egress *out, const struct wg_packet *pkt)
{
	const __u8 family = pkt->key.family;
	const __u8 *gw = family == 4 ? out->gw4 : out->gw6;
	const __u8 *src = family == 4 ? out->src4 : out->src6;
	struct bpf_fib_lookup fib = {};
	long rc = fib_lookup_by(skb, &fib, out, family, src, gw, 1);

	if (rc == BPF_FIB_LKUP_RET_SUCCESS)
		return GW_RESOLVED;
	if (rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return GW_UNKNOWN;
	if (kernel_route_uses_gateway(skb, out, family, pkt->key.addr, gw))
		return GW_UNRESOLVED_ROUTED;
	return GW_UNRESOLVED;
}

static __always_inline int has_gateway(const struct uplink_egress *out, __u8 family)
{
	return out->flags & (family == 4 ? UPLINK_EGRESS_HAS_GW4 : UPLINK_EGRESS_HAS_GW6);
}

/* TC_ACT_REDIRECT, or TC_ACT_SHOT when the helper refused its arguments. Through the gateway when
 * the uplink has one and `via_gateway`; else the kernel routes the packet on that device. */
static __always_inline long redirect_to(const struct uplink_egress *out, __u8 family,
					int via_gateway)
{
	struct bpf_redir_neigh nh = {};

	if (!via_gateway || !has_gateway(out, family))
		return bpf_redirect_neigh(out->ifindex, NULL, 0, 0);
	if (family == 4) {
		nh.nh_family = UPLINKD_AF_INET;
		__builtin_memcpy(&nh.ipv4_nh, out->gw4, 4);
	} else {
		nh.nh_family = UPLINKD_AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, out->gw6, 16);
	}
	return bpf_redirect_neigh(out->ifindex, &nh, sizeof(nh), 0);
}

/* Redirect, source rewritten, placeholder header if needed. The redirect is asked for first:
 * bpf_redirect_neigh() only records where to send, and the kernel acts on it only for a
 * TC_ACT_REDIRECT verdict, so every failure below can still pass the packet as it came. */
static __always_inline int steer(struct __sk_buff *skb, const struct wg_packet *pkt,
				 const struct uplink_egress *out, __u32 endpoint_id)
{
	const __u8 *new_src = pkt->key.family == 6 ? out->src6 : out->src4;
	const __u32 bytes = skb->len;
	enum gateway_state gw = GW_UNKNOWN;

	if (has_gateway(out, pkt->key.family))
		gw = gateway_state(skb, out, pkt);
	if (gw == GW_UNRESOLVED) {
		count(endpoint_id, WG_PASSED, 0); /* leaves as it came rather than be lost */
		return TC_ACT_OK;
	}
	if (redirect_to(out, pkt->key.family, gw != GW_UNRESOLVED_ROUTED) != TC_ACT_REDIRECT) {
		count(endpoint_id, WG_FAILED, 0);
		return TC_ACT_OK;
	}
	if (rewrite_source(skb, pkt->l3_off, pkt->l4_off, pkt->key.family, pkt->saddr, new_src)) {
		count(endpoint_id, WG_FAILED, 0);
		return TC_ACT_OK;
	}
	if (l3_only && add_placeholder_ethernet(skb, pkt->key.family)) {
		/* Only change_head can realistically fail (no memory), and it then leaves the
		 * packet as it was: undo the rewrite. */
		rewrite_source(skb, pkt->l3_off, pkt->l4_off, pkt->key.family, new_src, pkt->saddr);
		count(endpoint_id, WG_FAILED, 0);
		return TC_ACT_OK;
	}
	count(endpoint_id, WG_STEERED, bytes);
	skb->cb[0] = UPLINKD_WG_STEERED_TAG;
	return TC_ACT_REDIRECT;
}

/* A packet already leaving by the active uplink, but from another address: kernel WireGuard over
 * IPv6 keeps its cached source while the address exists, so when the endpoint's route moves to the
 * new uplink its packets leave there with the old uplink's address, and the replies go to the old
 * uplink (IPv4 drops the cached source when the route's device changes). The source is rewritten
 * in place, no redirect. */
static __always_inline int fix_source_in_place(struct __sk_buff *skb, const struct wg_packet *pkt,
					       const struct uplink_egress *out, __u32 endpoint_id)
{
	const __u8 family = pkt->key.family;
	const __u8 *src = family == 4 ? out->src4 : out->src6;
	const __u32 bytes = skb->len;

	if (same_bytes(pkt->saddr, src, family == 4 ? 4 : 16)) {
		count(endpoint_id, WG_PASSED, 0);
		return TC_ACT_OK;
	}
	if (rewrite_source(skb, pkt->l3_off, pkt->l4_off, family, pkt->saddr, src))
		count(endpoint_id, WG_FAILED, 0);
	else
		count(endpoint_id, WG_STEERED, bytes);
	return TC_ACT_OK;
}

/* Named wg_steer, not after the object: `uplink_egress` is the name of the map. */
SEC("tc")
int wg_steer(struct __sk_buff *skb)
{
	const struct wg_endpoint_value *ep;
	const struct uplink_egress *out;
	struct wg_packet pkt = {};
	__u32 endpoint_id, id;
	__u16 uplink;

	if (parse_udp(skb, &pkt) < 0)
		return TC_ACT_OK;
	ep = bpf_map_lookup_elem(&wg_endpoints, &pkt.key);
	if (!ep)
		return TC_ACT_OK;
	endpoint_id = ep->endpoint_id;

	uplink = active_uplink(&pkt, ep);
	if (uplink == 0) {
		count(endpoint_id, WG_PASSED, 0); /* none online: leave it where it goes */
		return TC_ACT_OK;
	}
	id = uplink;
	out = bpf_map_lookup_elem(&uplink_egress, &id);
	if (!out || out->ifindex == 0) {
		/* The daemon has not published how to send by the active uplink (device gone). */
		count(endpoint_id, WG_FAILED, 0);
		return TC_ACT_OK;
	}
	if (!(out->flags & (pkt.key.family == 6 ? UPLINK_EGRESS_HAS_V6 : UPLINK_EGRESS_HAS_V4))) {
		count(endpoint_id, WG_PASSED, 0); /* the active uplink cannot carry this family */
		return TC_ACT_OK;
	}
	if (out->ifindex == skb->ifindex) {
		if (skb->cb[0] == UPLINKD_WG_STEERED_TAG) {
			skb->cb[0] = 0; /* ours, redirected here: counted as steered already */
			return TC_ACT_OK;
		}
		return fix_source_in_place(skb, &pkt, out, endpoint_id);
	}
	return steer(skb, &pkt, out, endpoint_id);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
