// BPF_PROG_TEST_RUN fixtures for lan_egress (tc egress on LAN devices): what it learns in
// `tcp_seen` from the segments a remote sends toward a LAN client, for the daemon's proactive RST.
//
// Each row: the flows entry the client's connection has (or none), the packets leaving toward the
// client in order, and the tcp_seen entry expected afterwards (or none). Every packet must pass
// unchanged with TC_ACT_OK. Runs as root: loading BPF needs CAP_BPF and CAP_NET_ADMIN.
//
// skb->ifindex in a test run comes from ctx_in.ifindex, which must name an existing device (see
// lan_ingress_test.cpp, LanIngressStaleCtx); the rows use 1, the loopback, and expect 1 recorded.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "lan_egress.skel.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "test_run.h"

namespace {

using namespace uplinkd::bpftest;

constexpr const char* kClient = "10.0.0.10";
constexpr const char* kRemote = "203.0.113.80";
constexpr const char* kClient6 = "2001:db8:1::10";
constexpr const char* kRemote6 = "2001:db8:ff::80";
constexpr uint16_t kClientPort = 40000, kRemotePort = 443;
constexpr uint16_t kWan = 1;
constexpr uint32_t kLoopback = 1;  // the only ifindex a test run may take without creating a device

constexpr Mac kClientMac{{0x02, 0x00, 0x00, 0x00, 0x0c, 0x01}};
constexpr Mac kRouterMac{{0x02, 0x00, 0x00, 0x00, 0x0a, 0x01}};

bool is_v6(const char* addr) { return std::strchr(addr, ':') != nullptr; }

void put_addr(const char* text, uint8_t (&out)[16]) {
  std::memset(out, 0, sizeof out);
  if (inet_pton(is_v6(text) ? AF_INET6 : AF_INET, text, out) != 1) {
    throw std::invalid_argument(std::string("bad address ") + text);
  }
}

// The client's flow as lan_ingress filed it: client = saddr.
flow_key client_flow(const char* client, const char* remote, uint8_t proto = IPPROTO_TCP) {
  flow_key k{};
  put_addr(client, k.saddr);
  put_addr(remote, k.daddr);
  k.sport = htons(kClientPort);
  k.dport = htons(kRemotePort);
  k.proto = proto;
  k.family = is_v6(client) ? 6 : 4;
  return k;
}

// A packet toward the client.
struct Out {
  Bytes frame;
  uint32_t gso_size = 0;  // > 0: the skb is a GSO packet of this segment size
  uint16_t gso_segs = 0;
};

struct SegmentShape {
  bool v6 = false;
  std::vector<VlanTag> tags;
  bool l3_only = false;
};

Out segment(uint32_t seq, uint8_t flags, size_t payload_len, const SegmentShape& s = {}) {
  const char* src = s.v6 ? kRemote6 : kRemote;
  const char* dst = s.v6 ? kClient6 : kClient;
  const Bytes l4 = tcp_segment(kRemotePort, kClientPort, seq, 0x1000, flags,
                               TcpSegment{tcp_timestamps(7, 8), Bytes(payload_len, 0x42)});
  const Bytes l3 = s.v6 ? ipv6(src, dst, IPPROTO_TCP, l4) : ipv4(src, dst, IPPROTO_TCP, l4);
  if (s.l3_only) {
    return Out{l3};
  }
  return Out{ethernet(s.v6 ? ETH_P_IPV6 : ETH_P_IP, l3, s.tags, kClientMac, kRouterMac)};
}

Out udp_toward_client() {
  return Out{ethernet(ETH_P_IP,
                      ipv4(kRemote, kClient, IPPROTO_UDP, udp(kRemotePort, kClientPort, Bytes(20, 1))), {},
                      kClientMac, kRouterMac)};
}

// The packet as BIG TCP sends it: the 16-bit IP length at `length_offset` set to 0 (the IPv4
// header checksum is not fixed: nothing here reads it), a GSO skb of 1448-byte segments.
Out big_tcp(Out out, size_t length_offset) {
  out.frame[length_offset] = 0;
  out.frame[length_offset + 1] = 0;
  out.gso_size = 1448;
  out.gso_segs = 3;
  return out;
}

struct SeenExpect {
  uint32_t next_seq;
  bool macs = true;  // false: l3_only, zero MACs
};

struct Row {
  const char* name;
  const char* description;
  SegmentShape shape;
  std::optional<uint16_t> flow_uplink = kWan;  // nullopt: no flows entry
  std::vector<Out> packets;
  std::optional<SeenExpect> seen;  // nullopt: no tcp_seen entry may exist
};

void PrintTo(const Row& r, std::ostream* os) { *os << r.name << ": " << r.description; }

constexpr uint32_t kSeq = 0x50000000;

std::vector<Row> Rows() {
  const VlanTag q{ETH_P_8021Q, 100};
  const SegmentShape v6{.v6 = true};
  const SegmentShape tagged{.tags = {q}};
  const SegmentShape l3{.l3_only = true};
  Out gso = segment(kSeq, kTcpAck, 3000);
  gso.gso_size = 1448;
  gso.gso_segs = 3;
  // BIG TCP: the IP length field 0 (IPv4 total length, IPv6 payload length), the length is the
  // skb's; the test run's skb stands in for one above 64 KiB (its size is capped at a page).
  Out big4 = big_tcp(gso, ETH_HLEN + 2);
  Out big6 = big_tcp(segment(kSeq, kTcpAck, 3000, v6), ETH_HLEN + 4);
  Out zero_not_gso = big4;
  zero_not_gso.gso_size = 0;
  zero_not_gso.gso_segs = 0;
  return {
      {.name = "DataSegment",
       .description = "next_seq = seq + payload; MACs and ifindex recorded",
       .packets = {segment(kSeq, kTcpAck | kTcpPsh, 100)},
       .seen = SeenExpect{kSeq + 100}},
      {.name = "SynAckCountsOne",
       .description = "the remote's SYN-ACK: ISN + 1",
       .packets = {segment(kSeq, kTcpSyn | kTcpAck, 0)},
       .seen = SeenExpect{kSeq + 1}},
      {.name = "FinCountsOne",
       .description = "FIN with 10 bytes: seq + 10 + 1",
       .packets = {segment(kSeq, kTcpFin | kTcpAck, 10)},
       .seen = SeenExpect{kSeq + 11}},
      {.name = "GsoPacketWholePayload",
       .description = "a GSO packet (gso_size 1448) counts its whole payload from skb->len",
       .packets = {gso},
       .seen = SeenExpect{kSeq + 3000}},
      {.name = "BigTcpIpv4",
       .description = "BIG TCP over IPv4 (total length 0, GSO): parsed by skb->len",
       .packets = {big4},
       .seen = SeenExpect{kSeq + 3000}},
      {.name = "BigTcpIpv6",
       .description = "BIG TCP over IPv6 (payload length 0, GSO): parsed by skb->len",
       .shape = v6,
       .packets = {big6},
       .seen = SeenExpect{kSeq + 3000}},
      {.name = "ZeroLengthWithoutGsoIgnored",
       .description = "an IPv4 total length of 0 on a packet that is not GSO: malformed, ignored",
       .packets = {zero_not_gso},
       .seen = std::nullopt},
      {.name = "Advances",
       .description = "later segments move next_seq forward",
       .packets = {segment(kSeq, kTcpAck, 100), segment(kSeq + 100, kTcpAck, 200)},
       .seen = SeenExpect{kSeq + 300}},
      {.name = "RetransmissionNeverMovesBack",
       .description = "a retransmission of the first segment after the second: next_seq stays",
       .packets = {segment(kSeq, kTcpAck, 100), segment(kSeq + 100, kTcpAck, 200),
                   segment(kSeq, kTcpAck, 100)},
       .seen = SeenExpect{kSeq + 300}},
      {.name = "SequenceWrap",
       .description = "sequence-space comparison: a segment past 2^32 wraps and still moves forward",
       .packets = {segment(0xffffff00u, kTcpAck, 0x80), segment(0xffffff80u, kTcpAck, 0x100)},
       .seen = SeenExpect{0x80}},
      {.name = "RetransmissionAcrossWrap",
       .description = "after the wrap, the old segment before it does not move next_seq back",
       .packets = {segment(0xffffff80u, kTcpAck, 0x100), segment(0xffffff00u, kTcpAck, 0x80)},
       .seen = SeenExpect{0x80}},
      {.name = "Ipv6",
       .description = "the same over IPv6",
       .shape = v6,
       .packets = {segment(kSeq, kTcpAck, 100, v6)},
       .seen = SeenExpect{kSeq + 100}},
      {.name = "VlanTagged",
       .description = "an 802.1Q frame",
       .shape = tagged,
       .packets = {segment(kSeq, kTcpAck, 100, tagged)},
       .seen = SeenExpect{kSeq + 100}},
      {.name = "L3OnlyDevice",
       .description = "a device without link layer: l3_only set, MACs zero, payload from the IP header on",
       .shape = l3,
       .packets = {segment(kSeq, kTcpAck, 100, l3)},
       .seen = SeenExpect{kSeq + 100, false}},
      {.name = "UnknownFlowIgnored",
       .description = "no flows entry: nothing learnt",
       .flow_uplink = std::nullopt,
       .packets = {segment(kSeq, kTcpAck, 100)}},
      {.name = "UplinkZeroFlowIgnored",
       .description = "a flow through the main table (uplink_id 0) has nothing to fail over",
       .flow_uplink = 0,
       .packets = {segment(kSeq, kTcpAck, 100)}},
      {.name = "UdpIgnored",
       .description = "UDP toward the client is passed without a look at the maps",
       .packets = {udp_toward_client()}},
  };
}

// A freshly loaded lan_egress and its maps.
class EgressProgram {
 public:
  explicit EgressProgram(bool l3_only = false) {
    skel_ = lan_egress__open();
    if (skel_ == nullptr) {
      load_err_ = -errno;
      return;
    }
    skel_->rodata->l3_only = l3_only ? 1 : 0;
    load_err_ = lan_egress__load(skel_);
  }
  ~EgressProgram() {
    if (skel_ != nullptr) {
      lan_egress__destroy(skel_);
    }
  }
  EgressProgram(const EgressProgram&) = delete;
  EgressProgram& operator=(const EgressProgram&) = delete;

  bool ok() const { return skel_ != nullptr && load_err_ == 0; }
  int load_err() const { return load_err_; }
  lan_egress* skel() { return skel_; }
  int prog_fd() { return bpf_program__fd(skel_->progs.lan_egress); }

  int add_flow(const flow_key& key, uint16_t uplink) {
    flow_value v{};
    v.last_seen_ns = monotonic_ns();
    v.mark = static_cast<uint32_t>(uplink) << 8;
    v.generation = 1;
    v.uplink_id = uplink;
    v.origin = uplink != 0 ? FLOW_ORIGIN_RULE : FLOW_ORIGIN_CONNECTED;
    return bpf_map_update_elem(bpf_map__fd(skel_->maps.flows), &key, &v, BPF_NOEXIST);
  }
  std::optional<tcp_seen> seen(const flow_key& key) {
    tcp_seen v{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.tcp_seen), &key, &v) != 0) {
      return std::nullopt;
    }
    return v;
  }
  size_t seen_count() {
    size_t n = 0;
    flow_key key{}, next{};
    const flow_key* prev = nullptr;
    while (bpf_map_get_next_key(bpf_map__fd(skel_->maps.tcp_seen), prev, &next) == 0) {
      n++;
      key = next;
      prev = &key;
    }
    return n;
  }

 private:
  lan_egress* skel_ = nullptr;
  int load_err_ = -1;
};

class LanEgressTest : public ::testing::TestWithParam<Row> {};

TEST_P(LanEgressTest, Fixture) {
  const Row& row = GetParam();
  SCOPED_TRACE(row.description);
  EgressProgram prog(row.shape.l3_only);
  ASSERT_TRUE(prog.ok()) << "loading lan_egress: " << strerror(-prog.load_err()) << " (run as root)";
  const flow_key key = row.shape.v6 ? client_flow(kClient6, kRemote6) : client_flow(kClient, kRemote);
  if (row.flow_uplink) {
    ASSERT_EQ(prog.add_flow(key, *row.flow_uplink), 0);
  }
  const uint64_t before_ns = monotonic_coarse_ns();  // the program stamps with the coarse clock
  for (size_t i = 0; i < row.packets.size(); i++) {
    SCOPED_TRACE("packet " + std::to_string(i));
    const Out& out = row.packets[i];
    __sk_buff ctx_in{}, ctx_out{};
    ctx_in.ifindex = kLoopback;
    ctx_in.gso_size = out.gso_size;
    ctx_in.gso_segs = out.gso_segs;
    const TestRun r = test_run_once(prog.prog_fd(), out.frame, ctx_in, &ctx_out);
    ASSERT_EQ(r.err, 0) << strerror(r.saved_errno);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(r.data_out, out.frame) << "lan_egress never changes a packet";
  }
  if (!row.seen) {
    EXPECT_EQ(prog.seen_count(), 0u);
    return;
  }
  EXPECT_EQ(prog.seen_count(), 1u);
  const std::optional<tcp_seen> got = prog.seen(key);
  ASSERT_TRUE(got.has_value()) << "no tcp_seen entry under the client's flow key";
  EXPECT_EQ(got->next_seq, row.seen->next_seq) << std::hex << "0x" << got->next_seq;
  EXPECT_EQ(got->ifindex, kLoopback);
  EXPECT_GE(got->last_seen_ns, before_ns);
  EXPECT_EQ(got->l3_only, row.seen->macs ? 0 : 1);
  const Mac zero{};
  const Mac& client = row.seen->macs ? kClientMac : zero;
  const Mac& router = row.seen->macs ? kRouterMac : zero;
  EXPECT_EQ(std::memcmp(got->client_mac, client.bytes, 6), 0) << "client MAC: the frame's destination";
  EXPECT_EQ(std::memcmp(got->router_mac, router.bytes, 6), 0) << "router MAC: the frame's source";
}

INSTANTIATE_TEST_SUITE_P(Rows, LanEgressTest, ::testing::ValuesIn(Rows()),
                         [](const ::testing::TestParamInfo<Row>& info) {
                           return std::string(info.param.name);
                         });

uint32_t verified_insns(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof info;
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.verified_insns : 0;
}

// Kernels on architectures without efficient unaligned access (MIPS OpenWrt routers) check every
// packet load against NET_IP_ALIGN; BPF_F_STRICT_ALIGNMENT applies the same check here.
TEST(LanEgressProgram, LoadsUnderStrictAlignment) {
  for (bool l3_only : {false, true}) {
    SCOPED_TRACE(l3_only ? "l3_only" : "ethernet");
    lan_egress* skel = lan_egress__open();
    ASSERT_NE(skel, nullptr);
    skel->rodata->l3_only = l3_only ? 1 : 0;
    bpf_program__set_flags(skel->progs.lan_egress,
                           bpf_program__flags(skel->progs.lan_egress) | BPF_F_STRICT_ALIGNMENT);
    EXPECT_EQ(lan_egress__load(skel), 0) << "the verifier log above names the misaligned access";
    std::printf("lan_egress (%s, strict alignment) verified_insns: %u\n", l3_only ? "l3_only" : "ethernet",
                verified_insns(bpf_program__fd(skel->progs.lan_egress)));
    lan_egress__destroy(skel);
  }
}

// lan_egress and lan_ingress share `flows` and `tcp_seen` through pinning by name: same shape in
// both; lan_egress creates none of the classifier's rule or policy maps.
TEST(LanEgressProgram, SharesMapsWithLanIngress) {
  lan_egress* egress = lan_egress__open();
  lan_ingress* ingress = lan_ingress__open();
  ASSERT_NE(egress, nullptr);
  ASSERT_NE(ingress, nullptr);
  const std::pair<bpf_map*, bpf_map*> shared[] = {{egress->maps.flows, ingress->maps.flows},
                                                  {egress->maps.tcp_seen, ingress->maps.tcp_seen},
                                                  {egress->maps.flow_counters, ingress->maps.flow_counters}};
  for (const auto& [e, i] : shared) {
    SCOPED_TRACE(bpf_map__name(i));
    EXPECT_STREQ(bpf_map__name(e), bpf_map__name(i));
    EXPECT_EQ(bpf_map__type(e), bpf_map__type(i));
    EXPECT_EQ(bpf_map__max_entries(e), bpf_map__max_entries(i));
    EXPECT_EQ(bpf_map__key_size(e), bpf_map__key_size(i));
    EXPECT_EQ(bpf_map__value_size(e), bpf_map__value_size(i));
  }
  EXPECT_STREQ(bpf_map__name(egress->maps.tcp_seen), UPLINKD_MAP_TCP_SEEN);
  EXPECT_STREQ(bpf_map__name(egress->maps.flows), UPLINKD_MAP_FLOWS);
  EXPECT_EQ(bpf_object__find_map_by_name(egress->obj, UPLINKD_MAP_RULES), nullptr);
  EXPECT_EQ(bpf_object__find_map_by_name(egress->obj, UPLINKD_MAP_POLICIES), nullptr);
  lan_ingress__destroy(ingress);
  lan_egress__destroy(egress);
}

}  // namespace
