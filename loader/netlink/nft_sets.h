// Reads a named nftables set of addresses (what mwan3's `option ipset` names) as a list of prefixes.
// OpenWrt 22.03 and later (fw4) make an nft set in table `inet fw4` from every `config ipset` of
// /etc/config/firewall, and dnsmasq's nftset= adds resolved addresses to such sets at run time, so the
// set is looked up in `inet fw4` first and then in every other table. Legacy ipset (xtables) sets are
// not read.
//
// The ruleset is read through libnftables with JSON output (what `nft -j list set ...` prints),
// parsed with nlohmann::json; the ruleset's generation id is asked over nfnetlink directly.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
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
// refused: only sets of addresses can be matched against a destination).
std::string parse_nft_set_json(const std::string& json_text, NftSet* out);

// The tables of `list tables` JSON, as (family, name) pairs, in the kernel's order.
std::vector<std::pair<std::string, std::string>> parse_nft_tables_json(const std::string& json_text);

// The nftables ruleset's generation id in the calling thread's namespace: every committed change
// (a table, a rule, an element added by `nft` or dnsmasq) increments it; elements that a rule adds
// from the packet path or that time out do not. nullopt when nfnetlink cannot be asked. One
// netlink round trip, however big the ruleset: the cheap way to know nothing was committed.
std::optional<uint32_t> nft_ruleset_generation();

enum class SetLookup {
  kFound,    // `out` holds the set
  kMissing,  // no table has a set of that name (yet)
  kError,    // `error` says why (ambiguous name, wrong type, no libnftables, ...)
};

// Reads sets in the network namespace of the calling thread (a libnftables context is made per
// read, so a reader never holds a socket of another namespace). Not thread-safe.
class NftSetReader {
 public:
  // Finds set `name`: in table inet fw4 when it has one; else in the only table that has one
  // (two tables with that name is an error naming both). Remembers where it found it, so a
  // later read costs one `list set` while the set stays there.
  SetLookup read(const std::string& name, NftSet* out, std::string* error);

 private:
  struct Location {
    std::string name, family, table;
  };
  std::vector<Location> known_;
};

}  // namespace uplinkd::netlink
