/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Lookup keys for the LPM tries (`connected`, the tries in `sets`): one trie holds both families,
 * IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), so a lookup is always a /128.
 */
#ifndef UPLINKD_BPF_LIB_LPM_KEY_H
#define UPLINKD_BPF_LIB_LPM_KEY_H

#include <linux/types.h>

#include "maps/uplinkd_maps.h"
#include "lib/parse.h"

/* addr: IPv4 in the first 4 bytes when family is 4, else 16 bytes of IPv6. */
static __always_inline void lpm_key_for_host(struct lpm_key *key, const __u8 *addr, __u8 family)
{
	key->prefixlen = 128;
	if (family == 6) {
		copy_bytes16(key->addr, addr);
		return;
	}
#pragma unroll
	for (int i = 0; i < 10; i++)
		key->addr[i] = 0;
	key->addr[10] = 0xff;
	key->addr[11] = 0xff;
	copy_bytes4(key->addr + 12, addr);
}

#endif /* UPLINKD_BPF_LIB_LPM_KEY_H */
