// nft set JSON (netlink/nft_set_parse.h) that libnftables would not print: a reason, never an
// exception. The shapes it does print are tested in tests/netns/set_maps_test.cpp; these cases come
// from tests/fuzz/nft_set_fuzz.
#include "netlink/nft_set_parse.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace uplinkd::netlink {
namespace {

std::string parse(const std::string& json) {
  NftSet set;
  return parse_nft_set_json(json, &set);
}

// Found by nft_set_fuzz: a member of the wrong JSON type threw nlohmann::json::type_error out of
// parse_nft_set_json, which promises "" or a reason.
TEST(NftSetParseFuzzFound, MembersOfTheWrongTypeAreAReasonNotAThrow) {
  std::string why;
  EXPECT_NO_THROW(why = parse(R"({"nftables": [{"set": 1}]})"));
  EXPECT_EQ(why, "libnftables printed a set that is not a JSON object");
  // Duplicate keys: the last one wins, here an array where the set's name belongs.
  EXPECT_NO_THROW(why = parse(R"({"nftables": [{"set": {"family": "inet", "name": "s", "table": "fw4",
      "type": "ipv4_addr", "name": [{"counter": null}]}}]})"));
  EXPECT_EQ(why, "");
  EXPECT_NO_THROW(why = parse(R"({"nftables": [{"set": {"family": 1, "type": "ipv6_addr"}}]})"));
  EXPECT_EQ(why, "");

  std::vector<std::pair<std::string, std::string>> tables;
  EXPECT_NO_THROW(tables = parse_nft_tables_json(
                      R"({"nftables": [{"table": 1}, {"table": {"family": 2, "name": "x"}},
                          {"table": {"family": "inet", "name": "fw4"}}]})"));
  EXPECT_EQ(tables, (std::vector<std::pair<std::string, std::string>>{{"", "x"}, {"inet", "fw4"}}));
}

// Seen while writing nft_set_fuzz: a prefix length past 32 bits was cut to 32 bits before the range
// check, so 2^32 + 24 was taken for /24.
TEST(NftSetParseFuzzFound, PrefixLengthIsCheckedWhole) {
  const std::string why = parse(R"({"nftables": [{"set": {"family": "inet", "name": "s", "table": "fw4",
      "type": "ipv4_addr", "elem": [{"prefix": {"addr": "192.0.2.0", "len": 4294967320}}]}}]})");
  EXPECT_NE(why.find("has no valid length"), std::string::npos) << why;
}

}  // namespace
}  // namespace uplinkd::netlink
