// mwan3's members, policies and rules, kept true in the datapath and the kernel: compiles the rules
// into the classifier's map, republishes every policy when an uplink's state changes, installs
// mwan3's ip rules, keeps each uplink's table holding its copies of the main table's routes, keeps
// the connected-networks trie current, and attaches the LAN classifier to every LAN-side device.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "datapath/datapath.h"
#include "datapath/set_maps.h"
#include "local_out/output_table.h"
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

  // What a configuration compiles to before anything is applied: compile() throws for a bad one, so
  // a reload can refuse it with nothing changed.
  struct Compiled {
    policy::MarkSpace marks;
    std::map<std::string, uint32_t> policy_ids;
    policy::CompiledRules rules;
  };
  // Throws config::ConfigError naming file, line and option.
  static Compiled compile(const config::Config& cfg);

  // A member of the default rule's policy carrying new flows now (see default_route_members).
  struct RouteMember {
    uint32_t id = 0;  // interface id
    int weight = 1;
  };

  // Compiles the rules (throws config::ConfigError naming file, line and option) and installs the
  // general ip rules. Nothing is online yet: every policy starts at its last_resort. Keeps its own
  // copy of `cfg`, so a reload never leaves it pointing at a replaced configuration.
  // `initially_online`: the members published at once (those a predecessor daemon had online, when
  // this start adopts its datapath; none otherwise).
  PolicyRuntime(const config::Config& cfg, datapath::Datapath& dp,
                const policy::OnlineInterfaces& initially_online = {});
  ~PolicyRuntime();  // detaches the LAN classifier; PolicyRules removes exactly its rules and routes
  PolicyRuntime(const PolicyRuntime&) = delete;
  PolicyRuntime& operator=(const PolicyRuntime&) = delete;

  // Installs nft table inet `table` (local_out/output_ruleset.h), which sends the router's own
  // traffic through every rule, and keeps it current from here on (policies, reloads, connected
  // networks, ipsets, sticky entries). Throws std::runtime_error when it cannot be installed; then
  // the runtime goes on without it.
  void enable_output_table(const std::string& table);

  // Republishes every policy for the interfaces online now (one map update per policy and family).
  void publish(const policy::OnlineInterfaces& online);
  // Periodic upkeep: LAN devices that appeared or vanished, connected networks, the uplink tables'
  // route copies, the source rules of the uplinks' addresses, rules naming a src_iface whose device
  // changed.
  void refresh(const std::vector<UplinkView>& uplinks);
  // An uplink's device went away or down: its table copies go (mwan3 flushes the table at ifdown), and
  // so do its source rules.
  void uplink_down(const UplinkView& uplink);

  // Applies a configuration that compile() accepted, in place: programs stay attached and flows stay
  // remembered; rules, policies (for `online`), the classifier settings and mwan3's ip rules follow
  // `next` (rules of interfaces that keep their id, device, family and mark are left untouched).
  // Returns what went wrong in the kernel (empty: nothing); the new configuration is in force anyway.
  std::string reload(const config::Config& next, Compiled compiled, const policy::OnlineInterfaces& online);

  // The online members of the policy that the default rule uses for `family` (AF_INET or AF_INET6), at
  // their lowest metric: what the router's own traffic follows. The default rule is the first rule
  // that matches every destination of the family (dest_ip 0.0.0.0/0 or ::/0, or none) and nothing
  // narrower (no source, port, protocol, src_iface or ipset condition). Empty when there is no such
  // rule, its policy has no member online, or it names default/unreachable/blackhole.
  [[nodiscard]] std::vector<RouteMember> default_route_members(int family) const;
  [[nodiscard]] const config::Config& config() const { return cfg_; }

  [[nodiscard]] nlohmann::json policies_json() const;
  [[nodiscard]] nlohmann::json rules_json() const;
  [[nodiscard]] nlohmann::json connected_json() const;

 private:
  void write_rules();
  void carry_rule_state(const std::vector<std::string>& old_rule_names,
                        const std::function<void(const std::string&)>& note);
  void write_classifier_cfg();
  void log_rule_warnings() const;
  int install_uplink_rules(const config::InterfaceConfig& i, std::string* error);
  void refresh_lan(const std::vector<UplinkView>& uplinks);
  void refresh_connected();
  void refresh_source_rules(const std::vector<UplinkView>& uplinks);
  void load_sets();
  void rebuild_output();
  void output_step(const std::string& what, const std::function<void()>& step);

  config::Config cfg_;
  datapath::Datapath& dp_;
  policy::MarkSpace marks_;
  std::map<std::string, uint32_t> policy_ids_;
  policy::CompiledRules rules_;
  std::optional<std::vector<rule_entry>> written_rules_;  // what write_rules() last wrote
  policy::PolicyTable table_;
  netlink::PolicyRules kernel_;
  std::set<std::string> uplink_devices_;  // every interface's device, enabled or not: never LAN
  std::vector<netlink::RoutePrefix> connected_;
  std::string last_error_;
  std::string last_source_error_;                   // logged once until it changes (refresh runs every 2 s)
  int sets_fd_ = -1;                                // the pinned `sets` map (owned)
  std::unique_ptr<datapath::SetMaps> sets_;         // the tries behind `option ipset` rules
  std::unique_ptr<local_out::OutputTable> output_;  // the router's own traffic; null: not enabled
  policy::OnlineInterfaces published_online_;       // what publish() was last given
  std::string last_output_error_;                   // logged once until it changes
};

}  // namespace uplinkd
