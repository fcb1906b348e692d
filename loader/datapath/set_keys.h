// The keys of an ipset/nft set's LPM trie (sets[k - 1], bpf/lib/classifier_maps.h). Header-only so
// the BPF fixtures (tests/bpf/lan_ingress_bitvec_test.cpp) load their sets exactly as the daemon does.
//
// One trie holds both families, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix + 96), so the
// classifier makes one /128 lookup whatever the family. An IPv6 prefix shorter than /96 can cover
// ::ffff:0:0/96, where every IPv4 key lives: written as it is, `::/0` in a set would match every
// IPv4 destination. Such a prefix goes into the trie as its pieces outside ::ffff:0:0/96 (one per
// bit below /96, at most 96): IPv4 destinations match only the set's IPv4 entries, and IPv6
// destinations as before, except those inside ::ffff:0:0/96 (IPv4-mapped addresses, which are not
// routed on the wire), which match as the IPv4 address they map. The trie needs no family bit (its key is the
// inner-map template of the pinned `sets` map) and the classifier no extra work.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "maps/uplinkd_maps.h"
#include "netlink/nft_set_parse.h"

namespace uplinkd::datapath {

namespace set_keys_detail {

constexpr uint32_t kMappedLen = 96;  // ::ffff:0:0/96, the IPv4-mapped block

inline bool key_less(const lpm_key& a, const lpm_key& b) { return std::memcmp(&a, &b, sizeof a) < 0; }
inline bool key_equal(const lpm_key& a, const lpm_key& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

inline bool bit_at(const uint8_t* addr, uint32_t i) { return ((addr[i / 8] >> (7 - i % 8)) & 1) != 0; }

inline void flip_bit(uint8_t* addr, uint32_t i) { addr[i / 8] ^= static_cast<uint8_t>(1U << (7 - i % 8)); }

// Clears every bit from `len` on: a prefix's canonical address.
inline void keep_prefix(uint8_t* addr, uint32_t len) {
  for (uint32_t i = len; i < 128; ++i) {
    if (bit_at(addr, i)) flip_bit(addr, i);
  }
}

inline lpm_key mapped_block() {
  lpm_key m{};
  m.prefixlen = kMappedLen;
  m.addr[10] = 0xff;
  m.addr[11] = 0xff;
  return m;
}

// An IPv6 key shorter than /96 whose prefix ::ffff:0:0 shares.
inline bool covers_mapped_block(const lpm_key& k) {
  if (k.prefixlen >= kMappedLen) return false;
  const lpm_key m = mapped_block();
  for (uint32_t i = 0; i < k.prefixlen; ++i) {
    if (bit_at(k.addr, i) != bit_at(m.addr, i)) return false;
  }
  return true;
}

// k minus ::ffff:0:0/96 (k covers it): for each length l from k's to 95, the /(l + 1) that
// shares ::ffff:0:0's first l bits and differs at bit l. Together they cover the rest of k.
inline void append_outside_mapped_block(const lpm_key& k, std::vector<lpm_key>* out) {
  const lpm_key m = mapped_block();
  for (uint32_t l = k.prefixlen; l < kMappedLen; ++l) {
    lpm_key piece = m;
    flip_bit(piece.addr, l);
    keep_prefix(piece.addr, l + 1);
    piece.prefixlen = l + 1;
    out->push_back(piece);
  }
}

}  // namespace set_keys_detail

// The trie keys of a set's prefixes (above), sorted and without duplicates.
inline std::vector<lpm_key> lpm_keys_of(const std::vector<netlink::SetPrefix>& prefixes) {
  using namespace set_keys_detail;
  std::vector<lpm_key> keys;
  keys.reserve(prefixes.size());
  for (const auto& p : prefixes) {
    lpm_key k{};
    if (p.address.is_v4()) {
      k.addr[10] = 0xff;
      k.addr[11] = 0xff;
      std::memcpy(k.addr + 12, p.address.bytes.data(), 4);
      k.prefixlen = p.len + kMappedLen;
      keys.push_back(k);
      continue;
    }
    std::memcpy(k.addr, p.address.bytes.data(), 16);
    k.prefixlen = p.len;
    if (covers_mapped_block(k))
      append_outside_mapped_block(k, &keys);
    else
      keys.push_back(k);
  }
  std::sort(keys.begin(), keys.end(), key_less);
  keys.erase(std::unique(keys.begin(), keys.end(), key_equal), keys.end());
  return keys;
}

}  // namespace uplinkd::datapath
