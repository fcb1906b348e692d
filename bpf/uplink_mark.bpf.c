/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * uplink_mark: tc ingress on uplinks. Turns the XDP tag of a matched probe reply (see
 * uplink_ingress) into skb->mark, which XDP cannot set, so the firewall and policy routing can
 * tell the daemon's own probe replies from other traffic (e.g. exempt them from an nft ICMP
 * limit, as a reply the XDP limiter spared should not die in the next one).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/reply_meta.h"

/* Load-time configuration: only the bits under the mask are replaced, so mwan3's other mark
 * bits (and other users of the mark) survive. */
const volatile __u32 reply_mark = 0;
const volatile __u32 reply_mark_mask = 0;

SEC("tc")
int uplink_mark(struct __sk_buff *skb)
{
	__u8 *meta = (void *)(long)skb->data_meta;
	void *data = (void *)(long)skb->data;

	/* No metadata when XDP did not tag the packet or the path in between dropped it. */
	if ((void *)(meta + sizeof(struct probe_reply_meta)) > data)
		return TC_ACT_OK;
	if (reply_meta_is_ours(meta))
		skb->mark = (skb->mark & ~reply_mark_mask) | (reply_mark & reply_mark_mask);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
