// Reads a named nftables set of addresses (what mwan3's `option ipset` names) as a list of prefixes.
// OpenWrt 22.03 and later (fw4) make an nft set in table `inet fw4` from every `config ipset` of
// /etc/config/firewall, and dnsmasq's nftset= adds resolved addresses to such sets at run time, so the
// set is looked up in `inet fw4` first and then in every other table. Legacy ipset (xtables) sets are
// not read.
//
// The ruleset is read through libnftables with JSON output (what `nft -j list set ...` prints),
// parsed by nft_set_parse.h; the ruleset's generation id is asked over nfnetlink directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "netlink/nft_set_parse.h"  // SetPrefix, NftSet and the JSON parsing

namespace uplinkd::netlink {

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
