// Unknown options: accepted as mwan3 accepts them, but each one named once with file, line and
// section, and the likely intended name when there is one.
#include "config/known_options.h"

#include <gtest/gtest.h>

#include <string>

#include "config/config.h"

namespace uplinkd::config {
namespace {

const std::string kInterface =
    "config interface 'wan'\n"        // 1
    "\toption enabled '1'\n"          // 2
    "\toption device 'eth1'\n"        // 3
    "\tlist track_ip '192.0.2.1'\n";  // 4

TEST(KnownOptions, MisspeltOptionIsAWarningWithTheNearestName) {
  Config c = parse(kInterface + "\toption relability '2'\n", "/etc/config/mwan3");
  ASSERT_EQ(c.warnings.size(), 1U);
  EXPECT_EQ(c.warnings[0],
            "/etc/config/mwan3:5: option 'relability': unknown in interface 'wan', ignored; did you mean "
            "'reliability'?");
  EXPECT_EQ(c.interfaces.at(0).reliability, 1) << "ignored, as mwan3 ignores it: the default stays";
}

TEST(KnownOptions, OptionOfAnotherSectionTypeSaysWhereItBelongs) {
  Config c = parse(kInterface + "\toption metrics_listen '127.0.0.1:9107'\n", "mwan3");
  ASSERT_EQ(c.warnings.size(), 1U);
  EXPECT_EQ(c.warnings[0],
            "mwan3:5: option 'metrics_listen': unknown in interface 'wan', ignored; it is an option of "
            "config globals");
}

TEST(KnownOptions, NothingCloseGivesNoGuess) {
  Config c = parse(kInterface + "\toption colour 'blue'\n", "mwan3");
  ASSERT_EQ(c.warnings.size(), 1U);
  EXPECT_EQ(c.warnings[0], "mwan3:5: option 'colour': unknown in interface 'wan', ignored");
}

TEST(KnownOptions, EveryKindOfSectionIsChecked) {
  const std::string text = kInterface +
                           "config globals 'globals'\n"              // 5
                           "\toption mmx_mask '0x3F00'\n"            // 6
                           "\toption metrics_lisen '127.0.0.1:1'\n"  // 7
                           "config member 'm1'\n"                    // 8
                           "\toption interface 'wan'\n"              // 9
                           "\toption wieght '2'\n"                   // 10
                           "config policy 'p1'\n"                    // 11
                           "\tlist use_member 'm1'\n"                // 12
                           "\toption last_resrot 'default'\n"        // 13
                           "config rule 'r1'\n"                      // 14
                           "\toption use_policy 'p1'\n"              // 15
                           "\toption dst_port '443'\n"               // 16
                           "config wireguard 'wg0'\n"                // 17
                           "\toption clamp_mms '1'\n";               // 18
  Config c = parse(text, "mwan3");
  ASSERT_EQ(c.warnings.size(), 5U);
  EXPECT_EQ(c.warnings[0],
            "mwan3:7: option 'metrics_lisen': unknown in globals 'globals', ignored; did you mean "
            "'metrics_listen'?");
  EXPECT_EQ(c.warnings[1],
            "mwan3:10: option 'wieght': unknown in member 'm1', ignored; did you mean 'weight'?");
  EXPECT_EQ(c.warnings[2],
            "mwan3:13: option 'last_resrot': unknown in policy 'p1', ignored; did you mean 'last_resort'?");
  EXPECT_EQ(c.warnings[3],
            "mwan3:16: option 'dst_port': unknown in rule 'r1', ignored; did you mean 'dest_port'?");
  EXPECT_EQ(c.warnings[4],
            "mwan3:18: option 'clamp_mms': unknown in wireguard 'wg0', ignored; did you mean 'clamp_mss'?");
}

TEST(KnownOptions, MwanOptionsUplinkdDoesNotUseDrawNoWarning) {
  // Options of older mwan3 releases (local_source, online_metric, rtmon_interval) and ones uplinkd
  // reads but some sections leave unused: a file mwan3 took without a word loads without one.
  const std::string text = kInterface +
                           "\toption online_metric '10'\n"
                           "\toption size '56'\n"
                           "config globals 'globals'\n"
                           "\toption local_source 'lan'\n"
                           "\toption rtmon_interval '5'\n"
                           "\toption source_routing '0'\n"
                           "config rule 'r1'\n"
                           "\toption use_policy 'default'\n"
                           "\toption logging '0'\n"
                           "\toption src_iface 'lan'\n";
  EXPECT_TRUE(parse(text, "mwan3").warnings.empty());
}

TEST(KnownOptions, SectionTypesNeitherReadsAreNotChecked) {
  EXPECT_TRUE(parse(kInterface + "config something 'x'\n\toption anything '1'\n", "mwan3").warnings.empty());
}

TEST(KnownOptions, NearestNameNeedsAFewEditsOnly) {
  EXPECT_EQ(nearest_known_option("interface", "intervall"), "interval");
  EXPECT_EQ(nearest_known_option("interface", "trackip"), "track_ip");
  EXPECT_EQ(nearest_known_option("interface", "dwn"), "down");
  EXPECT_EQ(nearest_known_option("interface", "ab"), std::nullopt) << "too short to guess";
  EXPECT_EQ(nearest_known_option("rule", "destination"), std::nullopt);
}

}  // namespace
}  // namespace uplinkd::config
