#include "datapath/set_maps.h"

#include <bpf/bpf.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace uplinkd::datapath {
namespace {

using set_keys_detail::key_equal;  // set_keys.h: the order lpm_keys_of() sorts in
using set_keys_detail::key_less;

bool same_keys(const std::vector<lpm_key>& a, const std::vector<lpm_key>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), key_equal);
}

std::vector<lpm_key> minus(const std::vector<lpm_key>& a, const std::vector<lpm_key>& b) {
  std::vector<lpm_key> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out), key_less);
  return out;
}

std::string errno_text(int err) {
  return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")";
}

// A trie shaped like the inner-map template of `sets` (bpf/lib/classifier_maps.h): the kernel
// refuses an inner map whose type, key size, value size or flags differ; max_entries may.
int create_trie(uint32_t id, uint32_t capacity) {
  bpf_map_create_opts opts{};
  opts.sz = sizeof opts;
  opts.map_flags = BPF_F_NO_PREALLOC;
  const std::string name = "ul_set_" + std::to_string(id);
  return bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, name.c_str(), sizeof(lpm_key), sizeof(uint8_t), capacity,
                        &opts);
}

int put_keys(int trie_fd, const std::vector<lpm_key>& keys) {
  const uint8_t present = 1;
  for (const auto& k : keys) {
    if (bpf_map_update_elem(trie_fd, &k, &present, BPF_ANY) != 0) return errno;
  }
  return 0;
}

// Patching costs a syscall per changed key, a new trie one per key: patch while the change is small.
bool worth_patching(size_t changes, size_t size) { return changes <= std::max<size_t>(64, size / 4); }

}  // namespace

uint32_t set_trie_capacity(size_t n) {
  const size_t wanted = std::max<size_t>(256, n + n / 2);
  return static_cast<uint32_t>(std::min<size_t>(wanted, UPLINKD_MAX_SET_ENTRIES));
}

SetMaps::SetMaps(int sets_fd, Reader reader, Generation generation)
    : sets_fd_(sets_fd), reader_(std::move(reader)), generation_(std::move(generation)) {
  if (!reader_) {
    reader_ = [this](const std::string& name, netlink::NftSet* out, std::string* error) {
      return nft_.read(name, out, error);
    };
  }
  if (!generation_) generation_ = netlink::nft_ruleset_generation;
}

SetMaps::~SetMaps() {
  for (auto& s : slots_) {
    if (s.trie_fd >= 0) close(s.trie_fd);
  }
}

void SetMaps::configure(const std::vector<std::string>& names) {
  const size_t n = std::min<size_t>(names.size(), UPLINKD_MAX_SETS);
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(n, Slot{});
  read_generation_.reset();  // new names: read them at the next refresh
  for (uint32_t i = 0; i < n; ++i) {
    slots_[i].name = names[i];
    // A set that only changed id (a rule added before it) takes its trie along: no empty window.
    auto kept = std::find_if(old.begin(), old.end(),
                             [&](const Slot& s) { return s.name == names[i] && s.trie_fd >= 0; });
    if (kept == old.end()) continue;
    slots_[i] = std::move(*kept);
    kept->trie_fd = -1;
    if (static_cast<size_t>(kept - old.begin()) != i)
      bpf_map_update_elem(sets_fd_, &i, &slots_[i].trie_fd, BPF_ANY);
  }
  for (uint32_t i = 0; i < std::max(n, old.size()); ++i) {
    if (i >= n || slots_[i].trie_fd < 0) bpf_map_delete_elem(sets_fd_, &i);  // ENOENT when already empty
    if (i < old.size() && old[i].trie_fd >= 0) close(old[i].trie_fd);
  }
}

// True when the last read is recent and nothing was committed since: libnftables would only
// print the same elements again, at a cost that grows with the ruleset.
bool SetMaps::nothing_new() {
  const auto now = std::chrono::steady_clock::now();
  const std::optional<uint32_t> generation = generation_();
  if (generation && read_generation_ == generation && now - read_at_ < kRereadAfter) return true;
  read_generation_ = generation;
  read_at_ = now;
  return false;
}

int SetMaps::refresh(bool force) {
  if (slots_.empty()) return 0;
  if (nothing_new() && !force) return 0;
  int changed = 0;
  for (uint32_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    netlink::NftSet set;
    std::string error;
    const netlink::SetLookup found = reader_(slot.name, &set, &error);
    if (found == netlink::SetLookup::kError) {
      // Keep what the trie holds: a set that was readable and now is not is more likely a passing
      // problem than an emptied set.
      warn_once(slot, "ipset " + slot.name + ": " + error +
                          (slot.keys.empty() ? std::string("; its rule matches nothing")
                                             : "; the rule keeps its last " +
                                                   std::to_string(slot.keys.size()) + " entries"));
      continue;
    }
    std::vector<lpm_key> keys;
    std::vector<netlink::SetPrefix> prefixes;
    if (found == netlink::SetLookup::kMissing) {
      warn_once(slot, "ipset " + slot.name +
                          ": no nft set of that name in any table yet; its rule matches "
                          "nothing until one appears (legacy ipset sets are not read)");
      slot.where.clear();
    } else {
      keys = lpm_keys_of(set.prefixes);
      if (keys.size() > UPLINKD_MAX_SET_ENTRIES) {
        // An IPv6 prefix over ::ffff:0:0/96 becomes up to 96 trie entries, so both counts are named.
        warn_once(slot, "ipset " + slot.name + " (" + set.where() + ") has " +
                            std::to_string(set.prefixes.size()) + " prefixes, " +
                            std::to_string(keys.size()) + " trie entries; only the first " +
                            std::to_string(UPLINKD_MAX_SET_ENTRIES) + " entries are used");
        keys.resize(UPLINKD_MAX_SET_ENTRIES);
      } else if (!slot.problem.empty()) {
        log::info("ipset " + slot.name + ": found in table " + set.where() + " with " +
                  std::to_string(set.prefixes.size()) + " prefixes");
        slot.problem.clear();
      }
      slot.where = set.where();
      prefixes = std::move(set.prefixes);
    }
    if (apply(i, slot, keys)) ++changed;
    if (same_keys(slot.keys, keys)) slot.prefixes = std::move(prefixes);  // else the trie kept the old
  }
  return changed;
}

std::vector<SetStatus> SetMaps::status() const {
  std::vector<SetStatus> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    out.push_back(SetStatus{static_cast<uint8_t>(i + 1), s.name, s.where, s.prefixes.size(), s.problem});
  }
  return out;
}

// Returns true when the classifier's view changed.
bool SetMaps::apply(uint32_t index, Slot& slot, const std::vector<lpm_key>& keys) {
  if (same_keys(slot.keys, keys) && (slot.trie_fd >= 0 || keys.empty())) return false;
  if (keys.empty()) {
    empty_slot(index, slot);  // an empty slot matches nothing, as an empty set does
    return true;
  }
  if (patch_in_place(slot, keys)) return true;
  return replace_trie(index, slot, keys);
}

bool SetMaps::patch_in_place(Slot& slot, const std::vector<lpm_key>& keys) {
  if (slot.trie_fd < 0 || keys.size() > slot.capacity) return false;
  const std::vector<lpm_key> added = minus(keys, slot.keys);
  const std::vector<lpm_key> removed = minus(slot.keys, keys);
  if (!worth_patching(added.size() + removed.size(), keys.size())) return false;
  // Additions first: an address in both the old and the new set never misses.
  if (put_keys(slot.trie_fd, added) != 0) return false;  // a new trie is built instead
  for (const auto& k : removed) bpf_map_delete_elem(slot.trie_fd, &k);
  slot.keys = keys;
  return true;
}

bool SetMaps::replace_trie(uint32_t index, Slot& slot, const std::vector<lpm_key>& keys) {
  const uint32_t capacity = set_trie_capacity(keys.size());
  const int fd = create_trie(index + 1, capacity);
  int err = fd < 0 ? errno : put_keys(fd, keys);
  // One update of sets[index] swaps the whole trie for the classifier.
  if (err == 0 && bpf_map_update_elem(sets_fd_, &index, &fd, BPF_ANY) != 0) err = errno;
  if (err != 0) {
    if (fd >= 0) close(fd);
    warn_once(slot, "ipset " + slot.name + ": cannot load " + std::to_string(keys.size()) +
                        " prefixes into a BPF trie: " + errno_text(err) + "; the rule keeps its last " +
                        std::to_string(slot.keys.size()));
    return false;
  }
  if (slot.trie_fd >= 0) close(slot.trie_fd);
  slot.trie_fd = fd;
  slot.capacity = capacity;
  slot.keys = keys;
  return true;
}

void SetMaps::empty_slot(uint32_t index, Slot& slot) {
  bpf_map_delete_elem(sets_fd_, &index);  // ENOENT when already empty
  if (slot.trie_fd >= 0) close(slot.trie_fd);
  slot.trie_fd = -1;
  slot.capacity = 0;
  slot.keys.clear();
  slot.prefixes.clear();
}

void SetMaps::warn_once(Slot& slot, const std::string& problem) {
  if (slot.problem == problem) return;
  slot.problem = problem;
  log::warn(problem);
}

std::vector<netlink::SetPrefix> SetMaps::prefixes(uint8_t id) const {
  if (id == 0 || id > slots_.size()) return {};
  return slots_[id - 1].prefixes;
}

}  // namespace uplinkd::datapath
