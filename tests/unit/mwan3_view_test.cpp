// mwan3's surface from the status JSON: the rpcd plugin's answer (keys, types, sections), its
// arguments, `mwan3 rules`/`interfaces` text, and the state files' names and contents.
#include "mwan3/mwan3_view.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "mwan3/state_files.h"

namespace {

using nlohmann::json;
using namespace uplinkd::mwan3;

json sample() {
  return json::parse(R"({
    "interfaces": [
      {"name": "wan", "enabled": true, "score": 10, "state": "online",
       "mwan3": {"status": "online", "hotplug_state": "online", "tracking": "active", "running": true, "up": true,
                 "uptime": 3723, "age": 1, "online": 754, "offline": 0, "online_at": 1000, "offline_at": 0,
                 "time": 1753, "lost": 3, "turn": 99},
       "targets": [{"ip": "203.0.113.1", "state": "up", "rtt_ms": 12.6, "loss_pct": 2.4},
                   {"ip": "203.0.113.2", "state": "skipped", "rtt_ms": 0, "loss_pct": 0}]},
      {"name": "wanb", "enabled": true, "score": 0, "state": "offline",
       "mwan3": {"status": "offline", "hotplug_state": "offline", "tracking": "down", "running": false, "up": false,
                 "uptime": 0, "age": 0, "online": 0, "offline": 5, "online_at": 0, "offline_at": 1748, "time": 0,
                 "lost": 8000000000, "turn": 4},
       "targets": []},
      {"name": "wan6", "enabled": false, "score": 0, "state": "disabled",
       "mwan3": {"status": "disabled", "tracking": "disabled", "running": false, "up": false}, "targets": []}],
    "policies": {"ipv4": {"balanced": [{"interface": "wan", "percent": 60, "member": "m1"},
                                       {"interface": "wanb", "percent": 40, "member": "m2"}],
                          "wanb_only": []},
                 "ipv6": {"balanced": [], "wanb_only": []},
                 "last_resort": {"balanced": {"action": "unreachable"}, "wanb_only": {"action": "default"}}},
    "connected": {"ipv4": ["10.0.0.0/24"], "ipv6": ["2001:db8:10::/64"]},
    "rules": [
      {"name": "https", "family": "any", "proto": "tcp", "src_ip": [], "dest_ip": [], "src_port": [],
       "dest_port": ["443"], "use_policy": "balanced", "sticky": false, "packets": 123456, "bytes": 98765432},
      {"name": "voip", "family": "ipv4", "proto": "udp", "src_ip": ["10.0.0.5", "10.0.0.6"], "dest_ip": [],
       "src_port": ["5060-5061"], "dest_port": [], "use_policy": "balanced", "sticky": true, "packets": 0, "bytes": 0,
       "src_iface": "br-lan"},
      {"name": "block", "family": "any", "proto": "all", "src_ip": [], "dest_ip": ["2001:db8:bad::/48"],
       "use_policy": "blackhole", "ipset": "evil", "packets": 1, "bytes": 60}]
  })");
}

TEST(Mwan3Ubus, InterfaceHasMwan3sKeysAndTypes) {
  const json answer = ubus_status(sample(), {"interfaces", ""});
  ASSERT_EQ(answer.size(), 1U);
  const json& wan = answer["interfaces"]["wan"];
  for (const char* k : {"age", "online", "offline", "uptime", "score", "lost", "turn"}) {
    EXPECT_TRUE(wan[k].is_number_integer()) << k;
  }
  for (const char* k : {"status", "tracking"}) EXPECT_TRUE(wan[k].is_string()) << k;
  for (const char* k : {"enabled", "running", "up"}) EXPECT_TRUE(wan[k].is_boolean()) << k;
  EXPECT_EQ(wan.size(), 13U);
  EXPECT_EQ(wan["online"], 754);
  EXPECT_EQ(wan["uptime"], 3723);
  EXPECT_EQ(wan["turn"], 99);
  EXPECT_EQ(wan["track_ip"], json::parse(R"([{"ip":"203.0.113.1","status":"up","latency":13,"packetloss":2},
                                               {"ip":"203.0.113.2","status":"skipped","latency":0,"packetloss":0}])"));
  // ubus integers are int32: a larger count is clamped, never negative.
  EXPECT_EQ(answer["interfaces"]["wanb"]["lost"], INT32_MAX);
  EXPECT_EQ(answer["interfaces"]["wan6"]["status"], "disabled");
  EXPECT_EQ(answer["interfaces"]["wan6"]["enabled"], false);
}

TEST(Mwan3Ubus, SectionsAndOneInterface) {
  EXPECT_EQ(ubus_status(sample(), {"interfaces", "wanb"})["interfaces"].size(), 1U);
  EXPECT_EQ(ubus_status(sample(), {"interfaces", "nosuch"}), json::parse(R"({"interfaces":{}})"));
  EXPECT_EQ(ubus_status(sample(), {"connected", ""}),
            json::parse(R"({"connected":{"ipv4":["10.0.0.0/24"],"ipv6":["2001:db8:10::/64"]}})"));
  EXPECT_EQ(ubus_status(sample(), {"policies", ""}),
            json::parse(R"({"policies":{"ipv4":{"balanced":[{"interface":"wan","percent":60},
                                                            {"interface":"wanb","percent":40}],"wanb_only":[]},
                                      "ipv6":{"balanced":[],"wanb_only":[]}}})"));
  for (const char* section : {"", "all", "bogus"}) {
    const json all = ubus_status(sample(), {section, ""});
    EXPECT_EQ(all.size(), 3U) << section;
    EXPECT_EQ(all["interfaces"].size(), 3U) << section;
  }
}

TEST(Mwan3Ubus, ArgumentsAsRpcdSendsThem) {
  UbusArgs args;
  EXPECT_EQ(parse_ubus_args("", &args), "");
  EXPECT_EQ(parse_ubus_args(" \n", &args), "");
  EXPECT_EQ(parse_ubus_args("{}", &args), "");
  EXPECT_EQ(parse_ubus_args(R"({"section":"interfaces","interface":"wan"})", &args), "");
  EXPECT_EQ(args.section, "interfaces");
  EXPECT_EQ(args.interface, "wan");
  EXPECT_NE(parse_ubus_args(R"({"section":)", &args).find("malformed JSON"), std::string::npos);
  EXPECT_EQ(parse_ubus_args("[]", &args), "arguments must be a JSON object, got array");
  EXPECT_EQ(parse_ubus_args(R"({"sektion":"x"})", &args),
            "unknown argument 'sektion' (known: section, interface)");
  EXPECT_EQ(parse_ubus_args(R"({"section":1})", &args), "argument 'section' must be a string, got number");
  EXPECT_EQ(parse_ubus_args(R"({"\u0001":1})", &args), "unknown argument '?' (known: section, interface)");
  EXPECT_TRUE(args.section.empty());  // a refused call leaves nothing half-parsed
  EXPECT_EQ(json::parse(rpcd_list()), json::parse(R"({"status":{"section":"str","interface":"str"}})"));
}

TEST(Mwan3Text, RulesInIptablesColumnsPerFamily) {
  EXPECT_EQ(format_rules(sample()["rules"]),
            "Active ipv4 user rules:\n"
            " 123K   99M - balanced tcp   -- *      *      0.0.0.0/0           0.0.0.0/0           "
            "multiport dports 443 \n"
            "    0     0 S voip    udp   -- br-lan *      10.0.0.5            0.0.0.0/0           "
            "multiport sports 5060-5061 \n"
            "    0     0 S voip    udp   -- br-lan *      10.0.0.6            0.0.0.0/0           "
            "multiport sports 5060-5061 \n"
            "\n"
            "Active ipv6 user rules:\n"
            " 123K   99M - balanced tcp   -- *      *      ::/0                ::/0                "
            "multiport dports 443 \n"
            "    1    60 MARK      all   -- *      *      ::/0                2001:db8:bad::/48   "
            "match-set evil dst \n"
            "\n");
}

TEST(Mwan3Text, CountersShrinkLikeIptables) {
  EXPECT_EQ(counter_column(99999), "99999");
  EXPECT_EQ(counter_column(100000), "100K");
  EXPECT_EQ(counter_column(12345678), "12M");
  EXPECT_EQ(counter_column(9999499), "9999K");
  EXPECT_EQ(counter_column(9999500), "10M");
  EXPECT_EQ(counter_column(123456789), "123M");
}

TEST(Mwan3Text, InterfaceLinesAndHelp) {
  EXPECT_EQ(format_interfaces(sample()),
            "Interface status:\n"
            " interface wan is online and tracking is active (online 00h:12m:34s, uptime 01h:02m:03s)\n"
            " interface wanb is offline and tracking is down\n"
            " interface wan6 is disabled and tracking is disabled\n"
            "\n");
  const std::string help = help_text();
  EXPECT_EQ(help.rfind("Syntax: mwan3 [command]\n\nAvailable commands:\n", 0), 0U);
  EXPECT_NE(help.find("\nuse <iface> <cmd>        Run a command bound to <iface>"), std::string::npos)
      << help;
}

TEST(Mwan3StateFiles, NamesAndContents) {
  const auto files = interface_files(sample()["interfaces"][0]);
  EXPECT_EQ(files.at("mwan3/iface_state/wan"), "online\n");
  EXPECT_EQ(files.at("mwan3track/wan/STATUS"), "online\n");
  EXPECT_EQ(files.at("mwan3track/wan/ONLINE"), "1000\n");
  EXPECT_EQ(files.at("mwan3track/wan/OFFLINE"), "0\n");
  EXPECT_EQ(files.at("mwan3track/wan/SCORE"), "10\n");
  EXPECT_EQ(files.at("mwan3track/wan/TURN"), "99\n");
  EXPECT_EQ(files.at("mwan3track/wan/TIME"), "1753\n");
  EXPECT_EQ(files.at("mwan3track/wan/TRACK_203.0.113.1"), "up\n");
  EXPECT_EQ(files.at("mwan3track/wan/LATENCY_203.0.113.1"), "13\n");
  EXPECT_EQ(files.at("mwan3track/wan/LOSS_203.0.113.1"), "2\n");
  EXPECT_TRUE(interface_files(sample()["interfaces"][2]).empty());  // disabled: no tracker files
  json evil = sample()["interfaces"][0];
  evil["name"] = "../etc";
  EXPECT_TRUE(interface_files(evil).empty());
}

TEST(Mwan3StateFiles, WrittenOnChangeAndRemoved) {
  const std::string root = testing::TempDir() + "/mwan3_state." + std::to_string(getpid());
  std::filesystem::create_directories(root);
  {
    StateFiles files(root);
    json status = sample();
    EXPECT_EQ(files.sync(status), 22);  // wan: 8 + 3 per target; wanb: 8
    EXPECT_EQ(files.sync(status), 0);   // nothing changed, nothing written
    status["interfaces"][0]["score"] = 9;
    EXPECT_EQ(files.sync(status), 1);
    std::ifstream score(root + "/mwan3track/wan/SCORE");
    std::string text;
    std::getline(score, text);
    EXPECT_EQ(text, "9");
    status["interfaces"][0]["targets"].erase(1);
    EXPECT_EQ(files.sync(status), 3);  // the dropped target's three files go
    EXPECT_FALSE(std::filesystem::exists(root + "/mwan3track/wan/TRACK_203.0.113.2"));
    files.remove_all();
    EXPECT_FALSE(std::filesystem::exists(root + "/mwan3track"));
    EXPECT_FALSE(std::filesystem::exists(root + "/mwan3"));
    EXPECT_TRUE(std::filesystem::exists(root));  // the root is not ours
  }
  std::filesystem::remove_all(root);
}

}  // namespace
