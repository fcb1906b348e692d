// rule_id_remap(): which new rule id carries an old rule's counters, sticky entries and flows.
#include "policy/rule_identity.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace uplinkd::policy {
namespace {

using Ids = std::vector<uint32_t>;
using Names = std::vector<std::string>;

TEST(RuleIdentityTest, SameRulesSameOrderIsTheIdentity) {
  const Ids remap = rule_id_remap({"https", "voip", "default_rule"}, {"https", "voip", "default_rule"});
  EXPECT_EQ(remap, (Ids{0, 1, 2, 3}));
  EXPECT_TRUE(is_identity(remap));
}

TEST(RuleIdentityTest, ARuleAppendedKeepsEveryId) {
  EXPECT_TRUE(is_identity(rule_id_remap({"https", "default_rule"}, {"https", "default_rule", "new"})));
}

TEST(RuleIdentityTest, ARuleInsertedInFrontShiftsTheOthers) {
  const Ids remap = rule_id_remap({"https", "default_rule"}, {"voip", "https", "default_rule"});
  EXPECT_EQ(remap, (Ids{0, 2, 3}));
  EXPECT_FALSE(is_identity(remap));
}

TEST(RuleIdentityTest, ARemovedRuleMapsToNothing) {
  EXPECT_EQ(rule_id_remap({"https", "voip", "default_rule"}, {"https", "default_rule"}), (Ids{0, 1, 0, 2}));
  EXPECT_EQ(rule_id_remap({"https", "voip"}, {"https"}), (Ids{0, 1, 0}));  // removed at the end
  EXPECT_FALSE(is_identity(rule_id_remap({"https", "voip"}, {"https"})));
}

TEST(RuleIdentityTest, SwappedRulesSwapIds) {
  EXPECT_EQ(rule_id_remap({"a", "b", "c"}, {"b", "a", "c"}), (Ids{0, 2, 1, 3}));
}

TEST(RuleIdentityTest, ARenamedRuleIsANewRule) {
  EXPECT_EQ(rule_id_remap({"https", "default_rule"}, {"https_v2", "default_rule"}), (Ids{0, 0, 2}));
}

TEST(RuleIdentityTest, AnonymousRulesKeepTheirPositionalNames) {
  // UCI names anonymous sections @rule[N]: the N-th anonymous rule stays the N-th.
  EXPECT_EQ(rule_id_remap({"@rule[0]", "@rule[1]"}, {"named", "@rule[0]", "@rule[1]"}), (Ids{0, 2, 3}));
}

TEST(RuleIdentityTest, DuplicateNamesAreNotGuessed) {
  EXPECT_EQ(rule_id_remap({"x", "x", "y"}, {"y", "x"}), (Ids{0, 0, 0, 1}));
  EXPECT_EQ(rule_id_remap({"x", "y"}, {"x", "x", "y"}), (Ids{0, 0, 3}));
}

TEST(RuleIdentityTest, NoOldRules) {
  EXPECT_EQ(rule_id_remap({}, {"a"}), (Ids{0}));
  EXPECT_TRUE(is_identity(rule_id_remap({}, {"a"})));
  EXPECT_TRUE(is_identity(rule_id_remap({}, {})));
}

}  // namespace
}  // namespace uplinkd::policy
