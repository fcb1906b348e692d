// The tries behind mwan3's `option ipset` rules: for set id k (rule_entry.set_id, 1-based) the
// classifier looks the destination up in the LPM trie stored in sets[k - 1]. SetMaps keeps each of
// those tries equal to the nft set of the same name.
//
// A refresh never leaves a window where a set looks empty: a set that changed a little is patched in
// place (additions before removals); one that changed a lot, or outgrew its trie, is built whole in a
// new trie that then replaces the old one in sets[k - 1] with one map update, which the kernel makes
// atomic for the classifier. A set that does not exist (yet) matches nothing, is warned about once,
// and is picked up by the first refresh that finds it; a set that cannot be read (wrong type, two
// tables with that name) keeps what it had and is warned about once per distinct error.
//
// Cost of a refresh: one netlink round trip for the ruleset's generation id; only when it moved
// (something was committed: `nft add element`, dnsmasq's nftset=, a firewall reload), or every
// kRereadAfter anyway (elements that time out or that rules add from the packet path do not move
// it), one `list set` through libnftables per configured set. libnftables is the slow part: about
// 0.6 s for a 20000-prefix interval set, 0.3 s for 20000 plain addresses, 1-2 ms for a small set
// on this machine (tests/netns/set_maps_test.cpp prints it); loading the trie is a syscall per
// changed key. Calling refresh() every few seconds is what dnsmasq's nftset= needs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "datapath/set_keys.h"  // lpm_keys_of: a set's prefixes as trie keys
#include "maps/uplinkd_maps.h"
#include "netlink/nft_sets.h"

namespace uplinkd::datapath {

// max_entries for a trie that holds `n` keys: room to grow (a set filled by dnsmasq grows between
// refreshes) without building a new trie, at most UPLINKD_MAX_SET_ENTRIES.
uint32_t set_trie_capacity(size_t n);

struct SetStatus {
  uint8_t id = 0;       // set id (rules' set_id)
  std::string name;     // the nft set's name
  std::string where;    // "inet fw4"; empty while not found
  size_t prefixes = 0;  // trie entries now
  std::string problem;  // why it is empty or stale; empty when in step
};

class SetMaps {
 public:
  // Reads one set by name; the default reads nft sets through libnftables in the calling thread's
  // network namespace.
  using Reader =
      std::function<netlink::SetLookup(const std::string& name, netlink::NftSet* out, std::string* error)>;
  // What says whether anything could have changed since the last read (nullopt: unknown, read).
  using Generation = std::function<std::optional<uint32_t>()>;
  static constexpr std::chrono::seconds kRereadAfter{60};

  // `sets_fd`: the classifier's `sets` map (ARRAY_OF_MAPS), not owned. Defaults: nft sets through
  // libnftables, and nft's ruleset generation id.
  explicit SetMaps(int sets_fd, Reader reader = {}, Generation generation = {});
  ~SetMaps();  // closes its trie fds; the tries stay in `sets` (the outer map holds them)
  SetMaps(const SetMaps&) = delete;
  SetMaps& operator=(const SetMaps&) = delete;

  // names[k] is set id k + 1 (policy::RuleSet::sets). A name already loaded keeps its trie, moved
  // to its new id if it has one; new names and ids past the list are empty (match nothing) until
  // refresh(), so call refresh() before publishing rules that use new ids.
  void configure(const std::vector<std::string>& names);
  // Reads every configured set and brings its trie in step, unless nothing was committed to the
  // ruleset since the last read less than kRereadAfter ago (`force` reads anyway). Returns the
  // number of sets whose trie changed.
  int refresh(bool force = false);

  [[nodiscard]] std::vector<SetStatus> status() const;
  // What the trie of set id `id` holds now, as prefixes (empty for an unknown id).
  [[nodiscard]] std::vector<netlink::SetPrefix> prefixes(uint8_t id) const;

 private:
  struct Slot {
    std::string name;
    std::string where;
    int trie_fd = -1;           // ours; -1: sets[id - 1] is empty
    uint32_t capacity = 0;      // the trie's max_entries
    std::vector<lpm_key> keys;  // what the trie holds, sorted
    // The set's prefixes those keys stand for (an IPv6 prefix over ::ffff:0:0/96 is several keys).
    std::vector<netlink::SetPrefix> prefixes;
    std::string problem;  // the last warning given, so it is given once
  };
  bool apply(uint32_t index, Slot& slot, const std::vector<lpm_key>& keys);
  bool patch_in_place(Slot& slot, const std::vector<lpm_key>& keys);
  bool replace_trie(uint32_t index, Slot& slot, const std::vector<lpm_key>& keys);
  void empty_slot(uint32_t index, Slot& slot);
  void warn_once(Slot& slot, const std::string& problem);

  bool nothing_new();

  int sets_fd_;
  Reader reader_;
  Generation generation_;
  std::optional<uint32_t> read_generation_;  // the generation of the last read; nullopt: read next time
  std::chrono::steady_clock::time_point read_at_{};
  netlink::NftSetReader nft_;
  std::vector<Slot> slots_;  // slots_[k]: set id k + 1
};

}  // namespace uplinkd::datapath
