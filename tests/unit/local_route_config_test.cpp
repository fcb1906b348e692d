// The router-traffic extension options of globals: local_route and local_route_metric.
#include <gtest/gtest.h>

#include "config/config.h"

namespace uplinkd::config {
namespace {

constexpr const char* kInterface = R"(
config interface 'wan'
	option enabled '1'
	option device 'eth1'
	option gateway '192.0.2.1'
	list track_ip '203.0.113.1'
)";

Config parse_globals(const std::string& globals) {
  return parse("config globals 'globals'\n\toption mmx_mask '0x3F00'\n" + globals + kInterface, "mwan3");
}

TEST(LocalRouteConfig, DefaultsToMetricOneAndOn) {
  const Config cfg = parse_globals("");
  EXPECT_TRUE(cfg.globals.local_route);
  EXPECT_EQ(cfg.globals.local_route_metric, 1U);
  EXPECT_EQ(cfg.globals.other_options.count("local_route_metric"), 0U);
}

TEST(LocalRouteConfig, ReadsBothOptions) {
  const Config cfg = parse_globals("\toption local_route '0'\n\toption local_route_metric '5'\n");
  EXPECT_FALSE(cfg.globals.local_route);
  EXPECT_EQ(cfg.globals.local_route_metric, 5U);
}

TEST(LocalRouteConfig, ABadMetricNamesFileLineAndOption) {
  try {
    parse_globals("\toption local_route_metric 'low'\n");
    FAIL() << "accepted local_route_metric 'low'";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line, 3);
    EXPECT_EQ(e.option, "local_route_metric");
    EXPECT_NE(std::string(e.what()).find("mwan3:3"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace uplinkd::config
