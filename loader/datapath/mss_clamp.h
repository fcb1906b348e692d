// TCP MSS clamping on WireGuard devices: loads bpf/wg_mss.bpf.c, attaches it on tc ingress and
// egress of each WireGuard device it is given, and is the daemon's door to its maps (mss_clamp,
// mss_counters), pinned in the datapath's pin directory by name.
//
// Why in the datapath: a tunnel moved to a backup uplink with a smaller path MTU keeps its own MTU,
// and full-size segments through it vanish where the ICMP that would say so is filtered. Lowering
// the MSS that SYN and SYN-ACK announce makes both ends send segments that fit; the daemon writes
// the MSS for the active uplink's path MTU with set() whenever it changes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>

struct wg_mss;

namespace uplinkd::datapath {

// Thrown when clamping cannot start or attach: the message names the device, its ifindex, the errno
// and the fix.
class MssClampError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class MssClamp {
 public:
  // pin_dir: the datapath's pin directory (Datapath::pin_dir()), which must exist. Loads the
  // program once (which proves the kernel accepts it) with its maps pinned there by name.
  // Throws MssClampError.
  explicit MssClamp(std::string pin_dir);
  // Detaches from every device and removes the pins of its maps.
  ~MssClamp();
  MssClamp(const MssClamp&) = delete;
  MssClamp& operator=(const MssClamp&) = delete;

  // tc ingress and egress of a WireGuard device; idempotent. l3_only: the device has no Ethernet
  // header (WireGuard: true; false for Ethernet devices, e.g. veth in tests). Throws MssClampError
  // naming the device, the errno and the fix; nothing stays attached then.
  void attach(int ifindex, const std::string& device, bool l3_only);
  // Also removes the device's clamp: ifindexes are reused.
  void detach(int ifindex);
  [[nodiscard]] bool attached(int ifindex) const { return attached_.count(ifindex) != 0; }

  // mss_clamp[ifindex] = (mss4, mss6), host order; 0 leaves that family alone, and both 0 is
  // clear(). Segments announcing a larger MSS get this one; smaller ones are left. Returns 0,
  // -EINVAL for an ifindex <= 0, -E2BIG when UPLINKD_MAX_MSS_CLAMP devices have a clamp, or -errno.
  int set(int ifindex, uint16_t mss4, uint16_t mss6);
  // No clamp on the device (its packets then cost one lookup). Returns 0 (also when there was
  // none), -EINVAL for an ifindex <= 0, or -errno.
  int clear(int ifindex);

  struct Counters {
    uint64_t seen_syn = 0;  // SYN and SYN-ACK segments through devices with a clamp
    uint64_t clamped = 0;   // of them, those whose MSS option was lowered
  };
  // Totals over every device, summed over CPUs.
  [[nodiscard]] Counters counters() const;

  // Devices a predecessor daemon clamped (the keys of its pinned mss_clamp, found at construction)
  // stay clamped across a restart in place until the new configuration says otherwise: this
  // removes the filters and clamp of every such device not in `keep` and not attached since.
  void drop_inherited_except(const std::set<int>& keep);

 private:
  struct Attached;
  ::wg_mss* program(bool l3_only);
  void unpin_own_maps();

  std::string pin_dir_;
  ::wg_mss* eth_ = nullptr;  // one loaded program per header kind, attached to many devices
  ::wg_mss* l3_ = nullptr;
  int clamp_fd_ = -1, counters_fd_ = -1;
  std::set<int> inherited_;                            // see drop_inherited_except()
  std::map<int, std::unique_ptr<Attached>> attached_;  // by ifindex
};

}  // namespace uplinkd::datapath
