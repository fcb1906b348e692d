// Moves the classifier's per-rule state to the rules' new ids after a reload (policy/rule_identity.h
// says which id is which): the per-CPU `rule_counters`, the `sticky` entries (source, rule) and the
// `rule_id` of every flow. Works on the maps pinned in the datapath's pin directory, so it needs no
// program loaded. State of a rule the reload removed is dropped (counters zeroed, sticky entries
// deleted, flows keep their uplink with rule_id 0); counters of a rule id that is new are zeroed,
// so a rule added later never starts with a removed rule's packets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace uplinkd::datapath {

struct RuleStateCarried {
  size_t counters_moved = 0;    // rules whose counters now live at another index
  size_t sticky_moved = 0;      // sticky entries rekeyed to their rule's new id
  size_t sticky_dropped = 0;    // sticky entries of removed rules
  size_t flows_relabelled = 0;  // flows whose rule_id changed (to the new id, or 0)
};

// remap[k]: the new id of old rule id k, 0 when the rule is gone (rule_id_remap()). Does nothing
// when the remap is the identity. Throws std::runtime_error naming the map when a pinned map cannot
// be opened; entries that vanish meanwhile (LRU eviction) are skipped.
RuleStateCarried carry_rule_state(const std::string& pin_dir, const std::vector<uint32_t>& remap);

}  // namespace uplinkd::datapath
