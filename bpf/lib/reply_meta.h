/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The XDP -> tc hand-over for a matched probe reply: struct probe_reply_meta in the metadata area
 * in front of the packet. Written and read a byte at a time: metadata sits right before an
 * Ethernet header, i.e. 2 bytes off a 4-byte boundary, which strict-alignment kernels refuse for
 * 32-bit loads. The bytes are the struct as it lies in host memory.
 */
#ifndef UPLINKD_BPF_LIB_REPLY_META_H
#define UPLINKD_BPF_LIB_REPLY_META_H

#include <linux/types.h>

#include "maps/uplinkd_maps.h"

static __always_inline void store_u32_memory_order(__u8 *dst, __u32 value)
{
	const __u8 *src = (const __u8 *)&value;

#pragma unroll
	for (int i = 0; i < 4; i++)
		dst[i] = src[i];
}

static __always_inline __u32 load_u32_memory_order(const __u8 *src)
{
	__u32 value;
	__u8 *dst = (__u8 *)&value;

#pragma unroll
	for (int i = 0; i < 4; i++)
		dst[i] = src[i];
	return value;
}

/* meta must have been bounds-checked for sizeof(struct probe_reply_meta) bytes. */
static __always_inline void reply_meta_write(__u8 *meta, __u32 uplink_id)
{
	store_u32_memory_order(meta + __builtin_offsetof(struct probe_reply_meta, magic), UPLINKD_META_MAGIC);
	store_u32_memory_order(meta + __builtin_offsetof(struct probe_reply_meta, uplink_id), uplink_id);
}

static __always_inline int reply_meta_is_ours(const __u8 *meta)
{
	return load_u32_memory_order(meta + __builtin_offsetof(struct probe_reply_meta, magic)) ==
	       UPLINKD_META_MAGIC;
}

#endif /* UPLINKD_BPF_LIB_REPLY_META_H */
