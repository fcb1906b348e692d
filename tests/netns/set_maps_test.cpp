// ipset rules against real nft sets: NftSetReader reads sets made with `nft` inside the router
// namespace of the netns lab, SetMaps loads them into the `sets` map of a lan_ingress loaded through
// its skeleton (unpinned, as tests/bpf do), and BPF_PROG_TEST_RUN shows which destinations the rule
// with that set_id matches. The rule's policy has no member online and last_resort unreachable, so a
// packet the rule matches leaves with the unreachable mark and any other packet with none.
//
// The NftSetParse and RangeToPrefixes cases are pure (no root, no kernel); they live here because
// the parser belongs to uplinkd_core, which the unit tests do not link.
#include "datapath/set_maps.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "datapath/rule_table_maps.h"
#include "lan_ingress.skel.h"
#include "netlink/nft_sets.h"
#include "netns_fixture.h"
#include "policy/rule_tables.h"
#include "tests/bpf/packet_builder.h"
#include "tests/bpf/test_run.h"

namespace uplinkd::datapath {
namespace {

using netlink::NftSet;
using netlink::SetLookup;
using netlink::SetPrefix;
using uplinkd::testing::NetnsTest;

std::vector<std::string> strings_of(const std::vector<SetPrefix>& prefixes) {
  std::vector<std::string> out;
  for (const auto& p : prefixes) out.push_back(p.str());
  return out;
}

IpAddress addr(const char* text) { return *IpAddress::parse(text); }

// ---- pure: ranges and JSON ----------------------------------------------------------------------

TEST(RangeToPrefixes, SplitsIpv4RangeIntoAlignedBlocks) {
  EXPECT_EQ(
      strings_of(netlink::range_to_prefixes(addr("203.0.113.10"), addr("203.0.113.20"))),
      (std::vector<std::string>{"203.0.113.10/31", "203.0.113.12/30", "203.0.113.16/30", "203.0.113.20/32"}));
  EXPECT_EQ(strings_of(netlink::range_to_prefixes(addr("192.0.2.7"), addr("192.0.2.7"))),
            (std::vector<std::string>{"192.0.2.7/32"}));
  EXPECT_EQ(strings_of(netlink::range_to_prefixes(addr("192.0.2.0"), addr("192.0.2.255"))),
            (std::vector<std::string>{"192.0.2.0/24"}));
}

TEST(RangeToPrefixes, WholeSpacesAndTheTopAddress) {
  EXPECT_EQ(strings_of(netlink::range_to_prefixes(addr("0.0.0.0"), addr("255.255.255.255"))),
            (std::vector<std::string>{"0.0.0.0/0"}));
  EXPECT_EQ(
      strings_of(netlink::range_to_prefixes(addr("::"), addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))),
      (std::vector<std::string>{"::/0"}));
  EXPECT_EQ(strings_of(netlink::range_to_prefixes(addr("255.255.255.254"), addr("255.255.255.255"))),
            (std::vector<std::string>{"255.255.255.254/31"}));
}

TEST(RangeToPrefixes, Ipv6RangeAndBadRanges) {
  EXPECT_EQ(strings_of(netlink::range_to_prefixes(addr("2001:db8:2::1"), addr("2001:db8:2::ff"))),
            (std::vector<std::string>{"2001:db8:2::1/128", "2001:db8:2::2/127", "2001:db8:2::4/126",
                                      "2001:db8:2::8/125", "2001:db8:2::10/124", "2001:db8:2::20/123",
                                      "2001:db8:2::40/122", "2001:db8:2::80/121"}));
  EXPECT_TRUE(netlink::range_to_prefixes(addr("192.0.2.9"), addr("192.0.2.8")).empty());
  EXPECT_TRUE(netlink::range_to_prefixes(addr("192.0.2.9"), addr("2001:db8::1")).empty());
}

// What nft 1.0.6 prints for `nft -j list set inet fw4 vpn` (elements of every shape).
constexpr const char* kVpnJson =
    R"({"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"set": {"family": "inet", "name": "vpn", "table": "fw4", "type": "ipv4_addr", "handle": 1,
  "flags": ["interval", "timeout"],
  "elem": [{"prefix": {"addr": "192.0.2.0", "len": 28}}, "198.51.100.7",
           {"range": ["203.0.113.10", "203.0.113.11"]},
           {"elem": {"val": "198.51.100.9", "timeout": 600, "expires": 599, "counter": {"packets": 0, "bytes": 0}}},
           {"elem": {"val": {"prefix": {"addr": "10.1.0.0", "len": 16}}, "comment": "lab"}}]}}]})";

TEST(NftSetParse, EveryElementShapeBecomesPrefixes) {
  NftSet set;
  ASSERT_EQ(netlink::parse_nft_set_json(kVpnJson, &set), "");
  EXPECT_EQ(set.where(), "inet fw4");
  EXPECT_EQ(set.type, "ipv4_addr");
  EXPECT_EQ(strings_of(set.prefixes),
            (std::vector<std::string>{"192.0.2.0/28", "198.51.100.7/32", "203.0.113.10/31", "198.51.100.9/32",
                                      "10.1.0.0/16"}));
}

TEST(NftSetParse, EmptySetAndIpv6) {
  NftSet set;
  ASSERT_EQ(
      netlink::parse_nft_set_json(
          R"({"nftables": [{"set": {"family": "ip6", "name": "v6", "table": "t", "type": "ipv6_addr"}}]})",
          &set),
      "");
  EXPECT_TRUE(set.prefixes.empty());
  ASSERT_EQ(
      netlink::parse_nft_set_json(R"({"nftables": [{"set": {"family": "inet", "name": "v6", "table": "fw4",
      "type": "ipv6_addr", "elem": [{"prefix": {"addr": "2001:db8::", "len": 48}}, "2001:db8:1::5"]}}]})",
                                  &set),
      "");
  EXPECT_EQ(strings_of(set.prefixes), (std::vector<std::string>{"2001:db8::/48", "2001:db8:1::5/128"}));
}

TEST(NftSetParse, RefusesSetsThatAreNotAddresses) {
  NftSet set;
  const std::string ports = netlink::parse_nft_set_json(
      R"({"nftables": [{"set": {"family": "inet", "name": "web", "table": "fw4", "type": "inet_service", "elem": [80, 443]}}]})",
      &set);
  EXPECT_NE(ports.find("nft set web (table inet fw4) holds inet_service, not addresses"), std::string::npos)
      << ports;
  const std::string concat = netlink::parse_nft_set_json(
      R"({"nftables": [{"set": {"family": "inet", "name": "c", "table": "fw4", "type": ["ipv4_addr", "inet_service"]}}]})",
      &set);
  EXPECT_NE(concat.find("a concatenation (ipv4_addr . inet_service)"), std::string::npos) << concat;
  EXPECT_NE(netlink::parse_nft_set_json("not json", &set), "");
  const std::string mixed = netlink::parse_nft_set_json(
      R"({"nftables": [{"set": {"family": "ip", "name": "m", "table": "t", "type": "ipv4_addr", "elem": ["2001:db8::1"]}}]})",
      &set);
  EXPECT_NE(mixed.find("is not an IPv4 address"), std::string::npos) << mixed;
}

TEST(SetKeys, Ipv4MappedSortedWithoutDuplicates) {
  NftSet set;
  ASSERT_EQ(
      netlink::parse_nft_set_json(R"({"nftables": [{"set": {"family": "inet", "name": "s", "table": "fw4",
      "type": "ipv4_addr", "elem": ["192.0.2.1", "192.0.2.1", {"prefix": {"addr": "192.0.2.0", "len": 24}}]}}]})",
                                  &set),
      "");
  const std::vector<lpm_key> keys = lpm_keys_of(set.prefixes);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].prefixlen, 96u + 24u);  // memcmp order: the prefixlen's low byte first
  EXPECT_EQ(keys[1].prefixlen, 96u + 32u);
  EXPECT_EQ(keys[1].addr[10], 0xff);
  EXPECT_EQ(keys[1].addr[11], 0xff);
  EXPECT_EQ(keys[1].addr[12], 192);
  EXPECT_EQ(keys[1].addr[15], 1);
  EXPECT_EQ(set_trie_capacity(0), 256u);
  EXPECT_EQ(set_trie_capacity(1000), 1500u);
  EXPECT_EQ(set_trie_capacity(1'000'000), uint32_t{UPLINKD_MAX_SET_ENTRIES});
}

// ---- real sets, real classifier ----------------------------------------------------------------

constexpr uint32_t kMmxMask = 0x3f00;
constexpr uint32_t kUnreachableMark = 0x3e00;
constexpr uint32_t kPolicyAllDown = 3;  // a policy with no member online, last_resort unreachable

class SetMapsTest : public NetnsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(NetnsTest::SetUp());
    skel_ = lan_ingress__open_and_load();
    ASSERT_NE(skel_, nullptr) << "loading lan_ingress: " << std::strerror(errno) << " (root and BPF needed)";
    classifier_cfg cfg{};
    cfg.mmx_mask = kMmxMask;
    cfg.n_rules = 1;
    cfg.default_mark = kMmxMask;
    cfg.flow_timeout_s = cfg.flow_timeout_tcp_s = cfg.flow_timeout_udp_s = 300;
    const uint32_t zero = 0;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.classifier_cfg), &zero, &cfg, BPF_ANY), 0);
    policy_entry all_down{};
    all_down.fallback_mark = kUnreachableMark;
    for (uint8_t family : {4, 6}) {
      const uint32_t slot = UPLINKD_POLICY_SLOT(kPolicyAllDown, family);
      ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.policies), &slot, &all_down, BPF_ANY), 0);
    }
    rule_entry rule{};  // any family, any protocol: only the set decides
    rule.set_id = 1;
    rule.policy_id = kPolicyAllDown;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.rules), &zero, &rule, BPF_ANY), 0);
    const datapath::RuleTableFds tables{
        bpf_map__fd(skel_->maps.rule_tbl_sel), bpf_map__fd(skel_->maps.rule_tbl),
        bpf_map__fd(skel_->maps.rule_tbl_ports), bpf_map__fd(skel_->maps.rule_tbl_addr),
        bpf_map__fd(skel_->maps.rule_tbl_iface)};
    ASSERT_EQ(datapath::write_rule_tables(tables, policy::compile_rule_tables({rule})), 0);
    sets_ = std::make_unique<SetMaps>(bpf_map__fd(skel_->maps.sets));
  }

  void TearDown() override {
    sets_.reset();
    if (skel_ != nullptr) lan_ingress__destroy(skel_);
    NetnsTest::TearDown();
  }

  // nft wants a `;` (or a newline) between a block's closing brace and the next one.
  std::string nft(std::string script) {
    for (size_t at = script.find("} }"); at != std::string::npos; at = script.find("} }"))
      script.replace(at, 3, "}; }");
    return uplinkd::testing::must_run("printf '%s\\n' '" + script + "' | ip netns exec " + router_ns_ +
                                      " nft -f -");
  }

  // Loads a script too long for nft()'s command line from a file (a set of tens of thousands).
  void nft_file(const std::string& script) {
    const std::string file = "/tmp/uplinkd-set-maps-" + std::to_string(getpid()) + ".nft";
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(script.c_str(), f);
    std::fclose(f);
    uplinkd::testing::must_run("ip netns exec " + router_ns_ + " nft -f " + file);
    std::remove(file.c_str());
  }

  // The mark a new TCP flow to `dst` leaves lan_ingress with (each call a fresh source port, so
  // every packet is a new flow and is classified).
  uint32_t mark_to(const char* dst) {
    const bool v6 = std::strchr(dst, ':') != nullptr;
    const char* src = v6 ? "2001:db8:a::10" : "10.0.0.10";
    const uint16_t sport = next_port_++;
    using namespace uplinkd::bpftest;
    const Bytes l4 = tcp(sport, 443, 1, 0, kTcpSyn);
    const Bytes frame = v6 ? ethernet(ETH_P_IPV6, ipv6(src, dst, IPPROTO_TCP, l4))
                           : ethernet(ETH_P_IP, ipv4(src, dst, IPPROTO_TCP, l4));
    __sk_buff ctx_in{};
    ctx_in.ingress_ifindex = 7;
    __sk_buff ctx_out{};
    TestRun run = test_run_once(bpf_program__fd(skel_->progs.lan_ingress), frame, ctx_in, &ctx_out, 64);
    EXPECT_EQ(run.err, 0) << std::strerror(run.saved_errno);
    EXPECT_EQ(run.retval, static_cast<uint32_t>(TC_ACT_OK));
    return ctx_out.mark & kMmxMask;
  }

  bool matched(const char* dst) { return mark_to(dst) == kUnreachableMark; }

  // The id of the trie in sets[0] (what the outer map hands userspace), 0 when empty.
  uint32_t trie_id() {
    const uint32_t slot = 0;
    uint32_t id = 0;
    return bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sets), &slot, &id) == 0 ? id : 0;
  }

  SetStatus status_of_first() {
    auto all = sets_->status();
    return all.empty() ? SetStatus{} : all.front();
  }

  lan_ingress* skel_ = nullptr;
  std::unique_ptr<SetMaps> sets_;
  uint16_t next_port_ = 20000;
};

TEST_F(SetMapsTest, AddressesPrefixesAndRangesInTheSetMatchOthersDoNot) {
  nft("table inet fw4 { set vpn { type ipv4_addr; flags interval; elements = { 198.51.100.0/24, "
      "203.0.113.10-203.0.113.20, 192.0.2.77 } } }");
  sets_->configure({"vpn"});
  EXPECT_EQ(sets_->refresh(), 1);
  EXPECT_TRUE(matched("198.51.100.200"));
  EXPECT_TRUE(matched("203.0.113.10"));
  EXPECT_TRUE(matched("203.0.113.15"));
  EXPECT_TRUE(matched("203.0.113.20"));
  EXPECT_TRUE(matched("192.0.2.77"));
  EXPECT_FALSE(matched("203.0.113.9"));
  EXPECT_FALSE(matched("203.0.113.21"));
  EXPECT_FALSE(matched("192.0.2.78"));
  EXPECT_FALSE(matched("2001:db8:ff::80"));
  const SetStatus s = status_of_first();
  EXPECT_EQ(s.where, "inet fw4");
  EXPECT_EQ(s.prefixes, 1u + 4u + 1u);  // the range is 10/31, 12/30, 16/30, 20/32
  EXPECT_EQ(s.problem, "");
  EXPECT_EQ(sets_->refresh(), 0) << "an unchanged set is left alone";
}

TEST_F(SetMapsTest, ElementsAddedAtRunTimeMatchAfterRefresh) {
  // What dnsmasq's nftset= does: a plain set with timeouts, elements added as names resolve.
  nft("table inet fw4 { set vpn { type ipv4_addr; flags timeout; elements = { 198.51.100.1 } } }");
  sets_->configure({"vpn"});
  sets_->refresh();
  const uint32_t first_trie = trie_id();
  ASSERT_NE(first_trie, 0u);
  EXPECT_FALSE(matched("203.0.113.5"));
  nft("add element inet fw4 vpn { 203.0.113.5 timeout 1h }");
  EXPECT_FALSE(matched("203.0.113.5")) << "nothing changes before refresh()";
  EXPECT_EQ(sets_->refresh(), 1);
  EXPECT_TRUE(matched("203.0.113.5"));
  EXPECT_TRUE(matched("198.51.100.1"));
  EXPECT_EQ(trie_id(), first_trie) << "a small change is patched into the same trie";
  nft("delete element inet fw4 vpn { 198.51.100.1 }");
  EXPECT_EQ(sets_->refresh(), 1);
  EXPECT_FALSE(matched("198.51.100.1"));
  EXPECT_TRUE(matched("203.0.113.5"));
}

TEST_F(SetMapsTest, ALargeChangeSwapsInANewTrie) {
  nft("table inet fw4 { set vpn { type ipv4_addr; elements = { 198.51.100.1 } } }");
  sets_->configure({"vpn"});
  sets_->refresh();
  const uint32_t first_trie = trie_id();
  // 1000 new addresses: more than the trie's 256 entries, so a new trie replaces it whole.
  std::string elements;
  for (int i = 0; i < 1000; ++i) {
    elements += std::string(elements.empty() ? "" : ", ") + "10.9." + std::to_string(i / 250) + "." +
                std::to_string(i % 250 + 1);
  }
  nft("add element inet fw4 vpn { " + elements + " }");
  EXPECT_EQ(sets_->refresh(), 1);
  EXPECT_NE(trie_id(), first_trie);
  EXPECT_EQ(status_of_first().prefixes, 1001u);
  EXPECT_TRUE(matched("10.9.3.250"));
  EXPECT_TRUE(matched("198.51.100.1"));
  EXPECT_FALSE(matched("10.9.4.1"));
}

TEST_F(SetMapsTest, Ipv6SetsAndRanges) {
  nft("table inet fw4 { set vpn6 { type ipv6_addr; flags interval; elements = { 2001:db8:ff::/48, "
      "2001:db8:2::1-2001:db8:2::ff } } }");
  sets_->configure({"vpn6"});
  sets_->refresh();
  EXPECT_TRUE(matched("2001:db8:ff::80"));
  EXPECT_TRUE(matched("2001:db8:ff:ffff::1"));
  EXPECT_TRUE(matched("2001:db8:2::ff"));
  EXPECT_FALSE(matched("2001:db8:2::100"));
  EXPECT_FALSE(matched("2001:db8:ee::1"));
  EXPECT_FALSE(matched("198.51.100.1"));
  EXPECT_EQ(status_of_first().prefixes, 1u + 8u);
}

TEST_F(SetMapsTest, AMissingSetMatchesNothingUntilItAppears) {
  sets_->configure({"later"});
  EXPECT_EQ(sets_->refresh(), 0);
  EXPECT_NE(status_of_first().problem.find("no nft set of that name"), std::string::npos);
  EXPECT_FALSE(matched("198.51.100.1"));
  nft("table ip other { set later { type ipv4_addr; elements = { 198.51.100.1 } } }");
  EXPECT_EQ(sets_->refresh(), 1);
  EXPECT_TRUE(matched("198.51.100.1"));
  EXPECT_EQ(status_of_first().where, "ip other");
  EXPECT_EQ(status_of_first().problem, "");
  nft("delete table ip other");
  EXPECT_EQ(sets_->refresh(), 1);
  EXPECT_FALSE(matched("198.51.100.1")) << "a deleted set empties its rule";
}

TEST_F(SetMapsTest, ASetOfPortsIsAClearErrorAndMatchesNothing) {
  nft("table inet fw4 { set web { type inet_service; elements = { 80, 443 } } }");
  NftSet set;
  std::string error;
  netlink::NftSetReader reader;
  EXPECT_EQ(reader.read("web", &set, &error), SetLookup::kError);
  EXPECT_NE(error.find("nft set web (table inet fw4) holds inet_service, not addresses"), std::string::npos)
      << error;
  sets_->configure({"web"});
  sets_->refresh();
  EXPECT_NE(status_of_first().problem.find("inet_service"), std::string::npos);
  EXPECT_FALSE(matched("198.51.100.1"));
}

TEST_F(SetMapsTest, Fw4WinsAndTwoOtherTablesAreAmbiguous) {
  nft("table ip a { set s { type ipv4_addr; elements = { 198.51.100.1 } } }");
  nft("table ip6 b { set s { type ipv6_addr; elements = { 2001:db8::1 } } }");
  NftSet set;
  std::string error;
  netlink::NftSetReader reader;
  EXPECT_EQ(reader.read("s", &set, &error), SetLookup::kError);
  EXPECT_NE(error.find("exists in tables ip a and ip6 b"), std::string::npos) << error;
  nft("table inet fw4 { set s { type ipv4_addr; elements = { 203.0.113.1 } } }");
  ASSERT_EQ(reader.read("s", &set, &error), SetLookup::kFound) << error;
  EXPECT_EQ(set.where(), "inet fw4");
  EXPECT_EQ(strings_of(set.prefixes), std::vector<std::string>{"203.0.113.1/32"});
  EXPECT_EQ(reader.read("x;flush ruleset", &set, &error), SetLookup::kError) << "never put into a command";
  EXPECT_EQ(reader.read("nothere", &set, &error), SetLookup::kMissing);
}

TEST_F(SetMapsTest, ReconfigureMovesATrieWithItsNameAndEmptiesDroppedIds) {
  nft("table inet fw4 { set a { type ipv4_addr; elements = { 198.51.100.1 } }; "
      "set b { type ipv4_addr; elements = { 203.0.113.1 } } }");
  sets_->configure({"a"});
  sets_->refresh();
  EXPECT_TRUE(matched("198.51.100.1"));
  // Set a becomes id 2 (a rule with set b was put before it): id 1 is b, empty until refresh().
  sets_->configure({"b", "a"});
  EXPECT_FALSE(matched("198.51.100.1"));
  EXPECT_FALSE(matched("203.0.113.1"));
  sets_->refresh();
  EXPECT_TRUE(matched("203.0.113.1"));
  const uint32_t slot = 1;
  uint32_t id = 0;
  EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sets), &slot, &id), 0) << "set a moved to sets[1]";
  sets_->configure({});
  EXPECT_EQ(trie_id(), 0u);
  EXPECT_FALSE(matched("203.0.113.1"));
}

TEST_F(SetMapsTest, TheRulesetGenerationMovesWithEveryCommit) {
  const std::optional<uint32_t> before = netlink::nft_ruleset_generation();
  ASSERT_TRUE(before.has_value());
  nft("table inet fw4 { set vpn { type ipv4_addr; } }");
  nft("add element inet fw4 vpn { 198.51.100.1 }");
  const std::optional<uint32_t> after = netlink::nft_ruleset_generation();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(*after - *before, 2u);
  // A refresh with nothing committed since the last read does not ask libnftables at all.
  int reads = 0;
  SetMaps counted(bpf_map__fd(skel_->maps.sets),
                  [&](const std::string& name, NftSet* out, std::string* error) {
                    ++reads;
                    return netlink::NftSetReader().read(name, out, error);
                  });
  counted.configure({"vpn"});
  EXPECT_EQ(counted.refresh(), 1);
  EXPECT_EQ(counted.refresh(), 0);
  EXPECT_EQ(reads, 1);
  nft("add element inet fw4 vpn { 198.51.100.2 }");
  EXPECT_EQ(counted.refresh(), 1);
  EXPECT_EQ(reads, 2);
  EXPECT_TRUE(matched("198.51.100.2"));
}

// A set beyond the trie's capacity is cut, and the warning gives the set's own prefix count beside
// the trie entries it became (an IPv6 prefix over ::ffff:0:0/96 is written as up to 96 entries).
TEST_F(SetMapsTest, ASetOverTheLimitIsCutWithBothCountsNamed) {
  const int count = UPLINKD_MAX_SET_ENTRIES + 1;
  std::string script = "table inet fw4 { set huge { type ipv4_addr; elements = { ";
  for (int i = 0; i < count; ++i) {
    script += std::string(i == 0 ? "" : ", ") + "10." + std::to_string(i / 65536) + "." +
              std::to_string(i / 256 % 256) + "." + std::to_string(i % 256);
  }
  script += " }; }; }";
  ASSERT_NO_FATAL_FAILURE(nft_file(script));
  sets_->configure({"huge"});
  sets_->refresh();
  const std::string n = std::to_string(count);
  EXPECT_NE(status_of_first().problem.find(n + " prefixes, " + n + " trie entries; only the first " +
                                           std::to_string(UPLINKD_MAX_SET_ENTRIES) + " entries are used"),
            std::string::npos)
      << status_of_first().problem;
  EXPECT_TRUE(matched("10.0.0.1"));
  EXPECT_FALSE(matched("10.1.0.0")) << "the one prefix past the limit is not in the trie";
}

// Not a speed test (bench/ states speeds): prints what a refresh of a 20000-element set costs here,
// changed and unchanged, so the figure quoted in set_maps.h can be checked.
TEST_F(SetMapsTest, RefreshCostOfALargeSet) {
  std::string script = "table inet fw4 { set big { type ipv4_addr; flags interval; elements = { ";
  for (int i = 0; i < 20000; ++i) {
    script += std::string(i == 0 ? "" : ", ") + "10." + std::to_string(i / 200) + "." +
              std::to_string(i % 200) + ".0/25";
  }
  script += " }; }; }";
  ASSERT_NO_FATAL_FAILURE(nft_file(script));
  sets_->configure({"big"});
  auto timed = [&](bool force) {
    auto start = std::chrono::steady_clock::now();
    sets_->refresh(force);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  const double load_ms = timed(false);
  const double unchanged_ms = timed(false);
  const double forced_ms = timed(true);
  EXPECT_EQ(status_of_first().prefixes, 20000u);
  EXPECT_TRUE(matched("10.99.199.1"));
  std::printf(
      "[ cost     ] 20000-prefix interval set: first load %.1f ms, refresh with nothing committed %.2f ms, "
      "forced re-read of the unchanged set %.1f ms\n",
      load_ms, unchanged_ms, forced_ms);
}

}  // namespace
}  // namespace uplinkd::datapath
