// BPF_PROG_TEST_RUN fixtures for uplink_egress (tc egress on uplinks: WireGuard endpoint steering).
//
// Each row is a description, the frame leaving an uplink, the verdict, the frame expected out, and
// the counters the row must add to its endpoint. The expected frames are built by packet_builder.h
// with the new source address, which computes every checksum on its own: a row passes only if the
// program's incremental checksum updates agree with a full computation. Every frame out is also
// checked by summing its IP header and its UDP datagram with the pseudo header (sum == 0xffff).
//
// Under BPF_PROG_TEST_RUN, bpf_redirect_neigh() only records the target and returns
// TC_ACT_REDIRECT (7), which the program returns as its verdict; nothing is sent. So a steered
// packet shows up here as verdict 7 and the rewritten frame in data_out; where it really goes is
// tests/netns/wg_steering_test.cpp's job.
//
// The skb's device: ctx ifindex 0 runs the program on loopback (ifindex 1), so "leaving by the
// active uplink" is an uplink_egress record with ifindex 1; the other uplinks have ifindexes that
// need not exist (the redirect is never carried out): the neighbour check's bpf_fib_lookup() then
// fails (no such device) and the program redirects as it did before the check. The neighbour rows
// (UplinkEgressNeighbour) give the fiber a real veth in a network namespace of their own, where the
// gateway's neighbour entry is present or not. Runs as root.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "bpf/lib/flow_hash.h"
#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "test_run.h"

// The skeleton is named after its object, uplink_egress, and so is the map ABI's struct
// uplink_egress: here the skeleton's struct is called uplink_egress_skel (its functions keep
// their names: uplink_egress__open() and so on are other tokens).
#define uplink_egress uplink_egress_skel
#include "uplink_egress.skel.h"
#undef uplink_egress

namespace {

using namespace uplinkd::bpftest;

// Uplinks: the fiber is active; the packets leave by the backup (loopback in the test run).
constexpr uint16_t kFiber = 1, kBackup = 2, kV6Only = 3;
constexpr uint32_t kFiberIfindex = 4242, kBackupIfindex = 1, kV6OnlyIfindex = 4343;

constexpr const char* kFiberSrc = "192.0.2.2";
constexpr const char* kFiberGw = "192.0.2.1";
constexpr const char* kFiberSrc6 = "2001:db8:1::2";
constexpr const char* kFiberGw6 = "2001:db8:1::1";
constexpr const char* kBackupSrc = "198.51.100.2";
constexpr const char* kBackupSrc6 = "2001:db8:2::2";

// Policies.
constexpr uint32_t kPolicyFiber = 3;   // fiber online
constexpr uint32_t kPolicyNone = 4;    // no member online
constexpr uint32_t kPolicyBackup = 5;  // only the backup online: already on the active uplink
constexpr uint32_t kPolicyV6Only = 6;  // its only member has no IPv4
constexpr uint32_t kPolicySplitA = 7;  // fiber and backup by weight: the hash picks the fiber
constexpr uint32_t kPolicySplitB = 8;  // ... the hash picks the backup

// Endpoints (id = counter slot).
constexpr const char* kPeer = "203.0.113.7";
constexpr const char* kPeerDead = "203.0.113.8";
constexpr const char* kPeerBackup = "203.0.113.9";
constexpr const char* kPeerV6Only = "203.0.113.10";
constexpr const char* kPeerSplit = "203.0.113.11";
constexpr const char* kPeer6 = "2001:db8:ff::7";
constexpr const char* kPeerBackup6 = "2001:db8:ff::9";
constexpr const char* kNotPeer = "203.0.113.99";
constexpr uint16_t kWgPort = 51820, kSplitPortA = 51821, kSplitPortB = 51822;
constexpr uint32_t kIdPeer = 1, kIdPeer6 = 2, kIdDead = 3, kIdBackup = 4, kIdV6Only = 5, kIdSplitA = 6,
                   kIdSplitB = 7, kIdBackup6 = 8;

// The maps uplink_egress reads; the classifier's other maps in the object are not created.
const std::set<std::string> kUsedMaps = {UPLINKD_MAP_POLICIES, UPLINKD_MAP_WG_ENDPOINTS,
                                         UPLINKD_MAP_WG_COUNTERS, UPLINKD_MAP_UPLINK_EGRESS};

bool is_v6(const char* addr) { return std::strchr(addr, ':') != nullptr; }

template <size_t N>
void put_addr(const char* text, uint8_t (&out)[N]) {
  uint8_t buf[16] = {};
  if (inet_pton(is_v6(text) ? AF_INET6 : AF_INET, text, buf) != 1) {
    throw std::invalid_argument(std::string("bad address ") + text);
  }
  std::memcpy(out, buf, N);
}

wg_endpoint_key endpoint(const char* addr, uint16_t port) {
  wg_endpoint_key k{};
  put_addr(addr, k.addr);
  k.port = htons(port);
  k.family = is_v6(addr) ? 6 : 4;
  return k;
}

// The hash the program picks an endpoint's member by: flow_hash_words over a flow key holding
// only the endpoint (destination, port, UDP, family).
uint32_t endpoint_hash(const wg_endpoint_key& ep) {
  flow_key key{};
  std::memcpy(key.daddr, ep.addr, 16);
  key.dport = ep.port;
  key.proto = IPPROTO_UDP;
  key.family = ep.family;
  uint32_t words[UPLINKD_FLOW_KEY_WORDS];
  std::memcpy(words, &key, sizeof key);
  return flow_hash_words(words);
}

policy_entry members(std::initializer_list<uint16_t> uplinks) {
  policy_entry p{};
  for (uint16_t id : uplinks) {
    p.uplink_id[p.n_members] = id;
    p.mark[p.n_members] = static_cast<uint32_t>(id) << 8;
    p.threshold[p.n_members] = 0xffffffffu;
    p.n_members++;
  }
  return p;
}

// Two members, the first taking hashes up to `first_threshold`.
policy_entry split(uint16_t first, uint16_t second, uint32_t first_threshold) {
  policy_entry p = members({first, second});
  p.threshold[0] = first_threshold;
  return p;
}

// ---- frames -----------------------------------------------------------------------------------

Bytes udp_frame(const char* src, const char* dst, uint16_t sport, uint16_t dport, size_t payload = 32) {
  const Bytes l4 = udp(sport, dport, Bytes(payload, 0x5a));
  return is_v6(src) ? ethernet(ETH_P_IPV6, ipv6(src, dst, IPPROTO_UDP, l4))
                    : ethernet(ETH_P_IP, ipv4(src, dst, IPPROTO_UDP, l4));
}

Bytes wg_frame(const char* src, const char* dst, uint16_t dport = kWgPort) {
  return udp_frame(src, dst, kWgPort, dport);
}

// The IPv4 datagram without a UDP checksum (0: "none", RFC 768).
Bytes without_udp_checksum(Bytes frame) {
  write16(frame, ETH_HLEN + 20 + 6, 0);
  return frame;
}

Bytes without_ethernet(const Bytes& frame) { return Bytes(frame.begin() + ETH_HLEN, frame.end()); }

// What bpf_redirect_neigh() wants in front of a packet from a device without a link layer.
Bytes placeholder_ethernet(uint16_t ethertype, const Bytes& l3) {
  Bytes b(12, 0);
  put16(b, ethertype);
  return concat(std::move(b), l3);
}

// ---- independent checksum checks ---------------------------------------------------------------

// An empty string when every checksum of the IP packet at `l3` holds, else what is wrong.
std::string checksum_problems(const Bytes& frame, size_t l3) {
  const uint8_t* ip = frame.data() + l3;
  std::string problems;
  if (ip[0] >> 4 == 4) {
    const size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
    if (folded(sum_words(ip, ihl)) != 0xffff) problems += "IPv4 header checksum wrong; ";
    const uint8_t* u = ip + ihl;
    const size_t len = static_cast<size_t>(u[4] << 8 | u[5]);
    if (u[6] == 0 && u[7] == 0) return problems;  // no UDP checksum
    uint32_t pseudo = sum_words(ip + 12, 8) + IPPROTO_UDP + static_cast<uint32_t>(len);
    if (folded(sum_words(u, len, pseudo)) != 0xffff) problems += "UDP checksum wrong; ";
  } else {
    const uint8_t* u = ip + 40;
    const size_t len = static_cast<size_t>(u[4] << 8 | u[5]);
    uint32_t pseudo = sum_words(ip + 8, 32) + IPPROTO_UDP + static_cast<uint32_t>(len);
    if (folded(sum_words(u, len, pseudo)) != 0xffff) problems += "UDP checksum wrong; ";
  }
  return problems;
}

// ---- the program and its maps ------------------------------------------------------------------

struct Counts {
  uint64_t steered = 0, steered_bytes = 0, passed = 0, failed = 0;
  bool operator==(const Counts& o) const {
    return steered == o.steered && steered_bytes == o.steered_bytes && passed == o.passed &&
           failed == o.failed;
  }
};

std::ostream& operator<<(std::ostream& os, const Counts& c) {
  return os << "{steered " << c.steered << " (" << c.steered_bytes << " bytes), passed " << c.passed
            << ", failed " << c.failed << "}";
}

class Program {
 public:
  explicit Program(bool l3_only) {
    skel_ = uplink_egress__open();
    if (skel_ == nullptr) throw std::runtime_error("opening uplink_egress");
    skel_->rodata->l3_only = l3_only ? 1 : 0;
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, skel_->obj) {
      if (!bpf_map__is_internal(map) && kUsedMaps.count(bpf_map__name(map)) == 0) {
        bpf_map__set_autocreate(map, false);
      }
    }
    if (uplink_egress__load(skel_) != 0) {
      uplink_egress__destroy(skel_);
      skel_ = nullptr;
      throw std::runtime_error("loading uplink_egress (run as root; the verifier log is above)");
    }
    configure();
  }
  ~Program() { uplink_egress__destroy(skel_); }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  int fd() const { return bpf_program__fd(skel_->progs.wg_steer); }

  Counts counts(uint32_t endpoint_id) const {
    const int cpus = libbpf_num_possible_cpus();
    std::vector<wg_counters> per_cpu(static_cast<size_t>(cpus));
    Counts sum;
    EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.wg_counters), &endpoint_id, per_cpu.data()), 0);
    for (const wg_counters& c : per_cpu) {
      sum.steered += c.steered_packets;
      sum.steered_bytes += c.steered_bytes;
      sum.passed += c.passed_packets;
      sum.failed += c.failed_packets;
    }
    return sum;
  }

  // The skeleton's member for the map is renamed with the struct; find the map by name.
  void put_egress(uint32_t uplink, const uplink_egress& e) {
    update(bpf_object__find_map_by_name(skel_->obj, UPLINKD_MAP_UPLINK_EGRESS), &uplink, &e);
  }

 private:
  void update(bpf_map* map, const void* key, const void* value) {
    if (bpf_map_update_elem(bpf_map__fd(map), key, value, BPF_ANY) != 0) {
      throw std::runtime_error(std::string("updating ") + bpf_map__name(map) + ": " + std::strerror(errno));
    }
  }

  void put_policy(uint32_t id, const policy_entry& p) {
    for (uint8_t family : {4, 6}) {
      uint32_t slot = UPLINKD_POLICY_SLOT(id, family);
      update(skel_->maps.policies, &slot, &p);
    }
  }

  void put_endpoint(const wg_endpoint_key& key, uint32_t policy, uint32_t id) {
    const wg_endpoint_value v{policy, id};
    update(skel_->maps.wg_endpoints, &key, &v);
  }

  void configure() {
    uplink_egress fiber{};
    fiber.ifindex = kFiberIfindex;
    fiber.flags = UPLINK_EGRESS_HAS_V4 | UPLINK_EGRESS_HAS_V6 | UPLINK_EGRESS_HAS_GW4 | UPLINK_EGRESS_HAS_GW6;
    put_addr(kFiberSrc, fiber.src4);
    put_addr(kFiberGw, fiber.gw4);
    put_addr(kFiberSrc6, fiber.src6);
    put_addr(kFiberGw6, fiber.gw6);
    put_egress(kFiber, fiber);

    uplink_egress backup{};
    backup.ifindex = kBackupIfindex;
    backup.flags = UPLINK_EGRESS_HAS_V4 | UPLINK_EGRESS_HAS_V6;
    put_addr(kBackupSrc, backup.src4);
    put_addr(kBackupSrc6, backup.src6);
    put_egress(kBackup, backup);

    uplink_egress v6only{};
    v6only.ifindex = kV6OnlyIfindex;
    v6only.flags = UPLINK_EGRESS_HAS_V6;
    put_addr("2001:db8:3::2", v6only.src6);
    put_egress(kV6Only, v6only);

    put_policy(kPolicyFiber, members({kFiber}));
    put_policy(kPolicyNone, members({}));
    put_policy(kPolicyBackup, members({kBackup}));
    put_policy(kPolicyV6Only, members({kV6Only}));
    // The split policies put the endpoint's hash just past the first member's share (A: the
    // second member, the fiber) or right on its edge (B: the first member, the backup).
    const uint32_t hash_a = endpoint_hash(endpoint(kPeerSplit, kSplitPortA));
    const uint32_t hash_b = endpoint_hash(endpoint(kPeerSplit, kSplitPortB));
    if (hash_a == 0) throw std::runtime_error("hash 0: pick another split port");
    put_policy(kPolicySplitA, split(kBackup, kFiber, hash_a - 1));
    put_policy(kPolicySplitB, split(kBackup, kFiber, hash_b));

    put_endpoint(endpoint(kPeer, kWgPort), kPolicyFiber, kIdPeer);
    put_endpoint(endpoint(kPeer6, kWgPort), kPolicyFiber, kIdPeer6);
    put_endpoint(endpoint(kPeerDead, kWgPort), kPolicyNone, kIdDead);
    put_endpoint(endpoint(kPeerBackup, kWgPort), kPolicyBackup, kIdBackup);
    put_endpoint(endpoint(kPeerBackup6, kWgPort), kPolicyBackup, kIdBackup6);
    put_endpoint(endpoint(kPeerV6Only, kWgPort), kPolicyV6Only, kIdV6Only);
    put_endpoint(endpoint(kPeerSplit, kSplitPortA), kPolicySplitA, kIdSplitA);
    put_endpoint(endpoint(kPeerSplit, kSplitPortB), kPolicySplitB, kIdSplitB);
  }

  uplink_egress_skel* skel_ = nullptr;
};

// ---- rows --------------------------------------------------------------------------------------

struct Row {
  const char* what;
  Bytes in;
  uint32_t verdict;
  Bytes out;             // expected frame out
  uint32_t endpoint_id;  // whose counters the row moves (0: none may move)
  Counts added;          // steered_bytes is filled from `in`
  bool l3_only = false;
  size_t l3_offset = ETH_HLEN;  // where the IP header of `out` starts, for the checksum check
};

std::ostream& operator<<(std::ostream& os, const Row& r) { return os << r.what; }

Row steered(const char* what, Bytes in, Bytes out, uint32_t id) {
  Counts c;
  c.steered = 1;
  c.steered_bytes = in.size();
  return Row{what, std::move(in), TC_ACT_REDIRECT, std::move(out), id, c};
}

// Leaving by the active uplink from another address: the source rewritten, no redirect.
Row fixed_in_place(const char* what, Bytes in, Bytes out, uint32_t id) {
  Counts c;
  c.steered = 1;
  c.steered_bytes = in.size();
  return Row{what, std::move(in), TC_ACT_OK, std::move(out), id, c};
}

Row untouched(const char* what, Bytes in, uint32_t id = 0, Counts c = {}) {
  Bytes out = in;
  return Row{what, std::move(in), TC_ACT_OK, std::move(out), id, c};
}

constexpr Counts kPassedOne{0, 0, 1, 0};
constexpr Counts kFailedOne{0, 0, 0, 1};

std::vector<Row> EthernetRows() {
  std::vector<Row> rows;
  rows.push_back(steered("IPv4 to the endpoint by the backup: fiber's source, redirected",
                         wg_frame(kBackupSrc, kPeer), wg_frame(kFiberSrc, kPeer), kIdPeer));
  rows.push_back(steered("IPv6 to the endpoint by the backup: fiber's source, redirected",
                         wg_frame(kBackupSrc6, kPeer6), wg_frame(kFiberSrc6, kPeer6), kIdPeer6));
  rows.push_back(steered("IPv4 without UDP checksum: rewritten, the checksum stays 0",
                         without_udp_checksum(wg_frame(kBackupSrc, kPeer)),
                         without_udp_checksum(wg_frame(kFiberSrc, kPeer)), kIdPeer));
  rows.push_back(steered("a large datagram: the checksum over 1400 bytes holds",
                         udp_frame(kBackupSrc, kPeer, kWgPort, kWgPort, 1400),
                         udp_frame(kFiberSrc, kPeer, kWgPort, kWgPort, 1400), kIdPeer));
  rows.push_back(steered("weighted policy: the endpoint's hash falls in the fiber's share",
                         wg_frame(kBackupSrc, kPeerSplit, kSplitPortA),
                         wg_frame(kFiberSrc, kPeerSplit, kSplitPortA), kIdSplitA));
  rows.push_back(
      untouched("weighted policy: the endpoint's hash falls in the backup's share, where it leaves",
                wg_frame(kBackupSrc, kPeerSplit, kSplitPortB), kIdSplitB, kPassedOne));
  rows.push_back(untouched("UDP to another address", wg_frame(kBackupSrc, kNotPeer)));
  rows.push_back(untouched("the endpoint's address, another port", wg_frame(kBackupSrc, kPeer, 51821)));
  rows.push_back(untouched("IPv6 endpoint address, another port", wg_frame(kBackupSrc6, kPeer6, 443)));
  rows.push_back(untouched(
      "TCP to the endpoint's address and port",
      ethernet(ETH_P_IP, ipv4(kBackupSrc, kPeer, IPPROTO_TCP, tcp(kWgPort, kWgPort, 1, 0, kTcpSyn)))));
  rows.push_back(untouched("an IPv4 fragment to the endpoint",
                           ethernet(ETH_P_IP, ipv4_fragments(kBackupSrc, kPeer, IPPROTO_UDP,
                                                             udp(kWgPort, kWgPort, Bytes(64, 1)), 32)[0])));
  rows.push_back(untouched("ARP", ethernet(ETH_P_ARP, arp_ipv4(1, kUplinkMac, kBackupSrc, Mac{}, kFiberGw))));
  rows.push_back(
      untouched("a frame cut inside the UDP header", truncated(wg_frame(kBackupSrc, kPeer), ETH_HLEN + 24)));
  rows.push_back(
      untouched("no member online: left alone", wg_frame(kBackupSrc, kPeerDead), kIdDead, kPassedOne));
  rows.push_back(untouched("already leaving by the active uplink", wg_frame(kBackupSrc, kPeerBackup),
                           kIdBackup, kPassedOne));
  rows.push_back(
      untouched("the active uplink has no IPv4", wg_frame(kBackupSrc, kPeerV6Only), kIdV6Only, kPassedOne));
  rows.push_back(untouched("IPv6 already leaving by the active uplink from its address",
                           wg_frame(kBackupSrc6, kPeerBackup6), kIdBackup6, kPassedOne));
  rows.push_back(fixed_in_place("IPv6 by the active uplink from the old uplink's address: source fixed",
                                wg_frame(kFiberSrc6, kPeerBackup6), wg_frame(kBackupSrc6, kPeerBackup6),
                                kIdBackup6));
  rows.push_back(fixed_in_place("IPv4 by the active uplink from another address: source fixed",
                                wg_frame(kFiberSrc, kPeerBackup), wg_frame(kBackupSrc, kPeerBackup),
                                kIdBackup));
  return rows;
}

class EthernetRowsTest : public ::testing::TestWithParam<Row> {};

void run_row(Program& prog, const Row& row) {
  const Counts before = row.endpoint_id != 0 ? prog.counts(row.endpoint_id) : Counts{};
  __sk_buff ctx{}, ctx_out{};
  const TestRun r = test_run_once(prog.fd(), row.in, ctx, &ctx_out);
  ASSERT_EQ(r.err, 0) << "BPF_PROG_TEST_RUN: errno " << r.saved_errno;
  EXPECT_EQ(r.retval, row.verdict);
  EXPECT_EQ(r.data_out, row.out) << "the frame out differs from the expected one";
  if (row.added.steered != 0) {
    EXPECT_EQ(checksum_problems(r.data_out, row.l3_offset), "");
  }
  if (row.endpoint_id != 0) {
    const Counts after = prog.counts(row.endpoint_id);
    const Counts added{after.steered - before.steered, after.steered_bytes - before.steered_bytes,
                       after.passed - before.passed, after.failed - before.failed};
    EXPECT_EQ(added, row.added);
  }
}

TEST_P(EthernetRowsTest, Row) {
  Program prog(false);
  run_row(prog, GetParam());
}

// Test names from the descriptions: letters and digits, the rest as underscores.
std::string RowName(const ::testing::TestParamInfo<Row>& info) {
  std::string name = std::to_string(info.index) + "_";
  for (const char* c = info.param.what; *c != '\0'; ++c)
    name += std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(UplinkEgress, EthernetRowsTest, ::testing::ValuesIn(EthernetRows()), RowName);

// A device without a link layer (PPPoE, raw-IP LTE): parsed from the IP header, and the steered
// packet gets the placeholder Ethernet header bpf_redirect_neigh() strips again.
TEST(UplinkEgressL3Only, SteeredPacketGetsPlaceholderHeader) {
  Program prog(true);
  for (bool v6 : {false, true}) {
    const char* src = v6 ? kBackupSrc6 : kBackupSrc;
    const char* dst = v6 ? kPeer6 : kPeer;
    const uint16_t ethertype = v6 ? ETH_P_IPV6 : ETH_P_IP;
    Row row =
        steered(v6 ? "raw IPv6" : "raw IPv4", without_ethernet(wg_frame(src, dst)),
                placeholder_ethernet(ethertype, without_ethernet(wg_frame(v6 ? kFiberSrc6 : kFiberSrc, dst))),
                v6 ? kIdPeer6 : kIdPeer);
    SCOPED_TRACE(row.what);
    run_row(prog, row);
  }
}

TEST(UplinkEgressL3Only, OtherTrafficUntouched) {
  Program prog(true);
  run_row(prog, untouched("raw IPv4 UDP elsewhere", without_ethernet(wg_frame(kBackupSrc, kNotPeer))));
  run_row(prog, untouched("raw IPv4, already on the active uplink",
                          without_ethernet(wg_frame(kBackupSrc, kPeerBackup)), kIdBackup, kPassedOne));
}

// A packet this program redirected comes through the active uplink's own egress again, tagged in
// skb->cb[0] ("wgst"): it passes without being counted a second time, and the tag is cleared.
TEST(UplinkEgressCounters, RedirectedPacketIsNotCountedAgain) {
  Program prog(false);
  __sk_buff ctx{}, ctx_out{};
  ctx.cb[0] = 0x77677374;
  const Bytes frame = wg_frame(kBackupSrc, kPeerBackup);
  const TestRun r = test_run_once(prog.fd(), frame, ctx, &ctx_out);
  ASSERT_EQ(r.err, 0) << "BPF_PROG_TEST_RUN: errno " << r.saved_errno;
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(r.data_out, frame);
  EXPECT_EQ(ctx_out.cb[0], 0u);
  EXPECT_EQ(prog.counts(kIdBackup), Counts{});
}

// A steered packet leaves with the tag.
TEST(UplinkEgressCounters, SteeredPacketIsTagged) {
  Program prog(false);
  __sk_buff ctx{}, ctx_out{};
  const TestRun r = test_run_once(prog.fd(), wg_frame(kBackupSrc, kPeer), ctx, &ctx_out);
  ASSERT_EQ(r.err, 0) << "BPF_PROG_TEST_RUN: errno " << r.saved_errno;
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(ctx_out.cb[0], 0x77677374u);
}

// Counters add up over several packets and are kept per endpoint.
TEST(UplinkEgressCounters, SumPerEndpoint) {
  Program prog(false);
  const Bytes frame = wg_frame(kBackupSrc, kPeer);
  for (int i = 0; i < 5; i++) run_row(prog, steered("repeat", frame, wg_frame(kFiberSrc, kPeer), kIdPeer));
  EXPECT_EQ(prog.counts(kIdPeer), (Counts{5, 5 * frame.size(), 0, 0}));
  EXPECT_EQ(prog.counts(kIdPeer6), Counts{});
}

// The active uplink's record without a device (the daemon has not published it): no redirect to
// ifindex 0, counted as a failure to steer.
TEST(UplinkEgressCounters, ActiveUplinkWithoutDeviceFails) {
  Program prog(false);
  prog.put_egress(kFiber, uplink_egress{});
  run_row(prog, untouched("active uplink unpublished", wg_frame(kBackupSrc, kPeer), kIdPeer, kFailedOne));
}

// ---- the gateway's neighbour entry --------------------------------------------------------------

// The fiber as a real device: veth ul0 (192.0.2.2/24, 2001:db8:1::2/64, gateways .1 and ::1, which
// nobody answers) in a network namespace this thread enters for the test and leaves after; the
// namespace goes with its last reference. BPF_PROG_TEST_RUN runs in the caller's namespace, so
// bpf_fib_lookup() sees ul0, its routes and its neighbour entries.
class UplinkEgressNeighbour : public ::testing::Test {
 protected:
  void SetUp() override {
    original_netns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_netns_, 0);
    ASSERT_EQ(unshare(CLONE_NEWNET), 0)
        << "unshare(CLONE_NEWNET): " << std::strerror(errno) << " (root needed)";
    sh("ip link set lo up && ip link add ul0 type veth peer name ul0p && ip link set ul0p up &&"
       " ip link set ul0 up && sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1 &&"
       " ip addr add 192.0.2.2/24 dev ul0 && ip addr add 2001:db8:1::2/64 dev ul0 nodad");
    ifindex_ = static_cast<uint32_t>(if_nametoindex("ul0"));
    ASSERT_GT(ifindex_, 0u);
    prog_.emplace(false);
    uplink_egress fiber{};
    fiber.ifindex = ifindex_;
    fiber.flags = UPLINK_EGRESS_HAS_V4 | UPLINK_EGRESS_HAS_V6 | UPLINK_EGRESS_HAS_GW4 | UPLINK_EGRESS_HAS_GW6;
    put_addr(kFiberSrc, fiber.src4);
    put_addr(kFiberGw, fiber.gw4);
    put_addr(kFiberSrc6, fiber.src6);
    put_addr(kFiberGw6, fiber.gw6);
    prog_->put_egress(kFiber, fiber);
  }

  void TearDown() override {
    prog_.reset();
    if (original_netns_ >= 0) {
      EXPECT_EQ(setns(original_netns_, CLONE_NEWNET), 0);
      close(original_netns_);
    }
  }

  static void sh(const std::string& command) {
    const std::string quiet = "(" + command + ") >/dev/null 2>&1";
    ASSERT_EQ(std::system(quiet.c_str()), 0) << command;
  }

  // Both families: the fiber's gateway resolved (a permanent entry), or not.
  static void resolve_gateways() {
    sh("ip neigh replace 192.0.2.1 lladdr 02:00:00:00:01:01 dev ul0 nud permanent &&"
       " ip -6 neigh replace 2001:db8:1::1 lladdr 02:00:00:00:01:01 dev ul0 nud permanent");
  }

  void expect_steered(const char* what) {
    SCOPED_TRACE(what);
    run_row(*prog_, steered(what, wg_frame(kBackupSrc, kPeer), wg_frame(kFiberSrc, kPeer), kIdPeer));
    run_row(*prog_, steered(what, wg_frame(kBackupSrc6, kPeer6), wg_frame(kFiberSrc6, kPeer6), kIdPeer6));
  }

  void expect_passed(const char* what) {
    SCOPED_TRACE(what);
    run_row(*prog_, untouched(what, wg_frame(kBackupSrc, kPeer), kIdPeer, kPassedOne));
    run_row(*prog_, untouched(what, wg_frame(kBackupSrc6, kPeer6), kIdPeer6, kPassedOne));
  }

  int original_netns_ = -1;
  uint32_t ifindex_ = 0;
  std::optional<Program> prog_;
};

TEST_F(UplinkEgressNeighbour, ResolvedGatewayIsSteeredTo) {
  resolve_gateways();
  expect_steered("gateway resolved");
}

// Handed to an unresolved gateway, the packet would wait in its queue with the old uplink's route
// and leave with that route's MAC address: lost. Without a route of the kernel's through the fiber
// to queue it on, it leaves as it came.
TEST_F(UplinkEgressNeighbour, UnresolvedGatewayWithoutRoutePassesThePacket) {
  expect_passed("no neighbour entry, no route through the fiber");
  sh("ip route add default via 192.0.2.9 dev ul0 && ip -6 route add default via 2001:db8:1::9 dev ul0");
  expect_passed("no neighbour entry, the route through the fiber has another gateway");
}

// With the kernel's own route through the fiber's gateway (netifd's default route of the uplink in
// the main table), the packet is redirected without an explicit gateway: the kernel routes it
// again and queues it with that route, which resolves to the right MAC address.
TEST_F(UplinkEgressNeighbour, UnresolvedGatewayWithItsRouteIsSteered) {
  sh("ip route add default via 192.0.2.1 dev ul0 metric 10 &&"
     " ip -6 route add default via 2001:db8:1::1 dev ul0 metric 10");
  expect_steered("no neighbour entry, the kernel routes by the fiber's gateway");
  sh("ip neigh flush dev ul0 && ip -6 neigh flush dev ul0");
  resolve_gateways();
  expect_steered("resolved afterwards");
}

// A lookup that cannot tell (forwarding off on the fiber): redirected through the gateway as
// before the check.
TEST_F(UplinkEgressNeighbour, UnknownNeighbourStateKeepsTheRedirect) {
  sh("sysctl -qw net.ipv4.conf.ul0.forwarding=0 net.ipv6.conf.ul0.forwarding=0");
  expect_steered("forwarding off on the fiber");
}

}  // namespace
