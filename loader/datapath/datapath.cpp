#include "datapath/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/stat.h>
#include <sys/vfs.h>
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
#include "lan_egress.skel.h"
#include "lan_ingress.skel.h"
#include "uplink_ingress.skel.h"
#include "wan_ingress.skel.h"

namespace uplinkd::datapath {
namespace {

// Fixed tc handle and priority, so detach removes exactly our filter and nobody else's.
constexpr uint32_t kTcHandle = 0x7570;  // "up"
constexpr uint32_t kTcPriority = 0x7570;

// Every map shared between programs and the daemon: the same pin path in every object that uses it.
const char* const kPinnedMaps[] = {
    UPLINKD_MAP_UPLINKS,      UPLINKD_MAP_PROBES,        UPLINKD_MAP_PROBE_EVENTS,
    UPLINKD_MAP_COUNTERS,     UPLINKD_MAP_ICMP_LIMITER,  UPLINKD_MAP_CLASSIFIER_CFG,
    UPLINKD_MAP_RULES,        UPLINKD_MAP_RULE_COUNTERS, UPLINKD_MAP_POLICIES,
    UPLINKD_MAP_FLOWS,        UPLINKD_MAP_STICKY,        UPLINKD_MAP_INBOUND,
    UPLINKD_MAP_CONNECTED,    UPLINKD_MAP_SETS,          UPLINKD_MAP_TCP_SEEN,
    UPLINKD_MAP_FLOW_COUNTERS};

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
  if (std::strcmp(name, UPLINKD_MAP_FLOWS) == 0 || std::strcmp(name, UPLINKD_MAP_TCP_SEEN) == 0) return flow_entries;
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

// A map pinned by an earlier run with another size cannot be reused (libbpf refuses it as
// incompatible): drop that pin, so this run creates the map at the configured size. Its entries
// (remembered decisions) are lost, as after a reboot.
void drop_resized_pins(const std::string& dir, uint32_t flow_entries) {
  for (const char* name : kPinnedMaps) {
    const uint32_t want = sized_entries(name, flow_entries);
    if (want == 0) continue;
    const std::string path = dir + "/" + name;
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) continue;
    bpf_map_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.max_entries != want) {
      log::info(std::string("map ") + name + " resized from " + std::to_string(info.max_entries) + " to " +
                std::to_string(want) + " entries; its pinned copy is replaced");
      unlink(path.c_str());
    }
    close(fd);
  }
}

// libbpf's warnings carry the verifier log that explains a refused program: keep those, but drop
// the harmless notes about libxdp's own ELF sections.
int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  vsnprintf(line, sizeof line, fmt, args);
  if (std::strstr(line, "skipping unrecognized data section") != nullptr) return 0;
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
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .handle = kTcHandle, .priority = kTcPriority);
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
  if (created) {
    hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
    bpf_tc_hook_destroy(&hook);
  }
}

void detach_tc_ingress(int ifindex, bool created) { detach_tc(ifindex, BPF_TC_INGRESS, created); }

bool device_exists(int ifindex) {
  std::array<char, IF_NAMESIZE> name{};
  return if_indextoname(ifindex, name.data()) != nullptr;
}

}  // namespace

bool is_bpffs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

struct Datapath::Attached {
  AttachOptions options;
  ::uplink_ingress* ingress = nullptr;
  struct xdp_program* xdp = nullptr;
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
  drop_resized_pins(pin_dir_, flow_entries_);
  try {
    load_maps();
  } catch (...) {
    unpin_all();
    throw;
  }
}

void Datapath::load_maps() {
  master_ = uplink_ingress__open();
  if (master_ == nullptr) throw DatapathError("opening the XDP program object: " + errno_text(errno));
  master_->rodata->uplink_id = 0;
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

Datapath::~Datapath() {
  std::vector<uint32_t> ids;
  for (const auto& [id, _] : uplinks_) ids.push_back(id);
  for (uint32_t id : ids) detach(id);
  std::vector<int> lans;
  for (const auto& [ifindex, _] : lan_) lans.push_back(ifindex);
  for (int ifindex : lans) detach_lan(ifindex);
  if (lan_eth_ != nullptr) lan_ingress__destroy(lan_eth_);
  if (lan_l3_ != nullptr) lan_ingress__destroy(lan_l3_);
  if (lan_egress_eth_ != nullptr) lan_egress__destroy(lan_egress_eth_);
  if (lan_egress_l3_ != nullptr) lan_egress__destroy(lan_egress_l3_);
  if (ring_ != nullptr) ring_buffer__free(ring_);
  unpin_all();
  if (master_ != nullptr) uplink_ingress__destroy(master_);
}

void Datapath::unpin_all() {
  for (const char* name : kPinnedMaps) unlink((pin_dir_ + "/" + name).c_str());
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

// Opens the uplink's XDP program and attaches it: native mode where the driver has it, generic
// (skb) mode for VLAN, bridge, PPP and the like. Returns 0 or libxdp's negative errno; on failure
// nothing of it stays open.
int Datapath::open_and_attach_xdp(Attached& a, const AttachOptions& o) {
  a.ingress = uplink_ingress__open();
  if (a.ingress == nullptr) throw DatapathError("opening the XDP program object: " + errno_text(errno));
  a.ingress->rodata->uplink_id = o.uplink_id;
  a.ingress->rodata->l3_only = o.l3_only ? 1 : 0;
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
  int result = open_and_attach_xdp(*a, o);
  if (result == -EINVAL && !dispatcher_skipped()) {
    // A failed load leaves the object unusable: open it again, attached alone this time (and for
    // every later attach of this process: the kernel's answer would be the same).
    log::info("XDP on " + o.device + ": the kernel refused uplinkd's program inside libxdp's dispatcher " +
              "(EINVAL: it changes packet data, the dispatcher's slot does not); attaching it alone");
    setenv("LIBXDP_SKIP_DISPATCHER", "1", 1);
    result = open_and_attach_xdp(*a, o);
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
  bpf_obj_pin(xdp_program__fd(a->xdp), prog_pin.c_str());

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
  if (a.wan != nullptr) wan_ingress__destroy(a.wan);
  if (a.xdp != nullptr) {
    if (device_alive) xdp_program__detach(a.xdp, ifindex, a.mode, 0);
    xdp_program__close(a.xdp);
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
  try {
    // The clsact qdisc exists by now: the ingress attach made it or found it.
    attach_tc(ifindex, device, bpf_program__fd(egress->progs.lan_egress), BPF_TC_EGRESS, nullptr);
  } catch (...) {
    detach_tc_ingress(ifindex, a->tc_hook_created);
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
  // Bounded by the map's size (plus what arrives during the walk).
  return walk_flows(cursor, 2 * static_cast<size_t>(UPLINKD_MAX_FLOWS), visit);
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
