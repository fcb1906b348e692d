#include "datapath/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <xdp/libxdp.h>

#include <array>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/log.h"
#include "uplink_ingress.skel.h"
#include "lan_ingress.skel.h"
#include "wan_ingress.skel.h"

namespace uplinkd::datapath {
namespace {

// Fixed tc handle and priority, so detach removes exactly our filter and nobody else's.
constexpr uint32_t kTcHandle = 0x7570;  // "up"
constexpr uint32_t kTcPriority = 0x7570;

// Every map shared between programs and the daemon: the same pin path in every object that uses it.
const char* const kPinnedMaps[] = {UPLINKD_MAP_UPLINKS,   UPLINKD_MAP_PROBES,         UPLINKD_MAP_PROBE_EVENTS,
                                   UPLINKD_MAP_COUNTERS,  UPLINKD_MAP_ICMP_LIMITER,   UPLINKD_MAP_CLASSIFIER_CFG,
                                   UPLINKD_MAP_RULES,     UPLINKD_MAP_RULE_COUNTERS,  UPLINKD_MAP_POLICIES,
                                   UPLINKD_MAP_FLOWS,     UPLINKD_MAP_STICKY,         UPLINKD_MAP_INBOUND,
                                   UPLINKD_MAP_CONNECTED, UPLINKD_MAP_SETS};

std::string strip(const char* line) {
  std::string s(line);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string errno_text(int err) {
  err = err < 0 ? -err : err;
  return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")";
}

// Every object instance points its maps at the same pin paths: the first load creates and pins
// them, later loads (one per uplink) reuse them, so the daemon sees one set of maps.
void set_pin_paths(struct bpf_object* obj, const std::string& dir) {
  for (const char* name : kPinnedMaps) {
    struct bpf_map* map = bpf_object__find_map_by_name(obj, name);
    if (map != nullptr) bpf_map__set_pin_path(map, (dir + "/" + name).c_str());
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

// Our tc filter on a device's ingress. Creates the clsact qdisc when there is none and says so
// through `created`, so detach removes exactly what attach added.
void attach_tc_ingress(int ifindex, const std::string& device, int prog_fd, bool* created) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int herr = bpf_tc_hook_create(&hook);
  if (herr != 0 && herr != -EEXIST) {
    throw DatapathError("creating the clsact qdisc on " + device + ": " + errno_text(herr) +
                        " (is the sch_ingress/clsact qdisc available in this kernel?)");
  }
  *created = herr == 0;
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .handle = kTcHandle, .priority = kTcPriority);
  int terr = bpf_tc_attach(&hook, &opts);
  if (terr != 0) {
    if (*created) bpf_tc_hook_destroy(&hook);
    throw DatapathError("attaching a tc program to " + device + " ingress: " + errno_text(terr));
  }
}

void detach_tc_ingress(int ifindex, bool created) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  bpf_tc_detach(&hook, &opts);
  if (created) {
    hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
    bpf_tc_hook_destroy(&hook);
  }
}

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

Datapath::Datapath(const std::string& bpffs_root, const std::string& instance, ReplyHandler on_reply)
    : on_reply_(std::move(on_reply)) {
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
  set_pin_paths(master_->obj, pin_dir_);
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

void Datapath::attach(const AttachOptions& o) {
  if (attached(o.uplink_id)) detach(o.uplink_id);
  auto a = std::make_unique<Attached>();
  a->options = o;
  a->ingress = uplink_ingress__open();
  if (a->ingress == nullptr) throw DatapathError("opening the XDP program object: " + errno_text(errno));
  a->ingress->rodata->uplink_id = o.uplink_id;
  a->ingress->rodata->l3_only = o.l3_only ? 1 : 0;
  set_pin_paths(a->ingress->obj, pin_dir_);

  a->xdp = xdp_program__from_bpf_obj(a->ingress->obj, "xdp");
  long err = libxdp_get_error(a->xdp);
  if (err != 0) {
    a->xdp = nullptr;
    uplink_ingress__destroy(a->ingress);
    throw DatapathError("preparing XDP for " + o.device + ": " + errno_text(static_cast<int>(err)));
  }
  // Native mode where the driver has it; generic (skb) mode for VLAN, bridge, PPP and the like.
  int native = xdp_program__attach(a->xdp, o.ifindex, XDP_MODE_NATIVE, 0);
  int result = native;
  a->mode = XDP_MODE_NATIVE;
  if (native != 0) {
    result = xdp_program__attach(a->xdp, o.ifindex, XDP_MODE_SKB, 0);
    a->mode = XDP_MODE_SKB;
  }
  if (result != 0) {
    char buf[256] = {};
    libxdp_strerror(result, buf, sizeof buf);
    xdp_program__close(a->xdp);
    uplink_ingress__destroy(a->ingress);
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
    set_pin_paths(raw->wan->obj, pin_dir_);
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
  set_pin_paths(obj->obj, pin_dir_);
  int err = lan_ingress__load(obj);
  if (err != 0) {
    lan_ingress__destroy(obj);
    obj = nullptr;
    throw DatapathError("the kernel refused the tc program lan_ingress: " + errno_text(err) +
                        " (the verifier log above says why)");
  }
  return obj;
}

void Datapath::attach_lan(int ifindex, const std::string& device, bool l3_only) {
  if (lan_attached(ifindex)) return;
  ::lan_ingress* obj = lan_object(l3_only);
  auto a = std::make_unique<LanAttached>();
  a->device = device;
  attach_tc_ingress(ifindex, device, bpf_program__fd(obj->progs.lan_ingress), &a->tc_hook_created);
  lan_[ifindex] = std::move(a);
}

void Datapath::detach_lan(int ifindex) {
  auto it = lan_.find(ifindex);
  if (it == lan_.end()) return;
  if (device_exists(ifindex)) detach_tc_ingress(ifindex, it->second->tc_hook_created);
  lan_.erase(it);
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
