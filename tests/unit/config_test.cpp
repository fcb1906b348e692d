// The mwan3 configuration reader: UCI grammar, mwan3's defaults, uplinkd's extensions, device
// resolution from /etc/config/network, and errors that name file, line and option.
#include "config/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "config/uci.h"

namespace uplinkd::config {
namespace {

const std::string kTestData = std::string(UPLINKD_SOURCE_DIR) + "/tests/unit/testdata";
const std::string kFieldReports = std::string(UPLINKD_SHARED_DIR) + "/field-reports";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

// ---- UCI grammar ------------------------------------------------------------------------------

TEST(Uci, SectionsOptionsListsAndLines) {
  const std::string text =
      "# leading comment\n"
      "config interface 'wan'\n"
      "\toption enabled '1'   # trailing comment\n"
      "  list track_ip \"1.1.1.1\"\n"
      "list track_ip 9.9.9.9\n"
      "\n"
      " \n"
      "\xC2\xA0\n"  // a no-break space alone, as web pages render blank lines
      "config member\r\n"
      "\toption interface wan\r\n"
      "config member\n"
      "\toption weight 'a''b'\"c\"\n"
      "\toption note 'x # y'\n"
      "\toption bare a#b\n"
      "\toption esc \"q\\\"q\"\n"
      "\toption empty ''\n";
  uci::Package p = uci::parse(text, "f");
  ASSERT_EQ(p.sections.size(), 3U);
  const uci::Section& wan = p.sections[0];
  EXPECT_EQ(wan.type, "interface");
  EXPECT_EQ(wan.name, "wan");
  EXPECT_FALSE(wan.anonymous);
  EXPECT_EQ(wan.line, 2);
  ASSERT_NE(wan.find("enabled"), nullptr);
  EXPECT_EQ(wan.find("enabled")->last().text, "1");
  EXPECT_EQ(wan.find("enabled")->line, 3);
  const uci::Option* track = wan.find("track_ip");
  ASSERT_NE(track, nullptr);
  EXPECT_TRUE(track->is_list);
  ASSERT_EQ(track->values.size(), 2U);
  EXPECT_EQ(track->values[0].text, "1.1.1.1");
  EXPECT_EQ(track->values[0].line, 4);
  EXPECT_EQ(track->values[1].text, "9.9.9.9");
  EXPECT_EQ(track->values[1].line, 5);

  EXPECT_EQ(p.sections[1].name, "@member[0]");
  EXPECT_TRUE(p.sections[1].anonymous);
  EXPECT_EQ(p.sections[1].line, 9);
  EXPECT_EQ(p.sections[1].find("interface")->last().text, "wan");  // CR stripped
  const uci::Section& m1 = p.sections[2];
  EXPECT_EQ(m1.name, "@member[1]");
  EXPECT_EQ(m1.find("weight")->last().text, "abc");
  EXPECT_EQ(m1.find("note")->last().text, "x # y");
  EXPECT_EQ(m1.find("bare")->last().text, "a#b");
  EXPECT_EQ(m1.find("esc")->last().text, "q\"q");
  EXPECT_EQ(m1.find("empty")->last().text, "");
}

TEST(Uci, AnonymousIndexCountsNamedSectionsOfTheType) {
  uci::Package p = uci::parse("config rule 'a'\nconfig rule\nconfig policy\nconfig rule\n", "f");
  ASSERT_EQ(p.sections.size(), 4U);
  EXPECT_EQ(p.sections[1].name, "@rule[1]");
  EXPECT_EQ(p.sections[2].name, "@policy[0]");
  EXPECT_EQ(p.sections[3].name, "@rule[2]");
}

TEST(Uci, RepeatedNamedSectionMergesAndOptionReplaces) {
  uci::Package p = uci::parse(
      "config interface 'wan'\n option up '3'\n list track_ip 1.1.1.1\n"
      "config interface 'wanb'\n"
      "config interface 'wan'\n option up '4'\n list track_ip 8.8.8.8\n"
      "package mwan3\n",
      "f");
  ASSERT_EQ(p.sections.size(), 2U);
  EXPECT_EQ(p.sections[0].find("up")->last().text, "4");
  EXPECT_EQ(p.sections[0].find("up")->values.size(), 1U);
  EXPECT_EQ(p.sections[0].find("track_ip")->values.size(), 2U);
  EXPECT_EQ(p.sections[0].line, 1);
}

// ---- defaults ---------------------------------------------------------------------------------

TEST(Defaults, InterfaceWithOnlyEnabledAndDevice) {
  Config c = parse("config interface 'wan'\n\toption enabled '1'\n\toption device 'eth1'\n", "mwan3");
  ASSERT_EQ(c.interfaces.size(), 1U);
  const InterfaceConfig& i = c.interfaces[0];
  EXPECT_EQ(i.name, "wan");
  EXPECT_EQ(i.line, 1);
  EXPECT_EQ(i.id, 1U);
  EXPECT_TRUE(i.enabled);
  EXPECT_EQ(i.family, Family::Ipv4);
  EXPECT_TRUE(i.track_ip.empty());
  EXPECT_EQ(i.track_method, TrackMethod::Ping);
  EXPECT_EQ(i.reliability, 1);
  EXPECT_EQ(i.count, 1);
  EXPECT_EQ(i.timeout_s, 4);
  EXPECT_EQ(i.interval_s, 10);
  EXPECT_EQ(i.failure_interval_s, 10);
  EXPECT_EQ(i.recovery_interval_s, 10);
  EXPECT_FALSE(i.keep_failure_interval);
  EXPECT_EQ(i.down, 5);
  EXPECT_EQ(i.up, 5);
  EXPECT_EQ(i.size, 56);
  EXPECT_EQ(i.max_ttl, 60);
  EXPECT_FALSE(i.check_quality);
  EXPECT_EQ(i.failure_latency_ms, 1000);
  EXPECT_EQ(i.failure_loss_pct, 40);
  EXPECT_EQ(i.recovery_latency_ms, 500);
  EXPECT_EQ(i.recovery_loss_pct, 10);
  EXPECT_EQ(i.initial_state, InitialState::Online);
  EXPECT_TRUE(i.flush_conntrack.empty());
  EXPECT_EQ(i.device, "eth1");
  EXPECT_FALSE(i.gateway.has_value());
  EXPECT_EQ(i.track_port, 80);
  EXPECT_EQ(i.dns_query_name, "openwrt.org");
  EXPECT_EQ(i.icmp_limit_rate, 0U);
  EXPECT_EQ(i.icmp_limit_burst, 5U);
  EXPECT_EQ(i.pmtu_interval_s, 600U);
  EXPECT_TRUE(i.other_options.empty());

  EXPECT_EQ(c.globals.mmx_mask, 0x3F00U);
  EXPECT_EQ(c.globals.logging, 0);
  EXPECT_EQ(c.globals.loglevel, "notice");
  EXPECT_TRUE(c.globals.rt_table_lookup.empty());
  EXPECT_EQ(c.globals.probe_reply_mark, 0U);
  EXPECT_EQ(c.globals.probe_reply_mark_mask, 0xFFFFFFFFU);
}

TEST(Defaults, DisabledInterfaceNeedsNoDevice) {
  Config c = parse("config interface 'wanb'\n", "mwan3");
  ASSERT_EQ(c.interfaces.size(), 1U);
  EXPECT_FALSE(c.interfaces[0].enabled);
  EXPECT_TRUE(c.interfaces[0].device.empty());
}

TEST(Defaults, MemberPolicyRule) {
  Config c = parse(
      "config interface 'wan'\n"
      "config member 'm'\n option interface 'wan'\n"
      "config policy 'p'\n list use_member 'm'\n"
      "config rule 'r'\n option use_policy 'p'\n option dest_port '80,443'\n list src_ip '10.0.0.1'\n"
      " list src_ip '10.0.0.2'\n",
      "mwan3");
  ASSERT_EQ(c.members.size(), 1U);
  EXPECT_EQ(c.members[0].metric, 1);
  EXPECT_EQ(c.members[0].weight, 1);
  ASSERT_EQ(c.policies.size(), 1U);
  EXPECT_EQ(c.policies[0].last_resort, "unreachable");
  EXPECT_EQ(c.policies[0].use_member, std::vector<std::string>{"m"});
  ASSERT_EQ(c.rules.size(), 1U);
  EXPECT_EQ(c.rules[0].use_policy, "p");
  EXPECT_EQ(c.rules[0].options.count("use_policy"), 0U);
  EXPECT_EQ(c.rules[0].options.at("dest_port"), "80,443");
  EXPECT_EQ(c.rules[0].options.at("src_ip"), "10.0.0.1,10.0.0.2");
}

TEST(Defaults, UnknownOptionsKeptUnknownSectionsIgnored) {
  Config c = parse(
      "config globals 'globals'\n option local_source 'lan'\n option rtmon_interval '5'\n"
      "config interface 'wan'\n option keep_alive_x '1'\n list future 'a'\n list future 'b'\n"
      "config dnsmasq\n option whatever 'x'\n"
      "config redirect\n option name 'Mail server goes out 170.53.100.25'\n",
      "mwan3");
  EXPECT_EQ(c.globals.other_options.at("local_source"), std::vector<std::string>{"lan"});
  EXPECT_EQ(c.globals.other_options.at("rtmon_interval"), std::vector<std::string>{"5"});
  EXPECT_EQ(c.interfaces[0].other_options.at("keep_alive_x"), std::vector<std::string>{"1"});
  EXPECT_EQ(c.interfaces[0].other_options.at("future"), (std::vector<std::string>{"a", "b"}));
}

TEST(Defaults, OnlyTheSectionNamedGlobalsIsRead) {
  // mwan3 reads `config_get ... globals mmx_mask`: another globals section has no effect.
  Config c = parse("config globals 'other'\n option mmx_mask 'junk'\n", "mwan3");
  EXPECT_EQ(c.globals.mmx_mask, 0x3F00U);
}

TEST(Defaults, IdsCountEveryInterfaceSection) {
  Config c = parse(
      "config interface 'a'\n option enabled '0'\n"
      "config member 'm'\n option interface 'c'\n"
      "config interface 'b'\n option enabled '1'\n option device 'eth1'\n"
      "config interface 'c'\n",
      "mwan3");
  ASSERT_EQ(c.interfaces.size(), 3U);
  EXPECT_EQ(c.find_interface("a")->id, 1U);
  EXPECT_EQ(c.find_interface("b")->id, 2U);
  EXPECT_EQ(c.find_interface("c")->id, 3U);
  EXPECT_EQ(c.find_interface("d"), nullptr);
}

TEST(Values, BooleanWords) {
  const std::pair<const char*, bool> words[] = {{"0", false},     {"1", true},    {"no", false},
                                                {"yes", true},    {"off", false}, {"on", true},
                                                {"false", false}, {"true", true}};
  for (const auto& [word, expected] : words) {
    Config c =
        parse(std::string("config interface 'w'\n option keep_failure_interval '") + word + "'\n", "mwan3");
    EXPECT_EQ(c.interfaces[0].keep_failure_interval, expected) << word;
  }
}

TEST(Values, FractionalSeconds) {
  Config c = parse(
      "config interface 'a'\n option interval '0.5'\n option failure_interval '0.1'\n"
      " option recovery_interval '1.5'\n option timeout '0.25'\n"
      "config interface 'b'\n option interval '2.5'\n"
      "config interface 'c'\n option interval '7'\n option timeout '2'\n option recovery_interval '3'\n",
      "mwan3");
  const InterfaceConfig& a = c.interfaces[0];
  EXPECT_DOUBLE_EQ(a.interval_s, 0.5);
  EXPECT_DOUBLE_EQ(a.failure_interval_s, 0.1);
  EXPECT_DOUBLE_EQ(a.recovery_interval_s, 1.5);
  EXPECT_DOUBLE_EQ(a.timeout_s, 0.25);
  // failure/recovery default to the interval as configured.
  EXPECT_DOUBLE_EQ(c.interfaces[1].failure_interval_s, 2.5);
  EXPECT_DOUBLE_EQ(c.interfaces[1].recovery_interval_s, 2.5);
  EXPECT_DOUBLE_EQ(c.interfaces[2].interval_s, 7);
  EXPECT_DOUBLE_EQ(c.interfaces[2].failure_interval_s, 7);
  EXPECT_DOUBLE_EQ(c.interfaces[2].recovery_interval_s, 3);
  EXPECT_DOUBLE_EQ(c.interfaces[2].timeout_s, 2);
}

// `option timeout 'auto'`: the bounds' defaults, their options, and timeout_s as the cap; a number
// keeps mwan3's fixed timeout with no adaptive part at all.
TEST(Values, TimeoutAuto) {
  Config c = parse(
      "config interface 'a'\n option timeout 'auto'\n"
      "config interface 'b'\n option timeout 'auto'\n option timeout_min '0.02'\n option timeout_max '0.5'\n"
      "config interface 'c'\n option timeout '0.05'\n"
      "config interface 'd'\n",
      "mwan3");
  ASSERT_TRUE(c.interfaces[0].timeout_auto);
  EXPECT_DOUBLE_EQ(c.interfaces[0].timeout_auto->min_s, 0.05);
  EXPECT_DOUBLE_EQ(c.interfaces[0].timeout_auto->max_s, 1.0);
  EXPECT_DOUBLE_EQ(c.interfaces[0].timeout_s, 1.0);
  ASSERT_TRUE(c.interfaces[1].timeout_auto);
  EXPECT_DOUBLE_EQ(c.interfaces[1].timeout_auto->min_s, 0.02);
  EXPECT_DOUBLE_EQ(c.interfaces[1].timeout_auto->max_s, 0.5);
  EXPECT_DOUBLE_EQ(c.interfaces[1].timeout_s, 0.5);
  EXPECT_FALSE(c.interfaces[2].timeout_auto);
  EXPECT_DOUBLE_EQ(c.interfaces[2].timeout_s, 0.05);
  EXPECT_FALSE(c.interfaces[3].timeout_auto);
  EXPECT_DOUBLE_EQ(c.interfaces[3].timeout_s, 4);
  // timeout_min and timeout_max are known options: used, not kept verbatim, no warning.
  EXPECT_TRUE(c.interfaces[1].other_options.empty());
  EXPECT_TRUE(c.warnings.empty());
}

TEST(Values, ExtensionsAndTrackMethods) {
  Config c = parse(
      "config globals 'globals'\n option mmx_mask '0xFF00'\n option probe_reply_mark '0x10000'\n"
      " option probe_reply_mark_mask '65536'\n option logging 'on'\n option loglevel 'debug'\n"
      " list rt_table_lookup '100'\n"
      "config interface 'wan'\n option enabled '1'\n option device 'eth1'\n option gateway '192.0.2.1'\n"
      " option track_method 'nping-tcp'\n option track_port '443'\n list track_ip '1.1.1.1'\n"
      " option icmp_limit_rate '100'\n option icmp_limit_burst '20'\n option pmtu_interval '0'\n"
      "config interface 'wan6'\n option family 'ipv6'\n option track_method 'nslookup'\n"
      " option dns_query_name 'example.org'\n list track_ip '2606:4700:4700::1111'\n"
      " option gateway 'fe80::1'\n option initial_state 'offline'\n list flush_conntrack 'ifup'\n"
      " list flush_conntrack 'disconnected'\n"
      "config interface 'lan2'\n option track_method 'arping'\n option check_quality '0'\n",
      "mwan3");
  EXPECT_EQ(c.globals.mmx_mask, 0xFF00U);
  EXPECT_EQ(c.globals.probe_reply_mark, 0x10000U);
  EXPECT_EQ(c.globals.probe_reply_mark_mask, 0x10000U);
  EXPECT_EQ(c.globals.logging, 1);
  EXPECT_EQ(c.globals.loglevel, "debug");
  EXPECT_EQ(c.globals.rt_table_lookup, std::vector<std::string>{"100"});
  const InterfaceConfig& wan = c.interfaces[0];
  EXPECT_EQ(wan.gateway, ip("192.0.2.1"));
  EXPECT_EQ(wan.track_method, TrackMethod::NpingTcp);
  EXPECT_EQ(wan.track_port, 443);
  EXPECT_EQ(wan.icmp_limit_rate, 100U);
  EXPECT_EQ(wan.icmp_limit_burst, 20U);
  EXPECT_EQ(wan.pmtu_interval_s, 0U);
  const InterfaceConfig& wan6 = c.interfaces[1];
  EXPECT_EQ(wan6.family, Family::Ipv6);
  EXPECT_EQ(wan6.track_method, TrackMethod::Nslookup);
  EXPECT_EQ(wan6.dns_query_name, "example.org");
  EXPECT_EQ(wan6.track_ip, std::vector<IpAddress>{ip("2606:4700:4700::1111")});
  EXPECT_EQ(wan6.gateway, ip("fe80::1"));
  EXPECT_EQ(wan6.initial_state, InitialState::Offline);
  EXPECT_EQ(wan6.flush_conntrack, (std::vector<std::string>{"ifup", "disconnected"}));
  EXPECT_EQ(c.interfaces[2].track_method, TrackMethod::Arping);
}

TEST(Values, HttpingAndNpingMethods) {
#ifdef UPLINKD_HAVE_TLS
  const bool tls = true;  // a build without TLS refuses httping_ssl '1' (Errors.MalformedInputs)
#else
  const bool tls = false;
#endif
  Config c = parse("config interface 'a'\n option track_method 'httping'\n option httping_ssl '" +
                       std::string(tls ? "1" : "0") +
                       "'\n"
                       " option check_quality '1'\n list track_ip '192.0.2.1'\n"
                       "config interface 'b'\n option track_method 'nping-udp'\n list track_ip '192.0.2.1'\n"
                       "config interface 'c'\n option track_method 'nping-udp'\n option track_port '7'\n"
                       "config interface 'd'\n option track_method 'nping-icmp'\n option family 'ipv6'\n"
                       "config interface 'e'\n option track_method 'nping-arp'\n"
                       "config interface 'f'\n option track_method 'httping'\n",
                   "mwan3");
  ASSERT_EQ(c.interfaces.size(), 6U);
  EXPECT_EQ(c.interfaces[0].track_method, TrackMethod::Httping);
  EXPECT_EQ(c.interfaces[0].httping_ssl, tls);
  EXPECT_TRUE(c.interfaces[0].check_quality);
  EXPECT_EQ(c.interfaces[1].track_method, TrackMethod::NpingUdp);
  EXPECT_EQ(c.interfaces[1].track_port, 40125);  // nping's default UDP port: mwan3 passes no -p
  EXPECT_EQ(c.interfaces[2].track_port, 7);
  EXPECT_EQ(c.interfaces[3].track_method, TrackMethod::NpingIcmp);
  EXPECT_EQ(c.interfaces[4].track_method, TrackMethod::NpingArp);
  EXPECT_FALSE(c.interfaces[5].httping_ssl);
  // nping's "Lost: 0" rule applies to the nping methods mwan3 added with this issue, not to httping.
  EXPECT_TRUE(needs_every_reply(TrackMethod::NpingUdp));
  EXPECT_TRUE(needs_every_reply(TrackMethod::NpingIcmp));
  EXPECT_TRUE(needs_every_reply(TrackMethod::NpingArp));
  EXPECT_FALSE(needs_every_reply(TrackMethod::Httping));
  EXPECT_FALSE(needs_every_reply(TrackMethod::Ping));
}

// ---- mark_for_id ------------------------------------------------------------------------------

struct MarkCase {
  uint32_t id;
  uint32_t mask;
  uint32_t mark;
};

TEST(MarkForId, SpreadsIdBitsOverMaskBits) {
  const MarkCase cases[] = {
      {1, 0x3F00, 0x100},
      {2, 0x3F00, 0x200},
      {3, 0x3F00, 0x300},
      {60, 0x3F00, 0x3C00},
      {61, 0x3F00, 0x3D00},  // blackhole id
      {62, 0x3F00, 0x3E00},  // unreachable id
      {63, 0x3F00, 0x3F00},  // mmdefault: the mask itself
      {64, 0x3F00, 0},
      {0, 0x3F00, 0},
      {1, 0xFF00, 0x100},
      {252, 0xFF00, 0xFC00},
      {255, 0xFF00, 0xFF00},
      {256, 0xFF00, 0},
      {5, 0xAA, 0x22},
      {3, 0x3, 0x3},
      {4, 0x3, 0},
      {1, 0, 0},
      {1, 0x80000000, 0x80000000},
      {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(mark_for_id(c.id, c.mask), c.mark) << "id " << c.id << " mask 0x" << std::hex << c.mask;
  }
}

// ---- device and gateway resolution ------------------------------------------------------------

TEST(Network, ResolvesDeviceAndGateway) {
  const std::string mwan3 =
      "config interface 'wan'\n option enabled '1'\n"
      "config interface 'wanb'\n option enabled '1'\n"
      "config interface 'vlan'\n option enabled '1'\n"
      "config interface 'wan6'\n option enabled '1'\n option family 'ipv6'\n"
      "config interface 'old'\n option enabled '1'\n"
      "config interface 'bridged'\n option enabled '1'\n"
      "config interface 'wg0'\n option enabled '1'\n"
      "config interface 'override'\n option enabled '1'\n option device 'eth9'\n option gateway '10.9.9.1'\n"
      "config interface 'st6'\n option enabled '1'\n option family 'ipv6'\n"
      "config interface 'off'\n option enabled '0'\n";
  const std::string network =
      "config interface 'wan'\n option device 'eth1'\n option proto 'static'\n option ipaddr '192.0.2.2'\n"
      " option gateway '192.0.2.1'\n"
      "config interface 'wanb'\n option device 'eth2'\n option proto 'pppoe'\n option username 'u'\n"
      "config device\n option name 'br-lan.253'\n option type '8021q'\n"
      "config interface 'vlan'\n option device 'br-lan.253'\n option proto 'dhcp'\n"
      "config interface 'wan6'\n option device '@wan'\n option proto 'dhcpv6'\n"
      "config interface 'old'\n option ifname 'eth0.2'\n option proto 'dhcp'\n"
      "config interface 'bridged'\n option type 'bridge'\n option ifname 'eth3 eth4'\n option proto 'dhcp'\n"
      "config interface 'wg0'\n option proto 'wireguard'\n option private_key 'k'\n"
      "config interface 'override'\n option device 'eth5'\n option proto 'static'\n option gateway "
      "'10.5.5.1'\n"
      "config interface 'st6'\n option device 'eth6'\n option proto 'static'\n option ip6gw '2001:db8::1'\n"
      " option gateway '192.0.2.9'\n";
  Config c = parse(mwan3, "mwan3", network, "network");
  auto dev = [&](const char* name) { return c.find_interface(name)->device; };
  auto gw = [&](const char* name) { return c.find_interface(name)->gateway; };
  EXPECT_EQ(dev("wan"), "eth1");
  EXPECT_EQ(gw("wan"), ip("192.0.2.1"));
  EXPECT_EQ(dev("wanb"), "pppoe-wanb");
  EXPECT_FALSE(gw("wanb").has_value());  // learnt from the main table
  EXPECT_EQ(dev("vlan"), "br-lan.253");
  EXPECT_FALSE(gw("vlan").has_value());
  EXPECT_EQ(dev("wan6"), "eth1");
  EXPECT_EQ(dev("old"), "eth0.2");
  EXPECT_EQ(dev("bridged"), "br-bridged");
  EXPECT_EQ(dev("wg0"), "wg0");
  EXPECT_EQ(dev("override"), "eth9");
  EXPECT_EQ(gw("override"), ip("10.9.9.1"));
  EXPECT_EQ(dev("st6"), "eth6");
  EXPECT_EQ(gw("st6"), ip("2001:db8::1"));
  EXPECT_TRUE(dev("off").empty());
}

struct ErrorCase {
  const char* name;
  std::string text;
  int line;
  std::string option;
  std::string fragment;
  std::optional<std::string> network = std::nullopt;
  std::string file = "mwan3";
};

void expect_error(const ErrorCase& c) {
  SCOPED_TRACE(c.name);
  try {
    parse(c.text, "mwan3", c.network, "network");
    ADD_FAILURE() << c.name << ": no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file, c.file);
    EXPECT_EQ(e.line, c.line);
    EXPECT_EQ(e.option, c.option);
    EXPECT_NE(std::string(e.what()).find(c.fragment), std::string::npos) << e.what();
    std::string prefix = c.file + ":" + std::to_string(c.line) + ": ";
    if (!c.option.empty()) {
      prefix += "option '" + c.option + "': ";
    }
    EXPECT_EQ(std::string(e.what()).rfind(prefix, 0), 0U) << e.what();
  }
}

TEST(Network, MissingDeviceIsAnError) {
  const ErrorCase cases[] = {
      {"no_network_file", "config interface 'wan'\n option enabled '1'\n", 1, "",
       "interface 'wan': no device: add option device to the mwan3 section or pass --network"},
      {"not_in_network_file", "config interface 'wan'\n option enabled '1'\n", 1, "",
       "interface 'wan': no device: no interface 'wan' in network",
       "config interface 'lan'\n option device 'br-lan'\n"},
      {"network_section_without_device",
       "config globals 'globals'\nconfig interface 'wan'\n option enabled '1'\n", 2, "",
       "interface 'wan': no device: its section in network names no device",
       "config interface 'wan'\n option proto 'dhcp'\n"},
      {"bad_gateway_in_network_file", "config interface 'wan'\n option enabled '1'\n", 4, "gateway",
       "'192.0.2.300' is not an IP address in interface 'wan'",
       "config interface 'wan'\n option device 'eth1'\n option proto 'static'\n option gateway "
       "'192.0.2.300'\n",
       "network"},
      {"network_syntax_error", "config interface 'wan'\n", 2, "device", "unclosed ' quote",
       "config interface 'wan'\n option device 'eth1\n", "network"},
      {"alias_to_nothing", "config interface 'wan6'\n option enabled '1'\n", 2, "device",
       "'@wan' names no interface section", "config interface 'wan6'\n option device '@wan'\n", "network"},
  };
  for (const auto& c : cases) {
    expect_error(c);
  }
}

TEST(Load, ReadsFilesAndResolvesFromTheNetworkFile) {
  Config c = load(kTestData + "/mwan3-two-wan", kTestData + "/network-openwrt");
  EXPECT_EQ(c.file, kTestData + "/mwan3-two-wan");
  ASSERT_EQ(c.interfaces.size(), 2U);
  const InterfaceConfig& wan = c.interfaces[0];
  EXPECT_EQ(wan.device, "wan");
  EXPECT_FALSE(wan.gateway.has_value());
  EXPECT_EQ(wan.track_ip, (std::vector<IpAddress>{ip("1.1.1.1"), ip("9.9.9.9")}));
  EXPECT_DOUBLE_EQ(wan.interval_s, 5);
  EXPECT_DOUBLE_EQ(wan.failure_interval_s, 1.5);
  EXPECT_DOUBLE_EQ(wan.recovery_interval_s, 5);
  EXPECT_EQ(wan.down, 3);
  EXPECT_EQ(wan.icmp_limit_rate, 100U);
  const InterfaceConfig& wanb = c.interfaces[1];
  EXPECT_EQ(wanb.device, "lan4");
  EXPECT_EQ(wanb.gateway, ip("192.0.2.1"));
  EXPECT_EQ(wanb.track_method, TrackMethod::Arping);
  EXPECT_EQ(wanb.initial_state, InitialState::Offline);
  EXPECT_EQ(c.globals.probe_reply_mark, 0x10000U);
  EXPECT_EQ(c.policies[0].last_resort, "default");
  EXPECT_EQ(c.rules[0].options.at("family"), "ipv4");
}

TEST(Load, UnreadableFileNamesFileAndReason) {
  const std::string missing = kTestData + "/does-not-exist";
  try {
    load(missing, std::nullopt);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file, missing);
    EXPECT_EQ(e.line, 0);
    EXPECT_EQ(e.option, "");
    EXPECT_EQ(std::string(e.what()), missing + ": No such file or directory");
  }
  try {
    load(kTestData + "/mwan3-two-wan", missing);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file, missing);
  }
  try {
    load(kTestData, std::nullopt);  // a directory
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file, kTestData);
    EXPECT_NE(std::string(e.what()).find("Is a directory"), std::string::npos) << e.what();
  }
}

// ---- malformed input --------------------------------------------------------------------------

const std::string kIface = "config interface 'wan'\n";  // line 1

TEST(Errors, MalformedInputs) {
  const ErrorCase cases[] = {
      // UCI level
      {"unclosed_single_quote", kIface + "\toption enabled '1\n", 2, "enabled", "unclosed ' quote"},
      {"unclosed_double_quote", kIface + "\toption device \"eth1\n", 2, "device", "unclosed \" quote"},
      {"unclosed_quote_in_header", "config interface 'wan\n", 1, "", "unclosed ' quote"},
      {"unknown_keyword", kIface + "\toptoin enabled '1'\n", 2, "", "unknown keyword 'optoin'"},
      {"stray_text", kIface + "\t...\n", 2, "", "unknown keyword '...'"},
      {"option_outside_section", "# no section yet\noption enabled '1'\n", 2, "enabled", "outside a section"},
      {"missing_value", kIface + "\toption enabled\n", 2, "enabled", "missing value"},
      {"extra_word", kIface + "\toption device eth1 eth2\n", 2, "device",
       "unexpected 'eth2' after the value"},
      {"config_without_type", "config\n", 1, "", "expected: config <type>"},
      {"config_too_many_words", "config interface wan extra\n", 1, "", "expected: config <type>"},
      {"bad_section_name", "config interface 'wan-b'\n", 1, "", "section name may contain only"},
      {"bad_option_name", kIface + " option 'en abled' 1\n", 2, "en abled", "option name may contain only"},
      {"trailing_backslash", kIface + " option device eth1\\\n", 2, "device", "backslash at the end"},
      {"same_name_other_type", kIface + "config member 'wan'\n", 2, "",
       "member 'wan': name already used by the interface section on line 1"},
      // numbers, booleans, words
      {"bad_number", kIface + "\toption count 'abc'\n", 2, "count",
       "'abc' is not a whole number in interface 'wan'; accepted: a whole number, 1 or more"},
      {"count_zero", kIface + "\toption count '0'\n", 2, "count", "'0' is out of range"},
      {"count_negative", kIface + "\toption count '-1'\n", 2, "count", "'-1' is out of range"},
      {"count_as_list", kIface + "\tlist count '1'\n\tlist count '2'\n", 3, "count",
       "given as a list of 2 values"},
      {"down_zero", kIface + "\toption down '0'\n", 2, "down", "'0' is out of range"},
      {"up_zero", kIface + "\toption up '0'\n", 2, "up", "'0' is out of range"},
      {"bad_boolean", kIface + "\toption enabled 'maybe'\n", 2, "enabled",
       "'maybe' is not a boolean in interface 'wan'; accepted: 0/1, no/yes, off/on, false/true"},
      {"bad_family", kIface + "\toption family 'ipv5'\n", 2, "family", "accepted: ipv4, ipv6"},
      {"bad_initial_state", kIface + "\toption initial_state 'up'\n", 2, "initial_state",
       "accepted: online, offline"},
      {"bad_flush_conntrack", kIface + "\tlist flush_conntrack 'always'\n", 2, "flush_conntrack",
       "accepted: ifup, ifdown, connected, disconnected"},
      // track_ip and methods
      {"bad_track_ip", kIface + "\tlist track_ip '1.1.1.1'\n\tlist track_ip '1.1.1.256'\n", 3, "track_ip",
       "'1.1.1.256' is not an IP address"},
      {"track_ip_wrong_family", kIface + "\tlist track_ip '2606:4700:4700::1111'\n", 2, "track_ip",
       "is not an IPv4 address (the interface has family ipv4)"},
      {"unknown_track_method", kIface + "\toption track_method 'icmp'\n", 2, "track_method",
       "'icmp' is not a track method in interface 'wan'; accepted: ping, arping, httping, nping-tcp, "
       "nping-udp, nping-icmp, nping-arp, nslookup"},
      {"arping_ipv6", kIface + "\toption family 'ipv6'\n\toption track_method 'arping'\n", 3, "track_method",
       "'arping' tracks IPv4 only"},
      {"nping_arp_ipv6", kIface + "\toption family 'ipv6'\n\toption track_method 'nping-arp'\n", 3,
       "track_method", "'nping-arp' tracks IPv4 only"},
      {"check_quality_needs_ping", kIface + "\toption track_method 'arping'\n\toption check_quality '1'\n", 3,
       "check_quality", "needs track_method ping or httping"},
      {"check_quality_nping_icmp",
       kIface + "\toption track_method 'nping-icmp'\n\toption check_quality '1'\n", 3, "check_quality",
       "needs track_method ping or httping"},
      // httping's target must be an address: mwan3's httping would resolve a name, uplinkd probes
      // through one uplink and has no resolver bound to it.
      {"httping_host_name", kIface + "\toption track_method 'httping'\n\tlist track_ip 'example.org'\n", 3,
       "track_ip", "'example.org' is not an IP address"},
      {"httping_ssl_not_boolean", kIface + "\toption track_method 'httping'\n\toption httping_ssl 'tls'\n", 3,
       "httping_ssl", "'tls' is not a boolean"},
      {"nping_udp_port_zero", kIface + "\toption track_method 'nping-udp'\n\toption track_port '0'\n", 3,
       "track_port", "'0' is out of range"},
      {"nping_udp_port_too_big", kIface + "\toption track_method 'nping-udp'\n\toption track_port '65536'\n",
       3, "track_port", "'65536' is out of range"},
      {"nping_count_zero", kIface + "\toption track_method 'nping-icmp'\n\toption count '0'\n", 3, "count",
       "'0' is out of range"},
      {"max_ttl_zero", kIface + "\toption track_method 'nping-udp'\n\toption max_ttl '0'\n", 3, "max_ttl",
       "'0' is out of range"},
#ifndef UPLINKD_HAVE_TLS
      {"httping_ssl_without_tls", kIface + "\toption track_method 'httping'\n\toption httping_ssl '1'\n", 3,
       "httping_ssl", "built without TLS (UPLINKD_TLS=OFF)"},
#endif
      {"reliability_above_targets",
       kIface + "\toption reliability '3'\n\tlist track_ip '1.1.1.1'\n\tlist track_ip '9.9.9.9'\n", 2,
       "reliability", "3 is more than the 2 track_ip target(s) of interface 'wan'; accepted: 1 to 2"},
      {"reliability_zero", kIface + "\tlist track_ip '1.1.1.1'\n\toption reliability '0'\n", 3, "reliability",
       "'0' is out of range"},
      // seconds
      {"interval_zero", kIface + "\toption interval '0'\n", 2, "interval", "'0' is not positive"},
      {"interval_negative", kIface + "\toption interval '-1'\n", 2, "interval",
       "'-1' is not a number of seconds in interface 'wan'; accepted: a positive number of seconds"},
      {"failure_interval_text", kIface + "\toption failure_interval 'soon'\n", 2, "failure_interval",
       "not a number of seconds"},
      {"recovery_interval_zero", kIface + "\toption recovery_interval '0.0'\n", 2, "recovery_interval",
       "not positive"},
      {"timeout_zero", kIface + "\toption timeout '0'\n", 2, "timeout", "not positive"},
      {"timeout_exponent", kIface + "\toption timeout '1e3'\n", 2, "timeout", "not a number of seconds"},
      // timeout 'auto' (extension): anything else that is not seconds stays an error naming 'auto'
      {"timeout_autox", kIface + "\toption timeout 'autox'\n", 2, "timeout",
       "'autox' is not a number of seconds in interface 'wan'; accepted: a positive number of seconds, "
       "fractions allowed (e.g. 4, 1.5, 0.1), or auto"},
      {"timeout_negative", kIface + "\toption timeout '-1'\n", 2, "timeout",
       "'-1' is not a number of seconds in interface 'wan'"},
      {"timeout_auto_uppercase", kIface + "\toption timeout 'AUTO'\n", 2, "timeout",
       "not a number of seconds"},
      {"timeout_min_without_auto", kIface + "\toption timeout '2'\n\toption timeout_min '0.1'\n", 3,
       "timeout_min", "needs option timeout 'auto' in interface 'wan'"},
      {"timeout_max_without_timeout", kIface + "\toption timeout_max '2'\n", 2, "timeout_max",
       "needs option timeout 'auto'"},
      {"timeout_min_above_max",
       kIface + "\toption timeout 'auto'\n\toption timeout_min '0.5'\n\toption timeout_max '0.2'\n", 3,
       "timeout_min", "'0.5' is more than timeout_max '0.2' in interface 'wan'"},
      {"timeout_max_zero", kIface + "\toption timeout 'auto'\n\toption timeout_max '0'\n", 3, "timeout_max",
       "not positive"},
      // quality thresholds
      {"failure_loss_above_100", kIface + "\toption failure_loss '101'\n", 2, "failure_loss",
       "accepted: a whole number from 0 to 100"},
      {"recovery_loss_negative", kIface + "\toption recovery_loss '-5'\n", 2, "recovery_loss",
       "out of range"},
      {"failure_latency_text", kIface + "\toption failure_latency 'fast'\n", 2, "failure_latency",
       "not a whole number"},
      // extensions
      {"bad_gateway", kIface + "\toption gateway 'router'\n", 2, "gateway", "'router' is not an IP address"},
      {"track_port_too_big", kIface + "\toption track_port '70000'\n", 2, "track_port",
       "accepted: a whole number from 1 to 65535"},
      {"icmp_limit_burst_zero", kIface + "\toption icmp_limit_burst '0'\n", 2, "icmp_limit_burst",
       "out of range"},
      {"pmtu_interval_negative", kIface + "\toption pmtu_interval '-1'\n", 2, "pmtu_interval",
       "out of range"},
      {"pmtu_interval_text", kIface + "\toption pmtu_interval 'often'\n", 2, "pmtu_interval",
       "not a whole number"},
      // names
      {"interface_name_too_long", "config interface 'wanb_really_long_name'\n", 1, "",
       "interface 'wanb_really_long_name': name longer than 15 characters"},
      {"policy_name_too_long", "config policy 'a_sixteen_chars_'\n", 1, "",
       "policy 'a_sixteen_chars_': name longer"},
      {"rule_name_too_long", "config rule 'default_rule_ipv4'\n option use_policy 'default'\n", 1, "",
       "rule 'default_rule_ipv4': name longer than 15 characters"},
      {"anonymous_interface", "config interface\n", 1, "",
       "interface '@interface[0]': interface sections need a name"},
      // references
      {"member_unknown_interface", kIface + "config member 'm'\n\toption interface 'wanx'\n", 3, "interface",
       "'wanx' is not an interface section in member 'm'; accepted: wan"},
      {"member_without_interface", kIface + "config member 'm'\n\toption metric '1'\n", 2, "interface",
       "member 'm' names no interface"},
      {"member_weight_zero", kIface + "config member 'm'\n\toption interface 'wan'\n\toption weight '0'\n", 4,
       "weight", "out of range"},
      {"policy_unknown_member",
       kIface + "config member 'm'\n option interface 'wan'\nconfig policy 'p'\n list use_member 'm'\n"
                " list use_member 'n'\n",
       6, "use_member", "'n' is not a member section in policy 'p'"},
      {"bad_last_resort", "config policy 'p'\n option last_resort 'drop'\n", 2, "last_resort",
       "accepted: unreachable, blackhole, default"},
      {"rule_unknown_policy", "config rule 'r'\n option proto 'tcp'\n option use_policy 'balanced'\n", 3,
       "use_policy", "'balanced' is not a policy section in rule 'r'; accepted: a policy name, or default"},
      {"rule_without_policy", "config rule 'r'\n option proto 'tcp'\n", 1, "use_policy",
       "rule 'r' has no use_policy"},
      {"rule_bad_family", "config rule 'r'\n option use_policy 'default'\n option family 'ipv5'\n", 3,
       "family", "accepted: any, ipv4, ipv6"},
      {"rule_bad_sticky", "config rule 'r'\n option use_policy 'default'\n option sticky '2'\n", 3, "sticky",
       "is not a boolean"},
      // globals
      {"mmx_mask_not_a_number", "config globals 'globals'\n option mmx_mask 'zzz'\n", 2, "mmx_mask",
       "'zzz' is not a 32-bit number"},
      {"mmx_mask_two_bits", "config globals 'globals'\n option mmx_mask '0x3'\n", 2, "mmx_mask",
       "0x3 has 2 bit(s) set"},
      {"mmx_mask_too_small",
       "config globals 'globals'\n option mmx_mask '0x700'\n"
       "config interface 'a'\nconfig interface 'b'\nconfig interface 'c'\nconfig interface 'd'\nconfig "
       "interface 'e'\n",
       2, "mmx_mask", "0x700 leaves room for 4 interface ids but there are 5 interface sections"},
      {"bad_loglevel", "config globals 'globals'\n option loglevel 'loud'\n", 2, "loglevel",
       "accepted: emerg"},
      {"probe_mark_outside_mask",
       "config globals 'globals'\n option probe_reply_mark '0x3'\n option probe_reply_mark_mask '0x1'\n", 2,
       "probe_reply_mark", "bits outside probe_reply_mark_mask"},
      // device
      {"enabled_without_device", kIface + "\toption enabled '1'\n", 1, "",
       "interface 'wan': no device: add option device to the mwan3 section or pass --network"},
  };
  for (const auto& c : cases) {
    expect_error(c);
  }
}

TEST(Errors, DefaultMaskAllowsSixtyInterfaces) {
  std::string text;
  for (int i = 1; i <= 60; ++i) {
    text += "config interface 'w" + std::to_string(i) + "'\n";
  }
  EXPECT_EQ(parse(text, "mwan3").interfaces.size(), 60U);
  text += "config interface 'w61'\n";
  expect_error({"sixty_one", text, 61, "mmx_mask", "leaves room for 60 interface ids"});
}

// ---- the field reports ------------------------------------------------------------------------

struct Block {
  std::string file;  // the report's file name, used as the file name in errors
  int first_line = 0;
  std::string text;  // preceded by empty lines, so error lines are the report's own line numbers
};

std::string trim(std::string_view s) {
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// Documentation elides lines with "..." or "...."; those are not configuration. The line is kept empty
// so line numbers still match the report.
std::string drop_elisions(const std::string& line) {
  std::string t = trim(line);
  return !t.empty() && t.find_first_not_of('.') == std::string::npos ? std::string() : line;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    lines.push_back(line);
  }
  return lines;
}

// Fenced blocks whose first non-blank line starts with `config `, and, outside fences, runs of UCI
// lines that start at a `config ` line (some reports paste configuration without fences).
std::vector<Block> config_blocks(const std::string& path, const std::string& name) {
  std::vector<Block> blocks;
  const auto lines = lines_of(read_text(path));
  bool in_fence = false;
  std::vector<std::string> fence;
  int fence_start = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (starts_with(trim(line), "```")) {
      if (in_fence) {
        std::string first;
        for (const auto& l : fence) {
          if (!trim(l).empty() && trim(l) != "\xC2\xA0") {
            first = l;
            break;
          }
        }
        if (starts_with(first, "config ")) {
          std::string text(fence_start - 1, '\n');
          for (const auto& l : fence) {
            text += drop_elisions(l) + "\n";
          }
          blocks.push_back({name, fence_start, text});
        }
        fence.clear();
      } else {
        fence_start = static_cast<int>(i) + 2;
      }
      in_fence = !in_fence;
      continue;
    }
    if (in_fence) {
      fence.push_back(line);
      continue;
    }
    if (!starts_with(line, "config ")) {
      continue;
    }
    std::string text(i, '\n');
    size_t j = i;
    for (; j < lines.size(); ++j) {
      std::string t = trim(lines[j]);
      bool uci_line = t.empty() || starts_with(t, "config ") || starts_with(t, "option ") ||
                      starts_with(t, "list ") || starts_with(t, "#");
      if (!uci_line || starts_with(t, "```")) {
        break;
      }
      text += lines[j] + "\n";
    }
    blocks.push_back({name, static_cast<int>(i) + 1, text});
    i = j - 1;
  }
  return blocks;
}

std::vector<Block> all_field_report_blocks() {
  std::vector<Block> blocks;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(kFieldReports)) {
    if (entry.path().extension() == ".txt") {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    auto more = config_blocks(f.string(), f.filename().string());
    blocks.insert(blocks.end(), more.begin(), more.end());
  }
  return blocks;
}

bool have_field_reports() { return std::filesystem::is_directory(kFieldReports); }

const Block* find_block(const std::vector<Block>& blocks, std::string_view needle) {
  for (const auto& b : blocks) {
    if (b.text.find(needle) != std::string::npos) {
      return &b;
    }
  }
  return nullptr;
}

TEST(FieldReports, Mwan3DefaultConfigParsesWithFullValidation) {
  if (!have_field_reports()) {
    GTEST_SKIP() << "no field reports at " << kFieldReports;
  }
  auto blocks = config_blocks(kFieldReports + "/mwan3-reference.txt", "mwan3-reference.txt");
  const Block* def = find_block(blocks, "config rule 'default_rule_v6'");
  ASSERT_NE(def, nullptr) << "the default configuration block is missing from mwan3-reference.txt";

  Config c = parse(def->text, def->file, read_text(kTestData + "/network-openwrt"), "network-openwrt");
  EXPECT_EQ(c.interfaces[0].line, 699);  // the report's own line numbering
  EXPECT_EQ(c.globals.mmx_mask, 0x3F00U);

  ASSERT_EQ(c.interfaces.size(), 4U);
  const char* names[] = {"wan", "wan6", "wanb", "wanb6"};
  const int reliability[] = {2, 2, 1, 1};
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(names[i]);
    const InterfaceConfig& iface = c.interfaces[i];
    EXPECT_EQ(iface.name, names[i]);
    EXPECT_EQ(iface.id, i + 1);
    EXPECT_EQ(iface.enabled, i == 0);
    EXPECT_EQ(iface.family, i % 2 == 0 ? Family::Ipv4 : Family::Ipv6);
    EXPECT_EQ(iface.reliability, reliability[i]);
    EXPECT_EQ(iface.track_ip.size(), 4U);
    EXPECT_EQ(iface.down, 5);
    EXPECT_EQ(iface.up, 5);
    EXPECT_DOUBLE_EQ(iface.interval_s, 10);
  }
  EXPECT_EQ(c.interfaces[0].track_ip, (std::vector<IpAddress>{ip("1.0.0.1"), ip("1.1.1.1"),
                                                              ip("208.67.222.222"), ip("208.67.220.220")}));
  EXPECT_EQ(c.interfaces[0].device, "wan");  // from network-openwrt
  EXPECT_EQ(c.interfaces[1].device, "wan");  // wan6 is '@wan'
  EXPECT_EQ(c.interfaces[2].device, "lan4");
  EXPECT_EQ(c.interfaces[2].gateway, ip("192.0.2.1"));
  EXPECT_EQ(c.interfaces[3].gateway, ip("2001:db8:b::1"));

  struct M {
    const char* name;
    const char* iface;
    int metric;
    int weight;
  };
  const M members[] = {{"wan_m1_w3", "wan", 1, 3},     {"wan_m2_w3", "wan", 2, 3},
                       {"wanb_m1_w2", "wanb", 1, 2},   {"wanb_m1_w3", "wanb", 1, 3},
                       {"wanb_m2_w2", "wanb", 2, 2},   {"wan6_m1_w3", "wan6", 1, 3},
                       {"wan6_m2_w3", "wan6", 2, 3},   {"wanb6_m1_w2", "wanb6", 1, 2},
                       {"wanb6_m1_w3", "wanb6", 1, 3}, {"wanb6_m2_w2", "wanb6", 2, 2}};
  ASSERT_EQ(c.members.size(), std::size(members));
  for (size_t i = 0; i < std::size(members); ++i) {
    EXPECT_EQ(c.members[i].name, members[i].name);
    EXPECT_EQ(c.members[i].interface, members[i].iface);
    EXPECT_EQ(c.members[i].metric, members[i].metric);
    EXPECT_EQ(c.members[i].weight, members[i].weight);
  }
  ASSERT_EQ(c.policies.size(), 5U);
  EXPECT_EQ(c.policies[0].name, "wan_only");
  EXPECT_EQ(c.policies[2].name, "balanced");
  EXPECT_EQ(c.policies[2].use_member,
            (std::vector<std::string>{"wan_m1_w3", "wanb_m1_w3", "wan6_m1_w3", "wanb6_m1_w3"}));
  for (const auto& p : c.policies) {
    EXPECT_EQ(p.last_resort, "unreachable");
  }
  ASSERT_EQ(c.rules.size(), 3U);
  EXPECT_EQ(c.rules[0].name, "https");
  EXPECT_EQ(c.rules[0].options.at("sticky"), "1");
  EXPECT_EQ(c.rules[0].options.at("dest_port"), "443");
  EXPECT_EQ(c.rules[0].options.at("proto"), "tcp");
  EXPECT_EQ(c.rules[1].options.at("dest_ip"), "0.0.0.0/0");
  EXPECT_EQ(c.rules[2].options.at("family"), "ipv6");
  for (const auto& r : c.rules) {
    EXPECT_EQ(r.use_policy, "balanced");
  }
}

TEST(FieldReports, EveryConfigFragmentParses) {
  if (!have_field_reports()) {
    GTEST_SKIP() << "no field reports at " << kFieldReports;
  }
  const auto blocks = all_field_report_blocks();
  // mwan3-reference.txt has 22 fenced configuration blocks; the WireGuard report 4 unfenced runs.
  EXPECT_GE(blocks.size(), 26U);
  int fully_valid = 0;
  std::set<std::string> long_names;
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.file + ":" + std::to_string(b.first_line));
    // Every fragment is valid UCI.
    uci::Package pkg;
    ASSERT_NO_THROW(pkg = uci::parse(b.text, b.file));
    EXPECT_FALSE(pkg.sections.empty());
    // With full validation, a fragment may only fail for what it leaves out: sections it refers to, or
    // the device that lives in /etc/config/network.
    try {
      parse(b.text, b.file);
      ++fully_valid;
    } catch (const ConfigError& e) {
      std::string what = e.what();
      bool missing_reference = what.find("is not a policy section") != std::string::npos ||
                               what.find("is not a member section") != std::string::npos ||
                               what.find("is not an interface section") != std::string::npos;
      bool missing_device = what.find(": no device: ") != std::string::npos;
      // Some documentation examples use rule names mwan3 itself refuses (it logs "exceeds max of 15
      // chars" and skips the rule); uplinkd reports them.
      bool long_rule_name = what.find("name longer than 15 characters") != std::string::npos;
      if (long_rule_name) {
        long_names.insert(what.substr(what.find("rule '")));
      }
      EXPECT_TRUE(missing_reference || missing_device || long_rule_name) << what;
    }
  }
  EXPECT_GE(fully_valid, 9);
  for (const auto& n : long_names) {
    EXPECT_TRUE(n.find("'example_mail_wan'") != std::string::npos ||
                n.find("'mailserver_uses_wanb_only'") != std::string::npos ||
                n.find("'wireguard_endpoint'") != std::string::npos)
        << n;
  }
}

TEST(FieldReports, NetworkFragmentsResolveDevices) {
  if (!have_field_reports()) {
    GTEST_SKIP() << "no field reports at " << kFieldReports;
  }
  const auto blocks = all_field_report_blocks();
  const Block* self = find_block(blocks, "config interface 'self'");
  const Block* wg = find_block(blocks, "option proto 'wireguard'");
  ASSERT_NE(self, nullptr);
  ASSERT_NE(wg, nullptr);
  Config c = parse(
      "config interface 'self'\n option enabled '1'\nconfig interface 'wireguard'\n option enabled '1'\n",
      "mwan3", self->text + wg->text, "network");
  EXPECT_EQ(c.find_interface("self")->device, "lo");  // old-style `option ifname`
  EXPECT_EQ(c.find_interface("self")->gateway, ip("192.168.1.1"));
  EXPECT_EQ(c.find_interface("wireguard")->device, "wireguard");
}

// ---- control_group (extension) ----------------------------------------------------------------

TEST(ControlGroup, UnsetMeansRootOnly) {
  EXPECT_FALSE(parse("config globals 'globals'\n", "mwan3").globals.control_group.has_value());
  EXPECT_FALSE(parse("config globals 'globals'\n option control_group ''\n", "mwan3").globals.control_group);
}

TEST(ControlGroup, NameIsResolvedAndGidTakenAsGiven) {
  // Every system has group root (gid 0).
  Config c = parse("config globals 'globals'\n option control_group 'root'\n", "mwan3");
  ASSERT_TRUE(c.globals.control_group.has_value());
  EXPECT_EQ(c.globals.control_group->gid, 0U);
  EXPECT_EQ(c.globals.control_group->name, "root");
  EXPECT_EQ(c.globals.other_options.count("control_group"), 0U);
  c = parse("config globals 'globals'\n option control_group '0'\n", "mwan3");
  ASSERT_TRUE(c.globals.control_group.has_value());
  EXPECT_EQ(c.globals.control_group->gid, 0U);
  EXPECT_EQ(c.globals.control_group->name, "root");
  // A gid need not be in the group database; its name is then the number.
  c = parse("config globals 'globals'\n option control_group '4000000123'\n", "mwan3");
  ASSERT_TRUE(c.globals.control_group.has_value());
  EXPECT_EQ(c.globals.control_group->gid, 4000000123U);
  EXPECT_EQ(c.globals.control_group->name, "4000000123");
}

TEST(ControlGroup, UnknownGroupIsAnError) {
  const ErrorCase cases[] = {
      {"no_such_group",
       "config globals 'globals'\n option logging '0'\n option control_group 'no-such-group-x7'\n", 3,
       "control_group",
       "'no-such-group-x7' is not a group on this system in globals 'globals'; accepted: a group name "
       "from the group database (/etc/group) or a numeric gid"},
      {"gid_minus_one", "config globals 'globals'\n option control_group '4294967295'\n", 2, "control_group",
       "'4294967295' is not a valid gid"},
      {"gid_too_big", "config globals 'globals'\n option control_group '99999999999999999999'\n", 2,
       "control_group", "is not a valid gid"},
      {"list", "config globals 'globals'\n list control_group 'root'\n list control_group 'adm'\n", 3,
       "control_group", "given as a list of 2 values"},
  };
  for (const auto& c : cases) {
    expect_error(c);
  }
}

}  // namespace
}  // namespace uplinkd::config
