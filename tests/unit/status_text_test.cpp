// uplinkctl prints mwan3's text shapes (../shared/reference/mwan3-behaviour.md section 6).
#include "control/status_text.h"

#include <gtest/gtest.h>

namespace {

nlohmann::json sample() {
  return nlohmann::json::parse(R"({"interfaces":[
    {"name":"wan","device":"eth1","enabled":true,"tracking":true,"state":"online","state_s":754,"uptime_s":3723,
     "score":10,"probes":{"sent":40,"replied":39,"lost":1},"rtt_ms":12.5,"loss_pct":2.5,
     "targets":[{"ip":"203.0.113.1","state":"up","rtt_ms":12.5,"loss_pct":2.5},
                {"ip":"203.0.113.2","state":"skipped","rtt_ms":0,"loss_pct":100}]},
    {"name":"wanb","device":"eth2","enabled":true,"tracking":true,"state":"offline","state_s":5,"uptime_s":60,
     "score":0,"probes":{"sent":4,"replied":0,"lost":4},"rtt_ms":0,"loss_pct":100,"targets":[]},
    {"name":"wan6","device":"eth1","enabled":false,"state":"disabled"},
    {"name":"lte","device":"wwan0","enabled":true,"tracking":false,"state":"offline","device_state":"absent"}]})");
}

TEST(StatusText, DurationIsMwan3Shaped) {
  EXPECT_EQ(uplinkd::control::format_duration(0), "00h:00m:00s");
  EXPECT_EQ(uplinkd::control::format_duration(3723.9), "01h:02m:03s");
  EXPECT_EQ(uplinkd::control::format_duration(-1), "00h:00m:00s");
}

TEST(StatusText, InterfaceLinesMatchMwan3) {
  EXPECT_EQ(uplinkd::control::format_interfaces(sample()),
            "Interface status:\n"
            " interface wan is online and tracking is active (online 00h:12m:34s, uptime 01h:02m:03s)\n"
            " interface wanb is offline and tracking is active (offline 00h:00m:05s, uptime 00h:01m:00s)\n"
            " interface wan6 is disabled\n"
            " interface lte is offline and tracking is down (device wwan0 absent)\n"
            "\n");
}

TEST(StatusText, StatusListsTargetsOfEnabledInterfaces) {
  const std::string text = uplinkd::control::format_status(sample());
  EXPECT_NE(text.find(" wan (eth1): score 10, 40 sent, 39 replied, 1 lost, rtt 12.50 ms, loss 2.5%"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  203.0.113.1                              up       rtt 12.50 ms, loss 2.5%\n"),
            std::string::npos)
      << text;
  // Figures of a skipped target are stale; only its state is shown.
  EXPECT_NE(text.find("  203.0.113.2                              skipped\n"), std::string::npos) << text;
  EXPECT_EQ(text.find(" wan6 ("), std::string::npos) << text;
}

}  // namespace

namespace {

// The path MTU line under each interface (issue 16): measured, unknown with its reason, re-measuring
// with the previous figure, and off.
TEST(StatusText, PathMtuLineSaysFigureAgeAndWhyNot) {
  nlohmann::json status = sample();
  status["interfaces"][0]["path_mtu"] = {
      {"state", "measured"}, {"mtu", 1400}, {"device_mtu", 1500}, {"measured_ago_s", 12.4}, {"note", ""}};
  status["interfaces"][1]["path_mtu"] = {{"state", "unknown"},
                                         {"mtu", nullptr},
                                         {"device_mtu", 1500},
                                         {"measured_ago_s", 3.0},
                                         {"note", "no target answered"}};
  const std::string text = uplinkd::control::format_status(status);
  EXPECT_NE(text.find("  path MTU 1400 (device MTU 1500), measured 12 s ago\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  path MTU unknown: no target answered\n"), std::string::npos) << text;

  status["interfaces"][0]["path_mtu"]["state"] = "measuring";
  status["interfaces"][1]["path_mtu"] = {{"state", "off"}};
  const std::string again = uplinkd::control::format_status(status);
  EXPECT_NE(again.find("  path MTU 1400 (device MTU 1500), measured 12 s ago (measuring)\n"),
            std::string::npos)
      << again;
  EXPECT_NE(again.find("  path MTU: not measured (pmtu_interval 0)\n"), std::string::npos) << again;
}

}  // namespace

namespace {

// timeout 'auto' (issue 14 item 8): each target's line ends with the timeout its next probe gets,
// skipped targets included (their probes get it when an outage needs them); fixed timeouts show none.
TEST(StatusText, AdaptiveTimeoutPerTarget) {
  nlohmann::json status = sample();
  auto& targets = status["interfaces"][0]["targets"];
  targets[0]["timeout_ms"] = 61.25;
  targets[1]["timeout_ms"] = 50.0;
  const std::string text = uplinkd::control::format_status(status);
  EXPECT_NE(text.find("  203.0.113.1                              up       rtt 12.50 ms, loss 2.5%, "
                      "timeout 61.2 ms (auto)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  203.0.113.2                              skipped, timeout 50.0 ms (auto)\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(uplinkd::control::format_status(sample()).find("(auto)"), std::string::npos);
}

}  // namespace
