// Which rule a reload's new rule list calls what the old list called rule k. The classifier keys
// per-rule state by rule id (index + 1): the `rule_counters` array, `sticky` entries and each flow's
// `rule_id`. A reload that inserts, removes or reorders rules would otherwise leave that state with
// whatever rule now sits at the old position: another rule's counters, and a sticky uplink reused by
// a rule that never chose it. Rules are the same rule when they have the same section name (UCI
// names anonymous sections @rule[N], so those keep mwan3's positional identity).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace uplinkd::policy {

// result[k] for old rule id k (1..old_names.size(); result[0] is 0) is the new rule id of the rule
// with the same name, or 0 when the new list has no such rule. A name that appears twice in either
// list (impossible for UCI-named sections, but cheap to guard) maps to 0: no guessing.
std::vector<uint32_t> rule_id_remap(const std::vector<std::string>& old_names,
                                    const std::vector<std::string>& new_names);

// True when the remap changes nothing: every old id keeps its number, or there is no old rule.
bool is_identity(const std::vector<uint32_t>& remap);

}  // namespace uplinkd::policy
