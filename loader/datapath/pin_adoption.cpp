#include "datapath/pin_adoption.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/log.h"
#include "maps/uplinkd_maps.h"

namespace uplinkd::datapath {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool pinned_map_info(const std::string& path, bpf_map_info* info) {
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return false;
  uint32_t len = sizeof *info;
  *info = {};
  const bool ok = bpf_obj_get_info_by_fd(fd, info, &len) == 0;
  close(fd);
  return ok;
}

// Why the pinned map differs from what `map` would create, or "" when libbpf will reuse it.
std::string difference(const bpf_map* map, const bpf_map_info& pinned) {
  auto differs = [](const char* what, uint32_t was, uint32_t now) {
    return std::string(what) + " " + std::to_string(was) + " -> " + std::to_string(now);
  };
  if (pinned.type != static_cast<uint32_t>(bpf_map__type(map)))
    return differs("type", pinned.type, bpf_map__type(map));
  if (pinned.key_size != bpf_map__key_size(map))
    return differs("key size", pinned.key_size, bpf_map__key_size(map));
  if (pinned.value_size != bpf_map__value_size(map))
    return differs("value size", pinned.value_size, bpf_map__value_size(map));
  if (pinned.max_entries != bpf_map__max_entries(map))
    return differs("max_entries", pinned.max_entries, bpf_map__max_entries(map));
  if (pinned.map_flags != bpf_map__map_flags(map))
    return differs("flags", pinned.map_flags, bpf_map__map_flags(map));
  return "";
}

bool per_cpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

// Map types whose entries can be read and written from user space one by one.
bool copyable(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_HASH:
    case BPF_MAP_TYPE_LRU_HASH:
    case BPF_MAP_TYPE_ARRAY:
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_LPM_TRIE:
      return true;
    default:
      return false;  // ring buffers, maps of maps, program arrays: nothing to carry
  }
}

// Copies up to the new map's size of entries; returns how many were written.
size_t copy_entries(int from, int to, const bpf_map_info& old_info, const bpf_map_info& new_info) {
  const int cpus = per_cpu(old_info.type) ? std::max(libbpf_num_possible_cpus(), 1) : 1;
  // Per-CPU values are rounded up to 8 bytes per CPU by the kernel's user-space interface.
  const size_t value_bytes = per_cpu(old_info.type)
                                 ? static_cast<size_t>((old_info.value_size + 7) / 8 * 8) * cpus
                                 : old_info.value_size;
  std::vector<unsigned char> key(old_info.key_size), next(old_info.key_size), value(value_bytes);
  size_t copied = 0;
  const void* previous = nullptr;
  // Bounded by the old map's size: a map the predecessor's programs still write to can keep growing.
  for (uint32_t i = 0; i < old_info.max_entries && copied < new_info.max_entries; ++i) {
    if (bpf_map_get_next_key(from, previous, next.data()) != 0) break;
    key = next;
    previous = key.data();
    if (bpf_map_lookup_elem(from, key.data(), value.data()) != 0) continue;
    if (bpf_map_update_elem(to, key.data(), value.data(), BPF_ANY) == 0) ++copied;
  }
  return copied;
}

std::vector<std::string> set_aside_pins(const std::string& pin_dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(pin_dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (ends_with(file, kSetAsideSuffix))
      names.push_back(file.substr(0, file.size() - std::strlen(kSetAsideSuffix)));
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

PinSurvey survey_pins(const std::string& pin_dir, const std::vector<std::string>& known_maps) {
  PinSurvey survey;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(pin_dir, ec)) {
    const std::string file = entry.path().filename().string();
    const std::string base =
        ends_with(file, kSetAsideSuffix) ? file.substr(0, file.size() - std::strlen(kSetAsideSuffix)) : file;
    const bool known = std::find(known_maps.begin(), known_maps.end(), base) != known_maps.end() ||
                       base == UPLINKD_MAP_DAEMON_STATE || base == UPLINKD_MAP_TC_QDISCS ||
                       base.rfind("prog_", 0) == 0;
    if (!known) {
      survey.foreign.push_back(file);
      continue;
    }
    if (base != UPLINKD_MAP_DAEMON_STATE && base != UPLINKD_MAP_TC_QDISCS && base.rfind("prog_", 0) != 0)
      survey.any_maps = true;
  }
  std::sort(survey.foreign.begin(), survey.foreign.end());
  const int fd = bpf_obj_get((pin_dir + "/" + UPLINKD_MAP_DAEMON_STATE).c_str());
  if (fd >= 0) {
    daemon_state state{};
    const uint32_t key = 0;
    bpf_map_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.value_size == sizeof state &&
        bpf_map_lookup_elem(fd, &key, &state) == 0) {
      survey.state_present = true;
      survey.layout_version = state.layout_version;
      survey.previous_pid = state.pid;
    }
    close(fd);
  }
  // Maps without a readable daemon_state record: the layout before version 2, which had none.
  if (survey.any_maps && !survey.state_present) survey.layout_version = 1;
  return survey;
}

namespace {

std::string set_aside_path(const std::string& path) { return path + kSetAsideSuffix; }
std::string pin_path(const std::string& pin_dir, const std::string& name) { return pin_dir + "/" + name; }

// Moves a pin by pinning the object again under the new path, then unlinking the old one, so the
// object always has a pin (older kernels' bpffs has no rename). Returns 0 or an errno.
int move_pin(const std::string& from, const std::string& to) {
  const int fd = bpf_obj_get(from.c_str());
  if (fd < 0) return errno;
  const int err = bpf_obj_pin(fd, to.c_str()) == 0 ? 0 : errno;
  close(fd);
  if (err != 0) return err;
  unlink(from.c_str());
  return 0;
}

}  // namespace

std::vector<std::string> set_aside(const std::string& pin_dir, const std::vector<std::string>& names) {
  std::vector<std::string> moved;
  for (const auto& name : names) {
    const std::string path = pin_path(pin_dir, name);
    if (access(path.c_str(), F_OK) != 0) continue;
    unlink(set_aside_path(path).c_str());  // a set-aside copy an earlier start failed to drop
    if (const int err = move_pin(path, set_aside_path(path)); err == 0) {
      moved.push_back(name);
    } else {
      log::warn("setting aside " + path + ": " + std::strerror(err) + "; removing its pin instead");
      unlink(path.c_str());
    }
  }
  return moved;
}

std::vector<std::string> set_aside_incompatible(bpf_object* obj, const std::string& pin_dir) {
  std::vector<std::string> moved;
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, obj) {
    const char* pin = bpf_map__pin_path(map);
    if (pin == nullptr || !bpf_map__autocreate(map)) continue;
    bpf_map_info info{};
    if (!pinned_map_info(pin, &info)) continue;  // not pinned yet: it is created fresh anyway
    const std::string why = difference(map, info);
    if (why.empty()) continue;
    const std::string name = bpf_map__name(map);
    if (set_aside(pin_dir, {name}).empty()) continue;
    std::string entry = name;
    moved.push_back(entry.append(" (").append(why).append(")"));
  }
  return moved;
}

std::string migrate_set_aside(const std::string& pin_dir) {
  std::string kept, lost;
  auto add = [](std::string& list, const std::string& item) { list += (list.empty() ? "" : ", ") + item; };
  for (const auto& name : set_aside_pins(pin_dir)) {
    const std::string path = pin_path(pin_dir, name);
    const int from = bpf_obj_get(set_aside_path(path).c_str());
    const int to = bpf_obj_get(path.c_str());
    bpf_map_info old_info{}, new_info{};
    uint32_t len = sizeof old_info;
    const bool infos = from >= 0 && to >= 0 && bpf_obj_get_info_by_fd(from, &old_info, &len) == 0 &&
                       (len = sizeof new_info, bpf_obj_get_info_by_fd(to, &new_info, &len) == 0);
    if (infos && old_info.type == new_info.type && old_info.key_size == new_info.key_size &&
        old_info.value_size == new_info.value_size && copyable(old_info.type)) {
      add(kept, name + " (" + std::to_string(copy_entries(from, to, old_info, new_info)) + " entries)");
    } else {
      add(lost, name);
    }
    if (from >= 0) close(from);
    if (to >= 0) close(to);
  }
  if (kept.empty() && lost.empty()) return "";
  return "carried over: " + (kept.empty() ? std::string("nothing") : kept) +
         "; started empty: " + (lost.empty() ? std::string("nothing") : lost);
}

void drop_set_aside(const std::string& pin_dir) {
  for (const auto& name : set_aside_pins(pin_dir)) unlink(set_aside_path(pin_path(pin_dir, name)).c_str());
}

void restore_set_aside(const std::string& pin_dir) {
  for (const auto& name : set_aside_pins(pin_dir)) {
    const std::string path = pin_path(pin_dir, name);
    unlink(path.c_str());  // the fresh map this start created; nothing attached uses it
    if (const int err = move_pin(set_aside_path(path), path); err != 0) {
      log::error("putting back " + path + ": " + std::strerror(err));
    }
  }
}

}  // namespace uplinkd::datapath
