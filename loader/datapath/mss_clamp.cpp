#include "datapath/mss_clamp.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common/log.h"
#include "datapath/datapath.h"
#include "datapath/pin_adoption.h"
#include "datapath/tc_attach.h"
#include "lifecycle/teardown.h"
#include "maps/uplinkd_maps.h"
#include "wg_mss.skel.h"

namespace uplinkd::datapath {
namespace {

const char* const kOwnMaps[] = {UPLINKD_MAP_MSS_CLAMP, UPLINKD_MAP_MSS_COUNTERS};

using tc::errno_text;

// Every map pinned by name, so both instances (Ethernet and L3) share one set with the daemon.
void prepare_maps(bpf_object* obj, const std::string& dir) {
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    bpf_map__set_pin_path(map, (dir + "/" + bpf_map__name(map)).c_str());
  }
}

std::string where(const std::string& device, int ifindex) {
  return device + " (ifindex " + std::to_string(ifindex) + ")";
}

// Removes what attach() added on a device: both filters, and the qdisc when it was ours and no
// other filter of uplinkd's needs it.
void detach_filters(int ifindex, bool qdisc_created) {
  tc::detach(ifindex, tc::kMssClampIngress);
  tc::detach(ifindex, tc::kMssClampEgress);
  if (qdisc_created && !tc::uplinkd_filters_present(ifindex)) tc::destroy_qdisc(ifindex);
}

// Ingress, then egress; creates the clsact qdisc when there is none and says so through `created`.
// On a failure nothing of ours stays on the device.
void attach_filters(int ifindex, const std::string& device, int prog_fd, bool* created) {
  *created = false;
  bool qdisc_known = false;
  for (const tc::Filter& filter : {tc::kMssClampIngress, tc::kMssClampEgress}) {
    const tc::AttachResult r = tc::attach(ifindex, filter, prog_fd, qdisc_known);
    qdisc_known = true;  // the first attach created it or found it
    *created = *created || r.qdisc_created;
    if (r.err == 0) continue;
    detach_filters(ifindex, *created);
    const std::string hint = tc::attach_hint(r.err, filter.point);
    if (r.qdisc_failed) {
      throw MssClampError("creating the clsact qdisc on " + where(device, ifindex) +
                          " for MSS clamping: " + errno_text(r.err) + "; " + hint);
    }
    throw MssClampError("attaching MSS clamping (tc " + std::string(tc::direction(filter.point)) + ") to " +
                        where(device, ifindex) + ": " + errno_text(r.err) + "; " + hint);
  }
}

}  // namespace

struct MssClamp::Attached {
  std::string device;
  bool tc_hook_created = false;
};

MssClamp::MssClamp(std::string pin_dir) : pin_dir_(std::move(pin_dir)) {
  struct stat st {};
  if (stat(pin_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw MssClampError("MSS clamping: the pin directory " + pin_dir_ +
                        " does not exist (the datapath creates it; is bpffs mounted?)");
  }
  try {
    ::wg_mss* skel = program(true);
    clamp_fd_ = bpf_map__fd(skel->maps.mss_clamp);
    counters_fd_ = bpf_map__fd(skel->maps.mss_counters);
    uint32_t key = 0, next = 0;
    for (const uint32_t* prev = nullptr; bpf_map_get_next_key(clamp_fd_, prev, &next) == 0; prev = &key) {
      inherited_.insert(static_cast<int>(next));
      key = next;
    }
  } catch (...) {
    if (!lifecycle::adopting()) unpin_own_maps();  // an adopted datapath's clamping keeps its maps
    throw;
  }
}

MssClamp::~MssClamp() {
  if (lifecycle::keep_kernel_state()) {  // filters and maps stay for the next daemon
    if (eth_ != nullptr) wg_mss__destroy(eth_);
    if (l3_ != nullptr) wg_mss__destroy(l3_);
    return;
  }
  drop_inherited_except({});
  std::vector<int> devices;
  for (const auto& [ifindex, _] : attached_) devices.push_back(ifindex);
  for (int ifindex : devices) detach(ifindex);
  if (eth_ != nullptr) wg_mss__destroy(eth_);
  if (l3_ != nullptr) wg_mss__destroy(l3_);
  unpin_own_maps();
}

void MssClamp::unpin_own_maps() {
  for (const char* name : kOwnMaps) unlink((pin_dir_ + "/" + name).c_str());
}

::wg_mss* MssClamp::program(bool l3_only) {
  ::wg_mss*& skel = l3_only ? l3_ : eth_;
  if (skel != nullptr) return skel;
  skel = wg_mss__open();
  if (skel == nullptr) throw MssClampError("opening the MSS clamping object: " + errno_text(errno));
  skel->rodata->l3_only = l3_only ? 1 : 0;
  prepare_maps(skel->obj, pin_dir_);
  const auto moved = set_aside_incompatible(skel->obj, pin_dir_);  // an older daemon's other layout
  const int err = wg_mss__load(skel);
  if (err != 0) {
    wg_mss__destroy(skel);
    skel = nullptr;
    throw MssClampError("the kernel refused the tc program wg_mss: " + errno_text(err) +
                        " (the verifier log above says why; a map pinned in " + pin_dir_ +
                        " by another uplinkd version with another layout also refuses it)");
  }
  if (!moved.empty()) {
    const std::string carried = migrate_set_aside(pin_dir_);
    if (!carried.empty()) log::warn("MSS clamping maps whose layout changed: " + carried);
  }
  return skel;
}

void MssClamp::attach(int ifindex, const std::string& device, bool l3_only) {
  if (attached(ifindex)) return;
  ::wg_mss* skel = program(l3_only);
  auto a = std::make_unique<Attached>();
  a->device = device;
  attach_filters(ifindex, device, bpf_program__fd(skel->progs.wg_mss), &a->tc_hook_created);
  // Recorded in the pins, so whichever daemon does the full stop removes the qdiscs uplinkd made.
  if (a->tc_hook_created) {
    qdisc_created_by_uplinkd(pin_dir_, ifindex, true);
  } else {
    a->tc_hook_created = qdisc_created_by_uplinkd(pin_dir_, ifindex);
  }
  attached_[ifindex] = std::move(a);
}

void MssClamp::detach(int ifindex) {
  auto it = attached_.find(ifindex);
  if (it == attached_.end()) return;
  // A device that is gone took its filters with it.
  const bool exists = tc::device_exists(ifindex);
  if (exists) detach_filters(ifindex, it->second->tc_hook_created);
  // Gone with the device, or removed by detach_filters (ours, and no other filter of uplinkd's there).
  if (it->second->tc_hook_created && (!exists || !tc::uplinkd_filters_present(ifindex)))
    qdisc_created_by_uplinkd(pin_dir_, ifindex, false);
  clear(ifindex);
  attached_.erase(it);
}

void MssClamp::drop_inherited_except(const std::set<int>& keep) {
  for (auto it = inherited_.begin(); it != inherited_.end();) {
    const int ifindex = *it;
    if (keep.count(ifindex) != 0) {
      ++it;
      continue;
    }
    if (!attached(ifindex) && tc::device_exists(ifindex)) {
      detach_filters(ifindex, qdisc_created_by_uplinkd(pin_dir_, ifindex));
      if (!tc::uplinkd_filters_present(ifindex)) qdisc_created_by_uplinkd(pin_dir_, ifindex, false);
    }
    if (!attached(ifindex)) clear(ifindex);
    it = inherited_.erase(it);
  }
}

int MssClamp::set(int ifindex, uint16_t mss4, uint16_t mss6) {
  if (ifindex <= 0) return -EINVAL;
  if (mss4 == 0 && mss6 == 0) return clear(ifindex);
  const auto key = static_cast<uint32_t>(ifindex);
  mss_clamp_value value{};
  value.mss4 = mss4;
  value.mss6 = mss6;
  return bpf_map_update_elem(clamp_fd_, &key, &value, BPF_ANY) == 0 ? 0 : -errno;
}

int MssClamp::clear(int ifindex) {
  if (ifindex <= 0) return -EINVAL;
  const auto key = static_cast<uint32_t>(ifindex);
  if (bpf_map_delete_elem(clamp_fd_, &key) == 0 || errno == ENOENT) return 0;
  return -errno;
}

MssClamp::Counters MssClamp::counters() const {
  Counters sum;
  const int cpus = libbpf_num_possible_cpus();
  std::vector<mss_clamp_counters> per_cpu(static_cast<size_t>(cpus > 0 ? cpus : 1));
  const uint32_t key = 0;
  if (bpf_map_lookup_elem(counters_fd_, &key, per_cpu.data()) != 0) return sum;
  for (const mss_clamp_counters& c : per_cpu) {
    sum.seen_syn += c.seen_syn;
    sum.clamped += c.clamped;
  }
  return sum;
}

}  // namespace uplinkd::datapath
