// The mwan3 configuration as uplinkd understands it: mwan3's UCI file with its defaults
// (../shared/reference/mwan3-behaviour.md section 1) plus uplinkd's extensions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/ip_address.h"

namespace uplinkd::config {

// A configuration error a person can act on: where (file, line), which option, what is wrong.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, std::string option, const std::string& message);
  const std::string file;
  const int line;  // 0 when the error is not tied to one line
  const std::string option;
};

enum class Family { Ipv4, Ipv6 };

// mwan3's track_method names map onto uplinkd's probe methods.
enum class TrackMethod {
  Ping,       // "ping": ICMP or ICMPv6 echo (by family)
  Arping,     // "arping": ARP request to the gateway (IPv4 only)
  NpingTcp,   // "nping-tcp": TCP SYN to target:track_port
  Nslookup,   // "nslookup": DNS query to the target as resolver
  Httping,    // "httping": HTTP HEAD / to the target (HTTPS with httping_ssl), in-process
  NpingUdp,   // "nping-udp": UDP datagram to target:track_port (nping's 40125); echo or port unreachable
  NpingIcmp,  // "nping-icmp": ICMP or ICMPv6 echo, with nping's rule (every probe answered)
  NpingArp,   // "nping-arp": ARP request to the target (IPv4 only), with nping's rule
};

// mwan3 counts an nping target up only when nping reports "Lost: 0", i.e. every one of the
// `count` probes was answered; ping, arping, httping and nslookup need one answer.
bool needs_every_reply(TrackMethod m);

enum class InitialState { Online, Offline };

// A group of the system, resolved when the configuration is read.
struct ControlGroup {
  uint32_t gid = 0;  // gid_t
  std::string name;  // its name, or the number as given when the group database has no name for it
};

struct Globals {
  uint32_t mmx_mask = 0x3F00;
  int logging = 0;
  std::string loglevel = "notice";
  std::vector<std::string> rt_table_lookup;
  // Extensions.
  uint32_t probe_reply_mark = 0;  // mark set on matched probe replies at tc ingress; 0 = off
  uint32_t probe_reply_mark_mask = 0xFFFFFFFF;
  // Failover hygiene (extensions). Idle flows are classified again after their protocol's timeout
  // (0 never); the TCP default is OpenWrt's nf_conntrack_tcp_timeout_established.
  uint32_t flow_timeout_tcp_s = 7440;
  uint32_t flow_timeout_udp_s = 180;
  uint32_t flow_timeout_s = 600;  // protocols other than TCP and UDP
  bool reset_stale_tcp = true;    // RST the LAN client of a TCP flow whose uplink went down
  bool conntrack_by_mark = true;  // delete a dead uplink's conntrack entries by its mark
  uint32_t flow_table_size = 0;   // entries of the per-flow maps; 0: from the RAM (flow_table_entries())
  // The router's own traffic (extension): uplinkd's default route(s) in the main table follow the
  // policy of the default rule, at this metric, below netifd's per-uplink metrics.
  bool local_route = true;
  uint32_t local_route_metric = 1;
  // `option local_rules` (extension, on by default, as mwan3's OUTPUT chain always is): the router's
  // own traffic follows every rule, through the nft output table (loader/local_out/output_table.h).
  // `option local_rules '0'` leaves it to the default rule's policy by the local route.
  bool local_rules = true;
  // The control socket (extension): `option control_group` names a group whose members may use its
  // read-only verbs (status, interfaces, ...); unset, only root may use it.
  std::optional<ControlGroup> control_group;
  // The metrics listener (extension): `/metrics` and the status page at each address:port given
  // (option or list, several separated by spaces). Empty, the default: no listener.
  std::vector<std::string> metrics_listen;
  // Options uplinkd does not use (e.g. local_source, rtmon_interval), kept verbatim; lists in order.
  std::map<std::string, std::vector<std::string>> other_options;
};

// `option timeout 'auto'` (extension): each target's probe timeout learnt from its RTTs
// (loader/health/adaptive_timeout.h), never below `min_s` nor above `max_s`.
struct AutoTimeout {
  double min_s = 0.05;  // option timeout_min
  double max_s = 1.0;   // option timeout_max; also the timeout before a target's first reply
  bool operator==(const AutoTimeout&) const = default;
};

struct InterfaceConfig {
  std::string name;
  int line = 0;     // line of the `config interface` header
  uint32_t id = 0;  // mwan3 interface id: 1-based position among all interface sections
  bool enabled = false;
  Family family = Family::Ipv4;
  std::vector<IpAddress> track_ip;
  TrackMethod track_method = TrackMethod::Ping;
  int reliability = 1;
  int count = 1;
  double timeout_s = 4;                     // extension: fractional seconds; with timeout_auto, its max_s
  std::optional<AutoTimeout> timeout_auto;  // set by `option timeout 'auto'` (extension)
  double interval_s = 10;                   // extension: fractional seconds
  double failure_interval_s = 10;           // defaults to interval
  double recovery_interval_s = 10;          // defaults to interval
  bool keep_failure_interval = false;
  int down = 5;
  int up = 5;
  int size = 56;
  int max_ttl = 60;
  bool check_quality = false;
  int failure_latency_ms = 1000;
  int failure_loss_pct = 40;
  int recovery_latency_ms = 500;
  int recovery_loss_pct = 10;
  InitialState initial_state = InitialState::Online;
  std::vector<std::string> flush_conntrack;
  // Extensions (plain Linux, or overriding /etc/config/network).
  std::string device;                // resolved: from `option device` or the network file
  std::optional<IpAddress> gateway;  // resolved: from `option gateway` or the network file; else learnt
  uint16_t track_port = 80;          // nping-tcp target port (nping-udp: 40125, nping's default)
  bool httping_ssl = false;          // mwan3's option: httping over HTTPS (port 443)
  std::string dns_query_name = "openwrt.org";  // nslookup: the name asked for
  uint32_t icmp_limit_rate = 0;                // ICMP limiter packets/second; 0 = off (opt-in)
  uint32_t icmp_limit_burst = 5;               // ICMP limiter burst, in packets
  // Path MTU (extension): measured when the uplink comes up and when its device MTU changes, then
  // again every pmtu_interval seconds; 0 turns measuring off (loader/pmtu/path_mtu.h).
  uint32_t pmtu_interval_s = 600;
  std::map<std::string, std::vector<std::string>> other_options;  // unused options, kept verbatim
};

struct MemberConfig {
  std::string name;
  int line = 0;
  std::string interface;
  int metric = 1;
  int weight = 1;
  std::map<std::string, std::vector<std::string>> other_options;  // unused options, kept verbatim
};

struct PolicyConfig {
  std::string name;
  int line = 0;
  std::vector<std::string> use_member;
  std::string last_resort = "unreachable";  // unreachable | blackhole | default
  bool failback_move = false;  // extension `failback 'move'`: a returning better uplink takes its flows back
  std::map<std::string, std::vector<std::string>> other_options;  // unused options, kept verbatim
};

struct RuleConfig {
  std::string name;
  int line = 0;
  std::string use_policy;                      // a policy name or default / unreachable / blackhole
  std::map<std::string, std::string> options;  // the rest, kept verbatim for the policy engine
                                               // (a `list` is joined with ',', mwan3's list syntax)
};

// `config wireguard '<name>'` (extension): which policy a WireGuard device's peer endpoints follow,
// and what uplinkd may do about host routes to them. Devices without a section get the defaults.
struct WireguardConfig {
  struct StaticEndpoint {
    IpAddress address;
    uint16_t port = 0;  // host order
    int line = 0;
  };
  std::string device;  // `option device`, else the section name
  int line = 0;
  std::string policy;  // `option policy`; empty: the default rule's (default_rule_policy)
  bool fix_endpoint_routes = true;
  // `option clamp_mss '1'` (off by default): TCP SYNs and SYN-ACKs through the device get an MSS that
  // fits the path MTU of the uplink its endpoints use now (loader/datapath/mss_clamp.h).
  bool clamp_mss = false;
  std::vector<StaticEndpoint> endpoints;  // `list endpoint 'ip:port'`
  // `list endpoint` values naming a host: not resolved (yet); kept as sentences for the log and
  // `uplinkctl wireguard` ("<file>:<line>: option 'endpoint': ...").
  std::vector<std::string> unsupported_endpoints;
};

// The policy of the default rule for one family: the first rule that matches a UDP packet to every
// destination of that family (dest_ip absent, 0.0.0.0/0 or ::/0; proto absent, all or udp; no source,
// port, src_iface or ipset condition). mwan3's first match wins, so a later catch-all rule never
// sees such a packet; this agrees with PolicyRuntime::default_route_members, except that a udp-only
// catch-all rule counts here (WireGuard is UDP).
struct DefaultRulePolicy {
  std::string policy;  // a policy name or default / unreachable / blackhole
  std::string rule;    // the rule section it comes from
  int line = 0;
};

struct Config {
  std::string file;
  Globals globals;
  std::vector<InterfaceConfig> interfaces;  // in file order; id = index + 1
  std::vector<MemberConfig> members;
  std::vector<PolicyConfig> policies;
  std::vector<RuleConfig> rules;
  std::vector<WireguardConfig> wireguard;  // extension sections, in file order
  // Options neither mwan3 nor uplinkd knows, one sentence each naming file, line, option and section
  // (config::unknown_option_warnings): ignored as mwan3 ignores them, but said at start, at reload
  // and by --check-config.
  std::vector<std::string> warnings;

  [[nodiscard]] const InterfaceConfig* find_interface(const std::string& name) const;
  [[nodiscard]] const WireguardConfig* find_wireguard(const std::string& device) const;
};

// Reads the mwan3 UCI file at `mwan3_path`; resolves each interface's device and gateway from
// `option device` / `option gateway`, or else from the OpenWrt network file at `network_path` when given.
// Throws ConfigError naming file, line and option for anything malformed or inconsistent.
Config load(const std::string& mwan3_path, const std::optional<std::string>& network_path);

// The same from text (tests); `file` is the name used in errors.
Config parse(const std::string& text, const std::string& file,
             const std::optional<std::string>& network_text = std::nullopt,
             const std::string& network_file = "network");

// nullopt when no rule matches every destination of `family`.
std::optional<DefaultRulePolicy> default_rule_policy(const Config& cfg, Family family);

// The mwan3 mark of interface id `id`: the id's bits spread over the set bits of `mask`
// (0x3F00: id 1 -> 0x100, id 60 -> 0x3c00). Returns 0 when the id does not fit.
uint32_t mark_for_id(uint32_t id, uint32_t mask);

// Entries of the per-flow maps (flows, tcp_seen; sticky and inbound a quarter): flow_table_size, or
// when it is 0, one per 16 KiB of `mem_total_bytes` as a power of two in [4096, 262144].
uint32_t flow_table_entries(const Globals& g, uint64_t mem_total_bytes);

}  // namespace uplinkd::config
