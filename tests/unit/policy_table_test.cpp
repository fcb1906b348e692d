// Policy resolution as mwan3 does it: marks from mmx_mask, lowest metric wins among online members, equal
// metrics split by weight, last_resort when nothing is online, the per-flow pick table, and the
// `mwan3 policies` text.
#include "policy/policy_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace uplinkd::policy {
namespace {

using config::Family;

const std::string kFieldReports = std::string(UPLINKD_SHARED_DIR) + "/field-reports";

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", static_cast<unsigned>(v));
  return buf;
}

// "wan 0x100 w3 60%, wanb 0x200 w2 40%", or "unreachable 0x3e00" when the last resort applies.
std::string describe(const FamilyPolicy& fp) {
  if (fp.uses_last_resort()) {
    return std::string(last_resort_word(fp.last_resort)) + " " + hex(fp.last_resort_mark);
  }
  std::string out;
  for (const auto& m : fp.members) {
    if (!out.empty()) {
      out += ", ";
    }
    out += m.interface + " " + hex(m.mark) + " w" + std::to_string(m.weight) + " " +
           std::to_string(m.share_pct) + "%";
  }
  return out;
}

// ---- marks --------------------------------------------------------------------------------------

struct MarkSpaceCase {
  const char* name;
  uint32_t mask;
  int bits;
  uint32_t mmdefault;
  uint32_t blackhole_mark;
  uint32_t unreachable_mark;
  uint32_t default_mark;
  uint32_t max_interfaces;
};
void PrintTo(const MarkSpaceCase& row, std::ostream* os) { *os << row.name; }

const MarkSpaceCase kMarkSpaceCases[] = {
    // mwan3's default mask (reference section 4): 60 interfaces, reserved marks 0x3d00..0x3f00.
    {"mask_0x3F00", 0x3F00, 6, 63, 0x3d00, 0x3e00, 0x3f00, 60},
    // The mask mwan3 once hard-coded: blackhole 0xfd00 and unreachable 0xfe00 (its old pref 2253/2254 rules).
    {"mask_0xFF00", 0xFF00, 8, 255, 0xfd00, 0xfe00, 0xff00, 252},
    // The fewest bits mwan3 can work with: four interfaces.
    {"mask_0x700", 0x700, 3, 7, 0x500, 0x600, 0x700, 4},
    // Bits need not be contiguous (the 0xAA example in mwan3's common.sh): ids spread over bits 1, 3, 5, 7;
    // blackhole id 13 = 0b1101 -> 0xa2, unreachable id 14 = 0b1110 -> 0xa8.
    {"mask_0xAA", 0xAA, 4, 15, 0xa2, 0xa8, 0xaa, 12},
    {"mask_all_bits", 0xFFFFFFFF, 32, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFC},
};

class MarkSpaceTable : public testing::TestWithParam<MarkSpaceCase> {};

TEST_P(MarkSpaceTable, ReservedIdsAndMarks) {
  const MarkSpaceCase& c = GetParam();
  const MarkSpace s = MarkSpace::from_mask(c.mask);
  EXPECT_EQ(s.mask, c.mask);
  EXPECT_EQ(s.bits, c.bits);
  EXPECT_EQ(s.mmdefault, c.mmdefault);
  EXPECT_EQ(s.blackhole_id, c.mmdefault - 2);
  EXPECT_EQ(s.unreachable_id, c.mmdefault - 1);
  EXPECT_EQ(hex(s.blackhole_mark), hex(c.blackhole_mark));
  EXPECT_EQ(hex(s.unreachable_mark), hex(c.unreachable_mark));
  EXPECT_EQ(hex(s.default_mark), hex(c.default_mark));
  EXPECT_EQ(s.default_mark, c.mask);  // mwan3: "MMX_DEFAULT should equal MMX_MASK"
  EXPECT_EQ(s.max_interfaces, c.max_interfaces);
  // The highest interface id still has its own mark, the next one is reserved.
  EXPECT_EQ(s.interface_mark(s.max_interfaces), config::mark_for_id(s.max_interfaces, c.mask));
  EXPECT_EQ(s.interface_mark(s.max_interfaces + 1), 0U);
  EXPECT_EQ(s.interface_mark(0), 0U);
}

INSTANTIATE_TEST_SUITE_P(Mwan3, MarkSpaceTable, testing::ValuesIn(kMarkSpaceCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(PolicyMarks, Mwan3DocumentedNumbersFor0x3F00) {
  const MarkSpace s = MarkSpace::from_mask(0x3F00);
  EXPECT_EQ(s.interface_mark(1), 0x100U);
  EXPECT_EQ(s.interface_mark(2), 0x200U);
  EXPECT_EQ(s.interface_mark(60), 0x3c00U);
  EXPECT_EQ(s.interface_mark(61), 0U);  // blackhole id, not an interface
  // ip rule prefs 2000 + id: the general blackhole and unreachable rules sit at 2061 and 2062.
  EXPECT_EQ(2000 + s.blackhole_id, 2061U);
  EXPECT_EQ(2000 + s.unreachable_id, 2062U);
}

TEST(PolicyMarks, TooFewMaskBitsAreAnError) {
  // 0x300: mmdefault 3, blackhole id 1, unreachable id 2, no id left for an interface.
  for (uint32_t mask : {0x300U, 0x100U, 0x0U}) {
    SCOPED_TRACE(hex(mask));
    try {
      (void)MarkSpace::from_mask(mask);
      ADD_FAILURE() << "no error";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("at least 3"), std::string::npos) << e.what();
    }
  }
  // The configuration reader stops such a mask first, with its line.
  EXPECT_THROW(config::parse("config globals 'globals'\n option mmx_mask '0x300'\n", "mwan3"),
               config::ConfigError);
}

struct BuiltinCase {
  const char* name;
  const char* word;
  uint32_t mask;
  std::optional<uint32_t> mark;
};
void PrintTo(const BuiltinCase& row, std::ostream* os) { *os << row.name; }

const BuiltinCase kBuiltinCases[] = {
    {"default_3F00", "default", 0x3F00, 0x3f00},         {"unreachable_3F00", "unreachable", 0x3F00, 0x3e00},
    {"blackhole_3F00", "blackhole", 0x3F00, 0x3d00},     {"default_FF00", "default", 0xFF00, 0xff00},
    {"unreachable_FF00", "unreachable", 0xFF00, 0xfe00}, {"blackhole_FF00", "blackhole", 0xFF00, 0xfd00},
    {"policy_name", "balanced", 0x3F00, std::nullopt},   {"case_matters", "Default", 0x3F00, std::nullopt},
};

class BuiltinPolicyTable : public testing::TestWithParam<BuiltinCase> {};

TEST_P(BuiltinPolicyTable, RuleTargetMark) {
  const BuiltinCase& c = GetParam();
  EXPECT_EQ(builtin_policy_mark(c.word, MarkSpace::from_mask(c.mask)), c.mark);
}

INSTANTIATE_TEST_SUITE_P(Mwan3, BuiltinPolicyTable, testing::ValuesIn(kBuiltinCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(PolicyLastResort, WordsAndMarks) {
  const MarkSpace s = MarkSpace::from_mask(0x3F00);
  EXPECT_EQ(parse_last_resort("unreachable"), LastResort::Unreachable);
  EXPECT_EQ(parse_last_resort("blackhole"), LastResort::Blackhole);
  EXPECT_EQ(parse_last_resort("default"), LastResort::Default);
  EXPECT_EQ(parse_last_resort("reject"), LastResort::Unreachable);  // mwan3's `*)` branch
  for (LastResort lr : {LastResort::Unreachable, LastResort::Blackhole, LastResort::Default}) {
    EXPECT_EQ(parse_last_resort(last_resort_word(lr)), lr);
  }
  EXPECT_EQ(last_resort_mark(LastResort::Unreachable, s), 0x3e00U);
  EXPECT_EQ(last_resort_mark(LastResort::Blackhole, s), 0x3d00U);
  EXPECT_EQ(last_resort_mark(LastResort::Default, s), 0x3f00U);
}

// ---- pick table ---------------------------------------------------------------------------------

struct SplitCase {
  const char* name;
  std::vector<uint64_t> weights;
};
void PrintTo(const SplitCase& row, std::ostream* os) { *os << row.name; }

const SplitCase kSplitCases[] = {
    {"w3_2", {3, 2}},
    {"w3_2_5", {3, 2, 5}},
    {"w1_1", {1, 1}},
    {"w1_3", {1, 3}},
    {"w3_5", {3, 5}},
    {"w1_1_1", {1, 1, 1}},
    {"w1", {7}},
    {"w1_to_16", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
    {"w_int_max", {2147483647, 1, 2147483647}},
};

class PickSplitTable : public testing::TestWithParam<SplitCase> {};

std::vector<uint32_t> marks_1_to(size_t n) {
  std::vector<uint32_t> marks;
  for (size_t i = 0; i < n; ++i) {
    marks.push_back(static_cast<uint32_t>((i + 1) << 8));
  }
  return marks;
}

// Over the 2^16 evenly spaced hashes k << 16 each member's count is within one of its exact share, and
// exactly its share when the total weight divides 2^16 (no split of 2^16 into fifths is exact).
TEST_P(PickSplitTable, EvenlySpacedHashesSplitByWeight) {
  const SplitCase& c = GetParam();
  const PickTable t = build_pick_table(c.weights, marks_1_to(c.weights.size()));
  ASSERT_EQ(t.thresholds.size(), c.weights.size());
  std::vector<uint64_t> counts(c.weights.size(), 0);
  constexpr uint64_t kSamples = 1U << 16;
  for (uint64_t k = 0; k < kSamples; ++k) {
    ++counts[t.index_for(static_cast<uint32_t>(k << 16)).value()];
  }
  uint64_t total = 0;
  for (uint64_t w : c.weights) {
    total += w;
  }
  for (size_t i = 0; i < counts.size(); ++i) {
    SCOPED_TRACE("member " + std::to_string(i));
    // |count - samples * w / total| < 1, in integers (long double: INT_MAX weights times 2^16).
    const long double exact = static_cast<long double>(kSamples) * c.weights[i] / total;
    EXPECT_LT(std::abs(static_cast<long double>(counts[i]) - exact), 1.0L) << counts[i] << " vs " << exact;
    if (kSamples % total == 0) {
      EXPECT_EQ(counts[i], kSamples / total * c.weights[i]);
    }
  }
}

// Over all 2^32 hashes, each member's range is its share to within one hash, and every hash has a member.
TEST_P(PickSplitTable, ThresholdsCoverTheHashSpace) {
  const SplitCase& c = GetParam();
  const PickTable t = build_pick_table(c.weights, marks_1_to(c.weights.size()));
  const size_t last = c.weights.size() - 1;
  EXPECT_EQ(t.thresholds.back(), std::numeric_limits<uint32_t>::max());
  EXPECT_EQ(t.index_for(0), 0U);
  EXPECT_EQ(t.index_for(std::numeric_limits<uint32_t>::max()), last);
  uint64_t total = 0;
  for (uint64_t w : c.weights) {
    total += w;
  }
  uint64_t range_start = 0;
  for (size_t i = 0; i <= last; ++i) {
    SCOPED_TRACE("member " + std::to_string(i));
    const uint64_t range_end = uint64_t{t.thresholds[i]} + 1;  // thresholds are each range's last hash
    ASSERT_GE(range_end, range_start);
    const long double exact = static_cast<long double>(uint64_t{1} << 32) * c.weights[i] / total;
    EXPECT_LT(std::abs(static_cast<long double>(range_end - range_start) - exact), 1.0L);
    if (range_end > range_start) {
      EXPECT_EQ(t.index_for(static_cast<uint32_t>(range_start)), i);
      EXPECT_EQ(t.mark_for(static_cast<uint32_t>(range_end - 1)), (i + 1) << 8);
    }
    range_start = range_end;
  }
  EXPECT_EQ(range_start, uint64_t{1} << 32);
}

INSTANTIATE_TEST_SUITE_P(Weights, PickSplitTable, testing::ValuesIn(kSplitCases),
                         [](const auto& info) { return std::string(info.param.name); });

// Inclusive bounds, as lan_ingress.bpf.c's pick_member() reads them; past a malformed table's last bound
// it takes the last member, as the classifier does.
TEST(PolicyPick, ThresholdsAreEachMembersLastHash) {
  const PickTable t{{9, 19}, {0x100, 0x200}, 0x3e00};
  EXPECT_EQ(t.index_for(9), 0U);
  EXPECT_EQ(t.index_for(10), 1U);
  EXPECT_EQ(t.index_for(19), 1U);
  EXPECT_EQ(t.index_for(20), 1U);
  EXPECT_EQ(PickTable{}.index_for(0), std::nullopt);
  EXPECT_EQ((PickTable{{}, {}, 0x3e00}.mark_for(0)), 0x3e00U);
}

TEST(PolicyPick, BadTablesAreErrors) {
  EXPECT_THROW(build_pick_table({}, {}), std::invalid_argument);
  EXPECT_THROW(build_pick_table({1, 2}, {0x100}), std::invalid_argument);
  EXPECT_THROW(build_pick_table({0}, {0x100}), std::invalid_argument);
  EXPECT_THROW(build_pick_table({uint64_t{1} << 47}, {0x100}), std::invalid_argument);
  EXPECT_NO_THROW(build_pick_table(std::vector<uint64_t>(16, 1), marks_1_to(16)));
  EXPECT_THROW(build_pick_table(std::vector<uint64_t>(17, 1), marks_1_to(17)), std::invalid_argument);
}

// ---- resolution over a small configuration ------------------------------------------------------

// Interface ids by position: wan 1 (0x100), wanb 2 (0x200), wanc 3 (0x300), wand 4 (disabled),
// wan6 5 (0x500, ipv6). Devices are given inline so no network file is needed.
const char* const kConfig = R"(
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan'
	option enabled '1'
	option device 'eth1'

config interface 'wanb'
	option enabled '1'
	option device 'eth2'

config interface 'wanc'
	option enabled '1'
	option device 'eth3'

config interface 'wand'
	option enabled '0'
	option device 'eth4'

config interface 'wan6'
	option enabled '1'
	option family 'ipv6'
	option device 'eth1'

config member 'wan_m1_w3'
	option interface 'wan'
	option metric '1'
	option weight '3'

config member 'wanb_m1_w2'
	option interface 'wanb'
	option metric '1'
	option weight '2'

config member 'wanc_m1_w5'
	option interface 'wanc'
	option metric '1'
	option weight '5'

config member 'wan_m1'
	option interface 'wan'

config member 'wanb_m1'
	option interface 'wanb'

config member 'wanc_m1'
	option interface 'wanc'

config member 'wand_m1'
	option interface 'wand'

config member 'wan_m2'
	option interface 'wan'
	option metric '2'

config member 'wanb_m2_w2'
	option interface 'wanb'
	option metric '2'
	option weight '2'

config member 'wanb_m3'
	option interface 'wanb'
	option metric '3'

config member 'wan_m256'
	option interface 'wan'
	option metric '256'

config member 'wan_m257'
	option interface 'wan'
	option metric '257'

config member 'wanb_m256'
	option interface 'wanb'
	option metric '256'

config member 'wan6_m1_w3'
	option interface 'wan6'
	option metric '1'
	option weight '3'

config policy 'split_3_2'
	list use_member 'wan_m1_w3'
	list use_member 'wanb_m1_w2'

config policy 'split_3_2_5'
	list use_member 'wan_m1_w3'
	list use_member 'wanb_m1_w2'
	list use_member 'wanc_m1_w5'

config policy 'thirds'
	list use_member 'wan_m1'
	list use_member 'wanb_m1'
	list use_member 'wanc_m1'

config policy 'failover'
	list use_member 'wan_m1_w3'
	list use_member 'wanb_m2_w2'

config policy 'late_low_metric'
	list use_member 'wanb_m3'
	list use_member 'wan_m2'

config policy 'disabled_first'
	list use_member 'wand_m1'
	list use_member 'wanb_m2_w2'

config policy 'metric_256'
	list use_member 'wan_m257'
	list use_member 'wanb_m256'

config policy 'only_257'
	list use_member 'wan_m257'

config policy 'tie_at_256'
	list use_member 'wan_m256'
	list use_member 'wanb_m256'

config policy 'bh'
	list use_member 'wan_m1'
	option last_resort 'blackhole'

config policy 'dflt'
	list use_member 'wan_m1'
	option last_resort 'default'

config policy 'empty'

config policy 'dual_stack'
	list use_member 'wan_m1_w3'
	list use_member 'wan6_m1_w3'
)";

const config::Config& small_config() {
  static const config::Config cfg = config::parse(kConfig, "mwan3");
  return cfg;
}

OnlineInterfaces online_set(const char* names) {
  OnlineInterfaces out;
  std::istringstream in(names);
  for (std::string n; in >> n;) {
    out.insert(n);
  }
  return out;
}

struct ResolveCase {
  const char* name;
  const char* policy;
  const char* online;  // interface names, space separated
  Family family;
  const char* expected;  // describe() of the result
};
void PrintTo(const ResolveCase& row, std::ostream* os) { *os << row.name; }

const char* const kAll = "wan wanb wanc wand wan6";

const ResolveCase kResolveCases[] = {
    {"weights_3_2", "split_3_2", kAll, Family::Ipv4, "wan 0x100 w3 60%, wanb 0x200 w2 40%"},
    {"weights_3_2_5", "split_3_2_5", kAll, Family::Ipv4,
     "wan 0x100 w3 30%, wanb 0x200 w2 20%, wanc 0x300 w5 50%"},
    {"weights_3_2_5_wanb_offline", "split_3_2_5", "wan wanc", Family::Ipv4,
     "wan 0x100 w3 37%, wanc 0x300 w5 62%"},
    {"thirds_truncate", "thirds", kAll, Family::Ipv4,
     "wan 0x100 w1 33%, wanb 0x200 w1 33%, wanc 0x300 w1 33%"},
    {"split_one_online", "split_3_2", "wanb", Family::Ipv4, "wanb 0x200 w2 100%"},
    {"split_none_online", "split_3_2", "", Family::Ipv4, "unreachable 0x3e00"},
    {"failover_lower_metric_wins", "failover", kAll, Family::Ipv4, "wan 0x100 w3 100%"},
    {"failover_primary_offline", "failover", "wanb wanc", Family::Ipv4, "wanb 0x200 w2 100%"},
    {"lower_metric_listed_later_wins", "late_low_metric", kAll, Family::Ipv4, "wan 0x100 w1 100%"},
    {"lower_metric_listed_later_offline", "late_low_metric", "wanb", Family::Ipv4, "wanb 0x200 w1 100%"},
    {"disabled_interface_skipped_even_if_online", "disabled_first", kAll, Family::Ipv4, "wanb 0x200 w2 100%"},
    {"metric_257_ignored_256_used", "metric_256", kAll, Family::Ipv4, "wanb 0x200 w1 100%"},
    {"only_metric_257_is_last_resort", "only_257", kAll, Family::Ipv4, "unreachable 0x3e00"},
    {"metric_256_members_balance", "tie_at_256", kAll, Family::Ipv4, "wan 0x100 w1 50%, wanb 0x200 w1 50%"},
    {"last_resort_blackhole", "bh", "wanb", Family::Ipv4, "blackhole 0x3d00"},
    {"last_resort_default", "dflt", "wanb", Family::Ipv4, "default 0x3f00"},
    {"last_resort_online_unused", "bh", "wan", Family::Ipv4, "wan 0x100 w1 100%"},
    {"no_members", "empty", kAll, Family::Ipv4, "unreachable 0x3e00"},
    {"dual_stack_v4", "dual_stack", kAll, Family::Ipv4, "wan 0x100 w3 100%"},
    {"dual_stack_v6", "dual_stack", kAll, Family::Ipv6, "wan6 0x500 w3 100%"},
    {"dual_stack_v6_offline", "dual_stack", "wan", Family::Ipv6, "unreachable 0x3e00"},
    {"v4_policy_in_v6", "split_3_2", kAll, Family::Ipv6, "unreachable 0x3e00"},
    {"unknown_online_name_ignored", "split_3_2", "wanx wanb", Family::Ipv4, "wanb 0x200 w2 100%"},
};

class ResolveTable : public testing::TestWithParam<ResolveCase> {};

TEST_P(ResolveTable, MembersSharesOrLastResort) {
  const ResolveCase& c = GetParam();
  const PolicyTable t = resolve_policies(small_config(), online_set(c.online));
  const PolicyState* p = t.find(c.policy);
  ASSERT_NE(p, nullptr) << c.policy;
  EXPECT_EQ(describe(p->family(c.family)), c.expected) << "online: " << c.online;
}

INSTANTIATE_TEST_SUITE_P(Mwan3, ResolveTable, testing::ValuesIn(kResolveCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(PolicyResolve, PickAgreesWithTheTableAndTheLastResort) {
  const PolicyTable t = resolve_policies(small_config(), online_set(kAll));
  const FamilyPolicy& split = t.find("split_3_2_5")->ipv4;
  ASSERT_EQ(split.table.marks, (std::vector<uint32_t>{0x100, 0x200, 0x300}));
  for (uint32_t h : {0U, 1U << 30, 1U << 31, 0xC0000000U, 0xFFFFFFFFU}) {
    const ActiveMember* m = split.pick(h);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->mark, split.mark_for_flow(h));
  }
  EXPECT_EQ(split.pick(0)->interface, "wan");
  EXPECT_EQ(split.pick(0xFFFFFFFFU)->interface, "wanc");

  // With no member online the table is empty and every flow gets the last_resort mark.
  const FamilyPolicy bh =
      resolve_policies(small_config(), {}).find("bh")->ipv4;  // a copy: the table is a temporary
  EXPECT_EQ(bh.pick(12345), nullptr);
  EXPECT_TRUE(bh.table.thresholds.empty());
  EXPECT_EQ(bh.table.index_for(12345), std::nullopt);
  EXPECT_EQ(bh.mark_for_flow(12345), 0x3d00U);
}

// The classifier's map value (maps/uplinkd_maps.h): member slots in use_member order, the rest zero.
TEST(PolicyResolve, PolicyEntryForTheClassifier) {
  const PolicyTable t = resolve_policies(small_config(), online_set(kAll));
  const FamilyPolicy& split = t.find("split_3_2_5")->ipv4;
  const policy_entry e = to_policy_entry(split);
  EXPECT_EQ(e.n_members, 3U);
  EXPECT_EQ(e.fallback_mark, 0x3e00U);
  // The last hash of each range: cumulative shares 3/10, 5/10, 10/10 of 2^32, rounded up, less one.
  EXPECT_EQ(e.threshold[0], 1288490188U);
  EXPECT_EQ(e.threshold[1], 2147483647U);
  EXPECT_EQ(e.threshold[2], 0xFFFFFFFFU);
  EXPECT_EQ(e.mark[0], 0x100U);
  EXPECT_EQ(e.mark[1], 0x200U);
  EXPECT_EQ(e.mark[2], 0x300U);
  EXPECT_EQ(e.uplink_id[0], 1);
  EXPECT_EQ(e.uplink_id[1], 2);
  EXPECT_EQ(e.uplink_id[2], 3);
  for (size_t i = 3; i < kMaxPolicyMembers; ++i) {
    EXPECT_EQ(e.threshold[i], 0U);
    EXPECT_EQ(e.mark[i], 0U);
    EXPECT_EQ(e.uplink_id[i], 0);
  }

  const policy_entry none = to_policy_entry(resolve_policies(small_config(), {}).find("dflt")->ipv4);
  EXPECT_EQ(none.n_members, 0U);
  EXPECT_EQ(none.fallback_mark, 0x3f00U);
}

// The issue's integration target: 2000 flows over weights 3:2 land within 5 points of 60/40.
TEST(PolicyResolve, TwoThousandFlowsSplitNearSixtyForty) {
  const FamilyPolicy fp = resolve_policies(small_config(), online_set(kAll)).find("split_3_2")->ipv4;
  std::mt19937 flow_hashes(20240611);  // fixed seed: the same 2000 hashes every run
  int on_wan = 0;
  constexpr int kFlows = 2000;
  for (int i = 0; i < kFlows; ++i) {
    const uint32_t h = static_cast<uint32_t>(flow_hashes());
    const ActiveMember* m = fp.pick(h);
    ASSERT_NE(m, nullptr);
    on_wan += m->interface == "wan" ? 1 : 0;
  }
  const double wan_pct = 100.0 * on_wan / kFlows;
  EXPECT_NEAR(wan_pct, 60.0, 5.0);
}

TEST(PolicyResolve, PoliciesAreListedByName) {
  const PolicyTable t = resolve_policies(small_config(), {});
  std::vector<std::string> names;
  for (const auto& p : t.policies) {
    names.push_back(p.name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"bh", "dflt", "disabled_first", "dual_stack", "empty",
                                             "failover", "late_low_metric", "metric_256", "only_257",
                                             "split_3_2", "split_3_2_5", "thirds", "tie_at_256"}));
}

// 17 members: one more than a pick table holds. Each family counts on its own, and members above
// metric 256 (never used) do not count.
std::string many_members_config(int v4_members, int v6_members, int ignored_members) {
  std::string text =
      "config interface 'wan'\n option enabled '1'\n option device 'eth1'\n"
      "config interface 'wan6'\n option enabled '1'\n option family 'ipv6'\n option device 'eth1'\n";
  std::string policy = "config policy 'many'\n";
  auto add = [&](const std::string& name, const char* iface, int metric) {
    text += "config member '" + name + "'\n option interface '" + iface + "'\n option metric '" +
            std::to_string(metric) + "'\n";
    policy += " list use_member '" + name + "'\n";
  };
  for (int i = 0; i < v4_members; ++i) {
    add("m4_" + std::to_string(i), "wan", 1);
  }
  for (int i = 0; i < v6_members; ++i) {
    add("m6_" + std::to_string(i), "wan6", 1);
  }
  for (int i = 0; i < ignored_members; ++i) {
    add("mx_" + std::to_string(i), "wan", 300);
  }
  return text + policy;
}

TEST(PolicyLimits, SeventeenMembersOfOneFamilyAreAConfigError) {
  const std::string text = many_members_config(17, 0, 0);
  const config::Config cfg = config::parse(text, "mwan3");
  try {
    check_policy_limits(cfg);
    ADD_FAILURE() << "no error";
  } catch (const config::ConfigError& e) {
    EXPECT_EQ(e.file, "mwan3");
    EXPECT_EQ(e.line, cfg.policies[0].line);
    EXPECT_EQ(e.option, "use_member");
    EXPECT_NE(std::string(e.what()).find("policy 'many' has 17 ipv4 members; accepted: at most 16"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(resolve_policies(cfg, {}), config::ConfigError);

  EXPECT_NO_THROW(check_policy_limits(config::parse(many_members_config(16, 16, 0), "mwan3")));
  EXPECT_NO_THROW(check_policy_limits(config::parse(many_members_config(16, 0, 4), "mwan3")));
  EXPECT_THROW(check_policy_limits(config::parse(many_members_config(0, 17, 0), "mwan3")),
               config::ConfigError);
}

// ---- text and JSON ------------------------------------------------------------------------------

TEST(PolicyFormat, TextAsMwan3PrintsIt) {
  // `mwan3 policies` lists policies by name, members in chain order (mwan3 inserts each later member at
  // the top, so the reverse of use_member), shares truncated, the last_resort word when none is online,
  // and every policy under both families.
  const std::string kText = R"(
config interface 'wan'
	option enabled '1'
	option device 'eth1'
config interface 'wanb'
	option enabled '1'
	option device 'eth2'
config interface 'wanc'
	option enabled '1'
	option device 'eth3'
config interface 'wan6'
	option enabled '1'
	option family 'ipv6'
	option device 'eth1'
config member 'a'
	option interface 'wan'
config member 'b'
	option interface 'wanb'
config member 'c'
	option interface 'wanc'
config member 'a6'
	option interface 'wan6'
	option weight '2'
config policy 'thirds'
	list use_member 'a'
	list use_member 'b'
	list use_member 'c'
	list use_member 'a6'
config policy 'backup'
	list use_member 'c'
	option last_resort 'blackhole'
)";
  const config::Config cfg = config::parse(kText, "mwan3");
  const PolicyTable t = resolve_policies(cfg, online_set("wan wanb wanc wan6"));
  EXPECT_EQ(format_policies(t),
            "Current ipv4 policies:\n"
            "backup:\n"
            " wanc (100%)\n"
            "thirds:\n"
            " wanc (33%)\n"
            " wanb (33%)\n"
            " wan (33%)\n"
            "\n"
            "Current ipv6 policies:\n"
            "backup:\n"
            " blackhole\n"
            "thirds:\n"
            " wan6 (100%)\n"
            "\n");

  const PolicyTable down = resolve_policies(cfg, online_set("wanb"));
  EXPECT_EQ(format_policies(down),
            "Current ipv4 policies:\n"
            "backup:\n"
            " blackhole\n"
            "thirds:\n"
            " wanb (100%)\n"
            "\n"
            "Current ipv6 policies:\n"
            "backup:\n"
            " blackhole\n"
            "thirds:\n"
            " unreachable\n"
            "\n");

  // Without IPv6 (mwan3 on a router with no ip6tables) only the IPv4 part is printed.
  nlohmann::json v4_only = policies_json(down);
  v4_only.erase("ipv6");
  EXPECT_EQ(format_policies(v4_only),
            "Current ipv4 policies:\n"
            "backup:\n"
            " blackhole\n"
            "thirds:\n"
            " wanb (100%)\n"
            "\n");
  EXPECT_EQ(format_policies(resolve_policies(config::parse("", "mwan3"), {})),
            "Current ipv4 policies:\n\nCurrent ipv6 policies:\n\n");
}

TEST(PolicyFormat, JsonShapedLikeMwan3Ubus) {
  const PolicyTable t = resolve_policies(small_config(), online_set(kAll));
  const nlohmann::json j = policies_json(t);
  // ubus: policies.ipv4.<name> is an array of {interface, percent} in chain order.
  const nlohmann::json& split = j.at("ipv4").at("split_3_2");
  ASSERT_EQ(split.size(), 2U);
  EXPECT_EQ(split[0].at("interface"), "wanb");
  EXPECT_EQ(split[0].at("percent"), 40);
  EXPECT_EQ(split[1].at("interface"), "wan");
  EXPECT_EQ(split[1].at("percent"), 60);
  EXPECT_EQ(split[1].at("member"), "wan_m1_w3");
  EXPECT_EQ(split[1].at("id"), 1);
  EXPECT_EQ(split[1].at("mark"), 0x100);
  EXPECT_EQ(split[1].at("metric"), 1);
  EXPECT_EQ(split[1].at("weight"), 3);
  EXPECT_TRUE(j.at("ipv6").at("split_3_2").empty());  // last resort in use
  EXPECT_EQ(j.at("last_resort").at("bh"), (nlohmann::json{{"action", "blackhole"}, {"mark", 0x3d00}}));
  EXPECT_EQ(j.at("last_resort").at("split_3_2"),
            (nlohmann::json{{"action", "unreachable"}, {"mark", 0x3e00}}));
  // The client renders the same text from the JSON the daemon sends.
  EXPECT_EQ(format_policies(nlohmann::json::parse(j.dump())), format_policies(t));
}

// ---- mwan3's shipped default configuration --------------------------------------------------------

std::vector<std::string> report_lines() {
  std::ifstream in(kFieldReports + "/mwan3-reference.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

// The fenced block after the "Default configuration example" heading (it starts with
// `config globals 'globals'`), read at test time rather than copied into this repository.
std::string default_config_block(const std::vector<std::string>& lines) {
  size_t i = 0;
  while (i < lines.size() && lines[i] != "### Default configuration example") {
    ++i;
  }
  while (i < lines.size() && lines[i] != "```") {
    ++i;
  }
  std::string text;
  for (++i; i < lines.size() && lines[i] != "```"; ++i) {
    text += lines[i] + "\n";
  }
  return text;
}

// The policy part of the documented `mwan3 status` output, blank lines as mwan3 prints them (the wiki
// renders them as a no-break space).
std::string documented_policies_block(const std::vector<std::string>& lines) {
  size_t i = 0;
  while (i < lines.size() && lines[i] != "# mwan3 status") {
    ++i;
  }
  while (i < lines.size() && lines[i] != "Current ipv4 policies:") {
    ++i;
  }
  std::string text;
  for (; i < lines.size() && lines[i] != "Directly connected ipv4 networks:"; ++i) {
    const bool blank = lines[i].find_first_not_of(" \t\xC2\xA0") == std::string::npos;
    text += (blank ? "" : lines[i]) + "\n";
  }
  return text;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

// The default configuration names its interfaces but not their devices (OpenWrt finds those in
// /etc/config/network); this stands in for that file.
const char* const kDefaultNetwork = R"(
config interface 'wan'
	option device 'eth1'
	option proto 'dhcp'
config interface 'wan6'
	option device '@wan'
	option proto 'dhcpv6'
config interface 'wanb'
	option device 'eth2'
	option proto 'dhcp'
config interface 'wanb6'
	option device '@wanb'
	option proto 'dhcpv6'
)";

class PolicyDefaultConfig : public testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::is_directory(kFieldReports)) {
      GTEST_SKIP() << "no field reports at " << kFieldReports << " (the shared directory is not checked out)";
    }
    lines_ = report_lines();
    std::string text = default_config_block(lines_);
    ASSERT_EQ(text.rfind("config globals 'globals'\n", 0), 0U) << "default configuration block not found";
    // The shipped file enables only wan; mwan3's documented results are for all four interfaces enabled,
    // as a two-uplink router would set them.
    replace_all(text, "option enabled '0'", "option enabled '1'");
    cfg_ = config::parse(text, "mwan3-reference.txt", std::string(kDefaultNetwork), "network");
  }

  [[nodiscard]] PolicyTable resolve(const char* online) const {
    return resolve_policies(cfg_, online_set(online));
  }

  std::vector<std::string> lines_;
  config::Config cfg_;
};

TEST_F(PolicyDefaultConfig, AllOnline) {
  const PolicyTable t = resolve("wan wan6 wanb wanb6");
  EXPECT_EQ(describe(t.find("balanced")->ipv4), "wan 0x100 w3 50%, wanb 0x300 w3 50%");
  EXPECT_EQ(describe(t.find("balanced")->ipv6), "wan6 0x200 w3 50%, wanb6 0x400 w3 50%");
  EXPECT_EQ(describe(t.find("wan_wanb")->ipv4), "wan 0x100 w3 100%");  // metric 1 beats 2
  EXPECT_EQ(describe(t.find("wanb_wan")->ipv4), "wanb 0x300 w2 100%");
  EXPECT_EQ(describe(t.find("wan_only")->ipv6), "wan6 0x200 w3 100%");
  EXPECT_EQ(describe(t.find("wanb_only")->ipv4), "wanb 0x300 w2 100%");
}

TEST_F(PolicyDefaultConfig, WanOffline) {
  const PolicyTable t = resolve("wan6 wanb wanb6");
  EXPECT_EQ(describe(t.find("wan_wanb")->ipv4), "wanb 0x300 w2 100%");
  EXPECT_EQ(describe(t.find("balanced")->ipv4), "wanb 0x300 w3 100%");
  EXPECT_EQ(describe(t.find("wan_only")->ipv4), "unreachable 0x3e00");
  EXPECT_EQ(describe(t.find("wan_wanb")->ipv6), "wan6 0x200 w3 100%");  // IPv6 is its own chain
}

TEST_F(PolicyDefaultConfig, NothingOnline) {
  const PolicyTable t = resolve("");
  ASSERT_EQ(t.policies.size(), 5U);
  for (const auto& p : t.policies) {
    SCOPED_TRACE(p.name);
    EXPECT_EQ(describe(p.ipv4), "unreachable 0x3e00");
    EXPECT_EQ(describe(p.ipv6), "unreachable 0x3e00");
  }
}

TEST_F(PolicyDefaultConfig, RulesUseNamedPolicies) {
  const MarkSpace marks = MarkSpace::from_mask(cfg_.globals.mmx_mask);
  for (const auto& rule : cfg_.rules) {
    SCOPED_TRACE(rule.name);
    EXPECT_EQ(builtin_policy_mark(rule.use_policy, marks), std::nullopt);
    EXPECT_NE(resolve("").find(rule.use_policy), nullptr);
  }
}

// The report's `mwan3 status` example predates the `balanced` policy; the rest matches byte for byte.
TEST_F(PolicyDefaultConfig, TextMatchesDocumentedStatus) {
  const std::string documented = documented_policies_block(lines_);
  ASSERT_FALSE(documented.empty()) << "documented `mwan3 status` example not found";
  nlohmann::json j = policies_json(resolve("wan wan6 wanb wanb6"));
  j["ipv4"].erase("balanced");
  j["ipv6"].erase("balanced");
  EXPECT_EQ(format_policies(j), documented);
  EXPECT_NE(format_policies(resolve("wan wan6 wanb wanb6")).find("balanced:\n wanb (50%)\n wan (50%)\n"),
            std::string::npos);
}

}  // namespace
}  // namespace uplinkd::policy
