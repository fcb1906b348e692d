#include "policy/rule_identity.h"

#include <map>

namespace uplinkd::policy {
namespace {

// name -> 1-based position, with names that occur more than once left out.
std::map<std::string, uint32_t> unique_positions(const std::vector<std::string>& names) {
  std::map<std::string, uint32_t> position;
  std::map<std::string, int> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    if (++seen[names[i]] == 1) position[names[i]] = static_cast<uint32_t>(i + 1);
  }
  for (const auto& [name, count] : seen) {
    if (count > 1) position.erase(name);
  }
  return position;
}

}  // namespace

std::vector<uint32_t> rule_id_remap(const std::vector<std::string>& old_names,
                                    const std::vector<std::string>& new_names) {
  const std::map<std::string, uint32_t> old_position = unique_positions(old_names);
  const std::map<std::string, uint32_t> new_position = unique_positions(new_names);
  std::vector<uint32_t> remap(old_names.size() + 1, 0);
  for (const auto& [name, old_id] : old_position) {
    auto it = new_position.find(name);
    if (it != new_position.end()) remap[old_id] = it->second;
  }
  return remap;
}

bool is_identity(const std::vector<uint32_t>& remap) {
  for (size_t k = 1; k < remap.size(); ++k) {
    if (remap[k] != k) return false;
  }
  return true;
}

}  // namespace uplinkd::policy
