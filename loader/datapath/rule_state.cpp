#include "datapath/rule_state.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <utility>

#include "datapath/datapath.h"
#include "maps/uplinkd_maps.h"
#include "policy/rule_identity.h"

namespace uplinkd::datapath {
namespace {

// An fd of a pinned map, closed on scope exit.
class PinnedMap {
 public:
  PinnedMap(const std::string& pin_dir, const char* name) : path_(pin_dir + "/" + name) {
    fd_ = bpf_obj_get(path_.c_str());
    if (fd_ < 0) throw std::runtime_error("opening " + path_ + ": " + std::strerror(errno));
  }
  ~PinnedMap() { close(fd_); }
  PinnedMap(const PinnedMap&) = delete;
  PinnedMap& operator=(const PinnedMap&) = delete;
  [[nodiscard]] int fd() const { return fd_; }

 private:
  std::string path_;
  int fd_ = -1;
};

uint32_t new_id(const std::vector<uint32_t>& remap, uint32_t old_id) {
  return old_id < remap.size() ? remap[old_id] : 0;
}

// Reads every index first, then writes: a swap of two rules must not read a value already moved.
size_t carry_counters(const std::string& pin_dir, const std::vector<uint32_t>& remap) {
  PinnedMap map(pin_dir, UPLINKD_MAP_RULE_COUNTERS);
  const int cpus = libbpf_num_possible_cpus();
  const size_t per_index = cpus > 0 ? static_cast<size_t>(cpus) : 1;
  std::vector<std::vector<rule_counter>> before(UPLINKD_MAX_RULES, std::vector<rule_counter>(per_index));
  for (uint32_t index = 0; index < UPLINKD_MAX_RULES; ++index) {
    if (bpf_map_lookup_elem(map.fd(), &index, before[index].data()) != 0) before[index].assign(per_index, {});
  }
  std::vector<std::vector<rule_counter>> after(UPLINKD_MAX_RULES, std::vector<rule_counter>(per_index));
  size_t moved = 0;
  for (uint32_t old_id = 1; old_id < remap.size() && old_id <= UPLINKD_MAX_RULES; ++old_id) {
    const uint32_t to = remap[old_id];
    if (to == 0 || to > UPLINKD_MAX_RULES) continue;
    after[to - 1] = before[old_id - 1];
    if (to != old_id) ++moved;
  }
  for (uint32_t index = 0; index < UPLINKD_MAX_RULES; ++index) {
    bpf_map_update_elem(map.fd(), &index, after[index].data(), BPF_ANY);
  }
  return moved;
}

// Every entry of a hash map, with the batch walk the datapath's own walks use.
template <typename Key, typename Value>
void visit_all(int fd, const std::function<void(const Key&, const Value&)>& visit) {
  MapCursor cursor;
  walk_hash(fd, sizeof(Key), sizeof(Value), cursor, SIZE_MAX, [&](const void* k, const void* v) {
    Key key{};
    Value value{};
    std::memcpy(&key, k, sizeof key);
    std::memcpy(&value, v, sizeof value);
    visit(key, value);
    return true;
  });
}

// Collects first, then deletes every entry that changes, then inserts the rekeyed ones: inserting
// while walking could overwrite an entry not moved yet.
void carry_sticky(const std::string& pin_dir, const std::vector<uint32_t>& remap, RuleStateCarried& out) {
  PinnedMap map(pin_dir, UPLINKD_MAP_STICKY);
  std::vector<std::pair<sticky_key, sticky_value>> changing;
  visit_all<sticky_key, sticky_value>(map.fd(), [&](const sticky_key& key, const sticky_value& value) {
    if (new_id(remap, key.rule_id) != key.rule_id) changing.emplace_back(key, value);
  });
  for (const auto& [old_key, value] : changing) bpf_map_delete_elem(map.fd(), &old_key);
  for (auto [rekeyed, value] : changing) {
    rekeyed.rule_id = new_id(remap, rekeyed.rule_id);
    if (rekeyed.rule_id == 0) {
      ++out.sticky_dropped;
      continue;
    }
    if (bpf_map_update_elem(map.fd(), &rekeyed, &value, BPF_ANY) == 0) ++out.sticky_moved;
  }
}

size_t relabel_flows(const std::string& pin_dir, const std::vector<uint32_t>& remap) {
  PinnedMap map(pin_dir, UPLINKD_MAP_FLOWS);
  std::vector<std::pair<flow_key, uint16_t>> relabel;
  visit_all<flow_key, flow_value>(map.fd(), [&](const flow_key& key, const flow_value& value) {
    const uint32_t to = new_id(remap, value.rule_id);
    if (value.rule_id != 0 && to != value.rule_id) relabel.emplace_back(key, static_cast<uint16_t>(to));
  });
  size_t done = 0;
  for (const auto& [flow, rule_id] : relabel) {
    flow_value value{};
    // Read again: the classifier may have refreshed last_seen_ns meanwhile; only rule_id changes.
    if (bpf_map_lookup_elem(map.fd(), &flow, &value) != 0) continue;
    value.rule_id = rule_id;
    if (bpf_map_update_elem(map.fd(), &flow, &value, BPF_EXIST) == 0) ++done;
  }
  return done;
}

}  // namespace

RuleStateCarried carry_rule_state(const std::string& pin_dir, const std::vector<uint32_t>& remap) {
  RuleStateCarried out;
  if (policy::is_identity(remap)) return out;
  out.counters_moved = carry_counters(pin_dir, remap);
  carry_sticky(pin_dir, remap, out);
  out.flows_relabelled = relabel_flows(pin_dir, remap);
  return out;
}

}  // namespace uplinkd::datapath
