#include "datapath/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <net/if.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <xdp/libxdp.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/log.h"
#include "datapath/kernel_features.h"
#include "datapath/pin_adoption.h"
#include "datapath/rule_table_maps.h"
#include "datapath/tc_attach.h"
#include "lan_egress.skel.h"
#include "lan_ingress.skel.h"
#include "lifecycle/teardown.h"
#include "uplink_ingress.skel.h"
#include "wan_ingress.skel.h"

namespace uplinkd::datapath {
namespace {

// Fixed tc handle and priority, so detach removes exactly our filter and nobody else's.
constexpr uint32_t kTcHandle = 0x7570;  // "up"
constexpr uint32_t kTcPriority = 0x7570;

// Every map shared between programs and the daemon: the same pin path in every object that uses it.
const char* const kPinnedMaps[] = {
    UPLINKD_MAP_UPLINKS, UPLINKD_MAP_PROBES, UPLINKD_MAP_PROBE_EVENTS, UPLINKD_MAP_COUNTERS,
    UPLINKD_MAP_ICMP_LIMITER, UPLINKD_MAP_CLASSIFIER_CFG, UPLINKD_MAP_RULES, UPLINKD_MAP_RULE_COUNTERS,
    UPLINKD_MAP_POLICIES, UPLINKD_MAP_FLOWS, UPLINKD_MAP_STICKY, UPLINKD_MAP_INBOUND, UPLINKD_MAP_CONNECTED,
    UPLINKD_MAP_SETS, UPLINKD_MAP_TCP_SEEN, UPLINKD_MAP_FLOW_COUNTERS,
    // The bit-vector classifier's tables (newer than the maps above: a daemon started over a
    // predecessor's pins without them creates them here, and PolicyRuntime fills them before any
    // LAN device gets the new classifier).
    UPLINKD_MAP_RULE_TBL_SEL, UPLINKD_MAP_RULE_TBL, UPLINKD_MAP_RULE_TBL_PORTS, UPLINKD_MAP_RULE_TBL_ADDR,
    UPLINKD_MAP_RULE_TBL_IFACE, UPLINKD_MAP_RULE_TBL_EXT};

// Maps WgSteering and MssClamp pin beside them (their own objects, loaded later): known here so a
// survey of the pin directory does not call them foreign.
const char* const kSteeringMaps[] = {UPLINKD_MAP_WG_ENDPOINTS, UPLINKD_MAP_WG_COUNTERS,
                                     UPLINKD_MAP_UPLINK_EGRESS, UPLINKD_MAP_MSS_CLAMP,
                                     UPLINKD_MAP_MSS_COUNTERS};

std::vector<std::string> known_map_names() {
  std::vector<std::string> names(std::begin(kPinnedMaps), std::end(kPinnedMaps));
  names.insert(names.end(), std::begin(kSteeringMaps), std::end(kSteeringMaps));
  names.emplace_back(UPLINKD_MAP_FRAGMENTS);
  return names;
}

std::string strip(const char* line) {
  std::string s(line);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string errno_text(int err) {
  err = err < 0 ? -err : err;
  return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")";
}

// The per-flow LRU maps take the configured size (Datapath::Datapath); the others keep the size
// compiled into the programs.
uint32_t sized_entries(const char* name, uint32_t flow_entries) {
  if (flow_entries == 0) return 0;
  if (std::strcmp(name, UPLINKD_MAP_FLOWS) == 0 || std::strcmp(name, UPLINKD_MAP_TCP_SEEN) == 0)
    return flow_entries;
  if (std::strcmp(name, UPLINKD_MAP_STICKY) == 0 || std::strcmp(name, UPLINKD_MAP_INBOUND) == 0) {
    return std::max<uint32_t>(flow_entries / 4, 1024);
  }
  return 0;
}

// Every object instance points its maps at the same pin paths: the first load creates and pins
// them, later loads (one per uplink) reuse them, so the daemon sees one set of maps.
void set_pin_paths(struct bpf_object* obj, const std::string& dir, uint32_t flow_entries) {
  for (const char* name : kPinnedMaps) {
    struct bpf_map* map = bpf_object__find_map_by_name(obj, name);
    if (map == nullptr) continue;
    bpf_map__set_pin_path(map, (dir + "/" + name).c_str());
    if (uint32_t n = sized_entries(name, flow_entries); n != 0) bpf_map__set_max_entries(map, n);
  }
}

// libbpf's warnings carry the verifier log that explains a refused program: keep those, but drop
// the harmless notes about libxdp's own ELF sections.
int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  vsnprintf(line, sizeof line, fmt, args);
  if (std::strstr(line, "skipping unrecognized data section") != nullptr) return 0;
  // The clsact qdisc is there already (a predecessor's, another tool's): expected, and handled.
  if (std::strstr(line, "Exclusivity flag on") != nullptr) return 0;
  // libxdp's dispatcher probe is refused where freplace programs are not allowed; libxdp then
  // attaches our program on its own, so those lines are information.
  const bool dispatcher_probe =
      std::strstr(line, "xdp_pass") || std::strstr(line, "xdp-dispatcher") || std::strstr(line, "ulimit -l");
  log::write(level == LIBBPF_WARN && !dispatcher_probe ? log::Level::Warn : log::Level::Info, strip(line));
  return 0;
}

// libxdp explains its fallbacks (e.g. single-program mode when the kernel or sandbox refuses its
// dispatcher); that is information, not an error, since the program still attaches.
int libxdp_print(enum libxdp_print_level level, const char* fmt, va_list args) {
  if (level == LIBXDP_DEBUG) return 0;
  char line[1024];
  vsnprintf(line, sizeof line, fmt, args);
  log::write(log::Level::Info, std::string("libxdp: ") + strip(line));
  return 0;
}

// Our tc filter on a device's ingress or egress. Creates the clsact qdisc when there is none and
// says so through `created`, so detach removes exactly what attach added.
void attach_tc(int ifindex, const std::string& device, int prog_fd, bpf_tc_attach_point point,
               bool* created) {
  const char* direction = point == BPF_TC_EGRESS ? "egress" : "ingress";
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  // created == nullptr: the caller knows the qdisc is there (no EEXIST noise in the kernel's log).
  int herr = created != nullptr ? bpf_tc_hook_create(&hook) : -EEXIST;
  if (herr != 0 && herr != -EEXIST) {
    throw DatapathError("creating the clsact qdisc on " + device + ": " + errno_text(herr) +
                        " (is the sch_ingress/clsact qdisc available in this kernel?)");
  }
  if (created != nullptr) *created = herr == 0;
  // REPLACE: a filter of a predecessor at our handle and priority is swapped for this one in one step,
  // so the hook never runs without a program (an adopted datapath); on a fresh device it just adds.
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  int terr = bpf_tc_attach(&hook, &opts);
  if (terr != 0) {
    if (created != nullptr && *created) bpf_tc_hook_destroy(&hook);
    throw DatapathError("attaching a tc program to " + device + " " + direction + ": " + errno_text(terr));
  }
}

void attach_tc_ingress(int ifindex, const std::string& device, int prog_fd, bool* created) {
  attach_tc(ifindex, device, prog_fd, BPF_TC_INGRESS, created);
}

// Removes our filter; `created`: the qdisc was ours, so it goes too (with both directions).
void detach_tc(int ifindex, bpf_tc_attach_point point, bool created) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  bpf_tc_detach(&hook, &opts);
  // Another of uplinkd's filters (WireGuard steering, MSS clamping) may still need the qdisc.
  if (created && !tc::uplinkd_filters_present(ifindex)) {
    hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
    bpf_tc_hook_destroy(&hook);
  }
}

void detach_tc_ingress(int ifindex, bool created) { detach_tc(ifindex, BPF_TC_INGRESS, created); }

bool device_exists(int ifindex) {
  std::array<char, IF_NAMESIZE> name{};
  return if_indextoname(ifindex, name.data()) != nullptr;
}

// uplink_ingress opened (not loaded) with its load-time settings; what this kernel refuses is off.
::uplink_ingress* open_uplink_ingress(uint32_t uplink_id, bool l3_only) {
  ::uplink_ingress* skel = uplink_ingress__open();
  if (skel == nullptr) throw DatapathError("opening the XDP program object: " + errno_text(errno));
  skel->rodata->uplink_id = uplink_id;
  skel->rodata->l3_only = l3_only ? 1 : 0;
  skel->rodata->tag_replies = xdp_metadata_supported() ? 1 : 0;
  return skel;
}

}  // namespace

bool is_bpffs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

struct Datapath::Attached {
  AttachOptions options;
  ::uplink_ingress* ingress = nullptr;
  struct xdp_program* xdp = nullptr;  // attached through libxdp
  int direct_fd = -1;                 // or put in a predecessor's place with XDP_FLAGS_REPLACE
  enum xdp_attach_mode mode = XDP_MODE_UNSPEC;
  ::wan_ingress* wan = nullptr;
  bool tc_hook_created = false;
  bool tc_attached = false;
};

struct Datapath::LanAttached {
  std::string device;
  bool tc_hook_created = false;
};

namespace {

// Map fds by name: the skeletons of other helpers' programs need not name every shared map.
int map_fd_by_name(struct bpf_object* obj, const char* name) {
  struct bpf_map* map = bpf_object__find_map_by_name(obj, name);
  if (map == nullptr) throw DatapathError(std::string("the LAN classifier object has no map ") + name);
  return bpf_map__fd(map);
}

}  // namespace

size_t walk_hash(int fd, size_t key_size, size_t value_size, MapCursor& cursor, size_t max_entries,
                 const std::function<bool(const void*, const void*)>& visit) {
  constexpr uint32_t kChunk = 1024;
  size_t visited = 0;
  std::vector<uint8_t> keys, values;
  uint32_t chunk = kChunk;
  while (!cursor.done && visited < max_entries) {
    keys.resize(chunk * key_size);
    values.resize(chunk * value_size);
    uint32_t count = chunk;  // a whole chunk even near max_entries: the walk overshoots by < chunk
    uint32_t out = 0;
    int err = bpf_map_lookup_batch(fd, cursor.started ? &cursor.token : nullptr, &out, keys.data(),
                                   values.data(), &count, nullptr);
    const int e = err != 0 ? errno : 0;
    if (err != 0 && e == ENOSPC && chunk < 65536) {
      chunk *= 2;  // one bucket held more entries than the chunk: ask again with room for it
      continue;
    }
    if (err != 0 && e != ENOENT) {
      cursor.done = true;  // nothing more can be read now; the next walk starts again
      break;
    }
    for (uint32_t i = 0; i < count; ++i) {
      ++visited;
      if (!visit(&keys[i * key_size], &values[i * value_size])) {
        // Stopped early: resume after this chunk next time (its rest is seen by the next walk).
        cursor.started = true;
        cursor.token = out;
        return visited;
      }
    }
    cursor.started = true;
    cursor.token = out;
    if (e == ENOENT) cursor.done = true;
  }
  return visited;
}

Datapath::Datapath(const std::string& bpffs_root, const std::string& instance, ReplyHandler on_reply,
                   uint32_t flow_entries)
    : flow_entries_(flow_entries), on_reply_(std::move(on_reply)) {
  libbpf_set_print(libbpf_print);
  libxdp_set_print(libxdp_print);
  if (!is_bpffs(bpffs_root)) {
    throw DatapathError("no BPF filesystem at " + bpffs_root + ": mount it with `mount -t bpf bpf " +
                        bpffs_root + "` (or pass --bpffs)");
  }
  pin_dir_ = bpffs_root + "/uplinkd/" + instance;
  std::error_code ec;
  std::filesystem::create_directories(pin_dir_, ec);
  if (ec) throw DatapathError("creating pin directory " + pin_dir_ + ": " + ec.message());
  try {
    survey_predecessor();
    load_maps();
    open_lifecycle_maps();
    // Entries are carried over only within one layout version (a map resized, say): across versions
    // equal sizes do not mean equal meanings, so those maps start empty, as the log line said.
    if (!fresh_layout_) {
      const std::string carried = migrate_set_aside(pin_dir_);
      if (!carried.empty()) log::warn("maps in " + pin_dir_ + " whose layout changed: " + carried);
    }
  } catch (...) {
    release_userspace();
    if (adopting_) {
      restore_set_aside(pin_dir_);  // the predecessor's programs still use those maps
    } else {
      unpin_all();
    }
    throw;
  }
}

// What an earlier daemon of this instance left: reuse its maps where their layout is this build's, set
// the others aside (pin_adoption.h), and keep its uplink records for the daemon to start from.
void Datapath::survey_predecessor() {
  const PinSurvey survey = survey_pins(pin_dir_, known_map_names());
  if (!survey.foreign.empty()) {
    std::string list;
    for (const auto& f : survey.foreign) list += (list.empty() ? "" : ", ") + f;
    log::warn("pin directory " + pin_dir_ + " holds files that are not uplinkd's (" + list +
              "): left alone, and the directory stays at a full stop");
  }
  if (!survey.any_maps) return;
  adopting_ = true;
  const std::string who =
      survey.previous_pid != 0 ? "pid " + std::to_string(survey.previous_pid) : "an earlier daemon";
  if (survey.previous_pid != 0 && kill(static_cast<pid_t>(survey.previous_pid), 0) != 0 && errno == ESRCH) {
    log::notice("instance lock of " + pin_dir_ + " was last held by pid " +
                std::to_string(survey.previous_pid) +
                ", which is no longer running: taking its datapath over");
  }
  if (survey.layout_version != UPLINKD_MAPS_LAYOUT_VERSION) {
    fresh_layout_ = true;
    const auto moved = set_aside(pin_dir_, known_map_names());
    log::warn(
        "the maps in " + pin_dir_ + " are of map layout version " + std::to_string(survey.layout_version) +
        ", this build's is " + std::to_string(UPLINKD_MAPS_LAYOUT_VERSION) + ": starting with fresh maps (" +
        std::to_string(moved.size()) +
        " set aside); lost: remembered flow decisions, sticky and inbound entries, counters and uplink "
        "states, so every uplink starts as at boot and every flow is classified again on its next packet");
    return;
  }
  // The same layout: each map is reused unless this build would create it differently.
  std::vector<std::string> moved;
  auto check = [&](bpf_object* obj) {
    if (obj == nullptr) return;
    set_pin_paths(obj, pin_dir_, flow_entries_);
    auto m = set_aside_incompatible(obj, pin_dir_);
    moved.insert(moved.end(), m.begin(), m.end());
  };
  ::uplink_ingress* xdp = uplink_ingress__open();
  check(xdp ? xdp->obj : nullptr);
  ::wan_ingress* wan = wan_ingress__open();
  check(wan ? wan->obj : nullptr);
  ::lan_ingress* lan = lan_ingress__open();
  check(lan ? lan->obj : nullptr);
  ::lan_egress* egress = lan_egress__open();
  check(egress ? egress->obj : nullptr);
  if (xdp) uplink_ingress__destroy(xdp);
  if (wan) wan_ingress__destroy(wan);
  if (lan) lan_ingress__destroy(lan);
  if (egress) lan_egress__destroy(egress);
  std::string list;
  for (const auto& m : moved) list += (list.empty() ? "" : ", ") + m;
  log::notice("adopting the datapath of " + who + " in " + pin_dir_ + ": maps reused" +
              (list.empty() ? std::string() : " except " + list) + "; programs are replaced in place");
  read_previous_records();
}

void Datapath::read_previous_records() {
  const int fd = bpf_obj_get((pin_dir_ + "/" + UPLINKD_MAP_UPLINKS).c_str());
  if (fd < 0) return;
  for (uint32_t id = 1; id < UPLINKD_MAX_UPLINKS; ++id) {
    uplink_record r{};
    if (bpf_map_lookup_elem(fd, &id, &r) == 0 && (r.state != UPLINK_STATE_UNKNOWN || r.generation != 0))
      previous_records_[id] = r;
  }
  close(fd);
}

std::optional<uplink_record> Datapath::previous_record(uint32_t uplink_id) const {
  auto it = previous_records_.find(uplink_id);
  if (it == previous_records_.end()) return std::nullopt;
  return it->second;
}

// daemon_state and tc_qdiscs are the daemon's own (no program uses them): made here when missing.
void Datapath::open_lifecycle_maps() {
  auto open_or_create = [&](const char* name, bpf_map_type type, uint32_t key, uint32_t value,
                            uint32_t entries) {
    const std::string path = pin_dir_ + "/" + name;
    int fd = bpf_obj_get(path.c_str());
    if (fd >= 0) {
      bpf_map_info info{};
      uint32_t len = sizeof info;
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.key_size == key && info.value_size == value)
        return fd;
      close(fd);
      unlink(path.c_str());
    }
    fd = bpf_map_create(type, name, key, value, entries, nullptr);
    if (fd < 0) throw DatapathError(std::string("creating map ") + name + ": " + errno_text(errno));
    if (bpf_obj_pin(fd, path.c_str()) != 0) {
      const int err = errno;
      close(fd);
      throw DatapathError("pinning " + path + ": " + errno_text(err));
    }
    return fd;
  };
  state_fd_ =
      open_or_create(UPLINKD_MAP_DAEMON_STATE, BPF_MAP_TYPE_ARRAY, sizeof(uint32_t), sizeof(daemon_state), 1);
  qdiscs_fd_ = open_or_create(UPLINKD_MAP_TC_QDISCS, BPF_MAP_TYPE_HASH, sizeof(uint32_t), sizeof(uint32_t),
                              UPLINKD_MAX_TC_QDISCS);
}

void Datapath::commit_start() {
  daemon_state state{};
  state.layout_version = UPLINKD_MAPS_LAYOUT_VERSION;
  state.pid = static_cast<uint32_t>(getpid());
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  state.started_unix_ns =
      static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
  const uint32_t key = 0;
  bpf_map_update_elem(state_fd_, &key, &state, BPF_ANY);
  drop_set_aside(pin_dir_);
  committed_ = true;
}

// A clsact qdisc uplinkd created, remembered in the pins so that whichever daemon does the full stop
// removes exactly those.
// After an attach: a qdisc this attach created is recorded; one it found counts as ours when an
// earlier daemon recorded it.
void Datapath::note_qdisc(int ifindex, bool* created) {
  if (*created) {
    remember_qdisc(ifindex, true);
  } else {
    *created = qdisc_is_ours(ifindex);
  }
}

void Datapath::remember_qdisc(int ifindex, bool created) {
  if (qdiscs_fd_ < 0) return;
  const auto key = static_cast<uint32_t>(ifindex);
  const uint32_t one = 1;
  if (created) {
    bpf_map_update_elem(qdiscs_fd_, &key, &one, BPF_ANY);
  } else {
    bpf_map_delete_elem(qdiscs_fd_, &key);
  }
}

bool Datapath::qdisc_is_ours(int ifindex) const {
  if (qdiscs_fd_ < 0) return false;
  const auto key = static_cast<uint32_t>(ifindex);
  uint32_t value = 0;
  return bpf_map_lookup_elem(qdiscs_fd_, &key, &value) == 0;
}

bool qdisc_created_by_uplinkd(const std::string& pin_dir, int ifindex, std::optional<bool> set) {
  const int fd = bpf_obj_get((pin_dir + "/" + UPLINKD_MAP_TC_QDISCS).c_str());
  if (fd < 0) return false;
  const auto key = static_cast<uint32_t>(ifindex);
  uint32_t value = 1;
  bool ours = false;
  if (!set) {
    ours = bpf_map_lookup_elem(fd, &key, &value) == 0;
  } else if (*set) {
    ours = bpf_map_update_elem(fd, &key, &value, BPF_ANY) == 0;
  } else {
    bpf_map_delete_elem(fd, &key);
  }
  close(fd);
  return ours;
}

void Datapath::load_maps() {
  master_ = open_uplink_ingress(0, false);
  if (!xdp_metadata_supported()) {
    log::warn(
        "this kernel refuses XDP metadata (bpf_xdp_adjust_meta): probe replies are still matched at XDP, "
        "but not marked with probe_reply_mark");
  }
  set_pin_paths(master_->obj, pin_dir_, flow_entries_);
  int err = uplink_ingress__load(master_);
  if (err != 0) {
    throw DatapathError("the kernel refused the XDP program uplink_ingress: " + errno_text(err) +
                        " (the verifier log above says why; uplinkd needs Linux 5.15 or later with "
                        "CONFIG_BPF_SYSCALL and CONFIG_XDP_SOCKETS-era XDP support)");
  }
  uplinks_fd_ = bpf_map__fd(master_->maps.uplinks);
  probes_fd_ = bpf_map__fd(master_->maps.probes);
  counters_fd_ = bpf_map__fd(master_->maps.uplink_counters);
  events_fd_ = bpf_map__fd(master_->maps.probe_events);
  limiter_fd_ = bpf_map__fd(master_->maps.icmp_limiter);
  // The classifier's maps come with its first loaded instance; it also proves the kernel takes it.
  ::lan_ingress* lan = lan_object(false);
  cfg_fd_ = bpf_map__fd(lan->maps.classifier_cfg);
  rules_fd_ = bpf_map__fd(lan->maps.rules);
  rule_tbl_sel_fd_ = bpf_map__fd(lan->maps.rule_tbl_sel);
  rule_tbl_fd_ = bpf_map__fd(lan->maps.rule_tbl);
  rule_tbl_ports_fd_ = bpf_map__fd(lan->maps.rule_tbl_ports);
  rule_tbl_addr_fd_ = bpf_map__fd(lan->maps.rule_tbl_addr);
  rule_tbl_iface_fd_ = bpf_map__fd(lan->maps.rule_tbl_iface);
  rule_tbl_ext_fd_ = bpf_map__fd(lan->maps.rule_tbl_ext);
  rule_counters_fd_ = bpf_map__fd(lan->maps.rule_counters);
  policies_fd_ = bpf_map__fd(lan->maps.policies);
  connected_fd_ = bpf_map__fd(lan->maps.connected);
  flows_fd_ = map_fd_by_name(lan->obj, UPLINKD_MAP_FLOWS);
  tcp_seen_fd_ = map_fd_by_name(lan->obj, UPLINKD_MAP_TCP_SEEN);
  flow_counters_fd_ = map_fd_by_name(lan->obj, UPLINKD_MAP_FLOW_COUNTERS);
  ring_ = ring_buffer__new(
      events_fd_,
      [](void* ctx, void* data, size_t size) -> int {
        auto* self = static_cast<Datapath*>(ctx);
        if (size >= sizeof(probe_reply_event) && self->on_reply_) {
          probe_reply_event event{};
          std::memcpy(&event, data, sizeof event);
          self->on_reply_(event);
        }
        return 0;
      },
      this, nullptr);
  if (ring_ == nullptr) throw DatapathError("opening the probe ring buffer: " + errno_text(errno));
  // A previous daemon of this instance that crashed may have left outstanding probes behind.
  clear_probes();
}

// Frees this process's handles without touching what is attached or pinned: tc filters and XDP
// attachments made without a bpf_link hold their own references to the programs.
void Datapath::release_userspace() {
  for (auto& [id, a] : uplinks_) {
    if (a->wan != nullptr) wan_ingress__destroy(a->wan);
    if (a->xdp != nullptr) xdp_program__close(a->xdp);
    if (a->ingress != nullptr) uplink_ingress__destroy(a->ingress);
  }
  uplinks_.clear();
  lan_.clear();
  if (lan_eth_ != nullptr) lan_ingress__destroy(lan_eth_);
  if (lan_l3_ != nullptr) lan_ingress__destroy(lan_l3_);
  if (lan_egress_eth_ != nullptr) lan_egress__destroy(lan_egress_eth_);
  if (lan_egress_l3_ != nullptr) lan_egress__destroy(lan_egress_l3_);
  lan_eth_ = lan_l3_ = nullptr;
  lan_egress_eth_ = lan_egress_l3_ = nullptr;
  if (ring_ != nullptr) ring_buffer__free(ring_);
  ring_ = nullptr;
  if (master_ != nullptr) uplink_ingress__destroy(master_);
  master_ = nullptr;
  for (int* fd : {&state_fd_, &qdiscs_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

Datapath::~Datapath() {
  if (lifecycle::keep_kernel_state()) {
    // A restart, an upgrade or a failed start: the datapath keeps forwarding for the next daemon.
    if (!committed_) restore_set_aside(pin_dir_);
    release_userspace();
    return;
  }
  std::vector<uint32_t> ids;
  for (const auto& [id, _] : uplinks_) ids.push_back(id);
  for (uint32_t id : ids) detach(id);
  std::vector<int> lans;
  for (const auto& [ifindex, _] : lan_) lans.push_back(ifindex);
  for (int ifindex : lans) detach_lan(ifindex);
  unpin_all();
  release_userspace();
}

void Datapath::unpin_all() {
  for (const auto& name : known_map_names()) {
    unlink((pin_dir_ + "/" + name).c_str());
    unlink((pin_dir_ + "/" + name + kSetAsideSuffix).c_str());
  }
  unlink((pin_dir_ + "/" + UPLINKD_MAP_DAEMON_STATE).c_str());
  unlink((pin_dir_ + "/" + UPLINKD_MAP_TC_QDISCS).c_str());
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir_, ec)) {
    // Program pins are ours too (prog_*); anything else is left for its owner.
    if (entry.path().filename().string().rfind("prog_", 0) == 0) unlink(entry.path().c_str());
  }
  rmdir(pin_dir_.c_str());
  rmdir(std::filesystem::path(pin_dir_).parent_path().c_str());  // only if empty
}

namespace {

// libxdp loads a program as an extension (freplace) of its multi-program dispatcher unless
// LIBXDP_SKIP_DISPATCHER is set when attaching. Kernels with the changes_pkt_data check for
// extensions (6.12.y, 6.13+) refuse that for a program that moves packet data (bpf_xdp_adjust_meta
// here) with EINVAL, and libxdp 1.3 falls back to attaching the program alone only on EOPNOTSUPP.
bool dispatcher_skipped() { return std::getenv("LIBXDP_SKIP_DISPATCHER") != nullptr; }

}  // namespace

namespace {

constexpr const char* kXdpProgramName = "uplink_ingress";

uint32_t xdp_mode_flags(enum xdp_attach_mode mode) {
  return mode == XDP_MODE_NATIVE ? XDP_FLAGS_DRV_MODE
         : mode == XDP_MODE_HW   ? XDP_FLAGS_HW_MODE
                                 : XDP_FLAGS_SKB_MODE;
}

}  // namespace

// What holds the device's XDP hook now: nothing, a predecessor's uplink_ingress (alone, or as one of
// libxdp's dispatcher's programs), or someone else's program.
// True when one of this instance's program pins (prog_*) is program `prog_id`: only those are a
// predecessor's to replace; a program of the same name elsewhere is another instance's.
bool Datapath::pinned_here(uint32_t prog_id) const {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir_, ec)) {
    if (entry.path().filename().string().rfind("prog_", 0) != 0) continue;
    const int fd = bpf_obj_get(entry.path().c_str());
    if (fd < 0) continue;
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    const bool same = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.id == prog_id;
    close(fd);
    if (same) return true;
  }
  return false;
}

Datapath::XdpHolder Datapath::xdp_holder(int ifindex) const {
  XdpHolder holder;
  struct xdp_multiprog* mp = xdp_multiprog__get_from_ifindex(ifindex);
  if (libxdp_get_error(mp) != 0 || mp == nullptr) return holder;
  holder.mode = xdp_multiprog__attach_mode(mp);
  if (xdp_multiprog__is_legacy(mp)) {
    struct xdp_program* main = xdp_multiprog__main_prog(mp);
    if (main != nullptr) {
      holder.prog_id = xdp_program__id(main);
      const bool ours =
          std::strcmp(xdp_program__name(main), kXdpProgramName) == 0 && pinned_here(holder.prog_id);
      holder.kind = ours ? XdpHolder::Ours : XdpHolder::Foreign;
    }
  } else {
    holder.kind = XdpHolder::Foreign;  // another user's programs in the dispatcher: ours joins them
    for (struct xdp_program* p = xdp_multiprog__next_prog(nullptr, mp); p != nullptr;
         p = xdp_multiprog__next_prog(p, mp)) {
      if (std::strcmp(xdp_program__name(p), kXdpProgramName) == 0 && pinned_here(xdp_program__id(p))) {
        holder.kind = XdpHolder::OursInDispatcher;
        holder.prog_id = xdp_program__id(p);
        break;
      }
    }
  }
  xdp_multiprog__close(mp);
  return holder;
}

// Puts a freshly loaded uplink_ingress in place of the predecessor's in one step (XDP_FLAGS_REPLACE with
// the expected old program): the hook never runs empty, and a program that is not the one we found is
// never displaced. Returns 0 or a negative errno.
int Datapath::replace_xdp(Attached& a, const AttachOptions& o, const XdpHolder& holder) {
  a.ingress = open_uplink_ingress(o.uplink_id, o.l3_only);
  set_pin_paths(a.ingress->obj, pin_dir_, flow_entries_);
  int err = uplink_ingress__load(a.ingress);
  if (err != 0) {
    uplink_ingress__destroy(a.ingress);
    a.ingress = nullptr;
    throw DatapathError("the kernel refused the XDP program uplink_ingress: " + errno_text(err));
  }
  const int old_fd = bpf_prog_get_fd_by_id(holder.prog_id);
  LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = old_fd);
  const int fd = bpf_program__fd(a.ingress->progs.uplink_ingress);
  err = old_fd < 0 ? -errno
                   : bpf_xdp_attach(o.ifindex, fd, xdp_mode_flags(holder.mode) | XDP_FLAGS_REPLACE, &opts);
  if (old_fd >= 0) close(old_fd);
  if (err != 0) {
    uplink_ingress__destroy(a.ingress);
    a.ingress = nullptr;
    return err;
  }
  a.direct_fd = fd;
  a.mode = holder.mode;
  return 0;
}

// Opens the uplink's XDP program and attaches it: native mode where the driver has it, generic
// (skb) mode for VLAN, bridge, PPP and the like. Returns 0 or libxdp's negative errno; on failure
// nothing of it stays open.
int Datapath::open_and_attach_xdp(Attached& a, const AttachOptions& o) {
  a.ingress = open_uplink_ingress(o.uplink_id, o.l3_only);
  set_pin_paths(a.ingress->obj, pin_dir_, flow_entries_);

  a.xdp = xdp_program__from_bpf_obj(a.ingress->obj, "xdp");
  long err = libxdp_get_error(a.xdp);
  if (err != 0) {
    a.xdp = nullptr;
    uplink_ingress__destroy(a.ingress);
    a.ingress = nullptr;
    throw DatapathError("preparing XDP for " + o.device + ": " + errno_text(static_cast<int>(err)));
  }
  int result = xdp_program__attach(a.xdp, o.ifindex, XDP_MODE_NATIVE, 0);
  a.mode = XDP_MODE_NATIVE;
  if (result != 0) {
    result = xdp_program__attach(a.xdp, o.ifindex, XDP_MODE_SKB, 0);
    a.mode = XDP_MODE_SKB;
  }
  if (result != 0) {
    xdp_program__close(a.xdp);
    a.xdp = nullptr;
    uplink_ingress__destroy(a.ingress);
    a.ingress = nullptr;
  }
  return result;
}

void Datapath::attach(const AttachOptions& o) {
  if (attached(o.uplink_id)) detach(o.uplink_id);
  auto a = std::make_unique<Attached>();
  a->options = o;
  const XdpHolder holder = xdp_holder(o.ifindex);
  int result = 0;
  // Only a predecessor of this instance is replaced: a program of the same name on a device this start
  // did not inherit is another instance's, refused below like any other holder of the hook.
  if (holder.kind == XdpHolder::Ours && adopting_) {
    result = replace_xdp(*a, o, holder);
    if (result == 0) log::info("XDP on " + o.device + ": the predecessor's program replaced in place");
  } else {
    result = open_and_attach_xdp(*a, o);
  }
  if (result == -EINVAL && !dispatcher_skipped()) {
    // A failed load leaves the object unusable: open it again, attached alone this time (and for
    // every later attach of this process: the kernel's answer would be the same).
    log::info("XDP on " + o.device + ": the kernel refused uplinkd's program inside libxdp's dispatcher " +
              "(EINVAL: it changes packet data, the dispatcher's slot does not); attaching it alone");
    setenv("LIBXDP_SKIP_DISPATCHER", "1", 1);
    result = open_and_attach_xdp(*a, o);
  }
  if (result == 0 && holder.kind == XdpHolder::OursInDispatcher) {
    // Ours joined the dispatcher beside the predecessor's (make before break); now the old one leaves.
    struct xdp_program* old = xdp_program__from_id(holder.prog_id);
    if (libxdp_get_error(old) == 0 && old != nullptr) {
      xdp_program__detach(old, o.ifindex, holder.mode, 0);
      xdp_program__close(old);
    }
  }
  if (result != 0) {
    char buf[256] = {};
    libxdp_strerror(result, buf, sizeof buf);
    throw DatapathError("attaching XDP to " + o.device + " (ifindex " + std::to_string(o.ifindex) +
                        "): " + buf + " (errno " + std::to_string(-result) +
                        "); check that the device exists, that no other XDP program holds it in "
                        "exclusive mode (`ip link show " +
                        o.device + "`), and that bpffs is mounted");
  }
  std::string prog_pin = pin_dir_ + "/prog_xdp_" + std::to_string(o.uplink_id);
  unlink(prog_pin.c_str());
  bpf_obj_pin(a->xdp != nullptr ? xdp_program__fd(a->xdp) : a->direct_fd, prog_pin.c_str());

  Attached* raw = a.get();
  uplinks_[o.uplink_id] = std::move(a);
  try {
    // wan_ingress: records inbound connections (so their replies leave by this uplink) and turns
    // the XDP tag of a matched probe reply into a mark, when a reply mark is configured.
    raw->wan = wan_ingress__open();
    if (raw->wan == nullptr) throw DatapathError("opening the uplink tc program: " + errno_text(errno));
    raw->wan->rodata->uplink_id = o.uplink_id;
    raw->wan->rodata->reply_mark = o.reply_mark;
    raw->wan->rodata->reply_mark_mask = o.reply_mark != 0 ? o.reply_mark_mask : 0;
    raw->wan->rodata->l3_only = o.l3_only ? 1 : 0;
    set_pin_paths(raw->wan->obj, pin_dir_, flow_entries_);
    int lerr = wan_ingress__load(raw->wan);
    if (lerr != 0) throw DatapathError("the kernel refused the tc program wan_ingress: " + errno_text(lerr));
    const int fd = bpf_program__fd(raw->wan->progs.wan_ingress);
    attach_tc_ingress(o.ifindex, o.device, fd, &raw->tc_hook_created);
    note_qdisc(o.ifindex, &raw->tc_hook_created);
    raw->tc_attached = true;
    std::string tc_pin = pin_dir_ + "/prog_tc_" + std::to_string(o.uplink_id);
    unlink(tc_pin.c_str());
    bpf_obj_pin(fd, tc_pin.c_str());
  } catch (...) {
    detach(o.uplink_id);
    throw;
  }
}

void Datapath::detach(uint32_t uplink_id) {
  auto it = uplinks_.find(uplink_id);
  if (it == uplinks_.end()) return;
  Attached& a = *it->second;
  const int ifindex = a.options.ifindex;
  // The device may be gone already: then the kernel dropped the attachments with it.
  const bool device_alive = device_exists(ifindex);
  if (a.tc_attached && device_alive) detach_tc_ingress(ifindex, a.tc_hook_created);
  if (a.tc_hook_created) remember_qdisc(ifindex, false);
  if (a.wan != nullptr) wan_ingress__destroy(a.wan);
  if (a.xdp != nullptr) {
    if (device_alive) xdp_program__detach(a.xdp, ifindex, a.mode, 0);
    xdp_program__close(a.xdp);
  }
  if (a.direct_fd >= 0 && device_alive) {
    // Only while it is still ours: someone may have replaced it since.
    LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = a.direct_fd);
    bpf_xdp_detach(ifindex, xdp_mode_flags(a.mode) | XDP_FLAGS_REPLACE, &opts);
  }
  if (a.ingress != nullptr) uplink_ingress__destroy(a.ingress);
  unlink((pin_dir_ + "/prog_xdp_" + std::to_string(uplink_id)).c_str());
  unlink((pin_dir_ + "/prog_tc_" + std::to_string(uplink_id)).c_str());
  uplinks_.erase(it);
}

::lan_ingress* Datapath::lan_object(bool l3_only) {
  ::lan_ingress*& obj = l3_only ? lan_l3_ : lan_eth_;
  if (obj != nullptr) return obj;
  obj = lan_ingress__open();
  if (obj == nullptr) throw DatapathError("opening the LAN classifier object: " + errno_text(errno));
  obj->rodata->l3_only = l3_only ? 1 : 0;
  set_pin_paths(obj->obj, pin_dir_, flow_entries_);
  int err = lan_ingress__load(obj);
  if (err != 0) {
    lan_ingress__destroy(obj);
    obj = nullptr;
    throw DatapathError("the kernel refused the tc program lan_ingress: " + errno_text(err) +
                        " (the verifier log above says why)");
  }
  return obj;
}

::lan_egress* Datapath::lan_egress_object(bool l3_only) {
  ::lan_egress*& obj = l3_only ? lan_egress_l3_ : lan_egress_eth_;
  if (obj != nullptr) return obj;
  obj = lan_egress__open();
  if (obj == nullptr) throw DatapathError("opening the LAN egress object: " + errno_text(errno));
  obj->rodata->l3_only = l3_only ? 1 : 0;
  set_pin_paths(obj->obj, pin_dir_, flow_entries_);  // flows and tcp_seen: the classifier's own instances
  int err = lan_egress__load(obj);
  if (err != 0) {
    lan_egress__destroy(obj);
    obj = nullptr;
    throw DatapathError("the kernel refused the tc program lan_egress: " + errno_text(err) +
                        " (the verifier log above says why)");
  }
  return obj;
}

void Datapath::attach_lan(int ifindex, const std::string& device, bool l3_only) {
  if (lan_attached(ifindex)) return;
  ::lan_ingress* obj = lan_object(l3_only);
  ::lan_egress* egress = lan_egress_object(l3_only);
  auto a = std::make_unique<LanAttached>();
  a->device = device;
  attach_tc_ingress(ifindex, device, bpf_program__fd(obj->progs.lan_ingress), &a->tc_hook_created);
  note_qdisc(ifindex, &a->tc_hook_created);
  try {
    // The clsact qdisc exists by now: the ingress attach made it or found it.
    attach_tc(ifindex, device, bpf_program__fd(egress->progs.lan_egress), BPF_TC_EGRESS, nullptr);
  } catch (...) {
    detach_tc_ingress(ifindex, a->tc_hook_created);
    if (a->tc_hook_created) remember_qdisc(ifindex, false);
    throw;
  }
  lan_[ifindex] = std::move(a);
}

void Datapath::detach_lan(int ifindex) {
  auto it = lan_.find(ifindex);
  if (it == lan_.end()) return;
  if (device_exists(ifindex)) {
    detach_tc(ifindex, BPF_TC_EGRESS, false);
    detach_tc_ingress(ifindex, it->second->tc_hook_created);
  }
  if (it->second->tc_hook_created) remember_qdisc(ifindex, false);
  lan_.erase(it);
}

size_t Datapath::walk_flows(MapCursor& cursor, size_t max_entries, const FlowVisitor& visit) const {
  return walk_hash(flows_fd_, sizeof(flow_key), sizeof(flow_value), cursor, max_entries,
                   [&](const void* k, const void* v) {
                     flow_key key;
                     flow_value value;
                     std::memcpy(&key, k, sizeof key);
                     std::memcpy(&value, v, sizeof value);
                     return visit(key, value);
                   });
}

size_t Datapath::walk_tcp_seen(MapCursor& cursor, size_t max_entries, const TcpSeenVisitor& visit) const {
  return walk_hash(tcp_seen_fd_, sizeof(flow_key), sizeof(tcp_seen), cursor, max_entries,
                   [&](const void* k, const void* v) {
                     flow_key key;
                     tcp_seen value;
                     std::memcpy(&key, k, sizeof key);
                     std::memcpy(&value, v, sizeof value);
                     return visit(key, value);
                   });
}

size_t Datapath::for_each_flow(const FlowVisitor& visit) const {
  MapCursor cursor;
  // Bounded by the map's size (plus what arrives during the walk): its size as created, which
  // option flow_table_size may set above UPLINKD_MAX_FLOWS.
  const size_t entries = std::max<size_t>(flow_entries_, UPLINKD_MAX_FLOWS);
  return walk_flows(cursor, 2 * entries, visit);
}

std::optional<flow_value> Datapath::lookup_flow(const flow_key& key) const {
  flow_value value{};
  if (bpf_map_lookup_elem(flows_fd_, &key, &value) != 0) return std::nullopt;
  return value;
}

bool Datapath::delete_flow(const flow_key& key) { return bpf_map_delete_elem(flows_fd_, &key) == 0; }

bool Datapath::set_flow_generation(const flow_key& key, uint32_t generation) {
  flow_value value{};
  if (bpf_map_lookup_elem(flows_fd_, &key, &value) != 0) return false;
  value.generation = generation;
  // BPF_EXIST: a flow the LRU evicted meanwhile is not brought back.
  return bpf_map_update_elem(flows_fd_, &key, &value, BPF_EXIST) == 0;
}

std::optional<tcp_seen> Datapath::lookup_tcp_seen(const flow_key& key) const {
  tcp_seen value{};
  if (bpf_map_lookup_elem(tcp_seen_fd_, &key, &value) != 0) return std::nullopt;
  return value;
}

bool Datapath::delete_tcp_seen(const flow_key& key) { return bpf_map_delete_elem(tcp_seen_fd_, &key) == 0; }

FlowCounters Datapath::flow_counters() const {
  const int cpus = libbpf_num_possible_cpus();
  std::vector<::flow_counters> per_cpu(cpus > 0 ? cpus : 1);
  FlowCounters sum;
  const uint32_t key = 0;
  if (bpf_map_lookup_elem(flow_counters_fd_, &key, per_cpu.data()) != 0) return sum;
  for (const auto& c : per_cpu) {
    sum.created += c.created;
    sum.stale_tcp_reset += c.stale_tcp_reset;
    sum.stale_tcp_refused += c.stale_tcp_refused;
    sum.reclassified += c.reclassified;
    sum.idle_reclassified += c.idle_reclassified;
  }
  return sum;
}

void Datapath::write_classifier_cfg(const classifier_cfg& cfg) {
  const uint32_t key = 0;
  bpf_map_update_elem(cfg_fd_, &key, &cfg, BPF_ANY);
}

void Datapath::write_rule(uint32_t index, const rule_entry& rule) {
  bpf_map_update_elem(rules_fd_, &index, &rule, BPF_ANY);
}

void Datapath::write_rules(const std::vector<rule_entry>& rules, const policy::RuleTables& tables) {
  const RuleTableFds fds{rule_tbl_sel_fd_,  rule_tbl_fd_,       rule_tbl_ports_fd_,
                         rule_tbl_addr_fd_, rule_tbl_iface_fd_, rule_tbl_ext_fd_};
  if (!rule_writer_) rule_writer_ = std::make_unique<RuleTableWriter>();
  const int set = rule_writer_->write_inactive(fds, tables);
  if (set < 0) {
    throw DatapathError("writing the classifier's rule tables: " + errno_text(set) +
                        " (the previous rules stay in force)");
  }
  for (uint32_t i = 0; i < rules.size(); ++i) write_rule(i, rules[i]);
  if (int rc = datapath::flip_rule_tables(fds, static_cast<uint32_t>(set)); rc != 0) {
    throw DatapathError("switching the classifier to the new rule tables: " + errno_text(rc));
  }
}

void Datapath::write_policy(uint32_t slot, const policy_entry& entry) {
  bpf_map_update_elem(policies_fd_, &slot, &entry, BPF_ANY);
}

void Datapath::set_connected(const std::vector<lpm_key>& prefixes) {
  auto same = [](const lpm_key& a, const lpm_key& b) { return std::memcmp(&a, &b, sizeof a) == 0; };
  const uint8_t present = 1;
  // Add before removing, so a prefix that only changed length never leaves a gap.
  for (const auto& p : prefixes) bpf_map_update_elem(connected_fd_, &p, &present, BPF_ANY);
  for (const auto& old : connected_) {
    bool kept = false;
    for (const auto& p : prefixes) kept = kept || same(old, p);
    if (!kept) bpf_map_delete_elem(connected_fd_, &old);
  }
  connected_ = prefixes;
}

rule_counter Datapath::rule_counters(uint32_t index) const {
  const int cpus = libbpf_num_possible_cpus();
  std::vector<rule_counter> per_cpu(cpus > 0 ? cpus : 1);
  rule_counter sum{};
  if (bpf_map_lookup_elem(rule_counters_fd_, &index, per_cpu.data()) != 0) return sum;
  for (const auto& c : per_cpu) {
    sum.packets += c.packets;
    sum.bytes += c.bytes;
  }
  return sum;
}

std::string Datapath::attach_mode(uint32_t uplink_id) const {
  auto it = uplinks_.find(uplink_id);
  if (it == uplinks_.end()) return "none";
  return it->second->mode == XDP_MODE_NATIVE ? "native" : "generic";
}

void Datapath::write_uplink(uint32_t uplink_id, const uplink_record& record) {
  bpf_map_update_elem(uplinks_fd_, &uplink_id, &record, BPF_ANY);
}

int Datapath::insert_probe(const probe_key& key, const probe_value& value) {
  int err = bpf_map_update_elem(probes_fd_, &key, &value, BPF_ANY);
  return err != 0 ? -errno : 0;
}

bool Datapath::remove_probe(const probe_key& key) { return bpf_map_delete_elem(probes_fd_, &key) == 0; }

void Datapath::clear_probes() {
  probe_key key{};
  probe_key next{};
  // Bounded: the map holds at most UPLINKD_MAX_PROBES entries.
  for (int i = 0; i < UPLINKD_MAX_PROBES + 1 && bpf_map_get_next_key(probes_fd_, nullptr, &next) == 0; ++i) {
    key = next;
    bpf_map_delete_elem(probes_fd_, &key);
  }
}

UplinkCounters Datapath::counters(uint32_t uplink_id) const {
  const int cpus = libbpf_num_possible_cpus();
  std::vector<uplink_counters> per_cpu(cpus > 0 ? cpus : 1);
  UplinkCounters sum;
  if (bpf_map_lookup_elem(counters_fd_, &uplink_id, per_cpu.data()) != 0) return sum;
  for (const auto& c : per_cpu) {
    sum.probe_replies += c.probe_replies;
    sum.nonce_mismatch += c.nonce_mismatch;
    sum.ringbuf_full += c.ringbuf_full;
    sum.icmp_passed += c.icmp_passed;
    sum.icmp_dropped += c.icmp_dropped;
    sum.probe_replies_exempted += c.probe_replies_exempted;
  }
  return sum;
}

int Datapath::ring_fd() const { return ring_buffer__epoll_fd(ring_); }

void Datapath::poll_replies() { ring_buffer__consume(ring_); }

}  // namespace uplinkd::datapath
