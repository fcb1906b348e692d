// nft sets of addresses as uplinkd matches them: the prefixes of a set, read from the JSON that
// libnftables prints for `list set` (what `nft -j list set ...` prints), and the tables of
// `list tables`. Pure parsing, no kernel access: nft_sets.cpp runs the commands, tests and the fuzz
// target (tests/fuzz/nft_set_fuzz.cpp) feed text.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/ip_address.h"

namespace uplinkd::netlink {

// One address block: host bits past `len` are zero. IPv4 has len 0..32, IPv6 0..128.
struct SetPrefix {
  IpAddress address;
  uint8_t len = 0;

  [[nodiscard]] std::string str() const;  // "192.0.2.0/28"
  bool operator==(const SetPrefix&) const = default;
};

struct NftSet {
  std::string family;  // nft table family: inet, ip, ip6, ...
  std::string table;
  std::string name;
  std::string type;                 // ipv4_addr or ipv6_addr
  std::vector<SetPrefix> prefixes;  // every element: addresses, prefixes and ranges split into prefixes

  [[nodiscard]] std::string where() const { return family + " " + table; }  // "inet fw4"
};

// The smallest list of prefixes that covers exactly [first, last]; both of one family, first <= last
// (else empty).
std::vector<SetPrefix> range_to_prefixes(const IpAddress& first, const IpAddress& last);

// Parses the JSON libnftables prints for `list set <family> <table> <name>` into `out`. Returns ""
// or a sentence saying what is wrong (a set of another type, such as ports or a concatenation, is
// refused: only sets of addresses can be matched against a destination). Never throws.
std::string parse_nft_set_json(const std::string& json_text, NftSet* out);

// The tables of `list tables` JSON, as (family, name) pairs, in the kernel's order. Never throws.
std::vector<std::pair<std::string, std::string>> parse_nft_tables_json(const std::string& json_text);

}  // namespace uplinkd::netlink
