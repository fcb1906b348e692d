// BPF_PROG_TEST_RUN tests of lan_ingress on fragmented datagrams: the first fragment is decided by
// its ports like an unfragmented packet of its flow, the later fragments take its mark from the
// `fragments` map (bpf/lib/frag_map.h), and a later fragment whose first fragment was not seen is
// decided by its portless key as before.
//
// Every test loads a fresh lan_ingress with two rules: dest_port 4433 -> wanb, then proto udp ->
// wan (the "default" rule a fragment without ports falls to). A mark of wanb on a fragment says the
// port rule matched it; a mark of wan says it did not. Runs as root (loading BPF).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "rule_tables_helper.h"
#include "test_run.h"

namespace {

using namespace uplinkd::bpftest;

constexpr uint64_t kSecondNs = 1'000'000'000;
constexpr uint32_t kMmxMask = 0x3f00;
constexpr uint32_t kDefaultMark = 0x3f00;
constexpr uint32_t kFlowTimeoutS = 300;

constexpr uint16_t kWan = 1, kWanb = 2, kLte = 3;
constexpr uint32_t mark_of(uint16_t uplink) { return static_cast<uint32_t>(uplink) << 8; }
constexpr uint32_t kWanOnly = 3, kWanbOnly = 4;  // policy ids
constexpr uint32_t kLanIf = 11;

constexpr uint16_t kPortRulePort = 4433;  // rule 1: dest_port 4433 -> wanb
constexpr uint16_t kOtherPort = 5000;     // only rule 2 (proto udp -> wan) matches
constexpr uint16_t kClientPort = 40000;

// One address family's cast: two LAN clients and a server.
struct Family {
  const char* name;
  const char* client;
  const char* other_client;
  const char* server;
};
const Family kIpv4{"Ipv4", "10.0.0.10", "10.0.0.20", "203.0.113.80"};
const Family kIpv6{"Ipv6", "2001:db8:1::10", "2001:db8:1::20", "2001:db8:ff::80"};

void PrintTo(const Family& f, std::ostream* os) { *os << f.name; }

bool is_v6(const char* addr) { return std::strchr(addr, ':') != nullptr; }

void put_addr(const char* text, uint8_t (&out)[16]) {
  std::memset(out, 0, sizeof out);
  if (inet_pton(is_v6(text) ? AF_INET6 : AF_INET, text, out) != 1) {
    throw std::invalid_argument(std::string("bad address ") + text);
  }
}

flow_key make_key(const char* src, const char* dst, uint16_t sport, uint16_t dport) {
  flow_key k{};
  put_addr(src, k.saddr);
  put_addr(dst, k.daddr);
  k.sport = htons(sport);
  k.dport = htons(dport);
  k.proto = IPPROTO_UDP;
  k.family = is_v6(src) ? 6 : 4;
  return k;
}

frag_key make_frag_key(const char* src, const char* dst, uint32_t id) {
  frag_key k{};
  put_addr(src, k.saddr);
  put_addr(dst, k.daddr);
  k.id = id;
  k.proto = IPPROTO_UDP;
  k.family = is_v6(src) ? 6 : 4;
  return k;
}

// A UDP datagram of 48 bytes (8 header, 40 payload): three fragments of 16, 16 and 16 bytes.
Bytes datagram(uint16_t sport, uint16_t dport) { return udp(sport, dport, Bytes(40, 0x5a)); }

Bytes framed(const char* src, const Bytes& l3, bool l3_only) {
  return l3_only ? l3 : ethernet(is_v6(src) ? ETH_P_IPV6 : ETH_P_IP, l3);
}

// The datagram's fragments as frames. IPv4 identifications are 16 bits: `id` is cut to them.
std::vector<Bytes> fragments_of(const char* src, const char* dst, uint16_t dport, uint32_t id,
                                bool l3_only = false) {
  const std::vector<Bytes> pieces =
      is_v6(src) ? ipv6_fragment_train(src, dst, IPPROTO_UDP, datagram(kClientPort, dport), 16, id)
                 : ipv4_fragment_train(src, dst, IPPROTO_UDP, datagram(kClientPort, dport), 16,
                                       static_cast<uint16_t>(id));
  std::vector<Bytes> frames;
  for (const Bytes& piece : pieces) {
    frames.push_back(framed(src, piece, l3_only));
  }
  return frames;
}

Bytes unfragmented(const char* src, const char* dst, uint16_t dport) {
  const Bytes l4 = datagram(kClientPort, dport);
  return framed(src, is_v6(src) ? ipv6(src, dst, IPPROTO_UDP, l4) : ipv4(src, dst, IPPROTO_UDP, l4), false);
}

policy_entry only(uint16_t uplink) {
  policy_entry p{};
  p.n_members = 1;
  p.threshold[0] = 0xffffffffu;
  p.mark[0] = mark_of(uplink);
  p.uplink_id[0] = uplink;
  return p;
}

// A freshly loaded lan_ingress with the two rules, and what the tests read back.
class FragProgram {
 public:
  explicit FragProgram(bool l3_only = false) {
    skel_ = lan_ingress__open();
    if (skel_ == nullptr) {
      load_err_ = -errno;
      return;
    }
    skel_->rodata->l3_only = l3_only ? 1 : 0;
    load_err_ = lan_ingress__load(skel_);
    if (load_err_ == 0) {
      load_err_ = configure();
    }
  }
  ~FragProgram() {
    if (skel_ != nullptr) {
      lan_ingress__destroy(skel_);
    }
  }
  FragProgram(const FragProgram&) = delete;
  FragProgram& operator=(const FragProgram&) = delete;

  bool ok() const { return skel_ != nullptr && load_err_ == 0; }
  lan_ingress* skel() { return skel_; }

  // The mark the frame leaves with (it arrives unmarked); nullopt when the run itself failed.
  std::optional<uint32_t> mark_of_run(const Bytes& frame) {
    __sk_buff ctx_in{};
    ctx_in.ingress_ifindex = kLanIf;
    __sk_buff ctx_out{};
    const TestRun run = test_run_once(bpf_program__fd(skel_->progs.lan_ingress), frame, ctx_in, &ctx_out, 64);
    if (run.err != 0 || run.retval != TC_ACT_OK) {
      ADD_FAILURE() << "test run: err " << run.err << " errno " << run.saved_errno << " verdict "
                    << run.retval;
      return std::nullopt;
    }
    return ctx_out.mark;
  }

  std::optional<flow_value> flow(const flow_key& key) {
    flow_value v{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.flows), &key, &v) != 0) {
      return std::nullopt;
    }
    return v;
  }
  std::optional<frag_value> fragment(const frag_key& key) {
    frag_value v{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.fragments), &key, &v) != 0) {
      return std::nullopt;
    }
    return v;
  }
  int add_fragment(const frag_key& key, uint32_t mark, uint64_t age_ns) {
    const uint64_t now = monotonic_ns();
    frag_value v{};
    v.first_seen_ns = now > age_ns ? now - age_ns : 0;  // never before boot (see lan_ingress_test)
    v.mark = mark;
    return bpf_map_update_elem(bpf_map__fd(skel_->maps.fragments), &key, &v, BPF_NOEXIST);
  }
  template <typename Key>
  size_t count(bpf_map* map) {
    size_t n = 0;
    Key key{}, next{};
    const Key* prev = nullptr;
    while (bpf_map_get_next_key(bpf_map__fd(map), prev, &next) == 0 && n < 100000) {
      n++;
      key = next;
      prev = &key;
    }
    return n;
  }
  size_t flow_count() { return count<flow_key>(skel_->maps.flows); }
  size_t fragment_count() { return count<frag_key>(skel_->maps.fragments); }
  uint64_t flows_created() {
    std::vector<flow_counters> per_cpu(static_cast<size_t>(libbpf_num_possible_cpus()));
    uint32_t zero = 0;
    uint64_t sum = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.flow_counters), &zero, per_cpu.data()) == 0) {
      for (const flow_counters& c : per_cpu) {
        sum += c.created;
      }
    }
    return sum;
  }

 private:
  int configure() {
    const auto update = [](bpf_map* map, const void* key, const void* value) {
      return bpf_map_update_elem(bpf_map__fd(map), key, value, BPF_ANY);
    };
    for (uint16_t id : {kWan, kWanb, kLte}) {
      uint32_t key = id;
      uplink_record r{};
      r.ifindex = 100u + id;
      r.state = UPLINK_STATE_ONLINE;
      r.generation = 1;
      r.mark = mark_of(id);
      if (int err = update(skel_->maps.uplinks, &key, &r); err != 0) return err;
    }
    for (auto [policy, uplink] : {std::pair{kWanOnly, kWan}, std::pair{kWanbOnly, kWanb}}) {
      const policy_entry p = only(uplink);
      for (uint8_t family : {4, 6}) {
        uint32_t slot = UPLINKD_POLICY_SLOT(policy, family);
        if (int err = update(skel_->maps.policies, &slot, &p); err != 0) return err;
      }
    }
    rule_entry port_rule{};
    port_rule.policy_id = kWanbOnly;
    port_rule.n_dport = 1;
    port_rule.dport[0] = port_range{kPortRulePort, kPortRulePort};
    rule_entry udp_rule{};
    udp_rule.policy_id = kWanOnly;
    udp_rule.proto = IPPROTO_UDP;
    if (int err = uplinkd::testing::write_rules_and_tables(skel_, {port_rule, udp_rule}); err != 0)
      return err;
    const classifier_cfg cfg{kMmxMask, 2, kDefaultMark, kFlowTimeoutS, kFlowTimeoutS, kFlowTimeoutS, 0, 0};
    uint32_t zero = 0;
    return update(skel_->maps.classifier_cfg, &zero, &cfg);
  }

  lan_ingress* skel_ = nullptr;
  int load_err_ = -1;
};

class LanIngressFragments : public ::testing::TestWithParam<Family> {};

// Every fragment of a datagram to the port rule's port leaves with the port rule's mark, and so
// does an unfragmented datagram of the same 5-tuple: one flow, one decision, under the full key.
TEST_P(LanIngressFragments, EveryFragmentFollowsThePortRule) {
  const Family& f = GetParam();
  FragProgram prog;
  ASSERT_TRUE(prog.ok()) << "the verifier log above says why";

  const std::vector<Bytes> frames = fragments_of(f.client, f.server, kPortRulePort, 0x4711);
  ASSERT_EQ(frames.size(), 3u);
  for (size_t i = 0; i < frames.size(); i++) {
    SCOPED_TRACE("fragment " + std::to_string(i));
    EXPECT_EQ(prog.mark_of_run(frames[i]), mark_of(kWanb));
  }
  EXPECT_EQ(prog.mark_of_run(unfragmented(f.client, f.server, kPortRulePort)), mark_of(kWanb));

  const std::optional<flow_value> flow = prog.flow(make_key(f.client, f.server, kClientPort, kPortRulePort));
  ASSERT_TRUE(flow.has_value()) << "the first fragment is filed under the full 5-tuple";
  EXPECT_EQ(flow->uplink_id, kWanb);
  EXPECT_EQ(flow->rule_id, 1);
  EXPECT_EQ(prog.flow_count(), 1u) << "no portless entry: the later fragments followed the first";
  EXPECT_EQ(prog.flows_created(), 1u);

  const std::optional<frag_value> kept = prog.fragment(make_frag_key(f.client, f.server, 0x4711));
  ASSERT_TRUE(kept.has_value()) << "the datagram's identity as the ABI writes it";
  EXPECT_EQ(kept->mark, mark_of(kWanb));
  EXPECT_EQ(kept->uplink_id, kWanb);
  EXPECT_EQ(prog.fragment_count(), 1u);
}

// The other order: the unfragmented datagram decides the flow, the fragmented one finds it.
TEST_P(LanIngressFragments, UnfragmentedFirstThenFragments) {
  const Family& f = GetParam();
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  EXPECT_EQ(prog.mark_of_run(unfragmented(f.client, f.server, kPortRulePort)), mark_of(kWanb));
  for (const Bytes& frame : fragments_of(f.client, f.server, kPortRulePort, 0x0100)) {
    EXPECT_EQ(prog.mark_of_run(frame), mark_of(kWanb));
  }
  EXPECT_EQ(prog.flow_count(), 1u);
  EXPECT_EQ(prog.flows_created(), 1u);
}

// A datagram to another port: its fragments fall to the udp rule together (no port rule mark).
TEST_P(LanIngressFragments, OtherPortFollowsTheOtherRule) {
  const Family& f = GetParam();
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  for (const Bytes& frame : fragments_of(f.client, f.server, kOtherPort, 0x4712)) {
    EXPECT_EQ(prog.mark_of_run(frame), mark_of(kWan));
  }
  EXPECT_TRUE(prog.flow(make_key(f.client, f.server, kClientPort, kOtherPort)).has_value());
}

// A later fragment that overtook its first is decided by its portless key, as before this map
// existed; the first fragment, when it comes, is decided by its ports, and the fragments after it
// follow it.
TEST_P(LanIngressFragments, LaterFragmentFirstFallsBackToPortlessKey) {
  const Family& f = GetParam();
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  const std::vector<Bytes> frames = fragments_of(f.client, f.server, kPortRulePort, 0x4713);

  EXPECT_EQ(prog.mark_of_run(frames[2]), mark_of(kWan)) << "no ports: the port rule cannot match";
  const std::optional<flow_value> portless = prog.flow(make_key(f.client, f.server, 0, 0));
  ASSERT_TRUE(portless.has_value());
  EXPECT_EQ(portless->rule_id, 2);
  EXPECT_EQ(prog.fragment_count(), 0u) << "a later fragment files nothing under its identification";

  EXPECT_EQ(prog.mark_of_run(frames[0]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(frames[1]), mark_of(kWanb));
  EXPECT_EQ(prog.flow_count(), 2u);
}

// Two datagrams of one flow, each with its identification: both followed, one entry each; a third
// identification never seen falls back.
TEST_P(LanIngressFragments, DatagramsOfOneFlowKeepTheirOwnIds) {
  const Family& f = GetParam();
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  const std::vector<Bytes> one = fragments_of(f.client, f.server, kPortRulePort, 0x0001);
  const std::vector<Bytes> two = fragments_of(f.client, f.server, kPortRulePort, 0x0002);
  const std::vector<Bytes> unseen = fragments_of(f.client, f.server, kPortRulePort, 0x0003);

  EXPECT_EQ(prog.mark_of_run(one[0]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(two[0]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(two[1]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(one[2]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(one[1]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(two[2]), mark_of(kWanb));
  EXPECT_EQ(prog.fragment_count(), 2u);
  EXPECT_EQ(prog.mark_of_run(unseen[1]), mark_of(kWan)) << "an identification no first fragment named";
}

// One identification, three datagrams: from two clients (different sources, different decisions)
// and back from the server (source and destination swapped). Interleaved, none takes another's mark.
TEST_P(LanIngressFragments, SameIdDifferentAddressesNoMixUp) {
  const Family& f = GetParam();
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  const std::vector<Bytes> a = fragments_of(f.client, f.server, kPortRulePort, 7);
  const std::vector<Bytes> b = fragments_of(f.other_client, f.server, kOtherPort, 7);
  const std::vector<Bytes> back = fragments_of(f.server, f.client, kOtherPort, 7);

  EXPECT_EQ(prog.mark_of_run(a[0]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(b[0]), mark_of(kWan));
  EXPECT_EQ(prog.mark_of_run(back[0]), mark_of(kWan));
  EXPECT_EQ(prog.mark_of_run(b[1]), mark_of(kWan));
  EXPECT_EQ(prog.mark_of_run(a[1]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(back[2]), mark_of(kWan));
  EXPECT_EQ(prog.mark_of_run(a[2]), mark_of(kWanb));
  EXPECT_EQ(prog.mark_of_run(b[2]), mark_of(kWan));
  EXPECT_EQ(prog.fragment_count(), 3u) << "source and destination are both part of the identity";
}

// An entry the daemon's ABI describes (written from here) is followed while fresh; one older than
// UPLINKD_FRAG_TIMEOUT_NS is taken for an earlier datagram with the same id and ignored.
TEST_P(LanIngressFragments, OnlyAFreshEntryIsFollowed) {
  const Family& f = GetParam();
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  ASSERT_EQ(prog.add_fragment(make_frag_key(f.client, f.server, 0x0a), mark_of(kLte), 0), 0);
  ASSERT_EQ(prog.add_fragment(make_frag_key(f.client, f.server, 0x0b), mark_of(kLte), 2 * kSecondNs), 0);

  EXPECT_EQ(prog.mark_of_run(fragments_of(f.client, f.server, kPortRulePort, 0x0a)[1]), mark_of(kLte));
  EXPECT_EQ(prog.mark_of_run(fragments_of(f.client, f.server, kPortRulePort, 0x0b)[1]), mark_of(kWan));
}

INSTANTIATE_TEST_SUITE_P(Families, LanIngressFragments, ::testing::Values(kIpv4, kIpv6),
                         [](const ::testing::TestParamInfo<Family>& info) { return info.param.name; });

// A device without link layer (WireGuard, PPP) parses fragments from the IP header alike.
TEST(LanIngressFragmentsL3Only, FragmentsFollowThePortRule) {
  for (const Family& f : {kIpv4, kIpv6}) {
    SCOPED_TRACE(f.name);
    FragProgram prog(true);
    ASSERT_TRUE(prog.ok());
    for (const Bytes& frame : fragments_of(f.client, f.server, kPortRulePort, 0x4714, true)) {
      EXPECT_EQ(prog.mark_of_run(frame), mark_of(kWanb));
    }
    EXPECT_EQ(prog.fragment_count(), 1u);
  }
}

// An IPv6 atomic fragment (offset 0, no M; RFC 6946) is a whole datagram: its ports decide, and no
// later fragment will come for it.
TEST(LanIngressFragmentsIpv6, AtomicFragmentIsAWholeDatagram) {
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  const Bytes atomic = ipv6_ext(kIpv6.client, kIpv6.server, {ipv6_fragment(0, false, 0x99)}, IPPROTO_UDP,
                                datagram(kClientPort, kPortRulePort));
  EXPECT_EQ(prog.mark_of_run(ethernet(ETH_P_IPV6, atomic)), mark_of(kWanb));
  EXPECT_TRUE(prog.flow(make_key(kIpv6.client, kIpv6.server, kClientPort, kPortRulePort)).has_value());
  EXPECT_EQ(prog.fragment_count(), 0u);
}

// A tiny first fragment without room for the ports is keyed without them, like its later
// fragments: they find its decision in `flows`, so it files nothing in `fragments`.
TEST(LanIngressFragmentsIpv4, FirstFragmentTooShortForPorts) {
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  const char* src = kIpv4.client;
  const char* dst = kIpv4.server;
  const Bytes first = ipv4_with_id(
      ipv4(src, dst, IPPROTO_UDP, Bytes{0x9c, 0x40}, {.frag_off = 0x2000, .l4_checksum = false}), 0x77);
  const Bytes later = ipv4_with_id(
      ipv4(src, dst, IPPROTO_UDP, Bytes(16, 0), {.frag_off = 0x0001, .l4_checksum = false}), 0x77);
  EXPECT_EQ(prog.mark_of_run(ethernet(ETH_P_IP, first)), mark_of(kWan));
  EXPECT_EQ(prog.mark_of_run(ethernet(ETH_P_IP, later)), mark_of(kWan));
  EXPECT_EQ(prog.fragment_count(), 0u);
  EXPECT_EQ(prog.flow_count(), 1u);
  EXPECT_EQ(prog.flows_created(), 1u) << "the later fragment found the first one's flow";
}

// ICMP has no ports: a fragmented echo request's fragments share the portless key and one decision.
TEST(LanIngressFragmentsIpv4, PortlessProtocolSharesOneFlow) {
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  const std::vector<Bytes> pieces = ipv4_fragment_train(kIpv4.client, kIpv4.server, IPPROTO_ICMP,
                                                        icmp_echo(8, 1, 1, Bytes(40, 0)), 16, 0x78);
  ASSERT_EQ(pieces.size(), 3u);
  for (const Bytes& piece : pieces) {
    EXPECT_EQ(prog.mark_of_run(ethernet(ETH_P_IP, piece)), 0u) << "no rule matches ICMP: left unmarked";
  }
  EXPECT_EQ(prog.fragment_count(), 0u);
  EXPECT_EQ(prog.flow_count(), 1u);
  EXPECT_EQ(prog.flows_created(), 1u);
}

TEST(LanIngressFragmentsAbi, FragmentsMapShape) {
  FragProgram prog;
  ASSERT_TRUE(prog.ok());
  bpf_map* map = prog.skel()->maps.fragments;
  EXPECT_STREQ(bpf_map__name(map), UPLINKD_MAP_FRAGMENTS);
  EXPECT_EQ(bpf_map__type(map), BPF_MAP_TYPE_LRU_HASH);
  EXPECT_EQ(bpf_map__max_entries(map), static_cast<uint32_t>(UPLINKD_MAX_FRAGMENTS));
  EXPECT_EQ(bpf_map__key_size(map), sizeof(frag_key));
  EXPECT_EQ(bpf_map__value_size(map), sizeof(frag_value));
  EXPECT_EQ(bpf_map__pin_path(map), nullptr) << "maps carry no pinning attribute";
}

}  // namespace
