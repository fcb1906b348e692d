// WireGuard endpoint steering: loads bpf/uplink_egress.bpf.c, attaches it on tc egress of the
// uplink devices (the daemon does so only while wg_endpoints has an endpoint: a router without
// WireGuard forwards without it), and is the daemon's door to its maps (wg_endpoints, wg_counters,
// uplink_egress).
// The program follows the classifier's `policies` map, which it shares by pin path with
// lan_ingress: the policy the daemon writes for the LAN is the one each endpoint follows.
//
// Why in the datapath (field-reports/wireguard-stuck-on-backup-uplink.txt, DESIGN.md "Facts"): a
// WireGuard tunnel keeps sending by whatever uplink its pinned host route and cached source
// address say, long after the active uplink changed; rewriting the source and redirecting each
// packet to the active uplink moves it at once, and the peer roams to the new address.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "maps/uplinkd_maps.h"

// The bpftool skeleton of uplink_egress, renamed from `uplink_egress` where it is included
// (wg_steering.cpp): the map ABI has a struct uplink_egress of its own.
struct uplink_egress_skel;

namespace uplinkd::datapath {

// Thrown when steering cannot start or attach: the message names the device, the errno and the fix.
class WgSteeringError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How to send by one uplink, as the caller knows it from its addresses and routes. A family
// without a source address cannot be steered to this uplink; without a gateway the kernel resolves
// the destination itself on the device (point-to-point links).
struct UplinkEgressInfo {
  int ifindex = 0;
  std::optional<IpAddress> src4, gw4, src6, gw6;
};

struct WgEndpoint {
  IpAddress address;  // the peer's endpoint address
  uint16_t port = 0;  // host order
};

struct WgEndpointCounters {
  uint64_t steered_packets = 0;  // rewritten to the active uplink and redirected
  uint64_t steered_bytes = 0;
  uint64_t passed_packets = 0;  // already on the active uplink, none online, or the family is missing
  uint64_t failed_packets = 0;  // could not be steered (no device for the active uplink, rewrite failed)
};

class WgSteering {
 public:
  // pin_dir: the datapath's pin directory (Datapath::pin_dir()), which must exist. Loads the
  // program once (which proves the kernel accepts it) with its maps pinned there by name.
  // Throws WgSteeringError.
  explicit WgSteering(std::string pin_dir);
  // Detaches from every device and removes the pins of its own maps (not `policies`).
  ~WgSteering();
  WgSteering(const WgSteering&) = delete;
  WgSteering& operator=(const WgSteering&) = delete;

  // tc egress of an uplink device; idempotent. l3_only: the device has no Ethernet header
  // (PPPoE, raw-IP LTE). Throws WgSteeringError naming the device, the errno and the fix.
  void attach(int ifindex, const std::string& device, bool l3_only);
  // Removes the filter from the device: this instance's, or one a predecessor left there (a
  // restart or a crash keeps the filters) that this one never attached.
  void detach(int ifindex);
  // Every filter this instance attached.
  void detach_all();
  // Attached by this instance.
  [[nodiscard]] bool attached(int ifindex) const { return attached_.count(ifindex) != 0; }
  // The steering filter is on the device's egress, whoever attached it (a predecessor's counts).
  [[nodiscard]] static bool present(int ifindex);

  // uplink_egress[uplink_id]. Returns 0, -EINVAL for an id out of range, an ifindex <= 0 or an
  // address of the wrong family, or -errno of the map update.
  int write_uplink_egress(uint32_t uplink_id, const UplinkEgressInfo& info);
  // The uplink has no device now: packets are no longer steered to it (counted as failed).
  int clear_uplink_egress(uint32_t uplink_id);

  // wg_endpoints[endpoint] = (policy_id, endpoint_id). A new endpoint, or one given another
  // endpoint_id, starts with zero counters. Returns 0, -EINVAL (no address, port 0, policy_id >=
  // UPLINKD_MAX_POLICIES, endpoint_id >= UPLINKD_MAX_WG_ENDPOINTS), -E2BIG when the map is full,
  // or -errno.
  int write_endpoint(const WgEndpoint& endpoint, uint32_t policy_id, uint32_t endpoint_id);
  // Returns true if it was there.
  bool remove_endpoint(const WgEndpoint& endpoint);
  // Removes every endpoint of wg_endpoints but those in `keep`: a restart keeps the map, with the
  // endpoints of peers that went while no daemon ran. Returns how many it removed.
  size_t remove_endpoints_except(const std::vector<WgEndpoint>& keep);
  // Summed over CPUs; zero for an id out of range.
  [[nodiscard]] WgEndpointCounters counters(uint32_t endpoint_id) const;

  // The map key of an endpoint; family 0 for an unset address.
  static wg_endpoint_key endpoint_key(const WgEndpoint& endpoint);
  // The uplink the program steers `key` to under policy slot `p` (the same pick: the member whose
  // threshold covers the endpoint's hash), 0 when no member is online. For `uplinkctl wireguard`.
  static uint16_t active_uplink(const policy_entry& p, const wg_endpoint_key& key);

 private:
  struct Attached;
  ::uplink_egress_skel* program(bool l3_only);
  void unpin_own_maps();

  std::string pin_dir_;
  ::uplink_egress_skel* eth_ = nullptr;  // one loaded program per header kind, attached to many devices
  ::uplink_egress_skel* l3_ = nullptr;
  int endpoints_fd_ = -1, counters_fd_ = -1, egress_fd_ = -1;
  std::map<int, std::unique_ptr<Attached>> attached_;  // by ifindex
};

}  // namespace uplinkd::datapath
