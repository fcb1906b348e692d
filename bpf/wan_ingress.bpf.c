/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * wan_ingress: tc ingress on every uplink, one loaded instance per uplink. Two jobs, both only
 * marking or remembering; the verdict is always TC_ACT_OK.
 *
 * (a) Probe-reply marker (what uplink_mark did): XDP (uplink_ingress) tags a matched probe reply
 *     with metadata, which XDP cannot turn into skb->mark; this program does, so the firewall and
 *     policy routing can tell the daemon's own probe replies from other traffic.
 * (b) Inbound connections: a TCP SYN arriving on the uplink records its remote
 *     endpoint in `inbound`, so lan_ingress sends the LAN host's replies back out by the uplink the
 *     connection came in on (mwan3 marks traffic arriving on a WAN with that WAN's mark).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/flow_parse.h"
#include "lib/inbound_map.h"
#include "lib/parse.h"
#include "lib/reply_meta.h"
#include "lib/uplink_maps.h"

/* Load-time configuration, set through the skeleton's rodata before load. */
const volatile __u32 uplink_id = 0;       /* mwan3 interface id of the uplink this instance is on */
const volatile __u32 reply_mark = 0;      /* probe replies: these bits ... */
const volatile __u32 reply_mark_mask = 0; /* ... under this mask replace skb->mark's */
const volatile __u32 l3_only = 0;         /* 1: no link-layer header (PPPoE, raw-IP LTE) */

/* (a) Returns 1 for a probe reply XDP tagged (and marks it). */
static __always_inline int mark_probe_reply(struct __sk_buff *skb)
{
	__u8 *meta = (void *)(long)skb->data_meta;
	void *data = (void *)(long)skb->data;

	/* No metadata when XDP did not tag the packet or the path in between dropped it. */
	if ((void *)(meta + sizeof(struct probe_reply_meta)) > data)
		return 0;
	if (!reply_meta_is_ours(meta))
		return 0;
	skb->mark = (skb->mark & ~reply_mark_mask) | (reply_mark & reply_mark_mask);
	return 1;
}

/* What opens a connection from outside: a TCP SYN without ACK (a SYN-ACK answers one of ours).
 * UDP is not recorded: it has no handshake, so every reply to the LAN's own datagrams (DNS from a
 * public resolver, QUIC from a CDN) would pin the LAN's later new flows to that endpoint onto the
 * uplink that answered, overriding rules and weights. Inbound UDP (port forwards) needs the
 * forwarded ports from the daemon first. */
static __always_inline int opens_inbound(const struct flow_packet *pkt)
{
	if (!pkt->ports_known)
		return 0; /* fragments and cut-short headers: no remote port to key by */
	return pkt->key.proto == IPPROTO_TCP && is_bare_syn(pkt->tcp_flags);
}

/* (b) Records or refreshes the remote endpoint. An entry already pointing at this uplink is only
 * re-stamped, at most once a second; anything else is replaced whole (one atomic update, so the
 * LAN side never reads one uplink's mark with another's id). */
static __always_inline void record_inbound(const struct flow_packet *pkt)
{
	struct inbound_key key = {};
	struct inbound_value value = {};
	struct inbound_value *v;
	struct uplink_record *u;
	__u32 id = uplink_id;
	__u64 now;

	u = bpf_map_lookup_elem(&uplinks, &id);
	if (!u || u->mark == 0)
		return; /* not published by the daemon yet: no mark to send replies by */

	copy_bytes16(key.raddr, pkt->key.saddr);
	key.rport = pkt->key.sport;
	key.proto = pkt->key.proto;
	key.family = pkt->key.family;
	now = bpf_ktime_get_ns();

	v = bpf_map_lookup_elem(&inbound, &key);
	if (v && v->uplink_id == id && v->mark == u->mark) {
		if (now > v->last_seen_ns && now - v->last_seen_ns >= UPLINKD_REFRESH_NS)
			v->last_seen_ns = now;
		return;
	}
	value.last_seen_ns = now;
	value.mark = u->mark;
	value.uplink_id = (__u16)id;
	bpf_map_update_elem(&inbound, &key, &value, BPF_ANY);
}

SEC("tc")
int wan_ingress(struct __sk_buff *skb)
{
	struct flow_packet pkt = {};

#ifdef UPLINKD_TEST_VARIANT
	/* Only in the test build `uplinkd-test-variant` (CMakeLists.txt): two more instructions, the same
	 * behaviour, another program tag, so an upgrade whose programs differ can be tested. */
	{
		volatile __u32 variant = UPLINKD_TEST_VARIANT;
		(void)variant;
	}
#endif
	/* A reply to our own probe opens nothing: a DNS probe's reply is UDP and would otherwise
	 * steer the LAN's queries to that resolver onto whichever uplink probed last. */
	if (mark_probe_reply(skb))
		return TC_ACT_OK;
	if (parse_flow((void *)(long)skb->data, (void *)(long)skb->data_end, l3_only, &pkt) < 0)
		return TC_ACT_OK;
	if (opens_inbound(&pkt))
		record_inbound(&pkt);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
