#include "datapath/wg_steering.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "bpf/lib/flow_hash.h"
#include "common/log.h"
#include "datapath/datapath.h"
#include "datapath/pin_adoption.h"
#include "datapath/tc_attach.h"
#include "lifecycle/teardown.h"

// The skeleton is named after its object, uplink_egress, as is the map ABI's struct uplink_egress:
// here the skeleton's struct is uplink_egress_skel (its functions, uplink_egress__open() and so
// on, are other tokens and keep their names).
#define uplink_egress uplink_egress_skel
#include "uplink_egress.skel.h"
#undef uplink_egress

namespace uplinkd::datapath {
namespace {

// The maps the program uses. The classifier's other maps come into the object with
// lib/classifier_maps.h (where `policies` is defined) but are not created for it.
const char* const kSharedMaps[] = {UPLINKD_MAP_POLICIES};
const char* const kOwnMaps[] = {UPLINKD_MAP_WG_ENDPOINTS, UPLINKD_MAP_WG_COUNTERS, UPLINKD_MAP_UPLINK_EGRESS};

using tc::errno_text;

bool is_used_map(const char* name) {
  for (const char* used : kSharedMaps) {
    if (std::strcmp(name, used) == 0) return true;
  }
  for (const char* used : kOwnMaps) {
    if (std::strcmp(name, used) == 0) return true;
  }
  return false;
}

// Every used map pinned by name, so every instance (and lan_ingress for `policies`) shares one.
void prepare_maps(bpf_object* obj, const std::string& dir) {
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    const char* name = bpf_map__name(map);
    if (is_used_map(name)) {
      bpf_map__set_pin_path(map, (dir + "/" + name).c_str());
    } else {
      bpf_map__set_autocreate(map, false);
    }
  }
}

int map_fd(::uplink_egress_skel* skel, const char* name) {
  return bpf_map__fd(bpf_object__find_map_by_name(skel->obj, name));
}

// Creates the clsact qdisc when there is none and says so through `created`.
void attach_tc_egress(int ifindex, const std::string& device, int prog_fd, bool* created) {
  const tc::AttachResult r = tc::attach(ifindex, tc::kWgSteering, prog_fd);
  *created = r.qdisc_created;
  if (r.err == 0) return;
  const std::string hint = tc::attach_hint(r.err, BPF_TC_EGRESS);
  if (r.qdisc_failed) {
    throw WgSteeringError("creating the clsact qdisc on " + device + " (ifindex " + std::to_string(ifindex) +
                          ") for WireGuard steering: " + errno_text(r.err) + "; " + hint);
  }
  throw WgSteeringError("attaching WireGuard steering (tc egress) to " + device + " (ifindex " +
                        std::to_string(ifindex) + "): " + errno_text(r.err) + "; " + hint);
}

void detach_tc_egress(int ifindex, bool created) {
  tc::detach(ifindex, tc::kWgSteering);
  // The qdisc goes only if we added it and no other filter of uplinkd's needs it.
  if (created && !tc::uplinkd_filters_present(ifindex)) tc::destroy_qdisc(ifindex);
}

bool valid_address(const std::optional<IpAddress>& a, int family) { return !a || a->family == family; }

}  // namespace

struct WgSteering::Attached {
  std::string device;
  bool tc_hook_created = false;
};

WgSteering::WgSteering(std::string pin_dir) : pin_dir_(std::move(pin_dir)) {
  struct stat st {};
  if (stat(pin_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw WgSteeringError("WireGuard steering: the pin directory " + pin_dir_ +
                          " does not exist (the datapath creates it; is bpffs mounted?)");
  }
  try {
    ::uplink_egress_skel* skel = program(false);
    endpoints_fd_ = map_fd(skel, UPLINKD_MAP_WG_ENDPOINTS);
    counters_fd_ = map_fd(skel, UPLINKD_MAP_WG_COUNTERS);
    egress_fd_ = map_fd(skel, UPLINKD_MAP_UPLINK_EGRESS);
  } catch (...) {
    if (!lifecycle::adopting()) unpin_own_maps();  // an adopted datapath's steering keeps its maps
    throw;
  }
}

WgSteering::~WgSteering() {
  if (lifecycle::keep_kernel_state()) {  // filters and maps stay for the next daemon
    if (eth_ != nullptr) uplink_egress__destroy(eth_);
    if (l3_ != nullptr) uplink_egress__destroy(l3_);
    return;
  }
  detach_all();
  if (eth_ != nullptr) uplink_egress__destroy(eth_);
  if (l3_ != nullptr) uplink_egress__destroy(l3_);
  unpin_own_maps();
}

void WgSteering::unpin_own_maps() {
  for (const char* name : kOwnMaps) unlink((pin_dir_ + "/" + name).c_str());
}

::uplink_egress_skel* WgSteering::program(bool l3_only) {
  ::uplink_egress_skel*& skel = l3_only ? l3_ : eth_;
  if (skel != nullptr) return skel;
  skel = uplink_egress__open();
  if (skel == nullptr) throw WgSteeringError("opening the WireGuard steering object: " + errno_text(errno));
  skel->rodata->l3_only = l3_only ? 1 : 0;
  prepare_maps(skel->obj, pin_dir_);
  const auto moved = set_aside_incompatible(skel->obj, pin_dir_);  // an older daemon's other layout
  const int err = uplink_egress__load(skel);
  if (err != 0) {
    uplink_egress__destroy(skel);
    skel = nullptr;
    throw WgSteeringError("the kernel refused the tc program uplink_egress: " + errno_text(err) +
                          " (the verifier log above says why; a map pinned in " + pin_dir_ +
                          " by another uplinkd version with another layout also refuses it)");
  }
  if (!moved.empty()) {
    const std::string carried = migrate_set_aside(pin_dir_);
    if (!carried.empty()) log::warn("WireGuard steering maps whose layout changed: " + carried);
  }
  return skel;
}

void WgSteering::attach(int ifindex, const std::string& device, bool l3_only) {
  if (attached(ifindex)) return;
  ::uplink_egress_skel* skel = program(l3_only);
  auto a = std::make_unique<Attached>();
  a->device = device;
  attach_tc_egress(ifindex, device, bpf_program__fd(skel->progs.wg_steer), &a->tc_hook_created);
  // Recorded in the pins, so whichever daemon does the full stop removes the qdiscs uplinkd made.
  if (a->tc_hook_created) {
    qdisc_created_by_uplinkd(pin_dir_, ifindex, true);
  } else {
    a->tc_hook_created = qdisc_created_by_uplinkd(pin_dir_, ifindex);
  }
  attached_[ifindex] = std::move(a);
}

void WgSteering::detach(int ifindex) {
  auto it = attached_.find(ifindex);
  const bool ours = it != attached_.end();
  // A device that is gone took its filters with it.
  const bool exists = tc::device_exists(ifindex);
  if (!ours && !(exists && present(ifindex))) return;
  // A predecessor's filter: whether its qdisc is uplinkd's is in the pins it recorded it in.
  const bool created = ours ? it->second->tc_hook_created : qdisc_created_by_uplinkd(pin_dir_, ifindex);
  if (exists) detach_tc_egress(ifindex, created);
  // Gone with the device, or removed by detach_tc_egress (ours, and no other filter of uplinkd's there).
  if (created && (!exists || !tc::uplinkd_filters_present(ifindex)))
    qdisc_created_by_uplinkd(pin_dir_, ifindex, false);
  if (ours) attached_.erase(it);
}

void WgSteering::detach_all() {
  std::vector<int> devices;
  for (const auto& [ifindex, _] : attached_) devices.push_back(ifindex);
  for (int ifindex : devices) detach(ifindex);
}

bool WgSteering::present(int ifindex) { return tc::present(ifindex, tc::kWgSteering); }

int WgSteering::write_uplink_egress(uint32_t uplink_id, const UplinkEgressInfo& info) {
  if (uplink_id >= UPLINKD_MAX_UPLINKS || info.ifindex <= 0 || !valid_address(info.src4, AF_INET) ||
      !valid_address(info.gw4, AF_INET) || !valid_address(info.src6, AF_INET6) ||
      !valid_address(info.gw6, AF_INET6)) {
    return -EINVAL;
  }
  uplink_egress e{};
  e.ifindex = static_cast<uint32_t>(info.ifindex);
  if (info.src4) {
    e.flags |= UPLINK_EGRESS_HAS_V4;
    std::memcpy(e.src4, info.src4->bytes.data(), 4);
  }
  if (info.gw4) {
    e.flags |= UPLINK_EGRESS_HAS_GW4;
    std::memcpy(e.gw4, info.gw4->bytes.data(), 4);
  }
  if (info.src6) {
    e.flags |= UPLINK_EGRESS_HAS_V6;
    std::memcpy(e.src6, info.src6->bytes.data(), 16);
  }
  if (info.gw6) {
    e.flags |= UPLINK_EGRESS_HAS_GW6;
    std::memcpy(e.gw6, info.gw6->bytes.data(), 16);
  }
  // One update: the program never sees a device with another device's addresses.
  return bpf_map_update_elem(egress_fd_, &uplink_id, &e, BPF_ANY) == 0 ? 0 : -errno;
}

int WgSteering::clear_uplink_egress(uint32_t uplink_id) {
  if (uplink_id >= UPLINKD_MAX_UPLINKS) return -EINVAL;
  const uplink_egress none{};
  return bpf_map_update_elem(egress_fd_, &uplink_id, &none, BPF_ANY) == 0 ? 0 : -errno;
}

wg_endpoint_key WgSteering::endpoint_key(const WgEndpoint& endpoint) {
  wg_endpoint_key key{};
  if (endpoint.address.is_v4()) {
    key.family = 4;
    std::memcpy(key.addr, endpoint.address.bytes.data(), 4);
  } else if (endpoint.address.is_v6()) {
    key.family = 6;
    std::memcpy(key.addr, endpoint.address.bytes.data(), 16);
  }
  key.port = htons(endpoint.port);
  return key;
}

int WgSteering::write_endpoint(const WgEndpoint& endpoint, uint32_t policy_id, uint32_t endpoint_id) {
  const wg_endpoint_key key = endpoint_key(endpoint);
  if (key.family == 0 || endpoint.port == 0 || policy_id >= UPLINKD_MAX_POLICIES ||
      endpoint_id >= UPLINKD_MAX_WG_ENDPOINTS) {
    return -EINVAL;
  }
  wg_endpoint_value old{};
  const bool same_slot =
      bpf_map_lookup_elem(endpoints_fd_, &key, &old) == 0 && old.endpoint_id == endpoint_id;
  if (!same_slot) {
    // Zero the slot before the endpoint points at it, so its counts start with it.
    const int cpus = libbpf_num_possible_cpus();
    std::vector<wg_counters> zero(static_cast<size_t>(cpus > 0 ? cpus : 1));
    if (bpf_map_update_elem(counters_fd_, &endpoint_id, zero.data(), BPF_ANY) != 0) return -errno;
  }
  const wg_endpoint_value value{policy_id, endpoint_id};
  return bpf_map_update_elem(endpoints_fd_, &key, &value, BPF_ANY) == 0 ? 0 : -errno;
}

bool WgSteering::remove_endpoint(const WgEndpoint& endpoint) {
  const wg_endpoint_key key = endpoint_key(endpoint);
  return bpf_map_delete_elem(endpoints_fd_, &key) == 0;
}

size_t WgSteering::remove_endpoints_except(const std::vector<WgEndpoint>& keep) {
  std::vector<wg_endpoint_key> kept;
  kept.reserve(keep.size());
  for (const WgEndpoint& e : keep) kept.push_back(endpoint_key(e));
  std::vector<wg_endpoint_key> gone;
  wg_endpoint_key key{};
  const void* previous = nullptr;  // the first key
  // Bounded by the map's size: the daemon is the only writer.
  for (size_t n = 0; n < UPLINKD_MAX_WG_ENDPOINTS && bpf_map_get_next_key(endpoints_fd_, previous, &key) == 0;
       ++n) {
    const bool wanted = std::any_of(kept.begin(), kept.end(), [&](const wg_endpoint_key& k) {
      return std::memcmp(&k, &key, sizeof key) == 0;
    });
    if (!wanted) gone.push_back(key);
    previous = &key;
  }
  size_t removed = 0;
  for (const wg_endpoint_key& k : gone) removed += bpf_map_delete_elem(endpoints_fd_, &k) == 0 ? 1 : 0;
  return removed;
}

WgEndpointCounters WgSteering::counters(uint32_t endpoint_id) const {
  WgEndpointCounters sum;
  if (endpoint_id >= UPLINKD_MAX_WG_ENDPOINTS) return sum;
  const int cpus = libbpf_num_possible_cpus();
  std::vector<wg_counters> per_cpu(static_cast<size_t>(cpus > 0 ? cpus : 1));
  if (bpf_map_lookup_elem(counters_fd_, &endpoint_id, per_cpu.data()) != 0) return sum;
  for (const wg_counters& c : per_cpu) {
    sum.steered_packets += c.steered_packets;
    sum.steered_bytes += c.steered_bytes;
    sum.passed_packets += c.passed_packets;
    sum.failed_packets += c.failed_packets;
  }
  return sum;
}

// Mirrors active_uplink() in bpf/uplink_egress.bpf.c.
uint16_t WgSteering::active_uplink(const policy_entry& p, const wg_endpoint_key& key) {
  uint32_t n = p.n_members;
  if (n == 0) return 0;
  if (n > UPLINKD_POLICY_MAX_MEMBERS) n = UPLINKD_POLICY_MAX_MEMBERS;
  if (n == 1) return p.uplink_id[0];
  flow_key flow{};
  std::memcpy(flow.daddr, key.addr, sizeof key.addr);
  flow.dport = key.port;
  flow.proto = IPPROTO_UDP;
  flow.family = key.family;
  uint32_t words[UPLINKD_FLOW_KEY_WORDS];
  std::memcpy(words, &flow, sizeof flow);
  const uint32_t hash = flow_hash_words(words);
  for (uint32_t i = 0; i < n; i++) {
    if (hash <= p.threshold[i]) return p.uplink_id[i];
  }
  return p.uplink_id[n - 1];
}

}  // namespace uplinkd::datapath
