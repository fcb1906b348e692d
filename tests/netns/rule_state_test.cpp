// carry_rule_state() on the real pinned maps of a Datapath: after a reload that removes rule b and
// puts c before a, counters, sticky entries and flows' rule ids belong to the rule of the same name,
// and nothing of the removed rule is left where a later rule could pick it up.
#include "datapath/rule_state.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "datapath/datapath.h"
#include "maps/uplinkd_maps.h"
#include "policy/rule_identity.h"

namespace uplinkd::datapath {
namespace {

class RuleStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (loads BPF programs)";
    if (!is_bpffs("/sys/fs/bpf")) GTEST_SKIP() << "no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)";
    dp_ = std::make_unique<Datapath>(
        "/sys/fs/bpf", "ulrs-" + std::to_string(getpid()), [](const probe_reply_event&) {}, 4096);
    counters_ = open_map(UPLINKD_MAP_RULE_COUNTERS);
    sticky_ = open_map(UPLINKD_MAP_STICKY);
    flows_ = open_map(UPLINKD_MAP_FLOWS);
    cpus_ = libbpf_num_possible_cpus();
    ASSERT_GT(cpus_, 0);
  }
  void TearDown() override {
    for (int fd : {counters_, sticky_, flows_}) {
      if (fd >= 0) close(fd);
    }
  }

  int open_map(const char* name) {
    const int fd = bpf_obj_get((dp_->pin_dir() + "/" + name).c_str());
    EXPECT_GE(fd, 0) << name;
    return fd;
  }

  // Rule index `index` gets `packets` on CPU 0 and 1 packet on every other CPU.
  void set_counter(uint32_t index, uint64_t packets) {
    std::vector<rule_counter> per_cpu(cpus_, rule_counter{1, 100});
    per_cpu[0] = {packets, packets * 100};
    ASSERT_EQ(bpf_map_update_elem(counters_, &index, per_cpu.data(), BPF_ANY), 0);
  }
  uint64_t packets(uint32_t index) {
    std::vector<rule_counter> per_cpu(cpus_);
    EXPECT_EQ(bpf_map_lookup_elem(counters_, &index, per_cpu.data()), 0);
    uint64_t sum = 0;
    for (const auto& c : per_cpu) sum += c.packets;
    return sum;
  }

  static sticky_key sticky_of(uint8_t host, uint32_t rule_id) {
    sticky_key key{};
    key.saddr[0] = 10;
    key.saddr[3] = host;
    key.family = 4;
    key.rule_id = rule_id;
    return key;
  }
  void set_sticky(uint8_t host, uint32_t rule_id, uint16_t uplink_id) {
    const sticky_key key = sticky_of(host, rule_id);
    sticky_value value{};
    value.last_seen_ns = 1000 + host;
    value.uplink_id = uplink_id;
    value.mark = uplink_id * 0x100U;
    ASSERT_EQ(bpf_map_update_elem(sticky_, &key, &value, BPF_ANY), 0);
  }
  // The uplink of the sticky entry (host, rule_id), 0 when there is none.
  uint16_t sticky_uplink(uint8_t host, uint32_t rule_id) {
    const sticky_key key = sticky_of(host, rule_id);
    sticky_value value{};
    return bpf_map_lookup_elem(sticky_, &key, &value) == 0 ? value.uplink_id : 0;
  }

  static flow_key flow_of(uint16_t sport) {
    flow_key key{};
    key.saddr[0] = 10;
    key.daddr[0] = 203;
    key.sport = sport;
    key.dport = 443;
    key.proto = 6;
    key.family = 4;
    return key;
  }
  void set_flow(uint16_t sport, uint16_t rule_id) {
    const flow_key key = flow_of(sport);
    flow_value value{};
    value.last_seen_ns = 5000;
    value.mark = 0x200;
    value.generation = 7;
    value.uplink_id = 2;
    value.rule_id = rule_id;
    value.origin = rule_id != 0 ? FLOW_ORIGIN_RULE : FLOW_ORIGIN_CONNECTED;
    ASSERT_EQ(bpf_map_update_elem(flows_, &key, &value, BPF_ANY), 0);
  }
  flow_value flow(uint16_t sport) {
    const flow_key key = flow_of(sport);
    flow_value value{};
    EXPECT_EQ(bpf_map_lookup_elem(flows_, &key, &value), 0) << "flow " << sport << " vanished";
    return value;
  }

  // Old rules a, b, c (ids 1, 2, 3) with counters 10, 20, 30 and a sticky entry and a flow each.
  void fill_old_state() {
    for (uint32_t id = 1; id <= 3; ++id) {
      ASSERT_NO_FATAL_FAILURE(set_counter(id - 1, 10 * id));
      ASSERT_NO_FATAL_FAILURE(set_sticky(static_cast<uint8_t>(id), id, static_cast<uint16_t>(id)));
      ASSERT_NO_FATAL_FAILURE(set_flow(static_cast<uint16_t>(1000 + id), static_cast<uint16_t>(id)));
    }
    ASSERT_NO_FATAL_FAILURE(set_flow(2000, 0));  // a connected-network flow: no rule
  }

  std::unique_ptr<Datapath> dp_;
  int counters_ = -1, sticky_ = -1, flows_ = -1, cpus_ = 0;
};

TEST_F(RuleStateTest, StateFollowsEachRuleByNameAndARemovedRulesStateGoes) {
  ASSERT_NO_FATAL_FAILURE(fill_old_state());
  const auto remap = policy::rule_id_remap({"a", "b", "c"}, {"c", "a"});  // b removed, c first
  const uint64_t others = static_cast<uint64_t>(cpus_) - 1;               // 1 packet per other CPU

  const RuleStateCarried carried = carry_rule_state(dp_->pin_dir(), remap);

  EXPECT_EQ(packets(0), 30 + others) << "c is rule 1 now and keeps its 30 packets";
  EXPECT_EQ(packets(1), 10 + others) << "a is rule 2 now";
  EXPECT_EQ(packets(2), 0u) << "b's counters must not wait for the next rule 3";
  EXPECT_EQ(carried.counters_moved, 2u);

  EXPECT_EQ(sticky_uplink(3, 1), 3) << "c's sticky entry is keyed by its new id 1";
  EXPECT_EQ(sticky_uplink(1, 2), 1) << "a's sticky entry is keyed by its new id 2";
  EXPECT_EQ(sticky_uplink(1, 1), 0) << "a's entry under its old id is gone";
  EXPECT_EQ(sticky_uplink(2, 2), 0) << "b's entry must not be reused by a";
  EXPECT_EQ(sticky_uplink(3, 3), 0);
  EXPECT_EQ(carried.sticky_moved, 2u);
  EXPECT_EQ(carried.sticky_dropped, 1u);

  EXPECT_EQ(flow(1001).rule_id, 2) << "a's flow";
  EXPECT_EQ(flow(1002).rule_id, 0) << "b's flow keeps its uplink but no rule";
  EXPECT_EQ(flow(1003).rule_id, 1) << "c's flow";
  EXPECT_EQ(flow(2000).rule_id, 0);
  EXPECT_EQ(carried.flows_relabelled, 3u);
  // Only the rule id changes: the decision and its generation stay.
  const flow_value a = flow(1001);
  EXPECT_EQ(a.uplink_id, 2);
  EXPECT_EQ(a.mark, 0x200u);
  EXPECT_EQ(a.generation, 7u);
  EXPECT_EQ(a.origin, FLOW_ORIGIN_RULE);
}

TEST_F(RuleStateTest, ASwapMovesBothWithoutOverwriting) {
  ASSERT_NO_FATAL_FAILURE(fill_old_state());
  carry_rule_state(dp_->pin_dir(), policy::rule_id_remap({"a", "b", "c"}, {"b", "a", "c"}));
  const uint64_t others = static_cast<uint64_t>(cpus_) - 1;
  EXPECT_EQ(packets(0), 20 + others);
  EXPECT_EQ(packets(1), 10 + others);
  EXPECT_EQ(packets(2), 30 + others);
  EXPECT_EQ(sticky_uplink(2, 1), 2);
  EXPECT_EQ(sticky_uplink(1, 2), 1);
  EXPECT_EQ(sticky_uplink(3, 3), 3);
  EXPECT_EQ(flow(1001).rule_id, 2);
  EXPECT_EQ(flow(1002).rule_id, 1);
}

TEST_F(RuleStateTest, UnchangedRulesTouchNothing) {
  ASSERT_NO_FATAL_FAILURE(fill_old_state());
  const RuleStateCarried carried =
      carry_rule_state(dp_->pin_dir(), policy::rule_id_remap({"a", "b", "c"}, {"a", "b", "c", "d"}));
  EXPECT_EQ(carried.counters_moved + carried.sticky_moved + carried.sticky_dropped + carried.flows_relabelled,
            0u);
  EXPECT_EQ(packets(1), 20 + static_cast<uint64_t>(cpus_) - 1);
  EXPECT_EQ(sticky_uplink(2, 2), 2);
  EXPECT_EQ(flow(1002).rule_id, 2);
}

TEST_F(RuleStateTest, AMissingPinNamesTheMap) {
  try {
    carry_rule_state("/sys/fs/bpf/ulrs-no-such-dir", {0, 2, 1});
    ADD_FAILURE() << "no error for a missing pin directory";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("rule_counters"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace uplinkd::datapath
