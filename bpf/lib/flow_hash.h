/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The 32-bit flow hash that spreads new flows over a policy's members: Bob Jenkins' lookup3
 * (the kernel's jhash2) over the ten 32-bit words of struct flow_key, as they lie in memory, with
 * a fixed seed. Deterministic (a flow always lands on the same member while the policy is
 * unchanged, and tests can predict it), fully avalanched, so the threshold comparison against the
 * whole 32-bit range splits flows by weight even when the 5-tuples differ in one port bit.
 *
 * Plain C with no BPF dependency: tests and tools include it to compute the same hash.
 */
#ifndef UPLINKD_BPF_LIB_FLOW_HASH_H
#define UPLINKD_BPF_LIB_FLOW_HASH_H

#include <linux/types.h>

#include "maps/uplinkd_maps.h"

#ifdef __bpf__
#define UPLINKD_HASH_INLINE static __always_inline
#else
#define UPLINKD_HASH_INLINE static inline
#endif

#define UPLINKD_FLOW_HASH_SEED 0x75706c6bU /* jhash initval; any constant works */
#define UPLINKD_JHASH_GOLDEN 0xdeadbeefU   /* lookup3's JHASH_INITVAL */
#define UPLINKD_FLOW_KEY_WORDS (sizeof(struct flow_key) / 4)

UPLINKD_HASH_INLINE __u32 uplinkd_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> (32 - shift));
}

/* lookup3's steps read best several to a line. */
/* clang-format off */
#define UPLINKD_JHASH_MIX(a, b, c)                                   \
	do {                                                          \
		a -= c; a ^= uplinkd_rol32(c, 4);  c += b;            \
		b -= a; b ^= uplinkd_rol32(a, 6);  a += c;            \
		c -= b; c ^= uplinkd_rol32(b, 8);  b += a;            \
		a -= c; a ^= uplinkd_rol32(c, 16); c += b;            \
		b -= a; b ^= uplinkd_rol32(a, 19); a += c;            \
		c -= b; c ^= uplinkd_rol32(b, 4);  b += a;            \
	} while (0)

#define UPLINKD_JHASH_FINAL(a, b, c)                                 \
	do {                                                          \
		c ^= b; c -= uplinkd_rol32(b, 14);                    \
		a ^= c; a -= uplinkd_rol32(c, 11);                    \
		b ^= a; b -= uplinkd_rol32(a, 25);                    \
		c ^= b; c -= uplinkd_rol32(b, 16);                    \
		a ^= c; a -= uplinkd_rol32(c, 4);                     \
		b ^= a; b -= uplinkd_rol32(a, 14);                    \
		c ^= b; c -= uplinkd_rol32(b, 24);                    \
	} while (0)

/* words: the flow key as ten 32-bit words in memory order (the key must be 4-byte aligned). */
UPLINKD_HASH_INLINE __u32 flow_hash_words(const __u32 *words)
{
	__u32 a, b, c;

	a = b = c = UPLINKD_JHASH_GOLDEN + (__u32)(UPLINKD_FLOW_KEY_WORDS << 2) +
		    UPLINKD_FLOW_HASH_SEED;
	a += words[0]; b += words[1]; c += words[2];
	UPLINKD_JHASH_MIX(a, b, c);
	a += words[3]; b += words[4]; c += words[5];
	UPLINKD_JHASH_MIX(a, b, c);
	a += words[6]; b += words[7]; c += words[8];
	UPLINKD_JHASH_MIX(a, b, c);
	a += words[9];
	UPLINKD_JHASH_FINAL(a, b, c);
	return c;
}
/* clang-format on */

#ifdef __cplusplus
static_assert(sizeof(struct flow_key) == 40, "flow_hash_words hashes exactly ten words");
#else
_Static_assert(sizeof(struct flow_key) == 40, "flow_hash_words hashes exactly ten words");
#endif

#endif /* UPLINKD_BPF_LIB_FLOW_HASH_H */
