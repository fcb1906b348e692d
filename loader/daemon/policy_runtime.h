// mwan3's members, policies and rules, kept true in the datapath and the kernel: compiles the rules
// into the classifier's map, republishes every policy when an uplink's state changes, installs
// mwan3's ip rules, keeps each uplink's table holding its copies of the main table's routes, keeps
// the connected-networks trie current, and attaches the LAN classifier to every LAN-side device.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "datapath/datapath.h"
#include "netlink/policy_rules.h"
#include "policy/policy_table.h"
#include "policy/rule_compiler.h"

namespace uplinkd {

class PolicyRuntime {
 public:
  // An uplink as the runtime needs to know it, refreshed by the daemon.
  struct UplinkView {
    uint32_t id = 0;
    std::string device;
    int family = 0;   // AF_INET or AF_INET6
    int ifindex = 0;  // 0 while the device is absent or down
  };

  // Compiles the rules (throws config::ConfigError naming file, line and option) and installs the
  // general ip rules. Nothing is online yet: every policy starts at its last_resort.
  PolicyRuntime(const config::Config& cfg, datapath::Datapath& dp);
  ~PolicyRuntime();  // detaches the LAN classifier; PolicyRules removes exactly its rules and routes
  PolicyRuntime(const PolicyRuntime&) = delete;
  PolicyRuntime& operator=(const PolicyRuntime&) = delete;

  // Republishes every policy for the interfaces online now (one map update per policy and family).
  void publish(const policy::OnlineInterfaces& online);
  // Periodic upkeep: LAN devices that appeared or vanished, connected networks, the uplink tables'
  // route copies, rules naming a src_iface whose device changed.
  void refresh(const std::vector<UplinkView>& uplinks);
  // An uplink's device went away or down: its table copies go (mwan3 flushes the table at ifdown).
  void uplink_down(const UplinkView& uplink);

  [[nodiscard]] nlohmann::json policies_json() const;
  [[nodiscard]] nlohmann::json rules_json() const;
  [[nodiscard]] nlohmann::json connected_json() const;

 private:
  void write_rules();
  void refresh_lan(const std::vector<UplinkView>& uplinks);
  void refresh_connected();

  const config::Config& cfg_;
  datapath::Datapath& dp_;
  policy::MarkSpace marks_;
  std::map<std::string, uint32_t> policy_ids_;
  policy::CompiledRules rules_;
  policy::PolicyTable table_;
  netlink::PolicyRules kernel_;
  std::set<std::string> uplink_devices_;  // every interface's device, enabled or not: never LAN
  std::vector<netlink::RoutePrefix> connected_;
  std::string last_error_;
};

}  // namespace uplinkd
