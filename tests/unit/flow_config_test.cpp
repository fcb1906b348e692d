// Failover-hygiene options: flow idle timeouts, reset_stale_tcp and conntrack_by_mark in globals,
// `failback` per policy; defaults, good values, and errors naming file, line and option.
#include <gtest/gtest.h>

#include <string>

#include "config/config.h"

namespace uplinkd::config {
namespace {

const std::string kWan =
    "config interface 'wan'\n"
    "\toption enabled '1'\n"
    "\toption device 'eth1'\n"
    "config member 'wan_m1'\n"
    "\toption interface 'wan'\n";

TEST(FlowConfig, Defaults) {
  const Config c = parse(kWan + "config policy 'p'\n\tlist use_member 'wan_m1'\n", "mwan3");
  EXPECT_EQ(c.globals.flow_timeout_tcp_s, 7440U);  // OpenWrt's nf_conntrack_tcp_timeout_established
  EXPECT_EQ(c.globals.flow_timeout_udp_s, 180U);
  EXPECT_EQ(c.globals.flow_timeout_s, 600U);
  EXPECT_TRUE(c.globals.reset_stale_tcp);
  EXPECT_TRUE(c.globals.conntrack_by_mark);
  ASSERT_EQ(c.policies.size(), 1U);
  EXPECT_FALSE(c.policies[0].failback_move);
}

TEST(FlowConfig, GoodValues) {
  const std::string text =
      "config globals 'globals'\n"
      "\toption flow_timeout_tcp '3600'\n"
      "\toption flow_timeout_udp '0'\n"
      "\toption flow_timeout '4294967295'\n"
      "\toption reset_stale_tcp 'no'\n"
      "\toption conntrack_by_mark '0'\n" +
      kWan +
      "config policy 'mv'\n\tlist use_member 'wan_m1'\n\toption failback 'move'\n"
      "config policy 'kp'\n\tlist use_member 'wan_m1'\n\toption failback 'keep'\n";
  const Config c = parse(text, "mwan3");
  EXPECT_EQ(c.globals.flow_timeout_tcp_s, 3600U);
  EXPECT_EQ(c.globals.flow_timeout_udp_s, 0U);
  EXPECT_EQ(c.globals.flow_timeout_s, 4294967295U);
  EXPECT_FALSE(c.globals.reset_stale_tcp);
  EXPECT_FALSE(c.globals.conntrack_by_mark);
  ASSERT_EQ(c.policies.size(), 2U);
  EXPECT_TRUE(c.policies[0].failback_move);
  EXPECT_FALSE(c.policies[1].failback_move);
  // Known options are not kept as unknown ones.
  EXPECT_EQ(c.globals.other_options.count("flow_timeout_tcp"), 0U);
  EXPECT_EQ(c.policies[0].other_options.count("failback"), 0U);
}

struct BadValue {
  const char* name;
  std::string text;
  int line;
  std::string option;
  std::string fragment;
};

TEST(FlowConfig, BadValuesNameFileLineAndOption) {
  const BadValue cases[] = {
      {"tcp_negative", "config globals 'globals'\n\toption flow_timeout_tcp '-1'\n", 2, "flow_timeout_tcp",
       "is out of range"},
      {"tcp_words", "config globals 'globals'\n\n\toption flow_timeout_tcp '2h'\n", 3, "flow_timeout_tcp",
       "is not a whole number"},
      {"udp_too_big", "config globals 'globals'\n\toption flow_timeout_udp '4294967296'\n", 2,
       "flow_timeout_udp", "is out of range"},
      {"other_fraction", "config globals 'globals'\n\toption flow_timeout '1.5'\n", 2, "flow_timeout",
       "is not a whole number"},
      {"reset_word", "config globals 'globals'\n\toption reset_stale_tcp 'maybe'\n", 2, "reset_stale_tcp",
       "is not a boolean"},
      {"ct_word", "config globals 'globals'\n\toption conntrack_by_mark '2'\n", 2, "conntrack_by_mark",
       "is not a boolean"},
      {"failback_word", kWan + "config policy 'p'\n\tlist use_member 'wan_m1'\n\toption failback 'back'\n", 8,
       "failback", "accepted: keep, move"},
      {"table_small", "config globals 'globals'\n\toption flow_table_size '100'\n", 2, "flow_table_size",
       "is below 1024"},
      {"failback_list", kWan + "config policy 'p'\n\tlist failback 'keep'\n\tlist failback 'move'\n", 8,
       "failback", "use option, not list"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    try {
      parse(c.text, "mwan3");
      ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.file, "mwan3");
      EXPECT_EQ(e.line, c.line);
      EXPECT_EQ(e.option, c.option);
      const std::string what = e.what();
      EXPECT_EQ(what.rfind("mwan3:" + std::to_string(c.line) + ": option '" + c.option + "': ", 0), 0U)
          << what;
      EXPECT_NE(what.find(c.fragment), std::string::npos) << what;
    }
  }
}

TEST(FlowTableSize, SizedFromRamAsConntrackIs) {
  Globals g;
  EXPECT_EQ(flow_table_entries(g, 0), 4096u);              // unreadable: the smallest
  EXPECT_EQ(flow_table_entries(g, 128ull << 20), 8192u);   // 128 MiB router
  EXPECT_EQ(flow_table_entries(g, 256ull << 20), 16384u);  // 256 MiB router
  EXPECT_EQ(flow_table_entries(g, 1ull << 30), 65536u);    // 1 GiB
  EXPECT_EQ(flow_table_entries(g, 64ull << 30), 262144u);  // capped
  g.flow_table_size = 5000;
  EXPECT_EQ(flow_table_entries(g, 1ull << 30), 5000u);  // explicit wins
}

}  // namespace
}  // namespace uplinkd::config
